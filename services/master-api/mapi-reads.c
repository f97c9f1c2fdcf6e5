/* Operator reads, answered from the view: revisions, min_revision, pagination.
 *
 * The CQ thread only checks a read, authenticates it and hands it to the reads loop
 * (one ms_loop thread), which serves it; past --max-queued-reads held there (queued
 * or parked) a read is refused with RESOURCE_EXHAUSTED. A read whose min_revision (or
 * page token's revision) is above the view's waits, parked on that loop, for the view
 * to get there: served when the watch thread kicks the loop, or failed with
 * DEADLINE_EXCEEDED at the call's deadline or after --max-revision-wait. Answers are assembled from the
 * items' bytes the view keeps (mapi-encode.h), not packed again: pages under the view's read lock, GetState
 * from its State encoded once per revision, shared, and sent outside the lock. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/hex.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "mapi-internal.h"

#define PAGE_DEFAULT 500
#define PAGE_MAX 5000
#define TOKEN_TTL_MS (10 * 60 * 1000)

#define MEMBER(msg, off, type) (*(type *)((char *)(msg) + (off)))

typedef struct read_kind read_kind;
/* Answers the read from st, under the read lock. One that may send without it
 * (what it sends is its own) unlocks the view itself and sets *unlocked. */
typedef int (*serve_fn)(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                        bool *unlocked, ms_error **err);

struct read_kind { /* a row's ms_rpc_method.arg */
  serve_fn serve;
};

/* A read handed over to the reads loop: queued, then parked if the view is behind. */
struct mapi_parked {
  mapi_parked *next;
  mapi_service *s;
  ms_rpc_call *call; /* referenced */
  ProtobufCMessage *req;
  const read_kind *kind;
  int64_t need, until_ms;
};

/* ---- page tokens ---- */

/* FNV-1a of the request without min_revision, page_size, page_token (fields 1-3):
 * what binds a token to its filters. */
static uint64_t filter_hash(const ProtobufCMessage *req) {
  const ProtobufCMessageDescriptor *d = req->descriptor;
  _cleanup_free_ void *copy = ms_xmalloc(d->sizeof_message);
  memcpy(copy, req, d->sizeof_message);
  for (unsigned n = 1; n <= 3; n++) {
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, n);
    if (f && f->type == PROTOBUF_C_TYPE_STRING)
      MEMBER(copy, f->offset, const char *) = "";
    else if (f && f->type == PROTOBUF_C_TYPE_INT64)
      MEMBER(copy, f->offset, int64_t) = 0;
    else if (f && f->type == PROTOBUF_C_TYPE_UINT32)
      MEMBER(copy, f->offset, uint32_t) = 0;
  }
  size_t len;
  _cleanup_free_ uint8_t *buf = ms_pb_pack(copy, &len);
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++)
    h = (h ^ buf[i]) * 1099511628211ULL;
  for (const char *c = d->name; *c; c++) /* a token of one read is not another's */
    h = (h ^ (uint8_t)*c) * 1099511628211ULL;
  return h;
}

typedef struct page_req {
  int64_t min_revision;
  uint32_t page_size;
  const char *token;
  /* From the token: */
  int64_t token_revision;
  char *after; /* the last key of the previous page; owned */
} page_req;

static int unhex(const char *s, char **ret, ms_error **err) {
  size_t n = strlen(s);
  if (n % 2)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "page_token: not a token this server issued");
  char *out = ms_xmalloc(n / 2 + 1);
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) {
      free(out);
      return ms_error_set(err, MS_INVALID_ARGUMENT, "page_token: not a token this server issued");
    }
    out[i] = (char)v;
  }
  out[n / 2] = 0;
  *ret = out;
  return 0;
}

/* Reads min_revision, page_size, page_token (fields 1, 2, 3) and checks them. */
static int page_parse(const ProtobufCMessage *req, page_req *p, ms_error **err) {
  const ProtobufCMessageDescriptor *d = req->descriptor;
  const ProtobufCFieldDescriptor *fr = protobuf_c_message_descriptor_get_field(d, 1);
  const ProtobufCFieldDescriptor *fs = protobuf_c_message_descriptor_get_field(d, 2);
  const ProtobufCFieldDescriptor *ft = protobuf_c_message_descriptor_get_field(d, 3);
  *p = (page_req){.min_revision = fr ? MEMBER(req, fr->offset, int64_t) : 0};
  if (p->min_revision < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "min_revision: %" PRId64 " is negative", p->min_revision);
  if (!fs || fs->type != PROTOBUF_C_TYPE_UINT32 || !ft)
    return 0; /* not paginated */
  p->page_size = MEMBER(req, fs->offset, uint32_t);
  if (p->page_size > PAGE_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "page_size: %u is above the maximum, %d", p->page_size,
                        PAGE_MAX);
  if (!p->page_size)
    p->page_size = PAGE_DEFAULT;
  p->token = MEMBER(req, ft->offset, const char *);
  if (!p->token || !*p->token)
    return 0;
  int64_t rev, issued;
  uint64_t hash;
  int used = 0;
  if (sscanf(p->token, "r%" SCNd64 ".t%" SCNd64 ".f%" SCNx64 ".%n", &rev, &issued, &hash, &used) != 3 ||
      !used)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "page_token: not a token this server issued");
  if (hash != filter_hash(req))
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "page_token: the filters differ from those of the listing's first page");
  if (ms_time_real_ms() - issued > TOKEN_TTL_MS)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "page_token: expired (valid for 10 minutes); list again");
  if (unhex(p->token + used, &p->after, err) < 0)
    return MS_ERR;
  p->token_revision = rev;
  return 0;
}

static char *token_make(const ProtobufCMessage *req, int64_t revision, const char *key) {
  size_t n = strlen(key);
  _cleanup_free_ char *hx = ms_hex_encode(key, n, ms_xmalloc(2 * n + 1));
  return ms_xasprintf("r%" PRId64 ".t%" PRId64 ".f%" PRIx64 ".%s", revision, ms_time_real_ms(),
                      filter_hash(req), hx);
}

/* ---- list reads ---- */

typedef bool (*match_fn)(const ProtobufCMessage *item, const ProtobufCMessage *req);

/* Answers one page of c: the response has revision = 1, next_page_token = 2 and the
 * repeated items = 3, the last field, so the items go as unknown fields (packed
 * after the known ones, in order): their bytes from the view, byte for byte what
 * packing the messages gives. */
static int list_reply(ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                      const mapi_coll *c, match_fn match, const ProtobufCMessageDescriptor *resp_desc,
                      ms_error **err) {
  page_req p;
  if (page_parse(req, &p, err) < 0)
    return MS_ERR;
  _cleanup_free_ char *after = p.after;
  const ProtobufCFieldDescriptor *fr = protobuf_c_message_descriptor_get_field(resp_desc, 1);
  const ProtobufCFieldDescriptor *ft = protobuf_c_message_descriptor_get_field(resp_desc, 2);
  const ProtobufCFieldDescriptor *fi = protobuf_c_message_descriptor_get_field(resp_desc, 3);
  _cleanup_free_ ProtobufCMessageUnknownField *items = ms_xmalloc((p.page_size + 1) * sizeof(*items));
  size_t n = 0, last = 0;
  bool more = false;
  for (size_t i = mapi_coll_after(c, after); i < c->n; i++) {
    if (match && !match(c->items[i], req))
      continue;
    if (n == p.page_size) {
      more = true;
      break;
    }
    items[n++] = (ProtobufCMessageUnknownField){.tag = fi->id,
                                                .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                                                .len = c->enc[i].len,
                                                .data = c->enc[i].data};
    last = i;
  }
  ProtobufCMessage *resp = ms_pb_new(resp_desc);
  MEMBER(resp, fr->offset, int64_t) = st->revision;
  char *next = more ? token_make(req, st->revision, c->keys[last]) : NULL;
  if (next)
    MEMBER(resp, ft->offset, char *) = next;
  resp->n_unknown_fields = n;
  resp->unknown_fields = items;
  int rc = ms_rpc_call_reply(call, resp, err);
  free(next);
  free(resp); /* its items are the view's; its strings freed above */
  return rc;
}

static bool has_id(void *const *ids, size_t n, const char *id) {
  if (!n)
    return true;
  for (size_t i = 0; i < n; i++) {
    const Meseta__V1__AgentID *x = ids[i]; /* every id message is { string value = 1; } */
    if (x->value && strcmp(x->value, id) == 0)
      return true;
  }
  return false;
}

#define ID(m) ((m) && (m)->value ? (m)->value : "")

static bool agent_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__Agent *a = (const void *)item;
  const Meseta__V1__GetAgentsRequest *q = (const void *)r;
  bool state_ok = !q->n_states ? a->state != MESETA__V1__AGENT__STATE__GONE : false;
  for (size_t i = 0; i < q->n_states; i++)
    state_ok |= q->states[i] == a->state;
  return state_ok &&
         has_id((void *const *)q->agent_ids, q->n_agent_ids, a->agent_info ? ID(a->agent_info->id) : "");
}

static bool framework_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__Framework *f = (const void *)item;
  const Meseta__V1__GetFrameworksRequest *q = (const void *)r;
  if (!q->include_completed && f->unregistered_time)
    return false;
  return has_id((void *const *)q->framework_ids, q->n_framework_ids,
                f->framework_info ? ID(f->framework_info->id) : "");
}

static bool executor_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__ExecutorState *e = (const void *)item;
  const Meseta__V1__GetExecutorsRequest *q = (const void *)r;
  if (q->framework_id &&
      strcmp(ID(q->framework_id), e->executor_info ? ID(e->executor_info->framework_id) : ""))
    return false;
  return !q->agent_id || strcmp(ID(q->agent_id), ID(e->agent_id)) == 0;
}

static bool task_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__Task *t = (const void *)item;
  const Meseta__V1__GetTasksRequest *q = (const void *)r;
  if (q->framework_id && strcmp(ID(q->framework_id), ID(t->framework_id)))
    return false;
  if (q->agent_id && strcmp(ID(q->agent_id), ID(t->agent_id)))
    return false;
  if (!q->include_completed && ms_task_state_terminal(t->state))
    return false;
  bool state_ok = !q->n_states;
  for (size_t i = 0; i < q->n_states; i++)
    state_ok |= q->states[i] == t->state;
  return state_ok;
}

static bool operation_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__TrackedOperation *o = (const void *)item;
  const Meseta__V1__GetOperationsRequest *q = (const void *)r;
  if (q->framework_id && strcmp(ID(q->framework_id), ID(o->framework_id)))
    return false;
  return !q->agent_id || strcmp(ID(q->agent_id), ID(o->agent_id)) == 0;
}

static bool role_match(const ProtobufCMessage *item, const ProtobufCMessage *r) {
  const Meseta__V1__Role *role = (const void *)item;
  const Meseta__V1__GetRolesRequest *q = (const void *)r;
  if (!q->parent || !*q->parent)
    return true;
  size_t n = strlen(q->parent);
  return strncmp(role->name, q->parent, n) == 0 && role->name[n] == '/';
}

#define LIST_READ(fn, coll, match, resp)                                                                     \
  static int fn(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,       \
                bool *unlocked, ms_error **err) {                                                            \
    (void)s, (void)unlocked;                                                                                 \
    return list_reply(call, req, st, &st->coll, match, &resp, err);                                          \
  }
LIST_READ(get_agents, agents, agent_match, meseta__v1__get_agents_response__descriptor)
LIST_READ(get_frameworks, frameworks, framework_match, meseta__v1__get_frameworks_response__descriptor)
LIST_READ(get_executors, executors, executor_match, meseta__v1__get_executors_response__descriptor)
LIST_READ(get_tasks, tasks, task_match, meseta__v1__get_tasks_response__descriptor)
LIST_READ(get_operations, operations, operation_match, meseta__v1__get_operations_response__descriptor)
LIST_READ(get_roles, roles, role_match, meseta__v1__get_roles_response__descriptor)

/* ---- whole reads ---- */

#define ITEMS(type, c) ((type **)(c).items)

static void bytes_release(void *b) {
  mapi_bytes_unref(b);
}

/* The answer is the response's revision (packed here), the State's tag (field 2, the
 * last), then the view's shared encoding of the State, which gRPC sends from where it
 * is, without a copy, holding a reference until it is done (any thread). Outside the
 * lock. */
static int get_state(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                     bool *unlocked, ms_error **err) {
  (void)req;
  mapi_bytes *b = mapi_view_state_bytes(s->view, st);
  Meseta__V1__GetStateResponse resp = MESETA__V1__GET_STATE_RESPONSE__INIT;
  resp.revision = st->revision;
  mapi_view_unlock(s->view);
  *unlocked = true;
  uint8_t head[16];
  size_t n = protobuf_c_message_pack(&resp.base, head);
  head[n++] = (2 << 3) | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
  if (ms_rpc_call_send_bytes(call, head, n, b->data, b->len, bytes_release, b, err) < 0)
    return MS_ERR; /* b released */
  ms_rpc_call_finish(call, MS_OK, NULL);
  return 0;
}

static int get_weights(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                       bool *unlocked, ms_error **err) {
  (void)s, (void)req, (void)unlocked;
  Meseta__V1__GetWeightsResponse resp = MESETA__V1__GET_WEIGHTS_RESPONSE__INIT;
  resp.revision = st->revision;
  resp.weight_infos = ITEMS(Meseta__V1__WeightInfo, st->weights);
  resp.n_weight_infos = st->weights.n;
  return ms_rpc_call_reply(call, &resp.base, err);
}

static int get_quota(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                     bool *unlocked, ms_error **err) {
  (void)s, (void)req, (void)unlocked;
  Meseta__V1__GetQuotaResponse resp = MESETA__V1__GET_QUOTA_RESPONSE__INIT;
  resp.revision = st->revision;
  resp.configs = ITEMS(Meseta__V1__QuotaConfig, st->quota);
  resp.n_configs = st->quota.n;
  return ms_rpc_call_reply(call, &resp.base, err);
}

static int get_schedule(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                        bool *unlocked, ms_error **err) {
  (void)s, (void)req, (void)unlocked;
  Meseta__V1__GetMaintenanceScheduleResponse resp = MESETA__V1__GET_MAINTENANCE_SCHEDULE_RESPONSE__INIT;
  resp.revision = st->revision;
  resp.schedule = st->schedule;
  return ms_rpc_call_reply(call, &resp.base, err);
}

/* A machine is its hostname, or its ip compared with the agent's hostname (as the
 * allocator matches maintenance windows). */
static bool machine_is_agent(const Meseta__V1__MachineID *m, const Meseta__V1__Agent *a) {
  const char *h = a->agent_info ? a->agent_info->hostname : NULL;
  if (!h || !*h)
    return false;
  return (m->hostname && *m->hostname && strcmp(m->hostname, h) == 0) ||
         (m->ip && *m->ip && strcmp(m->ip, h) == 0);
}

static bool machine_down(const mapi_state *st, const Meseta__V1__MachineID *m) {
  for (size_t i = 0; st->down && i < st->down->n_machines; i++) {
    const Meseta__V1__MachineID *d = st->down->machines[i];
    if (strcmp(d->hostname ? d->hostname : "", m->hostname ? m->hostname : "") == 0 &&
        strcmp(d->ip ? d->ip : "", m->ip ? m->ip : "") == 0)
      return true;
  }
  return false;
}

/* Scheduled machines whose window has not ended and that are not DOWN: draining, with
 * their agents and the tasks still running there; then the DOWN machines. */
static int get_maintenance_status(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req,
                                  const mapi_state *st, bool *unlocked, ms_error **err) {
  (void)s, (void)req, (void)unlocked;
  typedef Meseta__V1__GetMaintenanceStatusResponse__DrainingMachine draining;
  size_t cap = 0;
  for (size_t i = 0; st->schedule && i < st->schedule->n_windows; i++)
    cap += st->schedule->windows[i]->n_machine_ids;
  _cleanup_free_ draining *dm = ms_xcalloc(cap + 1, sizeof(*dm));
  _cleanup_free_ draining **dp = ms_xcalloc(cap + 1, sizeof(*dp));
  size_t n = 0;
  int64_t now = ms_time_real_ms();
  for (size_t i = 0; st->schedule && i < st->schedule->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = st->schedule->windows[i];
    const Meseta__V1__Unavailability *u = w->unavailability;
    int64_t end_ms = u && u->start && u->duration ? (u->start->seconds + u->duration->seconds) * 1000 +
                                                        (u->start->nanos + u->duration->nanos) / 1000000
                                                  : INT64_MAX;
    if (end_ms <= now)
      continue; /* the window ended */
    for (size_t k = 0; k < w->n_machine_ids; k++) {
      const Meseta__V1__MachineID *m = w->machine_ids[k];
      if (machine_down(st, m))
        continue;
      draining *d = &dm[n];
      meseta__v1__get_maintenance_status_response__draining_machine__init(d);
      d->id = (Meseta__V1__MachineID *)m;
      for (size_t a = 0; a < st->agents.n; a++) {
        const Meseta__V1__Agent *ag = (const Meseta__V1__Agent *)st->agents.items[a];
        if (!machine_is_agent(m, ag) || !ag->agent_info->id)
          continue;
        d->agent_ids = ms_xrealloc(d->agent_ids, (d->n_agent_ids + 1) * sizeof(*d->agent_ids));
        d->agent_ids[d->n_agent_ids++] = ag->agent_info->id;
        for (size_t t = 0; t < st->tasks.n; t++) {
          const Meseta__V1__Task *task = (const Meseta__V1__Task *)st->tasks.items[t];
          if (!ms_task_state_terminal(task->state) && task->agent_id && task->agent_id->value &&
              strcmp(task->agent_id->value, ag->agent_info->id->value) == 0)
            d->running_tasks++;
        }
      }
      dp[n] = d;
      n++;
    }
  }
  Meseta__V1__GetMaintenanceStatusResponse resp = MESETA__V1__GET_MAINTENANCE_STATUS_RESPONSE__INIT;
  resp.revision = st->revision;
  resp.draining_machines = dp;
  resp.n_draining_machines = n;
  if (st->down) {
    resp.down_machines = st->down->machines;
    resp.n_down_machines = st->down->n_machines;
  }
  int rc = ms_rpc_call_reply(call, &resp.base, err);
  for (size_t i = 0; i < n; i++)
    free(dm[i].agent_ids);
  return rc;
}

static int get_master(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const mapi_state *st,
                      bool *unlocked, ms_error **err) {
  (void)s, (void)req, (void)unlocked;
  Meseta__V1__GetMasterResponse resp = MESETA__V1__GET_MASTER_RESPONSE__INIT;
  resp.revision = st->revision;
  if (st->begin) {
    resp.master_info = st->begin->master_info;
    resp.leader_elected_time = st->begin->leader_elected_time;
  }
  return ms_rpc_call_reply(call, &resp.base, err);
}

/* ---- serving, parking (the reads loop's thread) ---- */

/* 1: answered (or failed: the error set, MS_ERR); 0: the view is not at `need` yet. */
static int try_serve(mapi_service *s, ms_rpc_call *call, const ProtobufCMessage *req, const read_kind *k,
                     int64_t need, ms_error **err) {
  const mapi_state *st = mapi_view_rdlock(s->view);
  if (!st) {
    if (need > 0)
      return 0;
    return ms_error_set(err, MS_UNAVAILABLE, "no view of the cluster yet: allocator %s not reached; retry",
                        s->cfg.allocator ? s->cfg.allocator : "leader");
  }
  if (st->revision < need) {
    mapi_view_unlock(s->view);
    return 0;
  }
  bool unlocked = false;
  int rc = k->serve(s, call, req, st, &unlocked, err);
  if (!unlocked)
    mapi_view_unlock(s->view);
  return rc < 0 ? MS_ERR : 1;
}

static void parked_free(mapi_service *s, mapi_parked *pk) {
  protobuf_c_message_free_unpacked(pk->req, NULL);
  ms_rpc_call_unref(pk->call);
  free(pk);
  atomic_fetch_sub(&s->reads_held, 1);
}

/* Serves or fails pk (then frees it and returns true), or leaves it waiting. */
static bool settle(mapi_service *s, mapi_parked *pk, bool closing, int64_t now) {
  ms_error *err = NULL;
  int r = 0;
  if (ms_rpc_call_is_done(pk->call))
    r = 1; /* the caller left: its deadline passed, or it cancelled */
  else if ((r = try_serve(s, pk->call, pk->req, pk->kind, pk->need, &err)) == 0 &&
           (closing || now >= pk->until_ms))
    r = closing ? ms_error_set(&err, MS_UNAVAILABLE, "master-api is shutting down")
                : ms_error_set(&err, MS_DEADLINE_EXCEEDED,
                               "min_revision %lld not reached in time: the view is at revision %lld",
                               (long long)pk->need, (long long)mapi_view_revision(s->view));
  if (r < 0)
    ms_rpc_call_finish_error(pk->call, err);
  ms_error_free(err);
  if (r == 0)
    return false;
  parked_free(s, pk);
  return true;
}

static void park_tick(ms_loop *loop, uint64_t id, void *arg);

/* Tries every parked read again; the deadline timer runs while some wait. */
static void park_pass(mapi_service *s, bool closing) {
  mapi_parked *list = TAKE_PTR(s->parked), *keep = NULL;
  size_t n = 0;
  int64_t now = ms_time_mono_ms();
  while (list) {
    mapi_parked *pk = list;
    list = pk->next;
    if (!settle(s, pk, closing, now)) {
      pk->next = keep;
      keep = pk;
      n++;
    }
  }
  s->parked = keep;
  atomic_store(&s->n_parked, n);
  if (!n && s->park_timer) {
    ms_loop_cancel_timer(s->reads_loop, s->park_timer);
    s->park_timer = 0;
  } else if (n && !s->park_timer) {
    s->park_timer = ms_loop_add_timer(s->reads_loop, 100, 100, park_tick, s);
  }
}

static void park_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop, (void)id;
  park_pass(arg, false);
}

/* A read handed over by read_start: served now, or parked until the view gets there. */
static void read_run(void *arg) {
  mapi_parked *pk = arg;
  mapi_service *s = pk->s;
  if (settle(s, pk, false, ms_time_mono_ms()))
    return;
  pk->next = s->parked;
  s->parked = pk;
  atomic_fetch_add(&s->n_parked, 1);
  /* The watch thread kicks only while reads are parked: the view may have moved on
   * before this one was counted. */
  if (mapi_view_revision(s->view) >= pk->need)
    park_pass(s, false);
  else if (!s->park_timer) /* deadlines are looked at ten times a second */
    s->park_timer = ms_loop_add_timer(s->reads_loop, 100, 100, park_tick, s);
}

static void kick_run(void *arg) {
  mapi_service *s = arg;
  atomic_store(&s->kick_pending, false);
  park_pass(s, false);
}

void mapi_reads_kick(mapi_service *s) {
  atomic_thread_fence(memory_order_seq_cst); /* the view's new revision before the count */
  if (atomic_load(&s->n_parked) && !atomic_exchange(&s->kick_pending, true))
    ms_loop_post(s->reads_loop, kick_run, s);
}

/* The last post: every read handed over before has run; the parked ones fail. */
static void close_run(void *arg) {
  mapi_service *s = arg;
  park_pass(s, true);
  ms_loop_stop(s->reads_loop);
}

/* On the CQ thread: only checks, authenticates and hands the read to the reads loop,
 * which serves it (heavy reads never hold up the thread that makes HTTP/2 progress).
 * Reads held (queued or parked) are bounded by --max-queued-reads. */
static int read_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  if (mapi_check_request(req, err) < 0) /* enum values the proto does not define */
    return MS_ERR;
  if (mapi_read_auth(s, call, err) < 0) /* a bad token, or anonymous with --require-auth */
    return MS_ERR;
  page_req p;
  if (page_parse(req, &p, err) < 0)
    return MS_ERR;
  free(p.after);
  int64_t wait = ms_rpc_call_deadline_ms(call);
  if (s->cfg.max_revision_wait_ms > 0 && wait > s->cfg.max_revision_wait_ms)
    wait = s->cfg.max_revision_wait_ms;
  mapi_parked *pk = ms_xmalloc(sizeof(*pk)); /* made outside the lock */
  *pk = (mapi_parked){.s = s,
                      .call = call,
                      .req = ms_pb_dup(req),
                      .kind = ms_rpc_call_method_arg(call),
                      .need = p.min_revision > p.token_revision ? p.min_revision : p.token_revision,
                      .until_ms = wait == INT64_MAX ? INT64_MAX : ms_time_mono_ms() + wait};
  int rc = 0;
  pthread_mutex_lock(&s->reads_mu);
  size_t held = atomic_load(&s->reads_held);
  if (s->reads_closed) {
    rc = ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
  } else if (held >= s->cfg.max_queued_reads) {
    rc = ms_error_set(err, MS_RESOURCE_EXHAUSTED,
                      "master-api busy: %zu reads queued (flag `--max-queued-reads`); retry later", held);
  } else {
    atomic_fetch_add(&s->reads_held, 1);
    ms_rpc_call_ref(call);
    ms_loop_post(s->reads_loop, read_run, TAKE_PTR(pk));
  }
  pthread_mutex_unlock(&s->reads_mu);
  if (pk) { /* refused */
    protobuf_c_message_free_unpacked(pk->req, NULL);
    free(pk);
  }
  return rc;
}

static int get_health(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  (void)req;
  mapi_service *s = ms_rpc_call_userdata(call);
  Meseta__V1__GetHealthResponse resp = MESETA__V1__GET_HEALTH_RESPONSE__INIT;
  resp.healthy = resp.leader_known = mapi_view_current(s->view);
  return ms_rpc_call_reply(call, &resp.base, err);
}

#define READ(method, fn)                                                                                     \
  {                                                                                                          \
    .name = method, .on_start = read_start, .arg = &(const read_kind) {                                      \
      fn                                                                                                     \
    }                                                                                                        \
  }
const ms_rpc_method mapi_operator_reads[] = {
    {.name = "GetHealth", .on_start = get_health},
    READ("GetState", get_state),
    READ("GetAgents", get_agents),
    READ("GetFrameworks", get_frameworks),
    READ("GetExecutors", get_executors),
    READ("GetTasks", get_tasks),
    READ("GetOperations", get_operations),
    READ("GetRoles", get_roles),
    READ("GetWeights", get_weights),
    READ("GetQuota", get_quota),
    READ("GetMaintenanceSchedule", get_schedule),
    READ("GetMaster", get_master),
    READ("GetMaintenanceStatus", get_maintenance_status),
    {.name = "Subscribe",
     .on_start = mapi_events_subscribe,
     .on_drain = mapi_events_drain,
     .on_done = mapi_events_done},
};
#undef READ
const size_t mapi_n_operator_reads = MS_ARRAY_SIZE(mapi_operator_reads);

static void *reads_main(void *arg) {
  mapi_service *s = arg;
  ms_error *err = NULL;
  if (ms_loop_run(s->reads_loop, &err) < 0) {
    ms_log_error(NULL, "reads loop: %s", err->msg);
    ms_error_free(err);
  }
  return NULL;
}

int mapi_reads_init(mapi_service *s, ms_error **err) {
  pthread_mutex_init(&s->reads_mu, NULL);
  if (!s->cfg.max_queued_reads)
    s->cfg.max_queued_reads = 1024;
  s->reads_loop = ms_loop_new(err);
  return s->reads_loop ? 0 : MS_ERR;
}

int mapi_reads_start(mapi_service *s, ms_error **err) {
  int e = pthread_create(&s->reads_thread, NULL, reads_main, s);
  if (e != 0)
    return ms_error_set_errno(err, e, "starting the reads thread");
  s->reads_started = true;
  return 0;
}

void mapi_reads_close(mapi_service *s) {
  if (!s->reads_loop)
    return;
  pthread_mutex_lock(&s->reads_mu);
  bool was = s->reads_closed;
  s->reads_closed = true;
  if (!was)
    ms_loop_post(s->reads_loop, close_run, s);
  pthread_mutex_unlock(&s->reads_mu);
  if (was)
    return;
  if (s->reads_started) {
    pthread_join(s->reads_thread, NULL);
    s->reads_started = false;
  } else { /* never started: what was handed over is answered here */
    ms_loop_run(s->reads_loop, NULL);
  }
}

void mapi_reads_free(mapi_service *s) {
  ms_loop_free(TAKE_PTR(s->reads_loop));
  pthread_mutex_destroy(&s->reads_mu);
}
