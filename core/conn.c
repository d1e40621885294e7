/*
 * conn.c - one accepted connection (see conn.h).
 *
 * Output order: bytes sent with PMQ_SEND_ORDERED and bytes of reply slots
 * leave in the order the sends and slot_open calls were made; a slot holds
 * back everything after it until the transport closes it (an ack waiting
 * for storage).  PMQ_SEND_NOW bypasses the slots.
 *
 * Closing never frees under a running callback: conn_abort marks the
 * connection dead, puts it on the finalize list and activates the one
 * shared finalizer event, which runs on a fresh loop turn, tells each
 * transport (conn_closed) and frees.
 *
 * Memory per idle connection (issue 6): the bufferevent and its two
 * evbuffers, struct conn_priv with the peer string in the same block;
 * the local address is formatted only when asked for, and there is no
 * per-connection finalizer event or evbuffer callback.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conn.h"
#include "daemon.h"
#include "listener.h"
#include "logger.h"
#include "util.h"

struct conn_priv {
	struct pmq_conn c;
	char peer[]; /* c.peer points here */
};

struct ref_release {
	void (*release)(void *);
	void *arg;
};

static uint64_t next_id = 1;
static uint64_t bytes_in, bytes_out;
/* The shared finalizer: dead connections wait on fin_list (newest first). */
static struct event *fin_ev;
static struct event_base *fin_base;
static struct pmq_conn *fin_list;
/* The connection whose input the transport is handling right now: the
 * publisher, when a delivery finds a subscriber's output full. */
static struct pmq_conn *cur_input;

static void conn_finalize(struct pmq_conn *c);
static void conn_update_read(struct pmq_conn *c);
static void conn_check_output(struct pmq_conn *c);
static void unblock_all(struct pmq_conn *full);

uint64_t
conn_bytes_in(void)
{
	return bytes_in;
}

uint64_t
conn_bytes_out(void)
{
	return bytes_out;
}

static void
fin_unlink(struct pmq_conn *c)
{
	if (!c->on_fin_list)
		return;
	if (c->fin_prev != NULL)
		c->fin_prev->fin_next = c->fin_next;
	else
		fin_list = c->fin_next;
	if (c->fin_next != NULL)
		c->fin_next->fin_prev = c->fin_prev;
	c->fin_prev = c->fin_next = NULL;
	c->on_fin_list = 0;
}

static void
fin_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	/* Connections aborted by a conn_closed below join the list and are
	 * finalized in this same run; each is unlinked before it is freed. */
	while (fin_list != NULL)
		conn_finalize(fin_list);
}

void
conn_shutdown(void)
{
	while (fin_list != NULL)
		conn_finalize(fin_list);
	if (fin_ev != NULL)
		event_free(fin_ev);
	fin_ev = NULL;
	fin_base = NULL;
}

/* The shared finalizer event, created on first use on the daemon's base.
 * conn_shutdown() frees it before that base goes away. */
static struct event *
fin_event(void)
{
	struct event_base *base = daemon_base();

	/* A base that changed without conn_shutdown is a bug: freeing the
	 * old event would touch the freed base, so leak it instead. */
	if (fin_ev != NULL && fin_base != base)
		fin_ev = NULL;
	if (fin_ev == NULL) {
		fin_ev = event_new(base, -1, 0, fin_cb, NULL);
		fin_base = base;
	}
	return fin_ev;
}

/* Queue a dead connection for finalization on a fresh loop turn. */
static void
fin_schedule(struct pmq_conn *c)
{
	struct event *ev;

	if (!c->on_fin_list) {
		c->fin_prev = NULL;
		c->fin_next = fin_list;
		if (fin_list != NULL)
			fin_list->fin_prev = c;
		fin_list = c;
		c->on_fin_list = 1;
	}
	ev = fin_event();
	if (ev != NULL)
		event_active(ev, EV_READ, 0);
	/* else: out of memory for one 130-byte event; the connection stays
	 * dead on the list and is finalized with the next one, or at
	 * shutdown by listener_close_all. */
}

/* Runs the transport's conn_input while input is waiting and the
 * connection may read. */
static void
conn_feed(struct pmq_conn *c)
{
	struct listener *ln = c->ln;
	struct evbuffer *in = bufferevent_get_input(c->bev);

	struct pmq_conn *outer = cur_input;

	if (c->dead || c->closing || c->paused || c->above_hwm || c->blocked)
		return;
	if (evbuffer_get_length(in) == 0)
		return;
	c->in_input = 1;
	cur_input = c;
	ln->ops->conn_input(ln->inst.state, c->cs, c);
	cur_input = outer;
	c->in_input = 0;
	if (c->dead || c->closing)
		return;
	conn_check_output(c);
	/* A frame bigger than input_max can never be parsed: a transport
	 * waiting for more of it would stall the connection forever. */
	if (!c->paused && !c->above_hwm && !c->blocked &&
	    evbuffer_get_length(in) > c->input_max) {
		logger_log(ln->inst.name, PMQ_LOG_WARN,
		    "%s: %zu input bytes buffered, over input_max %llu: closing",
		    c->peer, evbuffer_get_length(in),
		    (unsigned long long)c->input_max);
		conn_abort(c, PMQ_CLOSE_LIMIT);
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct pmq_conn *c = arg;

	(void)bev;
	conn_feed(c);
}

static void
conn_maybe_finish_close(struct pmq_conn *c)
{
	if (!c->closing || c->dead)
		return;
	if (c->slots_head != NULL)
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) != 0)
		return;
	conn_abort(c, PMQ_CLOSE_PLUGIN);
}

/* Take c off the list of the connection it waits for. */
static void
blk_unlink(struct pmq_conn *c)
{
	struct pmq_conn **pp;

	if (c->blocked_on == NULL)
		return;
	for (pp = &c->blocked_on->blockers; *pp != NULL; pp = &(*pp)->blk_next)
		if (*pp == c) {
			*pp = c->blk_next;
			break;
		}
	c->blocked_on = NULL;
	c->blk_next = NULL;
}

/* full drained or went away: every connection blocked on it reads again
 * (on a fresh loop turn, through the read trigger, not re-entering their
 * transport from inside this one's callback). */
static void
unblock_all(struct pmq_conn *full)
{
	struct pmq_conn *b;

	while ((b = full->blockers) != NULL) {
		full->blockers = b->blk_next;
		b->blk_next = NULL;
		b->blocked_on = NULL;
		b->blocked = 0;
		if (b->dead)
			continue;
		conn_update_read(b);
		if (evbuffer_get_length(bufferevent_get_input(b->bev)) > 0)
			bufferevent_trigger(b->bev, EV_READ,
			    BEV_TRIG_IGNORE_WATERMARKS |
			    BEV_TRIG_DEFER_CALLBACKS);
	}
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct pmq_conn *c = arg;
	struct listener *ln = c->ln;
	size_t len = evbuffer_get_length(bufferevent_get_output(bev));

	if (c->dead)
		return;
	if (c->closing) {
		conn_maybe_finish_close(c);
		return;
	}
	if (c->blockers != NULL && len <= c->output_high_water / 2)
		unblock_all(c);
	if (c->above_hwm && len <= c->output_high_water / 2) {
		c->above_hwm = 0;
		if (ln->ops->conn_drained != NULL)
			ln->ops->conn_drained(ln->inst.state, c->cs, c);
		if (c->dead || c->closing)
			return;
		conn_update_read(c);
		conn_feed(c);
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pmq_conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_ERROR) {
		logger_log(c->ln->inst.name, PMQ_LOG_DEBUG, "%s: socket error: %s",
		    c->peer, strerror(EVUTIL_SOCKET_ERROR()));
		conn_abort(c, PMQ_CLOSE_ERROR);
	} else if (what & BEV_EVENT_EOF) {
		conn_abort(c, PMQ_CLOSE_PEER);
	}
}

static void
conn_update_read(struct pmq_conn *c)
{
	if (c->dead)
		return;
	if (c->paused || c->above_hwm || c->closing || c->blocked)
		bufferevent_disable(c->bev, EV_READ);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* After output grew: note when it passes the high-water mark, so reading
 * stops (backpressure) until the peer drains it. */
static void
conn_check_output(struct pmq_conn *c)
{
	size_t len = evbuffer_get_length(bufferevent_get_output(c->bev));

	if (!c->above_hwm && len >= c->output_high_water) {
		c->above_hwm = 1;
		conn_update_read(c);
	}
}

struct pmq_conn *
conn_new(struct listener *ln, int fd, const char *peer)
{
	struct conn_priv *p;
	struct pmq_conn *c;
	size_t plen = strlen(peer);
	int one = 1;

	if (plen > 63)
		plen = 63;
	p = calloc(1, sizeof *p + plen + 1);
	if (p == NULL) {
		close(fd);
		listener_conn_gone(ln);
		logger_log(ln->inst.name, PMQ_LOG_ERROR, "%s: out of memory", peer);
		return NULL;
	}
	c = &p->c;
	c->ln = ln;
	c->id = next_id++;
	memcpy(p->peer, peer, plen);
	p->peer[plen] = '\0';
	c->peer = p->peer;
	c->output_high_water = ln->output_high_water;
	c->input_max = ln->input_max;
	/* Latency over packet count: replies are small and must not wait. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->bev = bufferevent_socket_new(daemon_base(), fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL || fin_event() == NULL) {
		if (c->bev != NULL)
			bufferevent_free(c->bev);
		else
			close(fd);
		free(p);
		listener_conn_gone(ln);
		logger_log(ln->inst.name, PMQ_LOG_ERROR, "%s: out of memory", peer);
		return NULL;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, c->output_high_water / 2, 0);
	c->next = ln->conns;
	if (ln->conns != NULL)
		ln->conns->prev = c;
	ln->conns = c;
	ln->n_conns++;
	c->cs = ln->ops->conn_open(ln->inst.state, c);
	if (c->cs == NULL && !c->dead) {
		logger_log(ln->inst.name, PMQ_LOG_INFO, "%s: refused by transport",
		    peer);
		/* The transport never saw this connection: no conn_closed. */
		c->dead = 1;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		fin_schedule(c);
		return NULL;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return c;
}

void
conn_abort(struct pmq_conn *c, int reason)
{
	struct pmq_slot *s, *next;

	if (c->dead)
		return;
	c->dead = 1;
	c->close_reason = reason;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	blk_unlink(c);
	unblock_all(c);
	/* Slots the transport still holds stay allocated until it closes them;
	 * closed ones are ours to free now. */
	for (s = c->slots_head; s != NULL; s = next) {
		next = s->next;
		s->conn = NULL;
		s->next = NULL;
		if (s->closed) {
			evbuffer_free(s->buf);
			free(s);
		}
	}
	c->slots_head = c->slots_tail = NULL;
	fin_schedule(c);
}

static void
conn_finalize(struct pmq_conn *c)
{
	struct listener *ln = c->ln;
	struct conn_priv *p = (struct conn_priv *)c;

	fin_unlink(c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		ln->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	ln->n_conns--;
	listener_conn_gone(ln);
	if (c->cs != NULL)
		ln->ops->conn_closed(ln->inst.state, c->cs, c->close_reason);
	bufferevent_free(c->bev);
	free(c->local);
	free(p);
}

/* Used at shutdown, outside any callback: finish now. */
void
conn_finalize_now(struct pmq_conn *c)
{
	conn_abort(c, PMQ_CLOSE_SHUTDOWN);
	conn_finalize(c);
}

size_t
conn_input_len(pmq_conn *c)
{
	if (c->dead)
		return 0;
	return evbuffer_get_length(bufferevent_get_input(c->bev));
}

const void *
conn_input_peek(pmq_conn *c, size_t n)
{
	struct evbuffer *in;

	if (c->dead)
		return NULL;
	in = bufferevent_get_input(c->bev);
	if (evbuffer_get_length(in) < n || n > (size_t)SSIZE_MAX)
		return NULL;
	if (n == 0)
		return "";
	return evbuffer_pullup(in, (ev_ssize_t)n);
}

ssize_t
conn_input_find(pmq_conn *c, const void *needle, size_t len, size_t max_scan)
{
	struct evbuffer *in;
	struct evbuffer_ptr end, found;
	size_t have;

	if (c->dead || len == 0)
		return -1;
	in = bufferevent_get_input(c->bev);
	have = evbuffer_get_length(in);
	if (max_scan > have)
		max_scan = have;
	if (max_scan < len)
		return -1;
	if (evbuffer_ptr_set(in, &end, max_scan, EVBUFFER_PTR_SET) != 0)
		return -1;
	found = evbuffer_search_range(in, needle, len, NULL, &end);
	return found.pos < 0 ? -1 : (ssize_t)found.pos;
}

void
conn_input_drain(pmq_conn *c, size_t n)
{
	if (c->dead)
		return;
	evbuffer_drain(bufferevent_get_input(c->bev), n);
	bytes_in += n;
}

/* A closed slot at the tail carrying data, so ordered sends queue behind
 * slots that are still open. */
static struct pmq_slot *
slot_new(struct pmq_conn *c)
{
	struct pmq_slot *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->buf = evbuffer_new();
	if (s->buf == NULL) {
		free(s);
		return NULL;
	}
	s->conn = c;
	if (c->slots_tail != NULL)
		c->slots_tail->next = s;
	else
		c->slots_head = s;
	c->slots_tail = s;
	return s;
}

static void
slots_flush(struct pmq_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct pmq_slot *s;

	while ((s = c->slots_head) != NULL && s->closed) {
		c->slots_head = s->next;
		if (c->slots_head == NULL)
			c->slots_tail = NULL;
		bytes_out += evbuffer_get_length(s->buf);
		evbuffer_add_buffer(out, s->buf);
		evbuffer_free(s->buf);
		free(s);
	}
	conn_check_output(c);
	if (c->closing)
		conn_maybe_finish_close(c);
}

static struct evbuffer *
ordered_target(struct pmq_conn *c, unsigned flags, struct pmq_slot **tmp)
{
	*tmp = NULL;
	if ((flags & PMQ_SEND_NOW) || c->slots_head == NULL)
		return bufferevent_get_output(c->bev);
	*tmp = slot_new(c);
	return *tmp != NULL ? (*tmp)->buf : NULL;
}

int
conn_send(pmq_conn *c, const void *data, size_t len, unsigned flags)
{
	struct pmq_slot *tmp;
	struct evbuffer *buf;

	if (c->dead)
		return PMQ_ERR_CLOSED;
	buf = ordered_target(c, flags, &tmp);
	if (buf == NULL || evbuffer_add(buf, data, len) != 0)
		return PMQ_ERR_NOMEM;
	if (tmp != NULL) {
		tmp->closed = 1;
	} else {
		bytes_out += len;
		conn_check_output(c);
	}
	return PMQ_OK;
}

static void
ref_cleanup(const void *data, size_t len, void *extra)
{
	struct ref_release *r = extra;

	(void)data;
	(void)len;
	if (r->release != NULL)
		r->release(r->arg);
	free(r);
}

int
conn_send_ref(pmq_conn *c, const void *data, size_t len,
    void (*release)(void *), void *arg, unsigned flags)
{
	struct pmq_slot *tmp;
	struct evbuffer *buf;
	struct ref_release *r;

	if (c->dead) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_CLOSED;
	}
	r = malloc(sizeof *r);
	buf = r != NULL ? ordered_target(c, flags, &tmp) : NULL;
	if (buf == NULL) {
		free(r);
		if (release != NULL)
			release(arg);
		return PMQ_ERR_NOMEM;
	}
	r->release = release;
	r->arg = arg;
	if (evbuffer_add_reference(buf, data, len, ref_cleanup, r) != 0) {
		ref_cleanup(data, len, r);
		return PMQ_ERR_NOMEM;
	}
	if (tmp != NULL) {
		tmp->closed = 1;
	} else {
		bytes_out += len;
		conn_check_output(c);
	}
	return PMQ_OK;
}

size_t
conn_output_len(pmq_conn *c)
{
	struct pmq_slot *s;
	size_t n;

	if (c->dead)
		return 0;
	n = evbuffer_get_length(bufferevent_get_output(c->bev));
	for (s = c->slots_head; s != NULL; s = s->next)
		n += evbuffer_get_length(s->buf);
	return n;
}

int
conn_output_full(pmq_conn *c)
{
	if (c->dead)
		return 1;
	return conn_output_len(c) >= c->output_high_water;
}

void
conn_pause(pmq_conn *c)
{
	c->paused = 1;
	conn_update_read(c);
}

void
conn_resume(pmq_conn *c)
{
	if (c->dead || !c->paused)
		return;
	c->paused = 0;
	conn_update_read(c);
	/* Input may already be buffered: let the transport see it on a fresh
	 * loop turn rather than re-entering it here. */
	if (!c->in_input && conn_input_len(c) > 0)
		bufferevent_trigger(c->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void
conn_close(pmq_conn *c, int flush)
{
	if (c->dead)
		return;
	if (!flush) {
		conn_abort(c, PMQ_CLOSE_PLUGIN);
		return;
	}
	c->closing = 1;
	conn_update_read(c);
	bufferevent_enable(c->bev, EV_WRITE);
	conn_maybe_finish_close(c);
}

const char *
conn_peer(pmq_conn *c)
{
	return c->peer;
}

const char *
conn_local(pmq_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char buf[64];

	if (c->local != NULL)
		return c->local;
	if (getsockname(bufferevent_getfd(c->bev), (struct sockaddr *)&ss,
	    &sl) == 0)
		listener_format_addr((struct sockaddr *)&ss, buf, sizeof buf);
	else
		util_strlcpy(buf, "unknown", sizeof buf);
	c->local = strdup(buf);
	return c->local != NULL ? c->local : "unknown";
}

uint64_t
conn_id(pmq_conn *c)
{
	return c->id;
}

pmq_slot *
conn_slot_open(pmq_conn *c)
{
	struct pmq_slot *s;

	if (c->dead)
		return NULL;
	s = slot_new(c);
	return s;
}

int
conn_slot_send(pmq_slot *s, const void *data, size_t len)
{
	if (s->conn == NULL || s->closed)
		return PMQ_ERR_CLOSED;
	if (evbuffer_add(s->buf, data, len) != 0)
		return PMQ_ERR_NOMEM;
	return PMQ_OK;
}

void
conn_slot_close(pmq_slot *s)
{
	struct pmq_conn *c = s->conn;

	if (c == NULL) { /* the connection went away first */
		evbuffer_free(s->buf);
		free(s);
		return;
	}
	s->closed = 1;
	if (c->slots_head == s)
		slots_flush(c);
}

int
conn_slot_send_ref(pmq_slot *s, const void *data, size_t len,
    void (*release)(void *), void *arg)
{
	struct ref_release *r;

	if (s->conn == NULL || s->closed) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_CLOSED;
	}
	r = malloc(sizeof *r);
	if (r == NULL) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_NOMEM;
	}
	r->release = release;
	r->arg = arg;
	if (evbuffer_add_reference(s->buf, data, len, ref_cleanup, r) != 0) {
		ref_cleanup(data, len, r);
		return PMQ_ERR_NOMEM;
	}
	return PMQ_OK;
}

/* Backpressure across connections: a publisher whose deliveries find a
 * subscriber's output full stops reading until that output drains, so
 * nothing is dropped and TCP slows the publisher (qos0_full = block). */
int
conn_block_input(pmq_conn *full)
{
	struct pmq_conn *b = cur_input;

	if (b == NULL || b == full || b->dead || full->dead)
		return 0;
	if (evbuffer_get_length(bufferevent_get_output(full->bev)) <=
	    full->output_high_water / 2)
		return 0; /* write_cb would not fire to release it */
	if (b->blocked)
		return 1;
	b->blocked = 1;
	b->blocked_on = full;
	b->blk_next = full->blockers;
	full->blockers = b;
	conn_update_read(b);
	return 1;
}
