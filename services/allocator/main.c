/* meseta-allocator: the cluster's live model and its allocation cycle, over gRPC. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/advertise.h"
#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/loop.h"
#include "meseta/service.h"
#include "meseta/time.h"

#include "alloc-leader.h"
#include "alloc-service.h"

static ms_server_flags sf;
static ms_strv etcd_endpoints;
static char *advertise, *role_sorter, *framework_sorter, *excluded, *min_alloc, *region, *election;
static char *etcd_ca, *etcd_cert, *etcd_key, *registry;
static int64_t interval_ns, offer_timeout_ns, heartbeat_ns, etcd_timeout_ns, lease_ns, registry_timeout_ns,
    recovery_timeout_ns, agent_reconnect_ns, max_done_per_fw, max_done, max_done_fws, stream_queue,
    max_offers, max_silent;
static double recovery_fraction;

static const ms_flag flags[] = {
    MS_SERVER_FLAGS(sf, "0.0.0.0:5053", "4MiB", "5s"),
    {"advertise-address", MS_FLAG_STRING, &advertise, NULL,
     "The address agents and master-api reach this allocator at, HOST:PORT (default: the first bound "
     "address, with this machine's hostname for an unspecified host such as 0.0.0.0 or [::]; an "
     "unspecified host here is refused)",
     "ADDR"},
    {"allocation-interval", MS_FLAG_DURATION, &interval_ns, "1s", "How often an allocation cycle runs"},
    {"offer-timeout", MS_FLAG_DURATION, &offer_timeout_ns, "30s",
     "How long an offer stays outstanding before it is rescinded; the framework then gets no offers for "
     "5s, doubling with each further expiry until it answers, at most 5min, and ranks last until it "
     "answers (0: forever, and one silent framework can hold every agent)"},
    {"max-offers-per-framework", MS_FLAG_INT, &max_offers, "1000",
     "Outstanding offers one framework may hold; past it, it gets no more until it answers (0: no bound)",
     "N"},
    {"max-silent-frameworks", MS_FLAG_INT, &max_silent, "2",
     "Frameworks that have not answered since they subscribed (or since an offer of theirs expired) "
     "that may hold offers at once; the others wait their turn (0: no bound)",
     "N"},
    {"role-sorter", MS_FLAG_STRING, &role_sorter, "drf", "How roles are ordered: drf or random", "SORTER"},
    {"framework-sorter", MS_FLAG_STRING, &framework_sorter, "drf",
     "How frameworks are ordered: drf or random", "SORTER"},
    {"fair-share-excluded-resource-names", MS_FLAG_STRING, &excluded, NULL,
     "Resource names DRF leaves out of shares, comma-separated (e.g. gpus)", "NAMES"},
    {"min-allocatable-resources", MS_FLAG_STRING, &min_alloc, NULL,
     "Smallest offer, an OR of ANDs: cpus:0.01,mem:32|disk:64 (default: cpus:0.01|mem:32)", "SPEC"},
    {"region", MS_FLAG_STRING, &region, NULL,
     "The local region: agents elsewhere go only to REGION_AWARE frameworks", "REGION"},
    {"heartbeat-interval", MS_FLAG_DURATION, &heartbeat_ns, "1s",
     "How often frameworks get HEARTBEAT and agents PING (agents leave a leader silent for 3 of these)"},
    {"etcd-endpoints", MS_FLAG_LIST, &etcd_endpoints, NULL,
     "etcd client URLs for leader election (none: lead alone, for tests and single-node setups)", "URL"},
    {"etcd-timeout", MS_FLAG_DURATION, &etcd_timeout_ns, "5s", "Timeout of one etcd request"},
    {"etcd-ca", MS_FLAG_STRING, &etcd_ca, NULL, "CA bundle to verify etcd's certificate", "FILE"},
    {"etcd-cert", MS_FLAG_STRING, &etcd_cert, NULL, "Client certificate for etcd", "FILE"},
    {"etcd-key", MS_FLAG_STRING, &etcd_key, NULL, "Client key for etcd", "FILE"},
    {"election", MS_FLAG_STRING, &election, "meseta-allocator", "The etcd election allocators campaign in",
     "NAME"},
    {"leader-lease", MS_FLAG_DURATION, &lease_ns, "2s",
     "The leader's lease (whole seconds, etcd's minimum is about 2s): a dead or frozen leader is replaced "
     "about this long after it stops renewing, and stops acting on its own a tenth before"},
    {"registry", MS_FLAG_STRING, &registry, NULL,
     "meseta-registry's address: durable admissions and frameworks, loaded by a new leader (none: nothing is "
     "durable)",
     "ADDR"},
    {"registry-timeout", MS_FLAG_DURATION, &registry_timeout_ns, "5s", "Deadline of one registry call"},
    {"recovery-agent-fraction", MS_FLAG_DOUBLE, &recovery_fraction, "0.8",
     "A new leader makes no offer until this share of the admitted agents has re-registered...", "FRACTION"},
    {"recovery-timeout", MS_FLAG_DURATION, &recovery_timeout_ns, "30s", "... or this long has passed"},
    {"agent-reconnect-timeout", MS_FLAG_DURATION, &agent_reconnect_ns, "75s",
     "How long an agent whose stream ended keeps its tasks (offering nothing) before they are lost"},
    {"max-completed-tasks-per-framework", MS_FLAG_INT, &max_done_per_fw, "1000",
     "Completed tasks kept per framework for the operator API (oldest forgotten first)", "N"},
    {"max-completed-tasks", MS_FLAG_INT, &max_done, "10000", "Completed tasks kept in all", "N"},
    {"max-completed-frameworks", MS_FLAG_INT, &max_done_fws, "1000",
     "Torn-down frameworks kept for the operator API (oldest forgotten first); a subscription with a kept "
     "one's id is refused",
     "N"},
    {"stream-queue", MS_FLAG_INT, &stream_queue, "65536",
     "Messages a stream (framework, agent, state watcher) may have waiting to be sent before it is "
     "ended as too slow: bursts (e.g. many tasks ending at once) must fit",
     "N"},
};

static const ms_flag_spec spec = {"meseta-allocator",
                                  "Holds the cluster's live model and offers its resources to frameworks.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

typedef struct app {
  ms_loop *loop;
  alloc_service *svc;
  alloc_leader *leader; /* NULL: leading alone; under fence_mu */
  bool elected;         /* leadership comes from an election (else: leading alone) */
  bool leading;         /* the service was told it leads */
  pthread_mutex_t fence_mu;
} app;

/* The registry worker, before each request: only a valid leader writes. */
static bool registry_fence(void *arg) {
  app *a = arg;
  pthread_mutex_lock(&a->fence_mu);
  bool ok = !a->elected || alloc_leader_valid(a->leader);
  pthread_mutex_unlock(&a->fence_mu);
  return ok;
}

typedef struct lead_news {
  app *a;
  bool leading;
} lead_news;

static void on_signal(ms_loop *loop, int signo, void *arg) {
  (void)arg;
  ms_log_info(NULL, "signal %d: shutting down", signo);
  ms_loop_stop(loop);
}

static void lead_changed(void *arg) {
  lead_news *n = arg;
  app *a = n->a;
  if (n->leading && alloc_leader_valid(a->leader)) {
    a->leading = true;
    alloc_service_set_leading(a->svc, true);
  } else if (!n->leading && a->leading) {
    /* The model cannot be trusted past the lease: drop it, end every stream, and
     * campaign again as a standby (the election thread already does). */
    ms_log_warn(NULL, "leadership lost: standby again");
    a->leading = false;
    alloc_service_set_leading(a->svc, false);
  }
  free(n);
}

/* Before every event the owner thread handles (ms_loop_set_guard): a leader whose
 * local lease deadline passed steps down first, even when etcd has not said so yet
 * (this process was frozen, or cut off from etcd): nothing is handled after it. */
static void fence(void *arg) {
  app *a = arg;
  if (!a->leading || alloc_leader_valid(a->leader))
    return;
  ms_log_warn(NULL, "the leader lease's local deadline passed (frozen, or cut off from etcd): stepping down "
                    "before handling anything");
  a->leading = false;
  alloc_service_set_leading(a->svc, false);
}

/* The election thread: hand the news to the owner thread. */
static void on_lead(void *arg, bool leading) {
  app *a = arg;
  lead_news *n = ms_xmalloc(sizeof(*n));
  *n = (lead_news){a, leading};
  ms_loop_post(a->loop, lead_changed, n);
}

static int run(ms_error **err) {
  ms_rpc_tls tls;
  ms_rpc_server_options so;
  if (ms_server_setup("meseta-allocator", &sf, &tls, &so, err) < 0)
    return MS_ERR;
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  app a = {.elected = etcd_endpoints.n > 0};
  pthread_mutex_init(&a.fence_mu, NULL);
  alloc_service_config cfg = {.registry_fence = registry_fence,
                              .registry_fence_arg = &a,
                              .allocation_interval_ms = interval_ns / 1000000,
                              .offer_timeout_ms = offer_timeout_ns / 1000000,
                              .max_offers_per_framework = max_offers,
                              .max_silent_frameworks = max_silent,
                              .heartbeat_interval_ms = heartbeat_ns / 1000000,
                              .fair_share_excluded = excluded,
                              .min_allocatable = min_alloc,
                              .local_region = region,
                              .hostname = host,
                              .registry = registry,
                              .registry_timeout_ms = registry_timeout_ns / 1000000,
                              .recovery_agent_fraction = recovery_fraction,
                              .recovery_timeout_ms = recovery_timeout_ns / 1000000,
                              .agent_reconnect_timeout_ms = agent_reconnect_ns / 1000000,
                              .max_completed_tasks_per_framework = max_done_per_fw,
                              .max_completed_tasks = max_done,
                              .max_completed_frameworks = max_done_fws};
  if (alloc_sorter_parse(role_sorter, "--role-sorter", &cfg.role_sorter, err) < 0 ||
      alloc_sorter_parse(framework_sorter, "--framework-sorter", &cfg.framework_sorter, err) < 0) {
    pthread_mutex_destroy(&a.fence_mu);
    return MS_ERR;
  }

  ms_rpc_server *srv = NULL;
  ms_etcd *etcd = NULL;
  alloc_leader *leader = NULL;
  _cleanup_free_ char *advertised = NULL;
  int rc = MS_ERR;
  so.max_queued_sends = stream_queue > 0 ? (size_t)stream_queue : 0;
  if (!(a.loop = ms_loop_new(err)) || !(srv = ms_rpc_server_new(&so, err)))
    goto out;
  if (ms_advertise_address("--advertise-address", advertise, ms_rpc_server_address(srv, 0), host, &advertised,
                           err) < 0)
    goto out;
  cfg.advertise_address = advertised;
  ms_log_info(NULL, "advertising `%s`", advertised);
  if (!(a.svc = alloc_service_new(&cfg, a.loop, err)) || alloc_service_add(a.svc, srv, err) < 0 ||
      ms_rpc_server_start(srv, err) < 0)
    goto out;
  if (etcd_endpoints.n) {
    /* ms_rpc_server_start reports the server SERVING: a standby is not. */
    ms_rpc_server_set_health(srv, "", false);
    ms_etcd_options eo = {.endpoints = (const char *const *)etcd_endpoints.v,
                          .n_endpoints = etcd_endpoints.n,
                          .request_timeout_ms = etcd_timeout_ns / 1000000,
                          .ca_file = etcd_ca,
                          .cert_file = etcd_cert,
                          .key_file = etcd_key};
    if (!(etcd = ms_etcd_new(&eo, err))) {
      ms_error_prefix(err, "flag `--etcd-endpoints`");
      goto out;
    }
    if (lease_ns < MS_NSEC_PER_SEC) {
      ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--leader-lease`: at least 1s (etcd's TTLs are seconds)");
      goto out;
    }
    if (!(leader = alloc_leader_start(etcd, election, cfg.advertise_address, lease_ns / MS_NSEC_PER_SEC,
                                      on_lead, &a, err)))
      goto out;
    pthread_mutex_lock(&a.fence_mu);
    a.leader = leader;
    pthread_mutex_unlock(&a.fence_mu);
    ms_loop_set_guard(a.loop, fence, &a);
    ms_log_info(NULL, "standby: campaigning in election `%s`", election);
  } else {
    ms_log_info(NULL, "no `--etcd-endpoints`: leading alone");
    alloc_service_set_leading(a.svc, true);
  }
  if (ms_server_ready(&sf, srv, err) < 0)
    goto out;
  ms_log_info(NULL, "serving on %s", ms_rpc_server_address(srv, 0));
  if (ms_loop_add_signal(a.loop, SIGTERM, on_signal, NULL, err) < 0 ||
      ms_loop_add_signal(a.loop, SIGINT, on_signal, NULL, err) < 0)
    goto out;
  rc = ms_loop_run(a.loop, err);
out:
  if (a.loop)
    ms_loop_set_guard(a.loop, NULL, NULL);
  pthread_mutex_lock(&a.fence_mu);
  a.leader = NULL; /* news still queued, and the registry worker, find no candidacy */
  pthread_mutex_unlock(&a.fence_mu);
  alloc_leader_stop(leader); /* resign first: a standby takes over at once */
  a.leading = false;
  if (a.svc)
    alloc_service_close(a.svc);
  if (srv)
    ms_rpc_server_shutdown(srv, sf.grace_ns / 1000000);
  if (a.svc)
    alloc_service_drain(a.svc);
  ms_rpc_server_free(srv);
  alloc_service_free(a.svc);
  ms_loop_free(a.loop);
  ms_etcd_free(etcd);
  pthread_mutex_destroy(&a.fence_mu);
  return rc;
}

int main(int argc, char **argv) {
  return ms_service_main(argc, argv, &spec, run);
}
