/*
 * init_fails.c - zoo plugin that passes every loader check but whose init
 * returns PMQ_ERR_INVAL: loader_init must report "init failed" and the
 * daemon must refuse to start.
 */
#include <plexmq/plexmq.h>

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
	.size = sizeof(struct pmq_transport_ops),
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
	/* What a plugin does when, say, a resource it needs is missing. */
	if (api != NULL && api->log != NULL)
		api->log(NULL, PMQ_LOG_ERROR, "init_fails: refusing on purpose");
	return PMQ_ERR_INVAL;
}

PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "init_fails", "1.0.0",
                  "zoo: init returns PMQ_ERR_INVAL", 0, zoo_init, NULL,
                  &zoo_ops);
