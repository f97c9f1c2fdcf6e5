#include "meseta/workq.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "meseta/alloc.h"

typedef struct job {
  ms_workq_fn fn;
  void *arg;
} job;

struct ms_workq {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  job *ring;
  size_t head, len, cap;
  bool stopping;
  pthread_t *threads;
  size_t n_threads;
};

static void *worker(void *arg) {
  ms_workq *q = arg;
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->len == 0 && !q->stopping)
      pthread_cond_wait(&q->cond, &q->mu);
    if (q->len == 0)
      break; /* stopping, and nothing left to run */
    job j = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    pthread_mutex_unlock(&q->mu);
    j.fn(j.arg);
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

ms_workq *ms_workq_new(size_t threads, size_t max_queued, ms_error **err) {
  ms_workq *q = ms_xcalloc(1, sizeof(*q));
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cond, NULL);
  q->cap = max_queued ? max_queued : 10000;
  q->ring = ms_xcalloc(q->cap, sizeof(job));
  q->threads = ms_xcalloc(threads ? threads : 1, sizeof(pthread_t));
  for (size_t i = 0; i < (threads ? threads : 1); i++) {
    int e = pthread_create(&q->threads[i], NULL, worker, q);
    if (e != 0) {
      ms_error_set_errno(err, e, "start worker thread %zu", i);
      ms_workq_free(q);
      return NULL;
    }
    q->n_threads++;
  }
  return q;
}

int ms_workq_push(ms_workq *q, ms_workq_fn fn, void *arg, ms_error **err) {
  pthread_mutex_lock(&q->mu);
  if (q->stopping) {
    pthread_mutex_unlock(&q->mu);
    return ms_error_set(err, MS_FAILED_PRECONDITION, "the work queue is shutting down");
  }
  if (q->len == q->cap) {
    pthread_mutex_unlock(&q->mu);
    return ms_error_set(err, MS_RESOURCE_EXHAUSTED, "%zu jobs already wait: the server is overloaded",
                        q->cap);
  }
  q->ring[(q->head + q->len) % q->cap] = (job){fn, arg};
  q->len++;
  pthread_cond_signal(&q->cond);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

void ms_workq_free(ms_workq *q) {
  if (!q)
    return;
  pthread_mutex_lock(&q->mu);
  q->stopping = true;
  pthread_cond_broadcast(&q->cond);
  pthread_mutex_unlock(&q->mu);
  for (size_t i = 0; i < q->n_threads; i++)
    pthread_join(q->threads[i], NULL);
  free(q->threads);
  free(q->ring);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cond);
  free(q);
}
