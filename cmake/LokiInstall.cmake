# SPDX-License-Identifier: Apache-2.0
# `cmake --install`: lokid, loki, libloki_client (shared + static) with its headers, a
# pkg-config file (loki-client.pc, relocatable) and a CMake package (find_package(loki):
# loki::client, loki::client_static); the backend plugin SDK (loki/backend.h and what it
# includes, loki-backend.pc, loki::backend; headers only); the systemd unit, example
# topologies and the example plugin's source under share/loki/. Included at the end of the
# top-level CMakeLists.txt so that every target exists.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(NOT TARGET loki_client OR NOT TARGET loki_client_static)
    message(STATUS "loki: no client library; install rules skipped")
    return()
endif()

# The client's include directories are source paths: exported, they become the installed
# include/ (the headers are copied flat into include/loki/ below).
foreach(t loki_client loki_client_static)
    get_target_property(_inc ${t} INTERFACE_INCLUDE_DIRECTORIES)
    set_target_properties(${t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
        "$<BUILD_INTERFACE:${_inc}>;$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
endforeach()
set_target_properties(loki_client PROPERTIES EXPORT_NAME client)
set_target_properties(loki_client_static PROPERTIES EXPORT_NAME client_static)
set(_loki_exported loki_client loki_client_static)
if(TARGET loki_backend)
    # the plugin SDK: its build-tree folders become the installed include/ (headers below)
    set_target_properties(loki_backend PROPERTIES EXPORT_NAME backend)
    target_include_directories(loki_backend INTERFACE
                               $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    list(APPEND _loki_exported loki_backend)
endif()

install(TARGETS ${_loki_exported} EXPORT lokiTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# client.h includes loki/proto.h; loki/error.h has loki_strerror() and the LOKI_E* codes
install(FILES ${CMAKE_SOURCE_DIR}/runtime/client/loki/client.h
              ${CMAKE_SOURCE_DIR}/runtime/proto/loki/proto.h
              ${CMAKE_SOURCE_DIR}/runtime/common/loki/error.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loki)
# The plugin SDK: backend.h includes loki/limits.h and loki/rng.h (all inline: a plugin is
# dlopened into a worker that exports nothing, so it must link no Loki library).
if(TARGET loki_backend)
    install(FILES ${CMAKE_SOURCE_DIR}/runtime/worker/loki/backend.h
                  ${CMAKE_SOURCE_DIR}/runtime/common/loki/limits.h
                  ${CMAKE_SOURCE_DIR}/runtime/common/loki/rng.h
            DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loki)
endif()

# The executables. `loki` links libloki_client.so: find it next to itself once installed.
foreach(t lokid loki)
    if(TARGET ${t})
        set_target_properties(${t} PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
        install(TARGETS ${t} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    endif()
endforeach()

# pkg-config: prefix relative to the .pc file, so `cmake --install --prefix X` stays right.
file(RELATIVE_PATH LOKI_PC_RELPREFIX
     "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
set(LOKI_PC_LIBDIR ${CMAKE_INSTALL_LIBDIR})
set(LOKI_PC_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})
configure_file(${CMAKE_SOURCE_DIR}/runtime/client/loki-client.pc.in
               ${CMAKE_BINARY_DIR}/lib/pkgconfig/loki-client.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/lib/pkgconfig/loki-client.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET loki_backend)
    configure_file(${CMAKE_SOURCE_DIR}/runtime/worker/loki-backend.pc.in
                   ${CMAKE_BINARY_DIR}/lib/pkgconfig/loki-backend.pc @ONLY)
    install(FILES ${CMAKE_BINARY_DIR}/lib/pkgconfig/loki-backend.pc
            DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()

# CMake package: lokiConfig.cmake (hand-written), version file, exported targets.
set(LOKI_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/loki)
install(EXPORT lokiTargets NAMESPACE loki:: DESTINATION ${LOKI_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/lokiConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_SOURCE_DIR}/cmake/lokiConfig.cmake
              ${CMAKE_BINARY_DIR}/cmake/lokiConfigVersion.cmake
        DESTINATION ${LOKI_CMAKE_DIR})

# Deployment material: the unit (edit ExecStart for your prefix), example topologies, docs.
install(FILES ${CMAKE_SOURCE_DIR}/dist/systemd/lokid.service
        DESTINATION ${CMAKE_INSTALL_DATADIR}/loki/systemd)
install(FILES ${CMAKE_SOURCE_DIR}/examples/traffic_analysis.yaml
              ${CMAKE_SOURCE_DIR}/examples/traffic_analysis_shares.yaml
              ${CMAKE_SOURCE_DIR}/examples/h200x8.yaml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/loki/examples)
install(FILES ${CMAKE_SOURCE_DIR}/examples/plugin/echo_backend.c
        DESTINATION ${CMAKE_INSTALL_DATADIR}/loki/examples/plugin)
# `loki topology import-loki` runs it from here (share/loki/tools beside bin/)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/tools/import_loki.py
        DESTINATION ${CMAKE_INSTALL_DATADIR}/loki/tools)
install(FILES ${CMAKE_SOURCE_DIR}/docs/deploy.md ${CMAKE_SOURCE_DIR}/docs/operator.md
              ${CMAKE_SOURCE_DIR}/docs/protocol.md ${CMAKE_SOURCE_DIR}/docs/topology.md
              ${CMAKE_SOURCE_DIR}/docs/backend.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
