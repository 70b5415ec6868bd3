/* sync_named.c - named sync objects: a Lock, RLock, Semaphore, Event,
 * Condition or Barrier given .name lives in a conc_shm segment
 * (/dev/shm/<name>) instead of an anonymous mapping, so an unrelated
 * process reaches it with conc_X_open(name).
 *
 * The handle of a lock, rlock, semaphore or event is the mapping itself
 * (see lock.c), and stays so: the fast paths are the same for named and
 * anonymous objects.  What a named mapping needs besides - the conc_shm
 * handle that knows the fd, the size and whether this process created the
 * name (and so unlinks it when it frees) - is process-local, so it is kept
 * here, in a list keyed by the mapping's address, and found again by
 * conc__sync_region_free.  A forked child inherits the list with the
 * mappings; its conc_shm copies are not the creator (shm.c compares pids),
 * so its free unmaps without unlinking.
 *
 * Publishing.  The creator initialises the object in the zero-filled
 * segment and stores its magic last (release, conc__sync_publish); an
 * opener waits (shm.c's named open: one second in all, for the size and
 * then the magic, with acquire), so it never sees a half-made object.  A
 * magic of another kind is refused at once, and so is a segment of
 * another user (shm.c).
 *
 * The list is guarded by a spinlock that pthread_atfork takes around
 * fork(), so a child never inherits it held (shm.c does the same).
 *
 * Each named handle keeps its segment's fd open (O_CLOEXEC) until freed:
 * shm.c needs it to tell, at the creator's free, whether the name is still
 * its own.
 */
#include "shm_int.h"
#include "sync_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct named_map {
    void *region;
    conc_shm *shm;
    struct named_map *next;
};

static atomic_flag named_guard = ATOMIC_FLAG_INIT;
static struct named_map *named_head;
/* How many entries the list has: every free of an anonymous object asks
 * the list first, and skips the lock while no named object exists. */
static _Atomic size_t named_count;

static void named_lock(void)
{
    /* acquire pairs with the release in named_unlock(). */
    while (atomic_flag_test_and_set_explicit(&named_guard,
                                             memory_order_acquire)) {
        conc__cpu_relax();
    }
}

static void named_unlock(void)
{
    atomic_flag_clear_explicit(&named_guard, memory_order_release);
}

/* At load time, so the handlers are in place before any fork: a thread
 * may be in the list (say, freeing an anonymous lock) while another forks. */
__attribute__((constructor)) static void named_at_load(void)
{
    pthread_atfork(named_lock, named_unlock, named_unlock);
}

void conc__sync_named_guard(bool hold)
{
    if (hold) {
        named_lock();
    } else {
        named_unlock();
    }
}

/* Records region → shm; on failure frees shm (and so the segment). */
static int named_add(conc_shm *shm, void **region)
{
    struct named_map *n = conc__calloc(1, sizeof *n);
    if (n == NULL) {
        conc_shm_free(shm);
        return CONC_ENOMEM;
    }
    n->region = conc_shm_ptr(shm);
    n->shm = shm;
    named_lock();
    n->next = named_head;
    named_head = n;
    /* Relaxed: a thread freeing this region got the handle from us by
     * some synchronisation, which orders this store before its load. */
    atomic_fetch_add_explicit(&named_count, 1, memory_order_relaxed);
    named_unlock();
    *region = n->region;
    return 0;
}

bool conc__sync_named_release(void *region)
{
    struct named_map *found = NULL;
    if (atomic_load_explicit(&named_count, memory_order_relaxed) == 0) {
        return false;
    }
    named_lock();
    for (struct named_map **pp = &named_head; *pp != NULL;
         pp = &(*pp)->next) {
        if ((*pp)->region == region) {
            found = *pp;
            *pp = found->next;
            atomic_fetch_sub_explicit(&named_count, 1, memory_order_relaxed);
            break;
        }
    }
    named_unlock();
    if (found == NULL) {
        return false;
    }
    conc_shm_free(found->shm);
    free(found);
    return true;
}

/* The public name of a kind's functions, for details: "conc_lock". */
static const char *kind_name(uint32_t magic)
{
    switch (magic) {
    case CONC__SYNC_MAGIC_LOCK:
        return "lock";
    case CONC__SYNC_MAGIC_RLOCK:
        return "rlock";
    case CONC__SYNC_MAGIC_SEM:
        return "sem";
    case CONC__SYNC_MAGIC_EVENT:
        return "event";
    case CONC__SYNC_MAGIC_COND:
        return "cond";
    default:
        return "barrier";
    }
}

int conc__sync_named_new(void **region, const char *name, size_t size,
                         uint32_t magic)
{
    char fn[32];
    snprintf(fn, sizeof fn, "conc_%s_new", kind_name(magic));
    conc_shm *shm;
    /* name is not NULL here (NULL means anonymous); shm.c checks it. */
    int err = conc__shm_create(&shm, fn, name, size);
    if (err != 0) {
        return err;
    }
    err = named_add(shm, region);
    if (err != 0) {
        return conc__fail(err, "%s: out of memory", fn);
    }
    return 0;
}

int conc__sync_named_open(void **region, size_t *size, const char *name,
                          uint32_t magic, size_t min_size)
{
    char fn[32];
    snprintf(fn, sizeof fn, "conc_%s_open", kind_name(magic));
    /* shm.c waits, one second in all, for a creator still making the
     * object (sizing it, then publishing the magic: acquire, pairing with
     * the release in conc__sync_publish, so the whole object is seen
     * initialised), and refuses another kind at once. */
    const conc__shm_kind kind = {
        .what = kind_name(magic),
        .magic = magic,
        .magic_size = sizeof(uint32_t),
        .min_size = min_size > 2 * sizeof(uint32_t) ? min_size
                                                    : 2 * sizeof(uint32_t),
    };
    conc_shm *shm;
    int err = conc__shm_open(&shm, fn, name, &kind);
    if (err != 0) {
        return err;
    }
    size_t have = conc_shm_size(shm);
    const uint32_t *hdr = conc_shm_ptr(shm);
    uint32_t layout = __atomic_load_n(&hdr[1], __ATOMIC_RELAXED);
    if (layout != CONC__SYNC_LAYOUT) {
        err = conc__fail(CONC_EINVAL, "%s: '%s' is a libconc %s of layout "
                         "version %u; this library reads version %u", fn,
                         conc_shm_name(shm), kind.what, layout,
                         CONC__SYNC_LAYOUT);
        conc_shm_free(shm);
        return err;
    }
    if (size != NULL) {
        *size = have;
    }
    err = named_add(shm, region);
    if (err != 0) {
        return conc__fail(err, "%s: out of memory", fn);
    }
    return 0;
}
