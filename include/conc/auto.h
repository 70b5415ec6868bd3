/* conc/auto.h - objects freed when they go out of scope, for GCC and
 * Clang (the cleanup attribute), so error paths need no free ladder:
 *
 *   int run(void)
 *   {
 *       CONC_AUTO(conc_queue) q = NULL;      // conc_queue *q, freed at }
 *       CONC_AUTO(conc_process) p = NULL;
 *       CONC_AUTO_MSG m = { 0 };             // conc_msg, data freed at }
 *       int err = conc_queue_new(&q, NULL);
 *       if (err != 0) {
 *           return err;                      // q (NULL) and p: no-ops
 *       }
 *       ...
 *       return conc_queue_get(q, &m, 5.0);   // everything freed here
 *   }
 *
 * CONC_AUTO(T) declares a pointer to the libconc object type T whose
 * conc_T_free() runs when the variable's scope ends, however it ends
 * (return, break, goto out of the block; not longjmp or exit).  Initialise
 * it (NULL, or the object); every free function takes NULL as a no-op.
 * One variable per declaration: in `CONC_AUTO(conc_lock) a = NULL, b`, b
 * is neither a pointer nor freed.  To keep an object past the scope - to
 * return it - take it out with CONC_TAKE(var), which yields the pointer
 * and leaves NULL behind.  CONC_AUTO_MSG declares a conc_msg whose bytes
 * conc_msg_free() releases at the end of the scope.
 *
 * The types: conc_process conc_thread conc_lock conc_rlock conc_sem
 * conc_event conc_cond conc_barrier conc_queue conc_conn conc_listener
 * conc_shm conc_value conc_dict conc_pool conc_future conc_iter.
 *
 * Plain C11 without the GNU extensions: this header then defines nothing
 * (CONC_HAVE_AUTO stays undefined), and the rest of libconc is unchanged;
 * free each object with its conc_X_free().  An object that is freed must
 * not be in use by another thread of the process (as for every free).
 */
#ifndef CONC_AUTO_H
#define CONC_AUTO_H

#include "pipe.h"
#include "pool.h"
#include "process.h"
#include "queue.h"
#include "shared.h"
#include "sync.h"
#include "thread.h"

#if defined(__GNUC__) || defined(__clang__)
#define CONC_HAVE_AUTO 1

#define CONC_AUTO(type) __attribute__((cleanup(conc__auto_##type))) type *
#define CONC_AUTO_MSG __attribute__((cleanup(conc_msg_free))) conc_msg
#define CONC_TAKE(var)                                                       \
    __extension__({                                                          \
        __typeof__(var) conc__taken = (var);                                 \
        (var) = NULL;                                                        \
        conc__taken;                                                         \
    })

#define CONC__AUTO_FREE(type)                                                \
    static inline void conc__auto_##type(type **p)                           \
    {                                                                        \
        type##_free(*p);                                                     \
    }
CONC__AUTO_FREE(conc_process)
CONC__AUTO_FREE(conc_thread)
CONC__AUTO_FREE(conc_lock)
CONC__AUTO_FREE(conc_rlock)
CONC__AUTO_FREE(conc_sem)
CONC__AUTO_FREE(conc_event)
CONC__AUTO_FREE(conc_cond)
CONC__AUTO_FREE(conc_barrier)
CONC__AUTO_FREE(conc_queue)
CONC__AUTO_FREE(conc_conn)
CONC__AUTO_FREE(conc_listener)
CONC__AUTO_FREE(conc_shm)
CONC__AUTO_FREE(conc_value)
CONC__AUTO_FREE(conc_dict)
CONC__AUTO_FREE(conc_pool)
CONC__AUTO_FREE(conc_future)
CONC__AUTO_FREE(conc_iter)
#undef CONC__AUTO_FREE

#endif
#endif
