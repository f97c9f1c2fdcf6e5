#include "meseta/service.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>

#include "meseta/alloc.h"
#include "meseta/log.h"
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

int ms_service_log_init(const char *prog, const char *level, const char *format, ms_error **err) {
  ms_log_level l;
  ms_log_format f;
  if (ms_log_level_parse(level, &l, err) < 0 || ms_log_format_parse(format, &f, err) < 0)
    return MS_ERR;
  ms_log_init(prog, l, f, 2);
  return 0;
}

int ms_server_setup(const char *prog, const ms_server_flags *f, ms_rpc_tls *tls, ms_rpc_server_options *so,
                    ms_error **err) {
  if (ms_service_log_init(prog, f->log_level, f->log_format, err) < 0)
    return MS_ERR;
  *tls = (ms_rpc_tls){.cert_file = f->tls_cert, .key_file = f->tls_key, .ca_file = f->tls_ca};
  *so = (ms_rpc_server_options){.listen = (const char *const *)f->listen.v,
                                .n_listen = f->listen.n,
                                .tls = f->tls_cert ? tls : NULL,
                                .max_message_bytes = f->max_message};
  return 0;
}

int ms_server_ready(const ms_server_flags *f, const ms_rpc_server *srv, ms_error **err) {
  return f->ready_file ? ms_service_write_ready(f->ready_file, srv, err) : 0;
}
