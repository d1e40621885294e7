#!/bin/sh
# bench/run-suite.sh - the standard benchmark suite of plexmq (issue 6):
# starts a private plexmqd (from the build tree; memory storage, and file
# storage with fsync = always for the durable case) and Debian's mosquitto
# (persistence off) on free loopback ports, pins the brokers to CPU 1 and
# plexmq-bench to CPU 0 with taskset, runs every workload A B A B for
# $ROUNDS rounds, measures the disk's group-commit bandwidth and cold
# sequential read bandwidth with fio, and rewrites docs/benchmarks.md.
# About 9-11 minutes.
#
#   make bench                       # or:
#   BUILDDIR=/tmp/build sh bench/run-suite.sh
#   ONLY="coldread durable" OUT=/tmp/partial.md sh bench/run-suite.sh
#
# Environment: BUILDDIR (default build/), ROUNDS (3), OUT (the report),
# KEEP=1 keeps the work directory (logs, per-workload reports and SVGs),
# ONLY="NAME ..." runs only the named workloads (space-separated) out of:
#   fanin fanout qos1 qos1big latency kprod kcons proto xcheck idle durable
#   coldread
# A pass with ONLY writes a partial report: its tables and targets are the
# workloads that ran, every other one says "not run in this pass" (a
# partial report never mixes in numbers of an earlier run).  So that a
# partial pass cannot overwrite the full table by accident, OUT then
# defaults to ${TMPDIR:-/tmp}/plexmq-benchmarks-partial.md; docs/benchmarks.md
# is the default only for full runs.
#
# coldread needs root: it drops the page cache between filling the log and
# reading it (sync; echo 3 > /proc/sys/vm/drop_caches).  Where that is
# refused the workload is reported as "not measured: cannot drop caches".
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILDDIR:-$top/build}
BENCH="$B/bench/plexmq-bench"
ROUNDS=${ROUNDS:-3}
ALL="fanin fanout qos1 qos1big latency kprod kcons proto xcheck idle durable coldread"
ONLY=$(echo ${ONLY:-} | tr -s ' ') # word splitting trims and joins
for n in $ONLY; do
	case " $ALL " in
	*" $n "*) ;;
	*) echo "run-suite: unknown workload '$n' in ONLY (known: $ALL)" >&2
	   exit 2 ;;
	esac
done
if [ -n "$ONLY" ]; then
	OUT=${OUT:-${TMPDIR:-/tmp}/plexmq-benchmarks-partial.md}
else
	OUT=${OUT:-$top/docs/benchmarks.md}
fi
# want NAME...: true when any NAME runs in this pass.
want() {
	[ -z "$ONLY" ] && return 0
	for n in "$@"; do
		case " $ONLY " in *" $n "*) return 0 ;; esac
	done
	return 1
}
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

# start_plexmqd NAME STORAGE_LINES EXTRA_SECTIONS [MQTT_INFLIGHT]: sets
# PX_PID, PX_MQTT, PX_KAFKA, PX_TCP.  The data dir is $W/NAME/data, so a
# second start with the same NAME reopens the same data (new ports).
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
max_inflight_messages = ${4:-20}
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

R="--rounds $ROUNDS"
if want fanin fanout qos1 qos1big latency kprod kcons proto xcheck; then
start_plexmqd mem "plugin = memory" ""
PM_PID=$PX_PID; PM_MQTT=$PX_MQTT; PM_KAFKA=$PX_KAFKA; PM_TCP=$PX_TCP
start_mosquitto mosq
PXT="plexmqd=mqtt://127.0.0.1:$PM_MQTT@$PM_PID"
MQT="mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID"

want fanin &&
cmp fanin "MQTT QoS 0 fan-in 4 to 1, 100 B, flat out" \
    --target "$PXT" --target "$MQT" $R -p 4 -c 1 -q 0 -d 3 --drain 2
want fanout &&
cmp fanout "MQTT QoS 0 fan-out 1 to 8, 100 B, flat out" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 8 -q 0 -d 3 --drain 2
want qos1 &&
cmp qos1 "MQTT QoS 1 1 to 1, window 20, 100 B" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -d 3
want qos1big &&
cmp qos1big "MQTT QoS 1 1 to 1, window 20, 16 KiB" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -s 16384 -d 3
want latency &&
cmp latency "MQTT QoS 0 1 to 1 at a fixed 10,000 msg/s, 100 B" \
    --target "$PXT" --target "$MQT" $R -p 1 -c 1 -q 0 -r 10000 -d 5
want kprod &&
cmp kprod "Kafka protocol produce, librdkafka acks=1, 100 B, memory storage" \
    --target "plexmqd-kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" $R \
    -p 1 -c 0 --acks 1 -n 3000000 --linger-ms 5
want kcons &&
cmp kcons "Kafka protocol: produce 3M then one consumer reads the log" \
    --target "plexmqd-kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" --rounds 1 \
    -p 1 -c 1 --acks 1 -n 3000000 --sequential
want proto &&
cmp proto "Same workload per protocol: 1 to 1, acknowledged (QoS 1 / acks=1 / +OK), window 20, 100 B, 20,000 msg/s, memory storage" \
    --target "mqtt=mqtt://127.0.0.1:$PM_MQTT@$PM_PID" \
    --target "kafka=kafka://127.0.0.1:$PM_KAFKA@$PM_PID" \
    --target "tcp=tcp://127.0.0.1:$PM_TCP@$PM_PID" \
    --target "$MQT" $R -p 1 -c 1 -q 1 -w 20 -r 20000 -d 3 --linger-ms 1
# The cross-check of our own MQTT client: the same fixed-rate QoS 1 run
# through it and through libmosquitto (only if plexmq-bench has it).
if want xcheck && $BENCH --help | grep -q -- '--client'; then
	XC="-p 2 -c 2 -q 1 -w 20 -r 5000 -d 3"
	cmp xcheck "Client cross-check, our libevent client: QoS 1 2 to 2, 5,000 msg/s, 100 B" \
	    --target "plexmqd=mqtt://127.0.0.1:$PM_MQTT@$PM_PID" \
	    --target "mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID" $R $XC
	cmp xcheckmosq "Client cross-check, libmosquitto: QoS 1 2 to 2, 5,000 msg/s, 100 B" \
	    --target "plexmqd=mqtt://127.0.0.1:$PM_MQTT@$PM_PID" \
	    --target "mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID" $R $XC \
	    --client mosquitto
fi
stop_pid "$PM_PID"
stop_pid "$MQ_PID"
fi

# Idle connections: fresh brokers, so earlier runs' heaps do not hide the
# cost of a connection.
if want idle; then
start_plexmqd idle "plugin = memory" ""
IP=$PX_PID; IPORT=$PX_MQTT
start_mosquitto idlemosq
cmp idle "10,000 idle MQTT connections: broker RSS per connection (bytes)" \
    --target "plexmqd=mqtt://127.0.0.1:$IPORT@$IP" \
    --target "mosquitto=mqtt://127.0.0.1:$MQ_PORT@$MQ_PID" --rounds 1 \
    --idle-conns 10000
stop_pid "$IP"
stop_pid "$MQ_PID"
fi

# Durable: file storage, fsync = always; every MQTT and tcp publish is
# logged (rule #), so their acks wait for the fsync as Kafka's do.  The
# MQTT listener allows 200 in flight per client, the tool's window: this
# comparison is against fio's bandwidth, not against Mosquitto, so the
# MQTT default of 20 (Mosquitto's) would only measure the window.
if want durable; then
start_plexmqd dur "plugin = file
fsync = always" "[rule all]
match = #
log = all" 200
DP=$PX_PID
cmp durable "Durable (file, fsync=always): 4 producers, 1 KiB, acknowledged, 1 consumer, MQTT max_inflight_messages 200" \
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
fi

# drop_caches: write back, then drop the page cache, so the next read of
# the files comes from the disk.  Fails where /proc/sys is read-only or we
# are not root; the caller then reports "not measured".
drop_caches() {
	sync && (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null
}

# Cold log read (issue 5: "reads of a cold log at disk speed").  Fill one
# Kafka-protocol topic on file storage (fsync = never: the policy does not
# matter to reads and the fill is faster), stop plexmqd cleanly, drop the
# page cache, start plexmqd again on the same data dir and read the whole
# topic from offset 0 with one librdkafka consumer.  1 GiB in 16 KiB
# messages: far beyond what read-ahead (128 KiB..a few MiB) could hide,
# and a message size where librdkafka's per-message cost does not decide
# the rate (at 100 B it would, see kcons).  The reference is fio reading
# a cold 1 GiB file on the same disk, sequentially, 1 MiB at a time,
# O_DIRECT (no cache, no read-ahead: what the disk itself delivers to one
# reader); a buffered cold fio read is recorded next to it for context.
if want coldread; then
CR_N=65536; CR_S=16384
FIOW="fio --name=seqread --rw=write --bs=1M --size=1G --ioengine=psync --end_fsync=1"
FIOR="fio --name=seqread --rw=read --bs=1M --size=1G --ioengine=psync --direct=1"
FIOB="fio --name=seqread --rw=read --bs=1M --size=1G --ioengine=psync"
# fio's file is written first, so it is as old as the log when both are
# read (a virtual disk's host may still cache recent writes).
mkdir -p "$W/fior"
(cd "$W/fior" && $FIOW) >"$W/fior.err" 2>&1 ||
    echo "run-suite: fio write failed: $(cat "$W/fior.err")" >&2
echo "== coldread: filling $((CR_N * CR_S / 1048576)) MiB"
start_plexmqd cold "plugin = file
fsync = never" ""
CP=$PX_PID
CR_FILL="-p 1 -c 0 --acks 1 --linger-ms 5 -n $CR_N -s $CR_S --topic coldread"
echo "coldread (fill): plexmq-bench --url kafka://127.0.0.1:PORT $CR_FILL" >>"$CMDS"
if $RUN --url "kafka://127.0.0.1:$PX_KAFKA" --broker-pid "$CP" $CR_FILL \
    >"$W/coldread-fill.txt" 2>&1; then
	stop_pid "$CP"
	du -sb "$W/cold/data" | cut -f1 >"$W/coldread-bytes.txt"
	if drop_caches; then
		echo "coldread (between): stop plexmqd (SIGTERM), sync; echo 3 > /proc/sys/vm/drop_caches, start plexmqd on the same data dir" >>"$CMDS"
		start_plexmqd cold "plugin = file
fsync = never" ""
		CP=$PX_PID
		cmp coldread "Cold log read: 1 GiB (16 KiB messages) from offset 0 after a restart with the page cache dropped" \
		    --target "plexmqd-kafka=kafka://127.0.0.1:$PX_KAFKA@$CP" \
		    --rounds 1 -p 1 -c 1 -n $CR_N -s $CR_S --topic coldread \
		    --consume-only
		# The same read with the log now in the page cache: the
		# ceiling of broker, loopback and client without the disk.
		cmp coldhot "Hot log read: the same 1 GiB again, page cache warm" \
		    --target "plexmqd-kafka=kafka://127.0.0.1:$PX_KAFKA@$CP" \
		    --rounds 1 -p 1 -c 1 -n $CR_N -s $CR_S --topic coldread \
		    --consume-only
		stop_pid "$CP"
		# Three O_DIRECT reads and three buffered ones (the
		# references are their medians: this disk's speed varies from
		# run to run); buffered is the disk as a page-cache reader
		# sees it.
		echo "== fio cold sequential read"
		for run in "$FIOR fio-read" "$FIOB fio-read-buffered"; do
			for i in 1 2 3; do
				(cd "$W/fior" && drop_caches &&
				    ${run% *} --output-format=json \
				    >"$W/${run##* }-$i.json") 2>>"$W/fior.err" ||
				    echo "run-suite: fio read failed: $(cat "$W/fior.err")" >&2
			done
		done
		# What filling 1 GiB of fresh memory costs (the page cache
		# of a cold read is fresh memory).
		drop_caches && $BENCH --mem-fill 1024 \
		    >"$W/mem-fill.txt" 2>&1 || :
		echo "coldhot: the coldread command again on the same plexmqd (page cache warm)" >>"$CMDS"
		echo "fio (cold read reference): before the fill: $FIOW; after the log read, 3 times: sync; echo 3 > /proc/sys/vm/drop_caches; $FIOR (median); 3 times the same without --direct=1 (median)" >>"$CMDS"
		echo "mem-fill: sync; echo 3 > /proc/sys/vm/drop_caches; plexmq-bench --mem-fill 1024" >>"$CMDS"
	else
		echo "run-suite: coldread: cannot drop the page cache (not root?)" >&2
		echo "cannot drop caches" >"$W/coldread-skipped.txt"
	fi
else
	echo "run-suite: coldread fill failed:" >&2
	cat "$W/coldread-fill.txt" >&2
	stop_pid "$CP"
fi
rm -rf "$W/fior"
fi

python3 "$top/bench/report.py" "$W" "$OUT" "$ROUNDS" "$ONLY"
echo "run-suite: wrote $OUT"
