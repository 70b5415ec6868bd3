/* shm.c - conc_shm: named POSIX shared memory (Python's
 * shared_memory.SharedMemory), the base of every named libconc object.
 *
 * A handle is process-local: the name, the fd, the mapping and the pid of
 * the process that created the segment (0 when opened).  The fd stays
 * open for the handle's life so that the creator can tell, at free time,
 * whether the name still names *its* segment: fstat(fd).st_nlink is 0
 * once the name was unlinked (by anyone), and then a segment created
 * later under the same name is someone else's and must not be unlinked.
 *
 * Lifetime (Python's resource tracker, without the tracker process): the
 * creator unlinks the name in conc_shm_free, and an atexit handler
 * unlinks the names of segments this process created and never freed.
 * Those live on a process-local list guarded by a spinlock; pthread_atfork
 * takes it around fork() so a child never inherits it held.  A forked
 * child inherits handles but is not their creator (the pid differs), so
 * its free only unmaps.  A creator killed by SIGKILL cannot unlink: that
 * is the one way a segment outlives its creator (as in Python, where the
 * tracker itself can be killed).
 *
 * Rejected: unlinking at once after every open (Python's track=False
 * style): an unrelated process could then never open the name.
 */
#include "shared_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHM_NAME_MAX 250

struct conc_shm {
    char name[SHM_NAME_MAX + 2];
    void *ptr;
    size_t size;
    int fd;
    pid_t creator;          /* getpid() of the creator; 0 when opened */
    bool unlinked;          /* this handle unlinked the name */
    struct conc_shm *next;  /* on the created-list while creator != 0 */
    struct conc_shm **prevp;
};

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
    struct stat st;
    if (m->unlinked || m->fd < 0) {
        return;
    }
    /* st_nlink 0: the name was unlinked already, possibly re-created by
     * someone else; leave it. */
    if (fstat(m->fd, &st) == 0 && st.st_nlink > 0) {
        shm_unlink(m->name);
    }
    m->unlinked = true;
}

static void created_atexit(void)
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
    atexit(created_atexit);
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

int conc__shm_name_fix(const char *name, char *out, size_t cap)
{
    if (name == NULL) {
        return conc__fail(CONC_EINVAL, "the name is NULL");
    }
    const char *given = name;
    if (name[0] == '/') {
        name++;
    }
    size_t n = strnlen(name, SHM_NAME_MAX + 1);
    if (n == 0 || n > SHM_NAME_MAX || strchr(name, '/') != NULL ||
        strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || n + 2 > cap) {
        return conc__fail(CONC_EINVAL,
                          "name '%.64s%s': a name is 1 to %d bytes after an "
                          "optional leading '/', with no other '/', and not "
                          "'.' or '..'",
                          given, strlen(given) > 64 ? "..." : "",
                          SHM_NAME_MAX);
    }
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

/* ---- the OS calls, each through the fault seam -------------------------- */

static int seam_shm_open(const char *name, int flags, mode_t mode)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    return shm_open(name, flags | O_CLOEXEC, mode);
}

static int seam_ftruncate(int fd, off_t size)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    return ftruncate(fd, size);
}

static void *seam_mmap(int fd, size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
}

/* CONC_ENOMEM or CONC_ESYS for a failed OS call, with its detail. */
static int os_fail(const char *fn, const char *call, const char *name)
{
    return conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                          "%s: %s('%s')", fn, call, name);
}

/* ---- the API ------------------------------------------------------------- */

int conc_shm_create(conc_shm **out, const char *name, size_t size)
{
    int err = 0;
    conc_shm *m = NULL;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_shm_create: out is NULL");
    }
    if (size == 0 || size > (size_t)INT64_MAX) {
        return conc__fail(CONC_EINVAL, "conc_shm_create: size %zu: it must "
                          "be positive and at most 2^63 - 1", size);
    }
    *out = NULL;
    m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_shm_create: out of memory");
    }
    m->fd = -1;
    if (name != NULL) {
        err = conc__shm_name_fix(name, m->name, sizeof m->name);
        if (err != 0) {
            goto fail;
        }
    }
    for (int tries = 0;; tries++) {
        if (name == NULL) {
            random_name(m->name, sizeof m->name);
        }
        m->fd = seam_shm_open(m->name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (m->fd >= 0) {
            break;
        }
        if (name != NULL || errno != EEXIST || tries > 100) {
            err = os_fail("conc_shm_create", "shm_open", m->name);
            goto fail;
        }
    }
    if (seam_ftruncate(m->fd, (off_t)size) != 0) {
        err = os_fail("conc_shm_create", "ftruncate", m->name);
        goto fail_unlink;
    }
    m->ptr = seam_mmap(m->fd, size);
    if (m->ptr == MAP_FAILED) {
        m->ptr = NULL;
        err = os_fail("conc_shm_create", "mmap", m->name);
        goto fail_unlink;
    }
    m->size = size;
    m->creator = getpid();
    created_add(m);
    *out = m;
    return 0;

fail_unlink: {
    int saved = errno;
    shm_unlink(m->name);
    errno = saved;
}
fail:
    if (m->fd >= 0) {
        int saved = errno;
        close(m->fd);
        errno = saved;
    }
    free(m);
    return err;
}

int conc_shm_open(conc_shm **out, const char *name)
{
    int err = 0;
    conc_shm *m = NULL;
    struct stat st;
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_shm_open: out is NULL");
    }
    *out = NULL;
    m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_shm_open: out of memory");
    }
    m->fd = -1;
    err = conc__shm_name_fix(name, m->name, sizeof m->name);
    if (err != 0) {
        goto fail;
    }
    m->fd = seam_shm_open(m->name, O_RDWR, 0);
    if (m->fd < 0) {
        err = os_fail("conc_shm_open", "shm_open", m->name);
        goto fail;
    }
    if (fstat(m->fd, &st) != 0) {
        err = os_fail("conc_shm_open", "fstat", m->name);
        goto fail;
    }
    if (st.st_size <= 0) {
        /* A creator between shm_open and ftruncate: nothing to map yet. */
        errno = ENODATA;
        err = conc__fail_sys(CONC_ESYS, "conc_shm_open: '%s' has size 0 "
                             "(its creator has not sized it yet)", m->name);
        goto fail;
    }
    m->size = (size_t)st.st_size;
    m->ptr = seam_mmap(m->fd, m->size);
    if (m->ptr == MAP_FAILED) {
        m->ptr = NULL;
        err = os_fail("conc_shm_open", "mmap", m->name);
        goto fail;
    }
    *out = m;
    return 0;

fail:
    if (m->fd >= 0) {
        int saved = errno;
        close(m->fd);
        errno = saved;
    }
    free(m);
    return err;
}

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
    if (shm_unlink(m->name) != 0) {
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
    if (m->ptr != NULL) {
        munmap(m->ptr, m->size);
    }
    if (m->fd >= 0) {
        close(m->fd);
    }
    free(m);
}

/* ---- growable segments (the dict) ---------------------------------------
 *
 * A segment whose file starts small and grows while it is in use, mapped
 * once at the size it may grow to (the reserve): the file is a /dev/shm
 * object made by conc_shm_create, or an unnamed memfd that children forked
 * later share through the inherited descriptor.  Growing never moves the
 * mapping, so no process remaps when another grows the file; each only
 * touches bytes the file is known to hold (the caller's business: a page
 * past the file's end raises SIGBUS).  The handle is an ordinary conc_shm
 * (conc_shm_free releases it; an unnamed one has the name "" and is never
 * unlinked), whose size is the reserve once conc__shm_reserve ran.  fn
 * names the public call, for the error details. */

int conc__shm_anon(conc_shm **out, size_t size, const char *fn)
{
    conc_shm *m = NULL;
    *out = NULL;
    m = conc__calloc(1, sizeof *m);
    if (m == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", fn);
    }
    m->fd = conc__os_memfd("conc_dict");
    if (m->fd < 0) {
        free(m);
        return conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                              "%s: memfd_create", fn);
    }
    int err = conc__shm_grow(m, 0, size, fn);
    if (err == 0) {
        m->ptr = conc__os_map_file(m->fd, size);
        if (m->ptr == NULL) {
            err = conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                                 "%s: mmap of a memfd", fn);
        }
    }
    if (err != 0) {
        conc__os_close(m->fd);
        free(m);
        return err;
    }
    m->size = size;
    *out = m;
    return 0;
}

int conc__shm_reserve(conc_shm *m, size_t reserve, const char *fn)
{
    void *p = conc__os_map_file(m->fd, reserve);
    if (p == NULL) {
        return conc__fail_sys(errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                              "%s: mmap of %zu bytes of address space for "
                              "'%s'", fn, reserve, m->name);
    }
    conc__os_unmap(m->ptr, m->size);
    m->ptr = p;
    m->size = reserve;
    return 0;
}

int conc__shm_grow(conc_shm *m, uint64_t from, uint64_t to, const char *fn)
{
    if (conc__os_file_reserve(m->fd, from, to) != 0) {
        bool full = errno == ENOSPC || errno == ENOMEM || errno == EFBIG;
        return conc__fail_sys(full ? CONC_ENOMEM : CONC_ESYS,
                              "%s: growing '%s' to %llu bytes", fn, m->name,
                              (unsigned long long)to);
    }
    return 0;
}

int conc__shm_file_size(const conc_shm *m, uint64_t *size, const char *fn)
{
    if (conc__os_file_size(m->fd, size) != 0) {
        return conc__fail_sys(CONC_ESYS, "%s: fstat of '%s'", fn, m->name);
    }
    return 0;
}
