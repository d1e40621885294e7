#!/bin/sh
# kafka_mqtt.sh - one daemon, both styles: a rule maps the MQTT filter
# sensors/# to the Kafka topic "sensors" (3 partitions).  An MQTT publish
# (mosquitto_pub, QoS 1) is read by a Kafka consumer (kcat) with the MQTT
# topic as key and in the mqtt.topic header, in the partition murmur2 of
# the key picks, in order per device; topics outside the rule make no log;
# a Kafka produce reaches mosquitto_sub on the topic its mqtt.topic header
# names, or on the Kafka topic's name without one.  Produced while nobody
# subscribes (the plugin then skips decoding), an mqtt.retain=1 record is
# still kept as the retained message; and a subscriber that arrives while
# a producer's connection runs gets what is produced after it subscribed.
# Skipped until mqtt.so exists.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_mqtt
kafka_need
[ -f "$PMQ_PLUGINS/mqtt.so" ] || pmq_skip "$PMQ_PLUGINS/mqtt.so not built yet"
pmq_need mosquitto_pub mosquitto_sub stdbuf

kafka_conf() {
	kafka_common_conf "$1"
	cat <<CONF

[storage]
plugin = memory

[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:0

[rule sensors]
match = sensors/#
log = sensors
partitions = 3
CONF
}
kafka_start
mport=$(pmq_port mqtt)
[ -n "$mport" ] || pmq_fail "no MQTT port in the log"

# ---- MQTT -> Kafka ----
for m in 20.5 21.0 21.5; do
	timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mport" -q 1 \
	    -t sensors/kitchen/temp -m "$m" || pmq_fail "mosquitto_pub $m"
done
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mport" -q 1 \
    -t sensors/hall/door -m closed || pmq_fail "mosquitto_pub door"
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mport" -q 1 \
    -t other/thing -m nolog || pmq_fail "mosquitto_pub other"

kafka_kcat -L -J >"$PMQ_TMP/md.json" || pmq_fail "kcat -L"
python3 - "$PMQ_TMP/md.json" <<'PY' || pmq_fail "metadata: only the rule's log"
import json, sys
md = json.load(open(sys.argv[1]))
t = {x["topic"]: len(x["partitions"]) for x in md["topics"]}
assert t == {"sensors": 3}, t
PY
kafka_kcat -C -t sensors -o beginning -e -f '%p|%k|%h|%s\n' \
    >"$PMQ_TMP/k.out" || pmq_fail "kcat -C sensors"
python3 - "$PMQ_TMP/k.out" <<'PY' || { cat "$PMQ_TMP/k.out"; pmq_fail "MQTT publishes read by kcat"; }
import sys

def murmur2(data):
    m, h = 0x5bd1e995, (0x9747b28c ^ len(data)) & 0xffffffff
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xffffffff
        k ^= k >> 24
        k = (k * m) & 0xffffffff
        h = (h * m) & 0xffffffff
        h ^= k
    rest = data[4 * n4:]
    if len(rest) == 3: h ^= rest[2] << 16
    if len(rest) >= 2: h ^= rest[1] << 8
    if len(rest) >= 1:
        h ^= rest[0]
        h = (h * m) & 0xffffffff
    h ^= h >> 13
    h = (h * m) & 0xffffffff
    h ^= h >> 15
    return h

def partition(key, n):
    return (murmur2(key.encode()) & 0x7fffffff) % n

recs = []
for line in open(sys.argv[1]).read().splitlines():
    p, k, h, v = line.split("|")
    hdr = dict(x.split("=", 1) for x in h.split(",") if x)
    recs.append((int(p), k, hdr, v))
got = {}
for p, k, hdr, v in recs:
    assert hdr.get("mqtt.topic") == k, (k, hdr)
    assert p == partition(k, 3), ("partition", k, p, partition(k, 3))
    got.setdefault(k, []).append(v)
assert got == {"sensors/kitchen/temp": ["20.5", "21.0", "21.5"],
               "sensors/hall/door": ["closed"]}, got
PY

# ---- Kafka -> MQTT, nobody subscribed: retained records still count ----
echo "on" | kafka_kcat -P -t lamp -H mqtt.topic=home/lamp \
    -H mqtt.retain=1 || pmq_fail "kcat -P retained"
echo "ignored" | kafka_kcat -P -t lamp -H mqtt.topic=home/other ||
    pmq_fail "kcat -P unretained"
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mport" -t 'home/#' -v -C 1 \
    -W 8 >"$PMQ_TMP/lamp.out" 2>&1 ||
    pmq_fail "no retained home/lamp: $(cat "$PMQ_TMP/lamp.out")"
[ "$(cat "$PMQ_TMP/lamp.out")" = "home/lamp on" ] ||
    pmq_fail "retained: $(cat "$PMQ_TMP/lamp.out")"

# ---- Kafka -> MQTT ----
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$mport" -q 1 -t 'sensors/#' -t plain \
    -v -C 2 -d \
    >"$PMQ_TMP/sub.out" 2>&1 &
sub=$!
pmq_track $sub
pmq_wait_for 10 grep -q 'SUBACK' "$PMQ_TMP/sub.out" ||
    pmq_fail "mosquitto_sub did not subscribe: $(cat "$PMQ_TMP/sub.out")"
echo "open" | kafka_kcat -P -t sensors -k sensors/hall/door \
    -X partitioner=murmur2_random \
    -H mqtt.topic=sensors/hall/door || pmq_fail "kcat -P to sensors"
pmq_wait_for 10 grep -q '^sensors/hall/door open$' "$PMQ_TMP/sub.out" ||
    pmq_fail "mosquitto_sub got: $(cat "$PMQ_TMP/sub.out")"
# Without an mqtt.topic header the MQTT topic is the Kafka topic's name.
echo "hello" | kafka_kcat -P -t plain || pmq_fail "kcat -P to plain"
pmq_wait_for 10 grep -q '^plain hello$' "$PMQ_TMP/sub.out" ||
    pmq_fail "mosquitto_sub got: $(cat "$PMQ_TMP/sub.out")"
# The Kafka produce is in the log too, after the MQTT door record (kcat
# used murmur2 like the rule, so both are in one partition, in order).
kafka_kcat -C -t sensors -o beginning -e -f '%k %s\n' |
    grep '^sensors/hall/door ' >"$PMQ_TMP/door.out"
printf 'sensors/hall/door closed\nsensors/hall/door open\n' |
    cmp -s - "$PMQ_TMP/door.out" ||
    pmq_fail "door records: $(cat "$PMQ_TMP/door.out")"

# ---- a subscriber that arrives after the producer started ----
# One producer connection (kafkajs: kcat -P sends nothing before its
# input ends) produces "first" before anyone subscribes to "late", then
# waits for the go file; "second", produced after the SUBACK, must be
# delivered live.  Needs node and the pinned kafkajs, else skipped alone.
if command -v node >/dev/null 2>&1 &&
    [ -d "$KAFKA_NODE_DIR/node_modules/kafkajs" ]; then
	cat >"$PMQ_TMP/late.js" <<'JS'
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')
const go = process.argv[2]
const kafka = new Kafka({ clientId: 'kafka-mqtt-late', logLevel: logLevel.ERROR,
  brokers: [process.env.KAFKA_BROKER], retry: { retries: 2 } })
const p = kafka.producer({ allowAutoTopicCreation: true })
async function main () {
  await p.connect()
  await p.send({ topic: 'late', acks: 1, messages: [{ value: 'first' }] })
  console.log('first acked')
  while (!fs.existsSync(go)) await new Promise(resolve => setTimeout(resolve, 50))
  await p.send({ topic: 'late', acks: 1, messages: [{ value: 'second' }] })
  console.log('second acked')
  await p.disconnect()
}
main().catch(e => { console.error('FAIL (late):', e); process.exit(1) })
JS
	(cd "$KAFKA_NODE_DIR" && NODE_PATH="$KAFKA_NODE_DIR/node_modules" \
	    KAFKA_BROKER="$KAFKA_BROKER" timeout 50 node "$PMQ_TMP/late.js" \
	    "$PMQ_TMP/late.go") >"$PMQ_TMP/late.prod" 2>&1 &
	prod=$!
	pmq_track $prod
	pmq_wait_for 20 grep -q '^first acked$' "$PMQ_TMP/late.prod" ||
	    pmq_fail "late producer: $(cat "$PMQ_TMP/late.prod")"
	stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$mport" -q 1 -t late -v \
	    -C 1 -d >"$PMQ_TMP/late.out" 2>&1 &
	sub=$!
	pmq_track $sub
	pmq_wait_for 10 grep -q 'SUBACK' "$PMQ_TMP/late.out" ||
	    pmq_fail "late mosquitto_sub: $(cat "$PMQ_TMP/late.out")"
	: >"$PMQ_TMP/late.go"
	pmq_wait_for 10 grep -q '^late second$' "$PMQ_TMP/late.out" ||
	    pmq_fail "late subscriber got: $(cat "$PMQ_TMP/late.out")"
	grep -q '^late first$' "$PMQ_TMP/late.out" &&
	    pmq_fail "a record from before the subscription was delivered live"
	wait $prod || pmq_fail "late producer: $(cat "$PMQ_TMP/late.prod")"
else
	echo "note: node or kafkajs missing: late-subscriber case not run"
fi

pmq_alive || pmq_fail "plexmqd died"
pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
