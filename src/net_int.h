/* net_int.h - what the objects served by a server (.url: queue, dict,
 * lock) share with the backends that serve them.
 *
 * Shape.  A conc_queue, conc_dict or conc_lock made with .url (or opened
 * with a URL) is a handle of the usual type whose work is done by a
 * backend: a table of functions (conc__netq_ops, conc__netd_ops,
 * conc__netl_ops) behind a small struct the backend embeds first in its
 * own.  The shared-memory code tests one thing at the top of each public
 * function and hands the call over:
 *   queue: struct conc_queue has a `net` pointer, NULL for shared memory;
 *   dict:  struct conc_dict likewise;
 *   lock:  the handle of a shared-memory lock is its shared page, whose
 *          first word is a magic; a network lock is a heap struct with
 *          another magic in that word (CONC__NETL_MAGIC) and a check word
 *          beside it that only this process can compute (conc__netl_is),
 *          so bytes a peer scribbled on a shared page never pass for a
 *          network lock.
 * Argument checks common to every backend are done here (net_queue.c,
 * net_dict.c, net_lock.c); a backend sees valid arguments only.
 *
 * Backends.  net.c maps a URL's scheme to a backend (conc__net_backend).
 * A backend that was not built (its client library was not found when
 * libconc was compiled) is still in the table with the reason, so a URL
 * for it fails at creation with CONC_EINVAL and a detail that says so.
 * A second backend (amqp:// for the queue) is one more row and one more
 * set of ops: nothing here or in the shared-memory code changes.
 */
#ifndef CONC_NET_INT_H
#define CONC_NET_INT_H

#include "conc_int.h"

/* ---- URLs (net_url.c) ----------------------------------------------------
 * scheme://[user[:password]@]host[:port][/seg[/seg[/seg]]][?k=v[&k=v]]
 * scheme://[user[:password]@]/socket/path[?k=v...]   (unix-like schemes)
 * Every string is percent-decoded, NUL-free and points into one block the
 * struct owns.  The password is a secret: nothing in libconc prints it,
 * and no detail quotes the URL text, only the parts named below. */
#define CONC__URL_SEGS 3
#define CONC__URL_QUERY 4
#define CONC__URL_MAX 2048

typedef struct conc__url {
    char scheme[16];  /* lower case */
    char *user;       /* NULL when not given */
    char *password;   /* NULL when not given; secret */
    char *host;       /* NULL for a socket path; IPv6 without brackets */
    unsigned port;    /* 0 when not given */
    char *path;       /* the socket path (scheme with a path authority) */
    char *seg[CONC__URL_SEGS];
    size_t nseg;
    struct {
        char *key;
        char *val;
    } query[CONC__URL_QUERY];
    size_t nquery;
    char *block_;     /* owns every string above */
} conc__url;

/* Whether s looks like a URL ("scheme://..."), as opposed to a shared-
 * memory name: conc_X_open dispatches on this. */
bool conc__url_is(const char *s);
/* Parses s.  path_authority: the scheme names a socket path where others
 * name a host (unix://).  0; CONC_EINVAL with a detail that starts with
 * fn and never quotes the user information; CONC_ENOMEM. */
int conc__url_parse(conc__url *u, const char *s, bool path_authority,
                    const char *fn);
void conc__url_free(conc__url *u);
/* The value of query key k, or NULL. */
const char *conc__url_query(const conc__url *u, const char *k);
/* Whether name may be an object's name on a server: 1..200 bytes of
 * printable ASCII other than '/', '{', '}' and space.  On failure sets a
 * detail starting with fn. */
int conc__net_name_check(const char *name, const char *fn);

/* ---- queue ---------------------------------------------------------------- */
typedef struct conc__netq conc__netq;
typedef struct conc__netq_ops {
    int (*put_many)(conc__netq *q, const conc_msg *msgs, size_t n,
                    size_t *done, double timeout, const char *fn);
    /* Into *msg when msg is not NULL, else into buf/cap (*len set, also
     * on CONC_ETOOBIG). */
    int (*get)(conc__netq *q, conc_msg *msg, void *buf, size_t cap,
               size_t *len, double timeout);
    int (*get_many)(conc__netq *q, conc_msg *msgs, size_t n, size_t *got,
                    double timeout);
    int (*qsize)(conc__netq *q, size_t *n, const char *fn);
    int (*task_done)(conc__netq *q);
    int (*join)(conc__netq *q, double timeout);
    int (*close)(conc__netq *q);
    int (*closed)(conc__netq *q, bool *closed);
    void (*free)(conc__netq *q);
} conc__netq_ops;
struct conc__netq {
    const conc__netq_ops *ops;
    size_t maxsize; /* the queue's, as the server has it */
};

int conc__netq_new(conc_queue **out, const conc_queue_opts *opts);
int conc__netq_open(conc_queue **out, const char *url);
int conc__netq_put(conc__netq *q, const void *data, size_t len,
                   double timeout);
int conc__netq_put_many(conc__netq *q, const conc_msg *msgs, size_t n,
                        size_t *done, double timeout);
int conc__netq_get(conc__netq *q, conc_msg *msg, double timeout);
int conc__netq_get_into(conc__netq *q, void *buf, size_t cap, size_t *len,
                        double timeout);
int conc__netq_get_many(conc__netq *q, conc_msg *msgs, size_t n,
                        size_t *got, double timeout);
size_t conc__netq_qsize(conc__netq *q);
bool conc__netq_empty(conc__netq *q);
bool conc__netq_full(conc__netq *q);
int conc__netq_task_done(conc__netq *q);
int conc__netq_join(conc__netq *q, double timeout);
int conc__netq_close(conc__netq *q);
bool conc__netq_closed(conc__netq *q);
/* Frees the whole conc_queue handle whose net this is. */
void conc__netq_free(conc_queue *q);

/* ---- dict ----------------------------------------------------------------- */
typedef struct conc__netd conc__netd;
typedef struct conc__netd_ops {
    int (*set)(conc__netd *d, const void *key, size_t klen, const void *val,
               size_t vlen);
    /* Into *msg when msg is not NULL, else into buf/cap (*len set). */
    int (*get)(conc__netd *d, const void *key, size_t klen, conc_msg *msg,
               void *buf, size_t cap, size_t *len);
    int (*del)(conc__netd *d, const void *key, size_t klen);
    int (*contains)(conc__netd *d, const void *key, size_t klen,
                    bool *yes);
    int (*len)(conc__netd *d, size_t *n);
    int (*keys)(conc__netd *d, conc_msg **keys, size_t *n);
    /* One snapshot, laid out as the shared-memory dict's (one heap block
     * that conc_dict_array_free frees; key/val NULL when empty, else
     * 8-aligned); *items and *n are NULL and 0 on entry. */
    int (*items)(conc__netd *d, conc_dict_item **items, size_t *n);
    int (*update)(conc__netd *d, const void *key, size_t klen,
                  conc_dict_update_fn fn, void *arg);
    void (*free)(conc__netd *d);
} conc__netd_ops;
struct conc__netd {
    const conc__netd_ops *ops;
};

/* Makes or opens the server's dict (create: conc_dict_new); *out gets the
 * backend's object, which dict.c wraps in its handle. */
int conc__netd_new(conc__netd **out, const conc_dict_opts *opts);
int conc__netd_open(conc__netd **out, const char *url);
int conc__netd_set(conc__netd *d, const void *key, size_t klen,
                   const void *val, size_t vlen);
int conc__netd_get(conc__netd *d, const void *key, size_t klen,
                   conc_msg *msg);
int conc__netd_get_into(conc__netd *d, const void *key, size_t klen,
                        void *buf, size_t cap, size_t *len);
int conc__netd_del(conc__netd *d, const void *key, size_t klen);
bool conc__netd_contains(conc__netd *d, const void *key, size_t klen);
size_t conc__netd_len(conc__netd *d);
int conc__netd_keys(conc__netd *d, conc_msg **keys, size_t *n);
int conc__netd_items(conc__netd *d, conc_dict_item **items, size_t *n);
int conc__netd_update(conc__netd *d, const void *key, size_t klen,
                      conc_dict_update_fn fn, void *arg);
void conc__netd_free(conc__netd *d);

/* ---- lock ----------------------------------------------------------------- */
#define CONC__NETL_MAGIC 0x4b434c4eu /* "NLCK" */
typedef struct conc__netl conc__netl;
typedef struct conc__netl_ops {
    int (*acquire)(conc__netl *l, double timeout);
    int (*release)(conc__netl *l);
    int (*locked)(conc__netl *l, bool *yes);
    int (*fence)(conc__netl *l, uint64_t *token);
    void (*free)(conc__netl *l);
} conc__netl_ops;
/* The first fields of every network lock: magic where a shared-memory
 * lock has its magic, then the check word (the struct's own address
 * mixed with a per-process secret), then the ops. */
struct conc__netl {
    uint32_t magic;
    uint32_t reserved;
    uint64_t check;
    const conc__netl_ops *ops;
};
/* The secret behind every check word: random, made when the process
 * makes its first network lock (forked children inherit it with the
 * handles); 0 until then, and no check word is ever 0's.  Relaxed loads:
 * a lock's check word was written before its handle was handed out. */
extern _Atomic uint64_t conc__netl_secret;
/* Whether l (a conc_lock handle) is a network lock.  Costs one compare on
 * the shared-memory path: the word read is on the line the lock's CAS
 * takes anyway. */
static inline bool conc__netl_is(const conc_lock *l)
{
    if (__builtin_expect(*(const uint32_t *)(const void *)l !=
                             CONC__NETL_MAGIC,
                         1)) {
        return false;
    }
    const conc__netl *n = (const conc__netl *)(const void *)l;
    uint64_t s = atomic_load_explicit(&conc__netl_secret,
                                      memory_order_relaxed);
    return s != 0 && n->check == ((uint64_t)(uintptr_t)n ^ s);
}
/* Seals a network lock's first fields (the backend calls it once). */
void conc__netl_seal(conc__netl *n, const conc__netl_ops *ops);

int conc__netl_new(conc_lock **out, const conc_lock_opts *opts);
int conc__netl_open(conc_lock **out, const char *url);
int conc__netl_acquire(conc_lock *l, double timeout);
int conc__netl_release(conc_lock *l);
bool conc__netl_locked(conc_lock *l);
void conc__netl_free(conc_lock *l);

/* ---- backends (net.c) ----------------------------------------------------- */
typedef struct conc__net_backend {
    const char *scheme;
    bool path_authority;  /* unix://: a socket path where a host goes */
    const char *missing;  /* why it is not in this build, or NULL */
    /* create: conc_X_new (make it, or attach if it exists alike);
     * otherwise conc_X_open (attach; absent is an error).  The backend
     * takes u over (frees it, also on failure). */
    int (*queue)(conc__netq **out, conc__url *u, const char *name,
                 const conc_queue_opts *opts, bool create);
    int (*dict)(conc__netd **out, conc__url *u, const char *name,
                const conc_dict_opts *opts, bool create);
    int (*lock)(conc__netl **out, conc__url *u, const char *name,
                const conc_lock_opts *opts, bool create);
} conc__net_backend;

typedef enum { CONC__NET_QUEUE, CONC__NET_DICT, CONC__NET_LOCK } conc__net_kind;

/* Parses url and finds its backend for an object of kind.  The backend
 * then reads the object's name from .name (conc_X_new) or from the URL's
 * path (conc_X_open; each backend says which segment is the name).  0,
 * or CONC_EINVAL with a detail (not a URL, unknown scheme, backend not
 * built, no such object kind there, bad URL); CONC_ENOMEM. */
int conc__net_resolve(const char *url, conc__net_kind kind,
                      const conc__net_backend **b, conc__url *u,
                      const char *fn);

/* Round trips made to servers by this process so far (every backend
 * counts each exchange; relaxed): the tests count them. */
extern _Atomic uint64_t conc__net_trips;
uint64_t conc__net_round_trips(void);

/* Checks the options every object on a server takes: lease (left out:
 * the default; set, it must be a number of seconds > 0: 0, CONC_FOREVER,
 * NaN and other negatives are CONC_EINVAL) and net_timeout.  A backend
 * reads the lease as conc__timeout_opt(opts->lease, 0), 0 meaning "the
 * default" (or, attaching, the lease the object was made with). */
int conc__net_opts_check(conc_timeout lease, conc_timeout net_timeout,
                         const char *fn);

/* Whether libconc was built with the backend for scheme (tests). */
bool conc__net_backend_built(const char *scheme);

#endif
