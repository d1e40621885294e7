#!/bin/sh
# config_errors.sh - `plexmqd --check-config` end to end: a bad config exits
# non-zero with "FILE:LINE:" on stderr at the right line, a good one exits 0.
#
# Run by `make check` with top_srcdir and top_builddir in the environment;
# by hand: top_builddir=. sh tests/integration/config_errors.sh
# Exit status follows automake: 0 pass, 1 fail, 77 skip, 99 hard error.

set -u

: "${top_builddir:=.}"
daemon="$top_builddir/plexmqd"
plugins="$top_builddir/plugins/.libs"

if [ ! -x "$daemon" ]; then
	echo "SKIP: $daemon is not built"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-config.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
trap 'exit 99' INT TERM HUP

# --check-config must return on its own; never let a daemon that starts
# serving instead hang the test suite.
if command -v timeout >/dev/null 2>&1; then
	limit="timeout 30"
else
	limit=""
fi

failures=0

fail() {
	echo "FAIL: $*"
	echo "--- stderr:"
	cat "$tmp/stderr"
	echo "---"
	failures=$((failures + 1))
}

# check NAME: run --check-config on $tmp/NAME.ini; sets $status.
check() {
	status=0
	$limit "$daemon" --check-config --plugin-dir "$plugins" \
	    -c "$tmp/$1.ini" >"$tmp/stdout" 2>"$tmp/stderr" || status=$?
}

# expect_error NAME LINE TEXT: rejected, and stderr says FILE:LINE: ...TEXT.
expect_error() {
	check "$1"
	if [ "$status" -eq 0 ]; then
		fail "$1.ini: --check-config exited 0, expected an error"
	elif [ "$status" -eq 124 ] && [ -n "$limit" ]; then
		fail "$1.ini: --check-config did not return"
	elif ! grep -F -- "$tmp/$1.ini:$2:" "$tmp/stderr" >/dev/null; then
		fail "$1.ini: stderr lacks \"$tmp/$1.ini:$2:\""
	elif ! grep -F -- "$3" "$tmp/stderr" >/dev/null; then
		fail "$1.ini: stderr lacks \"$3\""
	else
		echo "ok: $1.ini rejected at line $2"
	fi
}

# A good config, the base of the bad ones below.
cat >"$tmp/good.ini" <<EOF
; good.ini - written by config_errors.sh
[plexmqd]
data_dir = $tmp/data
log_level = info

[storage]
plugin = memory

[listener test]
plugin = tcp
listen = 127.0.0.1:0

[rule all]
match = #
EOF

check good
if [ "$status" -ne 0 ]; then
	fail "good.ini: --check-config exited $status, expected 0"
else
	echo "ok: good.ini accepted"
fi

# A misspelt key of ours, on line 4.
cat >"$tmp/typo.ini" <<EOF
; typo.ini
[plexmqd]
data_dir = $tmp/data
log_levl = info

[listener test]
plugin = tcp
listen = 127.0.0.1:0
EOF
expect_error typo 4 "log_levl"

# inih's ':' separator, on line 9.
cat >"$tmp/colon.ini" <<EOF
; colon.ini
[plexmqd]
data_dir = $tmp/data

[listener test]
plugin = tcp
listen = 127.0.0.1:0
[rule r]
match: sensors/#
EOF
expect_error colon 9 "'='"

# A listener without an address: reported at its header, line 5.
cat >"$tmp/nolisten.ini" <<EOF
; nolisten.ini
[plexmqd]
data_dir = $tmp/data

[listener test]
plugin = tcp
EOF
expect_error nolisten 5 "listen"

# A key only the plugin knows is wrong: the plugin's error, line 8.
cat >"$tmp/pluginkey.ini" <<EOF
; pluginkey.ini
[plexmqd]
data_dir = $tmp/data

[listener test]
plugin = tcp
listen = 127.0.0.1:0
no_such_tcp_key = 1
EOF
expect_error pluginkey 8 "no_such_tcp_key"

# A missing file is an error too, naming the file.
status=0
$limit "$daemon" --check-config --plugin-dir "$plugins" \
    -c "$tmp/absent.ini" >"$tmp/stdout" 2>"$tmp/stderr" || status=$?
if [ "$status" -eq 0 ]; then
	fail "absent.ini: --check-config exited 0"
elif ! grep -F -- "$tmp/absent.ini" "$tmp/stderr" >/dev/null; then
	fail "absent.ini: stderr does not name the file"
else
	echo "ok: absent.ini rejected"
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures check(s) failed"
	exit 1
fi
exit 0
