/* fuzz_shm_name.c - the segment-name check every named object makes
 * (conc__shm_name_fix): any bytes in, either CONC_EINVAL with a detail
 * or a "/name" that satisfies every rule the header states, and nothing
 * written past the output. */
#include "fuzz_check.h"
#include "shared_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = malloc(size + 1);
    if (name == NULL) {
        return 0;
    }
    memcpy(name, data, size);
    name[size] = '\0';
    char out[260];
    memset(out, 0x5a, sizeof out);
    int err = conc__shm_name_fix("fuzz", name, out, 252);
    if (err == 0) {
        size_t n = strlen(out);
        FUZZ_CHECK(out[0] == '/' && n >= 2 && n <= 251);
        FUZZ_CHECK(strchr(out + 1, '/') == NULL);
        FUZZ_CHECK(strcmp(out, "/.") != 0 && strcmp(out, "/..") != 0);
        FUZZ_CHECK(strcmp(out + 1, name[0] == '/' ? name + 1 : name) == 0);
    } else {
        FUZZ_CHECK(err == CONC_EINVAL &&
                     strncmp(conc_errdetail(), "fuzz: ", 6) == 0);
    }
    FUZZ_CHECK((unsigned char)out[252] == 0x5a);
    free(name);
    return 0;
}
