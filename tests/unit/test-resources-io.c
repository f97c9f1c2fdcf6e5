#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"

#include "testlib.h"

static void test_text_round_trip(void) {
  ms_error *err = NULL;
  ms_resources *r = NULL, *back = NULL;
  MS_ASSERT_OK(ms_resources_parse_text(" cpus : 4 ; mem:8192;ports:[ 31000-32000 , 80 ];disk(ads):100;;"
                                       "zones:{ b , a };gpus:0",
                                       NULL, &r, &err),
               &err);
  char *text = ms_resources_format_text(r);
  CU_ASSERT_STRING_EQUAL(text, "cpus:4;mem:8192;disk(ads):100;ports:[80-80,31000-32000];zones:{a,b}");
  MS_ASSERT_OK(ms_resources_parse_text(text, NULL, &back, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(r, back));
  free(text);
  ms_resources_free(r);
  ms_resources_free(back);
  /* The default role reserves what names none; `*` keeps a resource unreserved. */
  MS_ASSERT_OK(ms_resources_parse_text("cpus:2;mem(*):4", "eng", &r, &err), &err);
  text = ms_resources_format_text(r);
  CU_ASSERT_STRING_EQUAL(text, "cpus(eng):2;mem:4");
  free(text);
  ms_resources_free(r);
  MS_ASSERT_OK(ms_resources_parse_text("", NULL, &r, &err), &err);
  CU_ASSERT_TRUE(ms_resources_is_empty(r));
  ms_resources_free(r);
}

static void expect_text_error(const char *text, const char *msg) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  CU_ASSERT_EQUAL(ms_resources_parse_text(text, NULL, &r, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  if (strcmp(err->msg, msg) != 0)
    fprintf(stderr, "%s\n  got:  %s\n  want: %s\n", text, err->msg, msg);
  CU_ASSERT_STRING_EQUAL(err->msg, msg);
  ms_error_free(err);
}

static void test_text_errors(void) {
  expect_text_error("cpus", "resource `cpus`: expected `name:value`");
  expect_text_error("cpus(eng:4", "resource `cpus(eng:4`: the role must end with `)` just before `:`");
  expect_text_error("cpus:four", "resource `cpus:four`: `four` is not a decimal number");
  expect_text_error("ports:[1-2", "resource `ports:[1-2`: ranges must end with `]`");
  expect_text_error("ports:[a-2]", "resource `ports:[a-2]`: range bound `a` is not a number below 2^64");
  expect_text_error(
      "ports:[1-99999999999999999999]",
      "resource `ports:[1-99999999999999999999]`: range bound `99999999999999999999` is not a number "
      "below 2^64");
  expect_text_error("zones:{a,}", "resource `zones:{a,}`: empty set item");
  expect_text_error("cpus(-x):1", "resource `cpus(-x):1`: role `-x`: component `-x` starts with `-`");
}

/* Resources the text form cannot carry print as JSON, which parse_text also reads. */
static void test_text_falls_back_to_json(void) {
  ms_error *err = NULL;
  ms_resources *r = NULL, *back = NULL;
  const char *json = "[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":0.5},"
                     "\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"eng\",\"principal\":\"alice\","
                     "\"labels\":{\"labels\":[{\"key\":\"k\",\"value\":\"v\"}]}}]}]";
  MS_ASSERT_OK(ms_resources_parse_text(json, NULL, &r, &err), &err);
  char *text = ms_resources_format_text(r);
  CU_ASSERT_STRING_EQUAL(text, json);
  MS_ASSERT_OK(ms_resources_parse_text(text, NULL, &back, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(r, back));
  free(text);
  ms_resources_free(r);
  ms_resources_free(back);
}

static void test_json_forms(void) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  /* 64-bit bounds as strings, numbers for enums. */
  const char *in = "[{\"name\":\"ids\",\"type\":2,\"ranges\":{\"range\":[{\"begin\":\"18446744073709551614\","
                   "\"end\":\"18446744073709551615\"},{\"begin\":0,\"end\":0}]}}]";
  MS_ASSERT_OK(ms_resources_from_json(in, strlen(in), &r, &err), &err);
  char *out = ms_resources_to_json(r);
  CU_ASSERT_STRING_EQUAL(
      out, "[{\"name\":\"ids\",\"type\":\"RANGES\",\"ranges\":{\"range\":[{\"begin\":0,\"end\":0},"
           "{\"begin\":\"18446744073709551614\",\"end\":\"18446744073709551615\"}]}}]");
  free(out);
  ms_resources_free(r);
  const char *bad[][2] = {
      {"{}", "resources JSON: expected an array of resources"},
      {"[1]", "resources JSON [0]: expected an object"},
      {"[{\"type\":\"SCALAR\"}]", "resources JSON [0]: `name` is required"},
      {"[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":-1}}]",
       "resources JSON [0]: scalar value -1 is negative"},
      {"[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"ranges\":{}}]",
       "resources JSON [0]: `ranges` set but type is not RANGES"},
      {"[{\"name\":\"cpus\",\"type\":\"FLOAT\"}]", "resources JSON [0]: `type` has an unknown value `FLOAT`"},
      {"[{\"name\":\"a\",\"name\":\"b\"}]", NULL},
      {"[", NULL},
  };
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
    r = NULL;
    CU_ASSERT_EQUAL(ms_resources_from_json(bad[i][0], strlen(bad[i][0]), &r, &err), MS_ERR);
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
    if (bad[i][1] && strcmp(err->msg, bad[i][1]) != 0)
      fprintf(stderr, "got %s\nwant %s\n", err->msg, bad[i][1]);
    if (bad[i][1])
      CU_ASSERT_STRING_EQUAL(err->msg, bad[i][1]);
  }
  ms_error_free(err);
}

static void test_proto_validation(void) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  Meseta__V1__Value__Scalar sc = MESETA__V1__VALUE__SCALAR__INIT;
  Meseta__V1__Resource res = MESETA__V1__RESOURCE__INIT;
  Meseta__V1__Resource *list[] = {&res};
  res.name = "cpus";
  res.type = MESETA__V1__VALUE__TYPE__SCALAR;
  res.scalar = &sc;
  sc.value = NAN;
  CU_ASSERT_EQUAL(ms_resources_from_proto(list, 1, &r, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resources[0]: scalar value is not a finite number");
  sc.value = 1.23456;
  MS_ASSERT_OK(ms_resources_from_proto(list, 1, &r, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_scalar(r, "cpus"), 1235);
  ms_resources_free(r);
  res.type = MESETA__V1__VALUE__TYPE__RANGES;
  CU_ASSERT_EQUAL(ms_resources_from_proto(list, 1, &r, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "resources[0]: `scalar` set but type is not SCALAR");
  ms_error_free(err);
}

static void test_operation_from_proto(void) {
  ms_error *err = NULL;
  Meseta__V1__Value__Scalar sc = MESETA__V1__VALUE__SCALAR__INIT;
  Meseta__V1__Resource__ReservationInfo ri = MESETA__V1__RESOURCE__RESERVATION_INFO__INIT;
  Meseta__V1__Resource__ReservationInfo *ris[] = {&ri};
  Meseta__V1__Resource res = MESETA__V1__RESOURCE__INIT;
  Meseta__V1__Resource *list[] = {&res};
  Meseta__V1__Operation__Reserve reserve = MESETA__V1__OPERATION__RESERVE__INIT;
  Meseta__V1__Operation msg = MESETA__V1__OPERATION__INIT;
  sc.value = 2;
  ri.type = MESETA__V1__RESOURCE__RESERVATION_INFO__TYPE__DYNAMIC;
  ri.role = "eng";
  res.name = "cpus";
  res.type = MESETA__V1__VALUE__TYPE__SCALAR;
  res.scalar = &sc;
  res.n_reservations = 1;
  res.reservations = ris;
  reserve.n_resources = 1;
  reserve.resources = list;
  msg.type = MESETA__V1__OPERATION__TYPE__UNRESERVE;
  msg.reserve = &reserve;
  ms_operation op = {0};
  CU_ASSERT_EQUAL(ms_operation_from_proto(&msg, &op, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "operation UNRESERVE: the payload must match `type` and be the only one");
  msg.type = MESETA__V1__OPERATION__TYPE__RESERVE;
  MS_ASSERT_OK(ms_operation_from_proto(&msg, &op, &err), &err);
  ms_resources *agent = NULL;
  MS_ASSERT_OK(ms_resources_parse_text("cpus:3", NULL, &agent, &err), &err);
  MS_ASSERT_OK(ms_resources_apply(agent, &op, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_size(agent), 2);
  ms_operation_release(&op);
  ri.role = "*";
  CU_ASSERT_EQUAL(ms_operation_from_proto(&msg, &op, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg,
                         "operation `reserve.resources`: resources[0]: resource `cpus(*)`: reservation 0: "
                         "cannot reserve to role `*`");
  ms_error_free(err);
  ms_resources_free(agent);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"text_round_trip", test_text_round_trip},
      {"text_errors", test_text_errors},
      {"text_falls_back_to_json", test_text_falls_back_to_json},
      {"json_forms", test_json_forms},
      {"proto_validation", test_proto_validation},
      {"operation_from_proto", test_operation_from_proto},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "resources-io", cases);
}
