/* Allocator.SubscribeFramework: a framework's event stream (SUBSCRIBED first, then
 * offers, rescinds, updates, heartbeats), its lifecycle (subscribe, re-subscribe,
 * disconnect, failover timeout, removal) and the check every scheduler call makes. */
#include "alloc-svc-frameworks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb-check.h"
#include "meseta/pb.h"
#include "meseta/roles.h"
#include "meseta/time.h"

#include "alloc-svc-core.h"
#include "alloc-svc-ended-fws.h"
#include "alloc-svc-operations.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

void svc_framework_free(svc_framework *fw) {
  if (fw->info)
    protobuf_c_message_free_unpacked(&fw->info->base, NULL);
  free(fw->stream_id);
  free(fw->e.key);
  free(fw);
}

static void send_error(alloc_service *s, svc_framework *fw, const char *why) {
  Meseta__V1__Event__Error e = MESETA__V1__EVENT__ERROR__INIT;
  e.message = (char *)why;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_ERROR;
  ev.error = &e;
  svc_send_event(s, fw, &ev);
}

/* Lets go of the framework's stream (ending it with `code` unless OK is enough). */
static void drop_stream(svc_framework *fw, ms_status code, const char *why) {
  if (!fw->stream)
    return;
  ms_rpc_call_finish(fw->stream, code, why);
  ms_rpc_call_unref(fw->stream);
  fw->stream = NULL;
  free(fw->stream_id);
  fw->stream_id = NULL;
}

void svc_framework_remove(alloc_service *s, svc_framework *fw, const char *why) {
  ms_log_info(fw->e.key, "framework removed: %s", why);
  if (fw->failover_timer)
    ms_loop_cancel_timer(s->loop, fw->failover_timer);
  fw->failover_timer = 0;
  /* Kill its tasks; the model recovers everything it had at once. */
  for (uint32_t i = 0; i < s->tasks.n;) {
    svc_task *t = (svc_task *)s->tasks.v[i];
    if (strcmp(t->framework_id, fw->e.key) != 0) {
      i++;
      continue;
    }
    svc_task_send_kill(s, svc_table_get(&s->agents, t->agent_id), fw->e.key, t->task_id, NULL);
    ms_resources_clear(t->res);
    if (t->executor)
      ms_resources_clear(t->executor->res);
    svc_task_end(s, t);
  }
  svc_run_framework_removed(s, fw->e.key); /* its operations and unacknowledged statuses */
  ms_error *err = NULL;
  if (alloc_model_remove_framework(s->model, fw->e.key, &err) < 0) {
    ms_log_warn(fw->e.key, "%s", err->msg);
    ms_error_free(err);
  }
  send_error(s, fw, why);
  drop_stream(fw, MS_OK, NULL);
  if (svc_durable(s) && !s->closing)
    svc_reg_complete_framework(s, fw->info, NULL, NULL);
  svc_table_del(&s->frameworks, &fw->e);
  if (!s->closing)
    svc_ended_fw_add(s, fw->info, ms_time_real_ms());
  svc_framework_free(fw);
  svc_check_trigger(s);
}

typedef struct fw_offers {
  const char *framework_id;
  char **ids;
  uint32_t n;
} fw_offers;

static void collect_fw_offer(void *ctx, const alloc_offer_view *o) {
  fw_offers *c = ctx;
  if (strcmp(o->framework_id, c->framework_id) != 0)
    return;
  c->ids = ms_xrealloc(c->ids, (c->n + 1) * sizeof(*c->ids));
  c->ids[c->n++] = ms_xstrdup(o->id);
}

/* Offers sent on a framework's previous stream: rescinded (their resources are offered
 * again), so a re-subscribed scheduler is not left waiting for them to expire. */
static void rescind_framework_offers(alloc_service *s, const char *framework_id) {
  fw_offers c = {framework_id, NULL, 0};
  alloc_model_each_offer(s->model, collect_fw_offer, &c);
  for (uint32_t i = 0; i < c.n; i++) {
    (void)alloc_model_rescind(s->model, c.ids[i], NULL);
    free(c.ids[i]);
  }
  free(c.ids);
  if (c.n)
    ms_log_info(framework_id, "%u offers of its previous stream rescinded", c.n);
}

static void failover_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  svc_framework *fw = arg;
  fw->failover_timer = 0;
  if (!fw->stream)
    svc_framework_remove(fw->svc, fw, "its failover timeout passed");
}

uint32_t svc_framework_caps(const Meseta__V1__FrameworkInfo *info) {
  uint32_t caps = 0;
  for (size_t i = 0; i < info->n_capabilities; i++) {
    switch (info->capabilities[i]->type) {
    case MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__REGION_AWARE:
      caps |= ALLOC_CAP_REGION_AWARE;
      break;
    case MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__RESERVATION_REFINEMENT:
      caps |= ALLOC_CAP_RESERVATION_REFINEMENT;
      break;
    case MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__MULTI_ROLE:
      caps |= ALLOC_CAP_MULTI_ROLE;
      break;
    default: /* the others change nothing here */
      break;
    }
  }
  return caps;
}

static int64_t duration_ms(const Google__Protobuf__Duration *d) {
  return d ? d->seconds * 1000 + d->nanos / 1000000 : 0;
}

/* The framework's roles and capabilities for the engine. roles[] borrows info. */
static int framework_spec(const Meseta__V1__SubscribeRequest *req, const char *id, alloc_framework_spec *spec,
                          const char **roles, uint32_t *ncaps, ms_error **err) {
  const Meseta__V1__FrameworkInfo *info = req->framework_info;
  uint32_t n = (uint32_t)info->n_roles;
  for (uint32_t i = 0; i < n; i++) {
    if (ms_role_validate(info->roles[i], err) < 0)
      return ms_error_prefix(err, "`request.framework_info.roles[%u]`", i);
    roles[i] = info->roles[i];
  }
  if (n == 0)
    roles[n++] = "*";
  for (size_t i = 0; i < req->n_suppressed_roles; i++) {
    bool found = false;
    for (uint32_t j = 0; j < n && !found; j++)
      found = strcmp(roles[j], req->suppressed_roles[i]) == 0;
    if (!found)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`request.suppressed_roles[%zu]`: `%s` is not one of the framework's roles", i,
                          req->suppressed_roles[i]);
  }
  uint32_t caps = svc_framework_caps(info);
  *ncaps = caps;
  *spec = (alloc_framework_spec){.id = id,
                                 .roles = roles,
                                 .nroles = n,
                                 .capabilities = caps,
                                 .suppressed_roles = (const char *const *)req->suppressed_roles,
                                 .nsuppressed = (uint32_t)req->n_suppressed_roles,
                                 .failover_timeout_s = duration_ms(info->failover_timeout) / 1000.0};
  return 0;
}

static void send_subscribed(alloc_service *s, svc_framework *fw) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = fw->e.key;
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.seconds = s->cfg.heartbeat_interval_ms / 1000;
  hb.nanos = (int32_t)(s->cfg.heartbeat_interval_ms % 1000) * 1000000;
  Meseta__V1__MasterInfo mi = MESETA__V1__MASTER_INFO__INIT;
  mi.id = s->id;
  mi.address = (char *)(s->cfg.advertise_address ? s->cfg.advertise_address : "");
  mi.hostname = (char *)(s->cfg.hostname ? s->cfg.hostname : "");
  Meseta__V1__Event__Subscribed sub = MESETA__V1__EVENT__SUBSCRIBED__INIT;
  sub.framework_id = &fid;
  sub.stream_id = fw->stream_id;
  sub.heartbeat_interval = &hb;
  sub.master_info = &mi;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_SUBSCRIBED;
  ev.subscribed = &sub;
  svc_send_event(s, fw, &ev);
}

/* id: the framework's id (asked or assigned). */
/* Identity (docs/master-api.md): an authenticated caller subscribes only as its own
 * principal, and not to another principal's framework; an empty
 * framework_info.principal is filled in (the caller's name, else the one recorded) so
 * the framework's record keeps it. Anonymous callers (authentication off at their
 * replica) are not compared, but cannot change a recorded principal. */
static int subscribe_principal(alloc_service *s, const Meseta__V1__Principal *p,
                               Meseta__V1__FrameworkInfo *info, const char *id, ms_error **err) {
  bool authed = p && (p->method == MESETA__V1__PRINCIPAL__METHOD__MTLS ||
                      p->method == MESETA__V1__PRINCIPAL__METHOD__BEARER_TOKEN);
  const char *who = authed && p->name && *p->name ? p->name : NULL;
  const char *declared = info->principal && *info->principal ? info->principal : NULL;
  svc_framework *fw = svc_table_get(&s->frameworks, id);
  const char *recorded = fw && fw->info->principal && *fw->info->principal ? fw->info->principal : NULL;
  if (who && declared && strcmp(who, declared) != 0)
    return ms_error_set(err, MS_PERMISSION_DENIED,
                        "`request.framework_info.principal` `%s` is not the caller's principal `%s`",
                        declared, who);
  const char *claim = who ? who : declared;
  if (recorded && claim && strcmp(recorded, claim) != 0)
    return ms_error_set(err, MS_PERMISSION_DENIED, "framework `%s` belongs to principal `%s`, not `%s`", id,
                        recorded, claim);
  if (!declared && (who || recorded)) {
    if (info->principal != protobuf_c_empty_string)
      free(info->principal);
    info->principal = ms_xstrdup(who ? who : recorded);
  }
  return 0;
}

static int subscribe(alloc_service *s, ms_rpc_call *call, const Meseta__V1__FrameworkSubscription *sub,
                     const char *id, ms_error **err) {
  const Meseta__V1__SubscribeRequest *req = sub->request;
  Meseta__V1__FrameworkInfo *info = req->framework_info;
  svc_framework *fw = svc_table_get(&s->frameworks, id);
  /* A resumed stream is master-api re-attaching the scheduler's stream (to a new leader,
   * or after its allocator stream broke), not the scheduler subscribing again: the
   * request is the one it subscribed with long ago. The framework's info stays the
   * current one (UpdateFramework's) and its suppression what it last asked. */
  bool resume = fw && fw->info && sub->resume_stream_id && *sub->resume_stream_id;
  if (subscribe_principal(s, sub->principal, info, id, err) < 0) /* again: the record was being written */
    return MS_ERR;
  if (!resume) {
    const char **roles = ms_xcalloc(info->n_roles + 1, sizeof(*roles));
    uint32_t caps;
    alloc_framework_spec spec;
    int rc = framework_spec(req, id, &spec, roles, &caps, err);
    if (rc == 0)
      rc = fw ? alloc_model_update_framework(s->model, &spec, err)
              : alloc_model_add_framework(s->model, &spec, err);
    free(roles);
    if (rc < 0)
      return ms_error_prefix(err, "subscribing framework `%s`", id);
  }
  if (fw) {
    /* Failover: the new stream takes over; the old one gets ERROR and ends. */
    if (fw->stream) {
      send_error(s, fw, "another stream of this framework subscribed");
      drop_stream(fw, MS_FAILED_PRECONDITION, "another stream of this framework subscribed");
    }
    if (fw->failover_timer)
      ms_loop_cancel_timer(s->loop, fw->failover_timer);
    fw->failover_timer = 0;
    rescind_framework_offers(s, id);
  } else {
    fw = ms_xcalloc(1, sizeof(*fw));
    fw->e.key = ms_xstrdup(id);
    fw->svc = s;
    svc_table_put(&s->frameworks, &fw->e);
  }
  svc_change change = fw->info ? SVC_UPDATED : SVC_ADDED;
  if (!resume) {
    if (fw->info)
      protobuf_c_message_free_unpacked(&fw->info->base, NULL);
    fw->info = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
    if (!fw->info->id) {
      fw->info->id = ms_xmalloc(sizeof(*fw->info->id));
      meseta__v1__framework_id__init(fw->info->id);
    }
    free(fw->info->id->value == protobuf_c_empty_string ? NULL : fw->info->id->value);
    fw->info->id->value = ms_xstrdup(id);
  }
  alloc_model_set_framework_active(s->model, id, true, NULL);
  fw->recovered = false;
  fw->stream = call;
  ms_rpc_call_ref(call);
  if (sub->resume_stream_id && *sub->resume_stream_id) {
    fw->stream_id = ms_xstrdup(sub->resume_stream_id);
  } else {
    fw->stream_id = ms_xmalloc(40);
    svc_uuid(fw->stream_id);
  }
  ms_log_info(id, "framework %s (`%s`), stream `%s`", resume ? "stream resumed" : "subscribed",
              fw->info->name ? fw->info->name : "", fw->stream_id);
  send_subscribed(s, fw);
  svc_ops_resend(s, fw);
  svc_state_emit_framework(s, id, change);
  svc_want_cycle(s);
  return 0;
}

static void subscribe_or_refuse(alloc_service *s, ms_rpc_call *call,
                                const Meseta__V1__FrameworkSubscription *sub, const char *id) {
  ms_error *err = NULL;
  if (subscribe(s, call, sub, id, &err) < 0) {
    ms_log_info(NULL, "subscribe refused: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
  }
}

/* A new framework's record is being written: the subscription waits for it. */
typedef struct sub_wait {
  ms_rpc_call *call; /* referenced */
  Meseta__V1__FrameworkSubscription *sub;
  char *id;
} sub_wait;

static void recorded(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  sub_wait *w = ctx;
  if (!current)
    ms_rpc_call_finish(w->call, MS_UNAVAILABLE, "this allocator is not the leader");
  else if (err)
    ms_rpc_call_finish(w->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
  else if (!ms_rpc_call_is_done(w->call))
    subscribe_or_refuse(s, w->call, w->sub, w->id);
  ms_rpc_call_unref(w->call);
  protobuf_c_message_free_unpacked(&w->sub->base, NULL);
  free(w->id);
  free(w);
}

void svc_framework_subscribe(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  if (svc_refuse_unless_serving(s, call))
    return;
  if (ms_rpc_call_is_done(call))
    return;
  const Meseta__V1__FrameworkSubscription *sub = (const Meseta__V1__FrameworkSubscription *)msg;
  const Meseta__V1__SubscribeRequest *req = sub->request;
  if (!req || !req->framework_info) {
    ms_rpc_call_finish(call, MS_INVALID_ARGUMENT, "`request.framework_info` is missing");
    return;
  }
  ms_error *rerr = NULL;
  if (ms_pb_check_refused(&sub->request->base, "request", &rerr) < 0) { /* before anything is stored */
    ms_rpc_call_finish_error(call, rerr);
    ms_error_free(rerr);
    return;
  }
  Meseta__V1__FrameworkInfo *info = req->framework_info;
  const char *asked = info->id && info->id->value ? info->id->value : "";
  if (*asked && svc_ended_fw_has(s, asked)) {
    _cleanup_free_ char *m = ms_xasprintf("framework `%s` was removed and cannot subscribe again", asked);
    ms_rpc_call_finish(call, MS_NOT_FOUND, m);
    return;
  }
  char idbuf[64];
  if (!*asked)
    snprintf(idbuf, sizeof(idbuf), "%s-%04llu", s->id, (unsigned long long)s->next_framework++);
  const char *id = *asked ? asked : idbuf;
  ms_error *perr = NULL;
  if (subscribe_principal(s, sub->principal, info, id, &perr) < 0) { /* before the record is written */
    ms_log_info(id, "subscribe refused: %s", perr->msg);
    ms_rpc_call_finish_error(call, perr);
    ms_error_free(perr);
    return;
  }
  if (!svc_durable(s) || svc_table_get(&s->frameworks, id)) {
    subscribe_or_refuse(s, call, sub, id);
    return;
  }
  /* New to the registry: durable before SUBSCRIBED. */
  sub_wait *w = ms_xmalloc(sizeof(*w));
  *w = (sub_wait){call, (Meseta__V1__FrameworkSubscription *)ms_pb_dup(msg), ms_xstrdup(id)};
  ms_rpc_call_ref(call);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)id;
  Meseta__V1__FrameworkID *saved = info->id;
  info->id = &fid;
  svc_reg_add_framework(s, info, recorded, w); /* copies */
  info->id = saved;
}

int svc_framework_restore(alloc_service *s, const Meseta__V1__FrameworkInfo *info, char *const *suppressed,
                          size_t nsuppressed, ms_error **err) {
  const char *id = info->id ? info->id->value : NULL;
  if (!id || !*id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`framework.info.id` is missing");
  if (svc_table_get(&s->frameworks, id))
    return 0;
  Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  req.framework_info = (Meseta__V1__FrameworkInfo *)info;
  /* Only roles it still has: a record is never a reason to lose the framework. */
  _cleanup_free_ char **sup = ms_xcalloc(nsuppressed + 1, sizeof(*sup));
  for (size_t i = 0; i < nsuppressed; i++)
    for (size_t k = 0; k < (info->n_roles ? info->n_roles : 1); k++)
      if (strcmp(suppressed[i], info->n_roles ? info->roles[k] : "*") == 0) {
        sup[req.n_suppressed_roles++] = suppressed[i];
        break;
      }
  req.suppressed_roles = sup;
  const char **roles = ms_xcalloc(info->n_roles + 1, sizeof(*roles));
  uint32_t caps;
  alloc_framework_spec spec;
  int rc = framework_spec(&req, id, &spec, roles, &caps, err);
  if (rc == 0)
    rc = alloc_model_add_framework(s->model, &spec, err);
  free(roles);
  if (rc < 0)
    return ms_error_prefix(err, "restoring framework `%s`", id);
  alloc_model_set_framework_active(s->model, id, false, NULL);
  svc_framework *fw = ms_xcalloc(1, sizeof(*fw));
  fw->e.key = ms_xstrdup(id);
  fw->svc = s;
  fw->info = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
  fw->recovered = true;
  svc_table_put(&s->frameworks, &fw->e);
  return 0;
}

void svc_frameworks_recovered(alloc_service *s) {
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    svc_framework *fw = (svc_framework *)s->frameworks.v[i];
    if (fw->stream || fw->failover_timer)
      continue;
    int64_t ms = duration_ms(fw->info->failover_timeout);
    if (ms < s->cfg.recovery_timeout_ms)
      ms = s->cfg.recovery_timeout_ms;
    ms_log_info(fw->e.key, "framework not re-subscribed yet: removed in %lld ms unless it does",
                (long long)ms);
    fw->failover_timer = ms_loop_add_timer(s->loop, ms, 0, failover_tick, fw);
  }
}

/* The stream ended (the framework or master-api went away): no more offers; after
 * the failover timeout (0: at once), the framework is removed. */
void svc_framework_stream_closed(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  (void)msg;
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    svc_framework *fw = (svc_framework *)s->frameworks.v[i];
    if (fw->stream != call)
      continue;
    ms_log_info(fw->e.key, "framework disconnected");
    drop_stream(fw, MS_CANCELLED, NULL);
    alloc_model_set_framework_active(s->model, fw->e.key, false, NULL);
    svc_state_emit_framework(s, fw->e.key, SVC_UPDATED);
    int64_t ms = duration_ms(fw->info->failover_timeout);
    if (ms <= 0)
      svc_framework_remove(s, fw, "disconnected without a failover timeout");
    else
      fw->failover_timer = ms_loop_add_timer(s->loop, ms, 0, failover_tick, fw);
    return;
  }
}

svc_framework *svc_framework_check(alloc_service *s, const char *what, const Meseta__V1__FrameworkID *id,
                                   const char *stream_id, ms_error **err) {
  if (!id || !id->value || !*id->value) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.framework_id` is missing", what);
    return NULL;
  }
  svc_framework *fw = svc_table_get(&s->frameworks, id->value);
  if (!fw) {
    ms_error_set(err, MS_NOT_FOUND, "framework `%s` is not known", id->value);
    return NULL;
  }
  if (!stream_id || !*stream_id) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.stream_id` is missing", what);
    return NULL;
  }
  if (!fw->stream_id || strcmp(fw->stream_id, stream_id) != 0) {
    ms_error_set(err, MS_FAILED_PRECONDITION,
                 "`%s.stream_id` `%s` is not the current stream of framework `%s`", what, stream_id,
                 id->value);
    return NULL;
  }
  return fw;
}

void svc_frameworks_heartbeat(alloc_service *s) {
  Meseta__V1__Event__Heartbeat hb = MESETA__V1__EVENT__HEARTBEAT__INIT;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_HEARTBEAT;
  ev.heartbeat = &hb;
  for (uint32_t i = 0; i < s->frameworks.n; i++)
    svc_send_event(s, (svc_framework *)s->frameworks.v[i], &ev);
}

void svc_frameworks_close(alloc_service *s) {
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    svc_framework *fw = (svc_framework *)s->frameworks.v[i];
    drop_stream(fw, MS_UNAVAILABLE, "the allocator is shutting down or lost the lead");
    if (fw->failover_timer)
      ms_loop_cancel_timer(s->loop, fw->failover_timer);
    svc_framework_free(fw);
  }
  svc_table_release(&s->frameworks);
}
