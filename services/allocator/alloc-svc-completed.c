/* Completed tasks: what a master-api view keeps of tasks it saw end, kept here too so a
 * WatchState snapshot holds the same (the state at a revision is then the same for a
 * replica that followed the changes and one that snapshotted later). Bounded per
 * framework and in all (Mesos' max_completed_tasks_per_framework); the oldest goes
 * first, with a task_removed change.
 *
 * A task is kept as WatchState last showed it: svc_state_emit_task hands the terminal
 * Task here (svc_completed_shown) before the task leaves the live table, because some
 * paths clear a task's resources between the two (an agent removed).
 *
 * Owner thread only. Entries live in s->done_tasks (every entry, linked or not) and, once
 * linked, in the all-list and their framework's list. */
#include "alloc-svc-completed.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "alloc-svc-core.h"
#include "alloc-svc-history.h"
#include "alloc-svc-state.h"
#include "alloc-svc-tasks.h"

static void link_done(alloc_service *s, svc_done_task *d, const char *framework_id);
static void bound(alloc_service *s, svc_done_task *d);

static void done_free(svc_done_task *d) {
  free(d->e.key);
  if (d->msg)
    protobuf_c_message_free_unpacked(&d->msg->base, NULL);
  free(d);
}

/* Takes d out of the lists and the table; the framework entry goes with its last. */
static void unlink_done(alloc_service *s, svc_done_task *d) {
  svc_done_fw *f = d->fw;
  if (f) {
    svc_history_forget(s, d);
    *(d->prev ? &d->prev->next : &s->done_head) = d->next;
    *(d->next ? &d->next->prev : &s->done_tail) = d->prev;
    *(d->fprev ? &d->fprev->fnext : &f->head) = d->fnext;
    *(d->fnext ? &d->fnext->fprev : &f->tail) = d->fprev;
    s->ndone--;
    if (--f->n == 0) {
      svc_table_del(&s->done_fws, &f->e);
      free(f->e.key);
      free(f);
    }
  }
  svc_table_del(&s->done_tasks, &d->e);
}

/* Forgets d and tells the views. */
static void evict(alloc_service *s, svc_done_task *d) {
  unlink_done(s, d);
  const char *fid = d->msg && d->msg->framework_id ? d->msg->framework_id->value : "";
  const char *tid = d->msg && d->msg->task_id ? d->msg->task_id->value : "";
  svc_state_emit_task_removed(s, fid, tid);
  done_free(d);
}

void svc_completed_shown(alloc_service *s, const svc_task *t, Meseta__V1__Task *msg) {
  svc_done_task *d = svc_table_get(&s->done_tasks, t->e.key);
  if (d && d->fw) { /* an older completed task of the same id: svc_completed_replaced missed */
    unlink_done(s, d);
    done_free(d);
    d = NULL;
  }
  if (!d) {
    d = ms_xcalloc(1, sizeof(*d));
    d->e.key = ms_xstrdup(t->e.key);
    svc_table_put(&s->done_tasks, &d->e);
  }
  if (d->msg)
    protobuf_c_message_free_unpacked(&d->msg->base, NULL);
  d->msg = msg;
}

void svc_completed_add(alloc_service *s, const svc_task *t) {
  svc_done_task *d = svc_table_get(&s->done_tasks, t->e.key);
  if (d && d->fw) { /* cannot happen (replaced on add); keep the table sane */
    unlink_done(s, d);
    done_free(d);
    d = NULL;
  }
  if (!svc_task_state_terminal(t->state) || s->closing) {
    /* Leaves without an end of its own (its framework removed): gone from the views. */
    if (d) {
      unlink_done(s, d);
      done_free(d);
    }
    if (!s->closing)
      svc_state_emit_task_removed(s, t->framework_id, t->task_id);
    return;
  }
  if (!d) { /* ended without a terminal change shown (not expected): as it is now */
    d = ms_xcalloc(1, sizeof(*d));
    d->e.key = ms_xstrdup(t->e.key);
    d->msg = svc_state_build_task(t);
    svc_table_put(&s->done_tasks, &d->e);
  }
  link_done(s, d, t->framework_id);
  svc_history_added(s, d);
  bound(s, d);
}

/* Appends d (in the table) to the lists. */
static void link_done(alloc_service *s, svc_done_task *d, const char *framework_id) {
  svc_done_fw *f = svc_table_get(&s->done_fws, framework_id);
  if (!f) {
    f = ms_xcalloc(1, sizeof(*f));
    f->e.key = ms_xstrdup(framework_id);
    svc_table_put(&s->done_fws, &f->e);
  }
  d->fw = f;
  d->prev = s->done_tail;
  *(s->done_tail ? &s->done_tail->next : &s->done_head) = d;
  s->done_tail = d;
  d->fprev = f->tail;
  *(f->tail ? &f->tail->fnext : &f->head) = d;
  f->tail = d;
  f->n++;
  s->ndone++;
}

/* The bounds, d just added. */
static void bound(alloc_service *s, svc_done_task *d) {
  svc_done_fw *f = d->fw;
  if (f->n > (uint64_t)s->cfg.max_completed_tasks_per_framework)
    evict(s, f->head); /* f survives: it holds d */
  while (s->ndone > (uint64_t)s->cfg.max_completed_tasks && s->done_head)
    evict(s, s->done_head);
}

void svc_completed_replaced(alloc_service *s, const char *key) {
  svc_done_task *d = svc_table_get(&s->done_tasks, key);
  if (!d)
    return;
  unlink_done(s, d);
  done_free(d);
}

void svc_completed_restore(alloc_service *s, Meseta__V1__Task *msg, struct svc_chunk *chunk) {
  const char *fid = msg->framework_id->value, *tid = msg->task_id->value;
  _cleanup_free_ char *key = svc_key2(fid, tid);
  svc_done_task *d = svc_table_get(&s->done_tasks, key);
  if (d) { /* an older copy (an earlier record): the later one holds it */
    unlink_done(s, d);
    done_free(d);
  }
  d = ms_xcalloc(1, sizeof(*d));
  d->e.key = TAKE_PTR(key);
  d->msg = msg;
  svc_table_put(&s->done_tasks, &d->e);
  link_done(s, d, fid);
  svc_history_restored(s, d, chunk);
  bound(s, d);
}

void svc_completed_free_all(alloc_service *s) {
  svc_history_reset(s);
  for (uint32_t i = 0; i < s->done_tasks.n; i++)
    done_free((svc_done_task *)s->done_tasks.v[i]);
  for (uint32_t i = 0; i < s->done_fws.n; i++) {
    free(s->done_fws.v[i]->key);
    free(s->done_fws.v[i]);
  }
  svc_table_release(&s->done_tasks);
  svc_table_release(&s->done_fws);
  s->done_head = s->done_tail = NULL;
  s->ndone = 0;
}

const Meseta__V1__Task *svc_completed_get(alloc_service *s, const char *key) {
  svc_done_task *d = svc_table_get(&s->done_tasks, key);
  return d && d->fw ? d->msg : NULL;
}

/* ---- terminal statuses not acknowledged yet ---- */

static void unacked_drop(alloc_service *s, svc_unacked *u) {
  *(u->prev ? &u->prev->next : &s->unacked_head) = u->next;
  *(u->next ? &u->next->prev : &s->unacked_tail) = u->prev;
  svc_table_del(&s->unacked, &u->e);
  free(u->e.key);
  free(u->framework_id);
  free(u->task_id);
  free(u->agent_id);
  free(u);
}

void svc_unacked_terminal(alloc_service *s, const char *framework_id, const char *agent_id,
                          const Meseta__V1__TaskStatus *st) {
  if (!st->task_id || !st->task_id->value || st->uuid.len != 16 || !svc_task_state_terminal(st->state))
    return;
  _cleanup_free_ char *key = svc_key2(framework_id, st->task_id->value);
  svc_unacked *u = svc_table_get(&s->unacked, key);
  if (u) /* an agent's resend: it moves to the newest end */
    unacked_drop(s, u);
  u = ms_xcalloc(1, sizeof(*u));
  u->e.key = TAKE_PTR(key);
  u->framework_id = ms_xstrdup(framework_id);
  u->task_id = ms_xstrdup(st->task_id->value);
  u->agent_id = ms_xstrdup(agent_id);
  u->state = st->state;
  memcpy(u->uuid, st->uuid.data, 16);
  svc_table_put(&s->unacked, &u->e);
  u->prev = s->unacked_tail;
  *(s->unacked_tail ? &s->unacked_tail->next : &s->unacked_head) = u;
  s->unacked_tail = u;
  if (s->unacked.n > SVC_MAX_UNACKED)
    unacked_drop(s, s->unacked_head);
}

void svc_unacked_ack(alloc_service *s, const char *framework_id, const char *task_id,
                     const ProtobufCBinaryData *uuid) {
  svc_unacked *u = svc_unacked_get(s, framework_id, task_id);
  if (u && uuid->len == 16 && memcmp(u->uuid, uuid->data, 16) == 0)
    unacked_drop(s, u);
}

svc_unacked *svc_unacked_get(alloc_service *s, const char *framework_id, const char *task_id) {
  _cleanup_free_ char *key = svc_key2(framework_id, task_id);
  return svc_table_get(&s->unacked, key);
}

void svc_unacked_forget(alloc_service *s, const char *key) {
  svc_unacked *u = svc_table_get(&s->unacked, key);
  if (u)
    unacked_drop(s, u);
}

void svc_unacked_forget_framework(alloc_service *s, const char *framework_id) {
  for (svc_unacked *u = s->unacked_head, *next; u; u = next) {
    next = u->next;
    if (strcmp(u->framework_id, framework_id) == 0)
      unacked_drop(s, u);
  }
}

void svc_unacked_free_all(alloc_service *s) {
  while (s->unacked_head)
    unacked_drop(s, s->unacked_head);
  svc_table_release(&s->unacked);
}
