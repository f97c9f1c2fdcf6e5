/* meseta-agent: runs tasks on this machine for the allocator (docs/agent.md). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/advertise.h"
#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/loop.h"
#include "meseta/service.h"

#include "agent-files.h"
#include "agent.h"

static ms_strv allocators;
static char *registry;
static int64_t link_timeout_ns;
static char *work_dir, *resources, *attributes, *hostname, *runtime, *seccomp_dir, *seccomp_default,
    *cgroup_parent, *log_level, *log_format, *ready_file, *reconfiguration_policy;
static bool switch_user, kill_on_exit;
static char *advertise, *volume_dir;
static char *region, *zone, *tls_ca, *tls_cert, *tls_key, *tls_server_name, *isolation;
static char *op_tls_cert, *op_tls_key, *op_tls_ca;
static ms_rpc_tls op_tls;
static int64_t pids_limit, gc_delay_ns, gc_interval_ns;
static ms_strv listen_addrs;
static agent_operator_ctx op_ctx; /* outlives the AgentOperator server */
static int64_t max_grace_ns, retry_ns, retry_max_ns, backoff_ns, backoff_max_ns, shutdown_ns, reserve_mem;

static const ms_flag flags[] = {
    {"work-dir", MS_FLAG_STRING, &work_dir, "/var/lib/meseta",
     "Where sandboxes, containers and the agent's id live", "DIR"},
    {"volume-dir", MS_FLAG_STRING, &volume_dir, NULL,
     "Where persistent volumes live, one directory per role and persistence id (default: <work-dir>/volumes)",
     "DIR"},
    {"allocator", MS_FLAG_LIST, &allocators, NULL,
     "Allocator addresses (comma-separated or repeated), tried in turn until the leader takes the link "
     "(default without --registry: 127.0.0.1:5053)",
     "ADDR"},
    {"registry", MS_FLAG_STRING, &registry, NULL,
     "meseta-registry's address: its WatchLeader names the allocator leader, and the link moves there the "
     "moment it changes (preferred over --allocator when it knows a leader)",
     "ADDR"},
    {"link-timeout", MS_FLAG_DURATION, &link_timeout_ns, "0",
     "Leave an allocator silent this long (frozen, or cut off) for the leader (0: 3 of its heartbeat "
     "intervals)"},
    {"listen", MS_FLAG_LIST, &listen_addrs, "0.0.0.0:5051",
     "Addresses to serve AgentOperator (sandbox files) on: host:port or unix:PATH; \"\": none", "ADDR"},
    {"advertise-address", MS_FLAG_STRING, &advertise, NULL,
     "HOST:PORT clients (meseta run, meseta task logs) reach AgentOperator at, e.g. a port published on "
     "another address (default: the hostname and the first bound TCP port; an unspecified host such as "
     "0.0.0.0 is refused)",
     "ADDR"},
    {"resources", MS_FLAG_STRING, &resources, NULL,
     "Resources to offer, e.g. `cpus:4;mem:8192;disk:100000;ports:[31000-32000]` (default: detected)",
     "TEXT"},
    {"reserved-memory", MS_FLAG_BYTES, &reserve_mem, "1GiB", "Memory left to the host when mem is detected"},
    {"attributes", MS_FLAG_STRING, &attributes, NULL,
     "Attributes, e.g. `rack:r1;zone:a` (numbers are scalars)", "TEXT"},
    {"hostname", MS_FLAG_STRING, &hostname, NULL, "The hostname to advertise (default: the system's)",
     "NAME"},
    {"runtime", MS_FLAG_STRING, &runtime, NULL, "meseta-runtime's path (default: next to this binary)",
     "FILE"},
    {"seccomp-dir", MS_FLAG_STRING, &seccomp_dir, "/etc/meseta/seccomp", "Directory of seccomp profiles",
     "DIR"},
    {"seccomp-default", MS_FLAG_STRING, &seccomp_default, "default",
     "Seccomp profile of tasks (\"unconfined\": no filter)", "NAME"},
    {"cgroup-parent", MS_FLAG_STRING, &cgroup_parent, "meseta", "Cgroup under which containers' cgroups go",
     "PATH"},
    {"switch-user", MS_FLAG_BOOL, &switch_user, "true", "Run tasks as their command's or framework's user"},
    {"max-kill-grace-period", MS_FLAG_DURATION, &max_grace_ns, "30s",
     "Cap of a task's SIGTERM → SIGKILL grace"},
    {"status-update-retry", MS_FLAG_DURATION, &retry_ns, "10s",
     "First resend of an unacknowledged status update (then doubling)"},
    {"status-update-retry-max", MS_FLAG_DURATION, &retry_max_ns, "10m", "Longest wait between resends"},
    {"reconnect-backoff", MS_FLAG_DURATION, &backoff_ns, "100ms",
     "First wait before reconnecting once every address failed (then doubling; a leader change "
     "reconnects at once)"},
    {"reconnect-backoff-max", MS_FLAG_DURATION, &backoff_max_ns, "2s", "Longest wait before reconnecting"},
    {"shutdown-grace", MS_FLAG_DURATION, &shutdown_ns, "35s",
     "When containers are ended at exit: how long they get before the agent exits anyway"},
    MS_LOG_FLAGS(&log_level, &log_format),
    {"ready-file", MS_FLAG_STRING, &ready_file, NULL, "Write the agent id here once registered", "FILE"},
    {"reconfiguration-policy", MS_FLAG_STRING, &reconfiguration_policy, "equal",
     "What a restart may change and keep the agent id: `equal` (nothing) or `additive` (add resources "
     "and attributes)",
     "POLICY"},
    {"isolation", MS_FLAG_STRING, &isolation, "linux/seccomp,cgroups/pids",
     "Optional isolators: linux/seccomp (the default profile), cgroups/pids, network/none (loopback only); "
     "namespaces and cpu/memory cgroups are always on",
     "LIST"},
    {"container-pids-limit", MS_FLAG_INT, &pids_limit, "4096", "Processes per container (cgroups/pids)", "N"},
    {"gc-delay", MS_FLAG_DURATION, &gc_delay_ns, "168h",
     "How long the sandbox and container directory of an ended task stay"},
    {"gc-interval", MS_FLAG_DURATION, &gc_interval_ns, "1h", "How often they are swept (0: never)"},
    {"region", MS_FLAG_STRING, &region, NULL, "Fault domain: the region (with --zone)", "NAME"},
    {"zone", MS_FLAG_STRING, &zone, NULL, "Fault domain: the zone within the region", "NAME"},
    {"tls-ca", MS_FLAG_STRING, &tls_ca, NULL,
     "CA that the allocator's certificate must chain to; enables TLS", "FILE"},
    {"tls-cert", MS_FLAG_STRING, &tls_cert, NULL, "This agent's certificate (PEM), for mutual TLS", "FILE"},
    {"tls-key", MS_FLAG_STRING, &tls_key, NULL, "This agent's key (PEM)", "FILE"},
    {"tls-server-name", MS_FLAG_STRING, &tls_server_name, NULL,
     "Name to verify the allocator's certificate against (default: from --allocator)", "NAME"},
    {"operator-tls-cert", MS_FLAG_STRING, &op_tls_cert, NULL,
     "AgentOperator's server certificate (PEM); enables TLS on --listen", "FILE"},
    {"operator-tls-key", MS_FLAG_STRING, &op_tls_key, NULL, "AgentOperator's server key (PEM)", "FILE"},
    {"operator-tls-ca", MS_FLAG_STRING, &op_tls_ca, NULL,
     "CA that AgentOperator's clients must present a certificate of (mutual TLS): who may read sandboxes "
     "and kill tasks",
     "FILE"},
    {"kill-containers-on-exit", MS_FLAG_BOOL, &kill_on_exit, "false",
     "At SIGTERM/SIGINT, end the containers too (default: leave them running for the next start to "
     "re-attach)"},
};

static const ms_flag_spec spec = {"meseta-agent", "Runs tasks on this machine for the meseta allocator.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

/* meseta-runtime beside this binary (installed), or in runtime/ below it (build tree). */
static char *default_runtime(void) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return ms_xstrdup("meseta-runtime");
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  *slash = '\0';
  char *p = ms_xasprintf("%s/meseta-runtime", self);
  if (access(p, X_OK) == 0)
    return p;
  free(p);
  p = ms_xasprintf("%s/runtime/meseta-runtime", self);
  if (access(p, X_OK) == 0)
    return p;
  free(p);
  return ms_xasprintf("%s/meseta-runtime", self);
}

/* Advertised in AgentInfo.address and .port, for clients that reach sandboxes (meseta
 * run, meseta task logs): the first TCP address bound, or --advertise-address. */
static int advertise_operator(agent *a, ms_rpc_server *srv, ms_error **err) {
  const char *bound = NULL;
  for (size_t i = 0; ms_rpc_server_address(srv, i) && !bound; i++)
    if (strncmp(ms_rpc_server_address(srv, i), "unix:", 5) != 0)
      bound = ms_rpc_server_address(srv, i);
  if (!bound && !advertise)
    return 0; /* unix sockets only: nothing to dial from elsewhere */
  char host[256] = "";
  if (hostname && *hostname)
    ms_strlcpy(host, hostname, sizeof(host));
  else
    gethostname(host, sizeof(host) - 1);
  _cleanup_free_ char *addr = NULL;
  if (ms_advertise_address("--advertise-address", advertise, bound ? bound : "", host, &addr, err) < 0)
    return MS_ERR;
  const char *colon = strrchr(addr, ':');
  long port = colon && strncmp(addr, "unix:", 5) != 0 ? strtol(colon + 1, NULL, 10) : 0;
  agent_set_operator_port(a, (int)port);
  agent_set_operator_address(a, addr);
  ms_log_info(NULL, "advertising AgentOperator at `%s`", addr);
  return 0;
}

static void on_signal(ms_loop *loop, int signo, void *arg) {
  agent *a = arg;
  ms_log_info(NULL, "signal %d: shutting down", signo);
  agent_begin_shutdown(a, kill_on_exit);
}

static int run(ms_error **err) {
  if (ms_service_log_init("meseta-agent", log_level, log_format, err) < 0)
    return MS_ERR;
  if (work_dir[0] != '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--work-dir`: `%s` is not an absolute path",
                        work_dir);
  if (volume_dir && volume_dir[0] != '/')
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--volume-dir`: `%s` is not an absolute path",
                        volume_dir);
  if (strcmp(reconfiguration_policy, "equal") != 0 && strcmp(reconfiguration_policy, "additive") != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "flag `--reconfiguration-policy`: `%s` is not `equal` or `additive`",
                        reconfiguration_policy);
  if (!!region != !!zone)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flags `--region` and `--zone`: give both or neither");
  if (!!op_tls_cert != !!op_tls_key || (op_tls_ca && !op_tls_cert))
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "flags `--operator-tls-cert` / `--operator-tls-key`: give both (and them with "
                        "`--operator-tls-ca`)");
  if (!!tls_cert != !!tls_key || (tls_cert && !tls_ca))
    return ms_error_set(
        err, MS_INVALID_ARGUMENT,
        "flags `--tls-cert` / `--tls-key`: give both, with `--tls-ca` to verify the allocator");
  if (link_timeout_ns < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--link-timeout`: must not be negative");
  static const char *const local[] = {"127.0.0.1:5053"};
  const char *const *targets = allocators.n ? (const char *const *)allocators.v : registry ? NULL : local;
  size_t n_targets = allocators.n ? allocators.n : registry ? 0 : 1;
  _cleanup_free_ char *shown = NULL;
  for (size_t i = 0; i < n_targets; i++) {
    char *next = ms_xasprintf("%s%s%s", shown ? shown : "", shown ? "," : "", targets[i]);
    free(shown);
    shown = next;
  }
  _cleanup_free_ char *rt = runtime ? ms_xstrdup(runtime) : default_runtime();
  agent_config cfg = {.work_dir = work_dir,
                      .volume_dir = volume_dir,
                      .allocator = shown ? shown : registry,
                      .allocators = targets,
                      .n_allocators = n_targets,
                      .registry = registry,
                      .link_timeout_ms = link_timeout_ns / 1000000,
                      .hostname = hostname,
                      .resources = resources,
                      .attributes = attributes,
                      .runtime = rt,
                      .seccomp_dir = seccomp_dir,
                      .seccomp_default = seccomp_default,
                      .cgroup_parent = cgroup_parent,
                      .switch_user = switch_user,
                      .max_kill_grace_ms = max_grace_ns / 1000000,
                      .status_retry_ms = retry_ns / 1000000 > 0 ? retry_ns / 1000000 : 1,
                      .status_retry_max_ms = retry_max_ns / 1000000 > 0 ? retry_max_ns / 1000000 : 1,
                      .reconnect_backoff_ms = backoff_ns / 1000000,
                      .reconnect_max_ms = backoff_max_ns / 1000000,
                      .shutdown_grace_ms = shutdown_ns / 1000000,
                      .reserve_mem_mb = reserve_mem / (1024 * 1024),
                      .ready_file = ready_file,
                      .reconfiguration_policy = reconfiguration_policy,
                      .kill_on_exit = kill_on_exit,
                      .isolation = isolation,
                      .pids_limit = pids_limit,
                      .gc_delay_ms = gc_delay_ns / 1000000,
                      .gc_interval_ms = gc_interval_ns / 1000000,
                      .region = region,
                      .zone = zone,
                      .tls_ca = tls_ca,
                      .tls_cert = tls_cert,
                      .tls_key = tls_key,
                      .tls_server_name = tls_server_name};
  ms_loop *loop = ms_loop_new(err);
  if (!loop)
    return MS_ERR;
  int rc = MS_ERR;
  agent *a = agent_new(&cfg, loop, err);
  ms_rpc_server *srv = NULL; /* AgentOperator: sandbox files (agent-files.c) */
  if (a && listen_addrs.n) {
    op_tls = (ms_rpc_tls){.cert_file = op_tls_cert, .key_file = op_tls_key, .ca_file = op_tls_ca};
    op_ctx =
        (agent_operator_ctx){.work_dir = work_dir, .a = a, .loop = loop, .tls = op_tls_cert ? &op_tls : NULL};
    if (!(srv = agent_operator_serve(&op_ctx, (const char *const *)listen_addrs.v, listen_addrs.n, err))) {
      ms_error_prefix(err, "flag `--listen`");
      goto out;
    }
    ms_log_info(NULL, "serving AgentOperator on %s", ms_rpc_server_address(srv, 0));
    if (advertise_operator(a, srv, err) < 0)
      goto out;
  } else if (a && advertise) {
    ms_error_set(err, MS_INVALID_ARGUMENT,
                 "flag `--advertise-address`: AgentOperator is not served (`--listen` \"\")");
    goto out;
  }
  if (!a || agent_start(a, err) < 0 || ms_loop_add_signal(loop, SIGTERM, on_signal, a, err) < 0 ||
      ms_loop_add_signal(loop, SIGINT, on_signal, a, err) < 0)
    goto out;
  ms_log_info(NULL, "work dir `%s`, runtime `%s`, allocator `%s`%s%s%s", work_dir, rt, shown ? shown : "",
              registry ? " (leader from registry `" : "", registry ? registry : "", registry ? "`)" : "");
  rc = ms_loop_run(loop, err);
out:
  if (srv)
    ms_rpc_server_shutdown(srv, 1000);
  /* KillTask calls wait on the loop: run what they posted, so the server's references go. */
  while (srv && ms_loop_run_once(loop, 0, NULL) > 0)
    ;
  agent_operator_free(srv, &op_ctx);
  agent_free(a);
  ms_loop_free(loop);
  return rc;
}

int main(int argc, char **argv) {
  return ms_service_main(argc, argv, &spec, run);
}
