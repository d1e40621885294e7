/*
 * test_kafka_codec.c - the kafka plugin's wire codec (plugins/kafka/
 * codec.c) against hand-made requests: good ones of each shape
 * (non-flexible, flexible ApiVersions v3), and bad ones: every truncation,
 * negative lengths, null where Kafka forbids it, array counts the frame
 * cannot hold, embedded NULs, unknown API keys and versions, and the
 * arena bound.  Also the response encoders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"

/* Request header v1: key, version, correlation id, client id. */
static void
hdr(struct kc_writer *w, int16_t key, int16_t ver, int32_t corr)
{
	kc_w_init(w, 0);
	kc_w_i16(w, key);
	kc_w_i16(w, ver);
	kc_w_i32(w, corr);
	kc_w_str(w, "test-client");
}

/* A Produce v3 request with one topic, one partition, records bytes. */
static void
produce_req(struct kc_writer *w)
{
	static const uint8_t recs[70] = { 0 };

	hdr(w, KC_PRODUCE, 3, 42);
	kc_w_str(w, NULL); /* transactional_id */
	kc_w_i16(w, -1);
	kc_w_i32(w, 30000);
	kc_w_array(w, 1);
	kc_w_str(w, "t1");
	kc_w_array(w, 1);
	kc_w_i32(w, 2);
	kc_w_bytes(w, recs, sizeof recs);
}

static void
test_produce_decodes(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	produce_req(&w);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.api_key, KC_PRODUCE);
	assert_int_equal(q.api_version, 3);
	assert_int_equal(q.correlation_id, 42);
	assert_string_equal(q.client_id, "test-client");
	assert_null(q.transactional_id);
	assert_int_equal(q.acks, -1);
	assert_int_equal(q.n_topics, 1);
	assert_string_equal(q.topics[0].name, "t1");
	assert_int_equal(q.topics[0].n_parts, 1);
	assert_int_equal(q.topics[0].parts[0].index, 2);
	assert_int_equal(q.topics[0].parts[0].data_len, 70);
	assert_ptr_equal(q.topics[0].parts[0].data, w.buf + w.len - 70);
	assert_false(q.flexible);
	kc_arena_free(&a);
	kc_w_free(&w);
}

/* Every proper prefix of a good request is refused, never read past. */
static void
test_truncations(void **state)
{
	struct kc_writer w;
	size_t n;

	(void)state;
	produce_req(&w);
	for (n = 0; n < w.len; n++) {
		struct kc_arena a = { 0 };
		struct kc_request q;
		/* An exact-size copy so ASan sees any over-read. */
		uint8_t *copy = malloc(n > 0 ? n : 1);

		assert_non_null(copy);
		memcpy(copy, w.buf, n);
		assert_int_equal(kc_decode(copy, n, &a, &q), KC_MALFORMED);
		if (n >= KC_HEADER_MIN)
			assert_int_equal(q.correlation_id, 42);
		kc_arena_free(&a);
		free(copy);
	}
	kc_w_free(&w);
}

static void
test_negative_lengths(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	/* A string of length -2 (only -1 means null). */
	hdr(&w, KC_FIND_COORDINATOR, 0, 1);
	kc_w_i16(&w, -2);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* A null group id where Kafka requires a string. */
	hdr(&w, KC_FIND_COORDINATOR, 0, 1);
	kc_w_str(&w, NULL);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* A topic array of -5. */
	hdr(&w, KC_METADATA, 1, 1);
	kc_w_i32(&w, -5);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* Bytes of length -7 in Produce records. */
	hdr(&w, KC_PRODUCE, 3, 1);
	kc_w_str(&w, NULL);
	kc_w_i16(&w, 1);
	kc_w_i32(&w, 1000);
	kc_w_array(&w, 1);
	kc_w_str(&w, "t");
	kc_w_array(&w, 1);
	kc_w_i32(&w, 0);
	kc_w_i32(&w, -7);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* A null client id is fine (Kafka: nullable). */
	kc_w_init(&w, 0);
	kc_w_i16(&w, KC_LIST_GROUPS);
	kc_w_i16(&w, 0);
	kc_w_i32(&w, 9);
	kc_w_str(&w, NULL);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_null(q.client_id);
	kc_w_free(&w);
	kc_arena_free(&a);
}

static void
test_metadata_null_and_empty(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	/* v1+: null = all topics; v4 carries allow_auto_topic_creation. */
	hdr(&w, KC_METADATA, 4, 1);
	kc_w_array(&w, -1);
	kc_w_i8(&w, 0);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.n_topics, -1);
	assert_false(q.allow_auto_create);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* v0: an empty list = all topics, auto-creation implied. */
	hdr(&w, KC_METADATA, 0, 1);
	kc_w_array(&w, 0);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.n_topics, -1);
	assert_true(q.allow_auto_create);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* v0: a null list is not allowed. */
	hdr(&w, KC_METADATA, 0, 1);
	kc_w_array(&w, -1);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);
}

/* A count the remaining bytes cannot hold is refused before any
 * allocation, so a 20-byte frame cannot ask for 2^31 elements. */
static void
test_huge_counts(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	hdr(&w, KC_METADATA, 1, 1);
	kc_w_i32(&w, INT32_MAX);
	kc_w_str(&w, "a");
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	assert_true(a.total <= sizeof "test-client"); /* the client id only */
	kc_w_free(&w);
	kc_arena_free(&a);

	/* A string longer than the frame. */
	hdr(&w, KC_METADATA, 1, 1);
	kc_w_i32(&w, 1);
	kc_w_i16(&w, 30000);
	kc_w_raw(&w, "abc", 3);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);
}

static void
test_arena_limit(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;
	int i;

	(void)state;
	hdr(&w, KC_METADATA, 1, 1);
	kc_w_array(&w, 200);
	for (i = 0; i < 200; i++)
		kc_w_str(&w, "topic-name");
	a.limit = 512;
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_NOMEM);
	kc_arena_free(&a);
	a.limit = 0; /* default: plenty */
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.n_topics, 200);
	assert_string_equal(q.topics[199].name, "topic-name");
	kc_arena_free(&a);
	kc_w_free(&w);
}

static void
test_embedded_nul(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	hdr(&w, KC_METADATA, 1, 1);
	kc_w_array(&w, 1);
	kc_w_i16(&w, 3);
	kc_w_raw(&w, "a\0b", 3);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);
}

static void
test_unknown_key_and_version(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;
	const uint8_t *p;

	(void)state;
	hdr(&w, 99, 0, 7);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_UNKNOWN_API);
	assert_int_equal(q.correlation_id, 7);
	kc_w_free(&w);

	/* Produce v2 (magic 1) is below our range, v8 above it. */
	hdr(&w, KC_PRODUCE, 2, 8);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q),
	                 KC_UNSUPPORTED_VERSION);
	kc_w_free(&w);
	hdr(&w, KC_PRODUCE, 8, 8);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q),
	                 KC_UNSUPPORTED_VERSION);
	kc_w_free(&w);

	/* ApiVersions v4: the answer Kafka gives is a v0 body with 35. */
	hdr(&w, KC_API_VERSIONS, 4, 0x01020304);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q),
	                 KC_UNSUPPORTED_VERSION);
	assert_int_equal(q.api_key, KC_API_VERSIONS);
	kc_w_free(&w);
	kc_api_versions_unsupported(&w, q.correlation_id);
	assert_false(w.err);
	p = w.buf;
	assert_int_equal((p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]),
	                 w.len - 4);
	assert_memory_equal(p + 4, "\x01\x02\x03\x04", 4);
	assert_memory_equal(p + 8, "\x00\x23", 2); /* 35 */
	assert_int_equal(p[13], 17);                /* APIs listed */
	assert_int_equal(w.len, 4 + 4 + 2 + 4 + 17 * 6);
	kc_w_free(&w);

	/* Shorter than a header: nothing to answer. */
	assert_int_equal(kc_decode((const uint8_t *)"\0\x12\0", 3, &a, &q),
	                 KC_MALFORMED);
	kc_arena_free(&a);
}

/* librdkafka's first request: ApiVersions v3, header v2 (non-compact
 * client id, then tags), compact strings and tags in the body. */
static void
test_api_versions_v3(void **state)
{
	static const uint8_t req[] = {
		0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x05, /* hdr */
		0x00, 0x07, 'r', 'd', 'k', 'a', 'f', 'k', 'a',  /* client */
		0x00,                                           /* tags */
		0x0b, 'l', 'i', 'b', 'r', 'd', 'k', 'a', 'f', 'k', 'a',
		0x06, '2', '.', '0', '.', '2',
		0x01, 0x00, 0x01, 'x', /* one unknown tagged field */
	};
	struct kc_arena a = { 0 };
	struct kc_request q;
	struct kc_writer w;

	(void)state;
	assert_int_equal(kc_decode(req, sizeof req, &a, &q), KC_OK);
	assert_true(q.flexible);
	assert_string_equal(q.client_id, "rdkafka");
	assert_string_equal(q.software_name, "librdkafka");
	assert_string_equal(q.software_version, "2.0.2");
	/* The tagged field claims more bytes than there are. */
	assert_int_equal(kc_decode(req, sizeof req - 1, &a, &q),
	                 KC_MALFORMED);

	/* Response header: v0 for ApiVersions (no tag byte) ... */
	assert_int_equal(kc_decode(req, sizeof req, &a, &q), KC_OK);
	kc_response_begin(&w, &q);
	assert_int_equal(w.len, 8);
	kc_w_str(&w, "ab"); /* compact: length + 1 */
	assert_int_equal(w.buf[8], 3);
	kc_w_array(&w, -1);
	assert_int_equal(w.buf[11], 0);
	kc_response_finish(&w);
	assert_int_equal(w.buf[3], w.len - 4);
	kc_w_free(&w);
	/* ... and v1 (with tags) for other flexible APIs. */
	q.api_key = KC_METADATA;
	kc_response_begin(&w, &q);
	assert_int_equal(w.len, 9);
	kc_w_free(&w);
	kc_arena_free(&a);
}

/* A record set spliced by reference (Fetch): the length prefix alone,
 * then the bytes, equals the bytes field written whole, in both the
 * classic (int32) and the flexible (uvarint n+1) encodings. */
static void
test_bytes_len_splice(void **state)
{
	static const size_t sizes[] = {0, 1, 126, 127, 128, 70000};
	static uint8_t data[70000];
	struct kc_writer a, b;
	size_t i;
	int flex;

	(void)state;
	memset(data, 0x5a, sizeof data);
	for (flex = 0; flex <= 1; flex++)
		for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			kc_w_init(&a, flex);
			kc_w_init(&b, flex);
			kc_w_bytes(&a, data, sizes[i]);
			kc_w_bytes_len(&b, sizes[i]);
			kc_w_raw(&b, data, sizes[i]);
			assert_false(a.err);
			assert_false(b.err);
			assert_int_equal(a.len, b.len);
			assert_memory_equal(a.buf, b.buf, a.len);
			kc_w_free(&a);
			kc_w_free(&b);
		}
	kc_w_init(&a, 0);
	kc_w_bytes_len(&a, (size_t)INT32_MAX + 1);
	assert_true(a.err);
	kc_w_free(&a);
}

static void
test_group_requests(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	hdr(&w, KC_JOIN_GROUP, 5, 3);
	kc_w_str(&w, "g");
	kc_w_i32(&w, 10000);
	kc_w_i32(&w, 60000);
	kc_w_str(&w, "");
	kc_w_str(&w, NULL); /* group_instance_id */
	kc_w_str(&w, "consumer");
	kc_w_array(&w, 2);
	kc_w_str(&w, "range");
	kc_w_bytes(&w, "\x00\x01", 2);
	kc_w_str(&w, "roundrobin");
	kc_w_bytes(&w, "", 0);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_string_equal(q.group_id, "g");
	assert_int_equal(q.session_timeout_ms, 10000);
	assert_int_equal(q.rebalance_timeout_ms, 60000);
	assert_string_equal(q.member_id, "");
	assert_null(q.instance_id);
	assert_int_equal(q.n_protocols, 2);
	assert_string_equal(q.protocols[1].name, "roundrobin");
	assert_int_equal(q.protocols[0].meta_len, 2);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* OffsetFetch v2: topics null = every committed offset. */
	hdr(&w, KC_OFFSET_FETCH, 2, 3);
	kc_w_str(&w, "g");
	kc_w_array(&w, -1);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.n_topics, -1);
	kc_w_free(&w);
	kc_arena_free(&a);
	/* ... but v1 has no null. */
	hdr(&w, KC_OFFSET_FETCH, 1, 3);
	kc_w_str(&w, "g");
	kc_w_array(&w, -1);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_MALFORMED);
	kc_w_free(&w);
	kc_arena_free(&a);

	/* OffsetCommit v2 keeps retention_time_ms; metadata is nullable. */
	hdr(&w, KC_OFFSET_COMMIT, 2, 3);
	kc_w_str(&w, "g");
	kc_w_i32(&w, -1);
	kc_w_str(&w, "");
	kc_w_i64(&w, -1);
	kc_w_array(&w, 1);
	kc_w_str(&w, "t");
	kc_w_array(&w, 1);
	kc_w_i32(&w, 0);
	kc_w_i64(&w, 12345);
	kc_w_str(&w, NULL);
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.topics[0].parts[0].offset, 12345);
	assert_null(q.topics[0].parts[0].metadata);
	kc_w_free(&w);
	kc_arena_free(&a);
}

static void
test_fetch_v11(void **state)
{
	struct kc_writer w;
	struct kc_arena a = { 0 };
	struct kc_request q;

	(void)state;
	hdr(&w, KC_FETCH, 11, 4);
	kc_w_i32(&w, -1);
	kc_w_i32(&w, 500);
	kc_w_i32(&w, 1);
	kc_w_i32(&w, 52428800);
	kc_w_i8(&w, 0);
	kc_w_i32(&w, 0);
	kc_w_i32(&w, -1);
	kc_w_array(&w, 1);
	kc_w_str(&w, "t");
	kc_w_array(&w, 1);
	kc_w_i32(&w, 0);
	kc_w_i32(&w, -1);   /* current_leader_epoch */
	kc_w_i64(&w, 17);   /* fetch_offset */
	kc_w_i64(&w, -1);   /* log_start_offset */
	kc_w_i32(&w, 1048576);
	kc_w_array(&w, 0);  /* forgotten topics */
	kc_w_str(&w, "");   /* rack */
	assert_int_equal(kc_decode(w.buf, w.len, &a, &q), KC_OK);
	assert_int_equal(q.max_wait_ms, 500);
	assert_int_equal(q.max_bytes, 52428800);
	assert_int_equal(q.session_epoch, -1);
	assert_int_equal(q.topics[0].parts[0].offset, 17);
	assert_int_equal(q.topics[0].parts[0].max_bytes, 1048576);
	kc_w_free(&w);
	kc_arena_free(&a);
}

static void
test_topic_names(void **state)
{
	char long_name[251];

	(void)state;
	assert_true(kc_topic_name_valid("orders.v1_x-y"));
	assert_false(kc_topic_name_valid(""));
	assert_false(kc_topic_name_valid("."));
	assert_false(kc_topic_name_valid(".."));
	assert_false(kc_topic_name_valid("a/b"));
	assert_false(kc_topic_name_valid("a b"));
	memset(long_name, 'x', 250);
	long_name[250] = '\0';
	assert_false(kc_topic_name_valid(long_name));
	long_name[249] = '\0';
	assert_true(kc_topic_name_valid(long_name));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_produce_decodes),
		cmocka_unit_test(test_truncations),
		cmocka_unit_test(test_negative_lengths),
		cmocka_unit_test(test_metadata_null_and_empty),
		cmocka_unit_test(test_huge_counts),
		cmocka_unit_test(test_arena_limit),
		cmocka_unit_test(test_embedded_nul),
		cmocka_unit_test(test_unknown_key_and_version),
		cmocka_unit_test(test_api_versions_v3),
		cmocka_unit_test(test_bytes_len_splice),
		cmocka_unit_test(test_group_requests),
		cmocka_unit_test(test_fetch_v11),
		cmocka_unit_test(test_topic_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
