/* Server reflection (grpc.reflection.v1alpha and v1) from the descriptor database.
 * Both versions share one wire format, so v1 requests are re-read as v1alpha and
 * the answers re-read as v1: one implementation serves both. */
#include <string.h>

#include "meseta/alloc.h"

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "rpc-internal.h"

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest request;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse response;
#define REQ(x) GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##x
#define RESP(x) GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##x

typedef struct files {
  ProtobufCBinaryData *v;
  size_t n;
} files;

static void collect(const ms_descfile *f, void *arg) {
  files *fs = arg;
  fs->v = ms_xrealloc(fs->v, (fs->n + 1) * sizeof(*fs->v));
  fs->v[fs->n++] = (ProtobufCBinaryData){.len = f->len, .data = (uint8_t *)f->bytes};
}

/* Re-reads a message as another type with the same wire format. */
static ProtobufCMessage *convert(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *to) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = ms_xmalloc(n);
  protobuf_c_message_pack(m, buf);
  ProtobufCMessage *out = protobuf_c_message_unpack(to, NULL, n, buf);
  free(buf);
  return out;
}

static int answer(ms_rpc_call *call, const request *req, const ProtobufCMessageDescriptor *resp_desc,
                  ms_error **err) {
  ms_rpc_server *srv = ms_rpc_call_userdata(call);
  const ms_descdb *db = ms_rpc_server_descdb(srv);
  response resp = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
      GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ListServiceResponse lsr = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ExtensionNumberResponse enr =
      GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT;
  _cleanup_free_ char *errmsg = NULL;
  _cleanup_free_ Grpc__Reflection__V1alpha__ServiceResponse *svc = NULL;
  _cleanup_free_ Grpc__Reflection__V1alpha__ServiceResponse **svcp = NULL;
  files fs = {0};
  resp.valid_host = req->host;
  resp.original_request = (request *)req;

  const ms_descfile *f = NULL;
  switch (req->message_request_case) {
  case REQ(LIST_SERVICES): {
    size_t n = ms_rpc__server_service_count(srv);
    svc = ms_xcalloc(n, sizeof(*svc));
    svcp = ms_xcalloc(n, sizeof(*svcp));
    for (size_t i = 0; i < n; i++) {
      grpc__reflection__v1alpha__service_response__init(&svc[i]);
      svc[i].name = (char *)ms_rpc__server_service_name(srv, i);
      svcp[i] = &svc[i];
    }
    lsr.n_service = n;
    lsr.service = svcp;
    resp.message_response_case = RESP(LIST_SERVICES_RESPONSE);
    resp.list_services_response = &lsr;
    break;
  }
  case REQ(FILE_BY_FILENAME):
    f = ms_descdb_file_by_name(db, req->file_by_filename);
    if (!f)
      errmsg = ms_xasprintf("file `%s` is not known", req->file_by_filename);
    break;
  case REQ(FILE_CONTAINING_SYMBOL):
    f = ms_descdb_file_by_symbol(db, req->file_containing_symbol);
    if (!f)
      errmsg = ms_xasprintf("symbol `%s` is not known", req->file_containing_symbol);
    break;
  case REQ(FILE_CONTAINING_EXTENSION):
    errmsg =
        ms_xasprintf("extension %d of `%s` is not known", req->file_containing_extension->extension_number,
                     req->file_containing_extension->containing_type);
    break;
  case REQ(ALL_EXTENSION_NUMBERS_OF_TYPE):
    if (ms_descdb_is_message(db, req->all_extension_numbers_of_type)) {
      enr.base_type_name = req->all_extension_numbers_of_type;
      resp.message_response_case = RESP(ALL_EXTENSION_NUMBERS_RESPONSE);
      resp.all_extension_numbers_response = &enr;
    } else {
      errmsg = ms_xasprintf("message type `%s` is not known", req->all_extension_numbers_of_type);
    }
    break;
  default:
    return ms_error_set(err, MS_INVALID_ARGUMENT,
                        "reflection request names no question (message_request is empty)");
  }
  if (f) {
    ms_descdb_walk_deps(f, collect, &fs);
    fdr.n_file_descriptor_proto = fs.n;
    fdr.file_descriptor_proto = fs.v;
    resp.message_response_case = RESP(FILE_DESCRIPTOR_RESPONSE);
    resp.file_descriptor_response = &fdr;
  } else if (errmsg) {
    er.error_code = MS_NOT_FOUND;
    er.error_message = errmsg;
    resp.message_response_case = RESP(ERROR_RESPONSE);
    resp.error_response = &er;
  }
  int rc;
  if (resp_desc == resp.base.descriptor) {
    rc = ms_rpc_call_send(call, &resp.base, err);
  } else {
    ProtobufCMessage *other = convert(&resp.base, resp_desc);
    rc = ms_rpc_call_send(call, other, err);
    protobuf_c_message_free_unpacked(other, NULL);
  }
  free(fs.v);
  return rc;
}

static int on_alpha(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  return answer(call, (const request *)msg,
                &grpc__reflection__v1alpha__server_reflection_response__descriptor, err);
}

static int on_v1(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  request *req = (request *)convert(msg, &grpc__reflection__v1alpha__server_reflection_request__descriptor);
  if (!req)
    return ms_error_set(err, MS_INVALID_ARGUMENT, "reflection request could not be read");
  int rc = answer(call, req, &grpc__reflection__v1__server_reflection_response__descriptor, err);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  return rc;
}

static int on_half_close(ms_rpc_call *call, ms_error **err) {
  ms_rpc_call_finish(call, MS_OK, NULL);
  return 0;
}

int ms_rpc__reflection_register(ms_rpc_server *srv, ms_error **err) {
  static const ms_rpc_method alpha[] = {
      {.name = "ServerReflectionInfo", .on_message = on_alpha, .on_half_close = on_half_close}};
  static const ms_rpc_method v1[] = {
      {.name = "ServerReflectionInfo", .on_message = on_v1, .on_half_close = on_half_close}};
  if (ms_rpc_server_add_service(srv, &grpc__reflection__v1alpha__server_reflection__descriptor, alpha, 1, srv,
                                err) < 0)
    return MS_ERR;
  return ms_rpc_server_add_service(srv, &grpc__reflection__v1__server_reflection__descriptor, v1, 1, srv,
                                   err);
}
