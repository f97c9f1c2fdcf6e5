/* Client threads reading the whole state from master-api replicas; see load.h. */
#include "load.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/v1/operator.pb-c.h"

#include "raw-grpc.h"

#define PAGE 5000
#define CALL_TIMEOUT_MS 120000
#define MAX_MESSAGE (1024 * 1024 * 1024)

#define MEMBER(msg, off, type) (*(type *)((char *)(msg) + (off)))

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct worker {
  load_mode mode;
  const char *target;
  double end;
  double *lat; /* ms */
  size_t n, cap, errors;
  double bytes, calls, finished_at;
  char first_error[256];
} worker;

static void note_error(worker *w, const char *what) {
  if (w->errors++ == 0)
    snprintf(w->first_error, sizeof(w->first_error), "%s", what);
}

static void record(worker *w, double ms) {
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 256;
    w->lat = ms_xrealloc(w->lat, w->cap * sizeof(*w->lat));
  }
  w->lat[w->n++] = ms;
}

/* GetState, the bytes only. */
static void run_state(worker *w) {
  grpc_arg args[] = {
      {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}}, /* a connection of its own */
      {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = -1}},
  };
  grpc_channel_args cargs = {MS_ARRAY_SIZE(args), args};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(w->target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  void *reg = grpc_channel_register_call(ch, "/meseta.v1.Operator/GetState", NULL, NULL);
  while (now_s() < w->end) {
    grpc_slice empty = grpc_empty_slice();
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&empty, 1);
    grpc_byte_buffer *resp = NULL;
    char *details = NULL;
    double t0 = now_s();
    grpc_status_code st = ms_raw_unary(ch, cq, reg, NULL, req, CALL_TIMEOUT_MS, &resp, &details);
    double ms = (now_s() - t0) * 1e3;
    grpc_byte_buffer_destroy(req);
    if (st == GRPC_STATUS_OK && resp) {
      record(w, ms);
      w->bytes += (double)grpc_byte_buffer_length(resp);
      w->calls += 1;
    } else {
      note_error(w, details && *details ? details : "GetState failed");
    }
    if (resp)
      grpc_byte_buffer_destroy(resp);
    free(details);
  }
  ms_raw_cq_destroy(cq);
  grpc_channel_destroy(ch);
}

/* Lists every page of one read into the walk's totals; false on an error. The
 * request's fields 1-3 are min_revision, page_size, page_token; the response's are
 * revision, next_page_token and the items. */
static bool list_all(worker *w, ms_rpc_channel *ch, const char *method, ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, int64_t *revision, double *bytes,
                     double *calls) {
  const ProtobufCMessageDescriptor *d = req->descriptor;
  const ProtobufCFieldDescriptor *fr = protobuf_c_message_descriptor_get_field(d, 1);
  const ProtobufCFieldDescriptor *fs = protobuf_c_message_descriptor_get_field(d, 2);
  const ProtobufCFieldDescriptor *ft = protobuf_c_message_descriptor_get_field(d, 3);
  const ProtobufCFieldDescriptor *rr = protobuf_c_message_descriptor_get_field(resp_desc, 1);
  const ProtobufCFieldDescriptor *rt = protobuf_c_message_descriptor_get_field(resp_desc, 2);
  MEMBER(req, fs->offset, uint32_t) = PAGE;
  char *token = NULL;
  ms_rpc_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
  for (;;) {
    MEMBER(req, fr->offset, int64_t) = *revision; /* one revision or later for the whole walk */
    MEMBER(req, ft->offset, char *) = token ? token : "";
    ProtobufCMessage *resp = NULL;
    ms_error *err = NULL;
    int rc = ms_rpc_unary(ch, method, req, resp_desc, &co, &resp, &err);
    free(token);
    token = NULL;
    if (rc < 0) {
      note_error(w, err->msg);
      ms_error_free(err);
      return false;
    }
    *bytes += (double)protobuf_c_message_get_packed_size(resp);
    *calls += 1;
    if (!*revision)
      *revision = MEMBER(resp, rr->offset, int64_t);
    const char *next = MEMBER(resp, rt->offset, const char *);
    if (next && *next)
      token = ms_xstrdup(next);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!token)
      return true;
  }
}

static void run_paged(worker *w) {
  ms_rpc_channel_options o = {.max_message_bytes = MAX_MESSAGE};
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(w->target, &o, &err);
  if (!ch) {
    note_error(w, err->msg);
    ms_error_free(err);
    return;
  }
  while (now_s() < w->end) {
    double t0 = now_s(), bytes = 0, calls = 0;
    int64_t rev = 0;
    Meseta__V1__GetAgentsRequest ar = MESETA__V1__GET_AGENTS_REQUEST__INIT;
    Meseta__V1__GetFrameworksRequest fr = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
    fr.include_completed = true;
    Meseta__V1__GetTasksRequest tr = MESETA__V1__GET_TASKS_REQUEST__INIT;
    tr.include_completed = true;
    bool ok = list_all(w, ch, "/meseta.v1.Operator/GetAgents", &ar.base,
                       &meseta__v1__get_agents_response__descriptor, &rev, &bytes, &calls) &&
              list_all(w, ch, "/meseta.v1.Operator/GetFrameworks", &fr.base,
                       &meseta__v1__get_frameworks_response__descriptor, &rev, &bytes, &calls) &&
              list_all(w, ch, "/meseta.v1.Operator/GetTasks", &tr.base,
                       &meseta__v1__get_tasks_response__descriptor, &rev, &bytes, &calls);
    if (ok) {
      record(w, (now_s() - t0) * 1e3);
      w->bytes += bytes;
      w->calls += calls;
    }
  }
  ms_rpc_channel_free(ch);
}

static void *run(void *arg) {
  worker *w = arg;
  if (w->mode == LOAD_STATE)
    run_state(w);
  else
    run_paged(w);
  w->finished_at = now_s();
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void load_run(load_mode mode, const char *const *targets, size_t ntargets, int clients, double seconds,
              load_result *ret) {
  memset(ret, 0, sizeof(*ret));
  worker *w = ms_xcalloc((size_t)clients, sizeof(*w));
  pthread_t *t = ms_xcalloc((size_t)clients, sizeof(*t));
  double t0 = now_s();
  for (int i = 0; i < clients; i++) {
    w[i] = (worker){.mode = mode, .target = targets[(size_t)i % ntargets], .end = t0 + seconds};
    pthread_create(&t[i], NULL, run, &w[i]);
  }
  double last = t0, bytes = 0, calls = 0;
  size_t n = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(t[i], NULL);
    n += w[i].n;
    if (w[i].finished_at > last)
      last = w[i].finished_at;
  }
  double *all = ms_xcalloc(n ? n : 1, sizeof(*all));
  size_t k = 0;
  for (int i = 0; i < clients; i++) {
    memcpy(all + k, w[i].lat, w[i].n * sizeof(*all));
    k += w[i].n;
    bytes += w[i].bytes;
    calls += w[i].calls;
    ret->errors += w[i].errors;
    if (w[i].errors && !ret->first_error[0])
      snprintf(ret->first_error, sizeof(ret->first_error), "%s", w[i].first_error);
    free(w[i].lat);
  }
  qsort(all, n, sizeof(*all), cmp_double);
  ret->reads = n;
  ret->seconds = last - t0;
  ret->reads_per_s = ret->seconds > 0 ? (double)n / ret->seconds : 0;
  if (n) {
    ret->p50_ms = all[(n - 1) / 2];
    ret->p99_ms = all[(size_t)((double)(n - 1) * 0.99)];
    ret->max_ms = all[n - 1];
    ret->bytes_per_read = bytes / (double)n;
    ret->calls_per_read = calls / (double)n;
  }
  free(all);
  free(w);
  free(t);
}
