/* conc_int.h - internal (conc__*) declarations shared across modules.
 * Nothing here is exported from the shared library. */
#ifndef CONC_INT_H
#define CONC_INT_H

#include <conc.h>

#include "os.h"

#include <stdarg.h>
#include <stdatomic.h>

/* A broken invariant in shared memory is a bug, not an outside condition:
 * it is reported with file and line (the only place libconc writes to
 * stderr) and stops the process. */
#define CONC__ASSERT(cond)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            conc__assert_fail(#cond, __FILE__, __LINE__);                    \
        }                                                                    \
    } while (0)
_Noreturn void conc__assert_fail(const char *what, const char *file, int line);

/* The seconds an option's conc_timeout stands for: t.seconds when set,
 * else dflt.  Check the result like any timeout (conc__deadline_init or
 * conc__timeout_ok). */
static inline double conc__timeout_opt(conc_timeout t, double dflt)
{
    return t.set ? t.seconds : dflt;
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
};
void conc__buf_init(conc_buf *buf, size_t limit);
void conc__buf_release(conc_buf *buf);
/* Hands the bytes over as a conc_msg (buf is left empty). */
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
 * daemon children and joins every child.  conc__exit_hook sets a stage's
 * function (thread.c and process.c, when they first start something) and
 * makes sure one atexit handler runs the stages; conc__exit_run runs the
 * stages up to last_stage now (a conc_process child does, when its
 * target returns). */
typedef enum {
    CONC__EXIT_THREADS,
    CONC__EXIT_CHILDREN,
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
