/* meseta-master-api: the public Scheduler and Operator APIs, relayed to the
 * allocator leader and answered from a read view of its state. Stateless: run as
 * many replicas as needed behind one address. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/log.h"
#include "meseta/loop.h"
#include "meseta/service.h"

#include "mapi-auth.h"
#include "mapi-service.h"

static ms_server_flags sf;
static char *allocator, *registry, *name, *alloc_ca, *alloc_cert, *alloc_key;
static int64_t forwarders, call_timeout_ns, revision_wait_ns, backoff_ns, chunk_bytes;

static int64_t subscriber_queue; /* Operator.Subscribe */
static int64_t stream_queue;     /* any stream's send queue, in messages */
static int64_t max_subs;         /* Scheduler.Subscribe streams per principal */
static int64_t max_reads;        /* reads queued or parked */

static char *tokens_file; /* Identity (mapi-auth.h) */
static bool require_auth;

static const ms_flag flags[] = {
    MS_SERVER_FLAGS(sf, "0.0.0.0:5050", "16MiB", "5s"),
    {"allocator", MS_FLAG_STRING, &allocator, NULL,
     "A fixed allocator address (e.g. a Service routing to the leader); or --registry", "ADDR"},
    {"registry", MS_FLAG_STRING, &registry, NULL,
     "Follow the allocator leader through this registry's WatchLeader; or --allocator", "ADDR"},
    {"name", MS_FLAG_STRING, &name, NULL, "This replica's name, for the allocator's logs (default: hostname)",
     "NAME"},
    {"forwarders", MS_FLAG_INT, &forwarders, "8", "Threads relaying unary calls to the allocator", "N"},
    {"call-timeout", MS_FLAG_DURATION, &call_timeout_ns, "30s",
     "Deadline of a relayed call when the caller gave a longer one or none"},
    {"max-revision-wait", MS_FLAG_DURATION, &revision_wait_ns, "60s",
     "How long a read waits at most for its min_revision (its own deadline may be shorter)"},
    {"max-backoff", MS_FLAG_DURATION, &backoff_ns, "5s",
     "Longest wait between attempts to reach the allocator"},
    {"state-chunk-bytes", MS_FLAG_BYTES, &chunk_bytes, "1MiB",
     "Largest snapshot chunk asked of the allocator"},
    {"subscriber-queue-bytes", MS_FLAG_BYTES, &subscriber_queue, "8MiB",
     "Operator.Subscribe: events one subscriber may leave waiting before its stream is cut"},
    {"allocator-ca", MS_FLAG_STRING, &alloc_ca, NULL,
     "CA to verify the allocator's certificate (enables TLS)", "FILE"},
    {"allocator-cert", MS_FLAG_STRING, &alloc_cert, NULL, "Client certificate for the allocator", "FILE"},
    {"allocator-key", MS_FLAG_STRING, &alloc_key, NULL, "Client key for the allocator", "FILE"},
    {"tokens-file", MS_FLAG_STRING, &tokens_file, NULL,
     "Bearer tokens, JSON {\"tokens\":[{\"token\",\"principal\",\"claims\"}]}; re-read on SIGHUP", "FILE"},
    {"require-auth", MS_FLAG_BOOL, &require_auth, "false",
     "Refuse anonymous callers (UNAUTHENTICATED): a bearer token or a client certificate is required"},
    {"stream-queue", MS_FLAG_INT, &stream_queue, "65536",
     "Messages a stream (a scheduler's events) may have waiting to be sent before it is ended as too "
     "slow",
     "N"},
    {"max-subscriptions-per-principal", MS_FLAG_INT, &max_subs, "100",
     "Scheduler.Subscribe streams one principal may hold on this replica (anonymous callers: per "
     "peer host); past it RESOURCE_EXHAUSTED; 0: no limit",
     "N"},
    {"max-queued-reads", MS_FLAG_INT, &max_reads, "1024",
     "Operator reads waiting to be served or parked on min_revision; past it a read gets "
     "RESOURCE_EXHAUSTED",
     "N"},
};

static const ms_flag_spec spec = {"meseta-master-api",
                                  "Serves meseta's Scheduler and Operator APIs, relaying to the allocator.",
                                  flags, MS_ARRAY_SIZE(flags), NULL};

static void on_signal(ms_loop *loop, int signo, void *arg) {
  (void)arg;
  ms_log_info(NULL, "signal %d: shutting down", signo);
  ms_loop_stop(loop);
}

/* SIGHUP: the tokens file again; a bad file keeps the tokens in use. */
static void on_hup(ms_loop *loop, int signo, void *arg) {
  (void)loop, (void)signo;
  ms_error *err = NULL;
  if (!tokens_file)
    ms_log_info(NULL, "SIGHUP: no --tokens-file to reload");
  else if (mapi_auth_reload(arg, &err) < 0)
    ms_log_error(NULL, "SIGHUP: %s; the tokens loaded before stay in use", err->msg);
  else
    ms_log_info(NULL, "SIGHUP: %zu bearer tokens loaded from `%s`", mapi_auth_count(arg), tokens_file);
  ms_error_free(err);
}

static int run(ms_error **err) {
  ms_rpc_tls tls;
  ms_rpc_server_options so;
  if (ms_server_setup("meseta-master-api", &sf, &tls, &so, err) < 0)
    return MS_ERR;
  if (!allocator == !registry)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flags `--allocator` and `--registry`: give exactly one");
  if (forwarders < 1 || forwarders > 256)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--forwarders`: %lld is not between 1 and 256",
                        (long long)forwarders);
  if (max_subs < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--max-subscriptions-per-principal`: %lld is below 0",
                        (long long)max_subs);
  if (max_reads < 1)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--max-queued-reads`: %lld is below 1",
                        (long long)max_reads);
  if (chunk_bytes < 0 || chunk_bytes > UINT32_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--state-chunk-bytes`: out of range");
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  ms_rpc_tls atls = {.cert_file = alloc_cert, .key_file = alloc_key, .ca_file = alloc_ca};
  mapi_config cfg = {.allocator = allocator,
                     .registry = registry,
                     .name = name ? name : host,
                     .forwarders = (size_t)forwarders,
                     .call_timeout_ms = call_timeout_ns / 1000000,
                     .max_revision_wait_ms = revision_wait_ns / 1000000,
                     .max_backoff_ms = backoff_ns / 1000000,
                     .max_chunk_bytes = (uint32_t)chunk_bytes,
                     .max_message_bytes = sf.max_message,
                     .subscriber_queue_bytes = (size_t)subscriber_queue,
                     .max_subscriptions_per_principal = (size_t)max_subs,
                     .max_queued_reads = (size_t)max_reads,
                     .allocator_tls = alloc_ca ? &atls : NULL};
  so.max_queued_sends = stream_queue > 0 ? (size_t)stream_queue : 0;
  mapi_auth *auth = mapi_auth_new(tokens_file, require_auth, err);
  if (!auth)
    return MS_ERR;
  cfg.auth = auth;
  if (!sf.tls_ca && !tokens_file && require_auth)
    ms_log_warn(NULL, "--require-auth without --tokens-file or --tls-ca: every call will be refused");
  mapi_service *svc = NULL;
  ms_rpc_server *srv = NULL;
  ms_loop *loop = NULL;
  int rc = MS_ERR;
  if (!(loop = ms_loop_new(err)) || !(svc = mapi_service_new(&cfg, err)) ||
      !(srv = ms_rpc_server_new(&so, err)) || mapi_service_add(svc, srv, err) < 0 ||
      ms_rpc_server_start(srv, err) < 0 || mapi_service_start(svc, err) < 0)
    goto out;
  if (ms_server_ready(&sf, srv, err) < 0)
    goto out;
  ms_log_info(NULL, "serving on %s, allocator %s %s", ms_rpc_server_address(srv, 0),
              allocator ? "at" : "leader from the registry at", allocator ? allocator : registry);
  if (ms_loop_add_signal(loop, SIGTERM, on_signal, NULL, err) < 0 ||
      ms_loop_add_signal(loop, SIGINT, on_signal, NULL, err) < 0 ||
      ms_loop_add_signal(loop, SIGHUP, on_hup, auth, err) < 0)
    goto out;
  ms_log_info(NULL, "identity: %zu bearer tokens, %s, anonymous callers %s", mapi_auth_count(auth),
              sf.tls_ca ? "client certificates" : "no client certificates",
              require_auth ? "refused" : "allowed");
  rc = ms_loop_run(loop, err);
out:
  mapi_service_close(svc); /* streams to the allocator cancelled, their callers answered */
  if (srv)
    ms_rpc_server_shutdown(srv, sf.grace_ns / 1000000);
  ms_rpc_server_free(srv);
  mapi_service_free(svc);
  mapi_auth_free(auth);
  ms_loop_free(loop);
  return rc;
}

int main(int argc, char **argv) {
  /* SIGHUP reloads the tokens file (a signalfd): blocked before any thread starts. */
  static const int hup[] = {SIGHUP};
  if (ms_signals_block(hup, 1, NULL) < 0)
    return 1;
  return ms_service_main(argc, argv, &spec, run);
}
