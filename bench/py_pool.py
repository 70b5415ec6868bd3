"""py_pool.py - the Python baselines for bench_pool.c, measured in the same
run: ProcessPoolExecutor(2) and ThreadPoolExecutor(2) submit+result of a
trivial task (pipelined: submit all, then collect; and one at a time),
multiprocessing.Pool(2).map of 100 k trivial tasks with chunksize 1 and with
its default chunksize, and a CPU-bound Pool map on 1 and 2 workers.
Prints "name value" lines (tasks per second, or seconds)."""
import concurrent.futures as cf
import multiprocessing as mp
import sys
import time


def f(x):
    return x


def count_primes(r):
    lo, hi = r
    c = 0
    for n in range(max(lo, 2), hi):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            c += 1
    return c


def rate(n, fn):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def executor(kind, n_pipe, n_serial):
    with kind(max_workers=2) as ex:
        ex.submit(f, 0).result()  # warm-up: start the workers
        pipe = rate(n_pipe, lambda: [fu.result() for fu in
                                     [ex.submit(f, i) for i in range(n_pipe)]])
        serial = rate(n_serial,
                      lambda: [ex.submit(f, i).result()
                               for i in range(n_serial)])
    return pipe, serial


if __name__ == "__main__":
    mp.set_start_method("fork")
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    pp, ps = executor(cf.ProcessPoolExecutor, int(20000 * scale),
                      int(2000 * scale))
    print(f"ppe_pipelined {pp:.1f}")
    print(f"ppe_serial {ps:.1f}")
    tp, ts = executor(cf.ThreadPoolExecutor, int(50000 * scale),
                      int(5000 * scale))
    print(f"tpe_pipelined {tp:.1f}")
    print(f"tpe_serial {ts:.1f}")
    n = int(100000 * scale)
    with mp.Pool(2) as pool:
        pool.map(f, range(10))
        c1 = rate(n, lambda: pool.map(f, range(n), chunksize=1))
        auto = rate(n, lambda: pool.map(f, range(n)))
    print(f"pool_map_c1 {c1:.1f}")
    print(f"pool_map_auto {auto:.1f}")
    limit = int(300000 * scale)
    parts = [(limit * i // 64, limit * (i + 1) // 64) for i in range(64)]
    secs = []
    for w in (1, 2):
        with mp.Pool(w) as pool:
            pool.map(f, range(4))
            t0 = time.perf_counter()
            pool.map(count_primes, parts, chunksize=1)
            secs.append(time.perf_counter() - t0)
    print(f"cpu_speedup {secs[0] / secs[1]:.3f}")
