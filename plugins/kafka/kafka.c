/*
 * kafka.c - the Kafka-protocol transport: descriptor, config keys,
 * connection framing (4-byte size prefix, bounded by
 * socket_request_max_bytes) and request dispatch with one reply slot per
 * request, so answers leave in request order as Kafka requires.  The APIs
 * live in handlers.c (logs, topics, producers) and group.c (consumer
 * groups, committed offsets); the wire codec in codec.c.  docs/kafka.md
 * is the user-facing description.
 *
 * Threads: every function here runs on the host's loop thread (host.h).
 *
 * ABI: built against 1.2 but stamped to require 1.0 only; the 1.1 members
 * (has_subscribers, slot_send_ref, log_read_ref/unref) and the 1.2 ones
 * (log_read_stored, slot_send_stored: Fetch answers leave the segment
 * files with sendfile) are used when PMQ_HAS finds them (kafka_init), and
 * a 1.0 host gets the copying paths.
 */
/* Before any plexmq header: PMQ_PLUGIN_DEFINE stamps the minor required. */
#define PMQ_TARGET_ABI_MINOR 0

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"

/* Defaults of the config keys (docs/kafka.md "Configuration"). */
#define KAFKA_REQUEST_MAX_DEFAULT ((uint64_t)100 * 1024 * 1024)
#define KAFKA_MESSAGE_MAX_DEFAULT ((uint64_t)1048588) /* Kafka's */
#define KAFKA_GROUP_DELAY_DEFAULT 3000
#define KAFKA_MIN_SESSION_DEFAULT 6000
#define KAFKA_MAX_SESSION_DEFAULT 1800000
#define KAFKA_PORT_DEFAULT 9092
/* Requests in flight per connection before we stop parsing its input. */
#define KAFKA_MAX_PENDING 1024
/* Input copied per view (kafka_copy_input): about one socket read. */
#define KAFKA_COPY_STEP ((size_t)16384)

const struct pmq_host_api *kafka_api;
int kafka_has_subs_api;
int kafka_ref_api;
int kafka_stored_api;
#define api kafka_api

static void kafka_parse(struct kconn *kc);

/* ---- connections and requests ---- */

static void
kconn_unref(struct kconn *kc)
{
	assert(kc->refs > 0);
	if (--kc->refs == 0)
		free(kc);
}

/*
 * Write this broker's address (host string, port int32) as Metadata and
 * FindCoordinator announce it: advertised_host/advertised_port when set,
 * else the local address the client connected to, so a listener on an
 * ephemeral or wildcard address still sends clients back to itself.
 */
void
kreq_write_broker(struct kreq *r)
{
	const struct kafka_listener *l = r->l;
	char host[128];
	const char *local, *colon;
	int32_t port = l->adv_port;
	size_t n;

	host[0] = '\0';
	local = r->kc->c != NULL ? api->conn_local(r->kc->c) : NULL;
	if (local != NULL && (colon = strrchr(local, ':')) != NULL) {
		const char *h = local;

		n = (size_t)(colon - local);
		if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
			h++;
			n -= 2;
		}
		if (n < sizeof host) {
			memcpy(host, h, n);
			host[n] = '\0';
		}
		if (port < 0)
			port = (int32_t)strtol(colon + 1, NULL, 10);
	}
	if (port <= 0)
		port = KAFKA_PORT_DEFAULT;
	kc_w_str(&r->w, l->adv_host != NULL ? l->adv_host :
	    host[0] != '\0' ? host : "127.0.0.1");
	kc_w_i32(&r->w, port);
}

int
kreq_alive(const struct kreq *r)
{
	return r->kc->c != NULL && !r->kc->closing;
}

/* Drop the refs nobody sent (an error path, or no connection). */
static void
kreq_free_refs(struct kreq *r)
{
	size_t i;

	for (i = 0; i < r->n_refs; i++)
		if (r->refs[i].ref != NULL)
			api->log_read_unref(r->refs[i].ref);
	free(r->refs);
	r->refs = NULL;
	r->n_refs = r->cap_refs = 0;
	r->ref_bytes = 0;
}

int
kreq_add_ref(struct kreq *r, const void *data, size_t len, void *ref)
{
	assert(kafka_ref_api);
	if (r->n_refs == r->cap_refs) {
		size_t ncap = r->cap_refs ? r->cap_refs * 2 : 8;
		struct kref *n = realloc(r->refs, ncap * sizeof *n);

		if (n == NULL) {
			api->log_read_unref(ref);
			return -1;
		}
		r->refs = n;
		r->cap_refs = ncap;
	}
	r->refs[r->n_refs].at = r->w.len;
	r->refs[r->n_refs].data = data;
	r->refs[r->n_refs].len = len;
	r->refs[r->n_refs].ref = ref;
	r->n_refs++;
	r->ref_bytes += len;
	return 0;
}

static void
kreq_free(struct kreq *r)
{
	struct kconn *kc = r->kc;

	assert(!r->parked);
	if (r->slot != NULL)
		api->slot_close(r->slot);
	if (r->free_state != NULL)
		r->free_state(r);
	kreq_free_refs(r);
	kc_w_free(&r->w);
	kc_arena_free(&r->arena);
	free(r->frame);
	free(r);
	kc->pending--;
	/* A parse stopped at KAFKA_MAX_PENDING resumes now. */
	if (kc->c != NULL && kc->paused && !kc->closing)
		kafka_parse(kc);
	kconn_unref(kc);
}

/*
 * The response into r's slot: writer bytes up to each ref's offset, then
 * the ref's stored bytes by reference.  Every ref is handed to the host
 * (slot_send_ref releases it, also on failure) or released here.
 */
static int
kreq_send(struct kreq *r)
{
	size_t pos = 0, i;
	int rc = PMQ_OK;

	for (i = 0; i < r->n_refs; i++) {
		struct kref *k = &r->refs[i];
		void *ref = k->ref;

		k->ref = NULL;
		if (rc == PMQ_OK && k->at > pos)
			rc = api->slot_send(r->slot, r->w.buf + pos, k->at - pos);
		if (rc == PMQ_OK && k->data == NULL)
			rc = api->slot_send_stored(r->slot, ref);
		else if (rc == PMQ_OK)
			rc = api->slot_send_ref(r->slot, k->data, k->len,
			                        api->log_read_unref, ref);
		else
			api->log_read_unref(ref);
		pos = k->at;
	}
	if (rc == PMQ_OK && r->w.len > pos)
		rc = api->slot_send(r->slot, r->w.buf + pos, r->w.len - pos);
	return rc;
}

void
kreq_reply(struct kreq *r)
{
	/* The size prefix covers the spliced bytes too: they are all known
	 * by now, so it is written before the first byte leaves. */
	if (!r->w.err && r->w.len >= 4) {
		size_t body = r->w.len - 4 + r->ref_bytes;

		if (body > INT32_MAX)
			r->w.err = 1;
		else
			kc_w_put_i32_at(&r->w, 0, (int32_t)body);
	}
	if (r->w.err) {
		/* Half an answer cannot be framed: the client must
		 * reconnect rather than wait for it. */
		if (r->kc->c != NULL) {
			api->log(r->l->inst, PMQ_LOG_ERROR,
			         "%s: out of memory encoding a response, closing",
			         api->conn_peer(r->kc->c));
			r->kc->closing = 1;
			api->conn_close(r->kc->c, 1);
		}
	} else if (r->slot != NULL && r->kc->c != NULL) {
		if (r->n_refs == 0)
			api->slot_send(r->slot, r->w.buf, r->w.len);
		else if (kreq_send(r) != PMQ_OK) {
			/* Part of a frame is queued: the stream is broken. */
			api->log(r->l->inst, PMQ_LOG_ERROR,
			         "%s: out of memory sending a response, closing",
			         api->conn_peer(r->kc->c));
			r->kc->closing = 1;
			api->conn_close(r->kc->c, 1);
		}
	}
	kreq_free(r);
}

void
kreq_drop(struct kreq *r)
{
	kreq_free(r);
}

void
kreq_park(struct kreq *r, void (*cancel)(struct kreq *r))
{
	struct kconn *kc = r->kc;

	assert(!r->parked);
	r->cancel = cancel;
	r->parked = 1;
	r->wprev = NULL;
	r->wnext = kc->waiting;
	if (kc->waiting != NULL)
		kc->waiting->wprev = r;
	kc->waiting = r;
}

void
kreq_unpark(struct kreq *r)
{
	struct kconn *kc = r->kc;

	if (!r->parked)
		return;
	if (r->wprev != NULL)
		r->wprev->wnext = r->wnext;
	else
		kc->waiting = r->wnext;
	if (r->wnext != NULL)
		r->wnext->wprev = r->wprev;
	r->wprev = r->wnext = NULL;
	r->parked = 0;
}

/* Stop parsing and close after what is queued: used when the stream can
 * no longer be trusted (malformed frame, unknown API). */
static void
kafka_fail(struct kconn *kc, const char *why, int16_t key, int16_t ver)
{
	api->log(kc->l->inst, PMQ_LOG_INFO,
	         "%s: %s (api %d v%d), closing", api->conn_peer(kc->c), why,
	         (int)key, (int)ver);
	kc->closing = 1;
	api->conn_close(kc->c, 1);
}

typedef void (*khandler)(struct kreq *r);

static khandler
kafka_handler(int16_t key)
{
	switch (key) {
	case KC_PRODUCE: return kh_produce;
	case KC_FETCH: return kh_fetch;
	case KC_LIST_OFFSETS: return kh_list_offsets;
	case KC_METADATA: return kh_metadata;
	case KC_OFFSET_COMMIT: return kg_offset_commit;
	case KC_OFFSET_FETCH: return kg_offset_fetch;
	case KC_FIND_COORDINATOR: return kg_find_coordinator;
	case KC_JOIN_GROUP: return kg_join_group;
	case KC_HEARTBEAT: return kg_heartbeat;
	case KC_LEAVE_GROUP: return kg_leave_group;
	case KC_SYNC_GROUP: return kg_sync_group;
	case KC_DESCRIBE_GROUPS: return kg_describe_groups;
	case KC_LIST_GROUPS: return kg_list_groups;
	case KC_API_VERSIONS: return kh_api_versions;
	case KC_CREATE_TOPICS: return kh_create_topics;
	case KC_DELETE_TOPICS: return kh_delete_topics;
	case KC_INIT_PRODUCER_ID: return kh_init_producer_id;
	default: return NULL;
	}
}

/* Decode and run one frame; takes ownership of frame.  Returns 0, or -1
 * when the connection failed. */
static int
kafka_dispatch(struct kconn *kc, uint8_t *frame, size_t len)
{
	struct kreq *r = calloc(1, sizeof *r);
	khandler h;
	int rc;

	if (r == NULL) {
		free(frame);
		kafka_fail(kc, "out of memory", -1, -1);
		return -1;
	}
	r->kc = kc;
	r->l = kc->l;
	r->frame = frame;
	r->frame_len = len;
	/* Decoded arrays may take a few times the frame: bound them. */
	r->arena.limit = KC_ARENA_DEFAULT_LIMIT;
	rc = kc_decode(frame, len, &r->arena, &r->q);
	if (rc == KC_UNSUPPORTED_VERSION && r->q.api_key == KC_API_VERSIONS) {
		/* Kafka's answer: v0 layout, error 35 and our versions, so
		 * the client retries lower.  Never close here: librdkafka
		 * would reconnect and send the same v3 forever. */
		struct kc_writer w;

		kc_api_versions_unsupported(&w, r->q.correlation_id);
		if (!w.err)
			api->conn_send(kc->c, w.buf, w.len, PMQ_SEND_ORDERED);
		kc_w_free(&w);
		kc_arena_free(&r->arena);
		free(frame);
		free(r);
		return 0;
	}
	if (rc != KC_OK) {
		/* As Kafka: a request it cannot parse (unknown key, version
		 * out of range, truncated body) closes the connection. */
		kafka_fail(kc, rc == KC_UNKNOWN_API ? "unknown api key" :
		           rc == KC_UNSUPPORTED_VERSION ? "unsupported version" :
		           rc == KC_NOMEM ? "request too complex" :
		           "malformed request",
		           r->q.api_key, r->q.api_version);
		kc_arena_free(&r->arena);
		free(frame);
		free(r);
		return -1;
	}
	h = kafka_handler(r->q.api_key);
	assert(h != NULL); /* kc_decode knows the same keys */
	/* acks=0 Produce gets no response at all, not even an empty one. */
	if (!(r->q.api_key == KC_PRODUCE && r->q.acks == 0)) {
		r->slot = api->slot_open(kc->c);
		if (r->slot == NULL) {
			kc_arena_free(&r->arena);
			free(frame);
			free(r);
			kafka_fail(kc, "out of memory", -1, -1);
			return -1;
		}
	}
	kc_response_begin(&r->w, &r->q);
	kc->refs++;
	kc->pending++;
	h(r);
	return 0;
}

static void
kafka_pause(struct kconn *kc)
{
	if (!kc->paused) {
		kc->paused = 1;
		api->conn_pause(kc->c);
	}
}

/*
 * Move n buffered input bytes into dst.  A view of a whole frame would
 * make the host pull it up into one new contiguous buffer first (for a
 * produce request, megabytes of freshly faulted pages, then copied again
 * here), so it is taken in steps that mostly lie within one input chunk.
 */
static void
kafka_copy_input(pmq_conn *c, uint8_t *dst, size_t n)
{
	while (n > 0) {
		size_t step = n < KAFKA_COPY_STEP ? n : KAFKA_COPY_STEP;
		const uint8_t *p = api->conn_input_peek(c, step);

		assert(p != NULL); /* the caller checked conn_input_len */
		memcpy(dst, p, step);
		api->conn_input_drain(c, step);
		dst += step;
		n -= step;
	}
}

static void
kafka_parse_loop(struct kconn *kc)
{
	const struct kafka_listener *l = kc->l;

	while (!kc->closing && kc->c != NULL) {
		const uint8_t *p;
		uint32_t size;
		uint8_t *frame;

		if (api->conn_output_full(kc->c) ||
		    kc->pending >= KAFKA_MAX_PENDING) {
			kafka_pause(kc);
			return;
		}
		if (kc->paused) {
			kc->paused = 0;
			api->conn_resume(kc->c);
		}
		p = api->conn_input_peek(kc->c, 4);
		if (p == NULL)
			return;
		size = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
		       (uint32_t)p[2] << 8 | p[3];
		/* A negative size reads as > INT32_MAX here. */
		if (size > l->request_max || size > INT32_MAX) {
			kafka_fail(kc, "request larger than "
			           "socket_request_max_bytes", -1, -1);
			return;
		}
		if (size < KC_HEADER_MIN) {
			kafka_fail(kc, "request shorter than a header", -1, -1);
			return;
		}
		if (api->conn_input_len(kc->c) < 4 + (size_t)size)
			return; /* wait for the rest */
		/* A private copy: decoded fields point into it while the
		 * request waits for storage, long after this input call. */
		frame = malloc(size);
		if (frame == NULL) {
			kafka_fail(kc, "out of memory", -1, -1);
			return;
		}
		api->conn_input_drain(kc->c, 4);
		kafka_copy_input(kc->c, frame, size);
		if (kafka_dispatch(kc, frame, size) != 0)
			return;
	}
}

static void
kafka_parse(struct kconn *kc)
{
	/* A handler may finish a request at once (kreq_free resumes
	 * parsing) and conn_send may call conn_drained: never nest. */
	if (kc->parsing)
		return;
	kc->parsing = 1;
	kc->refs++; /* a handler's failure must not free kc under us */
	kafka_parse_loop(kc);
	kc->parsing = 0;
	kconn_unref(kc);
}

/* ---- transport ops ---- */

static void *
kafka_create(pmq_instance *inst)
{
	struct kafka_listener *l = calloc(1, sizeof *l);

	if (l == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	l->inst = inst;
	/* adv_host NULL, adv_port -1: advertise the address each client
	 * connected to (host->conn_local). */
	l->adv_port = -1;
	l->auto_create = 1;
	l->default_partitions = 1;
	l->request_max = KAFKA_REQUEST_MAX_DEFAULT;
	l->message_max = KAFKA_MESSAGE_MAX_DEFAULT;
	l->group_delay_ms = KAFKA_GROUP_DELAY_DEFAULT;
	l->min_session_ms = KAFKA_MIN_SESSION_DEFAULT;
	l->max_session_ms = KAFKA_MAX_SESSION_DEFAULT;
	l->mqtt_deliver = 1;
	return l;
}

static int
kafka_cfg_int(const char *key, const char *value, int64_t min, int64_t max,
              int64_t *out, char *err, size_t err_len)
{
	if (api->cfg_int(value, min, max, out) != PMQ_OK) {
		snprintf(err, err_len, "%s: want an integer from %" PRId64
		         " to %" PRId64, key, min, max);
		return PMQ_ERR_CONFIG;
	}
	return PMQ_OK;
}

static int
kafka_cfg_duration(const char *key, const char *value, int64_t min,
                   int64_t max, int64_t *out, char *err, size_t err_len)
{
	if (api->cfg_duration_ms(value, out) != PMQ_OK || *out < min ||
	    *out > max) {
		snprintf(err, err_len, "%s: want a duration from %" PRId64
		         " ms to %" PRId64 " ms", key, min, max);
		return PMQ_ERR_CONFIG;
	}
	return PMQ_OK;
}

static int
kafka_configure(void *st, const char *key, const char *value, char *err,
                size_t err_len)
{
	struct kafka_listener *l = st;
	uint64_t size;
	int64_t n;
	int b, rc;

	if (strcmp(key, "advertised_host") == 0) {
		char *h;

		if (value[0] == '\0' || strlen(value) > 255) {
			snprintf(err, err_len, "advertised_host: want a host "
			         "name or address");
			return PMQ_ERR_CONFIG;
		}
		h = strdup(value);
		if (h == NULL)
			return PMQ_ERR_NOMEM;
		free(l->adv_host);
		l->adv_host = h;
		return PMQ_OK;
	}
	if (strcmp(key, "advertised_port") == 0) {
		rc = kafka_cfg_int(key, value, 1, 65535, &n, err, err_len);
		if (rc == PMQ_OK)
			l->adv_port = (int32_t)n;
		return rc;
	}
	if (strcmp(key, "auto_create_topics") == 0 ||
	    strcmp(key, "deliver_to_mqtt") == 0) {
		if (api->cfg_bool(value, &b) != PMQ_OK) {
			snprintf(err, err_len, "%s: want true or false", key);
			return PMQ_ERR_CONFIG;
		}
		if (key[0] == 'a')
			l->auto_create = b;
		else
			l->mqtt_deliver = b;
		return PMQ_OK;
	}
	if (strcmp(key, "default_partitions") == 0) {
		rc = kafka_cfg_int(key, value, 1, 10000, &n, err, err_len);
		if (rc == PMQ_OK)
			l->default_partitions = (int32_t)n;
		return rc;
	}
	if (strcmp(key, "socket_request_max_bytes") == 0 ||
	    strcmp(key, "message_max_bytes") == 0) {
		if (api->cfg_size(value, &size) != PMQ_OK || size < 1024 ||
		    size > (uint64_t)INT32_MAX) {
			snprintf(err, err_len, "%s: want a size from 1k to "
			         "2G-1", key);
			return PMQ_ERR_CONFIG;
		}
		if (key[0] == 's')
			l->request_max = size;
		else
			l->message_max = size;
		return PMQ_OK;
	}
	if (strcmp(key, "group_initial_rebalance_delay_ms") == 0)
		return kafka_cfg_duration(key, value, 0, 300000,
		                          &l->group_delay_ms, err, err_len);
	if (strcmp(key, "group_min_session_timeout_ms") == 0)
		return kafka_cfg_duration(key, value, 1, 3600000,
		                          &l->min_session_ms, err, err_len);
	if (strcmp(key, "group_max_session_timeout_ms") == 0)
		return kafka_cfg_duration(key, value, 1, 3600000,
		                          &l->max_session_ms, err, err_len);
	return PMQ_ERR_NOTFOUND;
}

static int
kafka_start(void *st)
{
	struct kafka_listener *l = st;

	if (l->min_session_ms > l->max_session_ms) {
		api->log(l->inst, PMQ_LOG_ERROR, "group_min_session_timeout_ms "
		         "is above group_max_session_timeout_ms");
		return PMQ_ERR_CONFIG;
	}
	l->groups = kg_new(l);
	l->producers = kp_new(l);
	if (l->groups == NULL || l->producers == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return PMQ_ERR_NOMEM;
	}
	return PMQ_OK;
}

static void
kafka_destroy(void *st)
{
	struct kafka_listener *l = st;

	kg_free(l->groups);
	kp_free(l->producers);
	free(l->adv_host);
	free(l);
}

static void *
kafka_conn_open(void *st, pmq_conn *c)
{
	struct kafka_listener *l = st;
	struct kconn *kc = calloc(1, sizeof *kc);

	if (kc == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: out of memory",
		         __func__, api->conn_peer(c));
		return NULL;
	}
	kc->l = l;
	kc->c = c;
	kc->refs = 1;
	return kc;
}

static void
kafka_conn_input(void *st, void *cs, pmq_conn *c)
{
	struct kconn *kc = cs;

	(void)st;
	if (kc->closing) {
		api->conn_input_drain(c, api->conn_input_len(c));
		return;
	}
	kafka_parse(kc);
}

static void
kafka_conn_drained(void *st, void *cs, pmq_conn *c)
{
	struct kconn *kc = cs;

	(void)st;
	(void)c;
	if (!kc->closing)
		kafka_parse(kc);
}

static void
kafka_conn_closed(void *st, void *cs, int reason)
{
	struct kconn *kc = cs;

	(void)st;
	(void)reason;
	kc->c = NULL;
	kc->closing = 1;
	/* The connection's own reference keeps kc alive through this. */
	/* Parked requests (long-poll Fetch, JoinGroup, SyncGroup) would
	 * otherwise wait for timers that may outlive the listener. */
	while (kc->waiting != NULL) {
		struct kreq *r = kc->waiting;

		kreq_unpark(r);
		r->cancel(r);
	}
	kconn_unref(kc);
}

static void
kafka_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	/* Kafka clients read logs; they never subscribe live. */
	(void)st;
	(void)udata;
	(void)m;
	(void)d;
}

static const struct pmq_transport_ops kafka_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = kafka_create,
	.configure = kafka_configure,
	.start = kafka_start,
	.stop = NULL, /* groups live until destroy: late completions */
	.destroy = kafka_destroy,
	.conn_open = kafka_conn_open,
	.conn_input = kafka_conn_input,
	.conn_drained = kafka_conn_drained,
	.conn_closed = kafka_conn_closed,
	.deliver = kafka_deliver,
};

static int
kafka_init(const struct pmq_host_api *host)
{
	kafka_api = host;
	kafka_has_subs_api = PMQ_HAS(host, struct pmq_host_api,
	                             has_subscribers) &&
	                     host->has_subscribers != NULL;
	/* Fetch by reference needs all three; else it copies. */
	kafka_ref_api = PMQ_HAS(host, struct pmq_host_api, log_read_unref) &&
	                host->slot_send_ref != NULL &&
	                host->log_read_ref != NULL &&
	                host->log_read_unref != NULL;
	/* Fetch from the segment files (sendfile) needs both, and refs. */
	kafka_stored_api = kafka_ref_api &&
	                   PMQ_HAS(host, struct pmq_host_api, slot_send_stored) &&
	                   host->log_read_stored != NULL &&
	                   host->slot_send_stored != NULL;
	return PMQ_OK;
}

PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "kafka", "1.0.0",
                  "Kafka wire protocol: produce, fetch, consumer groups",
                  0, kafka_init, NULL, &kafka_ops);
