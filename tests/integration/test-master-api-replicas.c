/* Two meseta-master-api replicas that find the allocator leader through the registry
 * (--registry), over a real etcd, meseta-registry, two meseta-allocators and simulated
 * agents; simulated frameworks speak the public Scheduler API to the replicas.
 *
 * - frameworks on replica A and on replica B both get offers, run tasks and get their
 *   updates;
 * - replica A SIGKILLed: its framework subscribes again on B with its id, and every
 *   task it had accepted reaches exactly one terminal state;
 * - the allocator leader SIGKILLed under subscribed frameworks: the standby leads, the
 *   replicas follow it, the schedulers' streams stay open (no new SUBSCRIBED), every
 *   task running across the failover reports its end exactly once, offers flow again;
 * - Operator reads (GetState, GetAgents, GetTasks, GetFrameworks) on both replicas
 *   at one revision are byte for byte identical: before the failover, after it (each
 *   view a snapshot of the new leader, taken at different revisions, plus changes),
 *   and between an old replica and one started late, while tasks ran and ended (its
 *   snapshot holds the completed tasks and the agents' allocation the other built from
 *   changes).
 * A ledger checks that no agent's offers plus running tasks ever exceed its total.
 * Waits are bounded hang guards, never timing assertions. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000
#define NAGENTS 3
#define KEEP_DONE 5 /* the allocators' --max-completed-tasks-per-framework (environment) */
#define KEEP_DONE_TEXT "5"
#define NFW 3 /* F1 on A (then B), F2 on B, F3 on A's successor */

static ms_test_etcd *etcd;
static char *dir;

/* The world the cases share, in order. */
static ms_test_cluster c;
static bool cluster_up;
static ms_test_proc *mapi[3]; /* replica A (later its successor), replica B, C (late) */
static const char *maddr[3];
static ms_sim_ledger *ledger;
static ms_sim_agent *agents[NAGENTS];
static ms_sim_framework *fws[NFW];
static char *fids[NFW];

static ms_test_proc *start_replica(const char *name) {
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[] = {bin,      "--listen", "127.0.0.1:0",   "--registry", ms_test_proc_address(c.registry),
                        "--name", name,       "--max-backoff", "200ms",      "--log-level",
                        "debug",  NULL};
  ms_test_proc *p = ms_test_start(name, dir, argv);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)ms_test_proc_address(p), WAIT_MS));
  return p;
}

static ms_sim_framework *start_framework(const char *name, const char *target, const char *other,
                                         ms_sim_mode mode) {
  const char *more[] = {other, NULL};
  ms_sim_framework_options fo = {.name = name,
                                 .mode = mode,
                                 .task_resources = "cpus:1;mem:128",
                                 .refuse_ms = 50,
                                 .more_targets = more,
                                 .ledger = ledger,
                                 .public_api = true,
                                 .failover_timeout_ms = 60000};
  ms_error *err = NULL;
  ms_sim_framework *f = ms_sim_framework_start(target, &fo, &err);
  if (!f)
    fprintf(stderr, "framework %s: %s\n", name, err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  return f;
}

static ms_sim_framework_stats fw_stats(int i) {
  ms_sim_framework_stats st;
  ms_sim_framework_stats_get(fws[i], &st);
  return st;
}

static ms_sim_task_summary fw_tasks(int i) {
  ms_sim_task_summary t;
  ms_sim_framework_tasks(fws[i], &t);
  return t;
}

/* ---- predicates for ms_sim_wait ---- */

typedef struct fw_over {
  int i;
  uint64_t launched, finished;
} fw_over;

/* Framework i launched and finished more than recorded. */
static bool fw_progressed(void *ctx) {
  fw_over *o = ctx;
  ms_sim_framework_stats st = fw_stats(o->i);
  return st.launched > o->launched && st.finished > o->finished;
}

static bool fw_resubscribed(void *ctx) {
  ms_sim_framework_stats st = fw_stats(*(int *)ctx);
  return st.resubscriptions > 0 && st.connected;
}

static bool fw_finished_later(void *ctx) {
  return fw_tasks(*(int *)ctx).finished_later > 0;
}

/* Every live framework has a task open (accepted, not ended). */
static bool all_have_open(void *ctx) {
  int n = *(int *)ctx;
  for (int i = 0; i < n; i++)
    if (!fw_tasks(i).open)
      return false;
  return true;
}

static bool agents_back(void *ctx) {
  (void)ctx;
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_stats st;
    ms_sim_agent_stats_get(agents[i], &st);
    if (!st.reregistrations || !st.connected)
      return false;
  }
  return true;
}

static bool settled(void *ctx) {
  int n = *(int *)ctx;
  for (int i = 0; i < n; i++)
    if (fw_tasks(i).open)
      return false;
  return true;
}

/* No task lost or duplicated, nothing over-offered. */
static void check_tasks(int n) {
  for (int i = 0; i < n; i++) {
    ms_sim_task_summary t = fw_tasks(i);
    ms_sim_framework_stats st = fw_stats(i);
    fprintf(stderr,
            "F%d: accepted %llu uncertain %llu terminal %llu open %llu dup %llu later %llu; "
            "finished %llu lost %llu rescinds %llu resubscriptions %llu call failures %llu\n",
            i + 1, (unsigned long long)t.accepted, (unsigned long long)t.uncertain,
            (unsigned long long)t.terminal, (unsigned long long)t.open, (unsigned long long)t.duplicated,
            (unsigned long long)t.finished_later, (unsigned long long)st.finished,
            (unsigned long long)st.lost, (unsigned long long)st.rescinds,
            (unsigned long long)st.resubscriptions, (unsigned long long)st.call_failures);
    CU_ASSERT_EQUAL(t.open, 0);
    CU_ASSERT_EQUAL(t.duplicated, 0);
    CU_ASSERT_EQUAL(st.lost, 0);
    CU_ASSERT_EQUAL(st.killed, 0); /* finished, not killed with a removed framework */
  }
  uint64_t checks = 0;
  CU_ASSERT_EQUAL(ms_sim_ledger_violations(ledger, &checks), 0);
  CU_ASSERT(checks > 0);
}

/* ---- (a) a framework on each replica ---- */

static void test_two_replicas(void) {
  ms_test_cluster_start(&c, etcd, dir, "replicas", 2, "10s");
  cluster_up = true;
  int leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(leader >= 0);
  mapi[0] = start_replica("mapi-a");
  mapi[1] = start_replica("mapi-b");
  maddr[0] = ms_test_proc_address(mapi[0]);
  maddr[1] = ms_test_proc_address(mapi[1]);

  ledger = ms_sim_ledger_new();
  const char *more[] = {c.addr[1 - leader], NULL};
  ms_error *err = NULL;
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_options ao = {.hostname = "node",
                               .resources = "cpus:3;mem:2048",
                               .task_ms = 1500,
                               .more_targets = more,
                               .ledger = ledger};
    agents[i] = ms_sim_agent_start(c.addr[leader], &ao, &err);
    if (!agents[i])
      fprintf(stderr, "agent: %s\n", err->msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(agents[i]);
  }
  fws[0] = start_framework("f1", maddr[0], maddr[1], MS_SIM_ACCEPT);
  fws[1] = start_framework("f2", maddr[1], maddr[0], MS_SIM_ACCEPT);
  for (int i = 0; i < 2; i++) {
    fids[i] = ms_xstrdup(ms_sim_framework_id(fws[i]));
    fw_over o = {i, 0, 0};
    CU_ASSERT_FATAL(ms_sim_wait(fw_progressed, &o, WAIT_MS));
    ms_sim_framework_stats st = fw_stats(i);
    CU_ASSERT(st.offers > 0);
    CU_ASSERT(st.running > 0);
    CU_ASSERT(st.updates >= st.running + st.finished);
    CU_ASSERT_EQUAL(st.resubscriptions, 0);
  }
  CU_ASSERT_STRING_NOT_EQUAL(fids[0], fids[1]);
}

/* ---- (b) replica A dies ---- */

static void test_replica_killed(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(fws[0]);
  int f1 = 0;
  int one = 1;
  /* F1 has tasks running on the agents when its replica dies. */
  CU_ASSERT_FATAL(ms_sim_wait(all_have_open, &one, WAIT_MS));
  CU_ASSERT_EQUAL(ms_test_proc_stop(mapi[0], SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(mapi[0]);
  mapi[0] = NULL;
  maddr[0] = NULL;

  /* F1 subscribes again on B, as itself; what it launched before ends after. */
  CU_ASSERT_FATAL(ms_sim_wait(fw_resubscribed, &f1, WAIT_MS));
  CU_ASSERT_STRING_EQUAL(ms_sim_framework_id(fws[0]), fids[0]);
  CU_ASSERT(ms_sim_wait(fw_finished_later, &f1, WAIT_MS));
  ms_sim_framework_stats st = fw_stats(0);
  fw_over o = {0, st.launched, st.finished};
  CU_ASSERT(ms_sim_wait(fw_progressed, &o, WAIT_MS)); /* offers through B */
  /* F2, on B throughout, saw nothing of it. */
  CU_ASSERT_EQUAL(fw_stats(1).resubscriptions, 0);

  /* No task of F1 lost: every accepted one ends exactly once. */
  ms_sim_framework_set_mode(fws[0], MS_SIM_DECLINE);
  CU_ASSERT(ms_sim_wait(settled, &one, WAIT_MS));
  check_tasks(1);
  ms_sim_framework_set_mode(fws[0], MS_SIM_ACCEPT);

  /* A new replica in A's place finds the leader by itself. */
  mapi[0] = start_replica("mapi-a2");
  maddr[0] = ms_test_proc_address(mapi[0]);
}

/* ---- (c) the allocator leader dies ---- */

static bool f3_holds(void *ctx) {
  (void)ctx;
  ms_sim_framework_stats st = fw_stats(2);
  return st.offers > st.rescinds;
}

static bool f3_rescinded(void *ctx) {
  return fw_stats(2).rescinds > *(uint64_t *)ctx;
}

/* A scheduler call of framework i, through its sim handle; OK expected. */
static void fw_call_ok(int i, Meseta__V1__SchedulerCallRequest *req) {
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_sim_framework_call(fws[i], req, &err), &err);
}

/* What master-api at maddr[0] shows of framework i: live on a stream of the current
 * leader (connected, not merely recovered from the registry), named `name`, and with
 * `suppressed` roles ("*" or ""). */
typedef struct fw_shown {
  int i;
  const char *name, *suppressed;
} fw_shown;

static bool fw_view_is(void *ctx) {
  fw_shown *w = ctx;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = fids[w->i];
  Meseta__V1__FrameworkID *ids[] = {&fid};
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  req.n_framework_ids = 1;
  req.framework_ids = ids;
  ProtobufCMessage *resp = NULL;
  if (ms_test_call(maddr[0], NULL, NULL, "/meseta.v1.Operator/GetFrameworks", &req.base,
                   &meseta__v1__get_frameworks_response__descriptor, 5000, &resp, NULL) != MS_OK)
    return false;
  Meseta__V1__GetFrameworksResponse *r = (Meseta__V1__GetFrameworksResponse *)resp;
  bool ok = false;
  if (r->n_frameworks == 1) {
    Meseta__V1__Framework *f = r->frameworks[0];
    const char *sup = f->n_suppressed_roles == 1 ? f->suppressed_roles[0] : "";
    ok = f->connected && !f->recovered && f->framework_info && f->framework_info->name &&
         strcmp(f->framework_info->name, w->name) == 0 && f->n_suppressed_roles <= 1 &&
         strcmp(sup, w->suppressed) == 0;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return ok;
}

static void test_allocator_failover(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(mapi[0]);
  /* F3, on A's successor, holds the offers it gets: the new leader will not know them. */
  fws[2] = start_framework("f3", maddr[0], maddr[1], MS_SIM_HOLD);
  fids[2] = ms_xstrdup(ms_sim_framework_id(fws[2]));
  CU_ASSERT_FATAL(ms_sim_wait(f3_holds, NULL, WAIT_MS));
  /* F3 suppresses its offers and F1 renames itself (UpdateFramework): master-api resumes
   * their streams on the new leader with the requests they first subscribed with, which
   * must change neither. F1's update is answered once recorded; the registry client
   * writes in order, so F3's suppression, recorded without waiting, is written by then. */
  Meseta__V1__FrameworkID f3id = MESETA__V1__FRAMEWORK_ID__INIT;
  f3id.value = fids[2];
  Meseta__V1__SuppressRequest sup = MESETA__V1__SUPPRESS_REQUEST__INIT;
  sup.framework_id = &f3id;
  sup.stream_id = (char *)ms_sim_framework_stream_id(fws[2]);
  Meseta__V1__SchedulerCallRequest c3 = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c3.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_SUPPRESS;
  c3.suppress = &sup;
  fw_call_ok(2, &c3);
  Meseta__V1__FrameworkID f1id = MESETA__V1__FRAMEWORK_ID__INIT;
  f1id.value = fids[0];
  char *star[] = {"*"};
  Google__Protobuf__Duration fot = GOOGLE__PROTOBUF__DURATION__INIT;
  fot.seconds = 60;
  Meseta__V1__FrameworkInfo ni = MESETA__V1__FRAMEWORK_INFO__INIT;
  ni.id = &f1id;
  ni.name = "f1-renamed";
  ni.user = "sim";
  ni.n_roles = 1;
  ni.roles = star;
  ni.failover_timeout = &fot;
  Meseta__V1__UpdateFrameworkRequest up = MESETA__V1__UPDATE_FRAMEWORK_REQUEST__INIT;
  up.framework_id = &f1id;
  up.stream_id = (char *)ms_sim_framework_stream_id(fws[0]);
  up.framework_info = &ni;
  Meseta__V1__SchedulerCallRequest c1 = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  c1.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_UPDATE_FRAMEWORK;
  c1.update_framework = &up;
  fw_call_ok(0, &c1);
  /* F1 and F2 have tasks running when the leader dies. */
  int two = 2, n = NFW;
  CU_ASSERT_FATAL(ms_sim_wait(all_have_open, &two, WAIT_MS));
  ms_sim_framework_stats before[NFW];
  for (int i = 0; i < NFW; i++)
    before[i] = fw_stats(i);

  int leader = ms_test_cluster_leader(&c);
  CU_ASSERT_FATAL(leader >= 0);
  CU_ASSERT_EQUAL(ms_test_proc_stop(c.alloc[leader], SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(c.alloc[leader]);
  c.alloc[leader] = NULL;
  /* A call in the gap answers (UNAVAILABLE, or OK once the new leader serves): it
   * does not hang. */
  ms_error *err = NULL;
  if (ms_sim_framework_revive(fws[1], &err) < 0) {
    CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
    ms_error_free(err);
  }
  /* F3's held offers are rescinded by its replica. */
  CU_ASSERT(ms_sim_wait(f3_rescinded, &before[2].rescinds, WAIT_MS));
  ms_sim_framework_set_mode(fws[2], MS_SIM_ACCEPT);
  CU_ASSERT_FATAL(ms_sim_wait(ms_test_serving, (void *)c.addr[1 - leader], WAIT_MS));
  CU_ASSERT_FATAL(ms_sim_wait(agents_back, NULL, WAIT_MS));
  /* Both replicas follow the new leader: their views come back. */
  CU_ASSERT(ms_sim_wait(ms_test_serving, (void *)maddr[0], WAIT_MS));
  CU_ASSERT(ms_sim_wait(ms_test_serving, (void *)maddr[1], WAIT_MS));
  /* On their resumed streams F1 keeps its new name and F3 its suppression; then F3
   * revives, and must make progress below like the others. */
  fw_shown f1_shown = {0, "f1-renamed", ""}, f3_shown = {2, "f3", "*"};
  CU_ASSERT(ms_sim_wait(fw_view_is, &f1_shown, WAIT_MS));
  CU_ASSERT(ms_sim_wait(fw_view_is, &f3_shown, WAIT_MS));
  ms_error *rerr = NULL;
  MS_ASSERT_OK(ms_sim_framework_revive(fws[2], &rerr), &rerr);

  /* The new leader's offers reach every framework on its old stream, and its calls
   * (accept, acknowledge) with the old stream id work. */
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_stats st = fw_stats(i);
    fw_over o = {i, st.launched, st.finished};
    CU_ASSERT(ms_sim_wait(fw_progressed, &o, WAIT_MS));
  }
  /* Stop launching; every task ends exactly once, none lost. */
  for (int i = 0; i < NFW; i++)
    ms_sim_framework_set_mode(fws[i], MS_SIM_DECLINE);
  CU_ASSERT(ms_sim_wait(settled, &n, WAIT_MS));
  check_tasks(NFW);
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_stats st = fw_stats(i);
    /* The scheduler's stream stayed open: no SUBSCRIBED again, the same id. */
    CU_ASSERT_EQUAL(st.resubscriptions, before[i].resubscriptions);
    CU_ASSERT(st.connected);
    CU_ASSERT_STRING_EQUAL(ms_sim_framework_id(fws[i]), fids[i]);
    CU_ASSERT(st.heartbeats > before[i].heartbeats);
  }
}

/* ---- (d) reads agree ---- */

typedef struct read_kind {
  const char *method;
  const ProtobufCMessageDescriptor *req, *resp;
} read_kind;

static const read_kind all_reads[] = {
    {"/meseta.v1.Operator/GetState", &meseta__v1__get_state_request__descriptor,
     &meseta__v1__get_state_response__descriptor},
    {"/meseta.v1.Operator/GetAgents", &meseta__v1__get_agents_request__descriptor,
     &meseta__v1__get_agents_response__descriptor},
    {"/meseta.v1.Operator/GetTasks", &meseta__v1__get_tasks_request__descriptor,
     &meseta__v1__get_tasks_response__descriptor},
    {"/meseta.v1.Operator/GetFrameworks", &meseta__v1__get_frameworks_request__descriptor,
     &meseta__v1__get_frameworks_response__descriptor},
};

/* The response (packed; the caller frees) and its revision; NULL on failure. */
static uint8_t *read_at(const char *addr, const read_kind *k, int64_t min_revision, int64_t *ret_rev,
                        size_t *ret_len) {
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  ProtobufCMessage *req = ms_pb_new(k->req);
  /* Every read request carries `int64 min_revision`. */
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(k->req, "min_revision");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  *(int64_t *)((char *)req + f->offset) = min_revision;
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  ms_rpc_call_options co = {.timeout_ms = 10000};
  uint8_t *bytes = NULL;
  if (ms_rpc_unary(ch, k->method, req, k->resp, &co, &resp, &err) == 0) {
    const ProtobufCFieldDescriptor *rf = protobuf_c_message_descriptor_get_field_by_name(k->resp, "revision");
    *ret_rev = *(int64_t *)((char *)resp + rf->offset);
    bytes = ms_pb_pack(resp, ret_len);
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    fprintf(stderr, "%s on %s: %s\n", k->method, addr, err->msg);
    ms_error_free(err);
  }
  protobuf_c_message_free_unpacked(req, NULL);
  ms_rpc_channel_free(ch);
  return bytes;
}

/* Each read on replicas x and y at one revision: the same answer, byte for byte. A
 * change may land between the reads: then both are asked again at the newer revision
 * (bounded). */
static void reads_agree(int x, int y, const read_kind *kinds, size_t n) {
  for (size_t k = 0; k < n; k++) {
    bool same = false;
    for (int attempt = 0; attempt < 50 && !same; attempt++) {
      int64_t ra = 0, rb = 0;
      size_t la = 0, lb = 0;
      uint8_t *a = read_at(maddr[x], &kinds[k], 0, &ra, &la);
      free(a);
      uint8_t *b = read_at(maddr[y], &kinds[k], ra, &rb, &lb);
      CU_ASSERT_PTR_NOT_NULL_FATAL(b);
      CU_ASSERT(rb >= ra); /* min_revision honoured */
      a = read_at(maddr[x], &kinds[k], rb, &ra, &la);
      CU_ASSERT_PTR_NOT_NULL_FATAL(a);
      CU_ASSERT(ra >= rb);
      if (ra == rb) {
        if (la != lb || memcmp(a, b, la) != 0)
          fprintf(stderr, "%s: the replicas differ at revision %lld\n", kinds[k].method, (long long)ra);
        CU_ASSERT(la == lb && memcmp(a, b, la) == 0);
        same = true;
      }
      free(a);
      free(b);
    }
    if (!same)
      fprintf(stderr, "%s: the replicas never answered at one revision\n", kinds[k].method);
    CU_ASSERT(same);
  }
}

static bool quiet(void *ctx) {
  int n = *(int *)ctx;
  for (int i = 0; i < n; i++)
    if (fw_tasks(i).open)
      return false;
  return true;
}

/* Replica *ctx shows every agent with everything offered, nothing allocated or
 * available: what the allocator holds once the frameworks hold their offers and no
 * task is open. So the view followed the tasks' ends and the offers made since (the
 * allocator shows an agent's allocation as it changes, not only when the agent itself
 * changes). */
static bool all_offered(void *ctx) {
  int64_t rev = 0;
  size_t len = 0;
  uint8_t *bytes = read_at(maddr[*(int *)ctx], &all_reads[1], 0, &rev, &len);
  if (!bytes)
    return false;
  Meseta__V1__GetAgentsResponse *r = meseta__v1__get_agents_response__unpack(NULL, len, bytes);
  free(bytes);
  bool ok = r && r->n_agents == NAGENTS;
  for (size_t i = 0; ok && i < r->n_agents; i++)
    ok = r->agents[i]->n_allocated_resources == 0 && r->agents[i]->n_available_resources == 0 &&
         r->agents[i]->n_offered_resources > 0;
  if (r)
    meseta__v1__get_agents_response__free_unpacked(r, NULL);
  return ok;
}

/* Frameworks 0..n-1 hold their offers (nothing moves) and have no task open. */
static void hold_all(int n) {
  for (int i = 0; i < n; i++)
    ms_sim_framework_set_mode(fws[i], MS_SIM_HOLD); /* offers held, not cycled */
  CU_ASSERT(ms_sim_wait(quiet, &n, WAIT_MS));
}

/* Back to accepting; what they held is declined so it is offered again, to be used. */
static void release_all(int n) {
  for (int i = 0; i < n; i++) {
    ms_sim_framework_set_mode(fws[i], MS_SIM_ACCEPT);
    Meseta__V1__Offer *o;
    while ((o = ms_sim_framework_take_offer(fws[i]))) {
      ms_error *err = NULL;
      if (ms_sim_framework_decline(fws[i], o->id->value, 0, &err) < 0) {
        fprintf(stderr, "decline: %s\n", err->msg);
        ms_error_free(err);
      }
      protobuf_c_message_free_unpacked(&o->base, NULL);
    }
  }
}

/* Both replicas were started before anything happened, so each view is the same
 * stream of changes: every read agrees, whole. */
static void test_reads_agree(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(fws[1]);
  hold_all(2);
  reads_agree(0, 1, all_reads, MS_ARRAY_SIZE(all_reads));
  release_all(2);
}

/* After the failover (and A's successor): each replica's view is a snapshot of the
 * new leader plus its changes, the snapshots maybe at different revisions, and tasks
 * ended since. Every read agrees, whole: agents' allocation, completed tasks. */
static void test_reads_agree_after_failover(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(mapi[0]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fws[2]);
  hold_all(NFW);
  for (int r = 0; r < 2; r++)
    CU_ASSERT(ms_sim_wait(all_offered, &r, WAIT_MS));
  reads_agree(0, 1, all_reads, MS_ARRAY_SIZE(all_reads));
  release_all(NFW);
}

/* A replica started late, while tasks run and end: its snapshot comes at a later
 * revision than B's and holds tasks completed before it, and the agents' allocation
 * as it is then. Once more tasks ran and ended, B and C agree at a revision. */
static void test_late_replica_agrees(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(fws[2]);
  int n = NFW;
  CU_ASSERT_FATAL(ms_sim_wait(all_have_open, &n, WAIT_MS)); /* tasks running now */
  mapi[2] = start_replica("mapi-c");
  maddr[2] = ms_test_proc_address(mapi[2]);
  for (int i = 0; i < NFW; i++) { /* more start and end after C's snapshot */
    ms_sim_framework_stats st = fw_stats(i);
    fw_over o = {i, st.launched, st.finished};
    CU_ASSERT(ms_sim_wait(fw_progressed, &o, WAIT_MS));
  }
  hold_all(NFW);
  for (int r = 0; r < 3; r++)
    CU_ASSERT(ms_sim_wait(all_offered, &r, WAIT_MS));
  reads_agree(1, 2, all_reads, MS_ARRAY_SIZE(all_reads));
  reads_agree(0, 2, all_reads, MS_ARRAY_SIZE(all_reads));
  /* The completed tasks are there, on C too (GetState has them all), at most KEEP_DONE
   * per framework: older ones were evicted (task_removed) on every view alike. */
  int64_t rev = 0;
  size_t len = 0;
  uint8_t *bytes = read_at(maddr[2], &all_reads[0], 0, &rev, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
  Meseta__V1__GetStateResponse *r = meseta__v1__get_state_response__unpack(NULL, len, bytes);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r->state);
  size_t finished = 0, per_fw[NFW] = {0};
  for (size_t i = 0; i < r->state->n_tasks; i++) {
    const Meseta__V1__Task *t = r->state->tasks[i];
    if (t->state != MESETA__V1__TASK_STATE__TASK_FINISHED)
      continue;
    finished++;
    for (int f = 0; f < NFW; f++)
      per_fw[f] += t->framework_id && strcmp(t->framework_id->value, fids[f]) == 0;
  }
  fprintf(stderr, "late replica: %zu tasks, %zu finished (%zu, %zu, %zu), at revision %lld\n",
          r->state->n_tasks, finished, per_fw[0], per_fw[1], per_fw[2], (long long)rev);
  CU_ASSERT(finished > 0);
  for (int f = 0; f < NFW; f++)
    CU_ASSERT(per_fw[f] <= KEEP_DONE);
  meseta__v1__get_state_response__free_unpacked(r, NULL);
  free(bytes);
  release_all(NFW);
}

/* ---- teardown ---- */

static void test_clean_exit(void) {
  for (int i = 0; i < NFW; i++) {
    ms_sim_framework_free(fws[i]);
    fws[i] = NULL;
    free(fids[i]);
    fids[i] = NULL;
  }
  for (int i = 0; i < NAGENTS; i++) {
    ms_sim_agent_free(agents[i]);
    agents[i] = NULL;
  }
  ms_sim_ledger_free(ledger);
  ledger = NULL;
  for (int i = 0; i < 3; i++)
    if (mapi[i]) {
      CU_ASSERT_EQUAL(ms_test_proc_stop(mapi[i], SIGTERM), 0); /* clean, leak-free under ASan */
      ms_test_proc_free(mapi[i]);
      mapi[i] = NULL;
    }
  if (cluster_up)
    ms_test_cluster_stop(&c);
  cluster_up = false;
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"framework_on_each_replica", test_two_replicas},
      {"reads_agree_at_a_revision", test_reads_agree},
      {"replica_killed_framework_moves", test_replica_killed},
      {"allocator_failover_streams_stay", test_allocator_failover},
      {"reads_agree_after_failover", test_reads_agree_after_failover},
      {"late_replica_agrees", test_late_replica_agrees},
      {"clean_exit", test_clean_exit},
      {NULL, NULL},
  };
  /* Few completed tasks kept, so eviction happens (the allocators read the variable). */
  setenv("MESETA_MAX_COMPLETED_TASKS_PER_FRAMEWORK", KEEP_DONE_TEXT, 1);
  return ms_test_main_etcd(argc, argv, "master-api-replicas", cases, &dir, &etcd);
}
