#!/bin/sh
# Fails when the shared library exports a symbol that is not conc_
# followed by a lower-case letter (the house rule: everything public is
# conc_name; conc__name is internal and must stay hidden).
# The section bounds that clang's coverage instrumentation adds in a fuzz
# build (__start___sancov_*) are the linker's, not ours.
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' |
      grep -v -E '^(conc_[a-z]|_init$|_fini$|_edata$|_end$|__bss_start$|__(start|stop)___sancov_)' || true)
if [ -n "$bad" ]; then
    echo "libconc exports symbols that are not conc_[a-z]...:" >&2
    echo "$bad" >&2
    exit 1
fi
