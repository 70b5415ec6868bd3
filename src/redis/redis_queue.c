/* redis_queue.c - conc_queue served by Redis: at-least-once delivery with
 * leased per-consumer processing lists, at-most-once as an option,
 * maxsize, close, task_done/join and batches, each in one round trip.
 *
 * KEYS (one hash tag per queue, so a cluster would keep them together):
 *   conc:{q:NAME}            list: the queue.  Producers push on the left,
 *                            consumers take from the right (FIFO).
 *   conc:{q:NAME}:meta       hash: kind=queue, layout=1, maxsize, lease
 *                            (ms, the default of openers), amo (the
 *                            openers' default mode), closed (0/1), tasks
 *                            (put minus task_done: join's count)
 *   conc:{q:NAME}:cons       sorted set: consumer id -> the server time
 *                            (ms) at which its lease runs out
 *   conc:{q:NAME}:p:CID:0|1  lists: consumer CID's processing lists
 * Every element is a tag byte and the message: "m" + bytes, or "c", the
 * close marker.  An element with another tag was not written by libconc:
 * a get that meets one drops it and returns CONC_ECORRUPT.
 *
 * DELIVERY (at least once).  A consumer is one thread on one handle in
 * one process: a slot (struct slot) with a random 64-bit id CID.  A get
 * is one pipeline, one round trip:
 *     [prep: acknowledge or give back the previous get's list]
 *     BLMOVE queue P[i] RIGHT LEFT block    (LMOVE for timeout 0)
 *     [more: up to n-1 further LMOVEs into P[i], for get_many]
 * BLMOVE moves the message into the consumer's processing list on the
 * server, atomically, so a consumer killed at any instant - before the
 * reply reached it, or while working on the message - leaves it there:
 * never lost as BRPOP would lose it.  The two lists alternate from get
 * to get (i = 0, 1, 0, ...), and the handle knows what each holds:
 *   EMPTY      nothing (acknowledged or given back);
 *   DELIVERED  messages handed to the caller;
 *   UNKNOWN    a get failed mid-way (time out, broken connection): the
 *              list may hold a message the server moved but the caller
 *              never saw.
 * The next get acknowledges a DELIVERED list (DEL) and gives an UNKNOWN
 * one back to the head of the queue (prep script: LMOVE each element to
 * the queue's right end), before its own BLMOVE into the other list.
 * Both actions are idempotent, so a get whose pipeline failed half way
 * is simply repeated later: a message is deleted only from a list all of
 * whose messages were delivered, and a list that may hold an undelivered
 * one is only ever given back.  The cost of the doubt is a duplicate,
 * never a loss.  task_done() acknowledges one message of the last get
 * (RPOP from its list) in the same script that counts the task; free()
 * acknowledges what was delivered and gives back what is UNKNOWN.
 *
 * LEASES.  The consumer's id sits in :cons scored with its lease's end.
 * The prep script (re)registers it with the server's own clock (TIME), so
 * hosts' clocks never matter; the handle re-registers when a quarter of
 * the lease has passed since it last did, and every server-side block is
 * at most half a lease: a BLMOVE into a consumer's list therefore always
 * ends before that consumer's registration can run out, so no message can
 * land in a list nobody will ever reclaim.  Between gets the process's
 * lease thread (redis_lease.c) renews every slot of the handle every
 * lease/3 (renew script).  Reclaim: the prep and renew scripts look for
 * ids whose lease has run out (ZRANGEBYSCORE, up to 16 at a time), move
 * both of their lists back to the head of the queue and drop the id.  So
 * a dead consumer's messages come back within a lease and a quarter (plus
 * a slice, if every other consumer is blocked in BLMOVE).  A consumer
 * whose own lease ran out while it lived (stopped past its lease) finds
 * its lists empty: its acknowledgements are then no-ops, its task_done
 * counts nothing (the redelivered copy's will), and its next get
 * registers it again.
 *
 * AT MOST ONCE (.at_most_once): get is BRPOP (RPOP for timeout 0), and
 * get_many adds RPOP queue n-1 to the pipeline; no processing lists, no
 * leases.  A connection lost during a BRPOP loses what the server popped.
 *
 * CLOSE sets closed=1 and pushes one "c" on the producers' end (left) in
 * one script, so every message put before close is taken first; puts
 * after it fail (the put script checks closed).  A getter that receives
 * "c" pushes it back on the left (LMOVE P queue LEFT LEFT, one more round
 * trip) and returns CONC_ECLOSED: the next blocked getter - on any host -
 * then receives it, and so on, so close wakes every getter everywhere.
 * Pushed back on the left, "c" stays behind any message that comes back
 * later (reclaimed messages go to the right end), so no message is ever
 * stuck behind it.
 *
 * PUT is one script per batch of up to 1024 messages (Lua's unpack limit
 * is near 8000): it refuses a closed queue, takes only what fits under
 * maxsize (room = maxsize - LLEN), LPUSHes, and counts the tasks.  A put
 * on a full queue retries, sleeping 1 ms doubling to 50 ms, until its
 * deadline: Redis cannot block a client until a list shrinks.  Batches
 * of an unbounded queue are pipelined (every chunk goes in, or the queue
 * closed between two: the prefix rule holds); a bounded queue sends one
 * chunk per round trip, so a later chunk can never pass an earlier one
 * that did not fit.  If the meta hash is gone (a server restarted without
 * persistence, FLUSHALL) put re-creates it from the handle's settings.
 *
 * TIMEOUTS.  A blocking command's server-side block is what is left of
 * the call's timeout, cut into slices of at most 2 s (and half a lease);
 * the client waits for its reply until the block's end plus GRACE (1 s),
 * never less: a client that gave up earlier could leave a BRPOP popping
 * for a connection nobody reads.  (For BLMOVE that would only strand the
 * message in our list, given back by the next get; for BRPOP it is a
 * loss.)  CONC_FOREVER repeats slices, so a dead connection is noticed.
 *
 * THREADS AND FORK.  cli.mu guards the slot list; a slot is used only by
 * its own thread (the renewer reads the ids, which never change).  A
 * forked child's handle drops its parent's slots at its first call (fork
 * generation): the parent's deliveries stay the parent's, leased by the
 * parent's lease thread, and the child gets fresh consumer ids.
 */
#include "redis_int.h"
#include "../sync_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLICE_S 2.0
#define GRACE_S 1.0
#define CHUNK 1024
/* A message and its tag must fit Redis's default proto-max-bulk-len. */
#define MAX_MSG ((size_t)512 * 1024 * 1024 - 1)
#define FREE_LIMIT_S 2.0

enum { S_EMPTY, S_DELIVERED, S_UNKNOWN };

/* ---- scripts ---------------------------------------------------------------- */

/* The reclaim of consumers whose lease ran out, shared by prep and renew:
 * KEYS[2] is :cons, KEYS[3] the queue; pfx the processing lists' prefix. */
#define RECLAIM_LUA                                                          \
    "local function reclaim(now, pfx)\n"                                    \
    "  local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now,\n"    \
    "                          'LIMIT', 0, 16)\n"                            \
    "  for _, c in ipairs(dead) do\n"                                       \
    "    for _, s in ipairs({':0', ':1'}) do\n"                             \
    "      while redis.call('LMOVE', pfx .. c .. s, KEYS[3], 'LEFT',\n"     \
    "                       'RIGHT') do end\n"                               \
    "    end\n"                                                             \
    "    redis.call('ZREM', KEYS[2], c)\n"                                  \
    "  end\n"                                                               \
    "end\n"                                                                 \
    "local function now_ms()\n"                                             \
    "  local t = redis.call('TIME')\n"                                      \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"  \
    "end\n"

/* The meta hash, made from the caller's settings when it is missing
 * (true: made now). */
#define META_LUA                                                             \
    "local function meta(M, maxsize, lease, amo)\n"                         \
    "  if redis.call('EXISTS', M) == 1 then return false end\n"             \
    "  redis.call('HSET', M, 'kind', 'queue', 'layout', '1', 'maxsize',\n"   \
    "             maxsize, 'lease', lease, 'amo', amo, 'closed', '0',\n"    \
    "             'tasks', '0')\n"                                           \
    "  return true\n"                                                       \
    "end\n"

enum { SC_DECLARE, SC_PUT, SC_PREP, SC_MORE, SC_TASK, SC_QSIZE, SC_CLOSE,
       SC_RENEW, SC_N };

static const conc__rscript scripts[SC_N] = {
    [SC_DECLARE] = { "declare",
        /* KEYS: queue, meta.  ARGV: maxsize, lease, amo, create (1/0).
         * {status, maxsize, lease, amo, closed}; status: new, old,
         * missing, type (+ key, type), kind. */
        "local lt = redis.call('TYPE', KEYS[1])['ok']\n"
        "if lt ~= 'none' and lt ~= 'list' then return {'type', KEYS[1], lt} end\n"
        "local mt = redis.call('TYPE', KEYS[2])['ok']\n"
        "if mt ~= 'none' and mt ~= 'hash' then return {'type', KEYS[2], mt} end\n"
        "if mt == 'none' then\n"
        "  if ARGV[4] == '0' then return {'missing'} end\n"
        "  redis.call('HSET', KEYS[2], 'kind', 'queue', 'layout', '1',\n"
        "             'maxsize', ARGV[1], 'lease', ARGV[2], 'amo', ARGV[3],\n"
        "             'closed', '0', 'tasks', '0')\n"
        "  return {'new', ARGV[1], ARGV[2], ARGV[3], '0'}\n"
        "end\n"
        "local m = redis.call('HMGET', KEYS[2], 'kind', 'layout', 'maxsize',\n"
        "                     'lease', 'amo', 'closed')\n"
        "if m[1] ~= 'queue' or m[2] ~= '1' then\n"
        "  return {'kind', tostring(m[1]), tostring(m[2])}\n"
        "end\n"
        "return {'old', m[3], m[4], m[5], m[6]}\n" },
    [SC_PUT] = { "put",
        /* KEYS: queue, meta.  ARGV: maxsize, lease, amo, elements...
         * How many went in, or -1 closed, -2 full, -3 meta corrupt. */
        META_LUA
        "local m = redis.call('HMGET', KEYS[2], 'closed', 'maxsize')\n"
        "if not m[1] and meta(KEYS[2], ARGV[1], ARGV[2], ARGV[3]) then\n"
        "  m = {'0', ARGV[1]}\n"
        "end\n"
        "if m[1] ~= '0' then return m[1] == '1' and -1 or -3 end\n"
        "local n = #ARGV - 3\n"
        "local max = tonumber(m[2])\n"
        "if max == nil then return -3 end\n"
        "if max > 0 then\n"
        "  local room = max - redis.call('LLEN', KEYS[1])\n"
        "  if room <= 0 then return -2 end\n"
        "  if room < n then n = room end\n"
        "end\n"
        "redis.call('LPUSH', KEYS[1], unpack(ARGV, 4, 3 + n))\n"
        "redis.call('HINCRBY', KEYS[2], 'tasks', n)\n"
        "return n\n" },
    [SC_PREP] = { "prep",
        /* KEYS: the previous list, cons, queue.  ARGV: mode (a: delete,
         * r: give back, -: nothing), consumer id, lease ms (0: do not
         * register), lists' prefix. */
        RECLAIM_LUA
        "if ARGV[1] == 'a' then redis.call('DEL', KEYS[1])\n"
        "elseif ARGV[1] == 'r' then\n"
        "  while redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT') do end\n"
        "end\n"
        "local lease = tonumber(ARGV[3])\n"
        "if lease > 0 then\n"
        "  local now = now_ms()\n"
        "  redis.call('ZADD', KEYS[2], now + lease, ARGV[2])\n"
        "  reclaim(now, ARGV[4])\n"
        "end\n"
        "return 0\n" },
    [SC_MORE] = { "more",
        /* KEYS: queue, list.  ARGV: n.  Runs right after the BLMOVE into
         * list.  If the list's newest element is the close marker (what
         * BLMOVE just took, or one a failed give-back left there), gives
         * it back and returns {1}.  Otherwise moves up to n more messages
         * from the queue's head, in bulk (LRANGE, LTRIM, LPUSH), never
         * the marker or what lies behind it, and returns {0, messages...}
         * oldest first. */
        "if redis.call('LINDEX', KEYS[2], 0) == 'c' then\n"
        "  redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'LEFT')\n"
        "  return {1}\n"
        "end\n"
        "local items = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)\n"
        "local first = 1\n"
        "for i = 1, #items do\n"
        "  if items[i] == 'c' then first = i + 1 end\n"
        "end\n"
        "local take = #items - first + 1\n"
        "if take <= 0 then return {0} end\n"
        "redis.call('LTRIM', KEYS[1], 0, -(take + 1))\n"
        "local out = {0}\n"
        "for i = #items, first, -1 do out[#out + 1] = items[i] end\n"
        "redis.call('LPUSH', KEYS[2], unpack(out, 2))\n"
        "return out\n" },
    [SC_TASK] = { "task_done",
        /* KEYS: meta, the list of the caller's last get.  ARGV: 1 when
         * the caller holds a delivery in it.  The tasks left, or -1 (no
         * task to finish), -2 (the delivery was reclaimed: not counted),
         * -3 (meta corrupt). */
        "local t = tonumber(redis.call('HGET', KEYS[1], 'tasks') or '0')\n"
        "if t == nil then return -3 end\n"
        /* Before the count's check: the redelivered copy's task_done
         * may have brought it to 0 already, and this one is owed no
         * error (it was called once for its get). */
        "if ARGV[1] == '1' and not redis.call('RPOP', KEYS[2]) then\n"
        "  return -2\n"
        "end\n"
        "if t <= 0 then return -1 end\n"
        "redis.call('HINCRBY', KEYS[1], 'tasks', -1)\n"
        "return t - 1\n" },
    [SC_QSIZE] = { "qsize",
        /* KEYS: queue, meta.  Messages queued, the close marker aside. */
        "local n = redis.call('LLEN', KEYS[1])\n"
        "if n > 0 and redis.call('HGET', KEYS[2], 'closed') == '1' and\n"
        "   redis.call('LPOS', KEYS[1], 'c') then n = n - 1 end\n"
        "return n\n" },
    [SC_CLOSE] = { "close",
        /* KEYS: queue, meta.  ARGV: maxsize, lease, amo. */
        META_LUA
        "meta(KEYS[2], ARGV[1], ARGV[2], ARGV[3])\n"
        "if redis.call('HGET', KEYS[2], 'closed') == '1' then return 0 end\n"
        "redis.call('HSET', KEYS[2], 'closed', '1')\n"
        "redis.call('LPUSH', KEYS[1], 'c')\n"
        "return 1\n" },
    [SC_RENEW] = { "renew",
        /* KEYS: meta (unused), cons, queue.  ARGV: lease ms, lists'
         * prefix, consumer ids... */
        RECLAIM_LUA
        "local now = now_ms()\n"
        "local lease = tonumber(ARGV[1])\n"
        "for i = 3, #ARGV do\n"
        "  redis.call('ZADD', KEYS[2], now + lease, ARGV[i])\n"
        "end\n"
        "reclaim(now, ARGV[2])\n"
        "return 0\n" },
};

/* ---- the handle ------------------------------------------------------------ */

typedef struct slot {
    struct slot *next;
    uint64_t who;          /* conc__sync_self_id() of its thread */
    char cid[17];
    unsigned cur;          /* the list the last get used */
    uint8_t state[2];
    size_t outstanding;    /* deliveries of the last get not task_done'd */
    uint64_t reg_ns;       /* last registration sent (0: never) */
} slot;

typedef struct rq {
    conc__netq base;
    conc__rcli cli;
    conc__ritem item;
    uint64_t lease_ms;
    bool amo;
    char sizes[3][24];     /* maxsize, lease, amo as the scripts take them */
    char *k_list;          /* conc:{q:NAME} */
    char *k_meta;
    char *k_cons;
    char *k_pfx;           /* conc:{q:NAME}:p: */
    slot *slots;           /* guarded by cli.mu */
    uint64_t slots_gen;
    /* The fork generation + 1 in which the lease item was armed (0:
     * never); relaxed: arming twice is harmless. */
    _Atomic uint64_t armed;
} rq;

#define RQ(q) ((rq *)(void *)(q))

/* The key of slot s's list i, into buf. */
static size_t plist(const rq *q, const slot *s, unsigned i, char *buf,
                    size_t cap)
{
    int n = snprintf(buf, cap, "%s%s:%u", q->k_pfx, s->cid, i);
    return (size_t)n;
}

/* The calling thread's slot (made at its first get), NULL when out of
 * memory. */
static slot *slot_of(rq *q)
{
    uint64_t me = conc__sync_self_id();
    uint64_t gen = conc__rlease_gen();
    pthread_mutex_lock(&q->cli.mu);
    if (q->slots_gen != gen) {
        /* A forked child: the slots are the parent's. */
        while (q->slots != NULL) {
            slot *s = q->slots;
            q->slots = s->next;
            free(s);
        }
        q->slots_gen = gen;
    }
    slot *s = q->slots;
    while (s != NULL && s->who != me) {
        s = s->next;
    }
    if (s == NULL) {
        s = conc__calloc(1, sizeof *s);
        if (s != NULL) {
            s->who = me;
            snprintf(s->cid, sizeof s->cid, "%016llx",
                     (unsigned long long)conc__os_random64());
            s->next = q->slots;
            q->slots = s;
        }
    }
    pthread_mutex_unlock(&q->cli.mu);
    return s;
}

/* ---- results of elements ----------------------------------------------------- */

typedef enum { E_MSG, E_CLOSE, E_BAD } ekind;

static ekind kind_of(const redisReply *e)
{
    if (e->type != REDIS_REPLY_STRING || e->len == 0) {
        return E_BAD;
    }
    if (e->str[0] == 'm') {
        return E_MSG;
    }
    return e->len == 1 && e->str[0] == 'c' ? E_CLOSE : E_BAD;
}

/* Where a get's messages go: heap messages (msgs[0..n-1]) or one caller
 * buffer (buf/cap, *len). */
typedef struct sink {
    conc_msg *msgs;
    size_t n;
    void *buf;
    size_t cap;
    size_t *len;
} sink;

/* Copies message e (tag 'm') into the sink's idx-th place: 0,
 * CONC_ENOMEM, CONC_ETOOBIG (*len set), or CONC_ECORRUPT for a place the
 * sink does not have.  Every get asks for no more messages than its sink
 * holds, but a server that lies may send more: this compare, which every
 * message of every get path passes, keeps them out of the caller's
 * array. */
static int deliver(const sink *k, size_t idx, const redisReply *e)
{
    if (idx >= (k->msgs != NULL ? k->n : 1)) {
        return CONC_ECORRUPT; /* detail: set by hand_over */
    }
    size_t n = e->len - 1;
    if (k->msgs == NULL) {
        *k->len = n;
        if (n > k->cap) {
            return CONC_ETOOBIG; /* detail: set by the caller, which knows fn */
        }
        if (n > 0) {
            memcpy(k->buf, e->str + 1, n);
        }
        return 0;
    }
    void *d = NULL;
    if (n > 0) {
        d = conc__malloc(n);
        if (d == NULL) {
            return CONC_ENOMEM; /* detail: set by hand_over, which knows fn */
        }
        memcpy(d, e->str + 1, n);
    }
    k->msgs[idx].data = d;
    k->msgs[idx].len = n;
    return 0;
}

static void sink_clear(const sink *k, size_t got)
{
    for (size_t i = 0; k->msgs != NULL && i < got; i++) {
        conc_msg_free(&k->msgs[i]);
    }
}

/* ---- get, at least once ------------------------------------------------------- */

static uint64_t lease_ns(const rq *q)
{
    return q->lease_ms * 1000000u;
}

/* The server-side block of the next slice: what is left of the call's
 * time, at most SLICE_S and half a lease (see LEASES). */
static double slice_of(const rq *q, uint64_t dl)
{
    double b = conc__r_left(dl);
    if (b > SLICE_S) {
        b = SLICE_S;
    }
    double half = (double)q->lease_ms / 2000.0;
    return b > half ? half : b;
}

/* The connection for one attempt of a call with deadline dl: connecting
 * shares the call's time, or net_timeout for timeout 0 and FOREVER. */
static int take(rq *q, conc__rconn **c, bool once, uint64_t dl,
                const char *fn)
{
    uint64_t until = (once || dl == CONC__R_FOREVER)
                         ? conc__r_until(q->cli.net_timeout)
                         : dl;
    return conc__rcli_take(&q->cli, c, until, fn);
}

/* Arms the handle's lease renewal, once per process (a forked child's
 * items start disarmed); retried by every get until it succeeds. */
static int arm(rq *q, const char *fn)
{
    uint64_t g = conc__rlease_gen() + 1;
    if (atomic_load_explicit(&q->armed, memory_order_relaxed) == g) {
        return 0;
    }
    int err = conc__rlease_arm(&q->item, lease_ns(q) / 3, fn);
    if (err == 0) {
        atomic_store_explicit(&q->armed, g, memory_order_relaxed);
    }
    return err;
}

/* "LMOVE list queue LEFT LEFT": gives back the close marker the last
 * BLMOVE pushed on list, behind every message.  0 or the error. */
static int give_back_marker(rq *q, conc__rconn *c, const char *list,
                            uint64_t until, const char *fn)
{
    conc__rbuf *b = &c->out;
    conc__rbuf_cmd(b, 5);
    conc__rbuf_str(b, "LMOVE");
    conc__rbuf_str(b, list);
    conc__rbuf_str(b, q->k_list);
    conc__rbuf_str(b, "LEFT");
    conc__rbuf_str(b, "LEFT");
    redisReply *r = NULL;
    int err = conc__rconn_exchange(&q->cli, c, &r, 1, until, fn);
    if (err == 0) {
        err = conc__rreply_want(&q->cli, r, REDIS_REPLY_STRING, true, fn,
                                "LMOVE");
        conc__rreplies_free(&r, 1);
    }
    return err;
}

/* Drops elements that are not libconc's from list (LREM), one round
 * trip; the caller then marks the list UNKNOWN so that the good ones go
 * back to the queue. */
static void drop_bad(rq *q, conc__rconn *c, const char *list,
                     const redisReply *const *els, size_t n, uint64_t until,
                     const char *fn)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (kind_of(els[i]) != E_BAD || els[i]->type != REDIS_REPLY_STRING) {
            continue;
        }
        conc__rbuf_cmd(&c->out, 4);
        conc__rbuf_str(&c->out, "LREM");
        conc__rbuf_str(&c->out, list);
        conc__rbuf_str(&c->out, "0");
        conc__rbuf_arg(&c->out, els[i]->str, els[i]->len);
        k++;
    }
    if (k == 0 || k > 16) {
        c->out.len = 0;
        return;
    }
    redisReply *r[16];
    if (conc__rconn_exchange(&q->cli, c, r, k, until, fn) == 0) {
        conc__rreplies_free(r, k);
    }
}

/* The elements a get took, oldest first: BLMOVE's, then more's. */
typedef struct taken {
    const redisReply *els[CHUNK + 1];
    size_t n;
    bool marker_back;   /* more gave the close marker back */
} taken;

static int collect(const rq *q, redisReply *blm, redisReply *more,
                   taken *t, const char *fn)
{
    t->n = 0;
    t->marker_back = false;
    if (blm->type == REDIS_REPLY_STRING) {
        t->els[t->n++] = blm;
    }
    if (more == NULL) {
        return 0;
    }
    long long flag = -1;
    if (more->elements == 0 || !conc__rreply_int(more->element[0], &flag) ||
        flag < 0 || flag > 1 || more->elements - 1 > CHUNK) {
        return conc__fail(CONC_ECORRUPT, "%s: the server at %s answered the "
                          "batch script with a malformed reply", fn,
                          q->cli.where);
    }
    t->marker_back = flag == 1;
    for (size_t i = 1; i < more->elements; i++) {
        t->els[t->n++] = more->element[i];
    }
    return 0;
}

/* Hands the taken elements to the sink: 0 (*got set), CONC_ECLOSED (only
 * the marker), CONC_ECORRUPT, CONC_ETOOBIG, CONC_ENOMEM.  *marker: the
 * marker is in the list and must be given back. */
static int hand_over(const rq *q, const taken *t, const sink *k,
                     size_t *got, bool *marker, bool *bad, const char *fn)
{
    *got = 0;
    *marker = false;
    *bad = false;
    int err = 0;
    for (size_t i = 0; i < t->n && err == 0; i++) {
        ekind ek = kind_of(t->els[i]);
        if (ek == E_CLOSE) {
            *marker = !t->marker_back;
            continue;
        }
        if (ek == E_BAD) {
            *bad = true;
            continue;
        }
        err = deliver(k, *got, t->els[i]);
        if (err == 0) {
            (*got)++;
        } else if (err == CONC_ECORRUPT) {
            conc__fail(err, "%s: the server at %s gave more messages than "
                       "were asked for", fn, q->cli.where);
        }
    }
    if (err == 0 && *bad) {
        err = conc__fail(CONC_ECORRUPT, "%s: the queue on %s held an "
                         "element libconc did not write (dropped; another "
                         "program pushes to its list?)", fn, q->cli.where);
    }
    if (err == CONC_ENOMEM) {
        conc__fail(err, "%s: no memory for a message", fn);
    } else if (err == CONC_ETOOBIG) {
        conc__fail(err, "%s: the message has %zu bytes, the buffer %zu", fn,
                   *k->len, k->cap);
    }
    if (err != 0) {
        sink_clear(k, *got);
        *got = 0;
        return err;
    }
    if (*got == 0 && (t->marker_back || *marker)) {
        return conc__fail(CONC_ECLOSED, "%s: the queue on %s is closed and "
                          "drained", fn, q->cli.where);
    }
    return 0;
}

static int alo_get(rq *q, const sink *k, size_t *got, double timeout,
                   const char *fn)
{
    *got = 0;
    slot *s = slot_of(q);
    if (s == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for a consumer", fn);
    }
    int err = arm(q, fn);
    if (err != 0) {
        return err;
    }
    bool once = timeout == 0;
    uint64_t dl = conc__r_until(timeout);
    int noscript = 0;
    for (;;) {
        conc__rconn *c = NULL;
        err = take(q, &c, once, dl, fn);
        if (err != 0) {
            return err;
        }
        unsigned p = s->cur, i = s->cur ^ 1u;
        char kp[320], ki[320];
        plist(q, s, p, kp, sizeof kp);
        plist(q, s, i, ki, sizeof ki);
        uint64_t now = conc__now_ns();
        bool reg = s->reg_ns == 0 || now - s->reg_ns > lease_ns(q) / 4;
        conc__rbuf *b = &c->out;
        size_t ncmd = 0;
        bool prep = reg || s->state[p] != S_EMPTY;
        if (prep && !reg && s->state[p] == S_DELIVERED) {
            conc__rbuf_cmd(b, 2);
            conc__rbuf_str(b, "DEL");
            conc__rbuf_str(b, kp);
        } else if (prep) {
            conc__rconn_evalsha(c, SC_PREP, 3, 4);
            conc__rbuf_str(b, kp);
            conc__rbuf_str(b, q->k_cons);
            conc__rbuf_str(b, q->k_list);
            conc__rbuf_str(b, s->state[p] == S_DELIVERED ? "a"
                              : s->state[p] == S_UNKNOWN ? "r"
                                                         : "-");
            conc__rbuf_str(b, s->cid);
            conc__rbuf_u64(b, reg ? q->lease_ms : 0);
            conc__rbuf_str(b, q->k_pfx);
        }
        ncmd += prep;
        double block = once ? 0 : slice_of(q, dl);
        conc__rbuf_cmd(b, once ? 5 : 6);
        conc__rbuf_str(b, once ? "LMOVE" : "BLMOVE");
        conc__rbuf_str(b, q->k_list);
        conc__rbuf_str(b, ki);
        conc__rbuf_str(b, "RIGHT");
        conc__rbuf_str(b, "LEFT");
        if (!once) {
            conc__rbuf_secs(b, block);
        }
        ncmd++;
        size_t more = k->msgs != NULL ? k->n - 1 : 0;
        if (more > 0) {
            conc__rconn_evalsha(c, SC_MORE, 2, 1);
            conc__rbuf_str(b, q->k_list);
            conc__rbuf_str(b, ki);
            conc__rbuf_u64(b, more);
            ncmd++;
        }
        uint64_t until = once ? conc__r_until(q->cli.net_timeout)
                              : conc__now_ns() +
                                    (uint64_t)((block + GRACE_S) * 1e9);
        redisReply *rep[3] = { NULL, NULL, NULL };
        uint8_t before = s->state[i];
        /* From here until the replies are checked, list i may hold what
         * the server moved: UNKNOWN unless proven otherwise. */
        s->state[i] = S_UNKNOWN;
        s->cur = i;
        s->outstanding = 0;
        err = conc__rconn_exchange(&q->cli, c, rep, ncmd, until, fn);
        if (err != 0) {
            conc__rcli_give(&q->cli, c, false);
            return err;
        }
        size_t r = 0;
        if (prep) {
            err = conc__rreply_want(&q->cli, rep[0], REDIS_REPLY_INTEGER,
                                    false, fn, "acknowledgement");
            if (err == 0) {
                s->state[p] = S_EMPTY;
                s->reg_ns = reg ? now : s->reg_ns;
            }
            r = 1;
        }
        if (err == 0) {
            err = conc__rreply_want(&q->cli, rep[r], REDIS_REPLY_STRING,
                                    true, fn, "BLMOVE");
        }
        if (err == 0 && more > 0) {
            err = conc__rreply_want(&q->cli, rep[r + 1], REDIS_REPLY_ARRAY,
                                    false, fn, "the batch script");
        }
        taken t;
        if (err == 0) {
            err = collect(q, rep[r], more > 0 ? rep[r + 1] : NULL, &t, fn);
        }
        if (err != 0) {
            conc__rreplies_free(rep, ncmd);
            conc__rcli_give(&q->cli, c, false);
            if (err == CONC__RNOSCRIPT && noscript++ == 0) {
                continue; /* the next connection loads them again */
            }
            /* detail: conc__rreply_err said why (scripts lost twice) */
            return err == CONC__RNOSCRIPT ? CONC_ENET : err;
        }
        if (t.n == 0) {
            s->state[i] = before;
            conc__rreplies_free(rep, ncmd);
            conc__rcli_give(&q->cli, c, true);
            if (once || conc__now_ns() >= dl) {
                return conc__fail(CONC_EEMPTY, "%s: nothing came in time",
                                  fn);
            }
            continue;
        }
        bool marker = false, bad = false;
        err = hand_over(q, &t, k, got, &marker, &bad, fn);
        bool ok = true;
        if (bad) {
            drop_bad(q, c, ki, t.els, t.n, until, fn);
        }
        if (marker && give_back_marker(q, c, ki, until, fn) != 0) {
            ok = false; /* the marker stays UNKNOWN: the next prep */
        }
        if (err == 0) {
            s->state[i] = S_DELIVERED;
            s->outstanding = *got;
        } else if (err == CONC_ECLOSED && ok) {
            s->state[i] = before;
        }
        /* Otherwise (a bad element, no room, no memory, a failed give
         * back) list i stays UNKNOWN: the next get gives it back. */
        conc__rreplies_free(rep, ncmd);
        conc__rcli_give(&q->cli, c, ok);
        if (err == CONC_ECLOSED) {
            return conc__fail(err, "%s: the queue is closed and drained",
                              fn);
        }
        return err;
    }
}

/* ---- get, at most once ----------------------------------------------------------- */

/* Pushes elements back: the close marker on the left (behind everything),
 * a message that did not fit on the right (the head).  One round trip. */
static int push_back(rq *q, conc__rconn *c, const char *side,
                     const redisReply *e, uint64_t until, const char *fn)
{
    conc__rbuf_cmd(&c->out, 3);
    conc__rbuf_str(&c->out, side);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_arg(&c->out, e->str, e->len);
    redisReply *r = NULL;
    int err = conc__rconn_exchange(&q->cli, c, &r, 1, until, fn);
    if (err == 0) {
        err = conc__rreply_want(&q->cli, r, REDIS_REPLY_INTEGER, false, fn,
                                side);
        conc__rreplies_free(&r, 1);
    }
    return err;
}

static int amo_get(rq *q, const sink *k, size_t *got, double timeout,
                   const char *fn)
{
    *got = 0;
    bool once = timeout == 0;
    uint64_t dl = conc__r_until(timeout);
    size_t want = k->msgs != NULL ? k->n : 1;
    for (;;) {
        conc__rconn *c = NULL;
        int err = take(q, &c, once, dl, fn);
        if (err != 0) {
            return err;
        }
        conc__rbuf *b = &c->out;
        double block = once ? 0 : slice_of(q, dl);
        size_t ncmd = 1;
        if (once) {
            conc__rbuf_cmd(b, 2);
            conc__rbuf_str(b, "RPOP");
            conc__rbuf_str(b, q->k_list);
        } else {
            conc__rbuf_cmd(b, 3);
            conc__rbuf_str(b, "BRPOP");
            conc__rbuf_str(b, q->k_list);
            conc__rbuf_secs(b, block);
        }
        if (want > 1) {
            conc__rbuf_cmd(b, 3);
            conc__rbuf_str(b, "RPOP");
            conc__rbuf_str(b, q->k_list);
            conc__rbuf_u64(b, want - 1);
            ncmd++;
        }
        uint64_t until = once ? conc__r_until(q->cli.net_timeout)
                              : conc__now_ns() +
                                    (uint64_t)((block + GRACE_S) * 1e9);
        redisReply *rep[2] = { NULL, NULL };
        err = conc__rconn_exchange(&q->cli, c, rep, ncmd, until, fn);
        if (err != 0) {
            conc__rcli_give(&q->cli, c, false);
            return err;
        }
        taken t = { .n = 0, .marker_back = false };
        const redisReply *first = rep[0];
        if (!once && first->type == REDIS_REPLY_ARRAY) {
            first = first->elements == 2 ? first->element[1] : NULL;
        }
        if (first == NULL) {
            err = conc__fail(CONC_ECORRUPT, "%s: the server at %s answered "
                             "BRPOP with a malformed reply", fn,
                             q->cli.where);
        } else {
            /* The code conc__rreply_want gives (CONC_ECORRUPT for a reply
             * of another type or WRONGTYPE, CONC_ENET for other error
             * replies), as the at-least-once get returns it. */
            err = conc__rreply_want(&q->cli, first, REDIS_REPLY_STRING,
                                    true, fn, once ? "RPOP" : "BRPOP");
            if (err == 0 && ncmd == 2) {
                err = conc__rreply_want(&q->cli, rep[1], REDIS_REPLY_ARRAY,
                                        true, fn, "RPOP");
            }

        }
        if (err != 0) {
            conc__rreplies_free(rep, ncmd);
            conc__rcli_give(&q->cli, c, false);
            return err;
        }
        if (first->type == REDIS_REPLY_STRING) {
            t.els[t.n++] = first;
        }
        for (size_t i = 0; ncmd == 2 && i < rep[1]->elements && t.n <= CHUNK;
             i++) {
            t.els[t.n++] = rep[1]->element[i];
        }
        if (t.n == 0) {
            conc__rreplies_free(rep, ncmd);
            conc__rcli_give(&q->cli, c, true);
            if (once || conc__now_ns() >= dl) {
                return conc__fail(CONC_EEMPTY, "%s: nothing came in time",
                                  fn);
            }
            continue;
        }
        bool marker = false, bad = false;
        err = hand_over(q, &t, k, got, &marker, &bad, fn);
        bool ok = true;
        if (marker) {
            static const redisReply mk = { .type = REDIS_REPLY_STRING,
                                           .len = 1, .str = (char *)"c" };
            ok = push_back(q, c, "LPUSH", &mk, until, fn) == 0;
        }
        if (err == CONC_ETOOBIG || err == CONC_ENOMEM) {
            /* Popped already: put the messages back at the head, newest
             * first, so the oldest is the head again. */
            for (size_t i = t.n; i-- > 0 && ok;) {
                if (kind_of(t.els[i]) == E_MSG) {
                    ok = push_back(q, c, "RPUSH", t.els[i], until, fn) == 0;
                }
            }
        }
        conc__rreplies_free(rep, ncmd);
        conc__rcli_give(&q->cli, c, ok);
        if (err == CONC_ECLOSED) {
            return conc__fail(err, "%s: the queue is closed and drained",
                              fn);
        }
        return err;
    }
}

static int rq_get(conc__netq *nq, conc_msg *msg, void *buf, size_t cap,
                  size_t *len, double timeout)
{
    rq *q = RQ(nq);
    const char *fn = msg != NULL ? "conc_queue_get" : "conc_queue_get_into";
    sink k = { .msgs = msg, .n = 1, .buf = buf, .cap = cap, .len = len };
    size_t got = 0;
    return q->amo ? amo_get(q, &k, &got, timeout, fn)
                  : alo_get(q, &k, &got, timeout, fn);
}

static int rq_get_many(conc__netq *nq, conc_msg *msgs, size_t n,
                       size_t *got, double timeout)
{
    rq *q = RQ(nq);
    static const char fn[] = "conc_queue_get_many";
    /* One round trip takes at most CHUNK: a second one would acknowledge
     * the first one's messages (the next get of a consumer does). */
    sink k = { .msgs = msgs, .n = n > CHUNK ? CHUNK : n };
    return q->amo ? amo_get(q, &k, got, timeout, fn)
                  : alo_get(q, &k, got, timeout, fn);
}

/* ---- put -------------------------------------------------------------------------- */

/* The put script's fixed arguments: the handle's settings, from which
 * a lost meta hash is made again. */
static void put_head(rq *q, conc__rconn *c, size_t nel)
{
    conc__rconn_evalsha(c, SC_PUT, 2, 3 + nel);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, q->sizes[0]);
    conc__rbuf_str(&c->out, q->sizes[1]);
    conc__rbuf_str(&c->out, q->sizes[2]);
}

static int rq_put_many(conc__netq *nq, const conc_msg *msgs, size_t n,
                       size_t *done, double timeout, const char *fn)
{
    rq *q = RQ(nq);
    *done = 0;
    /* The batch is checked before anything goes in (as in shared memory):
     * a message over the limit puts none. */
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].len > MAX_MSG) {
            return conc__fail(CONC_ETOOBIG, "%s: msgs[%zu] is %zu bytes, "
                              "over Redis's limit of 512 MiB (nothing was "
                              "put)", fn, i, msgs[i].len);
        }
    }
    const size_t limit = n;
    bool once = timeout == 0;
    uint64_t dl = conc__r_until(timeout);
    uint64_t nap = 1000000u;
    int noscript = 0;
    /* A bounded queue takes one chunk per round trip (see PUT). */
    size_t per_trip = q->base.maxsize != 0 ? 1 : 16;
    while (*done < limit) {
        conc__rconn *c = NULL;
        int err = take(q, &c, once, dl, fn);
        if (err != 0) {
            return err;
        }
        size_t lens[16], nch = 0, at = *done;
        while (nch < per_trip && at < limit) {
            size_t k = limit - at > CHUNK ? CHUNK : limit - at;
            put_head(q, c, k);
            for (size_t i = at; i < at + k; i++) {
                conc__rbuf_arg2(&c->out, "m", 1, msgs[i].data, msgs[i].len);
            }
            lens[nch++] = k;
            at += k;
        }
        redisReply *rep[16];
        err = conc__rconn_exchange(&q->cli, c, rep, nch,
                                   conc__rcli_until(&q->cli, timeout, dl),
                                   fn);
        if (err != 0) {
            conc__rcli_give(&q->cli, c, false);
            return err;
        }
        bool full = false, closed = false;
        for (size_t j = 0; j < nch && err == 0 && !full && !closed; j++) {
            long long v = 0;
            err = conc__rreply_want(&q->cli, rep[j], REDIS_REPLY_INTEGER,
                                    false, fn, "the put script");
            if (err != 0) {
                break;
            }
            v = rep[j]->integer;
            if (v == -1) {
                closed = true;
            } else if (v == -2) {
                full = true;
            } else if (v < 0 || (size_t)v > lens[j]) {
                err = conc__fail(CONC_ECORRUPT, "%s: the queue's meta hash "
                                 "on %s is not libconc's", fn, q->cli.where);
            } else {
                *done += (size_t)v;
                full = (size_t)v < lens[j];
            }
        }
        conc__rreplies_free(rep, nch);
        conc__rcli_give(&q->cli, c, err == 0);
        if (err == CONC__RNOSCRIPT && noscript++ == 0) {
            continue;
        }
        if (err != 0) {
            /* detail: conc__rreply_err said why (scripts lost twice) */
            /* detail: conc__rreply_err said why (scripts lost twice) */
            return err == CONC__RNOSCRIPT ? CONC_ENET : err;
        }
        if (closed) {
            return conc__fail(CONC_ECLOSED, "%s: the queue is closed", fn);
        }
        if (*done == limit) {
            break;
        }
        if (full) {
            if (once || conc__now_ns() >= dl) {
                return conc__fail(CONC_EFULL, "%s: the queue is full "
                                  "(maxsize %zu)", fn, q->base.maxsize);
            }
            conc__r_nap(nap, dl);
            nap = nap * 2 > 50000000u ? 50000000u : nap * 2;
        }
    }
    return 0;
}

/* ---- one round trip on a fresh or pooled connection ------------------------------ */

/* A queue command builder, as conc__rcli_call takes one. */
typedef struct qbuild {
    rq *q;
    void (*build)(rq *q, conc__rconn *c, void *arg);
    void *arg;
} qbuild;

static void qbuild_run(void *ctx, conc__rconn *c)
{
    const qbuild *b = ctx;
    b->build(b->q, c, b->arg);
}

static int call(rq *q, void (*build)(rq *q, conc__rconn *c, void *arg),
                void *arg, redisReply **rep, size_t n, uint64_t until,
                const char *fn)
{
    qbuild b = { q, build, arg };
    return conc__rcli_call(&q->cli, qbuild_run, &b, rep, n, until, fn);
}

static void build_qsize(rq *q, conc__rconn *c, void *arg)
{
    (void)arg;
    conc__rconn_evalsha(c, SC_QSIZE, 2, 0);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_str(&c->out, q->k_meta);
}

static int rq_qsize(conc__netq *nq, size_t *n, const char *fn)
{
    rq *q = RQ(nq);
    redisReply *r = NULL;
    int err = call(q, build_qsize, NULL, &r, 1,
                   conc__r_until(q->cli.net_timeout), fn);
    if (err == 0) {
        err = conc__rreply_want(&q->cli, r, REDIS_REPLY_INTEGER, false, fn,
                                "the qsize script");
        *n = err == 0 && r->integer > 0 ? (size_t)r->integer : 0;
        conc__rreplies_free(&r, 1);
    }
    return err;
}

/* ---- task_done, join, close ------------------------------------------------------- */

/* The calling thread's slot if it has one (NULL otherwise). */
static slot *slot_find(rq *q)
{
    uint64_t me = conc__sync_self_id();
    pthread_mutex_lock(&q->cli.mu);
    slot *s = q->slots_gen == conc__rlease_gen() ? q->slots : NULL;
    while (s != NULL && s->who != me) {
        s = s->next;
    }
    pthread_mutex_unlock(&q->cli.mu);
    return s;
}

typedef struct task_arg {
    const slot *s;
    bool holds;
} task_arg;

static void build_task(rq *q, conc__rconn *c, void *arg)
{
    const task_arg *a = arg;
    char kp[320];
    if (a->holds) {
        plist(q, a->s, a->s->cur, kp, sizeof kp);
    }
    conc__rconn_evalsha(c, SC_TASK, 2, 1);
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, a->holds ? kp : q->k_list);
    conc__rbuf_str(&c->out, a->holds ? "1" : "0");
}

static int rq_task_done(conc__netq *nq)
{
    rq *q = RQ(nq);
    static const char fn[] = "conc_queue_task_done";
    slot *s = q->amo ? NULL : slot_find(q);
    task_arg a = { .s = s, .holds = s != NULL && s->outstanding > 0 &&
                                     s->state[s->cur] == S_DELIVERED };
    redisReply *r = NULL;
    int err = call(q, build_task, &a, &r, 1,
                   conc__r_until(q->cli.net_timeout), fn);
    if (err != 0) {
        return err;
    }
    err = conc__rreply_want(&q->cli, r, REDIS_REPLY_INTEGER, false, fn,
                            "the task_done script");
    long long v = err == 0 ? r->integer : 0;
    conc__rreplies_free(&r, 1);
    if (err != 0) {
        return err;
    }
    if (v == -3) {
        return conc__fail(CONC_ECORRUPT, "%s: the queue's task count on %s "
                          "is not a number", fn, q->cli.where);
    }
    if (a.holds) {
        /* Acknowledged (or, -2, reclaimed after the lease ran out: the
         * redelivered copy's task_done counts it), -1 included: the
         * script took the delivery before it looked at the count. */
        s->outstanding--;
    }
    if (v == -1) {
        return conc__fail(CONC_EINVAL, "%s: called more times than messages "
                          "were put", fn);
    }
    return 0;
}

static void build_hget(rq *q, conc__rconn *c, void *arg)
{
    conc__rbuf_cmd(&c->out, 3);
    conc__rbuf_str(&c->out, "HGET");
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, arg);
}

/* The meta hash's field as a number (nil: 0). */
static int meta_num(rq *q, const char *field, long long *v, uint64_t until,
                    const char *fn)
{
    redisReply *r = NULL;
    int err = call(q, build_hget, (void *)field, &r, 1, until, fn);
    if (err != 0) {
        return err;
    }
    err = conc__rreply_want(&q->cli, r, REDIS_REPLY_STRING, true, fn, "HGET");
    *v = 0;
    if (err == 0 && r->type == REDIS_REPLY_STRING &&
        !conc__rreply_int(r, v)) {
        err = conc__fail(CONC_ECORRUPT, "%s: the queue's %s on %s is not a "
                         "number", fn, field, q->cli.where);
    }
    conc__rreplies_free(&r, 1);
    return err;
}

static int rq_join(conc__netq *nq, double timeout)
{
    rq *q = RQ(nq);
    static const char fn[] = "conc_queue_join";
    uint64_t dl = conc__r_until(timeout);
    uint64_t nap = 1000000u;
    for (;;) {
        long long tasks = 0;
        int err = meta_num(q, "tasks", &tasks,
                           conc__rcli_until(&q->cli, timeout, dl), fn);
        if (err != 0) {
            return err;
        }
        if (tasks <= 0) {
            return 0;
        }
        if (timeout == 0 || conc__now_ns() >= dl) {
            return conc__fail(CONC_ETIMEDOUT, "%s: %lld tasks still "
                              "unfinished", fn, tasks);
        }
        conc__r_nap(nap, dl);
        nap = nap * 2 > 50000000u ? 50000000u : nap * 2;
    }
}

static void build_close(rq *q, conc__rconn *c, void *arg)
{
    (void)arg;
    conc__rconn_evalsha(c, SC_CLOSE, 2, 3);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, q->sizes[0]);
    conc__rbuf_str(&c->out, q->sizes[1]);
    conc__rbuf_str(&c->out, q->sizes[2]);
}

static int rq_close(conc__netq *nq)
{
    rq *q = RQ(nq);
    static const char fn[] = "conc_queue_close";
    redisReply *r = NULL;
    int err = call(q, build_close, NULL, &r, 1,
                   conc__r_until(q->cli.net_timeout), fn);
    if (err == 0) {
        err = conc__rreply_want(&q->cli, r, REDIS_REPLY_INTEGER, false, fn,
                                "the close script");
        conc__rreplies_free(&r, 1);
    }
    return err;
}

static int rq_closed(conc__netq *nq, bool *closed)
{
    rq *q = RQ(nq);
    long long v = 0;
    int err = meta_num(q, "closed", &v, conc__r_until(q->cli.net_timeout),
                       "conc_queue_closed");
    *closed = err == 0 && v == 1;
    return err;
}

/* ---- renewal, free, make ------------------------------------------------------------ */

static void build_renew(rq *q, conc__rconn *c, void *arg)
{
    const char (*cids)[17] = arg;
    size_t n = 0;
    while (cids[n][0] != '\0') {
        n++;
    }
    conc__rconn_evalsha(c, SC_RENEW, 3, 2 + n);
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, q->k_cons);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_u64(&c->out, q->lease_ms);
    conc__rbuf_str(&c->out, q->k_pfx);
    for (size_t i = 0; i < n; i++) {
        conc__rbuf_str(&c->out, cids[i]);
    }
}

/* The lease thread's renewal of every consumer of this handle in this
 * process (up to 64 at a time; more threads than that on one handle
 * renew themselves at each get). */
static void rq_renew(conc__ritem *it)
{
    rq *q = (rq *)(void *)((char *)it - offsetof(rq, item));
    char cids[65][17];
    size_t n = 0;
    pthread_mutex_lock(&q->cli.mu);
    if (q->slots_gen == conc__rlease_gen()) {
        for (slot *s = q->slots; s != NULL && n < 64; s = s->next) {
            memcpy(cids[n++], s->cid, 17);
        }
    }
    pthread_mutex_unlock(&q->cli.mu);
    cids[n][0] = '\0';
    if (n == 0) {
        return;
    }
    double lim = (double)q->lease_ms / 3000.0;
    if (q->cli.net_timeout >= 0 && q->cli.net_timeout < lim) {
        lim = q->cli.net_timeout;
    }
    redisReply *r = NULL;
    if (call(q, build_renew, cids, &r, 1, conc__r_until(lim),
             "conc_queue (lease renewal)") == 0) {
        conc__rreplies_free(&r, 1);
    }
}

static void build_release(rq *q, conc__rconn *c, void *arg)
{
    size_t *n = arg;
    *n = 0;
    for (slot *s = q->slots; s != NULL; s = s->next) {
        for (unsigned i = 0; i < 2; i++) {
            char kp[320];
            plist(q, s, i, kp, sizeof kp);
            if (s->state[i] == S_DELIVERED) {
                conc__rbuf_cmd(&c->out, 2);
                conc__rbuf_str(&c->out, "DEL");
                conc__rbuf_str(&c->out, kp);
                (*n)++;
            } else if (s->state[i] == S_UNKNOWN) {
                conc__rconn_evalsha(c, SC_PREP, 3, 4);
                conc__rbuf_str(&c->out, kp);
                conc__rbuf_str(&c->out, q->k_cons);
                conc__rbuf_str(&c->out, q->k_list);
                conc__rbuf_str(&c->out, "r");
                conc__rbuf_str(&c->out, s->cid);
                conc__rbuf_str(&c->out, "0");
                conc__rbuf_str(&c->out, q->k_pfx);
                (*n)++;
            }
        }
        conc__rbuf_cmd(&c->out, 3);
        conc__rbuf_str(&c->out, "ZREM");
        conc__rbuf_str(&c->out, q->k_cons);
        conc__rbuf_str(&c->out, s->cid);
        (*n)++;
    }
}

/* Acknowledges what this process's consumers were delivered, gives back
 * what is in doubt, and unregisters them: one round trip, bounded by
 * FREE_LIMIT_S (free never blocks for long; what it could not do, the
 * leases undo). */
static void release_slots(rq *q)
{
    if (q->slots == NULL || q->slots_gen != conc__rlease_gen()) {
        return;
    }
    double lim = q->cli.net_timeout;
    if (lim < 0 || lim > FREE_LIMIT_S) {
        lim = FREE_LIMIT_S;
    }
    uint64_t until = conc__r_until(lim);
    conc__rconn *c = NULL;
    if (conc__rcli_take(&q->cli, &c, until, "conc_queue_free") != 0) {
        return;
    }
    size_t n = 0;
    build_release(q, c, &n);
    redisReply **rep = conc__calloc(n, sizeof *rep);
    /* detail: none: free reports nothing (a failed release lapses) */
    int err = rep == NULL ? CONC_ENOMEM
                          : conc__rconn_exchange(&q->cli, c, rep, n, until,
                                                 "conc_queue_free");
    if (err == 0) {
        conc__rreplies_free(rep, n);
    }
    c->out.len = 0;
    free(rep);
    conc__rcli_give(&q->cli, c, err == 0);
}

static void rq_free(conc__netq *nq)
{
    rq *q = RQ(nq);
    conc__rlease_remove(&q->item);
    release_slots(q);
    while (q->slots != NULL) {
        slot *s = q->slots;
        q->slots = s->next;
        free(s);
    }
    conc__rcli_fini(&q->cli);
    free(q->k_list);
    free(q->k_meta);
    free(q->k_cons);
    free(q->k_pfx);
    free(q);
}

static const conc__netq_ops ops = {
    .put_many = rq_put_many,
    .get = rq_get,
    .get_many = rq_get_many,
    .qsize = rq_qsize,
    .task_done = rq_task_done,
    .join = rq_join,
    .close = rq_close,
    .closed = rq_closed,
    .free = rq_free,
};

typedef struct declare_arg {
    const char *maxsize;
    const char *lease;
    const char *amo;
    bool create;
} declare_arg;

static void build_declare(rq *q, conc__rconn *c, void *arg)
{
    const declare_arg *a = arg;
    conc__rconn_evalsha(c, SC_DECLARE, 2, 4);
    conc__rbuf_str(&c->out, q->k_list);
    conc__rbuf_str(&c->out, q->k_meta);
    conc__rbuf_str(&c->out, a->maxsize);
    conc__rbuf_str(&c->out, a->lease);
    conc__rbuf_str(&c->out, a->amo);
    conc__rbuf_str(&c->out, a->create ? "1" : "0");
}

/* Reads the declare script's answer into the handle. */
static int declared(rq *q, const redisReply *r, const conc_queue_opts *opts,
                    const char *name, const char *fn)
{
    int err = conc__robj_declared(&q->cli, r, "queue", name, fn);
    if (err != 0) {
        return err;
    }
    const redisReply *const *e = (const redisReply *const *)r->element;
    long long maxsize = 0, lease = 0, amo = 0, closed = 0;
    if (r->elements != 5 ||
        !conc__rreply_int(e[1], &maxsize) || maxsize < 0 ||
        !conc__rreply_int(e[2], &lease) || lease < 100 ||
        !conc__rreply_int(e[3], &amo) || amo < 0 || amo > 1 ||
        !conc__rreply_int(e[4], &closed)) {
        return conc__fail(CONC_ECORRUPT, "%s: the meta hash of queue '%s' on "
                          "%s is not libconc's", fn, name, q->cli.where);
    }
    if (opts != NULL && (size_t)maxsize != opts->maxsize) {
        return conc__fail(CONC_EINVAL, "%s: queue '%s' on %s exists with "
                          "maxsize %lld, not %zu", fn, name, q->cli.where,
                          maxsize, opts->maxsize);
    }
    q->base.maxsize = (size_t)maxsize;
    if (opts == NULL || !conc__timeout_given(opts->lease)) {
        q->lease_ms = (uint64_t)lease;
    }
    if (opts == NULL) {
        q->amo = amo == 1;
    }
    return 0;
}

int conc__redis_queue_make(conc__netq **out, conc__url *u, const char *name,
                           const conc_queue_opts *opts, bool create)
{
    const char *fn = create ? "conc_queue_new" : "conc_queue_open";
    rq *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        conc__url_free(u);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the handle", fn);
    }
    conc_timeout nt = opts != NULL ? opts->net_timeout : (conc_timeout){ 0 };
    int err = conc__rcli_init(&q->cli, u, nt, scripts, SC_N, fn);
    if (err != 0) {
        free(q);
        return err;
    }
    err = conc__robj_name(&q->cli, name, &name, fn);
    double lease = 0;
    if (err == 0) {
        err = conc__robj_lease(opts != NULL ? &opts->lease : NULL, &lease, fn);
    }
    if (err == 0) {
        q->k_list = conc__robj_key('q', name, "");
        q->k_meta = conc__robj_key('q', name, ":meta");
        q->k_cons = conc__robj_key('q', name, ":cons");
        q->k_pfx = conc__robj_key('q', name, ":p:");
        if (!q->k_list || !q->k_meta || !q->k_cons || !q->k_pfx) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for key names", fn);
        }
    }
    q->lease_ms = (uint64_t)llround(lease * 1000.0);
    q->amo = opts != NULL && opts->at_most_once;
    char smax[24], slease[24];
    snprintf(smax, sizeof smax, "%zu", opts != NULL ? opts->maxsize : 0);
    snprintf(slease, sizeof slease, "%llu", (unsigned long long)q->lease_ms);
    declare_arg a = { smax, slease, q->amo ? "1" : "0", create };
    redisReply *r = NULL;
    if (err == 0) {
        err = call(q, build_declare, &a, &r, 1,
                   conc__r_until(q->cli.net_timeout), fn);
    }
    if (err == 0) {
        err = declared(q, r, create ? opts : NULL, name, fn);
        conc__rreplies_free(&r, 1);
    }
    if (err != 0) {
        conc__rcli_fini(&q->cli);
        free(q->k_list);
        free(q->k_meta);
        free(q->k_cons);
        free(q->k_pfx);
        free(q);
        return err;
    }
    snprintf(q->sizes[0], sizeof q->sizes[0], "%zu", q->base.maxsize);
    snprintf(q->sizes[1], sizeof q->sizes[1], "%llu",
             (unsigned long long)q->lease_ms);
    snprintf(q->sizes[2], sizeof q->sizes[2], "%d", q->amo ? 1 : 0);
    q->slots_gen = conc__rlease_gen();
    q->base.ops = &ops;
    conc__rlease_add(&q->item, &q->cli, rq_renew);
    *out = &q->base;
    return 0;
}
