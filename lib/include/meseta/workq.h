/* A fixed pool of worker threads draining a bounded FIFO of jobs.
 *
 * For work a gRPC callback must not do on the server thread (blocking etcd calls,
 * disk): the callback takes a reference on its call, pushes a job, and the job
 * answers the call when done. Jobs run in push order, several at a time.
 *
 * Ownership: `arg` belongs to the job; the pool never frees it. ms_workq_free runs
 * every job already queued before it returns. */
#pragma once

#include <stddef.h>

#include "meseta/error.h"

typedef struct ms_workq ms_workq;
typedef void (*ms_workq_fn)(void *arg);

/* `threads` workers (at least 1); at most `max_queued` jobs waiting (0: 10000). */
ms_workq *ms_workq_new(size_t threads, size_t max_queued, ms_error **err);

/* Queues a job. RESOURCE_EXHAUSTED when max_queued are waiting; FAILED_PRECONDITION
 * once the pool is being freed. Any thread. */
int ms_workq_push(ms_workq *q, ms_workq_fn fn, void *arg, ms_error **err);

/* Runs what is queued, stops the workers and frees the pool; NULL is fine. Never
 * from one of its own jobs. */
void ms_workq_free(ms_workq *q);
