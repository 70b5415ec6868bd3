/* fuzz_queue_header.c - the check conc_queue_open makes of a queue
 * header another process wrote (conc__queue_attach, which open calls on
 * the segment it mapped).
 *
 * Input: byte 0 picks a capacity, a real size for the memory (the size the
 * header's creator computed, a page less, a page more, or the header alone)
 * and one ring or three lanes; the rest is XORed over a valid header laid out
 * by conc__queue_format (with the fixed key a5a5...a5, so that a run depends
 * on its input alone), and past the first header's bytes over the second
 * lane's header, so an all-zero input is a good queue and every byte flipped
 * is a field rewritten.  The memory is one heap block of exactly that size, so
 * AddressSanitizer sees any access past it.
 *
 * Properties: the check answers 0, CONC_EINVAL or CONC_ECORRUPT, the
 * last two with a detail that names the caller; on 0 the handle's copies
 * are consistent (the ring lies inside the memory, R is 16 + capacity
 * rounded, capacity and maxsize in range, the key's top bit set, each
 * lane's ring inside the memory too), and
 * puts, gets, batches and the size calls on it (timeout 0) end in an
 * allowed code without touching memory outside the block.  The lock
 * words are cleared after the XOR: a live holder is the lock's business
 * and is tested in test_queue_hostile.c; here it would only make each
 * run wait out the lock grace. */
#include "fuzz_check.h"
#include "queue_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint64_t caps[] = { 1, 16, 100, 4080, 4096, 8176, 65536 };
#define NCAPS (sizeof caps / sizeof caps[0])

static void check_code(int err, const char *what)
{
    (void)what;
    FUZZ_CHECK(err == 0 || err == CONC_EFULL || err == CONC_EEMPTY ||
                 err == CONC_ECLOSED || err == CONC_ECORRUPT ||
                 err == CONC_ETOOBIG);
    if (err == CONC_ECORRUPT) {
        FUZZ_CHECK(strncmp(conc_errdetail(), "conc_queue_", 11) == 0);
    }
}

static void exercise(conc_queue *q)
{
    char buf[256];
    size_t len = 0, n = 0;
    conc_msg m, many[4];
    int err = conc_queue_put(q, "abc", 3, 0);
    check_code(err, "put");
    err = conc_queue_get_into(q, buf, sizeof buf, &len, 0);
    check_code(err, "get_into");
    FUZZ_CHECK(len <= q->capacity);
    const conc_msg batch[3] = { { "x", 1 }, { NULL, 0 }, { "yz", 2 } };
    err = conc_queue_put_many(q, batch, 3, &n, 0);
    check_code(err, "put_many");
    FUZZ_CHECK(n <= 3);
    err = conc_queue_get_many(q, many, 4, &n, 0);
    check_code(err, "get_many");
    FUZZ_CHECK(n <= 4 && (err == 0) == (n > 0));
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(many[i].len <= q->capacity);
        conc_msg_free(&many[i]);
    }
    err = conc_queue_get(q, &m, 0);
    check_code(err, "get");
    FUZZ_CHECK(m.len <= q->capacity);
    conc_msg_free(&m);
    FUZZ_CHECK(conc_queue_qsize(q) <=
               q->nlanes * (q->R / CONC__QUEUE_REC_HDR));
    (void)conc_queue_full(q);
    (void)conc_queue_empty(q);
    (void)conc_queue_task_done(q);
    (void)conc_queue_join(q, 0);
    FUZZ_CHECK(conc_queue_close(q) == 0);
    FUZZ_CHECK(conc_queue_put(q, "a", 1, 0) == CONC_ECLOSED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint64_t cap = caps[data[0] % NCAPS];
    unsigned lanes = data[0] / (NCAPS * 4) % 2 ? 3 : 1;
    size_t full = conc__queue_map_size(cap, lanes);
    size_t stride = conc__queue_lane_size(cap);
    size_t off = conc__queue_ring_off();
    size_t real;
    switch (data[0] / NCAPS % 4) {
    case 0:
        real = full;
        break;
    case 1:
        real = full - off > off ? full - off : off;
        break;
    case 2:
        real = full + off;
        break;
    default:
        real = off;
        break;
    }
    unsigned char *mem = aligned_alloc(off, real);
    if (mem == NULL) {
        return 0;
    }
    memset(mem, 0, real);
    /* Laid out at its full size, then as much of it as the memory has. */
    unsigned char *made = aligned_alloc(off, full);
    if (made == NULL) {
        free(mem);
        return 0;
    }
    memset(made, 0, full);
    conc__queue_format(made, full, cap, lanes > 1 ? 0 : data[0] & 7, lanes);
    for (unsigned i = 0; i < lanes; i++) {
        /* A fixed key, so that a run depends on its input alone. */
        ((conc__qshm *)(void *)(made + i * stride))->key =
            UINT64_C(0xa5a5a5a5a5a5a5a5);
    }
    memcpy(mem, made, full < real ? full : real);
    free(made);
    /* The input over lane 0's header, and what is left over lane 1's. */
    size_t hdr = sizeof(conc__qshm);
    for (size_t i = 0; i + 1 < size && i < 2 * hdr; i++) {
        size_t at = i < hdr ? i : stride + (i - hdr);
        if (i >= hdr && (lanes == 1 || at >= real)) {
            break;
        }
        mem[at] ^= data[1 + i];
    }
    for (unsigned i = 0; i < lanes && i * stride + hdr <= real; i++) {
        conc__qshm *sh = (conc__qshm *)(void *)(mem + i * stride);
        atomic_store(&sh->pmu.state, 0);
        atomic_store(&sh->cmu.state, 0);
    }
    conc_queue *q = NULL;
    int err = conc__queue_attach(&q, mem, real, "fuzz");
    if (err != 0) {
        FUZZ_CHECK(err == CONC_EINVAL || err == CONC_ECORRUPT);
        FUZZ_CHECK(strncmp(conc_errdetail(), "fuzz: ", 6) == 0);
        FUZZ_CHECK(q == NULL);
    } else {
        FUZZ_CHECK(q->capacity >= 1 &&
                     q->capacity <= CONC_QUEUE_MAX_CAPACITY);
        FUZZ_CHECK(q->R == CONC__QUEUE_REC_HDR +
                                 conc__queue_round16(q->capacity));
        FUZZ_CHECK(q->ring >= mem + sizeof(conc__qshm) &&
                     (size_t)(q->ring - mem) + q->R <= real);
        FUZZ_CHECK(q->maxsize <= q->R / CONC__QUEUE_REC_HDR);
        FUZZ_CHECK(q->nlanes >= 1 && q->nlanes <= CONC_QUEUE_MAX_LANES);
        FUZZ_CHECK((q->nlanes == 1) == (q->lane == NULL));
        for (unsigned i = 0; q->lane != NULL && i < q->nlanes; i++) {
            const conc_queue *l = &q->lane[i];
            FUZZ_CHECK(l->R == q->R && l->capacity == q->capacity &&
                       l->maxsize == 0 && l->top == q->sh && l->key >> 63);
            FUZZ_CHECK((unsigned char *)l->sh >= mem &&
                       l->ring >= (unsigned char *)l->sh +
                                      sizeof(conc__qshm) &&
                       (size_t)(l->ring - mem) + l->R <= real);
        }
        FUZZ_CHECK(q->key >> 63);
        exercise(q);
        conc_queue_free(q);
    }
    free(mem);
    return 0;
}
