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
 * so a zeroed record header never passes for a commit).  A queue of
 * lanes (see LANES in queue.c) is lanes such [header, ring] blocks, one
 * after another: the lane count is held to 1..CONC_QUEUE_MAX_LANES, the
 * segment's size to exactly lanes x one block, maxsize to 0, and every
 * further lane's header to lane 0's fields, its own number and a key of
 * its own with the top bit set, before any handle is made.  Each field is
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
#include "net_int.h"

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

size_t conc__queue_lane_size(uint64_t cap)
{
    size_t pg = page_size();
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    return (conc__queue_ring_off() + (size_t)R + pg - 1) / pg * pg;
}

size_t conc__queue_map_size(uint64_t cap, unsigned lanes)
{
    /* No overflow on 64-bit: a lane is under 4 GiB + a page, lanes <= 64. */
    return conc__queue_lane_size(cap) * lanes;
}

static uint64_t random_key(void)
{
    /* The top bit set: no position ever reaches it, so a zeroed ring
     * header (stamp 0) never matches. */
    return conc__os_random64() | (UINT64_C(1) << 63);
}

/* One lane's header, magic last (release: an opener that sees the magic,
 * acquire, sees the whole header). */
/* The high-water mark a new lane starts with (MEMORY in queue.c): its
 * whole ring for a small queue (early wraps would keep it in both cores'
 * caches), else one step. */
static uint64_t first_hw(uint64_t cap)
{
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    bool small = cap <= CONC__QUEUE_NO_EARLY_WRAP || R < CONC__QUEUE_HW_STEP;
    return small ? R : CONC__QUEUE_HW_STEP;
}

static void format_lane(conc__qshm *sh, size_t map_size, uint64_t cap,
                        uint64_t maxsize, unsigned lanes, unsigned lane)
{
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
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
    sh->lanes = lanes;
    sh->lane = lane;
    atomic_init(&sh->hw, first_hw(cap));
    atomic_init(&sh->pmu.state, 0);
    atomic_init(&sh->cmu.state, 0);
    atomic_store_explicit(&sh->magic, CONC__QUEUE_MAGIC,
                          memory_order_release);
}

void conc__queue_format(void *map, size_t map_size, uint64_t cap,
                        uint64_t maxsize, unsigned lanes)
{
    CONC__ASSERT(cap >= 1 && cap <= CONC_QUEUE_MAX_CAPACITY);
    CONC__ASSERT(lanes >= 1 && lanes <= CONC_QUEUE_MAX_LANES);
    CONC__ASSERT(lanes == 1 || maxsize == 0);
    CONC__ASSERT(map_size >= conc__queue_map_size(cap, lanes));
    size_t stride = conc__queue_lane_size(cap);
    /* Lane 0 last: its magic is what an opener waits for. */
    for (unsigned i = lanes; i-- > 0;) {
        format_lane((conc__qshm *)(void *)((unsigned char *)map +
                                           i * stride),
                    map_size, cap, maxsize, lanes, i);
    }
}

/* ---- the header check --------------------------------------------------------- */

typedef struct hdr_copy {
    uint64_t R, key, capacity, maxsize;
    size_t ring_off;
    unsigned lanes;
} hdr_copy;

static int corrupt_field(const char *fn, const char *field, uint64_t v,
                         const char *why)
{
    return conc__fail(CONC_ECORRUPT, "%s: the queue header's %s is %llu: %s",
                      fn, field, (unsigned long long)v, why);
}

/* Reads each field of lane 0's header once and checks it (see "Trusting
 * a header" above); *c gets the checked values. */
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
    uint32_t lanes = FIELD(sh->lanes);
    uint32_t lane = FIELD(sh->lane);
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
    if (lanes == 0 || lanes > CONC_QUEUE_MAX_LANES) {
        return corrupt_field(fn, "lane count", lanes,
                             "not within 1..64");
    }
    if (lane != 0) {
        return corrupt_field(fn, "first lane's number", lane, "not 0");
    }
    if (map_size != size) {
        return corrupt_field(fn, "mapping size", map_size,
                             "not the segment's real size");
    }
    if (map_size != conc__queue_map_size(cap, lanes)) {
        return corrupt_field(fn, "mapping size", map_size,
                             "not the size its capacity needs, times its "
                             "lanes");
    }
    if (maxsize > R / CONC__QUEUE_REC_HDR || (lanes > 1 && maxsize != 0)) {
        return corrupt_field(fn, "maxsize", maxsize,
                             lanes > 1 ? "a bound on a queue of lanes"
                                       : "more records than its ring can "
                                         "hold");
    }
    if ((key >> 63) == 0) {
        return corrupt_field(fn, "key", key, "its top bit is not set");
    }
    *c = (hdr_copy){ .R = R, .key = key, .capacity = cap,
                     .maxsize = maxsize, .ring_off = ring_off,
                     .lanes = lanes };
    return 0;
}

/* Checks the header of lane i (1..lanes-1) of a queue whose lane 0 gave
 * c: every constant field equal to lane 0's (its own key aside, which
 * needs its top bit), and its number i.  *key gets its key. */
static int check_lane(const conc__qshm *sh, unsigned i, size_t size,
                      const hdr_copy *c, const char *fn, uint64_t *key)
{
    uint64_t magic = atomic_load_explicit(&sh->magic, memory_order_acquire);
    if (magic != CONC__QUEUE_MAGIC || FIELD(sh->version) !=
                                          CONC__QUEUE_VERSION) {
        return corrupt_field(fn, "magic or version of a lane", i,
                             "not this library's queue lane");
    }
    if (FIELD(sh->ring_off) != c->ring_off || FIELD(sh->ring_bytes) != c->R ||
        FIELD(sh->capacity) != c->capacity || FIELD(sh->maxsize) != 0 ||
        FIELD(sh->map_size) != size || FIELD(sh->lanes) != c->lanes ||
        FIELD(sh->lane) != i) {
        return corrupt_field(fn, "header of lane", i,
                             "its sizes, lane count or number differ from "
                             "the first lane's");
    }
    *key = FIELD(sh->key);
    if ((*key >> 63) == 0) {
        return corrupt_field(fn, "key of lane", i, "its top bit is not set");
    }
    return 0;
}

/* Fills the handle of one ring (a one-ring queue's, or one lane's). */
static void ring_fill(conc_queue *q, conc__qshm *sh, conc__qshm *top,
                      size_t map_size, const hdr_copy *c, uint64_t key)
{
    /* Mapping sizes after the checks: check_header() held each field of c
     * to these, so the ring lies inside its lane and a record of at
     * most capacity bytes (16 + round16(capacity) = R) wraps once. */
    CONC__ASSERT(c->capacity >= 1 && c->R == CONC__QUEUE_REC_HDR +
                 conc__queue_round16(c->capacity));
    CONC__ASSERT(c->ring_off + c->R <= conc__queue_lane_size(c->capacity));
    CONC__ASSERT(c->maxsize <= c->R / CONC__QUEUE_REC_HDR);
    q->sh = sh;
    q->top = top;
    q->map_size = map_size;
    q->ring = (unsigned char *)sh + c->ring_off;
    q->R = c->R;
    q->key = key;
    q->capacity = c->capacity;
    q->maxsize = c->maxsize;
    q->nlanes = 1;
    atomic_init(&q->spin_get, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->spin_put, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->linger, 0);
    atomic_init(&q->probe, 0);
}

/* Fills the handle from a checked lane 0 (c), checking every further
 * lane first.  0, CONC_ECORRUPT, CONC_ENOMEM (the lanes' handles). */
/* Gives every ring of q (its lanes' handles too) the named segment m
 * whose file backs it. */
static void set_file(conc_queue *q, conc_shm *m)
{
    q->file = m;
    for (unsigned i = 0; q->lane != NULL && i < q->nlanes; i++) {
        q->lane[i].file = m;
    }
}

static int handle_fill(conc_queue *q, void *map, size_t map_size,
                       const hdr_copy *c, const char *fn)
{
    CONC__ASSERT(c->lanes >= 1 && c->lanes <= CONC_QUEUE_MAX_LANES);
    CONC__ASSERT(map_size == conc__queue_map_size(c->capacity, c->lanes));
    conc__qshm *top = map;
    ring_fill(q, top, top, map_size, c, c->key);
    if (c->lanes > 1) {
        size_t stride = conc__queue_lane_size(c->capacity);
        conc_queue *lane = conc__calloc(c->lanes, sizeof *lane);
        _Atomic uint64_t *slot =
            conc__calloc(CONC__QUEUE_PUT_THREADS, sizeof *slot);
        if (lane == NULL || slot == NULL) {
            free(lane);
            free(slot);
            return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
        }
        ring_fill(&lane[0], top, top, map_size, c, c->key);
        for (unsigned i = 1; i < c->lanes; i++) {
            conc__qshm *sh = (conc__qshm *)(void *)((unsigned char *)map +
                                                    i * stride);
            uint64_t key = 0;
            int err = check_lane(sh, i, map_size, c, fn, &key);
            if (err != 0) {
                free(lane);
                free(slot);
                return err;
            }
            ring_fill(&lane[i], sh, top, map_size, c, key);
        }
        q->lane = lane;
        q->nlanes = c->lanes;
        q->put_slot = slot;
    }
    /* Work out this thread's lock identity now (the sync module computes
     * it once per thread and caches it): a queue is usually made before
     * threads start, and it spares the first put the /proc read. */
    (void)conc__sync_self_id();
    return 0;
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
    err = handle_fill(q, map, size, &c, fn);
    if (err != 0) {
        free(q);
        return err;
    }
    q->borrowed = true;
    *out = q;
    return 0;
}

/* ---- the API ---------------------------------------------------------------- */

CONC_API int conc_queue_new(conc_queue **out, const conc_queue_opts *opts)
{
    if (opts != NULL && opts->url != NULL) {
        return conc__netq_new(out, opts);
    }
    static const conc_queue_opts defaults;
    int err = 0;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: out is NULL");
    }
    *out = NULL;
    if (opts == NULL) {
        opts = &defaults;
    }
    /* What only a server honours is refused, as a server refuses
     * capacity_bytes and lanes. */
    const char *server_only =
        conc__timeout_given(opts->lease)         ? "lease"
        : opts->at_most_once                     ? "at_most_once"
        : conc__timeout_given(opts->net_timeout) ? "net_timeout"
                                                 : NULL;
    if (server_only != NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: .%s is for a "
                          "queue on a server (.url)", server_only);
    }
    size_t cap = opts->capacity_bytes ? opts->capacity_bytes
                                      : CONC_QUEUE_DEFAULT_CAPACITY;
    if (cap > CONC_QUEUE_MAX_CAPACITY) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: capacity_bytes %zu "
                          "is over CONC_QUEUE_MAX_CAPACITY", cap);
    }
    unsigned lanes = opts->lanes ? opts->lanes : 1;
    if (lanes > CONC_QUEUE_MAX_LANES) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: lanes %u is over "
                          "CONC_QUEUE_MAX_LANES (%u)", lanes,
                          (unsigned)CONC_QUEUE_MAX_LANES);
    }
    if (lanes > 1 && opts->maxsize != 0) {
        return conc__fail(CONC_EINVAL, "conc_queue_new: maxsize %zu with "
                          "lanes %u: a bound in messages needs one count "
                          "every producer shares, which lanes do away "
                          "with (capacity_bytes bounds each lane)",
                          opts->maxsize, lanes);
    }
    size_t map_size = conc__queue_map_size(cap, lanes);
    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_queue_new: out of memory");
    }
    void *map = NULL;
    if (opts->name != NULL) {
        /* Each lane's header and the ring up to its first hw (and the
         * record header after it, which a getter reads) allocated now;
         * the rest as hw grows (raise_hw in queue.c). */
        err = conc__shm_create_sparse(&q->shm, "conc_queue_new", opts->name,
                                      map_size);
        size_t stride = conc__queue_lane_size(cap);
        uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
        uint64_t used = first_hw(cap) + CONC__QUEUE_REC_HDR;
        used = used < R ? used : R;
        for (unsigned i = 0; err == 0 && i < lanes; i++) {
            err = conc__shm_grow(q->shm, "conc_queue_new", i * stride,
                                 i * stride + conc__queue_ring_off() + used);
        }
        if (err != 0) {
            conc_shm_free(q->shm); /* unlinks: this process made it */
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
    conc__queue_format(map, map_size, cap, opts->maxsize, lanes);
    /* Our own header, just written, checked as any other: it fills the
     * handle the one way every handle is filled.  It fails only if a
     * process of our user opened the new name and rewrote the header in
     * between, which is a peer's doing (CONC_ECORRUPT), not ours. */
    hdr_copy c;
    err = check_header(map, map_size, "conc_queue_new", &c);
    if (err == 0) {
        err = handle_fill(q, map, map_size, &c, "conc_queue_new");
    }
    if (err != 0) {
        if (q->shm != NULL) {
            conc_shm_free(q->shm);
        } else {
            conc__os_shared_free(map, map_size);
        }
        free(q);
        return err;
    }
    set_file(q, q->shm);
    *out = q;
    return 0;
}

CONC_API int conc_queue_open(conc_queue **out, const char *name)
{
    static const char fn[] = "conc_queue_open";
    conc_shm *shm = NULL;
    if (conc__url_is(name)) {
        return conc__netq_open(out, name);
    }
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
    set_file(*out, shm);
    return 0;
}

CONC_API void conc_queue_free(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        conc__netq_free(q);
        return;
    }
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
    free(q->lane);
    free(q->put_slot);
    free(q);
}
