#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/flags.h"
#include "meseta/time.h"

#include "testlib.h"

/* The targets of one flag table, reset before each case. */
static struct {
  char *work_dir;
  char *name;
  int64_t port;
  bool verbose;
  bool color;
  double ratio;
  int64_t timeout;
  int64_t max_mem;
  ms_strv labels;
  char *etcd;
} t;

static const ms_flag table[] = {
    {"work-dir", MS_FLAG_STRING, &t.work_dir, "/var/lib/meseta", "Where sandboxes live", "DIR", false},
    {"name", MS_FLAG_STRING, &t.name, NULL, "Agent name", NULL, false},
    {"port", MS_FLAG_INT, &t.port, "5051", "Port to listen on", NULL, false},
    {"verbose", MS_FLAG_BOOL, &t.verbose, NULL, "Log more", NULL, false},
    {"color", MS_FLAG_BOOL, &t.color, "true", "Colour the output", NULL, false},
    {"ratio", MS_FLAG_DOUBLE, &t.ratio, "0.5", "Share of CPU to offer", NULL, false},
    {"timeout", MS_FLAG_DURATION, &t.timeout, "1m30s", "How long to wait for the master", NULL, false},
    {"max-mem", MS_FLAG_BYTES, &t.max_mem, "4MiB", "Largest message accepted", NULL, false},
    {"label", MS_FLAG_LIST, &t.labels, NULL, "Labels to advertise (repeatable, comma-separated)", "KEY=VALUE",
     false},
    {"etcd", MS_FLAG_STRING, &t.etcd, NULL, "etcd endpoint", "URL", false},
};

static const ms_flag_spec spec = {"meseta-agent", "Runs tasks on this machine.", table, MS_ARRAY_SIZE(table),
                                  "[COMMAND]"};

static const char *const env_names[] = {"MESETA_WORK_DIR", "MESETA_NAME",  "MESETA_PORT",    "MESETA_VERBOSE",
                                        "MESETA_COLOR",    "MESETA_RATIO", "MESETA_TIMEOUT", "MESETA_MAX_MEM",
                                        "MESETA_LABEL",    "MESETA_ETCD"};

static void reset(void) {
  for (size_t i = 0; i < MS_ARRAY_SIZE(env_names); i++)
    unsetenv(env_names[i]);
  memset(&t, 0, sizeof(t));
}

/* Parses a NULL-terminated argument list (program name first). */
#define ARGV(...) ((char *[]){"meseta-agent", __VA_ARGS__, NULL})
static int parse_args(char **argv, int *ret_next, ms_error **err) {
  int argc = 0;
  while (argv[argc])
    argc++;
  return ms_flags_parse(&spec, argc, argv, ret_next, err);
}

static void test_defaults(void) {
  reset();
  ms_error *err = NULL;
  int next = -1;
  char *argv[] = {"meseta-agent", NULL};
  MS_ASSERT_OK(ms_flags_parse(&spec, 1, argv, &next, &err), &err);
  CU_ASSERT_EQUAL(next, 1);
  CU_ASSERT_STRING_EQUAL(t.work_dir, "/var/lib/meseta");
  CU_ASSERT_PTR_NULL(t.name);
  CU_ASSERT_EQUAL(t.port, 5051);
  CU_ASSERT_FALSE(t.verbose);
  CU_ASSERT_TRUE(t.color);
  CU_ASSERT_DOUBLE_EQUAL(t.ratio, 0.5, 1e-12);
  CU_ASSERT_EQUAL(t.timeout, 90 * MS_NSEC_PER_SEC);
  CU_ASSERT_EQUAL(t.max_mem, 4 << 20);
  CU_ASSERT_EQUAL(t.labels.n, 0);
  ms_flags_free(&spec);
  CU_ASSERT_PTR_NULL(t.work_dir);
}

static void test_every_type_from_command_line(void) {
  reset();
  ms_error *err = NULL;
  int next = -1;
  char **argv = ARGV("--work-dir=/srv/w", "--name", "a1", "--port", "-1", "--verbose", "--no-color",
                     "--ratio=2.5e-1", "--timeout", "150ms", "--max-mem=1.5GiB", "--label", "zone=a,rack=7",
                     "--label=gpu", "run", "--port=9");
  MS_ASSERT_OK(parse_args(argv, &next, &err), &err);
  CU_ASSERT_STRING_EQUAL(t.work_dir, "/srv/w");
  CU_ASSERT_STRING_EQUAL(t.name, "a1");
  CU_ASSERT_EQUAL(t.port, -1);
  CU_ASSERT_TRUE(t.verbose);
  CU_ASSERT_FALSE(t.color);
  CU_ASSERT_DOUBLE_EQUAL(t.ratio, 0.25, 1e-12);
  CU_ASSERT_EQUAL(t.timeout, 150 * MS_NSEC_PER_MSEC);
  CU_ASSERT_EQUAL(t.max_mem, INT64_C(1610612736));
  CU_ASSERT_EQUAL_FATAL(t.labels.n, 3);
  CU_ASSERT_STRING_EQUAL(t.labels.v[0], "zone=a");
  CU_ASSERT_STRING_EQUAL(t.labels.v[1], "rack=7");
  CU_ASSERT_STRING_EQUAL(t.labels.v[2], "gpu");
  CU_ASSERT_PTR_NULL(t.labels.v[3]);
  /* Parsing stopped at the first argument: what follows is the program's. */
  CU_ASSERT_STRING_EQUAL(argv[next], "run");
  ms_flags_free(&spec);
  CU_ASSERT_PTR_NULL(t.labels.v);
  CU_ASSERT_PTR_NULL(t.name);
}

static void test_bool_forms(void) {
  static const struct {
    const char *arg;
    bool want;
  } cases[] = {
      {"--verbose", true},     {"--verbose=true", true}, {"--verbose=false", false}, {"--verbose=0", false},
      {"--verbose=YES", true}, {"--verbose=off", false}, {"--no-verbose", false},
  };
  for (size_t i = 0; i < MS_ARRAY_SIZE(cases); i++) {
    reset();
    t.verbose = !cases[i].want;
    ms_error *err = NULL;
    char *argv[] = {"p", (char *)cases[i].arg, NULL};
    MS_ASSERT_OK(ms_flags_parse(&spec, 2, argv, NULL, &err), &err);
    CU_ASSERT_EQUAL(t.verbose, cases[i].want);
    ms_flags_free(&spec);
  }
  /* Last one wins; `--verbose x` leaves x as an argument. */
  reset();
  ms_error *err = NULL;
  int next = 0;
  MS_ASSERT_OK(parse_args(ARGV("--verbose", "--no-verbose", "--verbose", "false"), &next, &err), &err);
  CU_ASSERT_TRUE(t.verbose);
  CU_ASSERT_EQUAL(next, 4);
  ms_flags_free(&spec);
}

static void test_end_of_flags(void) {
  reset();
  ms_error *err = NULL;
  int next = -1;
  char **argv = ARGV("--port", "80", "--", "--verbose", "x");
  MS_ASSERT_OK(parse_args(argv, &next, &err), &err);
  CU_ASSERT_EQUAL(t.port, 80);
  CU_ASSERT_FALSE(t.verbose);
  CU_ASSERT_EQUAL(next, 4);
  ms_flags_free(&spec);

  /* "-" alone is an argument (stdin), and `--` last leaves nothing. */
  reset();
  MS_ASSERT_OK(parse_args(ARGV("-", "--verbose"), &next, &err), &err);
  CU_ASSERT_EQUAL(next, 1);
  CU_ASSERT_FALSE(t.verbose);
  ms_flags_free(&spec);
  MS_ASSERT_OK(parse_args(ARGV("--verbose", "--"), &next, &err), &err);
  CU_ASSERT_EQUAL(next, 3);
  ms_flags_free(&spec);
}

static void test_precedence(void) {
  ms_error *err = NULL;
  /* Default only. */
  reset();
  MS_ASSERT_OK(parse_args(ARGV("--verbose"), NULL, &err), &err);
  CU_ASSERT_EQUAL(t.port, 5051);
  CU_ASSERT_STRING_EQUAL(t.work_dir, "/var/lib/meseta");
  ms_flags_free(&spec);

  /* Environment over default. */
  reset();
  setenv("MESETA_PORT", "6000", 1);
  setenv("MESETA_WORK_DIR", "/env/dir", 1);
  setenv("MESETA_LABEL", "a, b,,c", 1);
  setenv("MESETA_VERBOSE", "on", 1);
  setenv("MESETA_TIMEOUT", "2s", 1);
  setenv("MESETA_MAX_MEM", "1KB", 1);
  setenv("MESETA_RATIO", "1", 1);
  MS_ASSERT_OK(parse_args(ARGV("--name=x"), NULL, &err), &err);
  CU_ASSERT_EQUAL(t.port, 6000);
  CU_ASSERT_STRING_EQUAL(t.work_dir, "/env/dir");
  CU_ASSERT_TRUE(t.verbose);
  CU_ASSERT_EQUAL(t.timeout, 2 * MS_NSEC_PER_SEC);
  CU_ASSERT_EQUAL(t.max_mem, 1000);
  CU_ASSERT_DOUBLE_EQUAL(t.ratio, 1.0, 1e-12);
  CU_ASSERT_EQUAL_FATAL(t.labels.n, 3);
  CU_ASSERT_STRING_EQUAL(t.labels.v[0], "a");
  CU_ASSERT_STRING_EQUAL(t.labels.v[1], "b");
  CU_ASSERT_STRING_EQUAL(t.labels.v[2], "c");

  /* Command line over environment; parsing again frees what the first parse stored. */
  MS_ASSERT_OK(
      parse_args(ARGV("--port=7000", "--work-dir", "/cli", "--label", "z", "--no-verbose"), NULL, &err),
      &err);
  CU_ASSERT_EQUAL(t.port, 7000);
  CU_ASSERT_STRING_EQUAL(t.work_dir, "/cli");
  CU_ASSERT_FALSE(t.verbose);
  CU_ASSERT_EQUAL_FATAL(t.labels.n, 1);
  CU_ASSERT_STRING_EQUAL(t.labels.v[0], "z");
  ms_flags_free(&spec);

  /* An empty environment variable counts as unset. */
  reset();
  setenv("MESETA_PORT", "", 1);
  MS_ASSERT_OK(parse_args(ARGV("--verbose"), NULL, &err), &err);
  CU_ASSERT_EQUAL(t.port, 5051);
  ms_flags_free(&spec);
  reset();
}

static void test_program_values_are_not_freed(void) {
  reset();
  ms_error *err = NULL;
  /* A target the program set and no layer overrides stays as it is. */
  static char mine[] = "static";
  t.name = mine;
  MS_ASSERT_OK(parse_args(ARGV("--verbose"), NULL, &err), &err);
  CU_ASSERT_PTR_EQUAL(t.name, mine);
  /* A value the parser stored and the program then replaced is the program's. */
  static char other[] = "/elsewhere";
  char *stored = t.work_dir;
  t.work_dir = other;
  ms_flags_free(&spec);
  CU_ASSERT_PTR_EQUAL(t.work_dir, other);
  CU_ASSERT_PTR_EQUAL(t.name, mine);
  free(stored);         /* the program took it over, so the program frees it */
  ms_flags_free(&spec); /* twice is fine */
}

static void check_error(char **argv, const char *want) {
  ms_error *err = NULL;
  int next = 0;
  CU_ASSERT_EQUAL(parse_args(argv, &next, &err), MS_ERR);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  CU_ASSERT_EQUAL(err->code, MS_INVALID_ARGUMENT);
  if (strcmp(err->msg, want) != 0)
    fprintf(stderr, "\n  got  %s\n  want %s\n", err->msg, want);
  CU_ASSERT_STRING_EQUAL(err->msg, want);
  ms_error_free(err);
  ms_flags_free(&spec);
}

static void test_command_line_errors(void) {
  reset();
  check_error(ARGV("--port", "abc"), "flag `--port`: `abc` is not an integer");
  check_error(ARGV("--port= 1"), "flag `--port`: ` 1` is not an integer");
  check_error(ARGV("--port=99999999999999999999"),
              "flag `--port`: `99999999999999999999` is out of range for a 64-bit integer");
  check_error(ARGV("--port=1", "--port=x"), "flag `--port`: `x` is not an integer");
  check_error(ARGV("--ratio=nan"), "flag `--ratio`: `nan` is not a number");
  check_error(ARGV("--ratio=1e999"), "flag `--ratio`: `1e999` is out of range for a number");
  check_error(ARGV("--verbose=maybe"), "flag `--verbose`: `maybe` is not a boolean (use true or false)");
  check_error(ARGV("--timeout=5"),
              "flag `--timeout`: duration `5` needs a unit (ns, us, ms, s, m, h or d), e.g. `5s`");
  check_error(ARGV("--max-mem=4XB"),
              "flag `--max-mem`: size `4XB` has unknown unit `XB` (want B, KB, KiB, MB, MiB, "
              "GB, GiB, TB, TiB, PB, PiB, EB or EiB)");
  check_error(ARGV("--prot=1"), "unknown flag `--prot` (did you mean `--port`?)");
  check_error(ARGV("--wrok-dir", "x"), "unknown flag `--wrok-dir` (did you mean `--work-dir`?)");
  check_error(ARGV("--no-verbos"), "unknown flag `--no-verbos` (did you mean `--no-verbose`?)");
  check_error(ARGV("--hepl"), "unknown flag `--hepl` (did you mean `--help`?)");
  check_error(ARGV("-port", "1"), "unknown flag `-port` (did you mean `--port`?)");
  check_error(ARGV("--zzz"), "unknown flag `--zzz`");
  check_error(ARGV("-x"), "unknown flag `-x`");
  check_error(ARGV("--no-port"), "unknown flag `--no-port` (`--port` is not a boolean)");
  check_error(ARGV("--no-verbose=1"), "flag `--no-verbose` takes no value");
  check_error(ARGV("--port"), "flag `--port` needs a value");
  check_error(ARGV("--name", "--verbose"), "flag `--name` needs a value");
  /* The first error on the line is the one reported. */
  check_error(ARGV("--nope", "--port=x"), "unknown flag `--nope`");

  ms_error *err = NULL;
  CU_ASSERT_EQUAL(ms_flags_parse(&spec, 2, ARGV("extra"), NULL, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "unexpected argument `extra`");
  ms_error_free(err);
}

static void test_environment_and_default_errors(void) {
  reset();
  setenv("MESETA_PORT", "abc", 1);
  check_error(ARGV("--verbose"), "environment `MESETA_PORT` for flag `--port`: `abc` is not an integer");
  /* The command line overrides a bad environment value without looking at it. */
  ms_error *err = NULL;
  MS_ASSERT_OK(parse_args(ARGV("--port=1"), NULL, &err), &err);
  ms_flags_free(&spec);
  reset();
  setenv("MESETA_TIMEOUT", "-1s", 1);
  check_error(ARGV("--verbose"),
              "environment `MESETA_TIMEOUT` for flag `--timeout`: duration `-1s` is negative");
  reset();

  int64_t n = 0;
  const ms_flag bad[] = {{"count", MS_FLAG_INT, &n, "many", "How many", NULL, false}};
  const ms_flag_spec bad_spec = {"p", NULL, bad, 1, NULL};
  char *argv[] = {"p", NULL};
  CU_ASSERT_EQUAL(ms_flags_parse(&bad_spec, 1, argv, NULL, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "default for flag `--count`: `many` is not an integer");
  ms_error_free(err);
}

static void test_required(void) {
  reset();
  char *etcd = NULL;
  const ms_flag req[] = {{"etcd", MS_FLAG_STRING, &etcd, NULL, "etcd endpoint", "URL", true}};
  const ms_flag_spec req_spec = {"p", NULL, req, 1, NULL};
  ms_error *err = NULL;
  char *none[] = {"p", NULL};
  CU_ASSERT_EQUAL(ms_flags_parse(&req_spec, 1, none, NULL, &err), MS_ERR);
  CU_ASSERT_STRING_EQUAL(err->msg, "missing required flag `--etcd` (or set `MESETA_ETCD`)");
  ms_error_free(err);
  err = NULL;

  setenv("MESETA_ETCD", "http://e:2379", 1);
  MS_ASSERT_OK(ms_flags_parse(&req_spec, 1, none, NULL, &err), &err);
  CU_ASSERT_STRING_EQUAL(etcd, "http://e:2379");
  unsetenv("MESETA_ETCD");
  char *given[] = {"p", "--etcd=http://c:2379", NULL};
  MS_ASSERT_OK(ms_flags_parse(&req_spec, 2, given, NULL, &err), &err);
  CU_ASSERT_STRING_EQUAL(etcd, "http://c:2379");
  ms_flags_free(&req_spec);
  CU_ASSERT_PTR_NULL(etcd);
}

static char *capture_help(const ms_flag_spec *s) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  ms_flags_print_help(s, f);
  fclose(f);
  return text;
}

static void test_help_text(void) {
  _cleanup_free_ char *help = capture_help(&spec);
  static const char *const want[] = {
      "Usage: meseta-agent [OPTIONS] [COMMAND]\n\nRuns tasks on this machine.\n\nOptions:\n",
      /* Help text starts one column past the widest flag; the env annotation wraps
       * whole to the next line rather than past 100 columns. */
      ("      --work-dir <DIR>         Where sandboxes live [default: /var/lib/meseta]\n"
       "                               [env: MESETA_WORK_DIR]\n"),
      "      --name <STRING>          Agent name [env: MESETA_NAME]\n",
      "      --port <INT>             Port to listen on [default: 5051] [env: MESETA_PORT]\n",
      "      --[no-]verbose           Log more [env: MESETA_VERBOSE]\n",
      "      --[no-]color             Colour the output [default: true] [env: MESETA_COLOR]\n",
      "      --ratio <NUMBER>         ",
      "      --timeout <DURATION>     How long to wait for the master [default: 1m30s]\n",
      "      --max-mem <SIZE>         Largest message accepted [default: 4MiB] [env: MESETA_MAX_MEM]\n",
      "      --label <KEY=VALUE>...   Labels to advertise (repeatable, comma-separated) [env: "
      "MESETA_LABEL]\n",
      "      --etcd <URL>             etcd endpoint [env: MESETA_ETCD]\n",
      "  -h, --help                   Print this help and exit\n",
  };
  for (size_t i = 0; i < MS_ARRAY_SIZE(want); i++) {
    if (!strstr(help, want[i]))
      fprintf(stderr, "help lacks `%s`:\n%s", want[i], help);
    CU_ASSERT_PTR_NOT_NULL(strstr(help, want[i]));
  }
  /* Every line fits in 100 columns, and every flag is listed. */
  for (const char *line = help; *line;) {
    size_t len = strcspn(line, "\n");
    CU_ASSERT_TRUE(len <= 100);
    line += len + (line[len] == '\n');
  }
  for (size_t i = 0; i < MS_ARRAY_SIZE(table); i++) {
    _cleanup_free_ char *flag =
        ms_xasprintf("%s%s", table[i].type == MS_FLAG_BOOL ? "--[no-]" : "--", table[i].name);
    CU_ASSERT_PTR_NOT_NULL(strstr(help, flag));
  }

  /* Required flags show in the usage line and are marked. */
  char *etcd = NULL;
  const ms_flag req[] = {{"etcd", MS_FLAG_STRING, &etcd, NULL, "etcd endpoint", "URL", true}};
  const ms_flag_spec req_spec = {"meseta-master", NULL, req, 1, NULL};
  _cleanup_free_ char *req_help = capture_help(&req_spec);
  CU_ASSERT_PTR_NOT_NULL(strstr(req_help, "Usage: meseta-master [OPTIONS] --etcd <URL>\n\nOptions:\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(req_help, "etcd endpoint [env: MESETA_ETCD] (required)\n"));
}

static void test_help_wraps_long_text(void) {
  char *s = NULL;
  const ms_flag long_flags[] = {
      {"a-very-long-flag-name-indeed", MS_FLAG_STRING, &s, NULL, "Short", "SOMETHING-LONG", false},
      {"x", MS_FLAG_STRING, &s, "d",
       "This help is deliberately long enough that it cannot possibly fit on one line of the terminal so it "
       "wraps",
       NULL, false},
  };
  const ms_flag_spec ls = {"p", NULL, long_flags, 2, NULL};
  _cleanup_free_ char *help = capture_help(&ls);
  /* The long flag's help moves to the next line, at the common column. */
  CU_ASSERT_PTR_NOT_NULL(strstr(help, "      --a-very-long-flag-name-indeed <SOMETHING-LONG>\n"));
  for (const char *line = help; *line;) {
    size_t len = strcspn(line, "\n");
    CU_ASSERT_TRUE(len <= 100);
    line += len + (line[len] == '\n');
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(help, "[default: d] [env: MESETA_X]"));
}

static void test_help_flag_returns_one(void) {
  reset();
  /* --help prints to stdout: send that to /dev/null for the test's own output. */
  fflush(stdout);
  int saved = dup(1);
  FILE *null = fopen("/dev/null", "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(null);
  dup2(fileno(null), 1);
  ms_error *err = NULL;
  int r1 = parse_args(ARGV("--help"), NULL, &err);
  int r2 = parse_args(ARGV("--port", "80", "-h"), NULL, &err);
  int r3 = parse_args(ARGV("--bogus", "-h"), NULL, &err); /* help wins over errors */
  int r4 = parse_args(ARGV("--", "-h"), NULL, &err);      /* but not after `--` */
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  fclose(null);
  CU_ASSERT_EQUAL(r1, 1);
  CU_ASSERT_EQUAL(r2, 1);
  CU_ASSERT_EQUAL(r3, 1);
  CU_ASSERT_EQUAL(r4, MS_ERR);
  CU_ASSERT_PTR_NOT_NULL(err);
  ms_error_free(err);
  ms_flags_free(&spec);
}

static void check_bytes(const char *s, int64_t want) {
  ms_error *err = NULL;
  int64_t got = -1;
  int rc = ms_bytes_parse(s, &got, &err);
  if (rc < 0)
    fprintf(stderr, "bytes `%s`: %s\n", s, err->msg);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(got, want);
  ms_error_free(err);
}

static void check_bytes_error(const char *s, const char *want) {
  ms_error *err = NULL;
  int64_t got = 7;
  CU_ASSERT_EQUAL(ms_bytes_parse(s, &got, &err), MS_ERR);
  CU_ASSERT_EQUAL(got, 7);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  if (strcmp(err->msg, want) != 0)
    fprintf(stderr, "\n  got  %s\n  want %s\n", err->msg, want);
  CU_ASSERT_STRING_EQUAL(err->msg, want);
  ms_error_free(err);
}

static void test_bytes(void) {
  check_bytes("100", 100);
  check_bytes("0", 0);
  check_bytes("100B", 100);
  check_bytes("512KiB", 512 * 1024);
  check_bytes("512Ki", 512 * 1024);
  check_bytes("4MiB", 4 << 20);
  check_bytes("4mib", 4 << 20);
  check_bytes("1GB", 1000000000);
  check_bytes("1G", 1000000000);
  check_bytes("2k", 2000);
  check_bytes("1.5KiB", 1536);
  check_bytes("0.5B", 0);
  check_bytes("1TiB", INT64_C(1) << 40);
  check_bytes("7EiB", INT64_C(7) << 60);
  check_bytes("9223372036854775807", INT64_MAX);
  check_bytes_error("", "empty size");
  check_bytes_error("-1", "size `-1` is negative");
  check_bytes_error("MiB", "`MiB` is not a size (e.g. `512KiB`, `4MiB`, `1GB`, `100`)");
  check_bytes_error("4 MiB",
                    "size `4 MiB` has unknown unit ` MiB` (want B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, "
                    "PiB, EB or EiB)");
  check_bytes_error("4MiBs",
                    "size `4MiBs` has unknown unit `MiBs` (want B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, "
                    "PB, PiB, EB or EiB)");
  check_bytes_error("8EiB", "size `8EiB` is out of range (at most 9223372036854775807 bytes)");
  check_bytes_error("9223372036854775808", "size `9223372036854775808` is out of range (at most "
                                           "9223372036854775807 bytes)");
}

static void test_strv_and_env_name(void) {
  ms_strv sv = {0};
  ms_strv_push(&sv, "a");
  ms_strv_push(&sv, "b");
  CU_ASSERT_EQUAL(sv.n, 2);
  CU_ASSERT_STRING_EQUAL(sv.v[1], "b");
  CU_ASSERT_PTR_NULL(sv.v[2]);
  ms_strv_release(&sv);
  CU_ASSERT_PTR_NULL(sv.v);
  CU_ASSERT_EQUAL(sv.n, 0);
  ms_strv_release(&sv);
  _cleanup_free_ char *env = ms_flag_env_name("work-dir");
  CU_ASSERT_STRING_EQUAL(env, "MESETA_WORK_DIR");
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"defaults", test_defaults},
      {"every_type_from_command_line", test_every_type_from_command_line},
      {"bool_forms", test_bool_forms},
      {"end_of_flags", test_end_of_flags},
      {"precedence", test_precedence},
      {"program_values_are_not_freed", test_program_values_are_not_freed},
      {"command_line_errors", test_command_line_errors},
      {"environment_and_default_errors", test_environment_and_default_errors},
      {"required", test_required},
      {"help_text", test_help_text},
      {"help_wraps_long_text", test_help_wraps_long_text},
      {"help_flag_returns_one", test_help_flag_returns_one},
      {"bytes", test_bytes},
      {"strv_and_env_name", test_strv_and_env_name},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "flags", cases);
}
