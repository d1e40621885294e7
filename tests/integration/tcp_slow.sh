#!/bin/sh
# tcp_slow.sh - a subscriber that does not keep up, over the tcp transport
# (slow_subscriber, docs/tcp-protocol.md; conn_block_input, ABI 1.1).
#
# Two tcp listeners with a 64 KiB output high-water mark: `blk` with
# slow_subscriber = block (the default), `drp` with drop.  On each, a
# subscriber with a small receive buffer stops reading while a publisher
# sends 40,000 messages of 1000 bytes (40 MB, far more than the mark and
# the socket buffers).  Once the publisher has stopped making progress or
# finished, the subscriber reads until its PING is answered.
#   block: the publisher stalls (plexmqd stops reading it), then every
#          message arrives, in order, and every PUB is acknowledged;
#   drop:  the publisher is never slowed; messages are lost and the
#          broker logs the drop.
. "${top_srcdir:-.}/tests/integration/lib.sh"
pmq_init tcp_slow
pmq_need python3

cat >"$PMQ_TMP/plexmq.ini" <<EOF
[plexmqd]
data_dir = $PMQ_TMP/data
[storage]
plugin = memory
[listener blk]
plugin = tcp
listen = 127.0.0.1:0
output_high_water = 64k
[listener drp]
plugin = tcp
listen = 127.0.0.1:0
output_high_water = 64k
slow_subscriber = drop
EOF
pmq_start "$PMQ_TMP/plexmq.ini"
blk=$(pmq_port blk)
drp=$(pmq_port drp)
[ -n "$blk" ] && [ -n "$drp" ] || pmq_fail "no listener ports"

cat >"$PMQ_TMP/slow.py" <<'PY'
import socket, sys, threading, time

port, mode = int(sys.argv[1]), sys.argv[2]
N, SIZE = 40000, 1000

def connect(rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    return s, s.makefile("rb")

sub, subf = connect(rcvbuf=4096)
sub.sendall(b"SUB slow/t\n")
assert subf.readline() == b"+OK\n"

pub, pubf = connect()
sent = [0]
oks = [0]
def send():
    for i in range(N):
        p = b"%08d" % i + b"x" * (SIZE - 8)
        pub.sendall(b"PUB slow/t %d\n%s\n" % (SIZE, p))
        sent[0] = i + 1
def acks():
    for _ in range(N):
        if pubf.readline() != b"+OK\n":
            return
        oks[0] += 1
ts = threading.Thread(target=send, daemon=True)
ta = threading.Thread(target=acks, daemon=True)
ts.start(); ta.start()

# Wait (at most 15 s) until the publisher finished or made no progress
# for 0.5 s: the subscriber has read nothing so far.
deadline = time.monotonic() + 15
last, still = -1, 0
while time.monotonic() < deadline and oks[0] < N:
    if sent[0] == last:
        still += 1
        if still >= 10:
            break
    else:
        last, still = sent[0], 0
    time.sleep(0.05)
stalled = oks[0] < N
print("%s: publisher %s after %d sent, %d acked" %
      (mode, "stalled" if stalled else "finished", sent[0], oks[0]))

# Now read, in a thread, everything before the answer to a PING that is
# sent once the publisher is done.
got = []
err = []
def read_all():
    while True:
        line = subf.readline()
        if not line:
            err.append("subscriber connection closed")
            return
        if line == b"+PONG\n":
            return
        if not line.startswith(b"MSG "):
            err.append("unexpected %r" % line)
            return
        n = int(line.rsplit(b" ", 1)[1])
        got.append(int(subf.read(n + 1)[:8]))
tr = threading.Thread(target=read_all, daemon=True)
tr.start()
ts.join(60); ta.join(60)
if oks[0] != N:
    sys.exit("%s: %d of %d PUBs acknowledged" % (mode, oks[0], N))
sub.sendall(b"PING\n")
tr.join(60)
if tr.is_alive() or err:
    sys.exit("%s: subscriber: %s" % (mode, err or "no +PONG within 60 s"))
if mode == "block":
    if not stalled:
        sys.exit("block: the publisher was never slowed down")
    if got != list(range(N)):
        sys.exit("block: got %d messages (first gap near %r), want %d in order"
                 % (len(got), next((i for i, v in enumerate(got) if v != i), None), N))
else:
    if len(got) >= N:
        sys.exit("drop: nothing was dropped (%d of %d)" % (len(got), N))
    if got != sorted(got):
        sys.exit("drop: out of order")
print("%s: %d of %d delivered" % (mode, len(got), N))
PY
timeout 120 python3 "$PMQ_TMP/slow.py" "$blk" block || pmq_fail "slow subscriber, block"
timeout 120 python3 "$PMQ_TMP/slow.py" "$drp" drop || pmq_fail "slow subscriber, drop"
pmq_alive || pmq_fail "plexmqd died"
pmq_pass
