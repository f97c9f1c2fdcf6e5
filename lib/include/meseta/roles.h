/* Role names: a hierarchy written as a path, `eng/web/frontend`.
 *
 * A valid role is `*` (the default role: unreserved, or a framework with no role),
 * or one or more `/`-separated components where no component is empty, `.` or `..`,
 * starts with `-`, is `*`, or holds whitespace or a control byte; the whole name is
 * at most MS_ROLE_MAX_LEN bytes and neither starts nor ends with `/`.
 *
 * All functions only read their arguments; none allocates except ms_role_parent. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "meseta/error.h"

#define MS_ROLE_MAX_LEN 1024

/* 0 when valid; otherwise MS_INVALID_ARGUMENT naming the role and the rule it breaks. */
int ms_role_validate(const char *role, ms_error **err);
bool ms_role_is_valid(const char *role);

/* True when `ancestor` is a strict ancestor of `role` ("eng" of "eng/web", not of "eng"
 * nor of "engineering"). `*` is nobody's ancestor. Both are assumed valid. */
bool ms_role_is_ancestor(const char *ancestor, const char *role);
/* ms_role_is_ancestor || equal. */
bool ms_role_is_self_or_ancestor(const char *ancestor, const char *role);
/* Number of components: 1 for "eng", 3 for "eng/web/frontend", 0 for "*". */
size_t ms_role_depth(const char *role);
/* The parent ("eng/web" for "eng/web/frontend"), caller frees; NULL for a top-level
 * role or `*`. */
char *ms_role_parent(const char *role);
