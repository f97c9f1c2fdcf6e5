/* Maintenance: the schedule (show, replace with one window), status, and taking
 * machines down and up. Machines are named by hostname, or by IP address. */
#include <arpa/inet.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

static const ms_flag out_flags[] = {CLI_OUTPUT_FLAG};

/* A read whose answer is printed whole (table output: YAML). */
static int show(cli *c, int argc, char **argv, const char *prog, const char *summary, const char *method,
                const ProtobufCMessageDescriptor *req_d, const ProtobufCMessageDescriptor *resp_d) {
  ms_flag_spec spec = {prog, summary, out_flags, MS_ARRAY_SIZE(out_flags), NULL};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  cli_args_free(&spec);
  if (rc >= 0)
    return rc;
  ProtobufCMessage *req = ms_pb_new(req_d);
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  rc = cli_call(c, NULL, "Operator", method, req, resp_d, &resp, &err);
  protobuf_c_message_free_unpacked(req, NULL);
  if (rc < 0)
    return cli_fail(c, prog + strlen("meseta "), err);
  rc = cli_print_message(c, resp);
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

int cli_cmd_maint_schedule(cli *c, int argc, char **argv) {
  return show(c, argc, argv, "meseta maintenance schedule", "Shows the maintenance schedule.",
              "GetMaintenanceSchedule", &meseta__v1__get_maintenance_schedule_request__descriptor,
              &meseta__v1__get_maintenance_schedule_response__descriptor);
}

int cli_cmd_maint_status(cli *c, int argc, char **argv) {
  return show(c, argc, argv, "meseta maintenance status", "Shows machines draining and down.",
              "GetMaintenanceStatus", &meseta__v1__get_maintenance_status_request__descriptor,
              &meseta__v1__get_maintenance_status_response__descriptor);
}

static Meseta__V1__MachineID *machines(char **pos, int npos) {
  Meseta__V1__MachineID *m = ms_xcalloc((size_t)npos + 1, sizeof(*m));
  for (int i = 0; i < npos; i++) {
    meseta__v1__machine_id__init(&m[i]);
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, pos[i], addr) == 1 || inet_pton(AF_INET6, pos[i], addr) == 1;
    if (ip)
      m[i].ip = pos[i];
    else
      m[i].hostname = pos[i];
  }
  return m;
}

static Meseta__V1__MachineID **pointers(Meseta__V1__MachineID *m, int n) {
  Meseta__V1__MachineID **p = ms_xcalloc((size_t)n + 1, sizeof(*p));
  for (int i = 0; i < n; i++)
    p[i] = &m[i];
  return p;
}

static int start_stop(cli *c, int argc, char **argv, bool start) {
  const char *what = start ? "maintenance start" : "maintenance stop";
  ms_flag_spec spec = {start ? "meseta maintenance start" : "meseta maintenance stop",
                       start ? "Takes scheduled machines down: their agents shut down."
                             : "Brings machines back up and removes them from the schedule.",
                       out_flags, MS_ARRAY_SIZE(out_flags), "MACHINE..."};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, -1, &pos, &npos);
  if (rc >= 0) {
    cli_args_free(&spec);
    return rc;
  }
  Meseta__V1__MachineID *m = machines(pos, npos);
  Meseta__V1__MachineID **mp = pointers(m, npos);
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  int r;
  if (start) {
    Meseta__V1__StartMaintenanceRequest req = MESETA__V1__START_MAINTENANCE_REQUEST__INIT;
    req.n_machines = (size_t)npos;
    req.machines = mp;
    r = cli_call(c, NULL, "Operator", "StartMaintenance", &req.base,
                 &meseta__v1__start_maintenance_response__descriptor, &resp, &err);
  } else {
    Meseta__V1__StopMaintenanceRequest req = MESETA__V1__STOP_MAINTENANCE_REQUEST__INIT;
    req.n_machines = (size_t)npos;
    req.machines = mp;
    r = cli_call(c, NULL, "Operator", "StopMaintenance", &req.base,
                 &meseta__v1__stop_maintenance_response__descriptor, &resp, &err);
  }
  if (r < 0) {
    rc = cli_fail(c, what, err);
  } else {
    rc = strcmp(c->output, "table") == 0
             ? (printf("%d machine(s) %s\n", npos, start ? "down" : "up"), CLI_EXIT_OK)
             : cli_print_message(c, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  free(mp);
  free(m);
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_maint_start(cli *c, int argc, char **argv) {
  return start_stop(c, argc, argv, true);
}

int cli_cmd_maint_stop(cli *c, int argc, char **argv) {
  return start_stop(c, argc, argv, false);
}

static char *m_start;
static int64_t m_duration;
static const ms_flag set_flags[] = {
    CLI_OUTPUT_FLAG,
    {"start", MS_FLAG_STRING, &m_start, "now", "Start of the window: `now` or UTC `2026-12-01T22:00:00Z`",
     "TIME"},
    {"duration", MS_FLAG_DURATION, &m_duration, "0s", "Length of the window (0: open-ended)"},
};

static int parse_time(const char *s, int64_t *ret_secs) {
  if (strcmp(s, "now") == 0) {
    *ret_secs = (int64_t)time(NULL);
    return 0;
  }
  struct tm tm = {0};
  const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end)
    return -1;
  *ret_secs = (int64_t)timegm(&tm);
  return 0;
}

int cli_cmd_maint_set(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta maintenance set",
                       "Replaces the schedule with one window for the machines given (none: clears it).",
                       set_flags, MS_ARRAY_SIZE(set_flags), "[MACHINE]..."};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, -1, &pos, &npos);
  if (rc >= 0) {
    cli_args_free(&spec);
    return rc;
  }
  int64_t start;
  if (parse_time(m_start, &start) < 0) {
    rc = cli_usage_error("maintenance set: flag `--start`: `%s` is not `now` or YYYY-MM-DDTHH:MM:SSZ",
                         m_start);
    cli_args_free(&spec);
    return rc;
  }
  Meseta__V1__MachineID *m = machines(pos, npos);
  Meseta__V1__MachineID **mp = pointers(m, npos);
  Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  ts.seconds = start;
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = m_duration / 1000000000;
  d.nanos = (int32_t)(m_duration % 1000000000);
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  un.start = &ts;
  un.duration = m_duration > 0 ? &d : NULL;
  Meseta__V1__MaintenanceWindow w = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  w.n_machine_ids = (size_t)npos;
  w.machine_ids = mp;
  w.unavailability = &un;
  Meseta__V1__MaintenanceWindow *ws[] = {&w};
  Meseta__V1__MaintenanceSchedule sched = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sched.n_windows = npos ? 1 : 0;
  sched.windows = ws;
  Meseta__V1__UpdateMaintenanceScheduleRequest req = MESETA__V1__UPDATE_MAINTENANCE_SCHEDULE_REQUEST__INIT;
  req.schedule = &sched;
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  if (cli_call(c, NULL, "Operator", "UpdateMaintenanceSchedule", &req.base,
               &meseta__v1__update_maintenance_schedule_response__descriptor, &resp, &err) < 0) {
    rc = cli_fail(c, "maintenance set", err);
  } else {
    rc = strcmp(c->output, "table") == 0
             ? (printf("maintenance schedule: %d machine(s)\n", npos), CLI_EXIT_OK)
             : cli_print_message(c, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  free(mp);
  free(m);
  cli_args_free(&spec);
  return rc;
}
