/* shm.c - conc_shm: named POSIX shared memory (Python's
 * shared_memory.SharedMemory), and the one named-segment layer every
 * named libconc object sits on: the queue (queue_map.c), named values
 * (value.c), the dict (dict.c) and the named sync objects (sync_named.c)
 * create and open their segments here (shm_int.h), so they share one
 * name validator, one ownership check, one wait for a creator still
 * making the object and one set of unlink rules.
 *
 * A handle is process-local: the name, the fd, the mapping and the pid of
 * the process that created the segment (0 when opened).  The fd stays
 * open for the handle's life so that the creator can tell, at free time,
 * whether the name still names *its* segment: fstat(fd).st_nlink is 0
 * once the name was unlinked (by anyone), and then a segment created
 * later under the same name is someone else's and must not be unlinked.
 *
 * Lifetime (Python's resource tracker, without the tracker process): the
 * creator unlinks the name in conc_shm_free, and the last stage of
 * exit.c's exit handler unlinks the names of segments this process
 * created and never freed: when main returns or exit() is called, and in
 * a conc_process child when its target returns.  It runs after the
 * children are joined, so a child still running at exit can open them.
 * Those live on a process-local list guarded by a spinlock; pthread_atfork
 * takes it around fork() so a child never inherits it held.  A forked
 * child inherits handles but is not their creator (the pid differs), so
 * its free only unmaps.  A creator killed by a signal (SIGKILL, or the
 * SIGTERM of conc_process_terminate, which also ends daemon children when
 * their parent exits) runs no handler and cannot unlink: that is how a
 * segment outlives its creator.  Python's resource tracker, a process of
 * its own, unlinks those too; libconc has no such process.
 *
 * Trust.  A segment is created 0600 with O_EXCL, so only its creator's
 * user (and root) can open, rewrite or resize it.  An opener checks, with
 * the fstat it makes anyway for the size, that the segment is its own
 * user's and that its mode lets no group or other user in: a segment that
 * another user made, or that others may write, could be rewritten or
 * truncated under us by someone we never chose (a truncation makes our
 * next access to the lost pages die of SIGBUS; nothing in a library can
 * catch that soundly, so the only defence is to open nothing a stranger
 * can resize).  conc_shm_share() is the deliberate exception: a wider
 * creation mode, accepted at open too, and one more trusted owner.  It is
 * two process-wide atomics read once per create or open (relaxed: a
 * setting, ordered for the caller by its own call).
 *
 * Waiting for a creator (conc__shm_open with a kind).  A creator sizes
 * its segment right after making it and stores the object's magic last
 * (release).  An opener that finds size 0 or no magic yet polls every
 * millisecond, one second in all by a deadline (signals cannot stretch
 * it), then gives up: CONC_ESYS with errno ENODATA while the size stays 0
 * (a creator that died before it sized the segment: the name is taken,
 * and the caller may want to know why), CONC_EINVAL, "not such an
 * object", when the magic never came.
 *
 * Every OS call goes through os.h; those with a failure path are on the
 * fault seam, and each failure undoes what was done (a created name is
 * unlinked) and leaks nothing.
 *
 * Rejected: unlinking at once after every open (Python's track=False
 * style): an unrelated process could then never open the name.
 */
#include "shm_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MODE 0600u
/* conc_shm_share's uid when no other user is trusted. */
#define NO_UID ((uint64_t)1 << 32)

struct conc_shm {
    char name[CONC__SHM_NAME_MAX + 2];
    void *ptr;
    size_t size;
    int fd;
    pid_t creator;          /* getpid() of the creator; 0 when opened */
    bool unlinked;          /* this handle unlinked the name */
    struct conc_shm *next;  /* on the created-list while creator != 0 */
    struct conc_shm **prevp;
};

/* ---- sharing between users (conc_shm_share) ------------------------------ */

static _Atomic unsigned share_mode = DEFAULT_MODE;
static _Atomic uint64_t share_uid = NO_UID;

int conc_shm_share(mode_t mode, uid_t uid)
{
    if ((mode & ~(mode_t)0666) != 0 || (mode & 0600) != 0600) {
        return conc__fail(CONC_EINVAL, "conc_shm_share: mode 0%o: it must "
                          "grant the owner read and write (0600) and may "
                          "add only read or write bits for group and "
                          "others (at most 0666)", (unsigned)mode);
    }
    /* Relaxed: a setting; the caller's later creates and opens, in this
     * thread, see it in program order, and another thread that must see
     * it synchronises with this one by its own means. */
    atomic_store_explicit(&share_mode, (unsigned)mode, memory_order_relaxed);
    atomic_store_explicit(&share_uid,
                          uid == (uid_t)-1 ? NO_UID : (uint64_t)uid,
                          memory_order_relaxed);
    return 0;
}

/* CONC_EPERM unless st (of the segment fd) is ours or the trusted user's
 * and its mode grants no more than the sharing mode. */
static int check_owner(const char *fn, const char *name,
                       const conc__os_file *st)
{
    /* Relaxed: see conc_shm_share. */
    unsigned allowed = atomic_load_explicit(&share_mode,
                                            memory_order_relaxed);
    uint64_t trusted = atomic_load_explicit(&share_uid, memory_order_relaxed);
    uid_t me = conc__os_geteuid();
    if (st->uid != me && (uint64_t)st->uid != trusted) {
        return conc__fail(CONC_EPERM, "%s: '%s' belongs to uid %u, not to "
                          "this process's uid %u (conc_shm_share() can "
                          "trust one other user)", fn, name,
                          (unsigned)st->uid, (unsigned)me);
    }
    if ((st->mode & 077u & ~allowed) != 0) {
        return conc__fail(CONC_EPERM, "%s: '%s' has mode 0%o: other users "
                          "may access it (this process accepts at most 0%o; "
                          "see conc_shm_share())", fn, name,
                          st->mode & 0777u, allowed);
    }
    return 0;
}

/* ---- the list of segments this process created ------------------------ */

static atomic_flag created_guard = ATOMIC_FLAG_INIT;
static struct conc_shm *created_head;
static pthread_once_t created_once = PTHREAD_ONCE_INIT;

static void created_lock(void)
{
    /* acquire pairs with the release in created_unlock(). */
    while (atomic_flag_test_and_set_explicit(&created_guard,
                                             memory_order_acquire)) {
        conc__cpu_relax();
    }
}

static void created_unlock(void)
{
    atomic_flag_clear_explicit(&created_guard, memory_order_release);
}

static void unlink_if_ours(struct conc_shm *m)
{
    conc__os_file st;
    if (m->unlinked || m->fd < 0) {
        return;
    }
    /* st_nlink 0: the name was unlinked already, possibly re-created by
     * someone else; leave it. */
    if (conc__os_fstat(m->fd, &st) == 0 && st.nlink > 0) {
        conc__os_shm_unlink(m->name);
    }
    m->unlinked = true;
}

static void created_at_exit(void)
{
    created_lock();
    for (struct conc_shm *m = created_head; m != NULL; m = m->next) {
        if (m->creator == getpid()) {
            unlink_if_ours(m);
        }
    }
    created_unlock();
}

static void created_init(void)
{
    conc__exit_hook(CONC__EXIT_SEGMENTS, created_at_exit);
    pthread_atfork(created_lock, created_unlock, created_unlock);
}

static void created_add(struct conc_shm *m)
{
    pthread_once(&created_once, created_init);
    created_lock();
    m->next = created_head;
    m->prevp = &created_head;
    if (created_head != NULL) {
        created_head->prevp = &m->next;
    }
    created_head = m;
    created_unlock();
}

static void created_remove(struct conc_shm *m)
{
    if (m->prevp == NULL) {
        return;
    }
    created_lock();
    *m->prevp = m->next;
    if (m->next != NULL) {
        m->next->prevp = m->prevp;
    }
    m->prevp = NULL;
    m->next = NULL;
    created_unlock();
}

/* ---- names ------------------------------------------------------------- */

int conc__shm_name_fix(const char *fn, const char *name, char *out,
                       size_t cap)
{
    if (name == NULL) {
        return conc__fail(CONC_EINVAL, "%s: the name is NULL", fn);
    }
    const char *given = name;
    if (name[0] == '/') {
        name++;
    }
    size_t n = strnlen(name, CONC__SHM_NAME_MAX + 1);
    if (n == 0 || n > CONC__SHM_NAME_MAX || strchr(name, '/') != NULL ||
        strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || n + 2 > cap) {
        return conc__fail(CONC_EINVAL,
                          "%s: name '%.64s%s': a name is 1 to %d bytes after "
                          "an optional leading '/', with no other '/', and "
                          "not '.' or '..'", fn,
                          given, strlen(given) > 64 ? "..." : "",
                          CONC__SHM_NAME_MAX);
    }
    /* The checks above leave room for '/', the name and its NUL. */
    CONC__ASSERT(n >= 1 && n <= CONC__SHM_NAME_MAX && n + 2 <= cap);
    out[0] = '/';
    memcpy(out + 1, name, n + 1);
    return 0;
}

/* A fresh random name (Python's psm_xxxxxxxx): 64 random bits, so a
 * name cannot be guessed ahead by another user; a clash just fails with
 * EEXIST and is retried. */
static void random_name(char *out, size_t cap)
{
    snprintf(out, cap, "/conc_%016llx",
             (unsigned long long)conc__os_random64());
}

/* CONC_ENOMEM or CONC_ESYS for a failed OS call, with its detail. */
static int os_fail(const char *fn, const char *call, const char *name)
{
    return conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                          "%s: %s('%s')", fn, call, name);
}

/* Closes m's fd and frees m, errno kept. */
static void handle_drop(conc_shm *m)
{
    int saved = errno;
    if (m->ptr != NULL) {
        conc__os_shared_free(m->ptr, m->size);
    }
    if (m->fd >= 0) {
        close(m->fd);
    }
    free(m);
    errno = saved;
}

/* ---- create -------------------------------------------------------------- */

static int shm_make(conc_shm **out, const char *fn, const char *name,
                    size_t size, bool backed);

int conc__shm_create(conc_shm **out, const char *fn, const char *name,
                     size_t size)
{
    return shm_make(out, fn, name, size, true);
}

int conc__shm_create_sparse(conc_shm **out, const char *fn,
                            const char *name, size_t size)
{
    return shm_make(out, fn, name, size, false);
}

static int shm_make(conc_shm **out, const char *fn, const char *name,
                    size_t size, bool backed)
{
    int err = 0;
    conc_shm *m = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    if (size == 0 || size > (size_t)INT64_MAX) {
        return conc__fail(CONC_EINVAL, "%s: size %zu: it must be positive "
                          "and at most 2^63 - 1", fn, size);
    }
    m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    m->fd = -1;
    if (name != NULL) {
        err = conc__shm_name_fix(fn, name, m->name, sizeof m->name);
        if (err != 0) {
            goto fail;
        }
    }
    /* Relaxed: see conc_shm_share. */
    unsigned mode = atomic_load_explicit(&share_mode, memory_order_relaxed);
    for (int tries = 0;; tries++) {
        if (name == NULL) {
            random_name(m->name, sizeof m->name);
        }
        m->fd = conc__os_shm_open(m->name, true, mode);
        if (m->fd >= 0) {
            break;
        }
        if (name != NULL || errno != EEXIST || tries > 100) {
            err = os_fail(fn, "shm_open", m->name);
            goto fail;
        }
    }
    /* The umask may have taken bits a deliberate sharing mode asks for. */
    if (mode != DEFAULT_MODE && conc__os_fchmod(m->fd, mode) != 0) {
        err = os_fail(fn, "fchmod", m->name);
        goto fail_unlink;
    }
    if (conc__os_ftruncate(m->fd, size) != 0) {
        err = os_fail(fn, "ftruncate", m->name);
        goto fail_unlink;
    }
    /* Backed: every page allocated now, so that a full /dev/shm is this
     * call's CONC_ENOMEM rather than a SIGBUS at the first touch of a page
     * there was no room for (ftruncate alone makes a sparse file). */
    if (backed && conc__os_file_reserve(m->fd, 0, size) != 0) {
        bool full = errno == ENOSPC || errno == ENOMEM || errno == EFBIG;
        err = conc__fail_sys(full ? CONC_ENOMEM : CONC_ESYS, "%s: "
                             "allocating the %zu bytes of '%s'", fn, size,
                             m->name);
        goto fail_unlink;
    }
    m->ptr = conc__os_map_shared(m->fd, size);
    if (m->ptr == NULL) {
        err = os_fail(fn, "mmap", m->name);
        goto fail_unlink;
    }
    CONC__ASSERT(size > 0 && size <= (size_t)INT64_MAX); /* checked above */
    m->size = size;
    m->creator = getpid();
    created_add(m);
    *out = m;
    return 0;

fail_unlink: {
    int saved = errno;
    conc__os_shm_unlink(m->name);
    errno = saved;
}
fail:
    handle_drop(m);
    return err;
}

int conc_shm_create(conc_shm **out, const char *name, size_t size)
{
    return conc__shm_create(out, "conc_shm_create", name, size);
}

/* ---- open ---------------------------------------------------------------- */

/* The first kind->magic_size bytes at p, read with acquire: pairs with
 * the creator's release store of the magic, so an opener that sees it
 * sees the object it publishes. */
static uint64_t magic_at(const void *p, const conc__shm_kind *kind)
{
    if (kind->magic_size == 8) {
        return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
    }
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
}

/* Waits (within dl) for the creator to size the segment; fills st.
 * Without a kind there is no waiting: size 0 is CONC_ESYS, ENODATA. */
static int sized(conc_shm *m, const char *fn, const conc__shm_kind *kind,
                 const conc__deadline *dl, conc__os_file *st)
{
    for (;;) {
        if (conc__os_fstat(m->fd, st) != 0) {
            return os_fail(fn, "fstat", m->name);
        }
        int err = check_owner(fn, m->name, st);
        if (err != 0) {
            return err;
        }
        if (st->size > 0) {
            break;
        }
        if (kind == NULL || conc__deadline_passed(dl)) {
            /* A creator between shm_open and ftruncate, or one that
             * never sized it. */
            errno = ENODATA;
            return conc__fail_sys(CONC_ESYS, "%s: '%s' has size 0 (its "
                                  "creator has not sized it)", fn, m->name);
        }
        usleep(1000);
    }
    if (st->size > SIZE_MAX) {
        return conc__fail(CONC_ENOMEM, "%s: '%s' is %llu bytes: more than "
                          "this process can map", fn, m->name,
                          (unsigned long long)st->size);
    }
    if (kind != NULL && st->size < kind->min_size) {
        return conc__fail(CONC_EINVAL, "%s: '%s' is %llu bytes: too small "
                          "to be a libconc %s", fn, m->name,
                          (unsigned long long)st->size, kind->what);
    }
    return 0;
}

/* Waits (within dl) for the object's magic. */
static int published(conc_shm *m, const char *fn, const conc__shm_kind *kind,
                     const conc__deadline *dl)
{
    uint64_t seen = magic_at(m->ptr, kind);
    while (seen == 0 && !conc__deadline_passed(dl)) {
        usleep(1000);
        seen = magic_at(m->ptr, kind);
    }
    if (seen == 0) {
        return conc__fail(CONC_EINVAL, "%s: '%s' is not a libconc %s (its "
                          "header stayed empty for a second: not made by "
                          "libconc, or its creator died making it)",
                          fn, m->name, kind->what);
    }
    if (seen != kind->magic) {
        return conc__fail(CONC_EINVAL, "%s: '%s' is not a libconc %s (its "
                          "magic is %#llx: another kind of object, or "
                          "another layout version)", fn, m->name,
                          kind->what, (unsigned long long)seen);
    }
    return 0;
}

int conc__shm_open(conc_shm **out, const char *fn, const char *name,
                   const conc__shm_kind *kind)
{
    int err = 0;
    conc_shm *m = NULL;
    conc__os_file st;
    conc__deadline dl;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    /* One second in all for a creator still making the object. */
    conc__deadline_init(&dl, 1.0);
    m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    m->fd = -1;
    err = conc__shm_name_fix(fn, name, m->name, sizeof m->name);
    if (err != 0) {
        goto fail;
    }
    m->fd = conc__os_shm_open(m->name, false, 0);
    if (m->fd < 0) {
        err = os_fail(fn, "shm_open", m->name);
        goto fail;
    }
    err = sized(m, fn, kind, &dl, &st);
    if (err != 0) {
        goto fail;
    }
    m->ptr = conc__os_map_shared(m->fd, (size_t)st.size);
    if (m->ptr == NULL) {
        err = os_fail(fn, "mmap", m->name);
        goto fail;
    }
    /* sized() let through only a size that is positive, fits size_t and
     * holds the kind's minimum; the mapping is that size. */
    CONC__ASSERT(st.size > 0 && (uint64_t)st.size <= SIZE_MAX);
    CONC__ASSERT(kind == NULL || (size_t)st.size >= kind->min_size);
    m->size = (size_t)st.size;
    if (kind != NULL) {
        err = published(m, fn, kind, &dl);
        if (err != 0) {
            goto fail;
        }
    }
    *out = m;
    return 0;

fail:
    handle_drop(m);
    return err;
}

int conc_shm_open(conc_shm **out, const char *name)
{
    return conc__shm_open(out, "conc_shm_open", name, NULL);
}

/* ---- the rest of the API --------------------------------------------------- */

void *conc_shm_ptr(const conc_shm *m)
{
    return m == NULL ? NULL : m->ptr;
}

size_t conc_shm_size(const conc_shm *m)
{
    return m == NULL ? 0 : m->size;
}

const char *conc_shm_name(const conc_shm *m)
{
    return m == NULL ? NULL : m->name;
}

int conc_shm_unlink(conc_shm *m)
{
    if (m == NULL) {
        return conc__fail(CONC_EINVAL, "conc_shm_unlink: m is NULL");
    }
    if (conc__os_shm_unlink(m->name) != 0) {
        return conc__fail_sys(CONC_ESYS, "conc_shm_unlink: shm_unlink('%s')",
                              m->name);
    }
    m->unlinked = true;
    return 0;
}

void conc_shm_free(conc_shm *m)
{
    if (m == NULL) {
        return;
    }
    if (m->creator != 0) {
        created_remove(m);
        if (m->creator == getpid()) {
            unlink_if_ours(m);
        }
    }
    handle_drop(m);
}

/* ---- growable segments (the dict) ---------------------------------------
 *
 * A segment whose file starts small and grows while it is in use, mapped
 * once at the size it may grow to (the reserve): the file is a named
 * segment made by conc__shm_create or opened by conc__shm_open (so the
 * name rules, the owner and mode check and the unlink rules above hold
 * for it as for any other), or an unnamed memfd that children forked
 * later share through the inherited descriptor.  Growing never moves the
 * mapping, so no process remaps when another grows the file; each only
 * touches bytes the file is known to hold (the caller's business: a page
 * past the file's end raises SIGBUS).  The handle is an ordinary conc_shm
 * (conc_shm_free releases it; an unnamed one has the name "" and no
 * creator, so it is never unlinked), whose size is the reserve once
 * conc__shm_reserve ran. */

int conc__shm_anon(conc_shm **out, const char *fn, size_t size)
{
    int err = 0;
    *out = NULL;
    conc_shm *m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    m->fd = conc__os_memfd("conc_dict");
    if (m->fd < 0) {
        err = conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                             "%s: memfd_create", fn);
        goto fail;
    }
    err = conc__shm_grow(m, fn, 0, size);
    if (err != 0) {
        goto fail;
    }
    m->ptr = conc__os_map_shared(m->fd, size);
    if (m->ptr == NULL) {
        err = os_fail(fn, "mmap", "(memfd)");
        goto fail;
    }
    m->size = size;
    *out = m;
    return 0;

fail:
    handle_drop(m);
    return err;
}

int conc__shm_reserve(conc_shm *m, const char *fn, size_t reserve)
{
    void *p = conc__os_map_shared(m->fd, reserve);
    if (p == NULL) {
        return conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                              "%s: mmap of %zu bytes of address space for "
                              "'%s'", fn, reserve, m->name);
    }
    conc__os_shared_free(m->ptr, m->size);
    m->ptr = p;
    m->size = reserve;
    return 0;
}

int conc__shm_grow(conc_shm *m, const char *fn, uint64_t from, uint64_t to)
{
    if (conc__os_file_reserve(m->fd, from, to) != 0) {
        bool full = errno == ENOSPC || errno == ENOMEM || errno == EFBIG;
        return conc__fail_sys(full ? CONC_ENOMEM : CONC_ESYS,
                              "%s: growing '%s' to %llu bytes", fn, m->name,
                              (unsigned long long)to);
    }
    return 0;
}

int conc__shm_file_size(const conc_shm *m, const char *fn, uint64_t *size)
{
    conc__os_file st;
    if (conc__os_fstat(m->fd, &st) != 0) {
        return os_fail(fn, "fstat", m->name);
    }
    *size = st.size;
    return 0;
}
