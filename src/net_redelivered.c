/* net_redelivered.c - conc_queue_redelivered(): whether the calling
 * thread's last get on a queue took a message that had been delivered
 * before.  Only a backend that is told so by its server can answer yes:
 * RabbitMQ marks a delivery redelivered when a consumer that held it died
 * or gave it back.  Shared memory never redelivers, and the Redis backend
 * does not track it: both answer false.  The answer is a thread-local the
 * backend sets at each get (src/amqp/amqp_queue.c), so this costs no
 * round trip.
 */
#include "net_int.h"
#include "queue_int.h"

#ifdef CONC_HAVE_AMQP
bool conc__amqp_redelivered(const void *q);
#endif

bool conc_queue_redelivered(conc_queue *q)
{
    if (q == NULL || q->net == NULL) {
        return false;
    }
#ifdef CONC_HAVE_AMQP
    return conc__amqp_redelivered(q->net);
#else
    return false;
#endif
}
