/* conc/queue.h - multiprocessing.Queue, SimpleQueue and JoinableQueue, and
 * queue.Queue: a FIFO of byte messages between any mix of threads and
 * processes, living in shared memory (a ring of variable-size records).
 *
 *   conc_queue *q;
 *   conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 });   // Queue(3)
 *   conc_queue_put(q, "spam", 4, CONC_FOREVER);               // q.put(b"spam")
 *   conc_msg m;
 *   conc_queue_get(q, &m, 1.5);                               // q.get(timeout=1.5)
 *   conc_msg_free(&m);
 *
 * Sharing.  A queue created before fork() (conc_process_start()) is the
 * same queue in the child.  A queue given .name lives in POSIX shared
 * memory, /dev/shm/<name>, and an unrelated process reaches it with
 * conc_queue_open().  Every handle is safe from any number of threads.
 *
 * Who unlinks a named queue.  The creating process does: conc_queue_free()
 * called by the process that called conc_queue_new() removes the
 * /dev/shm/<name> entry (handles already open keep working; later
 * conc_queue_open() calls fail with CONC_ESYS/ENOENT), unless the name was
 * unlinked already and now names another segment, which it leaves alone;
 * a creator that exits without freeing unlinks at exit.  Handles obtained
 * by conc_queue_open(), and copies inherited by forked children, never
 * unlink.  A creator killed by SIGKILL leaves the entry behind (as every
 * POSIX shared memory object does); unlink it with shm_unlink(3).
 *
 * Trust.  A named queue is created mode 0600, and conc_queue_open()
 * refuses (CONC_EPERM) a segment of another user or one that others may
 * access, unless conc_shm_share() (conc/shared.h) allows it.  A process
 * that can write the segment can garble or drop the messages in this
 * queue, but not make a call on it crash, loop, or read or write outside
 * the queue's mapping: open checks the header completely, and every
 * offset, length and counter read from the ring is checked before use (a
 * failed check is CONC_ECORRUPT, with a detail); truncating the segment
 * is the one harm it can do beyond the queue (see conc/shared.h).
 *
 * Waiting.  A put or get that cannot go on at once spins first (reading
 * shared memory only, yielding the CPU now and then), for 4 to 64 us,
 * adapted per handle to how soon its peers have answered, and never past
 * its timeout; then it sleeps on a futex until woken.  A put or get that
 * goes on at once makes no system call, and wakes a sleeper only when
 * one is asleep.  So a consumer that keeps up with its producers costs
 * no sleep or wake-up per message, and an idle one costs at most 4 us of
 * spinning per message before it sleeps.
 *
 * Many cores.  Each side of a queue has one lock, held across one copy,
 * so a one-ring queue moves the most with one producer and one consumer
 * (17-21 M messages of 64 B a second on a 16-core Xeon).  Processes that
 * share a side pass the lock and the ring's cache lines between their
 * cores on every message: there 2 producers -> 2 consumers moved a fifth
 * of that, 8 -> 8 a tenth, still 15-38 times mp.Queue.  For many
 * producers, make the queue with lanes (.lanes below): each producer
 * thread puts into a ring of its own, and consumers spread over the rings
 * that have messages, so producers and consumers on different lanes share
 * no lock and no line a put writes; the order is then FIFO per producer
 * thread.  One producer feeding many consumers is not
 * helped by lanes: move batches (conc_queue_put_many() and
 * conc_queue_get_many() take the lock once per batch), or give each
 * consumer its own queue.
 *
 * Readers that all died.  A queue remembers the processes that have read
 * from it (up to 32 at once; a process registers at its first get, a
 * forked child at its own first).  A put blocked on a full queue whose
 * registered readers have all exited, and stayed gone for a second (time
 * for a restarted consumer's first get), gives up with CONC_ECLOSED
 * instead of waiting for ever (Python's producers would hang); with no reader
 * ever registered, or more than 32 at once, it waits as before.
 *
 * Dying peers.  A producer or consumer killed at any instant (SIGKILL
 * halfway through a put or a get included) leaves the queue consistent;
 * at most the one message in the dead process's hands is lost, and nobody
 * waits for the dead process.  A lost message is never task_done()'d, so
 * conc_queue_join() then waits until its timeout.
 *
 * On a server (.url).  The same queue served by Redis, so that producers
 * and consumers on different hosts share it:
 *   conc_queue_new(&q, &(conc_queue_opts){ .url = "redis://10.0.0.5:6379/0",
 *                                           .name = "jobs" });
 *   conc_queue_open(&q, "redis://10.0.0.5:6379/0/jobs");   // any host
 * URLs: redis://[[user]:password@]host[:port][/db[/name]] (port 6379, db
 * 0 by default; an IPv6 host in brackets; %-escapes in every part but
 * the host and port), and
 * unix://[[user]:password@]/path/to/redis.sock[?db=N&name=jobs].  A
 * password is never printed, conc_errdetail() included.  Redis 6.2 or
 * later; TLS (rediss://) is refused.  In libconc builds without hiredis
 * every redis:// URL is CONC_EINVAL at creation, and conc_errdetail()
 * says the backend was not built.
 *   The queue lives on the server, under keys "conc:{q:<name>}..." (one
 * hash tag per queue), until those keys are deleted: no handle's free
 * deletes it, so a program may stop and start again and find its queue.
 * conc_queue_new() makes it, or attaches to it when it exists with the
 * same maxsize (a declaration, as RabbitMQ's: every program may call
 * new; CONC_EINVAL when it exists with another maxsize, or the name holds
 * keys of another kind); conc_queue_open() attaches and fails with
 * CONC_EINVAL when there is no such queue.
 *   Delivery is at least once.  A message taken by get stays on the
 * server, in a processing list of the taker, until it is acknowledged: by
 * conc_queue_task_done(), by the next get of the same thread on the same
 * handle, or by conc_queue_free().  A consumer that dies first (SIGKILL,
 * a lost host) gives its messages back: once its lease runs out (.lease,
 * 30 s by default) the next get of any consumer returns them to the head
 * of the queue.  The lease is renewed while the process lives, by two
 * background threads per process (started at the first network handle;
 * one round trip per handle every lease/3; one renews while the other
 * watches the clock, and another starts while a renewal waits for a slow
 * or frozen server, so that it holds up no other handle's renewal), so a
 * consumer may work on a
 * message for as long as it likes; a process stopped (SIGSTOP, swapped
 * out, a frozen VM) for longer than its lease loses its messages to
 * others, and they run twice.  So consumers must tolerate seeing a
 * message again: a killed consumer duplicates at most the messages it
 * held.  .at_most_once trades that for speed: get removes the message at
 * once (a consumer killed while holding it, or a connection lost during
 * a get, loses it).
 *   Every function keeps its meaning; what differs is stated per
 * function below.  Errors beyond the shared-memory ones: CONC_ENET (the
 * server cannot be reached or the connection broke; the message names
 * host:port), CONC_EAUTH (wrong or missing password, or an ACL user the
 * server refuses a command or key libconc uses), CONC_ETIMEDOUT (the
 * server did not answer in time: frozen, overloaded or far away),
 * CONC_ECORRUPT (the server's data under the queue's keys is not what
 * libconc wrote).  Each call connects again if it must (after a server
 * restart, say), within its own timeout.  A put that failed with
 * CONC_ENET or CONC_ETIMEDOUT may still have landed: its command may have
 * reached the server before the connection broke.  A put that returned 0
 * survives a restart of a server that persists (appendonly yes).  The
 * server must keep libconc's keys: under a maxmemory-policy that evicts
 * (allkeys-* or volatile-*), a full Redis drops queued messages, dict
 * entries or a held lock's key without a word (two processes may then
 * hold one lock); with noeviction, Redis's default, a full server
 * answers CONC_ENOMEM instead: to puts, and to the first get of a
 * consumer that starts while it is full (registering it is a write;
 * consumers already running drain the queue and free the memory).
 *   Timeouts are end to end: connecting, sending and the wait on the
 * server share the call's timeout (a round trip begun as it runs out
 * still gets 0.25 s to be answered), except that the client always waits
 * for a blocking command it started to end on the server (up to 1 s past
 * the timeout): giving up earlier could let the server hand a message to
 * a connection nobody reads.  So a get on a frozen server returns
 * CONC_ETIMEDOUT at most 1 s after its timeout.  timeout 0 means "do not
 * wait for a message or for room": the one round trip it makes is
 * bounded by .net_timeout.  CONC_FOREVER waits in slices of at most 2 s
 * on the server, so a dead connection is noticed within about 3 s.
 *   Threads and fork: every handle works from any number of threads (a
 * call takes a connection of the handle's own, opening one when all are
 * busy); a forked child that uses an inherited handle opens connections
 * of its own, and never touches its parent's sockets or deliveries.
 *
 * On RabbitMQ (amqp://).  The queue served by a RabbitMQ broker (3.10 or
 * later; libconc built with rabbitmq-c, else CONC_EINVAL at creation):
 *   conc_queue_new(&q, &(conc_queue_opts){
 *       .url = "amqp://user:pw@10.0.0.7:5672/%2f", .name = "jobs" });
 *   conc_queue_open(&q, "amqp://user:pw@10.0.0.7/%2f/jobs");
 * URLs: amqp://[user[:password]@]host[:port][/vhost[/name]][?prefetch=N]
 * (user and password guest by default, port 5672, vhost "/" written %2f;
 * prefetch, 1..65535, default 64, is how many deliveries the broker may
 * send a consumer ahead of its gets).  The broker holds a durable queue
 * NAME (x-overflow reject-publish, x-max-length = maxsize when bounded), a
 * durable direct exchange conc.q.NAME bound to it, and, once closed, an
 * empty queue conc.closed.NAME.  new declares them (CONC_EINVAL when NAME
 * exists with another maxsize); open requires NAME to exist and learns its
 * maxsize from the broker.  NAME may not start "amq." (RabbitMQ's own)
 * nor "conc.closed." (such a queue would make another one look closed):
 * CONC_EINVAL from new and open.  .lease must be left out (the broker,
 * not a lease, gives a dead consumer's messages back).  Per function:
 *   put, put_many: persistent messages published with mandatory set, one
 * publisher-confirm wait per batch of up to 256; a message the broker
 * returns as unroutable (the queue was deleted) is CONC_EINVAL, never a
 * silent loss.  A full queue refuses a publish (basic.nack): put
 * publishes it again every 1 to 50 ms until its timeout, then CONC_EFULL;
 * the confirm wait of each try lasts at least 1 s (so timeout 0.2 on a
 * full queue may take 1 s to say so).  maxsize counts the messages
 * waiting on the broker: those sent ahead into a consumer's prefetch
 * window are not counted.  When a batch meets a full queue, a later
 * message of it may get in while an earlier one waits (*done counts the
 * prefix; the rest may hold some that went in).  CONC_ETOOBIG over 128
 * MiB, or over the broker's max_message_size (its refusal, in its words;
 * the handle then refuses such a message before sending it).
 *   get, get_into, get_many: deliveries with manual acknowledgement; the
 * next get of the same thread on the handle, or free, acknowledges what
 * the previous one took (one basic.ack multiple, no round trip).  A
 * consumer killed at any instant loses nothing: the broker requeues its
 * unacknowledged deliveries when its connection drops, with the
 * redelivered flag conc_queue_redelivered() reports.  A handle whose
 * thread stops calling get (a worker busy with the message it took, or a
 * thread that ended) holds up to prefetch messages back from the others
 * until its next get or free: for a work queue whose consumers take long
 * over each message, ?prefetch=1 lets the others take the rest at once
 * (RabbitMQ's fair dispatch), at a round trip per message.  A get on a frozen broker returns
 * CONC_EEMPTY at its timeout (nothing came).  A get that must connect
 * (its thread's first, or the first after a lost connection) tries once:
 * CONC_ENET when the broker refuses, CONC_ETIMEDOUT when it does not
 * answer within the timeout (.net_timeout for 0 and CONC_FOREVER).
 *   qsize, empty, full: a passive declaration (one round trip); messages
 * delivered and not yet acknowledged are not counted.
 *   task_done: counts one of the messages this thread's gets handed out
 * (CONC_EINVAL when called more times than that, as Python's
 * JoinableQueue for a single consumer) and acknowledges the oldest
 * delivery this thread still holds, if a later get did not acknowledge
 * it already; join returns CONC_EINVAL: AMQP keeps no count of tasks
 * done across consumers.
 *   close: declares conc.closed.NAME, deletes the exchange (puts fail
 * with CONC_ECLOSED from then on), and queues a marker behind every
 * message already in; every getter on every host drains the queue and
 * then meets the marker (CONC_ECLOSED), which goes back for the next.
 *   .at_most_once: messages are transient and published without confirms
 * on an unbounded queue (a put that returned 0 is lost if the broker
 * dies before writing it, and the first put after a close may return 0
 * and be dropped; a message over the broker's max_message_size returns 0
 * and is dropped, with the puts that follow it until the broker's
 * refusal is read, at the next call or within moments; a batch cut short
 * counts in *done the messages it wrote whole; a normal
 * conc_queue_free loses none: it waits for the
 * broker to take them in, see there); a get hands its deliveries over
 * only once the broker has taken their acknowledgement (a round trip per
 * get or get_many, within the get's timeout but 1 s at least): a
 * connection that breaks or stalls during the get fails it (CONC_ENET,
 * CONC_ETIMEDOUT; nothing handed over, *len 0 for get_into), and its
 * messages are lost or go to another consumer, never to both; one found
 * already ended before the acknowledgement was sent gives them back and
 * the get goes on over a new connection.  A message too long for
 * get_into's buffer stays the broker's until a get hands it over.
 *   Liveness: heartbeats are off (rabbitmq-c serves them only inside its
 * calls, so a consumer computing longer than two heartbeats would be cut
 * off): a consumer may work on a message for as long as the broker's
 * consumer_timeout (30 minutes by default).  A dead process is seen at
 * once (its sockets close); a lost host by TCP keepalive.  Every call is
 * bounded by its timeout (calls without one by .net_timeout, 10 s): a
 * frozen broker gives CONC_ETIMEDOUT (a get waiting for a delivery asks
 * the broker every 2 s whether it is alive, one round trip bounded by
 * .net_timeout, so a get under CONC_FOREVER too; shorter gets ask once
 * their connection has been quiet for 2 s across calls, up to 1 s past
 * their timeout, so a stalled connection is never "empty" for ever),
 * and the call after a broker restart reconnects and declares again; a
 * put that returned 0
 * survives the restart.  A put to a broker that stopped reading (a
 * memory or disk alarm blocks publishers) gives CONC_ETIMEDOUT too,
 * however long the message: libconc writes its frames itself, and ends a
 * put whose socket took no bytes for .net_timeout, or that has not
 * written its messages by its timeout (at least 1 s; 0 and CONC_FOREVER
 * have only the first bound).  Errors: CONC_ENET (unreachable,
 * connection lost), CONC_EAUTH (wrong user or password), CONC_EINVAL (no
 * such vhost, or no access to it), CONC_ETIMEDOUT.  Threads and fork: each
 * thread using a handle has connections of its own (up to three: publish,
 * consume, queries), kept until the handle is freed; a forked child opens
 * its own and leaves its parent's deliveries alone.
 */
#ifndef CONC_QUEUE_H
#define CONC_QUEUE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_queue conc_queue;

typedef struct conc_queue_opts {
    /* At most this many messages queued; a put on a full queue blocks
     * (Python's maxsize).  0: no bound in items. */
    size_t maxsize;
    /* Room for message bytes: the queue holds at most this many bytes of
     * messages plus 16 bytes of header per message (each rounded up to
     * 16); one message of exactly capacity_bytes always fits into an empty
     * queue, a longer one is CONC_ETOOBIG.  0: CONC_QUEUE_DEFAULT_CAPACITY.
     * The memory is reserved, not touched: pages are used as the messages
     * in flight need them (a named queue's are allocated in /dev/shm as
     * it grows, in 64 KiB steps); a queue of at most 1 MiB may touch all
     * of its ring under streaming traffic (it is faster so, and a named
     * one allocates it all when made).
     * At most CONC_QUEUE_MAX_CAPACITY. */
    size_t capacity_bytes;
    /* NULL: an anonymous queue, shared with forked children.  Otherwise
     * the name of a new POSIX shared memory object ("jobs" or "/jobs",
     * at most 250 bytes after the '/', no other '/', not "." or "..");
     * CONC_ESYS with errno EEXIST if it already exists. */
    const char *name;
    /* A queue on a server ("On a server" above): the server's URL, and
     * .name is the queue's name there (or the URL's last segment).
     * NULL: shared memory, which has no use for .lease, .at_most_once
     * and .net_timeout and refuses them (CONC_EINVAL). */
    const char *url;
    /* On a server: how long a consumer's deliveries stay its own without
     * a renewal, CONC_TIMEOUT(seconds) from 0.1 s to 1e6 s; its process
     * renews it every lease/3 while it lives.  Left out: the lease the
     * queue was made with (30 s for a queue made without one).
     * CONC_TIMEOUT(0) or CONC_FOREVER: CONC_EINVAL (a lease must end, or
     * a dead consumer's messages would never come back).  Shorter leases
     * return a dead consumer's messages sooner and cost a renewal round
     * trip more often. */
    conc_timeout lease;
    /* On a server: deliver at most once (a get removes the message from
     * the server at once).  Faster; a consumer that dies holding a
     * message, or a connection lost during a get, loses it. */
    bool at_most_once;
    /* On a server: the bound on calls that take no timeout (new, open,
     * qsize, empty, full, closed, task_done, close, free's
     * acknowledgements) and on each round trip of a call given timeout 0
     * or CONC_FOREVER.  Left out: 10 s. */
    conc_timeout net_timeout;
    /* Shared memory, for many producers and consumers on many cores: the
     * number of rings ("lanes", 2 to CONC_QUEUE_MAX_LANES) the queue is
     * made of; 0 or 1: one ring.  A producer thread always puts into the
     * same lane: at its first put (or full()) through a handle it takes
     * the queue's next lane in turn, whatever process it is in, so the
     * first n producers on n lanes have one each (the turn never goes
     * back: a producer that replaces one, a thread that called full(),
     * or another handle's thread takes the next lane in turn, which a
     * live producer may be using).  Threads on different lanes
     * share no lock and no line a put writes (only the getters' wake-up
     * word, which puts read), and consumers take from whichever
     * lanes have messages, staying on one while it has some (for about
     * 64 messages in a row, so that no lane starves).
     * What changes with lanes: order is FIFO per producer thread, not
     * across threads (multiprocessing.Queue orders per process: with
     * lanes, two threads of one process, or a parent and the child it
     * forked after a put, may be delivered in either order; so may one
     * thread's puts through two handles of one named queue); each lane
     * holds up to capacity_bytes, so the queue reserves lanes x
     * capacity_bytes of address space; maxsize must be 0 (CONC_EINVAL
     * otherwise: a bound in messages needs one count every producer
     * shares); full() and a put's CONC_EFULL are about the calling
     * thread's own lane; a get_many batch comes from one lane, so it may
     * return fewer than n while other lanes hold more; a message left at
     * the head by CONC_ETOOBIG is at its lane's head.  Everything else
     * (task_done, join, close, readers gone, crash survival, open by
     * name) works across all lanes.  A get with timeout 0 waits at most
     * 10 ms for a lane another consumer is taking from, and says
     * CONC_EEMPTY if that consumer still holds it (a one-ring queue's
     * waits up to a second).  Pick as many lanes as producer threads:
     * more producers than lanes share lanes in turn (correct, but those
     * producers share a lane's lock).  A process has 256 producer places:
     * a thread's first put into (or full() on) any queue of lanes takes
     * one, which it holds until it ends (a place counts as held while its
     * thread's id names a thread of the process); a thread that finds all
     * 256 held puts into lane (its thread id modulo lanes) for its whole
     * life instead.  Not on a server (CONC_EINVAL). */
    unsigned lanes;
} conc_queue_opts;

#define CONC_QUEUE_DEFAULT_CAPACITY ((size_t)64 << 20) /* 64 MiB */
#define CONC_QUEUE_MAX_CAPACITY ((size_t)0xFFFFFF00u)  /* just under 4 GiB */
#define CONC_QUEUE_MAX_LANES 64u

/* conc_queue_new - a new, empty queue.  opts may be NULL (unbounded in
 * items, default capacity, anonymous).  0; CONC_EINVAL (NULL out,
 * capacity over the maximum, bad name, lanes over CONC_QUEUE_MAX_LANES,
 * lanes > 1 with a maxsize or on a server); CONC_ENOMEM; CONC_ESYS (a shared
 * memory call failed, errno kept: EEXIST for a name in use).
 * On a server (.url): makes the queue or attaches to it (see "On a
 * server"), one round trip bounded by .net_timeout; also CONC_ENET,
 * CONC_EAUTH, CONC_ETIMEDOUT, and CONC_EINVAL for a bad URL or name, a
 * capacity_bytes (meaningless there), a lease outside [0.1 s, 1e6 s],
 * an existing queue with another maxsize, a backend not built. */
CONC_API int conc_queue_new(conc_queue **out, const conc_queue_opts *opts);

/* conc_queue_open - a handle on the named queue another process created;
 * waits (up to a second in all) for a creator still making it.  0;
 * CONC_EINVAL (NULL argument, bad name, not a libconc queue - a segment
 * too small, another magic - or another layout version); CONC_ECORRUPT
 * (a queue header whose fields are out of range or inconsistent with
 * each other or with the segment's size: scribbled or crafted); CONC_EPERM
 * (another user's segment, or one others may access: see Trust);
 * CONC_ENOMEM; CONC_ESYS (errno ENOENT: no such queue).  Free the handle
 * with conc_queue_free(); it never unlinks.
 * name may be a URL naming a queue on a server ("redis://host:6379/0/jobs",
 * "unix:///run/redis.sock?db=0&name=jobs"): the handle takes the lease and
 * delivery mode the queue was made with; CONC_EINVAL when there is no
 * such queue there; otherwise as conc_queue_new. */
CONC_API int conc_queue_open(conc_queue **out, const char *name);

/* conc_queue_put - appends a copy of len bytes at data (NULL is allowed
 * when len is 0).  Blocks while the queue is full (maxsize items, or not
 * enough free bytes) up to timeout.  0; CONC_EFULL (still full when the
 * timeout expired; timeout 0 never waits for room; also when another
 * live process kept the producers' lock past the timeout, at least a
 * second - one that is stopped, or hostile; a holder only copies, so a
 * put with a timeout under a second, 0 included, still waits that second
 * for one that was preempted mid-copy); CONC_ECLOSED (the
 * queue is closed, also for putters blocked when it was closed; or, for
 * a put blocked on a full queue, every process that ever read from the
 * queue has exited, so nothing would make room - noticed within 0.1 s, at
 * the end of a sleep slice; the queue stays open, and a put after a new
 * reader came works); CONC_ETOOBIG (len > capacity_bytes, at once);
 * CONC_ENOMEM (a named queue whose ring must grow into pages /dev/shm has
 * no room for: nothing is put, and the queue works on within the pages
 * it has); CONC_ECORRUPT (the queue's shared memory failed a check: see
 * Trust); CONC_EINVAL (NULL q, NULL data with len > 0, bad timeout).  No
 * allocation on the heap.  Every error has a detail (conc_errdetail).
 * On a server: one round trip; a full queue is asked again every 1 to 50
 * ms until the timeout (Redis cannot block a client until a list
 * shrinks); readers are not registered (a dead consumer's messages come
 * back by its lease), so a put on a full queue waits for room up to its
 * timeout; CONC_ETOOBIG over 512 MiB.  A put that failed with CONC_ENET
 * or CONC_ETIMEDOUT may still have landed. */
CONC_API int conc_queue_put(conc_queue *q, const void *data, size_t len,
                            double timeout);

/* conc_queue_get - removes the oldest message into *msg (heap bytes the
 * caller frees with conc_msg_free(); data NULL for a 0-byte message).
 * Blocks while empty up to timeout.  0; CONC_EEMPTY (still empty when the
 * timeout expired; timeout 0 never waits; also when another live process
 * kept the consumers' lock past the timeout, at least a second);
 * CONC_ECLOSED (closed and drained); CONC_ENOMEM (message left in place);
 * CONC_ECORRUPT (the queue's shared memory failed a check: see Trust);
 * CONC_EINVAL (NULL q or msg, bad timeout).  *msg is zeroed on every
 * error; every error has a detail.
 * On a server, at least once: one round trip, which also acknowledges
 * what this thread's previous get on this handle took; the message stays
 * leased to this consumer until the next get, task_done or free.  A get
 * that failed (CONC_ENET, CONC_ETIMEDOUT) may have had a message moved
 * for it: the next get gives it back to the head of the queue first, so
 * nothing is lost (it may then be delivered twice).  CONC_ECORRUPT when
 * the element at the head was not written by libconc (it is dropped). */
CONC_API int conc_queue_get(conc_queue *q, conc_msg *msg, double timeout);

/* conc_queue_get_into - as conc_queue_get, into buf (cap bytes); *len gets
 * the message's length.  CONC_ETOOBIG when cap is smaller than the
 * message: the message stays at the head of the queue and *len says how
 * much room it needs.  CONC_EINVAL also for NULL len, or NULL buf with
 * cap > 0.  No allocation.
 * On a server the message that did not fit goes back to the head when
 * this thread next calls get on this handle (which then takes it again,
 * unless another consumer is quicker), or at free. */
CONC_API int conc_queue_get_into(conc_queue *q, void *buf, size_t cap,
                                 size_t *len, double timeout);

/* conc_queue_put_many - appends copies of msgs[0..n), in order, as one
 * batch: each lock hold writes as many as fit and publishes them at once
 * (one wake-up of sleeping getters per hold, not per message).  Waits for
 * room as conc_queue_put does, up to timeout for the whole batch; when
 * the timeout expires (or at once, with timeout 0) it stops with what fit.
 * *done (done may be NULL) is how many went in: always msgs[0..*done), in
 * order, never a later one before an earlier one.  0 (*done == n);
 * CONC_EFULL (the timeout expired with *done < n); CONC_ECLOSED (closed
 * before or during the batch: *done went in before); CONC_ECORRUPT; the
 * batch is checked before anything goes in: CONC_ETOOBIG (a message over
 * capacity_bytes) and CONC_EINVAL (NULL q, NULL msgs with n > 0, NULL
 * data with a length, bad timeout) put nothing.  n 0 is 0.  Getters may
 * take the first messages of a batch before its last ones are written.
 * No allocation.  On a server: one round trip carries up to 16384
 * messages (a bounded queue: 1024, so that the bound is checked as they
 * go in); a message over 512 MiB is CONC_ETOOBIG before anything is
 * sent (it allocates: the commands are built in memory); a full
 * queue is asked again as conc_queue_put does; a batch that failed with
 * CONC_ENET or CONC_ETIMEDOUT may have landed in part or whole. */
CONC_API int conc_queue_put_many(conc_queue *q, const conc_msg *msgs,
                                 size_t n, size_t *done, double timeout);

/* conc_queue_get_many - waits (up to timeout) for the first message as
 * conc_queue_get does, then takes the messages that are queued, up to n,
 * in one lock hold: msgs[0..*got) (got may be NULL) in queue order, each
 * heap bytes the caller frees with conc_msg_free(); msgs[*got..n) are
 * zeroed.  0 (*got >= 1); CONC_EEMPTY, CONC_ECLOSED, CONC_ENOMEM,
 * CONC_ECORRUPT as conc_queue_get, with *got 0 (an error after the first
 * message ends the batch early, returns 0, and is met again by the next
 * call; a message whose copy could not be allocated stays queued);
 * CONC_EINVAL (NULL q or msgs, n 0, bad timeout).  On a server: one
 * round trip taking at most 1024, each of the messages a delivery as a
 * get's is (acknowledged together by the next get, or one by one by
 * task_done); at most once, they are removed from the server at once. */
CONC_API int conc_queue_get_many(conc_queue *q, conc_msg *msgs, size_t n,
                                 size_t *got, double timeout);

/* conc_queue_qsize - messages queued now (approximate while others put
 * and get, as in Python; never more than maxsize, nor one per 16 bytes of
 * capacity, whatever a peer wrote); 0 for NULL.  On a server: one round trip
 * (bounded by .net_timeout); messages delivered and not yet acknowledged
 * are not counted; 0 when the server cannot be asked (conc_errdetail()
 * says why). */
CONC_API size_t conc_queue_qsize(conc_queue *q);
/* conc_queue_empty - qsize() == 0; true for NULL (and, on a server, when
 * it cannot be asked). */
CONC_API bool conc_queue_empty(conc_queue *q);
/* conc_queue_full - true when maxsize > 0 and qsize() >= maxsize, or when
 * not even a 0-byte message has room; false for NULL (and, on a server,
 * when it cannot be asked). */
CONC_API bool conc_queue_full(conc_queue *q);

/* conc_queue_task_done - one put message has been processed (Python's
 * JoinableQueue.task_done; every queue has it).  0; CONC_EINVAL when
 * called more times than messages were put, or NULL q.
 * On a server: one round trip that also acknowledges the oldest message
 * this thread's last get took and has not yet task_done'd.  If that
 * message was given to another consumer meanwhile (this process was
 * stopped past its lease), nothing is counted: the redelivered copy's
 * task_done will be.  So call task_done before the next get, as Python
 * code does, for join to count exactly when messages are redelivered.  A
 * task_done that failed with CONC_ENET or CONC_ETIMEDOUT may have
 * counted. */
CONC_API int conc_queue_task_done(conc_queue *q);

/* conc_queue_join - blocks until every message put has been task_done()'d.
 * 0; CONC_ETIMEDOUT; CONC_EINVAL (NULL q, bad timeout).  On a server it
 * asks the server's count every 1 to 50 ms until the timeout. */
CONC_API int conc_queue_join(conc_queue *q, double timeout);

/* conc_queue_close - closes the queue for every handle in every process
 * (Python 3.13's shutdown(), not mp.Queue.close): puts fail with
 * CONC_ECLOSED at once, blocked putters wake with CONC_ECLOSED, gets
 * drain what is queued and then return CONC_ECLOSED, and blocked getters
 * wake.  Closing twice is harmless.  0; CONC_EINVAL for NULL;
 * CONC_ETIMEDOUT, closing nothing, when another live process kept the
 * producers' lock for a whole second (a stopped or hostile one).
 * On a server: one round trip; getters blocked on every host wake at
 * once, putters waiting for room at their next ask (at most 50 ms).  A
 * closed queue stays closed on the server (there is no reopen): a later
 * conc_queue_new of the same name attaches to it closed.  Messages that
 * come back from a dead consumer's lease after close are still drained
 * before CONC_ECLOSED. */
CONC_API int conc_queue_close(conc_queue *q);

/* conc_queue_closed - whether conc_queue_close() was called; false for
 * NULL.  On a server: one round trip; false when the server cannot be
 * asked. */
CONC_API bool conc_queue_closed(conc_queue *q);

/* conc_queue_redelivered - whether a message the calling thread's last
 * get, get_into or get_many on q took had been delivered before (a
 * consumer that held it died, or gave it back): a hint that its work may
 * already have been done once.  Only RabbitMQ (amqp://) reports it;
 * shared memory never redelivers, and on Redis the answer is always
 * false.  No round trip, no error; false for NULL. */
CONC_API bool conc_queue_redelivered(conc_queue *q);

/* conc_queue_free - releases this handle (unmaps this process's view; the
 * creating process also unlinks the name, see above).  Other handles and
 * processes are unaffected.  NULL is a no-op.  Must not race with calls
 * on the same handle.
 * On a server: acknowledges what this process's consumers on the handle
 * were delivered, gives back what a failed get may have left, and closes
 * its connections (one round trip, at most 2 s; what it could not do, the
 * leases undo).  The queue itself stays on the server.  On RabbitMQ with
 * .at_most_once, a thread that put without confirms has its connection
 * closed only once the broker answers the close, which proves it has read
 * every put before it: free waits for that answer up to 60 s (or
 * .net_timeout when longer) while a loaded broker catches up; when none
 * comes in that time (a frozen or lost broker) the puts it had not read
 * are lost, and conc_errdetail() after free says so. */
CONC_API void conc_queue_free(conc_queue *q);

#ifdef __cplusplus
}
#endif
#endif
