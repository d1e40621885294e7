/*
 * minimal.c - a small but working transport compiled ONLY against the
 * frozen ABI 1.0 headers next to it (tests/abi/v1.0/plexmq/), never against
 * include/.  tests/sdk/old_headers.sh builds it and checks that the current
 * plexmqd loads it and that it works: an old plugin keeps working as the
 * ABI grows by minors.  Do not edit it to follow newer headers; a later
 * minor freezes its own copy in tests/abi/v1.N/.
 *
 * Protocol, one line per request ("\n" or "\r\n"):
 *   SUB <filter>          -> +OK
 *   PUB <topic> <text>    -> +OK <receivers>   (after the publish completes)
 *   PING                  -> +PONG
 *   deliveries            -> MSG <topic> <text>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <plexmq/plexmq.h>

#if PMQ_ABI_MAJOR != 1 || PMQ_ABI_MINOR != 0
#error "minimal.c must be built against the frozen 1.0 headers"
#endif

static const struct pmq_host_api *api;

struct mini_conn {
	pmq_conn *c;    /* NULL once closed */
	pmq_client *cl;
	unsigned refs;  /* the connection + each pending publish */
};

struct mini_pub {
	struct mini_conn *mc;
	pmq_slot *slot;
};

static void
mini_unref(struct mini_conn *mc)
{
	if (--mc->refs == 0)
		free(mc);
}

static void
mini_send(struct mini_conn *mc, const char *s)
{
	api->conn_send(mc->c, s, strlen(s), PMQ_SEND_ORDERED);
}

static void
mini_pub_done(void *arg, int status, const struct pmq_publish_result *r)
{
	struct mini_pub *p = arg;
	char buf[64];

	if (status == PMQ_OK)
		snprintf(buf, sizeof buf, "+OK %u\n", (unsigned)r->n_delivered);
	else
		snprintf(buf, sizeof buf, "-ERR %s\n", api->strerror(status));
	if (p->mc->c != NULL)
		api->slot_send(p->slot, buf, strlen(buf));
	api->slot_close(p->slot);
	mini_unref(p->mc);
	free(p);
}

static void
mini_line(struct mini_conn *mc, char *line)
{
	struct pmq_sub_opts o;
	struct pmq_msg_fields f;
	struct mini_pub *p;
	char *topic, *text;
	pmq_msg *m;
	int rc;

	if (strcmp(line, "PING") == 0) {
		mini_send(mc, "+PONG\n");
	} else if (strncmp(line, "SUB ", 4) == 0) {
		memset(&o, 0, sizeof o);
		o.size = sizeof o;
		rc = api->subscribe(mc->cl, line + 4, &o);
		mini_send(mc, rc >= 0 ? "+OK\n" : "-ERR bad filter\n");
	} else if (strncmp(line, "PUB ", 4) == 0 &&
	           (text = strchr(line + 4, ' ')) != NULL) {
		topic = line + 4;
		*text++ = '\0';
		memset(&f, 0, sizeof f);
		f.size = sizeof f;
		f.topic = topic;
		f.topic_len = strlen(topic);
		f.payload = text;
		f.payload_len = strlen(text);
		m = api->msg_new(&f, &rc);
		if (m == NULL) {
			mini_send(mc, "-ERR bad message\n");
			return;
		}
		p = calloc(1, sizeof *p);
		if (p == NULL || (p->slot = api->slot_open(mc->c)) == NULL) {
			free(p);
			api->msg_unref(m);
			mini_send(mc, "-ERR no memory\n");
			return;
		}
		p->mc = mc;
		mc->refs++;
		rc = api->publish(mc->cl, m, 0, mini_pub_done, p);
		api->msg_unref(m);
		if (rc != PMQ_OK) {
			struct pmq_publish_result none;

			memset(&none, 0, sizeof none);
			none.size = sizeof none;
			mini_pub_done(p, rc, &none);
		}
	} else {
		mini_send(mc, "-ERR unknown command\n");
	}
}

static void *
mini_create(pmq_instance *inst)
{
	return inst; /* no state of our own */
}

static int
mini_configure(void *st, const char *key, const char *value, char *err,
               size_t err_len)
{
	(void)st, (void)key, (void)value, (void)err, (void)err_len;
	return PMQ_ERR_NOTFOUND;
}

static void
mini_destroy(void *st)
{
	(void)st;
}

static void *
mini_conn_open(void *st, pmq_conn *c)
{
	struct mini_conn *mc = calloc(1, sizeof *mc);
	char id[32];

	if (mc == NULL)
		return NULL;
	mc->c = c;
	mc->refs = 1;
	snprintf(id, sizeof id, "mini-%llu",
	         (unsigned long long)api->conn_id(c));
	mc->cl = api->client_new(st, id, mc);
	if (mc->cl == NULL) {
		free(mc);
		return NULL;
	}
	return mc;
}

static void
mini_conn_input(void *st, void *cs, pmq_conn *c)
{
	struct mini_conn *mc = cs;
	const char *p;
	char line[512];
	ssize_t nl;
	size_t len;

	(void)st;
	while ((nl = api->conn_input_find(c, "\n", 1, sizeof line)) >= 0) {
		p = api->conn_input_peek(c, (size_t)nl + 1);
		len = (size_t)nl;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		memcpy(line, p, len);
		line[len] = '\0';
		api->conn_input_drain(c, (size_t)nl + 1);
		mini_line(mc, line);
	}
	if (api->conn_input_len(c) >= sizeof line)
		api->conn_close(c, 0); /* a line longer than we accept */
}

static void
mini_conn_closed(void *st, void *cs, int reason)
{
	struct mini_conn *mc = cs;

	(void)st, (void)reason;
	api->client_free(mc->cl);
	mc->c = NULL;
	mini_unref(mc);
}

static void
mini_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	struct mini_conn *mc = udata;
	struct pmq_msg_fields f;

	(void)st, (void)d;
	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	api->msg_fields(m, &f);
	api->conn_send(mc->c, "MSG ", 4, PMQ_SEND_NOW);
	api->conn_send(mc->c, f.topic, f.topic_len, PMQ_SEND_NOW);
	api->conn_send(mc->c, " ", 1, PMQ_SEND_NOW);
	api->conn_send(mc->c, f.payload, f.payload_len, PMQ_SEND_NOW);
	api->conn_send(mc->c, "\n", 1, PMQ_SEND_NOW);
}

static const struct pmq_transport_ops mini_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = mini_create,
	.configure = mini_configure,
	.destroy = mini_destroy,
	.conn_open = mini_conn_open,
	.conn_input = mini_conn_input,
	.conn_closed = mini_conn_closed,
	.deliver = mini_deliver,
};

static int
mini_init(const struct pmq_host_api *host)
{
	if (host->abi_major != PMQ_ABI_MAJOR)
		return PMQ_ERR_ABI;
	api = host;
	api->log(NULL, PMQ_LOG_INFO, "minimal 1.0 plugin: host ABI %u.%u",
	         (unsigned)host->abi_major, (unsigned)host->abi_minor);
	return PMQ_OK;
}

PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "minimal-1.0", "1.0.0",
                  "a transport built against the frozen ABI 1.0 headers", 0,
                  mini_init, NULL, &mini_ops);
