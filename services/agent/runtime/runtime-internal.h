/* Pieces of meseta-runtime shared between its files, not part of runtime_core's interface. */
#pragma once

#include "runtime.h"

/* Builds the container's filesystem and pivots into it. Runs in the container's init,
 * inside its new mount and pid namespaces; `mountpoint` is an empty host directory used as
 * the new root when the spec has no rootfs. */
int rt_mount_rootfs(const rt_spec *s, const char *mountpoint, ms_error **err);
/* Brings `lo` up in a new network namespace. */
int rt_net_loopback_up(ms_error **err);
