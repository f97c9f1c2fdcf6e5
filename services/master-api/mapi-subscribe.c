/* Scheduler.Subscribe relayed to Allocator.SubscribeFramework: one thread per
 * subscription reads the allocator's stream and sends each event to the scheduler.
 * The scheduler cancelling cancels the allocator's stream; the allocator's stream
 * ending finishes the scheduler's call with the same status and message. */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/time.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "mapi-internal.h"

struct mapi_relay {
  mapi_service *s;
  ms_rpc_call *call;                      /* referenced until the thread ends */
  Meseta__V1__FrameworkSubscription *sub; /* owned by the thread */
  ms_rpc_stream *up;                      /* under s->mu while open */
  bool cancelled;                         /* under s->mu */
  atomic_int refs;                        /* the thread and the call's data slot */
  mapi_relay *prev, *next;                /* s->relays, under s->mu */
};

static void relay_unref(mapi_relay *r) {
  if (atomic_fetch_sub(&r->refs, 1) == 1)
    free(r);
}

static void *relay_main(void *arg) {
  mapi_relay *r = arg;
  mapi_service *s = r->s;
  ms_error *err = NULL;
  ms_rpc_stream *up =
      ms_rpc_stream_open(s->alloc, "/meseta.v1.Allocator/SubscribeFramework", &r->sub->base, NULL, &err);
  protobuf_c_message_free_unpacked(&TAKE_PTR(r->sub)->base, NULL);
  if (up) {
    pthread_mutex_lock(&s->mu);
    r->up = up;
    if (r->cancelled)
      ms_rpc_stream_cancel(up);
    pthread_mutex_unlock(&s->mu);
    for (;;) {
      ProtobufCMessage *m = NULL;
      int rc = ms_rpc_stream_recv(up, &meseta__v1__event__descriptor, &m, &err);
      if (rc <= 0)
        break; /* 0: the allocator ended the stream OK; err is NULL */
      int sent = ms_rpc_call_send(r->call, m, &err);
      protobuf_c_message_free_unpacked(m, NULL);
      if (sent < 0) {
        /* The scheduler left, or is too slow for its stream (RESOURCE_EXHAUSTED). */
        ms_rpc_stream_cancel(up);
        break;
      }
    }
    pthread_mutex_lock(&s->mu);
    r->up = NULL;
    pthread_mutex_unlock(&s->mu);
    ms_rpc_stream_free(up);
  }
  if (err)
    ms_log_debug(NULL, "Subscribe relay: %s", err->msg);
  ms_rpc_call_finish_error(r->call, err); /* OK when err is NULL; after on_done: harmless */
  ms_error_free(err);
  ms_rpc_call_unref(r->call);
  pthread_mutex_lock(&s->mu);
  if (r->prev)
    r->prev->next = r->next;
  else
    s->relays = r->next;
  if (r->next)
    r->next->prev = r->prev;
  s->n_relays--;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->mu);
  relay_unref(r);
  return NULL;
}

int mapi_subscribe_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  mapi_service *s = ms_rpc_call_userdata(call);
  const Meseta__V1__SubscribeRequest *sr = (const Meseta__V1__SubscribeRequest *)req;
  if (!sr->framework_info)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "framework_info: required");
  if (atomic_load(&s->stopping))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api is shutting down");
  mapi_relay *r = ms_xcalloc(1, sizeof(*r));
  r->s = s;
  r->call = call;
  r->sub = ms_pb_new(&meseta__v1__framework_subscription__descriptor);
  r->sub->principal = mapi_principal(s, call);
  r->sub->request = (Meseta__V1__SubscribeRequest *)ms_pb_dup(req);
  atomic_init(&r->refs, 2);
  ms_rpc_call_ref(call);
  pthread_mutex_lock(&s->mu);
  r->next = s->relays;
  if (s->relays)
    s->relays->prev = r;
  s->relays = r;
  s->n_relays++;
  pthread_mutex_unlock(&s->mu);
  ms_rpc_call_set_data(call, r);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&t, &attr, relay_main, r);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    ms_rpc_call_set_data(call, NULL);
    pthread_mutex_lock(&s->mu);
    if (r->prev)
      r->prev->next = r->next;
    else
      s->relays = r->next;
    if (r->next)
      r->next->prev = r->prev;
    s->n_relays--;
    pthread_mutex_unlock(&s->mu);
    protobuf_c_message_free_unpacked(&r->sub->base, NULL);
    free(r);
    ms_rpc_call_unref(call);
    return ms_error_set_errno(err, e, "starting the relay thread");
  }
  return 0;
}

void mapi_subscribe_done(ms_rpc_call *call, bool cancelled) {
  (void)cancelled;
  mapi_relay *r = ms_rpc_call_data(call);
  if (!r)
    return;
  ms_rpc_call_set_data(call, NULL);
  mapi_service *s = r->s;
  pthread_mutex_lock(&s->mu);
  r->cancelled = true;
  if (r->up)
    ms_rpc_stream_cancel(r->up);
  pthread_mutex_unlock(&s->mu);
  relay_unref(r);
}

void mapi_relays_close(mapi_service *s) {
  pthread_mutex_lock(&s->mu);
  for (mapi_relay *r = s->relays; r; r = r->next) {
    r->cancelled = true;
    if (r->up)
      ms_rpc_stream_cancel(r->up);
  }
  /* A relay still opening its stream sees `cancelled` once it has it. */
  int64_t until = ms_time_mono_ms() + 10000;
  while (s->n_relays && ms_time_mono_ms() < until) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    for (mapi_relay *r = s->relays; r; r = r->next)
      if (r->up)
        ms_rpc_stream_cancel(r->up);
  }
  if (s->n_relays)
    ms_log_warn(NULL, "%zu Subscribe relays still running at shutdown", s->n_relays);
  pthread_mutex_unlock(&s->mu);
}
