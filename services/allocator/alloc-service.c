/* The service layer (alloc-svc-core.h has the layers): lifecycle, leadership and
 * shutdown, the allocation cycle and its offers, the timers, and the hooks' setup. */
#include "alloc-service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/resources-io.h"
#include "meseta/time.h"

#include "alloc-svc-agents.h"
#include "alloc-svc-completed.h"
#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-ended-fws.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-history.h"
#include "alloc-svc-operations.h"
#include "alloc-svc-operator.h"
#include "alloc-svc-recovery.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"
#include "allocator-rpc.h"

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

static void setup_hooks(alloc_service *s);

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
  setup_hooks(s);
  if (new_model(s, err) < 0 || svc_reg_open(s, err) < 0) {
    alloc_service_free(s);
    return NULL;
  }
  return s;
}

int alloc_service_add(alloc_service *s, ms_rpc_server *srv, ms_error **err) {
  s->srv = srv;
  if (alloc_rpc_add(s, srv, err) < 0)
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

static void start_timers(alloc_service *s) {
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

/* Completed tasks in the registry come back once recovery accepted the load. */
static void history_loaded(alloc_service *s, const struct svc_reg_loaded *l, const ms_error *err,
                           bool current) {
  if (current && !err && s->leading && !s->loading)
    svc_history_loaded(s, l);
}

static void close_watchers(alloc_service *s) {
  svc_state_close(s, MS_UNAVAILABLE, "the allocator is shutting down or lost the lead");
}

/* Who reacts to whose events (alloc-svc-core.h), in the order they run. */
static void setup_hooks(alloc_service *s) {
  s->hooks.run_cycle = run_cycle;
  s->hooks.start_timers = start_timers;
  s->hooks.task_shown = svc_completed_shown;
  s->hooks.task_replaced = svc_completed_replaced;
  /* Lost lead, close: every stream ends, the cluster is forgotten (a new leader rebuilds
   * it from re-registrations and re-subscriptions). */
  svc_hook_forget_all(s, close_watchers);
  svc_hook_forget_all(s, svc_frameworks_close);
  svc_hook_forget_all(s, svc_agents_close);
  svc_hook_forget_all(s, svc_tasks_free_all);
  svc_hook_forget_all(s, svc_completed_free_all);
  svc_hook_forget_all(s, svc_unacked_free_all);
  svc_hook_forget_all(s, svc_state_reset);
  svc_hook_forget_all(s, svc_ops_free_all);
  svc_hook_forget_all(s, svc_ended_fw_free_all);
  svc_hook_forget_all(s, svc_agent_recs_clear);
  svc_hook_forget_all(s, svc_operator_reset);
  svc_hook_forget_all(s, svc_operator_quota_drop);
  svc_hook_agent_removed(s, svc_ops_agent_removed); /* unsettled operations: UNREACHABLE / GONE */
  svc_hook_framework_removed(s, svc_ops_forget_framework);
  svc_hook_framework_removed(s, svc_unacked_forget_framework);
  svc_hook_task_ended(s, svc_completed_add); /* kept as completed, or removed from the views */
  svc_hook_registry_loaded(s, svc_recovery_loaded);
  svc_hook_registry_loaded(s, history_loaded);
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
    start_timers(s);
  } else {
    ms_log_warn(NULL, "no longer leading: ending every stream");
    cancel_timers(s);
    svc_run_forget_all(s); /* ends every stream, forgets the cluster */
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
  svc_run_forget_all(s); /* ends every stream, forgets the cluster */
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
  svc_run_forget_all(s); /* ends every stream, forgets the cluster */
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
