#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The runtime's overhead at batch 8 (issue 17 item 7): one classifier served by lokid (one
# worker, pinned to a core, batch 8 only, the torchscript plugin) and driven in a closed loop
# with 16 crops in flight, against the same TorchScript file in a plain libtorch loop at batch
# 8 (one thread), in the same run, by loki_torch_bench. Also the plugin's infer against the
# plain forward at batch 1..8 (CPU time). Overhead = 1 - lokid frames/s / plain frames/s.
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
          - {name: $model, accuracy: 70, batch_sizes: [8], latency_ms: [2000],
             backend: $so,
             args: {$args}}
YAML
sock=$out/lokid.sock
"$b/bin/lokid" --topology "$out/bench.yaml" --socket "$sock" --initial-demand 20 \
    2>"$out/lokid.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    "$b/bin/loki" status --socket "$sock" --ready >/dev/null 2>&1 && break
    sleep 0.2
done
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$b/bin/loki_torch_bench" --plugin "$so" --payload "$m/tensors/crop224.tensor" --reps 10 \
    --batches 1,8 --arg model="$m/$model.pt" --arg shape=3x224x224 \
    --arg mean=0.485,0.456,0.406 --arg std=0.229,0.224,0.225 --arg postprocess=classify_topk \
    --arg topk=3 --socket "$sock" --pipeline cls --clients 16 --seconds "$secs" --batch 8 2>&1 |
    grep -v '^\[W'
echo "# after: load $(cut -d' ' -f1-3 /proc/loadavg)"
"$b/bin/loki" status --socket "$sock" | sed -n '/TASK/,/^$/p'
kill -TERM $pid
wait $pid || true
trap - EXIT
