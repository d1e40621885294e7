/*
 * router.c - subscription tree, shared groups and allocation-free fan-out
 * (see router.h).
 *
 * A publish runs in three phases: walk the tree collecting matching
 * subscriptions and shared groups into scratch arrays; merge them into a
 * list of deliveries (one per client, one per group), deduplicating
 * clients with a generation counter; then call the deliver function.  Only
 * the last phase runs foreign code, so the callback may change the tree:
 * the delivery list references nothing but clients (whose free is deferred
 * while a publish runs), scratch arrays and shared-group names (likewise
 * deferred).
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "logger.h"
#include "msg.h"
#include "router.h"
#include "topic.h"
#include "util.h"

struct rshare;

/* One level of the filter tree. */
struct rnode {
	struct topic_node tn;   /* first: named children, parent */
	struct rnode *plus;     /* the '+' child */
	struct rnode *hash;     /* the '#' child */
	struct rsub *subs;      /* non-shared subscriptions ending here */
	struct rshare *shares;  /* shared groups on this filter */
	char level[];
};

/* One subscription of one client. */
struct rsub {
	struct rnode *node;
	struct pmq_client *cl;
	struct rshare *share;            /* NULL when not shared */
	struct rsub *prev, *next;        /* node->subs (non-shared only) */
	struct rsub *cl_prev, *cl_next;  /* cl->subs */
	uint32_t sub_id;
	uint8_t qos;
	uint8_t no_local;
	uint8_t rap;                     /* retain as published */
	uint8_t retain_handling;
	char filter[];
};

/* A shared group: (group, filter) is (group, node). */
struct rshare {
	struct rnode *node;
	struct rshare *prev, *next;  /* node->shares */
	struct rsub **members;       /* in subscription order */
	size_t n, cap;
	size_t rr;                   /* next member for round robin */
	struct rshare *gc_next;
	char group[];
};

/* One delivery being prepared. */
struct rtarget {
	struct pmq_client *cl;
	const char *share_group;
	size_t ids_off; /* into scratch ids */
	uint32_t n_ids;
	uint8_t qos;
	uint8_t retain;
};

struct rwalk {
	struct rnode *n;
	size_t depth;
};

/* Arrays reused from publish to publish; they only grow. */
struct rscratch {
	struct topic_level *levels;
	size_t levels_cap;
	struct rwalk *stack;
	size_t stack_cap;
	struct rsub **subs;
	size_t subs_cap;
	struct rshare **shares;
	size_t shares_cap;
	struct rtarget *targets;
	size_t targets_cap;
	uint32_t *ids;
	size_t ids_cap;
};

struct router {
	struct rnode *root;
	size_t n_subs;
	uint64_t gen;
	int strategy;
	unsigned busy;                /* router_publish delivery nesting */
	struct rscratch *spare;       /* NULL while an outer publish uses it */
	struct rshare *gc_shares;     /* released when busy drops to 0 */
	struct pmq_client *gc_clients;
};

/* ---- tree ---- */

static struct rnode *
node_new(const char *level, size_t len)
{
	struct rnode *n = calloc(1, sizeof(*n) + len + 1);

	if (n == NULL)
		return NULL;
	memcpy(n->level, level, len);
	n->level[len] = '\0';
	n->tn.level = n->level;
	n->tn.len = len;
	n->tn.hash = topic_hash(level, len);
	return n;
}

static bool
node_empty(const struct rnode *n)
{
	return n->subs == NULL && n->shares == NULL && n->plus == NULL &&
	       n->hash == NULL && n->tn.n_kids == 0;
}

/* Free n and its ancestors while they hold nothing (never the root). */
static void
node_prune(struct router *r, struct rnode *n)
{
	while (n != r->root && node_empty(n)) {
		struct rnode *p = (struct rnode *)n->tn.parent;

		if (p->plus == n)
			p->plus = NULL;
		else if (p->hash == n)
			p->hash = NULL;
		else
			topic_node_remove(&p->tn, &n->tn);
		free(n->tn.kids);
		free(n);
		n = p;
	}
}

/* The node for a valid filter, created as needed; NULL on no memory. */
static struct rnode *
node_get(struct router *r, const char *filter)
{
	struct rnode *n = r->root, *k;
	const char *p = filter;

	for (;;) {
		const char *e = strchr(p, '/');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		struct rnode **wild = NULL;

		if (len == 1 && p[0] == '+')
			wild = &n->plus;
		else if (len == 1 && p[0] == '#')
			wild = &n->hash;
		if (wild != NULL) {
			if (*wild == NULL) {
				if ((k = node_new(p, len)) == NULL)
					goto fail;
				k->tn.parent = &n->tn;
				*wild = k;
			}
			n = *wild;
		} else {
			k = (struct rnode *)topic_node_find(&n->tn, p, len,
			                                    topic_hash(p, len));
			if (k == NULL) {
				if ((k = node_new(p, len)) == NULL)
					goto fail;
				if (topic_node_add(&n->tn, &k->tn) != PMQ_OK) {
					free(k);
					goto fail;
				}
			}
			n = k;
		}
		if (e == NULL)
			return n;
		p = e + 1;
	}
fail:
	log_error("%s: no memory for filter %s", __func__, filter);
	node_prune(r, n);
	return NULL;
}

/* ---- shared groups ---- */

static void
share_release(struct router *r, struct rshare *sh)
{
	/* A delivery list may still point at sh->group. */
	if (r->busy > 0) {
		sh->gc_next = r->gc_shares;
		r->gc_shares = sh;
		return;
	}
	free(sh->members);
	free(sh);
}

static struct rsub *
share_pick(struct router *r, struct rshare *sh,
           const struct pmq_client *origin, const pmq_msg *m)
{
	size_t i;

	assert(sh->n > 0);
	if (r->strategy == ROUTER_SHARE_STICKY_PUBLISHER && origin != NULL) {
		i = (size_t)(topic_hash(origin->id, strlen(origin->id)) % sh->n);
	} else if (r->strategy == ROUTER_SHARE_STICKY_TOPIC) {
		i = (size_t)(topic_hash(m->topic, m->topic_len) % sh->n);
	} else {
		/* Round robin; also sticky-publisher without an origin. */
		i = sh->rr < sh->n ? sh->rr : 0;
		sh->rr = (i + 1) % sh->n;
	}
	return sh->members[i];
}

/* ---- subscriptions ---- */

static bool
sub_same_group(const struct rsub *s, const char *group)
{
	if (s->share == NULL || group == NULL)
		return s->share == NULL && group == NULL;
	return strcmp(s->share->group, group) == 0;
}

static struct rsub *
sub_find(const struct pmq_client *cl, const char *filter, const char *group)
{
	struct rsub *s;

	for (s = cl->subs; s != NULL; s = s->cl_next)
		if (strcmp(s->filter, filter) == 0 && sub_same_group(s, group))
			return s;
	return NULL;
}

static void
sub_set_opts(struct rsub *s, const struct pmq_sub_opts *o)
{
	s->qos = o->qos;
	s->no_local = o->no_local ? 1 : 0;
	s->rap = o->retain_as_published ? 1 : 0;
	s->retain_handling = o->retain_handling;
	s->sub_id = o->sub_id;
}

static void
sub_remove(struct router *r, struct rsub *s)
{
	struct rnode *n = s->node;
	struct pmq_client *cl = s->cl;

	if (s->cl_prev != NULL)
		s->cl_prev->cl_next = s->cl_next;
	else
		cl->subs = s->cl_next;
	if (s->cl_next != NULL)
		s->cl_next->cl_prev = s->cl_prev;
	cl->n_subs--;

	if (s->share != NULL) {
		struct rshare *sh = s->share;
		size_t i;

		for (i = 0; sh->members[i] != s; i++)
			assert(i + 1 < sh->n);
		/* Keep member order so the rotation stays fair. */
		memmove(&sh->members[i], &sh->members[i + 1],
		        (sh->n - i - 1) * sizeof(sh->members[0]));
		sh->n--;
		if (i < sh->rr)
			sh->rr--;
		if (sh->rr >= sh->n)
			sh->rr = 0;
		if (sh->n == 0) {
			if (sh->prev != NULL)
				sh->prev->next = sh->next;
			else
				n->shares = sh->next;
			if (sh->next != NULL)
				sh->next->prev = sh->prev;
			share_release(r, sh);
		}
	} else {
		if (s->prev != NULL)
			s->prev->next = s->next;
		else
			n->subs = s->next;
		if (s->next != NULL)
			s->next->prev = s->prev;
	}
	free(s);
	r->n_subs--;
	node_prune(r, n);
}

int
router_subscribe(struct router *r, struct pmq_client *cl, const char *filter,
                 const struct pmq_sub_opts *opts)
{
	const char *group;
	struct rnode *n;
	struct rsub *s;
	size_t flen;

	if (r == NULL || cl == NULL || filter == NULL || opts == NULL ||
	    !PMQ_HAS(opts, struct pmq_sub_opts, share_group) || opts->qos > 2)
		return PMQ_ERR_INVAL;
	flen = strlen(filter);
	if (!topic_valid_filter(filter, flen))
		return PMQ_ERR_INVAL;
	group = opts->share_group;
	if (group != NULL && !topic_valid_share_group(group))
		return PMQ_ERR_INVAL;

	s = sub_find(cl, filter, group);
	if (s != NULL) {
		sub_set_opts(s, opts);
		return 1;
	}
	s = calloc(1, sizeof(*s) + flen + 1);
	if (s == NULL) {
		log_error("%s: no memory for %s", __func__, filter);
		return PMQ_ERR_NOMEM;
	}
	memcpy(s->filter, filter, flen + 1);
	n = node_get(r, filter);
	if (n == NULL) {
		free(s);
		return PMQ_ERR_NOMEM;
	}
	if (group != NULL) {
		struct rshare *sh;
		bool created = false;

		for (sh = n->shares; sh != NULL; sh = sh->next)
			if (strcmp(sh->group, group) == 0)
				break;
		if (sh == NULL) {
			size_t glen = strlen(group);

			sh = calloc(1, sizeof(*sh) + glen + 1);
			if (sh == NULL)
				goto nomem;
			memcpy(sh->group, group, glen + 1);
			sh->node = n;
			created = true;
		}
		if (util_grow(&sh->members, &sh->cap, sh->n + 1,
		         sizeof(sh->members[0])) != PMQ_OK) {
			if (created)
				free(sh);
			goto nomem;
		}
		if (created) {
			sh->next = n->shares;
			if (n->shares != NULL)
				n->shares->prev = sh;
			n->shares = sh;
		}
		sh->members[sh->n++] = s;
		s->share = sh;
	} else {
		s->next = n->subs;
		if (n->subs != NULL)
			n->subs->prev = s;
		n->subs = s;
	}
	s->node = n;
	s->cl = cl;
	sub_set_opts(s, opts);
	s->cl_next = cl->subs;
	if (cl->subs != NULL)
		cl->subs->cl_prev = s;
	cl->subs = s;
	cl->n_subs++;
	r->n_subs++;
	return 0;

nomem:
	log_error("%s: no memory for %s", __func__, filter);
	free(s);
	node_prune(r, n);
	return PMQ_ERR_NOMEM;
}

int
router_unsubscribe(struct router *r, struct pmq_client *cl,
                   const char *filter, const char *share_group)
{
	struct rsub *s;

	if (r == NULL || cl == NULL || filter == NULL)
		return PMQ_ERR_NOTFOUND;
	s = sub_find(cl, filter, share_group);
	if (s == NULL)
		return PMQ_ERR_NOTFOUND;
	sub_remove(r, s);
	return PMQ_OK;
}

/* ---- clients ---- */

struct pmq_client *
router_client_new(struct router *r, struct pmq_instance *inst,
                  const char *id, void *udata)
{
	size_t len = id != NULL ? strlen(id) : 0;
	struct pmq_client *cl = calloc(1, sizeof(*cl) + len + 1);

	if (cl == NULL) {
		log_error("%s: no memory for client %s", __func__,
		          id ? id : "");
		return NULL;
	}
	memcpy(cl->id, id != NULL ? id : "", len + 1);
	cl->router = r;
	cl->inst = inst;
	cl->udata = udata;
	return cl;
}

void
router_client_free(struct router *r, struct pmq_client *cl)
{
	if (cl == NULL)
		return;
	assert(!cl->dead);
	/* The daemon destroys transports before the router, so clients that
	 * outlive connections (MQTT sessions) are freed while r exists. */
	while (cl->subs != NULL)
		sub_remove(r, cl->subs);
	if (r->busy > 0) {
		/* The running publish's delivery list may name cl. */
		cl->dead = 1;
		cl->gc_next = r->gc_clients;
		r->gc_clients = cl;
		return;
	}
	free(cl);
}

/* ---- router ---- */

struct router *
router_new(void)
{
	struct router *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->root = node_new("", 0);
	if (r->root == NULL) {
		free(r);
		return NULL;
	}
	r->strategy = ROUTER_SHARE_ROUND_ROBIN;
	return r;
}

static void
scratch_free(struct rscratch *sc)
{
	if (sc == NULL)
		return;
	free(sc->levels);
	free(sc->stack);
	free(sc->subs);
	free(sc->shares);
	free(sc->targets);
	free(sc->ids);
	free(sc);
}

static void
gc(struct router *r)
{
	while (r->gc_shares != NULL) {
		struct rshare *sh = r->gc_shares;

		r->gc_shares = sh->gc_next;
		free(sh->members);
		free(sh);
	}
	while (r->gc_clients != NULL) {
		struct pmq_client *cl = r->gc_clients;

		r->gc_clients = cl->gc_next;
		free(cl);
	}
}

void
router_free(struct router *r)
{
	struct rnode *list;

	if (r == NULL)
		return;
	assert(r->busy == 0);
	/* Free the tree without recursion (filters may be 32k levels deep):
	 * thread a to-do list through the now unneeded parent pointers. */
	list = r->root;
	list->tn.parent = NULL;
	while (list != NULL) {
		struct rnode *n = list;
		size_t i;

		list = (struct rnode *)n->tn.parent;
		for (i = 0; i < n->tn.cap_kids; i++) {
			struct topic_node *k = n->tn.kids[i];

			if (k != NULL) {
				k->parent = (struct topic_node *)list;
				list = (struct rnode *)k;
			}
		}
		if (n->plus != NULL) {
			n->plus->tn.parent = (struct topic_node *)list;
			list = n->plus;
		}
		if (n->hash != NULL) {
			n->hash->tn.parent = (struct topic_node *)list;
			list = n->hash;
		}
		while (n->subs != NULL) {
			struct rsub *s = n->subs;

			n->subs = s->next;
			s->cl->subs = NULL;
			s->cl->n_subs = 0;
			free(s);
		}
		while (n->shares != NULL) {
			struct rshare *sh = n->shares;
			size_t j;

			n->shares = sh->next;
			for (j = 0; j < sh->n; j++) {
				sh->members[j]->cl->subs = NULL;
				sh->members[j]->cl->n_subs = 0;
				free(sh->members[j]);
			}
			free(sh->members);
			free(sh);
		}
		free(n->tn.kids);
		free(n);
	}
	gc(r);
	scratch_free(r->spare);
	free(r);
}

size_t
router_count(const struct router *r)
{
	return r->n_subs;
}

void
router_set_share_strategy(struct router *r, int strategy)
{
	r->strategy = strategy;
}

/* ---- publish ---- */

static struct rscratch *
scratch_take(struct router *r)
{
	struct rscratch *sc = r->spare;

	if (sc != NULL) {
		r->spare = NULL;
		return sc;
	}
	/* Only a publish nested in a delivery gets here after the first. */
	return calloc(1, sizeof(*sc));
}

static void
scratch_give(struct router *r, struct rscratch *sc)
{
	if (r->spare == NULL)
		r->spare = sc;
	else
		scratch_free(sc);
}

/* Append n's subscriptions and groups to the scratch lists. */
static bool
collect(struct rscratch *sc, size_t *ns, size_t *nsh, const struct rnode *n)
{
	struct rsub *s;
	struct rshare *sh;

	for (s = n->subs; s != NULL; s = s->next) {
		if (util_grow(&sc->subs, &sc->subs_cap, *ns + 1,
		         sizeof(sc->subs[0])) != PMQ_OK)
			return false;
		sc->subs[(*ns)++] = s;
	}
	for (sh = n->shares; sh != NULL; sh = sh->next) {
		if (util_grow(&sc->shares, &sc->shares_cap, *nsh + 1,
		         sizeof(sc->shares[0])) != PMQ_OK)
			return false;
		sc->shares[(*nsh)++] = sh;
	}
	return true;
}

static bool
push(struct rscratch *sc, size_t *sp, struct rnode *n, size_t depth)
{
	if (util_grow(&sc->stack, &sc->stack_cap, *sp + 1, sizeof(sc->stack[0])) !=
	    PMQ_OK)
		return false;
	sc->stack[*sp].n = n;
	sc->stack[*sp].depth = depth;
	(*sp)++;
	return true;
}

/* Phase 1: collect every subscription and group whose filter matches. */
static bool
walk(struct router *r, struct rscratch *sc, const char *topic,
     size_t topic_len, size_t *ns, size_t *nsh)
{
	size_t nl = topic_count_levels(topic, topic_len), sp = 0;
	bool dollar = topic_len > 0 && topic[0] == '$';

	if (util_grow(&sc->levels, &sc->levels_cap, nl, sizeof(sc->levels[0])) !=
	    PMQ_OK)
		return false;
	topic_split(topic, topic_len, sc->levels);
	if (!push(sc, &sp, r->root, 0))
		return false;
	while (sp > 0) {
		struct rwalk w = sc->stack[--sp];
		const struct topic_level *lv;
		struct rnode *k;

		if (w.depth == nl) {
			/* "a/#" matches "a" too. */
			if (!collect(sc, ns, nsh, w.n) ||
			    (w.n->hash != NULL && !collect(sc, ns, nsh, w.n->hash)))
				return false;
			continue;
		}
		/* First-level wildcards never see $-topics (MQTT 4.7.2). */
		if (!(w.depth == 0 && dollar)) {
			if (w.n->hash != NULL && !collect(sc, ns, nsh, w.n->hash))
				return false;
			if (w.n->plus != NULL &&
			    !push(sc, &sp, w.n->plus, w.depth + 1))
				return false;
		}
		lv = &sc->levels[w.depth];
		k = (struct rnode *)topic_node_find(&w.n->tn, lv->p, lv->len,
		                                    lv->hash);
		if (k != NULL && !push(sc, &sp, k, w.depth + 1))
			return false;
	}
	return true;
}

size_t
router_publish(struct router *r, struct pmq_client *origin, pmq_msg *m,
               router_deliver_fn fn, void *ctx)
{
	struct rscratch *sc = scratch_take(r);
	size_t ns = 0, nsh = 0, nt = 0, nids = 0, i, count = 0;
	uint64_t gen;

	if (sc == NULL) {
		log_error("%s: no memory to route %s", __func__, m->topic);
		return 0;
	}
	if (!walk(r, sc, m->topic, m->topic_len, &ns, &nsh))
		log_error("%s: no memory to match %s; delivering %zu matches",
		          __func__, m->topic, ns + nsh);
	/* At most one delivery and one id per match: size once, up front. */
	if (util_grow(&sc->targets, &sc->targets_cap, ns + nsh,
	         sizeof(sc->targets[0])) != PMQ_OK ||
	    util_grow(&sc->ids, &sc->ids_cap, ns + nsh, sizeof(sc->ids[0])) !=
	        PMQ_OK) {
		log_error("%s: no memory to route %s to %zu matches", __func__,
		          m->topic, ns + nsh);
		scratch_give(r, sc);
		return 0;
	}

	/* Phase 2: merge per client (first pass sizes each client's ids,
	 * second fills them), then one delivery per shared group. */
	gen = ++r->gen;
	for (i = 0; i < ns; i++) {
		struct rsub *s = sc->subs[i];
		struct pmq_client *cl = s->cl;
		struct rtarget *t;

		if (s->no_local && cl == origin)
			continue;
		if (cl->gen != gen) {
			cl->gen = gen;
			cl->slot = (uint32_t)nt;
			t = &sc->targets[nt++];
			memset(t, 0, sizeof(*t));
			t->cl = cl;
		}
		t = &sc->targets[cl->slot];
		if (s->qos > t->qos)
			t->qos = s->qos;
		if (s->rap && m->retain)
			t->retain = 1;
		if (s->sub_id != 0)
			t->n_ids++;
	}
	for (i = 0; i < nt; i++) {
		struct rtarget *t = &sc->targets[i];

		t->ids_off = nids;
		nids += t->n_ids;
		t->n_ids = 0;
		if (t->qos > m->qos)
			t->qos = m->qos;
	}
	for (i = 0; i < ns; i++) {
		struct rsub *s = sc->subs[i];
		struct rtarget *t;

		if ((s->no_local && s->cl == origin) || s->sub_id == 0)
			continue;
		t = &sc->targets[s->cl->slot];
		sc->ids[t->ids_off + t->n_ids++] = s->sub_id;
	}
	for (i = 0; i < nsh; i++) {
		struct rshare *sh = sc->shares[i];
		struct rsub *s = share_pick(r, sh, origin, m);
		struct rtarget *t = &sc->targets[nt++];

		memset(t, 0, sizeof(*t));
		t->cl = s->cl;
		t->share_group = sh->group;
		t->qos = s->qos < m->qos ? s->qos : m->qos;
		t->ids_off = nids;
		if (s->sub_id != 0) {
			sc->ids[nids++] = s->sub_id;
			t->n_ids = 1;
		}
	}

	/* Phase 3: deliver.  The callback may change the tree (see top). */
	r->busy++;
	for (i = 0; i < nt; i++) {
		const struct rtarget *t = &sc->targets[i];
		struct pmq_delivery d;

		if (t->cl->dead)
			continue;
		memset(&d, 0, sizeof(d));
		d.size = sizeof(d);
		d.qos = t->qos;
		d.retain = t->retain;
		d.n_sub_ids = t->n_ids;
		d.sub_ids = t->n_ids ? &sc->ids[t->ids_off] : NULL;
		d.share_group = t->share_group;
		fn(ctx, t->cl, m, &d);
		count++;
	}
	r->busy--;
	if (r->busy == 0)
		gc(r);
	scratch_give(r, sc);
	return count;
}

bool
router_has_match(struct router *r, const char *topic, size_t len)
{
	struct rscratch *sc;
	size_t ns = 0, nsh = 0;
	bool ok;

	if (r->n_subs == 0)
		return false;
	if (topic == NULL)
		return true;
	sc = scratch_take(r);
	if (sc == NULL)
		return true; /* cannot tell: let the caller route */
	ok = walk(r, sc, topic, len, &ns, &nsh);
	scratch_give(r, sc);
	return !ok || ns + nsh > 0;
}
