/* seed002_word_count_dict.c - four processes count words into one dict.
 * Seed 002 warns that a Manager dict shared by processes races: with
 * d[k] += 1 each process reads, adds and writes back in separate round
 * trips, and two processes that read the same old count lose an update.
 * First that race, reproduced with get-then-set on a conc_dict: the
 * totals usually come out short (how short depends on timing, so it is
 * only printed).  Then the cure: conc_dict_update runs the read-modify-
 * write atomically - no other process can touch the key in between - so
 * the four processes' totals match a serial count exactly, every time.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_WORKERS 4
#define ROUNDS 1000

static const char *zen =
    "beautiful is better than ugly explicit is better than implicit "
    "simple is better than complex complex is better than complicated "
    "flat is better than nested sparse is better than dense "
    "readability counts special cases are not special enough to break "
    "the rules although practicality beats purity errors should never "
    "pass silently unless explicitly silenced";

static char *words[64];
static size_t nwords;
static conc_dict *counts;
static bool atomic_mode;
static long wrong_words; /* distinct words whose total is off */
static conc_event *go; /* all four start counting at the same moment */

static void split_words(char *text)
{
    for (char *w = strtok(text, " "); w != NULL && nwords < 64;
         w = strtok(NULL, " ")) {
        words[nwords++] = w;
    }
}

/* The update: old count (decimal text, or none) + 1. */
static int plus_one(const void *old, size_t oldlen, bool found, conc_buf *out,
                    void *arg)
{
    (void)arg;
    char tmp[24] = "0";
    if (found && oldlen < sizeof tmp) {
        memcpy(tmp, old, oldlen);
        tmp[oldlen] = '\0';
    }
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%ld", atol(tmp) + 1);
    return conc_buf_append(out, buf, (size_t)n);
}

/* The racy version: Python's d[k] = d.get(k, 0) + 1 on a Manager dict. */
static int get_then_set(const char *w)
{
    char tmp[24] = "0";
    size_t len = 0;
    int err = conc_dict_get_into(counts, w, strlen(w), tmp, sizeof tmp - 1,
                                 &len);
    if (err != 0 && err != CONC_EEMPTY) {
        return err;
    }
    tmp[err == 0 ? len : 1] = '\0';
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%ld", atol(tmp) + 1);
    return conc_dict_set(counts, w, strlen(w), buf, (size_t)n);
}

/* Worker id counts every word at positions id, id+4, id+8, ... of the
 * text repeated ROUNDS times. */
static int worker(void *arg)
{
    size_t id = (size_t)arg;
    if (conc_event_wait(go, 30.0) != 0) {
        return 1;
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = id; i < nwords; i += N_WORKERS) {
            const char *w = words[(i + (size_t)r) % nwords];
            int err = atomic_mode
                          ? conc_dict_update(counts, w, strlen(w), plus_one,
                                             NULL)
                          : get_then_set(w);
            if (err != 0) {
                return 1;
            }
        }
    }
    return 0;
}

static long count_of(const char *w)
{
    char tmp[24];
    size_t len = 0;
    if (conc_dict_get_into(counts, w, strlen(w), tmp, sizeof tmp - 1, &len) !=
        0) {
        return 0;
    }
    tmp[len] = '\0';
    return atol(tmp);
}

/* Runs the four workers; returns how many counted words went missing
 * against the serial count, or -1 on an error. */
static long run(bool atomic, const char *label)
{
    atomic_mode = atomic;
    conc_process *p[N_WORKERS] = { NULL };
    if (conc_dict_new(&counts, NULL) != 0) {
        return -1;
    }
    if (conc_event_new(&go, NULL) != 0) {
        conc_dict_free(counts);
        return -1;
    }
    bool ok = true;
    for (size_t i = 0; i < N_WORKERS; i++) {
        ok = ok && conc_process_new(&p[i], &(conc_process_opts){
                                               .target = worker,
                                               .arg = (void *)i }) == 0 &&
             conc_process_start(p[i]) == 0;
    }
    ok = conc_event_set(go) == 0 && ok;
    for (size_t i = 0; i < N_WORKERS; i++) {
        int code = 1;
        ok = ok && conc_process_join(p[i], 60.0) == 0 &&
             conc_process_exitcode(p[i], &code) == 0 && code == 0;
        conc_process_free(p[i]);
    }
    long counted = 0, expected = (long)nwords * ROUNDS;
    wrong_words = 0;
    for (size_t i = 0; i < nwords; i++) {
        bool first = true; /* each distinct word once */
        for (size_t j = 0; j < i; j++) {
            first = first && strcmp(words[i], words[j]) != 0;
        }
        if (first) {
            long occurs = 0;
            for (size_t j = 0; j < nwords; j++) {
                occurs += strcmp(words[i], words[j]) == 0;
            }
            long c = count_of(words[i]);
            counted += c;
            wrong_words += c != occurs * ROUNDS;
        }
    }
    printf("%s: %ld words counted of %ld; 'better' = %ld, 'is' = %ld\n",
           label, counted, expected, count_of("better"), count_of("is"));
    conc_dict_free(counts);
    conc_event_free(go);
    return ok ? expected - counted : -1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *text = strdup(zen);
    split_words(text);
    /* The serial truth: each word's count is its occurrences x ROUNDS. */
    long better = 0, is = 0;
    for (size_t i = 0; i < nwords; i++) {
        better += strcmp(words[i], "better") == 0;
        is += strcmp(words[i], "is") == 0;
    }
    printf("serial count: 'better' = %ld, 'is' = %ld of %ld words\n",
           better * ROUNDS, is * ROUNDS, (long)nwords * ROUNDS);
    long lost = run(false, "get-then-set (Manager style)");
    if (lost < 0) {
        printf("FAILED: the racy run broke\n");
        free(text);
        return 1;
    }
    printf("  -> %ld update(s) lost to the race\n", lost);
    lost = run(true, "conc_dict_update (atomic)");
    printf("  -> %ld update(s) lost, %ld word(s) with a wrong total\n", lost,
           wrong_words);
    free(text);
    bool ok = lost == 0 && wrong_words == 0;
    printf("%s: the atomic totals are exact\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
