/* A new leader's recovery: load the registry (agents with their drain / deactivated
 * state, frameworks, weights, quota, the maintenance schedule),
 * then accept re-registrations and re-subscriptions while holding offers until
 * --recovery-agent-fraction of the ADMITTED agents are back or --recovery-timeout
 * passed; frameworks still missing then get their failover timeout. Agents still
 * missing are marked UNREACHABLE in the registry only once the whole recovery timeout
 * passed: offers resuming early says nothing about the agents not back yet.
 *
 * Everything here runs on the owner thread. */
#include "alloc-svc-recovery.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/values.h"

#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-ended-fws.h"
#include "alloc-svc-frameworks.h"
#include "alloc-svc-registry.h"

#define LOAD_RETRY_MS 1000

static void free_expected(alloc_service *s) {
  for (uint32_t i = 0; i < s->expected.n; i++) {
    free(s->expected.v[i]->key);
    free(s->expected.v[i]);
  }
  svc_table_release(&s->expected);
}

static void cancel(alloc_service *s, uint64_t *t) {
  if (*t)
    ms_loop_cancel_timer(s->loop, *t);
  *t = 0;
}

void svc_recovery_reset(alloc_service *s) {
  cancel(s, &s->recovery_timer);
  cancel(s, &s->load_timer);
  free_expected(s);
  s->nexpected = 0;
  s->loading = s->recovering = false;
}

void svc_recovery_start(alloc_service *s) {
  s->loading = true;
  ms_log_info(NULL, "recovering: loading the registry");
  svc_reg_load(s);
}

static void retry_load(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  s->load_timer = 0;
  if (s->leading && s->loading && !s->closing)
    svc_reg_load(s);
}

/* Agents not back within the whole recovery timeout. */
static void mark_missing(alloc_service *s) {
  /* They may come back later, as UNREACHABLE agents do. */
  for (uint32_t i = 0; i < s->expected.n; i++) {
    const char *id = s->expected.v[i]->key;
    ms_log_warn(id, "agent did not re-register in time: marked unreachable");
    svc_agent_rec_set(s, id, MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE);
    svc_reg_agent_state(s, id, NULL, MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE, NULL, NULL);
  }
  free_expected(s);
}

/* Offers resume. */
static void finish(alloc_service *s, const char *why) {
  if (!s->recovering)
    return;
  s->recovering = false;
  ms_log_info(NULL, "recovery done (%s): %u of %u agents back; offers resume", why,
              s->nexpected - s->expected.n, s->nexpected);
  if (!s->expected.n)
    cancel(s, &s->recovery_timer);
  svc_frameworks_recovered(s);
  svc_want_cycle(s);
}

static void check_done(alloc_service *s) {
  uint32_t back = s->nexpected - s->expected.n;
  if (s->recovering && (double)back + 1e-9 >= s->cfg.recovery_agent_fraction * s->nexpected)
    finish(s, "enough agents are back");
  if (!s->recovering && !s->expected.n)
    cancel(s, &s->recovery_timer);
}

static void recovery_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  s->recovery_timer = 0;
  finish(s, "the recovery timeout passed");
  mark_missing(s);
}

void svc_recovery_agent_back(alloc_service *s, const char *id) {
  if (!s->expected.n)
    return;
  svc_entry *e = svc_table_get(&s->expected, id);
  if (!e)
    return;
  svc_table_del(&s->expected, e);
  free(e->key);
  free(e);
  check_done(s);
}

static void load_record(alloc_service *s, const Meseta__V1__Record *r, uint32_t *nfw) {
  ms_error *err = NULL;
  int rc = 0;
  switch (r->body_case) {
  case MESETA__V1__RECORD__BODY_AGENT: {
    svc_agent_rec *ar = svc_agent_rec_get(s, r->id);
    ar->state = r->agent->state;
    ar->drain_state = r->agent->drain_state;
    ar->deactivated = r->agent->deactivated;
    ar->mark_gone = r->agent->drain_config && r->agent->drain_config->mark_gone;
    if (r->agent->state == MESETA__V1__AGENT_RECORD__STATE__ADMITTED && !svc_table_get(&s->expected, r->id)) {
      svc_entry *e = ms_xcalloc(1, sizeof(*e));
      e->key = ms_xstrdup(r->id);
      svc_table_put(&s->expected, e);
    }
    break;
  }
  case MESETA__V1__RECORD__BODY_FRAMEWORK:
    if (!r->framework->info)
      break;
    if (r->framework->completed_time) {
      const Google__Protobuf__Timestamp *t = r->framework->completed_time;
      svc_ended_fw_add(s, r->framework->info, t->seconds * 1000 + t->nanos / 1000000);
    } else if ((rc = svc_framework_restore(s, r->framework->info, r->framework->suppressed_roles,
                                           r->framework->n_suppressed_roles, &err)) == 0) {
      (*nfw)++;
    }
    break;
  case MESETA__V1__RECORD__BODY_WEIGHT:
  case MESETA__V1__RECORD__BODY_QUOTA:
  case MESETA__V1__RECORD__BODY_MAINTENANCE:
    svc_operator_load(s, r);
    break;
  default:
    break;
  }
  if (rc < 0) {
    ms_log_warn(r->id, "registry record not loaded: %s", err->msg);
    ms_error_free(err);
  }
}

void svc_recovery_loaded(alloc_service *s, const svc_reg_loaded *l, const ms_error *err, bool current) {
  if (!current || !s->leading || !s->loading)
    return;
  if (err) {
    ms_log_warn(NULL, "recovering: loading the registry failed (%s); retrying", err->msg);
    s->load_timer = ms_loop_add_timer(s->loop, LOAD_RETRY_MS, 0, retry_load, s);
    return;
  }
  uint32_t nfw = 0;
  for (size_t i = 0; i < l->npages; i++)
    for (size_t k = 0; k < l->pages[i]->n_records; k++)
      load_record(s, l->pages[i]->records[k], &nfw);
  s->nexpected = s->expected.n;
  s->loading = false;
  s->recovering = true;
  ms_log_info(NULL, "registry loaded: %u agents expected back, %u frameworks known; holding offers",
              s->nexpected, nfw);
  svc_start_timers(s);
  svc_set_health(s, true);
  int64_t t = s->cfg.recovery_timeout_ms;
  s->recovery_timer = ms_loop_add_timer(s->loop, t, 0, recovery_tick, s);
  check_done(s);
}
