"""py_process.py - the Python baseline for bench_process.c:
multiprocessing.Process(target=f).start(); join() with the fork start
method, N times.  Prints "per_op_ms <milliseconds per start+join>"."""
import multiprocessing as mp
import sys
import time


def f():
    pass


if __name__ == "__main__":
    mp.set_start_method("fork")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    p = mp.Process(target=f)  # warm-up: imports, first fork
    p.start()
    p.join()
    t0 = time.perf_counter()
    for _ in range(n):
        p = mp.Process(target=f)
        p.start()
        p.join()
    dt = time.perf_counter() - t0
    print(f"per_op_ms {dt / n * 1e3:.4f}")
