#!/usr/bin/env python3
"""A Redis server that lies, for test_redis_queue.c: it speaks enough of
RESP2 for libconc's handshake and queue declare, then answers a batch get
with more messages than were asked for.

usage: py_redis_liar.py MODE
  MODE more   the at-least-once get's batch script answers 64 messages
  MODE rpop   the at-most-once get's RPOP with a count answers 64
  MODE many   the batch script answers a million one-byte messages (7 MB
              on the wire, about 70 MB as hiredis's reply objects)
Binds a free loopback port, prints "PORT\\n" and serves until killed."""
import hashlib
import sys

from py_resp_server import read_command, serve_forever

MODE = sys.argv[1]


def bulk(b):
    if isinstance(b, str):
        b = b.encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def array(items):
    """items: bytes already encoded (integers) or str/bytes (bulk)."""
    out = b"*%d\r\n" % len(items)
    for x in items:
        out += x if isinstance(x, bytes) and x[:1] == b":" else bulk(x)
    return out


def integer(n):
    return b":%d\r\n" % n


# Each message is a bulk string tagged 'm' (libconc's element layout).
LIES = ["m" + "lie%d" % i for i in range(64)]


def serve(conn):
    f = conn.makefile("rb")
    kind = {}  # sha -> what the script is
    while True:
        _, a = read_command(f)
        if a is None:
            return
        cmd = a[0].upper()
        if cmd == b"HELLO":
            reply = array(["server", "redis", "version", "7.0.15",
                           "proto", integer(2)])
        elif cmd == b"SELECT":
            reply = b"+OK\r\n"
        elif cmd == b"SCRIPT":
            body = a[2]
            sha = hashlib.sha1(body).hexdigest()
            if b"return {'new', ARGV[1]" in body:
                kind[sha] = "declare"
            elif b"LRANGE" in body and b"LTRIM" in body:
                kind[sha] = "more"
            reply = bulk(sha)
        elif cmd == b"EVALSHA":
            k = kind.get(a[1].decode(), "other")
            first_arg = 3 + int(a[2])
            if k == "declare":  # {'new', maxsize, lease, amo, '0'}
                argv = a[first_arg:]
                reply = array(["new", argv[0], argv[1], argv[2], "0"])
            elif k == "more" and MODE == "many":
                reply = b"*1000001\r\n:0\r\n" + b"$1\r\nm\r\n" * 1000000
            elif k == "more":
                reply = array([integer(0)] + LIES)
            else:
                reply = integer(0)
        elif cmd in (b"BLMOVE", b"LMOVE"):
            reply = bulk("mfirst")
        elif cmd == b"BRPOP":
            reply = array([a[1], "mfirst"])
        elif cmd == b"RPOP":
            reply = array(LIES) if MODE == "rpop" else b"$-1\r\n"
        else:
            reply = integer(0)
        try:
            conn.sendall(reply)
        except OSError:  # the client gave up on the reply: expected
            return


serve_forever(serve)
