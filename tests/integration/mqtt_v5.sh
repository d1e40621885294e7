#!/bin/sh
# mqtt_v5.sh - MQTT 5 features, run against a private plexmqd and a private
# Mosquitto 2.0 with the deliveries compared (tests/integration/mqtt_lib.sh):
#   props     with mosquitto_pub -D / mosquitto_sub -F: user properties
#             (repeated keys, order kept), content type, response topic,
#             correlation data, payload format indicator and message expiry
#             passed through, also on a retained message; a v3.1.1
#             subscriber gets the same message without properties
#   and with MQTT.js (tests/node/mqtt_v5.js, one fresh broker per case):
#   topic_alias sub_ids no_local shared expiry request_response takeover
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_v5

scen_props() {
	F='MSG %t [%p] P=%P C=%C R=%R D=%D F=%F E=%E r%r'
	mq_sub v5 -V 5 -q 1 -t 'p/#' -F "$F" || return
	mq_sub v3 -V 311 -q 1 -t 'p/#' -F 'MSG %t [%p] r%r' || return
	mq_pub -V 5 -q 1 -t p/x -m hello \
	    -D publish user-property k v -D publish user-property k v2 \
	    -D publish user-property a b -D publish content-type text/plain \
	    -D publish response-topic p/resp -D publish correlation-data abc \
	    -D publish payload-format-indicator 1 \
	    -D publish message-expiry-interval 60 || mq_bad "publish p/x"
	mq_pub -V 5 -q 1 -r -t p/ret -m kept \
	    -D publish user-property origin test || mq_bad "publish p/ret"
	mq_pub -V 5 -q 1 -t p/plain -m plain || mq_bad "publish p/plain"
	mq_wait_msgs v5 3 && mq_wait_msgs v3 3 || return
	# The remaining expiry may have dropped a second on the way.
	mq_msgs v5 | sed 's/E=\(59\|60\) /E=60-or-59 /' >"$MQ_W/got"
	printf '%s\n' \
	    'MSG p/x [hello] P=k:v k:v2 a:b C=text/plain R=p/resp D=abc F=1 E=60-or-59 r0' \
	    'MSG p/ret [kept] P=origin:test C= R= D= F= E= r0' \
	    'MSG p/plain [plain] P= C= R= D= F= E= r0' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_W/got" ||
	    mq_bad "v5 subscriber: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
	mq_expect v3 'MSG p/x [hello] r0
MSG p/ret [kept] r0
MSG p/plain [plain] r0'
	# The retained message keeps its user property.
	mq_sub late -V 5 -q 1 -t p/ret -F "$F" || return
	mq_wait_msgs late 1
	mq_expect late 'MSG p/ret [kept] P=origin:test C= R= D= F= E= r1'
	{ echo "v5:"; cat "$MQ_W/got"; echo "v3:"; mq_msgs v3;
	  echo "late:"; mq_msgs late; } >>"$MQ_OUT"
}

# One scenario per MQTT.js case.
scen_node() {
	MQ_TARGET=$MQ_TARGET mq_node mqtt_v5.js "$node_case" \
	    >"$MQ_W/node.out" 2>"$MQ_W/node.err"
	rc=$?
	cat "$MQ_W/node.out" >>"$MQ_OUT"
	sed 's/^/    /' "$MQ_W/node.err"
	[ $rc -eq 0 ] || mq_bad "mqtt_v5.js $node_case exit $rc:
$(grep '^FAIL' "$MQ_W/node.out" | sed 's/^/      /')"
}

mq_scenario props
if mq_have_node; then
	for node_case in topic_alias sub_ids no_local shared expiry \
	    request_response takeover; do
		eval "scen_$node_case() { scen_node; }"
		mq_scenario "$node_case"
	done
fi
mq_finish
