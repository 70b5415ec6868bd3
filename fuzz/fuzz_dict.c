/* fuzz_dict.c - a dict segment that a peer scribbled on.  The target
 * builds one real named dict once (a fixed hash seed, 40 entries of many
 * sizes, a few deleted, its index in the middle of a migration), keeps a
 * copy of its file, and for each input writes that copy into a fresh
 * segment, applies the input's patches to it, and then opens it and runs
 * every call on it: open, contains, get, get_into, len, keys, items, set,
 * update, add, del and the checker.
 *
 * Input: patches, one after another, each 5 + n bytes: a little-endian
 * u32 offset (taken modulo the file's size), a byte whose low 3 bits + 1
 * are n, then n bytes written at that offset.  An empty input is the dict
 * as built.  The lock word is cleared after patching: a peer holding the
 * lock for ever is not something a check can catch.
 *
 * Properties: no crash, no read or write outside the segment (ASan; the
 * segment is a file mapping, so a touch past the file is SIGBUS), every
 * walk ends (libFuzzer's -timeout), and every call either works or fails
 * with CONC_ECORRUPT or the codes its contract allows, always with a
 * detail; a value read twice reads the same. */
#include "fuzz_check.h"
#include "dict_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NKEYS 40

static unsigned char *tpl;
static size_t tpl_size;
static char name[64];

/* Key i: "key-<i>", or the empty key for i = 0 (and every ninth). */
static size_t key_of(int i, char *k)
{
    if (i % 9 == 0) {
        k[0] = '\0';
        return 0;
    }
    return (size_t)snprintf(k, 32, "key-%d", i);
}

/* The dict every input starts from (fixed seed: the same bytes each
 * run, so the corpus keeps its meaning). */
static void build_template(void)
{
    snprintf(name, sizeof name, "/conc_fuzz_dict_%d", (int)getpid());
    conc__dict_seed_next(0x5eed5eed5eed5eedull);
    conc_dict *d = NULL;
    FUZZ_CHECK(conc_dict_new(&d, &(conc_dict_opts){
                                       .name = name,
                                       .capacity_bytes = 256 << 10 }) == 0);
    unsigned char v[3000];
    char k[32];
    for (int i = 0; i < NKEYS; i++) {
        size_t vlen = i % 5 == 0 ? 0 : i % 7 == 0 ? 8 : (size_t)(i * 71) % 3000;
        memset(v, 'a' + i % 26, vlen);
        FUZZ_CHECK(conc_dict_set(d, k, key_of(i, k), v, vlen) == 0);
    }
    for (int i = 3; i < NKEYS; i += 11) {
        FUZZ_CHECK(conc_dict_del(d, k, key_of(i, k)) == 0);
    }
    /* More keys until the index is in the middle of a migration (64 to
     * 128 buckets), so that inputs reach both tables and the cursor. */
    conc__dict_stats st;
    for (int i = 0;; i++) {
        FUZZ_CHECK(conc__dict_stats_get(d, &st) == 0 && i < 1000);
        if (st.migrating && st.buckets >= 64) {
            break;
        }
        int kl = snprintf(k, sizeof k, "extra-%d", i);
        FUZZ_CHECK(conc_dict_set(d, k, (size_t)kl, v, 16) == 0);
    }
    FUZZ_CHECK(conc__dict_check(d) == 0);
    tpl_size = CONC__DICT_HDR_SIZE + st.heap_bytes;
    tpl = malloc(tpl_size);
    FUZZ_CHECK(tpl != NULL);
    memcpy(tpl, d->base, tpl_size);
    conc_dict_free(d);
}

static bool allowed(int err, int also1, int also2)
{
    bool ok = err == 0 || err == CONC_ECORRUPT || err == also1 ||
              err == also2 || err == CONC_ENOMEM;
    return ok && (err == 0 || conc_errdetail()[0] != '\0');
}

static int plus_one(const void *old, size_t oldlen, bool found, conc_buf *out,
                    void *arg)
{
    (void)arg;
    unsigned char b = found && oldlen > 0 ? ((const unsigned char *)old)[0] : 0;
    b++;
    return conc_buf_append(out, &b, 1);
}

static void run_calls(conc_dict *d)
{
    char k[32];
    unsigned char buf[4096];
    for (int i = 0; i < NKEYS + 2; i++) {
        size_t kl = key_of(i, k);
        conc_msg m;
        size_t len = 0;
        (void)conc_dict_contains(d, k, kl);
        int err = conc_dict_get(d, k, kl, &m);
        FUZZ_CHECK(allowed(err, CONC_EEMPTY, 0));
        int err2 = conc_dict_get_into(d, k, kl, buf, sizeof buf, &len);
        FUZZ_CHECK(allowed(err2, CONC_EEMPTY, CONC_ETOOBIG));
        if (err == 0 && err2 == 0) {
            /* Read twice under two locks, nothing written between: the
             * same bytes. */
            FUZZ_CHECK(len == m.len &&
                         (len == 0 || memcmp(buf, m.data, len) == 0));
        }
        conc_msg_free(&m);
    }
    (void)conc_dict_len(d);
    conc_msg *keys = NULL;
    size_t n = 0;
    int err = conc_dict_keys(d, &keys, &n);
    FUZZ_CHECK(allowed(err, 0, 0) && (err == 0 || (keys == NULL && n == 0)));
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK((keys[i].data == NULL) == (keys[i].len == 0));
    }
    conc_dict_array_free(keys);
    conc_dict_item *items = NULL;
    err = conc_dict_items(d, &items, &n);
    FUZZ_CHECK(allowed(err, 0, 0) && (err == 0 || items == NULL));
    conc_dict_array_free(items);
    /* Writes: a new key, an existing one, an update, adds, deletes. */
    memset(buf, 'w', 2000);
    FUZZ_CHECK(allowed(conc_dict_set(d, "new", 3, buf, 2000), 0, 0));
    FUZZ_CHECK(allowed(conc_dict_set(d, k, key_of(1, k), buf, 10), 0, 0));
    FUZZ_CHECK(allowed(conc_dict_update(d, k, key_of(2, k), plus_one, NULL),
                         0, 0));
    FUZZ_CHECK(allowed(conc_dict_add(d, k, key_of(7, k), 5, NULL),
                         CONC_EINVAL, 0));
    FUZZ_CHECK(allowed(conc_dict_add(d, "n", 1, 5, NULL), CONC_EINVAL, 0));
    FUZZ_CHECK(allowed(conc_dict_del(d, k, key_of(4, k)), CONC_EEMPTY, 0));
    FUZZ_CHECK(allowed(conc_dict_del(d, "new", 3), CONC_EEMPTY, 0));
    for (int i = 10; i < 30; i++) {
        FUZZ_CHECK(allowed(conc_dict_set(d, k, key_of(100 + i, k), buf,
                                           (size_t)i),
                             0, 0));
    }
    /* The checker walks everything; its answer is only bounded. */
    (void)conc__dict_check(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (tpl == NULL) {
        build_template();
    }
    conc_shm *m = NULL;
    FUZZ_CHECK(conc_shm_create(&m, name, tpl_size) == 0);
    unsigned char *p = conc_shm_ptr(m);
    memcpy(p, tpl, tpl_size);
    size_t i = 0;
    while (i + 5 <= size) {
        uint32_t off = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
                       (uint32_t)data[i + 2] << 16 |
                       (uint32_t)data[i + 3] << 24;
        size_t n = (size_t)(data[i + 4] & 7) + 1;
        i += 5;
        for (size_t j = 0; j < n && i < size; j++, i++) {
            p[(off + j) % tpl_size] = data[i];
        }
    }
    atomic_store(&((conc__dict_hdr *)(void *)p)->lock.state, 0);
    conc_dict *d = NULL;
    int err = conc_dict_open(&d, name);
    FUZZ_CHECK(err == 0 || err == CONC_EINVAL || err == CONC_ECORRUPT ||
                 err == CONC_ENOMEM);
    FUZZ_CHECK((err == 0) == (d != NULL));
    FUZZ_CHECK(err == 0 || conc_errdetail()[0] != '\0');
    if (d != NULL) {
        run_calls(d);
        conc_dict_free(d);
    }
    conc_shm_free(m);
    return 0;
}
