/*
 * session.c - MQTT client sessions: the table by client id, outgoing QoS
 * 1/2 messages (queued, then inflight up to the client's Receive Maximum),
 * incoming QoS 2 packet ids awaiting PUBREL, wills with their delay,
 * session expiry, and persistence through the host's key-value API:
 *
 *   "mqtt.sessions"  key = client id
 *                    value = version, expiry, offline-since, next sequence
 *                    and the subscriptions
 *   "mqtt.queue"     key = client id, NUL, 8-byte big-endian sequence
 *                    value = one encoded outgoing message
 *   "mqtt.outstate"  key = as in "mqtt.queue"
 *                    value = state (sent / PUBREL sent) and packet id of
 *                    a message that left (inflight)
 *   "mqtt.qos2in"    key = client id, NUL, 2-byte packet id: an incoming
 *                    QoS 2 message routed and awaiting its PUBREL
 *   "mqtt.wills"     key = client id
 *                    value = will delay (4 bytes) + an encoded message
 *
 * What is written when, for persistent sessions only (expiry != 0): the
 * session record on CONNECT and on every (un)subscribe; each outgoing
 * QoS 1/2 message when it is queued (online or not), its state when it is
 * sent and when PUBREC arrives, deleted once acknowledged; each incoming
 * QoS 2 id until PUBREL; the will from CONNECT until it is published or
 * cancelled.  So a restart after a crash (kill -9) finds what was queued
 * and inflight, resends the inflight ones with DUP (PUBREL for those
 * PUBREC'd), does not route a resent incoming QoS 2 message twice, and
 * publishes the wills of clients that do not come back in time.  Writes
 * are as durable as the storage's fsync policy.  The queued copy of a
 * delivery is waited for by its publish (a delivery hold, released by the
 * write's completion), so an acknowledged publish is never lost for a
 * persistent subscriber; the other writes are not waited for.
 *
 * Bounds: max_queued messages and max_queued_bytes per session (queue,
 * not inflight).  Past them a QoS 1/2 delivery to an offline session (or
 * with queue_full = drop) is dropped, counted in host->stats_dropped and
 * the session's counter, and logged once per session; to a connected one
 * with queue_full = block it is queued anyway and holds its publish (the
 * publisher's ack) until the queue is down to half, so publishers slow
 * down instead of losing messages.  QoS 0 is never queued for an offline
 * client; for a connected one whose output is full see qos0_full
 * (mqtt_block_publisher in mqtt.c).
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt.h"

#define api mqtt_api

#define SESSION_BUCKETS 4096
#define NS_SESSIONS "mqtt.sessions"
#define NS_QUEUE "mqtt.queue"
#define NS_OUTSTATE "mqtt.outstate"
#define NS_QOS2IN "mqtt.qos2in"
#define NS_WILLS "mqtt.wills"
#define REC_FORMAT 1

static struct mqtt_session *table[SESSION_BUCKETS];
static uint64_t n_sessions;
static int loaded;

static uint32_t
hash_id(const char *id, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)id[i]) * 16777619u;
	return h % SESSION_BUCKETS;
}

struct mqtt_session *
session_find(const char *id, size_t len)
{
	struct mqtt_session *s;

	for (s = table[hash_id(id, len)]; s != NULL; s = s->hnext)
		if (s->id_len == len && memcmp(s->id, id, len) == 0)
			return s;
	return NULL;
}

struct mqtt_session *
session_new(struct mqtt_listener *l, const char *id, size_t len)
{
	struct mqtt_session *s;
	uint32_t h = hash_id(id, len);

	if (len > 65535) { /* an MQTT string cannot be longer */
		api->log(l->inst, PMQ_LOG_ERROR, "%s: client id too long",
		         __func__);
		return NULL;
	}
	s = calloc(1, sizeof *s + len + 1);
	if (s == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	memcpy(s->id, id, len);
	s->id[len] = '\0';
	s->id_len = (uint16_t)len;
	s->l = l;
	s->next_pid = 1;
	s->cl = api->client_new(l->inst, s->id, s);
	if (s->cl == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: no client", __func__);
		free(s);
		return NULL;
	}
	s->hnext = table[h];
	table[h] = s;
	n_sessions++;
	return s;
}

void
sessions_count(uint64_t *total, uint64_t *offline)
{
	uint64_t off = 0;
	size_t i;
	struct mqtt_session *s;

	for (i = 0; i < SESSION_BUCKETS; i++)
		for (s = table[i]; s != NULL; s = s->hnext)
			if (s->mc == NULL)
				off++;
	*total = n_sessions;
	*offline = off;
}

/* ---- keys and records ---- */

static size_t
queue_key(const struct mqtt_session *s, uint64_t seq, uint8_t *key,
          size_t cap)
{
	size_t i;

	if ((size_t)s->id_len + 9 > cap)
		return 0;
	memcpy(key, s->id, s->id_len);
	key[s->id_len] = '\0';
	for (i = 0; i < 8; i++)
		key[s->id_len + 1 + i] = (uint8_t)(seq >> (56 - 8 * i));
	return s->id_len + 9;
}

static void
put_u64(struct mqtt_buf *b, uint64_t v)
{
	mqtt_put_u32(b, (uint32_t)(v >> 32));
	mqtt_put_u32(b, (uint32_t)v);
}

static void
put_blob(struct mqtt_buf *b, const void *p, size_t len)
{
	mqtt_put_u32(b, (uint32_t)len);
	mqtt_put(b, p, len);
}

/* A bounded reader for stored records. */
struct srd {
	const uint8_t *p;
	size_t pos, len;
	int bad;
};

static const uint8_t *
srd_take(struct srd *r, size_t n)
{
	const uint8_t *p;

	if (r->bad || r->len - r->pos < n) {
		r->bad = 1;
		return NULL;
	}
	p = r->p + r->pos;
	r->pos += n;
	return p;
}

static uint32_t
srd_u32(struct srd *r)
{
	const uint8_t *p = srd_take(r, 4);

	return p == NULL ? 0 : ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	                           ((uint32_t)p[2] << 8) | p[3];
}

static uint8_t
srd_u8(struct srd *r)
{
	const uint8_t *p = srd_take(r, 1);

	return p == NULL ? 0 : p[0];
}

static uint64_t
srd_u64(struct srd *r)
{
	uint64_t hi = srd_u32(r);

	return (hi << 32) | srd_u32(r);
}

static const uint8_t *
srd_blob(struct srd *r, size_t *len)
{
	*len = srd_u32(r);
	return srd_take(r, *len);
}

static void
done_log(void *arg, int status)
{
	if (status != PMQ_OK)
		api->log(NULL, PMQ_LOG_WARN, "mqtt: storing %s failed: %s",
		         (const char *)arg, api->strerror(status));
}

void
session_save(struct mqtt_session *s)
{
	(void)session_save_wait(s, NULL, NULL);
}

int
session_save_wait(struct mqtt_session *s, pmq_done_fn done, void *arg)
{
	struct mqtt_buf b;
	struct mqtt_sub *sub;
	uint32_t n = 0;
	int rc;

	if (s->expiry_ms == 0)
		return 0;
	mqtt_buf_init(&b);
	mqtt_put_u8(&b, REC_FORMAT);
	mqtt_put_u8(&b, s->version);
	put_u64(&b, (uint64_t)s->expiry_ms);
	put_u64(&b, (uint64_t)s->offline_since_ms);
	put_u64(&b, s->next_seq);
	for (sub = s->subs; sub != NULL; sub = sub->next)
		n++;
	mqtt_put_u32(&b, n);
	for (sub = s->subs; sub != NULL; sub = sub->next) {
		mqtt_put_u8(&b, sub->opts.qos);
		mqtt_put_u8(&b, sub->opts.no_local);
		mqtt_put_u8(&b, sub->opts.retain_as_published);
		mqtt_put_u8(&b, sub->opts.retain_handling);
		mqtt_put_u32(&b, sub->opts.sub_id);
		put_blob(&b, sub->filter, strlen(sub->filter));
		put_blob(&b, sub->group, sub->group ? strlen(sub->group) : 0);
	}
	rc = b.err;
	if (rc == PMQ_OK)
		rc = done != NULL ?
		         api->kv_put(NS_SESSIONS, s->id, s->id_len, b.p, b.len,
		                     done, arg) :
		         api->kv_put(NS_SESSIONS, s->id, s->id_len, b.p, b.len,
		                     done_log, "a session");
	mqtt_buf_free(&b);
	if (rc != PMQ_OK) {
		done_log("a session", rc);
		return rc < 0 ? rc : PMQ_ERR_NOMEM;
	}
	s->stored = 1;
	return done != NULL ? 1 : 0;
}

/* Append the stored form of an outgoing message (also used for wills,
 * with no subscription ids). */
static void
out_encode(struct mqtt_buf *b, const struct mqtt_out *o)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	uint32_t i;

	api->msg_fields(o->m, &f);
	mqtt_put_u8(b, REC_FORMAT);
	mqtt_put_u8(b, o->qos);
	mqtt_put_u8(b, o->retain);
	mqtt_put_u8(b, f.qos);
	mqtt_put_u8(b, f.retain);
	mqtt_put_u8(b, f.payload_format);
	put_u64(b, (uint64_t)f.timestamp_ms);
	put_u64(b, (uint64_t)f.expiry_ms);
	mqtt_put_u32(b, o->n_sub_ids);
	for (i = 0; i < o->n_sub_ids; i++)
		mqtt_put_u32(b, o->sub_ids[i]);
	put_blob(b, f.topic, f.topic_len);
	put_blob(b, f.payload, f.payload_len);
	put_blob(b, f.content_type, f.content_type_len);
	put_blob(b, f.response_topic, f.response_topic_len);
	mqtt_put_u8(b, f.correlation_data != NULL);
	put_blob(b, f.correlation_data, f.correlation_data_len);
	mqtt_put_u32(b, f.n_headers);
	for (i = 0; i < f.n_headers; i++) {
		put_blob(b, f.headers[i].name, f.headers[i].name_len);
		put_blob(b, f.headers[i].value, f.headers[i].value_len);
	}
}

/* The completion of a queued message's write that its publish waits
 * for (arg: the hold on that publish). */
static void
done_hold(void *arg, int status)
{
	done_log("a queued message", status);
	api->hold_release(arg, status);
}

/* A hold on the publish that produced delivery d, or NULL (none: a
 * delivery from the retained store, a host without holds, no memory). */
static pmq_hold *
hold_take(const struct pmq_delivery *d)
{
	if (d == NULL || !PMQ_HAS(api, struct pmq_host_api, delivery_hold) ||
	    api->delivery_hold == NULL || api->hold_release == NULL)
		return NULL;
	return api->delivery_hold(d);
}

/* Write o to "mqtt.queue" (persistent sessions only).  d is the delivery
 * that queued o, or NULL (later writes, e.g. when a session becomes
 * persistent at DISCONNECT): with d, the publish that produced it waits
 * for the write (a delivery hold), so its publisher is acknowledged only
 * once this copy is as durable as the storage promises, and a failed
 * write fails that publish. */
static void
out_store(struct mqtt_session *s, struct mqtt_out *o,
          const struct pmq_delivery *d)
{
	struct mqtt_buf b;
	uint8_t key[65536 + 16];
	size_t klen;
	pmq_hold *h;
	int rc;

	if (o->stored || s->expiry_ms == 0)
		return;
	h = hold_take(d);
	klen = queue_key(s, o->seq, key, sizeof key);
	mqtt_buf_init(&b);
	out_encode(&b, o);
	rc = klen == 0 ? PMQ_ERR_LIMIT : b.err;
	if (rc == PMQ_OK)
		rc = h != NULL ? api->kv_put(NS_QUEUE, key, klen, b.p, b.len,
		                             done_hold, h)
		               : api->kv_put(NS_QUEUE, key, klen, b.p, b.len,
		                             done_log, "a queued message");
	mqtt_buf_free(&b);
	if (rc == PMQ_OK) {
		o->stored = 1;
		return;
	}
	/* Not stored: kept in memory, but its publisher is not told it is
	 * safe.  The completion will not run, so the hold goes now (the
	 * publish is still in progress: its done cannot run in here). */
	done_log("a queued message", rc);
	if (h != NULL)
		api->hold_release(h, rc);
}

static void
out_unstore(struct mqtt_session *s, struct mqtt_out *o)
{
	uint8_t key[65536 + 16];
	size_t klen;

	if (!o->stored)
		return;
	klen = queue_key(s, o->seq, key, sizeof key);
	if (klen != 0) {
		api->kv_del(NS_QUEUE, key, klen, NULL, NULL);
		if (o->state_stored)
			api->kv_del(NS_OUTSTATE, key, klen, NULL, NULL);
	}
	o->stored = 0;
	o->state_stored = 0;
}

/* Record that a stored message left (state, packet id), so a restart
 * resends it with DUP, or its PUBREL. */
static void
out_store_state(struct mqtt_session *s, struct mqtt_out *o)
{
	uint8_t key[65536 + 16], val[3];
	size_t klen;

	if (!o->stored)
		return;
	klen = queue_key(s, o->seq, key, sizeof key);
	if (klen == 0)
		return;
	val[0] = o->state;
	val[1] = (uint8_t)(o->pid >> 8);
	val[2] = (uint8_t)o->pid;
	if (api->kv_put(NS_OUTSTATE, key, klen, val, sizeof val, done_log,
	                "an inflight state") == PMQ_OK)
		o->state_stored = 1;
}

static size_t
qos2_key(const struct mqtt_session *s, uint16_t pid, uint8_t *key,
         size_t cap)
{
	if ((size_t)s->id_len + 3 > cap)
		return 0;
	memcpy(key, s->id, s->id_len);
	key[s->id_len] = '\0';
	key[s->id_len + 1] = (uint8_t)(pid >> 8);
	key[s->id_len + 2] = (uint8_t)pid;
	return s->id_len + 3;
}

/* Persist (put) or forget (!put) an incoming QoS 2 id of a persistent
 * session.  With done, done(arg, status) runs once the write completes:
 * returns 1 then, 0 when nothing was written (not persistent; done does
 * not run), or a negative error (not submitted; done does not run). */
static int
qos2_store(struct mqtt_session *s, uint16_t pid, int put, pmq_done_fn done,
           void *arg)
{
	uint8_t key[65536 + 8];
	size_t klen;
	int rc;

	if (put && s->expiry_ms == 0)
		return 0;
	if (!put && !s->stored)
		return 0;
	klen = qos2_key(s, pid, key, sizeof key);
	if (klen == 0)
		return PMQ_ERR_LIMIT;
	if (done == NULL) {
		done = put ? done_log : NULL;
		arg = put ? "a QoS 2 packet id" : NULL;
	}
	rc = put ? api->kv_put(NS_QOS2IN, key, klen, "", 1, done, arg)
	         : api->kv_del(NS_QOS2IN, key, klen, done, arg);
	if (rc != PMQ_OK)
		return rc < 0 ? rc : PMQ_ERR_NOMEM;
	return done != NULL && done != done_log ? 1 : 0;
}

/* Drop the pending will; its stored copy too unless keep_stored (the
 * broker stops: the restart publishes it as after a crash). */
static void
will_clear(struct mqtt_session *s, int keep_stored)
{
	if (s->will != NULL) {
		api->msg_unref(s->will);
		s->will = NULL;
	}
	if (s->will_timer != NULL)
		api->timer_stop(s->will_timer);
	if (s->will_stored && !keep_stored) {
		api->kv_del(NS_WILLS, s->id, s->id_len, NULL, NULL);
		s->will_stored = 0;
	}
}

int
session_set_will(struct mqtt_session *s, pmq_msg *will, uint32_t delay_s,
                 pmq_done_fn done, void *arg)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	struct mqtt_out o = { 0 };
	struct mqtt_buf b;
	int rc;

	will_clear(s, 0);
	s->will = will;
	s->will_delay_s = delay_s;
	if (will == NULL || s->expiry_ms == 0)
		return 0;
	api->msg_fields(will, &f);
	o.m = will;
	o.qos = f.qos;
	o.retain = f.retain;
	mqtt_buf_init(&b);
	mqtt_put_u32(&b, delay_s);
	out_encode(&b, &o);
	rc = b.err;
	if (rc == PMQ_OK)
		rc = done != NULL ?
		         api->kv_put(NS_WILLS, s->id, s->id_len, b.p, b.len,
		                     done, arg) :
		         api->kv_put(NS_WILLS, s->id, s->id_len, b.p, b.len,
		                     done_log, "a will");
	mqtt_buf_free(&b);
	if (rc != PMQ_OK) {
		done_log("a will", rc);
		return rc < 0 ? rc : PMQ_ERR_NOMEM;
	}
	s->will_stored = 1;
	return done != NULL ? 1 : 0;
}

/* ---- outgoing messages ---- */

static void
out_free(struct mqtt_out *o)
{
	api->msg_unref(o->m);
	free(o->sub_ids);
	free(o);
}

static void
q_push(struct mqtt_outq *q, struct mqtt_out *o)
{
	o->next = NULL;
	if (q->tail != NULL)
		q->tail->next = o;
	else
		q->head = o;
	q->tail = o;
	q->n++;
}

static struct mqtt_out *
q_pop(struct mqtt_outq *q)
{
	struct mqtt_out *o = q->head;

	if (o != NULL) {
		q->head = o->next;
		if (q->head == NULL)
			q->tail = NULL;
		q->n--;
	}
	return o;
}

/* Unlink the inflight message with pid; NULL if none. */
static struct mqtt_out *
q_take_pid(struct mqtt_outq *q, uint16_t pid, uint8_t state)
{
	struct mqtt_out *o, *prev = NULL;

	for (o = q->head; o != NULL; prev = o, o = o->next) {
		if (o->pid != pid || o->state != state)
			continue;
		if (prev != NULL)
			prev->next = o->next;
		else
			q->head = o->next;
		if (q->tail == o)
			q->tail = prev;
		q->n--;
		return o;
	}
	return NULL;
}

/* How many packet ids from pid on (in the cycle 1..65535) are free: the
 * distance to the nearest id in flight, 0 when pid itself is. */
static uint32_t
pid_free_run(const struct mqtt_session *s, uint16_t pid)
{
	const struct mqtt_out *o;
	uint32_t best = 65535;

	for (o = s->inflight.head; o != NULL; o = o->next) {
		uint32_t d = ((uint32_t)o->pid + 65535u - pid) % 65535u;

		if (d < best)
			best = d;
	}
	return best;
}

/*
 * The next free packet id.  Walking the inflight list for every id cost
 * O(window) per message (a tenth of the broker's time with 200 in
 * flight), so one walk finds the run of free ids ahead and the ids of the
 * run are handed out without walking: ids become in use only here, in
 * order, or when a session is loaded (pid_free is 0 then).
 */
static uint16_t
pid_next(struct mqtt_session *s)
{
	uint32_t i, run;

	/* At most 65535 inflight (Receive Maximum), so a free id exists. */
	for (i = 0; i < 65536; i++) {
		uint16_t pid = s->next_pid++;

		if (s->next_pid == 0)
			s->next_pid = 1;
		if (pid == 0)
			continue;
		if (s->pid_free > 0) {
			s->pid_free--;
			return pid;
		}
		run = pid_free_run(s, pid);
		if (run > 0) {
			s->pid_free = (uint16_t)(run - 1);
			return pid;
		}
	}
	return 0;
}

static void
drop_count(struct mqtt_session *s, const char *why)
{
	s->dropped++;
	mqtt_stat_dropped++;
	api->stats_dropped(1);
	if (!s->drop_logged) {
		s->drop_logged = 1;
		api->log(s->l->inst, PMQ_LOG_WARN,
		         "client %s: dropping messages (%s); logged once",
		         s->id, why);
	}
}

static int
expired(pmq_msg *m)
{
	struct pmq_msg_fields f = { .size = sizeof f };

	api->msg_fields(m, &f);
	return f.expiry_ms != 0 && f.expiry_ms <= api->now_ms();
}

/* Release o's hold (queue_full = block): its publish may complete now,
 * possibly from inside this call (the publisher's ack is sent). */
static void
out_unhold(struct mqtt_session *s, struct mqtt_out *o)
{
	pmq_hold *h = o->hold;

	if (h == NULL)
		return;
	o->hold = NULL;
	s->n_held--;
	api->hold_release(h, PMQ_OK);
}

/* Release the holds of queued messages once the queue is down to half
 * its limits (hysteresis: publishers are not woken per message), or
 * every one when all (the session goes offline or ends). */
static void
holds_release(struct mqtt_session *s, int all)
{
	struct mqtt_out *o;

	if (s->n_held == 0)
		return;
	if (!all && (s->queue.n > s->l->max_queued / 2 ||
	             (s->l->max_queued_bytes != 0 &&
	              s->queued_bytes > s->l->max_queued_bytes / 2)))
		return;
	/* hold_release only completes publishes elsewhere: this queue is
	 * not changed under the walk. */
	for (o = s->queue.head; o != NULL && s->n_held > 0; o = o->next)
		out_unhold(s, o);
}

static void
pump_queue(struct mqtt_session *s)
{
	struct mqtt_conn *mc = s->mc;
	uint32_t limit;

	if (mc == NULL || !mc->connected || mc->closing)
		return;
	limit = mc->client_receive_max;
	if (s->l->max_inflight < limit)
		limit = s->l->max_inflight;
	while (s->queue.head != NULL && s->inflight.n < limit) {
		struct mqtt_out *o = s->queue.head;
		int rc;

		if (expired(o->m)) {
			q_pop(&s->queue);
			s->queued_bytes -= o->bytes;
			out_unhold(s, o);
			out_unstore(s, o);
			out_free(o);
			continue;
		}
		if (mc->c == NULL || api->conn_output_full(mc->c))
			return; /* conn_drained pumps again */
		o->pid = pid_next(s);
		rc = mqtt_send_publish(mc, o->m, o->qos, o->retain, o->pid, 0,
		                       o->sub_ids, o->n_sub_ids);
		if (rc == PMQ_ERR_AGAIN)
			return;
		q_pop(&s->queue);
		s->queued_bytes -= o->bytes;
		out_unhold(s, o); /* it left the queue */
		if (rc != PMQ_OK) {
			/* Too big for the client (dropped per MQTT 5
			 * 3.1.2.25), or the connection broke. */
			if (rc == PMQ_ERR_LIMIT)
				drop_count(s, "larger than the client's maximum "
				              "packet size");
			out_unstore(s, o);
			out_free(o);
			if (rc != PMQ_ERR_LIMIT)
				return;
			continue;
		}
		o->state = OUT_SENT;
		q_push(&s->inflight, o);
		out_store_state(s, o);
	}
}

void
session_pump(struct mqtt_session *s)
{
	pump_queue(s);
	holds_release(s, 0);
}

void
session_resend(struct mqtt_session *s)
{
	struct mqtt_out *o, *prev = NULL, *next;

	for (o = s->inflight.head; o != NULL; o = next) {
		int rc = PMQ_OK;

		next = o->next;
		if (o->state == OUT_REL)
			mqtt_send_pubrel(s->mc, o->pid, 0);
		else
			rc = mqtt_send_publish(s->mc, o->m, o->qos, o->retain,
			                       o->pid, 1, o->sub_ids,
			                       o->n_sub_ids);
		if (rc == PMQ_ERR_LIMIT) {
			/* The new connection allows less: drop it. */
			if (prev != NULL)
				prev->next = next;
			else
				s->inflight.head = next;
			if (s->inflight.tail == o)
				s->inflight.tail = prev;
			s->inflight.n--;
			drop_count(s, "larger than the client's maximum "
			              "packet size");
			out_unstore(s, o);
			out_free(o);
			continue;
		}
		prev = o;
	}
}

void
session_deliver(struct mqtt_session *s, pmq_msg *m,
                const struct pmq_delivery *d)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	struct mqtt_conn *mc = s->mc;
	struct mqtt_out *o;
	pmq_hold *held = NULL;

	api->msg_fields(m, &f);
	if (f.expiry_ms != 0 && f.expiry_ms <= api->now_ms())
		return;
	if (d->qos == 0) {
		/* At most once: an offline subscriber loses it; a slow one
		 * too with qos0_full = drop.  With block the message is
		 * queued past the mark and the publisher stops reading
		 * until this output drains (mqtt_block_publisher), unless
		 * there is no publisher's input to stop. */
		int full = mc != NULL && mc->c != NULL &&
		           api->conn_output_full(mc->c);

		if (mc == NULL || !mc->connected || mc->closing ||
		    mc->c == NULL ||
		    (full && (!s->l->qos0_block || !mqtt_block_publisher(mc)))) {
			if (mc != NULL)
				drop_count(s, "QoS 0 to a slow subscriber");
			else
				drop_count(s, "QoS 0 to an offline client");
			return;
		}
		if (full && !s->block_logged) {
			s->block_logged = 1;
			api->log(s->l->inst, PMQ_LOG_DEBUG,
			         "client %s: output full, publishers wait for it "
			         "(qos0_full = block); logged once", s->id);
		}
		if (mqtt_send_publish(mc, m, 0, d->retain, 0, 0, d->sub_ids,
		                      d->n_sub_ids) == PMQ_ERR_LIMIT)
			drop_count(s, "larger than the client's maximum "
			              "packet size");
		return;
	}
	if (s->queue.n >= s->l->max_queued ||
	    (s->l->max_queued_bytes != 0 &&
	     s->queued_bytes + f.payload_len + f.topic_len >
	         s->l->max_queued_bytes)) {
		/* queue_full = block, online session: queue it anyway and
		 * hold its publish, so the publisher's ack (and with it its
		 * Receive Maximum window) waits until the queue is down to
		 * half.  Offline sessions drop at the limit, as Mosquitto
		 * does; so does a delivery without a publish to hold
		 * (retained messages). */
		if (mc == NULL || !s->l->queue_block ||
		    (held = hold_take(d)) == NULL) {
			drop_count(s, "session queue full");
			return;
		}
	}
	o = calloc(1, sizeof *o);
	if (o == NULL || (d->n_sub_ids > 0 &&
	                  (o->sub_ids = calloc(d->n_sub_ids,
	                                       sizeof *o->sub_ids)) == NULL)) {
		free(o);
		drop_count(s, "out of memory");
		if (held != NULL) /* dropped, not failed: as at the limit */
			api->hold_release(held, PMQ_OK);
		return;
	}
	if (held != NULL) {
		o->hold = held;
		s->n_held++;
	}
	if (d->n_sub_ids > 0)
		memcpy(o->sub_ids, d->sub_ids, d->n_sub_ids * sizeof *o->sub_ids);
	o->n_sub_ids = d->n_sub_ids;
	o->m = api->msg_ref(m);
	o->qos = d->qos;
	o->retain = d->retain;
	o->bytes = f.payload_len + f.topic_len;
	o->seq = s->next_seq++;
	q_push(&s->queue, o);
	s->queued_bytes += o->bytes;
	/* Stored before it is sent, so a crash cannot lose it (persistent
	 * sessions only; out_store checks), online or not: the publisher's
	 * ack waits for this write (a hold), while the inflight state
	 * written when it is sent only adds DUP and the packet id, so it is
	 * not waited for. */
	out_store(s, o, d);
	session_pump(s);
}

static void
out_done(struct mqtt_session *s, struct mqtt_out *o)
{
	out_unstore(s, o);
	out_free(o);
	mqtt_stat_msgs_sent++;
	session_pump(s);
}

int
session_puback(struct mqtt_session *s, uint16_t pid)
{
	struct mqtt_out *o = q_take_pid(&s->inflight, pid, OUT_SENT);

	if (o == NULL)
		return -1;
	out_done(s, o);
	return 0;
}

int
session_pubrec(struct mqtt_session *s, uint16_t pid, uint8_t reason)
{
	struct mqtt_out *o;

	for (o = s->inflight.head; o != NULL; o = o->next)
		if (o->pid == pid && o->qos == 2)
			break;
	if (o == NULL)
		return -1;
	if (reason >= 0x80) {
		/* The receiver refused it: the flow ends here (4.3.3). */
		o = q_take_pid(&s->inflight, pid, o->state);
		out_done(s, o);
		return 0;
	}
	o->state = OUT_REL;
	out_store_state(s, o);
	mqtt_send_pubrel(s->mc, pid, 0);
	return 0;
}

int
session_pubcomp(struct mqtt_session *s, uint16_t pid)
{
	struct mqtt_out *o = q_take_pid(&s->inflight, pid, OUT_REL);

	if (o == NULL)
		return -1;
	out_done(s, o);
	return 0;
}

/* ---- incoming QoS 2 ids ---- */

int
session_qos2_has(struct mqtt_session *s, uint16_t pid)
{
	uint32_t i;

	for (i = 0; i < s->n_in_qos2; i++)
		if (s->in_qos2[i] == pid)
			return 1;
	return 0;
}

static int
qos2_push(struct mqtt_session *s, uint16_t pid)
{
	if (s->n_in_qos2 == s->cap_in_qos2) {
		uint32_t cap = s->cap_in_qos2 ? s->cap_in_qos2 * 2 : 8;
		uint16_t *n;

		if (s->cap_in_qos2 >= 65535)
			return PMQ_ERR_LIMIT;
		if (cap > 65535)
			cap = 65535;
		n = realloc(s->in_qos2, cap * sizeof *n);
		if (n == NULL)
			return PMQ_ERR_NOMEM;
		s->in_qos2 = n;
		s->cap_in_qos2 = cap;
	}
	s->in_qos2[s->n_in_qos2++] = pid;
	return PMQ_OK;
}

int
session_qos2_add(struct mqtt_session *s, uint16_t pid, pmq_done_fn done,
                 void *arg, int *wait)
{
	int rc = qos2_push(s, pid);

	*wait = 0;
	if (rc == PMQ_OK)
		*wait = qos2_store(s, pid, 1, done, arg);
	return rc;
}

int
session_qos2_del(struct mqtt_session *s, uint16_t pid, pmq_done_fn done,
                 void *arg, int *wait)
{
	uint32_t i;

	if (wait != NULL)
		*wait = 0;
	for (i = 0; i < s->n_in_qos2; i++) {
		if (s->in_qos2[i] == pid) {
			int w;

			s->in_qos2[i] = s->in_qos2[--s->n_in_qos2];
			w = qos2_store(s, pid, 0, wait != NULL ? done : NULL,
			               arg);
			if (wait != NULL)
				*wait = w;
			return 0;
		}
	}
	return -1;
}

/* ---- subscriptions ---- */

static int
same_sub(const struct mqtt_sub *sub, const char *filter, const char *group)
{
	if (strcmp(sub->filter, filter) != 0)
		return 0;
	if (sub->group == NULL || group == NULL)
		return sub->group == group;
	return strcmp(sub->group, group) == 0;
}

int
session_sub_add(struct mqtt_session *s, const char *filter,
                const char *group, const struct pmq_sub_opts *o)
{
	struct mqtt_sub *sub;

	for (sub = s->subs; sub != NULL; sub = sub->next) {
		if (same_sub(sub, filter, group)) {
			sub->opts = *o;
			sub->opts.share_group = sub->group;
			return PMQ_OK;
		}
	}
	sub = calloc(1, sizeof *sub);
	if (sub == NULL || (sub->filter = strdup(filter)) == NULL ||
	    (group != NULL && (sub->group = strdup(group)) == NULL)) {
		if (sub != NULL)
			free(sub->filter);
		free(sub);
		return PMQ_ERR_NOMEM;
	}
	sub->opts = *o;
	sub->opts.share_group = sub->group;
	sub->next = s->subs;
	s->subs = sub;
	return PMQ_OK;
}

static void
sub_free(struct mqtt_sub *sub)
{
	free(sub->filter);
	free(sub->group);
	free(sub);
}

void
session_sub_del(struct mqtt_session *s, const char *filter, const char *group)
{
	struct mqtt_sub **pp;

	for (pp = &s->subs; *pp != NULL; pp = &(*pp)->next) {
		if (same_sub(*pp, filter, group)) {
			struct mqtt_sub *sub = *pp;

			*pp = sub->next;
			sub_free(sub);
			return;
		}
	}
}

/* ---- will and expiry ---- */

static void
will_publish(struct mqtt_session *s)
{
	pmq_msg *w = s->will;

	if (w == NULL)
		return;
	s->will = NULL; /* its reference is w's now */
	will_clear(s, 0);
	api->publish(s->cl, w, 0, NULL, NULL);
	api->msg_unref(w);
}

static void
will_timer_cb(void *arg)
{
	will_publish(arg);
}

static void
expiry_timer_cb(void *arg)
{
	struct mqtt_session *s = arg;

	api->log(s->l->inst, PMQ_LOG_INFO, "client %s: session expired",
	         s->id);
	session_end(s, 1);
}

static void
timer_arm(pmq_timer **t, void (*fn)(void *), void *arg, uint64_t ms)
{
	if (*t == NULL)
		*t = api->timer_new(fn, arg);
	if (*t != NULL)
		api->timer_start(*t, ms, 0);
}

void
session_attach(struct mqtt_session *s, struct mqtt_conn *mc)
{
	s->mc = mc;
	s->l = mc->l;
	s->version = mc->version;
	s->drop_logged = 0;
	s->block_logged = 0;
	s->offline_since_ms = 0; /* online: a restart counts from then */
	if (s->expiry_timer != NULL)
		api->timer_stop(s->expiry_timer);
	/* A new connection cancels a delayed will (3.1.2.5). */
	will_clear(s, 0);
}

void
session_detach(struct mqtt_session *s, int shutdown)
{
	struct mqtt_conn *mc = s->mc;
	struct mqtt_out *o;

	s->mc = NULL;
	/* Publishes held for this online session's queue are acknowledged:
	 * the message reached every subscriber there was; a session that
	 * ends has no use for it, and a persistent one keeps it in its
	 * (stored) queue, now under the offline drop-at-limit rule. */
	holds_release(s, 1);
	if (mc != NULL && mc->disconnected && !mc->will_on_disconnect &&
	    s->will != NULL)
		will_clear(s, 0);
	if (shutdown) {
		/* The broker stops: no wills now; a stored one is published
		 * after the restart unless the client comes back in time. */
		will_clear(s, 1);
	} else if (s->will != NULL &&
	           (s->will_delay_s == 0 || s->expiry_ms == 0)) {
		will_publish(s);
	} else if (s->will != NULL) {
		timer_arm(&s->will_timer, will_timer_cb, s,
		          (uint64_t)s->will_delay_s * 1000);
	}
	if (s->expiry_ms == 0) {
		session_end(s, !shutdown);
		return;
	}
	s->offline_since_ms = api->now_ms();
	for (o = s->inflight.head; o != NULL; o = o->next)
		out_store(s, o, NULL);
	for (o = s->queue.head; o != NULL; o = o->next)
		out_store(s, o, NULL);
	session_save(s);
	if (!shutdown && s->expiry_ms > 0)
		timer_arm(&s->expiry_timer, expiry_timer_cb, s,
		          (uint64_t)s->expiry_ms);
}

static void
session_unlink(struct mqtt_session *s)
{
	struct mqtt_session **pp = &table[hash_id(s->id, s->id_len)];

	while (*pp != NULL && *pp != s)
		pp = &(*pp)->hnext;
	if (*pp == s)
		*pp = s->hnext;
	n_sessions--;
}

static void
session_free(struct mqtt_session *s, int persist, int shutdown)
{
	struct mqtt_out *o;

	while ((o = q_pop(&s->inflight)) != NULL) {
		if (persist)
			out_unstore(s, o);
		out_free(o);
	}
	while ((o = q_pop(&s->queue)) != NULL) {
		out_unhold(s, o);
		if (persist)
			out_unstore(s, o);
		out_free(o);
	}
	if (persist) {
		uint32_t i;

		for (i = 0; i < s->n_in_qos2; i++)
			qos2_store(s, s->in_qos2[i], 0, NULL, NULL);
	}
	while (s->subs != NULL) {
		struct mqtt_sub *sub = s->subs;

		s->subs = sub->next;
		sub_free(sub);
	}
	if (persist && s->stored)
		api->kv_del(NS_SESSIONS, s->id, s->id_len, NULL, NULL);
	will_clear(s, !persist);
	if (s->will_timer != NULL)
		api->timer_free(s->will_timer);
	if (s->expiry_timer != NULL)
		api->timer_free(s->expiry_timer);
	/* At shutdown the router may already be gone; client_free then
	 * only frees the client (core/router.c allows it). */
	(void)shutdown;
	api->client_free(s->cl);
	free(s->in_qos2);
	free(s);
}

void
session_end(struct mqtt_session *s, int persist)
{
	/* The session ends: its will goes now if it has not yet. */
	will_publish(s);
	if (s->mc != NULL)
		s->mc->s = NULL;
	session_unlink(s);
	session_free(s, persist, 0);
}

void
sessions_free_all(void)
{
	size_t i;

	for (i = 0; i < SESSION_BUCKETS; i++) {
		while (table[i] != NULL) {
			struct mqtt_session *s = table[i];

			table[i] = s->hnext;
			n_sessions--;
			session_free(s, 0, 1);
		}
	}
	loaded = 0;
}

/* ---- restore at start-up ---- */

struct load_ctx {
	struct mqtt_listener *l;
	uint64_t n_sessions, n_msgs, n_inflight, n_wills, n_bad;
};

/* Decode a stored outgoing message (the format out_encode writes).
 * Returns a new mqtt_out (seq, state unset), or NULL when the record is
 * bad or memory is short. */
static struct mqtt_out *
out_decode(const void *val, size_t val_len)
{
	struct srd r = { val, 0, val_len, 0 };
	struct pmq_msg_fields f = { .size = sizeof f };
	struct pmq_header *hs = NULL;
	struct mqtt_out *o;
	uint32_t i, n_ids;
	uint8_t has_corr;
	int err;

	if (srd_u8(&r) != REC_FORMAT || (o = calloc(1, sizeof *o)) == NULL)
		return NULL;
	o->qos = srd_u8(&r);
	o->retain = srd_u8(&r);
	f.qos = srd_u8(&r);
	f.retain = srd_u8(&r);
	f.payload_format = srd_u8(&r);
	f.timestamp_ms = (int64_t)srd_u64(&r);
	f.expiry_ms = (int64_t)srd_u64(&r);
	n_ids = srd_u32(&r);
	if (r.bad || n_ids > (val_len - r.pos) / 4 || o->qos > 2)
		goto bad;
	if (n_ids > 0 && (o->sub_ids = calloc(n_ids, 4)) == NULL)
		goto bad;
	for (i = 0; i < n_ids; i++)
		o->sub_ids[i] = srd_u32(&r);
	o->n_sub_ids = n_ids;
	f.topic = (const char *)srd_blob(&r, &f.topic_len);
	f.payload = srd_blob(&r, &f.payload_len);
	f.content_type = (const char *)srd_blob(&r, &f.content_type_len);
	f.response_topic = (const char *)srd_blob(&r, &f.response_topic_len);
	has_corr = srd_u8(&r);
	f.correlation_data = srd_blob(&r, &f.correlation_data_len);
	if (!has_corr)
		f.correlation_data = NULL;
	if (f.content_type_len == 0)
		f.content_type = NULL;
	if (f.response_topic_len == 0)
		f.response_topic = NULL;
	f.n_headers = srd_u32(&r);
	if (r.bad || f.n_headers > (val_len - r.pos) / 8)
		goto bad;
	if (f.n_headers > 0 &&
	    (hs = calloc(f.n_headers, sizeof *hs)) == NULL)
		goto bad;
	for (i = 0; i < f.n_headers; i++) {
		hs[i].name = (const char *)srd_blob(&r, &hs[i].name_len);
		hs[i].value = srd_blob(&r, &hs[i].value_len);
	}
	f.headers = hs;
	if (r.bad || r.pos != r.len)
		goto bad;
	o->m = api->msg_new(&f, &err);
	free(hs);
	hs = NULL;
	if (o->m == NULL)
		goto bad;
	o->bytes = f.payload_len + f.topic_len;
	return o;
bad:
	free(hs);
	free(o->sub_ids);
	free(o);
	return NULL;
}

/* The session a "<client id>\0<suffix>" key belongs to, or NULL. */
static struct mqtt_session *
key_session(const void *key, size_t key_len, size_t suffix)
{
	const uint8_t *nul = key_len > suffix ? memchr(key, 0, key_len) : NULL;
	struct mqtt_session *s;

	if (nul == NULL)
		return NULL;
	s = session_find(key, (size_t)(nul - (const uint8_t *)key));
	return s != NULL && key_len == s->id_len + 1 + suffix ? s : NULL;
}

static int
load_msg(void *arg, const void *key, size_t key_len, const void *val,
         size_t val_len)
{
	struct load_ctx *lc = arg;
	struct mqtt_session *s = key_session(key, key_len, 8);
	struct mqtt_out *o;
	uint32_t i;

	o = s != NULL ? out_decode(val, val_len) : NULL;
	if (o == NULL || o->qos == 0) {
		if (o != NULL)
			out_free(o);
		lc->n_bad++;
		api->kv_del(NS_QUEUE, key, key_len, NULL, NULL);
		return 0;
	}
	o->seq = 0;
	for (i = 0; i < 8; i++)
		o->seq = (o->seq << 8) | ((const uint8_t *)key)[s->id_len + 1 + i];
	if (o->seq >= s->next_seq)
		s->next_seq = o->seq + 1;
	o->stored = 1;
	q_push(&s->queue, o);
	s->queued_bytes += o->bytes;
	lc->n_msgs++;
	return 0;
}

/* The state of a stored message that had left: it becomes inflight
 * again (moved by sessions_load once every state is known). */
static int
load_state(void *arg, const void *key, size_t key_len, const void *val,
           size_t val_len)
{
	struct load_ctx *lc = arg;
	struct mqtt_session *s = key_session(key, key_len, 8);
	const uint8_t *v = val;
	struct mqtt_out *o = NULL;
	uint64_t seq = 0;
	uint32_t i;

	if (s != NULL && val_len == 3 && (v[0] == OUT_SENT || v[0] == OUT_REL)) {
		for (i = 0; i < 8; i++)
			seq = (seq << 8) |
			      ((const uint8_t *)key)[s->id_len + 1 + i];
		for (o = s->queue.head; o != NULL; o = o->next)
			if (o->seq == seq)
				break;
	}
	if (o == NULL || (o->qos == 1 && v[0] == OUT_REL) ||
	    ((uint16_t)(v[1] << 8 | v[2])) == 0) {
		lc->n_bad++;
		api->kv_del(NS_OUTSTATE, key, key_len, NULL, NULL);
		return 0;
	}
	o->state = v[0];
	o->pid = (uint16_t)(v[1] << 8 | v[2]);
	o->state_stored = 1;
	lc->n_inflight++;
	return 0;
}

static int
load_qos2(void *arg, const void *key, size_t key_len, const void *val,
          size_t val_len)
{
	struct load_ctx *lc = arg;
	struct mqtt_session *s = key_session(key, key_len, 2);
	uint16_t pid;

	(void)val;
	(void)val_len;
	if (s == NULL) {
		lc->n_bad++;
		api->kv_del(NS_QOS2IN, key, key_len, NULL, NULL);
		return 0;
	}
	pid = (uint16_t)(((const uint8_t *)key)[s->id_len + 1] << 8 |
	                 ((const uint8_t *)key)[s->id_len + 2]);
	/* Already stored: add to the list without writing again. */
	if (!session_qos2_has(s, pid) && qos2_push(s, pid) != PMQ_OK)
		lc->n_bad++;
	return 0;
}

static int
load_will(void *arg, const void *key, size_t key_len, const void *val,
          size_t val_len)
{
	struct load_ctx *lc = arg;
	struct mqtt_session *s = session_find(key, key_len);
	struct srd r = { val, 0, val_len, 0 };
	struct mqtt_out *o = NULL;
	uint32_t delay;

	delay = srd_u32(&r);
	if (s != NULL && !r.bad && s->will == NULL)
		o = out_decode((const uint8_t *)val + 4, val_len - 4);
	if (o == NULL) {
		lc->n_bad++;
		api->kv_del(NS_WILLS, key, key_len, NULL, NULL);
		return 0;
	}
	/* The client is away after the restart: its will goes after the
	 * delay (counted from now) unless it reconnects first; never from
	 * inside the scan. */
	s->will = api->msg_ref(o->m);
	s->will_delay_s = delay;
	s->will_stored = 1;
	out_free(o);
	timer_arm(&s->will_timer, will_timer_cb, s,
	          delay > 0 ? (uint64_t)delay * 1000 : 1);
	lc->n_wills++;
	return 0;
}

static int
load_session(void *arg, const void *key, size_t key_len, const void *val,
             size_t val_len)
{
	struct load_ctx *lc = arg;
	struct srd r = { val, 0, val_len, 0 };
	struct mqtt_session *s;
	int64_t expiry, since, left;
	uint32_t i, n;

	if (key_len == 0 || key_len > 65535 ||
	    !mqtt_utf8_valid(key, key_len) || srd_u8(&r) != REC_FORMAT) {
		lc->n_bad++;
		return 0;
	}
	s = session_new(lc->l, key, key_len);
	if (s == NULL)
		return 1;
	s->stored = 1;
	s->version = srd_u8(&r);
	expiry = (int64_t)srd_u64(&r);
	since = (int64_t)srd_u64(&r);
	s->next_seq = srd_u64(&r);
	s->expiry_ms = expiry;
	n = srd_u32(&r);
	for (i = 0; i < n && !r.bad; i++) {
		struct pmq_sub_opts o = { .size = sizeof o };
		const uint8_t *fp, *gp;
		size_t fl, gl;
		char *filter = NULL, *group = NULL;

		o.qos = srd_u8(&r);
		o.no_local = srd_u8(&r);
		o.retain_as_published = srd_u8(&r);
		o.retain_handling = srd_u8(&r);
		o.sub_id = srd_u32(&r);
		fp = srd_blob(&r, &fl);
		gp = srd_blob(&r, &gl);
		if (r.bad)
			break;
		filter = strndup((const char *)fp, fl);
		if (gl > 0)
			group = strndup((const char *)gp, gl);
		if (filter != NULL && (gl == 0 || group != NULL)) {
			o.share_group = group;
			if (api->subscribe(s->cl, filter, &o) >= 0)
				session_sub_add(s, filter, group, &o);
		}
		free(filter);
		free(group);
	}
	if (r.bad)
		lc->n_bad++;
	lc->n_sessions++;
	/* Offline since `since` (0: it was online when the broker
	 * stopped): the expiry counts from then. */
	if (since == 0)
		since = api->now_ms();
	s->offline_since_ms = since;
	if (expiry > 0) {
		left = expiry - (api->now_ms() - since);
		timer_arm(&s->expiry_timer, expiry_timer_cb, s,
		          left > 0 ? (uint64_t)left : 1);
	}
	return 0;
}

void
sessions_load(struct mqtt_listener *l)
{
	struct load_ctx lc = { .l = l };
	struct mqtt_session *s;
	size_t i;

	if (loaded)
		return;
	loaded = 1;
	/* Two flat scans: a storage plugin need not support a scan
	 * inside another scan's callback. */
	api->kv_scan(NS_SESSIONS, "", 0, load_session, &lc);
	api->kv_scan(NS_QUEUE, "", 0, load_msg, &lc);
	api->kv_scan(NS_OUTSTATE, "", 0, load_state, &lc);
	api->kv_scan(NS_QOS2IN, "", 0, load_qos2, &lc);
	api->kv_scan(NS_WILLS, "", 0, load_will, &lc);
	/* Messages that had left become inflight again, in order. */
	for (i = 0; i < SESSION_BUCKETS; i++) {
		for (s = table[i]; s != NULL; s = s->hnext) {
			struct mqtt_outq rest = { 0 };
			struct mqtt_out *o;

			while ((o = q_pop(&s->queue)) != NULL) {
				if (o->state != OUT_QUEUED) {
					s->queued_bytes -= o->bytes;
					q_push(&s->inflight, o);
				} else {
					q_push(&rest, o);
				}
			}
			s->queue = rest;
		}
	}
	if (lc.n_sessions > 0 || lc.n_bad > 0)
		api->log(l->inst, PMQ_LOG_INFO,
		         "restored %" PRIu64 " sessions with %" PRIu64
		         " queued messages (%" PRIu64 " inflight), %" PRIu64
		         " wills (%" PRIu64 " bad records dropped)",
		         lc.n_sessions, lc.n_msgs, lc.n_inflight, lc.n_wills,
		         lc.n_bad);
}
