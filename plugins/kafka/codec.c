/*
 * codec.c - Kafka request decoding and response encoding primitives for
 * the kafka plugin (see codec.h).  Schemas follow Kafka's message JSONs
 * (clients/src/main/resources/common/message/ NameRequest.json): every field
 * is read only in the versions that carry it.
 *
 * Every read goes through a cursor that stops at the frame's end; an
 * array count is refused when the bytes left could not hold that many
 * elements, so a hostile count never makes us allocate more than the
 * frame could describe.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* What we implement and advertise (docs/kafka.md "APIs").  Non-flexible
 * versions everywhere except ApiVersions v3, which librdkafka sends
 * first. */
static const struct kc_api apis[] = {
	{ KC_PRODUCE, 3, 7, 9, "Produce" },
	{ KC_FETCH, 4, 11, 12, "Fetch" },
	{ KC_LIST_OFFSETS, 1, 5, 6, "ListOffsets" },
	{ KC_METADATA, 0, 8, 9, "Metadata" },
	{ KC_OFFSET_COMMIT, 2, 7, 8, "OffsetCommit" },
	{ KC_OFFSET_FETCH, 1, 5, 6, "OffsetFetch" },
	{ KC_FIND_COORDINATOR, 0, 2, 3, "FindCoordinator" },
	{ KC_JOIN_GROUP, 0, 5, 6, "JoinGroup" },
	{ KC_HEARTBEAT, 0, 3, 4, "Heartbeat" },
	{ KC_LEAVE_GROUP, 0, 3, 4, "LeaveGroup" },
	{ KC_SYNC_GROUP, 0, 3, 4, "SyncGroup" },
	{ KC_DESCRIBE_GROUPS, 0, 4, 5, "DescribeGroups" },
	{ KC_LIST_GROUPS, 0, 2, 3, "ListGroups" },
	{ KC_API_VERSIONS, 0, 3, 3, "ApiVersions" },
	{ KC_CREATE_TOPICS, 0, 4, 5, "CreateTopics" },
	{ KC_DELETE_TOPICS, 0, 3, 4, "DeleteTopics" },
	{ KC_INIT_PRODUCER_ID, 0, 1, 2, "InitProducerId" },
};

const struct kc_api *
kc_apis(size_t *n)
{
	*n = sizeof apis / sizeof apis[0];
	return apis;
}

const struct kc_api *
kc_api_find(int16_t key)
{
	size_t i;

	for (i = 0; i < sizeof apis / sizeof apis[0]; i++)
		if (apis[i].key == key)
			return &apis[i];
	return NULL;
}

/* ---- arena ---- */

struct kc_block {
	struct kc_block *next;
	/* max_align_t keeps what follows aligned for any member type. */
	max_align_t data[];
};

void *
kc_arena_alloc(struct kc_arena *a, size_t n)
{
	size_t limit = a->limit != 0 ? a->limit : KC_ARENA_DEFAULT_LIMIT;
	struct kc_block *b;

	if (n > limit || a->total > limit - n)
		return NULL;
	/* One block per allocation: requests hold few arrays, and this way
	 * the arena has no size classes to get wrong. */
	b = calloc(1, sizeof *b + (n > 0 ? n : 1));
	if (b == NULL)
		return NULL;
	b->next = a->head;
	a->head = b;
	a->total += n;
	return b->data;
}

void
kc_arena_free(struct kc_arena *a)
{
	struct kc_block *b, *next;

	for (b = a->head; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	a->head = NULL;
	a->total = 0;
}

/* ---- reading ---- */

struct rd {
	const uint8_t *p, *end;
	struct kc_arena *a;
	int flex;
	int err; /* KC_MALFORMED or KC_NOMEM once something failed */
};

static int
rd_need(struct rd *r, size_t n)
{
	if (r->err != 0)
		return 0;
	if ((size_t)(r->end - r->p) < n) {
		r->err = KC_MALFORMED;
		return 0;
	}
	return 1;
}

static int8_t
rd_i8(struct rd *r)
{
	if (!rd_need(r, 1))
		return 0;
	return (int8_t)*r->p++;
}

static int16_t
rd_i16(struct rd *r)
{
	uint16_t v;

	if (!rd_need(r, 2))
		return 0;
	v = (uint16_t)((unsigned)r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return (int16_t)v;
}

static int32_t
rd_i32(struct rd *r)
{
	uint32_t v;

	if (!rd_need(r, 4))
		return 0;
	v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 |
	    (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	return (int32_t)v;
}

static int64_t
rd_i64(struct rd *r)
{
	uint64_t hi = (uint32_t)rd_i32(r);
	uint64_t lo = (uint32_t)rd_i32(r);

	return (int64_t)(hi << 32 | lo);
}

static int
rd_bool(struct rd *r)
{
	return rd_i8(r) != 0;
}

/* Unsigned varint of flexible versions, at most 32 bits (Kafka's
 * ByteUtils.readUnsignedVarint). */
static uint32_t
rd_uvarint(struct rd *r)
{
	uint32_t v = 0;
	int shift;

	for (shift = 0; shift < 35; shift += 7) {
		uint8_t b;

		if (!rd_need(r, 1))
			return 0;
		b = *r->p++;
		if (shift == 28 && (b & 0xf0) != 0)
			break; /* more than 32 bits */
		v |= (uint32_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0)
			return v;
	}
	r->err = KC_MALFORMED;
	return 0;
}

/* Length of a string/bytes field: -1 for null. */
static int64_t
rd_len(struct rd *r, int bytes)
{
	if (r->flex)
		return (int64_t)rd_uvarint(r) - 1;
	return bytes ? rd_i32(r) : rd_i16(r);
}

/* A string copied into the arena, NUL-terminated; *out NULL when null
 * (refused unless nullable). */
static const char *
rd_str_x(struct rd *r, int nullable)
{
	int64_t n = rd_len(r, 0);
	char *s;

	if (r->err != 0)
		return NULL;
	if (n < 0) {
		if (n != -1 || !nullable)
			r->err = KC_MALFORMED;
		return NULL;
	}
	if (!rd_need(r, (size_t)n))
		return NULL;
	/* An embedded NUL would make the C string differ from the wire
	 * string: refuse it rather than act on a different name. */
	if (memchr(r->p, '\0', (size_t)n) != NULL) {
		r->err = KC_MALFORMED;
		return NULL;
	}
	s = kc_arena_alloc(r->a, (size_t)n + 1);
	if (s == NULL) {
		r->err = KC_NOMEM;
		return NULL;
	}
	memcpy(s, r->p, (size_t)n);
	r->p += n;
	return s;
}

static const char *
rd_str(struct rd *r)
{
	const char *s = rd_str_x(r, 0);

	return s != NULL ? s : "";
}

static const char *
rd_nstr(struct rd *r)
{
	return rd_str_x(r, 1);
}

/* Bytes pointing into the frame; NULL when null. */
static const uint8_t *
rd_bytes(struct rd *r, size_t *len, int nullable)
{
	int64_t n = rd_len(r, 1);
	const uint8_t *p;

	*len = 0;
	if (r->err != 0)
		return NULL;
	if (n < 0) {
		if (n != -1 || !nullable)
			r->err = KC_MALFORMED;
		return NULL;
	}
	if (!rd_need(r, (size_t)n))
		return NULL;
	p = r->p;
	r->p += n;
	*len = (size_t)n;
	return p;
}

/* An array count: -1 for null (refused unless nullable); refused when
 * fewer than count * min_elem bytes are left. */
static int32_t
rd_array(struct rd *r, size_t min_elem, int nullable)
{
	int64_t n;

	if (r->flex)
		n = (int64_t)rd_uvarint(r) - 1;
	else
		n = rd_i32(r);
	if (r->err != 0)
		return 0;
	if (n < 0) {
		if (n != -1 || !nullable)
			r->err = KC_MALFORMED;
		return n == -1 ? -1 : 0;
	}
	if (min_elem > 0 && (uint64_t)n > (size_t)(r->end - r->p) / min_elem) {
		r->err = KC_MALFORMED;
		return 0;
	}
	return (int32_t)n;
}

/* Skip a tag buffer (flexible versions only): we know no tagged field. */
static void
rd_tags(struct rd *r)
{
	uint32_t n, i, size;

	if (!r->flex)
		return;
	n = rd_uvarint(r);
	for (i = 0; i < n && r->err == 0; i++) {
		(void)rd_uvarint(r); /* tag */
		size = rd_uvarint(r);
		if (rd_need(r, size))
			r->p += size;
	}
}

static void *
rd_alloc(struct rd *r, int32_t n, size_t elem)
{
	void *p;

	if (r->err != 0 || n <= 0)
		return NULL;
	p = kc_arena_alloc(r->a, (size_t)n * elem);
	if (p == NULL)
		r->err = KC_NOMEM;
	return p;
}

/* ---- bodies ---- */

static void
dec_produce(struct rd *r, struct kc_request *q)
{
	int32_t i, j;

	q->transactional_id = rd_nstr(r);
	q->acks = rd_i16(r);
	q->timeout_ms = rd_i32(r);
	q->n_topics = rd_array(r, 6, 0);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->n_parts = rd_array(r, 8, 0);
		t->parts = rd_alloc(r, t->n_parts, sizeof *t->parts);
		for (j = 0; j < t->n_parts && r->err == 0; j++) {
			t->parts[j].index = rd_i32(r);
			t->parts[j].data = rd_bytes(r, &t->parts[j].data_len,
			                            1);
		}
	}
}

static void
dec_fetch(struct rd *r, struct kc_request *q)
{
	int16_t v = q->api_version;
	int32_t i, j, n;

	q->replica_id = rd_i32(r);
	q->max_wait_ms = rd_i32(r);
	q->min_bytes = rd_i32(r);
	q->max_bytes = v >= 3 ? rd_i32(r) : INT32_MAX;
	q->isolation_level = v >= 4 ? rd_i8(r) : 0;
	if (v >= 7) {
		q->session_id = rd_i32(r);
		q->session_epoch = rd_i32(r);
	} else {
		q->session_epoch = -1;
	}
	q->n_topics = rd_array(r, 6, 0);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->n_parts = rd_array(r, 16, 0);
		t->parts = rd_alloc(r, t->n_parts, sizeof *t->parts);
		for (j = 0; j < t->n_parts && r->err == 0; j++) {
			struct kc_part *p = &t->parts[j];

			p->index = rd_i32(r);
			p->leader_epoch = v >= 9 ? rd_i32(r) : -1;
			p->offset = rd_i64(r);
			p->log_start = v >= 5 ? rd_i64(r) : -1;
			p->max_bytes = rd_i32(r);
		}
	}
	if (v >= 7) {
		/* forgotten_topics_data: we keep no fetch sessions. */
		n = rd_array(r, 6, 0);
		for (i = 0; i < n && r->err == 0; i++) {
			(void)rd_str(r);
			j = rd_array(r, 4, 0);
			if (rd_need(r, (size_t)j * 4))
				r->p += (size_t)j * 4;
		}
	}
	if (v >= 11)
		(void)rd_str(r); /* rack_id */
}

static void
dec_list_offsets(struct rd *r, struct kc_request *q)
{
	int16_t v = q->api_version;
	int32_t i, j;

	q->replica_id = rd_i32(r);
	q->isolation_level = v >= 2 ? rd_i8(r) : 0;
	q->n_topics = rd_array(r, 6, 0);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->n_parts = rd_array(r, 12, 0);
		t->parts = rd_alloc(r, t->n_parts, sizeof *t->parts);
		for (j = 0; j < t->n_parts && r->err == 0; j++) {
			t->parts[j].index = rd_i32(r);
			t->parts[j].leader_epoch = v >= 4 ? rd_i32(r) : -1;
			t->parts[j].offset = rd_i64(r); /* the timestamp */
		}
	}
}

static void
dec_metadata(struct rd *r, struct kc_request *q)
{
	int16_t v = q->api_version;
	int32_t i;

	/* v0: an empty array means all topics; v1+: null does. */
	q->n_topics = rd_array(r, 2, v >= 1);
	if (v == 0 && q->n_topics == 0)
		q->n_topics = -1;
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++)
		q->topics[i].name = rd_str(r);
	q->allow_auto_create = v >= 4 ? rd_bool(r) : 1;
	if (v >= 8) {
		(void)rd_bool(r); /* include_cluster_authorized_operations */
		(void)rd_bool(r); /* include_topic_authorized_operations */
	}
}

static void
dec_offset_commit(struct rd *r, struct kc_request *q)
{
	int16_t v = q->api_version;
	int32_t i, j;

	q->group_id = rd_str(r);
	q->generation_id = v >= 1 ? rd_i32(r) : -1;
	q->member_id = v >= 1 ? rd_str(r) : "";
	q->instance_id = v >= 7 ? rd_nstr(r) : NULL;
	q->retention_time_ms = v >= 2 && v <= 4 ? rd_i64(r) : -1;
	q->n_topics = rd_array(r, 6, 0);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->n_parts = rd_array(r, 14, 0);
		t->parts = rd_alloc(r, t->n_parts, sizeof *t->parts);
		for (j = 0; j < t->n_parts && r->err == 0; j++) {
			struct kc_part *p = &t->parts[j];

			p->index = rd_i32(r);
			p->offset = rd_i64(r);
			p->leader_epoch = v >= 6 ? rd_i32(r) : -1;
			if (v == 1)
				(void)rd_i64(r); /* commit_timestamp */
			p->metadata = rd_nstr(r);
		}
	}
}

static void
dec_offset_fetch(struct rd *r, struct kc_request *q)
{
	int32_t i, j;

	q->group_id = rd_str(r);
	q->n_topics = rd_array(r, 6, q->api_version >= 2);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->n_parts = rd_array(r, 4, 0);
		t->parts = rd_alloc(r, t->n_parts, sizeof *t->parts);
		for (j = 0; j < t->n_parts && r->err == 0; j++)
			t->parts[j].index = rd_i32(r);
	}
}

static void
dec_join_group(struct rd *r, struct kc_request *q)
{
	int16_t v = q->api_version;
	int32_t i;

	q->group_id = rd_str(r);
	q->session_timeout_ms = rd_i32(r);
	q->rebalance_timeout_ms = v >= 1 ? rd_i32(r) : q->session_timeout_ms;
	q->member_id = rd_str(r);
	q->instance_id = v >= 5 ? rd_nstr(r) : NULL;
	q->protocol_type = rd_str(r);
	q->n_protocols = rd_array(r, 6, 0);
	q->protocols = rd_alloc(r, q->n_protocols, sizeof *q->protocols);
	for (i = 0; i < q->n_protocols && r->err == 0; i++) {
		q->protocols[i].name = rd_str(r);
		q->protocols[i].meta = rd_bytes(r, &q->protocols[i].meta_len,
		                                0);
	}
}

static void
dec_sync_group(struct rd *r, struct kc_request *q)
{
	int32_t i;

	q->group_id = rd_str(r);
	q->generation_id = rd_i32(r);
	q->member_id = rd_str(r);
	q->instance_id = q->api_version >= 3 ? rd_nstr(r) : NULL;
	q->n_members = rd_array(r, 6, 0);
	q->members = rd_alloc(r, q->n_members, sizeof *q->members);
	for (i = 0; i < q->n_members && r->err == 0; i++) {
		q->members[i].member_id = rd_str(r);
		q->members[i].data = rd_bytes(r, &q->members[i].data_len, 0);
	}
}

static void
dec_heartbeat(struct rd *r, struct kc_request *q)
{
	q->group_id = rd_str(r);
	q->generation_id = rd_i32(r);
	q->member_id = rd_str(r);
	q->instance_id = q->api_version >= 3 ? rd_nstr(r) : NULL;
}

static void
dec_leave_group(struct rd *r, struct kc_request *q)
{
	int32_t i;

	q->group_id = rd_str(r);
	if (q->api_version <= 2) {
		q->member_id = rd_str(r);
		return;
	}
	q->n_members = rd_array(r, 4, 0);
	q->members = rd_alloc(r, q->n_members, sizeof *q->members);
	for (i = 0; i < q->n_members && r->err == 0; i++) {
		q->members[i].member_id = rd_str(r);
		q->members[i].instance_id = rd_nstr(r);
	}
}

static void
dec_names(struct rd *r, struct kc_request *q)
{
	int32_t i;

	q->n_names = rd_array(r, 2, 0);
	q->names = rd_alloc(r, q->n_names, sizeof *q->names);
	for (i = 0; i < q->n_names && r->err == 0; i++)
		q->names[i] = rd_str(r);
}

static void
dec_create_topics(struct rd *r, struct kc_request *q)
{
	int32_t i, j, k, n;

	q->n_topics = rd_array(r, 20, 0);
	q->topics = rd_alloc(r, q->n_topics, sizeof *q->topics);
	for (i = 0; i < q->n_topics && r->err == 0; i++) {
		struct kc_topic *t = &q->topics[i];

		t->name = rd_str(r);
		t->num_partitions = rd_i32(r);
		t->replication_factor = rd_i16(r);
		t->n_assignments = rd_array(r, 8, 0);
		for (j = 0; j < t->n_assignments && r->err == 0; j++) {
			(void)rd_i32(r); /* partition_index */
			n = rd_array(r, 4, 0);
			for (k = 0; k < n && r->err == 0; k++)
				(void)rd_i32(r);
		}
		t->n_configs = rd_array(r, 4, 0);
		t->configs = rd_alloc(r, t->n_configs, sizeof *t->configs);
		for (j = 0; j < t->n_configs && r->err == 0; j++) {
			t->configs[j].name = rd_str(r);
			t->configs[j].value = rd_nstr(r);
		}
	}
	q->timeout_ms = rd_i32(r);
	q->validate_only = q->api_version >= 1 ? rd_bool(r) : 0;
}

static void
dec_delete_topics(struct rd *r, struct kc_request *q)
{
	dec_names(r, q);
	q->timeout_ms = rd_i32(r);
}

static void
dec_body(struct rd *r, struct kc_request *q)
{
	switch (q->api_key) {
	case KC_PRODUCE:
		dec_produce(r, q);
		break;
	case KC_FETCH:
		dec_fetch(r, q);
		break;
	case KC_LIST_OFFSETS:
		dec_list_offsets(r, q);
		break;
	case KC_METADATA:
		dec_metadata(r, q);
		break;
	case KC_OFFSET_COMMIT:
		dec_offset_commit(r, q);
		break;
	case KC_OFFSET_FETCH:
		dec_offset_fetch(r, q);
		break;
	case KC_FIND_COORDINATOR:
		q->key = rd_str(r);
		q->key_type = q->api_version >= 1 ? rd_i8(r) : 0;
		break;
	case KC_JOIN_GROUP:
		dec_join_group(r, q);
		break;
	case KC_HEARTBEAT:
		dec_heartbeat(r, q);
		break;
	case KC_LEAVE_GROUP:
		dec_leave_group(r, q);
		break;
	case KC_SYNC_GROUP:
		dec_sync_group(r, q);
		break;
	case KC_DESCRIBE_GROUPS:
		dec_names(r, q);
		if (q->api_version >= 3)
			(void)rd_bool(r); /* include_authorized_operations */
		break;
	case KC_LIST_GROUPS:
		break;
	case KC_API_VERSIONS:
		if (q->api_version >= 3) {
			q->software_name = rd_str(r);
			q->software_version = rd_str(r);
		}
		break;
	case KC_CREATE_TOPICS:
		dec_create_topics(r, q);
		break;
	case KC_DELETE_TOPICS:
		dec_delete_topics(r, q);
		break;
	case KC_INIT_PRODUCER_ID:
		q->transactional_id = rd_nstr(r);
		q->timeout_ms = rd_i32(r);
		break;
	default:
		r->err = KC_UNKNOWN_API;
		return;
	}
	rd_tags(r);
}

int
kc_decode(const uint8_t *frame, size_t len, struct kc_arena *a,
          struct kc_request *req)
{
	struct rd r = { frame, frame + len, a, 0, 0 };
	const struct kc_api *api;

	memset(req, 0, sizeof *req);
	req->api_key = rd_i16(&r);
	req->api_version = rd_i16(&r);
	req->correlation_id = rd_i32(&r);
	if (r.err != 0)
		return KC_MALFORMED;
	api = kc_api_find(req->api_key);
	if (api == NULL)
		return KC_UNKNOWN_API;
	if (req->api_version < api->min || req->api_version > api->max)
		return KC_UNSUPPORTED_VERSION;
	req->flexible = req->api_version >= api->flex_min;
	/* client_id is a non-compact nullable string in header v1 and v2
	 * alike (Kafka's RequestHeader.json: flexibleVersions "none"). */
	req->client_id = rd_nstr(&r);
	r.flex = req->flexible;
	rd_tags(&r);
	if (r.err == 0)
		dec_body(&r, req);
	return r.err;
}

/* ---- writing ---- */

void
kc_w_init(struct kc_writer *w, int flex)
{
	memset(w, 0, sizeof *w);
	w->flex = flex;
}

void
kc_w_free(struct kc_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

uint8_t *
kc_w_take(struct kc_writer *w, size_t *len)
{
	uint8_t *b = w->buf;

	*len = w->len;
	w->buf = NULL;
	w->len = w->cap = 0;
	return b;
}

static uint8_t *
w_room(struct kc_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (w->cap - w->len < n) {
		size_t ncap = w->cap ? w->cap : 256;
		uint8_t *nb;

		while (ncap - w->len < n) {
			if (ncap > SIZE_MAX / 2) {
				w->err = 1;
				return NULL;
			}
			ncap *= 2;
		}
		nb = realloc(w->buf, ncap);
		if (nb == NULL) {
			w->err = 1;
			return NULL;
		}
		w->buf = nb;
		w->cap = ncap;
	}
	return w->buf + w->len;
}

void
kc_w_raw(struct kc_writer *w, const void *p, size_t n)
{
	uint8_t *d = w_room(w, n);

	if (d == NULL)
		return;
	if (n > 0)
		memcpy(d, p, n);
	w->len += n;
}

void
kc_w_i8(struct kc_writer *w, int8_t v)
{
	uint8_t b = (uint8_t)v;

	kc_w_raw(w, &b, 1);
}

void
kc_w_i16(struct kc_writer *w, int16_t v)
{
	uint8_t b[2] = { (uint8_t)((uint16_t)v >> 8), (uint8_t)v };

	kc_w_raw(w, b, 2);
}

void
kc_w_i32(struct kc_writer *w, int32_t v)
{
	uint32_t u = (uint32_t)v;
	uint8_t b[4] = { (uint8_t)(u >> 24), (uint8_t)(u >> 16),
	                 (uint8_t)(u >> 8), (uint8_t)u };

	kc_w_raw(w, b, 4);
}

void
kc_w_i64(struct kc_writer *w, int64_t v)
{
	kc_w_i32(w, (int32_t)((uint64_t)v >> 32));
	kc_w_i32(w, (int32_t)(uint32_t)v);
}

void
kc_w_uvarint(struct kc_writer *w, uint64_t v)
{
	uint8_t b[10];
	size_t n = 0;

	while (v >= 0x80) {
		b[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	b[n++] = (uint8_t)v;
	kc_w_raw(w, b, n);
}

static void
w_len(struct kc_writer *w, int64_t n, int bytes)
{
	if (w->flex)
		kc_w_uvarint(w, (uint64_t)(n + 1));
	else if (bytes)
		kc_w_i32(w, (int32_t)n);
	else
		kc_w_i16(w, (int16_t)n);
}

void
kc_w_strn(struct kc_writer *w, const char *s, size_t n)
{
	if (s == NULL) {
		w_len(w, -1, 0);
		return;
	}
	if (n > INT16_MAX)
		n = INT16_MAX; /* Kafka strings are int16-sized */
	w_len(w, (int64_t)n, 0);
	kc_w_raw(w, s, n);
}

void
kc_w_str(struct kc_writer *w, const char *s)
{
	kc_w_strn(w, s, s != NULL ? strlen(s) : 0);
}

void
kc_w_bytes(struct kc_writer *w, const void *p, size_t n)
{
	if (p == NULL) {
		w_len(w, -1, 1);
		return;
	}
	if (n > INT32_MAX) {
		w->err = 1;
		return;
	}
	w_len(w, (int64_t)n, 1);
	kc_w_raw(w, p, n);
}

void
kc_w_bytes_len(struct kc_writer *w, size_t n)
{
	if (n > INT32_MAX) {
		w->err = 1;
		return;
	}
	w_len(w, (int64_t)n, 1);
}

void
kc_w_array(struct kc_writer *w, int32_t n)
{
	w_len(w, n < 0 ? -1 : n, 1);
}

void
kc_w_tags(struct kc_writer *w)
{
	if (w->flex)
		kc_w_uvarint(w, 0);
}

void
kc_w_put_i32_at(struct kc_writer *w, size_t pos, int32_t v)
{
	uint32_t u = (uint32_t)v;

	if (w->err || pos + 4 > w->len)
		return;
	w->buf[pos] = (uint8_t)(u >> 24);
	w->buf[pos + 1] = (uint8_t)(u >> 16);
	w->buf[pos + 2] = (uint8_t)(u >> 8);
	w->buf[pos + 3] = (uint8_t)u;
}

void
kc_response_begin(struct kc_writer *w, const struct kc_request *req)
{
	kc_w_init(w, req->flexible);
	kc_w_i32(w, 0); /* size, filled by kc_response_finish */
	kc_w_i32(w, req->correlation_id);
	/* Response header v1 (tags) for flexible requests, except that
	 * ApiVersions always answers with header v0 (clients parse it
	 * before they know which versions the broker has). */
	if (req->flexible && req->api_key != KC_API_VERSIONS)
		kc_w_tags(w);
}

void
kc_response_finish(struct kc_writer *w)
{
	if (w->len >= 4)
		kc_w_put_i32_at(w, 0, (int32_t)(w->len - 4));
}

void
kc_api_versions_unsupported(struct kc_writer *w, int32_t correlation_id)
{
	size_t n, i;
	const struct kc_api *a = kc_apis(&n);

	kc_w_init(w, 0);
	kc_w_i32(w, 0);
	kc_w_i32(w, correlation_id);
	kc_w_i16(w, KE_UNSUPPORTED_VERSION);
	kc_w_array(w, (int32_t)n);
	for (i = 0; i < n; i++) {
		kc_w_i16(w, a[i].key);
		kc_w_i16(w, a[i].min);
		kc_w_i16(w, a[i].max);
	}
	kc_response_finish(w);
}

int
kc_topic_name_valid(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > 249 || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return 0;
	}
	return 1;
}
