/* test_listener.c - conc_listener / conc_client_connect (Python's
 * multiprocessing.connection Listener and Client), their authentication
 * handshake, the digests under it (white-box: digest.h), and
 * interoperability with CPython through tests/py_connection_peer.py. */
#include "harness.h"

#include "conc_int.h"
#include "digest.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- helpers ------------------------------------------------------------- */

static void fill(unsigned char *p, size_t n, unsigned mul, unsigned add)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (unsigned char)(i * mul + add);
    }
}

/* The exchange py_connection_peer.py's serve() expects.  "First" sends
 * b"from-c:" + fill(7, 3, n), expects b"from-py:" + fill(13, 5, 2n + 1),
 * then says bye.  Returns 0 or the failing step (for a child's exit). */
static int talk_first(conc_conn *c, size_t n)
{
    unsigned char *a = malloc(7 + n);
    memcpy(a, "from-c:", 7);
    fill(a + 7, n, 7, 3);
    int err = conc_conn_send(c, a, 7 + n);
    free(a);
    if (err != 0) {
        return 10;
    }
    conc_msg m;
    if (conc_conn_recv(c, &m, 20) != 0) {
        return 11;
    }
    size_t want = 8 + 2 * n + 1;
    unsigned char *b = malloc(want);
    memcpy(b, "from-py:", 8);
    fill(b + 8, want - 8, 13, 5);
    bool same = m.len == want && memcmp(m.data, b, want) == 0;
    free(b);
    conc_msg_free(&m);
    if (!same) {
        return 12;
    }
    if (conc_conn_send(c, "bye", 3) != 0) {
        return 13;
    }
    if (conc_conn_recv(c, &m, 20) != 0) {
        return 14;
    }
    same = m.len == 7 && memcmp(m.data, "bye-ack", 7) == 0;
    conc_msg_free(&m);
    return same ? 0 : 15;
}

/* The other side of talk_first, in C (what serve() does in Python). */
static int talk_second(conc_conn *c)
{
    conc_msg m;
    if (conc_conn_recv(c, &m, 20) != 0) {
        return 20;
    }
    if (m.len < 7 || memcmp(m.data, "from-c:", 7) != 0) {
        conc_msg_free(&m);
        return 21;
    }
    size_t n = m.len - 7;
    unsigned char *a = malloc(n + 1);
    fill(a, n, 7, 3);
    bool same = memcmp((unsigned char *)m.data + 7, a, n) == 0;
    free(a);
    conc_msg_free(&m);
    if (!same) {
        return 22;
    }
    size_t blen = 8 + 2 * n + 1;
    unsigned char *b = malloc(blen);
    memcpy(b, "from-py:", 8);
    fill(b + 8, blen - 8, 13, 5);
    int err = conc_conn_send(c, b, blen);
    free(b);
    if (err != 0) {
        return 23;
    }
    if (conc_conn_recv(c, &m, 20) != 0) {
        return 24;
    }
    same = m.len == 3 && memcmp(m.data, "bye", 3) == 0;
    conc_msg_free(&m);
    if (!same) {
        return 25;
    }
    return conc_conn_send(c, "bye-ack", 7) == 0 ? 0 : 26;
}

/* A private directory for socket files, removed (and checked empty) by
 * tmpdir_done: every socket file a test made must be gone by then. */
static char *tmpdir_new(void)
{
    char *d = strdup("/tmp/conc-test-listener-XXXXXX");
    CHECK(mkdtemp(d) != NULL);
    return d;
}

static void tmpdir_done(char *d)
{
    /* rmdir fails with ENOTEMPTY if a socket file was left behind. */
    if (rmdir(d) != 0) {
        th_fail(__FILE__, __LINE__, "rmdir %s: %s (a file left?)", d,
                strerror(errno));
    }
    free(d);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A client child: connects to addr with key (NULL: none) and runs
 * talk_first with n bytes; or, when expect_err != 0, checks connect
 * returns it. */
typedef struct client_arg {
    const char *addr;
    const char *key;
    size_t n;
    int expect_err;
} client_arg;

static int client_child(void *p)
{
    client_arg *a = p;
    conc_client_opts o = { .authkey = a->key,
                           .authkey_len = a->key ? strlen(a->key) : 0,
                           .timeout = CONC_TIMEOUT(10) };
    conc_conn *c = NULL;
    int err = conc_client_connect(&c, a->addr, &o);
    if (a->expect_err != 0) {
        return err == a->expect_err && c == NULL ? 0 : 2;
    }
    if (err != 0) {
        fprintf(stderr, "client: %s (errno %d)\n", conc_errname(err), errno);
        return 1;
    }
    int r = talk_first(c, a->n);
    conc_conn_free(c);
    return r;
}

static void check_exit(int status, int code)
{
    if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
        th_fail(__FILE__, __LINE__, "child status %#x, wanted exit %d",
                (unsigned)status, code);
    }
}

/* Listener at addr (key or NULL), a child client, one round trip. */
/* A client child connects to addr (with key) and talks n messages; l
 * accepts it and answers. */
static void serve_one_client(conc_listener *l, const char *addr,
                             const char *key, size_t n)
{
    client_arg a = { .addr = addr, .key = key, .n = n };
    pid_t pid = th_fork(client_child, &a);
    conc_conn *c = NULL;
    CHECK_OK(conc_listener_accept(l, &c, 10));
    CHECK_EQ(talk_second(c), 0);
    check_exit(th_wait(pid, 20), 0);
    conc_conn_free(c);
}

static void roundtrip(const char *addr, const char *key, size_t n)
{
    conc_listener *l = NULL;
    conc_listener_opts o = { .authkey = key,
                             .authkey_len = key ? strlen(key) : 0 };
    CHECK_OK(conc_listener_new(&l, addr, &o));
    client_arg a = { .addr = conc_listener_address(l), .key = key, .n = n };
    pid_t pid = th_fork(client_child, &a);
    conc_conn *c = NULL;
    CHECK_OK(conc_listener_accept(l, &c, 10));
    CHECK(c != NULL);
    CHECK_EQ(talk_second(c), 0);
    check_exit(th_wait(pid, 20), 0);
    /* Every descriptor close-on-exec. */
    CHECK(fcntl(conc_conn_fileno(c), F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(conc_listener_fileno(l), F_GETFD) & FD_CLOEXEC);
    conc_conn_free(c);
    conc_listener_free(l);
}

/* ---- digests (RFC 1321, FIPS 180-4, RFC 2202, RFC 4231) ------------------ */

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", p[i]);
    }
}

static void check_md5(const char *msg, const char *want)
{
    unsigned char d[16];
    char h[33];
    conc__md5(msg, strlen(msg), d);
    hex(d, 16, h);
    CHECK_STR(h, want);
}

static void check_sha256(const void *msg, size_t len, const char *want)
{
    unsigned char d[32];
    char h[65];
    conc__sha256(msg, len, d);
    hex(d, 32, h);
    CHECK_STR(h, want);
}

static void check_hmac(conc__digest_kind kind, const void *key, size_t klen,
                       const void *msg, size_t mlen, const char *want)
{
    unsigned char d[32];
    char h[65];
    conc__hmac(kind, key, klen, msg, mlen, d);
    hex(d, conc__digest_len(kind), h);
    CHECK_STR(h, want);
}

TEST(digest_rfc1321_md5)
{
    /* RFC 1321 appendix A.5, the test suite. */
    check_md5("", "d41d8cd98f00b204e9800998ecf8427e");
    check_md5("a", "0cc175b9c0f1b6a831c399e269772661");
    check_md5("abc", "900150983cd24fb0d6963f7d28e17f72");
    check_md5("message digest", "f96b697d7cb7938d525a2f31aaf161d0");
    check_md5("abcdefghijklmnopqrstuvwxyz",
              "c3fcd3d76192e4007dfb496cca67e13b");
    check_md5("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
              "d174ab98d277d9f5a5611c2c9f419d9f");
    check_md5("1234567890123456789012345678901234567890"
              "1234567890123456789012345678901234567890",
              "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(digest_fips180_sha256)
{
    /* FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2_Additional"). */
    check_sha256("abc", 3,
                 "ba7816bf8f01cfea414140de5dae2223"
                 "b00361a396177a9cb410ff61f20015ad");
    const char *two =
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha256(two, strlen(two),
                 "248d6a61d20638b8e5c026930c3e6039"
                 "a33ce45964ff2167f6ecedd419db06c1");
    check_sha256("", 0,
                 "e3b0c44298fc1c149afbf4c8996fb924"
                 "27ae41e4649b934ca495991b7852b855");
    /* One million 'a', fed in uneven pieces through the streaming API. */
    conc__digest d;
    conc__digest_init(&d, CONC__SHA256);
    unsigned char as[1000];
    memset(as, 'a', sizeof as);
    size_t left = 1000000;
    for (size_t step = 1; left > 0; step = step % 997 + 1) {
        size_t n = step < left ? step : left;
        conc__digest_update(&d, as, n);
        left -= n;
    }
    unsigned char out[32];
    char h[65];
    conc__digest_final(&d, out);
    hex(out, 32, h);
    CHECK_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67"
                 "f1809a48a497200e046d39ccc7112cd0");
}

TEST(digest_rfc2202_hmac_md5)
{
    unsigned char k[80];
    unsigned char m[50];
    memset(k, 0x0b, 16);
    check_hmac(CONC__MD5, k, 16, "Hi There", 8,
               "9294727a3638bb1c13f48ef8158bfc9d");
    check_hmac(CONC__MD5, "Jefe", 4, "what do ya want for nothing?", 28,
               "750c783e6ab0b503eaa86e310a5db738");
    memset(k, 0xaa, 16);
    memset(m, 0xdd, 50);
    check_hmac(CONC__MD5, k, 16, m, 50, "56be34521d144c88dbb8c733f0e8b3f6");
    for (int i = 0; i < 25; i++) {
        k[i] = (unsigned char)(i + 1);
    }
    memset(m, 0xcd, 50);
    check_hmac(CONC__MD5, k, 25, m, 50, "697eaf0aca3a3aea3a75164746ffaa79");
    memset(k, 0x0c, 16);
    check_hmac(CONC__MD5, k, 16, "Test With Truncation", 20,
               "56461ef2342edc00f9bab995690efd4c");
    memset(k, 0xaa, 80); /* longer than a block: hashed first */
    check_hmac(CONC__MD5, k, 80,
               "Test Using Larger Than Block-Size Key - Hash Key First", 54,
               "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd");
    check_hmac(CONC__MD5, k, 80,
               "Test Using Larger Than Block-Size Key and Larger Than One "
               "Block-Size Data", 73,
               "6f630fad67cda0ee1fb1f562db3aa53e");
}

TEST(digest_rfc4231_hmac_sha256)
{
    unsigned char k[131];
    unsigned char m[50];
    memset(k, 0x0b, 20);
    check_hmac(CONC__SHA256, k, 20, "Hi There", 8,
               "b0344c61d8db38535ca8afceaf0bf12b"
               "881dc200c9833da726e9376c2e32cff7");
    check_hmac(CONC__SHA256, "Jefe", 4, "what do ya want for nothing?", 28,
               "5bdcc146bf60754e6a042426089575c7"
               "5a003f089d2739839dec58b964ec3843");
    memset(k, 0xaa, 20);
    memset(m, 0xdd, 50);
    check_hmac(CONC__SHA256, k, 20, m, 50,
               "773ea91e36800e46854db8ebd09181a7"
               "2959098b3ef8c122d9635514ced565fe");
    for (int i = 0; i < 25; i++) {
        k[i] = (unsigned char)(i + 1);
    }
    memset(m, 0xcd, 50);
    check_hmac(CONC__SHA256, k, 25, m, 50,
               "82558a389a443c0ea4cc819899f2083a"
               "85f0faa3e578f8077a2e3ff46729665b");
    /* Test case 5 (truncated output) compares only the first 16 bytes. */
    unsigned char d[32];
    memset(k, 0x0c, 20);
    conc__hmac(CONC__SHA256, k, 20, "Test With Truncation", 20, d);
    char h[65];
    hex(d, 16, h);
    CHECK_STR(h, "a3b6167473100ee06e0c796c2955552b");
    memset(k, 0xaa, 131);
    check_hmac(CONC__SHA256, k, 131,
               "Test Using Larger Than Block-Size Key - Hash Key First", 54,
               "60e431591ee0b67f0d8a26aacbf5b77f"
               "8e0bc6213728c5140546040f0ee37f54");
    const char *m7 = "This is a test using a larger than block-size key and "
                     "a larger than block-size data. The key needs to be "
                     "hashed before being used by the HMAC algorithm.";
    check_hmac(CONC__SHA256, k, 131, m7, strlen(m7),
               "9b09ffa71b942fcb27635fbcd5b0e944"
               "bfdc63644f0713938a7f51535c3a35e2");
    CHECK(conc__digest_equal("abcd", "abcd", 4));
    CHECK(!conc__digest_equal("abcd", "abce", 4));
}

/* ---- python3 ------------------------------------------------------------- */

/* python3 from PATH, or NULL (the interop tests then say so and skip). */
static const char *python(void)
{
    static char found[1024];
    const char *path = getenv("PATH");
    if (path == NULL) {
        path = "/usr/local/bin:/usr/bin:/bin";
    }
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        snprintf(found, sizeof found, "%.*s/python3", (int)n, path);
        if (n > 0 && access(found, X_OK) == 0) {
            return found;
        }
        path += n + (path[n] == ':');
    }
    return NULL;
}

/* tests/py_connection_peer.py, found beside this file. */
static const char *peer_script(void)
{
    static char path[1024];
    const char *slash = strrchr(__FILE__, '/');
    int dir = slash ? (int)(slash - __FILE__) : 1;
    snprintf(path, sizeof path, "%.*s/py_connection_peer.py", dir,
             slash ? __FILE__ : ".");
    return path;
}

#define SKIP_WITHOUT_PYTHON()                                                \
    do {                                                                     \
        if (python() == NULL) {                                              \
            printf("    (no python3 on PATH: skipped)\n");                   \
            return;                                                          \
        }                                                                    \
    } while (0)

/* Starts py_connection_peer.py MODE ADDR KEYHEX in the background. */
static pid_t spawn_peer(const char *mode, const char *addr, const char *key)
{
    char keyhex[256] = "-";
    if (key != NULL) {
        hex((const unsigned char *)key, strlen(key), keyhex);
    }
    char *argv[] = { (char *)python(), (char *)peer_script(), (char *)mode,
                     (char *)addr, keyhex, NULL };
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Connects to a Python listener that may not be up yet: retries while the
 * socket is missing or refuses, up to 10 s. */
static int connect_retry(conc_conn **c, const char *addr, const char *key)
{
    conc_client_opts o = { .authkey = key,
                           .authkey_len = key ? strlen(key) : 0,
                           .timeout = CONC_TIMEOUT(10) };
    double end = th_now() + 10;
    for (;;) {
        int err = conc_client_connect(c, addr, &o);
        if (err != CONC_ESYS || (errno != ENOENT && errno != ECONNREFUSED) ||
            th_now() > end) {
            return err;
        }
        th_sleep(0.02);
    }
}

TEST(digest_matches_python_hmac)
{
    SKIP_WITHOUT_PYTHON();
    char *argv[] = { (char *)python(), (char *)peer_script(), "digests",
                     NULL };
    char *out = NULL;
    check_exit(th_run(argv, &out, 20), 0);
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned kl, ml;
        char md5[64], sha[80], hmd5[64], hsha[80];
        CHECK_EQ(sscanf(line, "%u %u %63s %79s %63s %79s", &kl, &ml, md5, sha,
                        hmd5, hsha),
                 6);
        unsigned char key[128], msg[1000], d[32];
        char h[65];
        fill(key, kl, 11, 1);
        fill(msg, ml, 13, 5);
        conc__md5(msg, ml, d);
        hex(d, 16, h);
        CHECK_STR(h, md5);
        conc__sha256(msg, ml, d);
        hex(d, 32, h);
        CHECK_STR(h, sha);
        conc__hmac(CONC__MD5, key, kl, msg, ml, d);
        hex(d, 16, h);
        CHECK_STR(h, hmd5);
        conc__hmac(CONC__SHA256, key, kl, msg, ml, d);
        hex(d, 32, h);
        CHECK_STR(h, hsha);
        lines++;
    }
    CHECK_EQ(lines, 40);
    free(out);
}

/* ---- round trips --------------------------------------------------------- */

TEST(unix_path_roundtrip)
{
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/s1", dir);
    roundtrip(addr, NULL, 1000);
    CHECK(!exists(addr));
    roundtrip(addr, "sekrit", 100);
    CHECK(!exists(addr));
    /* The "unix:" form names the same kind of socket. */
    char uaddr[300];
    snprintf(uaddr, sizeof uaddr, "unix:%s", addr);
    roundtrip(uaddr, "k", 0);
    CHECK(!exists(addr));
    tmpdir_done(dir);
}

TEST(abstract_roundtrip)
{
    char addr[128];
    snprintf(addr, sizeof addr, "unix:@conc-test-%d-%u", (int)getpid(),
             (unsigned)(th_now() * 1e6));
    roundtrip(addr, NULL, 10);
    roundtrip(addr, "another key", 12345);
}

TEST(tcp_roundtrip_and_address)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0", NULL));
    const char *a = conc_listener_address(l);
    unsigned port = 0;
    CHECK_EQ(sscanf(a, "tcp:127.0.0.1:%u", &port), 1);
    CHECK(port > 0 && port < 65536);
    conc_listener_free(l);

    CHECK_OK(conc_listener_new(&l, "127.0.0.1:0", NULL));
    CHECK_EQ(sscanf(conc_listener_address(l), "127.0.0.1:%u", &port), 1);
    CHECK(port > 0);
    conc_listener_free(l);

    roundtrip("tcp:127.0.0.1:0", NULL, 5000);
    roundtrip("127.0.0.1:0", "tcp key", 70000);
    roundtrip("localhost:0", "k", 1);
}

TEST(tcp_ipv6_roundtrip)
{
    conc_listener *l = NULL;
    int err = conc_listener_new(&l, "[::1]:0", NULL);
    if (err == CONC_ESYS &&
        (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
        printf("    (no IPv6 loopback here: skipped)\n");
        return;
    }
    CHECK_OK(err);
    unsigned port = 0;
    CHECK_EQ(sscanf(conc_listener_address(l), "[::1]:%u", &port), 1);
    CHECK(port > 0);
    conc_listener_free(l);
    roundtrip("[::1]:0", NULL, 100);
    roundtrip("tcp:[::1]:0", "six", 100000);
}

TEST(null_address_private_dir)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, NULL, &(conc_listener_opts){ 0 }));
    char path[256];
    snprintf(path, sizeof path, "%s", conc_listener_address(l));
    CHECK(path[0] == '/');
    CHECK(exists(path));
    char dir[256];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    struct stat st;
    CHECK_EQ(stat(dir, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0700);
    serve_one_client(l, path, NULL, 3);
    /* close removes the socket and its directory; free after it is
     * harmless. */
    CHECK_OK(conc_listener_close(l));
    CHECK(!exists(path));
    CHECK(!exists(dir));
    CHECK_STR(conc_listener_address(l), path);
    conc_listener_free(l);
}

/* A child that sends big, then receives big, all checked. */
static int big_child(void *p)
{
    const char *addr = p;
    conc_conn *c = NULL;
    conc_client_opts o = { .authkey = "big", .authkey_len = 3 };
    if (conc_client_connect(&c, addr, &o) != 0) {
        return 1;
    }
    size_t n = (size_t)6 << 20;
    unsigned char *buf = malloc(n);
    fill(buf, n, 7, 1);
    int r = conc_conn_send(c, buf, n) == 0 ? 0 : 2;
    conc_msg m;
    if (r == 0 && conc_conn_recv(c, &m, 20) != 0) {
        r = 3;
    }
    if (r == 0) {
        size_t want = (size_t)5 << 20 | 17;
        unsigned char *b = malloc(want);
        fill(b, want, 13, 9);
        r = m.len == want && memcmp(m.data, b, want) == 0 ? 0 : 4;
        free(b);
        conc_msg_free(&m);
    }
    free(buf);
    conc_conn_free(c);
    return r;
}

TEST(tcp_large_messages_both_ways)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0",
                               &(conc_listener_opts){ .authkey = "big",
                                                      .authkey_len = 3 }));
    pid_t pid = th_fork(big_child, (void *)conc_listener_address(l));
    conc_conn *c = NULL;
    CHECK_OK(conc_listener_accept(l, &c, 10));
    conc_msg m;
    CHECK_OK(conc_conn_recv(c, &m, 20));
    size_t n = (size_t)6 << 20;
    unsigned char *want = malloc(n);
    fill(want, n, 7, 1);
    CHECK_EQ(m.len, n);
    CHECK(memcmp(m.data, want, n) == 0);
    conc_msg_free(&m);
    free(want);
    size_t bn = (size_t)5 << 20 | 17;
    unsigned char *b = malloc(bn);
    fill(b, bn, 13, 9);
    CHECK_OK(conc_conn_send(c, b, bn));
    check_exit(th_wait(pid, 20), 0);
    /* The peer is gone: sends fail with CONC_ECLOSED, never SIGPIPE
     * (which would kill this test). */
    int err = 0;
    for (int i = 0; i < 50 && err == 0; i++) {
        err = conc_conn_send(c, b, bn);
    }
    CHECK_ERR(err, CONC_ECLOSED);
    free(b);
    conc_conn_free(c);
    conc_listener_free(l);
}

/* ---- timeouts and close -------------------------------------------------- */

TEST(accept_timeout)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0", NULL));
    conc_conn *c = (conc_conn *)1;
    double t0 = th_now();
    CHECK_ERR(conc_listener_accept(l, &c, 0), CONC_ETIMEDOUT);
    CHECK(c == NULL);
    CHECK(th_now() - t0 < 1.0);
    t0 = th_now();
    CHECK_ERR(conc_listener_accept(l, &c, 0.2), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.2);
    CHECK(took < 2.0);
    CHECK_ERR(conc_listener_accept(l, &c, NAN), CONC_EINVAL);
    CHECK_ERR(conc_listener_accept(l, &c, -3), CONC_EINVAL);
    CHECK_ERR(conc_listener_accept(l, NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_listener_accept(NULL, &c, 1), CONC_EINVAL);
    conc_listener_free(l);
}

typedef struct accept_arg {
    conc_listener *l;
    int err;
    double ended;
} accept_arg;

static void *accept_thread(void *p)
{
    accept_arg *a = p;
    conc_conn *c = NULL;
    a->err = conc_listener_accept(a->l, &c, CONC_FOREVER);
    a->ended = th_now();
    conc_conn_free(c);
    return NULL;
}

TEST(close_wakes_blocked_accept)
{
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/s", dir);
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, addr, NULL));
    accept_arg a[2] = { { .l = l }, { .l = l } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_create(&t[i], NULL, accept_thread, &a[i]), 0);
    }
    th_sleep(0.2);
    double t0 = th_now();
    CHECK_OK(conc_listener_close(l));
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK_ERR(a[i].err, CONC_ECLOSED);
        CHECK(a[i].ended >= t0); /* it was close that ended the wait */
    }
    CHECK(th_now() - t0 < 2.0);
    CHECK(!exists(addr)); /* close unlinks, as Python's close() */
    conc_conn *c = NULL;
    CHECK_ERR(conc_listener_accept(l, &c, 1), CONC_ECLOSED);
    CHECK(strstr(conc_errdetail(), "closed") != NULL);
    CHECK_ERR(conc_listener_fileno(l), CONC_ECLOSED);
    CHECK_OK(conc_listener_close(l)); /* twice: harmless */
    CHECK_ERR(conc_client_connect(&c, addr, NULL), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    conc_listener_free(l);
    conc_listener_free(NULL);
    tmpdir_done(dir);
}

typedef struct take_later {
    int lfd;
    int fd; /* the connection accepted */
} take_later;

static void *accept_after_a_while(void *arg)
{
    take_later *t = arg;
    th_sleep(0.15);
    t->fd = accept(t->lfd, NULL, NULL); /* makes room in the queue */
    return NULL;
}

/* A Unix listener whose queue is full makes a client wait for room, as a
 * blocking connect would: CONC_ETIMEDOUT at the timeout if none comes,
 * and the connection once the listener accepts one of those queued. */
TEST(client_waits_for_room_in_a_full_unix_queue)
{
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/full", dir);
    int filler = -1;
    int lfd = th_unix_listener_full(path, &filler);
    conc_conn *c = NULL;
    double t0 = th_now();
    CHECK_ERR(conc_client_connect(&c, path, &(conc_client_opts){
                                                .timeout = CONC_TIMEOUT(0.3) }),
              CONC_ETIMEDOUT);
    double dt = th_now() - t0;
    CHECK(dt >= 0.29 && dt < 3.0);
    CHECK(strstr(conc_errdetail(), "queue stayed full") != NULL);
    CHECK(c == NULL);
    take_later t = { .lfd = lfd, .fd = -1 };
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, accept_after_a_while, &t), 0);
    CHECK_OK(conc_client_connect(&c, path, &(conc_client_opts){
                                               .timeout = CONC_TIMEOUT(10) }));
    CHECK(th_now() - t0 >= 0.29 + 0.1);
    pthread_join(th, NULL);
    CHECK(t.fd >= 0);
    conc_conn_free(c);
    close(t.fd);
    close(filler);
    close(lfd);
    unlink(path);
    tmpdir_done(dir);
}

TEST(fileno_polls_readable_then_accept_zero)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0",
                               &(conc_listener_opts){ .authkey = "p",
                                                      .authkey_len = 1,
                                                      .backlog = 4 }));
    struct pollfd p = { .fd = conc_listener_fileno(l), .events = POLLIN };
    CHECK_EQ(poll(&p, 1, 0), 0);
    client_arg a = { .addr = conc_listener_address(l), .key = "p", .n = 9 };
    pid_t pid = th_fork(client_child, &a);
    conc_conn *c = NULL;
    /* An event loop: wait on the descriptor, then accept with timeout 0,
     * which never waits for the handshake: it advances it and returns. */
    int err = CONC_ETIMEDOUT;
    int rounds = 0;
    while (err == CONC_ETIMEDOUT && rounds < 100) {
        CHECK_EQ(poll(&p, 1, 10000), 1);
        double t0 = th_now();
        err = conc_listener_accept(l, &c, 0);
        CHECK(th_now() - t0 < 0.5);
        rounds++;
    }
    CHECK_OK(err);
    CHECK_EQ(talk_second(c), 0);
    check_exit(th_wait(pid, 20), 0);
    conc_conn_free(c);
    CHECK_EQ(poll(&p, 1, 0), 0); /* nothing left to do */
    conc_listener_free(l);
}

/* ---- authentication failures --------------------------------------------- */

TEST(wrong_key_both_sides_then_good_client)
{
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/auth", dir);
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, addr,
                               &(conc_listener_opts){ .authkey = "right",
                                                      .authkey_len = 5 }));
    conc_conn *c = NULL;
    for (int i = 0; i < 2; i++) {
        /* A key differing in its last byte, then one of another length. */
        client_arg bad = { .addr = addr, .key = i == 0 ? "righT" : "wrong!",
                           .expect_err = CONC_EAUTH };
        pid_t pid = th_fork(client_child, &bad);
        CHECK_ERR(conc_listener_accept(l, &c, 10), CONC_EAUTH);
        CHECK(strstr(conc_errdetail(), "handshake failed") != NULL);
        CHECK(strstr(conc_errdetail(), "keys differ") != NULL);
        CHECK(c == NULL);
        check_exit(th_wait(pid, 20), 0);
    }
    serve_one_client(l, addr, "right", 77);
    conc_listener_free(l);
    CHECK(!exists(addr));
    tmpdir_done(dir);
}

/* ---- raw peers: frames by hand on a connection's descriptor ---------- */

static void frame_send(int fd, const void *data, size_t len)
{
    unsigned char h[4] = { (unsigned char)(len >> 24),
                           (unsigned char)(len >> 16),
                           (unsigned char)(len >> 8), (unsigned char)len };
    CHECK_EQ(send(fd, h, 4, MSG_NOSIGNAL), 4);
    if (len > 0) {
        CHECK_EQ(send(fd, data, len, MSG_NOSIGNAL), (long long)len);
    }
}

/* Reads exactly n bytes within timeout: n, or fewer at end of file or
 * when time ran out. */
static size_t read_n(int fd, unsigned char *p, size_t n, double timeout)
{
    double end = th_now() + timeout;
    size_t have = 0;
    while (have < n) {
        struct pollfd q = { .fd = fd, .events = POLLIN };
        int ms = (int)((end - th_now()) * 1000);
        if (ms <= 0 || poll(&q, 1, ms) != 1) {
            break;
        }
        ssize_t r = recv(fd, p + have, n - have, 0);
        if (r <= 0) {
            break;
        }
        have += (size_t)r;
    }
    return have;
}

/* One frame into buf (cap bytes): its length, or -1 (end of file, time
 * out, too long). */
static long frame_recv(int fd, unsigned char *buf, size_t cap, double timeout)
{
    unsigned char h[4];
    if (read_n(fd, h, 4, timeout) != 4) {
        return -1;
    }
    size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 |
               h[3];
    if (n > cap || read_n(fd, buf, n, timeout) != n) {
        return -1;
    }
    return (long)n;
}

/* Whether fd sees end of file within timeout (nothing else first). */
static bool sees_eof(int fd, double timeout)
{
    unsigned char b;
    struct pollfd q = { .fd = fd, .events = POLLIN };
    if (poll(&q, 1, (int)(timeout * 1000)) != 1) {
        return false;
    }
    /* A TCP peer that closes with bytes of ours unread resets instead. */
    ssize_t r = recv(fd, &b, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* A raw connection to addr: a keyless conc client whose descriptor the
 * test then drives by hand. */
static conc_conn *raw_connect(const char *addr)
{
    conc_conn *c = NULL;
    CHECK_OK(conc_client_connect(&c, addr,
                                 &(conc_client_opts){
                                     .timeout = CONC_TIMEOUT(10) }));
    return c;
}

/* The answer to a challenge frame's nonce m[0..n), in the given form:
 * 0 raw HMAC-MD5, 1 "{md5}", 2 "{sha256}".  Its length. */
static size_t answer_form(const char *key, const unsigned char *m, size_t n,
                          int form, unsigned char *out)
{
    static const char *const prefix[] = { "", "{md5}", "{sha256}" };
    size_t pl = strlen(prefix[form]);
    memcpy(out, prefix[form], pl);
    conc__digest_kind kind = form == 2 ? CONC__SHA256 : CONC__MD5;
    conc__hmac(kind, key, strlen(key), m, n, out + pl);
    return pl + conc__digest_len(kind);
}

/* ---- handshakes run together ----------------------------------------- */

typedef struct good_client {
    const char *addr;
    const char *key;
    int err;
    double connected;
    pthread_t t;
} good_client;

static void *good_client_thread(void *p)
{
    good_client *g = p;
    conc_conn *c = NULL;
    g->err = conc_client_connect(&c, g->addr,
                                 &(conc_client_opts){
                                     .authkey = g->key,
                                     .authkey_len = strlen(g->key),
                                     .timeout = CONC_TIMEOUT(20) });
    g->connected = th_now();
    if (g->err == 0) {
        conc_conn_send(c, "hi", 2);
        conc_msg m;
        if (conc_conn_recv(c, &m, 20) == 0) {
            conc_msg_free(&m);
        }
    }
    conc_conn_free(c);
    return NULL;
}

/* Three clients connect and say nothing; then an authorised one comes.
 * It is accepted at once (a listener that ran handshakes one at a time
 * would spend a whole handshake limit on each silent one first); the
 * silent ones get their challenge, then are dropped when their
 * handshake_timeout runs out, each reported by one accept as CONC_EAUTH
 * with the reason. */
TEST(silent_clients_do_not_delay_an_authorised_one)
{
    const double hs = 2.0;
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0",
                               &(conc_listener_opts){
                                   .authkey = "k", .authkey_len = 1,
                                   .handshake_timeout = CONC_TIMEOUT(hs) }));
    const char *addr = conc_listener_address(l);
    conc_conn *silent[3];
    for (int i = 0; i < 3; i++) {
        silent[i] = raw_connect(addr);
    }
    double t0 = th_now();
    good_client g = { .addr = addr, .key = "k" };
    CHECK_EQ(pthread_create(&g.t, NULL, good_client_thread, &g), 0);
    conc_conn *c = NULL;
    CHECK_OK(conc_listener_accept(l, &c, 20));
    double took = th_now() - t0;
    CHECK(took < hs / 2); /* at once: well under one handshake timeout */
    conc_msg m;
    CHECK_OK(conc_conn_recv(c, &m, 10));
    CHECK(m.len == 2 && memcmp(m.data, "hi", 2) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_conn_send(c, "ok", 2));
    pthread_join(g.t, NULL);
    CHECK_OK(g.err);
    conc_conn_free(c);

    /* The silent ones: dropped when their time is up, not before. */
    for (int i = 0; i < 3; i++) {
        CHECK_ERR(conc_listener_accept(l, &c, 20), CONC_EAUTH);
        CHECK(th_now() - t0 >= hs);
        CHECK(strstr(conc_errdetail(), "handshake timeout") != NULL);
        CHECK(strstr(conc_errdetail(), "client 127.0.0.1:") != NULL);
    }
    CHECK(th_now() - t0 < hs + 5);
    for (int i = 0; i < 3; i++) {
        int fd = conc_conn_fileno(silent[i]);
        unsigned char buf[64];
        CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 31); /* challenge */
        CHECK(memcmp(buf, "#CHALLENGE#", 11) == 0);
        CHECK(sees_eof(fd, 5));
        conc_conn_free(silent[i]);
    }
    /* Nothing else is pending. */
    CHECK_ERR(conc_listener_accept(l, &c, 0.1), CONC_ETIMEDOUT);
    conc_listener_free(l);
}

/* Hostile or broken clients are refused at once (far sooner than the
 * handshake timeout), each with its reason, and never cost an authorised
 * client anything: garbage in place of an answer, a header announcing
 * 1 MiB, the 8-byte long form, a client that hangs up after the
 * challenge, one that hangs up halfway through its answer. */
TEST(garbage_and_vanishing_clients_are_refused_at_once)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0",
                               &(conc_listener_opts){
                                   .authkey = "k", .authkey_len = 1,
                                   .handshake_timeout = CONC_TIMEOUT(30) }));
    const char *addr = conc_listener_address(l);
    static const char *const reason[] = {
        "wrong", "longer than 256", "longer than 256", "closed", "closed",
    };
    for (int kind = 0; kind < 5; kind++) {
        conc_conn *r = raw_connect(addr);
        int fd = conc_conn_fileno(r);
        double t0 = th_now();
        /* The challenge comes first, from our accept. */
        conc_conn *c = NULL;
        CHECK_ERR(conc_listener_accept(l, &c, 0), CONC_ETIMEDOUT);
        unsigned char buf[300];
        CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 31);
        if (kind == 0) {
            frame_send(fd, "garbage, not a digest", 21);
        } else if (kind == 1) {
            unsigned char h[4] = { 0, 0x10, 0, 0 };
            CHECK_EQ(send(fd, h, 4, MSG_NOSIGNAL), 4);
        } else if (kind == 2) {
            unsigned char h[12] = { 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
                                    0, 0, 0, 16 };
            CHECK_EQ(send(fd, h, 12, MSG_NOSIGNAL), 12);
        } else if (kind == 4) {
            unsigned char h[6] = { 0, 0, 0, 16, 1, 2 };
            CHECK_EQ(send(fd, h, 6, MSG_NOSIGNAL), 6);
        }
        if (kind >= 3) {
            conc_conn_free(r);
            r = NULL;
        }
        CHECK_ERR(conc_listener_accept(l, &c, 10), CONC_EAUTH);
        CHECK(th_now() - t0 < 5.0);
        CHECK(strstr(conc_errdetail(), reason[kind]) != NULL);
        if (kind == 0) {
            /* Told before the hang-up, as Python's listener does. */
            CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 9);
            CHECK(memcmp(buf, "#FAILURE#", 9) == 0);
        }
        if (r != NULL) {
            CHECK(sees_eof(fd, 5));
            conc_conn_free(r);
        }
    }
    /* And the listener serves an authorised client as before. */
    good_client g = { .addr = addr, .key = "k" };
    CHECK_EQ(pthread_create(&g.t, NULL, good_client_thread, &g), 0);
    conc_conn *c = NULL;
    CHECK_OK(conc_listener_accept(l, &c, 10));
    conc_msg m;
    CHECK_OK(conc_conn_recv(c, &m, 10));
    conc_msg_free(&m);
    CHECK_OK(conc_conn_send(c, "ok", 2));
    pthread_join(g.t, NULL);
    CHECK_OK(g.err);
    conc_conn_free(c);
    conc_listener_free(l);
}

/* A raw client that answers correctly but only after a pause: accept
 * with timeout 0 returns at once each time (an accept that ran the whole
 * handshake inside would wait for the client), and the connection goes
 * through on a later call. */
typedef struct slow_client {
    const char *addr;
    double pause;
    int result;
    pthread_t t;
} slow_client;

static void *slow_client_thread(void *p)
{
    slow_client *s = p;
    s->result = 1;
    conc_conn *r = raw_connect(s->addr);
    int fd = conc_conn_fileno(r);
    unsigned char buf[300], ans[64];
    long n = frame_recv(fd, buf, sizeof buf, 10);
    if (n == 31) {
        th_sleep(s->pause);
        frame_send(fd, ans, answer_form("slow", buf + 11, 20, 0, ans));
        if (frame_recv(fd, buf, sizeof buf, 10) == 9 &&
            memcmp(buf, "#WELCOME#", 9) == 0) {
            th_sleep(s->pause);
            /* Our own challenge, checked as a client would. */
            unsigned char ch[31];
            memcpy(ch, "#CHALLENGE#", 11);
            memset(ch + 11, 0x42, 20);
            frame_send(fd, ch, sizeof ch);
            unsigned char want[16];
            conc__hmac(CONC__MD5, "slow", 4, ch + 11, 20, want);
            if (frame_recv(fd, buf, sizeof buf, 10) == 16 &&
                memcmp(buf, want, 16) == 0) {
                frame_send(fd, "#WELCOME#", 9);
                s->result = 0;
            }
        }
    }
    conc_msg m;
    if (s->result == 0 && (conc_conn_recv(r, &m, 10) != 0 || m.len != 3)) {
        s->result = 2;
    }
    conc_msg_free(&m);
    conc_conn_free(r);
    return NULL;
}

TEST(accept_zero_never_waits_for_a_handshake)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-slow-accept",
                               &(conc_listener_opts){ .authkey = "slow",
                                                      .authkey_len = 4 }));
    slow_client s = { .addr = conc_listener_address(l), .pause = 0.4 };
    CHECK_EQ(pthread_create(&s.t, NULL, slow_client_thread, &s), 0);
    conc_conn *c = NULL;
    int err = CONC_ETIMEDOUT;
    int timeouts = 0;
    double start = th_now();
    while (err == CONC_ETIMEDOUT && th_now() - start < 10) {
        double t0 = th_now();
        err = conc_listener_accept(l, &c, 0);
        CHECK(th_now() - t0 < 0.2); /* never the client's pause */
        if (err == CONC_ETIMEDOUT) {
            CHECK(strstr(conc_errdetail(), "handshake") != NULL);
            timeouts++;
            th_sleep(0.01);
        }
    }
    CHECK_OK(err);
    CHECK(timeouts >= 2); /* both pauses were waited out by polling */
    CHECK_OK(conc_conn_send(c, "hey", 3));
    pthread_join(s.t, NULL);
    CHECK_EQ(s.result, 0);
    conc_conn_free(c);
    conc_listener_free(l);
}

/* ---- one bit wrong is wrong (planted-bug guard: the digest compare) --- */

/* A raw client on our listener answers the challenge in form (0 raw MD5,
 * 1 "{md5}", 2 "{sha256}") with one bit flipped in byte flip of the MAC
 * (-1: none).  The listener must say #FAILURE# and accept CONC_EAUTH;
 * unflipped it says #WELCOME# (and the rest of the handshake runs). */
static void listener_judges(conc_listener *l, int form, int flip)
{
    conc_conn *r = raw_connect(conc_listener_address(l));
    int fd = conc_conn_fileno(r);
    conc_conn *c = NULL;
    CHECK_ERR(conc_listener_accept(l, &c, 0), CONC_ETIMEDOUT);
    unsigned char buf[300], ans[64];
    CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 31);
    size_t n = answer_form("bits", buf + 11, 20, form, ans);
    size_t mac_at = form == 0 ? 0 : form == 1 ? 5 : 8;
    if (flip >= 0) {
        size_t at = flip == 0 ? mac_at : n - 1;
        ans[at] ^= flip == 0 ? 0x80 : 0x01;
    }
    frame_send(fd, ans, n);
    if (flip >= 0) {
        CHECK_ERR(conc_listener_accept(l, &c, 10), CONC_EAUTH);
        CHECK(strstr(conc_errdetail(), "wrong") != NULL);
        CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 9);
        CHECK(memcmp(buf, "#FAILURE#", 9) == 0);
        CHECK(sees_eof(fd, 5));
    } else {
        /* Handshakes advance inside accept: timeout 0 takes each step. */
        CHECK_ERR(conc_listener_accept(l, &c, 0), CONC_ETIMEDOUT);
        CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 9);
        CHECK(memcmp(buf, "#WELCOME#", 9) == 0);
        unsigned char ch[31];
        memcpy(ch, "#CHALLENGE#", 11);
        memset(ch + 11, 7, 20);
        frame_send(fd, ch, sizeof ch);
        CHECK_ERR(conc_listener_accept(l, &c, 0), CONC_ETIMEDOUT);
        CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 16);
        frame_send(fd, "#WELCOME#", 9);
        CHECK_OK(conc_listener_accept(l, &c, 10));
        conc_conn_free(c);
    }
    conc_conn_free(r);
}

/* Our client against a raw server that answers our challenge with one
 * bit flipped: the client must say #FAILURE# and return CONC_EAUTH. */
typedef struct judged_client {
    const char *addr;
    int err;
    pthread_t t;
} judged_client;

static void *judged_client_thread(void *p)
{
    judged_client *j = p;
    conc_conn *c = NULL;
    j->err = conc_client_connect(&c, j->addr,
                                 &(conc_client_opts){
                                     .authkey = "bits", .authkey_len = 4,
                                     .timeout = CONC_TIMEOUT(10) });
    conc_conn_free(c);
    return NULL;
}

static void client_judges(conc_listener *raw, int form, int flip)
{
    judged_client j = { .addr = conc_listener_address(raw) };
    CHECK_EQ(pthread_create(&j.t, NULL, judged_client_thread, &j), 0);
    conc_conn *s = NULL;
    CHECK_OK(conc_listener_accept(raw, &s, 10));
    int fd = conc_conn_fileno(s);
    unsigned char buf[300], ans[64];
    unsigned char ch[31];
    memcpy(ch, "#CHALLENGE#", 11);
    memset(ch + 11, 9, 20);
    frame_send(fd, ch, sizeof ch);
    CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 16);
    frame_send(fd, "#WELCOME#", 9);
    CHECK_EQ(frame_recv(fd, buf, sizeof buf, 5), 31);
    size_t n = answer_form("bits", buf + 11, 20, form, ans);
    size_t mac_at = form == 0 ? 0 : form == 1 ? 5 : 8;
    if (flip >= 0) {
        size_t at = flip == 0 ? mac_at : n - 1;
        ans[at] ^= flip == 0 ? 0x80 : 0x01;
    }
    frame_send(fd, ans, n);
    long got = frame_recv(fd, buf, sizeof buf, 5);
    if (got != 9) {
        th_fail(__FILE__, __LINE__, "form %d flip %d: %ld", form, flip, got);
    }
    pthread_join(j.t, NULL);
    if (flip >= 0) {
        CHECK(memcmp(buf, "#FAILURE#", 9) == 0);
        CHECK_ERR(j.err, CONC_EAUTH);
    } else {
        CHECK(memcmp(buf, "#WELCOME#", 9) == 0);
        CHECK_OK(j.err);
    }
    conc_conn_free(s);
}

TEST(digest_with_one_bit_flipped_is_refused_both_ways)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-bits-listener",
                               &(conc_listener_opts){ .authkey = "bits",
                                                      .authkey_len = 4 }));
    conc_listener *raw = NULL;
    CHECK_OK(conc_listener_new(&raw, "unix:@conc-test-bits-raw", NULL));
    for (int form = 0; form < 3; form++) {
        for (int flip = -1; flip < 2; flip++) {
            listener_judges(l, form, flip);
            client_judges(raw, form, flip);
        }
    }
    conc_listener_free(raw);
    conc_listener_free(l);
}

/* A listener that accepts but never answers: the client's timeout holds. */
TEST(client_handshake_timeout)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp:127.0.0.1:0", NULL));
    conc_conn *c = NULL;
    double t0 = th_now();
    CHECK_ERR(conc_client_connect(&c, conc_listener_address(l),
                                  &(conc_client_opts){ .authkey = "x",
                                                       .authkey_len = 1,
                                                       .timeout = CONC_TIMEOUT(0.3) }),
              CONC_EAUTH);
    double took = th_now() - t0;
    CHECK(took >= 0.3);
    CHECK(took < 3.0);
    CHECK(c == NULL);
    conc_listener_free(l);
}

/* ---- addresses and errors ------------------------------------------------ */

TEST(bad_addresses_einval)
{
    static const char *bad[] = {
        "", "unix:", "unix:@", "nohost", "1.2.3.4", "1.2.3.4:", "1.2.3.4:x",
        "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:123456", "::1:80",
        "[::1]80", "[::1]", "[zz]:1", "tcp:", "tcp:300.1.1.1:5",
        "example.invalid:80", "[::1:5", "tcp://", "tcp://1.2.3.4",
        "tcp://host.invalid:5", "udp://1.2.3.4:5",
    };
    conc_listener *l = (conc_listener *)1;
    conc_conn *c = (conc_conn *)1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(conc_listener_new(&l, bad[i], NULL), CONC_EINVAL);
        CHECK(l == NULL);
        CHECK(strncmp(conc_errdetail(), "conc_listener_new: ", 19) == 0);
        CHECK_ERR(conc_client_connect(&c, bad[i], NULL), CONC_EINVAL);
        CHECK(c == NULL);
        CHECK(strncmp(conc_errdetail(), "conc_client_connect: ", 21) == 0);
    }
    /* The detail says what is wrong and which forms there are: the
     * user who wrote a URL scheme libconc lacks is told the one it has. */
    CHECK_ERR(conc_listener_new(&l, "udp://127.0.0.1:0", NULL), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "'udp://127.0.0.1:0'") != NULL);
    CHECK(strstr(conc_errdetail(), "tcp://host:port") != NULL);
    CHECK_ERR(conc_client_connect(&c, "1.2.3.4:99999", NULL), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "port '99999'") != NULL);
    CHECK_ERR(conc_client_connect(&c, "example.invalid:80", NULL),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "not resolved") != NULL);
    char longp[200];
    memset(longp, 'x', sizeof longp);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    CHECK_ERR(conc_listener_new(&l, longp, NULL), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "199 bytes") != NULL);
    CHECK_ERR(conc_client_connect(&c, longp, NULL), CONC_EINVAL);
    CHECK_ERR(conc_client_connect(&c, NULL, NULL), CONC_EINVAL);
    /* A client cannot connect to port 0. */
    CHECK_ERR(conc_client_connect(&c, "127.0.0.1:0", NULL), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "port 0") != NULL);
    CHECK_ERR(conc_listener_new(NULL, "127.0.0.1:0", NULL), CONC_EINVAL);
    CHECK_ERR(conc_client_connect(NULL, "127.0.0.1:1", NULL), CONC_EINVAL);
    CHECK_ERR(conc_listener_new(&l, "127.0.0.1:0",
                                &(conc_listener_opts){ .backlog = -1 }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "backlog -1") != NULL);
    CHECK_ERR(conc_listener_new(&l, "127.0.0.1:0",
                                &(conc_listener_opts){ .authkey_len = 3 }),
              CONC_EINVAL);
    CHECK_ERR(conc_listener_new(&l, "127.0.0.1:0",
                                &(conc_listener_opts){
                                    .handshake_timeout = CONC_TIMEOUT(NAN) }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "handshake_timeout") != NULL);
    CHECK_ERR(conc_listener_new(&l, "127.0.0.1:0",
                                &(conc_listener_opts){
                                    .handshake_timeout = CONC_TIMEOUT(-2) }),
              CONC_EINVAL);
    CHECK_ERR(conc_client_connect(&c, "127.0.0.1:1",
                                  &(conc_client_opts){ .authkey_len = 3 }),
              CONC_EINVAL);
    CHECK_ERR(conc_client_connect(&c, "127.0.0.1:1",
                                  &(conc_client_opts){
                                      .timeout = CONC_TIMEOUT(NAN) }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "timeout") != NULL);
    CHECK_ERR(conc_client_connect(&c, "127.0.0.1:1",
                                  &(conc_client_opts){
                                      .timeout = CONC_TIMEOUT(-2) }),
              CONC_EINVAL);
    CHECK_ERR(conc_listener_fileno(NULL), CONC_EINVAL);
    CHECK_ERR(conc_listener_close(NULL), CONC_EINVAL);
    CHECK_ERR(conc_listener_port(NULL), CONC_EINVAL);
    CHECK(conc_listener_address(NULL) == NULL);
}

TEST(tcp_url_form_and_port_number)
{
    /* The form a user reached for first, "tcp://127.0.0.1:0", works, and
     * the port is there as a number (Python's listener.address[1]). */
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "tcp://127.0.0.1:0",
                               &(conc_listener_opts){ .authkey = "u",
                                                      .authkey_len = 1 }));
    int port = conc_listener_port(l);
    CHECK(port > 0 && port < 65536);
    char want[64];
    snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port);
    CHECK_STR(conc_listener_address(l), want);
    serve_one_client(l, want, "u", 50);
    /* The port outlives close, as the address does. */
    CHECK_OK(conc_listener_close(l));
    CHECK_EQ(conc_listener_port(l), port);
    conc_listener_free(l);
    /* The other TCP forms give the same number; a Unix socket has none. */
    if (conc_listener_new(&l, "[::1]:0", NULL) == 0) { /* else no IPv6 */
        unsigned p6 = 0;
        CHECK_EQ(sscanf(conc_listener_address(l), "[::1]:%u", &p6), 1);
        CHECK_EQ(conc_listener_port(l), p6);
        conc_listener_free(l);
    }
    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-port", NULL));
    CHECK_ERR(conc_listener_port(l), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "no port") != NULL);
    conc_listener_free(l);
}

/* The options' timeouts are conc_timeouts: CONC_TIMEOUT(0) does not
 * wait.  A client with a key cannot pass a handshake without waiting;
 * without one, a Unix connection completes at once; a listener whose
 * handshake_timeout is 0 refuses a client that is not quick. */
TEST(timeout_zero_options_do_not_wait)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-t0", NULL));
    conc_conn *c = NULL;
    CHECK_OK(conc_client_connect(&c, "unix:@conc-test-t0",
                                 &(conc_client_opts){
                                     .timeout = CONC_TIMEOUT(0) }));
    conc_conn_free(c);
    conc_listener_free(l);

    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-t0",
                               &(conc_listener_opts){ .authkey = "z",
                                                      .authkey_len = 1 }));
    double t0 = th_now();
    CHECK_ERR(conc_client_connect(&c, "unix:@conc-test-t0",
                                  &(conc_client_opts){
                                      .authkey = "z", .authkey_len = 1,
                                      .timeout = CONC_TIMEOUT(0) }),
              CONC_EAUTH);
    CHECK(th_now() - t0 < 1.0);
    CHECK(strstr(conc_errdetail(), "(0 s)") != NULL);
    conc_listener_free(l);

    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-t0",
                               &(conc_listener_opts){
                                   .authkey = "z", .authkey_len = 1,
                                   .handshake_timeout = CONC_TIMEOUT(0) }));
    /* A client that takes a moment (here: says nothing) is refused at
     * once.  (One that answers within microseconds may still pass: the
     * limit is checked whenever accept would wait.) */
    conc_conn *r = raw_connect("unix:@conc-test-t0");
    t0 = th_now();
    CHECK_ERR(conc_listener_accept(l, &c, 10), CONC_EAUTH);
    CHECK(th_now() - t0 < 1.0);
    CHECK(strstr(conc_errdetail(), "handshake timeout (0 s)") != NULL);
    conc_conn_free(r);
    conc_listener_free(l);
}

/* Connections inherit the listener's and the client's limit on what
 * they receive. */
TEST(connections_take_max_message_from_the_options)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "unix:@conc-test-maxmsg",
                               &(conc_listener_opts){
                                   .max_message_bytes = 10 }));
    conc_conn *cl = NULL, *sv = NULL;
    CHECK_OK(conc_client_connect(&cl, "unix:@conc-test-maxmsg",
                                 &(conc_client_opts){
                                     .max_message_bytes = 20 }));
    CHECK_OK(conc_listener_accept(l, &sv, 10));
    char buf[32] = { 0 };
    conc_msg m;
    CHECK_OK(conc_conn_send(sv, buf, 20));
    CHECK_OK(conc_conn_recv(cl, &m, 5));
    conc_msg_free(&m);
    CHECK_OK(conc_conn_send(sv, buf, 21));
    CHECK_ERR(conc_conn_recv(cl, &m, 5), CONC_ETOOBIG);
    CHECK_OK(conc_conn_send(cl, buf, 10));
    CHECK_OK(conc_conn_recv(sv, &m, 5));
    conc_msg_free(&m);
    CHECK_OK(conc_conn_send(cl, buf, 11));
    CHECK_ERR(conc_conn_recv(sv, &m, 5), CONC_ETOOBIG);
    CHECK(strstr(conc_errdetail(), "max_message_bytes (10)") != NULL);
    conc_conn_free(cl);
    conc_conn_free(sv);
    conc_listener_free(l);
}

TEST(connect_missing_and_refused)
{
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/none", dir);
    conc_conn *c = NULL;
    CHECK_ERR(conc_client_connect(&c, addr, NULL), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    char abs[128];
    snprintf(abs, sizeof abs, "unix:@conc-test-nobody-%d", (int)getpid());
    CHECK_ERR(conc_client_connect(&c, abs, NULL), CONC_ESYS);
    CHECK_EQ(errno, ECONNREFUSED);
    CHECK(strstr(conc_errdetail(), "connect('unix:@conc-test-nobody") !=
          NULL);
    CHECK(strstr(conc_errdetail(), "Connection refused") != NULL);
    /* A TCP port that was just free. */
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "127.0.0.1:0", NULL));
    char tcp[64];
    snprintf(tcp, sizeof tcp, "%s", conc_listener_address(l));
    conc_listener_free(l);
    CHECK_ERR(conc_client_connect(&c, tcp, &(conc_client_opts){ .timeout = CONC_TIMEOUT(5) }),
              CONC_ESYS);
    CHECK_EQ(errno, ECONNREFUSED);
    CHECK(c == NULL);

    /* An existing file at the path: EADDRINUSE, and it is left alone. */
    snprintf(addr, sizeof addr, "%s/taken", dir);
    FILE *f = fopen(addr, "w");
    CHECK(f != NULL);
    fclose(f);
    CHECK_ERR(conc_listener_new(&l, addr, NULL), CONC_ESYS);
    CHECK_EQ(errno, EADDRINUSE);
    CHECK(strstr(conc_errdetail(), "bind(") != NULL);
    CHECK(strstr(conc_errdetail(), "in use") != NULL);
    CHECK(exists(addr));
    CHECK_EQ(unlink(addr), 0);
    tmpdir_done(dir);
}

static int free_inherited(void *p)
{
    conc_listener_free(p);
    return 0;
}

TEST(forked_child_free_keeps_parents_socket)
{
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/fork", dir);
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, addr, NULL));
    check_exit(th_wait(th_fork(free_inherited, l), 10), 0);
    CHECK(exists(addr));
    roundtrip(NULL, NULL, 0); /* unrelated listeners still fine */
    serve_one_client(l, addr, NULL, 4);
    conc_listener_free(l);
    CHECK(!exists(addr));
    tmpdir_done(dir);
}

static int sleeps_holding_the_fds(void *arg)
{
    (void)arg;
    th_sleep(3.0);
    return 0;
}

/* A child forked after the listener holds its descriptor; the creator's
 * close still stops it: connections are refused and the port can be
 * bound again at once.  It stayed listening in the child (a pool's
 * workers alike): clients connected and waited for an accept that never
 * came, and a new listener got EADDRINUSE until the child ended. */
TEST(close_stops_the_copies_children_inherited)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "127.0.0.1:0", NULL));
    char tcp[64];
    snprintf(tcp, sizeof tcp, "%s", conc_listener_address(l));
    pid_t kid = th_fork(sleeps_holding_the_fds, NULL);
    CHECK_OK(conc_listener_close(l));
    conc_conn *c = NULL;
    CHECK_ERR(conc_client_connect(&c, tcp, &(conc_client_opts){
                                               .timeout = CONC_TIMEOUT(2) }),
              CONC_ESYS);
    CHECK_EQ(errno, ECONNREFUSED);
    conc_listener *again = NULL;
    CHECK_OK(conc_listener_new(&again, tcp, NULL));
    CHECK_EQ(kill(kid, 0), 0); /* the copy's holder still runs */
    conc_listener_free(again);
    conc_listener_free(l);
    kill(kid, SIGKILL);
    th_wait(kid, 10);
}

/* A child accepting on its copy: 0 when the accept ended with
 * CONC_ECLOSED (the creator closed the listener), else what it got. */
static int accepts_until_closed(void *arg)
{
    conc_listener *l = arg;
    conc_conn *c = NULL;
    int err = conc_listener_accept(l, &c, 5.0);
    if (err == CONC_ECLOSED &&
        strstr(conc_errdetail(), "closed by the process that made it") !=
            NULL) {
        return 0;
    }
    return err == CONC_ETIMEDOUT ? 2 : err == CONC_ESYS ? 3 : 4;
}

/* The creator's close ends an accept a forked child is blocked in, with
 * CONC_ECLOSED, at once, for TCP and Unix sockets.  The child's accept
 * got CONC_ESYS (EINVAL) at once, again and again (TCP), or spun on a
 * hang-up that yields no connection past its timeout (Unix). */
TEST(close_ends_the_accepts_of_children)
{
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/served", dir);
    const char *addrs[] = { "127.0.0.1:0", path };
    for (int i = 0; i < 2; i++) {
        conc_listener *l = NULL;
        CHECK_OK(conc_listener_new(&l, addrs[i], NULL));
        pid_t kid = th_fork(accepts_until_closed, l);
        th_sleep(0.3); /* the child waits in its accept */
        double t0 = th_now();
        CHECK_OK(conc_listener_close(l));
        check_exit(th_wait(kid, 10), 0);
        CHECK(th_now() - t0 < 2.0);
        conc_listener_free(l);
    }
    tmpdir_done(dir);
}

static void *accept_in_a_thread(void *arg)
{
    conc_conn *c = NULL;
    return (void *)(intptr_t)conc_listener_accept(arg, &c, 10.0);
}

/* In a child: a thread accepts, the child closes its copy; 0 when that
 * accept ended with CONC_ECLOSED at once. */
static int closes_its_copy(void *arg)
{
    conc_listener *l = arg;
    pthread_t th;
    if (pthread_create(&th, NULL, accept_in_a_thread, l) != 0) {
        return 2;
    }
    th_sleep(0.2);
    double t0 = th_now();
    conc_listener_close(l);
    void *r;
    pthread_join(th, &r);
    return (int)(intptr_t)r == CONC_ECLOSED && th_now() - t0 < 2.0 ? 0 : 3;
}

/* A forked child that accepts on its copy and closes it ends its own
 * accept, and leaves the creator's listener working.  The copy shared the
 * creator's epoll set and close eventfd: the child's close woke the
 * creator, whose accepts said CONC_ECLOSED from then on. */
TEST(child_close_leaves_the_creators_listener_working)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, "127.0.0.1:0", NULL));
    check_exit(th_wait(th_fork(closes_its_copy, l), 10), 0);
    conc_conn *c = NULL;
    CHECK_ERR(conc_listener_accept(l, &c, 0.2), CONC_ETIMEDOUT);
    serve_one_client(l, conc_listener_address(l), NULL, 2);
    conc_listener_free(l);
}

/* ---- failures of the system calls and allocations (the fault seam) --- */

/* How many conc-listener-* directories /tmp holds (a NULL address's). */
static int tmp_listener_dirs(void)
{
    DIR *d = opendir("/tmp");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strncmp(e->d_name, "conc-listener-", 14) == 0;
    }
    closedir(d);
    return n;
}

/* conc_listener_new with its n-th system call or allocation failing, for
 * n = 1, 2, ... until it succeeds: each failure is CONC_ENOMEM or
 * CONC_ESYS with a detail, and leaves no descriptor, file or directory
 * behind. */
TEST(listener_new_fails_cleanly_at_every_step)
{
    char *dir = tmpdir_new();
    char path[256];
    snprintf(path, sizeof path, "%s/fault", dir);
    const char *addrs[] = { "tcp:127.0.0.1:0", NULL, path,
                            "unix:@conc-test-fault-new" };
    unsetenv("TMPDIR");
    for (int k = 0; k < 4; k++) {
        for (int keyed = 0; keyed < 2; keyed++) {
            conc_listener_opts o = { .authkey = keyed ? "f" : NULL,
                                     .authkey_len = keyed ? 1 : 0 };
            int fds = th_count_fds();
            int dirs = tmp_listener_dirs();
            int failures = 0;
            for (long n = 1;; n++) {
                conc_listener *l = (conc_listener *)1;
                conc__fault_arm(n);
                int err = conc_listener_new(&l, addrs[k], &o);
                bool fired = conc__fault_fired();
                conc__fault_arm(0);
                if (err == 0) {
                    CHECK(!fired);
                    conc_listener_free(l);
                    break;
                }
                CHECK(fired);
                CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
                CHECK(strncmp(conc_errdetail(), "conc_listener_new: ", 19) ==
                      0);
                CHECK(l == NULL);
                CHECK_EQ(th_count_fds(), fds);
                CHECK_EQ(tmp_listener_dirs(), dirs);
                CHECK(!exists(path));
                failures++;
            }
            /* socket, bind, listen, epoll, eventfd, epoll_ctl x2 and the
             * allocations at least; a key adds more. */
            CHECK(failures >= (keyed ? 12 : 8));
            CHECK_EQ(th_count_fds(), fds);
        }
    }
    tmpdir_done(dir);
}

/* A keyed server in a child that accepts for ever and echoes one
 * message per connection. */
static int echo_server_child(void *p)
{
    conc_listener *l = p;
    for (;;) {
        conc_conn *c = NULL;
        int err = conc_listener_accept(l, &c, 30);
        if (err == CONC_ETIMEDOUT || err == CONC_ECLOSED) {
            return 0;
        }
        if (err == 0) {
            conc_msg m;
            if (conc_conn_recv(c, &m, 5) == 0) {
                conc_conn_send(c, m.data, m.len);
                conc_msg_free(&m);
            }
            conc_conn_free(c);
        }
    }
}

TEST(client_connect_fails_cleanly_at_every_step)
{
    const char *addr = "unix:@conc-test-fault-client";
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, addr,
                               &(conc_listener_opts){ .authkey = "f",
                                                      .authkey_len = 1 }));
    pid_t pid = th_fork(echo_server_child, l);
    conc_listener_free(l); /* the child's copy serves */
    int fds = th_count_fds();
    int failures = 0;
    for (long n = 1;; n++) {
        conc_conn *c = (conc_conn *)1;
        conc__fault_arm(n);
        int err = conc_client_connect(&c, addr,
                                      &(conc_client_opts){
                                          .authkey = "f", .authkey_len = 1,
                                          .timeout = CONC_TIMEOUT(10) });
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (err == 0) {
            CHECK(!fired);
            CHECK_OK(conc_conn_send(c, "echo", 4));
            conc_msg m;
            CHECK_OK(conc_conn_recv(c, &m, 10));
            CHECK(m.len == 4 && memcmp(m.data, "echo", 4) == 0);
            conc_msg_free(&m);
            conc_conn_free(c);
            break;
        }
        CHECK(fired);
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS || err == CONC_EAUTH);
        CHECK(strncmp(conc_errdetail(), "conc_client_connect: ", 21) == 0);
        CHECK(c == NULL);
        CHECK_EQ(th_count_fds(), fds);
        failures++;
    }
    CHECK(failures >= 8); /* socket, connect, fcntl, getrandom, the
                           * handshake's sends and receives, the end */
    kill(pid, SIGKILL);
    th_wait(pid, 10);
}

/* A client child for the accept fault loop: connects, says hi, waits for
 * the answer; exits 0 whatever happens (the parent judges). */
static int hi_client_child(void *p)
{
    /* Drop the inherited copy of the listener first: while this process
     * held the listening socket, the parent's close could not reach a
     * connection still in its queue. */
    char addr[128];
    snprintf(addr, sizeof addr, "%s", conc_listener_address(p));
    conc_listener_free(p);
    conc_conn *c = NULL;
    if (conc_client_connect(&c, addr,
                            &(conc_client_opts){
                                .authkey = "f", .authkey_len = 1,
                                .timeout = CONC_TIMEOUT(5) }) == 0) {
        conc_conn_send(c, "hi", 2);
        conc_msg m;
        if (conc_conn_recv(c, &m, 5) == 0) {
            conc_msg_free(&m);
        }
        conc_conn_free(c);
    }
    return 0;
}

/* conc_listener_accept, with a client, with its n-th system call or
 * allocation failing: each failure is CONC_ENOMEM, CONC_ESYS or (a
 * failure inside a handshake) CONC_EAUTH, with a detail; nothing leaks;
 * a fresh listener each round, so no round inherits another's state. */
TEST(accept_fails_cleanly_at_every_step)
{
    const char *addrs[] = { "unix:@conc-test-fault-accept",
                            "tcp:127.0.0.1:0" };
    for (int k = 0; k < 2; k++) {
        int failures = 0;
        for (long n = 1; n < 500; n++) {
            int fds = th_count_fds();
            conc_listener *l = NULL;
            CHECK_OK(conc_listener_new(&l, addrs[k],
                                       &(conc_listener_opts){
                                           .authkey = "f",
                                           .authkey_len = 1 }));
            pid_t pid = th_fork(hi_client_child, l);
            conc_conn *c = (conc_conn *)1;
            conc__fault_arm(n);
            int err = conc_listener_accept(l, &c, 10);
            bool fired = conc__fault_fired();
            conc__fault_arm(0);
            if (err == 0) {
                conc_msg m;
                CHECK_OK(conc_conn_recv(c, &m, 10));
                conc_msg_free(&m);
                CHECK_OK(conc_conn_send(c, "ok", 2));
                conc_conn_free(c);
            } else {
                CHECK(fired);
                CHECK(err == CONC_ENOMEM || err == CONC_ESYS ||
                      err == CONC_EAUTH);
                CHECK(strncmp(conc_errdetail(), "conc_listener_accept: ",
                              22) == 0);
                CHECK(c == NULL);
                failures++;
            }
            conc_listener_free(l);
            check_exit(th_wait(pid, 20), 0);
            CHECK_EQ(th_count_fds(), fds);
            if (!fired) {
                break;
            }
        }
        CHECK(failures >= 8);
    }
}

/* ---- interoperability with CPython --------------------------------------- */

/* A Python Listener (authkey or none), a libconc client. */
static void py_listener_case(const char *mode, const char *addr,
                             const char *pykey, const char *ckey,
                             int want_err, int want_exit)
{
    pid_t pid = spawn_peer(mode, addr, pykey);
    conc_conn *c = NULL;
    int err = connect_retry(&c, addr, ckey);
    CHECK_ERR(err, want_err);
    if (err == 0) {
        CHECK_EQ(talk_first(c, 100000), 0);
        conc_conn_free(c);
    }
    check_exit(th_wait(pid, 30), want_exit);
}

TEST(py_listener_conc_client)
{
    SKIP_WITHOUT_PYTHON();
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/py", dir);
    py_listener_case("listen", addr, "py-key", "py-key", 0, 0);
    py_listener_case("listen", addr, NULL, NULL, 0, 0);
    char abs[128];
    snprintf(abs, sizeof abs, "unix:@conc-test-py-%d", (int)getpid());
    py_listener_case("listen", abs, "abstract key", "abstract key", 0, 0);
    /* Wrong key: Python's deliver_challenge refuses us (exit 3) and we
     * get CONC_EAUTH. */
    py_listener_case("listen", addr, "py-key", "not-the-key", CONC_EAUTH, 3);
    /* A Python 3.12 deliverer: "{sha256}" challenge. */
    py_listener_case("deliver312", addr, "k312", "k312", 0, 0);
    py_listener_case("deliver312", addr, "k312", "k311", CONC_EAUTH, 3);
    tmpdir_done(dir);
}

/* A libconc listener, a Python Client (mode client or answer256). */
static void py_client_case(const char *mode, const char *addr,
                           const char *ckey, const char *pykey,
                           int want_err, int want_exit)
{
    conc_listener *l = NULL;
    CHECK_OK(conc_listener_new(&l, addr,
                               &(conc_listener_opts){
                                   .authkey = ckey,
                                   .authkey_len = ckey ? strlen(ckey) : 0 }));
    pid_t pid = spawn_peer(mode, conc_listener_address(l), pykey);
    conc_conn *c = NULL;
    int err = conc_listener_accept(l, &c, 20);
    CHECK_ERR(err, want_err);
    if (err == 0) {
        CHECK_EQ(talk_first(c, 300000), 0);
        conc_conn_free(c);
    }
    check_exit(th_wait(pid, 30), want_exit);
    conc_listener_free(l);
}

TEST(conc_listener_py_client)
{
    SKIP_WITHOUT_PYTHON();
    py_client_case("client", "tcp:127.0.0.1:0", "tcp-key", "tcp-key", 0, 0);
    py_client_case("client", "127.0.0.1:0", NULL, NULL, 0, 0);
    char *dir = tmpdir_new();
    char addr[256];
    snprintf(addr, sizeof addr, "%s/cl", dir);
    py_client_case("client", addr, "unix-key", "unix-key", 0, 0);
    /* Wrong key: we refuse (CONC_EAUTH after sending #FAILURE#) and
     * Python's answer_challenge raises AuthenticationError (exit 3). */
    py_client_case("client", addr, "unix-key", "other", CONC_EAUTH, 3);
    /* A verifier-side "{sha256}" answer is accepted, and checked. */
    py_client_case("answer256", addr, "s256", "s256", 0, 0);
    py_client_case("answer256", addr, "s256", "s255", CONC_EAUTH, 3);
    py_client_case("answermd5", addr, "m5", "m5", 0, 0);
    py_client_case("answermd5", addr, "m5", "m6", CONC_EAUTH, 3);
    CHECK(!exists(addr));
    tmpdir_done(dir);
}
