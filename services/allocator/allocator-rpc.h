/* The rpc layer (allocator-rpc.c): registers AgentLink and Allocator on the server,
 * their calls' userdata being the service (borrowed; it outlives the server's calls). */
#pragma once

#include "meseta/error.h"
#include "meseta/rpc.h"

#include "alloc-svc-core.h"

int alloc_rpc_add(alloc_service *s, ms_rpc_server *srv, ms_error **err);
