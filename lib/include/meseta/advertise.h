/* The address a service advertises: what other machines dial to reach it (the
 * allocator's leader address, the agent's AgentOperator address).
 *
 * Ownership: *ret is a new string, freed by the caller; inputs are borrowed. */
#pragma once

#include "meseta/error.h"

/* flag: the flag `given` came from, named in errors ("--advertise-address"); given:
 * its value (NULL: none); bound: the first bound address ("0.0.0.0:5053", "[::]:5053",
 * "10.0.0.4:5053", "unix:/x"); hostname: this machine's.
 * A given address must be HOST:PORT (or unix:PATH) whose host is not unspecified
 * (0.0.0.0, ::): INVALID_ARGUMENT naming the flag. Without one, a bound address whose
 * host is unspecified becomes hostname:PORT (another machine cannot dial 0.0.0.0). */
int ms_advertise_address(const char *flag, const char *given, const char *bound, const char *hostname,
                         char **ret, ms_error **err);
