/* The agent: its identity (persisted under the work dir), registration over the link, and
 * what the allocator asks of it. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"
#include "meseta/log.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"

#define AGENT_VERSION "0.1.0"

static char *xdup(const char *s) {
  return s ? ms_xstrdup(s) : NULL;
}

static char *read_boot_id(void) {
  char *s = agent_read_file("/proc/sys/kernel/random/boot_id", 64, NULL);
  if (!s)
    return ms_xstrdup("");
  s[strcspn(s, "\n")] = '\0';
  return s;
}

/* meta/agent.json: {"agent_id", "boot_id", "hostname", "resources", "attributes"}: the
 * identity, and what it was registered with (for the reconfiguration policy). */
static int load_identity(agent *a, ms_error **err) {
  _cleanup_free_ char *path = ms_xasprintf("%s/meta/agent.json", a->work_dir);
  ms_error *e2 = NULL;
  _cleanup_free_ char *text = agent_read_file(path, 1 << 20, &e2);
  if (!text) {
    if (e2->errnum != ENOENT)
      ms_log_warn(NULL, "%s: registering as a new agent", e2->msg);
    ms_error_free(e2);
    return 0;
  }
  json_t *o = json_loads(text, 0, NULL);
  const char *id = json_string_value(json_object_get(o, "agent_id"));
  const char *boot = json_string_value(json_object_get(o, "boot_id"));
  int rc = 0;
  if (!id || !*id) {
    ms_log_warn(NULL, "file `%s`: no agent_id: registering as a new agent", path);
  } else if (!boot || strcmp(boot, a->boot_id) != 0) {
    ms_log_info(NULL, "agent %s: the host rebooted since: registering as a new agent", id);
  } else {
    a->id = ms_xstrdup(id);
    a->known_id = true;
    rc = agent_check_reconfiguration(a, json_string_value(json_object_get(o, "resources")),
                                     json_string_value(json_object_get(o, "attributes")),
                                     json_string_value(json_object_get(o, "hostname")), err);
  }
  json_decref(o);
  return rc;
}

static void save_identity(agent *a) {
  _cleanup_free_ char *path = ms_xasprintf("%s/meta/agent.json", a->work_dir);
  json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "agent_id", a->id, "boot_id", a->boot_id, "hostname",
                        a->hostname, "resources", a->resources_text, "attributes",
                        a->attributes ? a->attributes : "");
  _cleanup_free_ char *text = json_dumps(o, JSON_SORT_KEYS);
  json_decref(o);
  ms_error *err = NULL;
  if (agent_write_file(path, text, &err) < 0) {
    ms_log_error(NULL, "agent id not persisted (a restart registers a new agent): %s", err->msg);
    ms_error_free(err);
  }
}

void agent_send(agent *a, const Meseta__V1__AgentMessage *m) {
  if (!a->gen) {
    ms_log_debug(NULL, "not registered: message kept for later or dropped");
    return;
  }
  ms_error *err = NULL;
  if (agent_link_send(a->link, a->gen, m, &err) < 0) {
    ms_log_debug(NULL, "send: %s", err->msg);
    ms_error_free(err);
  }
}

/* ---- registration ---- */

/* The Task message for a task the agent holds (REREGISTER). Heap. */
static Meseta__V1__Task *task_message(agent *a, const agent_task *t) {
  Meseta__V1__Task *m = ms_pb_new(&meseta__v1__task__descriptor);
  m->name = xdup(t->info->name ? t->info->name : "");
  m->task_id = ms_pb_new(&meseta__v1__task_id__descriptor);
  m->task_id->value = ms_xstrdup(t->task_id);
  m->framework_id = ms_pb_new(&meseta__v1__framework_id__descriptor);
  m->framework_id->value = ms_xstrdup(t->framework_id);
  m->agent_id = ms_pb_new(&meseta__v1__agent_id__descriptor);
  m->agent_id->value = ms_xstrdup(a->id);
  m->state = t->state;
  m->n_resources = t->info->n_resources;
  m->resources = ms_xcalloc(t->info->n_resources + 1, sizeof(*m->resources));
  for (size_t i = 0; i < t->info->n_resources; i++)
    m->resources[i] = (Meseta__V1__Resource *)ms_pb_dup(&t->info->resources[i]->base);
  return m;
}

static void on_open(agent *a, uint64_t gen) {
  a->opened = gen;
  ms_error *err = NULL;
  Meseta__V1__AgentInfo *info = agent_info_new(a, &err);
  if (!info) {
    ms_log_error(NULL, "%s", err->msg);
    ms_error_free(err);
    return;
  }
  Meseta__V1__AgentMessage m = MESETA__V1__AGENT_MESSAGE__INIT;
  Meseta__V1__AgentMessage__Register reg = MESETA__V1__AGENT_MESSAGE__REGISTER__INIT;
  Meseta__V1__AgentMessage__Reregister rr = MESETA__V1__AGENT_MESSAGE__REREGISTER__INIT;
  Meseta__V1__Task **tasks = NULL;
  Meseta__V1__FrameworkInfo **fws = NULL;
  size_t nt = 0, nf = 0;
  /* The node's reservations and volumes, and their version, in both hellos. */
  Meseta__V1__Resources *ckpt = agent_ops_checkpointed(a);
  Meseta__V1__ResourceVersion rv = MESETA__V1__RESOURCE_VERSION__INIT;
  rv.uuid.data = a->res_version;
  rv.uuid.len = sizeof(a->res_version);
  size_t nops = 0;
  Meseta__V1__TrackedOperation **ops = agent_ops_unacked(a, &nops);
  if (!a->id) {
    reg.checkpointed_resources = ckpt->resources;
    reg.n_checkpointed_resources = ckpt->n_resources;
    reg.resource_version = &rv;
    reg.agent_info = info;
    reg.version = AGENT_VERSION;
    reg.boot_id = a->boot_id;
    m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REGISTER;
    m.register_ = &reg;
    ms_log_info(NULL, "registering with `%s` as %s", a->allocator, a->resources_text);
  } else {
    for (agent_task *t = a->tasks; t; t = t->next)
      nt++;
    tasks = ms_xcalloc(nt + 1, sizeof(*tasks));
    fws = ms_xcalloc(nt + 1, sizeof(*fws));
    nt = 0;
    for (agent_task *t = a->tasks; t; t = t->next) {
      tasks[nt++] = task_message(a, t);
      bool seen = !t->framework;
      for (size_t i = 0; i < nf && !seen; i++)
        seen = fws[i]->id && strcmp(fws[i]->id->value, t->framework_id) == 0;
      if (!seen)
        fws[nf++] = t->framework;
    }
    rr.agent_info = info;
    rr.version = AGENT_VERSION;
    rr.boot_id = a->boot_id;
    rr.n_tasks = nt;
    rr.tasks = tasks;
    rr.n_frameworks = nf;
    rr.frameworks = fws;
    rr.checkpointed_resources = ckpt->resources;
    rr.n_checkpointed_resources = ckpt->n_resources;
    rr.resource_version = &rv;
    rr.operations = ops;
    rr.n_operations = nops;
    m.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_REREGISTER;
    m.reregister = &rr;
    ms_log_info(NULL, "agent %s: re-registering with `%s` (%zu tasks)", a->id, a->allocator, nt);
  }
  if (agent_link_send(a->link, gen, &m, &err) < 0) {
    ms_log_warn(NULL, "registration: %s", err->msg);
    ms_error_free(err);
  }
  for (size_t i = 0; i < nt; i++)
    protobuf_c_message_free_unpacked(&tasks[i]->base, NULL);
  free(tasks);
  free(fws);
  free(ops);
  ms_resources_proto_free(ckpt);
  protobuf_c_message_free_unpacked(&info->base, NULL);
}

static void registered(agent *a, uint64_t gen, const char *id, bool re,
                       const Google__Protobuf__Duration *hb) {
  if (!id || !*id) {
    ms_log_error(NULL, "%s without an agent id ignored", re ? "REREGISTERED" : "REGISTERED");
    return;
  }
  if (!a->id || strcmp(a->id, id) != 0) {
    free(a->id);
    a->id = ms_xstrdup(id);
  }
  save_identity(a); /* also records what it registered with (the policy checks it) */
  a->known_id = true;
  a->gen = gen;
  agent_link_registered(a->link, hb ? hb->seconds * 1000 + hb->nanos / 1000000 : 0);
  ms_log_info(NULL, "agent %s: %s", id, re ? "re-registered" : "registered");
  if (a->cfg.ready_file) {
    _cleanup_free_ char *line = ms_xasprintf("%s\n", id);
    ms_error *err = NULL;
    if (agent_write_file(a->cfg.ready_file, line, &err) < 0) {
      ms_log_error(NULL, "ready file: %s", err->msg);
      ms_error_free(err);
    }
  }
  agent_status_resend_all(a);
  agent_ops_resend_all(a);
}

static void on_message(agent *a, uint64_t gen, Meseta__V1__AllocatorMessage *m) {
  if (gen != a->opened) {
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return;
  }
  bool reg = m->message_case == MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REGISTERED ||
             m->message_case == MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REREGISTERED;
  if (!reg && a->gen != gen) {
    ms_log_warn(NULL, "message %d before registration ignored", (int)m->message_case);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return;
  }
  switch (m->message_case) {
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REGISTERED:
    registered(a, gen, m->registered->agent_id ? m->registered->agent_id->value : NULL, false,
               m->registered->heartbeat_interval);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_REREGISTERED:
    registered(a, gen, m->reregistered->agent_id ? m->reregistered->agent_id->value : NULL, true,
               m->reregistered->heartbeat_interval);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RUN_TASK:
    agent_task_run(a, m->run_task);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_KILL_TASK:
    if (m->kill_task->framework_id && m->kill_task->task_id)
      agent_task_kill(a, m->kill_task->framework_id->value, m->kill_task->task_id->value,
                      m->kill_task->kill_policy && m->kill_task->kill_policy->grace_period
                          ? m->kill_task->kill_policy->grace_period->seconds * 1000 +
                                m->kill_task->kill_policy->grace_period->nanos / 1000000
                          : -1);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_STATUS:
    if (m->acknowledge_status->framework_id && m->acknowledge_status->task_id)
      agent_status_ack(a, m->acknowledge_status->framework_id->value, m->acknowledge_status->task_id->value,
                       m->acknowledge_status->uuid.data, m->acknowledge_status->uuid.len);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_FRAMEWORK:
    if (m->shutdown_framework->framework_id)
      agent_task_kill_all(a, m->shutdown_framework->framework_id->value);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_EXECUTOR:
    /* A command task is its own executor: the executor id is the task id. */
    if (m->shutdown_executor->framework_id && m->shutdown_executor->executor_id)
      agent_task_kill(a, m->shutdown_executor->framework_id->value, m->shutdown_executor->executor_id->value,
                      -1);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_FRAMEWORK_TO_EXECUTOR:
    ms_log_info(NULL, "framework message for executor `%s` dropped: command tasks take no messages",
                m->framework_to_executor->executor_id ? m->framework_to_executor->executor_id->value : "");
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_UPDATE_FRAMEWORK:
    if (m->update_framework->framework_info)
      agent_task_update_framework(a, m->update_framework->framework_info);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_SHUTDOWN_AGENT:
    ms_log_warn(NULL, "the allocator shuts this agent down: %s", m->shutdown_agent->reason);
    agent_begin_shutdown(a, true);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_APPLY_OPERATION:
    agent_ops_apply(a, m->apply_operation);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_ACKNOWLEDGE_OPERATION_STATUS:
    agent_ops_ack(a, m->acknowledge_operation_status);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_RECONCILE_OPERATIONS:
    agent_ops_reconcile(a, m->reconcile_operations);
    break;
  case MESETA__V1__ALLOCATOR_MESSAGE__MESSAGE_PING: {
    Meseta__V1__AgentMessage__Heartbeat hb = MESETA__V1__AGENT_MESSAGE__HEARTBEAT__INIT;
    hb.sequence = m->ping->sequence;
    Meseta__V1__AgentMessage out = MESETA__V1__AGENT_MESSAGE__INIT;
    out.message_case = MESETA__V1__AGENT_MESSAGE__MESSAGE_HEARTBEAT;
    out.heartbeat = &hb;
    agent_send(a, &out);
    break;
  }
  default:
    ms_log_warn(NULL, "allocator message %d not supported yet: ignored", (int)m->message_case);
    break;
  }
  protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void on_closed(agent *a, uint64_t gen, const char *reason) {
  if (gen == a->gen)
    a->gen = 0;
  ms_log_warn(NULL, "link to `%s` lost: %s; reconnecting", a->allocator, reason ? reason : "?");
}

/* ---- lifecycle ---- */

static int parse_isolation(agent *a, const char *list, ms_error **err) {
  if (!list)
    list = "linux/seccomp,cgroups/pids";
  _cleanup_free_ char *copy = ms_xstrdup(list);
  char *save = NULL;
  for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
    while (*p == ' ')
      p++;
    if (strcmp(p, "linux/seccomp") == 0)
      a->iso_seccomp = true;
    else if (strcmp(p, "cgroups/pids") == 0)
      a->iso_pids = true;
    else if (strcmp(p, "network/none") == 0)
      a->iso_net_none = true;
    else if (*p)
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "flag `--isolation`: unknown isolator `%s` (known: linux/seccomp, cgroups/pids, "
                          "network/none)",
                          p);
  }
  return 0;
}

agent *agent_new(const agent_config *cfg, ms_loop *loop, ms_error **err) {
  agent *a = ms_xcalloc(1, sizeof(*a));
  a->cfg = *cfg;
  a->loop = loop;
  a->work_dir = ms_xstrdup(cfg->work_dir);
  a->allocator = ms_xstrdup(cfg->allocator ? cfg->allocator : cfg->registry ? cfg->registry : "");
  a->runtime = ms_xstrdup(cfg->runtime);
  a->seccomp_dir = ms_xstrdup(cfg->seccomp_dir);
  a->seccomp_default = ms_xstrdup(cfg->seccomp_default);
  a->cgroup_parent = ms_xstrdup(cfg->cgroup_parent);
  a->attributes = xdup(cfg->attributes);
  a->boot_id = read_boot_id();
  if (cfg->hostname && *cfg->hostname) {
    a->hostname = ms_xstrdup(cfg->hostname);
  } else {
    char h[256] = "";
    gethostname(h, sizeof(h) - 1);
    a->hostname = ms_xstrdup(h);
  }
  _cleanup_free_ char *meta = ms_xasprintf("%s/meta", a->work_dir);
  _cleanup_free_ char *sb = ms_xasprintf("%s/sandboxes", a->work_dir);
  _cleanup_free_ char *cs = ms_xasprintf("%s/containers", a->work_dir);
  a->tasks_dir = ms_xasprintf("%s/meta/tasks", a->work_dir);
  if (ms_mkdirs(meta, err) < 0 || ms_mkdirs(sb, err) < 0 || ms_mkdirs(cs, err) < 0)
    goto fail;
  if (parse_isolation(a, cfg->isolation, err) < 0)
    goto fail;
  if (cfg->resources && *cfg->resources)
    a->resources_text = ms_xstrdup(cfg->resources);
  else if (!(a->resources_text = agent_detect_resources(a->work_dir, cfg->reserve_mem_mb, err)))
    goto fail;
  if (ms_resources_parse_text(a->resources_text, NULL, &a->total, err) < 0) {
    ms_error_prefix(err, "resources");
    goto fail;
  }
  Meseta__V1__AgentInfo *probe = agent_info_new(a, err); /* validates the attributes */
  if (!probe)
    goto fail;
  protobuf_c_message_free_unpacked(&probe->base, NULL);
  if (access(a->runtime, X_OK) < 0)
    ms_log_warn(NULL, "runtime `%s`: %s (every launch will fail)", a->runtime, strerror(errno));
  if (load_identity(a, err) < 0 || agent_recover(a, err) < 0 || agent_ops_recover(a, err) < 0)
    goto fail;
  agent_link_events ev = {on_open, on_message, on_closed};
  ms_rpc_tls tls = {.ca_file = cfg->tls_ca,
                    .cert_file = cfg->tls_cert,
                    .key_file = cfg->tls_key,
                    .server_name = cfg->tls_server_name};
  const char *one[] = {cfg->allocator};
  agent_link_options lo = {.targets = cfg->n_allocators ? cfg->allocators : one,
                           .n_targets =
                               cfg->n_allocators ? cfg->n_allocators : cfg->allocator && !cfg->registry,
                           .registry = cfg->registry,
                           .tls = cfg->tls_ca ? &tls : NULL,
                           .backoff_ms = cfg->reconnect_backoff_ms,
                           .max_backoff_ms = cfg->reconnect_max_ms,
                           .silence_ms = cfg->link_timeout_ms};
  if (!(a->link = agent_link_new(&lo, loop, a, &ev, err)))
    goto fail;
  return a;
fail:
  agent_free(a);
  return NULL;
}

int agent_start(agent *a, ms_error **err) {
  agent_gc_start(a);
  return agent_link_start(a->link, err);
}

void agent_set_operator_port(agent *a, int port) {
  a->operator_port = port;
}

void agent_set_operator_address(agent *a, const char *address) {
  free(a->operator_address);
  a->operator_address = address ? ms_xstrdup(address) : NULL;
}

const char *agent_id(const agent *a) {
  return a->id;
}

static void shutdown_timeout(ms_loop *loop, uint64_t id, void *arg) {
  agent *a = arg;
  a->shutdown_timer = 0;
  ms_log_warn(NULL, "%zu containers still running after the shutdown grace: leaving them",
              agent_task_live(a));
  ms_loop_stop(loop);
}

void agent_begin_shutdown(agent *a, bool kill_containers) {
  if (a->shutting_down)
    return;
  a->shutting_down = true;
  size_t live = agent_task_live(a);
  if (!kill_containers) {
    if (live)
      ms_log_info(NULL, "leaving %zu containers running: the next start re-attaches them", live);
    ms_loop_stop(a->loop);
    return;
  }
  if (live)
    ms_log_info(NULL, "stopping %zu containers", live);
  agent_task_kill_all(a, NULL);
  a->shutdown_timer = ms_loop_add_timer(a->loop, a->cfg.shutdown_grace_ms, 0, shutdown_timeout, a);
  agent_maybe_done(a);
}

void agent_maybe_done(agent *a) {
  if (a->shutting_down && agent_task_live(a) == 0) {
    if (a->shutdown_timer)
      ms_loop_cancel_timer(a->loop, a->shutdown_timer);
    a->shutdown_timer = 0;
    ms_loop_stop(a->loop);
  }
}

void agent_free(agent *a) {
  if (!a)
    return;
  agent_link_free(a->link); /* first: it runs what its thread posted */
  while (a->tasks)
    agent_task_forget(a, a->tasks);
  agent_ops_free(a);
  if (a->shutdown_timer)
    ms_loop_cancel_timer(a->loop, a->shutdown_timer);
  if (a->gc_timer)
    ms_loop_cancel_timer(a->loop, a->gc_timer);
  free(a->work_dir);
  free(a->allocator);
  free(a->runtime);
  free(a->seccomp_dir);
  free(a->seccomp_default);
  free(a->cgroup_parent);
  free(a->attributes);
  free(a->hostname);
  free(a->operator_address);
  free(a->resources_text);
  ms_resources_free(a->total);
  free(a->boot_id);
  free(a->tasks_dir);
  free(a->id);
  free(a);
}
