/* Operator.Subscribe: SUBSCRIBED (the state, in parts when large), then the view's
 * changes as events, and heartbeats. See mapi-events.h for threads and bounds.
 *
 * Order. Every applied revision (and every snapshot swap) bumps the view's `seq`. A
 * subscriber joins the list before its state is read, so the hooks queue every
 * change from then on; once its state is read (at seq S, under the read lock), the
 * queued events of seq <= S are dropped and the state goes in front. Nothing is
 * missed, nothing comes twice.
 *
 * Sending. An event is serialized once into a blob: its oneof member's bytes, with
 * the field number and the revision. Each subscriber sends it as an OperatorEvent
 * whose member is carried as an unknown field (protobuf-c packs unknown fields as
 * they are), so a blob costs one copy per subscriber, not one encoding. */
#include "mapi-events.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/roles.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "mapi-internal.h"

#define DEFAULT_QUEUE_BYTES (8u << 20)
#define DEFAULT_CHUNK_BYTES (1u << 20)
#define DEFAULT_HEARTBEAT_MS 15000
#define MIN_HEARTBEAT_MS 1000
#define MAX_HEARTBEAT_MS 3600000
/* Messages handed to the RPC layer before its queue must drain (on_drain). */
#define WINDOW 16

#define ID(m) ((m) && (m)->value ? (m)->value : "")

/* ---- blobs: one serialized event, shared ---- */

typedef struct blob {
  atomic_int refs;
  int64_t revision;
  uint32_t tag;  /* the OperatorEvent member's field number */
  size_t len;    /* of data */
  uint8_t *data; /* the member's length (varint) and encoding */
  /* What filters look at: the framework of framework-scoped events (NULL: none),
   * the roles of role-scoped ones. */
  char *framework;
  char **roles;
  size_t n_roles;
  bool role_scoped;
  bool state; /* part of a subscriber's SUBSCRIBED: not counted against its queue */
} blob;

static blob *blob_new(uint32_t tag, int64_t revision, const ProtobufCMessage *member) {
  size_t n = protobuf_c_message_get_packed_size(member);
  blob *b = ms_xcalloc(1, sizeof(*b));
  atomic_init(&b->refs, 1);
  b->tag = tag;
  b->revision = revision;
  b->data = ms_xmalloc(n + 10);
  size_t k = 0;
  for (uint64_t v = n;; v >>= 7) {
    b->data[k++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    if (v < 0x80)
      break;
  }
  protobuf_c_message_pack(member, b->data + k);
  b->len = k + n;
  return b;
}

static void blob_unref(blob *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
    return;
  free(b->data);
  free(b->framework);
  for (size_t i = 0; i < b->n_roles; i++)
    free(b->roles[i]);
  free(b->roles);
  free(b);
}

static void blob_add_role(blob *b, const char *role) {
  b->roles = ms_xrealloc(b->roles, (b->n_roles + 1) * sizeof(*b->roles));
  b->roles[b->n_roles++] = ms_xstrdup(role);
  b->role_scoped = true;
}

/* Framework-scoped: its id, and its roles (a framework with none is in "*"). */
static void blob_scope_framework(blob *b, const char *fw, const Meseta__V1__FrameworkInfo *info) {
  if (!fw || !*fw)
    return;
  b->framework = ms_xstrdup(fw);
  if (!info)
    return;
  if (!info->n_roles)
    blob_add_role(b, "*");
  for (size_t i = 0; i < info->n_roles; i++)
    blob_add_role(b, info->roles[i]);
}

/* ---- subscribers ---- */

typedef struct qnode {
  blob *b;
  uint64_t seq;
  struct qnode *next;
} qnode;

typedef struct sub {
  ms_rpc_call *call; /* valid while in the list (until on_done) */
  char **frameworks; /* filters; empty: all */
  size_t n_frameworks;
  char **roles;
  size_t n_roles;
  int64_t heartbeat_ms, next_heartbeat;
  bool live;     /* its state is queued; events flow */
  bool building; /* the events thread reads its state (outside the lock) */
  bool ended;    /* finished (cut, shutdown, failed send) */
  bool gone;     /* on_done came while building: the builder frees it */
  int64_t state_revision;
  qnode *head, *tail;
  size_t bytes; /* counted bytes waiting in the queue */
  size_t in_rpc;
  int64_t last_revision; /* of the last event handed to the call */
  struct sub *next;
} sub;

struct mapi_events {
  mapi_view *view;
  mapi_events_config cfg;
  pthread_mutex_t mu;
  pthread_cond_t cond; /* a subscriber to build, or stopping */
  sub *subs;
  bool stopping;
  int64_t published; /* the revision of the last change hook */
  /* The seq of the last revision no events were made for (nobody had subscribed
   * when it came; set before it is applied): a state read below it is read again. */
  uint64_t skipped;
  pthread_t thread;
};

static void strv_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static void queue_drop(sub *u) {
  while (u->head) {
    qnode *q = u->head;
    u->head = q->next;
    blob_unref(q->b);
    free(q);
  }
  u->tail = NULL;
  u->bytes = 0;
}

static void sub_free(sub *u) {
  queue_drop(u);
  strv_free(u->frameworks, u->n_frameworks);
  strv_free(u->roles, u->n_roles);
  free(u);
}

static bool in_list(char *const *v, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i], s) == 0)
      return true;
  return false;
}

static bool roles_match(const sub *u, char *const *roles, size_t n) {
  if (!u->n_roles)
    return true;
  for (size_t i = 0; i < n; i++)
    if (in_list(u->roles, u->n_roles, roles[i]))
      return true;
  return false;
}

static bool wants(const sub *u, const blob *b) {
  if (b->framework && u->n_frameworks && !in_list(u->frameworks, u->n_frameworks, b->framework))
    return false;
  return !b->role_scoped || roles_match(u, b->roles, b->n_roles);
}

/* Ends u's stream (lock held): what the call has queued goes first. */
static void sub_end(sub *u, ms_status code, const char *msg) {
  if (u->ended)
    return;
  u->ended = true;
  queue_drop(u);
  ms_rpc_call_finish(u->call, code, msg);
}

/* Hands queued events to the call, up to the window (lock held). */
static void pump(sub *u) {
  while (u->live && !u->ended && u->head && u->in_rpc < WINDOW) {
    qnode *q = u->head;
    u->head = q->next;
    if (!u->head)
      u->tail = NULL;
    blob *b = q->b;
    free(q);
    if (!b->state)
      u->bytes -= b->len;
    ProtobufCMessageUnknownField uf = {
        .tag = b->tag, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, .len = b->len, .data = b->data};
    Meseta__V1__OperatorEvent ev = MESETA__V1__OPERATOR_EVENT__INIT;
    ev.revision = b->revision;
    ev.base.n_unknown_fields = 1;
    ev.base.unknown_fields = &uf;
    ms_error *err = NULL;
    int rc = ms_rpc_call_send(u->call, &ev.base, &err);
    int64_t rev = b->revision;
    blob_unref(b);
    if (rc < 0) {
      /* The caller left (CANCELLED), or an event above the message size limit. */
      ms_log_debug(NULL, "Operator.Subscribe: %s", err->msg);
      sub_end(u, err->code, err->msg);
      ms_error_free(err);
      return;
    }
    u->in_rpc++;
    u->last_revision = rev;
  }
}

/* Queues b on u if u wants it (lock held). */
static void enqueue(sub *u, blob *b, uint64_t seq) {
  if (u->ended || !wants(u, b))
    return;
  qnode *q = ms_xmalloc(sizeof(*q));
  *q = (qnode){.b = b, .seq = seq};
  atomic_fetch_add(&b->refs, 1);
  if (u->tail)
    u->tail->next = q;
  else
    u->head = q;
  u->tail = q;
  if (!b->state)
    u->bytes += b->len;
}

/* Sends what the window allows, then cuts u if what still waits is over the bound
 * (lock held). */
static void settle(mapi_events *e, sub *u) {
  pump(u);
  if (u->ended || u->bytes <= e->cfg.queue_bytes)
    return;
  int64_t at = u->live ? u->last_revision : e->published;
  _cleanup_free_ char *msg = ms_xasprintf("subscriber fell behind at revision %" PRId64
                                          " (more than %zu bytes of events waiting); re-subscribe",
                                          at, e->cfg.queue_bytes);
  ms_log_warn(NULL, "Operator.Subscribe from %s cut: %s", ms_rpc_call_peer(u->call), msg);
  sub_end(u, MS_RESOURCE_EXHAUSTED, msg);
}

/* ---- events from changes ---- */

typedef struct batch {
  blob **v;
  size_t n;
} batch;

static void batch_add(batch *bt, blob *b) {
  if (!b)
    return;
  bt->v = ms_xrealloc(bt->v, (bt->n + 1) * sizeof(*bt->v));
  bt->v[bt->n++] = b;
}

static void batch_free(batch *bt) {
  for (size_t i = 0; i < bt->n; i++)
    blob_unref(bt->v[i]);
  free(bt->v);
}

static const Meseta__V1__FrameworkInfo *framework_info(const mapi_state *st, const char *fw) {
  const Meseta__V1__Framework *f = (const void *)mapi_coll_get(&st->frameworks, fw);
  return f ? f->framework_info : NULL;
}

static blob *agent_event(uint32_t tag, int64_t rev, Meseta__V1__Agent *a) {
  if (tag == MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_ADDED) {
    Meseta__V1__OperatorEvent__AgentAdded m = MESETA__V1__OPERATOR_EVENT__AGENT_ADDED__INIT;
    m.agent = a;
    return blob_new(tag, rev, &m.base);
  }
  Meseta__V1__OperatorEvent__AgentUpdated m = MESETA__V1__OPERATOR_EVENT__AGENT_UPDATED__INIT;
  m.agent = a;
  return blob_new(tag, rev, &m.base);
}

static blob *agent_removed(int64_t rev, Meseta__V1__AgentID *id) {
  Meseta__V1__OperatorEvent__AgentRemoved m = MESETA__V1__OPERATOR_EVENT__AGENT_REMOVED__INIT;
  m.agent_id = id;
  return blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_REMOVED, rev, &m.base);
}

static blob *framework_event(uint32_t tag, int64_t rev, Meseta__V1__Framework *f) {
  blob *b;
  if (tag == MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_ADDED) {
    Meseta__V1__OperatorEvent__FrameworkAdded m = MESETA__V1__OPERATOR_EVENT__FRAMEWORK_ADDED__INIT;
    m.framework = f;
    b = blob_new(tag, rev, &m.base);
  } else {
    Meseta__V1__OperatorEvent__FrameworkUpdated m = MESETA__V1__OPERATOR_EVENT__FRAMEWORK_UPDATED__INIT;
    m.framework = f;
    b = blob_new(tag, rev, &m.base);
  }
  blob_scope_framework(b, f->framework_info ? ID(f->framework_info->id) : NULL, f->framework_info);
  return b;
}

static bool framework_ended(const ProtobufCMessage *m) {
  return m && ((const Meseta__V1__Framework *)m)->unregistered_time;
}

/* A framework that ended is updated to completed (kept for GetFrameworks include_completed):
 * operators get FRAMEWORK_REMOVED then, as Mesos sends it at teardown, and nothing when the
 * completed framework is later dropped from memory. */
static blob *framework_gone(int64_t rev, Meseta__V1__FrameworkInfo *info) {
  Meseta__V1__OperatorEvent__FrameworkRemoved m = MESETA__V1__OPERATOR_EVENT__FRAMEWORK_REMOVED__INIT;
  m.framework_info = info;
  blob *b = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_REMOVED, rev, &m.base);
  blob_scope_framework(b, info ? ID(info->id) : NULL, info);
  return b;
}

static blob *framework_updated(int64_t rev, const mapi_state *st, Meseta__V1__Framework *f) {
  if (!f->unregistered_time)
    return framework_event(MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_UPDATED, rev, f);
  const char *id = f->framework_info ? ID(f->framework_info->id) : "";
  return framework_ended(mapi_coll_get(&st->frameworks, id)) ? NULL : framework_gone(rev, f->framework_info);
}

static blob *framework_removed(int64_t rev, const mapi_state *st, Meseta__V1__FrameworkID *id) {
  if (framework_ended(mapi_coll_get(&st->frameworks, ID(id))))
    return NULL; /* a completed framework dropped from memory */
  Meseta__V1__FrameworkInfo bare = MESETA__V1__FRAMEWORK_INFO__INIT;
  bare.id = id;
  const Meseta__V1__FrameworkInfo *info = framework_info(st, ID(id));
  return framework_gone(rev, info ? (Meseta__V1__FrameworkInfo *)info : &bare);
}

static blob *task_event(uint32_t tag, int64_t rev, const mapi_state *st, Meseta__V1__Task *t) {
  blob *b;
  if (tag == MESETA__V1__OPERATOR_EVENT__EVENT_TASK_ADDED) {
    Meseta__V1__OperatorEvent__TaskAdded m = MESETA__V1__OPERATOR_EVENT__TASK_ADDED__INIT;
    m.task = t;
    b = blob_new(tag, rev, &m.base);
  } else {
    /* Mesos' fields, plus the whole task. The latest status is the last of its
     * history; without one, a status made of what the task says. */
    Meseta__V1__TaskStatus made = MESETA__V1__TASK_STATUS__INIT;
    made.task_id = t->task_id;
    made.state = t->state;
    made.agent_id = t->agent_id;
    made.executor_id = t->executor_id;
    made.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_MASTER;
    Meseta__V1__OperatorEvent__TaskUpdated m = MESETA__V1__OPERATOR_EVENT__TASK_UPDATED__INIT;
    m.framework_id = t->framework_id;
    m.status = t->n_statuses ? t->statuses[t->n_statuses - 1] : &made;
    m.state = t->state;
    m.task = t;
    b = blob_new(tag, rev, &m.base);
  }
  blob_scope_framework(b, ID(t->framework_id), framework_info(st, ID(t->framework_id)));
  return b;
}

static blob *operation_event(int64_t rev, const mapi_state *st, Meseta__V1__TrackedOperation *o) {
  Meseta__V1__OperatorEvent__OperationUpdated m = MESETA__V1__OPERATOR_EVENT__OPERATION_UPDATED__INIT;
  m.framework_id =
      o->framework_id && o->framework_id->value && *o->framework_id->value ? o->framework_id : NULL;
  m.status = o->latest_status;
  m.operation = o;
  blob *b = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_OPERATION_UPDATED, rev, &m.base);
  if (m.framework_id)
    blob_scope_framework(b, ID(o->framework_id), framework_info(st, ID(o->framework_id)));
  return b;
}

static blob *role_event(int64_t rev, Meseta__V1__Role *r) {
  Meseta__V1__OperatorEvent__RoleUpdated m = MESETA__V1__OPERATOR_EVENT__ROLE_UPDATED__INIT;
  m.role = r;
  blob *b = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_ROLE_UPDATED, rev, &m.base);
  blob_add_role(b, r->name ? r->name : "");
  return b;
}

static blob *role_removed(int64_t rev, char *name) {
  Meseta__V1__OperatorEvent__RoleRemoved m = MESETA__V1__OPERATOR_EVENT__ROLE_REMOVED__INIT;
  m.name = name;
  blob *b = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_ROLE_REMOVED, rev, &m.base);
  blob_add_role(b, name ? name : "");
  return b;
}

static blob *quota_event(int64_t rev, Meseta__V1__QuotaConfig **v, size_t n) {
  Meseta__V1__OperatorEvent__QuotaUpdated m = MESETA__V1__OPERATOR_EVENT__QUOTA_UPDATED__INIT;
  m.configs = v;
  m.n_configs = n;
  return blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_QUOTA_UPDATED, rev, &m.base);
}

static blob *weights_event(int64_t rev, Meseta__V1__WeightInfo **v, size_t n) {
  Meseta__V1__OperatorEvent__WeightsUpdated m = MESETA__V1__OPERATOR_EVENT__WEIGHTS_UPDATED__INIT;
  m.weights = v;
  m.n_weights = n;
  return blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_WEIGHTS_UPDATED, rev, &m.base);
}

/* The event of one change, or NULL for changes operators get no event for
 * (executors, offers, tasks and operations dropped from memory, maintenance). */
static blob *change_event(const mapi_state *st, const Meseta__V1__StateChange *c, int64_t rev) {
  switch (c->change_case) {
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_ADDED:
    return agent_event(MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_ADDED, rev, c->agent_added);
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED:
    return agent_event(MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_UPDATED, rev, c->agent_updated);
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_REMOVED:
    return agent_removed(rev, c->agent_removed->agent_id);
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_ADDED:
    return framework_event(MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_ADDED, rev, c->framework_added);
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_UPDATED:
    return framework_updated(rev, st, c->framework_updated);
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_REMOVED:
    return framework_removed(rev, st, c->framework_removed->framework_id);
  case MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED:
    return task_event(MESETA__V1__OPERATOR_EVENT__EVENT_TASK_ADDED, rev, st, c->task_added);
  case MESETA__V1__STATE_CHANGE__CHANGE_TASK_UPDATED:
    return task_event(MESETA__V1__OPERATOR_EVENT__EVENT_TASK_UPDATED, rev, st, c->task_updated);
  case MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_UPDATED:
    return operation_event(rev, st, c->operation_updated);
  case MESETA__V1__STATE_CHANGE__CHANGE_ROLE_UPDATED:
    return role_event(rev, c->role_updated);
  case MESETA__V1__STATE_CHANGE__CHANGE_ROLE_REMOVED:
    return role_removed(rev, c->role_removed->name);
  case MESETA__V1__STATE_CHANGE__CHANGE_QUOTA_CHANGED:
    return quota_event(rev, c->quota_changed->configs, c->quota_changed->n_configs);
  case MESETA__V1__STATE_CHANGE__CHANGE_WEIGHTS_CHANGED:
    return weights_event(rev, c->weights_changed->weights, c->weights_changed->n_weights);
  default:
    return NULL;
  }
}

/* Queues a batch on every subscriber (lock taken here). */
static void publish(mapi_events *e, batch *bt, int64_t revision, uint64_t seq) {
  pthread_mutex_lock(&e->mu);
  if (revision > e->published)
    e->published = revision;
  for (sub *u = e->subs; u; u = u->next) {
    for (size_t i = 0; i < bt->n && !u->ended; i++) {
      enqueue(u, bt->v[i], seq);
      settle(e, u);
    }
  }
  pthread_mutex_unlock(&e->mu);
}

static bool anyone(mapi_events *e) {
  pthread_mutex_lock(&e->mu);
  bool any = e->subs != NULL;
  pthread_mutex_unlock(&e->mu);
  return any;
}

static void *before_changes(void *arg, const mapi_state *st, Meseta__V1__StateEvent *const *evs, size_t n) {
  mapi_events *e = arg;
  pthread_mutex_lock(&e->mu);
  bool any = e->subs != NULL;
  if (!any) /* a subscriber joining now and reading the state before them reads again */
    e->skipped = st->seq + 1;
  pthread_mutex_unlock(&e->mu);
  if (!any)
    return NULL;
  batch *bt = ms_xcalloc(1, sizeof(*bt));
  for (size_t i = 0; i < n; i++)
    if (evs[i]->change)
      batch_add(bt, change_event(st, evs[i]->change, evs[i]->revision));
  return bt;
}

static void after_changes(void *arg, void *prepared, const mapi_state *st) {
  mapi_events *e = arg;
  batch *bt = prepared;
  if (!bt) {
    pthread_mutex_lock(&e->mu);
    e->published = st->revision;
    pthread_mutex_unlock(&e->mu);
    return;
  }
  publish(e, bt, st->revision, st->seq);
  batch_free(bt);
  free(bt);
}

/* ---- a snapshot swap: the differences as events ---- */

static bool same(const ProtobufCMessage *a, const ProtobufCMessage *b) {
  size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
  if (na != nb)
    return false;
  _cleanup_free_ uint8_t *pa = ms_pb_pack(a, &na), *pb = ms_pb_pack(b, &nb);
  return memcmp(pa, pb, na) == 0;
}

typedef blob *(*diff_fn)(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev);

/* Walks two collections in key order; fn gets (was, is) with either NULL. */
static void diff_coll(batch *bt, const mapi_state *now, const mapi_coll *a, const mapi_coll *b, diff_fn fn) {
  size_t i = 0, k = 0;
  while (i < a->n || k < b->n) {
    int cmp = i == a->n ? 1 : k == b->n ? -1 : strcmp(a->keys[i], b->keys[k]);
    if (cmp < 0) {
      batch_add(bt, fn(now, a->items[i++], NULL, now->revision));
    } else if (cmp > 0) {
      batch_add(bt, fn(now, NULL, b->items[k++], now->revision));
    } else {
      if (!same(a->items[i], b->items[k]))
        batch_add(bt, fn(now, a->items[i], b->items[k], now->revision));
      i++, k++;
    }
  }
}

static blob *diff_agent(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev) {
  (void)now;
  if (!is) {
    Meseta__V1__Agent *a = (void *)was;
    return agent_removed(rev, a->agent_info ? a->agent_info->id : NULL);
  }
  return agent_event(was ? MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_UPDATED
                         : MESETA__V1__OPERATOR_EVENT__EVENT_AGENT_ADDED,
                     rev, (void *)is);
}

static blob *diff_framework(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev) {
  (void)now;
  if (framework_ended(was) || (!was && framework_ended(is)))
    return NULL; /* seen ended already, or never seen live */
  if (!is || framework_ended(is))
    return framework_gone(rev, ((Meseta__V1__Framework *)(is ? is : was))->framework_info);
  return framework_event(was ? MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_UPDATED
                             : MESETA__V1__OPERATOR_EVENT__EVENT_FRAMEWORK_ADDED,
                         rev, (void *)is);
}

static blob *diff_task(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev) {
  if (!is)
    return NULL; /* dropped from memory: no event (as for changes) */
  return task_event(was ? MESETA__V1__OPERATOR_EVENT__EVENT_TASK_UPDATED
                        : MESETA__V1__OPERATOR_EVENT__EVENT_TASK_ADDED,
                    rev, now, (void *)is);
}

static blob *diff_operation(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev) {
  (void)was;
  return is ? operation_event(rev, now, (void *)is) : NULL;
}

static blob *diff_role(const mapi_state *now, ProtobufCMessage *was, ProtobufCMessage *is, int64_t rev) {
  (void)now;
  return is ? role_event(rev, (void *)is) : role_removed(rev, ((Meseta__V1__Role *)was)->name);
}

/* Whole lists (quota, weights): equal when every item is. */
static bool same_coll(const mapi_coll *a, const mapi_coll *b) {
  if (a->n != b->n)
    return false;
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->keys[i], b->keys[i]) || !same(a->items[i], b->items[i]))
      return false;
  return true;
}

static void after_swap(void *arg, const mapi_state *old, const mapi_state *now) {
  mapi_events *e = arg;
  if (!old || !anyone(e)) {
    pthread_mutex_lock(&e->mu);
    e->published = now->revision; /* a subscriber joining now reads `now` */
    pthread_mutex_unlock(&e->mu);
    return;
  }
  int64_t t0 = ms_time_mono_ms();
  batch bt = {0};
  diff_coll(&bt, now, &old->agents, &now->agents, diff_agent);
  diff_coll(&bt, now, &old->frameworks, &now->frameworks, diff_framework);
  diff_coll(&bt, now, &old->tasks, &now->tasks, diff_task);
  diff_coll(&bt, now, &old->operations, &now->operations, diff_operation);
  diff_coll(&bt, now, &old->roles, &now->roles, diff_role);
  if (!same_coll(&old->quota, &now->quota))
    batch_add(&bt, quota_event(now->revision, (Meseta__V1__QuotaConfig **)now->quota.items, now->quota.n));
  if (!same_coll(&old->weights, &now->weights))
    batch_add(&bt,
              weights_event(now->revision, (Meseta__V1__WeightInfo **)now->weights.items, now->weights.n));
  ms_log_info(NULL,
              "Operator.Subscribe: view re-synchronised at revision %" PRId64 ": %zu events (%" PRId64 " ms)",
              now->revision, bt.n, ms_time_mono_ms() - t0);
  publish(e, &bt, now->revision, now->seq);
  batch_free(&bt);
}

static const mapi_view_hooks hooks = {
    .before_changes = before_changes, .after_changes = after_changes, .after_swap = after_swap};

/* ---- a subscriber's state ---- */

typedef struct part {
  Meseta__V1__State st;
  size_t bytes;
} part;

typedef struct parts {
  part *v;
  size_t n, max;
} parts;

/* The part an item of `size` bytes goes into: a new one when it would overflow. */
static Meseta__V1__State *part_for(parts *p, size_t size) {
  if (!p->n || (p->v[p->n - 1].bytes && p->v[p->n - 1].bytes + size > p->max)) {
    p->v = ms_xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
    p->v[p->n] = (part){.st = MESETA__V1__STATE__INIT};
    p->n++;
  }
  p->v[p->n - 1].bytes += size + 6;
  return &p->v[p->n - 1].st;
}

#define PART_ADD(p, field, item)                                                                             \
  do {                                                                                                       \
    Meseta__V1__State *s_ = part_for((p), protobuf_c_message_get_packed_size(&(item)->base));                \
    s_->field = ms_xrealloc(s_->field, (s_->n_##field + 1) * sizeof(*s_->field));                            \
    s_->field[s_->n_##field++] = (item);                                                                     \
  } while (0)

static bool framework_ok(const sub *u, const mapi_state *st, const char *fw) {
  if (u->n_frameworks && !in_list(u->frameworks, u->n_frameworks, fw))
    return false;
  if (!u->n_roles)
    return true;
  const Meseta__V1__FrameworkInfo *info = framework_info(st, fw);
  if (!info)
    return false;
  if (!info->n_roles)
    return in_list(u->roles, u->n_roles, "*");
  return roles_match(u, info->roles, info->n_roles);
}

/* u's SUBSCRIBED and STATE_CHUNK blobs from st (read lock held). */
static blob **state_blobs(mapi_events *e, const sub *u, const mapi_state *st, size_t *ret_n) {
  parts p = {.max = e->cfg.chunk_bytes};
  part_for(&p, 0); /* SUBSCRIBED, even for an empty state */
  for (size_t i = 0; i < st->agents.n; i++)
    PART_ADD(&p, agents, (Meseta__V1__Agent *)st->agents.items[i]);
  for (size_t i = 0; i < st->frameworks.n; i++) {
    Meseta__V1__Framework *f = (void *)st->frameworks.items[i];
    if (framework_ok(u, st, st->frameworks.keys[i]))
      PART_ADD(&p, frameworks, f);
  }
  for (size_t i = 0; i < st->tasks.n; i++) {
    Meseta__V1__Task *t = (void *)st->tasks.items[i];
    if (framework_ok(u, st, ID(t->framework_id)))
      PART_ADD(&p, tasks, t);
  }
  for (size_t i = 0; i < st->executors.n; i++) {
    Meseta__V1__ExecutorState *x = (void *)st->executors.items[i];
    if (framework_ok(u, st, x->executor_info ? ID(x->executor_info->framework_id) : ""))
      PART_ADD(&p, executors, x);
  }
  for (size_t i = 0; i < st->operations.n; i++) {
    Meseta__V1__TrackedOperation *o = (void *)st->operations.items[i];
    const char *fw = ID(o->framework_id);
    if (!*fw || framework_ok(u, st, fw)) /* an operator's operations are no framework's */
      PART_ADD(&p, operations, o);
  }
  for (size_t i = 0; i < st->roles.n; i++) {
    Meseta__V1__Role *r = (void *)st->roles.items[i];
    if (!u->n_roles || in_list(u->roles, u->n_roles, r->name))
      PART_ADD(&p, roles, r);
  }
  blob **out = ms_xcalloc(p.n, sizeof(*out));
  Google__Protobuf__Duration hb = GOOGLE__PROTOBUF__DURATION__INIT;
  hb.seconds = u->heartbeat_ms / 1000;
  hb.nanos = (int32_t)(u->heartbeat_ms % 1000) * 1000000;
  for (size_t i = 0; i < p.n; i++) {
    Meseta__V1__State *s = &p.v[i].st;
    if (i == 0) {
      Meseta__V1__OperatorEvent__Subscribed m = MESETA__V1__OPERATOR_EVENT__SUBSCRIBED__INIT;
      m.state = s;
      m.heartbeat_interval = &hb;
      m.chunks_following = (uint32_t)(p.n - 1);
      out[i] = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_SUBSCRIBED, st->revision, &m.base);
    } else {
      Meseta__V1__OperatorEvent__StateChunk m = MESETA__V1__OPERATOR_EVENT__STATE_CHUNK__INIT;
      m.state = s;
      out[i] = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_STATE_CHUNK, st->revision, &m.base);
    }
    out[i]->state = true;
    free(s->agents);
    free(s->frameworks);
    free(s->tasks);
    free(s->executors);
    free(s->operations);
    free(s->roles);
  }
  *ret_n = p.n;
  free(p.v);
  return out;
}

/* Reads u's state and puts it in front of its queue (lock held on entry and exit;
 * released meanwhile). */
static void build(mapi_events *e, sub *u) {
  u->building = true;
  pthread_mutex_unlock(&e->mu);
  size_t n = 0;
  blob **v = NULL;
  uint64_t seq = 0;
  int64_t rev = 0;
  const mapi_state *st = mapi_view_rdlock(e->view); /* never NULL again once it was not */
  if (st) {
    seq = st->seq;
    rev = st->revision;
    v = state_blobs(e, u, st, &n);
    mapi_view_unlock(e->view);
  }
  pthread_mutex_lock(&e->mu);
  u->building = false;
  if (st && !u->gone && !u->ended && e->skipped > seq) {
    /* Read before a revision made without events was applied: read again (none is
     * skipped while u is in the list, so this ends). */
    for (size_t i = 0; i < n; i++)
      blob_unref(v[i]);
    free(v);
    return; /* still not live: the events thread comes back to it */
  }
  if (u->gone) {
    sub_free(u);
  } else if (!u->ended && !st) {
    sub_end(u, MS_UNAVAILABLE, "no view of the cluster yet; retry");
  } else if (!u->ended) {
    /* Drop what the state already holds; the state goes first. */
    qnode *keep = NULL, **tail = &keep;
    u->bytes = 0;
    while (u->head) {
      qnode *q = u->head;
      u->head = q->next;
      if (q->seq <= seq) {
        blob_unref(q->b);
        free(q);
        continue;
      }
      if (!q->b->state)
        u->bytes += q->b->len;
      q->next = NULL;
      *tail = q;
      tail = &q->next;
    }
    u->head = u->tail = NULL;
    for (size_t i = 0; i < n; i++) {
      qnode *q = ms_xmalloc(sizeof(*q));
      *q = (qnode){.b = TAKE_PTR(v[i]), .seq = seq};
      if (u->tail)
        u->tail->next = q;
      else
        u->head = q;
      u->tail = q;
    }
    if (keep) {
      if (u->tail)
        u->tail->next = keep;
      else
        u->head = keep;
      u->tail = keep;
      while (u->tail->next)
        u->tail = u->tail->next;
    }
    u->state_revision = rev;
    u->live = true;
    u->next_heartbeat = ms_time_mono_ms() + u->heartbeat_ms;
    ms_log_debug(NULL, "Operator.Subscribe from %s: state at revision %" PRId64 " in %zu parts",
                 ms_rpc_call_peer(u->call), rev, n);
    settle(e, u);
  }
  for (size_t i = 0; i < n; i++)
    blob_unref(v[i]);
  free(v);
}

/* ---- the events thread: states to read, heartbeats ---- */

static void heartbeat(mapi_events *e, sub *u) {
  Meseta__V1__OperatorEvent__Heartbeat m = MESETA__V1__OPERATOR_EVENT__HEARTBEAT__INIT;
  int64_t rev = e->published > u->state_revision ? e->published : u->state_revision;
  blob *b = blob_new(MESETA__V1__OPERATOR_EVENT__EVENT_HEARTBEAT, rev, &m.base);
  enqueue(u, b, UINT64_MAX);
  blob_unref(b);
  settle(e, u);
}

static void *events_main(void *arg) {
  mapi_events *e = arg;
  pthread_mutex_lock(&e->mu);
  while (!e->stopping) {
    sub *todo = NULL;
    int64_t now = ms_time_mono_ms(), next = now + 1000;
    for (sub *u = e->subs; u; u = u->next) {
      if (u->ended)
        continue;
      if (!u->live && !u->building) {
        todo = u;
        break;
      }
      if (u->live && now >= u->next_heartbeat) {
        heartbeat(e, u);
        u->next_heartbeat = now + u->heartbeat_ms;
      }
      if (u->live && u->next_heartbeat < next)
        next = u->next_heartbeat;
    }
    if (todo) {
      build(e, todo);
      continue;
    }
    struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000};
    pthread_cond_timedwait(&e->cond, &e->mu, &ts); /* the condition's clock is monotonic */
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* ---- lifetime ---- */

mapi_events *mapi_events_new(mapi_view *view, const mapi_events_config *cfg) {
  mapi_events *e = ms_xcalloc(1, sizeof(*e));
  e->view = view;
  e->cfg = *cfg;
  if (!e->cfg.queue_bytes)
    e->cfg.queue_bytes = DEFAULT_QUEUE_BYTES;
  if (!e->cfg.chunk_bytes)
    e->cfg.chunk_bytes = DEFAULT_CHUNK_BYTES;
  if (e->cfg.heartbeat_ms <= 0)
    e->cfg.heartbeat_ms = DEFAULT_HEARTBEAT_MS;
  pthread_mutex_init(&e->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&e->cond, &ca);
  pthread_condattr_destroy(&ca);
  int rc = pthread_create(&e->thread, NULL, events_main, e);
  if (rc != 0) {
    ms_log_error(NULL, "starting the events thread: %s", strerror(rc));
    abort(); /* as an allocation failure: threads are what this process is made of */
  }
  mapi_view_set_hooks(view, &hooks, e);
  return e;
}

void mapi_events_close(mapi_events *e) {
  if (!e)
    return;
  pthread_mutex_lock(&e->mu);
  bool was = e->stopping;
  e->stopping = true;
  for (sub *u = e->subs; u; u = u->next)
    sub_end(u, MS_UNAVAILABLE, "master-api is shutting down; subscribe again");
  pthread_cond_broadcast(&e->cond);
  pthread_mutex_unlock(&e->mu);
  if (!was)
    pthread_join(e->thread, NULL);
}

void mapi_events_free(mapi_events *e) {
  if (!e)
    return;
  mapi_events_close(e);
  mapi_view_set_hooks(e->view, NULL, NULL);
  while (e->subs) { /* only when the server never ran its calls to their end */
    sub *u = e->subs;
    e->subs = u->next;
    sub_free(u);
  }
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cond);
  free(e);
}

/* ---- the handlers ---- */

static int64_t duration_ms(const Google__Protobuf__Duration *d) {
  return d->seconds * 1000 + d->nanos / 1000000;
}

int mapi_events_subscribe(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  mapi_events *e = s->events;
  if (mapi_check_request(req, err) < 0)
    return MS_ERR;
  if (mapi_read_auth(s, call, err) < 0) /* as every read: a bad token, or anonymous with --require-auth */
    return MS_ERR;
  const Meseta__V1__SubscribeOperatorRequest *r = (const void *)req;
  for (size_t i = 0; i < r->n_framework_ids; i++)
    if (!r->framework_ids[i] || !*ID(r->framework_ids[i]))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "framework_ids[%zu].value: required", i);
  for (size_t i = 0; i < r->n_roles; i++)
    if (ms_role_validate(r->roles[i], err) < 0)
      return ms_error_prefix(err, "roles[%zu]", i);
  int64_t hb = e->cfg.heartbeat_ms;
  if (r->heartbeat_interval) {
    hb = duration_ms(r->heartbeat_interval);
    if (hb < MIN_HEARTBEAT_MS || hb > MAX_HEARTBEAT_MS)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "heartbeat_interval: %" PRId64 " ms is outside 1s..1h",
                          hb);
  }
  if (!mapi_view_rdlock(s->view))
    return ms_error_set(err, MS_UNAVAILABLE,
                        "no view of the cluster yet: the allocator was not reached; retry");
  mapi_view_unlock(s->view);
  sub *u = ms_xcalloc(1, sizeof(*u));
  u->call = call;
  u->heartbeat_ms = hb;
  u->frameworks = ms_xcalloc(r->n_framework_ids + 1, sizeof(char *));
  for (size_t i = 0; i < r->n_framework_ids; i++)
    u->frameworks[u->n_frameworks++] = ms_xstrdup(ID(r->framework_ids[i]));
  u->roles = ms_xcalloc(r->n_roles + 1, sizeof(char *));
  for (size_t i = 0; i < r->n_roles; i++)
    u->roles[u->n_roles++] = ms_xstrdup(r->roles[i]);
  pthread_mutex_lock(&e->mu);
  if (e->stopping) {
    pthread_mutex_unlock(&e->mu);
    sub_free(u);
    return ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
  }
  u->next = e->subs;
  e->subs = u;
  ms_rpc_call_set_data(call, u);
  pthread_cond_broadcast(&e->cond); /* the events thread reads its state */
  pthread_mutex_unlock(&e->mu);
  return 0;
}

void mapi_events_drain(ms_rpc_call *call) {
  mapi_service *s = ms_rpc_call_userdata(call);
  mapi_events *e = s->events;
  pthread_mutex_lock(&e->mu);
  sub *u = ms_rpc_call_data(call);
  if (u) {
    u->in_rpc = 0;
    pump(u);
  }
  pthread_mutex_unlock(&e->mu);
}

void mapi_events_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  mapi_service *s = ms_rpc_call_userdata(call);
  mapi_events *e = s->events;
  pthread_mutex_lock(&e->mu);
  sub *u = ms_rpc_call_data(call);
  ms_rpc_call_set_data(call, NULL);
  if (u) {
    for (sub **p = &e->subs; *p; p = &(*p)->next)
      if (*p == u) {
        *p = u->next;
        break;
      }
    u->ended = true;
    if (u->building)
      u->gone = true;
    else
      sub_free(u);
  }
  pthread_mutex_unlock(&e->mu);
}
