/* redis_conn.c - connections to one Redis server: connect, handshake,
 * the timed exchange of a pipeline of commands, error replies, and the
 * pool a handle keeps.
 *
 * A connection is a non-blocking socket (os_linux_net.c), a hiredis
 * redisReader that parses what the server sends, and a buffer of
 * commands not yet sent (conc__rbuf, RESP written by us).  An exchange
 * sends the whole buffer and reads exactly as many replies as commands
 * were sent, polling for POLLIN (and POLLOUT while bytes remain) until
 * the caller's deadline: a pipeline of any length costs one round trip,
 * and a server that answers while we still send (a long pipeline) is read
 * as it answers, so neither side can block the other.  Any failure -
 * time out, reset, end of file, a reply that is not RESP - leaves the
 * stream out of step, so the connection is then closed, never reused.
 *
 * Handshake, one round trip: HELLO 2 [AUTH user password] SETNAME
 * conc-<pid> (RESP2; the reply carries the server's version, which must
 * be 6.2 or later for LMOVE/BLMOVE and RPOP's count), SELECT db unless 0,
 * and SCRIPT LOAD for each script of the handle's kind (their shas are
 * kept per connection).  A server still loading its data after a restart
 * (LOADING) is retried every 10 ms until the deadline.  The client name
 * shows who holds a connection in CLIENT LIST.
 *
 * Pool.  A handle's connections are kept idle in a list under cli->mu
 * (at most 8); a call takes one, or opens one when all are busy, so any
 * number of threads use a handle at once, each on its own connection,
 * and a get blocked on the server never holds up a put from another
 * thread.  An idle connection is checked before reuse (readable means
 * the server closed it, as after a restart): a dead one is dropped and a
 * fresh one opened, so the first call after a server restart reconnects
 * instead of failing.  mu is never held across I/O.
 *
 * Fork.  cli->all lists every connection this process opened, idle or in
 * use.  A forked child's first take() sees a new fork generation
 * (redis_lease.c) and closes its copies of them all - its descriptors,
 * not the parent's sockets - before opening its own.  So no byte of a
 * child ever goes down a parent's connection.
 *
 * Secrets.  The password is sent only in HELLO's AUTH and never appears
 * in a detail: details name the server by cli->where (host:port or the
 * socket path).
 */
#include "redis_int.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IDLE_MAX 8
#define READ_CHUNK 16384
#define LOADING_NAP_NS 10000000ull
/* Internal: the server answered LOADING during the handshake. */
#define RLOADING (-1998)

/* ---- time ------------------------------------------------------------------ */

uint64_t conc__r_until(double seconds)
{
    if (seconds < 0 || seconds > 1e9 || isinf(seconds)) {
        return CONC__R_FOREVER;
    }
    return conc__now_ns() + (uint64_t)(seconds * 1e9);
}

double conc__r_left(uint64_t until)
{
    if (until == CONC__R_FOREVER) {
        return 1e18;
    }
    uint64_t now = conc__now_ns();
    return now >= until ? 0 : (double)(until - now) / 1e9;
}

void conc__r_nap(uint64_t ns, uint64_t until)
{
    uint64_t end = conc__now_ns() + ns;
    if (end > until) {
        end = until;
    }
    for (;;) {
        uint64_t now = conc__now_ns();
        if (now >= end) {
            return;
        }
        uint64_t left = end - now;
        struct timespec ts = { .tv_sec = (time_t)(left / 1000000000u),
                               .tv_nsec = (long)(left % 1000000000u) };
        nanosleep(&ts, NULL);
    }
}

/* ---- RESP commands ---------------------------------------------------------- */

static void rbuf_room(conc__rbuf *b, size_t n)
{
    if (b->oom || b->len + n <= b->cap) {
        return;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) {
        cap *= 2;
    }
    char *d = conc__realloc(b->data, cap);
    if (d == NULL) {
        b->oom = true;
        return;
    }
    b->data = d;
    b->cap = cap;
}

static void rbuf_put(conc__rbuf *b, const void *p, size_t n)
{
    rbuf_room(b, n);
    if (!b->oom && n > 0) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

static void rbuf_hdr(conc__rbuf *b, char kind, size_t n)
{
    char h[32];
    int k = snprintf(h, sizeof h, "%c%zu\r\n", kind, n);
    rbuf_put(b, h, (size_t)k);
}

void conc__rbuf_cmd(conc__rbuf *b, size_t argc)
{
    rbuf_hdr(b, '*', argc);
}

void conc__rbuf_arg2(conc__rbuf *b, const void *p1, size_t n1,
                     const void *p2, size_t n2)
{
    rbuf_hdr(b, '$', n1 + n2);
    rbuf_put(b, p1, n1);
    rbuf_put(b, p2, n2);
    rbuf_put(b, "\r\n", 2);
}

void conc__rbuf_arg(conc__rbuf *b, const void *p, size_t n)
{
    conc__rbuf_arg2(b, p, n, NULL, 0);
}

void conc__rbuf_str(conc__rbuf *b, const char *s)
{
    conc__rbuf_arg(b, s, strlen(s));
}

void conc__rbuf_u64(conc__rbuf *b, uint64_t v)
{
    char t[24];
    int k = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    conc__rbuf_arg(b, t, (size_t)k);
}

void conc__rbuf_secs(conc__rbuf *b, double s)
{
    /* Whole milliseconds, rounded up, so the server never blocks for
     * less than asked. */
    uint64_t ms = (uint64_t)ceil(s * 1000.0);
    if (ms == 0) {
        ms = 1; /* "0" would block for ever */
    }
    char t[32];
    int k = snprintf(t, sizeof t, "%llu.%03llu",
                     (unsigned long long)(ms / 1000),
                     (unsigned long long)(ms % 1000));
    conc__rbuf_arg(b, t, (size_t)k);
}

void conc__rbuf_free(conc__rbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- replies -------------------------------------------------------------- */

void conc__rreplies_free(redisReply **rep, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rep[i] != NULL) {
            freeReplyObject(rep[i]);
            rep[i] = NULL;
        }
    }
}

static bool starts(const redisReply *r, const char *word)
{
    size_t n = strlen(word);
    return r->len >= n && memcmp(r->str, word, n) == 0;
}

int conc__rreply_err(const conc__rcli *cli, const redisReply *r,
                     const char *fn, const char *what)
{
    int shown = r->len > 160 ? 160 : (int)r->len;
    if (starts(r, "NOSCRIPT")) {
        conc__fail(CONC_ENET, "%s: %s: the server at %s lost libconc's "
                   "scripts (SCRIPT FLUSH or a failover)", fn, what,
                   cli->where);
        return CONC__RNOSCRIPT;
    }
    if (starts(r, "NOAUTH")) {
        return conc__fail(CONC_EAUTH, "%s: the server at %s requires a "
                          "password and the URL gives none", fn, cli->where);
    }
    if (starts(r, "WRONGPASS")) {
        return conc__fail(CONC_EAUTH, "%s: the server at %s refused the "
                          "URL's user name and password (WRONGPASS)", fn,
                          cli->where);
    }
    if (starts(r, "NOPERM") ||
        (r->len > 0 &&
         memmem(r->str, r->len, "The user executing the script can't",
                35) != NULL)) {
        /* An ACL user the server refuses a command or a key libconc
         * uses: the URL's credentials are not enough, not a lost
         * connection worth a retry. */
        return conc__fail(CONC_EAUTH, "%s: %s: the server at %s refused "
                          "the URL's user a command or key libconc needs "
                          "(ACL): %.*s", fn, what, cli->where, shown,
                          r->str);
    }
    if (starts(r, "WRONGTYPE")) {
        return conc__fail(CONC_ECORRUPT, "%s: %s: a key under this object's "
                          "name on %s holds another kind of value (another "
                          "program uses the name?)", fn, what, cli->where);
    }
    if (starts(r, "OOM")) {
        return conc__fail(CONC_ENOMEM, "%s: %s: the server at %s is out of "
                          "memory (maxmemory)", fn, what, cli->where);
    }
    return conc__fail(CONC_ENET, "%s: %s: the server at %s answered: %.*s",
                      fn, what, cli->where, shown, r->str);
}

int conc__rreply_want(const conc__rcli *cli, const redisReply *r, int type,
                      bool nil_ok, const char *fn, const char *what)
{
    if (r->type == type || (nil_ok && r->type == REDIS_REPLY_NIL)) {
        return 0;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        return conc__rreply_err(cli, r, fn, what);
    }
    return conc__fail(CONC_ECORRUPT, "%s: %s: the server at %s answered "
                      "with a reply of type %d where %d was due", fn, what,
                      cli->where, r->type, type);
}

bool conc__rreply_int(const redisReply *r, long long *v)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *v = r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 19) {
        return false;
    }
    long long x = 0;
    size_t i = 0;
    bool neg = r->str[0] == '-';
    if (neg) {
        i = 1;
        if (r->len == 1) {
            return false;
        }
    }
    for (; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9') {
            return false;
        }
        int d = r->str[i] - '0';
        /* 19 digits may exceed LLONG_MAX: a number that does not fit is
         * not one libconc wrote (and x * 10 + d would overflow). */
        if (x > (LLONG_MAX - d) / 10) {
            return false;
        }
        x = x * 10 + d;
    }
    *v = neg ? -x : x;
    return true;
}

/* ---- the exchange ---------------------------------------------------------- */

static void conn_close(conc__rconn *c)
{
    conc__os_close(c->fd);
    c->fd = -1;
    if (c->rd != NULL) {
        redisReaderFree(c->rd);
        c->rd = NULL;
    }
    conc__rbuf_free(&c->out);
}

static int io_fail(const conc__rcli *cli, const char *fn, const char *doing)
{
    return conc__fail_sys(CONC_ENET, "%s: %s %s", fn, doing, cli->where);
}

int conc__rconn_exchange(conc__rcli *cli, conc__rconn *c, redisReply **rep,
                         size_t n, uint64_t until, const char *fn)
{
    int err = 0;
    size_t got = 0, off = 0;
    for (size_t i = 0; i < n; i++) {
        rep[i] = NULL;
    }
    /* Relaxed: a statistic. */
    atomic_fetch_add_explicit(&conc__net_trips, 1, memory_order_relaxed);
    if (c->out.oom) {
        err = conc__fail(CONC_ENOMEM, "%s: no memory for the commands to "
                         "%s", fn, cli->where);
        goto fail;
    }
    while (got < n) {
        void *r = NULL;
        if (redisReaderGetReply(c->rd, &r) != REDIS_OK) {
            /* The reader says REDIS_ERR_OOM both when malloc failed and
             * when create_array_bounded refused an array; too_long tells
             * the second, a lie of the server's. */
            if (c->rd->err == REDIS_ERR_OOM && !c->too_long) {
                err = conc__fail(CONC_ENOMEM, "%s: no memory for the reply "
                                 "from %s", fn, cli->where);
            } else {
                err = conc__fail(CONC_ECORRUPT, "%s: the bytes from %s are "
                                 "not a Redis reply (%s)", fn, cli->where,
                                 c->too_long ? "an array longer than libconc "
                                               "ever asks for"
                                             : c->rd->errstr);
            }
            goto fail;
        }
        if (r != NULL) {
            rep[got++] = r;
            continue;
        }
        if (off < c->out.len) {
            /* Send what the socket takes now: most pipelines go out in
             * this one call, with no poll before it. */
            ssize_t s = conc__os_send(c->fd, c->out.data + off,
                                      c->out.len - off,
                                      MSG_NOSIGNAL | MSG_DONTWAIT);
            if (s < 0 && errno != EAGAIN && errno != EINTR) {
                err = io_fail(cli, fn, "sending to");
                goto fail;
            }
            off += s > 0 ? (size_t)s : 0;
        }
        short ev = POLLIN | (off < c->out.len ? POLLOUT : 0);
        short rev = 0;
        int w = conc__os_wait_fd(c->fd, ev, until, &rev);
        if (w == 0) {
            err = conc__fail(CONC_ETIMEDOUT, "%s: no answer from %s in time "
                             "(the server is stopped, overloaded or "
                             "unreachable)", fn, cli->where);
            goto fail;
        }
        if (w < 0) {
            err = io_fail(cli, fn, "waiting for");
            goto fail;
        }
        if (rev & (POLLIN | POLLERR | POLLHUP)) {
            char buf[READ_CHUNK];
            ssize_t k = conc__os_recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (k == 0) {
                err = conc__fail(CONC_ENET, "%s: the server at %s closed the "
                                 "connection", fn, cli->where);
                goto fail;
            }
            if (k < 0 && errno != EAGAIN && errno != EINTR) {
                err = io_fail(cli, fn, "receiving from");
                goto fail;
            }
            if (k > 0 && redisReaderFeed(c->rd, buf, (size_t)k) != REDIS_OK) {
                err = conc__fail(CONC_ENOMEM, "%s: no memory for the reply "
                                 "from %s", fn, cli->where);
                goto fail;
            }
        }
    }
    c->out.len = 0;
    return 0;

fail:
    conc__rreplies_free(rep, got);
    c->out.len = 0;
    return err;
}

void conc__rconn_evalsha(conc__rconn *c, size_t i, size_t nkeys,
                         size_t nrest)
{
    conc__rbuf_cmd(&c->out, 3 + nkeys + nrest);
    conc__rbuf_str(&c->out, "EVALSHA");
    conc__rbuf_arg(&c->out, c->sha[i], 40);
    conc__rbuf_u64(&c->out, nkeys);
}

/* ---- connect and handshake ------------------------------------------------- */

/* "7.0.15" >= 6.2? */
static bool version_ok(const char *v)
{
    int maj = 0, min = 0;
    if (sscanf(v, "%d.%d", &maj, &min) != 2) {
        return false;
    }
    return maj > 6 || (maj == 6 && min >= 2);
}

/* The HELLO reply: a flat array of names and values; copies "version". */
static int check_hello(const conc__rcli *cli, const redisReply *r, const char *fn)
{
    int err = conc__rreply_want(cli, r, REDIS_REPLY_ARRAY, false, fn,
                                "HELLO");
    if (err != 0) {
        if (r->type == REDIS_REPLY_ERROR && starts(r, "ERR unknown command")) {
            return conc__fail(CONC_EINVAL, "%s: the server at %s is older "
                              "than Redis 6 (no HELLO); libconc needs Redis "
                              "6.2 or later", fn, cli->where);
        }
        return err;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && k->len == 7 &&
            memcmp(k->str, "version", 7) == 0 &&
            v->type == REDIS_REPLY_STRING) {
            char version[16];
            snprintf(version, sizeof version, "%.*s",
                     (int)(v->len < 15 ? v->len : 15), v->str);
            if (!version_ok(version)) {
                return conc__fail(CONC_EINVAL, "%s: the server at %s is "
                                  "Redis %s; libconc needs 6.2 or later",
                                  fn, cli->where, version);
            }
            return 0;
        }
    }
    return conc__fail(CONC_ECORRUPT, "%s: the server at %s sent no version "
                      "in its HELLO reply", fn, cli->where);
}

static int handshake(conc__rcli *cli, conc__rconn *c, uint64_t until,
                     const char *fn)
{
    char name[32];
    snprintf(name, sizeof name, "conc-%d", (int)getpid());
    const conc__url *u = &cli->url;
    bool auth = u->password != NULL;
    conc__rbuf *b = &c->out;
    conc__rbuf_cmd(b, 4 + (auth ? 3 : 0));
    conc__rbuf_str(b, "HELLO");
    conc__rbuf_str(b, "2");
    if (auth) {
        conc__rbuf_str(b, "AUTH");
        conc__rbuf_str(b, u->user != NULL ? u->user : "default");
        conc__rbuf_str(b, u->password);
    }
    conc__rbuf_str(b, "SETNAME");
    conc__rbuf_str(b, name);
    size_t n = 1;
    if (cli->db != 0) {
        conc__rbuf_cmd(b, 2);
        conc__rbuf_str(b, "SELECT");
        conc__rbuf_u64(b, cli->db);
        n++;
    }
    for (size_t i = 0; i < cli->nscripts; i++) {
        conc__rbuf_cmd(b, 3);
        conc__rbuf_str(b, "SCRIPT");
        conc__rbuf_str(b, "LOAD");
        conc__rbuf_str(b, cli->scripts[i].body);
    }
    n += cli->nscripts;
    redisReply *rep[2 + CONC__RSCRIPTS_MAX];
    int err = conc__rconn_exchange(cli, c, rep, n, until, fn);
    if (err != 0) {
        return err;
    }
    for (size_t i = 0; i < n && err == 0; i++) {
        if (rep[i]->type == REDIS_REPLY_ERROR && starts(rep[i], "LOADING")) {
            err = RLOADING;
        }
    }
    if (err == 0) {
        err = check_hello(cli, rep[0], fn);
    }
    size_t k = 1;
    if (err == 0 && cli->db != 0) {
        if (rep[1]->type == REDIS_REPLY_ERROR &&
            starts(rep[1], "ERR DB index")) {
            err = conc__fail(CONC_EINVAL, "%s: the server at %s has no "
                             "database %u", fn, cli->where, cli->db);
        } else {
            err = conc__rreply_want(cli, rep[1], REDIS_REPLY_STATUS, false,
                                    fn, "SELECT");
        }
        k = 2;
    }
    for (size_t i = 0; i < cli->nscripts && err == 0; i++) {
        const redisReply *r = rep[k + i];
        err = conc__rreply_want(cli, r, REDIS_REPLY_STRING, false, fn,
                                "SCRIPT LOAD");
        if (err == 0 && r->len != 40) {
            err = conc__fail(CONC_ECORRUPT, "%s: the server at %s gave a "
                             "script id of %zu bytes", fn, cli->where,
                             r->len);
        }
        if (err == 0) {
            memcpy(c->sha[i], r->str, 40);
            c->sha[i][40] = '\0';
        }
    }
    conc__rreplies_free(rep, n);
    return err;
}

/* hiredis makes an array's element pointers as soon as it reads the
 * array's header, before any element came: a server that announces 2^31
 * elements had this process reserve 16 GiB, and spend seconds freeing
 * them when the call timed out.  The longest array libconc asks for is
 * an HGETALL, two elements a key: CONC__R_MAX_ELEMENTS is a dict of 32 M
 * keys.  A longer one fails the reply (the reader's REDIS_ERR_OOM, which
 * the exchange, told by too_long, reports as CONC_ECORRUPT).  hiredis's
 * own constructor is the same function for every reader: stored by each,
 * read by any. */
#define CONC__R_MAX_ELEMENTS (1 << 26)
static void *(*_Atomic hiredis_create_array)(const redisReadTask *, int);

static void *create_array_bounded(const redisReadTask *task, int elements)
{
    if (elements > CONC__R_MAX_ELEMENTS) {
        /* hiredis hands every task the reader's privdata: the conn. */
        ((conc__rconn *)task->privdata)->too_long = true;
        return NULL;
    }
    return atomic_load_explicit(&hiredis_create_array,
                                memory_order_relaxed)(task, elements);
}

static int conn_open(conc__rcli *cli, conc__rconn **out, uint64_t until,
                     const char *fn)
{
    for (;;) {
        conc__rconn *c = conc__calloc(1, sizeof *c);
        if (c == NULL) {
            return conc__fail(CONC_ENOMEM, "%s: no memory for a connection",
                              fn);
        }
        c->fd = -1;
        c->rd = redisReaderCreate();
        if (c->rd == NULL) {
            free(c);
            return conc__fail(CONC_ENOMEM, "%s: no memory for a reply "
                              "reader", fn);
        }
        c->fns = *c->rd->fn;
        atomic_store_explicit(&hiredis_create_array, c->fns.createArray,
                              memory_order_relaxed);
        c->fns.createArray = create_array_bounded;
        c->rd->fn = &c->fns;
        /* The field, not hiredis's macro, which casts the pointer to int
         * (clang refuses that cast). */
        c->rd->privdata = c;
        int err = 0;
        for (int i = 0; i < cli->naddr && c->fd < 0; i++) {
            c->fd = conc__os_dial(&cli->addr[i], until);
        }
        if (c->fd < 0) {
            err = errno == ETIMEDOUT
                      ? conc__fail(CONC_ETIMEDOUT, "%s: connecting to %s "
                                   "timed out", fn, cli->where)
                      : conc__fail_sys(CONC_ENET, "%s: cannot connect to %s",
                                       fn, cli->where);
        } else {
            err = handshake(cli, c, until, fn);
        }
        if (err == 0) {
            c->gen = cli->gen;
            *out = c;
            return 0;
        }
        conn_close(c);
        free(c);
        if (err != RLOADING) {
            return err;
        }
        if (conc__now_ns() >= until) {
            return conc__fail(CONC_ETIMEDOUT, "%s: the server at %s was "
                              "still loading its data when time ran out",
                              fn, cli->where);
        }
        conc__r_nap(LOADING_NAP_NS, until);
    }
}

/* ---- the client of one server, and its pool -------------------------------- */

static int parse_db(const char *s, unsigned *db)
{
    if (s == NULL) {
        *db = 0;
        return 0;
    }
    size_t n = strlen(s);
    if (n == 0 || n > 6 || strspn(s, "0123456789") != n) {
        return -1;
    }
    *db = (unsigned)strtoul(s, NULL, 10);
    return 0;
}

static int resolve(conc__rcli *cli, const char *fn)
{
    const conc__url *u = &cli->url;
    if (u->path != NULL) {
        snprintf(cli->where, sizeof cli->where, "%s", u->path);
        if (conc__os_unix_addr(u->path, &cli->addr[0]) != 0) {
            return conc__fail(CONC_EINVAL, "%s: the socket path '%s' is "
                              "too long for a Unix socket", fn, u->path);
        }
        cli->naddr = 1;
        return 0;
    }
    unsigned port = u->port ? u->port : 6379;
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(cli->where, sizeof cli->where, "%s%s%s:%u", v6 ? "[" : "",
             u->host, v6 ? "]" : "", port);
    int n = conc__os_resolve(u->host, port, cli->addr,
                             (int)(sizeof cli->addr / sizeof cli->addr[0]));
    if (n < 0) {
        return conc__fail(CONC_ENET, "%s: cannot resolve the host of %s: %s",
                          fn, cli->where, conc__os_gai_text(n));
    }
    cli->naddr = n;
    return 0;
}

/* The URL's parts a Redis handle reads besides host and port: the db, and
 * no query keys but db and name (unix://). */
static int check_url(conc__rcli *cli, const char *fn)
{
    const conc__url *u = &cli->url;
    const char *db = NULL;
    if (u->path != NULL) {
        if (u->nseg != 0) {
            return conc__fail(CONC_EINVAL, "%s: unix:// names the db and "
                              "the name with ?db=N&name=X", fn);
        }
        db = conc__url_query(u, "db");
    } else if (u->nseg > 0) {
        db = u->seg[0];
    }
    if (u->path == NULL && u->nseg > 2) {
        return conc__fail(CONC_EINVAL, "%s: a redis:// URL's path is /db or "
                          "/db/name", fn);
    }
    for (size_t i = 0; i < u->nquery; i++) {
        const char *k = u->query[i].key;
        if (u->path == NULL ||
            (strcmp(k, "db") != 0 && strcmp(k, "name") != 0)) {
            return conc__fail(CONC_EINVAL, "%s: the URL's query key '%s' "
                              "means nothing to Redis (unix:// takes db and "
                              "name)", fn, k);
        }
    }
    if (parse_db(db, &cli->db) != 0) {
        return conc__fail(CONC_EINVAL, "%s: the URL's db '%s' is not a "
                          "number (a redis:// path is /db/name)", fn, db);
    }
    return 0;
}

int conc__rcli_init(conc__rcli *cli, conc__url *u, conc_timeout net_timeout,
                    const conc__rscript *scripts, size_t nscripts,
                    const char *fn)
{
    memset(cli, 0, sizeof *cli);
    cli->url = *u;
    memset(u, 0, sizeof *u);
    cli->net_timeout = conc__timeout_opt(net_timeout, 10.0);
    cli->scripts = scripts;
    cli->nscripts = nscripts;
    cli->gen = conc__rlease_gen();
    int err = check_url(cli, fn);
    if (err == 0) {
        err = resolve(cli, fn);
    }
    if (err == 0 && pthread_mutex_init(&cli->mu, NULL) != 0) {
        err = conc__fail(CONC_ESYS, "%s: pthread_mutex_init failed", fn);
    }
    if (err != 0) {
        conc__url_free(&cli->url);
    }
    return err;
}

/* The name the URL gives (redis://h/db/name, unix://...?name=), or NULL. */
const char *conc__rcli_url_name(const conc__rcli *cli)
{
    const conc__url *u = &cli->url;
    if (u->path != NULL) {
        return conc__url_query(u, "name");
    }
    return u->nseg == 2 ? u->seg[1] : NULL;
}

static void unlist(conc__rcli *cli, conc__rconn *c)
{
    for (conc__rconn **p = &cli->all; *p != NULL; p = &(*p)->next_all) {
        if (*p == c) {
            *p = c->next_all;
            break;
        }
    }
}

static void destroy(conc__rconn *c)
{
    conn_close(c);
    free(c);
}

/* In a forked child: every connection listed is the parent's.  Closes
 * this process's descriptors of them (the sockets live on in the
 * parent).  Called with mu held. */
static void close_all(conc__rcli *cli)
{
    conc__rconn *c = cli->all;
    while (c != NULL) {
        conc__rconn *next = c->next_all;
        destroy(c);
        c = next;
    }
    cli->all = NULL;
    cli->idle = NULL;
    cli->nidle = 0;
}

static void drop_inherited(conc__rcli *cli, uint64_t gen)
{
    close_all(cli);
    cli->gen = gen;
}

/* Whether an idle connection has been closed by the server (or has bytes
 * nobody asked for): readable, or the poll fails. */
static bool stale(const conc__rconn *c)
{
    short rev = 0;
    return conc__os_wait_fd(c->fd, POLLIN, 0, &rev) != 0;
}

int conc__rcli_take(conc__rcli *cli, conc__rconn **out, uint64_t until,
                    const char *fn)
{
    *out = NULL;
    uint64_t gen = conc__rlease_gen();
    pthread_mutex_lock(&cli->mu);
    if (cli->gen != gen) {
        drop_inherited(cli, gen);
    }
    while (cli->idle != NULL) {
        conc__rconn *c = cli->idle;
        cli->idle = c->next_idle;
        cli->nidle--;
        if (!stale(c)) {
            pthread_mutex_unlock(&cli->mu);
            *out = c;
            return 0;
        }
        unlist(cli, c);
        destroy(c);
    }
    pthread_mutex_unlock(&cli->mu);
    conc__rconn *c = NULL;
    int err = conn_open(cli, &c, until, fn);
    if (err != 0) {
        return err;
    }
    pthread_mutex_lock(&cli->mu);
    c->gen = cli->gen;
    c->next_all = cli->all;
    cli->all = c;
    pthread_mutex_unlock(&cli->mu);
    *out = c;
    return 0;
}

void conc__rcli_give(conc__rcli *cli, conc__rconn *c, bool ok)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&cli->mu);
    if (c->gen != cli->gen) {
        /* Opened before a fork, given back in the child: the child's
         * take() already closed every inherited connection. */
        pthread_mutex_unlock(&cli->mu);
        return;
    }
    if (ok && cli->nidle < IDLE_MAX && c->out.len == 0) {
        c->next_idle = cli->idle;
        cli->idle = c;
        cli->nidle++;
        c = NULL;
    } else {
        unlist(cli, c);
    }
    pthread_mutex_unlock(&cli->mu);
    if (c != NULL) {
        destroy(c);
    }
}

void conc__rcli_fini(conc__rcli *cli)
{
    close_all(cli);
    pthread_mutex_destroy(&cli->mu);
    conc__url_free(&cli->url);
}

uint64_t conc__rcli_until(const conc__rcli *cli, double t, uint64_t dl)
{
    if (t > 0 && dl != CONC__R_FOREVER) {
        uint64_t floor = conc__r_until(CONC__R_LAST_TRIP_S);
        return dl > floor ? dl : floor;
    }
    return conc__r_until(cli->net_timeout);
}

int conc__rcli_call(conc__rcli *cli, conc__rbuild build, void *ctx,
                    redisReply **rep, size_t n, uint64_t until,
                    const char *fn)
{
    for (int attempt = 0;; attempt++) {
        conc__rconn *c = NULL;
        int err = conc__rcli_take(cli, &c, until, fn);
        if (err != 0) {
            return err;
        }
        build(ctx, c);
        err = conc__rconn_exchange(cli, c, rep, n, until, fn);
        bool noscript = false;
        for (size_t i = 0; err == 0 && i < n; i++) {
            noscript |= rep[i]->type == REDIS_REPLY_ERROR &&
                        starts(rep[i], "NOSCRIPT");
        }
        /* A connection whose server lost the scripts is dropped: the
         * next one loads them at its handshake. */
        conc__rcli_give(cli, c, err == 0 && !noscript);
        if (!noscript) {
            return err;
        }
        conc__rreplies_free(rep, n);
        if (attempt > 0) {
            return conc__fail(CONC_ENET, "%s: the server at %s keeps losing "
                              "libconc's scripts", fn, cli->where);
        }
    }
}
