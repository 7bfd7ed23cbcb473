#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# ./build.sh with a stand-in `cmake` (and `dpkg-query`) first on PATH: the stand-in's
# `--build` prints a long make-style build (100 progress lines, scanning chatter, a warning,
# up-to-date targets) and exits with $FAKE_RC. Asserted: build.sh shows the progress, one line
# per 10 % at most, keeps the warning and errors, drops the chatter, and exits with the
# build's failure (and then runs no tests). Nothing is built; the source tree is not touched.
# usage: build_progress.sh SOURCE_DIR
set -u
src=$1
tmp=$(mktemp -d /tmp/loki-buildsh-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}
mkdir "$tmp/bin"
cat >"$tmp/bin/cmake" <<'FAKE'
#!/bin/sh
[ "$1" = --build ] || exit 0 # configure
echo "[  0%] Built target loki_common"
for i in $(seq 1 100); do
    [ $((i % 7)) -eq 0 ] && echo "Scanning dependencies of target t$i"
    [ $((i % 9)) -eq 0 ] && echo "Consolidate compiler generated dependencies of target t$i"
    printf '[%3d%%] Building C object dir/CMakeFiles/t.dir/f%d.c.o\n' "$i" "$i"
    [ $i -eq 42 ] && echo "dir/f42.c:3:5: warning: unused variable 'y' [-Wunused-variable]"
done
[ "${FAKE_RC:-0}" -ne 0 ] && echo "dir/f99.c:1:1: error: expected ';' before '}' token"
echo "[100%] Built target loki"
exit "${FAKE_RC:-0}"
FAKE
printf '#!/bin/sh\nprintf "install ok installed"\n' >"$tmp/bin/dpkg-query"
chmod +x "$tmp/bin/cmake" "$tmp/bin/dpkg-query"

# a successful build
PATH="$tmp/bin:$PATH" LOKI_BUILD_DIR="$tmp/b" "$src/build.sh" >"$tmp/ok.out" 2>&1
rc=$?
[ $rc -eq 0 ] || fail "build.sh exit $rc for a good build: $(cat "$tmp/ok.out")"
n=$(grep -c '^\[ *[0-9]*%\]' "$tmp/ok.out")
[ "$n" -ge 9 ] && [ "$n" -le 11 ] || fail "want 9-11 progress lines, got $n: $(cat "$tmp/ok.out")"
grep -q '^\[100%\] Building' "$tmp/ok.out" || fail "the last step (100 %) is not shown"
grep -q 'warning: unused variable' "$tmp/ok.out" || fail "the warning was swallowed"
grep -q -e 'Scanning dependencies' -e 'Consolidate' -e 'Built target' "$tmp/ok.out" &&
    fail "chatter or up-to-date targets shown: $(cat "$tmp/ok.out")"

# a failing build: its exit status, its error shown, and `test` stops before ctest
FAKE_RC=2 PATH="$tmp/bin:$PATH" LOKI_BUILD_DIR="$tmp/b" "$src/build.sh" >"$tmp/bad.out" 2>&1
rc=$?
[ $rc -eq 2 ] || fail "build.sh exit $rc for a failed build, want 2"
grep -q 'error: expected' "$tmp/bad.out" || fail "the error was swallowed"
FAKE_RC=2 PATH="$tmp/bin:$PATH" LOKI_BUILD_DIR="$tmp/b" "$src/build.sh" test >"$tmp/test.out" 2>&1
rc=$?
[ $rc -ne 0 ] || fail "build.sh test exit 0 after a failed build"
grep -q 'Test project' "$tmp/test.out" && fail "build.sh test ran ctest after a failed build"

[ $fails -eq 0 ] || { echo "build_progress: $fails failures" >&2; exit 1; }
echo "build_progress: ok"
