/*
 * plexmq/storage.h - the ops table of a storage plugin.
 *
 * A storage plugin keeps two things: logs (append-only, one per
 * topic-partition, addressed by offset, holding record batches as opaque
 * bytes plus a little metadata) and key-value state in namespaces.  The
 * host never writes files itself.
 *
 * Threads and completions:
 *   - Every op is called on the loop thread and must not block, except
 *     start, stop, destroy, log_list and log_open, which run before serving
 *     or at shutdown and may.
 *   - Writing ops (log_append, log_trim, log_remove, kv_put, kv_del) and
 *     log_read, log_offset_for_time return at once; the plugin finishes
 *     each on a thread of its own by calling host->io_done() or
 *     host->io_done_data() exactly once with the pmq_io it was given.  An
 *     error is reported that way too, never by dropping the io.
 *   - A write may be completed only once it is as durable as the plugin's
 *     fsync policy promises: that completion is what releases a client's
 *     acknowledgement.
 *   - Completions of writes to one log, and of writes to one namespace,
 *     arrive in the order the writes were submitted.
 *   - kv_get and kv_scan are synchronous and see every put and delete
 *     submitted before them, completed or not.
 *   - stop completes every pending io (with PMQ_ERR_CANCELED if it cannot
 *     finish it) before it returns.
 *
 * Mandatory: every op but log_offset_for_time (may be NULL:
 * PMQ_ERR_UNSUPPORTED is reported to clients) and the ops appended after
 * 1.0 (the host checks with PMQ_HAS and falls back).
 */
#ifndef PLEXMQ_STORAGE_H
#define PLEXMQ_STORAGE_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the host knows about one batch it appends. */
struct pmq_batch_meta {
	uint32_t size;
	uint32_t records;      /* number of records; offsets base..base+n-1 */
	int64_t base_offset;   /* always the log's current end offset */
	int64_t first_timestamp_ms;
	int64_t max_timestamp_ms;
};

/* State of a log found or created by log_open. */
struct pmq_log_state {
	uint32_t size;
	int64_t log_start; /* first stored offset */
	int64_t log_end;   /* next offset to assign: every stored offset is
	                      durable when it is reported here */
};

typedef void (*pmq_log_list_fn)(void *arg, const char *topic,
                                int32_t partition);

/* 1.2: one piece of a log_read_extents answer: len bytes, either in
 * memory at data (fd < 0) or at byte pos of the open file fd. */
struct pmq_extent {
	const void *data;
	int64_t pos;
	uint32_t len;
	int32_t fd;
};

/* 1.2: a log_read_extents answer, the pieces in log order.  It is what
 * io_done_data's data points to; the plugin's free_fn releases it. */
struct pmq_extents {
	uint32_t size; /* sizeof(struct pmq_extents) at build time */
	uint32_t n;
	const struct pmq_extent *v;
};

struct pmq_storage_ops {
	uint32_t size; /* sizeof(struct pmq_storage_ops) at build time */
	uint32_t reserved0;

	/* Lifetime: create -> configure* -> start -> ... -> stop -> destroy. */
	void *(*create)(pmq_instance *inst);
	/* As in transport.h: PMQ_OK, PMQ_ERR_NOTFOUND or PMQ_ERR_CONFIG. */
	int (*configure)(void *st, const char *key, const char *value,
	                 char *err, size_t err_len);
	/* Open the store and recover it (cut torn tails, log what was cut);
	 * start the I/O threads. */
	int (*start)(void *st);
	void (*stop)(void *st);
	void (*destroy)(void *st);

	/* Every stored topic-partition, for recovery at start. */
	int (*log_list)(void *st, pmq_log_list_fn fn, void *arg);
	/* Open (creating if absent) one topic-partition.  Returns a handle
	 * owned by the plugin until log_close or log_remove, or NULL with
	 * *err set.  The host holds at most one handle per topic-partition
	 * at a time; it may log_close a handle with operations still queued
	 * on it and open it again, and the new handle reports the durable
	 * end (the core does so to resynchronise after a failed append). */
	void *(*log_open)(void *st, const char *topic, int32_t partition,
	                  struct pmq_log_state *out, int *err);
	void (*log_close)(void *st, void *log);
	/* Store one batch (data is copied before return).  io value: the
	 * offset after the batch (meta->base_offset + meta->records). */
	void (*log_append)(void *st, void *log, const struct pmq_batch_meta *m,
	                   const void *data, size_t len, pmq_io *io);
	/* Whole batches from the one containing offset, until more than
	 * max_bytes would be returned (at least one batch), but never a batch
	 * at or past limit (the host's high watermark).  io_done_data with
	 * the bytes; PMQ_ERR_RANGE if offset is before the log start or after
	 * its end; an empty result at the end. */
	void (*log_read)(void *st, void *log, int64_t offset, size_t max_bytes,
	                 int64_t limit, pmq_io *io);
	/* Drop whole batches that end before new_start (retention).  io
	 * value: the new log start offset.  PMQ_ERR_RANGE if new_start is
	 * past the log end. */
	void (*log_trim)(void *st, void *log, int64_t new_start, pmq_io *io);
	/* Delete the topic-partition and everything in it; the handle is
	 * invalid once io completes. */
	void (*log_remove)(void *st, void *log, pmq_io *io);
	/* io value: the base offset of the first batch with max timestamp
	 * >= ts_ms, or -1.  Optional. */
	void (*log_offset_for_time)(void *st, void *log, int64_t ts_ms,
	                            pmq_io *io);

	/* Key-value state.  Namespaces are short ASCII names. */
	void (*kv_put)(void *st, const char *ns, const void *key,
	               size_t key_len, const void *val, size_t val_len,
	               pmq_io *io);
	/* Deleting a key that is not there completes with PMQ_OK. */
	void (*kv_del)(void *st, const char *ns, const void *key,
	               size_t key_len, pmq_io *io);
	/* PMQ_OK with *val a new malloc() buffer the host frees, or
	 * PMQ_ERR_NOTFOUND. */
	int (*kv_get)(void *st, const char *ns, const void *key, size_t key_len,
	              void **val, size_t *val_len);
	/* In key order; fn returns non-zero to stop.  fn may call kv_put and
	 * kv_del; whether the scan then sees those writes is unspecified. */
	int (*kv_scan)(void *st, const char *ns, const void *prefix,
	               size_t prefix_len,
	               int (*fn)(void *arg, const void *key, size_t key_len,
	                         const void *val, size_t val_len),
	               void *arg);

	/* ---- 1.2 ---- */

	/* Optional.  log_read whose answer may leave batches in the plugin's
	 * files, so the host can send them with sendfile(2) instead of
	 * copying them: the same batches, limits and errors as log_read, but
	 * io_done_data's data is a struct pmq_extents and len the number of
	 * batch bytes it describes (the sum of the pieces).  Every fd and
	 * every byte range in it must stay open and unchanged until free_fn
	 * (which closes the fds) is called, on the loop thread, possibly long
	 * after the completion.  A file piece's pages should be in the page
	 * cache when the io completes: the host's sendfile runs on the loop
	 * thread and must not wait for the disk. */
	void (*log_read_extents)(void *st, void *log, int64_t offset,
	                         size_t max_bytes, int64_t limit, pmq_io *io);

	/* 1.2+: append only. */
};

#ifdef __cplusplus
}
#endif

#endif /* PLEXMQ_STORAGE_H */
