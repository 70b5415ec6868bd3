/* seed003_1_countdown_stop.c - stopping a thread: a flag, a timeout loop.
 * Ports seed 003's two ways to end a thread (利用循环条件控制线程 and
 * 利用超时机制控制线程); a thread cannot be killed, it has to stop itself.
 * 1. CountdownTask: the thread counts down from 10, one tick per 0.1 s
 *    (the seed: 5 s), and checks a running flag before every tick; main
 *    clears the flag (terminate()) after 0.35 s and joins it: the count
 *    stops early, within one tick.
 * 2. IOTask: the thread blocks in recv on a socket whose peer never
 *    speaks.  A flag alone would never be looked at, so the socket gets a
 *    0.1 s timeout (sock.settimeout) and each timeout goes round the loop
 *    to check the flag: main clears it and the thread ends within about
 *    one timeout.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TICK 0.1
#define RECV_TIMEOUT 0.1
#define LET_RUN 0.35

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- 1. CountdownTask: the loop condition ------------------------------ */

/* self._running; seq_cst loads and stores, nothing weaker. */
static atomic_bool countdown_running = true;

/* CountdownTask.run(n): returns how many ticks were left. */
static void *countdown(void *arg)
{
    long n = (long)(intptr_t)arg;
    while (atomic_load(&countdown_running) && n > 0) {
        printf("T-minus %ld\n", n);
        n -= 1;
        sleep_s(TICK);
    }
    return (void *)(intptr_t)n;
}

static bool flag_part(void)
{
    conc_thread *t = NULL;
    long start_n = 10;
    int err = conc_thread_new(&t, &(conc_thread_opts){
                                      .target = countdown,
                                      .arg = (void *)(intptr_t)start_n,
                                      .name = "countdown" });
    if (err == 0) {
        err = conc_thread_start(t);
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        conc_thread_free(t);
        return false;
    }
    sleep_s(LET_RUN);
    printf("main: c.terminate() - clearing the running flag\n");
    double cleared = now();
    atomic_store(&countdown_running, false);
    err = conc_thread_join(t, 10.0);
    double latency = now() - cleared;
    void *res = NULL;
    if (err == 0) {
        err = conc_thread_result(t, &res);
    }
    conc_thread_free(t);
    if (err != 0) {
        printf("main: join: %s\n", conc_strerror(err));
        return false;
    }
    long left = (long)(intptr_t)res;
    printf("countdown stopped by the flag with %ld left, %.3f s after the "
           "flag was cleared\n",
           left, latency);
    return left > 0;
}

/* ---- 2. IOTask: a timeout loop around a blocking call -------------------- */

static atomic_bool io_running = true;

/* IOTask.run(sock): returns the number of timeouts it went round. */
static void *io_task(void *arg)
{
    int sock = (int)(intptr_t)arg;
    long timeouts = 0;
    while (atomic_load(&io_running)) {
        char data[8192];
        ssize_t got = recv(sock, data, sizeof data, 0);
        if (got >= 0) {
            printf("io task: received %zd bytes\n", got);
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            timeouts++;
            printf("io task: recv timed out (%ld); still running?\n",
                   timeouts);
            continue;
        }
        if (errno != EINTR) {
            printf("io task: recv failed, errno %d\n", errno);
            return (void *)(intptr_t)-1;
        }
    }
    printf("io task: terminated\n");
    return (void *)(intptr_t)timeouts;
}

static bool timeout_part(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        printf("main: socketpair failed, errno %d\n", errno);
        return false;
    }
    /* sock.settimeout(0.1) */
    struct timeval tv = { .tv_sec = 0,
                          .tv_usec = (suseconds_t)(RECV_TIMEOUT * 1e6) };
    conc_thread *t = NULL;
    int err = 0;
    if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        printf("main: setsockopt failed, errno %d\n", errno);
        err = CONC_ESYS;
    }
    if (err == 0) {
        err = conc_thread_new(&t, &(conc_thread_opts){
                                      .target = io_task,
                                      .arg = (void *)(intptr_t)sv[0],
                                      .name = "io-task" });
    }
    if (err == 0) {
        err = conc_thread_start(t);
    }
    void *res = NULL;
    double latency = 0;
    if (err == 0) {
        sleep_s(LET_RUN);
        printf("main: terminate() - clearing the running flag\n");
        double cleared = now();
        atomic_store(&io_running, false);
        err = conc_thread_join(t, 10.0);
        latency = now() - cleared;
        if (err == 0) {
            err = conc_thread_result(t, &res);
        }
    }
    conc_thread_free(t);
    close(sv[0]);
    close(sv[1]);
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        return false;
    }
    long timeouts = (long)(intptr_t)res;
    printf("timeout loop stopped after %ld timeouts, %.3f s after the flag "
           "was cleared\n",
           timeouts, latency);
    return timeouts >= 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("== 1. a running flag checked by the loop\n");
    bool ok1 = flag_part();
    printf("== 2. a blocking call with a timeout, in a loop\n");
    bool ok2 = timeout_part();
    printf("%s: both threads stopped when asked\n",
           ok1 && ok2 ? "OK" : "FAILED");
    return ok1 && ok2 ? 0 : 1;
}
