/*
 * good.c - the one zoo plugin the loader must accept: a valid transport
 * whose ops are trivial stubs (every mandatory op set, optional ones
 * NULL).  init and fini log through the host API so tests can see that
 * each ran, once, and in which order; the address of a file-local object
 * tells two copies of this module apart.
 */
#include <plexmq/plexmq.h>

static const struct pmq_host_api *host;
static int module_tag; /* its address identifies this loaded copy */

static void *
good_create(pmq_instance *inst)
{
	static int state;

	(void)inst;
	return &state;
}

static int
good_configure(void *st, const char *key, const char *value, char *err,
               size_t err_len)
{
	(void)st, (void)key, (void)value, (void)err, (void)err_len;
	return PMQ_ERR_NOTFOUND; /* no keys of its own */
}

static void
good_destroy(void *st)
{
	(void)st;
}

static void *
good_conn_open(void *st, pmq_conn *c)
{
	(void)st, (void)c;
	return NULL; /* refuse every connection */
}

static void
good_conn_input(void *st, void *cs, pmq_conn *c)
{
	(void)st, (void)cs, (void)c;
}

static void
good_conn_closed(void *st, void *cs, int reason)
{
	(void)st, (void)cs, (void)reason;
}

static void
good_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	(void)st, (void)udata, (void)m, (void)d;
}

static const struct pmq_transport_ops good_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = good_create,
	.configure = good_configure,
	.destroy = good_destroy,
	.conn_open = good_conn_open,
	.conn_input = good_conn_input,
	.conn_closed = good_conn_closed,
	.deliver = good_deliver,
};

static int
good_init(const struct pmq_host_api *api)
{
	/* The plugin side of the version rule: refuse a foreign major. */
	if (api->abi_major != PMQ_ABI_MAJOR)
		return PMQ_ERR_ABI;
	host = api;
	if (host->log != NULL)
		host->log(NULL, PMQ_LOG_INFO, "zoo good init %p",
		    (void *)&module_tag);
	return PMQ_OK;
}

static void
good_fini(void)
{
	if (host != NULL && host->log != NULL)
		host->log(NULL, PMQ_LOG_INFO, "zoo good fini %p",
		    (void *)&module_tag);
	host = NULL;
}

PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "good", "1.0.0",
                  "zoo: a valid transport with stub ops", 0, good_init,
                  good_fini, &good_ops);
