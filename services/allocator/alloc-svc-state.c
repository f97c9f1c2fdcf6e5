/* Allocator.WatchState: what master-api replicas keep their read views from. A new
 * watcher gets a snapshot (snapshot_begin, chunks of at most max_chunk_bytes, then
 * snapshot_end) at the current revision, then every change as it happens. The
 * svc_state_emit_* functions are called where the model changes (agents, frameworks,
 * tasks, operator calls); each numbers its change with the next revision.
 *
 * What the engine changes on its own (an agent's offered / allocated / available
 * resources as offers come and go and tasks start and end, a role's consumption) has no
 * emit at its call sites: the engine records which agents and roles changed and calls
 * svc_state_changed, which queues one svc_state_flush on the loop; the flush sends an
 * agent_updated / role_updated for each whose message differs from the one last shown
 * (the encoding last shown is kept), one revision each. Agent changes wait while a
 * watcher has WATCH_BUDGET sends queued (a cycle may touch every agent) and go on when
 * its queue drains. A snapshot flushes first and shows agents as last shown, so what it
 * holds at revision R is what the changes up to R built: two views at the same
 * revision agree, however they started. Completed tasks are kept for the same reason
 * (alloc-svc-completed.c).
 *
 * Flow control: each send is queued by the RPC layer, which holds at most
 * max_queued_sends per call; a watcher too slow to keep up fails a send and is cut
 * off with RESOURCE_EXHAUSTED (it reconnects and gets a fresh snapshot), so memory
 * never grows with a slow reader.
 *
 * Everything here runs on the owner thread. Messages built here are heap trees freed
 * with protobuf_c_message_free_unpacked. */
#include "alloc-svc-state.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/task-state.h"
#include "meseta/values.h"

#include "alloc-svc-core.h"
#include "alloc-svc-state-internal.h"

/* What WatchState last showed of something: its encoding. */
typedef struct svc_shown {
  svc_entry e;
  uint8_t *bytes;
  size_t len;
} svc_shown;

#define DEFAULT_CHUNK (1u << 20)
#define MIN_CHUNK (64u << 10)
/* Held-back agent changes go to a watcher while it has fewer sends queued than this:
 * well below the RPC layer's per-call limit (1024), which cuts a watcher off. */
#define WATCH_BUDGET 256u
/* A watcher whose queue has not drained for this long while it holds changes back for
 * everyone is cut off (it watches again for a snapshot). */
#define WATCH_STALL_MS 5000

/* ---- sending ---- */

static void watcher_free(svc_watcher *w) {
  ms_rpc_call_unref(w->call);
  free(w->name);
  free(w);
}

/* false: the watcher is cut off (the caller unlinks it). */
static bool send(svc_watcher *w, const Meseta__V1__StateEvent *ev) {
  ms_error *err = NULL;
  if (ms_rpc_call_send(w->call, &ev->base, &err) == 0) {
    w->queued++;
    return true;
  }
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

/* ---- what was shown ---- */

/* Whether m differs from what was shown under key (nothing: differs); if so, m is
 * what was shown now. */
static bool shown_update(svc_table *t, const char *key, const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = ms_xmalloc(len ? len : 1);
  protobuf_c_message_pack(m, b);
  svc_shown *e = svc_table_get(t, key);
  if (e && e->len == len && memcmp(e->bytes, b, len) == 0) {
    free(b);
    return false;
  }
  if (!e) {
    e = ms_xcalloc(1, sizeof(*e));
    e->e.key = ms_xstrdup(key);
    svc_table_put(t, &e->e);
  }
  free(e->bytes);
  e->bytes = b;
  e->len = len;
  return true;
}

static void shown_del(svc_table *t, svc_shown *e) {
  svc_table_del(t, &e->e);
  free(e->e.key);
  free(e->bytes);
  free(e);
}

static void shown_clear(svc_table *t) {
  for (uint32_t i = 0; i < t->n; i++) {
    svc_shown *e = (svc_shown *)t->v[i];
    free(e->e.key);
    free(e->bytes);
    free(e);
  }
  svc_table_release(t);
}

static void entries_clear(svc_table *t) {
  for (uint32_t i = 0; i < t->n; i++) {
    free(t->v[i]->key);
    free(t->v[i]);
  }
  svc_table_release(t);
}

int64_t svc_state_emit_agent(alloc_service *s, const char *agent_id, svc_change what) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  svc_agent *a = svc_table_get(&s->agents, agent_id);
  if (what == SVC_REMOVED || !a) {
    svc_shown *e = svc_table_get(&s->shown_agents, agent_id);
    if (e)
      shown_del(&s->shown_agents, e);
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_REMOVED;
    c->agent_removed = NEW(Meseta__V1__StateChange__AgentRemoved, meseta__v1__state_change__agent_removed);
    c->agent_removed->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
    c->agent_removed->agent_id->value = svc_st_str(agent_id);
  } else if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_ADDED;
    c->agent_added = svc_st_agent(s, a);
    shown_update(&s->shown_agents, agent_id, &c->agent_added->base);
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED;
    c->agent_updated = svc_st_agent(s, a);
    shown_update(&s->shown_agents, agent_id, &c->agent_updated->base);
  }
  return broadcast(s, c);
}

static int64_t emit_framework(alloc_service *s, const char *framework_id, svc_change what,
                              const Meseta__V1__Framework *ended);

int64_t svc_state_emit_framework(alloc_service *s, const char *framework_id, svc_change what) {
  return emit_framework(s, framework_id, what, NULL);
}

int64_t svc_state_emit_framework_ended(alloc_service *s, const Meseta__V1__Framework *msg) {
  return emit_framework(s, NULL, SVC_UPDATED, msg);
}

/* ended: a completed framework, shown as framework_updated (framework_id unused). */
static int64_t emit_framework(alloc_service *s, const char *framework_id, svc_change what,
                              const Meseta__V1__Framework *ended) {
  /* Roles list their frameworks: see them again at the next flush. */
  s->roles_stale = true;
  svc_state_changed(s);
  /* A removed framework's completed tasks stay (until the caps evict them), as Mesos keeps
   * completed frameworks' tasks: `meseta task logs` after `meseta run` still finds its task. */
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  svc_framework *fw = ended ? NULL : svc_table_get(&s->frameworks, framework_id);
  if (ended) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_UPDATED;
    c->framework_updated = svc_st_dup(ended);
  } else if (what == SVC_REMOVED || !fw) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_REMOVED;
    c->framework_removed =
        NEW(Meseta__V1__StateChange__FrameworkRemoved, meseta__v1__state_change__framework_removed);
    c->framework_removed->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
    c->framework_removed->framework_id->value = svc_st_str(framework_id);
  } else if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_ADDED;
    c->framework_added = svc_st_framework(s, fw);
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_UPDATED;
    c->framework_updated = svc_st_framework(s, fw);
  }
  return broadcast(s, c);
}

int64_t svc_state_emit_task(alloc_service *s, const svc_task *t, svc_change what) {
  if (what == SVC_ADDED)
    s->hooks.task_replaced(s, t->e.key); /* a completed task of the same id: replaced in the views */
  bool terminal = what != SVC_ADDED && ms_task_state_terminal(t->state);
  if (!s->watchers && !terminal)
    return ++s->revision;
  Meseta__V1__Task *m = svc_st_task(t);
  if (terminal) /* kept as completed just as shown */
    s->hooks.task_shown(s, t, (Meseta__V1__Task *)ms_pb_dup(&m->base));
  if (!s->watchers) {
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return ++s->revision;
  }
  Meseta__V1__StateChange *c = change_new();
  if (what == SVC_ADDED) {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED;
    c->task_added = m;
  } else {
    c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_UPDATED;
    c->task_updated = m;
  }
  return broadcast(s, c);
}

int64_t svc_state_emit_task_removed(alloc_service *s, const char *framework_id, const char *task_id) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_REMOVED;
  c->task_removed = NEW(Meseta__V1__StateChange__TaskRemoved, meseta__v1__state_change__task_removed);
  c->task_removed->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
  c->task_removed->framework_id->value = svc_st_str(framework_id);
  c->task_removed->task_id = NEW(Meseta__V1__TaskID, meseta__v1__task_id);
  c->task_removed->task_id->value = svc_st_str(task_id);
  return broadcast(s, c);
}

static Meseta__V1__TrackedOperation *build_operation(const svc_operation *op);

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
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_UPDATED;
  c->operation_updated = build_operation(op);
  return broadcast(s, c);
}

static Meseta__V1__TrackedOperation *build_operation(const svc_operation *op) {
  Meseta__V1__TrackedOperation *t = NEW(Meseta__V1__TrackedOperation, meseta__v1__tracked_operation);
  t->framework_id = NEW(Meseta__V1__FrameworkID, meseta__v1__framework_id);
  t->framework_id->value = svc_st_str(op->framework_id);
  t->agent_id = NEW(Meseta__V1__AgentID, meseta__v1__agent_id);
  t->agent_id->value = svc_st_str(op->agent_id);
  t->info = svc_st_dup(op->info);
  if (op->latest) {
    t->latest_status = svc_st_dup(op->latest);
  } else {
    t->latest_status = NEW(Meseta__V1__OperationStatus, meseta__v1__operation_status);
    t->latest_status->state = op->state;
    t->latest_status->operation_id = NEW(Meseta__V1__OperationID, meseta__v1__operation_id);
    t->latest_status->operation_id->value = svc_st_str(op->op_id);
  }
  t->uuid.data = ms_xmalloc(sizeof(op->uuid));
  memcpy(t->uuid.data, op->uuid, sizeof(op->uuid));
  t->uuid.len = sizeof(op->uuid);
  return t;
}

int64_t svc_state_emit_role(alloc_service *s, const char *role) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_ROLE_UPDATED;
  c->role_updated = svc_st_role(s, role);
  shown_update(&s->shown_roles, role, &c->role_updated->base);
  return broadcast(s, c);
}

static int64_t emit_role_removed(alloc_service *s, const char *role) {
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_ROLE_REMOVED;
  c->role_removed = NEW(Meseta__V1__StateChange__RoleRemoved, meseta__v1__state_change__role_removed);
  c->role_removed->name = svc_st_str(role);
  return broadcast(s, c);
}

int64_t svc_state_emit_quota(alloc_service *s) {
  s->roles_stale = true; /* a role may have lost its last reason to be shown */
  svc_state_changed(s);
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_QUOTA_CHANGED;
  c->quota_changed = NEW(Meseta__V1__StateChange__QuotaChanged, meseta__v1__state_change__quota_changed);
  c->quota_changed->configs = svc_st_quotas(s, &c->quota_changed->n_configs);
  return broadcast(s, c);
}

int64_t svc_state_emit_weights(alloc_service *s) {
  s->roles_stale = true;
  svc_state_changed(s);
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_WEIGHTS_CHANGED;
  c->weights_changed =
      NEW(Meseta__V1__StateChange__WeightsChanged, meseta__v1__state_change__weights_changed);
  c->weights_changed->weights = svc_st_weights(s, &c->weights_changed->n_weights);
  return broadcast(s, c);
}

int64_t svc_state_emit_maintenance(alloc_service *s) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_MAINTENANCE_SCHEDULE_CHANGED;
  c->maintenance_schedule_changed =
      s->schedule ? svc_st_dup(s->schedule)
                  : NEW(Meseta__V1__MaintenanceSchedule, meseta__v1__maintenance_schedule);
  return broadcast(s, c);
}

int64_t svc_state_emit_down(alloc_service *s) {
  if (!s->watchers)
    return ++s->revision;
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_DOWN_MACHINES_CHANGED;
  c->down_machines_changed =
      s->down ? svc_st_dup(s->down) : NEW(Meseta__V1__DownMachines, meseta__v1__down_machines);
  return broadcast(s, c);
}

/* ---- changes the engine made (offers, allocations) ---- */

static void flush_job(void *arg) {
  alloc_service *s = arg;
  s->flush_posted = false;
  svc_state_flush(s);
}

void svc_state_changed(void *ctx) {
  alloc_service *s = ctx;
  if (s->flush_posted || s->closing)
    return;
  s->flush_posted = true;
  ms_loop_post(s->loop, flush_job, s);
}

/* Role names to look at, each once. */
typedef struct name_set {
  char **v;
  uint32_t n, cap;
  alloc_map map;
} name_set;

static void name_add(name_set *ns, const char *name) {
  if (!*name || alloc_map_get(&ns->map, name) != ALLOC_NONE)
    return;
  if (ns->n == ns->cap) {
    ns->cap = ns->cap ? 2 * ns->cap : 16;
    ns->v = ms_xrealloc(ns->v, ns->cap * sizeof(*ns->v));
  }
  ns->v[ns->n] = ms_xstrdup(name);
  alloc_map_put(&ns->map, ns->v[ns->n], ns->n);
  ns->n++;
}

static void name_set_release(name_set *ns) {
  alloc_map_release(&ns->map);
  for (uint32_t i = 0; i < ns->n; i++)
    free(ns->v[i]);
  free(ns->v);
}

typedef struct flush_ctx {
  alloc_service *s;
  name_set roles;
} flush_ctx;

static void agent_changed(void *ctx, const char *id) {
  flush_ctx *f = ctx;
  if (svc_table_get(&f->s->pending_agents, id))
    return;
  svc_entry *e = ms_xcalloc(1, sizeof(*e));
  e->key = ms_xstrdup(id);
  svc_table_put(&f->s->pending_agents, e);
}

/* Whether every watcher can take more held-back changes now. */
static bool room(alloc_service *s) {
  bool ok = true;
  for (svc_watcher *w = s->watchers; w; w = w->next) {
    if (w->queued < WATCH_BUDGET)
      continue;
    if (!w->full_since_ms)
      w->full_since_ms = svc_now_ms();
    ok = false;
  }
  return ok;
}

/* Watchers that held changes back too long are cut off; the rest goes on. */
static void stall_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  s->stall_timer = 0;
  if (s->closing)
    return;
  int64_t now = svc_now_ms();
  for (svc_watcher **p = &s->watchers; *p;) {
    svc_watcher *w = *p;
    if (w->queued < WATCH_BUDGET || !w->full_since_ms || now - w->full_since_ms < WATCH_STALL_MS) {
      p = &w->next;
      continue;
    }
    ms_log_warn(NULL, "state watcher `%s` cut off: its queue has not drained for %d ms", w->name,
                WATCH_STALL_MS);
    ms_rpc_call_finish(w->call, MS_RESOURCE_EXHAUSTED,
                       "this watcher did not keep up with the state's changes: watch again for a snapshot");
    *p = w->next;
    watcher_free(w);
  }
  svc_state_flush(s);
}

/* Sends pending agents that differ from what was shown, while there is room. */
static void send_pending(alloc_service *s) {
  while (s->pending_agents.n && s->watchers && room(s)) {
    svc_entry *e = s->pending_agents.v[s->pending_agents.n - 1];
    svc_table_del(&s->pending_agents, e);
    svc_agent *a = svc_table_get(&s->agents, e->key);
    if (a) { /* else removed, or not registered here yet: its agent_added is to come */
      Meseta__V1__Agent *m = svc_st_agent(s, a);
      if (shown_update(&s->shown_agents, a->e.key, &m->base)) {
        Meseta__V1__StateChange *c = change_new();
        c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED;
        c->agent_updated = m;
        broadcast(s, c);
      } else { /* e.g. offered and rescinded within one turn */
        protobuf_c_message_free_unpacked(&m->base, NULL);
      }
    }
    free(e->key);
    free(e);
  }
  if (s->pending_agents.n && s->watchers && !s->stall_timer)
    s->stall_timer = ms_loop_add_timer(s->loop, WATCH_STALL_MS / 4, 0, stall_tick, s);
}

/* A role's consumption counts its sub-roles': its ancestors changed too. */
static void role_changed(void *ctx, const char *name) {
  flush_ctx *f = ctx;
  _cleanup_free_ char *n = ms_xstrdup(name);
  for (;;) {
    name_add(&f->roles, n);
    char *slash = strrchr(n, '/');
    if (!slash)
      break;
    *slash = 0;
  }
}

/* Sends the role if it differs from what was shown (absent: never shown). */
static void role_refresh(alloc_service *s, const char *name) {
  Meseta__V1__Role *m = svc_st_role(s, name);
  if (!shown_update(&s->shown_roles, name, &m->base)) {
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return;
  }
  Meseta__V1__StateChange *c = change_new();
  c->change_case = MESETA__V1__STATE_CHANGE__CHANGE_ROLE_UPDATED;
  c->role_updated = m;
  broadcast(s, c);
}

void svc_state_flush(alloc_service *s) {
  if (!s->model)
    return;
  if (!s->watchers || s->closing || !s->leading) {
    /* Nobody to tell: a new watcher's snapshot shows the model as it is. */
    alloc_model_take_changes(s->model, NULL, NULL, NULL);
    entries_clear(&s->pending_agents);
    s->roles_stale = false;
    return;
  }
  flush_ctx f = {.s = s};
  alloc_model_take_changes(s->model, agent_changed, role_changed, &f);
  send_pending(s);
  if (s->roles_stale) {
    /* Every role shown now, and roles no longer shown removed. */
    s->roles_stale = false;
    uint32_t n = 0;
    const char **names = svc_st_role_names(s, &n);
    name_set now = {0};
    for (uint32_t i = 0; i < n; i++) {
      name_add(&now, names[i]);
      role_refresh(s, names[i]);
    }
    free(names);
    for (uint32_t i = 0; i < s->shown_roles.n;) {
      svc_shown *e = (svc_shown *)s->shown_roles.v[i];
      if (alloc_map_get(&now.map, e->e.key) != ALLOC_NONE) {
        i++;
        continue;
      }
      emit_role_removed(s, e->e.key);
      shown_del(&s->shown_roles, e); /* swaps the last into slot i */
    }
    name_set_release(&now);
  } else {
    /* Only roles already shown: a role starts being shown through a framework, a
     * weight or quota, which mark the roles stale. */
    for (uint32_t i = 0; i < f.roles.n; i++)
      if (svc_table_get(&s->shown_roles, f.roles.v[i]))
        role_refresh(s, f.roles.v[i]);
  }
  name_set_release(&f.roles);
}

void svc_state_reset(alloc_service *s) {
  shown_clear(&s->shown_roles);
  shown_clear(&s->shown_agents);
  entries_clear(&s->pending_agents);
  s->roles_stale = false;
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
  /* The watchers there are get what changed first: the snapshot's revision then covers
   * it, and what it shows is what they hold at that revision. */
  svc_state_flush(s);
  bool first = s->watchers == NULL; /* what was shown is then rebuilt from this snapshot */
  if (first) {
    shown_clear(&s->shown_roles);
    shown_clear(&s->shown_agents);
  }
  uint32_t nroles = 0;
  const char **roles = svc_st_role_names(s, &nroles);
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  ev.revision = s->revision;
  Meseta__V1__SnapshotBegin b = MESETA__V1__SNAPSHOT_BEGIN__INIT;
  Meseta__V1__MasterInfo mi = MESETA__V1__MASTER_INFO__INIT;
  mi.id = s->id;
  mi.address = (char *)(s->cfg.advertise_address ? s->cfg.advertise_address : "");
  mi.hostname = (char *)(s->cfg.hostname ? s->cfg.hostname : "");
  b.leader_id = s->id;
  b.master_info = &mi;
  Google__Protobuf__Timestamp *el = svc_st_ts(s->elected_ms);
  b.leader_elected_time = el;
  b.agents = s->agents.n;
  b.frameworks = s->frameworks.n + s->ended_fws.n;
  b.tasks = s->tasks.n + s->ndone;
  b.executors = s->executors.n;
  b.roles = nroles;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN;
  ev.snapshot_begin = &b;
  chunker k = {.w = w, .rev = s->revision, .max = max_chunk, .ok = send(w, &ev)};
  protobuf_c_message_free_unpacked(&el->base, NULL);
  /* The configuration goes into the first chunk. */
  chunk_for(&k, 0);
  k.chunk->quota_configs = svc_st_quotas(s, &k.chunk->n_quota_configs);
  k.chunk->weights = svc_st_weights(s, &k.chunk->n_weights);
  if (s->schedule)
    k.chunk->maintenance_schedule = svc_st_dup(s->schedule);
  if (s->down)
    k.chunk->down_machines = svc_st_dup(s->down);
  k.bytes = protobuf_c_message_get_packed_size(&k.chunk->base);
  for (uint32_t i = 0; i < s->agents.n && k.ok; i++) {
    /* As the other watchers hold it (its change may be held back for them). */
    svc_agent *sa = (svc_agent *)s->agents.v[i];
    svc_shown *sh = first ? NULL : svc_table_get(&s->shown_agents, sa->e.key);
    Meseta__V1__Agent *a = sh ? meseta__v1__agent__unpack(NULL, sh->len, sh->bytes) : NULL;
    if (!a) {
      a = svc_st_agent(s, sa);
      shown_update(&s->shown_agents, sa->e.key, &a->base);
    }
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&a->base));
    APPEND(st->agents, st->n_agents, a);
  }
  for (uint32_t i = 0; i < s->frameworks.n && k.ok; i++) {
    Meseta__V1__Framework *f = svc_st_framework(s, (svc_framework *)s->frameworks.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&f->base));
    APPEND(st->frameworks, st->n_frameworks, f);
  }
  for (const svc_ended_fw *e = s->ended_head; e && k.ok; e = e->next) {
    Meseta__V1__Framework *f = svc_st_dup(e->msg);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&f->base));
    APPEND(st->frameworks, st->n_frameworks, f);
  }
  for (uint32_t i = 0; i < s->tasks.n && k.ok; i++) {
    Meseta__V1__Task *t = svc_st_task((svc_task *)s->tasks.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&t->base));
    APPEND(st->tasks, st->n_tasks, t);
  }
  for (svc_done_task *d = s->done_head; d && k.ok; d = d->next) {
    Meseta__V1__Task *t = (Meseta__V1__Task *)ms_pb_dup(&d->msg->base);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&t->base));
    APPEND(st->tasks, st->n_tasks, t);
  }
  for (uint32_t i = 0; i < s->operations.n && k.ok; i++) {
    Meseta__V1__TrackedOperation *o = build_operation((svc_operation *)s->operations.v[i]);
    Meseta__V1__State *st = chunk_for(&k, protobuf_c_message_get_packed_size(&o->base));
    APPEND(st->operations, st->n_operations, o);
  }
  for (uint32_t i = 0; i < nroles && k.ok; i++) {
    Meseta__V1__Role *r = svc_st_role(s, roles[i]);
    if (first)
      shown_update(&s->shown_roles, roles[i], &r->base);
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
  if (svc_refuse_unless_serving(s, call))
    return;
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

static void drained_job(alloc_service *s, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  (void)data;
  (void)msg;
  for (svc_watcher *w = s->watchers; w; w = w->next) {
    if (w->call == call) {
      w->queued = 0;
      w->full_since_ms = 0;
    }
  }
  if (s->pending_agents.n)
    svc_state_flush(s);
}

void svc_state_watch_drained(ms_rpc_call *call) {
  svc_post(ms_rpc_call_userdata(call), drained_job, call, NULL, NULL);
}

void svc_state_begin_term(alloc_service *s) {
  s->elected_ms = svc_st_wall_ms();
  /* Microseconds of the wall clock: above any predecessor's revision unless it made
   * more than a million changes a second of its term. */
  int64_t base = s->elected_ms * 1000;
  if (base > s->revision)
    s->revision = base;
}

void svc_state_close(alloc_service *s, ms_status code, const char *why) {
  if (s->stall_timer)
    ms_loop_cancel_timer(s->loop, s->stall_timer);
  s->stall_timer = 0;
  while (s->watchers) {
    svc_watcher *w = s->watchers;
    s->watchers = w->next;
    ms_rpc_call_finish(w->call, code, why);
    watcher_free(w);
  }
}
