#!/bin/sh
# zoo.sh - the bad-plugin zoo against the real daemon: for each module of
# tests/zoo, `plexmqd --check-config` must refuse the config that names it
# as a listener's plugin, exit non-zero (not by a signal) and print one
# line naming the module's file and the specific reason; the good module
# must pass.  Also a text file posing as a plugin, a missing file, and a
# storage plugin named as a transport.
#
# Run by `make check` with top_srcdir and top_builddir set (the zoo
# modules are check_LTLIBRARIES, built by `make check` itself); exit 0
# pass, 1 fail, 77 skip.  The daemon's output is printed only on failure.

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
daemon="$top_builddir/plexmqd"
plugins="$top_builddir/plugins/.libs"
zoo="$top_builddir/tests/zoo/.libs"

if [ ! -x "$daemon" ]; then
	echo "SKIP: $daemon not built"
	exit 77
fi
if [ ! -f "$zoo/good.so" ]; then
	echo "SKIP: zoo modules not built in $zoo (run make check)"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-zoo.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
mkdir "$tmp/data" || exit 1

# --check-config must not serve; bound it anyway so a hang fails the test
# instead of stalling make check.
run_timeout=
if command -v timeout >/dev/null 2>&1; then
	run_timeout="timeout 30"
fi

failures=0

fail() {
	echo "FAIL: $*"
	echo "---- plexmqd output ----"
	cat "$tmp/out" 2>/dev/null
	echo "---- end of plexmqd output ----"
	failures=$((failures + 1))
}

# check_config PLUGIN_PATH: write a config whose listener uses it and run
# --check-config; sets $rc, output in $tmp/out.
check_config() {
	cat >"$tmp/zoo.conf" <<EOF
[plexmqd]
data_dir = $tmp/data

[storage]
plugin = memory

[listener x]
plugin = $1
listen = 127.0.0.1:0
EOF
	$run_timeout "$daemon" --check-config -c "$tmp/zoo.conf" \
	    --plugin-dir "$plugins" >"$tmp/out" 2>&1
	rc=$?
}

# expect_refused PLUGIN_PATH FILE PHRASE: refused, exit 1..123 (not a
# signal, not timeout's 124), and one output line holds both FILE and
# PHRASE.
expect_refused() {
	check_config "$1"
	if [ "$rc" -eq 0 ]; then
		fail "$2: --check-config accepted it"
	elif [ "$rc" -ge 124 ]; then
		fail "$2: --check-config died or hung (exit $rc)"
	elif ! grep -F -- "$2" "$tmp/out" | grep -F -q -- "$3"; then
		fail "$2: no line naming the file with \"$3\""
	else
		echo "ok: $2 refused ($3)"
	fi
}

# NAME|reason phrase, one per bad module.
while IFS='|' read -r name phrase; do
	[ -n "$name" ] || continue
	if [ ! -f "$zoo/$name.so" ]; then
		echo "FAIL: $zoo/$name.so not built"
		failures=$((failures + 1))
		continue
	fi
	expect_refused "$zoo/$name.so" "$name.so" "$phrase"
done <<'EOF'
bad_magic|bad magic
bad_major|ABI major 2, this plexmqd supports 1
bad_minor|this plexmqd provides 1.
no_descriptor|no descriptor pmq_plugin_v1
truncated_ops|transport ops table is truncated
small_descriptor|descriptor is truncated
null_init|descriptor has no init
bad_kind|unknown plugin kind 99
init_fails|init failed
EOF

# Not plugins at all.
printf 'not an ELF file, only text named like a plugin\n%s\n' \
    "long enough that dlopen reads a whole ELF header's worth of it" \
    >"$tmp/notaplugin.so"
expect_refused "$tmp/notaplugin.so" "notaplugin.so" "invalid ELF header"
expect_refused "$tmp/missing.so" "missing.so" "no such file"

# A real plugin of the wrong kind.
if [ -f "$plugins/memory.so" ]; then
	expect_refused "$plugins/memory.so" "memory.so" \
	    "is a storage plugin, expected a transport"
fi

# The good one passes.
check_config "$zoo/good.so"
if [ "$rc" -ne 0 ]; then
	fail "good.so: --check-config exit $rc"
else
	echo "ok: good.so accepted"
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
exit 0
