/* What every subcommand shares: its flags wherever they stand, calls to the master and
 * to agents with the context's token and deadline, and one line per failure. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "meseta/alloc.h"
#include "meseta/v1/operator.pb-c.h"

#include "cli.h"

#define MAX_PAGES 100000
#define AGENT_CALL_MAX_MS 10000

static char **args_vec; /* the reordered argument vector of the current parse */

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("meseta: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return CLI_EXIT_USAGE;
}

static const ms_flag *find_flag(const ms_flag_spec *spec, const char *name, size_t n) {
  for (size_t i = 0; i < spec->n_flags; i++)
    if (strlen(spec->flags[i].name) == n && strncmp(spec->flags[i].name, name, n) == 0)
      return &spec->flags[i];
  return NULL;
}

/* Whether `--name` (no `=value`) takes the next word as its value. */
static bool takes_value(const ms_flag_spec *spec, const char *arg) {
  if (arg[1] != '-')
    return false; /* -h */
  const char *name = arg + 2;
  const ms_flag *f = find_flag(spec, name, strlen(name));
  return f && f->type != MS_FLAG_BOOL;
}

char *cli_output_flag;

/* A global flag (cli_global_spec) the command does not define itself. */
static const ms_flag *global_flag(const ms_flag_spec *spec, const char *arg) {
  if (arg[1] != '-')
    return NULL;
  const char *name = arg + 2;
  size_t n = strcspn(name, "=");
  if (find_flag(spec, name, n))
    return NULL; /* the command's own (`up --agent-port`) */
  return find_flag(&cli_global_spec, name, n);
}

/* The environment twins of a command's flags: MESETA_<COMMAND>_<FLAG> ("meseta quota
 * set" + "cpus" -> MESETA_QUOTA_SET_CPUS), so that one command's twin never reaches
 * another command's flag of the same name. */
static char *env_prefix;

int cli_args(cli *c, const ms_flag_spec *spec_in, int argc, char **argv, int min, int max, char ***ret_pos,
             int *ret_npos) {
  free(env_prefix);
  env_prefix = ms_xasprintf("%s ", spec_in->prog);
  ms_flag_spec scoped = *spec_in;
  scoped.env_prefix = env_prefix;
  const ms_flag_spec *spec = &scoped;
  /* Flags first, then `--`, then the positional arguments, for ms_flags_parse. Global
   * flags (`--master`) may stand here too: they go to the context. */
  free(args_vec);
  args_vec = ms_xcalloc((size_t)argc + 2, sizeof(char *));
  char **pos = ms_xcalloc((size_t)argc + 1, sizeof(char *));
  _cleanup_free_ char **globals = ms_xcalloc((size_t)argc + 1, sizeof(char *));
  int n = 0, npos = 0, nglobal = 0;
  args_vec[n++] = argv[0];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      while (++i < argc)
        pos[npos++] = argv[i];
      break;
    }
    if (a[0] != '-' || a[1] == '\0') {
      pos[npos++] = argv[i];
      continue;
    }
    if (strcmp(a, "-o") == 0) { /* the one short flag, as kubectl's */
      bool own = find_flag(spec, "output", 6) != NULL;
      char **to = own ? args_vec : globals;
      int *k = own ? &n : &nglobal;
      to[(*k)++] = "--output";
      if (i + 1 < argc)
        to[(*k)++] = argv[++i];
      continue;
    }
    const ms_flag *g = global_flag(spec, a);
    if (g) {
      globals[nglobal++] = argv[i];
      if (!strchr(a, '=') && g->type != MS_FLAG_BOOL && i + 1 < argc)
        globals[nglobal++] = argv[++i];
      continue;
    }
    args_vec[n++] = argv[i];
    if (!strchr(a, '=') && takes_value(spec, a) && i + 1 < argc)
      args_vec[n++] = argv[++i];
  }
  args_vec[n++] = "--";
  for (int i = 0; i < npos; i++)
    args_vec[n++] = pos[i];
  free(pos);

  ms_error *err = NULL;
  int next = 0;
  int r = ms_flags_parse(spec, n, args_vec, &next, &err);
  if (r == 1)
    return CLI_EXIT_OK;
  const char *prog = strncmp(spec->prog, "meseta ", 7) == 0 ? spec->prog + 7 : spec->prog;
  if (r == 0 && nglobal > 0 && cli_apply_globals(c, nglobal, globals) != -1)
    return CLI_EXIT_USAGE; /* it said why */
  if (r < 0) {
    cli_usage_error("%s: %s", prog, err->msg);
    ms_error_free(err);
    return CLI_EXIT_USAGE;
  }
  if (cli_output_flag && !cli_output_ok(cli_output_flag))
    return cli_usage_error("%s: flag `--output`: `%s` is not one of table, json, yaml", prog,
                           cli_output_flag);
  if (cli_output_flag) {
    free(c->output);
    c->output = ms_xstrdup(cli_output_flag);
  }
  npos = n - next;
  if (npos < min || (max >= 0 && npos > max)) {
    if (!spec->args || max == 0)
      return cli_usage_error("%s: takes no arguments (see `%s --help`)", prog, spec->prog);
    return cli_usage_error("%s: %s %s (see `%s --help`)", prog, npos < min ? "expects" : "takes only",
                           spec->args, spec->prog);
  }
  *ret_pos = args_vec + next;
  *ret_npos = npos;
  return -1;
}

bool cli_output_ok(const char *format) {
  return strcmp(format, "table") == 0 || strcmp(format, "json") == 0 || strcmp(format, "yaml") == 0;
}

void cli_args_free(const ms_flag_spec *spec) {
  ms_flags_free(spec);
  free(args_vec);
  args_vec = NULL;
  free(env_prefix);
  env_prefix = NULL;
}

/* ---- calls ---- */

static ms_rpc_channel *channel(cli *c, const char *target, ms_error **err) {
  ms_rpc_tls tls = {.ca_file = c->tls_ca, .cert_file = c->tls_cert, .key_file = c->tls_key};
  ms_rpc_channel_options o = {.tls = c->tls_ca ? &tls : NULL, .max_message_bytes = 64 << 20};
  return ms_rpc_channel_new(target, &o, err);
}

ms_rpc_channel *cli_master(cli *c, ms_error **err) {
  if (!c->ch && !(c->ch = channel(c, c->master, err)))
    ms_error_prefix(err, "master `%s`", c->master);
  return c->ch;
}

int cli_call(cli *c, ms_rpc_channel *ch, const char *service, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret_resp, ms_error **err) {
  int64_t timeout_ms = c->timeout_ns / 1000000;
  if (ch && timeout_ms > AGENT_CALL_MAX_MS)
    timeout_ms = AGENT_CALL_MAX_MS; /* an agent's: `run` polls it and must not stall long */
  if (!ch && !(ch = cli_master(c, err)))
    return MS_ERR;
  _cleanup_free_ char *path = ms_xasprintf("/meseta.v1.%s/%s", service, method);
  /* Wait for ready: a slow handshake (a loaded machine, TLS) or a master that is just
   * starting is waited for, up to the call's deadline, instead of failing at once. */
  ms_rpc_call_options o = {.timeout_ms = timeout_ms, .metadata = c->md, .wait_for_ready = true};
  return ms_rpc_unary(ch, path, req, resp_desc, &o, ret_resp, err);
}

int cli_fail(cli *c, const char *what, ms_error *err) {
  int rc = CLI_EXIT_REFUSED;
  if (err->code == MS_UNAVAILABLE || err->code == MS_DEADLINE_EXCEEDED)
    rc = CLI_EXIT_UNREACHABLE;
  else if (err->code == MS_INVALID_ARGUMENT && strncmp(err->msg, "master `", 8) == 0)
    rc = CLI_EXIT_USAGE; /* a master address that does not parse */
  if (err->code == MS_DEADLINE_EXCEEDED)
    fprintf(stderr,
            "meseta: %s: DEADLINE_EXCEEDED: no answer within --call-timeout %.3gs (master %s: not reachable, "
            "or too slow)\n",
            what, (double)c->timeout_ns / 1e9, c->master);
  else if (rc == CLI_EXIT_UNREACHABLE)
    fprintf(stderr, "meseta: %s: %s: %s (master %s)\n", what, ms_status_name(err->code), err->msg, c->master);
  else
    fprintf(stderr, "meseta: %s: %s: %s\n", what, ms_status_name(err->code), err->msg);
  ms_error_free(err);
  return rc;
}

ms_rpc_channel *cli_agent_channel(cli *c, const char *agent_id, char **ret_addr, ms_error **err) {
  Meseta__V1__AgentID id = MESETA__V1__AGENT_ID__INIT;
  id.value = (char *)agent_id;
  Meseta__V1__AgentID *ids[] = {&id};
  Meseta__V1__GetAgentsRequest req = MESETA__V1__GET_AGENTS_REQUEST__INIT;
  req.n_agent_ids = 1;
  req.agent_ids = ids;
  Meseta__V1__GetAgentsResponse *resp = NULL;
  if (cli_call(c, NULL, "Operator", "GetAgents", &req.base, &meseta__v1__get_agents_response__descriptor,
               (ProtobufCMessage **)&resp, err) < 0)
    return NULL;
  ms_rpc_channel *ch = NULL;
  if (resp->n_agents == 0 || !resp->agents[0]->agent_info || !*resp->agents[0]->agent_info->hostname) {
    ms_error_set(err, MS_NOT_FOUND, "agent `%s` is not known to the master", agent_id);
  } else {
    const Meseta__V1__AgentInfo *ai = resp->agents[0]->agent_info;
    /* The advertised AgentOperator address (--advertise-address of the agent), unless
     * --agent-port says otherwise (a port forwarded elsewhere): then hostname:that port;
     * agents advertising no port serve it on --agent-port. */
    int port = c->agent_port_set || ai->port <= 0 ? (int)c->agent_port : ai->port;
    char *addr = !c->agent_port_set && ai->address && *ai->address
                     ? ms_xstrdup(ai->address)
                     : ms_xasprintf("%s:%d", ai->hostname, port);
    if ((ch = channel(c, addr, err)) && ret_addr)
      *ret_addr = TAKE_PTR(addr);
    free(addr);
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return ch;
}

int cli_list_all(cli *c, const char *method, ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const char *items, json_t **ret,
                 ms_error **err) {
  const ProtobufCFieldDescriptor *tf =
      protobuf_c_message_descriptor_get_field_by_name(req->descriptor, "page_token");
  char **token = (char **)((char *)req + tf->offset);
  char *first = *token;
  json_t *doc = NULL, *all = json_array();
  int rc = 0;
  for (int page = 0; page < MAX_PAGES; page++) {
    ProtobufCMessage *resp = NULL;
    if ((rc = cli_call(c, NULL, "Operator", method, req, resp_desc, &resp, err)) < 0)
      break;
    json_t *j = cli_json_from_message(resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (json_is_array(json_object_get(j, items)))
      json_array_extend(all, json_object_get(j, items));
    const char *next = json_string_value(json_object_get(j, "next_page_token"));
    free(*token == first ? NULL : *token);
    *token = next ? ms_xstrdup(next) : NULL;
    json_object_del(j, "next_page_token");
    json_decref(doc);
    doc = j;
    if (!next)
      break;
  }
  if (*token != first)
    free(*token);
  *token = first;
  if (rc < 0) {
    json_decref(doc);
    json_decref(all);
    return rc;
  }
  json_object_set_new(doc, items, all);
  *ret = doc;
  return 0;
}

/* ---- values ---- */

int cli_parse_quantity(const char *name, const char *text, double *ret, ms_error **err) {
  char *end = NULL;
  double v = strtod(text, &end);
  if (end != text && *end == '\0' && isfinite(v) && v >= 0) {
    *ret = v;
    return 0;
  }
  int64_t bytes;
  if ((strcmp(name, "mem") == 0 || strcmp(name, "disk") == 0) && ms_bytes_parse(text, &bytes, NULL) == 0) {
    *ret = (double)bytes / (1024.0 * 1024.0);
    return 0;
  }
  return ms_error_set(err, MS_INVALID_ARGUMENT, "`%s` for `%s` is not a quantity%s", text, name,
                      strcmp(name, "mem") == 0 || strcmp(name, "disk") == 0 ? " (MiB, or a size like 512MiB)"
                                                                            : "");
}
