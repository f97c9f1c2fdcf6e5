/* Asynchronous client streams: server-streaming calls that complete on one gRPC
 * completion queue driven by one thread, so a process can hold thousands of
 * streams without a thread blocked on each (master-api's Subscribe relays).
 *
 * A stream hands over one message at a time: after on_message nothing more comes
 * until its owner asks for the next with ms_rpc_astream_read, so flow control stays
 * with the owner. on_end comes exactly once, last, with the call's status (also
 * after ms_rpc_astream_cancel). Callbacks run on the queue's thread and must not
 * block: they hand the event to the thread that owns the state (ms_loop_post).
 * (on_end may also run inside ms_rpc_astream_cancel, when the status had come while
 * the owner held the last message.)
 *
 * Ownership: the message given to on_message and the error given to on_end are the
 * callee's. A stream is freed by its owner with ms_rpc_astream_free once on_end has
 * been called (from any thread; the queue's thread no longer touches it after
 * on_end returns, so on_end itself must not touch it after handing it on).
 * Channels and queues outlive their streams: free every stream first.
 *
 * Channels here are gRPC channels of their own, made with the same options as
 * ms_rpc_channel_new (rpc.h); gRPC core shares the connection between channels to
 * one target with the same arguments. */
#pragma once

#include <protobuf-c/protobuf-c.h>

#include "meseta/error.h"
#include "meseta/rpc.h"

typedef struct ms_rpc_aqueue ms_rpc_aqueue;
typedef struct ms_rpc_achannel ms_rpc_achannel;
typedef struct ms_rpc_astream ms_rpc_astream;

typedef struct ms_rpc_astream_handlers {
  /* One message (of the open's resp_desc; the callee frees it). */
  void (*on_message)(ms_rpc_astream *st, ProtobufCMessage *msg, void *arg);
  /* The call is over: err NULL for OK, else its status and message (the callee frees it). */
  void (*on_end)(ms_rpc_astream *st, ms_error *err, void *arg);
} ms_rpc_astream_handlers;

/* A completion queue and the thread that runs its callbacks. */
ms_rpc_aqueue *ms_rpc_aqueue_new(ms_error **err);
/* Shuts the queue down and joins its thread; every stream must be freed. NULL is fine. */
void ms_rpc_aqueue_free(ms_rpc_aqueue *q);

ms_rpc_achannel *ms_rpc_achannel_new(const char *target, const ms_rpc_channel_options *opts, ms_error **err);
void ms_rpc_achannel_free(ms_rpc_achannel *ch); /* NULL is fine */

/* Starts a server-streaming call: `req` is sent (serialized now, the caller's) and
 * the first message is asked for. `opts` may be NULL (no deadline); `h` is copied.
 * Fails only when the call cannot start; a call that fails later ends by on_end. */
ms_rpc_astream *ms_rpc_astream_open(ms_rpc_aqueue *q, ms_rpc_achannel *ch, const char *method,
                                    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                                    const ms_rpc_call_options *opts, const ms_rpc_astream_handlers *h,
                                    void *arg, ms_error **err);
/* Asks for the next message (any thread). Does nothing once the stream has ended,
 * was cancelled, or a read is already pending. */
void ms_rpc_astream_read(ms_rpc_astream *st);
/* Cancels the call (any thread): on_end follows with CANCELLED unless it came already. */
void ms_rpc_astream_cancel(ms_rpc_astream *st);
/* After on_end only. NULL is fine. */
void ms_rpc_astream_free(ms_rpc_astream *st);
