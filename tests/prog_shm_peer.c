/* prog_shm_peer.c - an unrelated process for the shm and value tests
 * (exec'd, so it shares nothing with the test but the names):
 *   prog_shm_peer shm NAME      opens the segment, prints "size N" and the
 *                               string at offset 0, writes "pong" at 64
 *   prog_shm_peer value NAME    opens the value, prints "size N" and its
 *                               string, writes "pong" at offset 64
 *   prog_shm_peer incr NAME N   opens a locked value holding a long and
 *                               adds 1 to it N times under its lock
 *   prog_shm_peer create NAME   creates a segment and exits without
 *                               freeing it (the atexit unlink is tested)
 *   prog_shm_peer child-create NAME
 *                               a conc_process child creates the segment
 *                               and returns without freeing it; the peer
 *                               joins it and prints "child exit N"
 *   prog_shm_peer exit-with-child NAME
 *                               starts a child, then creates the segment
 *                               and returns from main; the child, once
 *                               main has all but returned, waits 200 ms
 *                               (the peer is in its exit by then), opens
 *                               the segment and prints "child opened" 
 *   prog_shm_peer unlink NAME   opens the segment and unlinks the name
 * Exit 0 on success, 2 with the error name printed otherwise. */
#include <conc.h>

#include <sched.h>
#include <time.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, int err)
{
    int e = errno;
    printf("%s: %s (errno %s)\n", what, conc_errname(err), strerror(e));
    return 2;
}

/* The read-modify-write is split with a yield in the middle, so that
 * without the lock the two processes' updates would be lost. */
static int incr(const char *name, long n)
{
    conc_value *v = NULL;
    int err = conc_value_open(&v, name);
    if (err != 0) {
        return fail("open", err);
    }
    conc_lock *l = conc_value_lock(v);
    if (l == NULL) {
        conc_value_free(v);
        printf("no lock\n");
        return 2;
    }
    volatile long *counter = conc_value_ptr(v);
    for (long i = 0; i < n; i++) {
        err = conc_lock_acquire(l, 10);
        if (err != 0) {
            conc_value_free(v);
            return fail("acquire", err);
        }
        long c = *counter;
        if (i % 64 == 0) {
            sched_yield();
        }
        *counter = c + 1;
        conc_lock_release(l);
    }
    conc_value_free(v);
    return 0;
}

static int child_creates(void *arg)
{
    conc_shm *m = NULL;
    int err = conc_shm_create(&m, arg, 4096);
    return err != 0 ? fail("child create", err) : 0; /* no free */
}

static conc_event *main_returning;
static const char *late_name;

static int child_opens_late(void *arg)
{
    (void)arg;
    int err = conc_event_wait(main_returning, 20);
    if (err != 0) {
        return fail("child wait", err);
    }
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    conc_shm *m = NULL;
    err = conc_shm_open(&m, late_name);
    if (err != 0) {
        return fail("child open", err);
    }
    printf("child opened\n");
    conc_shm_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "incr") == 0) {
        return incr(argv[2], atol(argv[3]));
    }
    if (argc != 3) {
        return 2;
    }
    const char *mode = argv[1], *name = argv[2];
    int err;
    if (strcmp(mode, "shm") == 0 || strcmp(mode, "unlink") == 0) {
        conc_shm *m = NULL;
        err = conc_shm_open(&m, name);
        if (err != 0) {
            return fail("open", err);
        }
        if (strcmp(mode, "unlink") == 0) {
            err = conc_shm_unlink(m);
            conc_shm_free(m);
            return err != 0 ? fail("unlink", err) : 0;
        }
        char *p = conc_shm_ptr(m);
        printf("size %zu\n", conc_shm_size(m));
        printf("text %.60s\n", p);
        if (conc_shm_size(m) >= 69) {
            memcpy(p + 64, "pong", 5);
        }
        conc_shm_free(m);
        return 0;
    }
    if (strcmp(mode, "value") == 0) {
        conc_value *v = NULL;
        err = conc_value_open(&v, name);
        if (err != 0) {
            return fail("open", err);
        }
        char *p = conc_value_ptr(v);
        printf("size %zu\n", conc_value_size(v));
        printf("text %.60s\n", p);
        printf("lock %s\n", conc_value_lock(v) == NULL ? "none" : "some");
        if (conc_value_size(v) >= 69) {
            memcpy(p + 64, "pong", 5);
        }
        conc_value_free(v);
        return 0;
    }
    if (strcmp(mode, "create") == 0) {
        conc_shm *m = NULL;
        err = conc_shm_create(&m, name, 4096);
        if (err != 0) {
            return fail("create", err);
        }
        printf("created %s\n", conc_shm_name(m));
        return 0; /* no free: the atexit handler must unlink */
    }
    if (strcmp(mode, "child-create") == 0) {
        conc_process *p = NULL;
        int code = -1;
        err = conc_process_new(&p, &(conc_process_opts){
                                       .target = child_creates,
                                       .arg = (void *)name });
        if (err == 0) {
            err = conc_process_start(p);
        }
        if (err == 0) {
            err = conc_process_join(p, 20);
        }
        if (err == 0) {
            err = conc_process_exitcode(p, &code);
        }
        conc_process_free(p);
        if (err != 0) {
            return fail("child", err);
        }
        printf("child exit %d\n", code);
        return 0;
    }
    if (strcmp(mode, "exit-with-child") == 0) {
        /* The child starts before the segment is made: the order in
         * which a program first starts a child and first names a
         * segment must not decide whether the segment outlives main
         * while the exit joins the child. */
        conc_process *p = NULL;
        late_name = name;
        err = conc_event_new(&main_returning, NULL);
        if (err == 0) {
            err = conc_process_new(&p, &(conc_process_opts){
                                           .target = child_opens_late });
        }
        if (err == 0) {
            err = conc_process_start(p);
        }
        conc_shm *m = NULL;
        if (err == 0) {
            err = conc_shm_create(&m, name, 4096);
        }
        if (err != 0) {
            return fail("exit-with-child", err);
        }
        conc_event_set(main_returning);
        /* No join and no free of the segment: the exit handler does
         * both.  The handle goes (a running child is joined at exit all
         * the same). */
        conc_process_free(p);
        return 0;
    }
    return 2;
}
