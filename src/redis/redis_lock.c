/* redis_lock.c - conc_lock served by Redis: a leased lock with a token,
 * a fencing number, and Python's Lock semantics where a lease allows.
 *
 * KEYS (one hash tag per lock):
 *   conc:{l:NAME}          string: the holder's token, with a TTL of the
 *                          lease (SET NX PX); absent = free
 *   conc:{l:NAME}:owner    string: the holder's token, no TTL: the owner
 *                          record.  Set at each grant (with '+' after the
 *                          token when the grant found the previous
 *                          holder dead), deleted at release.
 *   conc:{l:NAME}:fence    counter: +1 at each grant (INCR); the grant's
 *                          value is its fencing token.  A missing counter
 *                          starts from the server's clock in microseconds
 *                          (TIME), not 0: after a FLUSHALL, an eviction or
 *                          a restart without persistence the numbers go
 *                          on above those granted before (less than one
 *                          grant a microsecond since), so a resource that
 *                          remembers one does not refuse every new holder
 *   conc:{l:NAME}:wake     list: a release pushes one element here
 *                          (trimmed to one); waiters BLPOP it
 *   conc:{l:NAME}:meta     hash: kind=lock, layout=1, lease (the maker's,
 *                          ms: an opener without its own takes it)
 *
 * ACQUIRE is one script, one round trip: SET NX PX with a fresh random
 * token; on success INCR the fence and read-then-overwrite the owner
 * record.  An acquire that fails with the grant perhaps made (its answer
 * lost) gives it back (give_back()), so no lock stays granted to nobody.  An owner record found at a grant means the previous holder's
 * key ran out without a release: it died (SIGKILL, a lost host) or was
 * stopped past its lease.  The grant then returns CONC_EOWNERDEAD, as the
 * shared-memory lock does for a dead holder, holding the lock.  On
 * failure the script returns the holder's PTTL, and the acquirer waits
 * in BLPOP on the wake list for at most that long (a dead holder's lease
 * ends then), a slice of 2 s, and what is left of its timeout, then
 * tries again.  RELEASE is one script: delete the key and the owner
 * record if the key still holds our token, and push a wake-up; otherwise
 * CONC_EPERM (the lease ran out: someone may have held the lock since),
 * deleting our owner record if it is still ours (nobody took the lock in
 * between, so nobody must be told a holder died).  So an uncontended
 * acquire and release cost two round trips.
 *
 * LEASE.  The key's TTL is the lease (30 s by default); the process's
 * lease thread (redis_lease.c) extends it every lease/3 while the handle
 * holds the lock (PEXPIRE if the token still matches).  A killed holder
 * stops extending; the lock frees itself within a lease, and the next
 * acquire gets CONC_EOWNERDEAD.  What no lease lock can promise: a holder
 * stopped (SIGSTOP, swap, a frozen VM) or cut off for longer than its
 * lease still believes it holds the lock while another process holds it.
 * Its release then returns CONC_EPERM, too late.  The fencing number is
 * the remedy: the holder passes it with each write to the protected
 * resource, which refuses numbers lower than one it has seen.
 *
 * WHO MAY RELEASE.  Python lets any thread or process release a held
 * Lock, and so does this: the handle that acquired (any of its threads,
 * or a child forked while it held the lock) releases its own grant, with
 * its token (CONC_EPERM when the lease ran out meanwhile: someone may
 * have held the lock since); any other handle releases whoever holds it
 * (release_any: CONC_EPERM only when the lock is free).  The holder then
 * finds its grant gone: its renewals stop, and its own release says
 * CONC_EPERM, as after a lost lease.
 *
 * State (held, token, fence) is guarded by cli.mu; the lease item is
 * armed after a grant and disarmed after a release, outside cli.mu (the
 * lock order of redis_lease.c).
 */
#include "redis_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE_S 2.0
#define GRACE_S 1.0

/* Lua, for the scripts that free the lock: one element on the wake list
 * (KEYS[3]), which a waiter's BLPOP takes, trimmed to one and kept a
 * minute. */
#define WAKE_ONE                                                           \
    "  redis.call('LPUSH', KEYS[3], '1')\n"                                \
    "  redis.call('LTRIM', KEYS[3], 0, 0)\n"                               \
    "  redis.call('PEXPIRE', KEYS[3], 60000)\n"

enum { SC_DECLARE, SC_ACQUIRE, SC_RELEASE, SC_RENEW, SC_UNDO,
       SC_RELEASE_ANY, SC_N };

static const conc__rscript scripts[SC_N] = {
    [SC_DECLARE] = { "declare",
        /* KEYS: key, owner, fence, wake, meta.  ARGV: create (1/0), the
         * maker's lease in ms.  {status, the lease its maker gave (ms,
         * '' for a lock made before locks kept theirs)} or {'type', key,
         * type}. */
        "local want = {'string', 'string', 'string', 'list', 'hash'}\n"
        "for i = 1, 5 do\n"
        "  local t = redis.call('TYPE', KEYS[i])['ok']\n"
        "  if t ~= 'none' and t ~= want[i] then return {'type', KEYS[i], t} end\n"
        "end\n"
        "if redis.call('EXISTS', KEYS[5]) == 0 then\n"
        "  if ARGV[1] == '0' then return {'missing'} end\n"
        "  redis.call('HSET', KEYS[5], 'kind', 'lock', 'layout', '1',\n"
        "             'lease', ARGV[2])\n"
        "  return {'new', ARGV[2]}\n"
        "end\n"
        "local m = redis.call('HMGET', KEYS[5], 'kind', 'layout', 'lease')\n"
        "if m[1] ~= 'lock' or m[2] ~= '1' then return {'kind'} end\n"
        "return {'old', m[3] or ''}\n" },
    [SC_ACQUIRE] = { "acquire",
        /* KEYS: key, owner, fence.  ARGV: token, lease ms.
         * {1, fence, owner record found} or {0, the holder's PTTL}.
         * replicate_commands: Redis 6.2 refuses writes after TIME in a
         * script replicated whole (7.0 always replicates effects). */
        "redis.replicate_commands()\n"
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
        "  if redis.call('EXISTS', KEYS[3]) == 0 then\n"
        "    local t = redis.call('TIME')\n"
        "    redis.call('SET', KEYS[3], string.format('%.0f',\n"
        "               tonumber(t[1]) * 1000000 + tonumber(t[2])))\n"
        "  end\n"
        "  local fence = redis.call('INCR', KEYS[3])\n"
        "  local dead = redis.call('EXISTS', KEYS[2])\n"
        "  redis.call('SET', KEYS[2], dead == 1 and ARGV[1] .. '+' or "
        "ARGV[1])\n"
        "  return {1, fence, dead}\n"
        "end\n"
        "return {0, redis.call('PTTL', KEYS[1])}\n" },
    [SC_RELEASE] = { "release",
        /* KEYS: key, owner, wake.  ARGV: token.  1 released, 0 not ours
         * (the lease ran out). */
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  redis.call('DEL', KEYS[1], KEYS[2])\n"
        WAKE_ONE
        "  return 1\n"
        "end\n"
        "local o = redis.call('GET', KEYS[2])\n"
        "if o == ARGV[1] or o == ARGV[1] .. '+' then\n"
        "  redis.call('DEL', KEYS[2])\n"
        "end\n"
        "return 0\n" },
    [SC_UNDO] = { "undo",
        /* KEYS: key, owner, wake.  ARGV: token.  A grant to token whose
         * answer was lost (give_back()): the key goes (and a waiter is
         * woken) as at a release; the owner record goes too, unless that
         * grant found a holder that had died (the '+' the acquire script
         * added), whose death the next acquirer must still be told. */
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  redis.call('DEL', KEYS[1])\n"
        WAKE_ONE
        "end\n"
        "local o = redis.call('GET', KEYS[2])\n"
        "if o == ARGV[1] then\n"
        "  redis.call('DEL', KEYS[2])\n"
        "elseif o == ARGV[1] .. '+' then\n"
        "  redis.call('SET', KEYS[2], 'died')\n"
        "end\n"
        "return 0\n" },
    [SC_RELEASE_ANY] = { "release_any",
        /* KEYS: key, owner, wake.  Whoever holds it: 1 released, 0 it
         * was free. */
        "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
        "  redis.call('DEL', KEYS[1], KEYS[2])\n"
        WAKE_ONE
        "  return 1\n"
        "end\n"
        "return 0\n" },
    [SC_RENEW] = { "renew",
        /* KEYS: key.  ARGV: token, lease ms.  1 extended, 0 lost. */
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "end\n"
        "return 0\n" },
};

typedef struct rl {
    conc__netl base;
    conc__rcli cli;
    conc__ritem item;
    uint64_t lease_ms;
    char *k_key;
    char *k_owner;
    char *k_fence;
    char *k_wake;
    char *k_meta;
    /* guarded by cli.mu */
    bool held;
    char token[33];
    uint64_t fence;
} rl;

#define RL(l) ((rl *)(void *)(l))

static void new_token(char token[33])
{
    snprintf(token, 33, "%016llx%016llx",
             (unsigned long long)conc__os_random64(),
             (unsigned long long)conc__os_random64());
}

/* ---- acquire ------------------------------------------------------------------- */

/* A lock and a grant's token, for the scripts that take both. */
typedef struct try_arg {
    rl *l;
    const char *token;
} try_arg;

static void build_acquire(void *ctx, conc__rconn *c)
{
    const try_arg *a = ctx;
    conc__rconn_evalsha(c, SC_ACQUIRE, 3, 2);
    conc__rbuf_str(&c->out, a->l->k_key);
    conc__rbuf_str(&c->out, a->l->k_owner);
    conc__rbuf_str(&c->out, a->l->k_fence);
    conc__rbuf_str(&c->out, a->token);
    conc__rbuf_u64(&c->out, a->l->lease_ms);
}

/* One attempt: 1 granted (*dead: the owner record was there), 0 held by
 * someone (*pttl: what is left of their lease, ms; -1 none, -2 gone), or
 * an error. */
static int try_once(rl *l, const char *token, uint64_t until, bool *dead,
                    uint64_t *fence, long long *pttl, const char *fn)
{
    try_arg a = { l, token };
    redisReply *r = NULL;
    int err = conc__rcli_call(&l->cli, build_acquire, &a, &r, 1, until, fn);
    if (err != 0) {
        return err;
    }
    err = conc__rreply_want(&l->cli, r, REDIS_REPLY_ARRAY, false, fn,
                            "the acquire script");
    long long got = -1, v = 0, d = 0;
    if (err == 0 &&
        (r->elements < 2 || !conc__rreply_int(r->element[0], &got) ||
         !conc__rreply_int(r->element[1], &v) ||
         (got == 1 &&
          (r->elements != 3 || !conc__rreply_int(r->element[2], &d) ||
           v <= 0)))) {
        err = conc__fail(CONC_ECORRUPT, "%s: the server at %s answered the "
                         "acquire script with a malformed reply", fn,
                         l->cli.where);
    }
    conc__rreplies_free(&r, 1);
    if (err != 0) {
        return err;
    }
    if (got == 1) {
        *dead = d == 1;
        *fence = (uint64_t)v;
        return 1;
    }
    *pttl = v;
    return 0;
}

typedef struct wait_arg {
    rl *l;
    double block;
} wait_arg;

static void build_wait(void *ctx, conc__rconn *c)
{
    const wait_arg *a = ctx;
    conc__rbuf_cmd(&c->out, 3);
    conc__rbuf_str(&c->out, "BLPOP");
    conc__rbuf_str(&c->out, a->l->k_wake);
    conc__rbuf_secs(&c->out, a->block);
}

/* One of the scripts that free the lock (SC_RELEASE, SC_UNDO, with a
 * grant's token; SC_RELEASE_ANY, token NULL): KEYS key, owner, wake. */
typedef struct free_arg {
    const rl *l;
    size_t script;
    const char *token;
} free_arg;

static void build_free(void *ctx, conc__rconn *c)
{
    const free_arg *a = ctx;
    conc__rconn_evalsha(c, a->script, 3, a->token != NULL ? 1 : 0);
    conc__rbuf_str(&c->out, a->l->k_key);
    conc__rbuf_str(&c->out, a->l->k_owner);
    conc__rbuf_str(&c->out, a->l->k_wake);
    if (a->token != NULL) {
        conc__rbuf_str(&c->out, a->token);
    }
}

/* Runs that script by until: 0 with *v its answer (1 freed, 0 not), or
 * an error with its detail. */
static int run_free(rl *l, size_t script, const char *token, uint64_t until,
                    long long *v, const char *fn)
{
    free_arg a = { l, script, token };
    redisReply *r = NULL;
    int err = conc__rcli_call(&l->cli, build_free, &a, &r, 1, until, fn);
    if (err != 0) {
        return err;
    }
    err = conc__rreply_want(&l->cli, r, REDIS_REPLY_INTEGER, false, fn,
                            "the release script");
    *v = err == 0 ? r->integer : -1;
    conc__rreplies_free(&r, 1);
    return err;
}

/* An attempt failed after its script may have run (the connection broke,
 * or the reply could not be read: no memory, or bytes that lie): the
 * server may have granted the lock to token, which no handle knows, so
 * that even this handle's next acquire would wait for it until its lease
 * ran out, and then report a dead holder.  So the grant, if there was
 * one, is given back with the undo script (which touches nothing that is
 * not token's, and keeps a death that grant found for the next acquirer
 * to be told), on a connection of its own, within 1 s and without a
 * word: the acquire's own error stands.  Not after CONC_ETIMEDOUT: a
 * server that did not answer in time would not answer this either, and
 * the call must end by its timeout (the lease frees the lock). */
static void give_back(rl *l, const char *token, int err)
{
    if (err == CONC_ETIMEDOUT) {
        return;
    }
    conc__detail_kept kept;
    conc__detail_keep(&kept);
    double t = l->cli.net_timeout < 1.0 ? l->cli.net_timeout : 1.0;
    long long v;
    (void)run_free(l, SC_UNDO, token, conc__r_until(t), &v,
                   "conc_lock_acquire");
    conc__detail_put_back(&kept); /* the acquire's, whatever this did */
}

static int rl_acquire(conc__netl *nl, double timeout)
{
    rl *l = RL(nl);
    static const char fn[] = "conc_lock_acquire";
    bool once = timeout == 0;
    uint64_t dl = conc__r_until(timeout);
    char token[33];
    new_token(token);
    for (;;) {
        bool dead = false;
        uint64_t fence = 0;
        long long pttl = 0;
        int got = try_once(l, token,
                           conc__rcli_until(&l->cli, timeout, dl), &dead,
                           &fence, &pttl, fn);
        if (got < 0) {
            give_back(l, token, got);
            return got;
        }
        if (got == 1) {
            pthread_mutex_lock(&l->cli.mu);
            l->held = true;
            memcpy(l->token, token, sizeof l->token);
            l->fence = fence;
            pthread_mutex_unlock(&l->cli.mu);
            int err = conc__rlease_arm(&l->item, l->lease_ms * 1000000u / 3,
                                       fn);
            if (err != 0) {
                return err; /* held, but its lease will not be renewed */
            }
            if (dead) {
                return conc__fail(CONC_EOWNERDEAD, "%s: acquired; the "
                                  "previous holder's lease ran out without "
                                  "a release (it died, or was stopped past "
                                  "its lease)", fn);
            }
            return 0;
        }
        if (once || conc__now_ns() >= dl) {
            return conc__fail(CONC_ETIMEDOUT, "%s: held by another", fn);
        }
        if (pttl == -2) {
            continue; /* released between the SET and the PTTL */
        }
        /* Wait for a release, or for the holder's lease to end. */
        double block = conc__r_left(dl);
        if (block > SLICE_S) {
            block = SLICE_S;
        }
        if (pttl > 0 && (double)pttl / 1000.0 + 0.005 < block) {
            block = (double)pttl / 1000.0 + 0.005;
        }
        wait_arg w = { l, block };
        redisReply *r = NULL;
        int err = conc__rcli_call(
            &l->cli, build_wait, &w, &r, 1,
            conc__now_ns() + (uint64_t)((block + GRACE_S) * 1e9), fn);
        if (err == 0) {
            err = conc__rreply_want(&l->cli, r, REDIS_REPLY_ARRAY, true, fn,
                                    "BLPOP");
            conc__rreplies_free(&r, 1);
        }
        if (err != 0) {
            return err;
        }
    }
}

/* ---- release, locked, fence -------------------------------------------------------- */

/* A release through a handle that did not acquire: whoever holds the
 * lock loses it, as Python's Lock lets any thread or process release it
 * (top, "Who may release").  0, or CONC_EPERM when it was free. */
static int release_any(rl *l, const char *fn)
{
    long long v;
    int err = run_free(l, SC_RELEASE_ANY, NULL,
                       conc__r_until(l->cli.net_timeout), &v, fn);
    if (err != 0) {
        return err;
    }
    if (v != 1) {
        return conc__fail(CONC_EPERM, "%s: the lock is not held (release "
                          "of an unlocked lock)", fn);
    }
    return 0;
}

static int rl_release(conc__netl *nl)
{
    rl *l = RL(nl);
    static const char fn[] = "conc_lock_release";
    char token[33];
    pthread_mutex_lock(&l->cli.mu);
    bool held = l->held;
    memcpy(token, l->token, sizeof token);
    pthread_mutex_unlock(&l->cli.mu);
    if (!held) {
        return release_any(l, fn);
    }
    long long v;
    int err = run_free(l, SC_RELEASE, token,
                       conc__r_until(l->cli.net_timeout), &v, fn);
    if (err != 0) {
        return err; /* still held as far as we know; the lease decides */
    }
    pthread_mutex_lock(&l->cli.mu);
    if (memcmp(l->token, token, sizeof token) == 0) {
        l->held = false;
    }
    pthread_mutex_unlock(&l->cli.mu);
    conc__rlease_arm(&l->item, 0, fn);
    if (v != 1) {
        return conc__fail(CONC_EPERM, "%s: the lock was no longer held "
                          "under this grant: its lease ran out (the holder "
                          "was stopped or cut off longer than its lease), "
                          "or another handle or a forked child released "
                          "it; another may have held the lock since", fn);
    }
    return 0;
}

static void build_exists(void *ctx, conc__rconn *c)
{
    const rl *l = ctx;
    conc__rbuf_cmd(&c->out, 2);
    conc__rbuf_str(&c->out, "EXISTS");
    conc__rbuf_str(&c->out, l->k_key);
}

static int rl_locked(conc__netl *nl, bool *yes)
{
    rl *l = RL(nl);
    static const char fn[] = "conc_lock_locked";
    redisReply *r = NULL;
    int err = conc__rcli_call(&l->cli, build_exists, l, &r, 1,
                              conc__r_until(l->cli.net_timeout), fn);
    if (err == 0) {
        err = conc__rreply_want(&l->cli, r, REDIS_REPLY_INTEGER, false, fn,
                                "EXISTS");
        *yes = err == 0 && r->integer == 1;
        conc__rreplies_free(&r, 1);
    }
    return err;
}

static int rl_fence(conc__netl *nl, uint64_t *token)
{
    rl *l = RL(nl);
    pthread_mutex_lock(&l->cli.mu);
    bool held = l->held;
    *token = held ? l->fence : 0;
    pthread_mutex_unlock(&l->cli.mu);
    if (!held) {
        return conc__fail(CONC_EPERM, "conc_lock_fence: this handle does not "
                          "hold the lock");
    }
    return 0;
}

/* ---- renewal, free, make -------------------------------------------------------------- */

static void build_renew(void *ctx, conc__rconn *c)
{
    const try_arg *a = ctx;
    conc__rconn_evalsha(c, SC_RENEW, 1, 2);
    conc__rbuf_str(&c->out, a->l->k_key);
    conc__rbuf_str(&c->out, a->token);
    conc__rbuf_u64(&c->out, a->l->lease_ms);
}

static void rl_renew(conc__ritem *it)
{
    rl *l = (rl *)(void *)((char *)it - offsetof(rl, item));
    char token[33];
    pthread_mutex_lock(&l->cli.mu);
    bool held = l->held;
    memcpy(token, l->token, sizeof token);
    pthread_mutex_unlock(&l->cli.mu);
    if (!held) {
        return;
    }
    double lim = (double)l->lease_ms / 3000.0;
    if (l->cli.net_timeout >= 0 && l->cli.net_timeout < lim) {
        lim = l->cli.net_timeout;
    }
    try_arg a = { l, token };
    redisReply *r = NULL;
    if (conc__rcli_call(&l->cli, build_renew, &a, &r, 1, conc__r_until(lim),
                        "conc_lock (lease renewal)") == 0) {
        conc__rreplies_free(&r, 1);
    }
}

static void rl_destroy(rl *l)
{
    conc__rcli_fini(&l->cli);
    free(l->k_key);
    free(l->k_owner);
    free(l->k_fence);
    free(l->k_wake);
    free(l->k_meta);
    free(l);
}

static void rl_free(conc__netl *nl)
{
    rl *l = RL(nl);
    conc__rlease_remove(&l->item);
    rl_destroy(l);
}

static const conc__netl_ops ops = {
    .acquire = rl_acquire,
    .release = rl_release,
    .locked = rl_locked,
    .fence = rl_fence,
    .free = rl_free,
};

typedef struct declare_arg {
    rl *l;
    bool create;
} declare_arg;

static void build_declare(void *ctx, conc__rconn *c)
{
    const declare_arg *a = ctx;
    conc__rconn_evalsha(c, SC_DECLARE, 5, 2);
    conc__rbuf_str(&c->out, a->l->k_key);
    conc__rbuf_str(&c->out, a->l->k_owner);
    conc__rbuf_str(&c->out, a->l->k_fence);
    conc__rbuf_str(&c->out, a->l->k_wake);
    conc__rbuf_str(&c->out, a->l->k_meta);
    conc__rbuf_str(&c->out, a->create ? "1" : "0");
    conc__rbuf_u64(&c->out, a->l->lease_ms);
}

/* Declares the lock (new or open).  An opener that gave no .lease takes
 * the one the lock's maker gave (kept in its meta hash, as a queue keeps
 * its own), so a holder through either handle that dies frees the lock
 * as soon; a lock made before locks kept theirs leaves the default. */
static int declare(rl *l, bool create, bool lease_given, const char *name,
                   const char *fn)
{
    declare_arg a = { l, create };
    redisReply *r = NULL;
    int err = conc__rcli_call(&l->cli, build_declare, &a, &r, 1,
                              conc__r_until(l->cli.net_timeout), fn);
    if (err == 0) {
        err = conc__robj_declared(&l->cli, r, "lock", name, fn);
    }
    long long ms = 0;
    if (err == 0 && !create && !lease_given && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len > 0) {
        /* the same bounds a lease given here is held to */
        if (!conc__rreply_int(r->element[1], &ms) || ms < 100 ||
            ms > 1000000000LL) {
            err = conc__fail(CONC_ECORRUPT, "%s: the lock '%s' on %s keeps "
                             "a lease that no maker gives", fn, name,
                             l->cli.where);
        } else {
            l->lease_ms = (uint64_t)ms;
        }
    }
    if (r != NULL) {
        conc__rreplies_free(&r, 1);
    }
    return err;
}

int conc__redis_lock_make(conc__netl **out, conc__url *u, const char *name,
                          const conc_lock_opts *opts, bool create)
{
    const char *fn = create ? "conc_lock_new" : "conc_lock_open";
    rl *l = conc__calloc(1, sizeof *l);
    if (l == NULL) {
        conc__url_free(u);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the handle", fn);
    }
    conc_timeout nt = opts != NULL ? opts->net_timeout : (conc_timeout){ 0 };
    int err = conc__rcli_init(&l->cli, u, nt, scripts, SC_N, fn);
    if (err != 0) {
        free(l);
        return err;
    }
    err = conc__robj_name(&l->cli, name, &name, fn);
    double lease = 0;
    if (err == 0) {
        err = conc__robj_lease(opts != NULL ? &opts->lease : NULL, &lease, fn);
    }
    l->lease_ms = (uint64_t)(lease * 1000.0 + 0.5);
    if (err == 0) {
        l->k_key = conc__robj_key('l', name, "");
        l->k_owner = conc__robj_key('l', name, ":owner");
        l->k_fence = conc__robj_key('l', name, ":fence");
        l->k_wake = conc__robj_key('l', name, ":wake");
        l->k_meta = conc__robj_key('l', name, ":meta");
        if (!l->k_key || !l->k_owner || !l->k_fence || !l->k_wake ||
            !l->k_meta) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for key names", fn);
        }
    }
    if (err == 0) {
        err = declare(l, create,
                      opts != NULL && conc__timeout_given(opts->lease), name,
                      fn);
    }
    if (err != 0) {
        rl_destroy(l);
        return err;
    }
    conc__netl_seal(&l->base, &ops);
    conc__rlease_add(&l->item, &l->cli, rl_renew);
    *out = &l->base;
    return 0;
}
