/* queue_map.c - making, opening and freeing conc_queue handles: the
 * shared mapping (anonymous, or a named segment of shm.c), the header's
 * initialisation, and the checks an opener makes before it trusts a
 * header.  The ring itself, and why its header looks as it does, are in
 * queue.c.
 *
 * A named queue is a conc_shm segment (shm.c, the one named-segment
 * layer): the name rules, the refusal of another user's segment, the wait
 * for a creator still making the queue, and who unlinks the name (the
 * creator, at free or at exit, and never a name that now names someone
 * else's segment) are all shm.c's.  The handle keeps the conc_shm.
 *
 * Creation order: the creator sizes the segment, fills the header, and
 * stores the magic last (release); an opener (shm.c) waits, one second in
 * all, for the size and the magic (acquire).
 *
 * Trusting a header.  Whoever can write the segment can write its header,
 * so conc_queue_open checks every field the handle copies before using
 * any: the version (another one: CONC_EINVAL), and then (CONC_ECORRUPT)
 * capacity within 1..CONC_QUEUE_MAX_CAPACITY, ring_bytes exactly 16 +
 * round16(capacity), ring_off exactly where this build puts the ring,
 * map_size exactly the segment's real size and exactly the size the
 * creator computes from capacity (so ring_off + ring_bytes <= size, with
 * no overflow: every term is bounded first), maxsize 0 or at most the
 * records the ring can hold (creation stores 0 for any larger bound,
 * which never binds), and a key with its top bit set (creation sets it,
 * so a zeroed record header never passes for a commit).  Each field is
 * read once, checked, and the handle is filled from the checked copies:
 * a peer rewriting the header meanwhile changes nothing this process
 * believes.  Fields that change while the queue runs (head, tail, their
 * offsets, the counters, hw, record headers) are checked where queue.c
 * reads them.
 *
 * Every OS call here goes through os.h and the fault seam, so tests can
 * fail each in turn; a failure undoes what was done and leaks nothing.
 */
#include "queue_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A plain header field, read once (a peer may be rewriting it). */
#define FIELD(f) __atomic_load_n(&(f), __ATOMIC_RELAXED)

/* ---- layout ----------------------------------------------------------------- */

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

size_t conc__queue_ring_off(void)
{
    size_t p = page_size();
    return (sizeof(conc__qshm) + p - 1) / p * p;
}

size_t conc__queue_map_size(uint64_t cap)
{
    size_t pg = page_size();
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    return (conc__queue_ring_off() + (size_t)R + pg - 1) / pg * pg;
}

static uint64_t random_key(void)
{
    /* The top bit set: no position ever reaches it, so a zeroed ring
     * header (stamp 0) never matches. */
    return conc__os_random64() | (UINT64_C(1) << 63);
}

void conc__queue_format(void *map, size_t map_size, uint64_t cap,
                        uint64_t maxsize)
{
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    conc__qshm *sh = map;
    sh->version = CONC__QUEUE_VERSION;
    sh->ring_off = (uint32_t)conc__queue_ring_off();
    sh->ring_bytes = R;
    sh->capacity = cap;
    /* A bound above the records the ring can hold never binds (each
     * takes 16 bytes at least): stored as "none", so that an opener can
     * hold the field to that range. */
    sh->maxsize = maxsize > R / CONC__QUEUE_REC_HDR ? 0 : maxsize;
    sh->key = random_key();
    sh->map_size = map_size;
    /* Small queues use their whole ring from the start (see MEMORY in
     * queue.c): early wraps would keep it in both cores' caches. */
    bool small = cap <= CONC__QUEUE_NO_EARLY_WRAP || R < CONC__QUEUE_HW_STEP;
    atomic_init(&sh->hw, small ? R : CONC__QUEUE_HW_STEP);
    atomic_init(&sh->pmu.state, 0);
    atomic_init(&sh->cmu.state, 0);
    /* Release: an opener that sees the magic (acquire, in shm.c) sees the
     * whole header. */
    atomic_store_explicit(&sh->magic, CONC__QUEUE_MAGIC,
                          memory_order_release);
}

/* ---- the header check --------------------------------------------------------- */

typedef struct hdr_copy {
    uint64_t R, key, capacity, maxsize;
    size_t ring_off;
} hdr_copy;

static int corrupt_field(const char *fn, const char *field, uint64_t v,
                         const char *why)
{
    return conc__fail(CONC_ECORRUPT, "%s: the queue header's %s is %llu: %s",
                      fn, field, (unsigned long long)v, why);
}

/* Reads each field of the header once and checks it (see "Trusting a
 * header" above); *c gets the checked values. */
static int check_header(const conc__qshm *sh, size_t size, const char *fn,
                        hdr_copy *c)
{
    /* Acquire: pairs with the creator's release store in format (shm.c
     * already waited for it on a named open). */
    uint64_t magic = atomic_load_explicit(&sh->magic, memory_order_acquire);
    uint32_t version = FIELD(sh->version);
    if (magic != CONC__QUEUE_MAGIC) {
        return conc__fail(CONC_EINVAL, "%s: not a libconc queue (magic "
                          "%#llx)", fn, (unsigned long long)magic);
    }
    if (version != CONC__QUEUE_VERSION) {
        return conc__fail(CONC_EINVAL, "%s: a queue of layout version %u; "
                          "this library reads version %u", fn, version,
                          CONC__QUEUE_VERSION);
    }
    uint32_t ring_off = FIELD(sh->ring_off);
    uint64_t R = FIELD(sh->ring_bytes);
    uint64_t cap = FIELD(sh->capacity);
    uint64_t maxsize = FIELD(sh->maxsize);
    uint64_t key = FIELD(sh->key);
    uint64_t map_size = FIELD(sh->map_size);
    if (cap == 0 || cap > CONC_QUEUE_MAX_CAPACITY) {
        return corrupt_field(fn, "capacity", cap,
                             "not within 1..CONC_QUEUE_MAX_CAPACITY");
    }
    /* No overflow: cap < 2^32. */
    if (R != CONC__QUEUE_REC_HDR + conc__queue_round16(cap)) {
        return corrupt_field(fn, "ring size", R,
                             "not 16 + capacity rounded up to 16");
    }
    if (ring_off != conc__queue_ring_off()) {
        return corrupt_field(fn, "ring offset", ring_off,
                             "not where the ring starts");
    }
    if (map_size != size) {
        return corrupt_field(fn, "mapping size", map_size,
                             "not the segment's real size");
    }
    if (map_size != conc__queue_map_size(cap)) {
        return corrupt_field(fn, "mapping size", map_size,
                             "not the size its capacity needs");
    }
    if (maxsize > R / CONC__QUEUE_REC_HDR) {
        return corrupt_field(fn, "maxsize", maxsize,
                             "more records than its ring can hold");
    }
    if ((key >> 63) == 0) {
        return corrupt_field(fn, "key", key, "its top bit is not set");
    }
    *c = (hdr_copy){ .R = R, .key = key, .capacity = cap,
                     .maxsize = maxsize, .ring_off = ring_off };
    return 0;
}

static void handle_fill(conc_queue *q, void *map, size_t map_size,
                        const hdr_copy *c)
{
    q->sh = map;
    q->map_size = map_size;
    q->ring = (unsigned char *)map + c->ring_off;
    q->R = c->R;
    q->key = c->key;
    q->capacity = c->capacity;
    q->maxsize = c->maxsize;
    atomic_init(&q->spin_get, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->spin_put, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->linger, 0);
    atomic_init(&q->probe, 0);
    /* Work out this thread's lock identity now (the sync module computes
     * it once per thread and caches it): a queue is usually made before
     * threads start, and it spares the first put the /proc read. */
    (void)conc__sync_self_id();
}

int conc__queue_attach(conc_queue **out, void *map, size_t size,
                       const char *fn)
{
    hdr_copy c;
    *out = NULL;
    if (size < conc__queue_ring_off()) {
        return conc__fail(CONC_EINVAL, "%s: %zu bytes: too small to be a "
                          "libconc queue", fn, size);
    }
    int err = check_header(map, size, fn, &c);
    if (err != 0) {
        return err;
    }
    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    handle_fill(q, map, size, &c);
    q->borrowed = true;
    *out = q;
    return 0;
}

/* ---- the API ---------------------------------------------------------------- */

CONC_API int conc_queue_new(conc_queue **out, const conc_queue_opts *opts)
{
    static const conc_queue_opts defaults;
    int err = 0;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: out is NULL");
    }
    *out = NULL;
    if (opts == NULL) {
        opts = &defaults;
    }
    size_t cap = opts->capacity_bytes ? opts->capacity_bytes
                                      : CONC_QUEUE_DEFAULT_CAPACITY;
    if (cap > CONC_QUEUE_MAX_CAPACITY) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: capacity_bytes %zu "
                          "is over CONC_QUEUE_MAX_CAPACITY", cap);
    }
    size_t map_size = conc__queue_map_size(cap);
    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_queue_new: out of memory");
    }
    void *map = NULL;
    if (opts->name != NULL) {
        err = conc__shm_create(&q->shm, "conc_queue_new", opts->name,
                               map_size);
        if (err != 0) {
            free(q);
            return err;
        }
        map = conc_shm_ptr(q->shm);
    } else {
        map = conc__os_shared_alloc(map_size);
        if (map == NULL) {
            err = conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                                 "conc_queue_new: mmap of %zu bytes",
                                 map_size);
            free(q);
            return err;
        }
    }
    conc__queue_format(map, map_size, cap, opts->maxsize);
    /* Our own header, just written: the check cannot fail, and it fills
     * the handle the one way every handle is filled. */
    hdr_copy c;
    err = check_header(map, map_size, "conc_queue_new", &c);
    CONC__ASSERT(err == 0);
    handle_fill(q, map, map_size, &c);
    *out = q;
    return 0;
}

CONC_API int conc_queue_open(conc_queue **out, const char *name)
{
    static const char fn[] = "conc_queue_open";
    conc_shm *shm = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    const conc__shm_kind kind = {
        .what = "queue",
        .magic = CONC__QUEUE_MAGIC,
        .magic_size = sizeof(uint64_t),
        .min_size = conc__queue_ring_off(),
    };
    int err = conc__shm_open(&shm, fn, name, &kind);
    if (err != 0) {
        return err;
    }
    err = conc__queue_attach(out, conc_shm_ptr(shm), conc_shm_size(shm), fn);
    if (err != 0) {
        conc_shm_free(shm);
        return err;
    }
    (*out)->shm = shm;
    (*out)->borrowed = false;
    return 0;
}

CONC_API void conc_queue_free(conc_queue *q)
{
    if (q == NULL) {
        return;
    }
    if (q->shm != NULL) {
        /* Unmaps; in the creating process also unlinks the name, if it
         * still names this segment. */
        conc_shm_free(q->shm);
    } else if (!q->borrowed) {
        conc__os_shared_free(q->sh, q->map_size);
    }
    free(q);
}
