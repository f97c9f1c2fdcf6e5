/* Small file-system helpers shared by the agent and its runtime. */
#pragma once

#include "meseta/error.h"

/* mkdir -p: `path` and each missing parent, mode 0755; existing ones are fine. The
 * error names the directory that could not be made. */
int ms_mkdirs(const char *path, ms_error **err);
