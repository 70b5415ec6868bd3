"""What the fake Redis servers of the tests share (py_redis_liar.py,
py_redis_proxy.py): reading a command as a client sends it, and serving
connections on a free loopback port."""
import os
import socket
import threading


def read_command(f):
    """One command (an array of bulk strings) from the file f: its raw
    bytes and its arguments, or (None, None) at the end."""
    line = f.readline()
    if not line:
        return None, None
    raw = [line]
    args = []
    for _ in range(int(line[1:])):
        head = f.readline()
        body = f.read(int(head[1:]) + 2)
        raw += [head, body]
        args.append(body[:-2])
    return b"".join(raw), args


def serve_forever(serve):
    """Binds a free loopback port, writes it (one write: the test reads it
    and closes its end of the pipe) and runs serve(conn) in a thread of
    its own for each connection, until killed."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    os.write(1, b"%d\n" % s.getsockname()[1])
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
