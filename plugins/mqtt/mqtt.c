/*
 * mqtt.c - the MQTT 3.1 / 3.1.1 / 5.0 transport: the plugin descriptor,
 * listener config, and the connection state machine (CONNECT, PUBLISH
 * with QoS 0/1/2 both ways, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT,
 * keepalive, topic aliases, maximum packet size).  Packets are decoded by
 * codec.c; sessions, queues and persistence live in session.c; $SYS in
 * sys.c.  docs/mqtt.md is the user's reference.
 *
 * Acknowledgements: PUBACK and PUBREC leave only from host->publish's
 * completion, through a reply slot opened when the PUBLISH was parsed, so
 * they leave in PUBLISH order and only once the message is as durable as
 * the storage promises.  A QoS 2 message is published when its PUBLISH
 * arrives; its packet id is kept until PUBREL so that a resent PUBLISH is
 * acknowledged again but not delivered twice.
 *
 * Bad input closes the connection: an MQTT 5 client first gets a
 * DISCONNECT (or CONNACK) with the reason code, and one line is logged.
 *
 * Flow control: with qos0_full = block a QoS 0 delivery to a full
 * subscriber stops reading the publisher (host conn_block_input) and the
 * parser stops at that packet; all parsing happens inside conn_input, so
 * the publisher is always the connection the host is reading.  Keepalive
 * deadlines are checked by one plugin-wide timer once a second.
 *
 * Threads: every function here runs on the host's loop thread (host.h).
 */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt.h"

const struct pmq_host_api *mqtt_api;
#define api mqtt_api

uint64_t mqtt_stat_connected, mqtt_stat_bad_packets, mqtt_stat_msgs_received,
    mqtt_stat_msgs_sent, mqtt_stat_dropped;

/* Publishes waiting for their completion per connection: past this we
 * stop reading, so a client cannot queue unbounded work. */
#define MQTT_MAX_PENDING 1024
/* A connection that sends no CONNECT within this is closed. */
#define MQTT_CONNECT_TIMEOUT_MS 20000
/* Most topic aliases we assign towards one client. */
#define MQTT_OUT_ALIAS_CAP 64

/* Scratch buffers past this are freed by the next keepalive tick, so a
 * rare big packet does not keep its memory. */
#define MQTT_OB_KEEP 65536

static unsigned n_listeners;

/* One encode buffer for every connection: a packet is encoded and then
 * copied to the connection's output (conn_send / slot_send) at once, on
 * the one loop thread, so no connection needs a buffer of its own while
 * idle. */
static struct mqtt_buf ob;

/* Connections with a deadline (no CONNECT yet, or keepalive > 0), checked
 * by one plugin-wide timer every second instead of a timer each. */
static struct mqtt_conn *ka_list;
static pmq_timer *ka_timer;

/* The connection whose input is being parsed (inside conn_input): the
 * publisher of what is delivered now. */
static struct mqtt_conn *cur_input;

static void parse(struct mqtt_conn *mc);

/* ---- small helpers ---- */

static const char *
conn_name(const struct mqtt_conn *mc)
{
	return mc->c != NULL ? api->conn_peer(mc->c) : "(closed)";
}

static void
conn_unref(struct mqtt_conn *mc)
{
	assert(mc->refs > 0);
	if (--mc->refs == 0)
		free(mc);
}

/* Send a finished packet from ob, after every open reply slot. */
static void
send_ob(struct mqtt_conn *mc, long off)
{
	if (off < 0 || mc->c == NULL)
		return;
	api->conn_send(mc->c, ob.p + off, ob.len - (size_t)off,
	               PMQ_SEND_ORDERED);
}

/* Reason strings only when the client did not opt out (3.1.2.11.7). */
static const char *
rstr(const struct mqtt_conn *mc, const char *s)
{
	return mc->problem_info ? s : NULL;
}

static void
send_connack(struct mqtt_conn *mc, uint8_t version, int present,
             uint8_t code, const struct mqtt_buf *props)
{
	struct mqtt_buf *b = &ob;

	mqtt_buf_begin(b);
	mqtt_put_u8(b, (uint8_t)(present ? 1 : 0));
	mqtt_put_u8(b, code);
	if (version == MQTT_V5) {
		if (props != NULL) {
			mqtt_put_props(b, props);
		} else {
			mqtt_put_varint(b, 0);
		}
	}
	send_ob(mc, mqtt_buf_finish(b, MQTT_CONNACK << 4, 0));
}

/* MQTT 3.1.1 CONNACK return code for a v5 reason code. */
static uint8_t
v3_code(uint8_t reason)
{
	switch (reason) {
	case MQTT_RC_UNSUPPORTED_VERSION: return 1;
	case MQTT_RC_CLIENTID_INVALID: return 2;
	case MQTT_RC_SERVER_UNAVAILABLE:
	case MQTT_RC_SERVER_BUSY: return 3;
	case MQTT_RC_BAD_USER_PASS: return 4;
	case MQTT_RC_NOT_AUTHORIZED: return 5;
	default: return 3;
	}
}

/* Refuse a CONNECT with reason, then close. */
static void
refuse(struct mqtt_conn *mc, uint8_t version, uint8_t reason,
       const char *why)
{
	api->log(mc->l->inst, PMQ_LOG_INFO,
	         "%s: CONNECT refused (0x%02x): %s", conn_name(mc), reason, why);
	if (version == MQTT_V5) {
		struct mqtt_buf pb;

		mqtt_buf_init(&pb);
		mqtt_prop_str(&pb, MQTT_P_REASON_STRING, why, strlen(why));
		send_connack(mc, version, 0, reason, &pb);
		mqtt_buf_free(&pb);
	} else if (version == MQTT_V311 || version == MQTT_V31) {
		send_connack(mc, version, 0, v3_code(reason), NULL);
	}
	mc->closing = 1;
	api->conn_close(mc->c, 1);
}

/*
 * Close for a protocol violation: an MQTT 5 client hears the reason
 * first (DISCONNECT after CONNACK).  Counted and logged once.
 */
static void PMQ_PRINTF(3, 4)
fail(struct mqtt_conn *mc, uint8_t reason, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	if (mc->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	mqtt_stat_bad_packets++;
	api->log(mc->l->inst, PMQ_LOG_INFO, "%s (%s): %s (0x%02x), closing",
	         conn_name(mc), mc->s != NULL ? mc->s->id : "-", why, reason);
	if (mc->version == MQTT_V5 && mc->connected)
		send_ob(mc, mqtt_enc_disconnect(&ob, MQTT_V5, reason, why));
	mc->closing = 1;
	api->conn_close(mc->c, 1);
}

/* ---- sending PUBLISH ---- */

static void
msg_release(void *arg)
{
	api->msg_unref(arg);
}

/* Topic alias towards the client: the existing one, a new one (*fresh),
 * or 0. */
static uint16_t
out_alias(struct mqtt_conn *mc, const char *t, size_t tl, int *fresh)
{
	uint16_t i, cap;

	*fresh = 0;
	cap = mc->client_alias_max < MQTT_OUT_ALIAS_CAP ? mc->client_alias_max
	                                                : MQTT_OUT_ALIAS_CAP;
	if (cap == 0)
		return 0;
	for (i = 0; i < mc->n_out_alias; i++)
		if (strlen(mc->out_alias[i]) == tl &&
		    memcmp(mc->out_alias[i], t, tl) == 0)
			return (uint16_t)(i + 1);
	if (mc->n_out_alias >= cap)
		return 0;
	*fresh = 1;
	return (uint16_t)(mc->n_out_alias + 1);
}

int
mqtt_send_publish(struct mqtt_conn *mc, pmq_msg *m, uint8_t qos,
                  uint8_t retain, uint16_t pid, int dup,
                  const uint32_t *sub_ids, uint32_t n_sub_ids)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	struct mqtt_buf pb, *b = &ob;
	unsigned flags = mc->ordered_sends || mc->connack_wait ?
	                     PMQ_SEND_ORDERED : PMQ_SEND_NOW;
	uint16_t alias = 0;
	int fresh = 0, send_topic = 1;
	size_t rem, total;
	uint32_t i;
	long off;

	if (mc->c == NULL || mc->closing)
		return PMQ_ERR_CLOSED;
	api->msg_fields(m, &f);
	if (f.topic_len > 65535)
		return PMQ_ERR_LIMIT;
	mqtt_buf_init(&pb);
	if (mc->version == MQTT_V5) {
		if (f.payload_format != 0)
			mqtt_prop_u8(&pb, MQTT_P_PAYLOAD_FORMAT, f.payload_format);
		if (f.expiry_ms != 0) {
			int64_t left = f.expiry_ms - api->now_ms();

			if (left <= 0) { /* expired on the way: as if sent */
				mqtt_buf_free(&pb);
				return PMQ_OK;
			}
			mqtt_prop_u32(&pb, MQTT_P_MESSAGE_EXPIRY,
			              (uint32_t)((left + 999) / 1000));
		}
		if (f.content_type != NULL && f.content_type_len <= 65535)
			mqtt_prop_str(&pb, MQTT_P_CONTENT_TYPE, f.content_type,
			              f.content_type_len);
		if (f.response_topic != NULL && f.response_topic_len <= 65535)
			mqtt_prop_str(&pb, MQTT_P_RESPONSE_TOPIC,
			              f.response_topic, f.response_topic_len);
		if (f.correlation_data != NULL &&
		    f.correlation_data_len <= 65535)
			mqtt_prop_str(&pb, MQTT_P_CORRELATION_DATA,
			              f.correlation_data, f.correlation_data_len);
		for (i = 0; i < n_sub_ids; i++)
			if (sub_ids[i] != 0)
				mqtt_prop_varint(&pb, MQTT_P_SUB_ID, sub_ids[i]);
		/* Headers from other protocols may not be MQTT strings. */
		for (i = 0; i < f.n_headers; i++) {
			const struct pmq_header *h = &f.headers[i];

			if (h->name_len > 65535 || h->value_len > 65535 ||
			    !mqtt_utf8_valid((const uint8_t *)h->name,
			                     h->name_len) ||
			    (h->value_len > 0 &&
			     !mqtt_utf8_valid(h->value, h->value_len)))
				continue;
			mqtt_prop_pair(&pb, h->name, h->name_len,
			               h->value != NULL ? h->value : "",
			               h->value_len);
		}
		alias = out_alias(mc, f.topic, f.topic_len, &fresh);
		if (alias != 0) {
			mqtt_prop_u16(&pb, MQTT_P_TOPIC_ALIAS, alias);
			send_topic = fresh;
		}
	}
	if (pb.err != PMQ_OK) {
		mqtt_buf_free(&pb);
		return PMQ_ERR_NOMEM;
	}
	rem = 2 + (send_topic ? f.topic_len : 0) + (qos > 0 ? 2 : 0) +
	      (mc->version == MQTT_V5 ? mqtt_props_size(pb.len) : 0) +
	      f.payload_len;
	total = 1 + mqtt_varint_size((uint32_t)rem) + rem;
	if (rem > MQTT_MAX_REMAINING ||
	    (mc->client_max_packet != 0 && total > mc->client_max_packet)) {
		/* MQTT 5 3.1.2.25: never send more than the client takes. */
		mqtt_buf_free(&pb);
		return PMQ_ERR_LIMIT;
	}
	if (fresh) {
		char *t = malloc(f.topic_len + 1);

		if (t == NULL) {
			mqtt_buf_free(&pb);
			return PMQ_ERR_NOMEM;
		}
		memcpy(t, f.topic, f.topic_len);
		t[f.topic_len] = '\0';
		mc->out_alias[mc->n_out_alias++] = t;
	}
	mqtt_buf_begin(b);
	if (send_topic)
		mqtt_put_str(b, f.topic, f.topic_len);
	else
		mqtt_put_u16(b, 0);
	if (qos > 0)
		mqtt_put_u16(b, pid);
	if (mc->version == MQTT_V5)
		mqtt_put_props(b, &pb);
	mqtt_buf_free(&pb);
	off = mqtt_buf_finish(b, (uint8_t)(MQTT_PUBLISH << 4 |
	                                   (dup ? 8 : 0) | qos << 1 |
	                                   (retain ? 1 : 0)),
	                      f.payload_len);
	if (off < 0)
		return PMQ_ERR_NOMEM;
	if (api->conn_send(mc->c, b->p + off, b->len - (size_t)off, flags) !=
	        PMQ_OK ||
	    (f.payload_len > 0 &&
	     api->conn_send_ref(mc->c, f.payload, f.payload_len, msg_release,
	                        api->msg_ref(m), flags) != PMQ_OK)) {
		/* Half a packet may be out: the stream is broken. */
		mc->closing = 1;
		api->conn_close(mc->c, 0);
		return PMQ_ERR_IO;
	}
	if (qos == 0)
		mqtt_stat_msgs_sent++;
	return PMQ_OK;
}

void
mqtt_send_pubrel(struct mqtt_conn *mc, uint16_t pid, uint8_t reason)
{
	long off;

	if (mc == NULL || mc->c == NULL || mc->closing)
		return;
	off = mqtt_enc_ack(&ob, mc->version, MQTT_PUBREL, pid, reason,
	                   NULL);
	if (off >= 0)
		api->conn_send(mc->c, ob.p + off, ob.len - (size_t)off,
		               mc->connack_wait ? PMQ_SEND_ORDERED :
		                                  PMQ_SEND_NOW);
}

/* ---- acknowledgements waiting for session writes ---- */

/*
 * SUBACK, UNSUBACK, PUBCOMP and CONNACK (with a will) of a persistent
 * session wait in a reply slot until the session write they report is as
 * durable as the storage promises.  Non-persistent sessions write nothing
 * and answer at once.  Owns one reference on mc.
 */
struct mqtt_wait {
	struct mqtt_conn *mc;
	pmq_slot *slot;
	unsigned waits;      /* the builder + each write */
	int status;          /* first failed write */
	uint8_t type;        /* MQTT_SUBACK, ... */
	uint8_t present;     /* CONNACK */
	uint16_t pid;
	uint32_t n_codes;
	struct mqtt_buf props; /* CONNACK properties */
	uint8_t codes[];     /* SUBACK / UNSUBACK reason codes */
};

static struct mqtt_wait *
wait_new(struct mqtt_conn *mc, uint8_t type, uint16_t pid,
         const uint8_t *codes, uint32_t n_codes)
{
	struct mqtt_wait *w = calloc(1, sizeof *w + n_codes);

	if (w == NULL)
		return NULL;
	if ((w->slot = api->slot_open(mc->c)) == NULL) {
		free(w);
		return NULL;
	}
	w->mc = mc;
	w->waits = 1;
	w->type = type;
	w->pid = pid;
	w->n_codes = n_codes;
	if (n_codes > 0)
		memcpy(w->codes, codes, n_codes);
	mqtt_buf_init(&w->props);
	mc->refs++;
	return w;
}

static void
wait_finish(struct mqtt_wait *w)
{
	struct mqtt_conn *mc = w->mc;
	struct mqtt_buf *b = &ob;
	long off = -1;
	uint32_t i;

	if (w->type == MQTT_CONNACK)
		mc->connack_wait = 0;
	if (mc->c == NULL || mc->closing)
		goto out;
	if (w->status != PMQ_OK) {
		api->log(mc->l->inst, PMQ_LOG_WARN,
		         "%s (%s): storing the session failed: %s",
		         conn_name(mc), mc->s != NULL ? mc->s->id : "-",
		         api->strerror(w->status));
		/* What was granted is reported failed (0x80 in both
		 * versions); where the packet has no failure code the
		 * client is disconnected without the ack, so it retries. */
		if (w->type == MQTT_SUBACK ||
		    (w->type == MQTT_UNSUBACK && mc->version == MQTT_V5)) {
			for (i = 0; i < w->n_codes; i++)
				if (w->codes[i] < 0x80)
					w->codes[i] = MQTT_RC_UNSPECIFIED;
		} else {
			mc->closing = 1;
			api->conn_close(mc->c, 1);
			goto out;
		}
	}
	switch (w->type) {
	case MQTT_SUBACK:
	case MQTT_UNSUBACK:
		mqtt_buf_begin(b);
		mqtt_put_u16(b, w->pid);
		if (mc->version == MQTT_V5)
			mqtt_put_varint(b, 0);
		if (w->type == MQTT_SUBACK || mc->version == MQTT_V5)
			mqtt_put(b, w->codes, w->n_codes);
		off = mqtt_buf_finish(b, (uint8_t)(w->type << 4), 0);
		break;
	case MQTT_PUBCOMP:
		off = mqtt_enc_ack(b, mc->version, MQTT_PUBCOMP, w->pid, 0,
		                   NULL);
		break;
	case MQTT_CONNACK:
		mqtt_buf_begin(b);
		mqtt_put_u8(b, w->present);
		mqtt_put_u8(b, 0);
		if (mc->version == MQTT_V5)
			mqtt_put_props(b, &w->props);
		off = mqtt_buf_finish(b, MQTT_CONNACK << 4, 0);
		break;
	}
	if (off >= 0)
		api->slot_send(w->slot, b->p + off, b->len - (size_t)off);
	else
		fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
out:
	api->slot_close(w->slot);
	mqtt_buf_free(&w->props);
	free(w);
	conn_unref(mc);
}

static void
wait_step(struct mqtt_wait *w)
{
	assert(w->waits > 0);
	if (--w->waits == 0)
		wait_finish(w);
}

static void
wait_done(void *arg, int status)
{
	struct mqtt_wait *w = arg;

	if (status != PMQ_OK && w->status == PMQ_OK)
		w->status = status;
	wait_step(w);
}

/* Account for the result rc of a session write started with wait_done,
 * after w->waits++ before it (done may run inside the call). */
static void
wait_add(struct mqtt_wait *w, int rc)
{
	if (rc > 0)
		return; /* wait_done runs (or ran) */
	w->waits--;
	if (rc < 0 && w->status == PMQ_OK)
		w->status = rc;
}

/* ---- incoming PUBLISH ---- */

/* A PUBLISH waiting for its completion, and for QoS 2 on a persistent
 * session also for its "mqtt.qos2in" write; owns one reference on mc. */
struct mqtt_req {
	struct mqtt_conn *mc;
	pmq_slot *slot;
	unsigned waits;     /* the publish + the qos2in write */
	int pub_status;
	int kv_status;      /* the qos2in write */
	uint64_t n_delivered;
	uint16_t pid;
	uint8_t qos;
};

static void
req_free(struct mqtt_req *req)
{
	struct mqtt_conn *mc = req->mc;

	api->slot_close(req->slot);
	mc->pending--;
	if (req->qos == 1)
		mc->in_unacked--;
	free(req);
	if (mc->c != NULL && mc->paused && !mc->closing)
		parse(mc);
	conn_unref(mc);
}

static uint8_t
pub_error_reason(int status)
{
	switch (status) {
	case PMQ_ERR_NOSPC:
	case PMQ_ERR_LIMIT: return MQTT_RC_QUOTA_EXCEEDED;
	case PMQ_ERR_INVAL: return MQTT_RC_TOPIC_NAME_INVALID;
	default: return MQTT_RC_UNSPECIFIED;
	}
}

/* Everything the PUBACK / PUBREC waits for is done: answer. */
static void
req_finish(struct mqtt_req *req)
{
	struct mqtt_conn *mc = req->mc;
	int status = req->pub_status;
	uint8_t reason = 0;
	long off;

	if (mc->c != NULL && !mc->closing && status == PMQ_OK &&
	    req->kv_status != PMQ_OK) {
		/* Published, but the id that stops a resend from being
		 * delivered again is not stored: v5 ends the flow with an
		 * error; 3.1.1 has none, so the client is disconnected and
		 * resends after reconnecting (the id, still in memory,
		 * keeps that resend from being routed again). */
		if (mc->version != MQTT_V5) {
			api->log(mc->l->inst, PMQ_LOG_WARN,
			         "%s: storing a QoS 2 packet id failed: %s, "
			         "closing", conn_name(mc),
			         api->strerror(req->kv_status));
			mc->closing = 1;
			api->conn_close(mc->c, 1);
			req_free(req);
			return;
		}
		if (mc->s != NULL)
			session_qos2_del(mc->s, req->pid, NULL, NULL, NULL);
		off = mqtt_enc_ack(&ob, mc->version, MQTT_PUBREC, req->pid,
		                   MQTT_RC_UNSPECIFIED,
		                   rstr(mc, api->strerror(req->kv_status)));
		if (off >= 0)
			api->slot_send(req->slot, ob.p + off,
			               ob.len - (size_t)off);
		req_free(req);
		return;
	}
	if (mc->c != NULL && !mc->closing) {
		if (status != PMQ_OK) {
			reason = pub_error_reason(status);
			if (req->qos == 2 && mc->s != NULL)
				session_qos2_del(mc->s, req->pid, NULL, NULL,
				                 NULL);
			if (mc->version != MQTT_V5) {
				/* 3.1.1 has no negative ack: the client
				 * resends after reconnecting. */
				api->log(mc->l->inst, PMQ_LOG_WARN,
				         "%s: publish failed: %s, closing",
				         conn_name(mc), api->strerror(status));
				mc->closing = 1;
				api->conn_close(mc->c, 1);
				req_free(req);
				return;
			}
		} else if (req->n_delivered == 0 && mc->version == MQTT_V5) {
			reason = MQTT_RC_NO_MATCHING_SUBSCRIBERS;
		}
		off = mqtt_enc_ack(&ob, mc->version,
		                   req->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
		                   req->pid, reason,
		                   status != PMQ_OK ?
		                       rstr(mc, api->strerror(status)) : NULL);
		if (off >= 0)
			api->slot_send(req->slot, ob.p + off,
			               ob.len - (size_t)off);
	}
	req_free(req);
}

static void
req_step(struct mqtt_req *req)
{
	assert(req->waits > 0);
	if (--req->waits == 0)
		req_finish(req);
}

static void
pub_done(void *arg, int status, const struct pmq_publish_result *res)
{
	struct mqtt_req *req = arg;

	req->pub_status = status;
	req->n_delivered = res != NULL ? res->n_delivered : 0;
	req_step(req);
}

/* The "mqtt.qos2in" write of a QoS 2 PUBLISH completed. */
static void
qos2_done(void *arg, int status)
{
	struct mqtt_req *req = arg;

	if (status != PMQ_OK) {
		api->log(req->mc->l->inst, PMQ_LOG_WARN,
		         "mqtt: storing a QoS 2 packet id failed: %s",
		         api->strerror(status));
		req->kv_status = status;
	}
	req_step(req);
}

/* Build a message from a PUBLISH or a will.  NULL with *err set. */
static pmq_msg *
build_msg(const struct mqtt_props *pr, struct mqtt_bin topic,
          struct mqtt_bin payload, uint8_t qos, uint8_t retain,
          int64_t expiry_delay_ms, int *err)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	struct pmq_header *hs = NULL;
	struct mqtt_bin n, v;
	size_t pos = 0;
	uint32_t i = 0;
	pmq_msg *m;

	f.qos = qos;
	f.retain = retain;
	f.topic = (const char *)topic.p;
	f.topic_len = topic.len;
	f.payload = payload.p;
	f.payload_len = payload.len;
	f.payload_format = pr->payload_format;
	if (MQTT_HAS_PROP(pr, MQTT_P_MESSAGE_EXPIRY))
		f.expiry_ms = api->now_ms() + expiry_delay_ms +
		              (int64_t)pr->message_expiry * 1000;
	if (MQTT_HAS_PROP(pr, MQTT_P_CONTENT_TYPE)) {
		f.content_type = (const char *)pr->content_type.p;
		f.content_type_len = pr->content_type.len;
	}
	if (MQTT_HAS_PROP(pr, MQTT_P_RESPONSE_TOPIC)) {
		f.response_topic = (const char *)pr->response_topic.p;
		f.response_topic_len = pr->response_topic.len;
	}
	if (MQTT_HAS_PROP(pr, MQTT_P_CORRELATION_DATA)) {
		/* Present but empty still counts as present. */
		f.correlation_data = pr->correlation_data.p != NULL ?
		                         (const void *)pr->correlation_data.p :
		                         (const void *)"";
		f.correlation_data_len = pr->correlation_data.len;
	}
	if (pr->n_user > 0) {
		hs = calloc(pr->n_user, sizeof *hs);
		if (hs == NULL) {
			*err = PMQ_ERR_NOMEM;
			return NULL;
		}
		while (i < pr->n_user && mqtt_user_next(pr, &pos, &n, &v)) {
			hs[i].name = (const char *)n.p;
			hs[i].name_len = n.len;
			hs[i].value = v.p != NULL ? (const void *)v.p : "";
			hs[i].value_len = v.len;
			i++;
		}
		f.headers = hs;
		f.n_headers = i;
	}
	m = api->msg_new(&f, err);
	free(hs);
	return m;
}

static void
handle_publish(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_session *s = mc->s;
	struct mqtt_bin topic = p->topic;
	struct mqtt_req *req;
	pmq_msg *m;
	int err = PMQ_OK, rc;

	mqtt_stat_msgs_received++;
	if (p->props.n_sub_ids > 0) {
		fail(mc, MQTT_RC_PROTOCOL, "subscription identifier in PUBLISH");
		return;
	}
	if (MQTT_HAS_PROP(&p->props, MQTT_P_TOPIC_ALIAS)) {
		uint16_t a = p->props.topic_alias;

		if (a > mc->l->topic_alias_max || mc->version != MQTT_V5) {
			fail(mc, MQTT_RC_TOPIC_ALIAS_INVALID,
			     "topic alias %u over the maximum", a);
			return;
		}
		/* Allocated at the first alias: most clients use none. */
		if (mc->in_alias == NULL &&
		    (mc->in_alias = calloc(mc->l->topic_alias_max,
		                           sizeof *mc->in_alias)) == NULL) {
			fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
			return;
		}
		if (topic.len == 0) {
			const char *t = mc->in_alias[a - 1];

			if (t == NULL) {
				fail(mc, MQTT_RC_PROTOCOL,
				     "unknown topic alias %u", a);
				return;
			}
			topic.p = (const uint8_t *)t;
			topic.len = strlen(t);
		} else {
			char *t = malloc(topic.len + 1);

			if (t == NULL) {
				fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
				return;
			}
			memcpy(t, topic.p, topic.len);
			t[topic.len] = '\0';
			free(mc->in_alias[a - 1]);
			mc->in_alias[a - 1] = t;
		}
	}
	if (p->retain && !mc->l->retain_available) {
		fail(mc, MQTT_RC_RETAIN_NOT_SUPPORTED, "retain not available");
		return;
	}
	if (p->qos == 2 && session_qos2_has(s, p->pid)) {
		/* A resent PUBLISH: acknowledge again, deliver once. */
		send_ob(mc, mqtt_enc_ack(&ob, mc->version, MQTT_PUBREC,
		                         p->pid, 0, NULL));
		return;
	}
	if (p->qos > 0 && mc->version == MQTT_V5 &&
	    mc->in_unacked + s->n_in_qos2 >= mc->l->max_inflight) {
		fail(mc, MQTT_RC_RECEIVE_MAX_EXCEEDED,
		     "more than %u unacknowledged publishes",
		     (unsigned)mc->l->max_inflight);
		return;
	}
	if (p->props.payload_format == PMQ_PAYLOAD_UTF8 &&
	    !mqtt_utf8_valid(p->payload.p, p->payload.len)) {
		if (p->qos == 0)
			return;
		send_ob(mc, mqtt_enc_ack(&ob, mc->version,
		                         p->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC,
		                         p->pid, MQTT_RC_PAYLOAD_FORMAT_INVALID,
		                         rstr(mc, "payload is not UTF-8")));
		return;
	}
	m = build_msg(&p->props, topic, p->payload, p->qos, p->retain, 0,
	              &err);
	if (m == NULL) {
		fail(mc, err == PMQ_ERR_NOMEM ? MQTT_RC_IMPL_SPECIFIC :
		                                MQTT_RC_TOPIC_NAME_INVALID,
		     "bad PUBLISH: %s", api->strerror(err));
		return;
	}
	if (p->qos == 0) {
		api->publish(s->cl, m, 0, NULL, NULL);
		api->msg_unref(m);
		return;
	}
	req = calloc(1, sizeof *req);
	if (req == NULL || (req->slot = api->slot_open(mc->c)) == NULL) {
		free(req);
		api->msg_unref(m);
		fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
		return;
	}
	req->mc = mc;
	req->pid = p->pid;
	req->qos = p->qos;
	req->waits = 1;
	if (p->qos == 2) {
		/* A persistent session stores the id; PUBREC waits for it
		 * too (the waits count keeps an early completion from
		 * finishing the request before the publish). */
		int w;

		req->waits++;
		if (session_qos2_add(s, p->pid, qos2_done, req, &w) !=
		    PMQ_OK) {
			api->slot_close(req->slot);
			free(req);
			api->msg_unref(m);
			fail(mc, MQTT_RC_RECEIVE_MAX_EXCEEDED,
			     "too many QoS 2 inflight");
			return;
		}
		if (w <= 0) {
			req->kv_status = w < 0 ? w : PMQ_OK;
			req->waits--;
		}
	}
	mc->refs++;
	mc->pending++;
	if (p->qos == 1)
		mc->in_unacked++;
	rc = api->publish(s->cl, m, 0, pub_done, req);
	api->msg_unref(m);
	if (rc != PMQ_OK) {
		struct pmq_publish_result res = { .size = sizeof res };

		pub_done(req, rc, &res);
	}
}

static void
handle_ack(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_session *s = mc->s;
	int rc = 0;

	switch (p->type) {
	case MQTT_PUBACK:
		rc = session_puback(s, p->pid);
		break;
	case MQTT_PUBREC:
		rc = session_pubrec(s, p->pid, p->reason);
		if (rc != 0) /* 4.3.3: answer anyway, v5 with 0x92 */
			mqtt_send_pubrel(mc, p->pid, MQTT_RC_PID_NOT_FOUND);
		break;
	case MQTT_PUBCOMP:
		rc = session_pubcomp(s, p->pid);
		break;
	case MQTT_PUBREL: {
		/* A persistent session's PUBCOMP waits for the id's delete:
		 * a stale id would swallow a new PUBLISH reusing it. */
		struct mqtt_wait *w = s->stored && session_qos2_has(s, p->pid) ?
		                          wait_new(mc, MQTT_PUBCOMP, p->pid,
		                                   NULL, 0) :
		                          NULL;
		int wr;

		if (w != NULL) {
			w->waits++;
			rc = session_qos2_del(s, p->pid, wait_done, w, &wr);
			wait_add(w, wr);
			wait_step(w);
			break;
		}
		rc = session_qos2_del(s, p->pid, NULL, NULL, NULL);
		send_ob(mc, mqtt_enc_ack(&ob, mc->version, MQTT_PUBCOMP,
		                         p->pid,
		                         rc != 0 ? MQTT_RC_PID_NOT_FOUND : 0,
		                         NULL));
		break;
	}
	}
	(void)rc; /* an unknown id in PUBACK/PUBCOMP is ignored */
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ---- */

/* Split "$share/GROUP/FILTER" in place.  -1 when malformed. */
static int
split_share(char *arg, char **group, char **filter)
{
	char *slash;

	*group = NULL;
	*filter = arg;
	if (strncmp(arg, "$share/", 7) != 0)
		return 0;
	slash = strchr(arg + 7, '/');
	if (slash == NULL || slash == arg + 7 || slash[1] == '\0')
		return -1;
	*slash = '\0';
	*group = arg + 7;
	*filter = slash + 1;
	return strpbrk(*group, "+#") != NULL ? -1 : 0;
}

static char *
bin_dup(struct mqtt_bin b)
{
	char *s = malloc(b.len + 1);

	if (s != NULL) {
		if (b.len > 0)
			memcpy(s, b.p, b.len);
		s[b.len] = '\0';
	}
	return s;
}

static void
handle_subscribe(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_session *s = mc->s;
	uint8_t *codes = calloc(p->n_entries, 2);
	struct mqtt_bin fb;
	size_t pos = 0;
	uint32_t i = 0;
	uint8_t o;
	long off;

	if (codes == NULL) {
		fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
		return;
	}
	/* First every subscription, then SUBACK, then retained messages
	 * (3.8.4: the SUBACK comes first). */
	while (i < p->n_entries && mqtt_sub_next(p, &pos, &fb, &o)) {
		struct pmq_sub_opts so = { .size = sizeof so };
		char *buf = bin_dup(fb), *group, *filter;
		int rc;

		codes[i] = MQTT_RC_UNSPECIFIED;
		if (buf == NULL) {
			i++;
			continue;
		}
		if (split_share(buf, &group, &filter) != 0 ||
		    !mqtt_filter_valid((const uint8_t *)filter,
		                       strlen(filter))) {
			codes[i++] = mc->version == MQTT_V5 ?
			                 MQTT_RC_TOPIC_FILTER_INVALID :
			                 MQTT_RC_UNSPECIFIED;
			free(buf);
			continue;
		}
		so.qos = o & 3;
		if (mc->version == MQTT_V5) {
			so.no_local = (o >> 2) & 1;
			so.retain_as_published = (o >> 3) & 1;
			so.retain_handling = (o >> 4) & 3;
			so.sub_id = p->props.sub_id;
		}
		if (group != NULL && so.no_local) {
			free(buf);
			free(codes);
			fail(mc, MQTT_RC_PROTOCOL,
			     "no local on a shared subscription");
			return;
		}
		so.share_group = group;
		rc = api->subscribe(s->cl, filter, &so);
		if (rc >= 0) {
			codes[i] = so.qos;
			codes[p->n_entries + i] = (uint8_t)(rc == 0);
			if (session_sub_add(s, filter, group, &so) != PMQ_OK)
				api->log(mc->l->inst, PMQ_LOG_WARN,
				         "client %s: subscription not recorded "
				         "(out of memory)", s->id);
		} else if (mc->version == MQTT_V5) {
			codes[i] = rc == PMQ_ERR_INVAL ?
			               MQTT_RC_TOPIC_FILTER_INVALID :
			               rc == PMQ_ERR_LIMIT ?
			               MQTT_RC_QUOTA_EXCEEDED :
			               MQTT_RC_UNSPECIFIED;
		}
		free(buf);
		i++;
	}
	if (s->expiry_ms != 0) {
		/* Persistent: the SUBACK leaves once the subscriptions are
		 * stored (retained messages follow it, ORDERED). */
		struct mqtt_wait *w = wait_new(mc, MQTT_SUBACK, p->pid, codes,
		                               p->n_entries);

		if (w == NULL) {
			free(codes);
			fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
			return;
		}
		w->waits++;
		wait_add(w, session_save_wait(s, wait_done, w));
		wait_step(w);
	} else {
		mqtt_buf_begin(&ob);
		mqtt_put_u16(&ob, p->pid);
		if (mc->version == MQTT_V5)
			mqtt_put_varint(&ob, 0);
		mqtt_put(&ob, codes, p->n_entries);
		off = mqtt_buf_finish(&ob, MQTT_SUBACK << 4, 0);
		if (off < 0) {
			free(codes);
			fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
			return;
		}
		send_ob(mc, off);
	}
	/* Retained messages after the SUBACK, in order with it. */
	pos = 0;
	i = 0;
	mc->ordered_sends = 1;
	while (i < p->n_entries && mqtt_sub_next(p, &pos, &fb, &o)) {
		struct pmq_sub_opts so = { .size = sizeof so };
		char *buf, *group, *filter;

		if (codes[i] >= 0x80 || mc->closing) {
			i++;
			continue;
		}
		buf = bin_dup(fb);
		if (buf != NULL && split_share(buf, &group, &filter) == 0) {
			so.qos = codes[i];
			if (mc->version == MQTT_V5) {
				so.retain_as_published = (o >> 3) & 1;
				so.retain_handling = (o >> 4) & 3;
				so.sub_id = p->props.sub_id;
			}
			so.share_group = group;
			api->retained_send(s->cl, filter, &so,
			                   codes[p->n_entries + i]);
		}
		free(buf);
		i++;
	}
	mc->ordered_sends = 0;
	free(codes);
}

static void
handle_unsubscribe(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_session *s = mc->s;
	uint8_t *codes = calloc(p->n_entries, 1);
	struct mqtt_bin fb;
	size_t pos = 0;
	uint32_t i = 0;
	uint8_t o;
	long off;

	if (codes == NULL) {
		fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
		return;
	}
	while (i < p->n_entries && mqtt_sub_next(p, &pos, &fb, &o)) {
		char *buf = bin_dup(fb), *group, *filter;
		int rc;

		codes[i] = MQTT_RC_UNSPECIFIED;
		if (buf != NULL && split_share(buf, &group, &filter) == 0) {
			rc = api->unsubscribe(s->cl, filter, group);
			if (rc == PMQ_OK) {
				codes[i] = 0;
				session_sub_del(s, filter, group);
			} else if (rc == PMQ_ERR_NOTFOUND) {
				codes[i] = MQTT_RC_NO_SUBSCRIPTION_EXISTED;
			}
		} else if (buf != NULL) {
			codes[i] = MQTT_RC_TOPIC_FILTER_INVALID;
		}
		free(buf);
		i++;
	}
	if (s->expiry_ms != 0) {
		/* Persistent: the UNSUBACK waits for the removal's write. */
		struct mqtt_wait *w = wait_new(mc, MQTT_UNSUBACK, p->pid,
		                               codes, p->n_entries);

		free(codes);
		if (w == NULL) {
			fail(mc, MQTT_RC_IMPL_SPECIFIC, "out of memory");
			return;
		}
		w->waits++;
		wait_add(w, session_save_wait(s, wait_done, w));
		wait_step(w);
		return;
	}
	mqtt_buf_begin(&ob);
	mqtt_put_u16(&ob, p->pid);
	if (mc->version == MQTT_V5) {
		mqtt_put_varint(&ob, 0);
		mqtt_put(&ob, codes, p->n_entries);
	}
	off = mqtt_buf_finish(&ob, MQTT_UNSUBACK << 4, 0);
	free(codes);
	send_ob(mc, off);
}

/* ---- keepalive ---- */

static void
ka_link(struct mqtt_conn *mc)
{
	if (mc->ka_pprev != NULL)
		return;
	if (ka_list == NULL)
		api->timer_start(ka_timer, 1000, 1);
	mc->ka_next = ka_list;
	if (ka_list != NULL)
		ka_list->ka_pprev = &mc->ka_next;
	ka_list = mc;
	mc->ka_pprev = &ka_list;
}

static void
ka_unlink(struct mqtt_conn *mc)
{
	if (mc->ka_pprev == NULL)
		return;
	*mc->ka_pprev = mc->ka_next;
	if (mc->ka_next != NULL)
		mc->ka_next->ka_pprev = mc->ka_pprev;
	mc->ka_next = NULL;
	mc->ka_pprev = NULL;
	/* An idle daemon need not wake every second. */
	if (ka_list == NULL)
		api->timer_stop(ka_timer);
}

/* Close mc when its deadline passed.  The check runs once a second, so a
 * connection goes between its limit and a second later (Mosquitto's
 * granularity too). */
static void
ka_check(struct mqtt_conn *mc, int64_t now)
{
	uint32_t idle = (uint32_t)now - mc->last_rx_ms; /* wrap-safe */

	if (mc->c == NULL || mc->closing) {
		ka_unlink(mc);
		return;
	}
	if (!mc->connected) {
		if (idle < (uint32_t)MQTT_CONNECT_TIMEOUT_MS)
			return;
		api->log(mc->l->inst, PMQ_LOG_INFO,
		         "%s: no CONNECT within %d s, closing", conn_name(mc),
		         MQTT_CONNECT_TIMEOUT_MS / 1000);
		mc->closing = 1;
		ka_unlink(mc);
		api->conn_close(mc->c, 0);
		return;
	}
	/* 3.1.2.10: one and a half times the keep alive. */
	if (idle < (uint32_t)mc->keepalive_s * 1500u)
		return;
	if ((mc->paused || mc->in_blocked) && api->conn_input_len(mc->c) > 0) {
		/* It did send: we are the ones not reading (a full
		 * subscriber holds this publisher back), so it is not idle. */
		mc->last_rx_ms = (uint32_t)now;
		return;
	}
	api->log(mc->l->inst, PMQ_LOG_INFO,
	         "%s (%s): keepalive timeout, closing", conn_name(mc),
	         mc->s != NULL ? mc->s->id : "-");
	if (mc->version == MQTT_V5)
		send_ob(mc, mqtt_enc_disconnect(&ob, MQTT_V5,
		                                MQTT_RC_KEEPALIVE_TIMEOUT, NULL));
	mc->closing = 1;
	ka_unlink(mc);
	api->conn_close(mc->c, 1);
}

static void
ka_tick(void *arg)
{
	struct mqtt_conn *mc, *next;
	int64_t now = api->monotonic_ms();

	(void)arg;
	/* conn_close never runs conn_closed from inside the call, so only
	 * the entry checked can leave the list here. */
	for (mc = ka_list; mc != NULL; mc = next) {
		next = mc->ka_next;
		ka_check(mc, now);
	}
	if (ob.cap > MQTT_OB_KEEP) {
		mqtt_buf_free(&ob);
		mqtt_buf_init(&ob);
	}
}

/* ---- CONNECT ---- */

static void
handle_connect(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_listener *l = mc->l;
	struct mqtt_session *s;
	struct mqtt_buf pb;
	char idbuf[40];
	const char *id = (const char *)p->client_id.p;
	size_t id_len = p->client_id.len;
	int assigned = 0, present = 0, err = PMQ_OK;
	int64_t expiry;
	pmq_msg *will = NULL;
	struct mqtt_wait *cw;
	uint16_t server_ka = 0;
	long off;

	mc->version = p->version;
	mc->problem_info = p->props.request_problem_info;
	if (!l->allow_anonymous) {
		refuse(mc, p->version, MQTT_RC_NOT_AUTHORIZED,
		       "not authorized (allow_anonymous is false)");
		return;
	}
	if (MQTT_HAS_PROP(&p->props, MQTT_P_AUTH_METHOD)) {
		refuse(mc, p->version, MQTT_RC_BAD_AUTH_METHOD,
		       "no enhanced authentication");
		return;
	}
	if (id_len == 0) {
		if (p->version == MQTT_V31 ||
		    (p->version == MQTT_V311 && !p->clean_start)) {
			refuse(mc, p->version, MQTT_RC_CLIENTID_INVALID,
			       "empty client id needs a clean session");
			return;
		}
		snprintf(idbuf, sizeof idbuf, "auto-%016" PRIx64 "%04x",
		         api->conn_id(mc->c) ^ (uint64_t)api->now_ms(),
		         (unsigned)(rand() & 0xffff));
		id = idbuf;
		id_len = strlen(idbuf);
		assigned = 1;
	}
	if (p->keepalive > l->max_keepalive) {
		if (p->version != MQTT_V5) {
			refuse(mc, p->version, MQTT_RC_CLIENTID_INVALID,
			       "keepalive over max_keepalive");
			return;
		}
		server_ka = l->max_keepalive;
	}
	if (p->will_flag) {
		if (p->will_retain && !l->retain_available) {
			refuse(mc, p->version, MQTT_RC_RETAIN_NOT_SUPPORTED,
			       "retain not available");
			return;
		}
		will = build_msg(&p->will_props, p->will_topic, p->will_payload,
		                 p->will_qos, p->will_retain,
		                 (int64_t)p->will_props.will_delay * 1000, &err);
		if (will == NULL) {
			refuse(mc, p->version, MQTT_RC_TOPIC_NAME_INVALID,
			       "bad will");
			return;
		}
	}
	/* Session expiry: 3.1.1 persistent sessions use
	 * persistent_client_expiration; v5 says its own, capped by it. */
	if (p->version == MQTT_V5)
		expiry = p->props.session_expiry == 0xffffffffu ?
		             -1 : (int64_t)p->props.session_expiry * 1000;
	else
		expiry = p->clean_start ? 0 : -1;
	if (expiry != 0 && l->persistent_client_expiration_ms >= 0 &&
	    (expiry < 0 || expiry > l->persistent_client_expiration_ms))
		expiry = l->persistent_client_expiration_ms;

	s = session_find(id, id_len);
	if (s != NULL && s->mc != NULL) {
		/* Takeover (3.1.4-3): the old connection goes. */
		struct mqtt_conn *old = s->mc;

		api->log(l->inst, PMQ_LOG_INFO,
		         "client %s: taken over by %s, closing %s", s->id,
		         conn_name(mc), conn_name(old));
		if (old->version == MQTT_V5 && old->c != NULL && !old->closing)
			send_ob(old, mqtt_enc_disconnect(
			                 &ob, MQTT_V5,
			                 MQTT_RC_SESSION_TAKEN_OVER, NULL));
		if (old->c != NULL && !old->closing) {
			old->closing = 1;
			api->conn_close(old->c, 1);
		}
		old->s = NULL;
		session_detach(s, 0);
		s = session_find(id, id_len); /* it may have ended */
	}
	if (s != NULL && p->clean_start) {
		session_end(s, 1);
		s = NULL;
	}
	if (s != NULL) {
		present = 1;
	} else {
		s = session_new(l, id, id_len);
		if (s == NULL) {
			if (will != NULL)
				api->msg_unref(will);
			refuse(mc, p->version, MQTT_RC_SERVER_UNAVAILABLE,
			       "out of memory");
			return;
		}
	}
	mc->keepalive_s = server_ka != 0 ? server_ka : p->keepalive;
	mc->client_receive_max = MQTT_HAS_PROP(&p->props, MQTT_P_RECEIVE_MAX) ?
	                             p->props.receive_max : 65535;
	mc->client_max_packet = p->props.max_packet_size;
	mc->client_alias_max = p->props.topic_alias_max;
	if (mc->client_alias_max > 0) {
		unsigned n = mc->client_alias_max < MQTT_OUT_ALIAS_CAP ?
		                 mc->client_alias_max : MQTT_OUT_ALIAS_CAP;

		mc->out_alias = calloc(n, sizeof *mc->out_alias);
		if (mc->out_alias == NULL)
			mc->client_alias_max = 0;
	}
	session_attach(s, mc);
	mc->s = s;
	s->expiry_ms = expiry;
	/* A persistent session's will: CONNACK waits for its write. */
	cw = will != NULL && expiry != 0 ?
	         wait_new(mc, MQTT_CONNACK, 0, NULL, 0) : NULL;
	if (cw != NULL) {
		cw->waits++;
		wait_add(cw, session_set_will(s, will, p->will_props.will_delay,
		                              wait_done, cw));
	} else {
		session_set_will(s, will, p->will_props.will_delay, NULL,
		                 NULL);
	}

	mqtt_buf_init(&pb);
	if (p->version == MQTT_V5) {
		if (assigned)
			mqtt_prop_str(&pb, MQTT_P_ASSIGNED_CLIENT_ID, id, id_len);
		if (p->props.session_expiry != 0 &&
		    (expiry < 0 ? 0xffffffffu : (uint32_t)(expiry / 1000)) !=
		        p->props.session_expiry)
			mqtt_prop_u32(&pb, MQTT_P_SESSION_EXPIRY,
			              expiry < 0 ? 0xffffffffu :
			                           (uint32_t)(expiry / 1000));
		mqtt_prop_u16(&pb, MQTT_P_RECEIVE_MAX, l->max_inflight);
		if (l->max_packet_size != 0)
			mqtt_prop_u32(&pb, MQTT_P_MAX_PACKET_SIZE,
			              l->max_packet_size);
		mqtt_prop_u16(&pb, MQTT_P_TOPIC_ALIAS_MAX, l->topic_alias_max);
		if (!l->retain_available)
			mqtt_prop_u8(&pb, MQTT_P_RETAIN_AVAILABLE, 0);
		if (server_ka != 0)
			mqtt_prop_u16(&pb, MQTT_P_SERVER_KEEPALIVE, server_ka);
	}
	if (cw != NULL) {
		/* Deliveries and resends go after it until it leaves. */
		mc->connack_wait = 1;
		cw->present = (uint8_t)present;
		cw->props = pb;
		mqtt_buf_init(&pb);
	} else {
		send_connack(mc, p->version, present, 0, &pb);
	}
	mqtt_buf_free(&pb);
	mc->connected = 1;
	mqtt_stat_connected++;
	api->log(l->inst, PMQ_LOG_DEBUG,
	         "%s: client %s connected (MQTT %s, keepalive %u, %s)",
	         conn_name(mc), s->id,
	         p->version == MQTT_V5 ? "5" : p->version == MQTT_V311 ? "3.1.1"
	                                                               : "3.1",
	         (unsigned)mc->keepalive_s, present ? "resumed" : "new session");
	if (mc->keepalive_s == 0)
		ka_unlink(mc); /* no deadline any more */
	session_save(s);
	if (present)
		session_resend(s);
	session_pump(s);
	if (cw != NULL)
		wait_step(cw);
	(void)off;
}

/* ---- DISCONNECT ---- */

static void
handle_disconnect(struct mqtt_conn *mc, struct mqtt_packet *p)
{
	struct mqtt_session *s = mc->s;

	if (mc->version == MQTT_V5 &&
	    MQTT_HAS_PROP(&p->props, MQTT_P_SESSION_EXPIRY)) {
		int64_t e = p->props.session_expiry == 0xffffffffu ?
		                -1 : (int64_t)p->props.session_expiry * 1000;

		if (s->expiry_ms == 0 && e != 0) {
			fail(mc, MQTT_RC_PROTOCOL,
			     "session expiry set at DISCONNECT after 0");
			return;
		}
		if (e != 0 && mc->l->persistent_client_expiration_ms >= 0 &&
		    (e < 0 || e > mc->l->persistent_client_expiration_ms))
			e = mc->l->persistent_client_expiration_ms;
		s->expiry_ms = e;
	}
	mc->disconnected = 1;
	mc->will_on_disconnect =
	    mc->version == MQTT_V5 && p->reason == MQTT_RC_DISCONNECT_WITH_WILL;
	mc->closing = 1;
	api->conn_close(mc->c, 1);
}

/* ---- framing and dispatch ---- */

static void
dispatch(struct mqtt_conn *mc, const uint8_t *buf, size_t len)
{
	struct mqtt_packet p;
	uint8_t reason;

	if (mqtt_decode(buf, len, mc->version, &p, &reason) != PMQ_OK) {
		if (mc->version == 0) {
			/* CONNECT stage: a v5 CONNECT gets a CONNACK with the
			 * reason, 3.1.1 one for an unknown level. */
			uint8_t lvl = p.type == MQTT_CONNECT ? p.proto_level : 0;

			mqtt_stat_bad_packets++;
			if (reason == MQTT_RC_UNSUPPORTED_VERSION) {
				refuse(mc, lvl == MQTT_V5 ? MQTT_V5 : MQTT_V311,
				       reason, "unsupported protocol version");
				return;
			}
			if (lvl == MQTT_V5) {
				refuse(mc, MQTT_V5, reason, "bad CONNECT");
				return;
			}
			api->log(mc->l->inst, PMQ_LOG_INFO,
			         "%s: bad first packet (type %u, 0x%02x), closing",
			         conn_name(mc), (unsigned)(buf[0] >> 4), reason);
			mc->closing = 1;
			api->conn_close(mc->c, 0);
			return;
		}
		fail(mc, reason, "bad packet (type %u)",
		     (unsigned)(buf[0] >> 4));
		return;
	}
	mc->last_rx_ms = (uint32_t)api->monotonic_ms();
	switch (p.type) {
	case MQTT_CONNECT:
		handle_connect(mc, &p);
		break;
	case MQTT_PUBLISH:
		handle_publish(mc, &p);
		break;
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBREL:
	case MQTT_PUBCOMP:
		handle_ack(mc, &p);
		break;
	case MQTT_SUBSCRIBE:
		handle_subscribe(mc, &p);
		break;
	case MQTT_UNSUBSCRIBE:
		handle_unsubscribe(mc, &p);
		break;
	case MQTT_PINGREQ:
		send_ob(mc, mqtt_enc_simple(&ob, MQTT_PINGRESP));
		break;
	case MQTT_DISCONNECT:
		handle_disconnect(mc, &p);
		break;
	case MQTT_AUTH:
		fail(mc, MQTT_RC_PROTOCOL, "AUTH without an auth method");
		break;
	default:
		fail(mc, MQTT_RC_PROTOCOL, "unexpected packet");
		break;
	}
}

static void
pause_conn(struct mqtt_conn *mc)
{
	if (!mc->paused) {
		mc->paused = 1;
		api->conn_pause(mc->c);
	}
}

/* Pause reading while our own output is full or too many publishes wait
 * for completion; lift the pause once neither holds.  0: paused. */
static int
may_read(struct mqtt_conn *mc)
{
	if (api->conn_output_full(mc->c) || mc->pending >= MQTT_MAX_PENDING) {
		pause_conn(mc);
		return 0;
	}
	if (mc->paused) {
		mc->paused = 0;
		api->conn_resume(mc->c);
	}
	return 1;
}

static void
parse_loop(struct mqtt_conn *mc)
{
	uint32_t max = mc->l->max_packet_size;

	/* After conn_block_input the rest of the input waits: the
	 * overshoot into a full subscriber stays one packet per publisher. */
	while (!mc->closing && mc->c != NULL && !mc->in_blocked) {
		size_t avail, total = 0;
		const uint8_t *buf;
		uint8_t reason = 0;
		int rc;

		if (!may_read(mc))
			return;
		avail = api->conn_input_len(mc->c);
		if (avail == 0)
			return;
		buf = api->conn_input_peek(mc->c, avail < 5 ? avail : 5);
		if (buf == NULL)
			return;
		rc = mqtt_frame(buf, avail < 5 ? avail : 5, max, &total,
		                &reason);
		if (rc == PMQ_ERR_AGAIN)
			return;
		if (rc != PMQ_OK) {
			if (mc->version == 0) {
				mqtt_stat_bad_packets++;
				api->log(mc->l->inst, PMQ_LOG_INFO,
				         "%s: bad first packet (0x%02x), "
				         "closing", conn_name(mc), reason);
				mc->closing = 1;
				api->conn_close(mc->c, 0);
			} else {
				fail(mc, reason, "%s",
				     reason == MQTT_RC_PACKET_TOO_LARGE ?
				         "packet too large" :
				         "bad remaining length");
			}
			return;
		}
		if (avail < total)
			return;
		buf = api->conn_input_peek(mc->c, total);
		if (buf == NULL)
			return;
		dispatch(mc, buf, total);
		if (mc->c == NULL)
			return;
		api->conn_input_drain(mc->c, total);
	}
}

static void
parse(struct mqtt_conn *mc)
{
	if (mc->parsing)
		return;
	if (!mc->in_input) {
		/* Outside conn_input (a publish completed, the output
		 * drained): only lift our pause.  The host then runs
		 * conn_input for buffered input on a fresh loop turn, where
		 * deliveries know their publisher (conn_block_input). */
		if (mc->paused && mc->c != NULL && !mc->closing)
			(void)may_read(mc);
		return;
	}
	mc->parsing = 1;
	parse_loop(mc);
	mc->parsing = 0;
}

/* ---- transport ops ---- */

static void *
mqtt_create(pmq_instance *inst)
{
	struct mqtt_listener *l = calloc(1, sizeof *l);

	if (l == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	l->inst = inst;
	l->max_packet_size = 0;
	l->max_inflight = 20;
	l->max_queued = 1000;
	l->max_queued_bytes = 0;
	l->max_keepalive = 65535;
	l->topic_alias_max = 10;
	l->allow_anonymous = 1;
	l->retain_available = 1;
	l->persistent_client_expiration_ms = -1;
	l->sys_interval_s = 10;
	l->qos0_block = 1;
	l->queue_block = 1;
	n_listeners++;
	return l;
}

static int
mqtt_configure(void *st, const char *key, const char *value, char *err,
               size_t err_len)
{
	struct mqtt_listener *l = st;
	uint64_t size;
	int64_t n;
	int b;

	if (strcmp(key, "max_packet_size") == 0) {
		if (api->cfg_size(value, &size) != PMQ_OK ||
		    (size != 0 && size < 20) || size > 268435460u) {
			snprintf(err, err_len, "max_packet_size: want 0 (the "
			         "protocol's limit) or a size from 20 to 256M");
			return PMQ_ERR_CONFIG;
		}
		l->max_packet_size = (uint32_t)size;
		return PMQ_OK;
	}
	if (strcmp(key, "max_inflight_messages") == 0) {
		if (api->cfg_int(value, 1, 65535, &n) != PMQ_OK) {
			snprintf(err, err_len, "max_inflight_messages: want an "
			         "integer from 1 to 65535");
			return PMQ_ERR_CONFIG;
		}
		l->max_inflight = (uint16_t)n;
		return PMQ_OK;
	}
	if (strcmp(key, "max_queued_messages") == 0) {
		if (api->cfg_int(value, 1, 10000000, &n) != PMQ_OK) {
			snprintf(err, err_len, "max_queued_messages: want an "
			         "integer from 1 to 10000000");
			return PMQ_ERR_CONFIG;
		}
		l->max_queued = (uint32_t)n;
		return PMQ_OK;
	}
	if (strcmp(key, "max_queued_bytes") == 0) {
		if (api->cfg_size(value, &size) != PMQ_OK) {
			snprintf(err, err_len, "max_queued_bytes: want a size "
			         "(0 = no byte limit)");
			return PMQ_ERR_CONFIG;
		}
		l->max_queued_bytes = size;
		return PMQ_OK;
	}
	if (strcmp(key, "max_keepalive") == 0) {
		if (api->cfg_int(value, 10, 65535, &n) != PMQ_OK) {
			snprintf(err, err_len, "max_keepalive: want seconds "
			         "from 10 to 65535");
			return PMQ_ERR_CONFIG;
		}
		l->max_keepalive = (uint16_t)n;
		return PMQ_OK;
	}
	if (strcmp(key, "allow_anonymous") == 0) {
		if (api->cfg_bool(value, &b) != PMQ_OK) {
			snprintf(err, err_len, "allow_anonymous: want true or "
			         "false");
			return PMQ_ERR_CONFIG;
		}
		l->allow_anonymous = b;
		return PMQ_OK;
	}
	if (strcmp(key, "retain_available") == 0) {
		if (api->cfg_bool(value, &b) != PMQ_OK) {
			snprintf(err, err_len, "retain_available: want true or "
			         "false");
			return PMQ_ERR_CONFIG;
		}
		l->retain_available = b;
		return PMQ_OK;
	}
	if (strcmp(key, "persistent_client_expiration") == 0) {
		if (api->cfg_duration_ms(value, &n) != PMQ_OK ||
		    (n < 1000 && n != -1)) {
			snprintf(err, err_len, "persistent_client_expiration: "
			         "want a duration of at least 1s, or -1");
			return PMQ_ERR_CONFIG;
		}
		l->persistent_client_expiration_ms = n;
		return PMQ_OK;
	}
	if (strcmp(key, "sys_interval") == 0) {
		/* Mosquitto's bare seconds ("10"), or a duration ("10s"). */
		if (api->cfg_int(value, 0, 86400, &n) != PMQ_OK &&
		    (api->cfg_duration_ms(value, &n) != PMQ_OK || n < 0 ||
		     n % 1000 != 0 || (n /= 1000) > 86400)) {
			snprintf(err, err_len, "sys_interval: want whole seconds "
			         "from 0 (off) to 86400 (\"10\" or \"10s\")");
			return PMQ_ERR_CONFIG;
		}
		l->sys_interval_s = n;
		return PMQ_OK;
	}
	if (strcmp(key, "qos0_full") == 0 || strcmp(key, "queue_full") == 0) {
		uint8_t block;

		if (strcmp(value, "block") == 0) {
			block = 1;
		} else if (strcmp(value, "drop") == 0) {
			block = 0;
		} else {
			snprintf(err, err_len, "%s: want block or drop", key);
			return PMQ_ERR_CONFIG;
		}
		if (strcmp(key, "qos0_full") == 0)
			l->qos0_block = block;
		else
			l->queue_block = block;
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

static int
mqtt_start(void *st)
{
	struct mqtt_listener *l = st;

	sessions_load(l);
	sys_start(l);
	return PMQ_OK;
}

static void
mqtt_stop(void *st)
{
	sys_stop(st);
}

static void
mqtt_destroy(void *st)
{
	free(st);
	/* Sessions, the keepalive timer and the encode buffer are shared by
	 * the listeners: the last one frees them. */
	if (--n_listeners == 0) {
		sessions_free_all();
		if (ka_timer != NULL) {
			api->timer_free(ka_timer);
			ka_timer = NULL;
		}
		ka_list = NULL;
		mqtt_buf_free(&ob);
		mqtt_buf_init(&ob);
	}
}

static void *
mqtt_conn_open(void *st, pmq_conn *c)
{
	struct mqtt_listener *l = st;
	struct mqtt_conn *mc = calloc(1, sizeof *mc);

	if (mc == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: out of memory",
		         __func__, api->conn_peer(c));
		return NULL;
	}
	mc->l = l;
	mc->c = c;
	mc->refs = 1;
	mc->problem_info = 1;
	if (ka_timer == NULL &&
	    (ka_timer = api->timer_new(ka_tick, NULL)) == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: no timer",
		         __func__, api->conn_peer(c));
		free(mc);
		return NULL;
	}
	mc->last_rx_ms = (uint32_t)api->monotonic_ms();
	ka_link(mc); /* the CONNECT deadline */
	return mc;
}

static void
mqtt_conn_input(void *st, void *cs, pmq_conn *c)
{
	struct mqtt_conn *mc = cs;
	struct mqtt_conn *outer = cur_input;

	(void)st;
	if (mc->closing) {
		api->conn_input_drain(c, api->conn_input_len(c));
		return;
	}
	/* The host reads us again: a block (if any) is over. */
	mc->in_blocked = 0;
	mc->in_input = 1;
	cur_input = mc;
	parse(mc);
	cur_input = outer;
	mc->in_input = 0;
}

int
mqtt_block_publisher(struct mqtt_conn *sub)
{
	struct mqtt_listener *l = sub->l;
	size_t len = api->conn_output_len(sub->c);

	/* Past about twice output_high_water the message is dropped after
	 * all: each blocked publisher adds one packet, and many publishers
	 * (or huge packets) must not grow the output without bound.  The
	 * host keeps the mark; full_len_min approaches it from above. */
	if (l->full_len_min == 0 || len < l->full_len_min)
		l->full_len_min = len;
	if (len / 2 > l->full_len_min)
		return 0;
	if (!PMQ_HAS(api, struct pmq_host_api, conn_block_input) ||
	    api->conn_block_input == NULL ||
	    api->conn_block_input(sub->c) == 0)
		return 0;
	if (cur_input != NULL)
		cur_input->in_blocked = 1;
	return 1;
}

static void
mqtt_conn_drained(void *st, void *cs, pmq_conn *c)
{
	struct mqtt_conn *mc = cs;

	(void)st;
	(void)c;
	if (mc->closing)
		return;
	if (mc->s != NULL)
		session_pump(mc->s);
	parse(mc);
}

static void
mqtt_conn_closed(void *st, void *cs, int reason)
{
	struct mqtt_conn *mc = cs;
	uint16_t i;

	(void)st;
	ka_unlink(mc);
	if (mc->connected)
		mqtt_stat_connected--;
	mc->closing = 1;
	if (mc->s != NULL) {
		struct mqtt_session *s = mc->s;

		if (!mc->disconnected && reason != PMQ_CLOSE_SHUTDOWN)
			api->log(mc->l->inst, PMQ_LOG_DEBUG,
			         "%s: client %s gone without DISCONNECT",
			         conn_name(mc), s->id);
		mc->c = NULL;
		session_detach(s, reason == PMQ_CLOSE_SHUTDOWN);
		mc->s = NULL;
	}
	for (i = 0; i < mc->n_out_alias; i++)
		free(mc->out_alias[i]);
	free(mc->out_alias);
	mc->out_alias = NULL;
	if (mc->in_alias != NULL) {
		for (i = 0; i < mc->l->topic_alias_max; i++)
			free(mc->in_alias[i]);
		free(mc->in_alias);
		mc->in_alias = NULL;
	}
	mc->c = NULL;
	conn_unref(mc);
}

static void
mqtt_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	(void)st;
	session_deliver(udata, m, d);
}

static const struct pmq_transport_ops mqtt_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = mqtt_create,
	.configure = mqtt_configure,
	.start = mqtt_start,
	.stop = mqtt_stop,
	.destroy = mqtt_destroy,
	.conn_open = mqtt_conn_open,
	.conn_input = mqtt_conn_input,
	.conn_drained = mqtt_conn_drained,
	.conn_closed = mqtt_conn_closed,
	.deliver = mqtt_deliver,
};

static int
mqtt_init(const struct pmq_host_api *host)
{
	api = host;
	return PMQ_OK;
}

/* Not MULTI_LOOP_SAFE: the session table and counters are global. */
PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "mqtt", MQTT_PLUGIN_VERSION,
                  "MQTT 3.1, 3.1.1 and 5.0 (Mosquitto-compatible)", 0,
                  mqtt_init, NULL, &mqtt_ops);
