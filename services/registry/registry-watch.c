/* Watch and WatchLeader: each stream is an etcd watch on its own thread whose
 * events become stream messages. Starting and stopping etcd watches block, so both
 * happen on the worker pool; a small reference count decides who frees the state. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "registry-internal.h"

typedef struct stream {
  reg_service *svc;
  ms_rpc_call *call; /* referenced until the stream is freed */
  bool leader;       /* WatchLeader, else Watch */
  uint32_t kinds;    /* bit per RecordKind; 0: all */
  int64_t start;     /* first revision to deliver; 0: from now */
  char *election;    /* WatchLeader: "<name>/" */
  char *last_key, *last_value;
  pthread_mutex_t mu;
  int refs;
  bool done;
  ms_etcd_watch *w;
} stream;

static void stream_unref(stream *s) {
  pthread_mutex_lock(&s->mu);
  bool last = --s->refs == 0;
  pthread_mutex_unlock(&s->mu);
  if (!last)
    return;
  ms_rpc_call_unref(s->call);
  free(s->election);
  free(s->last_key);
  free(s->last_value);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* Ends the call with an error unless it is over already. */
static void end_with(stream *s, const ms_error *err) {
  ms_rpc_call_finish_error(s->call, err);
}

static void send_or_end(stream *s, const ProtobufCMessage *msg) {
  ms_error *err = NULL;
  if (ms_rpc_call_send(s->call, msg, &err) < 0) {
    if (err->code == MS_RESOURCE_EXHAUSTED)
      ms_error_prefix(&err, "the watcher reads too slowly; watch again from its last revision");
    end_with(s, err);
    ms_error_free(err);
  }
}

/* ---- Watch ---------------------------------------------------------------------------- */

static void on_record_events(void *arg, const ms_etcd_event *ev, size_t n) {
  stream *s = arg;
  const reg_config *cfg = reg_service_config(s->svc);
  Meseta__V1__WatchEvent *events = ms_xcalloc(n, sizeof(*events));
  Meseta__V1__WatchEvent **ptrs = ms_xcalloc(n, sizeof(*ptrs));
  char **ids = ms_xcalloc(n, sizeof(*ids));
  size_t m = 0;
  int64_t last = 0;
  for (size_t i = 0; i < n; i++) {
    reg_kind kind;
    const char *id;
    size_t id_len;
    last = ev[i].kv.mod_revision;
    if (!reg_parse_key(cfg->prefix, ev[i].kv.key, ev[i].kv.key_len, &kind, &id, &id_len))
      continue;
    if (s->kinds && !(s->kinds & (1u << kind)))
      continue;
    Meseta__V1__WatchEvent *e = &events[m];
    meseta__v1__watch_event__init(e);
    e->kind = kind;
    e->id = ids[m] = ms_xstrndup(id, id_len);
    e->revision = ev[i].kv.mod_revision;
    if (ev[i].type == MS_ETCD_EVENT_PUT) {
      e->type = MESETA__V1__WATCH_EVENT__TYPE__PUT;
      ms_error *err = NULL;
      e->record = reg_decode(s->svc, &ev[i].kv, &err);
      if (!e->record) { /* a corrupt record is reported, not skipped */
        end_with(s, err);
        ms_error_free(err);
        break;
      }
    } else {
      e->type = MESETA__V1__WATCH_EVENT__TYPE__DELETE;
    }
    ptrs[m++] = e;
  }
  /* One etcd batch (a registry Batch is one) may be larger than a gRPC message:
   * send it in as many responses as it takes, in order. */
  size_t budget = reg_response_budget(s->svc), from = 0;
  while (from < m) {
    size_t to = from, bytes = 0;
    do {
      bytes += protobuf_c_message_get_packed_size(&ptrs[to]->base) + 8;
      to++;
    } while (to < m && bytes + protobuf_c_message_get_packed_size(&ptrs[to]->base) + 8 <= budget);
    Meseta__V1__WatchResponse resp = MESETA__V1__WATCH_RESPONSE__INIT;
    resp.events = ptrs + from;
    resp.n_events = to - from;
    resp.revision = to == m ? last : ptrs[to - 1]->revision;
    send_or_end(s, &resp.base);
    from = to;
  }
  for (size_t i = 0; i < m; i++) {
    if (events[i].record)
      meseta__v1__record__free_unpacked(events[i].record, NULL);
    free(ids[i]);
  }
  free(ids);
  free(ptrs);
  free(events);
}

static void on_watch_error(void *arg, const ms_error *err) {
  stream *s = arg;
  ms_error *e = NULL;
  ms_error_set(&e, err->code, "%s", err->msg);
  if (err->code == MS_OUT_OF_RANGE)
    ms_error_prefix(&e, "field `start_revision`: list again, then watch from the listing's revision");
  end_with(s, e);
  ms_error_free(e);
}

/* ---- WatchLeader ---------------------------------------------------------------------- */

/* Sends the current leader if it differs from what was sent last. */
static void report_leader(stream *s) {
  const reg_config *cfg = reg_service_config(s->svc);
  ms_etcd_kv kv = {0};
  ms_error *err = NULL;
  bool present =
      ms_etcd_leader(reg_service_etcd(s->svc), cfg->election, strlen(cfg->election), &kv, &err) == 0;
  if (!present && err->code != MS_NOT_FOUND) {
    ms_log_debug(NULL, "leader of `%s`: %s", cfg->election, err->msg);
    ms_error_free(err);
    return; /* etcd trouble: the watch reconnects and asks again */
  }
  ms_error_free(err);
  const char *key = present ? kv.key : "", *value = present ? kv.value : "";
  if (s->last_key && strcmp(s->last_key, key) == 0 && strcmp(s->last_value, value) == 0) {
    ms_etcd_kv_release(&kv);
    return;
  }
  free(s->last_key);
  free(s->last_value);
  s->last_key = ms_xstrdup(key);
  s->last_value = ms_xstrdup(value);
  Meseta__V1__LeaderInfo li = MESETA__V1__LEADER_INFO__INIT;
  li.present = present;
  li.address = (char *)value;
  li.key = (char *)key;
  li.revision = present ? kv.create_revision : 0;
  send_or_end(s, &li.base);
  ms_etcd_kv_release(&kv);
}

static void on_election_events(void *arg, const ms_etcd_event *ev, size_t n) {
  report_leader(arg);
}

static void on_election_connection(void *arg, bool up, const ms_error *why) {
  if (up) /* anything may have happened while the watch was away */
    report_leader(arg);
}

/* ---- start and stop --------------------------------------------------------------------- */

static void start_job(void *arg) {
  stream *s = arg;
  const reg_config *cfg = reg_service_config(s->svc);
  ms_error *err = NULL;
  ms_etcd_watch *w = NULL;
  if (s->leader) {
    static const ms_etcd_watch_cb cb = {
        .on_events = on_election_events, .on_error = on_watch_error, .on_connection = on_election_connection};
    report_leader(s);
    w = ms_etcd_watch_start(reg_service_etcd(s->svc), s->election, strlen(s->election), true, 0, &cb, s,
                            &err);
  } else {
    static const ms_etcd_watch_cb cb = {.on_events = on_record_events, .on_error = on_watch_error};
    _cleanup_free_ char *prefix = ms_xasprintf("%s/v1/", cfg->prefix);
    w = ms_etcd_watch_start(reg_service_etcd(s->svc), prefix, strlen(prefix), true, s->start, &cb, s, &err);
  }
  if (!w) {
    end_with(s, err);
    ms_error_free(err);
  }
  pthread_mutex_lock(&s->mu);
  bool done = s->done;
  if (!done)
    s->w = TAKE_PTR(w);
  pthread_mutex_unlock(&s->mu);
  ms_etcd_watch_stop(w); /* the call ended while the watch started: stop it here */
  stream_unref(s);
}

static void stop_job(void *arg) {
  stream *s = arg;
  ms_etcd_watch_stop(s->w);
  stream_unref(s);
}

static int start(ms_rpc_call *call, stream *s, ms_error **err) {
  s->svc = ms_rpc_call_userdata(call);
  s->call = call;
  s->refs = 2; /* the call's (dropped in reg_watch_done) and the start job's */
  pthread_mutex_init(&s->mu, NULL);
  ms_rpc_call_ref(call);
  ms_rpc_call_set_data(call, s);
  if (ms_workq_push(reg_service_pool(s->svc), start_job, s, err) < 0) {
    s->refs = 1;
    return MS_ERR; /* reg_watch_done frees it */
  }
  return 0;
}

int reg_watch_start(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__WatchRequest *req = (const void *)msg;
  stream *s = ms_xcalloc(1, sizeof(*s));
  for (size_t i = 0; i < req->n_kinds; i++) {
    if (!reg_kind_segment(req->kinds[i])) {
      free(s);
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `kinds[%zu]`: %d is not a record kind", i,
                          (int)req->kinds[i]);
    }
    s->kinds |= 1u << req->kinds[i];
  }
  if (req->start_revision < 0) {
    free(s);
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `start_revision`: %lld is negative",
                        (long long)req->start_revision);
  }
  s->start = req->start_revision ? req->start_revision + 1 : 0;
  return start(call, s, err);
}

int reg_leader_start(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Meseta__V1__WatchLeaderRequest *req = (const void *)msg;
  const reg_config *cfg = reg_service_config(ms_rpc_call_userdata(call));
  if (*req->election && strcmp(req->election, cfg->election) != 0)
    return ms_error_set(err, MS_NOT_FOUND, "field `election`: this registry follows `%s`, not `%s`",
                        cfg->election, req->election);
  stream *s = ms_xcalloc(1, sizeof(*s));
  s->leader = true;
  s->election = ms_xasprintf("%s/", cfg->election);
  return start(call, s, err);
}

void reg_watch_done(ms_rpc_call *call, bool cancelled) {
  stream *s = ms_rpc_call_data(call);
  if (!s)
    return;
  pthread_mutex_lock(&s->mu);
  s->done = true;
  ms_etcd_watch *w = s->w;
  pthread_mutex_unlock(&s->mu);
  /* Stopping joins the watch thread: not on the server thread. */
  if (w) {
    ms_error *err = NULL;
    if (ms_workq_push(reg_service_pool(s->svc), stop_job, s, &err) == 0)
      return;
    ms_error_free(err);
    ms_etcd_watch_stop(w);
  }
  stream_unref(s);
}
