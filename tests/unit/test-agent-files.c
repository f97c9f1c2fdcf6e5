/* Sandbox files (services/agent/agent-files.c) against a real directory tree: reads with
 * offsets, lengths and eof, listings with pages, and every way out of the sandbox refused
 * (`..`, absolute paths, symbolic links to a sibling sandbox, to /etc/passwd, to /etc)
 * while links that stay inside work; no file descriptor is left open by any of it. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "agent-files.h"
#include "testlib.h"

#define FW "fw-1"
#define TASK "task-1"
#define BIG_SIZE (200 * 1024)

static char *work;

static void write_file(const char *rel, const char *data, size_t len) {
  _cleanup_free_ char *p = ms_xasprintf("%s/%s", work, rel);
  FILE *f = fopen(p, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
  fclose(f);
}

static void mkdir_rel(const char *rel) {
  _cleanup_free_ char *p = ms_xasprintf("%s/%s", work, rel);
  CU_ASSERT_EQUAL_FATAL(mkdir(p, 0755), 0);
}

static void symlink_rel(const char *target, const char *rel) {
  _cleanup_free_ char *p = ms_xasprintf("%s/%s", work, rel);
  CU_ASSERT_EQUAL_FATAL(symlink(target, p), 0);
}

static void cleanup(void) {
  if (work && !getenv("MESETA_KEEP_TEST_DIR"))
    ms_test_rmtree(work);
  free(work);
}

/* <work>/sandboxes/fw-1/{task-1,other,evil -> /etc}; task-1 holds the files the cases read. */
static void setup(void) {
  if (work)
    return;
  work = ms_test_tmpdir("agent-files");
  atexit(cleanup);
  mkdir_rel("sandboxes");
  mkdir_rel("sandboxes/" FW);
  mkdir_rel("sandboxes/" FW "/" TASK);
  mkdir_rel("sandboxes/" FW "/other");
  write_file("sandboxes/" FW "/other/secret", "secret", 6);
  symlink_rel("/etc", "sandboxes/" FW "/evil");

#define S "sandboxes/" FW "/" TASK "/"
  write_file(S "stdout", "hello world\n", 12);
  _cleanup_free_ char *p = ms_xasprintf("%s/" S "stdout", work);
  CU_ASSERT_EQUAL(chmod(p, 0640), 0);
  char *big = ms_xmalloc(BIG_SIZE);
  for (size_t i = 0; i < BIG_SIZE; i++)
    big[i] = (char)('a' + i % 26);
  write_file(S "big", big, BIG_SIZE);
  free(big);
  mkdir_rel(S "sub");
  write_file(S "sub/inner.txt", "inner", 5);
  mkdir_rel(S "many");
  for (int i = 0; i < 25; i++) {
    char name[64];
    snprintf(name, sizeof(name), S "many/f%02d", i);
    write_file(name, "x", 1);
  }
  write_file(S "bad\xff", "?", 1);
  symlink_rel("stdout", S "link-in");
  symlink_rel("sub", S "link-in-dir");
  symlink_rel("../other/secret", S "link-sibling");
  symlink_rel("/etc/passwd", S "link-abs");
  symlink_rel("/etc", S "link-dir-out");
  symlink_rel("loop-b", S "loop-a");
  symlink_rel("loop-a", S "loop-b");
  _cleanup_free_ char *fifo = ms_xasprintf("%s/" S "fifo", work);
  CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0644), 0);
#undef S
}

/* ---- calls ---- */

static int do_read(const char *fw, const char *task, const char *path, int64_t off, int64_t len,
                   Meseta__V1__ReadFileResponse **ret, ms_error **err) {
  Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  f.value = (char *)fw;
  t.value = (char *)task;
  Meseta__V1__ReadFileRequest req = MESETA__V1__READ_FILE_REQUEST__INIT;
  req.framework_id = fw ? &f : NULL;
  req.task_id = task ? &t : NULL;
  req.path = (char *)path;
  req.offset = off;
  req.length = len;
  return agent_files_read(work, &req, ret, err);
}

static int do_list(const char *fw, const char *task, const char *path, uint32_t page, const char *token,
                   Meseta__V1__ListFilesResponse **ret, ms_error **err) {
  Meseta__V1__FrameworkID f = MESETA__V1__FRAMEWORK_ID__INIT;
  Meseta__V1__TaskID t = MESETA__V1__TASK_ID__INIT;
  f.value = (char *)fw;
  t.value = (char *)task;
  Meseta__V1__ListFilesRequest req = MESETA__V1__LIST_FILES_REQUEST__INIT;
  req.framework_id = fw ? &f : NULL;
  req.task_id = task ? &t : NULL;
  req.path = (char *)path;
  req.page_size = page;
  req.page_token = (char *)(token ? token : "");
  return agent_files_list(work, &req, ret, err);
}

static Meseta__V1__ReadFileResponse *read_ok(const char *path, int64_t off, int64_t len) {
  Meseta__V1__ReadFileResponse *r = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(do_read(FW, TASK, path, off, len, &r, &err), &err);
  return r;
}

static Meseta__V1__ListFilesResponse *list_ok(const char *path, uint32_t page, const char *token) {
  Meseta__V1__ListFilesResponse *r = NULL;
  ms_error *err = NULL;
  MS_ASSERT_OK(do_list(FW, TASK, path, page, token, &r, &err), &err);
  return r;
}

static void expect_error(int rc, void *resp, ms_error *err, ms_status code, const char *needle) {
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NULL(resp); /* nothing of the file comes back */
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  if (err->code != code || !strstr(err->msg, needle))
    fprintf(stderr, "got %s `%s`, expected %s with `%s`\n", ms_status_name(err->code), err->msg,
            ms_status_name(code), needle);
  CU_ASSERT_EQUAL(err->code, code);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, needle));
  ms_error_free(err);
}

static void read_fails(const char *fw, const char *task, const char *path, int64_t off, int64_t len,
                       ms_status code, const char *needle) {
  Meseta__V1__ReadFileResponse *r = NULL;
  ms_error *err = NULL;
  int rc = do_read(fw, task, path, off, len, &r, &err);
  expect_error(rc, r, err, code, needle);
}

static void list_fails(const char *fw, const char *task, const char *path, uint32_t page, const char *token,
                       ms_status code, const char *needle) {
  Meseta__V1__ListFilesResponse *r = NULL;
  ms_error *err = NULL;
  int rc = do_list(fw, task, path, page, token, &r, &err);
  expect_error(rc, r, err, code, needle);
}

static void free_msg(void *m) {
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

static bool data_is(const Meseta__V1__ReadFileResponse *r, const char *s) {
  return r->data.len == strlen(s) && (r->data.len == 0 || !memcmp(r->data.data, s, r->data.len));
}

/* ---- cases ---- */

static void test_read(void) {
  setup();
  Meseta__V1__ReadFileResponse *r = read_ok("stdout", 0, 0);
  CU_ASSERT_TRUE(data_is(r, "hello world\n"));
  CU_ASSERT_EQUAL(r->offset, 0);
  CU_ASSERT_EQUAL(r->size, 12);
  CU_ASSERT_TRUE(r->eof);
  free_msg(r);
  r = read_ok("sub/inner.txt", 0, 0);
  CU_ASSERT_TRUE(data_is(r, "inner"));
  free_msg(r);
}

static void test_offsets_and_eof(void) {
  setup();
  Meseta__V1__ReadFileResponse *r = read_ok("stdout", 6, 5);
  CU_ASSERT_TRUE(data_is(r, "world"));
  CU_ASSERT_EQUAL(r->offset, 6);
  CU_ASSERT_EQUAL(r->size, 12);
  CU_ASSERT_FALSE(r->eof);
  free_msg(r);
  r = read_ok("stdout", 6, 6); /* exactly to the end */
  CU_ASSERT_TRUE(data_is(r, "world\n"));
  CU_ASSERT_TRUE(r->eof);
  free_msg(r);
  r = read_ok("stdout", 6, 100);
  CU_ASSERT_TRUE(data_is(r, "world\n"));
  CU_ASSERT_TRUE(r->eof);
  free_msg(r);
  r = read_ok("stdout", 12, 0); /* a poller caught up */
  CU_ASSERT_TRUE(data_is(r, ""));
  CU_ASSERT_TRUE(r->eof);
  CU_ASSERT_EQUAL(r->size, 12);
  free_msg(r);
  r = read_ok("stdout", 1000, 0); /* past the end (truncated file): empty, size tells */
  CU_ASSERT_TRUE(data_is(r, ""));
  CU_ASSERT_TRUE(r->eof);
  CU_ASSERT_EQUAL(r->size, 12);
  free_msg(r);

  /* Following a growing file: the next read starts where the last ended. */
  _cleanup_free_ char *p = ms_xasprintf("%s/sandboxes/" FW "/" TASK "/grow", work);
  FILE *f = fopen(p, "we");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs("one\n", f);
  fflush(f);
  r = read_ok("grow", 0, 0);
  CU_ASSERT_TRUE(data_is(r, "one\n") && r->eof);
  int64_t next = r->offset + (int64_t)r->data.len;
  free_msg(r);
  fputs("two\n", f);
  fclose(f);
  r = read_ok("grow", next, 0);
  CU_ASSERT_TRUE(data_is(r, "two\n") && r->eof);
  CU_ASSERT_EQUAL(r->size, 8);
  free_msg(r);
}

static void test_bounded_length(void) {
  setup();
  Meseta__V1__ReadFileResponse *r = read_ok("big", 0, 0);
  CU_ASSERT_EQUAL(r->data.len, AGENT_FILES_DEFAULT_READ);
  CU_ASSERT_EQUAL(r->size, BIG_SIZE);
  CU_ASSERT_FALSE(r->eof);
  free_msg(r);
  r = read_ok("big", 1000, AGENT_FILES_MAX_READ);
  CU_ASSERT_EQUAL(r->data.len, BIG_SIZE - 1000);
  CU_ASSERT_EQUAL(r->data.data[0], 'a' + 1000 % 26);
  CU_ASSERT_TRUE(r->eof);
  free_msg(r);
  read_fails(FW, TASK, "big", 0, AGENT_FILES_MAX_READ + 1, MS_INVALID_ARGUMENT, "`length`");
  read_fails(FW, TASK, "big", 0, -1, MS_INVALID_ARGUMENT, "`length`");
  read_fails(FW, TASK, "big", -1, 0, MS_INVALID_ARGUMENT, "`offset`");
}

static const Meseta__V1__FileEntry *find(const Meseta__V1__ListFilesResponse *r, const char *name) {
  for (size_t i = 0; i < r->n_entries; i++)
    if (!strcmp(r->entries[i]->name, name))
      return r->entries[i];
  return NULL;
}

static void test_list(void) {
  setup();
  Meseta__V1__ListFilesResponse *r = list_ok("", 0, NULL);
  CU_ASSERT_STRING_EQUAL(r->next_page_token, "");
  for (size_t i = 1; i < r->n_entries; i++)
    CU_ASSERT_TRUE(strcmp(r->entries[i - 1]->name, r->entries[i]->name) < 0);
  CU_ASSERT_PTR_NULL(find(r, "."));
  CU_ASSERT_PTR_NULL(find(r, ".."));
  const Meseta__V1__FileEntry *e = find(r, "stdout");
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  CU_ASSERT_EQUAL(e->type, MESETA__V1__FILE_ENTRY__TYPE__FILE);
  CU_ASSERT_EQUAL(e->size, 12);
  CU_ASSERT_EQUAL(e->mode, 0640);
  CU_ASSERT_EQUAL(e->uid, getuid());
  CU_ASSERT_TRUE(e->mtime && e->mtime->seconds > 0);
  CU_ASSERT_EQUAL(e->raw_name.len, 0);
  e = find(r, "sub");
  CU_ASSERT_TRUE(e && e->type == MESETA__V1__FILE_ENTRY__TYPE__DIRECTORY);
  e = find(r, "link-abs"); /* listed as a link, not followed */
  CU_ASSERT_TRUE(e && e->type == MESETA__V1__FILE_ENTRY__TYPE__SYMLINK && e->size == strlen("/etc/passwd"));
  e = find(r, "link-dir-out");
  CU_ASSERT_TRUE(e && e->type == MESETA__V1__FILE_ENTRY__TYPE__SYMLINK);
  e = find(r, "fifo");
  CU_ASSERT_TRUE(e && e->type == MESETA__V1__FILE_ENTRY__TYPE__OTHER);
  /* A name that is not UTF-8: U+FFFD in name, the exact bytes in raw_name. */
  e = find(r, "bad\xef\xbf\xbd");
  CU_ASSERT_PTR_NOT_NULL_FATAL(e);
  CU_ASSERT_TRUE(e->raw_name.len == 4 && !memcmp(e->raw_name.data, "bad\xff", 4));
  free_msg(r);

  r = list_ok("sub", 0, NULL);
  CU_ASSERT_EQUAL(r->n_entries, 1);
  CU_ASSERT_TRUE(r->n_entries == 1 && !strcmp(r->entries[0]->name, "inner.txt"));
  free_msg(r);
}

static void test_pages(void) {
  setup();
  char *token = NULL;
  int seen = 0, pages = 0;
  do {
    Meseta__V1__ListFilesResponse *r = list_ok("many", 10, token);
    free(token);
    token = NULL;
    pages++;
    for (size_t i = 0; i < r->n_entries; i++, seen++) {
      char want[16];
      snprintf(want, sizeof(want), "f%02d", seen);
      CU_ASSERT_STRING_EQUAL(r->entries[i]->name, want);
    }
    CU_ASSERT_EQUAL(r->n_entries, pages < 3 ? 10 : 5);
    if (*r->next_page_token)
      token = ms_xstrdup(r->next_page_token);
    free_msg(r);
  } while (token && pages < 10);
  CU_ASSERT_EQUAL(pages, 3);
  CU_ASSERT_EQUAL(seen, 25);
  list_fails(FW, TASK, "many", AGENT_FILES_MAX_PAGE + 1, NULL, MS_INVALID_ARGUMENT, "`page_size`");
  list_fails(FW, TASK, "many", 0, "zz", MS_INVALID_ARGUMENT, "`page_token`");
  list_fails(FW, TASK, "many", 0, "666", MS_INVALID_ARGUMENT, "`page_token`");
  list_fails(FW, TASK, "many", 0, "00", MS_INVALID_ARGUMENT, "`page_token`");
}

/* 4000 names of 255 bytes that are not UTF-8 would make a 3 MiB+ answer: the page ends
 * before that, and the next one carries on. */
static void test_page_bytes_bound(void) {
  setup();
  mkdir_rel("sandboxes/" FW "/" TASK "/long");
  char name[NAME_MAX + 1];
  memset(name, 0xff, NAME_MAX - 4);
  for (int i = 0; i < 4000; i++) {
    snprintf(name + NAME_MAX - 4, 5, "%04d", i);
    _cleanup_free_ char *p = ms_xasprintf("%s/sandboxes/" FW "/" TASK "/long/%s", work, name);
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
  }
  Meseta__V1__ListFilesResponse *r = list_ok("long", AGENT_FILES_MAX_PAGE, NULL);
  size_t first = r->n_entries;
  CU_ASSERT_TRUE(first > 0 && first < 4000);
  CU_ASSERT_TRUE(protobuf_c_message_get_packed_size(&r->base) < 4 * 1024 * 1024);
  CU_ASSERT_EQUAL(r->entries[first - 1]->raw_name.len, NAME_MAX);
  CU_ASSERT_STRING_NOT_EQUAL_FATAL(r->next_page_token, "");
  _cleanup_free_ char *token = ms_xstrdup(r->next_page_token);
  free_msg(r);
  r = list_ok("long", AGENT_FILES_MAX_PAGE, token);
  CU_ASSERT_EQUAL(first + r->n_entries, 4000);
  CU_ASSERT_STRING_EQUAL(r->next_page_token, "");
  free_msg(r);
  _cleanup_free_ char *cmd = ms_xasprintf("rm -rf '%s/sandboxes/" FW "/" TASK "/long'", work);
  CU_ASSERT_EQUAL(system(cmd), 0);
}

static void test_escapes_refused(void) {
  setup();
  read_fails(FW, TASK, "../other/secret", 0, 0, MS_PERMISSION_DENIED, "`path` `../other/secret`");
  read_fails(FW, TASK, "sub/../../other/secret", 0, 0, MS_PERMISSION_DENIED, "`path`");
  read_fails(FW, TASK, "../../../../../../../../etc/passwd", 0, 0, MS_PERMISSION_DENIED,
             "outside the sandbox");
  read_fails(FW, TASK, "/etc/passwd", 0, 0, MS_INVALID_ARGUMENT, "`path` `/etc/passwd` is absolute");
  read_fails(FW, TASK, "link-abs", 0, 0, MS_PERMISSION_DENIED, "`path` `link-abs` leads outside");
  read_fails(FW, TASK, "link-sibling", 0, 0, MS_PERMISSION_DENIED, "`path` `link-sibling`");
  read_fails(FW, TASK, "link-dir-out/passwd", 0, 0, MS_PERMISSION_DENIED, "`path` `link-dir-out/passwd`");
  list_fails(FW, TASK, "link-dir-out", 0, NULL, MS_PERMISSION_DENIED, "`path` `link-dir-out`");
  list_fails(FW, TASK, "..", 0, NULL, MS_PERMISSION_DENIED, "`path` `..`");
  list_fails(FW, TASK, "sub/../..", 0, NULL, MS_PERMISSION_DENIED, "`path`");
  list_fails(FW, TASK, "/", 0, NULL, MS_INVALID_ARGUMENT, "`path` `/` is absolute");
  read_fails(FW, TASK, "loop-a", 0, 0, MS_INVALID_ARGUMENT, "`path` `loop-a`");
  /* The sandbox itself is never reached through a link. */
  read_fails(FW, "evil", "passwd", 0, 0, MS_NOT_FOUND, "task `evil`");
  list_fails(FW, "evil", "", 0, NULL, MS_NOT_FOUND, "task `evil`");
}

static void test_links_inside(void) {
  setup();
  Meseta__V1__ReadFileResponse *r = read_ok("link-in", 0, 0);
  CU_ASSERT_TRUE(data_is(r, "hello world\n"));
  free_msg(r);
  r = read_ok("link-in-dir/inner.txt", 0, 0);
  CU_ASSERT_TRUE(data_is(r, "inner"));
  free_msg(r);
  r = read_ok("sub/../stdout", 0, 5); /* `..` that stays inside */
  CU_ASSERT_TRUE(data_is(r, "hello"));
  free_msg(r);
  Meseta__V1__ListFilesResponse *l = list_ok("link-in-dir", 0, NULL);
  CU_ASSERT_TRUE(l->n_entries == 1 && !strcmp(l->entries[0]->name, "inner.txt"));
  free_msg(l);
  l = list_ok("sub/..", 0, NULL);
  CU_ASSERT_PTR_NOT_NULL(find(l, "stdout"));
  free_msg(l);
}

static void test_bad_ids(void) {
  setup();
  const char *bad[] = {"..", ".", "a/b", "", "/", "../task-1"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(bad); i++) {
    read_fails(bad[i], TASK, "stdout", 0, 0, MS_INVALID_ARGUMENT, "`framework_id`");
    read_fails(FW, bad[i], "stdout", 0, 0, MS_INVALID_ARGUMENT, "`task_id`");
    list_fails(bad[i], TASK, "", 0, NULL, MS_INVALID_ARGUMENT, "`framework_id`");
    list_fails(FW, bad[i], "", 0, NULL, MS_INVALID_ARGUMENT, "`task_id`");
  }
  read_fails(NULL, TASK, "stdout", 0, 0, MS_INVALID_ARGUMENT, "`framework_id` is required");
  list_fails(FW, NULL, "", 0, NULL, MS_INVALID_ARGUMENT, "`task_id` is required");
  char long_id[300];
  memset(long_id, 'x', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  read_fails(FW, long_id, "stdout", 0, 0, MS_INVALID_ARGUMENT, "`task_id`");
}

static void test_missing_and_wrong_type(void) {
  setup();
  read_fails(FW, TASK, "nope", 0, 0, MS_NOT_FOUND, "`path` `nope`");
  read_fails(FW, TASK, "sub/nope", 0, 0, MS_NOT_FOUND, "`path` `sub/nope`");
  read_fails(FW, TASK, "stdout/x", 0, 0, MS_NOT_FOUND, "`path` `stdout/x`");
  list_fails(FW, TASK, "nope", 0, NULL, MS_NOT_FOUND, "`path` `nope`");
  read_fails(FW, "no-such-task", "stdout", 0, 0, MS_NOT_FOUND, "task `no-such-task`");
  read_fails("no-such-fw", TASK, "stdout", 0, 0, MS_NOT_FOUND, "framework `no-such-fw`");
  read_fails(FW, TASK, "sub", 0, 0, MS_FAILED_PRECONDITION, "`path` `sub` is a directory");
  read_fails(FW, TASK, "", 0, 0, MS_FAILED_PRECONDITION, "is a directory");
  read_fails(FW, TASK, "fifo", 0, 0, MS_FAILED_PRECONDITION, "`path` `fifo` is not a regular file");
  list_fails(FW, TASK, "stdout", 0, NULL, MS_FAILED_PRECONDITION, "`path` `stdout` is not a directory");
  /* A work dir without sandboxes yet. */
  char *saved = work;
  work = ms_test_tmpdir("agent-files-empty");
  read_fails(FW, TASK, "stdout", 0, 0, MS_NOT_FOUND, "no sandbox");
  ms_test_rmtree(work);
  free(work);
  work = saved;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int n = 0;
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

/* Every success and every failure path above, then the same number of descriptors. */
static void test_no_fd_leak(void) {
  setup();
  int before = count_fds();
  for (int round = 0; round < 3; round++) {
    test_read();
    test_offsets_and_eof();
    test_bounded_length();
    test_list();
    test_pages();
    test_escapes_refused();
    test_links_inside();
    test_bad_ids();
    test_missing_and_wrong_type();
  }
  CU_ASSERT_EQUAL(count_fds(), before);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"read", test_read},
      {"offsets_and_eof", test_offsets_and_eof},
      {"bounded_length", test_bounded_length},
      {"list", test_list},
      {"pages", test_pages},
      {"page_bytes_bound", test_page_bytes_bound},
      {"escapes_refused", test_escapes_refused},
      {"links_inside", test_links_inside},
      {"bad_ids", test_bad_ids},
      {"missing_and_wrong_type", test_missing_and_wrong_type},
      {"no_fd_leak", test_no_fd_leak},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "agent-files", cases);
}
