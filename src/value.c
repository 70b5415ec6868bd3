/* value.c - conc_value: Python's Value, Array, RawValue and RawArray.
 *
 * Anonymous value: one MAP_SHARED|MAP_ANONYMOUS mapping of the rounded-up
 * size, the data at its start; it is the same memory in every child forked
 * after conc_value_new.  With .lock it also owns a conc_lock (sync.h),
 * itself in shared memory of its own, so the pair works across fork.
 *
 * Named value: a conc_shm segment laid out as
 *     [value_hdr: magic, version, flags, size]  64 bytes
 *     [lock]                 64 bytes, only when flags has VALUE_LOCKED
 *     [data: size bytes]                        64-byte aligned
 * The segment is shm.c's (the one named-segment layer: name rules, the
 * refusal of other users' segments, unlink at the creator's free or
 * exit).  The creator writes the header with the magic stored last
 * (release); an opener waits (shm.c, a second at most) for the magic
 * (acquire), so it sees the size.  It then reads each field once and
 * checks it: another version is CONC_EINVAL; unknown flags, a lock slot
 * or a size that do not fit the segment, or a lock slot that holds no
 * lock are CONC_ECORRUPT.  The handle keeps only checked copies.
 *
 * A named value with a lock keeps the lock inside the segment
 * (conc__lock_embed), so an unrelated process that opens the value gets
 * the same lock from conc_value_lock; the lock goes with the segment and is
 * never conc_lock_free()d.
 *
 * Dead processes: the block holds no state of its own; a holder of the
 * value's lock that dies makes the next acquire return CONC_EOWNERDEAD
 * (the data may be half-written: that caller decides).
 */
#include "shm_int.h"

#include <stdlib.h>
#include <string.h>

#define VALUE_MAGIC 0x434f4e4356414c31ull /* "CONCVAL1" */
#define VALUE_VERSION 1u
#define VALUE_HDR 64

typedef struct value_hdr {
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t flags;
    uint64_t size;
} value_hdr;

#define VALUE_LOCKED 1u
#define VALUE_LOCK_SLOT 64

struct conc_value {
    void *ptr;
    size_t size;
    conc_lock *lock;  /* NULL for a raw value */
    bool lock_embedded; /* in the named segment: not ours to free */
    conc_shm *shm;    /* named */
    void *anon;       /* anonymous mapping */
    size_t anon_len;
};

static size_t round_page(size_t n)
{
    size_t page = 4096;
    return (n + page - 1) & ~(page - 1);
}

int conc_value_new(conc_value **out, const conc_value_opts *opts)
{
    static const char fn[] = "conc_value_new";
    int err = 0;
    conc_value *v = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    if (opts == NULL) {
        return conc__fail(CONC_EINVAL, "%s: opts is NULL (.size is "
                          "required)", fn);
    }
    if (opts->size == 0 || opts->size > SIZE_MAX - 2 * 4096 - VALUE_HDR) {
        return conc__fail(CONC_EINVAL, "%s: size %zu: it must be positive "
                          "and fit the address space", fn, opts->size);
    }
    if (opts->name != NULL) {
        char fixed[CONC__SHM_NAME_MAX + 2];
        err = conc__shm_name_fix(fn, opts->name, fixed, sizeof fixed);
        if (err != 0) {
            return err;
        }
    }
    v = conc__calloc(1, sizeof *v);
    if (v == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    v->size = opts->size;
    if (opts->name != NULL) {
        size_t lock_room = opts->lock ? VALUE_LOCK_SLOT : 0;
        CONC__ASSERT(conc__lock_embed_size() <= VALUE_LOCK_SLOT);
        err = conc__shm_create(&v->shm, fn, opts->name,
                               VALUE_HDR + lock_room + opts->size);
        if (err != 0) {
            goto fail;
        }
        value_hdr *h = conc_shm_ptr(v->shm);
        h->version = VALUE_VERSION;
        h->size = opts->size;
        if (opts->lock) {
            h->flags = VALUE_LOCKED;
            v->lock = conc__lock_embed((char *)h + VALUE_HDR, true);
            v->lock_embedded = true;
        }
        /* release: an opener that reads the magic (acquire, in
         * conc_value_open) sees version and size. */
        atomic_store_explicit(&h->magic, VALUE_MAGIC, memory_order_release);
        v->ptr = (char *)h + VALUE_HDR + lock_room;
    } else {
        v->anon_len = round_page(opts->size);
        v->anon = conc__os_shared_alloc(v->anon_len);
        if (v->anon == NULL) {
            err = conc__fail_sys(CONC_ENOMEM, "%s: mmap of %zu bytes", fn,
                                 v->anon_len);
            goto fail;
        }
        v->ptr = v->anon;
    }
    if (opts->lock && !v->lock_embedded) {
        err = conc_lock_new(&v->lock, NULL);
        if (err != 0) {
            err = conc__fail(err, "%s: its lock: %s", fn,
                             conc_strerror(err));
            goto fail;
        }
    }
    *out = v;
    return 0;

fail:
    conc_value_free(v);
    return err;
}

/* CONC_ECORRUPT: a value header field that fails its check. */
static int corrupt(const char *fn, const char *name, const char *what,
                   unsigned long long v)
{
    return conc__fail(CONC_ECORRUPT, "%s: '%s': the value header's %s is "
                      "%llu, which does not fit the segment", fn, name, what,
                      v);
}

int conc_value_open(conc_value **out, const char *name)
{
    static const char fn[] = "conc_value_open";
    int err = 0;
    conc_value *v = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    v = conc__calloc(1, sizeof *v);
    if (v == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    const conc__shm_kind kind = { .what = "value", .magic = VALUE_MAGIC,
                                  .magic_size = sizeof(uint64_t),
                                  .min_size = VALUE_HDR };
    /* Waits for the magic (acquire: pairs with the creator's release). */
    err = conc__shm_open(&v->shm, fn, name, &kind);
    if (err != 0) {
        goto fail;
    }
    size_t seg = conc_shm_size(v->shm);
    const char *shm_name = conc_shm_name(v->shm);
    value_hdr *h = conc_shm_ptr(v->shm);
    /* Each field read once (a peer may be rewriting it), checked, and
     * only the checked copy used. */
    uint32_t version = __atomic_load_n(&h->version, __ATOMIC_RELAXED);
    uint32_t flags = __atomic_load_n(&h->flags, __ATOMIC_RELAXED);
    uint64_t size = __atomic_load_n(&h->size, __ATOMIC_RELAXED);
    if (version != VALUE_VERSION) {
        err = conc__fail(CONC_EINVAL, "%s: '%s' is a value of layout "
                         "version %u; this library reads version %u", fn,
                         shm_name, version, VALUE_VERSION);
        goto fail;
    }
    if ((flags & ~VALUE_LOCKED) != 0) {
        err = corrupt(fn, shm_name, "flags word", flags);
        goto fail;
    }
    size_t lock_room = (flags & VALUE_LOCKED) ? VALUE_LOCK_SLOT : 0;
    /* seg >= VALUE_HDR (the kind's minimum). */
    if (seg - VALUE_HDR < lock_room) {
        err = corrupt(fn, shm_name, "flags word", flags);
        goto fail;
    }
    if (size == 0 || size > seg - VALUE_HDR - lock_room) {
        err = corrupt(fn, shm_name, "size", size);
        goto fail;
    }
    if (lock_room != 0) {
        v->lock = conc__lock_embed((char *)h + VALUE_HDR, false);
        if (v->lock == NULL) {
            err = conc__fail(CONC_ECORRUPT, "%s: '%s': the value's lock "
                             "slot holds no lock", fn, shm_name);
            goto fail;
        }
        v->lock_embedded = true;
    }
    v->size = (size_t)size;
    v->ptr = (char *)h + VALUE_HDR + lock_room;
    *out = v;
    return 0;

fail:
    conc_value_free(v);
    return err;
}

void *conc_value_ptr(const conc_value *v)
{
    return v == NULL ? NULL : v->ptr;
}

size_t conc_value_size(const conc_value *v)
{
    return v == NULL ? 0 : v->size;
}

conc_lock *conc_value_lock(const conc_value *v)
{
    return v == NULL ? NULL : v->lock;
}

void conc_value_free(conc_value *v)
{
    if (v == NULL) {
        return;
    }
    if (!v->lock_embedded) {
        conc_lock_free(v->lock);
    }
    conc_shm_free(v->shm);
    conc__os_shared_free(v->anon, v->anon_len);
    free(v);
}
