#include "meseta/service.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>

#include "meseta/alloc.h"
#include "meseta/loop.h"

int ms_service_main(int argc, char **argv, const ms_flag_spec *spec, int (*run)(ms_error **err)) {
  ms_error *err = NULL;
  static const int sigs[] = {SIGTERM, SIGINT};
  if (ms_signals_block(sigs, MS_ARRAY_SIZE(sigs), &err) < 0) {
    fprintf(stderr, "%s: %s\n", spec->prog, err->msg);
    ms_error_free(err);
    return 1;
  }
  int r = ms_flags_parse(spec, argc, argv, NULL, &err);
  int code = 0;
  if (r < 0)
    code = 2;
  else if (r == 0 && run(&err) < 0)
    code = 1;
  if (code) {
    fprintf(stderr, "%s: %s\n", spec->prog, err ? err->msg : "failed");
    ms_error_free(err);
  }
  ms_flags_free(spec);
  return code;
}

int ms_service_write_ready(const char *path, const ms_rpc_server *srv, ms_error **err) {
  _cleanup_free_ char *tmp = ms_xasprintf("%s.tmp", path);
  FILE *f = fopen(tmp, "we");
  if (!f)
    return ms_error_set_errno(err, errno, "ready file `%s`", tmp);
  for (size_t i = 0; ms_rpc_server_address(srv, i); i++)
    fprintf(f, "%s\n", ms_rpc_server_address(srv, i));
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    return ms_error_set_errno(err, errno, "ready file `%s`", path);
  return 0;
}
