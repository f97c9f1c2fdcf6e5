/* meseta-runtime's core: one container, built and supervised by one single-threaded process.
 *
 * The agent writes a container spec (JSON, see docs/runtime.md) and posix_spawns
 * `meseta-runtime SPEC`. The runtime validates the spec and the seccomp profile, creates the
 * container's cgroups, clones a tiny init into new pid / mount / ipc / uts / cgroup (and
 * optionally net) namespaces, which builds the container's filesystem and forks the task; the
 * task sets its limits, user and seccomp filter and execs. The runtime waits, writes a status
 * file, removes the cgroups and exits with a code that maps the result (rt_exit_code).
 *
 * Ownership: an rt_spec owns every string and array in it; rt_spec_free() releases them.
 * rt_result's message is owned by the result (rt_result_release). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "meseta/error.h"

#define RT_UNLIMITED (-1)
#define RT_MAX_ARGS 4096
#define RT_MAX_RLIMITS 16

typedef struct rt_rlimit {
  int resource; /* RLIMIT_* */
  uint64_t soft, hard;
} rt_rlimit;

typedef struct rt_spec {
  char *id;       /* [A-Za-z0-9_.-], at most 128 bytes */
  char *rootfs;   /* NULL: the host's /usr, /etc (read-only) in a fresh root */
  char *sandbox;  /* host directory, bind-mounted read-write at /mnt/sandbox */
  char **argv;    /* NULL-terminated; argv[0] looked up in the task's PATH */
  char **env;     /* NULL-terminated "K=V" */
  char *cwd;      /* inside the container; default /mnt/sandbox */
  char *hostname; /* default: id */
  bool has_user;  /* false: run as the runtime's user (root) */
  uid_t uid;
  gid_t gid;
  double cpu_request;  /* cpus; 0 = not given */
  double cpu_limit;    /* cpus; RT_UNLIMITED = no quota */
  int64_t mem_request; /* bytes; 0 = not given */
  int64_t mem_limit;   /* bytes; RT_UNLIMITED = no limit */
  int64_t pids_limit;  /* 0 = no limit */
  bool oom_score_set;
  int oom_score_adj;     /* default: 0 if guaranteed, 500 if allowed to burst */
  char *seccomp_profile; /* NULL: the default profile; "unconfined": none */
  bool new_net;          /* true: a new, empty network namespace */
  char *cgroup_parent;   /* default "meseta" */
  int64_t kill_grace_ms; /* SIGTERM → SIGKILL, default 5000 */
  char *status_file;     /* NULL: status only on stdout */
  rt_rlimit rlimits[RT_MAX_RLIMITS];
  size_t n_rlimits;
} rt_spec;

/* Parses the spec file at `path`. *ret_spec is the caller's (rt_spec_free). */
int rt_spec_load(const char *path, rt_spec **ret_spec, ms_error **err);
/* Same from a JSON text (used by tests and fuzzers). */
int rt_spec_parse(const char *json, size_t len, rt_spec **ret_spec, ms_error **err);
void rt_spec_free(rt_spec *s);
/* True when the memory or cpu limit leaves room above the request (Mesos 1.10 bursting). */
bool rt_spec_burstable(const rt_spec *s);

/* ---- cgroups (runtime-cgroup.c) ---- */

typedef struct rt_cgroup rt_cgroup;

/* True when /sys/fs/cgroup is a cgroup2 filesystem (unified hierarchy). */
bool rt_cgroup_is_v2(void);
/* Creates the container's cgroups under `parent` (cpu, cpuacct, memory, pids on v1; one
 * directory on v2) and writes the spec's limits. Fails with ALREADY_EXISTS if the
 * container's cgroup exists. On failure nothing is left behind. *ret_cg is the caller's. */
int rt_cgroup_create(const rt_spec *s, rt_cgroup **ret_cg, ms_error **err);
/* Moves `pid` into every cgroup of the container. */
int rt_cgroup_attach(rt_cgroup *cg, pid_t pid, ms_error **err);
/* The number of OOM kills in the container's memory cgroup so far. */
int64_t rt_cgroup_oom_kills(rt_cgroup *cg);
/* Kills what is left, removes the directories and frees cg (NULL is fine). */
int rt_cgroup_destroy(rt_cgroup *cg, ms_error **err);
/* The directory of `controller` ("memory", "cpu"...; ignored on v2). Belongs to cg. */
const char *rt_cgroup_path(const rt_cgroup *cg, const char *controller);

/* ---- seccomp (runtime-seccomp.c) ---- */

typedef struct rt_seccomp rt_seccomp;

/* Loads profile `name` (NULL → `default_name`) from `dir` (Docker's seccomp JSON format)
 * and builds the filter. "unconfined" gives *ret = NULL and success. *ret is the caller's. */
int rt_seccomp_load(const char *dir, const char *name, const char *default_name, rt_seccomp **ret,
                    ms_error **err);
/* Builds a filter from a profile's JSON text; `what` names it in errors. */
int rt_seccomp_parse(const char *json, size_t len, const char *what, rt_seccomp **ret, ms_error **err);
/* Installs the filter in the calling process (sets no_new_privs). */
int rt_seccomp_apply(rt_seccomp *sc, ms_error **err);
void rt_seccomp_free(rt_seccomp *sc);

/* ---- the container (runtime-container.c) ---- */

typedef enum rt_state {
  RT_EXITED, /* the task exited by itself (see exit_code / signal) */
  RT_KILLED, /* killed on request (SIGTERM to the runtime) */
  RT_OOM,    /* killed by the kernel over its memory limit */
  RT_FAILED, /* never started: bad spec, profile, cgroup, mount or exec */
} rt_state;

typedef struct rt_result {
  rt_state state;
  int exit_code;   /* when it exited */
  int signal;      /* when a signal ended it, else 0 */
  int start_errno; /* RT_FAILED: the errno behind the failure (ENOENT for a missing command) */
  char *message;   /* one line, owned */
  int64_t pid;     /* the task's host pid, 0 if it never started */
} rt_result;

typedef struct rt_options {
  const char *seccomp_dir;
  const char *seccomp_default;
  const char *root_mountpoint; /* an empty directory; default /run/meseta/root */
} rt_options;

/* Builds, runs and supervises the container to its end; the result is in *ret (always
 * filled, also on failure). Cgroups are removed before it returns. Blocks SIGTERM, SIGINT
 * and SIGCHLD in the calling (single-threaded) process. */
void rt_container_run(const rt_spec *s, const rt_options *o, rt_result *ret);
void rt_result_release(rt_result *r);
/* The result as one line of JSON, caller frees. */
char *rt_result_json(const rt_spec *s, const rt_result *r);
/* Writes it atomically to s->status_file (if set). */
int rt_result_write(const rt_spec *s, const rt_result *r, ms_error **err);
/* 0 exited 0, 1 exited non-zero or by a signal, 2 memory limitation, 3 killed on request,
 * 125 runtime error, 126 command not executable, 127 command not found. */
int rt_exit_code(const rt_result *r);
const char *rt_state_name(rt_state st);
