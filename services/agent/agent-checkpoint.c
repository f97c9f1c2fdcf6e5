/* Checkpoints of tasks (meta/tasks/<container>.pb, agent_state.proto) and recovery after an
 * agent restart: running containers are re-attached through a pidfd, containers that ended
 * meanwhile are reported from their status file, unacknowledged updates are resent. Also
 * the reconfiguration policy, which decides whether a restart may keep the agent's id. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/v1/agent_state.pb-c.h"

#include "agent-internal.h"

#define CHECKPOINT_MAX (64 * 1024 * 1024)

static char *checkpoint_path(agent *a, const char *container_id) {
  return ms_xasprintf("%s/%s.pb", a->tasks_dir, container_id);
}

void agent_checkpoint_task(agent *a, agent_task *t) {
  if (!t->container_id)
    return;
  Meseta__V1__TaskCheckpoint c = MESETA__V1__TASK_CHECKPOINT__INIT;
  c.framework_id = t->framework_id;
  c.task_id = t->task_id;
  c.container_id = t->container_id;
  c.task = t->info;
  c.framework = t->framework;
  c.runtime_pid = t->pid;
  c.runtime_start_time = t->start_time;
  c.state = t->state;
  c.kill_requested = t->kill_requested;
  c.terminal = t->terminal;
  c.launched = t->launched;
  size_t n = 0;
  for (agent_update *u = t->head; u; u = u->next)
    n++;
  _cleanup_free_ Meseta__V1__AgentMessage__StatusUpdate **ups = ms_xcalloc(n + 1, sizeof(*ups));
  n = 0;
  for (agent_update *u = t->head; u; u = u->next)
    ups[n++] = u->msg;
  c.n_updates = n;
  c.updates = ups;
  size_t len = protobuf_c_message_get_packed_size(&c.base);
  _cleanup_free_ uint8_t *buf = ms_xmalloc(len ? len : 1);
  protobuf_c_message_pack(&c.base, buf);
  _cleanup_free_ char *path = checkpoint_path(a, t->container_id);
  ms_error *err = NULL;
  /* Not fsync'ed: it has to outlive the agent process, not the host (see the proto). */
  if (agent_write_bytes(path, buf, len, false, &err) < 0) {
    ms_log_error(t->log_id, "checkpoint not written (a restart would lose this task): %s", err->msg);
    ms_error_free(err);
  }
}

void agent_checkpoint_remove(agent *a, agent_task *t) {
  if (!t->container_id)
    return;
  _cleanup_free_ char *path = checkpoint_path(a, t->container_id);
  if (unlink(path) < 0 && errno != ENOENT)
    ms_log_warn(t->log_id, "checkpoint `%s`: %s", path, strerror(errno));
}

/* ---- recovery ---- */

static bool container_id_ok(const char *s) {
  if (!s || strncmp(s, "c-", 2) != 0 || strlen(s) != 18)
    return false;
  for (const char *p = s + 2; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return true;
}

static pid_t proc_ppid(pid_t pid) {
  _cleanup_free_ char *path = ms_xasprintf("/proc/%d/stat", (int)pid);
  _cleanup_free_ char *text = agent_read_file(path, 4096, NULL);
  char *p = text ? strrchr(text, ')') : NULL;
  int ppid = 0;
  if (p && sscanf(p + 1, " %*c %d", &ppid) != 1)
    ppid = 0;
  return ppid;
}

/* The runtime started with `spec` as its last argument, if one still runs: an agent that
 * died between the spawn and the checkpoint of the pid. The runtime's init is a clone of it
 * with the same command line: the runtime is the match whose parent is not a match. */
static pid_t find_runtime(const char *spec) {
  pid_t found[8];
  size_t n = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d)) && n < MS_ARRAY_SIZE(found)) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (e->d_name[0] < '1' || e->d_name[0] > '9' || *end || pid > INT32_MAX)
      continue;
    _cleanup_free_ char *path = ms_xasprintf("/proc/%s/cmdline", e->d_name);
    char buf[8192];
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
    if (len <= 1)
      continue;
    buf[len] = '\0';
    if (buf[len - 1] == '\0')
      len--;
    const char *last = buf;
    for (ssize_t i = 0; i < len; i++)
      if (!buf[i])
        last = buf + i + 1;
    if (strcmp(last, spec) == 0)
      found[n++] = (pid_t)pid;
  }
  if (d)
    closedir(d);
  for (size_t i = 0; i < n; i++) {
    pid_t pp = proc_ppid(found[i]);
    bool parent_matches = false;
    for (size_t j = 0; j < n; j++)
      parent_matches |= found[j] == pp;
    if (!parent_matches)
      return found[i];
  }
  return 0;
}

/* Re-attaches t to its runtime if it still runs; true when attached. */
static bool reattach(agent *a, agent_task *t, pid_t pid, uint64_t start_time) {
  if (pid <= 0)
    return false;
  uint64_t now = agent_proc_start_time(pid);
  if (!now || (start_time && now != start_time))
    return false; /* gone, or the pid was reused */
  t->pid = pid;
  t->start_time = now;
  t->child = false;
  ms_error *err = NULL;
  if (agent_task_watch(a, t, &err) < 0) {
    ms_log_warn(t->log_id, "%s", err->msg);
    ms_error_free(err);
    t->pid = 0;
    return false;
  }
  /* The pidfd pins the process: if the start time still matches, it is ours. */
  if (agent_proc_start_time(pid) != now) {
    ms_loop_del_fd(a->loop, t->pidfd, NULL);
    close(t->pidfd);
    t->pidfd = -1;
    t->pid = 0;
    return false;
  }
  return true;
}

/* One checkpoint into a task; NULL (with *err) when it cannot be used. */
static agent_task *load_task(agent *a, const char *path, ms_error **err) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ms_error_set_errno(err, errno, "checkpoint `%s`", path);
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || st.st_size > CHECKPOINT_MAX) {
    ms_error_set(err, MS_DATA_LOSS, "checkpoint `%s`: unreadable or larger than %d bytes", path,
                 CHECKPOINT_MAX);
    return NULL;
  }
  _cleanup_free_ uint8_t *buf = ms_xmalloc((size_t)st.st_size + 1);
  size_t off = 0;
  while (off < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    off += (size_t)r;
  }
  Meseta__V1__TaskCheckpoint *c = (Meseta__V1__TaskCheckpoint *)protobuf_c_message_unpack(
      &meseta__v1__task_checkpoint__descriptor, NULL, off, buf);
  if (!c || !c->framework_id || !*c->framework_id || !c->task_id || !*c->task_id ||
      !container_id_ok(c->container_id) || !c->task) {
    if (c)
      protobuf_c_message_free_unpacked(&c->base, NULL);
    ms_error_set(err, MS_DATA_LOSS, "checkpoint `%s`: not a valid task checkpoint", path);
    return NULL;
  }
  agent_task *t = agent_task_new(a, c->framework_id, c->task_id);
  t->container_id = ms_xstrdup(c->container_id);
  t->cdir = ms_xasprintf("%s/containers/%s", a->work_dir, c->container_id);
  t->sandbox = ms_xasprintf("%s/sandboxes/%s/%s", a->work_dir, c->framework_id, c->task_id);
  t->info = (Meseta__V1__TaskInfo *)ms_pb_dup(&c->task->base);
  if (c->framework)
    t->framework = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&c->framework->base);
  t->state = c->state;
  t->kill_requested = c->kill_requested;
  t->terminal = c->terminal;
  t->launched = c->launched;
  t->pid = c->runtime_pid;
  t->start_time = c->runtime_start_time;
  for (size_t i = 0; i < c->n_updates; i++) {
    if (!c->updates[i]->status)
      continue;
    agent_update *u = ms_xcalloc(1, sizeof(*u));
    u->msg = (Meseta__V1__AgentMessage__StatusUpdate *)ms_pb_dup(&c->updates[i]->base);
    if (t->tail)
      t->tail->next = u;
    else
      t->head = u;
    t->tail = u;
  }
  protobuf_c_message_free_unpacked(&c->base, NULL);
  return t;
}

/* Decides what became of a recovered task's container. */
static void resume(agent *a, agent_task *t, size_t *running, size_t *ended) {
  pid_t pid = t->pid;
  uint64_t start = t->start_time;
  t->pid = 0;
  t->start_time = 0;
  if (t->terminal)
    return;
  if (!t->launched) {
    agent_task_lost(a, t, "the agent restarted before the container was started");
    (*ended)++;
    return;
  }
  _cleanup_free_ char *spec = ms_xasprintf("%s/spec.json", t->cdir);
  if (!pid) {
    pid = find_runtime(spec);
    start = 0;
  }
  if (reattach(a, t, pid, start)) {
    ms_log_info(t->log_id, "container %s: re-attached to runtime pid %d", t->container_id, (int)t->pid);
    agent_checkpoint_task(a, t);
    (*running)++;
    return;
  }
  ms_log_info(t->log_id, "container %s ended while the agent was away", t->container_id);
  agent_task_ended(a, t, -1);
  (*ended)++;
}

/* Containers that still run but that no checkpoint names (a checkpoint lost or unusable):
 * nothing would report or stop them, so they are asked to end (SIGTERM to the runtime,
 * which kills the task after its grace and removes its cgroups). */
static size_t stop_orphans(agent *a) {
  _cleanup_free_ char *cdir = ms_xasprintf("%s/containers", a->work_dir);
  DIR *d = opendir(cdir);
  size_t n = 0;
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (!container_id_ok(e->d_name))
      continue;
    bool known = false;
    for (agent_task *t = a->tasks; t && !known; t = t->next)
      known = t->container_id && strcmp(t->container_id, e->d_name) == 0;
    _cleanup_free_ char *status = ms_xasprintf("%s/%s/status.json", cdir, e->d_name);
    if (known || access(status, F_OK) == 0)
      continue;
    _cleanup_free_ char *spec = ms_xasprintf("%s/%s/spec.json", cdir, e->d_name);
    pid_t pid = find_runtime(spec);
    if (pid > 0 && kill(pid, SIGTERM) == 0) {
      ms_log_warn(NULL, "container %s: running without a checkpoint: stopping it (runtime pid %d)", e->d_name,
                  (int)pid);
      n++;
    }
  }
  if (d)
    closedir(d);
  return n;
}

/* Removes every checkpoint (a new agent: the containers they describe died with the host,
 * or belong to an identity that is gone). */
static void drop_checkpoints(agent *a, DIR *d) {
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    _cleanup_free_ char *p = ms_xasprintf("%s/%s", a->tasks_dir, e->d_name);
    n += unlink(p) == 0;
  }
  if (n)
    ms_log_info(NULL, "%zu task checkpoints of a previous agent dropped", n);
}

int agent_recover(agent *a, ms_error **err) {
  if (ms_mkdirs(a->tasks_dir, err) < 0)
    return MS_ERR;
  DIR *d = opendir(a->tasks_dir);
  if (!d)
    return ms_error_set_errno(err, errno, "directory `%s`", a->tasks_dir);
  if (!a->known_id) {
    drop_checkpoints(a, d);
    closedir(d);
    stop_orphans(a);
    return 0;
  }
  size_t n = 0, running = 0, ended = 0, bad = 0;
  agent_task **tail = &a->tasks;
  while (*tail)
    tail = &(*tail)->next;
  agent_task *loaded = NULL, **ltail = &loaded;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    _cleanup_free_ char *path = ms_xasprintf("%s/%s", a->tasks_dir, e->d_name);
    if (len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0) {
      unlink(path); /* an interrupted write: the .pb it would have replaced is still whole */
      continue;
    }
    if (len < 4 || strcmp(e->d_name + len - 3, ".pb") != 0)
      continue; /* .corrupt, kept for a human */
    ms_error *e2 = NULL;
    agent_task *t = load_task(a, path, &e2);
    if (!t) {
      /* Kept aside for a human, never fatal: the other tasks still recover. */
      ms_log_error(NULL, "%s: moved aside as .corrupt", e2->msg);
      ms_error_free(e2);
      _cleanup_free_ char *aside = ms_xasprintf("%s.corrupt", path);
      rename(path, aside);
      bad++;
      continue;
    }
    if (agent_task_find(a, t->framework_id, t->task_id)) {
      ms_log_error(t->log_id, "checkpoint `%s`: a second checkpoint of this task ignored", path);
      agent_task_free(t);
      bad++;
      continue;
    }
    *ltail = t;
    ltail = &t->next;
    n++;
  }
  closedir(d);
  *tail = loaded; /* in a->tasks before any update is pushed: pushes find their task */
  for (agent_task *t = loaded; t; t = t->next)
    resume(a, t, &running, &ended);
  size_t orphans = stop_orphans(a);
  ms_log_info(NULL,
              "recovered %zu tasks: %zu running re-attached, %zu ended while the agent was away, %zu "
              "containers without a checkpoint stopped%s",
              n, running, ended, orphans, bad ? " (some checkpoints unusable: see above)" : "");
  return 0;
}

/* ---- reconfiguration ---- */

static int strcmp_ptr(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Attributes as sorted "name:value" strings (NULL-terminated; the caller frees). */
static char **attribute_list(const char *text, size_t *n) {
  *n = 0;
  char **v = ms_xcalloc(1, sizeof(*v));
  if (!text)
    return v;
  _cleanup_free_ char *copy = ms_xstrdup(text);
  char *save = NULL;
  for (char *p = strtok_r(copy, ";", &save); p; p = strtok_r(NULL, ";", &save)) {
    if (!*p)
      continue;
    v = ms_xrealloc(v, (*n + 2) * sizeof(*v));
    v[(*n)++] = ms_xstrdup(p);
    v[*n] = NULL;
  }
  qsort(v, *n, sizeof(*v), strcmp_ptr);
  return v;
}

static void free_list(char **v) {
  for (char **p = v; p && *p; p++)
    free(*p);
  free(v);
}

/* The attributes of `old` missing from `cur` (joined with ";"), or NULL if none. */
static char *missing_attributes(char **old, size_t nold, char **cur, size_t ncur) {
  char *out = NULL;
  for (size_t i = 0; i < nold; i++) {
    bool found = false;
    for (size_t j = 0; j < ncur && !found; j++)
      found = strcmp(old[i], cur[j]) == 0;
    if (!found) {
      char *next = out ? ms_xasprintf("%s;%s", out, old[i]) : ms_xstrdup(old[i]);
      free(out);
      out = next;
    }
  }
  return out;
}

int agent_check_reconfiguration(agent *a, const char *old_resources, const char *old_attributes,
                                const char *old_hostname, ms_error **err) {
  const char *policy = a->cfg.reconfiguration_policy ? a->cfg.reconfiguration_policy : "equal";
  bool additive = strcmp(policy, "additive") == 0;
  const char *hint = "restart with the previous flags, or remove the work dir's `meta` directory to "
                     "register as a new agent (its tasks are then lost)";
  if (old_hostname && strcmp(old_hostname, a->hostname) != 0)
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "agent %s: the hostname changed from `%s` to `%s`, which no reconfiguration policy "
                        "allows; %s",
                        a->id, old_hostname, a->hostname, hint);
  if (old_resources) {
    ms_resources *was = NULL;
    if (ms_resources_parse_text(old_resources, NULL, &was, err) < 0) {
      ms_error_prefix(err, "agent %s: the checkpointed resources", a->id);
      return MS_ERR;
    }
    bool ok = additive ? ms_resources_contains(a->total, was) : ms_resources_equal(a->total, was);
    ms_resources_free(was);
    if (!ok)
      return ms_error_set(err, MS_FAILED_PRECONDITION,
                          "agent %s: the resources changed from `%s` to `%s`, which "
                          "--reconfiguration-policy=%s does not allow (%s); %s",
                          a->id, old_resources, a->resources_text, policy,
                          additive ? "resources may only be added" : "they must stay the same", hint);
  }
  size_t nold = 0, ncur = 0;
  char **old = attribute_list(old_attributes, &nold), **cur = attribute_list(a->attributes, &ncur);
  _cleanup_free_ char *gone = missing_attributes(old, nold, cur, ncur);
  _cleanup_free_ char *added = missing_attributes(cur, ncur, old, nold);
  free_list(old);
  free_list(cur);
  if (gone || (!additive && added))
    return ms_error_set(err, MS_FAILED_PRECONDITION,
                        "agent %s: the attributes changed from `%s` to `%s` (%s%s%s%s), which "
                        "--reconfiguration-policy=%s does not allow; %s",
                        a->id, old_attributes ? old_attributes : "", a->attributes ? a->attributes : "",
                        gone ? "removed or changed: " : "", gone ? gone : "",
                        gone && added ? "; added: " : (added ? "added: " : ""), added ? added : "", policy,
                        hint);
  return 0;
}
