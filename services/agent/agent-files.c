/* Sandbox files: AgentOperator.ListFiles / ReadFile, resolved beneath the sandbox by the
 * kernel (see agent-files.h). */
#include "agent-files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/hex.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/values.h"
#include "meseta/workq.h"

#define QUOTE_MAX 256

/* ---- addressing a sandbox ---- */

/* A framework or task id names one directory: non-empty, no '/', not "." or "..". (An
 * embedded NUL ends the C string protobuf-c gives us, so it cannot reach the kernel.) */
static int check_id(const char *field, const char *id, ms_error **err) {
  char q[QUOTE_MAX];
  if (!id || !*id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is required", field);
  if (strchr(id, '/') || !strcmp(id, ".") || !strcmp(id, ".."))
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` `%s` is not a single path component", field,
                        ms_value_quote(id, q, sizeof(q)));
  if (strlen(id) > NAME_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` is longer than %d bytes", field, NAME_MAX);
  return 0;
}

static int check_path(const char *path, ms_error **err) {
  char q[QUOTE_MAX];
  if (strlen(path) >= PATH_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`path` is longer than %d bytes", PATH_MAX - 1);
  if (path[0] == '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "`path` `%s` is absolute: paths are relative to the sandbox",
                        ms_value_quote(path, q, sizeof(q)));
  return 0;
}

/* An O_PATH descriptor from openat2 beneath dirfd (glibc 2.36 has no wrapper). O_PATH
 * opens nothing: a fifo does not block, a device sees no open. EAGAIN: a rename raced the
 * lookup; try again. */
static int open_beneath(int dirfd, const char *path, uint64_t flags, uint64_t resolve) {
  struct open_how how = {.flags = O_PATH | O_CLOEXEC | flags, .resolve = resolve};
  for (int tries = 0;; tries++) {
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0 || (errno != EAGAIN && errno != EINTR) || tries >= 16)
      return fd;
  }
}

/* An O_PATH descriptor of the sandbox directory. */
static int open_sandbox(const char *work_dir, const Meseta__V1__FrameworkID *fw,
                        const Meseta__V1__TaskID *task, ms_error **err) {
  const char *fid = fw ? fw->value : NULL, *tid = task ? task->value : NULL;
  if (check_id("framework_id", fid, err) < 0 || check_id("task_id", tid, err) < 0)
    return MS_ERR;
  _cleanup_free_ char *root = ms_xasprintf("%s/sandboxes", work_dir);
  _cleanup_free_ char *rel = ms_xasprintf("%s/%s", fid, tid);
  _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  int fd = rootfd < 0 ? -1 : open_beneath(rootfd, rel, O_DIRECTORY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
  if (fd >= 0)
    return fd;
  int e = errno;
  char qf[QUOTE_MAX], qt[QUOTE_MAX];
  ms_value_quote(fid, qf, sizeof(qf));
  ms_value_quote(tid, qt, sizeof(qt));
  if (e == ENOSYS)
    return ms_error_set(err, MS_UNIMPLEMENTED, "sandbox files need openat2 (Linux 5.6 or later)");
  /* Not there, or not a directory the agent made (a file, a symbolic link). */
  if (e == ENOENT || e == ENOTDIR || e == ELOOP || e == EXDEV)
    return ms_error_set(err, MS_NOT_FOUND, "no sandbox for task `%s` of framework `%s`", qt, qf);
  return ms_error_set_errno(err, e, "sandbox of task `%s` of framework `%s`", qt, qf);
}

/* An O_PATH descriptor of `path` beneath the sandbox (symbolic links followed while they
 * stay inside), and its stat. */
static int open_path(int sandbox, const char *path, struct stat *ret_st, ms_error **err) {
  if (check_path(path, err) < 0)
    return MS_ERR;
  char q[QUOTE_MAX];
  ms_value_quote(path, q, sizeof(q));
  _cleanup_close_ int fd =
      open_beneath(sandbox, *path ? path : ".", 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
  if (fd < 0) {
    switch (errno) {
    case EXDEV:
      return ms_error_set(err, MS_PERMISSION_DENIED, "`path` `%s` leads outside the sandbox", q);
    case ENOENT:
      return ms_error_set(err, MS_NOT_FOUND, "`path` `%s`: no such file or directory in the sandbox", q);
    case ENOTDIR:
      return ms_error_set(err, MS_NOT_FOUND, "`path` `%s`: a component is not a directory", q);
    case ELOOP:
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`path` `%s`: too many levels of symbolic links", q);
    case ENAMETOOLONG:
      return ms_error_set(err, MS_INVALID_ARGUMENT, "`path` `%s`: a name is too long", q);
    case EACCES:
    case EPERM:
      return ms_error_set(err, MS_PERMISSION_DENIED, "`path` `%s`: permission denied", q);
    case ENOSYS:
      return ms_error_set(err, MS_UNIMPLEMENTED, "sandbox files need openat2 (Linux 5.6 or later)");
    default:
      return ms_error_set_errno(err, errno, "`path` `%s`", q);
    }
  }
  if (fstat(fd, ret_st) < 0)
    return ms_error_set_errno(err, errno, "`path` `%s`: stat", q);
  return TAKE_FD(fd);
}

/* ---- ListFiles ---- */

/* The page: the smallest names past the token, at most cap of them, in a max-heap (so
 * memory stays bounded however large the directory). */
typedef struct name_heap {
  char **v;
  size_t n, cap;
} name_heap;

static void heap_swap(name_heap *h, size_t i, size_t j) {
  char *t = h->v[i];
  h->v[i] = h->v[j];
  h->v[j] = t;
}

static void heap_down(name_heap *h, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < h->n && strcmp(h->v[l], h->v[m]) > 0)
      m = l;
    if (r < h->n && strcmp(h->v[r], h->v[m]) > 0)
      m = r;
    if (m == i)
      return;
    heap_swap(h, i, m);
    i = m;
  }
}

static void heap_offer(name_heap *h, const char *name) {
  if (h->n < h->cap) {
    size_t i = h->n++;
    h->v[i] = ms_xstrdup(name);
    while (i > 0 && strcmp(h->v[(i - 1) / 2], h->v[i]) < 0) {
      heap_swap(h, i, (i - 1) / 2);
      i = (i - 1) / 2;
    }
  } else if (strcmp(name, h->v[0]) < 0) {
    free(h->v[0]);
    h->v[0] = ms_xstrdup(name);
    heap_down(h, 0);
  }
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *hex_encode(const char *s) {
  size_t len = strlen(s);
  return ms_hex_encode(s, len, ms_xmalloc(2 * len + 1));
}

/* The page token is the last name returned, in hex (so it is UTF-8 whatever the name). */
static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

static int decode_token(const char *token, char **ret_after, ms_error **err) {
  size_t len = strlen(token);
  _cleanup_free_ char *out = ms_xmalloc(len / 2 + 1);
  bool ok = len % 2 == 0 && len <= 2 * NAME_MAX;
  for (size_t i = 0; ok && i < len / 2; i++) {
    int hi = hex_digit(token[2 * i]), lo = hex_digit(token[2 * i + 1]);
    ok = hi >= 0 && lo >= 0 && (hi || lo);
    out[i] = (char)(hi * 16 + lo);
  }
  if (!ok)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`page_token` is not one that ListFiles answered");
  out[len / 2] = '\0';
  *ret_after = TAKE_PTR(out);
  return 0;
}

/* `name` as UTF-8 (each byte of an invalid sequence as U+FFFD), or NULL if it already is. */
static char *utf8_name(const char *s) {
  size_t len = strlen(s);
  if (ms_utf8_valid(s, len))
    return NULL;
  char *out = ms_xmalloc(3 * len + 1);
  size_t j = 0;
  for (size_t i = 0; i < len;) {
    size_t k = 1;
    while (k <= 4 && i + k <= len && !ms_utf8_valid(s + i, k))
      k++;
    if (k <= 4 && i + k <= len) {
      memcpy(out + j, s + i, k);
      j += k;
      i += k;
    } else {
      memcpy(out + j, "\xef\xbf\xbd", 3);
      j += 3;
      i++;
    }
  }
  out[j] = '\0';
  return out;
}

static Meseta__V1__FileEntry *entry_new(const char *name, const struct stat *st) {
  Meseta__V1__FileEntry *e = ms_pb_new(&meseta__v1__file_entry__descriptor);
  char *fixed = utf8_name(name);
  if (fixed) {
    e->name = fixed;
    e->raw_name.len = strlen(name);
    e->raw_name.data = (uint8_t *)ms_xstrdup(name);
  } else {
    e->name = ms_xstrdup(name);
  }
  e->type = S_ISREG(st->st_mode)   ? MESETA__V1__FILE_ENTRY__TYPE__FILE
            : S_ISDIR(st->st_mode) ? MESETA__V1__FILE_ENTRY__TYPE__DIRECTORY
            : S_ISLNK(st->st_mode) ? MESETA__V1__FILE_ENTRY__TYPE__SYMLINK
                                   : MESETA__V1__FILE_ENTRY__TYPE__OTHER;
  e->size = st->st_size;
  e->mode = st->st_mode & 07777;
  e->uid = st->st_uid;
  e->gid = st->st_gid;
  e->mtime = ms_pb_new(&google__protobuf__timestamp__descriptor);
  e->mtime->seconds = st->st_mtim.tv_sec;
  e->mtime->nanos = (int32_t)st->st_mtim.tv_nsec;
  return e;
}

/* The request's path in the task's sandbox, opened O_PATH (the caller's), its stat in
 * *st and its quoted form in q for messages; -1 and *err otherwise. */
static int open_target(const char *work_dir, const Meseta__V1__FrameworkID *fw,
                       const Meseta__V1__TaskID *task, const char *path, char q[QUOTE_MAX], struct stat *st,
                       ms_error **err) {
  _cleanup_close_ int sandbox = open_sandbox(work_dir, fw, task, err);
  if (sandbox < 0)
    return MS_ERR;
  path = path ? path : "";
  ms_value_quote(path, q, QUOTE_MAX);
  return open_path(sandbox, path, st, err);
}

int agent_files_list(const char *work_dir, const Meseta__V1__ListFilesRequest *req,
                     Meseta__V1__ListFilesResponse **ret_resp, ms_error **err) {
  size_t page = req->page_size ? req->page_size : AGENT_FILES_DEFAULT_PAGE;
  if (page > AGENT_FILES_MAX_PAGE)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`page_size` %zu is over %d", page, AGENT_FILES_MAX_PAGE);
  _cleanup_free_ char *after = NULL;
  if (req->page_token && *req->page_token && decode_token(req->page_token, &after, err) < 0)
    return MS_ERR;
  char q[QUOTE_MAX];
  struct stat st;
  _cleanup_close_ int opath = open_target(work_dir, req->framework_id, req->task_id, req->path, q, &st, err);
  if (opath < 0)
    return MS_ERR;
  if (!S_ISDIR(st.st_mode))
    return ms_error_set(err, MS_FAILED_PRECONDITION, "`path` `%s` is not a directory (use ReadFile)", q);
  /* A readable descriptor of that very directory (an O_PATH one cannot be listed). */
  int dfd = openat(opath, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return ms_error_set_errno(err, errno, "`path` `%s`: open", q);
  DIR *d = fdopendir(dfd);
  if (!d) {
    int e = errno;
    close(dfd);
    return ms_error_set_errno(err, e, "`path` `%s`: opendir", q);
  }

  name_heap h = {ms_xcalloc(page + 1, sizeof(char *)), 0, page + 1};
  int rc = 0;
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
      continue;
    if (!after || strcmp(de->d_name, after) > 0)
      heap_offer(&h, de->d_name);
    errno = 0;
  }
  if (errno)
    rc = ms_error_set_errno(err, errno, "`path` `%s`: readdir", q);
  qsort(h.v, h.n, sizeof(char *), cmp_names);

  Meseta__V1__ListFilesResponse *resp = NULL;
  if (rc == 0) {
    resp = ms_pb_new(&meseta__v1__list_files_response__descriptor);
    size_t take = h.n > page ? page : h.n, bytes = 0, i;
    resp->entries = ms_xcalloc(take ? take : 1, sizeof(*resp->entries));
    /* Long names that are not UTF-8 take three times their size: a page also ends
     * before the answer could pass gRPC's 4 MiB message. */
    for (i = 0; i < take && bytes < AGENT_FILES_MAX_PAGE_BYTES; i++) {
      struct stat es;
      if (fstatat(dirfd(d), h.v[i], &es, AT_SYMLINK_NOFOLLOW) < 0)
        continue; /* removed since readdir */
      Meseta__V1__FileEntry *e = entry_new(h.v[i], &es);
      bytes += protobuf_c_message_get_packed_size(&e->base) + 8;
      resp->entries[resp->n_entries++] = e;
    }
    if (i < h.n && i > 0)
      resp->next_page_token = hex_encode(h.v[i - 1]);
  }
  for (size_t i = 0; i < h.n; i++)
    free(h.v[i]);
  free(h.v);
  closedir(d);
  if (rc < 0)
    return rc;
  *ret_resp = resp;
  return 0;
}

/* ---- ReadFile ---- */

int agent_files_read(const char *work_dir, const Meseta__V1__ReadFileRequest *req,
                     Meseta__V1__ReadFileResponse **ret_resp, ms_error **err) {
  if (req->offset < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`offset` %lld is negative", (long long)req->offset);
  if (req->length < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`length` %lld is negative", (long long)req->length);
  if (req->length > AGENT_FILES_MAX_READ)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "`length` %lld is over %d (1 MiB)", (long long)req->length,
                        AGENT_FILES_MAX_READ);
  size_t length = req->length ? (size_t)req->length : AGENT_FILES_DEFAULT_READ;
  char q[QUOTE_MAX];
  struct stat st;
  _cleanup_close_ int opath = open_target(work_dir, req->framework_id, req->task_id, req->path, q, &st, err);
  if (opath < 0)
    return MS_ERR;
  if (S_ISDIR(st.st_mode))
    return ms_error_set(err, MS_FAILED_PRECONDITION, "`path` `%s` is a directory (use ListFiles)", q);
  if (!S_ISREG(st.st_mode))
    return ms_error_set(err, MS_FAILED_PRECONDITION, "`path` `%s` is not a regular file", q);
  /* Re-open that very inode for reading: checking the type first means a fifo or a
   * device is never opened. */
  char self[64];
  snprintf(self, sizeof(self), "/proc/self/fd/%d", opath);
  _cleanup_close_ int fd = open(self, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "`path` `%s`: open", q);

  _cleanup_free_ uint8_t *buf = ms_xmalloc(length);
  size_t n = 0;
  bool hit_end = false;
  while (n < length) {
    ssize_t r = pread(fd, buf + n, length - n, (off_t)(req->offset + (int64_t)n));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return ms_error_set_errno(err, errno, "`path` `%s`: read", q);
    if (r == 0) {
      hit_end = true;
      break;
    }
    n += (size_t)r;
  }
  if (fstat(fd, &st) < 0)
    return ms_error_set_errno(err, errno, "`path` `%s`: stat", q);
  Meseta__V1__ReadFileResponse *resp = ms_pb_new(&meseta__v1__read_file_response__descriptor);
  resp->offset = req->offset;
  int64_t end = req->offset + (int64_t)n;
  resp->size = n && end > st.st_size ? end : st.st_size; /* it may have grown while we read */
  resp->eof = hit_end || end >= resp->size;
  if (n) {
    resp->data.len = n;
    resp->data.data = n == length ? TAKE_PTR(buf) : ms_xrealloc(TAKE_PTR(buf), n);
  }
  *ret_resp = resp;
  return 0;
}

/* ---- the service ---- */

/* Refusals of an escape are worth an operator's eye (the rpc layer logs every failed call
 * at debug already). */
static void log_refusal(const char *method, const Meseta__V1__FrameworkID *fw, const Meseta__V1__TaskID *task,
                        const ms_error *e) {
  if (e->code != MS_PERMISSION_DENIED)
    return;
  char qf[QUOTE_MAX], qt[QUOTE_MAX];
  ms_value_quote(fw ? fw->value : "", qf, sizeof(qf));
  ms_value_quote(task ? task->value : "", qt, sizeof(qt));
  _cleanup_free_ char *id = ms_xasprintf("task=%s/%s", qf, qt);
  ms_log_warn(id, "%s refused: %s", method, e->msg);
}

/* One ListFiles or ReadFile, on a worker of ctx->files: directory walks and reads touch
 * the disk, which the server thread must not wait on. */
typedef struct file_job {
  ms_rpc_call *call;
  ProtobufCMessage *req; /* a copy: the server frees its own when on_start returns */
  const agent_operator_ctx *ctx;
} file_job;

static int answer(ms_rpc_call *call, const agent_operator_ctx *ctx, const ProtobufCMessage *msg,
                  ms_error **err) {
  ProtobufCMessage *resp = NULL;
  int rc;
  if (msg->descriptor == &meseta__v1__list_files_request__descriptor) {
    const Meseta__V1__ListFilesRequest *req = (const void *)msg;
    rc = agent_files_list(ctx->work_dir, req, (Meseta__V1__ListFilesResponse **)&resp, err);
    if (rc < 0)
      log_refusal("ListFiles", req->framework_id, req->task_id, *err);
  } else {
    const Meseta__V1__ReadFileRequest *req = (const void *)msg;
    rc = agent_files_read(ctx->work_dir, req, (Meseta__V1__ReadFileResponse **)&resp, err);
    if (rc < 0)
      log_refusal("ReadFile", req->framework_id, req->task_id, *err);
  }
  if (rc == 0) {
    rc = ms_rpc_call_reply(call, resp, err);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  return rc;
}

static void file_run(void *arg) {
  file_job *j = arg;
  ms_error *err = NULL;
  if (answer(j->call, j->ctx, j->req, &err) < 0)
    ms_rpc_call_finish_error(j->call, err);
  ms_error_free(err);
  protobuf_c_message_free_unpacked(j->req, NULL);
  ms_rpc_call_unref(j->call);
  free(j);
}

static int on_file_call(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const agent_operator_ctx *ctx = ms_rpc_call_userdata(call);
  if (!ctx->files)
    return answer(call, ctx, msg, err);
  file_job *j = ms_xmalloc(sizeof(*j));
  *j = (file_job){call, ms_pb_dup(msg), ctx};
  ms_rpc_call_ref(call);
  if (ms_workq_push(ctx->files, file_run, j, err) < 0) {
    ms_rpc_call_unref(call);
    protobuf_c_message_free_unpacked(j->req, NULL);
    free(j);
    return ms_error_prefix(err, "agent busy reading sandboxes");
  }
  return 0;
}

int agent_files_add_service(ms_rpc_server *srv, const agent_operator_ctx *ctx, ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "ListFiles", .on_start = on_file_call},
      {.name = "ReadFile", .on_start = on_file_call},
      {.name = "KillTask", .on_start = agent_operator_kill},
  };
  return ms_rpc_server_add_service(srv, &meseta__v1__agent_operator__descriptor, methods,
                                   MS_ARRAY_SIZE(methods), (void *)ctx, err);
}

ms_rpc_server *agent_operator_serve(agent_operator_ctx *ctx, const char *const *listen, size_t n,
                                    ms_error **err) {
  /* The default 4 MiB message holds a 1 MiB read or a full page of entries. */
  ms_rpc_server_options so = {.listen = listen, .n_listen = n, .tls = ctx->tls};
  if (!ctx->files && !(ctx->files = ms_workq_new(AGENT_FILES_WORKERS, AGENT_FILES_MAX_QUEUED, err)))
    return NULL;
  ms_rpc_server *srv = ms_rpc_server_new(&so, err);
  if (srv && (agent_files_add_service(srv, ctx, err) < 0 || ms_rpc_server_start(srv, err) < 0)) {
    ms_rpc_server_free(srv);
    srv = NULL;
  }
  if (!srv) {
    ms_workq_free(ctx->files);
    ctx->files = NULL;
  }
  return srv;
}

void agent_operator_free(ms_rpc_server *srv, agent_operator_ctx *ctx) {
  ms_rpc_server_free(srv); /* waits for the calls the workers hold */
  ms_workq_free(ctx->files);
  ctx->files = NULL;
}
