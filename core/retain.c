/*
 * retain.c - retained messages in a tree of topic levels (see retain.h).
 *
 * retain_match walks the tree with the filter: a named level follows one
 * child, '+' every child, '#' the whole subtree.  Matches are collected
 * (with a reference each) before fn runs, so fn may change the index.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "logger.h"
#include "msg.h"
#include "retain.h"
#include "topic.h"
#include "util.h"

/* Stack depth marker: everything below this node matches ('#'). */
#define ALL ((size_t)-1)

struct rtnode {
	struct topic_node tn; /* first */
	pmq_msg *msg;         /* this topic's retained message, or NULL */
	char level[];
};

struct rtwalk {
	struct rtnode *n;
	size_t fi; /* filter levels matched so far, or ALL */
};

struct rtscratch {
	struct topic_level *levels;
	size_t levels_cap;
	struct rtwalk *stack;
	size_t stack_cap;
	pmq_msg **msgs;
	size_t msgs_cap;
};

struct retain {
	struct rtnode *root;
	size_t count;
	struct rtscratch *spare; /* NULL while a retain_match uses it */
};

static struct rtnode *
node_new(const char *level, size_t len)
{
	struct rtnode *n = calloc(1, sizeof(*n) + len + 1);

	if (n == NULL)
		return NULL;
	memcpy(n->level, level, len);
	n->tn.level = n->level;
	n->tn.len = len;
	n->tn.hash = topic_hash(level, len);
	return n;
}

static void
node_prune(struct retain *r, struct rtnode *n)
{
	while (n != r->root && n->msg == NULL && n->tn.n_kids == 0) {
		struct rtnode *p = (struct rtnode *)n->tn.parent;

		topic_node_remove(&p->tn, &n->tn);
		free(n->tn.kids);
		free(n);
		n = p;
	}
}

/* The node of topic[0..len), created when create; NULL if absent or on no
 * memory (then any node created on the way is pruned). */
static struct rtnode *
node_lookup(struct retain *r, const char *topic, size_t len, bool create)
{
	struct rtnode *n = r->root, *k;
	size_t start = 0, i;

	for (i = 0; i <= len; i++) {
		const char *p = topic + start;
		size_t l = i - start;

		if (i < len && topic[i] != '/')
			continue;
		k = (struct rtnode *)topic_node_find(&n->tn, p, l,
		                                     topic_hash(p, l));
		if (k == NULL) {
			if (!create)
				return NULL;
			if ((k = node_new(p, l)) == NULL ||
			    topic_node_add(&n->tn, &k->tn) != PMQ_OK) {
				free(k);
				node_prune(r, n);
				return NULL;
			}
		}
		n = k;
		start = i + 1;
	}
	return n;
}

struct retain *
retain_new(void)
{
	struct retain *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->root = node_new("", 0);
	if (r->root == NULL) {
		free(r);
		return NULL;
	}
	return r;
}

static void
scratch_free(struct rtscratch *sc)
{
	if (sc == NULL)
		return;
	free(sc->levels);
	free(sc->stack);
	free(sc->msgs);
	free(sc);
}

void
retain_free(struct retain *r)
{
	struct rtnode *list;

	if (r == NULL)
		return;
	/* No recursion (topics may be 32k levels deep): thread a to-do list
	 * through the parent pointers. */
	list = r->root;
	list->tn.parent = NULL;
	while (list != NULL) {
		struct rtnode *n = list;
		size_t i;

		list = (struct rtnode *)n->tn.parent;
		for (i = 0; i < n->tn.cap_kids; i++) {
			struct topic_node *k = n->tn.kids[i];

			if (k != NULL) {
				k->parent = (struct topic_node *)list;
				list = (struct rtnode *)k;
			}
		}
		msg_unref(n->msg);
		free(n->tn.kids);
		free(n);
	}
	scratch_free(r->spare);
	free(r);
}

int
retain_set(struct retain *r, pmq_msg *m)
{
	struct rtnode *n;

	if (m->payload_len == 0) {
		n = node_lookup(r, m->topic, m->topic_len, false);
		if (n != NULL && n->msg != NULL) {
			msg_unref(n->msg);
			n->msg = NULL;
			r->count--;
			node_prune(r, n);
		}
		return PMQ_OK;
	}
	n = node_lookup(r, m->topic, m->topic_len, true);
	if (n == NULL) {
		log_error("%s: no memory to retain %s", __func__, m->topic);
		return PMQ_ERR_NOMEM;
	}
	msg_ref(m);
	if (n->msg != NULL)
		msg_unref(n->msg);
	else
		r->count++;
	n->msg = m;
	return PMQ_OK;
}

static bool
expired(const pmq_msg *m, int64_t now)
{
	return m->expiry_ms != 0 && m->expiry_ms <= now;
}

pmq_msg *
retain_get(struct retain *r, const char *topic)
{
	struct rtnode *n;

	if (topic == NULL || *topic == '\0')
		return NULL;
	n = node_lookup(r, topic, strlen(topic), false);
	if (n == NULL || n->msg == NULL || expired(n->msg, util_now_ms()))
		return NULL;
	return n->msg;
}

size_t
retain_count(const struct retain *r)
{
	return r->count;
}

static bool
push(struct rtscratch *sc, size_t *sp, struct rtnode *n, size_t fi)
{
	if (util_grow(&sc->stack, &sc->stack_cap, *sp + 1, sizeof(sc->stack[0])) !=
	    PMQ_OK)
		return false;
	sc->stack[*sp].n = n;
	sc->stack[*sp].fi = fi;
	(*sp)++;
	return true;
}

static bool
add(struct rtscratch *sc, size_t *nm, pmq_msg *m, int64_t now)
{
	if (m == NULL || expired(m, now))
		return true;
	if (util_grow(&sc->msgs, &sc->msgs_cap, *nm + 1, sizeof(sc->msgs[0])) !=
	    PMQ_OK)
		return false;
	sc->msgs[(*nm)++] = msg_ref(m);
	return true;
}

/* Push every child of n; at the first level skip $-topics, which
 * wildcards there never match (MQTT 4.7.2). */
static bool
push_kids(struct rtscratch *sc, size_t *sp, struct rtnode *n, size_t fi,
          bool first)
{
	size_t i;

	for (i = 0; i < n->tn.cap_kids; i++) {
		struct topic_node *k = n->tn.kids[i];

		if (k == NULL || (first && k->len > 0 && k->level[0] == '$'))
			continue;
		if (!push(sc, sp, (struct rtnode *)k, fi))
			return false;
	}
	return true;
}

/* Collect the matches of filter into sc->msgs; false on no memory. */
static bool
walk(struct retain *r, struct rtscratch *sc, const char *filter,
     size_t flen, size_t *nm)
{
	size_t nf = topic_count_levels(filter, flen), sp = 0;
	int64_t now = util_now_ms();

	if (util_grow(&sc->levels, &sc->levels_cap, nf, sizeof(sc->levels[0])) !=
	    PMQ_OK)
		return false;
	topic_split(filter, flen, sc->levels);
	if (!push(sc, &sp, r->root, 0))
		return false;
	while (sp > 0) {
		struct rtwalk w = sc->stack[--sp];
		const struct topic_level *lv;
		struct rtnode *k;

		if (w.fi == ALL) {
			if (!add(sc, nm, w.n->msg, now) ||
			    !push_kids(sc, &sp, w.n, ALL, false))
				return false;
			continue;
		}
		if (w.fi == nf) {
			if (!add(sc, nm, w.n->msg, now))
				return false;
			continue;
		}
		lv = &sc->levels[w.fi];
		if (lv->len == 1 && lv->p[0] == '#') {
			/* "a/#" matches "a" too (the root holds nothing). */
			if (!add(sc, nm, w.n->msg, now) ||
			    !push_kids(sc, &sp, w.n, ALL, w.fi == 0))
				return false;
		} else if (lv->len == 1 && lv->p[0] == '+') {
			if (!push_kids(sc, &sp, w.n, w.fi + 1, w.fi == 0))
				return false;
		} else {
			k = (struct rtnode *)topic_node_find(&w.n->tn, lv->p,
			                                     lv->len, lv->hash);
			if (k != NULL && !push(sc, &sp, k, w.fi + 1))
				return false;
		}
	}
	return true;
}

size_t
retain_match(struct retain *r, const char *filter,
             void (*fn)(void *ctx, pmq_msg *m), void *ctx)
{
	struct rtscratch *sc;
	size_t flen, nm = 0, i;

	if (filter == NULL || !topic_valid_filter(filter, flen = strlen(filter)))
		return 0;
	/* Take the reusable scratch; a nested call builds its own. */
	sc = r->spare;
	r->spare = NULL;
	if (sc == NULL && (sc = calloc(1, sizeof(*sc))) == NULL) {
		log_error("%s: no memory to match %s", __func__, filter);
		return 0;
	}
	if (!walk(r, sc, filter, flen, &nm))
		log_error("%s: no memory to match %s; visiting %zu", __func__,
		          filter, nm);
	for (i = 0; i < nm; i++)
		fn(ctx, sc->msgs[i]);
	for (i = 0; i < nm; i++)
		msg_unref(sc->msgs[i]);
	if (r->spare == NULL)
		r->spare = sc;
	else
		scratch_free(sc);
	return nm;
}
