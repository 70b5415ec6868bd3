/* conc/common.h - what every libconc module shares: error codes, timeouts,
 * messages and byte buffers.
 *
 * Conventions, in every module:
 *   - every fallible function returns int: 0 or a negative CONC_E* code;
 *   - timeouts are double seconds; CONC_FOREVER blocks without limit, 0 tries
 *     once and never blocks; NaN or any other negative value is CONC_EINVAL;
 *   - a blocking call interrupted by a signal resumes with the time left.
 */
#ifndef CONC_COMMON_H
#define CONC_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CONC_BUILDING)
#define CONC_API __attribute__((visibility("default")))
#else
#define CONC_API
#endif

/* CONC_FOREVER - the timeout that means "no limit" (Python: timeout=None). */
#define CONC_FOREVER (-1.0)

/* The error table: X(NAME, value, Python equivalent / meaning).  Where POSIX
 * has the condition the code is -errno, so strerror-minded callers are not
 * surprised; the rest sit above errno's range. */
#define CONC_ERRORS(X)                                                       \
    X(ETIMEDOUT, -ETIMEDOUT, "timed out (TimeoutError)")                     \
    X(EFULL, -1001, "queue is full (queue.Full)")                            \
    X(EEMPTY, -1002, "nothing there (queue.Empty / KeyError)")               \
    X(ECLOSED, -1003, "closed: nothing more can be sent or received (EOFError)") \
    X(EINVAL, -EINVAL, "invalid argument (ValueError)")                      \
    X(ESTATE, -1004, "call not valid in this state (AssertionError)")        \
    X(EPERM, -EPERM, "not permitted: not held by the caller (RuntimeError), or another user's segment") \
    X(EDAEMON, -1005, "daemonic processes are not allowed to have children") \
    X(EBROKEN, -1006, "barrier is broken (BrokenBarrierError)")              \
    X(ECANCELLED, -ECANCELED, "cancelled (CancelledError)")                  \
    X(EWORKERDIED, -1007, "the process running the task died")               \
    X(ETASK, -1008, "the task reported failure")                             \
    X(EOWNERDEAD, -EOWNERDEAD, "acquired; the previous holder died")         \
    X(ETOOBIG, -1009, "message too big for the buffer or the capacity")      \
    X(ENOMEM, -ENOMEM, "out of memory or out of room")                       \
    X(ESYS, -1010, "an operating system call failed (errno kept)")           \
    X(EAUTH, -1011, "authentication failed (AuthenticationError)")           \
    X(ENET, -1012, "server unreachable or connection lost (ConnectionError)") \
    X(ECORRUPT, -1013, "shared memory or a peer's bytes failed a check")

enum conc_error {
#define CONC__ERR_ENUM(name, value, text) CONC_##name = (value),
    CONC_ERRORS(CONC__ERR_ENUM)
#undef CONC__ERR_ENUM
};

/* conc_strerror - a sentence for an error code; "success" for 0 and
 * "unknown error" for anything not in the table.  Never NULL, static. */
CONC_API const char *conc_strerror(int err);

/* conc_errname - the code's name, "CONC_ETIMEDOUT"; "CONC_OK" for 0,
 * "CONC_E?" for an unknown code.  Never NULL, static. */
CONC_API const char *conc_errname(int err);

/* conc_timeout - a timeout given as an option (a field of a conc_X_opts).
 * A function's timeout parameter is a double, and 0 there means "do not
 * wait".  An option must also be able to say "not given" - what a zeroed
 * or designated-initialiser opts struct leaves it - so it is this small
 * struct instead, written with CONC_TIMEOUT():
 *     .timeout = CONC_TIMEOUT(2.5)          at most 2.5 s
 *     .timeout = CONC_TIMEOUT(0)            do not wait at all
 *     .timeout = CONC_TIMEOUT(CONC_FOREVER) no limit
 *     (left out)                            the option's documented
 *                                           default, CONC_FOREVER unless
 *                                           its header says otherwise
 * So 0 means one thing everywhere: do not wait.  A plain number written
 * as the option (.timeout = 2.5, as a double option would be written: C
 * fills the struct's first member, seconds, and leaves set false) means
 * the same as CONC_TIMEOUT(2.5), CONC_FOREVER too; only 0 written so
 * reads as left out (it is what a zeroed struct holds), so "do not wait"
 * needs CONC_TIMEOUT(0).  (gcc's -Wmissing-braces, in -Wall, warns about
 * the plain form.)  The seconds follow the rules of every timeout: NaN,
 * or negative other than CONC_FOREVER, is CONC_EINVAL where the options
 * are taken. */
typedef struct conc_timeout {
    double seconds;
    bool set;
} conc_timeout;
#define CONC_TIMEOUT(s) ((conc_timeout){ .seconds = (s), .set = true })

/* conc_errdetail - what was wrong, in words, when a libconc call made by
 * this thread last failed: the function, the argument or object at fault
 * and why, and for CONC_ESYS the operating system call and errno's text:
 *   "conc_shm_open: shm_open('/jobs'): Permission denied".
 * Like errno it is per thread, set by a call that fails and left as it
 * was by a call that succeeds, so read it right after the failing call.
 * "" when no call of this thread has failed yet.  Never NULL; the text is
 * the thread's own and stays valid until its next failing call.  The
 * library never prints it: showing it is the caller's choice. */
CONC_API const char *conc_errdetail(void);

/* conc_msg - a received message: heap bytes the caller owns.  data is
 * NULL only for a zero-length message. */
typedef struct conc_msg {
    void *data;
    size_t len;
} conc_msg;

/* conc_msg_free - frees msg->data and zeroes *msg.  NULL is a no-op;
 * freeing twice is harmless. */
CONC_API void conc_msg_free(conc_msg *msg);

/* conc_buf - a growable byte buffer that libconc hands to a callback (a
 * pool task's output, a dict update's new value).  The callback only
 * appends; the library owns it. */
typedef struct conc_buf conc_buf;

/* conc_buf_append - appends len bytes.  0, CONC_EINVAL (NULL buf, or NULL
 * data with len > 0), CONC_ENOMEM (allocation failed, or the buffer has a
 * size limit and this would pass it: nothing is appended then).  A
 * refused append is remembered: the output is short of what the callback
 * meant, so the pool task or dict update fails whatever the callback
 * returns (unless with its own positive code), with CONC_ETOOBIG (over
 * the limit) or CONC_ENOMEM and, unless the callback set one, an error
 * text saying which; none of the output is kept. */
CONC_API int conc_buf_append(conc_buf *buf, const void *data, size_t len);

/* conc_buf_error - records a failure description (Python's exception
 * message) beside the output, printf-style; the text is cut at 1023 bytes.
 * A later call replaces it.  0 or CONC_EINVAL. */
CONC_API int conc_buf_error(conc_buf *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* conc_buf_len - bytes appended so far (0 for NULL). */
CONC_API size_t conc_buf_len(const conc_buf *buf);

#ifdef __cplusplus
}
#endif
#endif
