/* seed002_manager_dict.c - a dict shared by a parent and its child.
 * Ports seed 002's Manager example:
 *     mgr = Manager(); d = mgr.dict()
 *     def func(d): d['a'] = 'a'; print(d)
 *     p = Process(target=func, args=(d,)); p.start(); p.join(); print(d)
 * which prints {'a': 'a'} twice: the child's write is seen by the parent.
 * Python runs a server process for this and pays a socket round trip on
 * every access; a conc_dict is a hash table in shared memory, so the
 * child writes it directly and there is no server at all.
 */
#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static conc_dict *d;

static int by_bytes(const void *a, const void *b)
{
    const conc_msg *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->data, y->data, n) : 0;
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* print(d): the keys snapshot, sorted, each with its value, in Python's
 * repr for str. */
static int print_dict(void)
{
    conc_msg *keys = NULL;
    size_t n = 0;
    int err = conc_dict_keys(d, &keys, &n);
    if (err != 0) {
        return err;
    }
    qsort(keys, n, sizeof *keys, by_bytes);
    printf("{");
    for (size_t i = 0; i < n && err == 0; i++) {
        conc_msg v;
        err = conc_dict_get(d, keys[i].data, keys[i].len, &v);
        if (err == 0) {
            printf("%s'%.*s': '%.*s'", i ? ", " : "", (int)keys[i].len,
                   (char *)keys[i].data, (int)v.len,
                   v.data ? (char *)v.data : "");
            conc_msg_free(&v);
        }
    }
    printf("}\n");
    conc_dict_keys_free(keys);
    return err;
}

static int func(void *arg)
{
    (void)arg;
    if (conc_dict_set(d, "a", 1, "a", 1) != 0) {
        return 1;
    }
    return print_dict() == 0 ? 0 : 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int code = -1;
    int err = conc_dict_new(&d, NULL); /* d = mgr.dict() */
    if (err == 0) {
        err = conc_process_new(&p, &(conc_process_opts){ .target = func });
    }
    if (err == 0) {
        err = conc_process_start(p);
    }
    if (err == 0) {
        err = conc_process_join(p, 30.0);
    }
    if (err == 0) {
        err = conc_process_exitcode(p, &code);
    }
    if (err == 0) {
        err = print_dict();
    }
    conc_process_free(p);
    if (err != 0 || code != 0) {
        printf("FAILED: %s (child exit code %d)\n", conc_strerror(err), code);
        conc_dict_free(d);
        return 1;
    }
    bool ok = conc_dict_len(d) == 1;
    conc_dict_free(d);
    return ok ? 0 : 1;
}
