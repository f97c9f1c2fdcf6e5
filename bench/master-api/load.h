/* Read load on master-api replicas: client threads that read the whole state in a
 * loop for a fixed time, spread over the replicas (thread i on replica i % n).
 *
 * Two ways to read "the whole state":
 *   LOAD_STATE  one Operator.GetState, bytes received and not unpacked (what the
 *               server and the wire cost; unpacking is the client's own cost and is
 *               timed apart, once, by the caller);
 *   LOAD_PAGED  the paged walk a careful operator makes: GetAgents, GetFrameworks and
 *               GetTasks (include_completed) with page_size 5000, every page unpacked,
 *               the walk counted as one read.
 * Nothing returned points into the load's memory. */
#pragma once

#include <stddef.h>

typedef enum load_mode { LOAD_STATE, LOAD_PAGED } load_mode;

typedef struct load_result {
  size_t reads, errors;
  double seconds, reads_per_s;
  double p50_ms, p99_ms, max_ms;
  double bytes_per_read; /* on the wire (LOAD_STATE) or packed pages (LOAD_PAGED) */
  double calls_per_read; /* RPCs in one read: 1, or the pages of a walk */
  char first_error[256]; /* "" if none */
} load_result;

void load_run(load_mode mode, const char *const *targets, size_t ntargets, int clients, double seconds,
              load_result *ret);
