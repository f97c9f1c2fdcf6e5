#include "meseta/loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#define LOOP_BATCH 64
#define NO_SLOT UINT32_MAX
/* Far enough (~73 years) to mean "never" while deadline arithmetic cannot overflow. */
#define MAX_DELAY_MS (INT64_MAX / MS_NSEC_PER_MSEC / 4)

typedef enum watch_kind { WATCH_FD, WATCH_TIMERFD, WATCH_SIGNALFD, WATCH_WAKE } watch_kind;

/* What epoll_event.data.ptr points at. Fd watches are heap-allocated so that one removed
 * during a batch can stay readable (marked dead) until the batch is over. */
typedef struct watch {
  watch_kind kind;
  int fd;
  bool dead;
  ms_loop_fd_fn cb;
  void *arg;
  struct watch *next_dead;
} watch;

typedef struct timer_slot {
  int64_t deadline; /* monotonic ns */
  uint64_t seq;     /* tie-break: equal deadlines fire in scheduling order */
  int64_t interval; /* ns, 0 = one-shot */
  ms_loop_timer_fn cb;
  void *arg;
  uint32_t gen;      /* bumped on free, so a stale id never matches a reused slot */
  uint32_t heap_pos; /* index in loop->heap, NO_SLOT when free */
  uint32_t next_free;
} timer_slot;

typedef struct post {
  ms_loop_post_fn fn;
  void *arg;
  bool bounded; /* came through ms_loop_try_post: counted in `bounded` until it starts */
} post;

struct ms_loop {
  int epfd, tfd, sfd, efd;
  watch timer_w, signal_w, wake_w;

  watch **fds; /* indexed by fd number: fds are small dense integers */
  size_t n_fds;
  watch *dead; /* removed during a batch, freed after it */
  bool dispatching;

  /* Timers: slots hold them, the heap orders slot indices by (deadline, seq). A timer's id
   * is (gen << 32) | (slot + 1): cancel is O(log n) without a hash table. */
  timer_slot *slots;
  uint32_t n_slots, free_slot;
  uint32_t *heap;
  uint32_t heap_len;
  uint64_t next_seq;
  int64_t armed; /* deadline the timerfd is set for, 0 = disarmed or already expired */

  sigset_t sigmask;
  struct {
    ms_loop_signal_fn cb;
    void *arg;
  } sigs[_NSIG];

  /* Cross-thread posts: producers append to `queue` under the lock; the owner swaps it
   * with `running` and drains that without the lock, so posting never waits on work. */
  pthread_mutex_t lock;
  post *queue;
  size_t q_len, q_cap;
  bool wake_pending;     /* an eventfd write is on its way; spares a syscall per post */
  size_t post_limit;     /* ms_loop_try_post's bound; 0: none */
  atomic_size_t bounded; /* bounded posts queued and not started yet */
  post *running;
  size_t r_cap;
  atomic_bool stop;

  ms_loop_post_fn guard; /* before every callback; see ms_loop_set_guard */
  void *guard_arg;
};

static void guard(ms_loop *loop) {
  if (loop->guard)
    loop->guard(loop->guard_arg);
}

void ms_loop_set_guard(ms_loop *loop, ms_loop_post_fn fn, void *arg) {
  loop->guard = fn;
  loop->guard_arg = arg;
}

static const char *signame(int signo, char *buf, size_t size) {
  const char *abbrev = sigabbrev_np(signo);
  if (abbrev)
    snprintf(buf, size, "SIG%s", abbrev);
  else
    snprintf(buf, size, "%d", signo);
  return buf;
}

static int epoll_add(ms_loop *loop, int fd, uint32_t events, watch *w, ms_error **err) {
  struct epoll_event ev = {.events = events, .data.ptr = w};
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
    return ms_error_set_errno(err, errno, "epoll add fd `%d`", fd);
  return 0;
}

ms_loop *ms_loop_new(ms_error **err) {
  ms_loop *loop = ms_xcalloc(1, sizeof(*loop));
  loop->epfd = loop->tfd = loop->sfd = loop->efd = -1;
  loop->free_slot = NO_SLOT;
  loop->next_seq = 1;
  sigemptyset(&loop->sigmask);
  pthread_mutex_init(&loop->lock, NULL);
  atomic_init(&loop->stop, false);
  atomic_init(&loop->bounded, 0);
  loop->timer_w.kind = WATCH_TIMERFD;
  loop->signal_w.kind = WATCH_SIGNALFD;
  loop->wake_w.kind = WATCH_WAKE;

  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (loop->epfd < 0) {
    ms_error_set_errno(err, errno, "epoll_create1");
    goto fail;
  }
  loop->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (loop->tfd < 0) {
    ms_error_set_errno(err, errno, "timerfd_create");
    goto fail;
  }
  loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->efd < 0) {
    ms_error_set_errno(err, errno, "eventfd");
    goto fail;
  }
  if (epoll_add(loop, loop->tfd, EPOLLIN, &loop->timer_w, err) < 0 ||
      epoll_add(loop, loop->efd, EPOLLIN, &loop->wake_w, err) < 0)
    goto fail;
  return loop;

fail:
  ms_error_prefix(err, "create event loop");
  ms_loop_free(loop);
  return NULL;
}

static void free_dead(ms_loop *loop) {
  while (loop->dead) {
    watch *w = loop->dead;
    loop->dead = w->next_dead;
    free(w);
  }
}

void ms_loop_free(ms_loop *loop) {
  if (!loop)
    return;
  int own[] = {loop->epfd, loop->tfd, loop->sfd, loop->efd};
  for (size_t i = 0; i < MS_ARRAY_SIZE(own); i++)
    if (own[i] >= 0)
      close(own[i]);
  for (size_t i = 0; i < loop->n_fds; i++)
    free(loop->fds[i]);
  free(loop->fds);
  free_dead(loop);
  free(loop->slots);
  free(loop->heap);
  free(loop->queue);
  free(loop->running);
  pthread_mutex_destroy(&loop->lock);
  free(loop);
}

/* ---- fd watches ---- */

static watch *find_fd(ms_loop *loop, int fd) {
  return fd >= 0 && (size_t)fd < loop->n_fds ? loop->fds[fd] : NULL;
}

int ms_loop_add_fd(ms_loop *loop, int fd, uint32_t events, ms_loop_fd_fn cb, void *arg, ms_error **err) {
  if (fd < 0 || !cb)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "watch fd `%d`: %s", fd,
                        fd < 0 ? "invalid fd" : "no callback");
  if (find_fd(loop, fd))
    return ms_error_set(err, MS_ALREADY_EXISTS, "watch fd `%d`: already watched", fd);
  if ((size_t)fd >= loop->n_fds) {
    size_t n = loop->n_fds ? loop->n_fds : 64;
    while (n <= (size_t)fd)
      n *= 2;
    loop->fds = ms_xrealloc(loop->fds, n * sizeof(*loop->fds));
    memset(loop->fds + loop->n_fds, 0, (n - loop->n_fds) * sizeof(*loop->fds));
    loop->n_fds = n;
  }
  watch *w = ms_xcalloc(1, sizeof(*w));
  *w = (watch){.kind = WATCH_FD, .fd = fd, .cb = cb, .arg = arg};
  if (epoll_add(loop, fd, events, w, err) < 0) {
    free(w);
    return MS_ERR;
  }
  loop->fds[fd] = w;
  return 0;
}

int ms_loop_mod_fd(ms_loop *loop, int fd, uint32_t events, ms_error **err) {
  watch *w = find_fd(loop, fd);
  if (!w)
    return ms_error_set(err, MS_NOT_FOUND, "modify watch on fd `%d`: not watched", fd);
  struct epoll_event ev = {.events = events, .data.ptr = w};
  if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
    return ms_error_set_errno(err, errno, "modify watch on fd `%d`", fd);
  return 0;
}

int ms_loop_del_fd(ms_loop *loop, int fd, ms_error **err) {
  watch *w = find_fd(loop, fd);
  if (!w)
    return ms_error_set(err, MS_NOT_FOUND, "remove watch on fd `%d`: not watched", fd);
  /* Failure here means the fd is already closed (and so gone from the epoll set) or was
   * replaced by a dup; either way the watch must go. */
  epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
  loop->fds[fd] = NULL;
  if (loop->dispatching) {
    w->dead = true;
    w->next_dead = loop->dead;
    loop->dead = w;
  } else {
    free(w);
  }
  return 0;
}

/* ---- timers ---- */

static bool timer_before(const ms_loop *loop, uint32_t a, uint32_t b) {
  const timer_slot *x = &loop->slots[a], *y = &loop->slots[b];
  return x->deadline < y->deadline || (x->deadline == y->deadline && x->seq < y->seq);
}

static void heap_set(ms_loop *loop, uint32_t pos, uint32_t slot) {
  loop->heap[pos] = slot;
  loop->slots[slot].heap_pos = pos;
}

static void heap_sift_up(ms_loop *loop, uint32_t pos) {
  uint32_t slot = loop->heap[pos];
  while (pos > 0) {
    uint32_t parent = (pos - 1) / 2;
    if (!timer_before(loop, slot, loop->heap[parent]))
      break;
    heap_set(loop, pos, loop->heap[parent]);
    pos = parent;
  }
  heap_set(loop, pos, slot);
}

static void heap_sift_down(ms_loop *loop, uint32_t pos) {
  uint32_t slot = loop->heap[pos];
  for (;;) {
    uint32_t child = 2 * pos + 1;
    if (child >= loop->heap_len)
      break;
    if (child + 1 < loop->heap_len && timer_before(loop, loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!timer_before(loop, loop->heap[child], slot))
      break;
    heap_set(loop, pos, loop->heap[child]);
    pos = child;
  }
  heap_set(loop, pos, slot);
}

static void heap_push(ms_loop *loop, uint32_t slot) {
  /* The heap never holds more entries than there are slots, so it shares their size. */
  heap_set(loop, loop->heap_len++, slot);
  heap_sift_up(loop, loop->heap_len - 1);
}

static void heap_remove(ms_loop *loop, uint32_t pos) {
  uint32_t removed = loop->heap[pos];
  uint32_t last = loop->heap[--loop->heap_len];
  loop->slots[removed].heap_pos = NO_SLOT;
  if (pos == loop->heap_len)
    return;
  heap_set(loop, pos, last);
  /* The moved entry may belong above or below its new place. */
  heap_sift_up(loop, pos);
  heap_sift_down(loop, loop->slots[last].heap_pos);
}

static uint64_t timer_id(const ms_loop *loop, uint32_t slot) {
  return ((uint64_t)loop->slots[slot].gen << 32) | (uint64_t)(slot + 1);
}

static void slot_release(ms_loop *loop, uint32_t slot) {
  timer_slot *t = &loop->slots[slot];
  t->gen++;
  t->cb = NULL;
  t->arg = NULL;
  t->next_free = loop->free_slot;
  loop->free_slot = slot;
}

static int64_t clamp_ms(int64_t ms) {
  return ms < 0 ? 0 : ms > MAX_DELAY_MS ? MAX_DELAY_MS : ms;
}

uint64_t ms_loop_add_timer(ms_loop *loop, int64_t after_ms, int64_t interval_ms, ms_loop_timer_fn cb,
                           void *arg) {
  if (!cb)
    return 0;
  if (loop->free_slot == NO_SLOT) {
    uint32_t n = loop->n_slots ? loop->n_slots * 2 : 16;
    loop->slots = ms_xrealloc(loop->slots, n * sizeof(*loop->slots));
    loop->heap = ms_xrealloc(loop->heap, n * sizeof(*loop->heap));
    /* Thread the new slots onto the free list, lowest index first. */
    for (uint32_t i = n; i-- > loop->n_slots;) {
      loop->slots[i] = (timer_slot){.gen = 0, .heap_pos = NO_SLOT, .next_free = loop->free_slot};
      loop->free_slot = i;
    }
    loop->n_slots = n;
  }
  uint32_t slot = loop->free_slot;
  timer_slot *t = &loop->slots[slot];
  loop->free_slot = t->next_free;
  t->deadline = ms_time_mono_ns() + clamp_ms(after_ms) * MS_NSEC_PER_MSEC;
  t->seq = loop->next_seq++;
  t->interval = clamp_ms(interval_ms) * MS_NSEC_PER_MSEC;
  t->cb = cb;
  t->arg = arg;
  t->next_free = NO_SLOT;
  heap_push(loop, slot);
  return timer_id(loop, slot);
}

bool ms_loop_cancel_timer(ms_loop *loop, uint64_t id) {
  uint64_t low = id & UINT32_MAX;
  if (low == 0 || low > loop->n_slots)
    return false;
  uint32_t slot = (uint32_t)(low - 1);
  timer_slot *t = &loop->slots[slot];
  if (t->gen != (uint32_t)(id >> 32) || t->heap_pos == NO_SLOT)
    return false;
  heap_remove(loop, t->heap_pos);
  slot_release(loop, slot);
  return true;
}

/* Points the timerfd at the earliest deadline, if that changed. */
static void arm_timerfd(ms_loop *loop) {
  int64_t want = loop->heap_len ? loop->slots[loop->heap[0]].deadline : 0;
  if (want == loop->armed)
    return;
  struct itimerspec its = {0};
  if (want) {
    /* An all-zero it_value would disarm; a deadline already past fires at once. */
    int64_t at = want > 0 ? want : 1;
    its.it_value.tv_sec = at / MS_NSEC_PER_SEC;
    its.it_value.tv_nsec = at % MS_NSEC_PER_SEC;
  }
  if (timerfd_settime(loop->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
    loop->armed = want;
}

static int run_timers(ms_loop *loop) {
  int ran = 0;
  int64_t now = ms_time_mono_ns();
  /* Timers scheduled by these callbacks wait for the next iteration, so a callback that
   * re-adds a 0ms timer cannot keep this loop from returning to epoll. */
  uint64_t seq_limit = loop->next_seq;
  while (loop->heap_len) {
    if (loop->guard) { /* it may cancel timers: look at the heap after it */
      uint32_t head = loop->heap[0];
      if (loop->slots[head].deadline > now || loop->slots[head].seq >= seq_limit)
        break;
      guard(loop);
      if (!loop->heap_len)
        break;
    }
    uint32_t slot = loop->heap[0];
    timer_slot *t = &loop->slots[slot];
    if (t->deadline > now || t->seq >= seq_limit)
      break;
    uint64_t id = timer_id(loop, slot);
    ms_loop_timer_fn cb = t->cb;
    void *arg = t->arg;
    heap_remove(loop, 0);
    if (t->interval) {
      /* Keep the cadence, but after a stall fire once rather than catch up in a burst. */
      t->deadline += t->interval;
      if (t->deadline <= now)
        t->deadline = now + t->interval;
      t->seq = loop->next_seq++;
      heap_push(loop, slot);
    } else {
      slot_release(loop, slot);
    }
    /* May add (realloc slots) or cancel timers: t is not used past this point. */
    cb(loop, id, arg);
    ran++;
  }
  return ran;
}

/* ---- signals ---- */

int ms_signals_block(const int *signos, size_t n, ms_error **err) {
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < n; i++)
    if (sigaddset(&set, signos[i]) < 0)
      return ms_error_set_errno(err, errno, "block signal `%d`", signos[i]);
  int r = pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (r != 0)
    return ms_error_set_errno(err, r, "block signals");
  return 0;
}

int ms_loop_add_signal(ms_loop *loop, int signo, ms_loop_signal_fn cb, void *arg, ms_error **err) {
  char name[32];
  if (signo <= 0 || signo >= _NSIG || !cb)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "watch signal `%d`: %s", signo,
                        cb ? "not a signal number" : "no callback");
  signame(signo, name, sizeof(name));
  if (loop->sigs[signo].cb)
    return ms_error_set(err, MS_ALREADY_EXISTS, "watch signal `%s`: already has a callback", name);
  sigset_t blocked;
  pthread_sigmask(SIG_BLOCK, NULL, &blocked);
  if (!sigismember(&blocked, signo))
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "watch signal `%s`: it is not blocked; call ms_signals_block() in main before "
                        "any thread starts",
                        name);
  sigset_t mask = loop->sigmask;
  sigaddset(&mask, signo);
  /* signalfd(-1, ...) creates the fd; signalfd(fd, ...) updates its mask in place. */
  int fd = signalfd(loop->sfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "watch signal `%s`: signalfd", name);
  if (loop->sfd < 0) {
    if (epoll_add(loop, fd, EPOLLIN, &loop->signal_w, err) < 0) {
      close(fd);
      return ms_error_prefix(err, "watch signal `%s`", name);
    }
    loop->sfd = fd;
  }
  loop->sigmask = mask;
  loop->sigs[signo].cb = cb;
  loop->sigs[signo].arg = arg;
  return 0;
}

static int run_signals(ms_loop *loop) {
  int ran = 0;
  struct signalfd_siginfo si;
  while (read(loop->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
    int signo = (int)si.ssi_signo;
    if (signo > 0 && signo < _NSIG && loop->sigs[signo].cb) {
      guard(loop);
      loop->sigs[signo].cb(loop, signo, loop->sigs[signo].arg);
      ran++;
    }
  }
  return ran;
}

/* ---- cross-thread posts and stop ---- */

static void wake(ms_loop *loop) {
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the loop is awake anyway. */
  ssize_t w = write(loop->efd, &one, sizeof(one));
  (void)w;
}

/* Appends under the lock. Returns false (nothing queued) when `bounded` and the limit
 * is reached. */
static bool enqueue(ms_loop *loop, ms_loop_post_fn fn, void *arg, bool bounded, size_t *ret_queued) {
  pthread_mutex_lock(&loop->lock);
  size_t queued = atomic_load(&loop->bounded);
  if (bounded && loop->post_limit && queued >= loop->post_limit) {
    pthread_mutex_unlock(&loop->lock);
    *ret_queued = queued;
    return false;
  }
  if (bounded)
    atomic_fetch_add(&loop->bounded, 1);
  if (loop->q_len == loop->q_cap) {
    loop->q_cap = loop->q_cap ? loop->q_cap * 2 : 64;
    loop->queue = ms_xrealloc(loop->queue, loop->q_cap * sizeof(*loop->queue));
  }
  loop->queue[loop->q_len++] = (post){fn, arg, bounded};
  bool need_wake = !loop->wake_pending;
  loop->wake_pending = true;
  pthread_mutex_unlock(&loop->lock);
  if (need_wake)
    wake(loop);
  return true;
}

int ms_loop_post(ms_loop *loop, ms_loop_post_fn fn, void *arg) {
  size_t queued;
  if (!fn)
    return MS_ERR;
  enqueue(loop, fn, arg, false, &queued);
  return 0;
}

int ms_loop_try_post(ms_loop *loop, ms_loop_post_fn fn, void *arg, ms_error **err) {
  size_t queued = 0;
  if (!fn)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "post: no function");
  if (!enqueue(loop, fn, arg, true, &queued))
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "%zu calls already queued", queued);
  return 0;
}

void ms_loop_set_post_limit(ms_loop *loop, size_t max) {
  pthread_mutex_lock(&loop->lock);
  loop->post_limit = max;
  pthread_mutex_unlock(&loop->lock);
}

size_t ms_loop_queued(ms_loop *loop) {
  return atomic_load(&loop->bounded);
}

void ms_loop_stop(ms_loop *loop) {
  atomic_store(&loop->stop, true);
  wake(loop);
}

static int run_posts(ms_loop *loop) {
  uint64_t count;
  ssize_t r = read(loop->efd, &count, sizeof(count));
  (void)r;
  pthread_mutex_lock(&loop->lock);
  post *batch = loop->queue;
  size_t n = loop->q_len, cap = loop->q_cap;
  loop->queue = loop->running;
  loop->q_cap = loop->r_cap;
  loop->q_len = 0;
  loop->wake_pending = false;
  pthread_mutex_unlock(&loop->lock);
  loop->running = batch;
  loop->r_cap = cap;
  /* Posts made by these callbacks land in the other array and run next iteration. */
  for (size_t i = 0; i < n; i++) {
    if (batch[i].bounded)
      atomic_fetch_sub(&loop->bounded, 1);
    guard(loop);
    batch[i].fn(batch[i].arg);
  }
  return (int)n;
}

/* ---- running ---- */

int ms_loop_run_once(ms_loop *loop, int timeout_ms, ms_error **err) {
  struct epoll_event evs[LOOP_BATCH];
  arm_timerfd(loop);
  int n = epoll_wait(loop->epfd, evs, LOOP_BATCH, timeout_ms);
  if (n < 0) {
    if (errno == EINTR)
      return 0;
    return ms_error_set_errno(err, errno, "epoll_wait");
  }
  int ran = 0;
  loop->dispatching = true;
  for (int i = 0; i < n; i++) {
    watch *w = evs[i].data.ptr;
    switch (w->kind) {
    case WATCH_FD:
      if (!w->dead)
        guard(loop);
      if (!w->dead) {
        w->cb(loop, w->fd, evs[i].events, w->arg);
        ran++;
      }
      break;
    case WATCH_TIMERFD: {
      uint64_t expirations;
      ssize_t r = read(loop->tfd, &expirations, sizeof(expirations));
      (void)r;
      loop->armed = 0; /* expired: the next arm_timerfd must set it again */
      break;
    }
    case WATCH_SIGNALFD:
      ran += run_signals(loop);
      break;
    case WATCH_WAKE:
      ran += run_posts(loop);
      break;
    }
  }
  /* Checked every iteration, not only on timerfd wakeups: it costs one comparison. */
  ran += run_timers(loop);
  loop->dispatching = false;
  free_dead(loop);
  return ran;
}

int ms_loop_run(ms_loop *loop, ms_error **err) {
  for (;;) {
    if (atomic_exchange(&loop->stop, false))
      return 0;
    if (ms_loop_run_once(loop, -1, err) < 0)
      return MS_ERR;
  }
}
