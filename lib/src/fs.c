#include "meseta/fs.h"

#include <errno.h>
#include <sys/stat.h>

#include "meseta/alloc.h"

int ms_mkdirs(const char *path, ms_error **err) {
  if (!path || !*path)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "mkdir: no path");
  _cleanup_free_ char *p = ms_xstrdup(path);
  for (char *c = p + 1;; c++) {
    if (*c != '/' && *c != '\0')
      continue;
    char saved = *c;
    *c = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
      return ms_error_set_errno(err, errno, "directory `%s`", p);
    if (!saved)
      return 0;
    *c = saved;
  }
}
