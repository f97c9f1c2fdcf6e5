/* The Echo test service (tests/proto/meseta/test/v1/echo.proto) on the gRPC layer:
 * every call kind, status codes, deadlines, cancellation, identity and health. */
#pragma once

#include "meseta/rpc.h"

/* Adds the test descriptors and the Echo service to a server not yet started. */
int echo_service_add(ms_rpc_server *srv, ms_error **err);

/* Calls that ended normally / cancelled since the process started. */
unsigned long echo_calls_completed(void);
unsigned long echo_calls_cancelled(void);
