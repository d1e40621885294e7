#!/bin/sh
# kafka_restart.sh - committed offsets and records survive a restart of
# plexmqd with a persistent storage plugin (file): a group member commits,
# plexmqd stops and starts again on the same data_dir, a new member of the
# group gets only what was produced after, a new group replays everything
# (tests/node/kafka_group.js commit / resume).  Then a crash (kill -9) and
# another start: the commits are still there.  Skipped until file.so exists.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_restart
kafka_need
kafka_need_node
[ -f "$PMQ_PLUGINS/file.so" ] ||
    pmq_skip "$PMQ_PLUGINS/file.so not built yet (persistent storage)"

kafka_conf() {
	kafka_common_conf "$1"
	cat <<CONF

[storage]
plugin = file
CONF
}
kafka_start
kafka_raw

kafka_node kafka_group.js commit >"$PMQ_TMP/node1.out" 2>&1 || {
	cat "$PMQ_TMP/node1.out"
	pmq_fail "kafkajs: consume and commit before the restart"
}
python3 "$PMQ_TMP/kraw.py" commit "$KAFKA_PORT" gm rst 0 3 "keep-me" ||
    pmq_fail "standalone commit with metadata"

pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
kafka_start "$KAFKA_PORT"

kafka_node kafka_group.js resume >"$PMQ_TMP/node2.out" 2>&1 || {
	cat "$PMQ_TMP/node2.out"
	pmq_fail "kafkajs: resume after the restart"
}
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" gm rst 2 \
    >"$PMQ_TMP/fo.out" || pmq_fail "OffsetFetch after the restart"
printf '0 3 keep-me\n1 -1 \n' | cmp -s - "$PMQ_TMP/fo.out" ||
    pmq_fail "gm offsets after the restart: $(cat "$PMQ_TMP/fo.out")"

# A crash: what was acknowledged before it is still there after.
python3 "$PMQ_TMP/kraw.py" commit "$KAFKA_PORT" gm rst 1 4 "after-crash" ||
    pmq_fail "commit before the crash"
pmq_kill9
kafka_start "$KAFKA_PORT"
python3 "$PMQ_TMP/kraw.py" fetchoff "$KAFKA_PORT" gm rst 2 \
    >"$PMQ_TMP/fo2.out" || pmq_fail "OffsetFetch after the crash"
printf '0 3 keep-me\n1 4 after-crash\n' | cmp -s - "$PMQ_TMP/fo2.out" ||
    pmq_fail "gm offsets after the crash: $(cat "$PMQ_TMP/fo2.out")"
kafka_kcat -C -t rst -o beginning -e -f '%s\n' | sort -V >"$PMQ_TMP/all.out" ||
    pmq_fail "consume rst after the crash"
python3 -c 'print("\n".join("v%d" % i for i in range(15)))' |
    cmp -s - "$PMQ_TMP/all.out" ||
    pmq_fail "records after the crash: $(cat "$PMQ_TMP/all.out")"

pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
