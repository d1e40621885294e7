#!/bin/sh
# diskfull_protocols.sh - issue 5 (disk full) through the MQTT and Kafka
# transports, as file_diskfull.sh does for tcp.  A private plexmqd keeps
# its file storage (fsync = always) on a 2 MiB tmpfs:
#
#  mqtt   an MQTT v5 client (raw python3) sends QoS 1 PUBLISHes, a few in
#         flight, to a topic that a [rule] logs, until a PUBACK carries a
#         failure reason code (>= 0x80; plugins/mqtt answers 0x97 quota
#         exceeded for ENOSPC, 0x80 otherwise) or the connection closes.
#         No success PUBACK may follow the first failure, each packet id
#         is acknowledged exactly once and in order.  Then the daemon
#         still serves (PINGREQ, a new CONNECT), a tcp READ of the log on
#         a second listener returns exactly the acknowledged messages, and
#         so does a restart with the disk still full.
#  kafka  Produce v3 (acks=-1, kafka_lib.sh's kraw.py helpers), a few
#         requests in flight, until a partition answers an error
#         (KAFKA_STORAGE_ERROR 56); no success after it, every success at
#         the next offset; then Fetch returns every acknowledged record,
#         also after a restart.
#
# Both check that the failed append was logged and that nothing stored
# before is damaged.  Skipped (77) where mounting a tmpfs is not permitted
# or when file.so is missing; a case whose transport plugin is missing is
# skipped and the test as a whole then SKIPs rather than passes.

. "${top_srcdir:-.}/tests/integration/lib.sh"
. "${top_srcdir:-.}/tests/integration/kafka_lib.sh"

pmq_init diskfull_protocols
pmq_need python3 mount umount timeout
[ -f "$PMQ_PLUGINS/file.so" ] || pmq_skip "file plugin not built"

mounts=
# Unmount (ours only) before lib.sh removes the temp dir.
df_cleanup() {
	pmq_stop
	for m in $mounts; do
		umount "$m" 2>/dev/null
	done
	pmq_cleanup
}
trap 'df_cleanup' EXIT

# df_mount DIR: a fresh 2 MiB tmpfs on DIR, or skip the whole test.
df_mount() {
	mkdir -p "$1"
	mount -t tmpfs -o size=2m tmpfs "$1" 2>/dev/null ||
	    pmq_skip "cannot mount a tmpfs here (needs root and mount rights)"
	mounts="$mounts $1"
}

skipped=

# ---------------------------------------------------------------- MQTT v5

cat >"$PMQ_TMP/mqttfull.py" <<'PY'
import socket, struct, sys

SIZE = 16 * 1024
TOPIC = b"full/x"
WINDOW = 8

def payload(i):
    head = b"mqtt %06d " % i
    return (head * (SIZE // len(head) + 1))[:SIZE]

def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def mstr(b): return struct.pack(">H", len(b)) + b

def packet(first, body): return bytes([first]) + varint(len(body)) + body

class Mqtt:
    def __init__(self, port, cid):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        # CONNECT v5, clean start, keepalive 60, no properties.
        self.s.sendall(packet(0x10, mstr(b"MQTT") + bytes([5, 0x02]) +
                              struct.pack(">H", 60) + varint(0) + mstr(cid)))
        t, body = self.read()
        if t != 0x20 or len(body) < 2 or body[1] != 0:
            raise SystemExit("CONNACK: type %#x %r" % (t, body[:4]))
    def read(self):
        """(first byte, body), or (None, None) when the broker closed."""
        while True:
            if len(self.buf) >= 2:
                n, mul, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n += (b & 0x7f) * mul
                    mul *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + n:
                            t, body = self.buf[0], self.buf[i:i + n]
                            self.buf = self.buf[i + n:]
                            return t, body
                        break
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return None, None
            self.buf += d
    def publish(self, i, pid):
        body = mstr(TOPIC) + struct.pack(">H", pid) + varint(0) + payload(i)
        self.s.sendall(packet(0x32, body))

def pid_of(i): return i % 65535 + 1

def cmd_fill(port):
    c = Mqtt(port, b"df-fill")
    acked = 0          # messages 0..acked-1 got a success PUBACK
    sent = 0
    inflight = []      # message numbers, in PUBLISH order
    failed = None      # (message, reason) of the first failure
    closed = False
    while sent < 1000 and (failed is None or inflight):
        while failed is None and not closed and len(inflight) < WINDOW:
            c.publish(sent, pid_of(sent))
            inflight.append(sent)
            sent += 1
        t, body = c.read()
        if t is None:
            closed = True
            if failed is None:
                failed = (inflight[0] if inflight else sent, "closed")
            break
        if t >> 4 == 14:                       # DISCONNECT
            rc = body[0] if body else 0
            sys.stderr.write("mqtt fill: DISCONNECT reason %#x\n" % rc)
            if failed is None:
                failed = (inflight[0] if inflight else sent,
                          "disconnect %#x" % rc)
            closed = True
            break
        if t != 0x40:
            raise SystemExit("unexpected packet type %#x" % t)
        pid = struct.unpack(">H", body[:2])[0]
        rc = body[2] if len(body) > 2 else 0
        if not inflight or pid != pid_of(inflight[0]):
            raise SystemExit("PUBACK for packet id %d, waiting for %s"
                             % (pid, [pid_of(m) for m in inflight]))
        m = inflight.pop(0)
        if rc < 0x80:
            if failed is not None:
                raise SystemExit("message %d: success PUBACK %#x after "
                                 "message %d failed (%s)"
                                 % (m, rc, failed[0], failed[1]))
            if m != acked:
                raise SystemExit("message %d acknowledged, %d expected"
                                 % (m, acked))
            acked += 1
        else:
            if rc not in (0x80, 0x97):
                raise SystemExit("message %d: unexpected reason %#x"
                                 % (m, rc))
            if failed is None:
                failed = (m, "reason %#x" % rc)
    if failed is None:
        raise SystemExit("never refused: %d acknowledged" % acked)
    sys.stderr.write("mqtt fill: %d acknowledged, then message %d: %s\n"
                     % (acked, failed[0], failed[1]))
    # The broker still serves MQTT: the same connection (when still
    # open) answers PINGREQ and refuses or stores the retried message,
    # never without an answer; a new client connects.
    if not closed:
        c.publish(acked, 0x7fff)
        t, body = c.read()
        if t == 0x40 and struct.unpack(">H", body[:2])[0] == 0x7fff:
            rc = body[2] if len(body) > 2 else 0
            if rc < 0x80:
                acked += 1
            sys.stderr.write("mqtt fill: retry answered %#x\n" % rc)
        elif t is None or t >> 4 == 14:
            sys.stderr.write("mqtt fill: retry closed the connection\n")
            closed = True
        else:
            raise SystemExit("retry: packet %#x" % t)
    if not closed:
        c.s.sendall(b"\xc0\x00")
        t, _ = c.read()
        if t != 0xd0:
            raise SystemExit("no PINGRESP after the error (%r)" % t)
    c2 = Mqtt(port, b"df-again")
    c2.s.sendall(b"\xc0\x00")
    if c2.read()[0] != 0xd0:
        raise SystemExit("new connection: no PINGRESP")
    print(acked)

def cmd_check(port, n):
    """tcp READ of log "full": exactly messages 0..n-1, in order."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    buf = b""
    def fill(cond):
        nonlocal buf
        while not cond():
            d = s.recv(65536)
            if not d:
                raise SystemExit("tcp connection closed")
            buf += d
    recs, off = [], 0
    while True:
        s.sendall(b"READ full 0 %d 1048576\n" % off)
        got = 0
        while True:
            fill(lambda: b"\n" in buf)
            l, buf = buf.split(b"\n", 1)
            l = l.decode()
            if l.startswith("REC "):
                _, o, key, ln = l.split(" ")
                ln = int(ln)
                fill(lambda: len(buf) >= ln + 1)
                recs.append((int(o), key, buf[:ln]))
                buf = buf[ln + 1:]
                got += 1
            elif l.startswith("+OK "):
                off = int(l[4:])
                break
            else:
                raise SystemExit("READ: " + l)
        if got == 0:
            break
    if len(recs) != n:
        raise SystemExit("read %d records, %d acknowledged" % (len(recs), n))
    for i, (o, key, v) in enumerate(recs):
        if o != i or key != TOPIC.decode() or v != payload(i):
            raise SystemExit("record %d damaged (offset %d key %s)"
                             % (i, o, key))
    sys.stderr.write("mqtt check: %d records intact\n" % n)

if sys.argv[1] == "fill":
    cmd_fill(int(sys.argv[2]))
else:
    cmd_check(int(sys.argv[2]), int(sys.argv[3]))
PY

case_mqtt() {
	if [ ! -f "$PMQ_PLUGINS/mqtt.so" ]; then
		echo "note: mqtt.so not built: the MQTT case is skipped"
		skipped="$skipped mqtt"
		return 0
	fi
	mnt="$PMQ_TMP/mqttdata"
	df_mount "$mnt"
	cat >"$PMQ_TMP/mqtt.ini" <<EOF
[plexmqd]
data_dir = $mnt
log_level = info

[storage]
plugin = file
fsync = always
segment_bytes = 256k

[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:0

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0

[rule full]
match = full/#
log = full
EOF
	pmq_start "$PMQ_TMP/mqtt.ini"
	mport=$(pmq_port mqtt)
	tport=$(pmq_port tcp)
	[ -n "$mport" ] && [ -n "$tport" ] || pmq_fail "mqtt: no port in the log"
	acked=$(timeout 40 python3 "$PMQ_TMP/mqttfull.py" fill "$mport") ||
	    pmq_fail "mqtt: fill failed"
	[ "$acked" -gt 10 ] || pmq_fail "mqtt: only $acked messages fit in 2 MiB"
	pmq_alive || pmq_fail "mqtt: plexmqd died on the full disk"
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -q 'file storage: .*append at' ||
	    pmq_fail "mqtt: the failed append was not logged"
	timeout 40 python3 "$PMQ_TMP/mqttfull.py" check "$tport" "$acked" ||
	    pmq_fail "mqtt: reads on a full disk"
	pmq_stop || pmq_fail "mqtt: plexmqd did not stop cleanly"
	pmq_start "$PMQ_TMP/mqtt.ini"
	tport=$(pmq_port tcp)
	timeout 40 python3 "$PMQ_TMP/mqttfull.py" check "$tport" "$acked" ||
	    pmq_fail "mqtt: after a restart"
	pmq_stop || pmq_fail "mqtt: plexmqd did not stop cleanly after restart"
	echo "ok: mqtt: $acked acknowledged messages survive a full disk"
}

# ------------------------------------------------------------------ Kafka

case_kafka() {
	if [ ! -f "$PMQ_KAFKA_SO" ]; then
		echo "note: kafka.so not built: the Kafka case is skipped"
		skipped="$skipped kafka"
		return 0
	fi
	kmnt="$PMQ_TMP/kafkadata"
	df_mount "$kmnt"
	kafka_conf() {
		cat <<EOF
[plexmqd]
data_dir = $kmnt
log_level = info

[storage]
plugin = file
fsync = always
segment_bytes = 256k

[listener kafka]
plugin = kafka
listen = 127.0.0.1:$1
advertised_host = 127.0.0.1
advertised_port = $1
auto_create_topics = true
default_partitions = 1
EOF
	}
	kafka_raw
	sed '/^cmds = /,$d' "$PMQ_TMP/kraw.py" >"$PMQ_TMP/kfull.py"
	cat >>"$PMQ_TMP/kfull.py" <<'PY'
T = "full"
SIZE = 16 * 1024
WINDOW = 4

def value(i):
    head = b"kafka %06d " % i
    return (head * (SIZE // len(head) + 1))[:SIZE]

def produce_body(i):
    return (kstr(None) + i16(-1) + i32(10000) +
            arr([kstr(T) + arr([i32(0) + kbytes(record_batch([value(i)]))])]))

def answer(r):
    assert r.i32() == 1 and r.str() == T and r.i32() == 1
    assert r.i32() == 0
    return r.i16(), r.i64()

def cmd_fill(port):
    c = Conn(port)
    c.s.settimeout(20)
    c.call(3, 1, arr([kstr(T)]))   # Metadata v1 auto-creates the topic
    for _ in range(100):
        r = c.call(0, 3, produce_body(0))
        err, base = answer(r)
        if err not in (3, 5):
            break
        time.sleep(0.05)
    assert err == 0 and base == 0, "first batch: error %d base %d" % (err, base)
    acked, sent = 1, 1
    inflight = []      # (correlation id, message)
    failed = None
    while sent < 1000 and (failed is None or inflight):
        while failed is None and len(inflight) < WINDOW:
            inflight.append((c.send(0, 3, produce_body(sent)), sent))
            sent += 1
        got = c.recv()
        if got is None:
            if failed is None:
                failed = (inflight[0][1], "closed")
            inflight = []
            break
        cid, r = got
        want, m = inflight.pop(0)
        assert cid == want, "correlation id %d, want %d" % (cid, want)
        err, base = answer(r)
        if err == 0:
            assert failed is None, ("message %d stored at %d after message "
                                    "%d failed (%s)" % (m, base, *failed))
            assert m == acked and base == acked, \
                "message %d stored at %d, %d expected" % (m, base, acked)
            acked += 1
        else:
            assert err == 56, "message %d: error %d, want 56" % (m, err)
            if failed is None:
                failed = (m, "error %d" % err)
    assert failed is not None, "never refused: %d acknowledged" % acked
    sys.stderr.write("kafka fill: %d acknowledged, then message %d: %s\n"
                     % (acked, failed[0], failed[1]))
    # Retry on a new connection: refused again or stored next, answered.
    c = Conn(port)
    c.s.settimeout(20)
    err, base = answer(c.call(0, 3, produce_body(acked)))
    if err == 0:
        assert base == acked, "retry stored at %d, %d expected" % (base, acked)
        acked += 1
    else:
        assert err == 56, "retry: error %d" % err
    sys.stderr.write("kafka fill: retry answered %d\n" % err)
    api_versions_ok(port)
    print(acked)

def cmd_check(port, n):
    c = Conn(port)
    c.s.settimeout(20)
    vals = fetch_values(c, T, 0)
    assert len(vals) == int(n), "fetched %d records, %s acknowledged" % (len(vals), n)
    for i, v in enumerate(vals):
        assert v == value(i), "record %d damaged" % i
    sys.stderr.write("kafka check: %s records intact\n" % n)

{"fill": cmd_fill, "check": cmd_check}[sys.argv[1]](int(sys.argv[2]), *sys.argv[3:])
PY
	kafka_start
	acked=$(timeout 40 python3 "$PMQ_TMP/kfull.py" fill "$KAFKA_PORT") ||
	    pmq_fail "kafka: fill failed"
	[ "$acked" -gt 10 ] || pmq_fail "kafka: only $acked batches fit in 2 MiB"
	pmq_alive || pmq_fail "kafka: plexmqd died on the full disk"
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -q 'file storage: .*append at' ||
	    pmq_fail "kafka: the failed append was not logged"
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -q 'produce to full-0 failed' ||
	    pmq_fail "kafka: the failed produce was not logged"
	timeout 40 python3 "$PMQ_TMP/kfull.py" check "$KAFKA_PORT" "$acked" ||
	    pmq_fail "kafka: fetch on a full disk"
	pmq_stop || pmq_fail "kafka: plexmqd did not stop cleanly"
	kafka_start "$KAFKA_PORT"
	timeout 40 python3 "$PMQ_TMP/kfull.py" check "$KAFKA_PORT" "$acked" ||
	    pmq_fail "kafka: after a restart"
	pmq_stop || pmq_fail "kafka: plexmqd did not stop cleanly after restart"
	echo "ok: kafka: $acked acknowledged batches survive a full disk"
}

case_mqtt
case_kafka
[ -z "$skipped" ] || pmq_skip "plugins missing for:$skipped"
pmq_pass
