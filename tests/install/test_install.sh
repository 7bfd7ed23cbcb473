#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# usage: test_install.sh BUILD_DIR SOURCE_DIR CC CMAKE LIBDIR [SANITIZER_FLAGS]
# Installs BUILD_DIR into a temporary prefix, checks the installed files, builds tests/install/
# hello.c against the package with pkg-config (shared) and find_package(loki) (shared and
# static), and runs all three against the installed lokid. Exit 77 (skip) without pkg-config.
set -euo pipefail
build=$1 src=$2 cc=$3 cmake=$4 libdir=$5 san=${6:-}
command -v pkg-config >/dev/null || { echo "pkg-config not found: skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loki-install-test.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
p=$tmp/prefix

echo "== cmake --install $build --prefix $p"
"$cmake" --install "$build" --prefix "$p" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
for f in bin/lokid bin/loki "$libdir/libloki_client.so" "$libdir/libloki_client.a" \
    include/loki/client.h include/loki/proto.h include/loki/error.h \
    "$libdir/pkgconfig/loki-client.pc" "$libdir/cmake/loki/lokiConfig.cmake" \
    "$libdir/cmake/loki/lokiConfigVersion.cmake" "$libdir/cmake/loki/lokiTargets.cmake" \
    share/loki/systemd/lokid.service share/loki/tools/import_loki.py \
    share/loki/examples/traffic_analysis_shares.yaml; do
    [ -e "$p/$f" ] || fail "not installed: $f"
done
# every installed header compiles on its own, with only the installed include folder
for h in "$p"/include/loki/*.h; do
    echo "#include <loki/$(basename "$h")>" |
        "$cc" -std=gnu11 -Wall -Wextra -Werror -fsyntax-only -I"$p/include" -x c - ||
        fail "installed header $h does not compile on its own"
done
# the installed loki finds the installed libloki_client (RPATH), not the build tree's
env -u LD_LIBRARY_PATH "$p/bin/loki" help >/dev/null || fail "installed loki does not run"
used=$(ldd "$p/bin/loki" | awk '/libloki_client/ {print $3}')
[ "$(readlink -f "$used")" = "$(readlink -f "$p/$libdir/libloki_client.so.0")" ] ||
    fail "installed loki uses '$used', not $p/$libdir/libloki_client.so.0"

# `loki topology import-loki` runs the installed importer, not the source tree's
if command -v python3 >/dev/null; then
    env -u LOKI_IMPORT_LOKI "$p/bin/loki" topology import-loki --help >"$tmp/imp.out" ||
        fail "installed loki topology import-loki --help"
    grep -q "import_loki.py" "$tmp/imp.out" || fail "import-loki --help: $(cat "$tmp/imp.out")"
fi

echo "== pkg-config (shared)"
export PKG_CONFIG_PATH=$p/$libdir/pkgconfig
pkg-config --modversion loki-client
# shellcheck disable=SC2046
"$cc" -std=gnu11 -Wall -Wextra -Werror $san -o "$tmp/hello_pc" "$src/tests/install/hello.c" \
    $(pkg-config --cflags --libs loki-client) -Wl,-rpath,"$p/$libdir"

echo "== find_package(loki) (shared and static)"
mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(hello C)
find_package(loki 0.1 REQUIRED)
add_executable(hello_shared $src/tests/install/hello.c)
target_link_libraries(hello_shared PRIVATE loki::client)
add_executable(hello_static $src/tests/install/hello.c)
target_link_libraries(hello_static PRIVATE loki::client_static)
CM
"$cmake" -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$p" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_BUILD_TYPE=Debug \
    >"$tmp/proj.log" 2>&1 || { cat "$tmp/proj.log"; fail "find_package(loki) configure"; }
"$cmake" --build "$tmp/proj/build" >>"$tmp/proj.log" 2>&1 ||
    { cat "$tmp/proj.log"; fail "find_package(loki) build"; }
ldd "$tmp/proj/build/hello_static" | grep -q loki_client && fail "hello_static links the .so"

echo "== run against the installed lokid"
mkfifo "$tmp/ready"
"$p/bin/lokid" --topology "$src/tests/lokid/small.yaml" --socket "$tmp/s.sock" --quiet \
    --initial-demand 50 --ready-fd 3 3>"$tmp/ready" 2>"$tmp/lokid.log" &
pid=$!
ready=
read -r -t 30 ready <"$tmp/ready" || true
[ "$ready" = ready ] || { cat "$tmp/lokid.log"; fail "installed lokid not ready"; }
for b in "$tmp/hello_pc" "$tmp/proj/build/hello_shared" "$tmp/proj/build/hello_static"; do
    printf '%-14s ' "$(basename "$b")"
    "$b" "$tmp/s.sock" || fail "$(basename "$b") against lokid"
done
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ $rc -eq 0 ] || { cat "$tmp/lokid.log"; fail "installed lokid exited $rc after SIGTERM"; }
echo "PASS"
