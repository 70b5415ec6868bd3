/* dict_int.h - what the dict's two files share: the layout of a dict's
 * segment (src/dict.c's opening comment explains it), the process-local
 * handle, the per-call view of the segment's changing fields, and the
 * checks every reference read from the segment passes before it is
 * followed.  dict.c holds the public calls, the lock and the lookups;
 * dict_heap.c the heap (allocator, growth), the index (tables and their
 * migration) and the repair.  The tests and the fuzz target include this
 * file to reach inside a segment. */
#ifndef CONC_DICT_INT_H
#define CONC_DICT_INT_H

#include "shared_int.h"
#include "sync_int.h"

#include <stdatomic.h>
#include <string.h>

#define CONC__DICT_MAGIC 0x5443494443434e4full /* "ONCCDICT" */
#define CONC__DICT_VERSION 2u
#define CONC__DICT_HDR_SIZE 4096u /* the header page; the heap follows it */
#define CONC__DICT_UNIT_SHIFT 6u  /* a ref counts 64-byte units from offset 0 */
#define CONC__DICT_MIN_ORDER 6u   /* the smallest block: 64 bytes */
#define CONC__DICT_MAX_ORDER 38u  /* 2^32 refs of 64 bytes */
#define CONC__DICT_ENTRY_HDR 24u
#define CONC__DICT_MIN_LIMIT (((uint64_t)64 << 10) + CONC__DICT_HDR_SIZE)
#define CONC__DICT_DEFAULT_LIMIT ((uint64_t)64 << 30)
#define CONC__DICT_FALLBACK_LIMIT ((uint64_t)1 << 30)
#define CONC__DICT_MAX_LIMIT ((uint64_t)1 << 38)
#define CONC__DICT_FIRST_SIZE ((uint64_t)64 << 10) /* the file at creation */
#define CONC__DICT_GROW_MIN ((uint64_t)64 << 10)
#define CONC__DICT_GROW_MAX ((uint64_t)2 << 20)
#define CONC__DICT_MIN_BITS 4u  /* the smallest index: 16 buckets */
#define CONC__DICT_MAX_BITS 30u
#define CONC__DICT_MIGRATE_STEP 4u /* full buckets moved by each writing call */
#define CONC__DICT_BACK_BUCKETS 16384u /* new-table heads backed at a time */

/* A block's tag: a 24-bit magic and its order. */
#define CONC__BLK_USED 0x555344u /* "USD" */
#define CONC__BLK_FREE 0x465245u /* "FRE" */
#define CONC__BLK_TAG(magic, order) ((uint32_t)(magic) << 8 | (uint32_t)(order))

/* The index state word (conc__dict_hdr.ix), one 64-bit store per change. */
#define CONC__IX_ACTIVE 1ull /* migrating from the main table to the other */
#define CONC__IX_INITED 2ull /* the cursor bucket's new heads are zeroed */
#define CONC__IX_CUR 4ull    /* which slot of tab/bits is the main table */
#define CONC__IX_LOW_BITS 7ull

/* A block's first 24 bytes.  An entry (USED) is followed by its key, and
 * its value 8-aligned after the key; a FREE block uses next and prev for
 * the doubly linked free list of its order.  Index tables have no header
 * (the dict header names them). */
typedef struct conc__dict_blk {
    uint32_t tag;          /* CONC__BLK_TAG(CONC__BLK_USED or _FREE, order) */
    _Atomic uint32_t next; /* USED: chain link; FREE: next on its list */
    union {
        uint32_t hash; /* USED: the key hash's high 32 bits */
        uint32_t prev; /* FREE: previous on its list (0: the head) */
    };
    uint32_t klen;
    uint64_t vlen;
} conc__dict_blk;
_Static_assert(sizeof(conc__dict_blk) == CONC__DICT_ENTRY_HDR,
               "entry header is 24 bytes");

typedef struct conc__dict_hdr {
    /* Written once at creation; read once at open, checked, and kept in
     * the handle: never trusted again from here. */
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t max_order; /* log2 of the largest block the limit allows */
    uint64_t limit;     /* bytes each process maps; the file stays below */
    uint64_t hash_seed;
    /* The lock and the repair flag, on a cache line of their own. */
    _Alignas(64) conc__olock lock;
    _Atomic uint32_t writing; /* a writer is between two consistent states */
    /* Guarded by the lock; read once per call and checked (conc__dict_view). */
    _Alignas(64) _Atomic uint64_t heap_size; /* the file is at least
                                                CONC__DICT_HDR_SIZE + this */
    _Atomic uint64_t ix;        /* index state: IX_* | cursor << 32 */
    _Atomic uint32_t tab[2];    /* the index tables' refs */
    _Atomic uint32_t bits[2];   /* log2 of their bucket counts */
    _Atomic uint32_t mig_entry; /* the entry being moved, or 0 */
    uint32_t reserved;
    uint64_t count;
    uint64_t free_bytes;
    uint64_t takeovers, rebuilds, grows, resizes;
    _Atomic uint32_t free_head[CONC__DICT_MAX_ORDER + 1];
} conc__dict_hdr;
_Static_assert(sizeof(conc__dict_hdr) <= CONC__DICT_HDR_SIZE,
               "header fits its page");

/* The process-local handle.  Forked children share it with the parent
 * (plain memory over a MAP_SHARED mapping and an inherited descriptor). */
struct conc_dict {
    /* A dict on a server (.url): only this is set, and every public
     * function hands the handle to net_dict.c (net_int.h) first. */
    struct conc__netd *net;
    char *base;     /* the mapping: the header at offset 0 */
    conc_shm *shm;  /* the segment: named, or an unnamed memfd */
    uint64_t limit; /* bytes mapped: the file may grow up to here */
    uint64_t seed;
    uint32_t max_order;
    /* Bytes of the file known to exist (fstat, or our own growth): only
     * grows.  Relaxed: a hint shared by this process's threads, each of
     * which holds the dict's lock while it reads or raises it. */
    _Atomic uint64_t file_ok;
    /* The most bytes one call of this process backed at once (a growth,
     * a stretch of a new index table, a repair's free stretch): the
     * tests' measure of the longest pause growth costs a call.  Relaxed,
     * like file_ok. */
    _Atomic uint64_t most_backed;
    /* The last view that passed every check (conc__dict_view), with the
     * header words it was read from: a call whose words are the same
     * takes it as is (a few compares instead of the checks).  Guarded by
     * the dict's lock, like the header words themselves. */
    struct conc__dict_view_cache {
        bool ok;
        uint64_t hs, ix;
        uint32_t tab[2], bits[2]; /* the main table's, then the new one's */
        uint32_t lo, hi;
        _Atomic uint32_t *ot, *nt;
    } view;
};

/* One call's view of the segment's changing fields, read once under the
 * lock and checked (conc__dict_view); the call's own changes update it. */
typedef struct conc__dctx {
    conc_dict *d;
    conc__dict_hdr *h;
    char *base;
    const char *fn; /* the public call, for error details */
    uint64_t heap_size;
    uint32_t lo, hi; /* the heap's refs: [lo, hi) */
    uint32_t max_order;
    uint64_t ix;
    uint32_t cursor;
    bool active;
    uint32_t obits, nbits; /* main (old) and new table: log2 buckets */
    uint32_t oref, nref;
    _Atomic uint32_t *ot, *nt; /* their heads */
} conc__dctx;

/* An entry that passed ent_load: its fields as read, once. */
typedef struct conc__dict_ent {
    conc__dict_blk *b;
    uint32_t hash, klen, order;
    uint64_t vlen;
} conc__dict_ent;

/* ---- reading the segment ------------------------------------------------
 * Every field another process may rewrite is loaded once, with a relaxed
 * atomic load, into a local that is checked and then used: a peer that
 * rewrites it meanwhile cannot make a checked value differ from the one
 * used.  Relaxed suffices: the dict's lock orders honest writers. */

static inline uint32_t conc__dict_rd32(const void *p)
{
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}

static inline uint64_t conc__dict_rd64(const void *p)
{
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

static inline void conc__dict_wr32(void *p, uint32_t v)
{
    __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

static inline void conc__dict_wr64(void *p, uint64_t v)
{
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

/* Makes a block reachable or unreachable: the one store that publishes a
 * change.  Release keeps every earlier write of the entry's bytes before
 * the link (the compiler may not sink them past it), so a writer killed
 * right after this store never leaves a link to unwritten bytes. */
static inline void conc__dict_publish(_Atomic uint32_t *link, uint32_t ref)
{
    atomic_store_explicit(link, ref, memory_order_release);
}

static inline conc__dict_blk *conc__dict_blk_at(const conc__dctx *c,
                                                uint32_t ref)
{
    return (conc__dict_blk *)(c->base + ((size_t)ref << CONC__DICT_UNIT_SHIFT));
}

static inline size_t conc__dict_round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* The most the heap may grow to: the limit less the header, in whole
 * pages. */
static inline uint64_t conc__dict_max_heap(const conc_dict *d)
{
    return (d->limit - CONC__DICT_HDR_SIZE) & ~(uint64_t)4095;
}

/* log2 of the block an index of 2^bits buckets occupies. */
static inline uint32_t conc__dict_table_order(uint32_t bits)
{
    return bits + 2 < CONC__DICT_MIN_ORDER ? CONC__DICT_MIN_ORDER : bits + 2;
}

/* Whether [ref, ref + 2^order) is a block position of the heap: inside
 * it, aligned to its size (relative to the heap's start). */
static inline bool conc__dict_blk_fits(const conc__dctx *c, uint32_t ref,
                                       uint32_t order)
{
    if (order < CONC__DICT_MIN_ORDER || order > c->max_order) {
        return false;
    }
    uint32_t rel = ref - c->lo; /* wraps above hi when ref < lo */
    uint64_t units = (uint64_t)1 << (order - CONC__DICT_UNIT_SHIFT);
    return rel < c->hi - c->lo && (rel & (units - 1)) == 0 &&
           (uint64_t)rel + units <= (uint64_t)(c->hi - c->lo);
}

/* Loads the entry at ref into *e if it is one: a USED block in the heap,
 * aligned, whose key and value fit inside it.  False otherwise. */
static inline bool conc__dict_ent_load(const conc__dctx *c, uint32_t ref,
                                       conc__dict_ent *e)
{
    if (ref - c->lo >= c->hi - c->lo) {
        return false;
    }
    conc__dict_blk *b = conc__dict_blk_at(c, ref);
    uint32_t tag = conc__dict_rd32(&b->tag);
    uint32_t order = tag & 0xff;
    if ((tag >> 8) != CONC__BLK_USED || !conc__dict_blk_fits(c, ref, order)) {
        return false;
    }
    uint64_t size = (uint64_t)1 << order;
    uint32_t klen = conc__dict_rd32(&b->klen);
    uint64_t vlen = conc__dict_rd64(&b->vlen);
    if (klen > size || vlen > size ||
        CONC__DICT_ENTRY_HDR + conc__dict_round8(klen) + vlen > size) {
        return false;
    }
    e->b = b;
    e->hash = conc__dict_rd32(&b->hash);
    e->klen = klen;
    e->vlen = vlen;
    e->order = order;
    return true;
}

static inline unsigned char *conc__dict_ent_key(const conc__dict_ent *e)
{
    return (unsigned char *)e->b + CONC__DICT_ENTRY_HDR;
}

static inline unsigned char *conc__dict_ent_val(const conc__dict_ent *e)
{
    return (unsigned char *)e->b + CONC__DICT_ENTRY_HDR +
           conc__dict_round8(e->klen);
}

/* Brent's cycle finder, one compare per step: a walk that meets a ref it
 * saved is a cycle.  Any chain that loops is caught within about twice
 * the length of its tail and loop. */
typedef struct conc__dict_walk {
    uint32_t saved;
    uint64_t power, lam;
} conc__dict_walk;

static inline void conc__dict_walk_init(conc__dict_walk *w)
{
    w->saved = 0;
    w->power = 1;
    w->lam = 0;
}

static inline bool conc__dict_walk_step(conc__dict_walk *w, uint32_t ref)
{
    if (ref == w->saved) {
        return false;
    }
    if (++w->lam == w->power) {
        w->saved = ref;
        w->power <<= 1;
        w->lam = 0;
    }
    return true;
}

/* ---- crash points (tests) --------------------------------------------- */

extern _Atomic long conc__dict_crash_left;
void conc__dict_crash_slow(void);

/* A step boundary: the compiler may not move shared-memory writes across
 * it (so a death between two steps leaves exactly the earlier ones done),
 * and the tests' armed crash point may kill the process here. */
static inline void conc__dict_step(void)
{
    atomic_signal_fence(memory_order_seq_cst);
    /* relaxed: armed and read by this one thread. */
    if (__builtin_expect(atomic_load_explicit(&conc__dict_crash_left,
                                              memory_order_relaxed) != 0,
                         0)) {
        conc__dict_crash_slow();
    }
    atomic_signal_fence(memory_order_seq_cst);
}

/* Brackets every change of the table: a caller that finds the flag raised
 * on entering repairs before anything else (conc__dict_repair).  The
 * signal fences keep the compiler from moving a table write outside the
 * bracket; the hardware cannot matter: the flag is read by the next
 * holder of the lock, after its acquire. */
static inline void conc__dict_writing_begin(conc__dctx *c)
{
    atomic_store_explicit(&c->h->writing, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void conc__dict_writing_end(conc__dctx *c)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&c->h->writing, 0, memory_order_relaxed);
}

/* ---- dict_heap.c --------------------------------------------------------
 * Each returns 0 or an error with its detail set (CONC_ECORRUPT when a
 * check of the segment fails; CONC_ENOMEM / CONC_ESYS from growth). */

/* CONC_ECORRUPT with "<fn>: <what>" as the detail. */
int conc__dict_corrupt(const conc__dctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Reads and checks heap_size and the index state into c, and keeps what
 * passed in the handle's cache (conc__dict_view_fast). */
int conc__dict_view(conc__dctx *c);

/* conc__dict_view, or the handle's cached view when the header's words
 * are the ones it passed its checks with (the same checks would pass
 * again): loads and compares, no checks. */
static inline int conc__dict_view_fast(conc__dctx *c)
{
    conc__dict_hdr *h = c->h;
    const struct conc__dict_view_cache *v = &c->d->view;
    uint64_t hs = atomic_load_explicit(&h->heap_size, memory_order_relaxed);
    uint64_t ix = atomic_load_explicit(&h->ix, memory_order_relaxed);
    unsigned cur = (ix & CONC__IX_CUR) != 0;
    if (__builtin_expect(!v->ok || hs != v->hs || ix != v->ix ||
                         (ix & CONC__IX_ACTIVE) != 0, 0) ||
        atomic_load_explicit(&h->tab[cur], memory_order_relaxed) !=
            v->tab[0] ||
        atomic_load_explicit(&h->bits[cur], memory_order_relaxed) !=
            v->bits[0]) {
        return conc__dict_view(c);
    }
    c->heap_size = hs;
    c->lo = v->lo;
    c->hi = v->hi;
    c->ix = ix;
    c->active = false;
    c->cursor = 0;
    c->oref = v->tab[0];
    c->obits = v->bits[0];
    c->nref = 0;
    c->nbits = 0;
    c->ot = v->ot;
    c->nt = NULL;
    return 0;
}
/* A block of exactly 2^order bytes, tagged USED, in *ref; grows the heap
 * when none is free (CONC_ENOMEM at the limit or with no memory). */
int conc__dict_alloc(conc__dctx *c, uint32_t order, uint32_t *ref);
/* Frees the block at ref of that order, merging it with free buddies. */
int conc__dict_release(conc__dctx *c, uint32_t ref, uint32_t order);
/* While the index migrates, moves CONC__DICT_MIGRATE_STEP buckets that hold
 * entries (or 16 times as many empty ones). */
int conc__dict_migrate(conc__dctx *c);
/* Starts growing or shrinking the index when count leaves its bounds. */
int conc__dict_resize(conc__dctx *c, uint64_t count);
/* The repair after a writer died or gave up: finishes an interrupted
 * move, rebuilds the free lists and the count from the chains. */
int conc__dict_repair(conc__dctx *c);
/* Lays out a new segment of size bytes (file) in c->d. */
int conc__dict_format(conc__dctx *c, uint64_t size);
/* Calls fn on every entry reachable by a lookup, bucket by bucket; stops
 * at fn's first non-zero return, which it returns. */
typedef int (*conc__dict_visit_fn)(conc__dctx *c, const conc__dict_ent *e,
                                   uint32_t ref, void *arg);
int conc__dict_visit(conc__dctx *c, conc__dict_visit_fn fn, void *arg);
/* The largest order a limit allows. */
uint32_t conc__dict_max_order(uint64_t limit);

/* conc__dict_check's work, on a view taken under the lock. */
int conc__dict_check_locked(conc__dctx *c);

/* For tests: the ref of key's entry (its byte offset in the segment is
 * ref << CONC__DICT_UNIT_SHIFT), or 0 when absent or on any error. */
uint32_t conc__dict_ref_of(conc_dict *d, const void *key, size_t klen);

/* For tests and the fuzz target: the next conc_dict_new in this process
 * uses this hash seed instead of a random one (then forgets it), so a
 * dict's layout is the same from run to run. */
void conc__dict_seed_next(uint64_t seed);

#endif
