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
 * I/O without bufferevents (issue 6): one event on the socket, embedded
 * in the connection.  Reads take up to 64 KiB per callback (one read(2),
 * no FIONREAD) into one static scratch area that the transport sees by
 * reference; only bytes it leaves behind (a partial frame) are copied to
 * the connection's own input buffer.  Sends append to an output buffer
 * created on first use; the shared io event writes every connection's
 * output once at the end of the loop turn (one writev for all the sends
 * of the turn), and only a short write adds EV_WRITE.  Buffers are freed
 * when empty, so an idle connection costs struct conn_priv (with its
 * event and peer string) and nothing else in the core.
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
#include <event2/event.h>
#include <event2/util.h>

#include "conn.h"
#include "daemon.h"
#include "listener.h"
#include "logger.h"
#include "util.h"

/* The peer string lives in the connection's own block. */
struct conn_priv {
	struct pmq_conn c;
	char peer[];
};

struct ref_release {
	void (*release)(void *);
	void *arg;
};

/* io event work: write the output, run the transport on buffered input. */
enum { CONN_WORK_FLUSH = 1, CONN_WORK_FEED = 2 };

/* Bytes read per callback at most: a 16 KiB MQTT PUBLISH arrives in one
 * callback, and one busy connection still yields to the others. */
#define CONN_READ_MAX (64 * 1024)

/* close_reason is a 3-bit field of struct pmq_conn. */
_Static_assert(PMQ_CLOSE_LIMIT < 8, "PMQ_CLOSE_* outgrew conn.close_reason");

static uint64_t next_id = 1;
static uint64_t bytes_in, bytes_out;
/* The shared finalizer: dead connections wait on fin_list (newest first). */
static struct event *fin_ev;
static struct event_base *fin_base;
static struct pmq_conn *fin_list;
/* The connection whose input the transport is handling right now: the
 * publisher, when a delivery finds a subscriber's output full. */
static struct pmq_conn *cur_input;
/* The shared io event and its list (FIFO) of connections with work. */
static struct event *io_ev;
static struct event_base *io_base;
static struct pmq_conn *work_head, *work_tail;
/* Reads land here; scratch_buf refers to it while the transport runs. */
static char scratch[CONN_READ_MAX];
static struct evbuffer *scratch_buf;

static void conn_finalize(struct pmq_conn *c);
static void conn_update_events(struct pmq_conn *c);
static void conn_check_output(struct pmq_conn *c);
static void conn_schedule(struct pmq_conn *c, unsigned work);
static void unblock_all(struct pmq_conn *full);
static struct evbuffer *out_evbuffer_new(void);

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

static size_t
buf_len(const struct evbuffer *b)
{
	return b != NULL ? evbuffer_get_length(b) : 0;
}

/* Connections leave the list where they joined it, at the head (fin_cb,
 * and conn_finalize_now right after its conn_abort), so the walk stops
 * at once in practice. */
static void
fin_unlink(struct pmq_conn *c)
{
	struct pmq_conn **pp;

	if (!c->on_fin_list)
		return;
	for (pp = &fin_list; *pp != NULL; pp = &(*pp)->fin_next)
		if (*pp == c) {
			*pp = c->fin_next;
			break;
		}
	c->fin_next = NULL;
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
	if (io_ev != NULL)
		event_free(io_ev);
	io_ev = NULL;
	io_base = NULL;
	work_head = work_tail = NULL;
	if (scratch_buf != NULL)
		evbuffer_free(scratch_buf);
	scratch_buf = NULL;
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
		c->fin_next = fin_list;
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

static void io_cb(evutil_socket_t fd, short what, void *arg);

/* The shared io event, like the finalizer: one per base, freed by
 * conn_shutdown(). */
static struct event *
io_event(void)
{
	struct event_base *base = daemon_base();

	if (io_ev != NULL && io_base != base) {
		io_ev = NULL; /* see fin_event */
		work_head = work_tail = NULL;
	}
	if (io_ev == NULL) {
		io_ev = event_new(base, -1, 0, io_cb, NULL);
		io_base = base;
	}
	return io_ev;
}

/* Queue work for c on the io event.  event_active from inside a callback
 * appends the io event behind the callbacks already due this turn, so
 * every read of the turn runs first and each connection's output leaves
 * in one write. */
static void
conn_schedule(struct pmq_conn *c, unsigned work)
{
	struct event *ev;

	if (c->dead)
		return;
	c->work |= work;
	/* Already queued (io_cb reads work when it reaches c), or the list
	 * was not empty so the event is already active: every send of a
	 * turn would otherwise take the base lock again. */
	if (c->on_work)
		return;
	c->on_work = 1;
	c->work_next = NULL;
	if (work_tail != NULL) {
		work_tail->work_next = c;
		work_tail = c;
		return;
	}
	work_head = work_tail = c;
	ev = io_event();
	if (ev != NULL)
		event_active(ev, EV_READ, 0);
	/* else: cannot happen, conn_new made the event for this base. */
}

static void
work_unlink(struct pmq_conn *c)
{
	struct pmq_conn **pp, *prev = NULL;

	if (!c->on_work)
		return;
	for (pp = &work_head; *pp != NULL; prev = *pp, pp = &(*pp)->work_next)
		if (*pp == c) {
			*pp = c->work_next;
			if (work_tail == c)
				work_tail = prev;
			break;
		}
	c->work_next = NULL;
	c->on_work = 0;
	c->work = 0;
}

/* Runs the transport's conn_input while input is waiting and the
 * connection may read. */
static void
conn_feed(struct pmq_conn *c)
{
	struct listener *ln = c->ln;
	struct pmq_conn *outer = cur_input;
	size_t left;

	if (c->dead || c->closing || c->paused || c->above_hwm || c->blocked)
		return;
	if (buf_len(c->in) == 0)
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
	left = buf_len(c->in);
	if (!c->paused && !c->above_hwm && !c->blocked && left > ln->input_max) {
		logger_log(ln->inst.name, PMQ_LOG_WARN,
		    "%s: %zu input bytes buffered, over input_max %llu: closing",
		    conn_peer(c), left, (unsigned long long)ln->input_max);
		conn_abort(c, PMQ_CLOSE_LIMIT);
	}
}

/* The transport left part of the scratch read (a partial frame, or it
 * paused): copy what is left into c's own buffer, since the next read
 * reuses the scratch area. */
static int
keep_leftover(struct pmq_conn *c)
{
	size_t left = buf_len(scratch_buf);
	unsigned char *p;
	int rc = 0;

	if (left > 0 && !c->dead) {
		/* One reference chain: pullup returns it without copying. */
		p = evbuffer_pullup(scratch_buf, (ev_ssize_t)left);
		if (c->in == NULL)
			c->in = evbuffer_new();
		if (p == NULL || c->in == NULL || evbuffer_add(c->in, p, left) != 0)
			rc = -1;
	}
	if (left > 0)
		evbuffer_drain(scratch_buf, left);
	return rc;
}

static void
conn_read(struct pmq_conn *c)
{
	ssize_t n;

	n = read(c->fd, scratch, sizeof scratch);
	if (n == 0) {
		conn_abort(c, PMQ_CLOSE_PEER);
		return;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		logger_log(c->ln->inst.name, PMQ_LOG_DEBUG, "%s: read: %s",
		    conn_peer(c), strerror(errno));
		conn_abort(c, PMQ_CLOSE_ERROR);
		return;
	}
	if (scratch_buf == NULL)
		scratch_buf = evbuffer_new();
	if (c->in == NULL && scratch_buf != NULL &&
	    evbuffer_add_reference(scratch_buf, scratch, (size_t)n, NULL,
	    NULL) == 0) {
		/* The usual case, whole frames: the transport parses them in
		 * place and nothing is copied or kept. */
		c->in = scratch_buf;
		conn_feed(c);
		c->in = NULL;
		if (keep_leftover(c) != 0)
			goto nomem;
		return;
	}
	/* A partial frame is waiting: append to it. */
	if (c->in == NULL)
		c->in = evbuffer_new();
	if (c->in == NULL || evbuffer_add(c->in, scratch, (size_t)n) != 0)
		goto nomem;
	conn_feed(c);
	return;
nomem:
	logger_log(c->ln->inst.name, PMQ_LOG_ERROR,
	    "%s: out of memory for input: closing", conn_peer(c));
	conn_abort(c, PMQ_CLOSE_ERROR);
}

static void
conn_maybe_finish_close(struct pmq_conn *c)
{
	if (!c->closing || c->dead)
		return;
	if (c->slots_head != NULL)
		return;
	if (buf_len(c->out) != 0)
		return;
	conn_abort(c, PMQ_CLOSE_PLUGIN);
}

/* Take c off the list of the connection it waits for. */
static void
blk_unlink(struct pmq_conn *c)
{
	struct pmq_conn **pp;

	if (c->aux == NULL || c->aux->blocked_on == NULL)
		return;
	/* blocked_on has an aux: its blockers list holds c. */
	for (pp = &c->aux->blocked_on->aux->blockers; *pp != NULL;
	     pp = &(*pp)->aux->blk_next)
		if (*pp == c) {
			*pp = c->aux->blk_next;
			break;
		}
	c->aux->blocked_on = NULL;
	c->aux->blk_next = NULL;
}

/* c's aux, made on first use; NULL on no memory. */
static struct conn_aux *
conn_aux(struct pmq_conn *c)
{
	if (c->aux == NULL)
		c->aux = calloc(1, sizeof *c->aux);
	return c->aux;
}

/* full drained or went away: every connection blocked on it reads again
 * (buffered input is fed from the io event, not by re-entering their
 * transport from inside this one's callback). */
static void
unblock_all(struct pmq_conn *full)
{
	struct pmq_conn *b;

	if (full->aux == NULL)
		return;
	while ((b = full->aux->blockers) != NULL) {
		full->aux->blockers = b->aux->blk_next;
		b->aux->blk_next = NULL;
		b->aux->blocked_on = NULL;
		b->blocked = 0;
		if (b->dead)
			continue;
		conn_update_events(b);
		if (buf_len(b->in) > 0)
			conn_schedule(b, CONN_WORK_FEED);
	}
}

/* After bytes left: finish a flushing close, release blocked publishers
 * and end backpressure once output is at or below half the mark. */
static void
conn_after_write(struct pmq_conn *c)
{
	struct listener *ln = c->ln;
	size_t len = buf_len(c->out);

	if (c->dead)
		return;
	if (c->closing) {
		conn_maybe_finish_close(c);
		return;
	}
	if (len > c->ln->output_high_water / 2)
		return;
	if (c->aux != NULL && c->aux->blockers != NULL)
		unblock_all(c);
	if (c->above_hwm) {
		c->above_hwm = 0;
		if (ln->ops->conn_drained != NULL)
			ln->ops->conn_drained(ln->inst.state, c->cs, c);
		if (c->dead || c->closing)
			return;
		conn_update_events(c);
		if (buf_len(c->in) > 0)
			conn_schedule(c, CONN_WORK_FEED);
	}
}

/* Write what the kernel takes; wait for EV_WRITE only when it took less. */
static void
conn_flush(struct pmq_conn *c)
{
	int n;

	if (c->dead || c->out == NULL)
		return;
	errno = 0;
	n = evbuffer_write(c->out, c->fd);
	if (n == 0 && errno == 0 && evbuffer_get_length(c->out) > 0) {
		/* Only sendfile of a file segment returns 0 without an error
		 * (a full socket is EAGAIN): the file ended before the range
		 * queued from it, cut under a stored read.  The reply can
		 * never be completed, and waiting for EV_WRITE would spin. */
		logger_log(c->ln->inst.name, PMQ_LOG_ERROR,
		    "%s: stored data queued for sending is no longer in its "
		    "file: closing", conn_peer(c));
		conn_abort(c, PMQ_CLOSE_ERROR);
		return;
	}
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		logger_log(c->ln->inst.name, PMQ_LOG_DEBUG, "%s: write: %s",
		    conn_peer(c), strerror(errno));
		conn_abort(c, PMQ_CLOSE_ERROR);
		return;
	}
	if (evbuffer_get_length(c->out) == 0) {
		/* Freed when empty: an idle connection holds no buffer. */
		evbuffer_free(c->out);
		c->out = NULL;
		c->want_write = 0;
	} else {
		c->want_write = 1;
	}
	conn_update_events(c);
	conn_after_write(c);
}

static void
io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pmq_conn *c, *list = work_head;
	unsigned work;

	(void)fd;
	(void)what;
	(void)arg;
	/* Work queued while this runs goes on a fresh list and activates the
	 * event again, so a busy connection cannot keep this loop going. */
	work_head = work_tail = NULL;
	while ((c = list) != NULL) {
		list = c->work_next;
		c->work_next = NULL;
		work = c->work;
		c->work = 0;
		c->on_work = 0;
		if (c->dead)
			continue;
		if ((work & CONN_WORK_FLUSH) && !c->want_write)
			conn_flush(c);
		if (work & CONN_WORK_FEED)
			conn_feed(c);
	}
}

static void
conn_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pmq_conn *c = arg;

	(void)fd;
	if ((what & EV_WRITE) && !c->dead)
		conn_flush(c);
	if ((what & EV_READ) && !c->dead && (c->ev_want & EV_READ))
		conn_read(c);
}

/* Add the socket's event with the flags c needs now.  libevent 2.1 has no
 * way to change an added event's flags, so a change is del + assign +
 * add; it happens only when reading stops or starts or a write is short,
 * not per message. */
static void
conn_update_events(struct pmq_conn *c)
{
	short want = 0;

	if (!c->dead) {
		if (!c->paused && !c->above_hwm && !c->closing && !c->blocked)
			want |= EV_READ;
		if (c->want_write)
			want |= EV_WRITE;
	}
	if (want == c->ev_want)
		return;
	if (c->ev_want != 0)
		event_del(&c->ev);
	c->ev_want = 0;
	if (want == 0)
		return;
	if (event_assign(&c->ev, daemon_base(), c->fd, want | EV_PERSIST,
	    conn_ev_cb, c) != 0 || event_add(&c->ev, NULL) != 0) {
		logger_log(c->ln->inst.name, PMQ_LOG_ERROR,
		    "%s: cannot watch the socket: closing", conn_peer(c));
		conn_abort(c, PMQ_CLOSE_ERROR);
		return;
	}
	c->ev_want = (unsigned)want & (EV_READ | EV_WRITE);
}

/* After output grew: note when it passes the high-water mark, so reading
 * stops (backpressure) until the peer drains it; and have it written at
 * the end of the loop turn. */
static void
conn_check_output(struct pmq_conn *c)
{
	size_t len = buf_len(c->out);

	if (len == 0)
		return;
	if (!c->want_write)
		conn_schedule(c, CONN_WORK_FLUSH);
	if (!c->above_hwm && len >= c->ln->output_high_water) {
		c->above_hwm = 1;
		conn_update_events(c);
	}
}

/* The output buffer, created on first use. */
static struct evbuffer *
conn_out(struct pmq_conn *c)
{
	if (c->out == NULL)
		c->out = out_evbuffer_new();
	return c->out;
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
	if (p == NULL || fin_event() == NULL || io_event() == NULL ||
	    evutil_make_socket_nonblocking(fd) != 0) {
		close(fd);
		free(p);
		listener_conn_gone(ln);
		logger_log(ln->inst.name, PMQ_LOG_ERROR,
		    "%s: out of memory or bad socket", peer);
		return NULL;
	}
	c = &p->c;
	c->ln = ln;
	c->fd = fd;
	c->id = next_id++;
	memcpy(p->peer, peer, plen);
	p->peer[plen] = '\0';
	/* Latency over packet count: replies are small and must not wait. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
		fin_schedule(c);
		return NULL;
	}
	conn_update_events(c);
	return c;
}

void
conn_abort(struct pmq_conn *c, int reason)
{
	struct pmq_slot *s, *next;

	if (c->dead)
		return;
	c->dead = 1;
	c->close_reason = (unsigned)reason & 7;
	conn_update_events(c); /* dead: the event is deleted */
	blk_unlink(c);
	unblock_all(c);
	/* Slots the transport still holds stay allocated until it closes them;
	 * closed ones are ours to free now. */
	for (s = c->slots_head; s != NULL; s = next) {
		next = s->next;
		s->conn = NULL;
		s->next = NULL;
		if (s->closed) {
			if (s->buf != NULL)
				evbuffer_free(s->buf);
			free(s);
		}
	}
	c->slots_head = c->slots_tail = NULL;
	if (c->aux != NULL)
		c->aux->slot_bytes = 0;
	fin_schedule(c);
}

static void
conn_finalize(struct pmq_conn *c)
{
	struct listener *ln = c->ln;
	struct conn_priv *p = (struct conn_priv *)c;

	fin_unlink(c);
	work_unlink(c);
	if (c->ev_want != 0)
		event_del(&c->ev);
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
	/* Unsent output goes with the connection; its references are
	 * released here. */
	if (c->in != NULL && c->in != scratch_buf)
		evbuffer_free(c->in);
	if (c->out != NULL)
		evbuffer_free(c->out);
	close(c->fd);
	if (c->aux != NULL)
		free(c->aux->local);
	free(c->aux);
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
	return buf_len(c->in);
}

const void *
conn_input_peek(pmq_conn *c, size_t n)
{
	if (c->dead)
		return NULL;
	if (buf_len(c->in) < n || n > (size_t)SSIZE_MAX)
		return NULL;
	if (n == 0)
		return "";
	return evbuffer_pullup(c->in, (ev_ssize_t)n);
}

ssize_t
conn_input_find(pmq_conn *c, const void *needle, size_t len, size_t max_scan)
{
	struct evbuffer_ptr end, found;
	size_t have;

	if (c->dead || len == 0)
		return -1;
	have = buf_len(c->in);
	if (max_scan > have)
		max_scan = have;
	if (max_scan < len)
		return -1;
	if (evbuffer_ptr_set(c->in, &end, max_scan, EVBUFFER_PTR_SET) != 0)
		return -1;
	found = evbuffer_search_range(c->in, needle, len, NULL, &end);
	return found.pos < 0 ? -1 : (ssize_t)found.pos;
}

void
conn_input_drain(pmq_conn *c, size_t n)
{
	size_t have;

	if (c->dead || c->in == NULL)
		return;
	have = evbuffer_get_length(c->in);
	if (n > have)
		n = have;
	evbuffer_drain(c->in, n);
	bytes_in += n;
	/* An idle connection holds no input buffer (the scratch one is
	 * shared and stays). */
	if (n == have && c->in != scratch_buf) {
		evbuffer_free(c->in);
		c->in = NULL;
	}
}

/* An output buffer.  DRAINS_TO_FD lets a file segment added to it (or
 * to a slot's buffer, which becomes or joins the output) stay a file
 * range that evbuffer_write sends with sendfile(2); without the flag
 * libevent would map or read the file into memory. */
static struct evbuffer *
out_evbuffer_new(void)
{
	struct evbuffer *b = evbuffer_new();

	if (b != NULL && evbuffer_set_flags(b, EVBUFFER_FLAG_DRAINS_TO_FD) != 0) {
		evbuffer_free(b);
		b = NULL;
	}
	return b;
}

/* A closed slot at the tail carrying data, so ordered sends queue behind
 * slots that are still open. */
static struct pmq_slot *
slot_new(struct pmq_conn *c)
{
	struct pmq_slot *s;

	if (conn_aux(c) == NULL)
		return NULL;
	s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	s->conn = c;
	if (c->slots_tail != NULL)
		c->slots_tail->next = s;
	else
		c->slots_head = s;
	c->slots_tail = s;
	return s;
}

static size_t
slot_len(const struct pmq_slot *s)
{
	return s->buf != NULL ? evbuffer_get_length(s->buf) : s->small_len;
}

/* The slot's evbuffer, made (with the inline bytes moved in) when bytes
 * outgrow small[] or are sent by reference.  NULL on no memory. */
static struct evbuffer *
slot_evbuf(struct pmq_slot *s)
{
	if (s->buf != NULL)
		return s->buf;
	s->buf = out_evbuffer_new();
	if (s->buf == NULL)
		return NULL;
	if (s->small_len > 0 && evbuffer_add(s->buf, s->small, s->small_len) != 0) {
		evbuffer_free(s->buf);
		s->buf = NULL;
		return NULL;
	}
	s->small_len = 0;
	return s->buf;
}

/* Copy bytes into an open slot of a live connection. */
static int
slot_add(struct pmq_slot *s, const void *data, size_t len)
{
	struct evbuffer *b;

	if (s->buf == NULL && len <= sizeof s->small - s->small_len) {
		memcpy(s->small + s->small_len, data, len);
		s->small_len = (uint8_t)(s->small_len + len);
	} else if ((b = slot_evbuf(s)) == NULL || evbuffer_add(b, data, len) != 0) {
		return PMQ_ERR_NOMEM;
	}
	s->conn->aux->slot_bytes += len;
	return PMQ_OK;
}

static int
slots_flush(struct pmq_conn *c)
{
	struct pmq_slot *s;
	int rc = PMQ_OK;

	while ((s = c->slots_head) != NULL && s->closed) {
		size_t len = slot_len(s);
		struct evbuffer *out;

		if (len > 0 && s->buf == NULL) {
			out = conn_out(c);
			if (out == NULL || evbuffer_add(out, s->small, len) != 0) {
				rc = PMQ_ERR_NOMEM;
				break;
			}
		} else if (len > 0 && c->out == NULL) {
			/* The first slot's buffer becomes the output: no copy,
			 * no new buffer. */
			c->out = s->buf;
			s->buf = NULL;
		} else if (len > 0 && evbuffer_add_buffer(c->out, s->buf) != 0) {
			rc = PMQ_ERR_NOMEM;
			break;
		}
		c->aux->slot_bytes -= len;
		c->slots_head = s->next;
		if (c->slots_head == NULL)
			c->slots_tail = NULL;
		bytes_out += len;
		if (s->buf != NULL)
			evbuffer_free(s->buf);
		free(s);
	}
	if (rc != PMQ_OK) {
		/* Bytes can no longer leave in order: the connection is of no
		 * use to its peer. */
		logger_log(c->ln->inst.name, PMQ_LOG_ERROR,
		    "%s: out of memory for output: closing", conn_peer(c));
		conn_abort(c, PMQ_CLOSE_ERROR);
		return rc;
	}
	conn_check_output(c);
	if (c->closing)
		conn_maybe_finish_close(c);
	return PMQ_OK;
}

/* An ordered send behind open slots waits in a closed slot of its own. */
static int
send_waits(const struct pmq_conn *c, unsigned flags)
{
	return !(flags & PMQ_SEND_NOW) && c->slots_head != NULL;
}

int
conn_send(pmq_conn *c, const void *data, size_t len, unsigned flags)
{
	struct evbuffer *buf;
	pmq_slot *s;
	int rc;

	if (c->dead)
		return PMQ_ERR_CLOSED;
	if (send_waits(c, flags)) {
		if ((s = slot_new(c)) == NULL)
			return PMQ_ERR_NOMEM;
		rc = conn_slot_send(s, data, len);
		s->closed = 1; /* not the head: it leaves with those before */
		return rc;
	}
	buf = conn_out(c);
	if (buf == NULL || evbuffer_add(buf, data, len) != 0)
		return PMQ_ERR_NOMEM;
	bytes_out += len;
	conn_check_output(c);
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

/* The release record of bytes about to be added to buf; NULL (with
 * release(arg) already run) when buf is NULL or on no memory. */
static struct ref_release *
ref_release_new(const struct evbuffer *buf, void (*release)(void *),
    void *arg)
{
	struct ref_release *r = buf != NULL ? malloc(sizeof *r) : NULL;

	if (r == NULL) {
		if (release != NULL)
			release(arg);
		return NULL;
	}
	r->release = release;
	r->arg = arg;
	return r;
}

/* Reference bytes from buf (NULL: no memory); release(arg) runs once they
 * are written or dropped, also when this fails. */
static int
add_ref(struct evbuffer *buf, const void *data, size_t len,
    void (*release)(void *), void *arg)
{
	struct ref_release *r = ref_release_new(buf, release, arg);

	if (r == NULL)
		return PMQ_ERR_NOMEM;
	if (evbuffer_add_reference(buf, data, len, ref_cleanup, r) != 0) {
		ref_cleanup(data, len, r);
		return PMQ_ERR_NOMEM;
	}
	return PMQ_OK;
}

int
conn_send_ref(pmq_conn *c, const void *data, size_t len,
    void (*release)(void *), void *arg, unsigned flags)
{
	pmq_slot *s;
	int rc;

	if (c->dead) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_CLOSED;
	}
	if (send_waits(c, flags)) {
		if ((s = slot_new(c)) == NULL) {
			if (release != NULL)
				release(arg);
			return PMQ_ERR_NOMEM;
		}
		rc = conn_slot_send_ref(s, data, len, release, arg);
		s->closed = 1; /* not the head: it leaves with those before */
		return rc;
	}
	rc = add_ref(conn_out(c), data, len, release, arg);
	if (rc == PMQ_OK) {
		bytes_out += len;
		conn_check_output(c);
	}
	return rc;
}

size_t
conn_output_len(pmq_conn *c)
{
	size_t n;

	if (c->dead)
		return 0;
	n = buf_len(c->out);
	if (c->aux != NULL)
		n += c->aux->slot_bytes;
	return n;
}

int
conn_output_full(pmq_conn *c)
{
	if (c->dead)
		return 1;
	return conn_output_len(c) >= c->ln->output_high_water;
}

void
conn_pause(pmq_conn *c)
{
	c->paused = 1;
	conn_update_events(c);
}

void
conn_resume(pmq_conn *c)
{
	if (c->dead || !c->paused)
		return;
	c->paused = 0;
	conn_update_events(c);
	/* Input may already be buffered: let the transport see it from the
	 * io event rather than re-entering it here. */
	if (!c->in_input && conn_input_len(c) > 0)
		conn_schedule(c, CONN_WORK_FEED);
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
	conn_update_events(c);
	/* Output still queued is written by the io event or on EV_WRITE,
	 * and each write ends in conn_maybe_finish_close. */
	conn_maybe_finish_close(c);
}

const char *
conn_peer(pmq_conn *c)
{
	return ((struct conn_priv *)c)->peer;
}

const char *
conn_local(pmq_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char buf[64];

	if (c->aux != NULL && c->aux->local != NULL)
		return c->aux->local;
	if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0)
		listener_format_addr((struct sockaddr *)&ss, buf, sizeof buf);
	else
		util_strlcpy(buf, "unknown", sizeof buf);
	if (conn_aux(c) == NULL)
		return "unknown";
	c->aux->local = strdup(buf);
	return c->aux->local != NULL ? c->aux->local : "unknown";
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
	return slot_add(s, data, len);
}

void
conn_slot_close(pmq_slot *s)
{
	struct pmq_conn *c = s->conn;

	if (c == NULL) { /* the connection went away first */
		if (s->buf != NULL)
			evbuffer_free(s->buf);
		free(s);
		return;
	}
	s->closed = 1;
	if (c->slots_head == s)
		(void)slots_flush(c);
}

int
conn_slot_send_ref(pmq_slot *s, const void *data, size_t len,
    void (*release)(void *), void *arg)
{
	int rc;

	if (s->conn == NULL || s->closed) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_CLOSED;
	}
	rc = add_ref(slot_evbuf(s), data, len, release, arg);
	if (rc == PMQ_OK)
		s->conn->aux->slot_bytes += len;
	return rc;
}

static void
file_cleanup(const struct evbuffer_file_segment *seg, int flags, void *arg)
{
	(void)seg;
	(void)flags;
	ref_cleanup(NULL, 0, arg);
}

int
conn_slot_send_file(pmq_slot *s, int fd, int64_t pos, size_t len,
    void (*release)(void *), void *arg)
{
	struct evbuffer_file_segment *seg;
	struct ref_release *r;
	struct evbuffer *b;
	int rc;

	if (s->conn == NULL || s->closed) {
		if (release != NULL)
			release(arg);
		return PMQ_ERR_CLOSED;
	}
	b = slot_evbuf(s);
	if ((r = ref_release_new(b, release, arg)) == NULL)
		return PMQ_ERR_NOMEM;
	/* The fd stays the storage's (no CLOSE_ON_FREE); r releases its
	 * answer once the segment has been written or dropped.  Only the
	 * loop thread touches it: no lock. */
	seg = evbuffer_file_segment_new(fd, (ev_off_t)pos, (ev_off_t)len,
	    EVBUF_FS_DISABLE_LOCKING);
	if (seg == NULL) {
		ref_cleanup(NULL, 0, r);
		return PMQ_ERR_NOMEM;
	}
	evbuffer_file_segment_add_cleanup_cb(seg, file_cleanup, r);
	rc = evbuffer_add_file_segment(b, seg, 0, (ev_off_t)len);
	/* Drops this function's reference: the buffer holds its own, and on
	 * failure this frees the segment and runs file_cleanup. */
	evbuffer_file_segment_free(seg);
	if (rc != 0)
		return PMQ_ERR_NOMEM;
	s->conn->aux->slot_bytes += len;
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
	/* Only output waiting to be written will bring the write that
	 * releases b: at or below half the mark none would. */
	if (buf_len(full->out) <= full->ln->output_high_water / 2)
		return 0;
	if (b->blocked)
		return 1;
	if (conn_aux(b) == NULL || conn_aux(full) == NULL)
		return 0; /* no memory: the caller's drop policy applies */
	b->blocked = 1;
	b->aux->blocked_on = full;
	b->aux->blk_next = full->aux->blockers;
	full->aux->blockers = b;
	conn_update_events(b);
	return 1;
}
