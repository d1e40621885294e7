#!/bin/sh
# tcp.sh - end-to-end test of the tcp transport (docs/tcp-protocol.md).
#
# Starts a private plexmqd on a free loopback port with the memory storage,
# drives it with a small python3 client (pub/sub, wildcards, shared
# subscriptions, binary payloads, reply order, READ of a logged topic,
# limits) and once through nc.  Run by `make check` with top_srcdir and
# top_builddir set; exit 0 pass, 1 fail, 77 skip.  The daemon's log is
# printed only when something fails.

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
daemon="$top_builddir/plexmqd"
plugins="$top_builddir/plugins/.libs"

if [ ! -x "$daemon" ]; then
	echo "SKIP: $daemon not built"
	exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
	echo "SKIP: python3 not found"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-tcp.XXXXXX") || exit 1
pid=
status=1

cleanup() {
	# Only the daemon this script started.
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	if [ "$status" -ne 0 ] && [ -f "$tmp/daemon.log" ]; then
		echo "---- plexmqd log ----"
		cat "$tmp/daemon.log"
		echo "---- end of plexmqd log ----"
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

fail() {
	echo "FAIL: $*"
	exit 1
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Bounded wait (10 s) until the daemon accepts on $port; fails at once if
# it exits.  Its exit leaves a zombie until we wait, so look at its state.
wait_port() {
	python3 - "$port" "$pid" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
def alive():
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True
deadline = time.monotonic() + 10
while time.monotonic() < deadline and alive():
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# Another process may grab the free port before the daemon binds it: then
# the daemon exits and we try another port, a few times.
mkdir -p "$tmp/data"
for attempt in 1 2 3; do
	port=$(free_port) || fail "no free port"
	cat >"$tmp/plexmqd.conf" <<EOF
[plexmqd]
data_dir = $tmp/data

[storage]
plugin = memory

[listener tcp]
plugin = tcp
listen = 127.0.0.1:$port
max_payload = 64k

[rule logged]
match = logged/#
log = logged
partitions = 1
EOF
	"$daemon" -c "$tmp/plexmqd.conf" --plugin-dir "$plugins" \
	    >"$tmp/daemon.log" 2>&1 &
	pid=$!
	if wait_port; then
		break
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
	echo "plexmqd did not listen on port $port (attempt $attempt)"
done
[ -n "$pid" ] || fail "plexmqd did not start"

cat >"$tmp/client.py" <<'EOF'
import socket
import sys

PORT = int(sys.argv[1])


class Conn:
    """One protocol connection; every read has a timeout."""

    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        while b"\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def cmd(self, text):
        self.send(text.encode() + b"\n")
        return self.line()

    def pub(self, topic, payload, verb="PUB"):
        self.send(b"%s %s %d\n" % (verb.encode(), topic.encode(),
                                   len(payload)) + payload + b"\n")
        return self.line()

    def framed(self, ln):
        """The payload after a MSG/REC line: <nbytes> is its last word."""
        n = int(ln.rsplit(b" ", 1)[1])
        data = self.exact(n)
        assert self.exact(1) == b"\n", "payload not followed by newline"
        return data

    def msg(self):
        ln = self.line()
        assert ln.startswith(b"MSG "), "expected MSG, got %r" % ln
        return ln[4:].rsplit(b" ", 1)[0].decode(), self.framed(ln)

    def msgs_until_pong(self):
        """Every MSG that arrives before the answer to a PING sent now."""
        self.send(b"PING\n")
        got = []
        while True:
            ln = self.line()
            if ln == b"+PONG":
                return got
            assert ln.startswith(b"MSG "), "expected MSG, got %r" % ln
            got.append((ln[4:].rsplit(b" ", 1)[0].decode(), self.framed(ln)))

    def expect_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            return
        except socket.timeout:
            raise AssertionError("connection not closed")

    def close(self):
        self.s.close()


def eq(got, want):
    assert got == want, "got %r, want %r" % (got, want)


def t_ping():
    c = Conn()
    eq(c.cmd("PING"), b"+PONG")
    eq(c.cmd("ping"), b"+PONG")
    c.send(b"PING\r\n")
    eq(c.line(), b"+PONG")
    c.close()


def t_unknown():
    c = Conn()
    eq(c.cmd("FROB x"), b"-ERR unknown command 'FROB'")
    eq(c.cmd("SUB"), b"-ERR wrong number of arguments for 'SUB'")
    eq(c.cmd("PING"), b"+PONG")  # still usable
    c.close()


def t_pubsub():
    a, b = Conn(), Conn()
    eq(b.cmd("SUB t/x"), b"+OK")
    eq(a.pub("t/x", b"hello"), b"+OK")
    eq(b.msg(), ("t/x", b"hello"))
    eq(a.pub("t/y", b"nobody"), b"+OK")
    eq(b.msgs_until_pong(), [])
    eq(b.cmd("UNSUB t/x"), b"+OK")
    eq(b.cmd("UNSUB t/x"), b"-ERR not subscribed")
    eq(a.pub("t/x", b"gone"), b"+OK")
    eq(b.msgs_until_pong(), [])
    a.close()
    b.close()


def t_wildcards():
    a, b, h = Conn(), Conn(), Conn()
    eq(b.cmd("SUB w/+/temp"), b"+OK")
    eq(h.cmd("SUB h/#"), b"+OK")
    for topic in ("w/k/temp", "w/k/l/temp", "w/j/temp",
                  "h/a", "h/a/b/c", "h", "x/h"):
        eq(a.pub(topic, topic.encode()), b"+OK")
    eq(b.msgs_until_pong(), [("w/k/temp", b"w/k/temp"),
                             ("w/j/temp", b"w/j/temp")])
    eq(h.msgs_until_pong(), [("h/a", b"h/a"), ("h/a/b/c", b"h/a/b/c"),
                             ("h", b"h")])
    a.close()
    b.close()
    h.close()


def t_shared():
    a, s1, s2 = Conn(), Conn(), Conn()
    eq(s1.cmd("SUB $share/g/s/#"), b"+OK")
    eq(s2.cmd("SUB $share/g/s/#"), b"+OK")
    for i in range(6):
        eq(a.pub("s/%d" % i, b"%d" % i), b"+OK")
    got = s1.msgs_until_pong() + s2.msgs_until_pong()
    eq(sorted(got), [("s/%d" % i, b"%d" % i) for i in range(6)])
    eq(s1.cmd("UNSUB $share/g/s/#"), b"+OK")
    eq(s1.cmd("SUB $share//s"), b"-ERR bad filter")
    a.close()
    s1.close()
    s2.close()


def t_binary():
    a, b = Conn(), Conn()
    payload = bytes(range(256)) + b"\n\x00\r\nPUB x 1\n" + bytes(1000)
    eq(b.cmd("SUB bin/t"), b"+OK")
    eq(a.pub("bin/t", payload), b"+OK")
    eq(b.msg(), ("bin/t", payload))
    eq(a.pub("bin/t", b""), b"+OK")  # empty payloads are fine
    eq(b.msg(), ("bin/t", b""))
    # "\r\n" after the payload is accepted too.
    a.send(b"PUB bin/t 2\r\nok\r\n")
    eq(a.line(), b"+OK")
    eq(b.msg(), ("bin/t", b"ok"))
    a.close()
    b.close()


def t_order():
    # One write, three requests: the answers must come in request order
    # even though the publishes complete in storage after PING is parsed.
    a, b = Conn(), Conn()
    eq(b.cmd("SUB o/#"), b"+OK")
    a.send(b"PUB o/1 1\na\nPING\nPUB o/2 1\nb\nFROB\nPING\n")
    eq([a.line() for _ in range(5)],
       [b"+OK", b"+PONG", b"+OK", b"-ERR unknown command 'FROB'",
        b"+PONG"])
    eq(b.msgs_until_pong(), [("o/1", b"a"), ("o/2", b"b")])
    # Many pipelined publishes: every answer, in order.
    a.send(b"".join(b"PUB o/n 1\nx\nPING\n" for _ in range(200)))
    for _ in range(200):
        eq(a.line(), b"+OK")
        eq(a.line(), b"+PONG")
    a.close()
    b.close()


def t_retained():
    a = Conn()
    eq(a.pub("r/1", b"keep", verb="PUBR"), b"+OK")
    b = Conn()
    eq(b.cmd("SUB r/#"), b"+OK")
    eq(b.msg(), ("r/1", b"keep"))
    eq(a.pub("r/1", b"", verb="PUBR"), b"+OK")  # clears it
    c = Conn()
    eq(c.cmd("SUB r/#"), b"+OK")
    eq(c.msgs_until_pong(), [])
    a.close()
    b.close()
    c.close()


def t_read():
    a = Conn()
    for i in range(3):
        eq(a.pub("logged/a", b"m%d" % i), b"+OK")
    a.send(b"READ logged 0 0\n")
    recs = []
    while True:
        ln = a.line()
        if not ln.startswith(b"REC "):
            break
        _, off, key, _n = ln.split(b" ")
        recs.append((int(off), key, a.framed(ln)))
    eq(recs, [(0, b"logged/a", b"m0"), (1, b"logged/a", b"m1"),
              (2, b"logged/a", b"m2")])
    eq(ln, b"+OK 3")
    # From the middle: records before the offset are skipped.
    a.send(b"READ logged 0 1 1\n")
    ln = a.line()
    eq(ln.split(b" ")[:3], [b"REC", b"1", b"logged/a"])
    eq(a.framed(ln), b"m1")
    last = 1
    while True:
        ln = a.line()
        if not ln.startswith(b"REC "):
            break
        last = int(ln.split(b" ")[1])
        a.framed(ln)
    eq(ln, b"+OK %d" % (last + 1))
    # At the end: nothing, and the same offset back.
    eq(a.cmd("READ logged 0 3"), b"+OK 3")
    eq(a.cmd("READ nosuch 0 0"), b"-ERR no such log")
    eq(a.cmd("READ logged 7 0"), b"-ERR no such partition")
    eq(a.cmd("READ logged 0 x"), b"-ERR bad number")
    a.close()


def t_limits():
    c = Conn()
    c.send(b"PING " + b"x" * 5000 + b"\n")
    eq(c.line(), b"-ERR line too long")
    c.expect_eof()
    c = Conn()
    c.send(b"PUB big %d\n" % (64 * 1024 + 1))  # max_payload = 64k
    eq(c.line(), b"-ERR payload too large")
    c.expect_eof()
    c = Conn()
    eq(c.pub("big", bytes(64 * 1024)), b"+OK")  # exactly the limit
    eq(c.pub("a/+", b"x"), b"-ERR bad topic")  # no wildcards in topics
    c.send(b"PUB t 3\nabcPING\n")
    eq(c.line(), b"-ERR payload not followed by newline")
    c.expect_eof()


def t_quit():
    c = Conn()
    c.send(b"PUB q/1 1\nz\nQUIT\nPING\n")
    eq(c.line(), b"+OK")  # the pending publish is answered first
    eq(c.line(), b"+BYE")
    c.expect_eof()
    eq(c.buf, b"")  # nothing after QUIT is answered


tests = [t_ping, t_unknown, t_pubsub, t_wildcards, t_shared, t_binary,
         t_order, t_retained, t_read, t_limits, t_quit]
failed = 0
for i, t in enumerate(tests, 1):
    try:
        t()
        print("ok %d - %s" % (i, t.__name__))
    except Exception as e:  # report every test, then fail
        failed += 1
        print("not ok %d - %s: %s: %s" % (i, t.__name__,
                                          type(e).__name__, e))
sys.exit(1 if failed else 0)
EOF

python3 "$tmp/client.py" "$port" || fail "python client"

# The protocol is meant to be typed at nc: pipe a session through it.
if command -v nc >/dev/null 2>&1; then
	out=$(printf 'PING\r\nSUB n/+\nPUB n/1 2\nhi\nPING\nQUIT\n' |
	    timeout 10 nc -q 1 127.0.0.1 "$port") || fail "nc session"
	want=$(printf '+PONG\n+OK\nMSG n/1 2\nhi\n+OK\n+PONG\n+BYE')
	[ "$out" = "$want" ] || fail "nc session: got '$out', want '$want'"
	echo "ok - nc session"
else
	echo "skip - nc session (no nc)"
fi

kill -0 "$pid" 2>/dev/null || fail "plexmqd died"
status=0
exit 0
