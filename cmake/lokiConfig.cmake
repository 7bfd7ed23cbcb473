# SPDX-License-Identifier: Apache-2.0
# find_package(loki) for the client library:
#   loki::client         libloki_client.so (headers <loki/client.h>, <loki/proto.h>, <loki/error.h>)
#   loki::client_static  libloki_client.a
include(CMakeFindDependencyMacro)
find_dependency(Threads)
include(${CMAKE_CURRENT_LIST_DIR}/lokiTargets.cmake)
