# tests/crash/lib.sh - shared by the crash tests (docs/crash-testing.md), on
# top of tests/integration/lib.sh.  Source it after that one and pmq_init.
#
#   crash_config PLUGIN FSYNC [mqtt]  write $PMQ_TMP/PLUGIN.ini: storage
#                                     PLUGIN in $PMQ_TMP/data-PLUGIN, a tcp
#                                     listener (and an mqtt one), the rule
#                                     crash/# -> log "crash"
#   crash_have PLUGIN                 true when plugins/.libs/PLUGIN.so exists
#   crash_delay                       a random delay of 0.3 to 1.5 s (printed)
#   crash_publish KIND PORT FIRST STATE  start client.py KIND in the
#                                     background ($crash_cpid), wait (10 s)
#                                     until its first acknowledgement
#   crash_publish_end                 wait for the publisher to write STATE
#   crash_next STATE                  the sequence number after STATE's sent
#   crash_acked STATE                 how many STATE acknowledged

CRASH_CLIENT="$top_srcdir/tests/crash/client.py"

crash_have() {
	[ -f "$PMQ_PLUGINS/$1.so" ]
}

crash_config() {
	_p=$1
	_f=$2
	_extra=
	case $_p in
	lmdb) _extra="map_size = 256M" ;;
	file) _extra="segment_bytes = 1M" ;;
	memory) _f= ;;
	esac
	mkdir -p "$PMQ_TMP/data-$_p"
	cat >"$PMQ_TMP/$_p.ini" <<EOF
[plexmqd]
data_dir = $PMQ_TMP/data-$_p

[storage]
plugin = $_p
${_f:+fsync = $_f}
$_extra

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0

[rule crash]
match = crash/#
log = crash
partitions = 1
EOF
	if [ "${3:-}" = mqtt ]; then
		cat >>"$PMQ_TMP/$_p.ini" <<EOF

[listener mqtt]
plugin = mqtt
listen = 127.0.0.1:0
EOF
	fi
}

crash_delay() {
	python3 -c 'import random; print("%.2f" % random.uniform(0.3, 1.5))'
}

crash_publish() {
	rm -f "$4" "$4.ready"
	python3 "$CRASH_CLIENT" "$1" "$2" "$3" "$4" >>"$PMQ_TMP/client.log" 2>&1 &
	crash_cpid=$!
	pmq_track "$crash_cpid"
	pmq_wait_for 10 test -f "$4.ready" ||
	    pmq_fail "publisher got no acknowledgement within 10 s"
}

crash_publish_end() {
	# The publisher ends at EOF from the dead broker (or after 30 s).
	wait "$crash_cpid"
	_rc=$?
	[ "$_rc" -eq 0 ] || {
		tail -n 5 "$PMQ_TMP/client.log"
		pmq_fail "publisher failed ($_rc)"
	}
}

crash_next() {
	echo $(($(sed -n 's/^sent //p' "$1") + 1))
}

crash_acked() {
	grep -c '^acked ' "$1"
}
