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
 * Whole messages or nothing.  A receiver never takes a truncated message
 * for a whole one: when the stream ends in the middle of a frame (the
 * sender was killed halfway, or gave up halfway, see
 * conc_conn_send_timeout) the partial frame is dropped and the receiver
 * gets CONC_ECLOSED.
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

/* conc_pipe - a new pair of connected ends (Python's Pipe(duplex)).
 * duplex true: both ends send and receive.  duplex false: *a only
 * receives and *b only sends, Python's (reader, writer) order; a send on
 * *a or a receive/poll on *b is CONC_EPERM (Python's "connection is
 * read-only" / "write-only").  0; CONC_EINVAL (NULL a or b); CONC_ENOMEM;
 * CONC_ESYS (socketpair failed, errno kept: EMFILE, ENFILE).  *a and *b
 * are set to NULL on failure; free each end with conc_conn_free(). */
CONC_API int conc_pipe(conc_conn **a, conc_conn **b, bool duplex);

/* conc_conn_send - sends a copy of len bytes at data (NULL allowed when
 * len is 0) as one message, blocking for as long as the receiver leaves
 * no room (Python's send_bytes(); there is no size limit).
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
 * conc_conn_close); CONC_EPERM (a send-only end); CONC_ENOMEM (no memory
 * for the message: it is left to read); CONC_EINVAL (NULL c or msg, bad
 * timeout, or the stream carries something that is not a frame: a
 * negative length; the end then stays unreadable); CONC_ESYS.  *msg is
 * zeroed on every error. */
CONC_API int conc_conn_recv(conc_conn *c, conc_msg *msg, double timeout);

/* conc_conn_recv_into - as conc_conn_recv, into buf (cap bytes); *len
 * gets the message's length.  CONC_ETOOBIG when cap is smaller than the
 * message: *len says how much room it needs and the message is left to
 * read (Python's BufferTooShort, without losing the message).
 * CONC_EINVAL also for NULL len, or NULL buf with cap > 0.  No allocation,
 * except when the timeout runs out with part of a message read: the part
 * is kept on the heap for the next call; if that allocation fails the
 * call returns CONC_ENOMEM and the end can no longer find the next
 * message's start (later receives: CONC_ECLOSED). */
CONC_API int conc_conn_recv_into(conc_conn *c, void *buf, size_t cap,
                                 size_t *len, double timeout);

/* conc_conn_poll - whether a message can be received without waiting,
 * waiting up to timeout for one (Python's poll(); timeout 0 never
 * waits).  1: a whole message is waiting, or the other end is closed (the
 * next receive then returns CONC_ECLOSED, as Python's poll() is true at
 * end of file); 0: none came in time.  Errors: CONC_EPERM (a send-only
 * end), CONC_EINVAL (NULL c, bad timeout), CONC_ECLOSED (after
 * conc_conn_close), CONC_ENOMEM (no memory to take a large message in;
 * nothing is lost), CONC_ESYS.  To know that a message is whole, poll
 * takes it into the end's own memory: conc_conn_recv then returns it at
 * once. */
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

#ifdef __cplusplus
}
#endif
#endif
