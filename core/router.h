/*
 * router.h - the subscription tree and live fan-out: topic filters in a
 * tree of levels ('+' and '#' children kept apart from named ones), so a
 * publish costs O(topic depth x matching branches), not O(subscriptions).
 * Also MQTT shared subscriptions: a group keyed by (group, filter) gets
 * each matching message once, on one member.
 *
 * Threads: loop thread only.  Fan-out allocates nothing per match in the
 * steady state: it collects into scratch arrays the router owns and reuses.
 *
 * Re-entrancy: the deliver callback may subscribe, unsubscribe, free
 * clients (including the one being delivered to: later deliveries to it
 * from the same publish are skipped) and publish again (a nested publish
 * uses its own scratch).  It must not call router_free.
 */
#ifndef PMQ_CORE_ROUTER_H
#define PMQ_CORE_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plexmq/types.h>

struct router;
struct rsub;

/*
 * A subscriber identity (opaque to plugins).  Created by
 * router_client_new; inst, id and udata are for the host and transport.
 */
struct pmq_client {
	struct router *router;
	struct pmq_instance *inst; /* the transport instance that owns it */
	void *udata;               /* the transport's, passed back on delivery */
	struct rsub *subs;         /* this client's subscriptions */
	/* Matcher scratch: the publish generation that last touched this
	 * client and its slot in that publish's delivery list. */
	uint64_t gen;
	struct pmq_client *gc_next;
	uint32_t slot;
	uint32_t n_subs : 31;
	uint32_t dead : 1;         /* freed during a publish; released after */
	/* For logs and sticky hashing; in the same block (one allocation per
	 * client: an idle MQTT connection has one). */
	char id[];
};

/* Shared-subscription member choice. */
enum {
	ROUTER_SHARE_ROUND_ROBIN = 0,    /* rotate through members */
	ROUTER_SHARE_STICKY_PUBLISHER,   /* hash of the origin client's id */
	ROUTER_SHARE_STICKY_TOPIC        /* hash of the topic */
};

/* Returns a new, empty router owned by the caller, or NULL (no memory). */
struct router *router_new(void);
/* Frees the tree and every subscription.  Free the clients first
 * (router_client_free); clients still alive lose their subscriptions and
 * must not be used with this router again except to be freed by free(). */
void router_free(struct router *r);

/* Returns a new client owned by the caller (release with
 * router_client_free), or NULL (no memory).  id is copied (NULL = ""). */
struct pmq_client *router_client_new(struct router *r,
                                     struct pmq_instance *inst,
                                     const char *id, void *udata);
/* Removes every subscription of cl and frees it (deferred to the end of
 * the outermost router_publish when called from a deliver callback).
 * NULL is ignored. */
void router_client_free(struct router *r, struct pmq_client *cl);

/*
 * Add or replace cl's subscription (filter, opts->share_group).  filter is
 * a plain topic filter (the caller strips "$share/<g>/", see
 * topic_parse_share); opts is copied.  Returns 0 when new, 1 when it
 * replaced one (options updated, shared position kept), PMQ_ERR_INVAL for
 * a bad filter, group or qos, PMQ_ERR_NOMEM.
 */
int router_subscribe(struct router *r, struct pmq_client *cl,
                     const char *filter, const struct pmq_sub_opts *opts);

/* Remove cl's subscription (filter, share_group; NULL = not shared).
 * PMQ_OK or PMQ_ERR_NOTFOUND. */
int router_unsubscribe(struct router *r, struct pmq_client *cl,
                       const char *filter, const char *share_group);

/* One delivery: m and d are borrowed for the call (msg_ref m to keep it). */
typedef void (*router_deliver_fn)(void *ctx, struct pmq_client *cl,
                                  pmq_msg *m, const struct pmq_delivery *d);

/*
 * Route m (its topic) to every matching subscriber, calling fn once per
 * delivery; origin (may be NULL) is the publishing client, for no-local
 * and sticky-publisher choice.  Returns the number of deliveries.
 *  - All non-shared subscriptions of one client that match make ONE
 *    delivery: qos = min(m->qos, max granted qos), sub_ids = every
 *    non-zero identifier, retain = m->retain if any match has
 *    retain_as_published, else 0.  A subscription with no_local is
 *    skipped when its client is origin.
 *  - Each matching shared group makes one delivery to one member, with
 *    share_group set, that member's own sub_id and retain 0 (MQTT 5
 *    3.8.3.1); no_local does not apply to shared subscriptions.
 * Deliveries to non-shared subscribers come first, in match order.  On
 * no memory for the scratch arrays the error is logged and the matches
 * collected so far are delivered.
 */
size_t router_publish(struct router *r, struct pmq_client *origin,
                      pmq_msg *m, router_deliver_fn fn, void *ctx);

/* True when a publish on topic (len bytes; NULL = any topic) would match
 * at least one subscription now; also true when it cannot tell (no
 * memory), so callers only ever skip work that has no reader. */
bool router_has_match(struct router *r, const char *topic, size_t len);

/* Live subscriptions (shared members included). */
size_t router_count(const struct router *r);

/* ROUTER_SHARE_*; unknown values mean round robin. */
void router_set_share_strategy(struct router *r, int strategy);

#endif
