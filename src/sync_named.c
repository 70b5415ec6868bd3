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
 * opener waits up to a second for the magic (acquire), so it never sees a
 * half-made object.  A magic of another kind is refused at once.
 *
 * The list is guarded by a spinlock that pthread_atfork takes around
 * fork(), so a child never inherits it held (shm.c does the same).
 *
 * Each named handle keeps its segment's fd open (O_CLOEXEC) until freed:
 * shm.c needs it to tell, at the creator's free, whether the name is still
 * its own.
 */
#include "sync_int.h"

#include <conc/shared.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

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

int conc__sync_named_new(void **region, const char *name, size_t size)
{
    conc_shm *shm;
    /* name is not NULL here (NULL means anonymous); shm.c checks it. */
    int err = conc_shm_create(&shm, name, size);
    if (err != 0) {
        return err;
    }
    return named_add(shm, region);
}

int conc__sync_named_open(void **region, size_t *size, const char *name,
                          uint32_t magic, size_t min_size)
{
    if (name == NULL) {
        return CONC_EINVAL;
    }
    /* One second in all for a creator still making the object: sizing
     * the segment (ENODATA until then), then publishing the magic.  A
     * deadline rather than a count of sleeps, so signals cannot cut it. */
    conc__deadline dl;
    conc__deadline_init(&dl, 1.0);
    conc_shm *shm;
    int err = conc_shm_open(&shm, name);
    while (err == CONC_ESYS && errno == ENODATA &&
           !conc__deadline_passed(&dl)) {
        usleep(1000);
        err = conc_shm_open(&shm, name);
    }
    if (err != 0) {
        return err;
    }
    size_t have = conc_shm_size(shm);
    uint32_t *hdr = conc_shm_ptr(shm);
    if (have < min_size || have < 2 * sizeof(uint32_t)) {
        conc_shm_free(shm);
        return CONC_EINVAL;
    }
    /* Acquire: pairs with the creator's release in conc__sync_publish, so
     * the whole object is seen initialised. */
    uint32_t seen = __atomic_load_n(&hdr[0], __ATOMIC_ACQUIRE);
    while (seen == 0 && !conc__deadline_passed(&dl)) {
        usleep(1000);
        seen = __atomic_load_n(&hdr[0], __ATOMIC_ACQUIRE);
    }
    if (seen != magic || hdr[1] != CONC__SYNC_LAYOUT) {
        conc_shm_free(shm);
        return CONC_EINVAL;
    }
    if (size != NULL) {
        *size = have;
    }
    return named_add(shm, region);
}
