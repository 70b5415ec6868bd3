/* seed002_word_count_pipeline.c - the word-count pipeline a new user
 * writes first, with the cleanup written once: CONC_AUTO (conc/auto.h)
 * frees each object when its scope ends, so no error path needs a ladder
 * of frees, and conc_errdetail() says what went wrong.
 *
 *     q, counts = Queue(maxsize=64), Manager().dict()
 *     workers = [Process(target=count, args=(q, counts)) for _ in range(3)]
 *     for line in text: q.put(line)
 *     for _ in workers: q.put(None)
 *     ... counts[w] = counts.get(w, 0) + 1   # racy in Python; atomic here
 *
 * Main feeds lines to a bounded queue; three consumer processes split them
 * into words and add each to a shared dict with an atomic update; one
 * empty message per consumer ends them.  The totals must match a count
 * made in one process.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CONC_HAVE_AUTO
#error "this example uses CONC_AUTO: build it with GCC or Clang"
#endif

enum { CONSUMERS = 3, REPEAT = 200 };

static const char *text[] = {
    "the queue carries lines", "the dict counts words",
    "every word counted once", "the lines the words the counts",
};

static conc_queue *lines;
static conc_dict *counts;

static int plus_one(const void *old, size_t oldlen, bool found, conc_buf *out,
                    void *arg)
{
    (void)arg;
    long n = 0;
    if (found && oldlen == sizeof n) {
        memcpy(&n, old, sizeof n);
    }
    n++;
    return conc_buf_append(out, &n, sizeof n);
}

static int consumer(void *arg)
{
    (void)arg;
    for (;;) {
        CONC_AUTO_MSG m = { 0 };
        int err = conc_queue_get(lines, &m, 30.0);
        if (err != 0 || m.len == 0) {
            return err != 0; /* an empty line: the end */
        }
        char *save = NULL;
        for (char *w = strtok_r(m.data, " ", &save); w != NULL;
             w = strtok_r(NULL, " ", &save)) {
            if (conc_dict_update(counts, w, strlen(w), plus_one, NULL) != 0) {
                return 1;
            }
        }
    }
}

static long count_of(const char *w)
{
    long n = 0;
    size_t len = 0;
    conc_dict_get_into(counts, w, strlen(w), &n, sizeof n, &len);
    return n;
}

static int run(void)
{
    CONC_AUTO(conc_queue) q = NULL;
    CONC_AUTO(conc_dict) d = NULL;
    CONC_AUTO(conc_process) p0 = NULL;
    CONC_AUTO(conc_process) p1 = NULL;
    CONC_AUTO(conc_process) p2 = NULL;
    conc_process **ps[CONSUMERS] = { &p0, &p1, &p2 };
    int err = conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 64 });
    if (err == 0) {
        err = conc_dict_new(&d, NULL);
    }
    lines = q;
    counts = d;
    for (int i = 0; i < CONSUMERS && err == 0; i++) {
        err = conc_process_new(ps[i], &(conc_process_opts){
                                          .target = consumer });
        if (err == 0) {
            err = conc_process_start(*ps[i]);
        }
    }
    long words = 0;
    for (int r = 0; r < REPEAT && err == 0; r++) {
        for (size_t i = 0; i < sizeof text / sizeof *text && err == 0; i++) {
            /* The terminating NUL travels too: consumers split in place. */
            err = conc_queue_put(q, text[i], strlen(text[i]) + 1, 30.0);
            for (const char *s = text[i]; *s; s++) {
                words += *s == ' ';
            }
            words++;
        }
    }
    for (int i = 0; i < CONSUMERS && err == 0; i++) {
        err = conc_queue_put(q, NULL, 0, 30.0);
    }
    for (int i = 0; i < CONSUMERS && err == 0; i++) {
        int code = -1;
        err = conc_process_join(*ps[i], 30.0);
        if (err == 0 && (conc_process_exitcode(*ps[i], &code) != 0 ||
                         code != 0)) {
            err = CONC_ETASK;
        }
    }
    if (err != 0) {
        /* Every object made so far is freed on the way out. */
        printf("pipeline failed: %s: %s\n", conc_errname(err),
               conc_errdetail());
        return 1;
    }
    long total = 0;
    conc_msg *keys = NULL;
    size_t n = 0;
    if (conc_dict_keys(d, &keys, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            char w[64];
            snprintf(w, sizeof w, "%.*s", (int)keys[i].len,
                     (char *)keys[i].data);
            total += count_of(w);
        }
        conc_dict_keys_free(keys);
    }
    printf("%zu distinct words, %ld counted of %ld; 'the' = %ld, "
           "'words' = %ld\n", n, total, words, count_of("the"),
           count_of("words"));
    bool ok = total == words && count_of("the") == 5L * REPEAT &&
              count_of("words") == 2L * REPEAT;
    printf("%s\n", ok ? "OK: the pipeline's counts are exact" : "FAILED");
    return ok ? 0 : 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run();
}
