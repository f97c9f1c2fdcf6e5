/* Maintenance through OperatorCall: the schedule (UpdateMaintenanceSchedule) and DOWN
 * machines (Start / StopMaintenance), and the refusal of agents on a DOWN machine. The
 * operator call table (alloc-svc-operator.c) checks, records and applies through these.
 * Owner thread only. */
#include "alloc-svc-maintenance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"

#include "alloc-svc-agents.h"
#include "alloc-svc-config.h"
#include "alloc-svc-core.h"
#include "alloc-svc-state.h"

typedef Meseta__V1__OperatorCallRequest op_req;

static const char *str0(const char *x) {
  return x ? x : "";
}

static bool machine_eq(const Meseta__V1__MachineID *a, const Meseta__V1__MachineID *b) {
  return strcmp(str0(a->hostname), str0(b->hostname)) == 0 && strcmp(str0(a->ip), str0(b->ip)) == 0;
}

/* As svc_agent_window: the hostname, or the ip compared with the agent's hostname. */
static bool machine_is_agent(const Meseta__V1__MachineID *m, const Meseta__V1__AgentInfo *info) {
  if (!info || !info->hostname || !*info->hostname)
    return false;
  return (m->hostname && *m->hostname && strcmp(m->hostname, info->hostname) == 0) ||
         (m->ip && *m->ip && strcmp(m->ip, info->hostname) == 0);
}

static const char *machine_name(const Meseta__V1__MachineID *m) {
  return m->hostname && *m->hostname ? m->hostname : str0(m->ip);
}

static bool in_schedule(const Meseta__V1__MaintenanceSchedule *sc, const Meseta__V1__MachineID *m) {
  for (size_t i = 0; sc && i < sc->n_windows; i++)
    for (size_t k = 0; k < sc->windows[i]->n_machine_ids; k++)
      if (machine_eq(sc->windows[i]->machine_ids[k], m))
        return true;
  return false;
}

static bool is_down(Meseta__V1__MachineID *const *v, size_t n, const Meseta__V1__MachineID *m) {
  for (size_t i = 0; i < n; i++)
    if (machine_eq(v[i], m))
      return true;
  return false;
}

static void down_add(Meseta__V1__MaintenanceRecord *mr, const Meseta__V1__MachineID *m) {
  mr->down_machines = ms_xrealloc(mr->down_machines, (mr->n_down_machines + 1) * sizeof(*mr->down_machines));
  mr->down_machines[mr->n_down_machines++] = (Meseta__V1__MachineID *)ms_pb_dup(&m->base);
}

/* The schedule and DOWN machines the call leaves (all owned by the result); NULL and
 * *err when refused. Nothing changes here. */
Meseta__V1__MaintenanceRecord *svc_maint_next(alloc_service *s, const op_req *r, ms_error **err) {
  Meseta__V1__MaintenanceRecord *mr = ms_pb_new(&meseta__v1__maintenance_record__descriptor);
  Meseta__V1__MachineID *const *down = s->down ? s->down->machines : NULL;
  size_t ndown = s->down ? s->down->n_machines : 0;
  int rc = 0;
  switch (r->call_case) {
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE: {
    const Meseta__V1__MaintenanceSchedule *sc = r->update_maintenance_schedule->schedule;
    for (size_t i = 0; i < ndown && rc == 0; i++)
      if (!in_schedule(sc, down[i]))
        rc = ms_error_set(err, MS_FAILED_PRECONDITION,
                          "`update_maintenance_schedule.schedule`: machine `%s` is DOWN and must stay in the "
                          "schedule until StopMaintenance",
                          machine_name(down[i]));
      else
        down_add(mr, down[i]);
    mr->schedule = sc ? (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&sc->base)
                      : ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    break;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE: {
    const Meseta__V1__StartMaintenanceRequest *q = r->start_maintenance;
    /* (machines named: ms_operator_check) */
    for (size_t i = 0; i < q->n_machines && rc == 0; i++)
      if (!in_schedule(s->schedule, q->machines[i]))
        rc =
            ms_error_set(err, MS_FAILED_PRECONDITION,
                         "`start_maintenance.machines[%zu]`: machine `%s` is not in the maintenance schedule",
                         i, machine_name(q->machines[i]));
    for (size_t i = 0; i < ndown && rc == 0; i++)
      down_add(mr, down[i]);
    for (size_t i = 0; i < q->n_machines && rc == 0; i++) /* DOWN already: no change (a retry) */
      if (!is_down(mr->down_machines, mr->n_down_machines, q->machines[i]))
        down_add(mr, q->machines[i]);
    mr->schedule = s->schedule ? (Meseta__V1__MaintenanceSchedule *)ms_pb_dup(&s->schedule->base)
                               : ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    break;
  }
  case MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE: {
    const Meseta__V1__StopMaintenanceRequest *q = r->stop_maintenance;
    for (size_t i = 0; i < q->n_machines && rc == 0; i++)
      if (!is_down(down, ndown, q->machines[i]))
        rc = ms_error_set(err, MS_FAILED_PRECONDITION,
                          "`stop_maintenance.machines[%zu]`: machine `%s` is not DOWN", i,
                          machine_name(q->machines[i]));
    for (size_t i = 0; i < ndown && rc == 0; i++)
      if (!is_down(q->machines, q->n_machines, down[i]))
        down_add(mr, down[i]);
    /* Back UP: out of the schedule too; a window left without machines goes. */
    mr->schedule = ms_pb_new(&meseta__v1__maintenance_schedule__descriptor);
    for (size_t i = 0; rc == 0 && s->schedule && i < s->schedule->n_windows; i++) {
      Meseta__V1__MaintenanceWindow *w =
          (Meseta__V1__MaintenanceWindow *)ms_pb_dup(&s->schedule->windows[i]->base);
      size_t keep = 0;
      for (size_t k = 0; k < w->n_machine_ids; k++) {
        if (is_down(q->machines, q->n_machines, w->machine_ids[k]))
          protobuf_c_message_free_unpacked(&w->machine_ids[k]->base, NULL);
        else
          w->machine_ids[keep++] = w->machine_ids[k];
      }
      w->n_machine_ids = keep;
      if (!keep) {
        protobuf_c_message_free_unpacked(&w->base, NULL);
        continue;
      }
      Meseta__V1__MaintenanceSchedule *sc = mr->schedule;
      sc->windows = ms_xrealloc(sc->windows, (sc->n_windows + 1) * sizeof(*sc->windows));
      sc->windows[sc->n_windows++] = w;
    }
    break;
  }
  default:
    rc = ms_error_set(err, MS_INTERNAL, "not a maintenance call");
    break;
  }
  if (rc < 0) {
    protobuf_c_message_free_unpacked(&mr->base, NULL);
    return NULL;
  }
  return mr;
}

static void send_shutdown(alloc_service *s, svc_agent *a, ms_rpc_call *link, const char *why) {
  Meseta__V1__AllocatorMessage__ShutdownAgent sd = MESETA__V1__ALLOCATOR_MESSAGE__SHUTDOWN_AGENT__INIT;
  sd.reason = (char *)why;
  Meseta__V1__AllocatorMessage m = MESETA__V1__ALLOCATOR_MESSAGE__INIT;
  m.message_case = MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_AGENT;
  m.shutdown_agent = &sd;
  if (a)
    svc_send_agent(s, a, &m);
  else if (link)
    (void)ms_rpc_call_send(link, &m.base, NULL);
}

bool svc_maint_refuse(alloc_service *s, ms_rpc_call *link, const Meseta__V1__AgentInfo *info) {
  for (size_t i = 0; s->down && i < s->down->n_machines; i++) {
    if (!machine_is_agent(s->down->machines[i], info))
      continue;
    char why[256];
    snprintf(why, sizeof(why),
             "machine `%s` is DOWN for maintenance: its agent may register after StopMaintenance",
             machine_name(s->down->machines[i]));
    ms_log_info(NULL, "agent on `%s` refused: %s", info->hostname, why);
    send_shutdown(s, NULL, link, why);
    ms_rpc_call_finish(link, MS_FAILED_PRECONDITION, why);
    return true;
  }
  return false;
}

/* Agents on DOWN machines are shut down and removed (they may come back after
 * StopMaintenance, re-registering with their id). */
static void shut_down_machines(alloc_service *s) {
  char **ids = ms_xcalloc(s->agents.n + 1, sizeof(*ids));
  size_t n = 0;
  for (uint32_t i = 0; i < s->agents.n; i++) {
    svc_agent *a = (svc_agent *)s->agents.v[i];
    for (size_t k = 0; s->down && k < s->down->n_machines; k++)
      if (machine_is_agent(s->down->machines[k], a->info)) {
        ids[n++] = ms_xstrdup(a->e.key);
        break;
      }
  }
  for (size_t i = 0; i < n; i++) {
    svc_agent *a = svc_table_get(&s->agents, ids[i]);
    const char *why = "its machine is DOWN for maintenance";
    send_shutdown(s, a, NULL, why);
    ms_rpc_call *link = a->link ? a->link->call : NULL;
    svc_agent_remove(s, a, why);
    if (link)
      ms_rpc_call_finish(link, MS_FAILED_PRECONDITION, why);
    free(ids[i]);
  }
  free(ids);
}

int svc_maint_apply(alloc_service *s, const op_req *r, ProtobufCMessage *ans, ms_error **err) {
  (void)ans;
  Meseta__V1__MaintenanceRecord *mr = svc_maint_next(s, r, err);
  if (!mr)
    return MS_ERR;
  if (s->schedule)
    protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
  s->schedule = TAKE_PTR(mr->schedule);
  if (s->schedule && s->schedule->n_windows == 0) {
    protobuf_c_message_free_unpacked(&s->schedule->base, NULL);
    s->schedule = NULL;
  }
  bool down_changed = r->call_case != MESETA__V1__OPERATOR_CALL_REQUEST__CALL_UPDATE_MAINTENANCE_SCHEDULE;
  if (down_changed) {
    if (s->down)
      protobuf_c_message_free_unpacked(&s->down->base, NULL);
    s->down = NULL;
    if (mr->n_down_machines) {
      s->down = ms_pb_new(&meseta__v1__down_machines__descriptor);
      s->down->machines = TAKE_PTR(mr->down_machines);
      s->down->n_machines = mr->n_down_machines;
      mr->n_down_machines = 0;
    }
  }
  protobuf_c_message_free_unpacked(&mr->base, NULL);
  if (r->call_case != MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE)
    svc_state_emit_maintenance(s);
  if (down_changed)
    svc_state_emit_down(s);
  if (r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE)
    shut_down_machines(s);
  for (uint32_t i = 0; i < s->agents.n; i++) { /* windows moved */
    svc_agent *a = (svc_agent *)s->agents.v[i];
    ms_error *e = NULL;
    if (svc_agent_respec(s, a, &e) < 0) {
      ms_log_warn(a->e.key, "maintenance window: %s", e->msg);
      ms_error_free(e);
    }
    svc_state_emit_agent(s, a->e.key, SVC_UPDATED);
  }
  svc_check_trigger(s);
  ms_log_info(NULL, "maintenance: %s",
              r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_START_MAINTENANCE ? "machines DOWN"
              : r->call_case == MESETA__V1__OPERATOR_CALL_REQUEST__CALL_STOP_MAINTENANCE
                  ? "machines back UP"
                  : "schedule updated");
  return 0;
}
