#!/bin/sh
# mqtt_persist.sh - MQTT state across a restart of plexmqd with the file
# storage plugin ([storage] plugin = file), once with a clean stop
# (SIGTERM) and once with a crash (kill -9); plexmqd only (the Mosquitto
# comparison runs with persistence off).  Before the restart:
#   - an offline persistent session (v5, expiry 300 s) with a subscription
#     and three QoS 1 messages queued for it;
#   - a connected persistent session with three QoS 1 messages sent to it
#     and not acknowledged (inflight);
#   - a connected client with an incoming QoS 2 message PUBREC'd but not
#     yet released;
#   - a connected persistent session with a retained will (delay 0);
#   - a retained message.
# After the restart: the queued messages arrive in order, once; the
# inflight ones are resent with DUP=1 and their packet ids; the resent
# QoS 2 PUBLISH is acknowledged but not routed twice; the subscription
# still matches; the will was published; the retained message is there.
# A further crash after everything was acknowledged redelivers nothing.
# Clients are raw python3 (mq_py): DUP flags and packet ids must be seen.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_persist
[ -f "$PMQ_PLUGINS/mqtt.so" ] || pmq_skip "mqtt.so not built"
[ -f "$PMQ_PLUGINS/file.so" ] || pmq_skip "file.so not built"
MQ_TARGET=plexmqd
MQ_W=$PMQ_TMP/w
mkdir -p "$MQ_W"

PRE='import sys, time, mqraw as m
from mqraw import props
def check(c, what):
    if not c:
        print("FAIL " + what, flush=True)
    return c
def before_ping(c, ack=True):
    c.send(0xC0, b"")
    got = []
    while True:
        p = c.recv(5)
        if p.type == m.PINGRESP:
            return got
        got.append(p)
        if ack and p.type == m.PUBLISH and p.qos == 1:
            c.ack(m.PUBACK, p.pid)
EXP = props((0x11, 300))
'

start() {
	cat >"$PMQ_TMP/persist-$1.ini" <<INI
[plexmqd]
data_dir = $PMQ_TMP/data-$1
log_level = debug
[storage]
plugin = file
[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:0
INI
	mkdir -p "$PMQ_TMP/data-$1"
	pmq_start "$PMQ_TMP/persist-$1.ini"
	MQ_PORT=$(pmq_port mqtt)
	[ -n "$MQ_PORT" ] || pmq_fail "no port"
}

# py NAME: run the program on stdin; FAIL lines become failures.
fails=
py() {
	mq_py >"$MQ_W/$1.out" 2>"$MQ_W/$1.err"
	rc=$?
	sed 's/^/    /' "$MQ_W/$1.err"
	grep -v '^FAIL ' "$MQ_W/$1.out"
	if grep -q '^FAIL ' "$MQ_W/$1.out" || [ $rc -ne 0 ]; then
		fails="$fails
  $2 $1: $(grep '^FAIL ' "$MQ_W/$1.out" | tr '\n' ' ') exit $rc"
	fi
}

for mode in stop kill9; do
	echo "---- restart by $mode ----"
	start "$mode"
	# Phase 1, in the background: it keeps its clients connected until
	# the broker goes away.
	mq_py >"$MQ_W/setup-$mode.out" 2>&1 <<PY &
$PRE
p = m.Client(4)
p.connect("pe-pub")
s = m.Client(5)
s.connect("pe-away", prop=EXP)
check(s.subscribe(1, "pq/#", 1).codes == [1], "SUBACK")
s.disconnect()
inf = m.Client(5)
inf.connect("pe-inflight", prop=EXP)
inf.subscribe(1, "inf/#", 1)
wl = m.Client(5)
wl.connect("pe-will", prop=EXP, will=("wl/gone", "will of pe-will", 1, True))
pid = 0
for t, msg in [("pq/a", "m1"), ("pq/b", "m2"), ("pq/a", "m3"),
               ("inf/x", "i1"), ("inf/x", "i2"), ("inf/x", "i3")]:
    pid += 1
    p.publish(t, msg, qos=1, pid=pid)
    check(p.expect(m.PUBACK).pid == pid, "PUBACK")
p.publish("pr/x", "kept", qos=1, pid=99, retain=True)
p.expect(m.PUBACK)
pids = []
for k in before_ping(inf, ack=False):
    if k.type == m.PUBLISH:
        pids.append(k.pid)
check(len(pids) == 3, "inflight: %d PUBLISHes" % len(pids))
q2 = m.Client(5)
q2.connect("pe-q2", prop=EXP)
q2.publish("pq/q2", "qos2 once", qos=2, pid=7)
check(q2.expect(m.PUBREC).pid == 7, "PUBREC")
print("pids", " ".join(map(str, pids)))
print("ready", flush=True)
for c in (inf, wl, q2, p):
    try:
        c.until_closed(30)
    except TimeoutError:
        check(False, "not closed by the restart")
PY
	setup=$!
	pmq_track $setup
	pmq_wait_for 10 grep -q '^ready' "$MQ_W/setup-$mode.out" ||
	    pmq_fail "setup: $(cat "$MQ_W/setup-$mode.out")"
	pids=$(sed -n 's/^pids //p' "$MQ_W/setup-$mode.out")
	# The storage completes what is pending before a clean stop; a crash
	# gets no such chance.
	if [ $mode = stop ]; then pmq_stop; else pmq_kill9; fi
	wait $setup
	grep '^FAIL' "$MQ_W/setup-$mode.out" &&
	    fails="$fails
  $mode setup: $(grep '^FAIL' "$MQ_W/setup-$mode.out" | tr '\n' ' ')"
	start "$mode"
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" | grep -q \
	    'restored 4 sessions with 7 queued messages (3 inflight), 1 wills' ||
	    fails="$fails
  $mode: no 'restored' line as expected: $(grep restored "$PMQ_TMP/daemon.log" | tail -n 1)"
	py "after-$mode" "$mode" <<PY
$PRE
# The will (retained) was published: the client never came back.
w = m.Client(5)
w.connect("pe-watch")
w.subscribe(1, "wl/#", 1)
k = w.expect(m.PUBLISH)
check(k.payload == b"will of pe-will" and k.retain == 1, "will: %r" % k.payload)
print("will of a persistent session published after the restart")
# The retained message.
w.subscribe(2, "pr/#", 1)
k = w.expect(m.PUBLISH)
check(k.payload == b"kept" and k.retain == 1, "retained: %r" % k.payload)
print("retained message kept")
# Queued: in order, once.
s = m.Client(5)
ca = s.connect("pe-away", clean=False, prop=EXP)
check(ca.present == 1, "pe-away: session not present")
got = [k.payload.decode() for k in before_ping(s) if k.type == m.PUBLISH]
print("queued for the offline session: %s" % got)
check(got == ["m1", "m2", "m3", "qos2 once"], "queued: %s" % got)
# Inflight: resent with DUP and the same packet ids.
inf = m.Client(5)
check(inf.connect("pe-inflight", clean=False, prop=EXP).present == 1, "inflight session")
ks = [k for k in before_ping(inf) if k.type == m.PUBLISH]
got = [(k.payload.decode(), k.dup) for k in ks]
print("inflight resent: %s" % got)
check(got == [("i1", 1), ("i2", 1), ("i3", 1)], "inflight: %s" % got)
check(" ".join(str(k.pid) for k in ks) == "$pids", "packet ids changed: %s vs $pids" % [k.pid for k in ks])
# The QoS 2 sender resends: acknowledged, not routed again.
q2 = m.Client(5)
check(q2.connect("pe-q2", clean=False, prop=EXP).present == 1, "q2 session")
q2.publish("pq/q2", "qos2 once", qos=2, pid=7, dup=True)
check(q2.expect(m.PUBREC).pid == 7, "PUBREC again")
q2.ack(m.PUBREL, 7)
check(q2.expect(m.PUBCOMP).pid == 7, "PUBCOMP")
q2.publish("pq/end", "end", qos=1, pid=8)
q2.expect(m.PUBACK)
k = s.expect(m.PUBLISH)
s.ack(m.PUBACK, k.pid)
print("after the QoS 2 resend, next delivery: %s" % k.payload.decode())
check(k.payload == b"end", "QoS 2 routed twice? got %r" % k.payload)
before_ping(s); before_ping(inf)
PY
	# Everything was acknowledged: a crash now redelivers nothing.
	pmq_kill9
	start "$mode"
	py "again-$mode" "$mode" <<PY
$PRE
for cid in ("pe-away", "pe-inflight"):
    c = m.Client(5)
    ca = c.connect(cid, clean=False, prop=EXP)
    got = [k.payload for k in before_ping(c) if k.type == m.PUBLISH]
    print("%s after another crash: present %d, redelivered %s" % (cid, ca.present, got))
    check(ca.present == 1 and got == [], "%s: %d %s" % (cid, ca.present, got))
PY
	# A clean exit (a sanitizer build exits non-zero on a leak).
	pmq_stop || fails="$fails
  $mode: plexmqd exited with status $?"
done
[ -z "$fails" ] || pmq_fail "failures:$fails"
pmq_pass
