#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `loki profile` without a GPU: refuses to measure with exit 1 and a clear message, and
# --from rewrites a topology copy that loads, with the variant's measured profile.
set -euo pipefail
loki=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
topo=examples/h200x8.yaml

if out=$("$loki" profile --topology $topo --variant yolov5s --backend cuda --batches 1,4 2>&1); then
    if [ -e /dev/nvidia0 ]; then exit 0; fi # a GPU machine measures: covered by gpu-check.sh
    echo "profile without a GPU succeeded: $out" >&2
    exit 1
fi
grep -Eq "no CUDA GPU|without the CUDA backend" <<<"$out" || {
    echo "unclear message: $out" >&2
    exit 1
}

printf '%s\n' '# share batch ms' '1 1 5.5' '1 4 12' '0.5 1 6' '0.5 4 19.25' >"$tmp/m.txt"
"$loki" profile --topology $topo --variant yolov5s --batches 1,4 --shares 1,0.5 \
    --from "$tmp/m.txt" --out "$tmp/t.yaml" >"$tmp/stdout"
"$loki" topology check "$tmp/t.yaml" >/dev/null
grep -q '0.5: \[6.00, 19.25\]' "$tmp/t.yaml"
# only yolov5s changed: one share_scaled: false more than before, same variants
[ "$(grep -c 'share_scaled: false' "$tmp/t.yaml")" -eq \
    "$(($(grep -c 'share_scaled: false' $topo) + 1))" ]
[ "$(grep -c -- '- name:' "$tmp/t.yaml")" -eq "$(grep -c -- '- name:' $topo)" ]
# a measurement missing from --from is refused
printf '1 1 5\n' >"$tmp/short.txt"
if "$loki" profile --topology $topo --variant yolov5s --batches 1,4 --shares 1 \
    --from "$tmp/short.txt" --out "$tmp/u.yaml" 2>/dev/null; then
    echo "incomplete --from accepted" >&2
    exit 1
fi
[ ! -e "$tmp/u.yaml" ]
echo "profile cli: ok"
