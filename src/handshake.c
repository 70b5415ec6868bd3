/* handshake.c - CPython's multiprocessing.connection challenge/response
 * authentication, both roles, wire-compatible with 3.11's HMAC-MD5
 * challenge and 3.12's "{digest}" form, as a state machine that never
 * waits: conc__hs_step does what the socket allows now and says what it
 * needs next (readable, writable), so a listener can run the handshakes
 * of every pending connection together under one epoll and no silent or
 * slow client delays another (listener.c), and a fuzz target can drive it
 * over a socketpair.
 *
 * The exchange.  Each message is one send_bytes frame (4-byte big-endian
 * length + bytes).  The deliverer sends "#CHALLENGE#" and a nonce; the
 * answerer replies with an HMAC of the nonce under the shared key; the
 * deliverer replies "#WELCOME#" or "#FAILURE#" (the latter sent before
 * giving up, as Python does).  Then the roles swap.  A server
 * (Listener.accept) delivers first, a client answers first:
 *     server: send challenge, read answer, send verdict,
 *             read challenge, send answer, read verdict
 *     client: read challenge, send answer, read verdict,
 *             send challenge, read answer, send verdict
 * (PROGRAM below).  We deliver the legacy challenge, a 20-byte nonce with
 * no prefix, to which every Python 3 Client answers with a raw 16-byte
 * HMAC-MD5 (3.12+ recognise the legacy length and answer in the legacy
 * form).  As the answerer we accept both forms: a 20-byte nonce gets the
 * raw HMAC-MD5; a "{name}" prefixed one (Python 3.12+ sends "{sha256}" +
 * 40 bytes) gets "{name}" + HMAC-name computed over the whole message,
 * prefix included, so that a man in the middle cannot downgrade the
 * digest.  We know "md5" and "sha256"; other names Python allows
 * (sha384, sha3_*) fail the handshake.  As the verifier we accept a raw
 * 16-byte HMAC-MD5 and "{md5}"/"{sha256}" prefixed replies, compared in
 * constant time over every byte (conc__digest_equal).
 *
 * Reading.  A frame is read as its 4 header bytes and then exactly its
 * payload, never a byte more: what the peer sends after the handshake
 * (its first message) stays in the socket for the conc_conn.  A header
 * over CONC__HS_MAX (Python's recv_bytes(256)), the 8-byte long form
 * included, fails before its payload is read, so a hostile peer cannot
 * make us allocate (nothing here allocates) nor read past the buffer.
 * The partial state (header bytes, payload bytes, what is left to send)
 * lives in conc__hs, so any split of the peer's bytes gives the same
 * result.
 *
 * Sending.  Each message is a few dozen bytes, queued by the kernel at
 * once on any socket that is not full; a full one (a peer that sends and
 * never reads) gets WANT_WRITE and the caller's deadline.  The #FAILURE#
 * verdict is tried once and never waited for: the handshake is over.
 *
 * No locks, no time: a conc__hs belongs to one thread at a time (the
 * listener's driver, or the connecting client), and its deadline is the
 * caller's business.  Nothing here allocates or can leak.
 */
#include "handshake_int.h"

#include "conc_int.h"
#include "digest.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* The longest digest name CPython allows ("sha3_384"): the '}' closing a
 * prefix must come within this many bytes of the '{'. */
#define MAX_DIGEST_NAME 8

static const char CHALLENGE[] = "#CHALLENGE#";
static const char WELCOME[] = "#WELCOME#";
static const char FAILURE[] = "#FAILURE#";
#define CHALLENGE_LEN (sizeof CHALLENGE - 1)
#define WELCOME_LEN (sizeof WELCOME - 1)
#define FAILURE_LEN (sizeof FAILURE - 1)

/* The steps, and each role's program of them. */
enum step {
    SEND_CHALLENGE,
    RECV_ANSWER,
    SEND_VERDICT,
    RECV_CHALLENGE,
    SEND_ANSWER,
    RECV_VERDICT,
    FINISHED
};

static const uint8_t PROGRAM[2][7] = {
    [CONC__HS_SERVER] = { SEND_CHALLENGE, RECV_ANSWER, SEND_VERDICT,
                          RECV_CHALLENGE, SEND_ANSWER, RECV_VERDICT,
                          FINISHED },
    [CONC__HS_CLIENT] = { RECV_CHALLENGE, SEND_ANSWER, RECV_VERDICT,
                          SEND_CHALLENGE, RECV_ANSWER, SEND_VERDICT,
                          FINISHED },
};

void conc__hs_init(conc__hs *h, int fd, conc__hs_role role, const void *key,
                   size_t key_len, const unsigned char nonce[CONC__HS_NONCE])
{
    memset(h, 0, sizeof *h);
    h->fd = fd;
    h->role = role;
    h->key = key;
    h->key_len = key_len;
    memcpy(h->nonce, nonce, CONC__HS_NONCE);
}

static int fail(conc__hs *h, const char *why)
{
    h->why = why;
    return CONC__HS_FAILED;
}

/* Queues one frame of len (<= CONC__HS_MAX) bytes to send. */
static void put_frame(conc__hs *h, const void *data, size_t len)
{
    h->out[0] = (unsigned char)(len >> 24);
    h->out[1] = (unsigned char)(len >> 16);
    h->out[2] = (unsigned char)(len >> 8);
    h->out[3] = (unsigned char)len;
    memcpy(h->out + 4, data, len);
    h->out_len = 4 + len;
    h->out_sent = 0;
}

/* Sends what is queued.  DONE (0) when all of it went out, WANT_WRITE,
 * or FAILED. */
static int send_out(conc__hs *h)
{
    while (h->out_sent < h->out_len) {
        ssize_t r = conc__os_send(h->fd, h->out + h->out_sent,
                                  h->out_len - h->out_sent,
                                  MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0) {
            h->out_sent += (size_t)r;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return CONC__HS_WANT_WRITE;
        }
        h->sys_errno = errno; /* EPIPE, ECONNRESET: the peer is gone */
        return fail(h, "the connection broke while sending");
    }
    h->out_len = 0;
    h->out_sent = 0;
    return CONC__HS_DONE;
}

/* Reads into p until *have reaches n.  DONE, WANT_READ or FAILED. */
static int read_exact(conc__hs *h, unsigned char *p, size_t *have, size_t n)
{
    while (*have < n) {
        ssize_t r = conc__os_recv(h->fd, p + *have, n - *have, MSG_DONTWAIT);
        if (r > 0) {
            *have += (size_t)r;
            continue;
        }
        if (r == 0) {
            return fail(h, "the peer closed the connection mid-handshake");
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return CONC__HS_WANT_READ;
        }
        h->sys_errno = errno;
        return fail(h, "the connection broke while receiving");
    }
    return CONC__HS_DONE;
}

/* Receives one whole frame into in[0 .. in_len).  DONE, WANT_READ or
 * FAILED. */
static int recv_frame(conc__hs *h)
{
    int r = read_exact(h, h->hdr, &h->hdr_have, 4);
    if (r != CONC__HS_DONE) {
        return r;
    }
    uint32_t n = (uint32_t)h->hdr[0] << 24 | (uint32_t)h->hdr[1] << 16 |
                 (uint32_t)h->hdr[2] << 8 | (uint32_t)h->hdr[3];
    if (n > CONC__HS_MAX) {
        /* Also the 8-byte form (0xffffffff): only a 2 GiB message uses
         * it.  Refused before a byte of the payload is read. */
        h->bad_len = n;
        return fail(h, "a handshake message longer than 256 bytes");
    }
    h->in_len = n;
    r = read_exact(h, h->in, &h->in_have, n);
    if (r != CONC__HS_DONE) {
        return r;
    }
    h->hdr_have = 0;
    h->in_have = 0;
    return CONC__HS_DONE;
}

/* Python's _get_digest_name_and_payload for a prefixed message: which of
 * our digests "{name}..." names, and where the rest starts.  false for no
 * prefix or a digest we do not have. */
static bool digest_prefix(const unsigned char *m, size_t len,
                          conc__digest_kind *kind, size_t *rest)
{
    if (len < 2 || m[0] != '{') {
        return false;
    }
    /* Python: message.find(b'}', 1, _MAX_DIGEST_LEN + 2). */
    size_t end = len < MAX_DIGEST_NAME + 2 ? len : MAX_DIGEST_NAME + 2;
    for (size_t i = 1; i < end; i++) {
        if (m[i] != '}') {
            continue;
        }
        if (i - 1 == 3 && memcmp(m + 1, "md5", 3) == 0) {
            *kind = CONC__MD5;
        } else if (i - 1 == 6 && memcmp(m + 1, "sha256", 6) == 0) {
            *kind = CONC__SHA256;
        } else {
            return false;
        }
        *rest = i + 1;
        return true;
    }
    return false;
}

bool conc__hs_digest_ok(const unsigned char *key, size_t key_len,
                        const unsigned char *nonce, size_t nonce_len,
                        const unsigned char *resp, size_t resp_len)
{
    conc__digest_kind kind = CONC__MD5;
    const unsigned char *mac = resp;
    size_t mac_len = resp_len;
    /* Python 3.12's rule: a 16- or 20-byte reply is the legacy raw
     * HMAC-MD5 (a 20-byte one then fails on its length), anything else
     * must carry a digest prefix. */
    if (resp_len != 16 && resp_len != 20) {
        size_t rest = 0;
        if (!digest_prefix(resp, resp_len, &kind, &rest)) {
            return false;
        }
        mac = resp + rest;
        mac_len = resp_len - rest;
    }
    if (mac_len != conc__digest_len(kind)) {
        return false;
    }
    unsigned char want[CONC__DIGEST_MAX];
    conc__hmac(kind, key, key_len, nonce, nonce_len, want);
    return conc__digest_equal(want, mac, mac_len);
}

/* The peer's answer to our challenge is in: the verdict to send. */
static void judge_answer(conc__hs *h)
{
    if (conc__hs_digest_ok(h->key, h->key_len, h->nonce, CONC__HS_NONCE,
                           h->in, h->in_len)) {
        put_frame(h, WELCOME, WELCOME_LEN);
    } else {
        /* Tell the peer before hanging up, as Python does (its answerer
         * then raises AuthenticationError instead of seeing EOFError). */
        put_frame(h, FAILURE, FAILURE_LEN);
        h->refused = true;
    }
}

/* The peer's challenge is in: our answer to send, or FAILED. */
static int answer_challenge(conc__hs *h)
{
    if (h->in_len < CHALLENGE_LEN ||
        memcmp(h->in, CHALLENGE, CHALLENGE_LEN) != 0) {
        return fail(h, "the peer's message is not a #CHALLENGE#");
    }
    const unsigned char *m = h->in + CHALLENGE_LEN;
    size_t mlen = h->in_len - CHALLENGE_LEN;
    if (mlen < CONC__HS_NONCE) {
        return fail(h, "the peer's challenge is too short"); /* 3.12 */
    }
    /* "{sha256}" is the longest prefix we write. */
    unsigned char resp[8 + CONC__DIGEST_MAX];
    size_t resp_len = 0;
    conc__digest_kind kind = CONC__MD5;
    size_t rest = 0;
    if (mlen == CONC__HS_NONCE) {
        /* The legacy challenge (Python's legacy lengths are 16 and 20;
         * 16 is below the minimum checked above): a raw HMAC-MD5 of the
         * nonce. */
        conc__hmac(CONC__MD5, h->key, h->key_len, m, mlen, resp);
        resp_len = CONC__MD5_LEN;
    } else if (digest_prefix(m, mlen, &kind, &rest)) {
        /* "{name}" + HMAC-name of the whole message, prefix included:
         * the first rest bytes of m are exactly "{name}". */
        memcpy(resp, m, rest);
        conc__hmac(kind, h->key, h->key_len, m, mlen, resp + rest);
        resp_len = rest + conc__digest_len(kind);
    } else {
        return fail(h, "the peer's challenge names a digest we do not "
                       "have (we have md5 and sha256)");
    }
    put_frame(h, resp, resp_len);
    return CONC__HS_DONE;
}

int conc__hs_step(conc__hs *h)
{
    for (;;) {
        int r = CONC__HS_DONE;
        switch (PROGRAM[h->role][h->pc]) {
        case SEND_CHALLENGE: {
            if (h->out_len == 0) {
                unsigned char msg[CHALLENGE_LEN + CONC__HS_NONCE];
                memcpy(msg, CHALLENGE, CHALLENGE_LEN);
                memcpy(msg + CHALLENGE_LEN, h->nonce, CONC__HS_NONCE);
                put_frame(h, msg, sizeof msg);
            }
            r = send_out(h);
            break;
        }
        case SEND_ANSWER:
            r = send_out(h);
            break;
        case SEND_VERDICT:
            r = send_out(h);
            if (h->refused) {
                /* One try at telling the peer; the handshake is over
                 * whether or not it went out. */
                return fail(h, "the peer's answer to our challenge is "
                               "wrong (the keys differ)");
            }
            break;
        case RECV_ANSWER:
            r = recv_frame(h);
            if (r == CONC__HS_DONE) {
                judge_answer(h);
            }
            break;
        case RECV_CHALLENGE:
            r = recv_frame(h);
            if (r == CONC__HS_DONE) {
                r = answer_challenge(h);
            }
            break;
        case RECV_VERDICT:
            r = recv_frame(h);
            if (r != CONC__HS_DONE) {
                break;
            }
            if (h->in_len == FAILURE_LEN &&
                memcmp(h->in, FAILURE, FAILURE_LEN) == 0) {
                return fail(h, "the peer refused our answer (the keys "
                               "differ)");
            }
            if (h->in_len != WELCOME_LEN ||
                memcmp(h->in, WELCOME, WELCOME_LEN) != 0) {
                return fail(h, "the peer sent no #WELCOME# after our "
                               "answer");
            }
            break;
        default: /* FINISHED */
            return CONC__HS_DONE;
        }
        if (r != CONC__HS_DONE) {
            return r;
        }
        h->pc++;
    }
}
