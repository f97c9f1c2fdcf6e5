/* Issue 12 point 6 at the agent (defence in depth: the allocator refuses the same at
 * accept): a RUN_TASK with a field the cluster does not implement, or without the
 * minimum cpus and mem, is refused before anything is made, the message naming the
 * field (agent_task_run reports it as TASK_ERROR). */
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"
#include "testlib.h"

typedef struct task {
  Meseta__V1__TaskInfo ti;
  Meseta__V1__CommandInfo cmd;
  Meseta__V1__Resources *res;
} task;

static void task_init(task *t, const char *resources) {
  meseta__v1__task_info__init(&t->ti);
  meseta__v1__command_info__init(&t->cmd);
  t->cmd.value = "true";
  t->ti.command = &t->cmd;
  t->res = NULL;
  if (resources) {
    ms_resources *r = NULL;
    CU_ASSERT_FATAL(ms_resources_parse_text(resources, NULL, &r, NULL) == 0);
    t->res = ms_resources_to_proto(r);
    ms_resources_free(r);
    t->ti.resources = t->res->resources;
    t->ti.n_resources = t->res->n_resources;
  }
}

static void task_release(task *t) {
  if (t->res)
    ms_resources_proto_free(t->res);
}

static void refused(const Meseta__V1__TaskInfo *ti, const char *prefix) {
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(agent_task_check(ti, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (strncmp(err->msg, prefix, strlen(prefix)) != 0)
    fprintf(stderr, "got `%s`, want it to start with `%s`\n", err->msg, prefix);
  CU_ASSERT_EQUAL(strncmp(err->msg, prefix, strlen(prefix)), 0);
  ms_error_free(err);
}

static void test_trust_6_agent_refuses(void) {
  task t;
  task_init(&t, "cpus:0.1;mem:32");
  CU_ASSERT_EQUAL(agent_task_check(&t.ti, NULL), 0);
  Meseta__V1__Volume vol = MESETA__V1__VOLUME__INIT, *vols[] = {&vol};
  vol.container_path = "data";
  vol.host_path = "/etc";
  Meseta__V1__ContainerInfo ci = MESETA__V1__CONTAINER_INFO__INIT;
  ci.volumes = vols;
  ci.n_volumes = 1;
  t.ti.container = &ci;
  refused(&t.ti, "`task.container.volumes`: volumes");
  t.ti.container = NULL;
  Meseta__V1__ExecutorInfo x = MESETA__V1__EXECUTOR_INFO__INIT;
  t.ti.executor = &x;
  refused(&t.ti, "`task.executor`: tasks with an executor are not implemented yet");
  t.ti.executor = NULL;
  task_release(&t);

  /* Never a container without cpus or a memory limit. */
  const char *small[] = {NULL, "cpus:1", "mem:64", "cpus:0.1;mem:16", "disk:100"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(small); i++) {
    task_init(&t, small[i]);
    refused(&t.ti, "`task.resources`: a task needs cpus >= 0.01 and mem >= 32 MiB");
    task_release(&t);
  }
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"trust_6_agent_refuses", test_trust_6_agent_refuses},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "agent-tasks", cases);
}
