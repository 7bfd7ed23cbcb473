#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `loki profile` on the CPU with any backend: the sim backend's measured latency is at least
# its profile and not far above it; the echo plugin is loaded as a worker loads it (its args,
# max_output_bytes and children reach it: the child payloads it emits are counted, an output
# over max_output_bytes fails the profile); every variant of a pipeline is profiled and
# written into a copy of the topology that `loki topology check` loads, with the printed
# tables and nothing else changed; a query the backend fails is reported and nothing written.
# usage: profile_backend.sh LOKI ECHO_PLUGIN V1_PLUGIN
set -u
loki=$1 echo_so=$2 v1_so=$3
tmp=$(mktemp -d /tmp/loki-profile-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

cat >"$tmp/t.yaml" <<EOF
gpus:
  count: 1
  share_granularity: 0.5
pipelines:
  - name: frames
    slo_ms: 500
    tasks:
      - name: detect
        children: [classify]
        input: "raw bytes"
        variants:
          - name: echo
            accuracy: 100
            batch_sizes: [1, 8]
            latency_ms: [1, 2] # a guess, measured below
            fanout: {classify: 4}
            backend: $echo_so
            args: {piece_bytes: 256}
          - name: sim2
            accuracy: 90
            batch_sizes: [1, 4]
            share_scaled: true
            latency_ms:
              1: [2, 6]
              0.5: [3, 9]
            fanout: {classify: 2}
      - name: classify
        variants:
          - {name: small, accuracy: 100, batch_sizes: [1, 2], latency_ms: [1, 1.5]}
  - name: limits
    slo_ms: 500
    tasks:
      - name: detect
        children: [classify]
        variants:
          - name: echo
            accuracy: 100
            batch_sizes: [1]
            latency_ms: [1]
            fanout: {classify: 10}
            backend: $echo_so
            max_output_bytes: 500
      - name: classify
        variants:
          - name: old
            accuracy: 100
            batch_sizes: [1, 2]
            latency_ms: [1, 2]
            backend: $v1_so
EOF

# run NAME ARGS...: loki profile ARGS, stdout/stderr/status into $tmp/NAME.{out,err,rc}
run() {
    n=$1
    shift
    "$loki" profile "$@" >"$tmp/$n.out" 2>"$tmp/$n.err"
    echo $? >"$tmp/$n.rc"
}
# lat FILE N: the Nth number of the first latency_ms list in FILE
lat() {
    sed -n 's/^ *latency_ms: \[\(.*\)\]$/\1/p' "$1" | head -n 1 | tr -d ' ' | cut -d, -f"$2"
}
# within X LO HI: LO <= X < HI
within() {
    awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x != "" && x >= lo && x < hi) }'
}

# the sim backend sleeps its profile: 2 ms at batch 1, 6 at batch 4
run sim --topology "$tmp/t.yaml" --variant sim2 --reps 5 --warmup 1
[ "$(cat "$tmp/sim.rc")" = 0 ] || fail "sim: exit $(cat "$tmp/sim.rc"): $(cat "$tmp/sim.err")"
within "$(lat "$tmp/sim.out" 1)" 2 50 || fail "sim batch 1: $(lat "$tmp/sim.out" 1) ms, want 2..50"
within "$(lat "$tmp/sim.out" 2)" 6 54 || fail "sim batch 4: $(lat "$tmp/sim.out" 2) ms, want 6..54"
grep -q '^batch_sizes: \[1, 4\]$' "$tmp/sim.out" || fail "sim: batch_sizes: $(cat "$tmp/sim.out")"
# shares: simulated at the variant's own shares, written as a per-share mapping
run simshares --topology "$tmp/t.yaml" --variant sim2 --shares 1,0.5 --reps 3 --warmup 0
grep -q '^share_scaled: false$' "$tmp/simshares.out" || fail "sim shares: no share_scaled: false"
half=$(sed -n 's/^  0.5: \[\([0-9.]*\),.*/\1/p' "$tmp/simshares.out")
within "$half" 3 51 || fail "sim at share 0.5 batch 1: '$half' ms, want 3..51"

# the echo plugin with its args: a 1024-byte payload cut into 256-byte pieces, 4 per query
run echo --topology "$tmp/t.yaml" --pipeline frames --variant echo --payload-bytes 1024
[ "$(cat "$tmp/echo.rc")" = 0 ] || fail "echo: exit $(cat "$tmp/echo.rc"): $(cat "$tmp/echo.err")"
for k in 1 2; do
    within "$(lat "$tmp/echo.out" $k)" 0.000001 1000 || fail "echo: '$(lat "$tmp/echo.out" $k)' ms"
done
grep -q "classify: 4.00 children of 256 B" "$tmp/echo.out" ||
    fail "echo: args or children not as the worker passes them: $(cat "$tmp/echo.out")"
grep -q "# loki profile: echo, in this process" "$tmp/echo.out" ||
    fail "echo: $(cat "$tmp/echo.out")"
# a payload file: 600 bytes, 2 pieces
head -c 600 /dev/zero >"$tmp/frame.bin"
run file --topology "$tmp/t.yaml" --pipeline frames --variant echo --payload-file "$tmp/frame.bin"
grep -q "classify: 2.00 children of 256 B" "$tmp/file.out" ||
    fail "payload file: $(cat "$tmp/file.out")"
# --backend: the sim variant measured with the plugin (no args: its 100-byte default pieces)
run over --topology "$tmp/t.yaml" --variant sim2 --backend "$echo_so" --payload-bytes 300
grep -q "classify: 3.00 children of 100 B" "$tmp/over.out" ||
    fail "--backend: $(cat "$tmp/over.out")"

# a plugin's shares below 1: children that are MPS clients (a stand-in for the MPS control
# daemon here: it is started with -d and told to quit)
cat >"$tmp/fake-mps" <<'EOF'
#!/bin/sh
echo "args: $*" >>"$CUDA_MPS_PIPE_DIRECTORY/calls"
[ "$*" = -d ] || cat >>"$CUDA_MPS_PIPE_DIRECTORY/calls"
EOF
chmod +x "$tmp/fake-mps"
mkdir "$tmp/mps"
LOKI_MPS_CONTROL="$tmp/fake-mps" TMPDIR="$tmp/mps" run mps --topology "$tmp/t.yaml" \
    --pipeline frames --variant echo --shares 1,0.5 --gpu 0 --reps 3 --warmup 1
[ "$(cat "$tmp/mps.rc")" = 0 ] || fail "MPS shares: exit $(cat "$tmp/mps.rc"): $(cat "$tmp/mps.err")"
grep -q "^  0.5: \[" "$tmp/mps.out" || fail "MPS shares: no 0.5 row: $(cat "$tmp/mps.out")"
grep -q "# loki profile: echo, MPS shares" "$tmp/mps.out" || fail "MPS shares: $(cat "$tmp/mps.out")"
grep -q "classify: 4.00 children of 256 B" "$tmp/mps.out" || fail "MPS shares: no child stats"
cat "$tmp"/mps/loki-profile-*/calls >"$tmp/calls" 2>/dev/null
grep -q "^args: -d$" "$tmp/calls" && grep -q "^quit$" "$tmp/calls" ||
    fail "MPS daemon not started and quit: $(cat "$tmp/calls")"

# max_output_bytes 500: ten 100-byte pieces do not fit; the query fails as in a worker
run big --topology "$tmp/t.yaml" --pipeline limits --variant echo --payload-bytes 1000 \
    --write "$tmp/big.yaml"
[ "$(cat "$tmp/big.rc")" = 1 ] || fail "over max_output_bytes: exit $(cat "$tmp/big.rc")"
grep -q "output too large" "$tmp/big.err" || fail "over max_output_bytes: $(cat "$tmp/big.err")"
[ -e "$tmp/big.yaml" ] && fail "over max_output_bytes: the copy was written"
# a backend that fails a query (the version-1 test plugin fails query 13)
run v1 --topology "$tmp/t.yaml" --pipeline limits --task classify --batches 1,2,4 --reps 7
[ "$(cat "$tmp/v1.rc")" = 1 ] || fail "failing query: exit $(cat "$tmp/v1.rc")"
grep -q "failed" "$tmp/v1.err" || fail "failing query: $(cat "$tmp/v1.err")"

# every variant of a pipeline into a copy: it loads, carries the printed tables, and only
# the measured keys (and their comments) changed
run all --topology "$tmp/t.yaml" --pipeline frames --reps 3 --write "$tmp/out.yaml"
[ "$(cat "$tmp/all.rc")" = 0 ] || fail "pipeline: exit $(cat "$tmp/all.rc"): $(cat "$tmp/all.err")"
[ "$(grep -c '^latency_ms: \[' "$tmp/all.out")" = 3 ] || fail "pipeline: $(cat "$tmp/all.out")"
# classify's variants get the child payloads detect's first variant cut (4 x 256 B per query)
grep -q "32 child payloads of 256 B from frames/detect/echo" "$tmp/all.out" ||
    fail "pipeline: classify not fed its parent's child payloads: $(cat "$tmp/all.out")"
if ! "$loki" topology check "$tmp/out.yaml" >"$tmp/check.out" 2>&1; then
    echo "FAIL: the copy does not load: $(cat "$tmp/check.out")" >&2
    exit 1
fi
# (the flow-style variant "small" is rewritten in its line)
grep "^latency_ms:" "$tmp/all.out" >"$tmp/want"
while read -r l; do
    grep -qF "$l" "$tmp/out.yaml" || fail "the copy lacks '$l'"
done <"$tmp/want"
[ "$(grep -c 'latency_ms:' "$tmp/out.yaml")" = 5 ] || fail "copy: $(cat "$tmp/out.yaml")"
grep -q "latency_ms: \[1\]$" "$tmp/out.yaml" || fail "the limits pipeline changed"
strip() {
    grep -v -E '^ *(latency_ms|batch_sizes|share_scaled):|^ *# loki profile|^ +[0-9.]+: \[' "$1" |
        sed 's/latency_ms: \[[^]]*\]/L/; s/ # a guess.*//'
}
strip "$tmp/t.yaml" >"$tmp/a"
strip "$tmp/out.yaml" >"$tmp/b"
diff "$tmp/a" "$tmp/b" >"$tmp/diff" || fail "the copy changed more: $(cat "$tmp/diff")"
# profiling the copy again replaces its comments rather than adding to them
run again --topology "$tmp/out.yaml" --pipeline frames --reps 3 --write "$tmp/out2.yaml"
[ "$(wc -l <"$tmp/out.yaml")" = "$(wc -l <"$tmp/out2.yaml")" ] ||
    fail "a second profile grew the copy"

# usage errors
run both --topology "$tmp/t.yaml" --variant echo --payload-bytes 1 --payload-file "$tmp/frame.bin"
[ "$(cat "$tmp/both.rc")" = 2 ] || fail "both payload options: exit $(cat "$tmp/both.rc")"
run none --topology "$tmp/t.yaml"
[ "$(cat "$tmp/none.rc")" = 2 ] || fail "nothing named: exit $(cat "$tmp/none.rc")"
run amb --topology "$tmp/t.yaml" --variant echo
[ "$(cat "$tmp/amb.rc")" = 1 ] && grep -q "more than one task" "$tmp/amb.err" ||
    fail "ambiguous variant: $(cat "$tmp/amb.err")"

[ $fails -eq 0 ] || exit 1
echo "profile backends: ok"
