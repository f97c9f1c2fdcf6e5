/* The chaos scenarios of issue 12, one CTest each (`ctest -L chaos`; tests/chaos/README.md).
 *
 * Each starts a whole cluster of real processes (chaos.h), runs a batch of real tasks
 * through the framework of chaos-framework.c, hurts the cluster while the batch runs,
 * and then compares the ledger the tasks wrote, the framework's view and GetTasks:
 * every task FINISHED exactly once, none lost, none duplicated, none run twice. Every
 * service must still run (except those killed on purpose), exit 0 on SIGTERM and have
 * no sanitizer report in its log. Recovery times are printed, never asserted.
 *
 *   test-chaos <scenario>    one scenario (the CTest chaos-<scenario> runs this)
 *
 * Root only (containers); logs stay in the printed directory when a scenario fails,
 * or always with MESETA_KEEP_TEST_DIR=1. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/time.h"

#include "batch-run.h"
#include "chaos.h"
#include "cluster.h"
#include "sim.h"
#include "testlib.h"

#define TASKS 60
#define MAX_RUNNING 9
#define TASK_SLEEP "1"
#define FAULT_AFTER 12          /* tasks finished before the fault: it lands mid-batch */
#define PROGRESS_WAIT_MS 120000 /* hang guard for the batch to get going */
#define RECOVERY_WAIT_MS 75000  /* hang guard for each recovery step */
#define BATCH_WAIT_MS 90000     /* hang guard for the batch to end, from the fault */

static char *dir;
static chaos_cluster cl;
static bool up;
static int64_t fault_ms; /* when the scenario's fault began (ms_time_mono_ms) */
static chaos_fw *fws[2]; /* running batches, freed by main if a fatal assertion left them */

static void cluster_up(void) {
  chaos_cluster_start(&cl, dir);
  up = true;
}

static void cluster_down(void) {
  if (up)
    chaos_cluster_stop(&cl, true);
  up = false;
}

/* The framework on master-api-0, failing over to master-api-1. */
static chaos_fw *batch_start_paused(const char *name, int tasks, bool paused) {
  const char *targets[] = {cl.mapi[0].addr, cl.mapi[1].addr};
  chaos_fw_options o = {
      .tasks = tasks, .max_running = MAX_RUNNING, .sleep = TASK_SLEEP, .name = name, .paused = paused};
  chaos_fw *f = chaos_fw_start(targets, 2, &o);
  fws[fws[0] ? 1 : 0] = f;
  return f;
}

static chaos_fw *batch_start(const char *name, int tasks) {
  return batch_start_paused(name, tasks, false);
}

typedef struct progress {
  chaos_fw *f;
  int n;
} progress;

static bool finished_n(void *ctx) {
  progress *p = ctx;
  return chaos_fw_finished(p->f) >= p->n || chaos_fw_done(p->f) == chaos_fw_tasks(p->f);
}

/* Waits until n tasks finished: the fault then lands mid-batch. */
static void wait_finished(chaos_fw *f, int n) {
  progress p = {f, n};
  bool ok = ms_sim_wait(finished_n, &p, PROGRESS_WAIT_MS) && chaos_fw_finished(f) >= n;
  if (!ok) {
    fprintf(stderr, "  chaos: the batch did not reach %d finished tasks before the fault\n", n);
    chaos_fw_print(f);
  }
  CU_ASSERT_FATAL(ok);
}

/* What a recovery looks like from outside, each time from t0 (a step not seen within
 * RECOVERY_WAIT_MS is printed as such; the batch check that follows says what broke). */
typedef struct recovery {
  int old_leader;    /* -1: no leader change expected */
  char *old_id;      /* the leader's MasterInfo.id before the fault (old_leader >= 0) */
  int64_t rejoin_ms; /* an agent restart: when it had registered again (from t0) */
  int new_leader;
  int64_t leader_ms, agents_ms, launch_ms, finish_ms;
} recovery;

/* Before the fault: what a leader change will be told from. */
static void before_fault(recovery *r, int old_leader) {
  *r = (recovery){.old_leader = old_leader, .rejoin_ms = -1};
  if (old_leader >= 0)
    r->old_id = chaos_master_id(&cl, 1);
}

/* Agents are back when the framework's master-api lists all three ACTIVE under a new
 * leader's id (after a leader change: they registered with it), or once the restarted
 * agent registered again (its ready file). */
static bool agents_back(chaos_fw *f, recovery *r) {
  int mapi = chaos_fw_target(f);
  if (r->old_leader >= 0) {
    _cleanup_free_ char *id = chaos_master_id(&cl, mapi);
    if (!id || (r->old_id && strcmp(id, r->old_id) == 0))
      return false;
  }
  return chaos_active_agents(&cl, mapi) == CHAOS_AGENTS;
}

static void watch_recovery(chaos_fw *f, int64_t t0, recovery *r) {
  r->new_leader = -1;
  r->leader_ms = r->agents_ms = r->launch_ms = r->finish_ms = -1;
  int64_t end = t0 + RECOVERY_WAIT_MS;
  while (ms_time_mono_ms() < end) {
    int64_t now = ms_time_mono_ms();
    if (r->old_leader >= 0 && r->leader_ms < 0) {
      int l = chaos_leader(&cl);
      if (l >= 0 && l != r->old_leader) {
        r->new_leader = l;
        r->leader_ms = now - t0;
      }
    }
    if (r->agents_ms < 0 && (r->old_leader < 0 || r->leader_ms >= 0) && agents_back(f, r))
      r->agents_ms = r->rejoin_ms >= 0 ? r->rejoin_ms : ms_time_mono_ms() - t0;
    int64_t l = chaos_fw_first_launch_after(f, t0), fin = chaos_fw_first_finish_after(f, t0);
    if (r->launch_ms < 0 && l > 0)
      r->launch_ms = l - t0;
    if (r->finish_ms < 0 && fin > 0)
      r->finish_ms = fin - t0;
    bool all = (r->old_leader < 0 || r->leader_ms >= 0) && r->agents_ms >= 0 && r->launch_ms >= 0 &&
               r->finish_ms >= 0;
    if (all || chaos_fw_done(f) == chaos_fw_tasks(f))
      break;
    ms_time_sleep_ms(100);
  }
  free(r->old_id);
  r->old_id = NULL;
}

static void print_ms(const char *what, int64_t ms) {
  if (ms >= 0)
    printf(" %s %.2f s;", what, (double)ms / 1000);
  else
    printf(" %s not within %d s;", what, RECOVERY_WAIT_MS / 1000);
}

static void print_recovery(const char *scenario, const recovery *r) {
  printf("  recovery (%s):", scenario);
  if (r->old_leader >= 0)
    print_ms("new leader", r->leader_ms);
  print_ms("all agents active", r->agents_ms);
  print_ms("first launch", r->launch_ms);
  print_ms("first task finished", r->finish_ms);
  printf("\n");
}

/* The framework's tasks keep running on the remaining replica; the batch ends, and
 * the views agree (read from the replica the framework ended on). */
static void finish(chaos_fw *f) {
  chaos_verify(&cl, f, chaos_fw_target(f), fault_ms + BATCH_WAIT_MS);
  for (int i = 0; i < 2; i++)
    if (fws[i] == f)
      fws[i] = NULL;
  chaos_fw_free(f);
}

/* ---- the scenarios ---- */

static void test_kill_leader(void) {
  cluster_up();
  chaos_fw *f = batch_start("kill-leader", TASKS);
  wait_finished(f, FAULT_AFTER);
  recovery r;
  before_fault(&r, 0);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_kill(&cl.alloc[0]);
  watch_recovery(f, t0, &r);
  print_recovery("kill -9 of the leading allocator", &r);
  finish(f);
  cluster_down();
}

static void test_kill_mapi(void) {
  cluster_up();
  chaos_fw *f = batch_start("kill-mapi", TASKS);
  wait_finished(f, FAULT_AFTER);
  recovery r;
  before_fault(&r, -1);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_kill(&cl.mapi[0]); /* the framework's replica */
  watch_recovery(f, t0, &r);
  print_recovery("kill -9 of the framework's master-api", &r);
  CU_ASSERT_EQUAL(chaos_fw_target(f), 1);
  finish(f);
  cluster_down();
}

typedef struct busy_agent {
  chaos_fw *f;
  int agent;
} busy_agent;

static bool some_agent_busy(void *ctx) {
  busy_agent *b = ctx;
  for (int i = CHAOS_AGENTS - 1; i >= 0; i--)
    if (chaos_fw_running_on(b->f, cl.agent_id[i]) > 0) {
      b->agent = i;
      return true;
    }
  return false;
}

static void test_kill_agent(void) {
  cluster_up();
  chaos_fw *f = batch_start("kill-agent", TASKS);
  wait_finished(f, FAULT_AFTER);
  busy_agent b = {f, -1};
  CU_ASSERT_FATAL(ms_sim_wait(some_agent_busy, &b, PROGRESS_WAIT_MS));
  int running = chaos_fw_running_on(f, cl.agent_id[b.agent]);
  recovery r;
  before_fault(&r, -1);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_kill(&cl.agent[b.agent]);
  printf("\n  killed agent-%d with %d task(s) running; restarting it in 2 s\n", b.agent, running);
  ms_time_sleep_ms(2000);            /* its tasks go on (or end) without it */
  chaos_agent_restart(&cl, b.agent); /* returns once it registered again (its ready file) */
  r.rejoin_ms = ms_time_mono_ms() - t0;
  watch_recovery(f, t0, &r);
  print_recovery("kill -9 and restart of an agent", &r);
  finish(f);
  cluster_down();
}

static void test_kill_registry(void) {
  cluster_up();
  chaos_fw *f = batch_start("kill-registry", TASKS);
  wait_finished(f, FAULT_AFTER);
  recovery r;
  before_fault(&r, -1);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_kill(&cl.reg[0]); /* the replica gRPC's pick_first prefers */
  watch_recovery(f, t0, &r);
  print_recovery("kill -9 of a registry replica", &r);
  /* A new framework needs the registry (its record is durable). */
  chaos_fw *g = batch_start("kill-registry-late", 5);
  finish(f);
  finish(g);
  cluster_down();
}

static void test_etcd_restart(void) {
  cluster_up();
  chaos_fw *f = batch_start("etcd-restart", TASKS);
  wait_finished(f, FAULT_AFTER);
  ms_error *err = NULL;
  fault_ms = ms_time_mono_ms();
  MS_ASSERT_OK(ms_test_etcd_stop(cl.etcd, &err), &err);
  printf("\n  etcd stopped for 5 s\n");
  ms_time_sleep_ms(5000);
  MS_ASSERT_OK(ms_test_etcd_restart(cl.etcd, &err), &err);
  int64_t t0 = ms_time_mono_ms();
  int leader = chaos_wait_leader(&cl, -1, RECOVERY_WAIT_MS);
  printf("  a leader %.2f s after etcd is back: allocator-%d\n", (double)(ms_time_mono_ms() - t0) / 1000,
         leader);
  CU_ASSERT(leader >= 0);
  recovery r;
  before_fault(&r, -1);
  watch_recovery(f, t0, &r);
  print_recovery("etcd stopped and restarted", &r);
  finish(f);
  cluster_down();
}

/* SIGSTOP of the leader for `secs`: a new leader takes over meanwhile; the old one,
 * woken, must not lead again (fenced) and must still run (a standby). */
static void freeze_leader(int secs) {
  cluster_up();
  _cleanup_free_ char *name = ms_xasprintf("stop-leader-%d", secs);
  chaos_fw *f = batch_start(name, TASKS);
  wait_finished(f, FAULT_AFTER);
  recovery r;
  before_fault(&r, 0);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_freeze(&cl.alloc[0]);
  watch_recovery(f, t0, &r);
  _cleanup_free_ char *what = ms_xasprintf("SIGSTOP of the leading allocator for %d s", secs);
  print_recovery(what, &r);
  int64_t left = t0 + secs * 1000 - ms_time_mono_ms();
  if (left > 0)
    ms_time_sleep_ms(left);
  chaos_thaw(&cl.alloc[0]);
  int64_t woke = ms_time_mono_ms();
  /* Woken, it must not say it leads (a Service would route to it), and must stay up. */
  int serving = 0, polls = 0;
  while (ms_time_mono_ms() - woke < 10000) {
    serving += chaos_alive(chaos_pid(&cl.alloc[0])) && ms_test_health(cl.alloc[0].addr) == 1;
    polls++;
    ms_time_sleep_ms(100);
  }
  int leader = chaos_wait_leader(&cl, -1, 30000); /* one leader, not a passing moment without */
  bool alive = chaos_alive(chaos_pid(&cl.alloc[0]));
  printf("  after SIGCONT: the old leader said SERVING in %d of %d polls over 10 s; leader now allocator-%d; "
         "old leader %s\n",
         serving, polls, leader, alive ? "running" : "exited");
  if (leader != r.new_leader || leader < 0)
    fprintf(stderr, "  chaos: after SIGCONT the leader is %d, not the new leader %d\n", leader, r.new_leader);
  CU_ASSERT(r.new_leader >= 0 && leader == r.new_leader);
  if (!alive)
    fprintf(stderr, "  chaos: the old leader exited instead of returning to standby; see %s/%s.log\n", dir,
            cl.alloc[0].name);
  CU_ASSERT(alive);
  finish(f);
  cluster_down();
}

static void test_stop_leader_20s(void) {
  freeze_leader(20);
}

static void test_stop_leader_60s(void) {
  freeze_leader(60);
}

/* The lead lost again and again, as a leader starved of CPU loses it (seen: six lease
 * losses in two minutes, then a framework offered nothing for 11 minutes). Whichever
 * allocator leads is frozen for 1.5 to 3.5 s (the lease is 2 s), FLAPS times, so that
 * sometimes the other takes over, sometimes the same one leads again, and sometimes the
 * lease survives. In turn: the leader frozen; the leader and the standby frozen, the
 * standby thawed last (the leader that lost its lease leads again); etcd frozen (the
 * leader runs on, unable to renew). The batch must still end, every task once. */
#define FLAPS 9
#define FLAP_TASKS 160
#define BATCH_TASKS 400

static void test_lease_flaps(void) {
  cluster_up();
  chaos_fw *f = batch_start("lease-flaps", FLAP_TASKS);
  wait_finished(f, FAULT_AFTER);
  /* The example framework too, on its own: its stream moves to each new leader unseen. */
  _cleanup_free_ char *masters = ms_xasprintf("%s,%s", cl.mapi[0].addr, cl.mapi[1].addr);
  _cleanup_free_ char *blog = ms_xasprintf("%s/meseta-batch.log", dir);
  const char *extra[] = {"--name", "flaps-batch", NULL};
  ms_error *err = NULL;
  pid_t batch = ms_test_batch_spawn(masters, BATCH_TASKS, 0.1, 32, extra, blog, &err);
  MS_ASSERT_OK(batch > 0 ? 0 : MS_ERR, &err);
  fault_ms = ms_time_mono_ms();
  unsigned seed = (unsigned)getpid();
  for (int i = 0; i < FLAPS; i++) {
    int l = chaos_wait_leader(&cl, -1, RECOVERY_WAIT_MS);
    CU_ASSERT_FATAL(l >= 0);
    int frozen_ms = 1500 + (int)(rand_r(&seed) % 2001);
    int how = i % 3;
    int64_t t0 = ms_time_mono_ms();
    if (how == 2) { /* etcd frozen: the leader runs on, its keepalives unanswered */
      kill(ms_test_etcd_pid(cl.etcd), SIGSTOP);
      ms_time_sleep_ms(frozen_ms);
      kill(ms_test_etcd_pid(cl.etcd), SIGCONT);
    } else {
      chaos_freeze(&cl.alloc[l]);
      if (how == 1) /* the standby frozen too, and thawed last: the same one leads again */
        chaos_freeze(&cl.alloc[1 - l]);
      ms_time_sleep_ms(frozen_ms);
      chaos_thaw(&cl.alloc[l]);
      if (how == 1) {
        ms_time_sleep_ms(1500);
        chaos_thaw(&cl.alloc[1 - l]);
      }
    }
    int now = chaos_wait_leader(&cl, -1, RECOVERY_WAIT_MS);
    static const char *const hows[] = {"the leader", "the leader and the standby (1.5 s longer)", "etcd"};
    printf("  flap %d: allocator-%d leading; %s frozen %d ms; leader after %.2f s: allocator-%d; %d of %d "
           "finished\n",
           i + 1, l, hows[how], frozen_ms, (double)(ms_time_mono_ms() - t0) / 1000, now, chaos_fw_finished(f),
           FLAP_TASKS);
    ms_time_sleep_ms(500 + (int)(rand_r(&seed) % 3001));
  }
  fault_ms = ms_time_mono_ms(); /* the batch's deadline counts from the last flap */
  recovery r;
  before_fault(&r, -1);
  watch_recovery(f, fault_ms, &r);
  print_recovery("after the last flap", &r);
  finish(f);
  if (batch > 0) {
    ms_test_batch b;
    int rc = ms_test_batch_wait(batch, blog, BATCH_WAIT_MS, &b, &err);
    MS_ASSERT_OK(rc, &err);
    printf("  meseta-batch: exit %d, %" PRId64 " of %d finished, %" PRId64 " failed, %" PRId64 " errors\n",
           b.exit_code, b.finished, BATCH_TASKS, b.failed, b.errors);
    if (rc == 0 && (b.exit_code != 0 || b.finished != BATCH_TASKS))
      fprintf(stderr, "  chaos: meseta-batch did not finish its batch; see %s\n", blog);
    CU_ASSERT(rc == 0 && b.exit_code == 0 && b.finished == BATCH_TASKS);
  }
  cluster_down();
}

/* What RSS may hold beyond the service's own use: under AddressSanitizer, freed memory
 * waits in its quarantine (256 MiB by default, ASAN_OPTIONS quarantine_size_mb) before
 * reuse, so a flood of calls grows RSS by up to that much without a leak. Real leaks are
 * caught at exit (every service must exit 0 on SIGTERM, LeakSanitizer included). */
#if defined(__SANITIZE_ADDRESS__)
#define CHAOS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHAOS_ASAN 1
#endif
#endif

static long quarantine_kib(void) {
#ifdef CHAOS_ASAN
  long mb = 256;
  const char *o = getenv("ASAN_OPTIONS");
  const char *q = o ? strstr(o, "quarantine_size_mb=") : NULL;
  if (q)
    mb = strtol(q + strlen("quarantine_size_mb="), NULL, 10);
  return mb * 1024;
#else
  return 0;
#endif
}

static void print_memory(const char *when, long before[], bool have_before) {
  chaos_svc *all[] = {&cl.reg[0],  &cl.reg[1],   &cl.alloc[0], &cl.alloc[1], &cl.mapi[0],
                      &cl.mapi[1], &cl.agent[0], &cl.agent[1], &cl.agent[2]};
  printf("  RSS %s:", when);
  for (size_t i = 0; i < MS_ARRAY_SIZE(all); i++) {
    long kib = chaos_rss_kib(chaos_pid(all[i]));
    printf(" %s %.1f MiB;", all[i]->name, kib / 1024.0);
    if (!have_before) {
      before[i] = kib;
    } else if (kib >= 0 && before[i] > 0 && kib > 4 * before[i] + 200 * 1024 + quarantine_kib()) {
      fprintf(stderr, "\n  chaos: %s grew from %.1f to %.1f MiB under the flood\n", all[i]->name,
              before[i] / 1024.0, kib / 1024.0);
      CU_FAIL("RSS not bounded");
    }
  }
  printf("\n");
}

static void test_flood(void) {
  cluster_up();
  chaos_fw *f = batch_start("flood", TASKS);
  wait_finished(f, FAULT_AFTER / 2);
  long before[16];
  print_memory("before the flood", before, false);
  int64_t t0 = fault_ms = ms_time_mono_ms();
  chaos_flood_stats st;
  chaos_flood(&cl, 16, 20000, &st);
  double secs = (double)(ms_time_mono_ms() - t0) / 1000;
  printf("  flood: %" PRIu64 " calls in %.1f s (%.0f/s): %" PRIu64 " OK, %" PRIu64 " errors (", st.calls,
         secs, st.calls / secs, st.ok, st.errors);
  for (int i = 1; i < 17; i++)
    if (st.by_code[i])
      printf(" %s=%" PRIu64, ms_status_name((ms_status)i), st.by_code[i]);
  printf(" )\n");
  print_memory("after the flood", before, true);
  chaos_svc *all[] = {&cl.reg[0], &cl.reg[1], &cl.alloc[0], &cl.alloc[1], &cl.mapi[0], &cl.mapi[1]};
  for (size_t i = 0; i < MS_ARRAY_SIZE(all); i++)
    if (!chaos_alive(chaos_pid(all[i]))) {
      fprintf(stderr, "  chaos: %s died under the flood; see %s/%s.log\n", all[i]->name, dir, all[i]->name);
      CU_FAIL("a service died under the flood");
    }
  finish(f);
  cluster_down();
}

static void test_idle_subscribers(void) {
  cluster_up();
  /* The batch subscribes first (within any per-principal bound) but launches only once
   * the idle subscribers are there to be offered everything. */
  chaos_fw *f = batch_start_paused("idle", TASKS, true);
  int threads_before = chaos_threads(chaos_pid(&cl.mapi[0]));
  chaos_idle *idle = chaos_idle_start(&cl, 0, 200);
  fault_ms = ms_time_mono_ms();
  chaos_fw_resume(f);
  int subscribed, refused, failed;
  chaos_idle_counts(idle, &subscribed, &refused, &failed);
  printf("\n  200 idle subscribers on %s: %d subscribed, %d refused (RESOURCE_EXHAUSTED), %d failed\n",
         cl.mapi[0].name, subscribed, refused, failed);
  printf("  threads: %s %d before, %d with the idle subscribers; %s %d\n", cl.mapi[0].name, threads_before,
         chaos_threads(chaos_pid(&cl.mapi[0])), cl.mapi[1].name, chaos_threads(chaos_pid(&cl.mapi[1])));
  CU_ASSERT_EQUAL(failed, 0);
  finish(f);
  chaos_idle_free(idle);
  cluster_down();
}

static const ms_test_case cases[] = {
    {"kill_leader", test_kill_leader},
    {"kill_mapi", test_kill_mapi},
    {"kill_agent", test_kill_agent},
    {"kill_registry", test_kill_registry},
    {"etcd_restart", test_etcd_restart},
    {"stop_leader_20s", test_stop_leader_20s},
    {"stop_leader_60s", test_stop_leader_60s},
    {"flood", test_flood},
    {"idle_subscribers", test_idle_subscribers},
    {"lease_flaps", test_lease_flaps},
    {NULL, NULL},
};

/* Cgroup parents of runs that died without their cleanup (meseta-chaos-<pid>-<i>). */
static void remove_stale(void) {
  DIR *d = opendir("/sys/fs/cgroup/pids");
  struct dirent *e;
  int pid;
  while (d && (e = readdir(d)))
    if (sscanf(e->d_name, "meseta-chaos-%d-", &pid) == 1 && pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
      fprintf(stderr, "test-chaos: a dead run's cgroup %s is left (remove it with its containers)\n",
              e->d_name);
  if (d)
    closedir(d);
}

int main(int argc, char **argv) {
  if (geteuid() != 0)
    ms_test_skip("needs root (containers, cgroups)");
  dir = ms_test_tmpdir("test-chaos");
  remove_stale();
  int rc = ms_test_main(argc, argv, "chaos", cases);
  for (int i = 0; i < 2; i++) /* a fatal assertion left them */
    chaos_fw_free(fws[i]);
  if (up)
    chaos_cluster_stop(&cl, false);
  up = false;
  const char *keep = getenv("MESETA_KEEP_TEST_DIR");
  if (rc == 0 && !(keep && *keep && strcmp(keep, "0") != 0))
    ms_test_rmtree(dir);
  else
    fprintf(stderr, "test-chaos: logs kept in %s\n", dir);
  free(dir);
  return rc;
}
