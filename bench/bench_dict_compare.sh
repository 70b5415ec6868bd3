#!/usr/bin/env bash
# bench_dict_compare.sh - the dict before and after it could grow, in one
# run: bench_shared.c (this tree's) built twice, against the library of
# OLD_REV (the fixed-size dict: compiled with -DBENCH_OLD_API, which
# drops conc_dict_add and gives each dict by size a capacity that holds
# its keys) and against this tree's, run in turns (old first in odd
# rounds, new first in even ones, so drift in the machine's load falls
# on both), with Python's figures (py_shared.py) measured once at the
# start.  Prints, per figure, the median of each side, new / old, and
# new / Python where Python has the figure.
#
#   bench/bench_dict_compare.sh [OLD_REV [ROUNDS [SIZES [SCALE]]]]
#
# OLD_REV    the revision with the old dict (default b406e93, the last
#            one before the growable dict); needs this to be a git
#            checkout, unless CONC_OLD_SRC names a directory holding that
#            revision's tree already (e.g. from git archive)
# ROUNDS     turns of each side (default 3)
# SIZES      dict sizes, comma-separated (default 1000,100000,1000000,
#            5000000; "" for none)
# SCALE      bench_shared's SCALE (default 1)
# Builds in build/dict-compare (CONC_BENCH_OUT overrides), RelWithDebInfo
# (-O2) like scripts/bench.sh; keeps every run's output there.
set -euo pipefail
cd "$(dirname "$0")/.."
old_rev=${1:-b406e93}
rounds=${2:-3}
sizes=${3-1000,100000,1000000,5000000}
scale=${4:-1}
out=${CONC_BENCH_OUT:-build/dict-compare}
mkdir -p "$out"
out=$(cd "$out" && pwd)
jobs=$(nproc)

old_src=${CONC_OLD_SRC:-}
if [ -z "$old_src" ]; then
    old_src=$out/old-src
    rm -rf "$old_src"
    mkdir -p "$old_src"
    git archive "$old_rev" | tar -x -C "$old_src"
fi
# The same benchmark source on both sides.
cp bench/bench_shared.c "$old_src/bench/bench_shared.c"

build() { # src dir extra-cflags
    cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCONC_BUILD_TESTS=OFF -DCONC_BUILD_EXAMPLES=OFF \
        -DCMAKE_C_FLAGS="$3" >/dev/null
    nice -n 10 cmake --build "$2" -j"$jobs" --target bench_shared >/dev/null
}
echo "building the old dict ($old_rev) and this tree's..." >&2
build "$old_src" "$out/old" "-DBENCH_OLD_API"
build . "$out/new" ""

echo "Python baselines..." >&2
python3 bench/py_shared.py "$scale" --sizes "$sizes" >"$out/py.txt" 2>&1

for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
    for side in $order; do
        echo "round $r: $side" >&2
        (cd bench && "$out/$side/bench/bench_shared" "$scale" --sizes "$sizes" \
            --py "$out/py.txt" --raw) >"$out/$side.$r.txt"
    done
done

python3 - "$out" "$rounds" <<'PY'
import statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])

def figures(path):
    figs, seen_blank = {}, False
    for line in open(path):
        line = line.strip()
        if not line:
            seen_blank = True
            continue
        parts = line.split()
        if seen_blank and len(parts) == 2 and not line.startswith("|"):
            try:
                figs[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return figs

py = {}
for line in open(out + "/py.txt"):
    parts = line.split()
    if len(parts) == 2:
        try:
            py[parts[0]] = float(parts[1])
        except ValueError:
            pass
side = {s: [figures("%s/%s.%d.txt" % (out, s, r)) for r in range(1, rounds + 1)]
        for s in ("old", "new")}
names = []
for f in side["new"] + side["old"]:
    for n in f:
        if n not in names:
            names.append(n)
pyname = {"dict_setget_child": "manager_dict_setget_child",
          "dict_update_same": "manager_dict_update_same",
          "dict_update_distinct": "manager_dict_update_distinct",
          "value_lock_incr": "mp_value_lock_incr"}
for n in names:
    for op in ("set", "get", "update", "add"):
        pre = "dict_%s_" % op
        if n.startswith(pre) and n[len(pre):].isdigit():
            pyname[n] = "manager_dict_%s_%s" % ("update" if op == "add" else op,
                                                n[len(pre):])

def med(s, n):
    v = [f[n] for f in side[s] if n in f]
    return statistics.median(v) if v else None

print("| %-28s | %12s | %12s | %8s | %12s | %9s |" %
      ("figure (median of %d)" % rounds, "old dict", "new dict", "new/old",
       "Python", "new/Py"))
print("|%s|%s|%s|%s|%s|%s|" % ("-" * 30, "-" * 14, "-" * 14, "-" * 10,
                               "-" * 14, "-" * 11))
for n in names:
    o, w = med("old", n), med("new", n)
    p = py.get(pyname.get(n, ""), None)
    fmt = lambda v: "%12.0f" % v if v is not None else "%12s" % "-"
    ratio = "%7.2fx" % (w / o) if o and w else "%8s" % "-"
    pr = "%8.0fx" % (w / p) if p and w and "longest" not in n else "%9s" % "-"
    if "at_call" in n:
        ratio = "%8s" % "-"
    print("| %-28s | %s | %s | %s | %s | %s |" %
          (n, fmt(o), fmt(w), ratio, fmt(p), pr))
print("\n(rates in operations/s; dict_longest_set_own_us_N: the longest "
      "single set of a fill to N keys, each call timed as the shortest of "
      "three fills, so another process's time slice does not count, at call "
      "dict_longest_set_at_call_N; dict_longest_set_raw_us_N: the longest "
      "of all, preemption included; microseconds, lower is better.  Every "
      "run's output is in %s)" % out)
PY
