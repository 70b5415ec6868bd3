#!/usr/bin/env python3
"""make_wire_corpus.py - the seed inputs of fuzz/fuzz_frame.c and
fuzz/fuzz_handshake.c, written from real exchanges with CPython's
multiprocessing.connection (the bytes Python's own Connection,
answer_challenge and deliver_challenge put on the wire), plus hand-made
edge cases.  Run it from anywhere; it rewrites fuzz/corpus/frame/ and
fuzz/corpus/handshake/ seeds named py-* and edge-* (inputs the fuzzer
found and that were merged in keep their own names).

fuzz_frame input:     [config][chunk][stream...]
    config: low 2 bits pick max_message_bytes (16, 1000, 70000, default)
fuzz_handshake input: [role | chunk << 1][the peer's bytes...]
    role 0: we are the server, the input plays Python's Client;
    role 1: we are the client, the input plays Python's Listener.
The handshake key and nonce are fuzz_handshake.c's FUZZ_KEY / FUZZ_NONCE.
"""
import hmac
import os
import socket
import struct
import threading
from multiprocessing.connection import (Connection, answer_challenge,
                                        deliver_challenge)

KEY = b'fuzz-key'
NONCE = bytes(range(1, 21))
CHALLENGE = b'#CHALLENGE#'
WELCOME = b'#WELCOME#'
FAILURE = b'#FAILURE#'
HERE = os.path.dirname(os.path.abspath(__file__))


def frame(b):
    return struct.pack('!i', len(b)) + b


def long_frame(b):
    return b'\xff\xff\xff\xff' + struct.pack('!Q', len(b)) + b


def recorded(python_side, script_side):
    """Runs python_side(conn) (CPython's code on a real Connection) against
    script_side(sock) (our side, played by this script) over a socketpair,
    and returns every byte Python wrote."""
    a, b = socket.socketpair()
    wrote = bytearray()
    done = threading.Event()

    def run():
        try:
            python_side(Connection(a.detach()))
        except Exception:
            pass
        done.set()
    t = threading.Thread(target=run)
    t.start()
    try:
        script_side(b, wrote)
    finally:
        t.join(10)
        b.close()
    return bytes(wrote)


def read_frame(sock, wrote):
    h = sock.recv(4, socket.MSG_WAITALL)
    n, = struct.unpack('!i', h)
    p = sock.recv(n, socket.MSG_WAITALL) if n else b''
    wrote += h + p
    return p


def as_server(sock, wrote, verdict_ok=True):
    """Our server's side with the fixed nonce; Python is the client."""
    sock.sendall(frame(CHALLENGE + NONCE))
    read_frame(sock, wrote)                           # Python's answer
    sock.sendall(frame(WELCOME))
    chal = read_frame(sock, wrote)                    # Python's challenge
    mac = hmac.new(KEY, chal[len(CHALLENGE):], 'md5').digest()
    sock.sendall(frame(mac))
    read_frame(sock, wrote)                           # Python's verdict


def as_client(sock, wrote):
    """Our client's side with the fixed nonce; Python is the listener."""
    chal = read_frame(sock, wrote)                    # Python's challenge
    mac = hmac.new(KEY, chal[len(CHALLENGE):], 'md5').digest()
    sock.sendall(frame(mac))
    read_frame(sock, wrote)                           # its verdict
    sock.sendall(frame(CHALLENGE + NONCE))
    read_frame(sock, wrote)                           # its answer


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def frame_seeds():
    # Python's Connection.send_bytes, recorded from the wire.
    msgs = [b'', b'x', b'hello', bytes(range(256)) * 3, b'q' * 20000]
    a, b = socket.socketpair()
    c = Connection(a.detach())
    for m in msgs:
        c.send_bytes(m)
    c.close()
    stream = bytearray()
    while True:
        got = b.recv(65536)
        if not got:
            break
        stream += got
    b.close()
    stream = bytes(stream)
    for cap in range(4):
        write('frame', 'py-send-bytes-cap%d' % cap, bytes([cap, 0]) + stream)
    write('frame', 'py-send-bytes-chunk7', bytes([3, 7]) + stream)
    write('frame', 'py-send-bytes-chunk1', bytes([1, 1]) + stream[:400])
    # Hand-made: the long form with a small length, a negative length,
    # lying lengths (16 GiB, 2^62, 2^64-1, 2^31-1), a frame cut short.
    edge = {
        'edge-long-form-small': long_frame(b'hello') + frame(b'after'),
        'edge-negative': frame(b'ok') + b'\x80\x00\x00\x01rest',
        'edge-16gib': frame(b'ok') + b'\xff' * 4 + struct.pack('!Q', 16 << 30),
        'edge-2p62': b'\xff' * 4 + struct.pack('!Q', 1 << 62) + b'zz',
        'edge-2p64m1': b'\xff' * 12,
        'edge-2gib': b'\x7f\xff\xff\xff' + b'p' * 100,
        'edge-cut-short': frame(b'whole') + frame(b'0123456789')[:9],
        'edge-cut-header': frame(b'whole') + b'\x00\x00',
        'edge-at-cap': frame(b'a' * 16) + frame(b'b' * 17),
    }
    for name, data in edge.items():
        write('frame', name, bytes([0, 0]) + data)
        write('frame', name + '-chunk3', bytes([2, 3]) + data)


def handshake_seeds():
    # We are the server: Python's Client answers our fixed challenge,
    # challenges us, and welcomes our answer.
    py_client = recorded(lambda c: (answer_challenge(c, KEY),
                                    deliver_challenge(c, KEY)), as_server)
    write('handshake', 'py-client', bytes([0]) + py_client)
    write('handshake', 'py-client-chunk5', bytes([5 << 1]) + py_client)
    write('handshake', 'py-client-then-data',
          bytes([0]) + py_client + frame(b'first message'))
    # We are the client: Python's Listener challenges us, welcomes our
    # answer and answers our fixed challenge.
    py_listener = recorded(lambda c: (deliver_challenge(c, KEY),
                                      answer_challenge(c, KEY)), as_client)
    write('handshake', 'py-listener', bytes([1]) + py_listener)
    write('handshake', 'py-listener-chunk3', bytes([1 | 3 << 1]) + py_listener)
    # Python 3.12's forms, by hand (this Python may be older): the
    # "{sha256}" answer and challenge.
    sha = b'{sha256}' + hmac.new(KEY, NONCE, 'sha256').digest()
    md5 = b'{md5}' + hmac.new(KEY, NONCE, 'md5').digest()
    chal312 = CHALLENGE + b'{sha256}' + bytes(range(40))
    for name, ans in (('sha256', sha), ('md5', md5)):
        write('handshake', 'edge-server-%s' % name,
              bytes([0]) + frame(ans) + frame(chal312) + frame(WELCOME))
        write('handshake', 'edge-client-%s' % name,
              bytes([1]) + frame(chal312) + frame(WELCOME) + frame(ans))
    # Wrong: a digest off by one bit, garbage, a long header, the peer's
    # #FAILURE#, an unknown digest name.
    bad = bytearray(hmac.new(KEY, NONCE, 'md5').digest())
    bad[-1] ^= 1
    write('handshake', 'edge-server-bitflip', bytes([0]) + frame(bytes(bad)))
    write('handshake', 'edge-server-garbage', bytes([0]) + b'garbage!' * 5)
    write('handshake', 'edge-server-long', bytes([0]) + b'\x00\x10\x00\x00')
    write('handshake', 'edge-client-refused',
          bytes([1]) + frame(CHALLENGE + bytes(20)) + frame(FAILURE))
    write('handshake', 'edge-client-sha3',
          bytes([1]) + frame(CHALLENGE + b'{sha3_256}' + bytes(30)))


if __name__ == '__main__':
    frame_seeds()
    handshake_seeds()
