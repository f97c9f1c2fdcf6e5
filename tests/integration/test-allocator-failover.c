/* Two meseta-allocators over one meseta-registry and a real etcd: admission records,
 * the standby's refusals, and a leader killed under load (the standby loads the
 * registry, agents re-register and frameworks re-subscribe with their ids, nothing is
 * offered twice, no task is lost or duplicated). Issue 12 point 4 (trust_4_*): the
 * leader killed or frozen under REAL agents and a framework on master-api; the
 * durations are printed. Waits are bounded hang guards, never timing assertions. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/operator.pb-c.h"
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
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)c.addr[1 - leader], WAIT_MS));
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
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)next, WAIT_MS));
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

/* ---- issue 12 point 4: failover with real agents ---- */

#define T4_AGENTS 3

typedef struct t4 {
  ms_test_cluster c;
  ms_test_proc *mapi;
  ms_test_proc *agents[T4_AGENTS];
  char *ids[T4_AGENTS], *tasks[T4_AGENTS];
  ms_sim_framework *fw;
} t4;

/* Agents 0 and 1 follow the registry's WatchLeader; agent 2 has only the two
 * allocators' addresses (a standby refuses; a silent leader is left). */
static ms_test_proc *t4_agent(t4 *w, const char *tag, int i) {
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *src = getenv("MESETA_SOURCE_DIR");
  _cleanup_free_ char *profiles = ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
  _cleanup_free_ char *name = ms_xasprintf("agent-%s-%d", tag, i);
  _cleanup_free_ char *work = ms_xasprintf("%s/%s", dir, name);
  _cleanup_free_ char *host = ms_xasprintf("t4-%s-%d", tag, i);
  _cleanup_free_ char *list = ms_xasprintf("%s,%s", w->c.addr[0], w->c.addr[1]);
  const char *argv[] = {bin,
                        i < 2 ? "--registry" : "--allocator",
                        i < 2 ? ms_test_proc_address(w->c.registry) : list,
                        "--work-dir",
                        work,
                        "--hostname",
                        host,
                        "--resources",
                        "cpus:1;mem:512;disk:100",
                        "--runtime",
                        rt,
                        "--seccomp-dir",
                        profiles,
                        "--cgroup-parent",
                        "meseta-failover-test",
                        "--no-switch-user",
                        "--listen",
                        "",
                        "--status-update-retry",
                        "1s",
                        "--kill-containers-on-exit",
                        "--shutdown-grace",
                        "10s",
                        "--log-level",
                        "debug",
                        NULL};
  return ms_test_start(name, dir, argv);
}

static void t4_up(t4 *w, const char *tag) {
  memset(w, 0, sizeof(*w));
  ms_test_cluster_start(&w->c, etcd, dir, tag, 2, "30s"); /* 30 s: the default recovery timeout */
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&w->c, WAIT_MS) >= 0);
  _cleanup_free_ char *name = ms_xasprintf("master-api-%s", tag);
  w->mapi = ms_test_mapi_start(
      dir, name, (const char *[]){"--registry", ms_test_proc_address(w->c.registry), NULL}, true);
  for (int i = 0; i < T4_AGENTS; i++) {
    w->agents[i] = t4_agent(w, tag, i);
    w->ids[i] = ms_xstrdup(ms_test_proc_address(w->agents[i])); /* the ready file holds the id */
  }
  const char *mapi = ms_test_proc_address(w->mapi);
  const char *again[] = {mapi, NULL};
  ms_sim_framework_options fo = {.name = tag,
                                 .mode = MS_SIM_HOLD,
                                 .public_api = true,
                                 .more_targets = again,
                                 .failover_timeout_ms = 600000};
  ms_error *err = NULL;
  w->fw = ms_sim_framework_start(mapi, &fo, &err);
  if (!w->fw)
    fprintf(stderr, "framework: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(w->fw);
}

/* One `sleep 600` on every agent: the tasks that must outlive the failover. */
static void t4_launch(t4 *w) {
  int launched = 0;
  for (int tries = 0; launched < T4_AGENTS && tries < 100; tries++) {
    Meseta__V1__Offer *offer = ms_sim_framework_wait_offer(w->fw, WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(offer);
    int i = 0;
    while (i < T4_AGENTS && strcmp(w->ids[i], offer->agent_id->value) != 0)
      i++;
    if (i == T4_AGENTS || w->tasks[i]) {
      protobuf_c_message_free_unpacked(&offer->base, NULL);
      continue;
    }
    w->tasks[i] = ms_xasprintf("sleeper-%d", i);
    ms_resources *r = NULL;
    ms_error *err = NULL;
    MS_ASSERT_OK(ms_resources_parse_text("cpus:0.1;mem:32", NULL, &r, &err), &err);
    const char *role = offer->allocation_info ? offer->allocation_info->role : NULL;
    ms_resources_allocate(r, role && *role ? role : NULL, NULL);
    Meseta__V1__Resources *rp = ms_resources_to_proto(r);
    ms_resources_free(r);
    Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
    tid.value = w->tasks[i];
    Google__Protobuf__BoolValue sh = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    sh.value = true;
    Meseta__V1__CommandInfo cmd = MESETA__V1__COMMAND_INFO__INIT;
    cmd.value = "sleep 600";
    cmd.shell = &sh;
    Meseta__V1__TaskInfo t = MESETA__V1__TASK_INFO__INIT;
    t.name = w->tasks[i];
    t.task_id = &tid;
    t.agent_id = offer->agent_id;
    t.n_resources = rp->n_resources;
    t.resources = rp->resources;
    t.command = &cmd;
    Meseta__V1__TaskInfo *tis[] = {&t};
    Meseta__V1__Offer__Operation__Launch l = MESETA__V1__OFFER__OPERATION__LAUNCH__INIT;
    l.n_task_infos = 1;
    l.task_infos = tis;
    Meseta__V1__Offer__Operation op = MESETA__V1__OFFER__OPERATION__INIT;
    op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
    op.launch = &l;
    MS_ASSERT_OK(ms_sim_framework_accept(w->fw, offer, &op, 0, &err), &err);
    ms_resources_proto_free(rp);
    protobuf_c_message_free_unpacked(&offer->base, NULL);
    launched++;
  }
  CU_ASSERT_EQUAL_FATAL(launched, T4_AGENTS);
}

typedef struct t4_state {
  t4 *w;
  Meseta__V1__TaskState state;
} t4_state;

static bool t4_tasks_in(void *ctx) {
  t4_state *ts = ctx;
  for (int i = 0; i < T4_AGENTS; i++) {
    Meseta__V1__TaskStatus *st = ms_sim_framework_task_status(ts->w->fw, ts->w->tasks[i]);
    bool ok = st && st->state == ts->state;
    if (st)
      protobuf_c_message_free_unpacked(&st->base, NULL);
    if (!ok)
      return false;
  }
  return true;
}

/* The allocator leader's id in master-api's view (the caller frees); NULL: none. */
static char *t4_view_leader(t4 *w) {
  Meseta__V1__GetMasterRequest req = MESETA__V1__GET_MASTER_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(ms_test_proc_address(w->mapi), NULL, NULL, "/meseta.v1.Operator/GetMaster", &req.base,
                   &meseta__v1__get_master_response__descriptor, 2000, &resp, NULL) != MS_OK)
    return NULL;
  const Meseta__V1__GetMasterResponse *r = (const void *)resp;
  char *id =
      r->master_info && r->master_info->id && *r->master_info->id ? ms_xstrdup(r->master_info->id) : NULL;
  protobuf_c_message_free_unpacked(resp, NULL);
  return id;
}

/* Through master-api, once its view comes from a leader other than old_id: agents
 * 0..n-1 are ACTIVE there (re-registered: the others are RECOVERED). */
typedef struct t4_view {
  t4 *w;
  int n;
  const char *old_id;
} t4_view;

static bool t4_agents_back(void *ctx) {
  t4_view *v = ctx;
  _cleanup_free_ char *leader = t4_view_leader(v->w);
  if (!leader || strcmp(leader, v->old_id) == 0)
    return false;
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(ms_test_proc_address(v->w->mapi), NULL, NULL, "/meseta.v1.Operator/GetAgents", &req.base,
                   &meseta__v1__get_agents_response__descriptor, 2000, &resp, NULL) != MS_OK)
    return false;
  const Meseta__V1__GetAgentsResponse *r = (const void *)resp;
  int back = 0;
  for (int i = 0; i < v->n; i++)
    for (size_t k = 0; k < r->n_agents; k++) {
      const Meseta__V1__Agent *a = r->agents[k];
      if (a->agent_info && a->agent_info->id && strcmp(a->agent_info->id->value, v->w->ids[i]) == 0 &&
          a->state == MESETA__V1__AGENT__STATE__ACTIVE)
        back++;
    }
  protobuf_c_message_free_unpacked(resp, NULL);
  return back == v->n;
}

static bool t4_tasks_running_in_view(void *ctx) {
  t4 *w = ctx;
  Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(ms_test_proc_address(w->mapi), NULL, NULL, "/meseta.v1.Operator/GetTasks", &req.base,
                   &meseta__v1__get_tasks_response__descriptor, 2000, &resp, NULL) != MS_OK)
    return false;
  const Meseta__V1__GetTasksResponse *r = (const void *)resp;
  int running = 0;
  for (int i = 0; i < T4_AGENTS; i++)
    for (size_t k = 0; k < r->n_tasks; k++)
      if (r->tasks[k]->task_id && strcmp(r->tasks[k]->task_id->value, w->tasks[i]) == 0 &&
          r->tasks[k]->state == MESETA__V1__TASK_STATE__TASK_RUNNING)
        running++;
  protobuf_c_message_free_unpacked(resp, NULL);
  return running == T4_AGENTS;
}

typedef struct t4_offers {
  t4 *w;
  uint64_t before;
} t4_offers;

static bool t4_offered(void *ctx) {
  t4_offers *o = ctx;
  return MS_SIM_FW_STAT(o->w->fw, offer_events) > o->before;
}

/* A SchedulerCall (a Revive naming no framework) on an open channel, from a thread:
 * sent while the old leader is frozen, answered after it wakes. */
typedef struct t4_call {
  ms_rpc_channel *ch;
  pthread_t th;
  atomic_bool done;
  ms_status code;
  char *msg;
} t4_call;

static ms_status t4_revive(ms_rpc_channel *ch, char **msg) {
  Meseta__V1__ReviveRequest rv = MESETA__V1__REVIVE_REQUEST__INIT;
  Meseta__V1__SchedulerCallRequest call = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  call.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_REVIVE;
  call.revive = &rv;
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  ms_rpc_call_options co = {.timeout_ms = WAIT_MS};
  if (ms_rpc_unary(ch, "/meseta.v1.Allocator/SchedulerCall", &call.base,
                   &meseta__v1__scheduler_call_response__descriptor, &co, &resp, &err) == 0) {
    protobuf_c_message_free_unpacked(resp, NULL);
    *msg = ms_xstrdup("");
    return MS_OK;
  }
  ms_status code = err->code;
  *msg = ms_xstrdup(err->msg);
  ms_error_free(err);
  return code;
}

static void *t4_call_main(void *arg) {
  t4_call *c = arg;
  c->code = t4_revive(c->ch, &c->msg);
  atomic_store(&c->done, true);
  return NULL;
}

static bool t4_call_done(void *ctx) {
  return atomic_load(&((t4_call *)ctx)->done);
}

static bool t4_standby(void *ctx) {
  return ms_test_health(ctx) == 0;
}

static double secs(int64_t ms) {
  return (double)ms / 1000.0;
}

static void t4_failover(int sig, const char *tag) {
  t4 w;
  t4_up(&w, tag);
  int old = ms_test_cluster_leader(&w.c);
  CU_ASSERT_FATAL(old >= 0);
  int new = 1 - old;
  t4_launch(&w);
  t4_state running = {&w, MESETA__V1__TASK_STATE__TASK_RUNNING};
  CU_ASSERT_FATAL(ms_sim_wait(t4_tasks_in, &running, WAIT_MS));

  /* A connection to the leader, open before it is stopped; what it answers now. */
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(w.c.addr[old], NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  char *msg0 = NULL;
  ms_status code0 = t4_revive(ch, &msg0);
  CU_ASSERT_NOT_EQUAL(code0, MS_UNAVAILABLE); /* the leader handles it (and refuses the bogus call) */
  free(msg0);

  char *old_id = t4_view_leader(&w);
  CU_ASSERT_PTR_NOT_NULL_FATAL(old_id);
  uint64_t offers_before = MS_SIM_FW_STAT(w.fw, offer_events);
  pid_t pid = ms_test_proc_pid(w.c.alloc[old]);
  int64_t t0 = ms_time_mono_ms();
  CU_ASSERT_EQUAL_FATAL(kill(pid, sig), 0);
  /* Each milestone's time, polled together (hang guard WAIT_MS). */
  t4_view following = {&w, 2, old_id}, all = {&w, T4_AGENTS, old_id};
  t4_offers to = {&w, offers_before};
  int64_t t_leader = -1, t_following = -1, t_agents = -1, t_offer = -1;
  while ((t_leader < 0 || t_following < 0 || t_agents < 0 || t_offer < 0) &&
         ms_time_mono_ms() - t0 < WAIT_MS) {
    int64_t now = ms_time_mono_ms() - t0;
    if (t_leader < 0 && ms_test_serving((void *)w.c.addr[new]))
      t_leader = now;
    if (t_following < 0 && t4_agents_back(&following))
      t_following = now;
    if (t_agents < 0 && t4_agents_back(&all))
      t_agents = now;
    if (t_offer < 0 && t4_offered(&to))
      t_offer = now;
    usleep(20000);
  }
  CU_ASSERT_FATAL(t_leader >= 0);
  CU_ASSERT(t_following >= 0 && t_agents >= 0 && t_offer >= 0);
  fprintf(stderr,
          "trust_4 %s of the leader: new leader %.2f s, registry-following agents back %.2f s, all agents "
          "back %.2f s, first offer %.2f s\n",
          sig == SIGKILL ? "kill -9" : "SIGSTOP", secs(t_leader), secs(t_following), secs(t_agents),
          secs(t_offer));

  /* Tasks kept: still RUNNING, in the framework's view and the operator's. */
  CU_ASSERT(ms_sim_wait(t4_tasks_running_in_view, &w, WAIT_MS));
  CU_ASSERT(t4_tasks_in(&running));
  CU_ASSERT_EQUAL(MS_SIM_FW_STAT(w.fw, lost), 0);
  CU_ASSERT_EQUAL(MS_SIM_FW_STAT(w.fw, killed), 0);

  if (sig == SIGSTOP) {
    /* A call waits in the frozen leader's socket. It wakes while etcd is frozen too, so
     * neither etcd nor its lease keeper can tell it anything: only its own lease
     * deadline stops it from handling the call. */
    t4_call call = {.ch = ch};
    atomic_init(&call.done, false);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&call.th, NULL, t4_call_main, &call), 0);
    usleep(300000); /* the request reaches the socket */
    pid_t epid = ms_test_etcd_pid(etcd);
    CU_ASSERT_EQUAL(kill(epid, SIGSTOP), 0);
    CU_ASSERT_EQUAL(kill(pid, SIGCONT), 0);
    ms_sim_wait(t4_call_done, &call, 700); /* etcd stays frozen less than the lease */
    CU_ASSERT_EQUAL(kill(epid, SIGCONT), 0);
    CU_ASSERT(ms_sim_wait(t4_call_done, &call, WAIT_MS));
    pthread_join(call.th, NULL);
    fprintf(stderr, "trust_4: the call queued at the frozen leader got %d: %s\n", (int)call.code, call.msg);
    CU_ASSERT_EQUAL(call.code, MS_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(call.msg, "not the leader"));
    free(call.msg);
    /* It stays up, as a standby: one leader, the new one. */
    CU_ASSERT(ms_sim_wait(t4_standby, (void *)w.c.addr[old], WAIT_MS));
    CU_ASSERT_EQUAL(kill(pid, 0), 0);
    CU_ASSERT_EQUAL(ms_test_cluster_wait_leader(&w.c, WAIT_MS), new);
    CU_ASSERT(ms_sim_wait(t4_agents_back, &all, WAIT_MS));
  } else {
    ms_test_proc_stop(w.c.alloc[old], SIGKILL);
    ms_test_proc_free(w.c.alloc[old]);
    w.c.alloc[old] = NULL;
  }
  ms_rpc_channel_free(ch);
  free(old_id);

  ms_sim_framework_free(w.fw);
  for (int i = 0; i < T4_AGENTS; i++) {
    CU_ASSERT_EQUAL(ms_test_proc_stop(w.agents[i], SIGTERM), 0); /* ends its sleeper */
    ms_test_proc_free(w.agents[i]);
    free(w.ids[i]);
    free(w.tasks[i]);
  }
  CU_ASSERT_EQUAL(ms_test_proc_stop(w.mapi, SIGTERM), 0);
  ms_test_proc_free(w.mapi);
  ms_test_cluster_stop(&w.c);
}

static void test_trust_4_leader_killed_real_agents(void) {
  t4_failover(SIGKILL, "t4kill");
}

static void test_trust_4_leader_frozen_real_agents(void) {
  t4_failover(SIGSTOP, "t4stop");
}

/* Issue 12 point 4: offers resume once enough agents are back, but an agent not back
 * yet is marked UNREACHABLE only when the whole recovery timeout passed (before, it was
 * marked the moment the fraction was reached). */
typedef struct t4_rec {
  const char *registry, *id;
  Meseta__V1__AgentRecord__State state;
} t4_rec;

/* The agent's record in the registry is in r->state. */
static bool t4_agent_state(void *ctx) {
  t4_rec *r = ctx;
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = MESETA__V1__RECORD_KIND__AGENT;
  g.id = (char *)r->id;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(r->registry, NULL, NULL, "/meseta.v1.Registry/Get", &g.base,
                   &meseta__v1__record__descriptor, 2000, &resp, NULL) != MS_OK)
    return false;
  const Meseta__V1__Record *rec = (const void *)resp;
  bool is = rec->agent && rec->agent->state == r->state;
  protobuf_c_message_free_unpacked(resp, NULL);
  return is;
}

static void test_trust_4_recovery_keeps_late_agents(void) {
  t4 w = {0};
  ms_test_cluster_start(&w.c, etcd, dir, "t4late", 2, "6s");
  int old = ms_test_cluster_wait_leader(&w.c, WAIT_MS);
  CU_ASSERT_FATAL(old >= 0);
  ms_error *err = NULL;
  const char *more[] = {w.c.addr[1 - old], NULL};
  ms_sim_agent *agents[5];
  for (int i = 0; i < 5; i++) {
    ms_sim_agent_options ao = {.hostname = "late", .resources = "cpus:1;mem:256", .more_targets = more};
    agents[i] = ms_sim_agent_start(w.c.addr[old], &ao, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(agents[i]);
  }
  _cleanup_free_ char *late = ms_xstrdup(ms_sim_agent_id(agents[4]));
  ms_sim_framework_options fo = {.name = "late", .mode = MS_SIM_HOLD, .more_targets = more};
  ms_sim_framework *fw = ms_sim_framework_start(w.c.addr[old], &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fw);
  CU_ASSERT_FATAL(ms_sim_wait(t4_offered, &(t4_offers){&(t4){.fw = fw}, 0}, WAIT_MS));
  ms_sim_agent_disconnect(agents[4]); /* the late one: it does not come back */
  ms_test_proc_stop(w.c.alloc[old], SIGKILL);
  ms_test_proc_free(w.c.alloc[old]);
  w.c.alloc[old] = NULL;
  uint64_t before = MS_SIM_FW_STAT(fw, offer_events);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)w.c.addr[1 - old], WAIT_MS));
  /* 4 of 5 back is the default 0.8: offers resume. */
  CU_ASSERT(ms_sim_wait(t4_offered, &(t4_offers){&(t4){.fw = fw}, before}, WAIT_MS));
  /* For a second after that (well inside the 6 s recovery timeout), the late agent's
   * record stays ADMITTED, never UNREACHABLE. */
  const char *reg = ms_test_proc_address(w.c.registry);
  t4_rec unreachable = {reg, late, MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE};
  t4_rec admitted = {reg, late, MESETA__V1__AGENT_RECORD__STATE__ADMITTED};
  CU_ASSERT(t4_agent_state(&admitted));
  bool marked_early = ms_sim_wait(t4_agent_state, &unreachable, 1000);
  CU_ASSERT_FALSE(marked_early);
  /* Once the recovery timeout passed, it is. */
  CU_ASSERT(ms_sim_wait(t4_agent_state, &unreachable, WAIT_MS));

  ms_sim_framework_free(fw);
  for (int i = 0; i < 5; i++)
    ms_sim_agent_free(agents[i]);
  ms_test_cluster_stop(&w.c);
}

/* Issue 12 point 4: a leader that froze with registry writes queued behind a slow
 * registry call sends none of them once it wakes past its lease deadline. */
typedef struct t4_weight {
  const char *addr, *role;
  pthread_t th;
  atomic_bool done;
} t4_weight;

static void *t4_weight_main(void *arg) {
  t4_weight *w = arg;
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = (char *)w->role;
  wi.weight = 2.5;
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest u = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  u.weight_infos = wis;
  u.n_weight_infos = 1;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_WEIGHTS;
  req.update_weights = &u;
  (void)ms_test_call(w->addr, NULL, NULL, "/meseta.v1.Allocator/OperatorCall", &req.base,
                     &meseta__v1__operator_call_response__descriptor, 20000, NULL, NULL);
  atomic_store(&w->done, true);
  return NULL;
}

static bool t4_weight_done(void *ctx) {
  return atomic_load(&((t4_weight *)ctx)->done);
}

/* The registry's status for record (kind, id): MS_OK when it exists. */
static ms_status t4_record(const char *registry, Meseta__V1__RecordKind kind, const char *id) {
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = kind;
  g.id = (char *)id;
  return ms_test_call(registry, NULL, NULL, "/meseta.v1.Registry/Get", &g.base,
                      &meseta__v1__record__descriptor, 10000, NULL, NULL);
}

static void test_trust_4_registry_writes_fenced(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "t4reg", 2, "10s");
  int old = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(old >= 0);
  const char *reg = ms_test_proc_address(c.registry);
  t4_weight first = {c.addr[old], "t4-first"}, second = {c.addr[old], "t4-second"},
            before = {c.addr[old], "t4-before"};
  atomic_init(&first.done, false);
  atomic_init(&second.done, false);
  atomic_init(&before.done, false);
  t4_weight_main(&before); /* the leader writes weights through the registry */
  CU_ASSERT_EQUAL_FATAL(t4_record(reg, MESETA__V1__RECORD_KIND__WEIGHT, "t4-before"), MS_OK);

  /* The registry freezes: the first write waits in the leader's registry worker, the
   * second is queued behind it; then the leader freezes too. */
  pid_t rpid = ms_test_proc_pid(c.registry), lpid = ms_test_proc_pid(c.alloc[old]);
  CU_ASSERT_EQUAL_FATAL(kill(rpid, SIGSTOP), 0);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&first.th, NULL, t4_weight_main, &first), 0);
  usleep(300000);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&second.th, NULL, t4_weight_main, &second), 0);
  usleep(300000);
  CU_ASSERT_EQUAL_FATAL(kill(lpid, SIGSTOP), 0);
  CU_ASSERT_EQUAL(kill(rpid, SIGCONT), 0);
  CU_ASSERT(ms_sim_wait(ms_test_serving, (void *)c.addr[1 - old], WAIT_MS)); /* a new leader */
  /* The old one wakes long past its deadline: its worker must not send the second write. */
  CU_ASSERT_EQUAL(kill(lpid, SIGCONT), 0);
  CU_ASSERT(ms_sim_wait(t4_weight_done, &first, WAIT_MS));
  CU_ASSERT(ms_sim_wait(t4_weight_done, &second, WAIT_MS));
  pthread_join(first.th, NULL);
  pthread_join(second.th, NULL);
  CU_ASSERT(ms_sim_wait(t4_standby, (void *)c.addr[old], WAIT_MS)); /* it is a standby now... */
  /* ...and its worker has run what was queued: the second write was never sent. */
  ms_status second_rec = t4_record(reg, MESETA__V1__RECORD_KIND__WEIGHT, "t4-second");
  fprintf(stderr,
          "trust_4 registry fence: the write queued at the frozen leader: registry answers %d (5: absent)\n",
          (int)second_rec);
  CU_ASSERT_EQUAL(second_rec, MS_NOT_FOUND);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"standby_refuses_admission_is_durable", test_standby_and_admission},
      {"leader_killed_under_load", test_failover_under_load},
      {"trust_4_completed_tasks_survive_failover", test_trust_4_completed_tasks_survive_failover},
      {"trust_4_leader_killed_real_agents", test_trust_4_leader_killed_real_agents},
      {"trust_4_leader_frozen_real_agents", test_trust_4_leader_frozen_real_agents},
      {"trust_4_recovery_keeps_late_agents", test_trust_4_recovery_keeps_late_agents},
      {"trust_4_registry_writes_fenced", test_trust_4_registry_writes_fenced},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "allocator-failover", cases, &dir, &etcd);
}
