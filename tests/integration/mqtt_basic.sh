#!/bin/sh
# mqtt_basic.sh - MQTT 3.1.1 and 5.0 basics with the real Mosquitto clients
# (mosquitto_pub/mosquitto_sub), the same scenario run against a private
# plexmqd and a private Mosquitto 2.0 with the deliveries compared
# (tests/integration/mqtt_lib.sh):
#   qos       QoS 0/1/2 published x QoS 0/1/2 subscribed, v3.1.1 and v5:
#             granted QoS = min(published, subscribed), full ack flows
#   wildcards `+`, `#` (also matching the parent level), `$` topics not
#             matched by first-level wildcards, overlapping subscriptions
#             giving one delivery
#   retained  set, replace, clear with an empty payload (-r -n), the retain
#             flag on subscribe and not on live delivery, QoS capping
#   big       a 256 KiB payload, live and retained
#   fanout    20 concurrent subscribers each receiving every message in order
. "$top_srcdir/tests/integration/lib.sh"
. "$top_srcdir/tests/integration/mqtt_lib.sh"
mq_init mqtt_basic

min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

scen_qos() {
	for v in 311 5; do
		for q in 0 1 2; do
			mq_sub "s$v$q" -V "$v" -q "$q" -t 'qos/#' \
			    -F 'MSG %t %p %q' || return
		done
	done
	for v in 311 5; do
		for q in 0 1 2; do
			mq_pub -V "$v" -q "$q" -t "qos/$v/$q" -m "m$v$q" ||
			    mq_bad "mosquitto_pub -V $v -q $q failed"
		done
	done
	# The publisher's side of the flows.
	for w in 'received PUBACK:2' 'received PUBREC:2' \
	    'received PUBCOMP:2' 'sending PUBREL:2'; do
		n=$(grep -c "${w%:*}" "$MQ_W/pub.out")
		[ "$n" -eq "${w#*:}" ] ||
		    mq_bad "publisher: $n x '${w%:*}', expected ${w#*:}"
	done
	for v in 311 5; do
		for q in 0 1 2; do
			mq_wait_msgs "s$v$q" 6 || continue
			exp=
			for pv in 311 5; do
				for pq in 0 1 2; do
					exp="${exp}MSG qos/$pv/$pq m$pv$pq $(min "$pq" "$q")
"
				done
			done
			# Six publishers: only each one's own order is defined.
			printf '%s' "$exp" | sort >"$MQ_W/exp"
			mq_msgs "s$v$q" | sort >"$MQ_W/got"
			cmp -s "$MQ_W/exp" "$MQ_W/got" ||
			    mq_bad "s$v$q: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
			{ echo "s$v$q:"; cat "$MQ_W/got"; } >>"$MQ_OUT"
			# The subscriber's side: QoS 1 deliveries are acked,
			# QoS 2 ones go through PUBREC/PUBREL/PUBCOMP.
			n1=0 n2=0
			[ "$q" -ge 1 ] && n1=2 && n2=2
			[ "$q" -eq 1 ] && n1=4 && n2=0
			pmq_wait_for 5 _count_is "s$v$q" 'sending PUBACK' $n1 ||
			    mq_bad "s$v$q: PUBACKs sent: $(grep -c 'sending PUBACK' "$MQ_W/s$v$q.out"), expected $n1"
			pmq_wait_for 5 _count_is "s$v$q" 'sending PUBCOMP' $n2 ||
			    mq_bad "s$v$q: PUBCOMPs sent: $(grep -c 'sending PUBCOMP' "$MQ_W/s$v$q.out"), expected $n2"
		done
	done
}

_count_is() {
	[ "$(grep -c "$2" "$MQ_W/$1.out")" -eq "$3" ]
}

scen_wildcards() {
	# Every subscriber also subscribes to "end" (w5 through "#" as well:
	# overlapping subscriptions give one delivery); "end" is published
	# last with QoS 1, so once it arrived nothing else is on its way.
	F='MSG %t %p'
	mq_sub w1 -q 1 -t 'w/+/temp' -t end -F "$F" &&
	mq_sub w2 -q 1 -t 'w/#' -t end -F "$F" &&
	mq_sub w3 -q 1 -t 'w/a/#' -t end -F "$F" &&
	mq_sub w4 -q 1 -t '+/+' -t end -F "$F" &&
	mq_sub w5 -q 1 -t '#' -t end -F "$F" &&
	mq_sub w6 -q 1 -t '$w/#' -t end -F "$F" &&
	mq_sub w7 -q 1 -V 5 -t '+/+/temp' -t end -F "$F" || return
	for t in w/kitchen/temp w/kitchen/hum w/a w/a/b/c w/x/y/temp w \
	    '$w/x' end; do
		mq_pub -q 1 -t "$t" -m "p:$t" || mq_bad "publish to $t failed"
	done
	for s in w1 w2 w3 w4 w5 w6 w7; do
		pmq_wait_for 10 grep -q '^MSG end ' "$MQ_W/$s.out" ||
		    mq_bad "$s: no 'end'"
	done
	mq_expect w1 'MSG w/kitchen/temp p:w/kitchen/temp
MSG end p:end'
	mq_expect w2 'MSG w/kitchen/temp p:w/kitchen/temp
MSG w/kitchen/hum p:w/kitchen/hum
MSG w/a p:w/a
MSG w/a/b/c p:w/a/b/c
MSG w/x/y/temp p:w/x/y/temp
MSG w p:w
MSG end p:end'
	mq_expect w3 'MSG w/a p:w/a
MSG w/a/b/c p:w/a/b/c
MSG end p:end'
	mq_expect w4 'MSG w/a p:w/a
MSG end p:end'
	mq_expect w5 'MSG w/kitchen/temp p:w/kitchen/temp
MSG w/kitchen/hum p:w/kitchen/hum
MSG w/a p:w/a
MSG w/a/b/c p:w/a/b/c
MSG w/x/y/temp p:w/x/y/temp
MSG w p:w
MSG end p:end'
	mq_expect w6 'MSG $w/x p:$w/x
MSG end p:end'
	mq_expect w7 'MSG w/kitchen/temp p:w/kitchen/temp
MSG end p:end'
	for s in w1 w2 w3 w4 w5 w6 w7; do
		echo "$s:"
		mq_msgs $s
	done >>"$MQ_OUT"
}

scen_retained() {
	F='MSG %t [%p] r%r q%q'
	mq_pub -q 1 -r -t r/a -m v1 || mq_bad "retain r/a"
	mq_pub -q 0 -r -t r/b -m b1 || mq_bad "retain r/b"
	mq_pub -q 1 -r -t r/c -m c1 || mq_bad "retain r/c"
	# A new subscriber gets every retained message, retain flag set,
	# at min(message QoS, subscription QoS).
	mq_sub r1 -q 1 -t 'r/#' -F "$F" || return
	mq_wait_msgs r1 3 || return
	mq_msgs r1 | sort >"$MQ_W/got"
	printf '%s\n' 'MSG r/a [v1] r1 q1' 'MSG r/b [b1] r1 q0' \
	    'MSG r/c [c1] r1 q1' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_W/got" ||
	    mq_bad "r1 retained: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
	{ echo "r1 at subscribe:"; cat "$MQ_W/got"; } >>"$MQ_OUT"
	# Replace r/a, clear r/b (empty retained message), keep r/c: live
	# subscribers get them as ordinary messages (retain flag 0), the
	# empty one included.
	mq_pub -q 1 -r -t r/a -m v2 || mq_bad "replace r/a"
	mq_pub -q 1 -r -n -t r/b || mq_bad "clear r/b"
	mq_pub -q 1 -t r/end -m end || mq_bad "r/end"
	mq_wait_msgs r1 6 || return
	mq_msgs r1 | tail -n 3 >"$MQ_W/got"
	printf '%s\n' 'MSG r/a [v2] r0 q1' 'MSG r/b [] r0 q1' \
	    'MSG r/end [end] r0 q1' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_W/got" ||
	    mq_bad "r1 live: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
	{ echo "r1 live:"; cat "$MQ_W/got"; } >>"$MQ_OUT"
	# New subscribers (v3.1.1 at QoS 0, v5 at QoS 2) see v2 and c1 but
	# nothing of r/b; "mark" is published after their SUBACK, so it comes
	# after every retained message.
	for s in "r2 -V 311 -q 0" "r3 -V 5 -q 2"; do
		set -- $s
		n=$1
		shift
		mq_sub "$n" "$@" -t 'r/+' -t mark -F "$F" || return
	done
	mq_pub -q 1 -t mark -m m || mq_bad "mark"
	for n in r2 r3; do
		pmq_wait_for 10 grep -q '^MSG mark ' "$MQ_W/$n.out" ||
		    mq_bad "$n: no mark"
	done
	mq_msgs r2 | sort >"$MQ_W/got"
	printf '%s\n' 'MSG mark [m] r0 q0' 'MSG r/a [v2] r1 q0' \
	    'MSG r/c [c1] r1 q0' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_W/got" ||
	    mq_bad "r2: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
	{ echo "r2:"; cat "$MQ_W/got"; } >>"$MQ_OUT"
	mq_msgs r3 | sort >"$MQ_W/got"
	printf '%s\n' 'MSG mark [m] r0 q1' 'MSG r/a [v2] r1 q1' \
	    'MSG r/c [c1] r1 q1' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_W/got" ||
	    mq_bad "r3: $(diff "$MQ_W/exp" "$MQ_W/got" | tr '\n' ' ')"
	{ echo "r3:"; cat "$MQ_W/got"; } >>"$MQ_OUT"
	# Clearing a topic that has no retained message is harmless; after
	# clearing every topic a subscriber gets only the mark.
	mq_pub -r -n -t r/none || mq_bad "clear r/none"
	mq_pub -q 1 -r -n -t r/a || mq_bad "clear r/a"
	mq_pub -q 1 -r -n -t r/c || mq_bad "clear r/c"
	mq_sub r4 -q 1 -t 'r/#' -t mark -F "$F" || return
	mq_pub -q 1 -t mark -m m2 || mq_bad "mark 2"
	pmq_wait_for 10 grep -q '^MSG mark ' "$MQ_W/r4.out" ||
	    mq_bad "r4: no mark"
	mq_expect r4 'MSG mark [m2] r0 q1'
	{ echo "r4:"; mq_msgs r4; } >>"$MQ_OUT"
}

scen_big() {
	# 256 KiB of random bytes, compared in hex (%x) because mosquitto_sub
	# prints one line per message.
	head -c 262144 /dev/urandom >"$MQ_W/big.bin"
	want=$(od -An -v -tx1 "$MQ_W/big.bin" | tr -d ' \n')
	mq_sub b1 -q 1 -t 'big/#' -F 'MSG %t %l %q %x' || return
	mq_sub b2 -V 5 -q 2 -t 'big/#' -F 'MSG %t %l %q %x' || return
	mq_pub -q 1 -t big/one -f "$MQ_W/big.bin" || mq_bad "publish big q1"
	mq_pub -V 5 -q 2 -r -t big/ret -f "$MQ_W/big.bin" ||
	    mq_bad "publish big q2 retained"
	for s in b1 b2; do
		mq_wait_msgs $s 2 20 || continue
		mq_msgs $s | while read -r _ t l q x; do
			[ "$x" = "$want" ] && ok=same || ok=DIFFERENT
			echo "$s $t $l q$q $ok"
		done >>"$MQ_OUT"
	done
	# The retained copy, to a new subscriber.
	mq_sub b3 -q 2 -t big/ret -F 'MSG %t %l %q %x' || return
	mq_wait_msgs b3 1 20 &&
	mq_msgs b3 | while read -r _ t l q x; do
		[ "$x" = "$want" ] && ok=same || ok=DIFFERENT
		echo "b3 retained $t $l q$q $ok"
	done >>"$MQ_OUT"
	printf '%s\n' 'b1 big/one 262144 q1 same' 'b1 big/ret 262144 q1 same' \
	    'b2 big/one 262144 q1 same' 'b2 big/ret 262144 q2 same' \
	    'b3 retained big/ret 262144 q2 same' >"$MQ_W/exp"
	cmp -s "$MQ_W/exp" "$MQ_OUT" ||
	    mq_bad "big payloads: $(diff "$MQ_W/exp" "$MQ_OUT" | tr '\n' ' ')"
}

scen_fanout() {
	i=1
	while [ $i -le 20 ]; do
		v=311
		[ $((i % 2)) -eq 0 ] && v=5
		mq_sub_nowait "f$i" -V $v -q 1 -t 'fan/#' -F 'MSG %t %p %q'
		i=$((i + 1))
	done
	i=1
	while [ $i -le 20 ]; do
		pmq_wait_for 10 grep -q '^Subscribed (mid' "$MQ_W/f$i.out" ||
		    { mq_bad "f$i: no SUBACK"; return; }
		i=$((i + 1))
	done
	# Ten messages over one connection (-l: one message per line), so
	# every subscriber must see them in this order.
	seq 1 10 | sed 's/^/msg-/' >"$MQ_W/lines"
	mq_pub -q 1 -t fan/out -l <"$MQ_W/lines" || mq_bad "publish -l"
	exp=$(sed 's|^|MSG fan/out |; s|$| 1|' "$MQ_W/lines")
	i=1
	good=0
	while [ $i -le 20 ]; do
		mq_wait_msgs "f$i" 10 && mq_expect "f$i" "$exp" &&
		    good=$((good + 1))
		i=$((i + 1))
	done
	echo "subscribers with all 10 messages in order: $good of 20" >>"$MQ_OUT"
}

mq_scenario qos
mq_scenario wildcards
mq_scenario retained
mq_scenario big
mq_scenario fanout
mq_finish
