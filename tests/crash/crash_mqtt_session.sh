#!/bin/sh
# crash_mqtt_session.sh - persistent MQTT sessions and retained messages
# survive kill -9 of plexmqd, for the file and lmdb storage plugins (each
# skipped while its .so is not built; the whole test skipped without
# mqtt.so or the Mosquitto clients).  fsync = always.  Per plugin:
#
#   1. mosquitto_sub -c -i crashsub (MQTT 3.1.1, clean session false)
#      subscribes to sess/# with QoS 1 and disconnects: a stored session.
#   2. mosquitto_pub -q 1 publishes a retained message to ret/x and two
#      QoS 1 messages to sess/a while crashsub is away (queued for it);
#      each PUBACK means stored.
#   3. kill -9, restart on the same data dir.
#   4. crashsub reconnects (clean session false) subscribing only to an
#      unrelated topic: the session must be resumed (CONNACK session
#      present), the two queued messages arrive, in order, and a message
#      published after the reconnect to sess/b arrives through the stored
#      subscription.
#   5. A new subscriber to ret/x gets the retained message.
# Every failure says which of these broke.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init crash_mqtt_session
pmq_need python3 mosquitto_sub mosquitto_pub stdbuf
. "$top_srcdir/tests/crash/lib.sh"

crash_have mqtt || pmq_skip "mqtt.so not built"

mpub() {
	timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mport" -V 311 "$@"
}

ran=
fails=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	crash_config "$plugin" always mqtt
	pmq_start "$PMQ_TMP/$plugin.ini"
	mport=$(pmq_port mqtt)
	[ -n "$mport" ] || pmq_fail "no mqtt port"

	# 1: the session and its subscription (-E: exit once SUBACKed).
	timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 -c \
	    -i "crashsub-$plugin" -q 1 -t 'sess/#' -E ||
	    pmq_fail "$plugin: persistent subscribe"
	# 2: retained, and queued while away.
	mpub -q 1 -r -t ret/x -m "r-$plugin" || pmq_fail "$plugin: retained publish"
	mpub -q 1 -t sess/a -m q1 || pmq_fail "$plugin: publish q1"
	mpub -q 1 -t sess/a -m q2 || pmq_fail "$plugin: publish q2"
	# 3
	pmq_kill9
	pmq_start "$PMQ_TMP/$plugin.ini"
	mport=$(pmq_port mqtt)

	# 4: resume; -d shows CONNACK's session-present flag and the SUBACK.
	out="$PMQ_TMP/$plugin.sub"
	# Line-buffered: the test waits for the SUBACK line.
	timeout 15 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 -c -d \
	    -i "crashsub-$plugin" -q 1 -t 'unrelated/x' -C 3 -W 12 \
	    -F 'MSG %t %p' >"$out" 2>&1 &
	spid=$!
	pmq_track "$spid"
	pmq_wait_for 10 grep -q 'received SUBACK' "$out" ||
	    pmq_fail "$plugin: resumed subscriber got no SUBACK"
	mpub -q 1 -t sess/b -m q3 || pmq_fail "$plugin: publish q3"
	wait "$spid"
	got=$(grep '^MSG' "$out" | tr '\n' ',')
	if [ "$got" != "MSG sess/a q1,MSG sess/a q2,MSG sess/b q3," ]; then
		echo "$plugin: after kill -9 the persistent session delivered" \
		    "[$got], want [MSG sess/a q1,MSG sess/a q2,MSG sess/b q3,]"
		grep -i 'connack' "$out" | head -n 1
		fails="$fails $plugin:session"
	else
		echo "$plugin: persistent session kept over kill -9" \
		    "(queued q1 q2, then q3 through the stored subscription)"
	fi

	# 5: retained.
	r=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mport" -V 311 \
	    -t ret/x -C 1 -W 5 -F '%t %p r%r' 2>&1)
	if [ "$r" != "ret/x r-$plugin r1" ]; then
		echo "$plugin: retained after kill -9: [$r], want [ret/x r-$plugin r1]"
		fails="$fails $plugin:retained"
	else
		echo "$plugin: retained message kept over kill -9"
	fi
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
[ -z "$fails" ] || pmq_fail "lost over kill -9:$fails"
echo "MQTT session crash tests passed for:$ran"
pmq_pass
