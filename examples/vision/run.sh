#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ./build.sh run-vision: lokid serves examples/vision/vision.yaml (a detector feeding a vehicle
# and a person classifier, two variants each, on the torchscript backend, this CPU) and
# `loki load --payload-dir` sends it the example JPEGs for SECONDS_TO_RUN (default 30) at
# RATE queries/s (default 0.5), printing the result tree of the first 3 replies and the summary.
# Models (random weights: examples/vision/README.md) are made once into BUILD/vision/models.
set -euo pipefail
cd "$(dirname "$0")/../.."
b=${LOKI_BUILD_DIR:-build}
secs=${SECONDS_TO_RUN:-30}
rate=${RATE:-0.5}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
if [ ! -f "$b/lib/loki_torch_backend.so" ]; then
    echo "run-vision: $b/lib/loki_torch_backend.so was not built (apt install libtorch-dev)" >&2
    exit 1
fi
out=$b/vision
mkdir -p "$out"
if [ ! -f "$out/models/tensors/crop224.tensor" ]; then
    echo "run-vision: making the models (random weights) into $out/models (a minute or two)"
    "$py" examples/vision/make_models.py "$out/models" 2>&1 | grep -v Warning || true
fi
# the topology names build/...: point it at this build folder
sed "s#build/#$b/#g" examples/vision/vision.yaml >"$out/vision.yaml"
sock=$out/lokid.sock
{
    echo "second,requests"
    for ((s = 0; s < secs; s++)); do echo "$s,$rate"; done
} >"$out/trace.csv"
"$b/bin/loki" topology check "$out/vision.yaml"
"$b/bin/lokid" --topology "$out/vision.yaml" --socket "$sock" --initial-demand "$rate" \
    2>"$out/lokid.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    "$b/bin/loki" status --socket "$sock" --ready >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { cat "$out/lokid.log" >&2; exit 1; }
    sleep 0.2
done
echo "run-vision: lokid ready (log: $out/lokid.log); sending $out/models/images/*"
"$b/bin/loki" load --socket "$sock" --pipeline vision --trace "$out/trace.csv" \
    --payload-dir "$out/models/images" --show 3 --timeout-ms 60000
"$b/bin/loki" status --socket "$sock" || true
kill -TERM $pid
wait $pid || true
trap - EXIT
