/* dict.c - conc_dict: Manager().dict() with no manager.  The whole table
 * lives in one shared segment (an unnamed memfd shared with forked
 * children, or a named /dev/shm object); every process that maps it is a
 * peer, and no call makes a round trip.  The table grows while processes
 * use it, and survives any of them being killed at any instruction.
 *
 * ---- The segment ------------------------------------------------------------
 *
 * A file that starts at 64 KiB and grows, mapped once per process at the
 * most it may grow to (capacity_bytes, "the limit": 64 GiB unless given):
 *
 *   [header]   4 KiB: magic, version, limit, hash seed; the lock; the heap
 *              size, the index state, the free lists, the count
 *   [heap]     buddy-allocated blocks of 64 B .. 2^max_order B, up to the
 *              heap size the header records; entries and the index
 *              tables are all blocks of this heap
 *
 * Every process maps the whole limit at open (or at creation, or through
 * fork), so when one grows the file the others need no remap: their
 * mapping already covers the new bytes.  Pages past the file's end raise
 * SIGBUS when touched, so nothing is ever touched past CONC__DICT_HDR_SIZE +
 * heap_size, and heap_size is checked against the file's length before
 * use: a compare with the length this process last saw, and an fstat only
 * when the header claims more (once per growth).  The address space is
 * reserved, not memory: the file's pages exist only up to its length.
 *
 * A "ref" is a u32: a byte offset >> 6 (every block is 64-byte aligned);
 * 0 is null, since offset 0 is the header.  That caps a dict at 256 GiB.
 * A block starts with a 24-byte header: an entry (USED) holds its chain
 * link, the high 32 bits of its key's hash, klen, vlen, then the key, then
 * the value 8-aligned; a FREE block holds its free-list links (doubly
 * linked, per order).  An index table is a block with no header (the
 * header names the at most two tables by ref), an array of u32 chain
 * heads.
 *
 * Cost per entry: the block, 2^ceil(log2(24 + klen rounded up to 8 +
 * vlen)) bytes,
 * at least 64 (a 27-byte key with an 8-byte value takes 64 bytes; 40 with
 * 8, 128), plus 4 to 8 bytes of index (one u32 head per bucket, 1 to 2
 * buckets per entry; twice that while the index migrates).
 *
 * ---- Growth -----------------------------------------------------------------
 *
 * When no free block of the order needed is left, the writer grows the
 * heap under the lock: by an eighth of its size (at least 64 KiB, at most
 * 2 MiB), or more when one block needs more.  In this order:
 *   G1. the file is extended and its new pages allocated (fallocate), so
 *       touching them can never SIGBUS for want of room: /dev/shm full or
 *       no memory is CONC_ENOMEM here, before anything changed;
 *   G2. heap_size in the header is raised;
 *   G3. the new bytes are carved into aligned blocks, each freed with the
 *       usual buddy merging, so they join a free block below them.
 * A death after G1 leaves a longer file: harmless (the next growth
 * extends it again).  After G2, the repair's rebuild carves every
 * unreachable stretch of the heap into free blocks, the new bytes among
 * them.  A growth pauses its call for the fallocate of one step (the
 * kernel allocating and zeroing the pages: well under a millisecond for
 * 2 MiB on an idle machine), except when one block needs more: a large
 * value (whose copy costs as much).  An index table larger than a step
 * (8 bytes per key: 32 MiB at four million keys) is made so that no call
 * pays for more than about one step:
 *   - while the table's aligned place lies more than a step above the
 *     heap's end, each writing call that would resize grows the heap one
 *     step toward it instead (G1-G3; the resize waits, chains grow a
 *     little longer meanwhile);
 *   - then the growth to the table's end allocates only the stretch below
 *     the table and the table's first page, and makes the rest part of
 *     the file by allocating its last page;
 *   - the migration allocates the rest 64 KiB of heads at a time, before
 *     the first bucket of each stretch is written (its init step), and a
 *     call that cannot (no memory) leaves the migration for a later call.
 * A repair's rebuild allocates every stretch it turns into free blocks,
 * so a table left unbacked by a dead writer never holds entries on pages
 * that were not allocated.  Measured at 5 M keys (bench_shared, longest
 * set of a fill): 14-23 ms at the doubling to 2^23 buckets when the table
 * came in one growth, 0.75 ms now.  Rejected: steps of 8 MiB (measured: a
 * pause of several milliseconds each under load); reserving the next
 * index table ahead as a block (a reserved block the repair must know
 * of).  The heap never shrinks; freed blocks are reused.
 *
 * ---- The index --------------------------------------------------------------
 *
 * Chains hang from a table of 2^bits u32 heads (16 at first); bucket =
 * hash_high & (2^bits - 1).  The table doubles when count passes the
 * bucket count, and shrinks when count falls below an eighth of it, to the
 * size the count fills to between a quarter and a half (16 at least): a
 * lookup touches the table's page and one or two entries,
 * whether the dict holds ten keys or ten million.  Resizing is
 * incremental, so no call ever copies a whole table:
 *   - a writer that decides to resize allocates the new table (a heap
 *     block, not zeroed), writes its ref and bits into the spare slot of
 *     tab[2]/bits[2], then sets the state word ix (CONC__IX_ACTIVE,
 *     cursor 0) in
 *     one store;
 *   - every call that changes the dict then first moves the next few
 *     buckets of the old table (the one CONC__IX_CUR names) to the new one
 *     (CONC__DICT_MIGRATE_STEP that hold entries, or 16 times as many empty
 *     ones): so a doubling ends long before the next is due, and a
 *     shrink soon after the deletes that called for it;
 *   - a lookup of a key whose old bucket is below the cursor looks in the
 *     new table, otherwise in the old one;
 *   - when the last bucket has moved, one store of ix makes the new table
 *     the main one (CONC__IX_CUR flips), and the old table's block is freed.
 * Moving old bucket b: first the new heads it feeds are zeroed (new b and
 * b + n when doubling; new b when shrinking, if b is below the new size:
 * new bucket j gathers old buckets j, j + m, j + 2m, ... and j moves first)
 * and CONC__IX_INITED is set; then each entry e in turn, from the old chain's
 * head, is moved with five stores, journaled in mig_entry:
 *   M1. mig_entry = e        M2. old head = e->next (e now unreachable)
 *   M3. e->next = new head   M4. new head = e       M5. mig_entry = 0
 * and finally ix = cursor b + 1 without CONC__IX_INITED (one store).  A new
 * bucket is read only once the old buckets feeding it have moved, so
 * only zeroed heads are ever read.
 *
 * ---- Free space -------------------------------------------------------------
 *
 * A buddy allocator: a block of order k sits at a heap offset aligned to
 * 2^k, and freeing merges it with its buddy (offset ^ 2^k) while that is
 * a free block of the same order, so free space does not fragment into
 * uselessness: after deletes, neighbours coalesce back into large blocks.
 * The buddy test is sound because the blocks always tile the heap with
 * each one aligned to its size: the buddy's offset is then always the
 * start of some block, never the middle of one, so what is read there is
 * a real header, or the first head of an index table, which the header
 * names and the test excludes.  Internal waste is under 2x.  Rejected:
 * size-class free lists without merging (fill with small entries, delete,
 * refill with big ones: no room with the heap empty); first-fit with
 * boundary tags (more writes per operation to keep crash-consistent).
 *
 * ---- Concurrency ------------------------------------------------------------
 *
 * One lock per dict, held for every call (readers too), for a few hundred
 * nanoseconds at most: the sync module's owner-stamped lock word (olock,
 * src/olock.c), embedded in the header, so that an unrelated process
 * opening the name gets the same lock.  Its holder is named in the word by
 * thread id and start time; a waiter judges a holder dead only when /proc
 * shows it gone or the kernel has no task with its id (src/sync_self.c),
 * never from a /proc it cannot see (hidepid, another user, /proc
 * unmounted), so the lock never has two holders.  A dead holder's lock is
 * taken over within one sleep slice (50 ms) and the acquire reports
 * CONC_EOWNERDEAD, which the dict consumes: it repairs the table if the
 * holder died writing, and its caller never sees the code.  A call made
 * from inside an update fn on the same dict finds its own thread holding
 * the lock and returns CONC_ESTATE.  Why not a pthread robust mutex: only
 * its owner may unlock it, and the kernel's robust list belongs to glibc.
 *
 * ---- A writer killed mid-call (SIGKILL at any instruction) --------------
 *
 * What makes repair possible is copy-then-publish: a reachable entry is
 * never written (one exception: conc_dict_add rewrites an existing 8-byte
 * value in place, with one aligned 8-byte store, which a death cannot
 * tear).  set/update write the whole new entry into a freshly allocated
 * block first, then make it reachable with one release store of a u32
 * link (a bucket head or the predecessor's next): the old entry is
 * unlinked by that same store.  del is one store too.  So at every
 * instant the chains hold complete entries only, each key's old value or
 * its new one, never a torn one.  What a death can leave half done is the
 * bookkeeping: the free lists (mid-split, mid-merge, mid-carve), a block
 * taken but not yet linked, an old block unlinked but not yet freed, the
 * count, and at most one migration move.  Writers raise `writing` before
 * touching anything and lower it after; whoever takes the lock next and
 * finds it raised repairs, in order:
 *   R1. an interrupted move (mig_entry set): the entry is found in the old
 *       chain (death before M2: nothing to do), in the new chain (after
 *       M4), or in neither (after M2): it is linked into the new chain;
 *       then mig_entry = 0;
 *   R2. a bucket half moved (CONC__IX_INITED set): its remaining entries are
 *       moved and the cursor advanced (ending the migration if it was the
 *       last bucket; the old table is left for R3);
 *   R3. the rebuild: every reachable block (the named tables, every entry
 *       a lookup can reach) is marked in a scratch bitmap, the count is
 *       recounted, and every unmarked stretch of the heap is carved into
 *       free blocks.  A block taken and not linked, an entry unlinked and
 *       not freed, an old table, a stretch of grown heap not yet carved:
 *       all are unreachable, so all become free again.
 * The repair writes only unreachable memory and the header, so a process
 * killed while repairing leaves the flag raised and the next one simply
 * repairs again.  It costs one walk of every chain and of the bitmap (one
 * bit per 64 bytes of heap): about as long as conc_dict_keys.  A death
 * outside the bracket (a reader, or a writer inside its update fn) leaves
 * nothing to repair.  The crash-point tests kill a process at each step of
 * set, update, del, growth and migration and check every invariant
 * (conc__dict_check) and every value afterwards.
 *
 * ---- Peers that lie ---------------------------------------------------------
 *
 * Any process that maps the segment can write any byte of it.  The fields
 * set at creation (limit, max_order, hash seed) are read once at open,
 * checked, and kept in the handle.  The fields that change (heap_size,
 * the index state and tables) are read once per call and checked before
 * use (conc__dict_view): a table must be a block of the heap, a migration
 * must go between tables of neighbouring sizes.  Every ref is checked
 * before it is followed: inside the heap, aligned to its block's size,
 * tagged as the block it must be (ent_load, free_ok), with klen and vlen
 * inside the block; each field is loaded once into a local that is both
 * checked and used.  Every walk is bounded: chains by Brent's cycle
 * finder (a compare per step), the rebuild by its bitmap (a block met
 * twice is an error).  A failed check returns CONC_ECORRUPT with a detail
 * (conc_errdetail) naming what was wrong; a writer that meets one leaves
 * the flag raised, so the next caller rebuilds the free lists from the
 * chains (a scribbled free list heals; a scribbled chain keeps failing
 * its checks).  What no check can prevent: a peer holding the lock for
 * ever (as with any shared lock), truncating the file under us (that
 * raises SIGBUS; segments of other users are another layer's business),
 * or rewriting entries' bytes consistently.
 *
 * Fork: the handle is plain process memory over a MAP_SHARED mapping and
 * an inherited descriptor (the memfd's, close-on-exec), so a child uses
 * the parent's dict as its own, growth included.  The lock's cached
 * thread identity is reset in the child (src/sync_self.c); a lock held by
 * a parent thread at fork time is released by that thread as usual, the
 * child just waits for it.
 */
#include "dict_int.h"
#include "net_int.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- crash points (tests only) ------------------------------------------- */

/* Process-local countdown; relaxed: armed and read by one thread. */
_Atomic long conc__dict_crash_left;

void conc__dict_crash_arm(long n)
{
    atomic_store_explicit(&conc__dict_crash_left, n < 0 ? 0 : n,
                          memory_order_relaxed);
}

void conc__dict_crash_slow(void)
{
    if (atomic_fetch_sub_explicit(&conc__dict_crash_left, 1,
                                  memory_order_relaxed) == 1) {
        kill(getpid(), SIGKILL);
    }
}

/* The seed the next conc_dict_new takes (tests), when set. */
static _Atomic uint64_t seed_next;
static _Atomic bool seed_next_set;

void conc__dict_seed_next(uint64_t seed)
{
    atomic_store(&seed_next, seed);
    atomic_store(&seed_next_set, true);
}

static uint64_t new_seed(void)
{
    if (atomic_exchange(&seed_next_set, false)) {
        return atomic_load(&seed_next);
    }
    /* Random: a peer cannot pick keys that all fall in one chain. */
    return conc__os_random64();
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
        /* The last 1..7 bytes with fixed-size loads (a variable-length
         * copy compiles to a byte loop or a libc call, which cost a third
         * of a lookup): two overlapping 4-byte words, or bytes 0, n/2 and
         * n-1; with n mixed in above, either is one-to-one for its n. */
        uint64_t v;
        if (n >= 4) {
            uint32_t a, b;
            memcpy(&a, s, 4);
            memcpy(&b, s + n - 4, 4);
            v = a | (uint64_t)b << 32;
        } else {
            v = s[0] | (uint64_t)s[n / 2] << 8 | (uint64_t)s[n - 1] << 16;
        }
        h = (h ^ v) * 0xff51afd7ed558ccdull;
    }
    return fmix64(h);
}

/* ---- entering and leaving ------------------------------------------------ */

static const conc__deadline forever = { .forever = true };
static const conc__deadline at_once = { .once = true };

/* Takes the lock and reads the view; repairs first if a writer died or
 * gave up (the flag is raised).  0 holding the lock, or an error without
 * it: CONC_ESTATE from inside an update fn on the same dict,
 * CONC_ECORRUPT, or the repair's CONC_ENOMEM.  prompt (the tests' calls
 * only): judge a holder at once instead of after a sleep slice, which
 * costs a /proc read per contended acquire. */
static int dict_enter_as(conc_dict *d, conc__dctx *c, const char *fn,
                         bool prompt)
{
    conc__dict_hdr *h = (conc__dict_hdr *)(void *)d->base;
    c->d = d;
    c->h = h;
    c->base = d->base;
    c->fn = fn;
    c->max_order = d->max_order;
    uint64_t me = conc__sync_self_id();
    if (__builtin_expect(!conc__olock_try(&h->lock, me), 0)) {
        if (conc__olock_mine(&h->lock)) {
            return conc__fail(CONC_ESTATE, "%s: called from inside an "
                              "update fn on the same dict", fn);
        }
        /* detail: not returned as is; the forever acquire below replaces it */
        int err = CONC_ETIMEDOUT;
        if (prompt) {
            err = conc__olock_acquire_slow(&h->lock, me, &at_once);
        }
        if (err == CONC_ETIMEDOUT) {
            err = conc__olock_acquire_slow(&h->lock, me, &forever);
        }
        if (err == CONC_EOWNERDEAD) {
            /* The holder died; if it died writing, the flag below says so
             * and the repair runs.  The caller never sees the code. */
            h->takeovers++;
        } else if (err != 0) {
            return conc__fail(err, "%s: taking the dict's lock", fn);
        }
    }
    int err = conc__dict_view_fast(c);
    if (err == 0 &&
        atomic_load_explicit(&h->writing, memory_order_relaxed) != 0) {
        err = conc__dict_repair(c);
    }
    if (err != 0) {
        conc__olock_release(&h->lock);
    }
    return err;
}

static int dict_enter(conc_dict *d, conc__dctx *c, const char *fn)
{
    return dict_enter_as(d, c, fn, false);
}

static void dict_leave(conc__dctx *c)
{
    conc__olock_release(&c->h->lock);
}

/* Ends a change that failed: the flag stays raised after CONC_ECORRUPT
 * (something may be half done, and the next caller's rebuild redoes the
 * bookkeeping), and is lowered after anything else (nothing changed). */
static int writing_fail(conc__dctx *c, int err)
{
    if (err != CONC_ECORRUPT) {
        conc__dict_writing_end(c);
    }
    return err;
}

/* dict_enter for the calls that change the table: moves a few buckets of
 * a migrating index first. */
static int dict_enter_w(conc_dict *d, conc__dctx *c, const char *fn)
{
    int err = dict_enter(d, c, fn);
    if (err != 0 || !c->active) {
        return err;
    }
    conc__dict_writing_begin(c);
    err = conc__dict_migrate(c);
    if (err != 0) {
        writing_fail(c, err);
        dict_leave(c);
        return err;
    }
    conc__dict_writing_end(c);
    return 0;
}

/* ---- lookups ------------------------------------------------------------- */

typedef struct lookup {
    uint32_t tag;           /* the key hash's high half */
    _Atomic uint32_t *link; /* where the entry is (or would be) linked */
    uint32_t ref;           /* 0 when absent */
    conc__dict_ent e;                  /* the entry, when present */
} lookup;

/* Whether the n bytes at a and b are equal: keys up to 16 bytes (most)
 * with two overlapping loads a side instead of a call to memcmp. */
static inline bool key_eq(const unsigned char *a, const void *bv, size_t n)
{
    const unsigned char *b = bv;
    if (n >= 8 && n <= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&b0, b, 8);
        memcpy(&a1, a + n - 8, 8);
        memcpy(&b1, b + n - 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4);
        memcpy(&b0, b, 4);
        memcpy(&a1, a + n - 4, 4);
        memcpy(&b1, b + n - 4, 4);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    return n == 0 || memcmp(a, b, n) == 0;
}

static int dict_find(conc__dctx *c, const void *key, size_t klen, lookup *lk)
{
    uint32_t tag = (uint32_t)(hash_bytes(key, klen, c->d->seed) >> 32);
    uint32_t mask = (1u << c->obits) - 1;
    uint32_t bucket = tag & mask;
    _Atomic uint32_t *head = &c->ot[bucket];
    if (c->active && bucket < c->cursor) {
        mask = (1u << c->nbits) - 1;
        bucket = tag & mask;
        head = &c->nt[bucket];
    }
    lk->tag = tag;
    lk->link = head;
    lk->ref = 0;
    conc__dict_walk w;
    conc__dict_walk_init(&w);
    uint32_t prev = 0;
    /* relaxed loads of links: the lock orders every access to the table.
     * An entry passed on the way is read for its tag, hash and link only,
     * each from inside the heap (a ref below hi has its 64 bytes there),
     * and must be a USED block of this bucket; the entry found is checked
     * whole (ent_load) before its key or value is read, and so is the one
     * before it, whose link a replace rewrites. */
    for (uint32_t ref = atomic_load_explicit(head, memory_order_relaxed);
         ref != 0;) {
        conc__dict_ent *e = &lk->e;
        if (!conc__dict_walk_step(&w, ref)) {
            return conc__dict_corrupt(c, "the chain of bucket %u loops back "
                                      "to entry %u", bucket, ref);
        }
        conc__dict_blk *b = conc__dict_blk_at(c, ref);
        uint32_t hash = 0;
        if (ref - c->lo < c->hi - c->lo) {
            hash = conc__dict_rd32(&b->hash);
        }
        if (ref - c->lo >= c->hi - c->lo ||
            (conc__dict_rd32(&b->tag) >> 8) != CONC__BLK_USED ||
            (hash & mask) != bucket ||
            (hash == tag && !conc__dict_ent_load(c, ref, e))) {
            return conc__dict_corrupt(c, "bucket %u links to %u, which is "
                                      "not one of its entries", bucket, ref);
        }
        if (hash == tag && e->klen == klen &&
            key_eq(conc__dict_ent_key(e), key, klen)) {
            conc__dict_ent pe;
            if (prev != 0 && !conc__dict_ent_load(c, prev, &pe)) {
                return conc__dict_corrupt(c, "bucket %u links to %u, which "
                                          "is not one of its entries",
                                          bucket, prev);
            }
            lk->ref = ref;
            return 0;
        }
        lk->link = &b->next;
        prev = ref;
        ref = atomic_load_explicit(&b->next, memory_order_relaxed);
    }
    lk->link = head;
    return 0;
}

/* ---- changes ------------------------------------------------------------- */

static uint32_t order_for(uint64_t need)
{
    uint32_t k = CONC__DICT_MIN_ORDER;
    while (k < 63 && ((uint64_t)1 << k) < need) {
        k++;
    }
    return k;
}

/* Stores key -> val where lk says (dict locked).  Copy-then-publish: the
 * new entry is complete before the one store that links it in place of
 * the old one (or at the bucket's head). */
static int dict_store(conc__dctx *c, lookup *lk, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
    /* The largest block the dict can ever give an entry.  A block of
     * 2^max_order bytes can only sit at offset 0 (twice that passes the
     * heap's most); when the rest of the heap cannot hold the smallest
     * index table, that block would take the table's place: the entry can
     * never be stored, which is CONC_ETOOBIG, not the CONC_ENOMEM of a
     * dict full now. */
    uint32_t fit = c->max_order;
    if (((uint64_t)1 << fit) +
            ((uint64_t)1 << conc__dict_table_order(CONC__DICT_MIN_BITS)) >
        conc__dict_max_heap(c->d)) {
        fit--;
    }
    uint64_t most = (uint64_t)1 << fit;
    if ((uint64_t)klen > most || (uint64_t)vlen > most ||
        CONC__DICT_ENTRY_HDR + conc__dict_round8(klen) + (uint64_t)vlen >
            most) {
        return conc__fail(CONC_ETOOBIG, "%s: a key of %zu bytes with a value "
                          "of %zu bytes is more than the largest block this "
                          "dict's capacity_bytes of %llu allows (%llu "
                          "bytes, header included)", c->fn, klen, vlen,
                          (unsigned long long)c->d->limit,
                          (unsigned long long)most);
    }
    uint32_t order =
        order_for(CONC__DICT_ENTRY_HDR + conc__dict_round8(klen) + vlen);
    conc__dict_hdr *h = c->h;
    conc__dict_writing_begin(c);
    conc__dict_step();
    int err = 0;
    if (lk->ref == 0) {
        /* A new key: the index may have to grow first.  This only
         * allocates; lk->link stays right (a new migration starts at
         * bucket 0 of the table lk points into). */
        err = conc__dict_resize(c, h->count + 1);
    }
    uint32_t nref = 0;
    if (err == 0) {
        err = conc__dict_alloc(c, order, &nref);
    }
    if (err != 0) {
        return writing_fail(c, err);
    }
    conc__dict_step();
    conc__dict_blk *n = conc__dict_blk_at(c, nref);
    conc__dict_wr32(&n->hash, lk->tag);
    conc__dict_wr32(&n->klen, (uint32_t)klen);
    conc__dict_wr64(&n->vlen, vlen);
    unsigned char *p = (unsigned char *)n + CONC__DICT_ENTRY_HDR;
    if (klen > 0) {
        memcpy(p, key, klen);
    }
    p += conc__dict_round8(klen);
    size_t half = vlen / 2;
    if (half > 0) {
        memcpy(p, val, half);
    }
    conc__dict_step();
    if (vlen > half) {
        memcpy(p + half, (const unsigned char *)val + half, vlen - half);
    }
    conc__dict_step();
    if (lk->ref != 0) {
        atomic_store_explicit(&n->next,
                              atomic_load_explicit(&lk->e.b->next,
                                                   memory_order_relaxed),
                              memory_order_relaxed);
        conc__dict_publish(lk->link, nref);
        conc__dict_step();
        err = conc__dict_release(c, lk->ref, lk->e.order);
    } else {
        atomic_store_explicit(&n->next,
                              atomic_load_explicit(lk->link,
                                                   memory_order_relaxed),
                              memory_order_relaxed);
        conc__dict_publish(lk->link, nref);
        conc__dict_step();
        h->count++;
    }
    if (err != 0) {
        return writing_fail(c, err);
    }
    conc__dict_step();
    conc__dict_writing_end(c);
    lk->ref = nref;
    return 0;
}

/* ---- creation ------------------------------------------------------------ */

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

int conc_dict_new(conc_dict **out, const conc_dict_opts *opts)
{
    if (opts != NULL && opts->url != NULL && out != NULL) {
        conc__netd *n = NULL;
        *out = NULL;
        int e = conc__netd_new(&n, opts); /* before n is read */
        return net_handle(out, e, n);
    }
    static const char fn[] = "conc_dict_new";
    int err = 0;
    conc_dict *d = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    if (opts != NULL && conc__timeout_given(opts->net_timeout)) {
        /* only a server honours it (as a server refuses capacity_bytes) */
        return conc__fail(CONC_EINVAL, "%s: .net_timeout is for a dict on "
                          "a server (.url)", fn);
    }
    size_t cap = opts != NULL ? opts->capacity_bytes : 0;
    const char *name = opts != NULL ? opts->name : NULL;
    bool given = cap != 0;
    uint64_t heap = given ? (uint64_t)cap : CONC__DICT_DEFAULT_LIMIT;
    if (heap > CONC__DICT_MAX_LIMIT) {
        return conc__fail(CONC_EINVAL, "%s: capacity_bytes %zu is over the "
                          "most a dict can address, %llu (256 GiB)", fn, cap,
                          (unsigned long long)CONC__DICT_MAX_LIMIT);
    }
    /* capacity_bytes bounds the heap (index and entries); the header page
     * comes on top, within the 2^38 bytes refs can address. */
    heap = (heap + 4095) & ~(uint64_t)4095;
    uint64_t limit = heap + CONC__DICT_HDR_SIZE;
    if (limit < CONC__DICT_MIN_LIMIT) {
        limit = CONC__DICT_MIN_LIMIT;
    }
    if (limit > CONC__DICT_MAX_LIMIT) {
        limit = CONC__DICT_MAX_LIMIT;
    }
    d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    if (name != NULL) {
        /* its first size allocated (conc__shm_create backs every page) */
        err = conc__shm_create(&d->shm, fn, name, CONC__DICT_FIRST_SIZE);
    } else {
        err = conc__shm_anon(&d->shm, fn, CONC__DICT_FIRST_SIZE);
    }
    conc__detail_kept kept;
    conc__detail_keep(&kept);
    while (err == 0) {
        err = conc__shm_reserve(d->shm, fn, limit);
        /* A default limit the address space cannot take (ulimit -v):
         * settle for less, down to 1 GiB, leaving no detail of the
         * failures on the way if that works. */
        /* (limit counts the header page: the floor is the capacity's) */
        if (err == CONC_ENOMEM && !given &&
            limit - CONC__DICT_HDR_SIZE > CONC__DICT_FALLBACK_LIMIT) {
            limit = (limit - CONC__DICT_HDR_SIZE) / 2 + CONC__DICT_HDR_SIZE;
            err = 0;
            continue;
        }
        if (err == 0) {
            conc__detail_put_back(&kept);
        }
        break;
    }
    if (err != 0) {
        goto fail;
    }
    d->base = conc_shm_ptr(d->shm);
    d->limit = limit;
    d->max_order = conc__dict_max_order(limit);
    d->seed = new_seed();
    atomic_store_explicit(&d->file_ok, CONC__DICT_FIRST_SIZE,
                          memory_order_relaxed);
    conc__dctx c = { .d = d, .h = (conc__dict_hdr *)(void *)d->base,
                     .base = d->base, .fn = fn };
    err = conc__dict_format(&c, CONC__DICT_FIRST_SIZE);
    if (err != 0) {
        goto fail;
    }
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
        int e = conc__netd_open(&n, name); /* before n is read */
        return net_handle(out, e, n);
    }
    static const char fn[] = "conc_dict_open";
    int err = 0;
    conc_dict *d = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    /* shm.c checks the owner and mode, waits for a creator still making
     * the dict and checks the magic (acquire, pairing with the release
     * store of the magic in conc__dict_format: the creator's header is
     * all visible). */
    const conc__shm_kind kind = { .what = "dict",
                                  .magic = CONC__DICT_MAGIC,
                                  .magic_size = sizeof(uint64_t),
                                  .min_size = CONC__DICT_FIRST_SIZE };
    err = conc__shm_open(&d->shm, fn, name, &kind);
    if (err != 0) {
        goto fail;
    }
    const char *sname = conc_shm_name(d->shm);
    size_t size = conc_shm_size(d->shm);
    conc__dict_hdr *h = conc_shm_ptr(d->shm);
    uint32_t version = conc__dict_rd32(&h->version);
    if (version != CONC__DICT_VERSION) {
        err = conc__fail(CONC_EINVAL, "%s: '%s' is a conc_dict of layout "
                         "version %u; this library reads version %u", fn,
                         sname, version, CONC__DICT_VERSION);
        goto fail;
    }
    uint64_t limit = conc__dict_rd64(&h->limit);
    uint32_t max_order = conc__dict_rd32(&h->max_order);
    if (limit < CONC__DICT_MIN_LIMIT || limit > CONC__DICT_MAX_LIMIT ||
        (limit & 4095) != 0 || size > limit ||
        max_order != conc__dict_max_order(limit)) {
        err = conc__fail(CONC_ECORRUPT, "%s: '%s': the dict's shared memory "
                         "is damaged: its header gives a capacity of %llu "
                         "bytes and blocks of up to 2^%u for a file of %zu",
                         fn, sname, (unsigned long long)limit, max_order,
                         size);
        goto fail;
    }
    d->limit = limit;
    d->max_order = max_order;
    d->seed = conc__dict_rd64(&h->hash_seed);
    atomic_store_explicit(&d->file_ok, size, memory_order_relaxed);
    err = conc__shm_reserve(d->shm, fn, limit);
    if (err != 0) {
        goto fail;
    }
    d->base = conc_shm_ptr(d->shm);
    /* The fields that change are checked under the lock (a peer may be
     * changing them now). */
    conc__dctx c;
    err = dict_enter(d, &c, fn);
    if (err != 0) {
        goto fail;
    }
    dict_leave(&c);
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
    free(d);
}

/* ---- the operations ------------------------------------------------------ */

static int args_bad(const conc_dict *d, const void *key, size_t klen,
                    const char *fn)
{
    if (d == NULL) {
        return conc__fail(CONC_EINVAL, "%s: d is NULL", fn);
    }
    if (key == NULL && klen > 0) {
        return conc__fail(CONC_EINVAL, "%s: key is NULL with klen %zu", fn,
                          klen);
    }
    return 0;
}

static int absent(const char *fn)
{
    return conc__fail(CONC_EEMPTY, "%s: no such key", fn);
}

int conc_dict_set(conc_dict *d, const void *key, size_t klen, const void *val,
                  size_t vlen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_set(d->net, key, klen, val, vlen);
    }
    static const char fn[] = "conc_dict_set";
    int err = args_bad(d, key, klen, fn);
    if (err != 0) {
        return err;
    }
    if (val == NULL && vlen > 0) {
        return conc__fail(CONC_EINVAL, "%s: val is NULL with vlen %zu", fn,
                          vlen);
    }
    conc__dctx c;
    err = dict_enter_w(d, &c, fn);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    if (err == 0) {
        err = dict_store(&c, &lk, key, klen, val, vlen);
    }
    dict_leave(&c);
    return err;
}

int conc_dict_get(conc_dict *d, const void *key, size_t klen, conc_msg *msg)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_get(d->net, key, klen, msg);
    }
    static const char fn[] = "conc_dict_get";
    int err = args_bad(d, key, klen, fn);
    if (err != 0) {
        return err;
    }
    if (msg == NULL) {
        return conc__fail(CONC_EINVAL, "%s: msg is NULL", fn);
    }
    msg->data = NULL;
    msg->len = 0;
    conc__dctx c;
    err = dict_enter(d, &c, fn);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    if (err == 0 && lk.ref == 0) {
        err = absent(fn);
    } else if (err == 0 && lk.e.vlen > 0) {
        void *p = conc__malloc((size_t)lk.e.vlen);
        if (p == NULL) {
            err = conc__fail(CONC_ENOMEM, "%s: out of memory for a value of "
                             "%llu bytes", fn,
                             (unsigned long long)lk.e.vlen);
        } else {
            memcpy(p, conc__dict_ent_val(&lk.e), (size_t)lk.e.vlen);
            msg->data = p;
            msg->len = (size_t)lk.e.vlen;
        }
    }
    dict_leave(&c);
    return err;
}

int conc_dict_get_into(conc_dict *d, const void *key, size_t klen, void *buf,
                       size_t cap, size_t *len)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_get_into(d->net, key, klen, buf, cap, len);
    }
    static const char fn[] = "conc_dict_get_into";
    int err = args_bad(d, key, klen, fn);
    if (err != 0) {
        return err;
    }
    if (len == NULL || (buf == NULL && cap > 0)) {
        return conc__fail(CONC_EINVAL, "%s: %s", fn,
                          len == NULL ? "len is NULL"
                                      : "buf is NULL with a capacity");
    }
    conc__dctx c;
    err = dict_enter(d, &c, fn);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    if (err == 0 && lk.ref == 0) {
        err = absent(fn);
    } else if (err == 0) {
        *len = (size_t)lk.e.vlen;
        if (lk.e.vlen > cap) {
            err = conc__fail(CONC_ETOOBIG, "%s: the value is %llu bytes, the "
                             "buffer %zu", fn,
                             (unsigned long long)lk.e.vlen, cap);
        } else if (lk.e.vlen > 0) {
            memcpy(buf, conc__dict_ent_val(&lk.e), (size_t)lk.e.vlen);
        }
    }
    dict_leave(&c);
    return err;
}

int conc_dict_del(conc_dict *d, const void *key, size_t klen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_del(d->net, key, klen);
    }
    static const char fn[] = "conc_dict_del";
    int err = args_bad(d, key, klen, fn);
    if (err != 0) {
        return err;
    }
    conc__dctx c;
    err = dict_enter_w(d, &c, fn);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    if (err == 0 && lk.ref == 0) {
        err = absent(fn);
    } else if (err == 0) {
        conc__dict_hdr *h = c.h;
        conc__dict_writing_begin(&c);
        conc__dict_step();
        /* The index may shrink: this only allocates the new table. */
        err = conc__dict_resize(&c, h->count - 1);
        if (err == 0) {
            conc__dict_publish(lk.link, atomic_load_explicit(&lk.e.b->next,
                                                  memory_order_relaxed));
            conc__dict_step();
            h->count--;
            err = conc__dict_release(&c, lk.ref, lk.e.order);
        }
        if (err == 0) {
            conc__dict_step();
            conc__dict_writing_end(&c);
        } else {
            writing_fail(&c, err);
        }
    }
    dict_leave(&c);
    return err;
}

bool conc_dict_contains(conc_dict *d, const void *key, size_t klen)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_contains(d->net, key, klen);
    }
    static const char fn[] = "conc_dict_contains";
    if (args_bad(d, key, klen, fn) != 0) {
        return false;
    }
    conc__dctx c;
    if (dict_enter(d, &c, fn) != 0) {
        return false;
    }
    lookup lk;
    int err = dict_find(&c, key, klen, &lk);
    dict_leave(&c);
    return err == 0 && lk.ref != 0;
}

size_t conc_dict_len(conc_dict *d)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_len(d->net);
    }
    static const char fn[] = "conc_dict_len";
    if (d == NULL) {
        conc__fail(CONC_EINVAL, "%s: d is NULL", fn);
        return 0;
    }
    conc__dctx c;
    if (dict_enter(d, &c, fn) != 0) {
        return 0;
    }
    size_t n = (size_t)c.h->count;
    dict_leave(&c);
    return n;
}

/* ---- snapshots: keys and items ------------------------------------------- */

typedef struct snap {
    bool values; /* items: values too */
    size_t count, bytes;
    conc_msg *keys;        /* fill pass: the keys' array ... */
    conc_dict_item *items; /* ... or the items' */
    unsigned char *p, *end;
    size_t i;
} snap;

static int snap_size(conc__dctx *c, const conc__dict_ent *e, uint32_t ref,
                     void *arg)
{
    (void)c;
    (void)ref;
    snap *s = arg;
    s->count++;
    s->bytes += conc__dict_round8(e->klen) +
                (s->values ? conc__dict_round8((size_t)e->vlen) : 0);
    return 0;
}

static int snap_fill(conc__dctx *c, const conc__dict_ent *e, uint32_t ref,
                     void *arg)
{
    (void)ref;
    snap *s = arg;
    size_t need = conc__dict_round8(e->klen) +
                  (s->values ? conc__dict_round8((size_t)e->vlen) : 0);
    if (s->i >= s->count || need > (size_t)(s->end - s->p)) {
        /* Only a peer writing without the lock can change the table
         * between the two passes. */
        return conc__dict_corrupt(c, "the table changed during a snapshot");
    }
    unsigned char *k = e->klen > 0 ? s->p : NULL;
    memcpy(s->p, conc__dict_ent_key(e), e->klen);
    s->p += conc__dict_round8(e->klen);
    if (!s->values) {
        s->keys[s->i].data = k;
        s->keys[s->i].len = e->klen;
    } else {
        unsigned char *v = e->vlen > 0 ? s->p : NULL;
        memcpy(s->p, conc__dict_ent_val(e), (size_t)e->vlen);
        s->p += conc__dict_round8((size_t)e->vlen);
        s->items[s->i] = (conc_dict_item){ k, e->klen, v, (size_t)e->vlen };
    }
    s->i++;
    return 0;
}

/* keys and items: one heap block holding the array, then the bytes its
 * elements point into (8-aligned each).  Two walks under the lock: one
 * to size the block, one to fill it. */
static int snapshot(conc_dict *d, bool values, void **arr, size_t *n,
                    const char *fn)
{
    if (d == NULL || arr == NULL || n == NULL) {
        return conc__fail(CONC_EINVAL, "%s: %s is NULL", fn,
                          d == NULL ? "d" : arr == NULL ? "the array" : "n");
    }
    *arr = NULL;
    *n = 0;
    conc__dctx c;
    int err = dict_enter(d, &c, fn);
    if (err != 0) {
        return err;
    }
    snap s = { .values = values };
    err = conc__dict_visit(&c, snap_size, &s);
    size_t elem = values ? sizeof(conc_dict_item) : sizeof(conc_msg);
    if (err == 0 && s.count > 0) {
        size_t head = conc__dict_round8(s.count * elem);
        unsigned char *block = conc__malloc(head + s.bytes);
        if (block == NULL) {
            err = conc__fail(CONC_ENOMEM, "%s: out of memory for %zu "
                             "entries (%zu bytes)", fn, s.count,
                             head + s.bytes);
        } else {
            s.keys = (conc_msg *)(void *)block;
            s.items = (conc_dict_item *)(void *)block;
            s.p = block + head;
            s.end = s.p + s.bytes;
            err = conc__dict_visit(&c, snap_fill, &s);
            if (err == 0 && s.i != s.count) {
                err = conc__dict_corrupt(&c, "the table changed during a "
                                         "snapshot");
            }
            if (err != 0) {
                free(block);
            } else {
                *arr = block;
                *n = s.count;
            }
        }
    }
    dict_leave(&c);
    return err;
}

int conc_dict_keys(conc_dict *d, conc_msg **keys, size_t *n)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_keys(d->net, keys, n);
    }
    return snapshot(d, false, (void **)keys, n, "conc_dict_keys");
}

int conc_dict_items(conc_dict *d, conc_dict_item **items, size_t *n)
{
    if (d != NULL && d->net != NULL) {
        return conc__netd_items(d->net, items, n);
    }
    return snapshot(d, true, (void **)items, n, "conc_dict_items");
}

void conc_dict_array_free(void *array)
{
    free(array);
}

void conc_dict_keys_free(conc_msg *keys)
{
    conc_dict_array_free(keys);
}

/* ---- update and add ------------------------------------------------------ */

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
    conc__buf_reset(&tls_buf);
    tls_buf.limit = 0;
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
    static const char name[] = "conc_dict_update";
    int err = args_bad(d, key, klen, name);
    if (err != 0) {
        return err;
    }
    if (fn == NULL) {
        return conc__fail(CONC_EINVAL, "%s: fn is NULL", name);
    }
    conc__dctx c;
    err = dict_enter_w(d, &c, name);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    if (err != 0) {
        dict_leave(&c);
        return err;
    }
    conc_buf local, *out = update_buf_take(&local);
    /* fn runs with the flag down: a thread that dies inside it leaves
     * nothing to repair. */
    if (lk.ref != 0) {
        err = fn(conc__dict_ent_val(&lk.e), (size_t)lk.e.vlen, true, out, arg);
    } else {
        err = fn(NULL, 0, false, out, arg);
    }
    err = conc__buf_outcome(out, err);
    if (out->lost != 0 && err == out->lost) {
        err = conc__fail(err, "%s: the update fn's value was cut short "
                         "(%s); the entry is as it was", name, out->error);
    } else if (err > 0) {
        /* The caller's own code; a libconc code (negative) keeps the
         * detail the call fn made set. */
        err = conc__fail(err, "%s: the update fn returned %d; the entry is "
                         "as it was", name, err);
    } else if (err == 0) {
        err = dict_store(&c, &lk, key, klen, out->data, out->len);
    }
    dict_leave(&c);
    update_buf_give(out);
    return err;
}

/* The value encoding of conc_dict_add: 8 bytes, little-endian. */
static int64_t le64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return (int64_t)v;
}

static uint64_t le64(int64_t x)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)x, v;
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(u >> (8 * i));
    }
    memcpy(&v, b, 8);
    return v;
}

/* conc_dict_add on a server: an update whose fn adds delta to the 8-byte
 * value (the server's compare-and-set makes it atomic; fn may run more
 * than once, each run from the value then current, so it only computes). */
typedef struct net_add {
    int64_t delta;
    int64_t now;
} net_add;

static int net_add_fn(const void *old, size_t oldlen, bool found,
                      conc_buf *out, void *arg)
{
    net_add *a = arg;
    int64_t was = 0;
    if (found && oldlen != 8) {
        return conc__fail(CONC_EINVAL, "conc_dict_add: the value is %zu "
                          "bytes, not an 8-byte integer", oldlen);
    }
    if (found) {
        was = le64_get(old);
    }
    if (__builtin_add_overflow(was, a->delta, &a->now)) {
        return conc__fail(CONC_EINVAL, "conc_dict_add: %lld + %lld "
                          "overflows a 64-bit integer", (long long)was,
                          (long long)a->delta);
    }
    uint64_t v = le64(a->now);
    return conc_buf_append(out, &v, sizeof v);
}

int conc_dict_add(conc_dict *d, const void *key, size_t klen, int64_t delta,
                  int64_t *result)
{
    if (d != NULL && d->net != NULL) {
        net_add a = { .delta = delta, .now = 0 };
        int e = conc__netd_update(d->net, key, klen, net_add_fn, &a);
        if (e == 0 && result != NULL) {
            *result = a.now;
        }
        return e;
    }
    static const char fn[] = "conc_dict_add";
    int err = args_bad(d, key, klen, fn);
    if (err != 0) {
        return err;
    }
    conc__dctx c;
    err = dict_enter_w(d, &c, fn);
    if (err != 0) {
        return err;
    }
    lookup lk;
    err = dict_find(&c, key, klen, &lk);
    int64_t now = delta;
    if (err == 0 && lk.ref != 0) {
        unsigned char *v = conc__dict_ent_val(&lk.e);
        int64_t old = lk.e.vlen == 8 ? le64_get(v) : 0;
        if (lk.e.vlen != 8) {
            err = conc__fail(CONC_EINVAL, "%s: the value is %llu bytes, not "
                             "an 8-byte integer", fn,
                             (unsigned long long)lk.e.vlen);
        } else if (__builtin_add_overflow(old, delta, &now)) {
            err = conc__fail(CONC_EINVAL, "%s: %lld + %lld overflows a "
                             "64-bit integer", fn, (long long)old,
                             (long long)delta);
        } else {
            /* In place: one aligned 8-byte store (the value is 8-aligned
             * in a 64-aligned block), which no death can tear. */
            __atomic_store_n((uint64_t *)(void *)v, le64(now),
                             __ATOMIC_RELAXED);
        }
    } else if (err == 0) {
        uint64_t v = le64(delta);
        err = dict_store(&c, &lk, key, klen, &v, sizeof v);
    }
    dict_leave(&c);
    if (err == 0 && result != NULL) {
        *result = now;
    }
    return err;
}

/* ---- tests --------------------------------------------------------------- */

int conc__dict_check(conc_dict *d)
{
    if (d == NULL) {
        return conc__fail(CONC_EINVAL, "conc__dict_check: d is NULL");
    }
    conc__dctx c;
    int err = dict_enter_as(d, &c, "conc__dict_check", true);
    if (err != 0) {
        return err;
    }
    err = conc__dict_check_locked(&c);
    dict_leave(&c);
    return err;
}

uint32_t conc__dict_ref_of(conc_dict *d, const void *key, size_t klen)
{
    conc__dctx c;
    if (dict_enter(d, &c, "conc__dict_ref_of") != 0) {
        return 0;
    }
    lookup lk;
    uint32_t ref = dict_find(&c, key, klen, &lk) == 0 ? lk.ref : 0;
    dict_leave(&c);
    return ref;
}

int conc__dict_stats_get(conc_dict *d, conc__dict_stats *st)
{
    if (d == NULL || st == NULL) {
        return conc__fail(CONC_EINVAL, "conc__dict_stats_get: %s is NULL",
                          d == NULL ? "d" : "st");
    }
    conc__dctx c;
    int err = dict_enter_as(d, &c, "conc__dict_stats_get", true);
    if (err != 0) {
        return err;
    }
    conc__dict_hdr *h = c.h;
    st->takeovers = h->takeovers;
    st->rebuilds = h->rebuilds;
    st->grows = h->grows;
    st->resizes = h->resizes;
    st->free_bytes = (size_t)h->free_bytes;
    st->heap_bytes = (size_t)c.heap_size;
    st->index_bytes = (size_t)1 << conc__dict_table_order(c.obits);
    if (c.active) {
        st->index_bytes += (size_t)1 << conc__dict_table_order(c.nbits);
    }
    st->buckets = (size_t)1 << c.obits;
    st->migrating = c.active;
    st->limit = (size_t)d->limit;
    st->most_backed = (size_t)atomic_load_explicit(&d->most_backed,
                                                   memory_order_relaxed);
    dict_leave(&c);
    return 0;
}
