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
			# MQ_PLEXMQD_KEYS: extra [plexmqd] lines (plexmqd only).
			[ -z "${MQ_PLEXMQD_KEYS:-}" ] ||
			    printf '%s\n' "$MQ_PLEXMQD_KEYS"
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

# mq_scenario_only TARGET NAME [KEY VALUE]...: mq_scenario on TARGET alone
# (when it is among the targets), for what the other broker lacks.
mq_scenario_only() {
	_only=$1
	shift
	case " $MQ_TARGETS " in
	*" $_only "*) ;;
	*) echo "scenario $1: not run ($_only is not a target)"; return 0 ;;
	esac
	_save_targets=$MQ_TARGETS
	MQ_TARGETS=$_only
	mq_scenario "$@"
	MQ_TARGETS=$_save_targets
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

# mq_py [ARGS]...: run the python3 program on stdin (at most 40 s) with
# `mqraw` importable: a raw MQTT client over a socket, for what the real
# clients cannot do or show (malformed input, not acknowledging, exact
# timing, packet inspection).  MQ_PORT and MQ_TARGET are in its
# environment; mqraw.PORT is the broker's port.
mq_py() {
	[ -f "$PMQ_TMP/mqraw.py" ] || _mq_pylib >"$PMQ_TMP/mqraw.py"
	MQ_PORT=$MQ_PORT MQ_TARGET=$MQ_TARGET PYTHONPATH="$PMQ_TMP" \
	    timeout 40 python3 - "$@"
}

_mq_pylib() {
	cat <<'PYEOF'
"""mqraw: a minimal raw MQTT 3.1/3.1.1/5 client for tests (written by
tests/integration/mqtt_lib.sh).  Every receive has a timeout."""
import os, socket, struct, time

PORT = int(os.environ.get('MQ_PORT', '1883'))
TARGET = os.environ.get('MQ_TARGET', '')
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, \
    SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = \
    range(1, 16)
_U8 = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16 = {0x13, 0x21, 0x22, 0x23}
_U32 = {0x02, 0x11, 0x18, 0x27}
_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BIN = {0x09, 0x16}


class Closed(Exception):
    pass


def varint(n):
    out = b''
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n:
            return out


def s(x):
    x = x.encode() if isinstance(x, str) else x
    return struct.pack('!H', len(x)) + x


def props(*pairs):
    """props((id, value), ...) -> the encoded property block."""
    body = b''
    for pid, v in pairs:
        body += bytes([pid])
        if pid in _U8:
            body += bytes([v])
        elif pid in _U16:
            body += struct.pack('!H', v)
        elif pid in _U32:
            body += struct.pack('!I', v)
        elif pid == 0x0B:
            body += varint(v)
        elif pid == 0x26:
            body += s(v[0]) + s(v[1])
        else:
            body += s(v)
    return varint(len(body)) + body


def parse_props(b, i):
    """-> (dict id -> value or list for user props/sub ids, next index)."""
    n, m, ln = 0, 1, 0
    while True:
        d = b[i]; i += 1
        ln += (d & 127) * m; m *= 128
        if not d & 128:
            break
    end, out = i + ln, {}
    while i < end:
        pid = b[i]; i += 1
        if pid in _U8:
            v = b[i]; i += 1
        elif pid in _U16:
            v = struct.unpack('!H', b[i:i + 2])[0]; i += 2
        elif pid in _U32:
            v = struct.unpack('!I', b[i:i + 4])[0]; i += 4
        elif pid == 0x0B:
            v, m = 0, 1
            while True:
                d = b[i]; i += 1
                v += (d & 127) * m; m *= 128
                if not d & 128:
                    break
        elif pid == 0x26:
            l1 = struct.unpack('!H', b[i:i + 2])[0]
            k = b[i + 2:i + 2 + l1]; i += 2 + l1
            l2 = struct.unpack('!H', b[i:i + 2])[0]
            v = (k, b[i + 2:i + 2 + l2]); i += 2 + l2
        else:
            ln2 = struct.unpack('!H', b[i:i + 2])[0]
            v = b[i + 2:i + 2 + ln2]; i += 2 + ln2
        if pid in (0x26, 0x0B):
            out.setdefault(pid, []).append(v)
        else:
            out[pid] = v
    return out, end


class Packet:
    def __init__(self, first, body, v):
        self.type, self.flags, self.body = first >> 4, first & 15, body
        self.props, self.reason = {}, None
        if self.type == PUBLISH:
            self.qos, self.dup = (first >> 1) & 3, (first >> 3) & 1
            self.retain = first & 1
            tl = struct.unpack('!H', body[:2])[0]
            self.topic, i = body[2:2 + tl], 2 + tl
            self.pid = 0
            if self.qos:
                self.pid = struct.unpack('!H', body[i:i + 2])[0]; i += 2
            if v == 5:
                self.props, i = parse_props(body, i)
            self.payload = body[i:]
        elif self.type == CONNACK:
            self.present, self.reason = body[0] & 1, body[1]
            if v == 5 and len(body) > 2:
                self.props, _ = parse_props(body, 2)
        elif self.type == DISCONNECT:
            self.reason = body[0] if body else 0
            if len(body) > 1:
                self.props, _ = parse_props(body, 1)
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK,
                           UNSUBACK):
            self.pid = struct.unpack('!H', body[:2])[0]
            if self.type == SUBACK:
                i = 2
                if v == 5:
                    self.props, i = parse_props(body, 2)
                self.codes = list(body[i:])
            elif len(body) > 2:
                self.reason = body[2]

    def __repr__(self):
        return '<%d %r>' % (self.type, self.body[:40])


class Client:
    def __init__(self, v=4, rcvbuf=None, port=None):
        self.v = v
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(('127.0.0.1', port or PORT))
        self.buf = b''

    def raw(self, b):
        self.sock.sendall(b)

    def send(self, first, body):
        self.raw(bytes([first]) + varint(len(body)) + body)

    def recv(self, timeout=5.0):
        """The next packet; raises Closed on EOF, TimeoutError."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, m, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    d = self.buf[i]; i += 1
                    n += (d & 127) * m; m *= 128
                    if not d & 128:
                        if len(self.buf) >= i + n:
                            p = Packet(self.buf[0], self.buf[i:i + n], self.v)
                            self.buf = self.buf[i + n:]
                            return p
                        break
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError('no packet in %.1fs' % timeout)
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError('no packet in %.1fs' % timeout)
            except ConnectionError:
                d = b''
            if not d:
                raise Closed()
            self.buf += d

    def expect(self, typ, timeout=5.0):
        p = self.recv(timeout)
        if p.type != typ:
            raise AssertionError('expected type %d, got %r' % (typ, p))
        return p

    def until_closed(self, timeout=5.0):
        """Packets received until the broker closed; TimeoutError if not."""
        got = []
        while True:
            try:
                got.append(self.recv(max(0.01, timeout)))
            except Closed:
                return got

    def connect(self, cid, keepalive=60, clean=True, prop=None, will=None,
                proto=None, level=None):
        v = self.v
        proto = proto or (b'MQIsdp' if v == 3 else b'MQTT')
        flags = 2 if clean else 0
        tail = b''
        if will:
            topic, payload, qos, retain, wprops = (will + (b'',))[:5] \
                if len(will) == 4 else will
            flags |= 4 | qos << 3 | (32 if retain else 0)
            if v == 5:
                tail += wprops or props()
            tail += s(topic) + s(payload)
        body = s(proto) + bytes([level or v, flags]) + \
            struct.pack('!H', keepalive)
        if v == 5:
            body += prop if prop is not None else props()
        self.send(0x10, body + s(cid) + tail)
        return self.expect(CONNACK)

    def subscribe(self, pid, flt, opts=1, prop=None):
        body = struct.pack('!H', pid)
        if self.v == 5:
            body += prop if prop is not None else props()
        self.send(0x82, body + s(flt) + bytes([opts]))
        return self.expect(SUBACK)

    def publish(self, topic, payload, qos=0, pid=0, retain=False, dup=False,
                prop=None):
        body = s(topic)
        if qos:
            body += struct.pack('!H', pid)
        if self.v == 5:
            body += prop if prop is not None else props()
        payload = payload.encode() if isinstance(payload, str) else payload
        self.send(0x30 | qos << 1 | (8 if dup else 0) | (1 if retain else 0),
                  body + payload)

    def ack(self, typ, pid):
        self.send(typ << 4 | (2 if typ == PUBREL else 0),
                  struct.pack('!H', pid))

    def disconnect(self, reason=None):
        self.send(0xE0, b'' if reason is None else bytes([reason, 0]))
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
PYEOF
}

# mq_pyscen [ARGS]...: run a mq_py program as (part of) a scenario: its
# stdout lines are deliveries (appended to MQ_OUT), except lines starting
# "FAIL " which are failures (mq_bad); stderr is shown (notes).
mq_pyscen() {
	mq_py "$@" >"$MQ_W/py.out" 2>"$MQ_W/py.err"
	_rc=$?
	grep -v '^FAIL ' "$MQ_W/py.out" >>"$MQ_OUT"
	sed 's/^/    /' "$MQ_W/py.err"
	grep '^FAIL ' "$MQ_W/py.out" | while IFS= read -r _l; do
		echo "$_l"
	done >"$MQ_W/py.fail"
	while IFS= read -r _l; do
		mq_bad "${_l#FAIL }"
	done <"$MQ_W/py.fail"
	[ $_rc -eq 0 ] || mq_bad "python exit $_rc: $(tail -n 3 "$MQ_W/py.err" | tr '\n' ' ')"
}
