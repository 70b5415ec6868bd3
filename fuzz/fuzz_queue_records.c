/* fuzz_queue_records.c - a queue whose ring and running state another
 * process rewrote: every record header, every message byte, head, tail,
 * their ring offsets, the counters, the caches, the high-water mark and
 * the closed flag come from the input; then a sequence of puts, gets,
 * batches and size calls (timeout 0) chosen by the input runs on it.
 *
 * Input: byte 0 picks the capacity (bits 0-1), the closed flag (bit 2)
 * and maxsize (bits 4-7); the next 80 bytes are the ten
 * running fields (8 bytes each, little-endian, in the order of
 * `fields` below); the last bytes, up to OPS_MAX of them, are the
 * operations; whatever lies between is copied over the ring from its
 * start.  The key is fixed (bit 63 and a pattern), so the fuzzer can
 * write stamps that commit a record (position ^ key).  The header and
 * ring are one heap block of exactly the mapping's size, and the ring
 * ends exactly at its end for the capacities 4080 and 8176, so
 * AddressSanitizer sees any access past the ring.
 *
 * Properties: no crash, no access outside the block, no endless loop
 * (libFuzzer's -timeout), every call ends in an allowed code, CONC_ECORRUPT
 * always with a detail, a message never longer than the capacity, qsize
 * never more than the ring can hold.  The lock words stay free (see
 * fuzz_queue_header.c: a held lock is tested elsewhere). */
#include "fuzz_check.h"
#include "queue_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY (UINT64_C(0x8000000000000000) | UINT64_C(0x5a5a5a5a5a5a5a00))
#define OPS_MAX 24

static const uint64_t caps[] = { 64, 256, 4080, 8176 };

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static void allowed(int err)
{
    FUZZ_CHECK(err == 0 || err == CONC_EFULL || err == CONC_EEMPTY ||
                 err == CONC_ECLOSED || err == CONC_ECORRUPT ||
                 err == CONC_ETOOBIG);
    if (err == CONC_ECORRUPT) {
        FUZZ_CHECK(strncmp(conc_errdetail(), "conc_queue_", 11) == 0);
    }
}

static void run_op(conc_queue *q, uint8_t op)
{
    static const unsigned char pattern[512] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    unsigned char buf[64];
    size_t len = 0, n = 0;
    conc_msg m, many[5];
    int err = 0;
    switch (op % 8) {
    case 0:
    case 1:
        err = conc_queue_put(q, pattern, (size_t)(op >> 3) * 16 % q->capacity,
                             0);
        break;
    case 2:
        err = conc_queue_get(q, &m, 0);
        FUZZ_CHECK(m.len <= q->capacity);
        conc_msg_free(&m);
        break;
    case 3:
        err = conc_queue_get_into(q, buf, sizeof buf, &len, 0);
        FUZZ_CHECK(len <= q->capacity);
        break;
    case 4: {
        conc_msg batch[3] = { { (void *)pattern, op % q->capacity },
                              { (void *)pattern, 1 },
                              { NULL, 0 } };
        err = conc_queue_put_many(q, batch, 3, &n, 0);
        FUZZ_CHECK(n <= 3);
        break;
    }
    case 5:
        err = conc_queue_get_many(q, many, 1 + op % 5, &n, 0);
        FUZZ_CHECK((err == 0) == (n > 0) && n <= 5);
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(many[i].len <= q->capacity);
            conc_msg_free(&many[i]);
        }
        break;
    case 6:
        FUZZ_CHECK(conc_queue_qsize(q) <= q->R / CONC__QUEUE_REC_HDR);
        (void)conc_queue_full(q);
        (void)conc_queue_task_done(q);
        break;
    default:
        if (op == 0xff) {
            err = conc_queue_close(q);
        }
        break;
    }
    allowed(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 + 80) {
        return 0;
    }
    uint64_t cap = caps[data[0] % (sizeof caps / sizeof caps[0])];
    size_t map_size = conc__queue_map_size(cap, 1);
    size_t off = conc__queue_ring_off();
    unsigned char *mem = aligned_alloc(off, map_size);
    if (mem == NULL) {
        return 0;
    }
    memset(mem, 0, map_size);
    conc__queue_format(mem, map_size, cap, data[0] >> 4, 1);
    conc__qshm *sh = (conc__qshm *)(void *)mem;
    sh->key = KEY;
    _Atomic uint64_t *fields[] = { &sh->tail,  &sh->tail_off, &sh->head,
                                   &sh->head_off, &sh->nput, &sh->nget,
                                   &sh->hw, &sh->head_cache, &sh->nget_cache,
                                   &sh->ndone };
    for (size_t i = 0; i < 10; i++) {
        atomic_store(fields[i], le64(data + 1 + 8 * i));
    }
    atomic_store(&sh->closed, (data[0] >> 2) & 1);
    size_t rest = size - 81;
    size_t nops = rest < OPS_MAX ? rest : OPS_MAX;
    size_t ring_bytes = rest - nops;
    uint64_t R = CONC__QUEUE_REC_HDR + conc__queue_round16(cap);
    memcpy(mem + off, data + 81, ring_bytes < R ? ring_bytes : R);
    conc_queue *q = NULL;
    int err = conc__queue_attach(&q, mem, map_size, "fuzz");
    FUZZ_CHECK(err == 0);
    for (size_t i = 0; i < nops; i++) {
        run_op(q, data[size - nops + i]);
    }
    conc_queue_free(q);
    free(mem);
    return 0;
}
