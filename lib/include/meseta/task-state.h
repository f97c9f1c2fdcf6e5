/* Task states (proto/meseta/v1/tasks.proto) as every component reads them: one place
 * that says which states end a task. Pure functions; no memory is allocated. */
#pragma once

#include <stdbool.h>

#include "meseta/v1/tasks.pb-c.h"

/* FINISHED, FAILED, KILLED, ERROR, LOST, DROPPED, GONE, GONE_BY_OPERATOR: no update
 * follows for the task (UNREACHABLE and UNKNOWN are not terminal). */
bool ms_task_state_terminal(Meseta__V1__TaskState s);

/* "TASK_RUNNING"; "?" for a value the proto does not name. Static storage. */
const char *ms_task_state_name(Meseta__V1__TaskState s);
