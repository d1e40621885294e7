#!/bin/sh
# kafka_bad.sh - bad input to the Kafka transport over raw sockets: an
# unknown ApiVersions version (error 35, connection kept), an unknown API
# key, truncated requests, a frame cut off by the client, size prefixes
# over socket_request_max_bytes and negative, a bad CRC, a batch over
# message_max_bytes, acks=0 (no response), the idempotent producer's
# duplicate and out-of-order sequences.  Each gets the right error code or
# a closed connection, and plexmqd keeps serving: kcat -L works after all
# of it, librdkafka's idempotent producer and its MESSAGE_TOO_LARGE work,
# and the daemon exits cleanly.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_bad
kafka_need

kafka_conf() {
	kafka_common_conf "$1"
	cat <<CONF
socket_request_max_bytes = 100k
message_max_bytes = 10k

[storage]
plugin = memory
CONF
}
kafka_start
kafka_raw

python3 "$PMQ_TMP/kraw.py" bad "$KAFKA_PORT" || pmq_fail "bad input cases"
pmq_alive || pmq_fail "plexmqd died"

# A real client still works; the acks=0 record and the others are there.
kafka_kcat -L >"$PMQ_TMP/md.txt" || pmq_fail "kcat -L after bad input"
grep -q "broker .* at 127.0.0.1:$KAFKA_PORT" "$PMQ_TMP/md.txt" ||
    pmq_fail "kcat -L: $(cat "$PMQ_TMP/md.txt")"
kafka_kcat -C -t raw -p 0 -o beginning -e -f '%o %s\n' >"$PMQ_TMP/raw.out" ||
    pmq_fail "consume raw"
printf '0 a\n1 b\n2 z\n3 d\n4 s0\n5 s1\n6 s2\n' | cmp -s - "$PMQ_TMP/raw.out" ||
    pmq_fail "raw topic holds: $(cat "$PMQ_TMP/raw.out")"

# The idempotent producer of librdkafka (InitProducerId, sequences).
printf 'i1\ni2\ni3\n' | kafka_kcat -P -t idem -p 0 -X enable.idempotence=true ||
    pmq_fail "idempotent produce"
kafka_kcat -C -t idem -p 0 -o beginning -e -f '%o %s\n' >"$PMQ_TMP/idem.out" ||
    pmq_fail "consume idem"
printf '0 i1\n1 i2\n2 i3\n' | cmp -s - "$PMQ_TMP/idem.out" ||
    pmq_fail "idempotent records: $(cat "$PMQ_TMP/idem.out")"

# message_max_bytes through a real client: librdkafka reports the error.
python3 -c 'print("y" * 20000)' |
    kafka_kcat -P -t big -p 0 >/dev/null 2>&1
grep -q 'Message size too large' "$PMQ_TMP/kcat.err" ||
    pmq_fail "kcat got no MESSAGE_TOO_LARGE for a 20000-byte record"

pmq_alive || pmq_fail "plexmqd died"
pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
