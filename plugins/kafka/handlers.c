/*
 * handlers.c - the kafka plugin's log and topic APIs: ApiVersions,
 * Metadata (with auto-creation), Produce (acks 0/1/all, idempotent
 * producer sequence checks with state rebuilt from the log after a
 * restart, live delivery of produced records to MQTT subscribers), Fetch
 * (long poll through log_wait), ListOffsets, CreateTopics, DeleteTopics
 * and InitProducerId.  Field orders follow Kafka's *Response.json for
 * each version we advertise (codec.c).
 *
 * Every handler finishes its request exactly once, with kreq_reply() or
 * kreq_drop(), either at once or from the last host completion it waits
 * for.  Completions check kreq_alive(): after conn_closed they only
 * release what they hold.
 *
 * Threads: the host's loop thread only (plexmq/host.h).
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"

#define api kafka_api

/* Fields of a RecordBatch v2 header (Kafka's DefaultRecordBatch). */
#define RB_LENGTH 8
#define RB_MAGIC 16
#define RB_ATTRIBUTES 21
#define RB_LAST_OFFSET_DELTA 23
#define RB_PRODUCER_ID 43
#define RB_PRODUCER_EPOCH 51
#define RB_BASE_SEQUENCE 53
#define RB_RECORDS_COUNT 57
#define RB_HEADER_SIZE 61
#define RB_ATTR_CODEC 0x07
#define RB_ATTR_CONTROL 0x20
#define RB_CODEC_ZSTD 4

/* Idempotent producers: Kafka keeps the last 5 batches per partition. */
#define KP_WINDOW 5
#define KP_BUCKETS 256

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Errors from the host's log calls as Kafka error codes. */
static int16_t
kerr_of(int rc)
{
	switch (rc) {
	case PMQ_OK: return KE_NONE;
	case PMQ_ERR_NOTFOUND: return KE_UNKNOWN_TOPIC_OR_PARTITION;
	case PMQ_ERR_RANGE: return KE_OFFSET_OUT_OF_RANGE;
	case PMQ_ERR_CORRUPT: return KE_CORRUPT_MESSAGE;
	case PMQ_ERR_INVAL: return KE_INVALID_RECORD;
	case PMQ_ERR_LIMIT: return KE_MESSAGE_TOO_LARGE;
	/* Retriable: the client tries again. */
	case PMQ_ERR_NOSPC:
	case PMQ_ERR_IO:
	case PMQ_ERR_AGAIN:
	case PMQ_ERR_CLOSED:
	case PMQ_ERR_CANCELED: return KE_KAFKA_STORAGE_ERROR;
	default: return KE_UNKNOWN_SERVER_ERROR;
	}
}

static void
noop_done(void *arg, int status)
{
	(void)arg;
	(void)status;
}

/* ---- ApiVersions ---- */

void
kh_api_versions(struct kreq *r)
{
	struct kc_writer *w = &r->w;
	size_t n, i;
	const struct kc_api *a = kc_apis(&n);

	kc_w_i16(w, KE_NONE);
	kc_w_array(w, (int32_t)n);
	for (i = 0; i < n; i++) {
		kc_w_i16(w, a[i].key);
		kc_w_i16(w, a[i].min);
		kc_w_i16(w, a[i].max);
		kc_w_tags(w);
	}
	if (r->q.api_version >= 1)
		kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_tags(w);
	kreq_reply(r);
}

/* ---- Metadata ---- */

static void
md_partitions(struct kc_writer *w, int16_t v, int32_t n)
{
	int32_t i;

	kc_w_array(w, n);
	for (i = 0; i < n; i++) {
		kc_w_i16(w, KE_NONE);
		kc_w_i32(w, i);
		kc_w_i32(w, 0); /* leader: us */
		if (v >= 7)
			kc_w_i32(w, 0); /* leader_epoch */
		kc_w_array(w, 1); /* replicas */
		kc_w_i32(w, 0);
		kc_w_array(w, 1); /* isr */
		kc_w_i32(w, 0);
		if (v >= 5)
			kc_w_array(w, 0); /* offline */
	}
}

static void
md_topic(struct kc_writer *w, int16_t v, int16_t err, const char *name,
         int32_t partitions)
{
	kc_w_i16(w, err);
	kc_w_str(w, name);
	if (v >= 1)
		kc_w_i8(w, 0); /* is_internal */
	md_partitions(w, v, partitions);
	if (v >= 8)
		kc_w_i32(w, INT32_MIN); /* topic_authorized_operations */
}

struct md_all {
	struct kc_writer *w;
	int16_t v;
	int32_t n;
};

static void
md_all_cb(void *arg, const char *topic, const struct pmq_topic_config *cfg)
{
	struct md_all *m = arg;

	m->n++;
	if (m->w != NULL)
		md_topic(m->w, m->v, KE_NONE, topic, cfg->partitions);
}

/* A topic the client asked for and we lack: create it when allowed. */
static int16_t
md_autocreate(struct kreq *r, const char *name, int32_t *partitions)
{
	struct pmq_topic_config cfg = { .size = sizeof cfg };
	int rc;

	if (!r->l->auto_create || !r->q.allow_auto_create)
		return KE_UNKNOWN_TOPIC_OR_PARTITION;
	if (!kc_topic_name_valid(name))
		return KE_INVALID_TOPIC_EXCEPTION;
	cfg.partitions = r->l->default_partitions;
	cfg.retention_ms = -1;
	cfg.retention_bytes = -1;
	rc = api->log_create(name, &cfg, noop_done, NULL);
	if (rc == PMQ_ERR_AGAIN)
		return KE_LEADER_NOT_AVAILABLE; /* being deleted: retry */
	if (rc != PMQ_OK && rc != PMQ_ERR_EXISTS)
		return rc == PMQ_ERR_INVAL ? KE_INVALID_TOPIC_EXCEPTION :
		                             KE_UNKNOWN_SERVER_ERROR;
	api->log(r->l->inst, PMQ_LOG_INFO, "auto-created topic %s with %d "
	         "partitions", name, (int)cfg.partitions);
	/* The log layer serves the topic at once; its metadata becomes
	 * durable shortly after. */
	*partitions = cfg.partitions;
	return KE_NONE;
}

void
kh_metadata(struct kreq *r)
{
	struct kc_writer *w = &r->w;
	const struct kc_request *q = &r->q;
	int16_t v = q->api_version;
	int32_t i;

	if (v >= 3)
		kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_array(w, 1);
	kc_w_i32(w, 0); /* node_id */
	kreq_write_broker(r);
	if (v >= 1)
		kc_w_str(w, NULL); /* rack */
	if (v >= 2)
		kc_w_str(w, "plexmq"); /* cluster_id */
	if (v >= 1)
		kc_w_i32(w, 0); /* controller_id: the broker listed above */
	if (q->n_topics < 0) {
		struct md_all m = { NULL, v, 0 };

		api->log_topics(md_all_cb, &m); /* count */
		kc_w_array(w, m.n);
		m.w = w;
		m.n = 0;
		api->log_topics(md_all_cb, &m);
	} else {
		kc_w_array(w, q->n_topics);
		for (i = 0; i < q->n_topics; i++) {
			struct pmq_topic_config cfg = { .size = sizeof cfg };
			const char *name = q->topics[i].name;
			int32_t parts = 0;
			int16_t err = KE_NONE;

			if (api->log_topic(name, &cfg) == PMQ_OK)
				parts = cfg.partitions;
			else
				err = md_autocreate(r, name, &parts);
			md_topic(w, v, err, name, err == KE_NONE ? parts : 0);
		}
	}
	if (v >= 8)
		kc_w_i32(w, INT32_MIN); /* cluster_authorized_operations */
	kreq_reply(r);
}

/* ---- idempotent producers ---- */

/*
 * Kafka keeps, for each (producer id, partition), the sequence numbers of
 * the last 5 batches, and rebuilds them from its log after a restart.  So
 * do we, lazily: the first batch of a producer id handed out before this
 * start (pid < kpids.boot_base) to a partition not yet rebuilt holds back
 * Produce requests (all of them, in arrival order: the gate) while the
 * partition's tail is read backwards, up to KP_SCAN_MAX_BYTES, and every
 * such producer's newest batches in it are taken into the state.  Batches
 * of ids handed out since the start are all in memory already.
 *
 * Producer ids are never handed out twice: the highest id reserved is
 * stored in the key-value namespace "kafka.producers" before any id below
 * it is answered, KP_PID_BLOCK at a time.
 */

#define KP_PIDS_NS "kafka.producers"
#define KP_PIDS_KEY "pid_limit"
#define KP_PID_BLOCK 1024
/* How far back a partition's log is read for producer state. */
#define KP_SCAN_MAX_BYTES ((uint64_t)64 * 1024 * 1024)
#define KP_SCAN_READ_BYTES ((size_t)256 * 1024)
#define KP_SCAN_FIRST_STEP 16 /* offsets of the newest region */

struct kp_batch {
	int32_t first, last; /* sequence numbers */
	int64_t base;        /* offset once durable, -1 in flight */
};

/* State of one (producer id, topic, partition). */
struct kp_entry {
	struct kp_entry *next;
	int64_t pid;
	int16_t epoch;
	uint8_t rebuilding;            /* 1 open, 2 complete, during a scan */
	int32_t partition;
	int32_t last_seq;
	int n;                         /* batches in window */
	struct kp_batch win[KP_WINDOW]; /* newest last */
	char topic[];
};

/* Whether a partition's log has been read for older producers' state. */
enum { KP_PART_SCANNING = 1, KP_PART_DONE, KP_PART_FAILED };

struct kp_part {
	struct kp_part *next;
	int state;
	int32_t partition;
	char topic[];
};

struct kproducers {
	struct kafka_listener *l;
	struct kp_entry *b[KP_BUCKETS];
	struct kp_part *parts[KP_BUCKETS];
	struct kreq *gate_head, *gate_tail; /* Produce waiting on scans */
};

/* Producer ids, shared by every kafka listener of the process. */
static struct {
	int refs;
	int64_t next;      /* next id to hand out */
	int64_t limit;     /* ids below it are reserved durably */
	int64_t boot_base; /* ids below it were handed out before this start */
	int64_t put_limit; /* the reservation being stored */
	int putting;
	struct kreq *head, *tail; /* InitProducerId waiting for a reservation */
} kpids;

static uint32_t
kp_hash(uint32_t h, const char *topic, int32_t part)
{
	const char *c;

	h ^= (uint32_t)part;
	for (c = topic; *c != '\0'; c++)
		h = h * 31 + (unsigned char)*c;
	return h;
}

static void
kpids_load(struct kafka_listener *l)
{
	void *val = NULL;
	size_t len = 0;
	int64_t stored = 0, clock = api->now_ms() * 1000;
	int rc;

	rc = api->kv_get(KP_PIDS_NS, KP_PIDS_KEY, strlen(KP_PIDS_KEY), &val,
	                 &len);
	if (rc == PMQ_OK && len == 9 && ((uint8_t *)val)[0] == 1)
		stored = (int64_t)be64((uint8_t *)val + 1);
	else if (rc != PMQ_ERR_NOTFOUND)
		api->log(l->inst, PMQ_LOG_WARN, "%s: producer id reservation "
		         "unreadable (%s): ids start from the clock",
		         KP_PIDS_NS, rc == PMQ_OK ? "bad value" :
		         api->strerror(rc));
	api->free(val);
	/* The clock as well: ids stay large and unique even when the
	 * storage forgets (memory storage, lost data_dir). */
	kpids.next = stored > clock ? stored : clock;
	kpids.limit = kpids.next;
	kpids.boot_base = kpids.next;
}

struct kproducers *
kp_new(struct kafka_listener *l)
{
	struct kproducers *p = calloc(1, sizeof *p);

	if (p == NULL)
		return NULL;
	p->l = l;
	if (kpids.refs++ == 0)
		kpids_load(l);
	return p;
}

void
kp_free(struct kproducers *p)
{
	size_t i;

	if (p == NULL)
		return;
	/* Storage completions all ran before the listener goes (daemon.c
	 * teardown), so nothing waits here any more; be safe anyway. */
	while (p->gate_head != NULL) {
		struct kreq *r = p->gate_head;

		p->gate_head = r->qnext;
		kreq_drop(r);
	}
	for (i = 0; i < KP_BUCKETS; i++) {
		struct kp_entry *e = p->b[i], *next;
		struct kp_part *pt = p->parts[i], *pnext;

		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
		for (; pt != NULL; pt = pnext) {
			pnext = pt->next;
			free(pt);
		}
	}
	free(p);
	if (--kpids.refs == 0)
		while (kpids.head != NULL) {
			struct kreq *r = kpids.head;

			kpids.head = r->qnext;
			kreq_drop(r);
		}
}

static struct kp_entry **
kp_slot(struct kproducers *p, int64_t pid, const char *topic, int32_t part)
{
	uint32_t h = kp_hash((uint32_t)pid * 2654435761u, topic, part);
	struct kp_entry **ep;

	for (ep = &p->b[h % KP_BUCKETS]; *ep != NULL; ep = &(*ep)->next)
		if ((*ep)->pid == pid && (*ep)->partition == part &&
		    strcmp((*ep)->topic, topic) == 0)
			break;
	return ep;
}

static struct kp_part **
kp_part_slot(struct kproducers *p, const char *topic, int32_t part)
{
	uint32_t h = kp_hash(2166136261u, topic, part);
	struct kp_part **pp;

	for (pp = &p->parts[h % KP_BUCKETS]; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->partition == part &&
		    strcmp((*pp)->topic, topic) == 0)
			break;
	return pp;
}

static int
kp_part_state(struct kproducers *p, const char *topic, int32_t part)
{
	struct kp_part *pt = *kp_part_slot(p, topic, part);

	return pt != NULL ? pt->state : 0;
}

static void
kp_part_forget(struct kproducers *p, const char *topic, int32_t part)
{
	struct kp_part **pp = kp_part_slot(p, topic, part), *pt = *pp;

	if (pt != NULL) {
		*pp = pt->next;
		free(pt);
	}
}

/* A deleted topic: its producers' state goes with it (a scan in progress
 * finishes on its own). */
static void
kp_forget_topic(struct kproducers *p, const char *topic)
{
	size_t i;

	for (i = 0; i < KP_BUCKETS; i++) {
		struct kp_entry **ep = &p->b[i];
		struct kp_part **pp = &p->parts[i];

		while (*ep != NULL) {
			struct kp_entry *e = *ep;

			if (strcmp(e->topic, topic) == 0 && !e->rebuilding) {
				*ep = e->next;
				free(e);
			} else {
				ep = &e->next;
			}
		}
		while (*pp != NULL) {
			struct kp_part *pt = *pp;

			if (strcmp(pt->topic, topic) == 0 &&
			    pt->state != KP_PART_SCANNING) {
				*pp = pt->next;
				free(pt);
			} else {
				pp = &pt->next;
			}
		}
	}
}

static int32_t
seq_add(int32_t seq, int32_t n)
{
	/* Kafka's sequences wrap from INT32_MAX to 0. */
	return (int32_t)(((int64_t)seq + n) % ((int64_t)INT32_MAX + 1));
}

/* ---- rebuilding from the log ---- */

/* An idempotent batch found in the log. */
struct kp_found {
	int64_t pid, base;
	int32_t first, last;
	int16_t epoch;
};

/*
 * The log is read backwards by regions of offsets [lo, hi), each read
 * forwards; a batch belongs to the region of its base offset.  Each region
 * is 4 times the one after it, from KP_SCAN_FIRST_STEP offsets.
 */
struct kp_scan {
	struct kproducers *p;
	struct kp_part *pt;
	int64_t floor;  /* the log start */
	int64_t lo, hi; /* the region */
	int64_t pos;    /* next offset to read */
	int64_t step;
	uint64_t bytes; /* read so far */
	struct kp_found *f; /* the region's batches, in log order */
	size_t n, cap;
};

static void kp_gate_drain(struct kproducers *p);
static int kp_scan_read(struct kp_scan *s);

/* Take one batch, newest first, into its producer's window. */
static int
kp_scan_add(struct kproducers *p, const char *topic, int32_t part,
            const struct kp_found *f)
{
	struct kp_entry **ep = kp_slot(p, f->pid, topic, part), *e = *ep;

	if (e == NULL) {
		e = calloc(1, sizeof *e + strlen(topic) + 1);
		if (e == NULL)
			return -1;
		e->pid = f->pid;
		e->epoch = f->epoch;
		e->partition = part;
		e->rebuilding = 1;
		strcpy(e->topic, topic);
		e->n = 1;
		e->win[0].first = f->first;
		e->win[0].last = f->last;
		e->win[0].base = f->base;
		e->last_seq = f->last;
		*ep = e;
		return 0;
	}
	if (e->rebuilding != 1)
		return 0;
	/* Only the newest epoch, contiguous sequences, 5 batches. */
	if (f->epoch != e->epoch || e->n == KP_WINDOW ||
	    f->last != seq_add(e->win[0].first, INT32_MAX)) {
		e->rebuilding = 2;
		return 0;
	}
	memmove(e->win + 1, e->win, (size_t)e->n * sizeof e->win[0]);
	e->win[0].first = f->first;
	e->win[0].last = f->last;
	e->win[0].base = f->base;
	e->n++;
	return 0;
}

/* Keep (ok) or drop what a scan of topic/part built. */
static void
kp_scan_settle(struct kproducers *p, const char *topic, int32_t part, int ok)
{
	size_t i;

	for (i = 0; i < KP_BUCKETS; i++) {
		struct kp_entry **ep = &p->b[i];

		while (*ep != NULL) {
			struct kp_entry *e = *ep;

			if (e->rebuilding && e->partition == part &&
			    strcmp(e->topic, topic) == 0) {
				if (!ok) {
					*ep = e->next;
					free(e);
					continue;
				}
				e->rebuilding = 0;
			}
			ep = &e->next;
		}
	}
}

/* The scan is over; from_cb: called from a completion, so requests held
 * back may go on now. */
static void
kp_scan_end(struct kp_scan *s, int rc, int from_cb)
{
	struct kproducers *p = s->p;
	struct kp_part *pt = s->pt;

	kp_scan_settle(p, pt->topic, pt->partition, rc == PMQ_OK);
	pt->state = rc == PMQ_OK ? KP_PART_DONE : KP_PART_FAILED;
	if (rc == PMQ_OK)
		api->log(p->l->inst, PMQ_LOG_DEBUG, "producer state of %s-%d "
		         "rebuilt from %" PRIu64 " bytes of log", pt->topic,
		         (int)pt->partition, s->bytes);
	else
		api->log(p->l->inst, PMQ_LOG_WARN, "producer state of %s-%d "
		         "not rebuilt: %s", pt->topic, (int)pt->partition,
		         api->strerror(rc));
	free(s->f);
	free(s);
	if (from_cb)
		kp_gate_drain(p);
}

/* Start reading the region below s->hi.  Returns PMQ_OK or an error
 * (the scan is then to be ended). */
static int
kp_scan_region(struct kp_scan *s)
{
	s->lo = s->hi - s->step > s->floor ? s->hi - s->step : s->floor;
	s->pos = s->lo;
	s->n = 0;
	return kp_scan_read(s);
}

/* The region is read: its batches, newest first, into the state; then
 * the next region, or the end.  Returns PMQ_OK while reading on, 1 when
 * done, or an error. */
static int
kp_scan_next(struct kp_scan *s)
{
	size_t i;

	for (i = s->n; i > 0; i--)
		if (kp_scan_add(s->p, s->pt->topic, s->pt->partition,
		                &s->f[i - 1]) != 0)
			return PMQ_ERR_NOMEM;
	if (s->lo <= s->floor || s->bytes >= KP_SCAN_MAX_BYTES)
		return 1;
	s->hi = s->lo;
	if (s->step < INT64_MAX / 8)
		s->step *= 4;
	return kp_scan_region(s);
}

static void
kp_scan_read_done(void *arg, int status, const void *data, size_t len,
                  const struct pmq_log_offsets *offs)
{
	struct kp_scan *s = arg;
	const uint8_t *d = data;
	size_t o = 0;
	int64_t next = s->pos;
	int region_end = 0, rc;

	(void)offs;
	if (status == PMQ_ERR_RANGE) {
		/* Retention removed the start of what we read: go on from
		 * the new log start. */
		struct pmq_log_offsets now = { .size = sizeof now };

		rc = api->log_offsets(s->pt->topic, s->pt->partition, &now);
		if (rc == PMQ_OK && now.log_start > s->pos) {
			s->floor = now.log_start;
			if (s->lo < s->floor)
				s->lo = s->floor;
			if (s->hi <= s->floor) {
				kp_scan_end(s, PMQ_OK, 1);
				return;
			}
			s->pos = s->floor;
			s->n = 0; /* the region again, from the new start */
			rc = kp_scan_read(s);
		} else if (rc == PMQ_OK) {
			rc = PMQ_ERR_RANGE;
		}
		if (rc != PMQ_OK)
			kp_scan_end(s, rc, 1);
		return;
	}
	if (status != PMQ_OK) {
		kp_scan_end(s, status, 1);
		return;
	}
	while (len - o >= RB_HEADER_SIZE) {
		const uint8_t *b = d + o;
		uint32_t bl = be32(b + RB_LENGTH);
		int64_t base = (int64_t)be64(b);
		int64_t pid = (int64_t)be64(b + RB_PRODUCER_ID);
		int32_t seq = (int32_t)be32(b + RB_BASE_SEQUENCE);
		int32_t delta = (int32_t)be32(b + RB_LAST_OFFSET_DELTA);
		uint16_t attrs = (uint16_t)(b[RB_ATTRIBUTES] << 8 |
		                            b[RB_ATTRIBUTES + 1]);

		if (bl < RB_HEADER_SIZE - 12 || bl > len - o - 12)
			break; /* a cut batch: read on from it */
		if (base >= s->hi) {
			region_end = 1;
			break;
		}
		if ((base >= s->lo || s->lo <= s->floor) && b[RB_MAGIC] == 2 &&
		    pid >= 0 && pid < kpids.boot_base && seq >= 0 &&
		    delta >= 0 && !(attrs & RB_ATTR_CONTROL)) {
			if (s->n == s->cap) {
				size_t cap = s->cap ? s->cap * 2 : 64;
				struct kp_found *f = realloc(s->f, cap *
				                             sizeof *f);

				if (f == NULL) {
					kp_scan_end(s, PMQ_ERR_NOMEM, 1);
					return;
				}
				s->f = f;
				s->cap = cap;
			}
			s->f[s->n].pid = pid;
			s->f[s->n].base = base;
			s->f[s->n].first = seq;
			s->f[s->n].last = seq_add(seq, delta);
			s->f[s->n].epoch = (int16_t)(b[RB_PRODUCER_EPOCH] << 8 |
			                             b[RB_PRODUCER_EPOCH + 1]);
			s->n++;
		}
		if (delta >= 0 && base + delta + 1 > next)
			next = base + delta + 1;
		s->bytes += 12 + (size_t)bl;
		o += 12 + (size_t)bl;
	}
	if (!region_end) {
		if (len == 0 || next >= s->hi) {
			region_end = 1;
		} else if (next <= s->pos) {
			/* No whole batch and no progress: do not loop. */
			kp_scan_end(s, PMQ_ERR_CORRUPT, 1);
			return;
		}
	}
	if (region_end) {
		rc = kp_scan_next(s);
		if (rc != PMQ_OK)
			kp_scan_end(s, rc == 1 ? PMQ_OK : rc, 1);
		return;
	}
	s->pos = next;
	rc = kp_scan_read(s);
	if (rc != PMQ_OK)
		kp_scan_end(s, rc, 1);
}

static int
kp_scan_read(struct kp_scan *s)
{
	return api->log_read(s->pt->topic, s->pt->partition, s->pos,
	                     KP_SCAN_READ_BYTES, kp_scan_read_done, s);
}

/*
 * Start rebuilding the state of topic/part: KP_PART_SCANNING until a
 * completion ends it, or at once KP_PART_DONE (nothing stored),
 * KP_PART_FAILED, or 0 for a partition that does not exist.  Never
 * drains the gate itself.
 */
static int
kp_scan_start(struct kproducers *p, const char *topic, int32_t part)
{
	struct pmq_log_offsets offs = { .size = sizeof offs };
	struct kp_part **pp = kp_part_slot(p, topic, part), *pt = *pp;
	struct kp_scan *s;
	int rc;

	if (pt != NULL)
		return pt->state;
	if (api->log_offsets(topic, part, &offs) != PMQ_OK)
		return 0; /* Produce answers UNKNOWN_TOPIC_OR_PARTITION */
	pt = calloc(1, sizeof *pt + strlen(topic) + 1);
	if (pt == NULL)
		return 0; /* produce_batch answers KAFKA_STORAGE_ERROR */
	pt->partition = part;
	strcpy(pt->topic, topic);
	*pp = pt;
	/* Every batch of an older producer was stored before this start:
	 * below the high watermark. */
	if (offs.high_water <= offs.log_start) {
		pt->state = KP_PART_DONE;
		return pt->state;
	}
	s = calloc(1, sizeof *s);
	if (s == NULL) {
		pt->state = KP_PART_FAILED;
		return pt->state;
	}
	pt->state = KP_PART_SCANNING;
	s->p = p;
	s->pt = pt;
	s->floor = offs.log_start;
	s->hi = offs.high_water;
	s->step = KP_SCAN_FIRST_STEP;
	rc = kp_scan_region(s);
	if (rc != PMQ_OK)
		kp_scan_end(s, rc, 0);
	return pt->state;
}

/*
 * Does Produce request r have to wait for a scan?  With start, scans of
 * the partitions it needs begin.  A partition needs one when a batch of an
 * id handed out before this start goes to it and it was not read yet.
 */
static int
produce_needs_scan(struct kreq *r, int start)
{
	struct kproducers *p = r->l->producers;
	int32_t i, j;
	int wait = 0;

	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		for (j = 0; j < t->n_parts; j++) {
			const struct kc_part *kp = &t->parts[j];
			size_t pos = 0;

			while (kp->data != NULL &&
			       kp->data_len - pos >= RB_HEADER_SIZE) {
				const uint8_t *b = kp->data + pos;
				uint32_t bl = be32(b + RB_LENGTH);
				int64_t pid = (int64_t)be64(b + RB_PRODUCER_ID);
				int st;

				if (bl < RB_HEADER_SIZE - 12 ||
				    bl > kp->data_len - pos - 12)
					break;
				pos += 12 + (size_t)bl;
				if (pid < 0 || pid >= kpids.boot_base)
					continue;
				st = kp_part_state(p, t->name, kp->index);
				if (st == 0 && start)
					st = kp_scan_start(p, t->name,
					                   kp->index);
				if (st == KP_PART_SCANNING)
					wait = 1;
				break;
			}
		}
	}
	return wait;
}

static void produce_run(struct kreq *r);

/* Run the held-back Produce requests, in order, up to one that still
 * waits for a scan. */
static void
kp_gate_drain(struct kproducers *p)
{
	struct kreq *r;

	while ((r = p->gate_head) != NULL && !produce_needs_scan(r, 1)) {
		p->gate_head = r->qnext;
		if (p->gate_head == NULL)
			p->gate_tail = NULL;
		r->qnext = NULL;
		produce_run(r);
	}
}

/*
 * Check a batch of an idempotent producer and reserve its sequence
 * numbers.  Returns KE_NONE (append it), KE_DUPLICATE_SEQUENCE_NUMBER with
 * *dup_base set when it is a durable duplicate (answer success with that
 * offset, as Kafka does) or -1 while the original is in flight, or an
 * error.
 */
static int16_t
kp_check(struct kproducers *p, const char *topic, int32_t part, int64_t pid,
         int16_t epoch, int32_t first, int32_t count, int64_t *dup_base)
{
	struct kp_entry **ep, *e;
	int32_t last = seq_add(first, count - 1);
	int i;

	if (first < 0)
		return KE_INVALID_RECORD;
	if (pid < kpids.boot_base) {
		int st = kp_part_state(p, topic, part);

		if (st != KP_PART_DONE) {
			/* The log could not be read for its state (or the
			 * partition appeared meanwhile): the client retries,
			 * and the retry reads it again. */
			if (st == KP_PART_FAILED)
				kp_part_forget(p, topic, part);
			return KE_KAFKA_STORAGE_ERROR;
		}
	}
	ep = kp_slot(p, pid, topic, part);
	e = *ep;
	if (e == NULL) {
		/* First batch of this producer here: nothing of it is in
		 * the log (as far as KP_SCAN_MAX_BYTES back, for ids of
		 * before this start), so any sequence is accepted. */
		e = calloc(1, sizeof *e + strlen(topic) + 1);
		if (e == NULL)
			return KE_KAFKA_STORAGE_ERROR;
		e->pid = pid;
		e->epoch = epoch;
		e->partition = part;
		strcpy(e->topic, topic);
		*ep = e;
	} else if (epoch < e->epoch) {
		return KE_INVALID_PRODUCER_EPOCH;
	} else if (epoch > e->epoch) {
		if (first != 0)
			return KE_OUT_OF_ORDER_SEQUENCE_NUMBER;
		e->epoch = epoch;
		e->n = 0;
	} else {
		for (i = 0; i < e->n; i++)
			if (e->win[i].first == first &&
			    e->win[i].last == last) {
				*dup_base = e->win[i].base;
				return KE_DUPLICATE_SEQUENCE_NUMBER;
			}
		if (e->n > 0 && first != seq_add(e->last_seq, 1))
			return KE_OUT_OF_ORDER_SEQUENCE_NUMBER;
	}
	if (e->n == KP_WINDOW) {
		memmove(e->win, e->win + 1, (KP_WINDOW - 1) * sizeof e->win[0]);
		e->n--;
	}
	e->win[e->n].first = first;
	e->win[e->n].last = last;
	e->win[e->n].base = -1;
	e->n++;
	e->last_seq = last;
	return KE_NONE;
}

/* The append of a reserved batch finished: remember its offset, or
 * forget it on failure so that the producer's retry is not taken for a
 * duplicate. */
static void
kp_done(struct kproducers *p, const char *topic, int32_t part, int64_t pid,
        int32_t first, int ok, int64_t base)
{
	struct kp_entry *e;
	int i;

	if (p == NULL)
		return;
	e = *kp_slot(p, pid, topic, part);
	if (e == NULL)
		return;
	for (i = e->n - 1; i >= 0; i--) {
		if (e->win[i].first != first)
			continue;
		if (ok) {
			e->win[i].base = base;
		} else {
			/* Everything after it fails too (the log layer fails
			 * later appends in flight): drop the tail. */
			e->n = i;
			e->last_seq = seq_add(first, -1 + INT32_MAX + 1);
		}
		return;
	}
}

/* ---- InitProducerId ---- */

static void
pid_answer(struct kreq *r, int16_t err, int64_t pid)
{
	struct kc_writer *w = &r->w;

	kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_i16(w, err);
	kc_w_i64(w, pid);
	kc_w_i16(w, err == KE_NONE ? 0 : -1);
	kreq_reply(r);
}

static void kpids_pump(void);

/* Every waiting InitProducerId fails (retriable: the client asks again). */
static void
kpids_fail(int rc)
{
	struct kreq *r;

	if (kpids.head != NULL)
		api->log(kpids.head->l->inst, PMQ_LOG_WARN, "producer ids "
		         "not reserved: %s", api->strerror(rc));
	while ((r = kpids.head) != NULL) {
		kpids.head = r->qnext;
		if (kpids.head == NULL)
			kpids.tail = NULL;
		r->qnext = NULL;
		pid_answer(r, KE_COORDINATOR_NOT_AVAILABLE, -1);
	}
}

static void
kpids_put_done(void *arg, int status)
{
	(void)arg;
	kpids.putting = 0;
	if (status != PMQ_OK) {
		kpids_fail(status);
		return;
	}
	if (kpids.put_limit > kpids.limit)
		kpids.limit = kpids.put_limit;
	kpids_pump();
}

/* Answer waiting requests with reserved ids; reserve more when out. */
static void
kpids_pump(void)
{
	struct kreq *r;
	uint8_t val[9];
	int rc;

	while ((r = kpids.head) != NULL && kpids.next < kpids.limit) {
		kpids.head = r->qnext;
		if (kpids.head == NULL)
			kpids.tail = NULL;
		r->qnext = NULL;
		pid_answer(r, KE_NONE, kpids.next++);
	}
	if (kpids.head == NULL || kpids.putting)
		return;
	/* Stored before any id below it is answered: after a crash the
	 * next start hands out ids above it only. */
	kpids.put_limit = kpids.next + KP_PID_BLOCK;
	val[0] = 1; /* version */
	for (rc = 0; rc < 8; rc++)
		val[1 + rc] = (uint8_t)((uint64_t)kpids.put_limit >>
		                        (56 - 8 * rc));
	kpids.putting = 1;
	rc = api->kv_put(KP_PIDS_NS, KP_PIDS_KEY, strlen(KP_PIDS_KEY), val,
	                 sizeof val, kpids_put_done, NULL);
	if (rc != PMQ_OK) {
		kpids.putting = 0;
		kpids_fail(rc);
	}
}

void
kh_init_producer_id(struct kreq *r)
{
	if (r->q.transactional_id != NULL) {
		/* Transactions are not implemented (docs/kafka.md). */
		pid_answer(r, KE_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1);
		return;
	}
	r->qnext = NULL;
	if (kpids.tail != NULL)
		kpids.tail->qnext = r;
	else
		kpids.head = r;
	kpids.tail = r;
	kpids_pump();
}

/* ---- Kafka produce -> MQTT subscribers ---- */

static int
hdr_is(const struct pmq_header *h, const char *name)
{
	size_t n = strlen(name);

	return h->name_len == n && memcmp(h->name, name, n) == 0;
}

static int
hdr_digit(const struct pmq_header *h, int max)
{
	const char *v = h->value;

	if (v == NULL || h->value_len != 1 || v[0] < '0' || v[0] > '0' + max)
		return -1;
	return v[0] - '0';
}

struct to_mqtt {
	const char *ktopic;
	struct pmq_header *scratch;
	uint32_t cap;
	unsigned n_sent;
	int any_subs;   /* some subscription exists (has_subscribers) */
	int ktopic_subs; /* the Kafka topic's name has a subscriber: -1
	                  * until asked, once per batch */
};

/*
 * One produced record to live MQTT subscribers.  The mapping is the
 * reverse of the core's (docs/kafka.md "Kafka to MQTT"): the MQTT topic is
 * the "mqtt.topic" header, else the Kafka topic name; the "mqtt.*"
 * headers set QoS, retain and MQTT 5 properties; other headers become user
 * properties.  A record whose topic MQTT cannot carry is skipped.
 */
static int
to_mqtt_record(void *arg, const struct pmq_record *rec)
{
	struct to_mqtt *t = arg;
	struct pmq_msg_fields f = { .size = sizeof f };
	int seen_topic = 0, seen_qos = 0, seen_retain = 0, seen_pf = 0;
	int seen_ct = 0, seen_rt = 0, seen_cd = 0, d, rc;
	uint32_t i, n = 0;
	pmq_msg *m;
	char tbuf[256], *topic = NULL;

	if (rec->n_headers > t->cap) {
		struct pmq_header *s = realloc(t->scratch, rec->n_headers *
		                               sizeof *s);

		if (s == NULL)
			return 1;
		t->scratch = s;
		t->cap = rec->n_headers;
	}
	for (i = 0; i < rec->n_headers; i++) {
		const struct pmq_header *h = &rec->headers[i];

		if (!seen_topic && hdr_is(h, "mqtt.topic") && h->value) {
			seen_topic = 1;
			f.topic = h->value;
			f.topic_len = h->value_len;
		} else if (!seen_qos && hdr_is(h, "mqtt.qos") &&
		           (d = hdr_digit(h, 2)) >= 0) {
			seen_qos = 1;
			f.qos = (uint8_t)d;
		} else if (!seen_retain && hdr_is(h, "mqtt.retain") &&
		           (d = hdr_digit(h, 1)) >= 0) {
			seen_retain = 1;
			f.retain = (uint8_t)d;
		} else if (!seen_pf && hdr_is(h, "mqtt.payload_format") &&
		           (d = hdr_digit(h, 1)) >= 0) {
			seen_pf = 1;
			f.payload_format = (uint8_t)d;
		} else if (!seen_ct && hdr_is(h, "mqtt.content_type") &&
		           h->value) {
			seen_ct = 1;
			f.content_type = h->value;
			f.content_type_len = h->value_len;
		} else if (!seen_rt && hdr_is(h, "mqtt.response_topic") &&
		           h->value) {
			seen_rt = 1;
			f.response_topic = h->value;
			f.response_topic_len = h->value_len;
		} else if (!seen_cd && hdr_is(h, "mqtt.correlation_data") &&
		           h->value) {
			seen_cd = 1;
			f.correlation_data = h->value;
			f.correlation_data_len = h->value_len;
		} else {
			t->scratch[n++] = *h;
		}
	}
	/* Nobody to deliver to: skip building the message.  A retained one
	 * is still published, since it is stored for later subscribers. */
	if (!f.retain && !t->any_subs)
		return 0;
	if (f.topic == NULL) {
		if (!f.retain && t->ktopic_subs < 0)
			t->ktopic_subs = kafka_has_subs_api ?
			    api->has_subscribers(t->ktopic) != 0 : 1;
		if (!f.retain && t->ktopic_subs == 0)
			return 0;
		f.topic = t->ktopic;
		f.topic_len = strlen(t->ktopic);
	}
	/* The message wants a NUL-free topic; header values are bytes. */
	if (f.topic_len == 0 || memchr(f.topic, '\0', f.topic_len) != NULL)
		return 0;
	/* Most topics fit on the stack: no allocation per record. */
	topic = f.topic_len < sizeof tbuf ? tbuf : malloc(f.topic_len + 1);
	if (topic == NULL)
		return 1;
	memcpy(topic, f.topic, f.topic_len);
	topic[f.topic_len] = '\0';
	f.topic = topic;
	/* The core puts the MQTT topic in the key of keyless messages. */
	if (rec->key != NULL && !(rec->key_len == f.topic_len &&
	                          memcmp(rec->key, topic, f.topic_len) == 0)) {
		f.has_key = 1;
		f.key = rec->key;
		f.key_len = rec->key_len;
	}
	f.payload = rec->value != NULL ? rec->value : "";
	f.payload_len = rec->value_len;
	f.headers = n > 0 ? t->scratch : NULL;
	f.n_headers = n;
	f.timestamp_ms = rec->timestamp_ms;
	m = api->msg_new(&f, &rc);
	if (topic != tbuf)
		free(topic);
	if (m == NULL)
		return 0; /* not a valid MQTT topic or message: skip */
	/* Live only: the record is already in the Kafka log, and a topic
	 * rule must not log it a second time. */
	api->publish(NULL, m, PMQ_PUB_NO_LOG, NULL, NULL);
	api->msg_unref(m);
	t->n_sent++;
	return 0;
}

/*
 * A produced batch to live MQTT subscribers.  With no subscription at all
 * no message is built, except for records with an "mqtt.retain" header
 * (a retained message is stored for subscribers to come), so the records
 * are still decoded: building and routing messages was the cost, not the
 * host's decode.  The check runs per batch, once it is durable, so a
 * subscriber that arrives while a producer runs gets every batch appended
 * after its subscription.
 */
static void
to_mqtt(struct kafka_listener *l, const char *ktopic, const uint8_t *batch,
        size_t len)
{
	struct to_mqtt t = { ktopic, NULL, 0, 0, 1, -1 };
	int rc;

	if (kafka_has_subs_api && !api->has_subscribers(NULL))
		t.any_subs = 0;
	rc = api->batch_records(batch, len, to_mqtt_record, &t);
	free(t.scratch);
	if (rc != PMQ_OK)
		api->log(l->inst, PMQ_LOG_DEBUG, "records of %s not delivered "
		         "to MQTT: %s", ktopic, api->strerror(rc));
}

/* ---- Produce ---- */

struct pres {
	int16_t err;
	int64_t base;
	int64_t log_start;
};

struct produce_state {
	struct pres **res; /* [topic][partition] */
};

/* One batch appended; owns nothing but a reference on r. */
struct append_ctx {
	struct kreq *r;
	struct pres *res;
	const char *topic;
	int32_t partition;
	const uint8_t *batch;
	size_t len;
	int first;        /* the partition's first batch: its base offset */
	int64_t pid;      /* -1 when not idempotent */
	int32_t seq;
};

static void produce_finish(struct kreq *r);

static void
produce_one_done(struct kreq *r)
{
	if (--r->outstanding == 0)
		produce_finish(r);
}

static void
append_done(void *arg, int status, int64_t base)
{
	struct append_ctx *a = arg;
	struct kreq *r = a->r;
	struct kafka_listener *l = r->l;

	if (a->pid >= 0)
		kp_done(l->producers, a->topic, a->partition, a->pid, a->seq,
		        status == PMQ_OK, base);
	if (status == PMQ_OK) {
		if (a->first)
			a->res->base = base;
		/* Durable now: live MQTT subscribers may see it (to_mqtt
		 * skips the work when there are none). */
		if (l->mqtt_deliver)
			to_mqtt(l, a->topic, a->batch, a->len);
	} else if (a->res->err == KE_NONE) {
		a->res->err = kerr_of(status);
		api->log(l->inst, PMQ_LOG_INFO, "produce to %s-%d failed: %s",
		         a->topic, (int)a->partition, api->strerror(status));
	}
	free(a);
	produce_one_done(r);
}

/* Check and append one batch of a partition's records. */
static int16_t
produce_batch(struct kreq *r, const char *topic, int32_t part,
              struct pres *res, const uint8_t *b, size_t len, int first)
{
	uint16_t attrs = (uint16_t)(b[RB_ATTRIBUTES] << 8 |
	                            b[RB_ATTRIBUTES + 1]);
	int64_t pid = (int64_t)be64(b + RB_PRODUCER_ID);
	int16_t epoch = (int16_t)(b[RB_PRODUCER_EPOCH] << 8 |
	                          b[RB_PRODUCER_EPOCH + 1]);
	int32_t seq = (int32_t)be32(b + RB_BASE_SEQUENCE);
	int32_t count = (int32_t)be32(b + RB_RECORDS_COUNT);
	struct append_ctx *a;
	int64_t dup = -1;
	int16_t err;
	int rc;

	/* Kafka's ProduceRequest.validateRecords and LogValidator. */
	if (b[RB_MAGIC] != 2 || be64(b) != 0 || (attrs & RB_ATTR_CONTROL) ||
	    count <= 0 ||
	    (int32_t)be32(b + RB_LAST_OFFSET_DELTA) != count - 1)
		return KE_INVALID_RECORD;
	if ((attrs & RB_ATTR_CODEC) == RB_CODEC_ZSTD && r->q.api_version < 7)
		return KE_UNSUPPORTED_COMPRESSION_TYPE;
	if ((attrs & RB_ATTR_CODEC) > RB_CODEC_ZSTD)
		return KE_CORRUPT_MESSAGE;
	if (len > r->l->message_max)
		return KE_MESSAGE_TOO_LARGE;
	if (pid >= 0) {
		err = kp_check(r->l->producers, topic, part, pid, epoch, seq,
		               count, &dup);
		if (err == KE_DUPLICATE_SEQUENCE_NUMBER && dup >= 0) {
			/* A retry of a batch already stored: success, with
			 * the offset it got then. */
			if (first)
				res->base = dup;
			return KE_NONE;
		}
		if (err != KE_NONE)
			return err;
	}
	a = calloc(1, sizeof *a);
	if (a == NULL) {
		if (pid >= 0)
			kp_done(r->l->producers, topic, part, pid, seq, 0, -1);
		return KE_KAFKA_STORAGE_ERROR;
	}
	a->r = r;
	a->res = res;
	a->topic = topic;
	a->partition = part;
	a->batch = b;
	a->len = len;
	a->first = first;
	a->pid = pid >= 0 ? pid : -1;
	a->seq = seq;
	r->outstanding++;
	rc = api->log_append(topic, part, b, len, append_done, a);
	if (rc != PMQ_OK) {
		r->outstanding--;
		if (pid >= 0)
			kp_done(r->l->producers, topic, part, pid, seq, 0, -1);
		free(a);
		return kerr_of(rc);
	}
	return KE_NONE;
}

static void
produce_partition(struct kreq *r, const struct kc_topic *t,
                  const struct kc_part *p, struct pres *res)
{
	struct pmq_log_offsets offs = { .size = sizeof offs };
	size_t pos = 0;
	int first = 1;

	res->base = -1;
	res->log_start = -1;
	if (api->log_offsets(t->name, p->index, &offs) != PMQ_OK) {
		res->err = KE_UNKNOWN_TOPIC_OR_PARTITION;
		return;
	}
	res->log_start = offs.log_start;
	if (p->data == NULL || p->data_len == 0) {
		res->err = KE_INVALID_RECORD;
		return;
	}
	if (p->data_len > r->l->message_max * 64) {
		res->err = KE_RECORD_LIST_TOO_LARGE;
		return;
	}
	/* A partition's records may hold several batches; the host takes
	 * one at a time.  Check the framing of all before appending any. */
	while (pos < p->data_len) {
		uint32_t bl;

		if (p->data_len - pos < RB_HEADER_SIZE) {
			res->err = KE_CORRUPT_MESSAGE;
			return;
		}
		bl = be32(p->data + pos + RB_LENGTH);
		if (bl < RB_HEADER_SIZE - 12 || bl > p->data_len - pos - 12) {
			res->err = KE_CORRUPT_MESSAGE;
			return;
		}
		pos += 12 + (size_t)bl;
	}
	pos = 0;
	while (pos < p->data_len && res->err == KE_NONE) {
		size_t bl = 12 + (size_t)be32(p->data + pos + RB_LENGTH);

		res->err = produce_batch(r, t->name, p->index, res,
		                         p->data + pos, bl, first);
		first = 0;
		pos += bl;
	}
}

static void
produce_finish(struct kreq *r)
{
	struct produce_state *s = r->state;
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;
	int32_t i, j;

	if (r->slot == NULL || !kreq_alive(r)) {
		kreq_drop(r); /* acks=0, or nobody to answer */
		return;
	}
	kc_w_array(w, r->q.n_topics);
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		kc_w_str(w, t->name);
		kc_w_array(w, t->n_parts);
		for (j = 0; j < t->n_parts; j++) {
			const struct pres *p = &s->res[i][j];

			kc_w_i32(w, t->parts[j].index);
			kc_w_i16(w, p->err);
			kc_w_i64(w, p->err == KE_NONE ? p->base : -1);
			kc_w_i64(w, -1); /* log_append_time_ms: CreateTime */
			if (v >= 5)
				kc_w_i64(w, p->log_start);
		}
	}
	kc_w_i32(w, 0); /* throttle_time_ms: last in Produce */
	kreq_reply(r);
}

/*
 * Produce requests go through the gate: while older producers' state is
 * being read from a partition's log, every later request waits behind it,
 * so that batches are still checked and appended in arrival order.
 */
void
kh_produce(struct kreq *r)
{
	struct kproducers *p = r->l->producers;
	int wait = produce_needs_scan(r, 1);

	if (p->gate_head == NULL && !wait) {
		produce_run(r);
		return;
	}
	r->qnext = NULL;
	if (p->gate_tail != NULL)
		p->gate_tail->qnext = r;
	else
		p->gate_head = r;
	p->gate_tail = r;
}

static void
produce_run(struct kreq *r)
{
	struct produce_state *s;
	int32_t i, j;

	s = kc_arena_alloc(&r->arena, sizeof *s);
	if (s != NULL && r->q.n_topics > 0)
		s->res = kc_arena_alloc(&r->arena, (size_t)r->q.n_topics *
		                        sizeof *s->res);
	if (s == NULL || (r->q.n_topics > 0 && s->res == NULL)) {
		kreq_drop(r);
		return;
	}
	r->state = s;
	/* The guard: completions cannot finish r while we submit. */
	r->outstanding = 1;
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		s->res[i] = t->n_parts > 0 ?
		    kc_arena_alloc(&r->arena, (size_t)t->n_parts *
		                   sizeof **s->res) : NULL;
		if (t->n_parts > 0 && s->res[i] == NULL) {
			r->q.n_topics = i; /* answer what we have room for */
			break;
		}
		for (j = 0; j < t->n_parts; j++) {
			/* Kafka answers every partition of a request with
			 * bad acks with INVALID_REQUIRED_ACKS. */
			if (r->q.acks != 0 && r->q.acks != 1 &&
			    r->q.acks != -1) {
				s->res[i][j].err = KE_INVALID_REQUIRED_ACKS;
				s->res[i][j].base = -1;
				s->res[i][j].log_start = -1;
				continue;
			}
			produce_partition(r, t, &t->parts[j], &s->res[i][j]);
		}
	}
	produce_one_done(r);
}

/* ---- Fetch ---- */

struct fpart {
	int16_t err;
	int64_t high_water;
	int64_t log_start;
	const uint8_t *data; /* the read's bytes: in the storage's buffer
	                      * (ref) or in copy; NULL when stored */
	size_t len;
	void *ref;           /* log_read_ref on the storage's answer */
	int stored;          /* ref is a log_read_stored answer: opaque */
	uint8_t *copy;       /* malloc'd when the buffer could not be kept */
};

struct fwait {
	struct kreq *r;
	pmq_waiter *w;
};

struct fetch_state {
	struct fpart **res;    /* [topic][partition] */
	int32_t ti, pj;        /* the next partition to read */
	size_t total;          /* record bytes gathered */
	int64_t deadline;      /* monotonic ms */
	int final;             /* the long poll is over: answer */
	struct fwait *waits;   /* armed waiters */
	int32_t n_waits, cap_waits;
};

static void fetch_next(struct kreq *r);

static void
fetch_clear(struct fetch_state *s, const struct kc_request *q)
{
	int32_t i, j;

	for (i = 0; i < q->n_topics; i++)
		for (j = 0; j < q->topics[i].n_parts; j++) {
			struct fpart *p = &s->res[i][j];

			if (p->ref != NULL)
				api->log_read_unref(p->ref);
			free(p->copy);
			memset(p, 0, sizeof *p);
		}
	s->ti = s->pj = 0;
	s->total = 0;
}

static void
fetch_cancel_waits(struct fetch_state *s)
{
	int32_t i;

	for (i = 0; i < s->n_waits; i++)
		if (s->waits[i].w != NULL)
			api->log_wait_cancel(s->waits[i].w);
	s->n_waits = 0;
}

static void
fetch_free_state(struct kreq *r)
{
	struct fetch_state *s = r->state;

	if (s == NULL)
		return;
	fetch_cancel_waits(s);
	fetch_clear(s, &r->q);
	free(s->waits);
	free(s);
	r->state = NULL;
}

static void
fetch_reply(struct kreq *r)
{
	struct fetch_state *s = r->state;
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;
	int32_t i, j;

	kc_w_i32(w, 0); /* throttle_time_ms */
	if (v >= 7) {
		kc_w_i16(w, KE_NONE);
		kc_w_i32(w, 0); /* session_id: no fetch sessions */
	}
	kc_w_array(w, r->q.n_topics);
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		kc_w_str(w, t->name);
		kc_w_array(w, t->n_parts);
		for (j = 0; j < t->n_parts; j++) {
			struct fpart *p = &s->res[i][j];
			int ok = p->err == KE_NONE;

			kc_w_i32(w, t->parts[j].index);
			kc_w_i16(w, p->err);
			kc_w_i64(w, ok ? p->high_water : -1);
			kc_w_i64(w, ok ? p->high_water : -1); /* LSO */
			if (v >= 5)
				kc_w_i64(w, ok ? p->log_start : -1);
			kc_w_array(w, 0); /* aborted_transactions */
			if (v >= 11)
				kc_w_i32(w, -1); /* preferred_read_replica */
			if (p->ref != NULL) {
				/* The stored batches go by reference: only
				 * their length is written here. */
				void *ref = p->ref;

				p->ref = NULL; /* r owns it now */
				kc_w_bytes_len(w, p->len);
				if (kreq_add_ref(r, p->stored ? NULL : p->data,
				                 p->len, ref) != 0)
					w->err = 1; /* cannot frame: close */
				p->data = NULL;
				continue;
			}
			kc_w_bytes(w, p->data != NULL ? p->data : (void *)"",
			           p->len);
		}
	}
	kreq_reply(r);
}

static void
fetch_read_done(void *arg, int status, const void *data, size_t len,
                const struct pmq_log_offsets *offs)
{
	struct kreq *r = arg;
	struct fetch_state *s = r->state;
	struct fpart *p = &s->res[s->ti][s->pj];

	if (!kreq_alive(r)) {
		kreq_drop(r);
		return;
	}
	p->err = kerr_of(status);
	if (offs != NULL) {
		p->high_water = offs->high_water;
		p->log_start = offs->log_start;
	}
	if (status == PMQ_OK && len > 0) {
		/* Keep the storage's answer and send from it (fetch_reply);
		 * a host that cannot keep it gets a copy, as on 1.0.  A
		 * log_read_stored answer is opaque (its bytes may still be
		 * in files): no copy of it can be made. */
		p->ref = kafka_ref_api ? api->log_read_ref(data) : NULL;
		p->stored = kafka_stored_api;
		if (p->ref == NULL && p->stored) {
			p->err = KE_KAFKA_STORAGE_ERROR; /* retriable */
		} else if (p->ref == NULL) {
			p->copy = malloc(len);
			if (p->copy != NULL)
				memcpy(p->copy, data, len);
		}
		if (p->ref == NULL && p->copy == NULL) {
			p->err = KE_KAFKA_STORAGE_ERROR; /* retriable */
		} else if (p->err == KE_NONE) {
			p->data = p->stored ? NULL :
			          p->ref != NULL ? data : p->copy;
			p->len = len;
			s->total += len;
		}
	}
	s->pj++;
	fetch_next(r);
}

static void
fetch_wake(void *arg, int status)
{
	struct fwait *fw = arg;
	struct kreq *r = fw->r;
	struct fetch_state *s = r->state;

	fw->w = NULL; /* the host freed it */
	kreq_unpark(r);
	fetch_cancel_waits(s);
	/* A timeout ends the long poll; data (or a deleted topic) means
	 * read again. */
	s->final = status == PMQ_ERR_AGAIN || status == PMQ_ERR_CANCELED;
	fetch_clear(s, &r->q);
	fetch_next(r);
}

static void
fetch_cancel(struct kreq *r)
{
	kreq_drop(r); /* fetch_free_state cancels the waiters */
}

/* Nothing (or too little) to return yet: wait on every readable
 * partition until data arrives or max_wait_ms passes. */
static int
fetch_park(struct kreq *r)
{
	struct fetch_state *s = r->state;
	int64_t left = s->deadline - api->monotonic_ms();
	int32_t i, j, n = 0;

	if (left <= 0)
		return 0;
	for (i = 0; i < r->q.n_topics; i++)
		n += r->q.topics[i].n_parts;
	if (n == 0)
		return 0;
	if (s->cap_waits < n) {
		struct fwait *nw = realloc(s->waits, (size_t)n * sizeof *nw);

		if (nw == NULL)
			return 0;
		s->waits = nw;
		s->cap_waits = n;
	}
	s->n_waits = 0;
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		for (j = 0; j < t->n_parts; j++) {
			struct fwait *fw;

			if (s->res[i][j].err != KE_NONE)
				continue;
			/* s->waits never moves while armed: sized above. */
			fw = &s->waits[s->n_waits];
			fw->r = r;
			fw->w = api->log_wait(t->name, t->parts[j].index,
			                      t->parts[j].offset, (uint32_t)left,
			                      fetch_wake, fw);
			if (fw->w != NULL)
				s->n_waits++;
		}
	}
	if (s->n_waits == 0)
		return 0;
	kreq_park(r, fetch_cancel);
	return 1;
}

static void
fetch_next(struct kreq *r)
{
	struct fetch_state *s = r->state;
	const struct kc_request *q = &r->q;

	for (; s->ti < q->n_topics; s->ti++, s->pj = 0) {
		const struct kc_topic *t = &q->topics[s->ti];

		for (; s->pj < t->n_parts; s->pj++) {
			const struct kc_part *kp = &t->parts[s->pj];
			struct fpart *p = &s->res[s->ti][s->pj];
			struct pmq_log_offsets offs = { .size = sizeof offs };
			size_t max;
			int rc;

			if (api->log_offsets(t->name, kp->index, &offs) !=
			    PMQ_OK) {
				p->err = KE_UNKNOWN_TOPIC_OR_PARTITION;
				continue;
			}
			p->high_water = offs.high_water;
			p->log_start = offs.log_start;
			if (kp->offset < offs.log_start ||
			    kp->offset > offs.high_water) {
				p->err = KE_OFFSET_OUT_OF_RANGE;
				continue;
			}
			if (kp->offset == offs.high_water || kp->max_bytes <= 0)
				continue;
			/* Whole first batch even past the limits (KIP-74);
			 * later partitions get what max_bytes leaves. */
			max = (size_t)kp->max_bytes;
			if (q->max_bytes > 0 && s->total > 0) {
				if (s->total >= (size_t)q->max_bytes)
					continue;
				if (max > (size_t)q->max_bytes - s->total)
					max = (size_t)q->max_bytes - s->total;
			}
			rc = (kafka_stored_api ? api->log_read_stored :
			      api->log_read)(t->name, kp->index, kp->offset,
			                     max, fetch_read_done, r);
			if (rc == PMQ_OK)
				return; /* fetch_read_done continues */
			p->err = kerr_of(rc);
		}
	}
	/* Every partition looked at. */
	if (!kreq_alive(r)) {
		kreq_drop(r);
		return;
	}
	if (s->final || s->total >= (size_t)(q->min_bytes > 0 ?
	                                     q->min_bytes : 1) ||
	    q->max_wait_ms <= 0 || !fetch_park(r))
		fetch_reply(r);
}

void
kh_fetch(struct kreq *r)
{
	struct fetch_state *s = calloc(1, sizeof *s);
	int32_t i;

	if (s == NULL || (r->q.n_topics > 0 &&
	                  (s->res = kc_arena_alloc(&r->arena,
	                   (size_t)r->q.n_topics * sizeof *s->res)) == NULL)) {
		free(s);
		kreq_drop(r);
		return;
	}
	r->state = s;
	r->free_state = fetch_free_state;
	for (i = 0; i < r->q.n_topics; i++) {
		int32_t n = r->q.topics[i].n_parts;

		s->res[i] = n > 0 ? kc_arena_alloc(&r->arena, (size_t)n *
		                                   sizeof **s->res) : NULL;
		if (n > 0 && s->res[i] == NULL) {
			r->q.n_topics = i;
			break;
		}
	}
	s->deadline = api->monotonic_ms() + (r->q.max_wait_ms > 0 ?
	                                     r->q.max_wait_ms : 0);
	fetch_next(r);
}

/* ---- ListOffsets ---- */

struct lres {
	int16_t err;
	int64_t ts;
	int64_t offset;
};

struct lo_ctx {
	struct kreq *r;
	struct lres *res;
	const char *topic;
	int32_t partition;
	int64_t target;
};

struct list_state {
	struct lres **res;
};

static void
list_finish(struct kreq *r)
{
	struct list_state *s = r->state;
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;
	int32_t i, j;

	if (--r->outstanding > 0)
		return;
	if (!kreq_alive(r)) {
		kreq_drop(r);
		return;
	}
	if (v >= 2)
		kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_array(w, r->q.n_topics);
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		kc_w_str(w, t->name);
		kc_w_array(w, t->n_parts);
		for (j = 0; j < t->n_parts; j++) {
			const struct lres *p = &s->res[i][j];

			kc_w_i32(w, t->parts[j].index);
			kc_w_i16(w, p->err);
			kc_w_i64(w, p->ts);
			kc_w_i64(w, p->offset);
			if (v >= 4)
				kc_w_i32(w, 0); /* leader_epoch */
		}
	}
	kreq_reply(r);
}

/* The first record at or after the target time inside the batch found:
 * Kafka answers with that record's offset and timestamp. */
static int
lo_record(void *arg, const struct pmq_record *rec)
{
	struct lo_ctx *c = arg;

	if (rec->offset < c->res->offset || rec->timestamp_ms < c->target)
		return 0;
	c->res->offset = rec->offset;
	c->res->ts = rec->timestamp_ms;
	return 1;
}

static void
lo_read_done(void *arg, int status, const void *data, size_t len,
             const struct pmq_log_offsets *offs)
{
	struct lo_ctx *c = arg;

	(void)offs;
	if (status == PMQ_OK && len > 0)
		(void)api->batch_records(data, len, lo_record, c);
	list_finish(c->r);
	free(c);
}

static void
lo_time_done(void *arg, int status, int64_t offset)
{
	struct lo_ctx *c = arg;

	c->res->err = kerr_of(status);
	c->res->offset = status == PMQ_OK ? offset : -1;
	if (status == PMQ_OK && offset >= 0) {
		/* The storage finds the batch; find the record in it. */
		if (api->log_read(c->topic, c->partition, offset, 1,
		                  lo_read_done, c) == PMQ_OK)
			return;
	}
	list_finish(c->r);
	free(c);
}

void
kh_list_offsets(struct kreq *r)
{
	struct list_state *s = kc_arena_alloc(&r->arena, sizeof *s);
	int32_t i, j;

	if (s == NULL || (r->q.n_topics > 0 &&
	                  (s->res = kc_arena_alloc(&r->arena,
	                   (size_t)r->q.n_topics * sizeof *s->res)) == NULL)) {
		kreq_drop(r);
		return;
	}
	r->state = s;
	r->outstanding = 1;
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		s->res[i] = t->n_parts > 0 ?
		    kc_arena_alloc(&r->arena, (size_t)t->n_parts *
		                   sizeof **s->res) : NULL;
		if (t->n_parts > 0 && s->res[i] == NULL) {
			r->q.n_topics = i;
			break;
		}
		for (j = 0; j < t->n_parts; j++) {
			struct lres *p = &s->res[i][j];
			struct pmq_log_offsets offs = { .size = sizeof offs };
			int64_t ts = t->parts[j].offset;
			struct lo_ctx *c;

			p->ts = -1;
			p->offset = -1;
			if (api->log_offsets(t->name, t->parts[j].index,
			                     &offs) != PMQ_OK) {
				p->err = KE_UNKNOWN_TOPIC_OR_PARTITION;
				continue;
			}
			if (ts == -2) {
				p->offset = offs.log_start;
				continue;
			}
			if (ts == -1 || ts == -3) { /* latest, max timestamp */
				p->offset = offs.high_water;
				continue;
			}
			if (ts < 0) {
				p->err = KE_INVALID_REQUEST;
				continue;
			}
			c = calloc(1, sizeof *c);
			if (c == NULL) {
				p->err = KE_KAFKA_STORAGE_ERROR;
				continue;
			}
			c->r = r;
			c->res = p;
			c->topic = t->name;
			c->partition = t->parts[j].index;
			c->target = ts;
			r->outstanding++;
			if (api->log_offset_for_time(t->name,
			                             t->parts[j].index, ts,
			                             lo_time_done, c) != PMQ_OK) {
				r->outstanding--;
				free(c);
				p->err = KE_KAFKA_STORAGE_ERROR;
			}
		}
	}
	list_finish(r);
}

/* ---- CreateTopics, DeleteTopics ---- */

struct tres {
	int16_t err;
	const char *msg;
};

struct topics_state {
	struct tres *res;
};

static void
topics_finish(struct kreq *r)
{
	struct topics_state *s = r->state;
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;
	int create = r->q.api_key == KC_CREATE_TOPICS;
	int32_t i, n = create ? r->q.n_topics : r->q.n_names;

	if (--r->outstanding > 0)
		return;
	if (!kreq_alive(r)) {
		kreq_drop(r);
		return;
	}
	if ((create && v >= 2) || (!create && v >= 1))
		kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_array(w, n);
	for (i = 0; i < n; i++) {
		kc_w_str(w, create ? r->q.topics[i].name : r->q.names[i]);
		kc_w_i16(w, s->res[i].err);
		if (create && v >= 1)
			kc_w_str(w, s->res[i].msg);
	}
	kreq_reply(r);
}

struct tctx {
	struct kreq *r;
	struct tres *res;
};

static void
topics_done(void *arg, int status)
{
	struct tctx *c = arg;

	if (status != PMQ_OK && c->res->err == KE_NONE)
		c->res->err = status == PMQ_ERR_NOTFOUND ?
		    KE_UNKNOWN_TOPIC_OR_PARTITION : KE_KAFKA_STORAGE_ERROR;
	topics_finish(c->r);
	free(c);
}

static int
topics_start(struct kreq *r, int32_t n)
{
	struct topics_state *s = kc_arena_alloc(&r->arena, sizeof *s);

	if (s == NULL || (n > 0 && (s->res = kc_arena_alloc(&r->arena,
	                            (size_t)n * sizeof *s->res)) == NULL)) {
		kreq_drop(r);
		return -1;
	}
	r->state = s;
	r->outstanding = 1;
	return 0;
}

/* Topic configs we honour; others are accepted and ignored. */
static int16_t
create_config(const struct kc_topic *t, struct pmq_topic_config *cfg,
              const char **msg)
{
	int32_t i;

	for (i = 0; i < t->n_configs; i++) {
		const struct kc_config *c = &t->configs[i];
		int64_t *dst = NULL;
		char *end;
		long long v;

		if (strcmp(c->name, "retention.ms") == 0)
			dst = &cfg->retention_ms;
		else if (strcmp(c->name, "retention.bytes") == 0)
			dst = &cfg->retention_bytes;
		if (dst == NULL || c->value == NULL)
			continue;
		v = strtoll(c->value, &end, 10);
		if (end == c->value || *end != '\0' || v < -1) {
			*msg = "bad retention value";
			return KE_INVALID_REQUEST;
		}
		*dst = v;
	}
	return KE_NONE;
}

void
kh_create_topics(struct kreq *r)
{
	struct topics_state *s;
	int32_t i, k;

	if (topics_start(r, r->q.n_topics) != 0)
		return;
	s = r->state;
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];
		struct pmq_topic_config cfg = { .size = sizeof cfg };
		struct tres *res = &s->res[i];
		struct tctx *c;
		int rc;

		cfg.partitions = t->num_partitions == -1 ?
		    r->l->default_partitions : t->num_partitions;
		if (t->n_assignments > 0)
			cfg.partitions = t->n_assignments;
		cfg.retention_ms = -1;
		cfg.retention_bytes = -1;
		for (k = 0; k < i; k++)
			if (strcmp(r->q.topics[k].name, t->name) == 0)
				break;
		if (k < i) {
			res->err = KE_INVALID_REQUEST;
			res->msg = "topic named twice";
		} else if (!kc_topic_name_valid(t->name)) {
			res->err = KE_INVALID_TOPIC_EXCEPTION;
			res->msg = "invalid topic name";
		} else if (cfg.partitions < 1 || cfg.partitions > 10000) {
			res->err = KE_INVALID_PARTITIONS;
			res->msg = "partitions must be 1 to 10000";
		} else if (t->replication_factor != -1 &&
		           t->replication_factor != 1) {
			res->err = KE_INVALID_REPLICATION_FACTOR;
			res->msg = "one broker: replication factor 1";
		} else if (api->log_topic(t->name, &cfg) == PMQ_OK) {
			res->err = KE_TOPIC_ALREADY_EXISTS;
			res->msg = "topic exists";
		} else {
			res->err = create_config(t, &cfg, &res->msg);
		}
		if (res->err != KE_NONE || r->q.validate_only)
			continue;
		c = calloc(1, sizeof *c);
		if (c == NULL) {
			res->err = KE_KAFKA_STORAGE_ERROR;
			continue;
		}
		c->r = r;
		c->res = res;
		r->outstanding++;
		rc = api->log_create(t->name, &cfg, topics_done, c);
		if (rc != PMQ_OK) {
			r->outstanding--;
			free(c);
			res->err = rc == PMQ_ERR_EXISTS ? KE_TOPIC_ALREADY_EXISTS :
			           rc == PMQ_ERR_INVAL ? KE_INVALID_REQUEST :
			           KE_KAFKA_STORAGE_ERROR;
		}
	}
	topics_finish(r);
}

void
kh_delete_topics(struct kreq *r)
{
	struct topics_state *s;
	int32_t i;

	if (topics_start(r, r->q.n_names) != 0)
		return;
	s = r->state;
	for (i = 0; i < r->q.n_names; i++) {
		struct tctx *c = calloc(1, sizeof *c);
		int rc;

		if (c == NULL) {
			s->res[i].err = KE_KAFKA_STORAGE_ERROR;
			continue;
		}
		c->r = r;
		c->res = &s->res[i];
		r->outstanding++;
		rc = api->log_delete(r->q.names[i], topics_done, c);
		if (rc != PMQ_OK) {
			r->outstanding--;
			free(c);
			s->res[i].err = rc == PMQ_ERR_NOTFOUND ?
			    KE_UNKNOWN_TOPIC_OR_PARTITION :
			    KE_KAFKA_STORAGE_ERROR;
		} else {
			api->log(r->l->inst, PMQ_LOG_INFO, "deleting topic %s",
			         r->q.names[i]);
			kp_forget_topic(r->l->producers, r->q.names[i]);
		}
	}
	topics_finish(r);
}
