#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/resources-io.h"
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

static bool eq_text(const ms_resources *set, const char *text) {
  ms_resources *want = T(text);
  bool eq = ms_resources_equal(set, want);
  if (!eq) {
    char *a = ms_resources_describe(set), *b = ms_resources_describe(want);
    fprintf(stderr, "got `%s`, want `%s`\n", a, b);
    free(a);
    free(b);
  }
  ms_resources_free(want);
  return eq;
}

/* A persistent volume etc. in the JSON form. */
#define VOL(id, size, extra)                                                                                 \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" size "},"                                  \
  "\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"eng\"}],"                                              \
  "\"disk\":{\"persistence\":{\"id\":\"" id                                                                  \
  "\"},\"volume\":{\"container_path\":\"data\",\"mode\":\"RW\"}}" extra "}"
#define MOUNT(size)                                                                                          \
  "{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":" size                                       \
  "},\"disk\":{\"source\":{\"type\":\"MOUNT\",\"mount\":{\"root\":\"/mnt/a\"}}}}"

static void test_parse_and_query(void) {
  ms_resources *r = T("cpus:4;mem:8192;ports:[31000-32000];disk(ads):100");
  CU_ASSERT_EQUAL(ms_resources_size(r), 4);
  CU_ASSERT_EQUAL(ms_resources_scalar(r, "cpus"), 4000);
  CU_ASSERT_EQUAL(ms_resources_scalar(r, "disk"), 100000);
  CU_ASSERT_EQUAL(ms_resources_scalar(r, "nope"), 0);
  const ms_resource *first = ms_resources_at(r, 0);
  CU_ASSERT_STRING_EQUAL(ms_resource_name(first), "cpus"); /* well-known names sort first */
  CU_ASSERT_STRING_EQUAL(ms_resource_role(first), "*");
  char *d = ms_resources_describe(r);
  CU_ASSERT_STRING_EQUAL(d, "cpus:4; mem:8192; disk(ads):100; ports:[31000-32000]");
  free(d);
  ms_resources_free(r);
}

static void test_add_combines_same_key_only(void) {
  ms_error *err = NULL;
  ms_resources *a = T("cpus:1;ports:[1-10]"), *b = T("cpus:2.5;cpus(eng):1;ports:[11-20]");
  MS_ASSERT_OK(ms_resources_add(a, b, &err), &err);
  CU_ASSERT_TRUE(eq_text(a, "cpus:3.5;cpus(eng):1;ports:[1-20]"));
  CU_ASSERT_EQUAL(ms_resources_size(a), 3);
  ms_resources_free(a);
  ms_resources_free(b);
}

static void test_subtract(void) {
  ms_error *err = NULL;
  ms_resources *a = T("cpus:4;mem:100;ports:[1-100];zones:{a,b,c}");
  ms_resources *b = T("cpus:1;mem:100;ports:[10-19];zones:{b}");
  MS_ASSERT_OK(ms_resources_subtract(a, b, &err), &err);
  CU_ASSERT_TRUE(eq_text(a, "cpus:3;ports:[1-9,20-100];zones:{a,c}")); /* mem:0 vanished */
  ms_resources *more = T("cpus:3.001");
  CU_ASSERT_EQUAL(ms_resources_subtract(a, more, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_FAILED_PRECONDITION);
  CU_ASSERT_STRING_EQUAL(err->msg, "resource `cpus:3.001` is not available");
  CU_ASSERT_TRUE(eq_text(a, "cpus:3;ports:[1-9,20-100];zones:{a,c}")); /* unchanged */
  ms_resources *reserved = T("cpus(eng):1");
  CU_ASSERT_FALSE(ms_resources_contains(a, reserved));
  ms_error_free(err);
  ms_resources_free(a);
  ms_resources_free(b);
  ms_resources_free(more);
  ms_resources_free(reserved);
}

static void test_contains_values(void) {
  ms_resources *a = T("ports:[1-10,20-30];zones:{a,b}");
  ms_resources *b = T("ports:[2-3,25-30];zones:{b}"), *c = T("ports:[9-21]"), *d = T("zones:{c}");
  CU_ASSERT_TRUE(ms_resources_contains(a, b));
  CU_ASSERT_FALSE(ms_resources_contains(a, c));
  CU_ASSERT_FALSE(ms_resources_contains(a, d));
  CU_ASSERT_TRUE(ms_resources_contains(a, a));
  ms_resources *empty = ms_resources_new();
  CU_ASSERT_TRUE(ms_resources_contains(a, empty));
  CU_ASSERT_FALSE(ms_resources_contains(empty, a));
  ms_resources_free(a);
  ms_resources_free(b);
  ms_resources_free(c);
  ms_resources_free(d);
  ms_resources_free(empty);
}

static void test_revocable_never_merges(void) {
  ms_error *err = NULL;
  ms_resources *a = T("[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":2},\"revocable\":{}}]");
  ms_resources *b = T("cpus:2");
  MS_ASSERT_OK(ms_resources_add(a, b, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_size(a), 2);
  ms_resources *rev = ms_resources_revocable(a), *non = ms_resources_nonrevocable(a);
  CU_ASSERT_TRUE(ms_resources_equal(non, b));
  CU_ASSERT_EQUAL(ms_resources_size(rev), 1);
  CU_ASSERT_TRUE(ms_resource_is_revocable(ms_resources_at(rev, 0)));
  ms_resources_free(a);
  ms_resources_free(b);
  ms_resources_free(rev);
  ms_resources_free(non);
}

static void test_shared_counted(void) {
  ms_error *err = NULL;
  ms_resources *v = T("[" VOL("v1", "64", ",\"shared\":{}") "]");
  ms_resources *a = ms_resources_clone(v);
  MS_ASSERT_OK(ms_resources_add(a, v, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_size(a), 1);
  CU_ASSERT_EQUAL(ms_resources_at(a, 0)->count, 2);
  CU_ASSERT_EQUAL(ms_resources_scalar(a, "disk"), 64000); /* counted, not summed */
  CU_ASSERT_TRUE(ms_resources_contains(a, v));
  MS_ASSERT_OK(ms_resources_subtract(a, v, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(a, v));
  MS_ASSERT_OK(ms_resources_subtract(a, v, &err), &err);
  CU_ASSERT_TRUE(ms_resources_is_empty(a));
  CU_ASSERT_EQUAL(ms_resources_subtract(a, v, &err), MS_ERR);
  ms_error_free(err);
  ms_resources_free(a);
  ms_resources_free(v);
}

static void test_atomic_disks(void) {
  ms_error *err = NULL;
  ms_resources *m100 = T("[" MOUNT("100") "]"), *m50 = T("[" MOUNT("50") "]");
  CU_ASSERT_FALSE(ms_resources_contains(m100, m50));
  CU_ASSERT_EQUAL(ms_resources_subtract(m100, m50, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "is atomic"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "cannot be split"));
  /* Two MOUNT disks alike are two disks, not one of 200. */
  ms_resources *two = ms_resources_clone(m100);
  MS_ASSERT_OK(ms_resources_add(two, m100, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_scalar(two, "disk"), 200000);
  CU_ASSERT_EQUAL(ms_resources_size(two), 1);
  MS_ASSERT_OK(ms_resources_subtract(two, m100, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(two, m100));
  /* Non-shared persistent volumes: different ids stay apart, and never sum. */
  ms_resources *vols = T("[" VOL("v1", "10", "") "," VOL("v2", "10", "") "]");
  CU_ASSERT_EQUAL(ms_resources_size(vols), 2);
  ms_resources *v1_5 = T("[" VOL("v1", "5", "") "]");
  CU_ASSERT_FALSE(ms_resources_contains(vols, v1_5));
  /* RAW without an id is a pool and splits; with an id it is one volume. */
  ms_resources *pool = T("[{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100},"
                         "\"disk\":{\"source\":{\"type\":\"RAW\",\"profile\":\"fast\"}}}]");
  ms_resources *part = T("[{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":30},"
                         "\"disk\":{\"source\":{\"type\":\"RAW\",\"profile\":\"fast\"}}}]");
  MS_ASSERT_OK(ms_resources_subtract(pool, part, &err), &err);
  CU_ASSERT_EQUAL(ms_resources_scalar(pool, "disk"), 70000);
  ms_resources *raw = T("[{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":100},"
                        "\"disk\":{\"source\":{\"type\":\"RAW\",\"id\":\"vol-1\"}}}]");
  ms_resources *raw_part = T("[{\"name\":\"disk\",\"type\":\"SCALAR\",\"scalar\":{\"value\":30},"
                             "\"disk\":{\"source\":{\"type\":\"RAW\",\"id\":\"vol-1\"}}}]");
  CU_ASSERT_EQUAL(ms_resources_subtract(raw, raw_part, &err), MS_ERR);
  ms_error_free(err);
  ms_resources *all[] = {m100, m50, two, vols, v1_5, pool, part, raw, raw_part};
  for (size_t i = 0; i < MS_ARRAY_SIZE(all); i++)
    ms_resources_free(all[i]);
}

static void expect_invalid(const char *text, const char *needle) {
  ms_error *err = NULL;
  ms_resources *r = NULL;
  CU_ASSERT_EQUAL(ms_resources_parse_text(text, NULL, &r, &err), MS_ERR);
  CU_ASSERT_PTR_NULL(r);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (!strstr(err->msg, needle))
    fprintf(stderr, "for %s\n  got:  %s\n  want: ...%s...\n", text, err->msg, needle);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  ms_error_free(err);
}

#define RES(name, extra) "[{\"name\":\"" name "\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1}" extra "}]"

static void test_validation(void) {
  expect_invalid("ports:4", "resource `ports(*)`: must be RANGES, not SCALAR");
  expect_invalid("cpus:{a}", "resource `cpus(*)`: must be SCALAR, not SET");
  expect_invalid("cpus:-1", "scalar value -1 is negative");
  expect_invalid("cpus(eng/):1", "role `eng/`: must not end with `/`");
  expect_invalid("c pus:1", "resource name `c pus`: byte 0x20 at offset 1");
  expect_invalid("ports:[5-1]", "range [5-1] begins after it ends");
  expect_invalid("zones:{a,a}", "set item `a` appears twice");
  expect_invalid(RES("cpus", ",\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"eng\"},"
                             "{\"type\":\"DYNAMIC\",\"role\":\"ops/x\"}]"),
                 "reservation 1 to `ops/x` does not refine `eng`");
  expect_invalid(RES("cpus", ",\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"eng\"},"
                             "{\"type\":\"STATIC\",\"role\":\"eng/x\"}]"),
                 "reservation 1 is STATIC; only the first reservation may be");
  expect_invalid(RES("cpus", ",\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"eng\"},"
                             "{\"type\":\"DYNAMIC\",\"role\":\"eng\"}]"),
                 "does not refine `eng`");
  expect_invalid(RES("cpus", ",\"reservations\":[{\"type\":\"DYNAMIC\",\"role\":\"*\"}]"),
                 "cannot reserve to role `*`");
  expect_invalid(RES("cpus", ",\"reservations\":[{\"role\":\"eng\"}]"), "reservation 0 has no type");
  expect_invalid(RES("cpus", ",\"shared\":{}"), "only persistent volumes can be shared");
  expect_invalid(RES("cpus", ",\"disk\":{}"), "only `disk` resources carry disk info");
  expect_invalid(
      RES("disk", ",\"disk\":{\"persistence\":{\"id\":\"v\"},\"volume\":{\"container_path\":\"d\"}}"),
      "persistent volume `v` must be reserved");
  expect_invalid(RES("disk",
                     ",\"reservations\":[{\"type\":\"STATIC\",\"role\":\"eng\"}],"
                     "\"disk\":{\"persistence\":{\"id\":\"a/b\"},\"volume\":{\"container_path\":\"d\"}}"),
                 "persistence id `a/b` must not be");
  expect_invalid(RES("disk",
                     ",\"reservations\":[{\"type\":\"STATIC\",\"role\":\"eng\"}],"
                     "\"disk\":{\"persistence\":{\"id\":\"v\"},\"volume\":{\"container_path\":\"/abs\"}}"),
                 "volume container path `/abs` must be relative");
  expect_invalid(RES("disk", ",\"disk\":{\"volume\":{\"container_path\":\"d\"}}"),
                 "a volume without persistence is not supported");
  expect_invalid(RES("disk", ",\"disk\":{\"source\":{\"type\":\"BLOCK\",\"path\":{\"root\":\"/x\"}}}"),
                 "BLOCK and RAW disk sources have no root path");
  expect_invalid(RES("disk", ",\"disk\":{\"source\":{\"type\":\"PATH\",\"mount\":{\"root\":\"/x\"}}}"),
                 "has the root of another source type");
  expect_invalid("[{\"name\":\"attr\",\"type\":\"TEXT\"}]", "type TEXT is for attributes, not resources");
  expect_invalid(RES("cpus", ",\"color\":1"), "unknown key `color`");
}

static void test_overflow_refused(void) {
  ms_error *err = NULL;
  ms_resources *a = T("mem:1000000000000"), *b = T("mem:0.001");
  CU_ASSERT_EQUAL(ms_resources_add(a, b, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_OUT_OF_RANGE);
  CU_ASSERT_EQUAL(ms_resources_scalar(a, "mem"), MS_SCALAR_MAX);
  ms_error_free(err);
  ms_resources_free(a);
  ms_resources_free(b);
}

static void test_filters(void) {
  ms_resources *r = T("[{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":1}},"
                      "{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":2},\"reservations\":[{"
                      "\"type\":\"STATIC\",\"role\":\"eng\"}]},"
                      "{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":3},\"reservations\":[{"
                      "\"type\":\"STATIC\",\"role\":\"eng\"},"
                      "{\"type\":\"DYNAMIC\",\"role\":\"eng/web\"}]},"
                      "{\"name\":\"cpus\",\"type\":\"SCALAR\",\"scalar\":{\"value\":4},\"reservations\":[{"
                      "\"type\":\"DYNAMIC\",\"role\":\"ops\"}]},"
                      "{\"name\":\"mem\",\"type\":\"SCALAR\",\"scalar\":{\"value\":5},\"provider_id\":{"
                      "\"value\":\"rp1\"}}," VOL("v1", "6", "") "]");
  struct {
    ms_resources *set;
    ms_scalar cpus, mem, disk;
  } cases[] = {
      {ms_resources_unreserved(r), 1000, 5000, 0},
      {ms_resources_reserved(r, NULL), 9000, 0, 6000},
      {ms_resources_reserved(r, "eng"), 2000, 0, 6000},
      {ms_resources_allocatable_to(r, "eng/web/fe"), 6000, 5000, 6000},
      {ms_resources_allocatable_to(r, "ops"), 5000, 5000, 0},
      {ms_resources_persistent_volumes(r), 0, 0, 6000},
      {ms_resources_named(r, "mem"), 0, 5000, 0},
      {ms_resources_by_provider(r, "rp1"), 0, 5000, 0},
      {ms_resources_by_provider(r, NULL), 10000, 0, 6000},
      {ms_resources_shared(r), 0, 0, 0},
      {ms_resources_nonshared(r), 10000, 5000, 6000},
      {ms_resources_to_unreserved(r), 10000, 5000, 6000},
  };
  for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
    CU_ASSERT_EQUAL(ms_resources_scalar(cases[i].set, "cpus"), cases[i].cpus);
    CU_ASSERT_EQUAL(ms_resources_scalar(cases[i].set, "mem"), cases[i].mem);
    CU_ASSERT_EQUAL(ms_resources_scalar(cases[i].set, "disk"), cases[i].disk);
    if (ms_resources_scalar(cases[i].set, "cpus") != cases[i].cpus)
      fprintf(stderr, "filter case %zu\n", i);
    ms_resources_free(cases[i].set);
  }
  ms_error *err = NULL;
  MS_ASSERT_OK(ms_resources_allocate(r, "eng/web", &err), &err);
  ms_resources *alloc = ms_resources_allocated(r, "eng/web");
  CU_ASSERT_EQUAL(ms_resources_size(alloc), ms_resources_size(r));
  CU_ASSERT_EQUAL(ms_resources_allocate(r, "bad role", &err), MS_ERR);
  MS_ASSERT_OK(ms_resources_allocate(r, NULL, &err), &err);
  ms_resources *none = ms_resources_allocated(r, NULL);
  CU_ASSERT_TRUE(ms_resources_is_empty(none));
  ms_error_free(err);
  ms_resources_free(alloc);
  ms_resources_free(none);
  ms_resources_free(r);
}

static void test_push_pop(void) {
  ms_error *err = NULL;
  ms_resources *r = T("cpus:4;mem(eng):10"), *orig = ms_resources_clone(r);
  ms_reservation web = {.type = MS_RESERVATION_DYNAMIC, .role = "eng/web", .principal = "alice"};
  MS_ASSERT_OK(ms_resources_push_reservation(r, &web, &err), &err);
  CU_ASSERT_EQUAL(ms_resource_nreservations(ms_resources_at(r, 1)), 2);
  CU_ASSERT_STRING_EQUAL(ms_resource_role(ms_resources_at(r, 0)), "eng/web");
  CU_ASSERT_STRING_EQUAL(ms_resource_reservation(ms_resources_at(r, 1), 1)->principal, "alice");
  ms_resources *pushed = ms_resources_clone(r);
  ms_reservation ops = {.type = MS_RESERVATION_DYNAMIC, .role = "ops"};
  CU_ASSERT_EQUAL(ms_resources_push_reservation(r, &ops, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "does not refine `eng/web`"));
  CU_ASSERT_TRUE(ms_resources_equal(r, pushed)); /* atomic */
  ms_reservation st = {.type = MS_RESERVATION_STATIC, .role = "eng/web/x"};
  CU_ASSERT_EQUAL(ms_resources_push_reservation(r, &st, &err), MS_ERR);
  MS_ASSERT_OK(ms_resources_pop_reservation(r, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(r, orig));
  CU_ASSERT_EQUAL(ms_resources_pop_reservation(r, &err), MS_ERR); /* cpus is unreserved */
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "resource `cpus:4` is not reserved"));
  CU_ASSERT_TRUE(ms_resources_equal(r, orig));
  ms_resources *vol = T("[" VOL("v1", "6", "") "]");
  CU_ASSERT_EQUAL(ms_resources_pop_reservation(vol, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "must be reserved"));
  ms_error_free(err);
  ms_resources_free(r);
  ms_resources_free(orig);
  ms_resources_free(pushed);
  ms_resources_free(vol);
}

static void test_quantities(void) {
  ms_resources *agent = T("cpus:8;mem:1000;ports:[1-10];disk:100");
  ms_resources *used = T("cpus(eng):2;mem:500");
  ms_quantities total = {0}, alloc = {0}, sum = {0};
  ms_quantities_of(&total, agent);
  ms_quantities_of(&alloc, used);
  CU_ASSERT_EQUAL(total.n, 3); /* ports are not a scalar */
  CU_ASSERT_EQUAL(ms_quantities_get(&alloc, MS_NAME_CPUS), 2000);
  CU_ASSERT_DOUBLE_EQUAL(ms_quantities_dominant_share(&alloc, &total), 0.5, 1e-12);
  CU_ASSERT_TRUE(ms_quantities_contains(&total, &alloc));
  CU_ASSERT_FALSE(ms_quantities_contains(&alloc, &total));
  ms_quantities_add(&sum, &alloc);
  ms_quantities_add(&sum, &alloc);
  CU_ASSERT_EQUAL(ms_quantities_get(&sum, MS_NAME_MEM), 1000000);
  ms_quantities_subtract(&sum, &total);
  CU_ASSERT_EQUAL(sum.n, 0); /* floors at zero, zeros vanish */
  ms_quantities_subtract(&alloc, &alloc);
  CU_ASSERT_TRUE(ms_quantities_equal(&alloc, &sum));
  ms_quantities_release(&total);
  ms_quantities_release(&alloc);
  ms_quantities_release(&sum);
  ms_resources_free(agent);
  ms_resources_free(used);
}

/* ---- property tests over random sets ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

static const ms_reservation stacks[][3] = {
    {{.type = MS_RESERVATION_STATIC, .role = "eng"}},
    {{.type = MS_RESERVATION_STATIC, .role = "eng"},
     {.type = MS_RESERVATION_DYNAMIC, .role = "eng/web", .principal = "p"}},
    {{.type = MS_RESERVATION_DYNAMIC, .role = "eng"},
     {.type = MS_RESERVATION_DYNAMIC, .role = "eng/web"},
     {.type = MS_RESERVATION_DYNAMIC, .role = "eng/web/fe"}},
};

/* Ranges and sets come from per-side pools (`side` 0 or 1) so a and b never overlap:
 * for overlapping ones (a + b) - b loses the overlap, in Mesos as here. */
static void add_random(ms_resources *set, int side, int idx) {
  ms_error *err = NULL;
  char item[32];
  ms_disk_info vol = {.persistence_id = NULL, .container_path = "data"};
  ms_disk_info mount = {.source = MS_DISK_SOURCE_MOUNT, .root = "/mnt/a"};
  char id[32];
  ms_resource_spec s = {.type = MS_VALUE_SCALAR, .scalar = (ms_scalar)rnd(100000) + 1};
  uint32_t depth = rnd(4);
  if (depth)
    s.reservations = stacks[depth - 1], s.nreservations = depth;
  switch (rnd(9)) {
  case 0:
    s.name = "cpus";
    s.revocable = rnd(3) == 0;
    break;
  case 1:
    s.name = "mem";
    break;
  case 2:
    s.name = "gpus";
    s.provider_id = rnd(2) ? "rp1" : NULL;
    break;
  case 3:
    s.name = "ports";
    s.type = MS_VALUE_RANGES;
    for (int k = 0, n = (int)rnd(4) + 1; k < n; k++) {
      uint64_t b = (uint64_t)(rnd(500) * 2 + (unsigned)side) * 10;
      ms_ranges_push(&s.ranges, b, b + rnd(9), "t", NULL);
    }
    break;
  case 4:
    s.name = "zones";
    s.type = MS_VALUE_SET;
    snprintf(item, sizeof(item), "%c%d-%u", side ? 'b' : 'a', idx, rnd(1000));
    ms_set_push(&s.set, item, strlen(item), "t", NULL);
    break;
  case 5:
    s.name = "disk";
    break;
  case 6: /* persistent volume, sometimes shared */
    s.name = "disk";
    if (!depth)
      s.reservations = stacks[0], s.nreservations = 1;
    snprintf(id, sizeof(id), "v%d-%d-%u", side, idx, rnd(1000));
    vol.persistence_id = id;
    s.disk = &vol;
    s.shared = rnd(2);
    break;
  case 7:
    s.name = "disk";
    s.disk = &mount;
    s.scalar = (ms_scalar)(rnd(3) + 1) * 1000; /* equal MOUNTs get counted */
    break;
  default:
    s.name = "custom.thing";
    break;
  }
  MS_ASSERT_OK(ms_resources_add_spec(set, &s, &err), &err);
  ms_ranges_release(&s.ranges);
  ms_set_release(&s.set);
}

static ms_resources *random_set(int side) {
  ms_resources *s = ms_resources_new();
  for (int i = 0, n = (int)rnd(16); i < n; i++)
    add_random(s, side, i);
  return s;
}

/* Every printed form parses back to the same set. */
static void check_round_trips(const ms_resources *a) {
  ms_error *err = NULL;
  ms_resources *back = NULL;
  char *text = ms_resources_format_text(a);
  MS_ASSERT_OK(ms_resources_parse_text(text, NULL, &back, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(a, back));
  ms_resources_free(back);
  free(text);
  char *json = ms_resources_to_json(a);
  MS_ASSERT_OK(ms_resources_from_json(json, strlen(json), &back, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(a, back));
  ms_resources_free(back);
  free(json);
  Meseta__V1__Resources *msg = ms_resources_to_proto(a);
  size_t len = protobuf_c_message_get_packed_size(&msg->base);
  uint8_t *buf = ms_xmalloc(len + 1);
  protobuf_c_message_pack(&msg->base, buf);
  Meseta__V1__Resources *in = meseta__v1__resources__unpack(NULL, len, buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(in);
  MS_ASSERT_OK(ms_resources_from_proto_msg(in, &back, &err), &err);
  CU_ASSERT_TRUE(ms_resources_equal(a, back));
  ms_resources_free(back);
  meseta__v1__resources__free_unpacked(in, NULL);
  ms_resources_proto_free(msg);
  free(buf);
}

static void test_properties(void) {
  ms_error *err = NULL;
  for (int iter = 0; iter < 400; iter++) {
    ms_resources *a = random_set(0), *b = random_set(1);
    ms_resources *ab = ms_resources_clone(a), *ba = ms_resources_clone(b);
    MS_ASSERT_OK(ms_resources_add(ab, b, &err), &err);
    MS_ASSERT_OK(ms_resources_add(ba, a, &err), &err);
    CU_ASSERT_TRUE(ms_resources_equal(ab, ba)); /* order independence */
    check_round_trips(ab);
    CU_ASSERT_TRUE(ms_resources_contains(ab, a));
    CU_ASSERT_TRUE(ms_resources_contains(ab, b));
    MS_ASSERT_OK(ms_resources_subtract(ab, b, &err), &err);
    CU_ASSERT_TRUE(ms_resources_equal(ab, a)); /* (a + b) - b == a */
    MS_ASSERT_OK(ms_resources_subtract(ab, a, &err), &err);
    CU_ASSERT_TRUE(ms_resources_is_empty(ab));
    /* A set with itself: a + a contains a; a - a is empty. */
    ms_resources *self = ms_resources_clone(a);
    MS_ASSERT_OK(ms_resources_add(self, self, &err), &err);
    CU_ASSERT_TRUE(ms_resources_contains(self, a));
    MS_ASSERT_OK(ms_resources_subtract(self, self, &err), &err);
    CU_ASSERT_TRUE(ms_resources_is_empty(self));
    ms_resources_free(self);
    /* Entry by entry, in reverse order, gives the same set. */
    ms_resources *rev = ms_resources_new();
    for (size_t i = ms_resources_size(a); i-- > 0;) {
      ms_resource_spec spec;
      const ms_resource *e = ms_resources_at(a, i);
      ms_resource_spec_of(e, &spec);
      for (uint32_t c = 0; c < e->count; c++)
        MS_ASSERT_OK(ms_resources_add_spec(rev, &spec, &err), &err);
    }
    CU_ASSERT_TRUE(ms_resources_equal(rev, a));
    /* Push then pop a refinement below every role in use gives the set back. */
    ms_resources *fit = ms_resources_allocatable_to(a, "eng/web/fe");
    ms_resources *deep = ms_resources_clone(fit);
    ms_reservation leaf = {.type = MS_RESERVATION_DYNAMIC, .role = "eng/web/fe/leaf"};
    MS_ASSERT_OK(ms_resources_push_reservation(deep, &leaf, &err), &err);
    CU_ASSERT_EQUAL(ms_resources_size(deep), ms_resources_size(fit));
    if (ms_resources_size(fit))
      CU_ASSERT_FALSE(ms_resources_equal(deep, fit));
    MS_ASSERT_OK(ms_resources_pop_reservation(deep, &err), &err);
    CU_ASSERT_TRUE(ms_resources_equal(deep, fit));
    ms_resources *all[] = {a, b, ab, ba, rev, fit, deep};
    for (size_t i = 0; i < MS_ARRAY_SIZE(all); i++)
      ms_resources_free(all[i]);
  }
}

/* Issue 14: a client's input cannot fill the global name table. 70,000 distinct
 * unknown names parsed as untrusted are each refused naming the name, and afterwards
 * trusted input still interns and untrusted input still finds what was interned. */
static void test_backpressure_untrusted_names(void) {
  ms_error *err = NULL;
  ms_resources *r = T("known-gadgets:2"); /* trusted: interned */
  ms_resources_free(r);
  bool was = ms_names_untrusted(true);
  CU_ASSERT_FALSE(was);
  for (int i = 0; i < 70000; i++) {
    char text[64], name[32];
    snprintf(name, sizeof(name), "bogus-%d", i);
    snprintf(text, sizeof(text), "%s:1", name);
    r = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_resources_parse_text(text, NULL, &r, &err), MS_ERR);
    CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, name));
    if (i == 0)
      printf("  untrusted unknown name: %s\n", err->msg);
    ms_error_free(TAKE_PTR(err));
    ms_name id;
    CU_ASSERT_FALSE(ms_name_lookup(name, &id));
  }
  MS_ASSERT_OK(ms_resources_parse_text("cpus:1;known-gadgets:1", NULL, &r, &err), &err);
  ms_resources_free(r);
  ms_names_untrusted(false);
  r = T("another-gadget:1"); /* the table is not full */
  ms_resources_free(r);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"parse_and_query", test_parse_and_query},
      {"add_combines_same_key_only", test_add_combines_same_key_only},
      {"subtract", test_subtract},
      {"contains_values", test_contains_values},
      {"revocable_never_merges", test_revocable_never_merges},
      {"shared_counted", test_shared_counted},
      {"atomic_disks", test_atomic_disks},
      {"validation", test_validation},
      {"overflow_refused", test_overflow_refused},
      {"filters", test_filters},
      {"push_pop", test_push_pop},
      {"quantities", test_quantities},
      {"properties", test_properties},
      {"backpressure_untrusted_names", test_backpressure_untrusted_names},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "resources", cases);
}
