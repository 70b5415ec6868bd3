/* amqp_parse.c - reading a queue's bound out of RabbitMQ's words.
 *
 * AMQP 0-9-1 gives a client no way to read a queue's arguments: a
 * passive queue.declare answers the message and consumer counts only.
 * conc_queue_open still needs the queue's maxsize (conc_queue_full
 * answers from it), so it declares the queue with its known arguments
 * and without x-max-length: a bounded queue refuses that with 406
 * PRECONDITION_FAILED, and the refusal's text names the current value.
 * That text comes from the network, so it is read with bounds and every
 * piece checked: a text that is not the expected shape is an error the
 * caller reports as CONC_ECORRUPT, never a bound guessed from it.
 * fuzz/fuzz_amqp_maxlen.c drives this parser.
 */
#include "amqp_int.h"

#include <string.h>

/* The first occurrence of needle in text[0..len), or NULL. */
static const char *find(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (n > len) {
        return NULL;
    }
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(text + i, needle, n) == 0) {
            return text + i;
        }
    }
    return NULL;
}

int conc__amqp_parse_maxlen(const char *text, size_t len, uint64_t *max)
{
    static const char arg[] = "inequivalent arg 'x-max-length' ";
    static const char val[] = "current is the value '";
    static const char none[] = "current is none";
    if (text == NULL) {
        return -1;
    }
    const char *a = find(text, len, arg);
    if (a == NULL) {
        return -1;
    }
    size_t off = (size_t)(a - text) + sizeof arg - 1;
    const char *rest = text + off;
    size_t rlen = len - off;
    const char *v = find(rest, rlen, val);
    if (v == NULL) {
        return find(rest, rlen, none) != NULL ? 0 : -1;
    }
    size_t i = (size_t)(v - rest) + sizeof val - 1;
    if (i < rlen && rest[i] == '0') {
        return -1; /* RabbitMQ writes no leading zero: not its words */
    }
    uint64_t n = 0;
    size_t digits = 0;
    while (i < rlen && rest[i] >= '0' && rest[i] <= '9') {
        if (n > ((uint64_t)1 << 62) / 10) {
            return -1;
        }
        n = n * 10 + (uint64_t)(rest[i] - '0');
        i++;
        digits++;
    }
    if (digits == 0 || i >= rlen || rest[i] != '\'' || n == 0 ||
        n > ((uint64_t)1 << 62)) {
        return -1;
    }
    *max = n;
    return 1;
}
