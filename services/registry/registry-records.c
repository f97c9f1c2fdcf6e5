#include "registry-records.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/roles.h"

#define ID_MAX 255

typedef int (*validate_fn)(const reg_record *r, ms_error **err);

typedef struct kind_row {
  reg_kind kind;
  const char *name;
  const char *segment;
  Meseta__V1__Record__BodyCase body;
  bool role_id; /* the id is a role name (may hold '/') */
  validate_fn validate;
} kind_row;

static int fail(ms_error **err, const char *field, const char *fmt, const char *what) {
  return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s`: %s%s", field, fmt, what ? what : "");
}

static int want_id(const char *got, const char *id, const char *field, ms_error **err) {
  if (!got || strcmp(got, id) != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s`: `%s` does not match the record id `%s`", field,
                        got ? got : "", id);
  return 0;
}

static int want_time(const Google__Protobuf__Timestamp *t, const char *field, ms_error **err) {
  if (!t)
    return fail(err, field, "is required in this state", NULL);
  if (t->seconds < 0 || t->nanos < 0 || t->nanos > 999999999)
    return fail(err, field, "is not a valid time", NULL);
  return 0;
}

static int check_scalar(const char *key, const Meseta__V1__Value__Scalar *value, const char *field,
                        ms_error **err) {
  double v = value ? value->value : 0;
  if (!key || !*key)
    return fail(err, field, "has an entry without a resource name", NULL);
  if (!isfinite(v) || v < 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s[%s]`: %g is not a non-negative quantity", field,
                        key, v);
  return 0;
}

static int v_agent(const reg_record *r, ms_error **err) {
  const Meseta__V1__AgentRecord *a = r->agent;
  if (!a->info)
    return fail(err, "agent.info", "is required", NULL);
  if (want_id(a->info->id ? a->info->id->value : NULL, r->id, "agent.info.id", err) < 0)
    return MS_ERR;
  if (!a->info->hostname || !*a->info->hostname)
    return fail(err, "agent.info.hostname", "is required", NULL);
  if (a->info->port < 0 || a->info->port > 65535)
    return fail(err, "agent.info.port", "is not a port number", NULL);
  switch (a->state) {
  case MESETA__V1__AGENT_RECORD__STATE__ADMITTED:
    return 0;
  case MESETA__V1__AGENT_RECORD__STATE__UNREACHABLE:
    return want_time(a->unreachable_time, "agent.unreachable_time", err);
  case MESETA__V1__AGENT_RECORD__STATE__GONE:
    return want_time(a->gone_time, "agent.gone_time", err);
  default:
    return fail(err, "agent.state", "must be ADMITTED, UNREACHABLE or GONE", NULL);
  }
}

static int v_framework(const reg_record *r, ms_error **err) {
  const Meseta__V1__FrameworkRecord *f = r->framework;
  if (!f->info)
    return fail(err, "framework.info", "is required", NULL);
  if (want_id(f->info->id ? f->info->id->value : NULL, r->id, "framework.info.id", err) < 0)
    return MS_ERR;
  if (!f->info->name || !*f->info->name)
    return fail(err, "framework.info.name", "is required", NULL);
  for (size_t i = 0; i < f->info->n_roles; i++)
    if (ms_role_validate(f->info->roles[i], err) < 0)
      return ms_error_prefix(err, "field `framework.info.roles[%zu]`", i);
  return 0;
}

static int v_quota(const reg_record *r, ms_error **err) {
  const Meseta__V1__QuotaConfig *q = r->quota->config;
  if (!q)
    return fail(err, "quota.config", "is required", NULL);
  if (want_id(q->role, r->id, "quota.config.role", err) < 0)
    return MS_ERR;
  for (size_t i = 0; i < q->n_guarantees; i++)
    if (check_scalar(q->guarantees[i]->key, q->guarantees[i]->value, "quota.config.guarantees", err) < 0)
      return MS_ERR;
  for (size_t i = 0; i < q->n_limits; i++)
    if (check_scalar(q->limits[i]->key, q->limits[i]->value, "quota.config.limits", err) < 0)
      return MS_ERR;
  /* A guarantee above its own limit could never be honoured. */
  for (size_t i = 0; i < q->n_guarantees; i++)
    for (size_t j = 0; j < q->n_limits; j++)
      if (strcmp(q->guarantees[i]->key, q->limits[j]->key) == 0 && q->guarantees[i]->value &&
          q->limits[j]->value && q->guarantees[i]->value->value > q->limits[j]->value->value)
        return ms_error_set(
            err, MS_INVALID_ARGUMENT, "field `quota.config.guarantees[%s]`: %g is above its limit %g",
            q->guarantees[i]->key, q->guarantees[i]->value->value, q->limits[j]->value->value);
  return 0;
}

static int v_weight(const reg_record *r, ms_error **err) {
  const Meseta__V1__WeightInfo *w = r->weight->weight;
  if (!w)
    return fail(err, "weight.weight", "is required", NULL);
  if (want_id(w->role, r->id, "weight.weight.role", err) < 0)
    return MS_ERR;
  if (!isfinite(w->weight) || w->weight <= 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `weight.weight.weight`: %g is not a positive number",
                        w->weight);
  return 0;
}

static int v_maintenance(const reg_record *r, ms_error **err) {
  if (strcmp(r->id, "schedule") != 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `id`: the maintenance record is `schedule`, not `%s`", r->id);
  const Meseta__V1__MaintenanceSchedule *s = r->maintenance->schedule;
  for (size_t i = 0; s && i < s->n_windows; i++) {
    const Meseta__V1__MaintenanceWindow *w = s->windows[i];
    if (w->n_machine_ids == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `maintenance.schedule.windows[%zu].machine_ids` is empty", i);
    for (size_t j = 0; j < w->n_machine_ids; j++)
      if (!*w->machine_ids[j]->hostname && !*w->machine_ids[j]->ip)
        return ms_error_set(
            err, MS_INVALID_ARGUMENT,
            "field `maintenance.schedule.windows[%zu].machine_ids[%zu]` needs a hostname or an ip", i, j);
    if (!w->unavailability || !w->unavailability->start)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `maintenance.schedule.windows[%zu].unavailability.start` is required", i);
  }
  return 0;
}

static int v_provider(const reg_record *r, ms_error **err) {
  const Meseta__V1__ResourceProviderRecord *p = r->resource_provider;
  if (!p->info)
    return fail(err, "resource_provider.info", "is required", NULL);
  if (want_id(p->info->id ? p->info->id->value : NULL, r->id, "resource_provider.info.id", err) < 0)
    return MS_ERR;
  if (!p->agent_id || !*p->agent_id->value)
    return fail(err, "resource_provider.agent_id", "is required", NULL);
  return 0;
}

static int v_operation(const reg_record *r, ms_error **err) {
  const Meseta__V1__OperationRecord *o = r->operation;
  /* A framework's operation id is unique only within the framework: its record is
   * named by meseta's uuid for the operation instead. */
  bool framework_op = o->framework_id && o->framework_id->value && *o->framework_id->value;
  if (framework_op && (!o->id || !o->id->value || !*o->id->value))
    return fail(err, "operation.id", "is required", NULL);
  if (!framework_op && want_id(o->id ? o->id->value : NULL, r->id, "operation.id", err) < 0)
    return MS_ERR;
  if (!o->operation)
    return fail(err, "operation.operation", "is required", NULL);
  if (o->state == MESETA__V1__OPERATION_STATE__OPERATION_STATE_UNKNOWN)
    return fail(err, "operation.state", "is required", NULL);
  if (!o->agent_id || !*o->agent_id->value)
    return fail(err, "operation.agent_id", "is required", NULL);
  return 0;
}

static int v_completed_tasks(const reg_record *r, ms_error **err) {
  const Meseta__V1__CompletedTasksRecord *c = r->completed_tasks;
  if (c->n_tasks == 0 || c->n_tasks > REG_MAX_COMPLETED_TASKS)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `completed_tasks.tasks`: %zu tasks, not 1 to %d",
                        c->n_tasks, REG_MAX_COMPLETED_TASKS);
  for (size_t i = 0; i < c->n_tasks; i++) {
    const Meseta__V1__Task *t = c->tasks[i];
    if (!t->task_id || !t->task_id->value || !*t->task_id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "field `completed_tasks.tasks[%zu].task_id` is required",
                          i);
    if (!t->framework_id || !t->framework_id->value || !*t->framework_id->value)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `completed_tasks.tasks[%zu].framework_id` is required", i);
  }
  return 0;
}

static const kind_row kinds[] = {
    {MESETA__V1__RECORD_KIND__AGENT, "AGENT", "agents", MESETA__V1__RECORD__BODY_AGENT, false, v_agent},
    {MESETA__V1__RECORD_KIND__FRAMEWORK, "FRAMEWORK", "frameworks", MESETA__V1__RECORD__BODY_FRAMEWORK, false,
     v_framework},
    {MESETA__V1__RECORD_KIND__QUOTA, "QUOTA", "quota", MESETA__V1__RECORD__BODY_QUOTA, true, v_quota},
    {MESETA__V1__RECORD_KIND__WEIGHT, "WEIGHT", "weights", MESETA__V1__RECORD__BODY_WEIGHT, true, v_weight},
    {MESETA__V1__RECORD_KIND__MAINTENANCE, "MAINTENANCE", "maintenance", MESETA__V1__RECORD__BODY_MAINTENANCE,
     false, v_maintenance},
    {MESETA__V1__RECORD_KIND__RESOURCE_PROVIDER, "RESOURCE_PROVIDER", "providers",
     MESETA__V1__RECORD__BODY_RESOURCE_PROVIDER, false, v_provider},
    {MESETA__V1__RECORD_KIND__OPERATION, "OPERATION", "operations", MESETA__V1__RECORD__BODY_OPERATION, false,
     v_operation},
    {MESETA__V1__RECORD_KIND__COMPLETED_TASKS, "COMPLETED_TASKS", "completed-tasks",
     MESETA__V1__RECORD__BODY_COMPLETED_TASKS, false, v_completed_tasks},
};

static const kind_row *row_of(reg_kind kind) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(kinds); i++)
    if (kinds[i].kind == kind)
      return &kinds[i];
  return NULL;
}

const char *reg_kind_segment(reg_kind kind) {
  const kind_row *r = row_of(kind);
  return r ? r->segment : NULL;
}

const char *reg_kind_name(reg_kind kind) {
  const kind_row *r = row_of(kind);
  return r ? r->name : "UNSPECIFIED";
}

reg_kind reg_record_kind(const reg_record *r) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(kinds); i++)
    if (kinds[i].body == r->body_case)
      return kinds[i].kind;
  return MESETA__V1__RECORD_KIND__RECORD_KIND_UNSPECIFIED;
}

int reg_check_ref(reg_kind kind, const char *id, const char *field, ms_error **err) {
  const kind_row *row = row_of(kind);
  if (!row)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.kind`: %d is not a record kind", field,
                        (int)kind);
  if (!id || !*id)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.id` is empty", field);
  if (row->role_id) {
    if (ms_role_validate(id, err) < 0)
      return ms_error_prefix(err, "field `%s.id`", field);
    return 0;
  }
  size_t n = strlen(id);
  if (n > ID_MAX)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.id`: %zu bytes is over the %d-byte limit", field,
                        n, ID_MAX);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)id[i];
    if (c <= ' ' || c >= 0x7f || c == '/')
      return ms_error_set(
          err, MS_INVALID_ARGUMENT,
          "field `%s.id`: `%s` holds a character ids may not have (space, control, `/`, non-ASCII)", field,
          id);
  }
  if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `%s.id`: `%s` is not an id", field, id);
  return 0;
}

int reg_validate(const reg_record *r, ms_error **err) {
  reg_kind kind = reg_record_kind(r);
  if (kind == MESETA__V1__RECORD_KIND__RECORD_KIND_UNSPECIFIED)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "field `record.body` is empty: a record needs one body");
  if (reg_check_ref(kind, r->id, "record", err) < 0)
    return MS_ERR;
  if (row_of(kind)->validate(r, err) < 0)
    return ms_error_prefix(err, "%s record `%s`", reg_kind_name(kind), r->id);
  return 0;
}

char *reg_kind_prefix(const char *prefix, reg_kind kind) {
  return ms_xasprintf("%s/v1/%s/", prefix, reg_kind_segment(kind));
}

char *reg_key(const char *prefix, reg_kind kind, const char *id) {
  return ms_xasprintf("%s/v1/%s/%s", prefix, reg_kind_segment(kind), id);
}

bool reg_parse_key(const char *prefix, const char *key, size_t len, reg_kind *ret_kind, const char **ret_id,
                   size_t *ret_id_len) {
  size_t plen = strlen(prefix);
  if (len < plen + 4 || memcmp(key, prefix, plen) != 0 || memcmp(key + plen, "/v1/", 4) != 0)
    return false;
  const char *rest = key + plen + 4, *end = key + len;
  for (size_t i = 0; i < MS_ARRAY_SIZE(kinds); i++) {
    size_t slen = strlen(kinds[i].segment);
    if ((size_t)(end - rest) > slen + 1 && memcmp(rest, kinds[i].segment, slen) == 0 && rest[slen] == '/') {
      *ret_kind = kinds[i].kind;
      *ret_id = rest + slen + 1;
      *ret_id_len = (size_t)(end - *ret_id);
      return true;
    }
  }
  return false;
}

/* Tokens are "<revision>.<hex of the next key>": printable, and checked on the way in. */
char *reg_page_token_encode(long long revision, const char *next_key, size_t len) {
  char *t = ms_xmalloc(32 + 2 * len + 1);
  int n = snprintf(t, 32, "%lld.", revision);
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    t[n + 2 * i] = hex[(unsigned char)next_key[i] >> 4];
    t[n + 2 * i + 1] = hex[(unsigned char)next_key[i] & 15];
  }
  t[n + 2 * len] = '\0';
  return t;
}

static int unhex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int reg_page_token_decode(const char *token, long long *ret_revision, char **ret_next_key, size_t *ret_len,
                          ms_error **err) {
  char *dot = NULL;
  long long rev = strtoll(token, &dot, 10);
  size_t hexlen = dot && *dot == '.' ? strlen(dot + 1) : 1;
  if (!dot || *dot != '.' || rev <= 0 || hexlen % 2 || hexlen == 0)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "field `page_token`: `%s` is not a token this registry issued", token);
  char *key = ms_xmalloc(hexlen / 2 + 1);
  for (size_t i = 0; i < hexlen / 2; i++) {
    int hi = unhex(dot[1 + 2 * i]), lo = unhex(dot[2 + 2 * i]);
    if (hi < 0 || lo < 0) {
      free(key);
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "field `page_token`: `%s` is not a token this registry issued", token);
    }
    key[i] = (char)(hi << 4 | lo);
  }
  key[hexlen / 2] = '\0';
  *ret_revision = rev;
  *ret_next_key = key;
  *ret_len = hexlen / 2;
  return 0;
}
