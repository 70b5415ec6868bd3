#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for building, testing and
# benchmarking libconc.  Does nothing when everything is there already.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v setarch >/dev/null 2>&1 || need+=(util-linux)
# clang and its libFuzzer runtime: the fuzz step (scripts/fuzz.sh).
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
# gcovr prints the coverage flavour's table (scripts/test.sh); groff
# checks the man pages (scripts/man.py --check).
command -v gcovr >/dev/null 2>&1 || need+=(gcovr)
command -v groff >/dev/null 2>&1 || need+=(groff-base)
# libzmq is a benchmark baseline (bench/bench_queue); the library never
# links it.
[ -e /usr/include/zmq.h ] || need+=(libzmq3-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: please install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
