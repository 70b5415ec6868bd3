/* seed002_queue_parent_child.c - one queue, two processes.  Ports seed
 * 002's proof that a multiprocessing.Queue is shared: the parent puts 1,
 * the child gets it (prints 1) and puts 2, the parent joins the child and
 * gets 2 (prints 2).  The queue is created before the child starts, so
 * the child's copy is the same queue (Python's fork inheritance); the
 * seed adds that a plain queue.Queue would not be shared - a libconc
 * queue always lives in shared memory, so there is only one kind.
 */
#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static conc_queue *q;

static int get_int(int *v)
{
    char buf[32];
    size_t len = 0;
    int err = conc_queue_get_into(q, buf, sizeof buf - 1, &len, 5.0);
    if (err == 0) {
        buf[len] = '\0';
        *v = atoi(buf);
    }
    return err;
}

static int put_int(int v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", v);
    return conc_queue_put(q, buf, (size_t)n, 5.0);
}

/* func(q): print(q.get()); q.put(2) */
static int func(void *arg)
{
    (void)arg;
    int v = 0;
    int err = get_int(&v);
    if (err != 0) {
        printf("child: q.get() -> %s\n", conc_errname(err));
        return 1;
    }
    printf("%d\n", v);
    err = put_int(2);
    return err == 0 && v == 1 ? 0 : 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int err = conc_queue_new(&q, NULL);
    if (err == 0) {
        err = put_int(1);
    }
    if (err == 0) {
        err = conc_process_new(&p, &(conc_process_opts){ .target = func });
    }
    if (err == 0) {
        err = conc_process_start(p);
    }
    if (err == 0) {
        err = conc_process_join(p, 10.0);
    }
    int code = -1;
    if (err == 0) {
        err = conc_process_exitcode(p, &code);
    }
    int v = 0;
    if (err == 0) {
        err = get_int(&v);
    }
    if (err == 0) {
        printf("%d\n", v);
    } else {
        printf("main: %s\n", conc_strerror(err));
    }
    conc_process_free(p);
    conc_queue_free(q);
    bool ok = err == 0 && code == 0 && v == 2;
    printf("%s\n", ok ? "OK: the child saw the parent's 1, the parent the "
                        "child's 2"
                      : "FAILED");
    return ok ? 0 : 1;
}
