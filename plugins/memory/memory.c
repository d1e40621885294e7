/*
 * memory.c - the reference storage plugin ("memory"): logs and key-value
 * state kept in RAM only.  Everything is lost when the daemon exits; use it
 * for tests, for brokers that need no durability, and as the model a
 * durable plugin copies.
 *
 * It completes operations exactly the way a durable plugin does, so that
 * the core is exercised as it will be against "file" or "lmdb": every
 * asynchronous op is queued to one worker thread of the plugin's own, which
 * finishes the ops in submission order and reports each through
 * host->io_done()/io_done_data().  That one FIFO gives the ordering promised
 * by storage.h (per log and per namespace) for free.
 *
 * Where state changes:
 *   - Logs change on the worker, when it reaches the op, as a disk-backed
 *     plugin's I/O thread would write them.  So a read submitted before a
 *     trim still sees the trimmed batches, and the worker is the only
 *     thread that ever modifies a log's batches.
 *   - Key-value state changes at submit time, on the loop thread, under the
 *     mutex: kv_get and kv_scan must see every submitted put and delete, and
 *     applying them at once is simpler than a pending overlay.  The queued op
 *     only carries the completion.
 *
 * Config keys:
 *   max_bytes = SIZE  cap on stored bytes (batches + keys + values); appends
 *                     and puts past it complete with PMQ_ERR_NOSPC, so the
 *                     disk-full path can be tested without a disk.  0 (the
 *                     default) means no cap.
 *   delay_ms = N      test knob: the worker waits N ms before finishing each
 *                     op, to expose callers that rely on luck for ordering.
 *
 * Threads: every op runs on the loop thread (see storage.h); the worker runs
 * the queue.  mem->mu protects the queue, the log table, the namespaces,
 * the byte count and each log's start/end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <plexmq/plexmq.h>

static const struct pmq_host_api *api;

/* One stored batch: opaque bytes plus what the host told us about them. */
struct batch {
	int64_t base;
	uint32_t records;
	int64_t first_ts;
	int64_t max_ts;
	size_t len;
	unsigned char *data; /* owned */
};

/* One topic-partition.  Batches are contiguous: batch i+1 starts where
 * batch i ends, the first starts at start, the last ends at end. */
struct mlog {
	char *topic; /* owned */
	int32_t partition;
	struct batch *b;
	size_t n, cap;
	int64_t start, end;
	size_t bytes;  /* sum of b[i].len */
	int removing;  /* log_remove submitted: later ops fail */
};

/* One key-value pair; key and value live in one allocation. */
struct kent {
	unsigned char *key; /* owned; val points into the same block */
	size_t klen;
	unsigned char *val;
	size_t vlen;
};

/* A namespace: entries sorted by key (bytewise, shorter first on a tie),
 * so a prefix scan is a binary search then a walk. */
struct kns {
	char *name; /* owned */
	struct kent *e;
	size_t n, cap;
};

enum op_kind {
	OP_DONE,   /* completion only: status/value decided at submit */
	OP_APPEND,
	OP_READ,
	OP_TRIM,
	OP_REMOVE,
	OP_TIME
};

/* One queued operation. */
struct op {
	struct op *next;
	enum op_kind kind;
	pmq_io *io;
	struct mlog *log;
	int status;
	int64_t value;
	struct pmq_batch_meta meta;
	void *data; /* append: owned copy; read: result being built */
	size_t len;
	int64_t offset; /* read offset, trim start, timestamp */
	size_t max_bytes;
	int64_t limit;
	int has_data; /* complete with io_done_data */
};

struct mem {
	pmq_instance *inst;
	uint64_t max_bytes; /* 0 = no cap */
	int64_t delay_ms;

	pthread_mutex_t mu;
	pthread_cond_t work_cv; /* queue got an op, or stopping */
	pthread_cond_t idle_cv; /* queue empty and worker idle */
	struct op *head, *tail;
	int busy;     /* worker holds an op outside the queue */
	int running;  /* worker thread exists */
	int stopping;
	pthread_t thr;

	uint64_t used; /* bytes stored, against max_bytes */
	struct mlog **logs;
	size_t nlogs, caplogs;
	struct kns *ns;
	size_t nns, capns;
};

/* Grow *arr (of elem-sized items) so that it holds at least need items. */
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

/* Would adding n bytes pass the cap?  Caller holds mu. */
static int over_cap(const struct mem *m, uint64_t n)
{
	return m->max_bytes != 0 && (m->used + n > m->max_bytes ||
	                             m->used + n < m->used);
}

/* ---- the queue and the worker ---- */

static void op_free(struct op *o)
{
	free(o->data);
	free(o);
}

/* Report o to the host.  Called without mu held: the host's io_done may
 * take locks of its own. */
static void op_complete(struct op *o)
{
	if (o->has_data) {
		void *d = o->data;

		o->data = NULL; /* the host owns it now */
		api->io_done_data(o->io, o->status, d, d ? o->len : 0,
		                  d ? free : NULL);
	} else {
		api->io_done(o->io, o->status, o->value);
	}
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
	                      .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Index of the batch holding offset; log has batches and
 * start <= offset < end. */
static size_t batch_find(const struct mlog *l, int64_t offset)
{
	size_t lo = 0, hi = l->n; /* answer in [lo, hi) */

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->b[mid].base <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static void log_free(struct mlog *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		free(l->b[i].data);
	free(l->b);
	free(l->topic);
	free(l);
}

static void do_append(struct mem *m, struct op *o)
{
	struct mlog *l = o->log;
	struct batch *b;

	pthread_mutex_lock(&m->mu);
	if (o->meta.base_offset != l->end) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "%s: %s/%d: batch base %lld, log end %lld", __func__,
		         l->topic, (int)l->partition,
		         (long long)o->meta.base_offset, (long long)l->end);
		o->status = PMQ_ERR_INVAL;
	} else if (over_cap(m, o->len)) {
		o->status = PMQ_ERR_NOSPC;
	} else if (grow((void **)&l->b, &l->cap, l->n + 1, sizeof(*l->b))) {
		o->status = PMQ_ERR_NOMEM;
	} else {
		b = &l->b[l->n++];
		b->base = o->meta.base_offset;
		b->records = o->meta.records;
		b->first_ts = o->meta.first_timestamp_ms;
		b->max_ts = o->meta.max_timestamp_ms;
		b->len = o->len;
		b->data = o->data; /* moves into the log */
		o->data = NULL;
		l->bytes += o->len;
		m->used += o->len;
		l->end += o->meta.records;
		o->value = l->end;
	}
	pthread_mutex_unlock(&m->mu);
}

/* No lock while copying: only the worker changes a log's batches. */
static void do_read(struct op *o)
{
	const struct mlog *l = o->log;
	size_t first, i, total = 0;
	unsigned char *p;

	o->has_data = 1;
	if (o->offset < l->start || o->offset > l->end) {
		o->status = PMQ_ERR_RANGE;
		return;
	}
	if (o->offset == l->end)
		return; /* empty read at the end */
	first = batch_find(l, o->offset);
	for (i = first; i < l->n; i++) {
		if (l->b[i].base >= o->limit)
			break;
		/* The first batch goes whole, whatever max_bytes says, so a
		 * reader always makes progress. */
		if (i > first && total + l->b[i].len > o->max_bytes)
			break;
		total += l->b[i].len;
	}
	if (total == 0)
		return;
	p = malloc(total);
	if (p == NULL) {
		o->status = PMQ_ERR_NOMEM;
		return;
	}
	o->data = p;
	o->len = total;
	for (; first < i; first++) {
		memcpy(p, l->b[first].data, l->b[first].len);
		p += l->b[first].len;
	}
}

static void do_trim(struct mem *m, struct op *o)
{
	struct mlog *l = o->log;
	size_t k = 0, freed = 0;

	pthread_mutex_lock(&m->mu);
	if (o->offset > l->end) {
		o->status = PMQ_ERR_RANGE;
	} else {
		/* Whole batches only: a batch that holds new_start stays. */
		while (k < l->n &&
		       l->b[k].base + (int64_t)l->b[k].records <= o->offset) {
			freed += l->b[k].len;
			free(l->b[k].data);
			k++;
		}
		memmove(l->b, l->b + k, (l->n - k) * sizeof(*l->b));
		l->n -= k;
		l->bytes -= freed;
		m->used -= freed;
		l->start = l->n ? l->b[0].base : l->end;
	}
	o->value = l->start;
	pthread_mutex_unlock(&m->mu);
}

static void do_remove(struct mem *m, struct op *o)
{
	struct mlog *l = o->log;
	size_t i;

	pthread_mutex_lock(&m->mu);
	for (i = 0; i < m->nlogs; i++) {
		if (m->logs[i] == l) {
			m->logs[i] = m->logs[--m->nlogs];
			break;
		}
	}
	m->used -= l->bytes;
	pthread_mutex_unlock(&m->mu);
	log_free(l);
}

static void do_time(struct op *o)
{
	const struct mlog *l = o->log;
	size_t i;

	/* Linear: max timestamps need not grow from batch to batch. */
	o->value = -1;
	for (i = 0; i < l->n; i++) {
		if (l->b[i].max_ts >= o->offset) {
			o->value = l->b[i].base;
			break;
		}
	}
}

static void *worker(void *arg)
{
	struct mem *m = arg;
	struct op *o;
	int stopping;

	pthread_mutex_lock(&m->mu);
	for (;;) {
		while (m->head == NULL && !m->stopping)
			pthread_cond_wait(&m->work_cv, &m->mu);
		o = m->head;
		if (o == NULL)
			break; /* stopping and drained */
		m->head = o->next;
		if (m->head == NULL)
			m->tail = NULL;
		m->busy = 1;
		stopping = m->stopping;
		pthread_mutex_unlock(&m->mu);

		/* The delay is skipped once stopping: stop must finish
		 * every op but need not pretend to be slow. */
		if (m->delay_ms > 0 && !stopping)
			sleep_ms(m->delay_ms);
		if (o->status == PMQ_OK) {
			switch (o->kind) {
			case OP_APPEND: do_append(m, o); break;
			case OP_READ: do_read(o); break;
			case OP_TRIM: do_trim(m, o); break;
			case OP_REMOVE: do_remove(m, o); break;
			case OP_TIME: do_time(o); break;
			case OP_DONE: break;
			}
		}
		op_complete(o);
		op_free(o);

		pthread_mutex_lock(&m->mu);
		m->busy = 0;
		if (m->head == NULL)
			pthread_cond_broadcast(&m->idle_cv);
	}
	pthread_mutex_unlock(&m->mu);
	return NULL;
}

/* Block until every queued op has completed (loop thread; used by the ops
 * allowed to block, and when memory runs out). */
static void wait_idle(struct mem *m)
{
	pthread_mutex_lock(&m->mu);
	while (m->running && (m->head != NULL || m->busy))
		pthread_cond_wait(&m->idle_cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
}

/* Queue o; caller holds mu and has checked m->running. */
static void enqueue_locked(struct mem *m, struct op *o)
{
	o->next = NULL;
	if (m->tail)
		m->tail->next = o;
	else
		m->head = o;
	m->tail = o;
	pthread_cond_signal(&m->work_cv);
}

/* Complete io with an error, not through the queue: only when no op could
 * be allocated.  Waiting for the queue to drain first keeps completions in
 * submission order. */
static void fail_now(struct mem *m, pmq_io *io, int status, int read)
{
	api->log(m->inst, PMQ_LOG_ERROR, "memory storage: %s",
	         api->strerror(status));
	wait_idle(m);
	if (read)
		api->io_done_data(io, status, NULL, 0, NULL);
	else
		api->io_done(io, status, 0);
}

/* Returns a new op for io, or NULL after failing io with PMQ_ERR_NOMEM. */
static struct op *op_new(struct mem *m, pmq_io *io, enum op_kind kind,
                         struct mlog *l)
{
	struct op *o = calloc(1, sizeof(*o));

	if (o == NULL) {
		fail_now(m, io, PMQ_ERR_NOMEM, kind == OP_READ);
		return NULL;
	}
	o->kind = kind;
	o->io = io;
	o->log = l;
	o->has_data = kind == OP_READ;
	return o;
}

/* Queue a log op; ops on a log being removed fail in order. */
static void submit_log(struct mem *m, struct op *o)
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
		o->kind = OP_DONE;
		o->log = NULL;
	} else if (o->kind == OP_REMOVE) {
		o->log->removing = 1;
	}
	enqueue_locked(m, o);
	pthread_mutex_unlock(&m->mu);
}

/* ---- lifetime and config ---- */

static void *mem_create(pmq_instance *inst)
{
	struct mem *m = calloc(1, sizeof(*m));

	if (m == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	m->inst = inst;
	if (pthread_mutex_init(&m->mu, NULL) != 0)
		goto fail_mu;
	if (pthread_cond_init(&m->work_cv, NULL) != 0)
		goto fail_work;
	if (pthread_cond_init(&m->idle_cv, NULL) != 0)
		goto fail_idle;
	return m;
fail_idle:
	pthread_cond_destroy(&m->work_cv);
fail_work:
	pthread_mutex_destroy(&m->mu);
fail_mu:
	api->log(inst, PMQ_LOG_ERROR, "%s: cannot create locks", __func__);
	free(m);
	return NULL;
}

static int mem_configure(void *st, const char *key, const char *value,
                         char *err, size_t err_len)
{
	struct mem *m = st;

	if (strcmp(key, "max_bytes") == 0) {
		uint64_t v;

		if (api->cfg_size(value, &v) != PMQ_OK) {
			snprintf(err, err_len, "max_bytes: bad size '%s'",
			         value);
			return PMQ_ERR_CONFIG;
		}
		m->max_bytes = v;
		return PMQ_OK;
	}
	if (strcmp(key, "delay_ms") == 0) {
		int64_t v;

		if (api->cfg_int(value, 0, 60000, &v) != PMQ_OK) {
			snprintf(err, err_len,
			         "delay_ms: want 0..60000, got '%s'", value);
			return PMQ_ERR_CONFIG;
		}
		m->delay_ms = v;
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

static int mem_start(void *st)
{
	struct mem *m = st;
	int rc;

	if (m->running)
		return PMQ_OK;
	m->stopping = 0;
	rc = pthread_create(&m->thr, NULL, worker, m);
	if (rc != 0) {
		api->log(m->inst, PMQ_LOG_ERROR,
		         "%s: cannot start worker thread: %s", __func__,
		         strerror(rc));
		return PMQ_ERR_NOMEM;
	}
	m->running = 1;
	api->log(m->inst, PMQ_LOG_INFO,
	         "memory storage: nothing is kept after exit%s",
	         m->delay_ms ? " (delay_ms set: test mode)" : "");
	return PMQ_OK;
}

static void mem_stop(void *st)
{
	struct mem *m = st;

	if (!m->running)
		return;
	pthread_mutex_lock(&m->mu);
	m->stopping = 1;
	pthread_cond_signal(&m->work_cv);
	pthread_mutex_unlock(&m->mu);
	/* The worker completes everything queued, then exits. */
	pthread_join(m->thr, NULL);
	pthread_mutex_lock(&m->mu);
	m->running = 0;
	pthread_cond_broadcast(&m->idle_cv);
	pthread_mutex_unlock(&m->mu);
}

static void mem_destroy(void *st)
{
	struct mem *m = st;
	size_t i, j;

	if (m == NULL)
		return;
	mem_stop(m);
	for (i = 0; i < m->nlogs; i++)
		log_free(m->logs[i]);
	free(m->logs);
	for (i = 0; i < m->nns; i++) {
		for (j = 0; j < m->ns[i].n; j++)
			free(m->ns[i].e[j].key);
		free(m->ns[i].e);
		free(m->ns[i].name);
	}
	free(m->ns);
	pthread_cond_destroy(&m->idle_cv);
	pthread_cond_destroy(&m->work_cv);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* ---- logs ---- */

/* Caller holds mu.  A linear search: opens are rare (startup, new
 * partitions) and the handle is kept by the host. */
static struct mlog *log_find_locked(struct mem *m, const char *topic,
                                    int32_t partition)
{
	size_t i;

	for (i = 0; i < m->nlogs; i++)
		if (m->logs[i]->partition == partition &&
		    strcmp(m->logs[i]->topic, topic) == 0)
			return m->logs[i];
	return NULL;
}

static int mem_log_list(void *st, pmq_log_list_fn fn, void *arg)
{
	struct mem *m = st;
	struct mlog **snap;
	size_t i, n;

	wait_idle(m); /* pending removes count */
	/* fn may call log_open, so it runs without the lock, on a copy. */
	pthread_mutex_lock(&m->mu);
	n = m->nlogs;
	snap = malloc((n ? n : 1) * sizeof(*snap));
	if (snap != NULL)
		memcpy(snap, m->logs, n * sizeof(*snap));
	pthread_mutex_unlock(&m->mu);
	if (snap == NULL)
		return PMQ_ERR_NOMEM;
	/* Safe to use the logs unlocked: the queue is idle and only queued
	 * ops, submitted on this thread, could free one. */
	for (i = 0; i < n; i++)
		fn(arg, snap[i]->topic, snap[i]->partition);
	free(snap);
	return PMQ_OK;
}

static void *mem_log_open(void *st, const char *topic, int32_t partition,
                          struct pmq_log_state *out, int *err)
{
	struct mem *m = st;
	struct mlog *l;

	if (topic == NULL || *topic == '\0' || partition < 0) {
		*err = PMQ_ERR_INVAL;
		return NULL;
	}
	/* log_end must be durable when reported: let pending writes land. */
	wait_idle(m);
	pthread_mutex_lock(&m->mu);
	l = log_find_locked(m, topic, partition);
	if (l == NULL) {
		l = calloc(1, sizeof(*l));
		if (l == NULL ||
		    (l->topic = strdup(topic)) == NULL ||
		    grow((void **)&m->logs, &m->caplogs, m->nlogs + 1,
		         sizeof(*m->logs)) != PMQ_OK) {
			pthread_mutex_unlock(&m->mu);
			log_free(l);
			api->log(m->inst, PMQ_LOG_ERROR,
			         "%s: %s/%d: out of memory", __func__, topic,
			         (int)partition);
			*err = PMQ_ERR_NOMEM;
			return NULL;
		}
		l->partition = partition;
		m->logs[m->nlogs++] = l;
	}
	if (out != NULL) {
		out->size = sizeof(*out);
		out->log_start = l->start;
		out->log_end = l->end;
	}
	pthread_mutex_unlock(&m->mu);
	*err = PMQ_OK;
	return l;
}

/* The data stays in RAM for the next log_open: closing only ends the
 * host's use of the handle. */
static void mem_log_close(void *st, void *log)
{
	(void)st;
	(void)log;
}

static void mem_log_append(void *st, void *log,
                           const struct pmq_batch_meta *meta,
                           const void *data, size_t len, pmq_io *io)
{
	struct mem *m = st;
	struct op *o = op_new(m, io, OP_APPEND, log);

	if (o == NULL)
		return;
	if (meta == NULL ||
	    !PMQ_HAS(meta, struct pmq_batch_meta, max_timestamp_ms) ||
	    meta->records == 0 || len == 0 || data == NULL) {
		o->status = PMQ_ERR_INVAL; /* reported in order */
	} else {
		o->meta = *meta;
		o->data = malloc(len);
		if (o->data == NULL) {
			free(o);
			fail_now(m, io, PMQ_ERR_NOMEM, 0);
			return;
		}
		memcpy(o->data, data, len);
		o->len = len;
	}
	submit_log(m, o);
}

static void mem_log_read(void *st, void *log, int64_t offset,
                         size_t max_bytes, int64_t limit, pmq_io *io)
{
	struct mem *m = st;
	struct op *o = op_new(m, io, OP_READ, log);

	if (o == NULL)
		return;
	o->offset = offset;
	o->max_bytes = max_bytes;
	o->limit = limit;
	submit_log(m, o);
	/* A failed read still completes through io_done_data. */
}

static void mem_log_trim(void *st, void *log, int64_t new_start, pmq_io *io)
{
	struct mem *m = st;
	struct op *o = op_new(m, io, OP_TRIM, log);

	if (o == NULL)
		return;
	o->offset = new_start;
	submit_log(m, o);
}

static void mem_log_remove(void *st, void *log, pmq_io *io)
{
	struct mem *m = st;
	struct op *o = op_new(m, io, OP_REMOVE, log);

	if (o != NULL)
		submit_log(m, o);
}

static void mem_log_offset_for_time(void *st, void *log, int64_t ts_ms,
                                    pmq_io *io)
{
	struct mem *m = st;
	struct op *o = op_new(m, io, OP_TIME, log);

	if (o == NULL)
		return;
	o->offset = ts_ms;
	submit_log(m, o);
}

/* ---- key-value state ---- */

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* First index whose key is >= key (or > key when after). */
static size_t kv_bound(const struct kns *ns, const void *key, size_t klen,
                       int after)
{
	size_t lo = 0, hi = ns->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(ns->e[mid].key, ns->e[mid].klen, key, klen);

		if (c < 0 || (after && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Caller holds mu.  Namespaces are few: a linear search. */
static struct kns *ns_find_locked(struct mem *m, const char *name,
                                  int create)
{
	struct kns *ns;
	size_t i;

	for (i = 0; i < m->nns; i++)
		if (strcmp(m->ns[i].name, name) == 0)
			return &m->ns[i];
	if (!create ||
	    grow((void **)&m->ns, &m->capns, m->nns + 1, sizeof(*m->ns)))
		return NULL;
	ns = &m->ns[m->nns];
	memset(ns, 0, sizeof(*ns));
	ns->name = strdup(name);
	if (ns->name == NULL)
		return NULL;
	m->nns++;
	return ns;
}

/* Apply a put; caller holds mu. */
static int kv_put_locked(struct mem *m, const char *name, const void *key,
                         size_t klen, const void *val, size_t vlen)
{
	struct kns *ns = ns_find_locked(m, name, 1);
	struct kent *e;
	unsigned char *blk;
	size_t i, old = 0;
	int found;

	if (ns == NULL)
		return PMQ_ERR_NOMEM;
	i = kv_bound(ns, key, klen, 0);
	found = i < ns->n &&
	        key_cmp(ns->e[i].key, ns->e[i].klen, key, klen) == 0;
	if (found)
		old = ns->e[i].klen + ns->e[i].vlen;
	/* Only the growth counts against the cap, so a replacement that
	 * shrinks a value always succeeds. */
	if (klen + vlen > old && over_cap(m, klen + vlen - old))
		return PMQ_ERR_NOSPC;
	blk = malloc(klen + vlen + 1);
	if (blk == NULL)
		return PMQ_ERR_NOMEM;
	if (!found) {
		if (grow((void **)&ns->e, &ns->cap, ns->n + 1,
		         sizeof(*ns->e))) {
			free(blk);
			return PMQ_ERR_NOMEM;
		}
		memmove(&ns->e[i + 1], &ns->e[i],
		        (ns->n - i) * sizeof(*ns->e));
		ns->n++;
	} else {
		free(ns->e[i].key);
	}
	e = &ns->e[i];
	if (klen)
		memcpy(blk, key, klen);
	if (vlen)
		memcpy(blk + klen, val, vlen);
	e->key = blk;
	e->klen = klen;
	e->val = blk + klen;
	e->vlen = vlen;
	m->used = m->used - old + klen + vlen;
	return PMQ_OK;
}

/* Apply a delete (absent keys are fine); caller holds mu. */
static void kv_del_locked(struct mem *m, const char *name, const void *key,
                          size_t klen)
{
	struct kns *ns = ns_find_locked(m, name, 0);
	size_t i;

	if (ns == NULL)
		return;
	i = kv_bound(ns, key, klen, 0);
	if (i >= ns->n || key_cmp(ns->e[i].key, ns->e[i].klen, key, klen))
		return;
	m->used -= ns->e[i].klen + ns->e[i].vlen;
	free(ns->e[i].key);
	memmove(&ns->e[i], &ns->e[i + 1], (ns->n - i - 1) * sizeof(*ns->e));
	ns->n--;
}

/* Apply a write now and queue its completion behind earlier ops. */
static void kv_write(struct mem *m, const char *name, const void *key,
                     size_t klen, const void *val, size_t vlen, int del,
                     pmq_io *io)
{
	struct op *o = op_new(m, io, OP_DONE, NULL);

	if (o == NULL)
		return;
	pthread_mutex_lock(&m->mu);
	if (!m->running) {
		pthread_mutex_unlock(&m->mu);
		o->status = PMQ_ERR_CLOSED;
		op_complete(o);
		op_free(o);
		return;
	}
	if (name == NULL || *name == '\0' || (key == NULL && klen) ||
	    (val == NULL && vlen))
		o->status = PMQ_ERR_INVAL;
	else if (del)
		kv_del_locked(m, name, key, klen);
	else
		o->status = kv_put_locked(m, name, key, klen, val, vlen);
	enqueue_locked(m, o);
	pthread_mutex_unlock(&m->mu);
}

static void mem_kv_put(void *st, const char *ns, const void *key,
                       size_t key_len, const void *val, size_t val_len,
                       pmq_io *io)
{
	kv_write(st, ns, key, key_len, val, val_len, 0, io);
}

static void mem_kv_del(void *st, const char *ns, const void *key,
                       size_t key_len, pmq_io *io)
{
	kv_write(st, ns, key, key_len, NULL, 0, 1, io);
}

static int mem_kv_get(void *st, const char *name, const void *key,
                      size_t key_len, void **val, size_t *val_len)
{
	struct mem *m = st;
	struct kns *ns;
	size_t i;
	int rc = PMQ_ERR_NOTFOUND;

	if (name == NULL || (key == NULL && key_len))
		return PMQ_ERR_INVAL;
	pthread_mutex_lock(&m->mu);
	ns = ns_find_locked(m, name, 0);
	if (ns != NULL) {
		i = kv_bound(ns, key, key_len, 0);
		if (i < ns->n &&
		    key_cmp(ns->e[i].key, ns->e[i].klen, key, key_len) == 0) {
			/* +1: a non-NULL buffer even for an empty value. */
			*val = malloc(ns->e[i].vlen + 1);
			if (*val == NULL) {
				rc = PMQ_ERR_NOMEM;
			} else {
				memcpy(*val, ns->e[i].val, ns->e[i].vlen);
				*val_len = ns->e[i].vlen;
				rc = PMQ_OK;
			}
		}
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

/*
 * fn runs without the lock, on a copy of each entry, and the walk resumes
 * from the last key seen: so fn may call kv_put/kv_del (expiring sessions
 * while scanning them is natural) without deadlock or a stale index.
 */
static int mem_kv_scan(void *st, const char *name, const void *prefix,
                       size_t prefix_len,
                       int (*fn)(void *arg, const void *key, size_t key_len,
                                 const void *val, size_t val_len),
                       void *arg)
{
	struct mem *m = st;
	unsigned char *buf = NULL;
	size_t cap = 0, klen = 0, vlen = 0, i;
	int first = 1, rc = PMQ_OK;

	if (name == NULL || fn == NULL || (prefix == NULL && prefix_len))
		return PMQ_ERR_INVAL;
	for (;;) {
		struct kns *ns;
		const struct kent *e;

		pthread_mutex_lock(&m->mu);
		ns = ns_find_locked(m, name, 0);
		if (ns == NULL) {
			pthread_mutex_unlock(&m->mu);
			break;
		}
		i = first ? kv_bound(ns, prefix, prefix_len, 0)
		          : kv_bound(ns, buf, klen, 1);
		if (i >= ns->n || ns->e[i].klen < prefix_len ||
		    (prefix_len &&
		     memcmp(ns->e[i].key, prefix, prefix_len) != 0)) {
			pthread_mutex_unlock(&m->mu);
			break;
		}
		e = &ns->e[i];
		if (e->klen + e->vlen + 1 > cap) {
			unsigned char *nb = realloc(buf, e->klen + e->vlen + 1);

			if (nb == NULL) {
				pthread_mutex_unlock(&m->mu);
				rc = PMQ_ERR_NOMEM;
				break;
			}
			buf = nb;
			cap = e->klen + e->vlen + 1;
		}
		klen = e->klen;
		vlen = e->vlen;
		memcpy(buf, e->key, klen + vlen); /* key and value are adjacent */
		pthread_mutex_unlock(&m->mu);
		first = 0;
		if (fn(arg, buf, klen, buf + klen, vlen) != 0)
			break;
	}
	free(buf);
	return rc;
}

/* ---- the descriptor ---- */

static int mem_init(const struct pmq_host_api *host)
{
	api = host;
	return PMQ_OK;
}

static const struct pmq_storage_ops mem_ops = {
	.size = sizeof(struct pmq_storage_ops),
	.create = mem_create,
	.configure = mem_configure,
	.start = mem_start,
	.stop = mem_stop,
	.destroy = mem_destroy,
	.log_list = mem_log_list,
	.log_open = mem_log_open,
	.log_close = mem_log_close,
	.log_append = mem_log_append,
	.log_read = mem_log_read,
	.log_trim = mem_log_trim,
	.log_remove = mem_log_remove,
	.log_offset_for_time = mem_log_offset_for_time,
	.kv_put = mem_kv_put,
	.kv_del = mem_kv_del,
	.kv_get = mem_kv_get,
	.kv_scan = mem_kv_scan,
};

PMQ_PLUGIN_DEFINE(PMQ_KIND_STORAGE, "memory", "1.0.0",
                  "logs and key-value state in RAM (lost at exit)", 0,
                  mem_init, NULL, &mem_ops);
