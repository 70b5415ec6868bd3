/* net.c - which backend serves a URL: the table from a URL's scheme to
 * the code that serves queues, dicts and locks there.
 *
 *   redis://  unix://   Redis (src/redis/), when libconc was built with
 *                       hiredis (cmake/net.cmake defines CONC_HAVE_REDIS)
 *   rediss://           TLS to Redis: refused (Debian's hiredis 0.14 has
 *                       no TLS support)
 *   amqp://             RabbitMQ, for queues (src/amqp/), when libconc was
 *                       built with rabbitmq-c (cmake/amqp.cmake defines
 *                       CONC_HAVE_AMQP)
 *
 * A backend that was not built keeps its row, with the reason, so a URL
 * for it fails at creation with CONC_EINVAL and a detail saying why,
 * instead of "unknown scheme".  A program that never uses a URL never
 * reaches this file's backends, so it needs none of their libraries at
 * run time beyond what the build linked.
 *
 * Also here: the per-process secret behind the check word of every
 * network lock (net_int.h says why a lock handle carries one).
 */
#include "net_int.h"

#ifdef CONC_HAVE_REDIS
#include "redis/redis_int.h"
#define REDIS_MISSING NULL
#define REDIS_Q conc__redis_queue_make
#define REDIS_D conc__redis_dict_make
#define REDIS_L conc__redis_lock_make
#else
#define REDIS_MISSING                                                        \
    "libconc was built without its Redis backend (hiredis was not found, " \
    "or CONC_REDIS was OFF, when it was compiled)"
#define REDIS_Q NULL
#define REDIS_D NULL
#define REDIS_L NULL
#endif

#ifdef CONC_HAVE_AMQP
#include "amqp/amqp_int.h"
#define AMQP_MISSING NULL
#define AMQP_Q conc__amqp_queue_make
#else
#define AMQP_MISSING                                                         \
    "libconc was built without its RabbitMQ backend (rabbitmq-c was not "  \
    "found, or CONC_AMQP was OFF, when it was compiled)"
#define AMQP_Q NULL
#endif

#include <math.h>
#include <string.h>
#include <strings.h>

static const conc__net_backend backends[] = {
    { "redis", false, REDIS_MISSING, REDIS_Q, REDIS_D, REDIS_L },
    { "unix", true, REDIS_MISSING, REDIS_Q, REDIS_D, REDIS_L },
    { "rediss", false,
      "TLS to Redis (rediss://) is not supported: the hiredis libconc "
      "builds on (Debian's 0.14) has no TLS; reach the server through a "
      "TLS tunnel and use redis://",
      NULL, NULL, NULL },
    { "amqp", false, AMQP_MISSING, AMQP_Q, NULL, NULL },
};

_Atomic uint64_t conc__netl_secret;
_Atomic uint64_t conc__net_trips;

uint64_t conc__net_round_trips(void)
{
    return atomic_load_explicit(&conc__net_trips, memory_order_relaxed);
}

static const char *kind_name(conc__net_kind kind)
{
    return kind == CONC__NET_QUEUE ? "queues"
           : kind == CONC__NET_DICT ? "dicts"
                                    : "locks";
}

int conc__net_resolve(const char *url, conc__net_kind kind,
                      const conc__net_backend **b, conc__url *u,
                      const char *fn)
{
    memset(u, 0, sizeof *u);
    if (!conc__url_is(url)) {
        return conc__fail(CONC_EINVAL, "%s: .url is not a URL "
                          "(scheme://host...)", fn);
    }
    size_t sl = strcspn(url, ":");
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const conc__net_backend *be = &backends[i];
        if (strlen(be->scheme) != sl || strncasecmp(url, be->scheme, sl)) {
            continue;
        }
        if (be->missing != NULL) {
            return conc__fail(CONC_EINVAL, "%s: %s://: %s", fn, be->scheme,
                              be->missing);
        }
        bool has = kind == CONC__NET_QUEUE ? be->queue != NULL
                   : kind == CONC__NET_DICT ? be->dict != NULL
                                            : be->lock != NULL;
        if (!has) {
            return conc__fail(CONC_EINVAL, "%s: %s:// serves no %s", fn,
                              be->scheme, kind_name(kind));
        }
        *b = be;
        return conc__url_parse(u, url, be->path_authority, fn);
    }
    return conc__fail(CONC_EINVAL, "%s: no backend for the URL scheme "
                      "'%.*s' (known: redis, unix, amqp)", fn,
                      (int)(sl > 16 ? 16 : sl), url);
}

bool conc__net_backend_built(const char *scheme)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        if (strcmp(backends[i].scheme, scheme) == 0) {
            return backends[i].missing == NULL;
        }
    }
    return false;
}

int conc__net_opts_check(conc_timeout lease, conc_timeout net_timeout,
                         const char *fn)
{
    if (conc__timeout_given(lease) && !(lease.seconds > 0)) {
        return conc__fail(CONC_EINVAL, "%s: lease %g is not a number of "
                          "seconds > 0 (leave it out for the default; a "
                          "lease must end)", fn, lease.seconds);
    }
    double nt = conc__timeout_opt(net_timeout, 0);
    if (!conc__timeout_ok(nt)) {
        return conc__fail(CONC_EINVAL, "%s: net_timeout %g is neither >= 0 "
                          "nor CONC_FOREVER", fn, nt);
    }
    return 0;
}

void conc__netl_seal(conc__netl *n, const conc__netl_ops *ops)
{
    uint64_t s = atomic_load_explicit(&conc__netl_secret,
                                      memory_order_relaxed);
    while (s == 0) {
        uint64_t fresh = conc__os_random64() | 1u;
        /* Relaxed: the value is only compared, never used to publish
         * anything; the first CAS wins and every thread then uses its
         * value (a losing CAS loads it into s). */
        if (atomic_compare_exchange_strong_explicit(
                &conc__netl_secret, &s, fresh, memory_order_relaxed,
                memory_order_relaxed)) {
            s = fresh;
        }
    }
    n->magic = CONC__NETL_MAGIC;
    n->reserved = 0;
    n->check = (uint64_t)(uintptr_t)n ^ s;
    n->ops = ops;
}
