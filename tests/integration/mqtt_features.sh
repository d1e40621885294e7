#!/bin/sh
# mqtt_features.sh - features whose effect needs a close look, run against a
# private plexmqd and a private Mosquitto 2.0 with the results compared
# (tests/integration/mqtt_lib.sh); raw python3 clients (mq_py) where the
# retain flag, timing or the absence of a message must be seen:
#   sys            $SYS/broker/... every sys_interval (1 s): version, uptime
#                  (advancing), clients connected/total, messages and bytes
#                  received/sent, subscriptions, retained count
#   retain_opts    Retain Handling 0/1/2 (new and existing subscription) and
#                  Retain As Published 0/1
#   will_delay     v5 Will Delay Interval: sent after the delay, not sent
#                  when the client comes back in time, sent at once when
#                  the session ends first; none after DISCONNECT 0x00, sent
#                  after DISCONNECT 0x04
#   expiry         v5 Session Expiry Interval: a session is gone after it,
#                  kept before it; Clean Start discards a session
#   queue_limit    max_queued_messages 5: an offline session keeps the first
#                  5 QoS 1 messages, the rest are dropped (plexmqd: counted,
#                  logged)
# and on plexmqd alone (Mosquitto lacks them, or cannot do them in a test):
#   queue_bytes    max_queued_bytes 300 (payload + topic): an offline
#                  session keeps 3 messages of 100 bytes (exactly 300), drops
#                  the next (306), logged; once the queue is delivered its
#                  bytes are free again: 2 more are kept, a 150-byte one is
#                  dropped, a following 100-byte one fits.  (Mosquitto
#                  counts payload bytes only and admits a message while the
#                  queue is below the bound, so its results differ.)
#   client_expiration  persistent_client_expiration 1s ends an offline
#                  3.1.1 persistent session
#   sticky         [plexmqd] share_strategy = sticky_topic: each topic's
#                  messages always go to the same member of the group
#   slow_qos0      qos0_full = drop: a subscriber that does not read while
#                  a publisher floods QoS 0: the broker's memory stays
#                  bounded, the drops are counted in
#                  $SYS/broker/messages/dropped and logged (the default,
#                  block, is tested by mqtt_flow.sh)
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_features

PRE='import sys, time, mqraw as m
from mqraw import props
plex = m.TARGET == "plexmqd"
def check(c, what):
    if not c:
        print("FAIL " + what, flush=True)
    return c
def note(s):
    print("note [%s]: %s" % (m.TARGET, s), file=sys.stderr, flush=True)
# Everything the broker sends c before answering a PINGREQ sent now: what
# an earlier packet caused has been sent by then.
def before_ping(c):
    c.send(0xC0, b"")
    got = []
    while True:
        p = c.recv(5)
        if p.type == m.PINGRESP:
            return got
        got.append(p)
        if p.type == m.PUBLISH and p.qos == 1:
            c.ack(m.PUBACK, p.pid)
'

# Every $SYS topic the issue asks for has been seen, and uptime advanced.
_sys_all() {
	while IFS= read -r t; do
		grep -qF "MSG $t " "$MQ_W/sys.out" || return 1
	done <<E
\$SYS/broker/version
\$SYS/broker/uptime
\$SYS/broker/clients/connected
\$SYS/broker/clients/total
\$SYS/broker/messages/received
\$SYS/broker/messages/sent
\$SYS/broker/bytes/received
\$SYS/broker/bytes/sent
\$SYS/broker/subscriptions/count
\$SYS/broker/retained messages/count
E
	# uptime advanced at least once: two different values
	[ "$(grep -F 'MSG $SYS/broker/uptime ' "$MQ_W/sys.out" | sort -u | wc -l)" -ge 2 ]
}

scen_sys() {
	mq_pub -q 1 -r -t sys/kept -m x || mq_bad "publish"
	mq_sub sys -v -t '$SYS/broker/#' -F 'MSG %t %p' || return
	pmq_wait_for 15 _sys_all ||
	    { mq_bad "not every \$SYS topic (with uptime advancing) seen:
$(grep -o 'MSG [^ ]*' "$MQ_W/sys.out" | sort -u | tr '\n' ' ')"; return; }
	for t in version uptime clients/connected clients/total \
	    messages/received messages/sent bytes/received bytes/sent \
	    subscriptions/count; do
		echo "\$SYS/broker/$t: seen" >>"$MQ_OUT"
	done
	# Values: this subscriber is connected and subscribed, one retained.
	v() { grep -F "MSG \$SYS/broker/$1 " "$MQ_W/sys.out" | tail -n 1 |
	    sed "s|^MSG \\\$SYS/broker/$1 ||"; }
	[ "$(v clients/connected)" -ge 1 ] ||
	    mq_bad "clients/connected $(v clients/connected)"
	[ "$(v subscriptions/count)" -ge 1 ] ||
	    mq_bad "subscriptions/count $(v subscriptions/count)"
	[ "$(v 'retained messages/count')" -ge 1 ] ||
	    mq_bad "retained messages/count $(v 'retained messages/count')"
	[ "$(v bytes/received)" -gt 0 ] || mq_bad "bytes/received $(v bytes/received)"
	echo "values: connected >= 1, subscriptions >= 1, retained >= 1" >>"$MQ_OUT"
}

scen_retain_opts() {
	mq_pyscen <<PY
$PRE
p = m.Client(4)
p.connect("ro-pub")
p.publish("ro/a", "kept", qos=1, pid=1, retain=True)
p.expect(m.PUBACK)
def retained(c, flt, opts):
    check(c.subscribe(len(flt), flt, opts).codes == [opts & 3], "SUBACK")
    return [(k.topic.decode(), k.retain) for k in before_ping(c)
            if k.type == m.PUBLISH]
for rh in (0, 1, 2):
    c = m.Client(5)
    c.connect("ro-rh%d" % rh)
    first = retained(c, "ro/a", 1 | rh << 4)
    again = retained(c, "ro/a", 1 | rh << 4)
    print("Retain Handling %d: new subscription %s, existing %s" % (rh, first, again))
    check(first == ([] if rh == 2 else [("ro/a", 1)]), "RH %d new: %s" % (rh, first))
    check(again == ([("ro/a", 1)] if rh == 0 else []), "RH %d again: %s" % (rh, again))
    c.disconnect()
# Retain As Published: live delivery of a retained PUBLISH.
subs = {}
for rap in (0, 1):
    subs[rap] = m.Client(5)
    subs[rap].connect("ro-rap%d" % rap)
    subs[rap].subscribe(1, "rap/#", 1 | rap << 3)
p.publish("rap/x", "live", qos=1, pid=2, retain=True)
p.expect(m.PUBACK)
for rap in (0, 1):
    k = subs[rap].expect(m.PUBLISH)
    print("Retain As Published %d: live retained message has retain %d" % (rap, k.retain))
    check(k.retain == rap, "RAP %d: retain %d" % (rap, k.retain))
    # The retained copy on subscribe keeps retain 1 either way.
    got = retained(subs[rap], "rap/x", 1 | rap << 3)
    check(got == [("rap/x", 1)], "RAP %d, retained on subscribe: %s" % (rap, got))
PY
}

scen_will_delay() {
	mq_pyscen <<PY
$PRE
w = m.Client(5)
w.connect("wd-watch")
w.subscribe(1, "wd/#", 1)
def holder(cid, delay, expiry, topic):
    c = m.Client(5)
    ca = c.connect(cid, clean=True, prop=props((0x11, expiry)),
                   will=(topic, cid, 1, False, props((0x18, delay))))
    check(ca.reason == 0, "CONNACK")
    return c
def wait_will(timeout):
    k = w.recv(timeout)
    w.ack(m.PUBACK, k.pid)
    return k.topic.decode()
# Network loss: the will waits for its delay.
a = holder("wd-a", 2, 60, "wd/a")
t0 = time.monotonic(); a.close()
t = wait_will(6); dt = time.monotonic() - t0
note("delay 2 s: will after %.2f s" % dt)
check(t == "wd/a" and 1.8 <= dt < 4, "wd/a after %.2f s: %s" % (dt, t))
print("delay 2, connection lost: will %s after the delay" % t)
# Back in time: no will.  Then the marker shows nothing came.
b = holder("wd-b", 2, 60, "wd/b")
t0 = time.monotonic(); b.close()
b = m.Client(5)
check(b.connect("wd-b", clean=False, prop=props((0x11, 60))).present == 1, "session kept")
time.sleep(max(0, t0 + 3 - time.monotonic()))  # past the delay: the spec's time
b.publish("wd/mark1", "m", qos=1, pid=1); b.expect(m.PUBACK)
t = wait_will(5)
print("delay 2, back within it: next message %s (no will)" % t)
check(t == "wd/mark1", "got %s" % t)
# The session ends (expiry 1 s) before the delay (10 s): will at once.
c = holder("wd-c", 10, 1, "wd/c")
t0 = time.monotonic(); c.close()
t = wait_will(6); dt = time.monotonic() - t0
note("session expiry 1 s, delay 10 s: will after %.2f s" % dt)
check(t == "wd/c" and dt < 4, "wd/c after %.2f s" % dt)
print("delay 10, session expiry 1: will %s when the session ends" % t)
# Normal DISCONNECT: no will; DISCONNECT 0x04: the will.
d = holder("wd-d", 0, 0, "wd/d"); d.disconnect(0)
e = holder("wd-e", 0, 0, "wd/e"); e.disconnect(4)
t = wait_will(5)
print("DISCONNECT 0x00 then DISCONNECT 0x04: next message %s" % t)
check(t == "wd/e", "got %s" % t)
PY
}

scen_expiry() {
	mq_pyscen <<PY
$PRE
p = m.Client(4)
p.connect("ex-pub")
def away(cid, expiry):
    c = m.Client(5)
    c.connect(cid, clean=True, prop=props((0x11, expiry)))
    c.subscribe(1, "ex/" + cid, 1)
    c.disconnect()
    p.publish("ex/" + cid, "queued", qos=1, pid=1)
    p.expect(m.PUBACK)
    return time.monotonic()
def back(cid, clean):
    c = m.Client(5)
    ca = c.connect(cid, clean=clean, prop=props((0x11, 60)))
    got = [k.payload.decode() for k in before_ping(c) if k.type == m.PUBLISH]
    c.disconnect()
    return ca.present, got
t0 = away("ex-short", 1)
away("ex-long", 60)
away("ex-clean", 60)
time.sleep(max(0, t0 + 2.5 - time.monotonic()))  # the expiry is a time
print("expiry 1 s, back after 2.5 s: present %d, got %s" % back("ex-short", False))
print("expiry 60 s, back: present %d, got %s" % back("ex-long", False))
print("expiry 60 s, back with Clean Start: present %d, got %s" % back("ex-clean", True))
r = back("ex-short", False), back("ex-long", False)
check(r[0][0] == 1 and r[1][0] == 1, "sessions made by back() not kept: %s" % (r,))
PY
	grep -q 'expiry 1 s, back after 2.5 s: present 0, got \[\]' "$MQ_OUT" &&
	    grep -q "expiry 60 s, back: present 1, got \['queued'\]" "$MQ_OUT" &&
	    grep -q 'Clean Start: present 0, got \[\]' "$MQ_OUT" ||
	    mq_bad "expiry: $(cat "$MQ_OUT")"
}

scen_queue_limit() {
	F='MSG %t [%p] q%q'
	mq_sub a -V 311 -c -i ql -q 1 -t 'ql/#' -F "$F" || return
	mq_kill a TERM
	i=1
	while [ $i -le 10 ]; do
		mq_pub -q 1 -t ql/x -m "m$i" || mq_bad "publish m$i"
		i=$((i + 1))
	done
	mq_sub b -V 311 -c -i ql -q 1 -t 'ql/#' -F "$F" || return
	mq_pub -q 1 -t ql/end -m end || mq_bad "publish end"
	mq_wait_msgs b 6 || return
	mq_expect b 'MSG ql/x [m1] q1
MSG ql/x [m2] q1
MSG ql/x [m3] q1
MSG ql/x [m4] q1
MSG ql/x [m5] q1
MSG ql/end [end] q1'
	mq_msgs b >>"$MQ_OUT"
	[ "$MQ_TARGET" = plexmqd ] || return 0
	grep -q 'client ql: dropping messages (session queue full)' \
	    "$PMQ_TMP/daemon.log" || mq_bad "no log line for the drops"
}

# qb_msg NAME LEN: a payload LEN bytes long starting with NAME-.
qb_msg() {
	printf '%s-%0*d' "$1" $(($2 - ${#1} - 1)) 0
}

scen_queue_bytes() {
	F='MSG %t %l [%p]'
	mq_sub a -V 311 -c -i qb -q 1 -t 'qb/#' -F "$F" || return
	mq_kill a TERM
	# Topic qb/x is 4 bytes: 96-byte payloads make 100-byte messages.
	for i in 1 2 3; do
		mq_pub -q 1 -t qb/x -m "$(qb_msg "m$i" 96)" ||
		    mq_bad "publish m$i"
	done
	mq_pub -q 1 -t qb/x -m m4 || mq_bad "publish m4"
	# -C 4: takes the 3 kept and "end", acknowledges them and goes
	# away (the session stays, its queue empty).
	mq_sub b -V 311 -c -i qb -q 1 -t 'qb/#' -C 4 -W 10 -F "$F" || return
	mq_pub -q 1 -t qb/end -m end || mq_bad "publish end"
	mq_wait_msgs b 4 || return
	mq_expect b "MSG qb/x 96 [$(qb_msg m1 96)]
MSG qb/x 96 [$(qb_msg m2 96)]
MSG qb/x 96 [$(qb_msg m3 96)]
MSG qb/end 3 [end]" || return
	wait "$(mq_pid b)" 2>/dev/null
	grep -q 'client qb: dropping messages (session queue full)' \
	    "$PMQ_TMP/daemon.log" || mq_bad "no log line for the drop of m4"
	# The queue's bytes were released when it was delivered.
	for i in 5 6; do
		mq_pub -q 1 -t qb/x -m "$(qb_msg "m$i" 96)" ||
		    mq_bad "publish m$i"
	done
	mq_pub -q 1 -t qb/x -m "$(qb_msg m7 146)" || mq_bad "publish m7"
	mq_pub -q 1 -t qb/x -m "$(qb_msg m8 96)" || mq_bad "publish m8"
	mq_sub c -V 311 -c -i qb -q 1 -t 'qb/#' -F "$F" || return
	mq_pub -q 1 -t qb/end -m end2 || mq_bad "publish end2"
	mq_wait_msgs c 4 || return
	mq_expect c "MSG qb/x 96 [$(qb_msg m5 96)]
MSG qb/x 96 [$(qb_msg m6 96)]
MSG qb/x 96 [$(qb_msg m8 96)]
MSG qb/end 4 [end2]"
	mq_msgs b >>"$MQ_OUT"
	mq_msgs c >>"$MQ_OUT"
}

scen_client_expiration() {
	mq_sub a -V 311 -c -i pce -q 1 -t 'pce/#' || return
	mq_kill a TERM
	pmq_wait_for 5 grep -q 'client pce: session expired' \
	    "$PMQ_TMP/daemon.log" || { mq_bad "session did not expire"; return; }
	mq_pyscen <<PY
$PRE
c = m.Client(4)
ca = c.connect("pce", clean=False)
print("3.1.1 persistent session after persistent_client_expiration: "
      "CONNACK %d, session present %d" % (ca.reason, ca.present))
check(ca.reason == 0 and ca.present == 0, "session still present")
PY
}

scen_sticky() {
	mq_pyscen <<PY
$PRE
members = []
for i in range(3):
    c = m.Client(5)
    c.connect("st-%d" % i)
    # QoS 0: no inflight limit holds messages back from before_ping.
    c.subscribe(1, "\$share/g/st/#", 0)
    members.append(c)
p = m.Client(4)
p.connect("st-pub")
n = 0
for rnd in range(5):
    for t in range(12):
        n += 1
        p.publish("st/t%d" % t, "%d" % rnd, qos=1, pid=n)
        p.expect(m.PUBACK)
owner = {}
for i, c in enumerate(members):
    for k in before_ping(c):
        if k.type == m.PUBLISH:
            owner.setdefault(k.topic.decode(), set()).add(i)
            n -= 1
check(n == 0, "%d messages missing" % n)
check(all(len(v) == 1 for v in owner.values()), "a topic went to two members: %s" % owner)
used = set().union(*owner.values())
check(len(used) >= 2, "only member(s) %s used" % used)
print("sticky_topic: 60 messages, each topic always to one member, %d members used" % len(used))
PY
}

_dropped_gt0() {
	v=$(grep -F 'MSG $SYS/broker/messages/dropped ' "$MQ_W/sys.out" |
	    tail -n 1 | sed 's/.* //')
	[ -n "$v" ] && [ "$v" -gt 0 ]
}

scen_slow_qos0() {
	mq_sub sys -t '$SYS/broker/messages/dropped' -F 'MSG %t %p' || return
	rss0=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PMQ_PID/status")
	mq_pyscen <<PY
$PRE
slow = m.Client(4, rcvbuf=4096)
slow.connect("slow")
slow.subscribe(1, "slow/#", 0)
p = m.Client(4)
p.connect("flood")
chunk = b"z" * 1024
for i in range(40000):      # 40 MiB of QoS 0 the subscriber never reads
    p.publish("slow/x", chunk)
p.publish("slow/end", "end", qos=1, pid=1)
check(p.expect(m.PUBACK, 30).pid == 1, "PUBACK after the flood")
print("flood of 40 MiB QoS 0 to a subscriber that does not read: broker alive")
PY
	rss1=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PMQ_PID/status")
	echo "note: plexmqd RSS ${rss0} kB before, ${rss1} kB after the flood"
	# ASan keeps freed memory in quarantine: RSS means nothing there.
	if grep -q 'libasan' "/proc/$PMQ_PID/maps" 2>/dev/null; then
		echo "note: sanitizer build: RSS bound not checked"
	elif [ "$((rss1 - rss0))" -ge 32768 ]; then
		mq_bad "RSS grew by $((rss1 - rss0)) kB (bounded output expected)"
	fi
	pmq_wait_for 5 _dropped_gt0 ||
	    mq_bad "\$SYS/broker/messages/dropped not above 0"
	grep -q 'client slow: dropping messages (QoS 0 to a slow subscriber)' \
	    "$PMQ_TMP/daemon.log" || mq_bad "no log line for the drops"
}

mq_scenario sys sys_interval 1
mq_scenario retain_opts
mq_scenario will_delay
mq_scenario expiry
mq_scenario queue_limit max_queued_messages 5
mq_scenario_only plexmqd queue_bytes max_queued_bytes 300
mq_scenario_only plexmqd client_expiration persistent_client_expiration 1s
MQ_PLEXMQD_KEYS='share_strategy = sticky_topic' mq_scenario_only plexmqd sticky
mq_scenario_only plexmqd slow_qos0 sys_interval 1 qos0_full drop
mq_finish
