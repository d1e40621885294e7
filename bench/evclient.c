/* bench/evclient.c - the MQTT (3.1.1 and 5, QoS 0/1/2) and tcp-protocol
 * load clients of plexmq-bench, all on one libevent loop.
 *
 * Why our own MQTT client: libmosquitto spends more CPU per message than a
 * broker does, so with it the tool, not the broker, would be measured.
 * Here a publish is encoded straight into the connection's output evbuffer
 * and the bufferevent writes once per loop turn, so many publishes share
 * one write(2); received packets are parsed in place from the input buffer.
 *
 * Flow control: a producer stops filling when its output holds OUT_HIGH
 * bytes and resumes from the write callback (low watermark OUT_LOW), and
 * with QoS > 0 it keeps at most `window` publishes unacknowledged.  At a
 * fixed rate a precise timer fires at the next scheduled send and sends
 * every message whose time has come; one that cannot leave yet keeps its
 * scheduled time, so the delay shows in the latency.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define OUT_HIGH (512u * 1024u)
#define OUT_LOW (128u * 1024u)
#define MAX_PACKET (64u * 1024u * 1024u)

struct run;

struct cl {
	struct run *run;
	struct bufferevent *bev;
	int prod; /* 1 producer, 0 consumer */
	int id;
	int ready, dead;
	/* producer */
	uint64_t seq, quota;
	uint32_t inflight;
	uint16_t next_pkid;
	uint64_t *pk_sched;  /* MQTT: scheduled time by packet id */
	uint64_t *fifo;      /* tcp: scheduled times of unanswered PUBs */
	uint32_t fifo_mask, fifo_head, fifo_tail;
	int done;
	uint64_t phase_ns;   /* this producer's offset within the interval */
	/* consumer */
	struct tracker tr;
	int tcp_subbed;
};

struct run {
	const struct bench_cfg *c;
	struct event_base *base;
	struct sockaddr_in sa;
	struct cl *cls;
	int ncl, nready, nprod_done, started, finished;
	uint64_t start_ns, send_end_ns, interval_ns, deadline_ns;
	uint8_t *scratch;    /* one encoded publish */
	size_t scratch_len;
	struct event *tick, *check;
	uint64_t last_recv, last_progress_ns;
	struct hist ack;
	uint64_t acked, ack_errors, sent;
	char prefix[48];
	int idle_mode;
	char err[160];
};

static void pump(struct cl *k);

/* Stop the run with "what" or "what (detail)" as its error. */
static void
fail(struct run *r, const char *what, const char *detail)
{
	if (!r->err[0]) {
		if (detail != NULL)
			snprintf(r->err, sizeof(r->err), "%s (%s)", what,
			    detail);
		else
			snprintf(r->err, sizeof(r->err), "%s", what);
	}
	event_base_loopbreak(r->base);
}

/* ---- MQTT encoding ---- */

static size_t
put_varint(uint8_t *p, size_t v)
{
	size_t n = 0;

	do {
		uint8_t b = v % 128;
		v /= 128;
		p[n++] = (uint8_t)(b | (v ? 0x80 : 0));
	} while (v && n < 4);
	return n;
}

static size_t
put_str(uint8_t *p, const char *s, size_t len)
{
	p[0] = (uint8_t)(len >> 8);
	p[1] = (uint8_t)len;
	memcpy(p + 2, s, len);
	return len + 2;
}

/* Fixed header + body in buf; returns total length. */
static size_t
mqtt_frame(uint8_t *out, uint8_t type, const uint8_t *body, size_t blen)
{
	size_t n = 0;

	out[n++] = type;
	n += put_varint(out + n, blen);
	memcpy(out + n, body, blen);
	return n + blen;
}

static void
mqtt_connect(struct cl *k)
{
	const struct bench_cfg *c = k->run->c;
	uint8_t body[128], pkt[140];
	char cid[64];
	size_t n = 0, cl;

	cl = (size_t)snprintf(cid, sizeof(cid), "%s-%c%d", k->run->prefix,
	    k->prod ? 'p' : 'c', k->id);
	n += put_str(body + n, "MQTT", 4);
	body[n++] = (uint8_t)c->mqtt_version;
	body[n++] = 0x02; /* clean session / clean start */
	body[n++] = 0x02; /* keepalive 600 s: idle clients must stay */
	body[n++] = 0x58;
	if (c->mqtt_version == 5)
		body[n++] = 0; /* no properties */
	n += put_str(body + n, cid, cl);
	bufferevent_write(k->bev, pkt, mqtt_frame(pkt, 0x10, body, n));
}

static void
mqtt_subscribe(struct cl *k)
{
	const struct bench_cfg *c = k->run->c;
	uint8_t body[128], pkt[140];
	char filter[80];
	size_t n = 0, fl;

	if (c->topics > 1)
		fl = (size_t)snprintf(filter, sizeof(filter), "%s/#", k->run->prefix);
	else
		fl = (size_t)snprintf(filter, sizeof(filter), "%s/0", k->run->prefix);
	body[n++] = 0;
	body[n++] = 1; /* packet id */
	if (c->mqtt_version == 5)
		body[n++] = 0;
	n += put_str(body + n, filter, fl);
	body[n++] = (uint8_t)c->qos;
	bufferevent_write(k->bev, pkt, mqtt_frame(pkt, 0x82, body, n));
}

static void
mqtt_ack(struct cl *k, uint8_t type, uint16_t id)
{
	uint8_t p[4] = { type, 2, (uint8_t)(id >> 8), (uint8_t)id };

	bufferevent_write(k->bev, p, 4);
}

/* ---- producing ---- */

static void
topic_for(struct run *r, uint64_t seq, char *buf, size_t cap, size_t *len)
{
	int t = r->c->topics > 1 ? (int)(seq % (uint64_t)r->c->topics) : 0;

	*len = (size_t)snprintf(buf, cap, "%s/%d", r->prefix, t);
}

static int
send_one(struct cl *k, uint64_t sched)
{
	struct run *r = k->run;
	const struct bench_cfg *c = r->c;
	uint8_t hdr[32];
	char topic[80];
	size_t tl, n = 0, rem, hl;

	topic_for(r, k->seq, topic, sizeof(topic), &tl);
	if (c->proto == PROTO_TCP) {
		uint8_t *pl = r->scratch + 256;
		char line[128];

		/* command line, payload and newline adjacent: one evbuffer add */
		hl = (size_t)snprintf(line, sizeof(line), "PUB %s %zu\n", topic,
		    c->msg_size);
		memcpy(pl - hl, line, hl);
		payload_fill(pl, c->msg_size, (uint32_t)k->id, k->seq, sched);
		pl[c->msg_size] = '\n';
		bufferevent_write(k->bev, pl - hl, hl + c->msg_size + 1);
		if (k->fifo)
			k->fifo[k->fifo_head++ & k->fifo_mask] = sched;
		k->inflight++;
	} else {
		uint8_t *pl = r->scratch + 256;

		rem = 2 + tl + (c->qos ? 2 : 0) + (c->mqtt_version == 5 ? 1 : 0) +
		    c->msg_size;
		hdr[n++] = (uint8_t)(0x30 | (c->qos << 1));
		n += put_varint(hdr + n, rem);
		n += put_str(hdr + n, topic, tl);
		if (c->qos) {
			uint16_t id = k->next_pkid;

			k->next_pkid = (uint16_t)(id == 65535 ? 1 : id + 1);
			hdr[n++] = (uint8_t)(id >> 8);
			hdr[n++] = (uint8_t)id;
			k->pk_sched[id] = sched;
			k->inflight++;
		}
		if (c->mqtt_version == 5)
			hdr[n++] = 0;
		/* header and payload adjacent in the scratch: one evbuffer add */
		memcpy(pl - n, hdr, n);
		payload_fill(pl, c->msg_size, (uint32_t)k->id, k->seq, sched);
		bufferevent_write(k->bev, pl - n, n + c->msg_size);
	}
	k->seq++;
	r->sent++;
	atomic_fetch_add_explicit(&g_sent, 1, memory_order_relaxed);
	return 0;
}

static void
prod_check_done(struct cl *k)
{
	struct run *r = k->run;

	if (k->done || k->dead)
		return;
	if (k->seq < k->quota && !(r->deadline_ns && now_ns() >= r->deadline_ns))
		return;
	if (k->inflight && (r->c->qos > 0 || r->c->proto == PROTO_TCP))
		return;
	k->done = 1;
	r->nprod_done++;
	if (!r->send_end_ns && r->nprod_done == r->c->producers)
		r->send_end_ns = now_ns();
}

static void
pump(struct cl *k)
{
	struct run *r = k->run;
	const struct bench_cfg *c = r->c;
	struct evbuffer *out;
	uint64_t now = 0;
	int win = c->qos > 0 ? c->window : 0;

	if (!r->started || k->done || k->dead)
		return;
	out = bufferevent_get_output(k->bev);
	if (r->deadline_ns && now_ns() >= r->deadline_ns)
		k->quota = k->seq; /* the duration is over: send no more */
	while (k->seq < k->quota) {
		uint64_t sched;

		if (win && k->inflight >= (uint32_t)win)
			break;
		if (evbuffer_get_length(out) >= OUT_HIGH)
			break;
		if (r->interval_ns) {
			sched = r->start_ns + k->phase_ns + k->seq * r->interval_ns;
			if (!now || sched > now)
				now = now_ns();
			if (sched > now)
				break;
		} else
			sched = now_ns();
		send_one(k, sched);
	}
	prod_check_done(k);
}

/* ---- receiving ---- */

static void
got_ack(struct cl *k, uint64_t sched)
{
	struct run *r = k->run;
	uint64_t now = now_ns();

	if (k->inflight)
		k->inflight--;
	r->acked++;
	if (sched)
		hist_add(&r->ack, now > sched ? now - sched : 0);
}

static void
client_ready(struct cl *k)
{
	struct run *r = k->run;

	if (k->ready)
		return;
	k->ready = 1;
	r->nready++;
}

static int
mqtt_packet(struct cl *k, uint8_t h, const uint8_t *p, size_t n)
{
	struct run *r = k->run;
	int v5 = r->c->mqtt_version == 5;
	uint16_t id = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 0;

	switch (h >> 4) {
	case 2: /* CONNACK */
		if (n < 2 || p[1] != 0) {
			fail(r, "CONNACK refused", k->prod ? "producer" : "consumer");
			return -1;
		}
		if (k->prod || r->idle_mode)
			client_ready(k);
		else
			mqtt_subscribe(k);
		return 0;
	case 9: /* SUBACK */
		if (n < 3 || p[n - 1] >= 0x80) {
			fail(r, "SUBACK refused", NULL);
			return -1;
		}
		client_ready(k);
		return 0;
	case 3: { /* PUBLISH */
		int qos = (h >> 1) & 3;
		size_t tl, off;

		if (n < 2)
			goto bad;
		tl = (size_t)(p[0] << 8 | p[1]);
		off = 2 + tl;
		if (qos) {
			if (off + 2 > n)
				goto bad;
			id = (uint16_t)(p[off] << 8 | p[off + 1]);
			off += 2;
		}
		if (v5) {
			size_t pl = 0, mul = 1;
			int i = 0;

			do {
				if (off >= n || i++ == 4)
					goto bad;
				pl += (size_t)(p[off] & 127) * mul;
				mul *= 128;
			} while (p[off++] & 128);
			off += pl;
		}
		if (off > n)
			goto bad;
		if (!k->prod)
			tracker_msg(&k->tr, p + off, n - off, now_ns());
		if (qos == 1)
			mqtt_ack(k, 0x40, id);
		else if (qos == 2)
			mqtt_ack(k, 0x50, id);
		return 0;
	}
	case 4: /* PUBACK */
		got_ack(k, k->pk_sched ? k->pk_sched[id] : 0);
		if (v5 && n >= 3 && p[2] >= 0x80)
			r->ack_errors++;
		pump(k);
		return 0;
	case 5: /* PUBREC */
		if (v5 && n >= 3 && p[2] >= 0x80) {
			r->ack_errors++;
			got_ack(k, 0);
			pump(k);
			return 0;
		}
		mqtt_ack(k, 0x62, id);
		return 0;
	case 6: /* PUBREL */
		mqtt_ack(k, 0x70, id);
		return 0;
	case 7: /* PUBCOMP */
		got_ack(k, k->pk_sched ? k->pk_sched[id] : 0);
		pump(k);
		return 0;
	case 13: /* PINGRESP */
		return 0;
	case 14:
		fail(r, "broker sent DISCONNECT", NULL);
		return -1;
	default:
		break;
	}
bad:
	fail(r, "malformed or unexpected MQTT packet", NULL);
	return -1;
}

static void
mqtt_read(struct cl *k, struct evbuffer *in)
{
	for (;;) {
		size_t len = evbuffer_get_length(in), rem = 0, mul = 1, hl;
		uint8_t h[5], *p;
		int i;

		if (len < 2)
			return;
		hl = len < 5 ? len : 5;
		evbuffer_copyout(in, h, hl);
		for (i = 1;; i++) {
			if ((size_t)i >= hl) {
				if (hl == 5)
					goto bad;
				return; /* length not complete yet */
			}
			rem += (size_t)(h[i] & 127) * mul;
			mul *= 128;
			if (!(h[i] & 128))
				break;
		}
		if (rem > MAX_PACKET)
			goto bad;
		if (len < 1 + (size_t)i + rem)
			return;
		p = evbuffer_pullup(in, (ev_ssize_t)(1 + (size_t)i + rem));
		if (!p)
			goto bad;
		if (mqtt_packet(k, h[0], p + 1 + i, rem) < 0)
			return;
		evbuffer_drain(in, 1 + (size_t)i + rem);
	}
bad:
	fail(k->run, "bad MQTT framing from the broker", NULL);
}

/* tcp protocol: +OK answers, MSG deliveries (line, payload, newline). */
static void
tcp_read(struct cl *k, struct evbuffer *in)
{
	struct run *r = k->run;

	for (;;) {
		size_t len = evbuffer_get_length(in), ll, need, plen;
		size_t look = len < 512 ? len : 512;
		uint8_t *p;
		char *nl, *sp;

		if (!len)
			return;
		p = evbuffer_pullup(in, (ev_ssize_t)look);
		if (!p)
			return;
		nl = memchr(p, '\n', look);
		if (!nl) {
			if (look == 512)
				fail(r, "tcp: line too long from broker", NULL);
			return;
		}
		ll = (size_t)(nl - (char *)p) + 1;
		if (ll >= 4 && memcmp(p, "MSG ", 4) == 0) {
			sp = memrchr(p, ' ', ll);
			plen = sp ? strtoul(sp + 1, NULL, 10) : 0;
			need = ll + plen + 1;
			if (len < need)
				return;
			p = evbuffer_pullup(in, (ev_ssize_t)need);
			if (!k->prod)
				tracker_msg(&k->tr, p + ll, plen, now_ns());
			evbuffer_drain(in, need);
			continue;
		}
		if (ll >= 3 && memcmp(p, "+OK", 3) == 0) {
			if (!k->prod) {
				client_ready(k);
			} else {
				uint64_t s = 0;
				if (k->fifo && k->fifo_tail != k->fifo_head)
					s = k->fifo[k->fifo_tail++ & k->fifo_mask];
				got_ack(k, r->c->qos > 0 ? s : 0);
			}
		} else if (ll >= 4 && memcmp(p, "-ERR", 4) == 0) {
			r->ack_errors++;
			if (k->prod)
				got_ack(k, 0);
		}
		evbuffer_drain(in, ll);
		if (k->prod)
			pump(k);
	}
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	struct cl *k = arg;

	if (k->run->c->proto == PROTO_TCP)
		tcp_read(k, bufferevent_get_input(bev));
	else
		mqtt_read(k, bufferevent_get_input(bev));
}

static void
on_write(struct bufferevent *bev, void *arg)
{
	struct cl *k = arg;

	(void)bev;
	if (k->prod)
		pump(k);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
	struct cl *k = arg;
	struct run *r = k->run;

	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;
		evutil_socket_t fd = bufferevent_getfd(bev);

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (r->c->proto == PROTO_TCP) {
			char line[96];
			int n;

			if (k->prod) {
				client_ready(k);
				return;
			}
			n = snprintf(line, sizeof(line), "SUB %s/%s\n", r->prefix,
			    r->c->topics > 1 ? "#" : "0");
			bufferevent_write(bev, line, (size_t)n);
		} else
			mqtt_connect(k);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		k->dead = 1;
		if (!r->finished)
			fail(r, "connection lost",
			    what & BEV_EVENT_EOF ? "closed by broker" :
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
}

static int
cl_connect(struct run *r, struct cl *k)
{
	k->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!k->bev)
		return -1;
	bufferevent_setcb(k->bev, on_read, on_write, on_event, k);
	/* Consumers first: at priority 0 their reads run before any producer
	 * fills more, and read 1 MiB at a time (libevent's default is 16 KiB),
	 * so the tool, sharing one thread, cannot be the slow subscriber that
	 * makes a broker drop QoS 0. */
	if (!k->prod) {
		bufferevent_priority_set(k->bev, 0);
		bufferevent_set_max_single_read(k->bev, 1024 * 1024);
	} else
		bufferevent_priority_set(k->bev, 1);
	bufferevent_setwatermark(k->bev, EV_WRITE, OUT_LOW, 0);
	bufferevent_enable(k->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(k->bev, (struct sockaddr *)&r->sa,
	    sizeof(r->sa)) < 0)
		return -1;
	return 0;
}

static void
finish(struct run *r)
{
	r->finished = 1;
	event_base_loopbreak(r->base);
}

/* Re-arm the pacing timer for the earliest next scheduled send (at most
 * 1 ms away, which also covers deadlines and producers waiting for their
 * window): a fixed 1 ms tick sent each millisecond's messages as one burst
 * and added ~0.5 ms of the tool's own delay to every latency figure. */
static void
arm_tick(struct run *r)
{
	uint64_t next = UINT64_MAX, now = now_ns(), wait = 1000000;
	struct timeval tv;

	if (r->start_ns != 0)
		for (int i = 0; i < r->ncl; i++) {
			struct cl *k = &r->cls[i];
			uint64_t sched;

			if (!k->prod || k->done || k->dead || k->seq >= k->quota)
				continue;
			/* Waiting for acks or for its output to drain: the
			 * ack or write callback pumps it, not the timer. */
			if ((r->c->qos > 0 && k->inflight >= (uint32_t)r->c->window) ||
			    evbuffer_get_length(bufferevent_get_output(k->bev)) >=
			    OUT_HIGH)
				continue;
			sched = r->start_ns + k->phase_ns + k->seq * r->interval_ns;
			if (sched < next)
				next = sched;
		}
	if (next != UINT64_MAX)
		wait = next > now ? next - now : 0;
	if (wait > 1000000)
		wait = 1000000;
	tv.tv_sec = 0;
	tv.tv_usec = (suseconds_t)(wait / 1000);
	evtimer_add(r->tick, &tv);
}

/* Rate pacing and deadlines. */
static void
on_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct run *r = arg;

	(void)fd;
	(void)ev;
	for (int i = 0; i < r->ncl; i++)
		if (r->cls[i].prod)
			pump(&r->cls[i]);
	if (!r->finished)
		arm_tick(r);
}

static int
all_received(struct run *r)
{
	for (int i = 0; i < r->ncl; i++)
		if (!r->cls[i].prod && r->cls[i].tr.unique < r->sent)
			return 0;
	return 1;
}

/* 100 ms: start when everyone is ready, stop when all arrived or the
 * consumers made no progress for `drain` seconds after sending ended. */
static void
on_check(evutil_socket_t fd, short ev, void *arg)
{
	struct run *r = arg;
	uint64_t now = now_ns(), recv = 0;

	(void)fd;
	(void)ev;
	if (!r->started) {
		if (r->nready < r->ncl)
			return;
		r->started = 1;
		r->start_ns = now_ns();
		r->last_progress_ns = r->start_ns;
		if (!r->c->count)
			r->deadline_ns = r->start_ns +
			    (uint64_t)(r->c->duration * 1e9);
		for (int i = 0; i < r->ncl; i++)
			if (r->cls[i].prod)
				pump(&r->cls[i]);
		return;
	}
	for (int i = 0; i < r->ncl; i++) {
		if (r->cls[i].prod)
			prod_check_done(&r->cls[i]);
		else
			recv += r->cls[i].tr.received;
	}
	if (recv != r->last_recv) {
		r->last_recv = recv;
		r->last_progress_ns = now;
	}
	if (!r->send_end_ns)
		return;
	if (all_received(r) ||
	    (now - r->last_progress_ns > (uint64_t)(r->c->drain * 1e9) &&
	    now - r->send_end_ns > (uint64_t)(r->c->drain * 1e9)))
		finish(r);
}

static int
run_setup(struct run *r, const struct bench_cfg *c)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	/* Precise timers (timerfd): epoll's millisecond timeouts would add up
	 * to 1 ms to every paced send and show up as broker latency. */
	{
		struct event_config *ec = event_config_new();

		if (!ec)
			return -1;
		event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
		r->base = event_base_new_with_config(ec);
		event_config_free(ec);
	}
	if (r->base && event_base_priority_init(r->base, 2) < 0)
		return -1;
	if (!r->base)
		return -1;
	r->sa.sin_family = AF_INET;
	r->sa.sin_port = htons((uint16_t)c->port);
	if (inet_pton(AF_INET, c->host, &r->sa.sin_addr) != 1) {
		snprintf(r->err, sizeof(r->err), "bad IPv4 address %s", c->host);
		return -1;
	}
	snprintf(r->prefix, sizeof(r->prefix), "pb%s", c->run_id);
	return 0;
}

static void
run_teardown(struct run *r)
{
	r->finished = 1;
	for (int i = 0; i < r->ncl; i++) {
		struct cl *k = &r->cls[i];

		if (k->bev)
			bufferevent_free(k->bev);
		free(k->pk_sched);
		free(k->fifo);
		if (!k->prod)
			tracker_free(&k->tr);
	}
	free(r->cls);
	free(r->scratch);
	if (r->tick)
		event_free(r->tick);
	if (r->check)
		event_free(r->check);
	if (r->base)
		event_base_free(r->base);
}

int
evclient_run(const struct bench_cfg *c, struct bench_result *res)
{
	struct run r;
	struct tracker *trs = NULL;
	struct timeval ms100 = { 0, 100000 };
	int rc = -1, nc = 0;

	if (run_setup(&r, c) < 0)
		goto out;
	r.ncl = c->producers + c->consumers;
	r.cls = calloc((size_t)r.ncl, sizeof(*r.cls));
	r.scratch_len = 256 + c->msg_size + 16;
	r.scratch = malloc(r.scratch_len);
	if (!r.cls || !r.scratch)
		goto out;
	/* A recognisable filler after the header. */
	for (size_t i = 0; i < c->msg_size; i++)
		r.scratch[256 + i] = (uint8_t)('a' + i % 26);
	if (c->rate > 0)
		r.interval_ns = (uint64_t)(1e9 * c->producers / c->rate);
	for (int i = 0; i < r.ncl; i++) {
		struct cl *k = &r.cls[i];

		k->run = &r;
		k->prod = i < c->producers;
		k->id = k->prod ? i : i - c->producers;
		k->next_pkid = 1;
		if (k->prod) {
			k->quota = c->count ? c->count / (uint64_t)c->producers +
			    ((uint64_t)i < c->count % (uint64_t)c->producers) :
			    UINT64_MAX;
			k->phase_ns = r.interval_ns * (uint64_t)i /
			    (uint64_t)c->producers;
			if (c->proto == PROTO_MQTT && c->qos &&
			    !(k->pk_sched = calloc(65536, sizeof(uint64_t))))
				goto out;
			if (c->proto == PROTO_TCP && c->qos) {
				uint32_t sz = 1;
				while (sz < (uint32_t)c->window + 1)
					sz *= 2;
				k->fifo = calloc(sz, sizeof(uint64_t));
				k->fifo_mask = sz - 1;
				if (!k->fifo)
					goto out;
			}
		} else if (tracker_init(&k->tr, c->producers) < 0)
			goto out;
	}
	r.tick = event_new(r.base, -1, 0, on_tick, &r);
	r.check = event_new(r.base, -1, EV_PERSIST, on_check, &r);
	if (!r.tick || !r.check)
		goto out;
	/* Consumers first, so they are subscribed before anything is sent. */
	for (int i = c->producers; i < r.ncl; i++)
		if (cl_connect(&r, &r.cls[i]) < 0)
			goto out;
	for (int i = 0; i < c->producers; i++)
		if (cl_connect(&r, &r.cls[i]) < 0)
			goto out;
	if (c->rate > 0)
		arm_tick(&r);
	evtimer_add(r.check, &ms100);
	event_base_dispatch(r.base);
	if (r.err[0]) {
		snprintf(res->error, sizeof(res->error), "%s", r.err);
		goto out;
	}
	if (!r.started) {
		snprintf(res->error, sizeof(res->error), "clients never became ready");
		goto out;
	}
	res->sent = r.sent;
	res->acked = r.acked;
	res->ack_errors = r.ack_errors;
	res->ack = r.ack;
	if (!r.send_end_ns)
		r.send_end_ns = now_ns();
	res->send_secs = (double)(r.send_end_ns - r.start_ns) / 1e9;
	trs = calloc((size_t)(c->consumers ? c->consumers : 1), sizeof(*trs));
	if (!trs)
		goto out;
	{
		uint64_t last = 0;

		for (int i = c->producers; i < r.ncl; i++) {
			trs[nc++] = r.cls[i].tr;
			if (r.cls[i].tr.last_ns > last)
				last = r.cls[i].tr.last_ns;
		}
		result_from_trackers(res, trs, nc, r.sent, 0);
		res->recv_secs = last > r.start_ns ?
		    (double)(last - r.start_ns) / 1e9 : 0;
	}
	rc = 0;
out:
	if (rc < 0 && !res->error[0])
		snprintf(res->error, sizeof(res->error), "%s",
		    r.err[0] ? r.err : "setup failed (out of memory or fds?)");
	free(trs);
	run_teardown(&r);
	return rc;
}

/* ---- idle connections: broker RSS per connected MQTT client ---- */

static void
on_idle_check(evutil_socket_t fd, short ev, void *arg)
{
	struct run *r = arg;
	uint64_t now = now_ns();

	(void)fd;
	(void)ev;
	/* Open connections in waves so the listen backlog never overflows
	 * (an overflow costs a 1 s SYN retry). */
	while (r->ncl < r->c->idle_conns && r->ncl - r->nready < 256) {
		struct cl *k = &r->cls[r->ncl];

		k->run = r;
		k->id = r->ncl++;
		if (cl_connect(r, k) < 0) {
			fail(r, "cannot open more sockets (ulimit -n?)", NULL);
			return;
		}
	}
	if (r->nready == r->c->idle_conns)
		finish(r);
	else if (now > r->deadline_ns)
		fail(r, "idle connections: not all connected in 60 s", NULL);
}

int
evclient_idle(const struct bench_cfg *c, struct bench_result *res)
{
	struct run r;
	struct timeval ms10 = { 0, 10000 };
	struct rlimit rl;
	long before = -1, after = -1;
	int rc = -1;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (run_setup(&r, c) < 0)
		goto out;
	r.idle_mode = 1;
	r.cls = calloc((size_t)c->idle_conns, sizeof(*r.cls));
	r.check = event_new(r.base, -1, EV_PERSIST, on_idle_check, &r);
	if (!r.cls || !r.check)
		goto out;
	if (c->broker_pid > 0)
		before = proc_status_kb(c->broker_pid, "VmRSS:");
	r.deadline_ns = now_ns() + 60000000000ull;
	r.start_ns = now_ns();
	evtimer_add(r.check, &ms10);
	event_base_dispatch(r.base);
	res->idle_connected = r.nready;
	if (r.err[0]) {
		snprintf(res->error, sizeof(res->error), "%s", r.err);
		goto out;
	}
	/* Let the broker settle (buffers shrink after the CONNECT burst). */
	{
		struct timeval s1 = { 1, 0 };
		event_base_loopexit(r.base, &s1);
		event_base_dispatch(r.base);
	}
	res->send_secs = (double)(now_ns() - r.start_ns) / 1e9;
	if (c->broker_pid > 0) {
		after = proc_status_kb(c->broker_pid, "VmRSS:");
		res->broker_rss_peak_kb = after;
		if (before >= 0 && after >= 0 && r.nready > 0)
			res->idle_rss_per_conn =
			    (double)(after - before) * 1024.0 / r.nready;
	}
	rc = 0;
out:
	if (rc < 0 && !res->error[0])
		snprintf(res->error, sizeof(res->error), "idle setup failed");
	r.ncl = r.cls ? r.ncl : 0;
	run_teardown(&r);
	return rc;
}
