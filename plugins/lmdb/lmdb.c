/*
 * lmdb.c - the "lmdb" storage plugin: logs and key-value state kept in one
 * LMDB environment, so every acknowledged write survives a crash (as far
 * as the fsync policy promises).  docs/storage-lmdb.md describes the
 * layout and the reasons; in short:
 *
 *   "logmeta"  'n' topic '\0' partition(BE32) -> id(BE32) start end (BE64)
 *              "c" -> the next log id (BE32)
 *   "logs"     id(BE32) base_offset(BE64) -> header (records BE32, version
 *              BE32, max timestamp BE64) + the batch bytes as given
 *   "kv"       ns '\0' key -> value   (a prefix scan is a cursor range)
 *
 * Threads:
 *   - The loop thread submits; kv_get/kv_scan run read transactions on it.
 *   - One writer thread does group commit: it takes every queued write
 *     (up to a bound), applies them all in ONE write transaction, commits,
 *     then completes their ios together, in submission order.  That one
 *     FIFO gives the per-log and per-namespace completion order storage.h
 *     promises.
 *   - One reader thread serves log_read and log_offset_for_time with read
 *     transactions, so a slow cold read never delays commits.  Reader ops
 *     carry the log's id and meta key, never the handle, because the
 *     writer may free a handle (log_remove) while a read is queued.
 *   - kv_get/kv_scan must see writes submitted and not yet committed: an
 *     overlay of pending kv writes (sorted by full key, under mu) is
 *     consulted before LMDB; the writer drops an entry once the write that
 *     made it is committed (or failed).
 *   - Growing the map (mdb_env_set_mapsize) is allowed only while no
 *     transaction is active in the process, so every read transaction is
 *     held under the rwlock rw (read side) and the writer takes the write
 *     side around the resize.  Nothing waits on the writer while holding
 *     rw, so this cannot deadlock.
 *
 * Read-only: with read_only = yes, or when the environment cannot be
 * opened for writing (EROFS, EACCES), it is opened with MDB_RDONLY, and
 * with MDB_NOLOCK too when lock.mdb cannot be opened for writing (then
 * nothing stops another process writing under our readers: it must not).
 * log_open of an existing log runs in a read transaction on the loop
 * thread; creating a log and every write complete with PMQ_ERR_RDONLY;
 * the writer thread never begins a write transaction.
 *
 * mu protects the queues, the handle table, the overlay and the counters.
 * No lock of ours is held while calling io_done/io_done_data.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include <plexmq/plexmq.h>

#include "../common/storecfg.h"

static const struct pmq_host_api *api;

#define DEFAULT_MAP_SIZE ((uint64_t)1 << 30)     /* 1G */
#define DEFAULT_MAP_MAX ((uint64_t)64 << 30)     /* 64G, address space only */
#define MIN_MAP_SIZE ((uint64_t)64 << 10)
#define BATCH_HDR 16       /* records, version, max timestamp */
#define BATCH_VERSION 1u
#define META_LEN 20        /* id, start, end */
#define LOG_KEY_LEN 12     /* id, base offset */
/* Bounds on one group: LMDB refuses a transaction with too many dirty
 * pages (MDB_TXN_FULL), and a huge group delays every ack in it. */
#define GROUP_MAX_OPS 4096
#define GROUP_MAX_BYTES ((size_t)64 << 20)
#define SCAN_CHUNK 64      /* kv_scan entries copied per read txn */

/* One topic-partition handle; owned by the plugin, kept in the table
 * until log_remove completes or the store is destroyed. */
struct llog {
	char *topic; /* owned */
	int32_t partition;
	uint32_t id;
	unsigned char *mkey; /* owned: key in "logmeta" */
	size_t mklen;
	int removing; /* log_remove submitted: later ops fail */
};

/* One pending kv write as kv_get/kv_scan must see it. */
struct ov {
	unsigned char *k; /* owned; full key (ns '\0' key); v in same block */
	size_t klen;
	unsigned char *v;
	size_t vlen;
	int del;
	uint64_t seq; /* the newest pending write to this key */
};

enum op_kind {
	OP_DONE,   /* completion only: status decided at submit */
	OP_OPEN,   /* log_open, waited for synchronously */
	OP_APPEND,
	OP_TRIM,
	OP_REMOVE,
	OP_PUT,
	OP_DEL,
	OP_READ,   /* reader thread */
	OP_TIME    /* reader thread */
};

struct op {
	struct op *next;
	enum op_kind kind;
	pmq_io *io;          /* NULL for OP_OPEN */
	struct llog *log;    /* writer log ops */
	int status;          /* set by the submitter (pre-failed) or apply */
	int pre;             /* status decided at submit: apply skips it */
	int64_t value;
	/* append: BATCH_HDR + data; put: value; read: result */
	unsigned char *data;
	size_t len;
	unsigned char *key;  /* kv full key, or a copy of the meta key */
	size_t klen;
	uint64_t seq;        /* kv: overlay sequence */
	uint32_t id;         /* reader ops, open result */
	int64_t base;        /* append base offset */
	uint32_t records;
	int64_t offset;      /* read offset, trim start, timestamp */
	size_t max_bytes;
	int64_t limit;
	int64_t start, end;  /* open result */
	int finished;        /* OP_OPEN: the loop thread waits for this */
};

struct lm {
	pmq_instance *inst;
	/* dir (NULL: data_dir/lmdb), fsync, fsync_interval_ms, read_only */
	struct storecfg cfg;
	uint64_t map_size, map_max;
	int map_max_set;
	int rdonly;           /* the env is open MDB_RDONLY (set at start) */
	int nolock;           /* ... and MDB_NOLOCK */
	uint64_t refused;     /* writes refused as read-only; under mu */

	MDB_env *env;
	MDB_dbi db_logs, db_meta, db_kv;
	size_t maxkey;
	size_t cur_map;       /* writer thread only once started */
	pthread_rwlock_t rw;  /* read txns (read side) vs map resize */

	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* writer queue got an op, or stopping */
	pthread_cond_t read_cv; /* reader queue got an op, or stopping */
	pthread_cond_t idle_cv; /* writer idle; an OP_OPEN finished */
	struct op *head, *tail;   /* writer queue */
	struct op *rhead, *rtail; /* reader queue */
	int busy;
	int running, stopping;
	pthread_t wthr, rthr;

	struct llog **logs;
	size_t nlogs, caplogs;
	struct ov *ov;
	size_t nov, capov;
	uint64_t seq;

	/* Writer-thread counters, logged at stop. */
	uint64_t commits, syncs, writes;
	int dirty;             /* committed but not synced (interval) */
	int64_t last_sync_ms;
};

/* ---- small helpers ---- */

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return PMQ_OK;
	ncap = *cap ? *cap * 2 : 8;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * elem);
	if (p == NULL)
		return PMQ_ERR_NOMEM;
	*arr = p;
	*cap = ncap;
	return PMQ_OK;
}

static void be32_put(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t be32_get(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void be64_put(unsigned char *p, int64_t v)
{
	be32_put(p, (uint32_t)((uint64_t)v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

static int64_t be64_get(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32_get(p) << 32 | be32_get(p + 4));
}

/* Same order as LMDB's default key compare: bytes, then shorter first. */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int has_prefix(const void *k, size_t klen, const void *p, size_t plen)
{
	return klen >= plen && (plen == 0 || memcmp(k, p, plen) == 0);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An LMDB (or errno) code as a pmq_err. */
static int mdb_to_pmq(int rc)
{
	switch (rc) {
	case MDB_SUCCESS: return PMQ_OK;
	case MDB_NOTFOUND: return PMQ_ERR_NOTFOUND;
	case MDB_MAP_FULL:
	case ENOSPC: return PMQ_ERR_NOSPC;
	case ENOMEM: return PMQ_ERR_NOMEM;
	case EACCES:
	case EROFS: return PMQ_ERR_RDONLY;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH: return PMQ_ERR_CORRUPT;
	case MDB_BAD_VALSIZE: return PMQ_ERR_INVAL;
	default: return PMQ_ERR_IO;
	}
}

static void log_key(unsigned char *k, uint32_t id, int64_t base)
{
	be32_put(k, id);
	be64_put(k + 4, base);
}

/* Returns a new buffer with the "logmeta" key of topic/partition. */
static unsigned char *meta_key(const char *topic, int32_t partition,
                               size_t *len)
{
	size_t tl = strlen(topic);
	unsigned char *k = malloc(tl + 6);

	if (k == NULL)
		return NULL;
	k[0] = 'n';
	memcpy(k + 1, topic, tl);
	k[1 + tl] = '\0';
	be32_put(k + 2 + tl, (uint32_t)partition);
	*len = tl + 6;
	return k;
}

/* ---- read transactions (loop and reader threads) ---- */

/* Begin a read txn under the read side of rw; end it with rd_end. */
static int rd_begin(struct lm *m, MDB_txn **txn)
{
	int rc;

	pthread_rwlock_rdlock(&m->rw);
	rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, txn);
	if (rc != 0) {
		pthread_rwlock_unlock(&m->rw);
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: read txn: %s", mdb_strerror(rc));
		return mdb_to_pmq(rc);
	}
	return PMQ_OK;
}

static void rd_end(struct lm *m, MDB_txn *txn)
{
	mdb_txn_abort(txn);
	pthread_rwlock_unlock(&m->rw);
}

/* Read a log's meta record: 0, MDB_NOTFOUND, or MDB_CORRUPTED. */
static int meta_get(struct lm *m, MDB_txn *txn, const void *mkey,
                    size_t mklen, uint32_t *id, int64_t *start, int64_t *end)
{
	MDB_val k = {mklen, (void *)mkey}, v;
	const unsigned char *p;
	int rc = mdb_get(txn, m->db_meta, &k, &v);

	if (rc != 0)
		return rc;
	p = v.mv_data;
	if (v.mv_size != META_LEN || be64_get(p + 4) < 0 ||
	    be64_get(p + 12) < be64_get(p + 4)) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: damaged log meta record (%zu bytes)",
		         v.mv_size);
		return MDB_CORRUPTED;
	}
	*id = be32_get(p);
	*start = be64_get(p + 4);
	*end = be64_get(p + 12);
	return 0;
}

static int meta_put(struct lm *m, MDB_txn *txn, const void *mkey,
                    size_t mklen, uint32_t id, int64_t start, int64_t end)
{
	unsigned char b[META_LEN];
	MDB_val k = {mklen, (void *)mkey}, v = {sizeof(b), b};

	be32_put(b, id);
	be64_put(b + 4, start);
	be64_put(b + 12, end);
	return mdb_put(txn, m->db_meta, &k, &v, 0);
}

/* Decode one "logs" entry; returns 0, MDB_NOTFOUND (another log's key),
 * or MDB_CORRUPTED with *base still set from the key (never trusts the
 * stored bytes). */
static int batch_get(const MDB_val *k, const MDB_val *v, uint32_t id,
                     int64_t *base, uint32_t *records, int64_t *max_ts)
{
	const unsigned char *p = v->mv_data;

	if (k->mv_size != LOG_KEY_LEN ||
	    be32_get(k->mv_data) != id)
		return MDB_NOTFOUND; /* another log: the range ended */
	*base = be64_get((const unsigned char *)k->mv_data + 4);
	if (v->mv_size <= BATCH_HDR || be32_get(p) == 0)
		return MDB_CORRUPTED;
	*records = be32_get(p);
	if (max_ts)
		*max_ts = be64_get(p + 8);
	return 0;
}

/* ---- the reader thread: log_read, log_offset_for_time ---- */

static void do_read(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	uint32_t id, recs;
	int64_t start, end, base;
	size_t total = 0, cap = 0;
	unsigned char *buf = NULL;
	int rc, first = 1;

	rc = meta_get(m, txn, o->key, o->klen, &id, &start, &end);
	if (rc == MDB_NOTFOUND || (rc == 0 && id != o->id)) {
		o->status = PMQ_ERR_CLOSED; /* removed meanwhile */
		return;
	}
	if (rc != 0)
		goto fail;
	if (o->offset < start || o->offset > end) {
		o->status = PMQ_ERR_RANGE;
		return;
	}
	if (o->offset == end)
		return; /* empty read at the end */
	rc = mdb_cursor_open(txn, m->db_logs, &cur);
	if (rc != 0)
		goto fail;
	/* The batch holding offset: the last one with base <= offset. */
	log_key(kb, id, o->offset);
	k.mv_size = sizeof(kb);
	k.mv_data = kb;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (rc == 0 && batch_get(&k, &v, id, &base, &recs, NULL) == 0 &&
	    base == o->offset) {
		/* exact */
	} else {
		rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
		             : mdb_cursor_get(cur, &k, &v, MDB_LAST);
		if (rc == MDB_NOTFOUND)
			goto done;
		if (rc != 0)
			goto fail;
		if (batch_get(&k, &v, id, &base, &recs, NULL) != 0 ||
		    base + (int64_t)recs <= o->offset) {
			/* A gap (damage): start from the next batch. */
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
			if (rc == MDB_NOTFOUND)
				goto done;
			if (rc != 0)
				goto fail;
		}
	}
	for (;;) {
		size_t len;

		rc = batch_get(&k, &v, id, &base, &recs, NULL);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc != 0)
			goto fail;
		if (base >= o->limit || base >= end)
			break;
		len = v.mv_size - BATCH_HDR;
		/* The first batch goes whole, so a reader always progresses. */
		if (!first && total + len > o->max_bytes)
			break;
		if (grow((void **)&buf, &cap, total + len, 1) != PMQ_OK) {
			free(buf);
			mdb_cursor_close(cur);
			o->status = PMQ_ERR_NOMEM;
			return;
		}
		memcpy(buf + total, (unsigned char *)v.mv_data + BATCH_HDR,
		       len);
		total += len;
		first = 0;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc != 0)
			goto fail;
	}
done:
	mdb_cursor_close(cur);
	o->data = buf;
	o->len = total;
	return;
fail:
	if (cur)
		mdb_cursor_close(cur);
	free(buf);
	api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: log read: %s",
	         mdb_strerror(rc));
	o->status = mdb_to_pmq(rc);
}

/* A linear scan: max timestamps need not grow from batch to batch, and a
 * time index would cost a second put per append (docs/storage-lmdb.md). */
static void do_time(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t id, recs;
	int64_t start, end, base, max_ts;
	int rc;

	o->value = -1;
	rc = meta_get(m, txn, o->key, o->klen, &id, &start, &end);
	if (rc == MDB_NOTFOUND || (rc == 0 && id != o->id)) {
		o->status = PMQ_ERR_CLOSED;
		return;
	}
	if (rc == 0)
		rc = mdb_cursor_open(txn, m->db_logs, &cur);
	if (rc != 0)
		goto fail;
	log_key(kb, id, 0);
	k.mv_size = sizeof(kb);
	k.mv_data = kb;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		rc = batch_get(&k, &v, id, &base, &recs, &max_ts);
		if (rc == MDB_CORRUPTED)
			continue; /* skip what cannot be read */
		if (rc != 0)
			break;
		if (max_ts >= o->offset) {
			o->value = base;
			break;
		}
	}
	mdb_cursor_close(cur);
	if (rc == 0 || rc == MDB_NOTFOUND)
		return;
fail:
	api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: offset for time: %s",
	         mdb_strerror(rc));
	o->status = mdb_to_pmq(rc);
}

static void op_free(struct op *o)
{
	free(o->data);
	free(o->key);
	free(o);
}

/* Report o to the host; no lock of ours is held. */
static void op_complete(struct op *o)
{
	if (o->kind == OP_READ) {
		void *d = o->data;

		o->data = NULL; /* the host owns it now */
		api->io_done_data(o->io, o->status, d, d ? o->len : 0,
		                  d ? free : NULL);
	} else {
		api->io_done(o->io, o->status, o->value);
	}
}

static void *reader(void *arg)
{
	struct lm *m = arg;
	struct op *list, *o;
	MDB_txn *txn;
	int rc;

	pthread_mutex_lock(&m->mu);
	for (;;) {
		while (m->rhead == NULL && !m->stopping)
			pthread_cond_wait(&m->read_cv, &m->mu);
		list = m->rhead;
		if (list == NULL)
			break; /* stopping and drained */
		m->rhead = m->rtail = NULL;
		pthread_mutex_unlock(&m->mu);

		/* One snapshot for the whole group of reads. */
		rc = rd_begin(m, &txn);
		for (o = list; o; o = o->next) {
			if (o->pre)
				continue;
			if (rc != PMQ_OK)
				o->status = rc;
			else if (o->kind == OP_READ)
				do_read(m, txn, o);
			else
				do_time(m, txn, o);
		}
		if (rc == PMQ_OK)
			rd_end(m, txn);
		while (list) {
			o = list;
			list = o->next;
			op_complete(o);
			op_free(o);
		}
		pthread_mutex_lock(&m->mu);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* ---- the writer thread: group commit ---- */

/* Each apply_* returns 0 with o->status set, or an LMDB error that broke
 * the transaction (the group is then retried or failed as a whole). */

static int apply_open(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t id, recs;
	int64_t start, end, fbase, lbase;
	int rc;

	rc = meta_get(m, txn, o->key, o->klen, &id, &start, &end);
	if (rc == MDB_NOTFOUND && m->rdonly) {
		o->status = PMQ_ERR_RDONLY; /* cannot create a log */
		return 0;
	}
	if (rc == MDB_NOTFOUND) {
		/* A new log: the next id from the counter. */
		MDB_val ck = {1, "c"}, cv;
		unsigned char nb[4];

		id = 1;
		rc = mdb_get(txn, m->db_meta, &ck, &cv);
		if (rc == 0 && cv.mv_size == 4)
			id = be32_get(cv.mv_data);
		else if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		if (id == 0 || id == UINT32_MAX) {
			o->status = PMQ_ERR_LIMIT;
			return 0;
		}
		be32_put(nb, id + 1);
		cv.mv_size = 4;
		cv.mv_data = nb;
		if ((rc = mdb_put(txn, m->db_meta, &ck, &cv, 0)) != 0 ||
		    (rc = meta_put(m, txn, o->key, o->klen, id, 0, 0)) != 0)
			return rc;
		o->id = id;
		o->start = o->end = 0;
		o->value = 1; /* wrote */
		return 0;
	}
	if (rc == MDB_CORRUPTED) {
		o->status = PMQ_ERR_CORRUPT;
		return 0;
	}
	if (rc != 0)
		return rc;
	/* The meta record is written in the same transactions as the
	 * batches, so it agrees with them; check against the first and
	 * last keys anyway and trust the batches if not. */
	if ((rc = mdb_cursor_open(txn, m->db_logs, &cur)) != 0)
		return rc;
	log_key(kb, id, 0);
	k.mv_size = sizeof(kb);
	k.mv_data = kb;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (rc == 0 && batch_get(&k, &v, id, &fbase, &recs, NULL) == 0) {
		log_key(kb, id + 1, 0);
		k.mv_size = sizeof(kb);
		k.mv_data = kb;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
		             : mdb_cursor_get(cur, &k, &v, MDB_LAST);
		if (rc == 0 &&
		    batch_get(&k, &v, id, &lbase, &recs, NULL) == 0 &&
		    (fbase != start || lbase + (int64_t)recs != end)) {
			api->log(m->inst, PMQ_LOG_WARN,
			         "lmdb storage: log %u: meta says %lld..%lld, "
			         "batches %lld..%lld: using the batches",
			         (unsigned)id, (long long)start,
			         (long long)end, (long long)fbase,
			         (long long)(lbase + (int64_t)recs));
			start = fbase;
			end = lbase + (int64_t)recs;
			/* Read-only (a read txn): fixed in memory only. */
			rc = m->rdonly ? 0 : meta_put(m, txn, o->key, o->klen,
			                              id, start, end);
			o->value = !m->rdonly; /* wrote */
			if (rc != 0) {
				mdb_cursor_close(cur);
				return rc;
			}
		}
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	o->id = id;
	o->start = start;
	o->end = end;
	return 0;
}

static int apply_append(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_val k = {sizeof(kb), kb}, v = {o->len, o->data};
	uint32_t id;
	int64_t start, end;
	int rc;

	rc = meta_get(m, txn, o->log->mkey, o->log->mklen, &id, &start, &end);
	if (rc == MDB_NOTFOUND || (rc == 0 && id != o->log->id)) {
		o->status = PMQ_ERR_CLOSED;
		return 0;
	}
	if (rc == MDB_CORRUPTED) {
		o->status = PMQ_ERR_CORRUPT;
		return 0;
	}
	if (rc != 0)
		return rc;
	if (o->base != end) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: %s/%d: batch base %lld, log end %lld",
		         o->log->topic, (int)o->log->partition,
		         (long long)o->base, (long long)end);
		o->status = PMQ_ERR_INVAL;
		return 0;
	}
	log_key(kb, id, o->base);
	if ((rc = mdb_put(txn, m->db_logs, &k, &v, 0)) != 0)
		return rc;
	end += o->records;
	if ((rc = meta_put(m, txn, o->log->mkey, o->log->mklen, id, start,
	                   end)) != 0)
		return rc;
	o->value = end;
	return 0;
}

static int apply_trim(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_cursor *cur;
	MDB_val k, v;
	uint32_t id, recs;
	int64_t start, end, base, nstart;
	int rc;

	rc = meta_get(m, txn, o->log->mkey, o->log->mklen, &id, &start, &end);
	if (rc == MDB_NOTFOUND || (rc == 0 && id != o->log->id)) {
		o->status = PMQ_ERR_CLOSED;
		return 0;
	}
	if (rc == MDB_CORRUPTED) {
		o->status = PMQ_ERR_CORRUPT;
		return 0;
	}
	if (rc != 0)
		return rc;
	o->value = start;
	if (o->offset > end) {
		o->status = PMQ_ERR_RANGE;
		return 0;
	}
	if (o->offset <= start)
		return 0; /* behind the start: nothing moves */
	if ((rc = mdb_cursor_open(txn, m->db_logs, &cur)) != 0)
		return rc;
	nstart = end;
	log_key(kb, id, 0);
	k.mv_size = sizeof(kb);
	k.mv_data = kb;
	/* Whole batches only: a batch that holds new_start stays. */
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int brc = batch_get(&k, &v, id, &base, &recs, NULL);

		if (brc == MDB_NOTFOUND)
			break;
		/* A damaged value still has its base in the key: keep it
		 * when it starts at or after new_start. */
		if ((brc == 0 && base + (int64_t)recs > o->offset) ||
		    (brc != 0 && base >= o->offset)) {
			nstart = base;
			break;
		}
		/* Below new_start: drop. */
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	if ((rc = meta_put(m, txn, o->log->mkey, o->log->mklen, id, nstart,
	                   end)) != 0)
		return rc;
	o->value = nstart;
	return 0;
}

static int apply_remove(struct lm *m, MDB_txn *txn, struct op *o)
{
	unsigned char kb[LOG_KEY_LEN];
	MDB_val k = {sizeof(kb), kb}, v;
	MDB_cursor *cur;
	uint32_t id = o->log->id;
	int rc;

	if ((rc = mdb_cursor_open(txn, m->db_logs, &cur)) != 0)
		return rc;
	log_key(kb, id, 0);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 4 || be32_get(k.mv_data) != id)
			break;
		if ((rc = mdb_cursor_del(cur, 0)) != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	k.mv_size = o->log->mklen;
	k.mv_data = o->log->mkey;
	rc = mdb_del(txn, m->db_meta, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int apply_kv(struct lm *m, MDB_txn *txn, struct op *o)
{
	MDB_val k = {o->klen, o->key}, v = {o->len, o->data};
	int rc;

	if (o->kind == OP_PUT)
		return mdb_put(txn, m->db_kv, &k, &v, 0);
	rc = mdb_del(txn, m->db_kv, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int apply_op(struct lm *m, MDB_txn *txn, struct op *o)
{
	switch (o->kind) {
	case OP_OPEN: return apply_open(m, txn, o);
	case OP_APPEND: return apply_append(m, txn, o);
	case OP_TRIM: return apply_trim(m, txn, o);
	case OP_REMOVE: return apply_remove(m, txn, o);
	case OP_PUT:
	case OP_DEL: return apply_kv(m, txn, o);
	default: return 0;
	}
}

/* Apply every op of the group in one write txn and commit it.  With
 * nested, each op runs in a child txn so that one that does not fit fails
 * alone (PMQ_ERR_NOSPC) and the rest commit.  Returns 0 or the LMDB error
 * that failed the whole transaction. */
static int run_group(struct lm *m, struct op *list, int nested)
{
	MDB_txn *txn, *child;
	struct op *o;
	int rc, wrote = 0;

	for (o = list; o; o = o->next) {
		if (!o->pre) {
			o->status = PMQ_OK;
			o->value = 0;
		}
	}
	rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (rc != 0)
		return rc;
	for (o = list; o; o = o->next) {
		if (o->pre)
			continue;
		if (!nested) {
			rc = apply_op(m, txn, o);
			if (rc != 0) {
				mdb_txn_abort(txn);
				return rc;
			}
			continue;
		}
		rc = mdb_txn_begin(m->env, txn, 0, &child);
		if (rc != 0) {
			mdb_txn_abort(txn);
			return rc;
		}
		rc = apply_op(m, child, o);
		if (rc == 0 && o->status == PMQ_OK)
			rc = mdb_txn_commit(child);
		else
			mdb_txn_abort(child);
		if (rc != 0)
			o->status = mdb_to_pmq(rc);
	}
	/* A group of opens of existing logs writes nothing: LMDB commits
	 * it without a sync, so it is not counted. */
	for (o = list; o && !wrote; o = o->next)
		wrote = !o->pre && (o->kind != OP_OPEN || o->value == 1);
	rc = mdb_txn_commit(txn);
	if (rc == 0 && wrote) {
		m->commits++;
		if (m->cfg.fsync == STORECFG_FSYNC_ALWAYS)
			m->syncs++; /* the commit synced */
		else
			m->dirty = 1;
	}
	return rc;
}

/* Double the map, up to map_max; 0 when it grew. */
static int map_grow(struct lm *m)
{
	size_t want;
	int rc;

	if (m->cur_map >= m->map_max)
		return -1;
	want = m->cur_map > m->map_max / 2 ? (size_t)m->map_max
	                                    : m->cur_map * 2;
	/* No transaction may be active in the process: hold off readers. */
	pthread_rwlock_wrlock(&m->rw);
	rc = mdb_env_set_mapsize(m->env, want);
	pthread_rwlock_unlock(&m->rw);
	if (rc != 0) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: cannot grow the map to %zu bytes: %s",
		         want, mdb_strerror(rc));
		return -1;
	}
	api->log(m->inst, PMQ_LOG_INFO,
	         "lmdb storage: map grown from %zu to %zu bytes", m->cur_map,
	         want);
	m->cur_map = want;
	return 0;
}

static void do_sync(struct lm *m)
{
	int rc = mdb_env_sync(m->env, 1);

	if (rc != 0)
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: sync: %s",
		         mdb_strerror(rc));
	else
		m->syncs++;
	m->dirty = 0;
	m->last_sync_ms = mono_ms();
}

/* Commit the group, growing the map or failing ops one by one when it is
 * full; every op's status is final afterwards. */
static void commit_group(struct lm *m, struct op *list)
{
	struct op *o;
	size_t refused = 0;
	int rc = run_group(m, list, 0);

	while (rc == MDB_MAP_FULL && map_grow(m) == 0)
		rc = run_group(m, list, 0);
	if (rc == MDB_MAP_FULL) {
		/* Full for good: keep what fits, refuse the rest. */
		rc = run_group(m, list, 1);
	}
	if (rc != 0) {
		if (rc != MDB_MAP_FULL)
			api->log(m->inst, PMQ_LOG_ERROR,
			         "lmdb storage: commit failed: %s",
			         mdb_strerror(rc));
		for (o = list; o; o = o->next)
			if (!o->pre)
				o->status = mdb_to_pmq(rc);
	}
	for (o = list; o; o = o->next)
		if (o->status == PMQ_ERR_NOSPC)
			refused++;
	/* Once per group: a full store under load must not flood the log. */
	if (refused)
		api->log(m->inst, PMQ_LOG_WARN,
		         "lmdb storage: full (map %zu bytes, map_size_max "
		         "%llu): %zu writes refused with \"no space\"",
		         m->cur_map, (unsigned long long)m->map_max, refused);
}

/* Caller holds mu. */
static size_t ov_bound(const struct lm *m, const void *k, size_t klen,
                       int after)
{
	size_t lo = 0, hi = m->nov;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(m->ov[mid].k, m->ov[mid].klen, k, klen);

		if (c < 0 || (after && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Drop the overlay entry of a finished kv write unless a newer write to
 * the key is pending.  Caller holds mu. */
static void ov_done_locked(struct lm *m, const struct op *o)
{
	size_t i = ov_bound(m, o->key, o->klen, 0);

	if (i >= m->nov || key_cmp(m->ov[i].k, m->ov[i].klen, o->key,
	                           o->klen) != 0 || m->ov[i].seq != o->seq)
		return;
	free(m->ov[i].k);
	memmove(&m->ov[i], &m->ov[i + 1], (m->nov - i - 1) * sizeof(*m->ov));
	m->nov--;
}

static void log_free(struct llog *l)
{
	if (l == NULL)
		return;
	free(l->topic);
	free(l->mkey);
	free(l);
}

/* Caller holds mu. */
static void log_unlink_locked(struct lm *m, struct llog *l)
{
	size_t i;

	for (i = 0; i < m->nlogs; i++) {
		if (m->logs[i] == l) {
			m->logs[i] = m->logs[--m->nlogs];
			return;
		}
	}
}

static void *writer(void *arg)
{
	struct lm *m = arg;
	struct op *list, *o, **tail;
	size_t n, bytes;

	pthread_mutex_lock(&m->mu);
	for (;;) {
		while (m->head == NULL && !m->stopping) {
			if (m->cfg.fsync == STORECFG_FSYNC_INTERVAL &&
			    m->dirty) {
				int64_t due = m->last_sync_ms +
				              m->cfg.interval_ms;
				struct timespec ts;

				int64_t left = due - mono_ms();

				if (left <= 0)
					break;
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += left / 1000;
				ts.tv_nsec += (left % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&m->work_cv, &m->mu,
				                       &ts);
			} else {
				pthread_cond_wait(&m->work_cv, &m->mu);
			}
		}
		if (m->head == NULL && m->stopping)
			break;
		/* Take the whole queue, up to the group bounds. */
		list = m->head;
		tail = &list;
		n = bytes = 0;
		while (*tail && n < GROUP_MAX_OPS &&
		       (n == 0 || bytes < GROUP_MAX_BYTES)) {
			bytes += (*tail)->len;
			n++;
			tail = &(*tail)->next;
		}
		m->head = *tail;
		if (m->head == NULL)
			m->tail = NULL;
		*tail = NULL;
		m->busy = 1;
		pthread_mutex_unlock(&m->mu);

		if (list != NULL && m->rdonly) {
			/* Refused at submit; nothing may begin a write txn. */
			for (o = list; o; o = o->next)
				if (!o->pre)
					o->status = PMQ_ERR_RDONLY;
		} else if (list != NULL) {
			commit_group(m, list);
		}
		if (m->cfg.fsync == STORECFG_FSYNC_INTERVAL && m->dirty &&
		    mono_ms() - m->last_sync_ms >= m->cfg.interval_ms)
			do_sync(m);

		/* The overlay now agrees with LMDB for these keys; removed
		 * logs leave the table before anyone hears of it.  OP_OPEN
		 * ops leave the list here: once finished is set their
		 * waiting submitter frees them. */
		pthread_mutex_lock(&m->mu);
		for (tail = &list; (o = *tail) != NULL;) {
			if (o->kind == OP_OPEN) {
				*tail = o->next;
				o->finished = 1;
				continue;
			}
			tail = &o->next;
			if (o->kind == OP_PUT || o->kind == OP_DEL)
				ov_done_locked(m, o);
			else if (o->kind == OP_REMOVE && !o->pre) {
				if (o->status == PMQ_OK)
					log_unlink_locked(m, o->log);
				else
					o->log->removing = 0;
			}
			if (o->kind != OP_DONE && !o->pre &&
			    o->status == PMQ_OK)
				m->writes++;
		}
		pthread_cond_broadcast(&m->idle_cv);
		pthread_mutex_unlock(&m->mu);

		/* Completions together, in submission order. */
		while (list) {
			o = list;
			list = o->next;
			op_complete(o);
			if (o->kind == OP_REMOVE && !o->pre &&
			    o->status == PMQ_OK)
				log_free(o->log);
			op_free(o);
		}

		pthread_mutex_lock(&m->mu);
		m->busy = 0;
		if (m->head == NULL)
			pthread_cond_broadcast(&m->idle_cv);
	}
	pthread_mutex_unlock(&m->mu);
	if (m->cfg.fsync == STORECFG_FSYNC_INTERVAL && m->dirty)
		do_sync(m); /* a clean stop leaves nothing unsynced */
	return NULL;
}

/* ---- submitting (loop thread) ---- */

/* Block until the writer has nothing queued or in hand. */
static void wait_idle(struct lm *m)
{
	pthread_mutex_lock(&m->mu);
	while (m->running && (m->head != NULL || m->busy))
		pthread_cond_wait(&m->idle_cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
}

/* Complete io with an error without an op (no memory for one): waiting
 * for the writer first keeps completions in submission order. */
static void fail_now(struct lm *m, pmq_io *io, int status, int read)
{
	api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: %s",
	         api->strerror(status));
	wait_idle(m);
	if (read)
		api->io_done_data(io, status, NULL, 0, NULL);
	else
		api->io_done(io, status, 0);
}

static struct op *op_new(struct lm *m, pmq_io *io, enum op_kind kind,
                         struct llog *l)
{
	struct op *o = calloc(1, sizeof(*o));

	if (o == NULL) {
		fail_now(m, io, PMQ_ERR_NOMEM, kind == OP_READ);
		return NULL;
	}
	o->kind = kind;
	o->io = io;
	o->log = l;
	return o;
}

/* Queue o for the writer (or the reader); caller holds mu. */
static void enqueue_locked(struct lm *m, struct op *o)
{
	o->next = NULL;
	if (o->kind == OP_READ || o->kind == OP_TIME) {
		if (m->rtail)
			m->rtail->next = o;
		else
			m->rhead = o;
		m->rtail = o;
		pthread_cond_signal(&m->read_cv);
		return;
	}
	if (m->tail)
		m->tail->next = o;
	else
		m->head = o;
	m->tail = o;
	pthread_cond_signal(&m->work_cv);
}

/* A write was refused as read-only; caller holds mu.  The first is
 * logged, the count at stop. */
static void refused_locked(struct lm *m)
{
	if (m->refused++ == 0)
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: the environment is read-only: a write "
		         "was refused (every write fails until plexmqd "
		         "restarts on a writable dir)");
}

/* Queue a log op; ops on a log being removed fail in order. */
static void submit_log(struct lm *m, struct op *o)
{
	pthread_mutex_lock(&m->mu);
	if (!m->running) {
		pthread_mutex_unlock(&m->mu);
		o->status = PMQ_ERR_CLOSED;
		op_complete(o);
		op_free(o);
		return;
	}
	if (o->log == NULL || o->log->removing) {
		o->status = PMQ_ERR_CLOSED;
		o->pre = 1;
	} else if (m->rdonly && o->kind != OP_READ && o->kind != OP_TIME) {
		o->status = PMQ_ERR_RDONLY;
		o->pre = 1;
		refused_locked(m);
	} else if (o->kind == OP_REMOVE) {
		o->log->removing = 1;
	} else if (o->kind == OP_READ || o->kind == OP_TIME) {
		/* The reader never touches the handle: copy what it needs. */
		o->id = o->log->id;
		o->key = malloc(o->log->mklen);
		if (o->key == NULL) {
			o->status = PMQ_ERR_NOMEM;
			o->pre = 1;
		} else {
			memcpy(o->key, o->log->mkey, o->log->mklen);
			o->klen = o->log->mklen;
		}
	}
	if (o->pre && o->kind != OP_READ && o->kind != OP_TIME)
		o->kind = OP_DONE;
	if (o->kind == OP_READ || o->kind == OP_TIME)
		o->log = NULL;
	enqueue_locked(m, o);
	pthread_mutex_unlock(&m->mu);
}

/* ---- lifetime and config ---- */

static void *lm_create(pmq_instance *inst)
{
	struct lm *m = calloc(1, sizeof(*m));
	pthread_condattr_t ca;
	int rc;

	if (m == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	m->inst = inst;
	storecfg_init(&m->cfg);
	m->map_size = DEFAULT_MAP_SIZE;
	m->map_max = DEFAULT_MAP_MAX;
	if (pthread_mutex_init(&m->mu, NULL) != 0)
		goto fail_mu;
	if (pthread_rwlock_init(&m->rw, NULL) != 0)
		goto fail_rw;
	/* The interval sync waits on work_cv with a monotonic deadline. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&m->work_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0)
		goto fail_work;
	if (pthread_cond_init(&m->read_cv, NULL) != 0)
		goto fail_read;
	if (pthread_cond_init(&m->idle_cv, NULL) != 0)
		goto fail_idle;
	return m;
fail_idle:
	pthread_cond_destroy(&m->read_cv);
fail_read:
	pthread_cond_destroy(&m->work_cv);
fail_work:
	pthread_rwlock_destroy(&m->rw);
fail_rw:
	pthread_mutex_destroy(&m->mu);
fail_mu:
	api->log(inst, PMQ_LOG_ERROR, "%s: cannot create locks", __func__);
	free(m);
	return NULL;
}

static int lm_configure(void *st, const char *key, const char *value,
                        char *err, size_t err_len)
{
	struct lm *m = st;
	uint64_t sz;
	int rc;

	rc = storecfg_key(api, &m->cfg, key, value, err, err_len);
	if (rc != PMQ_ERR_NOTFOUND)
		return rc;
	if (strcmp(key, "map_size") == 0 || strcmp(key, "map_size_max") == 0) {
		if (api->cfg_size(value, &sz) != PMQ_OK || sz < MIN_MAP_SIZE ||
		    sz > (uint64_t)SIZE_MAX / 2) {
			snprintf(err, err_len, "%s: want a size of at least "
			         "64k, got '%s'", key, value);
			return PMQ_ERR_CONFIG;
		}
		if (key[8] == '\0') {
			m->map_size = sz;
		} else {
			m->map_max = sz;
			m->map_max_set = 1;
		}
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

/* mkdir -p path (0700 for what it creates). */
static int mkdir_p(const char *path)
{
	char *p = strdup(path), *s;
	int rc = 0;

	if (p == NULL)
		return ENOMEM;
	for (s = p + 1; ; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, 0700) != 0 && errno != EEXIST) {
				rc = errno;
				break;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	return rc;
}

/* fsync the directory path; 0 or an errno value (logged). */
static int sync_dir(struct lm *m, const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0 || fsync(fd) != 0)
		rc = errno;
	if (fd >= 0 && close(fd) != 0 && rc == 0)
		rc = errno;
	if (rc != 0)
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: fsync of "
		         "directory %s: %s", path, strerror(rc));
	return rc;
}

/* Make the environment's existence durable: LMDB creates data.mdb and
 * lock.mdb (and mkdir_p the directory) without syncing a directory, so a
 * power cut soon after the first start could take the whole environment,
 * acknowledged writes included, although every commit was synced.  One
 * sync of the data file (LMDB's first commit does not sync under
 * MDB_NOSYNC), of the directory and of its parent, once at start. */
static int sync_env_dirs(struct lm *m, const char *dir)
{
	char *parent;
	char *slash;
	int rc;

	if (m->cfg.fsync == STORECFG_FSYNC_NEVER)
		return 0;
	if ((rc = mdb_env_sync(m->env, 1)) != 0) {
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: %s: sync: %s",
		         dir, mdb_strerror(rc));
		return rc;
	}
	if ((rc = sync_dir(m, dir)) != 0)
		return rc;
	if ((parent = strdup(dir)) == NULL)
		return ENOMEM;
	/* The parent: strip trailing slashes, then the last component. */
	for (slash = parent + strlen(parent) - 1;
	     slash > parent && *slash == '/'; slash--)
		*slash = '\0';
	slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	rc = sync_dir(m, parent);
	free(parent);
	return rc;
}

/* mdb_env_create + mdb_env_open; 0 or the error (m->env NULL then). */
static int env_open_flags(struct lm *m, const char *dir, unsigned flags)
{
	int rc;

	if ((rc = mdb_env_create(&m->env)) != 0) {
		m->env = NULL;
		return rc;
	}
	if ((rc = mdb_env_set_maxdbs(m->env, 4)) != 0 ||
	    (rc = mdb_env_set_mapsize(m->env, (size_t)m->map_size)) != 0 ||
	    (rc = mdb_env_open(m->env, dir, flags, 0600)) != 0) {
		mdb_env_close(m->env);
		m->env = NULL;
	}
	return rc;
}

/* Can lock.mdb be opened for writing?  LMDB needs that for its reader
 * table even with MDB_RDONLY (it creates the file if missing, as LMDB
 * itself would).  0 or an errno value. */
static int lock_writable(const char *dir)
{
	char p[4096];
	int fd;

	if ((size_t)snprintf(p, sizeof(p), "%s/lock.mdb", dir) >= sizeof(p))
		return ENAMETOOLONG;
	fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

/* Open read-only: MDB_RDONLY, plus MDB_NOLOCK when lock.mdb is not
 * writable (a read-only file system: LMDB would silently go without
 * locks there anyway; EACCES: it would fail). */
static int env_open_rdonly(struct lm *m, const char *dir, unsigned flags)
{
	int e = lock_writable(dir);

	m->rdonly = 1;
	flags |= MDB_RDONLY;
	if (e != 0) {
		m->nolock = 1;
		flags |= MDB_NOLOCK;
		api->log(m->inst, PMQ_LOG_WARN,
		         "lmdb storage: %s/lock.mdb: %s; reading without a "
		         "lock table (MDB_NOLOCK): no other process may write "
		         "to this environment while plexmqd runs", dir,
		         strerror(e));
	}
	return env_open_flags(m, dir, flags);
}

static int open_env(struct lm *m, const char *dir)
{
	unsigned flags = MDB_NOTLS;
	MDB_txn *txn;
	MDB_envinfo info;
	int rc, dead = 0;

	m->rdonly = m->nolock = 0;
	if (m->cfg.fsync == STORECFG_FSYNC_INTERVAL)
		flags |= MDB_NOSYNC;
	else if (m->cfg.fsync == STORECFG_FSYNC_NEVER)
		flags |= MDB_NOSYNC | MDB_NOMETASYNC;
	if (m->cfg.read_only) {
		api->log(m->inst, PMQ_LOG_INFO,
		         "lmdb storage: %s: read_only = yes: writes will fail, "
		         "reads are served", dir);
		rc = env_open_rdonly(m, dir, flags);
	} else {
		rc = env_open_flags(m, dir, flags);
		if (rc == EROFS || rc == EACCES) {
			api->log(m->inst, PMQ_LOG_WARN,
			         "lmdb storage: %s: %s; opening the environment "
			         "read-only: writes will fail, reads are served",
			         dir, mdb_strerror(rc));
			rc = env_open_rdonly(m, dir, flags);
		}
	}
	if (rc != 0)
		goto fail;
	/* Reader slots of a crashed process would pin old pages forever. */
	if (!m->nolock && (rc = mdb_reader_check(m->env, &dead)) != 0)
		goto fail;
	if (dead)
		api->log(m->inst, PMQ_LOG_INFO,
		         "lmdb storage: cleared %d stale reader slots", dead);
	if ((rc = mdb_txn_begin(m->env, NULL, m->rdonly ? MDB_RDONLY : 0,
	                        &txn)) != 0)
		goto fail;
	{
		/* Read-only: the databases must be there already. */
		unsigned cf = m->rdonly ? 0 : MDB_CREATE;
		const char *db = "logs";

		if ((rc = mdb_dbi_open(txn, db, cf, &m->db_logs)) != 0 ||
		    (rc = mdb_dbi_open(txn, db = "logmeta", cf,
		                       &m->db_meta)) != 0 ||
		    (rc = mdb_dbi_open(txn, db = "kv", cf, &m->db_kv)) != 0) {
			mdb_txn_abort(txn);
			if (rc == MDB_NOTFOUND)
				api->log(m->inst, PMQ_LOG_ERROR,
				         "lmdb storage: %s: no database \"%s\" "
				         "and read-only: cannot create it",
				         dir, db);
			goto fail;
		}
	}
	/* A read-only txn's commit keeps its dbi handles open too. */
	if ((rc = mdb_txn_commit(txn)) != 0)
		goto fail;
	/* LMDB keeps an existing, larger map: ask what it is. */
	if ((rc = mdb_env_info(m->env, &info)) != 0)
		goto fail;
	m->cur_map = info.me_mapsize;
	m->maxkey = (size_t)mdb_env_get_maxkeysize(m->env);
	if (!m->rdonly && sync_env_dirs(m, dir) != 0) {
		mdb_env_close(m->env);
		m->env = NULL;
		return PMQ_ERR_IO;
	}
	return PMQ_OK;
fail:
	api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: %s: %s", dir,
	         mdb_strerror(rc));
	if (m->env)
		mdb_env_close(m->env);
	m->env = NULL;
	m->rdonly = m->nolock = 0;
	return rc == MDB_MAP_FULL ? PMQ_ERR_NOSPC : mdb_to_pmq(rc);
}

static int lm_start(void *st)
{
	struct lm *m = st;
	char buf[4096];
	const char *dir = m->cfg.dir;
	int rc;

	if (m->running)
		return PMQ_OK;
	if (!m->map_max_set && m->map_max < m->map_size)
		m->map_max = m->map_size;
	if (m->map_max < m->map_size) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: map_size_max (%llu) is below map_size "
		         "(%llu)", (unsigned long long)m->map_max,
		         (unsigned long long)m->map_size);
		return PMQ_ERR_CONFIG;
	}
	if (dir == NULL) {
		const char *dd = api->data_dir();

		if ((size_t)snprintf(buf, sizeof(buf), "%s/lmdb",
		                     dd && *dd ? dd : ".") >= sizeof(buf)) {
			api->log(m->inst, PMQ_LOG_ERROR,
			         "lmdb storage: data_dir too long");
			return PMQ_ERR_CONFIG;
		}
		dir = buf;
	}
	if (!m->cfg.read_only && (rc = mkdir_p(dir)) != 0) {
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: mkdir %s: %s",
		         dir, strerror(rc));
		return rc == EACCES || rc == EROFS ? PMQ_ERR_RDONLY
		                                   : PMQ_ERR_IO;
	}
	if ((rc = open_env(m, dir)) != PMQ_OK)
		return rc;
	m->stopping = 0;
	m->last_sync_ms = mono_ms();
	rc = pthread_create(&m->wthr, NULL, writer, m);
	if (rc == 0) {
		rc = pthread_create(&m->rthr, NULL, reader, m);
		if (rc != 0) {
			pthread_mutex_lock(&m->mu);
			m->stopping = 1;
			pthread_cond_signal(&m->work_cv);
			pthread_mutex_unlock(&m->mu);
			pthread_join(m->wthr, NULL);
		}
	}
	if (rc != 0) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: cannot start threads: %s",
		         strerror(rc));
		mdb_env_close(m->env);
		m->env = NULL;
		return PMQ_ERR_NOMEM;
	}
	m->running = 1;
	api->log(m->inst, PMQ_LOG_INFO,
	         "lmdb storage: %s, fsync = %s, map %zu bytes (max %llu)%s",
	         dir,
	         storecfg_fsync_name(m->cfg.fsync),
	         m->cur_map, (unsigned long long)m->map_max,
	         !m->rdonly ? ""
	         : m->nolock ? "; READ-ONLY, no lock: writes will fail"
	                     : "; READ-ONLY: writes will fail");
	return PMQ_OK;
}

static void lm_stop(void *st)
{
	struct lm *m = st;

	if (!m->running)
		return;
	pthread_mutex_lock(&m->mu);
	m->stopping = 1;
	pthread_cond_signal(&m->work_cv);
	pthread_cond_signal(&m->read_cv);
	pthread_mutex_unlock(&m->mu);
	/* Both threads complete everything queued, then exit. */
	pthread_join(m->wthr, NULL);
	pthread_join(m->rthr, NULL);
	pthread_mutex_lock(&m->mu);
	m->running = 0;
	pthread_cond_broadcast(&m->idle_cv);
	pthread_mutex_unlock(&m->mu);
	api->log(m->inst, PMQ_LOG_INFO,
	         "lmdb storage: %llu syncs for %llu writes (%llu commits)",
	         (unsigned long long)m->syncs, (unsigned long long)m->writes,
	         (unsigned long long)m->commits);
	if (m->refused)
		api->log(m->inst, PMQ_LOG_WARN,
		         "lmdb storage: %llu writes refused: read-only",
		         (unsigned long long)m->refused);
	mdb_env_close(m->env);
	m->env = NULL;
}

static void lm_destroy(void *st)
{
	struct lm *m = st;
	size_t i;

	if (m == NULL)
		return;
	lm_stop(m);
	for (i = 0; i < m->nlogs; i++)
		log_free(m->logs[i]);
	free(m->logs);
	for (i = 0; i < m->nov; i++)
		free(m->ov[i].k);
	free(m->ov);
	storecfg_free(&m->cfg);
	pthread_cond_destroy(&m->idle_cv);
	pthread_cond_destroy(&m->read_cv);
	pthread_cond_destroy(&m->work_cv);
	pthread_rwlock_destroy(&m->rw);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* ---- logs ---- */

struct name {
	char *topic;
	int32_t partition;
};

static int lm_log_list(void *st, pmq_log_list_fn fn, void *arg)
{
	struct lm *m = st;
	struct name *names = NULL;
	size_t n = 0, cap = 0, i;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k = {1, "n"}, v;
	int rc;

	if (!m->running)
		return PMQ_ERR_CLOSED;
	wait_idle(m); /* pending creates and removes count */
	if ((rc = rd_begin(m, &txn)) != PMQ_OK)
		return rc;
	rc = mdb_cursor_open(txn, m->db_meta, &cur);
	if (rc == 0) {
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			const unsigned char *p = k.mv_data;
			const unsigned char *z;

			if (k.mv_size < 1 || p[0] != 'n')
				break;
			z = k.mv_size >= 6 ? memchr(p + 1, '\0', k.mv_size - 1)
			                   : NULL;
			if (z == NULL || (size_t)(z - p) + 5 != k.mv_size ||
			    z == p + 1) {
				api->log(m->inst, PMQ_LOG_WARN,
				         "lmdb storage: skipped a damaged log "
				         "name (%zu bytes)", k.mv_size);
				continue;
			}
			if (grow((void **)&names, &cap, n + 1,
			         sizeof(*names)) != PMQ_OK ||
			    (names[n].topic = strdup((const char *)p + 1)) ==
			        NULL) {
				rc = ENOMEM;
				break;
			}
			names[n].partition = (int32_t)be32_get(z + 1);
			n++;
		}
		mdb_cursor_close(cur);
	}
	rd_end(m, txn);
	/* fn may call log_open, which waits for the writer: never call it
	 * inside a read transaction. */
	if (rc == 0 || rc == MDB_NOTFOUND) {
		for (i = 0; i < n; i++)
			fn(arg, names[i].topic, names[i].partition);
		rc = PMQ_OK;
	} else {
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: log list: %s",
		         mdb_strerror(rc));
		rc = mdb_to_pmq(rc);
	}
	for (i = 0; i < n; i++)
		free(names[i].topic);
	free(names);
	return rc;
}

/* Caller holds mu. */
static struct llog *log_find_locked(struct lm *m, const char *topic,
                                    int32_t partition)
{
	size_t i;

	for (i = 0; i < m->nlogs; i++)
		if (m->logs[i]->partition == partition &&
		    !m->logs[i]->removing &&
		    strcmp(m->logs[i]->topic, topic) == 0)
			return m->logs[i];
	return NULL;
}

static void *lm_log_open(void *st, const char *topic, int32_t partition,
                         struct pmq_log_state *out, int *err)
{
	struct lm *m = st;
	struct op *o;
	struct llog *l;

	if (topic == NULL || *topic == '\0' || partition < 0) {
		*err = PMQ_ERR_INVAL;
		return NULL;
	}
	if (!m->running) {
		*err = PMQ_ERR_CLOSED;
		return NULL;
	}
	o = calloc(1, sizeof(*o));
	if (o == NULL || (o->key = meta_key(topic, partition, &o->klen)) ==
	                     NULL) {
		free(o);
		*err = PMQ_ERR_NOMEM;
		return NULL;
	}
	if (o->klen > m->maxkey) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: topic name too long (%zu bytes)",
		         strlen(topic));
		op_free(o);
		*err = PMQ_ERR_INVAL;
		return NULL;
	}
	o->kind = OP_OPEN;
	if (m->rdonly) {
		/* Nothing is written, so nothing to wait for: a read txn
		 * here.  A log that is not there cannot be created. */
		MDB_txn *txn;

		o->status = rd_begin(m, &txn);
		if (o->status == PMQ_OK) {
			int rc = apply_open(m, txn, o);

			rd_end(m, txn);
			if (rc != 0)
				o->status = mdb_to_pmq(rc);
		}
		pthread_mutex_lock(&m->mu);
	} else {
		/* Through the writer, behind every pending write: the
		 * reported end is then durable, and only the writer ever
		 * writes. */
		pthread_mutex_lock(&m->mu);
		enqueue_locked(m, o);
		while (!o->finished)
			pthread_cond_wait(&m->idle_cv, &m->mu);
	}
	if (o->status != PMQ_OK) {
		pthread_mutex_unlock(&m->mu);
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: open %s/%d: %s", topic, (int)partition,
		         api->strerror(o->status));
		*err = o->status;
		op_free(o);
		return NULL;
	}
	l = log_find_locked(m, topic, partition);
	if (l == NULL) {
		l = calloc(1, sizeof(*l));
		if (l == NULL || (l->topic = strdup(topic)) == NULL ||
		    grow((void **)&m->logs, &m->caplogs, m->nlogs + 1,
		         sizeof(*m->logs)) != PMQ_OK) {
			pthread_mutex_unlock(&m->mu);
			log_free(l);
			op_free(o);
			*err = PMQ_ERR_NOMEM;
			return NULL;
		}
		l->partition = partition;
		l->mkey = o->key; /* moves into the handle */
		l->mklen = o->klen;
		o->key = NULL;
		m->logs[m->nlogs++] = l;
	}
	l->id = o->id;
	pthread_mutex_unlock(&m->mu);
	if (out != NULL) {
		out->size = sizeof(*out);
		out->log_start = o->start;
		out->log_end = o->end;
	}
	op_free(o);
	*err = PMQ_OK;
	return l;
}

/* The data stays for the next log_open: closing only ends the host's use
 * of the handle, which queued ops may still reference. */
static void lm_log_close(void *st, void *log)
{
	(void)st;
	(void)log;
}

static void lm_log_append(void *st, void *log,
                          const struct pmq_batch_meta *meta,
                          const void *data, size_t len, pmq_io *io)
{
	struct lm *m = st;
	struct op *o = op_new(m, io, OP_APPEND, log);

	if (o == NULL)
		return;
	if (meta == NULL ||
	    !PMQ_HAS(meta, struct pmq_batch_meta, max_timestamp_ms) ||
	    meta->records == 0 || len == 0 || data == NULL ||
	    meta->base_offset < 0 || len > SIZE_MAX - BATCH_HDR) {
		o->status = PMQ_ERR_INVAL; /* reported in order */
		o->pre = 1;
	} else {
		o->data = malloc(BATCH_HDR + len);
		if (o->data == NULL) {
			free(o);
			fail_now(m, io, PMQ_ERR_NOMEM, 0);
			return;
		}
		be32_put(o->data, meta->records);
		be32_put(o->data + 4, BATCH_VERSION);
		be64_put(o->data + 8, meta->max_timestamp_ms);
		memcpy(o->data + BATCH_HDR, data, len);
		o->len = BATCH_HDR + len;
		o->base = meta->base_offset;
		o->records = meta->records;
	}
	submit_log(m, o);
}

static void lm_log_read(void *st, void *log, int64_t offset,
                        size_t max_bytes, int64_t limit, pmq_io *io)
{
	struct lm *m = st;
	struct op *o = op_new(m, io, OP_READ, log);

	if (o == NULL)
		return;
	o->offset = offset;
	o->max_bytes = max_bytes;
	o->limit = limit;
	submit_log(m, o);
}

static void lm_log_trim(void *st, void *log, int64_t new_start, pmq_io *io)
{
	struct lm *m = st;
	struct op *o = op_new(m, io, OP_TRIM, log);

	if (o == NULL)
		return;
	o->offset = new_start;
	submit_log(m, o);
}

static void lm_log_remove(void *st, void *log, pmq_io *io)
{
	struct lm *m = st;
	struct op *o = op_new(m, io, OP_REMOVE, log);

	if (o != NULL)
		submit_log(m, o);
}

static void lm_log_offset_for_time(void *st, void *log, int64_t ts_ms,
                                   pmq_io *io)
{
	struct lm *m = st;
	struct op *o = op_new(m, io, OP_TIME, log);

	if (o == NULL)
		return;
	o->offset = ts_ms;
	submit_log(m, o);
}

/* ---- key-value state ---- */

/* Returns a new buffer holding ns '\0' key [+ room for extra bytes]. */
static unsigned char *full_key(const char *ns, const void *key, size_t klen,
                               size_t *len)
{
	size_t nl = strlen(ns);
	unsigned char *k = malloc(nl + 1 + klen + 1);

	if (k == NULL)
		return NULL;
	memcpy(k, ns, nl + 1);
	if (klen)
		memcpy(k + nl + 1, key, klen);
	*len = nl + 1 + klen;
	return k;
}

/* Record a pending write in the overlay; caller holds mu. */
static int ov_set_locked(struct lm *m, const struct op *o)
{
	size_t i = ov_bound(m, o->key, o->klen, 0);
	int found = i < m->nov &&
	            key_cmp(m->ov[i].k, m->ov[i].klen, o->key, o->klen) == 0;
	unsigned char *blk = malloc(o->klen + o->len + 1);
	struct ov *e;

	if (blk == NULL)
		return PMQ_ERR_NOMEM;
	if (!found) {
		if (grow((void **)&m->ov, &m->capov, m->nov + 1,
		         sizeof(*m->ov)) != PMQ_OK) {
			free(blk);
			return PMQ_ERR_NOMEM;
		}
		memmove(&m->ov[i + 1], &m->ov[i],
		        (m->nov - i) * sizeof(*m->ov));
		m->nov++;
	} else {
		free(m->ov[i].k);
	}
	e = &m->ov[i];
	memcpy(blk, o->key, o->klen);
	if (o->len)
		memcpy(blk + o->klen, o->data, o->len);
	e->k = blk;
	e->klen = o->klen;
	e->v = blk + o->klen;
	e->vlen = o->len;
	e->del = o->kind == OP_DEL;
	e->seq = o->seq;
	return PMQ_OK;
}

static void kv_write(struct lm *m, const char *ns, const void *key,
                     size_t klen, const void *val, size_t vlen, int del,
                     pmq_io *io)
{
	struct op *o = op_new(m, io, del ? OP_DEL : OP_PUT, NULL);

	if (o == NULL)
		return;
	if (ns == NULL || *ns == '\0' || (key == NULL && klen) ||
	    (val == NULL && vlen)) {
		o->status = PMQ_ERR_INVAL;
		o->pre = 1;
	} else if ((o->key = full_key(ns, key, klen, &o->klen)) == NULL ||
	           (vlen && (o->data = malloc(vlen)) == NULL)) {
		op_free(o);
		fail_now(m, io, PMQ_ERR_NOMEM, 0);
		return;
	} else if (o->klen > m->maxkey) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "lmdb storage: %s: key of %zu bytes is longer than "
		         "LMDB allows", ns, klen);
		o->status = PMQ_ERR_INVAL;
		o->pre = 1;
	} else if (vlen) {
		memcpy(o->data, val, vlen);
		o->len = vlen;
	}
	pthread_mutex_lock(&m->mu);
	if (!m->running) {
		pthread_mutex_unlock(&m->mu);
		o->status = PMQ_ERR_CLOSED;
		op_complete(o);
		op_free(o);
		return;
	}
	if (!o->pre && m->rdonly) {
		o->status = PMQ_ERR_RDONLY; /* the overlay stays empty */
		o->pre = 1;
		refused_locked(m);
	}
	if (!o->pre) {
		o->seq = ++m->seq;
		if (ov_set_locked(m, o) != PMQ_OK) {
			o->status = PMQ_ERR_NOMEM;
			o->pre = 1;
		}
	}
	if (o->pre)
		o->kind = OP_DONE;
	enqueue_locked(m, o);
	pthread_mutex_unlock(&m->mu);
}

static void lm_kv_put(void *st, const char *ns, const void *key,
                      size_t key_len, const void *val, size_t val_len,
                      pmq_io *io)
{
	kv_write(st, ns, key, key_len, val, val_len, 0, io);
}

static void lm_kv_del(void *st, const char *ns, const void *key,
                      size_t key_len, pmq_io *io)
{
	kv_write(st, ns, key, key_len, NULL, 0, 1, io);
}

/* A new malloc() copy of n bytes, never NULL for n == 0. */
static void *dup_bytes(const void *p, size_t n)
{
	void *d = malloc(n + 1);

	if (d != NULL && n)
		memcpy(d, p, n);
	return d;
}

static int lm_kv_get(void *st, const char *ns, const void *key,
                     size_t key_len, void **val, size_t *val_len)
{
	struct lm *m = st;
	unsigned char *fk;
	size_t fklen, i;
	MDB_txn *txn;
	MDB_val k, v;
	int rc;

	if (ns == NULL || (key == NULL && key_len) || val == NULL ||
	    val_len == NULL)
		return PMQ_ERR_INVAL;
	if (!m->running)
		return PMQ_ERR_CLOSED;
	if ((fk = full_key(ns, key, key_len, &fklen)) == NULL)
		return PMQ_ERR_NOMEM;
	/* Pending writes first: the overlay is checked before the read txn
	 * begins, so a write committed in between is seen in LMDB. */
	pthread_mutex_lock(&m->mu);
	i = ov_bound(m, fk, fklen, 0);
	if (i < m->nov && key_cmp(m->ov[i].k, m->ov[i].klen, fk, fklen) == 0) {
		if (m->ov[i].del) {
			rc = PMQ_ERR_NOTFOUND;
		} else if ((*val = dup_bytes(m->ov[i].v, m->ov[i].vlen)) ==
		           NULL) {
			rc = PMQ_ERR_NOMEM;
		} else {
			*val_len = m->ov[i].vlen;
			rc = PMQ_OK;
		}
		pthread_mutex_unlock(&m->mu);
		free(fk);
		return rc;
	}
	pthread_mutex_unlock(&m->mu);
	if (fklen > m->maxkey) {
		free(fk);
		return PMQ_ERR_NOTFOUND; /* could never have been stored */
	}
	if ((rc = rd_begin(m, &txn)) != PMQ_OK) {
		free(fk);
		return rc;
	}
	k.mv_size = fklen;
	k.mv_data = fk;
	rc = mdb_get(txn, m->db_kv, &k, &v);
	if (rc == 0) {
		*val = dup_bytes(v.mv_data, v.mv_size);
		*val_len = v.mv_size;
		rc = *val ? PMQ_OK : PMQ_ERR_NOMEM;
	} else if (rc == MDB_NOTFOUND) {
		rc = PMQ_ERR_NOTFOUND;
	} else {
		api->log(m->inst, PMQ_LOG_ERROR, "lmdb storage: kv_get %s: %s",
		         ns, mdb_strerror(rc));
		rc = mdb_to_pmq(rc);
	}
	rd_end(m, txn);
	free(fk);
	return rc;
}

/* Copies of kv entries (full keys) for kv_scan, in key order. */
struct ent {
	size_t koff, klen, voff, vlen;
	int del;
};

struct ents {
	struct ent *e;
	size_t n, cap;
	unsigned char *buf;
	size_t used, bcap;
};

static int ents_add(struct ents *s, const void *k, size_t klen,
                    const void *v, size_t vlen, int del)
{
	struct ent *e;

	if (grow((void **)&s->e, &s->cap, s->n + 1, sizeof(*s->e)) != PMQ_OK ||
	    grow((void **)&s->buf, &s->bcap, s->used + klen + vlen + 1, 1) !=
	        PMQ_OK)
		return PMQ_ERR_NOMEM;
	e = &s->e[s->n++];
	e->koff = s->used;
	e->klen = klen;
	memcpy(s->buf + s->used, k, klen);
	s->used += klen;
	e->voff = s->used;
	e->vlen = vlen;
	if (vlen)
		memcpy(s->buf + s->used, v, vlen);
	s->used += vlen;
	e->del = del;
	return PMQ_OK;
}

static void ents_clear(struct ents *s)
{
	s->n = 0;
	s->used = 0;
}

static void ents_free(struct ents *s)
{
	free(s->e);
	free(s->buf);
}

/*
 * Chunked: each round copies the overlay's pending entries after the last
 * key seen, then up to SCAN_CHUNK committed entries from a read txn, and
 * merges them (a pending write wins over the stored value of its key).
 * fn runs with no lock and no transaction held, so it may call kv_put,
 * kv_del, even log_open, and a long scan never blocks a map resize.
 */
static int lm_kv_scan(void *st, const char *ns, const void *prefix,
                      size_t prefix_len,
                      int (*fn)(void *arg, const void *key, size_t key_len,
                                const void *val, size_t val_len),
                      void *arg)
{
	struct lm *m = st;
	struct ents ov = {0}, db = {0};
	unsigned char *pfx, *last = NULL;
	size_t pfxlen, nslen, lastlen = 0, lastcap = 0, i;
	int rc = PMQ_OK, stop = 0;

	if (ns == NULL || fn == NULL || (prefix == NULL && prefix_len))
		return PMQ_ERR_INVAL;
	if (!m->running)
		return PMQ_ERR_CLOSED;
	if ((pfx = full_key(ns, prefix, prefix_len, &pfxlen)) == NULL)
		return PMQ_ERR_NOMEM;
	nslen = strlen(ns) + 1;
	while (!stop) {
		MDB_txn *txn;
		MDB_cursor *cur;
		MDB_val k, v;
		size_t io = 0, id = 0;
		int full, mrc;
		const unsigned char *bound = NULL;
		size_t boundlen = 0;

		ents_clear(&ov);
		ents_clear(&db);
		pthread_mutex_lock(&m->mu);
		i = last ? ov_bound(m, last, lastlen, 1)
		         : ov_bound(m, pfx, pfxlen, 0);
		for (; i < m->nov && rc == PMQ_OK; i++) {
			const struct ov *e = &m->ov[i];

			if (!has_prefix(e->k, e->klen, pfx, pfxlen))
				break;
			rc = ents_add(&ov, e->k, e->klen, e->v, e->vlen,
			              e->del);
		}
		pthread_mutex_unlock(&m->mu);
		if (rc != PMQ_OK)
			break;

		if ((rc = rd_begin(m, &txn)) != PMQ_OK)
			break;
		mrc = mdb_cursor_open(txn, m->db_kv, &cur);
		if (mrc == 0) {
			k.mv_size = last ? lastlen : pfxlen;
			k.mv_data = last ? last : pfx;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (mrc == 0 && last &&
			    key_cmp(k.mv_data, k.mv_size, last, lastlen) == 0)
				mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
			for (; mrc == 0 && db.n < SCAN_CHUNK;
			     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
				if (!has_prefix(k.mv_data, k.mv_size, pfx,
				                pfxlen)) {
					mrc = MDB_NOTFOUND;
					break;
				}
				if (ents_add(&db, k.mv_data, k.mv_size,
				             v.mv_data, v.mv_size, 0) != PMQ_OK) {
					mrc = ENOMEM;
					break;
				}
			}
			mdb_cursor_close(cur);
		}
		rd_end(m, txn);
		if (mrc != 0 && mrc != MDB_NOTFOUND) {
			api->log(m->inst, PMQ_LOG_ERROR,
			         "lmdb storage: kv_scan %s: %s", ns,
			         mdb_strerror(mrc));
			rc = mdb_to_pmq(mrc);
			break;
		}
		/* A full chunk may have more after it: merge only up to its
		 * last key, and go on from there. */
		full = mrc == 0;
		if (full) {
			bound = db.buf + db.e[db.n - 1].koff;
			boundlen = db.e[db.n - 1].klen;
		}
		while (!stop && (io < ov.n || id < db.n)) {
			const struct ent *e;
			const unsigned char *kb;
			int c;

			if (io < ov.n && id < db.n)
				c = key_cmp(ov.buf + ov.e[io].koff,
				            ov.e[io].klen,
				            db.buf + db.e[id].koff,
				            db.e[id].klen);
			else
				c = io < ov.n ? -1 : 1;
			if (c <= 0) {
				e = &ov.e[io++];
				kb = ov.buf;
				if (c == 0)
					id++;
			} else {
				e = &db.e[id++];
				kb = db.buf;
			}
			if (full && key_cmp(kb + e->koff, e->klen, bound,
			                    boundlen) > 0)
				break;
			if (e->del)
				continue;
			if (fn(arg, kb + e->koff + nslen, e->klen - nslen,
			       kb + e->voff, e->vlen) != 0)
				stop = 1;
		}
		if (!full)
			break;
		if (grow((void **)&last, &lastcap, boundlen, 1) != PMQ_OK) {
			rc = PMQ_ERR_NOMEM;
			break;
		}
		memcpy(last, bound, boundlen);
		lastlen = boundlen;
	}
	ents_free(&ov);
	ents_free(&db);
	free(last);
	free(pfx);
	return rc;
}

/* ---- the descriptor ---- */

static int lm_init(const struct pmq_host_api *host)
{
	api = host;
	return PMQ_OK;
}

static const struct pmq_storage_ops lm_ops = {
	.size = sizeof(struct pmq_storage_ops),
	.create = lm_create,
	.configure = lm_configure,
	.start = lm_start,
	.stop = lm_stop,
	.destroy = lm_destroy,
	.log_list = lm_log_list,
	.log_open = lm_log_open,
	.log_close = lm_log_close,
	.log_append = lm_log_append,
	.log_read = lm_log_read,
	.log_trim = lm_log_trim,
	.log_remove = lm_log_remove,
	.log_offset_for_time = lm_log_offset_for_time,
	.kv_put = lm_kv_put,
	.kv_del = lm_kv_del,
	.kv_get = lm_kv_get,
	.kv_scan = lm_kv_scan,
};

PMQ_PLUGIN_DEFINE(PMQ_KIND_STORAGE, "lmdb", "1.0.0",
                  "logs and key-value state in one LMDB environment", 0,
                  lm_init, NULL, &lm_ops);
