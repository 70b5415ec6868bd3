/* prog_dict_peer.c - an unrelated process for the dict tests: opens a
 * named dict (conc_dict_open) and runs commands from argv:
 *   get KEY          prints "KEY=VALUE" or "KEY missing"
 *   set KEY VALUE    d[KEY] = VALUE
 *   incr KEY N       N atomic updates d[KEY] += 1 (decimal text)
 *   len              prints "len N"
 *   wait-key KEY     waits (up to 60 s) until KEY is in the dict
 *   open-only        just opens and closes
 * Exit 0, or 2 with "ERROR what: CONC_E..." printed. */
#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int incr(const void *old, size_t oldlen, bool found, conc_buf *out,
                void *arg)
{
    (void)arg;
    char tmp[32] = "0";
    if (found) {
        if (oldlen >= sizeof tmp) {
            return 5;
        }
        memcpy(tmp, old, oldlen);
        tmp[oldlen] = '\0';
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", atoll(tmp) + 1);
    return conc_buf_append(out, buf, (size_t)n);
}

static int fail(const char *what, int err)
{
    printf("ERROR %s: %s\n", what, conc_errname(err));
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return 2;
    }
    conc_dict *d = NULL;
    int err = conc_dict_open(&d, argv[1]);
    if (err != 0) {
        return fail("open", err);
    }
    for (int i = 2; i < argc; i++) {
        const char *cmd = argv[i];
        if (strcmp(cmd, "get") == 0 && i + 1 < argc) {
            const char *k = argv[++i];
            conc_msg m;
            err = conc_dict_get(d, k, strlen(k), &m);
            if (err == CONC_EEMPTY) {
                printf("%s missing\n", k);
            } else if (err != 0) {
                return fail("get", err);
            } else {
                printf("%s=%.*s\n", k, (int)m.len, m.data ? (char *)m.data : "");
                conc_msg_free(&m);
            }
        } else if (strcmp(cmd, "set") == 0 && i + 2 < argc) {
            const char *k = argv[++i], *v = argv[++i];
            err = conc_dict_set(d, k, strlen(k), v, strlen(v));
            if (err != 0) {
                return fail("set", err);
            }
        } else if (strcmp(cmd, "incr") == 0 && i + 2 < argc) {
            const char *k = argv[++i];
            long n = atol(argv[++i]);
            for (long j = 0; j < n; j++) {
                err = conc_dict_update(d, k, strlen(k), incr, NULL);
                if (err != 0) {
                    return fail("update", err);
                }
            }
        } else if (strcmp(cmd, "wait-key") == 0 && i + 1 < argc) {
            const char *k = argv[++i];
            int tries = 0;
            while (!conc_dict_contains(d, k, strlen(k))) {
                if (++tries > 60000) {
                    return fail("wait-key", CONC_ETIMEDOUT);
                }
                nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
            }
        } else if (strcmp(cmd, "len") == 0) {
            printf("len %zu\n", conc_dict_len(d));
        } else if (strcmp(cmd, "open-only") == 0) {
        } else {
            return fail(cmd, CONC_EINVAL);
        }
    }
    conc_dict_free(d);
    return 0;
}
