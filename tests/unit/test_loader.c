/*
 * test_loader.c - unit tests for core/loader: every descriptor rule on
 * in-memory descriptors (loader_check, no dlopen), then the real modules
 * of the bad-plugin zoo (tests/zoo/NAME.c, built by `make check` into
 * TOP_BUILDDIR/tests/zoo/.libs; PMQ_ZOO_DIR overrides that directory),
 * checking that each error names the file and its specific reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include <plexmq/plexmq.h>

#include "loader.h"

#ifndef TOP_BUILDDIR
#define TOP_BUILDDIR "."
#endif

#define ERR_LEN 512

/* ---- in-memory descriptors ---- */

static void *
t_create(pmq_instance *inst)
{
	(void)inst;
	return NULL;
}

static int
t_configure(void *st, const char *key, const char *value, char *err,
            size_t err_len)
{
	(void)st, (void)key, (void)value, (void)err, (void)err_len;
	return PMQ_ERR_NOTFOUND;
}

static void
t_void(void *st)
{
	(void)st;
}

static int
t_int(void *st)
{
	(void)st;
	return PMQ_OK;
}

static void *
t_conn_open(void *st, pmq_conn *c)
{
	(void)st, (void)c;
	return NULL;
}

static void
t_conn_input(void *st, void *cs, pmq_conn *c)
{
	(void)st, (void)cs, (void)c;
}

static void
t_conn_closed(void *st, void *cs, int reason)
{
	(void)st, (void)cs, (void)reason;
}

static void
t_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	(void)st, (void)udata, (void)m, (void)d;
}

static int
t_log_list(void *st, pmq_log_list_fn fn, void *arg)
{
	(void)st, (void)fn, (void)arg;
	return PMQ_OK;
}

static void *
t_log_open(void *st, const char *topic, int32_t partition,
           struct pmq_log_state *out, int *err)
{
	(void)st, (void)topic, (void)partition, (void)out, (void)err;
	return NULL;
}

static void
t_log_close(void *st, void *log)
{
	(void)st, (void)log;
}

static void
t_log_append(void *st, void *log, const struct pmq_batch_meta *m,
             const void *data, size_t len, pmq_io *io)
{
	(void)st, (void)log, (void)m, (void)data, (void)len, (void)io;
}

static void
t_log_read(void *st, void *log, int64_t offset, size_t max_bytes,
           int64_t limit, pmq_io *io)
{
	(void)st, (void)log, (void)offset, (void)max_bytes, (void)limit;
	(void)io;
}

static void
t_log_trim(void *st, void *log, int64_t new_start, pmq_io *io)
{
	(void)st, (void)log, (void)new_start, (void)io;
}

static void
t_log_remove(void *st, void *log, pmq_io *io)
{
	(void)st, (void)log, (void)io;
}

static void
t_kv_put(void *st, const char *ns, const void *key, size_t key_len,
         const void *val, size_t val_len, pmq_io *io)
{
	(void)st, (void)ns, (void)key, (void)key_len, (void)val;
	(void)val_len, (void)io;
}

static void
t_kv_del(void *st, const char *ns, const void *key, size_t key_len,
         pmq_io *io)
{
	(void)st, (void)ns, (void)key, (void)key_len, (void)io;
}

static int
t_kv_get(void *st, const char *ns, const void *key, size_t key_len,
         void **val, size_t *val_len)
{
	(void)st, (void)ns, (void)key, (void)key_len, (void)val;
	(void)val_len;
	return PMQ_ERR_NOTFOUND;
}

static int
t_kv_scan(void *st, const char *ns, const void *prefix, size_t prefix_len,
          int (*fn)(void *arg, const void *key, size_t key_len,
                    const void *val, size_t val_len),
          void *arg)
{
	(void)st, (void)ns, (void)prefix, (void)prefix_len, (void)fn;
	(void)arg;
	return PMQ_OK;
}

static int
t_init(const struct pmq_host_api *api)
{
	(void)api;
	return PMQ_OK;
}

/* Mutable copies: each test breaks one thing in its own copy. */
static struct pmq_transport_ops
t_transport_ops(void)
{
	struct pmq_transport_ops o = {
		.size = sizeof(struct pmq_transport_ops),
		.create = t_create,
		.configure = t_configure,
		.destroy = t_void,
		.conn_open = t_conn_open,
		.conn_input = t_conn_input,
		.conn_closed = t_conn_closed,
		.deliver = t_deliver,
	};
	return o;
}

static struct pmq_storage_ops
t_storage_ops(void)
{
	struct pmq_storage_ops o = {
		.size = sizeof(struct pmq_storage_ops),
		.create = t_create,
		.configure = t_configure,
		.start = t_int,
		.stop = t_void,
		.destroy = t_void,
		.log_list = t_log_list,
		.log_open = t_log_open,
		.log_close = t_log_close,
		.log_append = t_log_append,
		.log_read = t_log_read,
		.log_trim = t_log_trim,
		.log_remove = t_log_remove,
		.kv_put = t_kv_put,
		.kv_del = t_kv_del,
		.kv_get = t_kv_get,
		.kv_scan = t_kv_scan,
	};
	return o;
}

static struct pmq_plugin
t_desc(uint32_t kind, const void *ops)
{
	struct pmq_plugin d = {
		.magic = PMQ_PLUGIN_MAGIC,
		.abi_major = PMQ_ABI_MAJOR,
		.abi_minor = PMQ_ABI_MINOR,
		.size = sizeof(struct pmq_plugin),
		.abi_minor_required = PMQ_ABI_MINOR,
		.kind = kind,
		.name = "t",
		.version = "0",
		.init = t_init,
		.ops = ops,
	};
	return d;
}

/* Expect loader_check to fail with rc and an err containing want. */
static void
want_check(const struct pmq_plugin *d, uint32_t kind, int rc,
             const char *want)
{
	char err[ERR_LEN] = "";

	assert_int_equal(loader_check(d, kind, err, sizeof err), rc);
	if (strstr(err, want) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	assert_null(strchr(err, '\n'));
}

static void
test_check_valid(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_storage_ops s = t_storage_ops();
	struct pmq_plugin d;
	char err[ERR_LEN];

	(void)state;
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	assert_int_equal(loader_check(&d, PMQ_KIND_TRANSPORT, err, sizeof err),
	    PMQ_OK);
	d = t_desc(PMQ_KIND_STORAGE, &s);
	assert_int_equal(loader_check(&d, PMQ_KIND_STORAGE, err, sizeof err),
	    PMQ_OK);
	/* Optional ops may be NULL. */
	t.start = NULL;
	t.stop = NULL;
	t.conn_drained = NULL;
	s.log_offset_for_time = NULL;
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	assert_int_equal(loader_check(&d, PMQ_KIND_TRANSPORT, NULL, 0), PMQ_OK);
	d = t_desc(PMQ_KIND_STORAGE, &s);
	assert_int_equal(loader_check(&d, PMQ_KIND_STORAGE, NULL, 0), PMQ_OK);
	/* So may version, description and fini. */
	d.version = NULL;
	d.description = NULL;
	d.fini = NULL;
	assert_int_equal(loader_check(&d, PMQ_KIND_STORAGE, NULL, 0), PMQ_OK);
}

static void
test_check_magic(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_plugin d = t_desc(PMQ_KIND_TRANSPORT, &t);

	(void)state;
	d.magic = 0xdeadbeefu;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_INVAL, "bad magic");
	/* Magic comes first: nothing else is judged. */
	d.abi_major = 7;
	d.size = 0;
	d.kind = 42;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_INVAL,
	    "not a plexmq plugin");
}

static void
test_check_major(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_plugin d = t_desc(PMQ_KIND_TRANSPORT, &t);

	(void)state;
	d.abi_major = PMQ_ABI_MAJOR + 1;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI,
	    "ABI major 2, this plexmqd supports 1");
	d.abi_major = 0;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, "ABI major 0");
	/* The major is judged before the size. */
	d.abi_major = PMQ_ABI_MAJOR + 1;
	d.size = 16;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, "ABI major 2");
}

static void
test_check_minor(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_plugin d = t_desc(PMQ_KIND_TRANSPORT, &t);
	char want[64];

	(void)state;
	d.abi_minor = PMQ_ABI_MINOR + 1;
	d.abi_minor_required = PMQ_ABI_MINOR + 1;
	snprintf(want, sizeof want,
	    "requires ABI 1.%d, this plexmqd provides 1.%d", PMQ_ABI_MINOR + 1,
	    PMQ_ABI_MINOR);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, want);
}

/* Built against a newer minor (bigger descriptor and ops table) but
 * requiring only ours: loads. */
static void
test_check_newer_built_minor(void **state)
{
	struct {
		struct pmq_transport_ops ops;
		void (*later_op)(void);
	} t;
	struct {
		struct pmq_plugin d;
		void *later_member[2];
	} big;
	char err[ERR_LEN] = "";

	(void)state;
	memset(&t, 0, sizeof t);
	t.ops = t_transport_ops();
	t.ops.size = sizeof t;
	memset(&big, 0, sizeof big);
	big.d = t_desc(PMQ_KIND_TRANSPORT, &t);
	big.d.size = sizeof big;
	big.d.abi_minor = PMQ_ABI_MINOR + 3;
	big.d.abi_minor_required = PMQ_ABI_MINOR;
	assert_int_equal(loader_check(&big.d, PMQ_KIND_TRANSPORT, err,
	    sizeof err), PMQ_OK);
	/* Requiring an older minor than ours is fine too. */
	if (PMQ_ABI_MINOR > 0) {
		big.d.abi_minor_required = 0;
		assert_int_equal(loader_check(&big.d, PMQ_KIND_TRANSPORT, err,
		    sizeof err), PMQ_OK);
	}
}

static void
test_check_size(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_plugin d = t_desc(PMQ_KIND_TRANSPORT, &t);
	size_t v1_0 = offsetof(struct pmq_plugin, ops) + sizeof(void *);
	char want[64];

	(void)state;
	d.size = 16;
	snprintf(want, sizeof want,
	    "descriptor is truncated: 16 bytes, need %zu", v1_0);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, want);
	d.size = (uint32_t)v1_0 - 1;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, "truncated");
	d.size = (uint32_t)v1_0;
	assert_int_equal(loader_check(&d, PMQ_KIND_TRANSPORT, NULL, 0), PMQ_OK);
}

static void
test_check_null_members(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_plugin d;

	(void)state;
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	d.name = NULL;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI,
	    "descriptor has no name");
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	d.init = NULL;
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI,
	    "descriptor has no init");
	d = t_desc(PMQ_KIND_TRANSPORT, NULL);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI,
	    "descriptor has no ops");
}

static void
test_check_kind(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_storage_ops s = t_storage_ops();
	struct pmq_plugin d;

	(void)state;
	d = t_desc(99, &t);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_UNSUPPORTED,
	    "unknown plugin kind 99");
	d = t_desc(PMQ_KIND_STORAGE, &s);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_CONFIG,
	    "is a storage plugin, expected a transport");
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	want_check(&d, PMQ_KIND_STORAGE, PMQ_ERR_CONFIG,
	    "is a transport plugin, expected a storage");
	d = t_desc(PMQ_KIND_AUTH, &t);
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_CONFIG,
	    "is an auth plugin, expected a transport");
	/* A caller asking for a kind we cannot load is a caller bug. */
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	want_check(&d, PMQ_KIND_AUTH, PMQ_ERR_INVAL, "cannot load");
	want_check(&d, 0, PMQ_ERR_INVAL, "cannot load");
	want_check(NULL, PMQ_KIND_TRANSPORT, PMQ_ERR_INVAL, "no descriptor");
}

static void
test_check_ops_size(void **state)
{
	struct pmq_transport_ops t = t_transport_ops();
	struct pmq_storage_ops s = t_storage_ops();
	struct pmq_plugin d;
	char want[80];

	(void)state;
	t.size = 8;
	d = t_desc(PMQ_KIND_TRANSPORT, &t);
	snprintf(want, sizeof want,
	    "transport ops table is truncated: 8 bytes, need %zu",
	    sizeof(struct pmq_transport_ops));
	want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, want);
	/* One byte short of the 1.0 table (through kv_scan): later members
	 * are optional, so sizeof would be too strict since 1.2. */
	s.size = offsetof(struct pmq_storage_ops, kv_scan) + sizeof s.kv_scan - 1;
	d = t_desc(PMQ_KIND_STORAGE, &s);
	snprintf(want, sizeof want,
	    "storage ops table is truncated: %u bytes, need %zu",
	    (unsigned)s.size, (size_t)s.size + 1);
	want_check(&d, PMQ_KIND_STORAGE, PMQ_ERR_ABI, want);
}

/* Each mandatory op listed in transport.h / storage.h, NULLed in turn. */
static void
test_check_mandatory_ops(void **state)
{
	static const struct {
		const char *name;
		size_t off;
	} tops[] = {
		{ "create", offsetof(struct pmq_transport_ops, create) },
		{ "configure", offsetof(struct pmq_transport_ops, configure) },
		{ "destroy", offsetof(struct pmq_transport_ops, destroy) },
		{ "conn_open", offsetof(struct pmq_transport_ops, conn_open) },
		{ "conn_input", offsetof(struct pmq_transport_ops, conn_input) },
		{ "conn_closed", offsetof(struct pmq_transport_ops, conn_closed) },
		{ "deliver", offsetof(struct pmq_transport_ops, deliver) },
	}, sops[] = {
		{ "create", offsetof(struct pmq_storage_ops, create) },
		{ "configure", offsetof(struct pmq_storage_ops, configure) },
		{ "start", offsetof(struct pmq_storage_ops, start) },
		{ "stop", offsetof(struct pmq_storage_ops, stop) },
		{ "destroy", offsetof(struct pmq_storage_ops, destroy) },
		{ "log_list", offsetof(struct pmq_storage_ops, log_list) },
		{ "log_open", offsetof(struct pmq_storage_ops, log_open) },
		{ "log_close", offsetof(struct pmq_storage_ops, log_close) },
		{ "log_append", offsetof(struct pmq_storage_ops, log_append) },
		{ "log_read", offsetof(struct pmq_storage_ops, log_read) },
		{ "log_trim", offsetof(struct pmq_storage_ops, log_trim) },
		{ "log_remove", offsetof(struct pmq_storage_ops, log_remove) },
		{ "kv_put", offsetof(struct pmq_storage_ops, kv_put) },
		{ "kv_del", offsetof(struct pmq_storage_ops, kv_del) },
		{ "kv_get", offsetof(struct pmq_storage_ops, kv_get) },
		{ "kv_scan", offsetof(struct pmq_storage_ops, kv_scan) },
	};
	void (*null_fn)(void) = NULL;
	char want[80];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof tops / sizeof tops[0]; i++) {
		struct pmq_transport_ops t = t_transport_ops();
		struct pmq_plugin d = t_desc(PMQ_KIND_TRANSPORT, &t);

		memcpy((char *)&t + tops[i].off, &null_fn, sizeof null_fn);
		snprintf(want, sizeof want, "transport ops table has no %s",
		    tops[i].name);
		want_check(&d, PMQ_KIND_TRANSPORT, PMQ_ERR_ABI, want);
	}
	for (i = 0; i < sizeof sops / sizeof sops[0]; i++) {
		struct pmq_storage_ops s = t_storage_ops();
		struct pmq_plugin d = t_desc(PMQ_KIND_STORAGE, &s);

		memcpy((char *)&s + sops[i].off, &null_fn, sizeof null_fn);
		snprintf(want, sizeof want, "storage ops table has no %s",
		    sops[i].name);
		want_check(&d, PMQ_KIND_STORAGE, PMQ_ERR_ABI, want);
	}
}

/* ---- the zoo: real shared objects through dlopen ---- */

static char zoo_dir[4096];
static char tmp_dir[] = "/tmp/pmq-test-loader-XXXXXX";
static int have_tmp;

/* What the fake host API saw: plugins' init/fini log lines. */
static char events[16][128];
static size_t n_events;

static void fake_vlog(pmq_instance *inst, int level, const char *fmt,
                      va_list ap) __attribute__((format(printf, 3, 0)));
static void fake_log(pmq_instance *inst, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fake_vlog(pmq_instance *inst, int level, const char *fmt, va_list ap)
{
	(void)inst, (void)level;
	if (n_events < sizeof events / sizeof events[0])
		vsnprintf(events[n_events++], sizeof events[0], fmt, ap);
}

static void
fake_log(pmq_instance *inst, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fake_vlog(inst, level, fmt, ap);
	va_end(ap);
}

static const char *
fake_strerror(int err)
{
	return err == PMQ_ERR_INVAL ? "invalid argument" : "some error";
}

static struct pmq_host_api fake_api = {
	.abi_major = PMQ_ABI_MAJOR,
	.abi_minor = PMQ_ABI_MINOR,
	.size = sizeof(struct pmq_host_api),
	.log = fake_log,
	.vlog = fake_vlog,
	.strerror = fake_strerror,
};

static size_t
count_events(const char *prefix)
{
	size_t i, n = 0;

	for (i = 0; i < n_events; i++)
		if (strncmp(events[i], prefix, strlen(prefix)) == 0)
			n++;
	return n;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void
copy_file(const char *from, const char *to)
{
	char buf[65536];
	size_t len = 0;
	ssize_t n;
	int fd = open(from, O_RDONLY);

	assert_true(fd >= 0);
	/* Zoo modules are a few KiB; anything bigger is not ours. */
	while ((n = read(fd, buf + len, sizeof buf - len)) > 0)
		len += (size_t)n;
	assert_true(n == 0 && len < sizeof buf);
	assert_int_equal(close(fd), 0);
	write_file(to, buf, len);
}

static int
zoo_setup(void **state)
{
	const char *env = getenv("PMQ_ZOO_DIR");
	struct stat st;

	(void)state;
	snprintf(zoo_dir, sizeof zoo_dir, "%s",
	    env ? env : TOP_BUILDDIR "/tests/zoo/.libs");
	if (mkdtemp(tmp_dir) == NULL) {
		fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
		return -1;
	}
	have_tmp = 1;
	if (stat(zoo_dir, &st) != 0)
		zoo_dir[0] = '\0';
	return 0;
}

static int
zoo_teardown(void **state)
{
	static const char *files[] = { "notaplugin.so", "good2.so" };
	char path[4200];
	size_t i;

	(void)state;
	loader_unload_all();
	if (!have_tmp)
		return 0;
	/* Best effort: a file a failed test never created is no error. */
	for (i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", tmp_dir, files[i]);
		(void)unlink(path);
	}
	snprintf(path, sizeof path, "%s/dir.so", tmp_dir);
	(void)rmdir(path);
	if (rmdir(tmp_dir) != 0)
		fprintf(stderr, "rmdir %s: %s\n", tmp_dir, strerror(errno));
	return 0;
}

/* Each zoo test starts from an empty loader. */
static int
unload(void **state)
{
	(void)state;
	loader_unload_all();
	n_events = 0;
	return 0;
}

static void
need_zoo(void)
{
	if (zoo_dir[0] == '\0') {
		print_message("zoo modules not built (run `make check`, or set "
		    "PMQ_ZOO_DIR): skipping\n");
		skip();
	}
}

/* Load name from dir as kind; expect rc and a one-line error naming the
 * file (NAME.so, or name itself if it is a path) and containing reason. */
static void
expect_load_fail(const char *dir, const char *name, uint32_t kind, int rc,
                 const char *reason)
{
	/* Any non-NULL sentinel: a failed load must not write *out. */
	struct loaded_plugin *p = (struct loaded_plugin *)&p;
	struct loaded_plugin *untouched = p;
	char err[ERR_LEN] = "", file[256];

	assert_int_equal(loader_load(dir, name, kind, &p, err, sizeof err),
	    rc);
	assert_ptr_equal(p, untouched);
	if (strchr(name, '/') != NULL)
		snprintf(file, sizeof file, "%s", name);
	else
		snprintf(file, sizeof file, "/%s.so", name);
	if (strncmp(err, "plugin ", 7) != 0 || strstr(err, file) == NULL)
		fail_msg("error \"%s\" does not name %s", err, file);
	if (strstr(err, reason) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, reason);
	assert_null(strchr(err, '\n'));
}

static void
test_zoo_refused(void **state)
{
	char minor[80];
	const struct {
		const char *name;
		int rc;
		const char *reason;
	} zoo[] = {
		{ "bad_magic", PMQ_ERR_INVAL, "bad magic 0xdeadbeef" },
		{ "bad_major", PMQ_ERR_ABI, "ABI major 2, this plexmqd supports 1" },
		{ "bad_minor", PMQ_ERR_ABI, minor },
		{ "no_descriptor", PMQ_ERR_INVAL, "no descriptor pmq_plugin_v1: "
		                                  "not a plexmq plugin" },
		{ "truncated_ops", PMQ_ERR_ABI, "transport ops table is "
		                                "truncated: 8 bytes, need" },
		{ "small_descriptor", PMQ_ERR_ABI, "descriptor is truncated: "
		                                   "16 bytes, need" },
		{ "null_init", PMQ_ERR_ABI, "descriptor has no init" },
		{ "bad_kind", PMQ_ERR_UNSUPPORTED, "unknown plugin kind 99" },
	};
	size_t i;

	(void)state;
	need_zoo();
	snprintf(minor, sizeof minor,
	    "requires ABI 1.%d, this plexmqd provides 1.%d", PMQ_ABI_MINOR + 1,
	    PMQ_ABI_MINOR);
	for (i = 0; i < sizeof zoo / sizeof zoo[0]; i++)
		expect_load_fail(zoo_dir, zoo[i].name, PMQ_KIND_TRANSPORT,
		    zoo[i].rc, zoo[i].reason);
	/* A refused module leaves nothing behind: loading it again gives
	 * the same answer rather than a cached entry. */
	expect_load_fail(zoo_dir, "bad_major", PMQ_KIND_TRANSPORT, PMQ_ERR_ABI,
	    "ABI major 2");
}

static void
test_zoo_good(void **state)
{
	struct loaded_plugin *p = NULL, *again = NULL;
	char err[ERR_LEN] = "", path[4200];

	(void)state;
	need_zoo();
	assert_int_equal(loader_load(zoo_dir, "good", PMQ_KIND_TRANSPORT, &p,
	    err, sizeof err), PMQ_OK);
	assert_non_null(p);
	assert_string_equal(p->desc->name, "good");
	assert_int_equal(p->desc->kind, PMQ_KIND_TRANSPORT);
	assert_non_null(strstr(p->path, "/good.so"));
	assert_int_equal(p->initialized, 0);
	assert_int_equal(n_events, 0); /* checks run no plugin code */

	/* init runs once. */
	assert_int_equal(loader_init(p, &fake_api, err, sizeof err), PMQ_OK);
	assert_int_equal(loader_init(p, &fake_api, err, sizeof err), PMQ_OK);
	assert_int_equal(p->initialized, 1);
	assert_int_equal(count_events("zoo good init"), 1);

	/* Same path, or another path to the same file: same entry. */
	assert_int_equal(loader_load(zoo_dir, "good", PMQ_KIND_TRANSPORT,
	    &again, err, sizeof err), PMQ_OK);
	assert_ptr_equal(again, p);
	snprintf(path, sizeof path, "%s/./good.so", zoo_dir);
	again = NULL;
	assert_int_equal(loader_load("/nonexistent", path, PMQ_KIND_TRANSPORT,
	    &again, err, sizeof err), PMQ_OK);
	assert_ptr_equal(again, p);
	/* ... but still checked against the kind asked for. */
	expect_load_fail(zoo_dir, "good", PMQ_KIND_STORAGE, PMQ_ERR_CONFIG,
	    "is a transport plugin, expected a storage");

	loader_unload_all();
	assert_int_equal(count_events("zoo good fini"), 1);
}

static void
test_zoo_init_fails(void **state)
{
	struct loaded_plugin *p = NULL;
	char err[ERR_LEN] = "";

	(void)state;
	need_zoo();
	assert_int_equal(loader_load(zoo_dir, "init_fails", PMQ_KIND_TRANSPORT,
	    &p, err, sizeof err), PMQ_OK);
	assert_int_equal(loader_init(p, &fake_api, err, sizeof err),
	    PMQ_ERR_INVAL);
	assert_non_null(strstr(err, "/init_fails.so"));
	assert_non_null(strstr(err, "init failed: invalid argument"));
	assert_int_equal(p->initialized, -1);
	/* Never retried. */
	err[0] = '\0';
	assert_int_equal(loader_init(p, &fake_api, err, sizeof err),
	    PMQ_ERR_CLOSED);
	assert_non_null(strstr(err, "init failed"));
	assert_int_equal(count_events("init_fails:"), 1);
}

/* fini then dlclose in reverse load order: two copies of good.so are two
 * modules, told apart by the address each logs. */
static void
test_zoo_unload_order(void **state)
{
	struct loaded_plugin *a = NULL, *b = NULL;
	char err[ERR_LEN] = "", src[4200], dst[4200];

	(void)state;
	need_zoo();
	snprintf(src, sizeof src, "%s/good.so", zoo_dir);
	snprintf(dst, sizeof dst, "%s/good2.so", tmp_dir);
	copy_file(src, dst);
	assert_int_equal(loader_load(zoo_dir, "good", PMQ_KIND_TRANSPORT, &a,
	    err, sizeof err), PMQ_OK);
	assert_int_equal(loader_load(tmp_dir, "good2", PMQ_KIND_TRANSPORT, &b,
	    err, sizeof err), PMQ_OK);
	assert_ptr_not_equal(a, b);
	assert_int_equal(loader_init(a, &fake_api, err, sizeof err), PMQ_OK);
	assert_int_equal(loader_init(b, &fake_api, err, sizeof err), PMQ_OK);
	loader_unload_all();
	assert_int_equal(n_events, 4);
	/* events: init A, init B, fini B, fini A. */
	assert_string_equal(events[2] + strlen("zoo good fini"),
	    events[1] + strlen("zoo good init"));
	assert_string_equal(events[3] + strlen("zoo good fini"),
	    events[0] + strlen("zoo good init"));
	assert_string_not_equal(events[0], events[1]);
}

/* Files that are not plugins at all; needs no zoo. */
static void
test_not_plugins(void **state)
{
	static const char text[] =
	    "This is a text file named like a plugin; dlopen must refuse it\n"
	    "and the loader must say so without crashing or guessing.\n";
	char path[4200];

	(void)state;
	snprintf(path, sizeof path, "%s/notaplugin.so", tmp_dir);
	write_file(path, text, sizeof text - 1);
	expect_load_fail(tmp_dir, "notaplugin", PMQ_KIND_TRANSPORT,
	    PMQ_ERR_INVAL, "cannot load: invalid ELF header");
	expect_load_fail(tmp_dir, "missing", PMQ_KIND_TRANSPORT,
	    PMQ_ERR_NOTFOUND, "no such file");
	snprintf(path, sizeof path, "%s/dir.so", tmp_dir);
	assert_int_equal(mkdir(path, 0755), 0);
	expect_load_fail(tmp_dir, "dir", PMQ_KIND_TRANSPORT, PMQ_ERR_IO,
	    "not a regular file");
	assert_int_equal(rmdir(path), 0);
	/* A name with '/' is a path; a bare name needs a directory. */
	snprintf(path, sizeof path, "%s/missing.so", tmp_dir);
	expect_load_fail(NULL, path, PMQ_KIND_TRANSPORT, PMQ_ERR_NOTFOUND,
	    "no such file");
	{
		struct loaded_plugin *p = NULL;
		char err[ERR_LEN] = "";

		assert_int_equal(loader_load(NULL, "tcp", PMQ_KIND_TRANSPORT,
		    &p, err, sizeof err), PMQ_ERR_INVAL);
		assert_non_null(strstr(err, "no plugin directory"));
		assert_int_equal(loader_load(tmp_dir, "", PMQ_KIND_TRANSPORT,
		    &p, err, sizeof err), PMQ_ERR_INVAL);
		assert_int_equal(loader_load(tmp_dir, "x", PMQ_KIND_AUTH, &p,
		    err, sizeof err), PMQ_ERR_INVAL);
		assert_null(p);
	}
}

int
main(void)
{
	const struct CMUnitTest check_tests[] = {
		cmocka_unit_test(test_check_valid),
		cmocka_unit_test(test_check_magic),
		cmocka_unit_test(test_check_major),
		cmocka_unit_test(test_check_minor),
		cmocka_unit_test(test_check_newer_built_minor),
		cmocka_unit_test(test_check_size),
		cmocka_unit_test(test_check_null_members),
		cmocka_unit_test(test_check_kind),
		cmocka_unit_test(test_check_ops_size),
		cmocka_unit_test(test_check_mandatory_ops),
	};
	const struct CMUnitTest zoo_tests[] = {
		cmocka_unit_test_setup_teardown(test_not_plugins, unload, unload),
		cmocka_unit_test_setup_teardown(test_zoo_refused, unload, unload),
		cmocka_unit_test_setup_teardown(test_zoo_good, unload, unload),
		cmocka_unit_test_setup_teardown(test_zoo_init_fails, unload,
		    unload),
		cmocka_unit_test_setup_teardown(test_zoo_unload_order, unload,
		    unload),
	};
	int failed;

	failed = cmocka_run_group_tests_name("loader_check", check_tests,
	    NULL, NULL);
	failed += cmocka_run_group_tests_name("loader_load (zoo)", zoo_tests,
	    zoo_setup, zoo_teardown);
	return failed ? 1 : 0;
}
