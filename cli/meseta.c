/* meseta: the command-line client of a meseta cluster (docs/cli.md).
 *
 *   meseta [global flags] NOUN [VERB] [flags] [args]
 *
 * The global flags say where the master is and how to authenticate; each command is a
 * row of the table below. Exit codes: 0 ok, 1 the server refused, 2 usage, 3 the master
 * cannot be reached; `run` exits with its task's code. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/version.h"

#include "cli.h"

typedef struct command {
  const char *noun;
  const char *verb; /* NULL: the noun alone */
  bool dflt;        /* the verb that runs when the noun comes alone */
  cli_cmd_fn fn;
  const char *summary;
} command;

static const command commands[] = {
    {"agents", NULL, false, cli_cmd_agents, "List agents"},
    {"frameworks", NULL, false, cli_cmd_frameworks, "List frameworks"},
    {"tasks", NULL, false, cli_cmd_tasks, "List tasks (finished ones too unless --active)"},
    {"roles", NULL, false, cli_cmd_roles, "List roles with their weight, quota and use"},
    {"offers", NULL, false, cli_cmd_offers, "List outstanding offers"},
    {"operations", NULL, false, cli_cmd_operations, "List resource operations"},
    {"state", NULL, false, cli_cmd_state, "Print the whole cluster state (json or yaml)"},
    {"up", NULL, false, cli_cmd_up, "Start a local cluster in the foreground (Ctrl-C stops it)"},
    {"run", NULL, false, cli_cmd_run, "Run a command as a task, print its output, exit with its code"},
    {"task", "describe", false, cli_cmd_task_describe, "Print everything known about a task"},
    {"task", "logs", false, cli_cmd_task_logs, "Print a task's stdout (or stderr) from its sandbox"},
    {"task", "kill", false, cli_cmd_task_kill, "Kill a task"},
    {"quota", "get", true, cli_cmd_quota_get, "Show quota (of one role, or all)"},
    {"quota", "set", false, cli_cmd_quota_set, "Set a role's quota guarantees and limits"},
    {"quota", "remove", false, cli_cmd_quota_remove, "Remove a role's quota"},
    {"weights", "get", true, cli_cmd_weights_get, "Show role weights"},
    {"weights", "set", false, cli_cmd_weights_set, "Set role weights: ROLE=WEIGHT..."},
    {"reserve", NULL, false, cli_cmd_reserve, "Reserve an agent's resources for a role"},
    {"unreserve", NULL, false, cli_cmd_unreserve, "Undo a reservation of an agent's resources"},
    {"drain", NULL, false, cli_cmd_drain, "Drain an agent: no offers, its tasks killed"},
    {"deactivate", NULL, false, cli_cmd_deactivate,
     "Stop offering an agent's resources (tasks keep running)"},
    {"reactivate", NULL, false, cli_cmd_reactivate, "Offer a deactivated, draining or drained agent again"},
    {"teardown", NULL, false, cli_cmd_teardown, "Remove a framework (its tasks are killed)"},
    {"maintenance", "schedule", true, cli_cmd_maint_schedule, "Show the maintenance schedule"},
    {"maintenance", "set", false, cli_cmd_maint_set,
     "Replace the schedule with one window for some machines"},
    {"maintenance", "status", false, cli_cmd_maint_status, "Show machines draining and down"},
    {"maintenance", "start", false, cli_cmd_maint_start, "Take machines down (HOSTNAME...)"},
    {"maintenance", "stop", false, cli_cmd_maint_stop, "Bring machines back up (HOSTNAME...)"},
    {"completion", NULL, false, cli_cmd_completion, "Print a shell completion script: bash or zsh"},
    {"version", NULL, false, cli_cmd_version, "Print meseta's version (also --version)"},
};

static char *f_master, *f_token, *f_tls_ca, *f_tls_cert, *f_tls_key, *f_config, *f_output;
static int64_t f_timeout, f_agent_port = -1;

static const ms_flag flags[] = {
    {"master", MS_FLAG_STRING, &f_master, NULL, "Master address, host:port [default: 127.0.0.1:5050]",
     "ADDR"},
    {"token", MS_FLAG_STRING, &f_token, NULL, "Bearer token sent as `authorization: Bearer TOKEN`", "TOKEN"},
    {"tls-ca", MS_FLAG_STRING, &f_tls_ca, NULL, "CA to verify the master with (enables TLS)", "FILE"},
    {"tls-cert", MS_FLAG_STRING, &f_tls_cert, NULL, "Client certificate (mutual TLS)", "FILE"},
    {"tls-key", MS_FLAG_STRING, &f_tls_key, NULL, "Client key (mutual TLS)", "FILE"},
    {"config", MS_FLAG_STRING, &f_config, NULL, "Config file [default: ~/.config/meseta/config.json]",
     "FILE"},
    {"output", MS_FLAG_STRING, &f_output, NULL,
     "Output format: table, json or yaml (also -o) [default: table]", "FORMAT"},
    {"call-timeout", MS_FLAG_DURATION, &f_timeout, "30s", "Deadline of each call to the master"},
    {"agent-port", MS_FLAG_INT, &f_agent_port, NULL,
     "AgentOperator port of agents (given: it wins over the port they advertise) [default: advertised, "
     "else 5051]",
     "PORT"},
};
const ms_flag_spec cli_global_spec = {"meseta", "Operate a meseta cluster.", flags, MS_ARRAY_SIZE(flags),
                                      "<COMMAND> [ARGS]..."};

static void print_commands(FILE *out) {
  fputs("\nCommands:\n", out);
  for (size_t i = 0; i < MS_ARRAY_SIZE(commands); i++) {
    const command *k = &commands[i];
    char name[64];
    snprintf(name, sizeof(name), "%s%s%s", k->noun, k->verb ? " " : "", k->verb ? k->verb : "");
    fprintf(out, "  %-22s %s%s\n", name, k->summary, k->dflt ? " (the default)" : "");
  }
  fputs("\n`meseta COMMAND --help` shows a command's flags. Exit codes: 0 ok, 1 the server refused,\n"
        "2 usage, 3 the master cannot be reached; `run` exits with its task's code.\n",
        out);
}

/* Fills what neither flags nor environment gave from the config file (a JSON object:
 * master, token, tls_ca, tls_cert, tls_key, output, agent_port). */
static int load_config(cli *c, ms_error **err) {
  const char *path = f_config;
  _cleanup_free_ char *dflt = NULL;
  if (!path) {
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
      dflt = ms_xasprintf("%s/meseta/config.json", xdg);
    else if (home && *home)
      dflt = ms_xasprintf("%s/.config/meseta/config.json", home);
    if (!dflt || access(dflt, F_OK) != 0)
      return 0; /* no config file: fine */
    path = dflt;
  }
  json_error_t je;
  json_t *o = json_load_file(path, 0, &je);
  if (!o)
    return je.line > 0
               ? ms_error_set(err, MS_INVALID_ARGUMENT, "config `%s`: %s (line %d)", path, je.text, je.line)
               : ms_error_set(err, MS_INVALID_ARGUMENT, "config `%s`: %s", path, je.text);
  int rc = 0;
  const char *key;
  json_t *v;
  struct {
    const char *key;
    char **dst;
  } strs[] = {{"master", &c->master},     {"token", &c->token},     {"tls_ca", &c->tls_ca},
              {"tls_cert", &c->tls_cert}, {"tls_key", &c->tls_key}, {"output", &c->output}};
  if (!json_is_object(o))
    rc = ms_error_set(err, MS_INVALID_ARGUMENT, "config `%s`: not a JSON object", path);
  json_object_foreach(json_is_object(o) ? o : NULL, key, v) {
    if (rc < 0)
      break;
    if (strcmp(key, "agent_port") == 0) {
      if (!json_is_integer(v))
        rc = ms_error_set(err, MS_INVALID_ARGUMENT, "config `%s`: `agent_port` is not an integer", path);
      else if (c->agent_port < 0)
        c->agent_port = json_integer_value(v);
      continue;
    }
    size_t i = 0;
    while (i < MS_ARRAY_SIZE(strs) && strcmp(strs[i].key, key) != 0)
      i++;
    if (i == MS_ARRAY_SIZE(strs))
      rc = ms_error_set(err, MS_INVALID_ARGUMENT,
                        "config `%s`: unknown key `%s` (known: master, token, tls_ca, tls_cert, tls_key, "
                        "output, agent_port)",
                        path, key);
    else if (!json_is_string(v))
      rc = ms_error_set(err, MS_INVALID_ARGUMENT, "config `%s`: `%s` is not a string", path, key);
    else if (!*strs[i].dst)
      *strs[i].dst = ms_xstrdup(json_string_value(v));
  }
  json_decref(o);
  return rc;
}

static char *dup_or_null(const char *s) {
  return s ? ms_xstrdup(s) : NULL;
}

static void cli_release(cli *c) {
  ms_rpc_channel_free(c->ch);
  free(c->master);
  free(c->token);
  free(c->tls_ca);
  free(c->tls_cert);
  free(c->tls_key);
  free(c->output);
  free(c->auth);
  *c = (cli){0};
}

static int dispatch(cli *c, int argc, char **argv) {
  const char *noun = argv[0];
  if (strcmp(noun, "help") == 0) {
    ms_flags_print_help(&cli_global_spec, stdout);
    print_commands(stdout);
    return CLI_EXIT_OK;
  }
  const command *dflt = NULL;
  bool known = false;
  for (size_t i = 0; i < MS_ARRAY_SIZE(commands); i++) {
    const command *k = &commands[i];
    if (strcmp(k->noun, noun) != 0)
      continue;
    known = true;
    if (!k->verb)
      return k->fn(c, argc, argv);
    if (argc > 1 && strcmp(argv[1], k->verb) == 0)
      return k->fn(c, argc - 1, argv + 1);
    if (k->dflt)
      dflt = k;
  }
  if (!known)
    return cli_usage_error("unknown command `%s` (see `meseta --help`)", noun);
  bool help = argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
  if (dflt && !help && (argc == 1 || argv[1][0] == '-'))
    return dflt->fn(c, argc, argv);
  FILE *out = help ? stdout : stderr;
  if (!help)
    fprintf(stderr, argc > 1 ? "meseta: %s: unknown verb `%s`\n" : "meseta: %s: a verb is needed\n", noun,
            argc > 1 ? argv[1] : "");
  fprintf(out, "Usage: meseta %s VERB [FLAGS] [ARGS]...\n\nVerbs:\n", noun);
  for (size_t i = 0; i < MS_ARRAY_SIZE(commands); i++)
    if (strcmp(commands[i].noun, noun) == 0)
      fprintf(out, "  %-10s %s%s\n", commands[i].verb, commands[i].summary,
              commands[i].dflt ? " (the default)" : "");
  return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

/* The global flags as given before the command (argv[0..n)), for cli_apply_globals. */
static char **front;
static int n_front;

/* Parses argv as global flags into f_*, then fills `c` from them, the environment, the
 * config file and the defaults. -1 on success, else the exit code (after saying why). */
static int setup(cli *c, int argc, char **argv, int *ret_next) {
  ms_error *err = NULL;
  int r = ms_flags_parse(&cli_global_spec, argc, argv, ret_next, &err);
  if (r == 1) {
    print_commands(stdout);
    return CLI_EXIT_OK;
  }
  if (r < 0) {
    cli_usage_error("%s", err->msg);
    ms_error_free(err);
    return CLI_EXIT_USAGE;
  }
  *c = (cli){.master = dup_or_null(f_master),
             .token = dup_or_null(f_token),
             .tls_ca = dup_or_null(f_tls_ca),
             .tls_cert = dup_or_null(f_tls_cert),
             .tls_key = dup_or_null(f_tls_key),
             .output = dup_or_null(f_output),
             .timeout_ns = f_timeout,
             .agent_port = f_agent_port};
  if (load_config(c, &err) < 0) {
    cli_usage_error("%s", err->msg);
    ms_error_free(err);
    return CLI_EXIT_USAGE;
  }
  if (!c->master)
    c->master = ms_xstrdup("127.0.0.1:5050");
  if (!c->output)
    c->output = ms_xstrdup("table");
  if (!cli_output_ok(c->output))
    return cli_usage_error("flag `--output`: `%s` is not one of table, json, yaml", c->output);
  c->agent_port_set = c->agent_port >= 0;
  if (c->agent_port < 0)
    c->agent_port = 5051;
  if (c->agent_port == 0 || c->agent_port > 65535)
    return cli_usage_error("flag `--agent-port`: %lld is not a port", (long long)c->agent_port);
  if ((c->tls_cert != NULL) != (c->tls_key != NULL) || ((c->tls_cert || c->tls_key) && !c->tls_ca))
    return cli_usage_error("TLS: `--tls-cert` and `--tls-key` go together, and need `--tls-ca`");
  if (c->token && *c->token) {
    c->auth = ms_xasprintf("Bearer %s", c->token);
    c->md[0] = "authorization";
    c->md[1] = c->auth;
  }
  return -1;
}

int cli_apply_globals(cli *c, int argc, char **argv) {
  /* Parsed again as if they stood before the command (the last of a flag given twice wins);
   * no call has been made yet, so the context is simply made again. */
  _cleanup_free_ char **v = ms_xcalloc((size_t)(n_front + argc) + 1, sizeof(char *));
  int n = 0;
  for (int i = 0; i < n_front; i++)
    v[n++] = front[i];
  for (int i = 0; i < argc; i++)
    v[n++] = argv[i];
  int next = 0;
  cli_release(c);
  int rc = setup(c, n, v, &next);
  if (rc == -1 && next < n)
    return cli_usage_error("`%s` is not a global flag", v[next]);
  return rc;
}

/* ---- shell completion, generated from the command table and the global flags ---- */

/* Nouns, and each noun's verbs, from `commands`; a command's own flags come from its
 * --help when completing (so they never go stale). */
static void print_bash_completion(FILE *out) {
  fputs("# bash completion for meseta: source <(meseta completion bash)\n"
        "_meseta() {\n"
        "  local cur=${COMP_WORDS[COMP_CWORD]} noun= verb= i w skip=0\n"
        "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
        "    w=${COMP_WORDS[i]}\n"
        "    if ((skip)); then skip=0; continue; fi\n"
        "    case $w in\n"
        "    --*=*) ;;\n",
        out);
  fputs("    -o", out);
  for (size_t i = 0; i < cli_global_spec.n_flags; i++)
    if (cli_global_spec.flags[i].type != MS_FLAG_BOOL)
      fprintf(out, " | --%s", cli_global_spec.flags[i].name);
  fputs(") skip=1 ;;\n"
        "    -*) ;;\n"
        "    *) if [[ -z $noun ]]; then noun=$w; elif [[ -z $verb ]]; then verb=$w; fi ;;\n"
        "    esac\n"
        "  done\n"
        "  if [[ $cur == -* ]]; then\n"
        "    local own\n"
        "    [[ -n $noun ]] && own=$(meseta $noun $verb --help 2>/dev/null | grep -o -- '--[a-z][a-z0-9-]*' "
        "| sort -u)\n"
        "    COMPREPLY=($(compgen -W \"--help --version",
        out);
  for (size_t i = 0; i < cli_global_spec.n_flags; i++)
    fprintf(out, " --%s", cli_global_spec.flags[i].name);
  fputs(" $own\" -- \"$cur\"))\n"
        "    return\n"
        "  fi\n"
        "  if [[ -z $noun ]]; then\n"
        "    COMPREPLY=($(compgen -W \"help",
        out);
  for (size_t i = 0; i < MS_ARRAY_SIZE(commands); i++)
    if (i == 0 || strcmp(commands[i - 1].noun, commands[i].noun) != 0)
      fprintf(out, " %s", commands[i].noun);
  fputs("\" -- \"$cur\"))\n"
        "    return\n"
        "  fi\n"
        "  [[ -n $verb ]] && return\n"
        "  case $noun in\n"
        "  completion) COMPREPLY=($(compgen -W \"bash zsh\" -- \"$cur\")) ;;\n",
        out);
  for (size_t i = 0; i < MS_ARRAY_SIZE(commands); i++) {
    if (!commands[i].verb || (i > 0 && strcmp(commands[i - 1].noun, commands[i].noun) == 0))
      continue;
    fprintf(out, "  %s) COMPREPLY=($(compgen -W \"", commands[i].noun);
    for (size_t j = i; j < MS_ARRAY_SIZE(commands) && strcmp(commands[j].noun, commands[i].noun) == 0; j++)
      fprintf(out, "%s%s", j > i ? " " : "", commands[j].verb);
    fputs("\" -- \"$cur\")) ;;\n", out);
  }
  fputs("  esac\n"
        "}\n"
        "complete -F _meseta meseta\n",
        out);
}

int cli_cmd_completion(cli *c, int argc, char **argv) {
  (void)c;
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    puts("Usage: meseta completion bash|zsh\n\n"
         "Prints a completion script: `source <(meseta completion bash)` in ~/.bashrc, or\n"
         "`source <(meseta completion zsh)` in ~/.zshrc.");
    return CLI_EXIT_OK;
  }
  if (argc != 2 || (strcmp(argv[1], "bash") != 0 && strcmp(argv[1], "zsh") != 0))
    return cli_usage_error("completion: expects `bash` or `zsh` (see `meseta completion --help`)");
  if (strcmp(argv[1], "zsh") == 0) /* zsh runs bash completion functions through bashcompinit */
    fputs("# zsh completion for meseta: source <(meseta completion zsh)\n"
          "autoload -U +X compinit && compinit\n"
          "autoload -U +X bashcompinit && bashcompinit\n",
          stdout);
  print_bash_completion(stdout);
  return CLI_EXIT_OK;
}

int cli_cmd_version(cli *c, int argc, char **argv) {
  (void)c;
  (void)argc;
  (void)argv;
  printf("meseta %s\n", ms_version());
  return CLI_EXIT_OK;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], CLI_UP_EXEC) == 0)
    return cli_up_exec(argc - 1, argv + 1);
  for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) /* kubectl's -o; commands see it too */
    if (strcmp(argv[i], "-o") == 0)
      argv[i] = (char *)"--output";
  for (int i = 1; i < argc && argv[i][0] == '-'; i++)
    if (strcmp(argv[i], "--version") == 0)
      return cli_cmd_version(NULL, 0, NULL);
  cli c = {0};
  int next = 0;
  int rc = setup(&c, argc, argv, &next);
  if (rc == -1 && next >= argc) {
    fprintf(stderr, "Usage: meseta [FLAGS] <COMMAND> [ARGS]...\n");
    print_commands(stderr);
    rc = CLI_EXIT_USAGE;
  }
  if (rc == -1) {
    front = argv;
    n_front = next;
    rc = dispatch(&c, argc - next, argv + next);
  }
  cli_release(&c);
  ms_flags_free(&cli_global_spec);
  return rc;
}
