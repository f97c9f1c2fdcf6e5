/* The chaos cluster: every meseta service as a real process on loopback. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
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

#include "chaos.h"
#include "cluster.h"
#include "sim.h"

#define START_WAIT_MS 90000 /* hang guard: a loaded 2-core machine under ASan */

static void start_svc(chaos_svc *s, const char *dir, const char *const *argv) {
  ms_error *err = NULL;
  if (access(argv[0], X_OK) != 0) {
    fprintf(stderr, "chaos: `%s` is not built (cmake --build build --target %s)\n", argv[0],
            strrchr(argv[0], '/') + 1);
    CU_FAIL_FATAL("a service binary is missing");
  }
  s->proc = ms_test_proc_start(s->name, dir, argv, &err);
  if (!s->proc)
    fprintf(stderr, "chaos: %s did not start: %s\n", s->name, err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s->proc);
  free(s->addr);
  s->addr = ms_xstrdup(ms_test_proc_address(s->proc));
  s->rss_start_kib = chaos_rss_kib(ms_test_proc_pid(s->proc));
}

pid_t chaos_pid(const chaos_svc *s) {
  return s->proc ? ms_test_proc_pid(s->proc) : 0;
}

void chaos_kill(chaos_svc *s) {
  if (!s->proc)
    return;
  s->killed = true;
  ms_test_proc_stop(s->proc, SIGKILL);
  ms_test_proc_free(s->proc);
  s->proc = NULL;
  s->frozen = false;
}

void chaos_freeze(chaos_svc *s) {
  if (s->proc && kill(ms_test_proc_pid(s->proc), SIGSTOP) == 0)
    s->frozen = true;
}

void chaos_thaw(chaos_svc *s) {
  if (s->proc && s->frozen)
    kill(ms_test_proc_pid(s->proc), SIGCONT);
  s->frozen = false;
}

/* Whether `bin --help` mentions `flag` (the agent learns to follow the leader in
 * issue 12; until then it takes one fixed allocator address). */
static bool has_flag(const char *bin, const char *flag) {
  _cleanup_free_ char *cmd = ms_xasprintf("'%s' --help 2>&1", bin);
  FILE *p = popen(cmd, "r");
  if (!p)
    return false;
  char line[512];
  bool found = false;
  while (fgets(line, sizeof(line), p))
    found = found || strstr(line, flag) != NULL;
  pclose(p);
  return found;
}

static void start_agent(chaos_cluster *c, int i) {
  _cleanup_free_ char *bin = ms_test_binary("services/agent/meseta-agent");
  _cleanup_free_ char *rt = ms_test_binary("services/agent/runtime/meseta-runtime");
  const char *src = getenv("MESETA_SOURCE_DIR");
  _cleanup_free_ char *profiles = ms_xasprintf("%s/services/agent/runtime/profiles", src ? src : ".");
  _cleanup_free_ char *host = ms_xasprintf("chaos-agent-%d", i);
  /* The leader now (agents of landed main cannot follow a leader change). */
  int leader = chaos_leader(c);
  const char *alloc = c->alloc[leader >= 0 ? leader : 0].addr;
  const char *argv[48] = {bin,
                          "--work-dir",
                          c->work_dir[i],
                          "--hostname",
                          host,
                          "--resources",
                          "cpus:2;mem:2048;disk:4096",
                          "--isolation",
                          "linux/seccomp,cgroups/pids,network/none",
                          "--cgroup-parent",
                          c->cgroup_parent[i],
                          "--runtime",
                          rt,
                          "--seccomp-dir",
                          profiles,
                          "--no-switch-user",
                          "--listen",
                          "",
                          "--kill-containers-on-exit",
                          "--shutdown-grace",
                          "10s",
                          "--log-level",
                          "info"};
  size_t n = 0;
  while (argv[n])
    n++;
  _cleanup_free_ char *all = ms_xasprintf("%s,%s", c->alloc[0].addr, c->alloc[1].addr);
  if (c->agent_follows_registry) { /* the registry's leader, else whichever allocator leads */
    argv[n++] = "--registry";
    argv[n++] = c->registry_target;
    argv[n++] = "--allocator";
    argv[n++] = all;
  } else {
    argv[n++] = "--allocator";
    argv[n++] = alloc;
  }
  argv[n] = NULL;
  start_svc(&c->agent[i], c->dir, argv);
  free(c->agent_id[i]);
  c->agent_id[i] = ms_xstrdup(c->agent[i].addr); /* the ready file holds the id */
}

void chaos_agent_restart(chaos_cluster *c, int i) {
  start_agent(c, i);
}

typedef struct agents_wait {
  chaos_cluster *c;
  int mapi;
} agents_wait;

static bool all_agents_active(void *ctx) {
  agents_wait *w = ctx;
  return chaos_active_agents(w->c, w->mapi) == CHAOS_AGENTS;
}

void chaos_cluster_start(chaos_cluster *c, const char *dir) {
  *c = (chaos_cluster){.dir = ms_xstrdup(dir), .tag = ms_xasprintf("%d", (int)getpid())};
  ms_error *err = NULL;
  c->etcd = ms_test_etcd_start(&err);
  if (!c->etcd)
    fprintf(stderr, "chaos: etcd: %s\n", err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c->etcd);
  const char *ep = ms_test_etcd_endpoint(c->etcd);
  _cleanup_free_ char *prefix = ms_xasprintf("/chaos/%s", c->tag);
  _cleanup_free_ char *election = ms_xasprintf("chaos-%s", c->tag);

  _cleanup_free_ char *reg = ms_test_binary("services/registry/meseta-registry");
  for (int i = 0; i < CHAOS_REGISTRIES; i++) {
    snprintf(c->reg[i].name, sizeof(c->reg[i].name), "registry-%d", i);
    const char *argv[] = {reg,    "--listen",   "127.0.0.1:0", "--etcd-endpoints", ep,     "--key-prefix",
                          prefix, "--election", election,      "--log-level",      "info", NULL};
    start_svc(&c->reg[i], dir, argv);
  }
  /* Both replicas behind one target, as a Service would put them: gRPC's pick_first
   * takes the first that answers. */
  c->registry_target = ms_xasprintf("ipv4:%s,%s", c->reg[0].addr, c->reg[1].addr);

  /* The failover knobs keep their defaults (what users get); only the cycle is faster. */
  _cleanup_free_ char *abin = ms_test_binary("services/allocator/meseta-allocator");
  for (int i = 0; i < CHAOS_ALLOCATORS; i++) {
    snprintf(c->alloc[i].name, sizeof(c->alloc[i].name), "allocator-%d", i);
    const char *argv[] = {abin,
                          "--listen",
                          "127.0.0.1:0",
                          "--allocation-interval",
                          "200ms",
                          "--etcd-endpoints",
                          ep,
                          "--election",
                          election,
                          "--registry",
                          c->registry_target,
                          "--log-level",
                          "info",
                          NULL};
    start_svc(&c->alloc[i], dir, argv);
    if (i == 0) /* allocator-0 leads: the scenarios know whom to hit */
      CU_ASSERT_EQUAL_FATAL(chaos_wait_leader(c, -1, START_WAIT_MS), 0);
  }

  _cleanup_free_ char *mbin = ms_test_binary("services/master-api/meseta-master-api");
  for (int i = 0; i < CHAOS_MAPIS; i++) {
    snprintf(c->mapi[i].name, sizeof(c->mapi[i].name), "master-api-%d", i);
    const char *argv[] = {mbin,     "--listen",      "127.0.0.1:0", "--registry", c->registry_target,
                          "--name", c->mapi[i].name, "--log-level", "info",       NULL};
    start_svc(&c->mapi[i], dir, argv);
  }

  _cleanup_free_ char *agent = ms_test_binary("services/agent/meseta-agent");
  c->agent_follows_registry = has_flag(agent, "--registry");
  for (int i = 0; i < CHAOS_AGENTS; i++) {
    snprintf(c->agent[i].name, sizeof(c->agent[i].name), "agent-%d", i);
    c->work_dir[i] = ms_xasprintf("%s/work-%d", dir, i);
    c->cgroup_parent[i] = ms_xasprintf("meseta-chaos-%s-%d", c->tag, i);
    start_agent(c, i);
  }
  for (int i = 0; i < CHAOS_MAPIS; i++) {
    agents_wait w = {c, i};
    bool ok = ms_sim_wait(all_agents_active, &w, START_WAIT_MS);
    if (!ok)
      fprintf(stderr, "chaos: %s does not list %d active agents; see %s/\n", c->mapi[i].name, CHAOS_AGENTS,
              dir);
    CU_ASSERT_FATAL(ok);
  }
  printf("\n  cluster up in %s (agents follow the leader %s)\n", dir,
         c->agent_follows_registry ? "through the registry or the allocators' addresses"
                                   : "at a fixed address: allocator-0");
}

int chaos_leader(chaos_cluster *c) {
  int leader = -1;
  for (int i = 0; i < CHAOS_ALLOCATORS; i++) {
    if (!c->alloc[i].proc || c->alloc[i].frozen)
      continue;
    if (ms_test_health(c->alloc[i].addr) == 1) {
      if (leader >= 0)
        return -1; /* two say they lead */
      leader = i;
    }
  }
  return leader;
}

int chaos_wait_leader(chaos_cluster *c, int not, int64_t timeout_ms) {
  int64_t end = ms_time_mono_ms() + timeout_ms;
  do {
    int l = chaos_leader(c);
    if (l >= 0 && l != not )
      return l;
    ms_time_sleep_ms(50);
  } while (ms_time_mono_ms() < end);
  return -1;
}

int chaos_active_agents(chaos_cluster *c, int mapi) {
  if (!c->mapi[mapi].proc)
    return -1;
  ms_rpc_channel *ch = ms_rpc_channel_new(c->mapi[mapi].addr, NULL, NULL);
  if (!ch)
    return -1;
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  ms_rpc_call_options co = {.timeout_ms = 5000};
  int n = -1;
  if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetAgents", &req.base,
                   &meseta__v1__get_agents_response__descriptor, &co, &out, NULL) == 0) {
    Meseta__V1__GetAgentsResponse *r = (void *)out;
    n = 0;
    for (size_t i = 0; i < r->n_agents; i++)
      n += r->agents[i]->state == MESETA__V1__AGENT__STATE__ACTIVE;
    protobuf_c_message_free_unpacked(out, NULL);
  }
  ms_rpc_channel_free(ch);
  return n;
}

char *chaos_master_id(chaos_cluster *c, int mapi) {
  if (!c->mapi[mapi].proc)
    return NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(c->mapi[mapi].addr, NULL, NULL);
  if (!ch)
    return NULL;
  Meseta__V1__GetMasterRequest req = MESETA__V1__GET_MASTER_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  ms_rpc_call_options co = {.timeout_ms = 5000};
  char *id = NULL;
  if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetMaster", &req.base,
                   &meseta__v1__get_master_response__descriptor, &co, &out, NULL) == 0) {
    Meseta__V1__GetMasterResponse *r = (void *)out;
    if (r->master_info && r->master_info->id && *r->master_info->id)
      id = ms_xstrdup(r->master_info->id);
    protobuf_c_message_free_unpacked(out, NULL);
  }
  ms_rpc_channel_free(ch);
  return id;
}

/* Kills what is left in container cgroups (c-*) under `parent` and removes them and it,
 * in every hierarchy. */
static void remove_cgroup_parent(const char *parent) {
  DIR *root = opendir("/sys/fs/cgroup");
  struct dirent *h;
  while (root && (h = readdir(root))) {
    if (h->d_name[0] == '.')
      continue;
    _cleanup_free_ char *path = ms_xasprintf("/sys/fs/cgroup/%s/%s", h->d_name, parent);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (strncmp(e->d_name, "c-", 2) != 0)
        continue;
      _cleanup_free_ char *procs = ms_xasprintf("%s/%s/cgroup.procs", path, e->d_name);
      FILE *f = fopen(procs, "re");
      int pid;
      while (f && fscanf(f, "%d", &pid) == 1)
        kill(pid, SIGKILL);
      if (f)
        fclose(f);
      _cleanup_free_ char *child = ms_xasprintf("%s/%s", path, e->d_name);
      for (int i = 0; i < 100 && rmdir(child) < 0 && errno == EBUSY; i++)
        ms_time_sleep_ms(20);
    }
    if (d)
      closedir(d);
    rmdir(path);
  }
  if (root)
    closedir(root);
}

bool chaos_alive(pid_t pid) {
  _cleanup_free_ char *path = ms_xasprintf("/proc/%d/stat", (int)pid);
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char state = 'X';
  /* "pid (comm) S ...": the state follows the last ')' */
  char buf[512];
  if (f && fgets(buf, sizeof(buf), f)) {
    char *p = strrchr(buf, ')');
    if (p && p[1] == ' ')
      state = p[2];
  }
  return state != 'X' && state != 'Z';
}

static void stop_svc(chaos_cluster *c, chaos_svc *s, bool check) {
  if (s->proc && s->frozen)
    chaos_thaw(s);
  if (!check) {
    ms_test_proc_free(s->proc); /* SIGKILL */
    s->proc = NULL;
  } else if (!s->proc) {
    if (!s->killed) {
      fprintf(stderr, "chaos: %s is not running\n", s->name);
      CU_FAIL("a service is not running");
    }
  } else {
    pid_t pid = ms_test_proc_pid(s->proc);
    bool alive = chaos_alive(pid);
    int rc = ms_test_proc_stop(s->proc, SIGTERM);
    if (!alive || rc != 0)
      fprintf(stderr, "chaos: %s %s (exit %d); see %s\n", s->name,
              alive ? "did not exit 0 on SIGTERM" : "had died before the end", rc, ms_test_proc_log(s->proc));
    CU_ASSERT(alive);
    CU_ASSERT_EQUAL(rc, 0);
    ms_test_proc_free(s->proc);
    s->proc = NULL;
  }
  /* Also the log of a run killed on purpose: a report before the kill is a bug. */
  _cleanup_free_ char *log = ms_xasprintf("%s/%s.log", c->dir, s->name);
  if (check)
    CU_ASSERT(!chaos_log_has_report(log));
  free(s->addr);
  s->addr = NULL;
}

void chaos_cluster_stop(chaos_cluster *c, bool check) {
  for (int i = 0; i < CHAOS_AGENTS; i++)
    stop_svc(c, &c->agent[i], check);
  for (int i = 0; i < CHAOS_MAPIS; i++)
    stop_svc(c, &c->mapi[i], check);
  for (int i = 0; i < CHAOS_ALLOCATORS; i++)
    stop_svc(c, &c->alloc[i], check);
  for (int i = 0; i < CHAOS_REGISTRIES; i++)
    stop_svc(c, &c->reg[i], check);
  ms_test_etcd_free(c->etcd);
  c->etcd = NULL;
  for (int i = 0; i < CHAOS_AGENTS; i++) {
    if (c->cgroup_parent[i])
      remove_cgroup_parent(c->cgroup_parent[i]);
    free(c->cgroup_parent[i]);
    free(c->work_dir[i]);
    free(c->agent_id[i]);
  }
  free(c->registry_target);
  free(c->tag);
  free(c->dir);
  *c = (chaos_cluster){0};
}
