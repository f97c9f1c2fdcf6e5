/* Checks of an Operator mutation that need no cluster state: required fields, role
 * names, weights in range, machines named. Shared by master-api (before it forwards a
 * call) and the allocator (before its checks against its state), so both refuse the
 * same request with the same message.
 *
 * Field paths in messages start with the request's member of the call oneof of
 * Allocator.OperatorCallRequest (`update_weights.weight_infos[0].weight`).
 * Only reads its arguments. */
#pragma once

#include <protobuf-c/protobuf-c.h>

#include "meseta/error.h"

/* Weights are divisors of shares: an extreme one makes every other role's share round
 * to nothing (or overflow to infinity). Valid weights are in (0, MS_MAX_WEIGHT]. */
#define MS_MAX_WEIGHT 1e6

/* 0 when `req` (an Operator request message, e.g. UpdateWeightsRequest) passes;
 * INVALID_ARGUMENT naming the field otherwise. A request type without checks passes. */
int ms_operator_check(const ProtobufCMessage *req, ms_error **err);

/* The member of Allocator.OperatorCallRequest's `call` oneof whose type is `req_desc`;
 * NULL if none (the call is not a forwarded operator call). */
const ProtobufCFieldDescriptor *ms_operator_call_member(const ProtobufCMessageDescriptor *req_desc);
