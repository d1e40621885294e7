/*
 * topic.h - MQTT topic names and filters: validation, matching, shared
 * subscription parsing, and the topic-level node (a child hash table) that
 * the router and the retained index build their trees from.
 *
 * Threads: the validators, topic_match, topic_hash and topic_split are pure
 * and may be called from any thread.  topic_node_* mutate a tree owned by
 * the loop thread.
 */
#ifndef PMQ_CORE_TOPIC_H
#define PMQ_CORE_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOPIC_MAX_LEN 65535

/* Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF)
 * without U+0000, as MQTT requires of every string. */
bool topic_valid_utf8(const char *s, size_t len);

/* A topic name: 1..65535 bytes of valid UTF-8, no '+' or '#'. */
bool topic_valid_name(const char *s, size_t len);

/* A topic filter: 1..65535 bytes of valid UTF-8; '+' only as a whole level,
 * '#' only as the whole last level. */
bool topic_valid_filter(const char *s, size_t len);

/*
 * True when NUL-terminated topic name matches NUL-terminated filter, per
 * MQTT 4.7: '#' also matches the parent level ("a/#" matches "a"), '+'
 * matches exactly one level (possibly empty), and a wildcard in the first
 * level never matches a topic starting with '$'.  Both arguments are assumed
 * valid (check with the validators first); invalid input gives an
 * unspecified answer but never reads out of bounds.
 */
bool topic_match(const char *filter, const char *topic);

/*
 * Parse a shared subscription "$share/<group>/<filter>".
 * Returns 1 when s is one: *group is a new string the caller releases with
 * free(), *filter points into s.  Returns 0 when s is not a shared filter
 * (does not start with "$share/"): *group = NULL, *filter = s; s itself is
 * not validated then.  Returns PMQ_ERR_INVAL when the group is empty or
 * holds '+', '#' or is not valid UTF-8, or the filter part is not a valid
 * filter; PMQ_ERR_NOMEM.  On error *group = NULL.
 */
int topic_parse_share(const char *s, char **group, const char **filter);

/* A shared-subscription group name: non-empty UTF-8, no '/', '+', '#'. */
bool topic_valid_share_group(const char *group);

/* Hash of one level's bytes (FNV-1a, mixed), used by the node tables. */
uint64_t topic_hash(const char *s, size_t len);

/* One level of a topic or filter: a view into the string. */
struct topic_level {
	const char *p;
	size_t len;
	uint64_t hash;
};

/* Number of levels in s (1 + number of '/'). */
size_t topic_count_levels(const char *s, size_t len);
/* Fill out[0..topic_count_levels(s, len)) with s's levels and hashes. */
void topic_split(const char *s, size_t len, struct topic_level *out);

/*
 * One level of a topic tree.  Router and retain nodes embed it as their
 * first member.  Named children live in an open-addressing hash table
 * (linear probing, power-of-two capacity) so a lookup costs O(1) whatever
 * the fan-out; the table is freed when it empties.  level points at bytes
 * the embedding node owns (usually a flexible array after it).
 */
struct topic_node {
	struct topic_node *parent;
	struct topic_node **kids;
	size_t n_kids;
	size_t cap_kids; /* 0 or a power of two */
	uint64_t hash;   /* topic_hash(level, len) */
	const char *level;
	size_t len;
};

/* The named child of p with this level, or NULL. */
struct topic_node *topic_node_find(const struct topic_node *p,
                                   const char *level, size_t len,
                                   uint64_t hash);
/* Insert kid (level, len, hash set; not already present) under p and set
 * kid->parent.  PMQ_OK or PMQ_ERR_NOMEM (then nothing changed). */
int topic_node_add(struct topic_node *p, struct topic_node *kid);
/* Remove kid from p's table (kid is not freed). */
void topic_node_remove(struct topic_node *p, struct topic_node *kid);

#endif
