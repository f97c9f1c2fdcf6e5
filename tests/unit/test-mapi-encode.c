/* master-api's pre-encoded reads: the State and pages assembled from the view's item
 * bytes are byte for byte what packing the view's messages gives. */
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/v1/operator.pb-c.h"

#include "mapi-encode.h"
#include "mapi-view.h"
#include "testlib.h"

/* ---- building events (heap copies: the view takes them) ---- */

static Meseta__V1__StateEvent *dup_event(Meseta__V1__StateEvent *ev) {
  return (Meseta__V1__StateEvent *)ms_pb_dup(&ev->base);
}

static Meseta__V1__Task *task_new(const char *fw, const char *id, const char *agent, size_t name_len) {
  Meseta__V1__Task *t = ms_pb_new(&meseta__v1__task__descriptor);
  t->task_id = ms_pb_new(&meseta__v1__task_id__descriptor);
  t->task_id->value = ms_xstrdup(id);
  t->framework_id = ms_pb_new(&meseta__v1__framework_id__descriptor);
  t->framework_id->value = ms_xstrdup(fw);
  t->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  t->agent_id->value = ms_xstrdup(agent);
  t->state = MESETA__V1__TASK_STATE__TASK_RUNNING;
  /* Long names push an item's length past one varint byte. */
  t->name = ms_xmalloc(name_len + 1);
  memset(t->name, 'n', name_len);
  t->name[name_len] = 0;
  return t;
}

static Meseta__V1__Agent *agent_new(const char *id, const char *host) {
  Meseta__V1__Agent *a = ms_pb_new(&meseta__v1__agent__descriptor);
  a->agent_info = ms_pb_new(&meseta__v1__agent_info__descriptor);
  a->agent_info->id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  a->agent_info->id->value = ms_xstrdup(id);
  a->agent_info->hostname = ms_xstrdup(host);
  a->state = MESETA__V1__AGENT__STATE__ACTIVE;
  return a;
}

static Meseta__V1__Framework *framework_new(const char *id) {
  Meseta__V1__Framework *f = ms_pb_new(&meseta__v1__framework__descriptor);
  f->framework_info = ms_pb_new(&meseta__v1__framework_info__descriptor);
  f->framework_info->id = ms_pb_new(&meseta__v1__framework_id__descriptor);
  f->framework_info->id->value = ms_xstrdup(id);
  f->framework_info->name = ms_xstrdup("bench");
  f->active = true;
  return f;
}

static Meseta__V1__Role *role_new(const char *name) {
  Meseta__V1__Role *r = ms_pb_new(&meseta__v1__role__descriptor);
  r->name = ms_xstrdup(name);
  r->weight = 1.5;
  return r;
}

#define APPEND(arr, n, x)                                                                                    \
  do {                                                                                                       \
    (arr) = ms_xrealloc((arr), ((n) + 1) * sizeof(*(arr)));                                                  \
    (arr)[(n)++] = (x);                                                                                      \
  } while (0)

/* A snapshot of agents, frameworks, tasks (some long), an executor, an operation and
 * roles, applied to v at revision 10. */
static void apply_snapshot(mapi_view *v) {
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  Meseta__V1__SnapshotBegin begin = MESETA__V1__SNAPSHOT_BEGIN__INIT;
  begin.leader_id = "leader";
  ev.revision = 10;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN;
  ev.snapshot_begin = &begin;
  mapi_view_apply(v, dup_event(&ev));

  Meseta__V1__State *s = ms_pb_new(&meseta__v1__state__descriptor);
  char id[64], fw[64];
  for (int i = 0; i < 30; i++) {
    snprintf(id, sizeof(id), "agent-%02d", (i * 7) % 30); /* out of order: the view sorts */
    APPEND(s->agents, s->n_agents, agent_new(id, "host"));
  }
  for (int i = 0; i < 3; i++) {
    snprintf(fw, sizeof(fw), "fw-%d", 2 - i);
    APPEND(s->frameworks, s->n_frameworks, framework_new(fw));
  }
  for (int i = 0; i < 200; i++) {
    snprintf(fw, sizeof(fw), "fw-%d", i % 3);
    snprintf(id, sizeof(id), "task-%03d", 199 - i);
    APPEND(s->tasks, s->n_tasks, task_new(fw, id, "agent-01", i % 5 == 0 ? 300 + (size_t)i * 90 : 5));
  }
  Meseta__V1__ExecutorState *e = ms_pb_new(&meseta__v1__executor_state__descriptor);
  e->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  e->agent_id->value = ms_xstrdup("agent-01");
  APPEND(s->executors, s->n_executors, e);
  Meseta__V1__TrackedOperation *o = ms_pb_new(&meseta__v1__tracked_operation__descriptor);
  o->uuid.data = ms_xmalloc(16);
  memset(o->uuid.data, 0xab, 16);
  o->uuid.len = 16;
  APPEND(s->operations, s->n_operations, o);
  APPEND(s->roles, s->n_roles, role_new("eng"));
  APPEND(s->roles, s->n_roles, role_new("eng/web"));

  Meseta__V1__StateChunk *chunk = ms_pb_new(&meseta__v1__state_chunk__descriptor);
  chunk->state = s;
  Meseta__V1__StateEvent *cev = ms_pb_new(&meseta__v1__state_event__descriptor);
  cev->revision = 10;
  cev->event_case = MESETA__V1__STATE_EVENT__EVENT_CHUNK;
  cev->chunk = chunk;
  mapi_view_apply(v, cev);

  Meseta__V1__SnapshotEnd end = MESETA__V1__SNAPSHOT_END__INIT;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
  ev.snapshot_end = &end;
  CU_ASSERT_TRUE(mapi_view_apply(v, dup_event(&ev)));
}

/* ---- the checks ---- */

/* GetStateResponse packed from st's messages (as GetState did) and assembled from
 * the view's shared bytes (as it does now) are the same bytes. */
static void expect_state_same(mapi_view *v) {
  const mapi_state *st = mapi_view_rdlock(v);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  Meseta__V1__State state = MESETA__V1__STATE__INIT;
  state.agents = (Meseta__V1__Agent **)st->agents.items;
  state.n_agents = st->agents.n;
  state.frameworks = (Meseta__V1__Framework **)st->frameworks.items;
  state.n_frameworks = st->frameworks.n;
  state.tasks = (Meseta__V1__Task **)st->tasks.items;
  state.n_tasks = st->tasks.n;
  state.executors = (Meseta__V1__ExecutorState **)st->executors.items;
  state.n_executors = st->executors.n;
  state.operations = (Meseta__V1__TrackedOperation **)st->operations.items;
  state.n_operations = st->operations.n;
  state.roles = (Meseta__V1__Role **)st->roles.items;
  state.n_roles = st->roles.n;
  Meseta__V1__GetStateResponse old = MESETA__V1__GET_STATE_RESPONSE__INIT;
  old.revision = st->revision;
  old.state = &state;
  size_t old_len;
  _cleanup_free_ uint8_t *old_bytes = ms_pb_pack(&old.base, &old_len);

  mapi_bytes *b = mapi_view_state_bytes(v, st);
  mapi_bytes *again = mapi_view_state_bytes(v, st);
  CU_ASSERT_PTR_EQUAL(b, again); /* built once per revision, shared */
  mapi_bytes_unref(again);
  Meseta__V1__GetStateResponse now = MESETA__V1__GET_STATE_RESPONSE__INIT;
  now.revision = st->revision;
  mapi_view_unlock(v);
  ProtobufCMessageUnknownField uf = {
      .tag = 2, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, .len = b->len, .data = b->data};
  now.base.n_unknown_fields = 1;
  now.base.unknown_fields = &uf;
  size_t now_len;
  _cleanup_free_ uint8_t *now_bytes = ms_pb_pack(&now.base, &now_len);
  mapi_bytes_unref(b);
  CU_ASSERT_EQUAL_FATAL(now_len, old_len);
  CU_ASSERT_EQUAL(memcmp(now_bytes, old_bytes, old_len), 0);
}

/* A GetTasks page with a next_page_token, items as unknown fields from the item
 * bytes, against the same page packed from the messages. */
static void expect_page_same(mapi_view *v, size_t from, size_t n) {
  const mapi_state *st = mapi_view_rdlock(v);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_FATAL(from + n <= st->tasks.n);
  Meseta__V1__GetTasksResponse old = MESETA__V1__GET_TASKS_RESPONSE__INIT;
  old.revision = st->revision;
  old.next_page_token = "r10.t1.f2.abcd";
  old.tasks = (Meseta__V1__Task **)st->tasks.items + from;
  old.n_tasks = n;
  size_t old_len;
  _cleanup_free_ uint8_t *old_bytes = ms_pb_pack(&old.base, &old_len);
  Meseta__V1__GetTasksResponse now = MESETA__V1__GET_TASKS_RESPONSE__INIT;
  now.revision = st->revision;
  now.next_page_token = old.next_page_token;
  _cleanup_free_ ProtobufCMessageUnknownField *uf = ms_xcalloc(n + 1, sizeof(*uf));
  for (size_t i = 0; i < n; i++)
    uf[i] = (ProtobufCMessageUnknownField){.tag = 3,
                                           .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                                           .len = st->tasks.enc[from + i].len,
                                           .data = st->tasks.enc[from + i].data};
  now.base.n_unknown_fields = n;
  now.base.unknown_fields = uf;
  size_t now_len;
  _cleanup_free_ uint8_t *now_bytes = ms_pb_pack(&now.base, &now_len);
  mapi_view_unlock(v);
  CU_ASSERT_EQUAL_FATAL(now_len, old_len);
  CU_ASSERT_EQUAL(memcmp(now_bytes, old_bytes, old_len), 0);
}

static void apply_changes(mapi_view *v, int64_t rev, Meseta__V1__StateChange **cs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    Meseta__V1__StateEvent *ev = ms_pb_new(&meseta__v1__state_event__descriptor);
    ev->revision = rev;
    ev->event_case = MESETA__V1__STATE_EVENT__EVENT_CHANGE;
    ev->change = cs[i];
    ev->last_of_revision = i + 1 == n;
    CU_ASSERT_EQUAL(mapi_view_apply(v, ev), i + 1 == n);
  }
}

static void test_state_bytes(void) {
  mapi_view *v = mapi_view_new();
  apply_snapshot(v);
  expect_state_same(v);
  expect_page_same(v, 0, 50);
  expect_page_same(v, 37, 100);

  /* One revision: a task added, one replaced by a longer one, one removed, an
   * agent updated, a role removed. */
  Meseta__V1__StateChange *cs[5];
  for (size_t i = 0; i < 5; i++)
    cs[i] = ms_pb_new(&meseta__v1__state_change__descriptor);
  cs[0]->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_ADDED;
  cs[0]->task_added = task_new("fw-1", "task-new", "agent-02", 3000);
  cs[1]->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_UPDATED;
  cs[1]->task_updated = task_new("fw-1", "task-003", "agent-02", 20000);
  cs[2]->change_case = MESETA__V1__STATE_CHANGE__CHANGE_TASK_REMOVED;
  cs[2]->task_removed = ms_pb_new(&meseta__v1__state_change__task_removed__descriptor);
  cs[2]->task_removed->framework_id = ms_pb_new(&meseta__v1__framework_id__descriptor);
  cs[2]->task_removed->framework_id->value = ms_xstrdup("fw-2");
  cs[2]->task_removed->task_id = ms_pb_new(&meseta__v1__task_id__descriptor);
  cs[2]->task_removed->task_id->value = ms_xstrdup("task-002");
  cs[3]->change_case = MESETA__V1__STATE_CHANGE__CHANGE_AGENT_UPDATED;
  cs[3]->agent_updated = agent_new("agent-05", "another-host");
  cs[4]->change_case = MESETA__V1__STATE_CHANGE__CHANGE_ROLE_REMOVED;
  cs[4]->role_removed = ms_pb_new(&meseta__v1__state_change__role_removed__descriptor);
  cs[4]->role_removed->name = ms_xstrdup("eng/web");

  const mapi_state *st = mapi_view_rdlock(v);
  mapi_bytes *before = mapi_view_state_bytes(v, st);
  size_t tasks_before = st->tasks.n;
  mapi_view_unlock(v);
  apply_changes(v, 11, cs, 5);
  st = mapi_view_rdlock(v);
  CU_ASSERT_EQUAL(st->tasks.n, tasks_before); /* one added, one removed */
  CU_ASSERT_EQUAL(st->roles.n, 1);
  mapi_bytes *after = mapi_view_state_bytes(v, st);
  mapi_view_unlock(v);
  CU_ASSERT_TRUE(after->len != before->len); /* rebuilt at the new revision */
  mapi_bytes_unref(before);
  mapi_bytes_unref(after);
  expect_state_same(v);
  expect_page_same(v, 0, 200);
  mapi_view_free(v);
}

/* An empty view still answers an (empty) State, as packing did. */
static void test_empty_state(void) {
  mapi_view *v = mapi_view_new();
  Meseta__V1__StateEvent ev = MESETA__V1__STATE_EVENT__INIT;
  Meseta__V1__SnapshotBegin begin = MESETA__V1__SNAPSHOT_BEGIN__INIT;
  ev.revision = 3;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_BEGIN;
  ev.snapshot_begin = &begin;
  mapi_view_apply(v, dup_event(&ev));
  Meseta__V1__SnapshotEnd end = MESETA__V1__SNAPSHOT_END__INIT;
  ev.event_case = MESETA__V1__STATE_EVENT__EVENT_SNAPSHOT_END;
  ev.snapshot_end = &end;
  mapi_view_apply(v, dup_event(&ev));
  expect_state_same(v);
  mapi_view_free(v);
}

static void test_varint(void) {
  const uint64_t vs[] = {0, 1, 127, 128, 300, 16383, 16384, (1u << 21) + 5, UINT32_MAX, UINT64_MAX};
  for (size_t i = 0; i < MS_ARRAY_SIZE(vs); i++) {
    uint8_t buf[10];
    size_t k = mapi_varint_put(buf, vs[i]);
    CU_ASSERT_EQUAL(k, mapi_varint_size(vs[i]));
    uint64_t back = 0;
    for (size_t j = 0; j < k; j++)
      back |= (uint64_t)(buf[j] & 0x7f) << (7 * j);
    CU_ASSERT_EQUAL(back, vs[i]);
    CU_ASSERT_EQUAL(buf[k - 1] & 0x80, 0);
  }
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"state_bytes", test_state_bytes},
      {"empty_state", test_empty_state},
      {"varint", test_varint},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "mapi-encode", cases);
}
