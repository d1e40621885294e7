#!/bin/sh
# kafka_config.sh - the shipped Kafka-style and both-styles configs pass
# --check-config; bad kafka keys are refused with file:line; plexmqd -c
# etc/kafka.ini serves kcat on 127.0.0.1:9092 (when that port is free).
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_config
kafka_need

check() {
	"$PMQ_DAEMON" --check-config -c "$1" --plugin-dir "$PMQ_PLUGINS" \
	    >"$PMQ_TMP/check.out" 2>&1
}

check "$top_srcdir/etc/kafka.ini" ||
    pmq_fail "etc/kafka.ini: $(cat "$PMQ_TMP/check.out")"
if [ -f "$PMQ_PLUGINS/mqtt.so" ]; then
	check "$top_srcdir/etc/both.ini" ||
	    pmq_fail "etc/both.ini: $(cat "$PMQ_TMP/check.out")"
else
	echo "note: mqtt.so not built; etc/both.ini not checked"
fi

# Bad values and unknown keys of the kafka plugin: exit 1, file:line.
bad() { # LINE KEY = VALUE
	_line=$1
	shift
	{
		printf '[listener kafka]\nplugin = kafka\nlisten = 127.0.0.1:0\n'
		echo "$*"
	} >"$PMQ_TMP/bad.ini"
	check "$PMQ_TMP/bad.ini" && pmq_fail "accepted: $*"
	grep -q "bad.ini:$_line" "$PMQ_TMP/check.out" ||
	    pmq_fail "'$*': no file:line in: $(cat "$PMQ_TMP/check.out")"
}
bad 4 "no_such_kafka_key = 1"
bad 4 "default_partitions = 0"
bad 4 "default_partitions = many"
bad 4 "advertised_port = 70000"
bad 4 "auto_create_topics = perhaps"
bad 4 "socket_request_max_bytes = -5"

# The shipped config serves kcat on 9092 (a copy with a private data_dir).
if python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 9092))' \
    2>/dev/null; then
	sed "s|^data_dir = .*|data_dir = $PMQ_TMP/data|" \
	    "$top_srcdir/etc/kafka.ini" >"$PMQ_TMP/kafka.ini"
	if _kafka_try_start "$PMQ_TMP/kafka.ini"; then
		KAFKA_BROKER=127.0.0.1:9092
		echo hello | kafka_kcat -P -t demo || pmq_fail "produce on 9092"
		kafka_kcat -L >"$PMQ_TMP/md.txt" || pmq_fail "kcat -L on 9092"
		grep -q 'broker .* at 127.0.0.1:9092' "$PMQ_TMP/md.txt" &&
		    grep -q 'topic "demo" with 1 partitions' "$PMQ_TMP/md.txt" ||
		    pmq_fail "kcat -L on 9092: $(cat "$PMQ_TMP/md.txt")"
		kafka_kcat -C -t demo -o beginning -e -f '%s\n' \
		    >"$PMQ_TMP/demo.out" || pmq_fail "consume on 9092"
		echo hello | cmp -s - "$PMQ_TMP/demo.out" ||
		    pmq_fail "demo holds: $(cat "$PMQ_TMP/demo.out")"
		pmq_stop || pmq_fail "etc/kafka.ini: bad exit on SIGTERM"
	else
		tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
		    grep -qi 'in use' || pmq_fail "etc/kafka.ini did not start"
		echo "note: 9092 taken meanwhile; etc/kafka.ini not served"
	fi
else
	echo "note: 127.0.0.1:9092 is in use; etc/kafka.ini not served"
fi
pmq_pass
