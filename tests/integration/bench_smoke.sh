#!/bin/sh
# tests/integration/bench_smoke.sh - a functional smoke test of
# plexmq-bench (not a benchmark): 2 s at a low rate against a private
# plexmqd over MQTT QoS 0/1/2, the tcp protocol and the Kafka protocol;
# each run must deliver everything, with no duplicate (plexmq-bench exits
# non-zero otherwise).  Then the two halves of the suite's coldread
# workload: fill a named topic, and read it back with --consume-only.
# With libmosquitto built in, the MQTT QoS 1 and 2 runs are repeated
# through it (--client mosquitto), the cross-check of our own client.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init bench_smoke
BENCH="$top_builddir/bench/plexmq-bench"
[ -x "$BENCH" ] || pmq_skip "plexmq-bench not built"
[ -f "$PMQ_PLUGINS/mqtt.so" ] && [ -f "$PMQ_PLUGINS/kafka.so" ] ||
    pmq_skip "mqtt or kafka plugin not built"
cat >"$PMQ_TMP/plexmq.ini" <<EOF
[plexmqd]
data_dir = $PMQ_TMP/data
[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:0
[listener tcp]
plugin = tcp
listen = 127.0.0.1:0
[listener kafka]
plugin = kafka
listen = 127.0.0.1:0
group_initial_rebalance_delay_ms = 0
EOF
pmq_start "$PMQ_TMP/plexmq.ini"
mport=$(pmq_port mqtt)
tport=$(pmq_port tcp)
kport=$(pmq_port kafka)
common="-d 2 -r 500 --drain 3 --quiet --broker-pid $PMQ_PID"
"$BENCH" --url "mqtt://127.0.0.1:$mport" -p 2 -c 2 -q 0 $common ||
    pmq_fail "mqtt qos0 run lost or duplicated messages"
"$BENCH" --url "mqtt5://127.0.0.1:$mport" -p 1 -c 1 -q 1 --topics 4 $common ||
    pmq_fail "mqtt5 qos1 run lost or duplicated messages"
"$BENCH" --url "mqtt://127.0.0.1:$mport" -p 1 -c 1 -q 2 $common ||
    pmq_fail "mqtt qos2 run lost or duplicated messages"
"$BENCH" --url "tcp://127.0.0.1:$tport" -p 1 -c 1 -q 1 $common ||
    pmq_fail "tcp run lost or duplicated messages"
"$BENCH" --url "kafka://127.0.0.1:$kport" -p 1 -c 1 --acks 1 --linger-ms 1 $common ||
    pmq_fail "kafka run lost or duplicated messages"
"$BENCH" --url "kafka://127.0.0.1:$kport" --topic smoke-fill -p 2 -c 0 -n 400 \
    -s 2048 --quiet --broker-pid "$PMQ_PID" ||
    pmq_fail "kafka fill of a named topic failed"
"$BENCH" --url "kafka://127.0.0.1:$kport" --topic smoke-fill --consume-only \
    -p 2 -c 1 -n 400 -s 2048 --drain 3 --quiet --broker-pid "$PMQ_PID" ||
    pmq_fail "--consume-only did not read back all 400 messages once"
if "$BENCH" --help | grep -q -- '--client'; then
	for q in 1 2; do
		"$BENCH" --url "mqtt5://127.0.0.1:$mport" --client mosquitto \
		    -p 2 -c 2 -q "$q" $common ||
		    pmq_fail "libmosquitto qos$q run lost or duplicated messages"
	done
fi
pmq_pass
