/*
 * test_router.c - unit tests for core/router.c (matching, per-client
 * merging, no-local, retain-as-published, shared groups and their
 * strategies, re-entrant callbacks, a 10k-client fan-out, a randomised
 * cross-check against topic_match) and core/retain.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg.h"
#include "retain.h"
#include "router.h"
#include "topic.h"
#include "util.h"

/* ---- helpers ---- */

struct rec {
	struct pmq_client *cl;
	uint8_t qos, retain, from_store;
	uint32_t n_ids;
	uint32_t ids[8];
	char group[32];
};

struct log {
	struct rec *v;
	size_t n, cap;
};

static void
record(void *ctx, struct pmq_client *cl, pmq_msg *m,
       const struct pmq_delivery *d)
{
	struct log *l = ctx;
	struct rec *r;
	uint32_t i;

	(void)m;
	assert_int_equal(d->size, sizeof(*d));
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		assert_non_null(l->v);
	}
	r = &l->v[l->n++];
	memset(r, 0, sizeof(*r));
	r->cl = cl;
	r->qos = d->qos;
	r->retain = d->retain;
	r->from_store = d->from_store;
	r->n_ids = d->n_sub_ids;
	assert_true(d->n_sub_ids <= 8);
	assert_true((d->n_sub_ids == 0) == (d->sub_ids == NULL));
	for (i = 0; i < d->n_sub_ids; i++)
		r->ids[i] = d->sub_ids[i];
	if (d->share_group)
		snprintf(r->group, sizeof(r->group), "%s", d->share_group);
}

static void
log_reset(struct log *l)
{
	l->n = 0;
}

static struct rec *
log_find(struct log *l, struct pmq_client *cl)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (l->v[i].cl == cl)
			return &l->v[i];
	return NULL;
}

static pmq_msg *
mk(const char *topic, int qos, int retain, const char *payload)
{
	struct pmq_msg_fields f;
	pmq_msg *m;
	int err;

	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.topic = topic;
	f.topic_len = strlen(topic);
	f.qos = (uint8_t)qos;
	f.retain = (uint8_t)retain;
	f.payload = payload;
	f.payload_len = strlen(payload);
	m = msg_new(&f, &err);
	assert_non_null(m);
	return m;
}

static struct pmq_sub_opts
opts(int qos, uint32_t id)
{
	struct pmq_sub_opts o;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.qos = (uint8_t)qos;
	o.sub_id = id;
	return o;
}

static size_t
pub(struct router *r, struct pmq_client *origin, const char *topic, int qos,
    int retain, struct log *l)
{
	pmq_msg *m = mk(topic, qos, retain, "x");
	size_t n;

	log_reset(l);
	n = router_publish(r, origin, m, record, l);
	assert_int_equal(n, l->n);
	msg_unref(m);
	return n;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* ---- router ---- */

static void
test_wildcards(void **state)
{
	struct router *r = router_new();
	struct pmq_client *c[6];
	const char *filters[6] = { "sport/tennis/+", "sport/#", "#",
		                   "+/tennis/#", "sport/tennis/player1",
		                   "sport/+" };
	struct pmq_sub_opts o = opts(1, 0);
	struct log l = { 0 };
	size_t i;

	(void)state;
	for (i = 0; i < 6; i++) {
		c[i] = router_client_new(r, NULL, filters[i], NULL);
		assert_int_equal(router_subscribe(r, c[i], filters[i], &o), 0);
	}
	assert_int_equal(router_count(r), 6);
	assert_int_equal(pub(r, NULL, "sport/tennis/player1", 1, 0, &l), 5);
	assert_null(log_find(&l, c[5]));
	assert_int_equal(pub(r, NULL, "sport", 1, 0, &l), 2); /* sport/#, # */
	assert_non_null(log_find(&l, c[1]));
	assert_non_null(log_find(&l, c[2]));
	assert_int_equal(pub(r, NULL, "sport/", 1, 0, &l), 3); /* + empty */
	assert_non_null(log_find(&l, c[5]));
	assert_int_equal(pub(r, NULL, "other", 1, 0, &l), 1);
	assert_int_equal(pub(r, NULL, "x/tennis", 1, 0, &l), 2);
	for (i = 0; i < 6; i++)
		router_client_free(r, c[i]);
	assert_int_equal(router_count(r), 0);
	router_free(r);
	free(l.v);
}

static void
test_dollar_topics(void **state)
{
	struct router *r = router_new();
	struct pmq_client *all = router_client_new(r, NULL, "all", NULL);
	struct pmq_client *plus = router_client_new(r, NULL, "plus", NULL);
	struct pmq_client *sys = router_client_new(r, NULL, "sys", NULL);
	struct pmq_sub_opts o = opts(0, 0);
	struct log l = { 0 };

	(void)state;
	router_subscribe(r, all, "#", &o);
	router_subscribe(r, plus, "+/x", &o);
	router_subscribe(r, sys, "$SYS/#", &o);
	assert_int_equal(pub(r, NULL, "$SYS/x", 0, 0, &l), 1);
	assert_ptr_equal(l.v[0].cl, sys);
	assert_int_equal(pub(r, NULL, "$SYS", 0, 0, &l), 1);
	assert_int_equal(pub(r, NULL, "a/x", 0, 0, &l), 2);
	router_client_free(r, all);
	router_client_free(r, plus);
	router_client_free(r, sys);
	router_free(r);
	free(l.v);
}

static void
test_merge_overlapping(void **state)
{
	struct router *r = router_new();
	struct pmq_client *c = router_client_new(r, NULL, "c", NULL);
	struct pmq_client *o2 = router_client_new(r, NULL, "o", NULL);
	struct pmq_sub_opts o;
	struct log l = { 0 };
	uint32_t ids[8];

	(void)state;
	o = opts(1, 11);
	assert_int_equal(router_subscribe(r, c, "a/+", &o), 0);
	o = opts(2, 22);
	assert_int_equal(router_subscribe(r, c, "a/#", &o), 0);
	o = opts(0, 0);
	assert_int_equal(router_subscribe(r, c, "a/b", &o), 0);
	o = opts(0, 33);
	assert_int_equal(router_subscribe(r, c, "#", &o), 0);
	o = opts(2, 0);
	assert_int_equal(router_subscribe(r, o2, "a/b", &o), 0);

	assert_int_equal(pub(r, NULL, "a/b", 1, 0, &l), 2);
	{
		struct rec *x = log_find(&l, c);

		assert_non_null(x);
		assert_int_equal(x->qos, 1); /* max granted 2, capped by 1 */
		assert_int_equal(x->n_ids, 3);
		memcpy(ids, x->ids, sizeof(ids));
		qsort(ids, 3, sizeof(ids[0]), cmp_u32);
		assert_int_equal(ids[0], 11);
		assert_int_equal(ids[1], 22);
		assert_int_equal(ids[2], 33);
		assert_int_equal(x->group[0], '\0');
		assert_int_equal(x->from_store, 0);
	}
	assert_int_equal(log_find(&l, o2)->n_ids, 0);
	pub(r, NULL, "a/b", 2, 0, &l);
	assert_int_equal(log_find(&l, c)->qos, 2);
	assert_int_equal(log_find(&l, o2)->qos, 2);
	pub(r, NULL, "a/b", 0, 0, &l);
	assert_int_equal(log_find(&l, c)->qos, 0);
	/* Only "#" (qos 0) and "a/#" (qos 2) match "a". */
	pub(r, NULL, "a", 2, 0, &l);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].qos, 2);
	assert_int_equal(l.v[0].n_ids, 2);
	router_client_free(r, c);
	router_client_free(r, o2);
	router_free(r);
	free(l.v);
}

/* has_subscribers: wildcards, shared groups, $-topics and NULL (any). */
static void
test_has_match(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_sub_opts o = opts(1, 0);

	(void)state;
	assert_false(router_has_match(r, NULL, 0));
	assert_false(router_has_match(r, "a/b", 3));
	router_subscribe(r, a, "a/+/c", &o);
	assert_true(router_has_match(r, NULL, 0));
	assert_true(router_has_match(r, "a/b/c", 5));
	assert_false(router_has_match(r, "a/b", 3));
	assert_false(router_has_match(r, "a/b/c/d", 7));
	router_subscribe(r, a, "#", &o);
	assert_true(router_has_match(r, "x", 1));
	assert_false(router_has_match(r, "$SYS/x", 6)); /* MQTT 4.7.2 */
	router_unsubscribe(r, a, "#", NULL);
	o.share_group = "g";
	router_subscribe(r, a, "q", &o);
	assert_true(router_has_match(r, "q", 1));
	router_client_free(r, a);
	assert_false(router_has_match(r, NULL, 0));
	router_free(r);
}

static void
test_no_local(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_client *b = router_client_new(r, NULL, "b", NULL);
	struct pmq_sub_opts o = opts(1, 1);
	struct log l = { 0 };

	(void)state;
	o.no_local = 1;
	router_subscribe(r, a, "t", &o);
	o = opts(1, 0);
	router_subscribe(r, b, "t", &o);
	assert_int_equal(pub(r, a, "t", 1, 0, &l), 1);
	assert_ptr_equal(l.v[0].cl, b);
	assert_int_equal(pub(r, b, "t", 1, 0, &l), 2);
	assert_int_equal(pub(r, NULL, "t", 1, 0, &l), 2);
	/* A second, local-allowing sub of a delivers alone, with its id. */
	o = opts(0, 7);
	router_subscribe(r, a, "+", &o);
	assert_int_equal(pub(r, a, "t", 1, 0, &l), 2);
	assert_int_equal(log_find(&l, a)->n_ids, 1);
	assert_int_equal(log_find(&l, a)->ids[0], 7);
	assert_int_equal(log_find(&l, a)->qos, 0);
	router_client_free(r, a);
	router_client_free(r, b);
	router_free(r);
	free(l.v);
}

static void
test_retain_as_published(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_client *b = router_client_new(r, NULL, "b", NULL);
	struct pmq_sub_opts o = opts(1, 0);
	struct log l = { 0 };

	(void)state;
	o.retain_as_published = 1;
	router_subscribe(r, a, "t", &o);
	o = opts(1, 0);
	router_subscribe(r, b, "t", &o);
	router_subscribe(r, b, "#", &o);
	pub(r, NULL, "t", 1, 1, &l);
	assert_int_equal(log_find(&l, a)->retain, 1);
	assert_int_equal(log_find(&l, b)->retain, 0);
	pub(r, NULL, "t", 1, 0, &l);
	assert_int_equal(log_find(&l, a)->retain, 0);
	/* One rap match among several is enough. */
	o.retain_as_published = 1;
	router_subscribe(r, b, "#", &o);
	pub(r, NULL, "t", 1, 1, &l);
	assert_int_equal(log_find(&l, b)->retain, 1);
	router_client_free(r, a);
	router_client_free(r, b);
	router_free(r);
	free(l.v);
}

static void
test_unsubscribe_replace_free(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_sub_opts o = opts(0, 0);
	struct log l = { 0 };

	(void)state;
	assert_int_equal(router_subscribe(r, a, "x/y", &o), 0);
	o.qos = 2;
	assert_int_equal(router_subscribe(r, a, "x/y", &o), 1);
	assert_int_equal(router_count(r), 1);
	pub(r, NULL, "x/y", 2, 0, &l);
	assert_int_equal(l.v[0].qos, 2);
	assert_int_equal(router_unsubscribe(r, a, "x/y", NULL), PMQ_OK);
	assert_int_equal(router_unsubscribe(r, a, "x/y", NULL),
	                 PMQ_ERR_NOTFOUND);
	assert_int_equal(router_unsubscribe(r, a, "x/y", "g"),
	                 PMQ_ERR_NOTFOUND);
	assert_int_equal(router_count(r), 0);
	assert_int_equal(pub(r, NULL, "x/y", 2, 0, &l), 0);

	assert_int_equal(router_subscribe(r, a, "x/+", &o), 0);
	assert_int_equal(router_subscribe(r, a, "x/#", &o), 0);
	o.share_group = "g";
	assert_int_equal(router_subscribe(r, a, "x/#", &o), 0);
	assert_int_equal(router_count(r), 3);
	assert_int_equal(router_unsubscribe(r, a, "x/#", "h"),
	                 PMQ_ERR_NOTFOUND);
	router_client_free(r, a);
	assert_int_equal(router_count(r), 0);

	/* Invalid input. */
	a = router_client_new(r, NULL, NULL, NULL);
	o = opts(0, 0);
	assert_int_equal(router_subscribe(r, a, "a/#/b", &o), PMQ_ERR_INVAL);
	assert_int_equal(router_subscribe(r, a, "", &o), PMQ_ERR_INVAL);
	assert_int_equal(router_subscribe(r, a, "a+", &o), PMQ_ERR_INVAL);
	o.qos = 3;
	assert_int_equal(router_subscribe(r, a, "a", &o), PMQ_ERR_INVAL);
	o = opts(0, 0);
	o.share_group = "g/h";
	assert_int_equal(router_subscribe(r, a, "a", &o), PMQ_ERR_INVAL);
	o.share_group = "";
	assert_int_equal(router_subscribe(r, a, "a", &o), PMQ_ERR_INVAL);
	o.share_group = NULL;
	o.size = 4;
	assert_int_equal(router_subscribe(r, a, "a", &o), PMQ_ERR_INVAL);
	assert_int_equal(router_count(r), 0);
	router_client_free(r, a);
	router_free(r);
	free(l.v);
}

static void
test_shared_round_robin(void **state)
{
	struct router *r = router_new();
	struct pmq_client *m[3];
	struct pmq_sub_opts o = opts(1, 0);
	struct log l = { 0 };
	size_t i, counts[3] = { 0 }, first = 0;

	(void)state;
	o.share_group = "g";
	for (i = 0; i < 3; i++) {
		char id[8];

		snprintf(id, sizeof(id), "m%zu", i);
		m[i] = router_client_new(r, NULL, id, NULL);
		o.sub_id = (uint32_t)(100 + i);
		assert_int_equal(router_subscribe(r, m[i], "jobs/+", &o), 0);
	}
	for (i = 0; i < 30; i++) {
		size_t k;

		assert_int_equal(pub(r, NULL, "jobs/x", 2, 1, &l), 1);
		for (k = 0; k < 3 && l.v[0].cl != m[k]; k++)
			;
		assert_true(k < 3);
		if (i == 0)
			first = k;
		/* Strict rotation. */
		assert_int_equal(k, (first + i) % 3);
		counts[k]++;
		assert_string_equal(l.v[0].group, "g");
		assert_int_equal(l.v[0].retain, 0); /* never for shared */
		assert_int_equal(l.v[0].qos, 1);
		assert_int_equal(l.v[0].n_ids, 1);
		assert_int_equal(l.v[0].ids[0], 100 + k);
	}
	for (i = 0; i < 3; i++)
		assert_int_equal(counts[i], 10);
	/* A member leaving: the other two share the work. */
	assert_int_equal(router_unsubscribe(r, m[1], "jobs/+", "g"), PMQ_OK);
	memset(counts, 0, sizeof(counts));
	for (i = 0; i < 10; i++) {
		pub(r, NULL, "jobs/y", 1, 0, &l);
		counts[l.v[0].cl == m[0] ? 0 : l.v[0].cl == m[2] ? 2 : 1]++;
	}
	assert_int_equal(counts[0], 5);
	assert_int_equal(counts[1], 0);
	assert_int_equal(counts[2], 5);
	/* Another group on the same filter gets its own copy. */
	o.share_group = "h";
	router_subscribe(r, m[1], "jobs/+", &o);
	assert_int_equal(pub(r, NULL, "jobs/y", 1, 0, &l), 2);
	for (i = 0; i < 3; i++)
		router_client_free(r, m[i]);
	assert_int_equal(router_count(r), 0);
	router_free(r);
	free(l.v);
}

static void
test_shared_sticky(void **state)
{
	struct router *r = router_new();
	struct pmq_client *m[4], *p[16];
	struct pmq_sub_opts o = opts(1, 0);
	struct log l = { 0 };
	size_t i, j, used[4] = { 0 };

	(void)state;
	o.share_group = "g";
	for (i = 0; i < 4; i++) {
		m[i] = router_client_new(r, NULL, "member", NULL);
		router_subscribe(r, m[i], "s/#", &o);
	}
	for (i = 0; i < 16; i++) {
		char id[16];

		snprintf(id, sizeof(id), "pub-%zu", i);
		p[i] = router_client_new(r, NULL, id, NULL);
	}
	router_set_share_strategy(r, ROUTER_SHARE_STICKY_PUBLISHER);
	for (i = 0; i < 16; i++) {
		struct pmq_client *chosen = NULL;

		for (j = 0; j < 10; j++) {
			char t[16];

			snprintf(t, sizeof(t), "s/%zu", j); /* topics vary */
			assert_int_equal(pub(r, p[i], t, 1, 0, &l), 1);
			if (chosen == NULL)
				chosen = l.v[0].cl;
			assert_ptr_equal(l.v[0].cl, chosen);
		}
		for (j = 0; j < 4; j++)
			used[j] += chosen == m[j];
	}
	/* 16 publishers over 4 members: the hash spreads them somewhat. */
	for (j = 0, i = 0; j < 4; j++)
		i += used[j] > 0;
	assert_true(i >= 2);

	router_set_share_strategy(r, ROUTER_SHARE_STICKY_TOPIC);
	memset(used, 0, sizeof(used));
	for (j = 0; j < 16; j++) {
		struct pmq_client *chosen = NULL;
		char t[16];

		snprintf(t, sizeof(t), "s/t%zu", j);
		for (i = 0; i < 16; i++) { /* publishers vary */
			pub(r, p[i], t, 1, 0, &l);
			if (chosen == NULL)
				chosen = l.v[0].cl;
			assert_ptr_equal(l.v[0].cl, chosen);
		}
		for (i = 0; i < 4; i++)
			used[i] += chosen == m[i];
	}
	for (j = 0, i = 0; j < 4; j++)
		i += used[j] > 0;
	assert_true(i >= 2);
	/* Sticky publisher without an origin falls back to round robin. */
	router_set_share_strategy(r, ROUTER_SHARE_STICKY_PUBLISHER);
	pub(r, NULL, "s/a", 1, 0, &l);
	{
		struct pmq_client *c0 = l.v[0].cl;

		pub(r, NULL, "s/a", 1, 0, &l);
		assert_ptr_not_equal(l.v[0].cl, c0);
	}
	for (i = 0; i < 4; i++)
		router_client_free(r, m[i]);
	for (i = 0; i < 16; i++)
		router_client_free(r, p[i]);
	router_free(r);
	free(l.v);
}

static void
test_shared_and_plain_same_client(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_sub_opts o = opts(2, 5);
	struct log l = { 0 };

	(void)state;
	o.retain_as_published = 1;
	router_subscribe(r, a, "t/#", &o);
	o.share_group = "g";
	o.sub_id = 6;
	o.no_local = 1; /* ignored for shared subscriptions */
	router_subscribe(r, a, "t/#", &o);
	assert_int_equal(router_count(r), 2);
	assert_int_equal(pub(r, a, "t/1", 2, 1, &l), 2);
	assert_ptr_equal(l.v[0].cl, a);
	assert_ptr_equal(l.v[1].cl, a);
	assert_string_equal(l.v[0].group, "");
	assert_int_equal(l.v[0].retain, 1);
	assert_int_equal(l.v[0].ids[0], 5);
	assert_string_equal(l.v[1].group, "g");
	assert_int_equal(l.v[1].retain, 0);
	assert_int_equal(l.v[1].ids[0], 6);
	assert_int_equal(router_unsubscribe(r, a, "t/#", "g"), PMQ_OK);
	assert_int_equal(pub(r, a, "t/1", 2, 1, &l), 1);
	router_client_free(r, a);
	router_free(r);
	free(l.v);
}

static void
test_fanout_10k(void **state)
{
	enum { N = 10000 };
	struct router *r = router_new();
	struct pmq_client **c = calloc(N, sizeof(*c));
	struct pmq_sub_opts o = opts(1, 0);
	struct log l = { 0 };
	size_t i;

	(void)state;
	assert_non_null(c);
	for (i = 0; i < N; i++) {
		char t[32];

		c[i] = router_client_new(r, NULL, "c", NULL);
		assert_non_null(c[i]);
		assert_int_equal(router_subscribe(r, c[i], "fan/+", &o), 0);
		snprintf(t, sizeof(t), "dev/%zu/state", i);
		assert_int_equal(router_subscribe(r, c[i], t, &o), 0);
		o.sub_id = 1;
		assert_int_equal(router_subscribe(r, c[i], "fan/#", &o), 0);
		o.sub_id = 0;
	}
	assert_int_equal(router_count(r), 3 * N);
	for (i = 0; i < 3; i++) {
		assert_int_equal(pub(r, NULL, "fan/out", 1, 0, &l), N);
		assert_int_equal(l.v[N - 1].n_ids, 1);
	}
	assert_int_equal(pub(r, NULL, "dev/4242/state", 1, 0, &l), 1);
	assert_ptr_equal(l.v[0].cl, c[4242]);
	assert_int_equal(pub(r, NULL, "dev/4242", 1, 0, &l), 0);
	for (i = 0; i < N; i += 2)
		router_client_free(r, c[i]);
	assert_int_equal(pub(r, NULL, "fan/out", 1, 0, &l), N / 2);
	assert_int_equal(router_count(r), 3 * N / 2);
	for (i = 1; i < N; i += 2)
		router_client_free(r, c[i]);
	assert_int_equal(router_count(r), 0);
	router_free(r);
	free(c);
	free(l.v);
}

/* Re-entrant callback: frees the receiving client, unsubscribes others,
 * publishes again.  ASan checks nothing dangles. */
struct reent {
	struct router *r;
	struct pmq_client *victim;
	struct pmq_client *other;
	size_t nested;
	size_t calls;
};

static void
count_fn(void *ctx, struct pmq_client *cl, pmq_msg *m,
         const struct pmq_delivery *d)
{
	(void)cl;
	(void)m;
	(void)d;
	(*(size_t *)ctx)++;
}

static void
reent_fn(void *ctx, struct pmq_client *cl, pmq_msg *m,
         const struct pmq_delivery *d)
{
	struct reent *x = ctx;

	(void)d;
	x->calls++;
	if (cl == x->victim) {
		x->victim = NULL;
		router_client_free(x->r, cl);
		/* Drop a whole shared group and publish from inside. */
		router_unsubscribe(x->r, x->other, "r/#", "g");
		x->nested += router_publish(x->r, NULL, m, count_fn,
		                            &x->nested);
	}
}

static void
test_reentrant(void **state)
{
	struct router *r = router_new();
	struct pmq_client *v = router_client_new(r, NULL, "v", NULL);
	struct pmq_client *w = router_client_new(r, NULL, "w", NULL);
	struct pmq_sub_opts o = opts(1, 0);
	struct reent x = { r, v, w, 0, 0 };
	pmq_msg *m = mk("r/1", 1, 0, "p");
	size_t n;

	(void)state;
	router_subscribe(r, v, "r/#", &o);
	router_subscribe(r, v, "r/1", &o);
	router_subscribe(r, w, "r/+", &o);
	o.share_group = "g";
	router_subscribe(r, w, "r/#", &o);
	/* Deliveries: v (merged), w (plain), w via group g. */
	n = router_publish(r, NULL, m, reent_fn, &x);
	/* v's delivery ran; w's plain delivery ran; the group was planned
	 * before the callback dropped it, and still delivers (its name was
	 * kept alive). */
	assert_int_equal(n, 3);
	assert_int_equal(x.calls, 3);
	/* The nested publish saw only w's plain subscription. */
	assert_int_equal(x.nested, 2); /* 1 counted by fn + 1 returned */
	assert_int_equal(router_count(r), 1);
	router_client_free(r, w);
	router_free(r);
	msg_unref(m);
}

/* Randomised: router fan-out equals brute force with topic_match. */
static void
test_random_vs_topic_match(void **state)
{
	enum { NC = 200, NT = 400 };
	static const char *lv[] = { "a", "b", "", "$s", "+", "#" };
	struct router *r = router_new();
	struct pmq_client *c[NC];
	char filters[NC][64];
	struct pmq_sub_opts o = opts(0, 0);
	struct log l = { 0 };
	unsigned seed = 7;
	size_t i, k;

	(void)state;
	for (i = 0; i < NC; i++) {
		int depth = 1 + rand_r(&seed) % 4, d;

		filters[i][0] = '\0';
		for (d = 0; d < depth; d++) {
			const char *x = lv[rand_r(&seed) % 6];

			if (d > 0)
				strcat(filters[i], "/");
			if (strcmp(x, "#") == 0 && d != depth - 1)
				x = "+";
			strcat(filters[i], x);
		}
		if (filters[i][0] == '\0') /* "" is not a filter */
			strcpy(filters[i], "b");
		c[i] = router_client_new(r, NULL, filters[i], NULL);
		assert_int_equal(router_subscribe(r, c[i], filters[i], &o), 0);
	}
	for (k = 0; k < NT; k++) {
		char t[64] = "";
		int depth = 1 + rand_r(&seed) % 4, d;
		size_t want = 0;

		for (d = 0; d < depth; d++) {
			if (d > 0)
				strcat(t, "/");
			strcat(t, lv[rand_r(&seed) % 4]);
		}
		if (t[0] == '\0')
			strcpy(t, "a");
		pub(r, NULL, t, 0, 0, &l);
		for (i = 0; i < NC; i++) {
			int match = topic_match(filters[i], t);

			want += match;
			assert_int_equal(match, log_find(&l, c[i]) != NULL);
		}
		assert_int_equal(want, l.n);
	}
	for (i = 0; i < NC; i++)
		router_client_free(r, c[i]);
	router_free(r);
	free(l.v);
}

static void
test_router_free_with_live_clients(void **state)
{
	struct router *r = router_new();
	struct pmq_client *a = router_client_new(r, NULL, "a", NULL);
	struct pmq_sub_opts o = opts(0, 0);

	(void)state;
	router_subscribe(r, a, "a/b/c", &o);
	router_subscribe(r, a, "+/#", &o);
	o.share_group = "g";
	router_subscribe(r, a, "a/b/c", &o);
	router_free(r); /* frees the tree; a keeps no dangling subs */
	assert_null(a->subs);
	free(a);
}

/* ---- retain ---- */

struct seen {
	char topics[512][32];
	size_t n;
};

static void
seen_fn(void *ctx, pmq_msg *m)
{
	struct seen *s = ctx;

	assert_true(s->n < 512);
	snprintf(s->topics[s->n++], 32, "%s", m->topic);
}

static int
seen_has(const struct seen *s, const char *t)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->topics[i], t) == 0)
			return 1;
	return 0;
}

static size_t
rmatch(struct retain *r, const char *filter, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	return retain_match(r, filter, seen_fn, s);
}

static void
test_retain_basic(void **state)
{
	struct retain *r = retain_new();
	const char *topics[] = { "sport", "sport/tennis", "sport/tennis/p1",
		                 "/finance", "$SYS/uptime", "a//b" };
	struct seen s;
	pmq_msg *m, *clear;
	size_t i;

	(void)state;
	for (i = 0; i < UTIL_ARRAY_LEN(topics); i++) {
		m = mk(topics[i], 1, 1, "v1");
		assert_int_equal(retain_set(r, m), PMQ_OK);
		msg_unref(m); /* the index keeps its own reference */
	}
	assert_int_equal(retain_count(r), 6);
	m = mk("sport", 1, 1, "v2");
	retain_set(r, m);
	assert_int_equal(retain_count(r), 6);
	assert_ptr_equal(retain_get(r, "sport"), m);
	msg_unref(m);
	assert_null(retain_get(r, "sport/x"));
	assert_null(retain_get(r, "spo"));

	assert_int_equal(rmatch(r, "#", &s), 5); /* not $SYS */
	assert_false(seen_has(&s, "$SYS/uptime"));
	assert_int_equal(rmatch(r, "sport/#", &s), 3);
	assert_int_equal(rmatch(r, "sport/+", &s), 1);
	assert_true(seen_has(&s, "sport/tennis"));
	assert_int_equal(rmatch(r, "+", &s), 1);
	assert_int_equal(rmatch(r, "+/+", &s), 2); /* sport/tennis /finance */
	assert_int_equal(rmatch(r, "/+", &s), 1);
	assert_int_equal(rmatch(r, "+/+/+", &s), 2);
	assert_true(seen_has(&s, "a//b"));
	assert_int_equal(rmatch(r, "$SYS/#", &s), 1);
	assert_int_equal(rmatch(r, "+/uptime", &s), 0);
	assert_int_equal(rmatch(r, "sport/tennis/p1", &s), 1);
	assert_int_equal(rmatch(r, "nothing/#", &s), 0);
	assert_int_equal(rmatch(r, "bad/#/x", &s), 0);

	/* An empty payload clears. */
	clear = mk("sport/tennis", 1, 1, "");
	assert_int_equal(retain_set(r, clear), PMQ_OK);
	msg_unref(clear);
	assert_null(retain_get(r, "sport/tennis"));
	assert_int_equal(retain_count(r), 5);
	assert_int_equal(rmatch(r, "sport/#", &s), 2);
	clear = mk("never/set", 1, 1, "");
	assert_int_equal(retain_set(r, clear), PMQ_OK);
	msg_unref(clear);
	assert_int_equal(retain_count(r), 5);
	retain_free(r);
}

static void
test_retain_expiry(void **state)
{
	struct retain *r = retain_new();
	struct pmq_msg_fields f;
	struct seen s;
	pmq_msg *m;

	(void)state;
	memset(&f, 0, sizeof(f));
	f.size = sizeof(f);
	f.topic = "e/1";
	f.topic_len = 3;
	f.payload = "x";
	f.payload_len = 1;
	f.expiry_ms = util_now_ms() - 1;
	m = msg_new(&f, NULL);
	retain_set(r, m);
	msg_unref(m);
	f.topic = "e/2";
	f.expiry_ms = util_now_ms() + 3600000;
	m = msg_new(&f, NULL);
	retain_set(r, m);
	msg_unref(m);
	assert_null(retain_get(r, "e/1"));
	assert_non_null(retain_get(r, "e/2"));
	assert_int_equal(rmatch(r, "e/+", &s), 1);
	assert_true(seen_has(&s, "e/2"));
	retain_free(r);
}

/* fn clearing the very topics being visited must be safe. */
struct clearer {
	struct retain *r;
	size_t n;
};

static void
clear_fn(void *ctx, pmq_msg *m)
{
	struct clearer *c = ctx;
	pmq_msg *e = mk(m->topic, 0, 1, "");
	struct seen s;

	retain_set(c->r, e);
	msg_unref(e);
	rmatch(c->r, "#", &s); /* nested match */
	c->n++;
}

static void
test_retain_reentrant(void **state)
{
	struct retain *r = retain_new();
	struct clearer c = { r, 0 };
	char t[16];
	size_t i;

	(void)state;
	for (i = 0; i < 20; i++) {
		pmq_msg *m;

		snprintf(t, sizeof(t), "x/%zu/y", i);
		m = mk(t, 0, 1, "v");
		retain_set(r, m);
		msg_unref(m);
	}
	assert_int_equal(retain_match(r, "x/+/y", clear_fn, &c), 20);
	assert_int_equal(c.n, 20);
	assert_int_equal(retain_count(r), 0);
	retain_free(r);
}

/* Randomised: retain_match equals brute force with topic_match. */
static void
test_retain_random(void **state)
{
	static const char *lv[] = { "a", "b", "", "$s" };
	static const char *flv[] = { "a", "b", "", "$s", "+", "#" };
	struct retain *r = retain_new();
	char topics[300][64];
	size_t nt = 0, i, k;
	unsigned seed = 99;
	struct seen *s = malloc(sizeof(*s));

	(void)state;
	for (i = 0; i < 300; i++) {
		int depth = 1 + rand_r(&seed) % 4, d;
		pmq_msg *m;

		topics[nt][0] = '\0';
		for (d = 0; d < depth; d++) {
			if (d > 0)
				strcat(topics[nt], "/");
			strcat(topics[nt], lv[rand_r(&seed) % 4]);
		}
		if (topics[nt][0] == '\0')
			strcpy(topics[nt], "a");
		if (retain_get(r, topics[nt]) != NULL)
			continue;
		m = mk(topics[nt], 0, 1, "v");
		retain_set(r, m);
		msg_unref(m);
		nt++;
	}
	assert_int_equal(retain_count(r), nt);
	for (k = 0; k < 300; k++) {
		char f[64] = "";
		int depth = 1 + rand_r(&seed) % 4, d;
		size_t want = 0, got;

		for (d = 0; d < depth; d++) {
			const char *x = flv[rand_r(&seed) % 6];

			if (d > 0)
				strcat(f, "/");
			if (strcmp(x, "#") == 0 && d != depth - 1)
				x = "+";
			strcat(f, x);
		}
		if (f[0] == '\0')
			strcpy(f, "b");
		for (i = 0; i < nt; i++)
			want += topic_match(f, topics[i]);
		if (want > 512)
			continue; /* seen_fn holds 512 */
		got = rmatch(r, f, s);
		assert_int_equal(got, want);
		for (i = 0; i < nt; i++)
			assert_int_equal(seen_has(s, topics[i]),
			                 topic_match(f, topics[i]));
	}
	free(s);
	retain_free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wildcards),
		cmocka_unit_test(test_dollar_topics),
		cmocka_unit_test(test_merge_overlapping),
		cmocka_unit_test(test_has_match),
		cmocka_unit_test(test_no_local),
		cmocka_unit_test(test_retain_as_published),
		cmocka_unit_test(test_unsubscribe_replace_free),
		cmocka_unit_test(test_shared_round_robin),
		cmocka_unit_test(test_shared_sticky),
		cmocka_unit_test(test_shared_and_plain_same_client),
		cmocka_unit_test(test_fanout_10k),
		cmocka_unit_test(test_reentrant),
		cmocka_unit_test(test_random_vs_topic_match),
		cmocka_unit_test(test_router_free_with_live_clients),
		cmocka_unit_test(test_retain_basic),
		cmocka_unit_test(test_retain_expiry),
		cmocka_unit_test(test_retain_reentrant),
		cmocka_unit_test(test_retain_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
