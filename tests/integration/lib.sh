# tests/integration/lib.sh - shared by the integration tests: a private
# temp dir, a private plexmqd on ephemeral loopback ports, bounded waits,
# cleanup that stops only what the test started, and the daemon's log
# shown only on failure.  Source it from a POSIX sh test:
#
#   . "$top_srcdir/tests/integration/lib.sh"
#   pmq_init NAME                  # temp dir $PMQ_TMP, traps
#   cat >"$PMQ_TMP/plexmq.ini" <<EOF ... listen = 127.0.0.1:0 ... EOF
#   pmq_start "$PMQ_TMP/plexmq.ini" # starts plexmqd, waits until listening
#   port=$(pmq_port tcp)           # the port [listener tcp] bound
#   ...; pmq_pass                  # or pmq_fail "reason"
#
# Listeners bind port 0 and the test reads the port from the daemon's log
# line "listener NAME: listening on ADDR:PORT", so no port can be taken
# by another process between choosing and binding it.

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
PMQ_DAEMON="$top_builddir/plexmqd"
PMQ_PLUGINS="$top_builddir/plugins/.libs"
PMQ_PID=
PMQ_TMP=
pmq_status=1
pmq_extra_pids=

pmq_skip() {
	echo "SKIP: $*"
	pmq_status=77
	exit 77
}

pmq_fail() {
	echo "FAIL: $*"
	pmq_status=1
	exit 1
}

pmq_pass() {
	pmq_status=0
	exit 0
}

pmq_cleanup() {
	for p in $pmq_extra_pids; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	pmq_stop
	if [ "$pmq_status" -ne 0 ] && [ "$pmq_status" -ne 77 ] &&
	   [ -f "$PMQ_TMP/daemon.log" ]; then
		echo "---- plexmqd log ----"
		tail -n 200 "$PMQ_TMP/daemon.log"
		echo "---- end of plexmqd log ----"
	fi
	[ -n "$PMQ_TMP" ] && rm -rf "$PMQ_TMP"
	# A test that ends without pmq_pass has not passed.
	exit "$pmq_status"
}

# pmq_init NAME: check the daemon exists, make $PMQ_TMP, install traps.
pmq_init() {
	[ -x "$PMQ_DAEMON" ] || pmq_skip "$PMQ_DAEMON not built"
	PMQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-$1.XXXXXX") || exit 1
	mkdir -p "$PMQ_TMP/data"
	trap 'pmq_cleanup' EXIT
	trap 'exit 1' HUP INT TERM
}

# pmq_need CMD...: skip unless every command exists.
pmq_need() {
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || pmq_skip "$c not found"
	done
}

# pmq_track PID: a helper process (client, other broker) to stop on exit.
pmq_track() {
	pmq_extra_pids="$pmq_extra_pids $1"
}

# pmq_wait_for SECONDS CMD...: run CMD every 50 ms until it succeeds or
# SECONDS pass; returns CMD's last status.
pmq_wait_for() {
	_limit=$(( $1 * 20 ))
	shift
	_i=0
	while [ "$_i" -lt "$_limit" ]; do
		"$@" && return 0
		_i=$((_i + 1))
		sleep 0.05
	done
	"$@"
}

pmq_alive() {
	[ -n "$PMQ_PID" ] && kill -0 "$PMQ_PID" 2>/dev/null &&
	    ! grep -q '^State:.*Z' "/proc/$PMQ_PID/status" 2>/dev/null
}

_pmq_started() {
	pmq_alive || return 0 # stop waiting: it exited
	grep -q ' running (pid' "$PMQ_TMP/daemon.log" 2>/dev/null
}

# pmq_start CONFIG [ARGS...]: start plexmqd in the background, logging to
# $PMQ_TMP/daemon.log (appended, so restarts keep history); wait (10 s)
# until it runs.  Fails the test if it exits instead.
pmq_start() {
	_cfg=$1
	shift
	: >>"$PMQ_TMP/daemon.log"
	# Only lines from this start count.
	_mark=$(wc -l <"$PMQ_TMP/daemon.log")
	PMQ_LOG_FROM=$((_mark + 1))
	"$PMQ_DAEMON" -c "$_cfg" --plugin-dir "$PMQ_PLUGINS" "$@" \
	    >>"$PMQ_TMP/daemon.log" 2>&1 &
	PMQ_PID=$!
	_i=0
	while [ $_i -lt 200 ]; do
		pmq_alive || pmq_fail "plexmqd exited during start-up"
		tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
		    grep -q ' running (pid' && return 0
		_i=$((_i + 1))
		sleep 0.05
	done
	pmq_fail "plexmqd did not start within 10 s"
}

# pmq_port NAME: the port [listener NAME] bound in the current run.
pmq_port() {
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    sed -n "s/.*listener $1: listening on .*:\\([0-9][0-9]*\\) (.*/\\1/p" |
	    head -n 1
}

# pmq_stop: SIGTERM and wait (10 s, then SIGKILL).  Returns its exit code.
pmq_stop() {
	[ -n "$PMQ_PID" ] || return 0
	kill -TERM "$PMQ_PID" 2>/dev/null
	_i=0
	while [ $_i -lt 200 ] && kill -0 "$PMQ_PID" 2>/dev/null &&
	    ! grep -q '^State:.*Z' "/proc/$PMQ_PID/status" 2>/dev/null; do
		_i=$((_i + 1))
		sleep 0.05
	done
	kill -KILL "$PMQ_PID" 2>/dev/null
	wait "$PMQ_PID" 2>/dev/null
	_rc=$?
	PMQ_PID=
	return $_rc
}

# pmq_kill9: crash the daemon (kill -9) and reap it.
pmq_kill9() {
	[ -n "$PMQ_PID" ] || return 0
	kill -KILL "$PMQ_PID" 2>/dev/null
	wait "$PMQ_PID" 2>/dev/null
	PMQ_PID=
}
