#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The one entry point: ./build.sh [debug|release|asan|tsan] [test|bench|run|fmt|fmt-check|deps]...
#   (no action)  install missing Debian packages, configure and build into build/ (bin: build/bin)
#   test         ctest (labels unit+integration; LOKI_TEST_LABELS overrides)
#   bench        microbenchmarks, JSON into build/bench/
#   run          the newcomer tour on examples/traffic_analysis.yaml
#   fmt          clang-format -i over the tree; fmt-check fails on any difference
# Build types: debug (default) -> build/, release -> build-release/, asan -> build-asan/,
# tsan -> build-tsan/. LOKI_BUILD_DIR overrides the folder.
set -euo pipefail
cd "$(dirname "$0")"
top=$(pwd)

type=debug
actions=()
for a in "$@"; do
    case "$a" in
    debug | release | asan | tsan) type=$a ;;
    test | bench | run | fmt | fmt-check | deps | build) actions+=("$a") ;;
    -h | --help)
        sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build.sh: unknown argument '$a' (try --help)" >&2
        exit 2
        ;;
    esac
done

case $type in
debug) bdir=build; cmtype=Debug; san= ;;
release) bdir=build-release; cmtype=Release; san= ;;
asan) bdir=build-asan; cmtype=Debug; san=asan ;;
tsan) bdir=build-tsan; cmtype=Debug; san=tsan ;;
esac
bdir=${LOKI_BUILD_DIR:-$bdir}

# Debian packages the build, tests and tour need. Installed only when missing.
pkgs=(build-essential cmake pkg-config libuv1-dev libhwloc-dev libglpk-dev libmsgpack-dev
    libyaml-dev libcmocka-dev clang clang-format python3 python3-msgpack python3-pip
    python3-setuptools python3-wheel redis-server)
# the opt-in HTTP front door (actors/http_front.c: built only when the two libraries are
# found), its tests and the check of examples/k8s
pkgs+=(libmicrohttpd-dev libjansson-dev curl openssl python3-yaml)

deps() {
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "build.sh: installing ${missing[*]}"
    local sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cmake --build's output, shortened: the progress lines of real work ("[ 37%] Building C
# object ...", make; "[12/120] ...", ninja) at most one per 10 % step, none for targets that
# were already up to date; no "Scanning dependencies" or "Consolidate" chatter. Everything
# else (compiler warnings and errors, linker and CMake messages) passes through as it comes.
progress() {
    awk '
    /^(Scanning dependencies|Consolidate compiler generated)/ { next }
    {
        p = -1
        if (match($0, /^\[ *[0-9]+%\]/)) {
            p = substr($0, 2, RLENGTH - 3) + 0
        } else if (match($0, /^\[[0-9]+\/[0-9]+\]/)) {
            split(substr($0, 2, RLENGTH - 2), f, "/")
            p = f[2] > 0 ? int(100 * f[1] / f[2]) : 100
        }
        if (p < 0) {
            print
            fflush()
        } else if ($0 !~ /Built target/ && p >= next_p) {
            print
            fflush()
            next_p = (int(p / 10) + 1) * 10
        }
    }
    '
}

build() {
    deps || return
    # configure every time (cheap): picks up modules added since the last build
    cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=$cmtype -DLOKI_SANITIZE="$san" >/dev/null || return
    # pipefail: the pipeline fails with cmake's status (awk always succeeds)
    cmake --build "$bdir" -j"$(nproc)" -- --no-print-directory 2>&1 | progress || return
}

san_env() {
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    # hwloc's dlopen'ed plugins leak ~1 KB at hwloc_topology_destroy() (a hwloc bug that
    # LeakSanitizer cannot attribute once the plugin is unloaded): sanitizer runs go without
    # them, which only loses PCI GPU discovery, irrelevant for the sim backend
    export HWLOC_PLUGINS_BLACKLIST=${HWLOC_PLUGINS_BLACKLIST:-hwloc_gl,hwloc_opencl,hwloc_pci,hwloc_xml_libxml}
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
}

do_test() {
    san_env
    local labels=${LOKI_TEST_LABELS:-'unit|integration'}
    (cd "$bdir" && ctest --output-on-failure -L "$labels" -j"$(nproc)")
}

do_bench() {
    mkdir -p "$bdir/bench"
    local ran=0
    for b in "$bdir"/bin/bench_*; do
        [ -x "$b" ] || continue
        echo "== $(basename "$b")"
        "$b" --out "$bdir/bench" || exit 1
        ran=1
    done
    [ $ran -eq 1 ] || echo "build.sh: no benchmarks built"
}

do_run() {
    if [ -x tools/tour.sh ]; then
        LOKI_BUILD_DIR=$bdir tools/tour.sh
    else
        "$bdir/bin/loki" topology check examples/traffic_analysis.yaml
    fi
}

fmt_files() { git ls-files '*.c' '*.h' | grep -v '^tests/fuzz/corpus/'; }

[ ${#actions[@]} -eq 0 ] && actions=(build)
for a in "${actions[@]}"; do
    case $a in
    deps) deps ;;
    build) build ;;
    test) build || exit; do_test ;;
    bench) build || exit; do_bench ;;
    run) build || exit; do_run ;;
    fmt) fmt_files | xargs clang-format -i ;;
    fmt-check) fmt_files | xargs clang-format --dry-run -Werror ;;
    esac
done
