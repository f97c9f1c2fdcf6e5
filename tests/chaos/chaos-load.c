/* Load that a hostile or careless client makes: a call flood, idle subscribers. */
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/v1/operator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"

#include "chaos.h"
#include "grpc/health/v1/health.pb-c.h"

#define FLOOD_CALL_MS 2000
#define IDLE_OPENERS 8
#define IDLE_WAIT_MS 90000

/* ---- the flood ---- */

typedef struct flood_thread {
  pthread_t th;
  const char *targets[CHAOS_MAPIS + CHAOS_ALLOCATORS];
  bool is_alloc[CHAOS_MAPIS + CHAOS_ALLOCATORS];
  int n_targets;
  int64_t end_ms;
  uint64_t rnd;
  chaos_flood_stats st;
} flood_thread;

static uint64_t next_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void count(flood_thread *t, int rc, ms_error *err) {
  t->st.calls++;
  if (rc == 0) {
    t->st.ok++;
    t->st.by_code[0]++;
  } else {
    t->st.errors++;
    int code = err ? (int)err->code : 2;
    t->st.by_code[code >= 0 && code < 17 ? code : 2]++;
  }
}

/* One bogus scheduler call: random framework, stream, offer, agent and task ids. */
static void bogus_call(flood_thread *t, ms_rpc_channel *ch, bool alloc, int kind) {
  char fw[40], stream[40], offer[40], agent[40], task[40];
  snprintf(fw, sizeof(fw), "fw-%016" PRIx64, next_rand(&t->rnd));
  snprintf(stream, sizeof(stream), "st-%016" PRIx64, next_rand(&t->rnd));
  snprintf(offer, sizeof(offer), "of-%016" PRIx64, next_rand(&t->rnd));
  snprintf(agent, sizeof(agent), "ag-%016" PRIx64, next_rand(&t->rnd));
  snprintf(task, sizeof(task), "tk-%016" PRIx64, next_rand(&t->rnd));
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = fw;
  Meseta__V1__OfferID oid = MESETA__V1__OFFER_ID__INIT;
  oid.value = offer;
  Meseta__V1__OfferID *oids[] = {&oid};
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = agent;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = task;
  Meseta__V1__AcceptRequest acc = MESETA__V1__ACCEPT_REQUEST__INIT;
  acc.framework_id = &fid;
  acc.stream_id = stream;
  acc.n_offer_ids = 1;
  acc.offer_ids = oids;
  Meseta__V1__DeclineRequest dec = MESETA__V1__DECLINE_REQUEST__INIT;
  dec.framework_id = &fid;
  dec.stream_id = stream;
  dec.n_offer_ids = 1;
  dec.offer_ids = oids;
  Meseta__V1__ReconcileRequest__Task rt = MESETA__V1__RECONCILE_REQUEST__TASK__INIT;
  rt.task_id = &tid;
  rt.agent_id = &aid;
  Meseta__V1__ReconcileRequest__Task *rts[] = {&rt};
  Meseta__V1__ReconcileRequest rec = MESETA__V1__RECONCILE_REQUEST__INIT;
  rec.framework_id = &fid;
  rec.stream_id = stream;
  rec.n_tasks = 1;
  rec.tasks = rts;
  ms_rpc_call_options co = {.timeout_ms = FLOOD_CALL_MS};
  ProtobufCMessage *out = NULL;
  ms_error *err = NULL;
  int rc;
  if (alloc) {
    Meseta__V1__SchedulerCallRequest c = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
    if (kind == 0) {
      c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_ACCEPT;
      c.accept = &acc;
    } else if (kind == 1) {
      c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_DECLINE;
      c.decline = &dec;
    } else {
      c.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_RECONCILE;
      c.reconcile = &rec;
    }
    rc = ms_rpc_unary(ch, "/meseta.v1.Allocator/SchedulerCall", &c.base,
                      &meseta__v1__scheduler_call_response__descriptor, &co, &out, &err);
  } else if (kind == 0) {
    rc = ms_rpc_unary(ch, "/meseta.v1.Scheduler/Accept", &acc.base, &meseta__v1__accept_response__descriptor,
                      &co, &out, &err);
  } else if (kind == 1) {
    rc = ms_rpc_unary(ch, "/meseta.v1.Scheduler/Decline", &dec.base,
                      &meseta__v1__decline_response__descriptor, &co, &out, &err);
  } else {
    rc = ms_rpc_unary(ch, "/meseta.v1.Scheduler/Reconcile", &rec.base,
                      &meseta__v1__reconcile_response__descriptor, &co, &out, &err);
  }
  count(t, rc, err);
  ms_error_free(err);
  if (out)
    protobuf_c_message_free_unpacked(out, NULL);
}

static void read_call(flood_thread *t, ms_rpc_channel *ch, bool alloc, int kind) {
  ms_rpc_call_options co = {.timeout_ms = FLOOD_CALL_MS};
  ProtobufCMessage *out = NULL;
  ms_error *err = NULL;
  int rc;
  if (alloc) {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    rc = ms_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, &co, &out, &err);
  } else if (kind == 0) {
    Meseta__V1__GetStateRequest req = MESETA__V1__GET_STATE_REQUEST__INIT;
    rc = ms_rpc_unary(ch, "/meseta.v1.Operator/GetState", &req.base,
                      &meseta__v1__get_state_response__descriptor, &co, &out, &err);
  } else if (kind == 1) {
    Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
    req.include_completed = true;
    rc = ms_rpc_unary(ch, "/meseta.v1.Operator/GetTasks", &req.base,
                      &meseta__v1__get_tasks_response__descriptor, &co, &out, &err);
  } else {
    Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
    rc = ms_rpc_unary(ch, "/meseta.v1.Operator/GetAgents", &req.base,
                      &meseta__v1__get_agents_response__descriptor, &co, &out, &err);
  }
  count(t, rc, err);
  ms_error_free(err);
  if (out)
    protobuf_c_message_free_unpacked(out, NULL);
}

static void *flood_main(void *arg) {
  flood_thread *t = arg;
  ms_rpc_channel *chs[CHAOS_MAPIS + CHAOS_ALLOCATORS];
  for (int i = 0; i < t->n_targets; i++)
    chs[i] = ms_rpc_channel_new(t->targets[i], NULL, NULL);
  while (ms_time_mono_ms() < t->end_ms) {
    uint64_t r = next_rand(&t->rnd);
    int i = (int)(r % (uint64_t)t->n_targets);
    int kind = (int)((r >> 8) % 3);
    if (!chs[i])
      continue;
    if ((r >> 16) & 1)
      read_call(t, chs[i], t->is_alloc[i], kind);
    else
      bogus_call(t, chs[i], t->is_alloc[i], kind);
  }
  for (int i = 0; i < t->n_targets; i++)
    ms_rpc_channel_free(chs[i]);
  return NULL;
}

void chaos_flood(chaos_cluster *c, int threads, int64_t ms, chaos_flood_stats *ret) {
  flood_thread *t = ms_xcalloc((size_t)threads, sizeof(*t));
  int64_t end = ms_time_mono_ms() + ms;
  for (int k = 0; k < threads; k++) {
    for (int i = 0; i < CHAOS_MAPIS; i++)
      if (c->mapi[i].proc)
        t[k].targets[t[k].n_targets++] = c->mapi[i].addr;
    for (int i = 0; i < CHAOS_ALLOCATORS; i++)
      if (c->alloc[i].proc) {
        t[k].is_alloc[t[k].n_targets] = true;
        t[k].targets[t[k].n_targets++] = c->alloc[i].addr;
      }
    t[k].end_ms = end;
    if (getrandom(&t[k].rnd, sizeof(t[k].rnd), 0) != sizeof(t[k].rnd) || !t[k].rnd)
      t[k].rnd = 0x9e3779b97f4a7c15ull + (uint64_t)k;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t[k].th, NULL, flood_main, &t[k]), 0);
  }
  *ret = (chaos_flood_stats){0};
  for (int k = 0; k < threads; k++) {
    pthread_join(t[k].th, NULL);
    ret->calls += t[k].st.calls;
    ret->ok += t[k].st.ok;
    ret->errors += t[k].st.errors;
    for (int i = 0; i < 17; i++)
      ret->by_code[i] += t[k].st.by_code[i];
  }
  free(t);
}

/* ---- idle subscribers ---- */

struct chaos_idle {
  pthread_mutex_t mu;
  ms_rpc_channel *ch[IDLE_OPENERS];
  ms_rpc_stream **st;
  int *result; /* 0 waiting, 1 subscribed, 2 refused (RESOURCE_EXHAUSTED), 3 failed */
  int n;
  pthread_t th[IDLE_OPENERS];
  int printed;
};

typedef struct idle_arg {
  chaos_idle *s;
  int k;
} idle_arg;

static void *idle_main(void *arg) {
  idle_arg *ia = arg;
  chaos_idle *s = ia->s;
  for (int j = ia->k; j < s->n; j += IDLE_OPENERS) {
    _cleanup_free_ char *name = ms_xasprintf("chaos-idle-%d", j);
    char *roles[] = {"*"};
    Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
    info.name = name;
    info.user = "root";
    info.n_roles = 1;
    info.roles = roles;
    Meseta__V1__SubscribeRequest req = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
    req.framework_info = &info;
    ms_error *err = NULL;
    ms_rpc_stream *st =
        ms_rpc_stream_open(s->ch[ia->k], "/meseta.v1.Scheduler/Subscribe", &req.base, NULL, &err);
    pthread_mutex_lock(&s->mu);
    s->st[j] = st;
    bool cancelled = s->result[j] != 0; /* given up on by chaos_idle_start */
    pthread_mutex_unlock(&s->mu);
    int r = 3;
    ProtobufCMessage *m = NULL;
    if (st && !cancelled && ms_rpc_stream_recv(st, &meseta__v1__event__descriptor, &m, &err) == 1)
      r = ((Meseta__V1__Event *)m)->event_case == MESETA__V1__EVENT__EVENT_SUBSCRIBED ? 1 : 3;
    else if (err && err->code == MS_RESOURCE_EXHAUSTED)
      r = 2;
    pthread_mutex_lock(&s->mu);
    if (r == 2 && s->printed++ == 0)
      printf("  first refused subscriber (#%d): %s\n", j, err->msg);
    if (r == 3 && s->printed++ < 3)
      fprintf(stderr, "  chaos: idle subscriber #%d: %s\n", j, err ? err->msg : "no SUBSCRIBED first");
    if (s->result[j] == 0)
      s->result[j] = r;
    pthread_mutex_unlock(&s->mu);
    if (m)
      protobuf_c_message_free_unpacked(m, NULL);
    ms_error_free(err);
  }
  free(ia);
  return NULL;
}

chaos_idle *chaos_idle_start(chaos_cluster *c, int mapi, int n) {
  chaos_idle *s = ms_xcalloc(1, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  s->n = n;
  s->st = ms_xcalloc((size_t)n, sizeof(*s->st));
  s->result = ms_xcalloc((size_t)n, sizeof(int));
  for (int k = 0; k < IDLE_OPENERS; k++) {
    s->ch[k] = ms_rpc_channel_new(c->mapi[mapi].addr, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->ch[k]);
  }
  for (int k = 0; k < IDLE_OPENERS; k++) {
    idle_arg *ia = ms_xcalloc(1, sizeof(*ia));
    *ia = (idle_arg){s, k};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&s->th[k], NULL, idle_main, ia), 0);
  }
  int64_t end = ms_time_mono_ms() + IDLE_WAIT_MS;
  for (;;) {
    int waiting = 0;
    pthread_mutex_lock(&s->mu);
    for (int j = 0; j < n; j++)
      waiting += s->result[j] == 0;
    bool give_up = waiting > 0 && ms_time_mono_ms() > end;
    if (give_up) /* no answer: counted as failed, and their calls cancelled */
      for (int j = 0; j < n; j++)
        if (s->result[j] == 0) {
          s->result[j] = 3;
          if (s->st[j])
            ms_rpc_stream_cancel(s->st[j]);
        }
    pthread_mutex_unlock(&s->mu);
    if (waiting == 0 || give_up) {
      if (give_up)
        fprintf(stderr, "  chaos: %d idle subscribers had no answer within %d s\n", waiting,
                IDLE_WAIT_MS / 1000);
      break;
    }
    ms_time_sleep_ms(50);
  }
  for (int k = 0; k < IDLE_OPENERS; k++)
    pthread_join(s->th[k], NULL);
  return s;
}

void chaos_idle_counts(chaos_idle *s, int *subscribed, int *refused, int *failed) {
  *subscribed = *refused = *failed = 0;
  pthread_mutex_lock(&s->mu);
  for (int j = 0; j < s->n; j++) {
    *subscribed += s->result[j] == 1;
    *refused += s->result[j] == 2;
    *failed += s->result[j] == 3;
  }
  pthread_mutex_unlock(&s->mu);
}

void chaos_idle_free(chaos_idle *s) {
  if (!s)
    return;
  for (int j = 0; j < s->n; j++)
    ms_rpc_stream_free(s->st[j]);
  for (int k = 0; k < IDLE_OPENERS; k++)
    ms_rpc_channel_free(s->ch[k]);
  free(s->st);
  free(s->result);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
