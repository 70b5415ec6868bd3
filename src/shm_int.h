/* shm_int.h - the named-segment layer (shm.c) as the modules built on it
 * use it: the queue, named values, the dict and the named sync objects.
 * One layer, so that every named object gets the same name rules, the
 * same ownership and mode checks at open, the same wait for a creator
 * still making the object, and the same unlink rules (the creator
 * unlinks at free or exit, and never a name that now names another
 * segment).  Not exported. */
#ifndef CONC_SHM_INT_H
#define CONC_SHM_INT_H

#include "conc_int.h"

#include <conc/shared.h>

/* The longest name, without its leading '/'. */
#define CONC__SHM_NAME_MAX 250

/* Validates a segment name and writes "/name" into out (cap bytes, at
 * least CONC__SHM_NAME_MAX + 2 for every valid name).  0, or CONC_EINVAL
 * with a detail that starts with fn (the public function). */
int conc__shm_name_fix(const char *fn, const char *name, char *out,
                       size_t cap);

/* What an opener expects to find in a segment: an object whose first
 * magic_size (4 or 8) bytes hold magic once its creator has made it (the
 * creator stores it last, with release), in a segment of at least
 * min_size bytes.  what names the kind in details ("queue", "lock"). */
typedef struct conc__shm_kind {
    const char *what;
    uint64_t magic;
    size_t magic_size;
    size_t min_size;
} conc__shm_kind;

/* conc__shm_create - conc_shm_create for a module: a new zero-filled
 * segment of size bytes under name (NULL: a fresh random name), with the
 * process's sharing mode (conc_shm_share), mapped, every page allocated
 * (CONC_ENOMEM when /dev/shm has no room, never a SIGBUS later).  Errors
 * as conc_shm_create, with details that name fn.
 * conc__shm_create_sparse - the same with no page allocated: the caller
 * allocates (conc__shm_grow) each range before it touches it. */
int conc__shm_create(conc_shm **out, const char *fn, const char *name,
                     size_t size);
int conc__shm_create_sparse(conc_shm **out, const char *fn,
                            const char *name, size_t size);

/* conc__shm_open - conc_shm_open for a module.  With kind NULL it is
 * conc_shm_open (a segment of size 0 is CONC_ESYS, errno ENODATA).  With
 * a kind it waits, one second in all (a deadline), for a creator still
 * making the object: first for the segment to be sized (size 0), then
 * for the magic to appear (acquire: the whole object is then seen made).
 * Then: CONC_EINVAL when the segment is smaller than kind->min_size, or
 * its magic is another (not such an object, or another layout) or never
 * appeared.  Always: CONC_EPERM when the segment belongs to another user
 * or its mode lets group or others in, unless conc_shm_share() allows
 * it.  Details name fn. */
int conc__shm_open(conc_shm **out, const char *fn, const char *name,
                   const conc__shm_kind *kind);

/* Growable segments, for the dict: a file that grows under one mapping
 * made at the most it may grow to.  Each returns 0, or CONC_ENOMEM or
 * CONC_ESYS with a detail that starts with fn (the public call).
 * conc__shm_anon - a new unnamed segment (a memfd, close-on-exec) of size
 * bytes, backed and mapped; shared with children forked later; never
 * unlinked.
 * conc__shm_reserve - maps m again at reserve bytes (at least the file's
 * size; m made by conc__shm_create, conc__shm_open or conc__shm_anon), so
 * the file can grow under the mapping without a remap; m's size becomes
 * reserve.  Touch only what the file holds: a page past its end raises
 * SIGBUS.
 * conc__shm_grow - makes the file at least to bytes long with [from, to)
 * backed by memory now (CONC_ENOMEM when there is no room).
 * conc__shm_file_size - the file's length now. */
int conc__shm_anon(conc_shm **out, const char *fn, size_t size);
int conc__shm_reserve(conc_shm *m, const char *fn, size_t reserve);
int conc__shm_grow(conc_shm *m, const char *fn, uint64_t from, uint64_t to);
int conc__shm_file_size(const conc_shm *m, const char *fn, uint64_t *size);

#endif
