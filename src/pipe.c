/* pipe.c - conc_pipe and conc_conn: Python's Pipe() and Connection, whole
 * byte messages over a Unix stream socket.
 *
 * Transport.  Both ends of every pipe are the two sides of one
 * socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC).  A one-way pipe is the
 * same socket with the reader's sending half and the writer's receiving
 * half shut down, plus a direction check in every call.  pipe(2) was
 * rejected for the one-way case: a pipe cannot be shut down for every
 * process that holds a copy of its write end, and that shutdown is what
 * lets a sender abandon a half-written frame without the reader ever
 * mistaking the rest of the stream for the frame's missing bytes (see
 * "Giving up halfway" below).  A pipe(2) would also raise SIGPIPE on a
 * write to a closed reader unless every send masked the signal, two more
 * system calls per message.  The descriptors stay in blocking mode, for
 * whoever polls them.  A call with a deadline passes MSG_DONTWAIT and
 * waits in ppoll(2) with what is left of the deadline, so a signal never
 * ends a wait early nor restarts its clock; a call without one
 * (CONC_FOREVER) blocks in recv()/sendmsg() itself, one system call
 * fewer per wait, and simply repeats the call after EINTR or a partial
 * send.  MSG_NOSIGNAL on every send: a closed peer is CONC_ECLOSED, never
 * SIGPIPE.
 *
 * Framing.  A frame is a 4-byte big-endian length and the payload; from
 * 2 GiB up, 0xffffffff, an 8-byte big-endian length and the payload.
 * That is Python's Connection.send_bytes() layout, so the two interwork.
 *
 * Sending.  One sendmsg() with the header and the payload as two iovecs;
 * a partial send continues from where it stopped after waiting for
 * POLLOUT.  Small frames (below half the socket buffer) are queued by the
 * kernel whole or not at all, so a send with timeout 0 either sends the
 * message or nothing.
 *
 * Giving up halfway.  conc_conn_send_timeout() whose time runs out after
 * part of a frame went out cannot take the part back, and cannot finish
 * the frame without waiting.  It shuts the socket's sending direction down
 * (shutdown(SHUT_WR) acts on the socket, so it reaches the reader even when
 * other processes hold copies of this descriptor): the reader receives
 * every earlier message, then end of file in the middle of a frame, drops
 * the partial frame and returns CONC_ECLOSED.  A sender killed halfway
 * looks the same to the reader once every copy of the sending end is
 * closed.  So a truncated message is never delivered as a whole one.
 *
 * A header that lies.  The bytes come from another process, maybe over
 * the network, so a header is checked before anything is done with it:
 * a negative 4-byte length other than -1 cannot come from a libconc or
 * Python sender (CONC_ECORRUPT), and a length over the end's
 * max_message_bytes (CONC_MAX_MESSAGE_DEFAULT unless set) is refused
 * (CONC_ETOOBIG, Python's recv_bytes(maxlength) "bad message length"),
 * both before any allocation.  Either way the stream has lost its
 * framing for this end (the payload that follows is not going to be
 * read, and nothing else marks where it ends), so receiving stops for
 * good: that call returns the code, every later receive CONC_ECLOSED
 * (detail: why), poll 1.  The socket's receiving direction is shut down,
 * so a peer on a Unix socket still sending gets EPIPE (CONC_ECLOSED to a
 * libconc sender) instead of blocking for ever on a reader that will
 * never read; the sending direction of a duplex end keeps working, as
 * Python's Connection stays writable after "bad message length".  Under
 * the cap, memory follows the bytes that really arrive, not the header:
 * a message's buffer starts at the length or PEND_FIRST (1 MiB),
 * whichever is smaller, and doubles as it fills, so a header that
 * announces 1.5 GiB and sends nothing costs 1 MiB of address space, never
 * touched (messages up to 1 MiB, the common case, get one allocation of
 * their exact length, as before; larger ones a realloc per doubling,
 * which copies at most about the message's length in all, and often
 * nothing: glibc grows a chunk it mapped on its own with mremap(2)).
 * Rejected: a buffer of the announced length at once (a 2^62 header then
 * left the end stuck on CONC_ENOMEM for ever, and every lying header
 * reserved its length); keeping the end readable after a refused header so that
 * a caller could raise the cap and try again (the peer's payload would
 * sit in the socket meanwhile, and every later call would have to
 * explain a state that Python does not have).
 *
 * Receiving.  Nothing is read ahead: the header is read with exactly its
 * length, then exactly the payload.  Two system calls per message instead
 * of one batched read, but the descriptor then tells the truth: it is
 * readable exactly when a message (or end of file) is waiting, so poll(2)
 * and epoll on conc_conn_fileno() work as they do on Python's Connection.
 * The receive state (header bytes read, the payload buffer and how much of
 * it is filled) lives in the handle, so a receive whose time runs out in
 * the middle of a message keeps what it read and the next call completes
 * the message: the stream never loses its place.  conc_conn_recv() reads
 * the payload straight into the buffer it hands to the caller (no extra
 * copy); conc_conn_recv_into() reads straight into the caller's buffer and
 * moves the part read to the heap only when its time runs out halfway.
 * A receiver that finds nothing keeps trying with non-blocking reads for
 * up to 20 us (SPIN_NS; never with timeout 0, never past the deadline)
 * before it sleeps: in a request/answer exchange the answer usually comes
 * within that, and a sleep plus wake-up costs 10-40 us on a virtual
 * machine (measured: round trip 6.5 us with the spin, 40 us without; the
 * same 2-CPU machine's raw pipe() ping-pong takes 40 us).  The spin is
 * short and bounded because the machines it runs on may have 2 CPUs.
 *
 * Errors.  Every failure returns through conc__fail/conc__fail_sys with
 * a sentence naming the public call (conc_errdetail); success paths
 * never format anything.  Every system call goes through os.h
 * (conc__os_socketpair, _sendmsg, _recv, _ppoll, _shutdown), so the
 * tests' fault loops reach each failure path; close(2) alone is called
 * directly (a failed close changes nothing the caller could act on).
 *
 * Locks.  wlock serialises senders on one end, rlock receivers: two
 * threads never interleave frames or split a message.  Both are private
 * (this process's copy of the handle) pthread mutexes, taken with the
 * caller's deadline, so a receive with timeout 0 never waits behind a
 * receive that blocks.  Fields: fd, can_recv, can_send, closed are set at
 * creation and by close (which must not race with other calls);
 * send_shut under wlock; rfail, stop, bad_len, hdr*, msg_len, pend*
 * under rlock; max_message is an atomic word any thread may set (relaxed:
 * it orders nothing, a receive uses the value it reads at the header).
 *
 * Fork.  A child inherits both the descriptor and the handle's receive
 * state.  A fork while another thread holds wlock or rlock leaves the
 * child's copy of that lock held: that end is then unusable in the child
 * (documented in pipe.h; the child should use its own pipes).
 */
#include "conc_int.h"
#include "pipe_int.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The largest payload chunk handed to one sendmsg(): the kernel caps a
 * single call at about 2 GiB anyway. */
#define SEND_CHUNK ((size_t)1 << 30)

/* How long a receiver keeps trying before it sleeps (read_some). */
#define SPIN_NS 20000u

/* The first buffer for a message's payload, at most (see "A header that
 * lies"): it then doubles as the bytes arrive. */
#define PEND_FIRST ((size_t)1 << 20)

/* Why receiving stopped for good (the detail of every later receive). */
typedef enum stop_why {
    STOP_NONE,
    STOP_EOF,      /* the other end closed */
    STOP_TOOBIG,   /* a header over max_message (bad_len) */
    STOP_CORRUPT,  /* a header no sender writes (bad_len: its 4 bytes) */
    STOP_LOST      /* recv_into lost its place (no memory to keep a part) */
} stop_why;

struct conc_conn {
    int fd;
    bool can_recv;
    bool can_send;
    bool closed;
    _Atomic size_t max_message;

    pthread_mutex_t wlock;
    bool send_shut;          /* sending direction shut: sends ECLOSED */

    pthread_mutex_t rlock;
    int rfail;               /* non-zero: the next receive returns it */
    stop_why stop;           /* why, once receiving has stopped */
    uint64_t bad_len;        /* the refused header's length or bytes */
    size_t bad_cap;          /* max_message when it was refused */
    unsigned char hdr[12];   /* the current frame's header bytes */
    size_t hdr_have;         /* how many of them are read */
    bool hdr_done;           /* msg_len is known */
    size_t msg_len;
    unsigned char *pend;     /* the payload (NULL until needed) */
    size_t pend_cap;         /* bytes allocated at pend (<= msg_len) */
    size_t pend_have;        /* payload bytes of pend already read */
};

/* ---- waiting ------------------------------------------------------------ */

int conc__wait_fd(int fd, short events, const conc__deadline *dl)
{
    for (;;) {
        struct timespec ts;
        struct timespec *tp = NULL;
        if (!dl->forever) {
            if (conc__deadline_passed(dl)) {
                /* detail: each caller's (recv_fail(), a send's) */
                return CONC_ETIMEDOUT;
            }
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            ts.tv_sec = dl->at.tv_sec - now.tv_sec;
            ts.tv_nsec = dl->at.tv_nsec - now.tv_nsec;
            if (ts.tv_nsec < 0) {
                ts.tv_nsec += 1000000000L;
                ts.tv_sec -= 1;
            }
            if (ts.tv_sec < 0) {
                ts.tv_sec = 0;
                ts.tv_nsec = 0;
            }
            tp = &ts;
        }
        struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
        int r = conc__os_ppoll(&p, 1, tp);
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            /* detail: each caller's (recv_fail(), a send's) */
            return CONC_ESYS;
        }
        /* r == 0 (time up, or rounded short) or EINTR: loop, and the
         * deadline check above decides. */
    }
}

/* ---- creation and release ---------------------------------------------- */

static conc_conn *conn_make(int fd, bool can_recv, bool can_send,
                            size_t max_message)
{
    conc_conn *c = conc__calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->fd = fd;
    c->can_recv = can_recv;
    c->can_send = can_send;
    atomic_init(&c->max_message,
                max_message == 0 ? CONC_MAX_MESSAGE_DEFAULT : max_message);
    pthread_mutex_init(&c->wlock, NULL);
    pthread_mutex_init(&c->rlock, NULL);
    return c;
}

/* A connection made by listener.c (accepted or connected socket) is an
 * ordinary duplex end: everything above and below applies unchanged,
 * because a connected AF_UNIX or TCP stream socket behaves as one side of
 * a socketpair for every call this file makes (sendmsg with
 * MSG_NOSIGNAL, recv, ppoll, shutdown). */
conc_conn *conc__conn_from_fd(int fd, size_t max_message)
{
    return conn_make(fd, true, true, max_message);
}

int conc_pipe_new(conc_conn **a, conc_conn **b, const conc_pipe_opts *opts)
{
    if (a != NULL) {
        *a = NULL;
    }
    if (b != NULL) {
        *b = NULL;
    }
    if (a == NULL || b == NULL) {
        return conc__fail(CONC_EINVAL, "conc_pipe: %s is NULL",
                          a == NULL ? "a" : "b");
    }
    conc_pipe_opts o = { 0 };
    if (opts != NULL) {
        o = *opts;
    }
    bool duplex = !o.one_way;
    int err = 0;
    int sv[2] = { -1, -1 };
    conc_conn *ca = NULL;
    conc_conn *cb = NULL;
    if (conc__os_socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return conc__fail_sys(CONC_ESYS, "conc_pipe: socketpair");
    }
    if (!duplex) {
        /* a reads, b writes: cut the other halves at the socket, so even
         * raw use of the descriptors cannot go the wrong way. */
        if (conc__os_shutdown(sv[0], SHUT_WR) != 0 ||
            conc__os_shutdown(sv[1], SHUT_RD) != 0) {
            err = conc__fail_sys(CONC_ESYS, "conc_pipe: shutdown of the "
                                 "unused halves of a one-way pipe");
            goto fail_fds;
        }
    }
    ca = conn_make(sv[0], true, duplex, o.max_message_bytes);
    if (ca == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_pipe: no memory for an end");
        goto fail_fds;
    }
    cb = conn_make(sv[1], duplex, true, o.max_message_bytes);
    if (cb == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_pipe: no memory for an end");
        goto fail_a;
    }
    *a = ca;
    *b = cb;
    return 0;

fail_a:
    pthread_mutex_destroy(&ca->wlock);
    pthread_mutex_destroy(&ca->rlock);
    free(ca);
fail_fds: {
    int keep = errno;
    close(sv[0]);
    close(sv[1]);
    errno = keep;
}
    return err;
}

int conc_pipe(conc_conn **a, conc_conn **b, bool duplex)
{
    return conc_pipe_new(a, b, &(conc_pipe_opts){ .one_way = !duplex });
}

/* Forgets the frame being received (its partial bytes included). */
static void recv_reset(conc_conn *c)
{
    free(c->pend);
    c->pend = NULL;
    c->pend_cap = 0;
    c->pend_have = 0;
    c->hdr_have = 0;
    c->hdr_done = false;
    c->msg_len = 0;
}

int conc_conn_close(conc_conn *c)
{
    if (c == NULL) {
        return conc__fail(CONC_EINVAL, "conc_conn_close: c is NULL");
    }
    if (!c->closed) {
        c->closed = true;
        close(c->fd);
        c->fd = -1;
        recv_reset(c);
    }
    return 0;
}

void conc_conn_free(conc_conn *c)
{
    if (c == NULL) {
        return;
    }
    conc_conn_close(c);
    pthread_mutex_destroy(&c->wlock);
    pthread_mutex_destroy(&c->rlock);
    free(c);
}

int conc_conn_fileno(const conc_conn *c)
{
    if (c == NULL) {
        return conc__fail(CONC_EINVAL, "conc_conn_fileno: c is NULL");
    }
    if (c->closed) {
        return conc__fail(CONC_ECLOSED, "conc_conn_fileno: the connection "
                          "was closed by conc_conn_close");
    }
    return c->fd;
}

int conc_conn_set_max_message(conc_conn *c, size_t max_message_bytes)
{
    if (c == NULL) {
        return conc__fail(CONC_EINVAL, "conc_conn_set_max_message: c is "
                          "NULL");
    }
    /* Relaxed: the value orders nothing; a receive compares the header
     * it reads with whatever value it loads then. */
    atomic_store_explicit(&c->max_message,
                          max_message_bytes == 0 ? CONC_MAX_MESSAGE_DEFAULT
                                                 : max_message_bytes,
                          memory_order_relaxed);
    return 0;
}

/* ---- sending ------------------------------------------------------------- */

static int send_frame(conc_conn *c, const void *data, size_t len,
                      double timeout, const char *fn)
{
    if (c == NULL) {
        return conc__fail(CONC_EINVAL, "%s: c is NULL", fn);
    }
    if (data == NULL && len > 0) {
        return conc__fail(CONC_EINVAL, "%s: data is NULL and len is %zu",
                          fn, len);
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return conc__fail(CONC_EINVAL, "%s: timeout %g: it must be >= 0 or "
                          "CONC_FOREVER", fn, timeout);
    }
    if (c->closed) {
        return conc__fail(CONC_ECLOSED, "%s: the connection was closed by "
                          "conc_conn_close", fn);
    }
    if (!c->can_send) {
        return conc__fail(CONC_EPERM, "%s: this end of a one-way pipe only "
                          "receives", fn);
    }
    int err = conc__mutex_lock_until(&c->wlock, &dl);
    if (err != 0) {
        return conc__fail(err, "%s: another thread's send on this end held "
                          "it past the timeout (%g s)", fn, timeout);
    }
    if (c->send_shut) {
        err = conc__fail(CONC_ECLOSED, "%s: this end's sending direction "
                         "was shut when an earlier send gave up halfway "
                         "through a message", fn);
        goto out;
    }

    unsigned char hdr[12];
    size_t hlen;
    if (len <= 0x7fffffffu) {
        uint32_t n = (uint32_t)len;
        hdr[0] = (unsigned char)(n >> 24);
        hdr[1] = (unsigned char)(n >> 16);
        hdr[2] = (unsigned char)(n >> 8);
        hdr[3] = (unsigned char)n;
        hlen = 4;
    } else {
        uint64_t n = (uint64_t)len;
        memset(hdr, 0xff, 4);
        for (int i = 0; i < 8; i++) {
            hdr[4 + i] = (unsigned char)(n >> (56 - 8 * i));
        }
        hlen = 12;
    }

    /* Without a deadline a blocking sendmsg() waits in the kernel (and
     * returns a partial count only when a signal interrupts it). */
    int flags = MSG_NOSIGNAL | (dl.forever ? 0 : MSG_DONTWAIT);
    const unsigned char *p = data;
    size_t hsent = 0;   /* header bytes out */
    size_t psent = 0;   /* payload bytes out */
    for (;;) {
        struct iovec iov[2];
        int n = 0;
        if (hsent < hlen) {
            iov[n].iov_base = hdr + hsent;
            iov[n].iov_len = hlen - hsent;
            n++;
        }
        if (psent < len) {
            size_t chunk = len - psent;
            iov[n].iov_base = (void *)(p + psent);
            iov[n].iov_len = chunk > SEND_CHUNK ? SEND_CHUNK : chunk;
            n++;
        }
        if (n == 0) {
            break;
        }
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t r = conc__os_sendmsg(c->fd, &mh, flags);
        if (r >= 0) {
            size_t got = (size_t)r;
            size_t h = hlen - hsent < got ? hlen - hsent : got;
            hsent += h;
            psent += got - h;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            err = conc__wait_fd(c->fd, POLLOUT, &dl);
            if (err == 0) {
                continue;
            }
            if (err == CONC_ETIMEDOUT) {
                err = conc__fail(err, "%s: the receiver left no room for "
                                 "the %zu-byte message within %g s (%zu "
                                 "bytes sent)", fn, len, timeout, psent);
            } else {
                err = conc__fail_sys(err, "%s: ppoll", fn);
            }
        } else if (errno == EPIPE || errno == ECONNRESET) {
            err = conc__fail(CONC_ECLOSED, "%s: the other end is closed",
                             fn);
        } else {
            err = conc__fail_sys(CONC_ESYS, "%s: sendmsg", fn);
        }
        if (hsent > 0) {
            /* Part of the frame is out and the rest will not follow: end
             * the stream here (see "Giving up halfway"), keeping errno
             * for the caller. */
            int keep = errno;
            conc__os_shutdown(c->fd, SHUT_WR);
            c->send_shut = true;
            errno = keep;
        }
        goto out;
    }
    err = 0;
out:
    pthread_mutex_unlock(&c->wlock);
    return err;
}

int conc_conn_send_timeout(conc_conn *c, const void *data, size_t len,
                           double timeout)
{
    return send_frame(c, data, len, timeout, "conc_conn_send_timeout");
}

int conc_conn_send(conc_conn *c, const void *data, size_t len)
{
    return send_frame(c, data, len, CONC_FOREVER, "conc_conn_send");
}

/* ---- receiving ----------------------------------------------------------- */

/* Reads up to n bytes (at least 1) into p, waiting up to the deadline.
 * 0 with *got set; CONC_ECLOSED at end of file; CONC_ETIMEDOUT; CONC_ESYS
 * (errno kept).  No detail: the caller, which knows the call, says. */
static int read_some(conc_conn *c, void *p, size_t n,
                     const conc__deadline *dl, size_t *got)
{
    /* Without a deadline a blocking recv() waits in the kernel directly,
     * one system call instead of recv + ppoll + recv.  Before either kind
     * of sleep, a few non-blocking tries spread over about SPIN_NS: in a
     * request/answer exchange the answer often comes within microseconds,
     * and catching it awake saves the sleep and the wake-up, which cost
     * tens of microseconds on a virtual machine. */
    int flags = dl->forever ? 0 : MSG_DONTWAIT;
    /* Timeout 0 tries once and never spins; a deadline bounds the spin. */
    bool spinning = !dl->once;
    uint64_t spin_until = 0;
    for (;;) {
        ssize_t r = conc__os_recv(c->fd, p, n,
                                  spinning ? MSG_DONTWAIT : flags);
        if (spinning && r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uint64_t now = conc__now_ns();
            if (spin_until == 0) {
                spin_until = now + SPIN_NS;
            }
            if (now < spin_until && !conc__deadline_passed(dl)) {
                for (int i = 0; i < 64; i++) {
                    conc__cpu_relax();
                }
                continue;
            }
            spinning = false;
            continue;
        }
        if (r > 0) {
            *got = (size_t)r;
            return 0;
        }
        if (r == 0 || errno == ECONNRESET) {
            /* detail: recv_fail() */
            return CONC_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            /* detail: recv_fail() */
            return CONC_ESYS;
        }
        int err = conc__wait_fd(c->fd, POLLIN, dl);
        if (err != 0) {
            return err;
        }
    }
}

/* Receiving stops for good: every later receive returns CONC_ECLOSED
 * (recv_stopped says why), after err once when err is the refusal of a
 * header (see "A header that lies").  For a refusal, and for a place in
 * the stream lost, the socket's receiving direction is shut so that a
 * peer still sending learns it (if that fails, the stop holds anyway). */
static int recv_stop(conc_conn *c, int err, stop_why why, uint64_t bad)
{
    recv_reset(c);
    c->rfail = err;
    c->stop = why;
    c->bad_len = bad;
    c->bad_cap = atomic_load_explicit(&c->max_message, memory_order_relaxed);
    if (why != STOP_EOF) {
        int keep = errno;
        conc__os_shutdown(c->fd, SHUT_RD);
        errno = keep;
    }
    return err;
}

/* Reads the current frame's header, if not read already.  0 with
 * msg_len set; CONC_ETOOBIG or CONC_ECORRUPT for a header refused
 * (receiving has then stopped: recv_stop); else read_some's codes. */
static int read_header(conc_conn *c, const conc__deadline *dl)
{
    while (!c->hdr_done) {
        /* Header states: 0..3 bytes of the short form, or 4..11 of the
         * long one; 12 always ends in hdr_done (or a stop). */
        CONC__ASSERT(c->hdr_have < 12);
        size_t want = (c->hdr_have < 4 ? 4 : 12) - c->hdr_have;
        size_t got = 0;
        int err = read_some(c, c->hdr + c->hdr_have, want, dl, &got);
        if (err != 0) {
            return err;
        }
        CONC__ASSERT(got <= want); /* read_some reads at most what asked */
        c->hdr_have += got;
        uint64_t v;
        if (c->hdr_have == 4) {
            uint32_t v4 = (uint32_t)c->hdr[0] << 24 |
                          (uint32_t)c->hdr[1] << 16 |
                          (uint32_t)c->hdr[2] << 8 | (uint32_t)c->hdr[3];
            if (v4 == 0xffffffffu) {
                continue; /* the 8-byte length follows */
            }
            if (v4 & 0x80000000u) {
                return recv_stop(c, CONC_ECORRUPT, STOP_CORRUPT, v4);
            }
            v = v4;
        } else if (c->hdr_have == 12) {
            v = 0;
            for (int i = 0; i < 8; i++) {
                v = v << 8 | c->hdr[4 + i];
            }
        } else {
            continue;
        }
        /* The cap, before anything is allocated or read for the payload
         * (max_message <= SIZE_MAX, so a length that passes fits). */
        if (v > atomic_load_explicit(&c->max_message, memory_order_relaxed)) {
            return recv_stop(c, CONC_ETOOBIG, STOP_TOOBIG, v);
        }
        c->msg_len = (size_t)v;
        c->hdr_done = true;
    }
    return 0;
}

/* Reads payload bytes into dst[*have ..] until msg_len are there (dst
 * has room for msg_len). */
static int read_payload(conc_conn *c, unsigned char *dst, size_t *have,
                        const conc__deadline *dl)
{
    while (*have < c->msg_len) {
        size_t got = 0;
        int err = read_some(c, dst + *have, c->msg_len - *have, dl, &got);
        if (err != 0) {
            return err;
        }
        *have += got;
        CONC__ASSERT(*have <= c->msg_len);
    }
    return 0;
}

/* Reads the payload into the handle's own buffer, which grows with the
 * bytes that arrive (see "A header that lies").  CONC_ENOMEM keeps what
 * was read: a later call goes on from there. */
static int read_pend(conc_conn *c, const conc__deadline *dl)
{
    if (c->pend == NULL && c->msg_len > 0) {
        size_t first = c->msg_len < PEND_FIRST ? c->msg_len : PEND_FIRST;
        c->pend = conc__malloc(first);
        if (c->pend == NULL) {
            /* detail: recv_fail() */
            return CONC_ENOMEM;
        }
        c->pend_cap = first;
    }
    while (c->pend_have < c->msg_len) {
        if (c->pend_have == c->pend_cap) {
            size_t left = c->msg_len - c->pend_cap;
            size_t grow = c->pend_cap + (left < c->pend_cap ? left
                                                            : c->pend_cap);
            /* The buffer grows, and never past the message. */
            CONC__ASSERT(grow > c->pend_cap && grow <= c->msg_len);
            unsigned char *p = conc__realloc(c->pend, grow);
            if (p == NULL) {
                /* detail: recv_fail() */
                return CONC_ENOMEM;
            }
            c->pend = p;
            c->pend_cap = grow;
        }
        size_t got = 0;
        int err = read_some(c, c->pend + c->pend_have,
                            c->pend_cap - c->pend_have, dl, &got);
        if (err != 0) {
            return err;
        }
        c->pend_have += got;
        CONC__ASSERT(c->pend_have <= c->pend_cap &&
                     c->pend_cap <= c->msg_len);
    }
    return 0;
}

/* What a receive (fn) returns for err from reading the stream, with its
 * detail; at end of file the partial frame, if any, is dropped and
 * receiving stops. */
static int recv_fail(conc_conn *c, int err, double timeout, const char *fn)
{
    switch (err) {
    case CONC_ECLOSED: {
        bool mid = c->hdr_have > 0;
        size_t want = c->msg_len;
        recv_stop(c, CONC_ECLOSED, STOP_EOF, 0);
        if (mid) {
            return conc__fail(err, "%s: the other end closed in the middle "
                              "of a message (%zu bytes announced): the part "
                              "that came was dropped", fn, want);
        }
        return conc__fail(err, "%s: the other end is closed and every "
                          "message it sent has been received", fn);
    }
    case CONC_ETOOBIG:
        c->rfail = CONC_ECLOSED;
        return conc__fail(err, "%s: the peer's message of %llu bytes is over "
                          "this end's max_message_bytes (%zu): receiving "
                          "stops here (later receives: CONC_ECLOSED)", fn,
                          (unsigned long long)c->bad_len, c->bad_cap);
    case CONC_ECORRUPT:
        c->rfail = CONC_ECLOSED;
        return conc__fail(err, "%s: the peer's frame header %08llx is not a "
                          "libconc or Python frame (a negative length): "
                          "receiving stops here (later receives: "
                          "CONC_ECLOSED)", fn, (unsigned long long)c->bad_len);
    case CONC_ETIMEDOUT:
        return conc__fail(err, "%s: no whole message within %g s%s", fn,
                          timeout, c->hdr_have > 0
                                       ? " (the part that came is kept)"
                                       : "");
    case CONC_ENOMEM:
        return conc__fail(err, "%s: no memory for the %zu-byte message (it "
                          "is left to read)", fn, c->msg_len);
    default:
        return conc__fail_sys(err, "%s: reading the socket", fn);
    }
}

/* The answer of a receive on an end whose receiving has stopped: the
 * refusal itself once (recv_fail gives its detail), then CONC_ECLOSED
 * saying why. */
static int recv_stopped(conc_conn *c, const char *fn)
{
    if (c->rfail != CONC_ECLOSED) {
        return recv_fail(c, c->rfail, 0, fn);
    }
    switch (c->stop) {
    case STOP_TOOBIG:
        return conc__fail(CONC_ECLOSED, "%s: receiving stopped at a message "
                          "of %llu bytes, over max_message_bytes (%zu)", fn,
                          (unsigned long long)c->bad_len, c->bad_cap);
    case STOP_CORRUPT:
        return conc__fail(CONC_ECLOSED, "%s: receiving stopped at a frame "
                          "header that is not one (%08llx)", fn,
                          (unsigned long long)c->bad_len);
    case STOP_LOST:
        return conc__fail(CONC_ECLOSED, "%s: receiving stopped when an "
                          "earlier conc_conn_recv_into had no memory to keep "
                          "part of a message", fn);
    default:
        return conc__fail(CONC_ECLOSED, "%s: the other end is closed and "
                          "every message it sent has been received", fn);
    }
}

/* The checks and the lock every receive starts with. */
static int recv_begin(conc_conn *c, conc__deadline *dl, double timeout,
                      const char *fn)
{
    if (conc__deadline_init(dl, timeout) != 0) {
        return conc__fail(CONC_EINVAL, "%s: timeout %g: it must be >= 0 or "
                          "CONC_FOREVER", fn, timeout);
    }
    if (c->closed) {
        return conc__fail(CONC_ECLOSED, "%s: the connection was closed by "
                          "conc_conn_close", fn);
    }
    if (!c->can_recv) {
        return conc__fail(CONC_EPERM, "%s: this end of a one-way pipe only "
                          "sends", fn);
    }
    int err = conc__mutex_lock_until(&c->rlock, dl);
    if (err != 0) {
        return conc__fail(err, "%s: another thread's receive on this end "
                          "held it past the timeout (%g s)", fn, timeout);
    }
    return 0;
}

int conc_conn_recv(conc_conn *c, conc_msg *msg, double timeout)
{
    static const char fn[] = "conc_conn_recv";
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = 0;
    }
    if (c == NULL || msg == NULL) {
        return conc__fail(CONC_EINVAL, "%s: %s is NULL", fn,
                          c == NULL ? "c" : "msg");
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout, fn);
    if (err != 0) {
        return err;
    }
    if (c->rfail != 0) {
        err = recv_stopped(c, fn);
        goto out;
    }
    err = read_header(c, &dl);
    if (err == 0) {
        err = read_pend(c, &dl);
    }
    if (err != 0) {
        err = recv_fail(c, err, timeout, fn);
        goto out;
    }
    msg->data = c->pend;
    msg->len = c->msg_len;
    c->pend = NULL; /* handed over */
    recv_reset(c);
out:
    pthread_mutex_unlock(&c->rlock);
    return err;
}

int conc_conn_recv_into(conc_conn *c, void *buf, size_t cap, size_t *len,
                        double timeout)
{
    static const char fn[] = "conc_conn_recv_into";
    if (len != NULL) {
        *len = 0;
    }
    if (c == NULL || len == NULL || (buf == NULL && cap > 0)) {
        return conc__fail(CONC_EINVAL, "%s: %s", fn,
                          c == NULL     ? "c is NULL"
                          : len == NULL ? "len is NULL"
                                        : "buf is NULL and cap is not 0");
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout, fn);
    if (err != 0) {
        return err;
    }
    if (c->rfail != 0) {
        err = recv_stopped(c, fn);
        goto out;
    }
    err = read_header(c, &dl);
    if (err != 0) {
        err = recv_fail(c, err, timeout, fn);
        goto out;
    }
    if (c->msg_len > cap) {
        *len = c->msg_len;
        /* header kept, payload still to read */
        err = conc__fail(CONC_ETOOBIG, "%s: the message is %zu bytes and "
                         "buf holds %zu (it is left to read)", fn,
                         c->msg_len, cap);
        goto out;
    }
    if (c->pend != NULL) {
        /* An earlier call or poll began this message on the heap: go on
         * there, then copy. */
        err = read_pend(c, &dl);
        if (err != 0) {
            err = recv_fail(c, err, timeout, fn);
            goto out;
        }
        if (c->msg_len > 0) {
            memcpy(buf, c->pend, c->msg_len);
        }
    } else {
        size_t have = 0;
        err = read_payload(c, buf, &have, &dl);
        if (err != 0 && err != CONC_ECLOSED && have > 0) {
            /* Out of time (or an OS error) with part of the message in
             * the caller's buffer, which is theirs again once we return:
             * keep the part for the next call (msg_len <= cap: no more
             * than the caller's own buffer). */
            c->pend = conc__malloc(c->msg_len);
            if (c->pend == NULL) {
                recv_stop(c, CONC_ECLOSED, STOP_LOST, 0);
                err = conc__fail(CONC_ENOMEM, "%s: no memory to keep the "
                                 "%zu bytes of a message read so far: its "
                                 "place in the stream is lost (later "
                                 "receives: CONC_ECLOSED)", fn, have);
                goto out;
            }
            memcpy(c->pend, buf, have);
            c->pend_cap = c->msg_len;
            c->pend_have = have;
        }
        if (err != 0) {
            err = recv_fail(c, err, timeout, fn);
            goto out;
        }
    }
    *len = c->msg_len;
    recv_reset(c);
out:
    pthread_mutex_unlock(&c->rlock);
    return err;
}

int conc_conn_poll(conc_conn *c, double timeout)
{
    static const char fn[] = "conc_conn_poll";
    if (c == NULL) {
        return conc__fail(CONC_EINVAL, "%s: c is NULL", fn);
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout, fn);
    if (err != 0) {
        return err;
    }
    int ready = 0;
    if (c->rfail != 0) {
        ready = 1; /* a receive returns at once, with rfail */
        goto out;
    }
    err = read_header(c, &dl);
    if (err == 0) {
        err = read_pend(c, &dl);
    }
    switch (err) {
    case 0:
        ready = 1;
        break;
    case CONC_ECLOSED:
        /* End of file: the next receive says so.  (No detail: poll
         * succeeds.) */
        recv_stop(c, CONC_ECLOSED, STOP_EOF, 0);
        ready = 1;
        err = 0;
        break;
    case CONC_ETOOBIG:
    case CONC_ECORRUPT:
        ready = 1; /* receiving has stopped: the next receive says why */
        err = 0;
        break;
    case CONC_ETIMEDOUT:
        err = 0;
        break;
    default:
        err = recv_fail(c, err, timeout, fn);
        break;
    }
out:
    pthread_mutex_unlock(&c->rlock);
    return err != 0 ? err : ready;
}
