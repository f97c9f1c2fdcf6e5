/* Garbage collection of what ended tasks leave under the work dir: their sandboxes
 * (sandboxes/<framework>/<task>) and container directories (containers/<container>), once
 * they are older than the delay and no task the agent holds uses them. Trees are removed
 * without following symbolic links (a task may have left a link to /) and without crossing
 * into another filesystem. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/log.h"

#include "agent-internal.h"

static __thread uint64_t removed_bytes; /* nftw's callback has no context argument */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *f) {
  (void)f;
  if (type == FTW_DP)
    return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
  removed_bytes += (uint64_t)st->st_size;
  return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Removes a tree; its bytes are added to *bytes. */
static int remove_tree(const char *path, uint64_t *bytes) {
  removed_bytes = 0;
  int rc = nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  *bytes += removed_bytes;
  return rc;
}

static bool old_enough(const char *path, int64_t now_s, int64_t delay_ms) {
  struct stat st;
  if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
    return false;
  return (now_s - (int64_t)st.st_mtime) * 1000 >= delay_ms;
}

int agent_gc_sweep(const char *work_dir, int64_t delay_ms, int64_t now_s, agent_gc_live_fn live, void *ctx,
                   agent_gc_stats *ret) {
  agent_gc_stats s = {0};
  _cleanup_free_ char *cdir = ms_xasprintf("%s/containers", work_dir);
  DIR *d = opendir(cdir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (strncmp(e->d_name, "c-", 2) != 0 || live(ctx, NULL, NULL, e->d_name))
      continue;
    _cleanup_free_ char *p = ms_xasprintf("%s/%s", cdir, e->d_name);
    if (old_enough(p, now_s, delay_ms) && remove_tree(p, &s.bytes) == 0)
      s.containers++;
  }
  if (d)
    closedir(d);

  _cleanup_free_ char *sdir = ms_xasprintf("%s/sandboxes", work_dir);
  DIR *fws = opendir(sdir);
  while (fws && (e = readdir(fws))) {
    if (e->d_name[0] == '.')
      continue;
    _cleanup_free_ char *fdir = ms_xasprintf("%s/%s", sdir, e->d_name);
    DIR *tasks = opendir(fdir);
    struct dirent *t;
    while (tasks && (t = readdir(tasks))) {
      if (t->d_name[0] == '.' && (t->d_name[1] == '\0' || (t->d_name[1] == '.' && t->d_name[2] == '\0')))
        continue;
      if (live(ctx, e->d_name, t->d_name, NULL))
        continue;
      _cleanup_free_ char *p = ms_xasprintf("%s/%s", fdir, t->d_name);
      if (old_enough(p, now_s, delay_ms) && remove_tree(p, &s.bytes) == 0)
        s.sandboxes++;
    }
    if (tasks)
      closedir(tasks);
    rmdir(fdir); /* goes with its last sandbox (ENOTEMPTY otherwise) */
  }
  if (fws)
    closedir(fws);
  *ret = s;
  return 0;
}

/* ---- on the agent ---- */

static bool held(void *ctx, const char *framework_id, const char *task_id, const char *container_id) {
  agent *a = ctx;
  for (agent_task *t = a->tasks; t; t = t->next) {
    if (container_id ? t->container_id && strcmp(t->container_id, container_id) == 0
                     : strcmp(t->framework_id, framework_id) == 0 && strcmp(t->task_id, task_id) == 0)
      return true;
  }
  return false;
}

static void sweep_tick(ms_loop *loop, uint64_t id, void *arg) {
  (void)loop;
  (void)id;
  agent *a = arg;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  agent_gc_stats s;
  agent_gc_sweep(a->work_dir, a->cfg.gc_delay_ms, (int64_t)now.tv_sec, held, a, &s);
  if (s.sandboxes || s.containers)
    ms_log_info(NULL, "garbage collection: %llu sandboxes and %llu container directories removed (%.1f MB)",
                (unsigned long long)s.sandboxes, (unsigned long long)s.containers, (double)s.bytes / 1e6);
}

void agent_gc_start(agent *a) {
  if (a->cfg.gc_interval_ms > 0)
    a->gc_timer = ms_loop_add_timer(a->loop, a->cfg.gc_interval_ms, a->cfg.gc_interval_ms, sweep_tick, a);
}
