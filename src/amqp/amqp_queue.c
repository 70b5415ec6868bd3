/* amqp_queue.c - conc_queue served by RabbitMQ (amqp://), through
 * rabbitmq-c 0.11: a durable queue, persistent messages, publisher
 * confirms, mandatory publishing, manual acknowledgements with a prefetch
 * window; at-most-once (autoack, no confirms) as an option.
 *
 * BROKER OBJECTS, for a queue NAME in the URL's vhost:
 *   queue NAME             durable classic queue, arguments x-overflow =
 *                          reject-publish always and x-max-length =
 *                          maxsize when bounded.  The messages.
 *   exchange conc.q.NAME   durable direct exchange bound to NAME with
 *                          routing key NAME.  Every put publishes here,
 *                          mandatory, so close can stop puts by deleting
 *                          it (below) and a put nobody can route (the
 *                          queue was deleted) comes back as basic.return:
 *                          an error, never a silent loss.
 *   queue conc.closed.NAME durable, empty: exists once NAME was closed.
 * A message is its body; the close marker is a message with the AMQP
 * property type "conc.close" (an empty body).
 *
 * CONNECTIONS.  rabbitmq-c is not thread-safe, and a delivery must be
 * acknowledged on the channel that received it, so each thread using a
 * handle gets a slot of its own (found by a thread-local cache, else a
 * scan of the handle's list under mu) with up to three connections, each
 * opened at its first use and used on channel 1 only:
 *   pub  publishing, in confirm mode unless at-most-once on an unbounded
 *        queue: basic.ack / basic.nack / basic.return are the only frames
 *        it receives;
 *   con  consuming (basic.qos prefetch, basic.consume): deliveries only;
 *   ctl  RPCs (qsize, closed, close, the declaration at new and open).
 * Keeping them apart means no frame ever has to be put aside for another
 * purpose.  Each new connection re-declares the queue, so a broker that
 * restarted (or lost a transient definition) is set up again by the next
 * call; the socket is libconc's own (conc__os_connect within the call's
 * deadline, after the address was resolved when the handle was made) and
 * handed to rabbitmq-c.  Any protocol or socket error drops the
 * connection; the next call opens a new one.
 *
 * DELIVERY (at least once).  con consumes with manual acks and a prefetch
 * window (.prefetch in the URL, 64 by default).  The delivery tags of one
 * channel count up by one, so a slot's unacknowledged deliveries are the
 * range [lo, hi]: task_done acknowledges lo alone; the next get (and free)
 * acknowledges all of them with one basic.ack multiple=true on hi, sent
 * without waiting (an acknowledgement has no reply).  A consumer killed
 * at any instant leaves its deliveries unacknowledged: RabbitMQ requeues
 * them when the connection drops, at their old place, with redelivered
 * set; conc_queue_redelivered() tells the caller.  A message that did not
 * fit get_into's buffer is kept in the slot and returned first by the
 * next get (it is still a delivery of this slot).  A get with timeout 0
 * that finds nothing sent ahead asks the queue once with basic.get (a
 * consumer just started has its window still on the way); if a delivery
 * arrived before the get-ok, it has the lower tag, so the probed message
 * is given back (rejected, requeued) and the delivery taken: its tag is
 * the slot's one gap, which task_done steps over.
 *
 * LIVENESS.  Heartbeats are off (the client asks for 0 at connection.tune,
 * which RabbitMQ honours): rabbitmq-c services heartbeats only inside its
 * calls, so a consumer computing for longer than two heartbeat intervals
 * would be disconnected and its message redelivered.  Without heartbeats
 * a dead consumer is still seen at once when its process dies (the kernel
 * closes its sockets; SIGKILL included), and a lost host by TCP keepalive
 * (conc__os_connect turns SO_KEEPALIVE on); the broker's consumer_timeout
 * (30 minutes by default) still bounds how long one delivery may be held.
 * On the client side every call is bounded by its own deadline: connect,
 * login (handshake timeout), each RPC (rabbitmq-c's RPC timeout, set to
 * what is left before each), the confirm wait and the delivery wait
 * (amqp_simple_wait_frame_noblock with a timeout, frame by frame: a
 * message that began to come gets net_timeout for each further frame,
 * read_content()).
 * A frozen broker therefore gives CONC_ETIMEDOUT, or CONC_EEMPTY for a get
 * (nothing came), in time; a get that has waited a whole slice (SLICE_S)
 * with time left asks the broker whether it is alive (still_there), so a
 * get under CONC_FOREVER, too, meets a frozen broker as CONC_ETIMEDOUT.
 * Puts write their frames themselves (publish_frames), each write bounded
 * by the put's deadline: rabbitmq-c's writer waits for room in the socket
 * for ever, and a broker under a memory or disk alarm stops reading from
 * publishers.
 *
 * REUSE.  A thread's connections stay open between its calls, and one
 * may break meanwhile (a broker restart, a network that cut it).  A call
 * that finds its connection broken before it sent anything that matters
 * on it opens a new one at once, once: put when its drain of what the
 * broker sent meanwhile meets the end of the connection; a get when the
 * first wait for a delivery does (deliveries read before the break are
 * handed out first, and what the lost connection held unacknowledged
 * comes again, redelivered); the calls on ctl (qsize, close...) when
 * its socket is readable, since nothing comes there between round
 * trips.  The first call after a break failed with CONC_ENET before, and
 * sent nothing.
 *
 * PUT.  A batch is published in chunks of at most CHUNK messages, each
 * under one confirm wait.  basic.nack means the queue was full
 * (reject-publish): the refused messages are published again, after a
 * pause of 1 ms doubling to 50 ms, until the deadline (CONC_EFULL).  A
 * channel closed with 404 means the exchange is gone: the queue was
 * closed (CONC_ECLOSED).  basic.return means nothing could route it.
 * At-most-once on an unbounded queue publishes transient messages without
 * confirms; the frames the broker sent meanwhile (a channel closed because
 * the queue was closed) are read at the start of the next put.  Such a
 * put is only in a socket buffer when it returns, so free waits for
 * connection.close-ok (the broker has read everything before it) up to
 * DRAIN_LIMIT_S, not the 2 s of other connections: giving up at
 * net_timeout once lost the tail of a round on a loaded machine.
 *
 * CLOSE, on ctl: declare conc.closed.NAME (new and open then see a closed
 * queue), delete the exchange (puts from here on fail), then publish the
 * marker to NAME through the default exchange: it lands behind every
 * message a put got in.  A getter that receives the marker rejects it with
 * requeue (it goes back to its place, the head) and returns CONC_ECLOSED;
 * so the next getter anywhere receives it in turn.
 *
 * NO COUNT OF TASKS.  AMQP keeps no counter: conc_queue_join returns
 * CONC_EINVAL with a detail; task_done acknowledges (above) and counts
 * nothing.
 *
 * FORK.  A child's handle must not speak on its parent's sockets: a
 * pthread_atfork child handler bumps a generation, and a slot of another
 * generation is dropped (its fds closed, nothing sent) at the child's
 * first call; the parent's deliveries stay the parent's.  The prepare
 * handler takes every handle's mu (a registry of handles), so none is
 * copied locked.
 */
#include "amqp_int.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 256
#define DEFAULT_PREFETCH 64
#define MAX_PREFETCH 65535
#define DEFAULT_NET_TIMEOUT 10.0
#define SLICE_S 2.0
#define FREE_LIMIT_S 2.0
#define DRAIN_LIMIT_S 60.0
#define GRACE_S 1.0
#define FRAME_MAX 131072
#define MAX_MSG ((size_t)128 * 1024 * 1024)
#define FOREVER UINT64_MAX

static const char CLOSE_TYPE[] = "conc.close";

/* ---- time ------------------------------------------------------------------ */

static uint64_t until_of(double seconds)
{
    if (seconds < 0 || seconds > 1e9) {
        return FOREVER;
    }
    return conc__now_ns() + (uint64_t)(seconds * 1e9);
}

static uint64_t left_ns(uint64_t until)
{
    if (until == FOREVER) {
        return FOREVER;
    }
    uint64_t now = conc__now_ns();
    return now >= until ? 0 : until - now;
}

static struct timeval tv_of(uint64_t ns)
{
    if (ns > (uint64_t)SLICE_S * 1000000000u) {
        ns = (uint64_t)SLICE_S * 1000000000u;
    }
    struct timeval tv = { .tv_sec = (time_t)(ns / 1000000000u),
                          .tv_usec = (suseconds_t)(ns % 1000000000u / 1000) };
    return tv;
}

static void nap(uint64_t ns, uint64_t until)
{
    uint64_t l = left_ns(until);
    if (ns > l) {
        ns = l;
    }
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
                           .tv_nsec = (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- the handle ----------------------------------------------------------- */

typedef struct aconn {
    amqp_connection_state_t st; /* NULL: not open */
    uint64_t seq;               /* publishes on pub's channel so far */
    /* con: contents of probed messages given back before they were read
     * (deliveries came first: take_one), still to come and be skipped */
    unsigned skip;
    /* Set where a call finds the connection broken before it sent
     * anything on it that matters (the socket closed or failed, or the
     * broker closed the connection): it was dropped, and the call may
     * open a new one at once, once (see REUSE). */
    bool broke;
    /* con: when a frame last came on it, or the broker last answered a
     * question there (see QUIET in take_one) */
    uint64_t heard_ns;
} aconn;

typedef struct slot {
    struct slot *next;
    pthread_t tid;
    uint64_t gen;
    aconn pub, con, ctl;
    uint64_t lo, hi;       /* unacknowledged delivery tags on con */
    /* Messages this thread's gets handed out and task_done has not
     * counted yet (Python's count of unfinished tasks, per thread: a
     * later get may have acknowledged them already). */
    uint64_t undone;
    uint64_t gap;          /* a tag in [lo, hi] given back (probe), or 0 */
    bool stash_full;       /* a delivery kept for the next get */
    /* At most once, the get met the close marker: it leaves (acknowledges
     * and closes con) after acks_taken, not before (take_one). */
    bool leave;
    uint64_t stash_tag;
    bool stash_redelivered;
    void *stash;
    size_t stash_len;
} slot;

typedef struct aq {
    conc__netq base;
    conc__url url;          /* owned; holds the password */
    char where[280];        /* "host:port" for details */
    conc__sockaddr addr[4];
    int naddr;
    const char *vhost, *user, *pass;
    char *name, *exch, *flag;
    bool amo;
    bool confirms;          /* pub channel in confirm mode */
    /* The broker's max_message_size + 1, learnt from its refusal of a
     * longer message (0: none refused yet): a put as long or longer is
     * CONC_ETOOBIG at once.  Relaxed: a hint, read and written by any
     * thread. */
    _Atomic size_t refused_len;
    unsigned prefetch;
    double net_timeout;
    uint64_t serial;        /* this handle, for the thread-local cache */
    pthread_mutex_t mu;     /* slots */
    slot *slots;
    struct aq *reg_next, *reg_prev;
} aq;

/* ---- registry and fork ----------------------------------------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static aq *reg_head;
static _Atomic uint64_t fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    pthread_mutex_lock(&reg_mu);
    for (aq *q = reg_head; q != NULL; q = q->reg_next) {
        pthread_mutex_lock(&q->mu);
    }
}

static void fork_parent(void)
{
    for (aq *q = reg_head; q != NULL; q = q->reg_next) {
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&reg_mu);
}

static void fork_child(void)
{
    for (aq *q = reg_head; q != NULL; q = q->reg_next) {
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_unlock(&reg_mu);
    /* Relaxed: read only by this (single-threaded) child from here on. */
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void atfork_init(void)
{
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- connections ----------------------------------------------------------- */

/* Drops a connection without a word to the broker (a broken stream, or a
 * parent's socket in a forked child): rabbitmq-c closes the fd. */
static void conn_drop(aconn *c)
{
    if (c->st != NULL) {
        amqp_destroy_connection(c->st);
        c->st = NULL;
    }
    c->seq = 0;
    c->skip = 0;
}

/* Whether the peer has ended c already: its FIN or a reset is in the
 * socket (POLLRDHUP, POLLHUP, POLLERR; deliveries still unread before it
 * do not hide it), or c was dropped.  No waiting. */
static bool conn_ended(const aconn *c)
{
    if (c->st == NULL) {
        return true;
    }
    short rev = 0;
    int r = conc__os_wait_fd(amqp_get_sockfd(c->st), POLLRDHUP, 0, &rev);
    return r < 0 ||
           (r > 0 && (rev & (POLLRDHUP | POLLHUP | POLLERR)) != 0);
}

/* The error an rpc reply stands for, with a detail naming fn and what. */
static int reply_err(const aq *q, amqp_rpc_reply_t r, const char *fn,
                     const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        int e = r.library_error;
        int code = e == AMQP_STATUS_TIMEOUT ? CONC_ETIMEDOUT
                   : e == AMQP_STATUS_NO_MEMORY ? CONC_ENOMEM
                                                : CONC_ENET;
        return conc__fail(code, "%s: %s on %s: %s", fn, what, q->where,
                          amqp_error_string2(e));
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION) {
        unsigned rc = 0;
        amqp_bytes_t text = { 0, NULL };
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            rc = m->reply_code;
            text = m->reply_text;
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            rc = m->reply_code;
            text = m->reply_text;
        }
        int tl = text.len > 200 ? 200 : (int)text.len;
        int code = rc == 403 ? CONC_EAUTH
                   : rc == 404 || rc == 406 || rc == 530 ? CONC_EINVAL
                                                          : CONC_ENET;
        return conc__fail(code, "%s: %s on %s: the broker refused (%u): "
                          "%.*s", fn, what, q->where, rc, tl,
                          text.bytes != NULL ? (const char *)text.bytes : "");
    }
    if (r.reply_type == AMQP_RESPONSE_NONE) {
        return conc__fail(CONC_ENET, "%s: %s on %s: no reply", fn, what,
                          q->where);
    }
    return 0;
}

/* The longest wait rabbitmq-c is handed, in ns: it counts what is left
 * in milliseconds in an int (24.8 days), and a longer timeout (CONC_FOREVER
 * included) made every login fail with "unknown error". */
#define RMQ_WAIT_MAX_NS ((uint64_t)2000000 * 1000000000u)

/* A rabbitmq-c timeout of what is left before until (at least 1 us, at
 * most RMQ_WAIT_MAX_NS). */
static struct timeval rmq_timeout(uint64_t until)
{
    uint64_t l = left_ns(until);
    if (l > RMQ_WAIT_MAX_NS) {
        l = RMQ_WAIT_MAX_NS;
    }
    struct timeval tv = { .tv_sec = (time_t)(l / 1000000000u),
                          .tv_usec = (suseconds_t)(l % 1000000000u / 1000) };
    if (tv.tv_sec == 0 && tv.tv_usec == 0) {
        tv.tv_usec = 1;
    }
    return tv;
}

static int set_rpc_deadline(aconn *c, uint64_t until)
{
    if (left_ns(until) == 0) {
        /* detail: the caller names the call that ran out of time */
        return CONC_ETIMEDOUT;
    }
    struct timeval tv = rmq_timeout(until);
    (void)amqp_set_rpc_timeout(c->st, &tv);
    return 0;
}

/* Whether an RPC of c failed with a channel or connection close: then the
 * close was answered by rabbitmq-c only for channel errors, so drop. */
static int rpc_check(aq *q, aconn *c, const char *fn, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->st);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    int err = reply_err(q, r, fn, what);
    conn_drop(c);
    return err;
}

static amqp_table_t queue_args(aq *q, amqp_table_entry_t *e, bool with_max)
{
    size_t n = 0;
    e[n].key = amqp_cstring_bytes("x-overflow");
    e[n].value.kind = AMQP_FIELD_KIND_UTF8;
    e[n].value.value.bytes = amqp_cstring_bytes("reject-publish");
    n++;
    if (with_max && q->base.maxsize != 0) {
        e[n].key = amqp_cstring_bytes("x-max-length");
        e[n].value.kind = AMQP_FIELD_KIND_I64;
        e[n].value.value.i64 = (int64_t)q->base.maxsize;
        n++;
    }
    return (amqp_table_t){ .num_entries = (int)n, .entries = e };
}

static int chan_open(aq *q, aconn *c, uint64_t until, const char *fn)
{
    if (set_rpc_deadline(c, until) != 0) {
        conn_drop(c);
        return conc__fail(CONC_ETIMEDOUT, "%s: no time left to open a "
                          "channel on %s", fn, q->where);
    }
    amqp_channel_open(c->st, 1);
    return rpc_check(q, c, fn, "channel.open");
}

/* After the broker closed channel 1 (a 404 or 406 answer): close-ok and
 * open it again. */
static int chan_reset(aq *q, aconn *c, uint64_t until, const char *fn)
{
    amqp_channel_close_ok_t ok = { 0 };
    if (amqp_send_method(c->st, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) !=
        AMQP_STATUS_OK) {
        conn_drop(c);
        return conc__fail(CONC_ENET, "%s: channel.close-ok to %s failed", fn,
                          q->where);
    }
    return chan_open(q, c, until, fn);
}

static bool chan_closed_with(amqp_rpc_reply_t r, unsigned code)
{
    return r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
           r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
           ((amqp_channel_close_t *)r.reply.decoded)->reply_code == code;
}

/* Whether the queue is closed: a passive declare of the flag queue (a 404
 * closes the channel, which is opened again). */
static int flag_check(aq *q, aconn *c, bool *closed, uint64_t until,
                      const char *fn)
{
    int err = set_rpc_deadline(c, until);
    if (err != 0) {
        conn_drop(c);
        return conc__fail(CONC_ETIMEDOUT, "%s: no time left on %s", fn,
                          q->where);
    }
    amqp_queue_declare(c->st, 1, amqp_cstring_bytes(q->flag), 1, 0, 0, 0,
                       amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->st);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        *closed = true;
        return 0;
    }
    if (chan_closed_with(r, 404)) {
        *closed = false;
        return chan_reset(q, c, until, fn);
    }
    err = reply_err(q, r, fn, "queue.declare of the close flag");
    conn_drop(c);
    return err;
}

/* Declares the queue, its exchange and binding (unless closed). */
static int declare(aq *q, aconn *c, uint64_t until, const char *fn)
{
    bool closed = false;
    int err = flag_check(q, c, &closed, until, fn);
    if (err != 0 || closed) {
        return err;
    }
    amqp_table_entry_t e[2];
    if (set_rpc_deadline(c, until) != 0) {
        conn_drop(c);
        return conc__fail(CONC_ETIMEDOUT, "%s: no time left to declare on "
                          "%s", fn, q->where);
    }
    amqp_queue_declare(c->st, 1, amqp_cstring_bytes(q->name), 0, 1, 0, 0,
                       queue_args(q, e, true));
    err = rpc_check(q, c, fn, "queue.declare");
    if (err == 0) {
        amqp_exchange_declare(c->st, 1, amqp_cstring_bytes(q->exch),
                              amqp_cstring_bytes("direct"), 0, 1, 0, 0,
                              amqp_empty_table);
        err = rpc_check(q, c, fn, "exchange.declare");
    }
    if (err == 0) {
        amqp_queue_bind(c->st, 1, amqp_cstring_bytes(q->name),
                        amqp_cstring_bytes(q->exch),
                        amqp_cstring_bytes(q->name), amqp_empty_table);
        err = rpc_check(q, c, fn, "queue.bind");
    }
    return err;
}

/* Connects, logs in and opens channel 1. */
static int conn_login(aq *q, aconn *c, uint64_t until, const char *fn)
{
    int fd = -1;
    int last_errno = 0;
    for (int i = 0; i < q->naddr && fd < 0; i++) {
        fd = conc__os_dial(&q->addr[i], until);
        if (fd < 0) {
            last_errno = errno;
        }
    }
    if (fd < 0) {
        errno = last_errno;
        return conc__fail_sys(last_errno == ETIMEDOUT ? CONC_ETIMEDOUT
                                                      : CONC_ENET,
                              "%s: cannot connect to %s", fn, q->where);
    }
    c->st = amqp_new_connection();
    amqp_socket_t *s = c->st != NULL ? amqp_tcp_socket_new(c->st) : NULL;
    if (s == NULL) {
        conc__os_close(fd);
        conn_drop(c);
        return conc__fail(CONC_ENOMEM, "%s: no memory for a connection", fn);
    }
    amqp_tcp_socket_set_sockfd(s, fd);
    if (left_ns(until) == 0) {
        conn_drop(c);
        return conc__fail(CONC_ETIMEDOUT, "%s: no time left to log in to "
                          "%s", fn, q->where);
    }
    struct timeval hs = rmq_timeout(until);
    (void)amqp_set_handshake_timeout(c->st, &hs);
    /* consumer_cancel_notify, which rabbitmq-c does not offer by itself
     * (it merges this table into its own capabilities): without it the
     * broker cancels the consumer of a deleted queue without a word, and
     * a get waits on a consumer that no longer exists, even once the
     * queue is declared again. */
    amqp_table_entry_t cap = {
        .key = amqp_cstring_bytes("consumer_cancel_notify"),
        .value = { .kind = AMQP_FIELD_KIND_BOOLEAN,
                   .value.boolean = 1 } };
    amqp_table_entry_t prop = {
        .key = amqp_cstring_bytes("capabilities"),
        .value = { .kind = AMQP_FIELD_KIND_TABLE,
                   .value.table = { .num_entries = 1, .entries = &cap } } };
    amqp_table_t props = { .num_entries = 1, .entries = &prop };
    /* heartbeat 0: off (see LIVENESS above). */
    amqp_rpc_reply_t r = amqp_login_with_properties(
        c->st, q->vhost, 0, FRAME_MAX, 0, &props, AMQP_SASL_METHOD_PLAIN,
        q->user, q->pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        int err;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
            /* rabbitmq-c offers authentication_failure_close, so a broker
             * refusing the credentials says so (connection.close 403:
             * CONC_EAUTH, below); one that hangs up without a word is
             * shutting down, at its connection limit, or timing the
             * handshake out: a connection lost, which a caller may try
             * again (only a broker older than RabbitMQ 3.2 hangs up on
             * wrong credentials). */
            err = conc__fail(CONC_ENET, "%s: %s closed the connection "
                             "during the login without saying why (a "
                             "broker shutting down or at its connection "
                             "limit)", fn, q->where);
        } else if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                   r.reply.id == AMQP_CONNECTION_CLOSE_METHOD &&
                   ((amqp_connection_close_t *)r.reply.decoded)
                           ->reply_code == 530) {
            err = conc__fail(CONC_EINVAL, "%s: %s refused the vhost '%s' "
                             "(no such vhost, or the user may not use it)",
                             fn, q->where, q->vhost);
        } else {
            err = reply_err(q, r, fn, "login");
        }
        conn_drop(c);
        return err;
    }
    return chan_open(q, c, until, fn);
}

/* Connects, logs in, opens channel 1 and declares. */
static int conn_open(aq *q, aconn *c, uint64_t until, const char *fn)
{
    int err = conn_login(q, c, until, fn);
    if (err == 0) {
        err = declare(q, c, until, fn);
    }
    return err;
}

/* Closes c politely: connection.close, then close-ok or the limit, then
 * the socket.  Frames are handled in order, so close-ok proves the broker
 * has taken in every publish sent before it; a socket dropped earlier
 * takes with it what the broker had not read yet (TCP buffers hold
 * megabytes: 200 000 small at-most-once puts took 7 s to drain on an idle
 * machine).  So a connection that published without confirms waits up to
 * DRAIN_LIMIT_S (net_timeout when that is longer), and when even that
 * runs out it says so in conc_errdetail(); any other waits FREE_LIMIT_S
 * at most (nothing unconfirmed rides on it). */
static void conn_close(aq *q, aconn *c)
{
    if (c->st == NULL) {
        return;
    }
    bool unconfirmed = c->seq > 0 && !q->confirms;
    double nt = q->net_timeout;
    bool nt_forever = nt < 0 || nt > 1e9;
    double lim;
    if (unconfirmed) {
        lim = nt_forever || nt > DRAIN_LIMIT_S ? nt : DRAIN_LIMIT_S;
    } else {
        lim = !nt_forever && nt < FREE_LIMIT_S ? nt : FREE_LIMIT_S;
    }
    set_rpc_deadline(c, until_of(lim));
    amqp_rpc_reply_t r = amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
    if (unconfirmed && r.reply_type != AMQP_RESPONSE_NORMAL) {
        bool late = r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                    r.library_error == AMQP_STATUS_TIMEOUT;
        (void)conc__fail(late ? CONC_ETIMEDOUT : CONC_ENET,
                         "conc_queue_free: %s %s: of the %llu at-most-once "
                         "put(s) this thread sent, those it had not read "
                         "yet are lost", q->where,
                         late ? "did not answer connection.close in time"
                              : "dropped the connection before its close-ok",
                         (unsigned long long)c->seq);
    }
    conn_drop(c);
}

static int pub_ready(aq *q, aconn *c, uint64_t until, const char *fn)
{
    if (c->st != NULL) {
        return 0;
    }
    int err = conn_open(q, c, until, fn);
    if (err == 0 && q->confirms) {
        amqp_confirm_select(c->st, 1);
        err = rpc_check(q, c, fn, "confirm.select");
    }
    return err;
}

static int con_ready(aq *q, slot *s, uint64_t until, const char *fn)
{
    aconn *c = &s->con;
    if (c->st != NULL) {
        return 0;
    }
    s->lo = 1;
    s->hi = 0;
    s->gap = 0;
    int err = conn_open(q, c, until, fn);
    if (err == 0) {
        amqp_basic_qos(c->st, 1, 0, (uint16_t)q->prefetch, 0);
        err = rpc_check(q, c, fn, "basic.qos");
    }
    if (err == 0) {
        amqp_basic_consume(c->st, 1, amqp_cstring_bytes(q->name),
                           amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        err = rpc_check(q, c, fn, "basic.consume");
    }
    if (err == 0) {
        c->heard_ns = conc__now_ns();
    }
    return err;
}

/* ---- slots ------------------------------------------------------------------ */

/* A delivery kept for the next get (stash), dropped. */
static void stash_drop(slot *s)
{
    free(s->stash);
    s->stash = NULL;
    s->stash_full = false;
}

static void slot_drop(slot *s)
{
    conn_drop(&s->pub);
    conn_drop(&s->con);
    conn_drop(&s->ctl);
    stash_drop(s);
}

static _Thread_local struct {
    uint64_t serial;
    uint64_t gen;
    slot *s;
} tl;

/* The calling thread's slot, or NULL (out of memory). */
static slot *slot_get(aq *q)
{
    /* Relaxed: fork_gen changes only in a single-threaded child. */
    uint64_t gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    if (tl.serial == q->serial && tl.gen == gen && tl.s != NULL) {
        return tl.s;
    }
    pthread_t me = pthread_self();
    pthread_mutex_lock(&q->mu);
    slot **pp = &q->slots;
    slot *found = NULL;
    while (*pp != NULL) {
        slot *s = *pp;
        if (s->gen != gen) {
            /* A parent's slot in a forked child: never speak on it. */
            *pp = s->next;
            slot_drop(s);
            free(s);
            continue;
        }
        if (pthread_equal(s->tid, me)) {
            found = s;
        }
        pp = &s->next;
    }
    if (found == NULL) {
        found = conc__calloc(1, sizeof *found);
        if (found != NULL) {
            found->tid = me;
            found->gen = gen;
            found->lo = 1;
            found->next = q->slots;
            q->slots = found;
        }
    }
    pthread_mutex_unlock(&q->mu);
    if (found != NULL) {
        tl.serial = q->serial;
        tl.gen = gen;
        tl.s = found;
    }
    return found;
}

static int no_slot(const char *fn)
{
    return conc__fail(CONC_ENOMEM, "%s: no memory for this thread's "
                      "connections", fn);
}

static uint64_t call_until(const aq *q, double t)
{
    if (t > 0 && t <= 1e9) {
        return until_of(t);
    }
    return until_of(q->net_timeout);
}

/* ---- redelivery flag (conc_queue_redelivered) ------------------------------- */

static _Thread_local struct {
    const void *q;
    bool yes;
} tl_redeliv;

bool conc__amqp_redelivered(const void *q);
bool conc__amqp_redelivered(const void *q)
{
    return tl_redeliv.q == q && tl_redeliv.yes;
}

/* ---- put ---------------------------------------------------------------------- */

enum { M_WAIT, M_ACK, M_NACK };

/* The error of the publishing channel's close m, which drops c: 404 is
 * the exchange deleted by close (CONC_ECLOSED); a 406 over the broker's
 * max_message_size is CONC_ETOOBIG, and the handle refuses a message
 * over that size from then on, before sending it (RabbitMQ's words:
 * "message size 20000 is larger than configured max size 10000"; the
 * broker announces its limit nowhere else); anything else is a channel
 * lost.  The detail is written before the drop: the text is c's. */
static int pub_closed(aq *q, aconn *c, const amqp_channel_close_t *m,
                      const char *fn)
{
    static const char over[] = "larger than configured max size ";
    unsigned code = m->reply_code;
    size_t tlen = m->reply_text.len > 200 ? 200 : m->reply_text.len;
    const char *text = m->reply_text.bytes != NULL
                           ? (const char *)m->reply_text.bytes
                           : "";
    const char *at = code == 406 ? memmem(text, tlen, over, sizeof over - 1)
                                 : NULL;
    int err;
    if (code == 404) {
        err = conc__fail(CONC_ECLOSED, "%s: the queue '%s' is closed", fn,
                         q->name);
    } else if (at != NULL) {
        err = conc__fail(CONC_ETOOBIG, "%s: %s refused a message over its "
                         "max_message_size: %.*s", fn, q->where, (int)tlen,
                         text);
        size_t max = 0, i = (size_t)(at - text) + sizeof over - 1;
        for (; i < tlen && text[i] >= '0' && text[i] <= '9' &&
               max < MAX_MSG; i++) {
            max = max * 10 + (size_t)(text[i] - '0');
        }
        if (max > 0 && max < MAX_MSG) {
            atomic_store_explicit(&q->refused_len, max + 1,
                                  memory_order_relaxed);
        }
    } else {
        err = conc__fail(CONC_ENET, "%s: %s closed the channel (%u): %.*s",
                         fn, q->where, code, (int)tlen, text);
    }
    conn_drop(c);
    return err;
}

/* Reads whatever the broker sent pub without waiting: basic.return
 * leftovers or a channel closed because the exchange is gone. */
static int pub_drain(aq *q, aconn *c, const char *fn)
{
    for (;;) {
        amqp_frame_t f;
        struct timeval z = { 0, 0 };
        int rc = amqp_simple_wait_frame_noblock(c->st, &f, &z);
        if (rc == AMQP_STATUS_TIMEOUT) {
            return 0;
        }
        if (rc != AMQP_STATUS_OK) {
            conn_drop(c);
            c->broke = true;
            return conc__fail(CONC_ENET, "%s: connection to %s lost: %s", fn,
                              q->where, amqp_error_string2(rc));
        }
        if (f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            return pub_closed(q, c, f.payload.method.decoded, fn);
        }
        if (f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            conn_drop(c);
            c->broke = true;
            return conc__fail(CONC_ENET, "%s: %s closed the connection", fn,
                              q->where);
        }
        amqp_maybe_release_buffers(c->st);
    }
}

/* Big-endian stores for publish_frames. */
static unsigned char *be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return p + 2;
}

static unsigned char *be32(unsigned char *p, uint32_t v)
{
    return be16(be16(p, (uint16_t)(v >> 16)), (uint16_t)v);
}

static unsigned char *be64(unsigned char *p, uint64_t v)
{
    return be32(be32(p, (uint32_t)(v >> 32)), (uint32_t)v);
}

/* Writes iov[0..n) to fd, waiting for room in the socket up to until
 * and at most stall_ns after the socket last took bytes (*last, updated):
 * 1 written; 0 until passed, 2 the socket took nothing for stall_ns (part
 * may be written either way); -1 with errno. */
static int send_until(int fd, struct iovec *iov, int n, uint64_t until,
                      uint64_t stall_ns, uint64_t *last)
{
    while (n > 0) {
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t k = conc__os_sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -1;
            }
            short rev = 0;
            bool stall = stall_ns != UINT64_MAX &&
                         *last + stall_ns < until;
            int w = conc__os_wait_fd(fd, POLLOUT,
                                     stall ? *last + stall_ns : until, &rev);
            if (w < 0) {
                return w;
            }
            if (w == 0) {
                return stall ? 2 : 0;
            }
            continue;
        }
        *last = conc__now_ns();
        size_t done = (size_t)k;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 1;
}

/* Body frames sent by one sendmsg of publish_frames. */
enum { BODY_FRAMES_PER_SEND = 128 };

/* basic.publish of m on channel 1 (mandatory, the given delivery mode):
 * its method, content header and body frames, written by libconc, each
 * wait for room bounded by until and by net_timeout without progress
 * (a slow broker that keeps reading is no frozen one).  rabbitmq-c's own
 * writer waits for room in the socket without a deadline, so a broker
 * that stopped reading (a memory or disk alarm blocks publishers; a
 * frozen broker) held a put of more than a socket buffer for as long as
 * that lasted.  0; CONC_ETIMEDOUT or CONC_ENET, after which a frame may
 * be half sent: the caller drops the connection, and the broker discards
 * a message whose content it did not get whole. */
static int publish_frames(aq *q, aconn *c, const conc_msg *m,
                          uint8_t mode, uint64_t until, const char *fn)
{
    /* As until_of: CONC_FOREVER (and anything past 1e9 s) is no bound. */
    uint64_t stall = q->net_timeout < 0 || q->net_timeout > 1e9
                         ? FOREVER
                         : (uint64_t)(q->net_timeout * 1e9);
    uint64_t last = conc__now_ns();
    size_t elen = strlen(q->exch), rlen = strlen(q->name);
    int fmax = amqp_get_frame_max(c->st);
    if (elen > 255 || rlen > 255 || fmax <= 8) {
        return conc__fail(CONC_EINVAL, "%s: a name over 255 bytes, or a "
                          "frame_max of %d from %s", fn, fmax, q->where);
    }
    size_t chunk = (size_t)fmax - 8;
    /* method frame, content header frame */
    unsigned char head[7 + 9 + 255 + 255 + 1 + 1 + 7 + 15 + 1];
    unsigned char *p = head;
    *p++ = AMQP_FRAME_METHOD;
    p = be16(p, 1);
    unsigned char *size_at = p;
    p += 4;
    unsigned char *payload = p;
    p = be16(p, 60); /* basic */
    p = be16(p, 40); /* publish */
    p = be16(p, 0);  /* reserved */
    *p++ = (unsigned char)elen;
    memcpy(p, q->exch, elen);
    p += elen;
    *p++ = (unsigned char)rlen;
    memcpy(p, q->name, rlen);
    p += rlen;
    *p++ = 1; /* mandatory, not immediate */
    be32(size_at, (uint32_t)(p - payload));
    *p++ = AMQP_FRAME_END;
    *p++ = AMQP_FRAME_HEADER;
    p = be16(p, 1);
    p = be32(p, 15);
    p = be16(p, 60);          /* basic */
    p = be16(p, 0);           /* weight */
    p = be64(p, m->len);
    p = be16(p, AMQP_BASIC_DELIVERY_MODE_FLAG);
    *p++ = mode;
    *p++ = AMQP_FRAME_END;
    static unsigned char end = AMQP_FRAME_END;
    unsigned char fh[BODY_FRAMES_PER_SEND][7];
    struct iovec iov[1 + 3 * BODY_FRAMES_PER_SEND];
    int fd = amqp_get_sockfd(c->st);
    size_t off = 0;
    bool first = true;
    while (first || off < m->len) {
        int n = 0;
        if (first) {
            iov[n++] = (struct iovec){ head, (size_t)(p - head) };
            first = false;
        }
        for (int k = 0; k < BODY_FRAMES_PER_SEND && off < m->len; k++) {
            size_t len = m->len - off < chunk ? m->len - off : chunk;
            fh[k][0] = AMQP_FRAME_BODY;
            be32(be16(&fh[k][1], 1), (uint32_t)len);
            iov[n++] = (struct iovec){ fh[k], 7 };
            iov[n++] = (struct iovec){ (char *)m->data + off, len };
            iov[n++] = (struct iovec){ &end, 1 };
            off += len;
        }
        int w = send_until(fd, iov, n, until, stall, &last);
        if (w == 0 || w == 2) {
            return conc__fail(CONC_ETIMEDOUT, "%s: %s %s (a memory or disk "
                              "alarm blocks publishers, or the broker is "
                              "frozen)", fn, q->where,
                              w == 2 ? "took no bytes for net_timeout"
                                     : "took the message too slowly for "
                                       "the timeout");
        }
        if (w < 0) {
            return conc__fail_sys(CONC_ENET, "%s: publishing to %s", fn,
                                  q->where);
        }
    }
    return 0;
}

/* Publishes msgs[i] for every i with st[i] != M_ACK, then waits for their
 * confirms (when confirms are on) until `until`.  st[] is updated; *ret is
 * set when the broker returned a message (unroutable). */
/* The deadline of a round's confirm wait, from now: net_timeout, but
 * never past hard (the call's deadline, with its floor; FOREVER for 0 and
 * CONC_FOREVER).  Taken after the writes and again at each confirm that
 * comes, so a long round to a broker that keeps answering is no frozen
 * one. */
static uint64_t confirm_until(const aq *q, uint64_t hard)
{
    uint64_t nt = until_of(q->net_timeout);
    return nt < hard ? nt : hard;
}

static int publish_round(aq *q, aconn *c, const conc_msg *msgs, uint8_t *st,
                         size_t n, uint64_t hard, bool *ret, const char *fn)
{
    uint64_t seq_of[CHUNK];
    size_t waiting = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i] == M_ACK) {
            continue;
        }
        int err = publish_frames(q, c, &msgs[i], q->amo ? 1 : 2, hard,
                                 fn);
        if (err != 0) {
            conn_drop(c);
            return err;
        }
        seq_of[i] = ++c->seq; /* free drains a connection that published */
        if (!q->confirms) {
            /* Written whole: as far as an unconfirmed put can tell, it
             * went in (*done counts it, so a retry does not send it
             * again). */
            st[i] = M_ACK;
            continue;
        }
        st[i] = M_WAIT;
        waiting++;
    }
    if (!q->confirms) {
        for (size_t i = 0; i < n; i++) {
            st[i] = M_ACK;
        }
        return 0;
    }
    uint64_t until = confirm_until(q, hard);
    while (waiting > 0) {
        uint64_t l = left_ns(until);
        if (l == 0) {
            conn_drop(c); /* confirms still owed: out of step */
            return conc__fail(CONC_ETIMEDOUT, "%s: %s did not confirm %zu "
                              "publish(es) in time", fn, q->where, waiting);
        }
        amqp_frame_t f;
        struct timeval tv = tv_of(l);
        amqp_maybe_release_buffers(c->st);
        int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) {
            continue;
        }
        if (rc != AMQP_STATUS_OK) {
            conn_drop(c);
            return conc__fail(CONC_ENET, "%s: connection to %s lost while "
                              "waiting for confirms: %s", fn, q->where,
                              amqp_error_string2(rc));
        }
        if (f.frame_type != AMQP_FRAME_METHOD) {
            continue; /* a returned message's header or body */
        }
        amqp_method_number_t id = f.payload.method.id;
        uint64_t tag = 0;
        bool multiple = false;
        uint8_t to = M_ACK;
        if (id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *m = f.payload.method.decoded;
            tag = m->delivery_tag;
            multiple = m->multiple;
        } else if (id == AMQP_BASIC_NACK_METHOD) {
            amqp_basic_nack_t *m = f.payload.method.decoded;
            tag = m->delivery_tag;
            multiple = m->multiple;
            to = M_NACK;
        } else if (id == AMQP_BASIC_RETURN_METHOD) {
            *ret = true;
            continue;
        } else if (id == AMQP_CHANNEL_CLOSE_METHOD) {
            return pub_closed(q, c, f.payload.method.decoded, fn);
        } else if (id == AMQP_CONNECTION_CLOSE_METHOD) {
            conn_drop(c);
            return conc__fail(CONC_ENET, "%s: %s closed the connection", fn,
                              q->where);
        } else {
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (st[i] == M_WAIT &&
                (seq_of[i] == tag || (multiple && seq_of[i] <= tag))) {
                st[i] = to;
                waiting--;
            }
        }
        until = confirm_until(q, hard);
    }
    return 0;
}

/* Whether one of msgs[0..n) is as long as a message the broker refused
 * as over its max_message_size (pub_closed). */
static bool over_refused(aq *q, const conc_msg *msgs, size_t n)
{
    size_t refused = atomic_load_explicit(&q->refused_len,
                                          memory_order_relaxed);
    for (size_t i = 0; refused > 0 && i < n; i++) {
        if (msgs[i].len >= refused) {
            return true;
        }
    }
    return false;
}

static int aq_put_many(conc__netq *nq, const conc_msg *msgs, size_t n,
                       size_t *done, double timeout, const char *fn)
{
    aq *q = (aq *)nq;
    size_t refused = atomic_load_explicit(&q->refused_len,
                                          memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].len > MAX_MSG) {
            return conc__fail(CONC_ETOOBIG, "%s: msgs[%zu] is %zu bytes, "
                              "over the %zu this backend sends", fn, i,
                              msgs[i].len, MAX_MSG);
        }
        if (refused > 0 && msgs[i].len >= refused) {
            return conc__fail(CONC_ETOOBIG, "%s: msgs[%zu] is %zu bytes, "
                              "over the max_message_size of %s (%zu, "
                              "learnt from its refusal of one)", fn, i,
                              msgs[i].len, q->where, refused - 1);
        }
    }
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    uint64_t until = timeout == 0 || timeout == CONC_FOREVER
                         ? until_of(q->net_timeout)
                         : until_of(timeout);
    uint64_t wait_until = timeout == CONC_FOREVER ? FOREVER : until;
    size_t off = 0;
    bool redialed = false;
    conc__detail_kept kept; /* put back after a redial (REUSE) */
    conc__detail_keep(&kept);
    while (off < n) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        uint8_t st[CHUNK];
        memset(st, M_NACK, k);
        uint64_t nap_ns = 1000000;
        for (;;) {
            int err = pub_ready(q, &s->pub, until, fn);
            if (err == 0) {
                s->pub.broke = false;
                err = pub_drain(q, &s->pub, fn);
                if (err == CONC_ETOOBIG &&
                    !over_refused(q, msgs + off, n - off)) {
                    /* The refusal of an earlier message (at most once:
                     * not confirmed, so read now).  Its limit is learnt,
                     * this call's messages are under it, and the
                     * connection was dropped: go on with a new one. */
                    continue;
                }
                if (err == CONC_ENET && s->pub.broke && !redialed) {
                    redialed = true; /* REUSE */
                    conc__detail_put_back(&kept);
                    continue;
                }
            }
            bool ret = false;
            if (err == 0) {
                /* A round's bound: what is left of the call, but never
                 * less than GRACE_S (the broker answers a full queue with
                 * a nack, which must be told from silence); none for 0
                 * and CONC_FOREVER.  Besides it, the writes and the
                 * confirm wait each end after net_timeout without
                 * progress (publish_frames, confirm_until). */
                uint64_t hard = FOREVER;
                if (timeout > 0 && timeout != CONC_FOREVER) {
                    uint64_t g = until_of(GRACE_S);
                    hard = until > g ? until : g;
                }
                err = publish_round(q, &s->pub, msgs + off, st, k, hard,
                                    &ret, fn);
            }
            size_t pre = 0;
            while (pre < k && st[pre] == M_ACK) {
                pre++;
            }
            if (err != 0) {
                *done = off + pre;
                return err;
            }
            if (ret) {
                *done = off + pre;
                return conc__fail(CONC_EINVAL, "%s: the broker returned a "
                                  "message as unroutable: the queue '%s' "
                                  "was deleted from %s", fn, q->name,
                                  q->where);
            }
            if (pre == k) {
                break;
            }
            /* Refused for room (reject-publish): publish again later. */
            if (timeout == 0 || left_ns(wait_until) == 0) {
                *done = off + pre;
                return conc__fail(CONC_EFULL, "%s: the queue '%s' is full "
                                  "(maxsize %zu)", fn, q->name,
                                  q->base.maxsize);
            }
            nap(nap_ns, wait_until);
            nap_ns = nap_ns * 2 > 50000000 ? 50000000 : nap_ns * 2;
            if (timeout != CONC_FOREVER) {
                until = wait_until;
            } else {
                until = until_of(q->net_timeout);
            }
        }
        off += k;
    }
    *done = n;
    return 0;
}

/* ---- get ---------------------------------------------------------------------- */

/* Acknowledges the slot's deliveries up to tag (one basic.ack
 * multiple); tag is at least lo - 1. */
static void ack_upto(slot *s, uint64_t tag)
{
    if (s->con.st != NULL && s->lo <= tag) {
        if (amqp_basic_ack(s->con.st, 1, tag, 1) != AMQP_STATUS_OK) {
            /* The connection is gone: the broker requeues them. */
            conn_drop(&s->con);
        }
    }
    s->lo = tag + 1;
    if (s->gap <= tag) {
        s->gap = 0;
    }
}

/* Acknowledges every delivery of the slot. */
static void ack_all(slot *s)
{
    ack_upto(s, s->hi);
}

typedef struct got {
    conc_msg *msg;  /* into *msg, else into buf */
    void *buf;
    size_t cap;
    size_t *len;
} got;

/* Hands a delivery's body to the caller.  CONC_ETOOBIG when buf is too
 * small (the caller keeps the delivery in the stash). */
static int hand_over(const void *body, size_t n, got *g)
{
    if (g->msg != NULL) {
        void *p = NULL;
        if (n > 0) {
            p = conc__malloc(n);
            if (p == NULL) {
                return conc__fail(CONC_ENOMEM, "conc_queue_get: no memory "
                                  "for a message of %zu bytes", n);
            }
            memcpy(p, body, n);
        }
        g->msg->data = p;
        g->msg->len = n;
        return 0;
    }
    *g->len = n;
    if (n > g->cap) {
        return conc__fail(CONC_ETOOBIG, "conc_queue_get_into: the message "
                          "is %zu bytes, the buffer %zu", n, g->cap);
    }
    if (n > 0) {
        memcpy(g->buf, body, n);
    }
    return 0;
}

static bool is_marker(const amqp_envelope_t *e)
{
    const amqp_basic_properties_t *p = &e->message.properties;
    return (p->_flags & AMQP_BASIC_TYPE_FLAG) &&
           p->type.len == sizeof CLOSE_TYPE - 1 &&
           memcmp(p->type.bytes, CLOSE_TYPE, p->type.len) == 0;
}

/* A rabbitmq-c status as the reply reply_err() reads. */
static amqp_rpc_reply_t lib_reply(int status)
{
    return (amqp_rpc_reply_t){ .reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION,
                               .library_error = status };
}

/* Reads the content of a message whose method (basic.deliver or
 * basic.get-ok) was read: its header frame and body frames, each waited
 * for net_timeout at most (a deadline per frame, not per message: a big
 * message on a slow link still comes, a broker that stopped sending does
 * not hold the call; the get's own timeout is about a message coming at
 * all, and one that began to come is finished, or given up, here).
 * rabbitmq-c's own reader (amqp_read_message, which amqp_consume_message
 * calls once the method is in) waits for them with no deadline, so a
 * broker frozen or stalled between the method and the last body frame
 * held a get for ever.  The header's body size is
 * checked before anything is allocated for it, and every frame's channel,
 * type and length against what came before.  Of the properties only the
 * type is kept: it marks the close marker (is_marker()), and libconc
 * reads no other.  0 with *m filled (amqp_destroy_message frees it), or
 * CONC_ETIMEDOUT, CONC_ECORRUPT, CONC_ENOMEM, CONC_ENET, with the
 * connection dropped (the rest of the message would still be on its
 * way).  first: the header frame when the caller read it already, else
 * NULL. */
static int read_content(aq *q, aconn *c, amqp_message_t *m,
                        const amqp_frame_t *first, const char *fn)
{
    memset(m, 0, sizeof *m);
    init_amqp_pool(&m->pool, 4096);
    amqp_frame_t f;
    size_t size = 0, in = 0;
    int err = 0;
    uint64_t until = until_of(q->net_timeout);
    for (bool header = true; err == 0 && (header || in < size);) {
        struct timeval tv = tv_of(left_ns(until));
        int rc = AMQP_STATUS_OK;
        if (first != NULL) {
            f = *first; /* the header, read by the caller */
            first = NULL;
        } else {
            rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
        }
        if (rc == AMQP_STATUS_TIMEOUT && left_ns(until) > 0) {
            continue; /* a slice (tv_of) ended, not the deadline */
        }
        if (rc == AMQP_STATUS_TIMEOUT) {
            err = header ? conc__fail(CONC_ETIMEDOUT, "%s: %s stopped "
                                      "sending a message after its "
                                      "method, before its header",
                                      fn, q->where)
                         : conc__fail(CONC_ETIMEDOUT, "%s: %s stopped "
                                      "sending a message halfway (%zu of "
                                      "its %zu bytes in)",
                                      fn, q->where, in, size);
        } else if (rc != AMQP_STATUS_OK) {
            err = reply_err(q, lib_reply(rc), fn, "reading a message");
        } else if (f.channel != 1 ||
                   f.frame_type != (header ? AMQP_FRAME_HEADER
                                           : AMQP_FRAME_BODY) ||
                   (header &&
                    (f.payload.properties.class_id != AMQP_BASIC_CLASS ||
                     f.payload.properties.body_size > MAX_MSG)) ||
                   (!header &&
                    f.payload.body_fragment.len > size - in)) {
            err = conc__fail(CONC_ECORRUPT, "%s: %s sent a message that "
                             "is not one (a frame out of place, or longer "
                             "than it said or than %zu bytes)", fn,
                             q->where, MAX_MSG);
        } else if (header) {
            until = until_of(q->net_timeout); /* the next frame's */
            header = false;
            size = (size_t)f.payload.properties.body_size;
            const amqp_basic_properties_t *p = f.payload.properties.decoded;
            if (p != NULL && (p->_flags & AMQP_BASIC_TYPE_FLAG)) {
                void *t = amqp_pool_alloc(&m->pool, p->type.len + 1);
                if (t == NULL) {
                    err = CONC_ENOMEM; /* detail: set below */
                } else {
                    memcpy(t, p->type.bytes, p->type.len);
                    m->properties._flags = AMQP_BASIC_TYPE_FLAG;
                    m->properties.type = (amqp_bytes_t){ p->type.len, t };
                }
            }
            m->body = amqp_bytes_malloc(size);
            if (size > 0 && m->body.bytes == NULL) {
                err = CONC_ENOMEM; /* detail: set below */
            }
            if (err == CONC_ENOMEM) {
                err = conc__fail(err, "%s: no memory for a message of %zu "
                                 "bytes", fn, size);
            }
        } else {
            until = until_of(q->net_timeout); /* the next frame's */
            memcpy((char *)m->body.bytes + in,
                   f.payload.body_fragment.bytes,
                   f.payload.body_fragment.len);
            in += f.payload.body_fragment.len;
        }
    }
    if (err != 0) {
        amqp_destroy_message(m);
        memset(m, 0, sizeof *m);
        conn_drop(c);
    }
    return err;
}

/* What probe() returns when deliveries came before its get-ok (below). */
#define PROBE_BEHIND 1

/* basic.get, for a get with timeout 0 that found nothing sent ahead (the
 * prefetch window of a consumer just started is still on its way): one
 * round trip asks the queue itself.  0 with *e filled, or CONC_EEMPTY.
 * Deliveries that came before the get-ok (rabbitmq-c keeps their frames
 * for the next wait) have lower tags, and the get-ok's content comes
 * after them: then PROBE_BEHIND, with only e->delivery_tag set, for
 * take_one to give the message back and skip its content. */
static int probe(aq *q, aconn *c, amqp_envelope_t *e, const char *fn)
{
    set_rpc_deadline(c, until_of(q->net_timeout));
    amqp_rpc_reply_t r = amqp_basic_get(c->st, 1,
                                        amqp_cstring_bytes(q->name), 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        int err = reply_err(q, r, fn, "basic.get");
        conn_drop(c);
        return err;
    }
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) {
        return conc__fail(CONC_EEMPTY, "%s: the queue '%s' is empty", fn,
                          q->name);
    }
    amqp_basic_get_ok_t *ok = r.reply.decoded;
    memset(e, 0, sizeof *e);
    e->channel = 1;
    e->delivery_tag = ok->delivery_tag;
    e->redelivered = ok->redelivered;
    if (amqp_frames_enqueued(c->st)) {
        return PROBE_BEHIND;
    }
    return read_content(q, c, &e->message, NULL, fn);
}

/* One round trip on the consumer's channel that changes nothing:
 * basic.qos with the window it has already, bounded by until.  Its reply
 * says the broker is there, and has read every frame sent before it on
 * the channel.  Frames of deliveries that arrive meanwhile are kept by
 * rabbitmq-c, and the next amqp_simple_wait_frame_noblock returns them
 * first, in order.  why: the detail's words for it. */
static int round_trip(aq *q, aconn *c, uint64_t until, const char *fn,
                      const char *why)
{
    set_rpc_deadline(c, until);
    amqp_basic_qos(c->st, 1, 0, (uint16_t)q->prefetch, 0);
    return rpc_check(q, c, fn, why);
}

/* A consumer that waited a whole slice for a delivery, with time left,
 * asks the broker whether it is there (round_trip).  A frozen broker is
 * so CONC_ETIMEDOUT within a slice and net_timeout, even under
 * CONC_FOREVER, where waiting for deliveries alone would never tell it
 * from an empty queue. */
static int still_there(aq *q, aconn *c, const char *fn)
{
    return round_trip(q, c, until_of(q->net_timeout), fn,
                      "basic.qos, asking whether it is alive");
}

static int take_one(aq *q, slot *s, amqp_envelope_t *e, uint64_t until,
                    bool may_probe, const char *fn)
{
    aconn *c = &s->con;
    bool probed = false;
    for (;;) {
        uint64_t l = left_ns(until);
        struct timeval tv = tv_of(l);
        /* A wait cut to a whole slice (not the call's end): if nothing
         * comes, the broker is asked whether it is alive. */
        bool whole_slice = l > (uint64_t)(SLICE_S * 1e9);
        amqp_maybe_release_buffers(c->st);
        /* The frames one by one (rabbitmq-c's amqp_consume_message would
         * wait for a message's content without a deadline). */
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
        int err = 0;
        if (rc == AMQP_STATUS_OK) {
            c->heard_ns = conc__now_ns();
        }
        if (rc == AMQP_STATUS_TIMEOUT && may_probe && !probed &&
            s->gap == 0 && left_ns(until) == 0) {
            probed = true;
            err = probe(q, c, e, fn);
            if (err == 0 || err == CONC_EEMPTY || err == PROBE_BEHIND) {
                c->heard_ns = conc__now_ns(); /* it answered */
            }
            if (err == CONC_EEMPTY) {
                continue; /* a delivery may have come meanwhile */
            }
            if (err == PROBE_BEHIND) {
                /* A delivery came before the get-ok: it has a lower tag,
                 * and the next multiple ack would cover it unseen.  Give
                 * the probed message back and take the delivery first;
                 * the probed content, which follows the deliveries, is
                 * skipped when it comes. */
                (void)amqp_basic_reject(c->st, 1, e->delivery_tag, 1);
                s->gap = e->delivery_tag; /* task_done steps over it */
                c->skip++;
                continue;
            }
            if (err != 0) {
                return err;
            }
        } else if (rc == AMQP_STATUS_TIMEOUT) {
            if (left_ns(until) == 0 &&
                conc__now_ns() - c->heard_ns >= (uint64_t)(SLICE_S * 1e9)) {
                /* QUIET: nothing came on this connection for a slice,
                 * across calls: gets shorter than a slice never reach the
                 * question below, and a connection that stalled (the
                 * network holds it, or the broker froze) would say "empty"
                 * to them for ever.  Asked now, up to GRACE_S past the
                 * call's end (net_timeout if shorter); an answer lets the
                 * get look once more, without waiting. */
                double g = GRACE_S < q->net_timeout ? GRACE_S
                                                    : q->net_timeout;
                err = round_trip(q, c, until_of(g), fn,
                                 "basic.qos, asking whether it is alive");
                if (err != 0) {
                    return err;
                }
                c->heard_ns = conc__now_ns();
                continue;
            }
            if (left_ns(until) == 0) {
                return conc__fail(CONC_EEMPTY, "%s: the queue '%s' stayed "
                                  "empty", fn, q->name);
            }
            /* Only with net_timeout left: the question never takes the
             * call past its own timeout (rabbitmq-c may end a wait up to
             * a millisecond early, so a short get also lands here). */
            if (whole_slice &&
                left_ns(until) >= (uint64_t)(q->net_timeout * 1e9)) {
                err = still_there(q, c, fn);
                if (err != 0) {
                    return err;
                }
                c->heard_ns = conc__now_ns();
            }
            continue;
        } else if (rc != AMQP_STATUS_OK) {
            err = reply_err(q, lib_reply(rc), fn, "waiting for a delivery");
            conn_drop(c);
            c->broke = true;
            return err;
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.payload.method.id == AMQP_BASIC_DELIVER_METHOD &&
                   f.channel == 1) {
            const amqp_basic_deliver_t *d = f.payload.method.decoded;
            memset(e, 0, sizeof *e);
            e->channel = 1;
            e->delivery_tag = d->delivery_tag;
            e->redelivered = d->redelivered;
            err = read_content(q, c, &e->message, NULL, fn);
            if (err != 0) {
                return err;
            }
        } else if (f.frame_type == AMQP_FRAME_HEADER && f.channel == 1 &&
                   c->skip > 0) {
            amqp_message_t gone; /* a probed message given back */
            err = read_content(q, c, &gone, &f, fn);
            if (err != 0) {
                return err;
            }
            amqp_destroy_message(&gone);
            c->skip--;
            continue;
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.channel <= 1 &&
                   f.payload.method.id != AMQP_BASIC_DELIVER_METHOD &&
                   f.payload.method.id != AMQP_CHANNEL_CLOSE_METHOD &&
                   f.payload.method.id != AMQP_CONNECTION_CLOSE_METHOD &&
                   f.payload.method.id != AMQP_BASIC_CANCEL_METHOD) {
            continue; /* nothing a consumer needs (basic.qos-ok...) */
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
            conn_drop(c);
            return conc__fail(CONC_ECORRUPT, "%s: %s sent a delivery "
                              "libconc did not ask for (channel %u)", fn,
                              q->where, (unsigned)f.channel);
        } else if (f.frame_type == AMQP_FRAME_METHOD) {
            conn_drop(c);
            return conc__fail(CONC_ENET, "%s: %s stopped the consumer "
                              "(queue deleted, or the connection closed)",
                              fn, q->where);
        } else {
            conn_drop(c);
            return conc__fail(CONC_ECORRUPT, "%s: %s sent a frame of type "
                              "%u where a delivery begins", fn, q->where,
                              (unsigned)f.frame_type);
        }
        /* A message: the probed one or a delivery. */
        if (is_marker(e)) {
            (void)amqp_basic_reject(c->st, 1, e->delivery_tag, 1);
            /* Acknowledge what came before it, then leave: a consumer
             * that stayed would hold the marker back from the others in
             * its prefetch window.  The next get consumes anew (and
             * meets the marker again).  At most once, get_n does both
             * after acks_taken: closing first left it no connection to
             * prove the acknowledgements on, and the batch was lost. */
            if (q->amo) {
                s->leave = true;
            } else {
                ack_all(s);
                conn_close(q, c);
            }
            amqp_destroy_envelope(e);
            return conc__fail(CONC_ECLOSED, "%s: the queue '%s' is closed "
                              "and drained", fn, q->name);
        }
        return 0;
    }
}

/* Takes back what a get handed over, when it must not keep it: the
 * first k messages freed, or get_into's length zeroed. */
static void got_undo(got *g, size_t k)
{
    if (g->msg != NULL) {
        for (size_t i = 0; i < k; i++) {
            conc_msg_free(&g->msg[i]);
        }
    } else if (g->len != NULL) {
        *g->len = 0; /* get_into: no message */
    }
}

static void note_delivery(slot *s, const amqp_envelope_t *e)
{
    if (s->lo > s->hi) {
        s->lo = e->delivery_tag;
    }
    s->hi = e->delivery_tag;
    if (e->redelivered) {
        tl_redeliv.yes = true;
    }
}

/* At most once: acknowledges every delivery of the slot and waits for
 * the broker to have taken the acknowledgement, before the caller is
 * handed them.  An acknowledgement has no reply, so a round_trip after
 * it proves that the broker read it.  Handing over
 * first and acknowledging after, without waiting, gave a message twice
 * whenever the connection broke in between (deliveries read from a
 * connection that was cut were handed out, their acknowledgement never
 * arrived, and the broker gave them to the next consumer).  0, or
 * CONC_ENET / CONC_ETIMEDOUT with the connection dropped. */
static int acks_taken(aq *q, slot *s, uint64_t upto, uint64_t until,
                      bool *unsent, const char *fn)
{
    /* A connection whose end (or a reset) is already in its socket
     * cannot deliver the acknowledgement: the broker gives these
     * deliveries back to the queue, and the caller may redial (REUSE).
     * So may it when the acknowledgement could not be written. */
    *unsent = conn_ended(&s->con);
    if (!*unsent) {
        ack_upto(s, upto);
        *unsent = s->con.st == NULL;
    }
    if (*unsent) {
        conn_drop(&s->con);
        return conc__fail(CONC_ENET, "%s: the connection to %s broke "
                          "before the deliveries were acknowledged", fn,
                          q->where);
    }
    return round_trip(q, &s->con, until, fn,
                      "basic.qos, after acknowledging");
}

/* The bound on acks_taken's round trip: net_timeout, and within the
 * call's own deadline for a get given a finite timeout (0 included), but
 * never less than GRACE_S (a delivery that came at the last moment must
 * not be lost to a round trip cut at once). */
static uint64_t acks_until(const aq *q, double timeout, uint64_t until)
{
    uint64_t nt = until_of(q->net_timeout);
    if (timeout != CONC_FOREVER) {
        uint64_t g = until_of(GRACE_S);
        uint64_t u = until > g ? until : g;
        return u < nt ? u : nt;
    }
    return nt;
}

/* REUSE for a get: the detail of the break put back, and a new consumer
 * connection within the call's own deadline (until; a fresh deadline of
 * the whole timeout let a get run twice its timeout), net_timeout for 0
 * and CONC_FOREVER. */
static int redial_con(aq *q, slot *s, double timeout, uint64_t until,
                      const conc__detail_kept *kept, const char *fn)
{
    conc__detail_put_back(kept);
    return con_ready(q, s,
                     timeout > 0 && timeout != CONC_FOREVER
                         ? until
                         : call_until(q, timeout),
                     fn);
}

/* The common body of get and get_many: up to n deliveries. */
static int get_n(aq *q, got *g, size_t n, size_t *gotn, double timeout,
                 const char *fn)
{
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    tl_redeliv.q = q;
    tl_redeliv.yes = false;
    uint64_t until = timeout == CONC_FOREVER ? FOREVER : until_of(timeout);
    if (s->stash_full && s->con.st == NULL) {
        /* Its delivery was on a connection since lost: the broker gives
         * it back to the queue, and this copy would be a second. */
        stash_drop(s);
    }
    if (s->stash_full) {
        int err = hand_over(s->stash, s->stash_len, g);
        if (err != 0) {
            return err;
        }
        bool unsent = false;
        if (q->amo) {
            /* At most once: its acknowledgement was held back (below)
             * and is proven now, before the caller may keep it. */
            err = acks_taken(q, s, s->stash_tag,
                             acks_until(q, timeout, until), &unsent, fn);
        }
        if (err == 0) {
            tl_redeliv.yes = s->stash_redelivered;
            stash_drop(s);
            s->undone++;
            *gotn = 1;
            return 0;
        }
        got_undo(g, 1);
        stash_drop(s);
        if (!unsent) {
            return err;
        }
        /* It goes back to the queue; the get goes on as one without it
         * (con_ready opens a new connection: REUSE). */
    }
    ack_all(s);
    /* One try at the consumer's connection, as put makes at its own: a
     * broker that refuses it is CONC_ENET at once, one that does not
     * answer it in time (the call's timeout; net_timeout for 0 and
     * CONC_FOREVER) CONC_ETIMEDOUT.  Trying again until the timeout
     * turned an unreachable broker into a get that never returned under
     * CONC_FOREVER.  After a broker restart this one try reconnects. */
    int err = con_ready(q, s, call_until(q, timeout), fn);
    if (err != 0) {
        return err;
    }
    size_t k = 0;
    bool redialed = false;
    conc__detail_kept kept; /* put back after a redial (REUSE) */
    conc__detail_keep(&kept);
again:
    while (k < n) {
        amqp_envelope_t e;
        s->con.broke = false;
        err = take_one(q, s, &e, k == 0 ? until : 0, k == 0 && timeout == 0,
                       fn);
        if (err == CONC_ENET && k == 0 && s->con.broke && !redialed) {
            redialed = true;
            err = redial_con(q, s, timeout, until, &kept, fn);
            if (err != 0) {
                break;
            }
            continue;
        }
        if (err != 0) {
            break;
        }
        note_delivery(s, &e);
        got gi = *g;
        if (g->msg != NULL) {
            gi.msg = &g->msg[k];
        }
        err = hand_over(e.message.body.bytes, e.message.body.len, &gi);
        if (err == CONC_ETOOBIG) {
            s->stash = conc__malloc(e.message.body.len + 1);
            if (s->stash != NULL) {
                memcpy(s->stash, e.message.body.bytes, e.message.body.len);
                s->stash_len = e.message.body.len;
                s->stash_full = true;
                s->stash_tag = e.delivery_tag;
                s->stash_redelivered = e.redelivered;
            } else {
                /* No room to keep it: give it back to the broker. */
                (void)amqp_basic_reject(s->con.st, 1, e.delivery_tag, 1);
                s->hi = e.delivery_tag - 1;
            }
        } else if (err != 0) {
            (void)amqp_basic_reject(s->con.st, 1, e.delivery_tag, 1);
            s->hi = e.delivery_tag - 1;
        }
        amqp_destroy_envelope(&e);
        if (err != 0) {
            break;
        }
        k++;
    }
    *gotn = k;
    s->undone += k;
    if (q->amo && k > 0) {
        /* A connection this call lost (take_one dropped it, err says how)
         * took nothing acknowledged with it: no round trip to make.  (A
         * call that kept a delivery for the next get, get_into's
         * CONC_ETOOBIG, handed none over, so k is 0: that delivery stays
         * the broker's until a get hands it over, and free gives it
         * back.) */
        bool lost = s->con.st == NULL && err != 0 && err != CONC_EEMPTY &&
                    err != CONC_ECLOSED;
        /* (a connection that ended under a later take of this call: none
         * of the k was acknowledged on it) */
        bool unsent = lost && s->con.broke;
        int cerr = lost ? err
                        : acks_taken(q, s, s->hi,
                                     acks_until(q, timeout, until), &unsent,
                                     fn);
        if (cerr != 0) {
            /* The broker may not have taken the acknowledgement: it then
             * gives these deliveries to another consumer when it sees the
             * connection gone, so the caller must not have them too.  (If
             * it took it, they are lost, as at most once allows.) */
            got_undo(g, k);
            stash_drop(s);
            s->undone -= k;
            *gotn = 0;
            s->leave = false; /* (the connection is gone) */
            if (unsent && !redialed) {
                /* Nothing was acknowledged: they go back to the queue,
                 * and a new connection takes the get on, once (REUSE;
                 * deliveries read from a connection that had ended). */
                redialed = true;
                tl_redeliv.yes = false;
                /* The delivery may have come at the call's last moment:
                 * the new connection and the wait for it get GRACE_S. */
                uint64_t grace = until_of(GRACE_S);
                if (until < grace) {
                    until = grace;
                }
                err = redial_con(q, s, timeout, until, &kept, fn);
                if (err != 0) {
                    return err;
                }
                k = 0;
                goto again;
            }
            return cerr;
        }
    }
    if (s->leave) {
        s->leave = false;
        ack_all(s);
        conn_close(q, &s->con);
    }
    if (k > 0 && (err == CONC_EEMPTY || err == CONC_ECLOSED)) {
        return 0;
    }
    return err;
}

static int aq_get(conc__netq *nq, conc_msg *msg, void *buf, size_t cap,
                  size_t *len, double timeout)
{
    got g = { msg, buf, cap, len };
    size_t n = 0;
    return get_n((aq *)nq, &g, 1, &n, timeout,
                 msg != NULL ? "conc_queue_get" : "conc_queue_get_into");
}

static int aq_get_many(conc__netq *nq, conc_msg *msgs, size_t n,
                       size_t *gotn, double timeout)
{
    got g = { msgs, NULL, 0, NULL };
    int err = get_n((aq *)nq, &g, n, gotn, timeout, "conc_queue_get_many");
    if (err != 0) {
        for (size_t i = 0; i < *gotn; i++) {
            conc_msg_free(&msgs[i]);
        }
        *gotn = 0;
    }
    return err;
}

/* ---- the rest ---------------------------------------------------------------- */

static int ctl_ready(aq *q, slot *s, uint64_t until, const char *fn)
{
    if (s->ctl.st != NULL) {
        /* Nothing comes on ctl between its round trips: a readable
         * socket is one the broker or the network closed (REUSE). */
        short rev = 0;
        if (conc__os_wait_fd(amqp_get_sockfd(s->ctl.st), POLLIN, 0, &rev) !=
            0) {
            conn_drop(&s->ctl);
        }
    }
    return s->ctl.st != NULL ? 0 : conn_open(q, &s->ctl, until, fn);
}

static int aq_qsize(conc__netq *nq, size_t *n, const char *fn)
{
    aq *q = (aq *)nq;
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    uint64_t until = until_of(q->net_timeout);
    int err = ctl_ready(q, s, until, fn);
    bool closed = false;
    if (err == 0) {
        err = flag_check(q, &s->ctl, &closed, until, fn);
    }
    if (err != 0) {
        return err;
    }
    set_rpc_deadline(&s->ctl, until);
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        s->ctl.st, 1, amqp_cstring_bytes(q->name), 1, 0, 0, 0,
        amqp_empty_table);
    err = rpc_check(q, &s->ctl, fn, "queue.declare (passive)");
    if (err != 0) {
        return err;
    }
    size_t c = ok->message_count;
    /* The close marker is not a message. */
    if (closed && c > 0) {
        c--;
    }
    *n = c;
    return 0;
}

static int aq_task_done(conc__netq *nq)
{
    static const char fn[] = "conc_queue_task_done";
    aq *q = (aq *)nq;
    if (q->amo) {
        return 0;
    }
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    if (s->undone == 0) {
        return conc__fail(CONC_EINVAL, "%s: called more times than this "
                          "thread got messages from '%s'", fn, q->name);
    }
    s->undone--;
    if (s->lo == s->gap) {
        s->lo++;
        s->gap = 0;
    }
    if (s->stash_full && s->lo >= s->stash_tag) {
        /* What is left is the delivery kept for the next get, which the
         * caller has not had: its own deliveries were acknowledged by the
         * get that kept it.  (Acknowledging the kept one lost it at
         * free.) */
        return 0;
    }
    if (s->lo > s->hi || s->con.st == NULL) {
        return 0; /* acknowledged already: by a later get, or given back
                     to the broker with its connection */
    }
    int rc = amqp_basic_ack(s->con.st, 1, s->lo, 0);
    s->lo++;
    if (rc != AMQP_STATUS_OK) {
        conn_drop(&s->con);
        return conc__fail(CONC_ENET, "%s: acknowledging on %s failed: %s",
                          fn, q->where, amqp_error_string2(rc));
    }
    return 0;
}

static int aq_join(conc__netq *nq, double timeout)
{
    (void)nq;
    (void)timeout;
    return conc__fail(CONC_EINVAL, "conc_queue_join: not available on "
                      "RabbitMQ (AMQP keeps no count of tasks done)");
}

static int aq_close(conc__netq *nq)
{
    static const char fn[] = "conc_queue_close";
    aq *q = (aq *)nq;
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    uint64_t until = until_of(q->net_timeout);
    int err = ctl_ready(q, s, until, fn);
    bool closed = false;
    if (err == 0) {
        err = flag_check(q, &s->ctl, &closed, until, fn);
    }
    if (err != 0 || closed) {
        return err;
    }
    aconn *c = &s->ctl;
    set_rpc_deadline(c, until);
    amqp_queue_declare(c->st, 1, amqp_cstring_bytes(q->flag), 0, 1, 0, 0,
                       amqp_empty_table);
    err = rpc_check(q, c, fn, "queue.declare of the close flag");
    if (err == 0) {
        amqp_exchange_delete(c->st, 1, amqp_cstring_bytes(q->exch), 0);
        err = rpc_check(q, c, fn, "exchange.delete");
    }
    if (err == 0) {
        amqp_confirm_select(c->st, 1);
        err = rpc_check(q, c, fn, "confirm.select");
    }
    if (err == 0) {
        amqp_basic_properties_t p = { 0 };
        p._flags = AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
        p.type = amqp_cstring_bytes(CLOSE_TYPE);
        p.delivery_mode = 2;
        int rc = amqp_basic_publish(c->st, 1, amqp_empty_bytes,
                                    amqp_cstring_bytes(q->name), 1, 0, &p,
                                    amqp_empty_bytes);
        err = rc == AMQP_STATUS_OK
                  ? 0
                  : conc__fail(CONC_ENET, "%s: publishing the close marker "
                               "to %s failed", fn, q->where);
        while (err == 0) {
            amqp_frame_t f;
            struct timeval tv = tv_of(left_ns(until));
            rc = amqp_simple_wait_frame_noblock(c->st, &f, &tv);
            if (rc == AMQP_STATUS_TIMEOUT && left_ns(until) > 0) {
                continue;
            }
            if (rc != AMQP_STATUS_OK) {
                err = conc__fail(rc == AMQP_STATUS_TIMEOUT ? CONC_ETIMEDOUT
                                                           : CONC_ENET,
                                 "%s: %s did not confirm the close marker",
                                 fn, q->where);
            } else if (f.frame_type == AMQP_FRAME_METHOD &&
                       f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                break;
            } else if (f.frame_type == AMQP_FRAME_METHOD &&
                       f.payload.method.id != AMQP_BASIC_RETURN_METHOD) {
                err = conc__fail(CONC_ENET, "%s: %s refused the close "
                                 "marker", fn, q->where);
            }
        }
    }
    /* The channel is in confirm mode now: start afresh next time. */
    conn_close(q, c);
    return err;
}

static int aq_closed(conc__netq *nq, bool *closed)
{
    static const char fn[] = "conc_queue_closed";
    aq *q = (aq *)nq;
    slot *s = slot_get(q);
    if (s == NULL) {
        return no_slot(fn);
    }
    uint64_t until = until_of(q->net_timeout);
    int err = ctl_ready(q, s, until, fn);
    if (err == 0) {
        err = flag_check(q, &s->ctl, closed, until, fn);
    }
    return err;
}

static void handle_free(aq *q)
{
    pthread_mutex_destroy(&q->mu);
    conc__url_free(&q->url);
    free(q->name);
    free(q->exch);
    free(q->flag);
    free(q);
}

static void aq_free(conc__netq *nq)
{
    aq *q = (aq *)nq;
    pthread_mutex_lock(&reg_mu);
    if (q->reg_prev != NULL) {
        q->reg_prev->reg_next = q->reg_next;
    } else if (reg_head == q) {
        reg_head = q->reg_next;
    }
    if (q->reg_next != NULL) {
        q->reg_next->reg_prev = q->reg_prev;
    }
    pthread_mutex_unlock(&reg_mu);
    uint64_t gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    slot *s = q->slots;
    while (s != NULL) {
        slot *next = s->next;
        if (s->gen == gen) {
            if (s->stash_full) {
                /* Kept for a get that never came: back to the queue.  (It
                 * is the last delivery noted: no get notes one while a
                 * delivery is kept.) */
                if (s->con.st != NULL && s->lo <= s->stash_tag) {
                    (void)amqp_basic_reject(s->con.st, 1, s->stash_tag, 1);
                    s->hi = s->stash_tag - 1;
                }
            }
            ack_all(s);
            conn_close(q, &s->pub);
            conn_close(q, &s->con);
            conn_close(q, &s->ctl);
        }
        slot_drop(s);
        free(s);
        s = next;
    }
    if (tl.serial == q->serial) {
        tl.s = NULL;
        tl.serial = 0;
    }
    handle_free(q);
}

static const conc__netq_ops ops = {
    .put_many = aq_put_many,
    .get = aq_get,
    .get_many = aq_get_many,
    .qsize = aq_qsize,
    .task_done = aq_task_done,
    .join = aq_join,
    .close = aq_close,
    .closed = aq_closed,
    .free = aq_free,
};

bool conc__amqp_is(const conc__netq *nq);
bool conc__amqp_is(const conc__netq *nq)
{
    return nq != NULL && nq->ops == &ops;
}

/* ---- making a handle ------------------------------------------------------- */

static char *cat2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 1;
    char *p = conc__malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s%s", a, b);
    }
    return p;
}

static int parse_url(aq *q, const char *name, const char *fn)
{
    conc__url *u = &q->url;
    if (u->host == NULL) {
        return conc__fail(CONC_EINVAL, "%s: amqp:// needs a host", fn);
    }
    unsigned port = u->port != 0 ? u->port : 5672;
    snprintf(q->where, sizeof q->where, "%s:%u", u->host, port);
    q->user = u->user != NULL ? u->user : "guest";
    q->pass = u->password != NULL ? u->password : "guest";
    q->vhost = u->nseg >= 1 ? u->seg[0] : "/";
    if (u->nseg > 2) {
        return conc__fail(CONC_EINVAL, "%s: an amqp:// URL has at most two "
                          "path segments (/vhost/name)", fn);
    }
    const char *un = u->nseg == 2 ? u->seg[1] : NULL;
    if (name != NULL && un != NULL && strcmp(name, un) != 0) {
        return conc__fail(CONC_EINVAL, "%s: .name '%s' and the URL's name "
                          "'%s' differ", fn, name, un);
    }
    name = name != NULL ? name : un;
    if (name == NULL) {
        return conc__fail(CONC_EINVAL, "%s: no queue name (.name, or the "
                          "URL's /vhost/name)", fn);
    }
    int err = conc__net_name_check(name, fn);
    if (err != 0) {
        return err;
    }
    if (strncmp(name, "amq.", 4) == 0) {
        return conc__fail(CONC_EINVAL, "%s: queue names starting 'amq.' "
                          "are RabbitMQ's own", fn);
    }
    /* The closed flag of queue X is the queue conc.closed.X (BROKER
     * OBJECTS above): a queue of that name would make X look closed. */
    if (strncmp(name, "conc.closed.", 12) == 0) {
        return conc__fail(CONC_EINVAL, "%s: queue names starting "
                          "'conc.closed.' are libconc's own (the closed "
                          "flag of another queue)", fn);
    }
    q->prefetch = DEFAULT_PREFETCH;
    for (size_t i = 0; i < u->nquery; i++) {
        const char *k = u->query[i].key, *v = u->query[i].val;
        if (strcmp(k, "prefetch") == 0) {
            /* Digits only: strtoul alone takes "+5", " 5" and "-1". */
            char *end = NULL;
            bool digits = v != NULL && *v != '\0' &&
                          strspn(v, "0123456789") == strlen(v);
            unsigned long p = digits ? strtoul(v, &end, 10) : 0;
            if (!digits || p == 0 || p > MAX_PREFETCH) {
                return conc__fail(CONC_EINVAL, "%s: prefetch must be 1..%u",
                                  fn, MAX_PREFETCH);
            }
            q->prefetch = (unsigned)p;
        } else {
            return conc__fail(CONC_EINVAL, "%s: the URL's query key '%s' "
                              "means nothing to amqp:// (known: prefetch)",
                              fn, k);
        }
    }
    q->name = conc__malloc(strlen(name) + 1);
    if (q->name != NULL) {
        memcpy(q->name, name, strlen(name) + 1);
    }
    q->exch = cat2("conc.q.", name);
    q->flag = cat2("conc.closed.", name);
    if (q->name == NULL || q->exch == NULL || q->flag == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for names", fn);
    }
    int n = conc__os_resolve(u->host, port, q->addr,
                             (int)(sizeof q->addr / sizeof q->addr[0]));
    if (n < 0) {
        return conc__fail(CONC_ENET, "%s: cannot resolve the host of %s: %s",
                          fn, q->where, conc__os_gai_text(n));
    }
    q->naddr = n;
    return 0;
}

/* conc_queue_open: the queue must exist; its maxsize is learnt from the
 * broker's refusal of a declaration without x-max-length (amqp_parse.c). */
static int open_existing(aq *q, aconn *c, uint64_t until, const char *fn)
{
    int err = conn_login(q, c, until, fn);
    if (err != 0) {
        return err;
    }
    set_rpc_deadline(c, until);
    amqp_queue_declare(c->st, 1, amqp_cstring_bytes(q->name), 1, 0, 0, 0,
                       amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c->st);
    if (chan_closed_with(r, 404)) {
        conn_drop(c);
        return conc__fail(CONC_EINVAL, "%s: no queue '%s' on %s", fn,
                          q->name, q->where);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        err = reply_err(q, r, fn, "queue.declare (passive)");
        conn_drop(c);
        return err;
    }
    amqp_table_entry_t e[2];
    q->base.maxsize = 0;
    if (set_rpc_deadline(c, until) != 0) {
        conn_drop(c);
        return conc__fail(CONC_ETIMEDOUT, "%s: no time left on %s", fn,
                          q->where);
    }
    amqp_queue_declare(c->st, 1, amqp_cstring_bytes(q->name), 0, 1, 0, 0,
                       queue_args(q, e, false));
    r = amqp_get_rpc_reply(c->st);
    if (chan_closed_with(r, 406)) {
        amqp_channel_close_t *m = r.reply.decoded;
        uint64_t max = 0;
        int p = conc__amqp_parse_maxlen(m->reply_text.bytes,
                                        m->reply_text.len, &max);
        if (p != 1) {
            int tlen = m->reply_text.len > 200 ? 200 : (int)m->reply_text.len;
            /* Another argument differs (durable, ...), or the queue has
             * no x-max-length: a queue of someone else's, CONC_EINVAL;
             * an x-max-length in words libconc cannot read: corrupt.
             * The detail first: the reply text lives in the connection's
             * memory, which conn_drop frees. */
            bool names_maxlen = memmem(m->reply_text.bytes, m->reply_text.len,
                                       "'x-max-length'", 14) != NULL;
            err = conc__fail(p == 0 || !names_maxlen ? CONC_EINVAL
                                                     : CONC_ECORRUPT,
                             "%s: the queue '%s' on %s was not declared "
                             "by libconc (its arguments differ: %.*s)", fn,
                             q->name, q->where, tlen,
                             (const char *)m->reply_text.bytes);
            conn_drop(c);
            return err;
        }
        q->base.maxsize = (size_t)max;
        err = chan_reset(q, c, until, fn);
    } else if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        err = reply_err(q, r, fn, "queue.declare");
        conn_drop(c);
    }
    if (err == 0) {
        err = declare(q, c, until, fn);
    }
    return err;
}

int conc__amqp_queue_make(conc__netq **out, conc__url *u, const char *name,
                          const conc_queue_opts *opts, bool create)
{
    const char *fn = create ? "conc_queue_new" : "conc_queue_open";
    pthread_once(&atfork_once, atfork_init);
    aq *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        conc__url_free(u);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the handle", fn);
    }
    q->url = *u;
    memset(u, 0, sizeof *u);
    if (pthread_mutex_init(&q->mu, NULL) != 0) {
        conc__url_free(&q->url);
        free(q);
        return conc__fail(CONC_ESYS, "%s: pthread_mutex_init failed", fn);
    }
    q->base.ops = &ops;
    q->net_timeout = opts != NULL
                         ? conc__timeout_opt(opts->net_timeout,
                                             DEFAULT_NET_TIMEOUT)
                         : DEFAULT_NET_TIMEOUT;
    q->serial = conc__os_random64() | 1u;
    int err = parse_url(q, name, fn);
    if (err == 0 && opts != NULL && conc__timeout_given(opts->lease)) {
        err = conc__fail(CONC_EINVAL, "%s: lease has no meaning on "
                         "RabbitMQ (the broker gives a dead consumer's "
                         "messages back when its connection drops); leave "
                         "it out", fn);
    }
    if (err == 0 && opts != NULL && opts->maxsize > ((size_t)1 << 62)) {
        err = conc__fail(CONC_EINVAL, "%s: maxsize %zu is too large", fn,
                         opts->maxsize);
    }
    if (err != 0) {
        handle_free(q);
        return err;
    }
    q->amo = opts != NULL && opts->at_most_once;
    q->base.maxsize = opts != NULL ? opts->maxsize : 0;
    q->confirms = !q->amo || q->base.maxsize != 0;
    slot *s = slot_get(q);
    if (s == NULL) {
        handle_free(q);
        return no_slot(fn);
    }
    uint64_t until = until_of(q->net_timeout);
    if (create) {
        err = conn_open(q, &s->ctl, until, fn);
    } else {
        err = open_existing(q, &s->ctl, until, fn);
        q->confirms = !q->amo || q->base.maxsize != 0;
    }
    if (err != 0) {
        slot_drop(s);
        free(s);
        q->slots = NULL;
        tl.s = NULL;
        tl.serial = 0;
        handle_free(q);
        return err;
    }
    pthread_mutex_lock(&reg_mu);
    q->reg_next = reg_head;
    if (reg_head != NULL) {
        reg_head->reg_prev = q;
    }
    reg_head = q;
    pthread_mutex_unlock(&reg_mu);
    *out = &q->base;
    return 0;
}
