/* The gRPC layer: servers that are tables of handlers, and clients, on gRPC core.
 *
 * Server model. A server hosts services given their protobuf-c descriptors and a
 * table of handlers (one ms_rpc_method row per method). Each method's call kind
 * (unary, server / client / bidi streaming) comes from the descriptor database.
 * One thread per server drives gRPC's completion queue and runs every handler
 * callback; callbacks must not block. Work that takes time is handed elsewhere
 * (ms_loop_post to the thread that owns the state) and answered later with
 * ms_rpc_call_send / ms_rpc_call_finish, which are safe from any thread.
 *
 * Every server also serves grpc.health.v1.Health and server reflection
 * (grpc.reflection.v1alpha and v1) from its descriptor database.
 *
 * Call lifetime. A call stays valid until its on_done callback has returned, then
 * the layer frees it. Code that uses a call from another thread takes a reference
 * (ms_rpc_call_ref) and drops it when done; after on_done, sends on a referenced
 * call fail harmlessly with CANCELLED.
 *
 * Messages. A request handed to a callback is borrowed: it is freed when the
 * callback returns, so long-lived state must copy what it needs. Messages given to
 * ms_rpc_call_send / ms_rpc_unary are serialized before the function returns and
 * stay the caller's.
 *
 * Errors. A callback that returns MS_ERR finishes its call with the error's status
 * code and message (this file's ms_rpc_call_finish_error is the one place errors
 * become statuses). Client calls turn a non-OK status into an ms_error with the
 * same code: the server's message as it is when the server sent the status, else
 * (no connection, no answer before the deadline, connection lost) a message that
 * names the target tried ("`10.0.0.5:5053`: failed to connect ..."). */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#include "meseta/descriptors.h"
#include "meseta/error.h"

typedef struct ms_rpc_server ms_rpc_server;
typedef struct ms_rpc_call ms_rpc_call;
typedef struct ms_rpc_channel ms_rpc_channel;
typedef struct ms_rpc_stream ms_rpc_stream;

/* Default cap on a received message (gRPC's own default is 4 MiB). */
#define MS_RPC_DEFAULT_MAX_MESSAGE (4 * 1024 * 1024)
/* Default cap on a call's client-stream messages held and not consumed (see
 * ms_rpc_call_hold). */
#define MS_RPC_DEFAULT_MAX_HELD 64

/* TLS from PEM files. On a server: cert+key are its identity; with ca_file, clients
 * must present a certificate signed by that CA (mutual TLS). On a client: ca_file
 * verifies the server; cert+key (optional) are the client's identity. */
typedef struct ms_rpc_tls {
  const char *cert_file;
  const char *key_file;
  const char *ca_file;
  /* Client only: the name to verify the server's certificate against, when the
   * target address is not that name (e.g. dialing 127.0.0.1 for "localhost"). */
  const char *server_name;
} ms_rpc_tls;

/* ---- server ---------------------------------------------------------------- */

typedef struct ms_rpc_method {
  const char *name; /* as in the .proto: "Subscribe" */
  /* The call started. Unary and server streaming: `req` is the request. Client and
   * bidi streaming: `req` is NULL and messages arrive through on_message. */
  int (*on_start)(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err);
  /* Client and bidi streaming: one message from the client. The next one is read
   * when this returns, unless the handler holds max_held_messages messages (see
   * ms_rpc_call_hold): a handler that hands messages to another thread holds each
   * one, so a client that sends faster than the owner consumes meets flow control. */
  int (*on_message)(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err);
  /* Client and bidi streaming: the client will send no more. */
  int (*on_half_close)(ms_rpc_call *call, ms_error **err);
  /* Everything queued with ms_rpc_call_send has been sent (flow control for
   * streams that produce more than they should queue). Optional. */
  void (*on_drain)(ms_rpc_call *call);
  /* The call is over: finished, cancelled by the client, past its deadline or cut
   * by shutdown. Drop every pointer to it here. Optional. */
  void (*on_done)(ms_rpc_call *call, bool cancelled);
  /* The row's own argument (ms_rpc_call_method_arg): one handler serving several
   * methods finds what differs without matching the method's name. */
  const void *arg;
} ms_rpc_method;

typedef struct ms_rpc_server_options {
  const char *const *listen; /* addresses: "0.0.0.0:7070", "127.0.0.1:0", "unix:/run/x.sock" */
  size_t n_listen;
  const ms_rpc_tls *tls;     /* NULL: plaintext */
  int64_t max_message_bytes; /* received and sent; 0: MS_RPC_DEFAULT_MAX_MESSAGE */
  size_t max_queued_sends;   /* per call; past it ms_rpc_call_send fails; 0: 1024 */
  size_t max_held_messages;  /* per call; client-stream messages held (ms_rpc_call_hold)
                                before the layer stops reading; 0: MS_RPC_DEFAULT_MAX_HELD */
  /* Share the listen ports with other sockets that ask for it (SO_REUSEPORT; and a
   * unix socket's file is replaced even if a server answers there). Off: a port in
   * use fails ms_rpc_server_new, naming the address. */
  bool reuse_port;
} ms_rpc_server_options;

/* Creates a server and binds its addresses (so a port-0 address has its port
 * chosen here). It serves nothing until ms_rpc_server_start. An address it cannot
 * listen on fails it with a message naming the address and why ("listen address
 * `127.0.0.1:5050`: in use ..."; errnum EADDRINUSE then). */
ms_rpc_server *ms_rpc_server_new(const ms_rpc_server_options *opts, ms_error **err);

/* Adds descriptor files (a serialized FileDescriptorSet) for services beyond
 * libmeseta's own. The bytes are copied. Before ms_rpc_server_start only. */
int ms_rpc_server_add_descriptors(ms_rpc_server *srv, const uint8_t *set, size_t len, ms_error **err);

/* Hosts a service. `methods` (n rows, copied) may omit methods: calls to those get
 * UNIMPLEMENTED. `userdata` is handed back by ms_rpc_call_userdata. The service
 * starts SERVING on health. Before ms_rpc_server_start only. */
int ms_rpc_server_add_service(ms_rpc_server *srv, const ProtobufCServiceDescriptor *desc,
                              const ms_rpc_method *methods, size_t n, void *userdata, ms_error **err);

/* Starts serving on the server's own thread. */
int ms_rpc_server_start(ms_rpc_server *srv, ms_error **err);

/* The i-th bound address as a dialable target ("127.0.0.1:43567", "unix:/x");
 * NULL past the end. Owned by the server. */
const char *ms_rpc_server_address(const ms_rpc_server *srv, size_t i);

/* Sets a service's health ("" is the server as a whole); Watch streams see the
 * change. Thread-safe. */
void ms_rpc_server_set_health(ms_rpc_server *srv, const char *service, bool serving);

/* Graceful shutdown: stops accepting calls, lets calls in flight finish for up to
 * grace_ms, then cancels the rest; returns when the server thread has ended.
 * Health turns NOT_SERVING first. Thread-safe; later calls return at once. */
void ms_rpc_server_shutdown(ms_rpc_server *srv, int64_t grace_ms);

/* Shuts down (grace 0) if still running, waits until every ms_rpc_call_ref has
 * been dropped, and frees. NULL is fine. */
void ms_rpc_server_free(ms_rpc_server *srv);

/* The server's descriptor database (read-only). */
const ms_descdb *ms_rpc_server_descdb(const ms_rpc_server *srv);

/* ---- a call, on the server side ------------------------------------------- */

/* Queues a message (serialized now). Thread-safe. Fails with CANCELLED once the
 * call is over, and with RESOURCE_EXHAUSTED when max_queued_sends are waiting. */
int ms_rpc_call_send(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err);
/* Queues a message already encoded: `head` (copied) then the `len` bytes at `data`,
 * which are not copied: they must stay unchanged until release(arg), which the layer
 * calls exactly once (from any thread, also when this fails) when it is done with
 * them. For big answers shared by many calls. Thread-safe; fails as ms_rpc_call_send. */
int ms_rpc_call_send_bytes(ms_rpc_call *call, const uint8_t *head, size_t head_len, const uint8_t *data,
                           size_t len, void (*release)(void *arg), void *arg, ms_error **err);

/* Ends the call with a status after what is queued has been sent. Thread-safe;
 * only the first finish counts. `message` may be NULL. */
void ms_rpc_call_finish(ms_rpc_call *call, ms_status code, const char *message);
/* Ends the call with err's code and message (OK when err is NULL). */
void ms_rpc_call_finish_error(ms_rpc_call *call, const ms_error *err);
/* Unary convenience: send `resp` and finish OK. */
int ms_rpc_call_reply(ms_rpc_call *call, const ProtobufCMessage *resp, ms_error **err);

/* Flow control for client and bidi streams. Called in on_message: this message was
 * handed on (e.g. copied and posted to the owner thread) and is not consumed when
 * on_message returns. While max_held_messages of a call's messages are held, the
 * layer reads no more of its stream (the client's sends then block on HTTP/2 flow
 * control); ms_rpc_call_consumed, once per hold, from any thread and also after the
 * call is over, says one was consumed and resumes reading. Thread-safe. */
void ms_rpc_call_hold(ms_rpc_call *call);
void ms_rpc_call_consumed(ms_rpc_call *call);

void ms_rpc_call_ref(ms_rpc_call *call);
void ms_rpc_call_unref(ms_rpc_call *call);

/* The service's userdata, and a per-call slot the handler may use. */
void *ms_rpc_call_userdata(const ms_rpc_call *call);
void *ms_rpc_call_data(const ms_rpc_call *call);
void ms_rpc_call_set_data(ms_rpc_call *call, void *data);

/* "/pkg.Service/Method". Owned by the call. */
const char *ms_rpc_call_method(const ms_rpc_call *call);
/* The `arg` of the method's row (NULL for the catch-all of unknown methods). */
const void *ms_rpc_call_method_arg(const ms_rpc_call *call);
/* Milliseconds left before the client's deadline; INT64_MAX without one. */
int64_t ms_rpc_call_deadline_ms(const ms_rpc_call *call);
/* Whether the call is over (client cancelled, deadline passed, or finished). */
bool ms_rpc_call_is_done(const ms_rpc_call *call);
/* The first value of request metadata `key` (lowercase), NULL if absent. Owned
 * by the call. */
const char *ms_rpc_call_metadata(ms_rpc_call *call, const char *key);
/* The client's authenticated identity from its TLS certificate (the common name,
 * else the first subject alternative name); NULL without one. Owned by the call. */
const char *ms_rpc_call_peer_identity(ms_rpc_call *call);
/* The peer's address ("ipv4:127.0.0.1:5000"). Owned by the call. */
const char *ms_rpc_call_peer(ms_rpc_call *call);

/* ---- client ------------------------------------------------------------------ */

typedef struct ms_rpc_channel_options {
  const ms_rpc_tls *tls;      /* NULL: plaintext */
  int64_t max_message_bytes;  /* 0: MS_RPC_DEFAULT_MAX_MESSAGE */
  int64_t initial_backoff_ms; /* first reconnect backoff; 0: 200 ms */
  int64_t max_backoff_ms;     /* 0: 10 s */
  int64_t connect_timeout_ms; /* the least time one connection attempt (TCP, TLS and
                                 HTTP/2 handshakes) is given; 0: 20 s */
  bool gzip;                  /* compress requests with gzip */
} ms_rpc_channel_options;

/* A channel to `target` ("host:port", "unix:/path", "dns:///name:port"). It
 * connects lazily and reconnects with backoff by itself. Thread-safe. */
ms_rpc_channel *ms_rpc_channel_new(const char *target, const ms_rpc_channel_options *opts, ms_error **err);
void ms_rpc_channel_free(ms_rpc_channel *ch);
const char *ms_rpc_channel_target(const ms_rpc_channel *ch);

/* Waits until the channel is connected; UNAVAILABLE with the target on timeout. */
int ms_rpc_channel_wait_ready(ms_rpc_channel *ch, int64_t timeout_ms, ms_error **err);

typedef struct ms_rpc_call_options {
  int64_t timeout_ms;          /* 0: no deadline */
  bool wait_for_ready;         /* queue while the channel is down, instead of failing */
  const char *const *metadata; /* key, value, key, value, ..., NULL */
} ms_rpc_call_options;

/* A unary call. On OK, *ret_resp is a message of type resp_desc that the caller
 * frees with protobuf_c_message_free_unpacked(msg, NULL). `opts` may be NULL. */
int ms_rpc_unary(ms_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, const ms_rpc_call_options *opts,
                 ProtobufCMessage **ret_resp, ms_error **err);

/* A streaming call of any kind. For server streaming, pass the request as
 * `first` (it is sent and the sending side closed); otherwise NULL. The stream's
 * functions block; one thread may send while another receives. */
ms_rpc_stream *ms_rpc_stream_open(ms_rpc_channel *ch, const char *method, const ProtobufCMessage *first,
                                  const ms_rpc_call_options *opts, ms_error **err);
int ms_rpc_stream_send(ms_rpc_stream *s, const ProtobufCMessage *msg, ms_error **err);
int ms_rpc_stream_close_send(ms_rpc_stream *s, ms_error **err);
/* Returns 1 with a message (freed by the caller as in ms_rpc_unary), 0 at the end
 * of the stream, MS_ERR if the call failed (the error carries the status). */
int ms_rpc_stream_recv(ms_rpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret_msg,
                       ms_error **err);
/* Waits for the call's status: 0 for OK, else MS_ERR with it. */
int ms_rpc_stream_finish(ms_rpc_stream *s, ms_error **err);
/* Cancels the call (thread-safe): pending and later operations fail with CANCELLED. */
void ms_rpc_stream_cancel(ms_rpc_stream *s);
/* Cancels if unfinished, then frees. NULL is fine. */
void ms_rpc_stream_free(ms_rpc_stream *s);

/* "/pkg.Service/Method" for a method of a protobuf-c service descriptor; the
 * result is the caller's. */
char *ms_rpc_method_path(const ProtobufCServiceDescriptor *desc, const char *method);
