/* The `meseta` command: shared state and helpers of its subcommands.
 *
 * A subcommand is a row of the command table in meseta.c (noun, verb, function). It
 * gets the global context and its own arguments (argv[0] is its name) and returns the
 * process's exit code (CLI_EXIT_*; `run` returns its task's).
 *
 * Ownership: the context owns its channels and strings; json_t values returned by
 * cli_json_* are new references the caller decrefs; messages returned by cli_call are
 * the caller's (protobuf_c_message_free_unpacked). Single-threaded except where a
 * function says otherwise (cli_call and cli_agent_channel are thread-safe once the
 * master channel exists). */
#pragma once

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "meseta/error.h"
#include "meseta/flags.h"
#include "meseta/rpc.h"

/* Exit codes (docs/cli.md). */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_REFUSED = 1,     /* the server answered with an error */
  CLI_EXIT_USAGE = 2,       /* bad command line, or a local file / value that does not parse */
  CLI_EXIT_UNREACHABLE = 3, /* no answer: the master (or agent) cannot be reached or has no leader */
  CLI_EXIT_RUN_FAILED = 125 /* `run` only: meseta failed before the task could report an exit */
};

typedef struct cli {
  /* Global flags, after config file and defaults (all strings owned here). */
  char *master, *token, *tls_ca, *tls_cert, *tls_key, *output;
  int64_t timeout_ns;  /* per call */
  int64_t agent_port;  /* AgentOperator port when the agent does not advertise one */
  bool agent_port_set; /* given (flag, environment or config): it wins over the advertised one */
  ms_rpc_channel *ch;  /* to the master, made on first use */
  char *auth;          /* "Bearer <token>" or NULL */
  const char *md[3];   /* call metadata: authorization, NULL-terminated */
} cli;

/* ---- commands (one function per row of the table) ---- */
typedef int (*cli_cmd_fn)(cli *c, int argc, char **argv);

int cli_cmd_agents(cli *c, int argc, char **argv);
int cli_cmd_frameworks(cli *c, int argc, char **argv);
int cli_cmd_tasks(cli *c, int argc, char **argv);
int cli_cmd_roles(cli *c, int argc, char **argv);
int cli_cmd_offers(cli *c, int argc, char **argv);
int cli_cmd_operations(cli *c, int argc, char **argv);
int cli_cmd_state(cli *c, int argc, char **argv);
int cli_cmd_task_describe(cli *c, int argc, char **argv);
int cli_cmd_task_logs(cli *c, int argc, char **argv);
int cli_cmd_task_kill(cli *c, int argc, char **argv);
int cli_cmd_quota_get(cli *c, int argc, char **argv);
int cli_cmd_quota_set(cli *c, int argc, char **argv);
int cli_cmd_quota_remove(cli *c, int argc, char **argv);
int cli_cmd_weights_get(cli *c, int argc, char **argv);
int cli_cmd_weights_set(cli *c, int argc, char **argv);
int cli_cmd_reserve(cli *c, int argc, char **argv);
int cli_cmd_unreserve(cli *c, int argc, char **argv);
int cli_cmd_drain(cli *c, int argc, char **argv);
int cli_cmd_deactivate(cli *c, int argc, char **argv);
int cli_cmd_reactivate(cli *c, int argc, char **argv);
int cli_cmd_teardown(cli *c, int argc, char **argv);
int cli_cmd_maint_schedule(cli *c, int argc, char **argv);
int cli_cmd_maint_set(cli *c, int argc, char **argv);
int cli_cmd_maint_status(cli *c, int argc, char **argv);
int cli_cmd_maint_start(cli *c, int argc, char **argv);
int cli_cmd_maint_stop(cli *c, int argc, char **argv);
int cli_cmd_run(cli *c, int argc, char **argv);
int cli_cmd_up(cli *c, int argc, char **argv);
int cli_cmd_version(cli *c, int argc, char **argv);
int cli_cmd_completion(cli *c, int argc, char **argv);

/* ---- arguments (cli-common.c) ---- */

/* Parses a subcommand's flags, which may come before, between or after its positional
 * arguments (up to a `--`, after which everything is positional). On success returns
 * -1 and points *ret_pos / *ret_npos at the positional arguments (inside a vector the
 * parse owns until cli_args_free). Otherwise returns the exit code to end with: 0 after
 * --help, CLI_EXIT_USAGE after printing the error. `min`/`max` bound the positionals
 * (max < 0: no bound). `-o X` is read as `--output X`. Global flags among them are
 * applied to `c` (cli_apply_globals). The flags' environment twins are the command's:
 * MESETA_<COMMAND>_<FLAG> (spec->prog "meseta quota set", flag "cpus": MESETA_QUOTA_SET_CPUS). */
int cli_args(cli *c, const ms_flag_spec *spec, int argc, char **argv, int min, int max, char ***ret_pos,
             int *ret_npos);

/* The global flags (meseta.c): accepted before the command and, unless the command has
 * a flag of that name, anywhere among its flags. */
extern const ms_flag_spec cli_global_spec;
/* Applies global flags found among a command's (argv: the words, values included) as
 * if given before the command; -1 on success, else prints why and returns the exit code. */
int cli_apply_globals(cli *c, int argc, char **argv);

/* The `--output` / `-o` row every read command has (its target: cli_output_flag;
 * cli_args copies a value given into c->output). */
extern char *cli_output_flag;
#define CLI_OUTPUT_FLAG                                                                                      \
  {                                                                                                          \
    "output", MS_FLAG_STRING, &cli_output_flag, NULL, "Output format: table, json or yaml (also -o)",        \
        "FORMAT"                                                                                             \
  }
void cli_args_free(const ms_flag_spec *spec);
/* Whether -o names a format: table, json, yaml. */
bool cli_output_ok(const char *format);

/* Prints "meseta: <fmt>" on stderr and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- calls (cli-common.c) ---- */

/* The master channel (made on first use); NULL with *err if the address is bad. */
ms_rpc_channel *cli_master(cli *c, ms_error **err);
/* A unary call on `ch` (NULL: the master) to "/meseta.v1.<service>/<method>", with the
 * context's deadline (at most 10 s on an agent's channel) and token; it waits for the
 * connection (wait-for-ready) within that deadline. */
int cli_call(cli *c, ms_rpc_channel *ch, const char *service, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret_resp, ms_error **err);
/* Prints one line for a failed call, "meseta: <what>: <CODE>: <message>", consumes
 * err, and returns the exit code it means. */
int cli_fail(cli *c, const char *what, ms_error *err);

/* The AgentOperator channel of an agent (its advertised port, else --agent-port); the
 * caller frees it. *ret_addr (optional) gets the address (caller frees). */
ms_rpc_channel *cli_agent_channel(cli *c, const char *agent_id, char **ret_addr, ms_error **err);

/* Every page of a paginated Operator read: the answer's JSON with the repeated field
 * `items` holding the items of all pages (next_page_token dropped). `req` must have
 * page_token (field 3); it is changed and restored. */
int cli_list_all(cli *c, const char *method, ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const char *items, json_t **ret,
                 ms_error **err);

/* ---- values (cli-common.c) ---- */

/* A resource quantity from the command line: a number; for "mem" and "disk" also a
 * byte size with a unit ("512MiB", "2GiB"), converted to MiB. */
int cli_parse_quantity(const char *name, const char *text, double *ret, ms_error **err);

/* ---- why `run` waits (cli-why.c) ---- */

/* Reads agents and roles and prints one line on `out` saying why no offer of `role`
 * holds the k quantities names[i] = want[i] (no agent, too big, other roles' quota
 * guarantees, all in use). Thread-safe like cli_call. */
void cli_why_waiting(cli *c, const char *role, const char *const *names, const double *want, size_t k,
                     FILE *out);

/* ---- ports (cli-ports.c) ---- */

/* Whether TCP `port` is taken on this host (a listener on any address, or 127.0.0.1
 * not bindable); then `holder` gets "pid N (comm)" or what is known. */
bool cli_port_busy(int port, char *holder, size_t n);

/* ---- `meseta up`'s children (cli-up.c) ---- */

/* The hidden first argument by which `meseta up` starts each child through itself. */
#define CLI_UP_EXEC "__up-exec"
/* main() hands `meseta __up-exec PARENT_PID PROG ARGS...` here: it makes the process
 * get SIGTERM when `meseta up` dies (even by SIGKILL), then execs PROG. Returns only
 * on failure (the exit code). */
int cli_up_exec(int argc, char **argv);

/* ---- tasks and sandboxes (cli-logs.c) ---- */

/* The task `task_id` (of framework `framework_id` when not NULL), finished ones too; a
 * copy the caller frees. NOT_FOUND, or INVALID_ARGUMENT when several frameworks have
 * such a task and none was named. */
int cli_find_task(cli *c, const char *task_id, const char *framework_id, ProtobufCMessage **ret_task,
                  ms_error **err);
/* Copies a sandbox file from *offset to its current end into `out`, advancing *offset. */
int cli_read_sandbox(cli *c, ms_rpc_channel *agent, const char *framework_id, const char *task_id,
                     const char *path, int64_t *offset, FILE *out, ms_error **err);

/* ---- protobuf to JSON (cli-json.c) ---- */

/* The proto3 JSON form of a message, with the .proto field names: default values
 * left out, enums by name, 64-bit integers as strings, bytes in base64, maps as
 * objects, Timestamp / Duration / wrappers in their JSON forms. */
json_t *cli_json_from_message(const ProtobufCMessage *m);

/* ---- output (cli-output.c) ---- */

typedef enum cli_col_kind {
  CLI_COL_PATH,     /* a dotted path into the item: "agent_info.hostname" */
  CLI_COL_RESOURCE, /* the sum of the scalar resources named `arg` in the array at `path` */
  CLI_COL_COUNT,    /* the size of the array at `path` */
  CLI_COL_LAST,     /* the field `arg` of the last element of the array at `path` */
  CLI_COL_MAP,      /* the object at `path` as k=v,... (a {"value": x} shows as x) */
  CLI_COL_KEYS,     /* the keys of the object at `path`, but `arg`, comma-separated (a oneof's case) */
} cli_col_kind;

typedef struct cli_col {
  const char *header;
  cli_col_kind kind;
  const char *path;
  const char *arg;
} cli_col;

/* Prints `doc` as -o says: json or yaml (the whole document), or a table of the array
 * `items` of doc with the given columns (table is the default). Returns an exit code:
 * CLI_EXIT_USAGE for an unknown format. */
int cli_print(cli *c, json_t *doc, const char *items, const cli_col *cols, size_t ncols);
/* The value at a dotted path ("a.b.c"; NULL if absent), borrowed. */
json_t *cli_json_path(json_t *v, const char *path);
/* Writes the YAML form of a JSON value. */
void cli_yaml_write(FILE *out, json_t *v);
/* Prints a message in the -o format (table: YAML, one value per line). */
int cli_print_message(cli *c, const ProtobufCMessage *m);
