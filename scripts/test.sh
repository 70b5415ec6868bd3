#!/usr/bin/env bash
# Builds libconc and passes every test in three flavours: plain (-O2 -g),
# AddressSanitizer+UBSan, and ThreadSanitizer, with -Werror; then runs
# every fuzz target for a bounded time (scripts/fuzz.sh, 60 s in all).
#   CONC_FLAVOURS="plain" scripts/test.sh     only some flavours
#   CONC_FLAVOURS="coverage" scripts/test.sh  line coverage per source file
#                                             (gcov, printed by gcovr);
#                                             not part of the default run
#   CONC_FUZZ_SECONDS=0 scripts/test.sh       no fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc)
flavours=${CONC_FLAVOURS:-"plain address thread"}
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# die_after_fork=0: the pool forks workers while its own threads run, and
# the workers start threads; libconc makes that safe (src/process.c).
export TSAN_OPTIONS="halt_on_error=1:die_after_fork=0:second_deadlock_stack=1"
status=0
for f in $flavours; do
    san=$f
    cov=OFF
    case "$f" in
        plain) san="" ;;
        coverage) san="" cov=ON ;;
    esac
    dir=build/test-$f
    echo "=== flavour: $f ==="
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCONC_SANITIZE="$san" -DCONC_COVERAGE=$cov -DCONC_WERROR=ON \
        -DCONC_BUILD_BENCH=OFF >/dev/null
    if [ "$cov" = ON ]; then
        find "$dir" -name '*.gcda' -delete
    fi
    cmake --build "$dir" -j"$jobs"
    (cd "$dir" && ctest --output-on-failure -j"$jobs") || status=1
    if [ "$cov" = ON ]; then
        # Lines of src/ run by the suite, per file; the library's code is
        # in the object library's directory of the build tree.
        gcovr --root . --filter 'src/' --object-directory "$dir" \
            --gcov-ignore-parse-errors \
            --txt --sort-percentage "$dir" || status=1
    fi
done
fuzz_s=${CONC_FUZZ_SECONDS:-60}
if [ "$fuzz_s" -gt 0 ]; then
    echo "=== fuzzing: ${fuzz_s} s in all ==="
    bash scripts/fuzz.sh "$fuzz_s" || status=1
fi
exit $status
