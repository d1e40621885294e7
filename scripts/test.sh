#!/bin/sh
# scripts/test.sh - install what is missing, build, and run every test:
# the normal build's `make check`, the same suite built with ASan+UBSan,
# and `make distcheck`.  Ends with one "N passed, N failed" line.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" || exit 1

pass=0; fail=0; skip=0; status=0
count() { # count LOGDIR: add up automake's test-suite.log results
	f="$1/test-suite.log"
	[ -f "$f" ] || return 0
	p=$(sed -n 's/^# PASS: *//p' "$f" | head -1)
	x=$(sed -n 's/^# FAIL: *//p' "$f" | head -1)
	e=$(sed -n 's/^# ERROR: *//p' "$f" | head -1)
	s=$(sed -n 's/^# SKIP: *//p' "$f" | head -1)
	pass=$((pass + ${p:-0})); fail=$((fail + ${x:-0} + ${e:-0})); skip=$((skip + ${s:-0}))
}
run_suite() { # run_suite NAME BUILDDIR [configure args]
	name=$1; bdir=$2; shift 2
	echo "== $name: build"
	if ! "$top/scripts/build.sh" "$bdir" "$@"; then
		echo "== $name: BUILD FAILED"; fail=$((fail + 1)); status=1; return
	fi
	echo "== $name: make check"
	if ! make -C "$bdir" -j"$(nproc)" check >"$bdir/check.out" 2>&1; then
		status=1
		cat "$bdir/check.out" | grep -E '^(FAIL|ERROR)' || true
		for l in $(find "$bdir/tests" -name '*.log' 2>/dev/null); do
			if grep -qE '^:test-result: (FAIL|ERROR)' "${l%.log}.trs" 2>/dev/null; then
				echo "---- $l"; tail -n 60 "$l"
			fi
		done
	fi
	grep -E '^(PASS|FAIL|SKIP|ERROR|XFAIL|XPASS):' "$bdir/check.out" || true
	count "$bdir"
}

run_suite "default build" "$top/build"
run_suite "sanitizers (ASan+UBSan)" "$top/build-san" --enable-sanitizers --enable-debug

echo "== fuzz: a short libFuzzer run of every parser"
if make -C "$top/build" fuzz-run FUZZ_SECONDS="${FUZZ_SECONDS:-15}" >"$top/build/fuzz.out" 2>&1; then
	grep -E '^fuzz:|Done' "$top/build/fuzz.out" || true
	echo "fuzz: ok"; pass=$((pass + 1))
else
	echo "fuzz: FAILED"; tail -n 40 "$top/build/fuzz.out"; fail=$((fail + 1)); status=1
fi

echo "== make distcheck"
if make -C "$top/build" distcheck >"$top/build/distcheck.out" 2>&1; then
	echo "distcheck: ok"; pass=$((pass + 1))
else
	echo "distcheck: FAILED"; tail -n 40 "$top/build/distcheck.out"; fail=$((fail + 1)); status=1
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] || status=1
exit $status
