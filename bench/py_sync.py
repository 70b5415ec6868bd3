"""py_sync.py - the Python baseline for bench_sync.c: two processes
increment one shared counter under a lock, with multiprocessing.Lock and
multiprocessing.Value, exactly what bench_sync.c does with conc_lock.

    python3 py_sync.py N      each process increments N times

Prints one line: "<total increments> <seconds>".
"""
import multiprocessing as mp
import sys
import time


def work(lock, value, start, n):
    start.wait()
    for _ in range(n):
        with lock:
            value.value += 1


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    ctx = mp.get_context("fork")
    lock = ctx.Lock()
    value = ctx.Value("q", 0, lock=False)
    start = ctx.Event()
    procs = [ctx.Process(target=work, args=(lock, value, start, n))
             for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    took = time.perf_counter() - t0
    if value.value != 2 * n:
        print("lost increments: %d of %d" % (value.value, 2 * n),
              file=sys.stderr)
        sys.exit(1)
    print("%d %.6f" % (value.value, took))


if __name__ == "__main__":
    main()
