/*
 * host.c - the host API table handed to every plugin's init(), filled from
 * the core modules, plus the glue that belongs to no single module:
 * timers, publish (retain + log + live routing, one completion), and
 * retained delivery at subscribe.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "batch.h"
#include "conn.h"
#include "daemon.h"
#include "host.h"
#include "listener.h"
#include "logger.h"
#include "logs.h"
#include "msg.h"
#include "retain.h"
#include "router.h"
#include "state.h"
#include "storage.h"
#include "util.h"

const char *daemon_data_dir(void);

static struct router *router;
static uint64_t msgs_in, msgs_out, dropped;

struct pmq_timer {
	struct event *ev;
	void (*fn)(void *);
	void *arg;
};

int
host_init(void)
{
	router = router_new();
	return router != NULL ? PMQ_OK : PMQ_ERR_NOMEM;
}

void
host_shutdown(void)
{
	router_free(router);
	router = NULL;
}

struct router *
host_router(void)
{
	return router;
}

/* ---- logging, errors ---- */

static void
h_vlog(pmq_instance *inst, int level, const char *fmt, va_list ap)
{
	logger_vlog(inst != NULL ? inst->name : NULL, level, fmt, ap);
}

static void
h_log(pmq_instance *inst, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	h_vlog(inst, level, fmt, ap);
	va_end(ap);
}

static const char *
h_strerror(int err)
{
	static const char *names[] = {
		"ok", "out of memory", "invalid argument or input", "not found",
		"already exists", "I/O error", "no space left", "out of range",
		"limit reached", "closed", "not supported", "configuration error",
		"ABI mismatch", "try again", "read-only", "corrupt data",
		"cancelled",
	};

	if (err > 0 || -err >= (int)UTIL_ARRAY_LEN(names))
		return "unknown error";
	return names[-err];
}

/* ---- instances ---- */

static const char *
h_instance_name(pmq_instance *inst)
{
	return inst->name;
}

/* ---- timers ---- */

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pmq_timer *t = arg;

	(void)fd;
	(void)what;
	t->fn(t->arg);
}

static pmq_timer *
h_timer_new(void (*fn)(void *), void *arg)
{
	struct pmq_timer *t = calloc(1, sizeof *t);

	if (t == NULL)
		return NULL;
	t->fn = fn;
	t->arg = arg;
	return t;
}

static int
h_timer_start(pmq_timer *t, uint64_t ms, int repeat)
{
	struct timeval tv;

	if (t->ev != NULL)
		event_free(t->ev);
	t->ev = event_new(daemon_base(), -1, repeat ? EV_PERSIST : 0, timer_cb, t);
	if (t->ev == NULL)
		return PMQ_ERR_NOMEM;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	return event_add(t->ev, &tv) == 0 ? PMQ_OK : PMQ_ERR_NOMEM;
}

static void
h_timer_stop(pmq_timer *t)
{
	if (t->ev != NULL)
		event_del(t->ev);
}

static void
h_timer_free(pmq_timer *t)
{
	if (t == NULL)
		return;
	if (t->ev != NULL)
		event_free(t->ev);
	free(t);
}

/* ---- clients, routing ---- */

static pmq_client *
h_client_new(pmq_instance *inst, const char *id, void *udata)
{
	return router_client_new(router, inst, id, udata);
}

static void
h_client_free(pmq_client *cl)
{
	router_client_free(router, cl);
}

static int
h_subscribe(pmq_client *cl, const char *filter, const struct pmq_sub_opts *o)
{
	return router_subscribe(router, cl, filter, o);
}

static int
h_unsubscribe(pmq_client *cl, const char *filter, const char *group)
{
	return router_unsubscribe(router, cl, filter, group);
}

/* Hand one delivery to the transport that owns the client; ctx is the
 * publish in progress (struct pub), which the transport may hold. */
static void
deliver_cb(void *ctx, struct pmq_client *cl, pmq_msg *m,
    const struct pmq_delivery *d)
{
	const struct pmq_transport_ops *ops = cl->inst->plugin->ops;
	struct pmq_delivery dd = *d;

	dd.size = sizeof dd;
	dd.hold = ctx;
	msgs_out++;
	ops->deliver(cl->inst->state, cl->udata, m, &dd);
}

struct retained_ctx {
	pmq_client *cl;
	const struct pmq_sub_opts *opts;
	int64_t now;
	size_t n;
};

static void
retained_one(void *arg, pmq_msg *m)
{
	struct retained_ctx *rc = arg;
	struct pmq_msg_fields f;
	struct pmq_delivery d;
	uint32_t id;

	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	msg_fields(m, &f);
	if (f.expiry_ms != 0 && f.expiry_ms <= rc->now)
		return;
	memset(&d, 0, sizeof d);
	d.size = sizeof d;
	d.qos = f.qos < rc->opts->qos ? f.qos : rc->opts->qos;
	d.retain = 1;
	d.from_store = 1;
	if (rc->opts->sub_id != 0) {
		id = rc->opts->sub_id;
		d.n_sub_ids = 1;
		d.sub_ids = &id;
	}
	rc->n++;
	deliver_cb(NULL, rc->cl, m, &d); /* no publish to hold */
}

static int
h_retained_send(pmq_client *cl, const char *filter,
    const struct pmq_sub_opts *o, int is_new)
{
	struct retained_ctx rc = { cl, o, util_now_ms(), 0 };

	if (o->retain_handling == PMQ_RETAIN_DONT_SEND)
		return PMQ_OK;
	if (o->retain_handling == PMQ_RETAIN_SEND_NEW && !is_new)
		return PMQ_OK;
	/* MQTT 5 (4.8.2): retained messages are not sent for a shared
	 * subscription when it is established. */
	if (o->share_group != NULL)
		return PMQ_OK;
	retain_match(state_retained(), filter, retained_one, &rc);
	return PMQ_OK;
}

/* One publish may need several storage writes (retained, log, and the
 * queues of offline sessions through delivery holds); the publisher's
 * done runs once, after all of them, with the first error.  A pmq_hold
 * handed to transports is a struct pub. */
struct pub {
	pmq_publish_fn done;
	void *arg;
	int outstanding;
	int status;
	struct pmq_publish_result res;
};

static void
pub_finish(struct pub *p)
{
	if (--p->outstanding > 0)
		return;
	if (p->done != NULL)
		p->done(p->arg, p->status, &p->res);
	free(p);
}

static void
pub_retain_done(void *arg, int status)
{
	struct pub *p = arg;

	if (status != PMQ_OK && p->status == PMQ_OK)
		p->status = status;
	pub_finish(p);
}

static void
pub_log_done(void *arg, int status, const struct pmq_publish_result *r)
{
	struct pub *p = arg;

	if (status != PMQ_OK && p->status == PMQ_OK)
		p->status = status;
	if (status == PMQ_OK && r != NULL) {
		p->res.partition = r->partition;
		p->res.offset = r->offset;
	}
	pub_finish(p);
}

static void
pub_post_cb(void *arg)
{
	pub_finish(arg);
}

static pmq_hold *
h_delivery_hold(const struct pmq_delivery *d)
{
	struct pub *p;

	if (d == NULL || !PMQ_HAS(d, struct pmq_delivery, hold) ||
	    d->hold == NULL)
		return NULL;
	p = (struct pub *)d->hold;
	p->outstanding++;
	return d->hold;
}

static void
h_hold_release(pmq_hold *h, int status)
{
	struct pub *p = (struct pub *)h;

	if (status != PMQ_OK && p->status == PMQ_OK)
		p->status = status;
	pub_finish(p);
}

static int
h_publish(pmq_client *origin, pmq_msg *m, unsigned flags, pmq_publish_fn done,
    void *arg)
{
	struct pmq_msg_fields f;
	struct pub *p;
	int rc;

	p = calloc(1, sizeof *p);
	if (p == NULL)
		return PMQ_ERR_NOMEM;
	p->done = done;
	p->arg = arg;
	p->res.size = sizeof p->res;
	p->res.partition = -1;
	p->res.offset = -1;
	/* The extra count is ours: nothing can finish p before we are done
	 * submitting, and the final release goes through the loop so that
	 * done never runs inside this call. */
	p->outstanding = 1;
	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	msg_fields(m, &f);
	msgs_in++;
	if (f.retain) {
		p->outstanding++;
		rc = state_retain(m, pub_retain_done, p);
		if (rc != PMQ_OK) {
			p->outstanding--;
			p->status = rc;
		}
	}
	if (!(flags & PMQ_PUB_NO_LOG) && p->status == PMQ_OK) {
		p->outstanding++;
		rc = logs_append_msg(m, pub_log_done, p);
		if (rc != PMQ_OK) {
			p->outstanding--;
			if (rc != PMQ_ERR_NOTFOUND)
				p->status = rc;
		}
	}
	if (!(flags & PMQ_PUB_NO_ROUTE))
		p->res.n_delivered =
		    (uint32_t)router_publish(router, origin, m, deliver_cb, p);
	rc = storage_post(pub_post_cb, p);
	if (rc != PMQ_OK) {
		/* Shutdown: the loop will not run it; finish now. */
		pub_finish(p);
	}
	return PMQ_OK;
}

/* ---- counters ---- */

static void
h_stats(struct pmq_stats *out)
{
	struct pmq_stats s;
	uint32_t size = out->size;

	memset(&s, 0, sizeof s);
	s.size = size;
	s.connections = listener_open_connections();
	s.connections_total = listener_total_connections();
	s.msgs_in = msgs_in;
	s.msgs_out = msgs_out;
	s.bytes_in = conn_bytes_in();
	s.bytes_out = conn_bytes_out();
	s.subscriptions = router != NULL ? router_count(router) : 0;
	s.retained = state_retained() != NULL ? retain_count(state_retained()) : 0;
	s.uptime_s = daemon_uptime_s();
	s.dropped = dropped;
	memcpy(out, &s, size < sizeof s ? size : sizeof s);
}

static int
h_has_subscribers(const char *topic)
{
	if (router == NULL)
		return 0;
	return router_has_match(router, topic, topic != NULL ? strlen(topic) : 0);
}

static void
h_stats_dropped(uint64_t n)
{
	dropped += n;
}

static const struct pmq_host_api api = {
	.abi_major = PMQ_ABI_MAJOR,
	.abi_minor = PMQ_ABI_MINOR,
	.size = sizeof(struct pmq_host_api),
	.log = h_log,
	.vlog = h_vlog,
	.strerror = h_strerror,
	.free = free,
	.cfg_bool = util_parse_bool,
	.cfg_int = util_parse_int,
	.cfg_size = util_parse_size,
	.cfg_duration_ms = util_parse_duration_ms,
	.instance_name = h_instance_name,
	.data_dir = daemon_data_dir,
	.now_ms = util_now_ms,
	.monotonic_ms = util_monotonic_ms,
	.timer_new = h_timer_new,
	.timer_start = h_timer_start,
	.timer_stop = h_timer_stop,
	.timer_free = h_timer_free,
	.post = storage_post,
	.io_done = storage_io_done,
	.io_done_data = storage_io_done_data,
	.conn_input_len = conn_input_len,
	.conn_input_peek = conn_input_peek,
	.conn_input_find = conn_input_find,
	.conn_input_drain = conn_input_drain,
	.conn_send = conn_send,
	.conn_send_ref = conn_send_ref,
	.conn_output_len = conn_output_len,
	.conn_output_full = conn_output_full,
	.conn_pause = conn_pause,
	.conn_resume = conn_resume,
	.conn_close = conn_close,
	.conn_peer = conn_peer,
	.conn_id = conn_id,
	.slot_open = conn_slot_open,
	.slot_send = conn_slot_send,
	.slot_close = conn_slot_close,
	.msg_new = msg_new,
	.msg_fields = msg_fields,
	.msg_ref = msg_ref,
	.msg_unref = msg_unref,
	.client_new = h_client_new,
	.client_free = h_client_free,
	.subscribe = h_subscribe,
	.unsubscribe = h_unsubscribe,
	.retained_send = h_retained_send,
	.publish = h_publish,
	.log_create = logs_create,
	.log_delete = logs_delete,
	.log_topic = logs_topic,
	.log_topics = logs_topics,
	.log_offsets = logs_offsets,
	.log_append = logs_append,
	.log_read = logs_read,
	.log_offset_for_time = logs_offset_for_time,
	.log_wait = logs_wait,
	.log_wait_cancel = logs_wait_cancel,
	.batch_records = batch_records,
	.kv_put = state_kv_put,
	.kv_del = state_kv_del,
	.kv_get = state_kv_get,
	.kv_scan = state_kv_scan,
	.stats = h_stats,
	.stats_dropped = h_stats_dropped,
	.delivery_hold = h_delivery_hold,
	.hold_release = h_hold_release,
	.conn_local = conn_local,
	.has_subscribers = h_has_subscribers,
	.slot_send_ref = conn_slot_send_ref,
	.log_read_ref = storage_read_ref,
	.log_read_unref = storage_read_unref,
	.conn_block_input = conn_block_input,
	.log_read_stored = logs_read_stored,
	.slot_send_stored = storage_send_stored,
};

const struct pmq_host_api *
host_api(void)
{
	return &api;
}
