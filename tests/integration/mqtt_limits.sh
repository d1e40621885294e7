#!/bin/sh
# mqtt_limits.sh - limits and bad input, driven by a raw python3 MQTT
# client (mq_py in mqtt_lib.sh) because the real clients cannot stop
# acknowledging, send oversized or malformed packets, or show the
# properties involved; run against a private plexmqd and a private
# Mosquitto 2.0 with the normalised results compared:
#   keepalive     a silent client (3.1.1 and 5) is closed after 1.5 x its
#                 keep alive (v5: DISCONNECT 0x8D first); a pinging one is not
#   server_ka     max_keepalive 10: a v5 client asking 60 s gets Server Keep
#                 Alive 10, a 3.1.1 one is refused (0x02)
#   recv_max      a v5 client with Receive Maximum 2 never has more than 2
#                 unacknowledged QoS 1 PUBLISHes from the broker
#   inflight      max_inflight_messages 2: the same for a 3.1.1 client; v5
#                 CONNACK says Receive Maximum 2 and a client with a third
#                 unreleased QoS 2 PUBLISH gets DISCONNECT 0x93
#   packet_size   max_packet_size 1000: said in the v5 CONNACK, a bigger
#                 packet gets DISCONNECT 0x95 (v5) and a close; messages
#                 bigger than a client's Maximum Packet Size are not sent
#                 to it
#   malformed     reserved flags, invalid UTF-8, NUL or a wildcard in a
#                 PUBLISH topic, QoS 3, packet type 0, a 5-byte remaining
#                 length, a PUBLISH before CONNECT, a second CONNECT: closed
#                 (v5: DISCONNECT with the reason first, plexmqd), one log
#                 line each, and the broker keeps serving
#   client_ids    empty client id: v5 gets an Assigned Client Identifier,
#                 3.1.1 is accepted with clean session, refused without
#   v31           MQTT 3.1 (MQIsdp) with mosquitto_pub/sub -V 31
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_limits

# Shared python prelude: check() prints FAIL lines, plex is true against
# plexmqd (where our documented choices are required, not just noted).
PRE='import sys, time, mqraw as m
from mqraw import props
plex = m.TARGET == "plexmqd"
def check(c, what):
    if not c:
        print("FAIL " + what, flush=True)
    return c
def note(s):
    print("note [%s]: %s" % (m.TARGET, s), file=sys.stderr, flush=True)
'

scen_keepalive() {
	mq_pyscen <<PY
$PRE
# Both at once, so Mosquitto's slow check costs its time only once.
cs = {}
for v in (4, 5):
    cs[v] = m.Client(v)
    check(cs[v].connect("ka-idle-%d" % v, keepalive=1).reason == 0, "CONNACK")
t0 = time.monotonic()
for v in (4, 5):
    c = cs[v]
    try:
        # Mosquitto 2.0.11 checks keep alive late (about 6 s here).
        got = c.until_closed(max(0.1, t0 + (6 if plex else 15) - time.monotonic()))
    except TimeoutError:
        check(False, "v%d: idle client not closed in time" % v)
        continue
    dt = time.monotonic() - t0
    note("v%d, keepalive 1: closed after %.2f s" % (v, dt))
    if plex:
        check(1.4 <= dt < 3.0, "v%d: closed after %.2f s, want 1.5 to 3" % (v, dt))
    print("v%d idle, keepalive 1: closed" % v)
    ds = ["0x%02x" % p.reason for p in got if p.type == m.DISCONNECT]
    if v == 5:
        note("v5 keepalive close, DISCONNECT before close: %s" % ds)
        if plex:
            check(ds == ["0x8d"], "v5: want DISCONNECT 0x8d, got %s" % ds)
# A client that keeps talking stays.
c = m.Client(4)
c.connect("ka-ping", keepalive=1)
end = time.monotonic() + 3
while time.monotonic() < end:
    c.send(0xC0, b"")
    check(c.recv(2).type == m.PINGRESP, "PINGRESP")
    time.sleep(0.5)
c.send(0xC0, b"")
check(c.recv(2).type == m.PINGRESP, "pinging client was closed")
print("pinging client, keepalive 1: still connected after 3 s")
c.disconnect()
PY
}

scen_server_ka() {
	mq_pyscen <<PY
$PRE
c = m.Client(5)
ca = c.connect("ska5", keepalive=60)
print("v5 keepalive 60: CONNACK 0x%02x, Server Keep Alive %s" %
      (ca.reason, ca.props.get(0x13)))
check(ca.props.get(0x13) == 10, "server keep alive %s" % ca.props.get(0x13))
c.disconnect()
c = m.Client(5)
ca = c.connect("ska5b", keepalive=5)
print("v5 keepalive 5: Server Keep Alive %s" % ca.props.get(0x13))
c.disconnect()
c = m.Client(4)
ca = c.connect("ska4", keepalive=60)
# Mosquitto's documentation says 0x02 here, but 2.0.11 accepts (0).
note("v3.1.1 keepalive 60: CONNACK %d" % ca.reason)
if plex:
    check(ca.reason == 2, "3.1.1 keepalive over max: CONNACK %d" % ca.reason)
PY
}

# Publish N QoS 1 messages (payloads 1..N) to TOPIC from a 3.1.1 client.
PUBN='def pubn(topic, n):
    p = m.Client(4)
    p.connect("pubn-" + topic.replace("/", "-"))
    for i in range(1, n + 1):
        p.publish(topic, str(i), qos=1, pid=i)
    for i in range(1, n + 1):
        check(p.expect(m.PUBACK).pid == i, "PUBACK %d" % i)
    p.disconnect()
# Receive with at most LIMIT unacknowledged: never more arrive until acked.
def drain(c, n, limit):
    got, unacked, acks, over = [], [], 0, []
    while len(got) < n:
        try:
            pk = c.recv(1.0 if len(unacked) >= limit else 5.0)
        except TimeoutError:
            if len(unacked) >= limit:
                # Quiet at the limit, as it must be: ack the oldest.
                c.ack(m.PUBACK, unacked.pop(0))
                acks += 1
                continue
            check(False, "only %d of %d arrived" % (len(got), n))
            break
        if pk.type != m.PUBLISH:
            continue
        got.append(pk.payload.decode())
        unacked.append(pk.pid)
        if len(unacked) > limit:
            over.append("%d unacked after %d PUBACKs" % (len(unacked), acks))
    if over:
        note("over the inflight limit: %s" % ", ".join(over))
        # Mosquitto 2.0.11 does not hold to it (docs/mqtt-compat.md).
        check(not plex, "more than %d unacknowledged PUBLISHes" % limit)
    for pid in unacked:
        c.ack(m.PUBACK, pid)
    return got
'

scen_recv_max() {
	mq_pyscen <<PY
$PRE
$PUBN
c = m.Client(5)
c.connect("rm-sub", prop=props((0x21, 2)))
check(c.subscribe(1, "rm/t", 1).codes == [1], "SUBACK")
pubn("rm/t", 6)
got = drain(c, 6, 2)
print("Receive Maximum 2: got %s, never more than 2 unacknowledged" % got)
c.disconnect()
PY
}

scen_inflight() {
	mq_pyscen <<PY
$PRE
$PUBN
c = m.Client(4)
c.connect("if-sub")
check(c.subscribe(1, "if/t", 1).codes == [1], "SUBACK")
pubn("if/t", 6)
got = drain(c, 6, 2)
print("3.1.1, max_inflight_messages 2: got %s, at most 2 unacknowledged" % got)
c.disconnect()
c = m.Client(5)
ca = c.connect("if-5")
print("v5 CONNACK Receive Maximum %s" % ca.props.get(0x21))
check(ca.props.get(0x21) == 2, "Receive Maximum %s" % ca.props.get(0x21))
# QoS 2 without PUBREL: each stays inflight; the third is one too many.
for pid in (1, 2):
    c.publish("if/q2", "x", qos=2, pid=pid)
    check(c.expect(m.PUBREC).pid == pid, "PUBREC")
c.publish("if/q2", "x", qos=2, pid=3)
try:
    got = c.until_closed(3)
    ds = ["0x%02x" % p.reason for p in got if p.type == m.DISCONNECT]
except TimeoutError:
    got, ds = [c.buf], "none, still connected after 3 s"
note("third unreleased QoS 2: DISCONNECT %s" % (ds,))
if plex:
    check(ds == ["0x93"], "want DISCONNECT 0x93, got %s" % (ds,))
PY
}

scen_packet_size() {
	mq_pyscen <<PY
$PRE
c = m.Client(5)
ca = c.connect("ps-sub", prop=props((0x27, 100)))
print("v5 CONNACK Maximum Packet Size %s" % ca.props.get(0x27))
check(ca.props.get(0x27) == 1000, "Maximum Packet Size %s" % ca.props.get(0x27))
check(c.subscribe(1, "ps/#", 1).codes == [1], "SUBACK")
p = m.Client(4)
p.connect("ps-pub")
for i, (t, n, q) in enumerate([("ps/a", 10, 1), ("ps/b", 200, 1),
                               ("ps/c", 10, 0), ("ps/d", 200, 0),
                               ("ps/e", 10, 1)]):
    p.publish(t, "x" * n, qos=q, pid=i + 1)
    if q:
        p.expect(m.PUBACK)
got = []
while not got or got[-1] != "ps/e":
    pk = c.recv(5)
    if pk.type == m.PUBLISH:
        got.append(pk.topic.decode())
        if pk.qos:
            c.ack(m.PUBACK, pk.pid)
print("client Maximum Packet Size 100: got %s" % got)
check(got == ["ps/a", "ps/c", "ps/e"], "got %s" % got)
c.disconnect()
# Bigger than max_packet_size from a client.
for v in (5, 4):
    c = m.Client(v)
    c.connect("ps-big-%d" % v)
    c.publish("ps/big", "y" * 2000, qos=1, pid=1)
    got = c.until_closed(5)
    ds = ["0x%02x" % k.reason for k in got if k.type == m.DISCONNECT]
    acks = [k for k in got if k.type == m.PUBACK]
    print("v%d 2000-byte PUBLISH over max_packet_size: closed, acked %d" %
          (v, len(acks)))
    if v == 5:
        note("DISCONNECT before close: %s" % ds)
        if plex:
            check(ds == ["0x95"], "want DISCONNECT 0x95, got %s" % ds)
c = m.Client(4)
check(c.connect("ps-after").reason == 0, "broker still serves")
p.disconnect()
PY
}

scen_malformed() {
	mq_pyscen <<'PY' 2>&1
import sys, mqraw as m
from mqraw import s
plex = m.TARGET == "plexmqd"
def check(c, what):
    if not c:
        print("FAIL " + what, flush=True)
# name, bytes after a good CONNECT (None: instead of CONNECT), v5 reason
cases = [
    ("mal-sub-flags", b"\x80\x06\x00\x01" + s("a") + b"\x00", 0x81),
    ("mal-utf8", b"\x30\x05" + s(b"a\xff") + b"\x00", 0x81),
    ("mal-nul", b"\x30\x06" + s(b"a\x00b") + b"\x00", 0x81),
    ("mal-wildcard", b"\x30\x06" + s(b"a/+") + b"\x00", 0x90),
    ("mal-qos3", b"\x36\x07" + s(b"a") + b"\x00\x01\x00x", 0x81),
    ("mal-type0", b"\x00\x00", 0x81),
    ("mal-remlen", b"\x30\xff\xff\xff\xff\x7f", 0x81),
    ("mal-connect2", None, 0x82),
    ("mal-first", b"\x30\x04" + s("a") + b"x", None),
]
for v in (5, 4):
    for name, bad, reason in cases:
        cid = "%s-%d" % (name, v)
        c = m.Client(v)
        if name == "mal-first":
            c.raw(bad)
        elif name == "mal-connect2":
            c.connect(cid)
            c.send(0x10, s("MQTT") + bytes([v, 2, 0, 60]) +
                   (b"\x00" if v == 5 else b"") + s(cid))
        else:
            c.connect(cid)
            c.raw(bad)
        try:
            got = c.until_closed(5)
        except TimeoutError:
            check(False, "%s: not closed" % cid)
            continue
        ds = ["0x%02x" % p.reason for p in got if p.type == m.DISCONNECT]
        other = [p.type for p in got if p.type != m.DISCONNECT]
        print("%s: closed%s" % (cid, ", nothing else sent" if not other
                                else ", also sent types %s" % other))
        if v == 5 and reason is not None:
            print("note [%s]: %s: DISCONNECT %s" % (m.TARGET, cid, ds),
                  file=sys.stderr)
            if plex:
                check(ds == ["0x%02x" % reason],
                      "%s: want DISCONNECT 0x%02x, got %s" % (cid, reason, ds))
        elif plex:
            check(ds == [], "%s: DISCONNECT %s" % (cid, ds))
c = m.Client(4)
check(c.connect("mal-after").reason == 0, "broker stopped serving")
c.subscribe(1, "mal/ok", 0)
c.publish("mal/ok", "fine")
p = c.recv(5)
check(p.type == m.PUBLISH and p.payload == b"fine", "no delivery after")
print("after bad input: the broker still serves")
PY
	[ "$MQ_TARGET" = plexmqd ] || return 0
	# One log line for each bad connection, naming it.
	for name in sub-flags utf8 nul wildcard qos3 type0 remlen connect2; do
		for v in 5 4; do
			n=$(grep -c "(mal-$name-$v): .*closing" "$PMQ_TMP/daemon.log")
			[ "$n" -eq 1 ] ||
			    mq_bad "mal-$name-$v: $n log lines, want 1"
		done
	done
	n=$(tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -c 'bad first packet')
	[ "$n" -eq 2 ] || mq_bad "PUBLISH before CONNECT: $n log lines, want 2"
}

scen_client_ids() {
	mq_pyscen <<PY
$PRE
c = m.Client(5)
ca = c.connect("")
aid = ca.props.get(0x12)
print("v5 empty client id: CONNACK 0x%02x, assigned id %s" %
      (ca.reason, "given" if aid else "missing"))
check(ca.reason == 0 and aid, "no Assigned Client Identifier")
c2 = m.Client(5)
ca2 = c2.connect("")
check(ca2.props.get(0x12) and ca2.props.get(0x12) != aid, "ids not unique")
c.disconnect(); c2.disconnect()
c = m.Client(4)
print("v3.1.1 empty client id, clean session: CONNACK %d" % c.connect("").reason)
c = m.Client(4)
ca = c.connect("", clean=False)
print("v3.1.1 empty client id, persistent session: CONNACK %d" % ca.reason)
check(ca.reason == 2, "CONNACK %d" % ca.reason)
PY
}

scen_v31() {
	F='MSG %t [%p] q%q'
	mq_sub s31 -V 31 -q 2 -t 'v31/#' -F "$F" || return
	mq_pub -V 31 -q 1 -t v31/a -m one || mq_bad "publish -V 31"
	mq_pub -V 31 -q 2 -t v31/b -m two || mq_bad "publish -V 31"
	mq_pub -V 311 -q 0 -t v31/c -m three || mq_bad "publish -V 311"
	mq_wait_msgs s31 3 || return
	mq_expect s31 'MSG v31/a [one] q1
MSG v31/b [two] q2
MSG v31/c [three] q0'
	mq_msgs s31 >>"$MQ_OUT"
}

mq_scenario keepalive
mq_scenario server_ka max_keepalive 10
mq_scenario recv_max
mq_scenario inflight max_inflight_messages 2
mq_scenario packet_size max_packet_size 1000
mq_scenario malformed
mq_scenario client_ids
mq_scenario v31
mq_finish
