/* conc/shared.h - shared state: Python's Value, Array, RawValue, RawArray,
 * shared_memory.SharedMemory and Manager().dict(), with no server process:
 * every object is a block of shared memory that the processes map.
 *
 * Fork: every object created before conc_process_start() (or any fork())
 * is the same object in the child - the mapping is MAP_SHARED.
 * Names: objects given a name live in POSIX named shared memory (/dev/shm)
 * so an unrelated process can open them.  A named segment belongs to the
 * process that created it: it is unlinked when the creator frees the
 * object or exits, so no segment is left behind; processes that opened it
 * keep their mapping.  "Exits": main returns or exit() is called, or, in
 * a conc_process child (a process pool's worker too), its target returns;
 * the unlinking comes after the children are joined.  (Python's resource
 * tracker unlinks what was left only when the whole program ends, so
 * there a child's segment outlives the child.  Here a segment meant to
 * outlive the child that would make it is made by the process that
 * outlives it, or opened before the child ends.)
 * A creator killed by a signal (SIGKILL, or the SIGTERM of
 * conc_process_terminate, which also ends daemon children when their
 * parent exits) cannot unlink: its segments stay in /dev/shm until
 * removed or a reboot (Python's resource tracker, a process of its own,
 * would unlink them).
 * Trust: who may open what is the "Trust" paragraph of conc_shm below; it
 * holds for every named object (queue, value, dict, the sync objects).
 */
#ifndef CONC_SHARED_H
#define CONC_SHARED_H

#include "common.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- conc_shm: multiprocessing.shared_memory.SharedMemory ------------
 *
 * Names: "name" or "/name" (the leading slash is added when missing);
 * 1..250 bytes after the slash, no further '/', not "." or "..".
 * Anything else is CONC_EINVAL.  Errors from the OS are CONC_ESYS with
 * errno kept: EEXIST when conc_shm_create finds the name taken (Python's
 * FileExistsError), ENOENT when conc_shm_open finds no such segment
 * (FileNotFoundError), EACCES for a segment of another user that the
 * system does not even let us open.  conc_errdetail() says which call
 * failed on which name.
 *
 * Trust.  Every named object (conc_shm, and the queue, value, dict, lock,
 * rlock, semaphore, event, condition and barrier given .name) is created
 * mode 0600, so only its creator's user can open, rewrite or resize it.
 * Opening one refuses, with CONC_EPERM and a detail, a segment that
 * another user owns or whose mode lets group or others read or write it:
 * whoever can write a segment can garble the object in it, and whoever
 * can resize it can make the processes that map it die of SIGBUS (their
 * next access to a page cut off by ftruncate; no library can catch that
 * soundly).  Python opens any segment it may; libconc opens only its own
 * user's, unless conc_shm_share() says otherwise. */
typedef struct conc_shm conc_shm;

/* conc_shm_share - deliberate sharing of named objects between users, for
 * this whole process, from this call on (Python has nothing like it).
 * mode is the exact mode of every named object this process creates
 * afterwards (the umask does not narrow it) and the widest mode it
 * accepts when it opens one: 0600 (the default) and up to 0666, always
 * with 0600 (e.g. 0660: the creator's group may open it too).  uid is
 * one more user whose objects this process opens besides its own
 * effective uid, or (uid_t)-1 for none (the default).  A trusted user, and
 * anyone the mode lets write, can garble the shared objects and can make
 * this process die of SIGBUS by truncating a segment it maps: share only
 * with users you would let do that.  conc_shm_share(0600, (uid_t)-1)
 * restores the default.  Objects already created or opened keep their
 * modes and handles.  0; CONC_EINVAL (a mode outside 0600..0666, or
 * without 0600).  Thread-safe; takes effect for calls that start after it
 * returns. */
CONC_API int conc_shm_share(mode_t mode, uid_t uid);

/* conc_shm_create - creates a new segment of size bytes (> 0), mode 0600
 * (see conc_shm_share), zero-filled, and maps it.  name NULL picks a fresh
 * random name (Python's name=None), readable with conc_shm_name.  Fails,
 * creating nothing, when the name exists.  Every page is allocated now,
 * so no room in /dev/shm is CONC_ENOMEM here, never a SIGBUS when a page
 * is first touched.  CONC_EINVAL (NULL out, bad name, size 0),
 * CONC_ENOMEM, CONC_ESYS.  The caller is the segment's creator: see
 * conc_shm_free. */
CONC_API int conc_shm_create(conc_shm **out, const char *name, size_t size);

/* conc_shm_open - maps an existing segment, at its whole size.
 * CONC_EINVAL, CONC_ENOMEM, CONC_EPERM (another user's segment, or one
 * others may access: see Trust), CONC_ESYS (ENOENT: no such name;
 * ENODATA: its creator has not sized it yet). */
CONC_API int conc_shm_open(conc_shm **out, const char *name);

/* conc_shm_ptr / conc_shm_size / conc_shm_name - the mapping (page
 * aligned), its size in bytes, its name with the leading '/'.  NULL / 0 /
 * NULL for a NULL m.  The name is owned by m. */
CONC_API void *conc_shm_ptr(const conc_shm *m);
CONC_API size_t conc_shm_size(const conc_shm *m);
CONC_API const char *conc_shm_name(const conc_shm *m);

/* conc_shm_unlink - removes the name (Python's unlink()); mappings stay
 * valid until freed, but no one can open the name any more.  Any process
 * may call it.  CONC_EINVAL for NULL; CONC_ESYS with ENOENT when the name
 * is already gone. */
CONC_API int conc_shm_unlink(conc_shm *m);

/* conc_shm_free - unmaps and releases m (Python's close()).  In the
 * process that created the segment it also unlinks the name, unless that
 * was done already or the name now names another segment; a creator that
 * exits without freeing unlinks at exit.  A forked child is not the
 * creator.  NULL is a no-op. */
CONC_API void conc_shm_free(conc_shm *m);

/* ---- conc_value: Value, Array, RawValue, RawArray ---------------------
 *
 * A block of `size` bytes of shared memory (any size: a C int, a struct,
 * an array of them), zero-filled, 64-byte aligned, with or without a lock of
 * its own.  Python's Value('i') is {.size = sizeof(int), .lock = true};
 * RawValue/RawArray is {.size = ...}.
 *
 * "Zero = default" against Python's lock=True: C has no keyword default
 * of true, and the contract's own example spells `.lock = true`, so .lock
 * means exactly what it says: false (the zero default) is a Raw value with
 * no lock, true gives it a conc_lock.  A conc_lock rather than Python's
 * RLock: it is the lock that survives a dead holder (CONC_EOWNERDEAD), and
 * C code knows when it holds it.  As in Python, the lock guards nothing by
 * itself: `v += 1` is atomic only between acquire and release. */
typedef struct conc_value conc_value;
typedef struct conc_value_opts {
    size_t size;      /* required, > 0 */
    bool lock;        /* true: Value/Array with a lock; false: Raw* */
    const char *name; /* NULL: anonymous (shared with forked children);
                         else named shared memory (conc_value_open).
                         A named value's lock lives in the segment: a
                         process that opens it by name gets the same
                         lock from conc_value_lock */
} conc_value_opts;

/* conc_value_new - a zero-filled shared block.  CONC_EINVAL (NULL out or
 * opts, size 0, a bad name), CONC_ENOMEM, CONC_ESYS
 * (named: EEXIST when the name is taken). */
CONC_API int conc_value_new(conc_value **out, const conc_value_opts *opts);

/* conc_value_open - opens a named value created by another process, with
 * its size.  CONC_EINVAL (also: the segment is not a conc_value, or of
 * another layout version), CONC_ENOMEM, CONC_ESYS (ENOENT). */
CONC_API int conc_value_open(conc_value **out, const char *name);

/* conc_value_ptr - the block (64-byte aligned: any C type fits); NULL for
 * NULL.  conc_value_size - its size in bytes (0 for NULL). */
CONC_API void *conc_value_ptr(const conc_value *v);
CONC_API size_t conc_value_size(const conc_value *v);

/* conc_value_lock - the value's own lock (Python's get_lock()), owned by
 * v; NULL for a raw value or NULL v. */
CONC_API conc_lock *conc_value_lock(const conc_value *v);

/* conc_value_free - releases v and its lock.  A named value is unlinked
 * when its creator frees it (see conc_shm_free).  NULL is a no-op. */
CONC_API void conc_value_free(conc_value *v);

/* ---- conc_dict: Manager().dict() without the manager -------------------
 *
 * A hash table of byte-string keys to byte-string values, any sizes, in
 * one shared segment: usable at once from any number of threads and
 * processes - forked before or after it was created, or unrelated ones
 * through .name - with no server process and no round trip.
 *
 * Size: the dict starts at 64 KiB and grows as entries arrive, while
 * other processes use it (a growth step pauses the call that makes it
 * for about the time it takes the system to hand over the new memory:
 * 2 MiB at a time, more only for a value or an index table that needs
 * it); its index grows and shrinks with the count,
 * a few buckets per call, so no call ever copies the whole table.
 * capacity_bytes is only the most it may grow to (default 64 GiB); each
 * process reserves that much address space (not memory) for it.  Memory
 * per entry: the entry's block, the next power of two >= 24 + klen
 * rounded up to 8 + vlen, at least 64 bytes (a 27-byte key with an 8-byte
 * value takes 64 bytes), plus 4 to 8 bytes of index.
 *
 * Crash safety: a process killed at any instant (SIGKILL included) in the
 * middle of any call - growth included - leaves the dict consistent: every
 * key reads as its old or its new value, never a torn one, nothing else is
 * lost, and the next caller repairs the bookkeeping the dead one may have
 * left half done.  Holders are judged dead only when the kernel knows
 * them gone (never from a /proc it cannot see), so two calls are never
 * inside the dict at once.  Full: CONC_ENOMEM, and the table is as it
 * was; deleting makes room again.
 *
 * Shared memory that lies: any process that maps the segment can write
 * any byte of it.  Every value read from it is checked before use (every
 * link, length, size and index field), and every walk is bounded, so a
 * damaged or hostile segment makes calls fail with CONC_ECORRUPT
 * (conc_errdetail() says what was wrong), never crash or hang.  A writer
 * that meets damaged bookkeeping leaves it for the next call to rebuild
 * from the entries; damaged entries keep failing their checks.  What no
 * check can stop: a peer that takes the lock and never lets go (as with
 * any shared lock), or one that shrinks the file under the others.
 *
 * On a server (.url).  The same dict served by Redis, shared by processes
 * on any host (URLs as conc/queue.h describes them):
 *   conc_dict_new(&d, &(conc_dict_opts){ .url = "redis://10.0.0.5:6379/0",
 *                                         .name = "counts" });
 *   conc_dict_open(&d, "redis://10.0.0.5:6379/0/counts");   // any host
 * conc_dict_new makes it or attaches to it (CONC_EINVAL when the name
 * holds keys of another kind; capacity_bytes must be 0: the server holds
 * what its memory allows, and answers CONC_ENOMEM past maxmemory);
 * conc_dict_open attaches (CONC_EINVAL when there is no such dict).  It
 * lives on the server under keys "conc:{d:<name>}..." (a hash of values
 * and one of per-key versions) until they are deleted.  Every call is one
 * round trip, bounded by .net_timeout, except conc_dict_update: it reads
 * the value and its version, runs fn here, and writes with a
 * compare-and-set that succeeds only if nobody wrote the key since: two
 * round trips, and one more each time another writer got in first.  So
 * on a server fn may run more than once for one update (each run sees
 * the value then current; only the last run's result is stored): it must
 * be pure - compute the new value from the old one and arg, nothing
 * else - and it may call the dict itself.  Writes to other keys never
 * make an update retry.  Errors beyond the shared-memory ones: CONC_ENET,
 * CONC_EAUTH, CONC_ETIMEDOUT (no answer in time; an update whose key
 * kept changing through 10000 attempts), CONC_ECORRUPT (a key or reply
 * that is not what libconc wrote); a set or update that failed with
 * CONC_ENET or CONC_ETIMEDOUT may still have been stored.  contains and
 * len answer false and 0 when the server cannot be asked
 * (conc_errdetail() says why).  conc_dict_add is an update there (two
 * round trips, atomic).  conc_dict_items is one round trip (HGETALL) and
 * one snapshot there too: no write is seen half (each value is one some
 * writer stored whole, and the entries are the dict as it stood at one
 * moment on the server); its array has the same layout and is freed the
 * same way; an answer that is not pairs of strings is CONC_ECORRUPT. */
typedef struct conc_dict conc_dict;
typedef struct conc_dict_opts {
    size_t capacity_bytes; /* the most the dict may grow to, index
                              included; 0: 64 GiB (less where the address
                              space will not take it, down to 1 GiB).
                              Below 64 KiB it is raised to 64 KiB; above
                              256 GiB CONC_EINVAL */
    const char *name;      /* NULL: anonymous; else named (conc_dict_open);
                              with .url, the dict's name on the server */
    /* A dict on a server ("On a server" above): the server's URL.  NULL:
     * shared memory, which has no use for .net_timeout and refuses it
     * (CONC_EINVAL). */
    const char *url;
    /* On a server: the bound on each call's round trips (no dict call
     * takes a timeout).  Left out: 10 s. */
    conc_timeout net_timeout;
} conc_dict_opts;

/* conc_dict_update_fn - computes a key's new value from its old one.
 * old/oldlen: the current value (found true), or NULL/0 (found false);
 * the bytes are only valid during the call.  Append the new value to out
 * with conc_buf_append and return 0 to store it; return anything else to
 * leave the entry as it was and have conc_dict_update return that value.
 * It runs with the dict locked: keep it short, and do not call the same
 * dict from it (that returns CONC_ESTATE). */
typedef int (*conc_dict_update_fn)(const void *old, size_t oldlen, bool found,
                                   conc_buf *out, void *arg);

/* conc_dict_new - an empty dict.  CONC_EINVAL (NULL out, capacity over
 * the limit, a bad name), CONC_ENOMEM (no memory, or no address space
 * for the capacity given), CONC_ESYS (named: EEXIST). */
CONC_API int conc_dict_new(conc_dict **out, const conc_dict_opts *opts);

/* conc_dict_open - opens a named dict created by another process; this
 * process reserves the dict's capacity in address space.  CONC_EINVAL:
 * bad name, or the segment is not a conc_dict (too small, no dict magic)
 * or one of another layout version.  CONC_ECORRUPT: it is a conc_dict,
 * but its header fails a check (its capacity, its sizes, its index).
 * CONC_EPERM: another user's segment, or one open to others (see Trust
 * above; conc_shm_share() allows it).  CONC_ENOMEM, CONC_ESYS (ENOENT:
 * no such name). */
CONC_API int conc_dict_open(conc_dict **out, const char *name);

/* Keys: key may be NULL only when klen is 0 (the empty key is a key).
 * Values: val may be NULL only when vlen is 0.  Every call below may
 * block while another thread or process holds the dict for its own short
 * call; none blocks for long, and none needs a timeout.  Calls made from
 * inside an update fn on the same dict return CONC_ESTATE.  Every call
 * that returns an int may also return CONC_ECORRUPT (see above). */

/* conc_dict_set - d[key] = val.  0; CONC_EINVAL; CONC_ENOMEM (the dict is
 * at its capacity, or the system has no memory for it to grow: nothing
 * changed); CONC_ETOOBIG (the entry could not fit even in the empty dict
 * of this capacity); CONC_ESYS (growing the file failed). */
CONC_API int conc_dict_set(conc_dict *d, const void *key, size_t klen,
                           const void *val, size_t vlen);

/* conc_dict_get - copies d[key] into *msg (free with conc_msg_free;
 * msg->data is NULL for an empty value).  CONC_EEMPTY when absent
 * (Python's KeyError), CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_dict_get(conc_dict *d, const void *key, size_t klen,
                           conc_msg *msg);

/* conc_dict_get_into - copies d[key] into buf (cap bytes) and its length
 * into *len.  CONC_ETOOBIG when cap is too small: *len is set to the size
 * needed, buf and the entry are untouched.  CONC_EEMPTY, CONC_EINVAL. */
CONC_API int conc_dict_get_into(conc_dict *d, const void *key, size_t klen,
                                void *buf, size_t cap, size_t *len);

/* conc_dict_del - del d[key].  CONC_EEMPTY when absent, CONC_EINVAL. */
CONC_API int conc_dict_del(conc_dict *d, const void *key, size_t klen);

/* conc_dict_contains - key in d (false for bad arguments, from inside an
 * update fn on the same dict, and when the dict fails a check:
 * conc_errdetail() says which). */
CONC_API bool conc_dict_contains(conc_dict *d, const void *key, size_t klen);

/* conc_dict_len - len(d) (0 for NULL, from inside an update fn on the
 * same dict, and when the dict fails a check). */
CONC_API size_t conc_dict_len(conc_dict *d);

/* conc_dict_array_free - frees an array that conc_dict_keys or
 * conc_dict_items returned: once, whole (the array is one heap block
 * holding the bytes its elements point to; freeing an element's bytes,
 * with conc_msg_free or free, is a bug).  NULL is a no-op. */
CONC_API void conc_dict_array_free(void *array);

/* conc_dict_keys - a snapshot of the keys, in no particular order: *keys
 * gets an array of *n conc_msg, one heap block holding the key bytes too
 * (keys[i].data is NULL for the empty key).  Free it with
 * conc_dict_array_free(*keys) (or conc_dict_keys_free, the same) - not
 * conc_msg_free on the elements.  *keys is NULL when the dict is empty.
 * CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_dict_keys(conc_dict *d, conc_msg **keys, size_t *n);
CONC_API void conc_dict_keys_free(conc_msg *keys);

/* conc_dict_items - Python's list(d.items()): every key with its value,
 * in one snapshot (no call can change the dict in between), in no
 * particular order.  *items gets an array of *n conc_dict_item, one heap
 * block holding all the bytes (key / val are NULL for an empty key or
 * value, and 8-aligned otherwise); free it with
 * conc_dict_array_free(*items).  *items is NULL when the dict is empty.
 * CONC_EINVAL, CONC_ENOMEM; on a server also CONC_ENET, CONC_EAUTH,
 * CONC_ETIMEDOUT, CONC_ECORRUPT ("On a server" above). */
typedef struct conc_dict_item {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
} conc_dict_item;
CONC_API int conc_dict_items(conc_dict *d, conc_dict_item **items, size_t *n);

/* conc_dict_update - atomic read-modify-write of d[key] (Manager dicts
 * race on d[k] += 1; this does not): fn sees the current value and its
 * result is stored before any other call can see or change the key.
 * Returns 0 when stored; fn's own non-zero return (nothing changed);
 * CONC_EINVAL; CONC_ENOMEM / CONC_ETOOBIG as conc_dict_set, or when an
 * append of fn's was refused, whatever fn returned unless it is positive
 * (a value cut short is never stored: nothing changed). */
CONC_API int conc_dict_update(conc_dict *d, const void *key, size_t klen,
                              conc_dict_update_fn fn, void *arg);

/* conc_dict_add - d[key] += delta, atomically, on an integer value: 8
 * bytes, a little-endian two's-complement int64 (what conc_dict_add
 * stores; write one with any other call the same way).  An absent key
 * counts as 0, so the first add stores delta.  *result (may be NULL)
 * gets the new value.  CONC_EINVAL: bad arguments, a value of another
 * length (nothing changed), or a sum that overflows int64 (nothing
 * changed); CONC_ENOMEM as conc_dict_set (a new key only). */
CONC_API int conc_dict_add(conc_dict *d, const void *key, size_t klen,
                           int64_t delta, int64_t *result);

/* conc_dict_free - releases this process's handle (and, in the creator of
 * a named dict, unlinks the name).  NULL is a no-op. */
CONC_API void conc_dict_free(conc_dict *d);

#ifdef __cplusplus
}
#endif
#endif
