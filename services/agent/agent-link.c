/* The AgentLink client: one thread that opens AgentLink.Connect, receives and posts each
 * message to the owner's loop, and reconnects with backoff when the stream ends. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/rpc.h"

#include "agent-internal.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"

struct agent_link {
  ms_rpc_channel *ch;
  ms_loop *loop;
  agent *a;
  agent_link_events ev;
  int64_t backoff0, backoff_max, backoff;
  pthread_t th;
  bool started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  ms_rpc_stream *st; /* the current stream, under mu */
  uint64_t gen;      /* its generation, under mu */
  bool draining;     /* being freed: posts only release what they carry */
};

typedef struct link_post {
  agent_link *l;
  uint64_t gen;
  int kind; /* 0 open, 1 message, 2 closed */
  Meseta__V1__AllocatorMessage *msg;
  char *reason;
} link_post;

static void run_post(void *arg) {
  link_post *p = arg;
  agent_link *l = p->l;
  if (l->draining) {
    if (p->msg)
      protobuf_c_message_free_unpacked(&p->msg->base, NULL);
  } else if (p->kind == 0)
    l->ev.on_open(l->a, p->gen);
  else if (p->kind == 1)
    l->ev.on_message(l->a, p->gen, p->msg);
  else
    l->ev.on_closed(l->a, p->gen, p->reason);
  free(p->reason);
  free(p);
}

static void post(agent_link *l, uint64_t gen, int kind, Meseta__V1__AllocatorMessage *msg, char *reason) {
  link_post *p = ms_xcalloc(1, sizeof(*p));
  *p = (link_post){l, gen, kind, msg, reason};
  ms_loop_post(l->loop, run_post, p);
}

/* Waits ms unless stopped; false if stopped. */
static bool nap(agent_link *l, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&l->mu);
  while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0)
    ;
  bool go = !l->stop;
  pthread_mutex_unlock(&l->mu);
  return go;
}

static bool stopped(agent_link *l) {
  pthread_mutex_lock(&l->mu);
  bool s = l->stop;
  pthread_mutex_unlock(&l->mu);
  return s;
}

static void *link_main(void *arg) {
  agent_link *l = arg;
  for (;;) {
    ms_error *err = NULL;
    /* Wait for the connection in short steps: an open with wait-for-ready would block
     * until the allocator answers, and agent_link_free could not interrupt it. */
    while (!stopped(l) && ms_rpc_channel_wait_ready(l->ch, 250, NULL) < 0)
      ;
    ms_rpc_stream *st = stopped(l) ? NULL : ms_rpc_stream_open(l->ch, CONNECT, NULL, NULL, &err);
    uint64_t gen = 0;
    pthread_mutex_lock(&l->mu);
    if (l->stop) {
      pthread_mutex_unlock(&l->mu);
      ms_rpc_stream_free(st);
      ms_error_free(err);
      break;
    }
    if (st) {
      l->st = st;
      gen = ++l->gen;
    }
    pthread_mutex_unlock(&l->mu);
    char *reason = NULL;
    if (st) {
      post(l, gen, 0, NULL, NULL);
      for (;;) {
        ProtobufCMessage *m = NULL;
        int r = ms_rpc_stream_recv(st, &meseta__v1__allocator_message__descriptor, &m, &err);
        if (r <= 0) {
          reason = r < 0 ? ms_xstrdup(err->msg) : ms_xstrdup("the allocator ended the stream");
          break;
        }
        post(l, gen, 1, (Meseta__V1__AllocatorMessage *)m, NULL);
      }
      pthread_mutex_lock(&l->mu);
      l->st = NULL; /* agent_link_send holds mu while it sends: none is sending now */
      pthread_mutex_unlock(&l->mu);
      ms_rpc_stream_free(st);
      post(l, gen, 2, NULL, reason);
    } else {
      ms_log_warn(NULL, "allocator `%s`: %s", ms_rpc_channel_target(l->ch), err->msg);
    }
    ms_error_free(err);
    pthread_mutex_lock(&l->mu);
    int64_t wait = l->backoff;
    l->backoff = l->backoff * 2 > l->backoff_max ? l->backoff_max : l->backoff * 2;
    pthread_mutex_unlock(&l->mu);
    if (!nap(l, wait))
      break;
  }
  return NULL;
}

agent_link *agent_link_new(const char *target, const ms_rpc_tls *tls, ms_loop *loop, agent *a,
                           const agent_link_events *ev, int64_t backoff_ms, int64_t max_backoff_ms,
                           ms_error **err) {
  ms_rpc_channel_options o = {.tls = tls, .initial_backoff_ms = backoff_ms, .max_backoff_ms = max_backoff_ms};
  ms_rpc_channel *ch = ms_rpc_channel_new(target, &o, err);
  if (!ch)
    return NULL;
  agent_link *l = ms_xcalloc(1, sizeof(*l));
  l->ch = ch;
  l->loop = loop;
  l->a = a;
  l->ev = *ev;
  l->backoff0 = l->backoff = backoff_ms > 0 ? backoff_ms : 200;
  l->backoff_max = max_backoff_ms > l->backoff0 ? max_backoff_ms : l->backoff0;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  return l;
}

int agent_link_start(agent_link *l, ms_error **err) {
  int e = pthread_create(&l->th, NULL, link_main, l);
  if (e)
    return ms_error_set_errno(err, e, "agent link thread");
  l->started = true;
  return 0;
}

int agent_link_send(agent_link *l, uint64_t gen, const Meseta__V1__AgentMessage *m, ms_error **err) {
  pthread_mutex_lock(&l->mu);
  int rc;
  if (!l->st || l->gen != gen)
    rc =
        ms_error_set(err, MS_UNAVAILABLE, "allocator `%s`: the stream is gone", ms_rpc_channel_target(l->ch));
  else
    rc = ms_rpc_stream_send(l->st, &m->base, err);
  pthread_mutex_unlock(&l->mu);
  return rc;
}

void agent_link_reset_backoff(agent_link *l) {
  pthread_mutex_lock(&l->mu);
  l->backoff = l->backoff0;
  pthread_mutex_unlock(&l->mu);
}

void agent_link_free(agent_link *l) {
  if (!l)
    return;
  pthread_mutex_lock(&l->mu);
  l->stop = true;
  if (l->st)
    ms_rpc_stream_cancel(l->st);
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  if (l->started)
    pthread_join(l->th, NULL);
  /* What the thread posted and the loop has not run yet would leak: run it, inert. */
  l->draining = true;
  while (ms_loop_run_once(l->loop, 0, NULL) > 0)
    ;
  ms_rpc_channel_free(l->ch);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  free(l);
}
