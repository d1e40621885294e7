/*
 * test_mqtt_codec.c - unit tests for plugins/mqtt/codec.c: framing, the
 * decoder on good packets of every type and on hand-made malformed ones
 * (remaining length over 4 bytes, reserved flags, invalid UTF-8 and NUL
 * in topics, wildcards in PUBLISH topics, oversized packets, missing
 * packet ids, QoS 3, duplicated or misplaced properties, truncation at
 * every byte), and the encoders (round trip through the decoder where the
 * decoder accepts the packet).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <plexmq/types.h>

#include "../../plugins/mqtt/codec.h"

/* Decode a literal packet; returns the reason (0 when accepted). */
static uint8_t
dec(const void *buf, size_t len, uint8_t version, struct mqtt_packet *p)
{
	struct mqtt_packet tmp;
	uint8_t reason = 0xff;
	int rc = mqtt_decode(buf, len, version, p != NULL ? p : &tmp, &reason);

	if (rc == PMQ_OK) {
		assert_int_equal(reason, 0);
		return 0;
	}
	assert_int_equal(rc, PMQ_ERR_INVAL);
	assert_true(reason >= 0x80);
	return reason;
}

#define DEC(arr, v, p) dec((arr), sizeof(arr), (v), (p))

/* A 3.1.1 CONNECT: clean session, keepalive 60, client id "c1". */
static const uint8_t connect311[] = {
	0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 2, 'c', '1'
};

/* A v5 CONNECT with session expiry 30, receive max 5, a will with delay
 * 2, will topic "w", will payload "x", username "u", password "p". */
static const uint8_t connect5[] = {
	0x10, 41,
	0, 4, 'M', 'Q', 'T', 'T', 5,
	0xc6,          /* username, password, will qos 0, will, clean */
	0, 10,         /* keepalive */
	8, 0x11, 0, 0, 0, 30, 0x21, 0, 5, /* properties */
	0, 2, 'c', '5',
	5, 0x18, 0, 0, 0, 2, /* will properties */
	0, 1, 'w',
	0, 1, 'x',
	0, 1, 'u',
	0, 1, 'p',
};

static void
test_frame(void **state)
{
	uint8_t reason = 0;
	size_t total = 0;
	static const uint8_t five[] = { 0x30, 0x80, 0x80, 0x80, 0x80, 0x01 };
	static const uint8_t four[] = { 0x30, 0xff, 0xff, 0xff, 0x7f };
	static const uint8_t two[] = { 0x30, 0x80, 0x01 };

	(void)state;
	assert_int_equal(mqtt_frame(two, 1, 0, &total, &reason), PMQ_ERR_AGAIN);
	assert_int_equal(mqtt_frame(two, 2, 0, &total, &reason), PMQ_ERR_AGAIN);
	assert_int_equal(mqtt_frame(two, 3, 0, &total, &reason), PMQ_OK);
	assert_int_equal(total, 3 + 128);
	/* The largest remaining length, 268435455, frames. */
	assert_int_equal(mqtt_frame(four, 5, 0, &total, &reason), PMQ_OK);
	assert_int_equal(total, 5 + 268435455u);
	/* Five length bytes: malformed. */
	assert_int_equal(mqtt_frame(five, 6, 0, &total, &reason), PMQ_ERR_INVAL);
	assert_int_equal(reason, MQTT_RC_MALFORMED);
	/* Over max_size: packet too large, known from the header alone. */
	assert_int_equal(mqtt_frame(two, 3, 100, &total, &reason),
	                 PMQ_ERR_INVAL);
	assert_int_equal(reason, MQTT_RC_PACKET_TOO_LARGE);
	assert_int_equal(mqtt_frame(two, 3, 131, &total, &reason), PMQ_OK);
}

static void
test_connect(void **state)
{
	struct mqtt_packet p;

	(void)state;
	assert_int_equal(DEC(connect311, 0, &p), 0);
	assert_int_equal(p.type, MQTT_CONNECT);
	assert_int_equal(p.version, MQTT_V311);
	assert_int_equal(p.keepalive, 60);
	assert_true(p.clean_start);
	assert_int_equal(p.client_id.len, 2);
	assert_memory_equal(p.client_id.p, "c1", 2);

	assert_int_equal(DEC(connect5, 0, &p), 0);
	assert_int_equal(p.version, MQTT_V5);
	assert_int_equal(p.props.session_expiry, 30);
	assert_int_equal(p.props.receive_max, 5);
	assert_true(p.will_flag);
	assert_int_equal(p.will_props.will_delay, 2);
	assert_memory_equal(p.will_topic.p, "w", 1);
	assert_memory_equal(p.username.p, "u", 1);
	assert_memory_equal(p.password.p, "p", 1);
}

static void
test_connect_bad(void **state)
{
	uint8_t b[sizeof connect311];
	struct mqtt_packet p;
	static const uint8_t v31[] = { 0x10, 16, 0, 6, 'M', 'Q', 'I', 's',
	                               'd', 'p', 3, 0x02, 0, 60, 0, 2, 'c',
	                               '1' };
	static const uint8_t v6[] = { 0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 6,
	                              0x02, 0, 60, 0, 2, 'c', '1' };
	static const uint8_t badname[] = { 0x10, 14, 0, 4, 'M', 'Q', 'T', 'X',
	                                   4, 0x02, 0, 60, 0, 2, 'c', '1' };

	(void)state;
	assert_int_equal(DEC(v31, 0, &p), 0);
	assert_int_equal(p.version, MQTT_V31);
	assert_int_equal(DEC(v6, 0, &p), MQTT_RC_UNSUPPORTED_VERSION);
	assert_int_equal(p.proto_level, 6);
	assert_int_equal(DEC(badname, 0, NULL), MQTT_RC_PROTOCOL);
	/* Reserved connect flag. */
	memcpy(b, connect311, sizeof b);
	b[9] |= 0x01;
	assert_int_equal(DEC(b, 0, NULL), MQTT_RC_MALFORMED);
	/* Will QoS without the will flag; will QoS 3. */
	memcpy(b, connect311, sizeof b);
	b[9] = 0x02 | 0x08;
	assert_int_equal(DEC(b, 0, NULL), MQTT_RC_MALFORMED);
	b[9] = 0x02 | 0x04 | 0x18;
	assert_int_equal(DEC(b, 0, NULL), MQTT_RC_MALFORMED);
	/* Password without username in 3.1.1. */
	b[9] = 0x02 | 0x40;
	assert_int_equal(DEC(b, 0, NULL), MQTT_RC_MALFORMED);
	/* Bad flags in the fixed header. */
	memcpy(b, connect311, sizeof b);
	b[0] = 0x11;
	assert_int_equal(DEC(b, 0, NULL), MQTT_RC_MALFORMED);
	/* Trailing garbage (length says one more byte). */
	{
		uint8_t t[sizeof connect311 + 1];

		memcpy(t, connect311, sizeof connect311);
		t[1]++;
		t[sizeof connect311] = 'z';
		assert_int_equal(DEC(t, 0, NULL), MQTT_RC_MALFORMED);
	}
	/* A second CONNECT on a connected session. */
	assert_int_equal(DEC(connect311, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	/* Anything but CONNECT first. */
	{
		static const uint8_t ping[] = { 0xc0, 0 };

		assert_int_equal(DEC(ping, 0, NULL), MQTT_RC_PROTOCOL);
		assert_int_equal(DEC(ping, MQTT_V311, NULL), 0);
	}
}

static void
test_publish(void **state)
{
	struct mqtt_packet p;
	static const uint8_t q0[] = { 0x30, 7, 0, 3, 'a', '/', 'b', 'h', 'i' };
	static const uint8_t q1r[] = { 0x33, 7, 0, 1, 't', 0, 9, 'x', 'y' };
	static const uint8_t q2d5[] = { 0x3c, 9, 0, 1, 't', 0, 7, 2, 0x01, 1,
	                                'z' };

	(void)state;
	assert_int_equal(DEC(q0, MQTT_V311, &p), 0);
	assert_int_equal(p.qos, 0);
	assert_int_equal(p.topic.len, 3);
	assert_int_equal(p.payload.len, 2);
	assert_memory_equal(p.payload.p, "hi", 2);
	assert_int_equal(DEC(q1r, MQTT_V311, &p), 0);
	assert_int_equal(p.qos, 1);
	assert_true(p.retain);
	assert_int_equal(p.pid, 9);
	assert_int_equal(DEC(q2d5, MQTT_V5, &p), 0);
	assert_int_equal(p.qos, 2);
	assert_true(p.dup);
	assert_int_equal(p.pid, 7);
	assert_int_equal(p.props.payload_format, 1);
	assert_int_equal(p.payload.len, 1);
}

static void
test_publish_bad(void **state)
{
	/* QoS 3. */
	static const uint8_t qos3[] = { 0x36, 5, 0, 1, 't', 0, 1 };
	/* DUP on QoS 0. */
	static const uint8_t dup0[] = { 0x38, 3, 0, 1, 't' };
	/* Missing packet id (QoS 1, body ends after the topic). */
	static const uint8_t nopid[] = { 0x32, 3, 0, 1, 't' };
	/* Packet id 0. */
	static const uint8_t pid0[] = { 0x32, 5, 0, 1, 't', 0, 0 };
	/* Wildcards in the topic name. */
	static const uint8_t plus[] = { 0x30, 5, 0, 3, 'a', '/', '+' };
	static const uint8_t hash[] = { 0x30, 4, 0, 1, '#', 0 };
	/* NUL in the topic; invalid UTF-8 (lone continuation, overlong
	 * '/', a surrogate). */
	static const uint8_t nul[] = { 0x30, 5, 0, 3, 'a', 0, 'b' };
	static const uint8_t cont[] = { 0x30, 4, 0, 2, 'a', 0x80 };
	static const uint8_t overlong[] = { 0x30, 4, 0, 2, 0xc0, 0xaf };
	static const uint8_t surrogate[] = { 0x30, 5, 0, 3, 0xed, 0xa0, 0x80 };
	/* Topic length past the packet. */
	static const uint8_t longtopic[] = { 0x30, 4, 0, 9, 'a', 'b' };
	/* Empty topic without an alias. */
	static const uint8_t empty[] = { 0x30, 2, 0, 0 };
	static const uint8_t empty5[] = { 0x30, 3, 0, 0, 0 };
	/* v5: topic alias 0; sub id 0; a property of CONNECT in PUBLISH;
	 * a duplicated content type; an unknown property id; property
	 * length past the packet; payload format 2. */
	static const uint8_t alias0[] = { 0x30, 7, 0, 1, 't', 3, 0x23, 0, 0 };
	static const uint8_t subid0[] = { 0x30, 6, 0, 1, 't', 2, 0x0b, 0 };
	static const uint8_t wrongctx[] = { 0x30, 9, 0, 1, 't', 5, 0x11, 0,
	                                    0, 0, 1 };
	static const uint8_t dupprop[] = { 0x30, 13, 0, 1, 't', 9, 0x03, 0, 1,
	                                   'a', 0x03, 0, 2, 'b', 'c' };
	static const uint8_t unknown[] = { 0x30, 6, 0, 1, 't', 2, 0x7f, 0 };
	static const uint8_t proplen[] = { 0x30, 5, 0, 1, 't', 9, 0x01 };
	static const uint8_t pfi2[] = { 0x30, 6, 0, 1, 't', 2, 0x01, 2 };
	/* A user property's value cut short inside the block. */
	static const uint8_t usercut[] = { 0x30, 12, 0, 1, 't', 8, 0x26, 0, 1,
	                                   'k', 0, 5, 'v', 'v' };

	(void)state;
	assert_int_equal(DEC(qos3, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(dup0, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(nopid, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(pid0, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(plus, MQTT_V311, NULL), MQTT_RC_TOPIC_NAME_INVALID);
	assert_int_equal(DEC(hash, MQTT_V5, NULL), MQTT_RC_TOPIC_NAME_INVALID);
	assert_int_equal(DEC(nul, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(cont, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(overlong, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(surrogate, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(longtopic, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(empty, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(empty5, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(alias0, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(subid0, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(wrongctx, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(dupprop, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(unknown, MQTT_V5, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(proplen, MQTT_V5, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(pfi2, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(usercut, MQTT_V5, NULL), MQTT_RC_MALFORMED);
	/* The same bytes as 3.1.1 have no property block: payload. */
	assert_int_equal(DEC(subid0, MQTT_V311, NULL), 0);
}

static void
test_publish_props(void **state)
{
	struct mqtt_packet p;
	struct mqtt_bin n, v;
	size_t pos = 0;
	/* Topic "t", props: user (k=v), content type "ct", user (a=""),
	 * expiry 7, topic alias 3; payload "P". */
	static const uint8_t pk[] = {
		0x30, 31, 0, 1, 't', 26,
		0x26, 0, 1, 'k', 0, 1, 'v',
		0x03, 0, 2, 'c', 't',
		0x26, 0, 1, 'a', 0, 0,
		0x02, 0, 0, 0, 7,
		0x23, 0, 3,
		'P'
	};

	(void)state;
	assert_int_equal(DEC(pk, MQTT_V5, &p), 0);
	assert_int_equal(p.props.n_user, 2);
	assert_int_equal(p.props.message_expiry, 7);
	assert_int_equal(p.props.topic_alias, 3);
	assert_int_equal(p.props.content_type.len, 2);
	assert_true(mqtt_user_next(&p.props, &pos, &n, &v));
	assert_memory_equal(n.p, "k", 1);
	assert_memory_equal(v.p, "v", 1);
	assert_true(mqtt_user_next(&p.props, &pos, &n, &v));
	assert_memory_equal(n.p, "a", 1);
	assert_int_equal(v.len, 0);
	assert_false(mqtt_user_next(&p.props, &pos, &n, &v));
	assert_int_equal(p.payload.len, 1);
}

static void
test_acks(void **state)
{
	struct mqtt_packet p;
	static const uint8_t puback[] = { 0x40, 2, 0, 5 };
	static const uint8_t puback0[] = { 0x40, 2, 0, 0 };
	static const uint8_t pubrel_badflags[] = { 0x60, 2, 0, 5 };
	static const uint8_t pubrel[] = { 0x62, 2, 0, 5 };
	static const uint8_t pubrec5[] = { 0x50, 3, 0, 5, 0x80 };
	static const uint8_t pubcomp5rs[] = { 0x70, 8, 0, 5, 0x92, 4, 0x1f, 0,
	                                      1, 'x' };
	static const uint8_t puback_long3[] = { 0x40, 3, 0, 5, 0 };
	static const uint8_t short1[] = { 0x40, 1, 0 };

	(void)state;
	assert_int_equal(DEC(puback, MQTT_V311, &p), 0);
	assert_int_equal(p.pid, 5);
	assert_int_equal(DEC(puback0, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(pubrel_badflags, MQTT_V311, NULL),
	                 MQTT_RC_MALFORMED);
	assert_int_equal(DEC(pubrel, MQTT_V5, &p), 0);
	assert_int_equal(DEC(pubrec5, MQTT_V5, &p), 0);
	assert_int_equal(p.reason, 0x80);
	assert_int_equal(DEC(pubcomp5rs, MQTT_V5, &p), 0);
	assert_int_equal(p.props.reason_string.len, 1);
	assert_int_equal(DEC(puback_long3, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(short1, MQTT_V311, NULL), MQTT_RC_MALFORMED);
}

static void
test_subscribe(void **state)
{
	struct mqtt_packet p;
	struct mqtt_bin f;
	size_t pos = 0;
	uint8_t o;
	static const uint8_t sub[] = { 0x82, 12, 0, 3, 0, 3, 'a', '/', '#', 1,
	                               0, 1, '+', 2 };
	static const uint8_t sub5[] = { 0x82, 9, 0, 3, 2, 0x0b, 5, 0, 1, 'x',
	                                0x2d, };
	static const uint8_t badflags[] = { 0x80, 6, 0, 3, 0, 1, 'x', 0 };
	static const uint8_t noentries[] = { 0x82, 2, 0, 3 };
	static const uint8_t qos3[] = { 0x82, 6, 0, 3, 0, 1, 'x', 3 };
	static const uint8_t resv3[] = { 0x82, 6, 0, 3, 0, 1, 'x', 0x04 };
	static const uint8_t resv5[] = { 0x82, 7, 0, 3, 0, 0, 1, 'x', 0x40 };
	static const uint8_t rh3[] = { 0x82, 7, 0, 3, 0, 0, 1, 'x', 0x30 };
	static const uint8_t twoids[] = { 0x82, 11, 0, 3, 4, 0x0b, 1, 0x0b, 2,
	                                  0, 1, 'x', 0 };
	static const uint8_t pid0[] = { 0x82, 6, 0, 0, 0, 1, 'x', 0 };
	static const uint8_t nopts[] = { 0x82, 5, 0, 3, 0, 1, 'x' };
	static const uint8_t unsub[] = { 0xa2, 5, 0, 4, 0, 1, 'x' };
	static const uint8_t unsub_none[] = { 0xa2, 2, 0, 4 };

	(void)state;
	assert_int_equal(DEC(sub, MQTT_V311, &p), 0);
	assert_int_equal(p.n_entries, 2);
	assert_true(mqtt_sub_next(&p, &pos, &f, &o));
	assert_int_equal(f.len, 3);
	assert_int_equal(o, 1);
	assert_true(mqtt_sub_next(&p, &pos, &f, &o));
	assert_int_equal(o, 2);
	assert_false(mqtt_sub_next(&p, &pos, &f, &o));
	/* v5 options: qos 1, no local, retain as published, handling 2. */
	assert_int_equal(DEC(sub5, MQTT_V5, &p), 0);
	assert_int_equal(p.props.sub_id, 5);
	assert_int_equal(DEC(badflags, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(noentries, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(qos3, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(resv3, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(resv5, MQTT_V5, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(rh3, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(twoids, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(pid0, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(nopts, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(unsub, MQTT_V311, &p), 0);
	assert_int_equal(p.n_entries, 1);
	assert_int_equal(DEC(unsub_none, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
}

static void
test_other_types(void **state)
{
	struct mqtt_packet p;
	static const uint8_t ping[] = { 0xc0, 0 };
	static const uint8_t ping_flags[] = { 0xc1, 0 };
	static const uint8_t ping_body[] = { 0xc0, 1, 0 };
	static const uint8_t disc[] = { 0xe0, 0 };
	static const uint8_t disc5[] = { 0xe0, 7, 0x04, 5, 0x11, 0, 0, 0, 9 };
	static const uint8_t disc_bad[] = { 0xe0, 5, 0x00, 3, 0x21, 0, 1 };
	static const uint8_t connack[] = { 0x20, 2, 0, 0 };
	static const uint8_t suback[] = { 0x90, 3, 0, 1, 0 };
	static const uint8_t type0[] = { 0x00, 0 };
	static const uint8_t auth3[] = { 0xf0, 0 };

	(void)state;
	assert_int_equal(DEC(ping, MQTT_V311, &p), 0);
	assert_int_equal(p.type, MQTT_PINGREQ);
	assert_int_equal(DEC(ping_flags, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(ping_body, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(disc, MQTT_V311, NULL), 0);
	assert_int_equal(DEC(disc5, MQTT_V5, &p), 0);
	assert_int_equal(p.reason, 0x04);
	assert_int_equal(p.props.session_expiry, 9);
	/* Receive Maximum does not belong in DISCONNECT. */
	assert_int_equal(DEC(disc_bad, MQTT_V5, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(connack, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(suback, MQTT_V311, NULL), MQTT_RC_PROTOCOL);
	assert_int_equal(DEC(type0, MQTT_V311, NULL), MQTT_RC_MALFORMED);
	assert_int_equal(DEC(auth3, MQTT_V311, NULL), MQTT_RC_MALFORMED);
}

/* Every proper prefix of a good packet, with its length fixed up to
 * claim exactly what is there, must be refused, never overread. */
static void
truncate_all(const uint8_t *pk, size_t len, uint8_t version)
{
	uint8_t buf[128];
	size_t cut;

	assert_true(len <= sizeof buf && pk[1] < 128);
	for (cut = 2; cut < len; cut++) {
		uint8_t *copy = malloc(cut); /* exact size: ASan sees reads */
		struct mqtt_packet p;
		uint8_t reason;

		assert_non_null(copy);
		memcpy(copy, pk, cut);
		copy[1] = (uint8_t)(cut - 2);
		if (mqtt_decode(copy, cut, version, &p, &reason) == PMQ_OK) {
			/* A shorter PUBLISH/ack can be valid; PUBLISH's
			 * payload then simply shrank. */
			assert_true(p.type == MQTT_PUBLISH ||
			            p.type == MQTT_SUBSCRIBE ||
			            p.type == MQTT_PUBACK ||
			            p.type == MQTT_DISCONNECT ||
			            p.type == MQTT_PUBCOMP);
		}
		free(copy);
	}
	(void)buf;
}

static void
test_truncated(void **state)
{
	static const uint8_t sub[] = { 0x82, 12, 0, 3, 0, 3, 'a', '/', '#', 1,
	                               0, 1, '+', 2 };
	static const uint8_t pc[] = { 0x70, 8, 0, 5, 0x92, 4, 0x1f, 0, 1, 'x' };
	struct mqtt_packet p;
	uint8_t reason;
	size_t cut;

	(void)state;
	truncate_all(connect311, sizeof connect311, 0);
	truncate_all(connect5, sizeof connect5, 0);
	truncate_all(sub, sizeof sub, MQTT_V5);
	truncate_all(sub, sizeof sub, MQTT_V311);
	truncate_all(pc, sizeof pc, MQTT_V5);
	/* A CONNECT cut anywhere is never accepted. */
	for (cut = 2; cut < sizeof connect5; cut++) {
		uint8_t *copy = malloc(cut);

		assert_non_null(copy);
		memcpy(copy, connect5, cut);
		copy[1] = (uint8_t)(cut - 2);
		assert_int_equal(mqtt_decode(copy, cut, 0, &p, &reason),
		                 PMQ_ERR_INVAL);
		free(copy);
	}
	/* A buffer shorter than its remaining length says. */
	assert_int_equal(mqtt_decode(connect311, sizeof connect311 - 1, 0, &p,
	                             &reason), PMQ_ERR_INVAL);
}

static void
test_filters(void **state)
{
#define F(s) mqtt_filter_valid((const uint8_t *)(s), strlen(s))
	(void)state;
	assert_true(F("#"));
	assert_true(F("+"));
	assert_true(F("a/+/b"));
	assert_true(F("a/#"));
	assert_true(F("+/+"));
	assert_true(F("/"));
	assert_false(F(""));
	assert_false(F("a#"));
	assert_false(F("a/#/b"));
	assert_false(F("a+"));
	assert_false(F("+a"));
	assert_false(mqtt_filter_valid((const uint8_t *)"a\0b", 3));
#undef F
}

static void
test_encode(void **state)
{
	struct mqtt_buf b, pb;
	struct mqtt_packet p;
	uint8_t reason;
	long off;

	(void)state;
	mqtt_buf_init(&b);
	mqtt_buf_init(&pb);
	/* PUBACK 3.1.1: exactly 4 bytes, decodes back. */
	off = mqtt_enc_ack(&b, MQTT_V311, MQTT_PUBACK, 0x1234, 0, NULL);
	assert_true(off >= 0);
	assert_int_equal(b.len - (size_t)off, 4);
	assert_memory_equal(b.p + off, "\x40\x02\x12\x34", 4);
	/* PUBREL v5 with a reason string: flags 2, decodes back. */
	off = mqtt_enc_ack(&b, MQTT_V5, MQTT_PUBREL, 7, 0x92, "gone");
	assert_true(off >= 0);
	assert_int_equal(b.p[off], 0x62);
	assert_int_equal(mqtt_decode(b.p + off, b.len - (size_t)off, MQTT_V5,
	                             &p, &reason), PMQ_OK);
	assert_int_equal(p.pid, 7);
	assert_int_equal(p.reason, 0x92);
	assert_int_equal(p.props.reason_string.len, 4);
	/* DISCONNECT v5 0x8E; 3.1.1 has no reason. */
	off = mqtt_enc_disconnect(&b, MQTT_V5, MQTT_RC_SESSION_TAKEN_OVER,
	                          NULL);
	assert_memory_equal(b.p + off, "\xe0\x01\x8e", 3);
	off = mqtt_enc_disconnect(&b, MQTT_V311, MQTT_RC_PROTOCOL, "x");
	assert_int_equal(b.len - (size_t)off, 2);
	/* A PUBLISH with properties and a 200-byte payload: the two-byte
	 * remaining length is placed right in front of the body. */
	mqtt_buf_begin(&b);
	mqtt_put_str(&b, "a/b", 3);
	mqtt_put_u16(&b, 3);
	mqtt_prop_pair(&pb, "k", 1, "v", 1);
	mqtt_prop_u32(&pb, MQTT_P_MESSAGE_EXPIRY, 5);
	mqtt_prop_varint(&pb, MQTT_P_SUB_ID, 300);
	mqtt_put_props(&b, &pb);
	{
		uint8_t payload[200];
		uint8_t *whole;
		size_t hl;

		memset(payload, 'x', sizeof payload);
		off = mqtt_buf_finish(&b, 0x32, sizeof payload);
		assert_true(off >= 0);
		hl = b.len - (size_t)off;
		whole = malloc(hl + sizeof payload);
		assert_non_null(whole);
		memcpy(whole, b.p + off, hl);
		memcpy(whole + hl, payload, sizeof payload);
		/* Decoded as a client would (sub ids allowed from a
		 * server): the codec accepts it. */
		assert_int_equal(mqtt_decode(whole, hl + sizeof payload,
		                             MQTT_V5, &p, &reason), PMQ_OK);
		assert_int_equal(p.pid, 3);
		assert_int_equal(p.props.sub_id, 300);
		assert_int_equal(p.props.message_expiry, 5);
		assert_int_equal(p.props.n_user, 1);
		assert_int_equal(p.payload.len, 200);
		free(whole);
	}
	/* Varint sizes at the boundaries. */
	assert_int_equal(mqtt_varint_size(127), 1);
	assert_int_equal(mqtt_varint_size(128), 2);
	assert_int_equal(mqtt_varint_size(16383), 2);
	assert_int_equal(mqtt_varint_size(16384), 3);
	assert_int_equal(mqtt_varint_size(2097152), 4);
	/* Too large to frame. */
	mqtt_buf_begin(&b);
	assert_true(mqtt_buf_finish(&b, 0x30, MQTT_MAX_REMAINING + 1u) < 0);
	mqtt_buf_free(&b);
	mqtt_buf_free(&pb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame),
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_connect_bad),
		cmocka_unit_test(test_publish),
		cmocka_unit_test(test_publish_bad),
		cmocka_unit_test(test_publish_props),
		cmocka_unit_test(test_acks),
		cmocka_unit_test(test_subscribe),
		cmocka_unit_test(test_other_types),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_encode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
