/* grpc.health.v1.Health on every server: Check, and Watch streams that hear every
 * change of the service they watch. "" is the server as a whole. */
#include <pthread.h>
#include <string.h>

#include "meseta/alloc.h"

#include "grpc/health/v1/health.pb-c.h"
#include "rpc-internal.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;
#define ST(x) GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__##x

typedef struct entry {
  char *service;
  serving_status status;
} entry;

typedef struct watcher {
  ms_rpc_call *call;
  char *service;
  serving_status last;
} watcher;

struct ms_rpc_health {
  pthread_mutex_t mu;
  entry *entries;
  size_t n_entries;
  watcher *watchers;
  size_t n_watchers;
  bool shut;
};

static struct ms_rpc_health *health_of(ms_rpc_server *srv) {
  struct ms_rpc_health **slot = ms_rpc__server_health_slot(srv);
  if (!*slot) {
    *slot = ms_xcalloc(1, sizeof(**slot));
    pthread_mutex_init(&(*slot)->mu, NULL);
  }
  return *slot;
}

static serving_status lookup(struct ms_rpc_health *h, const char *service) {
  for (size_t i = 0; i < h->n_entries; i++)
    if (strcmp(h->entries[i].service, service) == 0)
      return h->entries[i].status;
  return ST(SERVICE_UNKNOWN);
}

static void send_status(ms_rpc_call *call, serving_status st) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = st;
  /* A watcher too slow to take its updates is cut off rather than buffered forever. */
  ms_error *err = NULL;
  if (ms_rpc_call_send(call, &resp.base, &err) < 0) {
    ms_rpc_call_finish_error(call, err);
    ms_error_free(err);
  }
}

/* Tells watchers of `service` its new status. Called with h->mu held. */
static void notify_locked(struct ms_rpc_health *h, const char *service, serving_status st) {
  for (size_t i = 0; i < h->n_watchers; i++) {
    watcher *w = &h->watchers[i];
    if (strcmp(w->service, service) == 0 && w->last != st) {
      w->last = st;
      send_status(w->call, st);
    }
  }
}

void ms_rpc__health_set(ms_rpc_server *srv, const char *service, bool serving) {
  struct ms_rpc_health *h = health_of(srv);
  serving_status st = serving ? ST(SERVING) : ST(NOT_SERVING);
  pthread_mutex_lock(&h->mu);
  if (h->shut) {
    pthread_mutex_unlock(&h->mu);
    return;
  }
  entry *e = NULL;
  for (size_t i = 0; i < h->n_entries; i++)
    if (strcmp(h->entries[i].service, service) == 0)
      e = &h->entries[i];
  if (!e) {
    h->entries = ms_xrealloc(h->entries, (h->n_entries + 1) * sizeof(*h->entries));
    e = &h->entries[h->n_entries++];
    e->service = ms_xstrdup(service);
  }
  e->status = st;
  notify_locked(h, service, st);
  pthread_mutex_unlock(&h->mu);
}

void ms_rpc__health_shutdown(ms_rpc_server *srv) {
  struct ms_rpc_health *h = health_of(srv);
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n_entries; i++) {
    h->entries[i].status = ST(NOT_SERVING);
    notify_locked(h, h->entries[i].service, ST(NOT_SERVING));
  }
  h->shut = true;
  /* Watch streams would otherwise hold a graceful shutdown for its whole grace. */
  for (size_t i = 0; i < h->n_watchers; i++)
    ms_rpc_call_finish(h->watchers[i].call, MS_UNAVAILABLE, "server is shutting down");
  pthread_mutex_unlock(&h->mu);
}

void ms_rpc__health_free(ms_rpc_server *srv) {
  struct ms_rpc_health **slot = ms_rpc__server_health_slot(srv);
  struct ms_rpc_health *h = *slot;
  if (!h)
    return;
  for (size_t i = 0; i < h->n_entries; i++)
    free(h->entries[i].service);
  free(h->entries);
  for (size_t i = 0; i < h->n_watchers; i++)
    free(h->watchers[i].service);
  free(h->watchers);
  pthread_mutex_destroy(&h->mu);
  free(h);
  *slot = NULL;
}

static int check(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
  struct ms_rpc_health *h = health_of(ms_rpc_call_userdata(call));
  pthread_mutex_lock(&h->mu);
  serving_status st = lookup(h, req->service);
  pthread_mutex_unlock(&h->mu);
  if (st == ST(SERVICE_UNKNOWN))
    return ms_error_set(err, MS_NOT_FOUND, "service `%s` is unknown", req->service);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = st;
  return ms_rpc_call_reply(call, &resp.base, err);
}

static int watch(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
  struct ms_rpc_health *h = health_of(ms_rpc_call_userdata(call));
  pthread_mutex_lock(&h->mu);
  if (h->shut) {
    pthread_mutex_unlock(&h->mu);
    return ms_error_set(err, MS_UNAVAILABLE, "server is shutting down");
  }
  serving_status st = lookup(h, req->service);
  h->watchers = ms_xrealloc(h->watchers, (h->n_watchers + 1) * sizeof(*h->watchers));
  h->watchers[h->n_watchers++] = (watcher){.call = call, .service = ms_xstrdup(req->service), .last = st};
  send_status(call, st);
  pthread_mutex_unlock(&h->mu);
  return 0;
}

static void watch_done(ms_rpc_call *call, bool cancelled) {
  struct ms_rpc_health *h = health_of(ms_rpc_call_userdata(call));
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n_watchers; i++) {
    if (h->watchers[i].call == call) {
      free(h->watchers[i].service);
      h->watchers[i] = h->watchers[--h->n_watchers];
      break;
    }
  }
  pthread_mutex_unlock(&h->mu);
}

int ms_rpc__health_register(ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "Check", .on_start = check},
      {.name = "Watch", .on_start = watch, .on_done = watch_done},
  };
  health_of(srv);
  return ms_rpc_server_add_service(srv, &grpc__health__v1__health__descriptor, methods,
                                   MS_ARRAY_SIZE(methods), srv, err);
}
