/* redis_dict.c - conc_dict served by Redis: one hash for the values, one
 * for per-field versions, and a compare-and-set script for update.
 *
 * KEYS (one hash tag per dict):
 *   conc:{d:NAME}        hash: key -> value
 *   conc:{d:NAME}:ver    hash: key -> the version of its value
 *   conc:{d:NAME}:meta   hash: kind=dict, layout=1, clock (the last
 *                        version handed out)
 * A version is a number from the dict's clock (HINCRBY), taken afresh by
 * every write, so a key deleted and set again never shows an old
 * version: a compare-and-set that read a value cannot succeed over any
 * later write of that key (no ABA).
 *
 * set is one script (value, then version); get, contains, len, keys and
 * items are plain HGET, HEXISTS, HLEN, HKEYS and HGETALL; del is a script
 * (value and version go together).  Each is one round trip.
 *
 * ITEMS.  HGETALL runs as one command on the server, so its answer is
 * one snapshot of the values hash: no write lands half inside it.  The
 * answer is checked before it is trusted (an even count of elements,
 * every one a string: CONC_ECORRUPT otherwise) and packed as the
 * shared-memory dict packs it (dict.c, snapshot): one heap block, the
 * array of conc_dict_item, then each key's and value's bytes, each
 * started on an 8-byte boundary, NULL for an empty one; so
 * conc_dict_array_free frees either.
 *
 * UPDATE.  The callback runs here, not on the server, so update is
 * optimistic: read the value and its version (a script: both in one
 * atomic step), run fn, then a compare-and-set script writes the new
 * value only if the version is still the one read; if not, it returns
 * the current value and version, fn runs again on them, and the CAS is
 * retried - with no new read.  Two round trips when nobody else writes
 * the key, one more per lost race.  Rejected: WATCH/MULTI/EXEC, which
 * watches the whole hash: a write to any other key of the dict aborts the
 * transaction (measured: 0.44 retries per update with two writers on
 * different keys, against none with a version per field).  So fn may run
 * more than once for one update and must be pure: compute the new value
 * from the old one and arg, and touch nothing else.  fn returning
 * non-zero ends the update with that value and writes nothing.
 *
 * Values are bytes of any length up to Redis's 512 MiB; the empty key is
 * a key.  A server that cannot take a write (maxmemory) answers OOM:
 * CONC_ENOMEM, nothing changed.
 */
#include "redis_int.h"
#include "../dict_int.h" /* conc__dict_round8: the snapshot layout */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VAL ((size_t)512 * 1024 * 1024)
#define MAX_RETRIES 10000

enum { SC_DECLARE, SC_SET, SC_DEL, SC_READ, SC_CAS, SC_N };

static const conc__rscript scripts[SC_N] = {
    [SC_DECLARE] = { "declare",
        /* KEYS: values, versions, meta.  ARGV: create (1/0). */
        "for i = 1, 3 do\n"
        "  local t = redis.call('TYPE', KEYS[i])['ok']\n"
        "  if t ~= 'none' and t ~= 'hash' then return {'type', KEYS[i], t} end\n"
        "end\n"
        "if redis.call('EXISTS', KEYS[3]) == 0 then\n"
        "  if ARGV[1] == '0' then return {'missing'} end\n"
        "  redis.call('HSET', KEYS[3], 'kind', 'dict', 'layout', '1',\n"
        "             'clock', '0')\n"
        "  return {'new'}\n"
        "end\n"
        "local m = redis.call('HMGET', KEYS[3], 'kind', 'layout')\n"
        "if m[1] ~= 'dict' or m[2] ~= '1' then return {'kind'} end\n"
        "return {'old'}\n" },
    [SC_SET] = { "set",
        /* KEYS: values, versions, meta.  ARGV: key, value. */
        "local v = redis.call('HINCRBY', KEYS[3], 'clock', 1)\n"
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
        "redis.call('HSET', KEYS[2], ARGV[1], v)\n"
        "return v\n" },
    [SC_DEL] = { "del",
        /* KEYS: values, versions.  ARGV: key.  1 deleted, 0 absent. */
        "if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then\n"
        "  redis.call('HDEL', KEYS[2], ARGV[1])\n"
        "  return 1\n"
        "end\n"
        "return 0\n" },
    [SC_READ] = { "read",
        /* KEYS: values, versions.  ARGV: key.  {value|nil, version|''}. */
        "return {redis.call('HGET', KEYS[1], ARGV[1]),\n"
        "        redis.call('HGET', KEYS[2], ARGV[1]) or ''}\n" },
    [SC_CAS] = { "cas",
        /* KEYS: values, versions, meta.  ARGV: key, the version read
         * ('' for absent), the new value.  {1} written, or {0, current
         * value|nil, current version|''}. */
        "local cur = redis.call('HGET', KEYS[2], ARGV[1]) or ''\n"
        "if cur ~= ARGV[2] then\n"
        "  return {0, redis.call('HGET', KEYS[1], ARGV[1]), cur}\n"
        "end\n"
        "local v = redis.call('HINCRBY', KEYS[3], 'clock', 1)\n"
        "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
        "redis.call('HSET', KEYS[2], ARGV[1], v)\n"
        "return {1}\n" },
};

typedef struct rd {
    conc__netd base;
    conc__rcli cli;
    conc__ritem item;   /* registered for fork handling; never armed */
    char *k_val;
    char *k_ver;
    char *k_meta;
} rd;

#define RD(d) ((rd *)(void *)(d))

static uint64_t until_of(const rd *d)
{
    return conc__r_until(d->cli.net_timeout);
}

/* ---- one-command calls ---------------------------------------------------------- */

typedef struct kv {
    rd *d;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
    const char *ver;
    size_t verlen;
    const char *cmd;    /* plain command on the values hash, or NULL */
    int script;         /* else a script */
} kv;

static void build_kv(void *ctx, conc__rconn *c)
{
    const kv *a = ctx;
    rd *d = a->d;
    conc__rbuf *b = &c->out;
    if (a->cmd != NULL) {
        bool has_key = strcmp(a->cmd, "HLEN") != 0 &&
                       strcmp(a->cmd, "HKEYS") != 0 &&
                       strcmp(a->cmd, "HGETALL") != 0;
        conc__rbuf_cmd(b, has_key ? 3 : 2);
        conc__rbuf_str(b, a->cmd);
        conc__rbuf_str(b, d->k_val);
        if (has_key) {
            conc__rbuf_arg(b, a->key, a->klen);
        }
        return;
    }
    switch (a->script) {
    case SC_SET:
        conc__rconn_evalsha(c, SC_SET, 3, 2);
        conc__rbuf_str(b, d->k_val);
        conc__rbuf_str(b, d->k_ver);
        conc__rbuf_str(b, d->k_meta);
        conc__rbuf_arg(b, a->key, a->klen);
        conc__rbuf_arg(b, a->val, a->vlen);
        break;
    case SC_DEL:
    case SC_READ:
        conc__rconn_evalsha(c, (size_t)a->script, 2, 1);
        conc__rbuf_str(b, d->k_val);
        conc__rbuf_str(b, d->k_ver);
        conc__rbuf_arg(b, a->key, a->klen);
        break;
    default: /* SC_CAS */
        conc__rconn_evalsha(c, SC_CAS, 3, 3);
        conc__rbuf_str(b, d->k_val);
        conc__rbuf_str(b, d->k_ver);
        conc__rbuf_str(b, d->k_meta);
        conc__rbuf_arg(b, a->key, a->klen);
        conc__rbuf_arg(b, a->ver, a->verlen);
        conc__rbuf_arg(b, a->val, a->vlen);
        break;
    }
}

/* One round trip; *r gets the reply after its type was checked. */
static int one(kv *a, redisReply **r, int type, bool nil_ok, const char *fn,
               const char *what)
{
    int err = conc__rcli_call(&a->d->cli, build_kv, a, r, 1,
                              until_of(a->d), fn);
    if (err != 0) {
        return err;
    }
    err = conc__rreply_want(&a->d->cli, *r, type, nil_ok, fn, what);
    if (err != 0) {
        conc__rreplies_free(r, 1);
    }
    return err;
}

static int rd_set(conc__netd *nd, const void *key, size_t klen,
                  const void *val, size_t vlen)
{
    static const char fn[] = "conc_dict_set";
    if (vlen > MAX_VAL || klen > MAX_VAL) {
        return conc__fail(CONC_ETOOBIG, "%s: a key or value over Redis's "
                          "512 MiB", fn);
    }
    kv a = { .d = RD(nd), .key = key, .klen = klen, .val = val,
             .vlen = vlen, .script = SC_SET };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_INTEGER, false, fn, "the set script");
    if (err == 0) {
        conc__rreplies_free(&r, 1);
    }
    return err;
}

/* Copies a value reply out: into *msg (heap) or buf/cap (*len). */
static int copy_out(const redisReply *v, conc_msg *msg, void *buf, size_t cap,
                    size_t *len, const char *fn)
{
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = v->len;
        if (v->len > 0) {
            msg->data = conc__malloc(v->len);
            if (msg->data == NULL) {
                msg->len = 0;
                return conc__fail(CONC_ENOMEM, "%s: no memory for the value",
                                  fn);
            }
            memcpy(msg->data, v->str, v->len);
        }
        return 0;
    }
    *len = v->len;
    if (v->len > cap) {
        return conc__fail(CONC_ETOOBIG, "%s: the value has %zu bytes, the "
                          "buffer %zu", fn, v->len, cap);
    }
    if (v->len > 0) {
        memcpy(buf, v->str, v->len);
    }
    return 0;
}

static int rd_get(conc__netd *nd, const void *key, size_t klen,
                  conc_msg *msg, void *buf, size_t cap, size_t *len)
{
    const char *fn = msg != NULL ? "conc_dict_get" : "conc_dict_get_into";
    kv a = { .d = RD(nd), .key = key, .klen = klen, .cmd = "HGET" };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_STRING, true, fn, "HGET");
    if (err != 0) {
        return err;
    }
    if (r->type == REDIS_REPLY_NIL) {
        err = conc__fail(CONC_EEMPTY, "%s: no such key", fn);
    } else {
        err = copy_out(r, msg, buf, cap, len, fn);
    }
    conc__rreplies_free(&r, 1);
    return err;
}

static int rd_del(conc__netd *nd, const void *key, size_t klen)
{
    kv a = { .d = RD(nd), .key = key, .klen = klen, .script = SC_DEL };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_INTEGER, false, "conc_dict_del",
                  "the del script");
    if (err != 0) {
        return err;
    }
    err = r->integer == 1 ? 0
                          : conc__fail(CONC_EEMPTY, "conc_dict_del: no such "
                                       "key");
    conc__rreplies_free(&r, 1);
    return err;
}

static int rd_contains(conc__netd *nd, const void *key, size_t klen,
                       bool *yes)
{
    kv a = { .d = RD(nd), .key = key, .klen = klen, .cmd = "HEXISTS" };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_INTEGER, false, "conc_dict_contains",
                  "HEXISTS");
    if (err == 0) {
        *yes = r->integer == 1;
        conc__rreplies_free(&r, 1);
    }
    return err;
}

static int rd_len(conc__netd *nd, size_t *n)
{
    kv a = { .d = RD(nd), .cmd = "HLEN" };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_INTEGER, false, "conc_dict_len",
                  "HLEN");
    if (err == 0) {
        *n = r->integer > 0 ? (size_t)r->integer : 0;
        conc__rreplies_free(&r, 1);
    }
    return err;
}

static int rd_keys(conc__netd *nd, conc_msg **keys, size_t *n)
{
    static const char fn[] = "conc_dict_keys";
    rd *d = RD(nd);
    kv a = { .d = d, .cmd = "HKEYS" };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_ARRAY, false, fn, "HKEYS");
    if (err != 0) {
        return err;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < r->elements && err == 0; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) {
            err = conc__fail(CONC_ECORRUPT, "%s: the server at %s sent a "
                             "key that is not a string", fn, d->cli.where);
        } else {
            bytes += r->element[i]->len;
        }
    }
    conc_msg *arr = NULL;
    if (err == 0 && r->elements > 0) {
        arr = conc__malloc(r->elements * sizeof *arr + bytes);
        if (arr == NULL) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for %zu keys", fn,
                             r->elements);
        }
    }
    if (arr != NULL) {
        unsigned char *p = (unsigned char *)(arr + r->elements);
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            arr[i].len = e->len;
            arr[i].data = e->len > 0 ? p : NULL;
            if (e->len > 0) {
                memcpy(p, e->str, e->len);
            }
            p += e->len;
        }
        *keys = arr;
        *n = r->elements;
    }
    conc__rreplies_free(&r, 1);
    return err;
}

/* The size of the block an HGETALL answer r packs into (header, then
 * the bytes); CONC_ECORRUPT when r is not pairs of strings. */
static int items_size(const rd *d, const redisReply *r, size_t *size,
                      const char *fn)
{
    size_t n = r->elements / 2;
    if (n > (SIZE_MAX / 2) / sizeof(conc_dict_item)) {
        return conc__fail(CONC_ENOMEM, "%s: %zu entries are more than "
                          "memory holds", fn, n);
    }
    size_t total = conc__dict_round8(n * sizeof(conc_dict_item));
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING) {
            return conc__fail(CONC_ECORRUPT, "%s: the server at %s sent %s "
                              "%zu of HGETALL as a reply of type %d, not a "
                              "string", fn, d->cli.where,
                              i % 2 == 0 ? "key" : "the value of key",
                              i / 2, e->type);
        }
        if (e->len > MAX_VAL) {
            return conc__fail(CONC_ECORRUPT, "%s: the server at %s sent an "
                              "element of %zu bytes, over Redis's 512 MiB",
                              fn, d->cli.where, e->len);
        }
        total += conc__dict_round8(e->len);
    }
    if (r->elements % 2 != 0) {
        return conc__fail(CONC_ECORRUPT, "%s: the server at %s answered "
                          "HGETALL with an odd count of elements (%zu): a "
                          "key without its value", fn, d->cli.where,
                          r->elements);
    }
    *size = total;
    return 0;
}

static int rd_items(conc__netd *nd, conc_dict_item **items, size_t *n)
{
    static const char fn[] = "conc_dict_items";
    rd *d = RD(nd);
    kv a = { .d = d, .cmd = "HGETALL" };
    redisReply *r = NULL;
    int err = one(&a, &r, REDIS_REPLY_ARRAY, false, fn, "HGETALL");
    if (err != 0) {
        return err;
    }
    size_t size = 0;
    err = items_size(d, r, &size, fn);
    size_t count = r->elements / 2;
    unsigned char *block = NULL;
    if (err == 0 && count > 0) {
        block = conc__malloc(size);
        if (block == NULL) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for %zu entries "
                             "(%zu bytes)", fn, count, size);
        }
    }
    if (block != NULL) {
        conc_dict_item *arr = (conc_dict_item *)(void *)block;
        unsigned char *p =
            block + conc__dict_round8(count * sizeof(conc_dict_item));
        for (size_t i = 0; i < count; i++) {
            const redisReply *k = r->element[2 * i];
            const redisReply *v = r->element[2 * i + 1];
            arr[i].key = k->len > 0 ? p : NULL;
            arr[i].klen = k->len;
            if (k->len > 0) {
                memcpy(p, k->str, k->len);
            }
            p += conc__dict_round8(k->len);
            arr[i].val = v->len > 0 ? p : NULL;
            arr[i].vlen = v->len;
            if (v->len > 0) {
                memcpy(p, v->str, v->len);
            }
            p += conc__dict_round8(v->len);
        }
        *items = arr;
        *n = count;
    }
    conc__rreplies_free(&r, 1);
    return err;
}

/* ---- update ------------------------------------------------------------------------ */

/* A value and its version as a reply gave them: {value|nil, version|''}
 * at e[0], e[1].  Checks their types. */
static int value_version(const rd *d, redisReply **e, const char *fn)
{
    if ((e[0]->type != REDIS_REPLY_STRING && e[0]->type != REDIS_REPLY_NIL) ||
        e[1]->type != REDIS_REPLY_STRING || e[1]->len > 20) {
        return conc__fail(CONC_ECORRUPT, "%s: the server at %s answered the "
                          "read with a malformed reply", fn, d->cli.where);
    }
    return 0;
}

static int rd_update(conc__netd *nd, const void *key, size_t klen,
                     conc_dict_update_fn fn_cb, void *arg)
{
    static const char fn[] = "conc_dict_update";
    rd *d = RD(nd);
    kv a = { .d = d, .key = key, .klen = klen, .script = SC_READ };
    redisReply *cur = NULL;
    int err = one(&a, &cur, REDIS_REPLY_ARRAY, false, fn, "the read script");
    if (err == 0 && cur->elements != 2) {
        conc__rreplies_free(&cur, 1);
        err = conc__fail(CONC_ECORRUPT, "%s: the server at %s answered the "
                         "read with a malformed reply", fn, d->cli.where);
    }
    if (err != 0) {
        return err;
    }
    redisReply **vv = cur->element; /* value, version */
    conc_buf out;
    for (int round = 0;; round++) {
        err = value_version(d, vv, fn);
        if (err != 0) {
            break;
        }
        bool found = vv[0]->type == REDIS_REPLY_STRING;
        conc__buf_init(&out, MAX_VAL);
        int rc = conc__buf_outcome(&out, fn_cb(found ? vv[0]->str : NULL,
                                               found ? vv[0]->len : 0, found,
                                               &out, arg));
        if (out.lost != 0 && rc == out.lost) {
            rc = conc__fail(rc, "%s: the update fn's value was cut short "
                            "(%s); the entry is as it was", fn, out.error);
        }
        if (rc != 0) {
            conc__buf_release(&out);
            err = rc;
            break;
        }
        char ver[24];
        size_t verlen = vv[1]->len;
        memcpy(ver, vv[1]->str, verlen);
        kv c = { .d = d, .key = key, .klen = klen, .val = out.data,
                 .vlen = out.len, .ver = ver, .verlen = verlen,
                 .script = SC_CAS };
        redisReply *r = NULL;
        err = one(&c, &r, REDIS_REPLY_ARRAY, false, fn, "the cas script");
        conc__buf_release(&out);
        if (err != 0) {
            break;
        }
        long long ok = -1;
        if (r->elements < 1 || !conc__rreply_int(r->element[0], &ok) ||
            (ok == 0 && r->elements != 3) || (ok == 1 && r->elements != 1)) {
            conc__rreplies_free(&r, 1);
            err = conc__fail(CONC_ECORRUPT, "%s: the server at %s answered "
                             "the cas script with a malformed reply", fn,
                             d->cli.where);
            break;
        }
        if (ok == 1) {
            conc__rreplies_free(&r, 1);
            err = 0;
            break;
        }
        /* Lost the race: try again on the value the CAS saw. */
        conc__rreplies_free(&cur, 1);
        cur = r;
        vv = cur->element + 1;
        if (round == MAX_RETRIES) {
            err = conc__fail(CONC_ETIMEDOUT, "%s: the key kept changing: "
                             "%d attempts lost their race", fn, MAX_RETRIES);
            break;
        }
    }
    conc__rreplies_free(&cur, 1);
    return err;
}

/* ---- free, make ------------------------------------------------------------------- */

static void rd_destroy(rd *d)
{
    conc__rcli_fini(&d->cli);
    free(d->k_val);
    free(d->k_ver);
    free(d->k_meta);
    free(d);
}

static void rd_free(conc__netd *nd)
{
    rd *d = RD(nd);
    conc__rlease_remove(&d->item);
    rd_destroy(d);
}

static void no_renew(conc__ritem *it)
{
    (void)it;
}

static const conc__netd_ops ops = {
    .set = rd_set,
    .get = rd_get,
    .del = rd_del,
    .contains = rd_contains,
    .len = rd_len,
    .keys = rd_keys,
    .items = rd_items,
    .update = rd_update,
    .free = rd_free,
};

typedef struct declare_arg {
    rd *d;
    bool create;
} declare_arg;

static void build_declare(void *ctx, conc__rconn *c)
{
    const declare_arg *a = ctx;
    conc__rconn_evalsha(c, SC_DECLARE, 3, 1);
    conc__rbuf_str(&c->out, a->d->k_val);
    conc__rbuf_str(&c->out, a->d->k_ver);
    conc__rbuf_str(&c->out, a->d->k_meta);
    conc__rbuf_str(&c->out, a->create ? "1" : "0");
}

static int declare(rd *d, bool create, const char *name, const char *fn)
{
    declare_arg a = { d, create };
    redisReply *r = NULL;
    int err = conc__rcli_call(&d->cli, build_declare, &a, &r, 1,
                              until_of(d), fn);
    if (err == 0) {
        err = conc__robj_declared(&d->cli, r, "dict", name, fn);
        conc__rreplies_free(&r, 1);
    }
    return err;
}

int conc__redis_dict_make(conc__netd **out, conc__url *u, const char *name,
                          const conc_dict_opts *opts, bool create)
{
    const char *fn = create ? "conc_dict_new" : "conc_dict_open";
    rd *d = conc__calloc(1, sizeof *d);
    if (d == NULL) {
        conc__url_free(u);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the handle", fn);
    }
    conc_timeout nt = opts != NULL ? opts->net_timeout : (conc_timeout){ 0 };
    int err = conc__rcli_init(&d->cli, u, nt, scripts, SC_N, fn);
    if (err != 0) {
        free(d);
        return err;
    }
    err = conc__robj_name(&d->cli, name, &name, fn);
    if (err == 0) {
        d->k_val = conc__robj_key('d', name, "");
        d->k_ver = conc__robj_key('d', name, ":ver");
        d->k_meta = conc__robj_key('d', name, ":meta");
        if (!d->k_val || !d->k_ver || !d->k_meta) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for key names", fn);
        }
    }
    if (err == 0) {
        err = declare(d, create, name, fn);
    }
    if (err != 0) {
        rd_destroy(d);
        return err;
    }
    d->base.ops = &ops;
    conc__rlease_add(&d->item, &d->cli, no_renew);
    *out = &d->base;
    return 0;
}
