#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/fuzz_*.c) for a bounded time, built
# with clang, ASan and UBSan, starting from its corpus in fuzz/corpus/.
#   scripts/fuzz.sh [SECONDS]   SECONDS in all, shared out evenly (60)
#   CONC_FUZZ_KEEP=1 scripts/fuzz.sh   also merge new inputs that reach new
#                                      code into fuzz/corpus/ (to commit)
# Without KEEP the repository's corpus is only read: the search works in a
# scratch copy.  A crash stops the run with the input saved under
# build/fuzz-out/ and exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
total=${1:-60}
dir=build/fuzz
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONC_FUZZ=ON -DCONC_SANITIZE=address -DCONC_WERROR=ON \
    -DCONC_BUILD_BENCH=OFF -DCONC_BUILD_EXAMPLES=OFF >/dev/null
targets=()
for src in fuzz/fuzz_*.c; do
    stem=$(basename "$src" .c)
    targets+=("${stem#fuzz_}")
done
# Only the fuzz programs (and the library under them).
cmake --build "$dir" -j"$(nproc)" \
    --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
per=$(( total / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
out=build/fuzz-out
rm -rf "$out"
mkdir -p "$out"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
status=0
for t in "${targets[@]}"; do
    work="$out/$t"
    mkdir -p "$work/corpus"
    cp -r "fuzz/corpus/$t/." "$work/corpus/" 2>/dev/null || true
    if "$dir/fuzz/fuzz_$t" -max_total_time="$per" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$work/" "$work/corpus" \
        >"$work/log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs' "$work/log" | tail -1 || true)
        echo "fuzz_$t: ${per}s, ${runs:-done}, no failure"
    else
        echo "fuzz_$t: FAILED; input and log in $work/" >&2
        tail -40 "$work/log" >&2
        status=1
    fi
    if [ "${CONC_FUZZ_KEEP:-0}" = 1 ] && [ $status -eq 0 ]; then
        "$dir/fuzz/fuzz_$t" -merge=1 "fuzz/corpus/$t" "$work/corpus" \
            >/dev/null 2>&1
    fi
done
exit $status
