/* prog_queue_peer.c - an unrelated process for tests/test_queue.c: started
 * by exec, it opens a named queue with conc_queue_open() and does what
 * argv[2] says.
 *   echo N   get N messages, print each on a line, put each back upper-
 *            cased, in order
 *   get1     block (up to 10 s) for one message and print it
 *   missing  expect the name not to exist: print the error name
 *   create   instead of opening: create the queue, put one message and
 *            exit without freeing it (the atexit unlink is tested)
 * Exit status 0 on success, 1 on any failure (printed). */
#include <conc.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s name mode [n]\n", argv[0]);
        return 1;
    }
    conc_queue *q = NULL;
    if (strcmp(argv[2], "create") == 0) {
        /* Kept reachable (a leak checker would otherwise object): the
         * point is that exit, not free, unlinks. */
        static conc_queue *kept;
        int err = conc_queue_new(&kept, &(conc_queue_opts){ .name = argv[1] });
        if (err == 0) {
            err = conc_queue_put(kept, "left", 4, 0);
        }
        printf("create: %s\n", conc_errname(err));
        return err == 0 ? 0 : 1; /* no free: exit unlinks */
    }
    int err = conc_queue_open(&q, argv[1]);
    if (strcmp(argv[2], "missing") == 0) {
        printf("%s %d\n", conc_errname(err), err == CONC_ESYS ? errno : 0);
        conc_queue_free(q);
        return err == 0 ? 1 : 0;
    }
    if (err != 0) {
        printf("open: %s\n", conc_errname(err));
        return 1;
    }
    int status = 0;
    if (strcmp(argv[2], "echo") == 0) {
        int n = argc > 3 ? atoi(argv[3]) : 1;
        for (int i = 0; i < n && status == 0; i++) {
            conc_msg m;
            err = conc_queue_get(q, &m, 10);
            if (err != 0) {
                printf("get: %s\n", conc_errname(err));
                status = 1;
                break;
            }
            printf("%.*s\n", (int)m.len, (char *)m.data);
            for (size_t j = 0; j < m.len; j++) {
                ((char *)m.data)[j] = (char)toupper(((char *)m.data)[j]);
            }
            err = conc_queue_put(q, m.data, m.len, 10);
            conc_msg_free(&m);
            if (err != 0) {
                printf("put: %s\n", conc_errname(err));
                status = 1;
            }
        }
    } else if (strcmp(argv[2], "get1") == 0) {
        conc_msg m;
        err = conc_queue_get(q, &m, 10);
        if (err != 0) {
            printf("get: %s\n", conc_errname(err));
            status = 1;
        } else {
            printf("%.*s\n", (int)m.len, (char *)m.data);
            conc_msg_free(&m);
        }
    } else {
        printf("unknown mode %s\n", argv[2]);
        status = 1;
    }
    conc_queue_free(q);
    return status;
}
