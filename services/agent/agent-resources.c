/* What the agent advertises (detected resources, attributes) and small file helpers. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/pb.h"
#include "meseta/resources-io.h"

#include "agent-internal.h"

/* ---- files ---- */

int agent_write_bytes(const char *path, const void *data, size_t len, bool sync, ms_error **err) {
  _cleanup_free_ char *tmp = ms_xasprintf("%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "file `%s`", tmp);
  const char *text = data;
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, text + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      return ms_error_set_errno(err, e, "file `%s`", tmp);
    }
    off += (size_t)n;
  }
  int e = sync && fsync(fd) < 0 ? errno : 0;
  if (close(fd) < 0 && !e)
    e = errno;
  if (e) {
    unlink(tmp);
    return ms_error_set_errno(err, e, "file `%s`", tmp);
  }
  if (rename(tmp, path) < 0) {
    unlink(tmp);
    return ms_error_set_errno(err, errno, "file `%s`", path);
  }
  return 0;
}

int agent_write_file(const char *path, const char *text, ms_error **err) {
  return agent_write_bytes(path, text, strlen(text), true, err);
}

char *agent_read_file(const char *path, size_t max, ms_error **err) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ms_error_set_errno(err, errno, "file `%s`", path);
    return NULL;
  }
  char *buf = ms_xmalloc(max + 1);
  size_t off = 0;
  while (off < max) {
    ssize_t n = read(fd, buf + off, max - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      ms_error_set_errno(err, errno, "file `%s`", path);
      free(buf);
      return NULL;
    }
    if (n == 0)
      break;
    off += (size_t)n;
  }
  buf[off] = '\0';
  return buf;
}

/* ---- detection ---- */

static int64_t meminfo_total_mb(void) {
  _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
  char line[256];
  while (f && fgets(line, sizeof(line), f)) {
    long long kb;
    if (sscanf(line, "MemTotal: %lld kB", &kb) == 1)
      return kb / 1024;
  }
  return -1;
}

char *agent_detect_resources(const char *work_dir, int64_t reserve_mb, ms_error **err) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 1)
    cpus = 1;
  int64_t mem = meminfo_total_mb();
  if (mem < 0) {
    ms_error_set(err, MS_INTERNAL, "`/proc/meminfo`: no MemTotal line");
    return NULL;
  }
  /* Mesos' rule: leave the reserve, or half the memory on a small machine. */
  mem = mem > 2 * reserve_mb ? mem - reserve_mb : mem / 2;
  struct statvfs vfs;
  if (statvfs(work_dir, &vfs) < 0) {
    ms_error_set_errno(err, errno, "work dir `%s`", work_dir);
    return NULL;
  }
  int64_t disk = (int64_t)((uint64_t)vfs.f_blocks * vfs.f_frsize / (1024 * 1024));
  return ms_xasprintf("cpus:%ld;mem:%lld;disk:%lld;ports:[31000-32000]", cpus, (long long)(mem > 0 ? mem : 1),
                      (long long)(disk > 0 ? disk : 1));
}

/* ---- AgentInfo ---- */

static int add_attributes(const char *text, Meseta__V1__AgentInfo *info, ms_error **err) {
  _cleanup_free_ char *copy = ms_xstrdup(text);
  char *save = NULL;
  for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
    if (!*part)
      continue;
    char *colon = strchr(part, ':');
    if (!colon || colon == part || !colon[1])
      return ms_error_set(err, MS_INVALID_ARGUMENT, "attribute `%s`: expected name:value", part);
    *colon = '\0';
    const char *value = colon + 1;
    Meseta__V1__Attribute *at = ms_pb_new(&meseta__v1__attribute__descriptor);
    at->name = ms_xstrdup(part);
    char *end = NULL;
    double d = strtod(value, &end);
    if (end && !*end && isfinite(d)) {
      at->type = MESETA__V1__VALUE__TYPE__SCALAR;
      at->scalar = ms_pb_new(&meseta__v1__value__scalar__descriptor);
      at->scalar->value = d;
    } else {
      at->type = MESETA__V1__VALUE__TYPE__TEXT;
      at->text = ms_pb_new(&meseta__v1__value__text__descriptor);
      at->text->value = ms_xstrdup(value);
    }
    info->attributes = ms_xrealloc(info->attributes, (info->n_attributes + 1) * sizeof(*info->attributes));
    info->attributes[info->n_attributes++] = at;
  }
  return 0;
}

Meseta__V1__AgentInfo *agent_info_new(const agent *a, ms_error **err) {
  Meseta__V1__AgentInfo *info = ms_pb_new(&meseta__v1__agent_info__descriptor);
  info->hostname = ms_xstrdup(a->hostname);
  info->port = a->operator_port;
  if (a->operator_address)
    info->address = ms_xstrdup(a->operator_address);
  Meseta__V1__Resources *rp = ms_resources_to_proto(a->total);
  info->n_resources = rp->n_resources;
  info->resources = ms_xcalloc(rp->n_resources + 1, sizeof(*info->resources));
  for (size_t i = 0; i < rp->n_resources; i++)
    info->resources[i] = (Meseta__V1__Resource *)ms_pb_dup(&rp->resources[i]->base);
  ms_resources_proto_free(rp);
  if (a->id) {
    info->id = ms_pb_new(&meseta__v1__agent_id__descriptor);
    info->id->value = ms_xstrdup(a->id);
  }
  if (a->cfg.region || a->cfg.zone) {
    info->domain = ms_pb_new(&meseta__v1__domain_info__descriptor);
    info->domain->fault_domain = ms_pb_new(&meseta__v1__domain_info__fault_domain__descriptor);
    info->domain->fault_domain->region =
        ms_pb_new(&meseta__v1__domain_info__fault_domain__region_info__descriptor);
    info->domain->fault_domain->region->name = ms_xstrdup(a->cfg.region ? a->cfg.region : "");
    info->domain->fault_domain->zone =
        ms_pb_new(&meseta__v1__domain_info__fault_domain__zone_info__descriptor);
    info->domain->fault_domain->zone->name = ms_xstrdup(a->cfg.zone ? a->cfg.zone : "");
  }
  if (a->attributes && add_attributes(a->attributes, info, err) < 0) {
    protobuf_c_message_free_unpacked(&info->base, NULL);
    ms_error_prefix(err, "flag `--attributes`");
    return NULL;
  }
  return info;
}
