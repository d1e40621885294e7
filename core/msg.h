/*
 * msg.h - the message object behind the ABI's opaque pmq_msg: immutable
 * once built, refcounted, every field in one allocation; plus its compact
 * binary serialisation used to persist retained messages.
 *
 * Threads: msg_new, msg_fields, msg_size, msg_encode and msg_decode touch
 * only their arguments (any thread).  Refcounts are plain ints: msg_ref and
 * msg_unref are loop-thread only.
 */
#ifndef PMQ_CORE_MSG_H
#define PMQ_CORE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/types.h>

/*
 * Core modules read these members directly; plugins go through
 * host->msg_fields().  Every byte field points into the same allocation and
 * is followed by a NUL (so topic, content_type, response_topic and header
 * names are C strings too).  Absent optional fields are NULL with length
 * 0; key is non-NULL exactly when has_key; payload is never NULL; a
 * header value is NULL for a Kafka null value.
 */
struct pmq_msg {
	int refs;
	uint8_t qos;
	uint8_t retain;
	uint8_t payload_format;
	uint8_t has_key;
	uint32_t n_headers;
	int64_t timestamp_ms;
	int64_t expiry_ms;
	const char *topic;
	size_t topic_len;
	const void *key;
	size_t key_len;
	const void *payload;
	size_t payload_len;
	const struct pmq_header *headers; /* NULL when n_headers == 0 */
	const char *content_type;
	size_t content_type_len;
	const char *response_topic;
	size_t response_topic_len;
	const void *correlation_data;
	size_t correlation_data_len;
	size_t alloc_len; /* bytes of the single allocation */
};

/* Current first byte of msg_encode output. */
#define MSG_FORMAT_V1 1

/*
 * Returns a new message with one reference (release with msg_unref),
 * copying every field of f, or NULL with *err set (err may be NULL):
 * PMQ_ERR_INVAL when f->size is too small, qos > 2, payload_format > 1,
 * the topic is not a valid topic name, a present response topic is not
 * one, or a NULL pointer comes with a non-zero length; PMQ_ERR_NOMEM.
 * A non-NULL content_type/response_topic/correlation_data pointer marks
 * the field present even with length 0.  timestamp_ms 0 means now.
 */
pmq_msg *msg_new(const struct pmq_msg_fields *f, int *err);

/* Fill *out with views into m, valid while a reference is held.  The
 * caller sets out->size; only the members that fit in it are written (the
 * others are left alone), the ones that fit are zeroed first. */
void msg_fields(const pmq_msg *m, struct pmq_msg_fields *out);

/* Add a reference; returns m. */
pmq_msg *msg_ref(pmq_msg *m);
/* Drop a reference; frees m at zero.  NULL is ignored. */
void msg_unref(pmq_msg *m);

/* Approximate bytes m holds in memory (for memory bounds). */
size_t msg_size(const pmq_msg *m);

/*
 * Serialise every field of m.  On PMQ_OK *buf is a new buffer of *len
 * bytes the caller releases with free().  PMQ_ERR_NOMEM otherwise.
 * Format v1: u8 version, u8 qos, u8 retain, u8 payload_format, u8 flags
 * (1 key, 2 content type, 4 response topic, 8 correlation data),
 * i64 timestamp, i64 expiry (big-endian), then LEB128 lengths each
 * followed by its bytes: topic, [key], payload, n_headers, per header
 * name and u8 has_value [value], [content type], [response topic],
 * [correlation data]; then the CRC-32C of all preceding bytes (big-endian).
 */
int msg_encode(const pmq_msg *m, void **buf, size_t *len);

/*
 * Rebuild a message from msg_encode output.  On PMQ_OK *out is a new
 * message with one reference.  PMQ_ERR_CORRUPT for a truncated, damaged
 * or unknown-version buffer or one whose fields msg_new refuses;
 * PMQ_ERR_NOMEM.  Never reads outside buf[0..len).
 */
int msg_decode(const void *buf, size_t len, pmq_msg **out);

#endif
