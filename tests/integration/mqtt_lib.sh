# tests/integration/mqtt_lib.sh - run the same MQTT client scenarios against
# a private plexmqd (plugin mqtt) and a private Mosquitto, and compare what
# the clients received.  Source it after lib.sh:
#
#   . "$top_srcdir/tests/integration/lib.sh"
#   . "$top_srcdir/tests/integration/mqtt_lib.sh"
#   mq_init NAME
#   scen_foo() { ...; echo "deliveries" >"$MQ_OUT"; mq_bad "reason"; }
#   mq_scenario foo [KEY VALUE]...   # broker keys with Mosquitto's names
#   mq_finish                        # pass / fail / skip
#
# mq_scenario starts a fresh broker for every target (so scenarios never see
# each other's retained messages or sessions), runs scen_NAME with MQ_PORT,
# MQ_TARGET and MQ_OUT (the file of normalised deliveries) set, stops the
# broker and every client the scenario started, and finally compares the
# MQ_OUT files of the targets: any difference is a failure.
#
# Targets: "mosquitto" (when /usr/sbin/mosquitto is installed) and
# "plexmqd" (when plugins/.libs/mqtt.so is built); MQ_TARGETS overrides,
# e.g. MQ_TARGETS=mosquitto to validate the scripts alone.  Without
# mqtt.so the script checks Mosquitto and then SKIPs (77), so the tree stays
# green until the plugin lands.

MQ_MOSQUITTO=${MQ_MOSQUITTO:-/usr/sbin/mosquitto}
MQ_NODE_DIR="$top_srcdir/tests/node"
MQ_PORT=
MQ_TARGET=
MQ_OUT=
MQ_W=
MQ_MOSQ_PID=
mq_failures=
mq_skipped=
mq_clients=
mq_scen=

# mq_init NAME: pmq_init, the client tools, and the targets to run.
mq_init() {
	pmq_init "$1"
	pmq_need mosquitto_pub mosquitto_sub stdbuf python3
	if [ -z "${MQ_TARGETS:-}" ]; then
		MQ_TARGETS=
		[ -x "$MQ_MOSQUITTO" ] && MQ_TARGETS="mosquitto"
		if [ -f "$PMQ_PLUGINS/mqtt.so" ]; then
			MQ_TARGETS="$MQ_TARGETS plexmqd"
		else
			echo "note: $PMQ_PLUGINS/mqtt.so not built; plexmqd not run"
		fi
	fi
	[ -n "$MQ_TARGETS" ] ||
	    pmq_skip "mqtt.so not built and no $MQ_MOSQUITTO to check against"
	mkdir -p "$PMQ_TMP/out"
}

# mq_have_node: true when node and the pinned MQTT.js are there; else
# says why, and mq_finish will SKIP rather than pass.
mq_have_node() {
	if ! command -v node >/dev/null 2>&1; then
		mq_skipped="node not found: MQTT.js cases not run"
	elif [ ! -f "$MQ_NODE_DIR/node_modules/mqtt/package.json" ]; then
		mq_skipped="MQTT.js missing (npm ci in tests/node): its cases not run"
	else
		return 0
	fi
	echo "note: $mq_skipped"
	return 1
}

# mq_bad REASON: record a failure of the current scenario and target.
mq_bad() {
	echo "FAIL [$MQ_TARGET] $mq_scen: $*"
	mq_failures="$mq_failures
  [$MQ_TARGET] $mq_scen: $*"
}

# A free loopback port for Mosquitto (it cannot report a port-0 binding).
_mq_free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# mq_start TARGET [KEY VALUE]...: start TARGET with the given broker keys
# and set MQ_PORT.  Returns non-zero (after mq_bad) when it cannot start.
mq_start() {
	MQ_TARGET=$1
	shift
	MQ_PORT=
	case $MQ_TARGET in
	plexmqd)
		{
			echo "[plexmqd]"
			echo "data_dir = $PMQ_TMP/data"
			echo "log_level = debug"
			echo "[storage]"
			echo "plugin = memory"
			echo "[listener mqtt]"
			echo "plugin = mqtt"
			echo "listen = 127.0.0.1:0"
			while [ $# -ge 2 ]; do
				echo "$1 = $2"
				shift 2
			done
		} >"$PMQ_TMP/mqtt.ini"
		pmq_start "$PMQ_TMP/mqtt.ini"
		MQ_PORT=$(pmq_port mqtt)
		[ -n "$MQ_PORT" ] || { mq_bad "no port for [listener mqtt]"; return 1; }
		;;
	mosquitto)
		_keys=
		while [ $# -ge 2 ]; do
			_keys="$_keys$1 $2
"
			shift 2
		done
		_try=0
		while [ $_try -lt 5 ]; do
			_try=$((_try + 1))
			MQ_PORT=$(_mq_free_port)
			cat >"$PMQ_TMP/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
user root
log_dest stderr
log_type all
${_keys}
EOF
			: >"$PMQ_TMP/mosquitto.run.log"
			"$MQ_MOSQUITTO" -c "$PMQ_TMP/mosquitto.conf" \
			    >"$PMQ_TMP/mosquitto.run.log" 2>&1 &
			MQ_MOSQ_PID=$!
			pmq_track "$MQ_MOSQ_PID"
			pmq_wait_for 10 _mq_mosq_up
			if grep -q 'running$' "$PMQ_TMP/mosquitto.run.log"; then
				return 0
			fi
			mq_stop
			# Lost the port to someone else between choosing and
			# binding it: try another; anything else is fatal.
			grep -q 'Address already in use' \
			    "$PMQ_TMP/mosquitto.log" || break
		done
		mq_bad "mosquitto did not start"
		return 1
		;;
	*)
		pmq_fail "unknown target $MQ_TARGET"
		;;
	esac
}

_mq_mosq_up() {
	grep -q 'running$' "$PMQ_TMP/mosquitto.run.log" && return 0
	kill -0 "$MQ_MOSQ_PID" 2>/dev/null || return 0
	return 1
}

_mq_untrack() {
	_keep=
	for _u in $pmq_extra_pids; do
		[ "$_u" = "$1" ] || _keep="$_keep $_u"
	done
	pmq_extra_pids=$_keep
}

# mq_stop: stop the current broker (keeping Mosquitto's log).
mq_stop() {
	if [ -n "$MQ_MOSQ_PID" ]; then
		kill "$MQ_MOSQ_PID" 2>/dev/null
		wait "$MQ_MOSQ_PID" 2>/dev/null
		_mq_untrack "$MQ_MOSQ_PID"
		MQ_MOSQ_PID=
		cat "$PMQ_TMP/mosquitto.run.log" >>"$PMQ_TMP/mosquitto.log"
	fi
	pmq_stop
}

# mq_sub NAME [mosquitto_sub ARGS]...: start a subscriber in the background,
# output (with -d debug lines) in $MQ_W/NAME.out, and wait (10 s) until its
# SUBACK arrived.  Print deliveries with -F 'MSG ...' so mq_msgs finds them.
mq_sub() {
	_n=$1
	shift
	mq_sub_nowait "$_n" "$@"
	pmq_wait_for 10 grep -q '^Subscribed (mid' "$MQ_W/$_n.out" || {
		mq_bad "subscriber $_n got no SUBACK"
		return 1
	}
}

mq_sub_nowait() {
	_n=$1
	shift
	: >"$MQ_W/$_n.out"
	stdbuf -oL mosquitto_sub -p "$MQ_PORT" -d "$@" >>"$MQ_W/$_n.out" 2>&1 &
	eval "mq_pid_$_n=$!"
	mq_clients="$mq_clients $!"
	pmq_track $!
}

# mq_pid NAME: the PID of a client started by mq_sub.
mq_pid() {
	eval "echo \$mq_pid_$1"
}

# mq_kill NAME [SIGNAL]: signal one client (default TERM) and reap it.
mq_kill() {
	_p=$(mq_pid "$1")
	[ -n "$_p" ] || return 0
	kill -"${2:-TERM}" "$_p" 2>/dev/null
	wait "$_p" 2>/dev/null
	_mq_untrack "$_p"
	eval "mq_pid_$1="
}

# mq_reap NAME [SECONDS]: wait (default 10 s) for a client that exits by
# itself (-C, -E, -W); returns its exit status, 124 on timeout (then killed).
mq_reap() {
	_p=$(mq_pid "$1")
	pmq_wait_for "${2:-10}" _mq_gone "$_p" || { mq_kill "$1"; return 124; }
	wait "$_p"
	_rc=$?
	_mq_untrack "$_p"
	eval "mq_pid_$1="
	return $_rc
}

_mq_gone() {
	! kill -0 "$1" 2>/dev/null ||
	    grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# mq_pub [mosquitto_pub ARGS]...: publish and wait for mosquitto_pub to
# finish (it returns after the QoS 1/2 flow completed); debug output is
# appended to $MQ_W/pub.out.  Returns mosquitto_pub's status.
mq_pub() {
	if command -v timeout >/dev/null 2>&1; then
		timeout 10 mosquitto_pub -p "$MQ_PORT" -d "$@" >>"$MQ_W/pub.out" 2>&1
	else
		mosquitto_pub -p "$MQ_PORT" -d "$@" >>"$MQ_W/pub.out" 2>&1
	fi
}

# _mq_complete FILE: FILE without a last line still being written (a
# 512 KiB hex line arrives in several writes).
_mq_complete() {
	# One snapshot, so the test and the output see the same bytes.
	cat "$1" >"$1.snap" 2>/dev/null || return 0
	if [ -n "$(tail -c 1 "$1.snap")" ]; then
		sed '$d' "$1.snap"
	else
		cat "$1.snap"
	fi
}

# mq_msgs NAME: the deliveries a subscriber printed (lines starting "MSG ").
mq_msgs() {
	_mq_complete "$MQ_W/$1.out" | grep '^MSG '
}

# mq_count NAME: how many deliveries.
mq_count() {
	_mq_complete "$MQ_W/$1.out" | grep -c '^MSG '
}

_mq_has() {
	[ "$(mq_count "$1")" -ge "$2" ]
}

# mq_wait_msgs NAME N [SECONDS]: wait (default 10 s) until NAME printed N
# deliveries.  Records a failure and returns 1 when it does not.
mq_wait_msgs() {
	pmq_wait_for "${3:-10}" _mq_has "$1" "$2" && return 0
	mq_bad "$1: $(mq_count "$1") of $2 messages arrived"
	return 1
}

# mq_expect NAME EXPECTED_TEXT: NAME's deliveries are exactly these lines.
mq_expect() {
	printf '%s\n' "$2" >"$MQ_W/expect.txt"
	mq_msgs "$1" >"$MQ_W/got.txt"
	if ! cmp -s "$MQ_W/expect.txt" "$MQ_W/got.txt"; then
		mq_bad "$1 received other than expected:
$(diff "$MQ_W/expect.txt" "$MQ_W/got.txt" | sed 's/^/      /')"
		return 1
	fi
}

# mq_node SCRIPT ARGS...: run tests/node/SCRIPT against MQ_PORT (30 s max).
mq_node() {
	_s=$1
	shift
	if command -v timeout >/dev/null 2>&1; then
		timeout 30 node "$MQ_NODE_DIR/$_s" "$MQ_PORT" "$@"
	else
		node "$MQ_NODE_DIR/$_s" "$MQ_PORT" "$@"
	fi
}

_mq_end_clients() {
	for _p in $mq_clients; do
		kill "$_p" 2>/dev/null
		wait "$_p" 2>/dev/null
		_mq_untrack "$_p"
	done
	mq_clients=
}

# mq_scenario NAME [KEY VALUE]...: run scen_NAME against every target, each
# with a fresh broker configured with the keys, then compare deliveries.
mq_scenario() {
	mq_scen=$1
	shift
	_first=
	_took=
	_mq_i=0
	for _t in $MQ_TARGETS; do
		# Numbered, so MQ_TARGETS="mosquitto mosquitto" (a check that
		# the scenarios are deterministic) keeps both runs apart.
		_mq_i=$((_mq_i + 1))
		MQ_W="$PMQ_TMP/w/$_mq_i-$_t/$mq_scen"
		MQ_OUT="$PMQ_TMP/out/$_mq_i-$_t/$mq_scen"
		mkdir -p "$MQ_W" "$PMQ_TMP/out/$_mq_i-$_t"
		: >"$MQ_OUT"
		: >"$MQ_W/pub.out"
		_t0=$(date +%s)
		if mq_start "$_t" "$@"; then
			"scen_$mq_scen"
		fi
		_mq_end_clients
		if [ "$_t" = plexmqd ] && ! pmq_alive; then
			mq_bad "plexmqd died"
		fi
		mq_stop
		_took="$_took $_t $(($(date +%s) - _t0))s"
		if [ -z "$_first" ]; then
			_first=$_mq_i-$_t
		elif ! cmp -s "$PMQ_TMP/out/$_first/$mq_scen" "$MQ_OUT"; then
			MQ_TARGET="$_first vs $_mq_i-$_t"
			mq_bad "deliveries differ:
$(diff "$PMQ_TMP/out/$_first/$mq_scen" "$MQ_OUT" | sed 's/^/      /')"
		fi
	done
	echo "scenario $mq_scen: done:$_took"
}

# mq_finish: fail with every recorded failure, skip when plexmqd or some
# cases did not run, pass otherwise.
mq_finish() {
	# MQ_KEEP=DIR keeps every client's output and the deliveries there.
	if [ -n "${MQ_KEEP:-}" ]; then
		mkdir -p "$MQ_KEEP" && cp -r "$PMQ_TMP/out" "$PMQ_TMP/w" \
		    "$MQ_KEEP"/ && cp "$PMQ_TMP"/*.log "$MQ_KEEP"/ 2>/dev/null
	fi
	if [ -n "$mq_failures" ]; then
		echo "failures:$mq_failures"
		if [ -f "$PMQ_TMP/mosquitto.log" ] &&
		    echo "$mq_failures" | grep -q '\[mosquitto'; then
			echo "---- mosquitto log (tail) ----"
			tail -n 60 "$PMQ_TMP/mosquitto.log"
		fi
		pmq_fail "$(echo "$mq_failures" | grep -c '^  \[') failure(s)"
	fi
	[ -z "$mq_skipped" ] || pmq_skip "$mq_skipped"
	case " $MQ_TARGETS " in
	*" plexmqd "*) pmq_pass ;;
	esac
	pmq_skip "plexmqd's mqtt.so not built; checked against $MQ_TARGETS only"
}
