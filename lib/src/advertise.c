/* What a service advertises (meseta/advertise.h). */
#include "meseta/advertise.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "meseta/alloc.h"

/* Splits "host:port" / "[v6]:port" into host (brackets dropped) and port; false when
 * the shape is wrong or the port is not 1-65535. */
static bool split(const char *addr, char *host, size_t host_size, long *ret_port) {
  const char *colon = strrchr(addr, ':');
  if (!colon)
    return false;
  const char *h = addr;
  size_t n = (size_t)(colon - addr);
  if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
    h++;
    n -= 2;
  }
  if (n >= host_size)
    return false;
  memcpy(host, h, n);
  host[n] = '\0';
  char *end = NULL;
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end || port < 0 || port > 65535)
    return false;
  *ret_port = port;
  return true;
}

static bool unspecified(const char *host) {
  unsigned char buf[16];
  static const unsigned char zero[16];
  if (!*host)
    return true;
  if (inet_pton(AF_INET, host, buf) == 1)
    return memcmp(buf, zero, 4) == 0;
  if (inet_pton(AF_INET6, host, buf) == 1)
    return memcmp(buf, zero, 16) == 0;
  return false;
}

int ms_advertise_address(const char *flag, const char *given, const char *bound, const char *hostname,
                         char **ret, ms_error **err) {
  char host[256];
  long port = 0;
  if (given) {
    if (strncmp(given, "unix:", 5) == 0) {
      *ret = ms_xstrdup(given);
      return 0;
    }
    if (!split(given, host, sizeof(host), &port) || port == 0)
      return ms_error_set(err, MS_INVALID_ARGUMENT, "flag `%s`: `%s` is not HOST:PORT", flag, given);
    if (unspecified(host))
      return ms_error_set(err, MS_INVALID_ARGUMENT,
                          "flag `%s`: `%s` names no host (%s means any address here, which "
                          "no other machine can dial): give this machine's name or address",
                          flag, given, *host ? host : "an empty host");
    *ret = ms_xstrdup(given);
    return 0;
  }
  if (strncmp(bound, "unix:", 5) == 0 || !split(bound, host, sizeof(host), &port) || !unspecified(host)) {
    *ret = ms_xstrdup(bound);
    return 0;
  }
  if (!hostname || !*hostname)
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "flag `%s`: needed, since `%s` is bound on any address and this "
                        "machine has no hostname",
                        flag, bound);
  *ret = ms_xasprintf("%s:%ld", hostname, port);
  return 0;
}
