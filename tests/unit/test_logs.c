/*
 * test_logs.c - unit tests of the log layer (core/logs.c) against the real
 * memory storage plugin, loaded with dlopen as the daemon does and set to
 * delay every operation so completions really arrive later.  The loop is
 * run in bounded steps until a condition holds; nothing sleeps for luck.
 *
 * The plugin is TOP_BUILDDIR/plugins/.libs/memory.so, or memory.so in
 * $PMQ_PLUGIN_DIR when that is set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dlfcn.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <plexmq/plexmq.h>

#include "batch.h"
#include "config.h"
#include "daemon.h"
#include "host.h"
#include "logs.h"
#include "msg.h"
#include "storage.h"
#include "util.h"

#ifndef TOP_BUILDDIR
#define TOP_BUILDDIR "."
#endif

/* Upper bound for any wait in these tests. */
#define WAIT_MS 5000

static void *dl;
static const struct pmq_plugin *plugin;
static const struct pmq_storage_ops *sops;
static struct event_base *base;
static struct event *tick;  /* keeps EVLOOP_ONCE from spinning */
static struct pmq_instance inst = {.name = "storage"};
static struct storage stor;

/* What a callback saw. */
struct res {
	int called;
	int status;
	int64_t off;
	size_t len;
	unsigned char data[8192];
	struct pmq_log_offsets offs;
	struct pmq_publish_result pub;
};

static void
done_cb(void *arg, int status)
{
	struct res *r = arg;

	r->called++;
	r->status = status;
}

static void
append_cb(void *arg, int status, int64_t base_offset)
{
	struct res *r = arg;

	r->called++;
	r->status = status;
	r->off = base_offset;
}

static void
read_cb(void *arg, int status, const void *data, size_t len,
    const struct pmq_log_offsets *offs)
{
	struct res *r = arg;

	r->called++;
	r->status = status;
	r->len = len;
	if (len > 0 && len <= sizeof r->data)
		memcpy(r->data, data, len);
	r->offs = *offs;
}

/* Keeps the read's bytes past the callback (host log_read_ref). */
struct kept {
	int called;
	const void *data;
	size_t len;
	void *ref, *ref2, *outside;
};

static void
keep_cb(void *arg, int status, const void *data, size_t len,
    const struct pmq_log_offsets *offs)
{
	struct kept *k = arg;
	static const char elsewhere[4];

	(void)offs;
	k->called++;
	assert_int_equal(status, PMQ_OK);
	k->data = data;
	k->len = len;
	k->ref = storage_read_ref(data);
	k->ref2 = storage_read_ref((const char *)data + len / 2);
	k->outside = storage_read_ref(elsewhere);
}

static void
offset_cb(void *arg, int status, int64_t offset)
{
	struct res *r = arg;

	r->called++;
	r->status = status;
	r->off = offset;
}

static void
publish_cb(void *arg, int status, const struct pmq_publish_result *pr)
{
	struct res *r = arg;

	r->called++;
	r->status = status;
	r->pub = *pr;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Run the loop until cond holds, for at most WAIT_MS. */
#define RUN_UNTIL(cond)                                                       \
	do {                                                                  \
		int64_t dl_ = util_monotonic_ms() + WAIT_MS;                  \
		while (!(cond) && util_monotonic_ms() < dl_)                  \
			event_base_loop(base, EVLOOP_ONCE);                   \
		assert_true(cond);                                            \
	} while (0)

/* ---- fixtures ---- */

static int
group_setup(void **state)
{
	const char *dir = getenv("PMQ_PLUGIN_DIR");
	char path[4096];

	(void)state;
	evthread_use_pthreads();
	if (dir != NULL && *dir != '\0')
		snprintf(path, sizeof path, "%s/memory.so", dir);
	else
		snprintf(path, sizeof path, "%s",
		    TOP_BUILDDIR "/plugins/.libs/memory.so");
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
		return -1;
	}
	plugin = dlsym(dl, "pmq_plugin_v1");
	if (plugin == NULL || plugin->kind != PMQ_KIND_STORAGE ||
	    plugin->init(host_api()) != PMQ_OK)
		return -1;
	sops = plugin->ops;
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	if (plugin != NULL && plugin->fini != NULL)
		plugin->fini();
	if (dl != NULL)
		dlclose(dl);
	return 0;
}

/* A started memory storage with extra config (key, value pairs, NULL
 * terminated), the completion queue, and the log layer with rules. */
static void
start(const struct config_rule *rules, size_t n_rules, ...)
{
	struct timeval tv = {0, 5000};
	char err[256];
	const char *k;
	va_list ap;

	base = event_base_new();
	assert_non_null(base);
	daemon_set_base(base);
	tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	assert_non_null(tick);
	event_add(tick, &tv);
	assert_int_equal(storage_io_init(base), PMQ_OK);
	stor.ops = sops;
	stor.inst = &inst;
	stor.st = sops->create(&inst);
	assert_non_null(stor.st);
	inst.state = stor.st;
	inst.owner = &stor;
	/* 0..2 ms per op: completions come late and at varying times. */
	snprintf(err, sizeof err, "%d", rand() % 3);
	assert_int_equal(sops->configure(stor.st, "delay_ms", err, err,
	    sizeof err), PMQ_OK);
	va_start(ap, n_rules);
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);

		assert_int_equal(sops->configure(stor.st, k, v, err,
		    sizeof err), PMQ_OK);
	}
	va_end(ap);
	assert_int_equal(sops->start(stor.st), PMQ_OK);
	storage_set(&stor);
	assert_int_equal(logs_init(rules, n_rules), PMQ_OK);
}

static int
teardown(void **state)
{
	(void)state;
	logs_shutdown();
	sops->stop(stor.st);
	storage_io_shutdown();
	sops->destroy(stor.st);
	storage_set(NULL);
	event_free(tick);
	event_base_free(base);
	daemon_set_base(NULL);
	return 0;
}

/* ---- helpers ---- */

/* A batch of n records (ts 0 = now), owned by the caller (free()). */
static void *
make_batch(int n, int64_t ts, size_t payload_len, size_t *len)
{
	struct pmq_msg_fields f[16];
	const struct pmq_msg_fields *fp[16];
	static char payload[4096];
	void *out;
	int i;

	assert_true(n >= 1 && n <= 16 && payload_len <= sizeof payload);
	memset(payload, 'x', payload_len);
	for (i = 0; i < n; i++) {
		memset(&f[i], 0, sizeof f[i]);
		f[i].size = sizeof f[i];
		f[i].topic = "dev/1";
		f[i].topic_len = 5;
		f[i].payload = payload;
		f[i].payload_len = payload_len;
		f[i].timestamp_ms = ts != 0 ? ts : util_now_ms();
		fp[i] = &f[i];
	}
	assert_int_equal(batch_build(fp, (size_t)n, 0, &out, len), PMQ_OK);
	return out;
}

static void
create(const char *name, int32_t parts, int64_t ret_ms, int64_t ret_bytes)
{
	struct pmq_topic_config cfg = {.size = sizeof cfg,
	    .partitions = parts, .retention_ms = ret_ms,
	    .retention_bytes = ret_bytes};
	struct res r = {0};

	assert_int_equal(logs_create(name, &cfg, done_cb, &r), PMQ_OK);
	assert_int_equal(r.called, 0); /* never from inside the call */
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_OK);
}

/* Append n records with ts to topic/part and wait: returns the base. */
static int64_t
append_wait(const char *topic, int32_t part, int n, int64_t ts)
{
	struct res r = {0};
	size_t len;
	void *b = make_batch(n, ts, 10, &len);

	assert_int_equal(logs_append(topic, part, b, len, append_cb, &r),
	    PMQ_OK);
	free(b);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_OK);
	return r.off;
}

static struct pmq_log_offsets
offsets(const char *topic, int32_t part)
{
	struct pmq_log_offsets o = {.size = sizeof o};

	assert_int_equal(logs_offsets(topic, part, &o), PMQ_OK);
	return o;
}

/* ---- tests ---- */

static void
test_create_and_names(void **state)
{
	struct pmq_topic_config cfg = {.size = sizeof cfg, .partitions = 3,
	    .retention_ms = -1, .retention_bytes = -1};
	struct pmq_topic_config got = {.size = sizeof got};
	const char *bad[] = {"", "a/b", "..", "a..b", "."};
	void *val = NULL;
	size_t i, val_len = 0;

	(void)state;
	start(NULL, 0, NULL);
	create("orders", 3, -1, -1);
	assert_int_equal(logs_create("orders", &cfg, NULL, NULL),
	    PMQ_ERR_EXISTS);
	for (i = 0; i < UTIL_ARRAY_LEN(bad); i++)
		assert_int_equal(logs_create(bad[i], &cfg, NULL, NULL),
		    PMQ_ERR_INVAL);
	cfg.partitions = 0;
	assert_int_equal(logs_create("zero", &cfg, NULL, NULL),
	    PMQ_ERR_INVAL);
	assert_int_equal(logs_topic("orders", &got), PMQ_OK);
	assert_int_equal(got.partitions, 3);
	assert_int_equal(got.retention_ms, -1);
	assert_int_equal(logs_topic("nope", &got), PMQ_ERR_NOTFOUND);
	/* Metadata is in the storage's "topics" namespace. */
	assert_int_equal(sops->kv_get(stor.st, LOGS_META_NS, "orders", 6,
	    &val, &val_len), PMQ_OK);
	assert_int_equal(val_len, 21);
	free(val);
	teardown(NULL);
}

static void
test_append_offsets(void **state)
{
	struct res r1 = {0}, r2 = {0}, r3 = {0};
	struct pmq_log_offsets o;
	size_t l1, l2, l3;
	void *b1, *b2, *b3;

	(void)state;
	start(NULL, 0, NULL);
	create("orders", 3, -1, -1);
	b1 = make_batch(2, 0, 10, &l1);
	b2 = make_batch(3, 0, 10, &l2);
	b3 = make_batch(1, 0, 10, &l3);
	assert_int_equal(logs_append("orders", 0, b1, l1, append_cb, &r1),
	    PMQ_OK);
	assert_int_equal(logs_append("orders", 0, b2, l2, append_cb, &r2),
	    PMQ_OK);
	assert_int_equal(logs_append("orders", 1, b3, l3, append_cb, &r3),
	    PMQ_OK);
	/* Assigned at once, durable only on completion. */
	o = offsets("orders", 0);
	assert_int_equal(o.log_start, 0);
	assert_int_equal(o.log_end, 5);
	assert_int_equal(o.high_water, 0);
	assert_int_equal(r1.called + r2.called + r3.called, 0);
	RUN_UNTIL(r1.called && r2.called && r3.called);
	assert_int_equal(r1.status, PMQ_OK);
	assert_int_equal(r1.off, 0);
	assert_int_equal(r2.off, 2);
	assert_int_equal(r3.off, 0);
	o = offsets("orders", 0);
	assert_int_equal(o.high_water, 5);
	assert_int_equal(o.log_end, 5);
	assert_int_equal(offsets("orders", 1).high_water, 1);
	assert_int_equal(offsets("orders", 2).high_water, 0);
	assert_int_equal(logs_append("orders", 3, b1, l1, append_cb, &r1),
	    PMQ_ERR_NOTFOUND);
	assert_int_equal(logs_append("nope", 0, b1, l1, append_cb, &r1),
	    PMQ_ERR_NOTFOUND);
	free(b1);
	free(b2);
	free(b3);
	teardown(NULL);
}

static void
test_corrupt_batch(void **state)
{
	struct res r = {0};
	unsigned char *b;
	size_t len;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	b = make_batch(1, 0, 10, &len);
	b[len - 3] ^= 0x55; /* inside the CRC-covered records */
	assert_int_equal(logs_append("t", 0, b, len, append_cb, &r),
	    PMQ_ERR_CORRUPT);
	assert_int_equal(logs_append("t", 0, b, 20, append_cb, &r) < 0, 1);
	assert_int_equal(offsets("t", 0).log_end, 0);
	RUN_UNTIL(storage_io_pending() == 0);
	assert_int_equal(r.called, 0);
	free(b);
	teardown(NULL);
}

/* log_read_ref: the buffer outlives the callback until the last unref
 * (ASan in the sanitizer build catches an early free or a leak). */
static void
test_read_ref(void **state)
{
	struct kept k = {0};
	struct res r = {0};
	void *copy;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	assert_int_equal(append_wait("t", 0, 3, 0), 0);
	assert_null(storage_read_ref(&k)); /* not inside a read callback */
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, keep_cb, &k), PMQ_OK);
	RUN_UNTIL(k.called);
	assert_non_null(k.ref);
	assert_ptr_equal(k.ref, k.ref2);
	assert_null(k.outside);
	/* Still readable after the callback returned. */
	copy = malloc(k.len);
	assert_non_null(copy);
	memcpy(copy, k.data, k.len);
	assert_int_equal(batch_validate(copy, k.len, NULL), PMQ_OK);
	storage_read_unref(k.ref);
	assert_int_equal(batch_validate(k.data, k.len, NULL), PMQ_OK);
	storage_read_unref(k.ref2);
	free(copy);
	/* A later read without refs still frees as before. */
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_OK);
	teardown(NULL);
}


/* ---- log_read_stored (ABI 1.2) ----
 *
 * ext_ops adds log_read_extents to the memory plugin: it reads the bytes
 * with log_read and answers with two memory pieces, or, with ext_lie,
 * pieces that add up to one byte less than the length it reports. */

static struct pmq_storage_ops ext_ops;
static int ext_lie, ext_freed, ext_calls;

struct ext_answer {
	struct pmq_extents x;
	struct pmq_extent v[2];
	unsigned char *bytes;
};

struct ext_read {
	pmq_io *io; /* the host's */
};

static void
ext_free(void *data)
{
	struct ext_answer *a = data;

	free(a->bytes);
	free(a);
	ext_freed++;
}

static void
ext_done(void *arg, int status, int64_t value, const void *data, size_t len)
{
	struct ext_read *er = arg;
	struct ext_answer *a;
	size_t half = len / 2;

	(void)value;
	if (status != PMQ_OK || len == 0) {
		storage_io_done_data(er->io, status, NULL, 0, NULL);
		free(er);
		return;
	}
	a = calloc(1, sizeof *a);
	assert_non_null(a);
	a->bytes = malloc(len);
	assert_non_null(a->bytes);
	memcpy(a->bytes, data, len);
	a->x = (struct pmq_extents){.size = sizeof a->x, .n = 2, .v = a->v};
	a->v[0] = (struct pmq_extent){.data = a->bytes, .len = (uint32_t)half,
	    .fd = -1};
	a->v[1] = (struct pmq_extent){.data = a->bytes + half,
	    .len = (uint32_t)(len - half - (ext_lie ? 1 : 0)), .fd = -1};
	storage_io_done_data(er->io, PMQ_OK, a, len, ext_free);
	free(er);
}

static void
ext_read(void *st, void *log, int64_t offset, size_t max_bytes,
    int64_t limit, pmq_io *io)
{
	struct ext_read *er = calloc(1, sizeof *er);
	struct pmq_io *inner;

	assert_non_null(er);
	ext_calls++;
	er->io = io;
	inner = storage_io_new(ext_done, er);
	assert_non_null(inner);
	sops->log_read(st, log, offset, max_bytes, limit, inner);
}

static void
test_read_stored(void **state)
{
	struct res plain = {0}, st = {0}, bad = {0}, lp = {0};
	struct kept k = {0};
	const struct ext_answer *a;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	assert_int_equal(append_wait("t", 0, 3, 0), 0);
	/* The memory plugin has no log_read_extents: bytes, as logs_read. */
	assert_true(sops->log_read_extents == NULL);
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, read_cb, &plain),
	    PMQ_OK);
	assert_int_equal(logs_read_stored("t", 0, 0, 1 << 20, read_cb, &st),
	    PMQ_OK);
	RUN_UNTIL(plain.called && st.called);
	assert_int_equal(st.status, PMQ_OK);
	assert_int_equal(st.len, plain.len);
	assert_memory_equal(st.data, plain.data, plain.len);

	ext_ops = *sops;
	ext_ops.log_read_extents = ext_read;
	stor.ops = &ext_ops;
	/* logs_read never asks for extents. */
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, read_cb, &lp), PMQ_OK);
	RUN_UNTIL(lp.called);
	assert_int_equal(lp.status, PMQ_OK);
	assert_int_equal(ext_calls, 0);
	/* A stored read gets the extents answer itself, len its bytes; the
	 * reference keeps it past the callback. */
	assert_int_equal(logs_read_stored("t", 0, 0, 1 << 20, keep_cb, &k),
	    PMQ_OK);
	RUN_UNTIL(k.called);
	assert_int_equal(ext_calls, 1);
	assert_int_equal(k.len, plain.len);
	a = k.data;
	assert_int_equal(a->x.n, 2);
	assert_int_equal(a->v[0].len + a->v[1].len, plain.len);
	assert_memory_equal(a->bytes, plain.data, plain.len);
	assert_non_null(k.ref);
	assert_null(k.ref2); /* not a pointer into bytes: a handle */
	assert_int_equal(ext_freed, 0);
	storage_read_unref(k.ref);
	assert_int_equal(ext_freed, 1);
	/* Pieces that do not add up to len: refused, freed, never seen. */
	ext_lie = 1;
	assert_int_equal(logs_read_stored("t", 0, 0, 1 << 20, read_cb, &bad),
	    PMQ_OK);
	RUN_UNTIL(bad.called);
	assert_int_equal(bad.status, PMQ_ERR_CORRUPT);
	assert_int_equal(bad.len, 0);
	assert_int_equal(ext_freed, 2);
	ext_lie = 0;
	stor.ops = sops;
	teardown(NULL);
}

static void
test_read(void **state)
{
	struct res r = {0};
	struct pmq_batch_meta meta;
	size_t blen;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	assert_int_equal(append_wait("t", 0, 2, 0), 0);
	assert_int_equal(append_wait("t", 0, 3, 0), 2);

	/* max_bytes 1: the first batch still comes whole. */
	assert_int_equal(logs_read("t", 0, 0, 1, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_OK);
	assert_int_equal(batch_next(r.data, r.len, &blen, &meta), PMQ_OK);
	assert_int_equal(blen, r.len);
	assert_int_equal(meta.base_offset, 0);
	assert_int_equal(meta.records, 2);
	assert_int_equal(batch_validate(r.data, r.len, NULL), PMQ_OK);
	assert_int_equal(r.offs.high_water, 5);

	/* Mid-batch offset: the batch containing it. */
	memset(&r, 0, sizeof r);
	assert_int_equal(logs_read("t", 0, 3, 1 << 20, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(batch_next(r.data, r.len, &blen, &meta), PMQ_OK);
	assert_int_equal(meta.base_offset, 2);
	assert_int_equal(blen, r.len);

	/* Both batches. */
	memset(&r, 0, sizeof r);
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(batch_next(r.data, r.len, &blen, &meta), PMQ_OK);
	assert_true(blen < r.len);

	/* At high_water: empty, but still later. */
	memset(&r, 0, sizeof r);
	assert_int_equal(logs_read("t", 0, 5, 100, read_cb, &r), PMQ_OK);
	assert_int_equal(r.called, 0);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_OK);
	assert_int_equal(r.len, 0);

	/* Past it, and before the start. */
	memset(&r, 0, sizeof r);
	assert_int_equal(logs_read("t", 0, 6, 100, read_cb, &r), PMQ_OK);
	assert_int_equal(r.called, 0);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_ERR_RANGE);
	memset(&r, 0, sizeof r);
	assert_int_equal(logs_read("t", 0, -1, 100, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_ERR_RANGE);
	assert_int_equal(logs_read("t", 1, 0, 100, read_cb, &r),
	    PMQ_ERR_NOTFOUND);
	teardown(NULL);
}

static void
test_read_stops_at_high_water(void **state)
{
	struct res a = {0}, r = {0};
	struct pmq_batch_meta meta;
	size_t len, blen;
	void *b;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	assert_int_equal(append_wait("t", 0, 1, 0), 0);
	/* A second batch submitted but not durable must not be read. */
	b = make_batch(1, 0, 10, &len);
	assert_int_equal(logs_append("t", 0, b, len, append_cb, &a), PMQ_OK);
	free(b);
	assert_int_equal(logs_read("t", 0, 0, 1 << 20, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called && a.called);
	assert_int_equal(r.status, PMQ_OK);
	assert_int_equal(batch_next(r.data, r.len, &blen, &meta), PMQ_OK);
	assert_int_equal(blen, r.len); /* one batch only */
	assert_int_equal(meta.base_offset, 0);
	teardown(NULL);
}

static void
test_wait_woken_by_append(void **state)
{
	struct res w = {0}, w2 = {0}, a = {0};
	pmq_waiter *h;
	size_t len;
	void *b;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 2, -1, -1);
	h = logs_wait("t", 0, 0, 10000, done_cb, &w);
	assert_non_null(h);
	b = make_batch(1, 0, 10, &len);
	/* An append to another partition does not wake it. */
	assert_int_equal(logs_append("t", 1, b, len, append_cb, &a), PMQ_OK);
	RUN_UNTIL(a.called);
	assert_int_equal(w.called, 0);
	memset(&a, 0, sizeof a);
	assert_int_equal(logs_append("t", 0, b, len, append_cb, &a), PMQ_OK);
	free(b);
	assert_int_equal(w.called, 0);
	RUN_UNTIL(w.called);
	assert_int_equal(w.status, PMQ_OK);
	assert_int_equal(offsets("t", 0).high_water, 1);

	/* Already satisfied: woken, but not from inside logs_wait. */
	assert_non_null(logs_wait("t", 0, 0, 10000, done_cb, &w2));
	assert_int_equal(w2.called, 0);
	RUN_UNTIL(w2.called);
	assert_int_equal(w2.status, PMQ_OK);
	assert_null(logs_wait("nope", 0, 0, 10, done_cb, &w2));
	assert_null(logs_wait("t", 2, 0, 10, done_cb, &w2));
	teardown(NULL);
}

static void
test_wait_timeout(void **state)
{
	struct res w = {0};
	int64_t t0;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	t0 = util_monotonic_ms();
	assert_non_null(logs_wait("t", 0, 0, 50, done_cb, &w));
	RUN_UNTIL(w.called);
	assert_int_equal(w.status, PMQ_ERR_AGAIN);
	assert_true(util_monotonic_ms() - t0 >= 45);
	assert_int_equal(w.called, 1);
	teardown(NULL);
}

static void
test_wait_cancel(void **state)
{
	struct res w = {0}, w2 = {0}, other = {0};
	pmq_waiter *h;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, -1, -1);
	h = logs_wait("t", 0, 0, 20, done_cb, &w);
	assert_non_null(h);
	logs_wait_cancel(h);
	/* Cancel also works after the wake was decided but before it ran. */
	assert_int_equal(append_wait("t", 0, 1, 0), 0);
	h = logs_wait("t", 0, 0, 20, done_cb, &w2);
	logs_wait_cancel(h);
	/* Outlive both timeouts. */
	assert_non_null(logs_wait("t", 0, 5, 60, done_cb, &other));
	RUN_UNTIL(other.called);
	assert_int_equal(w.called, 0);
	assert_int_equal(w2.called, 0);
	teardown(NULL);
}

static void
test_delete(void **state)
{
	struct res w = {0}, r = {0}, d = {0}, a = {0};
	struct pmq_topic_config cfg = {.size = sizeof cfg, .partitions = 1,
	    .retention_ms = -1, .retention_bytes = -1};
	void *val;
	size_t len;
	void *b;

	(void)state;
	start(NULL, 0, NULL);
	create("t", 2, -1, -1);
	assert_int_equal(append_wait("t", 0, 1, 0), 0);
	assert_non_null(logs_wait("t", 1, 0, 10000, done_cb, &w));
	b = make_batch(1, 0, 10, &len);
	assert_int_equal(logs_append("t", 0, b, len, append_cb, &a), PMQ_OK);
	free(b);
	assert_int_equal(logs_read("t", 0, 0, 100, read_cb, &r), PMQ_OK);
	assert_int_equal(logs_delete("t", done_cb, &d), PMQ_OK);
	assert_int_equal(d.called, 0);
	/* Gone for lookups at once; the name is busy until done. */
	assert_int_equal(logs_topic("t", &cfg), PMQ_ERR_NOTFOUND);
	assert_int_equal(logs_delete("t", NULL, NULL), PMQ_ERR_NOTFOUND);
	assert_int_equal(logs_create("t", &cfg, NULL, NULL), PMQ_ERR_AGAIN);
	RUN_UNTIL(d.called && w.called && r.called && a.called);
	assert_int_equal(d.status, PMQ_OK);
	assert_int_equal(w.status, PMQ_ERR_NOTFOUND);
	assert_int_equal(r.status, PMQ_ERR_NOTFOUND);
	assert_int_equal(a.status, PMQ_ERR_NOTFOUND);
	assert_int_equal(sops->kv_get(stor.st, LOGS_META_NS, "t", 1, &val,
	    &len), PMQ_ERR_NOTFOUND);
	/* A new topic of that name starts empty. */
	create("t", 1, -1, -1);
	assert_int_equal(offsets("t", 0).log_end, 0);
	assert_int_equal(logs_delete("nope", NULL, NULL), PMQ_ERR_NOTFOUND);
	teardown(NULL);
}

static void
test_restart_keeps_topics(void **state)
{
	struct pmq_topic_config got = {.size = sizeof got};
	struct pmq_log_offsets o;

	(void)state;
	start(NULL, 0, NULL);
	create("keep", 2, 60000, 4096);
	assert_int_equal(append_wait("keep", 1, 3, 0), 0);
	logs_shutdown();
	assert_int_equal(logs_topic("keep", &got), PMQ_ERR_NOTFOUND);
	assert_int_equal(logs_init(NULL, 0), PMQ_OK);
	assert_int_equal(logs_topic("keep", &got), PMQ_OK);
	assert_int_equal(got.partitions, 2);
	assert_int_equal(got.retention_ms, 60000);
	assert_int_equal(got.retention_bytes, 4096);
	o = offsets("keep", 1);
	assert_int_equal(o.high_water, 3);
	assert_int_equal(o.log_end, 3);
	assert_int_equal(append_wait("keep", 1, 1, 0), 3);
	teardown(NULL);
}

/* Kafka's UtilsTest.testMurmur2 vectors. */
static void
test_murmur2(void **state)
{
	(void)state;
	assert_int_equal(logs_murmur2("21", 2), -973932308);
	assert_int_equal(logs_murmur2("foobar", 6), -790332482);
	assert_int_equal(logs_murmur2("a-little-bit-long-string", 24),
	    -985981536);
	assert_int_equal(logs_murmur2("a-little-bit-longer-string", 26),
	    -1486304829);
	assert_int_equal(logs_murmur2(
	    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48),
	    -58897971);
	assert_int_equal(logs_murmur2("abc", 3), 479470107);
	/* toPositive(murmur2) % n */
	assert_int_equal(logs_partition_for_key("21", 2, 7),
	    (int32_t)(((uint32_t)-973932308 & 0x7fffffff) % 7));
}

static void
publish(const char *topic, struct res *r, int expect)
{
	struct pmq_msg_fields f = {.size = sizeof f, .topic = topic,
	    .topic_len = strlen(topic), .payload = "22.5", .payload_len = 4};
	pmq_msg *m;
	int err;

	m = msg_new(&f, &err);
	assert_non_null(m);
	memset(r, 0, sizeof *r);
	assert_int_equal(logs_append_msg(m, publish_cb, r), expect);
	msg_unref(m);
	if (expect == PMQ_OK) {
		RUN_UNTIL(r->called);
		assert_int_equal(r->status, PMQ_OK);
	}
}

/* Counts records keyed "sensors/a/b". */
static int
key_cb(void *arg, const struct pmq_record *rec)
{
	int *n = arg;

	if (rec->key_len == 11 && memcmp(rec->key, "sensors/a/b", 11) == 0)
		(*n)++;
	return 0;
}

static void
test_rules(void **state)
{
	struct config_rule rules[] = {
	    {.name = "sensors", .line = 1, .match = "sensors/#",
	     .log = "sensors", .partitions = 3, .retention_ms = -1,
	     .retention_bytes = -1},
	    {.name = "all", .line = 9, .match = "#", .log = "all",
	     .partitions = 1, .retention_ms = -1, .retention_bytes = -1},
	};
	struct pmq_topic_config got = {.size = sizeof got};
	struct res r, r2, rd;
	int n = 0;
	int32_t want = logs_partition_for_key("sensors/a/b", 11, 3);

	(void)state;
	start(rules, 1, NULL);
	publish("sensors/a/b", &r, PMQ_OK);
	assert_int_equal(r.pub.partition, want);
	assert_int_equal(r.pub.offset, 0);
	assert_int_equal(logs_topic("sensors", &got), PMQ_OK);
	assert_int_equal(got.partitions, 3);
	publish("sensors/a/b", &r2, PMQ_OK);
	assert_int_equal(r2.pub.partition, want);
	assert_int_equal(r2.pub.offset, 1);
	publish("other/x", &r, PMQ_ERR_NOTFOUND);
	assert_int_equal(logs_topic("all", &got), PMQ_ERR_NOTFOUND);

	/* The stored record is keyed by the MQTT topic. */
	memset(&rd, 0, sizeof rd);
	assert_int_equal(logs_read("sensors", want, 0, 1 << 20, read_cb, &rd),
	    PMQ_OK);
	RUN_UNTIL(rd.called);
	assert_int_equal(rd.status, PMQ_OK);
	assert_int_equal(batch_records(rd.data, rd.len, key_cb, &n), PMQ_OK);
	assert_int_equal(n, 2);
	teardown(NULL);

	/* First match wins: "sensors/#" before "#". */
	start(rules, 2, NULL);
	publish("sensors/z", &r, PMQ_OK);
	assert_int_equal(logs_topic("sensors", &got), PMQ_OK);
	assert_int_equal(logs_topic("all", &got), PMQ_ERR_NOTFOUND);
	publish("other/x", &r, PMQ_OK);
	assert_int_equal(r.pub.partition, 0);
	assert_int_equal(logs_topic("all", &got), PMQ_OK);
	teardown(NULL);
}

static void
test_retention_bytes(void **state)
{
	struct res r = {0};
	size_t len;
	void *b = make_batch(1, 0, 10, &len);
	int i;

	(void)state;
	free(b);
	start(NULL, 0, NULL);
	/* Room for two batches: the oldest two of four go. */
	create("t", 1, -1, (int64_t)(2 * len));
	for (i = 0; i < 4; i++)
		assert_int_equal(append_wait("t", 0, 1, 0), i);
	logs_retention_run();
	RUN_UNTIL(offsets("t", 0).log_start == 2);
	assert_int_equal(logs_read("t", 0, 1, 100, read_cb, &r), PMQ_OK);
	RUN_UNTIL(r.called);
	assert_int_equal(r.status, PMQ_ERR_RANGE);
	/* Nothing more to trim. */
	logs_retention_run();
	RUN_UNTIL(storage_io_pending() == 0);
	assert_int_equal(offsets("t", 0).log_start, 2);
	teardown(NULL);
}

static void
test_retention_time(void **state)
{
	int64_t old = util_now_ms() - 3600 * 1000;
	struct res o = {0};

	(void)state;
	start(NULL, 0, NULL);
	create("t", 1, 60000, -1);
	assert_int_equal(append_wait("t", 0, 2, old), 0);
	assert_int_equal(append_wait("t", 0, 1, old + 1), 2);
	assert_int_equal(append_wait("t", 0, 1, 0), 3);
	assert_int_equal(logs_offset_for_time("t", 0, old + 1, offset_cb, &o),
	    PMQ_OK);
	RUN_UNTIL(o.called);
	assert_int_equal(o.status, PMQ_OK);
	assert_int_equal(o.off, 2);
	logs_retention_run();
	RUN_UNTIL(offsets("t", 0).log_start == 3);
	assert_int_equal(offsets("t", 0).high_water, 4);
	teardown(NULL);
}

static void
test_failed_append(void **state)
{
	struct res a = {0}, big = {0}, c = {0}, d = {0};
	size_t la, lb;
	void *sa = make_batch(1, 0, 10, &la);
	void *sb = make_batch(1, 0, 2000, &lb);

	(void)state;
	/* Room for the metadata and a few small batches, not the big one. */
	start(NULL, 0, "max_bytes", "600", NULL);
	create("t", 1, -1, -1);
	assert_int_equal(logs_append("t", 0, sa, la, append_cb, &a), PMQ_OK);
	assert_int_equal(logs_append("t", 0, sb, lb, append_cb, &big),
	    PMQ_OK);
	assert_int_equal(logs_append("t", 0, sa, la, append_cb, &c), PMQ_OK);
	assert_int_equal(offsets("t", 0).log_end, 3);
	RUN_UNTIL(a.called && big.called && c.called);
	assert_int_equal(a.status, PMQ_OK);
	assert_int_equal(big.status, PMQ_ERR_NOSPC);
	/* Would fit, but sits after the hole: failed as well. */
	assert_int_equal(c.status, PMQ_ERR_NOSPC);
	assert_int_equal(offsets("t", 0).high_water, 1);
	assert_int_equal(offsets("t", 0).log_end, 1);
	/* The log goes on from high_water. */
	assert_int_equal(logs_append("t", 0, sa, la, append_cb, &d), PMQ_OK);
	RUN_UNTIL(d.called);
	assert_int_equal(d.status, PMQ_OK);
	assert_int_equal(d.off, 1);
	free(sa);
	free(sb);
	teardown(NULL);
}

/* ---- a storage that stores an append and then reports it failed ----
 *
 * What a commit that landed but whose sync failed looks like to the log
 * layer: the memory plugin stores the batch, this wrapper completes the
 * host's io with PMQ_ERR_IO.  The core and the storage then disagree about
 * the log's end, which is what logs_part_resync must repair. */

static struct pmq_storage_ops lie_ops;
static int lie_next; /* appends still to misreport */

/* Every append is wrapped, honest or not, so that all completions take
 * the same two hops through the queue and keep their order. */
struct lie {
	pmq_io *io; /* the host's */
	int lie;
};

static void
lie_done(void *arg, int status, int64_t value, const void *data, size_t len)
{
	struct lie *l = arg;

	(void)data;
	(void)len;
	if (l->lie)
		storage_io_done(l->io, PMQ_ERR_IO, 0);
	else
		storage_io_done(l->io, status, value);
	free(l);
}

static void
lie_append(void *st, void *log, const struct pmq_batch_meta *m,
    const void *data, size_t len, pmq_io *io)
{
	struct lie *l = calloc(1, sizeof *l);
	struct pmq_io *wrap;

	assert_non_null(l);
	l->io = io;
	if (lie_next > 0) {
		lie_next--;
		l->lie = 1;
	}
	wrap = storage_io_new(lie_done, l);
	assert_non_null(wrap);
	sops->log_append(st, log, m, data, len, wrap);
}

/* Queue publish number i of a burst (nothing runs the loop). */
static void
publish_nowait(const char *topic, struct res *r)
{
	struct pmq_msg_fields f = {.size = sizeof f, .topic = topic,
	    .topic_len = strlen(topic), .payload = "22.5", .payload_len = 4};
	pmq_msg *m = msg_new(&f, NULL);

	assert_non_null(m);
	memset(r, 0, sizeof *r);
	assert_int_equal(logs_append_msg(m, publish_cb, r), PMQ_OK);
	msg_unref(m); /* the log layer keeps its own reference */
}

static int
all_called(const struct res *r, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!r[i].called)
			return 0;
	return 1;
}

/* Publishes of one loop turn to one partition leave as one batch; each
 * publisher gets its own offset, in order; a batch is cut at
 * PEND_MAX_MSGS (4096); a failed append fails every publish in it. */
static void
test_publish_batched(void **state)
{
	struct config_rule rules[] = {
	    {.name = "all", .line = 1, .match = "#", .log = "all",
	     .partitions = 1, .retention_ms = -1, .retention_bytes = -1},
	};
	enum { N = 4097 };
	struct res *r = calloc(N, sizeof *r), rd = {0}, fail[3];
	struct pmq_batch_meta meta;
	size_t i;

	(void)state;
	assert_non_null(r);
	start(rules, 1, NULL);
	for (i = 0; i < 5; i++)
		publish_nowait("a/b", &r[i]);
	assert_false(r[0].called); /* never inside the publish */
	RUN_UNTIL(all_called(r, 5));
	for (i = 0; i < 5; i++) {
		assert_int_equal(r[i].status, PMQ_OK);
		assert_int_equal(r[i].pub.partition, 0);
		assert_int_equal(r[i].pub.offset, (int64_t)i);
	}
	assert_int_equal(logs_read("all", 0, 0, 1 << 20, read_cb, &rd),
	    PMQ_OK);
	RUN_UNTIL(rd.called);
	assert_int_equal(batch_validate(rd.data, rd.len, &meta), PMQ_OK);
	assert_int_equal(meta.records, 5); /* one batch, five records */

	for (i = 0; i < N; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, N));
	for (i = 0; i < N; i++) {
		assert_int_equal(r[i].status, PMQ_OK);
		assert_int_equal(r[i].pub.offset, (int64_t)(5 + i));
	}
	memset(&rd, 0, sizeof rd);
	assert_int_equal(logs_read("all", 0, 5, 1, read_cb, &rd), PMQ_OK);
	RUN_UNTIL(rd.called);
	assert_int_equal(rd.status, PMQ_OK);
	assert_true(rd.len > sizeof rd.data); /* 4096 records: not copied */

	/* The storage fails the next append: all three publishes fail. */
	lie_ops = *sops;
	lie_ops.log_append = lie_append;
	stor.ops = &lie_ops;
	lie_next = 1;
	for (i = 0; i < 3; i++)
		publish_nowait("a/b", &fail[i]);
	RUN_UNTIL(all_called(fail, 3));
	for (i = 0; i < 3; i++) {
		assert_int_equal(fail[i].status, PMQ_ERR_IO);
		assert_int_equal(fail[i].pub.offset, -1);
	}
	stor.ops = sops;
	free(r);
	teardown(NULL);
}

/* ---- a storage that is full for some appends ----
 *
 * full_mode 0: every append is stored; 1: appends of more than one record
 * find no room (PMQ_ERR_NOSPC, nothing stored); 2: no append finds room. */
static int full_mode;

static void
full_append(void *st, void *log, const struct pmq_batch_meta *m,
    const void *data, size_t len, pmq_io *io)
{
	if (full_mode == 2 || (full_mode == 1 && m->records > 1)) {
		storage_io_done(io, PMQ_ERR_NOSPC, 0);
		return;
	}
	sops->log_append(st, log, m, data, len, io);
}

/* Records in the batch holding offset off of log "all". */
static uint32_t
batch_records_at(int64_t off)
{
	struct res rd = {0};
	struct pmq_batch_meta meta;

	assert_int_equal(logs_read("all", 0, off, 1, read_cb, &rd), PMQ_OK);
	RUN_UNTIL(rd.called);
	assert_int_equal(rd.status, PMQ_OK);
	assert_int_equal(batch_validate(rd.data, rd.len, &meta), PMQ_OK);
	return meta.records;
}

/* A full storage answers a turn's publishes as it did one at a time: a
 * batch with no room is retried one publish per batch (so the ones that
 * fit are stored, in order), a storage with no room at all fails each
 * publish, and batching resumes after the first append that works. */
static void
test_publish_batched_full(void **state)
{
	struct config_rule rules[] = {
	    {.name = "all", .line = 1, .match = "#", .log = "all",
	     .partitions = 1, .retention_ms = -1, .retention_bytes = -1},
	};
	struct res r[3];
	size_t i;

	(void)state;
	start(rules, 1, NULL);
	lie_ops = *sops;
	lie_ops.log_append = full_append;
	stor.ops = &lie_ops;

	full_mode = 1; /* room for one record at a time */
	for (i = 0; i < 3; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, 3));
	for (i = 0; i < 3; i++) {
		assert_int_equal(r[i].status, PMQ_OK);
		assert_int_equal(r[i].pub.offset, (int64_t)i);
		assert_int_equal(batch_records_at((int64_t)i), 1);
	}

	full_mode = 2; /* no room at all: each publish fails */
	for (i = 0; i < 3; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, 3));
	for (i = 0; i < 3; i++) {
		assert_int_equal(r[i].status, PMQ_ERR_NOSPC);
		assert_int_equal(r[i].pub.offset, -1);
	}
	/* Still one publish per batch, still failing. */
	for (i = 0; i < 2; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, 2));
	assert_int_equal(r[0].status, PMQ_ERR_NOSPC);
	assert_int_equal(r[1].status, PMQ_ERR_NOSPC);

	full_mode = 0; /* room again: stored one by one, then batched */
	for (i = 0; i < 2; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, 2));
	assert_int_equal(r[0].status, PMQ_OK);
	assert_int_equal(r[0].pub.offset, 3);
	assert_int_equal(r[1].pub.offset, 4);
	assert_int_equal(batch_records_at(3), 1);
	for (i = 0; i < 2; i++)
		publish_nowait("a/b", &r[i]);
	RUN_UNTIL(all_called(r, 2));
	assert_int_equal(r[0].pub.offset, 5);
	assert_int_equal(r[1].pub.offset, 6);
	assert_int_equal(batch_records_at(5), 2);
	stor.ops = sops;
	full_mode = 0;
	teardown(NULL);
}

static void
test_failed_append_resync(void **state)
{
	struct res r[4] = {{0}}, e = {0};
	size_t len;
	void *b = make_batch(1, 0, 10, &len);
	int i;

	(void)state;
	start(NULL, 0, NULL);
	lie_ops = *sops;
	lie_ops.log_append = lie_append;
	stor.ops = &lie_ops;
	create("t", 1, -1, -1);
	assert_int_equal(append_wait("t", 0, 1, 0), 0);
	/* Four in flight; the first is stored but reported failed.  The
	 * storage then also stores the next three (their bases match its
	 * end), which the core fails as sitting after a failure. */
	lie_next = 1;
	for (i = 0; i < 4; i++)
		assert_int_equal(logs_append("t", 0, b, len, append_cb, &r[i]),
		    PMQ_OK);
	RUN_UNTIL(r[0].called && r[1].called && r[2].called && r[3].called);
	for (i = 0; i < 4; i++)
		assert_int_equal(r[i].status, PMQ_ERR_IO);
	/* The core asked the storage: its end is 5, so offsets 1..4 are
	 * readable and the next append gets 5 (not 1 again, which the
	 * storage would refuse forever). */
	assert_int_equal(offsets("t", 0).high_water, 5);
	assert_int_equal(offsets("t", 0).log_end, 5);
	assert_int_equal(append_wait("t", 0, 1, 0), 5);
	assert_int_equal(logs_read("t", 0, 1, 1, read_cb, &e), PMQ_OK);
	RUN_UNTIL(e.called);
	assert_int_equal(e.status, PMQ_OK);
	assert_true(e.len > 0);
	stor.ops = sops;
	free(b);
	teardown(NULL);
}

static void
kv_done(void *arg, int status, int64_t value, const void *data, size_t len)
{
	struct res *r = arg;

	(void)value;
	(void)data;
	(void)len;
	r->called++;
	r->status = status;
}

static void
test_failed_append_space_freed(void **state)
{
	struct res r[6] = {{0}}, k = {0}, d = {0}, rd = {0};
	static char filler[1500];
	size_t ls, lb;
	void *sb = make_batch(1, 0, 10, &ls);
	void *bb = make_batch(1, 0, 1000, &lb);
	int i;

	(void)state;
	start(NULL, 0, "max_bytes", "2400", NULL);
	create("t", 1, -1, -1);
	/* A key-value filler takes most of the room. */
	sops->kv_put(stor.st, "fill", "k", 1, filler, sizeof filler,
	    storage_io_new(kv_done, &k));
	RUN_UNTIL(k.called);
	assert_int_equal(k.status, PMQ_OK);
	/* Six in flight: small, small, big (no space), small x3. */
	for (i = 0; i < 6; i++)
		assert_int_equal(logs_append("t", 0, i == 2 ? bb : sb,
		    i == 2 ? lb : ls, append_cb, &r[i]), PMQ_OK);
	assert_int_equal(offsets("t", 0).log_end, 6);
	RUN_UNTIL(r[5].called);
	assert_int_equal(r[0].status, PMQ_OK);
	assert_int_equal(r[1].status, PMQ_OK);
	for (i = 2; i < 6; i++)
		assert_int_equal(r[i].status, PMQ_ERR_NOSPC);
	assert_int_equal(offsets("t", 0).high_water, 2);
	assert_int_equal(offsets("t", 0).log_end, 2);
	/* Space frees: the big batch now fits, at the storage's end. */
	sops->kv_del(stor.st, "fill", "k", 1, storage_io_new(kv_done, &d));
	RUN_UNTIL(d.called);
	memset(r, 0, sizeof r);
	assert_int_equal(logs_append("t", 0, bb, lb, append_cb, &r[0]),
	    PMQ_OK);
	RUN_UNTIL(r[0].called);
	assert_int_equal(r[0].status, PMQ_OK);
	assert_int_equal(r[0].off, 2);
	assert_int_equal(append_wait("t", 0, 1, 0), 3);
	/* And the same after a restart of the log layer. */
	logs_shutdown();
	assert_int_equal(logs_init(NULL, 0), PMQ_OK);
	assert_int_equal(offsets("t", 0).high_water, 4);
	assert_int_equal(append_wait("t", 0, 1, 0), 4);
	assert_int_equal(logs_read("t", 0, 2, 1, read_cb, &rd), PMQ_OK);
	RUN_UNTIL(rd.called);
	assert_int_equal(rd.status, PMQ_OK);
	assert_int_equal(rd.offs.high_water, 5);
	free(sb);
	free(bb);
	teardown(NULL);
}

static void
topics_cb(void *arg, const char *topic, const struct pmq_topic_config *cfg)
{
	char *out = arg;

	(void)cfg;
	strcat(out, topic);
	strcat(out, ",");
}

static void
test_topics_order_and_shutdown(void **state)
{
	char names[128] = "";
	struct res w = {0};

	(void)state;
	start(NULL, 0, NULL);
	create("b", 1, -1, -1);
	create("a", 1, -1, -1);
	create("c", 1, -1, -1);
	logs_topics(topics_cb, names);
	assert_string_equal(names, "a,b,c,");
	assert_non_null(logs_wait("a", 0, 0, 10000, done_cb, &w));
	logs_shutdown();
	assert_int_equal(w.called, 1);
	assert_int_equal(w.status, PMQ_ERR_CANCELED);
	assert_null(logs_wait("a", 0, 0, 10, done_cb, &w));
	teardown(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_murmur2),
	    cmocka_unit_test(test_create_and_names),
	    cmocka_unit_test(test_append_offsets),
	    cmocka_unit_test(test_corrupt_batch),
	    cmocka_unit_test(test_read),
	    cmocka_unit_test(test_read_stops_at_high_water),
	    cmocka_unit_test(test_wait_woken_by_append),
	    cmocka_unit_test(test_wait_timeout),
	    cmocka_unit_test(test_wait_cancel),
	    cmocka_unit_test(test_delete),
	    cmocka_unit_test(test_restart_keeps_topics),
	    cmocka_unit_test(test_rules),
	    cmocka_unit_test(test_publish_batched),
	    cmocka_unit_test(test_publish_batched_full),
	    cmocka_unit_test(test_retention_bytes),
	    cmocka_unit_test(test_read_ref),
	    cmocka_unit_test(test_read_stored),
	    cmocka_unit_test(test_retention_time),
	    cmocka_unit_test(test_failed_append),
	    cmocka_unit_test(test_failed_append_resync),
	    cmocka_unit_test(test_failed_append_space_freed),
	    cmocka_unit_test(test_topics_order_and_shutdown),
	};

	srand((unsigned)util_monotonic_ms());
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
