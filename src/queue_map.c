/* queue_map.c - making, opening and freeing conc_queue handles: the
 * shared mapping (anonymous, or a POSIX shm object for a named queue),
 * the header's initialisation, the checks an opener makes, and who
 * unlinks a name.  The ring itself, and why its header looks as it does,
 * are in queue.c.
 *
 * Creation order: the creator sizes the object, fills the header, and
 * stores the magic last (release); an opener waits (up to a second) for
 * the object to be sized and the magic to appear (acquire), then checks
 * the layout version and sizes.  A name is unlinked only by the process
 * that created it, in conc_queue_free(); openers and forked children
 * never unlink.  Every OS call here goes through the fault seam
 * (conc__fault_hit) so that tests can fail each one in turn; a failure
 * undoes what was done (a created name is unlinked) and leaks nothing.
 */
#include "queue_int.h"
#include "net_int.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- creation ------------------------------------------------------------- */

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static size_t ring_offset(void)
{
    size_t p = page_size();
    return (sizeof(conc__qshm) + p - 1) / p * p;
}

/* "/name" from "name" or "/name"; NULL (CONC_EINVAL in *err) for a bad
 * name, NULL (CONC_ENOMEM) when allocation fails. */
static char *shm_name(const char *name, int *err)
{
    *err = CONC_EINVAL;
    if (name == NULL) {
        return NULL;
    }
    if (name[0] == '/') {
        name++;
    }
    size_t n = strlen(name);
    if (n == 0 || n > 200 || strchr(name, '/') != NULL ||
        strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return NULL;
    }
    char *s = conc__malloc(n + 2);
    if (s == NULL) {
        *err = CONC_ENOMEM;
        return NULL;
    }
    s[0] = '/';
    memcpy(s + 1, name, n + 1);
    return s;
}

static uint64_t random_key(void)
{
    /* The top bit set: no position ever reaches it, so a zeroed ring
     * header (stamp 0) never matches. */
    return conc__os_random64() | (UINT64_C(1) << 63);
}

static void handle_fill(conc_queue *q, void *map, size_t map_size)
{
    q->sh = map;
    q->map_size = map_size;
    q->ring = (unsigned char *)map + q->sh->ring_off;
    q->R = q->sh->ring_bytes;
    q->key = q->sh->key;
    q->capacity = q->sh->capacity;
    q->maxsize = q->sh->maxsize;
    atomic_init(&q->spin_get, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->spin_put, CONC__QUEUE_SPIN_FLOOR_NS);
    atomic_init(&q->linger, 0);
    atomic_init(&q->probe, 0);
    /* Work out this thread's lock identity now (the sync module computes
     * it once per process under pthread_once): a queue is usually made
     * before threads start, and a fork from one thread while another is
     * inside that pthread_once would leave the child stuck in it. */
    (void)conc__sync_self_id();
}

/* Maps the named object: creates it (size bytes) or opens it (its size). */
static int map_named(const char *name, bool create, size_t size,
                     void **map, size_t *mapped)
{
    int err = 0;
    int fd;
    if (conc__fault_hit()) {
        errno = EIO;
        return CONC_ESYS;
    }
    if (create) {
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    } else {
        fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    }
    if (fd < 0) {
        return CONC_ESYS;
    }
    if (create) {
        if (conc__fault_hit() || ftruncate(fd, (off_t)size) != 0) {
            err = CONC_ESYS;
            goto out_unlink;
        }
    } else {
        /* The creator sizes the object right after creating it; give it
         * a moment. */
        struct stat st;
        for (int i = 0;; i++) {
            if (conc__fault_hit() || fstat(fd, &st) != 0) {
                err = CONC_ESYS;
                goto out_close;
            }
            if ((size_t)st.st_size >= ring_offset()) {
                break;
            }
            if (i == 1000) {
                err = CONC_EINVAL;
                goto out_close;
            }
            usleep(1000);
        }
        size = (size_t)st.st_size;
    }
    void *p = MAP_FAILED;
    if (!conc__fault_hit()) {
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    } else {
        errno = ENOMEM;
    }
    if (p == MAP_FAILED) {
        err = errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
        goto out_unlink;
    }
    close(fd);
    *map = p;
    *mapped = size;
    return 0;

out_unlink:
    if (create) {
        int e = errno;
        shm_unlink(name);
        errno = e;
    }
out_close: {
    int e = errno;
    close(fd);
    errno = e;
}
    return err;
}

CONC_API int conc_queue_new(conc_queue **out, const conc_queue_opts *opts)
{
    if (opts != NULL && opts->url != NULL) {
        return conc__netq_new(out, opts);
    }
    static const conc_queue_opts defaults;
    int err = 0;
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    if (opts == NULL) {
        opts = &defaults;
    }
    size_t cap = opts->capacity_bytes ? opts->capacity_bytes
                                      : CONC_QUEUE_DEFAULT_CAPACITY;
    if (cap > CONC_QUEUE_MAX_CAPACITY) {
        return CONC_EINVAL;
    }
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    size_t off = ring_offset(), pg = page_size();
    size_t map_size = (off + (size_t)R + pg - 1) / pg * pg;

    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        return CONC_ENOMEM;
    }
    void *map = NULL;
    if (opts->name != NULL) {
        q->name = shm_name(opts->name, &err);
        if (q->name == NULL) {
            goto fail_handle;
        }
        err = map_named(q->name, true, map_size, &map, &map_size);
        if (err != 0) {
            goto fail_name;
        }
        q->creator = getpid();
    } else {
        map = conc__os_shared_alloc(map_size);
        if (map == NULL) {
            err = errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
            goto fail_handle;
        }
    }
    conc__qshm *sh = map;
    sh->version = CONC__QUEUE_VERSION;
    sh->ring_off = (uint32_t)off;
    sh->ring_bytes = R;
    sh->capacity = cap;
    sh->maxsize = opts->maxsize;
    sh->key = random_key();
    sh->map_size = map_size;
    /* Small queues use their whole ring from the start (see MEMORY in
     * queue.c): early wraps would keep it in both cores' caches. */
    bool small = cap <= CONC__QUEUE_NO_EARLY_WRAP || R < CONC__QUEUE_HW_STEP;
    atomic_init(&sh->hw, small ? R : CONC__QUEUE_HW_STEP);
    atomic_init(&sh->pmu.state, 0);
    atomic_init(&sh->cmu.state, 0);
    /* Release: an opener that sees the magic (acquire, in open) sees the
     * whole header. */
    atomic_store_explicit(&sh->magic, CONC__QUEUE_MAGIC,
                          memory_order_release);
    handle_fill(q, map, map_size);
    *out = q;
    return 0;

fail_name:
    free(q->name);
fail_handle:
    free(q);
    return err;
}

CONC_API int conc_queue_open(conc_queue **out, const char *name)
{
    if (conc__url_is(name)) {
        return conc__netq_open(out, name);
    }
    int err = 0;
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        return CONC_ENOMEM;
    }
    void *map = NULL;
    size_t size = 0;
    q->name = shm_name(name, &err);
    if (q->name == NULL) {
        goto fail_handle;
    }
    err = map_named(q->name, false, 0, &map, &size);
    if (err != 0) {
        goto fail_name;
    }
    conc__qshm *sh = map;
    /* Acquire: pairs with the creator's release store of the magic.  The
     * creator writes it right after sizing the object; wait a moment. */
    for (int i = 0; atomic_load_explicit(&sh->magic, memory_order_acquire) !=
                    CONC__QUEUE_MAGIC;
         i++) {
        if (i == 1000) {
            err = CONC_EINVAL;
            goto fail_map;
        }
        usleep(1000);
    }
    if (sh->version != CONC__QUEUE_VERSION || sh->map_size != size ||
        sh->ring_off != ring_offset() ||
        (uint64_t)sh->ring_off + sh->ring_bytes > size ||
        sh->ring_bytes != CONC__QUEUE_REC_HDR + conc__queue_round16(sh->capacity)) {
        err = CONC_EINVAL;
        goto fail_map;
    }
    handle_fill(q, map, size);
    q->creator = 0;
    *out = q;
    return 0;

fail_map:
    munmap(map, size);
fail_name:
    free(q->name);
fail_handle:
    free(q);
    return err;
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
    if (q->name != NULL) {
        munmap(q->sh, q->map_size);
        if (q->creator != 0 && q->creator == getpid()) {
            shm_unlink(q->name);
        }
        free(q->name);
    } else {
        conc__os_shared_free(q->sh, q->map_size);
    }
    free(q);
}
