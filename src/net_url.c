/* net_url.c - the URLs of objects served by a server (.url), parsed once
 * for every backend:
 *
 *   scheme://[user[:password]@]host[:port][/seg[/seg[/seg]]][?k=v[&k=v]]
 *   scheme://[user[:password]@]/socket/path[?k=v...]   (path_authority)
 *
 * The parse copies everything after "://" into one heap block and cuts it
 * there in place: delimiters become NULs and percent-escapes are decoded
 * (decoding only shrinks), so every field points into the block and one
 * free releases all.  Each backend gives the path segments their meaning
 * (Redis: /db/name; AMQP: /vhost/name, where a vhost of "/" is written
 * %2F, so a decoded segment may hold a '/').
 *
 * Refused, with CONC_EINVAL and a detail: no scheme, a URL over 2048
 * bytes, a fragment, an empty host, a port outside 1..65535, a bad
 * percent-escape or one that decodes to NUL, more than three segments or
 * four query pairs, an empty segment between two slashes.  Details name
 * the part at fault but never quote the user information: a password
 * must not reach a log through conc_errdetail().
 */
#include "net_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static bool scheme_char(char c, bool first)
{
    return isalpha((unsigned char)c) ||
           (!first && (isdigit((unsigned char)c) || c == '+' || c == '-' ||
                       c == '.'));
}

/* Length of the scheme at s when s is "scheme://...", else 0. */
static size_t scheme_len(const char *s)
{
    size_t i = 0;
    while (s[i] != '\0' && scheme_char(s[i], i == 0)) {
        i++;
    }
    if (i == 0 || strncmp(s + i, "://", 3) != 0) {
        return 0;
    }
    return i;
}

bool conc__url_is(const char *s)
{
    return s != NULL && scheme_len(s) > 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decodes %XX escapes in place; false for a bad escape or a NUL. */
static bool decode(char *s)
{
    char *w = s;
    for (const char *r = s; *r != '\0'; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = hexval(r[1]);
        int lo = hi < 0 ? -1 : hexval(r[2]);
        if (lo < 0 || (hi == 0 && lo == 0)) {
            return false;
        }
        *w++ = (char)(hi * 16 + lo);
        r += 2;
    }
    *w = '\0';
    return true;
}

static bool host_ok(const char *h, bool bracketed)
{
    if (*h == '\0') {
        return false;
    }
    for (const char *p = h; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        bool ok = bracketed ? (isxdigit(c) || c == ':' || c == '.')
                            : (isalnum(c) || c == '.' || c == '-' ||
                               c == '_');
        if (!ok) {
            return false;
        }
    }
    return true;
}

static int parse_port(conc__url *u, const char *p, const char *fn)
{
    if (*p == '\0' || strlen(p) > 5) {
        return conc__fail(CONC_EINVAL, "%s: the URL's port is empty or "
                          "not a number from 1 to 65535", fn);
    }
    unsigned v = 0;
    for (; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p)) {
            return conc__fail(CONC_EINVAL, "%s: the URL's port is not a "
                              "number from 1 to 65535", fn);
        }
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (v == 0 || v > 65535) {
        return conc__fail(CONC_EINVAL, "%s: the URL's port %u is not from "
                          "1 to 65535", fn, v);
    }
    u->port = v;
    return 0;
}

/* user[:password], cut and decoded in place. */
static int parse_userinfo(conc__url *u, char *ui, const char *fn)
{
    char *colon = strchr(ui, ':');
    if (colon != NULL) {
        *colon = '\0';
        u->password = colon + 1;
        if (!decode(u->password)) {
            return conc__fail(CONC_EINVAL, "%s: the URL's password has a "
                              "bad %%-escape", fn);
        }
    }
    if (!decode(ui)) {
        return conc__fail(CONC_EINVAL, "%s: the URL's user name has a bad "
                          "%%-escape", fn);
    }
    u->user = ui[0] != '\0' ? ui : NULL;
    return 0;
}

static int parse_hostport(conc__url *u, char *hp, const char *fn)
{
    char *port = NULL;
    bool bracketed = hp[0] == '[';
    if (bracketed) {
        char *end = strchr(hp, ']');
        if (end == NULL) {
            return conc__fail(CONC_EINVAL, "%s: the URL's IPv6 host has no "
                              "closing ']'", fn);
        }
        *end = '\0';
        u->host = hp + 1;
        if (end[1] == ':') {
            port = end + 2;
        } else if (end[1] != '\0') {
            return conc__fail(CONC_EINVAL, "%s: the URL has text after its "
                              "IPv6 host", fn);
        }
    } else {
        u->host = hp;
        port = strchr(hp, ':');
        if (port != NULL) {
            *port++ = '\0';
        }
    }
    if (!host_ok(u->host, bracketed)) {
        return conc__fail(CONC_EINVAL, "%s: the URL's host is empty or has "
                          "a character a host name cannot have", fn);
    }
    return port != NULL ? parse_port(u, port, fn) : 0;
}

static int parse_segments(conc__url *u, char *p, const char *fn)
{
    while (*p != '\0') {
        char *slash = strchr(p, '/');
        if (slash != NULL) {
            *slash = '\0';
        }
        if (*p == '\0') {
            return conc__fail(CONC_EINVAL, "%s: the URL's path has an empty "
                              "segment ('//')", fn);
        }
        if (u->nseg == CONC__URL_SEGS) {
            return conc__fail(CONC_EINVAL, "%s: the URL's path has more "
                              "than %d segments", fn, CONC__URL_SEGS);
        }
        if (!decode(p)) {
            return conc__fail(CONC_EINVAL, "%s: the URL's path has a bad "
                              "%%-escape", fn);
        }
        u->seg[u->nseg++] = p;
        if (slash == NULL) {
            break;
        }
        p = slash + 1; /* a trailing '/' ends the loop on "" */
    }
    return 0;
}

static int parse_query(conc__url *u, char *q, const char *fn)
{
    while (*q != '\0') {
        char *amp = strchr(q, '&');
        if (amp != NULL) {
            *amp = '\0';
        }
        char *eq = strchr(q, '=');
        if (eq == NULL || eq == q) {
            return conc__fail(CONC_EINVAL, "%s: the URL's query has a part "
                              "that is not key=value", fn);
        }
        if (u->nquery == CONC__URL_QUERY) {
            return conc__fail(CONC_EINVAL, "%s: the URL's query has more "
                              "than %d parts", fn, CONC__URL_QUERY);
        }
        *eq = '\0';
        if (!decode(q) || !decode(eq + 1)) {
            return conc__fail(CONC_EINVAL, "%s: the URL's query has a bad "
                              "%%-escape", fn);
        }
        u->query[u->nquery].key = q;
        u->query[u->nquery].val = eq + 1;
        u->nquery++;
        if (amp == NULL) {
            break;
        }
        q = amp + 1;
    }
    return 0;
}

int conc__url_parse(conc__url *u, const char *s, bool path_authority,
                    const char *fn)
{
    memset(u, 0, sizeof *u);
    size_t sl = s != NULL ? scheme_len(s) : 0;
    if (sl == 0) {
        return conc__fail(CONC_EINVAL, "%s: not a URL (scheme://...)", fn);
    }
    if (sl >= sizeof u->scheme) {
        return conc__fail(CONC_EINVAL, "%s: the URL's scheme is longer than "
                          "%zu bytes", fn, sizeof u->scheme - 1);
    }
    size_t n = strnlen(s, CONC__URL_MAX + 1);
    if (n > CONC__URL_MAX) {
        return conc__fail(CONC_EINVAL, "%s: the URL is longer than %d bytes",
                          fn, CONC__URL_MAX);
    }
    for (size_t i = 0; i < sl; i++) {
        u->scheme[i] = (char)tolower((unsigned char)s[i]);
    }
    const char *rest = s + sl + 3;
    if (strchr(rest, '#') != NULL) {
        return conc__fail(CONC_EINVAL, "%s: the URL has a fragment ('#'), "
                          "which means nothing here", fn);
    }
    /* Twice the room: a socket path keeps its leading '/', so the
     * authority before it is cut out into the second half. */
    size_t rl = strlen(rest);
    char *b = conc__malloc(2 * rl + 2);
    if (b == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for the URL", fn);
    }
    memcpy(b, rest, rl + 1);
    u->block_ = b;
    int err = 0;
    char *q = strchr(b, '?');
    if (q != NULL) {
        *q++ = '\0';
    }
    char *path = strchr(b, '/');
    if (path != NULL && path_authority) {
        char *auth = b + rl + 1;
        memcpy(auth, b, (size_t)(path - b));
        auth[path - b] = '\0';
        b = auth;
    } else if (path != NULL) {
        *path++ = '\0';
    }
    char *at = strrchr(b, '@');
    char *hostport = b;
    if (at != NULL) {
        *at = '\0';
        hostport = at + 1;
        err = parse_userinfo(u, b, fn);
    }
    if (err == 0 && path_authority) {
        if (*hostport != '\0') {
            err = conc__fail(CONC_EINVAL, "%s: a %s:// URL names a socket "
                             "path, not a host", fn, u->scheme);
        } else if (path == NULL || *path == '\0' || !decode(path)) {
            err = conc__fail(CONC_EINVAL, "%s: the %s:// URL's socket path "
                             "is missing or has a bad %%-escape", fn,
                             u->scheme);
        } else {
            u->path = path;
        }
    } else if (err == 0) {
        err = parse_hostport(u, hostport, fn);
        if (err == 0 && path != NULL) {
            err = parse_segments(u, path, fn);
        }
    }
    if (err == 0 && q != NULL) {
        err = parse_query(u, q, fn);
    }
    if (err != 0) {
        conc__url_free(u);
    }
    return err;
}

void conc__url_free(conc__url *u)
{
    if (u != NULL) {
        free(u->block_);
        memset(u, 0, sizeof *u);
    }
}

const char *conc__url_query(const conc__url *u, const char *k)
{
    for (size_t i = 0; i < u->nquery; i++) {
        if (strcmp(u->query[i].key, k) == 0) {
            return u->query[i].val;
        }
    }
    return NULL;
}

int conc__net_name_check(const char *name, const char *fn)
{
    if (name == NULL || name[0] == '\0') {
        return conc__fail(CONC_EINVAL, "%s: an object on a server needs a "
                          "name (.name, or the URL's last path segment)", fn);
    }
    size_t n = strnlen(name, 201);
    if (n > 200) {
        return conc__fail(CONC_EINVAL, "%s: the name is longer than 200 "
                          "bytes", fn);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == '{' || c == '}') {
            return conc__fail(CONC_EINVAL, "%s: the name '%.*s' has byte "
                              "0x%02x at %zu; allowed: printable ASCII "
                              "other than space, '/', '{' and '}'", fn,
                              (int)i, name, c, i);
        }
    }
    return 0;
}
