/* Completed frameworks under issue 12 ("Trust", point 10): a torn-down framework is
 * listed by GetFrameworks with include_completed (and `meseta frameworks --all`), not
 * without; it survives a failover of the allocator (a new leader loads it from the
 * registry); its id cannot subscribe again; and the allocator keeps at most
 * --max-completed-frameworks of them. Before, `meseta frameworks --all` was always
 * empty: the allocator forgot a framework at its teardown. Real etcd, registry,
 * allocator, master-api and CLI processes; waits are hang guards. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static ms_test_etcd *etcd;
static char *dir;

/* A framework subscribed through master-api, then torn down by the operator: its id (the caller's). */
static char *subscribe_and_teardown(const char *mapi, const char *name) {
  ms_sim_framework_options fo = {.name = name, .public_api = true, .failover_timeout_ms = 3600000};
  ms_error *err = NULL;
  ms_sim_framework *f = ms_sim_framework_start(mapi, &fo, &err);
  if (!f)
    fprintf(stderr, "%s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  char *id = ms_xstrdup(ms_sim_framework_id(f));
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = id;
  Meseta__V1__TeardownFrameworkRequest req = MESETA__V1__TEARDOWN_FRAMEWORK_REQUEST__INIT;
  req.framework_id = &fid;
  char *msg = NULL;
  ms_status st = ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/Teardown", &req.base,
                              &meseta__v1__teardown_framework_response__descriptor, 10000, NULL, &msg);
  if (st != MS_OK)
    fprintf(stderr, "teardown of %s: %s\n", id, msg);
  free(msg);
  CU_ASSERT_EQUAL_FATAL(st, MS_OK);
  ms_sim_framework_free(f);
  return id;
}

typedef struct listed {
  const char *mapi;
  const char *id;
  bool include_completed;
  bool want; /* listed (completed: inactive, with unregistered_time) or absent */
} listed;

static bool frameworks_say(void *ctx) {
  const listed *l = ctx;
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  req.include_completed = l->include_completed;
  Meseta__V1__GetFrameworksResponse *r = NULL;
  if (ms_test_call(l->mapi, NULL, NULL, "/meseta.v1.Operator/GetFrameworks", &req.base,
                   &meseta__v1__get_frameworks_response__descriptor, 5000, (ProtobufCMessage **)&r,
                   NULL) != MS_OK)
    return false;
  bool found = false;
  for (size_t i = 0; i < r->n_frameworks; i++) {
    const Meseta__V1__Framework *f = r->frameworks[i];
    if (f->framework_info && f->framework_info->id && strcmp(f->framework_info->id->value, l->id) == 0)
      found = !f->active && f->unregistered_time && f->unregistered_time->seconds > 0;
  }
  meseta__v1__get_frameworks_response__free_unpacked(r, NULL);
  return found == l->want;
}

static void expect_listed(const char *mapi, const char *id, bool include_completed, bool want) {
  listed l = {mapi, id, include_completed, want};
  if (!ms_sim_wait(frameworks_say, &l, WAIT_MS))
    fprintf(stderr, "framework %s: GetFrameworks(include_completed=%d) never %s it\n", id, include_completed,
            want ? "listed" : "left out");
  CU_ASSERT(frameworks_say(&l));
}

/* Scheduler.Subscribe with the id of a removed framework: NOT_FOUND saying so. */
static void expect_resubscribe_refused(const char *mapi, const char *id) {
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(mapi, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  char *roles[] = {"*"};
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)id;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.id = &fid;
  info.name = "again";
  info.user = "test";
  info.roles = roles;
  info.n_roles = 1;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  ms_rpc_call_options so = {.timeout_ms = 10000};
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.Scheduler/Subscribe", &sub.base, &so, &err);
  ProtobufCMessage *m = NULL;
  int rc = st ? ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &m, &err) : -1;
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
  CU_ASSERT(rc < 0);
  CU_ASSERT(err && err->code == MS_NOT_FOUND && strstr(err->msg, "was removed"));
  if (err)
    fprintf(stderr, "re-subscription of %s: %s\n", id, err->msg);
  ms_error_free(err);
  ms_rpc_stream_free(st);
  ms_rpc_channel_free(ch);
}

/* `meseta frameworks [--all] -o json` names id (want) or not. */
static void expect_cli(const char *mapi, const char *id, bool all, bool want) {
  _cleanup_free_ char *bin = ms_test_binary("cli/meseta");
  _cleanup_free_ char *cmd =
      ms_xasprintf("'%s' --master %s frameworks %s -o json", bin, mapi, all ? "--all" : "");
  FILE *p = popen(cmd, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  char buf[65536];
  size_t n = fread(buf, 1, sizeof(buf) - 1, p);
  buf[n] = '\0';
  int status = pclose(p);
  CU_ASSERT_EQUAL(status, 0);
  CU_ASSERT_EQUAL(strstr(buf, id) != NULL, want);
  if ((strstr(buf, id) != NULL) != want)
    fprintf(stderr, "%s printed:\n%s\n", cmd, buf);
}

static char *view_leader(const char *mapi) {
  Meseta__V1__GetMasterRequest req = MESETA__V1__GET_MASTER_REQUEST__INIT;
  Meseta__V1__GetMasterResponse *r = NULL;
  if (ms_test_call(mapi, NULL, NULL, "/meseta.v1.Operator/GetMaster", &req.base,
                   &meseta__v1__get_master_response__descriptor, 5000, (ProtobufCMessage **)&r,
                   NULL) != MS_OK)
    return NULL;
  char *id =
      r->master_info && r->master_info->id && *r->master_info->id ? ms_xstrdup(r->master_info->id) : NULL;
  meseta__v1__get_master_response__free_unpacked(r, NULL);
  return id;
}

typedef struct new_leader {
  const char *mapi;
  const char *old;
} new_leader;

static bool view_from_new_leader(void *ctx) {
  const new_leader *n = ctx;
  _cleanup_free_ char *id = view_leader(n->mapi);
  return id && strcmp(id, n->old) != 0;
}

static void test_trust_10_frameworks_all_survives_failover(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "cfw", 2, "5s");
  int lead = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(lead >= 0);
  ms_test_proc *mapi = ms_test_mapi_start(
      dir, "mapi-cfw", (const char *[]){"--registry", ms_test_proc_address(c.registry), NULL}, true);
  const char *ma = ms_test_proc_address(mapi);

  _cleanup_free_ char *id = subscribe_and_teardown(ma, "ended");
  expect_listed(ma, id, true, true);
  expect_listed(ma, id, false, false);
  expect_cli(ma, id, true, true);
  expect_cli(ma, id, false, false);
  expect_resubscribe_refused(ma, id);

  /* The leader dies: the new one loads the completed framework from the registry. */
  _cleanup_free_ char *old = view_leader(ma);
  CU_ASSERT_PTR_NOT_NULL_FATAL(old);
  CU_ASSERT_EQUAL(ms_test_proc_stop(c.alloc[lead], SIGKILL), 128 + SIGKILL);
  ms_test_proc_free(c.alloc[lead]);
  c.alloc[lead] = NULL;
  c.addr[lead] = NULL;
  CU_ASSERT_FATAL(ms_test_cluster_wait_leader(&c, WAIT_MS) >= 0);
  new_leader nl = {ma, old};
  CU_ASSERT_FATAL(ms_sim_wait(view_from_new_leader, &nl, WAIT_MS));
  expect_listed(ma, id, true, true);
  expect_listed(ma, id, false, false);
  expect_cli(ma, id, true, true);
  expect_resubscribe_refused(ma, id);

  CU_ASSERT_EQUAL(ms_test_proc_stop(mapi, SIGTERM), 0);
  ms_test_proc_free(mapi);
  ms_test_cluster_stop(&c);
}

/* Operator.Subscribe with 1 s heartbeats; the stream's reads give up after 60 s. */
static ms_rpc_stream *operator_events(ms_rpc_channel *ch) {
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.seconds = 1;
  Meseta__V1__SubscribeOperatorRequest req = MESETA__V1__SUBSCRIBE_OPERATOR_REQUEST__INIT;
  req.heartbeat_interval = &hb;
  ms_rpc_call_options co = {.timeout_ms = 60000};
  ms_error *err = NULL;
  ms_rpc_stream *st = ms_rpc_stream_open(ch, "/meseta.v1.Operator/Subscribe", &req.base, &co, &err);
  if (!st)
    fprintf(stderr, "Operator.Subscribe: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  return st;
}

/* Reads events until the second heartbeat after FRAMEWORK_REMOVED of ids[n - 1]; counts
 * FRAMEWORK_REMOVED per id, and FRAMEWORK_UPDATED events that show a framework ended. */
static void count_removed(ms_rpc_stream *st, char **ids, int n, int *removed, int *ended_updates) {
  int beats = -1;
  while (beats < 2) {
    ProtobufCMessage *m = NULL;
    ms_error *err = NULL;
    if (ms_rpc_stream_recv(st, &meseta__v1__operator_event__descriptor, &m, &err) <= 0) {
      fprintf(stderr, "Operator.Subscribe ended: %s\n", err ? err->msg : "end of stream");
      ms_error_free(err);
      CU_FAIL("event stream");
      return;
    }
    const Meseta__V1__OperatorEvent *ev = (const void *)m;
    if (ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_HEARTBEAT && beats >= 0)
      beats++;
    if (ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_UPDATED &&
        ev->framework_updated->framework->unregistered_time)
      (*ended_updates)++;
    if (ev->event_case == MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_REMOVED) {
      const Meseta__V1__FrameworkInfo *fi = ev->framework_removed->framework_info;
      for (int i = 0; i < n; i++)
        if (fi && fi->id && strcmp(fi->id->value, ids[i]) == 0) {
          removed[i]++;
          if (i == n - 1 && beats < 0)
            beats = 0;
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
  }
}

/* --max-completed-frameworks 2: the framework that ended first is forgotten. Operators
 * get one FRAMEWORK_REMOVED per teardown, none when a completed one is forgotten. */
static void test_trust_10_completed_frameworks_bounded(void) {
  ms_test_allocator al =
      ms_test_allocator_run(dir, "alloc-bound", (const char *[]){"--max-completed-frameworks", "2", NULL});
  ms_test_proc *mapi =
      ms_test_mapi_start(dir, "mapi-bound", (const char *[]){"--allocator", al.addr, NULL}, true);
  const char *ma = ms_test_proc_address(mapi);
  ms_rpc_channel *ch = ms_rpc_channel_new(ma, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  ms_rpc_stream *events = operator_events(ch);
  char *ids[3];
  for (int i = 0; i < 3; i++) {
    _cleanup_free_ char *name = ms_xasprintf("bounded-%d", i);
    ids[i] = subscribe_and_teardown(ma, name);
    expect_listed(ma, ids[i], true, true);
  }
  expect_listed(ma, ids[0], true, false);
  expect_listed(ma, ids[1], true, true);
  expect_listed(ma, ids[2], true, true);
  int removed[3] = {0}, ended_updates = 0;
  count_removed(events, ids, 3, removed, &ended_updates);
  fprintf(stderr, "FRAMEWORK_REMOVED events: %d %d %d; FRAMEWORK_UPDATED showing an end: %d\n", removed[0],
          removed[1], removed[2], ended_updates);
  for (int i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(removed[i], 1);
    free(ids[i]);
  }
  CU_ASSERT_EQUAL(ended_updates, 0);
  ms_rpc_stream_free(events);
  ms_rpc_channel_free(ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(mapi, SIGTERM), 0);
  ms_test_proc_free(mapi);
  ms_test_allocator_stop(&al);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"trust_10_frameworks_all_survives_failover", test_trust_10_frameworks_all_survives_failover},
      {"trust_10_completed_frameworks_bounded", test_trust_10_completed_frameworks_bounded},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "completed-frameworks", cases, &dir, &etcd);
}
