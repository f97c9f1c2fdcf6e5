/* Completed tasks in the registry, so that GetTasks still lists them after a failover
 * (issue 12 point 4). Tasks are written in groups (one COMPLETED_TASKS record per group,
 * a Batch of one put) rather than one write per task: at 10,000 tasks a minute, four
 * writes a second of ~42 tasks instead of 167. Each kept task knows the record that holds it; a record
 * goes when it holds no kept task, and is rewritten (its kept tasks go with the next
 * group, the record is deleted once that group is written) when it holds fewer kept
 * tasks than half of what it was written with. A new leader lists the records in id
 * order (the writing leader's election time, then a sequence) and keeps the last copy
 * of each task.
 *
 * Nothing is lost with a dead leader: a framework's acknowledgement of a task's terminal
 * update reaches the agent only once the record holding the task is written, so a task
 * not yet written is still the agent's, which brings it to the next leader. A write that
 * fails is tried again with the next group.
 *
 * Owner thread only. The history (s->hist) exists while leading with a registry. */
#include "alloc-svc-history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"

#include "alloc-svc-completed.h"
#include "alloc-svc-core.h"
#include "alloc-svc-registry.h"

#define KIND MESETA__V1__RECORD_KIND__COMPLETED_TASKS

typedef struct svc_hist {
  alloc_service *s;
  svc_table chunks;        /* svc_chunk by record id */
  svc_done_task **pending; /* to write; NULL slots: forgotten since */
  uint32_t npending, cappending, nlive_pending;
  size_t pending_bytes;
  char **retire; /* records whose kept tasks are pending: deleted after the next write */
  uint32_t nretire;
  uint64_t seq;
  uint64_t timer;
  bool loading;          /* records are being read: counts only, nothing dropped yet */
  struct held_ack *held; /* acknowledgements waiting for their task's record */
  uint32_t nheld, capheld;
} svc_hist;

typedef struct held_ack {
  char *agent_id, *framework_id, *task_id, *key;
  uint8_t uuid[16];
} held_ack;

/* Past this many held acknowledgements, more are sent at once (bounded memory). */
#define MAX_HELD_ACKS 100000u

static svc_hist *hist_of(alloc_service *s) {
  if (!s->hist && svc_durable(s) && s->leading) {
    s->hist = ms_xcalloc(1, sizeof(*s->hist));
    s->hist->s = s;
  }
  return s->hist;
}

static void chunk_free(svc_hist *h, svc_chunk *c) {
  svc_table_del(&h->chunks, &c->e);
  free(c->e.key);
  free(c);
}

static void flush(svc_hist *h);

static void flush_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  svc_hist *h = arg;
  h->timer = 0;
  flush(h);
}

static void pend(svc_hist *h, svc_done_task *d) {
  if (d->pending)
    return;
  if (h->npending == h->cappending) {
    h->cappending = h->cappending ? h->cappending * 2 : 64;
    h->pending = ms_xrealloc(h->pending, h->cappending * sizeof(*h->pending));
  }
  d->pending = true;
  d->pending_at = h->npending;
  h->pending[h->npending++] = d;
  h->nlive_pending++;
  h->pending_bytes += protobuf_c_message_get_packed_size(&d->msg->base);
  if (h->nlive_pending >= SVC_HIST_GROUP || h->pending_bytes >= SVC_HIST_BYTES)
    flush(h);
  else if (!h->timer)
    h->timer = ms_loop_add_timer(h->s->loop, SVC_HIST_DELAY_MS, 0, flush_tick, h);
}

static void retire(svc_hist *h, svc_chunk *c) {
  h->retire = ms_xrealloc(h->retire, (h->nretire + 1) * sizeof(*h->retire));
  h->retire[h->nretire++] = ms_xstrdup(c->e.key);
}

/* Deletes records (any revision: only this leader writes them); a failure leaves them
 * for the next leader's load to drop. Takes ids. */
static void delete_records(alloc_service *s, char **ids, uint32_t n) {
  for (uint32_t at = 0; at < n; at += 64) {
    Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
    for (uint32_t i = at; i < n && i < at + 64; i++) {
      Meseta__V1__Write *w = ms_pb_new(&meseta__v1__write__descriptor);
      w->expect = ms_pb_new(&meseta__v1__expect__descriptor);
      w->expect->expect_case = MESETA__V1__EXPECT__EXPECT_ANY;
      w->expect->any = true;
      w->op_case = MESETA__V1__WRITE__OP_DELETE;
      w->delete_ = ms_pb_new(&meseta__v1__record_ref__descriptor);
      w->delete_->kind = KIND;
      w->delete_->id = ids[i];
      ids[i] = NULL;
      b->writes = ms_xrealloc(b->writes, (b->n_writes + 1) * sizeof(*b->writes));
      b->writes[b->n_writes++] = w;
    }
    svc_reg_batch(s, b, NULL, NULL);
  }
  free(ids);
}

/* A kept task's record lost one: drop or rewrite the record. */
static void chunk_lost_one(svc_hist *h, svc_chunk *c) {
  c->live--;
  if (h->loading)
    return;
  if (c->live == 0) {
    char **ids = ms_xmalloc(sizeof(*ids));
    ids[0] = ms_xstrdup(c->e.key);
    chunk_free(h, c);
    delete_records(h->s, ids, 1);
    return;
  }
  if (c->live * 2 >= c->total)
    return;
  /* Mostly forgotten: its kept tasks go with the next group; the record goes after. */
  alloc_service *s = h->s;
  retire(h, c);
  for (svc_done_task *d = s->done_head; d; d = d->next)
    if (d->chunk == c) {
      d->chunk = NULL;
      pend(h, d);
    }
  chunk_free(h, c);
}

static void held_free(held_ack *a) {
  free(a->agent_id);
  free(a->framework_id);
  free(a->task_id);
  free(a->key);
}

/* Whether d's record is written (or d is not for the registry at all). */
static bool settled(const svc_done_task *d) {
  return !d || (!d->pending && (!d->chunk || d->chunk->written));
}

/* Sends the held acknowledgements whose tasks are written now (or forgotten). */
static void release_acks(svc_hist *h) {
  alloc_service *s = h->s;
  uint32_t keep = 0;
  for (uint32_t i = 0; i < h->nheld; i++) {
    held_ack *a = &h->held[i];
    if (!settled(svc_table_get(&s->done_tasks, a->key))) {
      h->held[keep++] = *a;
      continue;
    }
    ProtobufCBinaryData uuid = {.len = sizeof(a->uuid), .data = a->uuid};
    svc_agent *ag = svc_table_get(&s->agents, a->agent_id);
    if (ag)
      svc_send_ack(s, ag, a->framework_id, a->task_id, &uuid);
    held_free(a);
  }
  h->nheld = keep;
}

bool svc_history_hold_ack(alloc_service *s, const char *agent_id, const char *framework_id,
                          const char *task_id, const ProtobufCBinaryData *uuid) {
  svc_hist *h = s->hist;
  if (!h || uuid->len != 16 || h->nheld >= MAX_HELD_ACKS)
    return false;
  _cleanup_free_ char *key = svc_key2(framework_id, task_id);
  if (settled(svc_table_get(&s->done_tasks, key)))
    return false;
  if (h->nheld == h->capheld) {
    h->capheld = h->capheld ? h->capheld * 2 : 64;
    h->held = ms_xrealloc(h->held, h->capheld * sizeof(*h->held));
  }
  held_ack *a = &h->held[h->nheld++];
  a->agent_id = ms_xstrdup(agent_id);
  a->framework_id = ms_xstrdup(framework_id);
  a->task_id = ms_xstrdup(task_id);
  a->key = TAKE_PTR(key);
  memcpy(a->uuid, uuid->data, 16);
  return true;
}

typedef struct flush_ctx {
  char *id;      /* the record written */
  char **retire; /* deleted once it is */
  uint32_t nretire;
} flush_ctx;

static void flushed(alloc_service *s, void *arg, const ms_error *err, bool current) {
  flush_ctx *ctx = arg;
  svc_hist *h = current ? s->hist : NULL;
  if (h && err) {
    /* Not written (or not known to be): its tasks wait for the next group. */
    ms_log_warn(NULL, "completed tasks record `%s` not written: %s", ctx->id, err->msg);
    svc_chunk *c = svc_table_get(&h->chunks, ctx->id);
    for (svc_done_task *d = s->done_head; c && d; d = d->next)
      if (d->chunk == c) {
        d->chunk = NULL;
        pend(h, d);
      }
    if (c)
      chunk_free(h, c);
    for (uint32_t i = 0; i < ctx->nretire; i++) {
      h->retire = ms_xrealloc(h->retire, (h->nretire + 1) * sizeof(*h->retire));
      h->retire[h->nretire++] = ctx->retire[i];
    }
    free(ctx->retire);
  } else if (h) {
    svc_chunk *c = svc_table_get(&h->chunks, ctx->id);
    if (c)
      c->written = true;
    delete_records(s, ctx->retire, ctx->nretire);
    release_acks(h);
  } else {
    for (uint32_t i = 0; i < ctx->nretire; i++)
      free(ctx->retire[i]);
    free(ctx->retire);
  }
  free(ctx->id);
  free(ctx);
}

/* Writes what is pending, in records of at most SVC_HIST_GROUP tasks / SVC_HIST_BYTES. */
static void flush(svc_hist *h) {
  alloc_service *s = h->s;
  if (h->timer) {
    ms_loop_cancel_timer(s->loop, h->timer);
    h->timer = 0;
  }
  uint32_t at = 0;
  while (at < h->npending) {
    Meseta__V1__CompletedTasksRecord *cr = ms_pb_new(&meseta__v1__completed_tasks_record__descriptor);
    cr->tasks = ms_xcalloc(SVC_HIST_GROUP, sizeof(*cr->tasks));
    svc_chunk *c = ms_xcalloc(1, sizeof(*c));
    c->e.key = ms_xasprintf("%013lld-%010llu", (long long)s->elected_ms, (unsigned long long)++h->seq);
    size_t bytes = 0;
    for (; at < h->npending && cr->n_tasks < SVC_HIST_GROUP && bytes < SVC_HIST_BYTES; at++) {
      svc_done_task *d = h->pending[at];
      if (!d)
        continue;
      d->pending = false;
      d->chunk = c;
      cr->tasks[cr->n_tasks++] = (Meseta__V1__Task *)ms_pb_dup(&d->msg->base);
      bytes += protobuf_c_message_get_packed_size(&d->msg->base);
    }
    if (cr->n_tasks == 0) {
      protobuf_c_message_free_unpacked(&cr->base, NULL);
      free(c->e.key);
      free(c);
      break;
    }
    c->live = c->total = (uint32_t)cr->n_tasks;
    svc_table_put(&h->chunks, &c->e);
    Meseta__V1__Record *rec = ms_pb_new(&meseta__v1__record__descriptor);
    rec->id = ms_xstrdup(c->e.key);
    rec->body_case = MESETA__V1__RECORD__BODY_COMPLETED_TASKS;
    rec->completed_tasks = cr;
    Meseta__V1__Write *w = ms_pb_new(&meseta__v1__write__descriptor);
    w->expect = ms_pb_new(&meseta__v1__expect__descriptor);
    w->expect->expect_case = MESETA__V1__EXPECT__EXPECT_ABSENT;
    w->expect->absent = true;
    w->op_case = MESETA__V1__WRITE__OP_PUT;
    w->put = rec;
    Meseta__V1__BatchRequest *b = ms_pb_new(&meseta__v1__batch_request__descriptor);
    b->writes = ms_xmalloc(sizeof(*b->writes));
    b->writes[b->n_writes++] = w;
    flush_ctx *ctx = ms_xcalloc(1, sizeof(*ctx));
    ctx->id = ms_xstrdup(c->e.key);
    if (at >= h->npending) { /* the last group: records retired so far can go after it */
      ctx->retire = h->retire;
      ctx->nretire = h->nretire;
      h->retire = NULL;
      h->nretire = 0;
    }
    svc_reg_batch(s, b, flushed, ctx);
  }
  h->npending = h->nlive_pending = 0;
  h->pending_bytes = 0;
}

void svc_history_added(alloc_service *s, svc_done_task *d) {
  svc_hist *h = hist_of(s);
  if (h && !s->loading)
    pend(h, d);
}

void svc_history_restored(alloc_service *s, svc_done_task *d, svc_chunk *chunk) {
  (void)s;
  d->chunk = chunk;
  chunk->live++;
}

void svc_history_forget(alloc_service *s, svc_done_task *d) {
  svc_hist *h = s->hist;
  if (!h)
    return;
  if (d->pending) {
    h->pending[d->pending_at] = NULL;
    h->nlive_pending--;
    d->pending = false;
  }
  svc_chunk *c = d->chunk;
  d->chunk = NULL;
  if (c)
    chunk_lost_one(h, c);
  if (h->nheld)
    release_acks(h); /* an acknowledgement held for d is not held for ever */
}

void svc_history_loaded(alloc_service *s, const svc_reg_loaded *l) {
  svc_hist *h = hist_of(s);
  if (!h)
    return;
  uint32_t nrec = 0, ntasks = 0;
  h->loading = true;
  for (size_t i = 0; i < l->npages; i++)
    for (size_t k = 0; k < l->pages[i]->n_records; k++) {
      const Meseta__V1__Record *r = l->pages[i]->records[k];
      if (r->body_case != MESETA__V1__RECORD__BODY_COMPLETED_TASKS || svc_table_get(&h->chunks, r->id))
        continue;
      svc_chunk *c = ms_xcalloc(1, sizeof(*c));
      c->e.key = ms_xstrdup(r->id);
      c->total = (uint32_t)r->completed_tasks->n_tasks;
      c->written = true;
      svc_table_put(&h->chunks, &c->e);
      nrec++;
      for (size_t t = 0; t < r->completed_tasks->n_tasks; t++) {
        const Meseta__V1__Task *task = r->completed_tasks->tasks[t];
        if (!task->framework_id || !task->framework_id->value || !task->task_id || !task->task_id->value)
          continue;
        svc_completed_restore(s, (Meseta__V1__Task *)ms_pb_dup(&task->base), c);
        ntasks++;
      }
    }
  h->loading = false;
  /* Records that hold no kept task (superseded, evicted, a failed write's copy) go;
   * mostly forgotten ones are rewritten. */
  char **ids = NULL;
  uint32_t nids = 0;
  for (uint32_t i = 0; i < h->chunks.n;) {
    svc_chunk *c = (svc_chunk *)h->chunks.v[i];
    if (c->live == 0) {
      ids = ms_xrealloc(ids, (nids + 1) * sizeof(*ids));
      ids[nids++] = ms_xstrdup(c->e.key);
      chunk_free(h, c);
    } else if (c->live * 2 < c->total) {
      c->live++; /* chunk_lost_one takes one back: rewrite it */
      chunk_lost_one(h, c);
    } else {
      i++;
    }
  }
  if (nids)
    delete_records(s, ids, nids);
  else
    free(ids);
  ms_log_info(NULL, "registry loaded: %u completed tasks from %u records (%u kept)", ntasks, nrec, s->ndone);
}

void svc_history_reset(alloc_service *s) {
  svc_hist *h = s->hist;
  if (!h)
    return;
  if (h->timer)
    ms_loop_cancel_timer(s->loop, h->timer);
  for (uint32_t i = 0; i < h->npending; i++)
    if (h->pending[i])
      h->pending[i]->pending = false;
  for (uint32_t i = 0; i < h->nretire; i++)
    free(h->retire[i]);
  free(h->retire);
  /* Held acknowledgements are dropped: their agents resend the updates to the next leader. */
  for (uint32_t i = 0; i < h->nheld; i++)
    held_free(&h->held[i]);
  free(h->held);
  for (uint32_t i = 0; i < h->chunks.n; i++) {
    free(h->chunks.v[i]->key);
    free(h->chunks.v[i]);
  }
  svc_table_release(&h->chunks);
  for (svc_done_task *d = s->done_head; d; d = d->next)
    d->chunk = NULL;
  free(h->pending);
  free(h);
  s->hist = NULL;
}
