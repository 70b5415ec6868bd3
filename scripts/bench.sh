#!/usr/bin/env bash
# Builds libconc optimised and runs every benchmark in bench/, each of which
# measures libconc and its named baselines (Python's multiprocessing among
# them) side by side in the same run and prints one table with ratios.
#   scripts/bench.sh            all of them
#   scripts/bench.sh queue      only bench_queue
#   scripts/bench.sh redis      only bench_redis: the queue, lock and dict
#                               on Redis, against a redis-server it starts
#                               itself (loopback, a free port)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/bench -j"$(nproc)" >/dev/null
for b in build/bench/bench/bench_*; do
    name=$(basename "$b")
    if [ $# -gt 0 ] && [[ " $* " != *" ${name#bench_} "* ]]; then
        continue
    fi
    echo
    echo "=== $name ==="
    (cd bench && "../$b")
done
