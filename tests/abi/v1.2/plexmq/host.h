/*
 * plexmq/host.h - the host API table: every service plexmqd offers to
 * plugins.  A plugin links against nothing of ours; it receives a pointer to
 * this const table in its descriptor's init() and keeps it for its lifetime.
 *
 * Threads (read this first):
 *   - One event-loop thread owns all protocol, routing, log and state
 *     bookkeeping.  Every plugin callback runs on it, and every function in
 *     this table must be called on it, except those marked "any thread".
 *   - Callbacks for one connection never run concurrently; callbacks must
 *     not block.
 *   - Storage plugins run their I/O on threads of their own and report each
 *     finished operation with io_done()/io_done_data(), which may be called
 *     from any thread; the host runs the matching completion on the loop.
 *   - Completion callbacks passed to this table (publish, log_*, kv_*) are
 *     always called later, on the loop thread, never from inside the call
 *     that registered them, and exactly once unless that call returned an
 *     error.
 *
 * Ownership: arguments are borrowed for the call.  Functions that return a
 * pointer say who owns it.
 *
 * Growth: members are only appended.  A plugin built against minor N that
 * uses a member added in minor M > N must check PMQ_HAS(api, struct
 * pmq_host_api, member) first.
 */
#ifndef PLEXMQ_HOST_H
#define PLEXMQ_HOST_H

#include <stdarg.h>
#include <sys/types.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PMQ_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PMQ_PRINTF(f, a)
#endif

/* Flags for conn_send(). */
#define PMQ_SEND_ORDERED 0x0   /* leaves after every open reply slot */
#define PMQ_SEND_NOW 0x1       /* bypasses open reply slots (deliveries) */

/* Flags for publish(). */
#define PMQ_PUB_NO_LOG 0x1     /* route live only, even if a rule logs it */
#define PMQ_PUB_NO_ROUTE 0x2   /* write to the log only, no live delivery */

/* Broker-wide counters for $SYS-style reporting. */
struct pmq_stats {
	uint32_t size;
	uint32_t connections;      /* open now */
	uint64_t connections_total;/* accepted since start */
	uint64_t msgs_in;          /* publishes routed */
	uint64_t msgs_out;         /* deliveries made */
	uint64_t bytes_in;         /* socket bytes read */
	uint64_t bytes_out;        /* socket bytes written */
	uint64_t subscriptions;    /* live subscriptions */
	uint64_t retained;         /* retained messages held */
	int64_t uptime_s;
	uint64_t dropped;          /* messages dropped at a bound */
};

typedef void (*pmq_done_fn)(void *arg, int status);
typedef void (*pmq_publish_fn)(void *arg, int status,
                               const struct pmq_publish_result *result);
typedef void (*pmq_append_fn)(void *arg, int status, int64_t base_offset);
typedef void (*pmq_read_fn)(void *arg, int status, const void *data,
                            size_t len, const struct pmq_log_offsets *offs);
typedef void (*pmq_offset_fn)(void *arg, int status, int64_t offset);
typedef int (*pmq_kv_fn)(void *arg, const void *key, size_t key_len,
                         const void *val, size_t val_len);
typedef int (*pmq_record_fn)(void *arg, const struct pmq_record *rec);
typedef void (*pmq_topic_fn)(void *arg, const char *topic,
                             const struct pmq_topic_config *cfg);

struct pmq_host_api {
	uint16_t abi_major;
	uint16_t abi_minor;
	uint32_t size;

	/* ---- logging, errors, memory (any thread) ---- */

	/* Log one line, prefixed with the instance's name (inst may be NULL). */
	void (*log)(pmq_instance *inst, int level, const char *fmt, ...)
	    PMQ_PRINTF(3, 4);
	void (*vlog)(pmq_instance *inst, int level, const char *fmt,
	             va_list ap);
	/* Static text for an enum pmq_err value; never NULL. */
	const char *(*strerror)(int err);
	/* Releases buffers this table hands out (kv_get). */
	void (*free)(void *ptr);

	/* ---- configuration helpers (used from a plugin's configure op) ---- */

	/* Each parses value; returns PMQ_OK or PMQ_ERR_CONFIG. */
	int (*cfg_bool)(const char *value, int *out);
	int (*cfg_int)(const char *value, int64_t min, int64_t max,
	               int64_t *out);
	/* "4096", "64k", "16M", "1G" (powers of 1024). */
	int (*cfg_size)(const char *value, uint64_t *out);
	/* "250ms", "10s", "5m", "1h", "7d"; a bare number is milliseconds. */
	int (*cfg_duration_ms)(const char *value, int64_t *out);
	/* The instance's section name in the config file; owned by the host. */
	const char *(*instance_name)(pmq_instance *inst);
	/* The global data directory (data_dir); owned by the host. */
	const char *(*data_dir)(void);

	/* ---- time, timers, cross-thread posting ---- */

	int64_t (*now_ms)(void);       /* wall clock, ms since the epoch */
	int64_t (*monotonic_ms)(void); /* for intervals and deadlines */
	/* Returns a new timer owned by the caller (free with timer_free). */
	pmq_timer *(*timer_new)(void (*fn)(void *arg), void *arg);
	/* (Re)arms: fires after ms, then every ms if repeat. */
	int (*timer_start)(pmq_timer *t, uint64_t ms, int repeat);
	void (*timer_stop)(pmq_timer *t);
	void (*timer_free)(pmq_timer *t);
	/* Any thread: run fn(arg) on the loop thread soon.  Fails only with
	 * PMQ_ERR_NOMEM or PMQ_ERR_CLOSED (after shutdown began). */
	int (*post)(void (*fn)(void *arg), void *arg);

	/* ---- storage completions (any thread; storage plugins only) ---- */

	/* Finish a pending operation.  value is the operation's result (see
	 * storage.h).  The io handle is invalid afterwards. */
	void (*io_done)(pmq_io *io, int status, int64_t value);
	/* Finish a read: takes ownership of data, released with free_fn(data)
	 * once the reader is done (free_fn may be NULL for static data). */
	void (*io_done_data)(pmq_io *io, int status, void *data, size_t len,
	                     void (*free_fn)(void *));

	/* ---- connections (transport plugins) ---- */

	/* Bytes of input waiting on the connection. */
	size_t (*conn_input_len)(pmq_conn *c);
	/* Contiguous view of the first n input bytes, or NULL if fewer than n
	 * are buffered.  Valid until the next input call or callback return. */
	const void *(*conn_input_peek)(pmq_conn *c, size_t n);
	/* Position of needle within the first max_scan input bytes, or -1. */
	ssize_t (*conn_input_find)(pmq_conn *c, const void *needle, size_t len,
	                           size_t max_scan);
	/* Consume n input bytes (at most what is buffered). */
	void (*conn_input_drain)(pmq_conn *c, size_t n);
	/* Queue bytes for output (copied).  With PMQ_SEND_ORDERED the bytes
	 * leave after every reply slot opened before this call. */
	int (*conn_send)(pmq_conn *c, const void *data, size_t len,
	                 unsigned flags);
	/* Queue bytes without copying; release(arg) runs once they are sent or
	 * dropped, also when this call fails. */
	int (*conn_send_ref)(pmq_conn *c, const void *data, size_t len,
	                     void (*release)(void *arg), void *arg,
	                     unsigned flags);
	/* Bytes queued for output and not yet written to the socket. */
	size_t (*conn_output_len)(pmq_conn *c);
	/* True when output is above the listener's high-water mark: the
	 * transport should stop producing and wait for conn_drained. */
	int (*conn_output_full)(pmq_conn *c);
	/* Stop / restart reading the socket (backpressure on a producer). */
	void (*conn_pause)(pmq_conn *c);
	void (*conn_resume)(pmq_conn *c);
	/* Close: after queued output (and open slots) are flushed if flush,
	 * else at once.  conn_closed runs later, on a fresh loop turn. */
	void (*conn_close)(pmq_conn *c, int flush);
	/* "addr:port" of the peer; owned by the host, lives with the conn. */
	const char *(*conn_peer)(pmq_conn *c);
	/* A number unique among connections for the daemon's lifetime. */
	uint64_t (*conn_id)(pmq_conn *c);

	/* ---- in-order reply slots ---- */

	/* Reserve the next place in the connection's output order.  Returns a
	 * slot that stays valid until slot_close(), which the plugin must
	 * call exactly once, even after the connection closed (its bytes are
	 * then dropped and slot_send returns PMQ_ERR_CLOSED).  NULL on no
	 * memory.  The bytes of a slot leave only once it and every earlier
	 * slot are closed. */
	pmq_slot *(*slot_open)(pmq_conn *c);
	int (*slot_send)(pmq_slot *s, const void *data, size_t len);
	void (*slot_close)(pmq_slot *s);

	/* ---- messages ---- */

	/* Returns a new message with one reference, copying every field, or
	 * NULL (no memory, or an invalid field: then *err says why). */
	pmq_msg *(*msg_new)(const struct pmq_msg_fields *f, int *err);
	/* Fill *out (caller sets out->size) with views into m. */
	void (*msg_fields)(const pmq_msg *m, struct pmq_msg_fields *out);
	pmq_msg *(*msg_ref)(pmq_msg *m);
	void (*msg_unref)(pmq_msg *m);

	/* ---- clients, subscriptions, routing ---- */

	/* Returns a new client owned by the caller (free with client_free).
	 * id is for logs and sticky shared-subscription hashing; udata is
	 * passed back in the transport's deliver op. */
	pmq_client *(*client_new)(pmq_instance *inst, const char *id,
	                          void *udata);
	/* Removes the client's subscriptions and frees it. */
	void (*client_free)(pmq_client *cl);
	/* Add or replace the subscription (filter, opts->share_group).
	 * Returns 0 when new, 1 when it replaced one, or an error
	 * (PMQ_ERR_INVAL for a bad filter, PMQ_ERR_LIMIT). */
	int (*subscribe)(pmq_client *cl, const char *filter,
	                 const struct pmq_sub_opts *opts);
	/* PMQ_OK, or PMQ_ERR_NOTFOUND if no such subscription. */
	int (*unsubscribe)(pmq_client *cl, const char *filter,
	                   const char *share_group);
	/* Deliver the retained messages matching filter to cl, honouring
	 * opts->retain_handling given is_new (subscribe's return value).
	 * Deliveries happen before this returns. */
	int (*retained_send)(pmq_client *cl, const char *filter,
	                     const struct pmq_sub_opts *opts, int is_new);
	/* Route m: store it as retained if its retain flag is set, append it
	 * to a log if a topic rule says so, deliver it to matching
	 * subscribers (origin, which may be NULL, is used for no-local).
	 * done (may be NULL) runs once everything the message needed is as
	 * durable as the storage's fsync policy promises: send the
	 * acknowledgement from there.  Its result is never NULL, also on
	 * error.  Does not take the caller's reference. */
	int (*publish)(pmq_client *origin, pmq_msg *m, unsigned flags,
	               pmq_publish_fn done, void *arg);

	/* ---- logs: topics -> partitions -> offsets ---- */

	/* Create a log topic; done runs when its metadata is stored.
	 * PMQ_ERR_EXISTS if it exists. */
	int (*log_create)(const char *topic, const struct pmq_topic_config *cfg,
	                  pmq_done_fn done, void *arg);
	int (*log_delete)(const char *topic, pmq_done_fn done, void *arg);
	/* PMQ_OK and *out filled (caller sets out->size), or
	 * PMQ_ERR_NOTFOUND. */
	int (*log_topic)(const char *topic, struct pmq_topic_config *out);
	/* Calls fn for every log topic, in name order. */
	void (*log_topics)(pmq_topic_fn fn, void *arg);
	int (*log_offsets)(const char *topic, int32_t partition,
	                   struct pmq_log_offsets *out);
	/* Append one record batch (Kafka RecordBatch v2 bytes, copied).  The
	 * host validates it (magic, CRC32C, lengths), assigns its base offset
	 * and calls done with it once durable. */
	int (*log_append)(const char *topic, int32_t partition,
	                  const void *batch, size_t len, pmq_append_fn done,
	                  void *arg);
	/* Read stored batches from the one containing offset, up to about
	 * max_bytes (the first batch is always whole), never past the high
	 * watermark.  data is borrowed for the callback; with nothing to
	 * return, len is 0 and data may be NULL. */
	int (*log_read)(const char *topic, int32_t partition, int64_t offset,
	                size_t max_bytes, pmq_read_fn done, void *arg);
	/* First offset whose timestamp is >= ts_ms (-1 when none). */
	int (*log_offset_for_time)(const char *topic, int32_t partition,
	                           int64_t ts_ms, pmq_offset_fn done, void *arg);
	/* Long poll: wake(arg, PMQ_OK) once the high watermark passes offset,
	 * or wake(arg, PMQ_ERR_AGAIN) after timeout_ms.  Returns a waiter
	 * owned by the host until it fires or is cancelled. */
	pmq_waiter *(*log_wait)(const char *topic, int32_t partition,
	                        int64_t offset, uint32_t timeout_ms,
	                        pmq_done_fn wake, void *arg);
	void (*log_wait_cancel)(pmq_waiter *w);
	/* Decode the records of stored batches; fn returns non-zero to stop.
	 * Returns PMQ_OK, PMQ_ERR_CORRUPT or PMQ_ERR_UNSUPPORTED (a
	 * compression codec the host lacks). */
	int (*batch_records)(const void *data, size_t len, pmq_record_fn fn,
	                     void *arg);

	/* ---- key-value state in namespaces ---- */

	/* Namespaces used by the host and bundled plugins: "retained",
	 * "topics"; transports use their own ("mqtt.sessions", ...). */
	int (*kv_put)(const char *ns, const void *key, size_t key_len,
	              const void *val, size_t val_len, pmq_done_fn done,
	              void *arg);
	int (*kv_del)(const char *ns, const void *key, size_t key_len,
	              pmq_done_fn done, void *arg);
	/* Sees every put and delete submitted before it.  On PMQ_OK *val is
	 * a new buffer the caller releases with free(). */
	int (*kv_get)(const char *ns, const void *key, size_t key_len,
	              void **val, size_t *val_len);
	/* fn for each key starting with prefix, in key order; non-zero from
	 * fn stops the scan. */
	int (*kv_scan)(const char *ns, const void *prefix, size_t prefix_len,
	               pmq_kv_fn fn, void *arg);

	/* ---- counters ---- */

	void (*stats)(struct pmq_stats *out); /* caller sets out->size */
	/* Count n messages dropped at a bound (QoS 0 to a slow consumer). */
	void (*stats_dropped)(uint64_t n);

	/* From inside the transport's deliver op: make the publish that
	 * produced delivery d wait, so its done (the publisher's ack) runs
	 * only after hold_release.  For a delivery the transport must store
	 * durably first, e.g. into an offline persistent session's queue.
	 * Returns the hold, or NULL when d has none (retained deliveries) or
	 * on no memory. */
	pmq_hold *(*delivery_hold)(const struct pmq_delivery *d);
	/* Release a hold exactly once, on the loop thread (also from inside
	 * the deliver op that took it); a status other than PMQ_OK fails the
	 * publish (no ack for it). */
	void (*hold_release)(pmq_hold *h, int status);

	/* "addr:port" of the local end the peer connected to (IPv6 as
	 * "[addr]:port"), e.g. for a Kafka broker advertising its own
	 * address; owned by the host, lives with the conn. */
	const char *(*conn_local)(pmq_conn *c);

	/* ---- 1.1 ---- */

	/* True when a publish on topic would reach at least one live
	 * subscriber now (NULL: any topic at all).  Lets a transport skip
	 * building messages nobody receives; may say true when unsure. */
	int (*has_subscribers)(const char *topic);
	/* slot_send without copying: release(arg) runs once the bytes are
	 * written or dropped, also when this call fails. */
	int (*slot_send_ref)(pmq_slot *s, const void *data, size_t len,
	                     void (*release)(void *arg), void *arg);
	/* Only inside a pmq_read_fn callback, with data pointing into the
	 * bytes it was given: keep those bytes alive after the callback
	 * returns.  Returns a reference to pass to log_read_unref (loop
	 * thread), e.g. as slot_send_ref's release; NULL when they cannot be
	 * kept (then copy them). */
	void *(*log_read_ref)(const void *data);
	void (*log_read_unref)(void *ref);
	/* From a deliver op that found the subscriber's connection full
	 * (conn_output_full): stop reading the connection whose input is
	 * being handled now, the publisher, until full's output drains
	 * below half its high-water mark or full closes.  The publisher's
	 * transport is not told; its socket simply is not read (TCP slows
	 * the peer).  Returns 1 when a connection was blocked, 0 when the
	 * publish did not come from a connection's input or full's output
	 * is already draining (then the caller applies its own policy). */
	int (*conn_block_input)(pmq_conn *full);

	/* ---- 1.2 ---- */

	/* log_read whose answer may stay in the storage's files, to be sent
	 * with sendfile(2) rather than copied (a storage plugin with
	 * log_read_extents; any other gives bytes, handled the same way).
	 * done's data is then opaque: len is the number of batch bytes, and
	 * the one thing to do with data is log_read_ref(data) inside the
	 * callback, then slot_send_stored (or log_read_unref). */
	int (*log_read_stored)(const char *topic, int32_t partition,
	                       int64_t offset, size_t max_bytes,
	                       pmq_read_fn done, void *arg);
	/* Send all the bytes of the log_read_stored answer that ref (from
	 * log_read_ref) holds into s, in order.  Takes over ref, also when
	 * it fails. */
	int (*slot_send_stored)(pmq_slot *s, void *ref);

	/* 1.3+: append only. */
};

#ifdef __cplusplus
}
#endif

#endif /* PLEXMQ_HOST_H */
