/* Allocator.WatchState: what master-api replicas keep their read views from. A new
 * watcher gets a snapshot (snapshot_begin, chunks of at most max_chunk_bytes, then
 * snapshot_end) at the current revision, then every change as it happens. The
 * svc_state_emit_* functions are called where the model changes (agents, frameworks,
 * tasks, operator calls); each numbers its change with the next revision.
 *
 * Flow control: each send is queued by the RPC layer, which holds at most
 * max_queued_sends per call; a watcher too slow to keep up fails a send and is cut
 * off with RESOURCE_EXHAUSTED (it reconnects and gets a fresh snapshot), so memory
 * never grows with a slow reader.
 *
 * Everything here runs on the owner thread. Messages built here are heap trees freed
 * with protobuf_c_message_free_unpacked. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/values.h"

#include "alloc-svc-internal.h"

#define DEFAULT_CHUNK (1u << 20)
#define MIN_CHUNK (64u << 10)

#define NEW(type, prefix) ((type *)ms_pb_new(&prefix##__descriptor))

static void *dup_msg(const void *m) {
  return m ? ms_pb_dup((const ProtobufCMessage *)m) : NULL;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static Google__Protobuf__Timestamp *ts_new(int64_t ms) {
  Google__Protobuf__Timestamp *t = NEW(Google__Protobuf__Timestamp, google__protobuf__timestamp);
  t->seconds = ms / 1000;
  t->nanos = (int32_t)(ms % 1000) * 1000000;
  return t;
}

/* Moves the set's proto form into a repeated Resource field. */
static void set_res(Meseta__V1__Resource ***v, size_t *n, const ms_resources *r) {
  Meseta__V1__Resources *p = ms_resources_to_proto(r);
  *v = p->resources;
  *n = p->n_resources;
  p->resources = NULL;
  p->n_resources = 0;
  ms_resources_proto_free(p);
}

static char *xstr(const char *p) {
  return ms_xstrdup(p ? p : "");
}

/* ---- building the view's objects ---- */

static Meseta__V1__Agent__State agent_state(alloc_agent_state st) {
  switch (st) {
  case ALLOC_AGENT_DEACTIVATED:
    return MESETA__V1__AGENT__STATE__DEACTIVATED;
  case ALLOC_AGENT_DRAINING:
    return MESETA__V1__AGENT__STATE__DRAINING;
  default:
    return MESETA__V1__AGENT__STATE__ACTIVE;
  }
}

static void add_reserved(Meseta__V1__Agent *m, const ms_resources *total) {
  ms_resources *res = ms_resources_reserved(total, NULL);
  for (uint32_t i = 0; i < ms_resources_size(res); i++) {
    const char *role = ms_resource_role(ms_resources_at(res, i));
    bool seen = false;
    for (size_t k = 0; k < m->n_reserved_resources && !seen; k++)
      seen = strcmp(m->reserved_resources[k]->key, role) == 0;
    if (seen)
      continue;
    ms_resources *mine = ms_resources_reserved(total, role);
    Meseta__V1__Agent__ReservedResourcesEntry *e =
        NEW(Meseta__V1__Agent__ReservedResourcesEntry, meseta__v1__agent__reserved_resources_entry);
    e->key = xstr(role);
    e->value = ms_resources_to_proto(mine);
    ms_resources_free(mine);
    m->reserved_resources =
        ms_xrealloc(m->reserved_resources, (m->n_reserved_resources + 1) * sizeof(*m->reserved_resources));
    m->reserved_resources[m->n_reserved_resources++] = e;
  }
  ms_resources_free(res);
}

static Meseta__V1__Agent *build_agent(alloc_service *s, const svc_agent *a) {
  Meseta__V1__Agent *m = NEW(Meseta__V1__Agent, meseta__v1__agent);
  m->agent_info = dup_msg(a->info);
  alloc_agent_view v;
  if (alloc_model_agent(s->model, a->e.key, &v, NULL) == 0) {
    m->state = agent_state(v.state);
    set_res(&m->total_resources, &m->n_total_resources, v.total);
    set_res(&m->offered_resources, &m->n_offered_resources, v.offered);
    set_res(&m->available_resources, &m->n_available_resources, v.available);
    ms_resources *used = ms_resources_clone(v.total);
    (void)ms_resources_subtract(used, v.available, NULL);
    (void)ms_resources_subtract(used, v.offered, NULL);
    set_res(&m->allocated_resources, &m->n_allocated_resources, used);
    ms_resources_free(used);
    add_reserved(m, v.total);
  }
  svc_agent_rec *r = svc_table_get(&s->agent_recs, a->e.key);
  if (r)
    m->drain_state = r->drain_state;
  const Meseta__V1__Unavailability *u = NULL;
  int64_t st, du;
  if (svc_agent_window(s, a->info, &st, &du, &u) && u)
    m->unavailability = dup_msg(u);
  return m;
}

static Meseta__V1__Framework *build_framework(alloc_service *s, const svc_framework *fw) {
  (void)s;
  Meseta__V1__Framework *m = NEW(Meseta__V1__Framework, meseta__v1__framework);
  m->framework_info = dup_msg(fw->info);
  m->active = true;
  m->connected = fw->stream != NULL;
  m->recovered = fw->recovered;
  return m;
}

static Meseta__V1__Task *build_task(const svc_task *t) {
  Meseta__V1__Task *m = NEW(Meseta__V1__Task, meseta__v1__task);
  m->name = xstr(t->task_id);
  m->task_id = NEW(Meseta__V1__TaskID, meseta__v1__task_id);
  m->task_id->value = xstr(t->task_id);
  m->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
  m->framework_id->value = xstr(t->framework_id);
  m->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
  m->agent_id->value = xstr(t->agent_id);
  if (t->executor) {
    const char *x = strrchr(t->executor->e.key, '\x1f');
    m->executor_id = NEW(Meseta__V1__ExecutorID, meseta__v1__executor_id);
    m->executor_id->value = xstr(x ? x + 1 : t->executor->e.key);
  }
  m->state = t->state;
  ms_resources *r = ms_resources_clone(t->res);
  (void)ms_resources_allocate(r, t->role, NULL);
  set_res(&m->resources, &m->n_resources, r);
  ms_resources_free(r);
  return m;
}

static Meseta__V1__Role *build_role(alloc_service *s, const char *name) {
  Meseta__V1__Role *m = NEW(Meseta__V1__Role, meseta__v1__role);
  m->name = xstr(name);
  svc_weight *w = svc_table_get(&s->weights, name);
  m->weight = w ? w->weight : 1.0;
  svc_quota *q = svc_table_get(&s->quotas, name);
  if (q)
    m->quota = dup_msg(q->config);
  ms_quantities c = {0};
  if (alloc_model_role_consumption(s->model, name, &c, NULL) == 0) {
    m->quota_consumed = ms_xcalloc(c.n ? c.n : 1, sizeof(*m->quota_consumed));
    for (uint32_t i = 0; i < c.n; i++) {
      Meseta__V1__Role__QuotaConsumedEntry *e =
          NEW(Meseta__V1__Role__QuotaConsumedEntry, meseta__v1__role__quota_consumed_entry);
      e->key = xstr(ms_name_str(c.v[i].name));
      e->value = NEW(Meseta__V1__Value__Scalar, meseta__v1__value__scalar);
      e->value->value = ms_scalar_to_double(c.v[i].value);
      m->quota_consumed[m->n_quota_consumed++] = e;
    }
  }
  ms_quantities_release(&c);
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    const svc_framework *fw = (const svc_framework *)s->frameworks.v[i];
    bool in = fw->info->n_roles == 0 && strcmp(name, "*") == 0;
    for (size_t k = 0; k < fw->info->n_roles && !in; k++)
      in = strcmp(fw->info->roles[k], name) == 0;
    if (!in)
      continue;
    m->frameworks = ms_xrealloc(m->frameworks, (m->n_frameworks + 1) * sizeof(*m->frameworks));
    Meseta__V1__FrameworkID *id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
    id->value = xstr(fw->e.key);
    m->frameworks[m->n_frameworks++] = id;
  }
  return m;
}

/* Every role the view shows: with a weight, quota, or a framework. The caller frees
 * the array (the names are borrowed). */
static const char **role_names(alloc_service *s, uint32_t *n) {
  uint32_t cap = s->weights.n + s->quotas.n + 1;
  for (uint32_t i = 0; i < s->frameworks.n; i++)
    cap += (uint32_t)((svc_framework *)s->frameworks.v[i])->info->n_roles + 1;
  const char **v = ms_xcalloc(cap, sizeof(*v));
  *n = 0;
#define ADD(name)                                                                                            \
  do {                                                                                                       \
    bool seen_ = false;                                                                                      \
    for (uint32_t k_ = 0; k_ < *n && !seen_; k_++)                                                           \
      seen_ = strcmp(v[k_], (name)) == 0;                                                                    \
    if (!seen_)                                                                                              \
      v[(*n)++] = (name);                                                                                    \
  } while (0)
  for (uint32_t i = 0; i < s->weights.n; i++)
    ADD(s->weights.v[i]->key);
  for (uint32_t i = 0; i < s->quotas.n; i++)
    ADD(s->quotas.v[i]->key);
  for (uint32_t i = 0; i < s->frameworks.n; i++) {
    const Meseta__V1__FrameworkInfo *info = ((svc_framework *)s->frameworks.v[i])->info;
    if (info->n_roles == 0)
      ADD("*");
    for (size_t k = 0; k < info->n_roles; k++)
      ADD(info->roles[k]);
  }
#undef ADD
  return v;
}

static Meseta__V1__QuotaConfig **quota_list(alloc_service *s, size_t *n) {
  Meseta__V1__QuotaConfig **v = ms_xcalloc(s->quotas.n + 1, sizeof(*v));
  for (uint32_t i = 0; i < s->quotas.n; i++)
    v[i] = dup_msg(((svc_quota *)s->quotas.v[i])->config);
  *n = s->quotas.n;
  return v;
}

static Meseta__V1__WeightInfo **weight_list(alloc_service *s, size_t *n) {
  Meseta__V1__WeightInfo **v = ms_xcalloc(s->weights.n + 1, sizeof(*v));
  for (uint32_t i = 0; i < s->weights.n; i++) {
    const svc_weight *w = (const svc_weight *)s->weights.v[i];
    v[i] = NEW(Meseta__V1__WeightInfo, meseta__v1__weight_info);
    v[i]->role = xstr(w->e.key);
    v[i]->weight = w->weight;
  }
  *n = s->weights.n;
  return v;
}

/* ---- sending ---- */

static void watcher_free(svc_watcher *w) {
  ms_rpc_call_unref(w->call);
  free(w->name);
  free(w);
}

/* false: the watcher is cut off (the caller unlinks it). */
static bool send(svc_watcher *w, const Meseta__V1__StateEvent *ev) {
  ms_error *err = NULL;
  if (ms_rpc_call_send(w->call, &ev->base, &err) == 0)
    return true;
  ms_log_warn(NULL, "state watcher `%s` cut off: %s", w->name, err->msg);
  if (err->code == MS_RESOURCE_EXHAUSTED)
    ms_rpc_call_finish(w->call, MS_RESOURCE_EXHAUSTED,
                       "this watcher did not keep up with the state's changes: watch again for a snapshot");
  else
    ms_rpc_call_finish_error(w->call, err);
  ms_error_free(err);
  return false;
}

static int64_t broadcast(alloc_service *s, Meseta__V1__StateChange *c) {
  int64_t rev = ++s->revision;
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  ev.revision = rev;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_CHANGE;
  ev.change = c;
  ev.last_of_revision = true;
  for (svc_watcher **p = &s->watchers; *p;) {
    svc_watcher *w = *p;
    if (send(w, &ev)) {
      p = &w->next;
    } else {
      *p = w->next;
      watcher_free(w);
    }
  }
  protobuf_c_message_free_unpacked(&c->base, NULL);
  return rev;
}

static Meseta__V1__StateChange *change_new(void) {
  return NEW(Meseta__V1__StateChange, meseta__v1__state_change);
}

int64_t svc_state_emit_agent(alloc_service *s, const char *agent_id, svc_change what) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  svc_agent *a = svc_table_get(&s->agents, agent_id);
  if (what == SVC_REMOVED || !a) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_REMOVED;
    c->agent_removed = NEW(Meseta__V1__StateChange__AgentRemoved, meseta__v1__state_change__agent_removed);
    c->agent_removed->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
    c->agent_removed->agent_id->value = xstr(agent_id);
  } else if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_ADDED;
    c->agent_added = build_agent(s, a);
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED;
    c->agent_updated = build_agent(s, a);
  }
  return broadcast(s, c);
}

int64_t svc_state_emit_framework(alloc_service *s, const char *framework_id, svc_change what) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  svc_framework *fw = svc_table_get(&s->frameworks, framework_id);
  if (what == SVC_REMOVED || !fw) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_REMOVED;
    c->framework_removed =
        NEW(Meseta__V1__StateChange__FrameworkRemoved, meseta__v1__state_change__framework_removed);
    c->framework_removed->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
    c->framework_removed->framework_id->value = xstr(framework_id);
  } else if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_ADDED;
    c->framework_added = build_framework(s, fw);
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_UPDATED;
    c->framework_updated = build_framework(s, fw);
  }
  return broadcast(s, c);
}

int64_t svc_state_emit_task(alloc_service *s, const svc_task *t, svc_change what) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED;
    c->task_added = build_task(t);
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_UPDATED;
    c->task_updated = build_task(t);
  }
  return broadcast(s, c);
}

int64_t svc_state_emit_operation(alloc_service *s, const svc_operation *op, svc_change what) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  if (what == SVC_REMOVED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_REMOVED;
    c->operation_removed =
        NEW(Meseta__V1__StateChange__OperationRemoved, meseta__v1__state_change__operation_removed);
    c->operation_removed->operation_uuid.data = ms_xmalloc(sizeof(op->uuid));
    memcpy(c->operation_removed->operation_uuid.data, op->uuid, sizeof(op->uuid));
    c->operation_removed->operation_uuid.len = sizeof(op->uuid);
    return broadcast(s, c);
  }
  Meseta__V1__TrackedOperation *t = NEW(Meseta__V1__TrackedOperation, meseta__v1__tracked_operation);
  t->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
  t->framework_id->value = xstr(op->framework_id);
  t->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
  t->agent_id->value = xstr(op->agent_id);
  t->info = dup_msg(op->info);
  if (op->latest) {
    t->latest_status = dup_msg(op->latest);
  } else {
    t->latest_status = NEW(Meseta__V1__OperationStatus, meseta__v1__operation_status);
    t->latest_status->state = op->state;
    t->latest_status->operation_id = NEW(Meseta__V1__OperationID, meseta__v1__operation_id);
    t->latest_status->operation_id->value = xstr(op->op_id);
  }
  t->uuid.data = ms_xmalloc(sizeof(op->uuid));
  memcpy(t->uuid.data, op->uuid, sizeof(op->uuid));
  t->uuid.len = sizeof(op->uuid);
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_UPDATED;
  c->operation_updated = t;
  return broadcast(s, c);
}

int64_t svc_state_emit_role(alloc_service *s, const char *role) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_ROLE_UPDATED;
  c->role_updated = build_role(s, role);
  return broadcast(s, c);
}

int64_t svc_state_emit_quota(alloc_service *s) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_QUOTA_CHANGED;
  c->quota_changed = NEW(Meseta__V1__StateChange__QuotaChanged, meseta__v1__state_change__quota_changed);
  c->quota_changed->configs = quota_list(s, &c->quota_changed->n_configs);
  return broadcast(s, c);
}

int64_t svc_state_emit_weights(alloc_service *s) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_WEIGHTS_CHANGED;
  c->weights_changed =
      NEW(Meseta__V1__StateChange__WeightsChanged, meseta__v1__state_change__weights_changed);
  c->weights_changed->weights = weight_list(s, &c->weights_changed->n_weights);
  return broadcast(s, c);
}

int64_t svc_state_emit_maintenance(alloc_service *s) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_MAINTENANCE_SCHEDULE_CHANGED;
  c->maintenance_schedule_changed =
      s->schedule ? dup_msg(s->schedule)
                  : NEW(Meseta__V1__MaintenanceSchedule, meseta__v1__maintenance_schedule);
  return broadcast(s, c);
}

/* ---- the snapshot ---- */

typedef struct chunker {
  svc_watcher *w;
  int64_t rev;
  size_t max, bytes;
  Meseta__V1__StateChunk *chunk;
  bool ok;
} chunker;

static void chunk_flush(chunker *k) {
  if (!k->chunk)
    return;
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  ev.revision = k->rev;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_CHUNK;
  ev.chunk = k->chunk;
  if (k->ok)
    k->ok = send(k->w, &ev);
  protobuf_c_message_free_unpacked(&k->chunk->base, NULL);
  k->chunk = NULL;
  k->bytes = 0;
}

/* The chunk an item of `size` bytes goes into (a new one when it would overflow). */
static Meseta__V1__State *chunk_for(chunker *k, size_t size) {
  if (k->chunk && k->bytes && k->bytes + size > k->max)
    chunk_flush(k);
  if (!k->chunk) {
    k->chunk = NEW(Meseta__V1__StateChunk, meseta__v1__state_chunk);
    k->chunk->state = NEW(Meseta__V1__State, meseta__v1__state);
  }
  k->bytes += size + 8;
  return k->chunk->state;
}

#define APPEND(arr, n, item)                                                                                 \
  do {                                                                                                       \
    (arr) = ms_xrealloc((arr), ((n) + 1) * sizeof(*(arr)));                                                  \
    (arr)[(n)++] = (item);                                                                                   \
  } while (0)

static void send_snapshot(alloc_service *s, svc_watcher *w, uint32_t max_chunk) {
  uint32_t nroles = 0;
  const char **roles = role_names(s, &nroles);
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  ev.revision = s->revision;
  Meseta__V1__SnapshotBegin b = MESETA__V1__SNAPSHOT_BEGIN__INIT;
  Meseta__V1__MasterInfo mi = MESETA__V1__MASTER_INFO__INIT;
  mi.id = s->id;
  mi.address = (char *)(s->cfg.advertise_address ? s->cfg.advertise_address : "");
  mi.hostname = (char *)(s->cfg.hostname ? s->cfg.hostname : "");
  b.leader_id = s->id;
  b.master_info = &mi;
  Google__Protobuf__Timestamp *el = ts_new(s->elected_ms);
  b.leader_elected_time = el;
  b.agents = s->agents.n;
  b.frameworks = s->frameworks.n;
  b.tasks = s->tasks.n;
  b.executors = s->executors.n;
  b.roles = nroles;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN;
  ev.snapshot_begin = &b;
  chunker k = {.w = w, .rev = s->revision, .max = max_chunk, .ok = send(w, &ev)};
  protobuf_c_message_free_unpacked(&el->base, NULL);
  /* The configuration goes into the first chunk. */
  chunk_for(&k, 0);
  k.chunk->quota_configs = quota_list(s, &k.chunk->n_quota_configs);
  k.chunk->weights = weight_list(s, &k.chunk->n_weights);
  if (s->schedule)
    k.chunk->maintenance_schedule = dup_msg(s->schedule);
  k.bytes = protobuf_c_message_get_packed_size(&k.chunk->base);
  for (uint32_t i = 0; i < s->agents.n && k.ok; i++) {
    Meseta__V1__Agent *a = build_agent(s, (svc_agent *)s->agents.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&a->base));
    APPEND(st->agents, st->n_agents, a);
  }
  for (uint32_t i = 0; i < s->frameworks.n && k.ok; i++) {
    Meseta__V1__Framework *f = build_framework(s, (svc_framework *)s->frameworks.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&f->base));
    APPEND(st->frameworks, st->n_frameworks, f);
  }
  for (uint32_t i = 0; i < s->tasks.n && k.ok; i++) {
    Meseta__V1__Task *t = build_task((svc_task *)s->tasks.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&t->base));
    APPEND(st->tasks, st->n_tasks, t);
  }
  for (uint32_t i = 0; i < nroles && k.ok; i++) {
    Meseta__V1__Role *r = build_role(s, roles[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&r->base));
    APPEND(st->roles, st->n_roles, r);
  }
  chunk_flush(&k);
  free(roles);
  if (k.ok) {
    Meseta__V1__SnapshotEnd e = MESETA__V1__SNAPSHOT_END__INIT;
    Meseta__V1__StateEvent end = MESETA__V1__STATE_EVENT__INIT;
    end.revision = s->revision;
    end.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
    end.snapshot_end = &e;
    k.ok = send(w, &end);
  }
  if (k.ok) {
    w->next = s->watchers;
    s->watchers = w;
  } else {
    watcher_free(w);
  }
}

/* ---- the stream's life ---- */

void svc_state_watch(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  const char *why;
  if (!svc_serving(s, &why)) {
    ms_rpc_call_finish(call, MS_UNAVAILABLE, why);
    return;
  }
  if (ms_rpc_call_is_done(call))
    return;
  const Meseta__V1__WatchStateRequest *r = (const Meseta__V1__WatchStateRequest *)msg;
  uint32_t max = r->max_chunk_bytes ? r->max_chunk_bytes : DEFAULT_CHUNK;
  if (max < MIN_CHUNK)
    max = MIN_CHUNK;
  svc_watcher *w = ms_xcalloc(1, sizeof(*w));
  w->call = call;
  ms_rpc_call_ref(call);
  w->name = ms_xstrdup(r->watcher && *r->watcher ? r->watcher : "(unnamed)");
  /* resume_revision is not honoured yet: every watcher starts from a snapshot. */
  ms_log_info(NULL, "state watcher `%s`: snapshot at revision %lld", w->name, (long long)s->revision);
  send_snapshot(s, w, max);
}

void svc_state_watch_done(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  (void)msg;
  for (svc_watcher **p = &s->watchers; *p; p = &(*p)->next) {
    if ((*p)->call == call) {
      svc_watcher *w = *p;
      *p = w->next;
      watcher_free(w);
      return;
    }
  }
}

void svc_state_begin_term(alloc_service *s) {
  s->elected_ms = wall_ms();
  /* Microseconds of the wall clock: above any predecessor's revision unless it made
   * more than a million changes a second of its term. */
  int64_t base = s->elected_ms * 1000;
  if (base > s->revision)
    s->revision = base;
}

void svc_state_close(alloc_service *s, ms_status code, const char *why) {
  while (s->watchers) {
    svc_watcher *w = s->watchers;
    s->watchers = w->next;
    ms_rpc_call_finish(w->call, code, why);
    watcher_free(w);
  }
}
