/* queue_int.h - the shared-memory layout of a conc_queue, private to
 * src/queue.c and its white-box tests (tests/test_queue*.c).  See the
 * design comment at the top of queue.c for what each field means and
 * which lock or atomic guards it. */
#ifndef CONC_QUEUE_INT_H
#define CONC_QUEUE_INT_H

#include "conc_int.h"
#include "shm_int.h"
#include "sync_int.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#define CONC__QUEUE_MAGIC UINT64_C(0x75657551636e6f63) /* "concQueu" */
#define CONC__QUEUE_VERSION 5u
/* Reader processes a queue remembers (see READERS in queue.c). */
#define CONC__QUEUE_READERS 32
/* Producer threads alive at once in a process whose lanes a queue of
 * lanes hands out in turn; others put into lane (thread id % lanes).  See
 * PRODUCER THREADS in queue.c. */
#define CONC__QUEUE_PUT_THREADS 256u
/* Every record starts with this header; records are 16-byte aligned. */
#define CONC__QUEUE_REC_HDR 16u
/* len value of a skip record: "the rest of this lap is padding". */
#define CONC__QUEUE_SKIP UINT32_C(0xFFFFFFFF)
/* The high-water mark of touched ring bytes grows in these steps. */
#define CONC__QUEUE_HW_STEP ((uint64_t)64 << 10)
/* Queues of up to this capacity never wrap early (hw = R from the start). */
#define CONC__QUEUE_NO_EARLY_WRAP ((uint64_t)1 << 20)

/* A waiter's spin budget, in nanoseconds, adapts within these bounds
 * (see WAITING in queue.c). */
#define CONC__QUEUE_SPIN_FLOOR_NS 4000
#define CONC__QUEUE_SPIN_CEIL_NS 64000

static inline uint64_t conc__queue_round16(uint64_t n)
{
    return (n + 15u) & ~(uint64_t)15u;
}

/* One record header, at a 16-aligned ring offset.  stamp is written last
 * (the commit); len and item are read only after stamp matched. */
typedef struct conc__qrec {
    _Atomic uint64_t stamp; /* position ^ key once committed */
    _Atomic uint32_t len;   /* message bytes, or CONC__QUEUE_SKIP */
    _Atomic uint32_t item;  /* low 32 bits of the item number */
} conc__qrec;

typedef struct conc__qshm {
    /* Constant after creation (closed aside, which is written once). */
    _Atomic uint64_t magic;
    uint32_t version;
    uint32_t ring_off;      /* ring starts this many bytes into the map */
    uint64_t ring_bytes;    /* R */
    uint64_t capacity;      /* capacity_bytes as resolved */
    uint64_t maxsize;
    uint64_t key;           /* stamps are position ^ key */
    uint64_t map_size;      /* the whole mapping, every lane */
    uint32_t lanes;         /* rings in the mapping, 1..MAX_LANES */
    uint32_t lane;          /* this header's ring: 0..lanes-1 */
    /* Only lane 0's closed, data_seq, ndone, join_seq and readers are
     * used: they are the whole queue's; every lane's space_seq is its own
     * putters' (see LANES in queue.c). */
    _Atomic uint32_t closed;

    /* Producer side: written only by the holder of pmu.  The lock and
     * the producers' private state share a line; the counters others read
     * (nput, head, nget) sit on lines of their own, so a reader (a
     * spinning peer, qsize) never steals a lock's line. */
    alignas(128) conc__olock pmu;  /* the sync module's owner-stamped lock */
    _Atomic uint64_t tail;       /* position of the next record */
    _Atomic uint64_t tail_off;   /* tail % R, kept to spare a division */
    _Atomic uint64_t head_cache; /* a past value of head */
    _Atomic uint64_t nget_cache; /* a past value of nget */
    _Atomic uint64_t hw;         /* high-water mark of ring offsets used */
    alignas(128) _Atomic uint64_t nput; /* items committed and counted */

    /* Consumer side: written only by the holder of cmu. */
    alignas(128) conc__olock cmu;
    alignas(128) _Atomic uint64_t head; /* position of the oldest record */
    _Atomic uint64_t nget;              /* items taken */
    _Atomic uint64_t head_off;          /* head % R (cmu holders only) */

    /* Futex words: bit 0 = "someone sleeps", bits 1.. = a sequence. */
    alignas(128) _Atomic uint32_t data_seq;  /* getters sleep here */
    alignas(128) _Atomic uint32_t space_seq; /* putters sleep here */
    alignas(128) _Atomic uint64_t ndone;     /* task_done() calls */
    _Atomic uint32_t join_seq;               /* joiners sleep here */

    /* The processes that have read from the queue: stamp << 32 | pid,
     * each written by its own process (a CAS on a free or dead slot);
     * readers_overflow set when one found no slot.  See READERS. */
    alignas(128) _Atomic uint64_t readers[CONC__QUEUE_READERS];
    _Atomic uint32_t readers_overflow;
    /* Lanes (lane 0's only): the lane the next producer thread to claim
     * one takes, modulo lanes; bumped once per thread and handle (see
     * LANES).  In what was padding, so the header's size is unchanged. */
    _Atomic uint32_t next_lane;
} conc__qshm;

/* The handle.  R, key, capacity and maxsize are copies of the header's
 * fields, checked once (at new, open or attach) and never re-read: a
 * peer that rewrites the header later cannot change what this process
 * believes the ring's size to be. */
struct conc_queue {
    conc__qshm *sh;      /* this ring's header */
    conc__qshm *top;     /* lane 0's header: the queue-wide words */
    unsigned char *ring;
    uint64_t R;          /* copy of sh->ring_bytes */
    uint64_t key;        /* copy of sh->key */
    uint64_t capacity;
    uint64_t maxsize;    /* 0, or at most R / 16 */
    size_t map_size;
    conc_shm *shm;       /* a named queue's segment (owns the mapping) */
    /* A named queue's segment, in every lane's handle too (not owned):
     * its pages are allocated as hw grows (wrap_early), so that a full
     * /dev/shm is a put's CONC_ENOMEM, never a SIGBUS.  NULL: anonymous
     * (or attached) memory, whose pages need no file room. */
    conc_shm *file;
    bool borrowed;       /* conc__queue_attach: the mapping is the caller's */
    _Atomic int spin_get; /* adaptive spin budgets in ns, this process only */
    _Atomic int spin_put;
    _Atomic int linger;    /* consumer's batching linger (see BATCHING) */
    _Atomic int probe;     /* empty events until the next linger probe */
    /* conc__sync_fork_epoch when this process registered as a reader
     * through this handle; 0: not yet (a forked child differs). */
    _Atomic unsigned long reader_epoch;
    struct conc__netq *net; /* a queue on a server (net_queue.c), or NULL */
    /* A queue of several lanes: nlanes (a checked copy of the header's
     * lanes) handles, one per ring, each filled as a one-ring queue's
     * with its top at lane 0's header.  NULL and 1 for one ring, and in
     * the lanes' own handles. */
    conc_queue *lane;
    unsigned nlanes;
    _Atomic uint64_t held_look_ns; /* lanes: see HELD_LOOK_NS */
    /* Lanes: each producer thread's lane, by the thread's index in this
     * process (CONC__QUEUE_PUT_THREADS of them): its token << 8 | lane +
     * 1, written only by the thread holding that index; 0: none claimed
     * yet.  See PRODUCER THREADS in queue.c. */
    _Atomic uint64_t *put_slot;
};

/* Where the ring starts in a lane (a page boundary after the header),
 * how far apart lanes lie (a lane of capacity cap: header and ring,
 * page-rounded), and the mapping a queue of lanes such lanes needs. */
size_t conc__queue_ring_off(void);
size_t conc__queue_lane_size(uint64_t cap);
size_t conc__queue_map_size(uint64_t cap, unsigned lanes);

/* conc__queue_format - lays out an empty queue of capacity cap (1 to
 * CONC_QUEUE_MAX_CAPACITY) per lane, maxsize (0 when lanes > 1) and
 * lanes (1 to CONC_QUEUE_MAX_LANES) in map: map_size bytes, from
 * conc__queue_map_size(cap, lanes), zero-filled.  Publishes each lane's
 * magic last, lane 0's after all the others. */
void conc__queue_format(void *map, size_t map_size, uint64_t cap,
                        uint64_t maxsize, unsigned lanes);

/* conc__queue_attach - checks the queue header in map (size bytes, the
 * mapping's real size) completely and makes a handle on it, as
 * conc_queue_open does once it has mapped a segment; the handle does not
 * own map (conc_queue_free leaves it).  0; CONC_EINVAL (not a queue, or
 * another layout version); CONC_ECORRUPT (a field out of range or
 * inconsistent with the others or with size); CONC_ENOMEM.  Details name
 * fn.  For conc_queue_open, tests and fuzz targets. */
int conc__queue_attach(conc_queue **out, void *map, size_t size,
                       const char *fn);

#endif
