/*
 * codec.h - MQTT 3.1, 3.1.1 and 5.0 packet framing, decoding with strict
 * validation, and encoding.  No I/O, no host calls: the decoder works on
 * one complete packet in a caller's buffer and returns views into it, so
 * the unit tests and the fuzz target drive it directly.
 *
 * Results: functions return PMQ_OK or a negative enum pmq_err; when a
 * decode fails, *reason holds the MQTT 5 reason code the server should
 * send in its DISCONNECT (0x81 malformed, 0x82 protocol error, 0x90 topic
 * name invalid, 0x95 packet too large, 0x84 unsupported protocol version).
 *
 * Ownership: decoded strings (struct mqtt_bin) point into the packet buffer
 * and live as long as it does.  struct mqtt_buf owns its memory (free with
 * mqtt_buf_free).
 */
#ifndef PLEXMQ_MQTT_CODEC_H
#define PLEXMQ_MQTT_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* Packet types (fixed header, high nibble). */
#define MQTT_CONNECT 1
#define MQTT_CONNACK 2
#define MQTT_PUBLISH 3
#define MQTT_PUBACK 4
#define MQTT_PUBREC 5
#define MQTT_PUBREL 6
#define MQTT_PUBCOMP 7
#define MQTT_SUBSCRIBE 8
#define MQTT_SUBACK 9
#define MQTT_UNSUBSCRIBE 10
#define MQTT_UNSUBACK 11
#define MQTT_PINGREQ 12
#define MQTT_PINGRESP 13
#define MQTT_DISCONNECT 14
#define MQTT_AUTH 15

/* Protocol levels. */
#define MQTT_V31 3
#define MQTT_V311 4
#define MQTT_V5 5

/* MQTT 5 reason codes used by the broker. */
#define MQTT_RC_SUCCESS 0x00
#define MQTT_RC_GRANTED_QOS1 0x01
#define MQTT_RC_GRANTED_QOS2 0x02
#define MQTT_RC_DISCONNECT_WITH_WILL 0x04
#define MQTT_RC_NO_MATCHING_SUBSCRIBERS 0x10
#define MQTT_RC_NO_SUBSCRIPTION_EXISTED 0x11
#define MQTT_RC_UNSPECIFIED 0x80
#define MQTT_RC_MALFORMED 0x81
#define MQTT_RC_PROTOCOL 0x82
#define MQTT_RC_IMPL_SPECIFIC 0x83
#define MQTT_RC_UNSUPPORTED_VERSION 0x84
#define MQTT_RC_CLIENTID_INVALID 0x85
#define MQTT_RC_BAD_USER_PASS 0x86
#define MQTT_RC_NOT_AUTHORIZED 0x87
#define MQTT_RC_SERVER_UNAVAILABLE 0x88
#define MQTT_RC_SERVER_BUSY 0x89
#define MQTT_RC_BAD_AUTH_METHOD 0x8C
#define MQTT_RC_KEEPALIVE_TIMEOUT 0x8D
#define MQTT_RC_SESSION_TAKEN_OVER 0x8E
#define MQTT_RC_TOPIC_FILTER_INVALID 0x8F
#define MQTT_RC_TOPIC_NAME_INVALID 0x90
#define MQTT_RC_PID_IN_USE 0x91
#define MQTT_RC_PID_NOT_FOUND 0x92
#define MQTT_RC_RECEIVE_MAX_EXCEEDED 0x93
#define MQTT_RC_TOPIC_ALIAS_INVALID 0x94
#define MQTT_RC_PACKET_TOO_LARGE 0x95
#define MQTT_RC_QUOTA_EXCEEDED 0x97
#define MQTT_RC_PAYLOAD_FORMAT_INVALID 0x99
#define MQTT_RC_RETAIN_NOT_SUPPORTED 0x9A
#define MQTT_RC_QOS_NOT_SUPPORTED 0x9B
#define MQTT_RC_SHARED_SUB_NOT_SUPPORTED 0x9E
#define MQTT_RC_SUB_ID_NOT_SUPPORTED 0xA1
#define MQTT_RC_WILDCARD_SUB_NOT_SUPPORTED 0xA2

/* MQTT 5 property identifiers. */
#define MQTT_P_PAYLOAD_FORMAT 0x01
#define MQTT_P_MESSAGE_EXPIRY 0x02
#define MQTT_P_CONTENT_TYPE 0x03
#define MQTT_P_RESPONSE_TOPIC 0x08
#define MQTT_P_CORRELATION_DATA 0x09
#define MQTT_P_SUB_ID 0x0B
#define MQTT_P_SESSION_EXPIRY 0x11
#define MQTT_P_ASSIGNED_CLIENT_ID 0x12
#define MQTT_P_SERVER_KEEPALIVE 0x13
#define MQTT_P_AUTH_METHOD 0x15
#define MQTT_P_AUTH_DATA 0x16
#define MQTT_P_REQUEST_PROBLEM_INFO 0x17
#define MQTT_P_WILL_DELAY 0x18
#define MQTT_P_REQUEST_RESPONSE_INFO 0x19
#define MQTT_P_RESPONSE_INFO 0x1A
#define MQTT_P_SERVER_REFERENCE 0x1C
#define MQTT_P_REASON_STRING 0x1F
#define MQTT_P_RECEIVE_MAX 0x21
#define MQTT_P_TOPIC_ALIAS_MAX 0x22
#define MQTT_P_TOPIC_ALIAS 0x23
#define MQTT_P_MAX_QOS 0x24
#define MQTT_P_RETAIN_AVAILABLE 0x25
#define MQTT_P_USER_PROPERTY 0x26
#define MQTT_P_MAX_PACKET_SIZE 0x27
#define MQTT_P_WILDCARD_SUB_AVAILABLE 0x28
#define MQTT_P_SUB_ID_AVAILABLE 0x29
#define MQTT_P_SHARED_SUB_AVAILABLE 0x2A

/* The largest packet the protocol can frame: 1 + 4 + 268435455. */
#define MQTT_MAX_REMAINING 268435455u

/* A length-prefixed string or binary value: a view, not NUL-terminated. */
struct mqtt_bin {
	const uint8_t *p;
	size_t len;
};

/* Decoded MQTT 5 properties of one packet (or of a will). */
struct mqtt_props {
	uint64_t seen; /* bit (1 << id) for each property present */
	uint8_t payload_format;
	uint8_t request_problem_info;
	uint8_t request_response_info;
	uint8_t max_qos;
	uint8_t retain_available;
	uint16_t server_keepalive;
	uint16_t receive_max;
	uint16_t topic_alias_max;
	uint16_t topic_alias;
	uint32_t message_expiry;
	uint32_t session_expiry;
	uint32_t will_delay;
	uint32_t max_packet_size;
	uint32_t sub_id;    /* the first subscription identifier */
	uint32_t n_sub_ids; /* how many there were */
	uint32_t n_user;    /* user properties (iterate with mqtt_user_next) */
	struct mqtt_bin content_type, response_topic, correlation_data,
	    assigned_client_id, auth_method, auth_data, response_info,
	    server_reference, reason_string;
	struct mqtt_bin raw; /* the whole property block, for iteration */
};

#define MQTT_HAS_PROP(pr, id) ((((pr)->seen) >> (id)) & 1u)

/* One decoded packet.  Which members are meaningful depends on type. */
struct mqtt_packet {
	uint8_t type;
	uint8_t flags;     /* fixed header low nibble */
	uint8_t version;   /* protocol level the packet was decoded as */
	/* CONNECT */
	uint8_t proto_level;
	uint8_t clean_start;
	uint8_t will_flag, will_qos, will_retain;
	uint8_t has_username, has_password;
	uint16_t keepalive;
	struct mqtt_bin client_id, will_topic, will_payload, username,
	    password;
	struct mqtt_props will_props;
	/* PUBLISH */
	uint8_t qos, dup, retain;
	struct mqtt_bin topic, payload;
	/* PUBLISH (qos > 0), acks, SUBSCRIBE, UNSUBSCRIBE */
	uint16_t pid;
	/* acks, DISCONNECT, AUTH */
	uint8_t reason;
	/* SUBSCRIBE / UNSUBSCRIBE: the entries, iterate with mqtt_sub_next */
	uint32_t n_entries;
	struct mqtt_bin entries;
	struct mqtt_props props;
};

/*
 * Frame the packet at the start of buf (avail bytes buffered).  Returns
 * PMQ_OK with *total set to the whole packet's size once its fixed header
 * is complete (the packet itself may still be incomplete: compare with
 * avail), PMQ_ERR_AGAIN when the fixed header is incomplete, or
 * PMQ_ERR_INVAL with *reason 0x81 (remaining length over 4 bytes) or 0x95
 * (packet larger than max_size; 0 = protocol maximum).
 */
int mqtt_frame(const uint8_t *buf, size_t avail, uint32_t max_size,
               size_t *total, uint8_t *reason);

/*
 * Decode one complete packet of len bytes (as framed by mqtt_frame),
 * sent by a client speaking protocol version (MQTT_V31/V311/V5; for a
 * CONNECT pass 0: the packet names its own level).  Validates everything
 * that does not need session state: fixed-header flags, lengths, UTF-8,
 * wildcards in PUBLISH topics, packet identifiers, QoS values, property
 * identifiers allowed for the packet, duplicates, property values.
 * Packets only a server sends are a protocol error.
 */
int mqtt_decode(const uint8_t *buf, size_t len, uint8_t version,
                struct mqtt_packet *p, uint8_t *reason);

/* Iterate SUBSCRIBE entries (filter and options byte) or UNSUBSCRIBE
 * entries (filter; *opts is 0).  *pos starts at 0.  Returns 1 with an
 * entry, 0 at the end.  Only valid on a packet mqtt_decode accepted. */
int mqtt_sub_next(const struct mqtt_packet *p, size_t *pos,
                  struct mqtt_bin *filter, uint8_t *opts);

/* Iterate the user properties of a decoded property block.  *pos starts
 * at 0.  Returns 1 with a pair, 0 at the end. */
int mqtt_user_next(const struct mqtt_props *pr, size_t *pos,
                   struct mqtt_bin *name, struct mqtt_bin *value);

/* Valid MQTT UTF-8 (no NUL, no surrogates, no overlong forms). */
int mqtt_utf8_valid(const uint8_t *s, size_t len);
/* A valid topic filter (wildcards only as whole levels, # last). */
int mqtt_filter_valid(const uint8_t *s, size_t len);

/* ---- encoding ---- */

/* A growable output buffer.  Errors are sticky (err != 0 after a failed
 * allocation), so a packet is built with unchecked calls and checked once.
 * The first MQTT_BUF_RESERVE bytes of a packet are kept for its fixed
 * header, which mqtt_buf_finish writes in front of the body. */
#define MQTT_BUF_RESERVE 5
struct mqtt_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
	int err; /* PMQ_OK or PMQ_ERR_NOMEM */
};

void mqtt_buf_init(struct mqtt_buf *b);
void mqtt_buf_free(struct mqtt_buf *b);
/* Start a packet (the buffer is emptied, its memory kept). */
void mqtt_buf_begin(struct mqtt_buf *b);
void mqtt_put(struct mqtt_buf *b, const void *p, size_t len);
void mqtt_put_u8(struct mqtt_buf *b, uint8_t v);
void mqtt_put_u16(struct mqtt_buf *b, uint16_t v);
void mqtt_put_u32(struct mqtt_buf *b, uint32_t v);
void mqtt_put_varint(struct mqtt_buf *b, uint32_t v);
/* A two-byte length and the bytes (len must be <= 65535). */
void mqtt_put_str(struct mqtt_buf *b, const void *p, size_t len);
/* Property builders (into a buffer that holds only properties). */
void mqtt_prop_u8(struct mqtt_buf *b, uint8_t id, uint8_t v);
void mqtt_prop_u16(struct mqtt_buf *b, uint8_t id, uint16_t v);
void mqtt_prop_u32(struct mqtt_buf *b, uint8_t id, uint32_t v);
void mqtt_prop_varint(struct mqtt_buf *b, uint8_t id, uint32_t v);
void mqtt_prop_str(struct mqtt_buf *b, uint8_t id, const void *p,
                   size_t len);
void mqtt_prop_pair(struct mqtt_buf *b, const void *n, size_t nl,
                    const void *v, size_t vl);
/* Append a property block (length, then the bytes of props). */
void mqtt_put_props(struct mqtt_buf *b, const struct mqtt_buf *props);
/* Bytes a property block of len bytes takes with its length prefix. */
size_t mqtt_props_size(size_t len);
/* Bytes a variable byte integer takes. */
size_t mqtt_varint_size(uint32_t v);

/*
 * Finish the packet begun with mqtt_buf_begin: write the fixed header
 * (first byte, remaining length = body + extra) in front of the body.
 * extra counts bytes the caller sends after the buffer (a payload sent
 * without a copy).  Returns the offset of the packet in b->p (its length
 * is b->len - offset), or -1 (no memory, or too large to frame).
 */
long mqtt_buf_finish(struct mqtt_buf *b, uint8_t first, size_t extra);

/* Whole-packet helpers for the fixed-shape replies.  Each begins and
 * finishes the packet; check b->err / the result as for mqtt_buf_finish.
 * reason_string may be NULL; it is sent only to version 5. */
long mqtt_enc_ack(struct mqtt_buf *b, uint8_t version, uint8_t type,
                  uint16_t pid, uint8_t reason, const char *reason_string);
long mqtt_enc_disconnect(struct mqtt_buf *b, uint8_t version, uint8_t reason,
                         const char *reason_string);
long mqtt_enc_simple(struct mqtt_buf *b, uint8_t type); /* PINGRESP */

#endif /* PLEXMQ_MQTT_CODEC_H */
