/*
 * logs.c - the log layer: keeps, for every log topic, its partitions'
 * storage handles and offsets (log_start <= high_water <= log_end), turns
 * appends, reads and long polls into storage operations and completions,
 * persists topic metadata in the "topics" namespace and runs retention.
 * See logs.h for the contract and the failed-append policy; once the
 * appends in flight at a failure are done, the partition resynchronises
 * with the storage's real end (logs_part_resync) rather than assuming it
 * is high_water.
 *
 * Lifetime: a topic is reference counted.  The table holds one reference;
 * every storage operation in flight and every waiter holds one, so a
 * completion arriving after logs_delete() still finds its topic (marked
 * deleting) and reports PMQ_ERR_NOTFOUND instead of touching freed memory.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "batch.h"
#include "config.h"
#include "daemon.h"
#include "logger.h"
#include "logs.h"
#include "msg.h"
#include "storage.h"
#include "topic.h"
#include "util.h"

#define LOGS_NAME_MAX 4096
/* Encoded metadata: version u8, partitions i32, retention_ms i64,
 * retention_bytes i64. */
#define LOGS_META_LEN (1 + 4 + 8 + 8)
/* How long logs_shutdown() waits for pending storage operations. */
#define LOGS_DRAIN_MS 10000

struct topic;

/* One batch appended this session, for byte retention. */
struct seg {
	int64_t end;    /* offset after the batch */
	uint64_t bytes; /* its size */
};

struct partition {
	struct topic *t;
	int32_t id;
	void *log;            /* storage handle; NULL once removed */
	int64_t log_start;
	int64_t high_water;
	int64_t log_end;
	uint32_t inflight;    /* appends submitted, not completed */
	int fail_err;         /* non-zero: draining after a failed append */
	int lost_err;         /* non-zero: the storage lost acknowledged
	                         offsets; appends refused until a restart */
	int retention_busy;   /* a retention step is in flight */
	struct pmq_waiter *waiters; /* armed (not yet fired) waiters */
	struct seg *segs;     /* FIFO [seg_head, seg_head + seg_n) */
	size_t seg_head, seg_n, seg_cap;
	uint64_t seg_bytes;
	/* Publishes (logs_append_msg) waiting for the end of the loop turn,
	 * to go out as one record batch: see "publish batching" below. */
	struct pend *pend;
	uint32_t n_pend, cap_pend;
	size_t pend_bytes;
	struct partition *pend_next; /* on pend_list while listed */
	int pend_listed;
	uint32_t n_retry;     /* pend[0..n_retry): back from a full storage */
	int split;            /* one publish per batch until an append works */
};

struct topic {
	char *name;
	struct pmq_topic_config cfg;
	struct partition *parts; /* cfg.partitions entries */
	int refs;
	int deleting;
	int del_pending;         /* delete steps in flight (+1 guard) */
	int del_status;          /* first error of the delete */
	pmq_done_fn del_done;
	void *del_arg;
};

struct pmq_waiter {
	struct pmq_waiter *prev, *next;   /* in p->waiters while armed */
	struct pmq_waiter *gprev, *gnext; /* in all_waiters until freed */
	struct partition *p;
	int64_t offset;
	struct event *ev;   /* timeout, and the wake-up on the next turn */
	int fired;          /* status decided, callback pending */
	int status;
	pmq_done_fn wake;
	void *arg;
};

enum op_kind {
	OP_CREATE,    /* kv_put of metadata */
	OP_APPEND,    /* log_append for logs_append */
	OP_PUBLISH,   /* log_append for logs_append_msg */
	OP_READ,      /* log_read, or a deferred read result */
	OP_OFFSET,    /* log_offset_for_time */
	OP_REMOVE,    /* log_remove during delete */
	OP_META_DEL,  /* kv_del of metadata during delete */
	OP_DEL_GUARD, /* posted: releases the delete guard */
	OP_RET_TIME,  /* retention: log_offset_for_time */
	OP_RET_TRIM   /* retention: log_trim */
};

/* One pending storage operation or deferred result. */
struct op {
	enum op_kind kind;
	struct topic *t;       /* holds a reference */
	struct partition *p;   /* NULL for topic-wide ops */
	void *arg;
	union {
		pmq_done_fn done;
		pmq_append_fn append;
		pmq_read_fn read;
		pmq_offset_fn offset;
	} cb;
	int64_t base, end;     /* appends: offsets assigned */
	uint64_t bytes;        /* appends: batch size */
	int64_t target;        /* retention: trim target so far */
	int status;            /* deferred results */
	int extents;           /* reads: asked log_read_extents */
	struct pend *pubs;     /* OP_PUBLISH of a batch: one per record */
	uint32_t n_pubs;
};

/* One publish waiting in its partition's batch. */
struct pend {
	pmq_msg *m;            /* a reference until its append completes */
	pmq_publish_fn done;
	void *arg;
};

struct rule {
	char *match;
	char *log;
	struct pmq_topic_config cfg;
};

static struct topic **topics;   /* sorted by name (strcmp) */
static size_t n_topics, cap_topics;
static struct rule *rules;
static size_t n_rules;
static struct pmq_waiter *all_waiters;
static struct event *retention_ev;
/* Partitions holding publishes for this loop turn, and the event that
 * flushes them at its end. */
static struct partition *pend_list;
static struct event *pend_ev;
static size_t pending;          /* ops submitted, completion not run */
static int initialized, closing;

/* ---- small helpers ---- */

static struct storage *
stor(void)
{
	return storage_get();
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void
logs_meta_encode(const struct pmq_topic_config *cfg,
    uint8_t out[LOGS_META_LEN])
{
	out[0] = LOGS_META_VERSION;
	put_be32(out + 1, (uint32_t)cfg->partitions);
	put_be64(out + 5, (uint64_t)cfg->retention_ms);
	put_be64(out + 13, (uint64_t)cfg->retention_bytes);
}

/* Later versions may only append fields, so a longer value is fine. */
static int
logs_meta_decode(const void *val, size_t len, struct pmq_topic_config *cfg)
{
	const uint8_t *p = val;

	if (len < LOGS_META_LEN || p[0] != LOGS_META_VERSION)
		return PMQ_ERR_CORRUPT;
	cfg->size = sizeof *cfg;
	cfg->partitions = (int32_t)get_be32(p + 1);
	cfg->retention_ms = (int64_t)get_be64(p + 5);
	cfg->retention_bytes = (int64_t)get_be64(p + 13);
	return PMQ_OK;
}

static int
logs_config_ok(const struct pmq_topic_config *cfg)
{
	return cfg->partitions >= 1 && cfg->partitions <= LOGS_MAX_PARTITIONS &&
	    cfg->retention_ms >= -1 && cfg->retention_bytes >= -1;
}

/* Storage plugins may turn names into file names: refuse what could
 * escape a directory or collide with one. */
static int
logs_name_ok(const char *name)
{
	size_t len;

	if (name == NULL)
		return 0;
	len = strlen(name);
	return len > 0 && len <= LOGS_NAME_MAX && strchr(name, '/') == NULL &&
	    strstr(name, "..") == NULL && strcmp(name, ".") != 0;
}

/* ---- the topic table ---- */

/* Index of name, or of where it would go (*found = 0). */
static size_t
logs_table_pos(const char *name, int *found)
{
	size_t lo = 0, hi = n_topics;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(topics[mid]->name, name);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

/* Any topic of that name, deleting or not. */
static struct topic *
logs_table_find(const char *name)
{
	int found;
	size_t i;

	if (name == NULL || n_topics == 0)
		return NULL;
	i = logs_table_pos(name, &found);
	return found ? topics[i] : NULL;
}

static int
logs_table_insert(struct topic *t)
{
	int found;
	size_t i = logs_table_pos(t->name, &found);

	assert(!found);
	if (n_topics == cap_topics) {
		size_t ncap = cap_topics ? cap_topics * 2 : 16;
		struct topic **nt = realloc(topics, ncap * sizeof *nt);

		if (nt == NULL)
			return PMQ_ERR_NOMEM;
		topics = nt;
		cap_topics = ncap;
	}
	memmove(topics + i + 1, topics + i, (n_topics - i) * sizeof *topics);
	topics[i] = t;
	n_topics++;
	return PMQ_OK;
}

static void
logs_table_remove(struct topic *t)
{
	int found;
	size_t i = logs_table_pos(t->name, &found);

	if (!found || topics[i] != t)
		return;
	memmove(topics + i, topics + i + 1,
	    (n_topics - i - 1) * sizeof *topics);
	n_topics--;
}

/* A live topic's partition, or NULL. */
static struct partition *
logs_part_find(const char *name, int32_t partition)
{
	struct topic *t = logs_table_find(name);

	if (t == NULL || t->deleting || partition < 0 ||
	    partition >= t->cfg.partitions)
		return NULL;
	return &t->parts[partition];
}

static void
logs_topic_free(struct topic *t)
{
	struct storage *s = stor();
	int32_t i;

	for (i = 0; t->parts != NULL && i < t->cfg.partitions; i++) {
		struct partition *p = &t->parts[i];

		if (p->log != NULL && s != NULL)
			s->ops->log_close(s->st, p->log);
		free(p->segs);
	}
	free(t->parts);
	free(t->name);
	free(t);
}

static struct topic *
logs_topic_ref(struct topic *t)
{
	t->refs++;
	return t;
}

static void
logs_topic_unref(struct topic *t)
{
	assert(t->refs > 0);
	if (--t->refs == 0)
		logs_topic_free(t);
}

/* A new topic (one reference, not in the table) with every partition
 * opened, or NULL with *err set. */
static struct topic *
logs_topic_open(const char *name, const struct pmq_topic_config *cfg,
    int *err)
{
	struct storage *s = stor();
	struct topic *t;
	int32_t i;

	t = calloc(1, sizeof *t);
	if (t == NULL || (t->name = strdup(name)) == NULL ||
	    (t->parts = calloc((size_t)cfg->partitions, sizeof *t->parts)) ==
	    NULL) {
		if (t != NULL)
			free(t->name);
		free(t);
		*err = PMQ_ERR_NOMEM;
		return NULL;
	}
	t->cfg = *cfg;
	t->cfg.size = sizeof t->cfg;
	t->refs = 1;
	for (i = 0; i < cfg->partitions; i++) {
		struct partition *p = &t->parts[i];
		struct pmq_log_state ls = {.size = sizeof ls};
		int e = PMQ_ERR_IO;

		p->t = t;
		p->id = i;
		p->log = s->ops->log_open(s->st, name, i, &ls, &e);
		if (p->log == NULL) {
			log_error("%s: log %s-%d does not open: %s", __func__,
			    name, (int)i, e == PMQ_OK ? "?" : "storage error");
			*err = e == PMQ_OK ? PMQ_ERR_IO : e;
			logs_topic_unref(t); /* closes those opened */
			return NULL;
		}
		/* Offsets the storage reports at open are durable. */
		p->log_start = ls.log_start;
		p->high_water = p->log_end = ls.log_end;
	}
	return t;
}

/* ---- operations ---- */

static struct op *
logs_op_new(enum op_kind kind, struct topic *t, struct partition *p,
    void *arg)
{
	struct op *op = calloc(1, sizeof *op);

	if (op == NULL)
		return NULL;
	op->kind = kind;
	op->t = t != NULL ? logs_topic_ref(t) : NULL;
	op->p = p;
	op->arg = arg;
	return op;
}

static void
logs_op_free(struct op *op)
{
	uint32_t i;

	if (op->t != NULL)
		logs_topic_unref(op->t);
	for (i = 0; op->pubs != NULL && i < op->n_pubs; i++)
		msg_unref(op->pubs[i].m);
	free(op->pubs);
	free(op);
}

static void logs_io_done(void *arg, int status, int64_t value,
    const void *data, size_t len);
static void pend_schedule(struct partition *p);
static int pend_requeue(struct partition *p, struct pend *pubs, uint32_t n);
static void pend_fail_now(struct pend *pubs, uint32_t n, int status);
static void logs_op_complete(struct op *op, int status, int64_t value,
    const void *data, size_t len);

/* An io handle for op, counted as pending. */
static struct pmq_io *
logs_io(struct op *op)
{
	struct pmq_io *io = storage_io_new(logs_io_done, op);

	if (io != NULL)
		pending++;
	return io;
}

static void
logs_post_cb(void *arg)
{
	pending--;
	logs_op_complete(arg, PMQ_OK, 0, NULL, 0);
}

/* Run op's completion on a later loop turn (deferred results). */
static int
logs_post(struct op *op)
{
	int rc = storage_post(logs_post_cb, op);

	if (rc == PMQ_OK)
		pending++;
	return rc;
}

static void
logs_offsets_fill(const struct partition *p, struct pmq_log_offsets *o)
{
	o->size = sizeof *o;
	o->log_start = p->log_start;
	o->high_water = p->high_water;
	o->log_end = p->log_end;
}

/* ---- waiters ---- */

static void
logs_waiter_unlink(struct pmq_waiter *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else if (w->p->waiters == w)
		w->p->waiters = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
}

/* Decide w's status and run its wake on the next loop pass: a wake never
 * runs under the append completion or delete that caused it, so it may
 * call back into this layer freely. */
static void
logs_waiter_fire(struct pmq_waiter *w, int status)
{
	if (w->fired)
		return;
	w->fired = 1;
	w->status = status;
	logs_waiter_unlink(w);
	event_del(w->ev);
	event_active(w->ev, EV_TIMEOUT, 1);
}

/* Unlink w from everything and free it; returns nothing to call. */
static void
logs_waiter_free(struct pmq_waiter *w)
{
	struct topic *t = w->p->t;

	if (!w->fired)
		logs_waiter_unlink(w);
	if (w->gprev != NULL)
		w->gprev->gnext = w->gnext;
	else
		all_waiters = w->gnext;
	if (w->gnext != NULL)
		w->gnext->gprev = w->gprev;
	event_free(w->ev); /* also removes it from the active queue */
	free(w);
	logs_topic_unref(t);
}

static void
logs_waiter_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pmq_waiter *w = arg;
	int status = w->fired ? w->status : PMQ_ERR_AGAIN;
	pmq_done_fn wake = w->wake;
	void *warg = w->arg;

	(void)fd;
	(void)what;
	logs_waiter_free(w);
	wake(warg, status);
}

/* Fire every armed waiter of p whose offset is now below high_water. */
static void
logs_wake_readers(struct partition *p)
{
	struct pmq_waiter *w, *next;

	for (w = p->waiters; w != NULL; w = next) {
		next = w->next;
		if (w->offset < p->high_water)
			logs_waiter_fire(w, PMQ_OK);
	}
}

static void
logs_wake_all(struct topic *t, int status)
{
	int32_t i;

	for (i = 0; i < t->cfg.partitions; i++)
		while (t->parts[i].waiters != NULL)
			logs_waiter_fire(t->parts[i].waiters, status);
}

pmq_waiter *
logs_wait(const char *topic, int32_t partition, int64_t offset,
    uint32_t timeout_ms, pmq_done_fn wake, void *arg)
{
	struct partition *p;
	struct pmq_waiter *w;
	struct timeval tv;

	if (closing || wake == NULL)
		return NULL;
	p = logs_part_find(topic, partition);
	if (p == NULL)
		return NULL;
	w = calloc(1, sizeof *w);
	if (w == NULL)
		return NULL;
	w->ev = evtimer_new(daemon_base(), logs_waiter_cb, w);
	if (w->ev == NULL) {
		free(w);
		return NULL;
	}
	w->p = p;
	w->offset = offset;
	w->wake = wake;
	w->arg = arg;
	logs_topic_ref(p->t);
	w->gnext = all_waiters;
	if (all_waiters != NULL)
		all_waiters->gprev = w;
	all_waiters = w;
	w->next = p->waiters;
	if (p->waiters != NULL)
		p->waiters->prev = w;
	p->waiters = w;
	if (p->high_water > offset) {
		logs_waiter_fire(w, PMQ_OK);
	} else {
		tv.tv_sec = timeout_ms / 1000;
		tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
		evtimer_add(w->ev, &tv);
	}
	return w;
}

void
logs_wait_cancel(pmq_waiter *w)
{
	if (w != NULL)
		logs_waiter_free(w);
}

/* ---- create, delete, metadata ---- */

int
logs_create(const char *topic, const struct pmq_topic_config *cfg,
    pmq_done_fn done, void *arg)
{
	struct storage *s = stor();
	struct topic *t, *old;
	struct op *op;
	struct pmq_io *io;
	uint8_t meta[LOGS_META_LEN];
	int rc;

	if (closing || !initialized || s == NULL)
		return PMQ_ERR_CLOSED;
	if (!logs_name_ok(topic) || cfg == NULL ||
	    !PMQ_HAS(cfg, struct pmq_topic_config, retention_bytes) ||
	    !logs_config_ok(cfg))
		return PMQ_ERR_INVAL;
	old = logs_table_find(topic);
	if (old != NULL)
		return old->deleting ? PMQ_ERR_AGAIN : PMQ_ERR_EXISTS;
	/* Reserve what can fail before opening logs, so that failing leaves
	 * nothing behind but empty storage logs. */
	if (n_topics == cap_topics) {
		size_t ncap = cap_topics ? cap_topics * 2 : 16;
		struct topic **nt = realloc(topics, ncap * sizeof *nt);

		if (nt == NULL)
			return PMQ_ERR_NOMEM;
		topics = nt;
		cap_topics = ncap;
	}
	t = logs_topic_open(topic, cfg, &rc);
	if (t == NULL)
		return rc;
	op = logs_op_new(OP_CREATE, t, NULL, arg);
	io = op != NULL ? logs_io(op) : NULL;
	if (io == NULL) {
		if (op != NULL)
			logs_op_free(op);
		logs_topic_unref(t);
		return PMQ_ERR_NOMEM;
	}
	op->cb.done = done;
	rc = logs_table_insert(t); /* cannot fail: room reserved above */
	assert(rc == PMQ_OK);
	logs_meta_encode(&t->cfg, meta);
	s->ops->kv_put(s->st, LOGS_META_NS, t->name, strlen(t->name), meta,
	    sizeof meta, io);
	log_info("log topic %s created: %d partitions, retention %lld ms, "
	    "%lld bytes", t->name, (int)t->cfg.partitions,
	    (long long)t->cfg.retention_ms, (long long)t->cfg.retention_bytes);
	return PMQ_OK;
}

/* One delete step finished; the last one completes the delete. */
static void
logs_delete_step(struct topic *t, int status)
{
	if (status != PMQ_OK && t->del_status == PMQ_OK)
		t->del_status = status;
	if (--t->del_pending > 0)
		return;
	logs_table_remove(t);
	if (t->del_done != NULL)
		t->del_done(t->del_arg, t->del_status);
	log_info("log topic %s deleted", t->name);
	logs_topic_unref(t); /* the table's reference */
}

int
logs_delete(const char *topic, pmq_done_fn done, void *arg)
{
	struct storage *s = stor();
	struct topic *t;
	struct op *op;
	struct pmq_io *io;
	int32_t i;

	if (closing || !initialized || s == NULL)
		return PMQ_ERR_CLOSED;
	t = logs_table_find(topic);
	if (t == NULL || t->deleting)
		return PMQ_ERR_NOTFOUND;
	t->deleting = 1;
	t->del_done = done;
	t->del_arg = arg;
	t->del_status = PMQ_OK;
	/* The guard keeps the delete open until every step is submitted,
	 * and is released on a later turn so done never runs in here. */
	t->del_pending = 1;
	logs_wake_all(t, PMQ_ERR_NOTFOUND);
	for (i = 0; i < t->cfg.partitions; i++) {
		struct partition *p = &t->parts[i];

		if (p->log == NULL)
			continue;
		op = logs_op_new(OP_REMOVE, t, p, NULL);
		io = op != NULL ? logs_io(op) : NULL;
		if (io == NULL) {
			if (op != NULL)
				logs_op_free(op);
			log_error("%s: %s-%d: out of memory, not removed",
			    __func__, t->name, (int)i);
			t->del_status = PMQ_ERR_NOMEM;
			continue;
		}
		t->del_pending++;
		s->ops->log_remove(s->st, p->log, io);
	}
	op = logs_op_new(OP_META_DEL, t, NULL, NULL);
	io = op != NULL ? logs_io(op) : NULL;
	if (io == NULL) {
		if (op != NULL)
			logs_op_free(op);
		log_error("%s: %s: out of memory, metadata not deleted",
		    __func__, t->name);
		t->del_status = PMQ_ERR_NOMEM;
	} else {
		t->del_pending++;
		s->ops->kv_del(s->st, LOGS_META_NS, t->name, strlen(t->name),
		    io);
	}
	op = logs_op_new(OP_DEL_GUARD, t, NULL, NULL);
	if (op == NULL || logs_post(op) != PMQ_OK) {
		if (op != NULL)
			logs_op_free(op);
		/* Only if nothing was submitted would done run in here:
		 * out of memory twice over. */
		logs_delete_step(t, PMQ_OK);
	}
	return PMQ_OK;
}

int
logs_topic(const char *topic, struct pmq_topic_config *out)
{
	struct topic *t = logs_table_find(topic);
	uint32_t size;

	if (t == NULL || t->deleting)
		return PMQ_ERR_NOTFOUND;
	if (out == NULL)
		return PMQ_ERR_INVAL;
	/* Copy what the caller's struct has room for. */
	size = out->size < sizeof *out ? out->size : sizeof *out;
	if (size > sizeof out->size)
		memcpy((char *)out + sizeof out->size,
		    (const char *)&t->cfg + sizeof out->size,
		    size - sizeof out->size);
	return PMQ_OK;
}

void
logs_topics(pmq_topic_fn fn, void *arg)
{
	size_t i;

	for (i = 0; fn != NULL && i < n_topics; i++)
		if (!topics[i]->deleting)
			fn(arg, topics[i]->name, &topics[i]->cfg);
}

int
logs_offsets(const char *topic, int32_t partition,
    struct pmq_log_offsets *out)
{
	struct partition *p = logs_part_find(topic, partition);
	struct pmq_log_offsets o;
	uint32_t size;

	if (p == NULL)
		return PMQ_ERR_NOTFOUND;
	if (out == NULL)
		return PMQ_ERR_INVAL;
	logs_offsets_fill(p, &o);
	size = out->size < sizeof o ? out->size : sizeof o;
	if (size > sizeof o.size)
		memcpy((char *)out + sizeof o.size, (char *)&o + sizeof o.size,
		    size - sizeof o.size);
	return PMQ_OK;
}

/* ---- appends ---- */

/*
 * After failed appends, learn where the storage really ends instead of
 * assuming it ends at high_water: a storage may have stored a batch it then
 * reported as failed (a commit that landed but whose sync failed), and
 * appending at an end the storage does not share would be refused forever.
 * The ABI's way to ask is to close the handle and open the log again
 * (log_open reports the durable start and end; it may block, which is fine
 * for this rare path; ops still queued on the old handle finish first, as
 * every plugin's log_close allows).  Called with no append in flight.
 *
 * A storage end above high_water: those offsets were assigned once and
 * reported failed; they are stored, so readers see them now and appends go
 * on after them.  An end below high_water: the storage lost offsets it had
 * acknowledged.  Appending there would hand those offsets out a second
 * time, so appends fail (PMQ_ERR_IO, logged) until a restart.  A handle
 * that does not open again stays NULL and the next append tries again.
 */
static int
logs_part_resync(struct partition *p)
{
	struct storage *s = stor();
	struct pmq_log_state ls = {.size = sizeof ls};
	int e = PMQ_ERR_IO;

	if (s == NULL || p->t->deleting)
		return PMQ_ERR_CLOSED;
	if (p->log != NULL)
		s->ops->log_close(s->st, p->log);
	p->log = s->ops->log_open(s->st, p->t->name, p->id, &ls, &e);
	if (p->log == NULL) {
		log_error("%s: %s-%d: log does not open again (%d); appends "
		    "fail until it does", __func__, p->t->name, (int)p->id, e);
		return e == PMQ_OK ? PMQ_ERR_IO : e;
	}
	if (ls.log_end < p->high_water) {
		log_error("%s: %s-%d: storage ends at %lld, but offsets up to "
		    "%lld were acknowledged: the storage lost them; appends "
		    "are refused until a restart so that no offset is handed "
		    "out twice", __func__, p->t->name, (int)p->id,
		    (long long)ls.log_end, (long long)p->high_water);
		p->lost_err = PMQ_ERR_IO;
		p->log_end = p->high_water;
		return PMQ_ERR_IO;
	}
	if (ls.log_end > p->high_water) {
		log_warn("%s: %s-%d: storage holds offsets %lld..%lld that were "
		    "reported failed; they stay, appends go on after them",
		    __func__, p->t->name, (int)p->id,
		    (long long)p->high_water, (long long)ls.log_end - 1);
		p->high_water = ls.log_end;
		logs_wake_readers(p);
	}
	p->log_end = p->high_water;
	if (ls.log_start > p->log_start && ls.log_start <= p->high_water)
		p->log_start = ls.log_start;
	return PMQ_OK;
}

/* Submit buf (mutable: its base offset is rewritten; still the caller's)
 * as the next batch of p; op is consumed on PMQ_OK only. */
static int
logs_part_append(struct partition *p, void *buf, size_t len, struct op *op)
{
	struct storage *s = stor();
	struct pmq_batch_meta meta;
	struct pmq_io *io;
	int rc;

	if (closing || s == NULL)
		return PMQ_ERR_CLOSED;
	rc = batch_validate(buf, len, &meta);
	if (rc != PMQ_OK)
		return rc;
	if (meta.records == 0 || meta.records > INT32_MAX)
		return PMQ_ERR_INVAL;
	if (p->fail_err != 0)
		return PMQ_ERR_AGAIN;
	if (p->lost_err != 0)
		return p->lost_err;
	if (p->log == NULL && logs_part_resync(p) != PMQ_OK)
		return PMQ_ERR_IO;
	io = logs_io(op);
	if (io == NULL)
		return PMQ_ERR_NOMEM;
	meta.size = sizeof meta;
	meta.base_offset = p->log_end;
	rc = batch_set_base_offset(buf, len, p->log_end);
	assert(rc == PMQ_OK); /* validated: the header is there */
	(void)rc;
	op->p = p;
	op->base = p->log_end;
	op->end = p->log_end + meta.records;
	op->bytes = len;
	p->log_end = op->end;
	p->inflight++;
	s->ops->log_append(s->st, p->log, &meta, buf, len, io);
	return PMQ_OK;
}

/* Remember a durable batch for byte retention (only if configured). */
static void
logs_seg_push(struct partition *p, int64_t end, uint64_t bytes)
{
	if (p->t->cfg.retention_bytes < 0)
		return;
	if (p->seg_head > 0 && p->seg_head + p->seg_n == p->seg_cap) {
		memmove(p->segs, p->segs + p->seg_head,
		    p->seg_n * sizeof *p->segs);
		p->seg_head = 0;
	}
	if (p->seg_head + p->seg_n == p->seg_cap) {
		size_t ncap = p->seg_cap ? p->seg_cap * 2 : 16;
		struct seg *ns = realloc(p->segs, ncap * sizeof *ns);

		if (ns == NULL) {
			/* Byte retention undercounts; time retention and a
			 * restart still bound the log. */
			log_warn("%s: %s-%d: out of memory, batch not counted "
			    "for retention", __func__, p->t->name, (int)p->id);
			return;
		}
		p->segs = ns;
		p->seg_cap = ncap;
	}
	p->segs[p->seg_head + p->seg_n].end = end;
	p->segs[p->seg_head + p->seg_n].bytes = bytes;
	p->seg_n++;
	p->seg_bytes += bytes;
}

static void
logs_seg_trim(struct partition *p)
{
	while (p->seg_n > 0 && p->segs[p->seg_head].end <= p->log_start) {
		p->seg_bytes -= p->segs[p->seg_head].bytes;
		p->seg_head++;
		p->seg_n--;
	}
	if (p->seg_n == 0)
		p->seg_head = 0;
}

/* The storage finished an append: returns the status for the caller. */
static int
logs_append_finish(struct op *op, int status, int64_t value)
{
	struct partition *p = op->p;
	struct topic *t = op->t;

	assert(p->inflight > 0);
	p->inflight--;
	if (t->deleting) {
		status = PMQ_ERR_NOTFOUND;
	} else if (p->fail_err != 0) {
		/* Submitted before the failure was known: it would sit past
		 * a hole, so it fails too. */
		if (status == PMQ_OK)
			log_error("%s: %s-%d: storage stored offset %lld after "
			    "a failed append; reported failed, resynchronised "
			    "below",
			    __func__, t->name, (int)p->id,
			    (long long)op->base);
		status = p->fail_err;
	} else if (status != PMQ_OK) {
		log_error("%s: %s-%d: append at %lld failed (%d); failing "
		    "%u later appends in flight", __func__, t->name,
		    (int)p->id, (long long)op->base, status,
		    (unsigned)p->inflight);
		p->fail_err = status;
	} else {
		assert(op->base == p->high_water);
		if (value != op->end)
			log_warn("%s: %s-%d: storage reports end %lld, "
			    "expected %lld", __func__, t->name, (int)p->id,
			    (long long)value, (long long)op->end);
		p->high_water = op->end;
		logs_seg_push(p, op->end, op->bytes);
		logs_wake_readers(p);
	}
	if (p->fail_err != 0 && p->inflight == 0) {
		p->fail_err = 0;
		p->log_end = p->high_water;
		if (!t->deleting)
			(void)logs_part_resync(p);
		log_warn("%s: %s-%d: appends resume at offset %lld", __func__,
		    t->name, (int)p->id, (long long)p->log_end);
		if (p->n_pend > 0) /* publishes held while draining */
			pend_schedule(p);
	}
	return status;
}

int
logs_append(const char *topic, int32_t partition, const void *batch,
    size_t len, pmq_append_fn done, void *arg)
{
	struct partition *p;
	struct op *op;
	void *copy;
	int rc;

	if (closing)
		return PMQ_ERR_CLOSED;
	if (batch == NULL)
		return PMQ_ERR_INVAL;
	p = logs_part_find(topic, partition);
	if (p == NULL)
		return PMQ_ERR_NOTFOUND;
	copy = malloc(len > 0 ? len : 1);
	if (copy == NULL)
		return PMQ_ERR_NOMEM;
	memcpy(copy, batch, len);
	op = logs_op_new(OP_APPEND, p->t, p, arg);
	if (op == NULL) {
		free(copy);
		return PMQ_ERR_NOMEM;
	}
	op->cb.append = done;
	rc = logs_part_append(p, copy, len, op);
	if (rc != PMQ_OK)
		logs_op_free(op);
	free(copy); /* the storage copied it */
	return rc;
}

/* ---- reads and offsets by time ---- */

/* stored: the answer may be a struct pmq_extents (log_read_stored). */
static int
logs_read_common(const char *topic, int32_t partition, int64_t offset,
    size_t max_bytes, pmq_read_fn done, void *arg, int stored)
{
	struct storage *s = stor();
	struct partition *p;
	struct op *op;
	struct pmq_io *io;
	int rc;

	if (closing || s == NULL)
		return PMQ_ERR_CLOSED;
	if (done == NULL)
		return PMQ_ERR_INVAL;
	p = logs_part_find(topic, partition);
	if (p == NULL)
		return PMQ_ERR_NOTFOUND;
	op = logs_op_new(OP_READ, p->t, p, arg);
	if (op == NULL)
		return PMQ_ERR_NOMEM;
	op->cb.read = done;
	if (p->log == NULL && offset >= p->log_start &&
	    offset < p->high_water) {
		logs_op_free(op); /* reopen failed: see logs_part_resync */
		return PMQ_ERR_IO;
	}
	if (offset < p->log_start || offset >= p->high_water) {
		/* Nothing to ask the storage: answer on a later turn. */
		op->status = offset == p->high_water ? PMQ_OK : PMQ_ERR_RANGE;
		op->base = -1; /* marks a deferred result */
		rc = logs_post(op);
		if (rc != PMQ_OK)
			logs_op_free(op);
		return rc;
	}
	io = logs_io(op);
	if (io == NULL) {
		logs_op_free(op);
		return PMQ_ERR_NOMEM;
	}
	op->base = offset;
	if (stored && PMQ_HAS(s->ops, struct pmq_storage_ops, log_read_extents) &&
	    s->ops->log_read_extents != NULL) {
		op->extents = 1;
		storage_io_set_extents(io);
		s->ops->log_read_extents(s->st, p->log, offset, max_bytes,
		    p->high_water, io);
	} else {
		s->ops->log_read(s->st, p->log, offset, max_bytes,
		    p->high_water, io);
	}
	return PMQ_OK;
}

int
logs_read(const char *topic, int32_t partition, int64_t offset,
    size_t max_bytes, pmq_read_fn done, void *arg)
{
	return logs_read_common(topic, partition, offset, max_bytes, done,
	    arg, 0);
}

int
logs_read_stored(const char *topic, int32_t partition, int64_t offset,
    size_t max_bytes, pmq_read_fn done, void *arg)
{
	return logs_read_common(topic, partition, offset, max_bytes, done,
	    arg, 1);
}

/* An extents answer must describe exactly len bytes: the transport frames
 * the reply with len before the pieces are sent. */
static int
logs_extents_ok(const struct pmq_extents *x, size_t len)
{
	uint64_t sum = 0;
	uint32_t i;

	if (x == NULL)
		return len == 0;
	if (!PMQ_HAS(x, struct pmq_extents, v) || (x->n > 0 && x->v == NULL))
		return 0;
	for (i = 0; i < x->n; i++) {
		if (x->v[i].fd < 0 && x->v[i].data == NULL && x->v[i].len > 0)
			return 0;
		if (x->v[i].fd >= 0 && x->v[i].pos < 0)
			return 0;
		sum += x->v[i].len;
	}
	return sum == len;
}

int
logs_offset_for_time(const char *topic, int32_t partition, int64_t ts_ms,
    pmq_offset_fn done, void *arg)
{
	struct storage *s = stor();
	struct partition *p;
	struct op *op;
	struct pmq_io *io;

	if (closing || s == NULL)
		return PMQ_ERR_CLOSED;
	if (done == NULL || ts_ms < 0)
		return PMQ_ERR_INVAL;
	p = logs_part_find(topic, partition);
	if (p == NULL)
		return PMQ_ERR_NOTFOUND;
	if (s->ops->log_offset_for_time == NULL)
		return PMQ_ERR_UNSUPPORTED;
	if (p->log == NULL)
		return PMQ_ERR_IO; /* reopen failed: see logs_part_resync */
	op = logs_op_new(OP_OFFSET, p->t, p, arg);
	io = op != NULL ? logs_io(op) : NULL;
	if (io == NULL) {
		if (op != NULL)
			logs_op_free(op);
		return PMQ_ERR_NOMEM;
	}
	op->cb.offset = done;
	s->ops->log_offset_for_time(s->st, p->log, ts_ms, io);
	return PMQ_OK;
}

/* The storage's answer clamped to what readers may see. */
static int64_t
logs_visible_offset(const struct partition *p, int64_t v)
{
	if (v < 0 || v >= p->high_water)
		return -1;
	return v < p->log_start ? p->log_start : v;
}

/* ---- retention ---- */

static void
logs_retention_trim(struct op *op)
{
	struct storage *s = stor();
	struct partition *p = op->p;
	struct pmq_io *io;

	if (op->target > p->high_water)
		op->target = p->high_water; /* never past durable data */
	if (op->target <= p->log_start || p->log == NULL || s == NULL) {
		p->retention_busy = 0;
		logs_op_free(op);
		return;
	}
	op->kind = OP_RET_TRIM;
	io = logs_io(op);
	if (io == NULL) {
		p->retention_busy = 0;
		logs_op_free(op);
		return;
	}
	s->ops->log_trim(s->st, p->log, op->target, io);
}

static void
logs_retention_part(struct partition *p, int64_t now)
{
	struct storage *s = stor();
	const struct pmq_topic_config *cfg = &p->t->cfg;
	struct op *op;
	struct pmq_io *io;
	int64_t target = -1;

	if (p->retention_busy || p->log == NULL)
		return;
	if (cfg->retention_bytes >= 0 && p->seg_n > 1) {
		/* Drop the oldest batches while over the limit; the newest
		 * one always stays (Kafka keeps its active segment). */
		uint64_t total = p->seg_bytes;
		size_t i;

		for (i = 0; i + 1 < p->seg_n &&
		    total > (uint64_t)cfg->retention_bytes; i++) {
			total -= p->segs[p->seg_head + i].bytes;
			target = p->segs[p->seg_head + i].end;
		}
	}
	op = logs_op_new(OP_RET_TIME, p->t, p, NULL);
	if (op == NULL)
		return;
	op->target = target;
	p->retention_busy = 1;
	if (cfg->retention_ms >= 0 && s->ops->log_offset_for_time != NULL &&
	    p->high_water > p->log_start) {
		io = logs_io(op);
		if (io != NULL) {
			s->ops->log_offset_for_time(s->st, p->log,
			    now - cfg->retention_ms, io);
			return;
		}
	}
	logs_retention_trim(op);
}

void
logs_retention_run(void)
{
	int64_t now = util_now_ms();
	size_t i;
	int32_t j;

	if (closing)
		return;
	for (i = 0; i < n_topics; i++) {
		struct topic *t = topics[i];

		if (t->deleting || (t->cfg.retention_ms < 0 &&
		    t->cfg.retention_bytes < 0))
			continue;
		for (j = 0; j < t->cfg.partitions; j++)
			logs_retention_part(&t->parts[j], now);
	}
}

static void
logs_retention_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	logs_retention_run();
}

/* ---- the one completion for every op, storage or posted ---- */

static void
logs_op_complete(struct op *op, int status, int64_t value, const void *data,
    size_t len)
{
	struct topic *t = op->t;
	struct partition *p = op->p;
	struct pmq_log_offsets offs;

	switch (op->kind) {
	case OP_CREATE:
		if (status != PMQ_OK)
			log_error("%s: metadata of %s not stored (%d)",
			    __func__, t->name, status);
		if (op->cb.done != NULL)
			op->cb.done(op->arg, status);
		break;
	case OP_APPEND:
		status = logs_append_finish(op, status, value);
		if (op->cb.append != NULL)
			op->cb.append(op->arg, status,
			    status == PMQ_OK ? op->base : -1);
		break;
	case OP_PUBLISH: {
		struct pmq_publish_result r = {.size = sizeof r,
		    .partition = -1, .offset = -1};
		uint32_t i;

		/* The storage found no room for this batch itself (not a
		 * failure passed on from an earlier one): retry it one
		 * publish at a time, as if it had never been batched. */
		int full = op->base >= 0 && status == PMQ_ERR_NOSPC &&
		    p->fail_err == 0 && !t->deleting;

		if (op->base < 0)
			status = op->status; /* never submitted */
		else
			status = logs_append_finish(op, status, value);
		if (full && op->n_pubs > 1 && !closing &&
		    pend_requeue(p, op->pubs, op->n_pubs) == PMQ_OK) {
			op->pubs = NULL; /* the queue has them now */
			op->n_pubs = 0;
			break;
		}
		if (status == PMQ_OK) {
			r.partition = p->id;
			p->split = 0;
		}
		/* One record per publish, in the order they were queued. */
		for (i = 0; i < op->n_pubs; i++) {
			r.offset = status == PMQ_OK ? op->base + i : -1;
			if (op->pubs[i].done != NULL)
				op->pubs[i].done(op->pubs[i].arg, status, &r);
		}
		break;
	}
	case OP_READ:
		if (op->base < 0)
			status = op->status; /* deferred result */
		if (t->deleting) {
			status = PMQ_ERR_NOTFOUND;
			data = NULL;
			len = 0;
		} else if (status != PMQ_OK) {
			data = NULL;
			len = 0;
		} else if (op->extents && !logs_extents_ok(data, len)) {
			log_error("%s: %s-%d: the storage's log_read_extents "
			    "answer does not describe its %zu bytes", __func__,
			    t->name, (int)p->id, len);
			status = PMQ_ERR_CORRUPT;
			data = NULL;
			len = 0;
		}
		if (len == 0)
			data = NULL;
		logs_offsets_fill(p, &offs);
		op->cb.read(op->arg, status, data, len, &offs);
		break;
	case OP_OFFSET:
		if (t->deleting)
			status = PMQ_ERR_NOTFOUND;
		op->cb.offset(op->arg, status,
		    status == PMQ_OK ? logs_visible_offset(p, value) : -1);
		break;
	case OP_REMOVE:
		if (status != PMQ_OK)
			log_error("%s: %s-%d not removed (%d)", __func__,
			    t->name, (int)p->id, status);
		p->log = NULL; /* the handle is gone either way */
		logs_delete_step(t, status);
		break;
	case OP_META_DEL:
		if (status != PMQ_OK && status != PMQ_ERR_NOTFOUND)
			log_error("%s: metadata of %s not deleted (%d)",
			    __func__, t->name, status);
		logs_delete_step(t, status == PMQ_ERR_NOTFOUND ? PMQ_OK :
		    status);
		break;
	case OP_DEL_GUARD:
		logs_delete_step(t, PMQ_OK);
		break;
	case OP_RET_TIME:
		if (status == PMQ_OK && !t->deleting) {
			/* No batch new enough: everything durable expired. */
			int64_t v = value < 0 ? p->high_water : value;

			if (v > op->target)
				op->target = v;
		} else if (status != PMQ_OK) {
			log_warn("%s: %s-%d: offset for time failed (%d)",
			    __func__, t->name, (int)p->id, status);
		}
		if (t->deleting) {
			p->retention_busy = 0;
			logs_op_free(op);
		} else {
			logs_retention_trim(op); /* reuses op */
		}
		return;
	case OP_RET_TRIM:
		p->retention_busy = 0;
		if (status != PMQ_OK)
			log_warn("%s: %s-%d: trim to %lld failed (%d)",
			    __func__, t->name, (int)p->id,
			    (long long)op->target, status);
		else if (!t->deleting && value > p->log_start) {
			log_info("%s-%d: retention: log start %lld -> %lld",
			    t->name, (int)p->id, (long long)p->log_start,
			    (long long)value);
			p->log_start = value < p->high_water ? value :
			    p->high_water;
			logs_seg_trim(p);
		}
		break;
	}
	logs_op_free(op);
}

/* Storage completion of an op submitted with logs_io(). */
static void
logs_io_done(void *arg, int status, int64_t value, const void *data,
    size_t len)
{
	pending--;
	logs_op_complete(arg, status, value, data, len);
}

/* ---- topic rules and MQTT messages ---- */

int32_t
logs_murmur2(const void *data, size_t len)
{
	const uint8_t *b = data;
	const uint32_t m = 0x5bd1e995;
	uint32_t h = 0x9747b28cu ^ (uint32_t)len;
	size_t i, n4 = len / 4;

	for (i = 0; i < n4; i++) {
		const uint8_t *q = b + i * 4;
		uint32_t k = (uint32_t)q[0] | (uint32_t)q[1] << 8 |
		    (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;

		k *= m;
		k ^= k >> 24;
		k *= m;
		h *= m;
		h ^= k;
	}
	switch (len % 4) {
	case 3:
		h ^= (uint32_t)b[(len & ~(size_t)3) + 2] << 16;
		/* fall through */
	case 2:
		h ^= (uint32_t)b[(len & ~(size_t)3) + 1] << 8;
		/* fall through */
	case 1:
		h ^= b[len & ~(size_t)3];
		h *= m;
	}
	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return (int32_t)h;
}

int32_t
logs_partition_for_key(const void *key, size_t len, int32_t partitions)
{
	if (partitions <= 0)
		return 0;
	return (int32_t)(((uint32_t)logs_murmur2(key, len) & 0x7fffffffu) %
	    (uint32_t)partitions);
}

/* The first rule whose filter matches topic, or NULL. */
static const struct rule *
logs_rule_find(const char *topic)
{
	size_t i;

	for (i = 0; i < n_rules; i++)
		if (topic_match(rules[i].match, topic))
			return &rules[i];
	return NULL;
}

/* ---- publish batching ----
 *
 * Every publish a topic rule logs used to be its own record batch: one
 * storage append, frame, write and completion each, most of the CPU of a
 * durable MQTT or tcp workload.  Publishes to one partition during one
 * loop turn now wait in the partition and leave at the end of the turn
 * (or once PEND_MAX_MSGS or PEND_MAX_BYTES gather) as one batch with one
 * record each; the batch's completion gives every publisher its own
 * offset, in queue order, so each connection's acks stay in order.  No
 * publish waits for a later turn: the latency cost is nil, and a lone
 * publish is a batch of one as before.
 *
 * A full storage must answer as it did for one publish at a time (the
 * first that does not fit fails, and so does each later one of its size)
 * rather than fail a batch and then take a smaller one: a batch whose own
 * append fails with PMQ_ERR_NOSPC goes back to the head of the queue, and
 * the partition appends one publish per batch ("split") until an append
 * succeeds again.  While the partition drains after a failed append
 * (fail_err), its publishes wait for the resync instead of failing. */

/* A batch stays below Kafka's default message.max.bytes (1 MiB) so that
 * any Kafka consumer can fetch it. */
#define PEND_MAX_MSGS 4096
#define PEND_MAX_BYTES (900u * 1024)

static void pend_flush(struct partition *p);

static void
pend_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	while (pend_list != NULL) {
		struct partition *p = pend_list;

		pend_list = p->pend_next;
		p->pend_next = NULL;
		p->pend_listed = 0;
		pend_flush(p);
		logs_topic_unref(p->t); /* the list's */
	}
}

/* Have p's queue flushed at the end of this loop turn. */
static void
pend_schedule(struct partition *p)
{
	if (p->pend_listed || pend_ev == NULL)
		return;
	p->pend_listed = 1;
	p->pend_next = pend_list;
	pend_list = p;
	logs_topic_ref(p->t); /* p lives in its topic */
	event_active(pend_ev, EV_TIMEOUT, 0);
}

/* Room for n more entries in p's queue.  PMQ_OK or PMQ_ERR_NOMEM. */
static int
pend_grow(struct partition *p, uint32_t n)
{
	uint32_t nc = p->cap_pend ? p->cap_pend : 16;
	struct pend *np;

	if (p->n_pend + n <= p->cap_pend)
		return PMQ_OK;
	while (nc < p->n_pend + n)
		nc *= 2;
	np = realloc(p->pend, nc * sizeof *np);
	if (np == NULL)
		return PMQ_ERR_NOMEM;
	p->pend = np;
	p->cap_pend = nc;
	return PMQ_OK;
}

/* Queue m for p's batch of this turn.  PMQ_OK, PMQ_ERR_NOMEM, or
 * PMQ_ERR_AGAIN when a draining partition already holds a batch's worth
 * (the bound of a queue that cannot leave yet). */
static int
pend_push(struct partition *p, const pmq_msg *m, pmq_publish_fn done,
    void *arg, size_t bytes)
{
	if (pend_ev == NULL)
		return PMQ_ERR_CLOSED;
	if (p->fail_err != 0 && p->n_pend >= PEND_MAX_MSGS)
		return PMQ_ERR_AGAIN;
	if (pend_grow(p, 1) != PMQ_OK)
		return PMQ_ERR_NOMEM;
	/* The host's publish keeps m alive only for its call. */
	p->pend[p->n_pend].m = msg_ref((pmq_msg *)m);
	p->pend[p->n_pend].done = done;
	p->pend[p->n_pend].arg = arg;
	p->n_pend++;
	p->pend_bytes += bytes;
	pend_schedule(p);
	if (p->n_pend >= PEND_MAX_MSGS || p->pend_bytes >= PEND_MAX_BYTES)
		pend_flush(p);
	return PMQ_OK;
}

/* The publishes of a batch whose own append found the storage full go
 * back to the queue, ahead of everything queued after them but behind
 * those of batches that failed before (completions come in order).
 * Takes over pubs (and their message references). */
static int
pend_requeue(struct partition *p, struct pend *pubs, uint32_t n)
{
	if (pend_grow(p, n) != PMQ_OK)
		return PMQ_ERR_NOMEM;
	memmove(p->pend + p->n_retry + n, p->pend + p->n_retry,
	    (p->n_pend - p->n_retry) * sizeof *p->pend);
	memcpy(p->pend + p->n_retry, pubs, n * sizeof *pubs);
	p->n_pend += n;
	p->n_retry += n;
	free(pubs);
	p->split = 1;
	pend_schedule(p);
	return PMQ_OK;
}

/* Tell each publisher of pubs[0..n) now (no memory for an op, or
 * shutdown) and drop their message references; pubs stays the caller's. */
static void
pend_fail_now(struct pend *pubs, uint32_t n, int status)
{
	struct pmq_publish_result r = {.size = sizeof r, .partition = -1,
	    .offset = -1};
	uint32_t i;

	for (i = 0; i < n; i++) {
		msg_unref(pubs[i].m);
		if (pubs[i].done != NULL)
			pubs[i].done(pubs[i].arg, status, &r);
	}
}

/* Append pubs[0..n) (taken over) as one batch.  Every publisher's done
 * runs later, from the completion, also when this fails. */
static void
pend_submit(struct partition *p, struct pend *pubs, uint32_t n)
{
	struct pmq_msg_fields *f = calloc(n, sizeof *f);
	const struct pmq_msg_fields **fp = calloc(n, sizeof *fp);
	struct op *op = logs_op_new(OP_PUBLISH, p->t, p, NULL);
	void *buf = NULL;
	size_t len = 0;
	uint32_t i;
	int rc = PMQ_ERR_NOMEM;

	if (op != NULL && f != NULL && fp != NULL) {
		for (i = 0; i < n; i++) {
			f[i].size = sizeof f[i];
			msg_fields(pubs[i].m, &f[i]);
			fp[i] = &f[i];
		}
		rc = batch_build(fp, n, 0, &buf, &len);
	}
	free(f);
	free(fp);
	if (op == NULL) {
		free(buf);
		pend_fail_now(pubs, n, PMQ_ERR_NOMEM);
		free(pubs);
		return;
	}
	op->pubs = pubs; /* messages kept until the op ends: a retry */
	op->n_pubs = n;
	if (rc == PMQ_OK)
		rc = p->t->deleting ? PMQ_ERR_NOTFOUND :
		    logs_part_append(p, buf, len, op);
	free(buf);
	if (rc != PMQ_OK) {
		/* Answer on a later turn, as a failed append would. */
		op->status = rc;
		op->base = -1;
		if (logs_post(op) != PMQ_OK)
			logs_op_complete(op, rc, 0, NULL, 0); /* frees op */
	}
}

/* Append p's waiting publishes: one batch, or one per publish while
 * split.  A partition draining after a failed append keeps them until its
 * resync (logs_append_finish schedules the flush again). */
static void
pend_flush(struct partition *p)
{
	struct pend *pubs = p->pend, *one;
	uint32_t n = p->n_pend, i;

	if (n == 0 || p->fail_err != 0)
		return;
	p->pend = NULL;
	p->n_pend = p->cap_pend = p->n_retry = 0;
	p->pend_bytes = 0;
	if (!p->split) {
		pend_submit(p, pubs, n);
		return;
	}
	for (i = 0; i < n; i++) {
		one = malloc(sizeof *one);
		if (one == NULL) {
			pend_fail_now(pubs + i, 1, PMQ_ERR_NOMEM);
			continue;
		}
		*one = pubs[i];
		pend_submit(p, one, 1);
	}
	free(pubs);
}

int
logs_append_msg(const pmq_msg *m, pmq_publish_fn done, void *arg)
{
	struct pmq_msg_fields f = {.size = sizeof f};
	const struct rule *r;
	struct topic *t;
	struct partition *p;
	const void *key;
	size_t key_len;
	int rc;

	if (closing || !initialized)
		return PMQ_ERR_CLOSED;
	if (m == NULL)
		return PMQ_ERR_INVAL;
	msg_fields(m, &f);
	if (f.topic == NULL)
		return PMQ_ERR_NOTFOUND;
	r = logs_rule_find(f.topic); /* msg topics are NUL-terminated */
	if (r == NULL)
		return PMQ_ERR_NOTFOUND;
	t = logs_table_find(r->log);
	if (t == NULL) {
		rc = logs_create(r->log, &r->cfg, NULL, NULL);
		if (rc != PMQ_OK) {
			log_error("%s: log %s for %s not created (%d)",
			    __func__, r->log, f.topic, rc);
			return rc;
		}
		t = logs_table_find(r->log);
	} else if (t->deleting) {
		return PMQ_ERR_AGAIN;
	}
	/* Hash what batch_build writes as the record key, as Kafka's
	 * default partitioner does. */
	if (f.has_key) {
		key = f.key;
		key_len = f.key_len;
	} else {
		key = f.topic;
		key_len = f.topic_len;
	}
	p = &t->parts[logs_partition_for_key(key, key_len,
	    t->cfg.partitions)];
	return pend_push(p, m, done, arg,
	    f.topic_len + f.payload_len + f.key_len + 64);
}

/* ---- start and stop ---- */

struct meta_entry {
	char *name;
	struct pmq_topic_config cfg;
};

struct meta_scan {
	struct meta_entry *v;
	size_t n, cap;
	int err;
};

/* kv_scan callback: collect, since opening logs inside a scan could
 * re-enter the storage. */
static int
logs_meta_collect(void *arg, const void *key, size_t key_len,
    const void *val, size_t val_len)
{
	struct meta_scan *ms = arg;
	struct meta_entry e;

	if (logs_meta_decode(val, val_len, &e.cfg) != PMQ_OK ||
	    !logs_config_ok(&e.cfg)) {
		log_error("%s: metadata of log topic %.*s is unreadable; "
		    "topic skipped", __func__, (int)(key_len > 200 ? 200 :
		    key_len), (const char *)key);
		return 0;
	}
	e.name = malloc(key_len + 1);
	if (e.name == NULL) {
		ms->err = PMQ_ERR_NOMEM;
		return 1;
	}
	memcpy(e.name, key, key_len);
	e.name[key_len] = '\0';
	if (strlen(e.name) != key_len || !logs_name_ok(e.name)) {
		log_error("%s: log topic name %s in metadata is invalid; "
		    "skipped", __func__, e.name);
		free(e.name);
		return 0;
	}
	if (ms->n == ms->cap) {
		size_t ncap = ms->cap ? ms->cap * 2 : 16;
		struct meta_entry *nv = realloc(ms->v, ncap * sizeof *nv);

		if (nv == NULL) {
			free(e.name);
			ms->err = PMQ_ERR_NOMEM;
			return 1;
		}
		ms->v = nv;
		ms->cap = ncap;
	}
	ms->v[ms->n++] = e;
	return 0;
}

static void
logs_rules_free(void)
{
	size_t i;

	for (i = 0; i < n_rules; i++) {
		free(rules[i].match);
		free(rules[i].log);
	}
	free(rules);
	rules = NULL;
	n_rules = 0;
}

static int
logs_rules_copy(const struct config_rule *cr, size_t n)
{
	size_t i;

	if (n == 0)
		return PMQ_OK;
	rules = calloc(n, sizeof *rules);
	if (rules == NULL)
		return PMQ_ERR_NOMEM;
	for (i = 0; i < n; i++) {
		struct rule *r = &rules[i];

		n_rules = i + 1;
		r->match = strdup(cr[i].match != NULL ? cr[i].match : "");
		r->log = strdup(cr[i].log != NULL ? cr[i].log : cr[i].name);
		if (r->match == NULL || r->log == NULL)
			return PMQ_ERR_NOMEM;
		r->cfg.size = sizeof r->cfg;
		r->cfg.partitions = cr[i].partitions > 0 ? cr[i].partitions : 1;
		r->cfg.retention_ms = cr[i].retention_ms;
		r->cfg.retention_bytes = cr[i].retention_bytes;
		if (!logs_name_ok(r->log) || !logs_config_ok(&r->cfg)) {
			log_error("%s: rule %s (line %d): log %s or its "
			    "settings are not usable", __func__, cr[i].name,
			    cr[i].line, r->log);
			return PMQ_ERR_CONFIG;
		}
	}
	return PMQ_OK;
}

int
logs_init(const struct config_rule *cr, size_t n)
{
	struct storage *s = stor();
	struct meta_scan ms = {0};
	struct timeval tv = {LOGS_RETENTION_INTERVAL_MS / 1000,
	    (LOGS_RETENTION_INTERVAL_MS % 1000) * 1000};
	size_t i;
	int rc;

	if (s == NULL || s->ops == NULL || daemon_base() == NULL)
		return PMQ_ERR_INVAL;
	if (initialized)
		logs_shutdown();
	closing = 0;
	rc = logs_rules_copy(cr, n);
	if (rc != PMQ_OK) {
		logs_rules_free();
		return rc;
	}
	rc = s->ops->kv_scan(s->st, LOGS_META_NS, "", 0, logs_meta_collect,
	    &ms);
	if (rc == PMQ_OK)
		rc = ms.err;
	if (rc != PMQ_OK)
		log_error("%s: reading log topics failed (%d)", __func__, rc);
	for (i = 0; i < ms.n; i++) {
		struct topic *t;
		int err;

		if (rc == PMQ_OK && logs_table_find(ms.v[i].name) == NULL) {
			t = logs_topic_open(ms.v[i].name, &ms.v[i].cfg, &err);
			if (t == NULL)
				log_error("%s: log topic %s skipped", __func__,
				    ms.v[i].name);
			else if (logs_table_insert(t) != PMQ_OK) {
				logs_topic_unref(t);
				rc = PMQ_ERR_NOMEM;
			}
		}
		free(ms.v[i].name);
	}
	free(ms.v);
	if (rc == PMQ_OK) {
		pend_ev = event_new(daemon_base(), -1, 0, pend_cb, NULL);
		if (pend_ev == NULL)
			rc = PMQ_ERR_NOMEM;
	}
	if (rc == PMQ_OK) {
		retention_ev = event_new(daemon_base(), -1, EV_PERSIST,
		    logs_retention_cb, NULL);
		if (retention_ev == NULL ||
		    event_add(retention_ev, &tv) != 0)
			rc = PMQ_ERR_NOMEM;
	}
	initialized = 1;
	if (rc != PMQ_OK) {
		logs_shutdown();
		return rc;
	}
	log_info("logs: %zu log topics, %zu topic rules", n_topics, n_rules);
	return PMQ_OK;
}

void
logs_shutdown(void)
{
	struct timespec ts = {0, 1000000};
	int64_t deadline;

	if (!initialized)
		return;
	/* Publishes of this turn go to the storage like those before them
	 * (and are drained below). */
	pend_cb(-1, 0, NULL);
	if (pend_ev != NULL)
		event_free(pend_ev);
	pend_ev = NULL;
	closing = 1;
	if (retention_ev != NULL)
		event_free(retention_ev);
	retention_ev = NULL;
	/* Waiters first: nothing more will wake them. */
	while (all_waiters != NULL) {
		struct pmq_waiter *w = all_waiters;
		int status = w->fired ? w->status : PMQ_ERR_CANCELED;
		pmq_done_fn wake = w->wake;
		void *warg = w->arg;

		logs_waiter_free(w);
		wake(warg, status);
	}
	/* Pending operations hold topics and their handles: let the
	 * storage finish them (it always completes every io). */
	deadline = util_monotonic_ms() + LOGS_DRAIN_MS;
	while (pending > 0 && util_monotonic_ms() < deadline)
		if (storage_io_run() == 0)
			nanosleep(&ts, NULL);
	if (pending > 0)
		log_error("%s: %zu storage operations still pending; their "
		    "topics are leaked", __func__, pending);
	/* Publishes a draining partition still held: they cannot be
	 * stored now. */
	for (size_t i = 0; i < n_topics; i++)
		for (int32_t j = 0; j < topics[i]->cfg.partitions; j++) {
			struct partition *p = &topics[i]->parts[j];

			pend_fail_now(p->pend, p->n_pend, PMQ_ERR_CLOSED);
			free(p->pend);
			p->pend = NULL;
			p->n_pend = p->cap_pend = p->n_retry = 0;
		}
	while (n_topics > 0) {
		struct topic *t = topics[n_topics - 1];

		n_topics--;
		logs_topic_unref(t);
	}
	free(topics);
	topics = NULL;
	n_topics = cap_topics = 0;
	logs_rules_free();
	initialized = 0;
}
