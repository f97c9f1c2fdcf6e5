# Warnings for every target; -Werror when CI is set in the environment or MESETA_WERROR=ON.
option(MESETA_WERROR "Treat warnings as errors" OFF)
if(DEFINED ENV{CI} AND NOT "$ENV{CI}" STREQUAL "" AND NOT "$ENV{CI}" STREQUAL "false")
  set(MESETA_WERROR ON)
endif()
# -Wno-missing-field-initializers: declarative tables (flags, methods) leave trailing
# fields zero on purpose, as git's commands[] does.
add_compile_options(-Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wshadow -Wformat=2
                    -Wstrict-prototypes -Wmissing-prototypes -Wvla -fno-strict-aliasing)
if(MESETA_WERROR)
  add_compile_options(-Werror)
endif()
