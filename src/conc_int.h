/* conc_int.h - internal (conc__*) declarations shared across modules.
 * Nothing here is exported from the shared library. */
#ifndef CONC_INT_H
#define CONC_INT_H

#include <conc.h>

#include "os.h"

#include <stdarg.h>
#include <stdatomic.h>

/* Invariants: CONC__ALWAYS(x), CONC__NEVER(x), CONC__ASSERT(x).
 *
 * What they are for.  A reader of a core file relies on facts the code
 * itself keeps: a ring offset this process computed stays inside the
 * ring, a state machine only moves along its arrows, a count it keeps
 * never goes below zero.  These macros write such a fact down where it is
 * relied on, and check it in the builds that hunt bugs (SQLite's
 * ALWAYS()/NEVER() habit):
 *     if (CONC__NEVER(off >= q->R)) {      (cannot happen; if it does,
 *         return corrupt(fn, ...);          release takes the safe path)
 *     }
 *     CONC__ASSERT(p->off < q->R);         (a bare statement of a fact)
 * With CONC_INVARIANTS defined, a false fact prints "libconc: invariant
 * broken at FILE:LINE: EXPR" on stderr (the only place libconc writes
 * there) and aborts.  Without it, CONC__ALWAYS(x) and CONC__NEVER(x) are
 * the bare condition (x), so the branch they guard stays as a safe path
 * in release, and CONC__ASSERT(x) is nothing at all: x is not evaluated
 * (put no side effect in it), so it may sit on a fast path for free.
 *
 * When they are checked.  CMakeLists.txt defines CONC_INVARIANTS in the
 * sanitizer flavours (CONC_SANITIZE set), in a Debug build, and with
 * -DCONC_INVARIANTS=ON; not in the plain flavour, the release build the
 * benchmarks measure and users get.  Not tied to NDEBUG: configured with
 * no build type, the project builds RelWithDebInfo as -O2 -g without
 * -DNDEBUG on purpose, while an explicit RelWithDebInfo (scripts/test.sh)
 * or Release adds it; under a rule of !NDEBUG the same release build
 * would check or not by how it was configured, and a user's default
 * build would carry the aborts.  With the rule above the suite runs both
 * expansions, each in known flavours: plain the release one (the safe
 * paths), the sanitizer flavours the checks (tests/test_invariant.c
 * holds each to this).
 *
 * What they are not for: bytes another process or the network wrote.  A
 * record's stamp or length in a shared ring, a lock word, a count in a
 * named segment, a frame header: a peer (a buggy one, a hostile one, one
 * killed mid-write) can put any value there, and a hostile peer must not
 * be able to abort us.  Those are checked with a compare and a returned
 * error (CONC_ECORRUPT with a detail), in every build.  An invariant
 * states only what this process's own code guarantees: values in its
 * private memory, and values it read from shared memory after a check of
 * them has passed (an offset known to be in the ring, plus a length known
 * to be at most the capacity, is in the ring or one lap past it). */
_Noreturn void conc__assert_fail(const char *what, const char *file, int line);
#ifdef CONC_INVARIANTS
#define CONC__ALWAYS(x)                                                      \
    ((x) ? true : (conc__assert_fail("ALWAYS(" #x ")", __FILE__, __LINE__), \
                   false))
#define CONC__NEVER(x)                                                       \
    ((x) ? (conc__assert_fail("NEVER(" #x ")", __FILE__, __LINE__), true)   \
         : false)
#define CONC__ASSERT(x)                                                      \
    do {                                                                     \
        if (!(x)) {                                                          \
            conc__assert_fail(#x, __FILE__, __LINE__);                       \
        }                                                                    \
    } while (0)
#else
#define CONC__ALWAYS(x) (x)
#define CONC__NEVER(x) (x)
#define CONC__ASSERT(x) ((void)sizeof(!(x)))
#endif

/* Whether an option's conc_timeout was given: set by CONC_TIMEOUT(), or
 * seconds not 0.  The second is a plain double written where the option
 * is, as the contract's "double timeout" reads: `.task_timeout = 0.2`
 * compiles (C fills the struct's first member, seconds, and leaves set
 * false) and must mean 0.2 s, not "left out".  Only 0 itself needs
 * CONC_TIMEOUT(0) to mean "do not wait". */
static inline bool conc__timeout_given(conc_timeout t)
{
    return t.set || t.seconds != 0;
}

/* The seconds an option's conc_timeout stands for: t.seconds when given,
 * else dflt.  Check the result like any timeout (conc__deadline_init or
 * conc__timeout_ok). */
static inline double conc__timeout_opt(conc_timeout t, double dflt)
{
    return conc__timeout_given(t) ? t.seconds : dflt;
}

/* Whether seconds is a valid timeout: CONC_FOREVER, or a number >= 0
 * (+inf included, which means forever).  NaN and other negatives are not. */
static inline bool conc__timeout_ok(double seconds)
{
    return seconds >= 0 || seconds == CONC_FOREVER;
}

/* conc__fail - records the detail conc_errdetail() will show for the
 * error err that the caller is about to return, and returns err:
 *     return conc__fail(CONC_EINVAL, "conc_queue_new: capacity_bytes %zu "
 *                       "is over CONC_QUEUE_MAX_CAPACITY", cap);
 * The text names the public function and says what is wrong with what.
 * errno is kept.  conc__fail_sys is the same for a failed OS call: it
 * appends ": " and strerror(errno) (errno kept), so the text need only
 * name the call: conc__fail_sys(CONC_ESYS, "conc_shm_open: shm_open('%s')",
 * name).  Cheap enough for any error path; never on a success path. */
int conc__fail(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The same with a constant sentence (a string literal: only its address
 * is kept), for outcomes that a loop may meet on every call - a queue
 * empty or full, a timeout - where formatting would cost more than the
 * call: conc__fail_lit(CONC_EEMPTY, "conc_queue_get: the queue is empty"). */
int conc__fail_lit(int err, const char *sentence);
int conc__fail_sys(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* This thread's detail as it is, kept across an inner call whose failure
 * the caller recovers from (a fallback that worked must leave the detail
 * as it was: a call that succeeds sets none) or whose failure must not
 * replace the caller's own. */
typedef struct conc__detail_kept {
    char text[512];
    const char *lit;
} conc__detail_kept;
void conc__detail_keep(conc__detail_kept *k);
void conc__detail_put_back(const conc__detail_kept *k);

/* The two details every module needs: a required argument that is NULL,
 * and a timeout that is NaN or negative other than CONC_FOREVER. */
#define CONC__FAIL_NULL(what)                                                \
    conc__fail(CONC_EINVAL, "%s: %s is NULL", __func__, (what))
#define CONC__FAIL_TIMEOUT(t)                                                \
    conc__fail(CONC_EINVAL,                                                  \
               "%s: timeout %g: it must be >= 0 (0: do not wait) or "        \
               "CONC_FOREVER",                                               \
               __func__, (double)(t))

/* The layout of conc_buf, so modules that hand one to a callback can make
 * one on the stack.  limit 0 = no limit. */
struct conc_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
    size_t limit;
    char error[1024];
    bool has_error;
    /* 0, or why an append was refused: CONC_ETOOBIG (the limit) or
     * CONC_ENOMEM.  The bytes are then short of what the callback meant
     * to give, whatever it returns: conc__buf_outcome() says so. */
    int lost;
};
void conc__buf_init(conc_buf *buf, size_t limit);
/* Empties buf for the next callback, keeping its memory and limit. */
void conc__buf_reset(conc_buf *buf);
/* The code a call gives for a callback that filled buf and returned
 * code: buf->lost when an append was refused and the callback did not
 * fail with its own (positive) code, so that output cut short is never
 * taken for the whole; else code. */
int conc__buf_outcome(const conc_buf *buf, int code);
/* A pool task's result code from its return ret and the output it wrote
 * into buf: conc__buf_outcome's, with a negative return of the task's
 * own made CONC_ETASK.  An error (a negative code) keeps none of the
 * output (buf->len 0); a task's own failure code > 0 keeps what it wrote,
 * unless an append was refused (pool.h). */
int conc__task_outcome(conc_buf *buf, int ret);
void conc__buf_release(conc_buf *buf);
/* Hands the bytes over as a conc_msg (buf is left empty; NULL, 0 when
 * it held none). */
void conc__buf_take(conc_buf *buf, conc_msg *msg);

/* conc__lock_embed - a conc_lock made (init) or found (!init: NULL unless
 * a lock of this layout is there) inside shared memory its caller owns,
 * such as a named segment that unrelated processes map (a named
 * conc_value's lock).  mem is 8-aligned and conc__lock_embed_size() bytes
 * long.  The lock behaves as any other; it must never be passed to
 * conc_lock_free(): it goes with its memory. */
size_t conc__lock_embed_size(void);
conc_lock *conc__lock_embed(void *mem, bool init);

/* What runs when the program ends (exit.c), in this order: the threads
 * stage joins non-daemon conc_threads, the children stage terminates
 * daemon children and joins every child, the segments stage unlinks the
 * named segments this process created and never freed (last, so the
 * children joined before it can still open them).  conc__exit_hook sets a
 * stage's function (thread.c and process.c when they first start
 * something, shm.c when it first creates a named segment) and
 * makes sure one atexit handler runs the stages; conc__exit_run runs the
 * stages up to last_stage now (a conc_process child does, when its
 * target returns). */
typedef enum {
    CONC__EXIT_THREADS,
    CONC__EXIT_CHILDREN,
    CONC__EXIT_SEGMENTS,
    CONC__EXIT_STAGES
} conc__exit_stage;
void conc__exit_hook(conc__exit_stage stage, void (*fn)(void));
void conc__exit_run(int last_stage);

/* Cache line size, for keeping hot shared words apart. */
#define CONC__CACHELINE 64

/* Spin-loop hint. */
static inline void conc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A full fence (StoreLoad included) placed right after an atomic
 * read-modify-write, as Linux's smp_mb__after_atomic().  On x86 every
 * locked instruction already is a full barrier, so only the compiler must
 * be kept from moving accesses across; elsewhere it is a real seq_cst
 * fence.  Used where a Dekker pair (store X; fence; load Y) would
 * otherwise cost a second locked instruction right after the first. */
static inline void conc__fence_after_rmw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    atomic_signal_fence(memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

#endif
