#!/usr/bin/env bash
# Planted bugs: each scripts/mutants/*.mut names one safety property the
# headers promise, a small change to the code that breaks it, and the
# tests that must catch it.  This script applies them one at a time to a
# scratch copy of the tree, rebuilds (plain flavour), runs the named
# tests, reverts, and prints a table: CAUGHT (every run failed), MISSED
# (some run passed), STALE (the text to change is no longer in the file:
# update the mutant) or NOBUILD.  Exit status 1 unless every mutant is
# caught.  Not part of CI (too slow): run it before a release and
# whenever a module's guard tests change.
#   scripts/mutate.sh                 every mutant
#   scripts/mutate.sh lock queue_     mutants whose file name contains
#                                     any of the words
#
# A mutant file:
#   # one line: the property and how the bug breaks it
#   file: src/lock.c
#   test: test_lock lock_release_wakes     (a test program and its filters;
#   test: test_pool_crash timeout           several lines: all must fail)
#   runs: 3                                 (optional: each test run N
#                                            times, every run must fail)
#   --- find
#   exact lines, which must occur once in the file
#   +++ replace
#   the lines that replace them
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
scratch=$(mktemp -d /tmp/conc-mutate.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$scratch/" 2>/dev/null
# Untracked files the tree is working on come too.
git ls-files -z --others --exclude-standard | \
    xargs -0 -I{} cp --parents {} "$scratch/" 2>/dev/null
build=$scratch/build
cmake -S "$scratch" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCONC_BUILD_BENCH=OFF -DCONC_BUILD_EXAMPLES=ON >/dev/null
if ! cmake --build "$build" -j"$(nproc)" >"$scratch/build.log" 2>&1; then
    echo "mutate.sh: the unmutated tree does not build" >&2
    tail -20 "$scratch/build.log" >&2
    exit 1
fi

mutants=()
for m in scripts/mutants/*.mut; do
    if [ $# -eq 0 ]; then
        mutants+=("$m")
        continue
    fi
    for w in "$@"; do
        case "$(basename "$m")" in *"$w"*) mutants+=("$m"); break ;; esac
    done
done

# Applies mutant $1 in the scratch tree (exit status 3: its text is not
# in the file exactly once: the mutant is stale).
apply() {
    python3 - "$1" "$scratch" <<'PY'
import sys
path, root = sys.argv[1], sys.argv[2]
text = open(path).read()
meta, rest = text.split("\n--- find\n", 1)
find, replace = rest.split("\n+++ replace\n", 1)
fields = dict(l.split(": ", 1) for l in meta.splitlines()
              if ": " in l and not l.startswith("#"))
target = root + "/" + fields["file"].strip()
src = open(target).read()
find = find.rstrip("\n") + "\n"
replace = replace.rstrip("\n") + "\n"
if src.count(find) != 1:
    sys.exit(3)
open(target, "w").write(src.replace(find, replace))
PY
}

printf '%-34s %-9s %s\n' "mutant" "result" "tests"
caught=0
total=0
for m in "${mutants[@]}"; do
    total=$((total + 1))
    name=$(basename "$m" .mut)
    tests=$(sed -n 's/^test: //p' "$m")
    runs=$(sed -n 's/^runs: //p' "$m")
    runs=${runs:-1}
    file=$(sed -n 's/^file: //p' "$m")
    cp "$scratch/$file" "$scratch/mutant.orig"
    if ! apply "$m"; then
        printf '%-34s %-9s %s\n' "$name" STALE "$(echo "$tests" | head -1)"
        continue
    fi
    result=CAUGHT
    if ! cmake --build "$build" -j"$(nproc)" >"$scratch/m.log" 2>&1; then
        result=NOBUILD
    else
        while read -r prog filters; do
            [ -n "$prog" ] || continue
            for ((i = 0; i < runs; i++)); do
                # shellcheck disable=SC2086
                if timeout 600 "$build/tests/$prog" $filters \
                    >"$scratch/t.log" 2>&1; then
                    result=MISSED
                fi
            done
        done <<<"$tests"
    fi
    # Put the file back as it was (a copy, so a replacement that also
    # occurs elsewhere in the file cannot confuse the revert).
    cp "$scratch/mutant.orig" "$scratch/$file"
    touch "$scratch/$file"
    [ "$result" = CAUGHT ] && caught=$((caught + 1))
    printf '%-34s %-9s %s\n' "$name" "$result" "$(echo "$tests" | tr '\n' ';')"
done
cmake --build "$build" -j"$(nproc)" >/dev/null 2>&1
echo "$caught of $total planted bugs caught"
[ "$caught" -eq "$total" ]
