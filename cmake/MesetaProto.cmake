# ms_proto_library(<target> ROOT <dir> PROTOS <rel paths...> [DESCRIPTOR_SYMBOL <c name>])
#
# Compiles .proto files (paths relative to ROOT) with protoc-c into
# ${CMAKE_BINARY_DIR}/gen, builds them as a static library <target>, and, with
# DESCRIPTOR_SYMBOL, embeds a FileDescriptorSet (with every import) as a C array:
# the streaming kinds of methods and server reflection both come from it.
find_program(MS_PROTOC protoc REQUIRED)
find_program(MS_PROTOC_GEN_C protoc-gen-c REQUIRED)
set(MS_PROTO_GEN_DIR ${CMAKE_BINARY_DIR}/gen)
set(MS_PROTO_SYSTEM_INCLUDE /usr/include)
file(MAKE_DIRECTORY ${MS_PROTO_GEN_DIR})

function(ms_proto_library target)
  cmake_parse_arguments(P "" "ROOT;DESCRIPTOR_SYMBOL" "PROTOS;LINK" ${ARGN})
  set(srcs)
  set(abs)
  foreach(rel ${P_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    set(c ${MS_PROTO_GEN_DIR}/${base}.pb-c.c)
    set(h ${MS_PROTO_GEN_DIR}/${base}.pb-c.h)
    if(EXISTS ${P_ROOT}/${rel})
      set(src ${P_ROOT}/${rel})
      set(inc ${P_ROOT})
    else()
      set(src ${MS_PROTO_SYSTEM_INCLUDE}/${rel})
      set(inc ${MS_PROTO_SYSTEM_INCLUDE})
    endif()
    add_custom_command(OUTPUT ${c} ${h}
      COMMAND ${MS_PROTOC} --plugin=protoc-gen-c=${MS_PROTOC_GEN_C}
              --c_out=${MS_PROTO_GEN_DIR} -I${inc} -I${P_ROOT} -I${MS_PROTO_SYSTEM_INCLUDE} ${src}
      DEPENDS ${src} VERBATIM)
    list(APPEND srcs ${c})
    list(APPEND abs ${src})
  endforeach()
  if(P_DESCRIPTOR_SYMBOL)
    set(desc ${MS_PROTO_GEN_DIR}/${P_DESCRIPTOR_SYMBOL}.desc)
    set(descc ${MS_PROTO_GEN_DIR}/${P_DESCRIPTOR_SYMBOL}.c)
    add_custom_command(OUTPUT ${desc}
      COMMAND ${MS_PROTOC} --include_imports --descriptor_set_out=${desc}
              -I${P_ROOT} -I${MS_PROTO_SYSTEM_INCLUDE} ${abs}
      DEPENDS ${abs} VERBATIM)
    add_custom_command(OUTPUT ${descc}
      COMMAND ${CMAKE_COMMAND} -DIN=${desc} -DOUT=${descc} -DSYMBOL=${P_DESCRIPTOR_SYMBOL}
              -P ${CMAKE_SOURCE_DIR}/cmake/MesetaEmbed.cmake
      DEPENDS ${desc} ${CMAKE_SOURCE_DIR}/cmake/MesetaEmbed.cmake VERBATIM)
    list(APPEND srcs ${descc})
  endif()
  add_library(${target} STATIC ${srcs})
  target_include_directories(${target} PUBLIC ${MS_PROTO_GEN_DIR})
  target_link_libraries(${target} PUBLIC PkgConfig::PROTOBUFC ${P_LINK})
  # Generated code is not ours to warn about.
  target_compile_options(${target} PRIVATE -w)
endfunction()
