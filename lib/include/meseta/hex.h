/* Lower-case hexadecimal of bytes (ids in page tokens, view keys, operation uuids).
 * Ownership: the caller owns `out`. */
#pragma once

#include <stddef.h>

/* Writes 2 * len digits and a NUL into out (room for 2 * len + 1 chars); returns out. */
char *ms_hex_encode(const void *data, size_t len, char *out);
