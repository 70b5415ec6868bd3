/* digest.c - MD5 (RFC 1321), SHA-256 (FIPS 180-4) and HMAC (RFC 2104),
 * written from the specifications for the multiprocessing.connection
 * handshake (listener.c), which needs HMAC-MD5 (Python's legacy
 * challenge) and HMAC-SHA256 (Python 3.12's "{sha256}" challenge).
 *
 * Layout.  One context type serves both hashes: both work on 64-byte
 * blocks, pad the same way (a 0x80 byte, zeros, then the message length
 * in bits in the last 8 bytes of a block) and differ only in the
 * compression function, the byte order of words and length (MD5 little
 * endian, SHA-256 big endian) and the digest length.  update() gathers
 * bytes in buf until a block is full, compressing whole blocks straight
 * from the caller's memory when it can.
 *
 * Rejected: linking OpenSSL or another crypto library (a new dependency
 * for 200 lines of well-specified code), and a generic "any hash" HMAC
 * interface with function pointers (two hashes, one switch).
 *
 * The round constants were derived from their definitions: MD5's T[i] is
 * floor(2^32 * |sin(i + 1)|) (RFC 1321 section 3.4); SHA-256's K and the
 * initial H are the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes and the square roots of the first 8
 * (FIPS 180-4 sections 4.2.2 and 5.3.3).  The tests check the RFC and FIPS
 * example digests and Python's hashlib/hmac on many lengths.
 *
 * Thread safety: no shared state; a context belongs to its caller.
 */
#include "digest.h"

#include <string.h>

/* ---- MD5 (RFC 1321) ------------------------------------------------------ */

static const uint32_t md5_t[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

/* The per-step left rotations: four per round, repeated four times. */
static const unsigned char md5_s[4][4] = {
    { 7, 12, 17, 22 },
    { 5, 9, 14, 20 },
    { 4, 11, 16, 23 },
    { 6, 10, 15, 21 },
};

static uint32_t rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void md5_block(uint32_t h[4], const unsigned char *p)
{
    uint32_t x[16];
    for (int i = 0; i < 16; i++) {
        /* RFC 1321 words are little endian, whatever the host is. */
        x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
               (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int k;
        int round = i / 16;
        switch (round) {
        case 0: /* F(X,Y,Z) = XY v not(X) Z, words in order */
            f = (b & c) | (~b & d);
            k = i;
            break;
        case 1: /* G(X,Y,Z) = XZ v Y not(Z), word (1 + 5j) mod 16 */
            f = (b & d) | (c & ~d);
            k = (1 + 5 * i) % 16;
            break;
        case 2: /* H(X,Y,Z) = X xor Y xor Z, word (5 + 3j) mod 16 */
            f = b ^ c ^ d;
            k = (5 + 3 * i) % 16;
            break;
        default: /* I(X,Y,Z) = Y xor (X v not(Z)), word 7j mod 16 */
            f = c ^ (b | ~d);
            k = (7 * i) % 16;
            break;
        }
        /* a = b + ((a + f + X[k] + T[i]) <<< s), then the four words
         * rotate one place: that is the RFC's [abcd k s i] step with its
         * changing register names written as a rotation. */
        uint32_t t = d;
        d = c;
        c = b;
        b = b + rotl(a + f + x[k] + md5_t[i], md5_s[round][i % 4]);
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------ */

static const uint32_t sha256_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u,
    0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu,
    0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u,
    0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u,
    0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static const uint32_t sha256_h0[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    /* The message schedule W0..W63 (FIPS 180-4 6.2.2 step 1); words are
     * big endian. */
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^
                      (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^
                      (w[t - 2] >> 10);
        w[t] = s1 + w[t - 7] + s0 + w[t - 16];
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t big1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + big1 + ch + sha256_k[t] + w[t];
        uint32_t big0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = big0 + maj;
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

/* ---- the shared streaming frame ------------------------------------------ */

size_t conc__digest_len(conc__digest_kind kind)
{
    return kind == CONC__MD5 ? CONC__MD5_LEN : CONC__SHA256_LEN;
}

void conc__digest_init(conc__digest *d, conc__digest_kind kind)
{
    memset(d, 0, sizeof *d);
    d->kind = kind;
    if (kind == CONC__MD5) {
        /* RFC 1321 3.3: word A 01 23 45 67 (low byte first), and so on. */
        d->h[0] = 0x67452301u;
        d->h[1] = 0xefcdab89u;
        d->h[2] = 0x98badcfeu;
        d->h[3] = 0x10325476u;
    } else {
        memcpy(d->h, sha256_h0, sizeof sha256_h0);
    }
}

static void compress(conc__digest *d, const unsigned char *block)
{
    if (d->kind == CONC__MD5) {
        md5_block(d->h, block);
    } else {
        sha256_block(d->h, block);
    }
}

void conc__digest_update(conc__digest *d, const void *data, size_t len)
{
    const unsigned char *p = data;
    d->total += len;
    if (d->buf_len > 0) {
        size_t take = CONC__DIGEST_BLOCK - d->buf_len;
        if (take > len) {
            take = len;
        }
        memcpy(d->buf + d->buf_len, p, take);
        d->buf_len += take;
        p += take;
        len -= take;
        if (d->buf_len < CONC__DIGEST_BLOCK) {
            return;
        }
        compress(d, d->buf);
        d->buf_len = 0;
    }
    /* Whole blocks straight from the caller's bytes: no copy. */
    while (len >= CONC__DIGEST_BLOCK) {
        compress(d, p);
        p += CONC__DIGEST_BLOCK;
        len -= CONC__DIGEST_BLOCK;
    }
    if (len > 0) {
        memcpy(d->buf, p, len);
        d->buf_len = len;
    }
}

void conc__digest_final(conc__digest *d, unsigned char *out)
{
    /* Padding (RFC 1321 3.1-3.2, FIPS 180-4 5.1.1): a 1 bit, zeros up to
     * 56 bytes into a block, then the length in bits as 64 bits; a second
     * block when fewer than 9 bytes are left in this one. */
    uint64_t bits = d->total * 8;
    d->buf[d->buf_len++] = 0x80;
    if (d->buf_len > 56) {
        memset(d->buf + d->buf_len, 0, CONC__DIGEST_BLOCK - d->buf_len);
        compress(d, d->buf);
        d->buf_len = 0;
    }
    memset(d->buf + d->buf_len, 0, 56 - d->buf_len);
    for (int i = 0; i < 8; i++) {
        /* MD5 puts the low-order byte first, SHA-256 the high-order. */
        int shift = d->kind == CONC__MD5 ? 8 * i : 56 - 8 * i;
        d->buf[56 + i] = (unsigned char)(bits >> shift);
    }
    compress(d, d->buf);
    if (d->kind == CONC__MD5) {
        for (int i = 0; i < 16; i++) {
            out[i] = (unsigned char)(d->h[i / 4] >> (8 * (i % 4)));
        }
    } else {
        for (int i = 0; i < 32; i++) {
            out[i] = (unsigned char)(d->h[i / 4] >> (24 - 8 * (i % 4)));
        }
    }
    /* Leave no trace of the message or key in the context; explicit_bzero
     * because a plain memset of a dying object may be optimised away. */
    explicit_bzero(d, sizeof *d);
}

void conc__md5(const void *data, size_t len, unsigned char out[16])
{
    conc__digest d;
    conc__digest_init(&d, CONC__MD5);
    conc__digest_update(&d, data, len);
    conc__digest_final(&d, out);
}

void conc__sha256(const void *data, size_t len, unsigned char out[32])
{
    conc__digest d;
    conc__digest_init(&d, CONC__SHA256);
    conc__digest_update(&d, data, len);
    conc__digest_final(&d, out);
}

/* ---- HMAC (RFC 2104) ----------------------------------------------------- */

void conc__hmac(conc__digest_kind kind, const void *key, size_t key_len,
                const void *msg, size_t msg_len, unsigned char *out)
{
    /* K: the key, first hashed when longer than a block, zero-padded to
     * the block length B = 64. */
    unsigned char k[CONC__DIGEST_BLOCK];
    memset(k, 0, sizeof k);
    if (key_len > CONC__DIGEST_BLOCK) {
        conc__digest d;
        conc__digest_init(&d, kind);
        conc__digest_update(&d, key, key_len);
        conc__digest_final(&d, k);
    } else if (key_len > 0) {
        memcpy(k, key, key_len);
    }
    unsigned char pad[CONC__DIGEST_BLOCK];
    unsigned char inner[CONC__DIGEST_MAX];
    conc__digest d;

    /* H(K XOR ipad, text) with ipad = 0x36 repeated ... */
    for (int i = 0; i < CONC__DIGEST_BLOCK; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    conc__digest_init(&d, kind);
    conc__digest_update(&d, pad, sizeof pad);
    conc__digest_update(&d, msg, msg_len);
    conc__digest_final(&d, inner);

    /* ... then H(K XOR opad, inner) with opad = 0x5c repeated. */
    for (int i = 0; i < CONC__DIGEST_BLOCK; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    conc__digest_init(&d, kind);
    conc__digest_update(&d, pad, sizeof pad);
    conc__digest_update(&d, inner, conc__digest_len(kind));
    conc__digest_final(&d, out);

    /* The key material does not outlive the call on the stack. */
    explicit_bzero(k, sizeof k);
    explicit_bzero(pad, sizeof pad);
    explicit_bzero(inner, sizeof inner);
}

bool conc__digest_equal(const void *a, const void *b, size_t len)
{
    const volatile unsigned char *x = a;
    const volatile unsigned char *y = b;
    unsigned char diff = 0;
    /* Every byte is looked at whatever came before: no early exit. */
    for (size_t i = 0; i < len; i++) {
        diff |= x[i] ^ y[i];
    }
    return diff == 0;
}
