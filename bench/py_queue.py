"""py_queue.py - the Python baselines for bench_queue: multiprocessing.Queue
throughput (64 B, 1 KiB, 64 KiB; 1 producer -> 1 consumer process and
2 -> 2), multiprocessing.Pipe throughput (64 B) and round trip.

Run by bench_queue in the same run as the C measurements; prints one
result per line, "name size producers consumers value", where value is
messages per second, or microseconds per round trip for "mppipe_rt".
Counts are chosen so that the whole script takes a few seconds.
"""
import multiprocessing as mp
import sys
import time

SIZES = (64, 1024, 65536)


def q_producer(q, go, n, size):
    payload = b"x" * size
    go.wait()
    for _ in range(n):
        q.put(payload)
    q.put(None)


def q_consumer(q, done):
    n = 0
    while True:
        item = q.get()
        if item is None:
            break
        n += 1
    done.put(n)


def queue_rate(size, nprod, ncons, total):
    q = mp.Queue()
    go = mp.Event()
    done = mp.Queue()
    per = total // nprod
    procs = [mp.Process(target=q_consumer, args=(q, done)) for _ in range(ncons)]
    procs += [mp.Process(target=q_producer, args=(q, go, per, size))
              for _ in range(nprod)]
    for p in procs:
        p.start()
    time.sleep(0.05)  # let every process reach its first wait
    t0 = time.perf_counter()
    go.set()
    got = sum(done.get() for _ in range(ncons))
    t1 = time.perf_counter()
    for p in procs:
        p.join()
    assert got == per * nprod, (got, per * nprod)
    return got / (t1 - t0)


def pipe_producer(conn, go, n, size):
    payload = b"x" * size
    go.wait()
    for _ in range(n):
        conn.send(payload)
    conn.send(None)
    conn.close()


def pipe_rate(size, total):
    r, w = mp.Pipe(duplex=False)
    go = mp.Event()
    p = mp.Process(target=pipe_producer, args=(w, go, total, size))
    p.start()
    w.close()
    time.sleep(0.05)
    t0 = time.perf_counter()
    go.set()
    n = 0
    while r.recv() is not None:
        n += 1
    t1 = time.perf_counter()
    p.join()
    assert n == total
    return n / (t1 - t0)


def echo_server(conn):
    while True:
        m = conn.recv()
        if m is None:
            break
        conn.send(m)


def pipe_round_trip(n):
    a, b = mp.Pipe()
    p = mp.Process(target=echo_server, args=(b,))
    p.start()
    msg = b"x" * 64
    for _ in range(200):  # warm up
        a.send(msg)
        a.recv()
    t0 = time.perf_counter()
    for _ in range(n):
        a.send(msg)
        a.recv()
    t1 = time.perf_counter()
    a.send(None)
    p.join()
    return (t1 - t0) / n * 1e6


def main():
    mp.set_start_method("fork")
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    counts = {64: 60000, 1024: 40000, 65536: 8000}
    for size in SIZES:
        for nprod, ncons in ((1, 1), (2, 2)):
            n = max(1000, int(counts[size] * scale))
            rate = queue_rate(size, nprod, ncons, n)
            print("mpq %d %d %d %.1f" % (size, nprod, ncons, rate), flush=True)
    rate = pipe_rate(64, max(1000, int(100000 * scale)))
    print("mppipe 64 1 1 %.1f" % rate, flush=True)
    rt = pipe_round_trip(max(500, int(5000 * scale)))
    print("mppipe_rt 64 1 1 %.3f" % rt, flush=True)


if __name__ == "__main__":
    main()
