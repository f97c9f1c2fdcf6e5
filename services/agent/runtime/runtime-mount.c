/* The container's filesystem, built by its init inside the new mount namespace.
 *
 * Host root (no rootfs in the spec): a small tmpfs becomes `/`, holding read-only nosuid
 * binds of the host's /usr and /etc, the host's /bin, /lib... symlinks (merged /usr) or
 * read-only binds where they are directories, a private tmpfs /tmp, a fresh /proc, a
 * minimal /dev and the sandbox at /mnt/sandbox (read-write). The root itself is then made
 * read-only. With a rootfs: the rootfs (bound onto itself) gets the same /proc, /dev and
 * sandbox. Either way pivot_root drops the host's tree, so nothing else is reachable. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/fs.h"

#include "runtime-internal.h"

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data,
                    ms_error **err) {
  if (mount(src, dst, type, flags, data) != 0)
    return ms_error_set_errno(err, errno, "mount `%s` on `%s`", src ? src : "none", dst);
  return 0;
}

/* A read-only (or not) bind of `src` on `dst` (created as a directory or an empty file). */
static int bind_path(const char *src, const char *dst, bool dir, bool ro, ms_error **err) {
  if (dir) {
    if (mkdir(dst, 0755) != 0 && errno != EEXIST)
      return ms_error_set_errno(err, errno, "mkdir `%s`", dst);
  } else {
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      return ms_error_set_errno(err, errno, "create `%s`", dst);
    close(fd);
  }
  if (do_mount(src, dst, NULL, MS_BIND | MS_REC, NULL, err) < 0)
    return MS_ERR;
  unsigned long fl = MS_REMOUNT | MS_BIND | MS_NOSUID | (ro ? MS_RDONLY : 0) | (dir ? MS_NODEV : 0);
  return do_mount(NULL, dst, NULL, fl, NULL, err);
}

static int host_tree(const char *root, ms_error **err) {
  static const char *const ro_dirs[] = {"usr",   "etc",   "bin",    "sbin", "lib",
                                        "lib32", "lib64", "libx32", "opt"};
  for (size_t i = 0; i < MS_ARRAY_SIZE(ro_dirs); i++) {
    _cleanup_free_ char *src = ms_xasprintf("/%s", ro_dirs[i]);
    _cleanup_free_ char *dst = ms_xasprintf("%s/%s", root, ro_dirs[i]);
    struct stat st;
    if (lstat(src, &st) != 0)
      continue;
    if (S_ISLNK(st.st_mode)) {
      char target[256];
      ssize_t n = readlink(src, target, sizeof(target) - 1);
      if (n < 0)
        return ms_error_set_errno(err, errno, "readlink `%s`", src);
      target[n] = '\0';
      if (symlink(target, dst) != 0)
        return ms_error_set_errno(err, errno, "symlink `%s`", dst);
    } else if (S_ISDIR(st.st_mode) && bind_path(src, dst, true, true, err) < 0) {
      return MS_ERR;
    }
  }
  _cleanup_free_ char *tmp = ms_xasprintf("%s/tmp", root);
  if (mkdir(tmp, 01777) != 0 && errno != EEXIST)
    return ms_error_set_errno(err, errno, "mkdir `%s`", tmp);
  return do_mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m", err);
}

static int dev_tree(const char *root, ms_error **err) {
  static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
  static const char *const links[][2] = {{"/proc/self/fd", "fd"},
                                         {"/proc/self/fd/0", "stdin"},
                                         {"/proc/self/fd/1", "stdout"},
                                         {"/proc/self/fd/2", "stderr"}};
  _cleanup_free_ char *dev = ms_xasprintf("%s/dev", root);
  if (mkdir(dev, 0755) != 0 && errno != EEXIST)
    return ms_error_set_errno(err, errno, "mkdir `%s`", dev);
  if (do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k", err) < 0)
    return MS_ERR;
  for (size_t i = 0; i < MS_ARRAY_SIZE(nodes); i++) {
    _cleanup_free_ char *src = ms_xasprintf("/dev/%s", nodes[i]);
    _cleanup_free_ char *dst = ms_xasprintf("%s/%s", dev, nodes[i]);
    if (access(src, F_OK) == 0 && bind_path(src, dst, false, false, err) < 0)
      return MS_ERR;
  }
  for (size_t i = 0; i < MS_ARRAY_SIZE(links); i++) {
    _cleanup_free_ char *dst = ms_xasprintf("%s/%s", dev, links[i][1]);
    if (symlink(links[i][0], dst) != 0)
      return ms_error_set_errno(err, errno, "symlink `%s`", dst);
  }
  _cleanup_free_ char *shm = ms_xasprintf("%s/shm", dev);
  if (mkdir(shm, 01777) != 0)
    return ms_error_set_errno(err, errno, "mkdir `%s`", shm);
  return do_mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m", err);
}

/* /proc of the new pid namespace; files that reach the host read-only or hidden. */
static int proc_tree(const char *root, ms_error **err) {
  static const char *const ro[] = {"sys", "sysrq-trigger", "irq", "bus"};
  static const char *const hidden[] = {"kcore", "keys", "timer_list", "sched_debug"};
  _cleanup_free_ char *proc = ms_xasprintf("%s/proc", root);
  if (mkdir(proc, 0555) != 0 && errno != EEXIST)
    return ms_error_set_errno(err, errno, "mkdir `%s`", proc);
  if (do_mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, err) < 0)
    return MS_ERR;
  for (size_t i = 0; i < MS_ARRAY_SIZE(ro); i++) {
    _cleanup_free_ char *p = ms_xasprintf("%s/%s", proc, ro[i]);
    if (access(p, F_OK) != 0)
      continue;
    if (do_mount(p, p, NULL, MS_BIND | MS_REC, NULL, err) < 0 ||
        do_mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL,
                 err) < 0)
      return MS_ERR;
  }
  for (size_t i = 0; i < MS_ARRAY_SIZE(hidden); i++) {
    _cleanup_free_ char *p = ms_xasprintf("%s/%s", proc, hidden[i]);
    if (access(p, F_OK) == 0 && do_mount("/dev/null", p, NULL, MS_BIND, NULL, err) < 0)
      return MS_ERR;
  }
  return 0;
}

int rt_mount_rootfs(const rt_spec *s, const char *mountpoint, ms_error **err) {
  if (do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, err) < 0)
    return MS_ERR;
  const char *root = s->rootfs ? s->rootfs : mountpoint;
  if (s->rootfs) {
    if (do_mount(root, root, NULL, MS_BIND | MS_REC, NULL, err) < 0)
      return MS_ERR;
  } else if (do_mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m", err) < 0 ||
             host_tree(root, err) < 0) {
    return MS_ERR;
  }
  if (proc_tree(root, err) < 0 || dev_tree(root, err) < 0)
    return MS_ERR;
  _cleanup_free_ char *sandbox = ms_xasprintf("%s/mnt/sandbox", root);
  if (ms_mkdirs(sandbox, err) < 0 || bind_path(s->sandbox, sandbox, true, false, err) < 0)
    return ms_error_prefix(err, "sandbox `%s`", s->sandbox);
  /* pivot_root(".", ".") stacks the old root under the new one; detaching it drops the host. */
  if (chdir(root) != 0)
    return ms_error_set_errno(err, errno, "chdir `%s`", root);
  if (syscall(SYS_pivot_root, ".", ".") != 0)
    return ms_error_set_errno(err, errno, "pivot_root `%s`", root);
  if (umount2(".", MNT_DETACH) != 0)
    return ms_error_set_errno(err, errno, "umount old root");
  if (chdir("/") != 0)
    return ms_error_set_errno(err, errno, "chdir `/`");
  if (!s->rootfs && do_mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL, err) < 0)
    return MS_ERR;
  return 0;
}

int rt_net_loopback_up(ms_error **err) {
  _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return ms_error_set_errno(err, errno, "socket for `lo`");
  struct ifreq ifr = {0};
  ms_strlcpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name));
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0)
    return ms_error_set_errno(err, errno, "interface `lo`");
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
    return ms_error_set_errno(err, errno, "bring `lo` up");
  return 0;
}
