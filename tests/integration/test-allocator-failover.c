/* Two meseta-allocators over one meseta-registry and a real etcd: admission records,
 * the standby's refusals, and a leader killed under load (the standby loads the
 * registry, agents re-register and frameworks re-subscribe with their ids, nothing is
 * offered twice, no task is lost or duplicated). Waits are bounded hang guards, never
 * timing assertions. */
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/registry.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define NAGENTS 5
#define NFW 2

static ms_test_etcd *etcd;
static char *dir;

static bool serving(void *ctx) {
  return ms_test_health(ctx) == 1;
}

/* ---- a standby refuses; admission is durable ---- */

static void test_standby_and_admission(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "admission", 2, "10s");
  int w_leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(w_leader >= 0);
  const char *leader = c.addr[w_leader], *standby = c.addr[1 - w_leader];

  /* The standby: UNAVAILABLE to a scheduler call and to an agent's link. */
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(standby, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  Meseta__V1__ReviveRequest rv = MESETA__V1__REVIVE_REQUEST__INIT;
  Meseta__V1__SchedulerCallRequest call = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  call.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE;
  call.revive = &rv;
  ProtobufCMessage *resp = NULL;
  CU_ASSERT_EQUAL(ms_rpc_unary(ch, "/meseta.v1.Allocator/SchedulerCall", &call.base,
                               &meseta__v1__scheduler_call_response__descriptor, NULL, &resp, &err),
                  MS_ERR);
  CU_ASSERT_EQUAL_FATAL(err->code, MS_UNAVAILABLE);
  ms_error_free(err);
  err = NULL;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.AgentLink/Connect", NULL, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(st, &meseta__v1__allocator_message__descriptor, &m, &err), MS_ERR);
  CU_ASSERT_EQUAL(err ? err->code : MS_OK, MS_UNAVAILABLE);
  ms_error_free(err);
  err = NULL;
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(ch);

  /* The leader admits an agent through the registry before REGISTERED. */
  ms_sim_agent_options ao = {.hostname = "node-1", .resources = "cpus:2;mem:1024"};
  ms_sim_agent *a = ms_sim_agent_start(leader, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ms_rpc_channel *rch = ms_rpc_channel_new(ms_test_proc_address(c.registry), NULL, &err);
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = MESETA__V1__RECORD_KIND__AGENT;
  g.id = (char *)ms_sim_agent_id(a);
  CU_ASSERT_EQUAL_FATAL(ms_rpc_unary(rch, "/meseta.v1.Registry/Get", &g.base, &meseta__v1__record__descriptor,
                                     NULL, &resp, &err),
                        0);
  Meseta__V1__Record *r = (Meseta__V1__Record *)resp;
  CU_ASSERT_PTR_NOT_NULL_FATAL(r->agent);
  CU_ASSERT_EQUAL(r->agent->state, MESETA__V1__AGENT_RECORD__STATE__ADMITTED);
  CU_ASSERT_STRING_EQUAL(r->agent->info->hostname, "node-1");
  CU_ASSERT_PTR_NOT_NULL(r->agent->admitted_time);
  protobuf_c_message_free_unpacked(resp, NULL);
  ms_rpc_channel_free(rch);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

/* ---- kill -9 the leader under load ---- */

typedef struct world {
  ms_sim_agent *agents[NAGENTS];
  ms_sim_framework *fws[NFW];
} world;

static bool all_back(void *ctx) {
  world *w = ctx;
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_stats st;
    ms_sim_agent_stats_get(w->agents[i], &st);
    if (!st.reregistrations || !st.connected)
      return false;
  }
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_stats st;
    ms_sim_framework_stats_get(w->fws[i], &st);
    if (!st.resubscriptions || !st.connected)
      return false;
  }
  return true;
}

static bool finished_after(void *ctx) {
  world *w = ctx;
  uint64_t later = 0, launched = 0;
  for (int i = 0; i < NFW; i++) {
    ms_sim_task_summary t;
    ms_sim_framework_tasks(w->fws[i], &t);
    later += t.finished_later;
    ms_sim_framework_stats st;
    ms_sim_framework_stats_get(w->fws[i], &st);
    launched += st.launched;
  }
  return later > 0 && launched > 0;
}

static uint64_t total_launched(world *w) {
  uint64_t n = 0;
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_stats st;
    ms_sim_framework_stats_get(w->fws[i], &st);
    n += st.launched;
  }
  return n;
}

/* Every framework launched something, and all together more than `than`. */
typedef struct launched_over {
  world *w;
  uint64_t than;
} launched_over;

static bool launched_more(void *ctx) {
  launched_over *lo = ctx;
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_stats st;
    ms_sim_framework_stats_get(lo->w->fws[i], &st);
    if (!st.launched)
      return false;
  }
  return total_launched(lo->w) > lo->than;
}

static bool settled(void *ctx) {
  world *w = ctx;
  for (int i = 0; i < NFW; i++) {
    ms_sim_task_summary t;
    ms_sim_framework_tasks(w->fws[i], &t);
    if (t.open)
      return false;
  }
  return true;
}

static void test_failover_under_load(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "failover", 2, "10s");
  int wl_leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl_leader >= 0);
  int leader = wl_leader;
  const char *more[] = {c.addr[1 - leader], NULL};
  ms_sim_ledger *ledger = ms_sim_ledger_new();
  world w = {0};
  ms_error *err = NULL;
  char *ids[NAGENTS], *fids[NFW];
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_options ao = {.hostname = "node",
                               .resources = "cpus:4;mem:4096",
                               .task_ms = 1500,
                               .more_targets = more,
                               .ledger = ledger};
    w.agents[i] = ms_sim_agent_start(c.addr[leader], &ao, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w.agents[i]);
    ids[i] = ms_xstrdup(ms_sim_agent_id(w.agents[i]));
  }
  for (int i = 0; i < NFW; i++) {
    _cleanup_free_ char *name = ms_xasprintf("fw%d", i);
    ms_sim_framework_options fo = {.name = name,
                                   .mode = MS_SIM_ACCEPT,
                                   .task_resources = "cpus:1;mem:256",
                                   .refuse_ms = 50,
                                   .more_targets = more,
                                   .ledger = ledger};
    w.fws[i] = ms_sim_framework_start(c.addr[leader], &fo, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w.fws[i]);
    fids[i] = ms_xstrdup(ms_sim_framework_id(w.fws[i]));
  }
  /* Load: tasks run for 1.5 s each, launched as resources free up; every framework
   * has tasks running when the leader dies. */
  launched_over lo = {&w, 0};
  CU_ASSERT_FATAL(ms_sim_wait(launched_more, &lo, WAIT_MS));
  ms_sim_framework_stats st;

  CU_ASSERT_EQUAL(ms_test_proc_stop(c.alloc[leader], SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(c.alloc[leader]);
  c.alloc[leader] = NULL;
  CU_ASSERT_FATAL(ms_sim_wait(serving, (void *)c.addr[1 - leader], WAIT_MS));
  CU_ASSERT_FATAL(ms_sim_wait(all_back, &w, WAIT_MS));
  for (int i = 0; i < NAGENTS; i++)
    CU_ASSERT_STRING_EQUAL(ms_sim_agent_id(w.agents[i]), ids[i]);
  for (int i = 0; i < NFW; i++)
    CU_ASSERT_STRING_EQUAL(ms_sim_framework_id(w.fws[i]), fids[i]);
  /* A task launched before the failover finished after it, and offers flow again. */
  CU_ASSERT(ms_sim_wait(finished_after, &w, WAIT_MS));
  lo.than = total_launched(&w);
  CU_ASSERT(ms_sim_wait(launched_more, &lo, WAIT_MS)); /* the new leader makes offers */

  /* Stop launching; every accepted task reaches exactly one terminal state. */
  for (int i = 0; i < NFW; i++)
    ms_sim_framework_set_mode(w.fws[i], MS_SIM_DECLINE);
  CU_ASSERT(ms_sim_wait(settled, &w, WAIT_MS));
  for (int i = 0; i < NFW; i++) {
    ms_sim_task_summary t;
    ms_sim_framework_tasks(w.fws[i], &t);
    fprintf(stderr, "fw%d: accepted %llu uncertain %llu terminal %llu open %llu dup %llu later %llu\n", i,
            (unsigned long long)t.accepted, (unsigned long long)t.uncertain, (unsigned long long)t.terminal,
            (unsigned long long)t.open, (unsigned long long)t.duplicated,
            (unsigned long long)t.finished_later);
    CU_ASSERT_EQUAL(t.open, 0);
    CU_ASSERT_EQUAL(t.duplicated, 0);
    ms_sim_framework_stats_get(w.fws[i], &st);
    CU_ASSERT_EQUAL(st.lost, 0);
  }
  uint64_t checks = 0;
  CU_ASSERT_EQUAL(ms_sim_ledger_violations(ledger, &checks), 0);
  CU_ASSERT(checks > 0);

  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_free(w.fws[i]);
    free(fids[i]);
  }
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_free(w.agents[i]);
    free(ids[i]);
  }
  ms_sim_ledger_free(ledger);
  ms_test_cluster_stop(&c);
}

/* ---- issue 12 point 4: completed tasks survive a failover ---- */

#define NDONE 60

/* Completed tasks of framework fid the registry holds (distinct ids). */
static uint32_t registry_completed(ms_test_cluster *c, const char *fid) {
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_test_proc_address(c->registry), NULL, NULL);
  char **seen = NULL;
  uint32_t n = 0;
  char *token = NULL;
  do {
    Meseta__V1__ListRequest req = MESETA__V1__LIST_REQUEST__INIT;
    req.kind = MESETA__V1__RECORD_KIND__COMPLETED_TASKS;
    req.page_token = token ? token : "";
    ProtobufCMessage *resp = NULL;
    ms_error *err = NULL;
    int rc = ms_rpc_unary(ch, "/meseta.v1.Registry/List", &req.base, &meseta__v1__list_response__descriptor,
                          NULL, &resp, &err);
    free(token);
    token = NULL;
    if (rc < 0) {
      ms_error_free(err);
      break;
    }
    Meseta__V1__ListResponse *lr = (Meseta__V1__ListResponse *)resp;
    for (size_t i = 0; i < lr->n_records; i++) {
      const Meseta__V1__CompletedTasksRecord *cr = lr->records[i]->completed_tasks;
      for (size_t k = 0; cr && k < cr->n_tasks; k++) {
        if (strcmp(cr->tasks[k]->framework_id->value, fid) != 0)
          continue;
        bool dup = false;
        for (uint32_t j = 0; j < n && !dup; j++)
          dup = strcmp(seen[j], cr->tasks[k]->task_id->value) == 0;
        if (!dup) {
          seen = ms_xrealloc(seen, (n + 1) * sizeof(*seen));
          seen[n++] = ms_xstrdup(cr->tasks[k]->task_id->value);
        }
      }
    }
    if (lr->next_page_token && *lr->next_page_token)
      token = ms_xstrdup(lr->next_page_token);
    protobuf_c_message_free_unpacked(resp, NULL);
  } while (token);
  for (uint32_t j = 0; j < n; j++)
    free(seen[j]);
  free(seen);
  ms_rpc_channel_free(ch);
  return n;
}

typedef struct reg_wait {
  ms_test_cluster *c;
  const char *fid;
  uint32_t n;
} reg_wait;

static bool registry_has(void *ctx) {
  reg_wait *w = ctx;
  return registry_completed(w->c, w->fid) >= w->n;
}

/* FINISHED tasks of framework fid in a WatchState snapshot of addr (what master-api's
 * GetTasks serves); -1 if the snapshot did not come. */
static int snapshot_finished(const char *addr, const char *fid) {
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, NULL, NULL);
  Meseta__V1__WatchStateRequest req = MESETA__V1__WATCH_STATE_REQUEST__INIT;
  req.watcher = "test";
  ms_rpc_call_options co = {.timeout_ms = WAIT_MS};
  ms_error *err = NULL;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.Allocator/WatchState", &req.base, &co, &err);
  int n = -1;
  for (bool end = false; st && !end;) {
    ProtobufCMessage *m = NULL;
    if (ms_rpc_stream_recv(st, &meseta__v1__state_event__descriptor, &m, &err) < 0 || !m) {
      ms_error_free(err);
      n = -1;
      break;
    }
    Meseta__V1__StateEvent *ev = (Meseta__V1__StateEvent *)m;
    if (ev->event_case == MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN)
      n = 0;
    if (ev->event_case == MESETA__V1__STATE_EVENT__EVENT_CHUNK && ev->chunk->state)
      for (size_t i = 0; i < ev->chunk->state->n_tasks; i++) {
        const Meseta__V1__Task *t = ev->chunk->state->tasks[i];
        n += t->framework_id && strcmp(t->framework_id->value, fid) == 0 &&
             t->state == MESETA__V1__TASK_STATE__TASK_FINISHED;
      }
    end = ev->event_case == MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
    protobuf_c_message_free_unpacked(m, NULL);
  }
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(ch);
  return n;
}

static void test_trust_4_completed_tasks_survive_failover(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "history", 2, "10s");
  int leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(leader >= 0);
  const char *more[] = {c.addr[1 - leader], NULL};
  ms_error *err = NULL;
  ms_sim_agent *ags[2];
  for (int i = 0; i < 2; i++) {
    ms_sim_agent_options ao = {
        .hostname = "node-h", .resources = "cpus:4;mem:4096", .task_ms = 0, .more_targets = more};
    ags[i] = ms_sim_agent_start(c.addr[leader], &ao, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ags[i]);
  }
  ms_sim_framework_options fo = {.name = "hist",
                                 .mode = MS_SIM_ACCEPT,
                                 .task_resources = "cpus:1;mem:128",
                                 .max_tasks = NDONE,
                                 .refuse_ms = 0,
                                 .more_targets = more,
                                 .failover_timeout_ms = 600000};
  ms_sim_framework *f = ms_sim_framework_start(c.addr[leader], &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  const char *fid = ms_sim_framework_id(f);
  CU_ASSERT_FATAL(ms_sim_framework_wait_stat(f, offsetof(ms_sim_framework_stats, finished), NDONE, WAIT_MS));
  int before = snapshot_finished(c.addr[leader], fid);
  /* Written in groups: wait until the registry holds them all (a hang guard). */
  reg_wait rw = {&c, fid, NDONE};
  CU_ASSERT(ms_sim_wait(registry_has, &rw, WAIT_MS));

  CU_ASSERT_EQUAL(ms_test_proc_stop(c.alloc[leader], SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(c.alloc[leader]);
  c.alloc[leader] = NULL;
  const char *next = c.addr[1 - leader];
  CU_ASSERT_FATAL(ms_sim_wait(serving, (void *)next, WAIT_MS));
  int after = snapshot_finished(next, fid);
  fprintf(stderr, "completed tasks of `%s`: %d before the failover, %d after; registry: %u\n", fid, before,
          after, registry_completed(&c, fid));
  CU_ASSERT_EQUAL(before, NDONE);
  CU_ASSERT_EQUAL(after, NDONE);
  ms_sim_framework_free(f);
  for (int i = 0; i < 2; i++)
    ms_sim_agent_free(ags[i]);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"standby_refuses_admission_is_durable", test_standby_and_admission},
      {"leader_killed_under_load", test_failover_under_load},
      {"trust_4_completed_tasks_survive_failover", test_trust_4_completed_tasks_survive_failover},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "allocator-failover", cases, &dir, &etcd);
}
