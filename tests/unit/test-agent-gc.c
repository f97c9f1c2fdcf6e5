/* Garbage collection of ended tasks' directories (services/agent/agent-gc.c) on a real
 * tree: old sandboxes and container directories of tasks the agent no longer holds go,
 * held or recent ones stay, a link out of a sandbox is not followed (its target stays), and
 * a framework's directory goes with its last sandbox. Ages come from mtimes set by the
 * test, so nothing waits. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "agent-internal.h"
#include "testlib.h"

#define HOUR 3600

static char *work;
static int64_t now_s;

static char *path_of(const char *rel) {
  return ms_xasprintf("%s/%s", work, rel);
}

static void mkdirs(const char *rel) {
  _cleanup_free_ char *cmd = ms_xasprintf("mkdir -p '%s/%s'", work, rel);
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
}

static void put(const char *rel, const char *text) {
  _cleanup_free_ char *p = path_of(rel);
  FILE *f = fopen(p, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
}

/* Sets a directory's mtime `age` seconds before now. */
static void age(const char *rel, int64_t age_s) {
  _cleanup_free_ char *p = path_of(rel);
  struct timespec ts[2] = {{now_s - age_s, 0}, {now_s - age_s, 0}};
  CU_ASSERT_EQUAL_FATAL(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static bool exists(const char *rel) {
  _cleanup_free_ char *p = path_of(rel);
  struct stat st;
  return lstat(p, &st) == 0;
}

/* Held: task fw-a/held and container c-00000000000000aa. */
static bool live(void *ctx, const char *fw, const char *task, const char *container) {
  (void)ctx;
  if (container)
    return strcmp(container, "c-00000000000000aa") == 0;
  return strcmp(fw, "fw-a") == 0 && strcmp(task, "held") == 0;
}

static void test_sweep(void) {
  mkdirs("sandboxes/fw-a/done-old");
  put("sandboxes/fw-a/done-old/stdout", "bye\n");
  mkdirs("sandboxes/fw-a/done-recent");
  mkdirs("sandboxes/fw-a/held");
  mkdirs("sandboxes/fw-b/only");
  mkdirs("containers/c-00000000000000aa");
  mkdirs("containers/c-00000000000000bb");
  put("containers/c-00000000000000bb/status.json", "{}\n");
  mkdirs("containers/c-00000000000000cc");
  /* A task left a link to a directory outside: what it points to must survive. */
  mkdirs("outside");
  put("outside/precious", "keep me\n");
  _cleanup_free_ char *target = path_of("outside");
  _cleanup_free_ char *link = path_of("sandboxes/fw-a/done-old/escape");
  CU_ASSERT_EQUAL_FATAL(symlink(target, link), 0);

  age("sandboxes/fw-a/done-old", 2 * HOUR);
  age("sandboxes/fw-a/held", 2 * HOUR);
  age("sandboxes/fw-b/only", 2 * HOUR);
  age("containers/c-00000000000000aa", 2 * HOUR);
  age("containers/c-00000000000000bb", 2 * HOUR);
  /* done-recent and c-...cc: just made */

  agent_gc_stats s;
  CU_ASSERT_EQUAL(agent_gc_sweep(work, HOUR * 1000, now_s, live, NULL, &s), 0);
  CU_ASSERT_EQUAL(s.sandboxes, 2);  /* fw-a/done-old, fw-b/only */
  CU_ASSERT_EQUAL(s.containers, 1); /* c-...bb */
  CU_ASSERT(s.bytes >= 4);
  CU_ASSERT_FALSE(exists("sandboxes/fw-a/done-old"));
  CU_ASSERT_FALSE(exists("sandboxes/fw-b")); /* with its last sandbox */
  CU_ASSERT_FALSE(exists("containers/c-00000000000000bb"));
  CU_ASSERT_TRUE(exists("sandboxes/fw-a/done-recent"));
  CU_ASSERT_TRUE(exists("sandboxes/fw-a/held"));
  CU_ASSERT_TRUE(exists("containers/c-00000000000000aa"));
  CU_ASSERT_TRUE(exists("containers/c-00000000000000cc"));
  CU_ASSERT_TRUE(exists("outside/precious"));

  /* Nothing old enough is left: a second sweep removes nothing. */
  CU_ASSERT_EQUAL(agent_gc_sweep(work, HOUR * 1000, now_s, live, NULL, &s), 0);
  CU_ASSERT_EQUAL(s.sandboxes + s.containers, 0);
}

int main(int argc, char **argv) {
  work = ms_test_tmpdir("test-agent-gc");
  now_s = (int64_t)time(NULL);
  static const ms_test_case cases[] = {
      {"sweep", test_sweep},
      {NULL, NULL},
  };
  int rc = ms_test_main(argc, argv, "agent-gc", cases);
  if (rc == 0)
    ms_test_rmtree(work);
  free(work);
  return rc;
}
