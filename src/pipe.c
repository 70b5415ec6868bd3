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
 * A negative 4-byte length other than -1 cannot come from a libconc or
 * Python sender: the receiving side is marked unreadable (CONC_EINVAL).
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
 * Locks.  wlock serialises senders on one end, rlock receivers: two
 * threads never interleave frames or split a message.  Both are private
 * (this process's copy of the handle) pthread mutexes, taken with the
 * caller's deadline, so a receive with timeout 0 never waits behind a
 * receive that blocks.  Fields: fd, can_recv, can_send, closed are set at
 * creation and by close (which must not race with other calls);
 * send_shut under wlock; rfail, hdr*, msg_len, pend* under rlock.
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
#include <signal.h>
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

struct conc_conn {
    int fd;
    bool can_recv;
    bool can_send;
    bool closed;

    pthread_mutex_t wlock;
    bool send_shut;          /* sending direction shut: sends ECLOSED */

    pthread_mutex_t rlock;
    int rfail;               /* non-zero: every receive returns it */
    unsigned char hdr[12];   /* the current frame's header bytes */
    size_t hdr_have;         /* how many of them are read */
    bool hdr_done;           /* msg_len is known */
    size_t msg_len;
    unsigned char *pend;     /* msg_len bytes (NULL until needed) */
    size_t pend_have;        /* payload bytes of pend already read */
};

/* ---- waiting ------------------------------------------------------------ */

/* Waits until fd is ready for events or the deadline passes.  0 when
 * ready (or in error or hung up: the next call on the socket says which),
 * CONC_ETIMEDOUT, CONC_ESYS.  EINTR waits again with the time left. */
static int wait_fd(int fd, short events, const conc__deadline *dl)
{
    for (;;) {
        struct timespec ts;
        struct timespec *tp = NULL;
        if (!dl->forever) {
            if (conc__deadline_passed(dl)) {
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
        int r = ppoll(&p, 1, tp, NULL);
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return CONC_ESYS;
        }
        /* r == 0 (time up, or rounded short) or EINTR: loop, and the
         * deadline check above decides. */
    }
}

/* Takes m, waiting no later than the deadline.  The mutexes are private
 * to this process, so pthread_mutex_timedlock serves; its clock is
 * CLOCK_REALTIME, hence short slices re-measured against the monotonic
 * deadline (a wall-clock jump then costs at most one slice). */
static int lock_until(pthread_mutex_t *m, const conc__deadline *dl)
{
    if (dl->forever) {
        pthread_mutex_lock(m);
        return 0;
    }
    for (;;) {
        if (pthread_mutex_trylock(m) == 0) {
            return 0;
        }
        if (conc__deadline_passed(dl)) {
            return CONC_ETIMEDOUT;
        }
        double left = conc__deadline_left(dl);
        if (left > 0.05) {
            left = 0.05;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(left * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec += 1;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_mutex_timedlock(m, &ts) == 0) {
            return 0;
        }
    }
}

/* ---- creation and release ---------------------------------------------- */

static conc_conn *conn_make(int fd, bool can_recv, bool can_send)
{
    conc_conn *c = conc__calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->fd = fd;
    c->can_recv = can_recv;
    c->can_send = can_send;
    pthread_mutex_init(&c->wlock, NULL);
    pthread_mutex_init(&c->rlock, NULL);
    return c;
}

/* A connection made by listener.c (accepted or connected socket) is an
 * ordinary duplex end: everything above and below applies unchanged,
 * because a connected AF_UNIX or TCP stream socket behaves as one side of
 * a socketpair for every call this file makes (sendmsg with
 * MSG_NOSIGNAL, recv, ppoll, shutdown). */
conc_conn *conc__conn_from_fd(int fd)
{
    return conn_make(fd, true, true);
}

int conc_pipe(conc_conn **a, conc_conn **b, bool duplex)
{
    if (a == NULL || b == NULL) {
        return CONC_EINVAL;
    }
    *a = NULL;
    *b = NULL;
    int err = 0;
    int sv[2] = { -1, -1 };
    conc_conn *ca = NULL;
    conc_conn *cb = NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return CONC_ESYS;
    }
    if (!duplex) {
        /* a reads, b writes: cut the other halves at the socket, so even
         * raw use of the descriptors cannot go the wrong way. */
        if (shutdown(sv[0], SHUT_WR) != 0 || shutdown(sv[1], SHUT_RD) != 0) {
            err = CONC_ESYS;
            goto fail_fds;
        }
    }
    ca = conn_make(sv[0], true, duplex);
    if (ca == NULL) {
        err = CONC_ENOMEM;
        goto fail_fds;
    }
    cb = conn_make(sv[1], duplex, true);
    if (cb == NULL) {
        err = CONC_ENOMEM;
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

/* Forgets the frame being received (its partial bytes included). */
static void recv_reset(conc_conn *c)
{
    free(c->pend);
    c->pend = NULL;
    c->pend_have = 0;
    c->hdr_have = 0;
    c->hdr_done = false;
    c->msg_len = 0;
}

int conc_conn_close(conc_conn *c)
{
    if (c == NULL) {
        return CONC_EINVAL;
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
        return CONC_EINVAL;
    }
    if (c->closed) {
        return CONC_ECLOSED;
    }
    return c->fd;
}

/* ---- sending ------------------------------------------------------------- */

int conc_conn_send_timeout(conc_conn *c, const void *data, size_t len,
                           double timeout)
{
    if (c == NULL || (data == NULL && len > 0)) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (c->closed) {
        return CONC_ECLOSED;
    }
    if (!c->can_send) {
        return CONC_EPERM;
    }
    err = lock_until(&c->wlock, &dl);
    if (err != 0) {
        return err;
    }
    if (c->send_shut) {
        err = CONC_ECLOSED;
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
        ssize_t r = sendmsg(c->fd, &mh, flags);
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
            err = wait_fd(c->fd, POLLOUT, &dl);
            if (err == 0) {
                continue;
            }
        } else if (errno == EPIPE || errno == ECONNRESET) {
            err = CONC_ECLOSED;
        } else {
            err = CONC_ESYS;
        }
        if (hsent > 0) {
            /* Part of the frame is out and the rest will not follow: end
             * the stream here (see "Giving up halfway"), keeping errno
             * for the caller. */
            int keep = errno;
            shutdown(c->fd, SHUT_WR);
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

int conc_conn_send(conc_conn *c, const void *data, size_t len)
{
    return conc_conn_send_timeout(c, data, len, CONC_FOREVER);
}

/* ---- receiving ----------------------------------------------------------- */

/* Reads up to n bytes (at least 1) into p, waiting up to the deadline.
 * 0 with *got set; CONC_ECLOSED at end of file; CONC_ETIMEDOUT; CONC_ESYS. */
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
        ssize_t r = recv(c->fd, p, n, spinning ? MSG_DONTWAIT : flags);
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
            return CONC_ECLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return CONC_ESYS;
        }
        int err = wait_fd(c->fd, POLLIN, dl);
        if (err != 0) {
            return err;
        }
    }
}

/* Reads the current frame's header, if not read already.  0 with
 * msg_len set; CONC_EINVAL for a header no sender writes (the end is then
 * marked unreadable); else read_some's codes. */
static int read_header(conc_conn *c, const conc__deadline *dl)
{
    while (!c->hdr_done) {
        size_t want = (c->hdr_have < 4 ? 4 : 12) - c->hdr_have;
        size_t got = 0;
        int err = read_some(c, c->hdr + c->hdr_have, want, dl, &got);
        if (err != 0) {
            return err;
        }
        c->hdr_have += got;
        if (c->hdr_have == 4) {
            uint32_t v = (uint32_t)c->hdr[0] << 24 |
                         (uint32_t)c->hdr[1] << 16 |
                         (uint32_t)c->hdr[2] << 8 | (uint32_t)c->hdr[3];
            if (v == 0xffffffffu) {
                continue; /* the 8-byte length follows */
            }
            if (v & 0x80000000u) {
                c->rfail = CONC_EINVAL;
                return CONC_EINVAL;
            }
            c->msg_len = v;
            c->hdr_done = true;
        } else if (c->hdr_have == 12) {
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) {
                v = v << 8 | c->hdr[4 + i];
            }
            if (v > (uint64_t)SIZE_MAX) {
                c->rfail = CONC_EINVAL;
                return CONC_EINVAL;
            }
            c->msg_len = (size_t)v;
            c->hdr_done = true;
        }
    }
    return 0;
}

/* Reads payload bytes into dst[*have ..] until msg_len are there. */
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
    }
    return 0;
}

/* What a receive returns for err from the stream: at end of file the
 * partial frame, if any, is dropped and the end stays at end of file. */
static int recv_fail(conc_conn *c, int err)
{
    if (err == CONC_ECLOSED) {
        recv_reset(c);
        c->rfail = CONC_ECLOSED;
    }
    return err;
}

/* The checks and the lock every receive starts with. */
static int recv_begin(conc_conn *c, conc__deadline *dl, double timeout)
{
    int err = conc__deadline_init(dl, timeout);
    if (err != 0) {
        return err;
    }
    if (c->closed) {
        return CONC_ECLOSED;
    }
    if (!c->can_recv) {
        return CONC_EPERM;
    }
    return lock_until(&c->rlock, dl);
}

int conc_conn_recv(conc_conn *c, conc_msg *msg, double timeout)
{
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = 0;
    }
    if (c == NULL || msg == NULL) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout);
    if (err != 0) {
        return err;
    }
    if (c->rfail != 0) {
        err = c->rfail;
        goto out;
    }
    err = read_header(c, &dl);
    if (err != 0) {
        err = recv_fail(c, err);
        goto out;
    }
    if (c->pend == NULL && c->msg_len > 0) {
        c->pend = conc__malloc(c->msg_len);
        if (c->pend == NULL) {
            err = CONC_ENOMEM; /* the header is kept: nothing lost */
            goto out;
        }
    }
    err = read_payload(c, c->pend, &c->pend_have, &dl);
    if (err != 0) {
        err = recv_fail(c, err);
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
    if (len != NULL) {
        *len = 0;
    }
    if (c == NULL || len == NULL || (buf == NULL && cap > 0)) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout);
    if (err != 0) {
        return err;
    }
    if (c->rfail != 0) {
        err = c->rfail;
        goto out;
    }
    err = read_header(c, &dl);
    if (err != 0) {
        err = recv_fail(c, err);
        goto out;
    }
    if (c->msg_len > cap) {
        *len = c->msg_len;
        err = CONC_ETOOBIG; /* header kept, payload still to read */
        goto out;
    }
    if (c->pend != NULL) {
        /* An earlier call or poll began this message on the heap: go on
         * there, then copy. */
        err = read_payload(c, c->pend, &c->pend_have, &dl);
        if (err != 0) {
            err = recv_fail(c, err);
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
             * keep the part for the next call. */
            c->pend = conc__malloc(c->msg_len);
            if (c->pend == NULL) {
                recv_reset(c);
                c->rfail = CONC_ECLOSED;
                err = CONC_ENOMEM;
                goto out;
            }
            memcpy(c->pend, buf, have);
            c->pend_have = have;
        }
        if (err != 0) {
            err = recv_fail(c, err);
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
    if (c == NULL) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    int err = recv_begin(c, &dl, timeout);
    if (err != 0) {
        return err;
    }
    int ready = 0;
    if (c->rfail != 0) {
        ready = 1; /* a receive returns at once, with rfail */
        goto out;
    }
    err = read_header(c, &dl);
    if (err == 0 && c->pend == NULL && c->msg_len > 0) {
        c->pend = conc__malloc(c->msg_len);
        if (c->pend == NULL) {
            err = CONC_ENOMEM;
            goto out;
        }
    }
    if (err == 0) {
        err = read_payload(c, c->pend, &c->pend_have, &dl);
    }
    if (err == 0 || err == CONC_ECLOSED || err == CONC_EINVAL) {
        recv_fail(c, err);
        ready = 1;
        err = 0;
    } else if (err == CONC_ETIMEDOUT) {
        err = 0;
    }
out:
    pthread_mutex_unlock(&c->rlock);
    return err != 0 ? err : ready;
}
