/*
 * msg.c - refcounted immutable messages in one allocation, and their
 * versioned, checksummed serialisation (see msg.h).
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "logger.h"
#include "msg.h"
#include "topic.h"
#include "util.h"

#define FLAG_KEY 0x01
#define FLAG_CT 0x02
#define FLAG_RT 0x04
#define FLAG_CD 0x08

/* Add len + 1 (the NUL after every copied field) to *total; false on
 * overflow, which only absurd peer-supplied lengths can cause. */
static bool
add_len(size_t *total, size_t len)
{
	if (len >= SIZE_MAX - *total)
		return false;
	*total += len + 1;
	return true;
}

/* Copy len bytes of src to *cur, terminate, advance; returns the copy. */
static void *
put(char **cur, const void *src, size_t len)
{
	char *p = *cur;

	if (len > 0)
		memcpy(p, src, len);
	p[len] = '\0';
	*cur = p + len + 1;
	return p;
}

/* A byte string argument is acceptable: NULL only with length 0. */
static bool
bytes_ok(const void *p, size_t len)
{
	return p != NULL || len == 0;
}

pmq_msg *
msg_new(const struct pmq_msg_fields *f, int *err)
{
	struct pmq_msg *m;
	struct pmq_header *hdrs;
	size_t total = sizeof(*m), i;
	int dummy;
	char *cur;

	if (err == NULL)
		err = &dummy;
	*err = PMQ_ERR_INVAL;
	if (f == NULL || !PMQ_HAS(f, struct pmq_msg_fields, correlation_data_len))
		return NULL;
	if (f->qos > 2 || f->payload_format > PMQ_PAYLOAD_UTF8)
		return NULL;
	if (f->topic == NULL || !topic_valid_name(f->topic, f->topic_len))
		return NULL;
	if (f->response_topic != NULL &&
	    !topic_valid_name(f->response_topic, f->response_topic_len))
		return NULL;
	if ((f->has_key && !bytes_ok(f->key, f->key_len)) ||
	    !bytes_ok(f->payload, f->payload_len) ||
	    !bytes_ok(f->content_type, f->content_type_len) ||
	    !bytes_ok(f->correlation_data, f->correlation_data_len) ||
	    (f->n_headers > 0 && f->headers == NULL))
		return NULL;

	if (f->n_headers > (SIZE_MAX - total) / sizeof(*hdrs))
		return NULL;
	total += f->n_headers * sizeof(*hdrs);
	for (i = 0; i < f->n_headers; i++) {
		const struct pmq_header *h = &f->headers[i];

		if (!bytes_ok(h->name, h->name_len) ||
		    !bytes_ok(h->value, h->value_len) ||
		    !add_len(&total, h->name_len) ||
		    !add_len(&total, h->value_len))
			return NULL;
	}
	if (!add_len(&total, f->topic_len) ||
	    !add_len(&total, f->has_key ? f->key_len : 0) ||
	    !add_len(&total, f->payload_len) ||
	    !add_len(&total, f->content_type_len) ||
	    !add_len(&total, f->response_topic_len) ||
	    !add_len(&total, f->correlation_data_len))
		return NULL;

	m = malloc(total);
	if (m == NULL) {
		*err = PMQ_ERR_NOMEM;
		log_error("%s: no memory for a %zu-byte message", __func__,
		          total);
		return NULL;
	}
	memset(m, 0, sizeof(*m));
	/* The header array sits right after the struct (both 8-aligned),
	 * then every byte field, each NUL-terminated. */
	hdrs = (struct pmq_header *)(m + 1);
	cur = (char *)(hdrs + f->n_headers);
	m->refs = 1;
	m->qos = f->qos;
	m->retain = f->retain ? 1 : 0;
	m->payload_format = f->payload_format;
	m->has_key = f->has_key ? 1 : 0;
	m->timestamp_ms = f->timestamp_ms ? f->timestamp_ms : util_now_ms();
	m->expiry_ms = f->expiry_ms;
	m->topic = put(&cur, f->topic, f->topic_len);
	m->topic_len = f->topic_len;
	if (m->has_key) {
		m->key = put(&cur, f->key, f->key_len);
		m->key_len = f->key_len;
	}
	m->payload = put(&cur, f->payload, f->payload_len);
	m->payload_len = f->payload_len;
	m->n_headers = f->n_headers;
	for (i = 0; i < f->n_headers; i++) {
		const struct pmq_header *h = &f->headers[i];

		hdrs[i].name = put(&cur, h->name, h->name_len);
		hdrs[i].name_len = h->name_len;
		hdrs[i].value = h->value ? put(&cur, h->value, h->value_len)
		                         : NULL;
		hdrs[i].value_len = h->value ? h->value_len : 0;
	}
	m->headers = f->n_headers ? hdrs : NULL;
	if (f->content_type != NULL) {
		m->content_type = put(&cur, f->content_type, f->content_type_len);
		m->content_type_len = f->content_type_len;
	}
	if (f->response_topic != NULL) {
		m->response_topic =
		    put(&cur, f->response_topic, f->response_topic_len);
		m->response_topic_len = f->response_topic_len;
	}
	if (f->correlation_data != NULL) {
		m->correlation_data =
		    put(&cur, f->correlation_data, f->correlation_data_len);
		m->correlation_data_len = f->correlation_data_len;
	}
	assert((size_t)(cur - (char *)m) <= total);
	m->alloc_len = total;
	*err = PMQ_OK;
	return m;
}

void
msg_fields(const pmq_msg *m, struct pmq_msg_fields *out)
{
	uint32_t size = out->size;
	size_t fit = size < sizeof(*out) ? size : sizeof(*out);

	/* A reader built against an older, smaller struct gets only what it
	 * knows about; nothing past its size is touched. */
	memset(out, 0, fit);
	out->size = size;
#define SET(member, value)                                                    \
	do {                                                                  \
		if (PMQ_HAS(out, struct pmq_msg_fields, member))             \
			out->member = (value);                                \
	} while (0)
	SET(qos, m->qos);
	SET(retain, m->retain);
	SET(payload_format, m->payload_format);
	SET(has_key, m->has_key);
	SET(topic, m->topic);
	SET(topic_len, m->topic_len);
	SET(key, m->key);
	SET(key_len, m->key_len);
	SET(payload, m->payload);
	SET(payload_len, m->payload_len);
	SET(headers, m->headers);
	SET(n_headers, m->n_headers);
	SET(timestamp_ms, m->timestamp_ms);
	SET(expiry_ms, m->expiry_ms);
	SET(content_type, m->content_type);
	SET(content_type_len, m->content_type_len);
	SET(response_topic, m->response_topic);
	SET(response_topic_len, m->response_topic_len);
	SET(correlation_data, m->correlation_data);
	SET(correlation_data_len, m->correlation_data_len);
#undef SET
}

pmq_msg *
msg_ref(pmq_msg *m)
{
	assert(m->refs > 0);
	m->refs++;
	return m;
}

void
msg_unref(pmq_msg *m)
{
	if (m == NULL)
		return;
	assert(m->refs > 0);
	if (--m->refs == 0)
		free(m);
}

size_t
msg_size(const pmq_msg *m)
{
	/* Plus a typical malloc chunk header. */
	return m->alloc_len + 16;
}

/* ---- serialisation ---- */

/* CRC-32C (Castagnoli), four bits at a time: small table, fast enough for
 * retained messages, and the same polynomial Kafka batches use. */
static uint32_t
crc32c(const uint8_t *p, size_t len)
{
	static const uint32_t t[16] = {
		0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1,
		0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
		0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
		0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
	};
	uint32_t c = 0xffffffff;

	while (len--) {
		c ^= *p++;
		c = (c >> 4) ^ t[c & 15];
		c = (c >> 4) ^ t[c & 15];
	}
	return c ^ 0xffffffff;
}

static size_t
varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static uint8_t *
put_bytes(uint8_t *p, const void *src, size_t len)
{
	p = put_varint(p, len);
	if (len > 0)
		memcpy(p, src, len);
	return p + len;
}

static uint8_t *
put_be(uint8_t *p, uint64_t v, int n)
{
	int i;

	for (i = n - 1; i >= 0; i--)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

int
msg_encode(const pmq_msg *m, void **buf, size_t *len)
{
	size_t total = 5 + 8 + 8 + 4, i;
	uint8_t flags = 0, *b, *p;

#define BYTES_LEN(l) (varint_len(l) + (l))
	total += BYTES_LEN(m->topic_len) + BYTES_LEN(m->payload_len);
	total += varint_len(m->n_headers);
	if (m->has_key) {
		flags |= FLAG_KEY;
		total += BYTES_LEN(m->key_len);
	}
	for (i = 0; i < m->n_headers; i++) {
		total += BYTES_LEN(m->headers[i].name_len) + 1;
		if (m->headers[i].value != NULL)
			total += BYTES_LEN(m->headers[i].value_len);
	}
	if (m->content_type != NULL) {
		flags |= FLAG_CT;
		total += BYTES_LEN(m->content_type_len);
	}
	if (m->response_topic != NULL) {
		flags |= FLAG_RT;
		total += BYTES_LEN(m->response_topic_len);
	}
	if (m->correlation_data != NULL) {
		flags |= FLAG_CD;
		total += BYTES_LEN(m->correlation_data_len);
	}
#undef BYTES_LEN

	b = malloc(total);
	if (b == NULL) {
		log_error("%s: no memory for %zu bytes", __func__, total);
		return PMQ_ERR_NOMEM;
	}
	p = b;
	*p++ = MSG_FORMAT_V1;
	*p++ = m->qos;
	*p++ = m->retain;
	*p++ = m->payload_format;
	*p++ = flags;
	p = put_be(p, (uint64_t)m->timestamp_ms, 8);
	p = put_be(p, (uint64_t)m->expiry_ms, 8);
	p = put_bytes(p, m->topic, m->topic_len);
	if (m->has_key)
		p = put_bytes(p, m->key, m->key_len);
	p = put_bytes(p, m->payload, m->payload_len);
	p = put_varint(p, m->n_headers);
	for (i = 0; i < m->n_headers; i++) {
		const struct pmq_header *h = &m->headers[i];

		p = put_bytes(p, h->name, h->name_len);
		*p++ = h->value != NULL;
		if (h->value != NULL)
			p = put_bytes(p, h->value, h->value_len);
	}
	if (flags & FLAG_CT)
		p = put_bytes(p, m->content_type, m->content_type_len);
	if (flags & FLAG_RT)
		p = put_bytes(p, m->response_topic, m->response_topic_len);
	if (flags & FLAG_CD)
		p = put_bytes(p, m->correlation_data, m->correlation_data_len);
	p = put_be(p, crc32c(b, (size_t)(p - b)), 4);
	assert((size_t)(p - b) == total);
	*buf = b;
	*len = total;
	return PMQ_OK;
}

/* A bounds-checked reader over the input; any overrun sets bad. */
struct reader {
	const uint8_t *p;
	size_t left;
	bool bad;
};

static uint8_t
get_u8(struct reader *r)
{
	if (r->left < 1) {
		r->bad = true;
		return 0;
	}
	r->left--;
	return *r->p++;
}

static uint64_t
get_be(struct reader *r, size_t n)
{
	uint64_t v = 0;
	size_t i;

	if (r->left < n) {
		r->bad = true;
		return 0;
	}
	for (i = 0; i < n; i++)
		v = (v << 8) | r->p[i];
	r->p += n;
	r->left -= n;
	return v;
}

static uint64_t
get_varint(struct reader *r)
{
	uint64_t v = 0;
	unsigned shift;

	for (shift = 0; shift < 64; shift += 7) {
		uint8_t c = get_u8(r);

		if (r->bad)
			return 0;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
	}
	r->bad = true; /* more than 10 bytes */
	return 0;
}

/* A length-prefixed byte string: a view into the input. */
static const void *
get_bytes(struct reader *r, size_t *len)
{
	uint64_t n = get_varint(r);
	const void *p;

	if (r->bad || n > r->left) {
		r->bad = true;
		*len = 0;
		return NULL;
	}
	p = r->p;
	r->p += n;
	r->left -= (size_t)n;
	*len = (size_t)n;
	return p;
}

int
msg_decode(const void *buf, size_t len, pmq_msg **out)
{
	struct pmq_msg_fields f;
	struct pmq_header *hdrs = NULL;
	struct reader r = { buf, len, false };
	const uint8_t *crc;
	uint8_t flags;
	uint64_t n;
	size_t i;
	int err;

	*out = NULL;
	if (len < 5 + 8 + 8 + 4)
		return PMQ_ERR_CORRUPT;
	r.left -= 4; /* the trailing CRC is not part of the fields */
	crc = (const uint8_t *)buf + len - 4;
	if (crc32c(buf, len - 4) != ((uint32_t)crc[0] << 24 |
	                             (uint32_t)crc[1] << 16 |
	                             (uint32_t)crc[2] << 8 | crc[3]))
		return PMQ_ERR_CORRUPT;
	if (get_u8(&r) != MSG_FORMAT_V1)
		return PMQ_ERR_CORRUPT;
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.qos = get_u8(&r);
	f.retain = get_u8(&r);
	f.payload_format = get_u8(&r);
	flags = get_u8(&r);
	f.timestamp_ms = (int64_t)get_be(&r, 8);
	f.expiry_ms = (int64_t)get_be(&r, 8);
	f.topic = get_bytes(&r, &f.topic_len);
	if (flags & FLAG_KEY) {
		f.has_key = 1;
		f.key = get_bytes(&r, &f.key_len);
	}
	f.payload = get_bytes(&r, &f.payload_len);
	n = get_varint(&r);
	/* Each header takes at least 2 bytes: bound the count by the input
	 * before allocating, so garbage cannot ask for gigabytes. */
	if (r.bad || n > r.left / 2 || n > UINT32_MAX)
		return PMQ_ERR_CORRUPT;
	if (n > 0) {
		hdrs = calloc((size_t)n, sizeof(*hdrs));
		if (hdrs == NULL)
			return PMQ_ERR_NOMEM;
	}
	f.headers = hdrs;
	f.n_headers = (uint32_t)n;
	for (i = 0; i < n && !r.bad; i++) {
		hdrs[i].name = get_bytes(&r, &hdrs[i].name_len);
		if (get_u8(&r))
			hdrs[i].value = get_bytes(&r, &hdrs[i].value_len);
	}
	if (flags & FLAG_CT)
		f.content_type = get_bytes(&r, &f.content_type_len);
	if (flags & FLAG_RT)
		f.response_topic = get_bytes(&r, &f.response_topic_len);
	if (flags & FLAG_CD)
		f.correlation_data = get_bytes(&r, &f.correlation_data_len);
	/* Unknown flags, leftovers and a zero timestamp (msg_new would turn
	 * it into "now") all mean the bytes are not what we wrote. */
	if (r.bad || r.left != 0 || (flags & ~0x0fu) || f.timestamp_ms == 0 ||
	    f.retain > 1) {
		free(hdrs);
		return PMQ_ERR_CORRUPT;
	}
	*out = msg_new(&f, &err);
	free(hdrs);
	if (*out == NULL)
		return err == PMQ_ERR_NOMEM ? PMQ_ERR_NOMEM : PMQ_ERR_CORRUPT;
	return PMQ_OK;
}
