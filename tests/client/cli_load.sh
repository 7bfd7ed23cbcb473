#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `loki load` end to end: an echo frontend, a 4-row trace played 4x faster, JSON summary.
set -eu
server=$1 loki=$2
# everything this test writes lives in one folder, gone however the script ends
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loki-load.XXXXXX")
pid=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
sock=$tmp/echo.sock
"$server" "$sock" > "$tmp/server.out" &
pid=$!
for i in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
out=$("$loki" load --socket "$sock" --trace tests/client/load_trace.csv --time-scale 4 \
      --rate-scale 2 --seed 7 --pipeline traffic --json)
echo "$out"
python3 - "$out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
# rows keep their rate (x2) but last 1/4 s: 2*(40+80+0+60)/4 = 90 expected arrivals
assert 55 <= s["sent"] <= 130, s
assert 0.9 <= s["duration_s"] <= 1.5, s
assert s["ok"] == s["sent"] and s["errors"] == 0 and s["dropped"] == 0, s
assert s["mean_accuracy"] == 100.0 and s["p99_ms"] >= s["p50_ms"] > 0, s
PY
# same seed, same arrivals
out2=$("$loki" load --socket "$sock" --trace tests/client/load_trace.csv --time-scale 4 \
       --rate-scale 2 --seed 7 --pipeline traffic --json)
[ "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent"])')" = \
  "$(echo "$out2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent"])')" ]
# a bad trace is refused
printf 'hour,requests\n0,1\n' > "$tmp/bad.csv"
if "$loki" load --socket "$sock" --trace "$tmp/bad.csv" 2>/dev/null; then exit 1; fi
kill $pid
wait $pid
pid=
