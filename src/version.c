/* version.c - conc_version(): the version of the library itself, which
 * may differ from the header a program was compiled with. */
#include "conc_int.h"

#include <conc/version.h>

const char *conc_version(void)
{
    return CONC_VERSION_STRING;
}
