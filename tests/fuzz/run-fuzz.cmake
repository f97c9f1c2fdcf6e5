# cmake -DFUZZER=bin -DCORPUS=repo/corpus -DWORK=dir -DSECONDS=n -P run-fuzz.cmake
# Runs a libFuzzer binary for SECONDS with a fresh writable corpus (WORK) first and the
# committed corpus (CORPUS) second, so the repository is never written to.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -max_len=8192
          -artifact_prefix=${WORK}/ -print_final_stats=1 ${WORK} ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); crash input under ${WORK}")
endif()
