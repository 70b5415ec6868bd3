/* os.h - the platform contract.  Everything Linux-specific (futex, raw
 * syscalls, prctl, /proc, mmap of shared memory) is behind these calls and
 * implemented in os_linux.c; no other file has an #ifdef __linux__.
 *
 * The seam also makes fault loops possible: tests arm conc__fault_arm(n)
 * and the n-th allocation or OS call made through this layer fails, so
 * every failure path can be driven and checked for leaks.
 */
#ifndef CONC_OS_H
#define CONC_OS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* ---- deadlines ---------------------------------------------------------
 * A call turns its double timeout into one CLOCK_MONOTONIC deadline on
 * entry; every retry waits only for what is left of it. */
typedef struct conc__deadline {
    struct timespec at; /* absolute CLOCK_MONOTONIC; unused when forever */
    bool forever;
    bool once;          /* timeout 0: try once, never block */
} conc__deadline;

/* 0, or CONC_EINVAL for NaN, +inf is forever, negative other than
 * CONC_FOREVER. */
int conc__deadline_init(conc__deadline *dl, double timeout);
bool conc__deadline_passed(const conc__deadline *dl);
/* Seconds left (0 when passed; a huge value when forever). */
double conc__deadline_left(const conc__deadline *dl);
/* Monotonic now in nanoseconds. */
uint64_t conc__now_ns(void);

/* ---- futex --------------------------------------------------------------
 * shared: the word may be in memory shared between processes (every
 * libconc object is, so callers pass true unless the word is private).
 * wait returns 0 (woken, or the word differed: recheck), CONC_ETIMEDOUT
 * when the deadline passed.  EINTR is reported as 0: the caller rechecks
 * its condition and waits again with the same deadline, so a signal
 * neither ends the wait early nor restarts its clock. */
int conc__os_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                        const conc__deadline *dl, bool shared);
/* Wakes up to n sleepers on word (INT32_MAX: all).  Returns how many. */
int conc__os_futex_wake(_Atomic uint32_t *word, int n, bool shared);

/* ---- memory ------------------------------------------------------------- */
/* Anonymous shared memory (MAP_SHARED|MAP_ANONYMOUS), zero-filled; it stays
 * shared with every child forked after this call.  NULL on failure (errno
 * kept). */
void *conc__os_shared_alloc(size_t size);
void conc__os_shared_free(void *p, size_t size);
/* Files that back shared memory (a memfd, a /dev/shm object), each call
 * through the fault seam (a hit fails with -1 and errno EIO, or ENOMEM
 * for a mapping).
 * conc__os_memfd - a new anonymous memory file of size 0 (memfd_create,
 * close-on-exec): shared with children forked later through the
 * inherited descriptor; gone when the last descriptor and mapping go.
 * conc__os_file_reserve - makes the file at least to bytes long with the
 * bytes [from, to) backed by memory now (fallocate), so touching them can
 * never raise SIGBUS later for want of room; where the file system cannot
 * allocate ahead (EOPNOTSUPP) it only sets the length (ftruncate).  -1
 * with errno: ENOSPC or ENOMEM when there is no room.
 * conc__os_file_size - the file's length (fstat).
 * conc__os_map_file - maps size bytes of fd, shared, read-write, from
 * offset 0; the length may exceed the file's: pages past its end raise
 * SIGBUS when touched, so callers touch only what the file holds.  NULL
 * with errno on failure.
 * conc__os_unmap / conc__os_close - munmap / close; NULL / -1 are no-ops. */
int conc__os_memfd(const char *name);
int conc__os_file_reserve(int fd, uint64_t from, uint64_t to);
int conc__os_file_size(int fd, uint64_t *size);
void *conc__os_map_file(int fd, size_t size);
void conc__os_unmap(void *p, size_t size);
void conc__os_close(int fd);
/* Private scratch memory (zero-filled, not shared with children), for a
 * large temporary table that must not come from malloc: NULL with errno
 * on failure (fault seam included).  conc__os_scratch_free releases it;
 * NULL is a no-op. */
void *conc__os_scratch_alloc(size_t size);
void conc__os_scratch_free(void *p, size_t size);
/* malloc/calloc/strdup through the fault seam. */
void *conc__malloc(size_t size);
void *conc__calloc(size_t n, size_t size);
void *conc__realloc(void *p, size_t size);
char *conc__strdup(const char *s);

/* ---- processes and threads --------------------------------------------- */
pid_t conc__os_gettid(void);
/* The kernel start time of pid (clock ticks since boot, /proc/pid/stat
 * field 22), or 0 when there is no such process.  pid + start time names a
 * process for good: a reused pid has a later start time. */
uint64_t conc__os_proc_starttime(pid_t pid);
/* True while the process (pid, starttime) exists and is not a zombie.
 * starttime 0 checks the pid alone.  When /proc shows nothing of pid
 * (another user's process under hidepid, /proc not mounted) the answer
 * is kill(pid, 0)'s: false only when no such task exists.  So a live
 * process is never judged dead; an unseen zombie counts as alive until it
 * is reaped. */
bool conc__os_proc_alive(pid_t pid, uint64_t starttime);
/* Same, for a thread id of any process: the thread is gone once its
 * /proc/<tid> entry is. */
bool conc__os_thread_alive(pid_t tid, uint64_t starttime);
/* Sets this thread's kernel name (ps -o comm), cut to 15 bytes. */
void conc__os_set_name(const char *name);
/* Asks for signal sig when the parent thread dies (PR_SET_PDEATHSIG). */
int conc__os_set_pdeathsig(int sig);
long conc__os_cpu_count(void);
/* fork() through the fault seam (a hit fails with -1, errno EAGAIN). */
pid_t conc__os_fork(void);
/* A pidfd (O_CLOEXEC) for child pid, readable once it has ended; -1 with
 * errno when the kernel has none (callers fall back to polling). */
int conc__os_pidfd_open(pid_t pid);

/* ---- randomness ---------------------------------------------------------
 * The one source of random bytes in libconc: the kernel's CSPRNG
 * (getrandom(2)), which needs no descriptor and blocks only before the
 * kernel's pool is first seeded at boot.  Fills all len bytes and returns
 * 0, or -1 with errno (a fault-seam hit gives EIO).  Queue keys, hash
 * seeds, fresh segment names and authentication nonces all come from here,
 * so none of them can be guessed from the clock or the pid. */
int conc__os_random(void *buf, size_t len);
/* A random 64-bit value from conc__os_random, for callers that have no
 * error path (a segment's key); falls back to a clock-and-address mix only
 * if the kernel refuses (it does not on Linux >= 3.17). */
uint64_t conc__os_random64(void);

/* ---- the fault seam ------------------------------------------------------
 * conc__fault_arm(n): the n-th (1-based) call through the seam from now on
 * fails (allocation: NULL with ENOMEM; OS call: -1 with EIO unless stated);
 * 0 disarms.  conc__fault_hit() is what each seam call asks. */
void conc__fault_arm(long n);
bool conc__fault_hit(void);
bool conc__fault_fired(void);

#endif
