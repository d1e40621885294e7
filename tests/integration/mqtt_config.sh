#!/bin/sh
# mqtt_config.sh - etc/mosquitto.ini, the Mosquitto-style config: plexmqd
# --check-config accepts it as shipped (port 1883 cannot be bound in a
# test); the same file with only the listen line changed to port 0 serves
# mosquitto_pub/mosquitto_sub; a bad mqtt key is reported as file:line.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init mqtt_config
pmq_need mosquitto_pub mosquitto_sub
[ -f "$PMQ_PLUGINS/mqtt.so" ] || pmq_skip "$PMQ_PLUGINS/mqtt.so not built"

ini="$top_srcdir/etc/mosquitto.ini"
[ -f "$ini" ] || pmq_fail "$ini missing"

check() {
	if command -v timeout >/dev/null 2>&1; then
		timeout 30 "$PMQ_DAEMON" --plugin-dir "$PMQ_PLUGINS" \
		    --check-config -c "$1" >"$PMQ_TMP/check.out" 2>&1
	else
		"$PMQ_DAEMON" --plugin-dir "$PMQ_PLUGINS" --check-config \
		    -c "$1" >"$PMQ_TMP/check.out" 2>&1
	fi
}

check "$ini" || {
	cat "$PMQ_TMP/check.out"
	pmq_fail "--check-config refused etc/mosquitto.ini"
}
grep -q '^listen = 127\.0\.0\.1:1883$' "$ini" ||
    pmq_fail "etc/mosquitto.ini does not listen on 127.0.0.1:1883"

# A typo in an mqtt key is reported with the file and line.
sed 's/^max_inflight_messages = 20$/max_inflight_mesages = 20/' "$ini" \
    >"$PMQ_TMP/typo.ini"
line=$(grep -n '^max_inflight_mesages' "$PMQ_TMP/typo.ini" | cut -d: -f1)
[ -n "$line" ] || pmq_fail "could not make the typo config"
check "$PMQ_TMP/typo.ini" && pmq_fail "a config with an unknown key passed"
grep -q "typo.ini:$line:" "$PMQ_TMP/check.out" || {
	cat "$PMQ_TMP/check.out"
	pmq_fail "unknown key not reported as typo.ini:$line:"
}

# The shipped file, serving: only the port and the data dir differ.
sed -e 's/^listen = 127\.0\.0\.1:1883$/listen = 127.0.0.1:0/' \
    -e "s|^data_dir = .*|data_dir = $PMQ_TMP/data|" "$ini" >"$PMQ_TMP/run.ini"
pmq_start "$PMQ_TMP/run.ini"
port=$(pmq_port mqtt)
[ -n "$port" ] || pmq_fail "no port for [listener mqtt]"
stdbuf -oL mosquitto_sub -p "$port" -d -q 1 -t 'sensors/#' -v -C 1 \
    >"$PMQ_TMP/sub.out" 2>&1 &
sub=$!
pmq_track $sub
pmq_wait_for 10 grep -q '^Subscribed (mid' "$PMQ_TMP/sub.out" ||
    pmq_fail "mosquitto_sub got no SUBACK"
mosquitto_pub -p "$port" -q 1 -t sensors/kitchen -m 21.5 ||
    pmq_fail "mosquitto_pub failed"
pmq_wait_for 10 grep -q '^sensors/kitchen 21.5$' "$PMQ_TMP/sub.out" ||
    pmq_fail "mosquitto_sub did not get the message"
pmq_stop || pmq_fail "plexmqd did not exit 0 on SIGTERM"
pmq_pass
