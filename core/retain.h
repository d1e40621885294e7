/*
 * retain.h - the in-memory index of retained messages: one message per
 * topic, in a tree of topic levels so a subscription's filter walks only
 * the branches it can match.  Persistence is state.c's job (msg_encode).
 *
 * Threads: loop thread only.
 */
#ifndef PMQ_CORE_RETAIN_H
#define PMQ_CORE_RETAIN_H

#include <stddef.h>

#include <plexmq/types.h>

struct retain;

/* Returns a new, empty index owned by the caller, or NULL (no memory). */
struct retain *retain_new(void);
/* Drops every held message reference and frees the index.  NULL ignored. */
void retain_free(struct retain *r);

/*
 * Store m as the retained message of its topic, replacing any previous one
 * (whose reference is dropped).  Takes a new reference to m; the caller
 * keeps its own.  An empty payload clears the topic instead (m itself is
 * not kept).  PMQ_OK or PMQ_ERR_NOMEM (then nothing changed).
 */
int retain_set(struct retain *r, pmq_msg *m);

/* The retained message of topic (a topic name), or NULL when none or it
 * has expired.  Borrowed: msg_ref it to keep it past the next retain_set. */
pmq_msg *retain_get(struct retain *r, const char *topic);

/*
 * Call fn(ctx, m) for every retained, unexpired message whose topic
 * matches filter (MQTT rules, see topic_match), in no particular order.
 * m is borrowed for the call.  fn may call retain_set/retain_match.
 * Returns the number of calls; 0 for an invalid filter.  On no memory the
 * error is logged and the matches found so far are visited.
 */
size_t retain_match(struct retain *r, const char *filter,
                    void (*fn)(void *ctx, pmq_msg *m), void *ctx);

/* Retained messages held (expired ones not yet replaced included). */
size_t retain_count(const struct retain *r);

#endif
