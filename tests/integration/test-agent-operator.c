/* AgentOperator's sandbox files over gRPC from a real meseta-agent process (registered with
 * a real meseta-allocator, no etcd): ListFiles and ReadFile of a sandbox made under its
 * work dir, a full 1 MiB read in one message, and escapes (`..`, absolute paths, links to
 * /etc/passwd and /etc) refused with statuses that name the field, without the agent's
 * descriptors growing. The agent serves on a unix socket in the test's directory (no port
 * to race for). Waits are bounded hang guards. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_operator.pb-c.h"

#include "cluster.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proc.h"
#include "testlib.h"

#define FW "fw-files"
#define TASK "task-files"
#define CALL_MS 10000
#define BIG (1536 * 1024)

static char *dir, *work, *sock;
static ms_test_proc *alloc_proc, *agent_proc;
static ms_rpc_channel *ch;

static ms_test_proc *start(const char *name, const char *const *argv) {
  ms_test_proc *p = ms_test_start(name, dir, argv);
  return p;
}

static void write_file(const char *rel, const char *data, size_t len) {
  _cleanup_free_ char *p = ms_xasprintf("%s/sandboxes/" FW "/" TASK "/%s", work, rel);
  FILE *f = fopen(p, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
  fclose(f);
}

/* An allocator, an agent serving AgentOperator on `sock`, and a sandbox with files,
 * once for every case. */
static void up(void) {
  if (ch)
    return;
  alloc_proc = ms_test_allocator_start(dir, "allocator", NULL);
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  _cleanup_free_ char *listen = ms_xasprintf("unix:%s", sock);
  const char *argv[] = {bin,
                        "--allocator",
                        ms_test_proc_address(alloc_proc),
                        "--listen",
                        listen,
                        "--work-dir",
                        work,
                        "--resources",
                        "cpus:1;mem:256;disk:100",
                        "--runtime",
                        rt,
                        "--no-switch-user",
                        "--log-level",
                        "debug",
                        NULL};
  agent_proc = start("agent", argv); /* ready: registered, and the server started before */

  _cleanup_free_ char *sb = ms_xasprintf("%s/sandboxes/" FW "/" TASK "/sub", work);
  _cleanup_free_ char *cmd = ms_xasprintf("mkdir -p '%s'", sb);
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
  write_file("stdout", "hello\n", 6);
  write_file("sub/inner", "inner", 5);
  char *big = ms_xmalloc(BIG);
  for (size_t i = 0; i < BIG; i++)
    big[i] = (char)('A' + i % 26);
  write_file("big", big, BIG);
  free(big);
  const char *links[][2] = {{"/etc/passwd", "link-passwd"}, {"/etc", "link-etc"}, {"stdout", "link-in"}};
  for (size_t i = 0; i < MS_ARRAY_SIZE(links); i++) {
    _cleanup_free_ char *p = ms_xasprintf("%s/sandboxes/" FW "/" TASK "/%s", work, links[i][1]);
    CU_ASSERT_EQUAL_FATAL(symlink(links[i][0], p), 0);
  }

  ms_error *err = NULL;
  ch = ms_rpc_channel_new(listen, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
}

/* One call; returns its status code, the response (caller frees) on OK, the message else. */
static ms_status call(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                      ProtobufCMessage **ret_resp, char **ret_msg) {
  ms_rpc_call_options co = {.timeout_ms = CALL_MS, .wait_for_ready = true};
  ms_error *err = NULL;
  ProtobufCMessage *r = NULL;
  _cleanup_free_ char *path = ms_xasprintf("/meseta.v1.AgentOperator/%s", method);
  if (ms_rpc_unary(ch, path, req, rd, &co, &r, &err) < 0) {
    ms_status code = err->code;
    if (ret_msg)
      *ret_msg = ms_xstrdup(err->msg);
    ms_error_free(err);
    return code;
  }
  if (ret_resp)
    *ret_resp = r;
  else
    protobuf_c_message_free_unpacked(r, NULL);
  return MS_OK;
}

static ms_status read_file(const char *fw, const char *path, int64_t off, int64_t len,
                           Meseta__V1__ReadFileResponse **ret, char **ret_msg) {
  Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  f.value = (char *)fw;
  t.value = TASK;
  Meseta__V1__ReadFileRequest req = MESETA__V1__READ_FILE_REQUEST__INIT;
  req.framework_id = &f;
  req.task_id = &t;
  req.path = (char *)path;
  req.offset = off;
  req.length = len;
  return call("ReadFile", &req.base, &meseta__v1__read_file_response__descriptor, (ProtobufCMessage **)ret,
              ret_msg);
}

static ms_status list_files(const char *path, Meseta__V1__ListFilesResponse **ret, char **ret_msg) {
  Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  f.value = FW;
  t.value = TASK;
  Meseta__V1__ListFilesRequest req = MESETA__V1__LIST_FILES_REQUEST__INIT;
  req.framework_id = &f;
  req.task_id = &t;
  req.path = (char *)path;
  return call("ListFiles", &req.base, &meseta__v1__list_files_response__descriptor, (ProtobufCMessage **)ret,
              ret_msg);
}

/* msgp, not the message: the call in the first argument sets it. */
static void expect(ms_status got, char **msgp, ms_status code, const char *needle) {
  char *msg = TAKE_PTR(*msgp);
  if (got != code || !msg || !strstr(msg, needle))
    fprintf(stderr, "got %s `%s`, expected %s with `%s`\n", ms_status_name(got), msg ? msg : "",
            ms_status_name(code), needle);
  CU_ASSERT_EQUAL(got, code);
  CU_ASSERT_TRUE(msg && strstr(msg, needle));
  free(msg);
}

static void test_health(void) {
  up();
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  hreq.service = "meseta.v1.AgentOperator";
  ProtobufCMessage *m = NULL;
  ms_error *err = NULL;
  ms_rpc_call_options co = {.timeout_ms = CALL_MS, .wait_for_ready = true};
  MS_ASSERT_OK(ms_rpc_unary(ch, "/grpc.health.v1.Health/Check", &hreq.base,
                            &grpc__health__v1__health_check_response__descriptor, &co, &m, &err),
               &err);
  CU_ASSERT_EQUAL(((Grpc__Health__V1__HealthCheckResponse *)m)->status,
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  protobuf_c_message_free_unpacked(m, NULL);
}

static void test_list_and_read(void) {
  up();
  Meseta__V1__ListFilesResponse *l = NULL;
  CU_ASSERT_EQUAL_FATAL(list_files("", &l, NULL), MS_OK);
  const char *want[] = {"big", "link-etc", "link-in", "link-passwd", "stdout", "sub"};
  CU_ASSERT_EQUAL(l->n_entries, MS_ARRAY_SIZE(want));
  for (size_t i = 0; i < l->n_entries && i < MS_ARRAY_SIZE(want); i++)
    CU_ASSERT_STRING_EQUAL(l->entries[i]->name, want[i]);
  CU_ASSERT_EQUAL(l->entries[0]->size, BIG);
  CU_ASSERT_EQUAL(l->entries[3]->type, MESETA__V1__FILE_ENTRY__TYPE__SYMLINK);
  CU_ASSERT_EQUAL(l->entries[5]->type, MESETA__V1__FILE_ENTRY__TYPE__DIRECTORY);
  protobuf_c_message_free_unpacked(&l->base, NULL);

  Meseta__V1__ReadFileResponse *r = NULL;
  CU_ASSERT_EQUAL_FATAL(read_file(FW, "stdout", 0, 0, &r, NULL), MS_OK);
  CU_ASSERT_TRUE(r->data.len == 6 && !memcmp(r->data.data, "hello\n", 6));
  CU_ASSERT_EQUAL(r->size, 6);
  CU_ASSERT_TRUE(r->eof);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  CU_ASSERT_EQUAL_FATAL(read_file(FW, "link-in", 1, 3, &r, NULL), MS_OK);
  CU_ASSERT_TRUE(r->data.len == 3 && !memcmp(r->data.data, "ell", 3));
  CU_ASSERT_FALSE(r->eof);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* The largest read fits one message; the rest follows from its end. */
  CU_ASSERT_EQUAL_FATAL(read_file(FW, "big", 0, 1024 * 1024, &r, NULL), MS_OK);
  CU_ASSERT_EQUAL(r->data.len, 1024 * 1024);
  CU_ASSERT_EQUAL(r->size, BIG);
  CU_ASSERT_FALSE(r->eof);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  CU_ASSERT_EQUAL_FATAL(read_file(FW, "big", 1024 * 1024, 1024 * 1024, &r, NULL), MS_OK);
  CU_ASSERT_EQUAL(r->data.len, BIG - 1024 * 1024);
  CU_ASSERT_EQUAL(r->data.data[0], 'A' + (1024 * 1024) % 26);
  CU_ASSERT_TRUE(r->eof);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_errors(void) {
  up();
  char *msg = NULL;
  expect(read_file(FW, "../../../../../etc/passwd", 0, 0, NULL, &msg), &msg, MS_PERMISSION_DENIED,
         "`path` `../../../../../etc/passwd` leads outside the sandbox");
  expect(read_file(FW, "sub/../../" TASK "/stdout", 0, 0, NULL, &msg), &msg, MS_PERMISSION_DENIED, "`path`");
  expect(read_file(FW, "/etc/passwd", 0, 0, NULL, &msg), &msg, MS_INVALID_ARGUMENT,
         "`path` `/etc/passwd` is absolute");
  expect(read_file(FW, "link-passwd", 0, 0, NULL, &msg), &msg, MS_PERMISSION_DENIED, "`path` `link-passwd`");
  expect(read_file(FW, "link-etc/passwd", 0, 0, NULL, &msg), &msg, MS_PERMISSION_DENIED,
         "`path` `link-etc/passwd`");
  expect(list_files("link-etc", NULL, &msg), &msg, MS_PERMISSION_DENIED, "`path` `link-etc`");
  expect(list_files("..", NULL, &msg), &msg, MS_PERMISSION_DENIED, "`path` `..`");
  expect(read_file("..", "stdout", 0, 0, NULL, &msg), &msg, MS_INVALID_ARGUMENT, "`framework_id` `..`");
  expect(read_file("a/b", "stdout", 0, 0, NULL, &msg), &msg, MS_INVALID_ARGUMENT, "`framework_id`");
  expect(read_file("", "stdout", 0, 0, NULL, &msg), &msg, MS_INVALID_ARGUMENT, "`framework_id` is required");
  expect(read_file(FW, "nope", 0, 0, NULL, &msg), &msg, MS_NOT_FOUND, "`path` `nope`");
  expect(read_file("other-fw", "stdout", 0, 0, NULL, &msg), &msg, MS_NOT_FOUND, "no sandbox");
  expect(read_file(FW, "sub", 0, 0, NULL, &msg), &msg, MS_FAILED_PRECONDITION, "is a directory");
  expect(read_file(FW, "stdout", 0, 2 * 1024 * 1024, NULL, &msg), &msg, MS_INVALID_ARGUMENT, "`length`");
  expect(read_file(FW, "stdout", -5, 0, NULL, &msg), &msg, MS_INVALID_ARGUMENT, "`offset`");
}

/* KillTask: missing ids and a negative grace are refused naming the field; a task the
 * agent does not run is NOT_FOUND. (Killing a running task: test-cli's task_kill.) */
static void test_kill_task_refusals(void) {
  up();
  Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  f.value = FW;
  t.value = "not-running-here";
  Meseta__V1__KillTaskRequest req = MESETA__V1__KILL_TASK_REQUEST__INIT;
  char *msg = NULL;
  expect(call("KillTask", &req.base, &meseta__v1__kill_task_response__descriptor, NULL, &msg), &msg,
         MS_INVALID_ARGUMENT, "`framework_id`");
  req.framework_id = &f;
  expect(call("KillTask", &req.base, &meseta__v1__kill_task_response__descriptor, NULL, &msg), &msg,
         MS_INVALID_ARGUMENT, "`task_id`");
  req.task_id = &t;
  Google__Protobuf__Duration gd = GOOGLE__PROTOBUF__DURATION__INIT;
  gd.seconds = -1;
  Meseta__V1__KillPolicy kp = MESETA__V1__KILL_POLICY__INIT;
  kp.grace_period = &gd;
  req.kill_policy = &kp;
  expect(call("KillTask", &req.base, &meseta__v1__kill_task_response__descriptor, NULL, &msg), &msg,
         MS_INVALID_ARGUMENT, "`kill_policy.grace_period`");
  req.kill_policy = NULL;
  expect(call("KillTask", &req.base, &meseta__v1__kill_task_response__descriptor, NULL, &msg), &msg,
         MS_NOT_FOUND, "is not on this agent");
}

static int count_fds(pid_t pid) {
  _cleanup_free_ char *p = ms_xasprintf("/proc/%d/fd", (int)pid);
  DIR *d = opendir(p);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int n = 0;
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

/* A descriptor kept per call would show as hundreds; gRPC's own may move by a few. */
static void test_no_fd_growth(void) {
  up();
  test_errors(); /* warm up */
  int before = count_fds(ms_test_proc_pid(agent_proc));
  for (int i = 0; i < 20; i++) {
    test_errors();
    test_list_and_read();
  }
  int after = count_fds(ms_test_proc_pid(agent_proc));
  fprintf(stderr, "agent descriptors: %d before, %d after 20 rounds of calls\n", before, after);
  CU_ASSERT_TRUE(after <= before + 8);
}

static void test_stops_cleanly(void) {
  up();
  ms_rpc_channel_free(TAKE_PTR(ch));
  CU_ASSERT_EQUAL(ms_test_proc_stop(agent_proc, SIGTERM), 0); /* leak-free under ASan too */
}

int main(int argc, char **argv) {
  dir = ms_test_tmpdir("test-agent-operator");
  work = ms_xasprintf("%s/work", dir);
  sock = ms_xasprintf("%s/agent.sock", dir);
  static const ms_test_case cases[] = {
      {"health", test_health},
      {"list_and_read", test_list_and_read},
      {"errors", test_errors},
      {"kill_task_refusals", test_kill_task_refusals},
      {"no_fd_growth", test_no_fd_growth},
      {"stops_cleanly", test_stops_cleanly},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent-operator", cases);
  ms_rpc_channel_free(ch);
  ms_test_proc_free(agent_proc);
  ms_test_proc_free(alloc_proc);
  if (rc == 0 && !getenv("MESETA_KEEP_TEST_DIR"))
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "logs in %s\n", dir);
  free(sock);
  free(work);
  free(dir);
  return rc;
}
