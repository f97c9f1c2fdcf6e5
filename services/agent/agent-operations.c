/* Resource operations on the agent's own resources (APPLY_OPERATION, agent_link.proto):
 * RESERVE (with `source`: a reservation moved to another role), UNRESERVE, CREATE and
 * DESTROY of persistent volumes, applied to the checkpointed resources (the node's
 * dynamic reservations and volumes) and answered with OPERATION_STATUS_UPDATE, resent
 * until ACKNOWLEDGE_OPERATION_STATUS. GROW / SHRINK_VOLUME and CREATE / DESTROY_DISK are
 * answered OPERATION_FAILED (not supported by this agent yet).
 *
 * Order for a crash at any point: the volume's directory is made (CREATE) or removed
 * (DESTROY) first, then meta/resources.pb (resources, version, the operation's status) is
 * written atomically and fsync'ed, then the status is sent. A crash before the write
 * leaves the operation unknown: the same uuid arriving again applies it again (mkdir of an
 * existing directory and removal of a missing one are no-ops). After the write, a second
 * arrival only gets the recorded status again.
 *
 * resource_version: the agent keeps one (a fresh uuid at each change, reported in
 * REGISTER / REREGISTER); an operation naming another version is DROPPED. The allocator
 * sends none yet: such operations are applied. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/resources-ops.h"

#include "agent-internal.h"

#define OPS_CHECKPOINT_MAX (16 * 1024 * 1024)
#define OPS_ACKED_KEPT 256 /* acknowledged records kept to answer a repeated uuid */

static void random_uuid(uint8_t u[16]) {
  if (getrandom(u, 16, 0) != 16)
    for (size_t i = 0; i < 16; i++)
      u[i] = (uint8_t)rand();
  u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
  u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

static char *ops_path(const agent *a) {
  return ms_xasprintf("%s/meta/resources.pb", a->work_dir);
}

/* ---- checkpoint format ---- */

uint8_t *agent_ops_encode(const ms_resources *res, const uint8_t version[16], const agent_op *ops,
                          size_t *ret_len) {
  Meseta__V1__ResourceProviderState st = MESETA__V1__RESOURCE_PROVIDER_STATE__INIT;
  Meseta__V1__Resources *rp = ms_resources_to_proto(res);
  st.n_total_resources = rp->n_resources;
  st.total_resources = rp->resources;
  Meseta__V1__ResourceVersion v = MESETA__V1__RESOURCE_VERSION__INIT;
  v.uuid.data = (uint8_t *)version;
  v.uuid.len = 16;
  st.resource_version = &v;
  size_t n = 0;
  for (const agent_op *o = ops; o; o = o->next)
    n++;
  Meseta__V1__TrackedOperation **recs = ms_xcalloc(n + 1, sizeof(*recs));
  n = 0;
  for (const agent_op *o = ops; o; o = o->next) {
    /* `statuses` says whether an acknowledgement is awaited (set only while packing). */
    o->rec->n_statuses = o->acked ? 0 : 1;
    o->rec->statuses = o->acked ? NULL : &o->rec->latest_status;
    recs[n++] = o->rec;
  }
  st.n_operations = n;
  st.operations = recs;
  size_t len = protobuf_c_message_get_packed_size(&st.base);
  uint8_t *buf = ms_xmalloc(len ? len : 1);
  protobuf_c_message_pack(&st.base, buf);
  for (const agent_op *o = ops; o; o = o->next) {
    o->rec->n_statuses = 0;
    o->rec->statuses = NULL;
  }
  free(recs);
  ms_resources_proto_free(rp);
  *ret_len = len;
  return buf;
}

void agent_ops_list_free(agent_op *ops) {
  while (ops) {
    agent_op *next = ops->next;
    if (ops->rec)
      protobuf_c_message_free_unpacked(&ops->rec->base, NULL);
    free(ops);
    ops = next;
  }
}

int agent_ops_decode(const uint8_t *buf, size_t len, ms_resources **ret_res, uint8_t ret_version[16],
                     agent_op **ret_ops, ms_error **err) {
  Meseta__V1__ResourceProviderState *st = (Meseta__V1__ResourceProviderState *)protobuf_c_message_unpack(
      &meseta__v1__resource_provider_state__descriptor, NULL, len, buf);
  if (!st)
    return ms_error_set(err, MS_DATA_LOSS, "not a ResourceProviderState");
  int rc = MS_ERR;
  ms_resources *res = NULL;
  agent_op *head = NULL, **tail = &head;
  if (!st->resource_version || st->resource_version->uuid.len != 16) {
    ms_error_set(err, MS_DATA_LOSS, "`resource_version` is not a 16-byte uuid");
    goto out;
  }
  if (ms_resources_from_proto(st->total_resources, st->n_total_resources, &res, err) < 0) {
    ms_error_prefix(err, "`total_resources`");
    goto out;
  }
  for (size_t i = 0; i < st->n_operations; i++) {
    Meseta__V1__TrackedOperation *r = st->operations[i];
    if (r->uuid.len != 16 || !r->latest_status) {
      ms_error_set(err, MS_DATA_LOSS, "`operations[%zu]`: no uuid or no status", i);
      goto out;
    }
    agent_op *o = ms_xcalloc(1, sizeof(*o));
    memcpy(o->uuid, r->uuid.data, 16);
    o->acked = r->n_statuses == 0;
    o->rec = (Meseta__V1__TrackedOperation *)ms_pb_dup(&r->base);
    for (size_t k = 0; k < o->rec->n_statuses; k++)
      protobuf_c_message_free_unpacked(&o->rec->statuses[k]->base, NULL);
    free(o->rec->statuses);
    o->rec->statuses = NULL;
    o->rec->n_statuses = 0;
    *tail = o;
    tail = &o->next;
  }
  memcpy(ret_version, st->resource_version->uuid.data, 16);
  *ret_res = res;
  *ret_ops = head;
  res = NULL;
  head = NULL;
  rc = 0;
out:
  ms_resources_free(res);
  agent_ops_list_free(head);
  protobuf_c_message_free_unpacked(&st->base, NULL);
  return rc;
}

static int checkpoint(agent *a, ms_error **err) {
  size_t len = 0;
  _cleanup_free_ uint8_t *buf = agent_ops_encode(a->ckpt_res, a->res_version, a->ops, &len);
  _cleanup_free_ char *path = ops_path(a);
  return agent_write_bytes(path, buf, len, true, err);
}

/* ---- volume directories ---- */

char *agent_volume_path(const char *root, const char *role, const char *id, const char *field,
                        ms_error **err) {
  size_t n = id ? strlen(id) : 0;
  bool bad = n == 0 || n > 255 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0 || strchr(id, '/');
  for (size_t i = 0; i < n && !bad; i++)
    bad = (unsigned char)id[i] < 0x20 || id[i] == 0x7f;
  if (bad) {
    ms_error_set(err, MS_INVALID_ARGUMENT,
                 "`%s`: `%s` is not a usable persistence id (empty, `.`, `..`, a `/`, a control "
                 "character or longer than 255 bytes)",
                 field, id ? id : "");
    return NULL;
  }
  if (!role || !*role || strcmp(role, "*") == 0 || strstr(role, "..") || role[0] == '.') {
    ms_error_set(err, MS_INVALID_ARGUMENT, "`%s`: volume `%s` has no usable role `%s`", field, id,
                 role ? role : "");
    return NULL;
  }
  char *r = ms_xstrdup(role);
  for (char *p = r; *p; p++)
    if (*p == '/')
      *p = ' '; /* hierarchical roles, as Mesos: roles hold no spaces */
  char *path = ms_xasprintf("%s/%s/%s", root, r, id);
  free(r);
  return path;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *f) {
  (void)st;
  (void)f;
  if (type == FTW_DP)
    return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
  return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int remove_tree(const char *path, ms_error **err) {
  struct stat st;
  if (lstat(path, &st) < 0 && errno == ENOENT)
    return 0;
  if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0)
    return ms_error_set(err, MS_INTERNAL, "remove volume `%s`: %s", path, strerror(errno));
  return 0;
}

/* The directory of each persistent volume of `set` (NULL entries for other resources),
 * checked; `field` names the operation's list. */
static int volume_paths(agent *a, const ms_resources *set, const char *field, char ***ret, ms_error **err) {
  size_t n = ms_resources_size(set);
  char **v = ms_xcalloc(n + 1, sizeof(*v));
  for (size_t i = 0; i < n; i++) {
    const ms_resource *r = ms_resources_at(set, i);
    const ms_disk_info *d = ms_resource_disk(r);
    if (!d || !d->persistence_id)
      continue;
    _cleanup_free_ char *f = ms_xasprintf("%s[%zu].disk.persistence.id", field, i);
    if (!(v[i] = agent_volume_path(a->volume_dir, ms_resource_role(r), d->persistence_id, f, err))) {
      for (size_t k = 0; k < i; k++)
        free(v[k]);
      free(v);
      return MS_ERR;
    }
  }
  *ret = v;
  return 0;
}

static void paths_free(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    free(v[i]);
  free(v);
}

/* ---- applying ---- */

static bool kept(const ms_resource *r, void *ctx) {
  (void)ctx;
  return ms_resource_is_dynamically_reserved(r) || ms_resource_is_persistent_volume(r);
}

/* Everything the agent has: its configured total with the checkpointed resources in place
 * of what they were made from. */
static ms_resources *whole(agent *a) {
  ms_resources *w = ms_resources_clone(a->total);
  ms_error *err = NULL;
  if (ms_resources_put_checkpointed(w, a->ckpt_res, &err) < 0) {
    /* The total shrank under the checkpoint: keep both (the checkpoint is the truth). */
    ms_log_warn(NULL, "checkpointed resources do not fit in `%s`: %s", a->resources_text, err->msg);
    ms_error_free(err);
    ms_resources_add(w, a->ckpt_res, NULL);
  }
  return w;
}

/* Is a volume with this persistence id used by a task of this agent? Its task id. */
static const char *volume_user(agent *a, const char *id) {
  for (agent_task *t = a->tasks; t; t = t->next) {
    if (t->terminal || !t->info)
      continue;
    for (size_t i = 0; i < t->info->n_resources; i++) {
      const Meseta__V1__Resource *r = t->info->resources[i];
      if (r->disk && r->disk->persistence && r->disk->persistence->id &&
          strcmp(r->disk->persistence->id, id) == 0)
        return t->task_id;
    }
  }
  return NULL;
}

static const char *op_field(ms_operation_type t) {
  switch (t) {
  case MS_OP_RESERVE:
    return "operation.reserve.resources";
  case MS_OP_UNRESERVE:
    return "operation.unreserve.resources";
  case MS_OP_CREATE:
    return "operation.create.volumes";
  default:
    return "operation.destroy.volumes";
  }
}

/* Filesystem side of op (see the order at the top). */
static int apply_files(agent *a, const ms_operation *op, ms_error **err) {
  const char *field = op_field(op->type);
  size_t n = ms_resources_size(op->resources);
  char **paths = NULL;
  if (volume_paths(a, op->resources, field, &paths, err) < 0)
    return MS_ERR;
  int rc = 0;
  if (op->type == MS_OP_CREATE) {
    for (size_t i = 0; i < n && rc == 0; i++) {
      if (!paths[i])
        continue;
      rc = ms_mkdirs(paths[i], err);
      if (rc < 0)
        for (size_t k = 0; k < i; k++)
          if (paths[k])
            rmdir(paths[k]);
    }
  } else if (op->type == MS_OP_DESTROY) {
    for (size_t i = 0; i < n && rc == 0; i++) {
      const ms_disk_info *d = ms_resource_disk(ms_resources_at(op->resources, i));
      const char *user = d && d->persistence_id ? volume_user(a, d->persistence_id) : NULL;
      if (user)
        rc = ms_error_set(err, MS_FAILED_PRECONDITION, "`%s[%zu]`: volume `%s` is in use by task `%s`", field,
                          i, d->persistence_id, user);
    }
    for (size_t i = 0; i < n && rc == 0; i++)
      if (paths[i])
        rc = remove_tree(paths[i], err);
  } else if (op->type == MS_OP_RESERVE && op->source) {
    /* A volume moved to another role: its directory follows, data untouched. */
    char **from = NULL;
    size_t ns = ms_resources_size(op->source);
    if (volume_paths(a, op->source, "operation.reserve.source", &from, err) < 0) {
      paths_free(paths, n);
      return MS_ERR;
    }
    for (size_t i = 0; i < ns && rc == 0; i++) {
      if (!from[i])
        continue;
      const char *id = ms_resource_disk(ms_resources_at(op->source, i))->persistence_id;
      for (size_t k = 0; k < n && rc == 0; k++) {
        const ms_disk_info *d = ms_resource_disk(ms_resources_at(op->resources, k));
        if (!paths[k] || strcmp(d->persistence_id, id) != 0 || strcmp(paths[k], from[i]) == 0)
          continue;
        _cleanup_free_ char *parent = ms_xstrdup(paths[k]);
        *strrchr(parent, '/') = '\0';
        if (ms_mkdirs(parent, err) < 0)
          rc = MS_ERR;
        else if (rename(from[i], paths[k]) < 0 && errno != ENOENT)
          rc = ms_error_set(err, MS_INTERNAL, "move volume `%s` to `%s`: %s", from[i], paths[k],
                            strerror(errno));
      }
    }
    paths_free(from, ns);
  }
  paths_free(paths, n);
  return rc;
}

/* Applies ap to the checkpointed resources: 0, or a failure's state and message. */
static int apply(agent *a, const Meseta__V1__AllocatorMessage__ApplyOperation *ap,
                 Meseta__V1__OperationState *state, char **msg) {
  if (ap->resource_version && ap->resource_version->uuid.len &&
      (ap->resource_version->uuid.len != 16 ||
       memcmp(ap->resource_version->uuid.data, a->res_version, 16) != 0)) {
    *state = MESETA__V1__OPERATION_STATE__OPERATION_DROPPED;
    *msg =
        ms_xstrdup("`apply_operation.resource_version` differs from the agent's: the operation was computed "
                   "for resources this agent no longer has");
    return MS_ERR;
  }
  if (ap->resource_version && ap->resource_version->resource_provider_id) {
    *state = MESETA__V1__OPERATION_STATE__OPERATION_DROPPED;
    *msg = ms_xstrdup("`apply_operation.resource_version.resource_provider_id`: this agent has no resource "
                      "providers");
    return MS_ERR;
  }
  *state = MESETA__V1__OPERATION_STATE__OPERATION_FAILED;
  if (!ap->operation) {
    *msg = ms_xstrdup("`apply_operation.operation` is missing");
    return MS_ERR;
  }
  switch (ap->operation->type) {
  case MESETA__V1__OPERATION__TYPE__RESERVE:
  case MESETA__V1__OPERATION__TYPE__UNRESERVE:
  case MESETA__V1__OPERATION__TYPE__CREATE:
  case MESETA__V1__OPERATION__TYPE__DESTROY:
    break;
  default: {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&meseta__v1__operation__type__descriptor, ap->operation->type);
    *msg =
        ms_xasprintf("operation %s is not supported by this agent yet (volumes on disk without size limits "
                     "only: RESERVE, UNRESERVE, CREATE, DESTROY)",
                     v ? v->name : "TYPE_UNSPECIFIED");
    return MS_ERR;
  }
  }
  ms_operation op = {0};
  ms_error *err = NULL;
  ms_resources *w = NULL;
  int rc = MS_ERR;
  if (ms_operation_from_proto(ap->operation, &op, &err) < 0)
    goto out;
  /* Offered resources carry their allocation: the node's do not. */
  if ((op.resources && ms_resources_allocate(op.resources, NULL, &err) < 0) ||
      (op.source && ms_resources_allocate(op.source, NULL, &err) < 0))
    goto out;
  w = whole(a);
  if (ms_resources_apply(w, &op, &err) < 0 || apply_files(a, &op, &err) < 0)
    goto out;
  ms_resources *next = ms_resources_filter(w, kept, NULL);
  ms_resources_free(a->ckpt_res);
  a->ckpt_res = next;
  random_uuid(a->res_version);
  *state = MESETA__V1__OPERATION_STATE__OPERATION_FINISHED;
  rc = 0;
out:
  if (rc < 0)
    *msg = ms_xstrdup(err ? err->msg : "?");
  ms_error_free(err);
  ms_resources_free(w);
  ms_operation_release(&op);
  return rc;
}

/* ---- statuses ---- */

static agent_op *op_find(agent *a, const uint8_t *uuid, size_t len) {
  if (len != 16)
    return NULL;
  for (agent_op *o = a->ops; o; o = o->next)
    if (memcmp(o->uuid, uuid, 16) == 0)
      return o;
  return NULL;
}

static const char *op_name(const Meseta__V1__TrackedOperation *r) {
  return r->info && r->info->id && r->info->id->value ? r->info->id->value : "";
}

static void send_status(agent *a, const Meseta__V1__TrackedOperation *rec) {
  Meseta__V1__AgentMessage__OperationStatusUpdate u =
      MESETA__V1__AGENT_MESSAGE__OPERATION_STATUS_UPDATE__INIT;
  u.framework_id = rec->framework_id;
  u.status = rec->latest_status;
  u.latest_status = rec->latest_status;
  u.operation_uuid = rec->uuid;
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_OPERATION_STATUS_UPDATE;
  m.operation_status_update = &u;
  agent_send(a, &m);
}

static void resend_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  agent *a = arg;
  for (agent_op *o = a->ops; o; o = o->next)
    if (!o->acked) {
      ms_log_debug(NULL, "sending the status of operation `%s` (not acknowledged)", op_name(o->rec));
      send_status(a, o->rec);
    }
}

void agent_ops_resend_all(agent *a) {
  if (!a->ops_timer)
    a->ops_timer = ms_loop_add_timer(a->loop, a->cfg.status_retry_ms, a->cfg.status_retry_ms, resend_tick, a);
  resend_tick(a->loop, 0, a);
}

/* A record for an operation answered `state`. */
static Meseta__V1__TrackedOperation *record_new(agent *a,
                                                const Meseta__V1__AllocatorMessage__ApplyOperation *ap,
                                                Meseta__V1__OperationState state, char *msg) {
  Meseta__V1__TrackedOperation *r = ms_pb_new(&meseta__v1__tracked_operation__descriptor);
  if (ap->framework_id && ap->framework_id->value && *ap->framework_id->value) {
    r->framework_id = ms_pb_new(&meseta__v1__framework_id__descriptor);
    r->framework_id->value = ms_xstrdup(ap->framework_id->value);
  }
  r->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  r->agent_id->value = ms_xstrdup(a->id ? a->id : "");
  r->info = ms_pb_new(&meseta__v1__offer__operation__descriptor);
  Meseta__V1__OperationStatus *st = ms_pb_new(&meseta__v1__operation_status__descriptor);
  if (ap->operation_id && ap->operation_id->value && *ap->operation_id->value) {
    r->info->id = ms_pb_new(&meseta__v1__operation_id__descriptor);
    r->info->id->value = ms_xstrdup(ap->operation_id->value);
    st->operation_id = ms_pb_new(&meseta__v1__operation_id__descriptor);
    st->operation_id->value = ms_xstrdup(ap->operation_id->value);
  }
  st->state = state;
  st->message = msg;
  st->uuid.data = ms_xmalloc(16);
  st->uuid.len = 16;
  random_uuid(st->uuid.data);
  st->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  st->agent_id->value = ms_xstrdup(a->id ? a->id : "");
  r->latest_status = st;
  r->uuid.data = ms_xmalloc(16);
  r->uuid.len = 16;
  memcpy(r->uuid.data, ap->operation_uuid.data, 16);
  return r;
}

/* Drops the oldest acknowledged records past OPS_ACKED_KEPT. */
static void trim(agent *a) {
  size_t acked = 0;
  for (agent_op **p = &a->ops; *p;) {
    if ((*p)->acked && ++acked > OPS_ACKED_KEPT) {
      agent_op *o = *p;
      *p = o->next;
      o->next = NULL;
      agent_ops_list_free(o);
    } else {
      p = &(*p)->next;
    }
  }
}

void agent_ops_apply(agent *a, const Meseta__V1__AllocatorMessage__ApplyOperation *ap) {
  if (ap->operation_uuid.len != 16) {
    ms_log_warn(NULL,
                "APPLY_OPERATION without a 16-byte `operation_uuid` (%zu bytes) cannot be answered: ignored",
                ap->operation_uuid.len);
    return;
  }
  agent_op *o = op_find(a, ap->operation_uuid.data, ap->operation_uuid.len);
  if (o) { /* a repeat (reconnect, failover): the recorded answer, again until acknowledged */
    ms_log_info(NULL, "operation `%s` arrived again: its recorded status is sent again", op_name(o->rec));
    o->acked = false;
    send_status(a, o->rec);
    return;
  }
  ms_resources *before = ms_resources_clone(a->ckpt_res);
  uint8_t version[16];
  memcpy(version, a->res_version, 16);
  Meseta__V1__OperationState state = MESETA__V1__OPERATION_STATE__OPERATION_FINISHED;
  char *msg = NULL;
  if (apply(a, ap, &state, &msg) == 0)
    msg = ms_xstrdup("");
  o = ms_xcalloc(1, sizeof(*o));
  memcpy(o->uuid, ap->operation_uuid.data, 16);
  o->rec = record_new(a, ap, state, msg);
  o->next = a->ops;
  a->ops = o;
  trim(a);
  ms_error *err = NULL;
  if (checkpoint(a, &err) < 0) {
    /* Not durable: undo in memory and say so (a CREATE's directory stays, empty). */
    ms_resources_free(a->ckpt_res);
    a->ckpt_res = before;
    before = NULL;
    memcpy(a->res_version, version, 16);
    o->rec->latest_status->state = MESETA__V1__OPERATION_STATE__OPERATION_FAILED;
    free(o->rec->latest_status->message);
    o->rec->latest_status->message = ms_xasprintf("checkpoint not written: %s", err->msg);
    ms_error_free(err);
  }
  ms_resources_free(before);
  const Meseta__V1__OperationStatus *st = o->rec->latest_status;
  const ProtobufCEnumValue *type =
      ap->operation ? protobuf_c_enum_descriptor_get_value(&meseta__v1__operation__type__descriptor,
                                                           ap->operation->type)
                    : NULL;
  ms_log_info(NULL, "operation `%s` %s: %s%s%s", st->operation_id ? st->operation_id->value : "",
              type ? type->name : "?",
              protobuf_c_enum_descriptor_get_value(&meseta__v1__operation_state__descriptor, st->state)->name,
              *st->message ? ": " : "", st->message);
  send_status(a, o->rec);
  if (!a->ops_timer && a->gen)
    agent_ops_resend_all(a);
}

void agent_ops_ack(agent *a, const Meseta__V1__AllocatorMessage__AcknowledgeOperationStatus *k) {
  agent_op *o = op_find(a, k->operation_uuid.data, k->operation_uuid.len);
  if (!o || o->acked)
    return;
  const ProtobufCBinaryData *u = &o->rec->latest_status->uuid;
  if (k->status_uuid.len &&
      (k->status_uuid.len != u->len || memcmp(k->status_uuid.data, u->data, u->len) != 0))
    return; /* an older status's acknowledgement */
  o->acked = true;
  trim(a);
  ms_error *err = NULL;
  if (checkpoint(a, &err) < 0) { /* a restart resends it: a duplicate, which receivers drop */
    ms_log_warn(NULL, "operation acknowledgement not checkpointed: %s", err->msg);
    ms_error_free(err);
  }
}

void agent_ops_reconcile(agent *a, const Meseta__V1__AllocatorMessage__ReconcileOperations *r) {
  if (!r->n_operations) {
    for (agent_op *o = a->ops; o; o = o->next)
      send_status(a, o->rec);
    return;
  }
  for (size_t i = 0; i < r->n_operations; i++) {
    const ProtobufCBinaryData *u = &r->operations[i]->operation_uuid;
    agent_op *o = op_find(a, u->data, u->len);
    if (o) {
      send_status(a, o->rec);
      continue;
    }
    if (u->len != 16)
      continue;
    Meseta__V1__AllocatorMessage__ApplyOperation ap = MESETA__V1__ALLOCATOR_MESSAGE__APPLY_OPERATION__INIT;
    ap.operation_uuid = *u;
    Meseta__V1__TrackedOperation *rec = record_new(a, &ap, MESETA__V1__OPERATION_STATE__OPERATION_DROPPED,
                                                   ms_xstrdup("operation not known to this agent"));
    send_status(a, rec);
    protobuf_c_message_free_unpacked(&rec->base, NULL);
  }
}

/* ---- registration and lifecycle ---- */

Meseta__V1__Resources *agent_ops_checkpointed(const agent *a) {
  return ms_resources_to_proto(a->ckpt_res);
}

Meseta__V1__TrackedOperation **agent_ops_unacked(const agent *a, size_t *ret_n) {
  size_t n = 0;
  for (const agent_op *o = a->ops; o; o = o->next)
    n += !o->acked;
  Meseta__V1__TrackedOperation **v = ms_xcalloc(n + 1, sizeof(*v));
  n = 0;
  for (const agent_op *o = a->ops; o; o = o->next)
    if (!o->acked)
      v[n++] = o->rec;
  *ret_n = n;
  return v;
}

int agent_ops_recover(agent *a, ms_error **err) {
  a->volume_dir = a->cfg.volume_dir && *a->cfg.volume_dir ? ms_xstrdup(a->cfg.volume_dir)
                                                          : ms_xasprintf("%s/volumes", a->work_dir);
  if (ms_mkdirs(a->volume_dir, err) < 0)
    return ms_error_prefix(err, "flag `--volume-dir`");
  _cleanup_free_ char *path = ops_path(a);
  ms_error *e = NULL;
  struct stat st;
  if (stat(path, &st) < 0 && errno == ENOENT) {
    a->ckpt_res = ms_resources_new();
    random_uuid(a->res_version);
    return 0;
  }
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len = 0;
  FILE *f = fopen(path, "rbe");
  if (f) {
    buf = ms_xmalloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    len = st.st_size > 0 && st.st_size <= OPS_CHECKPOINT_MAX ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
  }
  if (!f || (st.st_size > 0 && len != (size_t)st.st_size))
    return ms_error_set(err, MS_DATA_LOSS, "checkpoint `%s`: unreadable or larger than %d bytes", path,
                        OPS_CHECKPOINT_MAX);
  if (agent_ops_decode(buf, len, &a->ckpt_res, a->res_version, &a->ops, &e) < 0) {
    ms_error_set(err, e->code,
                 "checkpoint `%s`: %s (move it away to start without the node's reservations "
                 "and volumes)",
                 path, e->msg);
    ms_error_free(e);
    return MS_ERR;
  }
  size_t unacked = 0;
  for (agent_op *o = a->ops; o; o = o->next)
    unacked += !o->acked;
  _cleanup_free_ char *d = ms_resources_describe(a->ckpt_res);
  ms_log_info(NULL, "checkpointed resources: %s; %zu operation statuses to resend", *d ? d : "none", unacked);
  return 0;
}

void agent_ops_free(agent *a) {
  if (a->ops_timer)
    ms_loop_cancel_timer(a->loop, a->ops_timer);
  a->ops_timer = 0;
  agent_ops_list_free(a->ops);
  a->ops = NULL;
  ms_resources_free(a->ckpt_res);
  a->ckpt_res = NULL;
  free(a->volume_dir);
  a->volume_dir = NULL;
}
