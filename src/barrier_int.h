/* barrier_int.h - the shared-memory layout of a conc_barrier, private
 * to src/barrier.c and its white-box test (tests/test_barrier.c).  The
 * design comment at the top of barrier.c says what each field means. */
#ifndef CONC_BARRIER_INT_H
#define CONC_BARRIER_INT_H

#include "sync_int.h"

struct conc__barrier_shared {
    uint32_t magic;
    uint32_t layout;
    conc__olock mu;
    _Atomic uint32_t seq;
    _Atomic int32_t state;   /* FILLING, DRAINING, ... (barrier.c) */
    _Atomic uint32_t count;
    _Atomic uint32_t released;
    uint32_t parties;
    uint32_t nslots;
    double timeout;
    _Atomic uint64_t next_reap_ns; /* monotonic time of the next look */
    _Atomic uint32_t gone; /* parties past the slots that left without mu */
    uint32_t pad;
    _Atomic uint64_t slot[]; /* nslots identities, 0 = free */
};

struct conc_barrier {
    struct conc__barrier_shared *sh;
    uint32_t nslots; /* sh->nslots as checked at new/open (at most
                        SLOTS_MAX, barrier.c): every slot index is bounded
                        by this copy, never by the segment */
    uint32_t parties; /* sh->parties as checked at new/open (1..INT_MAX):
                         every index and count is judged against this
                         copy, never against the segment */
    conc_barrier_action_fn action;
    void *action_arg;
};

#endif
