#!/bin/sh
# crash_mqtt_session.sh - persistent MQTT sessions and retained messages
# survive kill -9 of plexmqd, for the file and lmdb storage plugins (each
# skipped while its .so is not built; the whole test skipped without
# mqtt.so or the Mosquitto clients).  fsync = always.  Per plugin:
#
#   1. mosquitto_sub -c -i crashsub (MQTT 3.1.1, clean session false)
#      subscribes to sess/# with QoS 1 and disconnects: a stored session.
#   2. mosquitto_pub -q 1 publishes a retained message to ret/x and two
#      QoS 1 messages to sess/a while crashsub is away (queued for it);
#      each PUBACK means stored.
#   3. kill -9, restart on the same data dir.
#   4. crashsub reconnects (clean session false) subscribing only to an
#      unrelated topic: the session must be resumed (CONNACK session
#      present), the two queued messages arrive, in order, and a message
#      published after the reconnect to sess/b arrives through the stored
#      subscription.
#   5. A new subscriber to ret/x gets the retained message.
#   6. Acknowledged means queued durably, for offline and online
#      persistent subscribers alike: crashsub is away again (still
#      subscribed to sess/#) and crashon-PLUGIN (3.1.1, clean session
#      false) is connected to sess/p but never acknowledges, so beyond
#      the inflight window its messages wait in the session queue.  A
#      pipelining QoS 1 publisher sends sess/p p1..p3000 and plexmqd is
#      killed -9 as soon as 300 PUBACKs came, with many publishes still
#      in flight.  After the restart both sessions, resumed, deliver every
#      PUBACKed message, in order, no duplicates, before the "end" marker
#      published after they reconnected.
# Every failure says which of these broke.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init crash_mqtt_session
pmq_need python3 mosquitto_sub mosquitto_pub stdbuf
. "$top_srcdir/tests/crash/lib.sh"

crash_have mqtt || pmq_skip "mqtt.so not built"

# A minimal MQTT 3.1.1 client for step 6 (the Mosquitto clients cannot
# pipeline, nor hold acknowledgements back):
#   pub PORT STATE N READY_AT  QoS 1 sess/p "p1".."pN", pipelined; touches
#                              STATE.ready after READY_AT PUBACKs; at EOF
#                              (the broker killed) or when all are acked
#                              writes STATE: "sent S", one "acked K" each
#   hold PORT CID READY        clean session false, subscribe sess/p QoS 1,
#                              touch READY after the SUBACK, then read and
#                              never acknowledge until EOF
#   drain PORT CID OUT         resume CID (CONNACK session present or fail),
#                              touch OUT.ready, acknowledge and record each
#                              PUBLISH payload to OUT until "end"
#   check STATE OUT            every acked in OUT, strictly increasing, none
#                              above sent
cat >"$PMQ_TMP/m.py" <<'PYEOF'
import os, socket, struct, sys, threading, time

def varint(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out

def mstr(s):
    return struct.pack(">H", len(s)) + s

def pkt(first, body):
    return bytes([first]) + varint(len(body)) + body

def rd(f):
    h = f.read(1)
    if not h:
        raise EOFError
    mult, n = 1, 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError
        n += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = f.read(n)
    if len(body) < n:
        raise EOFError
    return h[0], body

def connect(port, cid, clean):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(pkt(0x10, mstr(b"MQTT") + bytes([4, 0x02 if clean else 0]) +
                  struct.pack(">H", 60) + mstr(cid.encode())))
    f = s.makefile("rb")
    t, b = rd(f)
    if t != 0x20 or b[1] != 0:
        sys.exit("%s: CONNACK refused: %r" % (cid, b))
    return s, f, b[0] & 1

def touch(path):
    open(path, "w").close()

def pub(port, state, n, ready_at):
    n, ready_at = int(n), int(ready_at)
    s, f, _ = connect(port, "crashpub-%d" % os.getpid(), True)
    cv = threading.Condition()
    st = {"sent": 0, "acked": [], "dead": False}
    def sender():
        for seq in range(1, n + 1):
            with cv:
                while not st["dead"] and seq - len(st["acked"]) > 500:
                    cv.wait(1)
                if st["dead"]:
                    return
            try:
                s.sendall(pkt(0x32, mstr(b"sess/p") +
                              struct.pack(">H", seq) + b"p%d" % seq))
            except OSError:
                return
            with cv:
                st["sent"] = seq
    th = threading.Thread(target=sender, daemon=True)
    th.start()
    try:
        while len(st["acked"]) < n:
            t, b = rd(f)
            if t >> 4 != 4:
                continue
            pid = struct.unpack(">H", b[:2])[0]
            with cv:
                if pid != len(st["acked"]) + 1:
                    sys.exit("PUBACK %d out of order" % pid)
                st["acked"].append(pid)
                cv.notify_all()
            if len(st["acked"]) == ready_at:
                touch(state + ".ready")
    except (EOFError, OSError):
        pass
    with cv:
        st["dead"] = True
        cv.notify_all()
    with open(state, "w") as out:
        out.write("sent %d\n" % st["sent"])
        for k in st["acked"]:
            out.write("acked %d\n" % k)

def hold(port, cid, ready):
    s, f, _ = connect(port, cid, False)
    s.sendall(pkt(0x82, struct.pack(">H", 1) + mstr(b"sess/p") + b"\x01"))
    while True:
        t, b = rd(f)
        if t >> 4 == 9:
            break
    touch(ready)
    try:
        while True:
            rd(f)      # PUBLISHes, never acknowledged
    except (EOFError, OSError):
        pass

def drain(port, cid, out):
    s, f, present = connect(port, cid, False)
    if not present:
        sys.exit("%s: session not resumed (CONNACK session present 0)" % cid)
    touch(out + ".ready")
    with open(out, "w") as o:
        while True:
            t, b = rd(f)
            if t >> 4 != 3:
                continue
            qos = (t >> 1) & 3
            tl = struct.unpack(">H", b[:2])[0]
            pos = 2 + tl
            if qos:
                pid = b[pos:pos + 2]
                pos += 2
                s.sendall(pkt(0x40, pid))
            payload = b[pos:].decode()
            if payload == "end":
                return
            o.write(payload + "\n")
            o.flush()

def check(state, out):
    sent, acked = 0, []
    for line in open(state):
        k, v = line.split()
        if k == "sent":
            sent = int(v)
        else:
            acked.append(int(v))
    got = [int(l[1:]) for l in open(out).read().split() if l.startswith("p")]
    bad = []
    if any(b <= a for a, b in zip(got, got[1:])):
        bad.append("not strictly increasing (reordered or duplicated)")
    if got and got[-1] > sent:
        bad.append("%d above the highest sent %d" % (got[-1], sent))
    lost = sorted(set(acked) - set(got))
    if lost:
        bad.append("%d acknowledged messages lost, first %s" %
                   (len(lost), lost[:5]))
    print("%s: %d sent, %d acked, %d delivered%s" %
          (out, sent, len(acked), len(got),
           ": " + "; ".join(bad) if bad else ""))
    sys.exit(1 if bad else 0)

{"pub": pub, "hold": hold, "drain": drain, "check": check}[sys.argv[1]](
    *sys.argv[2:])
PYEOF

mpub() {
	timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mport" -V 311 "$@"
}

ran=
fails=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	crash_config "$plugin" always mqtt
	# Step 6 queues up to 3000 messages per session ([listener mqtt] is
	# the config's last section).
	echo "max_queued_messages = 10000" >>"$PMQ_TMP/$plugin.ini"
	pmq_start "$PMQ_TMP/$plugin.ini"
	mport=$(pmq_port mqtt)
	[ -n "$mport" ] || pmq_fail "no mqtt port"

	# 1: the session and its subscription (-E: exit once SUBACKed).
	timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 -c \
	    -i "crashsub-$plugin" -q 1 -t 'sess/#' -E ||
	    pmq_fail "$plugin: persistent subscribe"
	# 2: retained, and queued while away.
	mpub -q 1 -r -t ret/x -m "r-$plugin" || pmq_fail "$plugin: retained publish"
	mpub -q 1 -t sess/a -m q1 || pmq_fail "$plugin: publish q1"
	mpub -q 1 -t sess/a -m q2 || pmq_fail "$plugin: publish q2"
	# 3
	pmq_kill9
	pmq_start "$PMQ_TMP/$plugin.ini"
	mport=$(pmq_port mqtt)

	# 4: resume; -d shows CONNACK's session-present flag and the SUBACK.
	out="$PMQ_TMP/$plugin.sub"
	# Line-buffered: the test waits for the SUBACK line.
	timeout 15 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 -c -d \
	    -i "crashsub-$plugin" -q 1 -t 'unrelated/x' -C 3 -W 12 \
	    -F 'MSG %t %p' >"$out" 2>&1 &
	spid=$!
	pmq_track "$spid"
	pmq_wait_for 10 grep -q 'received SUBACK' "$out" ||
	    pmq_fail "$plugin: resumed subscriber got no SUBACK"
	mpub -q 1 -t sess/b -m q3 || pmq_fail "$plugin: publish q3"
	wait "$spid"
	got=$(grep '^MSG' "$out" | tr '\n' ',')
	if [ "$got" != "MSG sess/a q1,MSG sess/a q2,MSG sess/b q3," ]; then
		echo "$plugin: after kill -9 the persistent session delivered" \
		    "[$got], want [MSG sess/a q1,MSG sess/a q2,MSG sess/b q3,]"
		grep -i 'connack' "$out" | head -n 1
		fails="$fails $plugin:session"
	else
		echo "$plugin: persistent session kept over kill -9" \
		    "(queued q1 q2, then q3 through the stored subscription)"
	fi

	# 5: retained.
	r=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 \
	    -t ret/x -C 1 -W 5 -F '%t %p r%r' 2>&1)
	if [ "$r" != "ret/x r-$plugin r1" ]; then
		echo "$plugin: retained after kill -9: [$r], want [ret/x r-$plugin r1]"
		fails="$fails $plugin:retained"
	else
		echo "$plugin: retained message kept over kill -9"
	fi

	# 6: kill -9 with publishes in flight; crashsub is offline again.
	rdy="$PMQ_TMP/$plugin.on.ready"
	timeout 40 python3 "$PMQ_TMP/m.py" hold "$mport" "crashon-$plugin" \
	    "$rdy" &
	hpid=$!
	pmq_track "$hpid"
	pmq_wait_for 10 test -f "$rdy" ||
	    pmq_fail "$plugin: holding subscriber got no SUBACK"
	st="$PMQ_TMP/$plugin.pub"
	timeout 40 python3 "$PMQ_TMP/m.py" pub "$mport" "$st" 3000 300 &
	ppid=$!
	pmq_track "$ppid"
	pmq_wait_for 20 test -f "$st.ready" ||
	    pmq_fail "$plugin: publisher got no 300 PUBACKs within 20 s"
	pmq_kill9
	wait "$ppid" || pmq_fail "$plugin: publisher failed"
	wait "$hpid" || pmq_fail "$plugin: holding subscriber failed"
	pmq_start "$PMQ_TMP/$plugin.ini"
	mport=$(pmq_port mqtt)
	dpids=
	for cid in "crashsub-$plugin" "crashon-$plugin"; do
		timeout 40 python3 "$PMQ_TMP/m.py" drain "$mport" "$cid" \
		    "$PMQ_TMP/$cid.got" &
		dpids="$dpids $!"
		pmq_track "$!"
		pmq_wait_for 10 test -f "$PMQ_TMP/$cid.got.ready" ||
		    pmq_fail "$cid: could not resume its session"
	done
	mpub -q 1 -t sess/p -m end || pmq_fail "$plugin: publish end"
	for p in $dpids; do
		wait "$p" || fails="$fails $plugin:drain"
	done
	for cid in "crashsub-$plugin" "crashon-$plugin"; do
		python3 "$PMQ_TMP/m.py" check "$st" "$PMQ_TMP/$cid.got" ||
		    fails="$fails $plugin:$cid"
	done
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
[ -z "$fails" ] || pmq_fail "lost over kill -9:$fails"
echo "MQTT session crash tests passed for:$ran"
pmq_pass
