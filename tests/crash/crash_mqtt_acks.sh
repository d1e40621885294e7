#!/bin/sh
# crash_mqtt_acks.sh - acknowledgements of a persistent MQTT session leave
# only once what they report is stored: plexmqd (file storage, fsync =
# always) is killed -9 by the client itself the moment the ack arrives.
# Skipped without mqtt.so or file.so.  A raw MQTT 3.1.1 client:
#
#   1. SUBACK: "acksub" (clean session false) subscribes to acks/s with
#      QoS 1; on the SUBACK plexmqd is killed.  After the restart acksub
#      resumes (session present) and a message published to acks/s must
#      reach it through the stored subscription.
#   2. PUBREC: a non-persistent subscriber listens on acks/q2 (no storage
#      write anywhere but the QoS 2 id); "ackpub" (clean session false)
#      publishes QoS 2 id 7 "once"; on the PUBREC plexmqd is killed.
#      After the restart ackpub resumes, resends the PUBLISH with DUP
#      (PUBREC expected, no delivery), sends PUBREL (PUBCOMP expected),
#      then publishes "again" (QoS 2, id 7 reused) and "end".  "once" must
#      have been delivered exactly once over both runs; "again" once.
# Every failure says which of these broke.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init crash_mqtt_acks
pmq_need python3
. "$top_srcdir/tests/crash/lib.sh"

crash_have mqtt || pmq_skip "mqtt.so not built"
crash_have file || pmq_skip "file.so not built"

cat >"$PMQ_TMP/a.py" <<'PYEOF'
import os, signal, socket, struct, sys

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
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=15)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(pkt(0x10, mstr(b"MQTT") + bytes([4, 0x02 if clean else 0]) +
                  struct.pack(">H", 60) + mstr(cid.encode())))
    f = s.makefile("rb")
    t, b = rd(f)
    if t != 0x20 or b[1] != 0:
        sys.exit("%s: CONNACK refused: %r" % (cid, b))
    return s, f, b[0] & 1

def expect(f, typ, pid, what):
    while True:
        t, b = rd(f)
        if t >> 4 == typ:
            if struct.unpack(">H", b[:2])[0] != pid:
                sys.exit("%s: wrong packet id" % what)
            return b

def subscribe(s, f, topic, qos, what):
    s.sendall(pkt(0x82, struct.pack(">H", 1) + mstr(topic) + bytes([qos])))
    b = expect(f, 9, 1, what)
    if b[2] >= 0x80:
        sys.exit("%s: SUBACK refused (0x%02x)" % (what, b[2]))

def publishes(s, f, until=None):
    """PUBLISH payloads (acknowledged) until payload `until` or EOF."""
    got = []
    try:
        while True:
            t, b = rd(f)
            if t >> 4 != 3:
                continue
            qos = (t >> 1) & 3
            pos = 2 + struct.unpack(">H", b[:2])[0]
            if qos:
                pid = b[pos:pos + 2]
                pos += 2
                s.sendall(pkt(0x40 if qos == 1 else 0x50, pid))
            p = b[pos:].decode()
            got.append(p)
            if p == until:
                return got
    except (EOFError, OSError):
        if until is not None:
            sys.exit("connection lost before %r; got %r" % (until, got))
        return got

def kill(pid):
    os.kill(int(pid), signal.SIGKILL)

# 1: subscribe, kill on SUBACK.
def sub(port, daemon):
    s, f, _ = connect(port, "acksub", False)
    subscribe(s, f, b"acks/s", 1, "acksub")
    kill(daemon)

def resume(port):
    s, f, present = connect(port, "acksub", False)
    if not present:
        sys.exit("1 SUBACK: acksub not resumed (session present 0): the "
                 "session record was not stored before the SUBACK")
    p, pf, _ = connect(port, "acksub-pub", True)
    p.sendall(pkt(0x32, mstr(b"acks/s") + struct.pack(">H", 1) + b"s1"))
    expect(pf, 4, 1, "acksub-pub PUBACK")
    p.sendall(pkt(0x30, mstr(b"acks/s") + b"end"))
    s.settimeout(5)
    try:
        got = publishes(s, f, "end")
    except socket.timeout:
        sys.exit("1 SUBACK: the message to acks/s never reached the "
                 "resumed acksub: its subscription was lost over kill -9 "
                 "right after the SUBACK")
    if got != ["s1", "end"]:
        sys.exit("1 SUBACK: acksub got %r, want ['s1', 'end']" % got)

# 2: QoS 2, kill on PUBREC.
def q2a(port, daemon, out):
    s, f, _ = connect(port, "ackq2sub", True)
    subscribe(s, f, b"acks/q2", 1, "ackq2sub")
    p, pf, _ = connect(port, "ackpub", False)
    p.sendall(pkt(0x34, mstr(b"acks/q2") + struct.pack(">H", 7) + b"once"))
    expect(pf, 5, 7, "ackpub PUBREC")
    kill(daemon)
    got = publishes(s, f)
    with open(out, "w") as o:
        o.write("".join(x + "\n" for x in got))

def q2b(port, first):
    s, f, _ = connect(port, "ackq2sub", True)
    subscribe(s, f, b"acks/q2", 1, "ackq2sub")
    p, pf, present = connect(port, "ackpub", False)
    if not present:
        sys.exit("2 PUBREC: ackpub not resumed (session present 0)")
    # The resend of a client that missed the PUBREC: DUP, same id.
    p.sendall(pkt(0x3C, mstr(b"acks/q2") + struct.pack(">H", 7) + b"once"))
    expect(pf, 5, 7, "ackpub PUBREC of the DUP resend")
    p.sendall(pkt(0x62, struct.pack(">H", 7)))
    expect(pf, 7, 7, "ackpub PUBCOMP")
    p.sendall(pkt(0x34, mstr(b"acks/q2") + struct.pack(">H", 7) + b"again"))
    expect(pf, 5, 7, "ackpub PUBREC of again")
    p.sendall(pkt(0x62, struct.pack(">H", 7)))
    expect(pf, 7, 7, "ackpub PUBCOMP of again")
    p.sendall(pkt(0x30, mstr(b"acks/q2") + b"end"))
    s.settimeout(5)
    got = publishes(s, f, "end")
    before = open(first).read().split()
    once = before.count("once") + got.count("once")
    if once != 1 or got.count("again") != 1:
        sys.exit("2 PUBREC: 'once' delivered %d times (%d before the "
                 "crash, %d after: the QoS 2 id was not stored before the "
                 "PUBREC, so the DUP resend was routed again), 'again' %d "
                 "times; want 1 and 1" %
                 (once, before.count("once"), got.count("once"),
                  got.count("again")))

{"sub": sub, "resume": resume, "q2a": q2a, "q2b": q2b}[sys.argv[1]](
    *sys.argv[2:])
PYEOF

crash_config file always mqtt
fails=

# 1: SUBACK
pmq_start "$PMQ_TMP/file.ini"
mport=$(pmq_port mqtt)
[ -n "$mport" ] || pmq_fail "no mqtt port"
timeout 15 python3 "$PMQ_TMP/a.py" sub "$mport" "$PMQ_PID" ||
    pmq_fail "1 SUBACK: subscribing failed"
pmq_kill9
pmq_start "$PMQ_TMP/file.ini"
mport=$(pmq_port mqtt)
if timeout 15 python3 "$PMQ_TMP/a.py" resume "$mport"; then
	echo "1: subscription acknowledged by SUBACK kept over kill -9"
else
	fails="$fails suback"
fi

# 2: PUBREC
timeout 15 python3 "$PMQ_TMP/a.py" q2a "$mport" "$PMQ_PID" \
    "$PMQ_TMP/q2.first" || pmq_fail "2 PUBREC: QoS 2 publish failed"
pmq_kill9
pmq_start "$PMQ_TMP/file.ini"
mport=$(pmq_port mqtt)
if timeout 15 python3 "$PMQ_TMP/a.py" q2b "$mport" "$PMQ_TMP/q2.first"; then
	echo "2: QoS 2 id acknowledged by PUBREC kept over kill -9" \
	    "(DUP resend not delivered again)"
else
	fails="$fails pubrec"
fi
pmq_stop || pmq_fail "unclean stop"
[ -z "$fails" ] || pmq_fail "acknowledged but lost over kill -9:$fails"
pmq_pass
