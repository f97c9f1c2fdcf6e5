/* meseta-registry against a real etcd: records of every kind, compare-and-swap
 * across two replicas, batches, listings, watches, the leader, outages, limits and
 * retention. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/etcd.h"
#include "meseta/rpc.h"
#include "meseta/v1/registry.pb-c.h"

#include "cluster.h"
#include "etcd-harness.h"
#include "grpc/health/v1/health.pb-c.h"
#include "proc.h"
#include "testlib.h"

#define KIND(x) MESETA__V1__RECORD_KIND__##x
#define REG(m) "/meseta.v1.Registry/" m

typedef Meseta__V1__Record record;

static ms_test_etcd *etcd;
static char *dir;

typedef struct registry {
  ms_test_proc *proc;
  ms_rpc_channel *ch;
} registry;

static registry start_registry(const char *name, const char *const *extra) {
  _cleanup_free_ char *bin = ms_test_binary("services/registry/meseta-registry");
  /* Each registry has keys of its own unless `extra` names a shared --key-prefix
   * (a later flag wins). */
  _cleanup_free_ char *own_prefix = ms_xasprintf("/test/%s", name);
  const char *argv[32] = {bin, "--listen", "127.0.0.1:0", "--etcd-endpoints", ms_test_etcd_endpoint(etcd)};
  size_t n = 5;
  const char *common[] = {"--etcd-timeout", "2s",    "--health-interval", "100ms",
                          "--log-level",    "debug", "--key-prefix",      own_prefix};
  for (size_t i = 0; i < MS_ARRAY_SIZE(common); i++)
    argv[n++] = common[i];
  for (size_t i = 0; extra && extra[i] && n < 30; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  ms_error *err = NULL;
  registry r = {0};
  r.proc = ms_test_proc_start(name, dir, argv, &err);
  if (!r.proc)
    fprintf(stderr, "%s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.proc);
  r.ch = ms_rpc_channel_new(ms_test_proc_address(r.proc), NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r.ch);
  return r;
}

static void stop_registry(registry *r) {
  ms_rpc_channel_free(r->ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(r->proc, SIGTERM), 0); /* a clean, leak-free exit */
  ms_test_proc_free(r->proc);
}

static void free_msg(void *m) {
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- building records ---------------------------------------------------------------- */

typedef struct agent_rec {
  Meseta__V1__AgentID id;
  Meseta__V1__AgentInfo info;
  Meseta__V1__AgentRecord a;
  Google__Protobuf__Timestamp t;
  record r;
} agent_rec;

static record *make_agent(agent_rec *x, const char *id, Meseta__V1__AgentRecord__State state,
                          int64_t when_s) {
  meseta__v1__agent_id__init(&x->id);
  x->id.value = (char *)id;
  meseta__v1__agent_info__init(&x->info);
  x->info.id = &x->id;
  x->info.hostname = "node.example";
  x->info.port = 5051;
  meseta__v1__agent_record__init(&x->a);
  x->a.info = &x->info;
  x->a.state = state;
  google__protobuf__timestamp__init(&x->t);
  x->t.seconds = when_s;
  if (state == MESETA__V1__AGENT_RECORD__STATE__GONE)
    x->a.gone_time = &x->t;
  if (state == MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE)
    x->a.unreachable_time = &x->t;
  meseta__v1__record__init(&x->r);
  x->r.id = (char *)id;
  x->r.body_case = MESETA__V1__RECORD__BODY_AGENT;
  x->r.agent = &x->a;
  return &x->r;
}

typedef struct weight_rec {
  Meseta__V1__WeightInfo w;
  Meseta__V1__WeightRecord wr;
  record r;
} weight_rec;

static record *make_weight(weight_rec *x, const char *role, double weight) {
  meseta__v1__weight_info__init(&x->w);
  x->w.role = (char *)role;
  x->w.weight = weight;
  meseta__v1__weight_record__init(&x->wr);
  x->wr.weight = &x->w;
  meseta__v1__record__init(&x->r);
  x->r.id = (char *)role;
  x->r.body_case = MESETA__V1__RECORD__BODY_WEIGHT;
  x->r.weight = &x->wr;
  return &x->r;
}

typedef struct framework_rec {
  Meseta__V1__FrameworkID id;
  Meseta__V1__FrameworkInfo info;
  Meseta__V1__FrameworkRecord f;
  record r;
  char *roles[1];
} framework_rec;

static record *make_framework(framework_rec *x, const char *id) {
  meseta__v1__framework_id__init(&x->id);
  x->id.value = (char *)id;
  meseta__v1__framework_info__init(&x->info);
  x->info.id = &x->id;
  x->info.name = "batch";
  x->roles[0] = "eng/batch";
  x->info.roles = x->roles;
  x->info.n_roles = 1;
  meseta__v1__framework_record__init(&x->f);
  x->f.info = &x->info;
  meseta__v1__record__init(&x->r);
  x->r.id = (char *)id;
  x->r.body_case = MESETA__V1__RECORD__BODY_FRAMEWORK;
  x->r.framework = &x->f;
  return &x->r;
}

/* ---- calls ------------------------------------------------------------------------------ */

static Meseta__V1__Expect expect_absent(void) {
  Meseta__V1__Expect e = MESETA__V1__EXPECT__INIT;
  e.expect_case = MESETA__V1__EXPECT__EXPECT_ABSENT;
  e.absent = true;
  return e;
}

static Meseta__V1__Expect expect_rev(int64_t rev) {
  Meseta__V1__Expect e = MESETA__V1__EXPECT__INIT;
  e.expect_case = MESETA__V1__EXPECT__EXPECT_REVISION;
  e.revision = rev;
  return e;
}

static int put(ms_rpc_channel *ch, record *r, Meseta__V1__Expect e, int64_t *ret_rev, ms_error **err) {
  Meseta__V1__PutRequest req = MESETA__V1__PUT_REQUEST__INIT;
  req.record = r;
  req.expect = &e;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options o = {.timeout_ms = 10000};
  if (ms_rpc_unary(ch, REG("Put"), &req.base, &meseta__v1__put_response__descriptor, &o, &resp, err) < 0)
    return MS_ERR;
  if (ret_rev)
    *ret_rev = ((Meseta__V1__PutResponse *)resp)->revision;
  free_msg(resp);
  return 0;
}

static record *get(ms_rpc_channel *ch, Meseta__V1__RecordKind kind, const char *id, ms_error **err) {
  Meseta__V1__GetRequest req = MESETA__V1__GET_REQUEST__INIT;
  req.kind = kind;
  req.id = (char *)id;
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options o = {.timeout_ms = 10000};
  if (ms_rpc_unary(ch, REG("Get"), &req.base, &meseta__v1__record__descriptor, &o, &resp, err) < 0)
    return NULL;
  return (record *)resp;
}

static Meseta__V1__ListResponse *list(ms_rpc_channel *ch, Meseta__V1__RecordKind kind, uint32_t size,
                                      const char *token, ms_error **err) {
  Meseta__V1__ListRequest req = MESETA__V1__LIST_REQUEST__INIT;
  req.kind = kind;
  req.page_size = size;
  req.page_token = (char *)(token ? token : "");
  ProtobufCMessage *resp = NULL;
  ms_rpc_call_options o = {.timeout_ms = 10000};
  if (ms_rpc_unary(ch, REG("List"), &req.base, &meseta__v1__list_response__descriptor, &o, &resp, err) < 0)
    return NULL;
  return (Meseta__V1__ListResponse *)resp;
}

static void expect_error(int rc, ms_error **err, ms_status code, const char *needle) {
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*err);
  if ((*err)->code != code || !strstr((*err)->msg, needle))
    fprintf(stderr, "got %s `%s`, wanted %s with `%s`\n", ms_status_name((*err)->code), (*err)->msg,
            ms_status_name(code), needle);
  CU_ASSERT_EQUAL((*err)->code, code);
  CU_ASSERT_PTR_NOT_NULL(strstr((*err)->msg, needle));
  ms_error_free(*err);
  *err = NULL;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_every_kind_round_trips(void) {
  registry r = start_registry("reg-kinds", NULL);
  ms_error *err = NULL;
  agent_rec a;
  weight_rec w;
  framework_rec f;
  /* quota, maintenance, provider and operation records too */
  Meseta__V1__Value__Scalar four = MESETA__V1__VALUE__SCALAR__INIT;
  four.value = 4;
  Meseta__V1__QuotaConfig__GuaranteesEntry g = MESETA__V1__QUOTA_CONFIG__GUARANTEES_ENTRY__INIT;
  g.key = "cpus";
  g.value = &four;
  Meseta__V1__QuotaConfig__GuaranteesEntry *gs[] = {&g};
  Meseta__V1__QuotaConfig qc = MESETA__V1__QUOTA_CONFIG__INIT;
  qc.role = "eng/web";
  qc.guarantees = gs;
  qc.n_guarantees = 1;
  Meseta__V1__QuotaRecord qr = MESETA__V1__QUOTA_RECORD__INIT;
  qr.config = &qc;
  record q = MESETA__V1__RECORD__INIT;
  q.id = "eng/web";
  q.body_case = MESETA__V1__RECORD__BODY_QUOTA;
  q.quota = &qr;

  Meseta__V1__MachineID mid = MESETA__V1__MACHINE_ID__INIT;
  mid.hostname = "node1";
  Meseta__V1__MachineID *mids[] = {&mid};
  Google__Protobuf__Timestamp start = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
  start.seconds = 1800000000;
  Meseta__V1__Unavailability un = MESETA__V1__UNAVAILABILITY__INIT;
  un.start = &start;
  Meseta__V1__MaintenanceWindow win = MESETA__V1__MAINTENANCE_WINDOW__INIT;
  win.machine_ids = mids;
  win.n_machine_ids = 1;
  win.unavailability = &un;
  Meseta__V1__MaintenanceWindow *wins[] = {&win};
  Meseta__V1__MaintenanceSchedule sched = MESETA__V1__MAINTENANCE_SCHEDULE__INIT;
  sched.windows = wins;
  sched.n_windows = 1;
  Meseta__V1__MaintenanceRecord mr = MESETA__V1__MAINTENANCE_RECORD__INIT;
  mr.schedule = &sched;
  record m = MESETA__V1__RECORD__INIT;
  m.id = "schedule";
  m.body_case = MESETA__V1__RECORD__BODY_MAINTENANCE;
  m.maintenance = &mr;

  Meseta__V1__ResourceProviderID pid = MESETA__V1__RESOURCE_PROVIDER_ID__INIT;
  pid.value = "rp-1";
  Meseta__V1__ResourceProviderInfo pinfo = MESETA__V1__RESOURCE_PROVIDER_INFO__INIT;
  pinfo.id = &pid;
  pinfo.type = "org.apache.mesos.rp.local.storage";
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = "a-1";
  Meseta__V1__ResourceProviderRecord pr = MESETA__V1__RESOURCE_PROVIDER_RECORD__INIT;
  pr.info = &pinfo;
  pr.agent_id = &aid;
  record p = MESETA__V1__RECORD__INIT;
  p.id = "rp-1";
  p.body_case = MESETA__V1__RECORD__BODY_RESOURCE_PROVIDER;
  p.resource_provider = &pr;

  Meseta__V1__OperationID oid = MESETA__V1__OPERATION_ID__INIT;
  oid.value = "op-1";
  Meseta__V1__Operation op = MESETA__V1__OPERATION__INIT;
  op.type = MESETA__V1__OPERATION__TYPE__RESERVE;
  Meseta__V1__OperationRecord orec = MESETA__V1__OPERATION_RECORD__INIT;
  orec.id = &oid;
  orec.agent_id = &aid;
  orec.operation = &op;
  orec.state = MESETA__V1__OPERATION_STATE__OPERATION_PENDING;
  record o = MESETA__V1__RECORD__INIT;
  o.id = "op-1";
  o.body_case = MESETA__V1__RECORD__BODY_OPERATION;
  o.operation = &orec;

  record *all[] = {make_agent(&a, "a-1", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0),
                   make_framework(&f, "f-1"),
                   &q,
                   make_weight(&w, "eng", 2.5),
                   &m,
                   &p,
                   &o};
  Meseta__V1__RecordKind kinds[] = {KIND(AGENT),       KIND(FRAMEWORK),         KIND(QUOTA),    KIND(WEIGHT),
                                    KIND(MAINTENANCE), KIND(RESOURCE_PROVIDER), KIND(OPERATION)};
  for (size_t i = 0; i < MS_ARRAY_SIZE(all); i++) {
    int64_t rev = 0;
    MS_ASSERT_OK(put(r.ch, all[i], expect_absent(), &rev, &err), &err);
    CU_ASSERT_TRUE(rev > 0);
    record *back = get(r.ch, kinds[i], all[i]->id, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_EQUAL(back->revision, rev);
    /* The stored record is the one written, byte for byte (revision aside). */
    back->revision = 0;
    size_t n1 = protobuf_c_message_get_packed_size(&back->base),
           n2 = protobuf_c_message_get_packed_size(&all[i]->base);
    CU_ASSERT_EQUAL(n1, n2);
    uint8_t *b1 = ms_xmalloc(n1 + 1), *b2 = ms_xmalloc(n2 + 1);
    protobuf_c_message_pack(&back->base, b1);
    protobuf_c_message_pack(&all[i]->base, b2);
    CU_ASSERT_EQUAL(memcmp(b1, b2, n1 < n2 ? n1 : n2), 0);
    free(b1);
    free(b2);
    free_msg(back);
    /* An update names the revision it read. */
    int64_t rev2 = 0;
    MS_ASSERT_OK(put(r.ch, all[i], expect_rev(rev), &rev2, &err), &err);
    CU_ASSERT_TRUE(rev2 > rev);
  }
  stop_registry(&r);
}

static void test_compare_and_swap_refusals(void) {
  registry r = start_registry("reg-cas", NULL);
  ms_error *err = NULL;
  weight_rec w;
  int64_t rev = 0;
  MS_ASSERT_OK(put(r.ch, make_weight(&w, "cas", 1), expect_absent(), &rev, &err), &err);
  expect_error(put(r.ch, make_weight(&w, "cas", 2), expect_absent(), NULL, &err), &err, MS_ABORTED,
               "WEIGHT record `cas` already exists");
  expect_error(put(r.ch, make_weight(&w, "cas", 2), expect_rev(rev - 1), NULL, &err), &err, MS_ABORTED,
               "is at revision");
  expect_error(put(r.ch, make_weight(&w, "nope", 2), expect_rev(5), NULL, &err), &err, MS_ABORTED,
               "no longer exists");
  /* Nothing changed. */
  record *back = get(r.ch, KIND(WEIGHT), "cas", &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(back);
  CU_ASSERT_EQUAL(back->weight->weight->weight, 1);
  CU_ASSERT_EQUAL(back->revision, rev);
  free_msg(back);
  stop_registry(&r);
}

typedef struct incr {
  ms_rpc_channel *ch;
  int n, retries;
} incr;

/* Read, add one, write back expecting what was read; retry on ABORTED. */
static void *increment(void *arg) {
  incr *in = arg;
  for (int i = 0; i < in->n; i++) {
    for (;;) {
      ms_error *err = NULL;
      record *cur = get(in->ch, KIND(WEIGHT), "counter", &err);
      if (!cur) {
        ms_error_free(err);
        continue;
      }
      weight_rec w;
      int rc = put(in->ch, make_weight(&w, "counter", cur->weight->weight->weight + 1),
                   expect_rev(cur->revision), NULL, &err);
      free_msg(cur);
      if (rc == 0)
        break;
      if (err->code != MS_ABORTED)
        fprintf(stderr, "increment: %s\n", err->msg);
      in->retries++;
      ms_error_free(err);
    }
  }
  return NULL;
}

static void test_two_replicas_lose_no_update(void) {
  const char *shared[] = {"--key-prefix", "/test/shared", NULL};
  registry a = start_registry("reg-a", shared), b = start_registry("reg-b", shared);
  ms_error *err = NULL;
  weight_rec w;
  MS_ASSERT_OK(put(a.ch, make_weight(&w, "counter", 1), expect_absent(), NULL, &err), &err);
  incr in[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    in[i] = (incr){.ch = i % 2 ? b.ch : a.ch, .n = 25};
    pthread_create(&t[i], NULL, increment, &in[i]);
  }
  int retries = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    retries += in[i].retries;
  }
  record *back = get(b.ch, KIND(WEIGHT), "counter", &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(back);
  CU_ASSERT_EQUAL(back->weight->weight->weight, 101); /* 1 + 4 x 25: none lost */
  printf("(%d compare-and-swap conflicts retried) ", retries);
  free_msg(back);
  stop_registry(&a);
  stop_registry(&b);
}

typedef struct creator {
  ms_rpc_channel *ch;
  int index;
  ms_status code;
} creator;

static void *create_one(void *arg) {
  creator *c = arg;
  _cleanup_free_ char *role = ms_xasprintf("group-%02d", c->index);
  weight_rec w;
  ms_error *err = NULL;
  c->code = put(c->ch, make_weight(&w, role, 7), expect_absent(), NULL, &err) == 0 ? MS_OK : err->code;
  ms_error_free(err);
  return NULL;
}

/* Writes that arrive together share one etcd transaction: one failed expectation
 * must refuse exactly its own write and let every other one commit. */
static void test_group_commit_isolates_failures(void) {
  const char *one[] = {"--committers", "1", NULL}; /* one committer: the biggest groups */
  registry r = start_registry("reg-group", one);
  ms_error *err = NULL;
  for (int i = 0; i < 40; i += 2) { /* every even record exists already */
    _cleanup_free_ char *role = ms_xasprintf("group-%02d", i);
    weight_rec w;
    MS_ASSERT_OK(put(r.ch, make_weight(&w, role, 1), expect_absent(), NULL, &err), &err);
  }
  creator c[40];
  pthread_t t[40];
  for (int i = 0; i < 40; i++) {
    c[i] = (creator){.ch = r.ch, .index = i};
    pthread_create(&t[i], NULL, create_one, &c[i]);
  }
  for (int i = 0; i < 40; i++)
    pthread_join(t[i], NULL);
  for (int i = 0; i < 40; i++) {
    CU_ASSERT_EQUAL(c[i].code, i % 2 ? MS_OK : MS_ABORTED);
    _cleanup_free_ char *role = ms_xasprintf("group-%02d", i);
    record *back = get(r.ch, KIND(WEIGHT), role, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_EQUAL(back->weight->weight->weight, i % 2 ? 7 : 1); /* the existing ones untouched */
    free_msg(back);
  }
  stop_registry(&r);
}

static void test_batch_is_atomic(void) {
  registry r = start_registry("reg-batch", NULL);
  ms_error *err = NULL;
  weight_rec w1, w2, w3;
  int64_t rev = 0;
  MS_ASSERT_OK(put(r.ch, make_weight(&w1, "b-existing", 1), expect_absent(), &rev, &err), &err);
  Meseta__V1__Expect ea = expect_absent(), er = expect_rev(rev - 1);
  Meseta__V1__Write wr[2] = {MESETA__V1__WRITE__INIT, MESETA__V1__WRITE__INIT};
  wr[0].op_case = MESETA__V1__WRITE__OP_PUT;
  wr[0].put = make_weight(&w2, "b-new", 3);
  wr[0].expect = &ea;
  wr[1].op_case = MESETA__V1__WRITE__OP_PUT;
  wr[1].put = make_weight(&w3, "b-existing", 2);
  wr[1].expect = &er; /* stale: the whole batch must fail */
  Meseta__V1__Write *wp[] = {&wr[0], &wr[1]};
  Meseta__V1__BatchRequest req = MESETA__V1__BATCH_REQUEST__INIT;
  req.writes = wp;
  req.n_writes = 2;
  ProtobufCMessage *resp = NULL;
  expect_error(
      ms_rpc_unary(r.ch, REG("Batch"), &req.base, &meseta__v1__batch_response__descriptor, NULL, &resp, &err),
      &err, MS_ABORTED, "writes[1]");
  expect_error(get(r.ch, KIND(WEIGHT), "b-new", &err) ? 0 : MS_ERR, &err, MS_NOT_FOUND, "does not exist");
  /* With a good expectation both land at one revision. */
  Meseta__V1__Expect good = expect_rev(rev);
  wr[1].expect = &good;
  MS_ASSERT_OK(
      ms_rpc_unary(r.ch, REG("Batch"), &req.base, &meseta__v1__batch_response__descriptor, NULL, &resp, &err),
      &err);
  int64_t brev = ((Meseta__V1__BatchResponse *)resp)->revision;
  free_msg(resp);
  record *x = get(r.ch, KIND(WEIGHT), "b-new", &err), *y = get(r.ch, KIND(WEIGHT), "b-existing", &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(x);
  CU_ASSERT_PTR_NOT_NULL_FATAL(y);
  CU_ASSERT_EQUAL(x->revision, brev);
  CU_ASSERT_EQUAL(y->revision, brev);
  free_msg(x);
  free_msg(y);
  /* The same record twice in one batch is refused. */
  wr[1].put = make_weight(&w3, "b-new", 5);
  expect_error(
      ms_rpc_unary(r.ch, REG("Batch"), &req.base, &meseta__v1__batch_response__descriptor, NULL, &resp, &err),
      &err, MS_INVALID_ARGUMENT, "twice");
  stop_registry(&r);
}

static void test_bad_input(void) {
  registry r = start_registry("reg-bad", NULL);
  ms_error *err = NULL;
  weight_rec w;
  agent_rec a;
  Meseta__V1__Expect none = MESETA__V1__EXPECT__INIT;
  expect_error(put(r.ch, make_weight(&w, "x", 1), none, NULL, &err), &err, MS_INVALID_ARGUMENT,
               "field `expect`");
  expect_error(put(r.ch, make_weight(&w, "x", -1), expect_absent(), NULL, &err), &err, MS_INVALID_ARGUMENT,
               "weight.weight.weight");
  record *ag = make_agent(&a, "a-9", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0);
  a.a.info = NULL;
  expect_error(put(r.ch, ag, expect_absent(), NULL, &err), &err, MS_INVALID_ARGUMENT, "agent.info");
  record empty = MESETA__V1__RECORD__INIT;
  empty.id = "x";
  expect_error(put(r.ch, &empty, expect_absent(), NULL, &err), &err, MS_INVALID_ARGUMENT, "record.body");
  expect_error(get(r.ch, KIND(AGENT), "missing", &err) ? 0 : MS_ERR, &err, MS_NOT_FOUND,
               "AGENT record `missing` does not exist");
  expect_error(get(r.ch, (Meseta__V1__RecordKind)99, "x", &err) ? 0 : MS_ERR, &err, MS_INVALID_ARGUMENT,
               "request.kind");
  expect_error(get(r.ch, KIND(AGENT), "", &err) ? 0 : MS_ERR, &err, MS_INVALID_ARGUMENT, "request.id");
  expect_error(list(r.ch, KIND(AGENT), 100000, NULL, &err) ? 0 : MS_ERR, &err, MS_INVALID_ARGUMENT,
               "page_size");
  expect_error(list(r.ch, KIND(AGENT), 10, "garbage", &err) ? 0 : MS_ERR, &err, MS_INVALID_ARGUMENT,
               "page_token");
  /* Deleting what is not there. */
  Meseta__V1__RecordRef ref = MESETA__V1__RECORD_REF__INIT;
  ref.kind = KIND(FRAMEWORK);
  ref.id = "ghost";
  Meseta__V1__Expect any = MESETA__V1__EXPECT__INIT;
  any.expect_case = MESETA__V1__EXPECT__EXPECT_ANY;
  any.any = true;
  Meseta__V1__DeleteRequest del = MESETA__V1__DELETE_REQUEST__INIT;
  del.ref = &ref;
  del.expect = &any;
  ProtobufCMessage *resp = NULL;
  expect_error(ms_rpc_unary(r.ch, REG("Delete"), &del.base, &meseta__v1__delete_response__descriptor, NULL,
                            &resp, &err),
               &err, MS_NOT_FOUND, "FRAMEWORK record `ghost` does not exist");
  stop_registry(&r);
}

static void test_record_over_etcd_limit(void) {
  registry r = start_registry("reg-big", NULL);
  ms_error *err = NULL;
  agent_rec a;
  record *ag = make_agent(&a, "a-big", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0);
  size_t n = 2 * 1024 * 1024;
  char *host = ms_xmalloc(n + 1);
  memset(host, 'h', n);
  host[n] = '\0';
  a.info.hostname = host;
  int rc = put(r.ch, ag, expect_absent(), NULL, &err);
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "a-big"));
  ms_error_free(err);
  free(host);
  stop_registry(&r);
}

static Meseta__V1__WatchResponse *next_watch(ms_rpc_stream *s, ms_error **err) {
  ProtobufCMessage *m = NULL;
  if (ms_rpc_stream_recv(s, &meseta__v1__watch_response__descriptor, &m, err) != 1)
    return NULL;
  return (Meseta__V1__WatchResponse *)m;
}

/* Records near the message limit: pages end by size, and a watch splits one etcd
 * batch over several responses instead of failing the stream. */
static void test_big_records_page_and_watch(void) {
  const char *small[] = {"--max-message-bytes", "64KiB", NULL};
  registry r = start_registry("reg-bigpages", small);
  ms_error *err = NULL;
  Meseta__V1__ListResponse *l = list(r.ch, KIND(AGENT), 1, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  Meseta__V1__WatchRequest wreq = MESETA__V1__WATCH_REQUEST__INIT;
  wreq.start_revision = l->revision;
  free_msg(l);
  ms_rpc_stream *s = ms_rpc_stream_open(r.ch, REG("Watch"), &wreq.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);

  char *host = ms_xmalloc(10001);
  memset(host, 'h', 10000);
  host[10000] = '\0';
  agent_rec a[5];
  Meseta__V1__Write w[5];
  Meseta__V1__Write *wp[5];
  Meseta__V1__Expect absent = expect_absent();
  char ids[5][16];
  for (int i = 0; i < 5; i++) {
    snprintf(ids[i], sizeof(ids[i]), "big-%d", i);
    make_agent(&a[i], ids[i], MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0);
    a[i].info.hostname = host;
    meseta__v1__write__init(&w[i]);
    w[i].op_case = MESETA__V1__WRITE__OP_PUT;
    w[i].put = &a[i].r;
    w[i].expect = &absent;
    wp[i] = &w[i];
  }
  Meseta__V1__BatchRequest breq = MESETA__V1__BATCH_REQUEST__INIT;
  breq.writes = wp;
  breq.n_writes = 5;
  ProtobufCMessage *resp = NULL;
  MS_ASSERT_OK(ms_rpc_unary(r.ch, REG("Batch"), &breq.base, &meseta__v1__batch_response__descriptor, NULL,
                            &resp, &err),
               &err);
  free_msg(resp);

  int events = 0, responses = 0;
  while (events < 5) {
    Meseta__V1__WatchResponse *ev = next_watch(s, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    for (size_t i = 0; i < ev->n_events; i++, events++)
      CU_ASSERT_STRING_EQUAL(ev->events[i]->id, ids[events]);
    responses++;
    free_msg(ev);
  }
  CU_ASSERT_EQUAL(events, 5);
  CU_ASSERT_TRUE(responses > 1); /* ~50 KB of events does not fit one 32 KB response */
  ms_rpc_stream_free(s);

  char *token = NULL;
  int seen = 0, pages = 0;
  do {
    Meseta__V1__ListResponse *page = list(r.ch, KIND(AGENT), 100, token, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(page);
    for (size_t i = 0; i < page->n_records; i++, seen++)
      CU_ASSERT_STRING_EQUAL(page->records[i]->id, ids[seen]);
    free(token);
    token = *page->next_page_token ? ms_xstrdup(page->next_page_token) : NULL;
    pages++;
    free_msg(page);
  } while (token && pages < 10);
  CU_ASSERT_EQUAL(seen, 5);
  CU_ASSERT_TRUE(pages > 1);
  free(host);
  stop_registry(&r);
}

static void test_list_pages(void) {
  registry r = start_registry("reg-list", NULL);
  ms_error *err = NULL;
  for (int i = 0; i < 25; i++) {
    _cleanup_free_ char *id = ms_xasprintf("list-%02d", i);
    framework_rec f;
    MS_ASSERT_OK(put(r.ch, make_framework(&f, id), expect_absent(), NULL, &err), &err);
  }
  char *token = NULL;
  int seen = 0, pages = 0;
  int64_t revision = 0;
  do {
    Meseta__V1__ListResponse *page = list(r.ch, KIND(FRAMEWORK), 10, token, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(page);
    if (pages == 0)
      revision = page->revision;
    CU_ASSERT_EQUAL(page->revision, revision); /* one listing, one revision */
    for (size_t i = 0; i < page->n_records; i++) {
      if (strncmp(page->records[i]->id, "list-", 5) != 0)
        continue;
      _cleanup_free_ char *want = ms_xasprintf("list-%02d", seen);
      CU_ASSERT_STRING_EQUAL(page->records[i]->id, want);
      seen++;
    }
    free(token);
    token = *page->next_page_token ? ms_xstrdup(page->next_page_token) : NULL;
    pages++;
    free_msg(page);
  } while (token && pages < 10);
  CU_ASSERT_EQUAL(seen, 25);
  CU_ASSERT_EQUAL(pages, 3);
  stop_registry(&r);
}

static void test_watch_and_etcd_outage(void) {
  registry r = start_registry("reg-watch", NULL);
  ms_error *err = NULL;
  Meseta__V1__ListResponse *l = list(r.ch, KIND(AGENT), 1, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  Meseta__V1__RecordKind kinds[] = {KIND(AGENT)};
  Meseta__V1__WatchRequest wreq = MESETA__V1__WATCH_REQUEST__INIT;
  wreq.kinds = kinds;
  wreq.n_kinds = 1;
  wreq.start_revision = l->revision;
  free_msg(l);
  ms_rpc_stream *s = ms_rpc_stream_open(r.ch, REG("Watch"), &wreq.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  agent_rec a;
  weight_rec w;
  int64_t rev = 0;
  MS_ASSERT_OK(put(r.ch, make_weight(&w, "not-watched", 1), expect_absent(), NULL, &err), &err);
  MS_ASSERT_OK(put(r.ch, make_agent(&a, "w-1", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0), expect_absent(),
                   &rev, &err),
               &err);
  Meseta__V1__WatchResponse *ev = next_watch(s, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  CU_ASSERT_EQUAL_FATAL(ev->n_events, 1);
  CU_ASSERT_EQUAL(ev->events[0]->type, MESETA__V1__WATCH_EVENT__TYPE__PUT);
  CU_ASSERT_STRING_EQUAL(ev->events[0]->id, "w-1");
  CU_ASSERT_EQUAL(ev->events[0]->revision, rev);
  CU_ASSERT_STRING_EQUAL(ev->events[0]->record->agent->info->hostname, "node.example");
  free_msg(ev);

  /* etcd goes away: writes say UNAVAILABLE, health turns NOT_SERVING. */
  MS_ASSERT_OK(ms_test_etcd_stop(etcd, &err), &err);
  int rc = put(r.ch, make_agent(&a, "w-2", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0), expect_absent(),
               NULL, &err);
  CU_ASSERT_EQUAL(rc, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, ms_test_etcd_endpoint(etcd)));
  ms_error_free(TAKE_PTR(err));
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  int status = 0;
  for (int i = 0; i < 300 && status != 2; i++) { /* hang guard, not a timing */
    ProtobufCMessage *h = NULL;
    if (ms_rpc_unary(r.ch, "/grpc.health.v1.Health/Check", &hreq.base,
                     &grpc__health__v1__health_check_response__descriptor, NULL, &h, &err) == 0) {
      status = ((Grpc__Health__V1__HealthCheckResponse *)h)->status;
      free_msg(h);
    }
    ms_error_free(TAKE_PTR(err));
    usleep(20000);
  }
  CU_ASSERT_EQUAL(status, 2);

  /* etcd comes back: the same registry recovers by itself, and the watch goes on. */
  MS_ASSERT_OK(ms_test_etcd_restart(etcd, &err), &err);
  for (int i = 0; i < 300; i++) {
    rc = put(r.ch, make_agent(&a, "w-2", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0), expect_absent(), &rev,
             &err);
    if (rc == 0)
      break;
    if (i % 50 == 0)
      fprintf(stderr, "after restart: %s\n", err->msg);
    ms_error_free(TAKE_PTR(err));
    usleep(20000);
  }
  CU_ASSERT_EQUAL(rc, 0);
  ev = next_watch(s, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
  CU_ASSERT_STRING_EQUAL(ev->events[0]->id, "w-2");
  CU_ASSERT_EQUAL(ev->events[0]->revision, rev);
  free_msg(ev);
  ms_rpc_stream_free(s);
  stop_registry(&r);
}

static void test_watch_from_compacted_revision(void) {
  registry r = start_registry("reg-compact", NULL);
  ms_error *err = NULL;
  weight_rec w;
  int64_t first = 0, rev = 0;
  MS_ASSERT_OK(put(r.ch, make_weight(&w, "compact", 1), expect_absent(), &first, &err), &err);
  for (int i = 0; i < 5; i++)
    MS_ASSERT_OK(put(r.ch, make_weight(&w, "compact", i + 2), expect_rev(i ? rev : first), &rev, &err), &err);
  const char *ep[] = {ms_test_etcd_endpoint(etcd)};
  ms_etcd_options eo = {.endpoints = ep, .n_endpoints = 1};
  ms_etcd *e = ms_etcd_new(&eo, &err);
  MS_ASSERT_OK(ms_etcd_compact(e, rev, true, &err), &err);
  ms_etcd_free(e);
  Meseta__V1__WatchRequest wreq = MESETA__V1__WATCH_REQUEST__INIT;
  wreq.start_revision = first;
  ms_rpc_stream *s = ms_rpc_stream_open(r.ch, REG("Watch"), &wreq.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, &meseta__v1__watch_response__descriptor, &m, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_OUT_OF_RANGE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "start_revision"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "compact"));
  ms_error_free(err);
  ms_rpc_stream_free(s);
  stop_registry(&r);
}

static Meseta__V1__LeaderInfo *next_leader(ms_rpc_stream *s) {
  ms_error *err = NULL;
  ProtobufCMessage *m = NULL;
  if (ms_rpc_stream_recv(s, &meseta__v1__leader_info__descriptor, &m, &err) != 1) {
    fprintf(stderr, "leader stream: %s\n", err ? err->msg : "ended");
    ms_error_free(err);
    return NULL;
  }
  return (Meseta__V1__LeaderInfo *)m;
}

static void test_watch_leader(void) {
  const char *extra[] = {"--election", "test-election", NULL};
  registry r = start_registry("reg-leader", extra);
  ms_error *err = NULL;
  Meseta__V1__WatchLeaderRequest req = MESETA__V1__WATCH_LEADER_REQUEST__INIT;
  ms_rpc_stream *s = ms_rpc_stream_open(r.ch, REG("WatchLeader"), &req.base, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  Meseta__V1__LeaderInfo *li = next_leader(s);
  CU_ASSERT_PTR_NOT_NULL_FATAL(li);
  CU_ASSERT_FALSE(li->present);
  free_msg(li);

  const char *ep[] = {ms_test_etcd_endpoint(etcd)};
  ms_etcd_options eo = {.endpoints = ep, .n_endpoints = 1};
  ms_etcd *e = ms_etcd_new(&eo, &err);
  int64_t lease = 0;
  MS_ASSERT_OK(ms_etcd_lease_grant(e, 30, 0, &lease, NULL, &err), &err);
  ms_etcd_leader_key key = {0};
  MS_ASSERT_OK(ms_etcd_campaign(e, "test-election", 13, lease, "10.0.0.7:5053", 13, 10000, NULL, &key, &err),
               &err);
  li = next_leader(s);
  CU_ASSERT_PTR_NOT_NULL_FATAL(li);
  CU_ASSERT_TRUE(li->present);
  CU_ASSERT_STRING_EQUAL(li->address, "10.0.0.7:5053");
  free_msg(li);

  MS_ASSERT_OK(ms_etcd_resign(e, &key, &err), &err);
  li = next_leader(s);
  CU_ASSERT_PTR_NOT_NULL_FATAL(li);
  CU_ASSERT_FALSE(li->present);
  free_msg(li);
  ms_etcd_leader_key_release(&key);
  ms_etcd_lease_revoke(e, lease, NULL);
  ms_etcd_free(e);

  Meseta__V1__WatchLeaderRequest other = MESETA__V1__WATCH_LEADER_REQUEST__INIT;
  other.election = "elsewhere";
  ms_rpc_stream *s2 = ms_rpc_stream_open(r.ch, REG("WatchLeader"), &other.base, NULL, &err);
  ProtobufCMessage *m = NULL;
  CU_ASSERT_EQUAL(ms_rpc_stream_recv(s2, &meseta__v1__leader_info__descriptor, &m, &err), MS_ERR);
  CU_ASSERT_EQUAL(err->code, MS_NOT_FOUND);
  ms_error_free(err);
  ms_rpc_stream_free(s2);
  ms_rpc_stream_free(s);
  stop_registry(&r);
}

/* The registry's TLS flags: mutual TLS with a client certificate works, a client
 * without one is refused. */
static void test_mutual_tls(void) {
  ms_error *err = NULL;
  _cleanup_free_ char *certs = ms_xasprintf("%s/certs", dir);
  CU_ASSERT_FATAL(mkdir(certs, 0700) == 0);
  MS_ASSERT_OK(ms_test_etcd_make_certs(certs, &err), &err);
  _cleanup_free_ char *cert = ms_xasprintf("%s/server.pem", certs),
                      *key = ms_xasprintf("%s/server.key", certs);
  _cleanup_free_ char *ca = ms_xasprintf("%s/ca.pem", certs);
  _cleanup_free_ char *ccert = ms_xasprintf("%s/client.pem", certs),
                      *ckey = ms_xasprintf("%s/client.key", certs);
  const char *extra[] = {"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, NULL};
  _cleanup_free_ char *bin = ms_test_binary("services/registry/meseta-registry");
  const char *argv[] = {bin,
                        "--listen",
                        "127.0.0.1:0",
                        "--etcd-endpoints",
                        ms_test_etcd_endpoint(etcd),
                        "--key-prefix",
                        "/test/tls",
                        extra[0],
                        extra[1],
                        extra[2],
                        extra[3],
                        extra[4],
                        extra[5],
                        NULL};
  ms_test_proc *p = ms_test_start("reg-tls", dir, argv);

  ms_rpc_tls tls = {.ca_file = ca, .cert_file = ccert, .key_file = ckey};
  ms_rpc_channel_options o = {.tls = &tls};
  ms_rpc_channel *ch = ms_rpc_channel_new(ms_test_proc_address(p), &o, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  weight_rec w;
  MS_ASSERT_OK(put(ch, make_weight(&w, "tls", 3), expect_absent(), NULL, &err), &err);
  record *back = get(ch, KIND(WEIGHT), "tls", &err);
  CU_ASSERT_PTR_NOT_NULL(back);
  free_msg(back);
  ms_rpc_channel_free(ch);

  ms_rpc_tls anonymous = {.ca_file = ca};
  ms_rpc_channel_options ao = {.tls = &anonymous};
  ch = ms_rpc_channel_new(ms_test_proc_address(p), &ao, &err);
  CU_ASSERT_EQUAL(put(ch, make_weight(&w, "tls2", 3), expect_absent(), NULL, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  CU_ASSERT_EQUAL(ms_test_proc_stop(p, SIGTERM), 0);
  ms_test_proc_free(p);
}

static void test_retention(void) {
  const char *extra[] = {
      "--max-gone-agents", "2", "--unreachable-agent-ttl", "1h", "--retention-interval", "100ms", NULL};
  registry r = start_registry("reg-retention", extra);
  ms_error *err = NULL;
  int64_t now = (int64_t)time(NULL);
  for (int i = 0; i < 5; i++) {
    _cleanup_free_ char *id = ms_xasprintf("gone-%d", i);
    agent_rec a;
    MS_ASSERT_OK(put(r.ch, make_agent(&a, id, MESETA__V1__AGENT_RECORD__STATE__GONE, now - 100 + i),
                     expect_absent(), NULL, &err),
                 &err);
  }
  agent_rec old, fresh, live;
  MS_ASSERT_OK(
      put(r.ch, make_agent(&old, "unreachable-old", MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE, now - 7200),
          expect_absent(), NULL, &err),
      &err);
  MS_ASSERT_OK(put(r.ch,
                   make_agent(&fresh, "unreachable-new", MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE, now),
                   expect_absent(), NULL, &err),
               &err);
  MS_ASSERT_OK(put(r.ch, make_agent(&live, "admitted", MESETA__V1__AGENT_RECORD__STATE__ADMITTED, 0),
                   expect_absent(), NULL, &err),
               &err);
  /* Wait (bounded) until retention has run: gone-0..2 and the old unreachable go. */
  size_t n = 0;
  for (int i = 0; i < 500; i++) {
    Meseta__V1__ListResponse *l = list(r.ch, KIND(AGENT), 100, NULL, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    n = l->n_records;
    free_msg(l);
    if (n == 4)
      break;
    usleep(20000);
  }
  CU_ASSERT_EQUAL(n, 4);
  const char *kept[] = {"gone-3", "gone-4", "unreachable-new", "admitted"};
  for (size_t i = 0; i < 4; i++) {
    record *x = get(r.ch, KIND(AGENT), kept[i], &err);
    CU_ASSERT_PTR_NOT_NULL(x);
    free_msg(x);
    ms_error_free(TAKE_PTR(err));
  }
  stop_registry(&r);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"every_kind_round_trips", test_every_kind_round_trips},
      {"compare_and_swap_refusals", test_compare_and_swap_refusals},
      {"two_replicas_lose_no_update", test_two_replicas_lose_no_update},
      {"group_commit_isolates_failures", test_group_commit_isolates_failures},
      {"batch_is_atomic", test_batch_is_atomic},
      {"bad_input", test_bad_input},
      {"record_over_etcd_limit", test_record_over_etcd_limit},
      {"list_pages", test_list_pages},
      {"big_records_page_and_watch", test_big_records_page_and_watch},
      {"watch_and_etcd_outage", test_watch_and_etcd_outage},
      {"watch_from_compacted_revision", test_watch_from_compacted_revision},
      {"watch_leader", test_watch_leader},
      {"mutual_tls", test_mutual_tls},
      {"retention", test_retention},
      {NULL, NULL},
  };
  ms_error *err = NULL;
  dir = ms_test_tmpdir("meseta-registry");
  etcd = ms_test_etcd_start(&err);
  if (!etcd) {
    fprintf(stderr, "test-registry: %s\n", err->msg);
    return 1;
  }
  int rc = ms_test_main(argc, argv, "registry", cases);
  ms_test_etcd_free(etcd);
  if (rc == 0)
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "test-registry: logs kept in %s\n", dir);
  free(dir);
  return rc;
}
