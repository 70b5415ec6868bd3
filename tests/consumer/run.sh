#!/bin/sh
# run.sh SOURCE WORK - builds and runs tests/consumer/main.c the three ways
# another project consumes libconc, from scratch in WORK:
#   1. libconc installed (cmake --install) and found with pkg-config,
#      linked against the shared library (with an rpath) and statically;
#   2. installed and found with find_package(conc CONFIG): conc::conc and
#      conc::conc_static;
#   3. built inside the consumer with add_subdirectory (sub/CMakeLists.txt
#      also checks that nothing of libconc's leaks into it).
# Fails (exit 1) at the first way that does not build or run.
set -eu
src=$1
work=$2
here=$src/tests/consumer
rm -rf "$work"
mkdir -p "$work"
jobs=$(nproc)
step() { echo "== $*"; }

step "install libconc into $work/prefix"
cmake -S "$src" -B "$work/lib" -DCMAKE_BUILD_TYPE=Release \
    -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_EXAMPLES=OFF -DCONC_BUILD_BENCH=OFF \
    -DCONC_INSTALL=ON >/dev/null
cmake --build "$work/lib" -j"$jobs" >/dev/null
cmake --install "$work/lib" --prefix "$work/prefix" >/dev/null
pc=$(find "$work/prefix" -name conc.pc)
libdir=$(dirname "$(dirname "$pc")")
test -f "$work/prefix/include/conc/version.h"
test -n "$(find "$work/prefix" -name 'conc_queue.3')"
test -n "$(find "$work/prefix" -name 'conc_queue_put.3')"

step "1. pkg-config"
export PKG_CONFIG_PATH="$(dirname "$pc")"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$work/p_shared" "$here/main.c" \
    $(pkg-config --cflags conc) $(pkg-config --libs conc) \
    -Wl,-rpath,"$libdir"
"$work/p_shared"
cc -std=c11 -Wall -Werror -o "$work/p_static" "$here/main.c" \
    $(pkg-config --cflags conc) -static $(pkg-config --libs --static conc)
"$work/p_static"

step "2. find_package"
cmake -S "$here/find" -B "$work/find" -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$work/find" -j"$jobs" >/dev/null
"$work/find/consumer_shared"
"$work/find/consumer_static"

step "3. add_subdirectory"
cmake -S "$here/sub" -B "$work/sub" -DCONC_SOURCE="$src" >/dev/null
cmake --build "$work/sub" -j"$jobs" >/dev/null
"$work/sub/consumer_sub"
echo "consumer builds: all three ways work"
