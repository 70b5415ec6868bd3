"""py_manager_queue.py - Python's own answer to a queue between processes
over the network, for bench_redis: a queue.Queue served by a
multiprocessing BaseManager on TCP 127.0.0.1 (an ephemeral port), one
producer process putting 64-byte messages, one consumer process getting
them, each through its own proxy connection.

Prints one line, "manager_queue 64 1 1 <messages per second>", timed from
the moment both processes are ready to the consumer's last get (the best
of three runs).  No acknowledgements, no persistence: a message the
consumer took is gone from the server, whatever happens to the consumer.
"""
import multiprocessing as mp
import queue
import sys
import time
from multiprocessing.managers import BaseManager

N = 20000


class QueueManager(BaseManager):
    pass


_q = queue.Queue()


def _get_q():
    return _q


QueueManager.register("get_queue", callable=_get_q)


def producer(address, key, ready, go, n):
    m = QueueManager(address=address, authkey=key)
    m.connect()
    q = m.get_queue()
    payload = b"x" * 64
    ready.put(1)
    go.wait()
    for _ in range(n):
        q.put(payload)
    q.put(None)


def consumer(address, key, ready, done):
    m = QueueManager(address=address, authkey=key)
    m.connect()
    q = m.get_queue()
    ready.put(1)
    n = 0
    while q.get() is not None:
        n += 1
    done.put((n, time.perf_counter()))


def one_run(n):
    key = b"bench"
    m = QueueManager(address=("127.0.0.1", 0), authkey=key)
    m.start()
    ready, done, go = mp.Queue(), mp.Queue(), mp.Event()
    c = mp.Process(target=consumer, args=(m.address, key, ready, done))
    p = mp.Process(target=producer, args=(m.address, key, ready, go, n))
    c.start()
    p.start()
    ready.get()
    ready.get()
    t0 = time.perf_counter()
    go.set()
    got, t1 = done.get()
    p.join()
    c.join()
    m.shutdown()
    assert got == n, (got, n)
    return n / (t1 - t0)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    best = max(one_run(n) for _ in range(3))
    print("manager_queue 64 1 1 %.0f" % best)


if __name__ == "__main__":
    main()
