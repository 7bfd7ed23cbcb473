#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The runtime's overhead at batch 8 (issue 17 item 7): one classifier served by lokid (one
# worker, pinned to a core, batch 8 only, the torchscript plugin) and driven in a closed loop
# with 16 crops in flight, against the same TorchScript file in a plain libtorch loop at batch
# 8 (one thread), in the same run, by loki_torch_bench. Also the plugin's infer against the
# plain forward at batch 1..8 (CPU time). Overhead: 1 - lokid frames/s / plain frames/s (wall),
# and lokid + workers CPU time per frame / the plain loop's - 1 (robust to other load).
#   examples/vision/bench_overhead.sh [BUILD_DIR] [MODEL] [SECONDS]
# BUILD_DIR defaults to build-release (timings want -O2), MODEL to mobilenet_v3_small.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build-release}
model=${2:-mobilenet_v3_small}
secs=${3:-30}
m=$(cd "$b/vision/models" && pwd)
so=$(pwd)/$b/lib/loki_torch_backend.so
[ -f "$m/$model.pt" ] || { echo "bench_overhead: no $m/$model.pt (run-vision makes it)" >&2; exit 1; }
out=$b/vision/bench
# the batch-8 latency the planner plans with: the plugin's, measured first (CPU time)
lat8=$("$b/bin/loki_torch_bench" --plugin "$so" --payload "$m/tensors/crop224.tensor" --reps 3 \
    --batches 8 --arg model="$m/$model.pt" --arg shape=3x224x224 2>/dev/null |
    sed -n 's/.*latency_ms: \[\(.*\)\]/\1/p')
mkdir -p "$out"
args="model: $m/$model.pt, shape: 3x224x224, mean: \"0.485,0.456,0.406\",
             std: \"0.229,0.224,0.225\", postprocess: classify_topk, topk: 3"
cat >"$out/bench.yaml" <<YAML
gpus: {count: 1, memory_mb: 16384}
planner: {interval_ms: 1000, min_dwell_s: 600}
frontend: {max_inflight: 256}
pipelines:
  - name: cls
    slo_ms: 120000
    tasks:
      - name: classify
        variants:
          - {name: $model, accuracy: 70, batch_sizes: [8], latency_ms: [$lat8],
             backend: $so,
             args: {$args}}
YAML
sock=$out/lokid.sock
"$b/bin/lokid" --topology "$out/bench.yaml" --socket "$sock" --initial-demand 10 \
    2>"$out/lokid.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    "$b/bin/loki" status --socket "$sock" --ready >/dev/null 2>&1 && break
    sleep 0.2
done
# CPU seconds (user + system) lokid and its workers have used so far
cpu_s() {
    local t=0 p
    for p in $pid $(cat /proc/$pid/task/$pid/children 2>/dev/null); do
        t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0)))
    done
    echo "$t $(getconf CLK_TCK)" | awk '{printf "%.3f", $1 / $2}'
}
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
c0=$(cpu_s)
"$b/bin/loki_torch_bench" --plugin "$so" --payload "$m/tensors/crop224.tensor" --reps 10 \
    --batches 1,8 --arg model="$m/$model.pt" --arg shape=3x224x224 \
    --arg mean=0.485,0.456,0.406 --arg std=0.229,0.224,0.225 --arg postprocess=classify_topk \
    --arg topk=3 --socket "$sock" --pipeline cls --clients 16 --seconds "$secs" --batch 8 2>&1 |
    grep -v '^\[W' | tee "$out/bench.txt"
c1=$(cpu_s)
echo "# after: load $(cut -d' ' -f1-3 /proc/loadavg)"
# CPU time per frame: lokid + worker (the whole runtime, over the run, warm-up excluded as
# far as the worker had loaded before c0) against the plain loop's forward at batch 8
frames=$(sed -n 's/^lokid_e2e_throughput frames\/s [^ ]* - \([0-9]*\).*/\1/p' "$out/bench.txt")
plain=$(sed -n 's/^plain_forward_cpu_b8 ms \([^ ]*\).*/\1/p' "$out/bench.txt")
awk -v c0="$c0" -v c1="$c1" -v f="$frames" -v p="$plain" 'BEGIN {
    per = (c1 - c0) * 1000 / f
    printf "lokid_cpu_per_frame ms %.3f - %d (lokid + workers, CPU time)\n", per, f
    printf "plain_cpu_per_frame_b8 ms %.3f - -\n", p / 8
    printf "lokid_cpu_overhead_b8 ratio %.3f - - (CPU per frame / plain - 1)\n", per / (p / 8) - 1
}'
grep -c "made no progress" "$out/lokid.log" | sed 's/^/# workers killed as stalled: /' || true
"$b/bin/loki" status --socket "$sock" | sed -n '/TASK/,/^$/p'
kill -TERM $pid
wait $pid || true
trap - EXIT
