#!/bin/sh
# kafka_admin.sh - CreateTopics and DeleteTopics with the kafkajs admin
# client (tests/node/kafka_admin.js), on a broker that does not create
# topics by itself (auto_create_topics = false): what kcat -L lists after,
# and that a producer cannot create a topic then.
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/kafka_lib.sh"
pmq_init kafka_admin
kafka_need
kafka_need_node

kafka_conf() {
	kafka_common_conf "$1" | sed 's/^auto_create_topics = .*/auto_create_topics = false/'
	cat <<CONF

[storage]
plugin = memory
CONF
}
kafka_start

kafka_node kafka_admin.js >"$PMQ_TMP/node.out" 2>&1 || {
	cat "$PMQ_TMP/node.out"
	pmq_fail "kafkajs admin cases"
}
grep -q '^ok admin$' "$PMQ_TMP/node.out" || pmq_fail "no 'ok admin'"

# kcat sees the result: c1 (2 partitions, created again) and c2; no c0.
kafka_kcat -L -J >"$PMQ_TMP/md.json" || pmq_fail "kcat -L"
python3 - "$PMQ_TMP/md.json" <<'PY' || pmq_fail "metadata after admin"
import json, sys
md = json.load(open(sys.argv[1]))
t = {x["topic"]: len(x["partitions"]) for x in md["topics"]}
assert t == {"c1": 2, "c2": 1}, t
PY

# Without auto-creation a producer's Metadata does not create the topic.
echo "lost" | kafka_kcat -P -t not-there -p 0 -X message.timeout.ms=2000 \
    >/dev/null 2>&1 && pmq_fail "produce to a missing topic succeeded"
kafka_kcat -L -J >"$PMQ_TMP/md2.json" || pmq_fail "kcat -L"
python3 - "$PMQ_TMP/md2.json" <<'PY' || pmq_fail "not-there was created"
import json, sys
md = json.load(open(sys.argv[1]))
assert "not-there" not in [x["topic"] for x in md["topics"]], md["topics"]
PY

pmq_alive || pmq_fail "plexmqd died"
pmq_stop
rc=$?
[ $rc -eq 0 ] || pmq_fail "exit code $rc on SIGTERM"
pmq_pass
