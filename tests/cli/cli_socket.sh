#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Where `loki load`, `status` and `metrics` connect, first that applies: --socket,
# $LOKI_SOCKET (set and not empty), frontend.socket of --topology F, /run/loki/loki.sock. No
# lokid runs: each attempt fails with "cannot connect to PATH: REASON (is lokid running at
# PATH?)" naming the path it chose, exit 1. Run from the source tree.
# usage: cli_socket.sh LOKI
set -u
loki=$1
tmp=$(mktemp -d /tmp/loki-sock-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
# a topology whose frontend.socket is $tmp/topo.sock, and a trace for `loki load`
sed "s|^frontend:\$|frontend:\n  socket: $tmp/topo.sock|" tests/lokid/small.yaml >"$tmp/topo.yaml"
grep -q "socket: $tmp/topo.sock" "$tmp/topo.yaml" || { echo "cannot make the topology" >&2; exit 1; }
printf 'second,requests\n0,10\n' >"$tmp/trace.csv"

# expect WANT_PATH ENV CMD ARGS...: exit 1 and the connection error naming WANT_PATH
expect() {
    want=$1 envval=$2 cmd=$3
    shift 3
    case $cmd in
    load) set -- "$@" --trace "$tmp/trace.csv" ;;
    *) set -- "$@" --timeout 500 ;;
    esac
    if [ "$envval" = unset ]; then
        env -u LOKI_SOCKET "$loki" "$cmd" "$@" >"$tmp/out" 2>"$tmp/err"
    else
        LOKI_SOCKET=$envval "$loki" "$cmd" "$@" >"$tmp/out" 2>"$tmp/err"
    fi
    rc=$?
    line="loki $cmd: cannot connect to $want: No such file or directory (is lokid running at $want?)"
    [ $rc -eq 1 ] || fail "$cmd $* (LOKI_SOCKET $envval): exit $rc, want 1"
    grep -qxF "$line" "$tmp/err" ||
        fail "$cmd $* (LOKI_SOCKET $envval): want '$line', got: $(cat "$tmp/err")"
}

for c in load status metrics; do
    expect "$tmp/flag.sock" "$tmp/env.sock" $c --socket "$tmp/flag.sock" --topology "$tmp/topo.yaml"
    expect "$tmp/env.sock" "$tmp/env.sock" $c --topology "$tmp/topo.yaml"
    expect "$tmp/env.sock" "$tmp/env.sock" $c
    expect "$tmp/topo.sock" unset $c --topology "$tmp/topo.yaml"
    expect "$tmp/topo.sock" "" $c --topology "$tmp/topo.yaml"
    # the built-in default, unless a lokid happens to serve there on this machine
    [ -e /run/loki/loki.sock ] || expect /run/loki/loki.sock unset $c
done

# probes say it on stdout, with the same words
LOKI_SOCKET=$tmp/env.sock "$loki" status --live --timeout 500 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || fail "status --live: exit $rc, want 1"
grep -qxF "not live: cannot connect to $tmp/env.sock: No such file or directory (is lokid running at $tmp/env.sock?)" \
    "$tmp/out" || fail "status --live: got $(cat "$tmp/out")"

# a topology that cannot be loaded is said so, exit 1
env -u LOKI_SOCKET "$loki" status --topology "$tmp/missing.yaml" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "cannot load topology $tmp/missing.yaml" "$tmp/err" ||
    fail "status --topology missing.yaml: exit $rc, $(cat "$tmp/err")"

# --help documents the order
for c in load status metrics; do
    "$loki" $c --help | grep -q 'LOKI_SOCKET' || fail "loki $c --help does not mention LOKI_SOCKET"
done

[ $fails -eq 0 ] || { echo "cli_socket: $fails failures" >&2; exit 1; }
echo "cli_socket: ok"
