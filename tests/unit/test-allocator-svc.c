/* The allocator service's feature modules (tasks, agents) driven against the engine
 * with no process, no server and no registry (issue 14): a loop, a leading service,
 * and the modules' own functions. Registration itself needs an AgentLink stream (an
 * ms_rpc_call, which only a server makes), so the registered agent is built here as
 * svc_agent_link_msg would build it; the framework is restored as a new leader's
 * recovery restores it, then made active in the engine. */
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/loop.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"

#include "alloc-svc-agents.h"
#include "alloc-svc-completed.h"
#include "alloc-svc-core.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-tasks.h"
#include "testlib.h"

static ms_resources *R(const char *text) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  MS_ASSERT_OK(ms_resources_parse_text(text, NULL, &r, &err), &err);
  return r;
}

typedef struct fixture {
  ms_loop *loop;
  alloc_service *s;
} fixture;

static fixture start(void) {
  fixture f = {0};
  ms_error *err = NULL;
  f.loop = ms_loop_new(&err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f.loop);
  alloc_service_config cfg = {.allocation_interval_ms = 60000,
                              .heartbeat_interval_ms = 60000,
                              .max_completed_tasks_per_framework = 10,
                              .max_completed_tasks = 100,
                              .max_completed_frameworks = 10};
  f.s = alloc_service_new(&cfg, f.loop, &err);
  MS_ASSERT_OK(f.s ? 0 : -1, &err);
  alloc_service_set_leading(f.s, true); /* no registry: serving at once */
  return f;
}

static void stop(fixture *f) {
  alloc_service_close(f->s);
  alloc_service_drain(f->s);
  alloc_service_free(f->s);
  ms_loop_free(f->loop);
}

static svc_agent *add_agent(alloc_service *s, const char *id, const char *res) {
  ms_resources *r = R(res);
  alloc_agent_spec spec = {.id = id, .hostname = id, .total = r};
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_add_agent(s->model, &spec, &err), &err);
  ms_resources_free(r);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)id;
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.id = &aid;
  info.hostname = (char *)id;
  svc_agent *a = ms_xcalloc(1, sizeof(*a));
  a->e.key = ms_xstrdup(id);
  a->info = (Meseta__V1__AgentInfo *)ms_pb_dup(&info.base);
  a->svc = s;
  svc_table_put(&s->agents, &a->e);
  return a;
}

static void add_framework(alloc_service *s, const char *id, const char *role) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)id;
  char *roles[] = {(char *)role};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.id = &fid;
  info.name = (char *)id;
  info.n_roles = 1;
  info.roles = roles;
  ms_error *err = NULL;
  MS_ASSERT_OK(svc_framework_restore(s, &info, NULL, 0, &err), &err);
  MS_ASSERT_OK(alloc_model_set_framework_active(s->model, id, true, &err), &err);
}

/* A task launched on the agent: its resources allocated in the engine, then recorded. */
static void launch(alloc_service *s, const char *fid, const char *tid, const char *aid, const char *res) {
  ms_resources *r = R(res);
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_allocate(s->model, fid, aid, "r", r, &err), &err);
  CU_ASSERT_PTR_NOT_NULL(svc_task_add(s, fid, tid, aid, "r", r, NULL, NULL));
  ms_resources_free(r);
}

static bool agent_all_available(alloc_service *s, const char *aid) {
  alloc_agent_view v;
  ms_error *err = NULL;
  MS_ASSERT_OK(alloc_model_agent(s->model, aid, &v, &err), &err);
  return ms_resources_equal(v.available, v.total);
}

/* What the hooks this test adds saw. */
static struct {
  uint32_t tasks_ended, agents_removed;
  char task[64], agent[64];
  bool gone;
} seen;

static void on_task_ended(alloc_service *s, const svc_task *t) {
  (void)s;
  seen.tasks_ended++;
  snprintf(seen.task, sizeof(seen.task), "%s", t->task_id);
}

static void on_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why) {
  (void)s;
  (void)why;
  seen.agents_removed++;
  seen.gone = gone;
  snprintf(seen.agent, sizeof(seen.agent), "%s", agent_id);
}

/* Tasks: a terminal status update gives the task's resources back to the engine, the
 * task leaves the live table, and the "task ended" hooks run (the completed-tasks
 * module's keeps it as completed; the test's own sees it). */
static void test_structure_task_update_recovers_and_fires_task_ended(void) {
  memset(&seen, 0, sizeof(seen));
  fixture f = start();
  svc_hook_task_ended(f.s, on_task_ended);
  svc_agent *a = add_agent(f.s, "a1", "cpus:4;mem:1024");
  add_framework(f.s, "f1", "r");
  launch(f.s, "f1", "t1", "a1", "cpus:1;mem:128");
  CU_ASSERT_FALSE(agent_all_available(f.s, "a1"));

  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = "f1";
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = "t1";
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &tid;
  st.state = MESETA__V1__TASK_STATE__TASK_RUNNING;
  Meseta__V1__AgentMessage__StatusUpdate u = MESETA__V1__AGENT_MESSAGE__STATUS_UPDATE__INIT;
  u.framework_id = &fid;
  u.status = &st;
  svc_task_status(f.s, a, &u); /* not terminal: nothing moves */
  CU_ASSERT_EQUAL(seen.tasks_ended, 0);
  CU_ASSERT_PTR_NOT_NULL(svc_task_get(f.s, "f1", "t1"));
  CU_ASSERT_FALSE(agent_all_available(f.s, "a1"));

  st.state = MESETA__V1__TASK_STATE__TASK_FINISHED;
  svc_task_status(f.s, a, &u);
  CU_ASSERT_EQUAL(seen.tasks_ended, 1);
  CU_ASSERT_STRING_EQUAL(seen.task, "t1");
  CU_ASSERT_PTR_NULL(svc_task_get(f.s, "f1", "t1"));
  CU_ASSERT_TRUE(agent_all_available(f.s, "a1"));
  CU_ASSERT_PTR_NOT_NULL(svc_completed_get(f.s, "f1\x1f"
                                                "t1")); /* the completed module's hook */
  stop(&f);
}

/* Agents: removing an agent runs the "agent removed" hooks, drops its offers in the
 * engine, and ends its tasks (TASK_LOST: "task ended" runs for each). */
static void test_structure_agent_removed_fires_hook_and_drops_offers(void) {
  memset(&seen, 0, sizeof(seen));
  fixture f = start();
  svc_hook_agent_removed(f.s, on_agent_removed);
  svc_hook_task_ended(f.s, on_task_ended);
  svc_agent *a = add_agent(f.s, "a1", "cpus:4;mem:1024");
  add_agent(f.s, "a2", "cpus:4;mem:1024");
  add_framework(f.s, "f1", "r");
  launch(f.s, "f1", "t1", "a1", "cpus:1;mem:128");
  f.s->hooks.run_cycle(f.s); /* the service's cycle: offers on both agents */
  CU_ASSERT_EQUAL_FATAL(alloc_model_offer_count(f.s->model), 2);

  svc_agent_remove(f.s, a, "test");
  CU_ASSERT_EQUAL(seen.agents_removed, 1);
  CU_ASSERT_STRING_EQUAL(seen.agent, "a1");
  CU_ASSERT_FALSE(seen.gone);
  CU_ASSERT_EQUAL(alloc_model_offer_count(f.s->model), 1); /* a2's is left */
  CU_ASSERT_EQUAL(seen.tasks_ended, 1);
  CU_ASSERT_PTR_NULL(svc_task_get(f.s, "f1", "t1"));
  CU_ASSERT_PTR_NULL(svc_table_get(&f.s->agents, "a1"));
  alloc_agent_view v;
  ms_error *err = NULL;
  CU_ASSERT(alloc_model_agent(f.s->model, "a1", &v, &err) < 0);
  ms_error_free(err);
  stop(&f);
}

/* A new leader restores a framework's suppressed roles from its record (master-api
 * resumes the scheduler's stream without it saying them again); a role the framework no
 * longer has is ignored rather than losing the framework; the cycle offers nothing to a
 * suppressed role. */
static void test_trust_4_restore_keeps_suppression(void) {
  fixture f = start();
  add_agent(f.s, "a1", "cpus:4;mem:1024");
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = "f1";
  char *roles[] = {"r", "q"};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.id = &fid;
  info.name = "f1";
  info.n_roles = 2;
  info.roles = roles;
  char *suppressed[] = {"r", "q", "gone"};
  ms_error *err = NULL;
  MS_ASSERT_OK(svc_framework_restore(f.s, &info, suppressed, 3, &err), &err);
  CU_ASSERT(alloc_model_suppressed(f.s->model, "f1", "r"));
  CU_ASSERT(alloc_model_suppressed(f.s->model, "f1", "q"));
  CU_ASSERT_FALSE(alloc_model_suppressed(f.s->model, "f1", "gone"));
  MS_ASSERT_OK(alloc_model_set_framework_active(f.s->model, "f1", true, &err), &err);
  f.s->hooks.run_cycle(f.s);
  CU_ASSERT_EQUAL(alloc_model_offer_count(f.s->model), 0);
  MS_ASSERT_OK(alloc_model_revive(f.s->model, "f1", "q", &err), &err);
  CU_ASSERT_FALSE(alloc_model_suppressed(f.s->model, "f1", "q"));
  f.s->hooks.run_cycle(f.s);
  CU_ASSERT_EQUAL(alloc_model_offer_count(f.s->model), 1);
  stop(&f);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"structure_task_update_recovers_and_fires_task_ended",
       test_structure_task_update_recovers_and_fires_task_ended},
      {"structure_agent_removed_fires_hook_and_drops_offers",
       test_structure_agent_removed_fires_hook_and_drops_offers},
      {"trust_4_restore_keeps_suppression", test_trust_4_restore_keeps_suppression},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "allocator-svc", cases);
}
