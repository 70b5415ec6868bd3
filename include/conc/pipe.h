/* conc/pipe.h - multiprocessing.Pipe and its Connection: two connected
 * ends that carry whole byte messages, between threads or processes.
 *
 *   conc_conn *parent, *child;
 *   conc_pipe(&parent, &child, true);            // Pipe()
 *   // fork (conc_process_start); the child keeps `child`, frees `parent`
 *   conc_conn_send(child, "hello", 5);           // child_conn.send_bytes()
 *   conc_msg m;
 *   conc_conn_recv(parent, &m, CONC_FOREVER);    // parent_conn.recv_bytes()
 *   conc_msg_free(&m);
 *
 * The ends are the two sides of a Unix stream socket (socketpair(2),
 * close-on-exec).  Each message travels as one frame: a 4-byte big-endian
 * length and the bytes, or for 2 GiB and more the 4 bytes 0xffffffff, an
 * 8-byte big-endian length and the bytes.  That is Python's own
 * Connection.send_bytes() framing, so a libconc end and a Python
 * Connection on the same socket understand each other's bytes.
 *
 * Bytes, not pickles.  A libconc frame carries bytes: conc_conn_send is
 * Python's Connection.send_bytes() and conc_conn_recv its recv_bytes().
 * Python's send(obj) and recv() pickle: a C program that receives what
 * Python's send() wrote gets pickle bytes (starting 0x80), and Python's
 * recv() on bytes from C fails with an UnpicklingError.  So the Python
 * side of a conversation with C uses send_bytes()/recv_bytes() (or
 * recv_bytes_into()), and the two agree on an encoding of their own for
 * anything structured: struct.pack() for fixed records, UTF-8 text,
 * JSON.
 *
 * Whole messages or nothing.  A receiver never takes a truncated message
 * for a whole one: when the stream ends in the middle of a frame (the
 * sender was killed halfway, or gave up halfway, see
 * conc_conn_send_timeout) the partial frame is dropped and the receiver
 * gets CONC_ECLOSED.
 *
 * Hostile headers.  A frame's header comes from another process, maybe
 * over the network, and is checked before it is trusted.  A receiving end
 * refuses a message longer than its max_message_bytes
 * (CONC_MAX_MESSAGE_DEFAULT unless set; Python's recv_bytes(maxlength))
 * with CONC_ETOOBIG, and a header no sender writes (a negative length)
 * with CONC_ECORRUPT, both at once, before any allocation.  The stream's
 * framing is then lost for that end (the refused payload is not read, and
 * nothing else marks where it ends), so its receiving stops for good:
 * every later receive returns CONC_ECLOSED, conc_conn_poll 1, and
 * conc_errdetail() says why; its sending direction, on a duplex end,
 * still works (as Python's Connection after "bad message length").  The
 * refusing end also shuts its socket's receiving direction: a peer still
 * sending on a Unix socket (every pipe) gets CONC_ECLOSED instead of
 * blocking on a reader that will never read.  Under the limit, memory
 * follows the bytes that arrive, not the header: a header that announces
 * a message of 1.5 GiB and sends nothing costs one untouched 1 MiB
 * buffer.
 *
 * Sharing.  Ends created before fork() work in the child; as with any
 * pipe, end of file reaches a reader only when every copy of the other end
 * is closed, so after forking each side frees the end it does not use.
 * Every end is safe from any number of threads of one process: sends on
 * one end are serialised, receives too.  Two processes sending on the same
 * end at the same moment may interleave their frames (as in Python): give
 * each sender its own pipe.  A fork() while another thread is inside a
 * call on an end leaves that end unusable in the child.
 *
 * Signals.  No call ever raises SIGPIPE: a send to a closed peer returns
 * CONC_ECLOSED.  A blocking call interrupted by a signal resumes with the
 * time left.
 */
#ifndef CONC_PIPE_H
#define CONC_PIPE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_conn conc_conn;

/* CONC_MAX_MESSAGE_DEFAULT - the longest message an end receives unless
 * told otherwise (max_message_bytes 0): 2^31 - 1 bytes, the largest
 * length the ordinary 4-byte header carries.  Every frame that Python or
 * libconc writes for a message under 2 GiB is accepted; a frame of 2 GiB
 * or more (the 8-byte header form) is refused unless the receiver raised
 * its limit, which one that expects such messages does.  A limit is no
 * memory reserved: memory follows the bytes that really arrive (above),
 * so the default costs nothing until a peer sends that much. */
#define CONC_MAX_MESSAGE_DEFAULT ((size_t)0x7fffffff)

/* conc_pipe_opts - zero for the defaults.  one_way: false (the default)
 * for a duplex pipe, as Python's Pipe(); true for Pipe(duplex=False).
 * max_message_bytes: the longest message either end receives (0:
 * CONC_MAX_MESSAGE_DEFAULT; conc_conn_set_max_message changes it later). */
typedef struct conc_pipe_opts {
    bool one_way;
    size_t max_message_bytes;
} conc_pipe_opts;

/* conc_pipe_new - a new pair of connected ends (Python's Pipe(duplex)),
 * with options (opts may be NULL).  Duplex: both ends send and receive.
 * One-way: *a only receives and *b only sends, Python's (reader, writer)
 * order; a send on *a or a receive/poll on *b is CONC_EPERM (Python's
 * "connection is read-only" / "write-only").  0; CONC_EINVAL (NULL a or
 * b); CONC_ENOMEM; CONC_ESYS (socketpair failed, errno kept: EMFILE,
 * ENFILE).  *a and *b are set to NULL on failure; free each end with
 * conc_conn_free(). */
CONC_API int conc_pipe_new(conc_conn **a, conc_conn **b,
                           const conc_pipe_opts *opts);

/* conc_pipe - conc_pipe_new with .one_way = !duplex and the default
 * max_message_bytes. */
CONC_API int conc_pipe(conc_conn **a, conc_conn **b, bool duplex);

/* conc_conn_set_max_message - the longest message this end receives from
 * now on (Python's recv_bytes(maxlength) for every receive): 0 restores
 * CONC_MAX_MESSAGE_DEFAULT; SIZE_MAX means no limit.  A frame longer is
 * refused at its header with CONC_ETOOBIG and receiving stops (above).
 * Applies to every frame whose header is read after the call (a message
 * already begun is not cut short).  Any thread, any time; a cheap store.
 * 0; CONC_EINVAL for NULL c. */
CONC_API int conc_conn_set_max_message(conc_conn *c,
                                       size_t max_message_bytes);

/* conc_conn_send - sends a copy of len bytes at data (NULL allowed when
 * len is 0) as one message, blocking for as long as the receiver leaves
 * no room (Python's send_bytes(); no size limit on sending, but a
 * receiver refuses a message over its max_message_bytes).
 * conc_conn_send_timeout(c, data, len, CONC_FOREVER).  0; CONC_ECLOSED
 * (the other end is closed, also when it closed during the send; no
 * SIGPIPE); CONC_EPERM (a receive-only end); CONC_EINVAL (NULL c, NULL
 * data with len > 0); CONC_ESYS (errno kept). */
CONC_API int conc_conn_send(conc_conn *c, const void *data, size_t len);

/* conc_conn_send_timeout - conc_conn_send with a limit on the wait for
 * room.  A frame of up to about 100 KiB (half the socket buffer) is queued
 * by the kernel whole or not at all, so a short timeout, or 0, is safe for
 * such messages; a larger one needs the receiver to read while it is
 * sent, and a short timeout may run out halfway (below): give large
 * messages CONC_FOREVER or a generous timeout.  When the
 * time runs out before any byte of the frame went out: CONC_ETIMEDOUT,
 * nothing was sent and the end stays usable.  When it runs out halfway
 * through a frame (a message larger than the socket buffer, about
 * 200 KiB, and a receiver that does not read), the frame cannot be taken
 * back: the end's sending direction is shut down for every process, the
 * receiver gets every message sent before and then CONC_ECLOSED (never
 * the truncated one), this call returns CONC_ETIMEDOUT and later sends
 * CONC_ECLOSED.  Other errors as conc_conn_send, and CONC_EINVAL for a
 * bad timeout. */
CONC_API int conc_conn_send_timeout(conc_conn *c, const void *data,
                                    size_t len, double timeout);

/* conc_conn_recv - receives the next message into *msg (heap bytes the
 * caller frees with conc_msg_free(); data NULL for a 0-byte message),
 * waiting up to timeout (Python's recv_bytes()).  0; CONC_ETIMEDOUT (no
 * whole message in time; a message that had begun to arrive is kept and
 * completed by the next call); CONC_ECLOSED (the other end is closed and
 * every message it sent has been received: Python's EOFError; also after
 * conc_conn_close, and on every receive after receiving stopped, see
 * "Hostile headers"); CONC_ETOOBIG (the next message is longer than
 * max_message_bytes: receiving stops); CONC_ECORRUPT (the stream carries
 * something that is not a frame: receiving stops); CONC_EPERM (a
 * send-only end); CONC_ENOMEM (no memory for the message: what was read
 * of it is kept and a later call goes on); CONC_EINVAL (NULL c or msg,
 * bad timeout); CONC_ESYS.  *msg is zeroed on every error. */
CONC_API int conc_conn_recv(conc_conn *c, conc_msg *msg, double timeout);

/* conc_conn_recv_into - as conc_conn_recv, into buf (cap bytes); *len
 * gets the message's length.  CONC_ETOOBIG when cap is smaller than the
 * message: *len says how much room it needs and the message is left to
 * read (Python's BufferTooShort, without losing the message).
 * CONC_ETOOBIG with *len 0 is the other one, a message over
 * max_message_bytes: receiving has stopped (conc_conn_recv).
 * CONC_EINVAL also for NULL len, or NULL buf with cap > 0.  No allocation,
 * except when the timeout runs out with part of a message read: the part
 * is kept on the heap for the next call (at most cap bytes); if that
 * allocation fails the call returns CONC_ENOMEM and the end can no longer
 * find the next message's start (receiving stops: later receives
 * CONC_ECLOSED). */
CONC_API int conc_conn_recv_into(conc_conn *c, void *buf, size_t cap,
                                 size_t *len, double timeout);

/* conc_conn_poll - whether a message can be received without waiting,
 * waiting up to timeout for one (Python's poll(); timeout 0 never
 * waits).  1: a whole message is waiting, or a receive returns at once
 * without one (the other end is closed, as Python's poll() is true at end
 * of file, or receiving has stopped: the next receive says why); 0: none
 * came in time.  Errors: CONC_EPERM (a send-only end), CONC_EINVAL (NULL
 * c, bad timeout), CONC_ECLOSED (after conc_conn_close), CONC_ENOMEM (no
 * memory to take a large message in; nothing is lost), CONC_ESYS.  To
 * know that a message is whole, poll takes it into the end's own memory:
 * conc_conn_recv then returns it at once. */
CONC_API int conc_conn_poll(conc_conn *c, double timeout);

/* conc_conn_fileno - the end's file descriptor (close-on-exec), for
 * poll(2), select(2) or epoll: it is readable while a message (or end of
 * file) is waiting that this end has not yet taken in, and writable while
 * a send would make progress.  Messages are never read ahead, so after a
 * receive the descriptor is readable exactly when another message has
 * arrived; only a message already taken in by conc_conn_poll (which
 * returned 1) is not signalled by it.  Do not read or write the
 * descriptor directly.  CONC_EINVAL for NULL, CONC_ECLOSED after
 * conc_conn_close. */
CONC_API int conc_conn_fileno(const conc_conn *c);

/* conc_conn_close - closes this process's descriptor (Python's close()):
 * the other end sees end of file once every copy of this end is closed.
 * The handle stays valid: later calls return CONC_ECLOSED, and it must
 * still be freed.  Closing twice is harmless.  Must not race with other
 * calls on the same handle.  0; CONC_EINVAL for NULL. */
CONC_API int conc_conn_close(conc_conn *c);

/* conc_conn_free - closes the end if still open and releases the handle.
 * NULL is a no-op.  Must not race with other calls on the same handle. */
CONC_API void conc_conn_free(conc_conn *c);

/* ---- multiprocessing.connection: Listener and Client -------------------
 *
 *   conc_listener *l;                                   // Listener(address,
 *   conc_listener_new(&l, "tcp://127.0.0.1:0",          //   authkey=b'secret')
 *       &(conc_listener_opts){ .authkey = "secret", .authkey_len = 6 });
 *   conc_conn *c;
 *   conc_listener_accept(l, &c, CONC_FOREVER);          // l.accept()
 *   // elsewhere: conc_client_connect(&c, address, &(conc_client_opts){
 *   //     .authkey = "secret", .authkey_len = 6,       // Client(address, ...)
 *   //     .timeout = CONC_TIMEOUT(10) });
 *
 * Addresses are one string:
 *   "unix:/path/sock", "/path/sock", "./sock", "../sock"
 *                          a filesystem Unix socket (Python's 'AF_UNIX');
 *   "unix:@name"           a Linux abstract Unix socket (Python's
 *                          '\0name'): no file, gone with the listener;
 *   "tcp:host:port", "tcp://host:port", "host:port"
 *                          TCP; host is a numeric IPv4 address,
 *                          "localhost", empty (any address, Python's ''),
 *                          or a numeric IPv6 address in brackets,
 *                          "[::1]:port".  Other host names are refused
 *                          (CONC_EINVAL): resolving one could block past
 *                          any timeout.  Port 0 asks a listener for a
 *                          free port (conc_listener_port and
 *                          conc_listener_address tell which).
 * A malformed address is CONC_EINVAL, with a detail (conc_errdetail) that
 * says what is wrong and lists these forms (also a Unix path of 108 bytes
 * or more); an address the system refuses is CONC_ESYS with errno kept
 * (EADDRINUSE, ENOENT, ECONNREFUSED, EACCES...).
 *
 * Authentication is CPython's: with a key, accept delivers a challenge
 * (20 random bytes; the answer is their HMAC-MD5 under the key) and then
 * answers the client's; the client answers first, then delivers.  The key
 * never crosses the wire.  As the answerer both Python's legacy challenge
 * and 3.12's "{sha256}" one are understood; as the verifier a raw
 * HMAC-MD5 or a "{md5}"/"{sha256}" answer is accepted, compared over
 * every byte in constant time.  So a conc listener serves Python Clients
 * (3.x) and conc clients reach Python Listeners, both ways with or
 * without a key; a side with a key and a side without do not understand
 * each other (as in Python).  No encryption: the messages that follow
 * travel in clear.
 *
 * Clients that never speak.  A keyed listener runs the handshakes of all
 * its pending connections together: accept takes in every connection
 * waiting (up to the backlog), sends each its challenge, and hands out
 * whichever passes first, so a client that is silent, slow or hostile
 * never delays an authorised one; it holds one slot until its
 * handshake_timeout and is then dropped (its accept: CONC_EAUTH).  A
 * handshake message over 256 bytes fails at its header, before it is
 * read (Python's recv_bytes(256)).  Handshakes advance only while some
 * thread is inside conc_listener_accept (or polls the listener's fileno
 * and then accepts).
 *
 * Every descriptor is close-on-exec; no call raises SIGPIPE.  The
 * connections returned are ordinary duplex conc_conn ends: send, recv,
 * poll, fileno, close and free work as on a pipe, with Python's
 * send_bytes framing on the wire and the same limit on what they receive
 * (max_message_bytes).  After fork() only one process should accept on a
 * listener; a fork while another thread is inside accept leaves the
 * child's copy unable to accept (its accepts time out).
 */

typedef struct conc_listener conc_listener;

/* conc_listener_opts - zero for the defaults.
 * backlog: the kernel's queue of connections not yet accepted (0: 128;
 *   negative: CONC_EINVAL); with a key, also the most connections in
 *   their handshake at once (at most 1024: each holds a descriptor).
 * authkey/authkey_len: the shared key (copied; any bytes, any length);
 *   NULL/0 for no authentication (as Python's Listener with an empty or
 *   no key); NULL with authkey_len > 0 is CONC_EINVAL.
 * handshake_timeout: how long one connection may take over its
 *   handshake, from the moment accept takes it in (a conc_timeout: left
 *   out, 5 s, ample for a Python or libconc client anywhere on a network
 *   and short enough that silent ones do not pile up; CONC_TIMEOUT(0)
 *   does not wait: a client passes only if each of its answers is there
 *   already when accept looks, which is rarely so;
 *   CONC_TIMEOUT(CONC_FOREVER) lets a silent client hold its slot until
 *   it hangs up).  Python's Listener has no
 *   such limit: a silent client blocks its accept for ever.
 * max_message_bytes: the longest message each accepted connection
 *   receives (0: CONC_MAX_MESSAGE_DEFAULT; see "Hostile headers"). */
typedef struct conc_listener_opts {
    int backlog;
    const void *authkey;
    size_t authkey_len;
    conc_timeout handshake_timeout;
    size_t max_message_bytes;
} conc_listener_opts;

/* conc_listener_new - binds and listens at address (Python's
 * Listener(address, authkey=...)); opts may be NULL.  address NULL: a
 * fresh socket in a new private directory (mode 0700) under $TMPDIR or
 * /tmp, both removed when the listener closes (Python's Listener()).  A
 * filesystem socket the listener binds is unlinked by conc_listener_close
 * or _free in the process that created the listener, and only if the
 * path still names that socket; an existing file at the path is
 * CONC_ESYS/EADDRINUSE (nothing is unlinked first).  TCP listeners set
 * SO_REUSEADDR, as Python does.  0 and *out set; CONC_EINVAL (NULL out,
 * bad address or options), CONC_ENOMEM, CONC_ESYS (errno kept).  *out is
 * NULL on failure. */
CONC_API int conc_listener_new(conc_listener **out, const char *address,
                               const conc_listener_opts *opts);

/* conc_listener_accept - waits up to timeout for a connection that has
 * passed the handshake (with a key; without one, any connection), and
 * gives it in *out (Python's accept(); free it with conc_conn_free).
 * While it waits it drives the handshakes of every pending connection
 * (above), so the first to pass is the one returned, whatever the others
 * do.  Timeout 0 never waits: it takes in what is waiting, advances
 * every handshake as far as the bytes already there allow, and returns a
 * connection that is through, or CONC_ETIMEDOUT (the rest go on at the
 * next call: poll conc_listener_fileno, then accept with timeout 0
 * again).  0; CONC_ETIMEDOUT (no connection was through in time);
 * CONC_EAUTH (a pending connection failed its handshake: wrong key, not a
 * libconc/Python peer, the peer hung up, or no answer within
 * handshake_timeout; that connection is closed, after a #FAILURE#
 * message where Python would send one, the listener goes on, and each
 * failed connection is reported by one accept, after any connection that
 * passed; the detail names the client and the reason); CONC_ECLOSED (the
 * listener is closed, also when conc_listener_close runs in another
 * thread during the wait, or, for a forked child's copy, in the process
 * that made the listener); CONC_EINVAL (NULL l or out, bad timeout);
 * CONC_ENOMEM; CONC_ESYS (errno kept: EMFILE...).  Any number of threads
 * may accept on one listener; each connection goes to one of them.  *out
 * is NULL on failure. */
CONC_API int conc_listener_accept(conc_listener *l, conc_conn **out,
                                  double timeout);

/* conc_listener_address - the address bound, in the syntax given, with
 * the real port when port 0 was asked ("tcp:127.0.0.1:0" gives
 * "tcp:127.0.0.1:40321", "tcp://127.0.0.1:0" "tcp://127.0.0.1:40321");
 * for a NULL address the path made.  Owned by the listener, valid until
 * conc_listener_free (also after close).  NULL for NULL l. */
CONC_API const char *conc_listener_address(const conc_listener *l);

/* conc_listener_port - the TCP port bound, as a number (the real one
 * when port 0 was asked; Python's listener.address[1]), also after
 * close.  CONC_EINVAL for NULL l or a Unix-socket listener. */
CONC_API int conc_listener_port(const conc_listener *l);

/* conc_listener_fileno - a descriptor for poll(2), select(2) or epoll
 * that is readable while conc_listener_accept has something to do: a
 * connection waits to be taken in, a handshake's bytes came or its time
 * is up, a connection is through, or the listener was closed; then
 * conc_listener_accept with timeout 0 does it.  (It is an epoll set over
 * the listening socket and the handshakes in flight: do not read it.)
 * CONC_EINVAL for NULL, CONC_ECLOSED after close. */
CONC_API int conc_listener_fileno(const conc_listener *l);

/* conc_listener_close - stops listening (Python's close()): new clients
 * are refused, connections waiting in the queue or in their handshake
 * are dropped, the socket file (if this process made it) is unlinked,
 * and every accept blocked in another thread returns CONC_ECLOSED
 * promptly, as do later accepts.  Connections already accepted are not
 * affected.  In the process that made the listener, the socket itself is
 * shut down (shutdown(2)), so children forked since (a process pool's
 * workers included) stop listening too and a TCP port is free again
 * while they run; a forked child's close affects its own copy only, and
 * conc_listener_free without a close leaves children's copies listening
 * (to hand a listener to a child that serves).  Closing twice is
 * harmless.  0; CONC_EINVAL for NULL. */
CONC_API int conc_listener_close(conc_listener *l);

/* conc_listener_free - closes this process's copy (as
 * conc_listener_close, but without shutting the socket down for the
 * copies children hold) and releases the handle; NULL is a no-op.  Must
 * not race with other calls on l.  After fork() either process may free
 * its copy; only the creating process removes the socket file. */
CONC_API void conc_listener_free(conc_listener *l);

/* conc_client_opts - zero for the defaults.
 * authkey/authkey_len: as in conc_listener_opts (NULL/0: no
 *   authentication).
 * timeout: for connecting and the handshake together (a conc_timeout:
 *   left out, no limit, as Python's Client; CONC_TIMEOUT(0) does not
 *   wait, so only a connection that completes at once, a Unix socket
 *   without a key, can succeed; NaN or a negative value other than
 *   CONC_FOREVER is CONC_EINVAL).  Before conc_timeout this field was a
 *   double whose 0 meant no limit; .timeout = 10 is now
 *   .timeout = CONC_TIMEOUT(10).
 * max_message_bytes: the longest message the connection receives (0:
 *   CONC_MAX_MESSAGE_DEFAULT). */
typedef struct conc_client_opts {
    const void *authkey;
    size_t authkey_len;
    conc_timeout timeout;
    size_t max_message_bytes;
} conc_client_opts;

/* conc_client_connect - connects to a listener at address and, with a
 * key, runs the handshake (Python's Client(address, authkey=...)); opts
 * may be NULL.  A Unix listener whose queue is full is retried until the
 * timeout.  0 and *out set to a duplex connection (free with
 * conc_conn_free); CONC_EINVAL (NULL out, bad address or options; port 0);
 * CONC_ESYS (errno kept: ENOENT for a missing socket file, ECONNREFUSED
 * for nobody listening...); CONC_ETIMEDOUT (not connected in time);
 * CONC_EAUTH (the handshake failed: wrong key, a peer without a key or not
 * speaking the protocol, or the time ran out during it; a wrong answer to
 * our challenge gets #FAILURE# first, as Python sends); CONC_ENOMEM.
 * Each error has a detail naming the address.  *out is NULL on failure.
 * Thread-safe. */
CONC_API int conc_client_connect(conc_conn **out, const char *address,
                                 const conc_client_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
