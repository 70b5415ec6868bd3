"""py_scaling.py - the Python baselines for bench_scaling.c, one figure per
call, measured as bench_scaling.c measures libconc:

    python3 py_scaling.py queue N SIZE   mp.Queue, N producer -> N consumer
                                         processes, total messages/s
    python3 py_scaling.py lock N         N processes x counter++ under
                                         multiprocessing.Lock, increments/s
    python3 py_scaling.py cpu pool|ppe W seconds for a map of 256 equal
                                         CPU-bound items on W workers
                                         (multiprocessing.Pool or
                                         ProcessPoolExecutor)
    python3 py_scaling.py empty pool|ppe W   empty tasks/s on W workers:
                                         Pool.map(chunksize=1), or
                                         ProcessPoolExecutor submit all,
                                         then collect

Prints one number.
"""
import concurrent.futures as cf
import multiprocessing as mp
import sys
import time


def producer(q, n, size, start):
    msg = b"x" * size
    start.wait()
    for _ in range(n):
        q.put(msg)


def consumer(q, counts, i, start):
    start.wait()
    got = 0
    while True:
        m = q.get()
        if m is None:
            break
        got += 1
    counts[i] = got


def queue(n, size):
    total = 20000
    per = total // n
    q = mp.Queue()
    start = mp.Event()
    counts = mp.Array("q", n)
    cons = [mp.Process(target=consumer, args=(q, counts, i, start))
            for i in range(n)]
    prods = [mp.Process(target=producer, args=(q, per, size, start))
             for _ in range(n)]
    for p in cons + prods:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in prods:
        p.join()
    for _ in cons:
        q.put(None)
    for p in cons:
        p.join()
    took = time.perf_counter() - t0
    if sum(counts) != per * n:
        sys.exit("lost messages")
    return per * n / took


def lock_work(lock, value, start, n):
    start.wait()
    for _ in range(n):
        with lock:
            value.value += 1


def lock(n):
    per = 40000 // n
    lk = mp.Lock()
    value = mp.Value("q", 0, lock=False)
    start = mp.Event()
    procs = [mp.Process(target=lock_work, args=(lk, value, start, per))
             for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    took = time.perf_counter() - t0
    if value.value != per * n:
        sys.exit("lost increments")
    return per * n / took


def cpu_item(_):
    c = 0
    for n in range(2, 4000):
        d = 2
        while d * d <= n:
            if n % d == 0:
                break
            d += 1
        else:
            c += 1
    return c


def empty(x):
    return None


def cpu(kind, w):
    items = range(256)
    if kind == "pool":
        with mp.Pool(w) as pool:
            pool.map(empty, range(w))
            t0 = time.perf_counter()
            pool.map(cpu_item, items, chunksize=1)
            return time.perf_counter() - t0
    with cf.ProcessPoolExecutor(max_workers=w) as ex:
        list(ex.map(empty, range(w)))
        t0 = time.perf_counter()
        list(ex.map(cpu_item, items))
        return time.perf_counter() - t0


def empty_rate(kind, w):
    n = 20000
    if kind == "pool":
        with mp.Pool(w) as pool:
            pool.map(empty, range(w))
            t0 = time.perf_counter()
            pool.map(empty, range(n), chunksize=1)
            return n / (time.perf_counter() - t0)
    with cf.ProcessPoolExecutor(max_workers=w) as ex:
        list(ex.map(empty, range(w)))
        t0 = time.perf_counter()
        futs = [ex.submit(empty, i) for i in range(n)]
        for f in futs:
            f.result()
        return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    mp.set_start_method("fork")
    what = sys.argv[1]
    if what == "queue":
        v = queue(int(sys.argv[2]), int(sys.argv[3]))
    elif what == "lock":
        v = lock(int(sys.argv[2]))
    elif what == "cpu":
        v = cpu(sys.argv[2], int(sys.argv[3]))
    elif what == "empty":
        v = empty_rate(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("unknown measure " + what)
    print("%.6f" % v)
