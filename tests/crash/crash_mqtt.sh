#!/bin/sh
# crash_mqtt.sh - kill -9 crash test with an MQTT 3.1.1 QoS 1 publisher, for
# the file and lmdb storage plugins (each skipped while its .so is not
# built; the whole test skipped while mqtt.so is not).
#
# One plexmqd with an mqtt and a tcp listener, fsync = always, the rule
# crash/# -> log "crash".  tests/crash/client.py mqttpub publishes numbered
# QoS 1 messages (every 500th retained) with packet ids and records each
# PUBACK, which must come in order; plexmqd is killed with SIGKILL at a
# random moment, three times.  After each restart the tcp READ of the log
# holds every PUBACKed message, in order, no duplicates (the client never
# resends), and the retained message is the last acknowledged one or later.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init crash_mqtt
pmq_need python3
. "$top_srcdir/tests/crash/lib.sh"

crash_have mqtt || pmq_skip "mqtt.so not built"
ran=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	crash_config "$plugin" always mqtt
	states=
	seq=1
	for round in 1 2 3; do
		pmq_start "$PMQ_TMP/$plugin.ini"
		tport=$(pmq_port tcp)
		mport=$(pmq_port mqtt)
		[ -n "$tport" ] && [ -n "$mport" ] || pmq_fail "no ports"
		if [ -n "$states" ]; then
			# shellcheck disable=SC2086
			python3 "$CRASH_CLIENT" verify "$tport" crash --retained \
			    $states || pmq_fail "$plugin: after kill $((round - 1))"
		fi
		st="$PMQ_TMP/$plugin.state.$round"
		crash_publish mqttpub "$mport" "$seq" "$st"
		d=$(crash_delay)
		echo "$plugin round $round: kill -9 after ${d}s"
		sleep "$d"
		pmq_kill9
		crash_publish_end
		seq=$(crash_next "$st")
		states="$states $st"
	done
	pmq_start "$PMQ_TMP/$plugin.ini"
	# shellcheck disable=SC2086
	python3 "$CRASH_CLIENT" verify "$(pmq_port tcp)" crash --retained \
	    $states || pmq_fail "$plugin: after the last kill"
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
echo "MQTT crash tests passed for:$ran"
pmq_pass
