/*
 * logs.h - the log layer: topics -> partitions -> offsets, persisted
 * through the storage plugin.  host.c forwards the pmq_host_api log_*
 * functions here, and the router hands MQTT publishes that a topic rule
 * logs to logs_append_msg().
 *
 * Per partition the layer keeps four offsets:
 *   log_start   first offset still stored (advanced by retention)
 *   high_water  first offset not yet durable; readers and waiters never
 *               see past it.  Advanced only when the storage completes an
 *               append (completions arrive in order per log).
 *   log_end     next offset to assign; advanced when an append is
 *               submitted, so log_end >= high_water.
 * Topic metadata (partitions, retention) lives in the storage key-value
 * namespace "topics" (key: the topic name; value: LOGS_META_VERSION, then
 * partitions i32, retention_ms i64, retention_bytes i64, big-endian), so a
 * persistent storage brings every topic back at logs_init().
 *
 * Failed appends (the log stays consistent): an append that the storage
 * completes with an error (PMQ_ERR_NOSPC, PMQ_ERR_IO) does not advance
 * high_water.  Every append of that partition submitted before the error
 * arrived and still in flight is failed with the same error, whatever the
 * storage says about it (it would sit past a hole), and new appends are
 * refused with PMQ_ERR_AGAIN until those have all completed.  Then the
 * core closes and reopens the partition to learn the storage's durable
 * end: if the storage kept more than the core believed, those offsets
 * become readable and appends continue after them; if it kept less
 * (acknowledged data lost), appends fail with PMQ_ERR_IO, logged, until a
 * restart, so no offset is ever handed out twice.  A failed reopen is
 * retried by the next append.
 *
 * Retention: logs_init() starts a timer that calls logs_retention_run()
 * every LOGS_RETENTION_INTERVAL_MS.  Time retention asks the storage for
 * the first batch whose max timestamp is within retention_ms (needs the
 * optional log_offset_for_time op).  Byte retention counts only batches
 * appended since this process started (the storage ABI cannot tell a
 * partition's size): after a restart older data is not counted until it
 * is trimmed by time.  The newest batch is never trimmed by size.
 *
 * Completions: callbacks passed here run later on the loop thread, never
 * inside the call that registered them, exactly once unless that call
 * returned an error (as in plexmq/host.h).  Errors: PMQ_ERR_NOTFOUND for
 * an unknown topic or partition, PMQ_ERR_CLOSED after logs_shutdown().
 *
 * Threads: everything here belongs to the loop thread.
 */
#ifndef PMQ_CORE_LOGS_H
#define PMQ_CORE_LOGS_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/host.h>

struct config_rule;

/* The storage key-value namespace holding topic metadata. */
#define LOGS_META_NS "topics"
#define LOGS_META_VERSION 1
/* Upper bound on partitions per topic (as the config's rule limit). */
#define LOGS_MAX_PARTITIONS 10000
/* How often the retention timer runs. */
#define LOGS_RETENTION_INTERVAL_MS 30000

/*
 * Start the layer once the storage is started and set (storage_get()):
 * copy the topic rules (rules is borrowed), read every topic's metadata
 * from LOGS_META_NS, open its partitions (ops->log_open; high_water =
 * log_end, since stored offsets are durable), start the retention timer
 * on daemon_base().  A topic whose metadata is unreadable or whose
 * partitions do not open is logged and skipped, never fatal.  Returns
 * PMQ_OK, PMQ_ERR_NOMEM, or PMQ_ERR_INVAL (no storage set).
 */
int logs_init(const struct config_rule *rules, size_t n_rules);

/*
 * Stop: wake every waiter with PMQ_ERR_CANCELED, refuse new operations
 * with PMQ_ERR_CLOSED, let this layer's pending storage operations
 * complete (their callbacks run normally; this runs storage_io_run() until
 * they have, for at most 10 s), then close every log (ops->log_close) and
 * free everything.  Call it while the storage still runs or after its stop
 * (which completes every io), but before its destroy.  Safe to call twice.
 */
void logs_shutdown(void);

/*
 * Create a log topic with cfg->partitions (1..LOGS_MAX_PARTITIONS)
 * partitions.  The topic is usable at once; done (may be NULL) runs when
 * its metadata is durable.  Returns PMQ_ERR_EXISTS if it exists,
 * PMQ_ERR_AGAIN while a topic of that name is being deleted,
 * PMQ_ERR_INVAL for a bad name or config, or the storage's error from
 * log_open.
 *
 * Names: Kafka's rules (1..249 of [A-Za-z0-9._-]) are left to the Kafka
 * transport, since MQTT-derived log names may be wider; here a name is
 * refused only if it is empty, longer than 4096 bytes, contains '/' or
 * "..", or equals ".": storage plugins may map names to file names.
 */
int logs_create(const char *topic, const struct pmq_topic_config *cfg,
                pmq_done_fn done, void *arg);

/*
 * Delete a topic: it disappears from lookups at once; pending reads and
 * appends complete with PMQ_ERR_NOTFOUND and waiters wake with
 * PMQ_ERR_NOTFOUND.  Each partition is removed (ops->log_remove) and its
 * metadata deleted; done (may be NULL) runs after all of that with the
 * first error, if any.  PMQ_ERR_NOTFOUND if no such topic.
 */
int logs_delete(const char *topic, pmq_done_fn done, void *arg);

/* Fill *out (caller sets out->size) with the topic's config: PMQ_OK or
 * PMQ_ERR_NOTFOUND. */
int logs_topic(const char *topic, struct pmq_topic_config *out);

/* fn for every topic, in name (strcmp) order.  fn must not create or
 * delete topics. */
void logs_topics(pmq_topic_fn fn, void *arg);

/* Fill *out (caller sets out->size): PMQ_OK or PMQ_ERR_NOTFOUND. */
int logs_offsets(const char *topic, int32_t partition,
                 struct pmq_log_offsets *out);

/*
 * Append one RecordBatch v2 (copied).  The batch is validated
 * (batch_validate: PMQ_ERR_CORRUPT for a bad CRC or structure,
 * PMQ_ERR_INVAL for Kafka's INVALID_RECORD cases), given base offset
 * log_end and stored; done(arg, status, base_offset) runs once it is
 * durable (base_offset is -1 on error).  PMQ_ERR_AGAIN after a failed
 * append, see the top of this file.
 */
int logs_append(const char *topic, int32_t partition, const void *batch,
                size_t len, pmq_append_fn done, void *arg);

/*
 * Read whole stored batches from the one containing offset, about
 * max_bytes (the first batch always whole), never past high_water.
 * done(arg, status, data, len, offs): data is borrowed for the call, offs
 * are the partition's offsets at that moment.  offset == high_water gives
 * PMQ_OK with len 0; offset outside [log_start, high_water] gives
 * PMQ_ERR_RANGE (both through done, as every result).
 */
int logs_read(const char *topic, int32_t partition, int64_t offset,
              size_t max_bytes, pmq_read_fn done, void *arg);
/* logs_read whose answer may be a struct pmq_extents (host
 * log_read_stored): see include/plexmq/host.h. */
int logs_read_stored(const char *topic, int32_t partition, int64_t offset,
    size_t max_bytes, pmq_read_fn done, void *arg);

/*
 * The first offset of the first batch whose max timestamp is >= ts_ms and
 * which is durable, or -1 (Kafka ListOffsets by time).  ts_ms must be >= 0
 * (the logical -1/-2 of Kafka are log_offsets' high_water/log_start).
 * PMQ_ERR_UNSUPPORTED if the storage lacks log_offset_for_time.
 */
int logs_offset_for_time(const char *topic, int32_t partition, int64_t ts_ms,
                         pmq_offset_fn done, void *arg);

/*
 * Long poll: wake(arg, PMQ_OK) once high_water > offset (on the next loop
 * turn if it already is), wake(arg, PMQ_ERR_AGAIN) after timeout_ms,
 * PMQ_ERR_NOTFOUND if the topic is deleted, PMQ_ERR_CANCELED at shutdown.
 * Returns a waiter owned by this layer until wake runs or
 * logs_wait_cancel(); NULL if no such topic/partition, after shutdown, or
 * when out of memory.
 */
pmq_waiter *logs_wait(const char *topic, int32_t partition, int64_t offset,
                      uint32_t timeout_ms, pmq_done_fn wake, void *arg);
/* Drop a waiter whose wake has not run yet; wake never runs. */
void logs_wait_cancel(pmq_waiter *w);

/*
 * Append an MQTT message to the log its topic rule names.  The first rule
 * (in config order) whose match filter matches the message's topic
 * decides; PMQ_ERR_NOTFOUND if none matches (route live only).  The
 * rule's log topic is created with the rule's partitions and retention if
 * absent.  The partition is logs_partition_for_key() of the record key
 * batch_build writes (the message key if it has one, else the MQTT
 * topic), so Kafka clients computing partitions agree and one device
 * stays in order.  done (may be NULL) gets the partition and offset
 * (n_delivered 0) once the record is durable, or the error.  The
 * publishes of one loop turn to one partition are appended as one record
 * batch at the end of the turn, a record each, their offsets in call
 * order; m is referenced until then.
 */
int logs_append_msg(const pmq_msg *m, pmq_publish_fn done, void *arg);

/* Kafka's default partitioner: (murmur2(key) & 0x7fffffff) % partitions. */
int32_t logs_partition_for_key(const void *key, size_t len,
                               int32_t partitions);
/* Kafka's Utils.murmur2 (seed 0x9747b28c), as a signed Java int. */
int32_t logs_murmur2(const void *data, size_t len);

/* Run retention over every partition now (the timer's work; for tests).
 * Trims complete asynchronously and advance log_start. */
void logs_retention_run(void);

#endif
