/* net_lock.c - a conc_lock served by a server (.url): the argument checks
 * every backend shares, the hand-over to the backend's ops (net_int.h),
 * and conc_lock_fence, the fencing number only such a lock has.
 *
 * The handle a caller holds is the backend's heap struct itself, whose
 * first word is CONC__NETL_MAGIC where a shared-memory lock's page has
 * its magic; lock.c asks conc__netl_is() first thing in each public
 * function (one compare on a word the shared-memory path reads anyway,
 * and a check word no other process can forge), then calls here.
 */
#include "net_int.h"

static conc__netl *as_net(conc_lock *l)
{
    return (conc__netl *)(void *)l;
}

static int make(conc_lock **out, const char *url, const char *name,
                const conc_lock_opts *opts, bool create, const char *fn)
{
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    const conc__net_backend *b = NULL;
    conc__url u;
    int err = conc__net_resolve(url, CONC__NET_LOCK, &b, &u, fn);
    if (err != 0) {
        return err;
    }
    conc__netl *n = NULL;
    err = b->lock(&n, &u, name, opts, create);
    if (err == 0) {
        *out = (conc_lock *)(void *)n;
    }
    return err;
}

int conc__netl_new(conc_lock **out, const conc_lock_opts *opts)
{
    static const char fn[] = "conc_lock_new";
    int err = conc__net_opts_check(opts->lease, opts->net_timeout, fn);
    if (err != 0) {
        return err;
    }
    return make(out, opts->url, opts->name, opts, true, fn);
}

int conc__netl_open(conc_lock **out, const char *url)
{
    return make(out, url, NULL, NULL, false, "conc_lock_open");
}

int conc__netl_acquire(conc_lock *l, double timeout)
{
    if (!conc__timeout_ok(timeout)) {
        return conc__fail(CONC_EINVAL, "conc_lock_acquire: timeout %g is "
                          "neither >= 0 nor CONC_FOREVER", timeout);
    }
    return as_net(l)->ops->acquire(as_net(l), timeout);
}

int conc__netl_release(conc_lock *l)
{
    return as_net(l)->ops->release(as_net(l));
}

bool conc__netl_locked(conc_lock *l)
{
    bool yes = false;
    return as_net(l)->ops->locked(as_net(l), &yes) == 0 && yes;
}

void conc__netl_free(conc_lock *l)
{
    as_net(l)->ops->free(as_net(l));
}

CONC_API int conc_lock_fence(conc_lock *l, uint64_t *token)
{
    if (token != NULL) {
        *token = 0;
    }
    if (l == NULL || token == NULL) {
        return conc__fail(CONC_EINVAL, "conc_lock_fence: l or token is "
                          "NULL");
    }
    if (!conc__netl_is(l)) {
        return conc__fail(CONC_EINVAL, "conc_lock_fence: only a lock on a "
                          "server (.url) has fencing numbers");
    }
    return as_net(l)->ops->fence(as_net(l), token);
}
