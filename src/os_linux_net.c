/* os_linux_net.c - the sockets and descriptors half of the platform
 * contract (os.h): the system calls pipe.c and listener.c make, each
 * behind the fault seam so that the tests' fault loops can fail it.
 *
 * Each wrapper asks conc__fault_hit() first and, on a hit, fails as the
 * call itself can fail (-1 with an errno the caller handles as a real
 * failure: EIO, or EAGAIN for accept4 where EIO is not a documented
 * answer); otherwise it is the system call and nothing more.  None of
 * them retries EINTR: the callers do, each with what is left of its own
 * deadline.  The cost on the frame path (send, sendmsg, recv, ppoll) is
 * one relaxed atomic load and a call, against a system call of a
 * microsecond or more.
 *
 * Below them, the connections of the network backends (.url): name
 * resolution, a Unix socket address, a connect bounded by a deadline
 * (conc__os_connect_until, which conc__os_dial and the listener's
 * client use) and a wait for readiness (conc__os_wait_fd), made of
 * the wrappers above so that fault loops reach them too.  Every socket
 * is non-blocking and close-on-exec from the socket(2) call itself, so
 * no exec'd child inherits a connection and no call blocks past its
 * deadline; connect waits in ppoll for POLLOUT, then reads SO_ERROR.
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds, so a wait cut
 * short by a signal resumes with what is left.  The backends send with
 * MSG_NOSIGNAL: a server that closed the connection is EPIPE, never a
 * SIGPIPE that kills a program which did not ignore it.
 */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

/* The fault seam's answer for a call that fails with -1 and errno. */
#define FAULT(err_no)                                                        \
    do {                                                                     \
        if (conc__fault_hit()) {                                             \
            errno = (err_no);                                                \
            return -1;                                                       \
        }                                                                    \
    } while (0)

int conc__os_socket(int domain, int type, int protocol)
{
    FAULT(EIO);
    return socket(domain, type, protocol);
}

int conc__os_socketpair(int domain, int type, int protocol, int sv[2])
{
    FAULT(EIO);
    return socketpair(domain, type, protocol, sv);
}

int conc__os_bind(int fd, const struct sockaddr *addr, unsigned len)
{
    FAULT(EIO);
    return bind(fd, addr, len);
}

int conc__os_listen(int fd, int backlog)
{
    FAULT(EIO);
    return listen(fd, backlog);
}

int conc__os_accept4(int fd, struct sockaddr *addr, unsigned *len,
                     int flags)
{
    /* EIO is no answer accept4 gives; EMFILE is, and callers report it
     * as the failure it is. */
    FAULT(EMFILE);
    return accept4(fd, addr, len, flags);
}

int conc__os_connect(int fd, const struct sockaddr *addr, unsigned len)
{
    FAULT(EIO);
    return connect(fd, addr, len);
}

int conc__os_shutdown(int fd, int how)
{
    FAULT(EIO);
    return shutdown(fd, how);
}

int conc__os_setsockopt(int fd, int level, int name, const void *val,
                        unsigned len)
{
    FAULT(EIO);
    return setsockopt(fd, level, name, val, len);
}

int conc__os_getsockopt(int fd, int level, int name, void *val,
                        unsigned *len)
{
    FAULT(EIO);
    return getsockopt(fd, level, name, val, len);
}

int conc__os_getsockname(int fd, struct sockaddr *addr, unsigned *len)
{
    FAULT(EIO);
    return getsockname(fd, addr, len);
}

ssize_t conc__os_send(int fd, const void *buf, size_t len, int flags)
{
    FAULT(EIO);
    return send(fd, buf, len, flags);
}

ssize_t conc__os_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    FAULT(EIO);
    return sendmsg(fd, msg, flags);
}

ssize_t conc__os_recv(int fd, void *buf, size_t len, int flags)
{
    FAULT(EIO);
    return recv(fd, buf, len, flags);
}

int conc__os_ppoll(struct pollfd *fds, unsigned long n,
                   const struct timespec *ts)
{
    FAULT(EIO);
    return ppoll(fds, (nfds_t)n, ts, NULL);
}

int conc__os_set_nonblock(int fd, bool on)
{
    FAULT(EIO);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        return -1;
    }
    int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

int conc__os_eventfd(void)
{
    FAULT(EIO);
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

int conc__os_eventfd_post(int fd)
{
    FAULT(EIO);
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == (ssize_t)sizeof one ? 0 : -1;
}

int conc__os_eventfd_drain(int fd)
{
    FAULT(EIO);
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN) {
        return -1;
    }
    return 0;
}

int conc__os_epoll_create(void)
{
    FAULT(EIO);
    return epoll_create1(EPOLL_CLOEXEC);
}

int conc__os_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
    FAULT(EIO);
    return epoll_ctl(ep, op, fd, ev);
}

int conc__os_epoll_wait(int ep, struct epoll_event *evs, int max, int ms)
{
    FAULT(EIO);
    return epoll_wait(ep, evs, max, ms);
}

int conc__os_timerfd_create(void)
{
    FAULT(EIO);
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
}

int conc__os_timerfd_set(int fd, uint64_t at_ns)
{
    FAULT(EIO);
    struct itimerspec its = { 0 };
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000u);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
}

int conc__os_timerfd_drain(int fd)
{
    FAULT(EIO);
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN) {
        return -1;
    }
    return 0;
}

char *conc__os_mkdtemp(char *tmpl)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return NULL;
    }
    return mkdtemp(tmpl);
}

int conc__os_lstat(const char *path, struct stat *st)
{
    FAULT(EIO);
    return lstat(path, st);
}

/* ---- connections of the network backends -------------------------------- */

_Static_assert(sizeof(struct sockaddr_storage) <=
                   sizeof(((conc__sockaddr *)0)->bytes),
               "conc__sockaddr holds a sockaddr_storage");

int conc__os_resolve(const char *host, unsigned port, conc__sockaddr *out,
                     int max)
{
    if (conc__fault_hit()) {
        return EAI_FAIL;
    }
    char service[16];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_protocol = IPPROTO_TCP };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        return rc < 0 ? rc : -rc;
    }
    int n = 0;
    for (struct addrinfo *a = res; a != NULL && n < max; a = a->ai_next) {
        if (a->ai_addrlen > sizeof out[n].bytes) {
            continue;
        }
        memcpy(out[n].bytes, a->ai_addr, a->ai_addrlen);
        out[n].len = (unsigned)a->ai_addrlen;
        out[n].family = a->ai_family;
        n++;
    }
    freeaddrinfo(res);
    return n > 0 ? n : EAI_NONAME;
}

const char *conc__os_gai_text(int code)
{
    return gai_strerror(code);
}

int conc__os_unix_addr(const char *path, conc__sockaddr *out)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, n + 1);
    memset(out, 0, sizeof *out);
    memcpy(out->bytes, &sun, sizeof sun);
    out->len = (unsigned)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    out->family = AF_UNIX;
    return 0;
}

int conc__os_wait_fd(int fd, short events, uint64_t until_ns,
                     short *revents)
{
    for (;;) {
        struct timespec ts = { .tv_sec = 60 };
        if (until_ns != UINT64_MAX) {
            uint64_t now = conc__now_ns();
            uint64_t left = now >= until_ns ? 0 : until_ns - now;
            if (left < 60000000000u) {
                ts.tv_sec = (time_t)(left / 1000000000u);
                ts.tv_nsec = (long)(left % 1000000000u);
            }
        }
        struct pollfd p = { .fd = fd, .events = events };
        int r = conc__os_ppoll(&p, 1, &ts);
        if (r > 0) {
            *revents = p.revents;
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
        /* A signal, a slice of a long wait, or the time is up. */
        if (until_ns != UINT64_MAX && conc__now_ns() >= until_ns) {
            return 0;
        }
    }
}

int conc__os_connect_until(int fd, const struct sockaddr *addr,
                           unsigned len, uint64_t until_ns)
{
    for (;;) {
        if (conc__os_connect(fd, addr, len) == 0) {
            return 0;
        }
        if (errno == EAGAIN && addr->sa_family == AF_UNIX) {
            /* The listener's queue is full.  A blocking connect would
             * wait for room; a non-blocking one fails at once, and the
             * kernel offers no readiness event for room: try again every
             * 10 ms until the deadline.  Taking EAGAIN as final made a
             * stopped or overloaded server's full queue an immediate
             * failure, where the same server with room was a wait. */
            uint64_t now = conc__now_ns();
            if (now >= until_ns) {
                errno = ETIMEDOUT;
                return -1;
            }
            uint64_t nap = until_ns - now;
            if (nap > 10000000u) {
                nap = 10000000u;
            }
            struct timespec ts = { 0, (long)nap };
            nanosleep(&ts, NULL); /* a signal only makes it shorter */
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR) {
            return -1; /* ENOENT, ECONNREFUSED, ENETUNREACH... */
        }
        /* The connection goes on in the background (TCP; a signal does
         * not abort it either): wait for it to finish, then ask. */
        short rev = 0;
        int r = conc__os_wait_fd(fd, POLLOUT, until_ns, &rev);
        if (r <= 0) {
            if (r == 0) {
                errno = ETIMEDOUT;
            }
            return -1;
        }
        int err = 0;
        unsigned elen = sizeof err;
        if (conc__os_getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
            return -1;
        }
        if (err != 0) {
            errno = err;
            return -1;
        }
        return 0;
    }
}

int conc__os_dial(const conc__sockaddr *a, uint64_t until_ns)
{
    int fd = conc__os_socket(a->family,
                             SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    int err = 0;
    if (conc__os_connect_until(fd,
                               (const struct sockaddr *)(const void *)a->bytes,
                               a->len, until_ns) != 0) {
        goto fail;
    }
    if (a->family != AF_UNIX) {
        int one = 1;
        /* Commands are written whole, one write per pipeline: Nagle
         * could only delay a request behind a delayed ACK.  Neither call
         * fails on a connected TCP socket; if one did, the socket is not
         * what it should be, and the dial fails (as a fault loop wants
         * of every seam hit). */
        if (conc__os_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                                sizeof one) != 0 ||
            conc__os_setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one,
                                sizeof one) != 0) {
            goto fail;
        }
    }
    return fd;

fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

void conc__os_close(int fd)
{
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
}
