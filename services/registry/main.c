/* meseta-registry: the cluster's durable records, in etcd, over gRPC. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/loop.h"
#include "meseta/service.h"
#include "meseta/time.h"

#include "registry-service.h"

static ms_server_flags sf;
static ms_strv etcd_endpoints;
static char *etcd_ca, *etcd_cert, *etcd_key, *etcd_user, *etcd_password;
static char *prefix, *election;
static int64_t etcd_timeout_ns, workers, committers, max_gone, gone_ttl_ns, max_unreachable,
    unreachable_ttl_ns, max_completed, retention_ns, health_ns;

static const ms_flag flags[] = {
    MS_SERVER_FLAGS(sf, "0.0.0.0:5052", "4MiB", "10s"),
    {"etcd-endpoints", MS_FLAG_LIST, &etcd_endpoints, "http://127.0.0.1:2379", "etcd client URLs", "URL"},
    {"etcd-timeout", MS_FLAG_DURATION, &etcd_timeout_ns, "5s", "Timeout of one etcd request"},
    {"etcd-ca", MS_FLAG_STRING, &etcd_ca, NULL, "CA bundle to verify etcd's certificate", "FILE"},
    {"etcd-cert", MS_FLAG_STRING, &etcd_cert, NULL, "Client certificate for etcd", "FILE"},
    {"etcd-key", MS_FLAG_STRING, &etcd_key, NULL, "Client key for etcd", "FILE"},
    {"etcd-username", MS_FLAG_STRING, &etcd_user, NULL, "etcd user (auth enabled)", "USER"},
    {"etcd-password", MS_FLAG_STRING, &etcd_password, NULL, "etcd password", "PASSWORD"},
    {"key-prefix", MS_FLAG_STRING, &prefix, "/meseta", "Where the records live in etcd", "PREFIX"},
    {"election", MS_FLAG_STRING, &election, "meseta-allocator", "The allocator's election, for WatchLeader",
     "NAME"},
    {"workers", MS_FLAG_INT, &workers, "4", "Threads serving listings and watch streams", "N"},
    {"committers", MS_FLAG_INT, &committers, "2",
     "Threads committing to etcd; fewer make bigger groups of writes per transaction", "N"},
    {"max-gone-agents", MS_FLAG_INT, &max_gone, "1000", "Gone agents kept (0: no limit)", "N"},
    {"gone-agent-ttl", MS_FLAG_DURATION, &gone_ttl_ns, "720h", "How long gone agents are kept (0: forever)"},
    {"max-unreachable-agents", MS_FLAG_INT, &max_unreachable, "10000",
     "Unreachable agents kept (0: no limit)", "N"},
    {"unreachable-agent-ttl", MS_FLAG_DURATION, &unreachable_ttl_ns, "336h",
     "How long unreachable agents are kept (0: forever)"},
    {"max-completed-frameworks", MS_FLAG_INT, &max_completed, "1000",
     "Completed frameworks kept (0: no limit)", "N"},
    {"retention-interval", MS_FLAG_DURATION, &retention_ns, "1m", "How often retention limits are applied"},
    {"health-interval", MS_FLAG_DURATION, &health_ns, "1s",
     "How often etcd is checked for the health service"},
};

static const ms_flag_spec spec = {"meseta-registry",
                                  "Keeps meseta's cluster records in etcd and serves them over gRPC.", flags,
                                  MS_ARRAY_SIZE(flags), NULL};

typedef struct app {
  ms_rpc_server *srv;
  reg_service *svc;
  bool etcd_ok;
  bool known;
} app;

static void on_signal(ms_loop *loop, int signo, void *arg) {
  ms_log_info(NULL, "signal %d: shutting down", signo);
  ms_loop_stop(loop);
}

static void health_tick(ms_loop *loop, uint64_t id, void *arg) {
  app *a = arg;
  ms_error *err = NULL;
  bool ok = reg_etcd_check(a->svc, &err) == 0;
  if (!a->known || ok != a->etcd_ok) {
    if (ok)
      ms_log_info(NULL, "etcd reachable: serving");
    else
      ms_log_warn(NULL, "etcd unreachable, not serving: %s", err->msg);
    ms_rpc_server_set_health(a->srv, "", ok);
    ms_rpc_server_set_health(a->srv, "meseta.v1.Registry", ok);
    a->etcd_ok = ok;
    a->known = true;
  }
  ms_error_free(err);
}

static void retention_tick(ms_loop *loop, uint64_t id, void *arg) {
  app *a = arg;
  if (!a->etcd_ok)
    return;
  ms_error *err = NULL;
  size_t pruned = 0;
  if (reg_retention_run(a->svc, ms_time_real_ms(), &pruned, &err) < 0) {
    ms_log_warn(NULL, "%s", err->msg);
    ms_error_free(err);
  } else if (pruned) {
    ms_log_info(NULL, "retention: pruned %zu records", pruned);
  }
}

static int run(ms_error **err) {
  ms_rpc_tls tls;
  ms_rpc_server_options so;
  if (ms_server_setup("meseta-registry", &sf, &tls, &so, err) < 0)
    return MS_ERR;
  if (workers < 1 || workers > 256)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--workers`: %lld is not between 1 and 256",
                        (long long)workers);
  if (committers < 1 || committers > 64)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--committers`: %lld is not between 1 and 64",
                        (long long)committers);

  ms_etcd_options eo = {.endpoints = (const char *const *)etcd_endpoints.v,
                        .n_endpoints = etcd_endpoints.n,
                        .request_timeout_ms = etcd_timeout_ns / 1000000,
                        .ca_file = etcd_ca,
                        .cert_file = etcd_cert,
                        .key_file = etcd_key,
                        .username = etcd_user,
                        .password = etcd_password};
  ms_etcd *etcd = ms_etcd_new(&eo, err);
  if (!etcd)
    return ms_error_prefix(err, "flag `--etcd-endpoints`");
  reg_config cfg = {.prefix = prefix,
                    .election = election,
                    .workers = (size_t)workers,
                    .committers = (size_t)committers,
                    .max_gone_agents = max_gone,
                    .gone_agent_ttl_ms = gone_ttl_ns / 1000000,
                    .max_unreachable_agents = max_unreachable,
                    .unreachable_agent_ttl_ms = unreachable_ttl_ns / 1000000,
                    .max_completed_frameworks = max_completed,
                    .max_message_bytes = sf.max_message};
  app a = {0};
  ms_loop *loop = NULL;
  int rc = MS_ERR;
  if (!(a.svc = reg_service_new(&cfg, etcd, err)) || !(a.srv = ms_rpc_server_new(&so, err)) ||
      reg_service_add(a.svc, a.srv, err) < 0 || ms_rpc_server_start(a.srv, err) < 0 ||
      !(loop = ms_loop_new(err)))
    goto out;
  health_tick(loop, 0, &a); /* know etcd's state before saying we are ready */
  if (ms_server_ready(&sf, a.srv, err) < 0)
    goto out;
  ms_log_info(NULL, "serving on %s, records under `%s` in etcd %s", ms_rpc_server_address(a.srv, 0), prefix,
              ms_etcd_current_endpoint(etcd));
  ms_loop_add_timer(loop, health_ns / 1000000, health_ns / 1000000, health_tick, &a);
  ms_loop_add_timer(loop, 1000, retention_ns / 1000000, retention_tick, &a);
  if (ms_loop_add_signal(loop, SIGTERM, on_signal, NULL, err) < 0 ||
      ms_loop_add_signal(loop, SIGINT, on_signal, NULL, err) < 0)
    goto out;
  rc = ms_loop_run(loop, err);
out:
  if (a.srv)
    ms_rpc_server_shutdown(a.srv, sf.grace_ns / 1000000);
  ms_rpc_server_free(a.srv);
  reg_service_free(a.svc);
  ms_loop_free(loop);
  ms_etcd_free(etcd);
  return rc;
}

int main(int argc, char **argv) {
  return ms_service_main(argc, argv, &spec, run);
}
