/* The small event loop one thread owns (redis ae.c, nginx's cycle).
 *
 * One epoll instance watches the caller's fds plus three of the loop's own: a timerfd
 * armed for the earliest timer (timers live in a min-heap), a signalfd for the signals
 * registered with ms_loop_add_signal(), and an eventfd that other threads use to post
 * work and to stop the loop. State that the loop's callbacks touch needs no lock: only
 * the owning thread runs them.
 *
 * Threads: everything here must be called from the thread that runs the loop (usually
 * from inside a callback), except ms_loop_post(), ms_loop_try_post(), ms_loop_queued(),
 * ms_loop_set_post_limit() and ms_loop_stop(), which any thread may call at any time
 * while the loop exists. Callbacks must not call ms_loop_run*() or ms_loop_free() on
 * their own loop.
 *
 * Removing inside callbacks is safe: ms_loop_del_fd() and ms_loop_cancel_timer() may be
 * called from any callback, for any fd or timer, including the one being dispatched;
 * a removed watch gets no further calls, even for events already collected in the
 * same epoll batch.
 *
 * Ownership: the loop owns its own fds and closes them in ms_loop_free(). It never
 * closes or frees what callers pass in: watched fds stay the caller's (close them
 * after ms_loop_del_fd(); a fd closed while still watched leaves a stale watch), and
 * `arg` pointers are handed back untouched. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "meseta/error.h"

typedef struct ms_loop ms_loop;

/* `events` is what epoll reported: EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR... */
typedef void (*ms_loop_fd_fn)(ms_loop *loop, int fd, uint32_t events, void *arg);
typedef void (*ms_loop_timer_fn)(ms_loop *loop, uint64_t id, void *arg);
typedef void (*ms_loop_signal_fn)(ms_loop *loop, int signo, void *arg);
typedef void (*ms_loop_post_fn)(void *arg);

/* Creates a loop. Returns NULL with *err set if the kernel refuses an fd. The caller
 * frees it with ms_loop_free(). */
ms_loop *ms_loop_new(ms_error **err);

/* Closes the loop's fds and frees it; NULL is fine. Runs no callbacks: posted work that
 * has not run yet is dropped (its `arg` is not freed), timers and watches just vanish.
 * No other thread may post to or stop the loop once this starts. */
void ms_loop_free(ms_loop *loop);

/* Watches fd for `events` (EPOLLIN, EPOLLOUT, optionally EPOLLET...; EPOLLHUP and
 * EPOLLERR are always reported). Level-triggered unless EPOLLET is given. Fails with
 * MS_ALREADY_EXISTS if fd is already watched, or with the epoll_ctl error. */
int ms_loop_add_fd(ms_loop *loop, int fd, uint32_t events, ms_loop_fd_fn cb, void *arg, ms_error **err);

/* Changes the events a watched fd waits for. MS_NOT_FOUND if fd is not watched. */
int ms_loop_mod_fd(ms_loop *loop, int fd, uint32_t events, ms_error **err);

/* Stops watching fd (safe inside callbacks, see above). MS_NOT_FOUND if fd is not
 * watched. The watch is removed even if the kernel no longer knows the fd. */
int ms_loop_del_fd(ms_loop *loop, int fd, ms_error **err);

/* Calls cb after after_ms milliseconds (<= 0: on the next iteration), then every
 * interval_ms if interval_ms > 0 (0 = one-shot). Returns the timer's id (> 0), or 0 if cb is NULL.
 * Timers due at the same time fire in the order they were scheduled; a repeating timer
 * that falls behind fires once and is rescheduled from now rather than in a burst.
 * A one-shot timer is gone once its callback starts. */
uint64_t ms_loop_add_timer(ms_loop *loop, int64_t after_ms, int64_t interval_ms, ms_loop_timer_fn cb,
                           void *arg);

/* Cancels a pending timer (safe inside callbacks, including the timer's own). Returns
 * false if id is unknown, already fired (one-shot) or already cancelled. */
bool ms_loop_cancel_timer(ms_loop *loop, uint64_t id);

/* Delivers signo to cb through the loop's signalfd. The signal must already be blocked
 * in every thread (see ms_signals_block), else the kernel handles it the default way
 * and the signalfd never sees it: fails with MS_FAILED_PRECONDITION when it is not
 * blocked in the calling thread, MS_ALREADY_EXISTS if signo already has a callback.
 * Several deliveries of one signal between two iterations may merge into one call. */
int ms_loop_add_signal(ms_loop *loop, int signo, ms_loop_signal_fn cb, void *arg, ms_error **err);

/* Blocks the n signals in signos for the calling thread with pthread_sigmask. Call it
 * in main() before any thread starts (gRPC's included): new threads inherit the mask,
 * so the signals then reach only the loop's signalfd instead of whichever thread the
 * kernel picks. */
int ms_signals_block(const int *signos, size_t n, ms_error **err);

/* Thread-safe: queues fn(arg) to run on the loop's thread and wakes the loop. Posts run
 * in FIFO order (per posting thread, and in lock order across threads). Returns 0, or
 * MS_ERR if fn is NULL. Memory for the queue comes from ms_x* (aborts when exhausted).
 *
 * This path is unbounded and never refuses: it is for work that must not be dropped
 * (completions of work the loop started, call ends, answers from other threads), whose
 * number the loop's own side already bounds. Work an untrusted client starts goes
 * through ms_loop_try_post instead. */
int ms_loop_post(ms_loop *loop, ms_loop_post_fn fn, void *arg);

/* Thread-safe: as ms_loop_post, but counted against the loop's post limit (see
 * ms_loop_set_post_limit): when that many try-posts are queued and not started yet,
 * queues nothing and fails with MS_RESOURCE_EXHAUSTED ("N calls already queued"), so
 * the caller answers its client at once instead of growing the queue. Both kinds share
 * one FIFO. A post counts until its fn starts. */
int ms_loop_try_post(ms_loop *loop, ms_loop_post_fn fn, void *arg, ms_error **err);

/* Sets the bound on queued ms_loop_try_post work (0, the default: none). Thread-safe. */
void ms_loop_set_post_limit(ms_loop *loop, size_t max);

/* How many ms_loop_try_post posts wait right now (a snapshot). Thread-safe. */
size_t ms_loop_queued(ms_loop *loop);

/* Calls fn(arg) on the loop's thread before every callback the loop dispatches (fd,
 * timer, signal, post): one place for a check that must come before any work, e.g. a
 * leader whose lease may be gone stepping down before it handles anything. fn may
 * cancel timers and remove fds (a removed one is then not called). NULL: none. */
void ms_loop_set_guard(ms_loop *loop, ms_loop_post_fn fn, void *arg);

/* Thread-safe: makes ms_loop_run() return after the current iteration. A stop that
 * arrives before ms_loop_run() starts makes that run return at once; each run consumes
 * the stop that ended it. */
void ms_loop_stop(ms_loop *loop);

/* Runs iterations until ms_loop_stop(). Returns 0 when stopped, MS_ERR if epoll fails. */
int ms_loop_run(ms_loop *loop, ms_error **err);

/* Waits up to timeout_ms (-1 = no limit, 0 = just poll) for something to happen and
 * dispatches it. Returns the number of callbacks run (0 on timeout), or MS_ERR. Does not
 * look at or consume a pending stop. */
int ms_loop_run_once(ms_loop *loop, int timeout_ms, ms_error **err);
