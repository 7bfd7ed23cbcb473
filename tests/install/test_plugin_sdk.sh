#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# usage: test_plugin_sdk.sh BUILD_DIR SOURCE_DIR CC CMAKE LIBDIR
# The backend plugin SDK as a plugin author meets it: installs BUILD_DIR into a temporary
# prefix, builds the installed example plugin (share/loki/examples/plugin/echo_backend.c) out
# of tree twice, with `pkg-config --cflags loki-backend` and with find_package(loki) +
# loki::backend, checks that neither .so needs a Loki symbol (the worker exports none), then
# serves both through the installed lokid (a detect -> classify pipeline each) and checks the
# result tree with the Python client: every classify leaf answers for the 100-byte piece its
# own parent cut. Exit 77 (skip) without pkg-config, nm or a python3 with msgpack.
set -euo pipefail
build=$1 src=$2 cc=$3 cmake=$4 libdir=$5
command -v pkg-config >/dev/null || { echo "pkg-config not found: skipped"; exit 77; }
command -v nm >/dev/null || { echo "nm not found: skipped"; exit 77; }
py=
for c in /usr/bin/python3 python3; do
    if command -v "$c" >/dev/null && "$c" -c "import msgpack" 2>/dev/null; then py=$c; break; fi
done
[ -n "$py" ] || { echo "no python3 with msgpack: skipped"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loki-plugin-sdk.XXXXXX")
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
for f in include/loki/backend.h include/loki/limits.h include/loki/rng.h \
    "$libdir/pkgconfig/loki-backend.pc" share/loki/examples/plugin/echo_backend.c; do
    [ -e "$p/$f" ] || fail "not installed: $f"
done
# the SDK headers build with only themselves, in strict ISO C and in C++ (plugins in C++)
for std in c99 c11 gnu11; do
    echo "#include <loki/backend.h>" |
        "$cc" -std=$std -pedantic -Wall -Wextra -Wshadow -Werror -fsyntax-only -I"$p/include" -x c - ||
        fail "loki/backend.h does not compile with -std=$std -pedantic"
done
if command -v c++ >/dev/null; then
    echo "#include <loki/backend.h>" |
        c++ -std=c++11 -pedantic -Wall -Wextra -Wshadow -Werror -fsyntax-only -I"$p/include" -x c++ - ||
        fail "loki/backend.h does not compile as C++11"
fi

# the plugin's source, copied away from the source tree
mkdir -p "$tmp/plugin"
cp "$p/share/loki/examples/plugin/echo_backend.c" "$tmp/plugin/"

echo "== pkg-config --cflags loki-backend"
export PKG_CONFIG_PATH=$p/$libdir/pkgconfig
pkg-config --modversion loki-backend
[ -z "$(pkg-config --libs loki-backend)" ] || fail "loki-backend.pc names libraries"
# shellcheck disable=SC2046
"$cc" -std=gnu11 -Wall -Wextra -Werror $(pkg-config --cflags loki-backend) -shared -fPIC \
    -o "$tmp/echo_pc.so" "$tmp/plugin/echo_backend.c" || fail "pkg-config build"

echo "== find_package(loki) + loki::backend"
mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(echo_plugin C)
find_package(loki 0.1 REQUIRED)
add_library(echo_cmake MODULE $tmp/plugin/echo_backend.c)
target_link_libraries(echo_cmake PRIVATE loki::backend)
set_target_properties(echo_cmake PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden)
CM
"$cmake" -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$p" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" -DCMAKE_BUILD_TYPE=Debug \
    >"$tmp/proj.log" 2>&1 || { cat "$tmp/proj.log"; fail "find_package(loki) configure"; }
"$cmake" --build "$tmp/proj/build" >>"$tmp/proj.log" 2>&1 ||
    { cat "$tmp/proj.log"; fail "find_package(loki) build"; }
cmake_so=$tmp/proj/build/echo_cmake.so
[ -e "$cmake_so" ] || fail "no $cmake_so"

# a plugin is dlopened into a worker that exports nothing: no Loki symbol may be left to
# resolve, also for the SDK's helpers (a plugin drawing fan-outs as the sim backend does), and
# the table's getter is exported (even when built with -fvisibility=hidden)
cat >"$tmp/plugin/helpers.c" <<'C'
#include <loki/backend.h>
uint32_t draw(const struct loki_backend_config *cfg, uint64_t *rng)
{
    return loki_fanout_draw(rng, cfg->fanout_mean[0], cfg->fanout_dist[0]) +
           (uint32_t)(loki_rng_uniform(rng) * 2) + (loki_backend_arg(cfg, "model") != 0);
}
C
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags loki-backend) -shared -fPIC \
    -o "$tmp/helpers.so" "$tmp/plugin/helpers.c" -lm || fail "helpers build"
for so in "$tmp/echo_pc.so" "$cmake_so" "$tmp/helpers.so"; do
    undef=$(nm -D --undefined-only "$so" | awk '$NF ~ /^loki/ {print $NF}')
    [ -z "$undef" ] || fail "$(basename "$so") needs Loki symbols: $undef"
done
for so in "$tmp/echo_pc.so" "$cmake_so"; do
    nm -D --defined-only "$so" | grep -qw loki_backend_v2_get ||
        fail "$(basename "$so") does not export loki_backend_v2_get"
done

echo "== serve both through the installed lokid"
pipeline() { # NAME SO
    cat <<YAML
  - name: $1
    slo_ms: 2000
    tasks:
      - name: detect
        input: raw bytes, cut into 100-byte pieces
        children: [classify]
        variants:
          - {name: det, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8], latency_ms: [1, 2],
             backend: $2, fanout: {classify: {mean: 3, dist: constant}}}
      - name: classify
        variants:
          - {name: cls, accuracy: 90, startup_ms: 1, batch_sizes: [1, 8], latency_ms: [1, 2],
             backend: $2}
YAML
}
{
    echo "gpus: {count: 8, memory_mb: 16384}"
    echo "planner: {interval_ms: 500, min_dwell_s: 600}"
    echo "pipelines:"
    pipeline echo_pc "$tmp/echo_pc.so"
    pipeline echo_cmake "$cmake_so"
} >"$tmp/topology.yaml"
"$p/bin/loki" topology check "$tmp/topology.yaml" >/dev/null || fail "topology check"
mkfifo "$tmp/ready"
"$p/bin/lokid" --topology "$tmp/topology.yaml" --socket "$tmp/s.sock" --quiet \
    --initial-demand 20 --ready-fd 3 3>"$tmp/ready" 2>"$tmp/lokid.log" &
pid=$!
ready=
read -r -t 30 ready <"$tmp/ready" || true
[ "$ready" = ready ] || { cat "$tmp/lokid.log"; fail "installed lokid not ready"; }

PYTHONPATH=$src/python timeout 30 "$py" - "$tmp/s.sock" <<'PY' || { cat "$tmp/lokid.log"; fail "result tree"; }
import re
import sys

from loki_client import Client

# 350 bytes: three whole 100-byte pieces with different sums, then 50 bytes no piece takes
payload = bytes((i * 7 + 3) % 251 for i in range(350))
pieces = sorted(sum(payload[k:k + 100]) for k in range(0, 300, 100))
assert len(set(pieces)) == 3, pieces
with Client(sys.argv[1], timeout=20) as c:
    for name in ("echo_pc", "echo_cmake"):
        r = c.infer(name, payload)
        assert r.status == "ok", (name, r.status, r.error)
        assert len(r.result) == 1, (name, r.result)
        root = r.result[0]
        assert (root.task, root.variant, root.status) == ("detect", "det", "ok"), root
        want = b"det sum=%d len=350" % sum(payload)
        assert root.output == want, (name, root.output, want)
        sums = []
        for leaf in root.children:
            assert (leaf.task, leaf.variant, leaf.status) == ("classify", "cls", "ok"), leaf
            assert leaf.parent is root and not leaf.children
            m = re.fullmatch(rb"cls sum=(\d+) len=100", leaf.output)
            assert m, (name, leaf.output)
            sums.append(int(m.group(1)))
        assert sorted(sums) == pieces, (name, sums, pieces)
        assert sorted(r.outputs) == sorted(leaf.output for leaf in root.children), r.outputs
        print("%-10s ok: %s, leaves %s" % (name, root.output.decode(), sorted(sums)))
PY
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ $rc -eq 0 ] || { cat "$tmp/lokid.log"; fail "installed lokid exited $rc after SIGTERM"; }
echo "PASS"
