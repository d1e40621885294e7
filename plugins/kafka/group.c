/*
 * group.c - the classic Kafka consumer-group coordinator inside the kafka
 * plugin: FindCoordinator, JoinGroup (v4+ MEMBER_ID_REQUIRED), SyncGroup,
 * Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups and
 * ListGroups, after Kafka's GroupCoordinator.scala.
 *
 * States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable,
 * back to PreparingRebalance on any join, leave or session expiry.  A
 * rebalance completes when every known member has rejoined, or when the
 * largest rebalance timeout passes (members that did not rejoin are
 * dropped); a group coming from Empty first waits
 * group_initial_rebalance_delay_ms for more members.  Member assignments
 * and metadata are opaque bytes.  Group membership lives in memory (as in
 * Kafka, members rejoin after a restart); committed offsets with their
 * metadata string are stored through the host in the key-value namespace
 * "kafka.offsets" and survive a restart with a persistent storage.
 *
 * Offsets key:   group, 0x00, topic, 0x00, partition (i32 big-endian)
 * Offsets value: version (1), offset i64, leader_epoch i32,
 *                metadata length i32 (-1 = null), metadata bytes
 *
 * MQTT shared subscriptions ($share/g/...) are the same idea — a group
 * shares the work — but MQTT groups share messages through the core's
 * router, while Kafka groups share partitions through this coordinator.
 *
 * Threads: the host's loop thread only.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"

#define api kafka_api

#define OFFSETS_NS "kafka.offsets"
#define OFFSETS_VERSION 1
#define METADATA_MAX 4096 /* Kafka's offset.metadata.max.bytes */
/* How long a member id handed out with MEMBER_ID_REQUIRED stays valid
 * when the client does not rejoin with it. */
#define PENDING_MAX 1024

enum gstate { G_EMPTY, G_PREPARING, G_COMPLETING, G_STABLE };

static const char *const state_names[] = {
	"Empty", "PreparingRebalance", "CompletingRebalance", "Stable"
};

struct gproto {
	char *name;
	uint8_t *meta;
	size_t meta_len;
};

struct gmember {
	struct gmember *next;
	struct kgroup *g;
	char *id;
	char *client_id;
	char *client_host;
	int32_t session_ms;
	int32_t rebalance_ms;
	int n_protos;
	struct gproto *protos;
	uint8_t *assignment;
	size_t assignment_len;
	struct kreq *join;   /* parked JoinGroup */
	struct kreq *sync;   /* parked SyncGroup */
	pmq_timer *session;  /* expiry without heartbeat */
};

struct pending_id {
	char *id;
	int64_t expires; /* monotonic ms */
};

struct kgroup {
	struct kgroup *next;
	struct kgroups *gs;
	char *id;
	enum gstate state;
	int32_t generation;
	char *protocol_type;
	char *protocol;      /* chosen in the last completed rebalance */
	char *leader;        /* member id */
	struct gmember *members;
	int n_members;
	pmq_timer *rebalance;
	int initial_delay;   /* the rebalance timer is the initial delay */
	struct pending_id pending[PENDING_MAX];
	int n_pending;
};

struct kgroups {
	struct kafka_listener *l;
	struct kgroup *list;
	uint64_t seq;
};

/* ---- small helpers ---- */

static char *
xstrdup(const char *s)
{
	return strdup(s != NULL ? s : "");
}

static void *
xmemdup(const void *p, size_t n)
{
	void *d = malloc(n > 0 ? n : 1);

	if (d != NULL && n > 0)
		memcpy(d, p, n);
	return d;
}

struct kgroups *
kg_new(struct kafka_listener *l)
{
	struct kgroups *gs = calloc(1, sizeof *gs);

	if (gs != NULL)
		gs->l = l;
	return gs;
}

static void
member_free(struct gmember *m)
{
	int i;

	assert(m->join == NULL && m->sync == NULL);
	if (m->session != NULL)
		api->timer_free(m->session);
	for (i = 0; i < m->n_protos; i++) {
		free(m->protos[i].name);
		free(m->protos[i].meta);
	}
	free(m->protos);
	free(m->assignment);
	free(m->id);
	free(m->client_id);
	free(m->client_host);
	free(m);
}

void
kg_free(struct kgroups *gs)
{
	struct kgroup *g, *gn;
	struct gmember *m, *mn;
	int i;

	if (gs == NULL)
		return;
	for (g = gs->list; g != NULL; g = gn) {
		gn = g->next;
		for (m = g->members; m != NULL; m = mn) {
			mn = m->next;
			/* conn_closed already cancelled parked requests. */
			if (m->join != NULL) {
				kreq_unpark(m->join);
				kreq_drop(m->join);
				m->join = NULL;
			}
			if (m->sync != NULL) {
				kreq_unpark(m->sync);
				kreq_drop(m->sync);
				m->sync = NULL;
			}
			member_free(m);
		}
		if (g->rebalance != NULL)
			api->timer_free(g->rebalance);
		for (i = 0; i < g->n_pending; i++)
			free(g->pending[i].id);
		free(g->id);
		free(g->protocol_type);
		free(g->protocol);
		free(g->leader);
		free(g);
	}
	free(gs);
}

static struct kgroup *
group_find(struct kgroups *gs, const char *id)
{
	struct kgroup *g;

	for (g = gs->list; g != NULL; g = g->next)
		if (strcmp(g->id, id) == 0)
			return g;
	return NULL;
}

static void group_rebalance_cb(void *arg);

static struct kgroup *
group_get(struct kgroups *gs, const char *id)
{
	struct kgroup *g = group_find(gs, id);

	if (g != NULL)
		return g;
	g = calloc(1, sizeof *g);
	if (g == NULL)
		return NULL;
	g->gs = gs;
	g->id = strdup(id);
	g->rebalance = api->timer_new(group_rebalance_cb, g);
	if (g->id == NULL || g->rebalance == NULL) {
		if (g->rebalance != NULL)
			api->timer_free(g->rebalance);
		free(g->id);
		free(g);
		return NULL;
	}
	g->state = G_EMPTY;
	g->next = gs->list;
	gs->list = g;
	return g;
}

static struct gmember *
member_find(const struct kgroup *g, const char *id)
{
	struct gmember *m;

	if (id == NULL || id[0] == '\0')
		return NULL;
	for (m = g->members; m != NULL; m = m->next)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static void member_expired(void *arg);

/* Any request from a member proves it alive (Kafka resets the session
 * timer on heartbeats, commits, joins and syncs). */
static void
member_touch(struct gmember *m)
{
	if (m->session != NULL && m->join == NULL)
		api->timer_start(m->session, (uint64_t)m->session_ms, 0);
}

static int
member_set_protocols(struct gmember *m, const struct kc_request *q)
{
	struct gproto *p = calloc((size_t)(q->n_protocols > 0 ?
	                                   q->n_protocols : 1), sizeof *p);
	int i;

	if (p == NULL)
		return -1;
	for (i = 0; i < q->n_protocols; i++) {
		p[i].name = strdup(q->protocols[i].name);
		p[i].meta = xmemdup(q->protocols[i].meta,
		                    q->protocols[i].meta_len);
		p[i].meta_len = q->protocols[i].meta_len;
		if (p[i].name == NULL || p[i].meta == NULL) {
			for (; i >= 0; i--) {
				free(p[i].name);
				free(p[i].meta);
			}
			free(p);
			return -1;
		}
	}
	for (i = 0; i < m->n_protos; i++) {
		free(m->protos[i].name);
		free(m->protos[i].meta);
	}
	free(m->protos);
	m->protos = p;
	m->n_protos = q->n_protocols;
	m->session_ms = q->session_timeout_ms;
	m->rebalance_ms = q->rebalance_timeout_ms;
	return 0;
}

static const struct gproto *
member_proto(const struct gmember *m, const char *name)
{
	int i;

	for (i = 0; name != NULL && i < m->n_protos; i++)
		if (strcmp(m->protos[i].name, name) == 0)
			return &m->protos[i];
	return NULL;
}

/* True when every member other than skip supports protocol name. */
static int
all_support(const struct kgroup *g, const char *name,
            const struct gmember *skip)
{
	const struct gmember *m;

	for (m = g->members; m != NULL; m = m->next)
		if (m != skip && member_proto(m, name) == NULL)
			return 0;
	return 1;
}

/* ---- answers to parked requests ---- */

static void
join_reply(struct kreq *r, const struct kgroup *g, const struct gmember *m,
           int16_t err)
{
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;
	const struct gmember *o;
	int leader = err == KE_NONE && g->leader != NULL &&
	             strcmp(g->leader, m->id) == 0;

	if (v >= 2)
		kc_w_i32(w, 0); /* throttle_time_ms */
	kc_w_i16(w, err);
	kc_w_i32(w, err == KE_NONE ? g->generation : -1);
	kc_w_str(w, err == KE_NONE ? g->protocol : "");
	kc_w_str(w, err == KE_NONE ? g->leader : "");
	kc_w_str(w, m != NULL ? m->id : r->q.member_id);
	if (!leader) {
		kc_w_array(w, 0);
	} else {
		/* The leader assigns: it gets every member's metadata for
		 * the chosen protocol; followers get an empty list. */
		kc_w_array(w, g->n_members);
		for (o = g->members; o != NULL; o = o->next) {
			const struct gproto *p = member_proto(o, g->protocol);

			kc_w_str(w, o->id);
			if (v >= 5)
				kc_w_str(w, NULL); /* group_instance_id */
			kc_w_bytes(w, p != NULL ? p->meta : (void *)"",
			           p != NULL ? p->meta_len : 0);
		}
	}
	kreq_reply(r);
}

/* Answer a parked join with an error (no group state in the answer). */
static void
join_fail(struct kreq *r, const char *member_id, int16_t err)
{
	struct kc_writer *w = &r->w;

	if (r->q.api_version >= 2)
		kc_w_i32(w, 0);
	kc_w_i16(w, err);
	kc_w_i32(w, -1);
	kc_w_str(w, "");
	kc_w_str(w, "");
	kc_w_str(w, member_id);
	kc_w_array(w, 0);
	kreq_reply(r);
}

static void
sync_reply(struct kreq *r, int16_t err, const void *a, size_t len)
{
	struct kc_writer *w = &r->w;

	if (r->q.api_version >= 1)
		kc_w_i32(w, 0);
	kc_w_i16(w, err);
	kc_w_bytes(w, a != NULL ? a : "", a != NULL ? len : 0);
	kreq_reply(r);
}

/* Answer (with err) and forget the member's parked requests. */
static void
member_release(struct gmember *m, int16_t err)
{
	struct kreq *r;

	if ((r = m->join) != NULL) {
		m->join = NULL;
		kreq_unpark(r);
		r->state = NULL;
		join_fail(r, m->id, err);
	}
	if ((r = m->sync) != NULL) {
		m->sync = NULL;
		kreq_unpark(r);
		r->state = NULL;
		sync_reply(r, err, NULL, 0);
	}
}

/* ---- the state machine ---- */

static void group_complete_join(struct kgroup *g);

static void
group_remove(struct kgroup *g, struct gmember *m)
{
	struct gmember **mp;

	for (mp = &g->members; *mp != NULL; mp = &(*mp)->next)
		if (*mp == m) {
			*mp = m->next;
			break;
		}
	g->n_members--;
	if (g->leader != NULL && strcmp(g->leader, m->id) == 0) {
		free(g->leader);
		g->leader = NULL;
	}
	member_release(m, KE_UNKNOWN_MEMBER_ID);
	member_free(m);
}

/* Largest rebalance timeout of the members (Kafka's rebalance delay). */
static int64_t
group_rebalance_ms(const struct kgroup *g)
{
	const struct gmember *m;
	int64_t t = 0;

	for (m = g->members; m != NULL; m = m->next)
		if (m->rebalance_ms > t)
			t = m->rebalance_ms;
	return t;
}

static int
group_all_joined(const struct kgroup *g)
{
	const struct gmember *m;

	for (m = g->members; m != NULL; m = m->next)
		if (m->join == NULL)
			return 0;
	return 1;
}

/* Move to PreparingRebalance: members learn it from Heartbeat (27) and
 * rejoin; parked syncs of the old generation are told the same. */
static void
group_prepare(struct kgroup *g)
{
	struct gmember *m;
	int64_t delay;

	if (g->state == G_PREPARING)
		return;
	for (m = g->members; m != NULL; m = m->next)
		if (m->sync != NULL) {
			struct kreq *r = m->sync;

			m->sync = NULL;
			kreq_unpark(r);
			r->state = NULL;
			sync_reply(r, KE_REBALANCE_IN_PROGRESS, NULL, 0);
		}
	g->initial_delay = g->state == G_EMPTY &&
	                   g->gs->l->group_delay_ms > 0;
	delay = g->initial_delay ? g->gs->l->group_delay_ms :
	                           group_rebalance_ms(g);
	g->state = G_PREPARING;
	api->timer_start(g->rebalance, (uint64_t)(delay > 0 ? delay : 1), 0);
	api->log(g->gs->l->inst, PMQ_LOG_DEBUG, "group %s: preparing "
	         "rebalance (generation %d, %d members)", g->id,
	         (int)g->generation, g->n_members);
}

static void
group_check_join(struct kgroup *g)
{
	if (g->state == G_PREPARING && !g->initial_delay &&
	    group_all_joined(g))
		group_complete_join(g);
}

/* The rebalance timer: the initial delay ended, or the rebalance timeout
 * passed and members that did not rejoin are dropped. */
static void
group_rebalance_cb(void *arg)
{
	struct kgroup *g = arg;
	struct gmember *m, *next;
	int64_t rest;

	if (g->state != G_PREPARING)
		return;
	if (g->initial_delay) {
		g->initial_delay = 0;
		if (group_all_joined(g)) {
			group_complete_join(g);
			return;
		}
		rest = group_rebalance_ms(g);
		api->timer_start(g->rebalance, (uint64_t)(rest > 0 ? rest : 1),
		                 0);
		return;
	}
	for (m = g->members; m != NULL; m = next) {
		next = m->next;
		if (m->join == NULL) {
			api->log(g->gs->l->inst, PMQ_LOG_INFO, "group %s: "
			         "member %s did not rejoin in time, removed",
			         g->id, m->id);
			group_remove(g, m);
		}
	}
	group_complete_join(g);
}

/* Kafka's protocol vote, simplified: the first protocol of the leader's
 * preference list that every member supports. */
static const char *
group_pick_protocol(const struct kgroup *g, const struct gmember *leader)
{
	int i;

	for (i = 0; i < leader->n_protos; i++)
		if (all_support(g, leader->protos[i].name, NULL))
			return leader->protos[i].name;
	return NULL;
}

static void
group_complete_join(struct kgroup *g)
{
	struct gmember *m, *leader = NULL;
	const char *proto;
	char *np = NULL, *nl = NULL;

	api->timer_stop(g->rebalance);
	g->initial_delay = 0;
	g->generation++;
	if (g->members == NULL) {
		g->state = G_EMPTY;
		free(g->leader);
		g->leader = NULL;
		return;
	}
	if (g->leader != NULL)
		leader = member_find(g, g->leader);
	if (leader == NULL)
		leader = g->members;
	proto = group_pick_protocol(g, leader);
	if (proto != NULL)
		np = strdup(proto);
	nl = strdup(leader->id);
	if (np == NULL || nl == NULL) {
		/* No memory for the answer: everyone retries the join. */
		free(np);
		free(nl);
		for (m = g->members; m != NULL; m = m->next)
			member_release(m, KE_COORDINATOR_NOT_AVAILABLE);
		g->state = G_PREPARING;
		api->timer_start(g->rebalance, 1000, 0);
		return;
	}
	free(g->protocol);
	g->protocol = np;
	free(g->leader);
	g->leader = nl;
	g->state = G_COMPLETING;
	api->log(g->gs->l->inst, PMQ_LOG_INFO, "group %s: generation %d, "
	         "%d members, protocol %s, leader %s", g->id,
	         (int)g->generation, g->n_members, g->protocol, g->leader);
	for (m = g->members; m != NULL; m = m->next) {
		struct kreq *r = m->join;

		free(m->assignment);
		m->assignment = NULL;
		m->assignment_len = 0;
		if (r == NULL)
			continue;
		m->join = NULL;
		kreq_unpark(r);
		r->state = NULL;
		member_touch(m);
		if (kreq_alive(r))
			join_reply(r, g, m, KE_NONE);
		else
			kreq_drop(r);
	}
}

static void
member_expired(void *arg)
{
	struct gmember *m = arg;
	struct kgroup *g = m->g;

	api->log(g->gs->l->inst, PMQ_LOG_INFO, "group %s: member %s session "
	         "expired", g->id, m->id);
	group_remove(g, m);
	if (g->members == NULL) {
		group_complete_join(g); /* -> Empty */
		return;
	}
	group_prepare(g);
	group_check_join(g);
}

/* ---- parked-request cancellation (connection closed) ---- */

static void
join_cancel(struct kreq *r)
{
	struct gmember *m = r->state;

	if (m != NULL && m->join == r)
		m->join = NULL;
	r->state = NULL;
	kreq_drop(r);
	/* The member stays until its session expires, as in Kafka. */
	if (m != NULL)
		member_touch(m);
}

static void
sync_cancel(struct kreq *r)
{
	struct gmember *m = r->state;

	if (m != NULL && m->sync == r)
		m->sync = NULL;
	r->state = NULL;
	kreq_drop(r);
}

/* ---- FindCoordinator ---- */

void
kg_find_coordinator(struct kreq *r)
{
	struct kc_writer *w = &r->w;
	int16_t v = r->q.api_version;

	if (v >= 1)
		kc_w_i32(w, 0);
	kc_w_i16(w, KE_NONE);
	if (v >= 1)
		kc_w_str(w, NULL); /* error_message */
	/* Must equal the broker in Metadata. */
	kc_w_i32(w, 0);
	kreq_write_broker(r);
	kreq_reply(r);
}

/* ---- JoinGroup ---- */

static char *
new_member_id(struct kgroups *gs, const char *client_id)
{
	char buf[300];
	uint64_t x = (uint64_t)api->now_ms() * 2654435761u ^ ++gs->seq;

	snprintf(buf, sizeof buf, "%.200s-%016" PRIx64 "%04" PRIx64,
	         client_id != NULL && client_id[0] != '\0' ? client_id :
	         "member", x, gs->seq & 0xffff);
	return strdup(buf);
}

static int
pending_take(struct kgroup *g, const char *id)
{
	int64_t now = api->monotonic_ms();
	int i, found = 0;

	for (i = 0; i < g->n_pending;) {
		if (!found && strcmp(g->pending[i].id, id) == 0)
			found = 1;
		else if (g->pending[i].expires > now) {
			i++;
			continue;
		}
		/* Taken or expired: remove. */
		free(g->pending[i].id);
		g->pending[i] = g->pending[--g->n_pending];
	}
	return found;
}

static void
pending_add(struct kgroup *g, const char *id, int32_t session_ms)
{
	char *c;

	(void)pending_take(g, ""); /* prunes expired ids */
	if (g->n_pending == PENDING_MAX)
		return; /* the client's rejoin gets UNKNOWN_MEMBER_ID */
	c = strdup(id);
	if (c == NULL)
		return;
	g->pending[g->n_pending].id = c;
	g->pending[g->n_pending].expires = api->monotonic_ms() + session_ms;
	g->n_pending++;
}

static struct gmember *
member_add(struct kgroup *g, struct kreq *r, const char *id)
{
	struct gmember *m = calloc(1, sizeof *m), **mp;
	const char *peer = r->kc->c != NULL ? api->conn_peer(r->kc->c) : "";
	const char *colon;

	if (m == NULL)
		return NULL;
	m->g = g;
	m->id = strdup(id);
	m->client_id = xstrdup(r->q.client_id);
	/* client_host is "/addr" in Kafka; drop our ":port". */
	colon = strrchr(peer, ':');
	m->client_host = malloc(strlen(peer) + 2);
	if (m->client_host != NULL) {
		size_t n = colon != NULL ? (size_t)(colon - peer) :
		                           strlen(peer);

		m->client_host[0] = '/';
		memcpy(m->client_host + 1, peer, n);
		m->client_host[n + 1] = '\0';
	}
	m->session = api->timer_new(member_expired, m);
	if (m->id == NULL || m->client_id == NULL || m->client_host == NULL ||
	    m->session == NULL || member_set_protocols(m, &r->q) != 0) {
		member_free(m);
		return NULL;
	}
	if (g->n_members == 0) {
		free(g->protocol_type);
		g->protocol_type = xstrdup(r->q.protocol_type);
		if (g->protocol_type == NULL) {
			member_free(m);
			return NULL;
		}
	}
	/* Append: the first member stays first (leader choice). */
	for (mp = &g->members; *mp != NULL; mp = &(*mp)->next)
		;
	*mp = m;
	g->n_members++;
	return m;
}

/* Would protocols of q fit the group (excluding member self)? */
static int
protocols_fit(const struct kgroup *g, const struct kc_request *q,
              const struct gmember *self)
{
	int32_t i;

	if (q->n_protocols <= 0)
		return 0;
	if (g->n_members == 0 || (g->n_members == 1 && self != NULL))
		return 1;
	if (g->protocol_type != NULL &&
	    strcmp(g->protocol_type, q->protocol_type) != 0)
		return 0;
	for (i = 0; i < q->n_protocols; i++)
		if (all_support(g, q->protocols[i].name, self))
			return 1;
	return 0;
}

/* Same protocols, same metadata: a rejoin that changes nothing. */
static int
protocols_same(const struct gmember *m, const struct kc_request *q)
{
	int32_t i;

	if (m->n_protos != q->n_protocols)
		return 0;
	for (i = 0; i < q->n_protocols; i++)
		if (strcmp(m->protos[i].name, q->protocols[i].name) != 0 ||
		    m->protos[i].meta_len != q->protocols[i].meta_len ||
		    (q->protocols[i].meta_len > 0 &&
		     memcmp(m->protos[i].meta, q->protocols[i].meta,
		            m->protos[i].meta_len) != 0))
			return 0;
	return 1;
}

static void
join_park(struct kgroup *g, struct gmember *m, struct kreq *r)
{
	if (m->join != NULL) {
		/* A second join from the same member replaces the first. */
		struct kreq *old = m->join;

		m->join = NULL;
		kreq_unpark(old);
		old->state = NULL;
		join_fail(old, m->id, KE_UNKNOWN_MEMBER_ID);
	}
	m->join = r;
	r->state = m;
	kreq_park(r, join_cancel);
	api->timer_stop(m->session); /* no expiry while waiting to join */
	group_prepare(g);
	group_check_join(g);
}

void
kg_join_group(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kafka_listener *l = r->l;
	struct kgroup *g;
	struct gmember *m;
	char *id;

	if (q->group_id[0] == '\0') {
		join_fail(r, q->member_id, KE_INVALID_GROUP_ID);
		return;
	}
	if (q->session_timeout_ms < l->min_session_ms ||
	    q->session_timeout_ms > l->max_session_ms) {
		join_fail(r, q->member_id, KE_INVALID_SESSION_TIMEOUT);
		return;
	}
	g = group_get(l->groups, q->group_id);
	if (g == NULL) {
		join_fail(r, q->member_id, KE_COORDINATOR_NOT_AVAILABLE);
		return;
	}
	m = member_find(g, q->member_id);
	if (!protocols_fit(g, q, m)) {
		join_fail(r, q->member_id, KE_INCONSISTENT_GROUP_PROTOCOL);
		return;
	}
	if (q->member_id[0] == '\0') {
		id = new_member_id(l->groups, q->client_id);
		if (id == NULL) {
			join_fail(r, "", KE_COORDINATOR_NOT_AVAILABLE);
			return;
		}
		if (q->api_version >= 4) {
			/* KIP-394: the client rejoins with this id. */
			pending_add(g, id, q->session_timeout_ms);
			join_fail(r, id, KE_MEMBER_ID_REQUIRED);
			free(id);
			return;
		}
		m = member_add(g, r, id);
		free(id);
		if (m == NULL) {
			join_fail(r, "", KE_COORDINATOR_NOT_AVAILABLE);
			return;
		}
		join_park(g, m, r);
		return;
	}
	if (m == NULL) {
		if (!pending_take(g, q->member_id)) {
			join_fail(r, q->member_id, KE_UNKNOWN_MEMBER_ID);
			return;
		}
		m = member_add(g, r, q->member_id);
		if (m == NULL) {
			join_fail(r, q->member_id,
			          KE_COORDINATOR_NOT_AVAILABLE);
			return;
		}
		join_park(g, m, r);
		return;
	}
	/* A known member. */
	if ((g->state == G_STABLE || g->state == G_COMPLETING) &&
	    protocols_same(m, q) && strcmp(g->leader, m->id) != 0) {
		/* A follower rejoining without change gets the current
		 * generation, as in Kafka; no rebalance. */
		member_touch(m);
		join_reply(r, g, m, KE_NONE);
		return;
	}
	if (member_set_protocols(m, q) != 0) {
		join_fail(r, m->id, KE_COORDINATOR_NOT_AVAILABLE);
		return;
	}
	join_park(g, m, r);
}

/* ---- SyncGroup ---- */

void
kg_sync_group(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kgroup *g = group_find(r->l->groups, q->group_id);
	struct gmember *m = g != NULL ? member_find(g, q->member_id) : NULL;
	struct gmember *o;
	int32_t i;

	if (m == NULL) {
		sync_reply(r, KE_UNKNOWN_MEMBER_ID, NULL, 0);
		return;
	}
	member_touch(m);
	if (q->generation_id != g->generation) {
		sync_reply(r, KE_ILLEGAL_GENERATION, NULL, 0);
		return;
	}
	if (g->state == G_PREPARING || g->state == G_EMPTY) {
		sync_reply(r, KE_REBALANCE_IN_PROGRESS, NULL, 0);
		return;
	}
	if (g->state == G_STABLE) {
		sync_reply(r, KE_NONE, m->assignment, m->assignment_len);
		return;
	}
	/* CompletingRebalance */
	if (strcmp(g->leader, m->id) != 0) {
		if (m->sync != NULL) {
			struct kreq *old = m->sync;

			m->sync = NULL;
			kreq_unpark(old);
			old->state = NULL;
			sync_reply(old, KE_REBALANCE_IN_PROGRESS, NULL, 0);
		}
		m->sync = r;
		r->state = m;
		kreq_park(r, sync_cancel);
		return;
	}
	/* The leader's assignments: store, then answer everyone. */
	for (i = 0; i < q->n_members; i++) {
		uint8_t *a;

		o = member_find(g, q->members[i].member_id);
		if (o == NULL)
			continue;
		a = xmemdup(q->members[i].data, q->members[i].data_len);
		if (a == NULL)
			continue; /* that member gets an empty assignment */
		free(o->assignment);
		o->assignment = a;
		o->assignment_len = q->members[i].data_len;
	}
	g->state = G_STABLE;
	for (o = g->members; o != NULL; o = o->next) {
		struct kreq *s = o->sync;

		if (s == NULL)
			continue;
		o->sync = NULL;
		kreq_unpark(s);
		s->state = NULL;
		sync_reply(s, KE_NONE, o->assignment, o->assignment_len);
	}
	sync_reply(r, KE_NONE, m->assignment, m->assignment_len);
}

/* ---- Heartbeat ---- */

void
kg_heartbeat(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kgroup *g = group_find(r->l->groups, q->group_id);
	struct gmember *m = g != NULL ? member_find(g, q->member_id) : NULL;
	int16_t err = KE_NONE;

	if (m == NULL || g->state == G_EMPTY)
		err = KE_UNKNOWN_MEMBER_ID;
	else if (q->generation_id != g->generation)
		err = KE_ILLEGAL_GENERATION;
	else if (g->state == G_PREPARING)
		err = KE_REBALANCE_IN_PROGRESS; /* how members learn to rejoin */
	if (m != NULL)
		member_touch(m);
	if (r->q.api_version >= 1)
		kc_w_i32(&r->w, 0);
	kc_w_i16(&r->w, err);
	kreq_reply(r);
}

/* ---- LeaveGroup ---- */

static int16_t
leave_one(struct kgroup *g, const char *id)
{
	struct gmember *m = g != NULL ? member_find(g, id) : NULL;

	if (m == NULL)
		return KE_UNKNOWN_MEMBER_ID;
	api->log(g->gs->l->inst, PMQ_LOG_INFO, "group %s: member %s left",
	         g->id, m->id);
	group_remove(g, m);
	return KE_NONE;
}

void
kg_leave_group(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kgroup *g = group_find(r->l->groups, q->group_id);
	struct kc_writer *w = &r->w;
	int16_t err = KE_NONE, *errs = NULL;
	int32_t i;
	int left = 0;

	if (q->api_version <= 2) {
		err = leave_one(g, q->member_id);
		left = err == KE_NONE;
	} else {
		errs = q->n_members > 0 ?
		    kc_arena_alloc(&r->arena, (size_t)q->n_members *
		                   sizeof *errs) : NULL;
		if (q->n_members > 0 && errs == NULL) {
			kreq_drop(r);
			return;
		}
		for (i = 0; i < q->n_members; i++) {
			errs[i] = leave_one(g, q->members[i].member_id);
			left |= errs[i] == KE_NONE;
		}
	}
	/* Rebalance at once: the others learn it from their heartbeat. */
	if (left) {
		if (g->members == NULL) {
			group_complete_join(g); /* -> Empty */
		} else {
			group_prepare(g);
			group_check_join(g);
		}
	}
	if (q->api_version >= 1)
		kc_w_i32(w, 0);
	kc_w_i16(w, err);
	if (q->api_version >= 3) {
		kc_w_array(w, q->n_members);
		for (i = 0; i < q->n_members; i++) {
			kc_w_str(w, q->members[i].member_id);
			kc_w_str(w, q->members[i].instance_id);
			kc_w_i16(w, errs[i]);
		}
	}
	kreq_reply(r);
}

/* ---- committed offsets ---- */

/* key = group 0 topic 0 partition(be32); returns its length or 0. */
static size_t
offset_key(uint8_t *buf, size_t cap, const char *group, const char *topic,
           int32_t part)
{
	size_t gl = strlen(group), tl = strlen(topic), n = gl + tl + 6;
	uint32_t p = (uint32_t)part;

	if (n > cap)
		return 0;
	memcpy(buf, group, gl);
	buf[gl] = 0;
	memcpy(buf + gl + 1, topic, tl);
	buf[gl + 1 + tl] = 0;
	buf[gl + tl + 2] = (uint8_t)(p >> 24);
	buf[gl + tl + 3] = (uint8_t)(p >> 16);
	buf[gl + tl + 4] = (uint8_t)(p >> 8);
	buf[gl + tl + 5] = (uint8_t)p;
	return n;
}

struct commit_state {
	int16_t **errs; /* [topic][partition] */
};

struct commit_ctx {
	struct kreq *r;
	int16_t *err;
};

static void
commit_finish(struct kreq *r)
{
	struct commit_state *s = r->state;
	struct kc_writer *w = &r->w;
	int32_t i, j;

	if (--r->outstanding > 0)
		return;
	if (!kreq_alive(r)) {
		r->state = NULL;
		kreq_drop(r);
		return;
	}
	if (r->q.api_version >= 3)
		kc_w_i32(w, 0);
	kc_w_array(w, r->q.n_topics);
	for (i = 0; i < r->q.n_topics; i++) {
		const struct kc_topic *t = &r->q.topics[i];

		kc_w_str(w, t->name);
		kc_w_array(w, t->n_parts);
		for (j = 0; j < t->n_parts; j++) {
			kc_w_i32(w, t->parts[j].index);
			kc_w_i16(w, s->errs[i][j]);
		}
	}
	r->state = NULL;
	kreq_reply(r);
}

static void
commit_done(void *arg, int status)
{
	struct commit_ctx *c = arg;

	if (status != PMQ_OK)
		*c->err = KE_COORDINATOR_NOT_AVAILABLE; /* retriable */
	commit_finish(c->r);
	free(c);
}

/* Kafka's rules for who may commit (GroupCoordinator.handleCommitOffsets):
 * anyone to a group without members (standalone consumers), members of
 * the current generation in Stable and PreparingRebalance. */
static int16_t
commit_allowed(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kgroup *g = group_find(r->l->groups, q->group_id);
	struct gmember *m;

	if (q->group_id[0] == '\0')
		return KE_INVALID_GROUP_ID;
	if (g == NULL || g->state == G_EMPTY) {
		if (q->generation_id < 0)
			return KE_NONE;
		/* A member of a group we forgot (restart): it rejoins. */
		return g == NULL || g->members == NULL ?
		       KE_ILLEGAL_GENERATION : KE_UNKNOWN_MEMBER_ID;
	}
	m = member_find(g, q->member_id);
	if (m == NULL)
		return KE_UNKNOWN_MEMBER_ID;
	member_touch(m);
	if (q->generation_id != g->generation)
		return KE_ILLEGAL_GENERATION;
	if (g->state == G_COMPLETING)
		return KE_REBALANCE_IN_PROGRESS;
	return KE_NONE;
}

void
kg_offset_commit(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct commit_state *s = kc_arena_alloc(&r->arena, sizeof *s);
	int16_t gerr;
	int32_t i, j;

	if (s == NULL || (q->n_topics > 0 &&
	                  (s->errs = kc_arena_alloc(&r->arena,
	                   (size_t)q->n_topics * sizeof *s->errs)) == NULL)) {
		kreq_drop(r);
		return;
	}
	r->state = s;
	r->outstanding = 1;
	gerr = commit_allowed(r);
	for (i = 0; i < q->n_topics; i++) {
		const struct kc_topic *t = &q->topics[i];

		s->errs[i] = t->n_parts > 0 ?
		    kc_arena_alloc(&r->arena, (size_t)t->n_parts *
		                   sizeof **s->errs) : NULL;
		if (t->n_parts > 0 && s->errs[i] == NULL) {
			r->q.n_topics = i;
			break;
		}
		for (j = 0; j < t->n_parts; j++) {
			const struct kc_part *p = &t->parts[j];
			size_t ml = p->metadata != NULL ? strlen(p->metadata) :
			                                  0;
			uint8_t key[600], *val;
			size_t kl, vl = 1 + 8 + 4 + 4 + ml;
			struct commit_ctx *c;
			int rc;

			s->errs[i][j] = gerr;
			if (gerr != KE_NONE)
				continue;
			if (ml > METADATA_MAX) {
				s->errs[i][j] = 12; /* OFFSET_METADATA_TOO_LARGE */
				continue;
			}
			kl = offset_key(key, sizeof key, q->group_id, t->name,
			                p->index);
			val = malloc(vl);
			c = calloc(1, sizeof *c);
			if (kl == 0 || val == NULL || c == NULL) {
				free(val);
				free(c);
				s->errs[i][j] = kl == 0 ? KE_INVALID_REQUEST :
				    KE_COORDINATOR_NOT_AVAILABLE;
				continue;
			}
			val[0] = OFFSETS_VERSION;
			for (rc = 0; rc < 8; rc++)
				val[1 + rc] = (uint8_t)((uint64_t)p->offset >>
				                        (56 - 8 * rc));
			for (rc = 0; rc < 4; rc++) {
				val[9 + rc] = (uint8_t)((uint32_t)p->leader_epoch
				                        >> (24 - 8 * rc));
				val[13 + rc] = (uint8_t)((uint32_t)(p->metadata ?
				    (int32_t)ml : -1) >> (24 - 8 * rc));
			}
			if (ml > 0)
				memcpy(val + 17, p->metadata, ml);
			c->r = r;
			c->err = &s->errs[i][j];
			r->outstanding++;
			rc = api->kv_put(OFFSETS_NS, key, kl, val, vl,
			                 commit_done, c);
			free(val);
			if (rc != PMQ_OK) {
				r->outstanding--;
				free(c);
				s->errs[i][j] = KE_COORDINATOR_NOT_AVAILABLE;
			}
		}
	}
	commit_finish(r);
}

/* A stored offset: PMQ_OK with the fields, or an error for a bad value. */
static int
offset_decode(const uint8_t *v, size_t len, int64_t *off, int32_t *epoch,
              const char **meta, int32_t *meta_len)
{
	uint64_t o = 0;
	uint32_t e = 0, ml = 0;
	int i;

	if (len < 17 || v[0] != OFFSETS_VERSION)
		return PMQ_ERR_CORRUPT;
	for (i = 0; i < 8; i++)
		o = o << 8 | v[1 + i];
	for (i = 0; i < 4; i++) {
		e = e << 8 | v[9 + i];
		ml = ml << 8 | v[13 + i];
	}
	*off = (int64_t)o;
	*epoch = (int32_t)e;
	*meta_len = (int32_t)ml;
	if (*meta_len < -1 || (*meta_len > 0 &&
	                       (size_t)*meta_len > len - 17))
		return PMQ_ERR_CORRUPT;
	*meta = *meta_len >= 0 ? (const char *)v + 17 : NULL;
	return PMQ_OK;
}

static void
fetch_part(struct kc_writer *w, int16_t v, int32_t index, const uint8_t *val,
           size_t len)
{
	int64_t off = -1;
	int32_t epoch = -1, ml = 0;
	const char *meta = "";

	if (val == NULL ||
	    offset_decode(val, len, &off, &epoch, &meta, &ml) != PMQ_OK) {
		off = -1;
		epoch = -1;
		meta = "";
		ml = 0;
	}
	kc_w_i32(w, index);
	kc_w_i64(w, off);
	if (v >= 5)
		kc_w_i32(w, epoch);
	if (meta == NULL)
		kc_w_str(w, NULL);
	else
		kc_w_strn(w, meta, (size_t)ml);
	kc_w_i16(w, KE_NONE);
}

/* Every committed offset of a group (OffsetFetch with topics null):
 * the scan is in key order, so partitions of one topic are adjacent. */
struct fetch_all {
	struct kc_writer body;  /* topics, without the count */
	int32_t n_topics;
	int32_t n_parts;        /* of the current topic */
	size_t count_pos;       /* where its partition count goes */
	char topic[256];
	size_t glen;
	int16_t v;
};

static int
fetch_all_cb(void *arg, const void *key, size_t key_len, const void *val,
             size_t val_len)
{
	struct fetch_all *fa = arg;
	const uint8_t *k = key;
	size_t tl;
	int32_t part;

	/* group 0 topic 0 partition: the topic ends 5 bytes before. */
	if (key_len < fa->glen + 1 + 1 + 5)
		return 0;
	tl = key_len - fa->glen - 1 - 5;
	if (tl >= sizeof fa->topic || k[fa->glen + 1 + tl] != 0)
		return 0;
	part = (int32_t)((uint32_t)k[key_len - 4] << 24 |
	                 (uint32_t)k[key_len - 3] << 16 |
	                 (uint32_t)k[key_len - 2] << 8 | k[key_len - 1]);
	if (fa->n_topics == 0 || strlen(fa->topic) != tl ||
	    memcmp(fa->topic, k + fa->glen + 1, tl) != 0) {
		if (fa->n_topics > 0)
			kc_w_put_i32_at(&fa->body, fa->count_pos, fa->n_parts);
		memcpy(fa->topic, k + fa->glen + 1, tl);
		fa->topic[tl] = '\0';
		kc_w_str(&fa->body, fa->topic);
		fa->count_pos = fa->body.len;
		kc_w_i32(&fa->body, 0);
		fa->n_topics++;
		fa->n_parts = 0;
	}
	fetch_part(&fa->body, fa->v, part, val, val_len);
	fa->n_parts++;
	return 0;
}

void
kg_offset_fetch(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kc_writer *w = &r->w;
	int16_t v = q->api_version;
	int32_t i, j;

	if (v >= 3)
		kc_w_i32(w, 0);
	if (q->n_topics < 0) {
		struct fetch_all fa;
		uint8_t prefix[300];
		size_t gl = strlen(q->group_id);

		memset(&fa, 0, sizeof fa);
		kc_w_init(&fa.body, 0);
		fa.glen = gl;
		fa.v = v;
		if (gl + 1 <= sizeof prefix) {
			memcpy(prefix, q->group_id, gl);
			prefix[gl] = 0;
			(void)api->kv_scan(OFFSETS_NS, prefix, gl + 1,
			                   fetch_all_cb, &fa);
		}
		if (fa.n_topics > 0)
			kc_w_put_i32_at(&fa.body, fa.count_pos, fa.n_parts);
		kc_w_array(w, fa.n_topics);
		kc_w_raw(w, fa.body.buf, fa.body.len);
		if (fa.body.err)
			w->err = 1;
		kc_w_free(&fa.body);
	} else {
		kc_w_array(w, q->n_topics);
		for (i = 0; i < q->n_topics; i++) {
			const struct kc_topic *t = &q->topics[i];

			kc_w_str(w, t->name);
			kc_w_array(w, t->n_parts);
			for (j = 0; j < t->n_parts; j++) {
				uint8_t key[600];
				size_t kl = offset_key(key, sizeof key,
				                       q->group_id, t->name,
				                       t->parts[j].index);
				void *val = NULL;
				size_t vl = 0;

				if (kl == 0 ||
				    api->kv_get(OFFSETS_NS, key, kl, &val,
				                &vl) != PMQ_OK)
					val = NULL;
				fetch_part(w, v, t->parts[j].index, val, vl);
				if (val != NULL)
					api->free(val);
			}
		}
	}
	if (v >= 2)
		kc_w_i16(w, KE_NONE); /* top-level error_code, after topics */
	kreq_reply(r);
}

/* ---- DescribeGroups, ListGroups ---- */

void
kg_describe_groups(struct kreq *r)
{
	const struct kc_request *q = &r->q;
	struct kc_writer *w = &r->w;
	int16_t v = q->api_version;
	int32_t i;

	if (v >= 1)
		kc_w_i32(w, 0);
	kc_w_array(w, q->n_names);
	for (i = 0; i < q->n_names; i++) {
		const struct kgroup *g = group_find(r->l->groups, q->names[i]);
		const struct gmember *m;
		int stable = g != NULL && g->state == G_STABLE;

		kc_w_i16(w, KE_NONE);
		kc_w_str(w, q->names[i]);
		/* Kafka describes an unknown group as Dead, without error. */
		kc_w_str(w, g != NULL ? state_names[g->state] : "Dead");
		kc_w_str(w, g != NULL && g->protocol_type != NULL ?
		            g->protocol_type : "");
		kc_w_str(w, stable && g->protocol != NULL ? g->protocol : "");
		kc_w_array(w, g != NULL ? g->n_members : 0);
		for (m = g != NULL ? g->members : NULL; m != NULL;
		     m = m->next) {
			const struct gproto *p = stable ?
			    member_proto(m, g->protocol) : NULL;

			kc_w_str(w, m->id);
			if (v >= 4)
				kc_w_str(w, NULL);
			kc_w_str(w, m->client_id);
			kc_w_str(w, m->client_host);
			kc_w_bytes(w, p != NULL ? p->meta : (void *)"",
			           p != NULL ? p->meta_len : 0);
			kc_w_bytes(w, m->assignment != NULL ? m->assignment :
			           (void *)"", m->assignment_len);
		}
		if (v >= 3)
			kc_w_i32(w, INT32_MIN); /* authorized_operations */
	}
	kreq_reply(r);
}

void
kg_list_groups(struct kreq *r)
{
	struct kc_writer *w = &r->w;
	const struct kgroup *g;
	int32_t n = 0;

	if (r->q.api_version >= 1)
		kc_w_i32(w, 0);
	kc_w_i16(w, KE_NONE);
	for (g = r->l->groups->list; g != NULL; g = g->next)
		n++;
	kc_w_array(w, n);
	for (g = r->l->groups->list; g != NULL; g = g->next) {
		kc_w_str(w, g->id);
		kc_w_str(w, g->protocol_type != NULL ? g->protocol_type : "");
	}
	kreq_reply(r);
}
