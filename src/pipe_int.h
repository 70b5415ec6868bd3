/* pipe_int.h - internal declarations shared by pipe.c and listener.c. */
#ifndef CONC_PIPE_INT_H
#define CONC_PIPE_INT_H

#include "conc_int.h"

/* conc__conn_from_fd - wraps fd, a connected stream socket in blocking
 * mode (close-on-exec already set by the caller), as a duplex conc_conn
 * speaking Python's send_bytes framing, refusing messages over
 * max_message bytes (0: CONC_MAX_MESSAGE_DEFAULT).  The handle owns fd
 * from then on: conc_conn_close/free close it.  NULL when out of memory;
 * fd is then left open and still the caller's. */
conc_conn *conc__conn_from_fd(int fd, size_t max_message);

/* conc__wait_fd - waits until fd is ready for events (POLLIN, POLLOUT)
 * or the deadline passes.  0 when ready (or in error or hung up: the next
 * call on the socket says which), CONC_ETIMEDOUT, CONC_ESYS (errno
 * kept).  EINTR waits again with the time left.  No detail: the caller
 * says what it was waiting for. */
int conc__wait_fd(int fd, short events, const conc__deadline *dl);

#endif
