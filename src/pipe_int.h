/* pipe_int.h - internal declarations shared by pipe.c and listener.c. */
#ifndef CONC_PIPE_INT_H
#define CONC_PIPE_INT_H

#include "conc_int.h"

/* conc__conn_from_fd - wraps fd, a connected stream socket in blocking
 * mode (close-on-exec already set by the caller), as a duplex conc_conn
 * speaking Python's send_bytes framing.  The handle owns fd from then on:
 * conc_conn_close/free close it.  NULL when out of memory; fd is then
 * left open and still the caller's. */
conc_conn *conc__conn_from_fd(int fd);

#endif
