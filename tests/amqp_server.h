/* amqp_server.h - the one RabbitMQ broker the AMQP tests share.
 *
 * Booting RabbitMQ takes seconds (Erlang), so the tests do not start a
 * broker each: CTest's fixture amqp_broker_start runs
 * tests/amqp_broker.sh start BUILD/amqp-broker before the first test that
 * needs it, and amqp_broker_stop stops it (and its epmd) after the last
 * (cmake/amqp.cmake).  Those tests run one at a time, so a test may
 * freeze (SIGSTOP) or restart the broker.  A test binary run by hand
 * finds the broker through $CONC_AMQP_DIR or the default directory, and
 * fails with a clear message when there is none: start one with
 *   bash tests/amqp_broker.sh start build/plain/amqp-broker
 * The broker offers a 1 s heartbeat, so a client that kept heartbeats
 * without servicing them would be cut off within 2-3 s (the liveness
 * test relies on it).  Every test uses queues of fresh random names.
 */
#ifndef CONC_TEST_AMQP_SERVER_H
#define CONC_TEST_AMQP_SERVER_H

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

typedef struct th_amqp {
    char dir[512];
    char url[300];   /* amqp://guest:guest@127.0.0.1:PORT/%2f */
    int port;
    pid_t beam;
} th_amqp;

/* Whether libconc was built with the backend for scheme (net.c). */
bool conc__net_backend_built(const char *scheme);

static inline void th_amqp_read(const char *dir, const char *file, char *buf,
                                size_t cap)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(buf, (int)cap, f) == NULL) {
        if (f != NULL) {
            fclose(f);
        }
        th_fail(__FILE__, __LINE__, "no broker in %s (%s missing): run the "
                "tests with ctest, or start one with `bash "
                "tests/amqp_broker.sh start %s`", dir, file, dir);
    }
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static inline void th_amqp_get(th_amqp *a)
{
    const char *d = getenv("CONC_AMQP_DIR");
    snprintf(a->dir, sizeof a->dir, "%s",
             d != NULL ? d : CONC_TESTS_DIR "/../amqp-broker");
    th_amqp_read(a->dir, "url", a->url, sizeof a->url);
    char buf[32];
    th_amqp_read(a->dir, "port", buf, sizeof buf);
    a->port = atoi(buf);
    th_amqp_read(a->dir, "pid", buf, sizeof buf);
    a->beam = (pid_t)atoi(buf);
}

/* A fresh queue name: prefix and 16 random hex digits. */
static inline void th_amqp_name(char *buf, size_t cap, const char *prefix)
{
    uint64_t r = 0;
    FILE *f = fopen("/dev/urandom", "r");
    if (f == NULL || fread(&r, sizeof r, 1, f) != 1) {
        th_fail(__FILE__, __LINE__, "/dev/urandom");
    }
    fclose(f);
    snprintf(buf, cap, "%s-%016llx", prefix, (unsigned long long)r);
}

/* The URL naming queue name: url/name. */
static inline void th_amqp_qurl(const th_amqp *a, const char *name,
                                char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", a->url, name);
}

/* Runs tests/amqp_broker.sh CMD DIR, failing the test unless it exits 0. */
static inline void th_amqp_script(const th_amqp *a, const char *cmd)
{
    const char *script = getenv("CONC_AMQP_SCRIPT");
    if (script == NULL) {
        script = CONC_TESTS_DIR "/../../../tests/amqp_broker.sh";
    }
    char *argv[] = { (char *)"/bin/bash", (char *)script, (char *)cmd,
                     (char *)a->dir, NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 120);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "amqp_broker.sh %s: %s", cmd,
                out != NULL ? out : "");
    }
    free(out);
}

/* Freezes / thaws the broker's Erlang VM.  kill() returns before the
 * target has stopped (a busy machine may let it run a while longer):
 * th_amqp_stop waits until /proc shows it stopped ('T'). */
static inline void th_amqp_stop(const th_amqp *a)
{
    CHECK(kill(a->beam, SIGSTOP) == 0);
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)a->beam);
    for (int i = 0; i < 5000; i++) {
        bool all = true;
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d != NULL && all && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char path[384], buf[512] = { 0 };
            snprintf(path, sizeof path, "%s/%s/stat", dir, de->d_name);
            FILE *f = fopen(path, "r");
            size_t n = f != NULL ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f != NULL) {
                fclose(f);
            }
            const char *rp = n > 0 ? strrchr(buf, ')') : NULL;
            all = rp != NULL && rp[1] == ' ' && (rp[2] == 'T' || rp[2] == 't');
        }
        if (d != NULL) {
            closedir(d);
        }
        if (all) {
            return;
        }
        th_sleep(0.001);
    }
    th_fail(__FILE__, __LINE__, "the broker (pid %d) did not stop",
            (int)a->beam);
}
static inline void th_amqp_cont(const th_amqp *a)
{
    CHECK(kill(a->beam, SIGCONT) == 0);
}

#endif
