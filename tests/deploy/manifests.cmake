# The manifest check (issue 13): deploy/compose.yaml and `kubectl kustomize deploy/k8s`
# against the binaries' --help (tests/deploy/check-manifests.py). Fast, no Docker.
# Included by tests/deploy/CMakeLists.txt.
set(_mf_targets meseta-registry meseta-allocator meseta-master-api meseta-agent meseta-probe meseta-cli)
set(_mf_bins "")
foreach(t ${_mf_targets})
  if(NOT TARGET ${t})
    message(STATUS "manifest check: target ${t} missing, deploy_manifests_* not registered")
    return()
  endif()
  list(APPEND _mf_bins --bin $<TARGET_FILE:${t}>)
endforeach()

set(_mf_dir ${CMAKE_CURRENT_LIST_DIR})
add_test(NAME deploy_manifests_k8s
         COMMAND /usr/bin/python3 ${_mf_dir}/check-manifests.py --root ${CMAKE_SOURCE_DIR} --only k8s ${_mf_bins})
add_test(NAME deploy_manifests_compose
         COMMAND /usr/bin/python3 ${_mf_dir}/check-manifests.py --root ${CMAKE_SOURCE_DIR} --only compose ${_mf_bins})
# Edits a copy of deploy/ (a flag that does not exist, a wrong probe port, an unresolvable
# address, each of the issue's four problems...) and requires the check to name each.
add_test(NAME deploy_manifests_selftest
         COMMAND /usr/bin/python3 ${_mf_dir}/check-manifests-selftest.py --root ${CMAKE_SOURCE_DIR} ${_mf_bins})
set_tests_properties(deploy_manifests_k8s deploy_manifests_compose deploy_manifests_selftest PROPERTIES
  LABELS deploy TIMEOUT 300 ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
