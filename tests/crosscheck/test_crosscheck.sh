#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Live against replay on a 60 s burst (Azure minutes 1073-1084, 50-425 qps, 12 trace s per wall
# s: 110 -> 425 -> 86 qps, through accuracy scaling and back). bench/crosscheck runs lokid +
# `loki load` and `loki replay --like-load --like-lokid` on the same arrivals; its own 20 %
# verdict is reported, not asserted (see docs/evaluation.md, "Live cross-check": on one burst the
# fan-out draws alone move the violation ratio by more than that). Asserted here:
#   * the very same arrivals: live attempted == replay arrived; loki load's account adds up
#     (attempted = sent + refused_client + send_failed, sent = the sum of the reply outcomes)
#     and no query was lost, timed out or failed to send;
#   * the run is not trivial: the replays (5 fan-out streams) violate on 0.2 % of the queries
#     or more on average (about 20 in the burst) and serve below 99 % accuracy (the planner
#     traded accuracy for throughput);
#   * mean accuracy (ok + late) within 2 % of the replays' mean (measured: 0.0-0.1 %; the
#     streams themselves spread 0.4 %);
#   * GPUs in use within 5 % (measured 0.0-0.7 %) and p50 latency within 15 % (measured
#     2-3 %: the socket and rings add about 1.5 ms);
#   * the live violation ratio at most 3 x the replays' highest plus 1 percentage point. Loose
#     on purpose: on this burst one fan-out stream against another moves it from 0.1 to 1.9 %,
#     and three live runs on the shared 2-core machine gave 0.49, 0.90 and 3.80 % (lokid
#     starved of CPU answers late and drops). A lokid that does not re-plan or scale accuracy
#     loses far more (the burst is 4x the first minute's rate).
# In a sanitizer build (sanitizer=asan|tsan) lokid runs 2-15x slower than the replay's model of
# it, so the two timing bounds are loosened and say so: p50 within 40 %, violations at most
# 3 x the replays' highest plus 10 points. Measured under TSan on the idle machine: live
# 4.8 and 5.9 % against replays of 0.4-0.9 %, p50 85-90 ms against 79 ms (the release build:
# 0.42 % against 0.22-0.43 %). A lokid that does not re-plan still fails them.
# usage: test_crosscheck.sh SOURCE_DIR BIN_DIR OUT_DIR [sanitizer=NAME]
set -u
src=$1
bin=$2
out=$3
san=${4:-sanitizer=}
san=${san#sanitizer=}
rc=0
"$src/bench/crosscheck" --bin "$bin" --out "$out" --azure-hour --duration 60 --first-minute 1073 \
    --time-scale 12 --replay-seeds 5 || rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
    echo "test_crosscheck: bench/crosscheck failed ($rc)" >&2
    exit 1
fi
exec python3 - "$out/crosscheck.json" "$san" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
san = sys.argv[2]
p50_tol, viol_pts = (0.40, 10) if san else (0.15, 1)
L, R = j["live"], j["replay"]
lo, mid, hi = j["replay_spread"]["viol_ratio_pct"]
acc_mid = j["replay_spread"]["accuracy"][1]
replies = L["ok"] + L["dropped"] + L["late"] + L["overloaded_server"] + L["timeouts"] + L["errors"]
bad = L["attempted"] - L["ok"]  # refusals on either side included
live_viol = 100 * bad / L["attempted"]
checks = [
    ("same arrivals", L["attempted"] == R["arrived"] and L["attempted"] > 5000),
    ("account adds up", L["attempted"] == L["sent"] + L["refused_client"] + L["send_failed"]
     and L["sent"] == replies),
    ("no query lost", L["timeouts"] + L["errors"] + L["send_failed"] == 0),
    ("burst is not trivial", mid >= 0.2 and acc_mid < 99),
    ("accuracy within 2 %", abs(L["mean_accuracy"] - acc_mid) <= 0.02 * acc_mid),
    ("GPUs within 5 %", abs(L["gpus_mean"] - R["gpus_time_mean"]) <= 0.05 * R["gpus_time_mean"]),
    (f"p50 latency within {p50_tol * 100:.0f} %",
     abs(L["p50_ms"] - R["latency_ms_p50"]) <= p50_tol * R["latency_ms_p50"]),
    (f"violation ratio at most 3 x the replays' highest + {viol_pts} point(s)",
     live_viol <= 3 * hi + viol_pts),
]
if san:
    print(f"{san} build: timing bounds loosened (p50 within {p50_tol * 100:.0f} %, "
          f"violations <= 3 x highest + {viol_pts} points)")
print(f"live: {L['attempted']} arrivals, {L['sent']} sent, violations {live_viol:.3f} %, "
      f"accuracy {L['mean_accuracy']:.2f}, p50 {L['p50_ms']:.1f} ms (replay {R['latency_ms_p50']:.1f})")
print(f"replay: violations {lo:.3f}-{hi:.3f} % (mean {mid:.3f} %), accuracy {acc_mid:.2f}; "
      f"bench/crosscheck's 20 % verdict: {j['verdict']}")
failed = [name for name, ok in checks if not ok]
for name in failed:
    print(f"FAILED: {name}")
sys.exit(1 if failed else 0)
EOF
