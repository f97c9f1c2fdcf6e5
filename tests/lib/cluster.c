#include "cluster.h"

#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"

#include "grpc/health/v1/health.pb-c.h"

ms_test_proc *ms_test_start(const char *name, const char *dir, const char *const *argv) {
  ms_error *err = NULL;
  ms_test_proc *p = ms_test_proc_start(name, dir, argv, &err);
  if (!p)
    fprintf(stderr, "%s: %s\n", name, err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  return p;
}

void ms_test_cluster_start(ms_test_cluster *c, ms_test_etcd *etcd, const char *dir, const char *tag, int n,
                           const char *recovery_timeout) {
  _cleanup_free_ char *reg = ms_test_binary("services/registry/meseta-registry");
  _cleanup_free_ char *bin = ms_test_binary("services/allocator/meseta-allocator");
  _cleanup_free_ char *prefix = ms_xasprintf("/test/%s", tag);
  _cleanup_free_ char *election = ms_xasprintf("alloc-%s", tag);
  _cleanup_free_ char *rname = ms_xasprintf("registry-%s", tag);
  const char *ep = ms_test_etcd_endpoint(etcd);
  const char *rargv[] = {
      reg,          "--listen", "127.0.0.1:0", "--etcd-endpoints", ep, "--key-prefix", prefix,
      "--election", election,   NULL};
  *c = (ms_test_cluster){.registry = ms_test_start(rname, dir, rargv),
                         .n = n < MS_TEST_MAX_ALLOCATORS ? n : MS_TEST_MAX_ALLOCATORS};
  for (int i = 0; i < c->n; i++) {
    _cleanup_free_ char *name = ms_xasprintf("allocator-%s-%d", tag, i);
    const char *argv[] = {bin,
                          "--listen",
                          "127.0.0.1:0",
                          "--allocation-interval",
                          "100ms",
                          "--heartbeat-interval",
                          "1s",
                          "--etcd-endpoints",
                          ep,
                          "--election",
                          election,
                          "--leader-lease",
                          "2s",
                          "--registry",
                          ms_test_proc_address(c->registry),
                          "--recovery-timeout",
                          recovery_timeout,
                          "--log-level",
                          "debug",
                          NULL};
    c->alloc[i] = ms_test_start(name, dir, argv);
    c->addr[i] = ms_test_proc_address(c->alloc[i]);
  }
}

void ms_test_cluster_stop(ms_test_cluster *c) {
  for (int i = 0; i < c->n; i++)
    if (c->alloc[i]) {
      int rc = ms_test_proc_stop(c->alloc[i], SIGTERM);
      CU_ASSERT(rc == 0 || rc == 128 + SIGKILL);
      ms_test_proc_free(c->alloc[i]);
      c->alloc[i] = NULL;
    }
  CU_ASSERT_EQUAL(ms_test_proc_stop(c->registry, SIGTERM), 0);
  ms_test_proc_free(c->registry);
  c->registry = NULL;
}

int ms_test_health(const char *addr) {
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, NULL, NULL);
  if (!ch)
    return -1;
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = "";
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 2000};
  int r = -1;
  if (ms_rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                   &grpc__health__v1__health_check_response__descriptor, &co, &resp, NULL) == 0) {
    r = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  ms_rpc_channel_free(ch);
  return r;
}

int ms_test_cluster_leader(ms_test_cluster *c) {
  int leader = -1;
  for (int i = 0; i < c->n; i++) {
    if (!c->alloc[i])
      continue;
    int h = ms_test_health(c->addr[i]);
    if (h == 1) {
      if (leader >= 0)
        return -1; /* two say they serve */
      leader = i;
    } else if (h != 0) {
      return -1; /* one does not answer yet */
    }
  }
  return leader;
}

int ms_test_cluster_wait_leader(ms_test_cluster *c, int64_t timeout_ms) {
  for (int64_t waited = 0; waited <= timeout_ms; waited += 50) {
    int leader = ms_test_cluster_leader(c);
    if (leader >= 0)
      return leader;
    usleep(50000);
  }
  return -1;
}

ms_status ms_test_call(const char *addr, const ms_rpc_channel_options *co, const char *const *md,
                       const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                       int64_t timeout_ms, ProtobufCMessage **resp, char **msg) {
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, co, &err);
  ms_status code = MS_OK;
  ProtobufCMessage *r = NULL;
  ms_rpc_call_options o = {.timeout_ms = timeout_ms, .metadata = md};
  if (!ch || ms_rpc_unary(ch, method, req, rd, &o, &r, &err) < 0) {
    code = err->code;
    if (msg)
      *msg = ms_xstrdup(err->msg);
    ms_error_free(err);
  } else if (resp) {
    *resp = r;
  } else {
    protobuf_c_message_free_unpacked(r, NULL);
  }
  ms_rpc_channel_free(ch);
  return code;
}

ms_test_proc *ms_test_allocator_start(const char *dir, const char *name, const char *const *extra) {
  _cleanup_free_ char *bin = ms_test_binary("services/allocator/meseta-allocator");
  const char *argv[32] = {bin,     "--listen",    "127.0.0.1:0", "--allocation-interval",
                          "100ms", "--log-level", "debug"};
  size_t n = 7;
  for (size_t i = 0; extra && extra[i] && n < MS_ARRAY_SIZE(argv) - 1; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  return ms_test_start(name, dir, argv);
}

ms_test_proc *ms_test_mapi_start(const char *dir, const char *name, const char *const *flags, bool wait) {
  _cleanup_free_ char *bin = ms_test_binary("services/master-api/meseta-master-api");
  const char *argv[40] = {bin, "--listen", "127.0.0.1:0", "--name", name, "--log-level", "debug"};
  size_t n = 7;
  for (size_t i = 0; flags && flags[i] && n < MS_ARRAY_SIZE(argv) - 1; i++)
    argv[n++] = flags[i];
  argv[n] = NULL;
  ms_test_proc *p = ms_test_start(name, dir, argv);
  int64_t waited = 0;
  for (; wait && ms_test_health(ms_test_proc_address(p)) != 1 && waited < 30000; waited += 50)
    usleep(50000);
  if (wait && waited >= 30000)
    fprintf(stderr, "%s: not serving after 30 s\n", name);
  CU_ASSERT_FATAL(!wait || waited < 30000);
  return p;
}

ms_status ms_test_operator_call(const char *addr, const Meseta__V1__OperatorCallRequest *req, char **msg) {
  ms_rpc_channel *ch = ms_rpc_channel_new(addr, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  ms_status code = MS_UNAVAILABLE;
  for (int i = 0; i < 300 && code == MS_UNAVAILABLE; i++) {
    ms_error *err = NULL;
    ProtobufCMessage *resp = NULL;
    ms_rpc_call_options co = {.timeout_ms = 10000};
    if (ms_rpc_unary(ch, "/meseta.v1.Allocator/OperatorCall", &req->base,
                     &meseta__v1__operator_call_response__descriptor, &co, &resp, &err) == 0) {
      protobuf_c_message_free_unpacked(resp, NULL);
      code = MS_OK;
    } else {
      code = err->code;
      if (msg) {
        free(*msg);
        *msg = ms_xstrdup(err->msg);
      }
      ms_error_free(err);
      if (code == MS_UNAVAILABLE)
        usleep(100000);
    }
  }
  ms_rpc_channel_free(ch);
  return code;
}

int ms_test_main_etcd(int argc, char **argv, const char *name, const ms_test_case *cases, char **dir,
                      ms_test_etcd **etcd) {
  _cleanup_free_ char *tag = ms_xasprintf("test-%s", name);
  if (dir)
    *dir = ms_test_tmpdir(tag);
  ms_error *err = NULL;
  if (!(*etcd = ms_test_etcd_start(&err))) {
    fprintf(stderr, "%s: %s\n", tag, err->msg);
    ms_error_free(err);
    return 1;
  }
  int rc = ms_test_main(argc, argv, name, cases);
  ms_test_etcd_free(*etcd);
  *etcd = NULL;
  if (dir) {
    if (rc == 0 && !getenv("MESETA_KEEP_TEST_DIR"))
      ms_test_rmtree(*dir);
    else
      fprintf(stderr, "%s: logs kept in %s\n", tag, *dir);
    free(*dir);
    *dir = NULL;
  }
  return rc;
}

ms_test_allocator ms_test_allocator_run(const char *dir, const char *name, const char *const *extra) {
  ms_test_allocator a = {ms_test_allocator_start(dir, name, extra), NULL};
  a.addr = ms_test_proc_address(a.proc);
  return a;
}

void ms_test_allocator_stop(ms_test_allocator *a) {
  CU_ASSERT_EQUAL(ms_test_proc_stop(a->proc, SIGTERM), 0);
  ms_test_proc_free(a->proc);
  a->proc = NULL;
}

ms_sim_agent *ms_test_sim_agent(const char *addr, const ms_sim_agent_options *o) {
  ms_error *err = NULL;
  ms_sim_agent *a = ms_sim_agent_start(addr, o, &err);
  if (!a)
    fprintf(stderr, "agent on %s: %s\n", addr, err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  return a;
}

ms_sim_framework *ms_test_sim_framework(const char *addr, const ms_sim_framework_options *o) {
  ms_error *err = NULL;
  ms_sim_framework *f = ms_sim_framework_start(addr, o, &err);
  if (!f)
    fprintf(stderr, "framework on %s: %s\n", addr, err->msg);
  ms_error_free(err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  return f;
}

Meseta__V1__Offer *ms_test_wait_offer(ms_sim_framework *f, int64_t timeout_ms) {
  Meseta__V1__Offer *o = ms_sim_framework_wait_offer(f, timeout_ms);
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  return o;
}

bool ms_test_serving(void *ctx) {
  return ms_test_health(ctx) == 1;
}

bool ms_test_agents_listed(void *ctx) {
  ms_test_agents_wait *w = ctx;
  ms_rpc_channel *ch = ms_rpc_channel_new(w->mapi, NULL, NULL);
  if (!ch)
    return false;
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options co = {.timeout_ms = 5000};
  bool ok = false;
  if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetAgents", &req.base,
                   &meseta__v1__get_agents_response__descriptor, &co, &resp, NULL) == 0) {
    ok = ((Meseta__V1__GetAgentsResponse *)resp)->n_agents == w->want;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  ms_rpc_channel_free(ch);
  return ok;
}
