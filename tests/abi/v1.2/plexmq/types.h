/*
 * plexmq/types.h - error codes, opaque handles and the plain structs that
 * cross the plugin boundary (messages, subscriptions, deliveries, records).
 *
 * Threads: nothing in this file is a function; see host.h for who may call
 * what.  Conventions used by every public header:
 *   - Functions return 0 (PMQ_OK) or a negative enum pmq_err value.
 *   - Pointer arguments are borrowed for the duration of the call unless the
 *     documentation says "takes ownership" (then they are released even on
 *     error) or "returns a new reference" (the caller must release it).
 *   - Strings are NUL-terminated unless a length is passed beside them.
 *   - Every struct whose first member is `size` is filled by the writer with
 *     its own sizeof; readers use PMQ_HAS() for members newer than 1.0.
 */
#ifndef PLEXMQ_TYPES_H
#define PLEXMQ_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True when struct pointer p, written with p->size, contains member m. */
#define PMQ_HAS(p, type, m)                                                   \
	((p)->size >= offsetof(type, m) + sizeof(((type *)0)->m))

/* One error currency for the whole ABI.  New codes are appended (minor). */
enum pmq_err {
	PMQ_OK = 0,
	PMQ_ERR_NOMEM = -1,       /* allocation failed */
	PMQ_ERR_INVAL = -2,       /* bad argument or malformed input */
	PMQ_ERR_NOTFOUND = -3,    /* no such topic, key, partition, plugin */
	PMQ_ERR_EXISTS = -4,      /* already there */
	PMQ_ERR_IO = -5,          /* an I/O error in storage or on a socket */
	PMQ_ERR_NOSPC = -6,       /* storage is full */
	PMQ_ERR_RANGE = -7,       /* offset or value out of range */
	PMQ_ERR_LIMIT = -8,       /* a configured bound was reached */
	PMQ_ERR_CLOSED = -9,      /* the object is closing or closed */
	PMQ_ERR_UNSUPPORTED = -10,/* not implemented by this plugin or host */
	PMQ_ERR_CONFIG = -11,     /* bad configuration key or value */
	PMQ_ERR_ABI = -12,        /* ABI version or layout mismatch */
	PMQ_ERR_AGAIN = -13,      /* try later (backpressure) */
	PMQ_ERR_RDONLY = -14,     /* storage is read-only */
	PMQ_ERR_CORRUPT = -15,    /* stored data failed a check */
	PMQ_ERR_CANCELED = -16    /* the operation was cancelled (shutdown) */
};

/* Log levels, most severe first. */
#define PMQ_LOG_ERROR 0
#define PMQ_LOG_WARN 1
#define PMQ_LOG_INFO 2
#define PMQ_LOG_DEBUG 3

/* Opaque handles owned by the host.  Read them through host functions. */
typedef struct pmq_instance pmq_instance; /* one configured plugin instance */
typedef struct pmq_conn pmq_conn;         /* one accepted connection */
typedef struct pmq_slot pmq_slot;         /* one in-order reply slot */
typedef struct pmq_client pmq_client;     /* a subscriber identity */
typedef struct pmq_msg pmq_msg;           /* an immutable refcounted message */
typedef struct pmq_timer pmq_timer;       /* a loop timer */
typedef struct pmq_io pmq_io;             /* one pending storage operation */
typedef struct pmq_waiter pmq_waiter;     /* one long-poll wait on a log */
typedef struct pmq_hold pmq_hold;         /* a publish waiting on a delivery */

/* A header (Kafka record header, MQTT v5 user property).  value may be
 * NULL with value_len 0 for a Kafka null header value. */
struct pmq_header {
	const char *name;
	size_t name_len;
	const void *value;
	size_t value_len;
};

/* MQTT v5 payload format indicator values carried by messages. */
#define PMQ_PAYLOAD_UNSPECIFIED 0
#define PMQ_PAYLOAD_UTF8 1

/*
 * The fields of a message.  Filled by a transport and passed to
 * host->msg_new(), which copies everything; filled by host->msg_fields()
 * with pointers into the message, valid while a reference is held.
 * Absent optional byte strings are NULL with length 0.
 */
struct pmq_msg_fields {
	uint32_t size;
	uint8_t qos;            /* 0, 1, 2: the QoS it was published with */
	uint8_t retain;         /* publisher set the retain flag */
	uint8_t payload_format; /* PMQ_PAYLOAD_* */
	uint8_t has_key;        /* key present (a Kafka key may be empty) */
	const char *topic;
	size_t topic_len;
	const void *key;
	size_t key_len;
	const void *payload;
	size_t payload_len;
	const struct pmq_header *headers;
	uint32_t n_headers;
	int64_t timestamp_ms;  /* wall clock, ms since the epoch; 0 = now */
	int64_t expiry_ms;     /* wall clock deadline; 0 = never expires */
	const char *content_type;
	size_t content_type_len;
	const char *response_topic;
	size_t response_topic_len;
	const void *correlation_data;
	size_t correlation_data_len;
};

/* Retain handling (MQTT v5 subscription option). */
#define PMQ_RETAIN_SEND 0        /* send retained messages at subscribe */
#define PMQ_RETAIN_SEND_NEW 1    /* only if the subscription is new */
#define PMQ_RETAIN_DONT_SEND 2   /* never */

/* Subscription options, passed to host->subscribe(). */
struct pmq_sub_opts {
	uint32_t size;
	uint8_t qos;                 /* maximum QoS granted to deliveries */
	uint8_t no_local;            /* skip messages this client published */
	uint8_t retain_as_published; /* keep the retain flag on live delivery */
	uint8_t retain_handling;     /* PMQ_RETAIN_* */
	uint32_t sub_id;             /* MQTT v5 subscription identifier; 0 none */
	const char *share_group;     /* shared subscription group, or NULL */
};

/*
 * One delivery of a message to one client.  The router merges every
 * non-shared subscription of a client that matches into one delivery:
 * qos is the maximum granted QoS (capped by the message's QoS), sub_ids
 * lists every matching subscription identifier.  A shared subscription
 * delivers on its own, with share_group set.
 */
struct pmq_delivery {
	uint32_t size;
	uint8_t qos;
	uint8_t retain;     /* retain flag to send to this client */
	uint8_t from_store; /* sent from the retained store at subscribe */
	uint8_t reserved0;
	uint32_t n_sub_ids;
	const uint32_t *sub_ids;
	const char *share_group;
	/* The publish this delivery belongs to, for host->delivery_hold();
	 * NULL for deliveries from the retained store. */
	pmq_hold *hold;
};

/* The outcome of host->publish(). */
struct pmq_publish_result {
	uint32_t size;
	int32_t partition;     /* log partition written, or -1 */
	int64_t offset;        /* log offset of the record, or -1 */
	uint32_t n_delivered;  /* live deliveries made */
};

/* A record decoded from a stored record batch by host->batch_records(). */
struct pmq_record {
	uint32_t size;
	uint32_t n_headers;
	int64_t offset;
	int64_t timestamp_ms;
	const void *key;     /* NULL for a null key */
	size_t key_len;
	const void *value;   /* NULL for a null value */
	size_t value_len;
	const struct pmq_header *headers;
};

/* Per-topic log settings, passed to host->log_create(). */
struct pmq_topic_config {
	uint32_t size;
	int32_t partitions;
	int64_t retention_ms;    /* -1 = keep forever */
	int64_t retention_bytes; /* per partition; -1 = no limit */
};

/* Offsets of one log partition, from host->log_offsets(). */
struct pmq_log_offsets {
	uint32_t size;
	int64_t log_start;  /* first offset still stored */
	int64_t high_water; /* first offset not yet durable: readers stop here */
	int64_t log_end;    /* next offset to assign (>= high_water) */
};

#ifdef __cplusplus
}
#endif

#endif /* PLEXMQ_TYPES_H */
