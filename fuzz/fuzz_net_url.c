/* fuzz_net_url.c - the URL parser every network backend shares
 * (conc__url_parse, src/net_url.c): any bytes in, with the first byte
 * choosing a host or a socket-path authority.  Properties: either
 * CONC_EINVAL/CONC_ENOMEM with a detail, or a parse that satisfies every
 * rule net_int.h states (a lower-case scheme; a host of host characters
 * or a socket path, never both; a port in 1..65535 or 0; at most three
 * non-empty segments and four query pairs with non-empty keys; every
 * string NUL-free and inside what the input could decode to); and the
 * name check agrees with its own rule on each segment. */
#include "fuzz_check.h"
#include "net_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t limit)
{
    if (s != NULL) {
        FUZZ_CHECK(strlen(s) <= limit);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    bool path_authority = data[0] & 1;
    char *s = malloc(size);
    if (s == NULL) {
        return 0;
    }
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    size_t n = strlen(s);
    conc__url u;
    int err = conc__url_parse(&u, s, path_authority, "fuzz");
    if (err != 0) {
        FUZZ_CHECK(err == CONC_EINVAL || err == CONC_ENOMEM);
        FUZZ_CHECK(strncmp(conc_errdetail(), "fuzz: ", 6) == 0);
        FUZZ_CHECK(u.block_ == NULL);
        free(s);
        return 0;
    }
    FUZZ_CHECK(conc__url_is(s));
    FUZZ_CHECK(u.scheme[0] != '\0');
    for (const char *p = u.scheme; *p != '\0'; p++) {
        FUZZ_CHECK(!isupper((unsigned char)*p));
    }
    FUZZ_CHECK(u.port <= 65535);
    if (path_authority) {
        FUZZ_CHECK(u.host == NULL && u.path != NULL && u.path[0] == '/');
        FUZZ_CHECK(u.nseg == 0 && u.port == 0);
    } else {
        FUZZ_CHECK(u.path == NULL && u.host != NULL && u.host[0] != '\0');
        for (const char *p = u.host; *p != '\0'; p++) {
            unsigned char c = (unsigned char)*p;
            FUZZ_CHECK(isalnum(c) || strchr(".-_:", c) != NULL);
        }
    }
    FUZZ_CHECK(u.nseg <= CONC__URL_SEGS && u.nquery <= CONC__URL_QUERY);
    check_str(u.user, n);
    check_str(u.password, n);
    check_str(u.host, n);
    check_str(u.path, n);
    for (size_t i = 0; i < u.nseg; i++) {
        FUZZ_CHECK(u.seg[i] != NULL && u.seg[i][0] != '\0');
        check_str(u.seg[i], n);
        int ne = conc__net_name_check(u.seg[i], "fuzz");
        bool ok = strlen(u.seg[i]) <= 200;
        for (const char *p = u.seg[i]; ok && *p != '\0'; p++) {
            unsigned char c = (unsigned char)*p;
            ok = c > 0x20 && c < 0x7f && c != '/' && c != '{' && c != '}';
        }
        FUZZ_CHECK((ne == 0) == ok);
    }
    for (size_t i = 0; i < u.nquery; i++) {
        FUZZ_CHECK(u.query[i].key[0] != '\0');
        FUZZ_CHECK(conc__url_query(&u, u.query[i].key) != NULL);
        check_str(u.query[i].val, n);
    }
    conc__url_free(&u);
    FUZZ_CHECK(u.block_ == NULL);
    free(s);
    return 0;
}
