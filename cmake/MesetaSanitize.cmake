# -DMESETA_SANITIZE=address,undefined instruments every target.
set(MESETA_SANITIZE "" CACHE STRING "Comma-separated sanitizers (e.g. address,undefined)")
if(MESETA_SANITIZE)
  add_compile_options(-fsanitize=${MESETA_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${MESETA_SANITIZE})
endif()
