/* conc.h - libconc, Python's concurrency toolkit (multiprocessing,
 * threading, queue, concurrent.futures) as a C library for Linux.
 * One header per module under conc/; this one includes them all. */
#ifndef CONC_H
#define CONC_H

#include "conc/common.h"
#include "conc/version.h"
#include "conc/process.h"
#include "conc/thread.h"
#include "conc/sync.h"
#include "conc/queue.h"
#include "conc/pipe.h"
#include "conc/shared.h"
#include "conc/pool.h"
#include "conc/auto.h"

#endif
