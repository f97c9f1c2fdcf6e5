/* The read commands: agents, frameworks, tasks, roles, offers, operations, state.
 * Each reads every page of one Operator list and prints it (-o table|json|yaml). */
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

static const ms_flag out_only[] = {CLI_OUTPUT_FLAG};

/* Parses a command that takes only --output; -1 to go on, else the exit code. */
static int no_args(cli *c, const char *prog, const char *summary, int argc, char **argv) {
  ms_flag_spec spec = {prog, summary, out_only, MS_ARRAY_SIZE(out_only), NULL};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  cli_args_free(&spec);
  return rc;
}

static int list_and_print(cli *c, const char *what, const char *method, ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *rd, const char *items, const cli_col *cols,
                          size_t ncols) {
  ms_error *err = NULL;
  json_t *doc = NULL;
  if (cli_list_all(c, method, req, rd, items, &doc, &err) < 0)
    return cli_fail(c, what, err);
  int rc = cli_print(c, doc, items, cols, ncols);
  json_decref(doc);
  return rc;
}

int cli_cmd_agents(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"ID", CLI_COL_PATH, "agent_info.id.value", NULL},
      {"HOSTNAME", CLI_COL_PATH, "agent_info.hostname", NULL},
      {"STATE", CLI_COL_PATH, "state", NULL},
      {"CPUS", CLI_COL_RESOURCE, "total_resources", "cpus"},
      {"MEM", CLI_COL_RESOURCE, "total_resources", "mem"},
      {"DISK", CLI_COL_RESOURCE, "total_resources", "disk"},
      {"CPUS-USED", CLI_COL_RESOURCE, "allocated_resources", "cpus"},
      {"MEM-USED", CLI_COL_RESOURCE, "allocated_resources", "mem"},
  };
  int rc = no_args(c, "meseta agents", "Lists the agents (all but GONE ones).", argc, argv);
  if (rc >= 0)
    return rc;
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  return list_and_print(c, "agents", "GetAgents", &req.base, &meseta__v1__get_agents_response__descriptor,
                        "agents", cols, MS_ARRAY_SIZE(cols));
}

static bool fw_all;
static const ms_flag fw_flags[] = {
    CLI_OUTPUT_FLAG,
    {"all", MS_FLAG_BOOL, &fw_all, "false", "Also torn-down frameworks the master still remembers"},
};

int cli_cmd_frameworks(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"ID", CLI_COL_PATH, "framework_info.id.value", NULL},
      {"NAME", CLI_COL_PATH, "framework_info.name", NULL},
      {"ROLES", CLI_COL_PATH, "framework_info.roles", NULL},
      {"ACTIVE", CLI_COL_PATH, "active", NULL},
      {"CONNECTED", CLI_COL_PATH, "connected", NULL},
      {"OFFERS", CLI_COL_COUNT, "offers", NULL},
      {"CPUS", CLI_COL_RESOURCE, "allocated_resources", "cpus"},
      {"MEM", CLI_COL_RESOURCE, "allocated_resources", "mem"},
  };
  ms_flag_spec spec = {"meseta frameworks", "Lists the frameworks.", fw_flags, MS_ARRAY_SIZE(fw_flags), NULL};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  if (rc < 0) {
    Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
    req.include_completed = fw_all;
    rc = list_and_print(c, "frameworks", "GetFrameworks", &req.base,
                        &meseta__v1__get_frameworks_response__descriptor, "frameworks", cols,
                        MS_ARRAY_SIZE(cols));
  }
  cli_args_free(&spec);
  return rc;
}

static bool tasks_active;
static char *tasks_fw, *tasks_agent;
static const ms_flag tasks_flags[] = {
    CLI_OUTPUT_FLAG,
    {"active", MS_FLAG_BOOL, &tasks_active, "false", "Only tasks that are not terminal"},
    {"framework", MS_FLAG_STRING, &tasks_fw, NULL, "Only this framework's tasks", "ID"},
    {"agent", MS_FLAG_STRING, &tasks_agent, NULL, "Only tasks on this agent", "ID"},
};

int cli_cmd_tasks(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"ID", CLI_COL_PATH, "task_id.value", NULL},
      {"NAME", CLI_COL_PATH, "name", NULL},
      {"STATE", CLI_COL_PATH, "state", NULL},
      {"FRAMEWORK", CLI_COL_PATH, "framework_id.value", NULL},
      {"AGENT", CLI_COL_PATH, "agent_id.value", NULL},
      {"CPUS", CLI_COL_RESOURCE, "resources", "cpus"},
      {"MEM", CLI_COL_RESOURCE, "resources", "mem"},
      {"MESSAGE", CLI_COL_LAST, "statuses", "message"},
  };
  ms_flag_spec spec = {"meseta tasks", "Lists tasks, finished ones included.", tasks_flags,
                       MS_ARRAY_SIZE(tasks_flags), NULL};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  if (rc < 0) {
    Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
    Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
    fid.value = tasks_fw;
    aid.value = tasks_agent;
    Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
    req.include_completed = !tasks_active;
    req.framework_id = tasks_fw ? &fid : NULL;
    req.agent_id = tasks_agent ? &aid : NULL;
    rc = list_and_print(c, "tasks", "GetTasks", &req.base, &meseta__v1__get_tasks_response__descriptor,
                        "tasks", cols, MS_ARRAY_SIZE(cols));
  }
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_roles(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"NAME", CLI_COL_PATH, "name", NULL},
      {"WEIGHT", CLI_COL_PATH, "weight", NULL},
      {"QUOTA-CPUS", CLI_COL_PATH, "quota.guarantees.cpus.value", NULL},
      {"QUOTA-MEM", CLI_COL_PATH, "quota.guarantees.mem.value", NULL},
      {"CPUS", CLI_COL_RESOURCE, "allocated", "cpus"},
      {"MEM", CLI_COL_RESOURCE, "allocated", "mem"},
      {"FRAMEWORKS", CLI_COL_COUNT, "frameworks", NULL},
  };
  int rc = no_args(c, "meseta roles", "Lists the roles.", argc, argv);
  if (rc >= 0)
    return rc;
  Meseta__V1__GetRolesRequest req = MESETA__V1__GET_ROLES_REQUEST__INIT;
  return list_and_print(c, "roles", "GetRoles", &req.base, &meseta__v1__get_roles_response__descriptor,
                        "roles", cols, MS_ARRAY_SIZE(cols));
}

int cli_cmd_offers(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"ID", CLI_COL_PATH, "id.value", NULL},
      {"FRAMEWORK", CLI_COL_PATH, "framework_id.value", NULL},
      {"AGENT", CLI_COL_PATH, "agent_id.value", NULL},
      {"HOSTNAME", CLI_COL_PATH, "hostname", NULL},
      {"ROLE", CLI_COL_PATH, "allocation_info.role", NULL},
      {"CPUS", CLI_COL_RESOURCE, "resources", "cpus"},
      {"MEM", CLI_COL_RESOURCE, "resources", "mem"},
  };
  int rc = no_args(c, "meseta offers", "Lists outstanding offers (from every framework).", argc, argv);
  if (rc >= 0)
    return rc;
  Meseta__V1__GetFrameworksRequest req = MESETA__V1__GET_FRAMEWORKS_REQUEST__INIT;
  ms_error *err = NULL;
  json_t *doc = NULL;
  if (cli_list_all(c, "GetFrameworks", &req.base, &meseta__v1__get_frameworks_response__descriptor,
                   "frameworks", &doc, &err) < 0)
    return cli_fail(c, "offers", err);
  /* Offers live in their frameworks: list them flat, as {"revision", "offers"}. */
  json_t *offers = json_array(), *fw;
  size_t i;
  json_array_foreach(json_object_get(doc, "frameworks"), i, fw) {
    json_t *o = json_object_get(fw, "offers");
    if (json_is_array(o))
      json_array_extend(offers, o);
  }
  json_object_del(doc, "frameworks");
  json_object_set_new(doc, "offers", offers);
  rc = cli_print(c, doc, "offers", cols, MS_ARRAY_SIZE(cols));
  json_decref(doc);
  return rc;
}

int cli_cmd_operations(cli *c, int argc, char **argv) {
  static const cli_col cols[] = {
      {"UUID", CLI_COL_PATH, "uuid", NULL},
      {"ID", CLI_COL_PATH, "info.id.value", NULL},
      {"TYPE", CLI_COL_KEYS, "info", "id"},
      {"FRAMEWORK", CLI_COL_PATH, "framework_id.value", NULL},
      {"AGENT", CLI_COL_PATH, "agent_id.value", NULL},
      {"STATE", CLI_COL_PATH, "latest_status.state", NULL},
      {"MESSAGE", CLI_COL_PATH, "latest_status.message", NULL},
  };
  int rc = no_args(c, "meseta operations", "Lists resource operations.", argc, argv);
  if (rc >= 0)
    return rc;
  Meseta__V1__GetOperationsRequest req = MESETA__V1__GET_OPERATIONS_REQUEST__INIT;
  return list_and_print(c, "operations", "GetOperations", &req.base,
                        &meseta__v1__get_operations_response__descriptor, "operations", cols,
                        MS_ARRAY_SIZE(cols));
}

int cli_cmd_state(cli *c, int argc, char **argv) {
  int rc = no_args(c, "meseta state", "Prints the whole state (table output is YAML).", argc, argv);
  if (rc >= 0)
    return rc;
  Meseta__V1__GetStateRequest req = MESETA__V1__GET_STATE_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ms_error *err = NULL;
  if (cli_call(c, NULL, "Operator", "GetState", &req.base, &meseta__v1__get_state_response__descriptor, &resp,
               &err) < 0)
    return cli_fail(c, "state", err);
  rc = cli_print_message(c, resp);
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}
