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
 */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
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
