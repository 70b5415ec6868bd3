/* os_linux_net.c - the Linux side of the platform contract's sockets
 * (os.h, "sockets"): what the network backends (.url) use to reach their
 * servers.  A file of its own beside os_linux.c so that the socket calls
 * stay in the platform layer without crowding the futex and /proc code.
 *
 * Every socket is made non-blocking and close-on-exec in the socket(2)
 * call itself, so no exec'd child ever inherits a connection and no call
 * blocks past its deadline: connect waits in poll(2) for POLLOUT, then
 * reads SO_ERROR.  Deadlines are absolute CLOCK_MONOTONIC nanoseconds, so
 * a poll cut short by a signal resumes with what is left.  send(2) always
 * carries MSG_NOSIGNAL: a server that closed the connection is EPIPE for
 * the caller, never a SIGPIPE that kills a program which did not ignore
 * it.
 */
#include "os.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    for (;;) {
        int ms = -1;
        if (until_ns != UINT64_MAX) {
            uint64_t now = conc__now_ns();
            if (now >= until_ns) {
                ms = 0;
            } else {
                uint64_t left = (until_ns - now + 999999u) / 1000000u;
                ms = left > 60000u ? 60000 : (int)left;
            }
        }
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, ms);
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

int conc__os_connect(const conc__sockaddr *a, uint64_t until_ns)
{
    if (conc__fault_hit()) {
        errno = ECONNREFUSED;
        return -1;
    }
    int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    0);
    if (fd < 0) {
        return -1;
    }
    int err = 0;
    if (connect(fd, (const struct sockaddr *)(const void *)a->bytes,
                a->len) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            goto fail;
        }
        short rev = 0;
        int r = conc__os_wait_fd(fd, POLLOUT, until_ns, &rev);
        if (r <= 0) {
            if (r == 0) {
                errno = ETIMEDOUT;
            }
            goto fail;
        }
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            goto fail;
        }
        if (err != 0) {
            errno = err;
            goto fail;
        }
    }
    if (a->family != AF_UNIX) {
        int one = 1;
        /* Commands are written whole, one write per pipeline: Nagle
         * could only delay a request behind a delayed ACK. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
    return fd;

fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

ssize_t conc__os_send(int fd, const void *buf, size_t len)
{
    if (conc__fault_hit()) {
        errno = ECONNRESET;
        return -1;
    }
    for (;;) {
        ssize_t r = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR) {
            return r;
        }
    }
}

ssize_t conc__os_recv(int fd, void *buf, size_t len)
{
    if (conc__fault_hit()) {
        errno = ECONNRESET;
        return -1;
    }
    for (;;) {
        ssize_t r = recv(fd, buf, len, MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR) {
            return r;
        }
    }
}

void conc__os_close(int fd)
{
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
}
