#!/bin/sh
# file_diskfull.sh - the file storage plugin on a full disk: a private
# plexmqd keeps its data on a 2 MiB tmpfs; a tcp client publishes to a
# logged topic until the broker answers -ERR (never +OK for data it could
# not store), then checks that reads still work and return every
# acknowledged message intact, that the daemon still serves, and that a
# restart finds exactly the acknowledged messages.  Skipped (77) where
# mounting a tmpfs is not permitted.

. "${top_srcdir:-.}/tests/integration/lib.sh"

pmq_init file_diskfull
pmq_need python3 mount umount
[ -f "$PMQ_PLUGINS/file.so" ] || pmq_skip "file plugin not built"
mnt="$PMQ_TMP/data"
mount -t tmpfs -o size=2m tmpfs "$mnt" 2>/dev/null ||
	pmq_skip "cannot mount a tmpfs here (needs root and mount rights)"
# Unmount before lib.sh removes the temp dir.
trap 'pmq_stop; umount "$mnt" 2>/dev/null; pmq_cleanup' EXIT

cat >"$PMQ_TMP/plexmq.ini" <<EOF
[plexmqd]
data_dir = $mnt
log_level = info

[storage]
plugin = file
fsync = always
segment_bytes = 256k

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0

[rule full]
match = full/#
log = full
EOF

pmq_start "$PMQ_TMP/plexmq.ini"
port=$(pmq_port tcp)
[ -n "$port" ] || pmq_fail "no port in the log"

# client.py MODE PORT: "fill" publishes until -ERR and prints the number
# of acknowledged messages; "check N" reads the log and verifies exactly
# messages 0..N-1.
cat >"$PMQ_TMP/client.py" <<'EOF'
import socket, sys

SIZE = 16 * 1024

def payload(i):
    head = b"msg %06d " % i
    return (head * (SIZE // len(head) + 1))[:SIZE]

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise SystemExit("connection closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.decode()
    def bytes(self, n):
        while len(self.buf) < n + 1:
            d = self.s.recv(65536)
            if not d:
                raise SystemExit("connection closed")
            self.buf += d
        b, self.buf = self.buf[:n], self.buf[n + 1:]
        return b
    def send(self, b):
        self.s.sendall(b)

def read_all(c):
    recs, off = [], 0
    while True:
        c.send(b"READ full 0 %d 1048576\n" % off)
        got = 0
        while True:
            l = c.line()
            if l.startswith("REC "):
                _, o, key, n = l.split(" ")
                recs.append((int(o), c.bytes(int(n))))
                got += 1
            elif l.startswith("+OK "):
                off = int(l[4:])
                break
            else:
                raise SystemExit("READ: " + l)
        if got == 0:
            return recs

mode, port = sys.argv[1], int(sys.argv[2])
c = Conn(port)
if mode == "fill":
    i, err = 0, None
    while i < 1000:
        c.send(b"PUB full/x %d\n" % SIZE + payload(i) + b"\n")
        l = c.line()
        if l == "+OK":
            i += 1
            continue
        err = l
        break
    if err is None or not err.startswith("-ERR"):
        raise SystemExit("never refused: %d stored, last %r" % (i, err))
    sys.stderr.write("fill: %d acknowledged, then %s\n" % (i, err))
    # Still refused or stored, never a hang, and the daemon answers.
    c.send(b"PUB full/x %d\n" % SIZE + payload(i) + b"\n")
    l = c.line()
    if l == "+OK":
        i += 1
    elif not l.startswith("-ERR"):
        raise SystemExit("second PUB: " + l)
    c.send(b"PING\n")
    if c.line() != "+PONG":
        raise SystemExit("no PONG after the error")
    print(i)
else:
    n = int(sys.argv[3])
    recs = read_all(c)
    if len(recs) != n:
        raise SystemExit("read %d records, %d acknowledged" % (len(recs), n))
    for i, (o, v) in enumerate(recs):
        if o != i or v != payload(i):
            raise SystemExit("record %d damaged (offset %d)" % (i, o))
    sys.stderr.write("check: %d records intact\n" % n)
EOF

acked=$(python3 "$PMQ_TMP/client.py" fill "$port") || pmq_fail "fill failed"
[ "$acked" -gt 10 ] || pmq_fail "only $acked messages fit in 2 MiB"
grep -q 'file storage: .*append at' "$PMQ_TMP/daemon.log" ||
	pmq_fail "the failed append was not logged"
python3 "$PMQ_TMP/client.py" check "$port" "$acked" ||
	pmq_fail "reads on a full disk"

pmq_stop || pmq_fail "plexmqd did not stop cleanly"
grep -q 'file storage: [0-9]* fsyncs for [0-9]* writes' \
	"$PMQ_TMP/daemon.log" || pmq_fail "no fsync summary at stop"
pmq_start "$PMQ_TMP/plexmq.ini"
port=$(pmq_port tcp)
python3 "$PMQ_TMP/client.py" check "$port" "$acked" ||
	pmq_fail "after a restart"
pmq_pass
