/*
 * redis_pubsub.c - an out-of-tree plexmq transport speaking the pub/sub
 * subset of the Redis protocol (RESP2), so `redis-cli` and Redis client
 * libraries can publish and subscribe through plexmq.  Built only from the
 * installed SDK (`pkg-config --cflags plexmq-plugin`); see README.md.
 *
 * Commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH,
 * PING, QUIT, as RESP arrays of bulk strings (what clients send) or as
 * inline commands (words separated by spaces, for nc/telnet; no quoting).
 *
 * How Redis maps onto plexmq (README.md has the full list):
 *   - A channel is a plexmq topic, byte for byte: PUBLISH sensors/kitchen
 *     reaches an MQTT or tcp subscriber of sensors/#, and the other way
 *     round.  A channel that is not a valid topic (empty, holding + or #
 *     or a NUL, not UTF-8) is refused with an error.
 *   - PSUBSCRIBE takes Redis glob patterns (* ? [...] \).  The router knows
 *     only MQTT filters, so each pattern is subscribed as the narrowest
 *     MQTT filter that contains every topic the glob can match: its
 *     leading levels without glob characters followed by "#" ("sensors/ *"
 *     -> "sensors/#", "news.*" -> "#"), and the plugin matches the glob
 *     itself on every delivery.  Consequence: MQTT's rule that "#" at the
 *     first level does not match topics starting with "$" applies, so
 *     "*" does not see "$SYS/..." topics.
 *   - PUBLISH answers with the number of receivers the Redis way: one per
 *     matching channel subscription plus one per matching pattern, of
 *     every Redis client, plus one per delivery to clients of other
 *     transports.  The host's n_delivered counts one delivery per client;
 *     the plugin corrects it with what it actually sent (see rp_pub).
 *   - Pub/sub is at most once, as in Redis: QoS 0, nothing is stored
 *     unless a [rule] logs the topic.  A subscriber whose output passes
 *     the listener's output_high_water is disconnected, like Redis's
 *     client-output-buffer-limit for pubsub clients.
 *
 * Threads: every function runs on the host's loop thread (host.h).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plexmq/plexmq.h>

#define RP_MAX_BULK_DEFAULT (512 * 1024) /* largest argument */
#define RP_MAX_ARGS_DEFAULT 1024         /* most arguments per command */
#define RP_MAX_SUBS_DEFAULT 10000        /* channels + patterns per client */
#define RP_MAX_INLINE (64 * 1024)        /* longest inline command */
#define RP_MAX_PENDING 1024              /* PUBLISH awaiting completion */
#define RP_MAX_PATTERN 1024              /* longest glob pattern */
#define RP_GLOB_DEPTH 32                 /* '*' nesting the matcher follows */

static const struct pmq_host_api *api;

/* One listener section ("[listener redis]"). */
struct rp_listener {
	pmq_instance *inst;
	uint64_t max_bulk;
	int64_t max_args;
	int64_t max_subs;
};

/* One PSUBSCRIBE pattern (bytes, not NUL-terminated). */
struct rp_pat {
	struct rp_pat *next;
	size_t len;
	char pat[];
};

/* One router subscription of a client: an MQTT filter, the sub_id that
 * tells its deliveries apart, and what Redis subscribed through it. */
struct rp_sub {
	struct rp_sub *next;
	uint32_t sub_id;
	int channel;          /* SUBSCRIBE <filter>: filter is the channel */
	struct rp_pat *pats;  /* PSUBSCRIBE patterns mapped to this filter */
	char filter[];
};

/* One connection; refcounted like the tcp template: the connection holds
 * one reference, each pending PUBLISH one more; c is NULL once closed. */
struct rp_conn {
	struct rp_listener *l;
	pmq_conn *c;
	pmq_client *cl;
	unsigned refs;
	unsigned pending;
	struct rp_sub *subs;
	uint32_t next_sub_id;
	size_t n_channels;
	size_t n_patterns;
	unsigned closing : 1;
	unsigned paused : 1;
	unsigned parsing : 1;
};

/*
 * A PUBLISH waiting for its completion.  It keeps the message (so the
 * pointer identifies it) and collects in extra the difference between
 * the messages this plugin sent for it and the deliveries it received
 * (a Redis client with a channel and a pattern matching gets two
 * messages from one delivery; a pattern whose glob does not match gets
 * none).  The host delivers before it completes the publish.
 */
struct rp_pub {
	struct rp_pub *next;
	struct rp_conn *rc;
	pmq_slot *slot;
	pmq_msg *m;
	int64_t extra;
};
static struct rp_pub *rp_pubs; /* every pending PUBLISH of every listener */

/* A growable output buffer; err is set once an allocation failed. */
struct rp_buf {
	char *p;
	size_t len, cap;
	int err;
};

/* One parsed command: args point into a private copy of the frame. */
struct rp_cmd {
	int argc;
	const char **argv;
	size_t *lens;
	char *frame;
};

static void rp_parse(struct rp_conn *rc);

/* ---- output ---- */

static void
rp_put(struct rp_buf *b, const void *p, size_t n)
{
	if (b->err)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *np;

		while (cap < b->len + n)
			cap *= 2;
		np = realloc(b->p, cap);
		if (np == NULL) {
			b->err = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void PMQ_PRINTF(2, 3)
rp_putf(struct rp_buf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		rp_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void
rp_bulk(struct rp_buf *b, const void *p, size_t n)
{
	rp_putf(b, "$%zu\r\n", n);
	rp_put(b, p, n);
	rp_put(b, "\r\n", 2);
}

/* Send b on the connection, in reply order, and free it. */
static void
rp_flush(struct rp_conn *rc, struct rp_buf *b)
{
	if (!b->err && b->len > 0 && rc->c != NULL)
		api->conn_send(rc->c, b->p, b->len, PMQ_SEND_ORDERED);
	free(b->p);
	memset(b, 0, sizeof *b);
}

static void PMQ_PRINTF(2, 3)
rp_error(struct rp_conn *rc, const char *fmt, ...)
{
	struct rp_buf b = { 0 };
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	rp_put(&b, "-", 1);
	rp_put(&b, msg, strlen(msg));
	rp_put(&b, "\r\n", 2);
	rp_flush(rc, &b);
}

/* A protocol error: the stream cannot be framed any more (Redis replies
 * and closes the same way). */
static void
rp_protocol_error(struct rp_conn *rc, const char *what)
{
	api->log(rc->l->inst, PMQ_LOG_INFO, "%s: protocol error: %s, closing",
	         api->conn_peer(rc->c), what);
	rp_error(rc, "ERR Protocol error: %s", what);
	rc->closing = 1;
	api->conn_close(rc->c, 1);
}

/* ---- Redis glob patterns ---- */

/* Redis's stringmatchlen() semantics, case-sensitive: * ? [abc] [^a]
 * [a-z] and \x.  depth bounds the backtracking on '*'. */
static int
rp_glob(const char *p, size_t pn, const char *s, size_t sn, int depth)
{
	if (depth > RP_GLOB_DEPTH)
		return 0;
	while (pn > 0) {
		switch (p[0]) {
		case '*':
			while (pn > 1 && p[1] == '*') {
				p++;
				pn--;
			}
			if (pn == 1)
				return 1;
			for (;;) {
				if (rp_glob(p + 1, pn - 1, s, sn, depth + 1))
					return 1;
				if (sn == 0)
					return 0;
				s++;
				sn--;
			}
		case '?':
			if (sn == 0)
				return 0;
			s++;
			sn--;
			break;
		case '[': {
			int negate, match = 0;

			p++;
			pn--;
			negate = pn > 0 && p[0] == '^';
			if (negate) {
				p++;
				pn--;
			}
			while (pn > 0 && p[0] != ']') {
				if (p[0] == '\\' && pn >= 2) {
					p++;
					pn--;
					if (sn > 0 && p[0] == s[0])
						match = 1;
				} else if (pn >= 3 && p[1] == '-') {
					unsigned char lo = (unsigned char)p[0];
					unsigned char hi = (unsigned char)p[2];
					unsigned char c = sn > 0 ? (unsigned char)s[0] : 0;

					if (lo > hi) {
						unsigned char t = lo;
						lo = hi;
						hi = t;
					}
					if (sn > 0 && c >= lo && c <= hi)
						match = 1;
					p += 2;
					pn -= 2;
				} else if (sn > 0 && p[0] == s[0]) {
					match = 1;
				}
				p++;
				pn--;
			}
			if (negate)
				match = !match;
			if (!match || sn == 0)
				return 0;
			s++;
			sn--;
			if (pn == 0) /* unterminated '[': the end closes it */
				return sn == 0;
			break; /* p[0] is ']' */
		}
		case '\\':
			if (pn >= 2) {
				p++;
				pn--;
			}
			/* fall through */
		default:
			if (sn == 0 || p[0] != s[0])
				return 0;
			s++;
			sn--;
			break;
		}
		p++;
		pn--;
	}
	return sn == 0;
}

/* The MQTT filter a glob is subscribed as (a new string, or NULL): the
 * pattern itself when it has no glob character, else its leading levels
 * free of glob characters and of characters no topic holds, then "#". */
static char *
rp_glob_filter(const char *pat, size_t len)
{
	size_t i, keep = 0;
	char *f;

	for (i = 0; i < len; i++) {
		if (strchr("*?[\\+#", pat[i]) != NULL || pat[i] == '\0')
			break;
		if (pat[i] == '/')
			keep = i + 1;
	}
	if (i == len) {
		f = malloc(len + 1);
		if (f != NULL) {
			memcpy(f, pat, len);
			f[len] = '\0';
		}
		return f;
	}
	f = malloc(keep + 2);
	if (f != NULL) {
		memcpy(f, pat, keep);
		memcpy(f + keep, "#", 2);
	}
	return f;
}

/* ---- subscriptions ---- */

static struct rp_sub *
rp_sub_find(struct rp_conn *rc, const char *filter)
{
	struct rp_sub *s;

	for (s = rc->subs; s != NULL; s = s->next)
		if (strcmp(s->filter, filter) == 0)
			return s;
	return NULL;
}

static struct rp_sub *
rp_sub_by_id(struct rp_conn *rc, uint32_t id)
{
	struct rp_sub *s;

	for (s = rc->subs; s != NULL; s = s->next)
		if (s->sub_id == id)
			return s;
	return NULL;
}

/* The subscription for filter, subscribing it in the router if new.
 * NULL after replying with the error. */
static struct rp_sub *
rp_sub_get(struct rp_conn *rc, const char *filter, const char *what)
{
	struct pmq_sub_opts o;
	struct rp_sub *s = rp_sub_find(rc, filter);
	size_t n = strlen(filter);
	int r;

	if (s != NULL)
		return s;
	s = calloc(1, sizeof *s + n + 1);
	if (s == NULL) {
		rp_error(rc, "ERR out of memory");
		return NULL;
	}
	memcpy(s->filter, filter, n + 1);
	/* sub_id tells which subscription a delivery came through. */
	s->sub_id = ++rc->next_sub_id;
	memset(&o, 0, sizeof o);
	o.size = sizeof o;
	o.qos = 0;
	o.sub_id = s->sub_id;
	r = api->subscribe(rc->cl, filter, &o);
	if (r < 0) {
		free(s);
		if (r == PMQ_ERR_INVAL)
			rp_error(rc, "ERR invalid %s for plexmq: must be a valid "
			         "topic (UTF-8, no + # or NUL, not empty)", what);
		else
			rp_error(rc, "ERR %s", api->strerror(r));
		return NULL;
	}
	s->next = rc->subs;
	rc->subs = s;
	return s;
}

/* Drop s from the router and free it once nothing uses it. */
static void
rp_sub_release(struct rp_conn *rc, struct rp_sub *s)
{
	struct rp_sub **pp;

	if (s->channel || s->pats != NULL)
		return;
	for (pp = &rc->subs; *pp != s; pp = &(*pp)->next)
		;
	*pp = s->next;
	api->unsubscribe(rc->cl, s->filter, NULL);
	free(s);
}

static void
rp_sub_free_all(struct rp_conn *rc)
{
	struct rp_sub *s, *next;
	struct rp_pat *p, *pn;

	for (s = rc->subs; s != NULL; s = next) {
		next = s->next;
		for (p = s->pats; p != NULL; p = pn) {
			pn = p->next;
			free(p);
		}
		free(s);
	}
	rc->subs = NULL;
}

/* *3 kind name :count, the answer to each (un)subscribed name. */
static void
rp_sub_reply(struct rp_conn *rc, const char *kind, const char *name,
             size_t len)
{
	struct rp_buf b = { 0 };

	rp_put(&b, "*3\r\n", 4);
	rp_bulk(&b, kind, strlen(kind));
	if (name != NULL)
		rp_bulk(&b, name, len);
	else
		rp_put(&b, "$-1\r\n", 5);
	rp_putf(&b, ":%zu\r\n", rc->n_channels + rc->n_patterns);
	rp_flush(rc, &b);
}

/* A channel as a C string: NULL (after replying) if it holds a NUL. */
static char *
rp_cstr(struct rp_conn *rc, const char *p, size_t n, const char *what)
{
	char *s;

	if (memchr(p, '\0', n) != NULL) {
		rp_error(rc, "ERR invalid %s for plexmq: holds a NUL byte", what);
		return NULL;
	}
	s = malloc(n + 1);
	if (s == NULL) {
		rp_error(rc, "ERR out of memory");
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static int
rp_full(struct rp_conn *rc)
{
	if ((int64_t)(rc->n_channels + rc->n_patterns) < rc->l->max_subs)
		return 0;
	rp_error(rc, "ERR too many subscriptions on this connection "
	         "(max_subscriptions = %" PRId64 ")", rc->l->max_subs);
	return 1;
}

static void
rp_cmd_subscribe(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	int i;

	for (i = 1; i < cmd->argc; i++) {
		struct rp_sub *s;
		char *ch;

		/* A channel holding + or # would be a wildcard filter. */
		if (cmd->lens[i] == 0 ||
		    memchr(cmd->argv[i], '+', cmd->lens[i]) != NULL ||
		    memchr(cmd->argv[i], '#', cmd->lens[i]) != NULL) {
			rp_error(rc, "ERR invalid channel for plexmq: must be a "
			         "valid topic (UTF-8, no + # or NUL, not empty)");
			continue;
		}
		ch = rp_cstr(rc, cmd->argv[i], cmd->lens[i], "channel");
		if (ch == NULL)
			continue;
		s = rp_sub_find(rc, ch);
		if (s == NULL || !s->channel) {
			if (rp_full(rc) ||
			    (s = rp_sub_get(rc, ch, "channel")) == NULL) {
				free(ch);
				continue;
			}
			s->channel = 1;
			rc->n_channels++;
		}
		rp_sub_reply(rc, "subscribe", ch, cmd->lens[i]);
		free(ch);
	}
}

static void
rp_unsubscribe_one(struct rp_conn *rc, const char *ch, size_t len)
{
	struct rp_sub *s = memchr(ch, '\0', len) ? NULL : rp_sub_find(rc, ch);

	if (s != NULL && s->channel) {
		s->channel = 0;
		rc->n_channels--;
		rp_sub_release(rc, s);
	}
	rp_sub_reply(rc, "unsubscribe", ch, len);
}

static void
rp_cmd_unsubscribe(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	int i;

	if (cmd->argc == 1) { /* all channels */
		if (rc->n_channels == 0) {
			rp_sub_reply(rc, "unsubscribe", NULL, 0);
			return;
		}
		while (rc->n_channels > 0) {
			struct rp_sub *s;
			char *ch;

			for (s = rc->subs; !s->channel; s = s->next)
				;
			ch = malloc(strlen(s->filter) + 1); /* s may be freed */
			if (ch == NULL) {
				rp_error(rc, "ERR out of memory");
				return;
			}
			strcpy(ch, s->filter);
			rp_unsubscribe_one(rc, ch, strlen(ch));
			free(ch);
		}
		return;
	}
	for (i = 1; i < cmd->argc; i++) {
		char *ch = malloc(cmd->lens[i] + 1);

		if (ch == NULL) {
			rp_error(rc, "ERR out of memory");
			return;
		}
		memcpy(ch, cmd->argv[i], cmd->lens[i]);
		ch[cmd->lens[i]] = '\0';
		rp_unsubscribe_one(rc, ch, cmd->lens[i]);
		free(ch);
	}
}

static struct rp_pat **
rp_pat_find(struct rp_sub *s, const char *pat, size_t len)
{
	struct rp_pat **pp;

	for (pp = &s->pats; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->len == len && memcmp((*pp)->pat, pat, len) == 0)
			return pp;
	return NULL;
}

static void
rp_cmd_psubscribe(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	int i;

	for (i = 1; i < cmd->argc; i++) {
		const char *pat = cmd->argv[i];
		size_t len = cmd->lens[i];
		struct rp_sub *s;
		struct rp_pat *p;
		char *filter;

		if (len > RP_MAX_PATTERN) {
			rp_error(rc, "ERR pattern longer than %d bytes",
			         RP_MAX_PATTERN);
			continue;
		}
		filter = rp_glob_filter(pat, len);
		if (filter == NULL) {
			rp_error(rc, "ERR out of memory");
			continue;
		}
		s = rp_sub_find(rc, filter);
		if (s == NULL || rp_pat_find(s, pat, len) == NULL) {
			if (rp_full(rc) ||
			    (s = rp_sub_get(rc, filter, "pattern")) == NULL) {
				free(filter);
				continue;
			}
			p = malloc(sizeof *p + len);
			if (p == NULL) {
				rp_sub_release(rc, s);
				rp_error(rc, "ERR out of memory");
				free(filter);
				continue;
			}
			p->len = len;
			memcpy(p->pat, pat, len);
			p->next = s->pats;
			s->pats = p;
			rc->n_patterns++;
		}
		free(filter);
		rp_sub_reply(rc, "psubscribe", pat, len);
	}
}

static void
rp_punsubscribe_one(struct rp_conn *rc, const char *pat, size_t len)
{
	char *filter = rp_glob_filter(pat, len);
	struct rp_sub *s = filter ? rp_sub_find(rc, filter) : NULL;
	struct rp_pat **pp = s ? rp_pat_find(s, pat, len) : NULL;

	free(filter);
	if (pp != NULL) {
		struct rp_pat *p = *pp;

		*pp = p->next;
		free(p);
		rc->n_patterns--;
		rp_sub_release(rc, s);
	}
	rp_sub_reply(rc, "punsubscribe", pat, len);
}

static void
rp_cmd_punsubscribe(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	int i;

	if (cmd->argc == 1) { /* all patterns */
		if (rc->n_patterns == 0) {
			rp_sub_reply(rc, "punsubscribe", NULL, 0);
			return;
		}
		while (rc->n_patterns > 0) {
			struct rp_sub *s;
			struct rp_pat *p;
			char *copy;
			size_t len;

			for (s = rc->subs; s->pats == NULL; s = s->next)
				;
			p = s->pats;
			len = p->len;
			copy = malloc(len ? len : 1); /* p may be freed */
			if (copy == NULL) {
				rp_error(rc, "ERR out of memory");
				return;
			}
			memcpy(copy, p->pat, len);
			rp_punsubscribe_one(rc, copy, len);
			free(copy);
		}
		return;
	}
	for (i = 1; i < cmd->argc; i++)
		rp_punsubscribe_one(rc, cmd->argv[i], cmd->lens[i]);
}

/* ---- PUBLISH ---- */

static void
rp_conn_unref(struct rp_conn *rc)
{
	if (--rc->refs == 0)
		free(rc);
}

static void
rp_pub_done(void *arg, int status, const struct pmq_publish_result *res)
{
	struct rp_pub *p = arg, **pp;
	struct rp_conn *rc = p->rc;
	char buf[64];
	int64_t n;
	int len;

	for (pp = &rp_pubs; *pp != p; pp = &(*pp)->next)
		;
	*pp = p->next;
	if (rc->c != NULL) {
		if (status == PMQ_OK) {
			n = (int64_t)res->n_delivered + p->extra;
			len = snprintf(buf, sizeof buf, ":%" PRId64 "\r\n",
			               n < 0 ? 0 : n);
		} else {
			len = snprintf(buf, sizeof buf, "-ERR %s\r\n",
			               api->strerror(status));
		}
		api->slot_send(p->slot, buf, (size_t)len);
	}
	/* Closed even after conn_closed: the host keeps the slot till then. */
	api->slot_close(p->slot);
	api->msg_unref(p->m);
	free(p);
	rc->pending--;
	if (rc->c != NULL && rc->paused && !rc->closing)
		rp_parse(rc);
	rp_conn_unref(rc);
}

static void
rp_cmd_publish(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	struct pmq_msg_fields f;
	struct rp_pub *p;
	int r;

	if (cmd->lens[1] == 0 || memchr(cmd->argv[1], '\0', cmd->lens[1])) {
		rp_error(rc, "ERR invalid channel for plexmq: must be a valid "
		         "topic (UTF-8, no + # or NUL, not empty)");
		return;
	}
	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	f.qos = 0; /* Redis pub/sub is at most once */
	f.topic = cmd->argv[1];
	f.topic_len = cmd->lens[1];
	f.payload = cmd->argv[2];
	f.payload_len = cmd->lens[2];
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		rp_error(rc, "ERR out of memory");
		return;
	}
	p->m = api->msg_new(&f, &r);
	if (p->m == NULL) {
		free(p);
		if (r == PMQ_ERR_INVAL)
			rp_error(rc, "ERR invalid channel for plexmq: must be a "
			         "valid topic (UTF-8, no + # or NUL, not empty)");
		else
			rp_error(rc, "ERR %s", api->strerror(r));
		return;
	}
	/* The answer comes with the completion: reserve its place now. */
	p->slot = api->slot_open(rc->c);
	if (p->slot == NULL) {
		api->msg_unref(p->m);
		free(p);
		rp_error(rc, "ERR out of memory");
		return;
	}
	p->rc = rc;
	rc->refs++;
	rc->pending++;
	p->next = rp_pubs;
	rp_pubs = p;
	r = api->publish(rc->cl, p->m, 0, rp_pub_done, p);
	if (r != PMQ_OK) {
		struct pmq_publish_result none;

		memset(&none, 0, sizeof none);
		none.size = sizeof none;
		rp_pub_done(p, r, &none); /* no completion will come */
	}
}

/* ---- the other commands ---- */

static void
rp_cmd_ping(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	struct rp_buf b = { 0 };

	if (rc->n_channels + rc->n_patterns > 0) {
		/* In subscribed mode Redis answers with a push. */
		rp_put(&b, "*2\r\n$4\r\npong\r\n", 14);
		if (cmd->argc == 2)
			rp_bulk(&b, cmd->argv[1], cmd->lens[1]);
		else
			rp_put(&b, "$0\r\n\r\n", 6);
	} else if (cmd->argc == 2) {
		rp_bulk(&b, cmd->argv[1], cmd->lens[1]);
	} else {
		rp_put(&b, "+PONG\r\n", 7);
	}
	rp_flush(rc, &b);
}

static void
rp_cmd_quit(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	struct rp_buf b = { 0 };

	(void)cmd;
	rp_put(&b, "+OK\r\n", 5);
	rp_flush(rc, &b);
	rc->closing = 1;
	/* flush: answers still pending (open slots) reach the client. */
	api->conn_close(rc->c, 1);
}

struct rp_command {
	const char *name;
	int min_args, max_args; /* not counting the name; -1: no limit */
	int in_subscribed;      /* allowed while subscribed (RESP2) */
	void (*fn)(struct rp_conn *rc, const struct rp_cmd *cmd);
};

static const struct rp_command rp_commands[] = {
	{ "SUBSCRIBE", 1, -1, 1, rp_cmd_subscribe },
	{ "UNSUBSCRIBE", 0, -1, 1, rp_cmd_unsubscribe },
	{ "PSUBSCRIBE", 1, -1, 1, rp_cmd_psubscribe },
	{ "PUNSUBSCRIBE", 0, -1, 1, rp_cmd_punsubscribe },
	{ "PUBLISH", 2, 2, 0, rp_cmd_publish },
	{ "PING", 0, 1, 1, rp_cmd_ping },
	{ "QUIT", 0, -1, 1, rp_cmd_quit },
};

/* A command name, bounded and printable, for error messages. */
static void
rp_name(char *out, size_t outlen, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < outlen && i < 32; i++)
		out[i] = (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'') ? p[i] : '?';
	out[i] = '\0';
}

static void
rp_dispatch(struct rp_conn *rc, const struct rp_cmd *cmd)
{
	char name[40];
	size_t i;

	rp_name(name, sizeof name, cmd->argv[0], cmd->lens[0]);
	for (i = 0; i < sizeof rp_commands / sizeof rp_commands[0]; i++) {
		const struct rp_command *c = &rp_commands[i];

		if (strlen(c->name) != cmd->lens[0] ||
		    strncasecmp(c->name, cmd->argv[0], cmd->lens[0]) != 0)
			continue;
		if (cmd->argc - 1 < c->min_args ||
		    (c->max_args >= 0 && cmd->argc - 1 > c->max_args)) {
			for (i = 0; name[i] != '\0'; i++)
				if (name[i] >= 'A' && name[i] <= 'Z')
					name[i] = (char)(name[i] - 'A' + 'a');
			rp_error(rc, "ERR wrong number of arguments for '%s' "
			         "command", name);
			return;
		}
		if (!c->in_subscribed && rc->n_channels + rc->n_patterns > 0) {
			rp_error(rc, "ERR Can't execute '%s': only (P)SUBSCRIBE / "
			         "(P)UNSUBSCRIBE / PING / QUIT are allowed in "
			         "this context", name);
			return;
		}
		c->fn(rc, cmd);
		return;
	}
	rp_error(rc, "ERR unknown command '%s' (plexmq redis_pubsub speaks "
	         "only the pub/sub commands)", name);
}

/* ---- framing ---- */

/* A "<prefix><int>\r\n" line at buf[*pos]: 1 and *v, 0 need more, -1
 * malformed. */
static int
rp_int_line(const char *buf, size_t len, size_t *pos, int64_t *v)
{
	size_t i = *pos + 1; /* after the '*' or '$' */
	int neg = 0, digits = 0;
	int64_t n = 0;

	if (i < len && buf[i] == '-') {
		neg = 1;
		i++;
	}
	for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++) {
		if (++digits > 18)
			return -1;
		n = n * 10 + (buf[i] - '0');
	}
	if (i >= len)
		return 0;
	if (digits == 0 || buf[i] != '\r')
		return -1;
	if (i + 1 >= len)
		return 0;
	if (buf[i + 1] != '\n')
		return -1;
	*pos = i + 2;
	*v = neg ? -n : n;
	return 1;
}

/*
 * One whole command at the start of buf[0..len): 1 with its size in *used
 * and the argument offsets/lengths in offs/lens (argc of them), 0 if it is
 * not all there yet, -1 on a protocol error (reply written).  An empty
 * command (blank line, *0) is 1 with argc 0.
 */
static int
rp_frame(struct rp_conn *rc, const char *buf, size_t len, size_t *used,
         int *argc, size_t **offs, size_t **lens)
{
	const struct rp_listener *l = rc->l;
	size_t pos = 0;
	int64_t n, blen;
	int i, r;

	*argc = 0;
	if (buf[0] != '*') {
		/* Inline command: words up to "\n". */
		const char *nl = memchr(buf, '\n', len < RP_MAX_INLINE ? len :
		                        RP_MAX_INLINE);
		size_t end, j;

		if (nl == NULL) {
			if (len >= RP_MAX_INLINE) {
				rp_protocol_error(rc, "too big inline request");
				return -1;
			}
			return 0;
		}
		*used = (size_t)(nl - buf) + 1;
		end = (size_t)(nl - buf);
		if (end > 0 && buf[end - 1] == '\r')
			end--;
		*offs = malloc(sizeof **offs * (end / 2 + 1));
		*lens = malloc(sizeof **lens * (end / 2 + 1));
		if (*offs == NULL || *lens == NULL)
			goto nomem;
		for (j = 0; j < end;) {
			size_t k;

			while (j < end && (buf[j] == ' ' || buf[j] == '\t'))
				j++;
			if (j == end)
				break;
			for (k = j; k < end && buf[k] != ' ' && buf[k] != '\t'; k++)
				;
			(*offs)[*argc] = j;
			(*lens)[*argc] = k - j;
			(*argc)++;
			j = k;
		}
		return 1;
	}
	r = rp_int_line(buf, len, &pos, &n);
	if (r <= 0) {
		if (r < 0)
			rp_protocol_error(rc, "invalid multibulk length");
		return r;
	}
	if (n > l->max_args) {
		rp_protocol_error(rc, "invalid multibulk length");
		return -1;
	}
	if (n <= 0) {
		*used = pos;
		return 1;
	}
	*offs = malloc(sizeof **offs * (size_t)n);
	*lens = malloc(sizeof **lens * (size_t)n);
	if (*offs == NULL || *lens == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		if (pos >= len)
			return 0;
		if (buf[pos] != '$') {
			char what[64];

			snprintf(what, sizeof what, "expected '$', got '%c'",
			         buf[pos] >= 0x20 && buf[pos] < 0x7f ? buf[pos] : '?');
			rp_protocol_error(rc, what);
			return -1;
		}
		r = rp_int_line(buf, len, &pos, &blen);
		if (r <= 0) {
			if (r < 0)
				rp_protocol_error(rc, "invalid bulk length");
			return r;
		}
		if (blen < 0 || (uint64_t)blen > l->max_bulk) {
			rp_protocol_error(rc, "invalid bulk length");
			return -1;
		}
		if (len - pos < (size_t)blen + 2)
			return 0;
		if (buf[pos + (size_t)blen] != '\r' ||
		    buf[pos + (size_t)blen + 1] != '\n') {
			rp_protocol_error(rc, "bulk string not followed by CRLF");
			return -1;
		}
		(*offs)[i] = pos;
		(*lens)[i] = (size_t)blen;
		pos += (size_t)blen + 2;
	}
	*argc = (int)n;
	*used = pos;
	return 1;
nomem:
	rp_protocol_error(rc, "out of memory");
	return -1;
}

static void
rp_pause(struct rp_conn *rc)
{
	if (!rc->paused) {
		rc->paused = 1;
		api->conn_pause(rc->c);
	}
}

static void
rp_parse_loop(struct rp_conn *rc)
{
	while (!rc->closing && rc->c != NULL) {
		size_t avail, used = 0, *offs = NULL, *lens = NULL;
		struct rp_cmd cmd;
		const char *buf;
		int i, r, argc;

		/* Backpressure, as in the tcp template. */
		if (api->conn_output_full(rc->c) ||
		    rc->pending >= RP_MAX_PENDING) {
			rp_pause(rc);
			return;
		}
		if (rc->paused) {
			rc->paused = 0;
			api->conn_resume(rc->c);
		}
		avail = api->conn_input_len(rc->c);
		if (avail == 0)
			return;
		/* Simple, not fast: a contiguous view of all buffered input,
		 * parsed from the start on each call (input_max bounds it). */
		buf = api->conn_input_peek(rc->c, avail);
		if (buf == NULL)
			return;
		r = rp_frame(rc, buf, avail, &used, &argc, &offs, &lens);
		if (r <= 0) {
			free(offs);
			free(lens);
			return;
		}
		/* A private copy: the view dies with the next input call. */
		memset(&cmd, 0, sizeof cmd);
		cmd.frame = malloc(used);
		cmd.argv = malloc(sizeof *cmd.argv * (size_t)(argc + 1));
		if (cmd.frame == NULL || cmd.argv == NULL) {
			free(cmd.frame);
			free(cmd.argv);
			free(offs);
			free(lens);
			rp_protocol_error(rc, "out of memory");
			return;
		}
		memcpy(cmd.frame, buf, used);
		api->conn_input_drain(rc->c, used);
		cmd.argc = argc;
		cmd.lens = lens;
		for (i = 0; i < argc; i++)
			cmd.argv[i] = cmd.frame + offs[i];
		if (argc > 0)
			rp_dispatch(rc, &cmd);
		free(cmd.frame);
		free(cmd.argv);
		free(offs);
		free(lens);
	}
}

static void
rp_parse(struct rp_conn *rc)
{
	if (rc->parsing)
		return;
	rc->parsing = 1;
	rp_parse_loop(rc);
	rc->parsing = 0;
}

/* ---- transport ops ---- */

static void *
rp_create(pmq_instance *inst)
{
	struct rp_listener *l = calloc(1, sizeof *l);

	if (l == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	l->inst = inst;
	l->max_bulk = RP_MAX_BULK_DEFAULT;
	l->max_args = RP_MAX_ARGS_DEFAULT;
	l->max_subs = RP_MAX_SUBS_DEFAULT;
	return l;
}

static int
rp_configure(void *st, const char *key, const char *value, char *err,
             size_t err_len)
{
	struct rp_listener *l = st;

	if (strcmp(key, "max_bulk") == 0) {
		if (api->cfg_size(value, &l->max_bulk) != PMQ_OK ||
		    l->max_bulk == 0 || l->max_bulk > (uint64_t)512 << 20) {
			snprintf(err, err_len, "max_bulk: want a size from 1 to 512M");
			return PMQ_ERR_CONFIG;
		}
		return PMQ_OK;
	}
	if (strcmp(key, "max_args") == 0) {
		if (api->cfg_int(value, 3, 1024 * 1024, &l->max_args) != PMQ_OK) {
			snprintf(err, err_len,
			         "max_args: want an integer from 3 to 1048576");
			return PMQ_ERR_CONFIG;
		}
		return PMQ_OK;
	}
	if (strcmp(key, "max_subscriptions") == 0) {
		if (api->cfg_int(value, 1, 1000000, &l->max_subs) != PMQ_OK) {
			snprintf(err, err_len, "max_subscriptions: want an "
			         "integer from 1 to 1000000");
			return PMQ_ERR_CONFIG;
		}
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

static void
rp_destroy(void *st)
{
	free(st);
}

static void *
rp_conn_open(void *st, pmq_conn *c)
{
	struct rp_listener *l = st;
	struct rp_conn *rc = calloc(1, sizeof *rc);
	char id[40];

	if (rc == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: out of memory",
		         __func__, api->conn_peer(c));
		return NULL;
	}
	rc->l = l;
	rc->c = c;
	rc->refs = 1;
	snprintf(id, sizeof id, "redis-%" PRIu64, api->conn_id(c));
	rc->cl = api->client_new(l->inst, id, rc);
	if (rc->cl == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: no client", __func__,
		         api->conn_peer(c));
		free(rc);
		return NULL;
	}
	return rc;
}

static void
rp_conn_input(void *st, void *cs, pmq_conn *c)
{
	struct rp_conn *rc = cs;

	(void)st;
	if (rc->closing) {
		api->conn_input_drain(c, api->conn_input_len(c));
		return;
	}
	rp_parse(rc);
}

static void
rp_conn_drained(void *st, void *cs, pmq_conn *c)
{
	struct rp_conn *rc = cs;

	(void)st, (void)c;
	if (!rc->closing)
		rp_parse(rc);
}

static void
rp_conn_closed(void *st, void *cs, int reason)
{
	struct rp_conn *rc = cs;

	(void)st, (void)reason;
	api->client_free(rc->cl); /* drops its router subscriptions */
	rc->cl = NULL;
	rp_sub_free_all(rc);
	rc->n_channels = rc->n_patterns = 0;
	rc->c = NULL;
	rp_conn_unref(rc);
}

static void
rp_msg_release(void *arg)
{
	api->msg_unref(arg);
}

/* *3 message <channel> <payload>, or *4 pmessage <pattern> <channel>
 * <payload>; the payload leaves without a copy. */
static int
rp_send_message(struct rp_conn *rc, pmq_msg *m,
                const struct pmq_msg_fields *f, const struct rp_pat *pat)
{
	struct rp_buf b = { 0 };
	int r;

	if (pat != NULL) {
		rp_put(&b, "*4\r\n$8\r\npmessage\r\n", 18);
		rp_bulk(&b, pat->pat, pat->len);
	} else {
		rp_put(&b, "*3\r\n$7\r\nmessage\r\n", 17);
	}
	rp_bulk(&b, f->topic, f->topic_len);
	rp_putf(&b, "$%zu\r\n", f->payload_len);
	if (b.err) {
		free(b.p);
		return PMQ_ERR_NOMEM;
	}
	/* Ordered, not PMQ_SEND_NOW: a message must not overtake the
	 * confirmation of the (P)SUBSCRIBE it comes through. */
	r = api->conn_send(rc->c, b.p, b.len, PMQ_SEND_ORDERED);
	free(b.p);
	if (r == PMQ_OK && f->payload_len > 0)
		r = api->conn_send_ref(rc->c, f->payload, f->payload_len,
		                       rp_msg_release, api->msg_ref(m),
		                       PMQ_SEND_ORDERED);
	if (r == PMQ_OK)
		r = api->conn_send(rc->c, "\r\n", 2, PMQ_SEND_ORDERED);
	return r;
}

static void
rp_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	struct rp_conn *rc = udata;
	struct pmq_msg_fields f;
	struct rp_pub *p;
	int64_t sent = 0;
	uint32_t i;

	(void)st;
	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	api->msg_fields(m, &f);
	if (rc->closing || rc->c == NULL) {
		/* nothing sent */
	} else if (api->conn_output_full(rc->c)) {
		/* A subscriber that does not read: disconnect it, as Redis
		 * does past client-output-buffer-limit pubsub. */
		api->log(rc->l->inst, PMQ_LOG_WARN,
		         "%s: output above output_high_water, disconnecting "
		         "the subscriber", api->conn_peer(rc->c));
		api->stats_dropped(1);
		rc->closing = 1;
		api->conn_close(rc->c, 0);
	} else {
		for (i = 0; i < d->n_sub_ids && !rc->closing; i++) {
			struct rp_sub *s = rp_sub_by_id(rc, d->sub_ids[i]);
			const struct rp_pat *pat;

			if (s == NULL)
				continue;
			/* A channel's filter has no wildcard: it matched. */
			if (s->channel) {
				if (rp_send_message(rc, m, &f, NULL) != PMQ_OK)
					goto broken;
				sent++;
			}
			for (pat = s->pats; pat != NULL; pat = pat->next) {
				if (!rp_glob(pat->pat, pat->len, f.topic,
				             f.topic_len, 0))
					continue;
				if (rp_send_message(rc, m, &f, pat) != PMQ_OK)
					goto broken;
				sent++;
			}
		}
	}
	goto count;
broken:
	/* Half a reply went out: the stream cannot be framed any more. */
	rc->closing = 1;
	api->conn_close(rc->c, 0);
count:
	/* Correct the publisher's receiver count (struct rp_pub). */
	for (p = rp_pubs; p != NULL; p = p->next)
		if (p->m == m) {
			p->extra += sent - 1;
			break;
		}
}

static const struct pmq_transport_ops rp_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = rp_create,
	.configure = rp_configure,
	.destroy = rp_destroy,
	.conn_open = rp_conn_open,
	.conn_input = rp_conn_input,
	.conn_drained = rp_conn_drained,
	.conn_closed = rp_conn_closed,
	.deliver = rp_deliver,
};

static int
rp_init(const struct pmq_host_api *host)
{
	if (host->abi_major != PMQ_ABI_MAJOR)
		return PMQ_ERR_ABI;
	api = host;
	return PMQ_OK;
}

/* Not PMQ_PLUGIN_MULTI_LOOP_SAFE: rp_pubs is global. */
PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "redis_pubsub", "1.0.0",
                  "the pub/sub subset of the Redis protocol (RESP2)", 0,
                  rp_init, NULL, &rp_ops);
