/* queue.c - conc_queue: a FIFO of byte messages in shared memory, for any
 * mix of producer and consumer threads and processes.
 *
 * LAYOUT.  One mapping (anonymous MAP_SHARED, or a POSIX shm object for a
 * named queue): a header (conc__qshm, queue_int.h) and, page-aligned after
 * it, a byte ring of R = 16 + round16(capacity_bytes) bytes.  A message is
 * a record: a 16-byte header {stamp, len, item} and the bytes, padded to
 * 16.  Positions are 64-bit byte counters that only grow; a record at
 * position p sits at ring offset p % R, and its bytes may wrap past the
 * end of the ring (two memcpys), so a message of exactly capacity_bytes
 * fits into an empty queue and no space is lost to fragmentation.  The
 * ring holds records whose positions lie in [head, tail); tail - head <= R
 * is the byte bound, nput - nget <= maxsize the item bound.
 *
 * WHO WRITES WHAT.  Producers serialise on pmu and consumers on cmu, two
 * owner-stamped lock words (the sync module's olock, src/sync_int.h: the
 * holder's tid and start time in the word, one CAS to take, one exchange
 * to release, a futex only when contended) on separate 128-byte lines,
 * each with its side's private state beside it: tail and caches of the
 * other side's counters for the producers.  The counters others read
 * (nput; head and nget) have lines of their own.  The copy in or out
 * happens under the side's lock, so inside each side the ring is single-
 * producer/single-consumer; in the 1->1 case each lock stays in its
 * owner's cache.  (Rejected: a lock-free ticket ring a la Folly/Vyukov.
 * Variable-size records cannot share fixed turns, and in a reserve-then-
 * commit ring a producer that dies between its reservation and its commit
 * stalls every later producer for good.  With two cores there is little
 * parallel copying to gain.
 * Also rejected, after measuring: robust pthread mutexes, whose lock and
 * unlock (robust-list bookkeeping) cost 40% of an uncontended put+get.)
 *
 * PUT (under pmu): check the bounds against the cached head and nget,
 * re-reading the consumers' line only when the cache says "full"; write
 * the bytes, then len and item (the low 32 bits of the item number), then
 * the commit: stamp = position ^ key, a release store.  Then nput and
 * tail advance (put_publish).  GET (under cmu): the record at head is
 * there iff its stamp equals head ^ key (acquire, so its bytes are
 * visible); copy out, then store nget (item + 1) and head (get_publish;
 * release: our reads of the bytes happen before any producer overwrites
 * them, pairs with the acquire load of head in room()).  A get that finds
 * a skip record (see MEMORY) passes it.  tail_off and head_off keep
 * tail % R and head % R, sparing a division per call (they are recomputed
 * by the repairs).  Consumers never read tail and producers read head
 * only when full, so in steady state the only lines crossing between the
 * cores are
 * the records themselves.  key is random per queue, so stale bytes (old
 * headers, old message bytes) never pass for a commit: an old header holds
 * an older position, and message bytes would have to contain this
 * queue's secret key xor a future position.
 *
 * BATCHES (conc_queue_put_many / get_many).  A batch is the same records
 * written or taken under one hold of the side's lock, with one
 * publication (nput and tail, or nget and head, stored once at the end)
 * and one wake-up of the other side's sleepers, instead of one per
 * message.  Each record is still committed by its own stamp as it is
 * written, so getters may take a batch's first records while its last
 * are written, and a producer that dies mid-batch leaves committed
 * records after tail, which repair_producer() walks past (as below);
 * nothing ever commits a record out of order.  (Rejected: committing the
 * first record's stamp last, so a batch appears at once.  A producer
 * dying before that last store would leave later stamps committed past
 * tail, at positions the next producer's records need not line up with:
 * a getter could then take a dead batch's stale record.)  A batch that
 * meets a wrap_early() publishes what it wrote first, so the rewind and
 * the skip record see the queue as it is.  A consumer that dies mid-batch
 * has published nothing: its messages are found again at head.
 *
 * DYING PEERS.  A process killed holding pmu or cmu leaves its
 * identity in the lock word; a waiter that has slept one slice (50 ms)
 * finds the holder dead (sync_self.c: gone, a zombie, or its tid reused),
 * takes the lock over with a CAS, and repairs before going on.  Every
 * intermediate state is repairable from the ring itself:
 *   producer died before the commit: nothing is visible; tail still points
 *     at the half-written record, the next producer overwrites it;
 *   died after the commit: the record at tail has a valid stamp; repair
 *     advances tail past it and sets nput from its item field (the dead
 *     process's message was delivered, as its caller could not know).
 *   consumer died before advancing head: the record at head is still
 *     committed; repair sets nget from its item field and the message is
 *     delivered to the next consumer (its dead taker never returned it);
 *   died after advancing head: that one message is lost with its process.
 *   producer died rewinding an empty queue (see MEMORY) between its
 *     stores of head and tail: repair moves tail up to head.
 * No one waits for a dead process otherwise: the locks are only held
 * across a copy, never across a sleep.
 *
 * READERS.  A pipeline whose consumers have all died would leave its
 * producers blocked for ever on a full queue (Python's too).  So a queue
 * remembers the processes that read from it: a process's first get
 * through a handle (and a forked child's first, through an inherited one)
 * puts stamp << 32 | pid (its start time, so a reused pid is not taken
 * for it) into a free slot of readers[], or over a dead process's entry,
 * by CAS; the handle remembers the fork epoch it did so in, so later gets
 * pay one compare.  With no slot left it raises readers_overflow, and the
 * queue then never judges its readers gone.  A put that is blocked for
 * room checks, at the end of each sleep slice, whether every registered
 * reader has exited: if so (and at least one ever registered), and it
 * stays so for a second (READERS_GRACE_NS: time for a supervisor's
 * replacement consumer to make its first get), it gives up with
 * CONC_ECLOSED and a detail that says so, putting nothing more.
 * A process that only opens the queue later to read is not known until
 * its first get; a put that gave up may be retried.  The check reads
 * /proc for at most CONC__QUEUE_READERS entries, once per slice of a
 * blocked put, never on a fast path.  A peer can write the table like any
 * byte of the segment: it can make a blocked put give up early, as it
 * could close the queue, and nothing worse.
 *
 * HOSTILE PEERS.  Any process that can write the segment (its creator's
 * user, or whom conc_shm_share() lets in) can write any byte of the
 * header and the ring at any time.  The handle copies R, key, capacity
 * and maxsize once, checked at open (queue_map.c), and never re-reads
 * them; everything else read from shared memory is checked before it
 * addresses memory or bounds a loop:
 *   tail_off and head_off: inside the ring and on a 16-byte boundary
 *     (off_ok), so a record header there lies inside the ring;
 *   a committed record's len: at most capacity (< R), so its bytes wrap
 *     at most once and stay inside the ring; a skip record never sits at
 *     offset 0 (one there would pass a whole lap);
 *   head against tail, whenever a producer reloads head: tail - head <= R
 *     (a producer holding pmu never lets it be more);
 *   a position used to find a record off the fast paths (the spin's
 *     probe, a skip at head, the repairs): rounded down to a record
 *     boundary by rec_at(), so the header it names lies inside the ring
 *     (a head of 3 would otherwise read 8 bytes across the ring's end;
 *     fuzz_queue_header holds this);
 *   hw, and the caches: any value only changes where records go;
 *   the repair walk: at most R/16 records, stopping at a length out of
 *     range;
 *   nput and nget: counts only, never addresses; qsize clamps to R/16,
 *     the most records a ring can hold.
 * A failed check is CONC_ECORRUPT with a detail naming the field, and
 * nothing is written; the lock is released as always.  What the checks
 * cannot see (a rewritten stamp, a record's bytes, a counter moved within
 * range) garbles or drops messages, never more.  The checks are compares
 * of values already loaded: two per put (tail_off) and three per get
 * (head_off, len), with no measurable cost in bench_queue.
 *
 * CONTENTION: several producers (or consumers).  A side's lock is held
 * only across a copy, so one producer writes at a time, and what costs on
 * many cores is handing the lock over: each hand-off moves pmu's line
 * (the word, tail, the caches), nput's line and the ring lines of the
 * last record from one core to another, about 100 ns apiece on a 16-core
 * Xeon, where a producer that keeps them in its cache spends some 35 ns a
 * message.  A waiter that spins on the word takes the lock in the gap
 * between a streaming holder's release and its next acquire (some 20-40
 * ns), and the two then trade it, and those lines, on nearly every
 * message: 64 B 2->2 moved a quarter of 1->1 on 16 cores.  So a waiter
 * spins only while its side makes no progress (side_lock_slow()): while
 * the side's position (tail for producers, head for consumers) stays
 * where it was when the wait began, the holder is inside one copy (a
 * large one takes microseconds; sleeping costs a futex round trip), and
 * the waiter takes the lock when it is let go.  Once the position has
 * moved twice (the holder publishes it a moment before letting go, so
 * the first move may be the hand-over itself), a whole put or get went
 * through while the waiter spun: others are streaming, and the waiter
 * sleeps on the word (the olock's slow path: WAITERS, FUTEX_WAIT, woken
 * by the release).  So a contention episode costs at most about one
 * hand-off, and a streaming holder keeps its lines, paying one
 * FUTEX_WAKE per wake-up of the sleeper (once per wake latency, not per
 * message), as conc_lock and glibc's mutexes do.  Unfair in the short
 * run, like both of those and Python's queues; a sleeper gets in
 * whenever the holder pauses.
 * (The spin is also what a producer waiting for cmu does (see MEMORY);
 * there head stays put while the queue is empty, so it spins as before.)
 *
 * WAITING FOR A LOCK.  A side's lock is held only across a copy, so a
 * waiter normally has it within microseconds, and a dead holder's is
 * taken over after a slice.  A holder that lives but never lets go (one
 * stopped by SIGSTOP, or a hostile process that wrote its own identity
 * into the lock word) would hold every caller for ever; so a wait for a
 * side's lock ends at the caller's deadline, or LOCK_GRACE_S (1 s) after
 * it began if that is later (so a put or get with timeout 0 still waits
 * for a legitimate copy to finish).  Then a put returns CONC_EFULL and a
 * get CONC_EEMPTY, each with a detail that says why, and close returns
 * CONC_ETIMEDOUT.  CONC_FOREVER waits for ever, as asked.
 *
 * WAITING without lost wake-ups.  An elided wake-up ("nobody seems to
 * sleep") is where wake-ups get lost, so each one here rests on an
 * argument.  A getter that finds the queue
 * empty spins first (spin_wait(): the spin reads head and the stamp where
 * the next record will go, a line the producer writes anyway, and yields
 * the CPU every 16 rounds in case the peer waits for our core), then sets
 * bit 0 of data_seq with a CAS (seq_cst), re-tries the get under cmu (the
 * stamp load is seq_cst), and only then futex-waits on the value it set.
 * A producer commits (a release store), unlocks pmu (an exchange), and
 * then, after a full fence (free after the exchange on x86:
 * conc__fence_after_rmw), loads data_seq.  Either that load follows the
 * getter's CAS, so it sees the bit and bumps the sequence (clearing the
 * bit) before FUTEX_WAKE, and the getter's wait returns at once or is
 * woken; or the commit precedes the CAS, and the getter's re-try sees the
 * record.  Putters wait on space_seq the same way against the consumers'
 * store of head, unlock of cmu and fence; joiners on join_seq against
 * task_done's CAS.
 *   The spin is bounded in time, not in rounds, and its budget adapts per
 * handle between 4 and 64 us (doubled when the spin paid off, halved when
 * it did not).  The floor matters.  A budget counted in pause rounds that
 * could shrink to a few hundred nanoseconds collapsed under request/
 * response traffic: once one side slept, the other waited a whole futex
 * wake-up (about 20 us on this VM), its spin failed too, and both sides
 * settled into sleeping on every message (round trips of 1-7 us instead
 * of 0.2; measured).  A peer that is running answers well within 4 us,
 * so a spin that fails at the floor means the peer is really idle, and
 * an idle consumer pays at most 4 us of spinning per message.
 * Wakes go to all sleepers: a single woken sleeper could time out or be
 * killed and take the wake-up with it.  The bit costs the fast path one
 * load of a line that is written only when someone sleeps; no system call
 * happens unless a sleeper set it.  A dead sleeper leaves the bit set
 * only until the next wake clears it.  One window cannot be closed by
 * ordering: a process killed between its commit and its wake.  Sleeps are
 * therefore cut into slices of 100 ms, after each of which the sleeper
 * re-checks, so such a death delays the sleepers by at most one slice.
 *
 * LINGERING, or batching on the consumer's side.  Measured on 2 cores:
 * when a streaming
 * consumer keeps up with its producer, it takes each record the moment
 * it is committed, and the two cores pass the same ring lines back and
 * forth once per message (the producer's commit, a full fence, then
 * waits for the line to come back); 64 B messages moved at 13-16 M/s
 * that way against 30-40 M/s when records were taken in runs.  So a
 * getter whose spin ends because a record appeared after the queue was
 * empty lingers a moment before taking it (linger(): pauses, reading
 * only nput every 16 rounds, until LINGER_BATCH items are queued or the
 * budget ends).  The budget adapts per handle: it doubles while more
 * records come during the linger (a streaming producer) and halves to 0
 * when only the one came (request/response), after which it is tried
 * again only every PROBE_EVERY empty events, so a ping-pong peer pays
 * about one short linger (64 pauses) per 1024 round trips.  No wake-up
 * is elided or delayed by this: the getter is awake and the record is
 * already committed; the attempt under cmu still decides.  The wake-up
 * argument above is unchanged (no wake is elided anywhere but by the
 * sleeper bit).
 *
 * MEMORY.  capacity_bytes is reserved address space (shmem pages appear on
 * first touch).  A plain wrapping ring would touch every page after
 * capacity bytes of traffic even if it never holds more than one message.
 * So the producer keeps a high-water mark hw of ring offsets used (64 KiB
 * at first): a record that would cross hw is placed at offset 0 instead,
 * when that is cheap and safe: if the queue is empty, head and tail both
 * jump to the next lap's start (the producer takes cmu for that, lock
 * order pmu then cmu; consumers never take pmu); if it holds at most
 * hw/4 bytes and the bytes before head have room, a skip record pads the
 * rest of the lap.  Otherwise hw grows (in 64 KiB steps, at most to R).
 * Touched memory thus follows the peak of bytes queued, not the traffic
 * (hw settles near 4x that peak, at least 64 KiB): a 64 MiB default queue
 * moving gigabytes of small messages one by one touches 64 KiB.  The
 * price of a skip record: while messages queued before it are still
 * there, its padding counts as used, so producers have only the bytes
 * before head (at least 3/4 of hw less one record) and a put may wait (or
 * fail with timeout 0) while the queue holds less than capacity_bytes;
 * that needs a burst of that size right after a wrap, and it ends as
 * those messages are taken.  Once head reaches the skip record, getters
 * pass it when they find it, and so does a producer that finds no room
 * (pass_skip_at_head()), so no get need come for its bytes.  Queues of up
 * to 1 MiB (CONC__QUEUE_NO_EARLY_WRAP) never wrap early: they touch their
 * whole ring (at most 1 MiB) under streaming traffic.  Measured: with a
 * 64-256 KiB window the lines a producer overwrites are still in the
 * consumer's cache, every commit waits for them to be taken back, and a
 * 1 MiB queue moved 64 B messages at half the speed of the same queue
 * using its whole ring (medians 17 vs 35 M/s over 16 runs).
 *
 * MEMORY ORDERS, in general (each site says what it pairs with where it
 * is not this rule).  tail, tail_off, the caches and hw are touched only
 * by pmu's holder, head_off only by cmu's: relaxed, the lock orders them
 * (its CAS acquires, its exchange releases).  Record headers: len and
 * item relaxed, ordered by the stamp (release store, acquire or seq_cst
 * load).  Counters read only for sizes (qsize) and hints (the spins):
 * relaxed or acquire, never trusted for more than a guess.
 *
 * CLOSE sets closed under pmu, so every put either completed before it or
 * fails; a getter that saw closed before finding the queue empty returns
 * CONC_ECLOSED, never while a completed put's message is still queued.
 *
 * MANY CORES.  With one lock per side, one producer and one consumer
 * work at a time, so n->n can at best hold the 1->1 figure, and only
 * while hand-offs stay rare (CONTENTION).  Measured on a 16-core Xeon
 * (bench_scaling, 64 B, one ring): 1->1 17-21 M/s; 2->2 0.20-0.24 of it,
 * 8->8 0.10; 1->8 0.14-0.17, 8->1 0.11-0.14.  The wait policy is not the
 * cause: a build whose lock waiters slept at once, one whose waiters
 * always spun, and one whose getters never spun on an empty queue all
 * moved within the same range (2->2 0.14-0.28, 8->8 0.07-0.13).  What
 * costs is the lines a second party on a side shares per message.  Only
 * rings that producers do not share remove that: LANES.
 *
 * LANES (opts.lanes = L > 1).  The mapping holds L rings one after
 * another, each a whole one-ring queue as described above (header, pmu,
 * cmu, counters, stamps with a key of its own, hw, space_seq), lane i's
 * header naming its number and all of them the count.  Lane 0's header
 * also holds the queue-wide words: closed, data_seq, ndone, join_seq and
 * the readers; every ring reaches them through its handle's top pointer
 * (a one-ring queue's top is its own header), so the code above runs
 * unchanged on any lane.  The handle holds one ring handle per lane.
 *   PUT goes to the thread's lane, under that lane's pmu.  A thread
 *   claims its lane at its first put (or full()) through a handle: the
 *   next one in turn, from a counter in lane 0's header (next_lane), so
 *   producers spread evenly whatever their ids (a lane from the id modulo
 *   L left a third of the lanes empty for unrelated ids, and every other
 *   lane for ids that step by 2).  The handle remembers it per thread
 *   (put_slot, by the thread's index in the process, tagged with the
 *   thread's token: see PRODUCER THREADS), so a forked child's threads,
 *   and threads that reuse an exited thread's index, claim lanes of their
 *   own.  So a thread's messages stay in one ring and FIFO per producer
 *   thread holds; more producers than lanes share lanes and their locks,
 *   correct as on one ring; the turn never goes back, so a producer that
 *   replaces another takes the next lane, not the one left.  Past
 *   CONC__QUEUE_PUT_THREADS producer threads alive at once in a process,
 *   later ones put into lane (thread id % L) for their whole lives.
 *   Producers on different lanes share no line but data_seq, which they
 *   only read (it is written when a getter sleeps), and the counter, once
 *   each.  A putter waits for room on its own lane's space_seq, woken by
 *   gets from that lane only.
 *   GET sweeps the lanes (lanes_sweep()) from the lane that last gave this
 *   thread messages (a thread remembers that for up to 4 queues): that lane is
 *   tried first, under a try of its cmu; others only when their counters say
 *   they hold something (nput != nget: read on lines their producers write
 *   anyway), and a lane whose cmu another consumer holds is passed over, so
 *   consumers spread over the lanes with work instead of queueing on one
 *   lock.  A consumer thus stays on a lane while it has messages, and
 *   consumers with lanes of their own touch disjoint lines; but after about
 *   LANE_RUN messages in a row it looks at the others first, or a producer
 *   that keeps its lane from running dry would starve every other lane (the
 *   run starts again after that one sweep, whatever it finds).  If no other
 *   lane gave anything, a held lane with messages is waited for as on one
 *   ring, but for LANE_WAIT_S at most: a holder that keeps it (stopped, or
 *   hostile) must not keep the getter from the other lanes.  A holder that
 *   died would keep its lane for ever if nobody waited for it (the others busy
 *   everyone), so a pass over a held lane that has messages asks whether its
 *   holder lives, at most once in HELD_LOOK_NS per lane of a handle (a clock
 *   read on that path, then /proc), and takes the lane over if not.
 *   WAITING: an empty sweep spins on every lane's nput (any change, or
 *   close, ends the spin), then arms the one data_seq and re-checks with
 *   a check sweep: every lane's cmu tried (none waited for), a lane held
 *   by another consumer looked at through its nput and nget, loaded
 *   seq_cst.  A producer stores its stamp and nput, unlocks, fences and
 *   loads data_seq, whichever lane it is on; so either it sees the
 *   sleeper bit and wakes, or the check sweep sees the record (taken
 *   under the cmu) or the count (held by another consumer, who takes it
 *   or lets go).  A held lane with messages ends the sweep in LANES_HELD:
 *   the getter then sleeps HELD_NAP_S instead of a slice, since no
 *   wake-up comes for messages another consumer leaves behind, and the
 *   quick sweep after the nap waits up to LANE_WAIT_S for that lane (its
 *   holder's liveness looked at when that wait ends).  On a closed queue
 *   every sweep is a check sweep: one that says LANES_HELD re-arms at
 *   once, with no spin (closed would end every spin at once and make a
 *   busy loop of it), and every 8th in a row asks whether the holder
 *   lives.  A producer that died between its commit and its
 *   count, while another consumer held that lane, is seen only by the
 *   next sweep that gets the lane's cmu: its record waits a slice at
 *   most (the death's cost the one-ring design accepts too).
 *   CLOSE takes every lane's pmu at once, in lane order (producers hold
 *   one pmu at a time, then maybe the same lane's cmu), and sets closed
 *   under all of them: every put on any lane finished before it or fails.
 *   A getter that saw closed sweeps as a check sweep, and says
 *   CONC_ECLOSED only when every lane was empty (a held lane with
 *   messages is not).
 *   Bounds: capacity_bytes is each lane's; maxsize must be 0, since a
 *   bound in items needs one count that every producer updates, the very
 *   line lanes remove.  qsize, task_done and join sum the lanes' counts.
 *   Repair after a dead holder, the hostile-peer checks and the readers
 *   are per ring as above; a peer's counts only steer which lanes are
 *   tried.  An opener checks every lane's header (each field equal to
 *   lane 0's, its number its place, a key of its own) and the mapping's
 *   size against lanes x one lane's size before trusting any.
 *   A get with timeout 0 waits LANE_WAIT_S at most for a held lane (a
 *   one-ring queue's, LOCK_GRACE_S), and says CONC_EEMPTY while the only
 *   messages are in lanes others hold.
 *   Cost: a one-ring queue's put and get pay one compare of the lanes
 *   pointer.  A queue of lanes pays, per put, a few thread-local loads,
 *   the fork epoch and the handle's slot for the thread, compared (a
 *   thread's first put takes an index and claims a lane: a CAS or two,
 *   and with every index held a getpid and a tgkill per holder passed);
 *   per get from a consumer's own lane, a try of its cmu and a few
 *   thread-local reads (one in LANE_RUN gets also tries the others
 *   first); per empty sweep one or two loads per lane.  1->n is not
 *   helped: consumers of one producer's lane share its cmu as on one
 *   ring.
 *
 * Making, opening and freeing handles (the mapping, names, who unlinks)
 * is in queue_map.c.
 *
 * FORK.  The handle is plain process memory pointing at a MAP_SHARED
 * mapping, so a forked child uses the same queue; nothing in it is per
 * process but its spin and linger budgets (and, with lanes, when it
 * last looked at a held lane's holder).  A queue lock held by another
 * parent thread at fork time names that thread, which still runs and releases
 * it in the parent; the child sees that through the shared mapping.  The
 * child's own identity for the locks is reset by the sync module's
 * pthread_atfork handler (a child made without glibc's fork() would not
 * get a fresh identity: libconc's process module uses fork()).
 *
 * ON A SERVER (.url).  A queue made with .url, or opened by a URL, has
 * q->net set and nothing else: every public function first tests that
 * pointer (a load of a field the shared-memory path reads next to
 * anyway) and hands the call to net_queue.c, which checks the arguments
 * once for every backend and calls the backend's table (net_int.h).
 */
#include "queue_int.h"
#include "net_int.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

/* Functions on the path of a put or get that goes through at once are
 * forced inline into it (measured: GCC otherwise keeps some out of line,
 * and their prologues cost more than their bodies). */
#define FAST static inline __attribute__((always_inline))
#define SLICE_S 0.1
/* Batching linger of a consumer (see LINGERING): in pauses, and items. */
#define LINGER_MIN 64
#define LINGER_MAX 2048
#define LINGER_BATCH 64
#define PROBE_EVERY 1024

/* ---- small helpers ------------------------------------------------------ */

static inline uint64_t rec_size(uint64_t len)
{
    return CONC__QUEUE_REC_HDR + conc__queue_round16(len);
}

/* The record header at position pos.  Off the fast paths only (it
 * divides), where pos may come straight from shared memory: rounded
 * down to a record boundary, so even a scribbled position names 16
 * aligned bytes inside the ring (every real position is on one). */
static inline conc__qrec *rec_at(const conc_queue *q, uint64_t pos)
{
    return (conc__qrec *)(void *)(q->ring + (pos % q->R & ~(uint64_t)15));
}

static inline uint64_t stamp_of(const conc_queue *q, uint64_t pos)
{
    return pos ^ q->key;
}

/* The full item number whose low 32 bits are low, nearest to near. */
static inline uint64_t item_near(uint64_t near, uint32_t low)
{
    return near + (uint64_t)(int64_t)(int32_t)(low - (uint32_t)near);
}

static bool bad_timeout(double timeout)
{
    return isnan(timeout) || (timeout < 0 && timeout != CONC_FOREVER);
}

/* off + 1 record header, as a ring offset. */
static inline uint64_t data_off(const conc_queue *q, uint64_t off)
{
    CONC__ASSERT(off < q->R); /* a checked offset (off_ok) or one we made */
    off += CONC__QUEUE_REC_HDR;
    return off >= q->R ? off - q->R : off;
}

FAST void ring_write(conc_queue *q, uint64_t off, const void *src, size_t n)
{
    /* n <= capacity < R, so the bytes wrap at most once. */
    CONC__ASSERT(off < q->R && n < q->R);
    size_t first = n;
    if (off + n > q->R) {
        first = (size_t)(q->R - off);
    }
    if (first > 0) {
        memcpy(q->ring + off, src, first);
    }
    if (n > first) {
        memcpy(q->ring, (const unsigned char *)src + first, n - first);
    }
}

FAST void ring_read(const conc_queue *q, uint64_t off, void *dst, size_t n)
{
    CONC__ASSERT(off < q->R && n < q->R); /* as in ring_write() */
    size_t first = n;
    if (off + n > q->R) {
        first = (size_t)(q->R - off);
    }
    if (first > 0) {
        memcpy(dst, q->ring + off, first);
    }
    if (n > first) {
        memcpy((unsigned char *)dst + first, q->ring, n - first);
    }
}

/* Clears the sleeper bit of a futex word and wakes every sleeper, if the
 * bit is set.  The CAS both bumps the sequence (so a sleeper that read the
 * old value and has not slept yet returns from FUTEX_WAIT at once) and
 * clears the bit; pairs with the CAS that set it in arm(). */
static void wake_all(_Atomic uint32_t *word)
{
    uint32_t v = atomic_load_explicit(word, memory_order_seq_cst);
    while (v & 1u) {
        /* v is odd: v + 1 clears bit 0 and carries into the sequence. */
        if (atomic_compare_exchange_weak_explicit(word, &v, v + 1u,
                                                  memory_order_seq_cst,
                                                  memory_order_seq_cst)) {
            conc__os_futex_wake(word, INT32_MAX, true);
            return;
        }
    }
}

/* The Dekker half of a waker, after a side's unlock: the unlock's
 * exchange is an atomic read-modify-write, so with conc__fence_after_rmw()
 * the store made under the lock (a commit, a new head) is ordered before
 * this load of the sleepers' word; and an arm() that came first is seen
 * (see WAITING in the design comment).  One locked instruction fewer per
 * put and per get than a seq_cst store under the lock. */
static bool sleepers(_Atomic uint32_t *word)
{
    conc__fence_after_rmw();
    return atomic_load_explicit(word, memory_order_seq_cst) & 1u;
}

/* Sets the sleeper bit and returns the value to futex-wait on.  seq_cst:
 * the Dekker half that pairs with the waker's seq_cst store-then-load (see
 * WAITING in the design comment). */
static uint32_t arm(_Atomic uint32_t *word)
{
    uint32_t v = atomic_load_explicit(word, memory_order_seq_cst);
    while (!(v & 1u)) {
        if (atomic_compare_exchange_weak_explicit(word, &v, v | 1u,
                                                  memory_order_seq_cst,
                                                  memory_order_seq_cst)) {
            return v | 1u;
        }
    }
    return v;
}

/* Sleeps on word (expected w) for at most slice_s seconds, and never
 * past the deadline.  Returns CONC_ETIMEDOUT only when dl itself has
 * passed; 1 when the slice ran out with no wake-up (a blocked put then
 * looks at its readers); 0 when woken. */
static int sleep_for(_Atomic uint32_t *word, uint32_t w,
                     const conc__deadline *dl, double slice_s)
{
    conc__deadline slice;
    double left = conc__deadline_left(dl);
    if (conc__deadline_init(&slice, left < slice_s ? left : slice_s) != 0) {
        /* detail: outcome() */
        return CONC_ETIMEDOUT;
    }
    if (left <= 0) {
        /* detail: outcome() */
        return CONC_ETIMEDOUT;
    }
    /* Pairs with wake_all(): w has bit 0 set, any wake changes the word. */
    int r = conc__os_futex_wait(word, w, &slice, true);
    if (conc__deadline_passed(dl)) {
        /* detail: outcome() */
        return CONC_ETIMEDOUT;
    }
    return r == CONC_ETIMEDOUT ? 1 : 0; /* 1: the slice ran out, unwoken */
}

/* One slice (SLICE_S) of a sleep, as sleep_for(). */
static int sleep_slice(_Atomic uint32_t *word, uint32_t w,
                       const conc__deadline *dl)
{
    return sleep_for(word, w, dl, SLICE_S);
}

/* One round of a spin.  Every 16th round (about 0.4 us) yields the CPU:
 * with more runnable processes than cores, the peer we wait for may be
 * waiting for our core, and a pure spin would burn the time slice it
 * needs.  Measured with one core taken by a busy
 * loop: yielding every 16th instead of every 64th round cut a round trip
 * between two processes from 6-11 us to 4-6 us and raised 64 B streaming
 * from 27-36 to 45 M messages/s; with both cores free no difference
 * showed (a running peer answers within a few rounds). */
static void spin_pause(int i)
{
    if ((i & 15) == 15) {
        sched_yield();
    } else {
        conc__cpu_relax();
    }
}

/* Spins until hint(q, ctx) says go or the budget (nanoseconds) has
 * passed; true when it said go.  The clock is read every 16 rounds (a
 * pause is about 25 ns, a clock read as much).  Halves the budget when
 * the spin failed, doubles it when it paid off, always within
 * [CONC__QUEUE_SPIN_FLOOR_NS, CONC__QUEUE_SPIN_CEIL_NS] (see WAITING for
 * why there is a floor).
 * Inline, so that the hint is too: it decides how soon a record is seen. */
FAST bool spin_wait(conc_queue *q, _Atomic int *budget,
                    bool (*hint)(conc_queue *, const void *), const void *ctx,
                    const conc__deadline *dl)
{
    /* Relaxed: a heuristic private to this process; a lost update only
     * changes how long the next spin is. */
    int b = atomic_load_explicit(budget, memory_order_relaxed);
    CONC__ASSERT(b >= CONC__QUEUE_SPIN_FLOOR_NS &&
                 b <= CONC__QUEUE_SPIN_CEIL_NS);
    uint64_t end = conc__now_ns() + (uint64_t)b;
    if (!dl->forever) {
        /* Never spin past the caller's deadline. */
        uint64_t at = (uint64_t)dl->at.tv_sec * 1000000000u +
                      (uint64_t)dl->at.tv_nsec;
        end = at < end ? at : end;
    }
    bool ok = false;
    for (int i = 0; !ok; i++) {
        spin_pause(i);
        ok = hint(q, ctx);
        if ((i & 15) == 15 && !ok && conc__now_ns() >= end) {
            break;
        }
    }
    if (ok) {
        b = b * 2 > CONC__QUEUE_SPIN_CEIL_NS ? CONC__QUEUE_SPIN_CEIL_NS
                                             : b * 2;
    } else {
        b = b / 2 < CONC__QUEUE_SPIN_FLOOR_NS ? CONC__QUEUE_SPIN_FLOOR_NS
                                              : b / 2;
    }
    atomic_store_explicit(budget, b, memory_order_relaxed);
    return ok;
}

/* The calling thread's id: the low bits of its lock identity, which the
 * sync module caches per thread. */
static inline unsigned self_tid(void)
{
    return (unsigned)(conc__sync_self_id() & CONC__OL_TID_MASK);
}

/* PRODUCER THREADS of this process, for the lanes they claim (see
 * LANES).  A thread that first puts into a queue of lanes takes an index
 * under CONC__QUEUE_PUT_THREADS (its slot in every handle's put_slot) and
 * a token (put_tokens: never the same twice in a process).  A slot names
 * a lane only for the token that claimed it, so a thread that takes the
 * index a gone thread held claims a lane of its own instead of inheriting
 * one.  put_owner[i] says who holds index i: 0 (nobody), or OWNER_WORD:
 * a generation, bumped by every take, over the holder's thread id.  An
 * index is never given back by its holder (a put from a thread's last
 * moments, a destructor's, must still find its lane); a thread that finds
 * none free takes over one whose holder is gone: whose id names no thread
 * of this process now (tgkill).  In a forked child that is every index,
 * each word naming a thread of the parent; the forking thread takes a new
 * index and token there (put_epoch).  An id a new thread of this process
 * has taken since only keeps the index taken, and a live holder is never
 * judged gone.  The take is a CAS from the word seen, and the generation
 * makes a word never come back, so a holder that took the index over
 * meanwhile (with a reused id, even) is never taken from.  Takeovers go
 * round from put_cursor, the index after the last one taken over: the
 * longest-held are the likeliest gone.  With none to be had, a thread
 * puts into lane (thread id % lanes) until its process forks (put_thread
 * PUT_BY_ID): its lane must not change while it lives. */
#define PUT_BY_ID UINT_MAX
#define TOKEN_MASK (UINT64_MAX >> 8) /* a slot: token << 8 | lane + 1 */
#define OWNER_WORD(gen, tid) ((uint64_t)(uint32_t)(gen) << 32 | (tid))
static _Atomic uint64_t put_owner[CONC__QUEUE_PUT_THREADS];
static _Atomic unsigned put_cursor;
static _Atomic uint64_t put_tokens;
/* Index + 1 (0: none yet, PUT_BY_ID: none to be had), token, and the
 * fork epoch both were taken in. */
static _Thread_local unsigned put_thread
    __attribute__((tls_model("initial-exec")));
static _Thread_local uint64_t put_token
    __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned long put_epoch
    __attribute__((tls_model("initial-exec")));

/* Whether the holder an owner word names is gone from this process. */
static bool put_owner_gone(uint64_t w)
{
    return !conc__os_own_thread_alive((pid_t)(uint32_t)w);
}

/* An index + 1 for this thread, or PUT_BY_ID: a free one, else one whose
 * holder is gone (a CAS from the word seen: of two takers, one wins). */
static unsigned put_index_take(void)
{
    uint64_t me = conc__sync_self_id() & CONC__OL_TID_MASK;
    for (unsigned i = 0; i < CONC__QUEUE_PUT_THREADS; i++) {
        uint64_t w = 0;
        if (atomic_load(&put_owner[i]) == 0 &&
            atomic_compare_exchange_strong(&put_owner[i], &w,
                                           OWNER_WORD(1, me))) {
            return i + 1;
        }
    }
    unsigned from = atomic_load(&put_cursor);
    for (unsigned k = 0; k < CONC__QUEUE_PUT_THREADS; k++) {
        unsigned i = (from + k) % CONC__QUEUE_PUT_THREADS;
        uint64_t w = atomic_load(&put_owner[i]);
        if (w != 0 && put_owner_gone(w) &&
            atomic_compare_exchange_strong(&put_owner[i], &w,
                                           OWNER_WORD((w >> 32) + 1, me))) {
            atomic_store(&put_cursor, i + 1);
            return i + 1;
        }
    }
    return PUT_BY_ID;
}

/* This thread's first put into a queue of lanes, or its first since its
 * process forked: an index (a new one after a fork: the old one's word
 * names the parent) and a token.  Returns put_thread. */
static __attribute__((noinline)) unsigned put_thread_begin(void)
{
    put_thread = put_index_take();
    put_token = (atomic_fetch_add_explicit(&put_tokens, 1,
                                           memory_order_relaxed) +
                 1) &
                TOKEN_MASK;
    put_epoch = conc__sync_fork_epoch;
    return put_thread;
}

/* Claims the lane of producer thread index i of a queue of lanes: the
 * queue's next, from the counter in lane 0's header (a peer may have
 * written any value there: taken modulo lanes, it is a lane), remembered
 * in the handle's slot i with this thread's token. */
static __attribute__((noinline)) unsigned lane_claim(conc_queue *q,
                                                     unsigned i)
{
    unsigned lane = atomic_fetch_add_explicit(&q->top->next_lane, 1,
                                              memory_order_relaxed) %
                    q->nlanes;
    /* Relaxed: only the holder of index i stores to its slot, and a
     * value a gone holder left names another token, so this thread only
     * ever uses a lane it stored itself. */
    atomic_store_explicit(&q->put_slot[i], put_token << 8 | (lane + 1),
                          memory_order_relaxed);
    return lane;
}

/* The lane of a queue of lanes a producer thread puts into: always the
 * same one for a given thread and handle, so its messages stay in order,
 * and each new producer thread the queue's next (see LANES and PRODUCER
 * THREADS). */
static inline conc_queue *put_lane(conc_queue *q)
{
    unsigned i = put_thread;
    if (__builtin_expect(i == 0 || put_epoch != conc__sync_fork_epoch, 0)) {
        i = put_thread_begin();
    }
    if (__builtin_expect(i == PUT_BY_ID, 0)) {
        return &q->lane[self_tid() % q->nlanes];
    }
    /* Relaxed: written only by the thread that holds index i. */
    uint64_t v = atomic_load_explicit(&q->put_slot[i - 1],
                                      memory_order_relaxed);
    unsigned lane = (unsigned)(v & 0xffu);
    if (__builtin_expect(v >> 8 != put_token || lane == 0, 0)) {
        return &q->lane[lane_claim(q, i - 1)];
    }
    return &q->lane[lane - 1];
}

/* ---- checks of what a peer may have rewritten --------------------------- */

/* A value read from the shared header or ring failed its check (see
 * HOSTILE PEERS in the design comment): CONC_ECORRUPT, with what and
 * where.  Out of line and cold: the checks themselves are compares of
 * values already loaded. */
static __attribute__((noinline, cold)) int corrupt(const char *fn,
                                                   const char *what,
                                                   uint64_t v)
{
    return conc__fail(CONC_ECORRUPT, "%s: the queue's %s (%llu) fails its "
                      "check: its shared memory was written by something "
                      "other than libconc's queue", fn, what,
                      (unsigned long long)v);
}

/* A ring offset read from the header (tail_off, head_off): in the ring,
 * and on a record boundary (16-aligned), so a record header there lies
 * wholly inside the ring (R is a multiple of 16). */
static inline bool off_ok(const conc_queue *q, uint64_t off)
{
    return off < q->R && (off & 15u) == 0;
}

/* ---- repair after a dead lock holder ------------------------------------ */

/* The producer that held pmu died.  Advances tail past any record it
 * committed without advancing tail (one per record of a batch it wrote,
 * see BATCHES) and makes nput agree with the last committed item.  The
 * walk is bounded: a slot matches at most one position, positions only
 * grow, and a record whose length is out of range ends it. */
static void repair_producer(conc_queue *q)
{
    conc__qshm *sh = q->sh;
    uint64_t t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&sh->nput, memory_order_relaxed);
    for (uint64_t i = 0; i <= q->R / CONC__QUEUE_REC_HDR; i++) {
        conc__qrec *r = rec_at(q, t);
        /* Acquire: pairs with the commit's release store in put. */
        if (atomic_load_explicit(&r->stamp, memory_order_acquire) !=
            stamp_of(q, t)) {
            break;
        }
        uint32_t len = atomic_load_explicit(&r->len, memory_order_relaxed);
        uint32_t item = atomic_load_explicit(&r->item, memory_order_relaxed);
        if (len == CONC__QUEUE_SKIP) {
            n = item_near(n, item);
            t += q->R - t % q->R;
        } else if (len <= q->capacity) {
            n = item_near(n, item) + 1;
            t += rec_size(len);
        } else {
            break; /* not a record any producer wrote */
        }
    }
    /* Head past tail: the dead producer was rewinding an empty queue
     * (wrap_early) and stored head but not tail. */
    uint64_t h = atomic_load_explicit(&sh->head, memory_order_acquire);
    if ((int64_t)(h - t) > 0) {
        t = h;
    }
    CONC__ASSERT((int64_t)(t - h) >= 0); /* head <= tail, as published */
    atomic_store_explicit(&sh->nput, n, memory_order_release);
    atomic_store_explicit(&sh->tail, t, memory_order_relaxed);
    atomic_store_explicit(&sh->tail_off, t % q->R, memory_order_relaxed);
    uint64_t hw = atomic_load_explicit(&sh->hw, memory_order_relaxed);
    if (hw > q->R || hw == 0) {
        /* A named queue's file holds pages up to one step at least
         * (queue_map.c): the next put raises hw, allocating, from there. */
        uint64_t low = q->R < CONC__QUEUE_HW_STEP ? q->R
                                                   : CONC__QUEUE_HW_STEP;
        atomic_store_explicit(&sh->hw, q->file != NULL ? low : q->R,
                              memory_order_relaxed);
    }
}

/* The consumer that held cmu died.  If the record at head is still there
 * it was not taken: nget must count the items before it, which its item
 * field names (a skip record carries the next item number). */
static void repair_consumer(conc_queue *q)
{
    conc__qshm *sh = q->sh;
    uint64_t h = atomic_load_explicit(&sh->head, memory_order_relaxed);
    atomic_store_explicit(&sh->head_off, h % q->R, memory_order_relaxed);
    conc__qrec *r = rec_at(q, h);
    if (atomic_load_explicit(&r->stamp, memory_order_acquire) ==
        stamp_of(q, h)) {
        uint32_t item = atomic_load_explicit(&r->item, memory_order_relaxed);
        uint64_t g = atomic_load_explicit(&sh->nget, memory_order_relaxed);
        atomic_store_explicit(&sh->nget, item_near(g, item),
                              memory_order_release);
    }
}

/* ---- the side locks ------------------------------------------------------- */

/* How long any call waits for a side's lock at least, its own timeout
 * aside (see WAITING FOR A LOCK). */
#define LOCK_GRACE_S 1.0

/* The deadline of a wait for a side's lock: the caller's, but never
 * sooner than LOCK_GRACE_S from now. */
static void lock_deadline(conc__deadline *ld, const conc__deadline *dl)
{
    if (dl->forever) {
        *ld = *dl;
        return;
    }
    conc__deadline_init(ld, LOCK_GRACE_S);
    if (!dl->once && (dl->at.tv_sec > ld->at.tv_sec ||
                      (dl->at.tv_sec == ld->at.tv_sec &&
                       dl->at.tv_nsec > ld->at.tv_nsec))) {
        *ld = *dl;
    }
}

/* How long a getter on a queue of lanes waits for a lane another
 * consumer holds, when no other lane had a message (see LANES): a holder
 * copying one message lets go within microseconds; one that keeps it
 * longer (stopped, or hostile) must not keep this getter from messages
 * that arrive in other lanes meanwhile. */
#define LANE_WAIT_S 0.01

/* The deadline of such a brief wait: LANE_WAIT_S from now, or the
 * caller's if that is sooner (a call with timeout 0 too waits briefly,
 * as it waits for a one-ring queue's lock). */
static void brief_deadline(conc__deadline *ld, const conc__deadline *dl)
{
    conc__deadline_init(ld, LANE_WAIT_S);
    if (!dl->forever && !dl->once &&
        (dl->at.tv_sec < ld->at.tv_sec ||
         (dl->at.tv_sec == ld->at.tv_sec &&
          dl->at.tv_nsec < ld->at.tv_nsec))) {
        *ld = *dl;
    }
}

/* The contended path of side_lock(): a short spin while the side makes no
 * progress, then the sync module's slow acquire, which sleeps in slices and
 * takes the lock over from a dead holder (then this side is repaired).  0, or
 * CONC_ETIMEDOUT when a live holder kept it past lock_deadline(dl) (brief:
 * brief_deadline(dl)).  See CONTENTION in the design comment: the spin ends
 * once the side's position (tail, or head) has moved twice, since then others
 * are getting through and a spinner would only take the lock in the gap
 * between a streaming holder's release and its next acquire. */
static __attribute__((noinline)) int side_lock_slow(conc_queue *q,
                                                    bool producer,
                                                    const conc__deadline *dl,
                                                    bool brief)
{
    conc__olock *l = producer ? &q->sh->pmu : &q->sh->cmu;
    _Atomic uint64_t *pos = producer ? &q->sh->tail : &q->sh->head;
    uint64_t me = conc__sync_self_id();
    /* Relaxed: positions and the word are peeked at as hints; the CAS
     * orders, and the slow acquire decides. */
    uint64_t p0 = atomic_load_explicit(pos, memory_order_relaxed);
    int moves = 0;
    for (int i = 0; i < 1000 && moves < 2; i++) {
        spin_pause(i);
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            conc__olock_try(l, me)) {
            return 0;
        }
        /* The first move may be the holder's own publication, a moment
         * before it lets go; a second means a whole put (or get) went
         * through after it, while we spun: the lock is streaming. */
        uint64_t p = atomic_load_explicit(pos, memory_order_relaxed);
        if (p != p0) {
            p0 = p;
            moves++;
        }
    }
    conc__deadline ld;
    if (brief) {
        brief_deadline(&ld, dl);
    } else {
        lock_deadline(&ld, dl);
    }
    int err = conc__olock_acquire_slow(l, me, &ld);
    if (err == CONC_EOWNERDEAD) {
        if (producer) {
            repair_producer(q);
        } else {
            repair_consumer(q);
        }
        err = 0;
    }
    return err;
}

/* Locks pmu (producer) or cmu, repairing after a dead holder.  The locks
 * are the sync module's owner-stamped words (src/sync_int.h, olock.c): one
 * CAS to take, one exchange to release, the holder's tid and start time
 * in the word, and a waiter that sleeps past a slice checks whether the
 * holder still lives and takes the lock over (CONC_EOWNERDEAD) if not.
 * The uncontended CAS is inline: it is on every put's and get's path.
 * 0 or CONC_ETIMEDOUT (see WAITING FOR A LOCK). */
static inline int side_lock(conc_queue *q, bool producer,
                            const conc__deadline *dl)
{
    if (conc__olock_try(producer ? &q->sh->pmu : &q->sh->cmu,
                        conc__sync_self_id())) {
        return 0;
    }
    return side_lock_slow(q, producer, dl, false);
}

/* conc__olock_release() inlined, for the same reason.  Release pairs
 * with the next holder's acquire CAS. */
static inline void side_unlock(conc_queue *q, bool producer)
{
    conc__olock *l = producer ? &q->sh->pmu : &q->sh->cmu;
    uint64_t old = atomic_exchange_explicit(&l->state, 0,
                                            memory_order_release);
    if (old & CONC__OL_WAITERS) {
        /* Pairs with the FUTEX_WAIT in conc__olock_acquire_slow(). */
        conc__os_futex_wake(conc__olock_word(l), 1, true);
    }
}

/* ---- put ------------------------------------------------------------------ */

/* What a producer holding pmu works on: tail, its ring offset and nput,
 * read once when it takes the lock and stored once when it is done
 * (put_publish), however many records it wrote in between. */
typedef struct pstate {
    uint64_t t, off, n;
} pstate;

/* Under pmu, when a put finds no room: if the record at head h is a
 * committed skip record (see MEMORY), passes it as a get would, under cmu
 * (lock order: pmu, then cmu), and wakes putters asleep for space.  The
 * bytes it pads are free at once, even while no getter comes: a queue
 * holding a few bytes after a wrap never refuses a put that fits.
 * Returns head as it is now. */
static __attribute__((noinline)) uint64_t
pass_skip_at_head(conc_queue *q, uint64_t h, const conc__deadline *dl)
{
    conc__qshm *sh = q->sh;
    const conc__qrec *r = rec_at(q, h);
    /* Acquire: pairs with commit(); len is read only after the stamp. */
    if (atomic_load_explicit(&r->stamp, memory_order_acquire) !=
            stamp_of(q, h) ||
        atomic_load_explicit(&r->len, memory_order_relaxed) !=
            CONC__QUEUE_SKIP ||
        side_lock(q, false, dl) != 0) {
        return h;
    }
    /* Under cmu no getter moves head, and while head is h the record at
     * h stays as it was: pass it exactly as get_one() does. */
    bool passed = atomic_load_explicit(&sh->head, memory_order_relaxed) == h;
    /* A head a peer set near 2^64 would wrap: left for get_one() to
     * report. */
    passed = passed && h <= UINT64_MAX - q->R;
    if (passed) {
        h += q->R - h % q->R;
        CONC__ASSERT(h % q->R == 0); /* the next lap's start */
        atomic_store_explicit(&sh->head_off, 0, memory_order_relaxed);
        atomic_store_explicit(&sh->head, h, memory_order_release);
    } else {
        h = atomic_load_explicit(&sh->head, memory_order_relaxed);
    }
    side_unlock(q, false);
    if (passed && sleepers(&q->sh->space_seq)) {
        wake_all(&q->sh->space_seq);
    }
    return h;
}

/* Whether s more bytes and one more item fit, by the producer's cached
 * view of the consumers (refreshed when it says no).  Under pmu.  0,
 * CONC_EFULL, or CONC_ECORRUPT when head and tail are further apart than
 * the ring is long (a producer holding pmu has never let that happen:
 * see HOSTILE PEERS). */
FAST int room(conc_queue *q, uint64_t t, uint64_t n, uint64_t s,
              const conc__deadline *dl, const char *fn)
{
    conc__qshm *sh = q->sh;
    if (q->maxsize != 0) {
        uint64_t g = atomic_load_explicit(&sh->nget_cache,
                                          memory_order_relaxed);
        if (n - g >= q->maxsize) {
            /* The Dekker half of a putter's re-check after arm(space_seq)
             * is this seq_cst load of head, paired with the consumer's
             * store of head, unlock, fence and load of space_seq.  The consumer
             * stores nget before head, so once we read its head (acquire,
             * synchronising with that store) the nget load below sees the
             * count that went with it; if we read an older head, the
             * consumer's later load of space_seq sees our bit. */
            uint64_t h = atomic_load_explicit(&sh->head, memory_order_seq_cst);
            atomic_store_explicit(&sh->head_cache, h, memory_order_relaxed);
            g = atomic_load_explicit(&sh->nget, memory_order_acquire);
            atomic_store_explicit(&sh->nget_cache, g, memory_order_relaxed);
            if ((int64_t)(n - g) >= (int64_t)q->maxsize) {
                /* detail: outcome() */
                return CONC_EFULL;
            }
        }
    }
    uint64_t h = atomic_load_explicit(&sh->head_cache, memory_order_relaxed);
    if (t + s - h > q->R) {
        /* seq_cst (acquire at least): pairs with the consumer's store of
         * head, so its reads of the old bytes are done before we write. */
        h = atomic_load_explicit(&sh->head, memory_order_seq_cst);
        if (t - h > q->R) {
            return corrupt(fn, "head", h);
        }
        if (t + s - h > q->R) {
            h = pass_skip_at_head(q, h, dl);
        }
        atomic_store_explicit(&sh->head_cache, h, memory_order_relaxed);
        if (t + s - h > q->R) {
            /* detail: outcome() */
            return CONC_EFULL;
        }
    }
    return 0;
}

/* Commits the header of the record at t: len and item first, the stamp
 * last.  Release: pairs with the getters' acquire (or seq_cst) loads of
 * the stamp, so the bytes and the header are visible with it.  It is also
 * the store half of the Dekker pair with a getter's arm(data_seq); the
 * fence and the load half come after the unlock of pmu, in put_once(). */
FAST void commit(conc_queue *q, uint64_t t, uint64_t off, uint32_t len,
                 uint32_t item)
{
    /* A record starts on a 16-byte boundary inside the ring (its offset
     * passed off_ok() or was made by adding record sizes to one that
     * did), and is a message of at most capacity bytes or a skip. */
    CONC__ASSERT(off < q->R && (off & 15u) == 0);
    CONC__ASSERT(len <= q->capacity || len == CONC__QUEUE_SKIP);
    conc__qrec *r = (conc__qrec *)(void *)(q->ring + off);
    atomic_store_explicit(&r->len, len, memory_order_relaxed);
    atomic_store_explicit(&r->item, item, memory_order_relaxed);
    atomic_store_explicit(&r->stamp, stamp_of(q, t), memory_order_release);
}

/* Stores what the producer did under pmu (see pstate).  Release: a
 * task_done() that read this count sees the records. */
FAST void put_publish(conc_queue *q, const pstate *p)
{
    conc__qshm *sh = q->sh;
    CONC__ASSERT(p->off < q->R && (p->off & 15u) == 0);
    atomic_store_explicit(&sh->nput, p->n, memory_order_release);
    atomic_store_explicit(&sh->tail, p->t, memory_order_relaxed);
    atomic_store_explicit(&sh->tail_off, p->off, memory_order_relaxed);
}

/* Raises hw (under pmu) from hw to cover ring offsets up to end, in
 * whole steps, at most to R.  A named queue's file gets the pages first,
 * up to the new hw and the record header after it (a getter reads the
 * stamp at offset hw when the tail stops there): no room in /dev/shm is
 * this put's CONC_ENOMEM (detail set), never a SIGBUS when a page is
 * touched.  queue_map.c allocates the first hw so when it makes the
 * queue. */
static int raise_hw(conc_queue *q, uint64_t hw, uint64_t end, const char *fn)
{
    uint64_t nhw = (end + CONC__QUEUE_HW_STEP - 1) / CONC__QUEUE_HW_STEP *
                   CONC__QUEUE_HW_STEP;
    CONC__ASSERT(nhw >= end); /* hw grows past the record */
    nhw = nhw < q->R ? nhw : q->R;
    if (q->file != NULL && nhw > hw) {
        uint64_t base = (uint64_t)(q->ring -
                                   (unsigned char *)conc_shm_ptr(q->file));
        uint64_t to = nhw + CONC__QUEUE_REC_HDR < q->R
                          ? nhw + CONC__QUEUE_REC_HDR
                          : q->R;
        int err = conc__shm_grow(q->file, fn, base + hw, base + to);
        if (err != 0) {
            return err;
        }
    }
    atomic_store_explicit(&q->sh->hw, nhw, memory_order_relaxed);
    return 0;
}

/* The record at p->t (ring offset p->off) would cross the high-water
 * mark hw (see MEMORY in the design comment).  Under pmu, with p
 * published.  If the queue is empty, rewinds: head and tail jump to the
 * next lap's start together, under cmu (lock order: pmu, then cmu;
 * consumers never take pmu).  If it holds only a little (at most hw/4)
 * and the bytes before head leave room, pads the rest of the lap with a
 * skip record.  Otherwise raises hw.  0 or CONC_ETIMEDOUT (cmu). */
static int wrap_early(conc_queue *q, pstate *p, uint64_t s, uint64_t hw,
                      const conc__deadline *dl, const char *fn)
{
    conc__qshm *sh = q->sh;
    uint64_t t = p->t, off = p->off;
    /* put_one() calls only past offset 0: a skip record is never written
     * at 0 (get_one() refuses one there as a peer's scribble). */
    CONC__ASSERT(off != 0 && off < q->R);
    uint64_t skip = q->R - off;
    /* seq_cst (acquire at least): pairs with the consumers' store of head,
     * as in room(). */
    uint64_t h = atomic_load_explicit(&sh->head, memory_order_seq_cst);
    atomic_store_explicit(&sh->head_cache, h, memory_order_relaxed);
    if (h == t) {
        int err = side_lock(q, false, dl);
        if (err != 0) {
            return err;
        }
        if (atomic_load_explicit(&sh->head, memory_order_relaxed) == t) {
            /* Head first: a producer that dies between the two stores
             * leaves head > tail, which repair_producer() mends.  Release
             * at least, as every store of head (see get_publish); no
             * putter sleeps for space while the queue is empty, so no
             * wake. */
            atomic_store_explicit(&sh->head_off, 0, memory_order_relaxed);
            atomic_store_explicit(&sh->head, t + skip, memory_order_seq_cst);
            atomic_store_explicit(&sh->head_cache, t + skip,
                                  memory_order_relaxed);
            atomic_store_explicit(&sh->tail, t + skip, memory_order_relaxed);
            atomic_store_explicit(&sh->tail_off, 0, memory_order_relaxed);
            side_unlock(q, false);
            p->t = t + skip;
            p->off = 0;
            return 0;
        }
        side_unlock(q, false);
        h = atomic_load_explicit(&sh->head, memory_order_seq_cst);
    }
    if (t - h <= hw / 4 && t + skip + s - h <= q->R) {
        commit(q, t, off, CONC__QUEUE_SKIP, (uint32_t)p->n);
        p->t = t + skip;
        p->off = 0;
        atomic_store_explicit(&sh->tail, p->t, memory_order_relaxed);
        atomic_store_explicit(&sh->tail_off, 0, memory_order_relaxed);
        return 0;
    }
    return raise_hw(q, hw, off + s, fn);
}

/* Under pmu, before the first record: reads the producers' state once.
 * 0, CONC_ECLOSED, CONC_ECORRUPT (a tail offset off the ring or off a
 * record boundary). */
FAST int put_begin(conc_queue *q, pstate *p, const char *fn)
{
    conc__qshm *sh = q->sh;
    /* Relaxed would do under pmu (close writes it under pmu too). */
    if (atomic_load_explicit(&q->top->closed, memory_order_acquire)) {
        /* detail: outcome() */
        return CONC_ECLOSED;
    }
    p->t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    p->n = atomic_load_explicit(&sh->nput, memory_order_relaxed);
    p->off = atomic_load_explicit(&sh->tail_off, memory_order_relaxed);
    if (__builtin_expect(!off_ok(q, p->off), 0)) {
        return corrupt(fn, "tail offset", p->off);
    }
    return 0;
}

/* Writes and commits one record at p, under pmu, without publishing p.
 * 0, CONC_EFULL (no room now), CONC_ECORRUPT, CONC_ETIMEDOUT (cmu). */
FAST int put_one(conc_queue *q, pstate *p, const void *data, size_t len,
                 const conc__deadline *dl, const char *fn)
{
    uint64_t s = rec_size(len);
    int err = room(q, p->t, p->n, s, dl, fn);
    if (err != 0) {
        return err;
    }
    /* Relaxed: only pmu's holder writes hw; a peer's value is bounded
     * by the compares below (any value only moves where records go). */
    uint64_t hw = atomic_load_explicit(&q->sh->hw, memory_order_relaxed);
    if (hw < q->R && p->off + s > hw && (p->off != 0 || q->file != NULL)) {
        /* A copy goes out of line, so that p itself can stay in
         * registers on the fast path (measured: 40% of 64 B streaming). */
        pstate w = *p;
        if (w.off != 0) {
            put_publish(q, &w);
            err = wrap_early(q, &w, s, hw, dl, fn);
        }
        /* A named queue's record at offset 0 (the first one, or one
         * wrapped there) that is longer than hw must have its pages too:
         * hw grows to it, allocating. */
        hw = atomic_load_explicit(&q->sh->hw, memory_order_relaxed);
        if (err == 0 && q->file != NULL && w.off + s > hw) {
            err = raise_hw(q, hw, w.off + s, fn);
        }
        *p = w;
        if (err != 0) {
            return err;
        }
    }
    ring_write(q, data_off(q, p->off), data, len);
    commit(q, p->t, p->off, (uint32_t)len, (uint32_t)p->n);
    p->n++;
    p->t += s;
    p->off += s;
    if (p->off >= q->R) {
        p->off -= q->R;
    }
    /* off was in the ring and s <= R (len <= capacity): one lap back at
     * most brings it in again, on a record boundary. */
    CONC__ASSERT(p->off < q->R && (p->off & 15u) == 0);
    return 0;
}

/* A lock-free guess whether a put of *ctx bytes could go on now. */
FAST bool put_hint(conc_queue *q, const void *ctx)
{
    conc__qshm *sh = q->sh;
    uint64_t s = *(const uint64_t *)ctx; /* the record's size */
    /* Relaxed: a hint only; the attempt under pmu decides. */
    if (atomic_load_explicit(&q->top->closed, memory_order_relaxed)) {
        return true;
    }
    uint64_t t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&sh->head, memory_order_relaxed);
    if (t + s - h > q->R) {
        return false;
    }
    if (q->maxsize != 0) {
        uint64_t n = atomic_load_explicit(&sh->nput, memory_order_relaxed);
        uint64_t g = atomic_load_explicit(&sh->nget, memory_order_relaxed);
        if ((int64_t)(n - g) >= (int64_t)q->maxsize) {
            return false;
        }
    }
    return true;
}

/* One attempt at msgs[*done..n), locked once, published once, then the
 * wake-up of sleeping getters (once).  *done advances past what went in.
 * 0 (all in), CONC_EFULL, CONC_ECLOSED, CONC_ECORRUPT, CONC_ETIMEDOUT
 * (pmu, or cmu for a rewind, held past the grace). */
FAST int put_once(conc_queue *q, const conc_msg *msgs, size_t n,
                  size_t *done, const conc__deadline *dl, const char *fn)
{
    pstate p;
    size_t i = *done;
    int err = side_lock(q, true, dl);
    if (err != 0) {
        return err;
    }
    err = put_begin(q, &p, fn);
    for (; err == 0 && i < n; i++) {
        err = put_one(q, &p, msgs[i].data, msgs[i].len, dl, fn);
        if (err != 0) {
            break;
        }
    }
    CONC__ASSERT(*done <= i && i <= n);
    if (i > *done) {
        put_publish(q, &p);
    }
    side_unlock(q, true);
    if (i > *done && sleepers(&q->top->data_seq)) {
        wake_all(&q->top->data_seq);
    }
    *done = i;
    return err;
}

/* ---- readers (see READERS) ------------------------------------------- */

/* Internal outcome of a blocked put: every reader has exited. */
#define NO_READERS (-1999)

static uint64_t reader_id(void)
{
    pid_t pid = getpid();
    uint64_t st = conc__os_proc_starttime(pid);
    return ((uint64_t)(uint32_t)st << 32) | (uint32_t)pid;
}

static bool reader_alive(uint64_t id)
{
    return conc__os_proc_alive((pid_t)(uint32_t)id, 0) &&
           ((id >> 32) == 0 ||
            (uint32_t)conc__os_proc_starttime((pid_t)(uint32_t)id) ==
                (uint32_t)(id >> 32) ||
            conc__os_proc_starttime((pid_t)(uint32_t)id) == 0);
}

static __attribute__((noinline, cold)) void register_reader(conc_queue *q)
{
    conc__qshm *sh = q->top;
    uint64_t me = reader_id();
    CONC__ASSERT(me != 0); /* 0 marks a free slot; our pid is never 0 */
    /* Relaxed: the slots are claimed by CAS; what other processes read
     * of them is a best guess, rechecked against /proc. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < CONC__QUEUE_READERS; i++) {
            uint64_t v = atomic_load_explicit(&sh->readers[i],
                                              memory_order_relaxed);
            if (v == me) {
                goto done;
            }
            /* First pass: free slots; second: the slots of the dead. */
            bool take = pass == 0 ? v == 0 : !reader_alive(v);
            if (take && atomic_compare_exchange_strong_explicit(
                            &sh->readers[i], &v, me, memory_order_relaxed,
                            memory_order_relaxed)) {
                goto done;
            }
        }
    }
    atomic_store_explicit(&sh->readers_overflow, 1, memory_order_relaxed);
done:
    atomic_store_explicit(&q->reader_epoch, conc__sync_fork_epoch,
                          memory_order_relaxed);
}

/* The caller is about to read: make sure its process is registered. */
FAST void note_reader(conc_queue *q)
{
    if (__builtin_expect(atomic_load_explicit(&q->reader_epoch,
                                              memory_order_relaxed) !=
                             conc__sync_fork_epoch,
                         0)) {
        register_reader(q);
    }
}

/* How long a blocked put must see every reader gone before it gives up:
 * a supervisor that restarts a killed consumer has this long for the new
 * one's first get (which registers it). */
#define READERS_GRACE_NS 1000000000ull

/* True when some process registered as a reader and every one of them
 * has exited (and none overflowed the table). */
static bool readers_gone(conc_queue *q)
{
    conc__qshm *sh = q->top;
    if (atomic_load_explicit(&sh->readers_overflow, memory_order_relaxed)) {
        return false;
    }
    int seen = 0;
    for (int i = 0; i < CONC__QUEUE_READERS; i++) {
        uint64_t v = atomic_load_explicit(&sh->readers[i],
                                          memory_order_relaxed);
        if (v != 0) {
            if (reader_alive(v)) {
                return false;
            }
            seen++;
        }
    }
    return seen > 0;
}

/* The queue had no room at the first attempt: spin, then sleep in
 * slices, re-trying after each, until everything went in or *dl passes
 * (then CONC_EFULL, *done telling how much went in), or every reader of
 * the queue has exited (NO_READERS). */
static __attribute__((noinline)) int put_wait(conc_queue *q,
                                              const conc_msg *msgs, size_t n,
                                              size_t *done,
                                              const conc__deadline *dl,
                                              const char *fn)
{
    uint32_t w = 0;
    bool armed = false;
    uint64_t gone_since = 0; /* when readers were first seen all gone */
    for (;;) {
        if (conc__deadline_passed(dl)) {
            /* detail: outcome() */
            return CONC_EFULL;
        }
        uint64_t s = rec_size(msgs[*done].len);
        if (armed) {
            armed = false;
            if (sleep_slice(&q->sh->space_seq, w, dl) == 1) {
                if (!readers_gone(q)) {
                    gone_since = 0;
                } else if (gone_since == 0) {
                    gone_since = conc__now_ns();
                } else if (conc__now_ns() - gone_since >= READERS_GRACE_NS) {
                    return NO_READERS;
                }
            }
        } else if (!spin_wait(q, &q->spin_put, put_hint, &s, dl)) {
            /* The attempt below is the re-check after arming. */
            w = arm(&q->sh->space_seq);
            armed = true;
        }
        int err = put_once(q, msgs, n, done, dl, fn);
        if (err != CONC_EFULL) {
            return err;
        }
    }
}

/* The deadline of a call with a finite timeout starts on entry, before
 * the first attempt (which may wait for the side's lock); CONC_FOREVER
 * and 0 need no clock, which keeps clock_gettime off their fast path. */
static int deadline_at_entry(conc__deadline *dl, double timeout)
{
    if (timeout == 0) {
        *dl = (conc__deadline){ .forever = false, .once = true };
        return 0;
    }
    return conc__deadline_init(dl, timeout); /* no clock for FOREVER */
}

/* The detail of a put or get that did not go through in time, or found
 * the queue closed, and of an allocation that failed; a failed check
 * (CONC_ECORRUPT) has its own already.  A lock held past the grace
 * (CONC_ETIMEDOUT inside) is reported as the timeout's code, with its
 * own detail.  Out of line: never on a success path. */
static __attribute__((noinline, cold)) int outcome(int err, const char *fn,
                                                   bool put, double timeout)
{
    switch (err) {
    case CONC_ETIMEDOUT:
        return conc__fail(put ? CONC_EFULL : CONC_EEMPTY, "%s: the %s' "
                          "lock stayed held by a live thread for the whole "
                          "timeout (%g s, at least %g s): a stopped or "
                          "misbehaving process holds it", fn,
                          put ? "producers" : "consumers", timeout,
                          LOCK_GRACE_S);
    case CONC_EFULL:
        return conc__fail(err, "%s: no room (maxsize messages or "
                          "capacity_bytes queued) within the timeout "
                          "(%g s)", fn, timeout);
    case CONC_EEMPTY:
        return conc__fail(err, "%s: no message came within the timeout "
                          "(%g s)", fn, timeout);
    case CONC_ECLOSED:
        return conc__fail(err, put ? "%s: the queue is closed"
                                   : "%s: the queue is closed and drained",
                          fn);
    case CONC_ENOMEM:
        if (put) {
            return err; /* detail: the ring's growth said why (wrap_early) */
        }
        return conc__fail(err, "%s: out of memory for the message (it "
                          "stays at the head of the queue)", fn);
    case NO_READERS:
        return conc__fail(CONC_ECLOSED, "%s: the queue stayed full and "
                          "every process that read from it has exited, so "
                          "nothing would ever make room (the messages that "
                          "did not go in were not put)", fn);
    default:
        return err;
    }
}

/* Checks a batch before any of it goes in: CONC_EINVAL for NULL data
 * with a length, CONC_ETOOBIG for a message over the capacity. */
static int check_msgs(conc_queue *q, const conc_msg *msgs, size_t n,
                      const char *fn)
{
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].data == NULL && msgs[i].len > 0) {
            return conc__fail(CONC_EINVAL, "%s: message %zu has NULL data "
                              "and length %zu", fn, i, msgs[i].len);
        }
        if (msgs[i].len > q->capacity) {
            return conc__fail(CONC_ETOOBIG, "%s: message %zu is %zu bytes, "
                              "over the queue's capacity_bytes %llu", fn, i,
                              msgs[i].len, (unsigned long long)q->capacity);
        }
    }
    return 0;
}

static __attribute__((noinline, cold)) int
bad_put_args(conc_queue *q, const void *data, size_t len, double timeout)
{
    if (q == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_put: q is NULL");
    }
    if (bad_timeout(timeout)) {
        return conc__fail(CONC_EINVAL, "conc_queue_put: timeout %g is "
                          "neither >= 0 nor CONC_FOREVER", timeout);
    }
    if (data == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_put: data is NULL and "
                          "len is %zu", len);
    }
    return conc__fail(CONC_ETOOBIG, "conc_queue_put: len %zu is over the "
                      "queue's capacity_bytes %llu", len,
                      (unsigned long long)q->capacity);
}

CONC_API int conc_queue_put(conc_queue *q, const void *data, size_t len,
                            double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_put(q->net, data, len, timeout);
    }
    if (q == NULL || (data == NULL && len > 0) || bad_timeout(timeout) ||
        len > q->capacity) {
        return bad_put_args(q, data, len, timeout);
    }
    conc__deadline dl;
    int err = deadline_at_entry(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (__builtin_expect(q->lane != NULL, 0)) {
        q = put_lane(q);
    }
    conc_msg m = { (void *)data, len };
    size_t done = 0; /* not handed out of line: it stays in a register */
    err = put_once(q, &m, 1, &done, &dl, "conc_queue_put");
    if (err == CONC_EFULL && timeout != 0) {
        size_t waited = done;
        err = put_wait(q, &m, 1, &waited, &dl, "conc_queue_put");
    }
    if (__builtin_expect(err != 0, 0)) {
        return outcome(err, "conc_queue_put", true, timeout);
    }
    return 0;
}

CONC_API int conc_queue_put_many(conc_queue *q, const conc_msg *msgs,
                                 size_t n, size_t *done, double timeout)
{
    static const char fn[] = "conc_queue_put_many";
    if (q != NULL && q->net != NULL) {
        return conc__netq_put_many(q->net, msgs, n, done, timeout);
    }
    size_t ignored;
    if (done == NULL) {
        done = &ignored;
    }
    *done = 0;
    if (q == NULL || (msgs == NULL && n > 0)) {
        return conc__fail(CONC_EINVAL, "%s: %s is NULL", fn,
                          q == NULL ? "q" : "msgs");
    }
    if (bad_timeout(timeout)) {
        return conc__fail(CONC_EINVAL, "%s: timeout %g is neither >= 0 nor "
                          "CONC_FOREVER", fn, timeout);
    }
    int err = check_msgs(q, msgs, n, fn);
    if (err != 0 || n == 0) {
        return err;
    }
    conc__deadline dl;
    err = deadline_at_entry(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (q->lane != NULL) {
        q = put_lane(q);
    }
    err = put_once(q, msgs, n, done, &dl, fn);
    if (err == CONC_EFULL && timeout != 0) {
        err = put_wait(q, msgs, n, done, &dl, fn);
    }
    return err == 0 ? 0 : outcome(err, fn, true, timeout);
}

/* ---- get ------------------------------------------------------------------ */

/* What a consumer holding cmu works on: head, its ring offset and nget,
 * read once when it takes the lock and stored once when it is done
 * (get_publish); moved: head has moved. */
typedef struct gstate {
    uint64_t h, off, g;
    bool moved;
} gstate;

/* Under cmu, before the first record.  0, or CONC_ECORRUPT (a head
 * offset off the ring or off a record boundary). */
FAST int get_begin(conc_queue *q, gstate *gs, const char *fn)
{
    conc__qshm *sh = q->sh;
    gs->h = atomic_load_explicit(&sh->head, memory_order_relaxed);
    gs->off = atomic_load_explicit(&sh->head_off, memory_order_relaxed);
    gs->g = atomic_load_explicit(&sh->nget, memory_order_relaxed);
    gs->moved = false;
    if (__builtin_expect(!off_ok(q, gs->off), 0)) {
        return corrupt(fn, "head offset", gs->off);
    }
    return 0;
}

/* Takes the record at gs (passing skip records), under cmu, without
 * publishing gs.  Into buf/cap when msg is NULL, else into a new heap
 * buffer.  0; CONC_EEMPTY (*at: where the next record will appear);
 * CONC_ETOOBIG (*len set) and CONC_ENOMEM, which leave the message in
 * place; CONC_ECORRUPT (a committed record whose length is over the
 * capacity, or a skip record where none is ever written). */
FAST int get_one(conc_queue *q, gstate *gs, conc_msg *msg, void *buf,
                 size_t cap, size_t *len, uint64_t *at, const char *fn)
{
    for (;;) {
        conc__qrec *r = (conc__qrec *)(void *)(q->ring + gs->off);
        /* seq_cst: acquire pairs with commit() (the bytes are visible),
         * and it is the load half of the Dekker pair after arm(). */
        if (atomic_load_explicit(&r->stamp, memory_order_seq_cst) !=
            stamp_of(q, gs->h)) {
            *at = gs->h;
            /* detail: outcome() */
            return CONC_EEMPTY;
        }
        uint32_t n = atomic_load_explicit(&r->len, memory_order_relaxed);
        uint32_t item = atomic_load_explicit(&r->item, memory_order_relaxed);
        if (__builtin_expect(n == CONC__QUEUE_SKIP, 0)) {
            /* A skip record is passed when it is found at head.  (It is
             * always followed by a record, written in the same put, so
             * the get that takes that record passes it: a skip never
             * lingers at the head of a queue with nothing in it.)  It is
             * never written at offset 0 (wrap_early runs only past it):
             * one there would pass a whole lap. */
            if (gs->off == 0) {
                return corrupt(fn, "skip record's offset", 0);
            }
            /* Head and its offset are two words a peer can set apart
             * (and head near 2^64 would wrap): the next lap's start is
             * trusted only where the two agree.  A division, but only on
             * this path, once a lap. */
            if (__builtin_expect(gs->h % q->R != gs->off ||
                                     gs->h > UINT64_MAX - q->R, 0)) {
                return corrupt(fn, "head position", gs->h);
            }
            gs->h += q->R - gs->off;
            gs->off = 0;
            gs->moved = true;
            CONC__ASSERT(gs->h % q->R == 0); /* the next lap's start */
            continue;
        }
        if (__builtin_expect(n > q->capacity, 0)) {
            return corrupt(fn, "record length", n);
        }
        void *dst = buf;
        if (msg != NULL) {
            dst = NULL;
            if (n > 0) {
                dst = conc__malloc(n);
                if (dst == NULL) {
                    /* detail: outcome() */
                    return CONC_ENOMEM;
                }
            }
        } else if (n > cap) {
            *len = n;
            /* detail: outcome() or conc_queue_get_into() */
            return CONC_ETOOBIG;
        }
        /* n <= capacity < R: one wrap at most, inside the ring. */
        ring_read(q, data_off(q, gs->off), dst, n);
        gs->g = item_near(gs->g, item) + 1;
        uint64_t s = rec_size(n);
        gs->h += s;
        gs->off += s;
        if (gs->off >= q->R) {
            gs->off -= q->R;
        }
        CONC__ASSERT(gs->off < q->R && (gs->off & 15u) == 0); /* as put */
        gs->moved = true;
        if (msg != NULL) {
            msg->data = dst;
            msg->len = n;
        } else {
            *len = n;
        }
        return 0;
    }
}

/* Stores what the consumer did under cmu: nget, then head (release:
 * pairs with the producers' load of head in room(), so our reads of the
 * bytes come first; and it is the store half of the Dekker pair with a
 * putter's arm(space_seq), whose fence and load half follow the unlock
 * of cmu in get_once()). */
FAST void get_publish(conc_queue *q, const gstate *gs)
{
    conc__qshm *sh = q->sh;
    CONC__ASSERT(gs->off < q->R && (gs->off & 15u) == 0);
    atomic_store_explicit(&sh->nget, gs->g, memory_order_relaxed);
    atomic_store_explicit(&sh->head_off, gs->off, memory_order_relaxed);
    atomic_store_explicit(&sh->head, gs->h, memory_order_release);
}

/* Where a getter's spin looks: the position at which the next record
 * will appear, its header and the stamp it will carry, worked out once
 * per spin (rec_at() divides). */
typedef struct get_probe {
    uint64_t at;
    const conc__qrec *r;
    uint64_t stamp;
} get_probe;

/* A lock-free guess whether a get could find something now: the record
 * at p->at (where the last attempt found nothing) is committed, or head
 * moved, or the queue was closed.  It reads the line the producer writes
 * the next record into anyway, so spinning steals no line from it. */
/* The stamp at r, read for a spin's hint only, outside the memory model
 * on purpose.  The spin reads it after seeing head still at r's position,
 * so no producer is writing message bytes there; but the getter holds no
 * lock, and if it is descheduled between the two loads, other getters may
 * take the record and producers lap the ring and memcpy a message over
 * this very word.  Such a read is a data race in C11's terms (and TSan
 * reports it, as it reports any atomic load racing a plain write), though
 * it cannot tear (an aligned 8-byte load, on every target of this
 * library) and its value is never trusted: a wrong guess costs one
 * attempt under cmu, which decides.  Spinning on a word no memcpy touches
 * (nput) would cost a second line transfer per message on the critical
 * path of a round trip.  So the read is a plain volatile load kept out of
 * TSan's sight; TSan still checks every access that decides anything. */
#if defined(__SANITIZE_THREAD__)
/* Out of line: GCC inlines nothing across a no_sanitize difference. */
static __attribute__((noinline, no_sanitize("thread"))) uint64_t
#else
static inline uint64_t
#endif
peek_stamp(const conc__qrec *r)
{
    return *(const volatile uint64_t *)(const void *)&r->stamp;
}

FAST bool get_hint(conc_queue *q, const void *ctx)
{
    const get_probe *p = ctx;
    conc__qshm *sh = q->sh;
    /* Relaxed: a hint only; the attempt under cmu decides. */
    if (atomic_load_explicit(&sh->head, memory_order_relaxed) != p->at) {
        return true;
    }
    return peek_stamp(p->r) == p->stamp ||
           atomic_load_explicit(&q->top->closed, memory_order_relaxed);
}

/* The queue was empty and a record has just appeared (see LINGERING in
 * the design comment): lingers up to q->linger pauses, touching no
 * shared line but nput (read every 16 rounds), so that a batch builds
 * up behind this record and is then taken in one run.  The budget
 * doubles while the producer streams (more records came while we
 * lingered) and halves when only the one record came (a request, say);
 * at 0 it is re-tried every PROBE_EVERY empty events.  A hint only: the
 * attempt under cmu decides, and no wake-up depends on it. */
static void linger(conc_queue *q)
{
    /* Relaxed throughout: per-process heuristics and counter peeks. */
    int lg = atomic_load_explicit(&q->linger, memory_order_relaxed);
    CONC__ASSERT(lg == 0 || (lg >= LINGER_MIN && lg <= LINGER_MAX));
    if (lg == 0) {
        int p = atomic_load_explicit(&q->probe, memory_order_relaxed);
        if (p > 0) {
            atomic_store_explicit(&q->probe, p - 1, memory_order_relaxed);
            return;
        }
        atomic_store_explicit(&q->probe, PROBE_EVERY, memory_order_relaxed);
        lg = LINGER_MIN;
    }
    uint64_t g = atomic_load_explicit(&q->sh->nget, memory_order_relaxed);
    int64_t queued = 0;
    for (int i = 1; i <= lg; i++) {
        conc__cpu_relax();
        if ((i & 15) == 0) {
            uint64_t n = atomic_load_explicit(&q->sh->nput,
                                              memory_order_relaxed);
            queued = (int64_t)(n - g);
            if (queued >= LINGER_BATCH ||
                atomic_load_explicit(&q->top->closed, memory_order_relaxed)) {
                break;
            }
        }
    }
    if (queued >= 2) {
        lg = lg * 2 > LINGER_MAX ? LINGER_MAX : lg * 2;
    } else {
        lg = lg / 2 < LINGER_MIN ? 0 : lg / 2;
    }
    atomic_store_explicit(&q->linger, lg, memory_order_relaxed);
}

/* What a get takes: one message into buf/cap or a conc_msg (n 1), or up
 * to n messages into msgs (a batch). */
typedef struct get_req {
    conc_msg *msgs;
    size_t n;
    void *buf;
    size_t cap;
    size_t len;  /* out: the message's length (buf/cap) */
    size_t got;  /* out: messages taken */
} get_req;

/* The attempt of get_once() once cmu is held: takes what rq asks for,
 * publishes once, lets cmu go, then wakes sleeping putters.  0 (rq->got
 * >= 1), CONC_EEMPTY (*at: where the next record will appear),
 * CONC_ETOOBIG, CONC_ENOMEM, CONC_ECORRUPT.  A batch that took some
 * messages returns 0 whatever stopped it; what stopped it is found again
 * by the next call. */
FAST int get_locked(conc_queue *q, get_req *rq, uint64_t *at, const char *fn)
{
    gstate gs;
    int err = get_begin(q, &gs, fn);
    if (err == 0) {
        err = get_one(q, &gs, rq->msgs, rq->buf, rq->cap, &rq->len, at, fn);
    }
    if (err == 0) {
        rq->got = 1;
        while (rq->got < rq->n &&
               get_one(q, &gs, &rq->msgs[rq->got], NULL, 0, NULL, at, fn) ==
                   0) {
            rq->got++;
        }
    }
    CONC__ASSERT(rq->got <= rq->n);
    if (gs.moved) {
        get_publish(q, &gs);
    }
    side_unlock(q, false);
    if (gs.moved && sleepers(&q->sh->space_seq)) {
        wake_all(&q->sh->space_seq);
    }
    return err;
}

/* One attempt, locked once and published once, then the wake-up of
 * sleeping putters: as get_locked(), and CONC_ECLOSED (closed and
 * drained), CONC_ETIMEDOUT (cmu held past the grace). */
FAST int get_once(conc_queue *q, get_req *rq, uint64_t *at,
                  const conc__deadline *dl, const char *fn)
{
    /* seq_cst: read before the attempt; see CLOSE in the design comment
     * (pairs with the store in conc_queue_close). */
    bool closed = atomic_load_explicit(&q->top->closed, memory_order_seq_cst);
    int err = side_lock(q, false, dl);
    if (err != 0) {
        return err;
    }
    err = get_locked(q, rq, at, fn);
    /* detail: outcome() */
    return err == CONC_EEMPTY && closed ? CONC_ECLOSED : err;
}

/* ---- lanes (see LANES) ---------------------------------------------------- */

/* Where this thread's gets on a queue of lanes look first: the lane that last
 * gave it messages, and how many in a row it gave, for up to GET_LANE_QUEUES
 * queues (known by their lane 0 header: a pointer compared, never followed),
 * replaced in turn; a queue not among them starts at the thread's id plus the
 * misses so far.  initial-exec: no __tls_get_addr call per get in the shared
 * library. */
#define GET_LANE_QUEUES 4
typedef struct get_lane_slot {
    const conc__qshm *top;
    unsigned lane, run;
} get_lane_slot;
static _Thread_local get_lane_slot get_lane[GET_LANE_QUEUES]
    __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned get_lane_next
    __attribute__((tls_model("initial-exec")));

/* This thread's slot for the queue whose lane 0 header is top: its own,
 * or the oldest one taken over (lane at the thread's id, no run yet). */
static get_lane_slot *get_lane_of(const conc__qshm *top, unsigned L)
{
    for (unsigned i = 0; i < GET_LANE_QUEUES; i++) {
        if (get_lane[i].top == top) {
            get_lane[i].lane %= L;
            return &get_lane[i];
        }
    }
    unsigned miss = get_lane_next++;
    get_lane_slot *g = &get_lane[miss % GET_LANE_QUEUES];
    /* Started at the thread's id, moved on by one with every miss: a
     * thread reading more queues than it remembers must not always start
     * at the same lane (one that never runs dry would starve the
     * others). */
    *g = (get_lane_slot){ top, (self_tid() + miss) % L, 0 };
    return g;
}

/* A getter stays on its lane for at most about this many messages in a
 * row (a batch counts its messages; the one that crosses it ends the run),
 * then looks at the other lanes first: a producer that keeps its lane
 * from running dry must not starve the others (see LANES). */
#define LANE_RUN 64

/* Internal outcome of a sweep that found nothing it could take, while a
 * lane whose cmu another consumer holds has messages: not empty, so no
 * CONC_ECLOSED and no long sleep. */
#define LANES_HELD (-1998)

/* What a sweep saw: each lane's nput when it was looked at (a spin
 * waits for one to change), where the next sweep starts, and how many
 * sweeps in a row ended LANES_HELD. */
typedef struct lanes_probe {
    uint64_t *seen;
    unsigned *start;
    unsigned held;
} lanes_probe;

/* A lane's cmu, taken only from a dead holder: its word is judged once
 * (the holder's liveness, from /proc: slow paths only) and, if the
 * holder died, taken over and the lane repaired, as side_lock() does
 * after a slice.  0 (held now: taken over, or found free), or
 * CONC_ETIMEDOUT (a live thread holds it). */
static int lane_take_from_dead(conc_queue *l)
{
    const conc__deadline once = { .forever = false, .once = true };
    int err = conc__olock_acquire_slow(&l->sh->cmu, conc__sync_self_id(),
                                       &once);
    if (err == CONC_EOWNERDEAD) {
        repair_consumer(l);
        err = 0;
    }
    return err;
}

/* A quick sweep asks whether the holder of a lane it passed over (one with
 * messages) lives at most once in this long per lane of a handle (a clock read
 * on that path, then /proc): a consumer killed holding a lane's cmu must not
 * strand that lane while the others keep everyone busy, and a live holder must
 * not cost a /proc read per pass. */
#define HELD_LOOK_NS 50000000ull

/* Whether this pass over held lane l is the one that looks at its
 * holder: the first such pass in HELD_LOOK_NS on this lane of this
 * handle (per lane: a live holder of one lane must not use up the looks
 * a dead holder of another needs). */
static bool held_look_due(conc_queue *l)
{
    /* Relaxed: pacing only; the CAS makes one pass of many the looker.
     * last is read before the clock, so now - last cannot wrap. */
    uint64_t last = atomic_load_explicit(&l->held_look_ns,
                                         memory_order_relaxed);
    uint64_t now = conc__now_ns();
    return (int64_t)(now - last) >= (int64_t)HELD_LOOK_NS &&
           atomic_compare_exchange_strong_explicit(&l->held_look_ns, &last,
                                                   now, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* One pass over the lanes, from *start: a get from the first lane that gives a
 * message.  Quick (check false): the first lane is always tried; the others
 * only when their counters say they hold something (nput != nget), and a lane
 * whose cmu another consumer holds is passed over (its holder's liveness
 * looked at once in HELD_LOOK_NS, if the lane has messages); if no other lane
 * gave anything, the first such lane that has messages is waited for as on one
 * ring, but briefly (LANE_WAIT_S: its holder's liveness is looked at when that
 * ends, as every lock wait's).  Check (the re-check after arm(), and every
 * sweep of a closed queue): every lane is tried, none waited for; a lane whose
 * cmu another consumer holds is looked at through its counters, loaded seq_cst
 * after the arm (the producer stores nput before its unlock and fenced load of
 * data_seq, as it stores the stamp), and if they say it holds messages the
 * sweep says LANES_HELD; every 8th such sweep in a row (pr->held) asks whether
 * the holder lives, and a dead one's lane is taken over and repaired.  0
 * (*start: the lane that gave), CONC_EEMPTY (also when the waited-for lane's
 * holder kept it), LANES_HELD, CONC_ECLOSED (closed, and every lane empty),
 * and get_locked()'s errors. */
static int lanes_sweep(conc_queue *q, get_req *rq, lanes_probe *pr,
                       bool check, const conc__deadline *dl, const char *fn)
{
    /* seq_cst: read before the attempts, as in get_once(). */
    bool closed = atomic_load_explicit(&q->top->closed, memory_order_seq_cst);
    check = check || closed;
    unsigned L = q->nlanes, s = *pr->start % L;
    uint64_t me = conc__sync_self_id();
    int busy = -1;
    bool held = false;
    uint64_t at;
    for (unsigned i = 0; i < L; i++) {
        unsigned j = s + i < L ? s + i : s + i - L;
        conc_queue *l = &q->lane[j];
        /* Hints on the quick sweep (the attempt under cmu decides); on the
         * check sweep the load half of the Dekker pair after arm().  The first
         * lane's nput is read only once it proved empty: its producer writes
         * that line on every put, and a consumer streaming from the lane would
         * otherwise pull it over on every get.  (A record published between
         * that attempt and the read ends the spin late, at its budget; the
         * check sweep then takes it.) */
        uint64_t n = 0;
        if (i > 0 || check) {
            n = atomic_load_explicit(&l->sh->nput, memory_order_seq_cst);
            pr->seen[j] = n;
        }
        int err;
        /* Signed: a dead producer's committed but uncounted record,
         * once taken, leaves nget one past nput until its lane's next
         * producer repairs the count. */
        if (!check && i > 0 &&
            (int64_t)(n - atomic_load_explicit(&l->sh->nget,
                                               memory_order_relaxed)) <= 0) {
            continue;
        }
        if (conc__olock_try(&l->sh->cmu, me)) {
            err = get_locked(l, rq, &at, fn);
        } else if (!check) {
            if (i == 0) {
                n = atomic_load_explicit(&l->sh->nput, memory_order_relaxed);
                pr->seen[j] = n;
            }
            if ((int64_t)(n - atomic_load_explicit(
                              &l->sh->nget, memory_order_relaxed)) <= 0) {
                continue; /* held, and nothing counted in it to wait for */
            }
            if (held_look_due(l) && lane_take_from_dead(l) == 0) {
                err = get_locked(l, rq, &at, fn);
            } else {
                busy = busy < 0 ? (int)j : busy;
                continue;
            }
        } else if ((int64_t)(n - atomic_load_explicit(
                                     &l->sh->nget, memory_order_seq_cst)) <=
                   0) {
            continue; /* held, and nothing counted in it for us */
        } else if (pr->held % 8 == 7 && lane_take_from_dead(l) == 0) {
            err = get_locked(l, rq, &at, fn); /* its holder had died */
        } else {
            held = true;
            continue;
        }
        if (err == 0 || err == CONC_ETOOBIG || err == CONC_ENOMEM) {
            /* ETOOBIG, ENOMEM: the message stays at this lane's head, and
             * a retry (a bigger buffer) starts here and gets it. */
            *pr->start = j;
            return err;
        }
        if (i == 0 && !check) {
            pr->seen[j] = atomic_load_explicit(&l->sh->nput,
                                               memory_order_relaxed);
        }
        if (err != CONC_EEMPTY) {
            return err;
        }
    }
    if (busy >= 0) {
        /* Every other lane was empty: wait for this one's cmu as on one
         * ring (spin while its holder copies, sleep while others stream),
         * but not past LANE_WAIT_S. */
        conc_queue *l = &q->lane[busy];
        int err = side_lock_slow(l, false, dl, true);
        if (err == 0) {
            err = get_locked(l, rq, &at, fn);
        }
        if (err == 0 || err == CONC_ETOOBIG || err == CONC_ENOMEM) {
            *pr->start = (unsigned)busy; /* as above */
        }
        /* ETIMEDOUT: held past the brief wait; the check sweep before any
         * sleep looks at that lane again. */
        /* detail: outcome() */
        return err == CONC_ETIMEDOUT ? CONC_EEMPTY : err;
    }
    if (held) {
        return LANES_HELD;
    }
    /* detail: outcome() */
    return closed ? CONC_ECLOSED : CONC_EEMPTY;
}

/* A lock-free guess whether a sweep could find something now: some
 * lane's nput moved since the last sweep read it (that lane becomes where
 * the next sweep starts), or the queue was closed.  It reads one line
 * per lane, each written only by its lane's producers. */
FAST bool lanes_hint(conc_queue *q, const void *ctx)
{
    const lanes_probe *p = ctx;
    for (unsigned j = 0; j < q->nlanes; j++) {
        /* Relaxed: a hint only. */
        if (atomic_load_explicit(&q->lane[j].sh->nput, memory_order_relaxed) !=
            p->seen[j]) {
            *p->start = j;
            return true;
        }
    }
    return atomic_load_explicit(&q->top->closed, memory_order_relaxed);
}

/* How long a getter sleeps after a check sweep said LANES_HELD: the lane
 * it could not look into may be emptied by its holder, or not (a holder
 * that stopped); a put on any lane wakes it sooner. */
#define HELD_NAP_S 0.001

/* The queue was empty at the first attempt: spin, then sleep in slices,
 * re-trying after each, as put_wait(); a getter whose spin saw a record
 * come lingers for a batch (see LINGERING).  pr: a queue of lanes, whose
 * spin watches every lane's nput (lanes_hint()) and whose re-check after
 * arming is a locked sweep (see LANES); NULL: one ring, the spin watching
 * the position at where the last attempt found nothing. */
static __attribute__((noinline)) int get_wait(conc_queue *q, get_req *rq,
                                              const conc__deadline *dl,
                                              uint64_t at, lanes_probe *pr,
                                              const char *fn)
{
    uint32_t w = 0;
    bool armed = false;
    int err = CONC_EEMPTY; /* detail: outcome() */
    for (;;) {
        if (conc__deadline_passed(dl)) {
            /* detail: outcome() */
            return CONC_EEMPTY;
        }
        if (armed) {
            armed = false;
            sleep_for(&q->top->data_seq, w, dl,
                      err == LANES_HELD ? HELD_NAP_S : SLICE_S);
        } else if (err == LANES_HELD ||
                   !(pr != NULL
                         ? spin_wait(q, &q->spin_get, lanes_hint, pr, dl)
                         : spin_wait(q, &q->spin_get, get_hint,
                                     &(get_probe){ at, rec_at(q, at),
                                                   stamp_of(q, at) },
                                     dl))) {
            /* The attempt below is the re-check after arming. */
            w = arm(&q->top->data_seq);
            armed = true;
        } else {
            linger(pr != NULL ? &q->lane[*pr->start % q->nlanes] : q);
        }
        err = pr != NULL ? lanes_sweep(q, rq, pr, armed, dl, fn)
                         : get_once(q, rq, &at, dl, fn);
        if (pr != NULL) {
            pr->held = err == LANES_HELD ? pr->held + 1 : 0;
        }
        if (err != CONC_EEMPTY && err != LANES_HELD) {
            return err;
        }
    }
}

/* get_common() for a queue of lanes. */
static __attribute__((noinline)) int lanes_get(conc_queue *q, get_req *rq,
                                               double timeout,
                                               const char *fn)
{
    note_reader(q);
    conc__deadline dl;
    int err = deadline_at_entry(&dl, timeout);
    if (err != 0) {
        return err;
    }
    uint64_t seen[CONC_QUEUE_MAX_LANES];
    get_lane_slot *g = get_lane_of(q->top, q->nlanes);
    /* After LANE_RUN in a row from one lane, the others first and this
     * one last; the run starts again whatever that sweep finds. */
    bool rotate = g->run >= LANE_RUN;
    unsigned start = rotate ? (g->lane + 1) % q->nlanes : g->lane;
    lanes_probe pr = { seen, &start, 0 };
    err = lanes_sweep(q, rq, &pr, false, &dl, fn);
    if ((err == CONC_EEMPTY || err == LANES_HELD) && timeout != 0) {
        err = get_wait(q, rq, &dl, 0, &pr, fn);
    }
    if (err == LANES_HELD) {
        /* Timeout 0: held by others, not ours now. */
        /* detail: outcome() */
        err = CONC_EEMPTY;
    }
    g->run = err == 0 && start == g->lane && !rotate
                 ? g->run + (unsigned)rq->got
                 : 0;
    g->lane = start % q->nlanes;
    if (err != 0) {
        return outcome(err, fn, false, timeout);
    }
    return 0;
}

FAST int get_common(conc_queue *q, get_req *rq, double timeout,
                    const char *fn)
{
    if (__builtin_expect(q->lane != NULL, 0)) {
        return lanes_get(q, rq, timeout, fn);
    }
    note_reader(q);
    conc__deadline dl;
    int err = deadline_at_entry(&dl, timeout);
    if (err != 0) {
        return err;
    }
    uint64_t at = 0;
    err = get_once(q, rq, &at, &dl, fn);
    if (err == CONC_EEMPTY && timeout != 0) {
        /* A copy goes out of line, so that *rq can stay in registers on
         * the fast path. */
        get_req w = *rq;
        err = get_wait(q, &w, &dl, at, NULL, fn);
        *rq = w;
    }
    if (__builtin_expect(err != 0, 0)) {
        return outcome(err, fn, false, timeout);
    }
    return 0;
}

static __attribute__((noinline, cold)) int
bad_get_args(const char *fn, const char *what, double timeout)
{
    if (what != NULL) {
        return conc__fail(CONC_EINVAL, "%s: %s", fn, what);
    }
    return conc__fail(CONC_EINVAL, "%s: timeout %g is neither >= 0 nor "
                      "CONC_FOREVER", fn, timeout);
}

CONC_API int conc_queue_get(conc_queue *q, conc_msg *msg, double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_get(q->net, msg, timeout);
    }
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = 0;
    }
    if (q == NULL || msg == NULL || bad_timeout(timeout)) {
        return bad_get_args("conc_queue_get",
                            q == NULL     ? "q is NULL"
                            : msg == NULL ? "msg is NULL"
                                          : NULL,
                            timeout);
    }
    get_req rq = { .msgs = msg, .n = 1 };
    return get_common(q, &rq, timeout, "conc_queue_get");
}

CONC_API int conc_queue_get_into(conc_queue *q, void *buf, size_t cap,
                                 size_t *len, double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_get_into(q->net, buf, cap, len, timeout);
    }
    if (q == NULL || len == NULL || (buf == NULL && cap > 0) ||
        bad_timeout(timeout)) {
        return bad_get_args("conc_queue_get_into",
                            q == NULL     ? "q is NULL"
                            : len == NULL ? "len is NULL"
                            : buf == NULL ? "buf is NULL with cap > 0"
                                          : NULL,
                            timeout);
    }
    get_req rq = { .buf = buf, .cap = cap, .n = 1 };
    int err = get_common(q, &rq, timeout, "conc_queue_get_into");
    *len = (err == 0 || err == CONC_ETOOBIG) ? rq.len : 0;
    if (err == CONC_ETOOBIG) {
        err = conc__fail(err, "conc_queue_get_into: the message is %zu "
                         "bytes, over cap %zu (it stays at the head)",
                         rq.len, cap);
    }
    return err;
}

CONC_API int conc_queue_get_many(conc_queue *q, conc_msg *msgs, size_t n,
                                 size_t *got, double timeout)
{
    static const char fn[] = "conc_queue_get_many";
    if (q != NULL && q->net != NULL) {
        return conc__netq_get_many(q->net, msgs, n, got, timeout);
    }
    size_t ignored;
    if (got == NULL) {
        got = &ignored;
    }
    *got = 0;
    if (msgs != NULL) {
        memset(msgs, 0, n * sizeof *msgs);
    }
    if (q == NULL || msgs == NULL || n == 0 || bad_timeout(timeout)) {
        return bad_get_args(fn,
                            q == NULL      ? "q is NULL"
                            : msgs == NULL ? "msgs is NULL"
                            : n == 0       ? "n is 0"
                                           : NULL,
                            timeout);
    }
    get_req rq = { .msgs = msgs, .n = n };
    int err = get_common(q, &rq, timeout, fn);
    *got = err == 0 ? rq.got : 0;
    return err;
}

/* ---- sizes ---------------------------------------------------------------- */

/* The messages in one ring, clamped to what it can hold. */
static size_t ring_qsize(const conc_queue *q)
{
    /* Acquire: counts only; the difference is approximate while others
     * put and get (nput lags a commit by a moment).  nget is read again
     * after nput, and the pair taken only when nget held still across
     * it: a caller preempted between the two loads once subtracted an
     * old nget from a new nput, and said 16395 of a queue of maxsize 2. */
    uint64_t g, n;
    for (int tries = 0;; tries++) {
        g = atomic_load_explicit(&q->sh->nget, memory_order_acquire);
        n = atomic_load_explicit(&q->sh->nput, memory_order_acquire);
        if (atomic_load_explicit(&q->sh->nget, memory_order_acquire) == g ||
            tries == 8) {
            break;
        }
    }
    if ((int64_t)(n - g) <= 0) {
        return 0;
    }
    /* No more records fit than one per 16 bytes of ring: a larger
     * difference is a peer's scribble, not a count. */
    uint64_t most = q->R / CONC__QUEUE_REC_HDR;
    if (q->maxsize > 0 && q->maxsize < most) {
        most = q->maxsize; /* a pair the retries could not make whole */
    }
    return (size_t)(n - g < most ? n - g : most);
}

CONC_API size_t conc_queue_qsize(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_qsize(q->net);
    }
    if (q == NULL) {
        return 0;
    }
    if (q->lane == NULL) {
        return ring_qsize(q);
    }
    /* Each term at most R/16 < 2^28, at most 64 of them: no overflow. */
    size_t sum = 0;
    for (unsigned j = 0; j < q->nlanes; j++) {
        sum += ring_qsize(&q->lane[j]);
    }
    return sum;
}

CONC_API bool conc_queue_empty(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_empty(q->net);
    }
    return conc_queue_qsize(q) == 0;
}

CONC_API bool conc_queue_full(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_full(q->net);
    }
    if (q == NULL) {
        return false;
    }
    if (q->maxsize != 0 && conc_queue_qsize(q) >= q->maxsize) {
        return true;
    }
    if (q->lane != NULL) {
        q = put_lane(q); /* the calling thread's lane (maxsize is 0) */
    }
    /* Relaxed: an approximate answer, as qsize(). */
    uint64_t t = atomic_load_explicit(&q->sh->tail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&q->sh->head, memory_order_relaxed);
    return (int64_t)(t - h) > 0 && t - h + CONC__QUEUE_REC_HDR > q->R;
}

/* ---- task_done / join ----------------------------------------------------- */

/* Messages put so far, as far as task_done may count them: nput lags a
 * commit by a moment, but a message already taken is counted in nget. */
static uint64_t ring_tasks_put(const conc__qshm *sh)
{
    uint64_t n = atomic_load_explicit(&sh->nput, memory_order_seq_cst);
    uint64_t g = atomic_load_explicit(&sh->nget, memory_order_seq_cst);
    return (int64_t)(g - n) > 0 ? g : n;
}

/* The same, summed over the lanes of a queue of lanes. */
static uint64_t tasks_put(const conc_queue *q)
{
    if (q->lane == NULL) {
        return ring_tasks_put(q->sh);
    }
    uint64_t sum = 0;
    for (unsigned j = 0; j < q->nlanes; j++) {
        sum += ring_tasks_put(q->lane[j].sh);
    }
    return sum;
}

CONC_API int conc_queue_task_done(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_task_done(q->net);
    }
    if (q == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_task_done: q is NULL");
    }
    conc__qshm *sh = q->sh;
    uint64_t d = atomic_load_explicit(&sh->ndone, memory_order_seq_cst);
    for (;;) {
        if (d >= tasks_put(q)) {
            return conc__fail(CONC_EINVAL, "conc_queue_task_done: called "
                              "more times than messages were put (%llu)",
                              (unsigned long long)d);
        }
        /* seq_cst: the store half of the Dekker pair with a joiner's
         * arm(join_seq); the load half is wake_all's load below. */
        if (atomic_compare_exchange_weak_explicit(&sh->ndone, &d, d + 1,
                                                  memory_order_seq_cst,
                                                  memory_order_seq_cst)) {
            break;
        }
    }
    wake_all(&sh->join_seq);
    return 0;
}

CONC_API int conc_queue_join(conc_queue *q, double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_join(q->net, timeout);
    }
    if (q == NULL || bad_timeout(timeout)) {
        return bad_get_args("conc_queue_join", q == NULL ? "q is NULL" : NULL,
                            timeout);
    }
    conc__qshm *sh = q->sh;
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    bool armed = false;
    uint32_t w = 0;
    for (;;) {
        /* seq_cst: the load half after arm(join_seq). */
        if (atomic_load_explicit(&sh->ndone, memory_order_seq_cst) >=
            tasks_put(q)) {
            return 0;
        }
        if (conc__deadline_passed(&dl)) {
            return conc__fail(CONC_ETIMEDOUT, "conc_queue_join: messages "
                              "put but not yet task_done() after %g s",
                              timeout);
        }
        if (armed) {
            armed = false;
            sleep_slice(&sh->join_seq, w, &dl);
            continue;
        }
        w = arm(&sh->join_seq);
        armed = true;
    }
}

/* ---- close ---------------------------------------------------------------- */

CONC_API int conc_queue_close(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_close(q->net);
    }
    if (q == NULL) {
        return conc__fail(CONC_EINVAL, "conc_queue_close: q is NULL");
    }
    /* No timeout of its own: each lock wait is bounded by the grace.
     * With lanes, every lane's pmu is held at once (taken in lane order;
     * a producer holds one pmu, and cmu after it, never two pmus), so
     * every put on any lane either finished before closed was set or
     * sees it. */
    conc__deadline once = { .forever = false, .once = true };
    conc_queue *ring = q->lane != NULL ? q->lane : q;
    unsigned locked = 0;
    int err = 0;
    for (; locked < q->nlanes && err == 0; locked++) {
        err = side_lock(&ring[locked], true, &once);
    }
    if (err == 0) {
        /* seq_cst under pmu: every put either finished before this or
         * sees it; pairs with the loads in put_begin and get_once. */
        atomic_store_explicit(&q->top->closed, 1, memory_order_seq_cst);
    } else {
        locked--; /* the one that failed is not held */
    }
    while (locked-- > 0) {
        side_unlock(&ring[locked], true);
    }
    if (err != 0) {
        return conc__fail(err, "conc_queue_close: the producers' lock "
                          "stayed held by a live thread for %g s: a stopped "
                          "or misbehaving process holds it", LOCK_GRACE_S);
    }
    /* Bump both sequences (keeping any sleeper bit) and wake everyone:
     * a sleeper that read the old value returns from FUTEX_WAIT at once.
     * Pairs with the FUTEX_WAIT in sleep_slice(), after which getters and
     * putters re-check closed (seq_cst loads above). */
    atomic_fetch_add_explicit(&q->top->data_seq, 2, memory_order_seq_cst);
    conc__os_futex_wake(&q->top->data_seq, INT32_MAX, true);
    for (unsigned i = 0; i < q->nlanes; i++) {
        /* Each lane's putters sleep on its own space_seq (see LANES). */
        atomic_fetch_add_explicit(&ring[i].sh->space_seq, 2,
                                  memory_order_seq_cst);
        conc__os_futex_wake(&ring[i].sh->space_seq, INT32_MAX, true);
    }
    return 0;
}

CONC_API bool conc_queue_closed(conc_queue *q)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_closed(q->net);
    }
    return q != NULL &&
           atomic_load_explicit(&q->top->closed, memory_order_acquire);
}
