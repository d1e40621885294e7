#!/bin/sh
# kafka_group.sh - consumer groups with kafkajs (tests/node/kafka_group.js
# group): two members receive every message once between them, rebalance
# when one leaves, a new member resumes from committed offsets, a new group
# replays from the beginning, ListGroups/DescribeGroups.  Then, on the
# empty group, a standalone OffsetCommit (generation -1, raw socket) with
# a metadata string, read back with OffsetFetch; and a kcat -G member
# resuming from those offsets.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_group
kafka_need
kafka_need_node

kafka_conf() {
	kafka_common_conf "$1"
	cat <<CONF
default_partitions = 1
group_max_session_timeout_ms = 60000

[storage]
plugin = memory
CONF
}
kafka_start
kafka_raw

kafka_node kafka_group.js group >"$PMQ_TMP/node.out" 2>&1 || {
	cat "$PMQ_TMP/node.out"
	pmq_fail "kafkajs group cases"
}
grep -q '^ok group$' "$PMQ_TMP/node.out" || pmq_fail "no 'ok group'"

# Topic grp has 3 partitions holding 24, 23, 23 records (i % 3) and g1
# committed every end.  Commit standalone on the now empty group.
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" g1 grp 3 \
    >"$PMQ_TMP/fo1.out" || pmq_fail "OffsetFetch g1"
printf '0 24 \n1 23 \n2 23 \n' | cmp -s - "$PMQ_TMP/fo1.out" ||
    pmq_fail "g1 committed offsets: $(cat "$PMQ_TMP/fo1.out")"
python3 "$PMQ_TMP/kraw.py" commit "$KAFKA_PORT" g1 grp 1 20 "note-1" ||
    pmq_fail "standalone OffsetCommit"
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" g1 grp 3 \
    >"$PMQ_TMP/fo2.out" || pmq_fail "OffsetFetch g1 again"
printf '0 24 \n1 20 note-1\n2 23 \n' | cmp -s - "$PMQ_TMP/fo2.out" ||
    pmq_fail "after the standalone commit: $(cat "$PMQ_TMP/fo2.out")"
# An unknown group has no commits: -1.
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" nobody grp 3 \
    >"$PMQ_TMP/fo3.out" || pmq_fail "OffsetFetch of an unknown group"
printf '0 -1 \n1 -1 \n2 -1 \n' | cmp -s - "$PMQ_TMP/fo3.out" ||
    pmq_fail "unknown group offsets: $(cat "$PMQ_TMP/fo3.out")"

# librdkafka as a group member (kcat -G) resumes from the commits: it
# reads exactly the three records 20..22 of partition 1.
timeout 40 kcat -b "$KAFKA_BROKER" -G g1 -X session.timeout.ms=6000 \
    -X heartbeat.interval.ms=500 -X auto.offset.reset=earliest \
    -c 3 -f '%p %o %s\n' grp >"$PMQ_TMP/kg.out" 2>>"$PMQ_TMP/kcat.err" ||
    pmq_fail "kcat -G g1"
sort "$PMQ_TMP/kg.out" >"$PMQ_TMP/kg.sorted"
printf '1 20 v61\n1 21 v64\n1 22 v67\n' | cmp -s - "$PMQ_TMP/kg.sorted" ||
    pmq_fail "kcat -G resumed with: $(cat "$PMQ_TMP/kg.out")"

pmq_alive || pmq_fail "plexmqd died"
pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
