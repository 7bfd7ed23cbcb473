#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Every `loki` subcommand: --help and -h print its usage on stdout and exit 0; a bad option
# prints one line on stderr naming it, with "try --help", and exits 2. `loki --version` and
# `lokid --version` print the CMake project version. Run from the source tree.
# usage: cli_options.sh LOKI VERSION [LOKID]
set -u
loki=$1 version=$2 lokid=${3:-}
tmp=$(mktemp -d /tmp/loki-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# run NAME CMD...: stdout, stderr and the exit status into $tmp/NAME.{out,err,rc}
run() {
    n=$1
    shift
    "$@" >"$tmp/$n.out" 2>"$tmp/$n.err"
    echo $? >"$tmp/$n.rc"
}

# expect_help NAME PREFIX CMD...: exit 0, usage on stdout, nothing on stderr
expect_help() {
    n=$1 prefix=$2
    shift 2
    run "$n" "$@"
    [ "$(cat "$tmp/$n.rc")" = 0 ] || fail "$*: exit $(cat "$tmp/$n.rc"), want 0"
    head -n 1 "$tmp/$n.out" | grep -q "^usage: $prefix" || fail "$*: stdout lacks 'usage: $prefix'"
    [ -s "$tmp/$n.err" ] && fail "$*: wrote to stderr: $(cat "$tmp/$n.err")"
}

# expect_bad NAME WORDS CMD...: exit 2, nothing on stdout, one stderr line with WORDS and
# "try --help"
expect_bad() {
    n=$1 words=$2
    shift 2
    run "$n" "$@"
    [ "$(cat "$tmp/$n.rc")" = 2 ] || fail "$*: exit $(cat "$tmp/$n.rc"), want 2"
    [ -s "$tmp/$n.out" ] && fail "$*: wrote to stdout"
    [ "$(wc -l <"$tmp/$n.err")" -eq 1 ] || fail "$*: want one stderr line, got: $(cat "$tmp/$n.err")"
    grep -qF -- "$words" "$tmp/$n.err" || fail "$*: stderr lacks \"$words\": $(cat "$tmp/$n.err")"
    grep -qF "try --help" "$tmp/$n.err" || fail "$*: stderr lacks 'try --help'"
}

for c in topology plan capacity replay load status metrics profile; do
    expect_help "$c-help" "loki $c" "$loki" "$c" --help
    expect_help "$c-h" "loki $c" "$loki" "$c" -h
    expect_help "help-$c" "loki $c" "$loki" help "$c"
    expect_bad "$c-bogus" "unknown option '--bogus'" "$loki" "$c" --bogus
    expect_bad "$c-bogus-value" "unknown option '--bogus'" "$loki" "$c" --bogus=1
    expect_bad "$c-x" "unknown option '-x'" "$loki" "$c" -x
done
for c in plan capacity replay load status metrics profile; do
    expect_bad "$c-novalue" "option '--topology' needs a value" "$loki" "$c" --topology
done
expect_bad json-value "option '--json' takes no value" "$loki" plan --json=yes
expect_help topology-check-help "loki topology" "$loki" topology check --help
expect_bad topology-check-bogus "unknown option '--bogus'" "$loki" topology check --bogus
expect_bad plan-nodemand "--demand QPS is required" "$loki" plan --topology examples/h200x8.yaml
expect_bad plan-extra "unexpected argument 'extra'" "$loki" plan --topology F --demand 1 extra
expect_help loki-help "loki COMMAND" "$loki" --help
expect_bad loki-bogus "unknown option '--bogus'" "$loki" --bogus
expect_bad loki-nocmd "unknown command 'frobnicate'" "$loki" frobnicate

# --version: the version CMake's project() sets, on stdout, exit 0
run version "$loki" --version
[ "$(cat "$tmp/version.rc")" = 0 ] || fail "loki --version: exit $(cat "$tmp/version.rc")"
grep -q "^loki $version\( (git .*)\)\{0,1\}$" "$tmp/version.out" ||
    fail "loki --version printed '$(cat "$tmp/version.out")', want 'loki $version'"
if [ -n "$lokid" ]; then
    run lokid-version "$lokid" --version
    [ "$(cat "$tmp/lokid-version.rc")" = 0 ] || fail "lokid --version: exit"
    grep -q "^lokid $version\( (git .*)\)\{0,1\}$" "$tmp/lokid-version.out" ||
        fail "lokid --version printed '$(cat "$tmp/lokid-version.out")', want 'lokid $version'"
    expect_help lokid-help "lokid" "$lokid" --help
    expect_help lokid-h "lokid" "$lokid" -h
    expect_bad lokid-bogus "unknown option '--bogus'" "$lokid" --bogus
    expect_bad lokid-novalue "option '--topology' needs a value" "$lokid" --topology
    expect_bad lokid-notopo "--topology FILE is required" "$lokid" --quiet
    expect_bad lokid-metrics-address "--metrics-address wants an IPv4 or IPv6 address" \
        "$lokid" --metrics-address localhost --topology examples/traffic_analysis.yaml
fi

[ $fails -eq 0 ] || { echo "cli_options: $fails failures" >&2; exit 1; }
echo "cli_options: ok"
