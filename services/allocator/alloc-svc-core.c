/* The core layer: tables, posting from the server thread, sending on streams, time,
 * ids, the coalesced cycle request and the hook lists (alloc-svc-core.h). */
#include "alloc-svc-core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/time.h"

/* ---- tables ---- */

void *svc_table_get(const svc_table *t, const char *key) {
  uint32_t i = alloc_map_get(&t->map, key ? key : "");
  return i == ALLOC_NONE ? NULL : t->v[i];
}

void svc_table_put(svc_table *t, svc_entry *e) {
  if (t->n == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 16;
    t->v = ms_xrealloc(t->v, t->cap * sizeof(*t->v));
  }
  t->v[t->n] = e;
  alloc_map_put(&t->map, e->key, t->n);
  t->n++;
}

void svc_table_del(svc_table *t, svc_entry *e) {
  uint32_t i = alloc_map_get(&t->map, e->key);
  if (i == ALLOC_NONE)
    return;
  alloc_map_del(&t->map, e->key);
  t->n--;
  if (i != t->n) {
    t->v[i] = t->v[t->n];
    alloc_map_put(&t->map, t->v[i]->key, i);
  }
}

void svc_table_release(svc_table *t) {
  free(t->v);
  alloc_map_release(&t->map);
  memset(t, 0, sizeof(*t));
}

/* ---- small helpers ---- */

static int64_t wall_ms(void) { /* for a window given in wall time */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool svc_agent_window(alloc_service *s, const Meseta__V1__AgentInfo *info, int64_t *start_ms,
                      int64_t *duration_ms, const Meseta__V1__Unavailability **ret) {
  *start_ms = *duration_ms = 0;
  if (!s->schedule || !info || !info->hostname || !*info->hostname)
    return false;
  for (size_t i = 0; i < s->schedule->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = s->schedule->windows[i];
    for (size_t k = 0; k < w->n_machine_ids; k++) {
      const Meseta__V1__MachineID *m = w->machine_ids[k];
      bool match = (m->hostname && strcmp(m->hostname, info->hostname) == 0) ||
                   (m->ip && *m->ip && strcmp(m->ip, info->hostname) == 0);
      if (!match || !w->unavailability || !w->unavailability->start)
        continue;
      const Google__Protobuf__Timestamp *t = w->unavailability->start;
      int64_t start_wall = t->seconds * 1000 + t->nanos / 1000000;
      *start_ms = start_wall - wall_ms() + svc_now_ms();
      const Google__Protobuf__Duration *d = w->unavailability->duration;
      *duration_ms = d ? d->seconds * 1000 + d->nanos / 1000000 : -1;
      if (*duration_ms == 0)
        *duration_ms = 1;
      if (ret)
        *ret = w->unavailability;
      return true;
    }
  }
  return false;
}

int64_t svc_now_ms(void) {
  return ms_time_mono_ms();
}

void svc_uuid_bytes(uint8_t out[16]) {
  size_t got = 0;
  while (got < 16) {
    ssize_t r = getrandom(out + got, 16 - got, 0);
    if (r > 0)
      got += (size_t)r;
  }
  out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
  out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}

void svc_uuid(char *buf) {
  uint8_t b[16];
  svc_uuid_bytes(b);
  snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

char *svc_key2(const char *a, const char *b) {
  return ms_xasprintf("%s\x1f%s", a, b);
}

char *svc_key3(const char *a, const char *b, const char *c) {
  return ms_xasprintf("%s\x1f%s\x1f%s", a, b, c);
}

/* ---- posting ---- */

typedef struct svc_job {
  alloc_service *s;
  svc_fn fn;
  ms_rpc_call *call;
  void *data;
  ProtobufCMessage *msg;
  bool held; /* a client-stream message the rpc layer waits on (ms_rpc_call_hold) */
} svc_job;

static void run_job(void *arg) {
  svc_job *j = arg;
  j->fn(j->s, j->call, j->data, j->msg);
  if (j->msg)
    protobuf_c_message_free_unpacked(j->msg, NULL);
  if (j->held)
    ms_rpc_call_consumed(j->call);
  if (j->call)
    ms_rpc_call_unref(j->call);
  free(j);
}

static svc_job *job_new(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  svc_job *j = ms_xmalloc(sizeof(*j));
  *j = (svc_job){s, fn, call, data, msg, false};
  if (call)
    ms_rpc_call_ref(call);
  return j;
}

void svc_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  ms_loop_post(s->loop, run_job, job_new(s, fn, call, data, msg));
}

int svc_try_post(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg,
                 ms_error **err) {
  svc_job *j = job_new(s, fn, call, data, msg);
  if (ms_loop_try_post(s->loop, run_job, j, err) == 0)
    return 0;
  if (msg)
    protobuf_c_message_free_unpacked(msg, NULL);
  if (call)
    ms_rpc_call_unref(call);
  free(j);
  return ms_error_prefix(err, "allocator busy");
}

void svc_post_held(alloc_service *s, svc_fn fn, ms_rpc_call *call, void *data, ProtobufCMessage *msg) {
  svc_job *j = job_new(s, fn, call, data, msg);
  j->held = true;
  ms_rpc_call_hold(call);
  ms_loop_post(s->loop, run_job, j);
}

/* ---- sending ---- */

void svc_send_event(alloc_service *s, svc_framework *fw, const Meseta__V1__Event *ev) {
  (void)s;
  if (!fw || !fw->stream)
    return;
  ms_error *err = NULL;
  if (ms_rpc_call_send(fw->stream, &ev->base, &err) < 0) {
    /* Too slow or gone: end the stream; its on_done deactivates the framework. */
    ms_log_warn(fw->e.key, "framework stream: %s", err->msg);
    ms_rpc_call_finish_error(fw->stream, err);
    ms_error_free(err);
  }
}

void svc_send_agent(alloc_service *s, svc_agent *a, const Meseta__V1__AllocatorMessage *m) {
  (void)s;
  if (!a || !a->link)
    return;
  ms_error *err = NULL;
  if (ms_rpc_call_send(a->link->call, &m->base, &err) < 0) {
    ms_log_warn(a->e.key, "agent link: %s", err->msg);
    ms_rpc_call_finish_error(a->link->call, err);
    ms_error_free(err);
  }
}

void svc_send_ack(alloc_service *s, svc_agent *a, const char *framework_id, const char *task_id,
                  const ProtobufCBinaryData *uuid) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)framework_id;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = (char *)task_id;
  Meseta__V1__AllocatorMessage__AcknowledgeStatus ack =
      MESETA__V1__ALLOCATOR_MESSAGE__ACKNOWLEDGE_STATUS__INIT;
  ack.framework_id = &fid;
  ack.task_id = &tid;
  ack.uuid = *uuid;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_STATUS;
  m.acknowledge_status = &ack;
  svc_send_agent(s, a, &m);
}

void svc_send_update(alloc_service *s, svc_framework *fw, const Meseta__V1__TaskStatus *st) {
  Meseta__V1__Event__Update u = MESETA__V1__EVENT__UPDATE__INIT;
  u.status = (Meseta__V1__TaskStatus *)st;
  Meseta__V1__Event ev = MESETA__V1__EVENT__INIT;
  ev.event_case = MESETA__V1__EVENT__EVENT_UPDATE;
  ev.update = &u;
  svc_send_event(s, fw, &ev);
}

/* ---- serving, health, the cycle request ---- */

bool svc_serving(const alloc_service *s, const char **why) {
  if (s->leading && !s->loading)
    return true;
  *why =
      s->leading ? "this allocator is recovering: loading the registry" : "this allocator is not the leader";
  return false;
}

bool svc_refuse_unless_serving(const alloc_service *s, ms_rpc_call *call) {
  const char *why;
  if (svc_serving(s, &why))
    return false;
  ms_rpc_call_finish(call, MS_UNAVAILABLE, why);
  return true;
}

void svc_set_health(alloc_service *s, bool serving) {
  if (!s->srv)
    return;
  ms_rpc_server_set_health(s->srv, "", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.AgentLink", serving);
  ms_rpc_server_set_health(s->srv, "meseta.v1.Allocator", serving);
}

static void soon_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  alloc_service *s = arg;
  s->soon_timer = 0;
  s->hooks.run_cycle(s);
}

void svc_want_cycle(alloc_service *s) {
  if (s->soon_timer || !s->leading || s->closing || s->loading || s->recovering)
    return;
  /* A few milliseconds let a burst of events (agents registering, tasks ending) share
   * one cycle. */
  s->soon_timer = ms_loop_add_timer(s->loop, 5, 0, soon_tick, s);
}

void svc_check_trigger(alloc_service *s) {
  if (alloc_model_take_trigger(s->model))
    svc_want_cycle(s);
}

void svc_start_timers(alloc_service *s) {
  s->hooks.start_timers(s);
}

/* ---- hooks ---- */

#define HOOK_ADD(list, n, fn)                                                                                \
  do {                                                                                                       \
    if ((n) >= SVC_MAX_HOOKS)                                                                                \
      abort();                                                                                               \
    (list)[(n)++] = (fn);                                                                                    \
  } while (0)

void svc_hook_forget_all(alloc_service *s, svc_hook_fn fn) {
  HOOK_ADD(s->hooks.forget_all, s->hooks.nforget_all, fn);
}

void svc_hook_agent_removed(alloc_service *s, svc_agent_hook fn) {
  HOOK_ADD(s->hooks.agent_removed, s->hooks.nagent_removed, fn);
}

void svc_hook_framework_removed(alloc_service *s, svc_framework_hook fn) {
  HOOK_ADD(s->hooks.framework_removed, s->hooks.nframework_removed, fn);
}

void svc_hook_task_ended(alloc_service *s, svc_task_hook fn) {
  HOOK_ADD(s->hooks.task_ended, s->hooks.ntask_ended, fn);
}

void svc_run_forget_all(alloc_service *s) {
  for (uint32_t i = 0; i < s->hooks.nforget_all; i++)
    s->hooks.forget_all[i](s);
}

void svc_run_agent_removed(alloc_service *s, const char *agent_id, bool gone, const char *why) {
  for (uint32_t i = 0; i < s->hooks.nagent_removed; i++)
    s->hooks.agent_removed[i](s, agent_id, gone, why);
}

void svc_run_framework_removed(alloc_service *s, const char *framework_id) {
  for (uint32_t i = 0; i < s->hooks.nframework_removed; i++)
    s->hooks.framework_removed[i](s, framework_id);
}

void svc_run_task_ended(alloc_service *s, const svc_task *t) {
  for (uint32_t i = 0; i < s->hooks.ntask_ended; i++)
    s->hooks.task_ended[i](s, t);
}

void svc_hook_registry_loaded(alloc_service *s, svc_loaded_hook fn) {
  HOOK_ADD(s->hooks.registry_loaded, s->hooks.nregistry_loaded, fn);
}

void svc_run_registry_loaded(alloc_service *s, const struct svc_reg_loaded *l, const ms_error *err,
                             bool current) {
  for (uint32_t i = 0; i < s->hooks.nregistry_loaded; i++)
    s->hooks.registry_loaded[i](s, l, err, current);
}
