/*
 * newer_minor.c - a plugin as a NEWER minor of the ABI would build it: its
 * descriptor says abi_minor = host minor + 1 and is longer than ours (a
 * member appended in that minor), its ops table too, but it requires only
 * the host's minor (abi_minor_required = PMQ_ABI_MINOR: it checks for the
 * newer features with PMQ_HAS before using them).  The loader must accept
 * it, copy what it knows and never touch the members it does not know.
 * tests/sdk/newer_minor.sh loads it (and checks tests/zoo/bad_minor, which
 * requires the newer minor, is refused).
 *
 * Written by hand instead of with PMQ_PLUGIN_DEFINE to fake the newer
 * layout: the current structs come first, the "newer" members after them.
 */
#include <stdlib.h>

#include <plexmq/plexmq.h>

static const struct pmq_host_api *api;

/* Appended by the imaginary next minor; the host must never call them. */
static void
newer_member(void)
{
	abort();
}

static void *
nm_create(pmq_instance *inst)
{
	return inst;
}

static int
nm_configure(void *st, const char *key, const char *value, char *err,
             size_t err_len)
{
	(void)st, (void)key, (void)value, (void)err, (void)err_len;
	return PMQ_ERR_NOTFOUND;
}

static void
nm_destroy(void *st)
{
	(void)st;
}

static void *
nm_conn_open(void *st, pmq_conn *c)
{
	(void)st;
	return c;
}

/* Answers every line with "+PONG", so the test sees it serve. */
static void
nm_conn_input(void *st, void *cs, pmq_conn *c)
{
	ssize_t nl;

	(void)st, (void)cs;
	while ((nl = api->conn_input_find(c, "\n", 1, 4096)) >= 0) {
		api->conn_input_drain(c, (size_t)nl + 1);
		api->conn_send(c, "+PONG\n", 6, PMQ_SEND_ORDERED);
	}
}

static void
nm_conn_closed(void *st, void *cs, int reason)
{
	(void)st, (void)cs, (void)reason;
}

static void
nm_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	(void)st, (void)udata, (void)m, (void)d;
}

static int
nm_init(const struct pmq_host_api *host)
{
	api = host;
	/* What a newer plugin does before using a newer host function:
	 * PMQ_HAS(host, struct pmq_host_api, <member>).  Here the host is
	 * older, so it reports the minor it has. */
	api->log(NULL, PMQ_LOG_INFO, "newer_minor: host ABI %u.%u, table %u bytes",
	         (unsigned)host->abi_major, (unsigned)host->abi_minor,
	         (unsigned)host->size);
	return PMQ_OK;
}

static const struct newer_transport_ops {
	struct pmq_transport_ops v1;
	void (*added_op)(void);
} nm_ops = {
	.v1 = {
		.size = sizeof(struct newer_transport_ops),
		.create = nm_create,
		.configure = nm_configure,
		.destroy = nm_destroy,
		.conn_open = nm_conn_open,
		.conn_input = nm_conn_input,
		.conn_closed = nm_conn_closed,
		.deliver = nm_deliver,
	},
	.added_op = newer_member,
};

struct newer_plugin {
	struct pmq_plugin v1;
	void (*added_member)(void);
};

PMQ_EXPORT extern const struct newer_plugin pmq_plugin_v1;
const struct newer_plugin pmq_plugin_v1 = {
	.v1 = {
		.magic = PMQ_PLUGIN_MAGIC,
		.abi_major = PMQ_ABI_MAJOR,
		.abi_minor = PMQ_ABI_MINOR + 1,       /* built with the next minor */
		.size = sizeof(struct newer_plugin),  /* ... so it is longer */
		.abi_minor_required = PMQ_ABI_MINOR,  /* but needs only ours */
		.kind = PMQ_KIND_TRANSPORT,
		.flags = 0,
		.name = "newer_minor",
		.version = "1.0.0",
		.description = "built against the next ABI minor, requires this one",
		.init = nm_init,
		.fini = NULL,
		.ops = &nm_ops,
	},
	.added_member = newer_member,
};
