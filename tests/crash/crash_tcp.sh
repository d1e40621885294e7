#!/bin/sh
# crash_tcp.sh - kill -9 crash test over the tcp protocol, for the file and
# lmdb storage plugins (each skipped while its .so is not built).
#
# With fsync = always, a pipelined publisher (tests/crash/client.py) sends
# numbered messages to crash/t, logged to "crash", and every 500th as a
# retained message to crash/retained; plexmqd is killed with SIGKILL at a
# random moment, three times, and restarted on the same data dir.  After
# each restart every acknowledged message is in the log, in order, never
# duplicated, and the retained message is the last acknowledged one (or a
# later unacknowledged one).  kill -9 keeps the page cache: this shows
# that acknowledgements wait for storage and that recovery works, not that
# fsync happens (powercut_tcp.sh does).
. "$top_srcdir/tests/integration/lib.sh"
pmq_init crash_tcp
pmq_need python3
. "$top_srcdir/tests/crash/lib.sh"

# The harness first proves it can see a loss: memory storage forgets every
# acknowledged message at a kill, and verify must say so.
crash_config memory always
pmq_start "$PMQ_TMP/memory.ini"
crash_publish tcppub "$(pmq_port tcp)" 1 "$PMQ_TMP/memory.state"
pmq_kill9
crash_publish_end
pmq_start "$PMQ_TMP/memory.ini"
python3 "$CRASH_CLIENT" verify "$(pmq_port tcp)" crash --retained \
    "$PMQ_TMP/memory.state" >"$PMQ_TMP/memory.verify" &&
    pmq_fail "verify did not notice that memory storage lost everything"
grep -q 'acknowledged messages missing' "$PMQ_TMP/memory.verify" ||
    pmq_fail "verify failed for another reason: $(cat "$PMQ_TMP/memory.verify")"
pmq_stop
echo "harness: verify notices lost acknowledged messages (memory storage)"

ran=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	crash_config "$plugin" always
	states=
	seq=1
	for round in 1 2 3; do
		pmq_start "$PMQ_TMP/$plugin.ini"
		port=$(pmq_port tcp)
		[ -n "$port" ] || pmq_fail "no tcp port"
		if [ -n "$states" ]; then
			# shellcheck disable=SC2086
			python3 "$CRASH_CLIENT" verify "$port" crash --retained \
			    $states || pmq_fail "$plugin: after kill $((round - 1))"
		fi
		st="$PMQ_TMP/$plugin.state.$round"
		crash_publish tcppub "$port" "$seq" "$st"
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
echo "crash tests passed for:$ran"
pmq_pass
