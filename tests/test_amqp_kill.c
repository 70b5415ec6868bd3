/* test_amqp_kill.c - conc_queue on RabbitMQ when things die: consumers
 * SIGKILLed at random instants lose nothing (duplicates at most one per
 * kill); a frozen broker (SIGSTOP) makes every call return in time with
 * CONC_ETIMEDOUT (CONC_EEMPTY for a get: nothing came), and the calls
 * after SIGCONT work; a broker restarted mid-stream is reconnected to by
 * the next call, and every put that returned 0 is still there.  A get
 * that must connect to a broker that refuses connections returns
 * CONC_ENET, and one that must connect to a broker that does not answer
 * returns CONC_ETIMEDOUT after net_timeout, CONC_FOREVER or not (a relay
 * stands for the broker there, so the shared one is never at stake).
 */
#include "amqp_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define NEED_AMQP()                                                          \
    do {                                                                     \
        if (!conc__net_backend_built("amqp")) {                              \
            return;                                                          \
        }                                                                    \
    } while (0)

enum { KN = 1200, KCONS = 3 };

typedef struct shared {
    _Atomic int seen[KN];
    _Atomic int done;
} shared;

typedef struct cons_arg {
    const char *url;
    shared *sh;
} cons_arg;

static int kill_consumer(void *p)
{
    cons_arg *c = p;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, c->url) != 0) {
        return 10;
    }
    for (;;) {
        conc_msg m;
        int err = conc_queue_get(q, &m, 0.5);
        if (err == CONC_EEMPTY) {
            if (atomic_load(&c->sh->done)) {
                conc_queue_free(q);
                return 0;
            }
            continue;
        }
        if (err != 0 || m.len != sizeof(int)) {
            return 11;
        }
        int v;
        memcpy(&v, m.data, sizeof v);
        conc_msg_free(&m);
        if (v < 0 || v >= KN) {
            return 12;
        }
        /* Some work, during which a kill may land. */
        th_sleep(0.003);
        atomic_fetch_add(&c->sh->seen[v], 1);
        if (conc_queue_task_done(q) != 0) {
            return 13;
        }
    }
}

static uint32_t rnd(void)
{
    uint32_t r = 0;
    FILE *f = fopen("/dev/urandom", "r");
    if (f == NULL || fread(&r, sizeof r, 1, f) != 1) {
        th_fail(__FILE__, __LINE__, "/dev/urandom");
    }
    fclose(f);
    return r;
}

TEST_T(amqp_consumers_killed_at_random, 120)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "rkill");
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name };
    CHECK_OK(conc_queue_new(&q, &o));
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    cons_arg ca = { url, sh };
    pid_t kids[KCONS];
    for (int i = 0; i < KCONS; i++) {
        kids[i] = th_fork(kill_consumer, &ca);
    }
    static int v[KN];
    static conc_msg in[KN];
    for (int i = 0; i < KN; i++) {
        v[i] = i;
        in[i] = (conc_msg){ &v[i], sizeof v[i] };
    }
    size_t done = 0;
    CHECK_OK(conc_queue_put_many(q, in, KN, &done, 20.0));
    int kills = 0;
    double end = th_now() + 60;
    for (;;) {
        int total = 0;
        for (int i = 0; i < KN; i++) {
            total += atomic_load(&sh->seen[i]) > 0;
        }
        if (total == KN || th_now() > end) {
            break;
        }
        th_sleep((rnd() % 150) / 1000.0 + 0.02);
        if (kills < 12) {
            int k = (int)(rnd() % KCONS);
            kill(kids[k], SIGKILL);
            int st = th_wait(kids[k], 10);
            CHECK(WIFSIGNALED(st) || (WIFEXITED(st) &&
                                      WEXITSTATUS(st) == 0));
            kills++;
            kids[k] = th_fork(kill_consumer, &ca);
        }
    }
    atomic_store(&sh->done, 1);
    for (int i = 0; i < KCONS; i++) {
        int st = th_wait(kids[i], 20);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    int dups = 0;
    for (int i = 0; i < KN; i++) {
        int s = atomic_load(&sh->seen[i]);
        if (s == 0) {
            th_fail(__FILE__, __LINE__, "message %d lost (%d kills)", i,
                    kills);
        }
        dups += s - 1;
    }
    CHECK(kills >= 3);
    CHECK(dups <= kills);
    CHECK_EQ(conc_queue_qsize(q), 0);
    munmap(sh, sizeof *sh);
    conc_queue_free(q);
}

TEST_T(amqp_frozen_broker_bounded, 150)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "frozen");
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name,
                          .net_timeout = CONC_TIMEOUT(1.0) };
    CHECK_OK(conc_queue_new(&q, &o));
    CHECK_OK(conc_queue_put(q, "before", 6, 5.0));
    /* Everything measured while frozen, checked after the thaw: a failed
     * check must never leave the shared broker stopped. */
    int err[4];
    double dt[4];
    size_t n = 99;
    conc_queue *q2 = NULL;
    conc_msg m;
    th_amqp_stop(&a);
    double t0 = th_now();
    err[0] = conc_queue_put(q, "x", 1, 1.0);
    dt[0] = th_now() - t0;
    t0 = th_now();
    err[1] = conc_queue_get(q, &m, 1.0);
    dt[1] = th_now() - t0;
    t0 = th_now();
    n = conc_queue_qsize(q);
    dt[2] = th_now() - t0;
    t0 = th_now();
    err[3] = conc_queue_open(&q2, url);
    dt[3] = th_now() - t0;
    char detail[256];
    snprintf(detail, sizeof detail, "%s", conc_errdetail());
    th_amqp_cont(&a);
    CHECK(err[0] == CONC_ETIMEDOUT || err[0] == CONC_ENET);
    CHECK(dt[0] < 4.0);
    CHECK(err[1] == CONC_EEMPTY || err[1] == CONC_ETIMEDOUT);
    CHECK(dt[1] < 4.0);
    CHECK_EQ(n, 0);
    CHECK(dt[2] < 4.0);
    CHECK_ERR(err[3], CONC_ETIMEDOUT);
    CHECK(q2 == NULL);
    CHECK(strstr(detail, "conc_queue_open") != NULL);
    /* open takes no options: bounded by the default net_timeout, 10 s. */
    CHECK(dt[3] > 9.0 && dt[3] < 14.0);
    /* Thawed: the next calls reconnect and go on; "before" was never
     * lost, "x" may have landed (a put that failed may have).  A broker
     * just thawed on a loaded machine may take seconds to answer. */
    int got_before = 0;
    for (int i = 0; i < 3; i++) {
        int e = conc_queue_get(q, &m, 20.0);
        if (e != 0) {
            break;
        }
        got_before += m.len == 6 && memcmp(m.data, "before", 6) == 0;
        conc_msg_free(&m);
        if (got_before > 0) {
            break;
        }
    }
    CHECK(got_before >= 1);
    CHECK_OK(conc_queue_put(q, "after", 5, 20.0));
    conc_queue_free(q);
}

TEST_T(amqp_broker_restart_mid_stream, 180)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "restart");
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name };
    CHECK_OK(conc_queue_new(&q, &o));
    enum { RN = 50 };
    for (int i = 0; i < RN; i++) {
        CHECK_OK(conc_queue_put(q, &i, sizeof i, 5.0));
    }
    /* A consumer mid-stream: it holds deliveries when the broker goes. */
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 5.0));
    conc_msg_free(&m);
    th_amqp_script(&a, "restart");
    /* The first call after meets the dead connection, and reconnects
     * and re-declares at once. */
    CHECK_OK(conc_queue_put(q, &(int){ RN }, sizeof(int), 5.0));
    static int seen[RN + 1];
    memset(seen, 0, sizeof seen);
    for (;;) {
        int err = conc_queue_get(q, &m, 1.0);
        if (err == CONC_EEMPTY) {
            break;
        }
        CHECK_OK(err);
        int v;
        CHECK_EQ(m.len, sizeof v);
        memcpy(&v, m.data, sizeof v);
        conc_msg_free(&m);
        CHECK(v >= 0 && v <= RN);
        seen[v]++;
    }
    for (int i = 0; i <= RN; i++) {
        if (seen[i] == 0) {
            th_fail(__FILE__, __LINE__, "message %d lost in the restart",
                    i);
        }
    }
    conc_queue_free(q);
}

/* ---- a relay in front of the broker ----------------------------------------
 * A child process that listens on a loopback port of its own and joins
 * each connection made to it to a connection of its own to the broker.  A
 * handle made through it meets an unreachable broker once the relay is
 * killed (its port refuses connections), and a frozen one while the relay
 * is stopped (the kernel still completes connections into the listen
 * backlog, and nothing answers them); the broker the suite shares is
 * neither. */
enum { RELAY_PAIRS = 16 };

typedef struct relay {
    pid_t pid;
    int port;
    int mode;      /* RELAY_PASS, or one of hold_after()'s */
    char name[64]; /* relay_queue's queue */
} relay;

/* What the relay does with the broker's bytes: pass them all; hold all
 * after the first basic.deliver method frame (the client sees a delivery
 * begin, and its header and body never come, as from a broker that froze
 * or stalled in the middle of sending a message); or cut the connection
 * after connection.start (as a broker that hangs up during the login, for
 * a reason other than the credentials, which it has not seen); or pass
 * them all with every content header frame's class id made 10
 * (connection) instead of 60 (basic), as a broker that lies; or pass
 * them a frame at a time, 3 ms apart, as a slow link or a busy broker
 * (frames then come in apart that otherwise share a segment); or cut the
 * connection after the first body frame, so that the client has one
 * whole message and then meets a connection that broke (as a network
 * that fails), its acknowledgement never reaching the broker; or hold
 * everything after it (the broker's answers stall); or hold it and drop
 * what the client sends from then on (its acknowledgement is lost on
 * the way, the connection open); or pass the client's bytes at about
 * 8 MB/s (16 KiB every 2 ms: a slow uplink, the broker reading and
 * answering all along). */
enum { RELAY_PASS, RELAY_HOLD_AFTER_DELIVER, RELAY_CUT_AFTER_START,
       RELAY_HEADER_OF_CLASS_10, RELAY_SLOW_FRAMES, RELAY_CUT_AFTER_BODY,
       RELAY_HOLD_AFTER_BODY, RELAY_MUTE_AFTER_BODY, RELAY_SLOW_UPLINK };

/* What the relay knows of the frames a broker sends on one connection
 * (a mode other than RELAY_PASS): a frame is type (1), channel (2), size
 * (4), a payload of size bytes, and an end octet; a method payload
 * starts with its class and method ids (2 + 2). */
typedef struct frame_scan {
    unsigned char hdr[7];
    unsigned hlen;
    uint64_t left;  /* bytes of the current frame still to come */
    unsigned char meth[4];
    unsigned mlen;
    uint64_t at;    /* payload bytes of the current frame seen */
    bool held;      /* the mode's method passed: nothing more does */
} frame_scan;

/* Takes byte b into the header of the frame that starts, if one does,
 * and returns true; at the header's end, the frame's size starts the
 * count of what is left of it.  false: b belongs to a payload or an end
 * octet, and the caller counts it. */
static bool scan_header_byte(frame_scan *fs, unsigned char b)
{
    if (fs->left != 0) {
        return false;
    }
    fs->hdr[fs->hlen++] = b;
    if (fs->hlen == 7) {
        fs->left = ((uint64_t)fs->hdr[3] << 24 | (uint64_t)fs->hdr[4] << 16 |
                    (uint64_t)fs->hdr[5] << 8 | fs->hdr[6]) + 1;
        fs->hlen = 0;
        fs->mlen = 0;
        fs->at = 0;
    }
    return true;
}

/* The broker's bytes pass up to the end of the first method frame the
 * mode names (basic.deliver: class 60, method 60; connection.start:
 * class 10, method 10), or of the first body frame (type 3), and none
 * after it.  Returns how many of buf's n bytes to pass on. */
static size_t hold_after(frame_scan *fs, int mode, unsigned char *buf,
                         size_t n)
{
    unsigned char id = mode == RELAY_HOLD_AFTER_DELIVER ? 60 : 10;
    for (size_t i = 0; i < n && !fs->held; i++) {
        if (scan_header_byte(fs, buf[i])) {
            continue;
        }
        if (mode == RELAY_HEADER_OF_CLASS_10 && fs->hdr[0] == 2 &&
            fs->at < 2) {
            buf[i] = fs->at == 0 ? 0 : 10; /* class id, big-endian */
        }
        fs->at++;
        if (fs->mlen < 4) {
            fs->meth[fs->mlen++] = buf[i];
        }
        if (--fs->left == 0 &&
            (mode == RELAY_CUT_AFTER_BODY || mode == RELAY_HOLD_AFTER_BODY ||
             mode == RELAY_MUTE_AFTER_BODY) &&
            fs->hdr[0] == 3) {
            fs->held = true;
            return i + 1;
        }
        if (fs->left == 0 && (mode == RELAY_HOLD_AFTER_DELIVER ||
                              mode == RELAY_CUT_AFTER_START) &&
            fs->hdr[0] == 1 && fs->mlen == 4 &&
            fs->meth[0] == 0 && fs->meth[1] == id && fs->meth[2] == 0 &&
            fs->meth[3] == id) {
            fs->held = true;
            return i + 1;
        }
    }
    return fs->held ? 0 : n;
}

static int relay_dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static bool relay_write(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* RELAY_SLOW_FRAMES: writes buf's n bytes to fd, pausing 3 ms after
 * each frame that ends in them.  false when the write failed. */
static bool relay_write_slowly(int fd, frame_scan *fs,
                               const unsigned char *buf, size_t n)
{
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (scan_header_byte(fs, buf[i])) {
            continue;
        }
        if (--fs->left == 0) {
            if (!relay_write(fd, (const char *)buf + from, i + 1 - from)) {
                return false;
            }
            from = i + 1;
            th_sleep(0.003);
        }
    }
    return relay_write(fd, (const char *)buf + from, n - from);
}

/* Set by SIGUSR1 (relay_cut) and SIGUSR2 (relay_cut_and_stop) in the
 * relay: 1 cut, 2 cut and stop. */
static volatile sig_atomic_t relay_cut_asked;

static void relay_on_usr(int sig)
{
    relay_cut_asked = sig == SIGUSR2 ? 2 : 1;
}

/* The relay's loop.  fd[2 * i] is a client, fd[2 * i + 1] its broker
 * side; a pair whose either end ends or fails is closed (-1), and every
 * pair at SIGUSR1 (the relay goes on listening) or SIGUSR2 (then the
 * relay stops itself: connections made to it are completed by the
 * kernel and never answered). */
static _Noreturn void relay_run(int lfd, int broker_port, int mode)
{
    int fd[2 * RELAY_PAIRS];
    frame_scan scan[RELAY_PAIRS];
    for (int i = 0; i < 2 * RELAY_PAIRS; i++) {
        fd[i] = -1;
    }
    signal(SIGUSR1, relay_on_usr);
    signal(SIGUSR2, relay_on_usr);
    for (;;) {
        if (relay_cut_asked) {
            bool stop = relay_cut_asked == 2;
            relay_cut_asked = 0;
            for (int i = 0; i < 2 * RELAY_PAIRS; i++) {
                if (fd[i] >= 0) {
                    close(fd[i]);
                    fd[i] = -1;
                }
            }
            if (stop) {
                raise(SIGSTOP);
            }
        }
        struct pollfd p[1 + 2 * RELAY_PAIRS];
        p[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
        for (int i = 0; i < 2 * RELAY_PAIRS; i++) {
            p[1 + i] = (struct pollfd){ .fd = fd[i], .events = POLLIN };
        }
        if (poll(p, 1 + 2 * RELAY_PAIRS, -1) < 0) {
            continue; /* EINTR (a SIGCONT, a SIGUSR1) */
        }
        if (p[0].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            int b = c >= 0 ? relay_dial(broker_port) : -1;
            int i = 0;
            while (i < RELAY_PAIRS && fd[2 * i] >= 0) {
                i++;
            }
            if (b >= 0 && i < RELAY_PAIRS) {
                fd[2 * i] = c;
                fd[2 * i + 1] = b;
                memset(&scan[i], 0, sizeof scan[i]);
            } else {
                if (c >= 0) {
                    close(c);
                }
                if (b >= 0) {
                    close(b);
                }
            }
        }
        for (int i = 0; i < 2 * RELAY_PAIRS; i++) {
            if (fd[i] < 0 || p[1 + i].fd != fd[i] ||
                !(p[1 + i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            char buf[65536];
            ssize_t k = read(fd[i], buf, sizeof buf);
            size_t pass = k > 0 ? (size_t)k : 0;
            bool cut = false;
            if (mode == RELAY_SLOW_FRAMES && (i & 1) != 0 && k > 0) {
                if (!relay_write_slowly(fd[i ^ 1], &scan[i / 2],
                                        (unsigned char *)buf, (size_t)k)) {
                    cut = true;
                }
                pass = 0; /* written */
            } else if (mode == RELAY_MUTE_AFTER_BODY && (i & 1) == 0 &&
                       scan[i / 2].held) {
                pass = 0; /* the client's bytes, lost on the way */
            } else if (mode == RELAY_SLOW_UPLINK && (i & 1) == 0 && k > 0) {
                for (size_t at = 0; at < pass && !cut; at += 16384) {
                    size_t piece = pass - at < 16384 ? pass - at : 16384;
                    cut = !relay_write(fd[i ^ 1], buf + at, piece);
                    th_sleep(0.002);
                }
                pass = 0; /* written */
            } else if (mode != RELAY_PASS && (i & 1) != 0 && k > 0) {
                /* the broker's bytes */
                pass = hold_after(&scan[i / 2], mode, (unsigned char *)buf,
                                  pass);
                cut = (mode == RELAY_CUT_AFTER_START ||
                       mode == RELAY_CUT_AFTER_BODY) &&
                      scan[i / 2].held;
            }
            if (k <= 0 || !relay_write(fd[i ^ 1], buf, pass) || cut) {
                close(fd[i & ~1]);
                close(fd[i | 1]);
                fd[i & ~1] = -1;
                fd[i | 1] = -1;
            }
        }
    }
}

static void relay_start(relay *r, int broker_port)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) != 0) {
        th_fail(__FILE__, __LINE__, "relay: %s", strerror(errno));
    }
    r->port = ntohs(a.sin_port);
    fflush(stdout);
    fflush(stderr);
    r->pid = fork();
    if (r->pid < 0) {
        th_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    }
    if (r->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        relay_run(lfd, broker_port, r->mode);
    }
    close(lfd);
}

/* Starts a relay in front of the shared broker (in the given mode) and
 * makes a queue of a fresh name (r->name) through it, with net_timeout
 * 1 s, at most once when amo. */
/* A handle on the queue name of the broker (or relay) at port. */
static conc_queue *queue_at(int port, const char *name, bool amo,
                            double net_timeout)
{
    char url[128];
    snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:%d/%%2f", port);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                    .url = url, .name = name,
                                    .at_most_once = amo,
                                    .net_timeout =
                                        CONC_TIMEOUT(net_timeout) }));
    return q;
}

static conc_queue *relay_queue_amo(relay *r, const char *prefix, int mode,
                                   bool amo)
{
    th_amqp a;
    th_amqp_get(&a);
    r->mode = mode;
    relay_start(r, a.port);
    th_amqp_name(r->name, sizeof r->name, prefix);
    return queue_at(r->port, r->name, amo, 1.0);
}

static conc_queue *relay_queue(relay *r, const char *prefix, int mode)
{
    return relay_queue_amo(r, prefix, mode, false);
}

/* Kills the relay and reaps it: its port refuses connections from here
 * on, and the connections through it are cut. */
static void relay_kill(relay *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Cuts every connection through the relay, as a network that fails
 * (the broker sees them end, and so do the clients at their next read),
 * and returns once the broker has seen them go (its list of
 * connections, asked through rabbitmqctl, is not needed: the relay's
 * closes are done within its next loop, and a pause covers that). */
static void relay_cut(const relay *r)
{
    CHECK(kill(r->pid, SIGUSR1) == 0);
    th_sleep(0.3);
}

/* Cuts every connection through the relay, and stops it once they are
 * cut (relay_thaw lets it go on); returns once it is stopped. */
static void relay_cut_and_stop(const relay *r)
{
    int st = 0;
    CHECK(kill(r->pid, SIGUSR2) == 0);
    CHECK(waitpid(r->pid, &st, WUNTRACED) == r->pid && WIFSTOPPED(st));
}

/* Stops the relay (SIGSTOP), returning once it is stopped. */
static void relay_freeze(const relay *r)
{
    int st = 0;
    CHECK(kill(r->pid, SIGSTOP) == 0);
    CHECK(waitpid(r->pid, &st, WUNTRACED) == r->pid && WIFSTOPPED(st));
}

static void relay_thaw(const relay *r)
{
    CHECK(kill(r->pid, SIGCONT) == 0);
}

/* A get whose consumer connection must be made to a broker that refuses
 * it fails with CONC_ENET at once, whatever its timeout.  Both waits
 * below are far beyond the test's deadline: a get that tried again until
 * its timeout fails the test by running into the deadline. */
TEST_T(amqp_get_from_an_unreachable_broker_is_enet, 30)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "unreach", RELAY_PASS);
    relay_kill(&r);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, CONC_FOREVER), CONC_ENET);
    CHECK(strstr(conc_errdetail(), "cannot connect") != NULL);
    conc_msg ms[4];
    size_t got = 99;
    CHECK_ERR(conc_queue_get_many(q, ms, 4, &got, 3600.0), CONC_ENET);
    CHECK_EQ(got, 0);
    char buf[8];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, buf, sizeof buf, &len, 3600.0),
              CONC_ENET);
    conc_queue_free(q);
}

/* A get whose consumer connection must be made to a broker that does not
 * answer (the relay stopped: the connection is accepted, the login never
 * answered) fails with CONC_ETIMEDOUT once net_timeout has run out, also
 * under CONC_FOREVER; after the thaw the next calls connect and work. */
TEST_T(amqp_get_from_a_frozen_broker_times_out, 30)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "unanswered", RELAY_PASS);
    relay_freeze(&r);
    conc_msg m;
    double t0 = th_now();
    int err = conc_queue_get(q, &m, CONC_FOREVER);
    double dt = th_now() - t0;
    relay_thaw(&r);
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(dt >= 0.9); /* net_timeout (1 s), less the clock's grain */
    CHECK_OK(conc_queue_put(q, "x", 1, 20.0));
    CHECK_OK(conc_queue_get(q, &m, 20.0));
    CHECK(m.len == 1 && *(char *)m.data == 'x');
    conc_msg_free(&m);
    conc_queue_free(q);
    relay_kill(&r);
}

/* q gives the one-byte messages of want, in order, and then nothing. */
static void gets_exactly(conc_queue *q, const char *want)
{
    conc_msg m;
    for (const char *w = want; *w != '\0'; w++) {
        CHECK_OK(conc_queue_get(q, &m, 20.0));
        CHECK(m.len == 1 && *(char *)m.data == *w);
        conc_msg_free(&m);
    }
    CHECK_ERR(conc_queue_get(q, &m, 0.5), CONC_EEMPTY);
}

/* A put of more than the sockets hold, to a broker that stopped reading
 * (the relay stopped; a memory or disk alarm does the same to
 * publishers): CONC_ETIMEDOUT once the socket took nothing for
 * net_timeout (1 s), before the put's own 3 s.  rabbitmq-c's writer
 * waited for room in the socket for ever.  The half-sent message never
 * lands; the next calls reconnect and go on. */
TEST_T(amqp_put_to_a_broker_that_stopped_reading_times_out, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "stopread", RELAY_PASS);
    CHECK_OK(conc_queue_put(q, "a", 1, 5.0));
    size_t big = (size_t)64 << 20;
    char *buf = calloc(1, big);
    CHECK(buf != NULL);
    relay_freeze(&r);
    double t0 = th_now();
    int err = conc_queue_put(q, buf, big, 3.0);
    double dt = th_now() - t0;
    char detail[256];
    snprintf(detail, sizeof detail, "%s", conc_errdetail());
    relay_thaw(&r);
    free(buf);
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(strstr(detail, "took no bytes for net_timeout") != NULL);
    CHECK(dt >= 0.9 && dt < 2.8);
    CHECK_OK(conc_queue_put(q, "b", 1, 20.0));
    gets_exactly(q, "ab");
    conc_queue_free(q);
    relay_kill(&r);
}

/* At most once, a batch cut short by a broker that stopped reading:
 * *done counts the messages written whole before the one that stalled
 * (they went in, as far as an unconfirmed put can tell, and they do land
 * once the broker reads again); it counted none, so a caller sending the
 * rest again sent those twice. */
TEST_T(amqp_at_most_once_batch_cut_short_counts_what_went_out, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue_amo(&r, "amocut", RELAY_PASS, true);
    CHECK_OK(conc_queue_put(q, "a", 1, 5.0)); /* connected */
    size_t big = (size_t)64 << 20;
    char *buf = calloc(1, big);
    CHECK(buf != NULL);
    conc_msg m[3] = { { "b", 1 }, { "c", 1 }, { buf, big } };
    relay_freeze(&r);
    size_t done = 99;
    int err = conc_queue_put_many(q, m, 3, &done, 3.0);
    relay_thaw(&r);
    free(buf);
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK_EQ(done, 2);
    gets_exactly(q, "abc");
    conc_queue_free(q);
    relay_kill(&r);
}

/* At most once: "only" put through direct, a get of q (through the
 * relay r) that fails with want and hands nothing over, then (the relay
 * killed first when kill, so that the broker sees the connection end)
 * "only" comes to direct, redelivered. */
static void amo_get_fails_then_once(relay *r, conc_queue *q,
                                    conc_queue *direct, int want, bool kill)
{
    CHECK_OK(conc_queue_put(direct, "only", 4, 20.0));
    conc_msg m = { 0 };
    CHECK_ERR(conc_queue_get(q, &m, 20.0), want);
    CHECK(m.data == NULL);
    if (kill) {
        relay_kill(r);
    }
    CHECK_OK(conc_queue_get(direct, &m, 20.0));
    CHECK(m.len == 4 && memcmp(m.data, "only", 4) == 0);
    CHECK(conc_queue_redelivered(direct));
    conc_msg_free(&m);
}

/* At most once, a get hands a delivery over only once the broker has
 * taken its acknowledgement.  The relay cuts the consumer's connection
 * right after the first message's body: the client holds one whole
 * delivery whose acknowledgement cannot reach the broker, which gives it
 * to the next consumer.  So the get fails (CONC_ENET) and the message
 * comes once, to the other handle.  The get once returned it and
 * acknowledged after, unseen by the broker: the message came twice. */
TEST_T(amqp_at_most_once_get_on_a_cut_connection_never_gives_twice, 40)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    relay r;
    conc_queue *q = relay_queue_amo(&r, "amodup", RELAY_CUT_AFTER_BODY,
                                    true);
    conc_queue *direct = queue_at(a.port, r.name, true, 10.0);
    amo_get_fails_then_once(&r, q, direct, CONC_ENET, false);
    conc_msg m = { 0 };
    /* get_into: a new connection, cut the same way; no message, *len 0
     * (a fresh direct handle: the first one's consumer would take "next"
     * into its window) */
    conc_queue_free(direct);
    direct = queue_at(a.port, r.name, true, 10.0);
    CHECK_OK(conc_queue_put(direct, "next", 4, 20.0));
    char buf[16] = { 0 };
    size_t len = 99;
    CHECK_ERR(conc_queue_get_into(q, buf, sizeof buf, &len, 20.0), CONC_ENET);
    CHECK_EQ(len, 0);
    CHECK_OK(conc_queue_get(direct, &m, 20.0));
    CHECK(m.len == 4 && memcmp(m.data, "next", 4) == 0);
    conc_msg_free(&m);
    CHECK_ERR(conc_queue_get(direct, &m, 0.5), CONC_EEMPTY);
    conc_queue_free(direct);
    conc_queue_free(q);
    relay_kill(&r);
}

/* A thread's connections stay open between its calls; when one broke
 * meanwhile (here the network cuts all three: the publisher's, the
 * consumer's, the one for questions), the next call opens a new one and
 * works.  The first call after the break failed with CONC_ENET: put
 * found the end of the connection as it read what the broker had sent,
 * get as it waited for a delivery, qsize as it asked. */
TEST_T(amqp_calls_after_idle_connections_broke_reconnect, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "idlecut", RELAY_PASS);
    for (int round = 0; round < 2; round++) {
        CHECK_OK(conc_queue_put(q, "a", 1, 20.0));
        if (round == 0) { /* (later, the consumer may have it already) */
            CHECK_EQ(conc_queue_qsize(q), 1);
        }
        conc_msg m;
        CHECK_OK(conc_queue_get(q, &m, 20.0));
        conc_msg_free(&m);
        CHECK_OK(conc_queue_task_done(q));
        CHECK_EQ(conc_queue_qsize(q), 0);
        relay_cut(&r);
        /* Each call meets its broken connection first, and works: a
         * call that works leaves the detail as it was. */
        (void)conc_lock_release(NULL); /* a detail to keep */
        char before[128];
        snprintf(before, sizeof before, "%s", conc_errdetail());
        CHECK_OK(conc_queue_put(q, "b", 1, 20.0));
        CHECK_OK(conc_queue_put(q, "c", 1, 20.0));
        size_t n = conc_queue_qsize(q);
        CHECK(strcmp(conc_errdetail(), before) == 0);
        /* (the broker may have handed b and c to the consumer whose end
         * it had not seen yet: they are ready again once it has) */
        for (int i = 0; n != 2 && i < 200; i++) {
            th_sleep(0.05);
            n = conc_queue_qsize(q);
        }
        CHECK_EQ(n, 2);
        relay_cut(&r);
        CHECK_OK(conc_queue_get(q, &m, 20.0));
        CHECK(m.len == 1 && memcmp(m.data, "b", 1) == 0);
        conc_msg_free(&m);
        CHECK_OK(conc_queue_task_done(q));
        CHECK_OK(conc_queue_get(q, &m, 20.0));
        CHECK(m.len == 1 && memcmp(m.data, "c", 1) == 0);
        conc_msg_free(&m);
        CHECK_OK(conc_queue_task_done(q));
    }
    conc_queue_free(q);
    relay_kill(&r);
}

typedef struct cut_later {
    const relay *r;
    double after;
} cut_later;

static void *cut_then_freeze(void *arg)
{
    const cut_later *c = arg;
    th_sleep(c->after);
    relay_cut_and_stop(c->r);
    return NULL;
}

/* A get that finds its connection broken halfway through its wait opens
 * a new one within its own deadline: here the new connection's login is
 * never answered (the relay is stopped; the kernel still completes the
 * connection), and the get of 3 s ends at 3 s.  The redial once took a
 * fresh deadline of the whole timeout: 4 s and more. */
TEST_T(amqp_get_redial_keeps_the_calls_deadline, 40)
{
    NEED_AMQP();
    relay r;
    conc_queue *q0 = relay_queue(&r, "redialdl", RELAY_PASS);
    conc_queue *q = queue_at(r.port, r.name, false, 30.0);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.2), CONC_EEMPTY); /* consuming */
    cut_later c = { &r, 1.0 };
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, cut_then_freeze, &c), 0);
    double t0 = th_now();
    int err = conc_queue_get(q, &m, 3.0);
    double dt = th_now() - t0;
    pthread_join(th, NULL);
    CHECK(err == CONC_ETIMEDOUT || err == CONC_EEMPTY);
    CHECK(dt >= 2.9 && dt < 3.8);
    relay_thaw(&r);
    relay_kill(&r);
    conc_queue_free(q);
    conc_queue_free(q0);
}

/* At most once, a get whose acknowledgement is lost on the way (the
 * relay drops what the client sends once the first message came) never
 * hands the message over: its round trip gets no answer, the get fails
 * (CONC_ETIMEDOUT) and, once the connection ends, the broker gives the
 * message to the next consumer: it comes once.  A get that handed it
 * over with the acknowledgement merely written gave it twice. */
TEST_T(amqp_at_most_once_get_whose_ack_is_lost_never_gives_twice, 40)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    relay r;
    conc_queue *q = relay_queue_amo(&r, "amomute", RELAY_MUTE_AFTER_BODY,
                                    true);
    conc_queue *direct = queue_at(a.port, r.name, true, 10.0);
    amo_get_fails_then_once(&r, q, direct, CONC_ETIMEDOUT, true);
    conc_msg m;
    CHECK_ERR(conc_queue_get(direct, &m, 0.5), CONC_EEMPTY);
    conc_queue_free(direct);
    conc_queue_free(q);
}

/* At most once, the round trip that proves a get's acknowledgement is
 * bounded by the get's own timeout (with a grace of 1 s for a delivery
 * that came at the last moment), not only by net_timeout: here the
 * broker's answers stall right after the delivery, and a get of 0.5 s on
 * a handle of net_timeout 10 s ends within 2 s (it took 10 s). */
TEST_T(amqp_at_most_once_get_proof_keeps_the_calls_timeout, 40)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    relay r;
    conc_queue *q0 = relay_queue_amo(&r, "amostall", RELAY_HOLD_AFTER_BODY,
                                     true);
    conc_queue *q = queue_at(r.port, r.name, true, 10.0);
    conc_queue *direct = queue_at(a.port, r.name, true, 10.0);
    CHECK_OK(conc_queue_put(direct, "m", 1, 20.0));
    conc_msg m = { 0 };
    double t0 = th_now();
    int err = conc_queue_get(q, &m, 0.5);
    double dt = th_now() - t0;
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(m.data == NULL);
    CHECK(dt >= 0.5 && dt < 2.5);
    conc_queue_free(direct);
    relay_kill(&r);
    conc_queue_free(q);
    conc_queue_free(q0);
}

/* At most once, a get that finds its idle connection ended with a
 * delivery already read from it (before the end) gives that delivery
 * back (it is not acknowledged: the broker requeues it) and takes the
 * get on over a new connection: 0 and the message, once.  It said
 * CONC_ENET, 'broke before the deliveries were acknowledged'. */
TEST_T(amqp_at_most_once_get_after_an_idle_cut_takes_the_next_message, 40)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    relay r;
    conc_queue *q = relay_queue_amo(&r, "amoidle", RELAY_PASS, true);
    conc_queue *direct = queue_at(a.port, r.name, true, 10.0);
    CHECK_OK(conc_queue_put(direct, "x", 1, 20.0));
    CHECK_OK(conc_queue_put(direct, "y", 1, 20.0));
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 20.0)); /* y comes in the window */
    CHECK(m.len == 1 && ((char *)m.data)[0] == 'x');
    conc_msg_free(&m);
    th_sleep(0.2);
    relay_cut(&r);
    gets_exactly(q, "y");
    /* get_many, with one delivery in hand and the end met while waiting
     * for more: the same (it said CONC_ENET) */
    CHECK_OK(conc_queue_put(direct, "z", 1, 20.0));
    CHECK_OK(conc_queue_put(direct, "w", 1, 20.0));
    CHECK_OK(conc_queue_get(q, &m, 20.0));
    CHECK(m.len == 1 && ((char *)m.data)[0] == 'z');
    conc_msg_free(&m);
    th_sleep(0.2);
    relay_cut(&r);
    conc_msg ms[4];
    size_t got = 0;
    CHECK_OK(conc_queue_get_many(q, ms, 4, &got, 5.0));
    CHECK_EQ(got, 1);
    CHECK(ms[0].len == 1 && ((char *)ms[0].data)[0] == 'w');
    conc_msg_free(&ms[0]);
    CHECK_ERR(conc_queue_get(direct, &m, 0.5), CONC_EEMPTY);
    conc_queue_free(direct);
    conc_queue_free(q);
    relay_kill(&r);
}

/* Gets shorter than a slice (2 s) on a connection that stalled (the
 * relay stopped: nothing comes, nothing is refused) notice it: once the
 * connection has been quiet for a slice, across calls, a get asks the
 * broker (up to 1 s past its own end) and says CONC_ETIMEDOUT.  Such gets
 * said CONC_EEMPTY for ever, never reaching the question a longer wait
 * asks; the next call reconnects (REUSE). */
TEST_T(amqp_short_gets_notice_a_stalled_connection, 40)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "quiet", RELAY_PASS);
    CHECK_OK(conc_queue_put(q, "a", 1, 20.0));
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 20.0));
    conc_msg_free(&m);
    CHECK_OK(conc_queue_task_done(q));
    relay_freeze(&r);
    double t0 = th_now();
    int err;
    do {
        err = conc_queue_get(q, &m, 0.3);
    } while (err == CONC_EEMPTY && th_now() - t0 < 10.0);
    double dt = th_now() - t0;
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(dt >= 2.0 && dt < 5.0); /* a quiet slice, then the question */
    relay_thaw(&r);
    conc_queue_free(q);
    relay_kill(&r);
}

/* A batch whose round takes longer than net_timeout to write and have
 * confirmed, to a broker that keeps reading and confirming, is no frozen
 * broker: it goes in.  Through a slow uplink (about 8 MB/s), 24 x 1 MiB
 * take some 3 s, net_timeout is 1 s.  The confirm wait's deadline was
 * taken before the writes: such a round failed after 1 s.  (It once ran
 * straight to the broker, with 200 MiB: on an idle machine the round
 * could take less than net_timeout, and the test then missed the bug.) */
TEST_T(amqp_long_round_to_a_live_broker_goes_in, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "longround", RELAY_SLOW_UPLINK);
    enum { N = 24 };
    size_t len = (size_t)1 << 20;
    char *buf = calloc(1, len);
    CHECK(buf != NULL);
    conc_msg m[N];
    for (int i = 0; i < N; i++) {
        m[i] = (conc_msg){ buf, len };
    }
    size_t done = 0;
    double t0 = th_now();
    int err = conc_queue_put_many(q, m, N, &done, CONC_FOREVER);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "put_many: %s: %s (done %zu)",
                conc_errname(err), conc_errdetail(), done);
    }
    CHECK_EQ(done, N);
    CHECK(th_now() - t0 > 1.5); /* longer than net_timeout, as meant */
    CHECK_EQ(conc_queue_qsize(q), N);
    free(buf);
    conc_queue_free(q);
    relay_kill(&r);
}

/* A get already consuming when the broker freezes: waiting for
 * deliveries alone, it could not tell a frozen broker from an empty
 * queue, and under CONC_FOREVER it waited for ever.  It asks the broker
 * after each quiet slice (2 s), so CONC_ETIMEDOUT comes within a slice
 * and net_timeout (1 s); the test's deadline is far beyond. */
TEST_T(amqp_consuming_get_meets_a_frozen_broker, 40)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "frozenwhile", RELAY_PASS);
    conc_msg m;
    CHECK_OK(conc_queue_put(q, "a", 1, 20.0));
    CHECK_OK(conc_queue_get(q, &m, 20.0)); /* the consumer is open */
    conc_msg_free(&m);
    CHECK_OK(conc_queue_task_done(q));
    relay_freeze(&r);
    double t0 = th_now();
    int err = conc_queue_get(q, &m, CONC_FOREVER);
    double dt = th_now() - t0;
    relay_thaw(&r);
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(dt >= 2.9); /* a quiet slice, then net_timeout */
    CHECK(strstr(conc_errdetail(), "asking whether it is alive") != NULL);
    /* thawed: the next get consumes anew */
    CHECK_OK(conc_queue_put(q, "b", 1, 20.0));
    CHECK_OK(conc_queue_get(q, &m, 20.0));
    CHECK(m.len == 1 && *(char *)m.data == 'b');
    conc_msg_free(&m);
    conc_queue_free(q);
    relay_kill(&r);
}

/* A delivery that stops halfway: the broker sent basic.deliver, and its
 * header and body never come (the relay holds every byte after the
 * method).  rabbitmq-c reads a message's content with no deadline, and
 * such a get waited for ever; now each frame of it has net_timeout
 * (1 s), and the get returns CONC_ETIMEDOUT, every form of it.  Nothing
 * is lost: the message was never acknowledged, and the broker gives it
 * to the next consumer, marked redelivered. */
TEST_T(amqp_get_of_a_message_stalled_halfway_times_out, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "stalled", RELAY_HOLD_AFTER_DELIVER);
    th_amqp a;
    th_amqp_get(&a);
    for (int form = 0; form < 3; form++) {
        /* straight to the broker; freed after each form, so that its
         * consumer takes no message meant for q */
        conc_queue *direct = NULL;
        CHECK_OK(conc_queue_new(&direct, &(conc_queue_opts){
                                             .url = a.url, .name = r.name,
                                             .net_timeout =
                                                 CONC_TIMEOUT(5.0) }));
        CHECK_OK(conc_queue_put(direct, "whole", 5, 20.0));
        conc_msg m = { 0 };
        char buf[16];
        size_t len = 0, got = 99;
        double t0 = th_now();
        int err = form == 0   ? conc_queue_get(q, &m, CONC_FOREVER)
                  : form == 1 ? conc_queue_get_into(q, buf, sizeof buf, &len,
                                                    20.0)
                              : conc_queue_get_many(q, &m, 1, &got, 20.0);
        double dt = th_now() - t0;
        CHECK_ERR(err, CONC_ETIMEDOUT);
        CHECK(strstr(conc_errdetail(), "stopped sending a message") != NULL);
        CHECK(dt >= 0.9 && dt < 10.0);
        /* the broker requeued it once the connection was dropped */
        CHECK_OK(conc_queue_get(direct, &m, 20.0));
        CHECK(m.len == 5 && memcmp(m.data, "whole", 5) == 0);
        CHECK(conc_queue_redelivered(direct));
        conc_msg_free(&m);
        CHECK_OK(conc_queue_task_done(direct));
        conc_queue_free(direct);
    }
    conc_queue_free(q);
    relay_kill(&r);
}

/* A broker that hangs up during the login without a word (the relay cuts
 * the connection after connection.start, before the credentials are
 * even answered) has lost the connection: CONC_ENET, which a caller may
 * try again.  It once read as CONC_EAUTH, "wrong user or password";
 * RabbitMQ says that with connection.close 403, never by hanging up
 * (the credentials test in test_amqp_queue.c). */
TEST_T(amqp_broker_hanging_up_at_login_is_enet, 30)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    relay r = { .mode = RELAY_CUT_AFTER_START };
    relay_start(&r, a.port);
    char url[128], name[64];
    snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:%d/%%2f",
             r.port);
    th_amqp_name(name, sizeof name, "hangup");
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = url, .name = name,
                                     .net_timeout = CONC_TIMEOUT(5.0) }),
              CONC_ENET);
    /* "closed the connection during the login", or, when the client was
     * still writing as the relay cut (a slower build), the socket error
     * of the login's write: CONC_ENET either way, never "wrong user or
     * password" */
    CHECK(strstr(conc_errdetail(), "login") != NULL);
    CHECK(strstr(conc_errdetail(), "password") == NULL);
    CHECK(q == NULL);
    relay_kill(&r);
}

/* A content header of another class than basic (the relay makes its
 * class id 10, connection): CONC_ECORRUPT, never its properties read as
 * basic ones (rabbitmq-c decodes them into a smaller structure, whose
 * reading as basic properties went past it). */
TEST_T(amqp_content_header_of_another_class_is_corrupt, 30)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "class10", RELAY_HEADER_OF_CLASS_10);
    CHECK_OK(conc_queue_put(q, "m", 1, 20.0)); /* no header comes back */
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 20.0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "not one") != NULL);
    conc_queue_free(q);
    relay_kill(&r);
}

/* A get with timeout 0 on a consumer just started asks the queue itself
 * (basic.get) while its prefetch window is on the way; deliveries that
 * come before the get-ok (the relay passes frames 3 ms apart, so they
 * do) have lower tags: the probed message is given back and its content,
 * which follows them, skipped.  Each message comes out once, none lost,
 * and no get fails (the content was read in the wrong place: a
 * delivery's frames where the get-ok's header was due, CONC_ECORRUPT,
 * and the connection dropped). */
TEST_T(amqp_probe_overtaken_by_deliveries_gives_each_message_once, 60)
{
    NEED_AMQP();
    relay r;
    conc_queue *q = relay_queue(&r, "overtaken", RELAY_SLOW_FRAMES);
    enum { N = 5 };
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            char b[8];
            snprintf(b, sizeof b, "m%d", round * N + i);
            CHECK_OK(conc_queue_put(q, b, strlen(b), 20.0));
        }
        /* a fresh handle: its consumer starts with this get */
        char url[160];
        snprintf(url, sizeof url,
                 "amqp://guest:guest@127.0.0.1:%d/%%2f?prefetch=2", r.port);
        conc_queue *g = NULL;
        CHECK_OK(conc_queue_new(&g, &(conc_queue_opts){
                                        .url = url, .name = r.name,
                                        .net_timeout = CONC_TIMEOUT(5.0) }));
        bool seen[N] = { false };
        for (int i = 0; i < N; i++) {
            conc_msg m;
            int err = conc_queue_get(g, &m, i == 0 ? 0 : 20.0);
            if (i == 0 && err == CONC_EEMPTY) {
                err = conc_queue_get(g, &m, 20.0); /* nothing had come */
            }
            CHECK_OK(err);
            /* A message's bytes end at m.len, with no NUL after them:
             * scanning m.data itself read on into the heap ("m1" then
             * "3" left there by an older block read as 13). */
            char text[8] = { 0 };
            CHECK(m.len >= 2 && m.len < sizeof text);
            memcpy(text, m.data, m.len);
            int k = -1;
            CHECK(sscanf(text + 1, "%d", &k) == 1);
            k -= round * N;
            CHECK(k >= 0 && k < N && !seen[k]);
            seen[k] = true;
            conc_msg_free(&m);
            CHECK_OK(conc_queue_task_done(g));
        }
        conc_msg m;
        CHECK_ERR(conc_queue_get(g, &m, 0.3), CONC_EEMPTY);
        conc_queue_free(g);
    }
    conc_queue_free(q);
    relay_kill(&r);
}
