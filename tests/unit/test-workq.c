#include <stdatomic.h>
#include <string.h>

#include "meseta/pb.h"
#include "meseta/workq.h"

#include "google/protobuf/duration.pb-c.h"
#include "testlib.h"

static atomic_int ran;

static void count(void *arg) {
  (void)arg;
  atomic_fetch_add(&ran, 1);
}

static void test_runs_everything_queued(void) {
  ms_error *err = NULL;
  atomic_store(&ran, 0);
  ms_workq *q = ms_workq_new(3, 0, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  for (int i = 0; i < 5000; i++)
    MS_ASSERT_OK(ms_workq_push(q, count, NULL, &err), &err);
  ms_workq_free(q); /* drains before returning */
  CU_ASSERT_EQUAL(atomic_load(&ran), 5000);
}

static atomic_int gate;

static void wait_gate(void *arg) {
  (void)arg;
  while (!atomic_load(&gate)) {
  }
}

static void test_bounded(void) {
  ms_error *err = NULL;
  atomic_store(&gate, 0);
  ms_workq *q = ms_workq_new(1, 2, &err);
  MS_ASSERT_OK(ms_workq_push(q, wait_gate, NULL, &err), &err);
  /* The worker may or may not have taken the first job yet: fill until refused. */
  int pushed = 0;
  while (ms_workq_push(q, count, NULL, &err) == 0)
    pushed++;
  CU_ASSERT_TRUE(pushed >= 1 && pushed <= 2);
  CU_ASSERT_EQUAL(err->code, MS_RESOURCE_EXHAUSTED);
  ms_error_free(err);
  atomic_store(&gate, 1);
  ms_workq_free(q);
}

static void test_pb_dup(void) {
  Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
  d.seconds = 42;
  d.nanos = 7;
  Google__Protobuf__Duration *c = (Google__Protobuf__Duration *)ms_pb_dup(&d.base);
  CU_ASSERT_PTR_NOT_EQUAL(c, &d);
  CU_ASSERT_EQUAL(c->seconds, 42);
  CU_ASSERT_EQUAL(c->nanos, 7);
  protobuf_c_message_free_unpacked(&c->base, NULL);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"runs_everything_queued", test_runs_everything_queued},
      {"bounded", test_bounded},
      {"pb_dup", test_pb_dup},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "workq", cases);
}
