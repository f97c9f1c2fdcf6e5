/* Sandbox files: AgentOperator.ListFiles and ReadFile (proto/meseta/v1/agent_operator.proto).
 *
 * A task's sandbox is <work_dir>/sandboxes/<framework_id>/<task_id>/. Paths are resolved
 * by the kernel beneath the sandbox (openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS):
 * `..` past the root, absolute paths and symbolic links leading outside are refused, links
 * that stay inside are followed. No file descriptor outlives a call.
 *
 * Threads. Nothing here touches the agent's state: the functions need only the work dir,
 * keep no state between calls and run on any thread. The server runs them on a small pool
 * (ctx->files), never on its own thread: walks and reads wait on the disk.
 *
 * Ownership. Requests are borrowed. A response (*ret_resp) is a heap message that the
 * caller frees with protobuf_c_message_free_unpacked(&resp->base, NULL). */
#pragma once

#include <stddef.h>

#include "meseta/error.h"
#include "meseta/rpc.h"
#include "meseta/v1/agent_operator.pb-c.h"

#include "agent.h"

#define AGENT_FILES_DEFAULT_PAGE 500
#define AGENT_FILES_MAX_PAGE 5000
#define AGENT_FILES_MAX_PAGE_BYTES (3 * 1024 * 1024) /* a page ends before its answer passes this */
#define AGENT_FILES_DEFAULT_READ (64 * 1024)
#define AGENT_FILES_MAX_READ (1024 * 1024)
#define AGENT_FILES_WORKERS 2      /* sandbox reads at once */
#define AGENT_FILES_MAX_QUEUED 256 /* past it: RESOURCE_EXHAUSTED */

/* ListFiles: one page of a sandbox directory's entries, sorted by name. */
int agent_files_list(const char *work_dir, const Meseta__V1__ListFilesRequest *req,
                     Meseta__V1__ListFilesResponse **ret_resp, ms_error **err);

/* ReadFile: up to `length` bytes of a regular file from `offset`, its size and eof. */
int agent_files_read(const char *work_dir, const Meseta__V1__ReadFileRequest *req,
                     Meseta__V1__ReadFileResponse **ret_resp, ms_error **err);

/* What AgentOperator's handlers use (borrowed: it must outlive the server). The file
 * methods need only work_dir; KillTask posts to the agent's loop (a NULL agent: KillTask
 * answers UNAVAILABLE). */
typedef struct agent_operator_ctx {
  const char *work_dir;
  agent *a;
  ms_loop *loop;
  /* The server's TLS: cert+key its identity; with ca, clients must present a certificate
   * signed by it (mutual TLS). NULL: plaintext. */
  const ms_rpc_tls *tls;
  /* ListFiles and ReadFile run here (owned; agent_operator_serve makes it,
   * agent_operator_free frees it). NULL: on the server thread. */
  struct ms_workq *files;
} agent_operator_ctx;

/* KillTask (agent-operator.c): checks the ids here, does the rest on the agent's loop. */
int agent_operator_kill(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err);

/* Hosts meseta.v1.AgentOperator on srv. */
int agent_files_add_service(ms_rpc_server *srv, const agent_operator_ctx *ctx, ms_error **err);

/* A started server on the `n` addresses of `listen` hosting AgentOperator (and health and
 * reflection). The caller shuts it down and frees it (ms_rpc_server_free); work_dir is
 * borrowed as above. */
ms_rpc_server *agent_operator_serve(agent_operator_ctx *ctx, const char *const *listen, size_t n,
                                    ms_error **err);
/* Frees the server (after it is shut down) and then ctx's pool. */
void agent_operator_free(ms_rpc_server *srv, agent_operator_ctx *ctx);
