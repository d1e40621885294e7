/*
 * topic.c - MQTT topic validation and matching, shared-subscription
 * parsing, and the child hash table of topic-tree nodes (see topic.h).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <plexmq/types.h>

#include "topic.h"

bool
topic_valid_utf8(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n, k;
		uint32_t cp, min;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false; /* continuation byte or 0xf8.. lead */
		}
		if (len - i - 1 < n)
			return false; /* truncated sequence */
		for (k = 1; k <= n; k++) {
			unsigned cc = s[i + k];

			if ((cc & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (cc & 0x3f);
		}
		/* Overlong forms would let "/" or NUL hide in a level. */
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

bool
topic_valid_name(const char *s, size_t len)
{
	if (s == NULL || len == 0 || len > TOPIC_MAX_LEN)
		return false;
	if (memchr(s, '+', len) != NULL || memchr(s, '#', len) != NULL)
		return false;
	return topic_valid_utf8(s, len);
}

bool
topic_valid_filter(const char *s, size_t len)
{
	size_t i;

	if (s == NULL || len == 0 || len > TOPIC_MAX_LEN)
		return false;
	for (i = 0; i < len; i++) {
		int start = (i == 0 || s[i - 1] == '/');

		if (s[i] == '+') {
			if (!start || (i + 1 < len && s[i + 1] != '/'))
				return false;
		} else if (s[i] == '#') {
			if (!start || i + 1 != len)
				return false;
		}
	}
	return topic_valid_utf8(s, len);
}

bool
topic_match(const char *f, const char *t)
{
	/* MQTT 4.7.2: $-topics are invisible to first-level wildcards. */
	if (t[0] == '$' && (f[0] == '+' || f[0] == '#'))
		return false;
	for (;;) {
		/* Here f and t both stand at the start of a level. */
		if (f[0] == '#')
			return true;
		if (f[0] == '+') {
			f++;
			while (*t != '\0' && *t != '/')
				t++;
		} else {
			while (*f != '\0' && *f != '/' && *f == *t)
				f++, t++;
			if ((*f != '\0' && *f != '/') || (*t != '\0' && *t != '/'))
				return false;
		}
		if (*f == '\0' && *t == '\0')
			return true;
		if (*t == '\0') /* "a/#" also matches "a" */
			return f[0] == '/' && f[1] == '#' && f[2] == '\0';
		if (*f == '\0')
			return false;
		f++, t++;
	}
}

bool
topic_valid_share_group(const char *g)
{
	size_t len;

	if (g == NULL || (len = strlen(g)) == 0)
		return false;
	if (strpbrk(g, "/+#") != NULL)
		return false;
	return topic_valid_utf8(g, len);
}

int
topic_parse_share(const char *s, char **group, const char **filter)
{
	const char *g, *slash;
	char *dup;

	*group = NULL;
	*filter = s;
	if (strncmp(s, "$share/", 7) != 0)
		return 0;
	g = s + 7;
	slash = strchr(g, '/');
	if (slash == NULL || slash == g)
		return PMQ_ERR_INVAL;
	if (memchr(g, '+', (size_t)(slash - g)) != NULL ||
	    memchr(g, '#', (size_t)(slash - g)) != NULL ||
	    !topic_valid_utf8(g, (size_t)(slash - g)))
		return PMQ_ERR_INVAL;
	if (!topic_valid_filter(slash + 1, strlen(slash + 1)))
		return PMQ_ERR_INVAL;
	dup = strndup(g, (size_t)(slash - g));
	if (dup == NULL)
		return PMQ_ERR_NOMEM;
	*group = dup;
	*filter = slash + 1;
	return 1;
}

uint64_t
topic_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	/* FNV's low bits are weak; the tables index by them. */
	h ^= h >> 32;
	h *= 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

size_t
topic_count_levels(const char *s, size_t len)
{
	size_t i, n = 1;

	for (i = 0; i < len; i++)
		n += (s[i] == '/');
	return n;
}

void
topic_split(const char *s, size_t len, struct topic_level *out)
{
	size_t start = 0, i, n = 0;

	for (i = 0; i <= len; i++) {
		if (i == len || s[i] == '/') {
			out[n].p = s + start;
			out[n].len = i - start;
			out[n].hash = topic_hash(s + start, i - start);
			n++;
			start = i + 1;
		}
	}
}

struct topic_node *
topic_node_find(const struct topic_node *p, const char *level, size_t len,
                uint64_t hash)
{
	struct topic_node *k;
	size_t mask, i;

	if (p->cap_kids == 0)
		return NULL;
	mask = p->cap_kids - 1;
	for (i = hash & mask; (k = p->kids[i]) != NULL; i = (i + 1) & mask) {
		if (k->hash == hash && k->len == len &&
		    memcmp(k->level, level, len) == 0)
			return k;
	}
	return NULL;
}

/* Place kid in table kids of capacity cap (which has a free slot). */
static void
node_place(struct topic_node **kids, size_t cap, struct topic_node *kid)
{
	size_t mask = cap - 1, i;

	for (i = kid->hash & mask; kids[i] != NULL; i = (i + 1) & mask)
		;
	kids[i] = kid;
}

int
topic_node_add(struct topic_node *p, struct topic_node *kid)
{
	/* Keep the load factor at most 3/4 so probe runs stay short. */
	if ((p->n_kids + 1) * 4 > p->cap_kids * 3) {
		size_t cap = p->cap_kids ? p->cap_kids * 2 : 4, i;
		struct topic_node **kids = calloc(cap, sizeof(*kids));

		if (kids == NULL)
			return PMQ_ERR_NOMEM;
		for (i = 0; i < p->cap_kids; i++)
			if (p->kids[i] != NULL)
				node_place(kids, cap, p->kids[i]);
		free(p->kids);
		p->kids = kids;
		p->cap_kids = cap;
	}
	node_place(p->kids, p->cap_kids, kid);
	p->n_kids++;
	kid->parent = p;
	return PMQ_OK;
}

void
topic_node_remove(struct topic_node *p, struct topic_node *kid)
{
	size_t mask, i, j;

	assert(p->cap_kids != 0);
	mask = p->cap_kids - 1;
	for (i = kid->hash & mask; p->kids[i] != kid; i = (i + 1) & mask)
		assert(p->kids[i] != NULL);
	p->kids[i] = NULL;
	p->n_kids--;
	if (p->n_kids == 0) {
		free(p->kids);
		p->kids = NULL;
		p->cap_kids = 0;
		return;
	}
	/* Backward-shift deletion: pull later entries of the probe run into
	 * the hole unless that would move them before their home slot. */
	for (j = (i + 1) & mask; p->kids[j] != NULL; j = (j + 1) & mask) {
		size_t home = p->kids[j]->hash & mask;
		int between = (i <= j) ? (i < home && home <= j)
		                       : (i < home || home <= j);

		if (!between) {
			p->kids[i] = p->kids[j];
			p->kids[j] = NULL;
			i = j;
		}
	}
}
