# SPDX-License-Identifier: Apache-2.0
# loki_add_test(NAME SOURCES... LIBS ... LABELS ... [ARGS ...] [TIMEOUT s])
# One executable per test file; ctest is the one runner. Exit 77 means skipped. TIMEOUT (120 s
# by default) is four times longer in sanitizer builds.
function(loki_add_test name)
    cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
    add_executable(${name} ${T_SOURCES})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA loki_test_harness)
    add_test(NAME ${name} COMMAND ${name} ${T_ARGS} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    if(NOT T_LABELS)
        set(T_LABELS unit)
    endif()
    if(NOT T_TIMEOUT)
        set(T_TIMEOUT 120)
    endif()
    # sanitizers run the same work several times slower (TSan most): the limit catches hangs,
    # not slowness
    if(LOKI_SANITIZE)
        math(EXPR T_TIMEOUT "${T_TIMEOUT} * 4")
    endif()
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" SKIP_RETURN_CODE 77
                         TIMEOUT ${T_TIMEOUT}
                         ENVIRONMENT "LOKI_SOURCE_DIR=${CMAKE_SOURCE_DIR};LOKI_BINARY_DIR=${CMAKE_BINARY_DIR}")
endfunction()
