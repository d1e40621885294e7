#!/bin/sh
# powercut_tcp.sh - simulated power loss over the tcp protocol, for the file
# and lmdb storage plugins (each skipped while its .so is not built).
#
# plexmqd runs with the power-cut shim preloaded (tests/crash/powercut.c,
# docs/crash-testing.md) watching its data dir.  A pipelined publisher
# sends numbered messages (fsync = always); at a random moment SIGUSR2
# makes the shim throw away every write no completed fsync covered, undo
# the unsynced creates/renames/unlinks, and end the process.  plexmqd then
# restarts without the shim on what is left: every acknowledged message is
# in the log, in order, and the retained message is intact.  The shim's
# counters show group commit: fewer than one fsync per 5 acknowledged
# messages.  Three cuts per plugin, the third torn (a random prefix of the
# unsynced writes survives, the last one possibly in part, so recovery
# must cut a torn tail; the seed is in the log).
#
# Then once with fsync = never: the cut must lose acknowledged messages,
# which shows the shim really discards unsynced data (and that the broker
# still restarts on what is left, in order).
#
# The first cut happens in the run that creates the data dir's files, so
# the strict (POSIX) model checks that the plugins fsync the directories
# they create entries in (lmdb: its environment, at start).  Only the
# fsync = never run gets a clean first run.  See docs/crash-testing.md.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init powercut_tcp
pmq_need python3
. "$top_srcdir/tests/crash/lib.sh"

shim="$top_builddir/tests/crash/.libs/powercut.so"
[ -f "$shim" ] || pmq_skip "$shim not built"
real_daemon=$PMQ_DAEMON

# pc_start INI DATADIR STATS [MODE]: start plexmqd with the shim preloaded, through
# a wrapper that execs it (same pid), so that only plexmqd gets the shim.
pc_start() {
	cat >"$PMQ_TMP/with-shim" <<EOF
#!/bin/sh
LD_PRELOAD='$shim' PMQ_POWERCUT_DIR='$2' PMQ_POWERCUT_STATS='$3'
${4:+PMQ_POWERCUT_MODE=$4; export PMQ_POWERCUT_MODE}
# An ASan build wants its runtime first in the library list.
ASAN_OPTIONS="\${ASAN_OPTIONS:+\$ASAN_OPTIONS:}verify_asan_link_order=0"
export LD_PRELOAD PMQ_POWERCUT_DIR PMQ_POWERCUT_STATS ASAN_OPTIONS
exec '$real_daemon' "\$@"
EOF
	chmod +x "$PMQ_TMP/with-shim"
	PMQ_DAEMON="$PMQ_TMP/with-shim"
	pmq_start "$1"
	PMQ_DAEMON=$real_daemon
}

# pc_cut: SIGUSR2 to the shim; plexmqd must end with the shim's 137.
pc_cut() {
	kill -USR2 "$PMQ_PID" || pmq_fail "cannot signal plexmqd"
	wait "$PMQ_PID"
	_rc=$?
	PMQ_PID=
	[ "$_rc" -eq 137 ] || pmq_fail "plexmqd ended with $_rc, not the cut"
}

stat_of() {
	sed -n "s/^$2 //p" "$1"
}

ran=
for plugin in file lmdb; do
	if ! crash_have "$plugin"; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	ran="$ran $plugin"
	data="$PMQ_TMP/data-$plugin"
	crash_config "$plugin" always
	states=
	seq=1
	for round in 1 2 3; do
		stats="$PMQ_TMP/$plugin.stats.$round"
		# The last cut is torn: a random prefix of the unsynced writes
		# reaches the disk, the last one possibly in part.
		mode=
		[ "$round" -eq 3 ] && mode=torn
		pc_start "$PMQ_TMP/$plugin.ini" "$data" "$stats" $mode
		st="$PMQ_TMP/$plugin.state.$round"
		crash_publish tcppub "$(pmq_port tcp)" "$seq" "$st"
		d=$(crash_delay)
		sleep "$d"
		pc_cut
		[ -n "$mode" ] && grep 'powercut: torn mode, seed' "$PMQ_TMP/daemon.log" |
		    tail -n 1
		crash_publish_end
		acked=$(crash_acked "$st")
		syncs=$(stat_of "$stats" syncs_total)
		dsyncs=$(stat_of "$stats" dsync_writes)
		echo "$plugin round $round: cut after ${d}s: $acked acknowledged," \
		    "$syncs fsyncs + $dsyncs O_DSYNC writes," \
		    "$(stat_of "$stats" writes) writes of which" \
		    "$(stat_of "$stats" discarded_writes) discarded"
		[ -n "$syncs" ] || pmq_fail "$plugin: no shim stats"
		[ "$acked" -ge 100 ] ||
		    pmq_fail "$plugin: only $acked acknowledged: too few to judge"
		[ $(( (syncs + dsyncs) * 5 )) -lt "$acked" ] ||
		    pmq_fail "$plugin: $syncs fsyncs + $dsyncs O_DSYNC writes for" \
		        "$acked acknowledged messages: no group commit"
		seq=$(crash_next "$st")
		states="$states $st"
		pmq_start "$PMQ_TMP/$plugin.ini"
		# shellcheck disable=SC2086
		python3 "$CRASH_CLIENT" verify "$(pmq_port tcp)" crash --retained \
		    $states || pmq_fail "$plugin: acknowledged data lost at cut $round"
		pmq_stop || pmq_fail "$plugin: unclean stop"
	done

	# fsync = never: the harness must see the loss.
	data="$PMQ_TMP/data-$plugin-never"
	mkdir -p "$data"
	sed -e "s|^data_dir = .*|data_dir = $data|" \
	    -e 's/^fsync = always/fsync = never/' \
	    "$PMQ_TMP/$plugin.ini" >"$PMQ_TMP/$plugin-never.ini"
	# fsync = never syncs nothing, not even the new files' names: a
	# clean first run creates them, else the cut could take them all.
	pmq_start "$PMQ_TMP/$plugin-never.ini"
	pmq_stop || pmq_fail "$plugin: first clean run (never)"
	st="$PMQ_TMP/$plugin.never"
	pc_start "$PMQ_TMP/$plugin-never.ini" "$data" "$st.stats"
	crash_publish tcppub "$(pmq_port tcp)" 1 "$st"
	sleep 0.5
	pc_cut
	crash_publish_end
	pmq_start "$PMQ_TMP/$plugin-never.ini"
	out=$(python3 "$CRASH_CLIENT" verify "$(pmq_port tcp)" crash \
	    --expect-loss "$st") || { echo "$out"; pmq_fail "$plugin: never"; }
	echo "$out"
	lost=$(echo "$out" | sed -n 's/^LOST //p')
	[ "${lost:-0}" -gt 0 ] ||
	    pmq_fail "$plugin: fsync = never lost nothing at a cut: the shim" \
	        "did not discard unsynced writes"
	pmq_stop || pmq_fail "$plugin: unclean stop (never)"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
echo "power-cut tests passed for:$ran"
pmq_pass
