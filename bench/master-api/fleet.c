/* Thousands of simulated agents over raw gRPC core: one completion queue, one
 * thread, a few connections. */
#include "fleet.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/v1/agent_link.pb-c.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"

typedef enum { OP_HELLO, OP_RECV, OP_STATUS, OP_SEND } op_kind;

typedef struct agent agent;
typedef struct fleet_op {
  agent *a;
  op_kind kind;
} fleet_op;

struct agent {
  size_t index;
  grpc_call *call;
  fleet_op hello, recv, status, send;
  bool sending;   /* a send is in flight (the hello or an update): one at a time */
  size_t to_send; /* completed tasks not reported yet (once bench_fleet_finish asked) */
  grpc_byte_buffer *out;
  int pending; /* batches started and not completed */
  bool done;   /* the status came */
  grpc_metadata_array md, trailing;
  grpc_byte_buffer *in;
  grpc_status_code code;
  grpc_slice details;
};

struct bench_fleet {
  size_t completed_per_agent, tasks_per_agent;
  char **fw_ids;
  size_t n_fws;
  atomic_bool finish; /* bench_fleet_finish was called; the thread starts the updates */
  double finish_rate; /* updates per second, 0: as fast as they go */
  grpc_channel **chs;
  size_t nchs;
  grpc_completion_queue *cq;
  agent *agents;
  size_t n;
  pthread_t thread;
  bool thread_started;
  atomic_bool stop;
  pthread_mutex_t mu;
  bench_fleet_stats stats; /* under mu */
  char *first_error;       /* under mu */
};

/* REREGISTER of agent i, packed. */
static grpc_byte_buffer *hello_of(const bench_fleet_options *o, size_t i,
                                  const Meseta__V1__Resources *task_res, const Meseta__V1__Resources *total) {
  char id[96], host[64];
  snprintf(id, sizeof(id), "%s-%zu", o->id_prefix ? o->id_prefix : "bench-agent", i);
  snprintf(host, sizeof(host), "node-%zu", i);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = id;
  Meseta__V1__AgentInfo info = MESETA__V1__AGENT_INFO__INIT;
  info.id = &aid;
  info.hostname = host;
  info.resources = total->resources;
  info.n_resources = total->n_resources;
  size_t nr = o->tasks_per_agent, nt = nr + o->completed_per_agent;
  Meseta__V1__Task *tasks = ms_xcalloc(nt + 1, sizeof(*tasks));
  Meseta__V1__Task **tp = ms_xcalloc(nt + 1, sizeof(*tp));
  Meseta__V1__TaskID *tids = ms_xcalloc(nt + 1, sizeof(*tids));
  Meseta__V1__FrameworkID *fids = ms_xcalloc(nt + 1, sizeof(*fids));
  char(*names)[48] = ms_xcalloc(nt + 1, sizeof(*names));
  for (size_t k = 0; k < nt; k++) {
    if (k < nr)
      snprintf(names[k], sizeof(names[k]), "t-%zu-%zu", i, k);
    else
      snprintf(names[k], sizeof(names[k]), "c-%zu-%zu", i, k - nr);
    meseta__v1__task_id__init(&tids[k]);
    tids[k].value = names[k];
    meseta__v1__framework_id__init(&fids[k]);
    fids[k].value = (char *)o->frameworks[(i * nt + k) % o->n_frameworks]; /* as update_of() */
    meseta__v1__task__init(&tasks[k]);
    tasks[k].name = names[k];
    tasks[k].task_id = &tids[k];
    tasks[k].framework_id = &fids[k];
    tasks[k].agent_id = &aid;
    tasks[k].state = MESETA__V1__TASK_STATE__TASK_RUNNING;
    tasks[k].resources = task_res->resources;
    tasks[k].n_resources = task_res->n_resources;
    tp[k] = &tasks[k];
  }
  Meseta__V1__AgentMessage__Reregister rr = MESETA__V1__AGENT_MESSAGE__REREGISTER__INIT;
  rr.agent_info = &info;
  rr.version = "bench-fleet";
  rr.tasks = tp;
  rr.n_tasks = nt;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REREGISTER;
  m.reregister = &rr;
  size_t len = protobuf_c_message_get_packed_size(&m.base);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(&m.base, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  free(tasks);
  free(tp);
  free(tids);
  free(fids);
  free(names);
  return bb;
}

static bool start_recv(agent *a) {
  grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
  op.data.recv_message.recv_message = &a->in;
  if (grpc_call_start_batch(a->call, &op, 1, &a->recv, NULL) != GRPC_CALL_OK)
    return false;
  a->pending++;
  return true;
}

/* TASK_FINISHED for completed task k of agent a (framework chosen as in hello_of). */
static grpc_byte_buffer *update_of(bench_fleet *f, const agent *a, size_t k) {
  size_t nt = f->tasks_per_agent + f->completed_per_agent;
  char tid[48];
  snprintf(tid, sizeof(tid), "c-%zu-%zu", a->index, k);
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = f->fw_ids[(a->index * nt + f->tasks_per_agent + k) % f->n_fws];
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  t.value = tid;
  uint8_t uuid[16];
  if (getrandom(uuid, sizeof(uuid), 0) != sizeof(uuid))
    memset(uuid, (int)k, sizeof(uuid));
  Meseta__V1__TaskStatus st = MESETA__V1__TASK_STATUS__INIT;
  st.task_id = &t;
  st.state = MESETA__V1__TASK_STATE__TASK_FINISHED;
  st.source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_AGENT;
  st.uuid.data = uuid;
  st.uuid.len = sizeof(uuid);
  Meseta__V1__AgentMessage__StatusUpdate su = MESETA__V1__AGENT_MESSAGE__STATUS_UPDATE__INIT;
  su.framework_id = &fid;
  su.status = &st;
  su.latest_state = st.state;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_STATUS_UPDATE;
  m.status_update = &su;
  size_t len = protobuf_c_message_get_packed_size(&m.base);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(&m.base, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* The agent's next TASK_FINISHED, if one is due and no send is in flight. */
static bool start_send(bench_fleet *f, agent *a) {
  if (a->sending || !a->to_send || a->done)
    return false;
  size_t k = f->completed_per_agent - a->to_send;
  a->out = update_of(f, a, k);
  grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
  op.data.send_message.send_message = a->out;
  if (grpc_call_start_batch(a->call, &op, 1, &a->send, NULL) != GRPC_CALL_OK) {
    grpc_byte_buffer_destroy(a->out);
    a->out = NULL;
    return false;
  }
  a->to_send--;
  a->sending = true;
  a->pending++;
  return true;
}

static void on_message(bench_fleet *f, agent *a) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, a->in))
    return;
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  Meseta__V1__AllocatorMessage *m =
      meseta__v1__allocator_message__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
  grpc_slice_unref(s);
  pthread_mutex_lock(&f->mu);
  f->stats.messages++;
  if (m && m->message_case == MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REREGISTERED)
    f->stats.registered++;
  pthread_mutex_unlock(&f->mu);
  if (m)
    meseta__v1__allocator_message__free_unpacked(m, NULL);
}

static void on_status(bench_fleet *f, agent *a) {
  pthread_mutex_lock(&f->mu);
  f->stats.ended++;
  if (a->code != GRPC_STATUS_OK && !f->first_error)
    f->first_error = ms_xasprintf("status %d: %.*s", (int)a->code, (int)GRPC_SLICE_LENGTH(a->details),
                                  (const char *)GRPC_SLICE_START_PTR(a->details));
  pthread_mutex_unlock(&f->mu);
}

static double mono_s(void) {
  gpr_timespec t = gpr_now(GPR_CLOCK_MONOTONIC);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Starts due TASK_FINISHED updates, round-robin over the agents, as far as the rate
 * allows; returns how many batches were started. */
static size_t pace(bench_fleet *f, double since, size_t *started, size_t *cursor) {
  double budget = f->finish_rate > 0 ? f->finish_rate * (mono_s() - since) - (double)*started : (double)f->n;
  size_t n = 0;
  for (size_t seen = 0; seen < f->n && budget >= 1; seen++) {
    agent *a = &f->agents[*cursor];
    *cursor = (*cursor + 1) % f->n;
    if (start_send(f, a)) {
      n++;
      (*started)++;
      budget -= 1;
    }
  }
  return n;
}

static void *drive(void *arg) {
  bench_fleet *f = arg;
  size_t outstanding = 0, started = 0, cursor = 0;
  for (size_t i = 0; i < f->n; i++)
    outstanding += (size_t)f->agents[i].pending;
  bool finishing = false;
  double since = 0;
  while (outstanding > 0) {
    if (!finishing && atomic_load(&f->finish) && !atomic_load(&f->stop)) {
      finishing = true;
      since = mono_s();
      for (size_t i = 0; i < f->n; i++)
        f->agents[i].to_send = f->completed_per_agent;
    }
    if (finishing && started < f->n * f->completed_per_agent && !atomic_load(&f->stop))
      outstanding += pace(f, since, &started, &cursor);
    grpc_event ev = grpc_completion_queue_next(
        f->cq,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(finishing && started < f->n * f->completed_per_agent ? 5 : 200,
                                          GPR_TIMESPAN)),
        NULL);
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    fleet_op *o = ev.tag;
    agent *a = o->a;
    a->pending--;
    outstanding--;
    switch (o->kind) {
    case OP_HELLO:
    case OP_SEND:
      a->sending = false;
      if (a->out) {
        grpc_byte_buffer_destroy(a->out);
        a->out = NULL;
      }
      if (o->kind == OP_SEND && ev.success) {
        pthread_mutex_lock(&f->mu);
        f->stats.finished++;
        pthread_mutex_unlock(&f->mu);
      }
      break; /* the next update goes out when pace() allows */
    case OP_RECV:
      if (ev.success && a->in) {
        on_message(f, a);
        grpc_byte_buffer_destroy(a->in);
        a->in = NULL;
        if (!atomic_load(&f->stop) && start_recv(a))
          outstanding++;
      }
      break;
    case OP_STATUS:
      a->done = true;
      on_status(f, a);
      break;
    }
  }
  return NULL;
}

bench_fleet *bench_fleet_start(const bench_fleet_options *o, ms_error **err) {
  if (!o->n_frameworks)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "fleet: no frameworks for the tasks"), NULL;
  ms_resources *tr = NULL;
  if (ms_resources_parse_text(o->task_resources, NULL, &tr, err) < 0)
    return NULL;
  ms_resources *total = ms_resources_new();
  size_t per_agent = o->tasks_per_agent + o->completed_per_agent;
  for (size_t k = 0; k < (per_agent ? per_agent : 1); k++)
    if (ms_resources_add(total, tr, err) < 0) {
      ms_resources_free(tr);
      ms_resources_free(total);
      return NULL;
    }
  Meseta__V1__Resources *task_res = ms_resources_to_proto(tr), *total_res = ms_resources_to_proto(total);
  ms_resources_free(tr);
  ms_resources_free(total);

  grpc_init();
  bench_fleet *f = ms_xcalloc(1, sizeof(*f));
  pthread_mutex_init(&f->mu, NULL);
  f->tasks_per_agent = o->tasks_per_agent;
  f->completed_per_agent = o->completed_per_agent;
  f->finish_rate = o->finish_rate;
  f->n_fws = o->n_frameworks;
  f->fw_ids = ms_xcalloc(f->n_fws, sizeof(*f->fw_ids));
  for (size_t i = 0; i < f->n_fws; i++)
    f->fw_ids[i] = ms_xstrdup(o->frameworks[i]);
  f->nchs = o->connections ? o->connections : 8;
  f->chs = ms_xcalloc(f->nchs, sizeof(*f->chs));
  grpc_arg args[] = {
      {GRPC_ARG_INTEGER, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}}, /* a connection each */
      {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = -1}},
  };
  grpc_channel_args cargs = {MS_ARRAY_SIZE(args), args};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  for (size_t i = 0; i < f->nchs; i++)
    f->chs[i] = grpc_channel_create(o->target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  f->cq = grpc_completion_queue_create_for_next(NULL);
  f->n = o->agents;
  f->agents = ms_xcalloc(f->n ? f->n : 1, sizeof(*f->agents));
  grpc_slice method = grpc_slice_from_static_string(CONNECT);
  for (size_t i = 0; i < f->n; i++) {
    agent *a = &f->agents[i];
    a->index = i;
    a->hello = (fleet_op){a, OP_HELLO};
    a->send = (fleet_op){a, OP_SEND};
    a->recv = (fleet_op){a, OP_RECV};
    a->status = (fleet_op){a, OP_STATUS};
    grpc_metadata_array_init(&a->md);
    grpc_metadata_array_init(&a->trailing);
    a->details = grpc_empty_slice();
    a->call = grpc_channel_create_call(f->chs[i % f->nchs], NULL, GRPC_PROPAGATE_DEFAULTS, f->cq, method,
                                       NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_byte_buffer *hello = hello_of(o, i, task_res, total_res);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = hello;
    ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[2].data.recv_initial_metadata.recv_initial_metadata = &a->md;
    a->out = hello; /* destroyed when the send completes */
    if (grpc_call_start_batch(a->call, ops, 3, &a->hello, NULL) == GRPC_CALL_OK) {
      a->pending++;
      a->sending = true;
    } else {
      grpc_byte_buffer_destroy(TAKE_PTR(a->out));
    }
    start_recv(a);
    grpc_op st = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    st.data.recv_status_on_client.status = &a->code;
    st.data.recv_status_on_client.status_details = &a->details;
    st.data.recv_status_on_client.trailing_metadata = &a->trailing;
    if (grpc_call_start_batch(a->call, &st, 1, &a->status, NULL) == GRPC_CALL_OK)
      a->pending++;
  }
  ms_resources_proto_free(task_res);
  ms_resources_proto_free(total_res);
  f->thread_started = pthread_create(&f->thread, NULL, drive, f) == 0;
  if (!f->thread_started) {
    bench_fleet_free(f);
    return ms_error_set(err, MS_ERR, "fleet: no thread"), NULL;
  }
  return f;
}

void bench_fleet_stats_get(bench_fleet *f, bench_fleet_stats *ret) {
  pthread_mutex_lock(&f->mu);
  *ret = f->stats;
  pthread_mutex_unlock(&f->mu);
}

void bench_fleet_finish(bench_fleet *f) {
  atomic_store(&f->finish, true);
}

const char *bench_fleet_first_error(bench_fleet *f) {
  pthread_mutex_lock(&f->mu);
  const char *e = f->first_error ? f->first_error : "";
  pthread_mutex_unlock(&f->mu);
  return e;
}

void bench_fleet_free(bench_fleet *f) {
  if (!f)
    return;
  atomic_store(&f->stop, true);
  for (size_t i = 0; i < f->n; i++)
    if (f->agents[i].call)
      grpc_call_cancel(f->agents[i].call, NULL);
  if (f->thread_started)
    pthread_join(f->thread, NULL);
  for (size_t i = 0; i < f->n; i++) {
    agent *a = &f->agents[i];
    if (a->call)
      grpc_call_unref(a->call);
    if (a->in)
      grpc_byte_buffer_destroy(a->in);
    if (a->out)
      grpc_byte_buffer_destroy(a->out);
    grpc_metadata_array_destroy(&a->md);
    grpc_metadata_array_destroy(&a->trailing);
    grpc_slice_unref(a->details);
  }
  free(f->agents);
  grpc_completion_queue_shutdown(f->cq);
  while (grpc_completion_queue_next(f->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(f->cq);
  for (size_t i = 0; i < f->nchs; i++)
    grpc_channel_destroy(f->chs[i]);
  free(f->chs);
  for (size_t i = 0; i < f->n_fws; i++)
    free(f->fw_ids[i]);
  free(f->fw_ids);
  free(f->first_error);
  pthread_mutex_destroy(&f->mu);
  free(f);
  grpc_shutdown();
}
