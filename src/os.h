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

#include <pthread.h>
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
/* Takes a process-private mutex, waiting no later than the deadline: 0,
 * or CONC_ETIMEDOUT with no detail set (the caller says what waited). */
int conc__mutex_lock_until(pthread_mutex_t *m, const conc__deadline *dl);

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
/* Unmaps a shared mapping, anonymous or of a segment (munmap).  Not on
 * the seam: it is only called to clean up, where no caller has a failure
 * path, and a faulted unmap would only leak. */
void conc__os_shared_free(void *p, size_t size);
/* Files that back growable shared memory (the dict: a memfd, or a
 * /dev/shm object from the named-segment layer), each call through the
 * fault seam (a hit fails with -1 and errno EIO).
 * conc__os_memfd - a new anonymous memory file of size 0 (memfd_create,
 * close-on-exec): shared with children forked later through the
 * inherited descriptor; gone when the last descriptor and mapping go.
 * conc__os_file_reserve - makes the file at least to bytes long with the
 * bytes [from, to) backed by memory now (fallocate), so touching them can
 * never raise SIGBUS later for want of room; where the file system cannot
 * allocate ahead (EOPNOTSUPP) it only sets the length (ftruncate).  -1
 * with errno: ENOSPC or ENOMEM when there is no room.
 * A file is mapped with conc__os_map_shared (below; the length may exceed
 * the file's: pages past its end raise SIGBUS when touched, so callers
 * touch only what the file holds), sized with conc__os_fstat and unmapped
 * with conc__os_shared_free. */
int conc__os_memfd(const char *name);
int conc__os_file_reserve(int fd, uint64_t from, uint64_t to);
/* A private, lazily committed, zero-filled mapping of size bytes, not
 * shared with children (MAP_NORESERVE): a thread's stack, or a large
 * scratch table that must not come from malloc (the dict's repair
 * bitmap).  NULL with errno on failure (the seam: ENOMEM).
 * conc__os_private_free unmaps it (not on the seam); NULL is a no-op. */
void *conc__os_private_alloc(size_t size);
void conc__os_private_free(void *p, size_t size);

/* ---- named shared memory (POSIX shm objects, /dev/shm) ------------------
 * The calls of shm.c, the one named-segment layer.  Those whose failure a
 * caller reports go through the fault seam (a hit: -1 with EIO, or NULL
 * with ENOMEM for the mapping); shm_unlink is only called to clean up or
 * by an explicit unlink whose ENOENT the tests reach for real, so it is
 * not on the seam.  Descriptors are O_CLOEXEC. */
typedef struct conc__os_file {
    uint64_t size;  /* st_size */
    uint64_t nlink; /* 0 once the name was unlinked */
    uid_t uid;      /* the owner */
    unsigned mode;  /* permission bits, st_mode & 07777 */
} conc__os_file;
/* shm_open(name, O_RDWR, plus O_CREAT|O_EXCL with mode when create): an
 * fd, or -1 with errno. */
int conc__os_shm_open(const char *name, bool create, unsigned mode);
int conc__os_shm_unlink(const char *name);
/* ftruncate, fchmod, fstat: 0 or -1 with errno. */
int conc__os_ftruncate(int fd, uint64_t size);
int conc__os_fchmod(int fd, unsigned mode);
int conc__os_fstat(int fd, conc__os_file *st);
/* mmap(size bytes of fd, read-write, MAP_SHARED): the mapping, or NULL
 * with errno. */
void *conc__os_map_shared(int fd, size_t size);
/* The effective uid (never fails). */
uid_t conc__os_geteuid(void);
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
/* Whether tid names a thread of the calling process now: a signal-0
 * tgkill, no /proc.  A thread that ended but whose id a new thread of
 * this process has taken counts as alive, as does a main thread that
 * left by pthread_exit while others run (a zombie). */
bool conc__os_own_thread_alive(pid_t tid);
/* Sets this thread's kernel name (ps -o comm), cut to 15 bytes. */
void conc__os_set_name(const char *name);
/* Asks for signal sig when the parent thread dies (PR_SET_PDEATHSIG). */
int conc__os_set_pdeathsig(int sig);
long conc__os_cpu_count(void);
/* _exit(code) for a forked child: ends the process without running the
 * parent's exit handlers.  In a coverage build (CONC_COVERAGE) it first
 * writes the child's gcov counts, which _exit would drop. */
_Noreturn void conc__os_exit_child(int code);
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

/* ---- sockets and descriptors (os_linux_net.c) ---------------------------
 * The system calls of the same names, for pipe.c and listener.c, each
 * through the fault seam: a hit fails the call with -1 and errno EIO
 * (EAGAIN for accept4, which a caller would otherwise retry), so fault
 * loops reach every failure path of the pipes, the listener and the
 * client.  Otherwise each behaves exactly as its system call (errno
 * kept, EINTR included: callers retry).  close(2), unlink(2) and rmdir(2)
 * are not here: they run only where a failure changes nothing the caller
 * could act on (releasing a descriptor, removing a file on the way out). */
struct epoll_event;
struct msghdr;
struct pollfd;
struct sockaddr;
struct stat;
int conc__os_socket(int domain, int type, int protocol);
int conc__os_socketpair(int domain, int type, int protocol, int sv[2]);
int conc__os_bind(int fd, const struct sockaddr *addr, unsigned len);
int conc__os_listen(int fd, int backlog);
/* accept4(2); *len in and out as there (NULL addr and len allowed). */
int conc__os_accept4(int fd, struct sockaddr *addr, unsigned *len,
                     int flags);
int conc__os_connect(int fd, const struct sockaddr *addr, unsigned len);
int conc__os_shutdown(int fd, int how);
int conc__os_setsockopt(int fd, int level, int name, const void *val,
                        unsigned len);
int conc__os_getsockopt(int fd, int level, int name, void *val,
                        unsigned *len);
int conc__os_getsockname(int fd, struct sockaddr *addr, unsigned *len);
ssize_t conc__os_send(int fd, const void *buf, size_t len, int flags);
ssize_t conc__os_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t conc__os_recv(int fd, void *buf, size_t len, int flags);
/* ppoll(2) without a signal mask; ts NULL waits without limit. */
int conc__os_ppoll(struct pollfd *fds, unsigned long n,
                   const struct timespec *ts);
/* O_NONBLOCK on (true) or off, through fcntl(2). */
int conc__os_set_nonblock(int fd, bool on);
/* An eventfd, close-on-exec and non-blocking, counter 0. */
int conc__os_eventfd(void);
/* Adds 1 to an eventfd's counter (it stays readable until drained);
 * drain reads the counter back to 0.  Both 0 or -1. */
int conc__os_eventfd_post(int fd);
int conc__os_eventfd_drain(int fd);
/* An epoll instance, close-on-exec. */
int conc__os_epoll_create(void);
int conc__os_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev);
/* epoll_wait(2); ms -1 waits without limit. */
int conc__os_epoll_wait(int ep, struct epoll_event *evs, int max, int ms);
/* A CLOCK_MONOTONIC timerfd, close-on-exec and non-blocking; set arms it
 * to fire once at the absolute monotonic time at_ns (0 disarms); drain
 * reads its expiry count (EAGAIN when it has not fired is success). */
int conc__os_timerfd_create(void);
int conc__os_timerfd_set(int fd, uint64_t at_ns);
int conc__os_timerfd_drain(int fd);
char *conc__os_mkdtemp(char *tmpl);
int conc__os_lstat(const char *path, struct stat *st);

/* ---- connections of the network backends (os_linux_net.c) ---------------
 * Stream sockets for the .url backends, made of the wrappers above (each
 * of their system calls on the fault seam), non-blocking and close-on-
 * exec from birth.  Deadlines are absolute conc__now_ns() values,
 * UINT64_MAX for none.  The backends call conc__os_send with
 * MSG_NOSIGNAL | MSG_DONTWAIT (a closed peer is EPIPE, never SIGPIPE) and
 * conc__os_recv with MSG_DONTWAIT, retrying EINTR. */
typedef struct conc__sockaddr {
    unsigned char bytes[128]; /* a struct sockaddr_storage */
    unsigned len;
    int family;
} conc__sockaddr;
/* Resolves host (a name or a numeric IPv4/IPv6 address) and port into at
 * most max addresses, TCP only.  Returns how many (>= 1), or a negative
 * getaddrinfo() code (EAI_*; a seam hit gives EAI_FAIL); conc__os_gai_text
 * turns it into words.  May block on DNS for as long as the resolver
 * takes: callers resolve when a handle is made, never inside a timed
 * call. */
int conc__os_resolve(const char *host, unsigned port, conc__sockaddr *out,
                     int max);
const char *conc__os_gai_text(int code);
/* A Unix socket address for path; -1 (errno ENAMETOOLONG) when the path
 * does not fit sun_path. */
int conc__os_unix_addr(const char *path, conc__sockaddr *out);
/* Connects the non-blocking socket fd to addr, waiting until until_ns
 * (UINT64_MAX: no end; now: try once, never block): 0, or -1 with errno
 * (ETIMEDOUT when the deadline passed first).  A Unix listener whose
 * queue is full is tried again until the deadline, as a blocking connect
 * would wait for room.  A signal does not cut the wait short. */
int conc__os_connect_until(int fd, const struct sockaddr *addr,
                           unsigned len, uint64_t until_ns);
/* Opens a socket of a's family and connects it, waiting until until_ns:
 * the fd (TCP sockets get TCP_NODELAY and SO_KEEPALIVE), or -1 with errno
 * (ETIMEDOUT when the deadline passed first).  A signal does not cut the
 * wait short. */
int conc__os_dial(const conc__sockaddr *a, uint64_t until_ns);
/* Waits until fd is ready for events (POLLIN/POLLOUT bits) or until_ns:
 * 1 ready (*revents set; POLLERR/POLLHUP included), 0 timed out, -1 with
 * errno.  A signal does not cut the wait short. */
int conc__os_wait_fd(int fd, short events, uint64_t until_ns,
                     short *revents);
/* close(2) that keeps errno (for failure paths that report it); fd < 0
 * is nothing. */
void conc__os_close(int fd);

/* ---- the fault seam ------------------------------------------------------
 * conc__fault_arm(n): the n-th (1-based) call through the seam from now on
 * fails (allocation: NULL with ENOMEM; OS call: -1 with EIO unless stated);
 * 0 disarms.  conc__fault_hit() is what each seam call asks: inline, so
 * that while no test has armed it (always, outside the tests) it costs a
 * relaxed load and a branch on paths as hot as a pipe's send and recv.
 * Relaxed is enough: tests arm it from the thread that then makes the
 * calls. */
void conc__fault_arm(long n);
/* conc__fault_arm_sticky(): every call through the seam fails, from any
 * thread, until conc__fault_arm(0) (for failures that must last, as
 * forks that keep failing). */
void conc__fault_arm_sticky(void);
extern _Atomic long conc__fault_countdown;
bool conc__fault_hit_armed(void);
static inline bool conc__fault_hit(void)
{
    return atomic_load_explicit(&conc__fault_countdown,
                                memory_order_relaxed) != 0 &&
           conc__fault_hit_armed();
}
bool conc__fault_fired(void);

#endif
