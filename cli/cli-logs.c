/* One task: describe (the master's record), logs (its sandbox files, read from its agent's
 * AgentOperator service), kill. */
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/task-state.h"
#include "meseta/v1/agent_operator.pb-c.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

#define READ_CHUNK (1024 * 1024)
#define FOLLOW_POLL_MS 500

int cli_find_task(cli *c, const char *task_id, const char *framework_id, ProtobufCMessage **ret_task,
                  ms_error **err) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  fid.value = (char *)framework_id;
  Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
  req.include_completed = true;
  req.framework_id = framework_id ? &fid : NULL;
  ProtobufCMessage *found = NULL;
  int matches = 0, rc = 0;
  char *token = NULL;
  do {
    req.page_token = token;
    Meseta__V1__GetTasksResponse *resp = NULL;
    rc = cli_call(c, NULL, "Operator", "GetTasks", &req.base, &meseta__v1__get_tasks_response__descriptor,
                  (ProtobufCMessage **)&resp, err);
    free(token);
    token = NULL;
    if (rc < 0)
      break;
    for (size_t i = 0; i < resp->n_tasks; i++) {
      Meseta__V1__Task *t = resp->tasks[i];
      if (!t->task_id || strcmp(t->task_id->value, task_id) != 0)
        continue;
      if (matches++ == 0)
        found = ms_pb_dup(&t->base);
    }
    if (resp->next_page_token && *resp->next_page_token)
      token = ms_xstrdup(resp->next_page_token);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  } while (token);
  if (rc == 0 && matches == 0)
    rc = ms_error_set(err, MS_NOT_FOUND, "task `%s` not found%s%s%s", task_id,
                      framework_id ? " in framework `" : "", framework_id ? framework_id : "",
                      framework_id ? "`" : "");
  else if (rc == 0 && matches > 1)
    rc = ms_error_set(err, MS_INVALID_ARGUMENT, "%d frameworks have a task `%s`: name one with --framework",
                      matches, task_id);
  if (rc < 0) {
    if (found)
      protobuf_c_message_free_unpacked(found, NULL);
    return rc;
  }
  *ret_task = found;
  return 0;
}

int cli_read_sandbox(cli *c, ms_rpc_channel *agent, const char *framework_id, const char *task_id,
                     const char *path, int64_t *offset, FILE *out, ms_error **err) {
  Meseta__V1__FrameworkID fid = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID tid = MESETA__V1__TASK_ID__INIT;
  fid.value = (char *)framework_id;
  tid.value = (char *)task_id;
  Meseta__V1__ReadFileRequest req = MESETA__V1__READ_FILE_REQUEST__INIT;
  req.framework_id = &fid;
  req.task_id = &tid;
  req.path = (char *)path;
  req.length = READ_CHUNK;
  for (;;) {
    req.offset = *offset;
    Meseta__V1__ReadFileResponse *r = NULL;
    if (cli_call(c, agent, "AgentOperator", "ReadFile", &req.base,
                 &meseta__v1__read_file_response__descriptor, (ProtobufCMessage **)&r, err) < 0)
      return MS_ERR;
    if (r->data.len)
      fwrite(r->data.data, 1, r->data.len, out);
    *offset += (int64_t)r->data.len;
    bool done = r->eof || r->data.len == 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (done)
      break;
  }
  fflush(out);
  return 0;
}

static char *desc_fw;
static const ms_flag desc_flags[] = {
    CLI_OUTPUT_FLAG,
    {"framework", MS_FLAG_STRING, &desc_fw, NULL, "The task's framework (when several have such a task)",
     "ID"},
};

int cli_cmd_task_describe(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta task describe", "Prints a task as the master knows it (table output is YAML).",
                       desc_flags, MS_ARRAY_SIZE(desc_flags), "TASK_ID"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0) {
    ProtobufCMessage *t = NULL;
    ms_error *err = NULL;
    if (cli_find_task(c, pos[0], desc_fw, &t, &err) < 0) {
      rc = cli_fail(c, "task describe", err);
    } else {
      rc = cli_print_message(c, t);
      protobuf_c_message_free_unpacked(t, NULL);
    }
  }
  cli_args_free(&spec);
  return rc;
}

static char *logs_fw, *logs_file;
static bool logs_stderr, logs_follow;
static const ms_flag logs_flags[] = {
    {"framework", MS_FLAG_STRING, &logs_fw, NULL, "The task's framework (when several have such a task)",
     "ID"},
    {"stderr", MS_FLAG_BOOL, &logs_stderr, "false", "Print stderr instead of stdout"},
    {"file", MS_FLAG_STRING, &logs_file, NULL, "Print this file of the sandbox instead", "PATH"},
    {"follow", MS_FLAG_BOOL, &logs_follow, "false", "Keep printing what is written until the task ends"},
};

static int logs(cli *c, const char *task_id) {
  ms_error *err = NULL;
  Meseta__V1__Task *t = NULL;
  if (cli_find_task(c, task_id, logs_fw, (ProtobufCMessage **)&t, &err) < 0)
    return cli_fail(c, "task logs", err);
  _cleanup_free_ char *fw = ms_xstrdup(t->framework_id ? t->framework_id->value : "");
  _cleanup_free_ char *addr = NULL;
  ms_rpc_channel *agent = cli_agent_channel(c, t->agent_id ? t->agent_id->value : "", &addr, &err);
  bool done = ms_task_state_terminal(t->state);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  if (!agent)
    return cli_fail(c, "task logs", err);
  const char *path = logs_file ? logs_file : logs_stderr ? "stderr" : "stdout";
  int64_t off = 0;
  int rc = CLI_EXIT_OK;
  for (;;) {
    if (cli_read_sandbox(c, agent, fw, task_id, path, &off, stdout, &err) < 0) {
      ms_error_prefix(&err, "agent %s", addr);
      rc = cli_fail(c, "task logs", err);
      break;
    }
    if (!logs_follow || done)
      break;
    struct timespec ts = {0, FOLLOW_POLL_MS * 1000000L};
    nanosleep(&ts, NULL);
    /* One more read after the task ended catches its last words. */
    if (cli_find_task(c, task_id, fw, (ProtobufCMessage **)&t, &err) < 0) {
      rc = cli_fail(c, "task logs", err);
      break;
    }
    done = ms_task_state_terminal(t->state);
    protobuf_c_message_free_unpacked(&t->base, NULL);
  }
  ms_rpc_channel_free(agent);
  return rc;
}

int cli_cmd_task_logs(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta task logs", "Prints a file of a task's sandbox (stdout by default).",
                       logs_flags, MS_ARRAY_SIZE(logs_flags), "TASK_ID"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0)
    rc = logs(c, pos[0]);
  cli_args_free(&spec);
  return rc;
}

static char *kill_fw;
static int64_t kill_grace = -1;
static const ms_flag kill_flags[] = {
    {"framework", MS_FLAG_STRING, &kill_fw, NULL, "The task's framework (when several have such a task)",
     "ID"},
    {"grace", MS_FLAG_DURATION, &kill_grace, NULL,
     "SIGTERM to SIGKILL grace (default: the task's kill policy)", "DURATION"},
};

/* Through the task's agent (AgentOperator.KillTask): the framework sees the usual
 * updates, TASK_KILLED at the end. */
int cli_cmd_task_kill(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta task kill", "Kills a task (SIGTERM, then SIGKILL after the grace).",
                       kill_flags, MS_ARRAY_SIZE(kill_flags), "TASK_ID"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc >= 0) {
    cli_args_free(&spec);
    return rc;
  }
  ms_error *err = NULL;
  Meseta__V1__Task *t = NULL;
  if (cli_find_task(c, pos[0], kill_fw, (ProtobufCMessage **)&t, &err) < 0) {
    cli_args_free(&spec);
    return cli_fail(c, "task kill", err);
  }
  _cleanup_free_ char *addr = NULL;
  ms_rpc_channel *agent = cli_agent_channel(c, t->agent_id ? t->agent_id->value : "", &addr, &err);
  if (!agent) {
    rc = cli_fail(c, "task kill", err);
  } else {
    Google__Protobuf__Duration gd = GOOGLE__PROTOBUF__DURATION__INIT;
    Meseta__V1__KillPolicy kp = MESETA__V1__KILL_POLICY__INIT;
    Meseta__V1__KillTaskRequest req = MESETA__V1__KILL_TASK_REQUEST__INIT;
    req.framework_id = t->framework_id;
    req.task_id = t->task_id;
    if (kill_grace >= 0) {
      gd.seconds = kill_grace / 1000000000;
      gd.nanos = (int32_t)(kill_grace % 1000000000);
      kp.grace_period = &gd;
      req.kill_policy = &kp;
    }
    ProtobufCMessage *resp = NULL;
    if (cli_call(c, agent, "AgentOperator", "KillTask", &req.base,
                 &meseta__v1__kill_task_response__descriptor, &resp, &err) < 0) {
      ms_error_prefix(&err, "agent %s", addr);
      rc = cli_fail(c, "task kill", err);
    } else {
      protobuf_c_message_free_unpacked(resp, NULL);
      fprintf(stderr, "meseta: task %s: kill sent to agent %s\n", pos[0], addr);
      rc = CLI_EXIT_OK;
    }
    ms_rpc_channel_free(agent);
  }
  protobuf_c_message_free_unpacked(&t->base, NULL);
  cli_args_free(&spec);
  return rc;
}
