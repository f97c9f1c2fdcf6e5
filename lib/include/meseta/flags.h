/* Command-line flags with environment twins and a generated --help.
 *
 * A program declares its flags as one table, a row per flag (git's commands[] habit):
 *
 *   static char *work_dir;
 *   static int64_t port;
 *   static ms_strv labels;
 *   static const ms_flag flags[] = {
 *       {"work-dir", MS_FLAG_STRING, &work_dir, "/var/lib/meseta", "Where sandboxes live", "DIR"},
 *       {"port", MS_FLAG_INT, &port, "5051", "Port to listen on"},
 *       {"label", MS_FLAG_LIST, &labels, NULL, "Labels to advertise"},
 *   };
 *   static const ms_flag_spec spec = {"meseta-agent", "Runs tasks on this machine.", flags,
 *                                     MS_ARRAY_SIZE(flags)};
 *   int r = ms_flags_parse(&spec, argc, argv, NULL, &err);   // r == 1: help shown, exit 0
 *   ...
 *   ms_flags_free(&spec);
 *
 * Every flag `--work-dir` has an environment twin MESETA_WORK_DIR. A value comes from the
 * command line, else the environment, else `def`; a target no layer sets keeps whatever
 * the program put there. An empty environment variable counts as unset.
 *
 * Command line: `--name=value`, `--name value` (a following word that starts with "--"
 * is not taken as the value), `--bool`, `--no-bool`, `--bool=false`. `--` ends the
 * flags; so does the first argument that does not start with '-' ("-" alone counts as
 * an argument). A scalar flag given twice keeps the last value; a list flag collects
 * every occurrence, and each value may hold several comma-separated items.
 * `-h`/`--help` anywhere among the flags prints help to stdout and wins over errors.
 *
 * Ownership: strings and lists the parser stores into targets belong to the parser,
 * which remembers what it stored; ms_flags_free() frees exactly those and leaves other
 * targets alone. Point MS_FLAG_STRING targets at NULL or at memory the program does not
 * free, and start MS_FLAG_LIST targets zeroed. Parsing twice replaces (and frees) what
 * the first parse stored. The spec and its strings are only borrowed. Parsing is meant
 * for main(), before threads start (it reads the environment). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "meseta/error.h"

/* An owned string vector: `v` is NULL or holds n strings followed by NULL. */
typedef struct ms_strv {
  char **v;
  size_t n;
} ms_strv;

/* Appends a copy of s. */
void ms_strv_push(ms_strv *sv, const char *s);
/* Frees the strings and the array; sv is empty ({NULL, 0}) afterwards. */
void ms_strv_release(ms_strv *sv);

typedef enum ms_flag_type {
  MS_FLAG_STRING,   /* char **: a copy of the text */
  MS_FLAG_INT,      /* int64_t *: decimal */
  MS_FLAG_BOOL,     /* bool *: true/false, yes/no, on/off, 1/0 */
  MS_FLAG_DOUBLE,   /* double *: finite */
  MS_FLAG_DURATION, /* int64_t * nanoseconds: "1.5s", "1h30m" (ms_duration_parse) */
  MS_FLAG_BYTES,    /* int64_t * bytes: "4MiB", "512KiB", "1GB", "100" (ms_bytes_parse) */
  MS_FLAG_LIST,     /* ms_strv *: repeatable and comma-separated */
} ms_flag_type;

typedef struct ms_flag {
  const char *name; /* kebab-case without dashes: "work-dir" */
  ms_flag_type type;
  void *ptr;           /* the target; its C type per ms_flag_type above */
  const char *def;     /* default as text, parsed like user input; NULL = unset */
  const char *help;    /* one line, capitalised, no final period (like clap) */
  const char *metavar; /* shown in --help, e.g. "DIR"; NULL = derived from type */
  bool required;       /* some layer (command line, environment or def) must give a value */
} ms_flag;

typedef struct ms_flag_spec {
  const char *prog;     /* "meseta-agent" */
  const char *summary;  /* one line under the usage line; NULL = none */
  const ms_flag *flags; /* n_flags rows (no terminator) */
  size_t n_flags;
  const char *args; /* usage words after the flags, e.g. "<COMMAND> [ARGS]..."; NULL = none */
  /* Environment twins are <env_prefix><FLAG>; NULL = "MESETA_". A command of a program
   * with subcommands uses its own ("MESETA_RUN_"), so one command's twin is not read by
   * another's flag of the same name. */
  const char *env_prefix;
} ms_flag_spec;

/* Parses argv[1..argc) against spec, then the environment and defaults, into the targets.
 * Returns 0 with the index of the first argument after the flags in *ret_next_arg (argc
 * if none). If ret_next_arg is NULL the program takes no arguments, and one is an error.
 * Returns 1 after printing help to stdout for -h/--help (the caller exits 0).
 * Returns MS_ERR with MS_INVALID_ARGUMENT and a message naming the flag and where the
 * value came from: "flag `--port`: `abc` is not an integer", "environment `MESETA_PORT`
 * for flag `--port`: ...", "unknown flag `--prot` (did you mean `--port`?)", "missing
 * required flag `--etcd` (or set `MESETA_ETCD`)", "flag `--x` needs a value". On failure some
 * targets may already be set; ms_flags_free() still frees them. */
int ms_flags_parse(const ms_flag_spec *spec, int argc, char **argv, int *ret_next_arg, ms_error **err);

/* Frees every string and list the parser stored into spec's targets (and still finds
 * there) and resets those targets to NULL / empty. Safe to call more than once. */
void ms_flags_free(const ms_flag_spec *spec);

/* Writes the usage line, summary and one aligned entry per flag: metavar, help,
 * [default: ...], [env: MESETA_...], (required). */
void ms_flags_print_help(const ms_flag_spec *spec, FILE *out);

/* The environment twin of a flag name: "work-dir" -> "MESETA_WORK_DIR". Caller frees. */
char *ms_flag_env_name(const char *name);
/* The same under spec's env_prefix (spaces and dashes become '_', letters upper case). */
char *ms_flag_env_name_in(const ms_flag_spec *spec, const char *name);

/* Parses a byte size: a number with an optional fraction and an optional unit, no
 * spaces. Units, case-insensitive: B; K/KB, M/MB, G/GB, T/TB, P/PB, E/EB (powers of
 * 1000); Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB, Pi/PiB, Ei/EiB (powers of 1024). A fraction
 * of a byte is dropped. Refuses negatives and values past INT64_MAX. */
int ms_bytes_parse(const char *s, int64_t *ret_bytes, ms_error **err);
