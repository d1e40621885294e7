/*
 * test_batch.c - unit tests for core/batch.c: CRC32C vectors, varint
 * boundaries, golden RecordBatch v2 bytes, build/validate/decode round
 * trips, and malformed input (every corrupted byte, every truncation,
 * random mutations) that must be refused without a crash.
 *
 * The golden arrays were produced by an independent encoder (a bitwise
 * CRC-32C and the field layout of Kafka's DefaultRecordBatch/DefaultRecord
 * written out by hand), not by batch.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "batch.h"

#define TS 1700000000000LL /* 0x0000018BCFE56800 */

/* One record, key "k", value "v", no headers, as a producer (librdkafka,
 * the Java client) sends it: baseOffset 0, partitionLeaderEpoch -1,
 * attributes 0, lastOffsetDelta 0, first/max timestamp TS, producerId -1,
 * producerEpoch -1, baseSequence -1, 1 record. */
static const uint8_t golden_kv[70] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* baseOffset 0 */
	0x00, 0x00, 0x00, 0x3a,                         /* batchLength 58 */
	0xff, 0xff, 0xff, 0xff,                         /* leader epoch -1 */
	0x02,                                           /* magic */
	0xe9, 0x9b, 0x8d, 0xd8,                         /* crc */
	0x00, 0x00,                                     /* attributes */
	0x00, 0x00, 0x00, 0x00,                         /* lastOffsetDelta */
	0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* firstTimestamp */
	0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, /* maxTimestamp */
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producerId -1 */
	0xff, 0xff,                                     /* producerEpoch -1 */
	0xff, 0xff, 0xff, 0xff,                         /* baseSequence -1 */
	0x00, 0x00, 0x00, 0x01,                         /* recordsCount 1 */
	0x10,       /* record length 8 (zig-zag 16) */
	0x00,       /* attributes */
	0x00,       /* timestampDelta 0 */
	0x00,       /* offsetDelta 0 */
	0x02, 0x6b, /* key "k" */
	0x02, 0x76, /* value "v" */
	0x00,       /* 0 headers */
};

/* What batch_build must produce for an MQTT publish to "a/b", QoS 1,
 * payload "hi", at TS, with base offset 5: key = topic, headers
 * mqtt.topic and mqtt.qos, leader epoch 0. */
static const uint8_t golden_built[99] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x57,
	0x00, 0x00, 0x00, 0x00, 0x02, 0x38, 0xca, 0xcd, 0x50, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00,
	0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00,
	0x01, 0x4a, 0x00, 0x00, 0x00, 0x06, 0x61, 0x2f, 0x62, 0x04, 0x68, 0x69,
	0x04, 0x14, 0x6d, 0x71, 0x74, 0x74, 0x2e, 0x74, 0x6f, 0x70, 0x69, 0x63,
	0x06, 0x61, 0x2f, 0x62, 0x10, 0x6d, 0x71, 0x74, 0x74, 0x2e, 0x71, 0x6f,
	0x73, 0x02, 0x31,
};

/* ---- helpers ---- */

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
recrc(uint8_t *b, size_t len)
{
	put32(b + 17, batch_crc32c(0, b + 21, len - 21));
}

/* A heap copy of exactly len bytes, so ASan sees any overread. */
static uint8_t *
dup_exact(const void *src, size_t len)
{
	uint8_t *p = malloc(len > 0 ? len : 1);

	assert_non_null(p);
	if (len > 0)
		memcpy(p, src, len);
	return p;
}

/* Deep copy of what batch_records hands out, for checking afterwards. */
struct got_rec {
	int64_t offset, ts;
	int key_null, value_null;
	char key[64], value[64];
	size_t key_len, value_len;
	uint32_t n_headers;
	char hname[12][24];
	char hval[12][24];
	int hval_null[12];
	size_t hval_len[12];
	struct pmq_msg_fields f;
	int f_rc;
	char f_topic[64];
	char f_ct[32];
	uint32_t f_n_headers;
};

struct got {
	struct got_rec r[64];
	int n;
	int stop_after; /* 0: never */
};

static int
collect(void *arg, const struct pmq_record *rec)
{
	struct got *g = arg;
	struct got_rec *r;
	struct pmq_header scratch[12];
	uint32_t i;

	assert_true(g->n < 64);
	r = &g->r[g->n++];
	memset(r, 0, sizeof(*r));
	assert_int_equal(rec->size, sizeof(*rec));
	r->offset = rec->offset;
	r->ts = rec->timestamp_ms;
	r->key_null = rec->key == NULL;
	r->value_null = rec->value == NULL;
	assert_true(rec->key_len < sizeof(r->key));
	assert_true(rec->value_len < sizeof(r->value));
	if (rec->key_len > 0)
		memcpy(r->key, rec->key, rec->key_len);
	if (rec->value_len > 0)
		memcpy(r->value, rec->value, rec->value_len);
	r->key_len = rec->key_len;
	r->value_len = rec->value_len;
	r->n_headers = rec->n_headers;
	assert_true(rec->n_headers <= 12);
	for (i = 0; i < rec->n_headers; i++) {
		assert_true(rec->headers[i].name_len < 24);
		memcpy(r->hname[i], rec->headers[i].name,
		       rec->headers[i].name_len);
		r->hval_null[i] = rec->headers[i].value == NULL;
		assert_true(rec->headers[i].value_len < 24);
		if (rec->headers[i].value_len > 0)
			memcpy(r->hval[i], rec->headers[i].value,
			       rec->headers[i].value_len);
		r->hval_len[i] = rec->headers[i].value_len;
	}
	r->f_rc = batch_record_to_fields(rec, &r->f, scratch, 12);
	if (r->f_rc == PMQ_OK) {
		if (r->f.topic != NULL) {
			assert_true(r->f.topic_len < sizeof(r->f_topic));
			memcpy(r->f_topic, r->f.topic, r->f.topic_len);
		}
		if (r->f.content_type != NULL)
			memcpy(r->f_ct, r->f.content_type,
			       r->f.content_type_len);
		r->f_n_headers = r->f.n_headers;
		/* pointers die with the call; keep only lengths/flags */
		r->f.topic = NULL;
		r->f.key = NULL;
		r->f.payload = NULL;
		r->f.headers = NULL;
		r->f.content_type = NULL;
		r->f.response_topic = NULL;
		r->f.correlation_data = NULL;
	}
	return g->stop_after != 0 && g->n >= g->stop_after;
}

static struct pmq_msg_fields
mqtt_msg(const char *topic, uint8_t qos, const void *payload, size_t plen,
         int64_t ts)
{
	struct pmq_msg_fields m;

	memset(&m, 0, sizeof(m));
	m.size = sizeof(m);
	m.qos = qos;
	m.topic = topic;
	m.topic_len = topic != NULL ? strlen(topic) : 0;
	m.payload = payload;
	m.payload_len = plen;
	m.timestamp_ms = ts;
	return m;
}

/* ---- CRC32C ---- */

static uint32_t
crc_bitwise(const uint8_t *p, size_t len)
{
	uint32_t c = 0xffffffffu;
	int k;

	while (len-- > 0) {
		c ^= *p++;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
	}
	return ~c;
}

static void
test_crc32c_vectors(void **state)
{
	uint8_t buf[32];
	uint8_t big[1031];
	size_t i, off, len;
	uint32_t c;

	(void)state;
	assert_int_equal(batch_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(batch_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(batch_crc32c(0, "", 0), 0);
	/* RFC 3720 (iSCSI) B.4 vectors */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(batch_crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(batch_crc32c(0, buf, 32), 0x62A8AB43u);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(batch_crc32c(0, buf, 32), 0x46DD794Eu);
	assert_int_equal(batch_crc32c_sw(0, buf, 32), 0x46DD794Eu);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	assert_int_equal(batch_crc32c(0, buf, 32), 0x113FDB5Cu);

	/* table, hardware and bitwise agree at every alignment and length,
	 * and the CRC can be computed in pieces */
	srand(7);
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)rand();
	for (off = 0; off < 9; off++) {
		for (len = 0; len + off <= sizeof(big); len += 1 + len / 3) {
			c = crc_bitwise(big + off, len);
			assert_int_equal(batch_crc32c(0, big + off, len), c);
			assert_int_equal(batch_crc32c_sw(0, big + off, len), c);
			assert_int_equal(
			    batch_crc32c(batch_crc32c(0, big + off, len / 2),
			                 big + off + len / 2, len - len / 2),
			    c);
			assert_int_equal(
			    batch_crc32c_sw(batch_crc32c_sw(0, big + off,
			                                    len / 3),
			                    big + off + len / 3,
			                    len - len / 3),
			    c);
		}
	}
	assert_int_equal(batch_crc32c(0, golden_kv + 21, sizeof(golden_kv) - 21),
	                 0xe99b8dd8u);
}

/* ---- varints ---- */

static void
check_varint(int32_t v, const char *hex)
{
	uint8_t buf[BATCH_VARINT_MAX], want[BATCH_VARINT_MAX];
	size_t n, wn = strlen(hex) / 2, used, i;
	int32_t back;
	unsigned x;

	for (i = 0; i < wn; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &x), 1);
		want[i] = (uint8_t)x;
	}
	n = batch_varint_encode(v, buf);
	assert_int_equal(n, wn);
	assert_int_equal(batch_varint_size(v), wn);
	assert_memory_equal(buf, want, wn);
	assert_int_equal(batch_varint_decode(buf, n, &back, &used), PMQ_OK);
	assert_int_equal(used, n);
	assert_int_equal(back, v);
	/* every shorter input is truncated */
	for (i = 0; i < n; i++)
		assert_int_equal(batch_varint_decode(buf, i, &back, &used),
		                 PMQ_ERR_CORRUPT);
}

static void
check_varlong(int64_t v, const char *hex)
{
	uint8_t buf[BATCH_VARLONG_MAX], want[BATCH_VARLONG_MAX];
	size_t n, wn = strlen(hex) / 2, used, i;
	int64_t back;
	unsigned x;

	for (i = 0; i < wn; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &x), 1);
		want[i] = (uint8_t)x;
	}
	n = batch_varlong_encode(v, buf);
	assert_int_equal(n, wn);
	assert_int_equal(batch_varlong_size(v), wn);
	assert_memory_equal(buf, want, wn);
	assert_int_equal(batch_varlong_decode(buf, n, &back, &used), PMQ_OK);
	assert_int_equal(used, n);
	assert_true(back == v);
	for (i = 0; i < n; i++)
		assert_int_equal(batch_varlong_decode(buf, i, &back, &used),
		                 PMQ_ERR_CORRUPT);
}

static void
test_varints(void **state)
{
	static const uint8_t six[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t over32[] = { 0xff, 0xff, 0xff, 0xff, 0x1f };
	static const uint8_t eleven[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
		                          0x80, 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t over64[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
		                          0xff, 0xff, 0xff, 0xff, 0x03 };
	static const uint8_t padded[] = { 0x80, 0x00 }; /* non-canonical 0 */
	int32_t v;
	int64_t l;
	size_t used;

	(void)state;
	check_varint(0, "00");
	check_varint(-1, "01");
	check_varint(1, "02");
	check_varint(63, "7e");
	check_varint(-64, "7f");
	check_varint(64, "8001");
	check_varint(-65, "8101");
	check_varint(INT32_MAX, "feffffff0f");
	check_varint(INT32_MIN, "ffffffff0f");
	check_varlong(0, "00");
	check_varlong(-1, "01");
	check_varlong(INT32_MAX, "feffffff0f");
	check_varlong((int64_t)INT32_MAX + 1, "8080808010");
	check_varlong(INT64_MAX, "feffffffffffffffff01");
	check_varlong(INT64_MIN, "ffffffffffffffffff01");

	assert_int_equal(batch_varint_decode(six, sizeof(six), &v, &used),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(batch_varint_decode(over32, sizeof(over32), &v, &used),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(batch_varlong_decode(eleven, sizeof(eleven), &l,
	                                      &used),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(batch_varlong_decode(over64, sizeof(over64), &l,
	                                      &used),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(batch_varint_decode(padded, 2, &v, &used), PMQ_OK);
	assert_int_equal(v, 0);
	assert_int_equal(used, 2);
	assert_int_equal(batch_varint_decode(NULL, 0, &v, &used),
	                 PMQ_ERR_CORRUPT);
}

/* ---- golden bytes ---- */

static void
test_golden_kafka_batch(void **state)
{
	struct pmq_batch_meta meta;
	struct got g;
	size_t blen;

	(void)state;
	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_validate(golden_kv, sizeof(golden_kv), &meta),
	                 PMQ_OK);
	assert_int_equal(meta.size, sizeof(meta));
	assert_int_equal(meta.records, 1);
	assert_int_equal(meta.base_offset, 0);
	assert_true(meta.first_timestamp_ms == TS);
	assert_true(meta.max_timestamp_ms == TS);

	assert_int_equal(batch_next(golden_kv, sizeof(golden_kv), &blen, &meta),
	                 PMQ_OK);
	assert_int_equal(blen, sizeof(golden_kv));
	assert_int_equal(meta.records, 1);

	assert_int_equal(batch_records(golden_kv, sizeof(golden_kv), collect,
	                               &g),
	                 PMQ_OK);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].offset, 0);
	assert_true(g.r[0].ts == TS);
	assert_int_equal(g.r[0].key_len, 1);
	assert_string_equal(g.r[0].key, "k");
	assert_string_equal(g.r[0].value, "v");
	assert_int_equal(g.r[0].n_headers, 0);
	/* a plain Kafka record: no MQTT topic, the key stays the key */
	assert_int_equal(g.r[0].f_rc, PMQ_OK);
	assert_int_equal(g.r[0].f.has_key, 1);
	assert_int_equal(g.r[0].f.key_len, 1);
	assert_int_equal(g.r[0].f.topic_len, 0);
	assert_string_equal(g.r[0].f_topic, "");
	assert_int_equal(g.r[0].f.qos, 0);
	assert_int_equal(g.r[0].f.payload_len, 1);
}

static void
test_golden_build(void **state)
{
	struct pmq_msg_fields m = mqtt_msg("a/b", 1, "hi", 2, TS);
	const struct pmq_msg_fields *msgs[1] = { &m };
	void *out = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(batch_build(msgs, 1, 5, &out, &len), PMQ_OK);
	assert_int_equal(len, sizeof(golden_built));
	assert_memory_equal(out, golden_built, len);
	assert_int_equal(batch_validate(out, len, NULL), PMQ_OK);
	free(out);
}

/* ---- build / validate / decode ---- */

static void
test_round_trip(void **state)
{
	static const uint8_t bin[] = { 'a', 0, 'b', 0, 0, 0xff };
	struct pmq_header uh[3] = {
		{ "user", 4, "prop", 4 },
		{ "nul", 3, NULL, 0 },          /* Kafka null header value */
		{ "mqtt.topic", 10, "fake", 4 }, /* user property, same name */
	};
	struct pmq_msg_fields m[5];
	const struct pmq_msg_fields *msgs[5];
	struct pmq_batch_meta meta;
	struct got g;
	void *out;
	size_t len, i;

	(void)state;
	/* 0: plain MQTT publish, QoS 2, retained, v5 properties */
	m[0] = mqtt_msg("dev/1/temp", 2, "21.5", 4, TS + 10);
	m[0].retain = 1;
	m[0].payload_format = PMQ_PAYLOAD_UTF8;
	m[0].content_type = "text/plain";
	m[0].content_type_len = 10;
	m[0].response_topic = "r/t";
	m[0].response_topic_len = 3;
	m[0].correlation_data = "\x01\x00\x02";
	m[0].correlation_data_len = 3;
	/* 1: explicit key, binary payload with NULs, user headers; earlier
	 * timestamp than the first record */
	m[1] = mqtt_msg("dev/2", 0, bin, sizeof(bin), TS - 5);
	m[1].has_key = 1;
	m[1].key = "K1";
	m[1].key_len = 2;
	m[1].headers = uh;
	m[1].n_headers = 3;
	/* 2: no topic and no key: null key; empty payload (not null) */
	m[2] = mqtt_msg(NULL, 1, NULL, 0, TS + 100);
	/* 3: explicit empty key */
	m[3] = mqtt_msg("x", 0, "p", 1, TS);
	m[3].has_key = 1;
	m[3].key = "";
	m[3].key_len = 0;
	/* 4: timestamp 0 = now */
	m[4] = mqtt_msg("y", 0, "q", 1, 0);
	for (i = 0; i < 5; i++)
		msgs[i] = &m[i];

	assert_int_equal(batch_build(msgs, 5, 1000, &out, &len), PMQ_OK);
	assert_int_equal(batch_validate(out, len, &meta), PMQ_OK);
	assert_int_equal(meta.records, 5);
	assert_int_equal(meta.base_offset, 1000);
	assert_true(meta.first_timestamp_ms == TS + 10); /* first record */
	assert_true(meta.max_timestamp_ms > TS + 100);   /* now */

	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_records(out, len, collect, &g), PMQ_OK);
	assert_int_equal(g.n, 5);
	for (i = 0; i < 5; i++)
		assert_int_equal(g.r[i].offset, 1000 + (int64_t)i);

	/* record 0 */
	assert_true(g.r[0].ts == TS + 10);
	assert_string_equal(g.r[0].key, "dev/1/temp");
	assert_string_equal(g.r[0].value, "21.5");
	assert_int_equal(g.r[0].n_headers, 7);
	assert_string_equal(g.r[0].hname[0], "mqtt.topic");
	assert_string_equal(g.r[0].hval[0], "dev/1/temp");
	assert_string_equal(g.r[0].hname[1], "mqtt.qos");
	assert_string_equal(g.r[0].hval[1], "2");
	assert_string_equal(g.r[0].hname[2], "mqtt.retain");
	assert_string_equal(g.r[0].hname[3], "mqtt.payload_format");
	assert_string_equal(g.r[0].hname[4], "mqtt.content_type");
	assert_string_equal(g.r[0].hname[5], "mqtt.response_topic");
	assert_string_equal(g.r[0].hname[6], "mqtt.correlation_data");
	assert_int_equal(g.r[0].hval_len[6], 3);
	assert_int_equal(g.r[0].f_rc, PMQ_OK);
	assert_string_equal(g.r[0].f_topic, "dev/1/temp");
	assert_int_equal(g.r[0].f.has_key, 0); /* key was the topic */
	assert_int_equal(g.r[0].f.qos, 2);
	assert_int_equal(g.r[0].f.retain, 1);
	assert_int_equal(g.r[0].f.payload_format, PMQ_PAYLOAD_UTF8);
	assert_string_equal(g.r[0].f_ct, "text/plain");
	assert_int_equal(g.r[0].f.response_topic_len, 3);
	assert_int_equal(g.r[0].f.correlation_data_len, 3);
	assert_int_equal(g.r[0].f_n_headers, 0);
	assert_true(g.r[0].f.timestamp_ms == TS + 10);

	/* record 1: negative timestamp delta, binary value */
	assert_true(g.r[1].ts == TS - 5);
	assert_string_equal(g.r[1].key, "K1");
	assert_int_equal(g.r[1].value_len, sizeof(bin));
	assert_memory_equal(g.r[1].value, bin, sizeof(bin));
	assert_int_equal(g.r[1].n_headers, 5);
	assert_string_equal(g.r[1].hname[2], "user");
	assert_string_equal(g.r[1].hval[2], "prop");
	assert_string_equal(g.r[1].hname[3], "nul");
	assert_int_equal(g.r[1].hval_null[3], 1);
	assert_string_equal(g.r[1].hname[4], "mqtt.topic");
	assert_int_equal(g.r[1].f.has_key, 1);
	assert_int_equal(g.r[1].f.key_len, 2);
	assert_string_equal(g.r[1].f_topic, "dev/2");
	/* the user's own "mqtt.topic" stays a header */
	assert_int_equal(g.r[1].f_n_headers, 3);
	assert_int_equal(g.r[1].f.payload_len, sizeof(bin));

	/* record 2: null key, empty (non-null) value, no topic header */
	assert_int_equal(g.r[2].key_null, 1);
	assert_int_equal(g.r[2].value_null, 0);
	assert_int_equal(g.r[2].value_len, 0);
	assert_int_equal(g.r[2].n_headers, 1);
	assert_string_equal(g.r[2].hname[0], "mqtt.qos");
	assert_int_equal(g.r[2].f.has_key, 0);
	assert_int_equal(g.r[2].f.topic_len, 0);
	assert_int_equal(g.r[2].f.qos, 1);

	/* record 3: empty key is a key, not null */
	assert_int_equal(g.r[3].key_null, 0);
	assert_int_equal(g.r[3].key_len, 0);
	assert_int_equal(g.r[3].f.has_key, 1);

	/* record 4: stamped at build time */
	assert_true(g.r[4].ts == meta.max_timestamp_ms);

	/* stop after two records */
	memset(&g, 0, sizeof(g));
	g.stop_after = 2;
	assert_int_equal(batch_records(out, len, collect, &g), PMQ_OK);
	assert_int_equal(g.n, 2);
	free(out);
}

static void
test_build_errors(void **state)
{
	struct pmq_msg_fields m = mqtt_msg("t", 3, "x", 1, TS);
	const struct pmq_msg_fields *msgs[1] = { &m };
	void *out = (void *)1;
	size_t len = 0;

	(void)state;
	assert_int_equal(batch_build(msgs, 0, 0, &out, &len), PMQ_ERR_INVAL);
	assert_int_equal(batch_build(NULL, 1, 0, &out, &len), PMQ_ERR_INVAL);
	assert_int_equal(batch_build(msgs, 1, 0, &out, &len), PMQ_ERR_INVAL);
	m.qos = 0;
	m.payload = NULL; /* length without bytes */
	assert_int_equal(batch_build(msgs, 1, 0, &out, &len), PMQ_ERR_INVAL);
	m.payload = "x";
	m.payload_len = (size_t)INT32_MAX + 1;
	assert_int_equal(batch_build(msgs, 1, 0, &out, &len), PMQ_ERR_RANGE);
	assert_ptr_equal(out, (void *)1);
}

static void
test_set_base_offset(void **state)
{
	struct pmq_msg_fields m[3];
	const struct pmq_msg_fields *msgs[3] = { &m[0], &m[1], &m[2] };
	struct pmq_batch_meta meta;
	struct got g;
	void *out;
	size_t len;
	int i;

	(void)state;
	for (i = 0; i < 3; i++)
		m[i] = mqtt_msg("t", 0, "v", 1, TS + i);
	assert_int_equal(batch_build(msgs, 3, 0, &out, &len), PMQ_OK);
	assert_int_equal(batch_set_base_offset(out, len, 123456789012LL),
	                 PMQ_OK);
	assert_int_equal(batch_validate(out, len, &meta), PMQ_OK);
	assert_true(meta.base_offset == 123456789012LL);
	assert_int_equal(meta.records, 3);
	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_records(out, len, collect, &g), PMQ_OK);
	assert_int_equal(g.n, 3);
	assert_true(g.r[2].offset == 123456789014LL);
	assert_true(g.r[2].ts == TS + 2);
	assert_int_equal(batch_set_base_offset(out, 60, 1), PMQ_ERR_INVAL);
	free(out);
}

/* ---- malformed input ---- */

static void *
build_sample(size_t *len)
{
	static const struct pmq_header uh[2] = { { "h1", 2, "v1", 2 },
		                                 { "h2", 2, NULL, 0 } };
	struct pmq_msg_fields m[3];
	const struct pmq_msg_fields *msgs[3] = { &m[0], &m[1], &m[2] };
	void *out;

	m[0] = mqtt_msg("s/1", 1, "payload one", 11, TS);
	m[1] = mqtt_msg("s/2", 0, "\0\0", 2, TS + 1);
	m[1].headers = uh;
	m[1].n_headers = 2;
	m[2] = mqtt_msg("s/3", 2, "", 0, TS + 2);
	m[2].has_key = 1;
	m[2].key = "key";
	m[2].key_len = 3;
	assert_int_equal(batch_build(msgs, 3, 0, &out, len), PMQ_OK);
	return out;
}

static int
count_only(void *arg, const struct pmq_record *rec)
{
	(void)rec;
	(*(int *)arg)++;
	return 0;
}

static void
test_every_byte_corruption(void **state)
{
	uint8_t *b;
	size_t len, i;
	int bit, n;

	(void)state;
	b = build_sample(&len);
	/* crc field and everything it covers */
	for (i = 17; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			b[i] ^= (uint8_t)(1u << bit);
			assert_int_equal(batch_validate(b, len, NULL),
			                 PMQ_ERR_CORRUPT);
			n = 0;
			assert_int_equal(batch_records(b, len, count_only, &n),
			                 PMQ_ERR_CORRUPT);
			assert_int_equal(n, 0);
			b[i] ^= (uint8_t)(1u << bit);
		}
		b[i] ^= 0xff;
		assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_CORRUPT);
		b[i] ^= 0xff;
	}
	/* not covered: base offset and leader epoch may change freely */
	for (i = 0; i < 8; i++) {
		b[i] ^= 0x5a;
		b[12 + i / 2] ^= 0x33;
		assert_int_equal(batch_validate(b, len, NULL), PMQ_OK);
		b[i] ^= 0x5a;
		b[12 + i / 2] ^= 0x33;
	}
	b[16] = 1; /* magic */
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_INVAL);
	b[16] = 2;
	b[11] ^= 1; /* batchLength */
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_CORRUPT);
	b[11] ^= 1;
	assert_int_equal(batch_validate(b, len, NULL), PMQ_OK);
	free(b);
}

static void
test_truncation(void **state)
{
	uint8_t *full, *b;
	size_t len, l, blen;
	int n;

	(void)state;
	full = build_sample(&len);
	for (l = 0; l < len; l++) {
		b = dup_exact(full, l);
		assert_int_not_equal(batch_validate(b, l, NULL), PMQ_OK);
		assert_int_equal(batch_next(b, l, &blen, NULL), PMQ_ERR_AGAIN);
		if (l >= 12)
			assert_int_equal(blen, len);
		n = 0;
		/* a partial batch is a read's tail: ignored */
		assert_int_equal(batch_records(b, l, count_only, &n), PMQ_OK);
		assert_int_equal(n, 0);
		free(b);
	}
	/* one byte too many is not "exactly one batch" */
	b = malloc(len + 1);
	assert_non_null(b);
	memcpy(b, full, len);
	b[len] = 0;
	assert_int_equal(batch_validate(b, len + 1, NULL), PMQ_ERR_CORRUPT);
	free(b);
	free(full);
}

static void
test_concatenated(void **state)
{
	uint8_t *one, *buf;
	size_t len, total, pos, blen;
	struct pmq_batch_meta meta;
	struct got g;
	int k;

	(void)state;
	one = build_sample(&len);
	total = 3 * len - 7; /* two whole batches and a cut third */
	buf = malloc(total);
	assert_non_null(buf);
	for (k = 0; k < 3; k++) {
		batch_set_base_offset(one, len, 3 * k);
		memcpy(buf + (size_t)k * len, one,
		       k < 2 ? len : len - 7);
	}
	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_records(buf, total, collect, &g), PMQ_OK);
	assert_int_equal(g.n, 6);
	for (k = 0; k < 6; k++)
		assert_int_equal(g.r[k].offset, k);
	assert_string_equal(g.r[3].key, "s/1");
	assert_string_equal(g.r[5].key, "key");

	/* batch_next walks them like a storage index would */
	pos = 0;
	for (k = 0; k < 2; k++) {
		assert_int_equal(batch_next(buf + pos, total - pos, &blen,
		                            &meta),
		                 PMQ_OK);
		assert_int_equal(blen, len);
		assert_int_equal(meta.base_offset, 3 * k);
		assert_int_equal(meta.records, 3);
		pos += blen;
	}
	assert_int_equal(batch_next(buf + pos, total - pos, &blen, &meta),
	                 PMQ_ERR_AGAIN);
	/* a run of batches is not one batch */
	assert_int_equal(batch_validate(buf, 2 * len, NULL), PMQ_ERR_CORRUPT);

	/* a broken second batch: the first one's records come, then CORRUPT */
	buf[len + 30] ^= 1;
	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_records(buf, total, collect, &g),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(g.n, 3);
	/* garbage batchLength */
	put32(buf + len + 8, 10);
	assert_int_equal(batch_next(buf + len, total - len, &blen, NULL),
	                 PMQ_ERR_CORRUPT);
	free(buf);
	free(one);
}

/* Kafka's rules on a well-formed batch (CRC fixed up each time). */
static void
test_invalid_rules(void **state)
{
	uint8_t *b;
	size_t len;

	(void)state;
	b = build_sample(&len);
	/* recordsCount != lastOffsetDelta + 1 */
	put32(b + 57, 2);
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_INVAL);
	put32(b + 23, 1);
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_CORRUPT);
	put32(b + 57, 0); /* empty batch */
	put32(b + 23, (uint32_t)-1);
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_INVAL);
	put32(b + 57, 3);
	put32(b + 23, 2);
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_OK);
	/* first record's offsetDelta (byte after its length, attributes,
	 * one-byte timestampDelta) */
	b[61 + 1 + 1 + 1] = 0x02; /* offsetDelta 1 */
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_INVAL);
	b[61 + 3] = 0x00;
	/* unknown codec 7 */
	b[22] = 7;
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_ERR_INVAL);
	b[22] = 0;
	recrc(b, len);
	assert_int_equal(batch_validate(b, len, NULL), PMQ_OK);
	assert_int_equal(batch_validate(NULL, len, NULL), PMQ_ERR_INVAL);
	free(b);
}

/* Random mutations with the CRC fixed up, so the record decoder itself
 * sees hostile bytes.  Whatever validate accepts must decode. */
static void
test_fuzz_records(void **state)
{
	uint8_t *full, *b;
	size_t len, i;
	int iter, k, n, rv, rr;

	(void)state;
	full = build_sample(&len);
	srand(12345);
	for (iter = 0; iter < 20000; iter++) {
		b = dup_exact(full, len);
		for (k = 0; k < 1 + iter % 4; k++) {
			i = 61 + (size_t)rand() % (len - 61);
			b[i] = (iter & 1) ? (uint8_t)rand() : b[i] ^ 0x80;
		}
		recrc(b, len);
		rv = batch_validate(b, len, NULL);
		n = 0;
		rr = batch_records(b, len, count_only, &n);
		assert_true(rv == PMQ_OK || rv == PMQ_ERR_CORRUPT ||
		            rv == PMQ_ERR_INVAL);
		assert_true(rr == PMQ_OK || rr == PMQ_ERR_CORRUPT);
		if (rv == PMQ_OK) {
			assert_int_equal(rr, PMQ_OK);
			assert_int_equal(n, 3);
		}
		free(b);
	}
	free(full);
}

static void
test_compressed_and_control(void **state)
{
	uint8_t b[61 + 9];
	struct pmq_batch_meta meta;
	size_t blen;
	int n = 0;

	(void)state;
	/* gzip batch: 2 records inside an opaque blob */
	memcpy(b, golden_kv, 61);
	put32(b + 8, sizeof(b) - 12);
	b[22] = 1;        /* gzip */
	put32(b + 23, 1); /* lastOffsetDelta */
	put32(b + 57, 2);
	memcpy(b + 61, "\x1f\x8b\x08junk!", 9);
	recrc(b, sizeof(b));
	assert_int_equal(batch_validate(b, sizeof(b), &meta), PMQ_OK);
	assert_int_equal(meta.records, 2);
	assert_int_equal(batch_next(b, sizeof(b), &blen, &meta), PMQ_OK);
	/* The blob is no gzip stream: corrupt, nothing delivered. */
	assert_int_equal(batch_records(b, sizeof(b), count_only, &n),
	                 PMQ_ERR_CORRUPT);
	assert_int_equal(n, 0);
	b[70 - 1] ^= 1;
	assert_int_equal(batch_validate(b, sizeof(b), NULL), PMQ_ERR_CORRUPT);

	/* a control batch (transaction marker) is skipped by readers */
	{
		uint8_t c[sizeof(golden_kv)];

		memcpy(c, golden_kv, sizeof(c));
		c[22] = BATCH_ATTR_CONTROL | BATCH_ATTR_TRANSACTIONAL;
		recrc(c, sizeof(c));
		n = 0;
		assert_int_equal(batch_records(c, sizeof(c), count_only, &n),
		                 PMQ_OK);
		assert_int_equal(n, 0);
	}
}


/* ---- compressed batches: each codec, as Kafka clients write them ---- */

/* Every record as text, to compare decodings byte for byte. */
struct rec_text {
	char buf[4096];
	size_t n;
};

static int
rec_to_text(void *arg, const struct pmq_record *rec)
{
	struct rec_text *t = arg;
	uint32_t i;
	int k;

	k = snprintf(t->buf + t->n, sizeof t->buf - t->n,
	             "o=%lld ts=%lld k=%.*s v=%zu:", (long long)rec->offset,
	             (long long)rec->timestamp_ms,
	             rec->key != NULL ? (int)rec->key_len : 4,
	             rec->key != NULL ? (const char *)rec->key : "null",
	             rec->value_len);
	assert_true(k > 0 && (size_t)k < sizeof t->buf - t->n);
	t->n += (size_t)k;
	assert_true(rec->value_len < sizeof t->buf - t->n);
	if (rec->value_len > 0)
		memcpy(t->buf + t->n, rec->value, rec->value_len);
	t->n += rec->value_len;
	for (i = 0; i < rec->n_headers; i++) {
		k = snprintf(t->buf + t->n, sizeof t->buf - t->n, " %.*s=%s",
		             (int)rec->headers[i].name_len,
		             rec->headers[i].name,
		             rec->headers[i].value != NULL ? "v" : "null");
		assert_true(k > 0 && (size_t)k < sizeof t->buf - t->n);
		t->n += (size_t)k;
	}
	t->buf[t->n++] = '\n';
	return 0;
}

/* A batch with sample's header and records replaced by blob (codec). */
static uint8_t *
make_compressed(const uint8_t *sample, unsigned codec, const void *blob,
                size_t blob_len, size_t *len)
{
	uint8_t *b;

	*len = 61 + blob_len;
	b = malloc(*len);
	assert_non_null(b);
	memcpy(b, sample, 61);
	memcpy(b + 61, blob, blob_len);
	put32(b + 8, (uint32_t)(*len - 12));
	b[21] = 0;
	b[22] = (uint8_t)codec;
	recrc(b, *len);
	return b;
}

static size_t
gzip_compress(const void *src, size_t len, uint8_t *dst, size_t cap)
{
	z_stream z;

	memset(&z, 0, sizeof z);
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8,
	                              Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (Bytef *)(uintptr_t)src;
	z.avail_in = (uInt)len;
	z.next_out = dst;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	deflateEnd(&z);
	return cap - z.avail_out;
}

/* xerial framing: magic, version 1, compatible 1, [len, block]... with
 * the input split in two chunks. */
static size_t
xerial_compress(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
	static const uint8_t hdr[16] = { 0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0,
		                         0, 0, 0, 1, 0, 0, 0, 1 };
	size_t pos = 16, half = len / 2, part, n, i;

	memcpy(dst, hdr, 16);
	for (i = 0; i < 2; i++) {
		part = i == 0 ? half : len - half;
		n = cap - pos - 4;
		assert_int_equal(snappy_compress((const char *)src +
		                                 (i ? half : 0), part,
		                                 (char *)dst + pos + 4, &n),
		                 SNAPPY_OK);
		put32(dst + pos, (uint32_t)n);
		pos += 4 + n;
	}
	return pos;
}

static void
test_codecs(void **state)
{
	struct rec_text want = { .n = 0 }, got;
	uint8_t *sample, *b, blob[8192];
	size_t slen, rlen, blen, len, n;
	const uint8_t *recs;
	unsigned codec;
	int variant;

	(void)state;
	sample = build_sample(&slen);
	assert_int_equal(batch_records(sample, slen, rec_to_text, &want),
	                 PMQ_OK);
	assert_true(want.n > 0);
	recs = sample + 61;
	rlen = slen - 61;

	for (codec = 1; codec <= 4; codec++) {
		for (variant = 0; variant < (codec == 2 ? 2 : 1); variant++) {
			switch (codec) {
			case 1:
				blen = gzip_compress(recs, rlen, blob,
				                     sizeof blob);
				break;
			case 2:
				if (variant == 0) {
					blen = sizeof blob;
					assert_int_equal(snappy_compress(
					    (const char *)recs, rlen,
					    (char *)blob, &blen), SNAPPY_OK);
				} else {
					blen = xerial_compress(recs, rlen, blob,
					                       sizeof blob);
				}
				break;
			case 3:
				blen = LZ4F_compressFrame(blob, sizeof blob,
				                          recs, rlen, NULL);
				assert_false(LZ4F_isError(blen));
				break;
			default:
				blen = ZSTD_compress(blob, sizeof blob, recs,
				                     rlen, 3);
				assert_false(ZSTD_isError(blen));
				break;
			}
			b = make_compressed(sample, codec, blob, blen, &len);
			assert_int_equal(batch_validate(b, len, NULL), PMQ_OK);
			got.n = 0;
			assert_int_equal(batch_records(b, len, rec_to_text,
			                               &got), PMQ_OK);
			assert_int_equal(got.n, want.n);
			assert_memory_equal(got.buf, want.buf, want.n);
			free(b);

			/* Every truncation of the blob is refused without
			 * a crash, and never yields extra records. */
			for (n = 0; n < blen; n++) {
				int cnt = 0, rc;

				b = make_compressed(sample, codec, blob, n,
				                    &len);
				rc = batch_records(b, len, count_only, &cnt);
				assert_true(rc == PMQ_ERR_CORRUPT ||
				            (rc == PMQ_OK && cnt <= 3));
				free(b);
			}
		}
	}
	free(sample);
}

/* A tiny blob that inflates past the bound is refused, not allocated. */
static void
test_codec_bomb(void **state)
{
	size_t big = (size_t)65 * 1024 * 1024, cap, blen, len;
	uint8_t *zeros, *blob, *b, sample[61];
	int n = 0;

	(void)state;
	memcpy(sample, golden_kv, 61);
	zeros = calloc(1, big);
	assert_non_null(zeros);
	cap = ZSTD_compressBound(big);
	blob = malloc(cap);
	assert_non_null(blob);
	blen = ZSTD_compress(blob, cap, zeros, big, 1);
	assert_false(ZSTD_isError(blen));
	free(zeros);
	b = make_compressed(sample, 4, blob, blen, &len);
	assert_int_equal(batch_records(b, len, count_only, &n), PMQ_ERR_LIMIT);
	assert_int_equal(n, 0);
	free(b);
	free(blob);
}

static void
test_log_append_time(void **state)
{
	uint8_t b[sizeof(golden_kv)];
	struct got g;

	(void)state;
	memcpy(b, golden_kv, sizeof(b));
	b[22] = BATCH_ATTR_LOG_APPEND_TIME;
	b[42] = 0x01; /* maxTimestamp low byte: TS + 1 */
	recrc(b, sizeof(b));
	assert_int_equal(batch_validate(b, sizeof(b), NULL), PMQ_OK);
	memset(&g, 0, sizeof(g));
	assert_int_equal(batch_records(b, sizeof(b), collect, &g), PMQ_OK);
	assert_int_equal(g.n, 1);
	assert_true(g.r[0].ts == TS + 1);
}

static void
test_record_to_fields(void **state)
{
	struct pmq_header h[5] = {
		{ "mqtt.qos", 8, "7", 1 },   /* invalid: stays a header */
		{ "mqtt.qos", 8, "1", 1 },   /* first valid one is taken */
		{ "mqtt.topic", 10, NULL, 0 }, /* null: stays a header */
		{ "a", 1, "b", 1 },
		{ "mqtt.retain", 11, "1", 1 },
	};
	struct pmq_record r;
	struct pmq_msg_fields f;
	struct pmq_header scratch[5];

	(void)state;
	memset(&r, 0, sizeof(r));
	r.size = sizeof(r);
	r.headers = h;
	r.n_headers = 5;
	r.key = NULL;
	r.value = "v";
	r.value_len = 1;
	r.timestamp_ms = 42;
	assert_int_equal(batch_record_to_fields(&r, &f, scratch, 5), PMQ_OK);
	assert_int_equal(f.size, sizeof(f));
	assert_int_equal(f.qos, 1);
	assert_int_equal(f.retain, 1);
	assert_null(f.topic);
	assert_int_equal(f.has_key, 0);
	assert_int_equal(f.n_headers, 3);
	assert_ptr_equal(f.headers, scratch);
	assert_string_equal(scratch[0].value, "7");
	assert_int_equal(scratch[1].name_len, 10);
	assert_int_equal(f.timestamp_ms, 42);
	assert_int_equal(batch_record_to_fields(&r, &f, scratch, 2),
	                 PMQ_ERR_LIMIT);
	assert_int_equal(batch_record_to_fields(NULL, &f, scratch, 5),
	                 PMQ_ERR_INVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_codecs),
		cmocka_unit_test(test_codec_bomb),
		cmocka_unit_test(test_varints),
		cmocka_unit_test(test_golden_kafka_batch),
		cmocka_unit_test(test_golden_build),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_build_errors),
		cmocka_unit_test(test_set_base_offset),
		cmocka_unit_test(test_every_byte_corruption),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_concatenated),
		cmocka_unit_test(test_invalid_rules),
		cmocka_unit_test(test_fuzz_records),
		cmocka_unit_test(test_compressed_and_control),
		cmocka_unit_test(test_log_append_time),
		cmocka_unit_test(test_record_to_fields),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
