/* dict_heap.c - the dict's heap (a buddy allocator over a file that grows),
 * its index (two tables and a migration cursor) and its repair.  The
 * design, the order of every write and what a death at each step leaves
 * are in src/dict.c's opening comment; this file holds the code, and the
 * comments here say which step of that design each function is.
 *
 * Every function runs under the dict's lock, on a view (conc__dctx) whose
 * fields were read once and checked (conc__dict_view).  Every ref read
 * from the segment passes blk_fits / ent_load / free_ok before it is
 * followed, every walk is bounded (walk_step), and a check that fails
 * returns CONC_ECORRUPT with a detail before anything is written for the
 * step it guards.
 */
#include "dict_int.h"

#include <stdarg.h>
#include <stdio.h>

/* ---- errors --------------------------------------------------------------- */

int conc__dict_corrupt(const conc__dctx *c, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return conc__fail(CONC_ECORRUPT, "%s: the dict's shared memory is "
                      "damaged: %s", c->fn, what);
}

uint32_t conc__dict_max_order(uint64_t limit)
{
    uint64_t heap = limit - CONC__DICT_HDR_SIZE;
    uint32_t k = CONC__DICT_MIN_ORDER;
    while (k < CONC__DICT_MAX_ORDER && ((uint64_t)1 << (k + 1)) <= heap) {
        k++;
    }
    return k;
}

/* ---- the view ------------------------------------------------------------- */

static bool table_ok(const conc__dctx *c, uint32_t ref, uint32_t bits)
{
    return bits >= CONC__DICT_MIN_BITS && bits <= CONC__DICT_MAX_BITS &&
           conc__dict_blk_fits(c, ref, conc__dict_table_order(bits));
}

static _Atomic uint32_t *table_heads(const conc__dctx *c, uint32_t ref)
{
    return (_Atomic uint32_t *)(void *)conc__dict_blk_at(c, ref);
}

/* Makes sure the file holds end bytes: a compare, and an fstat only when
 * the header claims more than this process has seen (once per growth). */
static int file_holds(conc__dctx *c, uint64_t end)
{
    conc_dict *d = c->d;
    if (end <= atomic_load_explicit(&d->file_ok, memory_order_relaxed)) {
        return 0;
    }
    uint64_t size = 0;
    int err = conc__shm_file_size(d->shm, c->fn, &size);
    if (err != 0) {
        return err;
    }
    if (size < end) {
        return conc__dict_corrupt(c, "the header says the dict holds %llu "
                                  "bytes, but its file holds %llu",
                                  (unsigned long long)end,
                                  (unsigned long long)size);
    }
    if (size > d->limit) {
        size = d->limit;
    }
    atomic_store_explicit(&d->file_ok, size, memory_order_relaxed);
    return 0;
}

/* Fills c from header words already read (cur: the main table's slot)
 * and checks them. */
static int view_check(conc__dctx *c, uint64_t hs, uint64_t ix,
                      const uint32_t *tab,
                      const uint32_t *bits)
{
    uint64_t max_heap = c->d->limit - CONC__DICT_HDR_SIZE;
    if (hs < 4096 || hs > max_heap || (hs & 4095) != 0) {
        return conc__dict_corrupt(c, "heap size %llu: not a multiple of "
                                  "4096 between 4096 and %llu",
                                  (unsigned long long)hs,
                                  (unsigned long long)max_heap);
    }
    int err = file_holds(c, CONC__DICT_HDR_SIZE + hs);
    if (err != 0) {
        return err;
    }
    c->heap_size = hs;
    c->lo = CONC__DICT_HDR_SIZE >> CONC__DICT_UNIT_SHIFT;
    c->hi = (uint32_t)((CONC__DICT_HDR_SIZE + hs) >> CONC__DICT_UNIT_SHIFT);
    c->ix = ix;
    c->active = (ix & CONC__IX_ACTIVE) != 0;
    c->cursor = (uint32_t)(ix >> 32);
    c->oref = tab[0];
    c->obits = bits[0];
    if (((uint32_t)ix & ~(uint32_t)CONC__IX_LOW_BITS) != 0 ||
        !table_ok(c, c->oref, c->obits)) {
        return conc__dict_corrupt(c, "index table %u of 2^%u buckets (state "
                                  "%#llx) is not a block of the heap",
                                  c->oref, c->obits, (unsigned long long)ix);
    }
    c->ot = table_heads(c, c->oref);
    c->nref = 0;
    c->nbits = 0;
    c->nt = NULL;
    if (!c->active) {
        if (c->cursor != 0 || (ix & CONC__IX_INITED) != 0) {
            return conc__dict_corrupt(c, "index state %#llx: a cursor with "
                                      "no migration",
                                      (unsigned long long)ix);
        }
        return 0;
    }
    c->nref = tab[1];
    c->nbits = bits[1];
    bool ok = table_ok(c, c->nref, c->nbits) &&
              (c->nbits == c->obits + 1 || c->nbits < c->obits) &&
              c->cursor < (1u << c->obits);
    if (ok) {
        /* Both sizes checked: the tables must not overlap. */
        uint64_t ou = (uint64_t)1 << (conc__dict_table_order(c->obits) -
                                      CONC__DICT_UNIT_SHIFT);
        uint64_t nu = (uint64_t)1 << (conc__dict_table_order(c->nbits) -
                                      CONC__DICT_UNIT_SHIFT);
        ok = (uint64_t)c->oref >= c->nref + nu ||
             (uint64_t)c->nref >= c->oref + ou;
    }
    if (!ok) {
        return conc__dict_corrupt(c, "migration to table %u of 2^%u buckets "
                                  "from %u of 2^%u at bucket %u is not "
                                  "possible", c->nref, c->nbits, c->oref,
                                  c->obits, c->cursor);
    }
    c->nt = table_heads(c, c->nref);
    return 0;
}

int conc__dict_view(conc__dctx *c)
{
    conc__dict_hdr *h = c->h;
    struct conc__dict_view_cache *v = &c->d->view;
    uint64_t hs = atomic_load_explicit(&h->heap_size, memory_order_relaxed);
    uint64_t ix = atomic_load_explicit(&h->ix, memory_order_relaxed);
    unsigned cur = (ix & CONC__IX_CUR) != 0;
    uint32_t tab[2] = { 0, 0 }, bits[2] = { 0, 0 };
    tab[0] = atomic_load_explicit(&h->tab[cur], memory_order_relaxed);
    bits[0] = atomic_load_explicit(&h->bits[cur], memory_order_relaxed);
    if ((ix & CONC__IX_ACTIVE) != 0) {
        tab[1] = atomic_load_explicit(&h->tab[!cur], memory_order_relaxed);
        bits[1] = atomic_load_explicit(&h->bits[!cur], memory_order_relaxed);
    }
    v->ok = false;
    int err = view_check(c, hs, ix, tab, bits);
    if (err != 0) {
        return err;
    }
    v->hs = hs;
    v->ix = ix;
    memcpy(v->tab, tab, sizeof tab);
    memcpy(v->bits, bits, sizeof bits);
    v->lo = c->lo;
    v->hi = c->hi;
    v->ot = c->ot;
    v->nt = c->nt;
    v->ok = true;
    return 0;
}

/* ---- free lists ----------------------------------------------------------- */

/* Whether ref is a free block of order k: in the heap, aligned, tagged
 * so, and not an index table (whose first word, a bucket head, could
 * happen to read like a tag). */
static bool free_ok(const conc__dctx *c, uint32_t ref, uint32_t k)
{
    return conc__dict_blk_fits(c, ref, k) &&
           conc__dict_rd32(&conc__dict_blk_at(c, ref)->tag) ==
               CONC__BLK_TAG(CONC__BLK_FREE, k) &&
           ref != c->oref && !(c->active && ref == c->nref);
}

static int free_push(conc__dctx *c, uint32_t ref, uint32_t k)
{
    conc__dict_hdr *h = c->h;
    uint32_t head = atomic_load_explicit(&h->free_head[k],
                                         memory_order_relaxed);
    if (head != 0 && !free_ok(c, head, k)) {
        return conc__dict_corrupt(c, "the free list of %llu-byte blocks "
                                  "starts at %u, which is not a free block",
                                  1ull << k, head);
    }
    conc__dict_blk *b = conc__dict_blk_at(c, ref);
    conc__dict_wr32(&b->tag, CONC__BLK_TAG(CONC__BLK_FREE, k));
    conc__dict_wr32(&b->prev, 0);
    atomic_store_explicit(&b->next, head, memory_order_relaxed);
    if (head != 0) {
        conc__dict_wr32(&conc__dict_blk_at(c, head)->prev, ref);
    }
    atomic_store_explicit(&h->free_head[k], ref, memory_order_relaxed);
    h->free_bytes += (uint64_t)1 << k;
    return 0;
}

/* Takes ref (a checked free block of order k) off its list.  Every link
 * it will write through is checked first, so a failed check writes
 * nothing. */
static int free_remove(conc__dctx *c, uint32_t ref, uint32_t k)
{
    conc__dict_hdr *h = c->h;
    conc__dict_blk *b = conc__dict_blk_at(c, ref);
    uint32_t next = atomic_load_explicit(&b->next, memory_order_relaxed);
    uint32_t prev = conc__dict_rd32(&b->prev);
    bool ok = next == 0 || (free_ok(c, next, k) &&
                            conc__dict_rd32(
                                &conc__dict_blk_at(c, next)->prev) == ref);
    if (prev != 0) {
        ok = ok && free_ok(c, prev, k) &&
             atomic_load_explicit(&conc__dict_blk_at(c, prev)->next,
                                  memory_order_relaxed) == ref;
    } else {
        ok = ok && atomic_load_explicit(&h->free_head[k],
                                        memory_order_relaxed) == ref;
    }
    if (!ok) {
        return conc__dict_corrupt(c, "free block %u (%llu bytes) has broken "
                                  "list links (next %u, prev %u)", ref,
                                  1ull << k, next, prev);
    }
    if (prev != 0) {
        atomic_store_explicit(&conc__dict_blk_at(c, prev)->next, next,
                              memory_order_relaxed);
    } else {
        atomic_store_explicit(&h->free_head[k], next, memory_order_relaxed);
    }
    if (next != 0) {
        conc__dict_wr32(&conc__dict_blk_at(c, next)->prev, prev);
    }
    h->free_bytes -= (uint64_t)1 << k;
    return 0;
}

/* ---- blocks --------------------------------------------------------------- */

/* 0 with *out a USED block of exactly order; 1 when none is free. */
static int balloc(conc__dctx *c, uint32_t order, uint32_t *out)
{
    conc__dict_hdr *h = c->h;
    uint32_t k = order, ref = 0;
    for (; k <= c->max_order; k++) {
        ref = atomic_load_explicit(&h->free_head[k], memory_order_relaxed);
        if (ref != 0) {
            break;
        }
    }
    if (k > c->max_order) {
        return 1;
    }
    if (!free_ok(c, ref, k)) {
        return conc__dict_corrupt(c, "the free list of %llu-byte blocks "
                                  "starts at %u, which is not a free block",
                                  1ull << k, ref);
    }
    int err = free_remove(c, ref, k);
    if (err != 0) {
        return err;
    }
    conc__dict_step();
    while (k > order) {
        k--;
        err = free_push(c,
                        ref + (uint32_t)(1u << (k - CONC__DICT_UNIT_SHIFT)),
                        k);
        if (err != 0) {
            return err;
        }
        conc__dict_step();
    }
    conc__dict_wr32(&conc__dict_blk_at(c, ref)->tag,
                    CONC__BLK_TAG(CONC__BLK_USED, order));
    *out = ref;
    return 0;
}

/* Frees the block at ref of that order, merging it with its buddy while
 * the buddy is a free block of the same order that ends at or below end
 * (bytes from the heap's start).  The buddy's offset is always the start
 * of some block, never the middle of one: blocks tile the heap, each
 * aligned to its size, so a block that covered the buddy's offset would
 * cover ref too. */
static int merge_free(conc__dctx *c, uint32_t ref, uint32_t order, uint64_t end)
{
    uint64_t rel = (uint64_t)(ref - c->lo) << CONC__DICT_UNIT_SHIFT;
    uint32_t k = order;
    while (k < c->max_order) {
        uint64_t brel = rel ^ ((uint64_t)1 << k);
        if (brel + ((uint64_t)1 << k) > end) {
            break;
        }
        uint32_t bref = c->lo + (uint32_t)(brel >> CONC__DICT_UNIT_SHIFT);
        if (!free_ok(c, bref, k)) {
            break;
        }
        int err = free_remove(c, bref, k);
        if (err != 0) {
            return err;
        }
        conc__dict_step();
        if (brel < rel) {
            rel = brel;
        }
        k++;
    }
    uint32_t merged = c->lo + (uint32_t)(rel >> CONC__DICT_UNIT_SHIFT);
    if (merged != ref) {
        /* now inside the merged block */
        conc__dict_wr32(&conc__dict_blk_at(c, ref)->tag, 0);
    }
    return free_push(c, merged, k);
}

int conc__dict_release(conc__dctx *c, uint32_t ref, uint32_t order)
{
    return merge_free(c, ref, order, c->heap_size);
}

/* The heap's bytes [g, e) cut into blocks each aligned to its size and as
 * large as possible; fn(c, ref, order, arg) for each, lowest first. */
typedef int (*piece_fn)(conc__dctx *c, uint32_t ref, uint32_t k, void *arg);

static int carve(conc__dctx *c, uint64_t g, uint64_t e, piece_fn fn, void *arg)
{
    while (g < e) {
        uint32_t k = g == 0 ? c->max_order
                            : (uint32_t)__builtin_ctzll(g);
        if (k > c->max_order) {
            k = c->max_order;
        }
        while (((uint64_t)1 << k) > e - g) {
            k--;
        }
        int err = fn(c, c->lo + (uint32_t)(g >> CONC__DICT_UNIT_SHIFT), k, arg);
        if (err != 0) {
            return err;
        }
        g += (uint64_t)1 << k;
    }
    return 0;
}

static int piece_push(conc__dctx *c, uint32_t ref, uint32_t k, void *arg)
{
    (void)arg;
    return free_push(c, ref, k);
}

/* A piece of newly grown heap: made a block and freed, merging with the
 * free blocks below it (never above: what lies above is not carved yet). */
static int piece_merge(conc__dctx *c, uint32_t ref, uint32_t k, void *arg)
{
    (void)arg;
    conc__dict_wr32(&conc__dict_blk_at(c, ref)->tag,
                    CONC__BLK_TAG(CONC__BLK_USED, k));
    uint64_t end = ((uint64_t)(ref - c->lo) << CONC__DICT_UNIT_SHIFT) +
                   ((uint64_t)1 << k);
    int err = merge_free(c, ref, k, end);
    conc__dict_step();
    return err;
}

/* The tests' growth step (conc__dict_grow_step_set); 0: the default.
 * Relaxed: a setting made before the dict is used. */
static _Atomic uint64_t step_set;

void conc__dict_grow_step_set(uint64_t bytes)
{
    atomic_store_explicit(&step_set, bytes, memory_order_relaxed);
}

/* A growth step: an eighth of the heap, at least 64 KiB, at most 2 MiB. */
static uint64_t grow_step(uint64_t hs)
{
    uint64_t fixed = atomic_load_explicit(&step_set, memory_order_relaxed);
    if (__builtin_expect(fixed != 0, 0)) {
        return fixed;
    }
    uint64_t step = hs / 8;
    if (step < CONC__DICT_GROW_MIN) {
        step = CONC__DICT_GROW_MIN;
    }
    if (step > CONC__DICT_GROW_MAX) {
        step = CONC__DICT_GROW_MAX;
    }
    return step;
}

/* Backs [from, to) of the file (offsets from its start) and records the
 * most bytes one call of this process backed at once (stats). */
static int back(conc__dctx *c, uint64_t from, uint64_t to)
{
    conc_dict *d = c->d;
    int err = conc__shm_grow(d->shm, c->fn, from, to);
    /* Relaxed: a figure for the tests, read under the lock. */
    if (err == 0 &&
        to - from > atomic_load_explicit(&d->most_backed,
                                         memory_order_relaxed)) {
        atomic_store_explicit(&d->most_backed, to - from,
                              memory_order_relaxed);
    }
    return err;
}

/* Growth to target heap bytes (G1-G3 in dict.c): the file first, with
 * [hs, backed) allocated (fallocate: its pages exist before anyone may
 * touch them) and, when backed < target, the rest only made part of the
 * file by allocating its last page; then heap_size in the header; then
 * the new bytes carved into free blocks.  A death after the file grew and
 * before heap_size did leaves a longer file, harmless; after heap_size
 * and before the carving ends, the repair's rebuild carves (and backs)
 * what is not reachable. */
static int heap_extend(conc__dctx *c, uint64_t target, uint64_t backed)
{
    conc_dict *d = c->d;
    uint64_t hs = c->heap_size;
    int err = back(c, CONC__DICT_HDR_SIZE + hs, CONC__DICT_HDR_SIZE + backed);
    if (err == 0 && backed < target) {
        err = back(c, CONC__DICT_HDR_SIZE + target - 4096,
                   CONC__DICT_HDR_SIZE + target);
    }
    if (err != 0) {
        return err;
    }
    if (CONC__DICT_HDR_SIZE + target >
        atomic_load_explicit(&d->file_ok, memory_order_relaxed)) {
        atomic_store_explicit(&d->file_ok, CONC__DICT_HDR_SIZE + target,
                              memory_order_relaxed);
    }
    conc__dict_step();
    atomic_store_explicit(&c->h->heap_size, target, memory_order_relaxed);
    c->heap_size = target;
    c->hi = (uint32_t)((CONC__DICT_HDR_SIZE + target) >> CONC__DICT_UNIT_SHIFT);
    conc__dict_step();
    err = carve(c, hs, target, piece_merge, NULL);
    if (err == 0) {
        c->h->grows++;
    }
    return err;
}

/* Grows the heap so that a free block of 2^order bytes exists: by a step,
 * or to the end of the first aligned place for the block when that is
 * more.  For an index table (table) larger than a step, no call pays for
 * more than about one step: while the aligned place lies more than a step
 * above the heap's end, this grows one step toward it and returns 1 (not
 * yet: the resize waits for a later call); then it backs the stretch
 * below the table and the table's first page only, and the migration
 * backs the rest of the table a stretch at a time, before it writes
 * there (table_back). */
static int heap_grow(conc__dctx *c, uint32_t order, bool table)
{
    conc_dict *d = c->d;
    uint64_t hs = c->heap_size, need = (uint64_t)1 << order;
    uint64_t max_heap = conc__dict_max_heap(d);
    uint64_t start = (hs + need - 1) & ~(need - 1);
    if (start + need > max_heap) {
        return conc__fail(CONC_ENOMEM, "%s: the dict is full: %llu bytes "
                          "more would pass its capacity_bytes of %llu (the "
                          "heap holds %llu)", c->fn,
                          (unsigned long long)need,
                          (unsigned long long)d->limit,
                          (unsigned long long)hs);
    }
    uint64_t step = grow_step(hs);
    if (table && need > step) {
        if (start - hs > step) {
            int err = heap_extend(c, hs + step, hs + step);
            return err != 0 ? err : 1;
        }
        return heap_extend(c, start + need, start + 4096);
    }
    uint64_t target = start + need > hs + step ? start + need : hs + step;
    target = (target + 4095) & ~(uint64_t)4095;
    if (target > max_heap) {
        target = max_heap;
    }
    return heap_extend(c, target, target);
}

/* conc__dict_alloc, and for an index table (table) 1 when the heap is
 * still growing toward a place for it (heap_grow). */
static int alloc_block(conc__dctx *c, uint32_t order, bool table, uint32_t *ref)
{
    for (int grown = 0;; grown++) {
        int err = balloc(c, order, ref);
        if (err <= 0) {
            return err;
        }
        if (grown > 0) {
            /* The growth just added an aligned block of this order. */
            return conc__dict_corrupt(c, "no %llu-byte block after growing "
                                      "the heap for one", 1ull << order);
        }
        err = heap_grow(c, order, table);
        if (err != 0) {
            return err;
        }
    }
}

int conc__dict_alloc(conc__dctx *c, uint32_t order, uint32_t *ref)
{
    return alloc_block(c, order, false, ref);
}

/* ---- the index ------------------------------------------------------------ */

static void set_ix(conc__dctx *c, uint64_t ix)
{
    /* release: the tables' fields written before are not sunk below the
     * store that makes them count (crash consistency, see conc__dict_step). */
    atomic_store_explicit(&c->h->ix, ix, memory_order_release);
    c->ix = ix;
    c->active = (ix & CONC__IX_ACTIVE) != 0;
    c->cursor = (uint32_t)(ix >> 32);
}

/* Whether new-table bucket j has been initialised: the first old bucket
 * that maps to it has been migrated. */
static bool new_live(const conc__dctx *c, uint32_t j)
{
    if (c->nbits > c->obits) {
        return (j & ((1u << c->obits) - 1)) < c->cursor;
    }
    return j < c->cursor;
}

/* Walks one chain, checking each entry (a real entry of this bucket) and
 * that the walk ends. */
static int walk_chain(conc__dctx *c, _Atomic uint32_t *head, uint32_t bucket,
                      uint32_t mask, conc__dict_visit_fn fn, void *arg)
{
    conc__dict_walk w;
    conc__dict_walk_init(&w);
    for (uint32_t ref = atomic_load_explicit(head, memory_order_relaxed);
         ref != 0;) {
        conc__dict_ent e;
        if (!conc__dict_walk_step(&w, ref)) {
            return conc__dict_corrupt(c, "the chain of bucket %u loops back "
                                      "to entry %u", bucket, ref);
        }
        if (!conc__dict_ent_load(c, ref, &e)) {
            return conc__dict_corrupt(c, "bucket %u links to %u, which is "
                                      "not an entry", bucket, ref);
        }
        if ((e.hash & mask) != bucket) {
            return conc__dict_corrupt(c, "entry %u in bucket %u belongs to "
                                      "bucket %u", ref, bucket,
                                      e.hash & mask);
        }
        int err = fn(c, &e, ref, arg);
        if (err != 0) {
            return err;
        }
        ref = atomic_load_explicit(&e.b->next, memory_order_relaxed);
    }
    return 0;
}

int conc__dict_visit(conc__dctx *c, conc__dict_visit_fn fn, void *arg)
{
    uint32_t onb = 1u << c->obits;
    for (uint32_t b = c->active ? c->cursor : 0; b < onb; b++) {
        int err = walk_chain(c, &c->ot[b], b, onb - 1, fn, arg);
        if (err != 0) {
            return err;
        }
    }
    if (!c->active) {
        return 0;
    }
    uint32_t nnb = 1u << c->nbits;
    for (uint32_t j = 0; j < nnb; j++) {
        if (new_live(c, j)) {
            int err = walk_chain(c, &c->nt[j], j, nnb - 1, fn, arg);
            if (err != 0) {
                return err;
            }
        }
    }
    return 0;
}

/* The migration is over: the new table becomes the main one (one store of
 * the state word), then the old table's block is freed, unless the
 * caller is the repair, whose rebuild frees it with everything else
 * unreachable. */
static int migration_end(conc__dctx *c, bool release)
{
    uint32_t old = c->oref, oorder = conc__dict_table_order(c->obits);
    set_ix(c, (c->ix & CONC__IX_CUR) ^ CONC__IX_CUR);
    c->oref = c->nref;
    c->obits = c->nbits;
    c->ot = c->nt;
    c->nref = 0;
    c->nbits = 0;
    c->nt = NULL;
    c->h->resizes++;
    conc__dict_step();
    return release ? conc__dict_release(c, old, oorder) : 0;
}

/* Steps M3 and M4 of a move: e (at ref, unreachable) goes to the head
 * of new bucket j. */
static void move_link(conc__dctx *c, const conc__dict_ent *e, uint32_t ref,
                      uint32_t j)
{
    atomic_store_explicit(&e->b->next,
                          atomic_load_explicit(&c->nt[j],
                                               memory_order_relaxed),
                          memory_order_relaxed);
    conc__dict_step();
    conc__dict_publish(&c->nt[j], ref);
    conc__dict_step();
}

/* Backs the new table's heads that the init of bucket b is about to
 * write, a stretch of heads at a time (64 KiB: one fallocate every few
 * hundred migrating calls), at the first bucket of each stretch: the
 * table's block may have been left unbacked past its first page
 * (heap_grow), and a death between this and the init repeats it.  For a
 * table that was backed already it only re-checks the pages. */
static int table_back(conc__dctx *c, uint32_t b)
{
    /* A stretch: 64 KiB of heads, or the largest power of two of heads
     * within a step where the tests made steps smaller (the default step
     * is never below 64 KiB, so the stretch never changes). */
    uint64_t step = grow_step(c->heap_size);
    uint32_t stretch = 1;
    while ((uint64_t)stretch * 8 <= step && stretch < CONC__DICT_BACK_BUCKETS) {
        stretch <<= 1;
    }
    if ((b & (stretch - 1)) != 0) {
        return 0;
    }
    uint64_t base = (uint64_t)c->nref << CONC__DICT_UNIT_SHIFT;
    uint64_t end = (uint64_t)4 << c->nbits;
    uint64_t from[2] = { (uint64_t)b * 4, 0 };
    int n = 1;
    if (c->nbits > c->obits) {
        from[n++] = ((uint64_t)b + ((uint64_t)1 << c->obits)) * 4;
    } else if (from[0] >= end) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        uint64_t to = from[i] + (uint64_t)stretch * 4;
        int err = back(c, base + from[i], base + (to < end ? to : end));
        if (err != 0) {
            return err;
        }
    }
    return 0;
}

/* Moves the cursor bucket's entries to the new table, one at a time,
 * each move journaled in mig_entry:
 *   1. mig_entry = e        (e is the old chain's head)
 *   2. old head = e->next   (e unreachable)
 *   3. e->next = new head
 *   4. new head = e         (e reachable again, from the new table)
 *   5. mig_entry = 0
 * The new heads are zeroed first, once (CONC__IX_INITED says so). */
static int migrate_bucket(conc__dctx *c, bool release)
{
    conc__dict_hdr *h = c->h;
    uint32_t b = c->cursor, onb = 1u << c->obits;
    uint32_t nmask = (1u << c->nbits) - 1;
    if ((c->ix & CONC__IX_INITED) == 0) {
        int err = table_back(c, b);
        if (err != 0) {
            return err;
        }
        if (c->nbits > c->obits) {
            conc__dict_publish(&c->nt[b], 0);
            conc__dict_publish(&c->nt[b + onb], 0);
        } else if (b <= nmask) {
            conc__dict_publish(&c->nt[b], 0);
        }
        conc__dict_step();
        set_ix(c, c->ix | CONC__IX_INITED);
        conc__dict_step();
    }
    conc__dict_walk w;
    conc__dict_walk_init(&w);
    for (;;) {
        uint32_t ref = atomic_load_explicit(&c->ot[b], memory_order_relaxed);
        if (ref == 0) {
            break;
        }
        conc__dict_ent e;
        if (!conc__dict_walk_step(&w, ref)) {
            return conc__dict_corrupt(c, "the chain of bucket %u loops back "
                                      "to entry %u", b, ref);
        }
        if (!conc__dict_ent_load(c, ref, &e) || (e.hash & (onb - 1)) != b) {
            return conc__dict_corrupt(c, "bucket %u links to %u, which is "
                                      "not one of its entries", b, ref);
        }
        uint32_t j = e.hash & nmask;
        atomic_store_explicit(&h->mig_entry, ref, memory_order_relaxed);
        conc__dict_step();
        conc__dict_publish(&c->ot[b], atomic_load_explicit(&e.b->next,
                                                memory_order_relaxed));
        conc__dict_step();
        move_link(c, &e, ref, j);
        atomic_store_explicit(&h->mig_entry, 0, memory_order_relaxed);
        conc__dict_step();
    }
    if (b + 1 == onb) {
        return migration_end(c, release);
    }
    set_ix(c, (uint64_t)(b + 1) << 32 | (c->ix & CONC__IX_CUR) |
                  CONC__IX_ACTIVE);
    conc__dict_step();
    return 0;
}

int conc__dict_migrate(conc__dctx *c)
{
    /* A few buckets that hold entries, or more that are empty (moving
     * an empty bucket is a store or two), so that a table shrinking from
     * many empty buckets catches up in few calls. */
    uint32_t full = 0, seen = 0;
    while (c->active && full < CONC__DICT_MIGRATE_STEP &&
           seen < CONC__DICT_MIGRATE_STEP * 16) {
        full += atomic_load_explicit(&c->ot[c->cursor],
                                     memory_order_relaxed) != 0;
        seen++;
        int err = migrate_bucket(c, true);
        if (err == CONC_ENOMEM || err == CONC_ESYS) {
            /* No memory to back the next stretch of the new table: it
             * waits for a later call; nothing of this bucket was moved,
             * and lookups use both tables meanwhile. */
            return 0;
        }
        if (err != 0) {
            return err;
        }
    }
    return 0;
}

int conc__dict_resize(conc__dctx *c, uint64_t count)
{
    if (c->active || count > (uint64_t)(c->hi - c->lo)) {
        return 0; /* migrating already; or a count no heap could hold */
    }
    uint64_t n = (uint64_t)1 << c->obits;
    uint32_t bits;
    if (count > n && c->obits < CONC__DICT_MAX_BITS) {
        bits = c->obits + 1; /* one insert at a time: doubling keeps up */
    } else if (count < n / 8 && c->obits > CONC__DICT_MIN_BITS) {
        /* Straight to a size the count fills to between a quarter and a
         * half (a dict emptied by deletes goes back to 16 buckets). */
        bits = CONC__DICT_MIN_BITS;
        while (((uint64_t)1 << bits) < count * 2) {
            bits++;
        }
    } else {
        return 0;
    }
    uint32_t ref = 0;
    int err = alloc_block(c, conc__dict_table_order(bits), true, &ref);
    if (err == 1 || err == CONC_ENOMEM || err == CONC_ESYS) {
        /* The heap is still growing toward a place for the new index, or
         * there is no room for it now: chains grow longer for a while,
         * and a later call tries again.  Nothing else was changed. */
        return 0;
    }
    if (err != 0) {
        return err;
    }
    /* The new table's fields, then the one store that starts the
     * migration: a death before it leaves an unreachable block, which the
     * repair's rebuild frees. */
    unsigned slot = (c->ix & CONC__IX_CUR) == 0;
    atomic_store_explicit(&c->h->tab[slot], ref, memory_order_relaxed);
    atomic_store_explicit(&c->h->bits[slot], bits, memory_order_relaxed);
    conc__dict_step();
    set_ix(c, (c->ix & CONC__IX_CUR) | CONC__IX_ACTIVE);
    c->nref = ref;
    c->nbits = bits;
    c->nt = table_heads(c, ref);
    conc__dict_step();
    return 0;
}

/* ---- repair --------------------------------------------------------------- */

typedef struct find_arg {
    uint32_t ref;
    bool found;
} find_arg;

static int find_ref(conc__dctx *c, const conc__dict_ent *e, uint32_t ref,
                    void *arg)
{
    (void)c;
    (void)e;
    find_arg *f = arg;
    if (ref == f->ref) {
        f->found = true;
        return 1;
    }
    return 0;
}

/* A move (migrate_bucket's steps 1-5) cut short: the entry mig_entry
 * names is in the old chain (before step 2), in the new one (after step
 * 4), or in neither: then it is linked into the new chain (steps 3-4
 * again). */
static int move_finish(conc__dctx *c)
{
    conc__dict_hdr *h = c->h;
    uint32_t ref = atomic_load_explicit(&h->mig_entry, memory_order_relaxed);
    if (ref == 0) {
        return 0;
    }
    if (c->active && (c->ix & CONC__IX_INITED) != 0) {
        uint32_t b = c->cursor, omask = (1u << c->obits) - 1;
        uint32_t nmask = (1u << c->nbits) - 1;
        conc__dict_ent e;
        if (!conc__dict_ent_load(c, ref, &e) || (e.hash & omask) != b) {
            return conc__dict_corrupt(c, "the entry being moved, %u, is not "
                                      "an entry of bucket %u", ref, b);
        }
        uint32_t j = e.hash & nmask;
        find_arg f = { ref, false };
        int err = walk_chain(c, &c->ot[b], b, omask, find_ref, &f);
        if (err == 0 && !f.found) {
            err = walk_chain(c, &c->nt[j], j, nmask, find_ref, &f);
        }
        if (err < 0) {
            return err;
        }
        if (!f.found) {
            move_link(c, &e, ref, j);
        }
    }
    /* Otherwise no move can have been under way: a stale journal. */
    atomic_store_explicit(&h->mig_entry, 0, memory_order_relaxed);
    conc__dict_step();
    return 0;
}

typedef struct rebuild_arg {
    uint64_t *bm;
    uint64_t count;
} rebuild_arg;

/* Marks the units of [ref, ref + 2^order): CONC_ECORRUPT when one was
 * marked already (two blocks overlap, or a chain meets another). */
static int mark(conc__dctx *c, uint64_t *bm, uint32_t ref, uint32_t order)
{
    uint64_t i = ref - c->lo;
    uint64_t end = i + ((uint64_t)1 << (order - CONC__DICT_UNIT_SHIFT));
    while (i < end) {
        uint64_t word = i >> 6, bit = i & 63;
        uint64_t n = end - i < 64 - bit ? end - i : 64 - bit;
        uint64_t m = (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1))
                     << bit;
        if ((bm[word] & m) != 0) {
            return conc__dict_corrupt(c, "block %u overlaps another block "
                                      "in use", ref);
        }
        bm[word] |= m;
        i += n;
    }
    return 0;
}

static int mark_entry(conc__dctx *c, const conc__dict_ent *e, uint32_t ref,
                      void *arg)
{
    rebuild_arg *r = arg;
    r->count++;
    return mark(c, r->bm, ref, e->order);
}

/* The first unit at or after i (below n) whose bit is want. */
static uint64_t next_bit(const uint64_t *bm, uint64_t i, uint64_t n,
                         bool want)
{
    while (i < n) {
        uint64_t w = want ? bm[i >> 6] : ~bm[i >> 6];
        w &= ~(uint64_t)0 << (i & 63);
        if (w != 0) {
            uint64_t at = (i & ~(uint64_t)63) + (uint64_t)__builtin_ctzll(w);
            return at < n ? at : n;
        }
        i = (i & ~(uint64_t)63) + 64;
    }
    return n;
}

/* Marks every unit in use (the index tables and every entry a lookup can
 * reach) in a scratch bitmap; *count gets the entries.  The caller frees
 * *bm (conc__os_private_free, *bytes). */
static int mark_all(conc__dctx *c, uint64_t **bm, size_t *bytes,
                    uint64_t *count)
{
    uint64_t units = c->hi - c->lo;
    *bytes = (size_t)(((units + 63) / 64) * 8);
    *bm = conc__os_private_alloc(*bytes);
    if (*bm == NULL) {
        return conc__fail_sys(CONC_ENOMEM, "%s: %zu bytes of scratch memory "
                              "to check the dict", c->fn, *bytes);
    }
    int err = mark(c, *bm, c->oref, conc__dict_table_order(c->obits));
    if (err == 0 && c->active) {
        err = mark(c, *bm, c->nref, conc__dict_table_order(c->nbits));
    }
    rebuild_arg r = { *bm, 0 };
    if (err == 0) {
        err = conc__dict_visit(c, mark_entry, &r);
    }
    *count = r.count;
    return err;
}

/* Rebuilds the free lists and the count from what is reachable alone: the
 * unmarked stretches of the heap become free blocks.  Writes only the
 * header and unreachable blocks, so a death here leaves the flag raised
 * and the next caller simply rebuilds again. */
static int rebuild(conc__dctx *c)
{
    conc__dict_hdr *h = c->h;
    uint64_t *bm = NULL, count = 0;
    size_t bytes = 0;
    int err = mark_all(c, &bm, &bytes, &count);
    if (err == 0) {
        for (uint32_t k = 0; k <= CONC__DICT_MAX_ORDER; k++) {
            atomic_store_explicit(&h->free_head[k], 0, memory_order_relaxed);
        }
        h->free_bytes = 0;
        uint64_t units = c->hi - c->lo;
        for (uint64_t i = next_bit(bm, 0, units, false); i < units;) {
            uint64_t e = next_bit(bm, i, units, true);
            /* A stretch no block in use covers may hold an index table
             * left unbacked past its first page (heap_grow): backed
             * before its blocks can hold entries. */
            err = back(c, CONC__DICT_HDR_SIZE + (i << CONC__DICT_UNIT_SHIFT),
                       CONC__DICT_HDR_SIZE + (e << CONC__DICT_UNIT_SHIFT));
            if (err != 0) {
                break;
            }
            err = carve(c, i << CONC__DICT_UNIT_SHIFT,
                        e << CONC__DICT_UNIT_SHIFT,
                        piece_push, NULL);
            if (err != 0) {
                break;
            }
            i = next_bit(bm, e, units, false);
        }
        h->count = count;
    }
    conc__os_private_free(bm, bytes);
    return err;
}

int conc__dict_repair(conc__dctx *c)
{
    int err = move_finish(c);
    if (err == 0 && c->active && (c->ix & CONC__IX_INITED) != 0) {
        err = migrate_bucket(c, false);
    }
    if (err == 0) {
        err = rebuild(c);
    }
    if (err != 0) {
        return err; /* the flag stays raised: every caller tries again */
    }
    c->h->rebuilds++;
    conc__dict_writing_end(c);
    return 0;
}

/* ---- creation ------------------------------------------------------------- */

int conc__dict_format(conc__dctx *c, uint64_t size)
{
    conc__dict_hdr *h = c->h;
    conc_dict *d = c->d;
    h->version = CONC__DICT_VERSION;
    h->max_order = d->max_order;
    h->limit = d->limit;
    h->hash_seed = d->seed;
    uint64_t hs = size - CONC__DICT_HDR_SIZE;
    atomic_store_explicit(&h->heap_size, hs, memory_order_relaxed);
    c->heap_size = hs;
    c->lo = CONC__DICT_HDR_SIZE >> CONC__DICT_UNIT_SHIFT;
    c->hi = (uint32_t)(size >> CONC__DICT_UNIT_SHIFT);
    c->max_order = d->max_order;
    c->oref = 0;
    c->active = false;
    int err = carve(c, 0, hs, piece_push, NULL);
    uint32_t ref = 0;
    if (err == 0) {
        err = balloc(c, conc__dict_table_order(CONC__DICT_MIN_BITS), &ref);
    }
    if (err != 0) {
        return err;
    }
    _Atomic uint32_t *heads = table_heads(c, ref);
    for (uint32_t b = 0; b < (1u << CONC__DICT_MIN_BITS); b++) {
        atomic_store_explicit(&heads[b], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&h->tab[0], ref, memory_order_relaxed);
    atomic_store_explicit(&h->bits[0], CONC__DICT_MIN_BITS,
                          memory_order_relaxed);
    atomic_store_explicit(&h->ix, 0, memory_order_relaxed);
    /* release: an opener that reads the magic (acquire) sees the whole
     * initialised header. */
    atomic_store_explicit(&h->magic, CONC__DICT_MAGIC, memory_order_release);
    return 0;
}

/* ---- checking (tests) ----------------------------------------------------- */

#define CHECK_OR_FAIL(cond)                                                  \
    do {                                                                     \
        if (!(cond)) {                                                       \
            err = -__LINE__;                                                 \
            goto out;                                                        \
        }                                                                    \
    } while (0)

static bool bm_get(const uint64_t *bm, uint64_t i)
{
    return (bm[i >> 6] >> (i & 63)) & 1;
}

/* Every invariant, for the tests; called holding the lock on a checked
 * view.  0, or minus the line of the check that failed. */
int conc__dict_check_locked(conc__dctx *c)
{
    conc__dict_hdr *h = c->h;
    uint64_t *bm = NULL, count = 0;
    size_t bytes = 0;
    int err = 0;
    CHECK_OR_FAIL(atomic_load_explicit(&h->writing, memory_order_relaxed) ==
                  0);
    CHECK_OR_FAIL(atomic_load_explicit(&h->mig_entry,
                                       memory_order_relaxed) == 0);
    CHECK_OR_FAIL(!c->active || (c->ix & CONC__IX_INITED) == 0);
    CHECK_OR_FAIL(mark_all(c, &bm, &bytes, &count) == 0);
    CHECK_OR_FAIL(count == h->count);
    if (c->active) {
        for (uint32_t b = 0; b < c->cursor; b++) {
            CHECK_OR_FAIL(atomic_load_explicit(&c->ot[b],
                                               memory_order_relaxed) == 0);
        }
    }
    uint64_t units = c->hi - c->lo, used = 0, nfree = 0, free_bytes = 0;
    for (uint64_t i = 0; i < units;) {
        uint32_t ref = c->lo + (uint32_t)i;
        uint32_t order;
        if (ref == c->oref || (c->active && ref == c->nref)) {
            order = conc__dict_table_order(ref == c->oref ? c->obits
                                                          : c->nbits);
            CHECK_OR_FAIL(bm_get(bm, i));
        } else {
            uint32_t tag = conc__dict_rd32(&conc__dict_blk_at(c, ref)->tag);
            order = tag & 0xff;
            CHECK_OR_FAIL(conc__dict_blk_fits(c, ref, order));
            if ((tag >> 8) == CONC__BLK_USED) {
                CHECK_OR_FAIL(bm_get(bm, i)); /* no unreachable entry */
                used++;
            } else {
                CHECK_OR_FAIL((tag >> 8) == CONC__BLK_FREE);
                CHECK_OR_FAIL(!bm_get(bm, i));
                nfree++;
                free_bytes += (uint64_t)1 << order;
            }
        }
        i += (uint64_t)1 << (order - CONC__DICT_UNIT_SHIFT);
    }
    CHECK_OR_FAIL(used == count);
    CHECK_OR_FAIL(free_bytes == h->free_bytes);
    uint64_t listed = 0;
    for (uint32_t k = 0; k <= CONC__DICT_MAX_ORDER; k++) {
        uint32_t prev = 0;
        for (uint32_t ref = atomic_load_explicit(&h->free_head[k],
                                                 memory_order_relaxed);
             ref != 0;) {
            CHECK_OR_FAIL(free_ok(c, ref, k));
            conc__dict_blk *b = conc__dict_blk_at(c, ref);
            CHECK_OR_FAIL(conc__dict_rd32(&b->prev) == prev);
            CHECK_OR_FAIL(++listed <= nfree);
            prev = ref;
            ref = atomic_load_explicit(&b->next, memory_order_relaxed);
        }
    }
    CHECK_OR_FAIL(listed == nfree);
out:
    conc__os_private_free(bm, bytes);
    return err;
}
