#!/usr/bin/env python3
"""A proxy in front of a real Redis server that loses the answer to one
kind of command, for test_redis_lock.c.

usage: py_redis_proxy.py REDIS_PORT MODE
  MODE drop     the first answer to the lock's acquire script is lost:
                the proxy closes that client connection instead of
                passing it on (the script did run on the server)
  MODE corrupt  every answer to the acquire script is replaced by +OK,
                which no acquire answers (the script did run)
Binds a free loopback port, prints "PORT\\n", and relays every other
byte as it is until killed."""
import hashlib
import socket
import sys

from py_resp_server import read_command, serve_forever

REDIS_PORT = int(sys.argv[1])
MODE = sys.argv[2]
acquire_sha = set()
dropped = [False]


def read_reply(f):
    """One reply, nested arrays included: its raw bytes."""
    line = f.readline()
    if not line:
        return None
    kind = line[:1]
    if kind == b"$":
        n = int(line[1:])
        return line + (f.read(n + 2) if n >= 0 else b"")
    if kind == b"*":
        n = int(line[1:])
        parts = [line]
        for _ in range(max(n, 0)):
            parts.append(read_reply(f))
        return b"".join(parts)
    return line  # + - :


def serve(client):
    server = socket.create_connection(("127.0.0.1", REDIS_PORT))
    cf = client.makefile("rb")
    sf = server.makefile("rb")
    try:
        while True:
            raw, args = read_command(cf)
            if raw is None:
                return
            server.sendall(raw)
            reply = read_reply(sf)
            if reply is None:
                return
            cmd = args[0].upper()
            if cmd == b"SCRIPT" and b"'NX', 'PX'" in args[2]:
                acquire_sha.add(hashlib.sha1(args[2]).hexdigest().encode())
            if cmd == b"EVALSHA" and args[1] in acquire_sha:
                if MODE == "drop" and not dropped[0]:
                    dropped[0] = True
                    return  # the answer is lost with the connection
                if MODE == "corrupt":
                    reply = b"+OK\r\n"
            client.sendall(reply)
    except OSError:
        return
    finally:
        client.close()
        server.close()


serve_forever(serve)
