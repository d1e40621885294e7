#!/bin/sh
# mqtt_flow.sh - flow control towards slow subscribers, on plexmqd alone
# (qos0_full and queue_full are ours; Mosquitto always holds publishers
# back for QoS 0 and drops QoS 1/2 at max_queued_messages), with raw
# python3 clients (mq_py) that can stop reading and stop acknowledging:
#   qos0_block   qos0_full = block (the default), output_high_water 16k: a
#                subscriber that reads nothing while a publisher sends
#                20,000 QoS 0 messages of 1000 bytes (20 MB, more than the
#                socket buffers hold), then reads: it gets all of them, in
#                order; the broker logged that publishers waited, dropped
#                nothing ($SYS/broker/messages/dropped 0, no drop line)
#   qos0_drop    the same with qos0_full = drop: messages are lost, counted
#                in $SYS/broker/messages/dropped and logged
#   queue_block  queue_full = block (the default), max_queued_messages 10,
#                max_inflight_messages 20: a QoS 1 subscriber that does not
#                acknowledge, a publisher that pipelines 100 QoS 1
#                messages: 30 PUBACKs come (20 inflight + 10 queued), the
#                other 70 wait; once the subscriber reads and acknowledges,
#                all 100 arrive in order and every PUBACK comes
#   queue_drop   the same with queue_full = drop: the subscriber gets the
#                first 30, the publisher all 100 PUBACKs at once, the drop
#                is logged
#   queue_end    queue_full = block: the publisher's held PUBACKs come when
#                the (clean) subscriber goes away without reading
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_flow

PRE='import sys, time, socket, threading, mqraw as m
def check(c, what):
    if not c:
        print("FAIL " + what, flush=True)
    return c
def note(s):
    print("note [%s]: %s" % (m.TARGET, s), file=sys.stderr, flush=True)
# $SYS/broker/messages/dropped once two live $SYS/broker/uptime updates
# (sys_interval 1) came after subscribing: a drop before that is in it.
def sys_dropped():
    c = m.Client(4)
    c.connect("sysq")
    c.subscribe(1, "$SYS/broker/#", 0)
    val, ticks, end = None, 0, time.monotonic() + 10
    while ticks < 2 and time.monotonic() < end:
        k = c.recv(max(0.1, end - time.monotonic()))
        if k.type != m.PUBLISH:
            continue
        if k.topic == b"$SYS/broker/messages/dropped":
            val = int(k.payload)
        elif k.topic == b"$SYS/broker/uptime" and not k.retain:
            ticks += 1
    c.disconnect()
    return val
'

# The daemon log keeps every scenario's daemon: log_mark at a scenario's
# start, log_new for what its daemon logged since.
log_mark() {
	_mark=$(wc -l <"$PMQ_TMP/daemon.log")
}
log_new() {
	tail -n "+$((_mark + 1))" "$PMQ_TMP/daemon.log"
}

# A subscriber reads nothing while 20 MB of QoS 0 arrive, then reads.
QOS0_PY='
mode = sys.argv[1]
N, SIZE = 20000, 1000
slow = m.Client(4, rcvbuf=4096)
slow.connect("slow0")
slow.subscribe(1, "flow/#", 0)
slow.subscribe(2, "flowend", 1)  # QoS 1: the end marker is never dropped
p = m.Client(4)
p.connect("pub0")
sent = [0]
def flood():
    pad = b"x" * (SIZE - 8)
    try:
        for i in range(N):
            p.publish("flow/x", b"%08d" % i + pad)
            sent[0] += 1
        p.publish("flowend", "end", qos=1, pid=1)
    except OSError as e:
        note("publisher: %s" % e)
t = threading.Thread(target=flood, daemon=True)
t.start()
# drop: the publisher is never held back, so it finishes.  block: it is
# held back once the socket buffers are full (or finishes if they hold
# everything); 1 s without progress counts as held back.
last, since, end = -1, time.monotonic(), time.monotonic() + 30
while t.is_alive() and time.monotonic() < end:
    if sent[0] != last:
        last, since = sent[0], time.monotonic()
    elif mode == "block" and time.monotonic() - since > 1:
        break
    time.sleep(0.05)
note("publisher %s after %d of %d messages" %
     ("held back" if t.is_alive() else "done", sent[0], N))
check(mode == "block" or not t.is_alive(), "drop: publisher did not finish")
# Now read everything up to the end marker.
got, bad, nxt, end = 0, 0, 0, time.monotonic() + 30
while True:
    try:
        k = slow.recv(max(0.1, end - time.monotonic()))
    except (TimeoutError, m.Closed) as e:
        check(False, "subscriber: %r after %d messages" % (e, got))
        break
    if k.type != m.PUBLISH:
        continue
    if k.topic == b"flowend":
        slow.ack(m.PUBACK, k.pid)
        break
    i = int(k.payload[:8])
    if i < nxt:
        bad += 1  # a duplicate or out of order
    nxt = i + 1
    got += 1
t.join(10)
check(not t.is_alive(), "publisher still held back after the subscriber read")
check(bad == 0, "%d messages out of order" % bad)
dropped = sys_dropped()
note("%d of %d received, $SYS dropped %s" % (got, N, dropped))
if mode == "block":
    check(got == N, "block: %d of %d received" % (got, N))
    check(dropped == 0, "block: $SYS/broker/messages/dropped %s" % dropped)
    print("qos0_full block: all %d received in order, none dropped" % N)
else:
    check(got < N, "drop: all %d received" % N)
    check(dropped is not None and dropped > 0,
          "drop: $SYS/broker/messages/dropped %s" % dropped)
    print("qos0_full drop: messages lost and counted")
slow.disconnect()
p.disconnect()
'

scen_qos0_block() {
	log_mark
	mq_pyscen block <<PY
$PRE
$QOS0_PY
PY
	log_new | grep -q 'client slow0: output full, publishers wait' ||
	    mq_bad "no log line: publishers did not wait"
	! log_new | grep -q 'dropping messages' ||
	    mq_bad "messages dropped with qos0_full = block"
}

scen_qos0_drop() {
	log_mark
	mq_pyscen drop <<PY
$PRE
$QOS0_PY
PY
	log_new | grep -q \
	    'client slow0: dropping messages (QoS 0 to a slow subscriber)' ||
	    mq_bad "no log line for the drops"
}

# A QoS 1 subscriber that does not acknowledge; a pipelining publisher.
QUEUE_PY='
mode = sys.argv[1]
N, QUEUED, INFLIGHT = 100, 10, 20
sub = m.Client(4)
sub.connect("qsub")
sub.subscribe(1, "q/#", 1)
p = m.Client(4)
p.connect("qpub")
for i in range(N):
    p.publish("q/x", "%03d" % i, qos=1, pid=i + 1)
acks = []
def read_acks(want, timeout):
    end = time.monotonic() + timeout
    while len(acks) < want and time.monotonic() < end:
        try:
            k = p.recv(max(0.05, end - time.monotonic()))
        except TimeoutError:
            break
        if k.type == m.PUBACK:
            acks.append(k.pid)
first = INFLIGHT + QUEUED if mode != "drop" else N
read_acks(first, 10)
check(len(acks) == first, "%d PUBACKs before the subscriber read, want %d" %
      (len(acks), first))
if mode != "drop":
    # What is held stays held: nothing more comes meanwhile.
    read_acks(N, 0.5)
    check(len(acks) == first, "%d PUBACKs while the subscriber is full, "
          "want %d" % (len(acks), first))
    print("queue_full block: %d PUBACKs, %d held" % (len(acks), N - len(acks)))
if mode == "end":
    sub.close()  # clean session, gone without reading
    read_acks(N, 10)
    check(len(acks) == N, "%d of %d PUBACKs after the subscriber left" %
          (len(acks), N))
    check(acks == list(range(1, N + 1)), "PUBACKs out of order")
    print("queue_full block: held PUBACKs sent when the subscriber left")
    sys.exit(0)
want = N if mode == "block" else INFLIGHT + QUEUED
got, end = [], time.monotonic() + 20
while len(got) < want and time.monotonic() < end:
    try:
        k = sub.recv(max(0.05, end - time.monotonic()))
    except TimeoutError:
        break
    if k.type == m.PUBLISH:
        got.append(int(k.payload))
        sub.ack(m.PUBACK, k.pid)
if mode == "drop":
    try:  # the dropped ones never come
        while True:
            k = sub.recv(0.5)
            if k.type == m.PUBLISH:
                got.append(int(k.payload))
    except TimeoutError:
        pass
check(got == list(range(want)), "subscriber got %d messages, want %d in "
      "order: %s" % (len(got), want, got[:5] + ["..."] + got[-5:]))
read_acks(N, 10)
check(len(acks) == N, "%d of %d PUBACKs" % (len(acks), N))
check(acks == list(range(1, N + 1)), "PUBACKs out of order")
print("queue_full %s: subscriber got %d of %d, %d PUBACKs" %
      (mode, len(got), N, len(acks)))
sub.disconnect()
p.disconnect()
'

scen_queue_block() {
	log_mark
	mq_pyscen block <<PY
$PRE
$QUEUE_PY
PY
	! log_new | grep -q 'dropping messages' ||
	    mq_bad "messages dropped with queue_full = block"
}

scen_queue_drop() {
	log_mark
	mq_pyscen drop <<PY
$PRE
$QUEUE_PY
PY
	log_new | grep -q 'client qsub: dropping messages (session queue full)' ||
	    mq_bad "no log line for the drops"
}

scen_queue_end() {
	mq_pyscen end <<PY
$PRE
$QUEUE_PY
PY
}

# Packet ids wrap: the subscriber never acknowledges its first delivery,
# so that id stays in flight while 66,000 more pass through; no delivery
# may reuse an id that is still unacknowledged (pid_next hands out runs of
# ids it knows are free and must skip the stuck one on every lap).
PIDWRAP_PY='
N = 66000
sub = m.Client(4)
sub.connect("wsub")
sub.subscribe(1, "wrap/#", 1)
p = m.Client(4)
p.connect("wpub")
got, err = [], []
def reader():
    stuck = None
    try:
        while len(got) < N:
            k = sub.recv(10)
            if k.type != m.PUBLISH:
                continue
            if stuck is None:
                stuck = k.pid  # never acknowledged
            elif k.pid == stuck:
                err.append("id %d reused while in flight (message %d)" %
                           (k.pid, len(got)))
                return
            else:
                sub.ack(m.PUBACK, k.pid)
            got.append(int(k.payload))
    except Exception as e:
        err.append("subscriber: %r after %d" % (e, len(got)))
t = threading.Thread(target=reader, daemon=True)
t.start()
i = 0
while i < N and not err:
    n = min(200, N - i)
    for j in range(n):
        body = m.s("wrap/t") + struct.pack("!H", (i + j) % 60000 + 1) + \
            b"%d" % (i + j)
        p.send(0x32, body)
    for j in range(n):
        p.expect(m.PUBACK, 10)
    i += n
t.join(30)
check(not err, "; ".join(err))
check(got == list(range(N)), "subscriber got %d of %d in order" %
      (len(got), N))
print("pid wrap: %d deliveries, the stuck id never reused" % len(got))
sub.close()
p.disconnect()
'

scen_pid_wrap() {
	mq_pyscen <<PY
$PRE
import struct
$PIDWRAP_PY
PY
}

mq_scenario_only plexmqd qos0_block output_high_water 16k sys_interval 1
mq_scenario_only plexmqd qos0_drop output_high_water 16k sys_interval 1 \
    qos0_full drop
mq_scenario_only plexmqd queue_block max_queued_messages 10 \
    max_inflight_messages 20
mq_scenario_only plexmqd queue_drop max_queued_messages 10 \
    max_inflight_messages 20 queue_full drop
mq_scenario_only plexmqd queue_end max_queued_messages 10 \
    max_inflight_messages 20
mq_scenario_only plexmqd pid_wrap max_queued_messages 100000
mq_finish
