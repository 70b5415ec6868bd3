#!/usr/bin/env python3
"""py_connection_peer.py - the Python side of tests/test_listener.c's
interoperability tests: CPython's multiprocessing.connection (or a hand-made
3.12-style handshake) against libconc's conc_listener / conc_client_connect.

    py_connection_peer.py MODE ADDRESS KEY
        ADDRESS  a libconc address: "unix:/path", "/path", "unix:@name",
                 "tcp:host:port" or "host:port"
        KEY      the authkey as hex, or "-" for none
    py_connection_peer.py digests
        prints MD5, SHA-256, HMAC-MD5 and HMAC-SHA256 of test inputs

MODE:
    listen        Listener(ADDRESS, authkey=KEY), accept one, then `serve`
    client        Client(ADDRESS, authkey=KEY), then `serve`
    deliver312    Listener without key; accept; play a Python 3.12
                  deliverer by hand ("{sha256}" + 40 random bytes, answer
                  expected as "{sha256}" + HMAC-SHA256 of the whole
                  message), then answer the peer's challenge; then `serve`
    answer256     Client without key; answer the peer's legacy challenge
                  by hand with "{sha256}" + HMAC-SHA256, then deliver one;
                  then `serve`

serve: receive b"from-c:" + pattern(7, 3, n), check it, reply
b"from-py:" + pattern(13, 5, 2n + 1); then receive b"bye", reply b"bye-ack".

Exit status: 0 all went well; 3 AuthenticationError; 4 wrong contents;
5 any other exception; 6 no progress for 20 s (SIGALRM).
"""
import hashlib
import hmac
import os
import signal
import sys
import traceback
from multiprocessing.connection import (AuthenticationError, Client,
                                        Listener, answer_challenge,
                                        deliver_challenge)

CHALLENGE = b'#CHALLENGE#'
WELCOME = b'#WELCOME#'
FAILURE = b'#FAILURE#'


def pattern(mul, add, n):
    return bytes((i * mul + add) & 255 for i in range(n))


def py_address(addr):
    """A libconc address string in multiprocessing's form."""
    if addr.startswith('unix:@'):
        return '\0' + addr[6:]
    if addr.startswith('unix:'):
        return addr[5:]
    if addr.startswith(('/', './', '../')):
        return addr
    if addr.startswith('tcp:'):
        addr = addr[4:]
    host, _, port = addr.rpartition(':')
    return (host.strip('[]'), int(port))


def serve(conn):
    msg = conn.recv_bytes()
    n = len(msg) - len(b'from-c:')
    if n < 0 or msg != b'from-c:' + pattern(7, 3, n):
        conn.send_bytes(b'mismatch')
        sys.exit(4)
    conn.send_bytes(b'from-py:' + pattern(13, 5, 2 * n + 1))
    if conn.recv_bytes() != b'bye':
        sys.exit(4)
    conn.send_bytes(b'bye-ack')


def deliver312(conn, key):
    message = b'{sha256}' + os.urandom(40)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    expected = b'{sha256}' + hmac.new(key, message, 'sha256').digest()
    if not hmac.compare_digest(response, expected):
        conn.send_bytes(FAILURE)
        raise AuthenticationError('digest received was wrong')
    conn.send_bytes(WELCOME)


def answer_prefixed(conn, key, name):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError('expected a challenge')
    nonce = message[len(CHALLENGE):]
    mac = hmac.new(key, nonce, name).digest()
    conn.send_bytes(b'{%s}%s' % (name.encode('ascii'), mac))
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError('digest sent was rejected')


def digests():
    for kl in (0, 3, 64, 65, 100):
        for ml in (0, 1, 55, 56, 63, 64, 65, 1000):
            key = pattern(11, 1, kl)
            msg = pattern(13, 5, ml)
            print(kl, ml, hashlib.md5(msg).hexdigest(),
                  hashlib.sha256(msg).hexdigest(),
                  hmac.new(key, msg, 'md5').hexdigest(),
                  hmac.new(key, msg, 'sha256').hexdigest())


def main():
    if sys.argv[1] == 'digests':
        digests()
        return
    mode, addr, keyhex = sys.argv[1:4]
    key = None if keyhex == '-' else bytes.fromhex(keyhex)
    address = py_address(addr)
    if mode == 'listen':
        with Listener(address, authkey=key) as listener:
            with listener.accept() as conn:
                serve(conn)
    elif mode == 'client':
        with Client(address, authkey=key) as conn:
            serve(conn)
    elif mode == 'deliver312':
        with Listener(address) as listener:
            with listener.accept() as conn:
                deliver312(conn, key)
                answer_challenge(conn, key)
                serve(conn)
    elif mode in ('answer256', 'answermd5'):
        with Client(address) as conn:
            answer_prefixed(conn, key, 'sha256' if mode == 'answer256'
                            else 'md5')
            deliver_challenge(conn, key)
            serve(conn)
    else:
        sys.exit(5)


if __name__ == '__main__':
    # A peer that never shows up must not hang the test.
    signal.signal(signal.SIGALRM, lambda *a: os._exit(6))
    signal.alarm(20)
    try:
        main()
    except AuthenticationError:
        sys.exit(3)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(5)
    sys.exit(0)
