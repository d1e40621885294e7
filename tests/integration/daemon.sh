#!/bin/sh
# daemon.sh - the daemon itself, through the tcp transport: listening on
# IPv4 and IPv6 at once, the per-listener connection limit, --version and
# --help, SIGHUP reopening the log file, replies in request order when
# storage completions are slow, and a clean exit 0 on SIGTERM.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init daemon
pmq_need python3

"$PMQ_DAEMON" --version | grep -q '^plexmqd .* (plugin ABI 1\.' ||
    pmq_fail "--version"
"$PMQ_DAEMON" --help | grep -q -- '--check-config' || pmq_fail "--help"
"$PMQ_DAEMON" --no-such-flag >/dev/null 2>&1 && pmq_fail "bad flag accepted"

v6=
if python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' \
    2>/dev/null; then
	v6="listen = [::1]:0"
else
	echo "note: no IPv6 loopback here; IPv6 case not run"
fi

cat >"$PMQ_TMP/plexmq.ini" <<CONF
[plexmqd]
data_dir = $PMQ_TMP/data
log_file = $PMQ_TMP/plexmqd.log
log_level = debug

[storage]
plugin = memory
delay_ms = 20

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0
$v6
max_connections = 3
CONF

# With log_file set, lines go to the file, not to daemon.log.
"$PMQ_DAEMON" -c "$PMQ_TMP/plexmq.ini" --plugin-dir "$PMQ_PLUGINS" \
    >>"$PMQ_TMP/daemon.log" 2>&1 &
PMQ_PID=$!
pmq_wait_for 10 grep -q ' running (pid' "$PMQ_TMP/plexmqd.log" ||
    pmq_fail "no start-up line in the log file"
p4=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$PMQ_TMP/plexmqd.log" | head -n 1)
p6=$(sed -n 's/.*listening on \[::1\]:\([0-9]*\) .*/\1/p' "$PMQ_TMP/plexmqd.log" | head -n 1)
[ -n "$p4" ] || pmq_fail "no IPv4 port"

cat >"$PMQ_TMP/t.py" <<'PY'
import socket, sys, time

def conn(host, port, family=socket.AF_INET):
    s = socket.socket(family)
    s.settimeout(5)
    s.connect((host, port))
    return s

def lines(s, n):
    buf = b""
    deadline = time.monotonic() + 5
    while buf.count(b"\n") < n and time.monotonic() < deadline:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.split(b"\n")[:n]

p4 = int(sys.argv[1])
p6 = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else 0
a = conn("127.0.0.1", p4)
a.sendall(b"SUB x/#\n")
assert lines(a, 1) == [b"+OK"], "sub"
if p6:
    b = conn("::1", p6, socket.AF_INET6)
    b.sendall(b"PUB x/y 2\nv6\n")
    assert lines(b, 1) == [b"+OK"], "v6 pub"
    got = lines(a, 2)
    assert got == [b"MSG x/y 2", b"v6"], got
    b.close()
# Replies in request order although each storage completion takes 20 ms
# and PING needs none: retained publishes go to storage.
c = conn("127.0.0.1", p4)
c.sendall(b"PUBR r/1 1\na\nPING\nPUBR r/2 1\nb\nPING\n")
got = lines(c, 4)
assert got == [b"+OK", b"+PONG", b"+OK", b"+PONG"], got
# Wait until b's close has been seen, then fill the limit of 3 (a, c, d).
deadline = time.monotonic() + 5
while True:
    d = conn("127.0.0.1", p4)
    d.sendall(b"PING\n")
    try:
        ok = lines(d, 1) == [b"+PONG"]
    except (ConnectionResetError, BrokenPipeError):
        ok = False
    if ok:
        break
    assert time.monotonic() < deadline, "third connection never served"
    d.close()
    time.sleep(0.05)
e = conn("127.0.0.1", p4)
try:
    e.sendall(b"PING\n")
    r = e.recv(100)
except (ConnectionResetError, BrokenPipeError):
    r = b""
assert r == b"", "4th connection was served: %r" % r
print("ok")
PY
python3 "$PMQ_TMP/t.py" "$p4" "$p6" || pmq_fail "client checks"
grep -q 'connection refused: limit reached' "$PMQ_TMP/plexmqd.log" ||
    pmq_fail "limit refusal not logged"

# SIGHUP reopens the log file (log rotation).
mv "$PMQ_TMP/plexmqd.log" "$PMQ_TMP/plexmqd.log.1"
kill -HUP "$PMQ_PID"
pmq_wait_for 5 grep -q 'log file reopened' "$PMQ_TMP/plexmqd.log" 2>/dev/null ||
    pmq_fail "log not reopened on SIGHUP"

pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
grep -q 'stopped' "$PMQ_TMP/plexmqd.log" || pmq_fail "no 'stopped' line"
pmq_pass
