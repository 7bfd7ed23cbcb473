#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The one entry point: ./build.sh [debug|release|asan|tsan] [test|bench|run|run-vision|fuzz|fmt|fmt-check|deps]...
#   (no action)  install missing Debian packages, configure and build into build/ (bin: build/bin)
#   test         ctest (labels unit+integration; LOKI_TEST_LABELS overrides)
#   bench        microbenchmarks, JSON into build/bench/
#   run          the newcomer tour on examples/traffic_analysis.yaml
#   run-vision   lokid serves examples/vision/vision.yaml on real (random-weight) TorchScript models
#   fuzz         the fuzz targets built with clang, libFuzzer and ASan+UBSan into build-fuzz/ (any
#                build type), each run LOKI_FUZZ_SECONDS (60) from its corpus (tests/fuzz/README.md)
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
    test | bench | run | run-vision | fuzz | fmt | fmt-check | deps | build) actions+=("$a") ;;
    -h | --help)
        sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//'
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
    libyaml-dev libjansson-dev libcmocka-dev clang clang-format python3 python3-msgpack python3-pip
    python3-setuptools python3-wheel redis-server
    # the torchscript backend (docs/vision.md): libtorch (CPU), JPEG and PNG decoding, and
    # Debian's torch and torchvision for the scripts that make its models
    libtorch-dev libturbojpeg0-dev libpng-dev python3-torch python3-torchvision)
# the opt-in HTTP front door (actors/http_front.c: built only when libmicrohttpd is found), its
# tests and the check of examples/k8s
pkgs+=(libmicrohttpd-dev curl openssl python3-yaml)

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

# Every tests/fuzz/fuzz_<name>.c for LOKI_FUZZ_SECONDS from corpus/<name> plus what earlier runs
# kept in build-fuzz/fuzz/<name>/ (new inputs go there; merging them into the committed corpus is
# a manual step). Each run prints its start and end coverage; a crash, leak, UBSan report or
# 10 s input stops it, leaves the input in build-fuzz/fuzz/crashes/ and fails the action.
do_fuzz() {
    deps || return
    local fdir=build-fuzz secs=${LOKI_FUZZ_SECONDS:-60} targets=() t
    cmake -S . -B "$fdir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DLOKI_SANITIZE=fuzz \
        -DLOKI_WITH_CUDA=OFF >/dev/null || return
    for t in tests/fuzz/fuzz_*.c; do
        t=$(basename "$t" .c)
        [ "$t" = fuzz_driver ] || targets+=("$t")
    done
    cmake --build "$fdir" -j"$(nproc)" --target "${targets[@]}" -- --no-print-directory 2>&1 |
        progress || return
    san_env
    mkdir -p "$fdir/fuzz/crashes"
    for t in "${targets[@]}"; do
        local name=${t#fuzz_} dict=()
        [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
        mkdir -p "$fdir/fuzz/$name"
        echo "== $t, ${secs} s"
        if ! "$fdir/tests/$t" -max_total_time="$secs" -timeout=10 "${dict[@]}" \
            -artifact_prefix="$fdir/fuzz/crashes/$name-" "$fdir/fuzz/$name" \
            "tests/fuzz/corpus/$name" >"$fdir/fuzz/$name.log" 2>&1; then
            tail -n 60 "$fdir/fuzz/$name.log"
            echo "build.sh: $t failed (log: $fdir/fuzz/$name.log)" >&2
            return 1
        fi
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$fdir/fuzz/$name.log" || true
    done
}

fmt_files() { git ls-files '*.c' '*.h' '*.cc' | grep -v '^tests/fuzz/corpus/'; }

[ ${#actions[@]} -eq 0 ] && actions=(build)
for a in "${actions[@]}"; do
    case $a in
    deps) deps ;;
    build) build ;;
    test) build || exit; do_test ;;
    bench) build || exit; do_bench ;;
    run) build || exit; do_run ;;
    fuzz) do_fuzz || exit ;;
    run-vision) build || exit; LOKI_BUILD_DIR=$bdir examples/vision/run.sh ;;
    fmt) fmt_files | xargs clang-format -i ;;
    fmt-check) fmt_files | xargs clang-format --dry-run -Werror ;;
    esac
done
