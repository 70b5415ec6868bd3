/* prog_sync_peer.c - an unrelated process for tests/test_sync_named.c:
 * started by exec, it opens a named sync object and does one thing.
 *
 *   lock NAME try          acquire(0): print the result
 *   lock NAME take         acquire(10), print the result, release
 *   lock NAME die          acquire(0), print "held", die by SIGKILL
 *   lock NAME create-exit  create NAME, print "made", return from main
 *                          without freeing (atexit must unlink it)
 *   rlock NAME try         acquire(0): print the result
 *   rlock NAME release     release without owning: print the result
 *   sem NAME acquire N     N x acquire(10), print the value after
 *   sem NAME release N     release(N): print the result and the value
 *   event NAME wait        wait(10): print the result
 *   event NAME set         set
 *   cond NAME notify       acquire(10), notify_all, release
 *   barrier NAME wait      print parties, wait(10), print result and index
 *   KIND NAME missing      open: print the error name and errno
 *
 * Every line printed is "what value"; exit status 0 unless something
 * unexpected failed (printed). */
#include <conc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failed(const char *what, int err)
{
    printf("%s failed: %s\n", what, conc_errname(err));
    return 1;
}

#define OPEN_AS(type, fn)                                                  \
    do {                                                                   \
        type *x_ = NULL;                                                   \
        int e_ = fn(&x_, name);                                            \
        *out = x_;                                                         \
        return e_;                                                         \
    } while (0)

static int open_kind(const char *kind, const char *name, void **out)
{
    if (strcmp(kind, "lock") == 0) {
        OPEN_AS(conc_lock, conc_lock_open);
    }
    if (strcmp(kind, "rlock") == 0) {
        OPEN_AS(conc_rlock, conc_rlock_open);
    }
    if (strcmp(kind, "sem") == 0) {
        OPEN_AS(conc_sem, conc_sem_open);
    }
    if (strcmp(kind, "event") == 0) {
        OPEN_AS(conc_event, conc_event_open);
    }
    if (strcmp(kind, "cond") == 0) {
        OPEN_AS(conc_cond, conc_cond_open);
    }
    if (strcmp(kind, "barrier") == 0) {
        OPEN_AS(conc_barrier, conc_barrier_open);
    }
    return CONC_EINVAL;
}

static int do_lock(conc_lock *l, const char *act)
{
    if (strcmp(act, "try") == 0) {
        int err = conc_lock_acquire(l, 0);
        printf("try %s\n", conc_errname(err));
        if (err == 0) {
            conc_lock_release(l);
        }
    } else if (strcmp(act, "take") == 0) {
        int err = conc_lock_acquire(l, 10);
        printf("take %s\n", conc_errname(err));
        if (err == 0 || err == CONC_EOWNERDEAD) {
            conc_lock_release(l);
        }
    } else if (strcmp(act, "die") == 0) {
        int err = conc_lock_acquire(l, 0);
        if (err != 0) {
            return failed("acquire", err);
        }
        printf("held\n");
        fflush(stdout);
        raise(SIGKILL);
    } else {
        return failed(act, CONC_EINVAL);
    }
    conc_lock_free(l);
    return 0;
}

static int do_rlock(conc_rlock *r, const char *act)
{
    int err;
    if (strcmp(act, "try") == 0) {
        err = conc_rlock_acquire(r, 0);
        printf("try %s\n", conc_errname(err));
    } else if (strcmp(act, "release") == 0) {
        err = conc_rlock_release(r);
        printf("release %s\n", conc_errname(err));
    } else {
        return failed(act, CONC_EINVAL);
    }
    conc_rlock_free(r);
    return 0;
}

static int do_sem(conc_sem *s, const char *act, int n)
{
    if (strcmp(act, "acquire") == 0) {
        for (int i = 0; i < n; i++) {
            int err = conc_sem_acquire(s, 10);
            if (err != 0) {
                return failed("acquire", err);
            }
        }
        printf("value %ld\n", conc_sem_value(s));
    } else if (strcmp(act, "release") == 0) {
        int err = conc_sem_release(s, (unsigned)n);
        printf("release %s value %ld\n", conc_errname(err), conc_sem_value(s));
    } else {
        return failed(act, CONC_EINVAL);
    }
    conc_sem_free(s);
    return 0;
}

static int do_event(conc_event *e, const char *act)
{
    if (strcmp(act, "wait") == 0) {
        printf("wait %s\n", conc_errname(conc_event_wait(e, 10)));
    } else if (strcmp(act, "set") == 0) {
        int err = conc_event_set(e);
        if (err != 0) {
            return failed("set", err);
        }
    } else {
        return failed(act, CONC_EINVAL);
    }
    conc_event_free(e);
    return 0;
}

static int do_cond(conc_cond *c, const char *act)
{
    if (strcmp(act, "notify") != 0) {
        return failed(act, CONC_EINVAL);
    }
    int err = conc_cond_acquire(c, 10);
    if (err != 0) {
        return failed("acquire", err);
    }
    err = conc_cond_notify_all(c);
    if (err != 0) {
        return failed("notify_all", err);
    }
    err = conc_cond_release(c);
    if (err != 0) {
        return failed("release", err);
    }
    conc_cond_free(c);
    return 0;
}

static int do_barrier(conc_barrier *b, const char *act)
{
    if (strcmp(act, "wait") != 0) {
        return failed(act, CONC_EINVAL);
    }
    printf("parties %u\n", conc_barrier_parties(b));
    int index = -1;
    int err = conc_barrier_wait(b, 10, &index);
    printf("wait %s index %d\n", conc_errname(err), index);
    conc_barrier_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s kind name action [n]\n", argv[0]);
        return 1;
    }
    const char *kind = argv[1], *name = argv[2], *act = argv[3];
    int n = argc > 4 ? atoi(argv[4]) : 1;
    if (strcmp(act, "create-exit") == 0) {
        conc_lock *l;
        int err = conc_lock_new(&l, &(conc_lock_opts){ .name = name });
        if (err != 0) {
            return failed("new", err);
        }
        printf("made\n");
        return 0;
    }
    void *obj = NULL;
    int err = open_kind(kind, name, &obj);
    if (strcmp(act, "missing") == 0) {
        printf("%s %d\n", conc_errname(err), err == CONC_ESYS ? errno : 0);
        return err == 0 ? 1 : 0;
    }
    if (err != 0) {
        return failed("open", err);
    }
    if (strcmp(kind, "lock") == 0) {
        return do_lock(obj, act);
    }
    if (strcmp(kind, "rlock") == 0) {
        return do_rlock(obj, act);
    }
    if (strcmp(kind, "sem") == 0) {
        return do_sem(obj, act, n);
    }
    if (strcmp(kind, "event") == 0) {
        return do_event(obj, act);
    }
    if (strcmp(kind, "cond") == 0) {
        return do_cond(obj, act);
    }
    return do_barrier(obj, act);
}
