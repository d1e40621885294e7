/*
 * file.c - the durable storage plugin ("file"): logs as segment files and
 * key-value state as a journal plus snapshot, under one directory.  This
 * file holds the store, its config, the ops table and the I/O thread with
 * GROUP COMMIT; segment.c has the logs, journal.c the key-value state.
 * docs/storage-file.md describes the design and the on-disk formats.
 *
 * One I/O thread (the writer) runs a FIFO of ops.  Each time it wakes it
 * takes everything queued (a group), performs the writes in order, then,
 * with fsync = always, calls fdatasync once per file the group touched, and
 * only then completes the group's ops, together, in order.  Ops submitted
 * during those fsyncs queue up and form the next group, so under load one
 * fsync covers many writes and acknowledgements leave in bursts.  With
 * fsync = interval writes complete after write() and the writer fsyncs the
 * files it dirtied every fsync_interval_ms; with never the OS decides.
 * Reads (log_read, log_read_extents, log_offset_for_time) run on the same
 * thread, in queue order, and complete as soon as they are done.
 *
 * Config keys: dir, fsync, fsync_interval_ms, segment_bytes,
 * index_interval_bytes, read_only, zero_copy.
 *
 * Zero-copy reads (ABI 1.2 log_read_extents): with zero_copy = yes (the
 * default) batches of 64 KiB and more are answered as pieces of the
 * segment file (a dup of the segment's cached read fd, closed by the
 * answer's free_fn), so the host can sendfile them to the socket.  Their
 * frame header is checked but not their CRC (the RecordBatch inside
 * carries its own, which clients check); before completing, the writer
 * reads their pages into the page cache by sendfile()ing them to
 * /dev/null (opened at start), because the host's sendfile runs on the
 * loop thread and must not wait for the disk.  Smaller batches are copied
 * and CRC-checked as log_read does.  zero_copy = no copies (and
 * CRC-checks) every batch: memory pieces only.  An empty answer completes
 * with data NULL, len 0, no free_fn, like log_read's.
 *
 * Read-only: with read_only = yes, or when the data dir, its LOCK or the
 * journal cannot be opened for writing (EROFS, EACCES), the store opens
 * every file O_RDONLY, changes nothing on disk (a torn tail is ignored in
 * memory, not cut; indexes are rebuilt in memory only), serves reads and
 * completes every write with PMQ_ERR_RDONLY.  The counters of fsyncs and of stored writes are
 * logged at stop ("file storage: N fsyncs for M writes") and can be read
 * at any time with kv_get in the pseudo namespace "$stats" (keys "fsyncs",
 * "writes"; decimal text).
 *
 * Threads: ops run on the loop thread; the writer runs the queue; fs->mu
 * guards the queue, log refcounts and the key-value map; fs->dmu the list
 * of dirty files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file.h"

const struct pmq_host_api *fs_api;

enum op_kind {
	OP_DONE, /* completion only: status decided at submit */
	OP_APPEND,
	OP_READ,
	OP_EXTENTS, /* log_read_extents */
	OP_TRIM,
	OP_REMOVE,
	OP_TIME,
	OP_KV,
	OP_CLOSE /* log_close: drop the host's reference (no io) */
};

struct op {
	struct op *next;
	enum op_kind kind;
	pmq_io *io; /* NULL for OP_CLOSE */
	struct flog *log; /* holds a reference while queued */
	int status;
	int64_t value;
	struct pmq_batch_meta meta;
	unsigned char *data; /* append: frame; kv: record; read: result */
	struct pmq_extents *ext; /* log_read_extents: the answer */
	size_t len;
	int64_t offset; /* read offset, trim start, timestamp */
	size_t max_bytes;
	int64_t limit;
	struct fkv_undo *undo; /* kv: how to take the write back */
	uint64_t file_id;      /* file written, for the group's fsync result */
	int is_data;           /* completes with io_done_data */
	int completed;         /* reads complete before the group ends */
};

struct fs {
	pmq_instance *inst;
	/* dir (NULL: the host's data_dir), fsync, fsync_interval_ms,
	 * read_only */
	struct storecfg cfg;
	uint64_t segment_bytes;
	uint64_t index_interval;
	int zero_copy;  /* zero_copy = yes: file pieces in extents answers */
	/* /dev/null open for writing: log_read_extents warms a file piece's
	 * pages by sendfile()ing it there.  -1: none, or sendfile to it
	 * proved unsupported (then posix_fadvise WILLNEED).  Writer only
	 * after start. */
	int devnull_fd;
	int rdonly;     /* serving read-only (set during start only) */
	atomic_uint_fast64_t refused; /* writes refused as read-only */

	char *dir, *logs_dir; /* owned */
	int lock_fd;
	struct fkv *kv;

	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* queue got an op, or stopping */
	pthread_cond_t idle_cv; /* queue empty and writer idle */
	struct op *head, *tail;
	int busy, running, stopping;
	pthread_t thr;
	struct flog **logs; /* every live log, to free at destroy */
	size_t nlogs, caplogs;

	pthread_mutex_t dmu;
	struct fs_dirty *dirty;
	size_t ndirty, capdirty;
	int64_t last_sync_ms; /* interval mode: writer only */

	atomic_uint_fast64_t next_id;
	atomic_uint_fast64_t fsyncs, writes;
	int kv_failed; /* an fsync of the journal failed; writer only */
	/* Logs whose fsync failed, as "partition/topic" (under mu): a handle
	 * opened again (the host reopens a log to resynchronise after failed
	 * appends) must keep failing until a restart has checked the files.
	 * failed_all: remembering one ran out of memory, so all do. */
	char **failed;
	size_t nfailed;
	int failed_all;
};

/* ---- small accessors used by segment.c and journal.c ---- */

enum storecfg_fsync fs_policy(const struct fs *s) { return s->cfg.fsync; }
pmq_instance *fs_inst(const struct fs *s) { return s->inst; }
uint64_t fs_segment_bytes(const struct fs *s) { return s->segment_bytes; }
uint64_t fs_index_interval(const struct fs *s) { return s->index_interval; }
int fs_rdonly(const struct fs *s) { return s->rdonly; }
int fs_zero_copy(const struct fs *s) { return s->zero_copy; }
int fs_devnull(const struct fs *s) { return s->devnull_fd; }

void fs_devnull_unusable(struct fs *s, int e)
{
	if (s->devnull_fd < 0)
		return;
	fs_api->log(s->inst, PMQ_LOG_INFO,
	            "file storage: sendfile to /dev/null: %s; warming "
	            "zero-copy reads with posix_fadvise instead (the loop "
	            "thread may then wait for the disk in sendfile)",
	            strerror(e));
	close(s->devnull_fd);
	s->devnull_fd = -1;
}

void fs_set_rdonly(struct fs *s, const char *path, int e)
{
	if (s->rdonly)
		return;
	s->rdonly = 1;
	fs_api->log(s->inst, PMQ_LOG_WARN,
	            "file storage: %s: %s; opening the store read-only: "
	            "writes will fail, reads are served", path, strerror(e));
}

void fs_note_refused(struct fs *s)
{
	if (atomic_fetch_add(&s->refused, 1) == 0)
		fs_api->log(s->inst, PMQ_LOG_ERROR,
		            "file storage: %s is read-only: a write was refused "
		            "(every write fails until plexmqd restarts on a "
		            "writable dir)", s->dir ? s->dir : "the store");
}

uint64_t fs_new_file_id(struct fs *s)
{
	return atomic_fetch_add(&s->next_id, 1) + 1;
}

int fs_sync_fd(struct fs *s, int fd)
{
	int rc;

	do
		rc = fdatasync(fd);
	while (rc != 0 && errno == EINTR);
	atomic_fetch_add(&s->fsyncs, 1);
	return rc ? -errno : 0;
}

int fs_sync_dir(struct fs *s, const char *path)
{
	if (s->cfg.fsync == STORECFG_FSYNC_NEVER)
		return 0;
	atomic_fetch_add(&s->fsyncs, 1);
	return fs_fsync_dir(path);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- dirty files ---- */

int fs_dirty_add(struct fs *s, uint64_t id, int fd)
{
	size_t i;
	int rc = 0;

	if (s->cfg.fsync == STORECFG_FSYNC_NEVER)
		return 0;
	pthread_mutex_lock(&s->dmu);
	for (i = 0; i < s->ndirty; i++)
		if (s->dirty[i].id == id && s->dirty[i].fd >= 0)
			goto out;
	if (s->ndirty == s->capdirty) {
		size_t nc = s->capdirty ? s->capdirty * 2 : 16;
		struct fs_dirty *nd = realloc(s->dirty, nc * sizeof(*nd));

		if (nd == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		s->dirty = nd;
		s->capdirty = nc;
	}
	s->dirty[s->ndirty].id = id;
	s->dirty[s->ndirty].fd = fd;
	s->dirty[s->ndirty].err = 0;
	s->ndirty++;
out:
	pthread_mutex_unlock(&s->dmu);
	return rc;
}

void fs_dirty_close(struct fs *s, uint64_t id, int sync)
{
	size_t i;

	if (s->cfg.fsync == STORECFG_FSYNC_NEVER)
		return;
	pthread_mutex_lock(&s->dmu);
	for (i = 0; i < s->ndirty; i++) {
		struct fs_dirty *d = &s->dirty[i];

		if (d->id != id || d->fd < 0)
			continue;
		if (sync)
			d->err = fs_sync_fd(s, d->fd);
		d->fd = -1;
		if (d->err)
			fs_api->log(s->inst, PMQ_LOG_ERROR,
			            "file storage: fsync: %s", strerror(-d->err));
		/* always: the entry stays until the group ends, with its
		 * result; interval: nothing waits for it. */
		if (s->cfg.fsync != STORECFG_FSYNC_ALWAYS)
			s->dirty[i] = s->dirty[--s->ndirty];
		break;
	}
	pthread_mutex_unlock(&s->dmu);
}

static size_t dirty_count(struct fs *s)
{
	size_t n;

	pthread_mutex_lock(&s->dmu);
	n = s->ndirty;
	pthread_mutex_unlock(&s->dmu);
	return n;
}

/* fsync every dirty file still open (one fdatasync each). */
static void sync_all(struct fs *s)
{
	size_t i;

	pthread_mutex_lock(&s->dmu);
	for (i = 0; i < s->ndirty; i++) {
		struct fs_dirty *d = &s->dirty[i];

		if (d->fd < 0)
			continue;
		d->err = fs_sync_fd(s, d->fd);
		d->fd = -1;
		if (d->err)
			fs_api->log(s->inst, PMQ_LOG_ERROR,
			            "file storage: fdatasync: %s",
			            strerror(-d->err));
	}
	if (s->cfg.fsync != STORECFG_FSYNC_ALWAYS)
		s->ndirty = 0;
	pthread_mutex_unlock(&s->dmu);
}

/* The fsync result of file id in this group (always mode). */
static int dirty_err(struct fs *s, uint64_t id)
{
	size_t i;
	int err = 0;

	pthread_mutex_lock(&s->dmu);
	for (i = 0; i < s->ndirty; i++)
		if (s->dirty[i].id == id && s->dirty[i].err)
			err = s->dirty[i].err;
	pthread_mutex_unlock(&s->dmu);
	return err;
}

/* ---- ops and logs ---- */

static void op_free(struct op *o)
{
	free(o->data);
	if (o->ext != NULL)
		flog_extents_free(o->ext);
	fkv_undo_free(o->undo);
	free(o);
}

static void op_complete(struct op *o)
{
	if (o->io == NULL || o->completed)
		return;
	o->completed = 1;
	if (o->is_data && o->ext != NULL) {
		struct pmq_extents *x = o->ext;

		o->ext = NULL; /* the host owns it (and its fds) now */
		fs_api->io_done_data(o->io, o->status, x, o->len,
		                     flog_extents_free);
	} else if (o->is_data) {
		unsigned char *d = o->data;

		o->data = NULL; /* the host owns it now */
		fs_api->io_done_data(o->io, o->status, d, d ? o->len : 0,
		                     d ? free : NULL);
	} else {
		fs_api->io_done(o->io, o->status, o->value);
	}
}

/* Drop one reference to l; frees it at zero.  Caller holds mu; returns
 * the log to free (outside the lock), or NULL. */
static struct flog *log_unref_locked(struct fs *s, struct flog *l)
{
	size_t i;

	if (l == NULL || --l->refs > 0)
		return NULL;
	for (i = 0; i < s->nlogs; i++) {
		if (s->logs[i] == l) {
			s->logs[i] = s->logs[--s->nlogs];
			break;
		}
	}
	return l;
}

static void log_destroy(struct fs *s, struct flog *l)
{
	if (l == NULL)
		return;
	free(l->close_op);
	flog_free(s, l);
}

static void exec_op(struct fs *s, struct op *o)
{
	struct flog *l = o->log;
	int rc;

	if (o->status != PMQ_OK)
		return;
	switch (o->kind) {
	case OP_APPEND:
		o->status = flog_append(s, l, &o->meta, o->data, o->len,
		                        &o->file_id);
		if (o->status == PMQ_OK)
			o->value = o->meta.base_offset + o->meta.records;
		free(o->data);
		o->data = NULL;
		break;
	case OP_READ:
		o->status = flog_read(s, l, o->offset, o->max_bytes, o->limit,
		                      &o->data, &o->len);
		op_complete(o);
		break;
	case OP_EXTENTS:
		o->status = flog_read_extents(s, l, o->offset, o->max_bytes,
		                              o->limit, &o->ext, &o->len);
		op_complete(o);
		break;
	case OP_TIME:
		o->status = flog_time(s, l, o->offset, &o->value);
		op_complete(o);
		break;
	case OP_TRIM:
		o->status = flog_trim(s, l, o->offset, &o->value);
		break;
	case OP_REMOVE:
		o->status = flog_remove(s, l);
		break;
	case OP_KV:
		if (s->kv_failed) {
			o->status = s->kv_failed;
			break;
		}
		rc = fkv_write(s, s->kv, o->data, o->len, &o->file_id);
		o->status = rc;
		break;
	case OP_CLOSE:
	case OP_DONE:
		break;
	}
}

/* Name of a log in s->failed; malloc'd, NULL when out of memory. */
static char *failed_name(const char *topic, int32_t partition)
{
	size_t n = strlen(topic) + 16;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%d/%s", (int)partition, topic);
	return p;
}

/* Writer: the log's fsync failed; remember it beyond this handle. */
static void remember_failed(struct fs *s, const struct flog *l)
{
	char *name = failed_name(l->topic, l->partition);
	char **nv;

	pthread_mutex_lock(&s->mu);
	nv = name != NULL ? realloc(s->failed, (s->nfailed + 1) *
	                                           sizeof(*s->failed))
	                  : NULL;
	if (nv == NULL) {
		free(name);
		s->failed_all = 1;
	} else {
		s->failed = nv;
		s->failed[s->nfailed++] = name;
	}
	pthread_mutex_unlock(&s->mu);
}

/* Did an fsync of this log fail since start?  Loop thread. */
static int was_failed(struct fs *s, const char *topic, int32_t partition)
{
	char *name = failed_name(topic, partition);
	size_t i;
	int r;

	pthread_mutex_lock(&s->mu);
	r = s->failed_all || name == NULL;
	for (i = 0; !r && i < s->nfailed; i++)
		r = strcmp(s->failed[i], name) == 0;
	pthread_mutex_unlock(&s->mu);
	free(name);
	return r;
}

/* Run one group: writes, then (always) one fsync per touched file, then
 * every completion, in order. */
static void run_group(struct fs *s, struct op *batch)
{
	struct flog *to_free[64];
	struct op *o, *p;
	size_t nfree = 0, nlater, cap = 0;
	struct fkv_undo **later = NULL;
	uint64_t writes = 0;

	for (o = batch; o; o = o->next) {
		exec_op(s, o);
		if (o->status == PMQ_ERR_RDONLY && o->kind != OP_READ &&
		    o->kind != OP_EXTENTS && o->kind != OP_TIME)
			fs_note_refused(s);
	}
	if (s->cfg.fsync == STORECFG_FSYNC_ALWAYS) {
		sync_all(s);
		for (o = batch; o; o = o->next) {
			int err;

			if (o->status != PMQ_OK || o->file_id == 0)
				continue;
			err = dirty_err(s, o->file_id);
			if (err == 0)
				continue;
			/* After a failed fsync the kernel may have dropped
			 * the pages: nothing later may be acknowledged on
			 * top of them until a restart checks the files. */
			o->status = PMQ_ERR_IO;
			if (o->kind == OP_APPEND) {
				if (!o->log->failed)
					remember_failed(s, o->log);
				o->log->failed = PMQ_ERR_IO;
			} else
				s->kv_failed = PMQ_ERR_IO;
		}
		pthread_mutex_lock(&s->dmu);
		s->ndirty = 0;
		pthread_mutex_unlock(&s->dmu);
	}

	/* Key-value writes that did not make it leave the map, oldest
	 * first, each handing its old value to later writes of its key. */
	pthread_mutex_lock(&s->mu);
	for (o = batch; o; o = o->next) {
		if (o->kind != OP_KV || o->undo == NULL)
			continue;
		fkv_done_locked(s->kv);
		if (o->status == PMQ_OK)
			continue;
		nlater = 0;
		for (p = o->next; p; p = p->next)
			nlater++;
		for (p = s->head; p; p = p->next)
			nlater++;
		if (nlater > cap) {
			struct fkv_undo **nl = realloc(later,
			                               nlater * sizeof(*nl));

			if (nl != NULL) {
				later = nl;
				cap = nlater;
			}
		}
		if (nlater > cap) {
			/* No memory to look ahead: restore directly. */
			fkv_undo_locked(s->kv, o->undo, NULL, 0);
			continue;
		}
		nlater = 0;
		for (p = o->next; p; p = p->next)
			if (p->kind == OP_KV && p->undo)
				later[nlater++] = p->undo;
		for (p = s->head; p; p = p->next)
			if (p->kind == OP_KV && p->undo)
				later[nlater++] = p->undo;
		fkv_undo_locked(s->kv, o->undo, later, nlater);
	}
	pthread_mutex_unlock(&s->mu);
	free(later);

	/* Count before completing: whoever waits on a completion may read
	 * the counters at once and must see this group in them. */
	for (o = batch; o; o = o->next)
		if (o->status == PMQ_OK &&
		    (o->kind == OP_APPEND || o->kind == OP_KV))
			writes++;
	atomic_fetch_add(&s->writes, writes);
	for (o = batch; o; o = p) {
		struct flog *dead = NULL;

		p = o->next;
		op_complete(o);
		pthread_mutex_lock(&s->mu);
		if (o->kind == OP_CLOSE) {
			o->log->close_op = NULL; /* o is freed below */
			dead = log_unref_locked(s, o->log);
		} else if (o->kind == OP_REMOVE) {
			/* The handle dies with the remove: the host's
			 * reference goes too. */
			if (log_unref_locked(s, o->log) != NULL)
				dead = o->log; /* cannot happen: op holds one */
		}
		if (dead == NULL && o->kind != OP_CLOSE)
			dead = log_unref_locked(s, o->log);
		pthread_mutex_unlock(&s->mu);
		if (dead != NULL) {
			if (nfree < sizeof(to_free) / sizeof(to_free[0]))
				to_free[nfree++] = dead;
			else
				log_destroy(s, dead);
		}
		op_free(o);
	}
	while (nfree > 0)
		log_destroy(s, to_free[--nfree]);
	fkv_maybe_compact(s, s->kv, &s->mu);
}

static void *writer(void *arg)
{
	struct fs *s = arg;
	struct op *batch;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->head == NULL && !s->stopping) {
			int64_t due;
			struct timespec ts;

			if (s->cfg.fsync != STORECFG_FSYNC_INTERVAL ||
			    dirty_count(s) == 0) {
				pthread_cond_wait(&s->work_cv, &s->mu);
				continue;
			}
			due = s->last_sync_ms + s->cfg.interval_ms;
			if (mono_ms() >= due) {
				s->busy = 1;
				pthread_mutex_unlock(&s->mu);
				sync_all(s);
				s->last_sync_ms = mono_ms();
				pthread_mutex_lock(&s->mu);
				s->busy = 0;
				pthread_cond_broadcast(&s->idle_cv);
				continue;
			}
			ts.tv_sec = due / 1000;
			ts.tv_nsec = (long)(due % 1000) * 1000000L;
			pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
		}
		batch = s->head;
		if (batch == NULL)
			break; /* stopping and drained */
		s->head = s->tail = NULL;
		s->busy = 1;
		pthread_mutex_unlock(&s->mu);

		run_group(s, batch);

		pthread_mutex_lock(&s->mu);
		s->busy = 0;
		if (s->head == NULL)
			pthread_cond_broadcast(&s->idle_cv);
	}
	pthread_mutex_unlock(&s->mu);
	if (s->cfg.fsync == STORECFG_FSYNC_INTERVAL)
		sync_all(s);
	return NULL;
}

/* Block until the writer is idle with nothing queued (ops that may block:
 * log_open, log_list). */
static void wait_idle(struct fs *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->running && (s->head != NULL || s->busy))
		pthread_cond_wait(&s->idle_cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
}

static void enqueue_locked(struct fs *s, struct op *o)
{
	o->next = NULL;
	if (s->tail)
		s->tail->next = o;
	else
		s->head = o;
	s->tail = o;
	pthread_cond_signal(&s->work_cv);
}

/* Complete io with an error when no op could be allocated; waiting for
 * the queue first keeps completions in order. */
static void fail_now(struct fs *s, pmq_io *io, int status, int read)
{
	fs_api->log(s->inst, PMQ_LOG_ERROR, "file storage: %s",
	            fs_api->strerror(status));
	wait_idle(s);
	if (read)
		fs_api->io_done_data(io, status, NULL, 0, NULL);
	else
		fs_api->io_done(io, status, 0);
}

static struct op *op_new(struct fs *s, pmq_io *io, enum op_kind kind,
                         struct flog *l)
{
	struct op *o = calloc(1, sizeof(*o));

	if (o == NULL) {
		fail_now(s, io, PMQ_ERR_NOMEM,
		         kind == OP_READ || kind == OP_EXTENTS);
		return NULL;
	}
	o->kind = kind;
	o->io = io;
	o->log = l;
	o->is_data = kind == OP_READ || kind == OP_EXTENTS;
	return o;
}

static void submit_log(struct fs *s, struct op *o)
{
	pthread_mutex_lock(&s->mu);
	if (!s->running) {
		pthread_mutex_unlock(&s->mu);
		o->status = PMQ_ERR_CLOSED;
		op_complete(o);
		op_free(o);
		return;
	}
	if (o->log == NULL || o->log->removing) {
		o->status = PMQ_ERR_CLOSED;
		o->kind = OP_DONE;
		o->log = NULL;
	} else {
		o->log->refs++;
		if (o->kind == OP_REMOVE)
			o->log->removing = 1;
	}
	enqueue_locked(s, o);
	pthread_mutex_unlock(&s->mu);
}

/* ---- lifetime and config ---- */

static void *fs_create(pmq_instance *inst)
{
	struct fs *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		fs_api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	s->inst = inst;
	storecfg_init(&s->cfg);
	s->segment_bytes = 64u << 20;
	s->index_interval = 4096;
	s->lock_fd = -1;
	s->zero_copy = 1;
	s->devnull_fd = -1;
	atomic_init(&s->next_id, 0);
	atomic_init(&s->fsyncs, 0);
	atomic_init(&s->writes, 0);
	atomic_init(&s->refused, 0);
	if (pthread_mutex_init(&s->mu, NULL) != 0)
		goto fail_mu;
	if (pthread_mutex_init(&s->dmu, NULL) != 0)
		goto fail_dmu;
	if (pthread_cond_init(&s->idle_cv, NULL) != 0)
		goto fail_idle;
	{
		pthread_condattr_t ca;
		int rc;

		/* The interval timer waits on the monotonic clock. */
		if (pthread_condattr_init(&ca) != 0)
			goto fail_work;
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		rc = pthread_cond_init(&s->work_cv, &ca);
		pthread_condattr_destroy(&ca);
		if (rc != 0)
			goto fail_work;
	}
	s->kv = fkv_new();
	if (s->kv == NULL)
		goto fail_kv;
	return s;
fail_kv:
	pthread_cond_destroy(&s->work_cv);
fail_work:
	pthread_cond_destroy(&s->idle_cv);
fail_idle:
	pthread_mutex_destroy(&s->dmu);
fail_dmu:
	pthread_mutex_destroy(&s->mu);
fail_mu:
	fs_api->log(inst, PMQ_LOG_ERROR, "%s: cannot create locks", __func__);
	free(s);
	return NULL;
}

static int fs_configure(void *st, const char *key, const char *value,
                        char *err, size_t err_len)
{
	struct fs *s = st;
	uint64_t sz;
	int rc;

	rc = storecfg_key(fs_api, &s->cfg, key, value, err, err_len);
	if (rc != PMQ_ERR_NOTFOUND)
		return rc;
	if (strcmp(key, "segment_bytes") == 0) {
		if (fs_api->cfg_size(value, &sz) != PMQ_OK || sz < 1024 ||
		    sz > (1u << 30)) {
			snprintf(err, err_len,
			         "segment_bytes: want 1k..1G, got '%s'", value);
			return PMQ_ERR_CONFIG;
		}
		s->segment_bytes = sz;
		return PMQ_OK;
	}
	if (strcmp(key, "zero_copy") == 0) {
		int b;

		if (fs_api->cfg_bool(value, &b) != PMQ_OK) {
			snprintf(err, err_len, "zero_copy: want yes or no, got "
			         "'%s'", value);
			return PMQ_ERR_CONFIG;
		}
		s->zero_copy = b;
		return PMQ_OK;
	}
	if (strcmp(key, "index_interval_bytes") == 0) {
		if (fs_api->cfg_size(value, &sz) != PMQ_OK || sz > (1u << 30)) {
			snprintf(err, err_len,
			         "index_interval_bytes: want 0..1G, got '%s'",
			         value);
			return PMQ_ERR_CONFIG;
		}
		s->index_interval = sz;
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

/* mkdir -p, one level at a time. */
static int mkdirs(const char *path)
{
	char *p = strdup(path), *q;
	int rc = 0;

	if (p == NULL)
		return -ENOMEM;
	for (q = p + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			rc = -errno;
		*q = '/';
		if (rc)
			break;
	}
	if (rc == 0 && mkdir(p, 0755) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

/* Remove log directories a crash left half deleted. */
static void sweep_deleting(struct fs *s)
{
	DIR *d = opendir(s->logs_dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		char *p;

		if (n < 9 || strcmp(de->d_name + n - 9, ".deleting") != 0)
			continue;
		p = fs_path(s->logs_dir, de->d_name);
		if (p == NULL)
			continue;
		fs_api->log(s->inst, PMQ_LOG_INFO,
		            "file storage: finishing removal of %s", p);
		fs_rmtree(p);
		free(p);
	}
	closedir(d);
}

/*
 * One daemon per directory: two writers would interleave.  A writer holds
 * LOCK exclusively.  A read-only store takes it shared when the file is
 * there (so no writer starts while it reads, and it does not start while a
 * writer runs); where LOCK cannot even be opened it goes on without and
 * says so: another process must not write to the dir meanwhile.
 */
static int take_lock(struct fs *s, const char *lock)
{
	int e;

	if (!s->rdonly) {
		do
			s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC,
			                  0644);
		while (s->lock_fd < 0 && errno == EINTR);
		if (s->lock_fd < 0 && (errno == EROFS || errno == EACCES))
			fs_set_rdonly(s, lock, errno);
		else if (s->lock_fd < 0) {
			e = errno;
			fs_api->log(s->inst, PMQ_LOG_ERROR,
			            "file storage: %s: %s", lock, strerror(e));
			return fs_errno_err(e);
		}
	}
	if (s->rdonly) {
		do
			s->lock_fd = open(lock, O_RDONLY | O_CLOEXEC);
		while (s->lock_fd < 0 && errno == EINTR);
		if (s->lock_fd < 0) {
			fs_api->log(s->inst, PMQ_LOG_WARN,
			            "file storage: %s: %s; read-only without a "
			            "lock: no other plexmqd may write to %s "
			            "meanwhile", lock, strerror(errno), s->dir);
			return PMQ_OK;
		}
	}
	if (flock(s->lock_fd, (s->rdonly ? LOCK_SH : LOCK_EX) | LOCK_NB) !=
	    0) {
		e = errno;
		fs_api->log(s->inst, PMQ_LOG_ERROR,
		            "file storage: %s: %s", lock,
		            e == EWOULDBLOCK ? "in use by another process"
		                             : strerror(e));
		close(s->lock_fd);
		s->lock_fd = -1;
		return e == EWOULDBLOCK ? PMQ_ERR_EXISTS : fs_errno_err(e);
	}
	return PMQ_OK;
}

static int fs_start(void *st)
{
	struct fs *s = st;
	const char *base = s->cfg.dir ? s->cfg.dir : fs_api->data_dir();
	char *lock;
	int rc;

	if (s->running)
		return PMQ_OK;
	if (base == NULL || *base == '\0')
		base = ".";
	s->dir = strdup(base);
	s->logs_dir = fs_path(base, "logs");
	lock = fs_path(base, "LOCK");
	if (s->dir == NULL || s->logs_dir == NULL || lock == NULL) {
		free(lock);
		return PMQ_ERR_NOMEM;
	}
	if (s->cfg.read_only) {
		s->rdonly = 1;
		fs_api->log(s->inst, PMQ_LOG_INFO,
		            "file storage: %s: read_only = yes: writes will "
		            "fail, reads are served", s->dir);
	}
	rc = s->rdonly ? 0 : mkdirs(s->logs_dir);
	if (rc == -EROFS || rc == -EACCES) {
		struct stat sb;

		/* Nothing can be created here: serve what there is. */
		if (stat(s->dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			fs_set_rdonly(s, s->logs_dir, -rc);
			rc = 0;
		}
	}
	if (rc != 0) {
		fs_api->log(s->inst, PMQ_LOG_ERROR, "file storage: %s: %s",
		            s->logs_dir, strerror(-rc));
		free(lock);
		return fs_errno_err(-rc);
	}
	rc = take_lock(s, lock);
	free(lock);
	if (rc != PMQ_OK)
		return rc;
	if (!s->rdonly)
		sweep_deleting(s);
	rc = fkv_open(s, s->kv, s->dir);
	if (rc != PMQ_OK) {
		fs_api->log(s->inst, PMQ_LOG_ERROR,
		            "file storage: %s: cannot open key-value state: %s",
		            s->dir, fs_api->strerror(rc));
		return rc;
	}
	if (s->zero_copy && s->devnull_fd < 0) {
		/* The sink of the page cache warm-up of zero-copy reads.
		 * Without it reads still work, warmed by posix_fadvise. */
		do
			s->devnull_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		while (s->devnull_fd < 0 && errno == EINTR);
		if (s->devnull_fd < 0)
			fs_api->log(s->inst, PMQ_LOG_WARN,
			            "file storage: /dev/null: %s; zero-copy reads "
			            "are warmed with posix_fadvise only",
			            strerror(errno));
	}
	s->last_sync_ms = mono_ms();
	s->stopping = 0;
	rc = pthread_create(&s->thr, NULL, writer, s);
	if (rc != 0) {
		fs_api->log(s->inst, PMQ_LOG_ERROR,
		            "file storage: cannot start the I/O thread: %s",
		            strerror(rc));
		return PMQ_ERR_NOMEM;
	}
	s->running = 1;
	fs_api->log(s->inst, PMQ_LOG_INFO,
	            "file storage: %s, fsync = %s, segments of %" PRIu64
	            " bytes%s", s->dir, storecfg_fsync_name(s->cfg.fsync),
	            s->segment_bytes,
	            s->rdonly ? "; READ-ONLY: writes will fail" : "");
	return PMQ_OK;
}

static void fs_stop(void *st)
{
	struct fs *s = st;

	if (!s->running)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->mu);
	/* The writer completes everything queued, syncs, then exits. */
	pthread_join(s->thr, NULL);
	pthread_mutex_lock(&s->mu);
	s->running = 0;
	pthread_cond_broadcast(&s->idle_cv);
	pthread_mutex_unlock(&s->mu);
	fs_api->log(s->inst, PMQ_LOG_INFO,
	            "file storage: %" PRIu64 " fsyncs for %" PRIu64 " writes",
	            (uint64_t)atomic_load(&s->fsyncs),
	            (uint64_t)atomic_load(&s->writes));
	if (atomic_load(&s->refused) > 0)
		fs_api->log(s->inst, PMQ_LOG_WARN,
		            "file storage: %" PRIu64 " writes refused: "
		            "read-only", (uint64_t)atomic_load(&s->refused));
}

static void fs_destroy(void *st)
{
	struct fs *s = st;
	size_t i;

	if (s == NULL)
		return;
	fs_stop(s);
	for (i = 0; i < s->nlogs; i++)
		log_destroy(s, s->logs[i]);
	free(s->logs);
	fkv_free(s->kv);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->devnull_fd >= 0)
		close(s->devnull_fd);
	free(s->dirty);
	while (s->nfailed > 0)
		free(s->failed[--s->nfailed]);
	free(s->failed);
	free(s->dir);
	free(s->logs_dir);
	storecfg_free(&s->cfg);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->idle_cv);
	pthread_mutex_destroy(&s->dmu);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* ---- logs ---- */

static int fs_log_list(void *st, pmq_log_list_fn fn, void *arg)
{
	struct fs *s = st;
	DIR *d;
	struct dirent *de;

	if (s->logs_dir == NULL)
		return PMQ_ERR_CLOSED;
	wait_idle(s); /* pending removes count */
	d = opendir(s->logs_dir);
	if (d == NULL && errno == ENOENT && s->rdonly)
		return PMQ_OK; /* read-only and never written: no logs */
	if (d == NULL)
		return fs_errno_err(errno);
	while ((de = readdir(d)) != NULL) {
		char *topic;
		int32_t part;

		if (de->d_name[0] == '.' &&
		    (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		if (flog_parse_dirname(de->d_name, &topic, &part) != 0)
			continue;
		fn(arg, topic, part);
		free(topic);
	}
	closedir(d);
	return PMQ_OK;
}

static void *fs_log_open(void *st, const char *topic, int32_t partition,
                         struct pmq_log_state *out, int *err)
{
	struct fs *s = st;
	struct flog *l;

	if (topic == NULL || *topic == '\0' || partition < 0) {
		*err = PMQ_ERR_INVAL;
		return NULL;
	}
	if (!s->running) {
		*err = PMQ_ERR_CLOSED;
		return NULL;
	}
	/* A closed handle of the same log may still have ops queued. */
	wait_idle(s);
	l = flog_open(s, s->logs_dir, topic, partition, err);
	if (l == NULL)
		return NULL;
	if (was_failed(s, topic, partition))
		l->failed = PMQ_ERR_IO;
	l->close_op = calloc(1, sizeof(struct op));
	pthread_mutex_lock(&s->mu);
	if (l->close_op == NULL || s->nlogs == s->caplogs) {
		size_t nc = s->caplogs ? s->caplogs * 2 : 16;
		struct flog **nl = l->close_op
		                       ? realloc(s->logs, nc * sizeof(*nl))
		                       : NULL;

		if (nl == NULL) {
			pthread_mutex_unlock(&s->mu);
			log_destroy(s, l);
			*err = PMQ_ERR_NOMEM;
			return NULL;
		}
		s->logs = nl;
		s->caplogs = nc;
	}
	s->logs[s->nlogs++] = l;
	pthread_mutex_unlock(&s->mu);
	if (out != NULL) {
		out->size = sizeof(*out);
		out->log_start = l->start;
		out->log_end = flog_end(l);
	}
	*err = PMQ_OK;
	return l;
}

static void fs_log_close(void *st, void *log)
{
	struct fs *s = st;
	struct flog *l = log;
	struct op *o;

	if (l == NULL)
		return;
	/* Queued behind the log's ops; the writer frees it (no blocking,
	 * no allocation: the op was made at open). */
	o = l->close_op;
	o->kind = OP_CLOSE;
	o->log = l;
	pthread_mutex_lock(&s->mu);
	if (!s->running) {
		struct flog *dead = log_unref_locked(s, l);

		pthread_mutex_unlock(&s->mu);
		log_destroy(s, dead);
		return;
	}
	enqueue_locked(s, o);
	pthread_mutex_unlock(&s->mu);
}

static void fs_log_append(void *st, void *log,
                          const struct pmq_batch_meta *meta,
                          const void *data, size_t len, pmq_io *io)
{
	struct fs *s = st;
	struct op *o = op_new(s, io, OP_APPEND, log);

	if (o == NULL)
		return;
	if (meta == NULL ||
	    !PMQ_HAS(meta, struct pmq_batch_meta, max_timestamp_ms) ||
	    meta->records == 0 || len == 0 || data == NULL ||
	    len > (1u << 30)) {
		o->status = PMQ_ERR_INVAL; /* reported in order */
	} else {
		o->meta = *meta;
		o->data = malloc(FS_FRAME_HDR + len);
		if (o->data == NULL) {
			free(o);
			fail_now(s, io, PMQ_ERR_NOMEM, 0);
			return;
		}
		memcpy(o->data + FS_FRAME_HDR, data, len);
		o->len = len;
	}
	submit_log(s, o);
}

/* A read op (OP_READ or OP_EXTENTS) on log. */
static void submit_read(struct fs *s, enum op_kind kind, void *log,
                        int64_t offset, size_t max_bytes, int64_t limit,
                        pmq_io *io)
{
	struct op *o = op_new(s, io, kind, log);

	if (o == NULL)
		return;
	o->offset = offset;
	o->max_bytes = max_bytes;
	o->limit = limit;
	submit_log(s, o);
}

static void fs_log_read(void *st, void *log, int64_t offset,
                        size_t max_bytes, int64_t limit, pmq_io *io)
{
	submit_read(st, OP_READ, log, offset, max_bytes, limit, io);
}

/* 1.2: log_read whose answer may point into the segment files. */
static void fs_log_read_extents(void *st, void *log, int64_t offset,
                                size_t max_bytes, int64_t limit, pmq_io *io)
{
	submit_read(st, OP_EXTENTS, log, offset, max_bytes, limit, io);
}

static void fs_log_trim(void *st, void *log, int64_t new_start, pmq_io *io)
{
	struct fs *s = st;
	struct op *o = op_new(s, io, OP_TRIM, log);

	if (o == NULL)
		return;
	o->offset = new_start;
	submit_log(s, o);
}

static void fs_log_remove(void *st, void *log, pmq_io *io)
{
	struct fs *s = st;
	struct op *o = op_new(s, io, OP_REMOVE, log);

	if (o != NULL)
		submit_log(s, o);
}

static void fs_log_offset_for_time(void *st, void *log, int64_t ts_ms,
                                   pmq_io *io)
{
	struct fs *s = st;
	struct op *o = op_new(s, io, OP_TIME, log);

	if (o == NULL)
		return;
	o->offset = ts_ms;
	submit_log(s, o);
}

/* ---- key-value state ---- */

#define STATS_NS "$stats"

static void kv_write(struct fs *s, const char *ns, const void *key,
                     size_t klen, const void *val, size_t vlen, int del,
                     pmq_io *io)
{
	struct op *o = op_new(s, io, OP_KV, NULL);

	if (o == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	if (!s->running) {
		pthread_mutex_unlock(&s->mu);
		o->status = PMQ_ERR_CLOSED;
		op_complete(o);
		op_free(o);
		return;
	}
	if (ns == NULL || *ns == '\0' || strlen(ns) > 255 ||
	    strcmp(ns, STATS_NS) == 0 || (key == NULL && klen) ||
	    (val == NULL && vlen) || klen > (1u << 30) || vlen > (1u << 30))
		o->status = PMQ_ERR_INVAL;
	else if (s->rdonly)
		o->status = PMQ_ERR_RDONLY; /* the map stays as stored */
	else
		o->status = fkv_apply_locked(s->kv, ns, key, klen, val, vlen,
		                             del, &o->data, &o->len, &o->undo);
	if (o->status != PMQ_OK)
		o->kind = OP_DONE;
	enqueue_locked(s, o);
	pthread_mutex_unlock(&s->mu);
}

static void fs_kv_put(void *st, const char *ns, const void *key,
                      size_t key_len, const void *val, size_t val_len,
                      pmq_io *io)
{
	kv_write(st, ns, key, key_len, val, val_len, 0, io);
}

static void fs_kv_del(void *st, const char *ns, const void *key,
                      size_t key_len, pmq_io *io)
{
	kv_write(st, ns, key, key_len, NULL, 0, 1, io);
}

/* "$stats": counters as decimal text, for tests and operators. */
static int stats_get(struct fs *s, const void *key, size_t klen, void **val,
                     size_t *vlen)
{
	uint64_t v;
	char buf[32];
	int n;

	if (klen == 6 && memcmp(key, "fsyncs", 6) == 0)
		v = atomic_load(&s->fsyncs);
	else if (klen == 6 && memcmp(key, "writes", 6) == 0)
		v = atomic_load(&s->writes);
	else
		return PMQ_ERR_NOTFOUND;
	n = snprintf(buf, sizeof(buf), "%" PRIu64, v);
	*val = malloc((size_t)n + 1);
	if (*val == NULL)
		return PMQ_ERR_NOMEM;
	memcpy(*val, buf, (size_t)n + 1);
	*vlen = (size_t)n;
	return PMQ_OK;
}

static int fs_kv_get(void *st, const char *ns, const void *key,
                     size_t key_len, void **val, size_t *val_len)
{
	struct fs *s = st;
	int rc;

	if (ns == NULL || (key == NULL && key_len))
		return PMQ_ERR_INVAL;
	if (strcmp(ns, STATS_NS) == 0)
		return stats_get(s, key, key_len, val, val_len);
	pthread_mutex_lock(&s->mu);
	rc = fkv_get_locked(s->kv, ns, key, key_len, val, val_len);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* fn runs without the lock on a copy of each entry, resuming after the
 * last key seen, so it may call kv_put/kv_del. */
static int fs_kv_scan(void *st, const char *ns, const void *prefix,
                      size_t prefix_len,
                      int (*fn)(void *arg, const void *key, size_t key_len,
                                const void *val, size_t val_len),
                      void *arg)
{
	struct fs *s = st;
	unsigned char *buf = NULL;
	size_t cap = 0, klen = 0, vlen = 0;
	int first = 1, rc = PMQ_OK, r;

	if (ns == NULL || fn == NULL || (prefix == NULL && prefix_len))
		return PMQ_ERR_INVAL;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		r = first ? fkv_next_locked(s->kv, ns, prefix, prefix_len,
		                            prefix, prefix_len, 0, &buf, &cap,
		                            &klen, &vlen)
		          : fkv_next_locked(s->kv, ns, prefix, prefix_len, buf,
		                            klen, 1, &buf, &cap, &klen, &vlen);
		pthread_mutex_unlock(&s->mu);
		if (r < 0)
			rc = r;
		if (r <= 0)
			break;
		first = 0;
		if (fn(arg, buf, klen, buf + klen, vlen) != 0)
			break;
	}
	free(buf);
	return rc;
}

/* ---- the descriptor ---- */

static int fs_init(const struct pmq_host_api *host)
{
	fs_api = host;
	return PMQ_OK;
}

static const struct pmq_storage_ops fs_ops = {
	.size = sizeof(struct pmq_storage_ops),
	.create = fs_create,
	.configure = fs_configure,
	.start = fs_start,
	.stop = fs_stop,
	.destroy = fs_destroy,
	.log_list = fs_log_list,
	.log_open = fs_log_open,
	.log_close = fs_log_close,
	.log_append = fs_log_append,
	.log_read = fs_log_read,
	.log_trim = fs_log_trim,
	.log_remove = fs_log_remove,
	.log_offset_for_time = fs_log_offset_for_time,
	.kv_put = fs_kv_put,
	.kv_del = fs_kv_del,
	.kv_get = fs_kv_get,
	.kv_scan = fs_kv_scan,
	.log_read_extents = fs_log_read_extents,
};

PMQ_PLUGIN_DEFINE(PMQ_KIND_STORAGE, "file", "1.0.0",
                  "logs in segment files, key-value state in a journal; "
                  "fsync with group commit",
                  0, fs_init, NULL, &fs_ops);
