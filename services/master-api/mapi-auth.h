/* Who is calling master-api: bearer tokens from a tokens file, or the verified client
 * certificate of mutual TLS; anonymous when neither (refused with --require-auth).
 *
 * The tokens file is JSON:
 *   {"tokens": [{"token": "…", "principal": "alice", "claims": {"roles": "a,b"}}]}
 * validated whole at load (errors name the entry, never the token). A reload
 * (SIGHUP) parses the file aside and swaps it in only if it is valid: a bad file
 * keeps the tokens in use.
 *
 * Threads: mapi_auth_call may run on any thread while mapi_auth_reload runs on
 * another (a read-write lock guards the table). Ownership: a mapi_auth is its
 * creator's (mapi_auth_free); principals returned are the caller's. */
#pragma once

#include <stdbool.h>

#include "meseta/error.h"
#include "meseta/rpc.h"
#include "meseta/v1/allocator.pb-c.h"

typedef struct mapi_auth mapi_auth;

/* tokens_file may be NULL (no bearer tokens: only mTLS or anonymous). Fails with
 * INVALID_ARGUMENT naming the file and the entry when the file is not valid. */
mapi_auth *mapi_auth_new(const char *tokens_file, bool require_auth, ms_error **err);
void mapi_auth_free(mapi_auth *a); /* NULL is fine */

/* Reads the tokens file again; on failure the old tokens stay. No file: 0. */
int mapi_auth_reload(mapi_auth *a, ms_error **err);

/* How many tokens are loaded. */
size_t mapi_auth_count(mapi_auth *a);
bool mapi_auth_required(const mapi_auth *a);

/* Authenticates a call: `authorization: Bearer <token>` metadata gives a
 * BEARER_TOKEN principal, a verified client certificate an MTLS one, neither
 * ANONYMOUS (UNAUTHENTICATED with require_auth). Both, naming different principals:
 * UNAUTHENTICATED. An unknown token: UNAUTHENTICATED, the token never echoed.
 * `a` may be NULL (no tokens, nothing required). *ret (name, method, claims; `via`
 * left empty) is the caller's (protobuf_c_message_free_unpacked). */
int mapi_auth_call(mapi_auth *a, ms_rpc_call *call, Meseta__V1__Principal **ret, ms_error **err);
