/* redis_obj.c - what every kind of object on Redis (queue, dict, lock)
 * shares about its identity there: its name (from .name or the URL, and
 * the same rule for both), the names of its keys, and how the answer of
 * its declare script reads.
 *
 * Keys.  An object NAME of kind K ('q', 'd', 'l') owns the keys
 * "conc:{K:NAME}" and "conc:{K:NAME}:<suffix>".  The braces are Redis's
 * hash tag: in a cluster every key of one object would sit on one slot,
 * which its scripts need.  Kinds never share keys, so a queue and a dict
 * may have the same name.  Names may not hold '{' or '}' (the tag would
 * end early), '/' (the URL's separator), spaces or control bytes.
 *
 * Declaring.  Each kind's declare script checks the type of every key it
 * owns (a key of another type under the name - another program's - is
 * CONC_EINVAL at creation, never a WRONGTYPE later) and the kind and
 * layout in the object's meta hash, and answers {'new'|'old', ...},
 * {'missing'} (conc_X_open of nothing), {'type', key, type} or {'kind'}.
 */
#include "redis_int.h"

#include <stdio.h>
#include <string.h>

bool conc__rreply_is(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) &&
           memcmp(r->str, s, r->len) == 0;
}

int conc__robj_lease(const conc_timeout *opts_lease, double *lease,
                     const char *fn)
{
    static const double dflt = 30.0, min = 0.1, max = 1e6;
    *lease = opts_lease != NULL ? conc__timeout_opt(*opts_lease, dflt) : dflt;
    if (*lease < min || *lease > max) {
        return conc__fail(CONC_EINVAL, "%s: lease %g s is outside [%g, %g]",
                          fn, *lease, min, max);
    }
    return 0;
}

int conc__robj_name(const conc__rcli *cli, const char *name,
                    const char **out, const char *fn)
{
    const char *un = conc__rcli_url_name(cli);
    if (name != NULL && un != NULL && strcmp(name, un) != 0) {
        return conc__fail(CONC_EINVAL, "%s: .name '%s' and the URL's name "
                          "'%s' differ", fn, name, un);
    }
    *out = name != NULL ? name : un;
    return conc__net_name_check(*out, fn);
}

char *conc__robj_key(char kind, const char *name, const char *suffix)
{
    size_t n = strlen(name) + strlen(suffix) + 16;
    char *k = conc__malloc(n);
    if (k != NULL) {
        snprintf(k, n, "conc:{%c:%s}%s", kind, name, suffix);
    }
    return k;
}

int conc__robj_declared(const conc__rcli *cli, const redisReply *r,
                        const char *kind, const char *name, const char *fn)
{
    int err = conc__rreply_want(cli, r, REDIS_REPLY_ARRAY, false, fn,
                                "the declare script");
    if (err != 0) {
        return err;
    }
    if (r->elements == 0) {
        return conc__fail(CONC_ECORRUPT, "%s: the server at %s answered the "
                          "declare script with nothing", fn, cli->where);
    }
    const redisReply *const *e = (const redisReply *const *)r->element;
    if (conc__rreply_is(e[0], "new") || conc__rreply_is(e[0], "old")) {
        return 0;
    }
    if (conc__rreply_is(e[0], "missing")) {
        return conc__fail(CONC_EINVAL, "%s: there is no %s '%s' on %s "
                          "(conc_%s_new makes one)", fn, kind, name,
                          cli->where, kind);
    }
    if (conc__rreply_is(e[0], "type") && r->elements == 3 &&
        e[1]->type == REDIS_REPLY_STRING && e[2]->type == REDIS_REPLY_STRING) {
        return conc__fail(CONC_EINVAL, "%s: the key '%.*s' on %s holds a "
                          "%.*s, not what a %s keeps there (another program "
                          "uses the name '%s')", fn, (int)e[1]->len,
                          e[1]->str, cli->where, (int)e[2]->len, e[2]->str,
                          kind, name);
    }
    return conc__fail(CONC_EINVAL, "%s: '%s' on %s is not a libconc %s of "
                      "this layout", fn, name, cli->where, kind);
}
