#!/usr/bin/env python3
"""tests/crash/client.py - clients for the crash tests (docs/crash-testing.md).

  client.py tcppub PORT FIRST STATE     pipelined PUBs over the tcp protocol
  client.py mqttpub PORT FIRST STATE    QoS 1 PUBLISHes over MQTT 3.1.1
  client.py verify PORT LOG STATE...    read LOG back and check it

A publisher sends messages numbered FIRST, FIRST+1, ... as fast as the
broker takes them, payload "s<seq>", to the topic crash/t; every 500th goes
to crash/retained with the retain flag.  It runs until the broker goes away
(the test kills it) or 30 s pass, and then writes STATE:
    sent N        highest sequence number written to the socket
    acked K...    one line per acknowledged sequence number
    retained R    highest acknowledged retained sequence number
It touches STATE.ready once the first acknowledgement arrived.

verify reads LOG partition 0 from its start with READ and checks, against
every STATE file given: each acknowledged number is in the log; the numbers
in the log strictly increase (never reordered, never duplicated: these
clients never resend); none is above the highest sent.  With --retained it
also subscribes to crash/retained and checks the retained message is the
last acknowledged one or a later one.  With --expect-loss it prints the
count of acknowledged-but-missing messages and fails only on reordering.
"""
import os
import socket
import struct
import sys
import threading
import time

TOPIC = b"crash/t"
RETAINED = b"crash/retained"
RETAIN_EVERY = 500
WINDOW = 4000        # messages in flight at most
RUN_LIMIT = 30.0     # seconds: a publisher never outlives this


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Publisher:
    """Common part: a sender thread pushes messages while the window
    allows, the caller's reader matches acknowledgements in order."""

    def __init__(self, port, first, state):
        self.sock = connect(port)
        self.first = first
        self.state = state
        self.sent = first - 1
        self.acked = []
        self.retained_acked = -1
        self.inflight = []   # (seq, retained) in send order
        self.cv = threading.Condition()
        self.dead = False
        self.ready = False

    def topic_for(self, seq):
        return (RETAINED, True) if seq % RETAIN_EVERY == 0 else (TOPIC, False)

    def sender(self):
        seq = self.first
        deadline = time.monotonic() + RUN_LIMIT
        try:
            while not self.dead and time.monotonic() < deadline:
                with self.cv:
                    while len(self.inflight) >= WINDOW and not self.dead:
                        self.cv.wait(1.0)
                    if self.dead:
                        break
                    room = WINDOW - len(self.inflight)
                    batch = []
                    for _ in range(min(room, 200)):
                        topic, ret = self.topic_for(seq)
                        batch.append((seq, topic, ret))
                        self.inflight.append((seq, ret))
                        seq += 1
                data = b"".join(self.encode(s, t, r) for s, t, r in batch)
                # before sendall: part of a failed send may have arrived
                self.sent = batch[-1][0]
                self.sock.sendall(data)
        except OSError:
            pass
        with self.cv:
            self.dead = True
            self.cv.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def ack(self, ok):
        with self.cv:
            seq, ret = self.inflight.pop(0)
            self.cv.notify_all()
        if ok:
            self.acked.append(seq)
            if ret:
                self.retained_acked = seq
            if not self.ready:
                self.ready = True
                open(self.state + ".ready", "w").close()

    def run(self):
        t = threading.Thread(target=self.sender, daemon=True)
        t.start()
        try:
            self.reader()
        except (OSError, EOFError):
            pass
        with self.cv:
            self.dead = True
            self.cv.notify_all()
        t.join(5)
        with open(self.state + ".tmp", "w") as f:
            f.write("sent %d\n" % self.sent)
            f.write("retained %d\n" % self.retained_acked)
            f.write("".join("acked %d\n" % a for a in self.acked))
        os.rename(self.state + ".tmp", self.state)
        print("publisher: sent up to %d, %d acknowledged" %
              (self.sent, len(self.acked)))


class TcpPublisher(Publisher):
    def encode(self, seq, topic, ret):
        p = b"s%d" % seq
        return b"%s %s %d\n%s\n" % (b"PUBR" if ret else b"PUB", topic,
                                    len(p), p)

    def reader(self):
        f = self.sock.makefile("rb")
        self.sock.settimeout(None)
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                return
            if line == b"+OK\n":
                self.ack(True)
            elif line.startswith(b"-ERR"):
                self.ack(False)
            elif line.startswith(b"MSG "):
                n = int(line.rsplit(b" ", 1)[1])
                f.read(n + 1)
            else:
                raise SystemExit("unexpected line %r" % line)


# ---- MQTT 3.1.1, just what a QoS 1 publisher needs ----

def mqtt_varint(n):
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_str(s):
    return struct.pack(">H", len(s)) + s


def mqtt_packet(first, body):
    return bytes([first]) + mqtt_varint(len(body)) + body


def mqtt_read(f):
    h = f.read(1)
    if len(h) < 1:
        raise EOFError
    mult, n = 1, 0
    while True:
        b = f.read(1)
        if len(b) < 1:
            raise EOFError
        n += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = f.read(n)
    if len(body) < n:
        raise EOFError
    return h[0], body


class MqttPublisher(Publisher):
    def __init__(self, port, first, state):
        super().__init__(port, first, state)
        cid = b"crash-pub-%d" % os.getpid()
        # CONNECT: protocol MQTT level 4, clean session, keepalive 60
        body = mqtt_str(b"MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) \
            + mqtt_str(cid)
        self.sock.sendall(mqtt_packet(0x10, body))
        self.f = self.sock.makefile("rb")
        t, b = mqtt_read(self.f)
        if t != 0x20 or b[1] != 0:
            raise SystemExit("CONNACK refused: %r" % b)

    def encode(self, seq, topic, ret):
        pid = seq % 65535 + 1   # in order, never two alike in the window
        p = b"s%d" % seq
        return mqtt_packet(0x32 | (1 if ret else 0),
                           mqtt_str(topic) + struct.pack(">H", pid) + p)

    def reader(self):
        self.sock.settimeout(None)
        while True:
            t, b = mqtt_read(self.f)
            if t >> 4 != 4:          # PUBACK
                continue
            pid = struct.unpack(">H", b[:2])[0]
            with self.cv:
                want = self.inflight[0][0] % 65535 + 1 if self.inflight \
                    else None
            if pid != want:
                raise SystemExit("PUBACK %d out of order (want %r)" %
                                 (pid, want))
            self.ack(True)


# ---- verification ----

def read_log(port, log):
    s = connect(port)
    f = s.makefile("rb")
    out = []   # (offset, key, payload)
    off = 0
    first = True
    while True:
        s.sendall(b"READ %s 0 %d 1048576\n" % (log.encode(), off))
        n = 0
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                raise SystemExit("connection closed during READ")
            if line.startswith(b"REC "):
                _, o, key, ln = line.split(b" ")
                data = f.read(int(ln) + 1)[:-1]
                out.append((int(o), key, data))
                n += 1
            elif line.startswith(b"+OK "):
                nxt = int(line.split()[1])
                break
            elif first and line.startswith(b"-ERR no such log"):
                s.close()
                return out
            else:
                raise SystemExit("READ %s at %d: %r" % (log, off, line))
        first = False
        if n == 0 or nxt == off:
            break
        off = nxt
    s.close()
    return out


def retained_now(port):
    s = connect(port)
    f = s.makefile("rb")
    s.sendall(b"SUB %s\nPING\n" % RETAINED)
    val = None
    while True:
        line = f.readline()
        if not line.endswith(b"\n"):
            raise SystemExit("closed during SUB")
        if line.startswith(b"MSG "):
            n = int(line.rsplit(b" ", 1)[1])
            val = f.read(n + 1)[:-1]
        elif line == b"+PONG\n":
            break
    s.close()
    return val


def load_state(path):
    sent, retained, acked = -1, -1, []
    with open(path) as f:
        for line in f:
            k, v = line.split()
            if k == "sent":
                sent = int(v)
            elif k == "retained":
                retained = int(v)
            else:
                acked.append(int(v))
    return sent, retained, acked


def verify(argv):
    expect_loss = "--expect-loss" in argv
    check_ret = "--retained" in argv
    argv = [a for a in argv if not a.startswith("--")]
    port, log, states = int(argv[0]), argv[1], argv[2:]
    sent, ret_acked, acked = -1, -1, []
    for st in states:
        s, r, a = load_state(st)
        sent = max(sent, s)
        ret_acked = max(ret_acked, r)
        acked += a
    recs = read_log(port, log)
    errors = []
    seqs = []
    prev_off = None
    for off, key, data in recs:
        if prev_off is not None and off != prev_off + 1:
            errors.append("offset %d follows %d" % (off, prev_off))
        prev_off = off
        if not data.startswith(b"s"):
            errors.append("offset %d: payload %r" % (off, data[:40]))
            continue
        seqs.append(int(data[1:]))
    for i in range(1, len(seqs)):
        if seqs[i] <= seqs[i - 1]:
            errors.append("reordered or duplicated: s%d after s%d" %
                          (seqs[i], seqs[i - 1]))
            if len(errors) > 10:
                break
    if seqs and seqs[-1] > sent:
        errors.append("s%d in the log but only up to s%d was sent" %
                      (seqs[-1], sent))
    present = set(seqs)
    missing = [a for a in acked if a not in present]
    print("verify %s: %d records, %d acknowledged, %d acknowledged missing,"
          " highest sent %d" % (log, len(seqs), len(acked), len(missing),
                                sent))
    if expect_loss:
        print("LOST %d" % len(missing))
    elif missing:
        errors.append("%d acknowledged messages missing, first s%d" %
                      (len(missing), missing[0]))
    if check_ret and ret_acked >= 0:
        v = retained_now(port)
        if v is None:
            errors.append("retained message gone (s%d was acknowledged)" %
                          ret_acked)
        else:
            r = int(v[1:])
            if r < ret_acked or r > sent or r % RETAIN_EVERY:
                errors.append("retained is s%d, acknowledged s%d" %
                              (r, ret_acked))
    for e in errors[:10]:
        print("FAIL:", e)
    return 1 if errors else 0


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd in ("tcppub", "mqttpub"):
        cls = TcpPublisher if cmd == "tcppub" else MqttPublisher
        cls(int(argv[0]), int(argv[1]), argv[2]).run()
        return 0
    if cmd == "verify":
        return verify(argv)
    raise SystemExit("usage: client.py tcppub|mqttpub|verify ...")


if __name__ == "__main__":
    sys.exit(main())
