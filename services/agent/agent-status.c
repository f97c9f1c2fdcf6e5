/* Task status updates: one queue per task, the oldest sent and resent (with backoff) until
 * ACKNOWLEDGE_STATUS names its uuid, then the next. The queue is checkpointed with its task
 * before anything is sent, so a restarted agent resends what was not acknowledged (with the
 * same uuids: receivers drop duplicates). */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/task-state.h"
#include "meseta/time.h"

#include "agent-internal.h"

static void send_head(agent *a, agent_task *t);

static void retry_tick(ms_loop *loop, uint64_t id, void *arg) {
  agent_task *t = arg;
  t->retry_timer = 0;
  if (!t->head)
    return;
  ms_log_debug(t->log_id, "resending %s (not acknowledged)", ms_task_state_name(t->head->msg->status->state));
  int64_t next = t->retry_ms * 2;
  t->retry_ms = next > t->owner->cfg.status_retry_max_ms ? t->owner->cfg.status_retry_max_ms : next;
  send_head(t->owner, t);
}

static void send_head(agent *a, agent_task *t) {
  if (t->retry_timer)
    ms_loop_cancel_timer(a->loop, t->retry_timer);
  t->retry_timer = 0;
  if (!t->head)
    return;
  t->head->msg->latest_state = t->state;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_STATUS_UPDATE;
  m.status_update = t->head->msg;
  agent_send(a, &m);
  t->retry_timer = ms_loop_add_timer(a->loop, t->retry_ms, 0, retry_tick, t);
}

void agent_status_push(agent *a, agent_task *t, Meseta__V1__TaskStatus *st) {
  uint8_t uuid[16];
  if (getrandom(uuid, sizeof(uuid), 0) != (ssize_t)sizeof(uuid))
    for (size_t i = 0; i < sizeof(uuid); i++)
      uuid[i] = (uint8_t)rand();
  uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* RFC 4122 version 4 */
  uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
  int64_t now = ms_time_real_ns();
  Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  ts.seconds = now / MS_NSEC_PER_SEC;
  ts.nanos = (int32_t)(now % MS_NSEC_PER_SEC);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = a->id ? a->id : "";
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  tid.value = t->task_id;
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = t->framework_id;
  st->task_id = &tid;
  st->uuid.data = uuid;
  st->uuid.len = sizeof(uuid);
  st->timestamp = &ts;
  st->agent_id = a->id ? &aid : NULL;
  if (!st->source)
    st->source = MESETA__V1__TASK_STATUS__SOURCE__SOURCE_EXECUTOR;
  Meseta__V1__AgentMessage__StatusUpdate su = MESETA__V1__AGENT_MESSAGE__STATUS_UPDATE__INIT;
  su.framework_id = &fid;
  su.status = st;
  su.latest_state = st->state;

  agent_update *u = ms_xcalloc(1, sizeof(*u));
  u->msg = (Meseta__V1__AgentMessage__StatusUpdate *)ms_pb_dup(&su.base);
  t->state = st->state;
  ms_log_info(t->log_id, "%s%s%s", ms_task_state_name(st->state), st->message && *st->message ? ": " : "",
              st->message ? st->message : "");
  bool first = !t->head;
  if (t->tail)
    t->tail->next = u;
  else
    t->head = u;
  t->tail = u;
  agent_checkpoint_task(a, t);
  if (first) {
    t->retry_ms = a->cfg.status_retry_ms;
    send_head(a, t);
  }
}

void agent_status_ack(agent *a, const char *framework_id, const char *task_id, const uint8_t *uuid,
                      size_t len) {
  agent_task *t = agent_task_find(a, framework_id, task_id);
  if (!t || !t->head || len != t->head->msg->status->uuid.len ||
      memcmp(uuid, t->head->msg->status->uuid.data, len) != 0) {
    ms_log_debug(NULL, "task=%s/%s: acknowledgement of an unknown update ignored", framework_id, task_id);
    return;
  }
  agent_update *u = t->head;
  t->head = u->next;
  if (!t->head)
    t->tail = NULL;
  protobuf_c_message_free_unpacked(&u->msg->base, NULL);
  free(u);
  if (t->retry_timer)
    ms_loop_cancel_timer(a->loop, t->retry_timer);
  t->retry_timer = 0;
  if (t->terminal && !t->pid && !t->head) {
    ms_log_debug(t->log_id, "terminal update acknowledged: forgotten");
    agent_checkpoint_remove(a, t);
    agent_task_forget(a, t);
    return;
  }
  agent_checkpoint_task(a, t);
  if (t->head) {
    t->retry_ms = a->cfg.status_retry_ms;
    send_head(a, t);
  }
}

void agent_status_resend_all(agent *a) {
  for (agent_task *t = a->tasks; t; t = t->next) {
    if (!t->head)
      continue;
    for (agent_update *u = t->head; u && a->id; u = u->next) /* queued before REGISTERED */
      if (!u->msg->status->agent_id) {
        u->msg->status->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
        u->msg->status->agent_id->value = ms_xstrdup(a->id);
      }
    t->retry_ms = a->cfg.status_retry_ms;
    send_head(a, t);
  }
}
