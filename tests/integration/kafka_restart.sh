#!/bin/sh
# kafka_restart.sh - committed offsets and records survive a restart of
# plexmqd with a persistent storage plugin (file): a group member commits,
# plexmqd stops and starts again on the same data_dir, a new member of the
# group gets only what was produced after, a new group replays everything
# (tests/node/kafka_group.js commit / resume).  Idempotent producers keep
# their state over the restart: batches stored before it and sent again
# after it are answered with their first offsets and not stored twice,
# sequence gaps are still refused, producer ids are not handed out again
# (kidr.py below).  Then a crash (kill -9) and another start: the commits
# are still there.  Skipped until file.so exists.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_restart
kafka_need
kafka_need_node
[ -f "$PMQ_PLUGINS/file.so" ] ||
    pmq_skip "$PMQ_PLUGINS/file.so not built yet (persistent storage)"

kafka_conf() {
	kafka_common_conf "$1"
	cat <<CONF

[storage]
plugin = file
CONF
}
kafka_start
kafka_raw

# Idempotent producers over a restart, on kraw.py's definitions.
sed '/^cmds = /,$d' "$PMQ_TMP/kraw.py" >"$PMQ_TMP/kidr.py"
cat >>"$PMQ_TMP/kidr.py" <<'PY'
import json

T = "idr"

def batch(vals, pid, epoch, seq):
    return record_batch([v.encode() for v in vals], pid=pid, epoch=epoch, seq=seq)

def cmd_store(port, statef):
    # Producer A: 7 batches of 2 records (sequences 0-13), producer B: 7
    # of 1, interleaved; then plain batches, some large, so that the
    # restart has to read the log back over several reads and regions.
    c = Conn(port)
    c.call(3, 1, arr([kstr(T)]))   # Metadata v1 auto-creates the topic
    for _ in range(100):
        err, _ = produce(c, T, 0, record_batch([b"first"]))
        if err not in (3, 5):
            break
        time.sleep(0.05)
    assert err == 0, "first batch: error %d" % err
    st = {"a": [], "b": []}
    st["pa"], ea = init_pid(c)
    st["pb"], eb = init_pid(c)
    for i in range(7):
        v = ["a%d-0" % i, "a%d-1" % i]
        err, base = produce(c, T, 0, batch(v, st["pa"], ea, 2 * i))
        assert err == 0, "A batch %d: error %d" % (i, err)
        st["a"].append([2 * i, v, base])
        v = ["b%d" % i]
        err, base = produce(c, T, 0, batch(v, st["pb"], eb, i))
        assert err == 0, "B batch %d: error %d" % (i, err)
        st["b"].append([i, v, base])
    for i in range(60):
        v = [("n%d-" % i) + "x" * (150000 if i % 20 == 5 else 10)]
        err, _ = produce(c, T, 0, batch(v, -1, -1, -1))
        assert err == 0, "plain batch %d: error %d" % (i, err)
    st["epoch"] = [ea, eb]
    json.dump(st, open(statef, "w"))

def cmd_resend(port, statef):
    st = json.load(open(statef))
    pa, pb = st["pa"], st["pb"]
    ea, eb = st["epoch"]
    c = Conn(port)
    before = fetch_values(c, T, 0)
    hw = 1 + 14 + 7 + 60
    assert len(before) == hw, "%d records before, want %d" % (len(before), hw)
    # Pipelined on one connection while the log is read back, answered in
    # order: A's last batch again, the oldest of A's last 5 (still known),
    # the one before (not: 45, as Kafka), B's last, then A's next batch.
    a, b = st["a"], st["b"]
    reqs = [batch(a[6][1], pa, ea, a[6][0]), batch(a[2][1], pa, ea, a[2][0]),
            batch(a[1][1], pa, ea, a[1][0]), batch(b[6][1], pb, eb, b[6][0]),
            batch(["a7-0"], pa, ea, 14)]
    body = lambda x: (kstr(None) + i16(-1) + i32(5000) +
                      arr([kstr(T) + arr([i32(0) + kbytes(x)])]))
    cids = [c.send(0, 3, body(x)) for x in reqs]
    got = []
    for cid in cids:
        cr, r = c.recv()
        assert cr == cid
        r.i32(); r.str(); r.i32(); r.i32()
        got.append((r.i16(), r.i64()))
    ok = lambda g, base: g[0] == 46 or g == (0, base)
    assert ok(got[0], a[6][2]), "A's last batch again: %s, first at %d" % (got[0], a[6][2])
    assert ok(got[1], a[2][2]), "A's batch 2 again: %s, first at %d" % (got[1], a[2][2])
    assert got[2][0] == 45, "A's batch 1 (out of the window): %s" % (got[2],)
    assert ok(got[3], b[6][2]), "B's last batch again: %s, first at %d" % (got[3], b[6][2])
    assert got[4] == (0, hw), "A's next batch: %s, want (0, %d)" % (got[4], hw)
    g = produce(c, T, 0, batch(["gap"], pa, ea, 17))
    assert g[0] == 45, "A's sequence gap: %s" % (g,)
    g = produce(c, T, 0, batch(["b7"], pb, eb, 7))
    assert g == (0, hw + 1), "B's next batch: %s" % (g,)
    # Ids of before the restart are not handed out again.
    pc, _ = init_pid(c)
    assert pc > max(pa, pb), "producer id %d again after %d, %d" % (pc, pa, pb)
    after = fetch_values(c, T, 0)
    assert after == before + [b"a7-0", b"b7"], \
        "records after: %d, last %s" % (len(after), after[-3:])
    print("ok: idempotent producers over a restart")

{"store": cmd_store, "resend": cmd_resend}[sys.argv[1]](int(sys.argv[2]), *sys.argv[3:])
PY
python3 "$PMQ_TMP/kidr.py" store "$KAFKA_PORT" "$PMQ_TMP/idr.json" ||
    pmq_fail "idempotent producers before the restart"

kafka_node kafka_group.js commit >"$PMQ_TMP/node1.out" 2>&1 || {
	cat "$PMQ_TMP/node1.out"
	pmq_fail "kafkajs: consume and commit before the restart"
}
python3 "$PMQ_TMP/kraw.py" commit "$KAFKA_PORT" gm rst 0 3 "keep-me" ||
    pmq_fail "standalone commit with metadata"

pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
kafka_start "$KAFKA_PORT"

python3 "$PMQ_TMP/kidr.py" resend "$KAFKA_PORT" "$PMQ_TMP/idr.json" ||
    pmq_fail "idempotent producers after the restart"

kafka_node kafka_group.js resume >"$PMQ_TMP/node2.out" 2>&1 || {
	cat "$PMQ_TMP/node2.out"
	pmq_fail "kafkajs: resume after the restart"
}
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" gm rst 2 \
    >"$PMQ_TMP/fo.out" || pmq_fail "OffsetFetch after the restart"
printf '0 3 keep-me\n1 -1 \n' | cmp -s - "$PMQ_TMP/fo.out" ||
    pmq_fail "gm offsets after the restart: $(cat "$PMQ_TMP/fo.out")"

# A crash: what was acknowledged before it is still there after.
python3 "$PMQ_TMP/kraw.py" commit "$KAFKA_PORT" gm rst 1 4 "after-crash" ||
    pmq_fail "commit before the crash"
pmq_kill9
kafka_start "$KAFKA_PORT"
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" gm rst 2 \
    >"$PMQ_TMP/fo2.out" || pmq_fail "OffsetFetch after the crash"
printf '0 3 keep-me\n1 4 after-crash\n' | cmp -s - "$PMQ_TMP/fo2.out" ||
    pmq_fail "gm offsets after the crash: $(cat "$PMQ_TMP/fo2.out")"
kafka_kcat -C -t rst -o beginning -e -f '%s\n' | sort -V >"$PMQ_TMP/all.out" ||
    pmq_fail "consume rst after the crash"
python3 -c 'print("\n".join("v%d" % i for i in range(15)))' |
    cmp -s - "$PMQ_TMP/all.out" ||
    pmq_fail "records after the crash: $(cat "$PMQ_TMP/all.out")"

pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
