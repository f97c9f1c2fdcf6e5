/* Operator changes: quota, weights, reservations, agent draining and activation,
 * framework teardown. Each is one Operator call; the answer's revision is printed
 * (or the whole answer with -o json|yaml). */
#include <stdarg.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

/* After a change: the answer in -o json|yaml, else one line (fmt) with its revision. */
static int changed(cli *c, const ProtobufCMessage *resp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int changed(cli *c, const ProtobufCMessage *resp, const char *fmt, ...) {
  if (strcmp(c->output, "table") != 0)
    return cli_print_message(c, resp);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "revision");
  if (f)
    printf(" (revision %lld)", (long long)*(const int64_t *)((const char *)resp + f->offset));
  putchar('\n');
  return CLI_EXIT_OK;
}

/* One Operator call; on success `resp` is the caller's, else the exit code is returned
 * (as -1 - code so that 0 stays "ok"). */
static int op_call(cli *c, const char *what, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp) {
  ms_error *err = NULL;
  if (cli_call(c, NULL, "Operator", method, req, rd, resp, &err) < 0)
    return cli_fail(c, what, err);
  return -1;
}

/* ---- quota ---- */

static const cli_col quota_cols[] = {
    {"ROLE", CLI_COL_PATH, "role", NULL},
    {"GUARANTEES", CLI_COL_MAP, "guarantees", NULL},
    {"LIMITS", CLI_COL_MAP, "limits", NULL},
};

int cli_cmd_quota_get(cli *c, int argc, char **argv) {
  static const ms_flag fl[] = {CLI_OUTPUT_FLAG};
  ms_flag_spec spec = {"meseta quota get", "Shows quota: every role's, or one role's.", fl, MS_ARRAY_SIZE(fl),
                       "[ROLE]"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 1, &pos, &npos);
  if (rc < 0) {
    Meseta__V1__GetQuotaRequest req = MESETA__V1__GET_QUOTA_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = op_call(c, "quota get", "GetQuota", &req.base, &meseta__v1__get_quota_response__descriptor,
                      &resp)) < 0) {
      json_t *doc = cli_json_from_message(resp);
      json_t *configs = json_object_get(doc, "configs");
      for (size_t i = 0; npos == 1 && i < json_array_size(configs);) {
        const char *role = json_string_value(json_object_get(json_array_get(configs, i), "role"));
        if (role && strcmp(role, pos[0]) == 0)
          i++;
        else
          json_array_remove(configs, i);
      }
      rc = cli_print(c, doc, "configs", quota_cols, MS_ARRAY_SIZE(quota_cols));
      json_decref(doc);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
  }
  cli_args_free(&spec);
  return rc;
}

/* Sets key to v in a map<string, Value.Scalar> field of a heap message (replacing). */
static void map_put(ProtobufCMessage *m, const char *field, const char *key, double v) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
  size_t *n = (size_t *)((char *)m + f->quantifier_offset);
  Meseta__V1__QuotaConfig__GuaranteesEntry ***arr = (void *)((char *)m + f->offset);
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*arr)[i]->key, key) == 0) {
      (*arr)[i]->value->value = v;
      return;
    }
  Meseta__V1__QuotaConfig__GuaranteesEntry *e =
      ms_pb_new(f->descriptor); /* every entry type is {key, value} */
  e->key = ms_xstrdup(key);
  e->value = ms_pb_new(&meseta__v1__value__scalar__descriptor);
  e->value->value = v;
  *arr = ms_xrealloc(*arr, (*n + 1) * sizeof(**arr));
  (*arr)[(*n)++] = e;
}

/* "cpus:2;mem:1GiB" (or with commas) into a map field. */
static int map_put_text(ProtobufCMessage *m, const char *field, const char *flag, const char *text,
                        ms_error **err) {
  _cleanup_free_ char *copy = ms_xstrdup(text);
  for (char *part = copy, *next; part; part = next) {
    size_t len = strcspn(part, ";,");
    next = part[len] ? part + len + 1 : NULL;
    part[len] = '\0';
    if (!*part)
      continue;
    char *colon = strchr(part, ':');
    double v;
    if (!colon || colon == part)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `--%s`: `%s` is not NAME:QUANTITY", flag, part);
    *colon = '\0';
    if (cli_parse_quantity(part, colon + 1, &v, err) < 0)
      return ms_error_prefix(err, "flag `--%s`", flag);
    map_put(m, field, part, v);
  }
  return 0;
}

static char *q_cpus, *q_mem, *q_disk, *q_gpus, *q_guarantee, *q_limit;
static bool q_force;
static const ms_flag quota_flags[] = {
    CLI_OUTPUT_FLAG,
    {"cpus", MS_FLAG_STRING, &q_cpus, NULL, "Guarantee and limit of cpus", "N"},
    {"mem", MS_FLAG_STRING, &q_mem, NULL, "Guarantee and limit of mem (MiB, or 4GiB...)", "SIZE"},
    {"disk", MS_FLAG_STRING, &q_disk, NULL, "Guarantee and limit of disk (MiB, or 100GiB...)", "SIZE"},
    {"gpus", MS_FLAG_STRING, &q_gpus, NULL, "Guarantee and limit of gpus", "N"},
    {"guarantee", MS_FLAG_STRING, &q_guarantee, NULL, "Guarantees, e.g. `cpus:2;mem:4GiB`", "QUANTITIES"},
    {"limit", MS_FLAG_STRING, &q_limit, NULL, "Limits, e.g. `cpus:8`", "QUANTITIES"},
    {"force", MS_FLAG_BOOL, &q_force, "false", "Skip the capacity and hierarchy checks"},
};

static int quota_update(cli *c, const char *what, const char *role, bool from_flags) {
  Meseta__V1__QuotaConfig *cfg = ms_pb_new(&meseta__v1__quota_config__descriptor);
  cfg->role = ms_xstrdup(role);
  ms_error *err = NULL;
  int rc = 0;
  const char *const *both[] = {(const char *const *)&q_cpus, (const char *const *)&q_mem,
                               (const char *const *)&q_disk, (const char *const *)&q_gpus};
  static const char *const names[] = {"cpus", "mem", "disk", "gpus"};
  for (size_t i = 0; from_flags && rc == 0 && i < MS_ARRAY_SIZE(names); i++) {
    double v;
    if (!*both[i])
      continue;
    if ((rc = cli_parse_quantity(names[i], *both[i], &v, &err)) < 0) {
      ms_error_prefix(&err, "flag `--%s`", names[i]);
      break;
    }
    map_put(&cfg->base, "guarantees", names[i], v);
    map_put(&cfg->base, "limits", names[i], v);
  }
  if (from_flags && rc == 0 && q_guarantee)
    rc = map_put_text(&cfg->base, "guarantees", "guarantee", q_guarantee, &err);
  if (from_flags && rc == 0 && q_limit)
    rc = map_put_text(&cfg->base, "limits", "limit", q_limit, &err);
  if (rc < 0) {
    protobuf_c_message_free_unpacked(&cfg->base, NULL);
    cli_usage_error("%s: %s", what, err->msg);
    ms_error_free(err);
    return CLI_EXIT_USAGE;
  }
  if (from_flags && !cfg->n_guarantees && !cfg->n_limits) {
    protobuf_c_message_free_unpacked(&cfg->base, NULL);
    return cli_usage_error("%s: give quantities (--cpus, --mem, --guarantee, --limit...); "
                           "`meseta quota remove ROLE` removes a quota",
                           what);
  }
  Meseta__V1__QuotaConfig *cfgs[] = {cfg};
  Meseta__V1__UpdateQuotaRequest req = MESETA__V1__UPDATE_QUOTA_REQUEST__INIT;
  req.n_configs = 1;
  req.configs = cfgs;
  req.force = q_force;
  ProtobufCMessage *resp = NULL;
  if ((rc = op_call(c, what, "UpdateQuota", &req.base, &meseta__v1__update_quota_response__descriptor,
                    &resp)) < 0) {
    rc = changed(c, resp, "quota of role `%s` %s", role, from_flags ? "set" : "removed");
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  protobuf_c_message_free_unpacked(&cfg->base, NULL);
  return rc;
}

int cli_cmd_quota_set(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta quota set",
                       "Replaces a role's quota. --cpus/--mem/--disk/--gpus set guarantee and limit alike.",
                       quota_flags, MS_ARRAY_SIZE(quota_flags), "ROLE"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0)
    rc = quota_update(c, "quota set", pos[0], true);
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_quota_remove(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta quota remove", "Removes a role's quota.", quota_flags, 1, "ROLE"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0)
    rc = quota_update(c, "quota remove", pos[0], false);
  cli_args_free(&spec);
  return rc;
}

/* ---- weights ---- */

int cli_cmd_weights_get(cli *c, int argc, char **argv) {
  static const ms_flag fl[] = {CLI_OUTPUT_FLAG};
  static const cli_col cols[] = {{"ROLE", CLI_COL_PATH, "role", NULL},
                                 {"WEIGHT", CLI_COL_PATH, "weight", NULL}};
  ms_flag_spec spec = {"meseta weights get", "Shows the roles whose weight is set (others weigh 1).", fl,
                       MS_ARRAY_SIZE(fl), NULL};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 0, 0, &pos, &npos);
  if (rc < 0) {
    Meseta__V1__GetWeightsRequest req = MESETA__V1__GET_WEIGHTS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if ((rc = op_call(c, "weights get", "GetWeights", &req.base,
                      &meseta__v1__get_weights_response__descriptor, &resp)) < 0) {
      json_t *doc = cli_json_from_message(resp);
      rc = cli_print(c, doc, "weight_infos", cols, MS_ARRAY_SIZE(cols));
      json_decref(doc);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
  }
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_weights_set(cli *c, int argc, char **argv) {
  static const ms_flag fl[] = {CLI_OUTPUT_FLAG};
  ms_flag_spec spec = {"meseta weights set", "Sets role weights, all or none (1 removes a role's weight).",
                       fl, MS_ARRAY_SIZE(fl), "ROLE=WEIGHT..."};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, -1, &pos, &npos);
  if (rc >= 0) {
    cli_args_free(&spec);
    return rc;
  }
  Meseta__V1__WeightInfo *infos = ms_xcalloc((size_t)npos, sizeof(*infos));
  Meseta__V1__WeightInfo **ptrs = ms_xcalloc((size_t)npos, sizeof(*ptrs));
  char **roles = ms_xcalloc((size_t)npos, sizeof(*roles));
  for (int i = 0; i < npos && rc < 0; i++) {
    const char *eq = strrchr(pos[i], '=');
    char *end = NULL;
    double w = eq ? strtod(eq + 1, &end) : 0;
    if (!eq || eq == pos[i] || end == eq + 1 || *end) {
      rc = cli_usage_error("weights set: `%s` is not ROLE=WEIGHT", pos[i]);
      break;
    }
    meseta__v1__weight_info__init(&infos[i]);
    roles[i] = ms_xstrndup(pos[i], (size_t)(eq - pos[i]));
    infos[i].role = roles[i];
    infos[i].weight = w;
    ptrs[i] = &infos[i];
  }
  if (rc < 0) {
    Meseta__V1__UpdateWeightsRequest req = MESETA__V1__UPDATE_WEIGHTS_REQUEST__INIT;
    req.n_weight_infos = (size_t)npos;
    req.weight_infos = ptrs;
    ProtobufCMessage *resp = NULL;
    if ((rc = op_call(c, "weights set", "UpdateWeights", &req.base,
                      &meseta__v1__update_weights_response__descriptor, &resp)) < 0) {
      rc = changed(c, resp, "weights set");
      protobuf_c_message_free_unpacked(resp, NULL);
    }
  }
  for (int i = 0; i < npos; i++)
    free(roles[i]);
  free(roles);
  free(ptrs);
  free(infos);
  cli_args_free(&spec);
  return rc;
}

/* ---- reservations ---- */

static char *r_role, *r_principal;
static const ms_flag reserve_flags[] = {
    CLI_OUTPUT_FLAG,
    {"role", MS_FLAG_STRING, &r_role, NULL, "The role the reservation is for", "ROLE", true},
    {"principal", MS_FLAG_STRING, &r_principal, NULL, "Principal recorded in the reservation", "NAME"},
};

static int reservation(cli *c, bool reserve, int argc, char **argv) {
  ms_flag_spec spec = {reserve ? "meseta reserve" : "meseta unreserve",
                       reserve ? "Reserves resources of an agent for a role (a dynamic reservation)."
                               : "Removes a dynamic reservation of an agent's resources.",
                       reserve_flags, MS_ARRAY_SIZE(reserve_flags), "AGENT_ID RESOURCES"};
  const char *what = reserve ? "reserve" : "unreserve";
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 2, 2, &pos, &npos);
  if (rc >= 0) {
    cli_args_free(&spec);
    return rc;
  }
  ms_error *err = NULL;
  ms_resources *set = NULL;
  ms_reservation r = {.type = MS_RESERVATION_DYNAMIC, .role = r_role, .principal = r_principal};
  if (ms_resources_parse_text(pos[1], NULL, &set, &err) < 0 ||
      ms_resources_push_reservation(set, &r, &err) < 0) {
    rc = cli_usage_error("%s: RESOURCES `%s`: %s", what, pos[1], err->msg);
    ms_error_free(err);
    ms_resources_free(set);
    cli_args_free(&spec);
    return rc;
  }
  Meseta__V1__Resources *res = ms_resources_to_proto(set);
  ms_resources_free(set);
  Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
  aid.value = pos[0];
  ProtobufCMessage *resp = NULL;
  if (reserve) {
    Meseta__V1__ReserveResourcesRequest req = MESETA__V1__RESERVE_RESOURCES_REQUEST__INIT;
    req.agent_id = &aid;
    req.n_resources = res->n_resources;
    req.resources = res->resources;
    rc = op_call(c, what, "ReserveResources", &req.base, &meseta__v1__reserve_resources_response__descriptor,
                 &resp);
  } else {
    Meseta__V1__UnreserveResourcesRequest req = MESETA__V1__UNRESERVE_RESOURCES_REQUEST__INIT;
    req.agent_id = &aid;
    req.n_resources = res->n_resources;
    req.resources = res->resources;
    rc = op_call(c, what, "UnreserveResources", &req.base,
                 &meseta__v1__unreserve_resources_response__descriptor, &resp);
  }
  if (rc < 0) {
    rc = changed(c, resp, "%s `%s` on agent `%s` for role `%s`", reserve ? "reserved" : "unreserved", pos[1],
                 pos[0], r_role);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  ms_resources_proto_free(res);
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_reserve(cli *c, int argc, char **argv) {
  return reservation(c, true, argc, argv);
}

int cli_cmd_unreserve(cli *c, int argc, char **argv) {
  return reservation(c, false, argc, argv);
}

/* ---- agents and frameworks ---- */

static int64_t d_grace = -1;
static bool d_mark_gone;
static const ms_flag drain_flags[] = {
    CLI_OUTPUT_FLAG,
    {"max-grace-period", MS_FLAG_DURATION, &d_grace, NULL, "Longest grace period of the tasks killed",
     "DURATION"},
    {"mark-gone", MS_FLAG_BOOL, &d_mark_gone, "false", "Mark the agent gone once drained (irreversible)"},
};

int cli_cmd_drain(cli *c, int argc, char **argv) {
  ms_flag_spec spec = {"meseta drain", "Drains an agent: no more offers, its tasks killed.", drain_flags,
                       MS_ARRAY_SIZE(drain_flags), "AGENT_ID"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0) {
    Meseta__V1__AgentID aid = MESETA__V1__AGENT_ID__INIT;
    aid.value = pos[0];
    Google__Protobuf__Duration g = GOOGLE__PROTOBUF__DURATION__INIT;
    g.seconds = d_grace / 1000000000;
    g.nanos = (int32_t)(d_grace % 1000000000);
    Meseta__V1__DrainConfig cfg = MESETA__V1__DRAIN_CONFIG__INIT;
    cfg.max_grace_period = d_grace >= 0 ? &g : NULL;
    cfg.mark_gone = d_mark_gone;
    Meseta__V1__DrainAgentRequest req = MESETA__V1__DRAIN_AGENT_REQUEST__INIT;
    req.agent_id = &aid;
    req.config = &cfg;
    ProtobufCMessage *resp = NULL;
    if ((rc = op_call(c, "drain", "DrainAgent", &req.base, &meseta__v1__drain_agent_response__descriptor,
                      &resp)) < 0) {
      rc = changed(c, resp, "agent `%s` draining", pos[0]);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
  }
  cli_args_free(&spec);
  return rc;
}

/* Deactivate, reactivate, teardown: one id in field 1, a revision back. */
static int one_id(cli *c, int argc, char **argv, const char *what, const char *summary, const char *method,
                  const ProtobufCMessageDescriptor *req_d, const ProtobufCMessageDescriptor *id_d,
                  const ProtobufCMessageDescriptor *resp_d, const char *done) {
  static const ms_flag fl[] = {CLI_OUTPUT_FLAG};
  _cleanup_free_ char *prog = ms_xasprintf("meseta %s", what);
  ms_flag_spec spec = {prog, summary, fl, MS_ARRAY_SIZE(fl),
                       id_d == &meseta__v1__agent_id__descriptor ? "AGENT_ID" : "FRAMEWORK_ID"};
  char **pos;
  int npos;
  int rc = cli_args(c, &spec, argc, argv, 1, 1, &pos, &npos);
  if (rc < 0) {
    ProtobufCMessage *req = ms_pb_new(req_d);
    Meseta__V1__AgentID *id = ms_pb_new(id_d); /* AgentID and FrameworkID are both {value} */
    id->value = ms_xstrdup(pos[0]);
    *(ProtobufCMessage **)((char *)req + req_d->fields[0].offset) = &id->base;
    ProtobufCMessage *resp = NULL;
    if ((rc = op_call(c, what, method, req, resp_d, &resp)) < 0) {
      rc = changed(c, resp, "%s `%s`", done, pos[0]);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
    protobuf_c_message_free_unpacked(req, NULL);
  }
  cli_args_free(&spec);
  return rc;
}

int cli_cmd_deactivate(cli *c, int argc, char **argv) {
  return one_id(c, argc, argv, "deactivate", "Stops offering an agent's resources; its tasks keep running.",
                "DeactivateAgent", &meseta__v1__deactivate_agent_request__descriptor,
                &meseta__v1__agent_id__descriptor, &meseta__v1__deactivate_agent_response__descriptor,
                "deactivated agent");
}

int cli_cmd_reactivate(cli *c, int argc, char **argv) {
  return one_id(c, argc, argv, "reactivate", "Offers a deactivated, draining or drained agent again.",
                "ReactivateAgent", &meseta__v1__reactivate_agent_request__descriptor,
                &meseta__v1__agent_id__descriptor, &meseta__v1__reactivate_agent_response__descriptor,
                "reactivated agent");
}

int cli_cmd_teardown(cli *c, int argc, char **argv) {
  return one_id(c, argc, argv, "teardown", "Removes a framework: its tasks are killed, its offers rescinded.",
                "Teardown", &meseta__v1__teardown_framework_request__descriptor,
                &meseta__v1__framework_id__descriptor, &meseta__v1__teardown_framework_response__descriptor,
                "tore down framework");
}
