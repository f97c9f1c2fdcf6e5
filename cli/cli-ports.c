/* Who holds a TCP port: `meseta up` checks every port it will use before it starts
 * anything, and names the process in the way (a second `meseta up`, a stray etcd).
 *
 * A listening socket is found in /proc/net/tcp and /proc/net/tcp6 (state 0A), its inode
 * in some /proc/<pid>/fd/<n> link "socket:[inode]". A port nobody listens on may still be
 * taken (bound, not listening): a plain bind() on 127.0.0.1 tells. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "meseta/alloc.h"

#include "cli.h"

/* The inode of a socket listening on `port` in /proc/net/<file>; 0 if none. */
static unsigned long listening_inode(const char *file, int port) {
  _cleanup_free_ char *path = ms_xasprintf("/proc/net/%s", file);
  _cleanup_fclose_ FILE *f = fopen(path, "re");
  char line[512];
  if (!f || !fgets(line, sizeof(line), f)) /* the header */
    return 0;
  while (fgets(line, sizeof(line), f)) {
    /* "  0: 0100007F:13BA 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12345 ..." */
    char local[64], remote[64];
    unsigned st, uid;
    unsigned long inode;
    int timeout;
    if (sscanf(line, " %*d: %63s %63s %x %*s %*s %*s %u %d %lu", local, remote, &st, &uid, &timeout,
               &inode) != 6)
      continue;
    const char *colon = strrchr(local, ':');
    if (st == 0x0A && colon && strtol(colon + 1, NULL, 16) == port && inode)
      return inode;
  }
  return 0;
}

/* "pid N (comm)" of the process with an fd on socket `inode`; false if none is visible. */
static bool socket_owner(unsigned long inode, char *out, size_t n) {
  char want[64];
  snprintf(want, sizeof(want), "socket:[%lu]", inode);
  DIR *proc = opendir("/proc");
  struct dirent *p;
  bool found = false;
  while (proc && !found && (p = readdir(proc))) {
    if (p->d_name[0] < '1' || p->d_name[0] > '9')
      continue;
    _cleanup_free_ char *fds = ms_xasprintf("/proc/%s/fd", p->d_name);
    DIR *d = opendir(fds);
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
      _cleanup_free_ char *link = ms_xasprintf("%s/%s", fds, e->d_name);
      char target[64];
      ssize_t len = readlink(link, target, sizeof(target) - 1);
      if (len <= 0)
        continue;
      target[len] = '\0';
      found = strcmp(target, want) == 0;
    }
    if (d)
      closedir(d);
    if (found) {
      _cleanup_free_ char *cpath = ms_xasprintf("/proc/%s/comm", p->d_name);
      _cleanup_fclose_ FILE *cf = fopen(cpath, "re");
      char comm[64] = "?";
      if (cf && fgets(comm, sizeof(comm), cf))
        comm[strcspn(comm, "\n")] = '\0';
      snprintf(out, n, "pid %s (%s)", p->d_name, comm);
    }
  }
  if (proc)
    closedir(proc);
  return found;
}

/* Whether 127.0.0.1:port can be bound now (TIME_WAIT does not count). */
static bool bindable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return true; /* cannot tell: let the service say */
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {
      .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

bool cli_port_busy(int port, char *holder, size_t n) {
  unsigned long inode = listening_inode("tcp", port);
  if (!inode)
    inode = listening_inode("tcp6", port);
  if (inode) {
    if (!socket_owner(inode, holder, n))
      snprintf(holder, n, "a process this user cannot see (socket inode %lu)", inode);
    return true;
  }
  if (!bindable(port)) {
    snprintf(holder, n, "a socket bound to it (not listening; no owner found)");
    return true;
  }
  return false;
}
