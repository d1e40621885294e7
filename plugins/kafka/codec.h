/*
 * codec.h - the Kafka wire codec of the kafka plugin: the table of APIs
 * and versions we implement, request decoding (header v1/v2, every body
 * we accept, flexible versions with compact types and tagged fields) into
 * one flat struct, and the primitives responses are encoded with.
 *
 * Pure: no host API, no global state but const tables, so the unit tests
 * and the libFuzzer target link it alone.  Every read is bounds-checked;
 * the bytes come straight from a peer.
 *
 * Ownership: a decoded request points into the frame it was decoded from
 * (byte fields: records, member metadata, assignments) and into an arena
 * (strings, arrays); both must outlive the request.  kc_arena_free()
 * releases everything the arena holds.
 */
#ifndef PMQ_KAFKA_CODEC_H
#define PMQ_KAFKA_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* API keys (Kafka's ApiKeys). */
enum {
	KC_PRODUCE = 0,
	KC_FETCH = 1,
	KC_LIST_OFFSETS = 2,
	KC_METADATA = 3,
	KC_OFFSET_COMMIT = 8,
	KC_OFFSET_FETCH = 9,
	KC_FIND_COORDINATOR = 10,
	KC_JOIN_GROUP = 11,
	KC_HEARTBEAT = 12,
	KC_LEAVE_GROUP = 13,
	KC_SYNC_GROUP = 14,
	KC_DESCRIBE_GROUPS = 15,
	KC_LIST_GROUPS = 16,
	KC_API_VERSIONS = 18,
	KC_CREATE_TOPICS = 19,
	KC_DELETE_TOPICS = 20,
	KC_INIT_PRODUCER_ID = 22
};

/* Kafka error codes we answer with (Kafka's Errors). */
enum {
	KE_UNKNOWN_SERVER_ERROR = -1,
	KE_NONE = 0,
	KE_OFFSET_OUT_OF_RANGE = 1,
	KE_CORRUPT_MESSAGE = 2,
	KE_UNKNOWN_TOPIC_OR_PARTITION = 3,
	KE_LEADER_NOT_AVAILABLE = 5,
	KE_MESSAGE_TOO_LARGE = 10,
	KE_COORDINATOR_NOT_AVAILABLE = 15,
	KE_NOT_COORDINATOR = 16,
	KE_INVALID_TOPIC_EXCEPTION = 17,
	KE_RECORD_LIST_TOO_LARGE = 18,
	KE_INVALID_REQUIRED_ACKS = 21,
	KE_ILLEGAL_GENERATION = 22,
	KE_INCONSISTENT_GROUP_PROTOCOL = 23,
	KE_INVALID_GROUP_ID = 24,
	KE_UNKNOWN_MEMBER_ID = 25,
	KE_INVALID_SESSION_TIMEOUT = 26,
	KE_REBALANCE_IN_PROGRESS = 27,
	KE_INVALID_COMMIT_OFFSET_SIZE = 28,
	KE_UNSUPPORTED_VERSION = 35,
	KE_TOPIC_ALREADY_EXISTS = 36,
	KE_INVALID_PARTITIONS = 37,
	KE_INVALID_REPLICATION_FACTOR = 38,
	KE_INVALID_REQUEST = 42,
	KE_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
	KE_DUPLICATE_SEQUENCE_NUMBER = 46,
	KE_INVALID_PRODUCER_EPOCH = 47,
	KE_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53,
	KE_KAFKA_STORAGE_ERROR = 56,
	KE_UNSUPPORTED_COMPRESSION_TYPE = 76,
	KE_MEMBER_ID_REQUIRED = 79,
	KE_GROUP_ID_NOT_FOUND = 69,
	KE_NON_EMPTY_GROUP = 68,
	KE_INVALID_RECORD = 87
};

/* One API we implement: versions min..max, all implemented fully;
 * flex_min is the first flexible version in Kafka's schema. */
struct kc_api {
	int16_t key;
	int16_t min;
	int16_t max;
	int16_t flex_min;
	const char *name;
};

/* The APIs we implement, in key order (what ApiVersions advertises). */
const struct kc_api *kc_apis(size_t *n);
/* The entry for key, or NULL. */
const struct kc_api *kc_api_find(int16_t key);

/* ---- arena: one free for everything a decoded request holds ---- */

struct kc_arena {
	struct kc_block *head;
	size_t total; /* bytes handed out so far */
	size_t limit; /* at most this many; 0 = KC_ARENA_DEFAULT_LIMIT */
};
#define KC_ARENA_DEFAULT_LIMIT ((size_t)64 * 1024 * 1024)

/* Zeroed memory from a, or NULL (no memory, or over the limit). */
void *kc_arena_alloc(struct kc_arena *a, size_t n);
void kc_arena_free(struct kc_arena *a);

/* ---- decoded requests ---- */

/* One partition of a request; which members are set depends on the API. */
struct kc_part {
	int32_t index;
	int32_t leader_epoch;  /* Fetch v9+, ListOffsets v4+, OffsetCommit v6+ */
	int64_t offset;        /* Fetch offset, committed offset, ListOffsets
	                          timestamp */
	int64_t log_start;     /* Fetch v5+ */
	int32_t max_bytes;     /* Fetch partition_max_bytes */
	const uint8_t *data;   /* Produce records (NULL when null) */
	size_t data_len;
	const char *metadata;  /* OffsetCommit metadata (NULL when null) */
};

struct kc_config {
	const char *name;
	const char *value; /* NULL when null */
};

/* One topic of a request. */
struct kc_topic {
	const char *name;
	int32_t n_parts;
	struct kc_part *parts;
	/* CreateTopics */
	int32_t num_partitions;
	int16_t replication_factor;
	int32_t n_assignments;
	int32_t n_configs;
	struct kc_config *configs;
};

/* JoinGroup protocols. */
struct kc_protocol {
	const char *name;
	const uint8_t *meta;
	size_t meta_len;
};

/* SyncGroup assignments, LeaveGroup v3+ members. */
struct kc_member {
	const char *member_id;
	const char *instance_id; /* NULL when null */
	const uint8_t *data;
	size_t data_len;
};

/* A decoded request.  Arrays are NULL with n 0 when empty; n_topics is
 * -1 for a null array (Metadata v1+ "all topics", OffsetFetch v2+). */
struct kc_request {
	int16_t api_key;
	int16_t api_version;
	int32_t correlation_id;
	int flexible;            /* header v2 / flexible body */
	const char *client_id;   /* NULL when null */

	const char *transactional_id;
	const char *group_id;
	const char *member_id;
	const char *instance_id;
	const char *protocol_type;
	const char *key;          /* FindCoordinator */
	int8_t key_type;
	int16_t acks;
	int32_t timeout_ms;
	int32_t generation_id;
	int32_t session_timeout_ms;
	int32_t rebalance_timeout_ms;
	int32_t replica_id;
	int32_t max_wait_ms;
	int32_t min_bytes;
	int32_t max_bytes;
	int8_t isolation_level;
	int32_t session_id;
	int32_t session_epoch;
	int64_t retention_time_ms;
	int allow_auto_create;    /* Metadata: v0-3 always, v4+ the flag */
	int validate_only;
	const char *software_name;
	const char *software_version;

	int32_t n_topics;
	struct kc_topic *topics;
	int32_t n_protocols;
	struct kc_protocol *protocols;
	int32_t n_members;
	struct kc_member *members;
	int32_t n_names;          /* DescribeGroups groups, DeleteTopics names */
	const char **names;
};

/* Results of kc_decode. */
enum kc_status {
	KC_OK = 0,
	KC_MALFORMED = -1,       /* truncated, negative length, bad varint */
	KC_UNKNOWN_API = -2,     /* an API key we do not implement */
	KC_UNSUPPORTED_VERSION = -3, /* a version outside our range */
	KC_NOMEM = -4
};

/* Smallest request: api_key, api_version, correlation_id. */
#define KC_HEADER_MIN 8

/*
 * Decode one request frame (without its 4-byte size prefix).  On KC_OK,
 * *req is filled, pointing into frame and into a.  On any error
 * req->api_key, api_version and correlation_id are still set when the
 * frame holds at least KC_HEADER_MIN bytes, so the caller can answer
 * (ApiVersions with UNSUPPORTED_VERSION) or log.  Bytes after the body
 * are ignored, as Kafka does.
 */
int kc_decode(const uint8_t *frame, size_t len, struct kc_arena *a,
              struct kc_request *req);

/* ---- response encoding ---- */

/* A growable output buffer; on allocation failure err is set and every
 * further write is dropped, so encoders check once at the end. */
struct kc_writer {
	uint8_t *buf;
	size_t len;
	size_t cap;
	int err;
	int flex; /* compact strings/arrays and tag buffers */
};

void kc_w_init(struct kc_writer *w, int flex);
void kc_w_free(struct kc_writer *w);
/* Takes the buffer out of w (the caller frees it with free()). */
uint8_t *kc_w_take(struct kc_writer *w, size_t *len);
void kc_w_raw(struct kc_writer *w, const void *p, size_t n);
void kc_w_i8(struct kc_writer *w, int8_t v);
void kc_w_i16(struct kc_writer *w, int16_t v);
void kc_w_i32(struct kc_writer *w, int32_t v);
void kc_w_i64(struct kc_writer *w, int64_t v);
void kc_w_uvarint(struct kc_writer *w, uint64_t v);
/* String (NULL writes a null string: -1 or compact 0). */
void kc_w_str(struct kc_writer *w, const char *s);
void kc_w_strn(struct kc_writer *w, const char *s, size_t n);
/* Bytes (NULL writes null). */
void kc_w_bytes(struct kc_writer *w, const void *p, size_t n);
/* Only the length prefix of a bytes field whose n bytes are sent after
 * the writer's current end by other means (a spliced reference). */
void kc_w_bytes_len(struct kc_writer *w, size_t n);
/* Array length; n < 0 writes a null array. */
void kc_w_array(struct kc_writer *w, int32_t n);
/* An empty tag buffer when flexible, nothing otherwise. */
void kc_w_tags(struct kc_writer *w);
/* Overwrite 4 bytes at pos (a size placeholder). */
void kc_w_put_i32_at(struct kc_writer *w, size_t pos, int32_t v);

/*
 * Start a response frame: the size placeholder, correlation_id and, for
 * flexible requests other than ApiVersions, the header's tag buffer.
 * Sets w->flex from the request.  kc_w_finish fills in the size.
 */
void kc_response_begin(struct kc_writer *w, const struct kc_request *req);
void kc_response_finish(struct kc_writer *w);

/*
 * The answer Kafka gives an ApiVersions request whose version it does not
 * implement: a v0 body with UNSUPPORTED_VERSION and our API list, so that
 * librdkafka and kafkajs retry with a lower version.  w must be fresh.
 */
void kc_api_versions_unsupported(struct kc_writer *w, int32_t correlation_id);

/* Kafka's topic name rule: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
int kc_topic_name_valid(const char *name);

#endif
