/* Completed frameworks: those torn down or not back within their failover timeout, kept
 * as a view shows them (active false, unregistered_time set) so GetFrameworks with
 * include_completed and GetState list them, and a subscription with such an id is
 * refused. A new leader loads them from the registry's completed records, so they
 * survive failover. Bounded by cfg.max_completed_frameworks (Mesos'
 * max_completed_frameworks): the one that ended first goes first, with a
 * framework_removed change.
 *
 * Owner thread only. Entries live in s->ended_fws (the table) and, oldest first, in the
 * s->ended_head list. */
#include "alloc-svc-ended-fws.h"

#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"

#include "alloc-svc-core.h"
#include "alloc-svc-state.h"

static void ended_free(svc_ended_fw *f) {
  free(f->e.key);
  if (f->msg)
    protobuf_c_message_free_unpacked(&f->msg->base, NULL);
  free(f);
}

static void unlink_ended(alloc_service *s, svc_ended_fw *f) {
  *(f->prev ? &f->prev->next : &s->ended_head) = f->next;
  *(f->next ? &f->next->prev : &s->ended_tail) = f->prev;
  svc_table_del(&s->ended_fws, &f->e);
}

/* In order of ended_ms, from the newest: the registry lists records by id, not by end. */
static void link_ended(alloc_service *s, svc_ended_fw *f) {
  svc_ended_fw *after = s->ended_tail;
  while (after && after->ended_ms > f->ended_ms)
    after = after->prev;
  f->prev = after;
  f->next = after ? after->next : s->ended_head;
  *(f->next ? &f->next->prev : &s->ended_tail) = f;
  *(after ? &after->next : &s->ended_head) = f;
  svc_table_put(&s->ended_fws, &f->e);
}

void svc_ended_fw_add(alloc_service *s, const Meseta__V1__FrameworkInfo *info, int64_t ended_ms) {
  const char *id = info && info->id && info->id->value ? info->id->value : "";
  if (!*id || svc_table_get(&s->ended_fws, id))
    return;
  svc_ended_fw *f = ms_xcalloc(1, sizeof(*f));
  f->e.key = ms_xstrdup(id);
  f->ended_ms = ended_ms;
  f->msg = (Meseta__V1__Framework *)ms_pb_new(&meseta__v1__framework__descriptor);
  f->msg->framework_info = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
  f->msg->unregistered_time =
      (Google__Protobuf__Timestamp *)ms_pb_new(&google__protobuf__timestamp__descriptor);
  f->msg->unregistered_time->seconds = ended_ms / 1000;
  f->msg->unregistered_time->nanos = (int32_t)(ended_ms % 1000) * 1000000;
  link_ended(s, f);
  svc_state_emit_framework_ended(s, f->msg);
  while (s->ended_fws.n > (uint32_t)s->cfg.max_completed_frameworks && s->ended_head) {
    svc_ended_fw *old = s->ended_head;
    unlink_ended(s, old);
    ms_log_debug(old->e.key, "completed framework forgotten (--max-completed-frameworks)");
    svc_state_emit_framework(s, old->e.key, SVC_REMOVED);
    ended_free(old);
  }
}

bool svc_ended_fw_has(alloc_service *s, const char *id) {
  return svc_table_get(&s->ended_fws, id) != NULL;
}

void svc_ended_fw_free_all(alloc_service *s) {
  while (s->ended_head) {
    svc_ended_fw *f = s->ended_head;
    unlink_ended(s, f);
    ended_free(f);
  }
  svc_table_release(&s->ended_fws);
}
