/* digest.h - MD5 (RFC 1321), SHA-256 (FIPS 180-4) and HMAC (RFC 2104)
 * over either, for the multiprocessing.connection authentication
 * handshake (listener.c).  Internal: nothing here is exported.
 *
 * MD5 is broken as a collision-resistant hash; it is here only because
 * Python's legacy challenge/response uses HMAC-MD5, for which no practical
 * attack is known.  None of these functions allocates or fails.
 */
#ifndef CONC_DIGEST_H
#define CONC_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONC__MD5_LEN 16
#define CONC__SHA256_LEN 32
#define CONC__DIGEST_BLOCK 64 /* both hashes work on 64-byte blocks */
#define CONC__DIGEST_MAX 32   /* the longest digest here */

/* A running hash of either kind: init, update any number of times, final
 * (which leaves the context used up: init again to reuse it). */
typedef enum conc__digest_kind {
    CONC__MD5,
    CONC__SHA256
} conc__digest_kind;

typedef struct conc__digest {
    conc__digest_kind kind;
    uint32_t h[8];                 /* MD5 uses h[0..3] */
    uint64_t total;                /* bytes hashed so far */
    unsigned char buf[CONC__DIGEST_BLOCK];
    size_t buf_len;                /* bytes waiting in buf (< 64) */
} conc__digest;

/* The digest's length in bytes: 16 or 32. */
size_t conc__digest_len(conc__digest_kind kind);
void conc__digest_init(conc__digest *d, conc__digest_kind kind);
void conc__digest_update(conc__digest *d, const void *data, size_t len);
/* Writes conc__digest_len(kind) bytes to out. */
void conc__digest_final(conc__digest *d, unsigned char *out);

/* One-shot forms. */
void conc__md5(const void *data, size_t len, unsigned char out[16]);
void conc__sha256(const void *data, size_t len, unsigned char out[32]);

/* conc__hmac - HMAC (RFC 2104) of msg under key with the given hash;
 * writes conc__digest_len(kind) bytes to out.  Any key length (a key
 * longer than the 64-byte block is hashed first, as the RFC says). */
void conc__hmac(conc__digest_kind kind, const void *key, size_t key_len,
                const void *msg, size_t msg_len, unsigned char *out);

/* conc__digest_equal - compares len bytes in time that does not depend on
 * where they differ (Python's hmac.compare_digest), so a verifier does not
 * tell an attacker how many leading bytes of a forged MAC were right. */
bool conc__digest_equal(const void *a, const void *b, size_t len);

#endif
