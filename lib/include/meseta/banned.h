/* Functions this project does not call: each has a bounded or checked replacement.
 *   sprintf, vsprintf     -> snprintf, ms_xasprintf, ms_buf_appendf (no bound on the output)
 *   strcpy, strcat        -> ms_xstrdup, snprintf, memcpy with a known length
 *   gets                  -> fgets, getline
 *   atoi, atol, atoll     -> strtol / strtoll with an end and range check (they cannot fail)
 *   strtok                -> strtok_r, strsep (hidden global state)
 * The build puts this header before every C file (`-include`, the top CMakeLists.txt), so
 * there is nothing to include by hand; a use is a compile error ("attempt to use a poisoned
 * identifier"). The headers that declare them come first, so their own declarations are not
 * hit; a fortified build's macro versions are dropped before the poison. The test
 * `banned-functions` checks that the build still refuses them. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#undef sprintf
#undef vsprintf
#undef strcpy
#undef strcat
#undef gets
#undef atoi
#undef atol
#undef atoll
#undef strtok

#pragma GCC poison sprintf vsprintf strcpy strcat gets atoi atol atoll strtok
