/* shared_int.h - internal calls of the shared module (shm.c, value.c,
 * dict.c) that its tests and benchmarks use.  Not exported. */
#ifndef CONC_SHARED_INT_H
#define CONC_SHARED_INT_H

#include "conc_int.h"
#include "shm_int.h"

/* conc__dict_check - takes the dict's lock (repairing first if a writer
 * died) and verifies every invariant of the shared table: each chain's
 * entries are well-formed, in range and in the right bucket; the heap is
 * tiled exactly by the index tables, used blocks (one per reachable
 * entry) and free blocks (each on the free list of its order, lists
 * doubly linked); no move or repair is left half done; the count
 * matches.  0 when all hold, else a negative line number of the failed
 * check (the tests print it), or the error that stopped the check.  It
 * and conc__dict_stats_get judge a holder of the lock at once (a dict
 * call waits a sleep slice first), so a test's survivor repairs a dead
 * writer's dict without waiting. */
int conc__dict_check(conc_dict *d);

/* What the dict has been through and where it stands. */
typedef struct conc__dict_stats {
    uint64_t takeovers;  /* calls that found the lock's holder dead */
    uint64_t rebuilds;   /* repairs (a holder died writing) */
    uint64_t grows;      /* heap growths */
    uint64_t resizes;    /* index migrations finished */
    size_t free_bytes;   /* bytes on the free lists */
    size_t heap_bytes;   /* the heap's size now */
    size_t index_bytes;  /* the index tables' blocks */
    size_t buckets;      /* the main table's buckets */
    bool migrating;      /* an index migration is under way */
    size_t limit;        /* the capacity: the most the file may grow to */
    size_t most_backed;  /* the most bytes one call of this process had
                            the system back at once (fallocate) */
} conc__dict_stats;
int conc__dict_stats_get(conc_dict *d, conc__dict_stats *st);

/* Crash points, for the kill tests: conc__dict_crash_arm(n) makes this
 * process SIGKILL itself at the n-th crash point it passes from now on
 * (0 disarms).  Crash points sit between every two shared-memory steps
 * of set, update, del, the allocator, growth and the index migration.
 * CONC__DICT_CRASH_POINTS bounds how many one call passes, so a loop
 * 1..that covers every point of any call the tests make. */
void conc__dict_crash_arm(long n);

/* For tests: every dict of this process grows its heap in steps of
 * exactly bytes (a multiple of 4096) instead of an eighth of the heap
 * between 64 KiB and 2 MiB, so a test reaches with a few thousand keys
 * the index tables larger than a step that a dict of millions makes.
 * 0 restores the default. */
void conc__dict_grow_step_set(uint64_t bytes);
#define CONC__DICT_CRASH_POINTS 400

#endif
