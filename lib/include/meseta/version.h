/* The version every meseta binary reports (CMake's PROJECT_VERSION). */
#pragma once

/* A static string ("0.1.0"). */
const char *ms_version(void);
