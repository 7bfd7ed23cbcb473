#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `loki load` end to end: an echo frontend, a 4-row trace played 4x faster, JSON summary; then
# against an echo frontend that refuses (few outstanding requests per connection, slow answers,
# every 5th query answered overloaded): every arrival ends in exactly one outcome, and the
# outcomes add up, in the summary and in the per-second CSV.
set -eu
server=$1 loki=$2
# everything this test writes lives in one folder, gone however the script ends
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loki-load.XXXXXX")
pid= pid2=
trap '[ -z "$pid" ] || kill $pid 2>/dev/null || true; [ -z "$pid2" ] || kill $pid2 2>/dev/null || true; rm -rf "$tmp"' EXIT
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
assert s["attempted"] == s["sent"] and s["refused_client"] == 0 and s["send_failed"] == 0, s
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

# The refusing frontend: 4 requests in flight per connection, each answered 40 ms late, so
# at 120 qps the client library refuses some arrivals itself (refused_client); of those it
# sends, every 5th is answered overloaded by the server (overloaded_server).
sock2=$tmp/echo2.sock
"$server" --max-outstanding 4 --delay-ms 40 --overload-every 5 "$sock2" >/dev/null &
pid2=$!
for i in $(seq 100); do [ -S "$sock2" ] && break; sleep 0.05; done
out=$("$loki" load --socket "$sock2" --trace tests/client/load_trace.csv --time-scale 4 \
      --rate-scale 2 --seed 7 --pipeline traffic --json --csv "$tmp/load.csv")
echo "$out"
python3 - "$out" "$tmp/load.csv" <<'PY'
import csv, json, sys
s = json.loads(sys.argv[1])
rows = list(csv.DictReader(open(sys.argv[2])))
sides = ("refused_client", "send_failed", "sent")
outcomes = ("ok", "dropped", "late", "overloaded_server", "timeouts", "errors")
assert "overloaded" not in s, s  # which side refused is always said
assert s["attempted"] == sum(s[k] for k in sides), s
assert s["sent"] == sum(s[k] for k in outcomes), s
assert s["refused_client"] > 0 and s["overloaded_server"] > 0 and s["ok"] > 0, s
assert s["send_failed"] == 0 and s["errors"] == 0 and s["timeouts"] == 0, s
# every 5th query the server saw was refused by it
assert s["overloaded_server"] == s["sent"] // 5, s
for k in ("attempted",) + sides + outcomes:
    assert sum(int(r[k]) for r in rows) == s[k], (k, s, rows)
for r in rows:
    assert int(r["attempted"]) == sum(int(r[k]) for k in sides), r
    assert int(r["sent"]) == sum(int(r[k]) for k in outcomes), r
PY
kill $pid2
wait $pid2
pid2=
