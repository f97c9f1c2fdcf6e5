/* The read view: sorted collections, snapshot swap, changes by revision. */
#include "mapi-view.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/hex.h"
#include "meseta/log.h"

struct mapi_view {
  pthread_rwlock_t lock;
  mapi_state *live; /* NULL until the first snapshot; under lock */
  atomic_bool current;
  atomic_int_fast64_t revision;
  /* The writer's own, no lock: a snapshot being built, changes of a revision not
   * complete yet. */
  mapi_state *building;
  Meseta__V1__StateEvent **pending;
  size_t n_pending, cap_pending;
  const mapi_view_hooks *hooks;
  void *hooks_arg;
  /* GetState's State at state_seq (mapi_view_state_bytes); NULL: none. Under
   * cache_mu, which readers take inside the read lock. */
  pthread_mutex_t cache_mu;
  mapi_bytes *state;
  uint64_t state_seq;
};

/* ---- collections ---- */

static size_t coll_find(const mapi_coll *c, const char *key, bool *found) {
  size_t lo = 0, hi = c->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(c->keys[mid], key);
    if (cmp == 0) {
      *found = true;
      return mid;
    }
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = false;
  return lo;
}

size_t mapi_coll_after(const mapi_coll *c, const char *key) {
  if (!key || !*key)
    return 0;
  bool found;
  size_t i = coll_find(c, key, &found);
  return found ? i + 1 : i;
}

ProtobufCMessage *mapi_coll_get(const mapi_coll *c, const char *key) {
  bool found;
  size_t i = coll_find(c, key ? key : "", &found);
  return found ? c->items[i] : NULL;
}

/* Puts m under key (both taken), replacing what was there. NULL m is ignored. */
static void coll_put(mapi_coll *c, char *key, ProtobufCMessage *m) {
  if (!m) {
    free(key);
    return;
  }
  ProtobufCBinaryData enc;
  mapi_enc_item(m, &enc); /* once here, not at every read */
  c->enc_bytes += enc.len;
  bool found;
  size_t i = coll_find(c, key, &found);
  if (found) {
    protobuf_c_message_free_unpacked(c->items[i], NULL);
    c->items[i] = m;
    c->enc_bytes -= c->enc[i].len;
    free(c->enc[i].data);
    c->enc[i] = enc;
    free(key);
    return;
  }
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 16;
    c->keys = ms_xrealloc(c->keys, c->cap * sizeof(*c->keys));
    c->items = ms_xrealloc(c->items, c->cap * sizeof(*c->items));
    c->enc = ms_xrealloc(c->enc, c->cap * sizeof(*c->enc));
  }
  memmove(c->keys + i + 1, c->keys + i, (c->n - i) * sizeof(*c->keys));
  memmove(c->items + i + 1, c->items + i, (c->n - i) * sizeof(*c->items));
  memmove(c->enc + i + 1, c->enc + i, (c->n - i) * sizeof(*c->enc));
  c->keys[i] = key;
  c->items[i] = m;
  c->enc[i] = enc;
  c->n++;
}

static void coll_del(mapi_coll *c, const char *key) {
  bool found;
  size_t i = coll_find(c, key, &found);
  if (!found)
    return;
  free(c->keys[i]);
  protobuf_c_message_free_unpacked(c->items[i], NULL);
  c->enc_bytes -= c->enc[i].len;
  free(c->enc[i].data);
  memmove(c->keys + i, c->keys + i + 1, (c->n - i - 1) * sizeof(*c->keys));
  memmove(c->items + i, c->items + i + 1, (c->n - i - 1) * sizeof(*c->items));
  memmove(c->enc + i, c->enc + i + 1, (c->n - i - 1) * sizeof(*c->enc));
  c->n--;
}

static void coll_clear(mapi_coll *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->keys[i]);
    protobuf_c_message_free_unpacked(c->items[i], NULL);
    free(c->enc[i].data);
  }
  free(c->keys);
  free(c->items);
  free(c->enc);
  *c = (mapi_coll){0};
}

static void state_free(mapi_state *st) {
  if (!st)
    return;
  mapi_coll *cs[] = {&st->agents,     &st->frameworks, &st->tasks, &st->executors,
                     &st->operations, &st->roles,      &st->quota, &st->weights};
  for (size_t i = 0; i < MS_ARRAY_SIZE(cs); i++)
    coll_clear(cs[i]);
  if (st->schedule)
    protobuf_c_message_free_unpacked(&st->schedule->base, NULL);
  if (st->down)
    protobuf_c_message_free_unpacked(&st->down->base, NULL);
  if (st->begin)
    protobuf_c_message_free_unpacked(&st->begin->base, NULL);
  free(st);
}

/* ---- keys ---- */

/* An id message's value; "" when absent. */
#define ID(m) ((m) && (m)->value ? (m)->value : "")

static char *hex(const ProtobufCBinaryData *b) {
  return ms_hex_encode(b->data, b->len, ms_xmalloc(2 * b->len + 1));
}

static char *agent_key(const Meseta__V1__Agent *a) {
  return ms_xstrdup(a->agent_info ? ID(a->agent_info->id) : "");
}
static char *framework_key(const Meseta__V1__Framework *f) {
  return ms_xstrdup(f->framework_info ? ID(f->framework_info->id) : "");
}
static char *task_key(const Meseta__V1__FrameworkID *f, const Meseta__V1__TaskID *t) {
  return ms_xasprintf("%s/%s", ID(f), ID(t));
}
static char *executor_key(const Meseta__V1__FrameworkID *f, const Meseta__V1__AgentID *a,
                          const Meseta__V1__ExecutorID *e) {
  return ms_xasprintf("%s/%s/%s", ID(f), ID(a), ID(e));
}
static char *executor_state_key(const Meseta__V1__ExecutorState *e) {
  const Meseta__V1__ExecutorInfo *i = e->executor_info;
  return executor_key(i ? i->framework_id : NULL, e->agent_id, i ? i->executor_id : NULL);
}

/* Moves every item of a repeated field into c; the message keeps an empty array. */
#define STEAL_ALL(c, arr, n, keyfn)                                                                          \
  do {                                                                                                       \
    for (size_t _i = 0; _i < (n); _i++)                                                                      \
      coll_put((c), keyfn((arr)[_i]), &(arr)[_i]->base);                                                     \
    (n) = 0;                                                                                                 \
  } while (0)

static char *task_msg_key(const Meseta__V1__Task *t) {
  return task_key(t->framework_id, t->task_id);
}
static char *op_key(const Meseta__V1__TrackedOperation *o) {
  return hex(&o->uuid);
}
static char *role_key(const Meseta__V1__Role *r) {
  return ms_xstrdup(r->name);
}
static char *quota_key(const Meseta__V1__QuotaConfig *q) {
  return ms_xstrdup(q->role);
}
static char *weight_key(const Meseta__V1__WeightInfo *w) {
  return ms_xstrdup(w->role);
}

static void add_state(mapi_state *st, Meseta__V1__State *s) {
  if (!s)
    return;
  STEAL_ALL(&st->agents, s->agents, s->n_agents, agent_key);
  STEAL_ALL(&st->frameworks, s->frameworks, s->n_frameworks, framework_key);
  STEAL_ALL(&st->tasks, s->tasks, s->n_tasks, task_msg_key);
  STEAL_ALL(&st->executors, s->executors, s->n_executors, executor_state_key);
  STEAL_ALL(&st->operations, s->operations, s->n_operations, op_key);
  STEAL_ALL(&st->roles, s->roles, s->n_roles, role_key);
}

/* ---- changes ---- */

/* Moves one message into c (the key computed before the pointer is taken). */
#define PUT(c, keyfn, field)                                                                                 \
  do {                                                                                                       \
    __typeof__(field) _m = TAKE_PTR(field);                                                                  \
    coll_put((c), keyfn(_m), &_m->base);                                                                     \
  } while (0)

static void apply_change(mapi_state *st, Meseta__V1__StateChange *c) {
  switch (c->change_case) {
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_ADDED:
    PUT(&st->agents, agent_key, c->agent_added);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED:
    PUT(&st->agents, agent_key, c->agent_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_AGENT_REMOVED:
    coll_del(&st->agents, ID(c->agent_removed->agent_id));
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_ADDED:
    PUT(&st->frameworks, framework_key, c->framework_added);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_UPDATED:
    PUT(&st->frameworks, framework_key, c->framework_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_FRAMEWORK_REMOVED:
    coll_del(&st->frameworks, ID(c->framework_removed->framework_id));
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED:
    PUT(&st->tasks, task_msg_key, c->task_added);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_TASK_UPDATED:
    PUT(&st->tasks, task_msg_key, c->task_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_TASK_REMOVED: {
    _cleanup_free_ char *k = task_key(c->task_removed->framework_id, c->task_removed->task_id);
    coll_del(&st->tasks, k);
    break;
  }
  case MESETA__V1__STATE_CHANGE__CHANGE_EXECUTOR_ADDED:
    PUT(&st->executors, executor_state_key, c->executor_added);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_EXECUTOR_UPDATED:
    PUT(&st->executors, executor_state_key, c->executor_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_EXECUTOR_REMOVED: {
    const Meseta__V1__StateChange__ExecutorRemoved *r = c->executor_removed;
    _cleanup_free_ char *k = executor_key(r->framework_id, r->agent_id, r->executor_id);
    coll_del(&st->executors, k);
    break;
  }
  case MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_UPDATED:
    PUT(&st->operations, op_key, c->operation_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_OPERATION_REMOVED: {
    _cleanup_free_ char *k = hex(&c->operation_removed->operation_uuid);
    coll_del(&st->operations, k);
    break;
  }
  case MESETA__V1__STATE_CHANGE__CHANGE_ROLE_UPDATED:
    PUT(&st->roles, role_key, c->role_updated);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_ROLE_REMOVED:
    coll_del(&st->roles, c->role_removed->name);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_QUOTA_CHANGED:
    coll_clear(&st->quota);
    STEAL_ALL(&st->quota, c->quota_changed->configs, c->quota_changed->n_configs, quota_key);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_WEIGHTS_CHANGED:
    coll_clear(&st->weights);
    STEAL_ALL(&st->weights, c->weights_changed->weights, c->weights_changed->n_weights, weight_key);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_MAINTENANCE_SCHEDULE_CHANGED:
    if (st->schedule)
      protobuf_c_message_free_unpacked(&st->schedule->base, NULL);
    st->schedule = TAKE_PTR(c->maintenance_schedule_changed);
    break;
  case MESETA__V1__STATE_CHANGE__CHANGE_DOWN_MACHINES_CHANGED:
    if (st->down)
      protobuf_c_message_free_unpacked(&st->down->base, NULL);
    st->down = TAKE_PTR(c->down_machines_changed);
    break;
  default:
    /* Offers are not kept apart from their frameworks (Framework.offers); a change
     * this replica does not know is skipped. */
    break;
  }
}

/* ---- the view ---- */

mapi_view *mapi_view_new(void) {
  mapi_view *v = ms_xcalloc(1, sizeof(*v));
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  /* Readers come all the time; the one writer must not starve. */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&v->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  pthread_mutex_init(&v->cache_mu, NULL);
  return v;
}

void mapi_view_set_hooks(mapi_view *v, const mapi_view_hooks *hooks, void *arg) {
  v->hooks = hooks;
  v->hooks_arg = arg;
}

static void drop_pending(mapi_view *v) {
  for (size_t i = 0; i < v->n_pending; i++)
    protobuf_c_message_free_unpacked(&v->pending[i]->base, NULL);
  v->n_pending = 0;
}

void mapi_view_free(mapi_view *v) {
  if (!v)
    return;
  drop_pending(v);
  free(v->pending);
  state_free(v->building);
  state_free(v->live);
  mapi_bytes_unref(v->state);
  pthread_mutex_destroy(&v->cache_mu);
  pthread_rwlock_destroy(&v->lock);
  free(v);
}

static void publish_revision(mapi_view *v, int64_t rev) {
  atomic_store(&v->revision, rev);
}

/* Frees GetState's bytes once the view moved past them (readers still sending
 * them hold their own references): the writer's, outside the view's lock. */
static void drop_stale(mapi_view *v) {
  pthread_mutex_lock(&v->cache_mu);
  mapi_bytes *b = v->state && (!v->live || v->state_seq != v->live->seq) ? TAKE_PTR(v->state) : NULL;
  pthread_mutex_unlock(&v->cache_mu);
  mapi_bytes_unref(b);
}

bool mapi_view_apply(mapi_view *v, Meseta__V1__StateEvent *ev) {
  bool advanced = false;
  switch (ev->event_case) {
  case MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN:
    state_free(v->building);
    drop_pending(v);
    v->building = ms_xcalloc(1, sizeof(*v->building));
    v->building->begin = TAKE_PTR(ev->snapshot_begin);
    v->building->revision = ev->revision;
    break;
  case MESETA__V1__STATE_EVENT__EVENT_CHUNK:
    if (!v->building) {
      ms_log_warn(NULL, "WatchState: a chunk outside a snapshot, skipped");
      break;
    }
    add_state(v->building, ev->chunk->state);
    if (ev->chunk->n_quota_configs)
      STEAL_ALL(&v->building->quota, ev->chunk->quota_configs, ev->chunk->n_quota_configs, quota_key);
    if (ev->chunk->n_weights)
      STEAL_ALL(&v->building->weights, ev->chunk->weights, ev->chunk->n_weights, weight_key);
    if (ev->chunk->maintenance_schedule && !v->building->schedule)
      v->building->schedule = TAKE_PTR(ev->chunk->maintenance_schedule);
    if (ev->chunk->down_machines && !v->building->down)
      v->building->down = TAKE_PTR(ev->chunk->down_machines);
    break;
  case MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END: {
    if (!v->building) {
      ms_log_warn(NULL, "WatchState: a snapshot end without its beginning, skipped");
      break;
    }
    mapi_state *old;
    pthread_rwlock_wrlock(&v->lock);
    old = v->live;
    v->live = TAKE_PTR(v->building);
    if (ev->revision > v->live->revision)
      v->live->revision = ev->revision;
    v->live->seq = old ? old->seq + 1 : 1;
    publish_revision(v, v->live->revision);
    pthread_rwlock_unlock(&v->lock);
    atomic_store(&v->current, true);
    ms_log_info(NULL, "view: snapshot at revision %lld: %zu agents, %zu frameworks, %zu tasks, %zu roles",
                (long long)v->live->revision, v->live->agents.n, v->live->frameworks.n, v->live->tasks.n,
                v->live->roles.n);
    if (v->hooks && v->hooks->after_swap)
      v->hooks->after_swap(v->hooks_arg, old, v->live);
    state_free(old); /* outside the lock: readers need not wait for it */
    drop_stale(v);
    advanced = true;
    break;
  }
  case MESETA__V1__STATE_EVENT__EVENT_CHANGE:
    if (v->n_pending == v->cap_pending) {
      v->cap_pending = v->cap_pending ? 2 * v->cap_pending : 16;
      v->pending = ms_xrealloc(v->pending, v->cap_pending * sizeof(*v->pending));
    }
    v->pending[v->n_pending++] = ev;
    if (!ev->last_of_revision)
      return false; /* held until its revision is complete */
    void *prepared = NULL;
    bool hook = v->live && v->hooks && v->hooks->before_changes;
    if (hook) /* before: applying moves the messages out of the changes */
      prepared = v->hooks->before_changes(v->hooks_arg, v->live, v->pending, v->n_pending);
    pthread_rwlock_wrlock(&v->lock);
    if (v->live) {
      for (size_t i = 0; i < v->n_pending; i++)
        apply_change(v->live, v->pending[i]->change);
      if (ev->revision > v->live->revision)
        v->live->revision = ev->revision;
      v->live->seq++;
      publish_revision(v, v->live->revision);
      advanced = true;
    }
    pthread_rwlock_unlock(&v->lock);
    if (hook && v->hooks->after_changes)
      v->hooks->after_changes(v->hooks_arg, prepared, v->live);
    drop_pending(v); /* frees ev too */
    drop_stale(v);
    return advanced;
  case MESETA__V1__STATE_EVENT__EVENT_HEARTBEAT:
    /* Every change up to the heartbeat's revision has come. */
    pthread_rwlock_wrlock(&v->lock);
    if (v->live && !v->n_pending && ev->revision > v->live->revision) {
      v->live->revision = ev->revision;
      publish_revision(v, ev->revision);
      advanced = true;
    }
    pthread_rwlock_unlock(&v->lock);
    break;
  default:
    break;
  }
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  return advanced;
}

void mapi_view_stream_lost(mapi_view *v) {
  state_free(TAKE_PTR(v->building));
  drop_pending(v);
  atomic_store(&v->current, false);
}

const mapi_state *mapi_view_rdlock(mapi_view *v) {
  pthread_rwlock_rdlock(&v->lock);
  if (!v->live) {
    pthread_rwlock_unlock(&v->lock);
    return NULL;
  }
  return v->live;
}

void mapi_view_unlock(mapi_view *v) {
  pthread_rwlock_unlock(&v->lock);
}

bool mapi_view_current(mapi_view *v) {
  return atomic_load(&v->current);
}

int64_t mapi_view_revision(mapi_view *v) {
  return atomic_load(&v->revision);
}

mapi_bytes *mapi_view_state_bytes(mapi_view *v, const mapi_state *st) {
  /* Readers at one seq wait for the first to build it rather than each build it. */
  pthread_mutex_lock(&v->cache_mu);
  if (!v->state || v->state_seq != st->seq) {
    mapi_bytes *old = v->state;
    v->state = mapi_encode_state(st);
    v->state_seq = st->seq;
    mapi_bytes_unref(old);
  }
  mapi_bytes *b = mapi_bytes_ref(v->state);
  pthread_mutex_unlock(&v->cache_mu);
  return b;
}
