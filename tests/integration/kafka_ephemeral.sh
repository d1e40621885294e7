#!/bin/sh
# kafka_ephemeral.sh - with no advertised_host/advertised_port the Kafka
# listener advertises the address each client connected to, so a broker
# on an ephemeral port (listen = 127.0.0.1:0) still works for kcat, which
# reconnects to the address Metadata names.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_ephemeral
kafka_need

cat >"$PMQ_TMP/plexmq.ini" <<CONF
[plexmqd]
data_dir = $PMQ_TMP/data

[listener kafka]
plugin = kafka
listen = 127.0.0.1:0
group_initial_rebalance_delay_ms = 0
CONF
pmq_start "$PMQ_TMP/plexmq.ini"
port=$(pmq_port kafka)
[ -n "$port" ] || pmq_fail "no kafka port in the log"

timeout 20 kcat -b "127.0.0.1:$port" -L >"$PMQ_TMP/meta.out" 2>&1 ||
    pmq_fail "kcat -L: $(cat "$PMQ_TMP/meta.out")"
grep -q "broker 0 at 127.0.0.1:$port" "$PMQ_TMP/meta.out" ||
    pmq_fail "Metadata does not advertise 127.0.0.1:$port: $(cat "$PMQ_TMP/meta.out")"

printf 'one\ntwo\nthree\n' |
    timeout 20 kcat -b "127.0.0.1:$port" -P -t eph >"$PMQ_TMP/p.out" 2>&1 ||
    pmq_fail "produce: $(cat "$PMQ_TMP/p.out")"
timeout 20 kcat -b "127.0.0.1:$port" -C -t eph -o beginning -e -q \
    >"$PMQ_TMP/c.out" 2>"$PMQ_TMP/c.err" ||
    pmq_fail "consume: $(cat "$PMQ_TMP/c.err")"
[ "$(cat "$PMQ_TMP/c.out")" = "$(printf 'one\ntwo\nthree')" ] ||
    pmq_fail "read back: $(cat "$PMQ_TMP/c.out")"
pmq_pass
