/* fuzz_frame.c - frame headers and payload boundaries: the fuzzer's bytes
 * are the stream a peer writes into a conc_pipe end, fed through the
 * socket in chunks, and conc_conn_recv / _recv_into / _poll (timeout 0,
 * in an order the input chooses) must agree, call by call, with a simple
 * model of the framing written here from pipe.h's contract:
 *   - a frame is a 4-byte big-endian length and the payload, or
 *     0xffffffff, an 8-byte length and the payload; a negative 4-byte
 *     length is CONC_ECORRUPT, a length over max_message_bytes
 *     CONC_ETOOBIG, both as soon as the header is in, and receiving then
 *     stops: CONC_ECLOSED for every later receive, poll 1;
 *   - recv_into with a buffer shorter than a whole header's length is
 *     CONC_ETOOBIG with *len the length, and the message stays;
 *   - a frame not wholly there is CONC_ETIMEDOUT (poll 0) until the
 *     stream ends, then CONC_ECLOSED (the part dropped), poll 1.
 * Also checked: every payload byte for byte, nothing written past *len in
 * the caller's buffer, a detail on every error, and (where the sanitizer
 * runtime offers allocation hooks: ASan, TSan, libFuzzer builds) that no
 * allocation is larger than 1 MiB plus twice the bytes the peer wrote,
 * whatever its headers announce.
 *
 * Input: byte 0 picks max_message_bytes (low 2 bits) and seeds the order
 * of calls; byte 1 is the feeding chunk (0: all at once); the rest is the
 * stream (at most 60000 bytes, under a socket buffer). */
#include "fuzz_check.h"
#include "conc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the largest allocation, where the runtime can tell ---------------- */

void __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void *, size_t),
    void (*free_hook)(const volatile void *)) __attribute__((weak));

static _Atomic size_t largest;
static _Atomic bool watching;

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    if (atomic_load_explicit(&watching, memory_order_relaxed) &&
        n > atomic_load_explicit(&largest, memory_order_relaxed)) {
        atomic_store_explicit(&largest, n, memory_order_relaxed);
    }
}

static void on_free(const volatile void *p)
{
    (void)p;
}

/* ---- the model ----------------------------------------------------------- */

typedef struct model {
    const uint8_t *s;   /* the stream */
    size_t n;           /* its length */
    size_t fed;         /* bytes written into the socket so far */
    bool eof;           /* the writer has closed: nothing more comes */
    size_t pos;         /* where the current frame starts */
    size_t cap;         /* max_message_bytes */
    int pending;        /* a refusal poll saw, for the next receive */
    bool stopped;       /* receiving has stopped */
} model;

enum { OP_RECV, OP_RECV_INTO, OP_POLL };

/* What the call should give: code (0, or a CONC_E*), ready (poll's 0/1),
 * and for a message its place in the stream and length. */
typedef struct expect {
    int code;
    int ready;
    size_t at;
    size_t len;
    bool consumes;
} expect;

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static expect predict(model *m, int op, size_t bufcap)
{
    expect e = { 0 };
    if (m->stopped || m->pending != 0) {
        if (op == OP_POLL) {
            e.ready = 1;
        } else {
            e.code = m->pending != 0 ? m->pending : CONC_ECLOSED;
            m->pending = 0;
            m->stopped = true;
        }
        return e;
    }
    size_t have = m->fed - m->pos;
    const uint8_t *h = m->s + m->pos;
    int refused = 0;
    size_t hl = 4;
    uint64_t len = 0;
    bool header = false;
    if (have >= 4) {
        uint64_t v4 = be(h, 4);
        if (v4 == 0xffffffffu) {
            hl = 12;
            if (have >= 12) {
                len = be(h + 4, 8);
                header = true;
            }
        } else if (v4 & 0x80000000u) {
            refused = CONC_ECORRUPT;
        } else {
            len = v4;
            header = true;
        }
    }
    if (header && len > m->cap) {
        refused = CONC_ETOOBIG;
    }
    if (refused != 0) {
        if (op == OP_POLL) {
            e.ready = 1;
            m->pending = refused;
        } else {
            e.code = refused;
            m->stopped = true;
        }
        return e;
    }
    if (header && op == OP_RECV_INTO && len > bufcap) {
        e.code = CONC_ETOOBIG; /* buffer too small: the message stays */
        e.len = (size_t)len;
        return e;
    }
    if (!header || have - hl < len) {
        if (!m->eof) {
            e.code = op == OP_POLL ? 0 : CONC_ETIMEDOUT;
            return e;
        }
        m->stopped = true; /* end of file, mid-frame or between frames */
        if (op == OP_POLL) {
            e.ready = 1;
        } else {
            e.code = CONC_ECLOSED;
        }
        return e;
    }
    if (op == OP_POLL) {
        e.ready = 1;
        return e;
    }
    e.at = m->pos + hl;
    e.len = (size_t)len;
    e.consumes = true;
    m->pos += hl + (size_t)len;
    return e;
}

/* ---- the driver ---------------------------------------------------------- */

static uint32_t next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void feed(model *m, int fd, size_t chunk)
{
    size_t k = m->n - m->fed < chunk ? m->n - m->fed : chunk;
    while (k > 0) {
        ssize_t r = send(fd, m->s + m->fed, k, MSG_NOSIGNAL);
        FUZZ_CHECK(r > 0);
        m->fed += (size_t)r;
        k -= (size_t)r;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    static const size_t caps[] = { 16, 1000, 70000, 0 };
    model m = { .s = data + 2, .n = size - 2, .cap = caps[data[0] & 3] };
    if (m.n > 60000) {
        m.n = 60000;
    }
    size_t chunk = data[1] == 0 ? m.n + 1 : data[1];
    uint32_t x = 0x9e3779b9u ^ data[0] ^ (uint32_t)data[1] << 8;
    conc_conn *a, *b;
    if (conc_pipe_new(&a, &b, &(conc_pipe_opts){
                                  .max_message_bytes = m.cap }) != 0) {
        return 0;
    }
    if (m.cap == 0) {
        m.cap = CONC_MAX_MESSAGE_DEFAULT;
    }
    int wfd = conc_conn_fileno(b);
    static unsigned char buf[70000 + 64];
    static const size_t bufcaps[] = { 0, 1, 16, 70000 };
    if (__sanitizer_install_malloc_and_free_hooks != NULL) {
        static bool installed;
        if (!installed) {
            __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
            installed = true;
        }
        atomic_store(&largest, 0);
        atomic_store(&watching, true);
    }
    int after_end = 0;
    for (int step = 0; step < 200000 && after_end < 4; step++) {
        int op = (int)(next(&x) % 3);
        size_t bufcap = bufcaps[next(&x) % 4];
        expect e = predict(&m, op, bufcap);
        if (op == OP_POLL) {
            int r = conc_conn_poll(a, 0);
            FUZZ_CHECK(r == e.ready);
        } else if (op == OP_RECV) {
            conc_msg msg = { (void *)1, 99 };
            int err = conc_conn_recv(a, &msg, 0);
            FUZZ_CHECK(err == e.code);
            if (err == 0) {
                FUZZ_CHECK(msg.len == e.len);
                FUZZ_CHECK((msg.data == NULL) == (msg.len == 0));
                FUZZ_CHECK(e.len == 0 ||
                             memcmp(msg.data, m.s + e.at, e.len) == 0);
            } else {
                FUZZ_CHECK(msg.data == NULL && msg.len == 0);
            }
            conc_msg_free(&msg);
        } else {
            memset(buf, 0xa5, bufcap + 64);
            size_t len = 12345;
            int err = conc_conn_recv_into(a, bufcap ? buf : NULL, bufcap,
                                          &len, 0);
            FUZZ_CHECK(err == e.code);
            /* Nothing is ever written past the buffer; on success
             * nothing past *len either.  (A call that runs out of time
             * halfway may leave the part it read in the buffer.) */
            size_t clean = bufcap;
            if (err == 0) {
                FUZZ_CHECK(len == e.len);
                FUZZ_CHECK(memcmp(buf, m.s + e.at, e.len) == 0);
                clean = len;
            } else if (err == CONC_ETOOBIG) {
                /* Buffer too small: its need; refused header: 0. */
                FUZZ_CHECK(len == e.len);
            } else {
                FUZZ_CHECK(len == 0);
            }
            for (size_t i = clean; i < bufcap + 64; i++) {
                FUZZ_CHECK(buf[i] == 0xa5);
            }
        }
        if (op != OP_POLL && e.code != 0) {
            FUZZ_CHECK(conc_errdetail()[0] != '\0');
        }
        bool starved = (op == OP_POLL && e.ready == 0) ||
                       e.code == CONC_ETIMEDOUT;
        if (starved) {
            if (m.fed < m.n) {
                feed(&m, wfd, chunk);
            } else {
                conc_conn_close(b); /* end of file */
                m.eof = true;
            }
        }
        if (m.stopped && m.eof) {
            after_end++;
        } else if (m.stopped) {
            /* Receiving has stopped (the refusing end shut its side, so
             * more bytes could not even be sent): end the stream. */
            conc_conn_close(b);
            m.eof = true;
        }
    }
    if (__sanitizer_install_malloc_and_free_hooks != NULL) {
        atomic_store(&watching, false);
        size_t most = atomic_load(&largest);
        FUZZ_CHECK(most <= ((size_t)1 << 20) + 2 * m.n + 70064);
    }
    conc_conn_free(a);
    conc_conn_free(b);
    return 0;
}
