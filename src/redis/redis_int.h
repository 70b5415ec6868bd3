/* redis_int.h - what the Redis backend's files share: the client of one
 * server (a handle's pool of connections), the RESP command writer, the
 * per-process lease renewer and fork generation, and the entry points
 * net.c's backend table names.
 *
 *   redis_conn.c    connections: connect, handshake (HELLO, AUTH, SELECT,
 *                   SCRIPT LOAD), the timed exchange of a pipeline, error
 *                   replies, the pool of a handle
 *   redis_lease.c   the registry of live handles, the lease renewer
 *                   thread, fork handling
 *   redis_obj.c     an object's name, key names and declaration
 *   redis_queue.c   conc_queue on Redis
 *   redis_dict.c    conc_dict on Redis
 *   redis_lock.c    conc_lock on Redis
 *
 * Only the RESP reader of hiredis is used (redisReader: a parser of
 * server replies); sockets, deadlines and the command encoding are
 * libconc's own (os_linux_net.c, below), so that every wait is bounded
 * by the caller's deadline, a signal never cuts one short, no SIGPIPE is
 * ever raised, and fault loops reach every OS call.
 */
#ifndef CONC_REDIS_INT_H
#define CONC_REDIS_INT_H

#include "../net_int.h"

#include <hiredis/hiredis.h>
#include <pthread.h>

/* ---- entry points (net.c's table) --------------------------------------- */
int conc__redis_queue_make(conc__netq **out, conc__url *u, const char *name,
                           const conc_queue_opts *opts, bool create);
int conc__redis_dict_make(conc__netd **out, conc__url *u, const char *name,
                          const conc_dict_opts *opts, bool create);
int conc__redis_lock_make(conc__netl **out, conc__url *u, const char *name,
                          const conc_lock_opts *opts, bool create);

/* ---- time ------------------------------------------------------------------ */
#define CONC__R_FOREVER UINT64_MAX
/* The absolute conc__now_ns() deadline seconds from now (CONC_FOREVER,
 * +inf or over 1e9 s: CONC__R_FOREVER). */
uint64_t conc__r_until(double seconds);
/* Seconds from now until until (0 when passed; huge for forever). */
double conc__r_left(uint64_t until);
/* Sleeps until min(now + ns, until); signals do not cut it short. */
void conc__r_nap(uint64_t ns, uint64_t until);

/* ---- RESP commands ---------------------------------------------------------
 * A growable buffer of commands in RESP (arrays of bulk strings), built
 * in place: the header, then each argument.  An allocation failure sets
 * oom and makes the rest no-ops; the exchange then fails with
 * CONC_ENOMEM, so builders need not check each call. */
typedef struct conc__rbuf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
} conc__rbuf;
void conc__rbuf_cmd(conc__rbuf *b, size_t argc);
void conc__rbuf_arg(conc__rbuf *b, const void *p, size_t n);
/* One argument made of two parts (a tag byte and a message, say). */
void conc__rbuf_arg2(conc__rbuf *b, const void *p1, size_t n1,
                     const void *p2, size_t n2);
void conc__rbuf_str(conc__rbuf *b, const char *s);
void conc__rbuf_u64(conc__rbuf *b, uint64_t v);
/* Seconds with millisecond precision, rounded up ("0.251"). */
void conc__rbuf_secs(conc__rbuf *b, double s);
void conc__rbuf_free(conc__rbuf *b);

/* ---- scripts -----------------------------------------------------------------
 * The Lua scripts of one kind of object, loaded on each connection at
 * its handshake (SCRIPT LOAD); EVALSHA then names them by the sha the
 * server returned.  A script flushed from the server (SCRIPT FLUSH, a
 * failover) answers NOSCRIPT: the connection is dropped and the next one
 * loads them again. */
#define CONC__RSCRIPTS_MAX 8
typedef struct conc__rscript {
    const char *name; /* for details */
    const char *body;
} conc__rscript;

/* ---- connections and the client of one server ----------------------------- */
typedef struct conc__rconn {
    int fd;
    redisReader *rd;
    /* rd's reply constructors: hiredis's own, but an array announcing
     * more than CONC__R_MAX_ELEMENTS is refused (redis_conn.c). */
    redisReplyObjectFunctions fns;
    bool too_long;          /* fns refused an array: not a lack of memory */
    conc__rbuf out;         /* commands not yet sent */
    char sha[CONC__RSCRIPTS_MAX][41];
    uint64_t gen;           /* fork generation it was opened in */
    struct conc__rconn *next_idle;
    struct conc__rconn *next_all;
} conc__rconn;

typedef struct conc__rcli {
    conc__url url;          /* owned; holds the password */
    char where[280];        /* "host:port" or the socket path: details */
    conc__sockaddr addr[4]; /* resolved when the handle was made */
    int naddr;
    unsigned db;
    double net_timeout;     /* seconds; CONC_FOREVER allowed */
    const conc__rscript *scripts;
    size_t nscripts;
    pthread_mutex_t mu;     /* the pool and the owning handle's state */
    conc__rconn *idle;
    unsigned nidle;
    conc__rconn *all;       /* every connection this process opened */
    uint64_t gen;           /* fork generation of the connections */
} conc__rcli;

/* Fills cli from u (which it takes over: freed by conc__rcli_fini, or
 * here on failure): the address (resolved now: a name lookup never runs
 * inside a timed call), the db, the net timeout, the scripts.  0;
 * CONC_EINVAL (bad db, unknown query key, unresolvable host); CONC_ESYS
 * (the mutex); CONC_ENOMEM. */
int conc__rcli_init(conc__rcli *cli, conc__url *u, conc_timeout net_timeout,
                    const conc__rscript *scripts, size_t nscripts,
                    const char *fn);
/* The object's name as the URL gives it (redis://h/db/NAME, or
 * unix://...?name=NAME), or NULL. */
const char *conc__rcli_url_name(const conc__rcli *cli);
/* Closes every connection of this process; frees u. */
void conc__rcli_fini(conc__rcli *cli);
/* The deadline of one round trip of a call with timeout t and deadline
 * dl (conc__r_until(t), taken when the call began): dl when t is finite
 * and > 0, so that the call's tries share its time (but not sooner than
 * CONC__R_LAST_TRIP_S from now: a try made as the time runs out can still
 * be answered, by a server a long way off too: a lock granted by a try
 * whose answer came too late would stay granted to nobody for a lease);
 * else net_timeout from now. */
#define CONC__R_LAST_TRIP_S 0.25
uint64_t conc__rcli_until(const conc__rcli *cli, double t, uint64_t dl);

/* Takes a connection: an idle one that is still open, or a new one
 * (connect and handshake until `until`).  0; CONC_ENET (refused,
 * unreachable, closed during the handshake), CONC_ETIMEDOUT, CONC_EAUTH
 * (wrong or missing password), CONC_EINVAL (server too old, no such db),
 * CONC_ENOMEM. */
int conc__rcli_take(conc__rcli *cli, conc__rconn **out, uint64_t until,
                    const char *fn);
/* Gives a connection back: to the idle list when ok, else closed (after
 * a failed exchange its stream is out of step). */
void conc__rcli_give(conc__rcli *cli, conc__rconn *c, bool ok);

/* One round trip on a pooled or new connection: build(ctx, c) appends n
 * commands to c->out; their replies land in rep[0..n-1] (free them with
 * conc__rreplies_free).  Commands are sent once, except when every
 * script call answered NOSCRIPT (the server lost the scripts: nothing of
 * them ran), which is retried once on a fresh connection that loads them
 * again.  Errors as conc__rcli_take and conc__rconn_exchange. */
typedef void (*conc__rbuild)(void *ctx, conc__rconn *c);
int conc__rcli_call(conc__rcli *cli, conc__rbuild build, void *ctx,
                    redisReply **rep, size_t n, uint64_t until,
                    const char *fn);
/* Appends "EVALSHA <sha of script i> nkeys" and returns nothing: the
 * caller appends the nkeys keys and then the other arguments; argc is
 * the total count after EVALSHA's own three. */
void conc__rconn_evalsha(conc__rconn *c, size_t i, size_t nkeys,
                         size_t nrest);
/* Sends what c->out holds and reads n replies into rep[0..n-1] (the
 * caller frees each with freeReplyObject), waiting until `until`.  0;
 * CONC_ENET (connection broken or refused mid-way), CONC_ETIMEDOUT (no
 * full answer in time), CONC_ECORRUPT (a reply that is not RESP),
 * CONC_ENOMEM.  On failure rep[] holds NULLs and the connection must be
 * given back with ok = false. */
int conc__rconn_exchange(conc__rcli *cli, conc__rconn *c, redisReply **rep,
                         size_t n, uint64_t until, const char *fn);
/* Frees rep[0..n-1] (NULLs allowed) and zeroes them. */
void conc__rreplies_free(redisReply **rep, size_t n);

/* The code an error reply stands for, with a detail naming fn and what
 * (the command): CONC_EAUTH (NOAUTH, WRONGPASS), CONC_ECORRUPT
 * (WRONGTYPE: someone else's key under the object's name), CONC_ENOMEM
 * (OOM: maxmemory reached), CONC_ENET (anything else, the server's text
 * quoted), or CONC__RNOSCRIPT (internal: the scripts were flushed). */
#define CONC__RNOSCRIPT (-1999)
int conc__rreply_err(const conc__rcli *cli, const redisReply *r,
                     const char *fn, const char *what);
/* Checks a reply's type: 0 when it is type (REDIS_REPLY_*), or nil and
 * nil_ok; otherwise the error reply's code, or CONC_ECORRUPT for any
 * other type, with a detail. */
int conc__rreply_want(const conc__rcli *cli, const redisReply *r, int type,
                      bool nil_ok, const char *fn, const char *what);
/* An integer reply, or a bulk string of decimal digits, as an int64;
 * false for anything else, a string out of long long's range included. */
bool conc__rreply_int(const redisReply *r, long long *v);

/* ---- objects (redis_obj.c) -------------------------------------------------- */
/* Whether r is the bulk string s. */
bool conc__rreply_is(const redisReply *r, const char *s);
/* The object's name: .name (name) or the URL's; they must agree, and the
 * name must pass conc__net_name_check.  0 or CONC_EINVAL. */
int conc__robj_name(const conc__rcli *cli, const char *name,
                    const char **out, const char *fn);
/* The lease an object's options ask for (opts_lease: the .lease option, or
 * NULL when no options were given), in seconds: left out means 30 s;
 * outside [0.1 s, 1e6 s] is CONC_EINVAL with a detail naming fn. */
int conc__robj_lease(const conc_timeout *opts_lease, double *lease,
                     const char *fn);
/* "conc:{KIND:NAME}SUFFIX", heap (NULL when out of memory). */
char *conc__robj_key(char kind, const char *name, const char *suffix);
/* Reads a declare script's answer: 0 for {'new'|'old', ...} (the caller
 * reads what follows), else CONC_EINVAL (no such object; a key of another
 * type; another kind or layout) or CONC_ECORRUPT, with a detail. */
int conc__robj_declared(const conc__rcli *cli, const redisReply *r,
                        const char *kind, const char *name, const char *fn);

/* ---- handles, leases and fork (redis_lease.c) ------------------------------
 * Every handle of the backend registers an item at creation and removes
 * it at free.  The registry serves two ends:
 *   fork: a pthread_atfork prepare handler takes the registry's lock and
 *     every handle's mu, so no mutex is copied locked into a child; the
 *     child handler re-initialises them, clears every item's renewal and
 *     bumps the fork generation, after which each handle of the child
 *     drops its parent's connections and per-process state at its next
 *     call (conc__rlease_gen() differs from the handle's);
 *   leases: an armed item is renewed every period_ns by one background
 *     thread per process (renew(it) is the handle's own round trip),
 *     started when the first item is armed. */
typedef struct conc__ritem conc__ritem;
struct conc__ritem {
    conc__ritem *next;
    conc__ritem *prev;
    conc__rcli *cli;
    /* Renews the handle's leases; a failure is retried at the next
     * period (the lease outlives two failed renewals). */
    void (*renew)(conc__ritem *it);
    uint64_t period_ns; /* 0: not armed (guarded by the registry lock) */
    uint64_t due_ns;
    int busy;           /* the renewer is inside renew(it) */
    bool listed;
};
void conc__rlease_add(conc__ritem *it, conc__rcli *cli,
                      void (*renew)(conc__ritem *it));
/* Arms (period_ns > 0: first renewal one period from now) or disarms.
 * 0, or CONC_ESYS when the renewer thread cannot be started (the item is
 * armed all the same, and starting is tried again at the next arm). */
int conc__rlease_arm(conc__ritem *it, uint64_t period_ns, const char *fn);
/* Unlists it, waiting for a renewal of it in progress (bounded by that
 * renewal's own deadline). */
void conc__rlease_remove(conc__ritem *it);
/* The fork generation: bumped in every child. */
uint64_t conc__rlease_gen(void);

#endif
