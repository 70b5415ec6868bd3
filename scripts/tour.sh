#!/usr/bin/env bash
# The demo tour: builds libconc and runs every example program - the seed
# documents' Python programs ported to C - in order, with its narrative.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/tour -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_BENCH=OFF >/dev/null
cmake --build build/tour -j"$(nproc)" >/dev/null
# Examples run in a scratch folder: some write files (the ticket office's
# db.txt).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for src in examples/*.c; do
    name=$(basename "$src" .c)
    echo
    echo "=================================================================="
    echo "== $name"
    # The file's first comment block is the narration.
    awk 'NR == 1 { sub(/^\/\* ?/, "") }
         { done = sub(/ *\*\/.*$/, ""); sub(/^ \* ?/, ""); print "   " $0 }
         done { exit }' "$src"
    echo "------------------------------------------------------------------"
    (cd "$work" && timeout 120 "$OLDPWD/build/tour/examples/$name")
done
echo
echo "Tour complete: every example ran."
