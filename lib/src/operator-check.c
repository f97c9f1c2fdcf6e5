/* Stateless checks of Operator mutations: one row per request type. */
#include "meseta/operator-check.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/roles.h"
#include "meseta/v1/allocator.pb-c.h"

typedef int (*check_fn)(const ProtobufCMessage *req, const char *m, ms_error **err);

static const char *str0(const char *x) {
  return x ? x : "";
}

static int need_id(const char *m, const char *field, const void *idmsg, ms_error **err) {
  const Meseta__V1__AgentID *id = idmsg; /* every id message is { string value = 1; } */
  if (!id || !*str0(id->value))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s` is missing", m, field);
  return 0;
}

static int check_weights(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__UpdateWeightsRequest *r = (const void *)req;
  if (!r->n_weight_infos)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.weight_infos`: at least one is required", m);
  for (size_t i = 0; i < r->n_weight_infos; i++) {
    const Meseta__V1__WeightInfo *w = r->weight_infos[i];
    if (ms_role_validate(w->role, err) < 0)
      return ms_error_prefix(err, "`%s.weight_infos[%zu].role`", m, i);
    if (!isfinite(w->weight) || w->weight <= 0 || w->weight > MS_MAX_WEIGHT)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.weight_infos[%zu].weight`: %g is not in (0, %g]", m,
                          i, w->weight, MS_MAX_WEIGHT);
    for (size_t k = 0; k < i; k++)
      if (strcmp(r->weight_infos[k]->role, w->role) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.weight_infos[%zu].role`: `%s` is listed twice", m,
                            i, w->role);
  }
  return 0;
}

static int check_quota(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__UpdateQuotaRequest *r = (const void *)req;
  if (!r->n_configs)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.configs`: at least one is required", m);
  for (size_t i = 0; i < r->n_configs; i++) {
    const char *role = r->configs[i]->role;
    if (ms_role_validate(role, err) < 0)
      return ms_error_prefix(err, "`%s.configs[%zu].role`", m, i);
    if (strcmp(role, "*") == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.configs[%zu].role`: role `*` cannot have quota", m,
                          i);
    for (size_t k = 0; k < i; k++)
      if (strcmp(r->configs[k]->role, role) == 0)
        return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.configs[%zu].role`: `%s` is listed twice", m, i,
                            role);
  }
  return 0;
}

static bool machine_eq(const Meseta__V1__MachineID *a, const Meseta__V1__MachineID *b) {
  return strcmp(str0(a->hostname), str0(b->hostname)) == 0 && strcmp(str0(a->ip), str0(b->ip)) == 0;
}

static int check_schedule(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__MaintenanceSchedule *sc =
      ((const Meseta__V1__UpdateMaintenanceScheduleRequest *)req)->schedule;
  for (size_t i = 0; sc && i < sc->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = sc->windows[i];
    if (!w->unavailability || !w->unavailability->start)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "`%s.schedule.windows[%zu].unavailability.start` is missing", m, i);
    for (size_t k = 0; k < w->n_machine_ids; k++) {
      const Meseta__V1__MachineID *id = w->machine_ids[k];
      if (!*str0(id->hostname) && !*str0(id->ip))
        return ms_error_set(err, MS_INVALID_ARGUMENT,
                            "`%s.schedule.windows[%zu].machine_ids[%zu]` has neither hostname nor ip", m, i,
                            k);
      for (size_t j = 0; j <= i; j++)
        for (size_t h = 0; h < (j == i ? k : sc->windows[j]->n_machine_ids); h++)
          if (machine_eq(sc->windows[j]->machine_ids[h], id))
            return ms_error_set(
                err, MS_INVALID_ARGUMENT,
                "`%s.schedule.windows[%zu].machine_ids[%zu]`: the machine is already in a window", m, i, k);
    }
  }
  return 0;
}

/* Start/StopMaintenance: repeated MachineID machines = 1. */
static int check_machines(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__StartMaintenanceRequest *r = (const void *)req; /* Stop has the same shape */
  if (r->n_machines == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.machines` is empty", m);
  for (size_t i = 0; i < r->n_machines; i++)
    if (!*str0(r->machines[i]->hostname) && !*str0(r->machines[i]->ip))
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.machines[%zu]` has neither hostname nor ip", m, i);
  return 0;
}

static int check_teardown(const ProtobufCMessage *req, const char *m, ms_error **err) {
  return need_id(m, "framework_id", ((const Meseta__V1__TeardownFrameworkRequest *)req)->framework_id, err);
}

static int check_grow(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__GrowVolumeRequest *r = (const void *)req;
  if (!r->volume || !r->addition)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s` is missing", m, r->volume ? "addition" : "volume");
  return 0;
}

static int check_shrink(const ProtobufCMessage *req, const char *m, ms_error **err) {
  const Meseta__V1__ShrinkVolumeRequest *r = (const void *)req;
  if (!r->volume || !r->subtract)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s.%s` is missing", m, r->volume ? "subtract" : "volume");
  return 0;
}

static const struct {
  const ProtobufCMessageDescriptor *req;
  check_fn check;
} rows[] = {
    {&meseta__v1__update_weights_request__descriptor, check_weights},
    {&meseta__v1__update_quota_request__descriptor, check_quota},
    {&meseta__v1__update_maintenance_schedule_request__descriptor, check_schedule},
    {&meseta__v1__start_maintenance_request__descriptor, check_machines},
    {&meseta__v1__stop_maintenance_request__descriptor, check_machines},
    {&meseta__v1__teardown_framework_request__descriptor, check_teardown},
    {&meseta__v1__grow_volume_request__descriptor, check_grow},
    {&meseta__v1__shrink_volume_request__descriptor, check_shrink},
};

const ProtobufCFieldDescriptor *ms_operator_call_member(const ProtobufCMessageDescriptor *req_desc) {
  return ms_pb_oneof_member(&meseta__v1__operator_call_request__descriptor, req_desc);
}

int ms_operator_check(const ProtobufCMessage *req, ms_error **err) {
  const ProtobufCFieldDescriptor *member = ms_operator_call_member(req->descriptor);
  const char *m = member ? member->name : req->descriptor->short_name;
  /* The agent calls (and resource operations) name their agent in field 1. */
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(req->descriptor, 1);
  if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && f->descriptor == &meseta__v1__agent_id__descriptor &&
      need_id(m, f->name, *(const void *const *)((const char *)req + f->offset), err) < 0)
    return MS_ERR;
  for (size_t i = 0; i < MS_ARRAY_SIZE(rows); i++)
    if (rows[i].req == req->descriptor)
      return rows[i].check(req, m, err);
  return 0;
}
