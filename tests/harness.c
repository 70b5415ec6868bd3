/* harness.c - the runner behind harness.h: one forked child per test, a
 * deadline for each, and leak checks (fds, processes, /dev/shm) after
 * each. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#define TH_MAX 512

static struct {
    const char *name;
    th_fn fn;
    double deadline;
} tests[TH_MAX];
static int ntests;

void th_register(const char *name, th_fn fn, double deadline_s)
{
    if (ntests == TH_MAX) {
        fprintf(stderr, "harness: too many tests\n");
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    tests[ntests].deadline = deadline_s;
    ntests++;
}

_Noreturn void th_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(99);
}

double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void th_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int th_unix_listener_full(const char *path, int *filler)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    CHECK(strlen(path) < sizeof a.sun_path);
    strcpy(a.sun_path, path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(lfd >= 0);
    CHECK_EQ(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    /* Backlog 0: the queue holds one connection (Linux takes it as full
     * once more than the backlog wait), which the filler takes. */
    CHECK_EQ(listen(lfd, 0), 0);
    *filler = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(*filler >= 0);
    CHECK_EQ(connect(*filler, (struct sockaddr *)&a, sizeof a), 0);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(probe >= 0);
    CHECK(connect(probe, (struct sockaddr *)&a, sizeof a) != 0 &&
          errno == EAGAIN); /* full, as promised */
    close(probe);
    return lfd;
}

int th_count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* The names in /dev/shm, newline-joined, in a heap string. */
static char *shm_snapshot(void)
{
    size_t cap = 256, len = 0;
    char *s = malloc(cap);
    s[0] = '\0';
    DIR *d = opendir("/dev/shm");
    if (d == NULL) {
        return s;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        size_t n = strlen(e->d_name);
        while (len + n + 2 > cap) {
            cap *= 2;
            s = realloc(s, cap);
        }
        memcpy(s + len, e->d_name, n);
        len += n;
        s[len++] = '\n';
        s[len] = '\0';
    }
    closedir(d);
    return s;
}

/* Reports (and removes) /dev/shm names in after that were not in before. */
static int shm_leaks(const char *before, const char *after)
{
    int leaks = 0;
    const char *p = after;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        char name[512];
        snprintf(name, sizeof name, "\n%.*s\n", (int)n, p);
        char *b = malloc(strlen(before) + 2);
        b[0] = '\n';
        strcpy(b + 1, before);
        if (strstr(b, name) == NULL) {
            char path[600];
            snprintf(path, sizeof path, "/dev/shm/%.*s", (int)n, p);
            fprintf(stderr, "    leaked /dev/shm entry: %.*s\n", (int)n, p);
            unlink(path);
            leaks++;
        }
        free(b);
        p = nl + 1;
    }
    return leaks;
}

/* The test process: runs the body, then checks its own fds and children.
 * A child still alive, or a zombie not reaped, is a leak. */
static int run_in_child(int i)
{
    int fds_before = th_count_fds();
    tests[i].fn();
    fflush(stdout);
    int fds_after = th_count_fds();
    if (fds_after != fds_before) {
        fprintf(stderr, "    leaked fds: %d open before, %d after\n",
                fds_before, fds_after);
        return 98;
    }
    pid_t c = waitpid(-1, NULL, WNOHANG);
    if (c != -1 || errno != ECHILD) {
        fprintf(stderr, "    left a child process behind (%d)\n", (int)c);
        return 97;
    }
    return 0;
}

/* Waits for pid with a deadline; 0 and *status, or -1 on timeout. */
static int wait_deadline(pid_t pid, int *status, double seconds)
{
    double end = th_now() + seconds;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            return 0;
        }
        if (r == -1 && errno != EINTR) {
            return -1;
        }
        if (th_now() > end) {
            return -1;
        }
        th_sleep(0.001);
    }
}

/* Orphans of the test re-parented to us (we are a subreaper): give them
 * grace seconds to end, reap them, then kill and count what is left. */
static int reap_orphans(double grace)
{
    double end = th_now() + grace;
    for (;;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r > 0) {
            continue;
        }
        if (r == -1) {
            return 0; /* ECHILD: none left */
        }
        if (th_now() > end) {
            break;
        }
        th_sleep(0.002);
    }
    int left = 0;
    pid_t r;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        int pid = atoi(e->d_name);
        if (pid <= 0) {
            continue;
        }
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            continue;
        }
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) {
            continue;
        }
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        int ppid = 0;
        char st;
        if (p && sscanf(p + 2, "%c %d", &st, &ppid) == 2 &&
            ppid == getpid()) {
            fprintf(stderr, "    left process %d alive\n", pid);
            kill(pid, SIGKILL);
            left++;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    while ((r = waitpid(-1, NULL, 0)) > 0) {
    }
    return left;
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc < 2) {
        return true;
    }
    for (int a = 1; a < argc; a++) {
        if (strstr(name, argv[a]) != NULL) {
            return true;
        }
    }
    return false;
}

/* Runs test i in a forked child with its deadline, then the leak checks;
 * true when it passed. */
static bool run_one(int i)
{
    char *shm_before = shm_snapshot();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        th_exit(run_in_child(i));
    }
    int status = 0;
    bool ok = true;
    if (wait_deadline(pid, &status, tests[i].deadline) != 0) {
        fprintf(stderr, "    deadline of %.0f s passed: killed\n",
                tests[i].deadline);
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        ok = false;
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr, "    died of signal %d\n", WTERMSIG(status));
        ok = false;
    } else if (WEXITSTATUS(status) != 0) {
        ok = false;
    }
    if (reap_orphans(2.0) != 0) {
        ok = false;
    }
    char *shm_after = shm_snapshot();
    if (shm_leaks(shm_before, shm_after) != 0) {
        ok = false;
    }
    free(shm_before);
    free(shm_after);
    return ok;
}

/* Gives the calling process a /dev/shm of its own (a new mount namespace
 * with a fresh tmpfs there), so that test programs run side by side
 * (ctest -j) neither see nor delete each other's segments in the leak
 * check.  Needs root (CI and these machines have it); without it the
 * tests share the machine's /dev/shm and should run one program at a
 * time. */
static bool private_shm(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        return false;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        return false;
    }
    return mount("conc-test-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                 "mode=1777") == 0;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    int repeat = 1;
    const char *rep = getenv("CONC_TEST_REPEAT");
    if (rep != NULL && atoi(rep) > 0) {
        repeat = atoi(rep);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < ntests; i++) {
        if (!selected(tests[i].name, argc, argv)) {
            continue;
        }
        for (int r = 0; r < repeat; r++) {
            double t0 = th_now();
            fflush(stdout);
            fflush(stderr);
            /* A keeper process per test: it owns the private /dev/shm and
             * is the subreaper that orphaned grandchildren come back to. */
            pid_t keeper = fork();
            if (keeper == 0) {
                prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
                private_shm();
                th_exit(run_one(i) ? 0 : 1);
            }
            int status = 0;
            while (waitpid(keeper, &status, 0) == -1 && errno == EINTR) {
            }
            bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            printf("%s %s (%.2f s)\n", ok ? "ok  " : "FAIL", tests[i].name,
                   th_now() - t0);
            if (ok) {
                passed++;
            } else {
                failed++;
            }
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

/* ---- helpers for test bodies ------------------------------------------- */

int th_run(char *const argv[], char **out, double timeout)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        th_fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    double end = th_now() + timeout;
    for (;;) {
        int left_ms = (int)((end - th_now()) * 1000);
        if (left_ms <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(pfd[0]);
            buf[len] = '\0';
            fprintf(stderr, "    %s ran past %.1f s; output so far:\n%s\n",
                    argv[0], timeout, buf);
            free(buf);
            th_fail(__FILE__, __LINE__, "program timed out");
        }
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        if (poll(&p, 1, left_ms) <= 0) {
            continue;
        }
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(pfd[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(pfd[0]);
    buf[len] = '\0';
    int status = th_wait(pid, end - th_now() + 1);
    if (out != NULL) {
        *out = buf;
    } else {
        free(buf);
    }
    return status;
}

const char *th_example(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", CONC_EXAMPLES_DIR, name);
    return path;
}

const char *th_prog(const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", CONC_TESTS_DIR, name);
    return path;
}

char *th_run_example(const char *name, const char *arg1, const char *arg2,
                     double timeout)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", th_example(name));
    char *argv[4] = { path, (char *)arg1, arg1 ? (char *)arg2 : NULL, NULL };
    char *out = NULL;
    int status = th_run(argv, &out, timeout);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "    --- output of %s ---\n%s    --- end ---\n", name,
                out ? out : "");
        th_fail(__FILE__, __LINE__, "%s: wait status %#x, wanted exit 0",
                name, (unsigned)status);
    }
    return out;
}

int th_count(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = strstr(hay, needle); p != NULL && len > 0;
         p = strstr(p + len, needle)) {
        n++;
    }
    return n;
}

#ifdef CONC_COVERAGE
void __gcov_dump(void);
#endif

_Noreturn void th_exit(int code)
{
#ifdef CONC_COVERAGE
    __gcov_dump();
#endif
    _exit(code);
}

pid_t th_fork(int (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        th_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        th_exit(fn(arg));
    }
    return pid;
}

int th_wait(pid_t pid, double timeout)
{
    int status = 0;
    if (wait_deadline(pid, &status, timeout) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        th_fail(__FILE__, __LINE__, "child %d did not end in %.1f s",
                (int)pid, timeout);
    }
    return status;
}

bool th_shm_exists(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
    return access(path, F_OK) == 0;
}
