#!/bin/sh
# kafka_basic.sh - the Kafka transport with kcat (librdkafka): metadata
# listing (broker, controller, auto-created topics with the default
# partition count), produce and consume back with keys and headers,
# explicit partitions of a 3-partition topic, consuming from an absolute
# offset, from the beginning, relative to the end, by timestamp and from
# the end, and compressed batches (gzip, snappy, lz4, zstd) read back.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_basic
kafka_need

kafka_conf() {
	kafka_common_conf "$1"
	cat <<EOF
default_partitions = 3

[storage]
plugin = memory
EOF
}
kafka_start

# expect NAME FILE: compare FILE with the expected text on stdin.
expect() {
	cat >"$PMQ_TMP/want"
	cmp -s "$PMQ_TMP/want" "$2" || {
		echo "---- want ($1)"; cat "$PMQ_TMP/want"
		echo "---- got"; cat "$2"
		pmq_fail "$1"
	}
}

# ---- metadata: the broker, before any topic exists ----
kafka_kcat -L -J >"$PMQ_TMP/md0.json" || pmq_fail "kcat -L failed"
python3 - "$PMQ_TMP/md0.json" "$KAFKA_PORT" <<'PY' || pmq_fail "metadata (no topics)"
import json, sys
md = json.load(open(sys.argv[1]))
port = sys.argv[2]
b = md["brokers"]
assert len(b) == 1, b
assert b[0]["name"] == "127.0.0.1:" + port, b
assert md["controllerid"] == b[0]["id"], md
assert md["topics"] == [], md["topics"]
PY
# The human-readable listing, as in the issue's "Done when".
kafka_kcat -L >"$PMQ_TMP/md0.txt" || pmq_fail "kcat -L failed"
grep -q "broker .* at 127.0.0.1:$KAFKA_PORT" "$PMQ_TMP/md0.txt" ||
    pmq_fail "kcat -L does not list the broker: $(cat "$PMQ_TMP/md0.txt")"

# ---- produce and consume back with keys and headers ----
printf 'k1:v1\nk2:v2\nk3:v3\n' |
    kafka_kcat -P -t kv -p 0 -K: -H app=plexmq -H trace=42 ||
    pmq_fail "produce with keys and headers"
printf 'v4\n' | kafka_kcat -P -t kv -p 0 -k fixed ||
    pmq_fail "produce with -k"
kafka_kcat -C -t kv -p 0 -o beginning -e -f '%o %k %h %s\n' \
    >"$PMQ_TMP/kv.out" || pmq_fail "consume kv"
expect "keys and headers read back" "$PMQ_TMP/kv.out" <<'EOF'
0 k1 app=plexmq,trace=42 v1
1 k2 app=plexmq,trace=42 v2
2 k3 app=plexmq,trace=42 v3
3 fixed  v4
EOF

# ---- metadata lists the auto-created topic with 3 partitions ----
kafka_kcat -L -J >"$PMQ_TMP/md1.json" || pmq_fail "kcat -L failed"
python3 - "$PMQ_TMP/md1.json" <<'PY' || pmq_fail "metadata (topic kv)"
import json, sys
md = json.load(open(sys.argv[1]))
t = {x["topic"]: x for x in md["topics"]}
assert "kv" in t, md["topics"]
parts = sorted(p["partition"] for p in t["kv"]["partitions"])
assert parts == [0, 1, 2], parts
bid = md["brokers"][0]["id"]
for p in t["kv"]["partitions"]:
    assert p["leader"] == bid, p
PY
kafka_kcat -L -t kv >"$PMQ_TMP/md1.txt" || pmq_fail "kcat -L -t kv"
grep -q 'topic "kv" with 3 partitions' "$PMQ_TMP/md1.txt" ||
    pmq_fail "kcat -L -t kv: $(cat "$PMQ_TMP/md1.txt")"

# ---- explicit partitions ----
for p in 0 1 2; do
	printf 'p%s-a\np%s-b\n' "$p" "$p" | kafka_kcat -P -t parts -p "$p" ||
	    pmq_fail "produce to partition $p"
done
printf 'p1-c\n' | kafka_kcat -P -t parts -p 1 || pmq_fail "produce p1-c"
for p in 0 1 2; do
	kafka_kcat -C -t parts -p "$p" -o beginning -e -f '%p %o %s\n' \
	    >"$PMQ_TMP/p$p.out" || pmq_fail "consume partition $p"
done
expect "partition 0" "$PMQ_TMP/p0.out" <<'EOF'
0 0 p0-a
0 1 p0-b
EOF
expect "partition 1" "$PMQ_TMP/p1.out" <<'EOF'
1 0 p1-a
1 1 p1-b
1 2 p1-c
EOF
expect "partition 2" "$PMQ_TMP/p2.out" <<'EOF'
2 0 p2-a
2 1 p2-b
EOF
# All partitions at once (no -p): every message exactly once.
kafka_kcat -C -t parts -o beginning -e -f '%p %o %s\n' |
    sort >"$PMQ_TMP/pall.out" || pmq_fail "consume all partitions"
cat "$PMQ_TMP/p0.out" "$PMQ_TMP/p1.out" "$PMQ_TMP/p2.out" | sort |
    expect "all partitions" "$PMQ_TMP/pall.out"

# ---- offsets: absolute, beginning, relative to the end, end ----
i=0
while [ $i -lt 10 ]; do echo "m$i"; i=$((i + 1)); done |
    kafka_kcat -P -t offs -p 0 || pmq_fail "produce offs"
kafka_kcat -C -t offs -p 0 -o 7 -e -f '%o %s\n' >"$PMQ_TMP/o7.out" ||
    pmq_fail "consume from offset 7"
expect "from offset 7" "$PMQ_TMP/o7.out" <<'EOF'
7 m7
8 m8
9 m9
EOF
kafka_kcat -C -t offs -p 0 -o beginning -c 2 -f '%o %s\n' \
    >"$PMQ_TMP/ob.out" || pmq_fail "consume from the beginning"
expect "from the beginning" "$PMQ_TMP/ob.out" <<'EOF'
0 m0
1 m1
EOF
kafka_kcat -C -t offs -p 0 -o -2 -e -f '%o %s\n' >"$PMQ_TMP/or.out" ||
    pmq_fail "consume the last 2"
expect "relative to the end (-o -2)" "$PMQ_TMP/or.out" <<'EOF'
8 m8
9 m9
EOF
# By timestamp (ListOffsets with a time): records created after T.
printf 'a0\na1\n' | kafka_kcat -P -t ts -p 0 || pmq_fail "produce a"
t=$(python3 -c 'import time; t = int(time.time() * 1000) + 1
while int(time.time() * 1000) <= t: time.sleep(0.001)
print(t)')
printf 'b0\nb1\n' | kafka_kcat -P -t ts -p 0 || pmq_fail "produce b"
kafka_kcat -C -t ts -p 0 -o "s@$t" -e -f '%o %s\n' >"$PMQ_TMP/ots.out" ||
    pmq_fail "consume from a timestamp"
expect "from a timestamp (-o s@T)" "$PMQ_TMP/ots.out" <<'EOF'
2 b0
3 b1
EOF
# From the end: a consumer started at the end sees only what comes after.
# Produce one new message at a time until it has read one (it may join
# after some of them: which one it gets first is not fixed, only that it
# is new and that nothing old comes).
kafka_kcat -C -t offs -p 0 -o end -c 1 -u -f '%o %s\n' \
    >"$PMQ_TMP/oe.out" &
oe_pid=$!
pmq_track $oe_pid
n=0
while kill -0 $oe_pid 2>/dev/null && [ $n -lt 50 ]; do
	echo "new$n" | kafka_kcat -P -t offs -p 0 || pmq_fail "produce new$n"
	n=$((n + 1))
	pmq_wait_for 1 sh -c "! kill -0 $oe_pid 2>/dev/null"
done
wait $oe_pid || pmq_fail "kcat -o end exited with an error"
grep -q '^1[0-9] new[0-9]*$' "$PMQ_TMP/oe.out" ||
    pmq_fail "from the end: got '$(cat "$PMQ_TMP/oe.out")'"

# ---- compressed batches, stored as sent and read back ----
for codec in gzip snappy lz4 zstd; do
	i=0
	while [ $i -lt 20 ]; do echo "$codec-$i"; i=$((i + 1)); done |
	    kafka_kcat -P -t "z$codec" -p 0 -X compression.codec="$codec" ||
	    pmq_fail "produce with $codec"
	kafka_kcat -C -t "z$codec" -p 0 -o beginning -e -f '%s\n' \
	    >"$PMQ_TMP/z.out" || pmq_fail "consume $codec"
	i=0
	while [ $i -lt 20 ]; do echo "$codec-$i"; i=$((i + 1)); done |
	    expect "$codec batch read back" "$PMQ_TMP/z.out"
	# Offsets are per record, also inside a compressed batch.
	kafka_kcat -C -t "z$codec" -p 0 -o 15 -c 1 -f '%o %s\n' \
	    >"$PMQ_TMP/z15.out" || pmq_fail "consume $codec at 15"
	echo "15 $codec-15" | expect "$codec: offset 15 inside a batch" \
	    "$PMQ_TMP/z15.out"
done

pmq_alive || pmq_fail "plexmqd died"
pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
