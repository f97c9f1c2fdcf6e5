/* What the cluster does not implement yet: one row per field, refused where a request
 * enters (the allocator's scheduler calls and subscriptions, and the agent for each
 * task it is given) rather than accepted and ignored. A feature that lands deletes its
 * row, and the list in docs/api.md ("Refused fields"). */
#include "meseta/alloc.h"
#include "meseta/pb-check.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/v1/cluster.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"
#include "meseta/v1/tasks.pb-c.h"

#define NYI " not implemented yet"

static const char *const limit_names[] = {"cpus", "mem", NULL};

const ms_pb_refusal ms_pb_refused[] = {
    /* Launches: the agent runs command tasks in their own container, nothing else. */
    {&meseta__v1__offer__operation__descriptor, "launch_group", NULL,
     "LAUNCH_GROUP (task groups under the default executor) is" NYI "; use LAUNCH"},
    {&meseta__v1__task_info__descriptor, "executor", NULL,
     "tasks with an executor are" NYI "; give the task a `command`"},
    {&meseta__v1__task_info__descriptor, "health_check", NULL, "health checks are" NYI},
    {&meseta__v1__task_info__descriptor, "check", NULL, "checks are" NYI},
    {&meseta__v1__task_info__descriptor, "max_completion_time", NULL, "a task deadline is" NYI},
    {&meseta__v1__task_info__descriptor, "limits", limit_names,
     "only `cpus` and `mem` limits are implemented"},
    {&meseta__v1__command_info__descriptor, "uris", NULL, "fetching URIs into the sandbox is" NYI},
    {&meseta__v1__environment__variable__descriptor, "secret", NULL, "secret environment variables are" NYI},
    /* Containers: the host's root filesystem and network, cgroups and seccomp. */
    {&meseta__v1__container_info__descriptor, "volumes", NULL,
     "volumes (host, sandbox, secret and CSI) are" NYI},
    {&meseta__v1__container_info__descriptor, "mesos", NULL,
     "container images are" NYI "; tasks run on the agent's root filesystem"},
    {&meseta__v1__container_info__descriptor, "hostname", NULL, "a container hostname is" NYI},
    {&meseta__v1__container_info__descriptor, "network_infos", NULL,
     "container networks are" NYI "; tasks use the agent's network"},
    {&meseta__v1__container_info__descriptor, "rlimit_info", NULL, "rlimits are" NYI},
    {&meseta__v1__container_info__descriptor, "tty_info", NULL, "a TTY is" NYI},
    {&meseta__v1__linux_info__descriptor, "bounding_capabilities", NULL, "capabilities are" NYI},
    {&meseta__v1__linux_info__descriptor, "effective_capabilities", NULL, "capabilities are" NYI},
    {&meseta__v1__linux_info__descriptor, "share_pid_namespace", NULL,
     "sharing the agent's pid namespace is" NYI},
    /* Frameworks. */
    {&meseta__v1__subscribe_request__descriptor, "offer_constraints", NULL, "offer constraints are" NYI},
    {&meseta__v1__framework_info__descriptor, "offer_filters", NULL,
     "per-role offer filters are" NYI " at Subscribe; set them with UpdateFramework",
     &meseta__v1__subscribe_request__descriptor},
    {&meseta__v1__update_framework_request__descriptor, "offer_constraints", NULL,
     "offer constraints are" NYI},
};

const size_t ms_pb_nrefused = MS_ARRAY_SIZE(ms_pb_refused);
