/* AgentLink.Connect: agents register or re-register on one bidi stream, send status
 * updates and heartbeats, and receive launches, kills and acknowledgements. The stream
 * ending deactivates the agent until it reconnects (its offers rescinded, its tasks kept);
 * past --agent-reconnect-timeout it is removed (its tasks lost). */
#include "alloc-svc-agents.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/resources-ops.h"

#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-maintenance.h"
#include "alloc-svc-operations.h"
#include "alloc-svc-operator.h"
#include "alloc-svc-recovery.h"
#include "alloc-svc-registry.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

/* ---- the owner thread ---- */

void svc_agent_link_opened(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)msg;
  svc_link *l = data;
  l->call = call;
  ms_rpc_call_ref(call); /* held until svc_agent_link_closed */
  l->next = s->links;
  if (s->links)
    s->links->prev = l;
  s->links = l;
  const char *why;
  if (!svc_serving(s, &why))
    ms_rpc_call_finish(call, MS_UNAVAILABLE, why);
}

static void link_free(alloc_service *s, svc_link *l) {
  (void)s;
  free(l);
}

static void agent_free(svc_agent *a) {
  if (a->reconnect_timer)
    ms_loop_cancel_timer(a->svc->loop, a->reconnect_timer);
  if (a->link)
    a->link->agent = NULL;
  if (a->info)
    protobuf_c_message_free_unpacked(&a->info->base, NULL);
  free(a->e.key);
  free(a);
}

/* Attribute values the engine keeps as text: TEXT as is, SCALAR printed. */
static const char *attr_text(const Meseta__V1__Attribute *at, char *buf, size_t n) {
  if (at->text && at->text->value)
    return at->text->value;
  if (at->scalar) {
    snprintf(buf, n, "%g", at->scalar->value);
    return buf;
  }
  return "";
}

alloc_agent_state svc_agent_wanted_state(alloc_service *s, const char *id) {
  svc_agent_rec *r = svc_table_get(&s->agent_recs, id);
  if (!r)
    return ALLOC_AGENT_ACTIVE;
  if (r->drain_state != MESETA__V1__DRAIN_STATE__DRAIN_STATE_UNKNOWN)
    return ALLOC_AGENT_DRAINING;
  return r->deactivated ? ALLOC_AGENT_DEACTIVATED : ALLOC_AGENT_ACTIVE;
}

/* The engine's spec of an agent: info's attributes and fault domain, `total`, the
 * operator state and maintenance window. attrs and bufs are the caller's to free. */
static void agent_spec(alloc_service *s, const Meseta__V1__AgentInfo *info, const char *id,
                       const ms_resources *total, alloc_agent_spec *spec, alloc_attribute **attrs,
                       char (**bufs)[32]) {
  uint32_t na = (uint32_t)info->n_attributes;
  *attrs = ms_xcalloc(na ? na : 1, sizeof(**attrs));
  *bufs = ms_xcalloc(na ? na : 1, sizeof(**bufs));
  for (uint32_t i = 0; i < na; i++) {
    (*attrs)[i].name = info->attributes[i]->name ? info->attributes[i]->name : "";
    (*attrs)[i].value = attr_text(info->attributes[i], (*bufs)[i], sizeof((*bufs)[i]));
  }
  const Meseta__V1__DomainInfo__FaultDomain *fd = info->domain ? info->domain->fault_domain : NULL;
  *spec = (alloc_agent_spec){.id = id,
                             .hostname = info->hostname,
                             .total = total,
                             .attributes = *attrs,
                             .nattributes = na,
                             .region = fd && fd->region && *fd->region->name ? fd->region->name : NULL,
                             .zone = fd && fd->zone && *fd->zone->name ? fd->zone->name : NULL,
                             .state = svc_agent_wanted_state(s, id)};
  svc_agent *known = svc_table_get(&s->agents, id);
  if (known && known->reconnect_timer)
    spec->state = ALLOC_AGENT_DEACTIVATED; /* disconnected: nothing to offer */
  (void)svc_agent_window(s, info, &spec->unavailable_start_ms, &spec->unavailable_duration_ms, NULL);
}

int svc_agent_respec(alloc_service *s, svc_agent *a, ms_error **err) {
  alloc_agent_view v;
  if (alloc_model_agent(s->model, a->e.key, &v, err) < 0)
    return MS_ERR;
  alloc_agent_spec spec;
  alloc_attribute *attrs;
  char(*bufs)[32];
  agent_spec(s, a->info, a->e.key, v.total, &spec, &attrs, &bufs);
  int rc = alloc_model_update_agent(s->model, &spec, err);
  free(attrs);
  free(bufs);
  return rc;
}

/* ckpt: the reservations and volumes the agent checkpointed (REREGISTER), put in place
 * of what they were made from: the agent's disk is the truth after a failover. */
static svc_agent *add_agent(alloc_service *s, const Meseta__V1__AgentInfo *info,
                            Meseta__V1__Resource *const *ckpt, size_t n_ckpt, const char *id,
                            const char *what, ms_error **err) {
  ms_resources *total = NULL, *kept = NULL;
  if (ms_resources_from_proto(info->resources, info->n_resources, &total, err) < 0) {
    ms_error_prefix(err, "`%s.agent_info.resources`", what);
    return NULL;
  }
  if (n_ckpt && (ms_resources_from_proto(ckpt, n_ckpt, &kept, err) < 0 ||
                 ms_resources_put_checkpointed(total, kept, err) < 0)) {
    ms_error_prefix(err, "`%s.checkpointed_resources`", what);
    ms_resources_free(kept);
    ms_resources_free(total);
    return NULL;
  }
  if (kept) {
    _cleanup_free_ char *d = ms_resources_describe(kept);
    ms_log_info(id, "agent's checkpointed resources adopted: %s", d);
  }
  ms_resources_free(kept);
  alloc_agent_spec spec;
  alloc_attribute *attrs;
  char(*bufs)[32];
  agent_spec(s, info, id, total, &spec, &attrs, &bufs);
  int rc = alloc_model_add_agent(s->model, &spec, err);
  ms_resources_free(total);
  free(attrs);
  free(bufs);
  if (rc < 0)
    return NULL;
  svc_agent *a = ms_xcalloc(1, sizeof(*a));
  a->svc = s;
  a->e.key = ms_xstrdup(id);
  a->info = (Meseta__V1__AgentInfo *)ms_pb_dup(&info->base);
  Meseta__V1__AgentID *aid = ms_xmalloc(sizeof(*aid));
  meseta__v1__agent_id__init(aid);
  aid->value = ms_xstrdup(id);
  if (a->info->id)
    protobuf_c_message_free_unpacked(&a->info->id->base, NULL);
  a->info->id = aid; /* freed with the copy: protobuf-c frees with the system allocator */
  svc_table_put(&s->agents, &a->e);
  svc_state_emit_agent(s, id, SVC_ADDED);
  return a;
}

static void attach(svc_link *l, svc_agent *a) {
  a->link = l;
  l->agent = a;
}

static void send_registered(alloc_service *s, svc_agent *a, bool re) {
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->e.key;
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.seconds = s->cfg.heartbeat_interval_ms / 1000;
  hb.nanos = (int32_t)(s->cfg.heartbeat_interval_ms % 1000) * 1000000;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  Meseta__V1__AllocatorMessage__Registered r = MESETA__V1__ALLOCATOR_MESSAGE__REGISTERED__INIT;
  Meseta__V1__AllocatorMessage__Reregistered rr = MESETA__V1__ALLOCATOR_MESSAGE__REREGISTERED__INIT;
  if (re) {
    rr.agent_id = &aid;
    rr.heartbeat_interval = &hb;
    rr.allocator_id = s->id;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REREGISTERED;
    m.reregistered = &rr;
  } else {
    r.agent_id = &aid;
    r.heartbeat_interval = &hb;
    r.allocator_id = s->id;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REGISTERED;
    m.registered = &r;
  }
  svc_send_agent(s, a, &m);
}

/* A registry write made for a link: the link and the message wait for its result. */
typedef struct link_wait {
  svc_link *l;
  Meseta__V1__AgentMessage *m; /* a copy */
  char *id;
} link_wait;

static link_wait *wait_new(svc_link *l, const ProtobufCMessage *m, const char *id) {
  link_wait *w = ms_xmalloc(sizeof(*w));
  *w = (link_wait){l, (Meseta__V1__AgentMessage *)ms_pb_dup(m), ms_xstrdup(id)};
  l->pending++;
  return w;
}

/* Whether the link can still use the result; frees the link when it ended meanwhile. */
static bool wait_end(alloc_service *s, link_wait *w, bool current) {
  svc_link *l = w->l;
  l->pending--;
  bool live = !l->closed && current && !ms_rpc_call_is_done(l->call);
  if (l->closed && !l->pending)
    link_free(s, l);
  return live;
}

static void wait_free(link_wait *w) {
  protobuf_c_message_free_unpacked(&w->m->base, NULL);
  free(w->id);
  free(w);
}

static void registered_ok(alloc_service *s, svc_link *l, const Meseta__V1__AgentInfo *info, const char *id) {
  ms_error *err = NULL;
  svc_agent *a = add_agent(s, info, NULL, 0, id, "register", &err);
  if (!a) {
    ms_log_warn(id, "agent stream: %s", err->msg);
    ms_rpc_call_finish_error(l->call, err);
    ms_error_free(err);
    return;
  }
  attach(l, a);
  ms_log_info(id, "agent registered: `%s`", info->hostname ? info->hostname : "");
  send_registered(s, a, false);
  svc_check_trigger(s);
}

/* The admission is durable: now the agent's resources enter the model. */
static void admitted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  link_wait *w = ctx;
  if (wait_end(s, w, current)) {
    if (err) {
      ms_rpc_call_finish(w->l->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
    } else {
      svc_agent_rec_set(s, w->id, MESETA__V1__AGENT_RECORD__STATE__ADMITTED);
      registered_ok(s, w->l, w->m->register_->agent_info, w->id);
    }
  }
  wait_free(w);
}

static int on_register(alloc_service *s, svc_link *l, const Meseta__V1__AgentMessage *m, ms_error **err) {
  const Meseta__V1__AgentMessage__Register *r = m->register_;
  if (!r->agent_info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`register.agent_info` is missing");
  ms_resources *total = NULL; /* refused before anything is written */
  if (ms_resources_from_proto(r->agent_info->resources, r->agent_info->n_resources, &total, err) < 0)
    return ms_error_prefix(err, "`register.agent_info.resources`");
  ms_resources_free(total);
  char id[64];
  snprintf(id, sizeof(id), "%s-S%llu", s->id, (unsigned long long)s->next_agent++);
  if (!svc_durable(s)) {
    registered_ok(s, l, r->agent_info, id);
    return 0;
  }
  link_wait *w = wait_new(l, &m->base, id);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = id;
  Meseta__V1__AgentID *saved = r->agent_info->id;
  r->agent_info->id = &aid;
  svc_reg_admit(s, r->agent_info, admitted, w); /* copies */
  r->agent_info->id = saved;
  return 0;
}

/* Tasks the agent still runs: accounted to their frameworks when those are known
 * (best effort: tasks of frameworks that have not re-subscribed yet are not). */
static void readopt_tasks(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__Reregister *r) {
  for (size_t i = 0; i < r->n_tasks; i++) {
    const Meseta__V1__Task *t = r->tasks[i];
    if (!t->task_id || !t->framework_id || !t->task_id->value || !t->framework_id->value)
      continue;
    if (svc_task_state_terminal(t->state)) {
      svc_task_adopt_ended(s, a->e.key, t->framework_id->value, t->task_id->value, t->state);
      continue;
    }
    svc_framework *fw = svc_table_get(&s->frameworks, t->framework_id->value);
    if (!fw || svc_task_get(s, t->framework_id->value, t->task_id->value)) {
      ms_log_warn(a->e.key, "task `%s` of unknown framework `%s` not accounted", t->task_id->value,
                  t->framework_id->value);
      continue;
    }
    ms_resources *res = NULL;
    ms_error *err = NULL;
    if (ms_resources_from_proto(t->resources, t->n_resources, &res, &err) < 0) {
      ms_log_warn(a->e.key, "task `%s`: %s", t->task_id->value, err->msg);
      ms_error_free(err);
      continue;
    }
    const char *role = ms_resources_size(res) ? ms_resource_allocation_role(ms_resources_at(res, 0)) : NULL;
    if (!role)
      role = fw->info->n_roles ? fw->info->roles[0] : "*";
    char *role_c = ms_xstrdup(role);
    ms_resources_allocate(res, NULL, NULL);
    if (alloc_model_allocate(s->model, fw->e.key, a->e.key, role_c, res, &err) < 0) {
      ms_log_warn(a->e.key, "task `%s`: %s", t->task_id->value, err->msg);
      ms_error_free(err);
    } else {
      svc_task *st = svc_task_add(s, fw->e.key, t->task_id->value, a->e.key, role_c, res, NULL, NULL);
      st->state = t->state;
      svc_state_emit_task(s, st, SVC_UPDATED); /* watchers saw it added as STAGING */
    }
    free(role_c);
    ms_resources_free(res);
  }
}

static bool same_info(const Meseta__V1__AgentInfo *x, const Meseta__V1__AgentInfo *y) {
  size_t nx = protobuf_c_message_get_packed_size(&x->base), ny = protobuf_c_message_get_packed_size(&y->base);
  if (nx != ny)
    return false;
  _cleanup_free_ uint8_t *bx = ms_xmalloc(nx + 1), *by = ms_xmalloc(ny + 1);
  protobuf_c_message_pack(&x->base, bx);
  protobuf_c_message_pack(&y->base, by);
  return memcmp(bx, by, nx) == 0;
}

/* A known agent re-registered with another AgentInfo: what its reconfiguration policy let
 * through. Resources may only grow (the growth is added to the model's total, which keeps
 * dynamic reservations); attributes and the fault domain are replaced. */
static int reconfigure(alloc_service *s, svc_agent *a, const Meseta__V1__AgentInfo *info, ms_error **err) {
  if (same_info(a->info, info))
    return 0;
  ms_resources *was = NULL, *now = NULL, *total = NULL;
  alloc_agent_view v;
  int rc = MS_ERR;
  if (ms_resources_from_proto(a->info->resources, a->info->n_resources, &was, err) < 0 ||
      ms_resources_from_proto(info->resources, info->n_resources, &now, err) < 0) {
    ms_error_prefix(err, "`reregister.agent_info.resources`");
    goto out;
  }
  if (!ms_resources_contains(now, was)) {
    _cleanup_free_ char *w = ms_resources_describe(was), *n = ms_resources_describe(now);
    ms_error_set(
        err, MS_FAILED_PRECONDITION,
        "`reregister.agent_info.resources`: `%s` does not hold `%s`, which agent `%s` registered with: "
        "an agent may only add resources (else it must register anew)",
        n, w, a->e.key);
    goto out;
  }
  if (alloc_model_agent(s->model, a->e.key, &v, err) < 0)
    goto out;
  total = ms_resources_clone(v.total);
  ms_resources_subtract(now, was, NULL);
  if (ms_resources_add(total, now, err) < 0)
    goto out;
  alloc_agent_spec spec;
  alloc_attribute *attrs;
  char(*bufs)[32];
  agent_spec(s, info, a->e.key, total, &spec, &attrs, &bufs);
  rc = alloc_model_update_agent(s->model, &spec, err);
  free(attrs);
  free(bufs);
  if (rc < 0)
    goto out;
  Meseta__V1__AgentInfo *copy = (Meseta__V1__AgentInfo *)ms_pb_dup(&info->base);
  protobuf_c_message_free_unpacked(&a->info->base, NULL);
  a->info = copy;
  if (svc_durable(s))
    svc_reg_agent_state(s, a->e.key, copy, MESETA__V1__AGENT_RECORD__STATE__ADMITTED, NULL, NULL);
  svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
  ms_log_info(a->e.key, "agent reconfigured: its info and resources were updated");
out:
  ms_resources_free(was);
  ms_resources_free(now);
  ms_resources_free(total);
  return rc;
}

static bool reported(const Meseta__V1__AgentMessage__Reregister *r, const svc_task *t) {
  for (size_t i = 0; i < r->n_tasks; i++) {
    const Meseta__V1__Task *x = r->tasks[i];
    if (x->task_id && x->framework_id && strcmp(x->task_id->value, t->task_id) == 0 &&
        strcmp(x->framework_id->value, t->framework_id) == 0)
      return true;
  }
  return false;
}

/* Tells the task's framework that the allocator (not the agent) ends it. */
static void end_task_for_agent(alloc_service *s, svc_agent *a, svc_task *t, Meseta__V1__TaskState state,
                               Meseta__V1__TaskStatus__Reason reason, const char *why) {
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = t->task_id;
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->e.key;
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &tid;
  st.agent_id = &aid;
  st.state = state;
  st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_MASTER;
  st.reason = reason;
  st.message = (char *)why;
  svc_send_update(s, svc_table_get(&s->frameworks, t->framework_id), &st);
  t->state = st.state;
  svc_state_emit_task(s, t, SVC_UPDATED);
}

/* A known agent re-registered: tasks we hold there that it does not report are gone (it
 * lost its checkpoint, or a launch never reached it). Their frameworks get TASK_LOST. */
static void drop_unreported(alloc_service *s, svc_agent *a, const Meseta__V1__AgentMessage__Reregister *r) {
  for (uint32_t i = 0; i < s->tasks.n;) {
    svc_task *t = (svc_task *)s->tasks.v[i];
    if (strcmp(t->agent_id, a->e.key) != 0 || reported(r, t)) {
      i++;
      continue;
    }
    ms_log_warn(a->e.key, "task `%s` of `%s`: not reported by the re-registered agent: lost", t->task_id,
                t->framework_id);
    end_task_for_agent(s, a, t, MESETA__V1__TASK_STATE__TASK_LOST,
                       MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_REREGISTERED,
                       "the agent re-registered without this task");
    svc_task_end(s, t); /* swaps the last task into slot i */
  }
}

static int reregistered_ok(alloc_service *s, svc_link *l, const Meseta__V1__AgentMessage__Reregister *r,
                           const char *id, ms_error **err) {
  svc_agent *a = svc_table_get(&s->agents, id);
  bool was_away = a && a->reconnect_timer;
  if (was_away) {
    ms_loop_cancel_timer(s->loop, a->reconnect_timer);
    a->reconnect_timer = 0;
  }
  if (a && reconfigure(s, a, r->agent_info, err) < 0)
    return MS_ERR;
  ms_error *e2 = NULL;
  if (was_away && svc_agent_respec(s, a, &e2) < 0) { /* offered again */
    ms_log_warn(id, "%s", e2->msg);
    ms_error_free(e2);
  }
  if (a)
    drop_unreported(s, a, r);
  if (a) {
    /* A newer stream of a known agent replaces the old one; the model stays. */
    if (a->link && a->link != l) {
      ms_rpc_call_finish(a->link->call, MS_FAILED_PRECONDITION, "a newer stream of this agent took over");
      a->link->agent = NULL;
    }
    attach(l, a);
  } else {
    if (!(a = add_agent(s, r->agent_info, r->checkpointed_resources, r->n_checkpointed_resources, id,
                        "reregister", err)))
      return MS_ERR;
    attach(l, a);
    readopt_tasks(s, a, r);
    svc_recovery_agent_back(s, id);
  }
  ms_log_info(id, "agent re-registered with %zu tasks", r->n_tasks);
  send_registered(s, a, true);
  svc_check_trigger(s);
  return 0;
}

/* The agent's record says ADMITTED again: it may come back. */
static void readmitted(alloc_service *s, void *ctx, const ms_error *err, bool current) {
  link_wait *w = ctx;
  if (wait_end(s, w, current)) {
    ms_error *e2 = NULL;
    if (err) {
      if (err->code == MS_FAILED_PRECONDITION)
        svc_agent_rec_set(s, w->id, MESETA__V1__AGENT_RECORD__STATE__GONE);
      ms_rpc_call_finish(w->l->call, err->code == MS_CANCELLED ? MS_UNAVAILABLE : err->code, err->msg);
    } else {
      svc_agent_rec_set(s, w->id, MESETA__V1__AGENT_RECORD__STATE__ADMITTED);
      if (reregistered_ok(s, w->l, w->m->reregister, w->id, &e2) < 0) {
        ms_log_warn(w->id, "agent stream: %s", e2->msg);
        ms_rpc_call_finish_error(w->l->call, e2);
        ms_error_free(e2);
      }
    }
  }
  wait_free(w);
}

static int on_reregister(alloc_service *s, svc_link *l, const Meseta__V1__AgentMessage *m, ms_error **err) {
  const Meseta__V1__AgentMessage__Reregister *r = m->reregister;
  if (!r->agent_info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`reregister.agent_info` is missing");
  const char *id = r->agent_info->id ? r->agent_info->id->value : NULL;
  if (!id || !*id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`reregister.agent_info.id` is missing");
  if (svc_agent_rec_state(s, id) == MESETA__V1__AGENT_RECORD__STATE__GONE)
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "agent `%s` was marked gone and cannot come back: shut it down and start it anew",
                        id);
  if (!svc_durable(s) || svc_table_get(&s->agents, id))
    return reregistered_ok(s, l, r, id, err);
  switch (svc_agent_rec_state(s, id)) {
  case MESETA__V1__AGENT_RECORD__STATE__ADMITTED:
    return reregistered_ok(s, l, r, id, err);
  case MESETA__V1__AGENT_RECORD__STATE__GONE:
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "agent `%s` was marked gone and cannot come back: shut it down and start it anew",
                        id);
  default: /* UNREACHABLE or no record: admitted again through the registry first */
    svc_reg_agent_state(s, id, r->agent_info, MESETA__V1__AGENT_RECORD__STATE__ADMITTED, readmitted,
                        wait_new(l, &m->base, id));
    return 0;
  }
}

void svc_agent_link_msg(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  svc_link *l = data;
  const Meseta__V1__AgentMessage *m = (const Meseta__V1__AgentMessage *)msg;
  const char *why;
  if (!svc_serving(s, &why) || ms_rpc_call_is_done(call))
    return;
  ms_error *err = NULL;
  int rc = 0;
  switch (m->message_case) {
  case MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER:
  case MESETA__V1__AGENT_MESSAGE__MESSAGE_REREGISTER:
    if (l->agent)
      rc = ms_error_set(&err, MS_FAILED_PRECONDITION, "agent `%s` is already registered on this stream",
                        l->agent->e.key);
    else if (l->pending)
      rc = ms_error_set(&err, MS_FAILED_PRECONDITION, "this stream's registration is already in progress");
    else if (svc_maint_refuse(s, call,
                              m->message_case == MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER
                                  ? m->register_->agent_info
                                  : m->reregister->agent_info))
      break; /* its machine is DOWN for maintenance */
    else if (m->message_case == MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER)
      rc = on_register(s, l, m, &err);
    else
      rc = on_reregister(s, l, m, &err);
    break;
  default:
    if (!l->agent && l->pending && m->message_case == MESETA__V1__AGENT_MESSAGE__MESSAGE_HEARTBEAT)
      break;
    if (!l->agent) {
      rc = ms_error_set(&err, MS_FAILED_PRECONDITION,
                        "agent stream: `register` or `reregister` must come first");
      break;
    }
    if (m->message_case == MESETA__V1__AGENT_MESSAGE__MESSAGE_STATUS_UPDATE)
      svc_task_status(s, l->agent, m->status_update);
    else if (m->message_case == MESETA__V1__AGENT_MESSAGE__MESSAGE_OPERATION_STATUS_UPDATE)
      svc_op_status(s, l->agent, m->operation_status_update);
    else if (m->message_case != MESETA__V1__AGENT_MESSAGE__MESSAGE_HEARTBEAT)
      ms_log_debug(l->agent->e.key, "agent message %d ignored in this version", (int)m->message_case);
    break;
  }
  if (rc < 0) {
    ms_log_warn(l->agent ? l->agent->e.key : NULL, "agent stream: %s", err->msg);
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
  }
}

void svc_agent_remove(alloc_service *s, svc_agent *a, const char *why) {
  ms_log_info(a->e.key, "agent removed: %s", why);
  bool gone = svc_agent_rec_state(s, a->e.key) == MESETA__V1__AGENT_RECORD__STATE__GONE;
  svc_run_agent_removed(s, a->e.key, gone, why); /* e.g. its unsettled operations: UNREACHABLE / GONE */
  /* Its tasks are lost: tell their frameworks; the model forgets their resources. */
  for (uint32_t i = 0; i < s->tasks.n;) {
    svc_task *t = (svc_task *)s->tasks.v[i];
    if (strcmp(t->agent_id, a->e.key) != 0) {
      i++;
      continue;
    }
    end_task_for_agent(
        s, a, t, gone ? MESETA__V1__TASK_STATE__TASK_GONE_BY_OPERATOR : MESETA__V1__TASK_STATE__TASK_LOST,
        gone ? MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_REMOVED_BY_OPERATOR
             : MESETA__V1__TASK_STATUS__REASON__REASON_AGENT_DISCONNECTED,
        why);
    ms_resources_clear(t->res); /* the model forgets them with the agent */
    if (t->executor)
      ms_resources_clear(t->executor->res);
    svc_task_end(s, t); /* swaps the last task into slot i */
  }
  ms_error *err = NULL;
  if (alloc_model_remove_agent(s->model, a->e.key, &err) < 0) {
    ms_log_warn(a->e.key, "%s", err->msg);
    ms_error_free(err);
  }
  if (svc_durable(s) && !s->closing && !gone) { /* it may come back, through the registry */
    svc_agent_rec_set(s, a->e.key, MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE);
    svc_reg_agent_state(s, a->e.key, NULL, MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE, NULL, NULL);
  }
  if (!s->closing)
    svc_state_emit_agent(s, a->e.key, SVC_REMOVED);
  svc_table_del(&s->agents, &a->e);
  agent_free(a);
}

static void reconnect_expired(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  svc_agent *a = arg;
  a->reconnect_timer = 0;
  _cleanup_free_ char *why = ms_xasprintf("it did not reconnect within %lld ms of losing its stream",
                                          (long long)a->svc->cfg.agent_reconnect_timeout_ms);
  svc_agent_remove(a->svc, a, why);
}

/* Its stream ended: the agent may be restarting (its containers keep running) or cut off
 * for a moment. Its tasks stay as they are and nothing is offered on it until it comes
 * back (REREGISTER) or the timeout passes (then they are lost). */
static void agent_away(alloc_service *s, svc_agent *a) {
  a->link = NULL;
  a->reconnect_timer = ms_loop_add_timer(s->loop, s->cfg.agent_reconnect_timeout_ms, 0, reconnect_expired, a);
  ms_error *err = NULL;
  if (svc_agent_respec(s, a, &err) < 0) {
    ms_log_warn(a->e.key, "%s", err->msg);
    ms_error_free(err);
  }
  ms_log_info(a->e.key, "agent stream ended: waiting up to %lld ms for it to reconnect",
              (long long)s->cfg.agent_reconnect_timeout_ms);
}

void svc_agent_link_closed(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)msg;
  svc_link *l = data;
  if (l->agent && l->agent->link == l && !s->closing)
    agent_away(s, l->agent);
  if (l->agent)
    l->agent->link = NULL;
  if (l->prev)
    l->prev->next = l->next;
  else if (s->links == l)
    s->links = l->next;
  if (l->next)
    l->next->prev = l->prev;
  l->prev = l->next = NULL;
  ms_rpc_call_unref(call); /* the link's own reference */
  l->closed = true;
  if (!l->pending)
    link_free(s, l);
}

void svc_agents_ping(alloc_service *s) {
  for (uint32_t i = 0; i < s->agents.n; i++) {
    svc_agent *a = (svc_agent *)s->agents.v[i];
    Meseta__V1__AllocatorMessage__Ping p = MESETA__V1__ALLOCATOR_MESSAGE__PING__INIT;
    p.sequence = ++a->ping_seq;
    p.connected = true;
    Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
    m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_PING;
    m.ping = &p;
    svc_send_agent(s, a, &m);
  }
}

void svc_agents_close(alloc_service *s) {
  for (svc_link *l = s->links; l; l = l->next)
    ms_rpc_call_finish(l->call, MS_UNAVAILABLE, "the allocator is shutting down or lost the lead");
  for (uint32_t i = 0; i < s->agents.n; i++)
    agent_free((svc_agent *)s->agents.v[i]);
  svc_table_release(&s->agents);
}
