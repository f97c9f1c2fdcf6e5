/* Issue 12 point 6: strict UTF-8 in every string of a request, the table of refused
 * fields, and the minimum resources of a task. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/pb-check.h"
#include "meseta/resources-io.h"
#include "meseta/task-check.h"
#include "meseta/v1/allocator.pb-c.h"
#include "meseta/v1/scheduler.pb-c.h"
#include "meseta/v1/tasks.pb-c.h"
#include "meseta/values.h"

#include "testlib.h"

/* ---- the validator ---- */

typedef struct utf8_case {
  const char *bytes;
  size_t len;
  size_t valid; /* the valid prefix's length */
} utf8_case;

#define C(s, v)                                                                                              \
  { s, sizeof(s) - 1, v }

static void test_trust_6_utf8_edges(void) {
  static const utf8_case cases[] = {
      C("", 0),
      C("plain ascii", 11),
      C("nul\0inside", 10),     /* NUL is a character */
      C("\xC2\x80", 2),         /* U+0080, the first 2-byte form */
      C("\xDF\xBF", 2),         /* U+07FF */
      C("\xC0\x80", 0),         /* overlong NUL */
      C("\xC1\xBF", 0),         /* overlong U+007F */
      C("\xE0\x9F\xBF", 0),     /* overlong U+07FF */
      C("\xE0\xA0\x80", 3),     /* U+0800 */
      C("\xED\x9F\xBF", 3),     /* U+D7FF */
      C("\xED\xA0\x80", 0),     /* U+D800: a surrogate */
      C("\xED\xBF\xBF", 0),     /* U+DFFF */
      C("\xEE\x80\x80", 3),     /* U+E000 */
      C("\xEF\xBF\xBF", 3),     /* U+FFFF */
      C("\xF0\x8F\xBF\xBF", 0), /* overlong U+FFFF */
      C("\xF0\x90\x80\x80", 4), /* U+10000 */
      C("\xF4\x8F\xBF\xBF", 4), /* U+10FFFF */
      C("\xF4\x90\x80\x80", 0), /* past U+10FFFF */
      C("\xF5\x80\x80\x80", 0), /* lead bytes F5..FF never appear */
      C("\xFF", 0),
      C("\x80", 0),                      /* a lone continuation byte */
      C("ab\xE2\x82", 2),                /* cut short at the end */
      C("ab\xE2\x82x", 2),               /* continuation missing */
      C("\xE2\x82\xAC\xE2\x82\xAC!", 7), /* two euro signs */
      C("caf\xC3\xA9\xFF", 5),
      C("\xF0\x9F\x98\x80\xF0\x9F\x98", 4),
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t got = ms_utf8_valid_prefix(cases[i].bytes, cases[i].len);
    if (got != cases[i].valid)
      fprintf(stderr, "case %zu: valid prefix %zu, want %zu\n", i, got, cases[i].valid);
    CU_ASSERT_EQUAL(got, cases[i].valid);
  }
}

/* Every 1-, 2- and 3-byte sequence, and 4-byte ones around every boundary, agree
 * with values.c's independent decoder (which computes code points). */
static void test_trust_6_utf8_agrees(void) {
  unsigned char b[4];
  size_t bad = 0;
  for (unsigned x = 0; x < 0x1000000; x++) {
    b[0] = (unsigned char)(x >> 16);
    b[1] = (unsigned char)(x >> 8);
    b[2] = (unsigned char)x;
    for (size_t n = 1; n <= 3; n++) {
      if (n < 3 && (x & ((1u << (8 * (3 - n))) - 1)))
        continue; /* shorter lengths: once per prefix */
      bool a = ms_utf8_valid_prefix((const char *)b, n) == n, v = ms_utf8_valid((const char *)b, n);
      bad += a != v;
    }
  }
  for (unsigned lead = 0xF0; lead <= 0xFF; lead++)
    for (unsigned second = 0; second < 256; second++) {
      b[0] = (unsigned char)lead;
      b[1] = (unsigned char)second;
      b[2] = b[3] = 0x80;
      bad += (ms_utf8_valid_prefix((const char *)b, 4) == 4) != ms_utf8_valid((const char *)b, 4);
    }
  CU_ASSERT_EQUAL(bad, 0);
}

static void test_trust_6_utf8_repair(void) {
  char *r = ms_utf8_repair("a\xFF"
                           "b\xED\xA0\x80"
                           "c\xC3\xA9");
  CU_ASSERT_STRING_EQUAL(r, "a\xEF\xBF\xBD"
                            "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                            "c\xC3\xA9");
  CU_ASSERT_TRUE(ms_utf8_valid(r, strlen(r)));
  free(r);
  r = ms_utf8_repair("");
  CU_ASSERT_STRING_EQUAL(r, "");
  free(r);
}

/* ---- whole messages ---- */

static void expect_err(int rc, ms_error **err, const char *msg) {
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*err);
  CU_ASSERT_EQUAL((*err)->code, MS_INVALID_ARGUMENT);
  if (strcmp((*err)->msg, msg) != 0)
    fprintf(stderr, "got \"%s\"\nwant \"%s\"\n", (*err)->msg, msg);
  CU_ASSERT_STRING_EQUAL((*err)->msg, msg);
  ms_error_free(*err);
  *err = NULL;
}

/* A LAUNCH of four tasks; tasks[3] has a command with two arguments. */
typedef struct accept_msg {
  Meseta__V1__AcceptRequest req;
  Meseta__V1__Offer__Operation op, *ops[1];
  Meseta__V1__Offer__Operation__Launch launch;
  Meseta__V1__TaskInfo tasks[4], *tp[4];
  Meseta__V1__CommandInfo cmd;
  char *args[2];
  Meseta__V1__ContainerInfo container;
  Meseta__V1__LinuxInfo linux_info;
  Meseta__V1__Environment env;
  Meseta__V1__Environment__Variable var, *vars[1];
  Meseta__V1__Secret secret;
  Meseta__V1__Secret__Reference ref;
  Meseta__V1__Limit limit;
  Meseta__V1__TaskInfo__LimitsEntry entry, *entries[1];
  Meseta__V1__Volume vol, *vols[1];
} accept_msg;

static void accept_init(accept_msg *m) {
  memset(m, 0, sizeof(*m));
  meseta__v1__accept_request__init(&m->req);
  meseta__v1__offer__operation__init(&m->op);
  meseta__v1__offer__operation__launch__init(&m->launch);
  meseta__v1__command_info__init(&m->cmd);
  meseta__v1__container_info__init(&m->container);
  meseta__v1__linux_info__init(&m->linux_info);
  meseta__v1__environment__init(&m->env);
  meseta__v1__environment__variable__init(&m->var);
  meseta__v1__secret__init(&m->secret);
  meseta__v1__secret__reference__init(&m->ref);
  meseta__v1__limit__init(&m->limit);
  meseta__v1__task_info__limits_entry__init(&m->entry);
  meseta__v1__volume__init(&m->vol);
  for (size_t i = 0; i < 4; i++) {
    meseta__v1__task_info__init(&m->tasks[i]);
    m->tasks[i].name = "t";
    m->tp[i] = &m->tasks[i];
  }
  m->args[0] = "prog";
  m->args[1] = "arg";
  m->cmd.value = "prog";
  m->cmd.arguments = m->args;
  m->cmd.n_arguments = 2;
  m->tasks[3].command = &m->cmd;
  m->launch.task_infos = m->tp;
  m->launch.n_task_infos = 4;
  m->op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH;
  m->op.launch = &m->launch;
  m->ops[0] = &m->op;
  m->req.operations = m->ops;
  m->req.n_operations = 1;
  m->var.name = "X";
  m->vars[0] = &m->var;
  m->env.variables = m->vars;
  m->env.n_variables = 1;
  m->entry.key = "cpus";
  m->entry.value = &m->limit;
  m->entries[0] = &m->entry;
  m->vols[0] = &m->vol;
}

static void test_trust_6_utf8_paths(void) {
  ms_error *err = NULL;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  sub.framework_info = &info;
  info.name = "fw";
  CU_ASSERT_EQUAL(ms_pb_check_utf8(&sub.base, NULL, &err), 0);
  info.name = "ok\xC3\x28";
  expect_err(ms_pb_check_utf8(&sub.base, NULL, &err), &err,
             "`framework_info.name`: not valid UTF-8 (byte 2)");
  expect_err(ms_pb_check_utf8(&sub.base, "request", &err), &err,
             "`request.framework_info.name`: not valid UTF-8 (byte 2)");
  info.name = "fw";
  char *roles[] = {"a", "b", "\xFF"};
  info.roles = roles;
  info.n_roles = 3;
  expect_err(ms_pb_check_utf8(&sub.base, NULL, &err), &err,
             "`framework_info.roles[2]`: not valid UTF-8 (byte 0)");
  info.n_roles = 2;

  accept_msg m;
  accept_init(&m);
  CU_ASSERT_EQUAL(ms_pb_check_utf8(&m.req.base, NULL, &err), 0);
  m.args[1] = "ar\xED\xA0\x80g";
  expect_err(ms_pb_check_utf8(&m.req.base, NULL, &err), &err,
             "`operations[0].launch.task_infos[3].command.arguments[1]`: not valid UTF-8 (byte 2)");
  m.args[1] = "arg";
  /* A oneof's string member, and a map entry's key. */
  m.cmd.environment = &m.env;
  m.var.source_case = MESETA__V1__ENVIRONMENT__VARIABLE__SOURCE_VALUE;
  m.var.value = "\xC0\xAF";
  expect_err(ms_pb_check_utf8(&m.req.base, NULL, &err), &err,
             "`operations[0].launch.task_infos[3].command.environment.variables[0].value`: not valid UTF-8 "
             "(byte 0)");
  /* The other member of the oneof set: the union holds a message, never read as a string. */
  m.var.source_case = MESETA__V1__ENVIRONMENT__VARIABLE__SOURCE_SECRET;
  m.var.secret = &m.secret;
  m.secret.secret_case = MESETA__V1__SECRET__SECRET_REFERENCE;
  m.secret.reference = &m.ref;
  m.ref.name = "n\xFF";
  expect_err(
      ms_pb_check_utf8(&m.req.base, NULL, &err), &err,
      "`operations[0].launch.task_infos[3].command.environment.variables[0].secret.reference.name`: not "
      "valid UTF-8 (byte 1)");
  m.ref.name = "n";
  CU_ASSERT_EQUAL(ms_pb_check_utf8(&m.req.base, NULL, &err), 0);
  m.tasks[1].limits = m.entries;
  m.tasks[1].n_limits = 1;
  m.entry.key = "cp\xF4\x90\x80\x80";
  expect_err(ms_pb_check_utf8(&m.req.base, NULL, &err), &err,
             "`operations[0].launch.task_infos[1].limits[0].key`: not valid UTF-8 (byte 2)");
}

/* Fields a type does not define are refused by the server's check, not kept: field 0
 * (a tag protobuf-c reads but cannot read back once it packed it) and an unknown one. */
static void test_trust_6_unknown_fields(void) {
  ms_error *err = NULL;
  static const uint8_t zero[] = {0x80, 0x00, 0x00};
  ProtobufCMessage *m =
      protobuf_c_message_unpack(&meseta__v1__subscribe_request__descriptor, NULL, sizeof(zero), zero);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  CU_ASSERT_EQUAL(ms_pb_check_utf8(m, NULL, &err), 0);
  expect_err(ms_pb_check_request(m, NULL, &err), &err,
             "field number 0 is not part of `meseta.v1.SubscribeRequest`");
  protobuf_c_message_free_unpacked(m, NULL);
  static const uint8_t nested[] = {0x0a, 0x05, 0x12, 0x01, 'x', 0x98, 0x06, 0x01};
  m = protobuf_c_message_unpack(&meseta__v1__subscribe_request__descriptor, NULL, sizeof(nested) - 1, nested);
  CU_ASSERT_PTR_NULL(m); /* (cut short: not a message) */
  static const uint8_t nested_ok[] = {0x0a, 0x06, 0x12, 0x01, 'x', 0x98, 0x06, 0x01};
  m = protobuf_c_message_unpack(&meseta__v1__subscribe_request__descriptor, NULL, sizeof(nested_ok),
                                nested_ok);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  expect_err(ms_pb_check_request(m, "request", &err), &err,
             "`request.framework_info`: field number 99 is not part of `meseta.v1.FrameworkInfo`");
  protobuf_c_message_free_unpacked(m, NULL);
}

static void test_trust_6_refused_table(void) {
  size_t row = 0;
  bool ok = ms_pb_refusals_resolve(ms_pb_refused, ms_pb_nrefused, &row);
  if (!ok)
    fprintf(stderr, "row %zu (`%s`) names no field\n", row, ms_pb_refused[row].field);
  CU_ASSERT_TRUE(ok);
  CU_ASSERT_TRUE(ms_pb_nrefused > 0);
  static const ms_pb_refusal typo[] = {
      {&meseta__v1__task_info__descriptor, "volumes", NULL, "x"},
  };
  CU_ASSERT_FALSE(ms_pb_refusals_resolve(typo, 1, &row));
  CU_ASSERT_EQUAL(row, 0);
  static const char *const some[] = {"a", NULL};
  static const ms_pb_refusal not_listable[] = {
      {&meseta__v1__task_info__descriptor, "health_check", some, "x"}, /* a singular message */
  };
  CU_ASSERT_FALSE(ms_pb_refusals_resolve(not_listable, 1, NULL));
}

static void test_trust_6_refused_paths(void) {
  ms_error *err = NULL;
  accept_msg m;
  accept_init(&m);
  CU_ASSERT_EQUAL(ms_pb_check_refused(&m.req.base, "accept", &err), 0);
  /* Present-but-default fields are not set: a proto3 false, an empty list. */
  m.tasks[2].container = &m.container;
  m.container.linux_info = &m.linux_info;
  m.linux_info.share_pid_namespace = false;
  m.container.volumes = m.vols;
  m.container.n_volumes = 0;
  CU_ASSERT_EQUAL(ms_pb_check_refused(&m.req.base, "accept", &err), 0);
  m.container.n_volumes = 1;
  expect_err(
      ms_pb_check_refused(&m.req.base, "accept", &err), &err,
      "`accept.operations[0].launch.task_infos[2].container.volumes`: volumes (host, sandbox, secret and "
      "CSI) are not implemented yet");
  m.container.n_volumes = 0;
  m.linux_info.share_pid_namespace = true;
  expect_err(
      ms_pb_check_refused(&m.req.base, "accept", &err), &err,
      "`accept.operations[0].launch.task_infos[2].container.linux_info.share_pid_namespace`: sharing the "
      "agent's pid namespace is not implemented yet");
  m.linux_info.share_pid_namespace = false;
  /* Limits: by key. */
  m.tasks[0].limits = m.entries;
  m.tasks[0].n_limits = 1;
  CU_ASSERT_EQUAL(ms_pb_check_refused(&m.req.base, "accept", &err), 0);
  m.entry.key = "gpus";
  expect_err(
      ms_pb_check_refused(&m.req.base, "accept", &err), &err,
      "`accept.operations[0].launch.task_infos[0].limits[0]`: `gpus`: only `cpus` and `mem` limits are "
      "implemented");
  m.entry.key = "mem";
  /* The first refused field in field order, depth first: task 0 before task 3. */
  m.cmd.uris = (Meseta__V1__CommandInfo__URI **)m.vols; /* only counted, never read */
  m.cmd.n_uris = 1;
  Meseta__V1__HealthCheck hc = MESETA__V1__HEALTH_CHECK__INIT;
  m.tasks[1].health_check = &hc;
  expect_err(
      ms_pb_check_refused(&m.req.base, "accept", &err), &err,
      "`accept.operations[0].launch.task_infos[1].health_check`: health checks are not implemented yet");
  m.tasks[1].health_check = NULL;
  expect_err(ms_pb_check_refused(&m.req.base, NULL, &err), &err,
             "`operations[0].launch.task_infos[3].command.uris`: fetching URIs into the sandbox is not "
             "implemented yet");
  m.cmd.n_uris = 0;
  /* A oneof member: LAUNCH_GROUP. */
  Meseta__V1__Offer__Operation__LaunchGroup lg = MESETA__V1__OFFER__OPERATION__LAUNCH_GROUP__INIT;
  m.op.operation_case = MESETA__V1__OFFER__OPERATION__OPERATION_LAUNCH_GROUP;
  m.op.launch_group = &lg;
  expect_err(
      ms_pb_check_refused(&m.req.base, "accept", &err), &err,
      "`accept.operations[0].launch_group`: LAUNCH_GROUP (task groups under the default executor) is not "
      "implemented yet; use LAUNCH");
  /* Subscribe: offer constraints. */
  Meseta__V1__SubscribeRequest sub = MESETA__V1__SUBSCRIBE_REQUEST__INIT;
  Meseta__V1__OfferConstraints oc = MESETA__V1__OFFER_CONSTRAINTS__INIT;
  CU_ASSERT_EQUAL(ms_pb_check_refused(&sub.base, "request", &err), 0);
  sub.offer_constraints = &oc;
  expect_err(ms_pb_check_refused(&sub.base, "request", &err), &err,
             "`request.offer_constraints`: offer constraints are not implemented yet");
  /* A row for one root only: FrameworkInfo.offer_filters at Subscribe, not at
   * UpdateFramework (which applies them). */
  sub.offer_constraints = NULL;
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  Meseta__V1__OfferFilters ofl = MESETA__V1__OFFER_FILTERS__INIT;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry ofe = MESETA__V1__FRAMEWORK_INFO__OFFER_FILTERS_ENTRY__INIT;
  Meseta__V1__FrameworkInfo__OfferFiltersEntry *ofes[] = {&ofe};
  ofe.key = "*";
  ofe.value = &ofl;
  info.offer_filters = ofes;
  info.n_offer_filters = 1;
  sub.framework_info = &info;
  expect_err(ms_pb_check_refused(&sub.base, "request", &err), &err,
             "`request.framework_info.offer_filters`: per-role offer filters are not implemented yet at "
             "Subscribe; set them with UpdateFramework");
  Meseta__V1__UpdateFrameworkRequest uf = MESETA__V1__UPDATE_FRAMEWORK_REQUEST__INIT;
  uf.framework_info = &info;
  CU_ASSERT_EQUAL(ms_pb_check_refused(&uf.base, "update_framework", &err), 0);
  Meseta__V1__SchedulerCallRequest call = MESETA__V1__SCHEDULER_CALL_REQUEST__INIT;
  call.call_case = MESETA__V1__SCHEDULER_CALL_REQUEST__CALL_UPDATE_FRAMEWORK;
  call.update_framework = &uf;
  CU_ASSERT_EQUAL(ms_pb_check_refused(&call.base, NULL, &err), 0);
}

/* An `allowed` row on an enum: values by name, unknown numbers as numbers. */
static void test_trust_6_refused_enum(void) {
  static const char *const caps[] = {"MULTI_ROLE", NULL};
  static const ms_pb_refusal table[] = {
      {&meseta__v1__framework_info__capability__descriptor, "type", caps, "not offered here"},
  };
  Meseta__V1__FrameworkInfo__Capability c0 = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__INIT,
                                        c1 = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__INIT;
  Meseta__V1__FrameworkInfo__Capability *cs[] = {&c0, &c1};
  Meseta__V1__FrameworkInfo info = MESETA__V1__FRAMEWORK_INFO__INIT;
  info.capabilities = cs;
  info.n_capabilities = 2;
  c0.type = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__MULTI_ROLE;
  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_pb_check_refusals(&info.base, NULL, table, 1, &err), 0); /* c1: UNKNOWN, i.e. unset */
  c1.type = MESETA__V1__FRAMEWORK_INFO__CAPABILITY__TYPE__GPU_RESOURCES;
  expect_err(ms_pb_check_refusals(&info.base, "framework_info", table, 1, &err), &err,
             "`framework_info.capabilities[1].type`: `GPU_RESOURCES`: not offered here");
  c1.type = (Meseta__V1__FrameworkInfo__Capability__Type)99;
  expect_err(ms_pb_check_refusals(&info.base, NULL, table, 1, &err), &err,
             "`capabilities[1].type`: `99`: not offered here");
}

/* ---- minimum resources ---- */

static void minimums(const char *text, bool ok, const char *msg) {
  ms_resources *r = NULL;
  if (text)
    CU_ASSERT_FATAL(ms_resources_parse_text(text, NULL, &r, NULL) == 0);
  ms_error *err = NULL;
  int rc = ms_task_check_minimums(r, &err);
  CU_ASSERT_EQUAL(rc, ok ? 0 : MS_ERR);
  if (!ok && msg)
    expect_err(rc, &err, msg);
  ms_error_free(err);
  ms_resources_free(r);
}

static void test_trust_6_minimums(void) {
  minimums("cpus:0.01;mem:32", true, NULL);
  minimums("cpus:4;mem:4096;disk:10", true, NULL);
  minimums(NULL, false, "a task needs cpus >= 0.01 and mem >= 32 MiB (it asks for cpus 0, mem 0 MiB)");
  minimums("cpus:1", false, "a task needs cpus >= 0.01 and mem >= 32 MiB (it asks for cpus 1, mem 0 MiB)");
  minimums("mem:64", false, NULL);
  minimums("cpus:0.009;mem:32", false, NULL);
  minimums("cpus:0.5;mem:31.9", false, NULL);
  minimums("disk:100", false, NULL);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"trust_6_utf8_edges", test_trust_6_utf8_edges},
      {"trust_6_utf8_agrees", test_trust_6_utf8_agrees},
      {"trust_6_utf8_repair", test_trust_6_utf8_repair},
      {"trust_6_utf8_paths", test_trust_6_utf8_paths},
      {"trust_6_unknown_fields", test_trust_6_unknown_fields},
      {"trust_6_refused_table", test_trust_6_refused_table},
      {"trust_6_refused_paths", test_trust_6_refused_paths},
      {"trust_6_refused_enum", test_trust_6_refused_enum},
      {"trust_6_minimums", test_trust_6_minimums},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "pb-check", cases);
}
