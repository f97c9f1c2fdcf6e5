#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/loop.h"

#include "testlib.h"

/* Every wait here is "until it happened", bounded by a generous iteration count so a
 * bug fails the test instead of hanging it. No assertion depends on how long anything
 * took. */
#define MAX_SPINS 100000

static ms_loop *new_loop(void) {
  ms_error *err = NULL;
  ms_loop *loop = ms_loop_new(&err);
  if (!loop)
    fprintf(stderr, "ms_loop_new: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
  return loop;
}

static void run_until(ms_loop *loop, const int *counter, int want) {
  ms_error *err = NULL;
  for (int i = 0; i < MAX_SPINS && *counter < want; i++)
    MS_ASSERT_OK(ms_loop_run_once(loop, 1000, &err), &err);
  CU_ASSERT_EQUAL(*counter, want);
}

/* ---- fds ---- */

typedef struct fd_state {
  int calls;
  uint32_t events;
  char got[16];
} fd_state;

static void on_readable(ms_loop *loop, int fd, uint32_t events, void *arg) {
  fd_state *st = arg;
  st->calls++;
  st->events = events;
  ssize_t n = read(fd, st->got, sizeof(st->got) - 1);
  if (n >= 0)
    st->got[n] = '\0';
}

static void test_fd_readiness(void) {
  ms_loop *loop = new_loop();
  ms_error *err = NULL;
  int p[2];
  CU_ASSERT_EQUAL_FATAL(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  fd_state st = {0};
  MS_ASSERT_OK(ms_loop_add_fd(loop, p[0], EPOLLIN, on_readable, &st, &err), &err);
  /* Nothing written yet: polling runs nothing. */
  CU_ASSERT_EQUAL(ms_loop_run_once(loop, 0, &err), 0);
  CU_ASSERT_EQUAL(write(p[1], "ping", 4), 4);
  run_until(loop, &st.calls, 1);
  CU_ASSERT_TRUE(st.events & EPOLLIN);
  CU_ASSERT_STRING_EQUAL(st.got, "ping");

  /* Write end: ready for EPOLLOUT at once; after mod to 0 events it stays quiet. */
  fd_state out = {0};
  MS_ASSERT_OK(ms_loop_add_fd(loop, p[1], EPOLLOUT, on_readable, &out, &err), &err);
  run_until(loop, &out.calls, 1);
  CU_ASSERT_TRUE(out.events & EPOLLOUT);
  MS_ASSERT_OK(ms_loop_mod_fd(loop, p[1], 0, &err), &err);
  CU_ASSERT_EQUAL(ms_loop_run_once(loop, 0, &err), 0);
  CU_ASSERT_EQUAL(out.calls, 1);

  /* Closing the writer hangs up the reader. */
  MS_ASSERT_OK(ms_loop_del_fd(loop, p[1], &err), &err);
  close(p[1]);
  run_until(loop, &st.calls, 2);
  CU_ASSERT_TRUE(st.events & EPOLLHUP);
  MS_ASSERT_OK(ms_loop_del_fd(loop, p[0], &err), &err);
  close(p[0]);
  ms_loop_free(loop);
}

static void never(ms_loop *loop, int fd, uint32_t events, void *arg) {
  CU_FAIL("callback must not run");
}

static void test_fd_errors(void) {
  ms_loop *loop = new_loop();
  ms_error *err = NULL;
  int p[2];
  CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
  MS_ASSERT_OK(ms_loop_add_fd(loop, p[0], EPOLLIN, never, NULL, &err), &err);

  CU_ASSERT_EQUAL(ms_loop_add_fd(loop, p[0], EPOLLIN, never, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_ALREADY_EXISTS);
  char want[64];
  snprintf(want, sizeof(want), "watch fd `%d`: already watched", p[0]);
  CU_ASSERT_STRING_EQUAL(err->msg, want);

  CU_ASSERT_EQUAL(ms_loop_mod_fd(loop, p[1], EPOLLOUT, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, 4000, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  CU_ASSERT_STRING_EQUAL(err->msg, "remove watch on fd `4000`: not watched");
  CU_ASSERT_EQUAL(ms_loop_add_fd(loop, -1, EPOLLIN, never, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);

  /* The kernel refuses regular files: the errno comes through. */
  int f = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  CU_ASSERT_FATAL(f >= 0);
  CU_ASSERT_EQUAL(ms_loop_add_fd(loop, f, EPOLLIN, never, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->errnum, EPERM);
  close(f);
  ms_error_free(err);

  /* A watched fd closed before del: del still removes the watch. */
  close(p[0]);
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, p[0], NULL), 0);
  close(p[1]);
  ms_loop_free(loop);
}

/* Two pipes readable in the same batch: whichever callback runs first removes both
 * watches (its own included), then re-adds its own fd under a new callback. The
 * other's already-collected event must not reach a freed watch (ASan would see it). */
typedef struct del_state {
  int p1[2], p2[2];
  int first_calls, readded_calls;
  int first_fd;
} del_state;

static void on_readded(ms_loop *loop, int fd, uint32_t events, void *arg) {
  ((del_state *)arg)->readded_calls++;
}

static void on_first(ms_loop *loop, int fd, uint32_t events, void *arg) {
  del_state *st = arg;
  st->first_calls++;
  st->first_fd = fd;
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, st->p1[0], NULL), 0);
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, st->p2[0], NULL), 0);
  CU_ASSERT_EQUAL(ms_loop_add_fd(loop, fd, EPOLLIN, on_readded, st, NULL), 0);
}

static void test_del_fd_inside_callback(void) {
  ms_loop *loop = new_loop();
  ms_error *err = NULL;
  del_state st = {0};
  CU_ASSERT_EQUAL_FATAL(pipe2(st.p1, O_NONBLOCK | O_CLOEXEC), 0);
  CU_ASSERT_EQUAL_FATAL(pipe2(st.p2, O_NONBLOCK | O_CLOEXEC), 0);
  MS_ASSERT_OK(ms_loop_add_fd(loop, st.p1[0], EPOLLIN, on_first, &st, &err), &err);
  MS_ASSERT_OK(ms_loop_add_fd(loop, st.p2[0], EPOLLIN, on_first, &st, &err), &err);
  CU_ASSERT_EQUAL(write(st.p1[1], "a", 1), 1);
  CU_ASSERT_EQUAL(write(st.p2[1], "b", 1), 1);
  run_until(loop, &st.first_calls, 1);
  /* The re-added watch sees the still-unread byte on a later iteration. */
  run_until(loop, &st.readded_calls, 1);
  CU_ASSERT_EQUAL(st.first_calls, 1);
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, st.first_fd, NULL), 0);
  int other = st.first_fd == st.p1[0] ? st.p2[0] : st.p1[0];
  CU_ASSERT_EQUAL(ms_loop_del_fd(loop, other, NULL), MS_ERR);
  for (int i = 0; i < 2; i++) {
    close(st.p1[i]);
    close(st.p2[i]);
  }
  ms_loop_free(loop);
}

/* ---- timers ---- */

typedef struct timer_state {
  int order[16];
  int n;
  int ticks;
  uint64_t self_id;
  uint64_t victim;
  bool self_cancel;
  bool victim_cancel;
} timer_state;

static timer_state tstate;

static void record(ms_loop *loop, uint64_t id, void *arg) {
  tstate.order[tstate.n++] = (int)(intptr_t)arg;
}

static void test_timer_order(void) {
  ms_loop *loop = new_loop();
  memset(&tstate, 0, sizeof(tstate));
  /* Scheduled out of order; equal deadlines keep scheduling order. */
  CU_ASSERT_TRUE(ms_loop_add_timer(loop, 60, 0, record, (void *)5) > 0);
  ms_loop_add_timer(loop, 20, 0, record, (void *)2);
  ms_loop_add_timer(loop, 40, 0, record, (void *)4);
  ms_loop_add_timer(loop, 0, 0, record, (void *)1);
  /* Same delay as #2 but added later, so a later deadline: fires after it. */
  ms_loop_add_timer(loop, 20, 0, record, (void *)3);
  run_until(loop, &tstate.n, 5);
  for (int i = 0; i < 5; i++)
    CU_ASSERT_EQUAL(tstate.order[i], i + 1);
  /* One-shots are gone: nothing more runs. */
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_loop_run_once(loop, 0, &err), 0);
  ms_loop_free(loop);
}

static void tick(ms_loop *loop, uint64_t id, void *arg) {
  tstate.ticks++;
  if (tstate.ticks == 5)
    tstate.self_cancel = ms_loop_cancel_timer(loop, id);
}

static void test_interval_and_self_cancel(void) {
  ms_loop *loop = new_loop();
  memset(&tstate, 0, sizeof(tstate));
  uint64_t id = ms_loop_add_timer(loop, 0, 1, tick, NULL);
  run_until(loop, &tstate.ticks, 5);
  CU_ASSERT_TRUE(tstate.self_cancel);
  /* Let a later one-shot fire: the cancelled interval must not have ticked again. */
  ms_loop_add_timer(loop, 20, 0, record, (void *)1);
  run_until(loop, &tstate.n, 1);
  CU_ASSERT_EQUAL(tstate.ticks, 5);
  CU_ASSERT_FALSE(ms_loop_cancel_timer(loop, id));
  ms_loop_free(loop);
}

static void canceller(ms_loop *loop, uint64_t id, void *arg) {
  tstate.n++;
  tstate.victim_cancel = ms_loop_cancel_timer(loop, tstate.victim);
  /* A one-shot is gone once its callback starts. */
  tstate.self_cancel = ms_loop_cancel_timer(loop, id);
}

static void victim(ms_loop *loop, uint64_t id, void *arg) {
  CU_FAIL("cancelled timer fired");
}

static void test_cancel_inside_callback(void) {
  ms_loop *loop = new_loop();
  memset(&tstate, 0, sizeof(tstate));
  /* Both due together: the canceller (scheduled first) removes the victim mid-batch. */
  ms_loop_add_timer(loop, 0, 0, canceller, NULL);
  tstate.victim = ms_loop_add_timer(loop, 0, 0, victim, NULL);
  run_until(loop, &tstate.n, 1);
  CU_ASSERT_TRUE(tstate.victim_cancel);
  CU_ASSERT_FALSE(tstate.self_cancel);
  ms_error *err = NULL;
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(ms_loop_run_once(loop, 5, &err), 0);
  ms_loop_free(loop);
}

static void test_cancel_ids(void) {
  ms_loop *loop = new_loop();
  CU_ASSERT_FALSE(ms_loop_cancel_timer(loop, 0));
  CU_ASSERT_EQUAL(ms_loop_add_timer(loop, 0, 0, NULL, NULL), 0);
  CU_ASSERT_FALSE(ms_loop_cancel_timer(loop, 12345));
  uint64_t a = ms_loop_add_timer(loop, 1000, 0, victim, NULL);
  CU_ASSERT_TRUE(ms_loop_cancel_timer(loop, a));
  CU_ASSERT_FALSE(ms_loop_cancel_timer(loop, a));
  /* The slot is reused, but the old id must not cancel the new timer. */
  uint64_t b = ms_loop_add_timer(loop, 1000, 0, victim, NULL);
  CU_ASSERT_NOT_EQUAL(a, b);
  CU_ASSERT_FALSE(ms_loop_cancel_timer(loop, a));
  CU_ASSERT_TRUE(ms_loop_cancel_timer(loop, b));
  /* Many timers, cancelled in a scattered order, exercise the heap's removal. */
  uint64_t ids[200];
  for (int i = 0; i < 200; i++)
    ids[i] = ms_loop_add_timer(loop, 1000 + (i * 37) % 200, 0, victim, NULL);
  for (int i = 0; i < 200; i += 3)
    CU_ASSERT_TRUE(ms_loop_cancel_timer(loop, ids[i]));
  for (int i = 0; i < 200; i++)
    CU_ASSERT_EQUAL(ms_loop_cancel_timer(loop, ids[i]), i % 3 != 0);
  ms_loop_free(loop);
}

static void heap_order(ms_loop *loop, uint64_t id, void *arg) {
  int v = (int)(intptr_t)arg;
  CU_ASSERT_TRUE(v >= tstate.ticks);
  tstate.ticks = v;
  tstate.n++;
}

static void test_timer_heap_order_after_cancels(void) {
  ms_loop *loop = new_loop();
  memset(&tstate, 0, sizeof(tstate));
  uint64_t ids[64];
  for (int i = 0; i < 64; i++) {
    int delay = (i * 29) % 64;
    ids[i] = ms_loop_add_timer(loop, delay, 0, heap_order, (void *)(intptr_t)delay);
  }
  int left = 64;
  for (int i = 0; i < 64; i += 5, left--)
    ms_loop_cancel_timer(loop, ids[i]);
  run_until(loop, &tstate.n, left);
  ms_loop_free(loop);
}

/* ---- signals ---- */

static int sig_calls;

static void on_signal(ms_loop *loop, int signo, void *arg) {
  CU_ASSERT_EQUAL(signo, SIGUSR1);
  CU_ASSERT_PTR_EQUAL(arg, &sig_calls);
  sig_calls++;
}

static void test_signals(void) {
  sigset_t old;
  pthread_sigmask(SIG_SETMASK, NULL, &old);
  ms_loop *loop = new_loop();
  ms_error *err = NULL;

  CU_ASSERT_EQUAL(ms_loop_add_signal(loop, SIGUSR2, on_signal, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_FAILED_PRECONDITION);
  CU_ASSERT_STRING_EQUAL(err->msg,
                         "watch signal `SIGUSR2`: it is not blocked; call ms_signals_block() in main "
                         "before any thread starts");
  CU_ASSERT_EQUAL(ms_loop_add_signal(loop, 0, on_signal, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  int bad = 1000;
  CU_ASSERT_EQUAL(ms_signals_block(&bad, 1, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  ms_error_free(err);
  err = NULL;

  int sigs[] = {SIGUSR1};
  MS_ASSERT_OK(ms_signals_block(sigs, 1, &err), &err);
  MS_ASSERT_OK(ms_loop_add_signal(loop, SIGUSR1, on_signal, &sig_calls, &err), &err);
  CU_ASSERT_EQUAL(ms_loop_add_signal(loop, SIGUSR1, on_signal, NULL, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_ALREADY_EXISTS);
  CU_ASSERT_STRING_EQUAL(err->msg, "watch signal `SIGUSR1`: already has a callback");
  ms_error_free(err);

  raise(SIGUSR1);
  run_until(loop, &sig_calls, 1);
  raise(SIGUSR1);
  run_until(loop, &sig_calls, 2);
  ms_loop_free(loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- posts and stop ---- */

#define POSTERS 4
#define POSTS_EACH 10000

static struct {
  int next[POSTERS]; /* only the loop thread touches these */
  int total;
  int out_of_order;
} pstate;

static void on_post(void *arg) {
  uintptr_t v = (uintptr_t)arg;
  int t = (int)(v >> 20), i = (int)(v & 0xfffff);
  if (pstate.next[t] != i)
    pstate.out_of_order++;
  pstate.next[t] = i + 1;
  pstate.total++;
}

typedef struct poster {
  ms_loop *loop;
  int idx;
} poster;

static void *post_many(void *arg) {
  poster *p = arg;
  for (int i = 0; i < POSTS_EACH; i++)
    if (ms_loop_post(p->loop, on_post, (void *)(((uintptr_t)p->idx << 20) | (uintptr_t)i)) != 0)
      return (void *)1;
  return NULL;
}

static void test_posts_from_threads(void) {
  ms_loop *loop = new_loop();
  memset(&pstate, 0, sizeof(pstate));
  pthread_t th[POSTERS];
  poster ps[POSTERS];
  for (int t = 0; t < POSTERS; t++) {
    ps[t] = (poster){loop, t};
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, post_many, &ps[t]), 0);
  }
  run_until(loop, &pstate.total, POSTERS * POSTS_EACH);
  for (int t = 0; t < POSTERS; t++) {
    void *rc = NULL;
    pthread_join(th[t], &rc);
    CU_ASSERT_PTR_NULL(rc);
    CU_ASSERT_EQUAL(pstate.next[t], POSTS_EACH);
  }
  CU_ASSERT_EQUAL(pstate.out_of_order, 0);
  CU_ASSERT_EQUAL(ms_loop_post(loop, NULL, NULL), MS_ERR);
  ms_loop_free(loop);
}

static void *stopper(void *arg) {
  ms_loop_stop(arg);
  return NULL;
}

static void stop_from_timer(ms_loop *loop, uint64_t id, void *arg) {
  (*(int *)arg)++;
  ms_loop_stop(loop);
}

static void test_stop_from_another_thread(void) {
  ms_loop *loop = new_loop();
  ms_error *err = NULL;
  /* Whether the stop lands before or during run, run must return. */
  pthread_t t;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, stopper, loop), 0);
  MS_ASSERT_OK(ms_loop_run(loop, &err), &err);
  pthread_join(t, NULL);

  /* The stop was consumed: a second run keeps going until something stops it again. */
  int fired = 0;
  ms_loop_add_timer(loop, 5, 0, stop_from_timer, &fired);
  MS_ASSERT_OK(ms_loop_run(loop, &err), &err);
  CU_ASSERT_EQUAL(fired, 1);
  ms_loop_free(loop);
}

static void leaky(void *arg) {
  CU_FAIL("posted work must not run after free");
}

static void test_free_runs_nothing(void) {
  ms_loop_free(NULL);
  ms_loop *loop = new_loop();
  ms_error *err = NULL;
  int p[2];
  CU_ASSERT_EQUAL_FATAL(pipe2(p, O_CLOEXEC), 0);
  CU_ASSERT_EQUAL(write(p[1], "x", 1), 1);
  MS_ASSERT_OK(ms_loop_add_fd(loop, p[0], EPOLLIN, never, NULL, &err), &err);
  ms_loop_add_timer(loop, 0, 10, victim, NULL);
  ms_loop_post(loop, leaky, NULL);
  ms_loop_free(loop);
  close(p[0]);
  close(p[1]);
}

/* ---- the guard (issue 12 point 4: a fenced leader checks before every event) ---- */

typedef struct guard_state {
  ms_loop *loop;
  int guards, timers, posts;
  bool fenced;      /* the guard tripped: it cancels the timer */
  uint64_t timer;   /* the timer the guard cancels */
  int posts_fenced; /* posts that ran after the guard tripped */
} guard_state;

static guard_state gstate;

static void guard_fn(void *arg) {
  guard_state *g = arg;
  g->guards++;
  if (!g->fenced && g->guards >= 1) {
    g->fenced = true;
    ms_loop_cancel_timer(g->loop, g->timer);
  }
}

static void guarded_timer(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  guard_state *g = arg;
  g->timers++;
}

static void guarded_post(void *arg) {
  guard_state *g = arg;
  g->posts++;
  g->posts_fenced += g->fenced;
}

static void test_guard_before_every_callback(void) {
  ms_loop *loop = new_loop();
  memset(&gstate, 0, sizeof(gstate));
  gstate.loop = loop;
  /* A due timer and a post: the guard runs before the first of them and cancels the
   * timer, which then never runs; the post still runs, after another guard call. */
  gstate.timer = ms_loop_add_timer(loop, 0, 0, guarded_timer, &gstate);
  ms_loop_set_guard(loop, guard_fn, &gstate);
  ms_loop_post(loop, guarded_post, &gstate);
  run_until(loop, &gstate.posts, 1);
  ms_error *err = NULL;
  for (int i = 0; i < 3; i++)
    MS_ASSERT_OK(ms_loop_run_once(loop, 5, &err), &err);
  CU_ASSERT_TRUE(gstate.fenced);
  CU_ASSERT_EQUAL(gstate.timers, 0);
  CU_ASSERT_EQUAL(gstate.posts_fenced, 1); /* the guard ran first */
  CU_ASSERT_EQUAL(gstate.guards, 1);       /* once, before the one callback that ran */
  /* No guard: callbacks run as before. */
  ms_loop_set_guard(loop, NULL, NULL);
  ms_loop_post(loop, guarded_post, &gstate);
  run_until(loop, &gstate.posts, 2);
  CU_ASSERT_EQUAL(gstate.guards, 1);
  ms_loop_free(loop);
}

/* ---- bounded posts (issue 14) ---- */

static void count_post(void *arg) {
  (*(int *)arg)++;
}

/* Past the limit a try-post queues nothing and says how many wait; plain posts (the
 * path for completions) still go through; once the queue drains, try-posts pass again. */
static void test_backpressure_post_limit(void) {
  ms_loop *loop = new_loop();
  ms_loop_set_post_limit(loop, 100);
  int ran = 0, done = 0;
  ms_error *err = NULL;
  for (int i = 0; i < 100; i++)
    MS_ASSERT_OK(ms_loop_try_post(loop, count_post, &ran, &err), &err);
  CU_ASSERT_EQUAL(ms_loop_queued(loop), 100);
  for (int i = 0; i < 1000; i++) {
    CU_ASSERT_EQUAL(ms_loop_try_post(loop, count_post, &ran, &err), MS_ERR);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "100 calls already queued"));
    ms_error_free(TAKE_PTR(err));
  }
  CU_ASSERT_EQUAL(ms_loop_post(loop, count_post, &done), 0); /* exempt */
  run_until(loop, &done, 1);
  CU_ASSERT_EQUAL(ran, 100); /* none of the refused ran */
  CU_ASSERT_EQUAL(ms_loop_queued(loop), 0);
  MS_ASSERT_OK(ms_loop_try_post(loop, count_post, &ran, &err), &err);
  run_until(loop, &ran, 101);
  ms_loop_set_post_limit(loop, 0); /* none */
  for (int i = 0; i < 1000; i++)
    MS_ASSERT_OK(ms_loop_try_post(loop, count_post, &ran, &err), &err);
  run_until(loop, &ran, 1101);
  ms_loop_free(loop);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"fd_readiness", test_fd_readiness},
      {"fd_errors", test_fd_errors},
      {"del_fd_inside_callback", test_del_fd_inside_callback},
      {"timer_order", test_timer_order},
      {"interval_and_self_cancel", test_interval_and_self_cancel},
      {"cancel_inside_callback", test_cancel_inside_callback},
      {"cancel_ids", test_cancel_ids},
      {"timer_heap_order_after_cancels", test_timer_heap_order_after_cancels},
      {"signals", test_signals},
      {"posts_from_threads", test_posts_from_threads},
      {"stop_from_another_thread", test_stop_from_another_thread},
      {"free_runs_nothing", test_free_runs_nothing},
      {"trust_4_guard_before_every_callback", test_guard_before_every_callback},
      {"backpressure_post_limit", test_backpressure_post_limit},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "loop", cases);
}
