/* handshake_int.h - CPython's multiprocessing.connection authentication
 * handshake as a non-blocking state machine (handshake.c): listener.c runs
 * many of them at once under one epoll, conc_client_connect runs one
 * waiting in poll, and the fuzz targets run it over a socketpair whose
 * other end holds the fuzzer's bytes.  Internal: nothing here is
 * exported. */
#ifndef CONC_HANDSHAKE_INT_H
#define CONC_HANDSHAKE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest handshake message read (Python: recv_bytes(256)). */
#define CONC__HS_MAX 256
/* Our challenge's nonce length (Python 3.11's MESSAGE_LENGTH, and the
 * length 3.12+ recognise as the legacy, unprefixed protocol). */
#define CONC__HS_NONCE 20

/* Who speaks first.  A server (Listener.accept) delivers a challenge,
 * checks the answer, then answers the client's; a client (Client)
 * answers first, then delivers. */
typedef enum conc__hs_role {
    CONC__HS_SERVER,
    CONC__HS_CLIENT
} conc__hs_role;

/* What conc__hs_step returns. */
enum {
    CONC__HS_DONE = 0,       /* authenticated both ways */
    CONC__HS_WANT_READ = 1,  /* call again when fd is readable */
    CONC__HS_WANT_WRITE = 2, /* call again when fd is writable */
    CONC__HS_FAILED = 3      /* refused or broken: why says what */
};

typedef struct conc__hs {
    int fd;
    conc__hs_role role;
    uint8_t pc;              /* the step of the role's program */
    bool refused;            /* our verdict was #FAILURE# */
    const unsigned char *key;
    size_t key_len;
    unsigned char nonce[CONC__HS_NONCE];
    unsigned char out[4 + CONC__HS_MAX]; /* the frame being sent */
    size_t out_len;
    size_t out_sent;
    unsigned char hdr[4];    /* the frame being received: header, */
    size_t hdr_have;
    size_t in_len;           /* its length once the header is in, */
    unsigned char in[CONC__HS_MAX]; /* and its bytes */
    size_t in_have;
    const char *why;         /* on FAILED: a phrase, "wrong digest"... */
    int sys_errno;           /* on FAILED by a socket error: its errno */
    uint32_t bad_len;        /* on FAILED by a long message: its length */
} conc__hs;

/* conc__hs_init - a handshake on the connected stream socket fd (used
 * with MSG_DONTWAIT, so its blocking mode does not matter), under key
 * (not copied: it must outlive the handshake), delivering nonce as our
 * challenge (fresh random bytes; the fuzz targets pass fixed ones). */
void conc__hs_init(conc__hs *h, int fd, conc__hs_role role, const void *key,
                   size_t key_len, const unsigned char nonce[CONC__HS_NONCE]);

/* conc__hs_step - makes all the progress possible without waiting:
 * sends what is due, reads what has come (exactly the handshake's own
 * frames, never a byte of what follows it), checks it.  Returns one of
 * the CONC__HS_* values above; after DONE or FAILED it must not be
 * called again.  A frame over CONC__HS_MAX bytes fails at its header,
 * before its payload is read; when our check of the peer's answer fails,
 * #FAILURE# is sent (one try, as Python does before raising) and then
 * the handshake fails. */
int conc__hs_step(conc__hs *h);

/* conc__hs_digest_ok - whether resp is a right answer to a challenge
 * whose nonce was nonce (the verifier's check, Python 3.12's rules: a
 * 16- or 20-byte reply is a raw HMAC-MD5, anything else must carry a
 * "{md5}" or "{sha256}" prefix).  Compares in constant time. */
bool conc__hs_digest_ok(const unsigned char *key, size_t key_len,
                        const unsigned char *nonce, size_t nonce_len,
                        const unsigned char *resp, size_t resp_len);

#endif
