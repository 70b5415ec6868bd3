/* amqp_int.h - what the RabbitMQ backend's files share: the entry point
 * net.c's table names, and the parser of the broker's words that a test
 * and a fuzz target reach.
 *
 *   amqp_queue.c   conc_queue on RabbitMQ (rabbitmq-c 0.11)
 *   amqp_parse.c   reading a queue's x-max-length out of the broker's
 *                  PRECONDITION_FAILED text (bytes from the network)
 */
#ifndef CONC_AMQP_INT_H
#define CONC_AMQP_INT_H

#include "../net_int.h"

/* net.c's table: conc_queue_new (create) and conc_queue_open on amqp://. */
int conc__amqp_queue_make(conc__netq **out, conc__url *u, const char *name,
                          const conc_queue_opts *opts, bool create);

/* Reads the current x-max-length out of the text of a queue.declare that
 * RabbitMQ refused (406 PRECONDITION_FAILED) because its arguments
 * differ from the queue's, e.g.
 *   "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q'
 *    in vhost '/': received none but current is the value '5' of type
 *    'long'"
 * 1 with *max set when the text names x-max-length and a current value
 * in 1..2^62; 0 when it names x-max-length with no current value ("current
 * is none"); -1 when the text is anything else (another argument, a value
 * out of range, not digits, cut short).  Reads at most len bytes of text,
 * which need not be NUL-terminated. */
int conc__amqp_parse_maxlen(const char *text, size_t len, uint64_t *max);

#endif
