#include "raw-grpc.h"

#include <grpc/support/time.h>
#include <string.h>

#include "meseta/alloc.h"

size_t ms_raw_request_ops(grpc_op *ops, grpc_byte_buffer *req, grpc_metadata_array *md) {
  memset(ops, 0, 4 * sizeof(*ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = req;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = md;
  return 4;
}

grpc_status_code ms_raw_unary(grpc_channel *ch, grpc_completion_queue *cq, void *registered,
                              const char *method, grpc_byte_buffer *req, int64_t timeout_ms,
                              grpc_byte_buffer **ret_resp, char **ret_details) {
  gpr_timespec deadline = timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                         : gpr_inf_future(GPR_CLOCK_REALTIME);
  grpc_call *call;
  if (registered) {
    call = grpc_channel_create_registered_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, registered, deadline,
                                               NULL);
  } else {
    grpc_slice m = grpc_slice_from_copied_string(method);
    call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
  }
  grpc_metadata_array md, trailing;
  grpc_metadata_array_init(&md);
  grpc_metadata_array_init(&trailing);
  grpc_byte_buffer *in = NULL;
  grpc_status_code st = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ms_raw_request_ops(ops, req, &md);
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &in;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.status = &st;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  if (grpc_call_start_batch(call, ops, 6, call, NULL) == GRPC_CALL_OK)
    grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (ret_details)
    *ret_details = ms_xstrndup((const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
  if (ret_resp)
    *ret_resp = in;
  else if (in)
    grpc_byte_buffer_destroy(in);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&md);
  grpc_metadata_array_destroy(&trailing);
  grpc_call_unref(call);
  return st;
}

void ms_raw_cq_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
}
