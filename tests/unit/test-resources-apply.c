#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
#include "meseta/resources-ops.h"
#include "meseta/resources.h"

#include "testlib.h"

static ms_resources *T(const char *text) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  if (ms_resources_parse_text(text, NULL, &r, &err) < 0) {
    fprintf(stderr, "parse `%s`: %s\n", text, err->msg);
    ms_error_free(err);
  }
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  return r;
}

static bool same(const ms_resources *a, const ms_resources *b) {
  bool eq = ms_resources_equal(a, b);
  if (!eq) {
    char *x = ms_resources_describe(a), *y = ms_resources_describe(b);
    fprintf(stderr, "got `%s`\nwant `%s`\n", x, y);
    free(x);
    free(y);
  }
  return eq;
}

#define DYN(role) "{\"type\":\"DYNAMIC\",\"role\":\"" role "\"}"
#define SCALAR(name, v, res, extra)                                                                          \
  "{\"name\":\"" name "\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" v "},\"reservations\":[" res "]" extra \
  "}"
#define VOLUME(id, v, extra)                                                                                 \
  ",\"disk\":{\"persistence\":{\"id\":\"" id "\"},\"volume\":{\"container_path\":\"data\"}" extra "}"

/* Applies and checks the set became `want`; frees the operation. */
static void apply_ok(ms_resources *set, ms_operation *op, const char *want) {
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_apply(set, op, &err), &err);
  ms_resources *w = T(want);
  CU_ASSERT_TRUE(same(set, w));
  ms_resources_free(w);
  ms_operation_release(op);
}

/* Applies, expects refusal with `code` and `needle`, and the set unchanged. */
static void apply_bad(ms_resources *set, ms_operation *op, ms_status code, const char *needle) {
  ms_error *err = NULL;
  ms_resources *before = ms_resources_clone(set);
  CU_ASSERT_EQUAL(ms_resources_apply(set, op, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  if (err->code != code || !strstr(err->msg, needle))
    fprintf(stderr, "got %s: %s\nwant %s: ...%s...\n", ms_status_name(err->code), err->msg,
            ms_status_name(code), needle);
  CU_ASSERT_EQUAL(err->code, code);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  CU_ASSERT_TRUE(same(set, before));
  ms_resources_free(before);
  ms_error_free(err);
  ms_operation_release(op);
}

static void test_reserve_unreserve(void) {
  ms_resources *agent = T("cpus:8;mem:1000;disk(ads):100");
  ms_operation op = {.type = MS_OP_RESERVE, .resources = T("[" SCALAR("cpus", "2", DYN("eng"), "") "]")};
  apply_ok(agent, &op,
           "[" SCALAR("cpus", "6", "", "") "," SCALAR("cpus", "2", DYN("eng"), "") "," SCALAR(
               "mem", "1000", "", "") ",{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100},"
                                      "\"reservations\":[{\"type\":\"STATIC\",\"role\":\"ads\"}]}]");
  /* Refine eng -> eng/web. */
  op = (ms_operation){.type = MS_OP_RESERVE,
                      .resources = T("[" SCALAR("cpus", "1", DYN("eng") "," DYN("eng/web"), "") "]")};
  apply_ok(agent, &op,
           "[" SCALAR("cpus", "6", "", "") "," SCALAR("cpus", "1", DYN("eng"), "") "," SCALAR(
               "cpus", "1", DYN("eng") "," DYN("eng/web"),
               "") "," SCALAR("mem", "1000", "",
                              "") ",{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100},"
                                  "\"reservations\":[{\"type\":\"STATIC\",\"role\":\"ads\"}]}]");
  op = (ms_operation){.type = MS_OP_RESERVE, .resources = T("[" SCALAR("cpus", "7", DYN("eng"), "") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "RESERVE `cpus(eng):7`: resource `cpus:7` is not available");
  op = (ms_operation){.type = MS_OP_RESERVE, .resources = T("cpus(eng):1")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT,
            "RESERVE: resource `cpus(eng):1` must have a DYNAMIC reservation on top");
  op = (ms_operation){.type = MS_OP_RESERVE, .resources = ms_resources_new()};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "RESERVE: `resources` must not be empty");
  /* Unreserve the refinement, then the reservation. */
  op = (ms_operation){.type = MS_OP_UNRESERVE,
                      .resources = T("[" SCALAR("cpus", "1", DYN("eng") "," DYN("eng/web"), "") "]")};
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_apply(agent, &op, &err), &err);
  ms_operation_release(&op);
  op = (ms_operation){.type = MS_OP_UNRESERVE, .resources = T("[" SCALAR("cpus", "2", DYN("eng"), "") "]")};
  apply_ok(agent, &op, "cpus:8;mem:1000;disk(ads):100");
  op = (ms_operation){.type = MS_OP_UNRESERVE, .resources = T("disk(ads):10")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "has no DYNAMIC reservation to remove");
  /* All or nothing: the second half is missing, so the first does not happen. */
  op = (ms_operation){
      .type = MS_OP_RESERVE,
      .resources = T("[" SCALAR("cpus", "1", DYN("eng"), "") "," SCALAR("mem", "5000", DYN("eng"), "") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION,
            "RESERVE `mem(eng):5000`: resource `mem:5000` is not available");
  ms_resources_free(agent);
}

static void test_reserve_update(void) {
  ms_resources *agent = T("[" SCALAR("cpus", "4", DYN("eng"), "") "," SCALAR("mem", "10", "", "") "]");
  ms_operation op = {.type = MS_OP_RESERVE,
                     .resources = T("[" SCALAR("cpus", "3", DYN("ops"), "") "]"),
                     T("[" SCALAR("cpus", "3", DYN("eng"), "") "]")};
  apply_ok(agent, &op,
           "[" SCALAR("cpus", "1", DYN("eng"), "") "," SCALAR("cpus", "3", DYN("ops"),
                                                              "") "," SCALAR("mem", "10", "", "") "]");
  op = (ms_operation){.type = MS_OP_RESERVE,
                      .resources = T("[" SCALAR("cpus", "2", DYN("eng"), "") "]"),
                      .source = T("[" SCALAR("cpus", "3", DYN("ops"), "") "]")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "must differ only in their dynamic reservations");
  op = (ms_operation){.type = MS_OP_RESERVE,
                      .resources = T("[" SCALAR("cpus", "5", DYN("x"), "") "]"),
                      .source = T("[" SCALAR("cpus", "5", DYN("ops"), "") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "RESERVE: resource `cpus(ops):5` is not available");
  ms_resources_free(agent);
}

#define DISK_ENG(v) SCALAR("disk", v, DYN("eng"), "")
#define VOL_ENG(id, v) SCALAR("disk", v, DYN("eng"), VOLUME(id, v, ""))

static void test_volumes(void) {
  ms_resources *agent = T("[" DISK_ENG("100") "]");
  ms_operation op = {.type = MS_OP_CREATE, .resources = T("[" VOL_ENG("v1", "40") "]")};
  apply_ok(agent, &op, "[" DISK_ENG("60") "," VOL_ENG("v1", "40") "]");
  op = (ms_operation){.type = MS_OP_CREATE, .resources = T("[" VOL_ENG("v1", "10") "]")};
  apply_bad(agent, &op, MS_ALREADY_EXISTS, "CREATE: persistence id `v1` is already used by");
  op = (ms_operation){.type = MS_OP_CREATE, .resources = T("[" VOL_ENG("v2", "70") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION,
            "CREATE volume `v2`: resource `disk(eng):70` is not available");
  op = (ms_operation){.type = MS_OP_CREATE, .resources = T("[" DISK_ENG("10") "]")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "is not a persistent volume");
  /* Grow by 10 from the reserved disk, shrink by 20 back into it. */
  op = (ms_operation){.type = MS_OP_GROW_VOLUME,
                      .volume = T("[" VOL_ENG("v1", "40") "]"),
                      .addition = T("[" DISK_ENG("10") "]")};
  apply_ok(agent, &op, "[" DISK_ENG("50") "," VOL_ENG("v1", "50") "]");
  op = (ms_operation){
      .type = MS_OP_GROW_VOLUME, .volume = T("[" VOL_ENG("v1", "50") "]"), .addition = T("cpus:1")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "must be disk like the volume's");
  op = (ms_operation){.type = MS_OP_GROW_VOLUME,
                      .volume = T("[" VOL_ENG("v1", "50") "]"),
                      .addition = T("[" DISK_ENG("51") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "GROW_VOLUME: resource `disk(eng):51` is not available");
  op = (ms_operation){
      .type = MS_OP_SHRINK_VOLUME, .volume = T("[" VOL_ENG("v1", "50") "]"), .subtract = 20000};
  apply_ok(agent, &op, "[" DISK_ENG("70") "," VOL_ENG("v1", "30") "]");
  op = (ms_operation){
      .type = MS_OP_SHRINK_VOLUME, .volume = T("[" VOL_ENG("v1", "30") "]"), .subtract = 30000};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "`subtract` must be above zero and below the volume's size");
  op =
      (ms_operation){.type = MS_OP_SHRINK_VOLUME, .volume = T("[" VOL_ENG("v1", "31") "]"), .subtract = 1000};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "is not available");
  /* Persistent volumes cannot be unreserved; destroying gives the disk back. */
  op = (ms_operation){.type = MS_OP_UNRESERVE, .resources = T("[" VOL_ENG("v1", "30") "]")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "is a persistent volume: DESTROY it first");
  op = (ms_operation){.type = MS_OP_DESTROY, .resources = T("[" VOL_ENG("v1", "30") "]")};
  apply_ok(agent, &op, "[" DISK_ENG("100") "]");
  op = (ms_operation){.type = MS_OP_DESTROY, .resources = T("[" VOL_ENG("v1", "30") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "DESTROY volume `v1`");
  ms_resources_free(agent);
}

#define SHARED_VOL SCALAR("disk", "30", DYN("eng"), VOLUME("s1", "30", "") ",\"shared\":{}")
#define MOUNT_ENG(v)                                                                                         \
  SCALAR("disk", v, DYN("eng"), ",\"disk\":{\"source\":{\"type\":\"MOUNT\",\"mount\":{\"root\":\"/m\"}}}")
#define MOUNT_VOL(v)                                                                                         \
  SCALAR("disk", v, DYN("eng"),                                                                              \
         ",\"disk\":{\"persistence\":{\"id\":\"m1\"},\"volume\":{\"container_path\":\"d\"},\"source\":{"     \
         "\"type\":"                                                                                         \
         "\"MOUNT\",\"mount\":{\"root\":\"/m\"}}}")

static void test_shared_and_mount_volumes(void) {
  ms_resources *agent = T("[" DISK_ENG("30") "," MOUNT_ENG("100") "]");
  ms_operation op = {.type = MS_OP_CREATE, .resources = T("[" SHARED_VOL "]")};
  apply_ok(agent, &op, "[" SHARED_VOL "," MOUNT_ENG("100") "]");
  op = (ms_operation){
      .type = MS_OP_GROW_VOLUME, .volume = T("[" SHARED_VOL "]"), .addition = T("[" DISK_ENG("1") "]")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "is shared: shared volumes cannot be resized");
  /* A volume on a MOUNT disk takes the whole disk. */
  op = (ms_operation){.type = MS_OP_CREATE, .resources = T("[" MOUNT_VOL("50") "]")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "cannot be split");
  op = (ms_operation){.type = MS_OP_CREATE, .resources = T("[" MOUNT_VOL("100") "]")};
  apply_ok(agent, &op, "[" SHARED_VOL "," MOUNT_VOL("100") "]");
  op = (ms_operation){.type = MS_OP_SHRINK_VOLUME, .volume = T("[" MOUNT_VOL("100") "]"), .subtract = 1000};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "only ROOT and PATH volumes resize");
  ms_resources_free(agent);
}

#define POOL(v)                                                                                              \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" v                                          \
  "},\"provider_id\":{\"value\":\"rp1\"},\"disk\":{\"source\":{\"type\":\"RAW\",\"profile\":\"fast\"}}}"
#define CSI(type, v, id)                                                                                     \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" v                                          \
  "},\"provider_id\":{\"value\":\"rp1\"},\"disk\":{\"source\":{\"type\":\"" type "\",\"id\":\"" id           \
  "\",\"profile\":\"fast\"}}}"

static void test_disks(void) {
  ms_resources *agent = T("[" POOL("100") "]");
  ms_operation op = {.type = MS_OP_CREATE_DISK,
                     .source = T("[" POOL("30") "]"),
                     .target_type = MS_DISK_SOURCE_MOUNT,
                     .volume_id = ms_xstrdup("vol-1")};
  apply_ok(agent, &op, "[" POOL("70") "," CSI("MOUNT", "30", "vol-1") "]");
  op = (ms_operation){
      .type = MS_OP_CREATE_DISK, .source = T("[" POOL("30") "]"), .target_type = MS_DISK_SOURCE_MOUNT};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "names no `volume_id`");
  op = (ms_operation){.type = MS_OP_CREATE_DISK,
                      .source = T("[" POOL("30") "]"),
                      .target_type = MS_DISK_SOURCE_RAW,
                      .volume_id = ms_xstrdup("x")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "`target_type` must be MOUNT or BLOCK");
  op = (ms_operation){.type = MS_OP_CREATE_DISK,
                      .source = T("[" POOL("80") "]"),
                      .target_type = MS_DISK_SOURCE_BLOCK,
                      .volume_id = ms_xstrdup("vol-2")};
  apply_bad(agent, &op, MS_FAILED_PRECONDITION, "is not available");
  op = (ms_operation){.type = MS_OP_CREATE_DISK, .source = T("disk:1"), .target_type = MS_DISK_SOURCE_BLOCK};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "is not a disk with a source");
  op = (ms_operation){.type = MS_OP_DESTROY_DISK, .source = T("[" CSI("MOUNT", "30", "vol-1") "]")};
  apply_ok(agent, &op, "[" POOL("100") "]"); /* back to the pool, merged */
  op = (ms_operation){.type = MS_OP_DESTROY_DISK, .source = T("[" POOL("100") "]")};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "is not a MOUNT, BLOCK or identified RAW disk");
  op = (ms_operation){.type = MS_OP_UNKNOWN};
  apply_bad(agent, &op, MS_INVALID_ARGUMENT, "operation type 0");
  ms_resources_free(agent);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"reserve_unreserve", test_reserve_unreserve},
      {"reserve_update", test_reserve_update},
      {"volumes", test_volumes},
      {"shared_and_mount_volumes", test_shared_and_mount_volumes},
      {"disks", test_disks},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "resources-apply", cases);
}
