/* fuzz_handshake.c - the authkey handshake both ways: the fuzzer plays
 * the client against our server side (conc__hs_step, the role a keyed
 * listener runs for each connection) or the server against our client
 * side (conc_client_connect's role), its bytes arriving through a
 * socketpair in chunks, then end of file.  Properties:
 *   - our side never crashes, never waits to write (its few small
 *     frames always fit), and ends in DONE or FAILED once the input is
 *     over (FAILED with a reason);
 *   - what we write is exactly the protocol: server: our challenge, then
 *     #WELCOME# or #FAILURE# for the peer's answer, then our answer to
 *     the peer's challenge; client: our answer, then our challenge after
 *     #WELCOME#, then the verdict;
 *   - DONE exactly when an independent oracle (written here from
 *     Python's rules) says the peer's three frames pass: a right digest
 *     of our nonce (raw HMAC-MD5, "{md5}" or "{sha256}" + HMAC), a
 *     well-formed challenge we can answer, #WELCOME#;
 *   - on DONE not one byte past the handshake has been read: what the
 *     peer sent after its last handshake frame is still in the socket.
 * The key and the nonce are fixed (FUZZ_KEY, FUZZ_NONCE), so inputs can
 * carry right answers; fuzz/make_wire_corpus.py writes seeds from real
 * Python exchanges.
 *
 * Input: byte 0: bit 0 the role we play (0 server, 1 client), bits 1-7
 * the feeding chunk (0: all at once); the rest: the peer's bytes (at most
 * 4096). */
#include "fuzz_check.h"
#include "conc_int.h"
#include "digest.h"
#include "handshake_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char FUZZ_KEY[] = "fuzz-key";
#define KEY_LEN (sizeof FUZZ_KEY - 1)
static const unsigned char FUZZ_NONCE[CONC__HS_NONCE] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
};

/* The peer's frames as the oracle reads them. */
typedef struct frame {
    bool whole;          /* header and payload all there */
    bool ok_len;         /* length <= 256 */
    size_t len;
    const uint8_t *p;
    size_t end;          /* offset just past it */
} frame;

static frame frame_at(const uint8_t *s, size_t n, size_t at)
{
    frame f = { 0 };
    if (n - at < 4) {
        return f;
    }
    uint32_t len = (uint32_t)s[at] << 24 | (uint32_t)s[at + 1] << 16 |
                   (uint32_t)s[at + 2] << 8 | s[at + 3];
    f.ok_len = len <= CONC__HS_MAX;
    f.len = len;
    f.p = s + at + 4;
    f.whole = f.ok_len && n - at - 4 >= len;
    f.end = at + 4 + len;
    return f;
}

static bool is(const frame *f, const char *text)
{
    size_t n = strlen(text);
    return f->whole && f->len == n && memcmp(f->p, text, n) == 0;
}

/* Whether resp is a right answer to FUZZ_NONCE. */
static bool right_answer(const frame *f)
{
    unsigned char md5[16], sha[32];
    conc__hmac(CONC__MD5, FUZZ_KEY, KEY_LEN, FUZZ_NONCE, CONC__HS_NONCE, md5);
    conc__hmac(CONC__SHA256, FUZZ_KEY, KEY_LEN, FUZZ_NONCE, CONC__HS_NONCE,
               sha);
    if (!f->whole) {
        return false;
    }
    if (f->len == 16) {
        return memcmp(f->p, md5, 16) == 0;
    }
    if (f->len == 21) {
        return memcmp(f->p, "{md5}", 5) == 0 && memcmp(f->p + 5, md5, 16) == 0;
    }
    if (f->len == 40) {
        return memcmp(f->p, "{sha256}", 8) == 0 &&
               memcmp(f->p + 8, sha, 32) == 0;
    }
    return false;
}

/* Our answer to the peer's challenge frame, or 0 when there is none
 * (Python 3.12's rules: at least 20 bytes after #CHALLENGE#; exactly 20
 * is the legacy raw HMAC-MD5; else a "{md5}" or "{sha256}" prefix, whose
 * '}' is among the first 10 bytes, names the digest of the whole). */
static size_t our_answer(const frame *f, unsigned char *out)
{
    if (!f->whole || f->len < 11 || memcmp(f->p, "#CHALLENGE#", 11) != 0 ||
        f->len - 11 < CONC__HS_NONCE) {
        return 0;
    }
    const uint8_t *m = f->p + 11;
    size_t n = f->len - 11;
    if (n == CONC__HS_NONCE) {
        conc__hmac(CONC__MD5, FUZZ_KEY, KEY_LEN, m, n, out);
        return 16;
    }
    if (m[0] != '{') {
        return 0;
    }
    size_t close = 0;
    for (size_t i = 1; i < n && i < 10; i++) {
        if (m[i] == '}') {
            close = i;
            break;
        }
    }
    conc__digest_kind kind;
    if (close == 4 && memcmp(m, "{md5}", 5) == 0) {
        kind = CONC__MD5;
    } else if (close == 7 && memcmp(m, "{sha256}", 8) == 0) {
        kind = CONC__SHA256;
    } else {
        return 0;
    }
    memcpy(out, m, close + 1);
    conc__hmac(kind, FUZZ_KEY, KEY_LEN, m, n, out + close + 1);
    return close + 1 + conc__digest_len(kind);
}

/* Reads our next frame from the peer's side: its length, or -1 when no
 * (whole) frame is there. */
static long our_frame(int fd, unsigned char *buf)
{
    unsigned char h[4];
    if (recv(fd, h, 4, MSG_DONTWAIT) != 4) {
        return -1;
    }
    size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 |
               h[3];
    FUZZ_CHECK(n <= 64);
    FUZZ_CHECK(recv(fd, buf, n, MSG_DONTWAIT) == (ssize_t)n);
    return (long)n;
}

static void expect_frame(int fd, const void *want, size_t n)
{
    unsigned char buf[64];
    FUZZ_CHECK(our_frame(fd, buf) == (long)n);
    FUZZ_CHECK(memcmp(buf, want, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    conc__hs_role role = (data[0] & 1) ? CONC__HS_CLIENT : CONC__HS_SERVER;
    size_t chunk = data[0] >> 1;
    const uint8_t *s = data + 1;
    size_t n = size - 1 < 4096 ? size - 1 : 4096;
    if (chunk == 0) {
        chunk = n + 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return 0;
    }
    conc__hs h;
    conc__hs_init(&h, sv[0], role, FUZZ_KEY, KEY_LEN, FUZZ_NONCE);
    size_t fed = 0;
    int r = CONC__HS_WANT_READ;
    for (;;) {
        r = conc__hs_step(&h);
        FUZZ_CHECK(r != CONC__HS_WANT_WRITE);
        if (r != CONC__HS_WANT_READ) {
            break;
        }
        if (fed == n) {
            shutdown(sv[1], SHUT_WR); /* end of file: it must end now */
            r = conc__hs_step(&h);
            FUZZ_CHECK(r == CONC__HS_DONE || r == CONC__HS_FAILED);
            break;
        }
        size_t k = n - fed < chunk ? n - fed : chunk;
        FUZZ_CHECK(send(sv[1], s + fed, k, MSG_NOSIGNAL) == (ssize_t)k);
        fed += k;
    }
    if (r == CONC__HS_FAILED) {
        FUZZ_CHECK(h.why != NULL);
    }

    /* The oracle. */
    frame f1 = frame_at(s, n, 0);
    frame f2 = f1.whole ? frame_at(s, n, f1.end) : (frame){ 0 };
    frame f3 = f2.whole ? frame_at(s, n, f2.end) : (frame){ 0 };
    unsigned char chal[11 + CONC__HS_NONCE];
    memcpy(chal, "#CHALLENGE#", 11);
    memcpy(chal + 11, FUZZ_NONCE, CONC__HS_NONCE);
    unsigned char ans[8 + 32];
    bool done;
    int peer = sv[1];
    if (role == CONC__HS_SERVER) {
        /* f1 the answer to our challenge, f2 the peer's challenge, f3 its
         * verdict on our answer. */
        size_t alen = our_answer(&f2, ans);
        done = right_answer(&f1) && alen > 0 && is(&f3, "#WELCOME#");
        expect_frame(peer, chal, sizeof chal);
        if (f1.whole) {
            if (right_answer(&f1)) {
                expect_frame(peer, "#WELCOME#", 9);
                if (alen > 0) {
                    expect_frame(peer, ans, alen);
                }
            } else {
                expect_frame(peer, "#FAILURE#", 9);
            }
        }
    } else {
        /* f1 the peer's challenge, f2 its verdict on our answer, f3 its
         * answer to our challenge. */
        size_t alen = our_answer(&f1, ans);
        done = alen > 0 && is(&f2, "#WELCOME#") && right_answer(&f3);
        if (alen > 0) {
            expect_frame(peer, ans, alen);
            if (is(&f2, "#WELCOME#")) {
                expect_frame(peer, chal, sizeof chal);
                if (f3.whole) {
                    expect_frame(peer, right_answer(&f3) ? "#WELCOME#"
                                                         : "#FAILURE#",
                                 9);
                }
            }
        }
    }
    unsigned char extra[64];
    FUZZ_CHECK(our_frame(peer, extra) == -1); /* nothing more from us */
    FUZZ_CHECK(done == (r == CONC__HS_DONE));
    if (done) {
        /* Not a byte past the handshake was read. */
        int left = -1;
        FUZZ_CHECK(ioctl(sv[0], FIONREAD, &left) == 0);
        FUZZ_CHECK((size_t)left == fed - f3.end);
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}
