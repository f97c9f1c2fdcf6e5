/* The allocator service's core: the owner thread's state, posting from gRPC callbacks,
 * the allocation cycle and its offers, the timers, leadership and shutdown. */
#include "alloc-service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/resources-io.h"
#include "meseta/time.h"

#include "alloc-svc-internal.h"

/* ---- tables ---- */

void *svc_table_get(const svc_table *t, const char *key) {
  uint32_t i = alloc_map_get(&t->map, key ? key : "");
  return i == ALLOC_NONE ? NULL : t->v[i];
}

void svc_table_put(svc_table *t, svc_entry *e) {
  if (t->n == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 16;
    t->v = ms_xrealloc(t->v, t->cap * sizeof(*t->v));
  }
  t->v[t->n] = e;
  alloc_map_put(&t->map, e->key, t->n);
  t->n++;
}

void svc_table_del(svc_table *t, svc_entry *e) {
  uint32_t i = alloc_map_get(&t->map, e->key);
  if (i == ALLOC_NONE)
    return;
  alloc_map_del(&t->map, e->key);
  t->n--;
  if (i != t->n) {
    t->v[i] = t->v[t->n];
    alloc_map_put(&t->map, t->v[i]->key, i);
  }
}

void svc_table_release(svc_table *t) {
  free(t->v);
  alloc_map_release(&t->map);
  memset(t, 0, sizeof(*t));
}

/* ---- small helpers ---- */

int64_t svc_now_ms(void) {
  return ms_time_mono_ms();
}

void svc_uuid_bytes(uint8_t out[16]) {
  size_t got = 0;
  while (got < 16) {
    ssize_t r = getrandom(out + got, 16 - got, 0);
    if (r > 0)
      got += (size_t)r;
  }
  out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
  out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

void svc_uuid(char *buf) {
  uint8_t b[16];
  svc_uuid_bytes(b);
  snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

char *svc_key2(const char *a, const char *b) {
  return ms_xasprintf("%s\x1f%s", a, b);
}

char *svc_key3(const char *a, const char *b, const char *c) {
  return ms_xasprintf("%s\x1f%s\x1f%s", a, b, c);
}

/* ---- posting ---- */

typedef struct svc_job {
  alloc_service *s;
  svc_fn fn;
  ms_rpc_call *call;
  void *data;
  ProtobufCMessage *msg;
  bool held; /* a client-stream message the rpc layer waits on (ms_rpc_call_hold) */
} svc_job;

static void run_job(void *arg) {
  svc_job *j = arg;
  j->fn(j->s, j->call, j->data, j->msg);
  if (j->msg)
    protobuf_c_message_free_unpacked(j->msg, NULL);
  if (j->held)
    ms_rpc_call_consumed(j->call);
  if (j->call)
    ms_rpc_call_unref(j->call);
  free(j);
}

static svc_job *job_new(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  svc_job *j = ms_xmalloc(sizeof(*j));
  *j = (svc_job){s, fn, call, data, msg, false};
  if (call)
    ms_rpc_call_ref(call);
  return j;
}

void svc_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  ms_loop_post(s->loop, run_job, job_new(s, fn, call, data, msg));
}

int svc_try_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg,
                 ms_error **err) {
  svc_job *j = job_new(s, fn, call, data, msg);
  if (ms_loop_try_post(s->loop, run_job, j, err) == 0)
    return 0;
  if (msg)
    protobuf_c_message_free_unpacked(msg, NULL);
  if (call)
    ms_rpc_call_unref(call);
  free(j);
  return ms_error_prefix(err, "allocator busy");
}

void svc_post_held(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  svc_job *j = job_new(s, fn, call, data, msg);
  j->held = true;
  ms_rpc_call_hold(call);
  ms_loop_post(s->loop, run_job, j);
}

/* ---- sending ---- */

void svc_send_event(alloc_service *s, svc_framework *fw, const Meseta__V1__Event *ev) {
  (void)s;
  if (!fw || !fw->stream)
    return;
  ms_error *err = NULL;
  if (ms_rpc_call_send(fw->stream, &ev->base, &err) < 0) {
    /* Too slow or gone: end the stream; its on_done deactivates the framework. */
    ms_log_warn(fw->e.key, "framework stream: %s", err->msg);
    ms_rpc_call_finish_error(fw->stream, err);
    ms_error_free(err);
  }
}

void svc_send_agent(alloc_service *s, svc_agent *a, const Meseta__V1__AllocatorMessage *m) {
  (void)s;
  if (!a || !a->link)
    return;
  ms_error *err = NULL;
  if (ms_rpc_call_send(a->link->call, &m->base, &err) < 0) {
    ms_log_warn(a->e.key, "agent link: %s", err->msg);
    ms_rpc_call_finish_error(a->link->call, err);
    ms_error_free(err);
  }
}

void svc_send_ack(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                  const ProtobufCBinaryData *uuid) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)framework_id;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__AllocatorMessage__AcknowledgeStatus ack =
      MESETA__V1__ALLOCATOR_MESSAGE__ACKNOWLEDGE_STATUS__INIT;
  ack.framework_id = &fid;
  ack.task_id = &tid;
  ack.uuid = *uuid;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_STATUS;
  m.acknowledge_status = &ack;
  svc_send_agent(s, a, &m);
}

void svc_send_update(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskStatus *st) {
  Meseta__V1__Event__Update u = MESETA__V1__EVENT__UPDATE__INIT;
  u.status = (Meseta__V1__TaskStatus *)st;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_UPDATE;
  ev.update = &u;
  svc_send_event(s, fw, &ev);
}

/* The model takes an offer back (agent gone, framework inactive, timeout...). */
static void on_rescind(void *ctx, const alloc_offer_view *o) {
  alloc_service *s = ctx;
  svc_framework *fw = svc_table_get(&s->frameworks, o->framework_id);
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = (char *)o->id;
  Meseta__V1__Event__Rescind r = MESETA__V1__EVENT__RESCIND__INIT;
  r.offer_id = &oid;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_RESCIND;
  ev.rescind = &r;
  ms_log_debug(o->framework_id, "rescinding offer `%s` on agent `%s`", o->id, o->agent_id);
  svc_send_event(s, fw, &ev);
}

/* ---- the cycle ---- */

typedef struct offer_msg {
  Meseta__V1__Offer o;
  Meseta__V1__OfferID id;
  Meseta__V1__FrameworkID fid;
  Meseta__V1__AgentID aid;
  Meseta__V1__Resource__AllocationInfo ai;
  Meseta__V1__Resources *res;
} offer_msg;

static int by_framework(const void *a, const void *b) {
  const alloc_offer_view *x = a, *y = b;
  int c = strcmp(x->framework_id, y->framework_id);
  return c ? c : strcmp(x->id, y->id);
}

static void fill_offer(alloc_service *s, const alloc_offer_view *v, offer_msg *m) {
  meseta__v1__offer__init(&m->o);
  meseta__v1__offer_id__init(&m->id);
  meseta__v1__framework_id__init(&m->fid);
  meseta__v1__agent_id__init(&m->aid);
  meseta__v1__resource__allocation_info__init(&m->ai);
  m->id.value = (char *)v->id;
  m->fid.value = (char *)v->framework_id;
  m->aid.value = (char *)v->agent_id;
  m->ai.role = (char *)v->role;
  ms_resources *r = ms_resources_clone(v->resources);
  ms_resources_allocate(r, v->role, NULL);
  m->res = ms_resources_to_proto(r);
  ms_resources_free(r);
  m->o.id = &m->id;
  m->o.framework_id = &m->fid;
  m->o.agent_id = &m->aid;
  m->o.allocation_info = &m->ai;
  m->o.n_resources = m->res->n_resources;
  m->o.resources = m->res->resources;
  svc_agent *a = svc_table_get(&s->agents, v->agent_id);
  if (a && a->info) {
    m->o.hostname = a->info->hostname;
    m->o.domain = a->info->domain;
    m->o.n_attributes = a->info->n_attributes;
    m->o.attributes = a->info->attributes;
  }
}

static void send_offers(alloc_service *s, alloc_offer_view *v, uint32_t n) {
  svc_framework *fw = svc_table_get(&s->frameworks, v[0].framework_id);
  offer_msg *msgs = ms_xcalloc(n, sizeof(*msgs));
  Meseta__V1__Offer **ptrs = ms_xcalloc(n, sizeof(*ptrs));
  for (uint32_t i = 0; i < n; i++) {
    fill_offer(s, &v[i], &msgs[i]);
    ptrs[i] = &msgs[i].o;
  }
  Meseta__V1__Event__Offers offers = MESETA__V1__EVENT__OFFERS__INIT;
  offers.n_offers = n;
  offers.offers = ptrs;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_OFFERS;
  ev.offers = &offers;
  svc_send_event(s, fw, &ev);
  for (uint32_t i = 0; i < n; i++)
    ms_resources_proto_free(msgs[i].res);
  free(ptrs);
  free(msgs);
}

static void run_cycle(alloc_service *s) {
  if (!s->leading || s->closing || s->loading || s->recovering) /* recovery holds offers */
    return;
  alloc_offer_list l = {0};
  alloc_cycle_stats st = {0};
  ms_error *err = NULL;
  (void)alloc_model_take_trigger(s->model);
  if (alloc_cycle_run(s->model, svc_now_ms(), &l, &st, &err) < 0) {
    ms_log_error(NULL, "allocation cycle: %s", err->msg);
    ms_error_free(err);
  }
  if (l.n) {
    qsort(l.v, l.n, sizeof(*l.v), by_framework);
    for (uint32_t i = 0, j; i < l.n; i = j) {
      for (j = i + 1; j < l.n && strcmp(l.v[j].framework_id, l.v[i].framework_id) == 0; j++)
        ;
      send_offers(s, &l.v[i], j - i);
    }
    ms_log_debug(NULL, "cycle: %u offers over %u agents", st.offers, st.agents_visited);
  }
  alloc_offer_list_release(&l);
}

static void cycle_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  run_cycle(arg);
}

static void soon_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  s->soon_timer = 0;
  run_cycle(s);
}

void svc_want_cycle(alloc_service *s) {
  if (s->soon_timer || !s->leading || s->closing || s->loading || s->recovering)
    return;
  /* A few milliseconds let a burst of events (agents registering, tasks ending) share
   * one cycle. */
  s->soon_timer = ms_loop_add_timer(s->loop, 5, 0, soon_tick, s);
}

void svc_check_trigger(alloc_service *s) {
  if (alloc_model_take_trigger(s->model))
    svc_want_cycle(s);
}

static void expire_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  uint32_t n = alloc_model_expire_offers(s->model, svc_now_ms());
  if (n) {
    ms_log_debug(NULL, "%u offers timed out", n);
    svc_check_trigger(s);
  }
}

static void heartbeat_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  svc_frameworks_heartbeat(s);
  svc_agents_ping(s);
}

/* ---- lifecycle ---- */

static int new_model(alloc_service *s, ms_error **err) {
  alloc_config mc = {.role_sorter = s->cfg.role_sorter,
                     .framework_sorter = s->cfg.framework_sorter,
                     .fair_share_excluded = s->cfg.fair_share_excluded,
                     .min_allocatable = s->cfg.min_allocatable,
                     .local_region = s->cfg.local_region,
                     .offer_timeout_ms = s->cfg.offer_timeout_ms,
                     .max_offers_per_framework = (uint32_t)s->cfg.max_offers_per_framework,
                     .max_silent_frameworks = (uint32_t)s->cfg.max_silent_frameworks,
                     .on_rescind = on_rescind,
                     .rescind_ctx = s,
                     .on_change = svc_state_changed,
                     .change_ctx = s};
  uint8_t rnd[16];
  svc_uuid_bytes(rnd);
  memcpy(&mc.seed, rnd, sizeof(mc.seed));
  return alloc_model_new(&mc, &s->model, err);
}

static char *dup_or_null(const char *p) {
  return p && *p ? ms_xstrdup(p) : NULL;
}

alloc_service *alloc_service_new(const alloc_service_config *cfg, ms_loop *loop, ms_error **err) {
  if (cfg->allocation_interval_ms <= 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--allocation-interval`: must be above 0");
    return NULL;
  }
  if (cfg->heartbeat_interval_ms <= 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--heartbeat-interval`: must be above 0");
    return NULL;
  }
  if (cfg->offer_timeout_ms < 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--offer-timeout`: must not be negative");
    return NULL;
  }
  if (cfg->max_offers_per_framework < 0 || cfg->max_offers_per_framework > UINT32_MAX) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--max-offers-per-framework`: %lld is out of range",
                 (long long)cfg->max_offers_per_framework);
    return NULL;
  }
  if (cfg->max_silent_frameworks < 0 || cfg->max_silent_frameworks > UINT32_MAX) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--max-silent-frameworks`: %lld is out of range",
                 (long long)cfg->max_silent_frameworks);
    return NULL;
  }
  if (!(cfg->recovery_agent_fraction >= 0 && cfg->recovery_agent_fraction <= 1)) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--recovery-agent-fraction`: %g is not between 0 and 1",
                 cfg->recovery_agent_fraction);
    return NULL;
  }
  if (cfg->registry_timeout_ms < 0 || cfg->recovery_timeout_ms < 0 || cfg->agent_reconnect_timeout_ms < 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `%s`: must not be negative",
                 cfg->registry_timeout_ms < 0   ? "--registry-timeout"
                 : cfg->recovery_timeout_ms < 0 ? "--recovery-timeout"
                                                : "--agent-reconnect-timeout");
    return NULL;
  }
  /* Defaults live in the flag table alone (main.c): a 0 here is what was asked for, and
   * where it cannot be honoured it is refused, not replaced. */
  if (cfg->registry && cfg->registry_timeout_ms == 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--registry-timeout`: must be positive");
    return NULL;
  }
  if (cfg->max_completed_tasks_per_framework <= 0 || cfg->max_completed_tasks <= 0 ||
      cfg->max_completed_frameworks <= 0) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flag `%s`: must be at least 1",
                 cfg->max_completed_tasks <= 0        ? "--max-completed-tasks"
                 : cfg->max_completed_frameworks <= 0 ? "--max-completed-frameworks"
                                                      : "--max-completed-tasks-per-framework");
    return NULL;
  }
  alloc_service *s = ms_xcalloc(1, sizeof(*s));
  s->cfg = *cfg;
  s->cfg.fair_share_excluded = dup_or_null(cfg->fair_share_excluded);
  s->cfg.min_allocatable = dup_or_null(cfg->min_allocatable);
  s->cfg.local_region = dup_or_null(cfg->local_region);
  s->cfg.advertise_address = dup_or_null(cfg->advertise_address);
  s->cfg.hostname = dup_or_null(cfg->hostname);
  s->cfg.registry = dup_or_null(cfg->registry);
  s->loop = loop;
  ms_loop_set_post_limit(loop, SVC_MAX_QUEUED_CALLS);
  svc_uuid(s->id);
  if (new_model(s, err) < 0 || svc_reg_open(s, err) < 0) {
    alloc_service_free(s);
    return NULL;
  }
  return s;
}

int alloc_service_add(alloc_service *s, ms_rpc_server *srv, ms_error **err) {
  s->srv = srv;
  if (svc_agents_add(s, srv, err) < 0 || svc_frameworks_add(s, srv, err) < 0)
    return MS_ERR;
  /* A standby until told otherwise. */
  ms_rpc_server_set_health(srv, "", false);
  ms_rpc_server_set_health(srv, "meseta.v1.AgentLink", false);
  ms_rpc_server_set_health(srv, "meseta.v1.Allocator", false);
  return 0;
}

const char *alloc_service_id(const alloc_service *s) {
  return s->id;
}

static void cancel_timers(alloc_service *s) {
  svc_recovery_reset(s);
  uint64_t *ts[] = {&s->cycle_timer, &s->soon_timer, &s->expire_timer, &s->heartbeat_timer};
  for (size_t i = 0; i < MS_ARRAY_SIZE(ts); i++) {
    if (*ts[i])
      ms_loop_cancel_timer(s->loop, *ts[i]);
    *ts[i] = 0;
  }
}

/* Ends every stream and forgets the cluster (a new leader rebuilds it from
 * re-registrations and re-subscriptions). */
static void forget_all(alloc_service *s) {
  svc_state_close(s, MS_UNAVAILABLE, "the allocator is shutting down or lost the lead");
  svc_frameworks_close(s);
  svc_agents_close(s);
  svc_tasks_free_all(s);
  svc_completed_free_all(s);
  svc_unacked_free_all(s);
  svc_state_reset(s);
  svc_ops_free_all(s);
  svc_ended_fw_free_all(s);
  svc_agent_recs_clear(s);
  svc_operator_reset(s);
  svc_operator_quota_drop(s);
}

bool svc_serving(const alloc_service *s, const char **why) {
  if (s->leading && !s->loading)
    return true;
  *why =
      s->leading ? "this allocator is recovering: loading the registry" : "this allocator is not the leader";
  return false;
}

void svc_set_health(alloc_service *s, bool serving) {
  if (!s->srv)
    return;
  ms_rpc_server_set_health(s->srv, "", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.AgentLink", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.Allocator", serving);
}

void svc_start_timers(alloc_service *s) {
  int64_t iv = s->cfg.allocation_interval_ms;
  s->cycle_timer = ms_loop_add_timer(s->loop, iv, iv, cycle_tick, s);
  int64_t hb = s->cfg.heartbeat_interval_ms;
  s->heartbeat_timer = ms_loop_add_timer(s->loop, hb, hb, heartbeat_tick, s);
  if (s->cfg.offer_timeout_ms > 0) {
    /* A scan of the offers is cheap: at most a second late (30 s offers: 30-31 s). */
    int64_t ex = s->cfg.offer_timeout_ms / 4;
    ex = ex > 1000 ? 1000 : ex < 10 ? 10 : ex;
    s->expire_timer = ms_loop_add_timer(s->loop, ex, ex, expire_tick, s);
  }
}

void alloc_service_set_leading(alloc_service *s, bool leading) {
  if (s->closing || leading == s->leading)
    return;
  s->leading = leading;
  s->term++;
  if (leading) {
    ms_log_info(NULL, "leading as allocator `%s`", s->id);
    svc_state_begin_term(s);
    if (svc_durable(s)) {
      svc_recovery_start(s); /* health says SERVING once the registry is loaded */
      return;
    }
    svc_start_timers(s);
  } else {
    ms_log_warn(NULL, "no longer leading: ending every stream");
    cancel_timers(s);
    forget_all(s);
    alloc_model_free(s->model);
    s->model = NULL;
    ms_error *err = NULL;
    if (new_model(s, &err) < 0) { /* the config parsed once: cannot fail now */
      ms_log_error(NULL, "%s", err->msg);
      ms_error_free(err);
      abort();
    }
  }
  svc_set_health(s, leading);
}

void alloc_service_close(alloc_service *s) {
  if (s->closing)
    return;
  cancel_timers(s);
  svc_set_health(s, false);
  s->closing = true;
  s->leading = false;
  forget_all(s);
  svc_reg_stop(s);
}

void alloc_service_drain(alloc_service *s) {
  /* The server thread has ended: whatever its last callbacks posted runs now, and
   * each answers UNAVAILABLE or cleans up. */
  while (ms_loop_run_once(s->loop, 0, NULL) > 0)
    ;
}

void alloc_service_free(alloc_service *s) {
  if (!s)
    return;
  svc_reg_stop(s);
  cancel_timers(s);
  forget_all(s);
  svc_table_release(&s->agents);
  svc_table_release(&s->frameworks);
  svc_table_release(&s->tasks);
  svc_table_release(&s->executors);
  svc_table_release(&s->done_tasks);
  svc_table_release(&s->done_fws);
  svc_table_release(&s->shown_roles);
  svc_table_release(&s->shown_agents);
  svc_table_release(&s->pending_agents);
  alloc_model_free(s->model);
  free((char *)s->cfg.fair_share_excluded);
  free((char *)s->cfg.min_allocatable);
  free((char *)s->cfg.local_region);
  free((char *)s->cfg.advertise_address);
  free((char *)s->cfg.hostname);
  free((char *)s->cfg.registry);
  free(s);
}
