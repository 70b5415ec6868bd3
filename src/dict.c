/* dict.c - conc_dict: Manager().dict() with no manager.  The whole table
 * lives in one shared mapping (anonymous, or a named conc_shm segment);
 * every process that maps it is a peer, and no call makes a round trip.
 *
 * ---- Layout (all offsets from the mapping's start; no pointers) ----------
 *
 *   [dict_hdr]            4 KiB: magic, version, layout, the lock, the
 *                         allocator's free lists, the count
 *   [buckets]             nbuckets (a power of two, ~capacity/512) u32
 *                         refs: the head of each bucket's chain
 *   [bitmap]              1 bit per 64-byte heap unit: scratch space for
 *                         repair and checking, used only under the lock
 *   [heap]                buddy-allocated blocks of 64 B .. 2^max_order B
 *
 * A "ref" is a u32: a byte offset >> 6 (every block is 64-byte aligned);
 * 0 is null, since offset 0 is the header.  That caps a dict at 256 GiB.
 * Each block starts with a 32-byte blk header: an entry (USED) holds its
 * chain link, hash, klen, vlen, then the key, then the value 8-aligned; a
 * FREE block holds its free-list links (doubly linked, per order).
 *
 * The mapping is created at its full size but costs nothing until used:
 * anonymous shared memory and tmpfs are zero-filled on demand, nothing is
 * pre-touched (the initial free blocks are a handful of large ones), and
 * splitting a block writes only the headers of the pieces.
 *
 * ---- Free space ------------------------------------------------------------
 *
 * A buddy allocator: a block of order k sits at a heap offset aligned to
 * 2^k, and freeing merges it with its buddy (offset ^ 2^k) while that is
 * a free block of the same order, so free space does not fragment into
 * uselessness: after deletes, neighbours coalesce back into large blocks
 * (the fill-delete-refill tests check that a dict emptied by deletes
 * takes the same big entries again).  The buddy test is sound because the
 * blocks always tile the heap with each one aligned to its size: the
 * buddy's offset is then always the start of some block, never the middle
 * of one, so its header is a real header.  Internal waste is under 2x.
 * Rejected: size-class free lists without merging (fill with small
 * entries, delete, refill with big ones: ENOMEM with the heap empty);
 * first-fit with boundary tags (more writes per operation to keep the
 * tags crash-consistent).
 *
 * ---- Concurrency ------------------------------------------------------------
 *
 * One lock per dict, held for every call (readers too), for a few hundred
 * nanoseconds at most.  The lock word `owner` holds the holder's identity:
 * its thread id in the high 32 bits and the low 32 bits of that thread's
 * kernel start time, so the holder can be named for good (a reused tid
 * has a later start time).  Acquire: CAS 0 -> me, a short spin, then
 * sleep on the futex word `lockseq`, whose bit 0 says "someone sleeps".
 * Release: store 0, and only when the bit is set, bump the word (clearing
 * the bit) and wake the sleepers.  The wake cannot be lost: a sleeper sets
 * the bit and then reads `owner`, the releaser writes `owner` and then
 * reads the bit, all four seq_cst; so either the releaser sees the bit, or
 * the sleeper sees the lock free (see dict_unlock).  A sleeper that dies
 * leaves only the bit, which the next release clears: nothing to repair.
 * Why not a conc_lock: the lock must live inside the mapping so that an
 * unrelated process opening the name gets it too, and the dict must
 * repair itself after a dead holder rather than hand CONC_EOWNERDEAD to
 * its caller.  Why not a pthread robust mutex: only its owner may unlock
 * it, and the kernel keeps one robust list per thread, which glibc owns:
 * a lock of ours on it would break glibc's own bookkeeping.
 *
 * ---- A holder killed mid-call (SIGKILL at any instruction) -------------
 *
 * Waiters sleep at most 10 ms at a time; a waiter that wakes to find the
 * same holder still there checks whether that thread is alive (/proc, pid
 * + start time; conc__os_proc_alive).  If it is dead, the waiter CASes
 * the lock over from that exact owner value (one waiter wins) and repairs.
 *
 * What makes repair possible is copy-then-publish: a reachable entry is
 * never written.  set/update write the whole new entry into a freshly
 * allocated block first, then make it reachable with one release store of
 * a u32 link (a bucket head or the predecessor's `next`): the old entry
 * is unlinked by that same store.  del is one store too.  So at every
 * instant the chains hold complete entries only, each key's old value or
 * its new one, never a torn one.  What a death can leave half done is
 * the bookkeeping: the free lists (mid-split, mid-merge), a block taken
 * but not yet linked, an old block unlinked but not yet freed, and the
 * count.  Writers raise the `writing` flag before touching anything and
 * lower it after; a takeover that finds it raised rebuilds all the
 * bookkeeping from the chains alone (dict_rebuild): mark every reachable
 * block in the bitmap, recount, and carve the unmarked gaps into aligned
 * free blocks.  The rebuild writes only unreachable memory and the
 * header, so a process killed during the rebuild leaves the flag raised
 * and the next taker simply rebuilds again.  The crash-point tests kill a
 * process at each step of set, update and del and check every invariant
 * (conc__dict_check) and the value afterwards.
 *
 * Fork: the handle is plain process memory over a MAP_SHARED mapping, so a
 * child uses the parent's dict as its own.  The cached thread identity is
 * reset in the child by a pthread_atfork handler (the child's thread has a
 * new tid); a lock held by a parent thread at fork time is released by
 * that thread as usual, the child just waits for it.
 *
 * On a server (.url): a handle with only d->net set; each public function
 * first hands such a handle to net_dict.c (net_int.h), so none of the
 * above applies to it.
 */
#include "shared_int.h"
#include "net_int.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DICT_MAGIC 0x5443494443434e4full /* "ONCCDICT" */
#define DICT_VERSION 1u
#define DICT_HDR_SIZE 4096u
#define DICT_MIN_CAP 16384u
#define DICT_DEFAULT_CAP ((size_t)64 << 20)
#define DICT_MAX_CAP ((uint64_t)1 << 38) /* 2^32 refs of 64 bytes */
#define UNIT_SHIFT 6u
#define UNIT ((size_t)1 << UNIT_SHIFT)
#define MAX_ORDER 38u
#define ENTRY_HDR 32u
#define BLK_USED 0x55534544u /* "USED" */
#define BLK_FREE 0x46524545u /* "FREE" */
#define LOCK_SLEEPERS 1u
#define LOCK_SPIN 100
#define LOCK_CHECK_NS 10000000ull /* liveness check every 10 ms of waiting */

typedef struct blk {
    uint32_t magic;         /* BLK_USED, BLK_FREE */
    uint32_t order;         /* log2 of the block size */
    _Atomic uint32_t next;  /* USED: chain link; FREE: next on free list */
    uint32_t prev;          /* FREE: previous on free list */
    uint32_t hash;          /* USED: the key's hash, high half */
    uint32_t klen;
    uint64_t vlen;
} blk;
_Static_assert(sizeof(blk) == ENTRY_HDR, "entry header is 32 bytes");

typedef struct dict_hdr {
    /* Written once at creation, read-only afterwards. */
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t nbuckets;
    uint64_t map_size;
    uint64_t bucket_off;
    uint64_t bitmap_off;
    uint64_t bitmap_size;
    uint64_t heap_off;
    uint64_t heap_size;
    uint64_t hash_seed;
    uint32_t max_order;
    uint32_t reserved;
    /* The lock, on a cache line of its own. */
    _Alignas(64) _Atomic uint64_t owner;
    _Atomic uint32_t lockseq;
    _Atomic uint32_t writing;
    /* Guarded by the lock. */
    _Alignas(64) uint64_t count;
    uint64_t free_bytes;
    uint64_t takeovers;
    uint64_t rebuilds;
    uint32_t free_head[MAX_ORDER + 1];
} dict_hdr;
_Static_assert(sizeof(dict_hdr) <= DICT_HDR_SIZE, "header fits its page");

struct conc_dict {
    dict_hdr *h;
    size_t map_size;
    conc_shm *shm; /* named */
    void *anon;    /* anonymous */
    conc__netd *net; /* a dict on a server (net_dict.c), or NULL */
};

/* A handle for a dict on a server: only net is set (net_dict.c). */
static int net_handle(conc_dict **out, int err, conc__netd *net)
{
    if (err != 0) {
        return err;
    }
    conc_dict *d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        conc__netd_free(net);
        return conc__fail(CONC_ENOMEM, "conc_dict: no memory for a handle");
    }
    d->net = net;
    *out = d;
    return 0;
}

/* ---- crash points (tests only) ------------------------------------------- */

/* Process-local countdown; relaxed: it is armed and read by one thread. */
static _Atomic long crash_countdown;

void conc__dict_crash_arm(long n)
{
    atomic_store_explicit(&crash_countdown, n < 0 ? 0 : n,
                          memory_order_relaxed);
}

static void crash_slow(void)
{
    if (atomic_fetch_sub_explicit(&crash_countdown, 1,
                                  memory_order_relaxed) == 1) {
        kill(getpid(), SIGKILL);
    }
}

static inline void crash_point(void)
{
    if (__builtin_expect(atomic_load_explicit(&crash_countdown,
                                              memory_order_relaxed) != 0,
                         0)) {
        crash_slow();
    }
}

/* ---- thread identity ----------------------------------------------------- */

static _Thread_local uint64_t self_id;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_reset_in_child(void)
{
    /* The child's only thread has a new tid and start time. */
    self_id = 0;
}

static void self_once_init(void)
{
    pthread_atfork(NULL, NULL, self_reset_in_child);
}

static uint64_t self_owner(void)
{
    if (__builtin_expect(self_id == 0, 0)) {
        pthread_once(&self_once, self_once_init);
        pid_t tid = conc__os_gettid();
        uint64_t st = conc__os_proc_starttime(tid);
        self_id = ((uint64_t)(uint32_t)tid << 32) | (uint32_t)st;
    }
    return self_id;
}

static bool owner_alive(uint64_t owner)
{
    pid_t tid = (pid_t)(owner >> 32);
    if (!conc__os_thread_alive(tid, 0)) {
        return false;
    }
    uint64_t st = conc__os_proc_starttime(tid);
    if (st == 0) {
        return false;
    }
    /* A different start time: the tid was reused by a newer thread. */
    return (uint32_t)owner == 0 || (uint32_t)st == (uint32_t)owner;
}

/* ---- addressing ---------------------------------------------------------- */

static inline blk *B(const dict_hdr *h, uint32_t ref)
{
    return (blk *)((char *)h + ((size_t)ref << UNIT_SHIFT));
}

static inline _Atomic uint32_t *buckets(const dict_hdr *h)
{
    return (_Atomic uint32_t *)((char *)h + h->bucket_off);
}

static inline uint64_t *bitmap(const dict_hdr *h)
{
    return (uint64_t *)((char *)h + h->bitmap_off);
}

/* Heap unit index (offset from the heap's start / 64) <-> ref. */
static inline uint32_t unit_ref(const dict_hdr *h, size_t unit)
{
    return (uint32_t)((h->heap_off >> UNIT_SHIFT) + unit);
}

static inline size_t ref_unit(const dict_hdr *h, uint32_t ref)
{
    return (size_t)ref - (h->heap_off >> UNIT_SHIFT);
}

static inline uint32_t ld32(_Atomic uint32_t *p)
{
    /* relaxed: the dict's lock orders every access to the table. */
    return atomic_load_explicit(p, memory_order_relaxed);
}

static inline void st32(_Atomic uint32_t *p, uint32_t v)
{
    /* relaxed: as ld32, for links that are not yet reachable. */
    atomic_store_explicit(p, v, memory_order_relaxed);
}

/* Makes a block reachable or unreachable: the one store that publishes a
 * change.  release: live readers hold the lock and need nothing more, but
 * the release keeps every earlier write of the entry's bytes before the
 * link, so a writer killed right after this store never leaves a link to
 * unwritten bytes (the repairing process reads after the death). */
static inline void publish(_Atomic uint32_t *link, uint32_t ref)
{
    atomic_store_explicit(link, ref, memory_order_release);
}

static size_t round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- hashing ------------------------------------------------------------- */

static uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t v = 0;
        memcpy(&v, s, n);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
    }
    return fmix64(h);
}

/* ---- the lock ------------------------------------------------------------ */

static void dict_rebuild(dict_hdr *h);

/* Called holding the lock just taken from a dead holder. */
static void dict_takeover(dict_hdr *h)
{
    h->takeovers++;
    /* relaxed: the dead writer's stores all landed before it was seen
     * dead (its death is observed through /proc, after the kernel tore
     * it down). */
    if (atomic_load_explicit(&h->writing, memory_order_relaxed) != 0) {
        dict_rebuild(h);
        h->rebuilds++;
        atomic_signal_fence(memory_order_seq_cst);
        atomic_store_explicit(&h->writing, 0, memory_order_relaxed);
    }
}

static int lock_slow(dict_hdr *h, uint64_t me)
{
    for (;;) {
        /* seq_cst: this load, the CAS setting the sleepers bit and the
         * owner load below pair with dict_unlock's owner store and
         * lockseq load (the no-lost-wake-up argument at the top). */
        uint32_t s = atomic_load(&h->lockseq);
        if ((s & LOCK_SLEEPERS) == 0) {
            if (!atomic_compare_exchange_weak(&h->lockseq, &s,
                                              s | LOCK_SLEEPERS)) {
                continue;
            }
            s |= LOCK_SLEEPERS;
        }
        uint64_t cur = atomic_load(&h->owner);
        if (cur == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(&h->owner, &zero, me)) {
                return 0;
            }
            continue;
        }
        conc__deadline dl;
        conc__deadline_init(&dl, (double)LOCK_CHECK_NS / 1e9);
        /* Sleeps until dict_unlock bumps lockseq (its futex_wake), or
         * 10 ms pass: then the holder's life is checked. */
        int err = conc__os_futex_wait(&h->lockseq, s, &dl, true);
        if (err == CONC_ETIMEDOUT &&
            atomic_load(&h->owner) == cur && !owner_alive(cur)) {
            uint64_t dead = cur;
            /* acquire: we own the table now; exactly one waiter wins. */
            if (atomic_compare_exchange_strong_explicit(
                    &h->owner, &dead, me, memory_order_acquire,
                    memory_order_relaxed)) {
                dict_takeover(h);
                return 0;
            }
        }
    }
}

/* 0 holding the lock, or CONC_ESTATE when this thread holds it already
 * (a dict call from inside an update fn). */
static int dict_lock(dict_hdr *h)
{
    uint64_t me = self_owner();
    uint64_t cur = 0;
    /* acquire pairs with the seq_cst store of 0 in dict_unlock: the
     * previous holder's writes to the table are visible. */
    if (atomic_compare_exchange_strong_explicit(&h->owner, &cur, me,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
        return 0;
    }
    if (cur == me) {
        return CONC_ESTATE;
    }
    for (int i = 0; i < LOCK_SPIN; i++) {
        conc__cpu_relax();
        /* relaxed: only a hint that a CAS may succeed. */
        cur = atomic_load_explicit(&h->owner, memory_order_relaxed);
        if (cur == 0 && atomic_compare_exchange_weak_explicit(
                            &h->owner, &cur, me, memory_order_acquire,
                            memory_order_relaxed)) {
            return 0;
        }
    }
    return lock_slow(h, me);
}

static void dict_unlock(dict_hdr *h)
{
    /* seq_cst store and load: see lock_slow.  Either this load sees a
     * sleeper's bit, or that sleeper's owner load sees this 0. */
    atomic_store(&h->owner, 0);
    uint32_t s = atomic_load(&h->lockseq);
    if (s & LOCK_SLEEPERS) {
        /* Bump the word and clear the bit in one step: a sleeper waiting
         * on the old value returns at once; new sleepers set the bit
         * again.  A failed CAS means another releaser already did it. */
        atomic_compare_exchange_strong(&h->lockseq, &s,
                                       (s + 2) & ~LOCK_SLEEPERS);
        /* Pairs with the futex_wait in lock_slow. */
        conc__os_futex_wake(&h->lockseq, INT32_MAX, true);
    }
}

/* Brackets every mutation: a takeover that finds the flag raised rebuilds
 * the bookkeeping.  The signal fences keep the compiler from moving any
 * table write outside the bracket (the hardware cannot matter: the flag
 * is only read after the writer's death, or by the writer itself). */
static inline void writing_begin(dict_hdr *h)
{
    atomic_store_explicit(&h->writing, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void writing_end(dict_hdr *h)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&h->writing, 0, memory_order_relaxed);
}

/* ---- the buddy allocator (all under the lock) ---------------------------- */

static void free_push(dict_hdr *h, uint32_t ref, uint32_t order)
{
    blk *b = B(h, ref);
    uint32_t head = h->free_head[order];
    b->magic = BLK_FREE;
    b->order = order;
    b->prev = 0;
    st32(&b->next, head);
    if (head != 0) {
        B(h, head)->prev = ref;
    }
    h->free_head[order] = ref;
    h->free_bytes += (uint64_t)1 << order;
}

static void free_remove(dict_hdr *h, uint32_t ref)
{
    blk *b = B(h, ref);
    uint32_t next = ld32(&b->next);
    if (b->prev != 0) {
        st32(&B(h, b->prev)->next, next);
    } else {
        h->free_head[b->order] = next;
    }
    if (next != 0) {
        B(h, next)->prev = b->prev;
    }
    h->free_bytes -= (uint64_t)1 << b->order;
}

static uint32_t order_for(size_t need)
{
    uint32_t k = UNIT_SHIFT;
    while (k < 63 && ((size_t)1 << k) < need) {
        k++;
    }
    return k;
}

/* A block of exactly `order`, marked USED; 0 when none is free. */
static uint32_t balloc(dict_hdr *h, uint32_t order)
{
    uint32_t k = order;
    while (k <= h->max_order && h->free_head[k] == 0) {
        k++;
    }
    if (k > h->max_order) {
        return 0;
    }
    uint32_t ref = h->free_head[k];
    free_remove(h, ref);
    crash_point();
    while (k > order) {
        k--;
        free_push(h, ref + (uint32_t)(((size_t)1 << k) >> UNIT_SHIFT), k);
        crash_point();
    }
    blk *b = B(h, ref);
    b->magic = BLK_USED;
    b->order = order;
    return ref;
}

static void bfree(dict_hdr *h, uint32_t ref)
{
    uint32_t k = B(h, ref)->order;
    size_t rel = (size_t)ref_unit(h, ref) << UNIT_SHIFT;
    while (k < h->max_order) {
        size_t brel = rel ^ ((size_t)1 << k);
        if (brel + ((size_t)1 << k) > h->heap_size) {
            break;
        }
        uint32_t bref = unit_ref(h, brel >> UNIT_SHIFT);
        blk *bb = B(h, bref);
        if (bb->magic != BLK_FREE || bb->order != k) {
            break;
        }
        free_remove(h, bref);
        crash_point();
        if (brel < rel) {
            rel = brel;
        }
        k++;
    }
    uint32_t merged = unit_ref(h, rel >> UNIT_SHIFT);
    if (merged != ref) {
        B(h, ref)->magic = 0; /* now inside the merged block */
    }
    free_push(h, merged, k);
}

/* Carves the heap units [g, e) into free blocks, each aligned to its size
 * and as large as possible. */
static void carve(dict_hdr *h, size_t g, size_t e)
{
    uint32_t maxk = h->max_order - UNIT_SHIFT;
    while (g < e) {
        uint32_t k = g == 0 ? maxk : (uint32_t)__builtin_ctzll(g);
        if (k > maxk) {
            k = maxk;
        }
        while (((size_t)1 << k) > e - g) {
            k--;
        }
        free_push(h, unit_ref(h, g), k + UNIT_SHIFT);
        g += (size_t)1 << k;
    }
}

/* ---- entries ------------------------------------------------------------- */

static inline unsigned char *entry_key(blk *e)
{
    return (unsigned char *)e + ENTRY_HDR;
}

static inline unsigned char *entry_val(blk *e)
{
    return (unsigned char *)e + ENTRY_HDR + round8(e->klen);
}

/* A reachable entry as it must be; used by repair and by the checker. */
static bool entry_valid(const dict_hdr *h, uint32_t ref, uint32_t bucket)
{
    size_t lo = h->heap_off >> UNIT_SHIFT;
    size_t hi = (h->heap_off + h->heap_size) >> UNIT_SHIFT;
    if (ref < lo || ref >= hi) {
        return false;
    }
    blk *e = B(h, ref);
    size_t unit = ref_unit(h, ref);
    if (e->magic != BLK_USED || e->order < UNIT_SHIFT ||
        e->order > h->max_order) {
        return false;
    }
    size_t units = ((size_t)1 << e->order) >> UNIT_SHIFT;
    if ((unit & (units - 1)) != 0 || unit + units > hi - lo) {
        return false;
    }
    if (e->vlen > ((uint64_t)1 << e->order) ||
        ENTRY_HDR + round8(e->klen) + e->vlen > ((uint64_t)1 << e->order)) {
        return false;
    }
    return (e->hash & (h->nbuckets - 1)) == bucket ||
           bucket == UINT32_MAX;
}

typedef struct lookup {
    uint64_t hash;
    uint32_t bucket;
    _Atomic uint32_t *link; /* where the entry is (or would be) linked */
    uint32_t ref;           /* 0 when absent */
} lookup;

static void dict_find(dict_hdr *h, const void *key, size_t klen, lookup *lk)
{
    uint64_t hv = hash_bytes(key, klen, h->hash_seed);
    uint32_t tag = (uint32_t)(hv >> 32);
    lk->hash = hv;
    lk->bucket = tag & (h->nbuckets - 1);
    lk->link = &buckets(h)[lk->bucket];
    lk->ref = 0;
    for (uint32_t ref = ld32(lk->link); ref != 0;) {
        blk *e = B(h, ref);
        if (e->hash == tag && e->klen == klen &&
            (klen == 0 || memcmp(entry_key(e), key, klen) == 0)) {
            lk->ref = ref;
            return;
        }
        lk->link = &e->next;
        ref = ld32(&e->next);
    }
    lk->link = &buckets(h)[lk->bucket];
}

/* Stores key -> val where lk says (dict locked).  Copy-then-publish: the
 * new entry is complete before the one store that links it in place of
 * the old one (or at the bucket's head). */
static int dict_store(dict_hdr *h, lookup *lk, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    if (klen > UINT32_MAX ||
        vlen > ((size_t)1 << h->max_order) ||
        ENTRY_HDR + round8(klen) + vlen > ((size_t)1 << h->max_order)) {
        return CONC_ETOOBIG;
    }
    uint32_t order = order_for(ENTRY_HDR + round8(klen) + vlen);
    writing_begin(h);
    crash_point();
    uint32_t nref = balloc(h, order);
    if (nref == 0) {
        writing_end(h);
        return CONC_ENOMEM;
    }
    crash_point();
    blk *n = B(h, nref);
    n->hash = (uint32_t)(lk->hash >> 32);
    n->klen = (uint32_t)klen;
    n->vlen = vlen;
    if (klen > 0) {
        memcpy(entry_key(n), key, klen);
    }
    size_t half = vlen / 2;
    if (half > 0) {
        memcpy(entry_val(n), val, half);
    }
    crash_point();
    if (vlen > half) {
        memcpy(entry_val(n) + half, (const unsigned char *)val + half,
               vlen - half);
    }
    crash_point();
    if (lk->ref != 0) {
        blk *old = B(h, lk->ref);
        st32(&n->next, ld32(&old->next));
        publish(lk->link, nref);
        crash_point();
        bfree(h, lk->ref);
    } else {
        st32(&n->next, ld32(lk->link));
        publish(lk->link, nref);
        crash_point();
        h->count++;
    }
    crash_point();
    writing_end(h);
    lk->ref = nref;
    return 0;
}

/* ---- repair -------------------------------------------------------------- */

static inline void bit_set(uint64_t *bm, size_t i)
{
    bm[i >> 6] |= (uint64_t)1 << (i & 63);
}

static inline bool bit_get(const uint64_t *bm, size_t i)
{
    return (bm[i >> 6] >> (i & 63)) & 1;
}

/* Marks every reachable entry's first unit; returns how many, or
 * SIZE_MAX when a chain is broken (never, unless memory was scribbled on
 * by someone else: the caller asserts). */
static size_t mark_reachable(dict_hdr *h)
{
    uint64_t *bm = bitmap(h);
    size_t units = h->heap_size >> UNIT_SHIFT;
    size_t count = 0;
    memset(bm, 0, h->bitmap_size);
    for (uint32_t b = 0; b < h->nbuckets; b++) {
        for (uint32_t ref = ld32(&buckets(h)[b]); ref != 0;
             ref = ld32(&B(h, ref)->next)) {
            size_t u = ref_unit(h, ref);
            if (!entry_valid(h, ref, b) || bit_get(bm, u) ||
                ++count > units) {
                return SIZE_MAX;
            }
            bit_set(bm, u);
        }
    }
    return count;
}

/* Rebuilds the free lists and the count from the chains alone.  Writes
 * only the header and unreachable blocks, so it may itself be killed
 * and simply run again. */
static void dict_rebuild(dict_hdr *h)
{
    size_t count = mark_reachable(h);
    CONC__ASSERT(count != SIZE_MAX);
    const uint64_t *bm = bitmap(h);
    size_t units = h->heap_size >> UNIT_SHIFT;
    memset(h->free_head, 0, sizeof h->free_head);
    h->free_bytes = 0;
    size_t i = 0;
    while (i < units) {
        if (bit_get(bm, i)) {
            i += ((size_t)1 << B(h, unit_ref(h, i))->order) >> UNIT_SHIFT;
            continue;
        }
        size_t g = i;
        while (i < units && !bit_get(bm, i)) {
            if ((i & 63) == 0 && bm[i >> 6] == 0) {
                i += 64;
            } else {
                i++;
            }
        }
        if (i > units) {
            i = units;
        }
        carve(h, g, i);
    }
    h->count = count;
}

/* ---- creation ------------------------------------------------------------ */

typedef struct layout {
    uint64_t map_size, bucket_off, bitmap_off, bitmap_size, heap_off,
        heap_size;
    uint32_t nbuckets, max_order;
} layout;

static void layout_for(size_t cap, layout *l)
{
    l->map_size = cap;
    uint64_t nb = 16;
    while (nb < cap / 512) {
        nb <<= 1;
    }
    l->nbuckets = (uint32_t)nb;
    l->bucket_off = DICT_HDR_SIZE;
    l->bitmap_off = l->bucket_off + ((nb * 4 + 63) & ~(uint64_t)63);
    uint64_t rest = cap - l->bitmap_off;
    /* heap + heap/512 (the bitmap) + slack for rounding <= rest */
    uint64_t heap = ((rest - 128) / 513 * 512) & ~(uint64_t)63;
    l->bitmap_size = ((heap >> UNIT_SHIFT) / 8 + 8 + 63) & ~(uint64_t)63;
    l->heap_off = l->bitmap_off + l->bitmap_size;
    l->heap_size = heap;
    uint32_t k = UNIT_SHIFT;
    while (k < MAX_ORDER && ((uint64_t)1 << (k + 1)) <= heap) {
        k++;
    }
    l->max_order = k;
}

static void dict_init(dict_hdr *h, const layout *l)
{
    h->version = DICT_VERSION;
    h->nbuckets = l->nbuckets;
    h->map_size = l->map_size;
    h->bucket_off = l->bucket_off;
    h->bitmap_off = l->bitmap_off;
    h->bitmap_size = l->bitmap_size;
    h->heap_off = l->heap_off;
    h->heap_size = l->heap_size;
    h->max_order = l->max_order;
    /* Random: a peer cannot pick keys that all fall in one chain. */
    h->hash_seed = conc__os_random64();
    carve(h, 0, l->heap_size >> UNIT_SHIFT);
    /* release: an opener that reads the magic (acquire, dict_attach)
     * sees the whole initialised header. */
    atomic_store_explicit(&h->magic, DICT_MAGIC, memory_order_release);
}

int conc_dict_new(conc_dict **out, const conc_dict_opts *opts)
{
    if (opts != NULL && opts->url != NULL && out != NULL) {
        conc__netd *n = NULL;
        *out = NULL;
        int e = conc__netd_new(&n, opts);
        return net_handle(out, e, n);
    }
    int err = 0;
    conc_dict *d = NULL;
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    size_t cap = opts != NULL ? opts->capacity_bytes : 0;
    const char *name = opts != NULL ? opts->name : NULL;
    if (cap == 0) {
        cap = DICT_DEFAULT_CAP;
    }
    if ((uint64_t)cap > DICT_MAX_CAP) {
        return CONC_EINVAL;
    }
    if (cap < DICT_MIN_CAP) {
        cap = DICT_MIN_CAP;
    }
    cap = (cap + 4095) & ~(size_t)4095;
    if (name != NULL) {
        char fixed[CONC__SHM_NAME_MAX + 2];
        err = conc__shm_name_fix("conc_dict_new", name, fixed, sizeof fixed);
        if (err != 0) {
            return err;
        }
    }
    layout l;
    layout_for(cap, &l);
    d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        return CONC_ENOMEM;
    }
    d->map_size = cap;
    if (name != NULL) {
        err = conc__shm_create(&d->shm, "conc_dict_new", name, cap);
        if (err != 0) {
            goto fail;
        }
        d->h = conc_shm_ptr(d->shm);
    } else {
        d->anon = conc__os_shared_alloc(cap);
        if (d->anon == NULL) {
            err = CONC_ENOMEM;
            goto fail;
        }
        d->h = d->anon;
    }
    dict_init(d->h, &l);
    *out = d;
    return 0;

fail:
    conc_dict_free(d);
    return err;
}

int conc_dict_open(conc_dict **out, const char *name)
{
    if (conc__url_is(name) && out != NULL) {
        conc__netd *n = NULL;
        *out = NULL;
        int e = conc__netd_open(&n, name);
        return net_handle(out, e, n);
    }
    int err = 0;
    conc_dict *d = NULL;
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        return CONC_ENOMEM;
    }
    /* shm.c waits for a creator still making the dict and checks the
     * magic (acquire, pairing with the release in dict_init). */
    err = conc__shm_open(&d->shm, "conc_dict_open", name,
                         &(conc__shm_kind){ .what = "dict",
                                            .magic = DICT_MAGIC,
                                            .magic_size = sizeof(uint64_t),
                                            .min_size = DICT_MIN_CAP });
    if (err != 0) {
        goto fail;
    }
    d->map_size = conc_shm_size(d->shm);
    d->h = conc_shm_ptr(d->shm);
    dict_hdr *h = d->h;
    layout l;
    if (d->map_size < DICT_MIN_CAP || (uint64_t)d->map_size > DICT_MAX_CAP ||
        /* acquire pairs with the release store in dict_init. */
        atomic_load_explicit(&h->magic, memory_order_acquire) != DICT_MAGIC ||
        h->version != DICT_VERSION) {
        err = CONC_EINVAL;
        goto fail;
    }
    layout_for(d->map_size, &l);
    if (h->map_size != l.map_size || h->nbuckets != l.nbuckets ||
        h->bucket_off != l.bucket_off || h->bitmap_off != l.bitmap_off ||
        h->bitmap_size != l.bitmap_size || h->heap_off != l.heap_off ||
        h->heap_size != l.heap_size || h->max_order != l.max_order) {
        err = CONC_EINVAL;
        goto fail;
    }
    *out = d;
    return 0;

fail:
    conc_dict_free(d);
    return err;
}

void conc_dict_free(conc_dict *d)
{
    if (d != NULL && d->net != NULL) {
        conc__netd_free(d->net);
        free(d);
        return;
    }
    if (d == NULL) {
        return;
    }
    conc_shm_free(d->shm);
    conc__os_shared_free(d->anon, d->map_size);
    free(d);
}

/* ---- the operations ------------------------------------------------------ */

static bool key_ok(const conc_dict *d, const void *key, size_t klen)
{
    return d != NULL && (key != NULL || klen == 0);
}

int conc_dict_set(conc_dict *d, const void *key, size_t klen, const void *val,
                  size_t vlen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_set(d->net, key, klen, val, vlen);
    }
    if (!key_ok(d, key, klen) || (val == NULL && vlen > 0)) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    err = dict_store(h, &lk, key, klen, val, vlen);
    dict_unlock(h);
    return err;
}

int conc_dict_get(conc_dict *d, const void *key, size_t klen, conc_msg *msg)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_get(d->net, key, klen, msg);
    }
    if (!key_ok(d, key, klen) || msg == NULL) {
        return CONC_EINVAL;
    }
    msg->data = NULL;
    msg->len = 0;
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    if (lk.ref == 0) {
        err = CONC_EEMPTY;
        goto out;
    }
    blk *e = B(h, lk.ref);
    if (e->vlen > 0) {
        void *p = conc__malloc(e->vlen);
        if (p == NULL) {
            err = CONC_ENOMEM;
            goto out;
        }
        memcpy(p, entry_val(e), e->vlen);
        msg->data = p;
        msg->len = e->vlen;
    }
out:
    dict_unlock(h);
    return err;
}

int conc_dict_get_into(conc_dict *d, const void *key, size_t klen, void *buf,
                       size_t cap, size_t *len)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_get_into(d->net, key, klen, buf, cap, len);
    }
    if (!key_ok(d, key, klen) || len == NULL || (buf == NULL && cap > 0)) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    if (lk.ref == 0) {
        err = CONC_EEMPTY;
    } else {
        blk *e = B(h, lk.ref);
        *len = e->vlen;
        if (e->vlen > cap) {
            err = CONC_ETOOBIG;
        } else if (e->vlen > 0) {
            memcpy(buf, entry_val(e), e->vlen);
        }
    }
    dict_unlock(h);
    return err;
}

int conc_dict_del(conc_dict *d, const void *key, size_t klen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_del(d->net, key, klen);
    }
    if (!key_ok(d, key, klen)) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    if (lk.ref == 0) {
        err = CONC_EEMPTY;
    } else {
        writing_begin(h);
        crash_point();
        publish(lk.link, ld32(&B(h, lk.ref)->next));
        crash_point();
        h->count--;
        bfree(h, lk.ref);
        crash_point();
        writing_end(h);
    }
    dict_unlock(h);
    return err;
}

bool conc_dict_contains(conc_dict *d, const void *key, size_t klen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_contains(d->net, key, klen);
    }
    if (!key_ok(d, key, klen)) {
        return false;
    }
    dict_hdr *h = d->h;
    if (dict_lock(h) != 0) {
        return false;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    dict_unlock(h);
    return lk.ref != 0;
}

size_t conc_dict_len(conc_dict *d)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_len(d->net);
    }
    if (d == NULL) {
        return 0;
    }
    dict_hdr *h = d->h;
    if (dict_lock(h) != 0) {
        return 0;
    }
    size_t n = (size_t)h->count;
    dict_unlock(h);
    return n;
}

int conc_dict_keys(conc_dict *d, conc_msg **keys, size_t *n)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_keys(d->net, keys, n);
    }
    if (d == NULL || keys == NULL || n == NULL) {
        return CONC_EINVAL;
    }
    *keys = NULL;
    *n = 0;
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    size_t count = 0, bytes = 0;
    for (uint32_t b = 0; b < h->nbuckets; b++) {
        for (uint32_t ref = ld32(&buckets(h)[b]); ref != 0;
             ref = ld32(&B(h, ref)->next)) {
            count++;
            bytes += B(h, ref)->klen;
        }
    }
    if (count == 0) {
        goto out;
    }
    conc_msg *arr = conc__malloc(count * sizeof *arr + bytes);
    if (arr == NULL) {
        err = CONC_ENOMEM;
        goto out;
    }
    unsigned char *p = (unsigned char *)(arr + count);
    size_t i = 0;
    for (uint32_t b = 0; b < h->nbuckets; b++) {
        for (uint32_t ref = ld32(&buckets(h)[b]); ref != 0;
             ref = ld32(&B(h, ref)->next)) {
            blk *e = B(h, ref);
            arr[i].len = e->klen;
            arr[i].data = e->klen > 0 ? p : NULL;
            memcpy(p, entry_key(e), e->klen);
            p += e->klen;
            i++;
        }
    }
    *keys = arr;
    *n = count;
out:
    dict_unlock(h);
    return err;
}

void conc_dict_keys_free(conc_msg *keys)
{
    free(keys);
}

/* The buffer an update's fn writes into.  Each thread keeps one and
 * reuses it, so a steady stream of updates allocates nothing - and in
 * particular nothing while the dict is locked: a process forked from a
 * threaded parent under an allocator that is not fork-safe (sanitizers')
 * would otherwise hang in malloc holding the dict, and everyone with it.
 * A nested update (fn updating another dict) gets a fresh buffer; one
 * grown past 64 KiB is released after use.  A pthread key frees the
 * thread's buffer when the thread exits. */
#define UPDATE_BUF_KEEP ((size_t)64 << 10)
static _Thread_local conc_buf tls_buf;
static _Thread_local bool tls_buf_busy;
static pthread_key_t tls_buf_key;
static pthread_once_t tls_buf_once = PTHREAD_ONCE_INIT;

static void tls_buf_destroy(void *p)
{
    conc__buf_release(p);
}

static void tls_buf_key_init(void)
{
    pthread_key_create(&tls_buf_key, tls_buf_destroy);
}

static conc_buf *update_buf_take(conc_buf *local)
{
    if (tls_buf_busy) {
        conc__buf_init(local, 0);
        return local;
    }
    if (tls_buf.data == NULL) {
        pthread_once(&tls_buf_once, tls_buf_key_init);
        pthread_setspecific(tls_buf_key, &tls_buf);
    }
    tls_buf_busy = true;
    tls_buf.len = 0;
    tls_buf.limit = 0;
    tls_buf.has_error = false;
    return &tls_buf;
}

static void update_buf_give(conc_buf *out)
{
    if (out != &tls_buf) {
        conc__buf_release(out);
        return;
    }
    if (tls_buf.cap > UPDATE_BUF_KEEP) {
        conc__buf_release(&tls_buf);
    }
    tls_buf_busy = false;
}

int conc_dict_update(conc_dict *d, const void *key, size_t klen,
                     conc_dict_update_fn fn, void *arg)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_update(d->net, key, klen, fn, arg);
    }
    if (!key_ok(d, key, klen) || fn == NULL) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    lookup lk;
    dict_find(h, key, klen, &lk);
    conc_buf local, *out = update_buf_take(&local);
    if (lk.ref != 0) {
        blk *e = B(h, lk.ref);
        err = fn(entry_val(e), (size_t)e->vlen, true, out, arg);
    } else {
        err = fn(NULL, 0, false, out, arg);
    }
    if (err == 0) {
        err = dict_store(h, &lk, key, klen, out->data, out->len);
    }
    dict_unlock(h);
    update_buf_give(out);
    return err;
}

/* ---- checking (tests) ---------------------------------------------------- */

#define CHECK_OR_FAIL(cond)                                                  \
    do {                                                                     \
        if (!(cond)) {                                                       \
            err = -__LINE__;                                                 \
            goto out;                                                        \
        }                                                                    \
    } while (0)

int conc__dict_check(conc_dict *d)
{
    if (d == NULL) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    CHECK_OR_FAIL(atomic_load_explicit(&h->writing, memory_order_relaxed) ==
                  0);
    size_t count = mark_reachable(h);
    CHECK_OR_FAIL(count != SIZE_MAX);
    CHECK_OR_FAIL(count == h->count);
    const uint64_t *bm = bitmap(h);
    size_t units = h->heap_size >> UNIT_SHIFT;
    size_t used = 0, nfree = 0;
    uint64_t free_bytes = 0;
    for (size_t i = 0; i < units;) {
        blk *b = B(h, unit_ref(h, i));
        CHECK_OR_FAIL(b->order >= UNIT_SHIFT && b->order <= h->max_order);
        size_t len = ((size_t)1 << b->order) >> UNIT_SHIFT;
        CHECK_OR_FAIL((i & (len - 1)) == 0 && i + len <= units);
        if (b->magic == BLK_USED) {
            CHECK_OR_FAIL(bit_get(bm, i)); /* no unreachable used block */
            used++;
        } else {
            CHECK_OR_FAIL(b->magic == BLK_FREE);
            CHECK_OR_FAIL(!bit_get(bm, i));
            nfree++;
            free_bytes += (uint64_t)1 << b->order;
        }
        i += len;
    }
    CHECK_OR_FAIL(used == count);
    CHECK_OR_FAIL(free_bytes == h->free_bytes);
    size_t listed = 0;
    for (uint32_t k = 0; k <= MAX_ORDER; k++) {
        uint32_t prev = 0;
        for (uint32_t ref = h->free_head[k]; ref != 0;
             ref = ld32(&B(h, ref)->next)) {
            CHECK_OR_FAIL(k >= UNIT_SHIFT && k <= h->max_order);
            size_t lo = h->heap_off >> UNIT_SHIFT;
            CHECK_OR_FAIL(ref >= lo && ref - lo < units);
            blk *b = B(h, ref);
            CHECK_OR_FAIL(b->magic == BLK_FREE && b->order == k);
            CHECK_OR_FAIL(b->prev == prev);
            CHECK_OR_FAIL(++listed <= nfree);
            prev = ref;
        }
    }
    CHECK_OR_FAIL(listed == nfree);
out:
    dict_unlock(h);
    return err;
}

int conc__dict_stats_get(conc_dict *d, conc__dict_stats *st)
{
    if (d == NULL || st == NULL) {
        return CONC_EINVAL;
    }
    dict_hdr *h = d->h;
    int err = dict_lock(h);
    if (err != 0) {
        return err;
    }
    st->takeovers = h->takeovers;
    st->rebuilds = h->rebuilds;
    st->free_bytes = (size_t)h->free_bytes;
    st->heap_bytes = (size_t)h->heap_size;
    dict_unlock(h);
    return 0;
}
