/*
 * test_topic.c - unit tests for core/topic.c (validation, matching with
 * the MQTT 3.1.1/5.0 section 4.7 examples, shared-subscription parsing,
 * the node hash table) and core/msg.c (copying, msg_fields size
 * handling, encode/decode round trip and corrupt input).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg.h"
#include "topic.h"

#define NAME_OK(s) topic_valid_name((s), strlen(s))
#define FILTER_OK(s) topic_valid_filter((s), strlen(s))

static void
test_valid_names(void **state)
{
	(void)state;
	assert_true(NAME_OK("sport/tennis/player1"));
	assert_true(NAME_OK("/"));
	assert_true(NAME_OK("a//b"));
	assert_true(NAME_OK("$SYS/broker"));
	assert_true(NAME_OK("caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80"));
	assert_false(NAME_OK(""));
	assert_false(NAME_OK("sport/+"));
	assert_false(NAME_OK("sport/#"));
	assert_false(NAME_OK("sp+ort"));
	assert_false(topic_valid_name("a\0b", 3));      /* NUL */
	assert_false(NAME_OK("a/\xc3"));                /* truncated */
	assert_false(NAME_OK("\xc0\xaf"));              /* overlong '/' */
	assert_false(NAME_OK("\xe0\x80\xaf"));          /* overlong */
	assert_false(NAME_OK("\xed\xa0\x80"));          /* surrogate */
	assert_false(NAME_OK("\xf4\x90\x80\x80"));      /* > U+10FFFF */
	assert_false(NAME_OK("\x80"));                  /* lone continuation */
	assert_false(NAME_OK("\xff"));
	assert_false(topic_valid_name(NULL, 0));
}

static void
test_length_limit(void **state)
{
	char *s = malloc(65537);

	(void)state;
	assert_non_null(s);
	memset(s, 'a', 65536);
	s[65536] = '\0';
	assert_true(topic_valid_name(s, 65535));
	assert_false(topic_valid_name(s, 65536));
	assert_true(topic_valid_filter(s, 65535));
	assert_false(topic_valid_filter(s, 65536));
	free(s);
}

static void
test_valid_filters(void **state)
{
	(void)state;
	assert_true(FILTER_OK("sport/tennis/player1/#"));
	assert_true(FILTER_OK("sport/#"));
	assert_true(FILTER_OK("#"));
	assert_true(FILTER_OK("+"));
	assert_true(FILTER_OK("+/tennis/#"));
	assert_true(FILTER_OK("sport/+/player1"));
	assert_true(FILTER_OK("/+"));
	assert_true(FILTER_OK("+/+"));
	assert_true(FILTER_OK("a//b"));
	assert_true(FILTER_OK("$SYS/#"));
	assert_false(FILTER_OK(""));
	assert_false(FILTER_OK("sport/tennis#"));
	assert_false(FILTER_OK("sport/#/ranking"));
	assert_false(FILTER_OK("sport+"));
	assert_false(FILTER_OK("sp+ort"));
	assert_false(FILTER_OK("+a"));
	assert_false(FILTER_OK("a/+b"));
	assert_false(FILTER_OK("##"));
	assert_false(FILTER_OK("#/"));
	assert_false(topic_valid_filter("a/\0", 3));
	assert_false(FILTER_OK("a/\xfe"));
}

#define MATCH(f, t) topic_match((f), (t))

static void
test_match_spec_examples(void **state)
{
	(void)state;
	/* 4.7.1.2 multi-level wildcard */
	assert_true(MATCH("sport/tennis/player1/#", "sport/tennis/player1"));
	assert_true(MATCH("sport/tennis/player1/#",
	                  "sport/tennis/player1/ranking"));
	assert_true(MATCH("sport/tennis/player1/#",
	                  "sport/tennis/player1/score/wimbledon"));
	assert_true(MATCH("sport/#", "sport"));
	assert_true(MATCH("#", "sport/tennis"));
	assert_false(MATCH("sport/tennis/player1/#", "sport/tennis/player2"));
	/* 4.7.1.3 single-level wildcard */
	assert_true(MATCH("sport/tennis/+", "sport/tennis/player1"));
	assert_true(MATCH("sport/tennis/+", "sport/tennis/player2"));
	assert_false(MATCH("sport/tennis/+", "sport/tennis/player1/ranking"));
	assert_false(MATCH("sport/+", "sport"));
	assert_true(MATCH("sport/+", "sport/"));
	assert_true(MATCH("+/+", "/finance"));
	assert_true(MATCH("/+", "/finance"));
	assert_false(MATCH("+", "/finance"));
	assert_true(MATCH("+/tennis/#", "sport/tennis/x"));
	assert_true(MATCH("sport/+/player1", "sport/tennis/player1"));
	/* 4.7.2 $-topics */
	assert_false(MATCH("#", "$SYS/x"));
	assert_false(MATCH("+/x", "$SYS/x"));
	assert_false(MATCH("+/monitor/Clients", "$SYS/monitor/Clients"));
	assert_true(MATCH("$SYS/#", "$SYS/x"));
	assert_true(MATCH("$SYS/monitor/+", "$SYS/monitor/Clients"));
	assert_true(MATCH("a/+", "a/$b"));    /* only the first level */
	assert_true(MATCH("a/#", "a/$b"));
}

static void
test_match_edges(void **state)
{
	(void)state;
	assert_true(MATCH("a//b", "a//b"));
	assert_true(MATCH("a/+/b", "a//b"));
	assert_false(MATCH("a/b", "a//b"));
	assert_true(MATCH("+", ""));          /* one empty level */
	assert_true(MATCH("/", "/"));
	assert_true(MATCH("+/+", "/"));
	assert_true(MATCH("#", "/"));
	assert_true(MATCH("/#", "/"));
	assert_true(MATCH("/#", "/a/b"));
	assert_false(MATCH("/#", "a"));
	assert_true(MATCH("+/#", "a"));
	assert_true(MATCH("a/+/#", "a/b"));
	assert_false(MATCH("a/+/#", "a"));
	assert_false(MATCH("a", "ab"));
	assert_false(MATCH("ab", "a"));
	assert_false(MATCH("a/b", "a"));
	assert_false(MATCH("a", "a/b"));
	assert_false(MATCH("a/", "a"));
	assert_false(MATCH("a", "a/"));
	assert_true(MATCH("a/", "a/"));
	assert_true(MATCH("a/#", "a/"));
	assert_false(MATCH("Sport", "sport"));
}

static void
test_parse_share(void **state)
{
	char *g;
	const char *f;

	(void)state;
	assert_int_equal(topic_parse_share("$share/grp/a/+/b", &g, &f), 1);
	assert_string_equal(g, "grp");
	assert_string_equal(f, "a/+/b");
	free(g);
	assert_int_equal(topic_parse_share("$share/g/#", &g, &f), 1);
	assert_string_equal(f, "#");
	free(g);
	assert_int_equal(topic_parse_share("a/b", &g, &f), 0);
	assert_null(g);
	assert_string_equal(f, "a/b");
	assert_int_equal(topic_parse_share("$SYS/x", &g, &f), 0);
	assert_int_equal(topic_parse_share("$share", &g, &f), 0);
	assert_int_equal(topic_parse_share("$share//a", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_null(g);
	assert_int_equal(topic_parse_share("$share/g", &g, &f), PMQ_ERR_INVAL);
	assert_int_equal(topic_parse_share("$share/g/", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_int_equal(topic_parse_share("$share/g+/a", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_int_equal(topic_parse_share("$share/#/a", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_int_equal(topic_parse_share("$share/g/a#", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_int_equal(topic_parse_share("$share/\xff/a", &g, &f),
	                 PMQ_ERR_INVAL);
	assert_true(topic_valid_share_group("g1"));
	assert_false(topic_valid_share_group(""));
	assert_false(topic_valid_share_group("a/b"));
	assert_false(topic_valid_share_group(NULL));
}

/* Named-children table: add, find, remove many (exercises probing and
 * backward-shift deletion). */
static void
test_node_table(void **state)
{
	enum { N = 2000 };
	struct topic_node root, *kids = calloc(N, sizeof(*kids));
	char (*names)[16] = calloc(N, 16);
	size_t i;

	(void)state;
	assert_non_null(kids);
	assert_non_null(names);
	memset(&root, 0, sizeof(root));
	for (i = 0; i < N; i++) {
		snprintf(names[i], 16, "k%zu", i);
		kids[i].level = names[i];
		kids[i].len = strlen(names[i]);
		kids[i].hash = topic_hash(names[i], kids[i].len);
		assert_int_equal(topic_node_add(&root, &kids[i]), PMQ_OK);
		assert_ptr_equal(kids[i].parent, &root);
	}
	assert_int_equal(root.n_kids, N);
	for (i = 0; i < N; i += 2)
		topic_node_remove(&root, &kids[i]);
	for (i = 0; i < N; i++) {
		struct topic_node *k = topic_node_find(
		    &root, names[i], strlen(names[i]), kids[i].hash);

		if (i % 2)
			assert_ptr_equal(k, &kids[i]);
		else
			assert_null(k);
	}
	for (i = 1; i < N; i += 2)
		topic_node_remove(&root, &kids[i]);
	assert_int_equal(root.n_kids, 0);
	assert_null(root.kids);
	free(kids);
	free(names);
}

static void
test_split(void **state)
{
	struct topic_level lv[4];

	(void)state;
	assert_int_equal(topic_count_levels("a//bc", 5), 3);
	topic_split("a//bc", 5, lv);
	assert_int_equal(lv[0].len, 1);
	assert_int_equal(lv[1].len, 0);
	assert_int_equal(lv[2].len, 2);
	assert_memory_equal(lv[2].p, "bc", 2);
	assert_true(lv[2].hash == topic_hash("bc", 2));
	assert_int_equal(topic_count_levels("/", 1), 2);
}

/* ---- msg ---- */

static const struct pmq_header hdrs[] = {
	{ "h1", 2, "v1", 2 },
	{ "null", 4, NULL, 0 },
	{ "empty", 5, "", 0 },
};

static void
full_fields(struct pmq_msg_fields *f)
{
	memset(f, 0, sizeof(*f));
	f->size = sizeof(*f);
	f->qos = 2;
	f->retain = 1;
	f->payload_format = PMQ_PAYLOAD_UTF8;
	f->has_key = 1;
	f->topic = "a/b";
	f->topic_len = 3;
	f->key = "";
	f->key_len = 0;
	f->payload = "hello\0world";
	f->payload_len = 11;
	f->headers = hdrs;
	f->n_headers = 3;
	f->timestamp_ms = 1700000000123;
	f->expiry_ms = 1800000000000;
	f->content_type = "text/plain";
	f->content_type_len = 10;
	f->response_topic = "reply/x";
	f->response_topic_len = 7;
	f->correlation_data = "\x01\x02";
	f->correlation_data_len = 2;
}

static void
check_full(const pmq_msg *m)
{
	struct pmq_msg_fields o;

	memset(&o, 0xaa, sizeof(o));
	o.size = sizeof(o);
	msg_fields(m, &o);
	assert_int_equal(o.size, sizeof(o));
	assert_int_equal(o.qos, 2);
	assert_int_equal(o.retain, 1);
	assert_int_equal(o.payload_format, 1);
	assert_int_equal(o.has_key, 1);
	assert_non_null(o.key);
	assert_int_equal(o.key_len, 0);
	assert_string_equal(o.topic, "a/b");
	assert_int_equal(o.payload_len, 11);
	assert_memory_equal(o.payload, "hello\0world", 11);
	assert_int_equal(o.n_headers, 3);
	assert_memory_equal(o.headers[0].name, "h1", 2);
	assert_memory_equal(o.headers[0].value, "v1", 2);
	assert_null(o.headers[1].value);
	assert_non_null(o.headers[2].value);
	assert_int_equal(o.headers[2].value_len, 0);
	assert_true(o.timestamp_ms == 1700000000123);
	assert_true(o.expiry_ms == 1800000000000);
	assert_string_equal(o.content_type, "text/plain");
	assert_string_equal(o.response_topic, "reply/x");
	assert_int_equal(o.correlation_data_len, 2);
	assert_memory_equal(o.correlation_data, "\x01\x02", 2);
}

static void
test_msg_new_copies(void **state)
{
	struct pmq_msg_fields f;
	char topic[] = "a/b";
	pmq_msg *m;
	int err = 1;

	(void)state;
	full_fields(&f);
	f.topic = topic;
	m = msg_new(&f, &err);
	assert_non_null(m);
	assert_int_equal(err, PMQ_OK);
	topic[0] = 'z'; /* the message holds its own copy */
	check_full(m);
	assert_true(msg_size(m) > 11 + 3 + 10);
	assert_ptr_equal(msg_ref(m), m);
	msg_unref(m);
	check_full(m);
	msg_unref(m);
	msg_unref(NULL);
}

static void
test_msg_new_minimal(void **state)
{
	struct pmq_msg_fields f, o;
	pmq_msg *m;
	int err;

	(void)state;
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.topic = "t";
	f.topic_len = 1;
	m = msg_new(&f, &err);
	assert_non_null(m);
	o.size = sizeof(o);
	msg_fields(m, &o);
	assert_true(o.timestamp_ms > 1600000000000); /* 0 means now */
	assert_null(o.key);
	assert_null(o.headers);
	assert_null(o.content_type);
	assert_null(o.response_topic);
	assert_null(o.correlation_data);
	assert_non_null(o.payload);
	assert_int_equal(o.payload_len, 0);
	msg_unref(m);
}

static void
test_msg_new_invalid(void **state)
{
	struct pmq_msg_fields f;
	int err;

	(void)state;
	full_fields(&f);
	f.topic = "a/+";
	assert_null(msg_new(&f, &err));
	assert_int_equal(err, PMQ_ERR_INVAL);
	full_fields(&f);
	f.topic_len = 0;
	assert_null(msg_new(&f, &err));
	assert_int_equal(err, PMQ_ERR_INVAL);
	full_fields(&f);
	f.topic = "a\0b";
	assert_null(msg_new(&f, &err));
	full_fields(&f);
	f.qos = 3;
	assert_null(msg_new(&f, &err));
	full_fields(&f);
	f.response_topic = "r/#";
	f.response_topic_len = 3;
	assert_null(msg_new(&f, &err));
	full_fields(&f);
	f.payload = NULL;
	assert_null(msg_new(&f, &err));
	full_fields(&f);
	f.headers = NULL;
	assert_null(msg_new(&f, &err));
	full_fields(&f);
	f.size = offsetof(struct pmq_msg_fields, topic);
	assert_null(msg_new(&f, &err));
	assert_int_equal(err, PMQ_ERR_INVAL);
	full_fields(&f);
	f.payload_len = SIZE_MAX;
	assert_null(msg_new(&f, NULL));
	assert_null(msg_new(NULL, &err));
}

/* An older reader whose struct ends at payload_len. */
struct small_fields {
	uint32_t size;
	uint8_t qos, retain, payload_format, has_key;
	const char *topic;
	size_t topic_len;
	const void *key;
	size_t key_len;
	const void *payload;
	size_t payload_len;
};

static void
test_msg_fields_size(void **state)
{
	struct pmq_msg_fields f;
	union {
		struct pmq_msg_fields full;
		unsigned char bytes[sizeof(struct pmq_msg_fields)];
	} u;
	size_t small = sizeof(struct small_fields), i;
	pmq_msg *m;

	(void)state;
	full_fields(&f);
	m = msg_new(&f, NULL);
	assert_non_null(m);
	memset(&u, 0x5a, sizeof(u));
	u.full.size = (uint32_t)small;
	msg_fields(m, &u.full);
	assert_int_equal(u.full.size, small);
	assert_int_equal(u.full.qos, 2);
	assert_int_equal(u.full.payload_len, 11);
	for (i = small; i < sizeof(u); i++)
		assert_int_equal(u.bytes[i], 0x5a); /* untouched */
	msg_unref(m);
}

static void
test_msg_encode_roundtrip(void **state)
{
	struct pmq_msg_fields f;
	pmq_msg *m, *d;
	void *buf;
	size_t len;

	(void)state;
	full_fields(&f);
	m = msg_new(&f, NULL);
	assert_non_null(m);
	assert_int_equal(msg_encode(m, &buf, &len), PMQ_OK);
	assert_int_equal(((unsigned char *)buf)[0], MSG_FORMAT_V1);
	assert_int_equal(msg_decode(buf, len, &d), PMQ_OK);
	check_full(d);
	msg_unref(d);
	free(buf);
	msg_unref(m);

	/* Minimal message: absent fields stay absent. */
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.topic = "x";
	f.topic_len = 1;
	m = msg_new(&f, NULL);
	assert_int_equal(msg_encode(m, &buf, &len), PMQ_OK);
	assert_int_equal(msg_decode(buf, len, &d), PMQ_OK);
	assert_false(d->has_key);
	assert_null(d->content_type);
	assert_null(d->headers);
	assert_true(d->timestamp_ms == m->timestamp_ms);
	msg_unref(d);
	free(buf);
	msg_unref(m);
}

static void
test_msg_decode_corrupt(void **state)
{
	struct pmq_msg_fields f;
	unsigned char *buf, *copy;
	pmq_msg *m, *d;
	size_t len, i;
	int bit;

	(void)state;
	full_fields(&f);
	m = msg_new(&f, NULL);
	assert_int_equal(msg_encode(m, (void **)&buf, &len), PMQ_OK);
	/* Every truncation. */
	for (i = 0; i < len; i++) {
		copy = malloc(i ? i : 1);
		memcpy(copy, buf, i);
		assert_int_equal(msg_decode(copy, i, &d), PMQ_ERR_CORRUPT);
		assert_null(d);
		free(copy);
	}
	/* Every single-bit flip. */
	copy = malloc(len);
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			memcpy(copy, buf, len);
			copy[i] ^= (unsigned char)(1u << bit);
			assert_int_equal(msg_decode(copy, len, &d),
			                 PMQ_ERR_CORRUPT);
		}
	}
	free(copy);
	/* Trailing garbage. */
	copy = malloc(len + 1);
	memcpy(copy, buf, len);
	copy[len] = 0;
	assert_int_equal(msg_decode(copy, len + 1, &d), PMQ_ERR_CORRUPT);
	free(copy);
	assert_int_equal(msg_decode("", 0, &d), PMQ_ERR_CORRUPT);
	free(buf);
	msg_unref(m);
}

/* Garbage whose CRC is right: the parser must still refuse it safely. */
static uint32_t
crc32c_ref(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffff;
	int k;

	while (n--) {
		c ^= *p++;
		for (k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78 & (0u - (c & 1)));
	}
	return c ^ 0xffffffff;
}

static void
test_msg_decode_garbage_with_crc(void **state)
{
	unsigned char buf[256];
	unsigned seed = 12345;
	int iter, ok = 0;
	pmq_msg *d;

	(void)state;
	for (iter = 0; iter < 20000; iter++) {
		size_t len = 25 + (size_t)(rand_r(&seed) % 200), i;
		uint32_t c;

		for (i = 0; i < len - 4; i++)
			buf[i] = (unsigned char)rand_r(&seed);
		buf[0] = MSG_FORMAT_V1;
		if (iter % 2) /* mostly-small varints get further in */
			for (i = 21; i < len - 4; i++)
				buf[i] &= 0x0f;
		c = crc32c_ref(buf, len - 4);
		buf[len - 4] = (unsigned char)(c >> 24);
		buf[len - 3] = (unsigned char)(c >> 16);
		buf[len - 2] = (unsigned char)(c >> 8);
		buf[len - 1] = (unsigned char)c;
		if (msg_decode(buf, len, &d) == PMQ_OK) {
			ok++;
			msg_unref(d);
		}
	}
	(void)ok; /* any result is fine as long as nothing breaks */
	/* The CRC check matches the reference implementation. */
	assert_true(crc32c_ref((const unsigned char *)"123456789", 9) ==
	            0xe3069283);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_names),
		cmocka_unit_test(test_length_limit),
		cmocka_unit_test(test_valid_filters),
		cmocka_unit_test(test_match_spec_examples),
		cmocka_unit_test(test_match_edges),
		cmocka_unit_test(test_parse_share),
		cmocka_unit_test(test_node_table),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_msg_new_copies),
		cmocka_unit_test(test_msg_new_minimal),
		cmocka_unit_test(test_msg_new_invalid),
		cmocka_unit_test(test_msg_fields_size),
		cmocka_unit_test(test_msg_encode_roundtrip),
		cmocka_unit_test(test_msg_decode_corrupt),
		cmocka_unit_test(test_msg_decode_garbage_with_crc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
