#!/bin/sh
# bench/run-suite.sh - the standard benchmark suite of plexmq (issue 6):
# starts a private plexmqd (from the build tree; memory storage, and file
# storage with fsync = always for the durable case) and Debian's mosquitto
# (persistence off) on free loopback ports, pins the brokers to CPU 1 and
# plexmq-bench to CPU 0 with taskset, runs every workload A B A B for
# $ROUNDS rounds, measures the disk's group-commit bandwidth with fio, and
# rewrites docs/benchmarks.md.  About 8-10 minutes.
#
#   make bench                       # or:
#   BUILDDIR=/tmp/build sh bench/run-suite.sh
#
# Environment: BUILDDIR (default build/), ROUNDS (3), OUT (the report),
# KEEP=1 keeps the work directory (logs, per-workload reports and SVGs).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILDDIR:-$top/build}
BENCH="$B/bench/plexmq-bench"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$top/docs/benchmarks.md}
MOSQ=${MOSQUITTO:-/usr/sbin/mosquitto}
BCPU=1 # brokers
TCPU=0 # the tool
for f in "$BENCH" "$B/plexmqd" "$MOSQ"; do
	[ -x "$f" ] || { echo "run-suite: $f missing (build first)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "run-suite: python3 needed" >&2; exit 1; }
# The work directory is on the same disk as the durable storage and fio.
W=$(mktemp -d "${TMPDIR:-/var/tmp}/pmq-bench.XXXXXX")
pids=
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null || :
		wait "$p" 2>/dev/null || :
	done
	if [ "${KEEP:-0}" = 1 ]; then echo "run-suite: kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
# The idle-connections case needs ~10k descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || :

free_port() {
	python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_plexmqd NAME STORAGE_LINES: sets PX_PID, PX_MQTT, PX_KAFKA, PX_TCP.
start_plexmqd() {
	name=$1
	PX_MQTT=$(free_port); PX_KAFKA=$(free_port); PX_TCP=$(free_port)
	mkdir -p "$W/$name/data"
	cat >"$W/$name/plexmq.ini" <<EOF
[plexmqd]
data_dir = $W/$name/data
log_level = warn
max_connections = 20000
[storage]
$2
[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:$PX_MQTT
max_connections = 20000
max_inflight_messages = 20
[listener kafka]
plugin = kafka
listen = 127.0.0.1:$PX_KAFKA
advertised_host = 127.0.0.1
advertised_port = $PX_KAFKA
group_initial_rebalance_delay_ms = 0
input_max = 64M
[listener tcp]
plugin = tcp
listen = 127.0.0.1:$PX_TCP
$3
EOF
	taskset -c $BCPU "$B/plexmqd" -c "$W/$name/plexmq.ini" \
	    --plugin-dir "$B/plugins/.libs" >"$W/$name/daemon.log" 2>&1 &
	PX_PID=$!
	pids="$pids $PX_PID"
	wait_port "$PX_MQTT" && wait_port "$PX_KAFKA" ||
	    { cat "$W/$name/daemon.log" >&2; exit 1; }
}

# start_mosquitto NAME: sets MQ_PID, MQ_PORT.
start_mosquitto() {
	MQ_PORT=$(free_port)
	mkdir -p "$W/$1"
	cat >"$W/$1/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
log_dest none
EOF
	taskset -c $BCPU "$MOSQ" -c "$W/$1/mosquitto.conf" >"$W/$1/log" 2>&1 &
	MQ_PID=$!
	pids="$pids $MQ_PID"
	wait_port "$MQ_PORT" || { cat "$W/$1/log" >&2; exit 1; }
}

stop_pid() {
	kill "$1" 2>/dev/null || :
	wait "$1" 2>/dev/null || :
	pids=$(echo "$pids" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

wait_port() {
	i=0
	while [ $i -lt 100 ]; do
		python3 -c "import socket,sys
s=socket.socket(); s.settimeout(0.2)
sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0
		i=$((i + 1)); sleep 0.1
	done
	echo "run-suite: nothing listens on $1" >&2
	return 1
}

RUN="taskset -c $TCPU $BENCH --quiet"
CMDS="$W/commands.txt"
: >"$CMDS"
# cmp NAME TITLE ARGS...: one --compare workload into $W/NAME/.
cmp() {
	n=$1; t=$2; shift 2
	echo "== $n: $t"
	echo "$n: plexmq-bench --compare $*" >>"$CMDS"
	$RUN --compare --label "$t" --out "$W/r-$n" "$@" | tail -n +1 || :
	cat "$W/r-$n/report.md" 2>/dev/null | head -n 4 || :
}

start_plexmqd mem "plugin = memory" ""
PM_PID=$PX_PID; PM_MQTT=$PX_MQTT; PM_KAFKA=$PX_KAFKA; PM_TCP=$PX_TCP
start_mosquitto mosq
PXT="plexmqd=mqtt://127.0.0.1:$PM_MQTT@$PM_PID"
MQT="mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID"
R="--rounds $ROUNDS"

cmp fanin "MQTT QoS 0 fan-in 4 to 1, 100 B, flat out" \
    --target "$PXT" --target "$MQT" $R -p 4 -c 1 -q 0 -d 3 --drain 2
cmp fanout "MQTT QoS 0 fan-out 1 to 8, 100 B, flat out" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 8 -q 0 -d 3 --drain 2
cmp qos1 "MQTT QoS 1 1 to 1, window 20, 100 B" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -d 3
cmp qos1big "MQTT QoS 1 1 to 1, window 20, 16 KiB" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -s 16384 -d 3
cmp latency "MQTT QoS 0 1 to 1 at a fixed 10,000 msg/s, 100 B" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 0 -r 10000 -d 5
cmp kprod "Kafka protocol produce, librdkafka acks=1, 100 B, memory storage" \
    --target "plexmqd-kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" $R \
    -p 1 -c 0 --acks 1 -n 3000000 --linger-ms 5
cmp kcons "Kafka protocol: produce 3M then one consumer reads the log" \
    --target "plexmqd-kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" --rounds 1 \
    -p 1 -c 1 --acks 1 -n 3000000 --sequential
cmp proto "Same workload per protocol: 1 to 1, acknowledged (QoS 1 / acks=1 / +OK), window 20, 100 B, 20,000 msg/s, memory storage" \
    --target "mqtt=mqtt://127.0.0.1:$PM_MQTT@$PM_PID" \
    --target "kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" \
    --target "tcp=tcp://127.0.0.1:$PM_TCP@$PM_PID" \
    --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -r 20000 -d 3 --linger-ms 1
stop_pid "$PM_PID"
stop_pid "$MQ_PID"

# Idle connections: fresh brokers, so earlier runs' heaps do not hide the
# cost of a connection.
start_plexmqd idle "plugin = memory" ""
IP=$PX_PID; IPORT=$PX_MQTT
start_mosquitto idlemosq
cmp idle "10,000 idle MQTT connections: broker RSS per connection (bytes)" \
    --target "plexmqd=mqtt://127.0.0.1:$IPORT@$IP" \
    --target "mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID" --rounds 1 \
    --idle-conns 10000
stop_pid "$IP"
stop_pid "$MQ_PID"

# Durable: file storage, fsync = always; every MQTT and tcp publish is
# logged (rule #), so their acks wait for the fsync as Kafka's do.
start_plexmqd dur "plugin = file
fsync = always" "[rule all]
match = #
log = all"
DP=$PX_PID
cmp durable "Durable (file, fsync=always): 4 producers, 1 KiB, acknowledged, 1 consumer" \
    --target "kafka=kafka://127.0.0.1:$PX_KAFKA@$DP" \
    --target "mqtt=mqtt://127.0.0.1:$PX_MQTT@$DP" \
    --target "tcp=tcp://127.0.0.1:$PX_TCP@$DP" $R \
    -p 4 -c 1 -q 1 -w 200 -s 1024 -d 4 --linger-ms 5 --acks 1
stop_pid "$DP"

echo "== fio group-commit bandwidth"
FIO="fio --name=gc --rw=write --bs=64k --size=1G --ioengine=psync --fdatasync=1"
mkdir -p "$W/fio"
(cd "$W/fio" && $FIO --output-format=json >"$W/fio.json" 2>"$W/fio.err") ||
    echo "run-suite: fio failed: $(cat "$W/fio.err")" >&2
rm -rf "$W/fio"
echo "fio: $FIO (in a temp dir next to the durable data)" >>"$CMDS"

python3 "$top/bench/report.py" "$W" "$OUT" "$ROUNDS"
echo "run-suite: wrote $OUT"
