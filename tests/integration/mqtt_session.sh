#!/bin/sh
# mqtt_session.sh - client lifetimes with the real Mosquitto clients, run
# against a private plexmqd and a private Mosquitto 2.0 with the deliveries
# compared (tests/integration/mqtt_lib.sh):
#   will      a client killed with kill -9 has its will published (QoS and
#             retain honoured, v3.1.1 and v5); a client that disconnects
#             normally does not
#   session   persistent sessions (-c, v3.1.1 and v5): the subscription
#             survives, QoS 1/2 messages published while the client is away
#             are queued and delivered in order on reconnect, QoS 0 ones
#             are not (Mosquitto's default queue_qos0_messages false); a
#             clean-session connect discards the session
#   takeover  a second connection with the same client id kicks the first
#             (v5: with DISCONNECT 0x8E, which Mosquitto 2.0.11 omits)
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_session

scen_will() {
	F='MSG %t [%p] q%q r%r'
	mq_sub watch -q 2 -t 'will/#' -F "$F" || return
	# h1 (v3.1.1) and h3 (v5) hold wills and get killed; h2 holds one
	# and disconnects normally (mosquitto_sub sends DISCONNECT on TERM).
	mq_sub h1 -V 311 -i holder1 -t 'idle/1' --will-topic will/h1 \
	    --will-payload 'h1 gone' --will-qos 1 || return
	mq_sub h2 -V 311 -i holder2 -t 'idle/2' --will-topic will/h2 \
	    --will-payload 'h2 gone' --will-qos 1 || return
	mq_sub h3 -V 5 -i holder3 -t 'idle/3' --will-topic will/h3 \
	    --will-payload 'h3 gone' --will-qos 2 --will-retain || return
	mq_kill h2 TERM
	grep -q 'sending DISCONNECT' "$MQ_W/h2.out" ||
	    mq_bad "h2 did not disconnect normally"
	mq_kill h1 KILL
	mq_wait_msgs watch 1 || return
	mq_kill h3 KILL
	mq_wait_msgs watch 2 || return
	# Anything h2's will could have caused was routed before "end".
	mq_pub -q 1 -t will/end -m end || mq_bad "publish will/end"
	mq_wait_msgs watch 3 || return
	mq_expect watch 'MSG will/h1 [h1 gone] q1 r0
MSG will/h3 [h3 gone] q2 r0
MSG will/end [end] q1 r0'
	# h3's will was retained.
	mq_sub late -q 2 -t 'will/#' -F "$F" || return
	mq_wait_msgs late 1
	mq_expect late 'MSG will/h3 [h3 gone] q2 r1'
	{ echo "watch:"; mq_msgs watch; echo "late:"; mq_msgs late; } \
	    >>"$MQ_OUT"
}

scen_session() {
	F='MSG %t [%p] q%q'
	for v in 311 5; do
		id="sess-$v"
		# Create the session and its subscription, then leave.
		mq_sub "a$v" -V $v -c -i "$id" -q 1 -t "sess/$v/#" -F "$F" ||
		    return
		mq_kill "a$v" TERM
		mq_pub -q 1 -t "sess/$v/x" -m one || mq_bad "publish one"
		mq_pub -q 2 -t "sess/$v/x" -m two || mq_bad "publish two"
		mq_pub -q 0 -t "sess/$v/x" -m zero || mq_bad "publish zero"
		mq_pub -q 1 -V 5 -t "sess/$v/y" -m three || mq_bad "publish three"
		# Come back subscribing to something else only: the queued
		# messages and later ones arrive through the session's own
		# subscription.
		mq_sub_nowait "b$v" -V $v -c -i "$id" -q 1 -t "other/$v" -F "$F"
		mq_wait_msgs "b$v" 3 || return
		pmq_wait_for 10 grep -q '^Subscribed (mid' "$MQ_W/b$v.out" ||
		    { mq_bad "b$v: no SUBACK"; return; }
		mq_pub -q 1 -t "sess/$v/z" -m after || mq_bad "publish after"
		mq_wait_msgs "b$v" 4 || return
		mq_expect "b$v" "MSG sess/$v/x [one] q1
MSG sess/$v/x [two] q1
MSG sess/$v/y [three] q1
MSG sess/$v/z [after] q1"
		grep -q 'received CONNACK (0)' "$MQ_W/b$v.out" ||
		    mq_bad "b$v: CONNACK not accepted"
		# A clean connect with the same id drops the session: the
		# old subscription no longer matches.
		mq_kill "b$v" TERM
		mq_sub "c$v" -V $v -i "$id" -q 1 -t "other/$v" -F "$F" ||
		    return
		mq_pub -q 1 -t "sess/$v/x" -m lost || mq_bad "publish lost"
		mq_pub -q 1 -t "other/$v" -m mark || mq_bad "publish mark"
		mq_wait_msgs "c$v" 1 || return
		mq_expect "c$v" "MSG other/$v [mark] q1"
		{ echo "b$v:"; mq_msgs "b$v"; echo "c$v:"; mq_msgs "c$v"; } \
		    >>"$MQ_OUT"
	done
}

_kicked() {
	grep -q '^Received DISCONNECT (142)' "$MQ_W/$1.out" ||
	    [ "$(grep -c 'received CONNACK' "$MQ_W/$1.out")" -ge 2 ]
}

scen_takeover() {
	for v in 311 5; do
		mq_sub "t$v" -V $v -i "take-$v" -q 1 -t "take/$v" \
		    -F 'MSG %t [%p]' || return
		# The same client id again (here a publisher): the broker
		# closes t's connection, in v5 after DISCONNECT 0x8E (Session
		# taken over), which mosquitto_sub prints before it exits.
		# Without that DISCONNECT (v3.1.1, and Mosquitto 2.0.11 in v5)
		# mosquitto_sub sees the connection drop and reconnects, which
		# shows as a second CONNACK.
		mq_pub -V $v -i "take-$v" -q 1 -t "take/$v" -m from-new ||
		    mq_bad "publish from the second connection"
		if pmq_wait_for 10 _kicked "t$v"; then
			echo "t$v: first connection closed" >>"$MQ_OUT"
		else
			mq_bad "t$v: the first connection was not closed"
		fi
		if [ $v = 5 ] && [ "$MQ_TARGET" != mosquitto ] &&
		    ! grep -q '^Received DISCONNECT (142)' "$MQ_W/t$v.out"; then
			mq_bad "t$v: no DISCONNECT 0x8E (Session taken over)"
		fi
		mq_kill "t$v" TERM
	done
}

mq_scenario will
mq_scenario session
mq_scenario takeover
mq_finish
