/* listener.c - conc_listener and conc_client_connect: Python's
 * multiprocessing.connection Listener and Client over Unix and TCP stream
 * sockets, with its authentication handshake (handshake.c),
 * wire-compatible with CPython.
 *
 * Addresses.  One string names a socket (conc/pipe.h lists the forms):
 * a filesystem Unix socket, a Linux abstract one, or TCP over IPv4/IPv6,
 * "tcp:host:port" or "tcp://host:port".  Host names other than
 * "localhost" are refused rather than resolved: getaddrinfo() may block
 * on DNS for longer than any timeout we were given, and cannot be
 * cancelled.  A NULL address makes a fresh private directory (mkdtemp,
 * mode 0700) with the socket inside, as Python's Listener() does with
 * tempfile; both go when the listener closes.  A malformed address's
 * detail names what is wrong and lists the forms.
 *
 * Ownership of the socket file.  The listener records the inode it bound
 * and the pid that bound it: only that process unlinks the file, and only
 * while the path still names that inode.  So a forked child that frees
 * its inherited copy does not pull the socket from under its parent
 * (Python's util.Finalize has the same pid check), and a file someone
 * else put at the path later is left alone.
 *
 * Handshakes run together.  With a key, a connection is not handed out
 * until it has passed the handshake, and no client may delay another:
 * every connection waiting in the kernel's queue is accepted at once (up
 * to max_pending, the backlog, at most PENDING_MAX), gets its challenge,
 * and its handshake advances as its bytes arrive, each a small
 * non-blocking state machine (conc__hs_step) driven from one epoll set.
 * The first to finish is handed out; one that is silent, slow or hostile
 * only holds its own slot until its handshake_timeout (default
 * HS_TIMEOUT_DEFAULT) and is then dropped.  So three silent clients do
 * not cost an authorised one 3 x 20 s, and accept with timeout 0
 * never waits for a handshake: it advances what can advance now and
 * returns.  Rejected: a thread per handshake (threads in a library that
 * may be forked, and a cost per client), and a serial handshake inside
 * accept (one silent client would stall every other).
 *
 * The driver.  Only one thread at a time drives (driving, under lock):
 * it waits in epoll_wait with lock released, then, holding lock, accepts
 * new connections, steps the handshakes whose sockets are ready, expires
 * the overdue, and queues the outcomes: finished connections (done) and
 * failures (failed, each reported once as CONC_EAUTH by some accept, with
 * a detail naming the client and why).  It returns as soon as an outcome
 * is queued; every accept takes a finished connection before a failure.
 * Other accepting threads wait on cond (CLOCK_MONOTONIC) for an outcome
 * or their turn to drive; the driver broadcasts when it leaves.  Without
 * a key a connection is done at accept(2): the driver hands it straight
 * out, one per call, leaving the rest in the kernel's queue.
 *
 * Descriptors.  fd, the listening socket, non-blocking (a connection
 * another thread took first is EAGAIN, not a hang); ep, the epoll set,
 * which is what conc_listener_fileno gives out: it is readable exactly
 * when accept has something to do (a connection waits, a handshake's
 * bytes came, a handshake is overdue, an outcome is queued, close), so
 * poll-then-accept-with-timeout-0 keeps working with handshakes in
 * flight; wake, an eventfd close writes (it wakes the driver; never
 * drained); with a key also ready, an eventfd posted while outcomes are
 * queued, and timer, a timerfd armed at the earliest handshake deadline.
 * A handshake's epoll data is its id, (generation << 32 | slot index):
 * an event left over for a connection already finished finds another id
 * in the slot, or none, and is ignored.  Accepted sockets stay in
 * blocking mode (the handshake reads with MSG_DONTWAIT; pipe.c wants
 * blocking) and close-on-exec; TCP ones get TCP_NODELAY (libconc writes
 * each frame with one sendmsg(), so Nagle's algorithm could only delay a
 * reply behind a delayed ACK).
 *
 * Close.  conc_listener_close() marks the listener closed, writes wake
 * (the driver returns CONC_ECLOSED) and broadcasts cond (the waiters
 * do).  The descriptors, and the sockets of connections still in their
 * handshake or queued, are closed by the last accept to leave (users):
 * closing a descriptor another thread is polling would let the number be
 * reused by an unrelated open() and the waiter would then poll a
 * stranger's file.  shutdown(2) of a listening socket was rejected as the
 * wake-up: what it does to a waiting accept differs between AF_UNIX and
 * TCP.
 *
 * Locks.  lock guards everything but the constants set at creation and
 * closed, an atomic flag read without it by the driver after its wait.
 * The driver holds it while it works (non-blocking calls only, a few
 * microseconds) and releases it while it waits.  Close, fileno, port,
 * address and any number of accepts may run in different threads; free
 * must not race with anything.
 *
 * Fork.  A child inherits the descriptors and the handshakes in flight;
 * only one process should accept on a listener (as with Python's).  A
 * fork while another thread is inside accept leaves the child's copy
 * with that thread's turn to drive: the child's accepts then only time
 * out.  A copy's first use in another process gives it an epoll set and
 * eventfds of its own (own_fds): the inherited ones are the creator's
 * kernel objects.  Either process may free its copy; only the creator's
 * close shuts the listening socket down for every copy (its free leaves
 * a child's copy serving), and only the creator removes the socket file.
 *
 * Errors.  Every failure returns through conc__fail/conc__fail_sys with
 * the public call's name.  Every system call that can fail goes through
 * os.h, so the fault loops reach it; close(2), unlink(2) and rmdir(2) on
 * the way out, and the write that wakes the driver at close (an eventfd
 * counter far from overflow), are called directly: their failure changes
 * nothing a caller could act on.  Arming the timer may fail quietly: it
 * only serves outside pollers, and the next pass arms it again.
 */
#include "conc_int.h"
#include "handshake_int.h"
#include "pipe_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A handshake's time limit when the options leave it out. */
#define HS_TIMEOUT_DEFAULT 5.0
/* The kernel's queue when the options leave it out, and the most
 * handshakes in flight at once whatever the backlog (each holds a
 * descriptor). */
#define BACKLOG_DEFAULT 128
#define PENDING_MAX 1024

/* The epoll data of the listener's own descriptors; a handshake's id is
 * at least 1 << 32. */
enum { EV_LISTEN = 1, EV_WAKE, EV_READY, EV_TIMER };

static const char FORMS[] =
    "the forms are 'unix:/path', '/path', './path', 'unix:@name', "
    "'tcp:host:port', 'tcp://host:port' and 'host:port', with host a "
    "numeric IPv4 address, 'localhost', empty (any), or '[IPv6]'";

/* A connection in its handshake, then its outcome until an accept takes
 * it. */
typedef struct pending {
    conc__hs hs;
    uint64_t id;
    uint64_t deadline_ns;        /* UINT64_MAX: none */
    uint32_t events;             /* the epoll interest now */
    int err;                     /* failed: CONC_EAUTH, _ESYS, _ENOMEM */
    const char *why;             /* failed: what went wrong */
    int sys_errno;               /* failed by a system call: its errno */
    bool timed_out;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct pending *next;        /* in done or failed */
} pending;

typedef struct queue {
    pending *head;
    pending *tail;
} queue;

struct conc_listener {
    pthread_mutex_t lock;
    pthread_cond_t cond;         /* an outcome queued, a driver left, close */
    int fd;                      /* the listening socket; -1 once released */
    int ep;                      /* the epoll set (conc_listener_fileno) */
    int wake;                    /* eventfd written by close */
    int ready;                   /* eventfd posted while outcomes wait */
    int timer;                   /* timerfd at the earliest deadline */
    int users;                   /* accepts inside, using the descriptors */
    atomic_bool closed;
    bool driving;                /* a thread is the driver */

    pending **slot;              /* handshakes in flight; NULL: free */
    size_t nslot;                /* max_pending (0 without a key) */
    size_t nlive;                /* in flight + outcomes queued */
    uint32_t gen;
    queue done;
    queue failed;
    bool ready_on;               /* ready is posted */
    bool listen_on;              /* fd is in ep's interest */
    uint64_t timer_at;           /* what timer is armed for; 0: nothing */

    bool tcp;
    unsigned port;               /* TCP: the port bound */
    char *address;               /* as conc_listener_address returns it */
    char *sock_path;             /* the socket file we bound, NULL if none */
    char *tmpdir;                /* the private directory we made, or NULL */
    dev_t sock_dev;              /* the bound file's identity, for unlink */
    ino_t sock_ino;
    pid_t owner;                 /* the process that bound (and unlinks) */
    pid_t ev_pid;                /* the process ep, wake, ready and timer
                                  * are made by (own_fds) */

    unsigned char *key;          /* NULL: no authentication */
    size_t key_len;
    double hs_timeout;           /* seconds, or CONC_FOREVER */
    size_t max_message;          /* for the connections handed out */
};

/* ---- addresses ----------------------------------------------------------- */

typedef struct sock_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    int family;
    bool tcp;
    bool abstract;
    const char *path;       /* filesystem socket: points into the input */
    size_t port_at;         /* TCP: offset of the port digits in the input */
} sock_addr;

/* Parses a port: 1 to 5 decimal digits, at most 65535. */
static bool parse_port(const char *s, unsigned *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5) {
        return false;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) {
        return false;
    }
    *port = v;
    return true;
}

static int parse_unix(const char *fn, const char *s, const char *name,
                      bool abstract, sock_addr *a)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(name);
    /* An abstract name starts after a NUL byte and needs no terminator;
     * a path needs its terminating NUL inside sun_path. */
    if (n == 0) {
        return conc__fail(CONC_EINVAL, "%s: address '%s': the Unix socket "
                          "name is empty; %s", fn, s, FORMS);
    }
    if (n + 1 > sizeof un->sun_path) {
        return conc__fail(CONC_EINVAL, "%s: address '%.40s...': a Unix "
                          "socket name of %zu bytes is over the %zu a "
                          "socket address holds", fn, s, n,
                          sizeof un->sun_path - 1);
    }
    un->sun_family = AF_UNIX;
    a->family = AF_UNIX;
    a->abstract = abstract;
    if (abstract) {
        un->sun_path[0] = '\0';
        memcpy(un->sun_path + 1, name, n);
        /* The length says where an abstract name ends: no padding NULs
         * (Python passes b'\0name' the same way, so the names match). */
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    } else {
        memcpy(un->sun_path, name, n + 1);
        a->path = name;
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

static int parse_tcp(const char *fn, const char *s, size_t off,
                     bool listener, sock_addr *a)
{
    const char *hp = s + off;
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_s;
    bool v6 = false;
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || close[1] != ':' ||
            (size_t)(close - hp - 1) >= sizeof host) {
            return conc__fail(CONC_EINVAL, "%s: address '%s': an IPv6 "
                              "address is written '[addr]:port'; %s", fn, s,
                              FORMS);
        }
        memcpy(host, hp + 1, (size_t)(close - hp - 1));
        host[close - hp - 1] = '\0';
        port_s = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(hp, ':');
        if (colon == NULL || memchr(hp, ':', (size_t)(colon - hp)) != NULL ||
            (size_t)(colon - hp) >= sizeof host) {
            /* No port, an IPv6 address without [], or a host too long
             * to be a numeric address. */
            return conc__fail(CONC_EINVAL, "%s: address '%s' is not a "
                              "socket address: %s", fn, s, FORMS);
        }
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
        port_s = colon + 1;
    }
    unsigned port = 0;
    if (!parse_port(port_s, &port)) {
        return conc__fail(CONC_EINVAL, "%s: address '%s': port '%s' is not "
                          "a number from 0 to 65535", fn, s, port_s);
    }
    if (port == 0 && !listener) {
        return conc__fail(CONC_EINVAL, "%s: address '%s': a client cannot "
                          "connect to port 0 (a listener asks for it to get "
                          "a free port)", fn, s);
    }
    a->tcp = true;
    a->port_at = (size_t)(port_s - s);
    if (v6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
            return conc__fail(CONC_EINVAL, "%s: address '%s': '%s' is not "
                              "a numeric IPv6 address", fn, s, host);
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        a->family = AF_INET6;
        a->len = sizeof *in6;
        return 0;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
    if (host[0] == '\0') {
        in->sin_addr.s_addr = htonl(INADDR_ANY); /* Python's ('', port) */
    } else if (strcmp(host, "localhost") == 0) {
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
        return conc__fail(CONC_EINVAL, "%s: address '%s': host '%s' is not "
                          "a numeric IPv4 address or 'localhost' (names are "
                          "not resolved: that could block past any "
                          "timeout)", fn, s, host);
    }
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    a->family = AF_INET;
    a->len = sizeof *in;
    return 0;
}

/* Parses an address string (see conc/pipe.h) for fn.  0 or CONC_EINVAL
 * with a detail. */
static int parse_address(const char *fn, const char *s, bool listener,
                         sock_addr *a)
{
    memset(a, 0, sizeof *a);
    if (s == NULL || s[0] == '\0') {
        return conc__fail(CONC_EINVAL, "%s: the address is %s; %s", fn,
                          s == NULL ? "NULL" : "empty", FORMS);
    }
    if (strncmp(s, "unix:", 5) == 0) {
        if (s[5] == '@') {
            return parse_unix(fn, s, s + 6, true, a);
        }
        return parse_unix(fn, s, s + 5, false, a);
    }
    if (s[0] == '/' || strncmp(s, "./", 2) == 0 || strncmp(s, "../", 3) == 0) {
        return parse_unix(fn, s, s, false, a);
    }
    if (strncmp(s, "tcp://", 6) == 0) {
        return parse_tcp(fn, s, 6, listener, a);
    }
    return parse_tcp(fn, s, strncmp(s, "tcp:", 4) == 0 ? 4 : 0, listener, a);
}

/* ---- small pieces -------------------------------------------------------- */

/* The epoll_wait timeout for a deadline, in ms rounded up (waking a
 * little early would only loop); at most until at_ns when that is sooner
 * (0: no such bound). */
static int wait_ms(const conc__deadline *dl, uint64_t at_ns)
{
    double left = -1;
    if (dl->once) {
        return 0;
    }
    if (!dl->forever) {
        left = conc__deadline_left(dl);
    }
    if (at_ns != 0) {
        uint64_t now = conc__now_ns();
        double to = at_ns > now ? (double)(at_ns - now) / 1e9 : 0;
        if (left < 0 || to < left) {
            left = to;
        }
    }
    if (left < 0) {
        return -1;
    }
    double ms = ceil(left * 1000.0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void queue_push(queue *q, pending *p)
{
    p->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = p;
    } else {
        q->head = p;
    }
    q->tail = p;
}

static pending *queue_pop(queue *q)
{
    pending *p = q->head;
    if (p != NULL) {
        q->head = p->next;
        if (q->head == NULL) {
            q->tail = NULL;
        }
    }
    return p;
}

/* Keeps the ready eventfd posted exactly while outcomes are queued, so
 * that ep shows them to outside pollers.  A failed post or drain leaves
 * ready_on as it was, and the next change tries again. */
static void sync_ready(conc_listener *l)
{
    bool want = l->done.head != NULL || l->failed.head != NULL;
    if (want && !l->ready_on) {
        l->ready_on = conc__os_eventfd_post(l->ready) == 0;
    } else if (!want && l->ready_on) {
        l->ready_on = conc__os_eventfd_drain(l->ready) != 0;
    }
}

/* ---- handshakes in flight (lock held) ------------------------------------ */

/* A handshake is over: out of its slot and out of ep, into done (err 0)
 * or failed (its socket closed).  A finished connection that cannot be
 * taken out of ep fails instead: it must not stay in our set once it is
 * the caller's. */
static void finish(conc_listener *l, pending *p, int err, const char *why)
{
    /* In flight -> an outcome: p still holds its slot. */
    CONC__ASSERT((p->id & 0xffffffffu) < l->nslot &&
                 l->slot[p->id & 0xffffffffu] == p);
    l->slot[p->id & 0xffffffffu] = NULL;
    if (conc__os_epoll_ctl(l->ep, EPOLL_CTL_DEL, p->hs.fd, NULL) != 0 &&
        err == 0) {
        /* detail: the accept that takes this outcome (p->why) */
        err = CONC_ESYS;
        why = "epoll_ctl(EPOLL_CTL_DEL) of the connection failed";
        p->sys_errno = errno;
    }
    if (err == 0) {
        queue_push(&l->done, p);
    } else {
        close(p->hs.fd);
        p->hs.fd = -1;
        p->err = err;
        p->why = why;
        queue_push(&l->failed, p);
    }
    sync_ready(l);
}

/* Runs p's handshake as far as it goes now. */
static void advance(conc_listener *l, pending *p)
{
    int r = conc__hs_step(&p->hs);
    if (r == CONC__HS_DONE) {
        finish(l, p, 0, NULL);
        return;
    }
    if (r == CONC__HS_FAILED) {
        p->sys_errno = p->hs.sys_errno;
        finish(l, p, CONC_EAUTH, p->hs.why);
        return;
    }
    CONC__ASSERT(r == CONC__HS_WANT_READ || r == CONC__HS_WANT_WRITE);
    uint32_t want = r == CONC__HS_WANT_READ ? EPOLLIN : EPOLLOUT;
    if (want != p->events) {
        struct epoll_event ev = { .events = want, .data.u64 = p->id };
        if (conc__os_epoll_ctl(l->ep, EPOLL_CTL_MOD, p->hs.fd, &ev) != 0) {
            p->sys_errno = errno;
            finish(l, p, CONC_ESYS, "epoll_ctl(EPOLL_CTL_MOD) failed");
            return;
        }
        p->events = want;
    }
}

/* Takes fd, just accepted from peer, into a handshake of its own.
 * CONC_ENOMEM or CONC_ESYS (fd closed) when it cannot even start; a
 * failure after it started is queued as its outcome. */
static int start_handshake(conc_listener *l, int fd,
                           const struct sockaddr_storage *peer,
                           socklen_t peer_len)
{
    pending *p = conc__calloc(1, sizeof *p);
    if (p == NULL) {
        close(fd);
        return conc__fail(CONC_ENOMEM, "conc_listener_accept: no memory "
                          "for a connection's handshake");
    }
    unsigned char nonce[CONC__HS_NONCE];
    if (conc__os_random(nonce, sizeof nonce) != 0) {
        int keep = errno;
        free(p);
        close(fd);
        errno = keep;
        return conc__fail_sys(CONC_ESYS, "conc_listener_accept: getrandom "
                              "for a challenge");
    }
    CONC__ASSERT(l->nlive < l->nslot); /* the caller checked */
    size_t i = 0;
    while (l->slot[i] != NULL) {
        i++; /* one is free: nlive < nslot, and slots hold no outcomes */
    }
    CONC__ASSERT(i < l->nslot);
    if (++l->gen == 0) {
        l->gen = 1;
    }
    p->id = (uint64_t)l->gen << 32 | i;
    p->deadline_ns = UINT64_MAX;
    if (l->hs_timeout >= 0 && l->hs_timeout < 1e9) { /* else: none */
        p->deadline_ns = conc__now_ns() + (uint64_t)(l->hs_timeout * 1e9);
    }
    memcpy(&p->peer, peer, sizeof p->peer);
    p->peer_len = peer_len;
    conc__hs_init(&p->hs, fd, CONC__HS_SERVER, l->key, l->key_len, nonce);
    explicit_bzero(nonce, sizeof nonce);
    l->slot[i] = p;
    l->nlive++;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = p->id };
    if (conc__os_epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        p->sys_errno = errno;
        finish(l, p, CONC_ESYS, "epoll_ctl(EPOLL_CTL_ADD) failed");
        return 0;
    }
    p->events = EPOLLIN;
    advance(l, p); /* sends the challenge now */
    return 0;
}

/* Accepts what waits in the kernel's queue: without a key one
 * connection, handed straight out in *fd_out; with one, as many as there
 * are free slots, each into its handshake.  0, or CONC_ESYS/CONC_ENOMEM
 * (EMFILE and the like: the caller hears of it, the listener goes on). */
/* A forked child's copy whose listening socket the creator shut down
 * (conc_listener_close there): epoll reports a hang-up, and accept4
 * fails (TCP) or finds nothing (Unix) for ever after. */
static int closed_by_creator(void)
{
    return conc__fail(CONC_ECLOSED, "conc_listener_accept: the listener "
                      "was closed by the process that made it");
}

static int accept_new(conc_listener *l, int *fd_out)
{
    for (;;) {
        if (l->key != NULL && l->nlive >= l->nslot) {
            return 0;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = conc__os_accept4(l->fd, (struct sockaddr *)&ss, &len,
                                  SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue; /* a signal, or a client that gave up waiting */
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            if (errno == EINVAL) {
                return closed_by_creator(); /* TCP: no longer listening */
            }
            return conc__fail_sys(CONC_ESYS, "conc_listener_accept: "
                                  "accept4");
        }
        if (l->tcp) {
            int one = 1; /* see "Descriptors"; failure only costs time */
            conc__os_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                                sizeof one);
        }
        if (l->key == NULL) {
            *fd_out = fd;
            return 0;
        }
        int err = start_handshake(l, fd, &ss, len);
        if (err != 0) {
            return err;
        }
    }
}

/* Fails every handshake past its deadline; returns the earliest deadline
 * still ahead (0: none). */
static uint64_t expire(conc_listener *l)
{
    uint64_t now = 0;
    uint64_t earliest = UINT64_MAX;
    for (size_t i = 0; i < l->nslot; i++) {
        pending *p = l->slot[i];
        if (p == NULL || p->deadline_ns == UINT64_MAX) {
            continue;
        }
        if (now == 0) {
            now = conc__now_ns();
        }
        if (p->deadline_ns <= now) {
            p->timed_out = true;
            finish(l, p, CONC_EAUTH, "no answer within the handshake "
                                     "timeout");
        } else if (p->deadline_ns < earliest) {
            earliest = p->deadline_ns;
        }
    }
    return earliest == UINT64_MAX ? 0 : earliest;
}

/* Sets ep's interest in new connections (none while every slot is
 * taken, else epoll would report the waiting queue for ever) and the
 * timer at the earliest deadline. */
static int arm(conc_listener *l, uint64_t earliest)
{
    bool want = l->key == NULL || l->nlive < l->nslot;
    if (want != l->listen_on) {
        struct epoll_event ev = { .events = want ? EPOLLIN : 0,
                                  .data.u64 = EV_LISTEN };
        if (conc__os_epoll_ctl(l->ep, EPOLL_CTL_MOD, l->fd, &ev) != 0) {
            return conc__fail_sys(CONC_ESYS, "conc_listener_accept: "
                                  "epoll_ctl of the listening socket");
        }
        l->listen_on = want;
    }
    if (l->timer >= 0 && earliest != l->timer_at &&
        conc__os_timerfd_set(l->timer, earliest) == 0) {
        l->timer_at = earliest;
    }
    return 0;
}

/* Handles one event (id, and what epoll reported, events).  0,
 * CONC_ECLOSED, or accept_new's errors. */
static int dispatch(conc_listener *l, uint64_t id, uint32_t events,
                    int *fd_out)
{
    switch (id) {
    case EV_LISTEN:
        if (events & (EPOLLHUP | EPOLLERR)) {
            return closed_by_creator();
        }
        return accept_new(l, fd_out);
    case EV_WAKE:
        return conc__fail(CONC_ECLOSED, "conc_listener_accept: the listener "
                          "was closed during the wait");
    case EV_READY:
        return 0; /* outcomes are looked at after every pass */
    case EV_TIMER:
        conc__os_timerfd_drain(l->timer);
        l->timer_at = 0; /* fired: arm again for the next deadline */
        return 0;
    default: {
        size_t i = id & 0xffffffffu;
        if (i < l->nslot && l->slot[i] != NULL && l->slot[i]->id == id) {
            advance(l, l->slot[i]);
        }
        return 0;
    }
    }
}

static bool outcome_waiting(const conc_listener *l)
{
    return l->done.head != NULL || l->failed.head != NULL;
}

/* The driver (see "The driver"); lock held, released while waiting.
 * Returns 0 when an outcome is queued or, without a key, with *fd_out
 * set; CONC_ETIMEDOUT, CONC_ECLOSED, CONC_ESYS, CONC_ENOMEM. */
static int drive(conc_listener *l, const conc__deadline *dl, double timeout,
                 int *fd_out)
{
    struct epoll_event evs[32];
    for (int pass = 0;; pass++) {
        uint64_t earliest = expire(l);
        if (outcome_waiting(l)) {
            return 0;
        }
        int err = arm(l, earliest);
        if (err != 0) {
            return err;
        }
        int ms = wait_ms(dl, earliest);
        pthread_mutex_unlock(&l->lock);
        int n = conc__os_epoll_wait(l->ep, evs, 32, ms);
        int keep = errno;
        pthread_mutex_lock(&l->lock);
        /* Pairs with the release store in conc_listener_close: closed
         * seen set, the rest of what close did is seen too. */
        if (atomic_load_explicit(&l->closed, memory_order_acquire)) {
            return conc__fail(CONC_ECLOSED, "conc_listener_accept: the "
                              "listener was closed during the wait");
        }
        if (n < 0) {
            errno = keep;
            if (errno == EINTR) {
                continue;
            }
            return conc__fail_sys(CONC_ESYS, "conc_listener_accept: "
                                  "epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            err = dispatch(l, evs[i].data.u64, evs[i].events, fd_out);
            if (err != 0) {
                return err;
            }
            if (*fd_out >= 0) {
                return 0;
            }
        }
        /* Timeout 0 goes on while something is ready (a handshake's next
         * bytes may come within microseconds), a bounded number of
         * passes; a deadline ends the wait when epoll found nothing, or
         * once it has passed, whatever epoll says (an event that fires on
         * every pass and yields nothing must not hold the call). */
        bool quiet = n == 0 || (dl->once && pass >= 16) ||
                     (!dl->once && !dl->forever &&
                      conc__deadline_passed(dl));
        if (quiet && (dl->once || conc__deadline_passed(dl))) {
            expire(l);
            if (outcome_waiting(l)) {
                return 0;
            }
            return conc__fail(CONC_ETIMEDOUT, "conc_listener_accept: no "
                              "connection %s within %g s",
                              l->key != NULL ? "finished its handshake"
                                             : "came",
                              timeout);
        }
    }
}

/* Takes one outcome: a finished connection (*fd set, 0) before a
 * failure (its code, with a detail naming the client).  false when none
 * waits. */
static bool take_outcome(conc_listener *l, int *fd, int *err)
{
    pending *p = queue_pop(&l->done);
    if (p != NULL) {
        *fd = p->hs.fd;
        *err = 0;
    } else {
        p = queue_pop(&l->failed);
        if (p == NULL) {
            return false;
        }
        char who[INET6_ADDRSTRLEN + 16] = "a client";
        if (p->peer.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)&p->peer;
            char h[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &in->sin_addr, h, sizeof h);
            snprintf(who, sizeof who, "client %s:%u", h,
                     (unsigned)ntohs(in->sin_port));
        } else if (p->peer.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)&p->peer;
            char h[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof h);
            snprintf(who, sizeof who, "client [%s]:%u", h,
                     (unsigned)ntohs(in6->sin6_port));
        }
        char extra[64] = "";
        if (p->timed_out) {
            snprintf(extra, sizeof extra, " (%g s)", l->hs_timeout);
        } else if (p->hs.bad_len != 0) {
            snprintf(extra, sizeof extra, " (%u bytes announced)",
                     (unsigned)p->hs.bad_len);
        }
        errno = p->sys_errno;
        if (p->sys_errno != 0) {
            *err = conc__fail_sys(p->err, "conc_listener_accept: %s: the "
                                  "handshake failed: %s%s", who, p->why,
                                  extra);
        } else {
            *err = conc__fail(p->err, "conc_listener_accept: %s: the "
                              "handshake failed: %s%s", who, p->why, extra);
        }
    }
    free(p);
    CONC__ASSERT(l->nlive > 0); /* p was counted when it came in */
    l->nlive--;
    sync_ready(l);
    return true;
}

/* ---- the listener -------------------------------------------------------- */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Closes the descriptors and drops every connection in flight or
 * queued; lock held, no accept inside (or none possible). */
static void release_fds(conc_listener *l)
{
    close_fd(&l->fd);
    close_fd(&l->ep);
    close_fd(&l->wake);
    close_fd(&l->ready);
    close_fd(&l->timer);
    for (size_t i = 0; i < l->nslot; i++) {
        if (l->slot[i] != NULL) {
            close(l->slot[i]->hs.fd);
            free(l->slot[i]);
            l->slot[i] = NULL;
        }
    }
    pending *p;
    while ((p = queue_pop(&l->done)) != NULL) {
        close(p->hs.fd);
        free(p);
    }
    while ((p = queue_pop(&l->failed)) != NULL) {
        free(p);
    }
    l->nlive = 0;
}

/* Removes the socket file and the private directory, if this process
 * made them and the file is still the one it bound; once. */
static void remove_files(conc_listener *l)
{
    int keep = errno;
    if (l->owner == getpid()) {
        struct stat st;
        if (l->sock_path != NULL && lstat(l->sock_path, &st) == 0 &&
            st.st_dev == l->sock_dev && st.st_ino == l->sock_ino) {
            unlink(l->sock_path);
        }
        if (l->tmpdir != NULL) {
            rmdir(l->tmpdir);
        }
    }
    free(l->sock_path);
    l->sock_path = NULL;
    free(l->tmpdir);
    l->tmpdir = NULL;
    errno = keep;
}

/* Formats the bound address: the string as given, with the real port in
 * place of the asked one for TCP. */
static int format_address(conc_listener *l, const char *given,
                          const sock_addr *a)
{
    if (!a->tcp) {
        l->address = conc__strdup(given);
        return l->address == NULL
                   ? conc__fail(CONC_ENOMEM, "conc_listener_new: no memory "
                                "for the address")
                   : 0;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (conc__os_getsockname(l->fd, (struct sockaddr *)&ss, &len) != 0) {
        return conc__fail_sys(CONC_ESYS, "conc_listener_new: getsockname "
                              "of '%s'", given);
    }
    l->port = ntohs(ss.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&ss)->sin6_port
                        : ((struct sockaddr_in *)&ss)->sin_port);
    size_t n = a->port_at + 6;
    l->address = conc__malloc(n);
    if (l->address == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_listener_new: no memory for "
                          "the address");
    }
    snprintf(l->address, n, "%.*s%u", (int)a->port_at, given, l->port);
    return 0;
}

/* A fresh private directory for a NULL address, and the socket path in
 * it.  Under $TMPDIR when set, absolute and short enough for sun_path,
 * else /tmp. */
static int make_tmp_path(conc_listener *l, char **path)
{
    static const char tail[] = "/conc-listener-XXXXXX";
    static const char sock[] = "/sock";
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] != '/' ||
        strlen(base) + sizeof tail + sizeof sock >
            sizeof(((struct sockaddr_un *)0)->sun_path)) {
        base = "/tmp";
    }
    size_t blen = strlen(base);
    while (blen > 1 && base[blen - 1] == '/') {
        blen--; /* "/tmp/" + "/conc-..." would still work; keep it tidy */
    }
    l->tmpdir = conc__malloc(blen + sizeof tail);
    if (l->tmpdir == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_listener_new: no memory for "
                          "a directory name");
    }
    memcpy(l->tmpdir, base, blen);
    memcpy(l->tmpdir + blen, tail, sizeof tail);
    if (conc__os_mkdtemp(l->tmpdir) == NULL) {
        int keep = errno;
        int err = conc__fail_sys(CONC_ESYS, "conc_listener_new: "
                                 "mkdtemp('%s')", l->tmpdir);
        free(l->tmpdir);
        l->tmpdir = NULL;
        errno = keep;
        return err;
    }
    size_t dlen = strlen(l->tmpdir);
    *path = conc__malloc(dlen + sizeof sock);
    if (*path == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_listener_new: no memory for "
                          "a socket path");
    }
    memcpy(*path, l->tmpdir, dlen);
    memcpy(*path + dlen, sock, sizeof sock);
    return 0;
}

/* Checks the options; fills hs_timeout and the slot count. */
static int check_listener_opts(const conc_listener_opts *o, double *hs)
{
    if (o->backlog < 0) {
        return conc__fail(CONC_EINVAL, "conc_listener_new: backlog %d is "
                          "negative", o->backlog);
    }
    if (o->authkey == NULL && o->authkey_len > 0) {
        return conc__fail(CONC_EINVAL, "conc_listener_new: authkey is NULL "
                          "and authkey_len is %zu", o->authkey_len);
    }
    *hs = conc__timeout_opt(o->handshake_timeout, HS_TIMEOUT_DEFAULT);
    if (!conc__timeout_ok(*hs)) {
        return conc__fail(CONC_EINVAL, "conc_listener_new: "
                          "handshake_timeout %g: it must be >= 0 or "
                          "CONC_FOREVER", *hs);
    }
    return 0;
}

/* Adds fd to ep with the given id and events. */
static int ep_add(conc_listener *l, int fd, uint64_t id, uint32_t events,
                  const char *what, const char *fn)
{
    struct epoll_event ev = { .events = events, .data.u64 = id };
    if (conc__os_epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return conc__fail_sys(CONC_ESYS, "%s: epoll_ctl of the %s", fn,
                              what);
    }
    return 0;
}

/* The descriptors besides the listening socket (see "Descriptors"),
 * made by this process. */
static int make_fds(conc_listener *l, const char *fn)
{
    l->ev_pid = getpid();
    l->ep = conc__os_epoll_create();
    if (l->ep < 0) {
        return conc__fail_sys(CONC_ESYS, "%s: epoll_create1", fn);
    }
    l->wake = conc__os_eventfd();
    if (l->wake < 0) {
        return conc__fail_sys(CONC_ESYS, "%s: eventfd", fn);
    }
    int err = ep_add(l, l->fd, EV_LISTEN, EPOLLIN, "listening socket", fn);
    if (err == 0) {
        l->listen_on = true;
        err = ep_add(l, l->wake, EV_WAKE, EPOLLIN, "close eventfd", fn);
    }
    if (err != 0 || l->key == NULL) {
        return err;
    }
    l->ready = conc__os_eventfd();
    if (l->ready < 0) {
        return conc__fail_sys(CONC_ESYS, "%s: eventfd", fn);
    }
    l->timer = conc__os_timerfd_create();
    if (l->timer < 0) {
        return conc__fail_sys(CONC_ESYS, "%s: timerfd_create", fn);
    }
    err = ep_add(l, l->ready, EV_READY, EPOLLIN, "outcome eventfd", fn);
    if (err == 0) {
        err = ep_add(l, l->timer, EV_TIMER, EPOLLIN, "timerfd", fn);
    }
    return err;
}

/* In a forked child, the epoll set and eventfds inherited are the same
 * kernel objects as the creator's: a close here wrote the creator's wake
 * (its accepts then said CONC_ECLOSED for good) and the creator's events
 * woke drivers here.  On its first use in another process, a copy makes
 * its own, and registers the listening socket and the handshakes it
 * inherited in them.  Lock held; 0 or make_fds's errors (tried again at
 * the next use). */
static int own_fds(conc_listener *l, const char *fn)
{
    if (l->ev_pid == getpid() || l->fd < 0) {
        return 0;
    }
    close_fd(&l->ep);
    close_fd(&l->wake);
    close_fd(&l->ready);
    close_fd(&l->timer);
    l->listen_on = false;
    l->ready_on = false;
    l->timer_at = 0;
    int err = make_fds(l, fn);
    for (size_t i = 0; err == 0 && i < l->nslot; i++) {
        pending *p = l->slot[i];
        if (p != NULL) {
            err = ep_add(l, p->hs.fd, p->id, p->events, "connection", fn);
        }
    }
    if (err != 0) {
        l->ev_pid = 0; /* made again at the next use */
        return err;
    }
    sync_ready(l);
    return 0;
}

/* Binds and listens l->fd at a (the address string given, for details);
 * records the socket file's identity. */
static int bind_listen(conc_listener *l, const char *given,
                       const sock_addr *a, int backlog)
{
    /* Non-blocking: accept waits in epoll, where close can wake it, and
     * a connection another thread took first is EAGAIN, not a hang. */
    l->fd = conc__os_socket(a->family,
                            SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0) {
        return conc__fail_sys(CONC_ESYS, "conc_listener_new: socket for "
                              "'%s'", given);
    }
    if (a->tcp) {
        /* As Python's SocketListener: a restarted server can bind its port
         * again while old connections sit in TIME_WAIT. */
        int one = 1;
        if (conc__os_setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one,
                                sizeof one) != 0) {
            return conc__fail_sys(CONC_ESYS, "conc_listener_new: "
                                  "SO_REUSEADDR on '%s'", given);
        }
    }
    if (conc__os_bind(l->fd, (struct sockaddr *)&a->ss, a->len) != 0) {
        return conc__fail_sys(CONC_ESYS, "conc_listener_new: bind('%s')",
                              given);
    }
    if (a->path != NULL) {
        struct stat st;
        l->sock_path = conc__strdup(a->path);
        if (l->sock_path == NULL || conc__os_lstat(a->path, &st) != 0) {
            /* Without the path or its identity we cannot remove the file
             * safely later: remove it now and fail. */
            int err = l->sock_path == NULL
                          ? conc__fail(CONC_ENOMEM, "conc_listener_new: no "
                                       "memory for the socket path")
                          : conc__fail_sys(CONC_ESYS, "conc_listener_new: "
                                           "lstat('%s')", a->path);
            int keep = errno;
            unlink(a->path);
            errno = keep;
            return err;
        }
        l->sock_dev = st.st_dev;
        l->sock_ino = st.st_ino;
    }
    if (conc__os_listen(l->fd, backlog) != 0) {
        return conc__fail_sys(CONC_ESYS, "conc_listener_new: listen('%s')",
                              given);
    }
    return 0;
}

/* Frees what conc_listener_new made; lock and cond initialised. */
static void listener_destroy(conc_listener *l)
{
    release_fds(l);
    remove_files(l);
    if (l->key != NULL) {
        explicit_bzero(l->key, l->key_len);
        free(l->key);
    }
    free(l->slot);
    free(l->address);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

int conc_listener_new(conc_listener **out, const char *address,
                      const conc_listener_opts *opts)
{
    if (out != NULL) {
        *out = NULL;
    }
    conc_listener_opts o = { 0 };
    if (opts != NULL) {
        o = *opts;
    }
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_listener_new: out is NULL");
    }
    double hs_timeout = 0;
    int err = check_listener_opts(&o, &hs_timeout);
    if (err != 0) {
        return err;
    }
    char *tmp_path = NULL;
    sock_addr a;
    conc_listener *l = conc__calloc(1, sizeof *l);
    if (l == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_listener_new: no memory for "
                          "the listener");
    }
    l->fd = l->ep = l->wake = l->ready = l->timer = -1;
    l->owner = getpid();
    l->hs_timeout = hs_timeout;
    l->max_message = o.max_message_bytes;
    pthread_mutex_init(&l->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&l->closed, false);

    int backlog = o.backlog == 0 ? BACKLOG_DEFAULT : o.backlog;
    if (address == NULL) {
        err = make_tmp_path(l, &tmp_path);
        if (err != 0) {
            goto fail;
        }
        address = tmp_path;
    }
    err = parse_address("conc_listener_new", address, true, &a);
    if (err != 0) {
        goto fail;
    }
    l->tcp = a.tcp;
    if (o.authkey_len > 0) {
        size_t nslot = backlog < PENDING_MAX ? (size_t)backlog : PENDING_MAX;
        l->key = conc__malloc(o.authkey_len);
        l->slot = conc__calloc(nslot, sizeof *l->slot);
        if (l->key == NULL || l->slot == NULL) {
            err = conc__fail(CONC_ENOMEM, "conc_listener_new: no memory for "
                             "the key and the handshake slots");
            goto fail;
        }
        l->nslot = nslot;
        memcpy(l->key, o.authkey, o.authkey_len);
        l->key_len = o.authkey_len;
    }
    err = bind_listen(l, address, &a, backlog);
    if (err == 0) {
        err = make_fds(l, "conc_listener_new");
    }
    if (err == 0) {
        err = format_address(l, address, &a);
    }
    if (err != 0) {
        goto fail;
    }
    free(tmp_path);
    *out = l;
    return 0;

fail: {
    int keep = errno;
    free(tmp_path);
    listener_destroy(l);
    errno = keep;
    return err;
}
}

/* An accept that is not the driver waits for an outcome or its turn;
 * lock held.  CONC_ETIMEDOUT when the deadline passed, else 0. */
static int wait_turn(conc_listener *l, const conc__deadline *dl)
{
    if (dl->once) {
        /* detail: the caller's (a timed-out accept) */
        return CONC_ETIMEDOUT;
    }
    if (dl->forever) {
        pthread_cond_wait(&l->cond, &l->lock);
        return 0;
    }
    /* cond runs on CLOCK_MONOTONIC, the deadline's clock. */
    int r = pthread_cond_timedwait(&l->cond, &l->lock, &dl->at);
    /* detail: the caller's (a timed-out accept) */
    return r == ETIMEDOUT ? CONC_ETIMEDOUT : 0;
}

int conc_listener_accept(conc_listener *l, conc_conn **out, double timeout)
{
    static const char fn[] = "conc_listener_accept";
    if (out != NULL) {
        *out = NULL;
    }
    if (l == NULL || out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: %s is NULL", fn,
                          l == NULL ? "l" : "out");
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return conc__fail(CONC_EINVAL, "%s: timeout %g: it must be >= 0 or "
                          "CONC_FOREVER", fn, timeout);
    }
    pthread_mutex_lock(&l->lock);
    if (atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        pthread_mutex_unlock(&l->lock);
        return conc__fail(CONC_ECLOSED, "%s: the listener is closed", fn);
    }
    int own = own_fds(l, fn);
    if (own != 0) {
        pthread_mutex_unlock(&l->lock);
        return own;
    }
    l->users++;
    int fd = -1;
    int err = 0;
    for (;;) {
        if (atomic_load_explicit(&l->closed, memory_order_relaxed)) {
            err = conc__fail(CONC_ECLOSED, "%s: the listener was closed "
                             "during the wait", fn);
            break;
        }
        if (take_outcome(l, &fd, &err)) {
            break;
        }
        if (l->driving) {
            if (wait_turn(l, &dl) == CONC_ETIMEDOUT) {
                if (!take_outcome(l, &fd, &err)) {
                    err = conc__fail(CONC_ETIMEDOUT, "%s: no connection "
                                     "came within %g s", fn, timeout);
                }
                break;
            }
            continue;
        }
        l->driving = true;
        err = drive(l, &dl, timeout, &fd);
        l->driving = false;
        pthread_cond_broadcast(&l->cond);
        if (err != 0 || fd >= 0) {
            break;
        }
    }
    l->users--;
    if (l->users == 0 &&
        atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        release_fds(l); /* close came while we were inside: our turn */
    }
    pthread_mutex_unlock(&l->lock);
    if (err != 0) {
        return err;
    }
    *out = conc__conn_from_fd(fd, l->max_message);
    if (*out == NULL) {
        close(fd);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the connection",
                          fn);
    }
    return 0;
}

const char *conc_listener_address(const conc_listener *l)
{
    return l == NULL ? NULL : l->address;
}

int conc_listener_port(const conc_listener *l)
{
    if (l == NULL) {
        return conc__fail(CONC_EINVAL, "conc_listener_port: l is NULL");
    }
    if (!l->tcp) {
        return conc__fail(CONC_EINVAL, "conc_listener_port: '%s' is a Unix "
                          "socket, which has no port", l->address);
    }
    return (int)l->port;
}

int conc_listener_fileno(const conc_listener *l)
{
    if (l == NULL) {
        return conc__fail(CONC_EINVAL, "conc_listener_fileno: l is NULL");
    }
    /* The lock only keeps us from reading ep while close releases it;
     * the handle is otherwise unchanged, hence the cast. */
    pthread_mutex_t *m = (pthread_mutex_t *)&l->lock;
    pthread_mutex_lock(m);
    bool closed = atomic_load_explicit(&l->closed, memory_order_relaxed);
    /* A forked child's copy answers with an epoll set of its own (the
     * cast again: the handle's events are remade, its meaning is not). */
    int own = closed ? 0 : own_fds((conc_listener *)l, "conc_listener_fileno");
    int fd = l->ep;
    pthread_mutex_unlock(m);
    if (closed) {
        return conc__fail(CONC_ECLOSED, "conc_listener_fileno: the listener "
                          "is closed");
    }
    return own != 0 ? own : fd;
}

/* conc_listener_close, and conc_listener_free with stop_copies false:
 * a handle dropped leaves the listening socket to the copies forked
 * children hold (a child may be the one that serves). */
static void close_listener(conc_listener *l, bool stop_copies)
{
    pthread_mutex_lock(&l->lock);
    if (!atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        /* Release: an accept that sees closed set also sees the rest of
         * what close did.  Pairs with the acquire load in drive. */
        atomic_store_explicit(&l->closed, true, memory_order_release);
        /* The creator's close stops the listening socket itself, in
         * every process that holds a copy: a child forked since (a pool's
         * worker, a conc_process) keeps the descriptor, and the port
         * would stay bound and go on taking connections nobody accepts.
         * closed is already set, so an accept woken by the shutdown's
         * event returns CONC_ECLOSED.
         * A forked child's close leaves the creator's listener alone,
         * as it leaves the socket file. */
        if (stop_copies && l->owner == getpid() && l->fd >= 0) {
            (void)shutdown(l->fd, SHUT_RDWR);
        }
        if (l->users > 0) {
            /* Wake the driver: the eventfd stays readable (its counter is
             * never read).  Direct, not through the seam: close cannot
             * fail, and the write cannot (the counter is far from
             * overflow).  The other accepts wait on cond.  In a forked
             * child, only its own eventfd: users counted there may be the
             * creator's threads, copied by the fork, and its wake is
             * the creator's until own_fds made one. */
            if (own_fds(l, "conc_listener_close") == 0) {
                uint64_t one = 1;
                ssize_t r = write(l->wake, &one, sizeof one);
                (void)r;
            }
            pthread_cond_broadcast(&l->cond);
        } else {
            release_fds(l);
        }
        /* As Python's Listener.close(): the address goes at once. */
        remove_files(l);
    }
    pthread_mutex_unlock(&l->lock);
}

int conc_listener_close(conc_listener *l)
{
    if (l == NULL) {
        return conc__fail(CONC_EINVAL, "conc_listener_close: l is NULL");
    }
    close_listener(l, true);
    return 0;
}

void conc_listener_free(conc_listener *l)
{
    if (l == NULL) {
        return;
    }
    close_listener(l, false);
    /* No accept can still be inside (free must not race), so the
     * descriptors are ours to close if close left them. */
    listener_destroy(l);
}

/* ---- the client ---------------------------------------------------------- */

/* Connects fd to a, waiting up to the deadline. */
static int connect_fd(int fd, const sock_addr *a, const char *addr,
                      const conc__deadline *dl, double timeout)
{
    static const char fn[] = "conc_client_connect";
    uint64_t until = UINT64_MAX; /* forever */
    if (dl->once) {
        until = conc__now_ns(); /* one try, no wait */
    } else if (!dl->forever) {
        until = conc__now_ns() + (uint64_t)(conc__deadline_left(dl) * 1e9);
    }
    if (conc__os_connect_until(fd, (const struct sockaddr *)&a->ss, a->len,
                               until) == 0) {
        return 0;
    }
    /* ETIMEDOUT is ours only once the deadline passed; before, it is the
     * kernel's own (a TCP connect that got no answer for minutes), a
     * system refusal like the others. */
    if (errno == ETIMEDOUT && (dl->once || conc__deadline_passed(dl))) {
        return conc__fail(CONC_ETIMEDOUT, "%s: '%s' did not take the "
                          "connection within %g s (no answer, or its "
                          "queue stayed full)", fn, addr, timeout);
    }
    return conc__fail_sys(CONC_ESYS, "%s: connect('%s')", fn, addr);
}

/* The client's side of the handshake on fd, within the deadline. */
static int client_handshake(int fd, const void *key, size_t key_len,
                            const char *addr, const conc__deadline *dl,
                            double timeout)
{
    static const char fn[] = "conc_client_connect";
    unsigned char nonce[CONC__HS_NONCE];
    if (conc__os_random(nonce, sizeof nonce) != 0) {
        return conc__fail_sys(CONC_ESYS, "%s: getrandom for a challenge",
                              fn);
    }
    conc__hs hs;
    conc__hs_init(&hs, fd, CONC__HS_CLIENT, key, key_len, nonce);
    int err = 0;
    for (;;) {
        int r = conc__hs_step(&hs);
        if (r == CONC__HS_DONE) {
            break;
        }
        if (r == CONC__HS_FAILED) {
            errno = hs.sys_errno;
            err = hs.sys_errno != 0
                      ? conc__fail_sys(CONC_EAUTH, "%s: '%s': the handshake "
                                       "failed: %s", fn, addr, hs.why)
                      : conc__fail(CONC_EAUTH, "%s: '%s': the handshake "
                                   "failed: %s", fn, addr, hs.why);
            break;
        }
        err = conc__wait_fd(fd, r == CONC__HS_WANT_READ ? POLLIN : POLLOUT,
                            dl);
        if (err == CONC_ETIMEDOUT) {
            err = conc__fail(CONC_EAUTH, "%s: '%s': the handshake failed: "
                             "no answer within the timeout (%g s)", fn, addr,
                             timeout);
            break;
        }
        if (err != 0) {
            err = conc__fail_sys(err, "%s: ppoll", fn);
            break;
        }
    }
    explicit_bzero(&hs, sizeof hs);
    return err;
}

int conc_client_connect(conc_conn **out, const char *address,
                        const conc_client_opts *opts)
{
    static const char fn[] = "conc_client_connect";
    if (out != NULL) {
        *out = NULL;
    }
    conc_client_opts o = { 0 };
    if (opts != NULL) {
        o = *opts;
    }
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    if (o.authkey == NULL && o.authkey_len > 0) {
        return conc__fail(CONC_EINVAL, "%s: authkey is NULL and authkey_len "
                          "is %zu", fn, o.authkey_len);
    }
    double timeout = conc__timeout_opt(o.timeout, CONC_FOREVER);
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return conc__fail(CONC_EINVAL, "%s: timeout %g: it must be >= 0 or "
                          "CONC_FOREVER", fn, timeout);
    }
    sock_addr a;
    int err = parse_address(fn, address, false, &a);
    if (err != 0) {
        return err;
    }
    int fd = conc__os_socket(a.family,
                             SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return conc__fail_sys(CONC_ESYS, "%s: socket for '%s'", fn, address);
    }
    err = connect_fd(fd, &a, address, &dl, timeout);
    if (err != 0) {
        goto fail;
    }
    /* pipe.c expects a blocking descriptor (see its "Transport"); the
     * handshake reads and writes with MSG_DONTWAIT either way. */
    if (conc__os_set_nonblock(fd, false) != 0) {
        err = conc__fail_sys(CONC_ESYS, "%s: fcntl(O_NONBLOCK)", fn);
        goto fail;
    }
    if (a.tcp) {
        int one = 1; /* see "Descriptors" above; failure only costs time */
        conc__os_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (o.authkey_len > 0) {
        err = client_handshake(fd, o.authkey, o.authkey_len, address, &dl,
                               timeout);
        if (err != 0) {
            goto fail;
        }
    }
    *out = conc__conn_from_fd(fd, o.max_message_bytes);
    if (*out == NULL) {
        err = conc__fail(CONC_ENOMEM, "%s: no memory for the connection", fn);
        goto fail;
    }
    return 0;

fail: {
    int keep = errno;
    close(fd);
    errno = keep;
    return err;
}
}
