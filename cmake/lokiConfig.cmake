# SPDX-License-Identifier: Apache-2.0
# find_package(loki):
#   loki::client         libloki_client.so (headers <loki/client.h>, <loki/proto.h>, <loki/error.h>)
#   loki::client_static  libloki_client.a
#   loki::backend        the backend plugin SDK: <loki/backend.h>, headers only (a plugin is a
#                        MODULE library that links no Loki library; docs/backend.md)
include(CMakeFindDependencyMacro)
find_dependency(Threads)
include(${CMAKE_CURRENT_LIST_DIR}/lokiTargets.cmake)
