#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The latency rows of examples/vision/vision.yaml: every variant's plugin infer (decode,
# resize, batch, forward, postprocess) timed per batch size by loki_torch_bench on this CPU,
# beside a plain libtorch loop of the same model, alternating, in CPU time of the one thread
# (wall time too). Our own timing tool, not `loki profile`.
#   examples/vision/profile.sh [BUILD_DIR] [REPS]     (models in BUILD_DIR/vision/models)
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${1:-build}
reps=${2:-10}
m=$b/vision/models
bench=$b/bin/loki_torch_bench
so=$b/lib/loki_torch_backend.so
[ -x "$bench" ] || { echo "profile.sh: $bench not built (libtorch missing?)" >&2; exit 1; }
[ -f "$m/resnet18.pt" ] || { echo "profile.sh: no models in $m (./build.sh run-vision makes them)" >&2; exit 1; }
img=$m/images/street0.jpg
crop=$m/tensors/crop224.tensor
imagenet=(--arg shape=3x224x224 --arg mean=0.485,0.456,0.406 --arg std=0.229,0.224,0.225
    --arg postprocess=classify_topk --arg topk=3 --arg labels=$m/imagenet.txt)
detect=(--arg postprocess=detect_crops --arg max_boxes=8 --arg crop.vehicle=224x224
    --arg crop.person=224x224 --arg labels=$m/coco.txt)
echo "# $(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, threads 1, reps $reps"
run() {
    local name=$1
    shift
    echo "## $name"
    "$bench" --plugin "$so" --reps "$reps" "$@" 2>&1 | grep --line-buffered -v '^\[W' || true
}
run ssdlite320 --payload "$img" --batches 1,2,4,8 --arg model=$m/ssdlite320.pt \
    --arg shape=3x320x320 --arg mean=0.5,0.5,0.5 --arg std=0.5,0.5,0.5 \
    --arg score_threshold=0.0109 "${detect[@]}"
run ssd300_vgg16 --payload "$img" --batches 1,2 --arg model=$m/ssd300_vgg16.pt \
    --arg shape=3x300x300 --arg mean=0.48235,0.45882,0.40784 \
    --arg std=0.0039215686,0.0039215686,0.0039215686 --arg score_threshold=0.5 "${detect[@]}"
for c in mobilenet_v3_small mobilenet_v3_large efficientnet_b0 resnet18; do
    run "$c" --payload "$crop" --batches 1,2,4,8 --arg model=$m/$c.pt "${imagenet[@]}"
done
