/* os_linux.c - the Linux side of the platform contract (os.h).
 *
 * Futexes are called through syscall(2) because glibc has no wrapper.
 * Waits use FUTEX_WAIT_BITSET, whose timeout is an absolute CLOCK_MONOTONIC
 * time: the deadline computed once on entry is passed as is, so retries
 * after a spurious wake-up or a signal never stretch the wait.
 */
#include "conc_int.h"

#include <conc/common.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- the fault seam ---------------------------------------------------- */

/* Countdown to the failing call; 0 = disarmed (os.h's inline
 * conc__fault_hit reads it).  Relaxed is enough: tests arm it from the
 * thread that then makes the calls. */
_Atomic long conc__fault_countdown;
static _Atomic bool fault_fired;
static _Atomic bool fault_sticky;

void conc__fault_arm(long n)
{
    atomic_store_explicit(&fault_fired, false, memory_order_relaxed);
    atomic_store_explicit(&fault_sticky, false, memory_order_relaxed);
    atomic_store_explicit(&conc__fault_countdown, n < 0 ? 0 : n,
                          memory_order_relaxed);
}

void conc__fault_arm_sticky(void)
{
    atomic_store_explicit(&fault_fired, false, memory_order_relaxed);
    atomic_store_explicit(&fault_sticky, true, memory_order_relaxed);
    /* non-zero, so that conc__fault_hit() asks conc__fault_hit_armed() */
    atomic_store_explicit(&conc__fault_countdown, LONG_MAX,
                          memory_order_relaxed);
}

/* The rest of conc__fault_hit, once the countdown was seen armed. */
bool conc__fault_hit_armed(void)
{
    long n = atomic_load_explicit(&conc__fault_countdown,
                                  memory_order_relaxed);
    if (n == 0) {
        return false;
    }
    if (atomic_load_explicit(&fault_sticky, memory_order_relaxed)) {
        atomic_store_explicit(&fault_fired, true, memory_order_relaxed);
        return true;
    }
    if (atomic_fetch_sub_explicit(&conc__fault_countdown, 1,
                                  memory_order_relaxed) == 1) {
        atomic_store_explicit(&fault_fired, true, memory_order_relaxed);
        return true;
    }
    return false;
}

bool conc__fault_fired(void)
{
    return atomic_load_explicit(&fault_fired, memory_order_relaxed);
}

/* ---- deadlines --------------------------------------------------------- */

uint64_t conc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int conc__deadline_init(conc__deadline *dl, double timeout)
{
    dl->forever = false;
    dl->once = false;
    if (isnan(timeout)) {
        return conc__fail(CONC_EINVAL, "timeout NaN: a timeout is >= 0 (0: "
                          "do not wait) or CONC_FOREVER");
    }
    if (timeout < 0) {
        if (timeout != CONC_FOREVER) {
            return conc__fail(CONC_EINVAL, "timeout %g: a timeout is >= 0 "
                              "(0: do not wait) or CONC_FOREVER", timeout);
        }
        dl->forever = true;
        return 0;
    }
    /* Past about 30 years a deadline is as good as forever, and the
     * nanosecond arithmetic below would overflow. */
    if (timeout > 1e9) {
        dl->forever = true;
        return 0;
    }
    if (timeout == 0) {
        dl->once = true;
    }
    clock_gettime(CLOCK_MONOTONIC, &dl->at);
    double whole = floor(timeout);
    dl->at.tv_sec += (time_t)whole;
    dl->at.tv_nsec += (long)((timeout - whole) * 1e9);
    if (dl->at.tv_nsec >= 1000000000L) {
        dl->at.tv_sec += 1;
        dl->at.tv_nsec -= 1000000000L;
    }
    return 0;
}

bool conc__deadline_passed(const conc__deadline *dl)
{
    if (dl->forever) {
        return false;
    }
    if (dl->once) {
        return true;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > dl->at.tv_sec ||
           (now.tv_sec == dl->at.tv_sec && now.tv_nsec >= dl->at.tv_nsec);
}

double conc__deadline_left(const conc__deadline *dl)
{
    if (dl->forever) {
        return 1e18;
    }
    if (dl->once) {
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double left = (double)(dl->at.tv_sec - now.tv_sec) +
                  (double)(dl->at.tv_nsec - now.tv_nsec) / 1e9;
    return left > 0 ? left : 0;
}

/* pthread_mutex_timedlock's clock is CLOCK_REALTIME, hence short slices
 * re-measured against the monotonic deadline (a wall-clock jump then
 * costs at most one slice). */
int conc__mutex_lock_until(pthread_mutex_t *m, const conc__deadline *dl)
{
    if (dl->forever) {
        pthread_mutex_lock(m);
        return 0;
    }
    for (;;) {
        if (pthread_mutex_trylock(m) == 0) {
            return 0;
        }
        if (conc__deadline_passed(dl)) {
            return CONC_ETIMEDOUT; /* detail: the caller's */
        }
        double left = conc__deadline_left(dl);
        if (left > 0.05) {
            left = 0.05;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(left * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec += 1;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_mutex_timedlock(m, &ts) == 0) {
            return 0;
        }
    }
}

/* ---- futex ------------------------------------------------------------- */

int conc__os_futex_wait(_Atomic uint32_t *word, uint32_t expected,
                        const conc__deadline *dl, bool shared)
{
    if (dl != NULL && !dl->forever && conc__deadline_passed(dl)) {
        /* detail: each caller's (a platform call) */
        return CONC_ETIMEDOUT;
    }
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    const struct timespec *ts = (dl == NULL || dl->forever) ? NULL : &dl->at;
    long r = syscall(SYS_futex, (uint32_t *)word, op, expected, ts, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == -1 && errno == ETIMEDOUT) {
        /* detail: each caller's (a platform call) */
        return CONC_ETIMEDOUT;
    }
    /* 0, EAGAIN (the word had changed) and EINTR all mean: recheck. */
    return 0;
}

int conc__os_futex_wake(_Atomic uint32_t *word, int n, bool shared)
{
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    long r = syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

/* ---- memory ------------------------------------------------------------ */

void *conc__os_shared_alloc(size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void conc__os_shared_free(void *p, size_t size)
{
    if (p != NULL) {
        munmap(p, size);
    }
}

int conc__os_memfd(const char *name)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    return memfd_create(name, MFD_CLOEXEC);
}

/* Growing a file past RLIMIT_FSIZE raises SIGXFSZ, whose default action
 * ends the process; blocked, the call fails with EFBIG instead, as a
 * library call must.  fsz_hold() blocks it in the calling thread around
 * the call; fsz_release() takes back the signal that call raised (it is
 * directed at this thread, so one pending after EFBIG is that call's),
 * unless the program blocked SIGXFSZ itself, and restores the mask. */
static void fsz_hold(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGXFSZ);
    pthread_sigmask(SIG_BLOCK, &s, old);
}

static void fsz_release(const sigset_t *old, int r)
{
    int saved = errno;
    if (r != 0 && saved == EFBIG && !sigismember(old, SIGXFSZ)) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGXFSZ);
        const struct timespec zero = { 0, 0 };
        while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
    errno = saved;
}

static int fallocate_held(int fd, uint64_t from, uint64_t to)
{
    sigset_t old;
    fsz_hold(&old);
    /* Every signal is held back too: tmpfs's fallocate gives up with
     * EINTR when a signal is pending and frees the pages it had added,
     * so a periodic signal (a profiler's SIGPROF at 100 Hz) shorter than
     * the call would have the retry below start over for ever.  Held
     * back, they are delivered once the call is done. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int r;
    do {
        r = fallocate(fd, 0, (off_t)from, (off_t)(to - from));
    } while (r != 0 && errno == EINTR);
    fsz_release(&old, r);
    return r;
}

static int ftruncate_held(int fd, uint64_t size)
{
    sigset_t old;
    fsz_hold(&old);
    int r = ftruncate(fd, (off_t)size);
    fsz_release(&old, r);
    return r;
}

int conc__os_file_reserve(int fd, uint64_t from, uint64_t to)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    if (to > (uint64_t)INT64_MAX || from >= to) {
        errno = from >= to ? EINVAL : EFBIG;
        return -1;
    }
    uint64_t size = to;
    int r = fallocate_held(fd, from, to);
    if (r == 0 || errno != EOPNOTSUPP) {
        return r;
    }
    /* No allocation ahead on this file system: grow the length only. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -1;
    }
    if ((uint64_t)st.st_size >= size) {
        return 0;
    }
    return ftruncate_held(fd, size);
}

void *conc__os_private_alloc(size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void conc__os_private_free(void *p, size_t size)
{
    if (p != NULL) {
        munmap(p, size);
    }
}

/* ---- named shared memory ----------------------------------------------- */

int conc__os_shm_open(const char *name, bool create, unsigned mode)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
    return shm_open(name, flags, create ? (mode_t)mode : 0);
}

int conc__os_shm_unlink(const char *name)
{
    return shm_unlink(name);
}

int conc__os_ftruncate(int fd, uint64_t size)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    if (size > (uint64_t)INT64_MAX) {
        errno = EFBIG;
        return -1;
    }
    return ftruncate_held(fd, size);
}

int conc__os_fchmod(int fd, unsigned mode)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    return fchmod(fd, (mode_t)mode);
}

int conc__os_fstat(int fd, conc__os_file *out)
{
    struct stat st;
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        return -1;
    }
    out->size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    out->nlink = (uint64_t)st.st_nlink;
    out->uid = st.st_uid;
    out->mode = (unsigned)st.st_mode & 07777u;
    return 0;
}

void *conc__os_map_shared(int fd, size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

uid_t conc__os_geteuid(void)
{
    return geteuid();
}

void *conc__malloc(size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

void *conc__calloc(size_t n, size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return calloc(n, size);
}

void *conc__realloc(void *p, size_t size)
{
    if (conc__fault_hit()) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, size);
}

char *conc__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = conc__malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* ---- processes and threads --------------------------------------------- */

pid_t conc__os_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* Reads /proc/<path>/stat and returns field 22 (starttime), or 0.  *state
 * gets field 3 (R, S, Z, ...).  The command name, field 2, may hold spaces
 * and parentheses, so parsing starts after its last ')'. */
static uint64_t read_starttime(const char *path, char *state)
{
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] == '\0') {
        return 0;
    }
    p += 2;
    if (state != NULL) {
        *state = *p;
    }
    /* Fields 3..21 are 19 fields to skip; p points at field 3. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return 0;
        }
        p++;
    }
    return strtoull(p, NULL, 10);
}

uint64_t conc__os_proc_starttime(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return read_starttime(path, NULL);
}

/* When /proc says nothing of pid - no such entry, or one we may not read
 * (another user's process under hidepid, /proc not mounted or covered) -
 * the kernel itself is asked: kill(pid, 0) fails with ESRCH only when no
 * task has that id, and with EPERM when one exists that we may not signal
 * (it works for a thread id too).  Anything but ESRCH counts as alive: a
 * holder is judged dead only when that is known, never from a /proc we
 * cannot see (two holders would be worse than a wait). */
static bool exists_unseen(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

bool conc__os_proc_alive(pid_t pid, uint64_t starttime)
{
    char path[64];
    char state = 0;
    if (pid <= 0) {
        return false;
    }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int saved = errno;
    uint64_t st = read_starttime(path, &state);
    if (st == 0) {
        bool alive = exists_unseen(pid);
        errno = saved;
        return alive;
    }
    if (state == 'Z' || state == 'X') {
        return false;
    }
    return starttime == 0 || st == starttime;
}

bool conc__os_thread_alive(pid_t tid, uint64_t starttime)
{
    /* /proc/<tid> resolves for any thread id, not only process ids. */
    return conc__os_proc_alive(tid, starttime);
}

bool conc__os_own_thread_alive(pid_t tid)
{
    int saved = errno;
    bool alive = tid > 0 && (syscall(SYS_tgkill, getpid(), tid, 0) == 0 ||
                             errno != ESRCH);
    errno = saved;
    return alive;
}

void conc__os_set_name(const char *name)
{
    char comm[16];
    snprintf(comm, sizeof comm, "%s", name);
    prctl(PR_SET_NAME, comm, 0, 0, 0);
}

int conc__os_set_pdeathsig(int sig)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0);
}

long conc__os_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n;
}

#ifdef CONC_COVERAGE
void __gcov_dump(void);
#endif

_Noreturn void conc__os_exit_child(int code)
{
#ifdef CONC_COVERAGE
    __gcov_dump();
#endif
    _exit(code);
}

pid_t conc__os_fork(void)
{
    if (conc__fault_hit()) {
        errno = EAGAIN;
        return -1;
    }
    return fork();
}

int conc__os_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int conc__os_random(void *buf, size_t len)
{
    if (conc__fault_hit()) {
        errno = EIO;
        return -1;
    }
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t r = getrandom(p + got, len - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

uint64_t conc__os_random64(void)
{
    uint64_t x = 0;
    /* getrandom without the seam: this caller has no failure path, so a
     * test's armed fault must not be spent here. */
    if (getrandom(&x, sizeof x, 0) == (ssize_t)sizeof x) {
        return x;
    }
    x = conc__now_ns() ^ ((uint64_t)getpid() << 32) ^
        (uint64_t)(uintptr_t)&x;
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}
