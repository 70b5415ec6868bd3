/* net_dict.c - a conc_dict served by a server (.url): making and opening
 * the backend's dict, the argument checks every backend shares, and the
 * hand-over to the backend's ops (net_int.h).  dict.c keeps the handle
 * (its struct is private there) with a `net` pointer it tests first
 * thing in each public function.
 *
 * The checks mirror the shared-memory dict's: a NULL key or value is
 * allowed only with length 0; outputs are zeroed on every error; the
 * queries that cannot fail (contains, len) answer false / 0 when the
 * server cannot be asked, with the reason in conc_errdetail().
 */
#include "net_int.h"

static int make(conc__netd **out, const char *url, const char *name,
                const conc_dict_opts *opts, bool create, const char *fn)
{
    const conc__net_backend *b = NULL;
    conc__url u;
    int err = conc__net_resolve(url, CONC__NET_DICT, &b, &u, fn);
    if (err != 0) {
        return err;
    }
    return b->dict(out, &u, name, opts, create);
}

int conc__netd_new(conc__netd **out, const conc_dict_opts *opts)
{
    static const char fn[] = "conc_dict_new";
    if (opts->capacity_bytes != 0) {
        return conc__fail(CONC_EINVAL, "%s: capacity_bytes has no meaning "
                          "for a dict on a server (leave it 0)", fn);
    }
    int err = conc__net_opts_check((conc_timeout){ 0 }, opts->net_timeout,
                                   fn);
    if (err != 0) {
        return err;
    }
    return make(out, opts->url, opts->name, opts, true, fn);
}

int conc__netd_open(conc__netd **out, const char *url)
{
    return make(out, url, NULL, NULL, false, "conc_dict_open");
}

static int bad_key(const void *key, size_t klen, const char *fn)
{
    if (key == NULL && klen > 0) {
        return conc__fail(CONC_EINVAL, "%s: key is NULL and klen is %zu", fn,
                          klen);
    }
    return 0;
}

int conc__netd_set(conc__netd *d, const void *key, size_t klen,
                   const void *val, size_t vlen)
{
    int err = bad_key(key, klen, "conc_dict_set");
    if (err == 0 && val == NULL && vlen > 0) {
        err = conc__fail(CONC_EINVAL, "conc_dict_set: val is NULL and vlen "
                         "is %zu", vlen);
    }
    return err != 0 ? err : d->ops->set(d, key, klen, val, vlen);
}

int conc__netd_get(conc__netd *d, const void *key, size_t klen,
                   conc_msg *msg)
{
    if (msg == NULL) {
        return conc__fail(CONC_EINVAL, "conc_dict_get: msg is NULL");
    }
    msg->data = NULL;
    msg->len = 0;
    int err = bad_key(key, klen, "conc_dict_get");
    return err != 0 ? err : d->ops->get(d, key, klen, msg, NULL, 0, NULL);
}

int conc__netd_get_into(conc__netd *d, const void *key, size_t klen,
                        void *buf, size_t cap, size_t *len)
{
    if (len == NULL || (buf == NULL && cap > 0)) {
        return conc__fail(CONC_EINVAL, "conc_dict_get_into: len is NULL, or "
                          "buf is NULL with cap %zu", cap);
    }
    *len = 0;
    int err = bad_key(key, klen, "conc_dict_get_into");
    return err != 0 ? err : d->ops->get(d, key, klen, NULL, buf, cap, len);
}

int conc__netd_del(conc__netd *d, const void *key, size_t klen)
{
    int err = bad_key(key, klen, "conc_dict_del");
    return err != 0 ? err : d->ops->del(d, key, klen);
}

bool conc__netd_contains(conc__netd *d, const void *key, size_t klen)
{
    bool yes = false;
    return bad_key(key, klen, "conc_dict_contains") == 0 &&
           d->ops->contains(d, key, klen, &yes) == 0 && yes;
}

size_t conc__netd_len(conc__netd *d)
{
    size_t n = 0;
    return d->ops->len(d, &n) == 0 ? n : 0;
}

int conc__netd_keys(conc__netd *d, conc_msg **keys, size_t *n)
{
    if (keys == NULL || n == NULL) {
        return conc__fail(CONC_EINVAL, "conc_dict_keys: keys or n is NULL");
    }
    *keys = NULL;
    *n = 0;
    return d->ops->keys(d, keys, n);
}

int conc__netd_items(conc__netd *d, conc_dict_item **items, size_t *n)
{
    if (items == NULL || n == NULL) {
        return conc__fail(CONC_EINVAL, "conc_dict_items: items or n is "
                          "NULL");
    }
    *items = NULL;
    *n = 0;
    return d->ops->items(d, items, n);
}

int conc__netd_update(conc__netd *d, const void *key, size_t klen,
                      conc_dict_update_fn fn, void *arg)
{
    int err = bad_key(key, klen, "conc_dict_update");
    if (err == 0 && fn == NULL) {
        err = conc__fail(CONC_EINVAL, "conc_dict_update: fn is NULL");
    }
    return err != 0 ? err : d->ops->update(d, key, klen, fn, arg);
}

void conc__netd_free(conc__netd *d)
{
    d->ops->free(d);
}
