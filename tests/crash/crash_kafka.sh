#!/bin/sh
# crash_kafka.sh - kill -9 crash test with Kafka-protocol clients, for the
# file and lmdb storage plugins (each skipped while its .so is not built;
# the whole test skipped without kafka.so, kcat, node or kafkajs).
#
# plexmqd with a kafka listener, fsync = always, topic "idem" with 2
# partitions.  Per plugin:
#   1. Three rounds: an idempotent acks=all kafkajs producer
#      (tests/crash/kafka_crash.js) sends records k<seq> to partition
#      seq % 2 and records each acknowledgement; plexmqd is killed with
#      SIGKILL at a random moment and restarted on the same data dir.
#      After each restart kcat reads both partitions: every acknowledged
#      record is there, each partition's sequence numbers strictly increase
#      (in order, no duplicate), none was never sent.
#   2. A kafkajs group member commits offsets; plexmqd is killed right
#      after the commit is acknowledged; after the restart the group's
#      committed offsets are where they were.
#   3. Idempotence across a crash: a raw client (kraw.py of kafka_lib.sh)
#      stores a batch with producer id/epoch/sequence, plexmqd is killed,
#      and the same batch is sent again after the restart, as a producer
#      does whose ack was lost.  It must be answered as a duplicate (46, or
#      success with the first offset) and be in the log once: the broker
#      rebuilds the producer's state from the log (docs/kafka.md).
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init crash_kafka
kafka_need
kafka_need_node
. "$top_srcdir/tests/crash/lib.sh"
KJS="$top_srcdir/tests/crash/kafka_crash.js"

kafka_conf() {
	cat <<EOF
[plexmqd]
data_dir = $kdata
log_level = info

[storage]
plugin = $plugin
fsync = always
$kextra

[listener kafka]
plugin = kafka
listen = 127.0.0.1:$1
advertised_host = 127.0.0.1
advertised_port = $1
auto_create_topics = true
default_partitions = 2
group_initial_rebalance_delay_ms = 0
group_min_session_timeout_ms = 1000
EOF
}

kjs() {
	KAFKA_BROKER="$KAFKA_BROKER" KAFKA_NODE_DIR="$KAFKA_NODE_DIR" \
	    timeout 50 node "$KJS" "$@"
}

# The checker: every acked seq present, strictly increasing per partition.
cat >"$PMQ_TMP/kverify.py" <<'PY'
import sys
recs, states = sys.argv[1], sys.argv[2:]
acked, sent = set(), -1
for st in states:
    for line in open(st):
        w = line.split()
        if w[0] == "acked":
            acked.update(range(int(w[1]), int(w[2]) + 1))
        elif w[0] == "sent":
            sent = max(sent, int(w[1]))
last, seen, bad = {}, set(), []
for line in open(recs):
    w = line.split()
    if len(w) != 2 or not w[1].startswith("k"):
        continue
    p, s = int(w[0]), int(w[1][1:])
    if s % 2 != p:
        bad.append("k%d in partition %d" % (s, p))
    if s <= last.get(p, -1):
        bad.append("partition %d: k%d after k%d (%s)" % (
            p, s, last[p], "duplicate" if s in seen else "reordered"))
    if s > sent:
        bad.append("k%d was never sent (highest sent %d)" % (s, sent))
    last[p] = max(last.get(p, -1), s)
    seen.add(s)
missing = sorted(acked - seen)
if missing:
    bad.append("%d acknowledged records missing, first %s" % (
        len(missing), missing[:5]))
for b in bad[:10]:
    print("BAD", b)
print("%d acknowledged, %d records read" % (len(acked), len(seen)))
sys.exit(1 if bad else 0)
PY

kverify() {
	kafka_kcat -C -t idem -o beginning -e -f '%p %s\n' >"$PMQ_TMP/recs" ||
	    pmq_fail "$plugin: kcat cannot read idem"
	# shellcheck disable=SC2086
	python3 "$PMQ_TMP/kverify.py" "$PMQ_TMP/recs" $states ||
	    pmq_fail "$plugin: $1"
}

# Idempotence probe on top of kraw.py's definitions.
kafka_raw
sed '/^cmds = /,$d' "$PMQ_TMP/kraw.py" >"$PMQ_TMP/kidem.py"
cat >>"$PMQ_TMP/kidem.py" <<'PY'
def cmd_store(port, statef):
    c = Conn(port)
    pid, epoch = init_pid(c)
    err, base = produce(c, "idem", 0, record_batch([b"probe"], pid=pid, epoch=epoch, seq=0))
    assert err == 0, "probe: error %d" % err
    open(statef, "w").write("%d %d %d\n" % (pid, epoch, base))

def cmd_resend(port, statef):
    pid, epoch, base = map(int, open(statef).read().split())
    c = Conn(port)
    err, base2 = produce(c, "idem", 0, record_batch([b"probe"], pid=pid, epoch=epoch, seq=0))
    n = fetch_values(c, "idem", 0).count(b"probe")
    ok = (err == 46 or (err == 0 and base2 == base)) and n == 1
    print("resend after the crash: error %d, offset %d (first %d), stored %d time(s)" %
          (err, base2, base, n))
    sys.exit(0 if ok else 1)

{"store": cmd_store, "resend": cmd_resend}[sys.argv[1]](int(sys.argv[2]), *sys.argv[3:])
PY

ran=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	kdata="$PMQ_TMP/data-$plugin"
	mkdir -p "$kdata"
	case $plugin in
	lmdb) kextra="map_size = 256M" ;;
	file) kextra="segment_bytes = 1M" ;;
	esac
	kafka_start
	kafka_kcat -L -t idem >/dev/null || pmq_fail "$plugin: metadata of idem"
	states=
	seq=0
	for round in 1 2 3; do
		st="$PMQ_TMP/$plugin.kstate.$round"
		rm -f "$st" "$st.ready"
		kjs produce "$seq" "$st" >>"$PMQ_TMP/client.log" 2>&1 &
		cpid=$!
		pmq_track "$cpid"
		pmq_wait_for 15 test -f "$st.ready" ||
		    pmq_fail "$plugin: no acknowledgement within 15 s"
		d=$(crash_delay)
		sleep "$d"
		kill -0 "$cpid" 2>/dev/null || {
			tail -n 5 "$PMQ_TMP/client.log"
			pmq_fail "$plugin: the producer ended before the kill"
		}
		pmq_kill9
		wait "$cpid" || {
			tail -n 5 "$PMQ_TMP/client.log"
			pmq_fail "$plugin: the producer failed"
		}
		echo "$plugin round $round: kill -9 after ${d}s:" \
		    "$(grep -c '^acked' "$st") requests acknowledged"
		states="$states $st"
		seq=$(( $(sed -n 's/^sent //p' "$st" | tail -n 1) + 1 ))
		kafka_start "$KAFKA_PORT"
		kverify "acknowledged records lost or misordered at kill $round"
	done

	# A committed offset survives a kill right after its ack.
	kjs commit crashg >"$PMQ_TMP/commit.out" 2>&1 || {
		cat "$PMQ_TMP/commit.out"
		pmq_fail "$plugin: kafkajs group commit"
	}
	pmq_kill9
	kafka_start "$KAFKA_PORT"
	kjs fetch crashg >"$PMQ_TMP/fetch.out" 2>&1 ||
	    { cat "$PMQ_TMP/fetch.out"; pmq_fail "$plugin: fetch offsets"; }
	grep '^committed' "$PMQ_TMP/commit.out" | cmp -s - "$PMQ_TMP/fetch.out" ||
	    pmq_fail "$plugin: committed offsets moved over a kill:" \
	        "$(cat "$PMQ_TMP/commit.out") / $(cat "$PMQ_TMP/fetch.out")"
	echo "$plugin: committed offsets kept over kill -9:" \
	    "$(tr '\n' ' ' <"$PMQ_TMP/fetch.out")"

	# A resend of a stored batch after a crash is not stored again.
	python3 "$PMQ_TMP/kidem.py" store "$KAFKA_PORT" "$PMQ_TMP/probe" ||
	    pmq_fail "$plugin: idempotent probe"
	pmq_kill9
	kafka_start "$KAFKA_PORT"
	python3 "$PMQ_TMP/kidem.py" resend "$KAFKA_PORT" "$PMQ_TMP/probe" ||
	    pmq_fail "$plugin: idempotent resend after a crash stored twice"
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
echo "Kafka crash tests passed for:$ran"
pmq_pass
