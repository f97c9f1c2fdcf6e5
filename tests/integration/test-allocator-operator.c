/* Allocator.OperatorCall and Allocator.WatchState over a real etcd, meseta-registry and
 * two meseta-allocators, with simulated agents and frameworks: quota counts
 * reservations, refused quota changes change nothing, WatchState's snapshot and
 * changes, drain and mark-gone, and that quota, weights and drain state survive a
 * failover. Waits are bounded hang guards, never timing assertions. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_link.pb-c.h"
#include "meseta/v1/registry.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proc.h"
#include "sim.h"
#include "testlib.h"

#define WAIT_MS 30000

static ms_test_etcd *etcd;
static char *dir;

/* ---- calls ---- */

static ms_status op_call(const char *addr, const Meseta__V1__OperatorCallRequest *req, char **msg) {
  return ms_test_operator_call(addr, req, msg);
}

static Meseta__V1__Value__Scalar *scalar(double v) {
  Meseta__V1__Value__Scalar *s = ms_xmalloc(sizeof(*s));
  meseta__v1__value__scalar__init(s);
  s->value = v;
  return s;
}

/* A quota config with one guarantee and one limit (negative: absent). Heap. */
static Meseta__V1__QuotaConfig *quota(const char *role, const char *name, double guarantee, double limit) {
  Meseta__V1__QuotaConfig *q = ms_xmalloc(sizeof(*q));
  meseta__v1__quota_config__init(q);
  q->role = ms_xstrdup(role);
  for (int pass = 0; pass < 2; pass++) {
    double v = pass ? limit : guarantee;
    if (v < 0 && v != -2)
      continue;
    if (v == -2)
      v = -1; /* a negative value on purpose */
    Meseta__V1__QuotaConfig__GuaranteesEntry *e = ms_xmalloc(sizeof(*e));
    meseta__v1__quota_config__guarantees_entry__init(e);
    e->key = ms_xstrdup(name);
    e->value = scalar(v);
    if (pass) {
      q->limits = ms_xmalloc(sizeof(*q->limits));
      q->limits[0] = (Meseta__V1__QuotaConfig__LimitsEntry *)e;
      e->base.descriptor = &meseta__v1__quota_config__limits_entry__descriptor;
      q->n_limits = 1;
    } else {
      q->guarantees = ms_xmalloc(sizeof(*q->guarantees));
      q->guarantees[0] = e;
      q->n_guarantees = 1;
    }
  }
  return q;
}

static ms_status update_quota_force(const char *addr, Meseta__V1__QuotaConfig **cfgs, size_t n, bool force,
                                    char **msg) {
  Meseta__V1__UpdateQuotaRequest u = MESETA__V1__UPDATE_QUOTA_REQUEST__INIT;
  u.configs = cfgs;
  u.n_configs = n;
  u.force = force;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_QUOTA;
  req.update_quota = &u;
  ms_status code = op_call(addr, &req, msg);
  for (size_t i = 0; i < n; i++)
    protobuf_c_message_free_unpacked(&cfgs[i]->base, NULL);
  return code;
}

static ms_status update_quota(const char *addr, Meseta__V1__QuotaConfig **cfgs, size_t n, char **msg) {
  return update_quota_force(addr, cfgs, n, false, msg);
}

static ms_status update_weight_msg(const char *addr, const char *role, double w, char **msg) {
  Meseta__V1__WeightInfo wi = MESETA__V1__WEIGHT_INFO__INIT;
  wi.role = (char *)role;
  wi.weight = w;
  Meseta__V1__WeightInfo *wis[] = {&wi};
  Meseta__V1__UpdateWeightsRequest u = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
  u.weight_infos = wis;
  u.n_weight_infos = 1;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_WEIGHTS;
  req.update_weights = &u;
  return op_call(addr, &req, msg);
}

static ms_status update_weight(const char *addr, const char *role, double w) {
  return update_weight_msg(addr, role, w, NULL);
}

/* cpus:n reserved (DYNAMIC) to role. */
static ms_status reserve(const char *addr, const char *agent, const char *role, double cpus, bool un) {
  Meseta__V1__Resource__ReservationInfo ri = MESETA__V1__RESOURCE__RESERVATION_INFO__INIT;
  ri.type = MESETA__V1__RESOURCE__RESERVATION_INFO__TYPE__DYNAMIC;
  ri.role = (char *)role;
  Meseta__V1__Resource__ReservationInfo *ris[] = {&ri};
  Meseta__V1__Value__Scalar sc = MESETA__V1__VALUE__SCALAR__INIT;
  sc.value = cpus;
  Meseta__V1__Resource r = MESETA__V1__RESOURCE__INIT;
  r.name = "cpus";
  r.type = MESETA__V1__VALUE__TYPE__SCALAR;
  r.scalar = &sc;
  r.reservations = ris;
  r.n_reservations = 1;
  Meseta__V1__Resource *rs[] = {&r};
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__ReserveResourcesRequest rr = MESETA__V1__RESERVE_RESOURCES_REQUEST__INIT;
  Meseta__V1__UnreserveResourcesRequest ur = MESETA__V1__UNRESERVE_RESOURCES_REQUEST__INIT;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  if (un) {
    ur.agent_id = &aid;
    ur.resources = rs;
    ur.n_resources = 1;
    req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UNRESERVE_RESOURCES;
    req.unreserve_resources = &ur;
  } else {
    rr.agent_id = &aid;
    rr.resources = rs;
    rr.n_resources = 1;
    req.call_case = MESETA__V1__OPERATOR_CALL_REQUEST__CALL_RESERVE_RESOURCES;
    req.reserve_resources = &rr;
  }
  char *msg = NULL;
  ms_status code = op_call(addr, &req, &msg);
  if (code != MS_OK)
    fprintf(stderr, "reserve: %s\n", msg);
  free(msg);
  return code;
}

static ms_status agent_call(const char *addr, const char *agent,
                            Meseta__V1__OperatorCallRequest__CallCase cc) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = (char *)agent;
  Meseta__V1__DrainAgentRequest d = MESETA__V1__DRAIN_AGENT_REQUEST__INIT;
  Meseta__V1__MarkAgentGoneRequest g = MESETA__V1__MARK_AGENT_GONE_REQUEST__INIT;
  d.agent_id = g.agent_id = &aid;
  Meseta__V1__OperatorCallRequest req = MESETA__V1__OPERATOR_CALL_REQUEST__INIT;
  req.call_case = cc;
  if (cc == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT)
    req.drain_agent = &d;
  else
    req.mark_agent_gone = &g;
  return op_call(addr, &req, NULL);
}

static Meseta__V1__Record *reg_get(ms_test_cluster *c, Meseta__V1__RecordKind kind, const char *id) {
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_test_proc_address(c->registry), NULL, NULL);
  Meseta__V1__GetRequest g = MESETA__V1__GET_REQUEST__INIT;
  g.kind = kind;
  g.id = (char *)id;
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  if (ms_rpc_unary(ch, "/meseta.v1.Registry/Get", &g.base, &meseta__v1__record__descriptor, NULL, &resp,
                   &err) < 0)
    ms_error_free(err);
  ms_rpc_channel_free(ch);
  return (Meseta__V1__Record *)resp;
}

static double quota_limit(const Meseta__V1__QuotaConfig *q, const char *name) {
  for (size_t i = 0; q && i < q->n_limits; i++)
    if (strcmp(q->limits[i]->key, name) == 0)
      return q->limits[i]->value ? q->limits[i]->value->value : 0;
  return -1;
}

/* ---- offers ---- */

/* cpus in an offer: unreserved and reserved. */
static void offer_cpus(const Meseta__V1__Offer *o, double *unres, double *res) {
  *unres = *res = 0;
  for (size_t i = 0; i < o->n_resources; i++) {
    const Meseta__V1__Resource *r = o->resources[i];
    if (strcmp(r->name, "cpus") != 0 || !r->scalar)
      continue;
    *(r->n_reservations ? res : unres) += r->scalar->value;
  }
}

typedef struct offer_wait {
  ms_sim_framework *f;
  bool want_unreserved; /* wait for an offer with unreserved cpus; else with reserved */
  double unres, res;    /* of every offer seen */
  bool seen;
  Meseta__V1__Offer *kept; /* the last offer that matched (the caller's) */
} offer_wait;

static bool offer_seen(void *ctx) {
  offer_wait *w = ctx;
  Meseta__V1__Offer *o;
  while ((o = ms_sim_framework_take_offer(w->f))) {
    double u, r;
    offer_cpus(o, &u, &r);
    w->unres += u;
    w->res += r;
    if (w->want_unreserved ? u > 0 : r > 0) {
      w->seen = true;
      if (w->kept)
        protobuf_c_message_free_unpacked(&w->kept->base, NULL);
      w->kept = o;
      continue;
    }
    protobuf_c_message_free_unpacked(&o->base, NULL);
  }
  return w->seen;
}

/* ---- WatchState ---- */

typedef struct watch {
  ms_rpc_channel *ch;
  ms_rpc_stream *st;
  Meseta__V1__State snap; /* counts only */
  bool agent_found, fw_found, weight_found, quota_found, draining;
  int64_t revision;
} watch;

/* Opens a watch and reads its snapshot, looking for the agent / framework. */
static void watch_open(watch *w, const char *addr, const char *agent, const char *fw) {
  memset(w, 0, sizeof(*w));
  w->ch = ms_rpc_channel_new(addr, NULL, NULL);
  Meseta__V1__WatchStateRequest req = MESETA__V1__WATCH_STATE_REQUEST__INIT;
  req.watcher = "test";
  ms_rpc_call_options co = {.timeout_ms = WAIT_MS};
  ms_error *err = NULL;
  w->st = ms_rpc_stream_open(w->ch, "/meseta.v1.Allocator/WatchState", &req.base, &co, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(w->st);
  bool begun = false;
  for (;;) {
    ProtobufCMessage *m = NULL;
    if (ms_rpc_stream_recv(w->st, &meseta__v1__state_event__descriptor, &m, &err) < 0 || !m) {
      fprintf(stderr, "watch: %s\n", err ? err->msg : "ended");
      ms_error_free(err);
      CU_FAIL_FATAL("the snapshot did not complete");
    }
    Meseta__V1__StateEvent *ev = (Meseta__V1__StateEvent *)m;
    bool end = ev->event_case == MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
    if (ev->event_case == MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN)
      begun = true;
    if (ev->event_case == MESETA__V1__STATE_EVENT__EVENT_CHUNK) {
      CU_ASSERT(begun);
      const Meseta__V1__StateChunk *c = ev->chunk;
      for (size_t i = 0; c->state && i < c->state->n_agents; i++)
        if (agent && c->state->agents[i]->agent_info && c->state->agents[i]->agent_info->id &&
            strcmp(c->state->agents[i]->agent_info->id->value, agent) == 0) {
          w->agent_found = true;
          w->draining = c->state->agents[i]->state == MESETA__V1__AGENT__STATE__DRAINING;
        }
      for (size_t i = 0; c->state && i < c->state->n_frameworks; i++)
        if (fw && c->state->frameworks[i]->framework_info->id &&
            strcmp(c->state->frameworks[i]->framework_info->id->value, fw) == 0)
          w->fw_found = true;
      for (size_t i = 0; i < c->n_weights; i++)
        if (strcmp(c->weights[i]->role, "heavy") == 0 && c->weights[i]->weight == 3.0)
          w->weight_found = true;
      for (size_t i = 0; i < c->n_quota_configs; i++)
        if (strcmp(c->quota_configs[i]->role, "q") == 0 && quota_limit(c->quota_configs[i], "cpus") == 2)
          w->quota_found = true;
    }
    w->revision = ev->revision;
    protobuf_c_message_free_unpacked(m, NULL);
    if (end)
      break;
  }
}

static void watch_close(watch *w) {
  ms_rpc_stream_free(w->st);
  ms_rpc_channel_free(w->ch);
}

/* ---- the tests ---- */

static bool any_offer(void *ctx) {
  ms_sim_framework_stats st;
  ms_sim_framework_stats_get(ctx, &st);
  return st.offers > 0;
}

static void test_quota_reservations_watch_failover(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "operator", 2, "5s");
  int wl_leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl_leader >= 0);
  const char *leader = c.addr[wl_leader];
  const char *other[] = {c.addr[1 - wl_leader], NULL};
  ms_error *err = NULL;

  ms_sim_agent_options ao = {.hostname = "node-a", .resources = "cpus:4;mem:4096", .more_targets = other};
  ms_sim_agent *a = ms_sim_agent_start(leader, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);

  /* Quota: role q limited to 2 cpus. */
  Meseta__V1__QuotaConfig *q1[] = {quota("q", "cpus", -1, 2)};
  CU_ASSERT_EQUAL_FATAL(update_quota(leader, q1, 1, NULL), MS_OK);
  Meseta__V1__Record *rec = reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, "q");
  CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
  CU_ASSERT_EQUAL(quota_limit(rec->quota->config, "cpus"), 2);
  protobuf_c_message_free_unpacked(&rec->base, NULL);

  /* Refused configs change nothing and name the field. */
  char *msg = NULL;
  Meseta__V1__QuotaConfig *bad1[] = {quota("q", "cpus", -1, 3), quota("b", "cpus", 5, 1)};
  CU_ASSERT_EQUAL(update_quota(leader, bad1, 2, &msg), MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "update_quota.configs[1].guarantees[cpus]"));
  Meseta__V1__QuotaConfig *bad2[] = {quota("/bad", "cpus", -1, 3)};
  CU_ASSERT_EQUAL(update_quota(leader, bad2, 1, &msg), MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "update_quota.configs[0].role"));
  Meseta__V1__QuotaConfig *bad3[] = {quota("q", "cpus", -1, -2)};
  CU_ASSERT_EQUAL(update_quota(leader, bad3, 1, &msg), MS_INVALID_ARGUMENT);
  CU_ASSERT(msg && strstr(msg, "update_quota.configs[0].limits[cpus]"));
  free(msg);
  rec = reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, "q");
  CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
  CU_ASSERT_EQUAL(quota_limit(rec->quota->config, "cpus"), 2); /* the old value */
  protobuf_c_message_free_unpacked(&rec->base, NULL);
  CU_ASSERT_PTR_NULL(reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, "b"));

  /* Reserving cpus:2 to q uses its whole limit, used or not; past it is refused. */
  CU_ASSERT_EQUAL_FATAL(reserve(leader, ms_sim_agent_id(a), "q", 2, false), MS_OK);
  CU_ASSERT_EQUAL(reserve(leader, ms_sim_agent_id(a), "q", 1, false), MS_RESOURCE_EXHAUSTED);

  /* A framework in q gets the reserved cpus and no unreserved ones. */
  ms_sim_framework_options fo = {.name = "fq", .role = "q", .mode = MS_SIM_HOLD, .more_targets = other};
  ms_sim_framework *f = ms_sim_framework_start(leader, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  offer_wait ow = {.f = f, .want_unreserved = false};
  CU_ASSERT_FATAL(ms_sim_wait(offer_seen, &ow, WAIT_MS));
  usleep(500 * 1000); /* several cycles: nothing more may come */
  (void)offer_seen(&ow);
  CU_ASSERT_EQUAL(ow.res, 2);
  CU_ASSERT_EQUAL(ow.unres, 0);

  /* Unreserving gives the headroom back: unreserved cpus are offered. */
  CU_ASSERT_EQUAL_FATAL(reserve(leader, ms_sim_agent_id(a), "q", 2, true), MS_OK);
  offer_wait ow2 = {.f = f, .want_unreserved = true};
  CU_ASSERT(ms_sim_wait(offer_seen, &ow2, WAIT_MS));
  CU_ASSERT(ow2.unres <= 2);

  /* WatchState: the snapshot has the agent and the framework; a task launched
   * afterwards arrives as a change; revisions grow strictly. */
  watch w;
  watch_open(&w, leader, ms_sim_agent_id(a), ms_sim_framework_id(f));
  CU_ASSERT(w.agent_found);
  CU_ASSERT(w.fw_found);
  CU_ASSERT(w.quota_found);
  Meseta__V1__Offer *o = ow2.kept; /* still outstanding */
  if (ow.kept)
    protobuf_c_message_free_unpacked(&ow.kept->base, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_EQUAL(ms_sim_framework_launch(f, o, "watched-task", "cpus:0.5;mem:64", &err), 0);
  protobuf_c_message_free_unpacked(&o->base, NULL);
  bool task_seen = false;
  int64_t last = w.revision;
  while (!task_seen) {
    ProtobufCMessage *m = NULL;
    if (ms_rpc_stream_recv(w.st, &meseta__v1__state_event__descriptor, &m, &err) < 0 || !m) {
      ms_error_free(err);
      err = NULL;
      break;
    }
    Meseta__V1__StateEvent *ev = (Meseta__V1__StateEvent *)m;
    if (ev->event_case == MESETA__V1__STATE_EVENT__EVENT_CHANGE) {
      CU_ASSERT(ev->revision > last);
      last = ev->revision;
      const Meseta__V1__StateChange *ch = ev->change;
      if (ch->change_case == MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED &&
          strcmp(ch->task_added->task_id->value, "watched-task") == 0)
        task_seen = true;
    }
    protobuf_c_message_free_unpacked(m, NULL);
  }
  CU_ASSERT(task_seen);
  watch_close(&w);

  /* Weights and drain state, then the leader dies: the new one loaded them. */
  CU_ASSERT_EQUAL(update_weight(leader, "heavy", 3.0), MS_OK);
  CU_ASSERT_EQUAL(agent_call(leader, ms_sim_agent_id(a), MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT),
                  MS_OK);
  rec = reg_get(&c, MESETA__V1__RECORD_KIND__AGENT, ms_sim_agent_id(a));
  CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
  CU_ASSERT_EQUAL(rec->agent->drain_state, MESETA__V1__DRAIN_STATE__DRAINING);
  protobuf_c_message_free_unpacked(&rec->base, NULL);

  ms_test_proc_stop(c.alloc[wl_leader], SIGKILL);
  ms_test_proc_free(c.alloc[wl_leader]);
  c.alloc[wl_leader] = NULL;
  const char *next = other[0];
  bool ok = false;
  for (int i = 0; i < 300 && !ok; i++) {
    if (ms_test_health(next) == 1) {
      watch_open(&w, next, ms_sim_agent_id(a), NULL);
      ok = w.agent_found;
      if (ok) {
        CU_ASSERT(w.weight_found);
        CU_ASSERT(w.quota_found);
        CU_ASSERT(w.draining);
      }
      watch_close(&w);
    }
    if (!ok)
      usleep(100000);
  }
  CU_ASSERT(ok);

  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

static void test_drain_and_gone(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "drain", 2, "5s");
  int wl_leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl_leader >= 0);
  const char *leader = c.addr[wl_leader];
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-d", .resources = "cpus:2;mem:1024"};
  ms_sim_agent *a = ms_sim_agent_start(leader, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  ms_sim_framework_options fo = {.name = "fd", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = ms_sim_framework_start(leader, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_FATAL(ms_sim_wait(any_offer, f, WAIT_MS));

  /* Draining: the outstanding offer is rescinded and nothing new comes. */
  CU_ASSERT_EQUAL_FATAL(
      agent_call(leader, ms_sim_agent_id(a), MESETA__V1__OPERATOR_CALL_REQUEST__CALL_DRAIN_AGENT), MS_OK);
  ms_sim_framework_stats st;
  ms_sim_framework_stats_get(f, &st);
  for (int i = 0; i < 300 && st.rescinds == 0; i++) {
    usleep(10000);
    ms_sim_framework_stats_get(f, &st);
  }
  CU_ASSERT(st.rescinds >= 1);
  Meseta__V1__Offer *o = ms_sim_framework_take_offer(f);
  CU_ASSERT_PTR_NULL(o);
  uint64_t offers = st.offers;
  CU_ASSERT_EQUAL(ms_sim_framework_revive(f, &err), 0);
  usleep(500 * 1000); /* several cycles */
  ms_sim_framework_stats_get(f, &st);
  CU_ASSERT_EQUAL(st.offers, offers);

  /* Gone: the record says so and the agent cannot come back. */
  _cleanup_free_ char *id = ms_xstrdup(ms_sim_agent_id(a));
  CU_ASSERT_EQUAL_FATAL(agent_call(leader, id, MESETA__V1__OPERATOR_CALL_REQUEST__CALL_MARK_AGENT_GONE),
                        MS_OK);
  Meseta__V1__Record *rec = reg_get(&c, MESETA__V1__RECORD_KIND__AGENT, id);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
  CU_ASSERT_EQUAL(rec->agent->state, MESETA__V1__AGENT_RECORD__STATE__GONE);
  protobuf_c_message_free_unpacked(&rec->base, NULL);

  ms_rpc_channel *ch = ms_rpc_channel_new(leader, NULL, &err);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = id;
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.id = &aid;
  info.hostname = "node-d";
  Meseta__V1__AgentMessage__Reregister rr = MESETA__V1__AGENT_MESSAGE__REREGISTER__INIT;
  rr.agent_info = &info;
  Meseta__V1__AgentMessage am = MESETA__V1__AGENT_MESSAGE__INIT;
  am.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REREGISTER;
  am.reregister = &rr;
  ms_rpc_call_options co = {.timeout_ms = WAIT_MS};
  ms_rpc_stream *s = ms_rpc_stream_open(ch, "/meseta.v1.AgentLink/Connect", NULL, &co, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(ms_rpc_stream_send(s, &am.base, &err), 0);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, &meseta__v1__allocator_message__descriptor, &m, &err), MS_ERR);
  CU_ASSERT_EQUAL(err ? err->code : MS_OK, MS_FAILED_PRECONDITION);
  ms_error_free(err);
  ms_rpc_stream_free(s);
  ms_rpc_channel_free(ch);

  ms_sim_framework_free(f);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

/* Weights 3:1 between two roles' frameworks over several agents: the heavier role
 * ends up with more offered cpus. */
typedef struct two {
  ms_sim_framework *f[2];
} two;

static bool both_offered(void *ctx) {
  two *t = ctx;
  ms_sim_framework_stats a, b;
  ms_sim_framework_stats_get(t->f[0], &a);
  ms_sim_framework_stats_get(t->f[1], &b);
  return a.offers + b.offers >= 8;
}

static void test_weights(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "weights", 2, "5s");
  int wl_leader = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl_leader >= 0);
  const char *leader = c.addr[wl_leader];
  ms_error *err = NULL;
  CU_ASSERT_EQUAL_FATAL(update_weight(leader, "heavy", 3.0), MS_OK);
  two t;
  ms_sim_framework_options fo = {.name = "fh", .role = "heavy", .mode = MS_SIM_HOLD};
  t.f[0] = ms_sim_framework_start(leader, &fo, &err);
  fo.name = "fl";
  fo.role = "light";
  t.f[1] = ms_sim_framework_start(leader, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t.f[0]);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t.f[1]);
  ms_sim_agent *ag[8];
  for (int i = 0; i < 8; i++) {
    ms_sim_agent_options ao = {.hostname = "node-w", .resources = "cpus:1;mem:256"};
    ag[i] = ms_sim_agent_start(leader, &ao, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ag[i]);
  }
  CU_ASSERT(ms_sim_wait(both_offered, &t, WAIT_MS));
  ms_sim_framework_stats h, l;
  ms_sim_framework_stats_get(t.f[0], &h);
  ms_sim_framework_stats_get(t.f[1], &l);
  CU_ASSERT(h.offers > l.offers);
  for (int i = 0; i < 8; i++)
    ms_sim_agent_free(ag[i]);
  ms_sim_framework_free(t.f[0]);
  ms_sim_framework_free(t.f[1]);
  ms_test_cluster_stop(&c);
}

/* A refusal with `code` whose message names `field`. */
static void expect_refused(ms_status got, char **msg, ms_status code, const char *field) {
  if (got != code || !*msg || !strstr(*msg, field))
    fprintf(stderr, "got %s `%s`, want %s naming `%s`\n", ms_status_name(got), *msg ? *msg : "",
            ms_status_name(code), field);
  CU_ASSERT_EQUAL(got, code);
  CU_ASSERT(*msg && strstr(*msg, field));
  free(*msg);
  *msg = NULL;
}

/* Issue 12 point 6: quota past the cluster's capacity, a child's limit above its
 * parent's, sub-roles' guarantees above the parent's, a made-up or non-scalar resource
 * and a limit below what a role consumes are refused naming the field (the first two
 * and the last accepted with `force`, as Mesos); a zero limit is a limit; weights are
 * bounded. */
static void test_trust_6_quota_and_weights(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "bad-values", 1, "5s");
  int wl = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl >= 0);
  const char *leader = c.addr[wl];
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-v", .resources = "cpus:4;mem:4096;ports:[31000-31009]"};
  ms_sim_agent *a = ms_sim_agent_start(leader, &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  char *msg = NULL;

  /* Capacity: 100000 cpus on a 4-cpu cluster. */
  Meseta__V1__QuotaConfig *big[] = {quota("big", "cpus", 100000, -1)};
  expect_refused(update_quota(leader, big, 1, &msg), &msg, MS_FAILED_PRECONDITION,
                 "update_quota.configs[0].guarantees[cpus]");
  CU_ASSERT_PTR_NULL(reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, "big"));
  Meseta__V1__QuotaConfig *big2[] = {quota("big", "cpus", 100000, -1)};
  CU_ASSERT_EQUAL(update_quota_force(leader, big2, 1, true, &msg), MS_OK);
  Meseta__V1__QuotaConfig *unbig[] = {quota("big", "cpus", -1, -1)};
  CU_ASSERT_EQUAL(update_quota(leader, unbig, 1, &msg), MS_OK);

  /* Hierarchy: a child's limit above its parent's, either way round. */
  Meseta__V1__QuotaConfig *p2[] = {quota("eng", "cpus", -1, 2)};
  CU_ASSERT_EQUAL_FATAL(update_quota(leader, p2, 1, &msg), MS_OK);
  Meseta__V1__QuotaConfig *c4[] = {quota("eng/web", "cpus", -1, 4)};
  expect_refused(update_quota(leader, c4, 1, &msg), &msg, MS_FAILED_PRECONDITION,
                 "update_quota.configs[0].limits[cpus]");
  Meseta__V1__QuotaConfig *c1[] = {quota("eng/web", "cpus", -1, 1)};
  CU_ASSERT_EQUAL_FATAL(update_quota(leader, c1, 1, &msg), MS_OK);
  Meseta__V1__QuotaConfig *lower[] = {quota("eng", "cpus", -1, 0.5)};
  expect_refused(update_quota(leader, lower, 1, &msg), &msg, MS_FAILED_PRECONDITION,
                 "update_quota.configs[0].limits[cpus]");
  /* Sub-roles' guarantees above the parent's limit. */
  Meseta__V1__QuotaConfig *kids[] = {quota("eng/a", "cpus", 1.5, -1), quota("eng/b", "cpus", 1, -1)};
  expect_refused(update_quota(leader, kids, 2, &msg), &msg, MS_FAILED_PRECONDITION, "guarantees[cpus]");
  Meseta__V1__QuotaConfig *lower2[] = {quota("eng", "cpus", -1, 0.5)};
  CU_ASSERT_EQUAL(update_quota_force(leader, lower2, 1, true, &msg), MS_OK);

  /* Only scalar resources the cluster knows. */
  Meseta__V1__QuotaConfig *bogus[] = {quota("ops", "bogus", 1, -1)};
  expect_refused(update_quota_force(leader, bogus, 1, true, &msg), &msg, MS_INVALID_ARGUMENT,
                 "update_quota.configs[0].guarantees[bogus]");
  Meseta__V1__QuotaConfig *ports[] = {quota("ops", "ports", -1, 2)};
  expect_refused(update_quota(leader, ports, 1, &msg), &msg, MS_INVALID_ARGUMENT,
                 "update_quota.configs[0].limits[ports]");
  CU_ASSERT_PTR_NULL(reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, "ops"));

  /* A limit of 0 cpus is a limit: offers to the role carry no cpus. */
  Meseta__V1__QuotaConfig *zero[] = {quota("zero", "cpus", -1, 0)};
  CU_ASSERT_EQUAL_FATAL(update_quota(leader, zero, 1, &msg), MS_OK);
  ms_sim_framework_options fo = {.name = "fz", .role = "zero", .mode = MS_SIM_HOLD};
  ms_sim_framework *f = ms_sim_framework_start(leader, &fo, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  Meseta__V1__Offer *o = ms_sim_framework_wait_offer(f, WAIT_MS);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  for (size_t i = 0; i < o->n_resources; i++)
    CU_ASSERT(strcmp(o->resources[i]->name, "cpus") != 0);
  protobuf_c_message_free_unpacked(&o->base, NULL);

  /* A limit below what the role already consumes (the offer held counts). */
  Meseta__V1__QuotaConfig *mem[] = {quota("zero", "mem", -1, 1)};
  expect_refused(update_quota(leader, mem, 1, &msg), &msg, MS_FAILED_PRECONDITION,
                 "update_quota.configs[0].limits[mem]");
  ms_sim_framework_free(f);

  /* Weights: finite, above 0, at most 1e6. */
  expect_refused(update_weight_msg(leader, "eng", 1e308, &msg), &msg, MS_INVALID_ARGUMENT,
                 "update_weights.weight_infos[0].weight");
  expect_refused(update_weight_msg(leader, "eng", 0, &msg), &msg, MS_INVALID_ARGUMENT,
                 "update_weights.weight_infos[0].weight");
  CU_ASSERT_EQUAL(update_weight(leader, "eng", 1e6), MS_OK);
  free(msg);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

/* ---- issue 12 point 6: quota updates at once are checked one after the other ---- */

#define NQ 8

typedef struct quota_race {
  const char *leader;
  int i;
  pthread_barrier_t *go;
  ms_status code;
} quota_race;

static void *quota_racer(void *arg) {
  quota_race *q = arg;
  char role[16];
  snprintf(role, sizeof(role), "race%d", q->i);
  Meseta__V1__QuotaConfig *cfg[] = {quota(role, "cpus", 1.5, -1)};
  pthread_barrier_wait(q->go);
  q->code = update_quota(q->leader, cfg, 1, NULL);
  return NULL;
}

static void test_trust_6_quota_updates_at_once(void) {
  ms_test_cluster c;
  ms_test_cluster_start(&c, etcd, dir, "quota-race", 1, "5s");
  int wl = ms_test_cluster_wait_leader(&c, WAIT_MS);
  CU_ASSERT_FATAL(wl >= 0);
  ms_error *err = NULL;
  ms_sim_agent_options ao = {.hostname = "node-r", .resources = "cpus:4;mem:4096"};
  ms_sim_agent *a = ms_sim_agent_start(c.addr[wl], &ao, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  /* Eight guarantees of 1.5 cpus, sent at once on a 4-cpu cluster: each fits alone,
   * two fit together. Checked against one another's quota, exactly two pass. */
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, NQ);
  quota_race q[NQ];
  pthread_t th[NQ];
  for (int i = 0; i < NQ; i++) {
    q[i] = (quota_race){.leader = c.addr[wl], .i = i, .go = &go};
    pthread_create(&th[i], NULL, quota_racer, &q[i]);
  }
  int ok = 0, refused = 0, stored = 0;
  for (int i = 0; i < NQ; i++) {
    pthread_join(th[i], NULL);
    ok += q[i].code == MS_OK;
    refused += q[i].code == MS_FAILED_PRECONDITION;
    char role[16];
    snprintf(role, sizeof(role), "race%d", i);
    Meseta__V1__Record *r = reg_get(&c, MESETA__V1__RECORD_KIND__QUOTA, role);
    stored += r != NULL;
    if (r)
      protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  pthread_barrier_destroy(&go);
  printf("  quota updates at once: %d accepted, %d refused, %d stored\n", ok, refused, stored);
  CU_ASSERT_EQUAL(ok, 2);
  CU_ASSERT_EQUAL(refused, NQ - 2);
  CU_ASSERT_EQUAL(stored, 2);
  ms_sim_agent_free(a);
  ms_test_cluster_stop(&c);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"quota_counts_reservations_watch_failover", test_quota_reservations_watch_failover},
      {"drain_and_gone", test_drain_and_gone},
      {"weights_split_offers", test_weights},
      {"trust_6_quota_and_weights", test_trust_6_quota_and_weights},
      {"trust_6_quota_updates_at_once", test_trust_6_quota_updates_at_once},
      {NULL, NULL},
  };
  return ms_test_main_etcd(argc, argv, "allocator-operator", cases, &dir, &etcd);
}
