/* test_examples_pool.c - the pool's example programs (seeds 000, 001 and
 * 003 ported to C, and the live progress line) run as the tour runs them,
 * their printed facts asserted; and both echo servers driven by 50
 * clients of this test connected at once, each of which must get its
 * lines back (echoed, or upper-cased) before the server stops cleanly. */
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

static void expect_in(const char *out, const char *needle)
{
    if (strstr(out, needle) == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" missing from the output", needle);
    }
}

static double number_after(const char *out, const char *prefix)
{
    const char *p = strstr(out, prefix);
    if (p == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "no \"%s\" in the output", prefix);
    }
    return strtod(p + strlen(prefix), NULL);
}

TEST(example_map_squares)
{
    char *out = th_run_example("seed003_pool_1_map_squares", NULL, NULL, 60);
    expect_in(out, "Pool(5).map(f, [1, 2, 3]) -> [1, 4, 9]");
    expect_in(out, "map(f, [1, 2, 3, 4]):\n1\n4\n9\n16\n");
    expect_in(out, "in input order");
    free(out);
}

TEST(example_submit_and_callback)
{
    char *out = th_run_example("seed003_pool_2_submit_and_callback",
                               NULL, NULL, 60);
    expect_in(out, "submitted work(10); done yet? no");
    expect_in(out, "future.result() -> 100 (done now? yes)");
    expect_in(out, "callback for work(40): result 400");
    expect_in(out, "callback for work(-1): failed (1) with \"ValueError: "
                   "negative input -1\"");
    expect_in(out, "after shutdown(wait=True): 2 callbacks ran");
    /* main went on before any callback ran */
    CHECK(strstr(out, "main goes on") < strstr(out, "callback for"));
    free(out);
}

TEST(example_apply_vs_apply_async)
{
    char *out = th_run_example("seed000_pool_apply_vs_apply_async",
                               NULL, NULL, 60);
    double sync_s = number_after(out, "\nsync ");
    double async_s = number_after(out, "vs async ");
    CHECK(sync_s >= 0.6);
    CHECK(async_s >= 0.2);
    CHECK(async_s < sync_s);
    CHECK(async_s < 2.0);
    CHECK_EQ(th_count(out, "apply(task, "), 3);
    CHECK_EQ(th_count(out, "result "), 3);
    free(out);
}

TEST(example_cpu_bound_primes)
{
    char *out = th_run_example("seed003_pool_3_cpu_bound_primes",
                               "300000", NULL, 120);
    /* pi(300000) = 25997, on 1 worker and on 2 */
    CHECK_EQ(th_count(out, "primes below 300000: 25997 ("), 2);
    expect_in(out, "speed-up with 2 workers: ");
    free(out);
}

/* The live progress line: every item accounted for (at most one lost,
 * to the worker killed halfway, and then with CONC_EWORKERDIED), the
 * count right when none was lost, the feed held to its buffersize, the
 * workers shown once. */
TEST(example_progress_line)
{
    char *out = th_run_example("seed003_pool_4_progress_line", "600", NULL,
                               120);
    expect_in(out, "counting primes below 1200000 in 600 items");
    expect_in(out, "] 600/600 ");
    expect_in(out, "of 600 (the generator ended)");
    CHECK_EQ(th_count(out, "  worker PoolWorker-"), 2);
    double ok = number_after(out, "done: ");
    double failed = number_after(out, " ok, ");
    CHECK_EQ(ok + failed, 600);
    CHECK(failed <= 1);
    if (failed == 1) {
        expect_in(out, "killed PoolWorker-");
        expect_in(out, ") on item ");
        expect_in(out, "failed: CONC_EWORKERDIED (worker PoolWorker-");
    } else {
        /* pi(1200000) = 92938 */
        expect_in(out, "primes counted in the items that succeeded: 92938\n");
    }
    CHECK(number_after(out, "inputs held at most: ") <= 64);
    free(out);
}

TEST(example_echo_thread_pool)
{
    char *out = th_run_example("seed003_echo_thread_pool", NULL, NULL, 60);
    CHECK_EQ(th_count(out, ": 3 lines echoed"), 5);
    expect_in(out, "server stopped cleanly after 5 connections");
    free(out);
}

TEST(example_echo_process_per_connection)
{
    char *out = th_run_example("seed001_echo_process_per_connection",
                               NULL, NULL, 60);
    CHECK_EQ(th_count(out, ": 3 lines upper-cased"), 5);
    expect_in(out, "server stopped cleanly after 5 connections, 5 processes "
                   "joined");
    free(out);
}

/* ---- 50 clients of our own at once --------------------------------------- */

struct client_arg {
    int port;
    int id;
    bool upper;
    pthread_barrier_t *start;
    int ok;
};

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *client_main(void *arg)
{
    struct client_arg *c = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)c->port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    /* every client is connected before any sends: 50 at once */
    pthread_barrier_wait(c->start);
    c->ok = rc == 0;
    for (int line = 0; line < 5 && c->ok; line++) {
        char msg[96], want[96], got[96];
        int n = snprintf(msg, sizeof msg, "line %d of client %d, mixed Case\n",
                         line, c->id);
        for (int i = 0; i < n; i++) {
            want[i] = c->upper ? (char)toupper((unsigned char)msg[i]) : msg[i];
        }
        if (send_all(fd, msg, (size_t)n) != 0) {
            c->ok = 0;
            break;
        }
        int have = 0;
        while (have < n) {
            ssize_t r = recv(fd, got + have, (size_t)(n - have), 0);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                break;
            }
            have += (int)r;
        }
        c->ok = have == n && memcmp(got, want, (size_t)n) == 0;
    }
    close(fd);
    return NULL;
}

static void fifty_clients(const char *example, bool upper)
{
    enum { N = 50 };
    int pfd[2];
    CHECK_OK(pipe2(pfd, O_CLOEXEC));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        char path[1024];
        snprintf(path, sizeof path, "%s", th_example(example));
        char *argv[] = { path, "serve", "50", NULL };
        execv(path, argv);
        _exit(127);
    }
    close(pfd[1]);
    /* read until the "listening on" line is complete */
    char buf[65536];
    size_t len = 0;
    int port = 0;
    double end = th_now() + 30;
    for (;;) {
        CHECK(th_now() < end);
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t n = read(pfd[0], buf + len, sizeof buf - 1 - len);
        CHECK(n > 0);
        len += (size_t)n;
        buf[len] = '\0';
        char *l = strstr(buf, "listening on 127.0.0.1:");
        if (l != NULL && strchr(l, '\n') != NULL) {
            port = atoi(l + strlen("listening on 127.0.0.1:"));
            break;
        }
    }
    CHECK(port > 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    pthread_t t[N];
    struct client_arg c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (struct client_arg){ port, i + 1, upper, &start, 0 };
        CHECK_OK(pthread_create(&t[i], NULL, client_main, &c[i]));
    }
    int good = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        good += c[i].ok;
    }
    pthread_barrier_destroy(&start);
    CHECK_EQ(good, N);
    /* the server stops by itself, cleanly, after its 50 connections */
    for (;;) {
        CHECK(th_now() < end + 30);
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t n = read(pfd[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(pfd[0]);
    int status = th_wait(pid, 30);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "    --- server output ---\n%s    --- end ---\n", buf);
        th_fail(__FILE__, __LINE__, "server status %#x", (unsigned)status);
    }
    expect_in(buf, "server stopped cleanly after 50 connections");
}

TEST(echo_thread_pool_fifty_clients)
{
    fifty_clients("seed003_echo_thread_pool", false);
}

TEST(echo_process_per_connection_fifty_clients)
{
    fifty_clients("seed001_echo_process_per_connection", true);
}
