#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The HTTP front door with curl, against a live lokid on tests/lokid/small.yaml (sim backend,
# detect -> classify, fan-out 3): health, metadata, infer in JSON and with the binary-data
# extension (a payload file sent as is), unknown model 404, an oversized body 413, and
# lokid's exit after SIGTERM; and that lokid does not link libmicrohttpd (it opens it when the
# front door is on). Loopback only; every curl has --max-time.
# usage: http_curl.sh LOKID   (run from the source tree)
set -u
lokid=$1
command -v curl >/dev/null || { echo "no curl: skipped"; exit 77; }
tmp=$(mktemp -d /tmp/loki-curl-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# off by default, so it costs nothing then: lokid (also every worker's executable) does not
# load libmicrohttpd, or GnuTLS with it, until a front door is made
if command -v ldd >/dev/null && ldd "$lokid" | grep -q 'microhttpd\|gnutls'; then
    fail "lokid links libmicrohttpd or GnuTLS: every worker exec would load them"
fi

# small.yaml with a 5 s SLO: a loaded machine must not turn a check into a drop
sed 's/slo_ms: 200/slo_ms: 5000/' tests/lokid/small.yaml >"$tmp/small.yaml"
"$lokid" --topology "$tmp/small.yaml" --socket "$tmp/s.sock" --http-port 0 \
    --initial-demand 20 2>"$tmp/log" &
pid=$!
port=
for _ in $(seq 200); do
    port=$(sed -n 's|.*front door (KServe v2) on http://127.0.0.1:\([0-9]*\)/v2.*|\1|p' "$tmp/log")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || { echo "lokid did not serve HTTP:" >&2; cat "$tmp/log" >&2; exit 1; }
url=http://127.0.0.1:$port

# req METHOD PATH [curl args...]: the status code on stdout, the body in $tmp/body
req() {
    m=$1 p=$2
    shift 2
    curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' -X "$m" "$@" "$url$p"
}

code=$(req GET /v2/health/live)
[ "$code" = 200 ] || fail "live: $code"
ready=
for _ in $(seq 200); do
    [ "$(req GET /v2/health/ready)" = 200 ] && { ready=1; break; }
    sleep 0.1
done
[ -n "$ready" ] || fail "not ready within 20 s: $(cat "$tmp/body")"
code=$(req GET /v2/models/small)
[ "$code" = 200 ] && grep -q '"platform":"loki"' "$tmp/body" || fail "metadata: $code $(cat "$tmp/body")"

# JSON: three leaf outputs, status ok, the request's id back
code=$(req POST /v2/models/small/infer -H 'Content-Type: application/json' \
    -d '{"id":"c1","inputs":[{"name":"payload","datatype":"BYTES","shape":[1],"data":["hello"]}]}')
[ "$code" = 200 ] || fail "infer json: $code $(cat "$tmp/body")"
grep -q '"id":"c1"' "$tmp/body" && grep -q '"shape":\[3\]' "$tmp/body" &&
    grep -q '"status":"ok"' "$tmp/body" || fail "infer json body: $(cat "$tmp/body")"

# binary-data: the JSON header, then the payload as Triton's BYTES element (length, bytes)
hdr='{"inputs":[{"name":"payload","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}}],"outputs":[{"name":"output","parameters":{"binary_data":true}}]}'
printf '%s' "$hdr" >"$tmp/req.bin"
printf '\005\000\000\000\000\001\002\003\377' >>"$tmp/req.bin"
code=$(curl -s --max-time 10 -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' \
    -H "Inference-Header-Content-Length: ${#hdr}" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$tmp/req.bin" "$url/v2/models/small/infer")
[ "$code" = 200 ] || fail "infer binary: $code $(cat "$tmp/body")"
hl=$(tr -d '\r' <"$tmp/headers" | sed -n 's/^[Ii]nference-[Hh]eader-[Cc]ontent-[Ll]ength: //p')
[ -n "$hl" ] && [ "$(wc -c <"$tmp/body")" -gt "$hl" ] || fail "binary response: header '$hl'"
head -c "$hl" "$tmp/body" | grep -q '"binary_data_size"' || fail "binary response JSON"

# refusals
code=$(req POST /v2/models/nosuch/infer -d '{}')
[ "$code" = 404 ] || fail "unknown model: $code"
code=$(req POST /v2/models/small/infer -d '{"inputs":')
[ "$code" = 400 ] || fail "bad JSON: $code"
head -c 3000000 /dev/zero >"$tmp/big"
code=$(curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' --data-binary @"$tmp/big" \
    "$url/v2/models/small/infer")
[ "$code" = 413 ] || fail "3 MB body: $code $(cat "$tmp/body")"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] || fail "lokid exit $rc after SIGTERM"
if [ $fails -ne 0 ]; then
    echo "$fails checks failed" >&2
    exit 1
fi
echo "http front door with curl: all checks passed"
