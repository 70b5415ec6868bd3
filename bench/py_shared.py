"""py_shared.py - the Python baselines for bench_shared.c, measured in the
same run: Manager().dict() set+get from a child process, Manager dict
read-modify-write (d[k] += 1 under an mp.Lock, the only way to make it
exact) from 2 processes on one key and on distinct keys, mp.Value
increments under its own lock from 2 processes, and the Manager dict by
size (--sizes).  Prints one line per figure: "<name> <operations per
second>".

    python3 py_shared.py [SCALE] [--sizes N,N,...] [--only-sizes]

By size, for each N: the dict is filled to N - M keys in bulk (d.update
in chunks: one round trip per 50,000 keys, untimed), then M = min(N,
20000 * SCALE) operations are timed: M inserts of new keys (so the dict
ends at N keys: manager_dict_set_N), M reads of keys spread over the
whole dict (manager_dict_get_N) and M increments of them under an
mp.Lock (manager_dict_update_N).  A fill of millions of keys one proxy
call at a time would take minutes, and the per-call cost through the
manager does not depend on how the dict got its size.  Keys are
"k%014d" (15 bytes) and values ints, as bench_shared.c's 8-byte
counters."""
import multiprocessing as mp
import sys
import time

# Knuth's multiplicative constant, a prime: i * STRIDE % n visits every
# key of 0..n-1 once, in an order that spreads over the whole dict.
STRIDE = 2654435761
CHUNK = 50000


def dict_setget(d, n, out):
    keys = ["key-%d" % i for i in range(1024)]
    v = "v" * 64
    t0 = time.perf_counter()
    for i in range(n):
        k = keys[i & 1023]
        d[k] = v
        _ = d[k]
    out.put(2 * n / (time.perf_counter() - t0))


def dict_update(d, lock, key, n, start):
    start.wait()
    for _ in range(n):
        with lock:
            d[key] = d.get(key, 0) + 1


def value_incr(v, n, start):
    start.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def two_procs(target, args_for, n):
    start = mp.Event()
    ps = [mp.Process(target=target, args=args_for(i) + (n, start))
          for i in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    return 2 * n / (time.perf_counter() - t0)


def key(i):
    return "k%014d" % i


def by_size(mgr, n, m):
    """Rates of the Manager dict at n keys: m inserts ending at n, m reads,
    m increments under a lock."""
    d = mgr.dict()
    lock = mp.Lock()
    base = n - m
    for lo in range(0, base, CHUNK):
        d.update({key(i): i for i in range(lo, min(base, lo + CHUNK))})
    t0 = time.perf_counter()
    for i in range(base, n):
        d[key(i)] = i
    set_rate = m / (time.perf_counter() - t0)
    picks = [key(i * STRIDE % n) for i in range(m)]
    t0 = time.perf_counter()
    for k in picks:
        _ = d[k]
    get_rate = m / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in picks:
        with lock:
            d[k] = d.get(k, 0) + 1
    upd_rate = m / (time.perf_counter() - t0)
    if len(d) != n:
        print("manager dict has %d keys, not %d" % (len(d), n),
              file=sys.stderr)
        sys.exit(1)
    d.clear()
    return set_rate, get_rate, upd_rate


def main():
    args = sys.argv[1:]
    scale, sizes, only_sizes = 1.0, [], False
    while args:
        a = args.pop(0)
        if a == "--sizes":
            sizes = [int(s) for s in args.pop(0).split(",") if s]
        elif a == "--only-sizes":
            only_sizes = True
        else:
            scale = float(a)
    mp.set_start_method("fork")
    with mp.Manager() as mgr:
        if not only_sizes:
            d = mgr.dict()
            q = mp.Queue()
            p = mp.Process(target=dict_setget,
                           args=(d, int(10000 * scale), q))
            p.start()
            rate = q.get()
            p.join()
            print("manager_dict_setget_child %.1f" % rate, flush=True)
            lock = mp.Lock()
            n = int(3000 * scale)
            rate = two_procs(dict_update, lambda i: (d, lock, "same"), n)
            print("manager_dict_update_same %.1f" % rate, flush=True)
            rate = two_procs(dict_update, lambda i: (d, lock, "k%d" % i), n)
            print("manager_dict_update_distinct %.1f" % rate, flush=True)
        for n in sizes:
            m = max(1, min(n, int(20000 * scale)))
            s, g, u = by_size(mgr, n, m)
            print("manager_dict_set_%d %.1f" % (n, s), flush=True)
            print("manager_dict_get_%d %.1f" % (n, g), flush=True)
            print("manager_dict_update_%d %.1f" % (n, u), flush=True)
    if only_sizes:
        return
    v = mp.Value("l", 0)
    n = int(200000 * scale)
    rate = two_procs(value_incr, lambda i: (v,), n)
    if v.value != 2 * n:
        print("value total wrong: %d" % v.value, file=sys.stderr)
        sys.exit(1)
    print("mp_value_lock_incr %.1f" % rate, flush=True)


if __name__ == "__main__":
    main()
