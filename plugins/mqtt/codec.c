/*
 * codec.c - MQTT packet framing, strict decoding and encoding (codec.h).
 * Pure functions over caller buffers: no I/O, no globals, no host calls,
 * so malformed input is exercised by tests/unit/test_mqtt_codec.c and
 * tests/fuzz/fuzz_mqtt.c without a daemon.
 *
 * Every read is bounds-checked against the packet's end through struct
 * rd; a failed read sets a sticky reason code (0x81 malformed unless a more
 * precise one applies), so decoders read field after field and check once.
 */
#include <stdlib.h>
#include <string.h>

#include <plexmq/types.h>

#include "codec.h"

/* A bounded reader over one packet. */
struct rd {
	const uint8_t *p;
	size_t pos;
	size_t end;
	uint8_t reason; /* 0 while every read succeeded */
};

static void
rd_fail(struct rd *r, uint8_t reason)
{
	if (r->reason == 0)
		r->reason = reason;
	r->pos = r->end; /* no further reads succeed */
}

static size_t
rd_left(const struct rd *r)
{
	return r->reason != 0 ? 0 : r->end - r->pos;
}

static uint8_t
rd_u8(struct rd *r)
{
	if (rd_left(r) < 1) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return 0;
	}
	return r->p[r->pos++];
}

static uint16_t
rd_u16(struct rd *r)
{
	uint16_t v;

	if (rd_left(r) < 2) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return 0;
	}
	v = (uint16_t)((r->p[r->pos] << 8) | r->p[r->pos + 1]);
	r->pos += 2;
	return v;
}

static uint32_t
rd_u32(struct rd *r)
{
	uint32_t v;

	if (rd_left(r) < 4) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return 0;
	}
	v = ((uint32_t)r->p[r->pos] << 24) | ((uint32_t)r->p[r->pos + 1] << 16) |
	    ((uint32_t)r->p[r->pos + 2] << 8) | r->p[r->pos + 3];
	r->pos += 4;
	return v;
}

/* Variable byte integer: at most 4 bytes (1.5.5). */
static uint32_t
rd_varint(struct rd *r)
{
	uint32_t v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		uint8_t b = rd_u8(r);

		if (r->reason != 0)
			return 0;
		v |= (uint32_t)(b & 0x7f) << (7 * i);
		if ((b & 0x80) == 0)
			return v;
	}
	rd_fail(r, MQTT_RC_MALFORMED);
	return 0;
}

static struct mqtt_bin
rd_bin(struct rd *r)
{
	struct mqtt_bin b = { NULL, 0 };
	uint16_t n = rd_u16(r);

	if (r->reason != 0)
		return b;
	if (rd_left(r) < n) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return b;
	}
	b.p = r->p + r->pos;
	b.len = n;
	r->pos += n;
	return b;
}

/* A UTF-8 string: invalid encoding is a malformed packet (1.5.4). */
static struct mqtt_bin
rd_str(struct rd *r)
{
	struct mqtt_bin b = rd_bin(r);

	if (r->reason == 0 && !mqtt_utf8_valid(b.p, b.len))
		rd_fail(r, MQTT_RC_MALFORMED);
	return b;
}

int
mqtt_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n, k;
		uint32_t cp, min;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 1, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 2, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			n = 3, cp = c & 0x07, min = 0x10000;
		else
			return 0;
		if (len - i - 1 < n)
			return 0;
		for (k = 1; k <= n; k++) {
			unsigned cc = s[i + k];

			if ((cc & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (cc & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

int
mqtt_filter_valid(const uint8_t *s, size_t len)
{
	size_t i;

	if (len == 0 || !mqtt_utf8_valid(s, len))
		return 0;
	for (i = 0; i < len; i++) {
		int start = (i == 0 || s[i - 1] == '/');
		int end = (i + 1 == len || s[i + 1] == '/');

		if (s[i] == '+' && (!start || !end))
			return 0;
		if (s[i] == '#' && (!start || i + 1 != len))
			return 0;
	}
	return 1;
}

int
mqtt_frame(const uint8_t *buf, size_t avail, uint32_t max_size,
           size_t *total, uint8_t *reason)
{
	uint32_t rem = 0;
	size_t i;

	for (i = 1; i <= 4; i++) {
		if (avail <= i)
			return PMQ_ERR_AGAIN;
		rem |= (uint32_t)(buf[i] & 0x7f) << (7 * (i - 1));
		if ((buf[i] & 0x80) == 0)
			break;
	}
	if (i > 4) {
		*reason = MQTT_RC_MALFORMED;
		return PMQ_ERR_INVAL;
	}
	*total = 1 + i + (size_t)rem;
	if (max_size != 0 && *total > max_size) {
		*reason = MQTT_RC_PACKET_TOO_LARGE;
		return PMQ_ERR_INVAL;
	}
	return PMQ_OK;
}

/* ---- properties ---- */

/* Property value types. */
enum { PT_BYTE = 1, PT_U16, PT_U32, PT_VARINT, PT_STR, PT_BIN, PT_PAIR };

/* Contexts a property may appear in: a bit per packet type, and bit 0 for
 * a will's properties in CONNECT. */
#define CTX_WILL (1u << 0)
#define CTX(t) (1u << (t))

struct prop_def {
	uint8_t type;
	uint16_t ctx;
};

static const struct prop_def prop_defs[0x2b] = {
	[MQTT_P_PAYLOAD_FORMAT] = { PT_BYTE, CTX(MQTT_PUBLISH) | CTX_WILL },
	[MQTT_P_MESSAGE_EXPIRY] = { PT_U32, CTX(MQTT_PUBLISH) | CTX_WILL },
	[MQTT_P_CONTENT_TYPE] = { PT_STR, CTX(MQTT_PUBLISH) | CTX_WILL },
	[MQTT_P_RESPONSE_TOPIC] = { PT_STR, CTX(MQTT_PUBLISH) | CTX_WILL },
	[MQTT_P_CORRELATION_DATA] = { PT_BIN, CTX(MQTT_PUBLISH) | CTX_WILL },
	[MQTT_P_SUB_ID] = { PT_VARINT, CTX(MQTT_PUBLISH) | CTX(MQTT_SUBSCRIBE) },
	[MQTT_P_SESSION_EXPIRY] = { PT_U32, CTX(MQTT_CONNECT) |
	                                        CTX(MQTT_CONNACK) |
	                                        CTX(MQTT_DISCONNECT) },
	[MQTT_P_ASSIGNED_CLIENT_ID] = { PT_STR, CTX(MQTT_CONNACK) },
	[MQTT_P_SERVER_KEEPALIVE] = { PT_U16, CTX(MQTT_CONNACK) },
	[MQTT_P_AUTH_METHOD] = { PT_STR, CTX(MQTT_CONNECT) | CTX(MQTT_CONNACK) |
	                                     CTX(MQTT_AUTH) },
	[MQTT_P_AUTH_DATA] = { PT_BIN, CTX(MQTT_CONNECT) | CTX(MQTT_CONNACK) |
	                                   CTX(MQTT_AUTH) },
	[MQTT_P_REQUEST_PROBLEM_INFO] = { PT_BYTE, CTX(MQTT_CONNECT) },
	[MQTT_P_WILL_DELAY] = { PT_U32, CTX_WILL },
	[MQTT_P_REQUEST_RESPONSE_INFO] = { PT_BYTE, CTX(MQTT_CONNECT) },
	[MQTT_P_RESPONSE_INFO] = { PT_STR, CTX(MQTT_CONNACK) },
	[MQTT_P_SERVER_REFERENCE] = { PT_STR, CTX(MQTT_CONNACK) |
	                                          CTX(MQTT_DISCONNECT) },
	[MQTT_P_REASON_STRING] = { PT_STR, CTX(MQTT_CONNACK) | CTX(MQTT_PUBACK) |
	                                       CTX(MQTT_PUBREC) | CTX(MQTT_PUBREL) |
	                                       CTX(MQTT_PUBCOMP) |
	                                       CTX(MQTT_SUBACK) |
	                                       CTX(MQTT_UNSUBACK) |
	                                       CTX(MQTT_DISCONNECT) |
	                                       CTX(MQTT_AUTH) },
	[MQTT_P_RECEIVE_MAX] = { PT_U16, CTX(MQTT_CONNECT) | CTX(MQTT_CONNACK) },
	[MQTT_P_TOPIC_ALIAS_MAX] = { PT_U16, CTX(MQTT_CONNECT) |
	                                         CTX(MQTT_CONNACK) },
	[MQTT_P_TOPIC_ALIAS] = { PT_U16, CTX(MQTT_PUBLISH) },
	[MQTT_P_MAX_QOS] = { PT_BYTE, CTX(MQTT_CONNACK) },
	[MQTT_P_RETAIN_AVAILABLE] = { PT_BYTE, CTX(MQTT_CONNACK) },
	[MQTT_P_USER_PROPERTY] = { PT_PAIR, 0xffff },
	[MQTT_P_MAX_PACKET_SIZE] = { PT_U32, CTX(MQTT_CONNECT) |
	                                         CTX(MQTT_CONNACK) },
	[MQTT_P_WILDCARD_SUB_AVAILABLE] = { PT_BYTE, CTX(MQTT_CONNACK) },
	[MQTT_P_SUB_ID_AVAILABLE] = { PT_BYTE, CTX(MQTT_CONNACK) },
	[MQTT_P_SHARED_SUB_AVAILABLE] = { PT_BYTE, CTX(MQTT_CONNACK) },
};

/* Read a property block for context ctx into *pr.  Unknown identifiers
 * are malformed; a known one in the wrong packet, a duplicate or a value
 * out of range is a protocol error. */
static void
rd_props(struct rd *r, unsigned ctx, struct mqtt_props *pr)
{
	uint32_t len;
	size_t end, saved_end;

	memset(pr, 0, sizeof *pr);
	pr->request_problem_info = 1;
	len = rd_varint(r);
	if (r->reason != 0)
		return;
	if (len > rd_left(r)) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return;
	}
	end = r->pos + len;
	pr->raw.p = r->p + r->pos;
	pr->raw.len = len;
	saved_end = r->end;
	r->end = end; /* a value may not run past the block */
	while (r->reason == 0 && r->pos < end) {
		uint32_t id = rd_varint(r);
		const struct prop_def *d;
		uint32_t v = 0;
		struct mqtt_bin s = { NULL, 0 };

		if (r->reason != 0)
			break;
		if (id >= sizeof prop_defs / sizeof prop_defs[0] ||
		    prop_defs[id].type == 0) {
			rd_fail(r, MQTT_RC_MALFORMED);
			break;
		}
		d = &prop_defs[id];
		switch (d->type) {
		case PT_BYTE: v = rd_u8(r); break;
		case PT_U16: v = rd_u16(r); break;
		case PT_U32: v = rd_u32(r); break;
		case PT_VARINT: v = rd_varint(r); break;
		case PT_STR: s = rd_str(r); break;
		case PT_BIN: s = rd_bin(r); break;
		case PT_PAIR:
			rd_str(r);
			rd_str(r);
			break;
		}
		if (r->reason != 0)
			break;
		if (!(d->ctx & ctx)) {
			rd_fail(r, MQTT_RC_PROTOCOL);
			break;
		}
		if (id == MQTT_P_USER_PROPERTY) {
			pr->n_user++;
			continue;
		}
		if (id == MQTT_P_SUB_ID) {
			/* Only a server's PUBLISH may carry several. */
			if (v == 0 || (MQTT_HAS_PROP(pr, id) &&
			               !(ctx & CTX(MQTT_PUBLISH)))) {
				rd_fail(r, MQTT_RC_PROTOCOL);
				break;
			}
			if (pr->n_sub_ids++ == 0)
				pr->sub_id = v;
			pr->seen |= (uint64_t)1 << id;
			continue;
		}
		if (MQTT_HAS_PROP(pr, id)) {
			rd_fail(r, MQTT_RC_PROTOCOL);
			break;
		}
		pr->seen |= (uint64_t)1 << id;
		switch (id) {
		case MQTT_P_PAYLOAD_FORMAT: pr->payload_format = (uint8_t)v; break;
		case MQTT_P_REQUEST_PROBLEM_INFO:
			pr->request_problem_info = (uint8_t)v;
			break;
		case MQTT_P_REQUEST_RESPONSE_INFO:
			pr->request_response_info = (uint8_t)v;
			break;
		case MQTT_P_MAX_QOS: pr->max_qos = (uint8_t)v; break;
		case MQTT_P_RETAIN_AVAILABLE: pr->retain_available = (uint8_t)v; break;
		case MQTT_P_SERVER_KEEPALIVE: pr->server_keepalive = (uint16_t)v; break;
		case MQTT_P_RECEIVE_MAX: pr->receive_max = (uint16_t)v; break;
		case MQTT_P_TOPIC_ALIAS_MAX: pr->topic_alias_max = (uint16_t)v; break;
		case MQTT_P_TOPIC_ALIAS: pr->topic_alias = (uint16_t)v; break;
		case MQTT_P_MESSAGE_EXPIRY: pr->message_expiry = v; break;
		case MQTT_P_SESSION_EXPIRY: pr->session_expiry = v; break;
		case MQTT_P_WILL_DELAY: pr->will_delay = v; break;
		case MQTT_P_MAX_PACKET_SIZE: pr->max_packet_size = v; break;
		case MQTT_P_CONTENT_TYPE: pr->content_type = s; break;
		case MQTT_P_RESPONSE_TOPIC: pr->response_topic = s; break;
		case MQTT_P_CORRELATION_DATA: pr->correlation_data = s; break;
		case MQTT_P_ASSIGNED_CLIENT_ID: pr->assigned_client_id = s; break;
		case MQTT_P_AUTH_METHOD: pr->auth_method = s; break;
		case MQTT_P_AUTH_DATA: pr->auth_data = s; break;
		case MQTT_P_RESPONSE_INFO: pr->response_info = s; break;
		case MQTT_P_SERVER_REFERENCE: pr->server_reference = s; break;
		case MQTT_P_REASON_STRING: pr->reason_string = s; break;
		default: break;
		}
		/* Value ranges (3.1.2.11, 3.3.2.3). */
		if ((d->type == PT_BYTE && v > 1 && id != MQTT_P_MAX_QOS) ||
		    (id == MQTT_P_MAX_QOS && v > 1) ||
		    ((id == MQTT_P_RECEIVE_MAX || id == MQTT_P_MAX_PACKET_SIZE ||
		      id == MQTT_P_TOPIC_ALIAS) && v == 0))
			rd_fail(r, MQTT_RC_PROTOCOL);
	}
	r->end = saved_end;
	if (r->reason == 0)
		r->pos = end;
	/* A response topic is a topic name: no wildcards (3.3.2.3.5). */
	if (r->reason == 0 && MQTT_HAS_PROP(pr, MQTT_P_RESPONSE_TOPIC) &&
	    (pr->response_topic.len == 0 ||
	     memchr(pr->response_topic.p, '+', pr->response_topic.len) ||
	     memchr(pr->response_topic.p, '#', pr->response_topic.len)))
		rd_fail(r, MQTT_RC_PROTOCOL);
}

int
mqtt_user_next(const struct mqtt_props *pr, size_t *pos,
               struct mqtt_bin *name, struct mqtt_bin *value)
{
	struct rd r = { pr->raw.p, *pos, pr->raw.len, 0 };

	while (r.pos < r.end) {
		uint32_t id = rd_varint(&r);
		const struct prop_def *d;

		if (r.reason != 0 || id >= sizeof prop_defs / sizeof prop_defs[0])
			return 0;
		d = &prop_defs[id];
		switch (d->type) {
		case PT_BYTE: rd_u8(&r); break;
		case PT_U16: rd_u16(&r); break;
		case PT_U32: rd_u32(&r); break;
		case PT_VARINT: rd_varint(&r); break;
		case PT_STR:
		case PT_BIN: rd_bin(&r); break;
		case PT_PAIR:
			*name = rd_bin(&r);
			*value = rd_bin(&r);
			if (r.reason != 0)
				return 0;
			*pos = r.pos;
			return 1;
		default: return 0;
		}
		if (r.reason != 0)
			return 0;
	}
	*pos = r.pos;
	return 0;
}

/* ---- packets ---- */

static void
dec_connect(struct rd *r, struct mqtt_packet *p)
{
	struct mqtt_bin name = rd_bin(r);
	uint8_t fl;

	p->proto_level = rd_u8(r);
	if (r->reason != 0)
		return;
	if (name.len == 4 && memcmp(name.p, "MQTT", 4) == 0) {
		if (p->proto_level != MQTT_V311 && p->proto_level != MQTT_V5) {
			rd_fail(r, MQTT_RC_UNSUPPORTED_VERSION);
			return;
		}
	} else if (name.len == 6 && memcmp(name.p, "MQIsdp", 6) == 0) {
		if (p->proto_level != MQTT_V31) {
			rd_fail(r, MQTT_RC_UNSUPPORTED_VERSION);
			return;
		}
	} else {
		/* 3.1.2.1: not MQTT at all; close without CONNACK. */
		rd_fail(r, MQTT_RC_PROTOCOL);
		return;
	}
	p->version = p->proto_level;
	fl = rd_u8(r);
	p->keepalive = rd_u16(r);
	if (r->reason != 0)
		return;
	if (fl & 0x01) { /* reserved (3.1.2.3) */
		rd_fail(r, MQTT_RC_MALFORMED);
		return;
	}
	p->clean_start = (fl >> 1) & 1;
	p->will_flag = (fl >> 2) & 1;
	p->will_qos = (fl >> 3) & 3;
	p->will_retain = (fl >> 5) & 1;
	p->has_password = (fl >> 6) & 1;
	p->has_username = (fl >> 7) & 1;
	if (p->will_qos == 3 ||
	    (!p->will_flag && (p->will_qos != 0 || p->will_retain))) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return;
	}
	if (p->version == MQTT_V311 && p->has_password && !p->has_username) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return;
	}
	if (p->version == MQTT_V5)
		rd_props(r, CTX(MQTT_CONNECT), &p->props);
	p->client_id = rd_str(r);
	if (p->will_flag) {
		if (p->version == MQTT_V5)
			rd_props(r, CTX_WILL, &p->will_props);
		p->will_topic = rd_str(r);
		p->will_payload = rd_bin(r);
		if (r->reason == 0 &&
		    (p->will_topic.len == 0 ||
		     memchr(p->will_topic.p, '+', p->will_topic.len) ||
		     memchr(p->will_topic.p, '#', p->will_topic.len)))
			rd_fail(r, MQTT_RC_TOPIC_NAME_INVALID);
	}
	if (p->has_username)
		p->username = rd_str(r);
	if (p->has_password)
		p->password = rd_bin(r);
}

static void
dec_publish(struct rd *r, struct mqtt_packet *p)
{
	p->dup = (p->flags >> 3) & 1;
	p->qos = (p->flags >> 1) & 3;
	p->retain = p->flags & 1;
	if (p->qos == 3 || (p->qos == 0 && p->dup)) {
		rd_fail(r, MQTT_RC_MALFORMED);
		return;
	}
	p->topic = rd_str(r);
	if (p->qos > 0) {
		p->pid = rd_u16(r);
		if (r->reason == 0 && p->pid == 0)
			rd_fail(r, MQTT_RC_PROTOCOL);
	}
	if (p->version == MQTT_V5)
		rd_props(r, CTX(MQTT_PUBLISH), &p->props);
	if (r->reason != 0)
		return;
	if (memchr(p->topic.p, '+', p->topic.len) ||
	    memchr(p->topic.p, '#', p->topic.len)) {
		rd_fail(r, MQTT_RC_TOPIC_NAME_INVALID);
		return;
	}
	/* An empty topic only with a topic alias (3.3.2.1). */
	if (p->topic.len == 0 &&
	    !MQTT_HAS_PROP(&p->props, MQTT_P_TOPIC_ALIAS)) {
		rd_fail(r, MQTT_RC_PROTOCOL);
		return;
	}
	p->payload.p = r->p + r->pos;
	p->payload.len = r->end - r->pos;
	r->pos = r->end;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP (3.4 - 3.7). */
static void
dec_ack(struct rd *r, struct mqtt_packet *p)
{
	p->pid = rd_u16(r);
	if (r->reason != 0)
		return;
	if (p->pid == 0) {
		rd_fail(r, MQTT_RC_PROTOCOL);
		return;
	}
	if (p->version != MQTT_V5 || rd_left(r) == 0)
		return;
	p->reason = rd_u8(r);
	if (rd_left(r) > 0)
		rd_props(r, CTX(p->type), &p->props);
}

static void
dec_subscribe(struct rd *r, struct mqtt_packet *p)
{
	int sub = p->type == MQTT_SUBSCRIBE;

	p->pid = rd_u16(r);
	if (r->reason == 0 && p->pid == 0)
		rd_fail(r, MQTT_RC_PROTOCOL);
	if (p->version == MQTT_V5)
		rd_props(r, CTX(p->type), &p->props);
	if (r->reason != 0)
		return;
	p->entries.p = r->p + r->pos;
	p->entries.len = r->end - r->pos;
	while (r->reason == 0 && rd_left(r) > 0) {
		rd_str(r);
		if (sub) {
			uint8_t o = rd_u8(r);

			if (r->reason != 0)
				break;
			if ((o & 3) == 3 ||
			    (p->version == MQTT_V5 ? (o & 0xc0) : (o & 0xfc))) {
				rd_fail(r, MQTT_RC_MALFORMED);
				break;
			}
			if (((o >> 4) & 3) == 3) {
				rd_fail(r, MQTT_RC_PROTOCOL);
				break;
			}
		}
		p->n_entries++;
	}
	if (r->reason == 0 && p->n_entries == 0)
		rd_fail(r, MQTT_RC_PROTOCOL); /* 3.8.3-3, 3.10.3-2 */
}

int
mqtt_sub_next(const struct mqtt_packet *p, size_t *pos,
              struct mqtt_bin *filter, uint8_t *opts)
{
	struct rd r = { p->entries.p, *pos, p->entries.len, 0 };

	if (r.pos >= r.end)
		return 0;
	*filter = rd_bin(&r);
	*opts = p->type == MQTT_SUBSCRIBE ? rd_u8(&r) : 0;
	if (r.reason != 0)
		return 0;
	*pos = r.pos;
	return 1;
}

int
mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
            struct mqtt_packet *p, uint8_t *reason)
{
	struct rd r;
	size_t total;
	uint8_t fl;
	int rc;

	memset(p, 0, sizeof *p);
	p->props.request_problem_info = 1;
	*reason = 0;
	rc = mqtt_frame(buf, len, 0, &total, reason);
	if (rc != PMQ_OK || total != len) {
		*reason = MQTT_RC_MALFORMED;
		return PMQ_ERR_INVAL;
	}
	p->type = buf[0] >> 4;
	p->flags = fl = buf[0] & 0x0f;
	p->version = version;
	r.p = buf;
	r.end = len;
	/* The body starts after the remaining-length bytes, which
	 * mqtt_frame has checked. */
	r.pos = 1;
	while (buf[r.pos] & 0x80)
		r.pos++;
	r.pos++;
	r.reason = 0;

	if (version == 0 && p->type != MQTT_CONNECT) {
		*reason = MQTT_RC_PROTOCOL; /* 3.1.0-1: CONNECT first */
		return PMQ_ERR_INVAL;
	}
	/* Fixed-header flags (2.1.3): reserved values must be exact. */
	if (p->type != MQTT_PUBLISH &&
	    fl != ((p->type == MQTT_PUBREL || p->type == MQTT_SUBSCRIBE ||
	            p->type == MQTT_UNSUBSCRIBE) ? 2 : 0)) {
		*reason = MQTT_RC_MALFORMED;
		return PMQ_ERR_INVAL;
	}
	switch (p->type) {
	case MQTT_CONNECT:
		if (version != 0) {
			*reason = MQTT_RC_PROTOCOL; /* a second CONNECT */
			return PMQ_ERR_INVAL;
		}
		dec_connect(&r, p);
		break;
	case MQTT_PUBLISH:
		dec_publish(&r, p);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		dec_ack(&r, p);
		break;
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		dec_subscribe(&r, p);
		break;
	case MQTT_PINGREQ:
		break;
	case MQTT_DISCONNECT:
		if (version == MQTT_V5 && rd_left(&r) > 0) {
			p->reason = rd_u8(&r);
			if (rd_left(&r) > 0)
				rd_props(&r, CTX(MQTT_DISCONNECT), &p->props);
		}
		break;
	case MQTT_AUTH:
		if (version != MQTT_V5) {
			*reason = MQTT_RC_MALFORMED;
			return PMQ_ERR_INVAL;
		}
		if (rd_left(&r) > 0) {
			p->reason = rd_u8(&r);
			if (rd_left(&r) > 0)
				rd_props(&r, CTX(MQTT_AUTH), &p->props);
		}
		break;
	case MQTT_CONNACK:
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
	case MQTT_PINGRESP:
		*reason = MQTT_RC_PROTOCOL; /* only a server sends these */
		return PMQ_ERR_INVAL;
	default: /* 0: reserved */
		*reason = MQTT_RC_MALFORMED;
		return PMQ_ERR_INVAL;
	}
	if (r.reason == 0 && r.pos != r.end)
		r.reason = MQTT_RC_MALFORMED; /* trailing bytes */
	if (r.reason != 0) {
		*reason = r.reason;
		return PMQ_ERR_INVAL;
	}
	return PMQ_OK;
}

/* ---- encoding ---- */

void
mqtt_buf_init(struct mqtt_buf *b)
{
	memset(b, 0, sizeof *b);
}

void
mqtt_buf_free(struct mqtt_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

static int
buf_reserve(struct mqtt_buf *b, size_t n)
{
	size_t cap;
	uint8_t *np;

	if (b->err != PMQ_OK)
		return -1;
	if (b->cap - b->len >= n)
		return 0;
	if (n > SIZE_MAX / 2 - b->len) {
		b->err = PMQ_ERR_NOMEM;
		return -1;
	}
	cap = b->cap != 0 ? b->cap : 64;
	while (cap - b->len < n)
		cap *= 2;
	np = realloc(b->p, cap);
	if (np == NULL) {
		b->err = PMQ_ERR_NOMEM;
		return -1;
	}
	b->p = np;
	b->cap = cap;
	return 0;
}

void
mqtt_buf_begin(struct mqtt_buf *b)
{
	b->len = 0;
	b->err = PMQ_OK;
	if (buf_reserve(b, MQTT_BUF_RESERVE) == 0)
		b->len = MQTT_BUF_RESERVE;
}

void
mqtt_put(struct mqtt_buf *b, const void *p, size_t len)
{
	if (len == 0 || buf_reserve(b, len) != 0)
		return;
	memcpy(b->p + b->len, p, len);
	b->len += len;
}

void
mqtt_put_u8(struct mqtt_buf *b, uint8_t v)
{
	mqtt_put(b, &v, 1);
}

void
mqtt_put_u16(struct mqtt_buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	mqtt_put(b, x, 2);
}

void
mqtt_put_u32(struct mqtt_buf *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
	                 (uint8_t)(v >> 8), (uint8_t)v };

	mqtt_put(b, x, 4);
}

size_t
mqtt_varint_size(uint32_t v)
{
	return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static size_t
varint_write(uint8_t *out, uint32_t v)
{
	size_t n = 0;

	do {
		uint8_t b = v & 0x7f;

		v >>= 7;
		out[n++] = (uint8_t)(b | (v > 0 ? 0x80 : 0));
	} while (v > 0 && n < 4);
	return n;
}

void
mqtt_put_varint(struct mqtt_buf *b, uint32_t v)
{
	uint8_t x[4];

	mqtt_put(b, x, varint_write(x, v));
}

void
mqtt_put_str(struct mqtt_buf *b, const void *p, size_t len)
{
	if (len > 65535) {
		if (b->err == PMQ_OK)
			b->err = PMQ_ERR_INVAL;
		return;
	}
	mqtt_put_u16(b, (uint16_t)len);
	mqtt_put(b, p, len);
}

void
mqtt_prop_u8(struct mqtt_buf *b, uint8_t id, uint8_t v)
{
	mqtt_put_u8(b, id);
	mqtt_put_u8(b, v);
}

void
mqtt_prop_u16(struct mqtt_buf *b, uint8_t id, uint16_t v)
{
	mqtt_put_u8(b, id);
	mqtt_put_u16(b, v);
}

void
mqtt_prop_u32(struct mqtt_buf *b, uint8_t id, uint32_t v)
{
	mqtt_put_u8(b, id);
	mqtt_put_u32(b, v);
}

void
mqtt_prop_varint(struct mqtt_buf *b, uint8_t id, uint32_t v)
{
	mqtt_put_u8(b, id);
	mqtt_put_varint(b, v);
}

void
mqtt_prop_str(struct mqtt_buf *b, uint8_t id, const void *p, size_t len)
{
	mqtt_put_u8(b, id);
	mqtt_put_str(b, p, len);
}

void
mqtt_prop_pair(struct mqtt_buf *b, const void *n, size_t nl, const void *v,
               size_t vl)
{
	mqtt_put_u8(b, MQTT_P_USER_PROPERTY);
	mqtt_put_str(b, n, nl);
	mqtt_put_str(b, v, vl);
}

size_t
mqtt_props_size(size_t len)
{
	return mqtt_varint_size((uint32_t)len) + len;
}

void
mqtt_put_props(struct mqtt_buf *b, const struct mqtt_buf *props)
{
	if (props->err != PMQ_OK) {
		if (b->err == PMQ_OK)
			b->err = props->err;
		return;
	}
	mqtt_put_varint(b, (uint32_t)props->len);
	mqtt_put(b, props->p, props->len);
}

long
mqtt_buf_finish(struct mqtt_buf *b, uint8_t first, size_t extra)
{
	size_t body, n, start;
	uint8_t hdr[5];

	if (b->err != PMQ_OK || b->len < MQTT_BUF_RESERVE)
		return -1;
	body = b->len - MQTT_BUF_RESERVE;
	if (extra > MQTT_MAX_REMAINING || body > MQTT_MAX_REMAINING - extra)
		return -1;
	hdr[0] = first;
	n = 1 + varint_write(hdr + 1, (uint32_t)(body + extra));
	start = MQTT_BUF_RESERVE - n;
	memcpy(b->p + start, hdr, n);
	return (long)start;
}

long
mqtt_enc_ack(struct mqtt_buf *b, uint8_t version, uint8_t type,
             uint16_t pid, uint8_t reason, const char *reason_string)
{
	mqtt_buf_begin(b);
	mqtt_put_u16(b, pid);
	if (version == MQTT_V5 && (reason != 0 || reason_string != NULL)) {
		mqtt_put_u8(b, reason);
		if (reason_string != NULL) {
			size_t n = strlen(reason_string);

			mqtt_put_varint(b, (uint32_t)(n + 3));
			mqtt_prop_str(b, MQTT_P_REASON_STRING, reason_string, n);
		}
	}
	return mqtt_buf_finish(b, (uint8_t)(type << 4 |
	                                    (type == MQTT_PUBREL ? 2 : 0)), 0);
}

long
mqtt_enc_disconnect(struct mqtt_buf *b, uint8_t version, uint8_t reason,
                    const char *reason_string)
{
	mqtt_buf_begin(b);
	if (version == MQTT_V5 && (reason != 0 || reason_string != NULL)) {
		mqtt_put_u8(b, reason);
		if (reason_string != NULL) {
			size_t n = strlen(reason_string);

			mqtt_put_varint(b, (uint32_t)(n + 3));
			mqtt_prop_str(b, MQTT_P_REASON_STRING, reason_string, n);
		}
	}
	return mqtt_buf_finish(b, MQTT_DISCONNECT << 4, 0);
}

long
mqtt_enc_simple(struct mqtt_buf *b, uint8_t type)
{
	mqtt_buf_begin(b);
	return mqtt_buf_finish(b, (uint8_t)(type << 4), 0);
}
