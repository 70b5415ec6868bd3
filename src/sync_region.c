/* sync_region.c - the shared page every sync object lives in: an
 * anonymous MAP_SHARED mapping (shared with children forked later), or,
 * for an object given .name, a named segment (sync_named.c), whose
 * handle is found from the page's address when it is freed.  The page
 * holds no pointers, so every process may map it at its own address.
 */
#include "sync_int.h"

#include <unistd.h>

static size_t page_round(size_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t p = pg > 0 ? (size_t)pg : 4096;
    return (size + p - 1) / p * p;
}

void *conc__sync_region_new(size_t size)
{
    return conc__os_shared_alloc(page_round(size));
}

int conc__sync_region_make(void **region, const char *name, size_t size,
                           uint32_t magic)
{
    if (name != NULL) {
        return conc__sync_named_new(region, name, size, magic);
    }
    *region = conc__sync_region_new(size);
    return *region != NULL ? 0
                           : conc__fail_sys(CONC_ENOMEM, "no memory for a "
                                            "sync object's shared page: "
                                            "mmap");
}

void conc__sync_region_free(void *p, size_t size)
{
    if (conc__sync_named_release(p)) {
        return;
    }
    conc__os_shared_free(p, page_round(size));
}
