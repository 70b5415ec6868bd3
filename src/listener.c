/* listener.c - conc_listener and conc_client_connect: Python's
 * multiprocessing.connection Listener and Client over Unix and TCP stream
 * sockets, with its authentication handshake, wire-compatible with
 * CPython (3.11's HMAC-MD5 challenge and 3.12's "{digest}" form).
 *
 * Addresses.  One string names a socket (conc/pipe.h lists the forms):
 * a filesystem Unix socket, a Linux abstract one, or TCP over IPv4/IPv6.
 * Host names other than "localhost" are refused rather than resolved:
 * getaddrinfo() may block on DNS for longer than any timeout we were
 * given, and cannot be cancelled.  A NULL address makes a fresh private
 * directory (mkdtemp, mode 0700) with the socket inside, as Python's
 * Listener() does with tempfile; both go when the listener closes.
 *
 * Ownership of the socket file.  The listener records the inode it bound
 * and the pid that bound it: only that process unlinks the file, and only
 * while the path still names that inode.  So a forked child that frees
 * its inherited copy does not pull the socket from under its parent
 * (Python's util.Finalize has the same pid check), and a file someone
 * else put at the path later is left alone.
 *
 * Accept and close.  The listening socket is non-blocking; accept waits
 * in poll(2) on it and on an eventfd.  conc_listener_close() marks the
 * listener closed and writes the eventfd, which wakes every thread
 * blocked in accept (they return CONC_ECLOSED).  The descriptors are only
 * closed once no accept is using them (users, under lock): closing a
 * descriptor another thread is polling would let the number be reused by
 * an unrelated open() and the waiter would then poll a stranger's file.
 * shutdown(2) of a listening socket was rejected as the wake-up: what it
 * does to a waiting accept differs between AF_UNIX and TCP.
 *
 * Handshake.  CPython's challenge/response, both roles on both sides:
 * Listener.accept() delivers a challenge and then answers one; Client
 * answers, then delivers.  Each message is one send_bytes frame (4-byte
 * big-endian length + bytes).  The deliverer sends "#CHALLENGE#" and a
 * nonce; the answerer replies with an HMAC of the nonce under the shared
 * key; the deliverer replies "#WELCOME#" or "#FAILURE#" (the latter sent
 * before giving up, as Python does).  We deliver the legacy challenge, a
 * 20-byte nonce with no prefix, to which every Python 3 Client answers
 * with a raw 16-byte HMAC-MD5 (3.12+ recognise the legacy length and
 * answer in the legacy form).  As the answerer we accept both forms: a
 * 20-byte nonce gets the raw HMAC-MD5; a "{name}" prefixed one (Python
 * 3.12+ sends "{sha256}" + 40 bytes) gets "{name}" + HMAC-name computed
 * over the whole message, prefix included, so that a man in the middle
 * cannot downgrade the digest.  We know "md5" and "sha256"; other names
 * Python allows (sha384, sha3_*) fail the handshake.  As the verifier we
 * accept a raw 16-byte HMAC-MD5 and "{md5}"/"{sha256}" prefixed replies.
 *
 * The handshake runs on the raw socket before it becomes a conc_conn,
 * with its own little frame reader that refuses any message over 256
 * bytes before reading it (Python's recv_bytes(256)): a hostile peer
 * cannot make us allocate, nor make us read past the handshake into the
 * caller's first message.  In accept it is bounded by the accept
 * deadline and by HS_LIMIT seconds (so a silent client cannot hold the
 * listener), and it also watches the eventfd (close wakes it).  Any
 * failure (wrong key, garbage, end of file, time out) closes that
 * connection: accept returns CONC_EAUTH and the listener goes on;
 * conc_client_connect returns CONC_EAUTH.
 *
 * Connections.  An accepted or connected socket is handed to pipe.c
 * (conc__conn_from_fd) in blocking mode, close-on-exec: from then on it
 * is an ordinary conc_conn.  TCP sockets get TCP_NODELAY: libconc writes
 * each frame with one sendmsg(), so Nagle's algorithm could only delay a
 * reply behind a delayed ACK, never save a packet.
 *
 * Locks.  lock guards users, fd and wake (closing them); closed is an
 * atomic flag also read without the lock by waiting accepts.  Everything
 * else is set at creation.  Close, fileno and any number of accepts may
 * run in different threads; free must not race with anything.
 */
#include "conc_int.h"
#include "digest.h"
#include "pipe_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The longest handshake message we read (Python: recv_bytes(256)). */
#define HS_MAX 256
/* The most seconds one accepted connection may spend in the handshake. */
#define HS_LIMIT 20.0
/* Our challenge's nonce length (Python 3.11's MESSAGE_LENGTH, and the
 * length 3.12+ recognise as the legacy, unprefixed protocol). */
#define NONCE_LEN 20
/* The longest digest name CPython allows ("sha3_384"): the '}' closing a
 * prefix must come within this many bytes of the '{'. */
#define MAX_DIGEST_NAME 8

static const char CHALLENGE[] = "#CHALLENGE#";
static const char WELCOME[] = "#WELCOME#";
static const char FAILURE[] = "#FAILURE#";
#define CHALLENGE_LEN (sizeof CHALLENGE - 1)
#define WELCOME_LEN (sizeof WELCOME - 1)
#define FAILURE_LEN (sizeof FAILURE - 1)

struct conc_listener {
    pthread_mutex_t lock;
    int fd;                 /* the listening socket; -1 once released */
    int wake;               /* eventfd written by close; -1 once released */
    int users;              /* accepts inside, using fd and wake */
    atomic_bool closed;

    bool tcp;
    char *address;          /* as conc_listener_address returns it */
    char *sock_path;        /* the socket file we bound, NULL if none */
    char *tmpdir;           /* the private directory we made, or NULL */
    dev_t sock_dev;         /* the bound file's identity, for the unlink */
    ino_t sock_ino;
    pid_t owner;            /* the process that bound (and unlinks) */

    unsigned char *key;     /* NULL: no authentication */
    size_t key_len;
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
static int parse_port(const char *s, unsigned *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5) {
        return CONC_EINVAL;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return CONC_EINVAL;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) {
        return CONC_EINVAL;
    }
    *port = v;
    return 0;
}

static int parse_unix(const char *name, bool abstract, sock_addr *a)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(name);
    /* An abstract name starts after a NUL byte and needs no terminator;
     * a path needs its terminating NUL inside sun_path. */
    if (n == 0 || n + 1 > sizeof un->sun_path) {
        return CONC_EINVAL;
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

static int parse_tcp(const char *s, size_t off, bool listener, sock_addr *a)
{
    const char *hp = s + off;
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_s;
    bool v6 = false;
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || close[1] != ':' ||
            (size_t)(close - hp - 1) >= sizeof host) {
            return CONC_EINVAL;
        }
        memcpy(host, hp + 1, (size_t)(close - hp - 1));
        host[close - hp - 1] = '\0';
        port_s = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(hp, ':');
        if (colon == NULL || memchr(hp, ':', (size_t)(colon - hp)) != NULL ||
            (size_t)(colon - hp) >= sizeof host) {
            return CONC_EINVAL; /* no port, or an IPv6 address without [] */
        }
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
        port_s = colon + 1;
    }
    unsigned port = 0;
    if (parse_port(port_s, &port) != 0 || (port == 0 && !listener)) {
        return CONC_EINVAL;
    }
    a->tcp = true;
    a->port_at = (size_t)(port_s - s);
    if (v6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
            return CONC_EINVAL;
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
        return CONC_EINVAL; /* not numeric: see "Addresses" above */
    }
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    a->family = AF_INET;
    a->len = sizeof *in;
    return 0;
}

/* Parses an address string (see conc/pipe.h).  0 or CONC_EINVAL. */
static int parse_address(const char *s, bool listener, sock_addr *a)
{
    memset(a, 0, sizeof *a);
    if (s == NULL || s[0] == '\0') {
        return CONC_EINVAL;
    }
    if (strncmp(s, "unix:", 5) == 0) {
        if (s[5] == '@') {
            return parse_unix(s + 6, true, a);
        }
        return parse_unix(s + 5, false, a);
    }
    if (s[0] == '/' || strncmp(s, "./", 2) == 0 || strncmp(s, "../", 3) == 0) {
        return parse_unix(s, false, a);
    }
    return parse_tcp(s, strncmp(s, "tcp:", 4) == 0 ? 4 : 0, listener, a);
}

/* ---- waiting ------------------------------------------------------------- */

/* Waits until fd has one of events, the listener's wake eventfd (-1:
 * none) is readable, or the deadline passes.  0 (fd ready, or in error:
 * the next call on it says which), CONC_ECLOSED (woken by close),
 * CONC_ETIMEDOUT, CONC_ESYS.  EINTR waits again with the time left. */
static int wait_fd(int fd, short events, int wake, const conc__deadline *dl)
{
    for (;;) {
        if (!dl->forever && !dl->once && conc__deadline_passed(dl)) {
            return CONC_ETIMEDOUT;
        }
        int ms = -1;
        if (dl->once) {
            ms = 0;
        } else if (!dl->forever) {
            /* Rounded up: waking a little early would only loop. */
            double left = ceil(conc__deadline_left(dl) * 1000.0);
            ms = left > 1e9 ? 1000000000 : (int)left;
        }
        struct pollfd p[2] = {
            { .fd = fd, .events = events, .revents = 0 },
            { .fd = wake, .events = POLLIN, .revents = 0 },
        };
        int r = poll(p, wake >= 0 ? 2 : 1, ms);
        if (r < 0 && errno != EINTR) {
            return CONC_ESYS;
        }
        if (r > 0 && p[1].revents != 0) {
            return CONC_ECLOSED;
        }
        if (r > 0) {
            return 0;
        }
        if (dl->once) {
            return CONC_ETIMEDOUT;
        }
    }
}

/* ---- the handshake ------------------------------------------------------- */

/* The handshake functions return 0, CONC_EAUTH (any failure of the
 * exchange: refused, malformed, end of file, time out, socket error) or
 * CONC_ECLOSED (the listener was closed meanwhile). */

/* Sends one frame (len <= HS_MAX) on the non-blocking-used socket. */
static int hs_send(int fd, int wake, const void *data, size_t len,
                   const conc__deadline *dl)
{
    unsigned char frame[4 + HS_MAX];
    frame[0] = (unsigned char)(len >> 24);
    frame[1] = (unsigned char)(len >> 16);
    frame[2] = (unsigned char)(len >> 8);
    frame[3] = (unsigned char)len;
    memcpy(frame + 4, data, len);
    size_t sent = 0;
    while (sent < len + 4) {
        ssize_t r = send(fd, frame + sent, len + 4 - sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0) {
            sent += (size_t)r;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return CONC_EAUTH; /* EPIPE, ECONNRESET: the peer is gone */
        }
        int err = wait_fd(fd, POLLOUT, wake, dl);
        if (err != 0) {
            return err == CONC_ECLOSED ? err : CONC_EAUTH;
        }
    }
    return 0;
}

/* Reads exactly n bytes. */
static int hs_read(int fd, int wake, unsigned char *p, size_t n,
                   const conc__deadline *dl)
{
    size_t have = 0;
    while (have < n) {
        ssize_t r = recv(fd, p + have, n - have, MSG_DONTWAIT);
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r == 0) {
            return CONC_EAUTH; /* end of file mid-handshake */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return CONC_EAUTH;
        }
        int err = wait_fd(fd, POLLIN, wake, dl);
        if (err != 0) {
            return err == CONC_ECLOSED ? err : CONC_EAUTH;
        }
    }
    return 0;
}

/* Receives one frame of at most HS_MAX bytes into buf; a longer one (or
 * the 8-byte-length form, which only a message of 2 GiB uses) fails
 * without reading its payload. */
static int hs_recv(int fd, int wake, unsigned char *buf, size_t *len,
                   const conc__deadline *dl)
{
    unsigned char hdr[4];
    int err = hs_read(fd, wake, hdr, 4, dl);
    if (err != 0) {
        return err;
    }
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                 (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];
    if (n > HS_MAX) {
        return CONC_EAUTH;
    }
    *len = n;
    return hs_read(fd, wake, buf, n, dl);
}

/* Python's _get_digest_name_and_payload for a prefixed message: which of
 * our digests "{name}..." names, and where the rest starts.  false for no
 * prefix or a digest we do not have. */
static bool digest_prefix(const unsigned char *m, size_t len,
                          conc__digest_kind *kind, size_t *rest)
{
    if (len < 2 || m[0] != '{') {
        return false;
    }
    /* Python: message.find(b'}', 1, _MAX_DIGEST_LEN + 2). */
    size_t end = len < MAX_DIGEST_NAME + 2 ? len : MAX_DIGEST_NAME + 2;
    for (size_t i = 1; i < end; i++) {
        if (m[i] != '}') {
            continue;
        }
        if (i - 1 == 3 && memcmp(m + 1, "md5", 3) == 0) {
            *kind = CONC__MD5;
        } else if (i - 1 == 6 && memcmp(m + 1, "sha256", 6) == 0) {
            *kind = CONC__SHA256;
        } else {
            return false;
        }
        *rest = i + 1;
        return true;
    }
    return false;
}

/* Whether response is a right answer to our challenge nonce. */
static bool verify_response(const unsigned char *key, size_t key_len,
                            const unsigned char *nonce, size_t nonce_len,
                            const unsigned char *resp, size_t resp_len)
{
    conc__digest_kind kind = CONC__MD5;
    const unsigned char *mac = resp;
    size_t mac_len = resp_len;
    /* Python 3.12's rule: a 16- or 20-byte reply is the legacy raw
     * HMAC-MD5 (a 20-byte one then fails on its length), anything else
     * must carry a digest prefix. */
    if (resp_len != 16 && resp_len != 20) {
        size_t rest = 0;
        if (!digest_prefix(resp, resp_len, &kind, &rest)) {
            return false;
        }
        mac = resp + rest;
        mac_len = resp_len - rest;
    }
    if (mac_len != conc__digest_len(kind)) {
        return false;
    }
    unsigned char want[CONC__DIGEST_MAX];
    conc__hmac(kind, key, key_len, nonce, nonce_len, want);
    return conc__digest_equal(want, mac, mac_len);
}

/* Python's deliver_challenge: send a challenge, check the answer, say
 * WELCOME or FAILURE. */
static int deliver_challenge(int fd, int wake, const unsigned char *key,
                             size_t key_len, const conc__deadline *dl)
{
    unsigned char msg[CHALLENGE_LEN + NONCE_LEN];
    memcpy(msg, CHALLENGE, CHALLENGE_LEN);
    unsigned char *nonce = msg + CHALLENGE_LEN;
    if (conc__os_random(nonce, NONCE_LEN) != 0) {
        return CONC_EAUTH;
    }
    int err = hs_send(fd, wake, msg, sizeof msg, dl);
    if (err != 0) {
        return err;
    }
    unsigned char resp[HS_MAX];
    size_t resp_len = 0;
    err = hs_recv(fd, wake, resp, &resp_len, dl);
    if (err != 0) {
        return err;
    }
    if (!verify_response(key, key_len, nonce, NONCE_LEN, resp, resp_len)) {
        /* Tell the peer before hanging up, as Python does (its answerer
         * then raises AuthenticationError instead of seeing EOFError).
         * Whether this send works changes nothing. */
        hs_send(fd, wake, FAILURE, FAILURE_LEN, dl);
        return CONC_EAUTH;
    }
    return hs_send(fd, wake, WELCOME, WELCOME_LEN, dl);
}

/* Python's answer_challenge: receive a challenge, answer it, expect
 * WELCOME. */
static int answer_challenge(int fd, int wake, const unsigned char *key,
                            size_t key_len, const conc__deadline *dl)
{
    unsigned char msg[HS_MAX];
    size_t len = 0;
    int err = hs_recv(fd, wake, msg, &len, dl);
    if (err != 0) {
        return err;
    }
    if (len < CHALLENGE_LEN || memcmp(msg, CHALLENGE, CHALLENGE_LEN) != 0) {
        return CONC_EAUTH;
    }
    const unsigned char *m = msg + CHALLENGE_LEN;
    size_t mlen = len - CHALLENGE_LEN;
    if (mlen < NONCE_LEN) {
        return CONC_EAUTH; /* Python 3.12: "challenge too short" */
    }
    /* "{sha256}" is the longest prefix we write. */
    unsigned char resp[8 + CONC__DIGEST_MAX];
    size_t resp_len = 0;
    conc__digest_kind kind = CONC__MD5;
    size_t rest = 0;
    if (mlen == NONCE_LEN) {
        /* The legacy challenge (Python's legacy lengths are 16 and 20;
         * 16 is below the minimum checked above): a raw HMAC-MD5 of the
         * nonce. */
        conc__hmac(CONC__MD5, key, key_len, m, mlen, resp);
        resp_len = CONC__MD5_LEN;
    } else if (digest_prefix(m, mlen, &kind, &rest)) {
        /* "{name}" + HMAC-name of the whole message, prefix included:
         * the first rest bytes of m are exactly "{name}". */
        memcpy(resp, m, rest);
        conc__hmac(kind, key, key_len, m, mlen, resp + rest);
        resp_len = rest + conc__digest_len(kind);
    } else {
        return CONC_EAUTH; /* a digest we lack, or no prefix at all */
    }
    err = hs_send(fd, wake, resp, resp_len, dl);
    if (err != 0) {
        return err;
    }
    unsigned char reply[HS_MAX];
    size_t reply_len = 0;
    err = hs_recv(fd, wake, reply, &reply_len, dl);
    if (err != 0) {
        return err;
    }
    if (reply_len != WELCOME_LEN || memcmp(reply, WELCOME, WELCOME_LEN) != 0) {
        return CONC_EAUTH;
    }
    return 0;
}

/* ---- the listener -------------------------------------------------------- */

/* Closes the descriptors; lock held (or no other user possible). */
static void release_fds(conc_listener *l)
{
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (l->wake >= 0) {
        close(l->wake);
        l->wake = -1;
    }
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
        return l->address == NULL ? CONC_ENOMEM : 0;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) != 0) {
        return CONC_ESYS;
    }
    unsigned port = ntohs(ss.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&ss)->sin6_port
                              : ((struct sockaddr_in *)&ss)->sin_port);
    size_t n = a->port_at + 6;
    l->address = conc__malloc(n);
    if (l->address == NULL) {
        return CONC_ENOMEM;
    }
    snprintf(l->address, n, "%.*s%u", (int)a->port_at, given, port);
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
        return CONC_ENOMEM;
    }
    memcpy(l->tmpdir, base, blen);
    memcpy(l->tmpdir + blen, tail, sizeof tail);
    if (mkdtemp(l->tmpdir) == NULL) {
        int keep = errno;
        free(l->tmpdir);
        l->tmpdir = NULL;
        errno = keep;
        return CONC_ESYS;
    }
    size_t dlen = strlen(l->tmpdir);
    *path = conc__malloc(dlen + sizeof sock);
    if (*path == NULL) {
        return CONC_ENOMEM;
    }
    memcpy(*path, l->tmpdir, dlen);
    memcpy(*path + dlen, sock, sizeof sock);
    return 0;
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
    if (out == NULL || o.backlog < 0 ||
        (o.authkey == NULL && o.authkey_len > 0)) {
        return CONC_EINVAL;
    }
    int err = 0;
    char *tmp_path = NULL;
    sock_addr a;
    conc_listener *l = conc__calloc(1, sizeof *l);
    if (l == NULL) {
        return CONC_ENOMEM;
    }
    l->fd = -1;
    l->wake = -1;
    l->owner = getpid();
    pthread_mutex_init(&l->lock, NULL);
    atomic_init(&l->closed, false);

    if (address == NULL) {
        err = make_tmp_path(l, &tmp_path);
        if (err != 0) {
            goto fail;
        }
        address = tmp_path;
    }
    err = parse_address(address, true, &a);
    if (err != 0) {
        goto fail;
    }
    l->tcp = a.tcp;
    if (o.authkey_len > 0) {
        l->key = conc__malloc(o.authkey_len);
        if (l->key == NULL) {
            err = CONC_ENOMEM;
            goto fail;
        }
        memcpy(l->key, o.authkey, o.authkey_len);
        l->key_len = o.authkey_len;
    }
    /* Non-blocking: accept waits in poll, where close can wake it, and
     * a connection another thread took first is EAGAIN, not a hang. */
    l->fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0) {
        err = CONC_ESYS;
        goto fail;
    }
    if (a.tcp) {
        /* As Python's SocketListener: a restarted server can bind its port
         * again while old connections sit in TIME_WAIT. */
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (bind(l->fd, (struct sockaddr *)&a.ss, a.len) != 0) {
        err = CONC_ESYS;
        goto fail;
    }
    if (a.path != NULL) {
        struct stat st;
        l->sock_path = conc__strdup(a.path);
        if (l->sock_path == NULL || lstat(a.path, &st) != 0) {
            /* Without the path or its identity we cannot remove the file
             * safely later: remove it now and fail. */
            err = l->sock_path == NULL ? CONC_ENOMEM : CONC_ESYS;
            int keep = errno;
            unlink(a.path);
            errno = keep;
            goto fail;
        }
        l->sock_dev = st.st_dev;
        l->sock_ino = st.st_ino;
    }
    if (listen(l->fd, o.backlog == 0 ? 128 : o.backlog) != 0) {
        err = CONC_ESYS;
        goto fail;
    }
    l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake < 0) {
        err = CONC_ESYS;
        goto fail;
    }
    err = format_address(l, address, &a);
    if (err != 0) {
        goto fail;
    }
    free(tmp_path);
    *out = l;
    return 0;

fail: {
    int keep = errno;
    free(tmp_path);
    release_fds(l);
    remove_files(l);
    if (l->key != NULL) {
        explicit_bzero(l->key, l->key_len);
        free(l->key);
    }
    free(l->address);
    pthread_mutex_destroy(&l->lock);
    free(l);
    errno = keep;
    return err;
}
}

/* Waits for and accepts one connection. */
static int accept_fd(conc_listener *l, int *fd, const conc__deadline *dl)
{
    for (;;) {
        /* Pairs with the release store in conc_listener_close. */
        if (atomic_load_explicit(&l->closed, memory_order_acquire)) {
            return CONC_ECLOSED;
        }
        int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) {
            *fd = c; /* blocking: accept4 does not pass O_NONBLOCK on */
            return 0;
        }
        if (errno == EINTR || errno == ECONNABORTED) {
            continue; /* a signal, or a client that gave up in the queue */
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return CONC_ESYS; /* EMFILE, ENFILE, ENOBUFS... */
        }
        int err = wait_fd(l->fd, POLLIN, l->wake, dl);
        if (err != 0) {
            return err;
        }
    }
}

int conc_listener_accept(conc_listener *l, conc_conn **out, double timeout)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (l == NULL || out == NULL) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    pthread_mutex_lock(&l->lock);
    if (atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        pthread_mutex_unlock(&l->lock);
        return CONC_ECLOSED;
    }
    l->users++;
    pthread_mutex_unlock(&l->lock);

    int fd = -1;
    err = accept_fd(l, &fd, &dl);
    if (err == 0 && l->tcp) {
        int one = 1; /* see "Connections" above; failure only costs time */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (err == 0 && l->key != NULL) {
        /* The handshake's own deadline: HS_LIMIT from now, or the
         * caller's if sooner.  Timeout 0 asked only not to wait for a
         * connection; one that was waiting still gets its handshake. */
        conc__deadline hs;
        conc__deadline_init(&hs, HS_LIMIT);
        if (!dl.forever && !dl.once &&
            (dl.at.tv_sec < hs.at.tv_sec ||
             (dl.at.tv_sec == hs.at.tv_sec && dl.at.tv_nsec < hs.at.tv_nsec))) {
            hs = dl;
        }
        err = deliver_challenge(fd, l->wake, l->key, l->key_len, &hs);
        if (err == 0) {
            err = answer_challenge(fd, l->wake, l->key, l->key_len, &hs);
        }
        if (err != 0) {
            close(fd);
            fd = -1;
        }
    }
    if (err == 0) {
        *out = conc__conn_from_fd(fd, 0);
        if (*out == NULL) {
            close(fd);
            err = CONC_ENOMEM;
        }
    }

    int keep = errno;
    pthread_mutex_lock(&l->lock);
    l->users--;
    if (l->users == 0 &&
        atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        release_fds(l); /* close came while we were inside: our turn */
    }
    pthread_mutex_unlock(&l->lock);
    errno = keep;
    return err;
}

const char *conc_listener_address(const conc_listener *l)
{
    return l == NULL ? NULL : l->address;
}

int conc_listener_fileno(const conc_listener *l)
{
    if (l == NULL) {
        return CONC_EINVAL;
    }
    /* The lock only keeps us from reading fd while close releases it;
     * the handle is otherwise unchanged, hence the cast. */
    pthread_mutex_t *m = (pthread_mutex_t *)&l->lock;
    pthread_mutex_lock(m);
    int fd = atomic_load_explicit(&l->closed, memory_order_relaxed)
                 ? CONC_ECLOSED
                 : l->fd;
    pthread_mutex_unlock(m);
    return fd;
}

int conc_listener_close(conc_listener *l)
{
    if (l == NULL) {
        return CONC_EINVAL;
    }
    pthread_mutex_lock(&l->lock);
    if (!atomic_load_explicit(&l->closed, memory_order_relaxed)) {
        /* Release: an accept that sees closed set also sees the rest of
         * what close did.  Pairs with the acquire load in accept_fd. */
        atomic_store_explicit(&l->closed, true, memory_order_release);
        if (l->users > 0) {
            /* Wake every waiting accept: the eventfd stays readable (its
             * counter is never read), so all of them see it. */
            uint64_t one = 1;
            ssize_t r = write(l->wake, &one, sizeof one);
            (void)r; /* cannot fail: the counter is far from overflow */
        } else {
            release_fds(l);
        }
        /* As Python's Listener.close(): the address goes at once. */
        remove_files(l);
    }
    pthread_mutex_unlock(&l->lock);
    return 0;
}

void conc_listener_free(conc_listener *l)
{
    if (l == NULL) {
        return;
    }
    conc_listener_close(l);
    /* No accept can still be inside (free must not race), so the
     * descriptors are ours to close if close left them. */
    release_fds(l);
    if (l->key != NULL) {
        explicit_bzero(l->key, l->key_len);
        free(l->key);
    }
    free(l->address);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/* ---- the client ---------------------------------------------------------- */

/* Connects fd to a, waiting up to the deadline. */
static int connect_fd(int fd, const sock_addr *a, const conc__deadline *dl)
{
    for (;;) {
        if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
            return 0;
        }
        if (errno == EAGAIN && a->family == AF_UNIX) {
            /* The listener's queue is full (a blocking connect would wait
             * for room; the kernel offers no readiness event for it):
             * try again shortly, within the deadline. */
            if (conc__deadline_passed(dl)) {
                return CONC_ETIMEDOUT;
            }
            double left = conc__deadline_left(dl);
            struct timespec ts = { 0, 10000000L }; /* 10 ms */
            if (left < 0.01) {
                ts.tv_nsec = (long)(left * 1e9);
            }
            nanosleep(&ts, NULL);
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR) {
            return CONC_ESYS; /* ENOENT, ECONNREFUSED, ENETUNREACH... */
        }
        /* The connection goes on in the background (TCP; a signal does
         * not abort it either): wait for it to finish, then ask. */
        int err = wait_fd(fd, POLLOUT, -1, dl);
        if (err != 0) {
            return err;
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            return CONC_ESYS;
        }
        if (soerr != 0) {
            errno = soerr;
            return CONC_ESYS;
        }
        return 0;
    }
}

int conc_client_connect(conc_conn **out, const char *address,
                        const conc_client_opts *opts)
{
    if (out != NULL) {
        *out = NULL;
    }
    conc_client_opts o = { 0 };
    if (opts != NULL) {
        o = *opts;
    }
    if (out == NULL || (o.authkey == NULL && o.authkey_len > 0)) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    /* 0 in these options means no limit (the zero default), not "try
     * once": a connection cannot be made without waiting. */
    int err = conc__deadline_init(&dl, o.timeout == 0 ? CONC_FOREVER
                                                      : o.timeout);
    if (err != 0) {
        return err;
    }
    sock_addr a;
    err = parse_address(address, false, &a);
    if (err != 0) {
        return err;
    }
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return CONC_ESYS;
    }
    err = connect_fd(fd, &a, &dl);
    if (err != 0) {
        goto fail;
    }
    /* pipe.c expects a blocking descriptor (see its "Transport"). */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        err = CONC_ESYS;
        goto fail;
    }
    if (a.tcp) {
        int one = 1; /* see "Connections" above */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (o.authkey_len > 0) {
        err = answer_challenge(fd, -1, o.authkey, o.authkey_len, &dl);
        if (err == 0) {
            err = deliver_challenge(fd, -1, o.authkey, o.authkey_len, &dl);
        }
        if (err != 0) {
            err = CONC_EAUTH;
            goto fail;
        }
    }
    *out = conc__conn_from_fd(fd, 0);
    if (*out == NULL) {
        err = CONC_ENOMEM;
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
