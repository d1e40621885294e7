/*
 * test_storage.c - the storage conformance suite: one set of cases that
 * every storage plugin must pass.  The build compiles this file once per
 * plugin with -DSTORAGE_PLUGIN='"name"'; it dlopens that plugin's module
 * and drives its ops table through a fake host API table filled here, so
 * nothing of the core is involved and a failure points at the plugin.
 *
 * The module is looked for in $PMQ_PLUGIN_DIR, else in
 * TOP_BUILDDIR/plugins/.libs; when it is in neither the suite exits 77
 * (automake's "skipped").
 *
 * Completions arrive on the plugin's threads: the fake io_done records them
 * under a mutex and wait_io() waits on a condition variable with a bound,
 * never sleeping for luck.  The calling thread plays the loop thread.
 *
 * Cases that need data to survive a restart run only for durable plugins
 * (everything but "memory").  Cases that need a test knob ("delay_ms",
 * "max_bytes") are skipped when the plugin answers PMQ_ERR_NOTFOUND.
 * Cases of an optional op (log_read_extents, ABI 1.2) are skipped when the
 * plugin's ops table does not have it.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <plexmq/plexmq.h>

#ifndef STORAGE_PLUGIN
#define STORAGE_PLUGIN "memory"
#endif

#define WAIT_MS 5000 /* bound on any single completion */

/* Set in main: the cases that need a restart to keep data run only when
 * this is true. */
static int durable;

/* The fake host's view of one pending operation.  pmq_io is opaque to
 * plugins, so the test may give it any layout. */
struct pmq_io {
	int done;        /* completions seen: must end up exactly 1 */
	int status;
	int64_t value;
	void *data;
	size_t len;
	void (*free_fn)(void *);
	int is_data;     /* completed through io_done_data */
	unsigned seq;    /* arrival order among all completions */
};

struct pmq_instance {
	const char *name;
};

/* ---- the fake host ---- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv; /* CLOCK_MONOTONIC, set up in main */
static unsigned g_seq;      /* completions so far */
static unsigned g_double;   /* ios completed more than once */
static char g_data_dir[128];

/* Callbacks posted with host->post(), run by wait_io (the test thread is
 * the loop). */
struct posted {
	struct posted *next;
	void (*fn)(void *);
	void *arg;
};
static struct posted *g_posted, **g_posted_tail = &g_posted;

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
/* The last error the plugin logged, for cases that check a failure is
 * reported (under g_log_mu). */
static char g_last_error[512];

#ifdef STORAGE_LMDB
/* lmdb cases: the plugin's sync summary logged at stop, and how often a
 * plugin thread entered io_done (see test_lmdb_group_commit). */
static char g_sync_line[256];
static unsigned g_io_entered;
#endif

static void fake_vlog(pmq_instance *inst, int level, const char *fmt,
                      va_list ap)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};

	if (level == PMQ_LOG_ERROR) {
		va_list cp;

		va_copy(cp, ap);
		pthread_mutex_lock(&g_log_mu);
		vsnprintf(g_last_error, sizeof(g_last_error), fmt, cp);
		pthread_mutex_unlock(&g_log_mu);
		va_end(cp);
	}
#ifdef STORAGE_LMDB
	{
		char line[256];
		va_list cp;

		va_copy(cp, ap);
		vsnprintf(line, sizeof(line), fmt, cp);
		va_end(cp);
		if (strstr(line, " syncs for ") != NULL) {
			pthread_mutex_lock(&g_log_mu);
			snprintf(g_sync_line, sizeof(g_sync_line), "%s", line);
			pthread_mutex_unlock(&g_log_mu);
		}
	}
#endif

	/* Errors and warnings always (some cases provoke them on purpose);
	 * the rest with PMQ_TEST_VERBOSE set. */
	if (level > PMQ_LOG_WARN && getenv("PMQ_TEST_VERBOSE") == NULL)
		return;
	fprintf(stderr, "[%s] %s: ", inst ? inst->name : "-",
	        level >= 0 && level <= 3 ? names[level] : "?");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void fake_log(pmq_instance *inst, int level, const char *fmt, ...)
    PMQ_PRINTF(3, 4);
static void fake_log(pmq_instance *inst, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fake_vlog(inst, level, fmt, ap);
	va_end(ap);
}

static const char *fake_strerror(int err)
{
	static const char *const s[] = {
	    "ok", "no memory", "invalid", "not found", "exists", "I/O error",
	    "no space", "out of range", "limit", "closed", "unsupported",
	    "config", "ABI", "again", "read-only", "corrupt", "canceled"};

	if (err <= 0 && -err < (int)(sizeof(s) / sizeof(s[0])))
		return s[-err];
	return "unknown error";
}

static int fake_cfg_bool(const char *v, int *out)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") ||
	    !strcmp(v, "1"))
		*out = 1;
	else if (!strcmp(v, "no") || !strcmp(v, "false") ||
	         !strcmp(v, "off") || !strcmp(v, "0"))
		*out = 0;
	else
		return PMQ_ERR_CONFIG;
	return PMQ_OK;
}

static int fake_cfg_int(const char *v, int64_t min, int64_t max,
                        int64_t *out)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return PMQ_ERR_CONFIG;
	*out = n;
	return PMQ_OK;
}

static int fake_cfg_size(const char *v, uint64_t *out)
{
	char *end;
	unsigned long long n;
	unsigned shift = 0;

	errno = 0;
	if (*v == '-')
		return PMQ_ERR_CONFIG;
	n = strtoull(v, &end, 10);
	if (errno || end == v)
		return PMQ_ERR_CONFIG;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return PMQ_ERR_CONFIG;
	}
	if (*end || (n << shift) >> shift != n)
		return PMQ_ERR_CONFIG;
	*out = n << shift;
	return PMQ_OK;
}

static int fake_cfg_duration_ms(const char *v, int64_t *out)
{
	char *end;
	long long n;
	int64_t mul = 1;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || n < 0)
		return PMQ_ERR_CONFIG;
	if (!strcmp(end, "") || !strcmp(end, "ms"))
		mul = 1;
	else if (!strcmp(end, "s"))
		mul = 1000;
	else if (!strcmp(end, "m"))
		mul = 60000;
	else if (!strcmp(end, "h"))
		mul = 3600000;
	else if (!strcmp(end, "d"))
		mul = 86400000;
	else
		return PMQ_ERR_CONFIG;
	*out = n * mul;
	return PMQ_OK;
}

static const char *fake_instance_name(pmq_instance *inst)
{
	return inst->name;
}

static const char *fake_data_dir(void)
{
	return g_data_dir;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t fake_now_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

static int64_t fake_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* No loop timers in the fake host: a storage plugin that needs periodic
 * work (group commit) runs it on its own threads. */
static pmq_timer *fake_timer_new(void (*fn)(void *arg), void *arg)
{
	(void)fn;
	(void)arg;
	return NULL;
}

static int fake_post(void (*fn)(void *arg), void *arg)
{
	struct posted *p = malloc(sizeof(*p));

	if (p == NULL)
		return PMQ_ERR_NOMEM;
	p->next = NULL;
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&g_mu);
	*g_posted_tail = p;
	g_posted_tail = &p->next;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_mu);
	return PMQ_OK;
}

/* Record one completion; caller holds g_mu. */
static void complete_locked(pmq_io *io, int status)
{
	if (io->done++) {
		g_double++;
		return;
	}
	io->status = status;
	io->seq = ++g_seq;
	pthread_cond_broadcast(&g_cv);
}

static void fake_io_done(pmq_io *io, int status, int64_t value)
{
#ifdef STORAGE_LMDB
	__atomic_add_fetch(&g_io_entered, 1, __ATOMIC_SEQ_CST);
#endif
	pthread_mutex_lock(&g_mu);
	if (!io->done)
		io->value = value;
	complete_locked(io, status);
	pthread_mutex_unlock(&g_mu);
}

static void fake_io_done_data(pmq_io *io, int status, void *data, size_t len,
                              void (*free_fn)(void *))
{
#ifdef STORAGE_LMDB
	__atomic_add_fetch(&g_io_entered, 1, __ATOMIC_SEQ_CST);
#endif
	pthread_mutex_lock(&g_mu);
	if (!io->done) {
		io->data = data;
		io->len = len;
		io->free_fn = free_fn;
		io->is_data = 1;
	} else if (free_fn) {
		free_fn(data); /* a second completion: counted below */
	}
	complete_locked(io, status);
	pthread_mutex_unlock(&g_mu);
}

static struct pmq_host_api g_api = {
	.abi_major = PMQ_ABI_MAJOR,
	.abi_minor = PMQ_ABI_MINOR,
	.size = sizeof(struct pmq_host_api),
	.log = fake_log,
	.vlog = fake_vlog,
	.strerror = fake_strerror,
	.free = free,
	.cfg_bool = fake_cfg_bool,
	.cfg_int = fake_cfg_int,
	.cfg_size = fake_cfg_size,
	.cfg_duration_ms = fake_cfg_duration_ms,
	.instance_name = fake_instance_name,
	.data_dir = fake_data_dir,
	.now_ms = fake_now_ms,
	.monotonic_ms = fake_monotonic_ms,
	.timer_new = fake_timer_new,
	.post = fake_post,
	.io_done = fake_io_done,
	.io_done_data = fake_io_done_data,
};

/* Returns a new io owned by the test; release with io_free. */
static pmq_io *io_new(void)
{
	pmq_io *io = calloc(1, sizeof(*io));

	assert_non_null(io);
	return io;
}

static void io_free(pmq_io *io)
{
	if (io->free_fn)
		io->free_fn(io->data);
	free(io);
}

/* Wait until io completes (at most ms), running posted callbacks meanwhile.
 * Returns its status; fails the test on timeout. */
static int wait_io(pmq_io *io, int64_t ms)
{
	struct timespec dl;
	int done;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&g_mu);
	for (;;) {
		while (g_posted) {
			struct posted *p = g_posted;

			g_posted = p->next;
			if (g_posted == NULL)
				g_posted_tail = &g_posted;
			pthread_mutex_unlock(&g_mu);
			p->fn(p->arg);
			free(p);
			pthread_mutex_lock(&g_mu);
		}
		if (io->done)
			break;
		if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) == ETIMEDOUT &&
		    !io->done && !g_posted)
			break;
	}
	done = io->done;
	pthread_mutex_unlock(&g_mu);
	if (!done)
		fail_msg("no completion within %lld ms", (long long)ms);
	return io->status;
}

static int io_is_done(pmq_io *io)
{
	int d;

	pthread_mutex_lock(&g_mu);
	d = io->done;
	pthread_mutex_unlock(&g_mu);
	return d;
}

/* ---- the plugin and one store per test ---- */

static void *g_dl;
static const struct pmq_storage_ops *g_ops;

struct fx {
	void *st;
	struct pmq_instance inst;
	/* Batches appended to the log under test, to check reads. */
	struct {
		int64_t base;
		uint32_t records;
		size_t len;
	} b[64];
	int nb;
};

/* Start a store on g_data_dir; cfg is NULL or "key", "value", ..., NULL.
 * Returns PMQ_OK, or PMQ_ERR_NOTFOUND when the plugin lacks a key (the
 * caller skips), failing the test on anything else. */
static int store_open(struct fx *f, const char *const *cfg)
{
	char err[256] = "";
	int rc;

	f->inst.name = "storage " STORAGE_PLUGIN;
	f->st = g_ops->create(&f->inst);
	assert_non_null(f->st);
	for (; cfg && cfg[0]; cfg += 2) {
		rc = g_ops->configure(f->st, cfg[0], cfg[1], err, sizeof(err));
		if (rc == PMQ_ERR_NOTFOUND) {
			g_ops->destroy(f->st);
			f->st = NULL;
			return rc;
		}
		if (rc != PMQ_OK)
			fail_msg("configure %s=%s: %d %s", cfg[0], cfg[1], rc,
			         err);
	}
	assert_int_equal(g_ops->start(f->st), PMQ_OK);
	return PMQ_OK;
}

static void store_close(struct fx *f)
{
	if (f->st == NULL)
		return;
	g_ops->stop(f->st);
	g_ops->destroy(f->st);
	f->st = NULL;
}

/* Reopen with cfg, skipping the test when a key is not supported. */
#define REOPEN_OR_SKIP(f, ...)                                                \
	do {                                                                  \
		static const char *const cfg_[] = {__VA_ARGS__, NULL};        \
		store_close(f);                                               \
		if (store_open((f), cfg_) == PMQ_ERR_NOTFOUND) {              \
			fprintf(stderr, "%s: not supported by " STORAGE_PLUGIN \
			                ", skipped\n", cfg_[0]);             \
			skip();                                               \
		}                                                             \
	} while (0)

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(g_data_dir, sizeof(g_data_dir), "/tmp/pmq-storage-XXXXXX");
	if (mkdtemp(g_data_dir) == NULL) {
		free(f);
		return -1;
	}
	pthread_mutex_lock(&g_mu);
	g_double = 0;
	pthread_mutex_unlock(&g_mu);
	if (store_open(f, NULL) != PMQ_OK) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	unsigned dbl;

	store_close(f);
	free(f);
	nftw(g_data_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	pthread_mutex_lock(&g_mu);
	dbl = g_double;
	pthread_mutex_unlock(&g_mu);
	/* Exactly once: a second completion is a plugin bug. */
	return dbl ? -1 : 0;
}

/* ---- helpers for logs ---- */

/* The bytes of a fake batch: recognisable from its base offset.  The
 * storage treats batches as opaque, so no RecordBatch framing is needed. */
static void fill(unsigned char *p, int64_t base, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (unsigned char)(base * 31 + (int64_t)i * 7 + 1);
}

static void *log_open(struct fx *f, const char *topic, int32_t part,
                      int64_t *start, int64_t *end)
{
	struct pmq_log_state ls = {.size = sizeof(ls)};
	int err = -999;
	void *log = g_ops->log_open(f->st, topic, part, &ls, &err);

	assert_non_null(log);
	assert_int_equal(err, PMQ_OK);
	if (start)
		*start = ls.log_start;
	if (end)
		*end = ls.log_end;
	return log;
}

/* Submit one append without waiting; returns its io. */
static pmq_io *append_async(struct fx *f, void *log, int64_t base,
                            uint32_t records, size_t len, int64_t ts)
{
	struct pmq_batch_meta m = {
	    .size = sizeof(m),
	    .records = records,
	    .base_offset = base,
	    .first_timestamp_ms = ts,
	    .max_timestamp_ms = ts + records - 1,
	};
	unsigned char *data = malloc(len);
	pmq_io *io = io_new();

	assert_non_null(data);
	fill(data, base, len);
	g_ops->log_append(f->st, log, &m, data, len, io);
	/* The plugin promised to copy: scribble before it completes. */
	memset(data, 0xee, len);
	free(data);
	return io;
}

/* Append and wait; remembers the batch in f.  Returns the status. */
static int append(struct fx *f, void *log, int64_t base, uint32_t records,
                  size_t len, int64_t ts)
{
	pmq_io *io = append_async(f, log, base, records, len, ts);
	int rc = wait_io(io, WAIT_MS);

	if (rc == PMQ_OK) {
		assert_int_equal(io->value, base + records);
		assert_true(f->nb < 64);
		f->b[f->nb].base = base;
		f->b[f->nb].records = records;
		f->b[f->nb].len = len;
		f->nb++;
	}
	io_free(io);
	return rc;
}

/* Read and check the result is exactly batches f->b[first .. first+n). */
static void expect_read(struct fx *f, void *log, int64_t off, size_t max,
                        int64_t limit, int first, int n)
{
	pmq_io *io = io_new();
	size_t want = 0, at = 0;
	unsigned char *buf;
	int i;

	g_ops->log_read(f->st, log, off, max, limit, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
	assert_true(io->is_data);
	for (i = first; i < first + n; i++)
		want += f->b[i].len;
	if (want != io->len)
		fail_msg("read %lld max %zu limit %lld: %zu bytes, want %zu "
		         "(batches %d..%d)",
		         (long long)off, max, (long long)limit, io->len, want,
		         first, first + n - 1);
	for (i = first; i < first + n; i++) {
		buf = malloc(f->b[i].len);
		assert_non_null(buf);
		fill(buf, f->b[i].base, f->b[i].len);
		assert_memory_equal((unsigned char *)io->data + at, buf,
		                    f->b[i].len);
		at += f->b[i].len;
		free(buf);
	}
	io_free(io);
}

/* Read expecting an error status. */
static void expect_read_err(struct fx *f, void *log, int64_t off, int err)
{
	pmq_io *io = io_new();

	g_ops->log_read(f->st, log, off, 1 << 20, INT64_MAX, io);
	assert_int_equal(wait_io(io, WAIT_MS), err);
	assert_true(io->is_data);
	io_free(io);
}

static int64_t trim(struct fx *f, void *log, int64_t new_start)
{
	pmq_io *io = io_new();
	int64_t v;

	g_ops->log_trim(f->st, log, new_start, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
	v = io->value;
	io_free(io);
	return v;
}

/* Three batches: A = 0 (1 record, 10 bytes), B = 1..5 (20 bytes),
 * C = 6..7 (30 bytes). */
static void *abc(struct fx *f, const char *topic)
{
	void *log = log_open(f, topic, 0, NULL, NULL);

	assert_int_equal(append(f, log, 0, 1, 10, 1000), PMQ_OK);
	assert_int_equal(append(f, log, 1, 5, 20, 2000), PMQ_OK);
	assert_int_equal(append(f, log, 6, 2, 30, 3000), PMQ_OK);
	return log;
}

/* ---- helpers for key-value state ---- */

static int kv_put(struct fx *f, const char *ns, const char *k, size_t klen,
                  const char *v, size_t vlen)
{
	pmq_io *io = io_new();
	int rc;

	g_ops->kv_put(f->st, ns, k, klen, v, vlen, io);
	rc = wait_io(io, WAIT_MS);
	io_free(io);
	return rc;
}

static int kv_del(struct fx *f, const char *ns, const char *k, size_t klen)
{
	pmq_io *io = io_new();
	int rc;

	g_ops->kv_del(f->st, ns, k, klen, io);
	rc = wait_io(io, WAIT_MS);
	io_free(io);
	return rc;
}

/* Check ns/k holds exactly v (v NULL: absent). */
static void expect_kv(struct fx *f, const char *ns, const char *k,
                      size_t klen, const char *v, size_t vlen)
{
	void *val = NULL;
	size_t len = 12345;
	int rc = g_ops->kv_get(f->st, ns, k, klen, &val, &len);

	if (v == NULL) {
		assert_int_equal(rc, PMQ_ERR_NOTFOUND);
		return;
	}
	assert_int_equal(rc, PMQ_OK);
	assert_non_null(val);
	assert_int_equal(len, vlen);
	if (vlen)
		assert_memory_equal(val, v, vlen);
	free(val);
}

#define S(x) x, sizeof(x) - 1 /* a literal as pointer and length */

struct scan_acc {
	char keys[16][8];
	size_t klen[16];
	int n;
	int stop_after; /* 0: never stop */
};

static int scan_cb(void *arg, const void *key, size_t key_len,
                   const void *val, size_t val_len)
{
	struct scan_acc *a = arg;

	assert_true(a->n < 16 && key_len <= 8);
	/* Values in the scan test are the key followed by "!". */
	assert_int_equal(val_len, key_len + 1);
	assert_memory_equal(val, key, key_len);
	memcpy(a->keys[a->n], key, key_len);
	a->klen[a->n] = key_len;
	a->n++;
	return a->stop_after && a->n >= a->stop_after;
}

/* ---- cases: logs ---- */

static void test_append_read_offsets(void **state)
{
	struct fx *f = *state;
	void *log = abc(f, "t");

	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 3); /* first */
	expect_read(f, log, 1, 1 << 20, INT64_MAX, 1, 2); /* middle */
	expect_read(f, log, 3, 1 << 20, INT64_MAX, 1, 2); /* inside B */
	expect_read(f, log, 5, 1 << 20, INT64_MAX, 1, 2); /* B's last */
	expect_read(f, log, 6, 1 << 20, INT64_MAX, 2, 1); /* last */
	expect_read(f, log, 7, 1 << 20, INT64_MAX, 2, 1); /* inside C */
	g_ops->log_close(f->st, log);
}

static void test_read_max_bytes(void **state)
{
	struct fx *f = *state;
	void *log = abc(f, "t");

	/* The first batch always whole, however small max_bytes. */
	expect_read(f, log, 0, 0, INT64_MAX, 0, 1);
	expect_read(f, log, 0, 1, INT64_MAX, 0, 1);
	expect_read(f, log, 0, 10, INT64_MAX, 0, 1);
	expect_read(f, log, 0, 29, INT64_MAX, 0, 1);
	expect_read(f, log, 0, 30, INT64_MAX, 0, 2); /* exactly fits */
	expect_read(f, log, 0, 59, INT64_MAX, 0, 2);
	expect_read(f, log, 0, 60, INT64_MAX, 0, 3);
	expect_read(f, log, 3, 5, INT64_MAX, 1, 1);
	g_ops->log_close(f->st, log);
}

static void test_read_limit(void **state)
{
	struct fx *f = *state;
	void *log = abc(f, "t");

	expect_read(f, log, 0, 1 << 20, 0, 0, 0);
	expect_read(f, log, 0, 1 << 20, 1, 0, 1);
	expect_read(f, log, 0, 1 << 20, 6, 0, 2);
	expect_read(f, log, 0, 1 << 20, 8, 0, 3);
	expect_read(f, log, 1, 1 << 20, 1, 0, 0); /* B starts at limit */
	expect_read(f, log, 6, 1 << 20, 6, 0, 0);
	/* max_bytes and limit together. */
	expect_read(f, log, 0, 0, 6, 0, 1);
	g_ops->log_close(f->st, log);
}

static void test_read_range(void **state)
{
	struct fx *f = *state;
	int64_t s = -1, e = -1;
	void *log = log_open(f, "empty", 0, &s, &e);

	/* A new log: empty at 0, nothing else. */
	assert_int_equal(s, 0);
	assert_int_equal(e, 0);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 0);
	expect_read_err(f, log, 1, PMQ_ERR_RANGE);
	g_ops->log_close(f->st, log);

	log = abc(f, "t");
	expect_read(f, log, 8, 1 << 20, INT64_MAX, 0, 0); /* at the end */
	expect_read_err(f, log, 9, PMQ_ERR_RANGE);
	expect_read_err(f, log, 1000, PMQ_ERR_RANGE);
	expect_read_err(f, log, -1, PMQ_ERR_RANGE);
	g_ops->log_close(f->st, log);
}

static void test_append_bad_base(void **state)
{
	struct fx *f = *state;
	void *log = abc(f, "t");
	int64_t s, e;

	assert_int_equal(append(f, log, 7, 1, 10, 0), PMQ_ERR_INVAL);
	assert_int_equal(append(f, log, 9, 1, 10, 0), PMQ_ERR_INVAL);
	assert_int_equal(append(f, log, 0, 1, 10, 0), PMQ_ERR_INVAL);
	g_ops->log_close(f->st, log);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 8);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 3);
	g_ops->log_close(f->st, log);
}

/* The end offset after batch i of test_completion_order. */
static int64_t order_end(int i)
{
	static const int64_t in_group[] = {1, 3, 6};

	return (int64_t)(i / 3) * 6 + in_group[i % 3];
}

/* Submitted without waiting, completed in submission order, values
 * included; kv writes to one namespace likewise. */
static void test_completion_order(void **state)
{
	enum { N = 1000, K = 200 };
	struct fx *f = *state;
	pmq_io **io = calloc(N, sizeof(*io));
	pmq_io **kio = calloc(K, sizeof(*kio));
	void *log = log_open(f, "order", 0, NULL, NULL);
	char v[16];
	int i, n;
	int64_t s, e;

	assert_non_null(io);
	assert_non_null(kio);
	for (i = 0; i < N; i++) {
		/* Record counts 1, 2, 3, 1, 2, 3...: values are not just i+1,
		 * and batch i starts at the sum of the earlier counts. */
		io[i] = append_async(f, log, order_end(i) - 1 - i % 3,
		                     1 + (uint32_t)(i % 3), 16, i);
		if (i < K) {
			n = snprintf(v, sizeof(v), "v%d", i);
			kio[i] = io_new();
			g_ops->kv_put(f->st, "order", S("key"), v, (size_t)n,
			              kio[i]);
		}
	}
	for (i = 0; i < N; i++) {
		assert_int_equal(wait_io(io[i], WAIT_MS), PMQ_OK);
		assert_int_equal(io[i]->value, order_end(i));
		if (i > 0)
			assert_true(io[i]->seq > io[i - 1]->seq);
	}
	for (i = 0; i < K; i++) {
		assert_int_equal(wait_io(kio[i], WAIT_MS), PMQ_OK);
		if (i > 0)
			assert_true(kio[i]->seq > kio[i - 1]->seq);
	}
	n = snprintf(v, sizeof(v), "v%d", K - 1);
	expect_kv(f, "order", S("key"), v, (size_t)n);
	g_ops->log_close(f->st, log);
	log = log_open(f, "order", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, io[N - 1]->value);
	g_ops->log_close(f->st, log);
	for (i = 0; i < N; i++)
		io_free(io[i]);
	for (i = 0; i < K; i++)
		io_free(kio[i]);
	free(io);
	free(kio);
}

static void test_reopen_state(void **state)
{
	struct fx *f = *state;
	void *log = abc(f, "t");
	int64_t s = -1, e = -1;

	g_ops->log_close(f->st, log);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 8);
	/* Appends go on from the reported end. */
	assert_int_equal(append(f, log, 8, 1, 5, 4000), PMQ_OK);
	expect_read(f, log, 6, 1 << 20, INT64_MAX, 2, 2);
	g_ops->log_close(f->st, log);
	/* Another partition of the same topic is another log. */
	log = log_open(f, "t", 1, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 0);
	g_ops->log_close(f->st, log);
}

struct list_acc {
	int n;
	int seen[3];
};

static void list_cb(void *arg, const char *topic, int32_t partition)
{
	struct list_acc *a = arg;

	a->n++;
	if (!strcmp(topic, "a") && partition == 0)
		a->seen[0]++;
	else if (!strcmp(topic, "a") && partition == 2)
		a->seen[1]++;
	else if (!strcmp(topic, "b.c/d") && partition == 0)
		a->seen[2]++;
	else
		fail_msg("log_list: unexpected %s/%d", topic, (int)partition);
}

static void test_log_list(void **state)
{
	struct fx *f = *state;
	struct list_acc a = {0};
	void *l1 = log_open(f, "a", 0, NULL, NULL);
	void *l2 = log_open(f, "a", 2, NULL, NULL);
	void *l3 = log_open(f, "b.c/d", 0, NULL, NULL);

	assert_int_equal(append(f, l3, 0, 1, 8, 0), PMQ_OK);
	assert_int_equal(g_ops->log_list(f->st, list_cb, &a), PMQ_OK);
	assert_int_equal(a.n, 3);
	assert_int_equal(a.seen[0], 1);
	assert_int_equal(a.seen[1], 1);
	assert_int_equal(a.seen[2], 1);
	g_ops->log_close(f->st, l1);
	g_ops->log_close(f->st, l2);
	g_ops->log_close(f->st, l3);
}

static void test_trim(void **state)
{
	struct fx *f = *state;
	void *log = log_open(f, "t", 0, NULL, NULL);
	int64_t s, e;
	int i;

	for (i = 0; i < 5; i++) /* 0-9, 10-19, ... 40-49 */
		assert_int_equal(append(f, log, i * 10, 10, 100, i), PMQ_OK);
	/* 25 is inside batch 20-29, which stays whole. */
	assert_int_equal(trim(f, log, 25), 20);
	expect_read_err(f, log, 19, PMQ_ERR_RANGE);
	expect_read_err(f, log, 0, PMQ_ERR_RANGE);
	expect_read(f, log, 20, 1 << 20, INT64_MAX, 2, 3);
	expect_read(f, log, 25, 1 << 20, INT64_MAX, 2, 3);
	/* Behind the start: nothing moves. */
	assert_int_equal(trim(f, log, 10), 20);
	/* A batch boundary drops exactly the batches before it. */
	assert_int_equal(trim(f, log, 30), 30);
	expect_read_err(f, log, 29, PMQ_ERR_RANGE);
	expect_read(f, log, 30, 1 << 20, INT64_MAX, 3, 2);
	g_ops->log_close(f->st, log);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 30);
	assert_int_equal(e, 50);
	/* Everything: the log is empty at its end and goes on from there. */
	assert_int_equal(trim(f, log, 50), 50);
	expect_read_err(f, log, 49, PMQ_ERR_RANGE);
	expect_read(f, log, 50, 1 << 20, INT64_MAX, 0, 0);
	assert_int_equal(append(f, log, 50, 2, 10, 9), PMQ_OK);
	expect_read(f, log, 50, 1 << 20, INT64_MAX, 5, 1);
	g_ops->log_close(f->st, log);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 50);
	assert_int_equal(e, 52);
	g_ops->log_close(f->st, log);
}

static void test_log_remove(void **state)
{
	struct fx *f = *state;
	struct list_acc a = {0};
	void *gone = log_open(f, "x", 0, NULL, NULL);
	void *keep = log_open(f, "a", 0, NULL, NULL);
	pmq_io *io = io_new();
	int64_t s = -1, e = -1;

	assert_int_equal(append(f, gone, 0, 3, 50, 0), PMQ_OK);
	assert_int_equal(append(f, keep, 0, 1, 10, 0), PMQ_OK);
	g_ops->log_remove(f->st, gone, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
	io_free(io);
	assert_int_equal(g_ops->log_list(f->st, list_cb, &a), PMQ_OK);
	assert_int_equal(a.n, 1);
	assert_int_equal(a.seen[0], 1);
	/* The name can be used again, for a new, empty log. */
	gone = log_open(f, "x", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 0);
	expect_read(f, gone, 0, 1 << 20, INT64_MAX, 0, 0);
	/* The other log is untouched (its batch is f->b[1]). */
	expect_read(f, keep, 0, 1 << 20, INT64_MAX, 1, 1);
	g_ops->log_close(f->st, gone);
	g_ops->log_close(f->st, keep);
}

static void test_offset_for_time(void **state)
{
	static const struct {
		int64_t ts, want;
	} q[] = {{INT64_MIN, 0}, {0, 0},    {102, 0},   {103, 1},
	         {201, 1},       {202, 5},  {1000, 5},  {1001, -1},
	         {INT64_MAX, -1}};
	struct fx *f = *state;
	void *log;
	size_t i;

	if (g_ops->log_offset_for_time == NULL)
		skip(); /* optional op */
	log = log_open(f, "t", 0, NULL, NULL);
	/* max timestamps 102, 201, 1000 (ts + records - 1). */
	assert_int_equal(append(f, log, 0, 1, 8, 102), PMQ_OK);
	assert_int_equal(append(f, log, 1, 4, 8, 198), PMQ_OK);
	assert_int_equal(append(f, log, 5, 1, 8, 1000), PMQ_OK);
	for (i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		pmq_io *io = io_new();

		g_ops->log_offset_for_time(f->st, log, q[i].ts, io);
		assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
		if (io->value != q[i].want)
			fail_msg("offset_for_time(%lld) = %lld, want %lld",
			         (long long)q[i].ts, (long long)io->value,
			         (long long)q[i].want);
		io_free(io);
	}
	g_ops->log_close(f->st, log);
}

/* ---- cases: key-value state ---- */

static void test_kv_basic(void **state)
{
	struct fx *f = *state;
	int rc;

	expect_kv(f, "none", S("k"), NULL, 0);
	assert_int_equal(kv_put(f, "ns1", S("k1"), S("v1")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns2", S("k1"), S("other")), PMQ_OK);
	expect_kv(f, "ns1", S("k1"), S("v1"));
	expect_kv(f, "ns2", S("k1"), S("other"));
	expect_kv(f, "ns1", S("k"), NULL, 0);
	expect_kv(f, "ns1", S("k10"), NULL, 0);
	/* Replace, then shrink. */
	assert_int_equal(kv_put(f, "ns1", S("k1"), S("a longer value")),
	                 PMQ_OK);
	expect_kv(f, "ns1", S("k1"), S("a longer value"));
	assert_int_equal(kv_put(f, "ns1", S("k1"), S("v")), PMQ_OK);
	expect_kv(f, "ns1", S("k1"), S("v"));
	/* Binary keys, empty values. */
	assert_int_equal(kv_put(f, "ns1", S("\0k\xff"), "", 0), PMQ_OK);
	expect_kv(f, "ns1", S("\0k\xff"), "", 0);
	expect_kv(f, "ns1", S("\0k"), NULL, 0);
	/* Delete. */
	assert_int_equal(kv_del(f, "ns1", S("k1")), PMQ_OK);
	expect_kv(f, "ns1", S("k1"), NULL, 0);
	expect_kv(f, "ns2", S("k1"), S("other"));
	/* Deleting an absent key is not an error of the store; both
	 * answers are accepted until storage.h says which. */
	rc = kv_del(f, "ns1", S("absent"));
	assert_true(rc == PMQ_OK || rc == PMQ_ERR_NOTFOUND);
}

static void test_kv_scan(void **state)
{
	static const char *const keys[] = {"b", "a", "abc", "ab", "ac",
	                                   "\xff", "aa"};
	struct fx *f = *state;
	struct scan_acc a;
	char v[16];
	size_t i;

	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		size_t n = strlen(keys[i]);

		memcpy(v, keys[i], n);
		v[n] = '!';
		assert_int_equal(kv_put(f, "scan", keys[i], n, v, n + 1),
		                 PMQ_OK);
	}
	/* A key with a NUL byte sorts right after its prefix. */
	assert_int_equal(kv_put(f, "scan", S("a\0"), S("a\0!")), PMQ_OK);
	assert_int_equal(kv_put(f, "other", S("a1"), S("a1!")), PMQ_OK);

	memset(&a, 0, sizeof(a));
	assert_int_equal(g_ops->kv_scan(f->st, "scan", S("a"), scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 6);
	assert_int_equal(a.klen[0], 1);
	assert_memory_equal(a.keys[0], "a", 1);
	assert_int_equal(a.klen[1], 2);
	assert_memory_equal(a.keys[1], "a\0", 2);
	assert_memory_equal(a.keys[2], "aa", 2);
	assert_memory_equal(a.keys[3], "ab", 2);
	assert_int_equal(a.klen[4], 3);
	assert_memory_equal(a.keys[4], "abc", 3);
	assert_memory_equal(a.keys[5], "ac", 2);

	memset(&a, 0, sizeof(a)); /* everything, in byte order */
	assert_int_equal(g_ops->kv_scan(f->st, "scan", "", 0, scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 8);
	assert_memory_equal(a.keys[6], "b", 1);
	assert_memory_equal(a.keys[7], "\xff", 1);

	memset(&a, 0, sizeof(a));
	assert_int_equal(g_ops->kv_scan(f->st, "scan", S("ab"), scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 2);

	memset(&a, 0, sizeof(a)); /* early stop */
	a.stop_after = 2;
	assert_int_equal(g_ops->kv_scan(f->st, "scan", S("a"), scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 2);

	memset(&a, 0, sizeof(a));
	assert_int_equal(g_ops->kv_scan(f->st, "scan", S("z"), scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 0);
	assert_int_equal(g_ops->kv_scan(f->st, "nothing", "", 0, scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 0);
}

/* kv_get and kv_scan see writes submitted before them, completed or not.
 * With memory, delay_ms holds the completions back so that "not yet
 * completed" is certain rather than likely. */
static void test_kv_sees_pending(void **state)
{
	struct fx *f = *state;
	pmq_io *p1, *p2, *d1;
	struct scan_acc a;
	int slow = 0;

	if (!durable) {
		REOPEN_OR_SKIP(f, "delay_ms", "200");
		slow = 1;
	}
	p1 = io_new();
	p2 = io_new();
	d1 = io_new();
	g_ops->kv_put(f->st, "s", S("k"), S("k!"), p1);
	g_ops->kv_put(f->st, "s", S("j"), S("j!"), p2);
	if (slow)
		assert_false(io_is_done(p2));
	expect_kv(f, "s", S("k"), S("k!"));
	memset(&a, 0, sizeof(a));
	assert_int_equal(g_ops->kv_scan(f->st, "s", "", 0, scan_cb, &a),
	                 PMQ_OK);
	assert_int_equal(a.n, 2);
	assert_memory_equal(a.keys[0], "j", 1);
	g_ops->kv_del(f->st, "s", S("k"), d1);
	expect_kv(f, "s", S("k"), NULL, 0);
	if (slow)
		assert_false(io_is_done(d1));
	assert_int_equal(wait_io(p1, WAIT_MS), PMQ_OK);
	assert_int_equal(wait_io(p2, WAIT_MS), PMQ_OK);
	assert_int_equal(wait_io(d1, WAIT_MS), PMQ_OK);
	assert_true(p1->seq < p2->seq && p2->seq < d1->seq);
	expect_kv(f, "s", S("k"), NULL, 0);
	expect_kv(f, "s", S("j"), S("j!"));
	io_free(p1);
	io_free(p2);
	io_free(d1);
}

/* A full store refuses new data with PMQ_ERR_NOSPC and keeps what it has. */
static void test_nospc(void **state)
{
	struct fx *f = *state;
	void *log;
	int64_t s, e, end = 0;
	int i, rc = PMQ_OK;

	REOPEN_OR_SKIP(f, "max_bytes", "8k");
	assert_int_equal(kv_put(f, "ns", S("keep"), S("kept")), PMQ_OK);
	log = log_open(f, "t", 0, NULL, NULL);
	for (i = 0; i < 64 && rc == PMQ_OK; i++) {
		rc = append(f, log, end, 2, 1000, i);
		if (rc == PMQ_OK)
			end += 2;
	}
	assert_int_equal(rc, PMQ_ERR_NOSPC);
	assert_true(f->nb >= 1);
	/* A big put fails too, and leaves the old value alone. */
	{
		static char big[16384];

		assert_int_equal(kv_put(f, "ns", S("keep"), big, sizeof(big)),
		                 PMQ_ERR_NOSPC);
		assert_int_equal(kv_put(f, "ns", S("new"), big, sizeof(big)),
		                 PMQ_ERR_NOSPC);
	}
	expect_kv(f, "ns", S("keep"), S("kept"));
	expect_kv(f, "ns", S("new"), NULL, 0);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, f->nb);
	g_ops->log_close(f->st, log);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, end);
	g_ops->log_close(f->st, log);
}

/* stop completes every pending io before it returns, in order. */
static void test_stop_completes(void **state)
{
	enum { N = 30 };
	struct fx *f = *state;
	pmq_io *io[N + 10];
	void *log;
	int i;

	if (!durable)
		REOPEN_OR_SKIP(f, "delay_ms", "5");
	log = log_open(f, "t", 0, NULL, NULL);
	for (i = 0; i < N; i++)
		io[i] = append_async(f, log, i, 1, 64, i);
	for (i = 0; i < 10; i++) {
		io[N + i] = io_new();
		g_ops->kv_put(f->st, "ns", S("k"), S("v"), io[N + i]);
	}
	g_ops->log_close(f->st, log);
	g_ops->stop(f->st);
	/* No waiting: everything must be done already. */
	for (i = 0; i < N + 10; i++) {
		assert_true(io_is_done(io[i]));
		assert_true(io[i]->status == PMQ_OK ||
		            io[i]->status == PMQ_ERR_CANCELED);
		if (i > 0 && i != N)
			assert_true(io[i]->seq > io[i - 1]->seq);
	}
	for (i = 0; i < N + 10; i++)
		io_free(io[i]);
	g_ops->destroy(f->st);
	f->st = NULL;
}

/* ---- durable plugins only: a restart keeps everything ---- */

static void test_durable_reopen(void **state)
{
	struct fx *f = *state;
	struct list_acc a = {0};
	void *log;
	int64_t s, e;

	if (!durable)
		skip();
	log = log_open(f, "a", 0, NULL, NULL);
	assert_int_equal(append(f, log, 0, 1, 10, 100), PMQ_OK);
	assert_int_equal(append(f, log, 1, 5, 4000, 200), PMQ_OK);
	assert_int_equal(append(f, log, 6, 2, 30, 300), PMQ_OK);
	assert_int_equal(trim(f, log, 1), 1);
	g_ops->log_close(f->st, log);
	g_ops->log_close(f->st, log_open(f, "a", 2, NULL, NULL));
	assert_int_equal(kv_put(f, "ns", S("k1"), S("v1")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k2"), S("v2")), PMQ_OK);
	assert_int_equal(kv_del(f, "ns", S("k2")), PMQ_OK);

	store_close(f);
	assert_int_equal(store_open(f, NULL), PMQ_OK);

	assert_int_equal(g_ops->log_list(f->st, list_cb, &a), PMQ_OK);
	assert_int_equal(a.n, 2);
	log = log_open(f, "a", 0, &s, &e);
	assert_int_equal(s, 1);
	assert_int_equal(e, 8);
	expect_read(f, log, 1, 1 << 20, INT64_MAX, 1, 2);
	assert_int_equal(append(f, log, 8, 1, 10, 400), PMQ_OK);
	g_ops->log_close(f->st, log);
	expect_kv(f, "ns", S("k1"), S("v1"));
	expect_kv(f, "ns", S("k2"), NULL, 0);
}

/* ---- durable plugins only: read_only = yes ---- */

/* A digest of every file under g_data_dir (name, size, mtime), to show
 * that a read-only store changed nothing.  LMDB's lock.mdb (its reader
 * table, written by readers too) is left out. */
static uint64_t g_digest;

static void digest_add(const void *p, size_t n)
{
	const unsigned char *c = p;

	while (n--)
		g_digest = (g_digest ^ *c++) * 1099511628211ull;
}

static int digest_cb(const char *path, const struct stat *sb, int flag,
                     struct FTW *ftw)
{
	(void)ftw;
	if (flag != FTW_F || strstr(path, "lock.mdb") != NULL)
		return 0;
	digest_add(path, strlen(path) + 1);
	digest_add(&sb->st_size, sizeof(sb->st_size));
	digest_add(&sb->st_mtim, sizeof(sb->st_mtim));
	return 0;
}

static uint64_t dir_digest(void)
{
	g_digest = 14695981039346656037ull;
	assert_int_equal(nftw(g_data_dir, digest_cb, 16, FTW_PHYS), 0);
	return g_digest;
}

static int64_t try_trim(struct fx *f, void *log, int64_t new_start)
{
	pmq_io *io = io_new();
	int rc;

	g_ops->log_trim(f->st, log, new_start, io);
	rc = wait_io(io, WAIT_MS);
	io_free(io);
	return rc;
}

/* A store reopened with read_only = yes (what the plugins fall back to on
 * a read-only data dir, which root cannot get with chmod) serves every
 * read, refuses every write with PMQ_ERR_RDONLY, cannot create a log,
 * changes no file, and a writable reopen finds everything as it was. */
static void test_read_only(void **state)
{
	struct fx *f = *state;
	struct list_acc a = {0};
	struct scan_acc sa = {0};
	void *log, *nl;
	pmq_io *io;
	int64_t s, e;
	uint64_t before;
	int err = -999;

	if (!durable)
		skip();
	log = abc(f, "a");
	g_ops->log_close(f->st, log);
	assert_int_equal(kv_put(f, "ns", S("k1"), S("k1!")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k2"), S("k2!")), PMQ_OK);
	store_close(f);
	before = dir_digest();
	REOPEN_OR_SKIP(f, "read_only", "yes");

	assert_int_equal(g_ops->log_list(f->st, list_cb, &a), PMQ_OK);
	assert_int_equal(a.n, 1);
	log = log_open(f, "a", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 8);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 3);
	expect_read(f, log, 6, 1 << 20, INT64_MAX, 2, 1);
	if (g_ops->log_offset_for_time != NULL) {
		io = io_new();
		g_ops->log_offset_for_time(f->st, log, 2000, io);
		assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
		assert_int_equal(io->value, 1);
		io_free(io);
	}
	/* Every write: refused, in order, nothing changes. */
	assert_int_equal(append(f, log, 8, 1, 10, 4000), PMQ_ERR_RDONLY);
	assert_int_equal(try_trim(f, log, 6), PMQ_ERR_RDONLY);
	assert_int_equal(kv_put(f, "ns", S("k1"), S("new")), PMQ_ERR_RDONLY);
	assert_int_equal(kv_put(f, "ns", S("k3"), S("k3!")), PMQ_ERR_RDONLY);
	assert_int_equal(kv_del(f, "ns", S("k2")), PMQ_ERR_RDONLY);
	expect_kv(f, "ns", S("k1"), S("k1!"));
	expect_kv(f, "ns", S("k2"), S("k2!"));
	expect_kv(f, "ns", S("k3"), NULL, 0);
	assert_int_equal(g_ops->kv_scan(f->st, "ns", "k", 1, scan_cb, &sa),
	                 PMQ_OK);
	assert_int_equal(sa.n, 2);
	/* The core reopens a log after a failed append: same end. */
	g_ops->log_close(f->st, log);
	log = log_open(f, "a", 0, &s, &e);
	assert_int_equal(e, 8);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 3);
	/* A new log cannot be made. */
	nl = g_ops->log_open(f->st, "new", 0, NULL, &err);
	assert_null(nl);
	assert_int_equal(err, PMQ_ERR_RDONLY);
	io = io_new();
	g_ops->log_remove(f->st, log, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_ERR_RDONLY);
	io_free(io);
	store_close(f);
	assert_true(dir_digest() == before);

	/* Writable again: all there, and writes work. */
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	log = log_open(f, "a", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, 8);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 3);
	assert_int_equal(append(f, log, 8, 1, 10, 4000), PMQ_OK);
	g_ops->log_close(f->st, log);
	expect_kv(f, "ns", S("k2"), S("k2!"));
	assert_int_equal(kv_del(f, "ns", S("k2")), PMQ_OK);
	expect_kv(f, "ns", S("k2"), NULL, 0);
}

/* ---- segments and recovery (every plugin; recovery needs a hook) ---- */

/* Like store_open, but keys the plugin does not know are left out: for
 * knobs (segment size) that some plugins have and others need not. */
static void store_open_lenient(struct fx *f, const char *const *cfg)
{
	char err[256] = "";
	int rc;

	f->inst.name = "storage " STORAGE_PLUGIN;
	f->st = g_ops->create(&f->inst);
	assert_non_null(f->st);
	for (; cfg && cfg[0]; cfg += 2) {
		rc = g_ops->configure(f->st, cfg[0], cfg[1], err, sizeof(err));
		if (rc != PMQ_OK && rc != PMQ_ERR_NOTFOUND)
			fail_msg("configure %s=%s: %d %s", cfg[0], cfg[1], rc,
			         err);
	}
	assert_int_equal(g_ops->start(f->st), PMQ_OK);
}

/* Small segments and a dense index where the plugin has them. */
static const char *const small_segments[] = {
    "segment_bytes", "1k", "index_interval_bytes", "100", NULL};

/* How many of f->b[i..] a read of max bytes returns (the first always). */
static int fit(const struct fx *f, int i, size_t max)
{
	size_t total = f->b[i].len;
	int n = 1;

	while (i + n < f->nb && total + f->b[i + n].len <= max)
		total += f->b[i + n++].len;
	return n;
}

/* Batches of 64 KiB and more (the file plugin reads those straight into
 * the result) mixed with small ones: returned whole and in order, with
 * max_bytes and limit honoured, before and after a restart; with
 * small segments every big batch sits in a segment of its own. */
static void test_big_batches(void **state)
{
	static const size_t sizes[] = {100, 65536, 65535, 200000, 300, 70000};
	enum { NB = sizeof(sizes) / sizeof(sizes[0]) };
	struct fx *f = *state;
	int64_t e;
	void *log;
	int i, pass;

	store_close(f);
	store_open_lenient(f, small_segments);
	log = log_open(f, "big", 0, NULL, NULL);
	for (i = 0; i < NB; i++) /* batch i: offsets 2i, 2i+1 */
		assert_int_equal(append(f, log, 2 * i, 2, sizes[i], 1000 + i),
		                 PMQ_OK);
	for (pass = 0; pass < (durable ? 2 : 1); pass++) {
		if (pass == 1) {
			g_ops->log_close(f->st, log);
			store_close(f);
			store_open_lenient(f, small_segments);
			log = log_open(f, "big", 0, NULL, &e);
			assert_int_equal(e, 2 * NB);
		}
		expect_read(f, log, 0, 1 << 22, INT64_MAX, 0, NB);
		/* max_bytes 1: the first batch still comes whole. */
		for (i = 0; i < NB; i++)
			expect_read(f, log, 2 * i + 1, 1, INT64_MAX, i, 1);
		expect_read(f, log, 2, 300000, INT64_MAX, 1, fit(f, 1, 300000));
		/* Up to the limit (a high watermark) only. */
		expect_read(f, log, 0, 1 << 22, 8, 0, 4);
		expect_read(f, log, 7, 1 << 22, 10, 3, 2);
	}
#ifdef STORAGE_FILE
	{
		/* A byte flipped in the middle of the 200,000-byte batch
		 * (its own segment, base offset 6) while the store runs:
		 * the read path checks the CRC of what it read directly. */
		char p[512];
		unsigned char c;
		struct stat st;
		pmq_io *io;
		int fd;

		snprintf(p, sizeof(p), "%s/logs/big-0/%020d.log", g_data_dir,
		         6);
		fd = open(p, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		assert_true(st.st_size > 200000);
		assert_int_equal(pread(fd, &c, 1, st.st_size / 2), 1);
		c ^= 0x01;
		assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
		close(fd);
		io = io_new();
		g_ops->log_read(f->st, log, 6, 1 << 22, INT64_MAX, io);
		assert_int_equal(wait_io(io, WAIT_MS), PMQ_ERR_CORRUPT);
		io_free(io);
		/* The batches before it are still served. */
		expect_read(f, log, 0, 1 << 22, 6, 0, 3);
	}
#endif
	g_ops->log_close(f->st, log);
}

/* Reads, time lookups and trims over many segments, before and after a
 * restart. */
static void test_segments_cross(void **state)
{
	enum { NB = 40 };
	struct fx *f = *state;
	int64_t s, e;
	void *log;
	int i, pass;

	store_close(f);
	store_open_lenient(f, small_segments);
	log = log_open(f, "seg", 0, NULL, NULL);
	/* Batch i: offsets 2i, 2i+1; 100..120 bytes; max ts 1000+10i+1. */
	for (i = 0; i < NB; i++)
		assert_int_equal(append(f, log, 2 * i, 2, 100 + (size_t)(i % 3) * 10,
		                        1000 + 10 * i),
		                 PMQ_OK);
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < NB; i++) {
			expect_read(f, log, 2 * i, 350, INT64_MAX, i,
			            fit(f, i, 350));
			expect_read(f, log, 2 * i + 1, 1 << 20, INT64_MAX, i,
			            NB - i);
		}
		/* The limit stops a read that crosses segments. */
		expect_read(f, log, 10, 1 << 20, 61, 5, 26);
		if (g_ops->log_offset_for_time != NULL) {
			pmq_io *io = io_new();

			g_ops->log_offset_for_time(f->st, log, 1250, io);
			assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
			assert_int_equal(io->value, 50);
			io_free(io);
		}
		if (!durable)
			break;
		g_ops->log_close(f->st, log);
		store_close(f);
		store_open_lenient(f, small_segments);
		log = log_open(f, "seg", 0, &s, &e);
		assert_int_equal(s, 0);
		assert_int_equal(e, 2 * NB);
	}
	/* 41 is inside batch 20 (40..41), which stays. */
	assert_int_equal(trim(f, log, 41), 40);
	expect_read_err(f, log, 39, PMQ_ERR_RANGE);
	expect_read(f, log, 41, 1 << 20, INT64_MAX, 20, NB - 20);
	g_ops->log_close(f->st, log);
	if (durable) {
		store_close(f);
		store_open_lenient(f, small_segments);
	}
	log = log_open(f, "seg", 0, &s, &e);
	assert_int_equal(s, 40);
	assert_int_equal(e, 2 * NB);
	expect_read(f, log, 40, 1 << 20, INT64_MAX, 20, NB - 20);
	assert_int_equal(append(f, log, 2 * NB, 1, 10, 5000), PMQ_OK);
	expect_read(f, log, 2 * NB, 1 << 20, INT64_MAX, NB, 1);
	g_ops->log_close(f->st, log);
}

/* ---- zero-copy reads: log_read_extents (optional, ABI 1.2) ---- */

static int has_extents(void)
{
	return PMQ_HAS(g_ops, struct pmq_storage_ops, log_read_extents) &&
	       g_ops->log_read_extents != NULL;
}

#define EXTENTS_OR_SKIP()                                                     \
	do {                                                                  \
		if (!has_extents()) {                                         \
			fprintf(stderr, "log_read_extents: not provided by "  \
			                STORAGE_PLUGIN ", skipped\n");        \
			skip();                                               \
		}                                                             \
	} while (0)

/* What an extents answer was made of. */
struct xstat {
	unsigned files, mems; /* pieces of each kind */
	int fds[64];          /* the distinct fds of its file pieces */
	unsigned nfds;
};

static pmq_io *read_extents(struct fx *f, void *log, int64_t off, size_t max,
                            int64_t limit)
{
	pmq_io *io = io_new();

	g_ops->log_read_extents(f->st, log, off, max, limit, io);
	(void)wait_io(io, WAIT_MS);
	assert_true(io->is_data);
	return io;
}

/* The bytes an extents answer describes, gathered from its pieces (pread
 * from a file piece's fd at pos, memcpy from a memory piece), checking its
 * shape on the way: no empty piece, the pieces add up to io->len; an
 * error or an empty answer holds nothing (data NULL and no free_fn, or
 * n = 0).  Returns a new buffer, NULL for no bytes. */
static unsigned char *materialize(pmq_io *io, struct xstat *xs)
{
	const struct pmq_extents *x = io->data;
	unsigned char *buf;
	size_t at = 0;
	uint32_t i, k;

	if (xs != NULL)
		memset(xs, 0, sizeof(*xs));
	if (io->status != PMQ_OK || x == NULL) {
		/* Like log_read: nothing to free. */
		assert_null(io->data);
		assert_null(io->free_fn);
		assert_int_equal(io->len, 0);
		return NULL;
	}
	assert_non_null(io->free_fn);
	assert_true(x->size >= offsetof(struct pmq_extents, v) +
	                           sizeof(x->v));
	if (x->n == 0) {
		assert_int_equal(io->len, 0);
		return NULL;
	}
	assert_non_null(x->v);
	buf = malloc(io->len);
	assert_non_null(buf);
	for (i = 0; i < x->n; i++) {
		const struct pmq_extent *p = &x->v[i];

		assert_true(p->len > 0);
		assert_true(at + p->len <= io->len);
		if (p->fd >= 0) {
			size_t got = 0;

			assert_true(p->pos >= 0);
			while (got < p->len) {
				off_t o = (off_t)(p->pos + (int64_t)got);
				ssize_t n = pread(p->fd, buf + at + got,
				                  p->len - got, o);

				if (n <= 0)
					fail_msg("piece %u: pread(fd %d, %u at "
					         "%lld): %s", i, p->fd, p->len,
					         (long long)p->pos,
					         n ? strerror(errno) : "EOF");
				got += (size_t)n;
			}
			for (k = 0; xs && k < xs->nfds && xs->fds[k] != p->fd;
			     k++)
				;
			if (xs != NULL && k == xs->nfds) {
				assert_true(xs->nfds < 64);
				xs->fds[xs->nfds++] = p->fd;
			}
			if (xs != NULL)
				xs->files++;
		} else {
			assert_non_null(p->data);
			memcpy(buf + at, p->data, p->len);
			if (xs != NULL)
				xs->mems++;
		}
		at += p->len;
	}
	assert_int_equal(at, io->len);
	return buf;
}

/* log_read_extents answers what log_read answers, byte for byte, with the
 * same status. */
static void expect_extents(struct fx *f, void *log, int64_t off, size_t max,
                           int64_t limit, struct xstat *xs)
{
	pmq_io *r = io_new(), *x;
	unsigned char *got;

	g_ops->log_read(f->st, log, off, max, limit, r);
	(void)wait_io(r, WAIT_MS);
	x = read_extents(f, log, off, max, limit);
	if (x->status != r->status || x->len != r->len)
		fail_msg("read %lld max %zu limit %lld: extents %d with %zu "
		         "bytes, log_read %d with %zu", (long long)off, max,
		         (long long)limit, x->status, x->len, r->status,
		         r->len);
	got = materialize(x, xs);
	if (r->len > 0)
		assert_memory_equal(got, r->data, r->len);
	free(got);
	io_free(x);
	io_free(r);
}

/* Open files of this process, or -1 without /proc. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

/* Small batches, batches of 64 KiB and more (a file piece each in the
 * file plugin) and runs of small ones between them: every offset (also
 * inside batches), max_bytes and limit cut-offs, the empty answer at the
 * end and RANGE errors, in one segment and across many small ones. */
static void test_extents_reads(void **state)
{
	static const size_t sizes[] = {100, 200,  65536, 65535, 300, 200000,
	                               70000, 10, 20, 30, 131072, 500};
	static const size_t maxes[] = {0, 1, 250, 65536, 65600, 300000,
	                               1 << 22};
	enum { NB = sizeof(sizes) / sizeof(sizes[0]),
	       NM = sizeof(maxes) / sizeof(maxes[0]) };
	struct fx *f = *state;
	struct xstat xs;
	int64_t end, off;
	void *log;
	int i, pass;
	size_t m;

	EXTENTS_OR_SKIP();
	for (pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			/* Every big batch in a segment of its own; the runs
			 * of small ones cross segments. */
			store_close(f);
			store_open_lenient(f, small_segments);
		}
		log = log_open(f, pass ? "x1" : "x0", 0, NULL, NULL);
		f->nb = 0;
		end = 0;
		for (i = 0; i < NB; i++) {
			uint32_t recs = (uint32_t)(i % 3) + 1;

			assert_int_equal(append(f, log, end, recs, sizes[i],
			                        100 * i),
			                 PMQ_OK);
			end += recs;
		}
		for (off = 0; off <= end; off++)
			for (m = 0; m < NM; m++)
				expect_extents(f, log, off, maxes[m], INT64_MAX,
				               NULL);
		for (i = 0; i < NB; i++) {
			expect_extents(f, log, 0, 1 << 22, f->b[i].base, NULL);
			expect_extents(f, log, f->b[i].base, 1 << 22,
			               f->b[i].base + 1, NULL);
			expect_extents(f, log, f->b[i].base, 300000,
			               f->b[i].base + 4, NULL);
		}
		expect_extents(f, log, 0, 1 << 22, INT64_MAX, &xs);
#ifdef STORAGE_FILE
		/* A file piece per batch of 64 KiB or more, one memory piece
		 * per run of smaller ones (also across segments). */
		assert_int_equal(xs.files, 4);
		assert_int_equal(xs.mems, 4);
		assert_int_equal(xs.nfds, pass ? 4 : 1);
#endif
		expect_extents(f, log, end, 1 << 22, INT64_MAX, NULL);
		expect_extents(f, log, 0, 1 << 22, 0, NULL);
		expect_extents(f, log, end + 1, 1 << 22, INT64_MAX, NULL);
		expect_extents(f, log, 1000, 1 << 22, INT64_MAX, NULL);
		expect_extents(f, log, -1, 1 << 22, INT64_MAX, NULL);
		{
			pmq_io *io = read_extents(f, log, end + 1, 1 << 22,
			                          INT64_MAX);

			assert_int_equal(io->status, PMQ_ERR_RANGE);
			(void)materialize(io, NULL);
			io_free(io);
		}
		if (pass == 1) {
			/* After retention: below the start is out of range,
			 * a read from the start still matches. */
			int64_t s = trim(f, log, f->b[5].base + 1);

			assert_int_equal(s, f->b[5].base);
			expect_extents(f, log, s - 1, 1 << 22, INT64_MAX, NULL);
			for (off = s; off <= end; off++)
				expect_extents(f, log, off, 65536, INT64_MAX,
				               NULL);
		}
		g_ops->log_close(f->st, log);
	}
	/* A new log: empty at 0, RANGE past it. */
	log = log_open(f, "x2", 0, NULL, NULL);
	expect_extents(f, log, 0, 1 << 22, INT64_MAX, NULL);
	expect_extents(f, log, 1, 1 << 22, INT64_MAX, NULL);
	g_ops->log_close(f->st, log);
}

/* An answer stays readable after retention deleted its segment, after its
 * log was closed or removed, after the store stopped: until free_fn,
 * which closes its fds; nothing leaks. */
static void test_extents_lifetime(void **state)
{
	struct fx *f = *state;
	pmq_io *x[3], *r[3];
	struct xstat xs[3];
	unsigned char *got;
	int n0, i;
	unsigned k;
	void *a, *b;

	EXTENTS_OR_SKIP();
	store_close(f);
	n0 = count_fds();
	store_open_lenient(f, small_segments);
	a = log_open(f, "keep", 0, NULL, NULL);
	b = log_open(f, "gone", 0, NULL, NULL);
	assert_int_equal(append(f, a, 0, 2, 100000, 0), PMQ_OK);
	assert_int_equal(append(f, a, 2, 2, 100, 1), PMQ_OK);
	assert_int_equal(append(f, a, 4, 2, 80000, 2), PMQ_OK);
	assert_int_equal(append(f, a, 6, 2, 50, 3), PMQ_OK);
	assert_int_equal(append(f, b, 0, 1, 90000, 4), PMQ_OK);
	assert_int_equal(append(f, b, 1, 1, 70000, 5), PMQ_OK);
	for (i = 0; i < 3; i++)
		r[i] = io_new();
	g_ops->log_read(f->st, a, 0, 1 << 22, INT64_MAX, r[0]);
	g_ops->log_read(f->st, b, 0, 1 << 22, INT64_MAX, r[1]);
	g_ops->log_read(f->st, a, 4, 1 << 22, INT64_MAX, r[2]);
	for (i = 0; i < 3; i++)
		assert_int_equal(wait_io(r[i], WAIT_MS), PMQ_OK);
	x[0] = read_extents(f, a, 0, 1 << 22, INT64_MAX);
	x[1] = read_extents(f, b, 0, 1 << 22, INT64_MAX);
	x[2] = read_extents(f, a, 4, 1 << 22, INT64_MAX);
	for (i = 0; i < 3; i++)
		assert_int_equal(x[i]->status, PMQ_OK);

	/* Retention drops the segments of x[0]'s first batches. */
	assert_int_equal(trim(f, a, 4), 4);
#ifdef STORAGE_FILE
	{
		char p[512];
		struct stat st;

		snprintf(p, sizeof(p), "%s/logs/keep-0/%020d.log", g_data_dir,
		         0);
		assert_int_not_equal(stat(p, &st), 0);
		assert_int_equal(errno, ENOENT);
	}
#endif
	got = materialize(x[0], NULL);
	assert_memory_equal(got, r[0]->data, r[0]->len);
	free(got);
	/* The log of x[1] is removed, the one of x[2] closed. */
	{
		pmq_io *io = io_new();

		g_ops->log_remove(f->st, b, io);
		assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
		io_free(io);
	}
	g_ops->log_close(f->st, a);
	for (i = 0; i < 3; i++) {
		got = materialize(x[i], NULL);
		assert_memory_equal(got, r[i]->data, r[i]->len);
		free(got);
	}
	/* And with the store gone: the answers own what they point at. */
	store_close(f);
	for (i = 0; i < 3; i++) {
		got = materialize(x[i], &xs[i]);
		assert_memory_equal(got, r[i]->data, r[i]->len);
		free(got);
	}
	for (i = 0; i < 3; i++) {
		io_free(x[i]);
		io_free(r[i]);
		/* No other thread runs now: a closed number stays closed. */
		for (k = 0; k < xs[i].nfds; k++) {
			errno = 0;
			assert_int_equal(fcntl(xs[i].fds[k], F_GETFD), -1);
			assert_int_equal(errno, EBADF);
		}
	}
#ifdef STORAGE_FILE
	assert_int_equal(xs[0].files, 2);
	assert_int_equal(xs[1].files, 2);
	assert_int_equal(xs[2].files, 1);
#endif
	if (n0 >= 0)
		assert_int_equal(count_fds(), n0);
}

/*
 * Damage the closed store on disk as `what` says; returns 1 when done, 0
 * when the plugin has no such fixture (the case is skipped).  Logs are
 * "t" partition 0; the hook knows each plugin's files.
 *   "torn batch"   the last batch loses its last bytes
 *   "bad crc"      a byte of the last batch flips
 *   "zero tail"    4096 zero bytes follow the last batch
 *   "index short"  the offset index is cut mid-entry
 *   "index gone"   the indexes are deleted
 *   "index junk"   the offset index is overwritten with garbage
 *   "kv torn"      the last key-value write loses its last bytes
 *   "kv junk"      garbage follows the last key-value write
 */
static int damage(const char *what)
{
	char p[512];
	const char *file = NULL;
	int fd, rc = 0;
	struct stat st;

#ifdef STORAGE_LMDB
	/* LMDB commits whole transactions: no torn batch or index exists.
	 * What can happen is a data file longer than its last page. */
	if (!strcmp(what, "zero tail")) {
		unsigned char zero[4096] = {0};

		snprintf(p, sizeof(p), "%s/lmdb/data.mdb", g_data_dir);
		fd = open(p, O_WRONLY | O_APPEND);
		assert_true(fd >= 0);
		rc = write(fd, zero, sizeof(zero)) == (ssize_t)sizeof(zero)
		         ? 0 : -1;
		close(fd);
		assert_int_equal(rc, 0);
		(void)st;
		return 1;
	}
#endif
	if (strcmp(STORAGE_PLUGIN, "file") != 0)
		return 0; /* other plugins: add their fixtures here */
	if (!strncmp(what, "kv", 2))
		file = "kv.journal";
	else if (!strncmp(what, "index", 5))
		file = "logs/t-0/00000000000000000000.index";
	else
		file = "logs/t-0/00000000000000000000.log";
	snprintf(p, sizeof(p), "%s/%s", g_data_dir, file);
	if (!strcmp(what, "index gone")) {
		assert_int_equal(unlink(p), 0);
		snprintf(p, sizeof(p), "%s/logs/t-0/00000000000000000000"
		         ".timeindex", g_data_dir);
		assert_int_equal(unlink(p), 0);
		return 1;
	}
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	if (!strcmp(what, "torn batch") || !strcmp(what, "kv torn")) {
		rc = ftruncate(fd, st.st_size - 3);
	} else if (!strcmp(what, "bad crc")) {
		unsigned char c;

		assert_int_equal(pread(fd, &c, 1, st.st_size - 1), 1);
		c ^= 0x40;
		rc = pwrite(fd, &c, 1, st.st_size - 1) == 1 ? 0 : -1;
	} else if (!strcmp(what, "zero tail") || !strcmp(what, "kv junk") ||
	           !strcmp(what, "index junk")) {
		unsigned char junk[4096];

		memset(junk, !strcmp(what, "zero tail") ? 0 : 0xa5,
		       sizeof(junk));
		if (!strcmp(what, "index junk"))
			rc = pwrite(fd, junk, 40, 0) == 40 ? 0 : -1;
		else
			rc = pwrite(fd, junk, sizeof(junk), st.st_size) ==
			             (ssize_t)sizeof(junk)
			         ? 0
			         : -1;
	} else if (!strcmp(what, "index short")) {
		rc = ftruncate(fd, st.st_size > 20 ? 20 : 0);
	} else {
		fail_msg("damage: unknown fixture %s", what);
	}
	close(fd);
	assert_int_equal(rc, 0);
	return 1;
}

/* Close the store, damage it, start it again. */
static int damage_and_reopen(struct fx *f, const char *what)
{
	store_close(f);
	if (!damage(what)) {
		fprintf(stderr, "%s: no fixture for " STORAGE_PLUGIN
		                ", skipped\n", what);
		return 0;
	}
	store_open_lenient(f, small_segments);
	return 1;
}

/* A damaged tail is cut back to the last whole good batch; the log goes
 * on from there, and the cut survives a restart. */
static void recover_tail(void **state, const char *what, int64_t want_end)
{
	struct fx *f = *state;
	int64_t s, e;
	void *log;

	if (!durable)
		skip();
	log = abc(f, "t"); /* A = 0, B = 1..5, C = 6..7 */
	g_ops->log_close(f->st, log);
	if (!damage_and_reopen(f, what))
		skip();
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, want_end);
	f->nb = want_end == 8 ? 3 : 2;
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, f->nb);
	assert_int_equal(append(f, log, want_end, 1, 12, 9000), PMQ_OK);
	g_ops->log_close(f->st, log);
	store_close(f);
	store_open_lenient(f, small_segments);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(e, want_end + 1);
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, f->nb);
	g_ops->log_close(f->st, log);
}

static void test_recover_torn_batch(void **state)
{
	recover_tail(state, "torn batch", 6);
}

static void test_recover_bad_crc(void **state)
{
	recover_tail(state, "bad crc", 6);
}

static void test_recover_zero_tail(void **state)
{
	recover_tail(state, "zero tail", 8);
}

/* A short, missing or garbage index is rebuilt: every offset reads. */
static void test_recover_index(void **state)
{
	static const char *const fixtures[] = {"index short", "index gone",
	                                       "index junk"};
	struct fx *f = *state;
	int64_t s, e;
	void *log;
	size_t k;
	int i;

	if (!durable)
		skip();
	store_close(f);
	store_open_lenient(f, small_segments);
	log = log_open(f, "t", 0, NULL, NULL);
	for (i = 0; i < 6; i++) /* one segment: 6 x (50 + frame) < 1k */
		assert_int_equal(append(f, log, i, 1, 50, 100 * i), PMQ_OK);
	g_ops->log_close(f->st, log);
	for (k = 0; k < sizeof(fixtures) / sizeof(fixtures[0]); k++) {
		if (!damage_and_reopen(f, fixtures[k]))
			skip();
		log = log_open(f, "t", 0, &s, &e);
		assert_int_equal(e, 6);
		for (i = 0; i < 6; i++)
			expect_read(f, log, i, 0, INT64_MAX, i, 1);
		if (g_ops->log_offset_for_time != NULL) {
			pmq_io *io = io_new();

			g_ops->log_offset_for_time(f->st, log, 301, io);
			assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
			assert_int_equal(io->value, 4);
			io_free(io);
		}
		g_ops->log_close(f->st, log);
	}
}

/* A torn or garbage key-value tail loses only the torn write. */
static void test_recover_kv(void **state)
{
	struct fx *f = *state;

	if (!durable)
		skip();
	assert_int_equal(kv_put(f, "ns", S("k1"), S("v1")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k2"), S("v2")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k3"), S("v3")), PMQ_OK);
	if (!damage_and_reopen(f, "kv torn"))
		skip();
	expect_kv(f, "ns", S("k1"), S("v1"));
	expect_kv(f, "ns", S("k2"), S("v2"));
	expect_kv(f, "ns", S("k3"), NULL, 0);
	assert_int_equal(kv_put(f, "ns", S("k4"), S("v4")), PMQ_OK);
	if (!damage_and_reopen(f, "kv junk"))
		skip();
	expect_kv(f, "ns", S("k1"), S("v1"));
	expect_kv(f, "ns", S("k4"), S("v4"));
	assert_int_equal(kv_put(f, "ns", S("k5"), S("v5")), PMQ_OK);
	store_close(f);
	store_open_lenient(f, small_segments);
	expect_kv(f, "ns", S("k4"), S("v4"));
	expect_kv(f, "ns", S("k5"), S("v5"));
}

#ifdef STORAGE_LMDB
/* ---- lmdb only (built with -DSTORAGE_LMDB): group commit, the overlay of
 * pending kv writes, a full map, fsync modes ----
 *
 * Determinism without sleeping: while the test holds g_mu, the plugin's
 * writer blocks inside io_done, so whatever the test submits meanwhile is
 * certainly queued and not committed.  No assert may run with g_mu held
 * (a failing assert would leave it locked): results are collected first. */

/* Wait (bounded) until a plugin thread has entered io_done more than
 * `before` times; the caller holds g_mu, so that thread now blocks. */
static int wait_io_entered(unsigned before)
{
	int64_t until = fake_monotonic_ms() + WAIT_MS;
	struct timespec ms1 = {0, 1000000L};

	while (__atomic_load_n(&g_io_entered, __ATOMIC_SEQ_CST) <= before) {
		if (fake_monotonic_ms() > until)
			return 0;
		nanosleep(&ms1, NULL);
	}
	return 1;
}

/* Stop the store and read back its "N syncs for M writes (C commits)". */
static void close_counts(struct fx *f, unsigned long long *syncs,
                         unsigned long long *writes,
                         unsigned long long *commits)
{
	pthread_mutex_lock(&g_log_mu);
	g_sync_line[0] = '\0';
	pthread_mutex_unlock(&g_log_mu);
	store_close(f);
	pthread_mutex_lock(&g_log_mu);
	if (sscanf(strstr(g_sync_line, ": ") ? strstr(g_sync_line, ": ") + 2
	                                     : g_sync_line,
	           "%llu syncs for %llu writes (%llu commits)", syncs, writes,
	           commits) != 3) {
		pthread_mutex_unlock(&g_log_mu);
		fail_msg("no sync summary logged at stop");
	}
	pthread_mutex_unlock(&g_log_mu);
}

/* 1000 appends submitted without waiting (fsync = always) complete in
 * order, and one commit (one sync) covers many of them. */
static void test_lmdb_group_commit(void **state)
{
	enum { N = 1000 };
	struct fx *f = *state;
	pmq_io **io = calloc(N, sizeof(*io));
	unsigned long long syncs, writes, commits;
	unsigned before;
	void *log;
	int i, blocked;

	assert_non_null(io);
	REOPEN_OR_SKIP(f, "fsync", "always");
	log = log_open(f, "gc", 0, NULL, NULL);
	before = __atomic_load_n(&g_io_entered, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&g_mu);
	io[0] = append_async(f, log, 0, 1, 100, 0);
	/* The writer commits the first and then waits in io_done: the
	 * other 999 pile up behind it. */
	blocked = wait_io_entered(before);
	for (i = 1; i < N; i++)
		io[i] = append_async(f, log, i, 1, 100, i);
	pthread_mutex_unlock(&g_mu);
	assert_true(blocked);
	for (i = 0; i < N; i++) {
		assert_int_equal(wait_io(io[i], WAIT_MS), PMQ_OK);
		assert_int_equal(io[i]->value, i + 1);
		if (i > 0)
			assert_true(io[i]->seq > io[i - 1]->seq);
	}
	g_ops->log_close(f->st, log);
	close_counts(f, &syncs, &writes, &commits);
	fprintf(stderr, "group commit: %llu syncs, %llu commits for %llu "
	        "writes\n", syncs, commits, writes);
	assert_int_equal(writes, N);
	/* The open, the first append, the other 999 (bounded groups hold
	 * 4096): three commits, each one sync. */
	assert_true(commits <= 3);
	assert_int_equal(syncs, commits);
	for (i = 0; i < N; i++)
		io_free(io[i]);
	free(io);
	/* And they are all there after a restart. */
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	{
		int64_t s, e;

		log = log_open(f, "gc", 0, &s, &e);
		assert_int_equal(s, 0);
		assert_int_equal(e, N);
		g_ops->log_close(f->st, log);
	}
}

struct big_scan {
	int n;
	char keys[128][8];
	char vals[128][8];
};

static int big_scan_cb(void *arg, const void *key, size_t key_len,
                       const void *val, size_t val_len)
{
	struct big_scan *a = arg;

	if (a->n >= 128 || key_len >= 8 || val_len >= 8)
		return 1; /* checked by the caller through n */
	memcpy(a->keys[a->n], key, key_len);
	a->keys[a->n][key_len] = '\0';
	memcpy(a->vals[a->n], val, val_len);
	a->vals[a->n][val_len] = '\0';
	a->n++;
	return 0;
}

/* kv_get and kv_scan see puts and deletes that are queued and certainly
 * not committed, merged in key order with committed data over more than
 * one scan chunk; and those writes are durable once completed. */
static void test_lmdb_pending_overlay(void **state)
{
	enum { K = 100 };
	struct fx *f = *state;
	pmq_io *io[K], *blocker, *w[5];
	struct big_scan *a = calloc(1, sizeof(*a));
	char k[16];
	void *val = NULL;
	size_t len = 0;
	int i, blocked, get_new, get_del, get_fresh, scan_rc;
	unsigned before;

	assert_non_null(a);
	for (i = 0; i < K; i++) {
		snprintf(k, sizeof(k), "k%03d", i);
		io[i] = io_new();
		g_ops->kv_put(f->st, "ov", k, 4, "old", 3, io[i]);
	}
	for (i = 0; i < K; i++) {
		assert_int_equal(wait_io(io[i], WAIT_MS), PMQ_OK);
		io_free(io[i]);
	}
	before = __atomic_load_n(&g_io_entered, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&g_mu);
	blocker = io_new();
	g_ops->kv_put(f->st, "other", S("x"), S("x"), blocker);
	blocked = wait_io_entered(before);
	for (i = 0; i < 5; i++)
		w[i] = io_new();
	g_ops->kv_put(f->st, "ov", S("k050"), S("new"), w[0]);
	g_ops->kv_del(f->st, "ov", S("k051"), w[1]);
	g_ops->kv_put(f->st, "ov", S("k050x"), S("ins"), w[2]);
	g_ops->kv_put(f->st, "ov", S("k100"), S("end"), w[3]);
	g_ops->kv_put(f->st, "ov", S("k051"), S("re"), w[4]);
	g_ops->kv_del(f->st, "ov", S("k051"), io[0] = io_new());
	get_new = g_ops->kv_get(f->st, "ov", S("k050"), &val, &len) ==
	              PMQ_OK && len == 3 && memcmp(val, "new", 3) == 0;
	free(val);
	val = NULL;
	get_del = g_ops->kv_get(f->st, "ov", S("k051"), &val, &len) ==
	          PMQ_ERR_NOTFOUND;
	get_fresh = g_ops->kv_get(f->st, "ov", S("k050x"), &val, &len) ==
	                PMQ_OK && len == 3 && memcmp(val, "ins", 3) == 0;
	if (get_fresh)
		free(val);
	scan_rc = g_ops->kv_scan(f->st, "ov", S("k"), big_scan_cb, a);
	/* Nothing of it may have completed: the writer is held. */
	for (i = 0; i < 5; i++)
		blocked = blocked && !w[i]->done;
	pthread_mutex_unlock(&g_mu);

	assert_true(blocked);
	assert_true(get_new);
	assert_true(get_del);
	assert_true(get_fresh);
	assert_int_equal(scan_rc, PMQ_OK);
	assert_int_equal(a->n, K - 1 + 2); /* -k051, +k050x, +k100 */
	for (i = 0; i < a->n; i++) {
		const char *want_k, *want_v = "old";

		if (i < 50) {
			snprintf(k, sizeof(k), "k%03d", i);
			want_k = k;
		} else if (i == 50) {
			want_k = "k050";
			want_v = "new";
		} else if (i == 51) {
			want_k = "k050x";
			want_v = "ins";
		} else if (i == a->n - 1) {
			want_k = "k100";
			want_v = "end";
		} else {
			snprintf(k, sizeof(k), "k%03d", i);
			want_k = k;
		}
		if (strcmp(a->keys[i], want_k) || strcmp(a->vals[i], want_v))
			fail_msg("scan[%d] = %s=%s, want %s=%s", i,
			         a->keys[i], a->vals[i], want_k, want_v);
	}
	assert_int_equal(wait_io(blocker, WAIT_MS), PMQ_OK);
	for (i = 0; i < 5; i++) {
		assert_int_equal(wait_io(w[i], WAIT_MS), PMQ_OK);
		if (i > 0)
			assert_true(w[i]->seq > w[i - 1]->seq);
	}
	for (i = 0; i < 5; i++)
		io_free(w[i]);
	assert_int_equal(wait_io(io[0], WAIT_MS), PMQ_OK);
	io_free(io[0]);
	io_free(blocker);
	/* Committed now, the overlay gone: the same answers from LMDB, and
	 * after a restart. */
	for (i = 0; i < 2; i++) {
		expect_kv(f, "ov", S("k050"), S("new"));
		expect_kv(f, "ov", S("k051"), NULL, 0);
		expect_kv(f, "ov", S("k050x"), S("ins"));
		expect_kv(f, "ov", S("k100"), S("end"));
		expect_kv(f, "ov", S("k049"), S("old"));
		memset(a, 0, sizeof(*a));
		assert_int_equal(g_ops->kv_scan(f->st, "ov", S("k"),
		                                big_scan_cb, a), PMQ_OK);
		assert_int_equal(a->n, K - 1 + 2);
		store_close(f);
		assert_int_equal(store_open(f, NULL), PMQ_OK);
	}
	free(a);
}

/* Append `len`-byte batches of one record to log from *end until a write
 * fails; returns that status (PMQ_ERR_NOSPC expected) after at most max. */
static int fill_until_full(struct fx *f, void *log, int64_t *end, size_t len,
                           int max)
{
	int i, rc = PMQ_OK;

	for (i = 0; i < max && rc == PMQ_OK; i++) {
		pmq_io *io = append_async(f, log, *end, 1, len, *end);

		rc = wait_io(io, WAIT_MS);
		if (rc == PMQ_OK)
			*end += 1;
		io_free(io);
	}
	return rc;
}

/* Check log holds batches 0 .. end-1 of len bytes each (fill pattern). */
static void check_batches(struct fx *f, void *log, int64_t end, size_t len)
{
	pmq_io *io = io_new();
	unsigned char *want = malloc(len);
	int64_t i;

	assert_non_null(want);
	g_ops->log_read(f->st, log, 0, (size_t)end * len, INT64_MAX, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_OK);
	assert_int_equal(io->len, (size_t)end * len);
	for (i = 0; i < end; i++) {
		fill(want, i, len);
		assert_memory_equal((unsigned char *)io->data + i * len, want,
		                    len);
	}
	io_free(io);
	free(want);
}

/* A full map: writes fail with PMQ_ERR_NOSPC, reads go on, nothing is
 * lost across a restart; a larger map_size_max lets the map grow. */
static void test_lmdb_map_full(void **state)
{
	enum { LEN = 3000 }; /* one overflow page per batch */
	struct fx *f = *state;
	int64_t end = 0, s, e, end1;
	void *log;
	static char big[16384];

	REOPEN_OR_SKIP(f, "map_size", "128k", "map_size_max", "128k",
	               "fsync", "never");
	assert_int_equal(kv_put(f, "ns", S("keep"), S("kept")), PMQ_OK);
	log = log_open(f, "t", 0, NULL, NULL);
	assert_int_equal(fill_until_full(f, log, &end, LEN, 1000),
	                 PMQ_ERR_NOSPC);
	assert_true(end >= 5);
	assert_int_equal(kv_put(f, "ns", S("big"), big, sizeof(big)),
	                 PMQ_ERR_NOSPC);
	/* Reads keep working, and the failed writes left no trace. */
	check_batches(f, log, end, LEN);
	expect_kv(f, "ns", S("keep"), S("kept"));
	expect_kv(f, "ns", S("big"), NULL, 0);
	g_ops->log_close(f->st, log);
	end1 = end;

	/* The same after a restart; then room to grow to 1M. */
	REOPEN_OR_SKIP(f, "map_size", "128k", "map_size_max", "1M",
	               "fsync", "never");
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(s, 0);
	assert_int_equal(e, end1);
	check_batches(f, log, end, LEN);
	expect_kv(f, "ns", S("keep"), S("kept"));
	assert_int_equal(fill_until_full(f, log, &end, LEN, 1000),
	                 PMQ_ERR_NOSPC);
	/* 8 times the map holds clearly more than twice the batches. */
	assert_true(end > 2 * end1);
	check_batches(f, log, end, LEN);
	g_ops->log_close(f->st, log);
	store_close(f);
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(e, end);
	check_batches(f, log, end, LEN);
	g_ops->log_close(f->st, log);
}

/* fsync = interval syncs at least once (at stop at the latest), never
 * does not sync at all; both keep data across a clean restart. */
static void test_lmdb_fsync_modes(void **state)
{
	static const char *const modes[] = {"interval", "never"};
	struct fx *f = *state;
	unsigned long long syncs, writes, commits;
	int64_t s, e;
	void *log;
	int m, i;

	for (m = 0; m < 2; m++) {
		if (m == 0)
			REOPEN_OR_SKIP(f, "fsync", "interval",
			               "fsync_interval_ms", "50");
		else
			REOPEN_OR_SKIP(f, "fsync", "never");
		log = log_open(f, modes[m], 0, NULL, NULL);
		for (i = 0; i < 5; i++)
			assert_int_equal(append(f, log, i, 1, 10, i), PMQ_OK);
		assert_int_equal(kv_put(f, "ns", S("k"), S("v")), PMQ_OK);
		g_ops->log_close(f->st, log);
		close_counts(f, &syncs, &writes, &commits);
		assert_int_equal(writes, 6);
		if (m == 0)
			assert_true(syncs >= 1);
		else
			assert_int_equal(syncs, 0);
		assert_int_equal(store_open(f, NULL), PMQ_OK);
		log = log_open(f, modes[m], 0, &s, &e);
		assert_int_equal(e, 5);
		g_ops->log_close(f->st, log);
		expect_kv(f, "ns", S("k"), S("v"));
		f->nb = 0;
	}
}

/* Config keys: known ones checked, unknown ones PMQ_ERR_NOTFOUND. */
static void test_lmdb_config(void **state)
{
	static const struct {
		const char *k, *v;
		int rc;
	} c[] = {
	    {"fsync", "always", PMQ_OK},      {"fsync", "sometimes",
	                                       PMQ_ERR_CONFIG},
	    {"fsync_interval_ms", "2s", PMQ_OK},
	    {"fsync_interval_ms", "0", PMQ_ERR_CONFIG},
	    {"map_size", "1G", PMQ_OK},       {"map_size", "1k",
	                                       PMQ_ERR_CONFIG},
	    {"map_size_max", "4G", PMQ_OK},   {"map_size_max", "x",
	                                       PMQ_ERR_CONFIG},
	    {"dir", "/tmp/x", PMQ_OK},        {"dir", "", PMQ_ERR_CONFIG},
	    {"read_only", "yes", PMQ_OK},     {"read_only", "maybe",
	                                       PMQ_ERR_CONFIG},
	    {"max_bytes", "1M", PMQ_ERR_NOTFOUND},
	};
	struct fx *f = *state;
	struct pmq_instance inst = {"cfg"};
	char err[256];
	void *st = g_ops->create(&inst);
	size_t i;

	(void)f;
	assert_non_null(st);
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		err[0] = '\0';
		if (g_ops->configure(st, c[i].k, c[i].v, err, sizeof(err)) !=
		    c[i].rc)
			fail_msg("%s = %s: want %d", c[i].k, c[i].v, c[i].rc);
		if (c[i].rc == PMQ_ERR_CONFIG)
			assert_true(err[0] != '\0');
	}
	g_ops->destroy(st);
}
#endif /* STORAGE_LMDB */

#ifdef STORAGE_FILE
/* ---- file only (built with -DSTORAGE_FILE): group commit, compaction,
 * config ---- */

/* A counter of the plugin's, read through the "$stats" namespace. */
static uint64_t file_stat(struct fx *f, const char *key)
{
	void *val = NULL;
	size_t len = 0;
	char buf[32];

	assert_int_equal(g_ops->kv_get(f->st, "$stats", key, strlen(key),
	                               &val, &len),
	                 PMQ_OK);
	assert_true(len > 0 && len < sizeof(buf));
	memcpy(buf, val, len);
	buf[len] = '\0';
	free(val);
	return strtoull(buf, NULL, 10);
}

/* 1000 appends submitted without waiting (fsync = always) all complete,
 * in order, with a handful of fsyncs.  Determinism without sleeping:
 * while the test holds g_mu, the writer blocks in io_done at the end of
 * its first group, so everything submitted meanwhile is certainly queued
 * and forms one more group. */
static void test_file_group_commit(void **state)
{
	enum { N = 1000 };
	struct fx *f = *state;
	pmq_io **io = calloc(N, sizeof(*io));
	uint64_t fs0, w0, fs1, w1;
	int64_t s, e;
	void *log;
	int i;

	assert_non_null(io);
	REOPEN_OR_SKIP(f, "fsync", "always");
	log = log_open(f, "gc", 0, NULL, NULL);
	fs0 = file_stat(f, "fsyncs");
	w0 = file_stat(f, "writes");
	pthread_mutex_lock(&g_mu);
	for (i = 0; i < N; i++)
		io[i] = append_async(f, log, i, 1, 100, i);
	pthread_mutex_unlock(&g_mu);
	for (i = 0; i < N; i++) {
		assert_int_equal(wait_io(io[i], WAIT_MS), PMQ_OK);
		assert_int_equal(io[i]->value, i + 1);
		if (i > 0)
			assert_true(io[i]->seq > io[i - 1]->seq);
	}
	fs1 = file_stat(f, "fsyncs");
	w1 = file_stat(f, "writes");
	fprintf(stderr, "group commit: %llu fsyncs for %llu writes\n",
	        (unsigned long long)(fs1 - fs0),
	        (unsigned long long)(w1 - w0));
	assert_int_equal(w1 - w0, N);
	/* At most two groups, one fdatasync of the segment each. */
	assert_true(fs1 - fs0 >= 1 && fs1 - fs0 <= 2);
	for (i = 0; i < N; i++)
		io_free(io[i]);
	free(io);
	g_ops->log_close(f->st, log);
	store_close(f);
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	log = log_open(f, "gc", 0, &s, &e);
	assert_int_equal(e, N);
	g_ops->log_close(f->st, log);
}

/* With fsync = interval writes complete at once and the writer syncs on
 * its own within the interval; never does not sync. */
static void test_file_fsync_modes(void **state)
{
	struct fx *f = *state;
	int64_t until;
	void *log;

	REOPEN_OR_SKIP(f, "fsync", "never");
	log = log_open(f, "t", 0, NULL, NULL);
	assert_int_equal(append(f, log, 0, 1, 10, 0), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k"), S("v")), PMQ_OK);
	assert_int_equal(file_stat(f, "fsyncs"), 0);
	assert_int_equal(file_stat(f, "writes"), 2);
	g_ops->log_close(f->st, log);

	REOPEN_OR_SKIP(f, "fsync", "interval", "fsync_interval_ms", "20");
	log = log_open(f, "t", 0, NULL, NULL);
	assert_int_equal(file_stat(f, "fsyncs"), 0);
	assert_int_equal(append(f, log, 1, 1, 10, 0), PMQ_OK);
	/* A condition with a deadline, not a sleep for luck. */
	until = fake_monotonic_ms() + WAIT_MS;
	while (file_stat(f, "fsyncs") == 0 && fake_monotonic_ms() < until) {
		struct timespec ms5 = {0, 5000000L};

		nanosleep(&ms5, NULL);
	}
	assert_true(file_stat(f, "fsyncs") >= 1);
	g_ops->log_close(f->st, log);
	store_close(f);
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	expect_kv(f, "ns", S("k"), S("v"));
}

static off_t file_size(const char *name)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", g_data_dir, name);
	return stat(p, &st) == 0 ? st.st_size : -1;
}

/* A journal many times the live data is compacted into a snapshot, and
 * the state reads the same, also after a restart. */
static void test_file_kv_compaction(void **state)
{
	enum { N = 1500 };
	struct fx *f = *state;
	static char v[1024];
	pmq_io *io[N];
	int i, pass;

	REOPEN_OR_SKIP(f, "fsync", "never");
	assert_int_equal(kv_put(f, "keep", S("a"), S("A")), PMQ_OK);
	assert_int_equal(kv_put(f, "gone", S("b"), S("B")), PMQ_OK);
	assert_int_equal(kv_del(f, "gone", S("b")), PMQ_OK);
	/* Held g_mu: the puts pile up into one group (see
	 * test_file_group_commit), so compaction runs once, after them. */
	pthread_mutex_lock(&g_mu);
	for (i = 0; i < N; i++) {
		memset(v, 'a' + i % 26, sizeof(v));
		io[i] = calloc(1, sizeof(*io[i]));
		g_ops->kv_put(f->st, "big", S("k"), v, sizeof(v), io[i]);
	}
	pthread_mutex_unlock(&g_mu);
	for (i = 0; i < N; i++)
		assert_non_null(io[i]);
	for (i = 0; i < N; i++) {
		assert_int_equal(wait_io(io[i], WAIT_MS), PMQ_OK);
		io_free(io[i]);
	}
	assert_int_equal(kv_put(f, "keep", S("c"), S("C")), PMQ_OK);
	assert_int_equal(kv_put(f, "keep", S("d"), S("D")), PMQ_OK);
	/* The writer compacts after a group it completed when no write is
	 * queued; the puts above may have raced that check, but after the
	 * last one nothing else is queued.  Wait for it (bounded). */
	for (i = 0; i < 500 && !(file_size("kv.snapshot") > 1024 &&
	                         file_size("kv.journal") < 64 * 1024); i++)
		usleep(10000);
	assert_true(file_size("kv.snapshot") > 1024);
	assert_true(file_size("kv.journal") < 64 * 1024);
	memset(v, 'a' + (N - 1) % 26, sizeof(v));
	for (pass = 0; pass < 2; pass++) {
		expect_kv(f, "keep", S("a"), S("A"));
		expect_kv(f, "keep", S("c"), S("C"));
		expect_kv(f, "keep", S("d"), S("D"));
		expect_kv(f, "gone", S("b"), NULL, 0);
		expect_kv(f, "big", S("k"), v, sizeof(v));
		store_close(f);
		assert_int_equal(store_open(f, NULL), PMQ_OK);
	}
}

/* Config keys: known ones checked, unknown ones PMQ_ERR_NOTFOUND. */
static void test_file_config(void **state)
{
	static const struct {
		const char *k, *v;
		int rc;
	} c[] = {
	    {"fsync", "always", PMQ_OK},
	    {"fsync", "interval", PMQ_OK},
	    {"fsync", "never", PMQ_OK},
	    {"fsync", "sometimes", PMQ_ERR_CONFIG},
	    {"fsync_interval_ms", "250", PMQ_OK},
	    {"fsync_interval_ms", "2s", PMQ_OK},
	    {"fsync_interval_ms", "0", PMQ_ERR_CONFIG},
	    {"segment_bytes", "64M", PMQ_OK},
	    {"segment_bytes", "10", PMQ_ERR_CONFIG},
	    {"segment_bytes", "2G", PMQ_ERR_CONFIG},
	    {"index_interval_bytes", "4k", PMQ_OK},
	    {"index_interval_bytes", "x", PMQ_ERR_CONFIG},
	    {"read_only", "yes", PMQ_OK},
	    {"read_only", "no", PMQ_OK},
	    {"read_only", "maybe", PMQ_ERR_CONFIG},
	    {"zero_copy", "yes", PMQ_OK},
	    {"zero_copy", "no", PMQ_OK},
	    {"zero_copy", "sometimes", PMQ_ERR_CONFIG},
	    {"dir", "/tmp/x", PMQ_OK},
	    {"dir", "", PMQ_ERR_CONFIG},
	    {"max_bytes", "1M", PMQ_ERR_NOTFOUND},
	};
	struct pmq_instance inst = {"cfg"};
	char err[256];
	void *st = g_ops->create(&inst);
	size_t i;

	(void)state;
	assert_non_null(st);
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		err[0] = '\0';
		if (g_ops->configure(st, c[i].k, c[i].v, err, sizeof(err)) !=
		    c[i].rc)
			fail_msg("%s = %s: want %d", c[i].k, c[i].v, c[i].rc);
		if (c[i].rc == PMQ_ERR_CONFIG)
			assert_true(err[0] != '\0');
	}
	g_ops->destroy(st);
}

/* Topic names with '/', '%', spaces and UTF-8 are kept apart and come
 * back from log_list as they were. */
struct names_acc {
	int n, seen[3];
};

static void names_cb(void *arg, const char *topic, int32_t partition)
{
	struct names_acc *a = arg;

	a->n++;
	if (!strcmp(topic, "a/b") && partition == 1)
		a->seen[0]++;
	else if (!strcmp(topic, "a%2Fb") && partition == 1)
		a->seen[1]++;
	else if (!strcmp(topic, "caf\xc3\xa9 x-1") && partition == 0)
		a->seen[2]++;
}

/* Read-only recovery validates the tails but cuts nothing: a torn last
 * batch and a torn journal record are ignored in memory, the files keep
 * their bytes; the next writable start cuts them as usual. */
static void test_file_read_only_tail(void **state)
{
	struct fx *f = *state;
	const char *seg = "logs/t-0/00000000000000000000.log";
	off_t seg_size, j_size;
	int64_t s, e;
	void *log;

	log = abc(f, "t");
	g_ops->log_close(f->st, log);
	assert_int_equal(kv_put(f, "ns", S("k1"), S("k1!")), PMQ_OK);
	assert_int_equal(kv_put(f, "ns", S("k2"), S("k2!")), PMQ_OK);
	store_close(f);
	assert_true(damage("torn batch"));
	assert_true(damage("kv torn"));
	seg_size = file_size(seg);
	j_size = file_size("kv.journal");
	REOPEN_OR_SKIP(f, "read_only", "yes");
	log = log_open(f, "t", 0, &s, &e);
	assert_int_equal(e, 6);
	f->nb = 2;
	expect_read(f, log, 0, 1 << 20, INT64_MAX, 0, 2);
	assert_int_equal(append(f, log, 6, 1, 10, 9000), PMQ_ERR_RDONLY);
	g_ops->log_close(f->st, log);
	expect_kv(f, "ns", S("k1"), S("k1!"));
	expect_kv(f, "ns", S("k2"), NULL, 0);
	store_close(f);
	assert_int_equal(file_size(seg), seg_size);
	assert_int_equal(file_size("kv.journal"), j_size);

	assert_int_equal(store_open(f, NULL), PMQ_OK);
	assert_true(file_size("kv.journal") < j_size);
	log = log_open(f, "t", 0, &s, &e); /* logs are recovered at open */
	assert_int_equal(e, 6);
	assert_true(file_size(seg) < seg_size);
	assert_int_equal(append(f, log, 6, 1, 10, 9000), PMQ_OK);
	g_ops->log_close(f->st, log);
}

static void test_file_topic_names(void **state)
{
	struct fx *f = *state;
	struct names_acc a = {0};
	void *l[3];
	int64_t e;

	l[0] = log_open(f, "a/b", 1, NULL, NULL);
	l[1] = log_open(f, "a%2Fb", 1, NULL, NULL);
	l[2] = log_open(f, "caf\xc3\xa9 x-1", 0, NULL, NULL);
	assert_int_equal(append(f, l[0], 0, 1, 10, 0), PMQ_OK);
	g_ops->log_close(f->st, l[0]);
	g_ops->log_close(f->st, l[1]);
	g_ops->log_close(f->st, l[2]);
	store_close(f);
	assert_int_equal(store_open(f, NULL), PMQ_OK);
	assert_int_equal(g_ops->log_list(f->st, names_cb, &a), PMQ_OK);
	assert_int_equal(a.n, 3);
	assert_int_equal(a.seen[0] + a.seen[1] + a.seen[2], 3);
	l[1] = log_open(f, "a%2Fb", 1, NULL, &e);
	assert_int_equal(e, 0);
	g_ops->log_close(f->st, l[1]);
	l[0] = log_open(f, "a/b", 1, NULL, &e);
	assert_int_equal(e, 1);
	g_ops->log_close(f->st, l[0]);
}

/* Overwrite n bytes at `at` of the data dir's file rel, keeping the old
 * ones in old (when not NULL). */
static void patch(const char *rel, off_t at, const void *bytes, size_t n,
                  void *old)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", g_data_dir, rel);
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	if (old != NULL)
		assert_int_equal(pread(fd, old, n, at), (ssize_t)n);
	assert_int_equal(pwrite(fd, bytes, n, at), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void last_error_has(const char *a, const char *b)
{
	pthread_mutex_lock(&g_log_mu);
	if (strstr(g_last_error, a) == NULL || strstr(g_last_error, b) == NULL)
		fail_msg("last error logged: '%s', want '%s' and '%s'",
		         g_last_error, a, b);
	g_last_error[0] = '\0';
	pthread_mutex_unlock(&g_log_mu);
}

/* zero_copy = yes (default): big batches are file pieces whose CRC is
 * not checked (a flipped data byte is served, the client's RecordBatch
 * CRC catches it), small ones are copied and checked; an empty answer is
 * data NULL.  zero_copy = no: memory pieces only, every CRC checked.
 * Read-only stores serve extents too. */
static void test_file_zero_copy(void **state)
{
	/* Offsets 0..2, 3, 4, 5, 6.  With 1k segments the two small
	 * batches share segment 0, each later one has a segment of its
	 * own: batch 2 (70000 bytes, offset 4) is segment 4's. */
	static const size_t sizes[] = {100, 200, 70000, 300, 65536};
	static const char *const seg4 = "logs/z-0/00000000000000000004.log";
	enum { NB = sizeof(sizes) / sizeof(sizes[0]) };
	struct fx *f = *state;
	unsigned char c, c0;
	struct xstat xs;
	pmq_io *io;
	void *log;
	int i;

	REOPEN_OR_SKIP(f, "segment_bytes", "1k");
	log = log_open(f, "z", 0, NULL, NULL);
	for (i = 0; i < NB; i++)
		assert_int_equal(append(f, log, i == 0 ? 0 : i + 2,
		                        i == 0 ? 3 : 1, sizes[i], i),
		                 PMQ_OK);
	expect_extents(f, log, 0, 1 << 22, INT64_MAX, &xs);
	assert_int_equal(xs.files, 2);
	assert_int_equal(xs.mems, 2);
	/* The empty answer: nothing at all, as log_read's. */
	io = read_extents(f, log, 7, 1 << 22, INT64_MAX);
	assert_int_equal(io->status, PMQ_OK);
	assert_null(io->data);
	assert_null(io->free_fn);
	assert_int_equal(io->len, 0);
	io_free(io);

	/* A data byte of the big batch flips under the running store. */
	c = 0x5a;
	patch(seg4, 40 + 35000, &c, 1, &c0);
	c ^= 0xff;
	patch(seg4, 40 + 35000, &c, 1, NULL);
	io = io_new();
	g_ops->log_read(f->st, log, 4, 1 << 22, INT64_MAX, io);
	assert_int_equal(wait_io(io, WAIT_MS), PMQ_ERR_CORRUPT);
	last_error_has("00000000000000000004.log", "bad CRC");
	io_free(io);
	io = read_extents(f, log, 4, 1 << 22, INT64_MAX);
	assert_int_equal(io->status, PMQ_OK);
	{
		unsigned char *got = materialize(io, &xs);

		assert_int_equal(io->len, 70000 + 300 + 65536);
		assert_int_equal(xs.files, 2);
		assert_int_equal(got[35000], c);
		free(got);
	}
	io_free(io);
	patch(seg4, 40 + 35000, &c0, 1, NULL);
	g_ops->log_close(f->st, log);

	REOPEN_OR_SKIP(f, "segment_bytes", "1k", "zero_copy", "no");
	log = log_open(f, "z", 0, NULL, NULL);
	for (i = 0; i < 7; i++)
		expect_extents(f, log, i, 1 << 22, INT64_MAX, &xs),
		    assert_int_equal(xs.files, 0),
		    assert_int_equal(xs.mems, 1); /* consecutive: one */
	expect_extents(f, log, 4, 0, INT64_MAX, &xs);
	assert_int_equal(xs.files + xs.mems, 1);
	patch(seg4, 40 + 35000, &c, 1, NULL);
	io = read_extents(f, log, 4, 1 << 22, INT64_MAX);
	assert_int_equal(io->status, PMQ_ERR_CORRUPT);
	(void)materialize(io, NULL);
	last_error_has("00000000000000000004.log", "bad CRC");
	io_free(io);
	patch(seg4, 40 + 35000, &c0, 1, NULL);
	g_ops->log_close(f->st, log);

	REOPEN_OR_SKIP(f, "read_only", "yes");
	log = log_open(f, "z", 0, NULL, NULL);
	expect_extents(f, log, 0, 1 << 22, INT64_MAX, &xs);
	assert_int_equal(xs.files, 2);
	expect_extents(f, log, 5, 1, INT64_MAX, &xs);
	assert_int_equal(xs.files, 0);
	g_ops->log_close(f->st, log);
}

/* A bad header of a big batch (left in the file, so its CRC is not
 * checked) is still caught: PMQ_ERR_CORRUPT and the file, position and
 * reason logged; the batches before it are served; the same read works
 * again once the header is whole. */
static void test_file_extents_bad_header(void **state)
{
	static const char *const seg = "logs/h-0/00000000000000000001.log";
	static const struct {
		off_t at;            /* header field */
		unsigned char v[4];  /* bytes written there */
		const char *why;     /* what the log line says */
	} bad[] = {
	    {0, {0, 0, 0, 0}, "bad frame magic"},
	    {8, {0xff, 0xff, 0xff, 0xff}, "bad frame length"},
	    {8, {0x00, 0x00, 0x10, 0x00}, "torn batch"}, /* past the end */
	    {12, {0, 0, 0, 0}, "bad frame length"},      /* no records */
	    {16, {9, 0, 0, 0}, "offset gap"},
	};
	struct fx *f = *state;
	unsigned char old[4];
	struct xstat xs;
	pmq_io *io;
	size_t k;
	void *log;

	REOPEN_OR_SKIP(f, "segment_bytes", "1k");
	log = log_open(f, "h", 0, NULL, NULL);
	assert_int_equal(append(f, log, 0, 1, 100, 0), PMQ_OK);
	assert_int_equal(append(f, log, 1, 2, 100000, 1), PMQ_OK);
	assert_int_equal(append(f, log, 3, 1, 100, 2), PMQ_OK);
	for (k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		patch(seg, bad[k].at, bad[k].v, 4, old);
		io = read_extents(f, log, 1, 1 << 22, INT64_MAX);
		if (io->status != PMQ_ERR_CORRUPT)
			fail_msg("%s: status %d", bad[k].why, io->status);
		(void)materialize(io, NULL);
		last_error_has("00000000000000000001.log: position 0",
		               bad[k].why);
		io_free(io);
		/* Reading through it from before fails the same way. */
		io = read_extents(f, log, 0, 1 << 22, INT64_MAX);
		assert_int_equal(io->status, PMQ_ERR_CORRUPT);
		io_free(io);
		expect_extents(f, log, 0, 1 << 22, 1, &xs);
		assert_int_equal(xs.mems, 1);
		patch(seg, bad[k].at, old, 4, NULL);
		expect_extents(f, log, 0, 1 << 22, INT64_MAX, &xs);
		assert_int_equal(xs.files, 1);
		assert_int_equal(xs.mems, 2);
	}
	g_ops->log_close(f->st, log);
}

/* Reads over many segments keep a bounded number of read fds cached (the
 * plugin closes the least recently used), and answers their own. */
static void test_file_read_fds_bounded(void **state)
{
	enum { NB = 40 };
	struct fx *f = *state;
	pmq_io *io;
	int n0, i;
	void *log;

	store_close(f);
	n0 = count_fds();
	if (n0 < 0)
		skip();
	REOPEN_OR_SKIP(f, "segment_bytes", "1k");
	log = log_open(f, "fds", 0, NULL, NULL);
	for (i = 0; i < NB; i++) /* a segment each */
		assert_int_equal(append(f, log, i, 1, 65536, i), PMQ_OK);
	for (i = 0; i < NB; i++) {
		io = read_extents(f, log, i, 1, INT64_MAX);
		assert_int_equal(io->status, PMQ_OK);
		assert_int_equal(io->len, 65536);
		io_free(io);
	}
	/* The store's own (LOCK, journal, /dev/null, the active segment
	 * and its indexes) plus at most 16 cached read fds. */
	if (count_fds() > n0 + 16 + 8)
		fail_msg("%d fds open after reading %d segments (%d before "
		         "the store)", count_fds(), NB, n0);
	g_ops->log_close(f->st, log);
	store_close(f);
	assert_int_equal(count_fds(), n0);
}
#endif /* STORAGE_FILE */

/* ---- loading the plugin ---- */

static int load_plugin(void)
{
	const char *dir = getenv("PMQ_PLUGIN_DIR");
	const struct pmq_plugin *p;
	char path[1024];

#ifdef TOP_BUILDDIR
	if (dir == NULL || *dir == '\0')
		dir = TOP_BUILDDIR "/plugins/.libs";
#endif
	if (dir == NULL) {
		fprintf(stderr, "test_storage: no TOP_BUILDDIR and no "
		                "PMQ_PLUGIN_DIR: skipped\n");
		return 77;
	}
	snprintf(path, sizeof(path), "%s/%s.so", dir, STORAGE_PLUGIN);
	g_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (g_dl == NULL) {
		fprintf(stderr, "test_storage: %s: skipped\n", dlerror());
		return 77;
	}
	p = dlsym(g_dl, "pmq_plugin_v1");
	if (p == NULL || p->magic != PMQ_PLUGIN_MAGIC ||
	    p->abi_major != PMQ_ABI_MAJOR || p->kind != PMQ_KIND_STORAGE ||
	    strcmp(p->name, STORAGE_PLUGIN) != 0 || p->ops == NULL) {
		fprintf(stderr, "test_storage: %s: not a v1 storage plugin "
		                "named " STORAGE_PLUGIN "\n", path);
		return 1;
	}
	g_ops = p->ops;
	if (g_ops->size < sizeof(struct pmq_storage_ops)) {
		fprintf(stderr, "test_storage: %s: ops table too short\n",
		        path);
		return 1;
	}
	if (p->init(&g_api) != PMQ_OK) {
		fprintf(stderr, "test_storage: %s: init failed\n", path);
		return 1;
	}
	return 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
	    T(test_append_read_offsets),
	    T(test_read_max_bytes),
	    T(test_read_limit),
	    T(test_read_range),
	    T(test_append_bad_base),
	    T(test_completion_order),
	    T(test_reopen_state),
	    T(test_log_list),
	    T(test_trim),
	    T(test_log_remove),
	    T(test_offset_for_time),
	    T(test_kv_basic),
	    T(test_kv_scan),
	    T(test_kv_sees_pending),
	    T(test_nospc),
	    T(test_stop_completes),
	    T(test_durable_reopen),
	    T(test_read_only),
	    T(test_segments_cross),
	    T(test_big_batches),
	    T(test_extents_reads),
	    T(test_extents_lifetime),
	    T(test_recover_torn_batch),
	    T(test_recover_bad_crc),
	    T(test_recover_zero_tail),
	    T(test_recover_index),
	    T(test_recover_kv),
#ifdef STORAGE_LMDB
	    T(test_lmdb_group_commit),
	    T(test_lmdb_pending_overlay),
	    T(test_lmdb_map_full),
	    T(test_lmdb_fsync_modes),
	    T(test_lmdb_config),
#endif
#ifdef STORAGE_FILE
	    T(test_file_group_commit),
	    T(test_file_fsync_modes),
	    T(test_file_kv_compaction),
	    T(test_file_topic_names),
	    T(test_file_read_only_tail),
	    T(test_file_config),
	    T(test_file_zero_copy),
	    T(test_file_extents_bad_header),
	    T(test_file_read_fds_bounded),
#endif
	};
	pthread_condattr_t ca;
	const struct pmq_plugin *p;
	int rc;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g_cv, &ca);
	pthread_condattr_destroy(&ca);

	durable = strcmp(STORAGE_PLUGIN, "memory") != 0;
	rc = load_plugin();
	if (rc != 0)
		return rc;
	rc = cmocka_run_group_tests_name("storage:" STORAGE_PLUGIN, tests,
	                                 NULL, NULL);
	p = dlsym(g_dl, "pmq_plugin_v1");
	if (p && p->fini)
		p->fini();
	/* No dlclose: leak checkers then still name the plugin's frames. */
	return rc;
}
