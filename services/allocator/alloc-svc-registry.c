/* The allocator's registry client: durable writes (agents admitted / unreachable,
 * frameworks added / completed) and the leader's load, made by one worker thread in the
 * order asked, each call bounded by --registry-timeout. Results are posted back to the
 * owner thread; a result from an older term (leadership changed) or after close is
 * only cleaned up.
 *
 * Ownership: a job owns its record copy and its result pages; the done callback owns
 * its ctx. */
#include "alloc-svc-registry.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/workq.h"

#include "alloc-svc-core.h"

#define REG(m) "/meseta.v1.Registry/" m
#define AGENT_KIND MESETA__V1__RECORD_KIND__AGENT

typedef struct svc_reg {
  ms_rpc_channel *ch;
  ms_workq *q;
  atomic_bool stop;
} svc_reg;

typedef enum job_kind {
  J_ADMIT,
  J_AGENT_STATE,
  J_FW_ADD,
  J_FW_COMPLETE,
  J_FW_UPDATE, /* UpdateFramework: the record's info replaced */
  J_LOAD,
  J_BATCH,
  J_AGENT_PATCH
} job_kind;

typedef struct reg_job {
  alloc_service *s;
  job_kind kind;
  uint64_t term;
  Meseta__V1__Record *rec; /* J_ADMIT, J_FW_*: the record to write; J_AGENT_STATE: info */
  Meseta__V1__AgentRecord__State state;
  svc_reg_done done;
  void *ctx;
  ms_error *err;
  svc_reg_loaded loaded;           /* J_LOAD */
  Meseta__V1__BatchRequest *batch; /* J_BATCH */
  svc_agent_patch patch;           /* J_AGENT_PATCH: rec->agent->drain_config is the config */
} reg_job;

bool svc_durable(const alloc_service *s) {
  return s->reg != NULL;
}

static Google__Protobuf__Timestamp *now_ts(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  Google__Protobuf__Timestamp *t = ms_xmalloc(sizeof(*t));
  google__protobuf__timestamp__init(t);
  t->seconds = ts.tv_sec;
  t->nanos = (int32_t)ts.tv_nsec;
  return t;
}

static void set_ts(Google__Protobuf__Timestamp **slot) {
  if (*slot)
    protobuf_c_message_free_unpacked(&(*slot)->base, NULL);
  *slot = now_ts();
}

/* ---- the worker ---- */

static int unary(alloc_service *s, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, ms_error **err) {
  if (atomic_load(&s->reg->stop))
    return ms_error_set(err, MS_CANCELLED, "the allocator is shutting down");
  if (s->cfg.registry_fence && !s->cfg.registry_fence(s->cfg.registry_fence_arg))
    return ms_error_set(err, MS_UNAVAILABLE,
                        "registry request not sent: this allocator's leader lease may be gone");
  ms_rpc_call_options co = {.timeout_ms = s->cfg.registry_timeout_ms};
  ProtobufCMessage *r = NULL;
  if (ms_rpc_unary(s->reg->ch, method, req, desc, &co, &r, err) < 0)
    return ms_error_prefix(err, "registry `%s`", s->cfg.registry);
  if (resp)
    *resp = r;
  else
    protobuf_c_message_free_unpacked(r, NULL);
  return 0;
}

static int put(alloc_service *s, Meseta__V1__Record *rec, Meseta__V1__Expect *ex, ms_error **err) {
  Meseta__V1__PutRequest req = MESETA__V1__PUT_REQUEST__INIT;
  req.record = rec;
  req.expect = ex;
  return unary(s, REG("Put"), &req.base, &meseta__v1__put_response__descriptor, NULL, err);
}

static int put_absent(alloc_service *s, Meseta__V1__Record *rec, ms_error **err) {
  Meseta__V1__Expect ex = MESETA__V1__EXPECT__INIT;
  ex.expect_case = MESETA__V1__EXPECT__EXPECT_ABSENT;
  ex.absent = true;
  return put(s, rec, &ex, err);
}

static int put_at(alloc_service *s, Meseta__V1__Record *rec, int64_t revision, ms_error **err) {
  Meseta__V1__Expect ex = MESETA__V1__EXPECT__INIT;
  ex.expect_case = MESETA__V1__EXPECT__EXPECT_REVISION;
  ex.revision = revision;
  return put(s, rec, &ex, err);
}

/* NULL with NOT_FOUND when there is none. */
static Meseta__V1__Record *get(alloc_service *s, Meseta__V1__RecordKind kind, const char *id,
                               ms_error **err) {
  Meseta__V1__GetRequest req = MESETA__V1__GET_REQUEST__INIT;
  req.kind = kind;
  req.id = (char *)id;
  ProtobufCMessage *r = NULL;
  if (unary(s, REG("Get"), &req.base, &meseta__v1__record__descriptor, &r, err) < 0)
    return NULL;
  return (Meseta__V1__Record *)r;
}

/* Read, change the state, write back at the read revision (created when missing). */
static int agent_state(alloc_service *s, reg_job *j, ms_error **err) {
  const char *id = j->rec->id;
  ms_error *gerr = NULL;
  Meseta__V1__Record *cur = get(s, AGENT_KIND, id, &gerr);
  if (!cur && gerr->code != MS_NOT_FOUND) {
    *err = gerr;
    return MS_ERR;
  }
  ms_error_free(gerr);
  int rc;
  if (!cur) {
    if (!j->rec->agent->info)
      return ms_error_set(err, MS_NOT_FOUND, "agent `%s` has no registry record", id);
    j->rec->agent->state = j->state;
    if (j->state == MESETA__V1__AGENT_RECORD__STATE__ADMITTED)
      set_ts(&j->rec->agent->admitted_time);
    else
      set_ts(&j->rec->agent->unreachable_time);
    return put_absent(s, j->rec, err);
  }
  Meseta__V1__AgentRecord *a = cur->agent;
  if (!a) {
    rc = ms_error_set(err, MS_INTERNAL, "agent record `%s` has no agent body", id);
  } else if (a->state == MESETA__V1__AGENT_RECORD__STATE__GONE) {
    rc = ms_error_set(err, MS_FAILED_PRECONDITION, "agent `%s` was marked gone and cannot come back", id);
  } else {
    if (j->rec->agent->info) { /* the agent's newer info replaces the stored one */
      protobuf_c_message_free_unpacked(&a->info->base, NULL);
      a->info = j->rec->agent->info;
      j->rec->agent->info = NULL;
    }
    a->state = j->state;
    if (j->state == MESETA__V1__AGENT_RECORD__STATE__ADMITTED)
      set_ts(&a->admitted_time);
    else
      set_ts(&a->unreachable_time);
    rc = put_at(s, cur, cur->revision, err);
  }
  protobuf_c_message_free_unpacked(&cur->base, NULL);
  return rc;
}

static int fw_complete(alloc_service *s, reg_job *j, ms_error **err) {
  ms_error *gerr = NULL;
  Meseta__V1__Record *cur = get(s, MESETA__V1__RECORD_KIND__FRAMEWORK, j->rec->id, &gerr);
  if (!cur && gerr->code != MS_NOT_FOUND) {
    *err = gerr;
    return MS_ERR;
  }
  ms_error_free(gerr);
  Meseta__V1__Record *w = cur ? cur : j->rec;
  if (!w->framework)
    return ms_error_set(err, MS_INTERNAL, "framework record `%s` has no framework body", j->rec->id);
  if (j->kind == J_FW_UPDATE && cur) {
    if (cur->framework->info)
      protobuf_c_message_free_unpacked(&cur->framework->info->base, NULL);
    cur->framework->info = TAKE_PTR(j->rec->framework->info);
    for (size_t i = 0; i < cur->framework->n_suppressed_roles; i++)
      free(cur->framework->suppressed_roles[i]);
    free(cur->framework->suppressed_roles);
    cur->framework->suppressed_roles = TAKE_PTR(j->rec->framework->suppressed_roles);
    cur->framework->n_suppressed_roles = j->rec->framework->n_suppressed_roles;
    j->rec->framework->n_suppressed_roles = 0;
  } else if (j->kind == J_FW_COMPLETE) {
    set_ts(&w->framework->completed_time);
  }
  int rc = cur ? put_at(s, cur, cur->revision, err) : put_absent(s, j->rec, err);
  if (cur)
    protobuf_c_message_free_unpacked(&cur->base, NULL);
  return rc;
}

static int load_kind(alloc_service *s, Meseta__V1__RecordKind kind, svc_reg_loaded *l, ms_error **err) {
  char *token = NULL;
  int rc = 0;
  do {
    Meseta__V1__ListRequest req = MESETA__V1__LIST_REQUEST__INIT;
    req.kind = kind;
    req.page_size = 1000;
    req.page_token = token ? token : "";
    ProtobufCMessage *r = NULL;
    rc = unary(s, REG("List"), &req.base, &meseta__v1__list_response__descriptor, &r, err);
    free(token);
    token = NULL;
    if (rc < 0)
      break;
    Meseta__V1__ListResponse *lr = (Meseta__V1__ListResponse *)r;
    l->pages = ms_xrealloc(l->pages, (l->npages + 1) * sizeof(*l->pages));
    l->pages[l->npages++] = lr;
    if (lr->next_page_token && *lr->next_page_token)
      token = ms_xstrdup(lr->next_page_token);
  } while (token);
  return rc;
}

static int agent_patch(alloc_service *s, reg_job *j, ms_error **err) {
  const char *id = j->rec->id;
  Meseta__V1__Record *cur = get(s, AGENT_KIND, id, err);
  if (!cur)
    return MS_ERR; /* NOT_FOUND names the record */
  Meseta__V1__AgentRecord *a = cur->agent;
  int rc = 0;
  if (!a) {
    rc = ms_error_set(err, MS_INTERNAL, "agent record `%s` has no agent body", id);
  } else if (a->state == MESETA__V1__AGENT_RECORD__STATE__GONE) {
    if (j->patch != SVC_PATCH_GONE)
      rc = ms_error_set(err, MS_FAILED_PRECONDITION, "agent `%s` was marked gone", id);
  } else {
    switch (j->patch) {
    case SVC_PATCH_DRAIN:
      a->drain_state = MESETA__V1__DRAIN_STATE__DRAINING;
      if (a->drain_config)
        protobuf_c_message_free_unpacked(&a->drain_config->base, NULL);
      a->drain_config = j->rec->agent->drain_config;
      j->rec->agent->drain_config = NULL;
      break;
    case SVC_PATCH_DEACTIVATE:
      a->deactivated = true;
      break;
    case SVC_PATCH_REACTIVATE:
      a->deactivated = false;
      a->drain_state = MESETA__V1__DRAIN_STATE__DRAIN_STATE_UNKNOWN;
      if (a->drain_config)
        protobuf_c_message_free_unpacked(&a->drain_config->base, NULL);
      a->drain_config = NULL;
      break;
    case SVC_PATCH_GONE:
      a->state = MESETA__V1__AGENT_RECORD__STATE__GONE;
      set_ts(&a->gone_time);
      break;
    }
    rc = put_at(s, cur, cur->revision, err);
  }
  protobuf_c_message_free_unpacked(&cur->base, NULL);
  return rc;
}

static void job_result(void *arg);

static void job_run(void *arg) {
  reg_job *j = arg;
  alloc_service *s = j->s;
  int rc = 0;
  switch (j->kind) {
  case J_ADMIT:
  case J_FW_ADD:
    rc = put_absent(s, j->rec, &j->err);
    if (rc < 0 && j->kind == J_FW_ADD && j->err->code == MS_ABORTED) {
      ms_error_free(j->err); /* already recorded (e.g. by an earlier subscription) */
      j->err = NULL;
    }
    break;
  case J_AGENT_STATE:
    (void)agent_state(s, j, &j->err);
    break;
  case J_FW_COMPLETE:
  case J_FW_UPDATE:
    (void)fw_complete(s, j, &j->err);
    break;
  case J_BATCH:
    rc = unary(s, REG("Batch"), &j->batch->base, &meseta__v1__batch_response__descriptor, NULL, &j->err);
    break;
  case J_AGENT_PATCH:
    (void)agent_patch(s, j, &j->err);
    break;
  case J_LOAD: {
    static const Meseta__V1__RecordKind kinds[] = {
        MESETA__V1__RECORD_KIND__AGENT,       MESETA__V1__RECORD_KIND__FRAMEWORK,
        MESETA__V1__RECORD_KIND__WEIGHT,      MESETA__V1__RECORD_KIND__QUOTA,
        MESETA__V1__RECORD_KIND__MAINTENANCE, MESETA__V1__RECORD_KIND__COMPLETED_TASKS};
    for (size_t i = 0; i < MS_ARRAY_SIZE(kinds) && rc == 0; i++)
      rc = load_kind(s, kinds[i], &j->loaded, &j->err);
    if (rc == 0 && load_kind(s, MESETA__V1__RECORD_KIND__COMPLETED_TASKS, &j->loaded, &j->err) < 0) {
      /* Only history (e.g. a registry older than the kind): lead without it. */
      ms_log_warn(NULL, "completed tasks not loaded: %s", j->err->msg);
      ms_error_free(j->err);
      j->err = NULL;
    }
    break;
  }
  }
  if (ms_loop_post(s->loop, job_result, j) < 0)
    ms_log_error(NULL, "registry result could not be posted");
}

static void loaded_release(svc_reg_loaded *l) {
  for (size_t i = 0; i < l->npages; i++)
    protobuf_c_message_free_unpacked(&l->pages[i]->base, NULL);
  free(l->pages);
  memset(l, 0, sizeof(*l));
}

/* The owner thread. */
static void job_result(void *arg) {
  reg_job *j = arg;
  alloc_service *s = j->s;
  bool current = j->term == s->term && !s->closing;
  if (j->err && current)
    ms_log_warn(j->rec ? j->rec->id : NULL, "registry: %s", j->err->msg);
  if (j->kind == J_LOAD) {
    svc_run_registry_loaded(s, &j->loaded, j->err, current); /* recovery, then history */
  } else if (j->done)
    j->done(s, j->ctx, j->err, current);
  loaded_release(&j->loaded);
  if (j->rec)
    protobuf_c_message_free_unpacked(&j->rec->base, NULL);
  if (j->batch)
    protobuf_c_message_free_unpacked(&j->batch->base, NULL);
  ms_error_free(j->err);
  free(j);
}

static void push(alloc_service *s, reg_job *j) {
  j->s = s;
  j->term = s->term;
  ms_error *err = NULL;
  if (!s->reg || ms_workq_push(s->reg->q, job_run, j, &err) < 0) {
    if (!err)
      ms_error_set(&err, MS_FAILED_PRECONDITION, "no registry");
    j->err = err;
    job_result(j); /* at once, on the owner thread: the caller sees the failure */
  }
}

/* ---- the owner thread's API ---- */

int svc_reg_open(alloc_service *s, ms_error **err) {
  if (!s->cfg.registry)
    return 0;
  svc_reg *r = ms_xcalloc(1, sizeof(*r));
  atomic_init(&r->stop, false);
  if (!(r->ch = ms_rpc_channel_new(s->cfg.registry, NULL, err)) || !(r->q = ms_workq_new(1, 0, err))) {
    ms_rpc_channel_free(r->ch);
    free(r);
    return ms_error_prefix(err, "flag `--registry`");
  }
  s->reg = r;
  return 0;
}

void svc_reg_stop(alloc_service *s) {
  svc_reg *r = s->reg;
  if (!r)
    return;
  atomic_store(&r->stop, true);
  ms_workq_free(r->q); /* queued jobs fail fast (CANCELLED) and post their results */
  ms_rpc_channel_free(r->ch);
  free(r);
  s->reg = NULL;
}

static Meseta__V1__Record *agent_record(const char *id, const Meseta__V1__AgentInfo *info) {
  Meseta__V1__Record *rec = ms_xmalloc(sizeof(*rec));
  meseta__v1__record__init(rec);
  rec->id = ms_xstrdup(id);
  rec->body_case = MESETA__V1__RECORD__BODY_AGENT;
  rec->agent = ms_xmalloc(sizeof(*rec->agent));
  meseta__v1__agent_record__init(rec->agent);
  if (info) {
    Meseta__V1__AgentInfo *ai = (Meseta__V1__AgentInfo *)ms_pb_dup(&info->base);
    if (ai->id)
      protobuf_c_message_free_unpacked(&ai->id->base, NULL);
    ai->id = ms_xmalloc(sizeof(*ai->id));
    meseta__v1__agent_id__init(ai->id);
    ai->id->value = ms_xstrdup(id);
    rec->agent->info = ai;
  }
  return rec;
}

void svc_reg_admit(alloc_service *s, const Meseta__V1__AgentInfo *info, svc_reg_done done, void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_ADMIT;
  j->rec = agent_record(info->id->value, info);
  j->rec->agent->state = MESETA__V1__AGENT_RECORD__STATE__ADMITTED;
  j->rec->agent->admitted_time = now_ts();
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

void svc_reg_agent_state(alloc_service *s, const char *id, const Meseta__V1__AgentInfo *info,
                         Meseta__V1__AgentRecord__State state, svc_reg_done done, void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_AGENT_STATE;
  j->rec = agent_record(id, info);
  j->state = state;
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

static Meseta__V1__Record *fw_record(const Meseta__V1__FrameworkInfo *info, const char *const *suppressed,
                                     size_t nsuppressed) {
  Meseta__V1__Record *rec = ms_xmalloc(sizeof(*rec));
  meseta__v1__record__init(rec);
  rec->id = ms_xstrdup(info->id->value);
  rec->body_case = MESETA__V1__RECORD__BODY_FRAMEWORK;
  rec->framework = ms_xmalloc(sizeof(*rec->framework));
  meseta__v1__framework_record__init(rec->framework);
  rec->framework->info = (Meseta__V1__FrameworkInfo *)ms_pb_dup(&info->base);
  rec->framework->registered_time = now_ts();
  rec->framework->suppressed_roles = ms_xcalloc(nsuppressed + 1, sizeof(char *));
  for (size_t i = 0; i < nsuppressed; i++)
    rec->framework->suppressed_roles[i] = ms_xstrdup(suppressed[i]);
  rec->framework->n_suppressed_roles = nsuppressed;
  return rec;
}

void svc_reg_add_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                           void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_FW_ADD;
  j->rec = fw_record(info, NULL, 0);
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

void svc_reg_complete_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info, svc_reg_done done,
                                void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_FW_COMPLETE;
  j->rec = fw_record(info, NULL, 0);
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

void svc_reg_update_framework(alloc_service *s, const Meseta__V1__FrameworkInfo *info,
                              const char *const *suppressed, size_t nsuppressed, svc_reg_done done,
                              void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_FW_UPDATE;
  j->rec = fw_record(info, suppressed, nsuppressed);
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

void svc_reg_load(alloc_service *s) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_LOAD;
  push(s, j);
}

void svc_reg_batch(alloc_service *s, Meseta__V1__BatchRequest *b, svc_reg_done done, void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_BATCH;
  j->batch = b;
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

void svc_reg_agent_patch(alloc_service *s, const char *id, svc_agent_patch what,
                         const Meseta__V1__DrainConfig *cfg, svc_reg_done done, void *ctx) {
  reg_job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = J_AGENT_PATCH;
  j->rec = agent_record(id, NULL);
  j->patch = what;
  if (cfg)
    j->rec->agent->drain_config = (Meseta__V1__DrainConfig *)ms_pb_dup(&cfg->base);
  else if (what == SVC_PATCH_DRAIN) {
    j->rec->agent->drain_config = ms_xmalloc(sizeof(*j->rec->agent->drain_config));
    meseta__v1__drain_config__init(j->rec->agent->drain_config);
  }
  j->done = done;
  j->ctx = ctx;
  push(s, j);
}

/* ---- the owner's view of agent records ---- */

Meseta__V1__AgentRecord__State svc_agent_rec_state(alloc_service *s, const char *id) {
  svc_agent_rec *r = svc_table_get(&s->agent_recs, id);
  return r ? r->state : MESETA__V1__AGENT_RECORD__STATE__STATE_UNKNOWN;
}

svc_agent_rec *svc_agent_rec_get(alloc_service *s, const char *id) {
  svc_agent_rec *r = svc_table_get(&s->agent_recs, id);
  if (!r) {
    r = ms_xcalloc(1, sizeof(*r));
    r->e.key = ms_xstrdup(id);
    svc_table_put(&s->agent_recs, &r->e);
  }
  return r;
}

void svc_agent_rec_set(alloc_service *s, const char *id, Meseta__V1__AgentRecord__State state) {
  svc_agent_rec_get(s, id)->state = state;
}

void svc_agent_recs_clear(alloc_service *s) {
  for (uint32_t i = 0; i < s->agent_recs.n; i++) {
    free(s->agent_recs.v[i]->key);
    free(s->agent_recs.v[i]);
  }
  svc_table_release(&s->agent_recs);
}
