/* redis_server.h - throwaway Redis servers for the tests of the Redis
 * backend (test_redis_*.c, test_examples_net.c): each test starts its own
 * redis-server on a free loopback port, with a Unix socket beside it, in
 * a fresh directory under /dev/shm, and stops it.  Nothing here assumes a
 * system service.
 *
 * Cleanup when a test fails: the server is a child of the test process,
 * started with PR_SET_PDEATHSIG = SIGKILL and in the test's process
 * group, so it dies with the test process (a CHECK failing calls _exit; a
 * deadline kills the group).  Its directory lives in the test's private
 * /dev/shm (harness.c), which vanishes with the test's keeper.
 *
 * Commands for assertions (INFO, CLIENT LIST, SET ...) go through a tiny
 * RESP client of its own (th_redis_cmd), so the tests need no hiredis.
 */
#ifndef CONC_TEST_REDIS_SERVER_H
#define CONC_TEST_REDIS_SERVER_H

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct th_redis {
    pid_t pid;
    int port;
    char dir[128];
    char url[256];      /* redis://[:pass@]127.0.0.1:PORT/0 */
    char sock[192];     /* DIR/redis.sock */
    char pass[64];      /* "" for none */
    char as_hgetall[32]; /* "" or the command renamed to HGETALL */
    bool aof;
} th_redis;

/* Whether libconc was built with its Redis backend (net.c). */
bool conc__net_backend_built(const char *scheme);
/* Round trips this process made to servers so far (net.c). */
uint64_t conc__net_round_trips(void);

/* Starts tests/SCRIPT (a Python 3 program beside this file) with the
 * arguments a1 and a2 (a2 may be NULL) in the background: a fake or a
 * proxy server that binds a free loopback port and writes it, then
 * serves until killed (th_py_server_stop).  Returns the port, or 0 when
 * it did not start (no python3); *pid is its pid either way. */
static inline int th_py_server(const char *script, const char *a1,
                               const char *a2, pid_t *pid)
{
    char path[1024];
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof path, "%.*s/%s", slash ? (int)(slash - __FILE__) : 1,
             slash ? __FILE__ : ".", script);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    *pid = fork();
    CHECK(*pid >= 0);
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        close(fds[0]);
        /* -B: no __pycache__ beside the scripts in the source tree */
        execlp("python3", "python3", "-B", path, a1, a2, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[32] = "";
    struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
    ssize_t n = poll(&pfd, 1, 20000) == 1 ? read(fds[0], line, 31) : -1;
    close(fds[0]);
    return n > 0 ? atoi(line) : 0;
}

static inline void th_py_server_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

static inline int th_redis_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        th_fail(__FILE__, __LINE__, "no free port: %s", strerror(errno));
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* A connected socket to the server, or -1. */
static inline int th_redis_connect(const th_redis *r)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)r->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
    }
    if (fd >= 0) {
        close(fd);
    }
    return -1;
}

/* Reads one RESP reply from fd and appends it to *out as text: strings
 * as they are, integers in decimal, errors as "-ERR...", nil as
 * "(nil)", arrays as their elements each followed by '\n'.  false on
 * a read error. */
static inline bool th_resp_read(int fd, char **out, size_t *len, size_t *cap)
{
    char line[512];
    size_t n = 0;
    for (;;) {
        char ch;
        if (read(fd, &ch, 1) != 1) {
            return false;
        }
        if (ch == '\n') {
            break;
        }
        if (ch != '\r' && n + 1 < sizeof line) {
            line[n++] = ch;
        }
    }
    line[n] = '\0';
    char *text = NULL;
    size_t tlen = 0;
    if (line[0] == '*') {
        long k = strtol(line + 1, NULL, 10);
        for (long i = 0; i < k; i++) {
            if (!th_resp_read(fd, out, len, cap)) {
                return false;
            }
            text = "\n";
            tlen = 1;
            while (*len + tlen + 1 > *cap) {
                *cap *= 2;
                *out = realloc(*out, *cap);
            }
            memcpy(*out + *len, text, tlen);
            *len += tlen;
            (*out)[*len] = '\0';
        }
        return true;
    }
    char *bulk = NULL;
    if (line[0] == '$') {
        long k = strtol(line + 1, NULL, 10);
        if (k < 0) {
            text = "(nil)";
            tlen = 5;
        } else {
            bulk = malloc((size_t)k + 2);
            size_t got = 0;
            while (got < (size_t)k + 2) {
                ssize_t m = read(fd, bulk + got, (size_t)k + 2 - got);
                if (m <= 0) {
                    free(bulk);
                    return false;
                }
                got += (size_t)m;
            }
            text = bulk;
            tlen = (size_t)k;
        }
    } else if (line[0] == '-') {
        text = line;
        tlen = n;
    } else {
        text = line + 1;
        tlen = n - 1;
    }
    while (*len + tlen + 1 > *cap) {
        *cap *= 2;
        *out = realloc(*out, *cap);
    }
    memcpy(*out + *len, text, tlen);
    *len += tlen;
    (*out)[*len] = '\0';
    free(bulk);
    return true;
}

/* Runs one command (arguments as strings) and returns its reply as text
 * (heap; the caller frees), or NULL when the server cannot be reached. */
static inline char *th_redis_cmdv(const th_redis *r, int argc, const char **argv)
{
    int fd = th_redis_connect(r);
    if (fd < 0) {
        return NULL;
    }
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    for (int pass = r->pass[0] ? 0 : 1; pass < 2; pass++) {
        const char *auth[2] = { "AUTH", r->pass };
        const char **av = pass == 0 ? auth : argv;
        int ac = pass == 0 ? 2 : argc;
        size_t bl = 32;
        for (int i = 0; i < ac; i++) {
            bl += strlen(av[i]) + 32;
        }
        char *b = malloc(bl);
        int o = snprintf(b, bl, "*%d\r\n", ac);
        for (int i = 0; i < ac; i++) {
            o += snprintf(b + o, bl - (size_t)o, "$%zu\r\n%s\r\n",
                          strlen(av[i]), av[i]);
        }
        bool ok = write(fd, b, (size_t)o) == o;
        free(b);
        len = 0;
        if (!ok || !th_resp_read(fd, &out, &len, &cap)) {
            close(fd);
            free(out);
            return NULL;
        }
    }
    close(fd);
    return out;
}

/* th_redis_cmd(r, "SET", "k", "v", NULL) */
static inline char *th_redis_cmd(const th_redis *r, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, r);
    for (const char *a; argc < 32 && (a = va_arg(ap, const char *)) != NULL;) {
        argv[argc++] = a;
    }
    va_end(ap);
    return th_redis_cmdv(r, argc, argv);
}

/* The reply as a number (fails the test when it is not one). */
static inline long long th_redis_num(const th_redis *r, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, r);
    for (const char *a; argc < 32 && (a = va_arg(ap, const char *)) != NULL;) {
        argv[argc++] = a;
    }
    va_end(ap);
    char *s = th_redis_cmdv(r, argc, argv);
    if (s == NULL) {
        th_fail(__FILE__, __LINE__, "%s: server unreachable", argv[0]);
    }
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s) {
        v = strcmp(s, "(nil)") == 0 ? 0 : -1;
        if (v != 0) {
            th_fail(__FILE__, __LINE__, "%s: not a number: %s", argv[0], s);
        }
    }
    free(s);
    return v;
}

/* Calls of a command so far, from INFO commandstats ("evalsha", ...). */
static inline long long th_redis_calls(const th_redis *r, const char *cmd)
{
    char *s = th_redis_cmd(r, "INFO", "commandstats", NULL);
    if (s == NULL) {
        th_fail(__FILE__, __LINE__, "INFO: server unreachable");
    }
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(s, key);
    long long v = p != NULL ? strtoll(p + strlen(key), NULL, 10) : 0;
    free(s);
    return v;
}

static inline void th_redis_spawn(th_redis *r)
{
    char port[16], sockp[200], dir[200], log[220];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(sockp, sizeof sockp, "%s", r->sock);
    snprintf(dir, sizeof dir, "%s", r->dir);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    const char *argv[40] = { "redis-server", "--bind", "127.0.0.1",
                             "--port", port, "--unixsocket", sockp,
                             "--unixsocketperm", "700", "--save", "",
                             "--appendonly", r->aof ? "yes" : "no",
                             "--appendfsync", "everysec", "--dir", dir,
                             "--logfile", log, "--daemonize", "no" };
    int argc = 21;
    if (r->pass[0]) {
        argv[argc++] = "--requirepass";
        argv[argc++] = r->pass;
    }
    if (r->as_hgetall[0]) {
        /* A server that lies: another command answers HGETALL. */
        argv[argc++] = "--rename-command";
        argv[argc++] = "HGETALL";
        argv[argc++] = "conc-test-real-hgetall";
        argv[argc++] = "--rename-command";
        argv[argc++] = r->as_hgetall;
        argv[argc++] = "HGETALL";
    }
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        th_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    r->pid = pid;
}

/* Waits until the server answers PING (or has died): true when ready. */
static inline bool th_redis_ready(th_redis *r, double timeout)
{
    double end = th_now() + timeout;
    while (th_now() < end) {
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            r->pid = 0;
            return false;
        }
        char *s = th_redis_cmd(r, "PING", NULL);
        bool ok = s != NULL && strcmp(s, "PONG") == 0;
        free(s);
        if (ok) {
            return true;
        }
        th_sleep(0.005);
    }
    return false;
}

/* Starts a server.  opts: NULL, or a string with "aof" (appendonly yes)
 * and/or "pass=SECRET" (requirepass) and/or "hgetall=CMD" (the command
 * CMD answers to the name HGETALL: a server whose HGETALL answers are
 * not what Redis's are). */
static inline void th_redis_start(th_redis *r, const char *opts)
{
    if (access("/usr/bin/redis-server", X_OK) != 0 &&
        access("/usr/local/bin/redis-server", X_OK) != 0) {
        th_fail(__FILE__, __LINE__, "redis-server is not installed "
                "(scripts/deps.sh installs it)");
    }
    memset(r, 0, sizeof *r);
    r->aof = opts != NULL && strstr(opts, "aof") != NULL;
    const char *pw = opts != NULL ? strstr(opts, "pass=") : NULL;
    if (pw != NULL) {
        snprintf(r->pass, sizeof r->pass, "%.*s", (int)strcspn(pw + 5, " "),
                 pw + 5);
    }
    const char *hg = opts != NULL ? strstr(opts, "hgetall=") : NULL;
    if (hg != NULL) {
        snprintf(r->as_hgetall, sizeof r->as_hgetall, "%.*s",
                 (int)strcspn(hg + 8, " "), hg + 8);
    }
    snprintf(r->dir, sizeof r->dir, "/dev/shm/conc-redis-XXXXXX");
    if (mkdtemp(r->dir) == NULL) {
        snprintf(r->dir, sizeof r->dir, "/tmp/conc-redis-XXXXXX");
        if (mkdtemp(r->dir) == NULL) {
            th_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
        }
    }
    snprintf(r->sock, sizeof r->sock, "%s/redis.sock", r->dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = th_redis_free_port();
        th_redis_spawn(r);
        if (th_redis_ready(r, 10.0)) {
            if (r->pass[0]) {
                snprintf(r->url, sizeof r->url, "redis://:%s@127.0.0.1:%d/0",
                         r->pass, r->port);
            } else {
                snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0",
                         r->port);
            }
            return;
        }
        if (r->pid > 0) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, NULL, 0);
            r->pid = 0;
        }
    }
    th_fail(__FILE__, __LINE__, "redis-server did not start (see %s)",
            r->dir);
}

static inline void th_redis_signal(const th_redis *r, int sig)
{
    if (r->pid > 0) {
        kill(r->pid, sig);
    }
}

/* Kills the server (SIGKILL) and reaps it; its directory stays. */
static inline void th_redis_kill(th_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Starts the server again on the same port and directory (with AOF it
 * loads what it had). */
static inline void th_redis_restart(th_redis *r)
{
    th_redis_kill(r);
    for (int i = 0; i < 200; i++) {
        th_redis_spawn(r);
        if (th_redis_ready(r, 10.0)) {
            return;
        }
        th_redis_kill(r);
        th_sleep(0.05); /* the port may linger a moment */
    }
    th_fail(__FILE__, __LINE__, "redis-server did not restart");
}

static inline void th_rm_rf(const char *dir)
{
    char *argv[] = { "/bin/rm", "-rf", (char *)dir, NULL };
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid > 0) {
        waitpid(pid, NULL, 0);
    }
}

/* Stops the server and removes its directory. */
static inline void th_redis_stop(th_redis *r)
{
    th_redis_signal(r, SIGCONT);
    th_redis_kill(r);
    if (r->dir[0]) {
        th_rm_rf(r->dir);
        r->dir[0] = '\0';
    }
}

/* r->url with "/NAME" appended (a conc_X_open URL), in a static buffer. */
static inline const char *th_redis_url_of(const th_redis *r, const char *name)
{
    static char u[320];
    snprintf(u, sizeof u, "%s/%s", r->url, name);
    return u;
}

#endif
