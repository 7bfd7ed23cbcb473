#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# scripts/gpu-check.sh: the GPU checks of the CUDA backend, for a machine with an NVIDIA GPU
# (sized for one H200, under 5 minutes). Builds a release tree (or uses a prebuilt bundle), runs
# the GPU tests, measures ms per batch against GPU share (100/50/25 %) for two variants alone
# under MPS (loki profile), both side by side at 50 % each under one MPS daemon, green-context
# resize latency, and lokid serving with two MPS workers of its own; writes a markdown report to
# $OUT/gpu-report.md (build/gpu-report.md without $OUT), step logs to $OUT/gpu-check-logs/.
#   scripts/gpu-check.sh         run the checks (GPU machine)
#   scripts/gpu-check.sh bundle  build here (no GPU needed) into build-gpu-bundle/: binaries, GPU
#                                tests and the shared libraries they need, for a GPU machine that
#                                lacks the build dependencies; the checks then use it
# env: OUT, LOKI_BUILD_DIR (default build-gpu-release), LOKI_GPU_BUNDLE (default
#      build-gpu-bundle), GPU (index, default 0), TOPOLOGY (default examples/h200x8.yaml)
# Every step has a timeout; MPS daemons started here (or by lokid here) are always stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

out_dir=${OUT:-$top/build}
mkdir -p "$out_dir"
report=$out_dir/gpu-report.md
bdir=${LOKI_BUILD_DIR:-$top/build-gpu-release}
bundle_dir=${LOKI_GPU_BUNDLE:-$top/build-gpu-bundle}
export PATH=$PATH:/usr/local/cuda/bin:/usr/local/nvidia/bin
# -O2: gcc 12 at -O3 reports a false maybe-uninitialized in shm/arena.c (-Werror)
release_flags=(-DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG")
gpu=${GPU:-0}
topo=${TOPOLOGY:-examples/h200x8.yaml}
v1=yolov5s         # detection-sized: 11 ms at batch 1
v2=efficientnet-b0 # classifier-sized: 4 ms at batch 1
batches=1,4,16
work=$(mktemp -d "${TMPDIR:-/tmp}/loki-gpu-check-XXXXXX")
mps_dir=
lokid_pid=
failed=0
finished=0
t_start=$(date +%s)

log() { printf '[gpu-check %3ss] %s\n' "$(($(date +%s) - t_start))" "$*" >&2; }
md() { printf '%s\n' "$*" >>"$report"; }

stop_mps() {
    if [ -n "$mps_dir" ]; then
        log "stopping the MPS daemon ($mps_dir)"
        echo quit | CUDA_MPS_PIPE_DIRECTORY=$mps_dir/pipe CUDA_MPS_LOG_DIRECTORY=$mps_dir/log \
            timeout 20 nvidia-cuda-mps-control || log "MPS quit failed"
        mps_dir=
    fi
}

# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    local rc=$?
    if [ -n "$lokid_pid" ]; then
        kill -INT "$lokid_pid" 2>/dev/null || true
        sleep 3
        kill -KILL "$lokid_pid" 2>/dev/null || true
    fi
    # daemons of a lokid that could not stop them itself (its run folders live under $work)
    for d in "$work"/loki-*/mps-*/pipe; do
        [ -d "$d" ] || continue
        echo quit | CUDA_MPS_PIPE_DIRECTORY=$d timeout 20 nvidia-cuda-mps-control || true
    done
    stop_mps
    # keep every step's log next to the report, for whoever reads it
    mkdir -p "$out_dir/gpu-check-logs"
    cp "$work"/*.log "$out_dir/gpu-check-logs/" 2>/dev/null || true
    cp "$work"/profiled-*.yaml "$out_dir/" 2>/dev/null || true # loki profile --out copies
    rm -rf "$work"
    if [ "$finished" -eq 0 ] && [ "$rc" -ne 0 ] && [ -f "$report" ]; then
        md ""
        md "**gpu-check stopped early (exit $rc)**; see its stderr."
    fi
    log "report: $report (step logs in $out_dir/gpu-check-logs)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME SECONDS CMD...: run CMD with a timeout, log to $work/NAME.log; 0 or its status
step() {
    local name=$1 secs=$2
    shift 2
    log "$name (timeout ${secs}s)"
    local rc=0
    timeout --kill-after=10 "$secs" "$@" >"$work/$name.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        log "$name failed with status $rc; last lines:"
        tail -n 20 "$work/$name.log" >&2 || true
    fi
    return $rc
}

# ---- bundle mode: build here, package for a GPU machine without the build dependencies ---------
if [ "${1:-}" = bundle ]; then
    report=/dev/null
    out_dir=$bundle_dir/logs # step logs go with the bundle
    step configure 300 cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release "${release_flags[@]}"
    grep -q "CUDA backend ON" "$work/configure.log" || {
        log "CMake did not find nvcc: no CUDA backend to bundle"
        exit 1
    }
    step build 1200 cmake --build "$bdir" -j"$(nproc)" --target loki lokid test_cuda_backend \
        test_mps_supervisor
    rm -rf "${bundle_dir:?}/bin" "${bundle_dir:?}/tests" "${bundle_dir:?}/lib"
    mkdir -p "$bundle_dir/bin" "$bundle_dir/tests" "$bundle_dir/lib"
    cp "$bdir/bin/loki" "$bdir/bin/lokid" "$bundle_dir/bin/"
    cp "$bdir/tests/test_cuda_backend" "$bdir/tests/test_mps_supervisor" "$bundle_dir/tests/"
    # every shared library but the C/C++ runtime, which the GPU machine has (newer)
    ldd "$bundle_dir"/bin/* "$bundle_dir"/tests/* | awk '/=> \// { print $3 }' | sort -u |
        grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
        xargs -r cp -L -t "$bundle_dir/lib"
    log "bundle: $bundle_dir ($(du -sh "$bundle_dir" | cut -f1)); carry it to the GPU machine"
    exit 0
fi

: >"$report"
md "# Loki GPU check"
md ""
md "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# ---- 0. the GPU ----------------------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null || ! gpus=$(timeout 30 nvidia-smi -L 2>&1) ||
    [ -z "$gpus" ]; then
    md ""
    md "No NVIDIA GPU here (nvidia-smi -L failed): nothing measured."
    log "no GPU"
    exit 1
fi
gpu_name=$(timeout 30 nvidia-smi -i "$gpu" --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader)
md "GPU $gpu: $gpu_name"
have_mps=1
command -v nvidia-cuda-mps-control >/dev/null || have_mps=0

# ---- 1. build (release) ----------------------------------------------------------------------
md ""
md "## Build and tests"
md ""
t0=$(date +%s)
if [ -x "$bundle_dir/bin/loki" ]; then
    export LD_LIBRARY_PATH=$bundle_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    bin=$bundle_dir/bin tests=$bundle_dir/tests
    md "- prebuilt bundle ($bundle_dir, made by \`scripts/gpu-check.sh bundle\`)"
else
    step configure 120 cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release "${release_flags[@]}"
    step build 300 cmake --build "$bdir" -j"$(nproc)"
    grep -q "CUDA backend ON" "$work/configure.log" || {
        md "CMake did not find nvcc: the CUDA backend was not built."
        exit 1
    }
    bin=$bdir/bin tests=$bdir/tests
    md "- release build with the CUDA backend: $(($(date +%s) - t0)) s"
fi
loki=$bin/loki

# ---- 2. gpu tests ---------------------------------------------------------------------------
rc=0
step gpu-tests 240 env CUDA_VISIBLE_DEVICES="$gpu" "$tests/test_cuda_backend" || rc=$?
if [ $rc -eq 0 ]; then
    md "- tests/test_cuda_backend (label gpu): passed"
else
    md "- tests/test_cuda_backend (label gpu): **$([ $rc -eq 77 ] && echo skipped ||
        echo FAILED)** (status $rc)"
    failed=1
fi
rc=0
step mps-supervisor-test 60 "$tests/test_mps_supervisor" || rc=$?
md "- tests/test_mps_supervisor (fake MPS control): $([ $rc -eq 0 ] && echo passed ||
    echo "**FAILED** (status $rc)")"
[ $rc -eq 0 ] || failed=1
md ""
md '```'
grep -E "^batch|^green|skipped|OK|FAILED|ERROR" "$work/gpu-tests.log" | head -20 >>"$report" || true
md '```'

# ---- 3. green contexts (no MPS: a green context lives inside one ordinary process) ----------
md ""
md "## Green contexts: resize inside one process"
md ""
if step green 120 env CUDA_VISIBLE_DEVICES="$gpu" "$loki" profile --backend cuda \
    --topology "$topo" --variant "$v1" --batches "$batches" --shares 1,0.5,0.25 --reps 5 \
    --green; then
    md "Variant $v1, ms per batch (median of 5) after resizing to each share; resize = new green"
    md "context + stream + first kernel done:"
    md ""
    md '```'
    grep -E "green context of|^  [0-9.]+: \[" "$work/green.log" >>"$report" || true
    md '```'
else
    md "green-context run failed (driver without green contexts?):"
    md '```'
    tail -n 5 "$work/green.log" >>"$report"
    md '```'
    failed=1
fi

# ---- 4. MPS: each variant alone at 100/50/25 %, then both side by side at 50 % ---------------
md ""
md "## MPS shares"
md ""
if [ $have_mps -eq 0 ]; then
    md "nvidia-cuda-mps-control is not on PATH: MPS figures not measured."
    failed=1
else
    mps_dir=$work/mps
    mkdir -p "$mps_dir/pipe" "$mps_dir/log"
    export CUDA_MPS_PIPE_DIRECTORY=$mps_dir/pipe CUDA_MPS_LOG_DIRECTORY=$mps_dir/log
    step mps-start 30 env CUDA_VISIBLE_DEVICES="$gpu" nvidia-cuda-mps-control -d
    for v in $v1 $v2; do
        # loki profile uses the daemon named by CUDA_MPS_PIPE_DIRECTORY for shares < 1
        if step "alone-$v" 150 "$loki" profile --backend cuda --topology "$topo" \
            --variant "$v" --batches "$batches" --shares 1,0.5,0.25 --reps 7 --gpu "$gpu" \
            --out "$work/profiled-$v.yaml"; then
            md "### $v alone (ms per batch, median of 7; batch sizes $batches)"
            md ""
            md '```'
            grep -E "^  [0-9.]+: \[" "$work/alone-$v.log" >>"$report" || true
            md '```'
            md "(the share-1 row is the calibration target: the variant's profile in $topo)"
            md ""
        else
            md "### $v alone: **failed** (see below)"
            md '```'
            tail -n 8 "$work/alone-$v.log" >>"$report"
            md '```'
            failed=1
        fi
    done

    # side by side: each variant's fixed work, both clients at 50 % at once, one batch size
    # at a time with repetitions sized to ~2 s each so the two runs overlap
    side_ok=1
    for v in $v1 $v2; do
        step "work-$v" 120 env CUDA_VISIBLE_DEVICES="$gpu" "$loki" profile --child \
            --backend cuda --topology "$topo" --variant "$v" --batches "$batches" --reps 1 \
            --gpu "$gpu" ||
            side_ok=0
    done
    if [ $side_ok -eq 1 ]; then
        for b in ${batches//,/ }; do
            pids=()
            for v in $v1 $v2; do
                w=$(sed -n 's/^work //p' "$work/work-$v.log")
                reps=$(awk -v b="$b" '$1 == "tau" && $2 == b {
                    r = int(2000 / $3); print (r < 5 ? 5 : r > 400 ? 400 : r) }' \
                    "$work/work-$v.log")
                step "side-$v-$b" 120 env CUDA_VISIBLE_DEVICES="$gpu" \
                    CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50 LOKI_CUDA_WORK="$w" "$loki" profile \
                    --child --backend cuda --topology "$topo" --variant "$v" --batches "$b" \
                    --reps "${reps:-5}" --gpu "$gpu" &
                pids+=($!)
            done
            for p in "${pids[@]}"; do wait "$p" || side_ok=0; done
        done
    fi
    md "### side by side under one MPS daemon, 50 % + 50 % (ms per batch, median over ~2 s)"
    md ""
    if [ $side_ok -eq 1 ]; then
        md "| variant | batch ${batches//,/ | batch } |"
        md "|---|$(echo "$batches" | sed 's/[0-9][0-9]*/---/g; s/,/|/g')|"
        for v in $v1 $v2; do
            row="| $v |"
            for b in ${batches//,/ }; do
                row="$row $(awk '$1 == "tau" { printf "%.2f", $3 }' "$work/side-$v-$b.log") |"
            done
            md "$row"
        done
        md ""
        md "Compare with the 0.5 rows of each variant alone: the difference is interference that"
        md "MPS active-thread limits do not remove (memory bandwidth, L2)."
    else
        md "**failed**"
        failed=1
    fi
    stop_mps
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi

# ---- 5. lokid serving: two cuda workers at 50 % each, MPS daemon run by lokid's supervisor ----
md ""
md "## lokid with MPS workers"
md ""
cat >"$work/lokid-mps.yaml" <<EOF
# two instances of one cuda variant at half a GPU each (gpu-check.sh)
gpus: {count: 1, memory_mb: 143771, share_granularity: 0.25}
planner:
  policy: static
  static_plan:
    - {pipeline: p, task: detect, variant: det, instances: 2, batch: 4, share: 0.5}
frontend: {socket: $work/lokid.sock}
pipelines:
  - name: p
    slo_ms: 500
    tasks:
      - name: detect
        variants:
          - name: det
            accuracy: 100
            memory_mb: 600
            backend: cuda
            batch_sizes: [1, 4]
            latency_ms: {1: [5, 12], 0.5: [6, 18]}
EOF
printf 'second,requests\n0,40\n1,40\n2,40\n3,40\n4,40\n5,40\n6,40\n7,40\n' >"$work/trace.csv"
log "lokid with two MPS workers"
# its run folder (and MPS pipes) under $work, so the EXIT trap finds any daemon left behind
TMPDIR=$work "$bin/lokid" --topology "$work/lokid-mps.yaml" --fixed-plan \
    >"$work/lokid.log" 2>&1 &
lokid_pid=$!
ready=0
for _ in $(seq 1 120); do
    [ "$(grep -c '"worker [01] ready"' "$work/lokid.log" || true)" -ge 2 ] && ready=1 && break
    kill -0 "$lokid_pid" 2>/dev/null || break
    # workers that keep failing will not come up: stop waiting
    [ "$(grep -c '"worker [0-9]* died' "$work/lokid.log" || true)" -ge 8 ] && break
    sleep 0.5
done
if [ $ready -eq 1 ]; then
    step lokid-load 60 "$loki" load --socket "$work/lokid.sock" --trace "$work/trace.csv" || true
fi
kill -INT "$lokid_pid" 2>/dev/null || true
for _ in $(seq 1 60); do
    kill -0 "$lokid_pid" 2>/dev/null || break
    sleep 0.5
done
kill -KILL "$lokid_pid" 2>/dev/null || true
wait "$lokid_pid" 2>/dev/null || true
lokid_pid=
died=$(grep -c '"worker [0-9]* died' "$work/lokid.log" || true)
if [ $ready -eq 1 ] && [ "$died" -eq 0 ] && [ $have_mps -eq 0 ]; then
    md "No MPS control binary: lokid said so and ran both workers without MPS; they came up"
    md "and served the load:"
elif [ $ready -eq 1 ] && [ "$died" -eq 0 ] &&
    grep -q "control daemon for GPU 0 started" "$work/lokid.log" &&
    grep -q "control daemon for GPU 0 stopped" "$work/lokid.log"; then
    md "lokid started one MPS daemon, both workers (50 % each, calibrated) came up, served the"
    md "load and the daemon was stopped on exit:"
else
    md "**lokid with MPS workers failed** (ready: $ready, worker deaths: $died):"
    failed=1
fi
md '```'
grep -E "mps:|ready|died|refused|backend cuda" "$work/lokid.log" | head -12 >>"$report" || true
tail -n 4 "$work/lokid-load.log" >>"$report" 2>/dev/null || true
md '```'

md ""
md "Total: $(($(date +%s) - t_start)) s. $([ $failed -eq 0 ] && echo "All checks passed." ||
    echo "**Some checks failed.**")"
finished=1
exit $failed
