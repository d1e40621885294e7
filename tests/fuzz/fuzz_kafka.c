/*
 * fuzz_kafka.c - libFuzzer target for the kafka plugin's request decoder
 * (plugins/kafka/codec.c): any bytes as one request frame, decoded and
 * then walked field by field, so a pointer the decoder got wrong is read
 * under ASan.  Also encodes the ApiVersions fallback answer for the
 * correlation id found.  Seeds: tests/fuzz/corpus/fuzz_kafka/.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"

static volatile size_t sink;

static void
touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i, s = 0;

	for (i = 0; p != NULL && i < n; i++)
		s += b[i];
	sink += s;
}

static void
touch_str(const char *s)
{
	if (s != NULL)
		touch(s, strlen(s));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kc_arena a = { 0 };
	struct kc_request q;
	struct kc_writer w;
	int32_t i, j;
	int rc;

	a.limit = 1 << 24;
	rc = kc_decode(data, size, &a, &q);
	if (rc == KC_OK) {
		touch_str(q.client_id);
		touch_str(q.group_id);
		touch_str(q.member_id);
		touch_str(q.transactional_id);
		for (i = 0; i < q.n_topics; i++) {
			touch_str(q.topics[i].name);
			for (j = 0; j < q.topics[i].n_parts; j++) {
				touch(q.topics[i].parts[j].data,
				      q.topics[i].parts[j].data_len);
				touch_str(q.topics[i].parts[j].metadata);
			}
			for (j = 0; j < q.topics[i].n_configs; j++) {
				touch_str(q.topics[i].configs[j].name);
				touch_str(q.topics[i].configs[j].value);
			}
		}
		for (i = 0; i < q.n_protocols; i++) {
			touch_str(q.protocols[i].name);
			touch(q.protocols[i].meta, q.protocols[i].meta_len);
		}
		for (i = 0; i < q.n_members; i++) {
			touch_str(q.members[i].member_id);
			touch(q.members[i].data, q.members[i].data_len);
		}
		for (i = 0; i < q.n_names; i++)
			touch_str(q.names[i]);
		kc_response_begin(&w, &q);
		kc_w_str(&w, q.client_id);
		kc_response_finish(&w);
		kc_w_free(&w);
	} else if (size >= KC_HEADER_MIN) {
		kc_api_versions_unsupported(&w, q.correlation_id);
		kc_w_free(&w);
	}
	kc_arena_free(&a);
	return 0;
}
