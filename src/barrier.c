/* barrier.c - conc_barrier, Python's threading.Barrier, between threads
 * and processes.
 *
 * The state machine is Python's (Lib/threading.py): FILLING while parties
 * arrive, DRAINING while released parties leave, RESETTING while parties
 * leave a reset() barrier, BROKEN after abort(), a timeout or a failed
 * action.  count is the number of parties inside wait(); a party arriving
 * while the barrier drains or resets waits until the last one has left
 * (or its deadline passes: CONC_ETIMEDOUT, and it never joins a round),
 * and the last one to leave turns DRAINING/RESETTING back into FILLING.
 * Indexes are arrival order, 0 .. parties-1; the last arrival runs the
 * action, holding the barrier's lock (as Python), and releases everyone.
 *
 * Layout: a heap handle (the action and its argument: function pointers
 * are valid in a forked child, which runs the same program image) and one
 * page of anonymous shared memory, so a barrier created before fork() is
 * the same one in the child (a named barrier's page is a conc_shm segment
 * instead, sync_named.c; it has no action, which another program could
 * not run):
 *
 *     magic, layout | mu (the sync module's owner-stamped lock,
 *     olock.c) | seq (futex word) | state | count | released | parties |
 *     nslots | timeout | next_reap_ns | gone | slot[nslots]
 *
 * mu guards state, count, released and the slots (gone alone is added
 * to without it: "Stuck lock" below); n_waiting() and
 * broken() read them without it (a snapshot, as Python's properties).
 * So every access to them is relaxed: mu's acquire and release order
 * them, and they are atomic only so that those snapshots (and a reader
 * that took mu over from a dead holder) are not data races.  seq is a broadcast
 * word: bumped (release) under mu at every change a waiter may wait for,
 * then FUTEX_WAKE all.  A waiter reads seq under mu, releases mu and
 * FUTEX_WAITs on the value it read, so a change made after it let go of mu
 * makes the wait return at once: no wake-up can be lost.
 *
 * released counts successful releases.  A waiter remembers it on arrival
 * and succeeds iff it moved: the decision is taken when the barrier
 * releases, so a party slow to wake is not failed by an abort() that comes
 * after its release (Python checks the state when the party runs, and
 * can).  released cannot move twice while a party is inside: the next
 * release needs the barrier to refill, which needs that party gone.
 *
 * Death.  If a party dies holding mu (say, SIGKILLed inside the action),
 * the next one to take mu gets CONC_EOWNERDEAD (olock.c) and breaks the
 * barrier: its state may be half-updated and the dead party will never
 * arrive.  Every other party is woken and gets CONC_EBROKEN.
 *
 * A party that dies while waiting (not holding mu) would stay in count
 * for ever: in Python the others hang (or time out), and no reset() can
 * bring the barrier back, since resetting waits for count to reach 0.
 * Here each party writes its identity (tid + start stamp, sync_self.c) into
 * slot[index] on arrival and clears it on leaving; a party whose sleep
 * slice ends (CONC__SYNC_SLICE_NS) looks through the slots (at most one
 * look per slice among all parties, see bar_reap_dead()), under mu, for
 * identities whose thread no longer exists, removes them from count and,
 * if the round was still filling, breaks the barrier (the round can never
 * complete): the survivors get CONC_EBROKEN within a slice or two and
 * reset() works.  A party found dead while the barrier drains or resets
 * is just removed, letting the drain finish.  Slots exist for the first
 * SLOTS_MAX parties only; past that, dead waiters are not looked for.
 * Dying between "count + 1" and "slot written" (two stores under mu),
 * or between "slot cleared" and "count - 1" on the way out, leaves count
 * one too high with no slot to find the dead party by.  Both are deaths
 * holding mu, the EOWNERDEAD case above, and there count is rebuilt from
 * the slots (bar_recount(): at every release of mu, count equals the
 * number of filled slots), so a later reset() does not wait for a party
 * that does not exist.  (With more than SLOTS_MAX parties count cannot be
 * rebuilt, and such a reset() waits for ever, as Python's does for any
 * dead party.)
 *
 * Stuck lock.  A live thread may keep mu for ever: a party stopped
 * (SIGSTOP, a debugger) inside the action, or a peer that wrote a live
 * tid into a named barrier's word.  So every wait for mu has a deadline
 * (bar_lock()): a wait's own, but at least LOCK_BRIEF_S, so that a wait
 * given 0, or whose time is up, still gets mu from a party that holds it
 * for the microseconds it normally does; reset() and abort(), which have
 * no timeout, wait LOCK_GRACE_S, as the queue's calls without one wait
 * for a side's lock (queue.c).  Then the call returns CONC_ETIMEDOUT.  A
 * party that has not yet counted itself in just leaves.  One in the
 * filling phase cannot update count without mu: it writes SLOT_LEFT into
 * its slot and leaves, and the next bar_reap_dead() (at most a slice
 * after mu is free again, by any party waiting or timing out) removes it
 * as it removes a dead party, breaking the round if it is still filling,
 * as the timeout would have.  Past SLOTS_MAX there is no slot to mark:
 * such a party adds one to gone instead, and every arrival takes as many
 * parties out of count as gone says (bar_reap_left()).
 *
 * Scribbles.  A peer may write anything into a named barrier's segment.
 * parties and nslots are read once, at new or open, into the handle, and
 * only those copies bound what a wait touches or returns; a count, or a
 * state, that no barrier can hold is CONC_ECORRUPT for the wait that
 * finds it, which rebuilds count from the slots and breaks the barrier
 * (bar_corrupt()), so that reset() mends it.  A draining or resetting
 * barrier with nobody inside is taken as drained (see wait()).
 */
#include "barrier_int.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

/* The barrier's states (conc__barrier_shared.state). */
enum { FILLING = 0, DRAINING = 1, RESETTING = -1, BROKEN = -2 };

/* Parties whose identities are tracked (8 bytes each in the region). */
#define SLOTS_MAX 1024u

/* A slot's mark for a party that left without mu (top, "Stuck lock"):
 * no identity has tid 0 (sync_self.c), and conc__sync_alive() judges
 * tid 0 dead, so bar_reap_dead() removes it as it removes a dead party. */
#define SLOT_LEFT CONC__OL_WAITERS

/* How long a wait waits for mu at least, its deadline aside: a party
 * holds it for microseconds (the action aside), as a queue's getter
 * holds a lane's lock (queue.c, LANE_WAIT_S). */
#define LOCK_BRIEF_S 0.01

/* How long reset() and abort(), which have no timeout, wait for mu: as
 * long as a queue's calls without a timeout of their own wait for a
 * side's lock (queue.c, LOCK_GRACE_S). */
#define LOCK_GRACE_S 1.0

static size_t bar_size(uint32_t nslots)
{
    return sizeof(struct conc__barrier_shared) +
           (size_t)nslots * sizeof(uint64_t);
}

int conc_barrier_new(conc_barrier **out, const conc_barrier_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    if (opts == NULL) {
        return conc__fail(CONC_EINVAL, "conc_barrier_new: opts is NULL "
                          "(.parties is required)");
    }
    if (opts->parties == 0 || opts->parties > INT_MAX) {
        return conc__fail(CONC_EINVAL, "conc_barrier_new: parties %u: it "
                          "must be 1 to INT_MAX", opts->parties);
    }
    double timeout = conc__timeout_opt(opts->timeout, CONC_FOREVER);
    if (!conc__timeout_ok(timeout)) {
        return conc__fail(CONC_EINVAL, "conc_barrier_new: timeout %g: it "
                          "must be >= 0 or CONC_FOREVER", timeout);
    }
    if (opts->name != NULL && opts->action != NULL) {
        return conc__fail(CONC_EINVAL, "conc_barrier_new: a named barrier "
                          "cannot have an action (another program could "
                          "not run it)");
    }
    conc_barrier *b = conc__calloc(1, sizeof *b);
    if (b == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", __func__);
    }
    uint32_t nslots = opts->parties < SLOTS_MAX ? opts->parties : SLOTS_MAX;
    void *mem;
    int err = conc__sync_region_make(&mem, opts->name, bar_size(nslots),
                                     CONC__SYNC_MAGIC_BARRIER);
    if (err != 0) {
        free(b);
        return err;
    }
    struct conc__barrier_shared *sh = mem;
    sh->layout = CONC__SYNC_LAYOUT;
    atomic_init(&sh->mu.state, 0);
    atomic_init(&sh->seq, 0);
    atomic_init(&sh->state, FILLING);
    atomic_init(&sh->count, 0);
    atomic_init(&sh->released, 0);
    sh->parties = opts->parties;
    sh->nslots = nslots;
    sh->timeout = timeout;
    atomic_init(&sh->next_reap_ns, 0);
    atomic_init(&sh->gone, 0);
    sh->pad = 0;
    for (uint32_t i = 0; i < nslots; i++) {
        atomic_init(&sh->slot[i], 0);
    }
    conc__sync_publish(&sh->magic, CONC__SYNC_MAGIC_BARRIER);
    b->sh = sh;
    b->nslots = nslots;
    b->parties = opts->parties;
    b->action = opts->action;
    b->action_arg = opts->action_arg;
    *out = b;
    return 0;
}

int conc_barrier_open(conc_barrier **out, const char *name)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    conc_barrier *b = conc__calloc(1, sizeof *b);
    if (b == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: out of memory", __func__);
    }
    void *mem;
    size_t size;
    int err = conc__sync_named_open(&mem, &size, name,
                                    CONC__SYNC_MAGIC_BARRIER, bar_size(0));
    if (err != 0) {
        free(b);
        return err;
    }
    struct conc__barrier_shared *sh = mem;
    /* Never trust a count read from a segment to size what we touch:
     * each field read once, and only the checked copy used. */
    uint32_t parties = __atomic_load_n(&sh->parties, __ATOMIC_RELAXED);
    uint32_t nslots = __atomic_load_n(&sh->nslots, __ATOMIC_RELAXED);
    uint32_t want = parties < SLOTS_MAX ? parties : SLOTS_MAX;
    if (parties == 0 || parties > INT_MAX || nslots != want ||
        size < bar_size(want)) {
        err = conc__fail(CONC_ECORRUPT, "conc_barrier_open: '%s': the "
                         "barrier's parties (%u) and slots (%u) do not fit "
                         "each other or the segment (%zu bytes)", name,
                         parties, nslots, size);
        conc__sync_region_free(mem, size);
        free(b);
        return err;
    }
    CONC__ASSERT(want <= SLOTS_MAX && size >= bar_size(want));
    b->sh = sh;
    b->nslots = want; /* not sh->nslots again: it could change meanwhile */
    b->parties = parties; /* nor sh->parties */
    *out = b;
    return 0;
}

void conc_barrier_free(conc_barrier *b)
{
    if (b == NULL) {
        return;
    }
    conc__sync_region_free(b->sh, bar_size(b->nslots));
    free(b);
}

/* Wakes every waiter: they recheck under mu.  Called holding mu. */
static void bar_broadcast(struct conc__barrier_shared *sh)
{
    /* Release pairs with the waiter's read of seq under mu (mu orders
     * it); the bump makes a FUTEX_WAIT on the old value return. */
    atomic_fetch_add_explicit(&sh->seq, 1, memory_order_release);
    /* Pairs with the FUTEX_WAIT in bar_wait_change(). */
    conc__os_futex_wake(&sh->seq, INT32_MAX, true);
}

static void bar_break(struct conc__barrier_shared *sh)
{
    atomic_store_explicit(&sh->state, BROKEN, memory_order_relaxed);
    bar_broadcast(sh);
}

/* Called holding mu taken over from a dead holder, which may have died
 * between its update of count and of its slot: count becomes the number
 * of filled slots again (top).  Dead parties among them are removed by
 * the next bar_reap_dead(). */
static void bar_recount(const conc_barrier *b)
{
    struct conc__barrier_shared *sh = b->sh;
    if (b->nslots < b->parties) {
        return; /* untracked parties: count cannot be rebuilt */
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->nslots; i++) {
        n += atomic_load_explicit(&sh->slot[i], memory_order_relaxed) != 0;
    }
    atomic_store_explicit(&sh->count, n, memory_order_relaxed);
}

/* Takes mu by dl, and not sooner than LOCK_BRIEF_S from now (a wait
 * whose time is up, or that was given 0, still takes it from a party that
 * holds it for the microseconds it normally does).  0, or CONC_ETIMEDOUT
 * when a live thread kept it (top, "Stuck lock"). */
static int bar_lock(const conc_barrier *b, const conc__deadline *dl)
{
    struct conc__barrier_shared *sh = b->sh;
    conc__deadline ld = *dl;
    if (!dl->forever && conc__deadline_left(dl) < LOCK_BRIEF_S) {
        conc__deadline_init(&ld, LOCK_BRIEF_S);
    }
    int err = conc__olock_acquire(&sh->mu, &ld);
    if (err == CONC_EOWNERDEAD) {
        /* A party died inside the barrier: mend count, break it (top). */
        bar_recount(b);
        bar_break(sh);
        err = 0;
    }
    /* detail: the caller's (which call could not take mu) */
    return err;
}

/* reset() and abort(), which have no timeout, wait LOCK_GRACE_S for mu:
 * 0 holding it, or CONC_ETIMEDOUT. */
static int bar_lock_graced(const conc_barrier *b, const char *fn)
{
    conc__deadline dl;
    conc__deadline_init(&dl, LOCK_GRACE_S);
    if (bar_lock(b, &dl) != 0) {
        return conc__fail(CONC_ETIMEDOUT, "%s: the barrier's lock stayed "
                          "held by a live thread for %g s: a stopped or "
                          "misbehaving process holds it", fn, LOCK_GRACE_S);
    }
    return 0;
}

static void bar_unlock(struct conc__barrier_shared *sh)
{
    conc__olock_release(&sh->mu);
}

static int32_t bar_state(struct conc__barrier_shared *sh)
{
    return atomic_load_explicit(&sh->state, memory_order_relaxed);
}

/* Called holding mu: removes parties that died while waiting (top).
 * Each look reads /proc once per waiting party, so the parties share one
 * look per interval, longer for big barriers (one slice per 64 slots):
 * at most a few per cent of a CPU even with SLOTS_MAX waiting. */
/* Called holding mu: takes k parties (k > 0), dead or gone, out of
 * count: a filling round they were in can never complete (broken); a
 * draining one they were the last of is over. */
static void bar_remove(const conc_barrier *b, uint32_t k)
{
    struct conc__barrier_shared *sh = b->sh;
    uint32_t n = atomic_load_explicit(&sh->count, memory_order_relaxed);
    /* k may come from the segment (gone): never below 0 */
    n = k < n ? n - k : 0;
    atomic_store_explicit(&sh->count, n, memory_order_relaxed);
    int32_t st = bar_state(sh);
    if (st == FILLING) {
        bar_break(sh); /* this round can never complete */
    } else if (n == 0 && (st == DRAINING || st == RESETTING)) {
        atomic_store_explicit(&sh->state, FILLING, memory_order_relaxed);
        bar_broadcast(sh);
    }
}

/* Called holding mu: takes the parties counted in gone out. */
static void bar_reap_gone(const conc_barrier *b)
{
    /* Relaxed: the party that added to gone published nothing else, and
     * mu orders the removal against every other update of count. */
    uint32_t gone = atomic_exchange_explicit(&b->sh->gone, 0,
                                             memory_order_relaxed);
    if (gone > 0) {
        bar_remove(b, gone);
    }
}

/* Called holding mu: takes the party of slot i out (bar_remove()). */
static void bar_remove_slot(const conc_barrier *b, uint32_t i)
{
    atomic_store_explicit(&b->sh->slot[i], 0, memory_order_relaxed);
    bar_remove(b, 1);
}

/* Called holding mu, by every arrival: removes the parties that left
 * without mu (SLOT_LEFT, and those counted in gone: top).  A compare per
 * slot, no system call, so no arrival can count a party that has
 * returned already (it would complete a round with one party missing, or
 * count a thread twice). */
static void bar_reap_left(const conc_barrier *b)
{
    for (uint32_t i = 0; i < b->nslots; i++) {
        if (atomic_load_explicit(&b->sh->slot[i], memory_order_relaxed) ==
            SLOT_LEFT) {
            bar_remove_slot(b, i);
        }
    }
    bar_reap_gone(b);
}

static void bar_reap_dead(const conc_barrier *b)
{
    struct conc__barrier_shared *sh = b->sh;
    uint32_t nslots = b->nslots;
    uint64_t now = conc__now_ns();
    bar_reap_gone(b); /* one exchange: not worth the interval */
    uint64_t interval = CONC__SYNC_SLICE_NS * (1 + nslots / 64);
    uint64_t next = atomic_load_explicit(&sh->next_reap_ns,
                                         memory_order_relaxed);
    /* A look further off than one interval is no party's doing: a peer
     * wrote it into a named barrier, and it must not stop the looks. */
    if (now < next && next - now <= interval) {
        return;
    }
    atomic_store_explicit(&sh->next_reap_ns, now + interval,
                          memory_order_relaxed);
    for (uint32_t i = 0; i < nslots; i++) {
        uint64_t id = atomic_load_explicit(&sh->slot[i],
                                           memory_order_relaxed);
        if (id == 0 || conc__sync_alive(id)) {
            continue;
        }
        bar_remove_slot(b, i);
    }
}

/* Called holding mu: lets go of it until seq changes (or a slice ends, or
 * dl passes), then takes it again by dl (bar_lock()); at a slice's end,
 * or when dl has passed, looks for dead parties (so arrivals with
 * timeouts shorter than a slice still clear a SLOT_LEFT).  CONC_ETIMEDOUT
 * once dl has passed; *held false when mu could not be taken back (then
 * CONC_ETIMEDOUT too, not holding mu). */
static int bar_wait_change(const conc_barrier *b, const conc__deadline *dl,
                           bool *held)
{
    struct conc__barrier_shared *sh = b->sh;
    uint32_t seen = atomic_load_explicit(&sh->seq, memory_order_relaxed);
    bar_unlock(sh);
    /* Pairs with the FUTEX_WAKE in bar_broadcast(). */
    int err = conc__sync_sleep(&sh->seq, seen, dl);
    *held = bar_lock(b, dl) == 0;
    if (!*held) {
        /* detail: the caller (mu stayed held: it says by whom) */
        return CONC_ETIMEDOUT;
    }
    if (err != 0) {
        bar_reap_dead(b);
    }
    /* detail: the caller (a timeout only ends its wait) */
    return err == CONC_ETIMEDOUT ? CONC_ETIMEDOUT : 0;
}

/* Called holding mu, when the segment holds what no barrier ever does (a
 * count or state out of range: a peer scribbled on a named barrier):
 * count is rebuilt from the slots, as after a death holding mu, and the
 * barrier broken, so that the parties inside wake (CONC_EBROKEN) and
 * reset() mends it.  Lets go of mu; CONC_ECORRUPT. */
static int bar_corrupt(const conc_barrier *b, uint32_t count)
{
    struct conc__barrier_shared *sh = b->sh;
    int32_t st = bar_state(sh);
    bar_recount(b);
    bar_break(sh);
    bar_unlock(sh);
    return conc__fail(CONC_ECORRUPT, "conc_barrier_wait: the barrier holds "
                      "%u waiting parties of %u in state %d, which no "
                      "barrier does (its segment was scribbled on); it is "
                      "now broken (reset() mends it)", count, b->parties,
                      (int)st);
}

/* What a wait says when mu stayed held past its deadline. */
static const char lock_held[] =
    "conc_barrier_wait: the barrier's lock stayed held by a live thread "
    "past the timeout (a stopped or misbehaving process holds it)";

/* The filling phase's way out when mu stayed held by a live thread past
 * the deadline (top, "Stuck lock"): the party cannot take itself out of
 * count without mu, so it marks its slot SLOT_LEFT (or, past the slots,
 * adds one to gone), for the next arrival or bar_reap_dead() to do it as
 * for a dead party.  0 if the round was released meanwhile, else
 * CONC_ETIMEDOUT. */
static int bar_leave_unlocked(const conc_barrier *b, uint32_t idx,
                              uint32_t rel, int *index)
{
    struct conc__barrier_shared *sh = b->sh;
    /* Relaxed: the reaper reads the slot (or gone) under mu, and nothing
     * else is published with it. */
    if (idx < b->nslots) {
        atomic_store_explicit(&sh->slot[idx], SLOT_LEFT,
                              memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&sh->gone, 1, memory_order_relaxed);
    }
    if (atomic_load_explicit(&sh->released, memory_order_relaxed) != rel) {
        if (index != NULL) {
            *index = (int)idx;
        }
        return 0;
    }
    return conc__fail_lit(CONC_ETIMEDOUT, lock_held);
}

int conc_barrier_wait(conc_barrier *b, double timeout, int *index)
{
    if (b == NULL) {
        return CONC__FAIL_NULL("b");
    }
    struct conc__barrier_shared *sh = b->sh;
    if (timeout == CONC_FOREVER) {
        /* The barrier's own default; a peer may have scribbled on it, and
         * the deadline's check below refuses a bad one. */
        timeout = sh->timeout;
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (bar_lock(b, &dl) != 0) {
        return conc__fail_lit(CONC_ETIMEDOUT, lock_held);
    }
    /* Python's _enter(): wait while the previous round drains or a reset
     * completes.  Python waits here without a deadline (its timeout
     * starts once the party is in); here the one deadline bounds the
     * whole call, or a released party that is stopped before it leaves
     * (SIGSTOP) would hold every later arrival for ever.  Time running
     * out here is CONC_ETIMEDOUT, and the barrier is left as it was: this
     * party joined no round, so it breaks none.  Draining or resetting
     * with no party inside cannot be (the last to leave makes it FILLING;
     * so does bar_reap_dead()): a peer scribbled on a named barrier, and
     * it is taken as drained rather than waited on for ever. */
    bool late = false;
    bool held = true;
    bar_reap_left(b);
    while (bar_state(sh) == DRAINING || bar_state(sh) == RESETTING) {
        uint32_t n = atomic_load_explicit(&sh->count, memory_order_relaxed);
        if (n > b->parties) {
            return bar_corrupt(b, n);
        }
        if (n == 0) {
            atomic_store_explicit(&sh->state, FILLING, memory_order_relaxed);
            bar_broadcast(sh);
            break;
        }
        if (late) {
            bar_unlock(sh);
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_barrier_wait: the "
                                  "previous round was still draining (or "
                                  "a reset completing) when the timeout "
                                  "expired; the barrier is unchanged");
        }
        late = bar_wait_change(b, &dl, &held) == CONC_ETIMEDOUT;
        if (!held) {
            return conc__fail_lit(CONC_ETIMEDOUT, lock_held);
        }
        bar_reap_left(b);
    }
    if (late) {
        /* The drain ended as the time ran out: joining now would only
         * break the round at once. */
        bar_unlock(sh);
        return conc__fail_lit(CONC_ETIMEDOUT, "conc_barrier_wait: the "
                              "previous round drained only as the "
                              "timeout expired; the barrier is unchanged");
    }
    if (bar_state(sh) == BROKEN) {
        bar_unlock(sh);
        return conc__fail_lit(CONC_EBROKEN, "conc_barrier_wait: the barrier "
                                            "is broken (reset() mends it)");
    }
    /* Every slot index below is bounded by this copy, checked at new or
     * open; count itself is the segment's and may be anything, so an
     * index that is no party's (parties as checked at new or open, never
     * the segment's) is refused, as is a state no barrier has. */
    CONC__ASSERT(b->nslots <= SLOTS_MAX);
    bool broken = false;
    uint32_t idx = atomic_load_explicit(&sh->count, memory_order_relaxed);
    if (idx >= b->parties || bar_state(sh) != FILLING) {
        return bar_corrupt(b, idx);
    }
    atomic_store_explicit(&sh->count, idx + 1, memory_order_relaxed);
    if (idx < b->nslots) {
        atomic_store_explicit(&sh->slot[idx], conc__sync_self_id(),
                              memory_order_relaxed);
    }
    if (idx + 1 == b->parties) {
        int aerr = b->action != NULL ? b->action(b->action_arg) : 0;
        if (aerr != 0 || bar_state(sh) == BROKEN) {
            bar_break(sh);
            broken = true;
        } else {
            atomic_store_explicit(&sh->state, DRAINING, memory_order_relaxed);
            atomic_fetch_add_explicit(&sh->released, 1,
                                      memory_order_relaxed);
            bar_broadcast(sh);
        }
    } else {
        uint32_t rel = atomic_load_explicit(&sh->released,
                                            memory_order_relaxed);
        for (;;) {
            if (atomic_load_explicit(&sh->released, memory_order_relaxed) !=
                    rel ||
                bar_state(sh) != FILLING) {
                break;
            }
            int werr = bar_wait_change(b, &dl, &held);
            if (!held) {
                return bar_leave_unlocked(b, idx, rel, index);
            }
            if (werr == CONC_ETIMEDOUT) {
                if (atomic_load_explicit(&sh->released,
                                         memory_order_relaxed) == rel &&
                    bar_state(sh) == FILLING) {
                    bar_break(sh); /* a timeout breaks the barrier */
                }
                break;
            }
        }
        broken = atomic_load_explicit(&sh->released, memory_order_relaxed) ==
                 rel;
    }
    /* Python's _exit(). */
    if (idx < b->nslots) {
        atomic_store_explicit(&sh->slot[idx], 0, memory_order_relaxed);
    }
    uint32_t left = atomic_load_explicit(&sh->count, memory_order_relaxed);
    atomic_store_explicit(&sh->count, left - 1, memory_order_relaxed);
    if (left - 1 == 0 &&
        (bar_state(sh) == DRAINING || bar_state(sh) == RESETTING)) {
        atomic_store_explicit(&sh->state, FILLING, memory_order_relaxed);
        bar_broadcast(sh);
    }
    bar_unlock(sh);
    if (!broken && index != NULL) {
        *index = (int)idx;
    }
    if (broken) {
        return conc__fail_lit(CONC_EBROKEN, "conc_barrier_wait: the barrier "
                                            "broke during this wait (a "
                                            "timeout, abort(), a failed "
                                            "action or a party that died)");
    }
    return 0;
}

int conc_barrier_reset(conc_barrier *b)
{
    if (b == NULL) {
        return CONC__FAIL_NULL("b");
    }
    struct conc__barrier_shared *sh = b->sh;
    int err = bar_lock_graced(b, __func__);
    if (err != 0) {
        return err;
    }
    if (atomic_load_explicit(&sh->count, memory_order_relaxed) > 0) {
        int32_t st = bar_state(sh);
        if (st == FILLING || st == BROKEN) {
            atomic_store_explicit(&sh->state, RESETTING,
                                  memory_order_relaxed);
        }
    } else {
        atomic_store_explicit(&sh->state, FILLING, memory_order_relaxed);
    }
    bar_broadcast(sh);
    bar_unlock(sh);
    return 0;
}

int conc_barrier_abort(conc_barrier *b)
{
    if (b == NULL) {
        return CONC__FAIL_NULL("b");
    }
    int err = bar_lock_graced(b, __func__);
    if (err != 0) {
        return err;
    }
    bar_break(b->sh);
    bar_unlock(b->sh);
    return 0;
}

unsigned conc_barrier_parties(conc_barrier *b)
{
    return b == NULL ? 0 : b->parties;
}

unsigned conc_barrier_n_waiting(conc_barrier *b)
{
    if (b == NULL || bar_state(b->sh) != FILLING) {
        return 0;
    }
    /* Never more than the parties, whatever a peer wrote. */
    uint32_t n = atomic_load_explicit(&b->sh->count, memory_order_relaxed);
    return n < b->parties ? n : b->parties;
}

bool conc_barrier_broken(conc_barrier *b)
{
    return b != NULL && bar_state(b->sh) == BROKEN;
}
