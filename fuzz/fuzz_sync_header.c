/* fuzz_sync_header.c - the named sync objects (lock, rlock, semaphore,
 * event, condition, barrier) as an opener finds them in a segment another
 * process wrote: conc_X_open's checks (shm.c's kind and size checks,
 * sync_named.c's layout check, the condition's embedded RLock, the
 * barrier's parties and slot count) and then a round of calls that
 * never wait (timeout 0).
 *
 * Input: byte 0 picks the kind (and a barrier's parties); the rest is
 * XORed over the segment conc_X_new made, through a second mapping, so
 * an all-zero input is a good object.  Inputs that would clear the magic
 * are skipped (an opener then waits a second for a creator; the sync
 * tests cover that).
 *
 * Properties: open answers 0, CONC_EINVAL or CONC_ECORRUPT (the errors
 * with a detail), and on 0 the calls end in one of the codes their
 * headers name, without touching memory outside the segment.  Barrier
 * waits are left out: Python's barrier waits, without a deadline, for a
 * round that is draining or resetting, and a rewritten state can say so
 * for ever. */
#include "fuzz_check.h"
#include "shm_int.h"
#include "sync_int.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { K_LOCK, K_RLOCK, K_SEM, K_EVENT, K_COND, K_BARRIER, K_KINDS };

static const uint32_t magics[K_KINDS] = {
    CONC__SYNC_MAGIC_LOCK,  CONC__SYNC_MAGIC_RLOCK, CONC__SYNC_MAGIC_SEM,
    CONC__SYNC_MAGIC_EVENT, CONC__SYNC_MAGIC_COND,  CONC__SYNC_MAGIC_BARRIER,
};

static void open_error(int err)
{
    FUZZ_CHECK(err == CONC_EINVAL || err == CONC_ECORRUPT);
    FUZZ_CHECK(strncmp(conc_errdetail(), "conc_", 5) == 0 &&
                 strstr(conc_errdetail(), "_open") != NULL);
}

static bool held(int err)
{
    FUZZ_CHECK(err == 0 || err == CONC_EOWNERDEAD ||
                 err == CONC_ETIMEDOUT);
    return err != CONC_ETIMEDOUT;
}

static void try_kind(int kind, const char *name, unsigned parties)
{
    int err;
    switch (kind) {
    case K_LOCK: {
        conc_lock *l = NULL;
        err = conc_lock_open(&l, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        (void)conc_lock_locked(l);
        if (held(conc_lock_acquire(l, 0))) {
            err = conc_lock_release(l);
            FUZZ_CHECK(err == 0 || err == CONC_EPERM);
        }
        conc_lock_free(l);
        return;
    }
    case K_RLOCK: {
        conc_rlock *r = NULL;
        err = conc_rlock_open(&r, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        if (held(conc_rlock_acquire(r, 0))) {
            err = conc_rlock_release(r);
            FUZZ_CHECK(err == 0 || err == CONC_EPERM);
        }
        conc_rlock_free(r);
        return;
    }
    case K_SEM: {
        conc_sem *s = NULL;
        err = conc_sem_open(&s, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        err = conc_sem_acquire(s, 0);
        FUZZ_CHECK(err == 0 || err == CONC_ETIMEDOUT);
        err = conc_sem_release(s, 1);
        FUZZ_CHECK(err == 0 || err == CONC_EINVAL);
        (void)conc_sem_value(s);
        conc_sem_free(s);
        return;
    }
    case K_EVENT: {
        conc_event *e = NULL;
        err = conc_event_open(&e, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        (void)conc_event_is_set(e);
        err = conc_event_wait(e, 0);
        FUZZ_CHECK(err == 0 || err == CONC_ETIMEDOUT);
        FUZZ_CHECK(conc_event_set(e) == 0);
        FUZZ_CHECK(conc_event_wait(e, 0) == 0);
        FUZZ_CHECK(conc_event_clear(e) == 0);
        conc_event_free(e);
        return;
    }
    case K_COND: {
        conc_cond *c = NULL;
        err = conc_cond_open(&c, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        if (held(conc_cond_acquire(c, 0))) {
            err = conc_cond_notify(c, 1);
            FUZZ_CHECK(err == 0 || err == CONC_EPERM);
            err = conc_cond_wait(c, 0);
            FUZZ_CHECK(err == 0 || err == CONC_ETIMEDOUT ||
                         err == CONC_EOWNERDEAD || err == CONC_EPERM);
            err = conc_cond_release(c);
            FUZZ_CHECK(err == 0 || err == CONC_EPERM);
        }
        conc_cond_free(c);
        return;
    }
    default: {
        conc_barrier *b = NULL;
        err = conc_barrier_open(&b, name);
        if (err != 0) {
            open_error(err);
            return;
        }
        FUZZ_CHECK(conc_barrier_parties(b) >= 1);
        (void)conc_barrier_n_waiting(b);
        (void)conc_barrier_broken(b);
        (void)parties;
        conc_barrier_free(b);
        return;
    }
    }
}

static int make(int kind, const char *name, unsigned parties, void **obj)
{
    switch (kind) {
    case K_LOCK:
        return conc_lock_new((conc_lock **)obj,
                             &(conc_lock_opts){ .name = name });
    case K_RLOCK:
        return conc_rlock_new((conc_rlock **)obj,
                              &(conc_rlock_opts){ .name = name });
    case K_SEM:
        return conc_sem_new((conc_sem **)obj,
                            &(conc_sem_opts){ .value = 2, .name = name });
    case K_EVENT:
        return conc_event_new((conc_event **)obj,
                              &(conc_event_opts){ .name = name });
    case K_COND:
        return conc_cond_new((conc_cond **)obj,
                             &(conc_cond_opts){ .name = name });
    default:
        return conc_barrier_new((conc_barrier **)obj,
                                &(conc_barrier_opts){ .parties = parties,
                                                      .name = name });
    }
}

static void unmake(int kind, void *obj)
{
    switch (kind) {
    case K_LOCK:
        conc_lock_free(obj);
        break;
    case K_RLOCK:
        conc_rlock_free(obj);
        break;
    case K_SEM:
        conc_sem_free(obj);
        break;
    case K_EVENT:
        conc_event_free(obj);
        break;
    case K_COND:
        conc_cond_free(obj);
        break;
    default:
        conc_barrier_free(obj);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    int kind = data[0] % K_KINDS;
    unsigned parties = 1 + data[0] / K_KINDS % 8;
    uint32_t flip = 0;
    for (size_t i = 1; i < size && i <= 4; i++) {
        flip |= (uint32_t)data[i] << (8 * (i - 1));
    }
    if (flip == magics[kind]) {
        return 0; /* the magic would read 0: a creator still at work */
    }
    char name[64];
    snprintf(name, sizeof name, "/conc_fuzz_sync_%d", (int)getpid());
    void *obj = NULL;
    if (make(kind, name, parties, &obj) != 0) {
        return 0; /* a name left by a killed run, say */
    }
    conc_shm *m = NULL;
    FUZZ_CHECK(conc_shm_open(&m, name) == 0);
    unsigned char *seg = conc_shm_ptr(m);
    size_t seg_size = conc_shm_size(m);
    for (size_t i = 1; i < size && i - 1 < seg_size; i++) {
        seg[i - 1] ^= data[i];
    }
    try_kind(kind, name, parties);
    /* The creator's own handle may find its object garbled: it is only
     * freed, which touches nothing inside. */
    conc_shm_free(m);
    unmake(kind, obj);
    return 0;
}
