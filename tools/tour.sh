#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The newcomer tour (`./build.sh run`): lokid serves examples/traffic_analysis.yaml with the sim
# backend, `loki load` replays two hours of the bundled Azure Functions trace (minutes 1050-1169,
# with the day's largest burst) at one trace minute per wall second, so in two minutes the planner
# visibly scales GPUs and accuracy; then lokid is stopped with SIGTERM and must drain and exit 0.
# Writes $LOKI_BUILD_DIR/tour/{summary.json,per-second.csv,tour.svg,lokid.log}.
#
# usage: tools/tour.sh [--socket PATH] [--seconds N] [--rate-scale X] [--first-minute M]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
bdir=${LOKI_BUILD_DIR:-build}
case $bdir in /*) ;; *) bdir=$top/$bdir ;; esac

sock=
seconds=120     # wall seconds of load = trace minutes replayed
rate_scale=10   # the trace's 10-70 queries/s become 100-700: 2..20 GPUs of this topology
first_minute=1050
frame_bytes=102400 # one 100 KiB frame per query; detectors emit 16 KiB crops (the topology's args)
topo=examples/traffic_analysis.yaml
trace=examples/traces/azure2019_1350fn_day_per_minute.csv
while [ $# -gt 0 ]; do
    case $1 in
    --socket) sock=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rate-scale) rate_scale=$2; shift 2 ;;
    --first-minute) first_minute=$2; shift 2 ;;
    -h | --help) sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tour: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

die() {
    echo "tour: $*" >&2
    exit 1
}
for b in lokid loki; do
    [ -x "$bdir/bin/$b" ] || die "$bdir/bin/$b is missing: build first (./build.sh)"
done
command -v python3 >/dev/null || die "python3 is needed to print the summary"

out=$bdir/tour
mkdir -p "$out"
tmp=$(mktemp -d /tmp/loki-tour.XXXXXX)
[ -n "$sock" ] || sock=$tmp/loki.sock
pid=

cleanup() {
    local rc=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "tour: stopping lokid (pid $pid)" >&2
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The excerpt: header plus $seconds rows from $first_minute.
awk -F, -v a="$first_minute" -v n="$seconds" 'NR == 1 || ($1 >= a && $1 < a + n)' "$trace" \
    >"$tmp/trace.csv"
rows=$(($(wc -l <"$tmp/trace.csv") - 1))
[ "$rows" -gt 0 ] || die "no rows in $trace from minute $first_minute"

echo "== topology"
"$bdir/bin/loki" topology check "$topo" | sed -n '1,3p'
echo
echo "== lokid --topology $topo --socket $sock (log: $out/lokid.log)"
mkfifo "$tmp/ready"
"$bdir/bin/lokid" --topology "$topo" --socket "$sock" --initial-demand 100 --arena-mb 256 --ready-fd 3 \
    3>"$tmp/ready" 2>"$out/lokid.log" &
pid=$!
ready=
# EOF (lokid died) or a timeout both leave $ready empty
read -r -t 60 ready <"$tmp/ready" || true
if [ "$ready" != ready ]; then
    tail -n 20 "$out/lokid.log" >&2 || true
    die "lokid did not become ready within 60 s (log above)"
fi
echo "lokid ready (pid $pid)"
echo
echo "== loki load: minutes $first_minute-$((first_minute + rows - 1)) of $(basename "$trace")," \
    "one trace minute per second, rate x$rate_scale, $((frame_bytes / 1024)) KiB frames"
"$bdir/bin/loki" load --socket "$sock" --trace "$tmp/trace.csv" --time-scale 60 \
    --rate-scale "$rate_scale" --seed 1 --payload-bytes "$frame_bytes" --json --csv "$out/per-second.csv" \
    --plot "$out/tour.svg" >"$out/summary.json" ||
    die "loki load failed (lokid log: $out/lokid.log)"
python3 - "$out/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"pipeline          {s['pipeline']}   ({s['duration_s']:.0f} s of load)")
# every arrival ends in one of these (docs/operator.md, "loki load"); refused_client and
# send_failed were never sent, the rest are lokid's answers (or the client's timeouts)
for k in ("attempted", "refused_client", "send_failed", "sent", "ok", "dropped", "late",
          "overloaded_server", "timeouts", "errors"):
    pct = f"  ({100 * s[k] / s['attempted']:.1f} %)" if s["attempted"] and k != "attempted" else ""
    print(f"{k:<17} {s[k]}{pct}")
print(f"latency           p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms")
print(f"accuracy          {s['mean_accuracy']:.2f} (mean over ok+late)")
EOF
python3 - "$out/per-second.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
g = [float(r["gpus"]) for r in rows if r["gpus"]]
a = [float(r["mean_accuracy"]) for r in rows if int(r["ok"]) + int(r["late"]) > 0]
if g:
    print(f"GPUs in use {min(g):g} .. {max(g):g} (lokid's loki_gpus_in_use once a second: distinct GPUs")
    print("            holding an instance, starting or retiring ones included)")
if a:
    print(f"accuracy    {min(a):.1f} .. {max(a):.1f} per second")
EOF

cat <<'NOTE'
(One trace minute lasts one wall second here: a one-minute burst is a one-second step that the
plan follows a second later (demand estimate, solve), and new instances take their startup_ms
(2 s, 4 s with a fallback; the sim workers wait it out like the models they stand in for).
Meanwhile every instance runs the overflow on the faster fallback variant it keeps loaded (the
dips in accuracy per second); what still cannot make its deadline is dropped early, answered
"dropped" at once rather than late. docs/evaluation.md measures the same on full traces.)
NOTE

if "$bdir/bin/loki" help 2>/dev/null | grep -q '^  status'; then
    echo
    echo "== loki status"
    "$bdir/bin/loki" status --socket "$sock" || echo "tour: loki status failed" >&2
fi

echo
echo "== SIGTERM: lokid drains and exits"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
tail -n 2 "$out/lokid.log"
[ $rc -eq 0 ] || die "lokid exited with status $rc after SIGTERM (log: $out/lokid.log)"
echo "lokid exited 0"
echo
echo "summary   $out/summary.json"
echo "per-sec   $out/per-second.csv"
echo "plot      $out/tour.svg   (open it in a browser)"
