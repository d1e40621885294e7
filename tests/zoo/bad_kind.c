/*
 * bad_kind.c - zoo plugin the loader must refuse: a descriptor of an unknown
 * plugin kind (99).  Written by hand, not with PMQ_PLUGIN_DEFINE, so that it
 * can be broken.
 */
#include <plexmq/plexmq.h>

#define OPS_SIZE sizeof(struct pmq_transport_ops)
/* Trivial ops, so that the descriptor is the only thing wrong. */
static void *
zoo_create(pmq_instance *inst)
{
	(void)inst;
	return NULL;
}

static int
zoo_configure(void *st, const char *key, const char *value, char *err,
              size_t err_len)
{
	(void)st, (void)key, (void)value, (void)err, (void)err_len;
	return PMQ_ERR_NOTFOUND;
}

static void
zoo_destroy(void *st)
{
	(void)st;
}

static void *
zoo_conn_open(void *st, pmq_conn *c)
{
	(void)st, (void)c;
	return NULL;
}

static void
zoo_conn_input(void *st, void *cs, pmq_conn *c)
{
	(void)st, (void)cs, (void)c;
}

static void
zoo_conn_closed(void *st, void *cs, int reason)
{
	(void)st, (void)cs, (void)reason;
}

static void
zoo_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	(void)st, (void)udata, (void)m, (void)d;
}

static const struct pmq_transport_ops zoo_ops = {
	.size = OPS_SIZE,
	.create = zoo_create,
	.configure = zoo_configure,
	.destroy = zoo_destroy,
	.conn_open = zoo_conn_open,
	.conn_input = zoo_conn_input,
	.conn_closed = zoo_conn_closed,
	.deliver = zoo_deliver,
};

static int
zoo_init(const struct pmq_host_api *api)
{
	(void)api;
	return PMQ_OK;
}

PMQ_EXPORT const struct pmq_plugin pmq_plugin_v1 = {
	.magic = PMQ_PLUGIN_MAGIC,
	.abi_major = PMQ_ABI_MAJOR,
	.abi_minor = PMQ_ABI_MINOR,
	.size = sizeof(struct pmq_plugin),
	.abi_minor_required = PMQ_ABI_MINOR,
	.kind = 99 /* no such PMQ_KIND_* */,
	.flags = 0,
	.name = "bad_kind",
	.version = "1.0.0",
	.description = "zoo: bad kind",
	.init = zoo_init,
	.fini = NULL,
	.ops = &zoo_ops,
};
