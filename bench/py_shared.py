"""py_shared.py - the Python baselines for bench_shared.c, measured in the
same run: Manager().dict() set+get from a child process, Manager dict
read-modify-write (d[k] += 1 under an mp.Lock, the only way to make it
exact) from 2 processes on one key and on distinct keys, and mp.Value
increments under its own lock from 2 processes.  Prints one line per
figure: "<name> <operations per second>"."""
import multiprocessing as mp
import sys
import time


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


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    mp.set_start_method("fork")
    with mp.Manager() as mgr:
        d = mgr.dict()
        q = mp.Queue()
        p = mp.Process(target=dict_setget, args=(d, int(10000 * scale), q))
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
    v = mp.Value("l", 0)
    n = int(200000 * scale)
    rate = two_procs(value_incr, lambda i: (v,), n)
    if v.value != 2 * n:
        print("value total wrong: %d" % v.value, file=sys.stderr)
        sys.exit(1)
    print("mp_value_lock_incr %.1f" % rate, flush=True)


if __name__ == "__main__":
    main()
