/* The AgentLink client: one thread that opens AgentLink.Connect on the allocator leader,
 * receives and posts each message to the owner's loop, and reconnects when the stream
 * ends. Finding the leader: with a registry, a second thread follows WatchLeader and
 * moves the link the moment the leader changes; without one (or while the registry
 * knows no leader), the configured addresses are tried in turn (a standby refuses with
 * UNAVAILABLE). Backoff only after every address failed; none after a leader change.
 * A timer on the owner's loop leaves a leader that has been silent too long (frozen:
 * gRPC's own keepalive takes tens of seconds to notice). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/leader-follow.h"
#include "meseta/log.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/registry.pb-c.h"

#include "agent-internal.h"

#define CONNECT "/meseta.v1.AgentLink/Connect"
/* The registry's WatchLeader backoff stops growing here. */
#define FOLLOW_MAX_BACKOFF_MS 2000
#define CONNECT_STEP_MS 100     /* wait-for-connection steps: a leader change is seen between them */
#define CONNECT_GIVE_UP_MS 1000 /* an address not connected by then counts as failed (dead or frozen) */
#define WATCHDOG_MS 250
#define FIRST_SILENCE_MS 5000 /* before a (RE)REGISTERED announced the heartbeat interval */

struct agent_link {
  ms_loop *loop;
  agent *a;
  agent_link_events ev;
  ms_strv targets; /* configured addresses */
  char *registry;  /* NULL: none */
  ms_rpc_tls tls;  /* copies; has_tls says whether to use it */
  bool has_tls;
  int64_t backoff0, backoff_max, backoff;
  int64_t silence_cfg; /* --link-timeout; 0: 3 heartbeat intervals */
  pthread_t th;
  bool started;
  uint64_t watchdog;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC */
  bool stop;
  ms_rpc_stream *st;         /* the current stream, under mu */
  char *st_target;           /* its address, under mu */
  uint64_t gen;              /* its generation, under mu */
  char *leader;              /* the registry's leader, under mu; NULL: unknown */
  uint64_t leader_gen;       /* bumped when it changes, under mu */
  ms_rpc_channel *follow_ch; /* to the registry */
  ms_leader_follow *follow;  /* WatchLeader */
  _Atomic int64_t last_recv_ms, silence_ms;
  bool draining;        /* being freed: posts only release what they carry */
  ms_rpc_channel *keep; /* see agent_link_new */
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

/* Waits ms unless stopped or (leader_gen != UINT64_MAX) the leader moves from
 * leader_gen. Called with mu held. */
static void nap_locked(agent_link *l, int64_t ms, uint64_t leader_gen) {
  int64_t until = ms_time_mono_ms() + ms;
  while (!l->stop && (leader_gen == UINT64_MAX || l->leader_gen == leader_gen)) {
    int64_t left = until - ms_time_mono_ms();
    if (left <= 0)
      break;
    struct timespec ts = ms_time_mono_after(left);
    pthread_cond_timedwait(&l->cv, &l->mu, &ts);
  }
}

/* ---- following the registry's leader ---- */

static void set_leader(agent_link *l, const Meseta__V1__LeaderInfo *li) {
  const char *addr = li->present && li->address && *li->address ? li->address : NULL;
  pthread_mutex_lock(&l->mu);
  bool changed = addr && (!l->leader || strcmp(l->leader, addr) != 0);
  if (changed) {
    free(l->leader);
    l->leader = ms_xstrdup(addr);
    l->leader_gen++;
    /* A stream on another allocator is on a deposed (or frozen) one: leave it now. */
    if (l->st && l->st_target && strcmp(l->st_target, addr) != 0)
      ms_rpc_stream_cancel(l->st);
    pthread_cond_broadcast(&l->cv);
  }
  pthread_mutex_unlock(&l->mu);
  if (changed)
    ms_log_info(NULL, "allocator leader: `%s` (registry `%s`)", addr, l->registry);
}

static void on_leader(void *arg, const Meseta__V1__LeaderInfo *li) {
  set_leader(arg, li);
}

/* ---- the link ---- */

static ms_rpc_channel *channel_for(agent_link *l, const char *target, ms_error **err) {
  /* gRPC also takes the initial backoff as its minimum connect timeout: keep it well above
   * a (TLS) handshake on a busy host; this thread decides when to move on anyway. */
  ms_rpc_channel_options o = {.tls = l->has_tls ? &l->tls : NULL,
                              .initial_backoff_ms = 1000,
                              .max_backoff_ms = l->backoff_max > 1000 ? l->backoff_max : 1000};
  return ms_rpc_channel_new(target, &o, err);
}

/* The address to try next: the registry's leader, else the next configured one; NULL
 * while there is none (registry only, no leader known). Called with mu held. */
static const char *pick_locked(agent_link *l, size_t *idx) {
  if (l->leader)
    return l->leader;
  if (!l->targets.n)
    return NULL;
  return l->targets.v[*idx % l->targets.n];
}

/* One stream on `target` until it ends. Returns true when the allocator answered
 * anything on it (it was reachable and took the stream). */
static bool run_stream(agent_link *l, ms_rpc_channel *ch, const char *target, uint64_t leader_gen) {
  ms_error *err = NULL;
  /* Wait for the connection in short steps: a leader change or a stop ends the wait,
   * and an address that does not connect soon counts as failed. */
  int64_t waited = 0;
  for (;;) {
    pthread_mutex_lock(&l->mu);
    bool go = !l->stop && l->leader_gen == leader_gen;
    pthread_mutex_unlock(&l->mu);
    if (!go || ms_rpc_channel_wait_ready(ch, CONNECT_STEP_MS, NULL) == 0)
      break;
    if ((waited += CONNECT_STEP_MS) >= CONNECT_GIVE_UP_MS) {
      ms_log_warn(NULL, "allocator `%s`: not connected after %d ms", target, CONNECT_GIVE_UP_MS);
      return false;
    }
  }
  pthread_mutex_lock(&l->mu);
  bool go = !l->stop && l->leader_gen == leader_gen;
  pthread_mutex_unlock(&l->mu);
  ms_rpc_stream *st = go ? ms_rpc_stream_open(ch, CONNECT, NULL, NULL, &err) : NULL;
  if (!st) {
    if (err)
      ms_log_warn(NULL, "allocator `%s`: %s", target, err->msg);
    ms_error_free(err);
    return false;
  }
  pthread_mutex_lock(&l->mu);
  l->st = st;
  free(l->st_target);
  l->st_target = ms_xstrdup(target);
  uint64_t gen = ++l->gen;
  if (l->stop || l->leader_gen != leader_gen)
    ms_rpc_stream_cancel(st);
  pthread_mutex_unlock(&l->mu);
  atomic_store(&l->last_recv_ms, ms_time_mono_ms());
  post(l, gen, 0, NULL, NULL);
  bool answered = false;
  char *reason = NULL;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int r = ms_rpc_stream_recv(st, &meseta__v1__allocator_message__descriptor, &m, &err);
    if (r <= 0) {
      reason = r < 0 ? ms_xstrdup(err->msg) : ms_xstrdup("the allocator ended the stream");
      /* A standby's refusal is an answer too, but not a reachable leader. */
      break;
    }
    answered = true;
    atomic_store(&l->last_recv_ms, ms_time_mono_ms());
    post(l, gen, 1, (Meseta__V1__AllocatorMessage *)m, NULL);
  }
  ms_error_free(err);
  pthread_mutex_lock(&l->mu);
  l->st = NULL; /* agent_link_send holds mu while it sends: none is sending now */
  pthread_mutex_unlock(&l->mu);
  ms_rpc_stream_free(st);
  post(l, gen, 2, NULL, reason);
  return answered;
}

static void *link_main(void *arg) {
  agent_link *l = arg;
  ms_rpc_channel *ch = NULL;
  char *ch_target = NULL;
  size_t idx = 0, failed = 0; /* configured address to try; failures in a row */
  for (;;) {
    pthread_mutex_lock(&l->mu);
    const char *t = NULL;
    while (!l->stop && !(t = pick_locked(l, &idx)))
      nap_locked(l, 1000, l->leader_gen);
    if (l->stop) {
      pthread_mutex_unlock(&l->mu);
      break;
    }
    char *target = ms_xstrdup(t);
    bool from_registry = l->leader != NULL;
    uint64_t leader_gen = l->leader_gen;
    pthread_mutex_unlock(&l->mu);
    if (!ch_target || strcmp(ch_target, target) != 0) {
      ms_error *err = NULL;
      ms_rpc_channel_free(ch);
      free(ch_target);
      ch_target = NULL;
      if (!(ch = channel_for(l, target, &err))) {
        ms_log_error(NULL, "allocator `%s`: %s", target, err->msg);
        ms_error_free(err);
      } else {
        ch_target = ms_xstrdup(target);
      }
    }
    bool answered = ch && run_stream(l, ch, target, leader_gen);
    free(target);
    pthread_mutex_lock(&l->mu);
    bool moved = l->leader_gen != leader_gen;
    int64_t wait = 0;
    if (moved || answered) {
      failed = 0; /* a new leader, or a stream that worked: at once */
      if (!moved && !from_registry)
        idx++; /* the stream ended (the allocator lost the lead, or went silent): the next one */
    } else {
      failed++;
      if (!from_registry)
        idx++;
      /* Back off only once every known address failed in a row. */
      size_t round = from_registry || !l->targets.n ? 1 : l->targets.n;
      if (failed % round == 0) {
        wait = l->backoff;
        l->backoff = l->backoff * 2 > l->backoff_max ? l->backoff_max : l->backoff * 2;
      }
    }
    if (wait)
      nap_locked(l, wait, leader_gen);
    bool stop = l->stop;
    pthread_mutex_unlock(&l->mu);
    if (stop)
      break;
  }
  ms_rpc_channel_free(ch);
  free(ch_target);
  return NULL;
}

/* Owner thread: a stream silent past the limit is on a frozen or cut-off allocator. */
static void watchdog_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  agent_link *l = arg;
  int64_t limit = atomic_load(&l->silence_ms);
  if (limit <= 0) /* no heartbeat interval known yet: nothing may hang for good */
    limit = FIRST_SILENCE_MS;
  int64_t silent = ms_time_mono_ms() - atomic_load(&l->last_recv_ms);
  if (silent < limit)
    return;
  pthread_mutex_lock(&l->mu);
  if (l->st) {
    ms_log_warn(NULL, "allocator `%s` silent for %lld ms: leaving it", l->st_target ? l->st_target : "",
                (long long)silent);
    ms_rpc_stream_cancel(l->st);
    atomic_store(&l->last_recv_ms, ms_time_mono_ms()); /* once per stream */
  }
  pthread_mutex_unlock(&l->mu);
}

agent_link *agent_link_new(const agent_link_options *o, ms_loop *loop, agent *a, const agent_link_events *ev,
                           ms_error **err) {
  if (!o->n_targets && !(o->registry && *o->registry)) {
    ms_error_set(err, MS_INVALID_ARGUMENT, "flags `--allocator` / `--registry`: give at least one");
    return NULL;
  }
  /* Every address must make a channel (a malformed one, or unreadable TLS files, fail
   * here, not later). The first is kept until agent_link_free: freeing a process's
   * only channel would shut gRPC down (and its TLS state) before the servers start. */
  ms_rpc_channel *keep = NULL;
  for (size_t i = 0; i < o->n_targets + 1; i++) {
    bool reg = i == o->n_targets;
    const char *t = reg ? o->registry : o->targets[i];
    if (!t || !*t)
      continue;
    ms_rpc_channel_options co = {.tls = reg ? NULL : o->tls};
    ms_rpc_channel *ch = ms_rpc_channel_new(t, &co, err);
    if (!ch) {
      ms_rpc_channel_free(keep);
      return NULL;
    }
    if (!keep)
      keep = ch;
    else
      ms_rpc_channel_free(ch);
  }
  agent_link *l = ms_xcalloc(1, sizeof(*l));
  l->keep = keep;
  l->loop = loop;
  l->a = a;
  l->ev = *ev;
  for (size_t i = 0; i < o->n_targets; i++)
    ms_strv_push(&l->targets, o->targets[i]);
  l->registry = o->registry && *o->registry ? ms_xstrdup(o->registry) : NULL;
  if (o->tls) {
    l->has_tls = true;
    l->tls.ca_file = o->tls->ca_file ? ms_xstrdup(o->tls->ca_file) : NULL;
    l->tls.cert_file = o->tls->cert_file ? ms_xstrdup(o->tls->cert_file) : NULL;
    l->tls.key_file = o->tls->key_file ? ms_xstrdup(o->tls->key_file) : NULL;
    l->tls.server_name = o->tls->server_name ? ms_xstrdup(o->tls->server_name) : NULL;
  }
  l->backoff0 = l->backoff = o->backoff_ms > 0 ? o->backoff_ms : 100;
  l->backoff_max = o->max_backoff_ms > l->backoff0 ? o->max_backoff_ms : l->backoff0;
  l->silence_cfg = o->silence_ms > 0 ? o->silence_ms : 0;
  atomic_init(&l->silence_ms, l->silence_cfg);
  atomic_init(&l->last_recv_ms, ms_time_mono_ms());
  pthread_mutex_init(&l->mu, NULL);
  ms_cond_init_mono(&l->cv);
  return l;
}

int agent_link_start(agent_link *l, ms_error **err) {
  int e;
  if (l->registry) {
    _cleanup_free_ char *who = ms_xasprintf("registry `%s`", l->registry);
    if (!(l->follow_ch = ms_rpc_channel_new(l->registry, NULL, err)) ||
        !(l->follow = ms_leader_follow_start(l->follow_ch, who, FOLLOW_MAX_BACKOFF_MS, on_leader, l, err)))
      return ms_error_prefix(err, "agent link");
  }
  if ((e = pthread_create(&l->th, NULL, link_main, l)))
    return ms_error_set_errno(err, e, "agent link thread");
  l->started = true;
  l->watchdog = ms_loop_add_timer(l->loop, WATCHDOG_MS, WATCHDOG_MS, watchdog_tick, l);
  return 0;
}

int agent_link_send(agent_link *l, uint64_t gen, const Meseta__V1__AgentMessage *m, ms_error **err) {
  pthread_mutex_lock(&l->mu);
  int rc;
  if (!l->st || l->gen != gen)
    rc = ms_error_set(err, MS_UNAVAILABLE, "allocator `%s`: the stream is gone",
                      l->st_target ? l->st_target : "");
  else
    rc = ms_rpc_stream_send(l->st, &m->base, err);
  pthread_mutex_unlock(&l->mu);
  return rc;
}

void agent_link_registered(agent_link *l, int64_t heartbeat_ms) {
  pthread_mutex_lock(&l->mu);
  l->backoff = l->backoff0;
  pthread_mutex_unlock(&l->mu);
  if (!l->silence_cfg && heartbeat_ms > 0)
    atomic_store(&l->silence_ms, 3 * heartbeat_ms);
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
  ms_leader_follow_stop(TAKE_PTR(l->follow)); /* before the link's state goes */
  ms_rpc_channel_free(TAKE_PTR(l->follow_ch));
  if (l->watchdog)
    ms_loop_cancel_timer(l->loop, l->watchdog);
  /* What the thread posted and the loop has not run yet would leak: run it, inert. */
  l->draining = true;
  while (ms_loop_run_once(l->loop, 0, NULL) > 0)
    ;
  ms_strv_release(&l->targets);
  free(l->registry);
  free((char *)l->tls.ca_file);
  free((char *)l->tls.cert_file);
  free((char *)l->tls.key_file);
  free((char *)l->tls.server_name);
  free(l->st_target);
  free(l->leader);
  ms_rpc_channel_free(l->keep);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  free(l);
}
