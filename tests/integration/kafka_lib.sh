# tests/integration/kafka_lib.sh - helpers for the Kafka-protocol tests,
# sourced after lib.sh:
#
#   . "$top_srcdir/tests/integration/lib.sh"
#   . "$top_srcdir/tests/integration/kafka_lib.sh"
#   pmq_init kafka_x
#   kafka_need                       # skip unless kafka.so (and kcat) exist
#   kafka_conf() { cat <<EOF ... listen = 127.0.0.1:$1 ... advertised_port = $1 EOF; }
#   kafka_start                      # writes $PMQ_TMP/plexmq.ini, starts, sets
#                                    # $KAFKA_PORT and $KAFKA_BROKER (host:port)
#
# Kafka clients reconnect to the host:port that Metadata advertises, so the
# plugin must know its port when the config is written: listening on port 0
# and reading the port from the log (pmq_port) does not work here.  We pick
# a free port (bind port 0, close), write it as both `listen` and
# `advertised_port`, and try again with another port when plexmqd cannot
# bind it because another process took it in between.

PMQ_KAFKA_SO="$PMQ_PLUGINS/kafka.so"
KAFKA_PORT=
KAFKA_BROKER=
KAFKA_NODE_DIR="$top_srcdir/tests/node"

# kafka_need: skip unless the kafka plugin, kcat and python3 exist.
kafka_need() {
	[ -f "$PMQ_KAFKA_SO" ] || pmq_skip "$PMQ_KAFKA_SO not built yet"
	pmq_need kcat python3
}

# kafka_need_node: skip unless node and the pinned kafkajs are installed.
kafka_need_node() {
	pmq_need node
	[ -d "$KAFKA_NODE_DIR/node_modules/kafkajs" ] ||
	    pmq_skip "$KAFKA_NODE_DIR/node_modules missing (npm ci in tests/node)"
}

# kafka_free_port: print a loopback port that was free a moment ago.
kafka_free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# _kafka_try_start CONFIG: like pmq_start, but returns 1 instead of failing
# when plexmqd exits during start-up (the port may have been taken).
_kafka_try_start() {
	: >>"$PMQ_TMP/daemon.log"
	_mark=$(wc -l <"$PMQ_TMP/daemon.log")
	PMQ_LOG_FROM=$((_mark + 1))
	"$PMQ_DAEMON" -c "$1" --plugin-dir "$PMQ_PLUGINS" \
	    >>"$PMQ_TMP/daemon.log" 2>&1 &
	PMQ_PID=$!
	_i=0
	while [ $_i -lt 200 ]; do
		if ! pmq_alive; then
			wait "$PMQ_PID" 2>/dev/null
			PMQ_PID=
			return 1
		fi
		tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
		    grep -q ' running (pid' && return 0
		_i=$((_i + 1))
		sleep 0.05
	done
	pmq_fail "plexmqd did not start within 10 s"
}

# kafka_start [PORT]: write the config with the test's kafka_conf function
# for a free port (or PORT, e.g. to restart on the same one) and start
# plexmqd on it; up to 5 attempts when the start fails because the address
# is in use.  Sets KAFKA_PORT and KAFKA_BROKER.
kafka_start() {
	_want=${1:-}
	_try=0
	while [ $_try -lt 5 ]; do
		_try=$((_try + 1))
		if [ -n "$_want" ] && [ $_try -eq 1 ]; then
			KAFKA_PORT=$_want
		else
			KAFKA_PORT=$(kafka_free_port) || pmq_fail "no free port"
		fi
		kafka_conf "$KAFKA_PORT" >"$PMQ_TMP/plexmq.ini"
		if _kafka_try_start "$PMQ_TMP/plexmq.ini"; then
			KAFKA_BROKER="127.0.0.1:$KAFKA_PORT"
			# Wait until the Kafka port accepts connections.
			pmq_wait_for 10 kafka_port_open "$KAFKA_PORT" ||
			    pmq_fail "port $KAFKA_PORT does not accept"
			return 0
		fi
		tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
		    grep -qi 'in use' || pmq_fail "plexmqd exited during start-up"
		echo "note: port $KAFKA_PORT was taken; trying another"
	done
	pmq_fail "no port could be bound in 5 attempts"
}

kafka_port_open() {
	python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2).close()' "$1" \
	    2>/dev/null
}

# kafka_kcat ARGS...: kcat against the test broker, bounded in time, with
# quiet logs (librdkafka's own log lines go to $PMQ_TMP/kcat.err).
kafka_kcat() {
	timeout 30 kcat -b "$KAFKA_BROKER" -X socket.timeout.ms=10000 \
	    -X topic.metadata.refresh.interval.ms=1000 "$@" \
	    2>>"$PMQ_TMP/kcat.err"
}

# kafka_node SCRIPT ARGS...: run tests/node/SCRIPT with the pinned kafkajs,
# bounded in time; the script reads the broker from $KAFKA_BROKER.
kafka_node() {
	_js=$1
	shift
	(cd "$KAFKA_NODE_DIR" && KAFKA_BROKER="$KAFKA_BROKER" \
	    timeout 50 node "$_js" "$@")
}

# kafka_common_conf PORT: the [plexmqd] and [listener kafka] sections most
# tests share (memory storage, fast group rebalances).
kafka_common_conf() {
	cat <<EOF
[plexmqd]
data_dir = $PMQ_TMP/data
log_level = debug

[listener kafka]
plugin = kafka
listen = 127.0.0.1:$1
advertised_host = 127.0.0.1
advertised_port = $1
auto_create_topics = true
default_partitions = 1
group_initial_rebalance_delay_ms = 0
group_min_session_timeout_ms = 1000
EOF
}

# kafka_raw: write $PMQ_TMP/kraw.py, a minimal raw-socket Kafka client for
# what kcat and kafkajs cannot send (bad input, standalone commits):
#   python3 "$PMQ_TMP/kraw.py" COMMAND PORT ARGS...
kafka_raw() {
	cat >"$PMQ_TMP/kraw.py" <<'PY'
import socket, struct, sys, time

def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)
def kstr(s):
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b
def kbytes(b): return i32(-1) if b is None else i32(len(b)) + b
def arr(items): return i32(len(items)) + b"".join(items)

def zigzag(v):
    v = (v << 1) ^ (v >> 63)
    out = b""
    while True:
        if v < 0x80:
            return out + bytes([v])
        out += bytes([(v & 0x7f) | 0x80])
        v >>= 7

_T = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)
def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF

def record_batch(values, bad_crc=False, pid=-1, epoch=-1, seq=-1):
    """A RecordBatch v2 (magic 2) of uncompressed records, no keys."""
    now = int(time.time() * 1000)
    recs = b""
    for i, v in enumerate(values):
        body = (i8(0) + zigzag(0) + zigzag(i) + zigzag(-1) +
                zigzag(len(v)) + v + zigzag(0))
        recs += zigzag(len(body)) + body
    after_crc = (i16(0) + i32(len(values) - 1) + i64(now) + i64(now) +
                 i64(pid) + i16(epoch) + i32(seq) + i32(len(values)) + recs)
    crc = crc32c(after_crc) ^ (1 if bad_crc else 0)
    tail = i32(0) + i8(2) + struct.pack(">I", crc) + after_crc
    return i64(0) + i32(len(tail)) + tail

class Reader:
    def __init__(self, b): self.b, self.o = b, 0
    def take(self, n):
        if self.o + n > len(self.b):
            raise ValueError("short response")
        v = self.b[self.o:self.o + n]; self.o += n; return v
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]
    def str(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 5)
        self.s.settimeout(5)
        self.cid = 0
    def send_raw(self, b): self.s.sendall(b)
    def send(self, key, ver, body):
        self.cid += 1
        m = i16(key) + i16(ver) + i32(self.cid) + kstr("kraw") + body
        self.s.sendall(i32(len(m)) + m)
        return self.cid
    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            d = self.s.recv(n - len(b))
            if not d:
                return None
            b += d
        return b
    def recv(self):
        """(correlation id, Reader) or None when the broker closed."""
        try:
            h = self.recv_exact(4)
            if h is None:
                return None
            n = struct.unpack(">i", h)[0]
            b = self.recv_exact(n)
        except ConnectionResetError:
            return None
        if b is None:
            return None
        return struct.unpack(">i", b[:4])[0], Reader(b[4:])
    def call(self, key, ver, body):
        cid = self.send(key, ver, body)
        r = self.recv()
        assert r is not None, "connection closed on api %d v%d" % (key, ver)
        assert r[0] == cid, "correlation id %d, want %d" % (r[0], cid)
        return r[1]
    def closed(self):
        """True when the broker closes within 5 s without answering."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

def api_versions_ok(port):
    r = Conn(port).call(18, 0, b"")
    assert r.i16() == 0, "ApiVersions v0 error"
    assert r.i32() > 0, "ApiVersions v0: no APIs"

def produce(c, topic, part, batch, acks=-1, ver=3):
    body = (kstr(None) + i16(acks) + i32(5000) +
            arr([kstr(topic) + arr([i32(part) + kbytes(batch)])]))
    if acks == 0:
        c.send(0, ver, body)
        return None
    r = c.call(0, ver, body)
    assert r.i32() == 1 and r.str() == topic and r.i32() == 1
    assert r.i32() == part
    err, base = r.i16(), r.i64()
    return err, base

def init_pid(c):
    """InitProducerId v0: (producer id, epoch)."""
    r = c.call(22, 0, kstr(None) + i32(60000))
    r.i32()
    err, pid, epoch = r.i16(), r.i64(), r.i16()
    assert err == 0 and pid >= 0 and epoch >= 0, \
        "InitProducerId: %d %d %d" % (err, pid, epoch)
    return pid, epoch

def fetch_values(c, topic, part, start=0):
    """Every record value of topic/part from offset start (Fetch v4)."""
    vals, off = [], start
    while True:
        body = (i32(-1) + i32(1000) + i32(1) + i32(1 << 22) + i8(0) +
                arr([kstr(topic) + arr([i32(part) + i64(off) + i32(1 << 22)])]))
        r = c.call(1, 4, body)
        r.i32(); r.i32(); r.str(); r.i32(); r.i32()
        err, hw = r.i16(), r.i64()
        assert err == 0, "fetch error %d" % err
        r.i64()
        for _ in range(max(r.i32(), 0)):
            r.i64(); r.i64()
        data = r.take(r.i32())
        if off >= hw:
            return vals
        o = 0
        while o + 61 <= len(data):
            blen = struct.unpack(">i", data[o + 8:o + 12])[0]
            if o + 12 + blen > len(data):
                break
            b = data[o:o + 12 + blen]
            o += 12 + blen
            base = struct.unpack(">q", b[0:8])[0]
            n = struct.unpack(">i", b[57:61])[0]
            rr = Reader(b[61:])
            def varint():
                sh = v = 0
                while True:
                    x = rr.take(1)[0]
                    v |= (x & 0x7f) << sh
                    sh += 7
                    if not x & 0x80:
                        return (v >> 1) ^ -(v & 1)
            for _ in range(n):
                varint(); rr.take(1); varint(); d = varint()
                kl = varint()
                if kl > 0: rr.take(kl)
                vl = varint()
                v = rr.take(vl) if vl >= 0 else None
                if base + d >= off:
                    vals.append(v)
                for _ in range(varint()):
                    rr.take(varint()); hl = varint()
                    if hl > 0: rr.take(hl)
            off = max(off, base + n)
        assert o > 0, "fetch at %d: no whole batch" % off

def cmd_bad(port):
    # ApiVersions with a version the broker does not know: error 35
    # (UNSUPPORTED_VERSION) in a v0-layout answer, connection kept open.
    c = Conn(port)
    r = c.call(18, 99, b"")
    assert r.i16() == 35, "ApiVersions v99: want error 35"
    c.call(18, 0, b"")
    print("ok: ApiVersions v99 -> error 35, connection kept")

    # An unknown API key: an error answer or a closed connection.
    c = Conn(port)
    cid = c.send(9999, 0, b"")
    r = c.recv()
    if r is None:
        print("ok: unknown API key -> connection closed")
    else:
        assert r[0] == cid
        print("ok: unknown API key -> answered (%d bytes)" % len(r[1].b))
    api_versions_ok(port)

    # A framed request whose body is cut short: Metadata v1 claiming 5
    # topic names and carrying none, and a Produce v3 cut in its topic.
    for key, ver, body in ((3, 1, i32(5)),
                           (0, 3, kstr(None) + i16(1) + i32(1000) + i32(1) + i16(50) + b"ab")):
        c = Conn(port)
        cid = c.send(key, ver, body)
        r = c.recv()
        if r is None:
            print("ok: truncated api %d -> connection closed" % key)
        else:
            assert r[0] == cid
            print("ok: truncated api %d -> answered" % key)
        api_versions_ok(port)

    # A frame cut off by the client closing mid-way.
    c = Conn(port)
    c.send_raw(i32(100) + i16(3) + i16(1))
    c.s.close()
    api_versions_ok(port)

    # Size prefixes beyond socket_request_max_bytes, and negative: closed.
    for size in (200000, 0x7fffffff, -1):
        c = Conn(port)
        c.send_raw(i32(size) + i16(18) + i16(0) + i32(1) + kstr("x"))
        assert c.closed(), "size %d: connection not closed" % size
        print("ok: size prefix %d -> connection closed" % size)
        api_versions_ok(port)

    # Produce: a valid batch, a bad CRC (CORRUPT_MESSAGE 2), a batch over
    # message_max_bytes (MESSAGE_TOO_LARGE 10), acks=0 (no response).
    c = Conn(port)
    c.call(3, 1, arr([kstr("raw")]))   # Metadata v1 auto-creates "raw"
    for _ in range(100):
        err, base = produce(c, "raw", 0, record_batch([b"a", b"b"]))
        if err not in (3, 5):          # unknown topic, leader not available
            break
        time.sleep(0.05)
    assert err == 0 and base == 0, "valid batch: error %d base %d" % (err, base)
    err, _ = produce(c, "raw", 0, record_batch([b"c"], bad_crc=True))
    assert err == 2, "bad CRC: error %d, want 2" % err
    err, _ = produce(c, "raw", 0, record_batch([b"x" * 20000]))
    assert err == 10, "oversized batch: error %d, want 10" % err
    produce(c, "raw", 0, record_batch([b"z"]), acks=0)
    err, base = produce(c, "raw", 0, record_batch([b"d"]))
    assert err == 0 and base == 3, "after acks=0: error %d base %d" % (err, base)
    print("ok: produce errors")

    # Idempotent producer: InitProducerId v0, then sequence checks.  A
    # retried batch is a duplicate: DUPLICATE_SEQUENCE_NUMBER (46) or, as
    # newer Kafka answers, success with the first attempt's offset; a gap
    # is OUT_OF_ORDER_SEQUENCE_NUMBER (45).  Neither is appended again.
    c = Conn(port)
    pid, epoch = init_pid(c)
    b0 = record_batch([b"s0", b"s1"], pid=pid, epoch=epoch, seq=0)
    err, base = produce(c, "raw", 0, b0)
    assert err == 0 and base == 4, "seq 0: error %d base %d" % (err, base)
    err, base2 = produce(c, "raw", 0, b0)
    assert err == 46 or (err == 0 and base2 == 4), \
        "duplicate seq 0: error %d base %d" % (err, base2)
    err, _ = produce(c, "raw", 0, record_batch([b"gap"], pid=pid, epoch=epoch, seq=5))
    assert err == 45, "sequence gap: error %d, want 45" % err
    err, base = produce(c, "raw", 0, record_batch([b"s2"], pid=pid, epoch=epoch, seq=2))
    assert err == 0 and base == 6, "seq 2: error %d base %d" % (err, base)
    print("ok: idempotent producer")

def cmd_commit(port, group, topic, part, off, meta):
    """A standalone OffsetCommit v2 (generation -1, member "")."""
    c = Conn(port)
    body = (kstr(group) + i32(-1) + kstr("") + i64(-1) +
            arr([kstr(topic) + arr([i32(int(part)) + i64(int(off)) + kstr(meta)])]))
    r = c.call(8, 2, body)
    assert r.i32() == 1 and r.str() == topic and r.i32() == 1
    assert r.i32() == int(part)
    err = r.i16()
    assert err == 0, "standalone commit: error %d" % err

def cmd_fetchoff(port, group, topic, nparts):
    """OffsetFetch v1: print "PARTITION OFFSET METADATA" lines."""
    c = Conn(port)
    n = int(nparts)
    r = c.call(9, 1, kstr(group) + arr([kstr(topic) + arr([i32(p) for p in range(n)])]))
    assert r.i32() == 1 and r.str() == topic
    out = []
    for _ in range(r.i32()):
        p, off, meta, err = r.i32(), r.i64(), r.str(), r.i16()
        assert err == 0, "partition %d: error %d" % (p, err)
        out.append("%d %d %s" % (p, off, meta or ""))
    print("\n".join(sorted(out)))

cmds = {"bad": cmd_bad, "commit": cmd_commit, "fetchoff": cmd_fetchoff}
cmds[sys.argv[1]](int(sys.argv[2]), *sys.argv[3:])
PY
}
