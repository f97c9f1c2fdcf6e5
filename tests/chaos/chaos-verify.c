/* The three views of a batch compared, and what /proc and the logs say. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/rpc.h"
#include "meseta/task-state.h"
#include "meseta/time.h"
#include "meseta/v1/operator.pb-c.h"

#include "chaos.h"
#include "sim.h"

#define VIEW_WAIT_MS 20000
#define MAX_PRINTED 12 /* problems printed one per line; the rest are counted */

typedef struct entry {
  char *id, *agent;
  int state; /* GetTasks only */
  int where; /* ledger: the agent whose work dir holds it */
} entry;

typedef struct entries {
  entry *e;
  size_t n, cap;
} entries;

static void add(entries *l, const char *id, const char *agent, int state, int where) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 128;
    l->e = ms_xrealloc(l->e, l->cap * sizeof(*l->e));
  }
  l->e[l->n++] = (entry){ms_xstrdup(id), ms_xstrdup(agent), state, where};
}

static void entries_free(entries *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->e[i].id);
    free(l->e[i].agent);
  }
  free(l->e);
  *l = (entries){0};
}

/* Every line of every `ledger` in the framework's sandboxes on every agent. */
static void read_ledger(chaos_cluster *c, const char *fid, entries *l) {
  for (int a = 0; a < CHAOS_AGENTS; a++) {
    _cleanup_free_ char *root = ms_xasprintf("%s/sandboxes/%s", c->work_dir[a], fid);
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (e->d_name[0] == '.')
        continue;
      _cleanup_free_ char *path = ms_xasprintf("%s/%s/ledger", root, e->d_name);
      _cleanup_fclose_ FILE *f = fopen(path, "re");
      char line[512], id[256], agent[256];
      while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "%255s %255s", id, agent) == 2)
          add(l, id, agent, 0, a);
    }
    if (d)
      closedir(d);
  }
}

static bool read_get_tasks(const char *mapi, const char *fid, entries *l) {
  ms_rpc_channel *ch = ms_rpc_channel_new(mapi, NULL, NULL);
  if (!ch)
    return false;
  Meseta__V1__FrameworkID id = MESETA__V1__FRAMEWORK_ID__INIT;
  id.value = (char *)fid;
  _cleanup_free_ char *token = ms_xstrdup("");
  bool ok = true;
  do {
    Meseta__V1__GetTasksRequest req = MESETA__V1__GET_TASKS_REQUEST__INIT;
    req.framework_id = &id;
    req.include_completed = true;
    req.page_size = 500;
    req.page_token = token;
    ProtobufCMessage *out = NULL;
    ms_rpc_call_options co = {.timeout_ms = 10000};
    ms_error *err = NULL;
    if (ms_rpc_unary(ch, "/meseta.v1.Operator/GetTasks", &req.base,
                     &meseta__v1__get_tasks_response__descriptor, &co, &out, &err) < 0) {
      fprintf(stderr, "chaos: GetTasks on %s: %s\n", mapi, err->msg);
      ms_error_free(err);
      ok = false;
      break;
    }
    Meseta__V1__GetTasksResponse *r = (void *)out;
    for (size_t i = 0; i < r->n_tasks; i++) {
      const Meseta__V1__Task *t = r->tasks[i];
      add(l, t->task_id ? t->task_id->value : "", t->agent_id ? t->agent_id->value : "", t->state, -1);
    }
    free(token);
    token = ms_xstrdup(r->next_page_token ? r->next_page_token : "");
    protobuf_c_message_free_unpacked(out, NULL);
  } while (*token);
  ms_rpc_channel_free(ch);
  return ok;
}

/* The logical task of an attempt id "<name>-<i>.<k>"; -1 if it is not one. */
static int task_of(const char *id) {
  const char *dash = strrchr(id, '-');
  if (!dash)
    return -1;
  char *end;
  long i = strtol(dash + 1, &end, 10);
  return end != dash + 1 && *end == '.' ? (int)i : -1;
}

static const chaos_attempt *attempt_of(const chaos_attempt *a, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(a[i].id, id) == 0)
      return &a[i];
  return NULL;
}

static size_t count_id(const entries *l, const char *id, int state) {
  size_t n = 0;
  for (size_t i = 0; i < l->n; i++)
    n += strcmp(l->e[i].id, id) == 0 && (state < 0 || l->e[i].state == state);
  return n;
}

#define PROBLEM(...)                                                                                         \
  do {                                                                                                       \
    if (problems++ < MAX_PRINTED)                                                                            \
      fprintf(stderr, "  chaos: " __VA_ARGS__);                                                              \
  } while (0)

typedef struct gt_wait {
  const char *mapi, *fid;
  int want;
} gt_wait;

static bool get_tasks_caught_up(void *ctx) {
  gt_wait *w = ctx;
  entries l = {0};
  bool ok = read_get_tasks(w->mapi, w->fid, &l);
  int fin = 0;
  for (size_t i = 0; i < l.n; i++)
    fin += l.e[i].state == MESETA__V1__TASK_STATE__TASK_FINISHED;
  entries_free(&l);
  if (ok && fin >= w->want)
    return true;
  ms_time_sleep_ms(250);
  return false;
}

static bool batch_done(void *ctx) {
  chaos_fw *f = ctx;
  return chaos_fw_done(f) == chaos_fw_tasks(f);
}

void chaos_verify(chaos_cluster *c, chaos_fw *f, int mapi, int64_t deadline_ms) {
  int64_t timeout_ms = deadline_ms - ms_time_mono_ms();
  bool done = ms_sim_wait(batch_done, f, timeout_ms > 0 ? timeout_ms : 0);
  chaos_fw_print(f);
  size_t na;
  int tasks;
  chaos_attempt *a = chaos_fw_attempts(f, &na, &tasks);
  if (!done) {
    fprintf(stderr, "  chaos: the batch did not end in time; open attempts:\n");
    int shown = 0;
    for (size_t j = 0; j < na; j++)
      if (!a[j].terminal_state && !a[j].unknown && shown++ < MAX_PRINTED)
        fprintf(stderr, "  chaos:   %s on %s: accept %s, last update %s, last reconciliation answer %s\n",
                a[j].id, a[j].agent_id, a[j].accept_ok ? "OK" : "failed",
                a[j].last_state ? ms_task_state_name(a[j].last_state) : "none",
                a[j].reconcile[0] ? a[j].reconcile : "none");
  }
  CU_ASSERT(done);

  const char *fid = chaos_fw_id(f);
  gt_wait w = {c->mapi[mapi].addr, fid, chaos_fw_finished(f)};
  bool caught_up = ms_sim_wait(get_tasks_caught_up, &w, VIEW_WAIT_MS);
  entries ledger = {0}, gt = {0};
  read_ledger(c, fid, &ledger);
  bool gt_ok = read_get_tasks(c->mapi[mapi].addr, fid, &gt);
  CU_ASSERT(gt_ok);
  if (!caught_up)
    fprintf(stderr, "  chaos: GetTasks on %s did not list the %d finished tasks within %d s\n",
            c->mapi[mapi].name, w.want, VIEW_WAIT_MS / 1000);

  int problems = 0, never = 0, twice = 0, fw_bad = 0, gt_bad = 0, dup = 0, false_report = 0, strays = 0;
  for (int i = 0; i < tasks; i++) {
    int runs = 0, fw_fin = 0, gt_fin = 0;
    const char *ran = NULL, *fin = NULL;
    for (size_t j = 0; j < ledger.n; j++)
      if (task_of(ledger.e[j].id) == i) {
        runs++;
        ran = ledger.e[j].id;
      }
    for (size_t j = 0; j < na; j++)
      if (a[j].task == i && a[j].terminal_state == MESETA__V1__TASK_STATE__TASK_FINISHED) {
        fw_fin++;
        fin = a[j].id;
      }
    for (size_t j = 0; j < gt.n; j++)
      gt_fin += task_of(gt.e[j].id) == i && gt.e[j].state == MESETA__V1__TASK_STATE__TASK_FINISHED;
    if (runs == 0) {
      never++;
      PROBLEM("task %d never ran (no ledger line)\n", i);
    } else if (runs > 1) {
      twice++;
      PROBLEM("task %d ran %d times (ledger), the last as %s\n", i, runs, ran);
    }
    if (fw_fin != 1) {
      fw_bad++;
      PROBLEM("task %d: the framework got FINISHED for %d attempts\n", i, fw_fin);
    } else if (runs == 1 && strcmp(fin, ran) != 0) {
      fw_bad++;
      PROBLEM("task %d: the framework got FINISHED for %s but the ledger ran %s\n", i, fin, ran);
    }
    if (gt_fin != 1) {
      gt_bad++;
      PROBLEM("task %d: GetTasks lists %d FINISHED attempts\n", i, gt_fin);
    }
  }
  for (size_t j = 0; j < na; j++) {
    const chaos_attempt *t = &a[j];
    bool ran = count_id(&ledger, t->id, -1) > 0;
    if (t->terminal_count > 1) {
      dup++;
      PROBLEM("%s: %d different terminal updates\n", t->id, t->terminal_count);
    }
    if (ran &&
        ((t->terminal_state && t->terminal_state != MESETA__V1__TASK_STATE__TASK_FINISHED) || t->unknown)) {
      false_report++;
      PROBLEM("%s ran (ledger) but the framework was told %s%s%s\n", t->id,
              t->unknown ? "TASK_UNKNOWN" : ms_task_state_name(t->terminal_state),
              t->reconcile[0] ? "; last reconciliation answer " : "", t->reconcile);
    }
    size_t listed = count_id(&gt, t->id, -1);
    if (listed > 1) {
      dup++;
      PROBLEM("%s is listed %zu times by GetTasks\n", t->id, listed);
    }
  }
  for (size_t j = 0; j < gt.n; j++) {
    const entry *e = &gt.e[j];
    const chaos_attempt *t = attempt_of(a, na, e->id);
    bool ran = count_id(&ledger, e->id, -1) > 0;
    if (!t) {
      strays++;
      PROBLEM("GetTasks lists %s, which the framework never launched\n", e->id);
    } else if (e->state != MESETA__V1__TASK_STATE__TASK_FINISHED && ran) {
      gt_bad++;
      PROBLEM("GetTasks lists %s as %s, but it ran (ledger)\n", e->id, ms_task_state_name(e->state));
    } else if (e->state != MESETA__V1__TASK_STATE__TASK_FINISHED) {
      printf("  (GetTasks lists %s, which never ran, as %s)\n", e->id, ms_task_state_name(e->state));
    }
  }
  for (size_t j = 0; j < ledger.n; j++) {
    const entry *e = &ledger.e[j];
    if (!attempt_of(a, na, e->id)) {
      strays++;
      PROBLEM("the ledger has %s, which the framework never launched\n", e->id);
    } else if (strcmp(e->agent, c->agent_id[e->where]) != 0) {
      strays++;
      PROBLEM("%s ran in agent-%d's work dir but says agent %s\n", e->id, e->where, e->agent);
    }
  }
  if (problems > MAX_PRINTED)
    fprintf(stderr, "  chaos: ... and %d more problems\n", problems - MAX_PRINTED);
  printf(
      "  views: ledger %zu runs for %d tasks (%d never ran, %d ran twice); framework %d finished "
      "(%d wrong, %d duplicated, %d told lost/unknown but ran); GetTasks %zu entries (%d wrong); %d strays\n",
      ledger.n, tasks, never, twice, chaos_fw_finished(f), fw_bad, dup, false_report, gt.n, gt_bad, strays);
  CU_ASSERT_EQUAL(never, 0);
  CU_ASSERT_EQUAL(twice, 0);
  CU_ASSERT_EQUAL(fw_bad, 0);
  CU_ASSERT_EQUAL(gt_bad, 0);
  CU_ASSERT_EQUAL(dup, 0);
  CU_ASSERT_EQUAL(false_report, 0);
  CU_ASSERT_EQUAL(strays, 0);
  entries_free(&ledger);
  entries_free(&gt);
  chaos_attempts_free(a, na);
}

long chaos_rss_kib(pid_t pid) {
  if (pid <= 0)
    return -1;
  _cleanup_free_ char *path = ms_xasprintf("/proc/%d/status", (int)pid);
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  return kib;
}

int chaos_threads(pid_t pid) {
  if (pid <= 0)
    return -1;
  _cleanup_free_ char *path = ms_xasprintf("/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

bool chaos_log_has_report(const char *log) {
  _cleanup_fclose_ FILE *f = fopen(log, "re");
  char line[1024];
  while (f && fgets(line, sizeof(line), f))
    if (strstr(line, "ERROR: AddressSanitizer") || strstr(line, "ERROR: LeakSanitizer") ||
        strstr(line, "runtime error:") || strstr(line, "double free or corruption")) {
      fprintf(stderr, "  chaos: %s: %s", log, line);
      return true;
    }
  return false;
}
