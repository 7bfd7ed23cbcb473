#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# bench/crosscheck --pool: the pooled verdict over finished runs, from their crosscheck.json.
# Three made-up runs of one scenario: live lost 30, 50 and 40 queries of 10,000 each against
# replay means of 40, 40 and 40 (one run 25 % off on its own), accuracy 95/96/95 against 95.5
# (run c's crosscheck.json from before `loki load` split "overloaded" into the server's and the
# client's refusals, a, and b with 5 of their losses refused by the client):
# pooled 120 against 120, PASS (exit 0). Then a pool whose live losses are 2x the replays'
# (MISS, exit 3), one that mixes scenarios (refused, exit 1), and one with no folders (exit 2).
# usage: test_pool.sh SOURCE_DIR OUT_DIR
set -u
src=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
fail() {
    echo "test_pool: $*" >&2
    exit 1
}
# run DIR SEED LIVE_LOST REPLAY_MEAN LIVE_ACC [TRACE [OLD]]: LIVE_LOST of 10,000 arrivals lost,
# 5 of them refused by the client (all dropped with OLD, the former format)
run() {
    mkdir -p "$out/$1"
    if [ -n "${7:-}" ]; then
        counts="\"dropped\": $3, \"overloaded\": 0"
    else
        counts="\"attempted\": 10000, \"refused_client\": 5, \"send_failed\": 0,
          \"sent\": 9995, \"dropped\": $(($3 - 5)), \"overloaded_server\": 0"
    fi
    cat >"$out/$1/crosscheck.json" <<EOF
{"scenario": {"trace": "${6:-twitter}", "rate_min": 50.0, "rate_max": 800.0, "first_minute": 811,
  "rows": 600, "time_scale": 60.0, "duration_s": 600.0, "seed": $2},
 "live": {"ok": $((10000 - $3)), $counts, "late": 0, "timeouts": 0,
          "errors": 0, "mean_accuracy": $5},
 "replay_spread": {"runs": 10, "violations": [10, $4, 90], "accuracy": [95.0, 95.5, 96.0]},
 "verdict": "n/a"}
EOF
}
run a 1 30 40 95.0
run b 2 50 40 96.0
run c 3 40 40 95.0 twitter old
"$src/bench/crosscheck" --pool "$out/a" "$out/b" "$out/c" >"$out/pass.txt"
rc=$?
[ $rc -eq 0 ] || fail "3 runs pooling 120 against 120 should PASS (exit 0), got $rc"
grep -q '^| pooled (3 runs) | | 30000 | 120 | 120.0 | 0.0 % | 95.33 | 95.50 | \*\*PASS\*\* |$' \
    "$out/pass.txt" || { cat "$out/pass.txt"; fail "pooled row is wrong"; }
grep -q '^| b | 2 | 10000 | 50 | 40.0 | 20.0 % |' "$out/pass.txt" ||
    { cat "$out/pass.txt"; fail "per-run row is wrong"; }

run d 4 80 40 95.5
run e 5 80 40 95.5
"$src/bench/crosscheck" --pool "$out/d" "$out/e" >"$out/miss.txt"
rc=$?
[ $rc -eq 3 ] || fail "live losing 2x the replays should MISS (exit 3), got $rc"
grep -q 'MISS' "$out/miss.txt" || fail "no MISS in the pooled table"

run f 6 40 40 95.5 azure
"$src/bench/crosscheck" --pool "$out/a" "$out/f" >/dev/null 2>"$out/mixed.err"
rc=$?
[ $rc -eq 1 ] || fail "mixed scenarios should be refused (exit 1), got $rc"
grep -q 'different scenarios' "$out/mixed.err" || fail "no reason given for the refusal"

"$src/bench/crosscheck" --pool >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] || fail "no folders should be a usage error (exit 2), got $rc"
echo "test_pool: ok"
