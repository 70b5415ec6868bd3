/* exit.c - what libconc does when a program ends: when main returns (or
 * exit() is called), and when a conc_process child's target returns.
 *
 * Order, Python's: first every started, unfinished non-daemon conc_thread
 * is joined (threading._shutdown), then daemon children are terminated and
 * every child is joined (multiprocessing's atexit), then the named
 * segments this process created and never freed are unlinked (Python's
 * resource tracker): last, so the children still running until the join
 * can open them.  Each module hands its stage to this file when it first
 * needs it (thread.c the threads, process.c the children, shm.c the
 * segments), so none knows of the others, and one atexit handler runs
 * the stages in that order whichever module came first.  The handler is
 * registered on the first hook, not at load time, so exit handlers the
 * program registered earlier still run after ours, as Python's atexit
 * order would have it.
 *
 * Registration is a compare-and-swap on a flag, not a pthread_once: a fork
 * while another thread is inside a once would leave the child's
 * once-control "in progress" for ever.  A hook is a function pointer
 * stored atomically; setting one twice stores the same pointer.
 */
#include "conc_int.h"

#include <stdlib.h>

static void (*_Atomic hooks[CONC__EXIT_STAGES])(void);
static atomic_bool registered;

void conc__exit_run(int last_stage)
{
    for (int s = 0; s <= last_stage && s < CONC__EXIT_STAGES; s++) {
        /* Acquire: pairs with the release store in conc__exit_hook. */
        void (*fn)(void) = atomic_load_explicit(&hooks[s],
                                                memory_order_acquire);
        if (fn != NULL) {
            fn();
        }
    }
}

static void exit_handler(void)
{
    conc__exit_run(CONC__EXIT_STAGES - 1);
}

void conc__exit_hook(conc__exit_stage stage, void (*fn)(void))
{
    CONC__ASSERT((int)stage >= 0 && stage < CONC__EXIT_STAGES && fn != NULL);
    /* A stage's function is set once, or again to the same one. */
    CONC__ASSERT(atomic_load_explicit(&hooks[stage], memory_order_relaxed) ==
                     NULL ||
                 atomic_load_explicit(&hooks[stage], memory_order_relaxed) ==
                     fn);
    atomic_store_explicit(&hooks[stage], fn, memory_order_release);
    bool no = false;
    if (atomic_compare_exchange_strong(&registered, &no, true)) {
        atexit(exit_handler);
    }
}
