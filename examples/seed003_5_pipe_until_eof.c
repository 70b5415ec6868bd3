/* seed003_5_pipe_until_eof.c - Pipe(): two connected ends.  Ports seed
 * 003's Pipe example: the child sends [1, None, 'hello'], [2, ...],
 * [3, ...], sleeps (the seed: 2 s, here 0.2 s), sends [4, ...] and closes
 * its end; the parent receives in a loop.  In the seed the loop never
 * ends - after the fourth message it prints 'no' for ever, because the
 * parent still holds its own copy of the child's end, so the pipe never
 * reaches end of file (the author concluded a pipe only closes when the
 * sending process is killed).  Here the parent frees its copy of the
 * child's end right after starting the child, as a pipe's owner should:
 * once the child closes its end, conc_conn_recv returns CONC_ECLOSED
 * (Python's EOFError) and the loop ends after exactly four messages.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static conc_conn *parent_conn, *child_conn;

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int send_text(conc_conn *c, int n)
{
    char buf[64];
    int len = snprintf(buf, sizeof buf, "[%d, None, 'hello']", n);
    return conc_conn_send(c, buf, (size_t)len);
}

/* f(conn) */
static int f(void *arg)
{
    (void)arg;
    conc_conn_free(parent_conn); /* the child only uses its own end */
    int err = 0;
    for (int n = 1; n <= 3 && err == 0; n++) {
        err = send_text(child_conn, n);
    }
    sleep_s(0.2);
    if (err == 0) {
        err = send_text(child_conn, 4);
    }
    conc_conn_close(child_conn);
    conc_conn_free(child_conn);
    return err == 0 ? 0 : 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int err = conc_pipe(&parent_conn, &child_conn, true);
    if (err == 0) {
        err = conc_process_new(&p, &(conc_process_opts){ .target = f });
    }
    if (err == 0) {
        err = conc_process_start(p);
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        conc_process_free(p);
        conc_conn_free(parent_conn);
        conc_conn_free(child_conn);
        return 1;
    }
    /* The parent's copy of the child's end: free it, or the pipe would
     * never reach end of file (the seed's endless loop). */
    conc_conn_free(child_conn);
    child_conn = NULL;

    int received = 0;
    bool ok = true;
    for (;;) {
        conc_msg m;
        err = conc_conn_recv(parent_conn, &m, 10.0);
        if (err == CONC_ECLOSED) {
            printf("EOFError: the child closed its end - the loop ends\n");
            break;
        }
        if (err != 0) {
            printf("recv: %s\n", conc_strerror(err));
            ok = false;
            break;
        }
        received++;
        char expect[64];
        int n = snprintf(expect, sizeof expect, "[%d, None, 'hello']",
                         received);
        printf("%.*s\n", (int)m.len, (const char *)m.data);
        ok = ok && m.len == (size_t)n && memcmp(m.data, expect, m.len) == 0;
        conc_msg_free(&m);
    }
    int code = -1;
    err = conc_process_join(p, 10.0);
    if (err == 0) {
        err = conc_process_exitcode(p, &code);
    }
    conc_process_free(p);
    conc_conn_free(parent_conn);
    ok = ok && received == 4 && err == 0 && code == 0;
    printf("%s: %d messages, then end of file\n", ok ? "OK" : "FAILED",
           received);
    return ok ? 0 : 1;
}
