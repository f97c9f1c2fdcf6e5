#include "e2e-stack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "batch-run.h"
#include "cluster.h"
#include "sim.h"

#define START_WAIT_MS 60000 /* hang guard: a loaded 2-core machine under ASan */
#define SETPRIV "/usr/bin/setpriv"
#define NSENTER "/usr/bin/nsenter"

/* Starts argv under `setpriv --pdeathsig KILL` (a killed test takes it along), inside
 * the network namespace `netns` when given. */
static int start(const ms_e2e_options *o, ms_test_proc **ret, const char *name, const char *netns,
                 const char *const *argv, ms_error **err) {
  const char *args[64];
  size_t n = 0;
  _cleanup_free_ char *net = netns ? ms_xasprintf("--net=/run/netns/%s", netns) : NULL;
  if (net) {
    args[n++] = NSENTER;
    args[n++] = net;
    args[n++] = "--";
  }
  if (access(SETPRIV, X_OK) == 0) {
    args[n++] = SETPRIV;
    args[n++] = "--pdeathsig";
    args[n++] = "KILL";
    args[n++] = "--";
  }
  for (size_t i = 0; argv[i] && n < MS_ARRAY_SIZE(args) - 1; i++)
    args[n++] = argv[i];
  args[n] = NULL;
  if (access(argv[0], X_OK) != 0)
    return ms_error_set(err, MS_FAILED_PRECONDITION, "%s: `%s` is not an executable (build it first)", name,
                        argv[0]);
  *ret = ms_test_proc_start(name, o->dir, args, err);
  return *ret ? 0 : MS_ERR;
}

int ms_e2e_start(ms_e2e_stack *s, const ms_e2e_options *o, ms_error **err) {
  *s = (ms_e2e_stack){.tag = ms_xstrdup(o->tag)};
  const char *level = o->log_level ? o->log_level : "info";
  s->etcd = ms_test_etcd_start(err);
  if (!s->etcd)
    return MS_ERR;
  const char *ep = ms_test_etcd_endpoint(s->etcd);
  _cleanup_free_ char *prefix = ms_xasprintf("/e2e/%s", o->tag);
  _cleanup_free_ char *election = ms_xasprintf("e2e-%s", o->tag);

  _cleanup_free_ char *reg = ms_test_binary("services/registry/meseta-registry");
  const char *rargv[] = {reg,    "--listen",   "127.0.0.1:0", "--etcd-endpoints", ep,    "--key-prefix",
                         prefix, "--election", election,      "--log-level",      level, NULL};
  if (start(o, &s->registry, "registry", NULL, rargv, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *alloc = ms_test_binary("services/allocator/meseta-allocator");
  const char *aargv[] = {alloc,
                         "--listen",
                         o->alloc_listen ? o->alloc_listen : "127.0.0.1:0",
                         "--allocation-interval",
                         o->allocation_interval ? o->allocation_interval : "100ms",
                         "--etcd-endpoints",
                         ep,
                         "--election",
                         election,
                         "--leader-lease",
                         "2s",
                         "--registry",
                         ms_test_proc_address(s->registry),
                         "--recovery-timeout",
                         "1s",
                         "--log-level",
                         level,
                         NULL};
  if (start(o, &s->allocator, "allocator", NULL, aargv, err) < 0)
    return MS_ERR;
  const char *alloc_addr = ms_test_proc_address(s->allocator);
  if (!ms_sim_wait(ms_test_serving, (void *)alloc_addr, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "the allocator at %s did not become leader; see %s", alloc_addr,
                        ms_test_proc_log(s->allocator));

  _cleanup_free_ char *mapi = ms_test_binary("services/master-api/meseta-master-api");
  const char *margv[] = {mapi,       "--listen",      "127.0.0.1:0", "--allocator", alloc_addr, "--name",
                         "e2e-mapi", "--max-backoff", "200ms",       "--log-level", level,      NULL};
  if (start(o, &s->mapi, "master-api", NULL, margv, err) < 0)
    return MS_ERR;

  _cleanup_free_ char *agent = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *src = getenv("MESETA_SOURCE_DIR");
  _cleanup_free_ char *profiles = ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
  for (int i = 0; i < o->n_agents && i < MS_E2E_MAX_AGENTS; i++) {
    _cleanup_free_ char *name = ms_xasprintf("agent-%d", i);
    _cleanup_free_ char *host = ms_xasprintf("e2e-agent-%d", i);
    _cleanup_free_ char *work = ms_xasprintf("%s/work-%d", o->dir, i);
    _cleanup_free_ char *cg = ms_e2e_cgroup_parent(s, i);
    const char *argv[] = {agent,
                          "--allocator",
                          alloc_addr,
                          "--work-dir",
                          work,
                          "--hostname",
                          host,
                          "--resources",
                          o->agent_resources,
                          "--isolation",
                          "linux/seccomp,cgroups/pids,network/none",
                          "--cgroup-parent",
                          cg,
                          "--runtime",
                          rt,
                          "--seccomp-dir",
                          profiles,
                          "--no-switch-user",
                          "--listen",
                          "", /* no AgentOperator server */
                          "--status-update-retry",
                          "2s",
                          "--kill-containers-on-exit",
                          "--shutdown-grace",
                          "10s",
                          "--log-level",
                          level,
                          NULL};
    if (start(o, &s->agents[i], name, o->agent_netns ? o->agent_netns[i] : NULL, argv, err) < 0)
      return MS_ERR;
    s->n_agents = i + 1;
  }

  const char *mapi_addr = ms_test_proc_address(s->mapi);
  if (!ms_sim_wait(ms_test_serving, (void *)mapi_addr, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api at %s is not serving; see %s", mapi_addr,
                        ms_test_proc_log(s->mapi));
  ms_test_agents_wait aw = {mapi_addr, (size_t)s->n_agents};
  if (!ms_sim_wait(ms_test_agents_listed, &aw, START_WAIT_MS))
    return ms_error_set(err, MS_UNAVAILABLE, "master-api at %s does not list the %d agents; see %s",
                        mapi_addr, s->n_agents, ms_test_proc_log(s->mapi));
  return 0;
}

const char *ms_e2e_mapi(const ms_e2e_stack *s) {
  return ms_test_proc_address(s->mapi);
}

const char *ms_e2e_agent_id(const ms_e2e_stack *s, int i) {
  return ms_test_proc_address(s->agents[i]);
}

char *ms_e2e_cgroup_parent(const ms_e2e_stack *s, int i) {
  return ms_xasprintf("meseta-e2e-%s-%d", s->tag, i);
}

static bool stop_one(ms_test_proc **p, const char *name) {
  if (!*p)
    return true;
  int rc = ms_test_proc_stop(*p, SIGTERM);
  if (rc != 0)
    fprintf(stderr, "e2e: %s exited with %d on SIGTERM; see %s\n", name, rc, ms_test_proc_log(*p));
  ms_test_proc_free(*p);
  *p = NULL;
  return rc == 0;
}

/* Removes agent i's cgroup parent from every hierarchy where it is empty (a container
 * cgroup left inside keeps it, for the caller to see). */
static void remove_cgroup_parent(const ms_e2e_stack *s, int i) {
  _cleanup_free_ char *name = ms_e2e_cgroup_parent(s, i);
  DIR *root = opendir("/sys/fs/cgroup");
  struct dirent *h;
  while (root && (h = readdir(root))) {
    if (h->d_name[0] == '.')
      continue;
    _cleanup_free_ char *path = ms_xasprintf("/sys/fs/cgroup/%s/%s", h->d_name, name);
    rmdir(path);
  }
  if (root)
    closedir(root);
}

bool ms_e2e_stop(ms_e2e_stack *s) {
  bool ok = true;
  for (int i = 0; i < s->n_agents; i++) {
    ok = stop_one(&s->agents[i], "agent") && ok;
    if (s->tag)
      remove_cgroup_parent(s, i);
  }
  ok = stop_one(&s->mapi, "master-api") && ok;
  ok = stop_one(&s->allocator, "allocator") && ok;
  ok = stop_one(&s->registry, "registry") && ok;
  ms_test_etcd_free(s->etcd);
  s->etcd = NULL;
  free(s->tag);
  s->tag = NULL;
  return ok;
}

int ms_e2e_run_batch(const ms_e2e_stack *s, int64_t tasks, double cpus, double mem, const char *const *extra,
                     const char *log, int64_t timeout_ms, ms_e2e_batch *ret, ms_error **err) {
  pid_t pid = ms_test_batch_spawn(ms_e2e_mapi(s), tasks, cpus, mem, extra, log, err);
  return pid < 0 ? MS_ERR : ms_test_batch_wait(pid, log, timeout_ms, ret, err);
}
