/* The least a task may ask for. Mesos refuses a task with neither cpus nor mem; a task
 * with no mem would run without a memory limit at all, so meseta asks for both, at
 * Mesos' minimums for executors (MIN_CPUS 0.01, MIN_MEM 32 MB). Checked at accept (the
 * allocator) and again at launch (the agent). */
#pragma once

#include "meseta/error.h"
#include "meseta/resources.h"

#define MS_TASK_MIN_CPUS_MILLI ((ms_scalar)10)   /* 0.01 cpus */
#define MS_TASK_MIN_MEM_MILLI ((ms_scalar)32000) /* 32 MiB */

/* A task's resources (r may be NULL: none) hold at least the minimums. Otherwise
 * INVALID_ARGUMENT "a task needs cpus >= 0.01 and mem >= 32 MiB (it asks for cpus 0,
 * mem 0 MiB)"; the caller prefixes the field's path. */
int ms_task_check_minimums(const ms_resources *r, ms_error **err);
