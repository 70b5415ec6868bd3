/* test_pipe.c - conc_pipe / conc_conn: framing, directions, end of file,
 * timeouts and signals, recv_into's CONC_ETOOBIG, fileno with poll(2) and
 * epoll, messages of several MiB both ways with a concurrent peer process,
 * peers that die or give up halfway through a frame, threads sharing one
 * end, allocation and OS failures, and Python's own Connection on the
 * other end of the wire.
 */
#include "harness.h"

#include "conc_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

/* Deterministic bytes: message `seed`, byte i. */
static unsigned char pat(size_t seed, size_t i)
{
    return (unsigned char)((seed * 131u + i * 7u + (i >> 11)) & 0xffu);
}

static unsigned char *make_msg(size_t seed, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    for (size_t i = 0; i < len; i++) {
        p[i] = pat(seed, i);
    }
    return p;
}

static bool msg_ok(const void *data, size_t seed, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != pat(seed, i)) {
            return false;
        }
    }
    return true;
}

static void pair(conc_conn **a, conc_conn **b, bool duplex)
{
    CHECK_OK(conc_pipe(a, b, duplex));
    CHECK(*a != NULL && *b != NULL);
}

/* Raw bytes written on an end's descriptor, bypassing the framing: how
 * a foreign or broken sender looks. */
static void raw_send(conc_conn *c, const void *p, size_t n)
{
    int fd = conc_conn_fileno(c);
    CHECK(fd >= 0);
    CHECK_EQ(send(fd, p, n, MSG_NOSIGNAL), (long long)n);
}

static void be32(unsigned char *h, uint32_t v)
{
    h[0] = (unsigned char)(v >> 24);
    h[1] = (unsigned char)(v >> 16);
    h[2] = (unsigned char)(v >> 8);
    h[3] = (unsigned char)v;
}

static bool readable(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

TEST(pipe_duplex_both_ways_fifo)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    size_t sizes[] = { 0, 1, 3, 4, 100, 4096, 70000, 300000 };
    size_t n = sizeof sizes / sizeof sizes[0];
    /* Small ones first, all queued before any is read: FIFO per direction. */
    for (size_t i = 0; i < 5; i++) {
        unsigned char *m = make_msg(i, sizes[i]);
        CHECK_OK(conc_conn_send(a, m, sizes[i]));
        CHECK_OK(conc_conn_send(b, m, sizes[i]));
        free(m);
    }
    for (size_t i = 0; i < 5; i++) {
        conc_msg m;
        CHECK_OK(conc_conn_recv(b, &m, 1.0));
        CHECK_EQ(m.len, sizes[i]);
        CHECK(msg_ok(m.data, i, m.len));
        CHECK((m.data == NULL) == (m.len == 0));
        conc_msg_free(&m);
        CHECK_OK(conc_conn_recv(a, &m, 1.0));
        CHECK_EQ(m.len, sizes[i]);
        CHECK(msg_ok(m.data, i, m.len));
        conc_msg_free(&m);
    }
    /* Larger ones, one at a time (a 300 KB frame outgrows the socket
     * buffer, so it needs a reader: a thread would do; timeout 0 shows
     * the poll path instead). */
    for (size_t i = 5; i < n; i++) {
        unsigned char *m = make_msg(i, sizes[i]);
        if (sizes[i] < 100000) {
            CHECK_OK(conc_conn_send(a, m, sizes[i]));
            conc_msg got;
            CHECK_OK(conc_conn_recv(b, &got, 1.0));
            CHECK_EQ(got.len, sizes[i]);
            CHECK(memcmp(got.data, m, sizes[i]) == 0);
            conc_msg_free(&got);
        }
        free(m);
    }
    /* NULL data is fine for a 0-byte message. */
    CHECK_OK(conc_conn_send(b, NULL, 0));
    size_t len = 99;
    CHECK_OK(conc_conn_recv_into(a, NULL, 0, &len, 0));
    CHECK_EQ(len, 0);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_one_way_is_reader_then_writer)
{
    conc_conn *r, *w;
    pair(&r, &w, false);
    CHECK_ERR(conc_conn_send(r, "x", 1), CONC_EPERM);
    CHECK_ERR(conc_conn_send_timeout(r, "x", 1, 0), CONC_EPERM);
    conc_msg m;
    size_t len;
    char buf[8];
    CHECK_ERR(conc_conn_recv(w, &m, 0), CONC_EPERM);
    CHECK_ERR(conc_conn_recv_into(w, buf, sizeof buf, &len, 0), CONC_EPERM);
    CHECK_ERR(conc_conn_poll(w, 0), CONC_EPERM);
    CHECK_OK(conc_conn_send(w, "spam", 4));
    CHECK_EQ(conc_conn_poll(r, 1.0), 1);
    CHECK_OK(conc_conn_recv(r, &m, 0));
    CHECK_EQ(m.len, 4);
    CHECK(memcmp(m.data, "spam", 4) == 0);
    conc_msg_free(&m);
    /* Even raw use of the descriptors cannot go the wrong way. */
    CHECK_EQ(send(conc_conn_fileno(r), "x", 1, MSG_NOSIGNAL), -1);
    CHECK_EQ(errno, EPIPE);
    /* Closing the writer is end of file for the reader. */
    conc_conn_free(w);
    CHECK_ERR(conc_conn_recv(r, &m, 1.0), CONC_ECLOSED);
    conc_conn_free(r);
}

TEST(pipe_bad_arguments)
{
    conc_conn *a = (conc_conn *)1, *b = (conc_conn *)1;
    CHECK_ERR(conc_pipe(NULL, &b, true), CONC_EINVAL);
    CHECK_ERR(conc_pipe(&a, NULL, true), CONC_EINVAL);
    pair(&a, &b, true);
    conc_msg m = { (void *)1, 5 };
    size_t len = 7;
    char buf[4];
    CHECK_ERR(conc_conn_send(NULL, "x", 1), CONC_EINVAL);
    CHECK_ERR(conc_conn_send(a, NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_conn_send_timeout(a, "x", 1, NAN), CONC_EINVAL);
    CHECK_ERR(conc_conn_send_timeout(a, "x", 1, -0.5), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv(NULL, &m, 0), CONC_EINVAL);
    CHECK(m.data == NULL && m.len == 0);
    CHECK_ERR(conc_conn_recv(a, NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv(a, &m, NAN), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv(a, &m, -2), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv_into(NULL, buf, 4, &len, 0), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv_into(a, buf, 4, NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv_into(a, NULL, 4, &len, 0), CONC_EINVAL);
    CHECK_ERR(conc_conn_recv_into(a, buf, 4, &len, -0.001), CONC_EINVAL);
    CHECK_ERR(conc_conn_poll(NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_conn_poll(a, NAN), CONC_EINVAL);
    CHECK_ERR(conc_conn_fileno(NULL), CONC_EINVAL);
    CHECK_ERR(conc_conn_close(NULL), CONC_EINVAL);
    conc_conn_free(NULL);
    /* None of that sent anything. */
    CHECK_EQ(conc_conn_poll(b, 0), 0);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_timeouts_are_honoured)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    conc_msg m;
    size_t len;
    char buf[8];
    double t0 = th_now();
    CHECK_ERR(conc_conn_recv(a, &m, 0), CONC_ETIMEDOUT);
    CHECK_ERR(conc_conn_recv_into(a, buf, 8, &len, 0), CONC_ETIMEDOUT);
    CHECK_EQ(conc_conn_poll(a, 0), 0);
    CHECK(th_now() - t0 < 1.0);
    t0 = th_now();
    CHECK_ERR(conc_conn_recv(a, &m, 0.15), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.15 && took < 1.5);
    t0 = th_now();
    CHECK_ERR(conc_conn_recv_into(a, buf, 8, &len, 0.15), CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 0.15 && took < 1.5);
    t0 = th_now();
    CHECK_EQ(conc_conn_poll(a, 0.15), 0);
    took = th_now() - t0;
    CHECK(took >= 0.15 && took < 1.5);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_end_of_file_after_the_last_message)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(conc_conn_send(b, &i, sizeof i));
    }
    CHECK_OK(conc_conn_close(b));
    CHECK_OK(conc_conn_close(b)); /* twice is harmless */
    for (int i = 0; i < 3; i++) {
        int v = -1;
        size_t len = 0;
        CHECK_OK(conc_conn_recv_into(a, &v, sizeof v, &len, 1.0));
        CHECK_EQ(len, sizeof v);
        CHECK_EQ(v, i);
    }
    conc_msg m;
    CHECK_EQ(conc_conn_poll(a, 1.0), 1); /* true at end of file */
    CHECK_ERR(conc_conn_recv(a, &m, 1.0), CONC_ECLOSED);
    CHECK_ERR(conc_conn_recv(a, &m, CONC_FOREVER), CONC_ECLOSED);
    CHECK_EQ(conc_conn_poll(a, CONC_FOREVER), 1);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_send_to_a_closed_peer_is_eclosed_not_sigpipe)
{
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill this test */
    conc_conn *a, *b;
    pair(&a, &b, true);
    conc_conn_free(a);
    CHECK_ERR(conc_conn_send(b, "x", 1), CONC_ECLOSED);
    CHECK_ERR(conc_conn_send_timeout(b, "xy", 2, 0), CONC_ECLOSED);
    unsigned char *big = make_msg(1, 1 << 20);
    CHECK_ERR(conc_conn_send(b, big, 1 << 20), CONC_ECLOSED);
    free(big);
    conc_conn_free(b);
}

TEST(pipe_recv_into_too_small_leaves_the_message)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    unsigned char *m = make_msg(9, 100);
    CHECK_OK(conc_conn_send(b, m, 100));
    CHECK_OK(conc_conn_send(b, "next", 4));
    char small[10];
    size_t len = 0;
    CHECK_ERR(conc_conn_recv_into(a, small, sizeof small, &len, 1.0),
              CONC_ETOOBIG);
    CHECK_EQ(len, 100);
    CHECK_ERR(conc_conn_recv_into(a, NULL, 0, &len, 0), CONC_ETOOBIG);
    CHECK_EQ(len, 100);
    /* The descriptor still says a message is waiting. */
    CHECK(readable(conc_conn_fileno(a), 0));
    unsigned char big[128];
    CHECK_OK(conc_conn_recv_into(a, big, sizeof big, &len, 0));
    CHECK_EQ(len, 100);
    CHECK(memcmp(big, m, 100) == 0);
    /* ETOOBIG after poll took the message in, then recv. */
    CHECK_OK(conc_conn_send(b, m, 100));
    conc_msg got;
    CHECK_OK(conc_conn_recv(a, &got, 0));
    CHECK_EQ(got.len, 4);
    conc_msg_free(&got);
    CHECK_EQ(conc_conn_poll(a, 1.0), 1);
    CHECK_ERR(conc_conn_recv_into(a, small, sizeof small, &len, 0),
              CONC_ETOOBIG);
    CHECK_OK(conc_conn_recv(a, &got, 0));
    CHECK_EQ(got.len, 100);
    CHECK(memcmp(got.data, m, 100) == 0);
    conc_msg_free(&got);
    free(m);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_closed_handle_says_eclosed)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    CHECK_OK(conc_conn_send(b, "x", 1));
    CHECK_OK(conc_conn_close(a));
    conc_msg m;
    size_t len;
    char buf[4];
    CHECK_ERR(conc_conn_send(a, "x", 1), CONC_ECLOSED);
    CHECK_ERR(conc_conn_recv(a, &m, 0), CONC_ECLOSED);
    CHECK_ERR(conc_conn_recv_into(a, buf, 4, &len, 0), CONC_ECLOSED);
    CHECK_ERR(conc_conn_poll(a, 0), CONC_ECLOSED);
    CHECK_ERR(conc_conn_fileno(a), CONC_ECLOSED);
    CHECK_ERR(conc_conn_send(b, "x", 1), CONC_ECLOSED);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_fileno_works_with_poll_and_epoll)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    int fa = conc_conn_fileno(a), fb = conc_conn_fileno(b);
    CHECK(fa >= 0 && fb >= 0 && fa != fb);
    CHECK(fcntl(fa, F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(fb, F_GETFD) & FD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 7 };
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fa, &ev), 0);
    CHECK(!readable(fa, 0));
    CHECK_EQ(epoll_wait(ep, &ev, 1, 0), 0);
    /* Two messages: after the first recv the descriptor must still be
     * readable (nothing is read ahead and hidden in the handle). */
    CHECK_OK(conc_conn_send(b, "one", 3));
    CHECK_OK(conc_conn_send(b, "two", 3));
    CHECK(readable(fa, 1000));
    CHECK_EQ(epoll_wait(ep, &ev, 1, 1000), 1);
    CHECK_EQ(ev.data.u32, 7);
    conc_msg m;
    CHECK_OK(conc_conn_recv(a, &m, 0));
    CHECK(m.len == 3 && memcmp(m.data, "one", 3) == 0);
    conc_msg_free(&m);
    CHECK(readable(fa, 0));
    CHECK_EQ(epoll_wait(ep, &ev, 1, 0), 1);
    CHECK_OK(conc_conn_recv(a, &m, 0));
    CHECK(m.len == 3 && memcmp(m.data, "two", 3) == 0);
    conc_msg_free(&m);
    CHECK(!readable(fa, 0));
    CHECK_EQ(epoll_wait(ep, &ev, 1, 0), 0);
    /* End of file is readable too. */
    conc_conn_free(b);
    CHECK(readable(fa, 1000));
    close(ep);
    conc_conn_free(a);
}

/* A blocked call wakes when the other end goes away. */
struct blocked {
    conc_conn *c;
    int err;
    size_t big;
};

static void *blocked_sender(void *arg)
{
    struct blocked *b = arg;
    unsigned char *m = make_msg(8, b->big);
    b->err = conc_conn_send(b->c, m, b->big);
    free(m);
    return NULL;
}

static void *blocked_receiver(void *arg)
{
    struct blocked *b = arg;
    conc_msg m;
    b->err = conc_conn_recv(b->c, &m, CONC_FOREVER);
    conc_msg_free(&m);
    return NULL;
}

TEST(pipe_blocked_calls_wake_when_the_other_end_closes)
{
    signal(SIGPIPE, SIG_DFL);
    conc_conn *a, *b;
    pair(&a, &b, true);
    struct blocked bs = { .c = b, .err = 1, .big = 8u << 20 };
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, blocked_sender, &bs), 0);
    th_sleep(0.1); /* the sender fills the socket and blocks */
    conc_conn_free(a);
    pthread_join(t, NULL);
    CHECK_ERR(bs.err, CONC_ECLOSED);
    conc_conn_free(b);

    pair(&a, &b, false);
    struct blocked br = { .c = a, .err = 1 };
    CHECK_EQ(pthread_create(&t, NULL, blocked_receiver, &br), 0);
    th_sleep(0.1); /* the receiver waits */
    conc_conn_free(b);
    pthread_join(t, NULL);
    CHECK_ERR(br.err, CONC_ECLOSED);
    conc_conn_free(a);
}

/* ---- several MiB both ways with a concurrent peer process -------------- */

enum { BIG_N = 3 };
static const size_t big_sizes[BIG_N] = { (3u << 20) + 7, 5u << 20, 1 };

struct big_side {
    conc_conn *c;
    size_t seed0;
    int err;
};

static void *big_sender(void *arg)
{
    struct big_side *s = arg;
    s->err = 0;
    for (int i = 0; i < BIG_N && s->err == 0; i++) {
        unsigned char *m = make_msg(s->seed0 + (size_t)i, big_sizes[i]);
        s->err = conc_conn_send(s->c, m, big_sizes[i]);
        free(m);
    }
    return NULL;
}

/* Sends its BIG_N messages from a thread while receiving the peer's. */
static int big_exchange(conc_conn *c, size_t my_seed, size_t peer_seed)
{
    struct big_side s = { .c = c, .seed0 = my_seed };
    pthread_t t;
    if (pthread_create(&t, NULL, big_sender, &s) != 0) {
        return 10;
    }
    int bad = 0;
    for (int i = 0; i < BIG_N; i++) {
        conc_msg m;
        int err = conc_conn_recv(c, &m, 30.0);
        if (err != 0 || m.len != big_sizes[i] ||
            !msg_ok(m.data, peer_seed + (size_t)i, m.len)) {
            bad = 20 + i;
        }
        conc_msg_free(&m);
    }
    pthread_join(t, NULL);
    return bad != 0 ? bad : (s.err != 0 ? 30 : 0);
}

static conc_conn *child_end, *parent_end;

static int big_child(void *arg)
{
    (void)arg;
    conc_conn_free(parent_end);
    int r = big_exchange(child_end, 100, 200);
    conc_conn_free(child_end);
    return r;
}

TEST(pipe_several_mib_both_ways_with_a_child_process)
{
    pair(&parent_end, &child_end, true);
    pid_t pid = th_fork(big_child, NULL);
    conc_conn_free(child_end);
    CHECK_EQ(big_exchange(parent_end, 200, 100), 0);
    int st = th_wait(pid, 30);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    /* The child's end is gone everywhere now: end of file. */
    conc_msg m;
    CHECK_ERR(conc_conn_recv(parent_end, &m, 5.0), CONC_ECLOSED);
    conc_conn_free(parent_end);
}

/* ---- peers that die or give up halfway ------------------------------- */

static int half_frame_child(void *arg)
{
    (void)arg;
    conc_conn_free(parent_end);
    unsigned char h[4 + 10];
    be32(h, 100); /* promises 100 bytes, delivers 10 */
    memset(h + 4, 'z', 10);
    int fd = conc_conn_fileno(child_end);
    return write(fd, h, sizeof h) == (ssize_t)sizeof h ? 0 : 1;
}

TEST(pipe_half_a_frame_then_exit_is_eclosed)
{
    for (int variant = 0; variant < 3; variant++) {
        pair(&parent_end, &child_end, true);
        CHECK_OK(conc_conn_send(child_end, "whole", 5));
        pid_t pid = th_fork(half_frame_child, NULL);
        conc_conn_free(child_end);
        int st = th_wait(pid, 10);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        conc_msg m;
        CHECK_OK(conc_conn_recv(parent_end, &m, 1.0));
        CHECK(m.len == 5 && memcmp(m.data, "whole", 5) == 0);
        conc_msg_free(&m);
        char buf[200];
        size_t len = 0;
        if (variant == 0) {
            CHECK_ERR(conc_conn_recv(parent_end, &m, 5.0), CONC_ECLOSED);
            CHECK(m.data == NULL);
        } else if (variant == 1) {
            CHECK_ERR(conc_conn_recv_into(parent_end, buf, sizeof buf, &len,
                                          5.0),
                      CONC_ECLOSED);
            CHECK_EQ(len, 0);
        } else {
            CHECK_EQ(conc_conn_poll(parent_end, 5.0), 1);
            CHECK_ERR(conc_conn_recv(parent_end, &m, 0), CONC_ECLOSED);
        }
        CHECK_ERR(conc_conn_recv(parent_end, &m, 0), CONC_ECLOSED);
        conc_conn_free(parent_end);
    }
}

static int huge_sender_child(void *arg)
{
    (void)arg;
    conc_conn_free(parent_end);
    size_t n = 8u << 20;
    unsigned char *m = malloc(n);
    if (m == NULL) {
        return 2;
    }
    memset(m, 'q', n);
    int err = conc_conn_send(child_end, m, n); /* killed in here */
    free(m);
    return err == 0 ? 0 : 1;
}

TEST(pipe_sender_killed_mid_message_is_eclosed)
{
    for (int variant = 0; variant < 2; variant++) {
        pair(&parent_end, &child_end, true);
        pid_t pid = th_fork(huge_sender_child, NULL);
        conc_conn_free(child_end);
        conc_msg m;
        char *buf = malloc(16u << 20);
        CHECK(buf != NULL);
        size_t len = 0;
        /* Once the socket is full the child is blocked mid-frame; stop it
         * there, take in what it wrote, then kill it. */
        CHECK(readable(conc_conn_fileno(parent_end), 10000));
        th_sleep(0.1);
        CHECK_EQ(kill(pid, SIGSTOP), 0);
        if (variant == 0) {
            CHECK_ERR(conc_conn_recv(parent_end, &m, 0.2), CONC_ETIMEDOUT);
        } else {
            CHECK_ERR(conc_conn_recv_into(parent_end, buf, 16u << 20, &len,
                                          0.2),
                      CONC_ETIMEDOUT);
        }
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int st = th_wait(pid, 10);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        double t0 = th_now();
        if (variant == 0) {
            CHECK_ERR(conc_conn_recv(parent_end, &m, 10.0), CONC_ECLOSED);
        } else {
            CHECK_ERR(conc_conn_recv_into(parent_end, buf, 16u << 20, &len,
                                          10.0),
                      CONC_ECLOSED);
        }
        CHECK(th_now() - t0 < 5.0);
        free(buf);
        conc_conn_free(parent_end);
    }
}

TEST(pipe_message_arriving_in_pieces_is_completed_later)
{
    conc_conn *a, *b;
    for (int variant = 0; variant < 3; variant++) {
        pair(&a, &b, true);
        unsigned char frame[4 + 1000];
        be32(frame, 1000);
        for (size_t i = 0; i < 1000; i++) {
            frame[4 + i] = pat(5, i);
        }
        raw_send(b, frame, 2); /* half a header */
        conc_msg m;
        char buf[1000];
        size_t len = 0;
        CHECK_ERR(conc_conn_recv(a, &m, 0.05), CONC_ETIMEDOUT);
        raw_send(b, frame + 2, 400); /* the rest of it and 398 bytes */
        if (variant == 0) {
            CHECK_ERR(conc_conn_recv(a, &m, 0.05), CONC_ETIMEDOUT);
        } else if (variant == 1) {
            CHECK_ERR(conc_conn_recv_into(a, buf, sizeof buf, &len, 0.05),
                      CONC_ETIMEDOUT);
        } else {
            CHECK_EQ(conc_conn_poll(a, 0.05), 0);
        }
        CHECK(!readable(conc_conn_fileno(a), 0));
        raw_send(b, frame + 402, sizeof frame - 402);
        if (variant == 1) {
            CHECK_OK(conc_conn_recv_into(a, buf, sizeof buf, &len, 1.0));
            CHECK_EQ(len, 1000);
            CHECK(msg_ok(buf, 5, 1000));
        } else {
            CHECK_OK(conc_conn_recv(a, &m, 1.0));
            CHECK_EQ(m.len, 1000);
            CHECK(msg_ok(m.data, 5, 1000));
            conc_msg_free(&m);
        }
        CHECK_EQ(conc_conn_poll(a, 0), 0);
        conc_conn_free(a);
        conc_conn_free(b);
    }
}

TEST(pipe_long_header_and_bad_header)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    /* The >2 GiB header form, with a small length: accepted. */
    unsigned char h[12 + 5];
    memset(h, 0xff, 4);
    memset(h + 4, 0, 7);
    h[11] = 5;
    memcpy(h + 12, "hello", 5);
    raw_send(b, h, sizeof h);
    conc_msg m;
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK(m.len == 5 && memcmp(m.data, "hello", 5) == 0);
    conc_msg_free(&m);
    /* A negative length no sender writes: CONC_ECORRUPT once, then
     * receiving has stopped for good (CONC_ECLOSED, saying why). */
    be32(h, 0x80000001u);
    raw_send(b, h, 4);
    CHECK_ERR(conc_conn_recv(a, &m, 1.0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "conc_conn_recv") != NULL);
    CHECK(strstr(conc_errdetail(), "80000001") != NULL);
    CHECK_ERR(conc_conn_recv(a, &m, 0), CONC_ECLOSED);
    CHECK(strstr(conc_errdetail(), "receiving stopped") != NULL);
    CHECK_EQ(conc_conn_poll(a, 0), 1);
    size_t len = 9;
    CHECK_ERR(conc_conn_recv_into(a, h, sizeof h, &len, 0), CONC_ECLOSED);
    CHECK_EQ(len, 0);
    /* The sending direction still works. */
    CHECK_OK(conc_conn_send(a, "back", 4));
    CHECK_OK(conc_conn_recv(b, &m, 1.0));
    CHECK(m.len == 4 && memcmp(m.data, "back", 4) == 0);
    conc_msg_free(&m);
    conc_conn_free(a);
    conc_conn_free(b);
}

/* ---- the limit on a message's length (hostile headers) ----------------- */

static void be64_header(unsigned char h[12], uint64_t v)
{
    memset(h, 0xff, 4);
    for (int i = 0; i < 8; i++) {
        h[4 + i] = (unsigned char)(v >> (56 - 8 * i));
    }
}

/* The address space this process uses now, in bytes (VmSize). */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    CHECK(kb > 0);
    return kb * 1024;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1 /* their shadow memory needs terabytes of address space */
#else
#define SANITIZED 0
#endif

/* In a child whose address space may grow by 64 MiB only: headers of
 * 16 GiB and 2^62 are refused at once with CONC_ETOOBIG (before any
 * allocation: the old code reserved 16 GiB, or stuck on CONC_ENOMEM for
 * 2^62), each by recv, recv_into and poll+recv; later receives say
 * CONC_ECLOSED; and a header under the limit but far over what the
 * child may map (1.5 GiB) costs nothing until its bytes come. */
static int lying_headers_child(void *arg)
{
    (void)arg;
    struct rlimit lim;
    if (!SANITIZED) {
        lim.rlim_cur = lim.rlim_max = vm_size() + (64u << 20);
        if (setrlimit(RLIMIT_AS, &lim) != 0) {
            return 90;
        }
    }
    static const uint64_t lies[] = { (uint64_t)16 << 30, (uint64_t)1 << 62,
                                     UINT64_MAX };
    for (int way = 0; way < 3; way++) {
        for (size_t k = 0; k < sizeof lies / sizeof lies[0]; k++) {
            conc_conn *a, *b;
            if (conc_pipe(&a, &b, true) != 0) {
                return 1;
            }
            unsigned char h[12 + 64];
            be64_header(h, lies[k]);
            memset(h + 12, 'z', 64);
            if (send(conc_conn_fileno(b), h, sizeof h, MSG_NOSIGNAL) !=
                (ssize_t)sizeof h) {
                return 2;
            }
            conc_msg m;
            char buf[64];
            size_t len = 77;
            double t0 = th_now();
            int err;
            if (way == 0) {
                err = conc_conn_recv(a, &m, 5.0);
            } else if (way == 1) {
                err = conc_conn_recv_into(a, buf, sizeof buf, &len, 5.0);
                if (err == CONC_ETOOBIG && len != 0) {
                    return 3; /* not the "buffer too small" kind */
                }
            } else {
                if (conc_conn_poll(a, 5.0) != 1) {
                    return 4;
                }
                err = conc_conn_recv(a, &m, 0);
            }
            if (err != CONC_ETOOBIG || th_now() - t0 > 1.0) {
                fprintf(stderr, "way %d lie %zu: %s\n", way, k,
                        conc_errname(err));
                return 5;
            }
            if (strstr(conc_errdetail(), "max_message_bytes") == NULL) {
                return 6;
            }
            /* Receiving has stopped; every later call says so. */
            if (conc_conn_recv(a, &m, 0) != CONC_ECLOSED ||
                strstr(conc_errdetail(), "receiving stopped") == NULL ||
                conc_conn_poll(a, 0) != 1 ||
                conc_conn_recv_into(a, buf, sizeof buf, &len, 0) !=
                    CONC_ECLOSED) {
                return 7;
            }
            conc_conn_free(a);
            conc_conn_free(b);
        }
    }
    /* Under the limit, 1.5 GiB announced and 10 bytes sent: waits for
     * the rest without reserving the announced length. */
    conc_conn *a, *b;
    if (conc_pipe(&a, &b, true) != 0) {
        return 10;
    }
    unsigned char h[4 + 10];
    be32(h, 0x60000000u);
    memset(h + 4, 'y', 10);
    if (send(conc_conn_fileno(b), h, sizeof h, MSG_NOSIGNAL) !=
        (ssize_t)sizeof h) {
        return 11;
    }
    conc_msg m;
    int err = conc_conn_recv(a, &m, 0.05);
    if (err != CONC_ETIMEDOUT) {
        fprintf(stderr, "under the limit: %s (%s)\n", conc_errname(err),
                conc_errdetail());
        return 12;
    }
    if (conc_conn_poll(a, 0.05) != 0) {
        return 13;
    }
    conc_conn_free(a);
    conc_conn_free(b);
    return 0;
}

TEST(pipe_lying_headers_are_refused_before_any_allocation)
{
    int st = th_wait(th_fork(lying_headers_child, NULL), 30);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "child status %#x", (unsigned)st);
    }
}

TEST(pipe_max_message_option_and_setter)
{
    conc_conn *a, *b;
    CHECK_OK(conc_pipe_new(&a, &b, &(conc_pipe_opts){
                                       .max_message_bytes = 100 }));
    unsigned char *m100 = make_msg(3, 101);
    conc_msg m;
    /* Exactly the limit passes, on both ends. */
    CHECK_OK(conc_conn_send(b, m100, 100));
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK_EQ(m.len, 100);
    conc_msg_free(&m);
    CHECK_OK(conc_conn_send(a, m100, 100));
    CHECK_OK(conc_conn_recv(b, &m, 1.0));
    conc_msg_free(&m);
    /* One more is refused, at once, with the lengths in the detail. */
    CHECK_OK(conc_conn_send(b, m100, 101));
    CHECK_ERR(conc_conn_recv(a, &m, 1.0), CONC_ETOOBIG);
    CHECK(strstr(conc_errdetail(), "101 bytes") != NULL);
    CHECK(strstr(conc_errdetail(), "(100)") != NULL);
    CHECK_ERR(conc_conn_recv(a, &m, 1.0), CONC_ECLOSED);
    /* The refusing end shut its receiving direction: the peer's sends
     * now fail instead of filling a socket nobody reads. */
    CHECK_ERR(conc_conn_send(b, "x", 1), CONC_ECLOSED);
    /* a still sends; b still receives. */
    CHECK_OK(conc_conn_send(a, "still", 5));
    CHECK_OK(conc_conn_recv(b, &m, 1.0));
    CHECK(m.len == 5);
    conc_msg_free(&m);
    conc_conn_free(a);
    conc_conn_free(b);

    /* The setter: a lower limit, then 0 = the default again. */
    pair(&a, &b, true);
    CHECK_OK(conc_conn_set_max_message(a, 10));
    CHECK_OK(conc_conn_send(b, m100, 10));
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    conc_msg_free(&m);
    CHECK_OK(conc_conn_set_max_message(a, 0));
    CHECK_OK(conc_conn_send(b, m100, 101));
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK_EQ(m.len, 101);
    conc_msg_free(&m);
    CHECK_OK(conc_conn_set_max_message(a, 10));
    CHECK_OK(conc_conn_send(b, m100, 11));
    size_t len = 5;
    char buf[200];
    /* recv_into: CONC_ETOOBIG with *len 0 (not "buffer too small"). */
    CHECK_ERR(conc_conn_recv_into(a, buf, sizeof buf, &len, 1.0),
              CONC_ETOOBIG);
    CHECK_EQ(len, 0);
    CHECK_ERR(conc_conn_set_max_message(NULL, 5), CONC_EINVAL);
    conc_conn_free(a);
    conc_conn_free(b);
    /* A one-way pipe from the options. */
    CHECK_OK(conc_pipe_new(&a, &b, &(conc_pipe_opts){ .one_way = true }));
    CHECK_ERR(conc_conn_send(a, "x", 1), CONC_EPERM);
    CHECK(strstr(conc_errdetail(), "only receives") != NULL);
    conc_conn_free(a);
    conc_conn_free(b);
    CHECK_ERR(conc_pipe_new(NULL, &b, NULL), CONC_EINVAL);
    free(m100);
}

struct huge_send {
    conc_conn *c;
    size_t n;
    int err;
    double ended;
};

static void *huge_sender(void *arg)
{
    struct huge_send *s = arg;
    unsigned char *p = malloc(s->n);
    memset(p, 'w', s->n);
    s->err = conc_conn_send(s->c, p, s->n);
    s->ended = th_now();
    free(p);
    return NULL;
}

TEST(pipe_refusal_releases_a_blocked_sender)
{
    /* A 16 MiB message to an end that takes 1 MiB: the sender blocks
     * once the socket is full; the refusal at the header shuts the
     * receiving side, and the blocked send returns CONC_ECLOSED at once
     * instead of waiting for ever. */
    conc_conn *a, *b;
    pair(&a, &b, true);
    CHECK_OK(conc_conn_set_max_message(a, 1u << 20));
    struct huge_send s = { .c = b, .n = 16u << 20 };
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, huge_sender, &s), 0);
    CHECK(readable(conc_conn_fileno(a), 10000));
    th_sleep(0.1);
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_conn_recv(a, &m, 5.0), CONC_ETOOBIG);
    pthread_join(t, NULL);
    CHECK_ERR(s.err, CONC_ECLOSED);
    CHECK(s.ended - t0 < 2.0);
    conc_conn_free(a);
    conc_conn_free(b);
}

struct piece_send {
    conc_conn *c;
    const unsigned char *p;
    size_t n;
    double pause; /* between pieces */
};

static void *piece_sender(void *arg)
{
    struct piece_send *s = arg;
    int fd = conc_conn_fileno(s->c);
    unsigned char h[4];
    be32(h, (uint32_t)s->n);
    CHECK_EQ(send(fd, h, 4, MSG_NOSIGNAL), 4);
    for (size_t off = 0; off < s->n;) {
        size_t chunk = s->n - off < 300000 ? s->n - off : 300000;
        CHECK_EQ(send(fd, s->p + off, chunk, MSG_NOSIGNAL), (long)chunk);
        off += chunk;
        if (s->pause > 0) {
            th_sleep(s->pause);
        }
    }
    return NULL;
}

TEST(pipe_large_message_in_pieces_grows_its_buffer)
{
    /* A message of 5 MiB + 3 arrives in pieces while poll (which keeps
     * what it took in), recv_into and recv take turns with short
     * timeouts: the buffer grows from 1 MiB as bytes come, and the
     * message is whole and right. */
    for (int variant = 0; variant < 3; variant++) {
        conc_conn *a, *b;
        pair(&a, &b, true);
        size_t n = (5u << 20) + 3;
        unsigned char *p = make_msg(11, n);
        struct piece_send s = { .c = b, .p = p, .n = n, .pause = 0.005 };
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, piece_sender, &s), 0);
        conc_msg m = { 0 };
        unsigned char *buf = malloc(n);
        size_t len = 0;
        int err = CONC_ETIMEDOUT;
        for (int i = 0; err == CONC_ETIMEDOUT && i < 10000; i++) {
            if (i % 2 == 0 && conc_conn_poll(a, 0.002) == 0) {
                continue;
            }
            if (variant == 1) {
                err = conc_conn_recv_into(a, buf, n, &len, 0.002);
            } else {
                err = conc_conn_recv(a, &m, variant == 0 ? 0.002 : 0);
            }
        }
        pthread_join(t, NULL);
        CHECK_OK(err);
        if (variant == 1) {
            CHECK_EQ(len, n);
            CHECK(memcmp(buf, p, n) == 0);
        } else {
            CHECK_EQ(m.len, n);
            CHECK(memcmp(m.data, p, n) == 0);
            conc_msg_free(&m);
        }
        free(buf);
        free(p);
        conc_conn_free(a);
        conc_conn_free(b);
    }
}

/* ---- signals ------------------------------------------------------------- */

static atomic_int alarms;

static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

/* SIGALRM every 20 ms, with no SA_RESTART: every blocking call sees
 * EINTR again and again. */
static void start_alarms(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
    struct itimerval it = { .it_interval = { 0, 20000 },
                            .it_value = { 0, 20000 } };
    CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void stop_alarms(void)
{
    struct itimerval it;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
}

struct late {
    conc_conn *c;
    double delay;
};

static void *late_sender(void *arg)
{
    struct late *l = arg;
    th_sleep(l->delay);
    conc_conn_send(l->c, "late", 4);
    return NULL;
}

TEST(pipe_signals_resume_with_the_time_left)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    start_alarms();
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_conn_recv(a, &m, 0.3), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    t0 = th_now();
    CHECK_EQ(conc_conn_poll(a, 0.3), 0);
    took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    /* A full socket: a send waiting for room. */
    int sent = 0;
    char chunk[1000];
    memset(chunk, 1, sizeof chunk);
    while (conc_conn_send_timeout(b, chunk, sizeof chunk, 0) == 0) {
        sent++;
    }
    CHECK(sent > 0);
    t0 = th_now();
    CHECK_ERR(conc_conn_send_timeout(b, chunk, sizeof chunk, 0.3),
              CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    /* A forever receive under the same rain of signals gets its message. */
    struct late l = { .c = a, .delay = 0.2 };
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, late_sender, &l), 0);
    CHECK_OK(conc_conn_recv(b, &m, CONC_FOREVER));
    CHECK(m.len == 4 && memcmp(m.data, "late", 4) == 0);
    conc_msg_free(&m);
    pthread_join(t, NULL);
    stop_alarms();
    CHECK(atomic_load(&alarms) >= 10);
    conc_conn_free(a);
    conc_conn_free(b);
}

/* ---- sends that time out -------------------------------------------------- */

TEST(pipe_send_timeout_before_any_byte_sends_nothing)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    int n = 0;
    while (conc_conn_send_timeout(b, &n, sizeof n, 0) == 0) {
        n++;
    }
    CHECK(n > 10);
    int extra = -1;
    CHECK_ERR(conc_conn_send_timeout(b, &extra, sizeof extra, 0.05),
              CONC_ETIMEDOUT);
    for (int i = 0; i < n; i++) {
        int v = -7;
        size_t len = 0;
        CHECK_OK(conc_conn_recv_into(a, &v, sizeof v, &len, 1.0));
        CHECK_EQ(len, sizeof v);
        CHECK_EQ(v, i);
    }
    CHECK_EQ(conc_conn_poll(a, 0), 0); /* no stray bytes */
    /* Still usable. */
    CHECK_OK(conc_conn_send_timeout(b, "ok", 2, 0));
    conc_msg m;
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK(m.len == 2 && memcmp(m.data, "ok", 2) == 0);
    conc_msg_free(&m);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_send_timeout_halfway_ends_the_stream_cleanly)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    CHECK_OK(conc_conn_send(b, "first", 5));
    CHECK_OK(conc_conn_send(b, "second", 6));
    size_t n = 4u << 20;
    unsigned char *big = make_msg(3, n);
    double t0 = th_now();
    CHECK_ERR(conc_conn_send_timeout(b, big, n, 0.2), CONC_ETIMEDOUT);
    CHECK(th_now() - t0 >= 0.2);
    CHECK_ERR(conc_conn_send(b, "third", 5), CONC_ECLOSED);
    /* The other direction is untouched. */
    CHECK_OK(conc_conn_send(a, "back", 4));
    conc_msg m;
    CHECK_OK(conc_conn_recv(b, &m, 1.0));
    CHECK_EQ(m.len, 4);
    conc_msg_free(&m);
    /* The reader gets the whole messages, then end of file: never the
     * truncated one. */
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK_EQ(m.len, 5);
    conc_msg_free(&m);
    CHECK_OK(conc_conn_recv(a, &m, 1.0));
    CHECK_EQ(m.len, 6);
    conc_msg_free(&m);
    CHECK_ERR(conc_conn_recv(a, &m, 2.0), CONC_ECLOSED);
    CHECK(m.data == NULL && m.len == 0);
    free(big);
    conc_conn_free(a);
    conc_conn_free(b);
}

/* ---- threads sharing one end ---------------------------------------------- */

enum { SENDERS = 4, PER_SENDER = 1500, RECEIVERS = 2 };

struct shared_ends {
    conc_conn *tx, *rx;
    int id;
    pthread_mutex_t *mu;
    unsigned char *seen; /* SENDERS * PER_SENDER */
    atomic_int *bad;
    atomic_int *left;
};

static size_t msg_size(int id, int seq)
{
    return 8 + (size_t)((id * 7919 + seq * 104729) % 3000);
}

static void *shared_sender(void *arg)
{
    struct shared_ends *s = arg;
    unsigned char buf[8 + 3000];
    for (int seq = 0; seq < PER_SENDER; seq++) {
        size_t len = msg_size(s->id, seq);
        memcpy(buf, &s->id, 4);
        memcpy(buf + 4, &seq, 4);
        for (size_t i = 8; i < len; i++) {
            buf[i] = pat((size_t)(s->id * PER_SENDER + seq), i);
        }
        if (conc_conn_send(s->tx, buf, len) != 0) {
            atomic_fetch_add(s->bad, 1);
        }
    }
    return NULL;
}

static void *shared_receiver(void *arg)
{
    struct shared_ends *s = arg;
    int last[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        last[i] = -1;
    }
    for (;;) {
        conc_msg m;
        int err = conc_conn_recv(s->rx, &m, 0.05);
        if (err == CONC_ETIMEDOUT) {
            if (atomic_load(s->left) <= 0) {
                return NULL;
            }
            continue;
        }
        if (err != 0 || m.len < 8) {
            atomic_fetch_add(s->bad, 1);
            conc_msg_free(&m);
            return NULL;
        }
        int id, seq;
        memcpy(&id, m.data, 4);
        memcpy(&seq, (char *)m.data + 4, 4);
        bool ok = id >= 0 && id < SENDERS && seq >= 0 && seq < PER_SENDER &&
                  m.len == msg_size(id, seq) && seq > last[id];
        for (size_t i = 8; ok && i < m.len; i++) {
            ok = ((unsigned char *)m.data)[i] ==
                 pat((size_t)(id * PER_SENDER + seq), i);
        }
        if (!ok) {
            atomic_fetch_add(s->bad, 1);
        } else {
            last[id] = seq;
            pthread_mutex_lock(s->mu);
            s->seen[id * PER_SENDER + seq]++;
            pthread_mutex_unlock(s->mu);
        }
        atomic_fetch_sub(s->left, 1);
        conc_msg_free(&m);
    }
}

TEST(pipe_threads_share_one_end_without_mixing_frames)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    unsigned char *seen = calloc(SENDERS * PER_SENDER, 1);
    atomic_int bad = 0, left = SENDERS * PER_SENDER;
    struct shared_ends s[SENDERS + RECEIVERS];
    pthread_t t[SENDERS + RECEIVERS];
    for (int i = 0; i < SENDERS + RECEIVERS; i++) {
        s[i] = (struct shared_ends){ .tx = b, .rx = a, .id = i, .mu = &mu,
                                     .seen = seen, .bad = &bad,
                                     .left = &left };
        CHECK_EQ(pthread_create(&t[i], NULL,
                                i < SENDERS ? shared_sender : shared_receiver,
                                &s[i]),
                 0);
    }
    for (int i = 0; i < SENDERS + RECEIVERS; i++) {
        pthread_join(t[i], NULL);
    }
    CHECK_EQ(atomic_load(&bad), 0);
    for (int i = 0; i < SENDERS * PER_SENDER; i++) {
        CHECK_EQ(seen[i], 1);
    }
    free(seen);
    conc_conn_free(a);
    conc_conn_free(b);
}

/* ---- failures -------------------------------------------------------------- */

TEST(pipe_allocation_failures_leak_nothing)
{
    /* Every allocation and system call conc_pipe makes (socketpair, the
     * shutdowns of a one-way pipe, two ends) fails in turn: each failure
     * is CONC_ENOMEM or CONC_ESYS with a detail, and leaks nothing. */
    for (int duplex = 0; duplex < 2; duplex++) {
        int fds = th_count_fds();
        int failures = 0;
        for (long n = 1;; n++) {
            conc_conn *a = (conc_conn *)1, *b = (conc_conn *)1;
            conc__fault_arm(n);
            int err = conc_pipe(&a, &b, duplex);
            bool fired = conc__fault_fired();
            conc__fault_arm(0);
            if (err == 0) {
                CHECK(!fired);
                conc_conn_free(a);
                conc_conn_free(b);
                break;
            }
            CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
            CHECK(strncmp(conc_errdetail(), "conc_pipe: ", 11) == 0);
            CHECK(a == NULL && b == NULL);
            CHECK_EQ(th_count_fds(), fds);
            failures++;
        }
        CHECK_EQ(failures, duplex ? 3 : 5);
        CHECK_EQ(th_count_fds(), fds);
    }
}

TEST(pipe_out_of_descriptors_is_esys)
{
    struct rlimit old, low;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    int maxfd = 0;
    for (int fd = 0; fd < 1024; fd++) {
        if (fcntl(fd, F_GETFD) != -1) {
            maxfd = fd;
        }
    }
    low = old;
    low.rlim_cur = (rlim_t)maxfd + 2;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* Fill every free slot under the limit, then free exactly one: a
     * socketpair needs two. */
    int fill[1024];
    int nfill = 0;
    for (;;) {
        int fd = dup(0);
        if (fd < 0) {
            CHECK_EQ(errno, EMFILE);
            break;
        }
        fill[nfill++] = fd;
    }
    CHECK(nfill >= 1);
    close(fill[--nfill]);
    conc_conn *a, *b;
    errno = 0;
    CHECK_ERR(conc_pipe(&a, &b, true), CONC_ESYS);
    CHECK_EQ(errno, EMFILE);
    CHECK(a == NULL && b == NULL);
    CHECK_ERR(conc_pipe(&a, &b, false), CONC_ESYS);
    while (nfill > 0) {
        close(fill[--nfill]);
    }
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    pair(&a, &b, true);
    conc_conn_free(a);
    conc_conn_free(b);
}

TEST(pipe_receive_out_of_memory_keeps_the_message)
{
    /* Each receive with its n-th allocation or system call failing: the
     * failure is CONC_ENOMEM or CONC_ESYS, and the next receive, with
     * nothing failing, gets the whole message: nothing is lost.  Small
     * (one allocation) and large (a growing buffer) messages, by recv
     * and poll. */
    static const size_t sizes[] = { 5000, (2u << 20) + 5 };
    for (int way = 0; way < 2; way++) {
        for (size_t k = 0; k < 2; k++) {
            size_t n = sizes[k];
            int hit_nomem = 0;
            for (long f = 1; f < 3000; f++) {
                conc_conn *a, *b;
                pair(&a, &b, true);
                unsigned char *m = make_msg(4 + k, n);
                struct piece_send s = { .c = b, .p = m, .n = n };
                pthread_t t;
                CHECK_EQ(pthread_create(&t, NULL, piece_sender, &s), 0);
                CHECK(readable(conc_conn_fileno(a), 10000));
                conc_msg got = { 0 };
                conc__fault_arm(f);
                int err = way == 0 ? conc_conn_recv(a, &got, 10.0)
                                   : conc_conn_poll(a, 10.0);
                bool fired = conc__fault_fired();
                conc__fault_arm(0);
                if (err < 0) {
                    CHECK(fired);
                    CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
                    CHECK(strstr(conc_errdetail(), way == 0
                                                       ? "conc_conn_recv"
                                                       : "conc_conn_poll") !=
                          NULL);
                    hit_nomem += err == CONC_ENOMEM;
                }
                if (err < 0 || way == 1) {
                    /* Nothing lost: the next receive gets it whole. */
                    CHECK_OK(conc_conn_recv(a, &got, 10.0));
                }
                CHECK_EQ(got.len, n);
                CHECK(memcmp(got.data, m, n) == 0);
                conc_msg_free(&got);
                pthread_join(t, NULL);
                free(m);
                conc_conn_free(a);
                conc_conn_free(b);
                if (!fired) {
                    break;
                }
            }
            CHECK(hit_nomem >= 1);
        }
    }

    /* recv_into out of time halfway, with no memory to keep the part: the
     * end can no longer find the next frame and says so. */
    unsigned char frame[4 + 100];
    be32(frame, 100);
    memset(frame + 4, 'p', 100);
    bool seen = false;
    for (long f = 1; f < 20 && !seen; f++) {
        conc_conn *a, *b;
        pair(&a, &b, true);
        raw_send(b, frame, 54);
        char buf[100];
        size_t len = 0;
        conc__fault_arm(f);
        int err = conc_conn_recv_into(a, buf, sizeof buf, &len, 0);
        conc__fault_arm(0);
        if (err == CONC_ENOMEM) {
            seen = true;
            CHECK(strstr(conc_errdetail(), "place in the stream") != NULL);
            /* It shut its receiving side: the rest cannot even be sent. */
            CHECK_EQ(send(conc_conn_fileno(b), frame + 54, 50, MSG_NOSIGNAL),
                     -1);
            CHECK_EQ(errno, EPIPE);
            CHECK_ERR(conc_conn_recv_into(a, buf, sizeof buf, &len, 0.05),
                      CONC_ECLOSED);
            conc_msg got;
            CHECK_ERR(conc_conn_recv(a, &got, 0), CONC_ECLOSED);
            CHECK(strstr(conc_errdetail(), "no memory") != NULL);
        }
        conc_conn_free(a);
        conc_conn_free(b);
    }
    CHECK(seen);
}

TEST(pipe_os_errors_are_esys_with_errno)
{
    conc_conn *a, *b;
    pair(&a, &b, true);
    /* The descriptor closed behind libconc's back: every call reports the
     * OS error instead of crashing or hanging. */
    CHECK_EQ(close(conc_conn_fileno(a)), 0);
    conc_msg m;
    size_t len;
    char buf[8];
    errno = 0;
    CHECK_ERR(conc_conn_recv(a, &m, 0), CONC_ESYS);
    CHECK_EQ(errno, EBADF);
    CHECK_ERR(conc_conn_recv(a, &m, CONC_FOREVER), CONC_ESYS);
    CHECK_ERR(conc_conn_recv_into(a, buf, sizeof buf, &len, 0.1), CONC_ESYS);
    CHECK_ERR(conc_conn_poll(a, 0.1), CONC_ESYS);
    errno = 0;
    CHECK_ERR(conc_conn_send(a, "x", 1), CONC_ESYS);
    CHECK_EQ(errno, EBADF);
    CHECK_ERR(conc_conn_send_timeout(a, "x", 1, 0.1), CONC_ESYS);
    conc_conn_free(a); /* its close() of the number fails quietly */
    conc_conn_free(b);
}

/* ---- Python's Connection on the other end ----------------------------- */

TEST(pipe_talks_to_python_multiprocessing_connection)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        return; /* no Python here: nothing to interwork with */
    }
    conc_conn *a, *b;
    pair(&a, &b, true);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = conc_conn_fileno(b);
        if (dup2(fd, 3) != 3) {
            _exit(90);
        }
        execl("/usr/bin/python3", "python3", "-c",
              "from multiprocessing.connection import Connection\n"
              "c = Connection(3)\n"
              "m = c.recv_bytes()\n"
              "c.send_bytes(m[::-1])\n"
              "c.send_bytes(b'')\n"
              "c.send_bytes(bytes(range(256)) * 1000)\n",
              (char *)NULL);
        _exit(91);
    }
    conc_conn_free(b);
    CHECK_OK(conc_conn_send(a, "libconc", 7));
    conc_msg m;
    CHECK_OK(conc_conn_recv(a, &m, 20.0));
    CHECK(m.len == 7 && memcmp(m.data, "cnocbil", 7) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_conn_recv(a, &m, 20.0));
    CHECK_EQ(m.len, 0);
    CHECK_OK(conc_conn_recv(a, &m, 20.0));
    CHECK_EQ(m.len, 256000);
    for (size_t i = 0; i < m.len; i++) {
        CHECK_EQ(((unsigned char *)m.data)[i], i % 256);
    }
    conc_msg_free(&m);
    CHECK_ERR(conc_conn_recv(a, &m, 20.0), CONC_ECLOSED);
    int st = th_wait(pid, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    conc_conn_free(a);
}
