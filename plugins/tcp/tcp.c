/*
 * tcp.c - the plain-TCP transport: a line protocol anyone can drive with
 * `nc`, with length-framed payloads so binary data travels intact.  The
 * protocol is specified in docs/tcp-protocol.md.
 *
 * This file is also THE TEMPLATE for third-party transports.  It uses every
 * part of the host API a transport needs (input parsing, in-order replies,
 * deliveries, backpressure, clients and subscriptions, publishing with a
 * durable acknowledgement, reading logs) and nothing else.
 *
 * To write your own transport, copy this file and:
 *
 *   1. Rename it (plugins/<name>/<name>.c), change the name in
 *      PMQ_PLUGIN_DEFINE at the bottom and add a libtool module to
 *      Makefile.am like plugins/tcp.la (or build it out of tree against the
 *      installed <plexmq/plexmq.h>: -fvisibility=hidden -shared, export only
 *      pmq_plugin_v1).
 *   2. Keep the instance part (tcp_create .. tcp_destroy): put your config
 *      keys in tcp_configure, returning PMQ_ERR_NOTFOUND for keys you do not
 *      know so the host reports them with file:line.
 *   3. Replace the framing in tcp_parse(): find one whole frame with
 *      conn_input_find/conn_input_peek, consume it with conn_input_drain,
 *      leave partial frames in the host's buffer.  The parser here keeps no
 *      state between calls; a frame is consumed only once it is complete.
 *   4. Replace the command table (tcp_cmds) with your protocol's requests.
 *      Answer a request whose answer is known now with tcp_reply() (ordered
 *      conn_send); for one answered later (publish, log read) open a reply
 *      slot when it is parsed and fill and close it in the completion, so
 *      answers leave in request order.
 *   5. Encode deliveries in tcp_deliver(), sent with PMQ_SEND_NOW.
 *   6. Keep the lifetime rules: a completion may run after conn_closed, so
 *      pending requests hold a reference on the connection state, never a
 *      bare pointer to something conn_closed frees (struct tcp_req).
 *   7. Everything is static except the descriptor; include only
 *      <plexmq/plexmq.h>.
 *
 * Threads: every function here runs on the host's loop thread (host.h).
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <plexmq/plexmq.h>

/* Defaults for the config keys (docs/tcp-protocol.md, "Limits"). */
#define TCP_MAX_LINE_DEFAULT 4096
#define TCP_MAX_PAYLOAD_DEFAULT (1024 * 1024)
/* Requests awaiting a completion per connection: past this we stop parsing,
 * so a client pipelining publishes cannot queue unbounded work. */
#define TCP_MAX_PENDING 1024
/* READ's max_bytes when the client gives none, and its ceiling. */
#define TCP_READ_DEFAULT 65536
#define TCP_READ_MAX (16 * 1024 * 1024)
/* Most tokens a command line may have; more is "wrong number of args". */
#define TCP_MAX_ARGS 6

/* The host API table, kept from init().  The only global: it is written
 * once before any instance exists, which is what makes the descriptor's
 * PMQ_PLUGIN_MULTI_LOOP_SAFE flag true. */
static const struct pmq_host_api *api;

/* One listener section of the config ("[listener tcp]"). */
struct tcp_listener {
	pmq_instance *inst;
	size_t max_line;      /* longest command line, without its "\n" */
	uint64_t max_payload; /* largest PUB payload */
	int slow_block;       /* slow_subscriber = block (else drop) */
};

/*
 * One connection.  Reference counted because storage completions may
 * arrive after conn_closed: the connection holds one reference and every
 * pending request one more; c is NULL once the connection is gone.
 */
struct tcp_conn {
	struct tcp_listener *l;
	pmq_conn *c;       /* NULL after conn_closed */
	pmq_client *cl;    /* our subscriber identity, "tcp-<conn id>" */
	unsigned refs;
	unsigned pending;  /* requests waiting for a completion */
	unsigned paused:1; /* we called conn_pause (backpressure) */
	unsigned closing:1;/* QUIT or a fatal error: parse nothing more */
	unsigned parsing:1;/* inside tcp_parse: never re-enter it */
};

/* A request answered later (PUB, READ); owns one reference on tc. */
struct tcp_req {
	struct tcp_conn *tc;
	pmq_slot *slot;   /* its place in the reply order */
	int64_t offset;   /* READ: first offset wanted, then the next one */
};

/* A command: handler gets the tokens of the line (argv[0] is the command
 * name) and the line's length with its terminator; it returns how many
 * input bytes it used, or 0 when it needs more input (a PUB payload). */
struct tcp_cmd {
	const char *name;
	int min_args; /* not counting the command name */
	int max_args;
	size_t (*fn)(struct tcp_conn *tc, char **argv, int argc,
	             size_t line_bytes);
};

static void tcp_parse(struct tcp_conn *tc);

/* ---- small helpers ---- */

static void
tcp_conn_unref(struct tcp_conn *tc)
{
	assert(tc->refs > 0);
	/* Freeing here is safe: callers are our own callbacks, which touch
	 * tc no more after this, and the host holds no pointer to it once
	 * conn_closed ran (the client, whose udata it is, is freed there). */
	if (--tc->refs == 0)
		free(tc);
}

/* Answer a request whose answer is known now.  PMQ_SEND_ORDERED queues it
 * behind every open reply slot, exactly like open+send+close of a slot. */
static void PMQ_PRINTF(2, 3)
tcp_reply(struct tcp_conn *tc, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2; /* truncated; still end the line */
	buf[n++] = '\n';
	api->conn_send(tc->c, buf, (size_t)n, PMQ_SEND_ORDERED);
}

/* Answer, then close once the answer (and everything before it) is sent.
 * Used when the input stream can no longer be framed. */
static void PMQ_PRINTF(2, 3)
tcp_fail(struct tcp_conn *tc, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	api->log(tc->l->inst, PMQ_LOG_INFO, "%s: %s, closing",
	         api->conn_peer(tc->c), buf);
	tcp_reply(tc, "-ERR %s", buf);
	tc->closing = 1;
	api->conn_close(tc->c, 1);
}

/* Put one line in a request's slot (tcp_req_free closes the slot). */
static void PMQ_PRINTF(2, 3)
tcp_slot_reply(pmq_slot *s, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	api->slot_send(s, buf, (size_t)n);
}

/* A request that will be answered by a completion: reserve its reply slot
 * now, in parse order.  NULL on no memory (the caller fails the conn). */
static struct tcp_req *
tcp_req_new(struct tcp_conn *tc)
{
	struct tcp_req *req = calloc(1, sizeof *req);

	if (req == NULL)
		return NULL;
	req->slot = api->slot_open(tc->c);
	if (req->slot == NULL) {
		free(req);
		return NULL;
	}
	req->tc = tc;
	tc->refs++;
	tc->pending++;
	return req;
}

/*
 * The request is answered (or its connection gone): close its slot, which
 * lets its answer leave, drop it, and resume parsing if we had stopped at
 * TCP_MAX_PENDING.  The slot is closed even after conn_closed: the host
 * keeps a slot until slot_close, which then just frees it.
 */
static void
tcp_req_free(struct tcp_req *req)
{
	struct tcp_conn *tc = req->tc;

	api->slot_close(req->slot);
	free(req);
	tc->pending--;
	if (tc->c != NULL && tc->paused && !tc->closing)
		tcp_parse(tc);
	tcp_conn_unref(tc);
}

/* Decimal without sign, at most max.  0 or -1. */
static int
tcp_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Text safe to put on a protocol line: no line terminators. */
static int
tcp_line_safe(const void *p, size_t len)
{
	return memchr(p, '\n', len) == NULL && memchr(p, '\r', len) == NULL;
}

/* "$share/GROUP/FILTER" -> group and filter (in place); else group NULL.
 * The host parses no topic syntax, so the transport splits shares. */
static int
tcp_split_share(char *arg, char **group, char **filter)
{
	char *slash;

	*group = NULL;
	*filter = arg;
	if (strncmp(arg, "$share/", 7) != 0)
		return 0;
	slash = strchr(arg + 7, '/');
	if (slash == NULL || slash == arg + 7 || slash[1] == '\0')
		return -1;
	*slash = '\0';
	*group = arg + 7;
	*filter = slash + 1;
	/* MQTT v5 4.8.2: a share name cannot hold wildcards. */
	return strpbrk(*group, "+#") != NULL ? -1 : 0;
}

/* ---- commands ---- */

/* The host checks topics (msg_new, publish): INVAL is the topic's fault. */
static const char *
tcp_pub_strerror(int rc)
{
	return rc == PMQ_ERR_INVAL ? "bad topic" : api->strerror(rc);
}

static void
tcp_pub_done(void *arg, int status, const struct pmq_publish_result *res)
{
	struct tcp_req *req = arg;

	(void)res;
	/* After conn_closed (c == NULL) the answer has nowhere to go. */
	if (req->tc->c != NULL) {
		if (status == PMQ_OK)
			tcp_slot_reply(req->slot, "+OK");
		else
			tcp_slot_reply(req->slot, "-ERR %s",
			               tcp_pub_strerror(status));
	}
	tcp_req_free(req);
}

/* PUB/PUBR <topic> <nbytes>\n<payload>\n: the line is consumed together
 * with its payload, so a partial PUB stays in the host's buffer. */
static size_t
tcp_publish(struct tcp_conn *tc, char **argv, size_t line_bytes, int retain)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	const unsigned char *p;
	struct tcp_req *req;
	uint64_t nbytes;
	size_t need, total;
	pmq_msg *m;
	int rc;

	if (tcp_parse_u64(argv[2], UINT64_MAX, &nbytes) != 0) {
		tcp_fail(tc, "bad payload length");
		return 0;
	}
	if (nbytes > tc->l->max_payload) {
		tcp_fail(tc, "payload too large");
		return 0;
	}
	/* The whole frame, then "\n" or "\r\n". */
	need = line_bytes + (size_t)nbytes + 1;
	if (api->conn_input_len(tc->c) < need)
		return 0;
	p = api->conn_input_peek(tc->c, need);
	assert(p != NULL);
	total = need;
	if (p[need - 1] == '\r') {
		if (api->conn_input_len(tc->c) < need + 1)
			return 0;
		p = api->conn_input_peek(tc->c, need + 1);
		total = need + 1;
	}
	if (p[total - 1] != '\n') {
		tcp_fail(tc, "payload not followed by newline");
		return 0;
	}

	/* QoS 1: the publisher hears +OK only once the message is stored. */
	f.qos = 1;
	f.retain = (uint8_t)retain;
	f.topic = argv[1];
	f.topic_len = strlen(argv[1]);
	f.payload = p + line_bytes;
	f.payload_len = (size_t)nbytes;
	m = api->msg_new(&f, &rc);
	if (m == NULL) {
		tcp_reply(tc, "-ERR %s", tcp_pub_strerror(rc));
		return total;
	}
	req = tcp_req_new(tc);
	if (req == NULL) {
		api->msg_unref(m);
		tcp_fail(tc, "out of memory");
		return 0;
	}
	rc = api->publish(tc->cl, m, 0, tcp_pub_done, req);
	api->msg_unref(m); /* publish took its own references */
	if (rc != PMQ_OK) {
		/* No completion will come: answer in the slot ourselves. */
		tcp_slot_reply(req->slot, "-ERR %s", tcp_pub_strerror(rc));
		tcp_req_free(req);
	}
	return total;
}

static size_t
tcp_cmd_pub(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	(void)argc;
	return tcp_publish(tc, argv, line_bytes, 0);
}

static size_t
tcp_cmd_pubr(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	(void)argc;
	return tcp_publish(tc, argv, line_bytes, 1);
}

static size_t
tcp_cmd_sub(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	struct pmq_sub_opts o = { .size = sizeof o };
	char *group, *filter;
	uint64_t qos = 0;
	int rc;

	if (argc == 3 && tcp_parse_u64(argv[2], 2, &qos) != 0) {
		tcp_reply(tc, "-ERR bad qos");
		return line_bytes;
	}
	if (tcp_split_share(argv[1], &group, &filter) != 0) {
		tcp_reply(tc, "-ERR bad filter");
		return line_bytes;
	}
	o.qos = (uint8_t)qos;
	o.share_group = group;
	rc = api->subscribe(tc->cl, filter, &o);
	if (rc < 0) {
		tcp_reply(tc, "-ERR %s", rc == PMQ_ERR_INVAL ? "bad filter" :
		          rc == PMQ_ERR_LIMIT ? "too many subscriptions" :
		          api->strerror(rc));
		return line_bytes;
	}
	tcp_reply(tc, "+OK");
	/* Retained messages follow +OK (as MSG lines); a shared
	 * subscription gets none, as in MQTT v5 4.8.2. */
	if (group == NULL)
		api->retained_send(tc->cl, filter, &o, rc == 0);
	return line_bytes;
}

static size_t
tcp_cmd_unsub(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	char *group, *filter;
	int rc;

	(void)argc;
	if (tcp_split_share(argv[1], &group, &filter) != 0) {
		tcp_reply(tc, "-ERR bad filter");
		return line_bytes;
	}
	rc = api->unsubscribe(tc->cl, filter, group);
	if (rc == PMQ_OK)
		tcp_reply(tc, "+OK");
	else if (rc == PMQ_ERR_NOTFOUND)
		tcp_reply(tc, "-ERR not subscribed");
	else
		tcp_reply(tc, "-ERR %s", api->strerror(rc));
	return line_bytes;
}

/* One decoded record of a READ: "REC <offset> <key> <nbytes>\n<value>\n". */
static int
tcp_read_rec(void *arg, const struct pmq_record *rec)
{
	struct tcp_req *req = arg;
	char buf[64];
	int n;

	/* The first batch starts at or before the offset asked for. */
	if (rec->offset < req->offset)
		return 0;
	n = snprintf(buf, sizeof buf, "REC %" PRId64 " ", rec->offset);
	api->slot_send(req->slot, buf, (size_t)n);
	/* The key is a topic for MQTT-style records; one that would break
	 * the line (absent, empty, a line terminator) reads as "-". */
	if (rec->key != NULL && rec->key_len > 0 &&
	    tcp_line_safe(rec->key, rec->key_len))
		api->slot_send(req->slot, rec->key, rec->key_len);
	else
		api->slot_send(req->slot, "-", 1);
	n = snprintf(buf, sizeof buf, " %zu\n", rec->value_len);
	api->slot_send(req->slot, buf, (size_t)n);
	if (rec->value_len > 0)
		api->slot_send(req->slot, rec->value, rec->value_len);
	api->slot_send(req->slot, "\n", 1);
	req->offset = rec->offset + 1;
	return 0;
}

static const char *
tcp_read_strerror(int rc)
{
	switch (rc) {
	case PMQ_ERR_NOTFOUND:
		return "no such log";
	case PMQ_ERR_RANGE:
		return "offset out of range";
	default:
		return api->strerror(rc);
	}
}

static void
tcp_read_done(void *arg, int status, const void *data, size_t len,
              const struct pmq_log_offsets *offs)
{
	struct tcp_req *req = arg;
	pmq_slot *s = req->slot;
	int rc;

	(void)offs;
	if (req->tc->c == NULL) { /* gone: nobody to answer */
		tcp_req_free(req);
		return;
	}
	if (status != PMQ_OK) {
		tcp_slot_reply(s, "-ERR %s", tcp_read_strerror(status));
		tcp_req_free(req);
		return;
	}
	/* REC lines go straight into the slot; a corrupt batch ends the
	 * answer with -ERR after the records decoded before it. */
	rc = len > 0 ? api->batch_records(data, len, tcp_read_rec, req) :
	               PMQ_OK; /* at the high watermark: no records */
	if (rc != PMQ_OK)
		tcp_slot_reply(s, "-ERR %s", api->strerror(rc));
	else
		tcp_slot_reply(s, "+OK %" PRId64, req->offset);
	tcp_req_free(req);
}

/* READ <log> <partition> <offset> [max_bytes] */
static size_t
tcp_cmd_read(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	struct pmq_topic_config cfg = { .size = sizeof cfg };
	uint64_t part, off, max = TCP_READ_DEFAULT;
	struct tcp_req *req;
	int rc;

	if (tcp_parse_u64(argv[2], INT32_MAX, &part) != 0 ||
	    tcp_parse_u64(argv[3], INT64_MAX, &off) != 0 ||
	    (argc == 5 && (tcp_parse_u64(argv[4], UINT64_MAX, &max) != 0 ||
	                   max == 0))) {
		tcp_reply(tc, "-ERR bad number");
		return line_bytes;
	}
	if (max > TCP_READ_MAX)
		max = TCP_READ_MAX;
	if (api->log_topic(argv[1], &cfg) != PMQ_OK) {
		tcp_reply(tc, "-ERR no such log");
		return line_bytes;
	}
	if (part >= (uint64_t)cfg.partitions) {
		tcp_reply(tc, "-ERR no such partition");
		return line_bytes;
	}
	req = tcp_req_new(tc);
	if (req == NULL) {
		tcp_fail(tc, "out of memory");
		return 0;
	}
	req->offset = (int64_t)off;
	rc = api->log_read(argv[1], (int32_t)part, (int64_t)off, (size_t)max,
	                   tcp_read_done, req);
	if (rc != PMQ_OK) {
		tcp_slot_reply(req->slot, "-ERR %s", tcp_read_strerror(rc));
		tcp_req_free(req);
	}
	return line_bytes;
}

static size_t
tcp_cmd_ping(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	(void)argv;
	(void)argc;
	tcp_reply(tc, "+PONG");
	return line_bytes;
}

static size_t
tcp_cmd_quit(struct tcp_conn *tc, char **argv, int argc, size_t line_bytes)
{
	(void)argv;
	(void)argc;
	tcp_reply(tc, "+BYE");
	tc->closing = 1;
	/* flush: pending answers (open slots) still reach the client. */
	api->conn_close(tc->c, 1);
	return line_bytes;
}

/* The protocol, one entry per command (matched case-insensitively). */
static const struct tcp_cmd tcp_cmds[] = {
	{ .name = "PUB", .min_args = 2, .max_args = 2, .fn = tcp_cmd_pub },
	{ .name = "PUBR", .min_args = 2, .max_args = 2, .fn = tcp_cmd_pubr },
	{ .name = "SUB", .min_args = 1, .max_args = 2, .fn = tcp_cmd_sub },
	{ .name = "UNSUB", .min_args = 1, .max_args = 1, .fn = tcp_cmd_unsub },
	{ .name = "READ", .min_args = 3, .max_args = 4, .fn = tcp_cmd_read },
	{ .name = "PING", .min_args = 0, .max_args = 0, .fn = tcp_cmd_ping },
	{ .name = "QUIT", .min_args = 0, .max_args = 0, .fn = tcp_cmd_quit },
};

/* ---- framing ---- */

/* Run one command line (line is a NUL-terminated copy we may cut up).
 * Returns the input bytes used, 0 when more input is needed. */
static size_t
tcp_dispatch(struct tcp_conn *tc, char *line, size_t line_bytes)
{
	char *argv[TCP_MAX_ARGS + 1];
	int argc = 0;
	size_t i;
	char *tok, *save = NULL;

	for (tok = strtok_r(line, " \t", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t", &save)) {
		if (argc == TCP_MAX_ARGS + 1)
			break; /* too many for any command */
		argv[argc++] = tok;
	}
	if (argc == 0)
		return line_bytes; /* an empty line: nc users press Enter */

	for (i = 0; i < sizeof tcp_cmds / sizeof tcp_cmds[0]; i++) {
		const struct tcp_cmd *cmd = &tcp_cmds[i];

		if (strcasecmp(argv[0], cmd->name) != 0)
			continue;
		if (argc - 1 < cmd->min_args || argc - 1 > cmd->max_args) {
			tcp_reply(tc, "-ERR wrong number of arguments for '%s'",
			          cmd->name);
			return line_bytes;
		}
		return cmd->fn(tc, argv, argc, line_bytes);
	}

	/* Echo a bounded, printable copy of what we did not understand. */
	for (i = 0; argv[0][i] != '\0' && i < 32; i++)
		if (!isprint((unsigned char)argv[0][i]))
			argv[0][i] = '?';
	argv[0][i] = '\0';
	tcp_reply(tc, "-ERR unknown command '%s'", argv[0]);
	return line_bytes;
}

/* Stop reading until a resume condition: output drained (conn_drained) or
 * a pending request finished (tcp_req_free). */
static void
tcp_pause(struct tcp_conn *tc)
{
	if (!tc->paused) {
		tc->paused = 1;
		api->conn_pause(tc->c);
	}
}

static void
tcp_parse_loop(struct tcp_conn *tc, const struct tcp_listener *l)
{
	while (!tc->closing) {
		size_t avail, len, used;
		const char *p;
		ssize_t nl;
		char *line;

		/* Backpressure: a client that does not read its answers, or
		 * has too many in flight, gets no more of its input parsed. */
		if (api->conn_output_full(tc->c) ||
		    tc->pending >= TCP_MAX_PENDING) {
			tcp_pause(tc);
			return;
		}
		if (tc->paused) {
			tc->paused = 0;
			api->conn_resume(tc->c);
		}

		avail = api->conn_input_len(tc->c);
		if (avail == 0)
			return;
		/* Room for max_line bytes and "\r\n". */
		nl = api->conn_input_find(tc->c, "\n", 1, l->max_line + 2);
		if (nl < 0) {
			if (avail >= l->max_line + 2)
				tcp_fail(tc, "line too long");
			return;
		}
		p = api->conn_input_peek(tc->c, (size_t)nl + 1);
		assert(p != NULL);
		len = (size_t)nl;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (len > l->max_line) {
			tcp_fail(tc, "line too long");
			return;
		}
		/* A private, NUL-terminated copy: the peeked view dies with
		 * the next input call, and the tokens are cut in place. */
		line = malloc(len + 1);
		if (line == NULL) {
			tcp_fail(tc, "out of memory");
			return;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		used = tcp_dispatch(tc, line, (size_t)nl + 1);
		free(line);
		if (used == 0)
			return; /* a partial PUB payload, or the conn failed */
		api->conn_input_drain(tc->c, used);
	}
}

/*
 * Consume every whole command buffered on the connection.  Called on new
 * input, and again when a backpressure condition clears.  Keeps no state
 * between calls: whatever is left in the host's buffer is a partial frame.
 */
static void
tcp_parse(struct tcp_conn *tc)
{
	const struct tcp_listener *l = tc->l;

	/* A command may finish a request at once (tcp_req_free) and a host
	 * may call conn_drained from inside conn_send: a nested parse would
	 * consume input under the outer one's feet. */
	if (tc->parsing)
		return;
	tc->parsing = 1;
	tcp_parse_loop(tc, l);
	tc->parsing = 0;
}

/* ---- transport ops ---- */

static void *
tcp_create(pmq_instance *inst)
{
	struct tcp_listener *l = calloc(1, sizeof *l);

	if (l == NULL) {
		api->log(inst, PMQ_LOG_ERROR, "%s: out of memory", __func__);
		return NULL;
	}
	l->inst = inst;
	l->max_line = TCP_MAX_LINE_DEFAULT;
	l->max_payload = TCP_MAX_PAYLOAD_DEFAULT;
	l->slow_block = 1;
	return l;
}

static int
tcp_configure(void *st, const char *key, const char *value, char *err,
              size_t err_len)
{
	struct tcp_listener *l = st;
	uint64_t size;
	int64_t n;

	if (strcmp(key, "max_line") == 0) {
		/* Long enough for "READ <topic> ..." with a useful topic. */
		if (api->cfg_int(value, 64, 1024 * 1024, &n) != PMQ_OK) {
			snprintf(err, err_len,
			         "max_line: want an integer from 64 to 1048576");
			return PMQ_ERR_CONFIG;
		}
		l->max_line = (size_t)n;
		return PMQ_OK;
	}
	if (strcmp(key, "max_payload") == 0) {
		if (api->cfg_size(value, &size) != PMQ_OK || size == 0 ||
		    size > (uint64_t)1024 * 1024 * 1024) {
			snprintf(err, err_len,
			         "max_payload: want a size from 1 to 1G");
			return PMQ_ERR_CONFIG;
		}
		l->max_payload = size;
		return PMQ_OK;
	}
	if (strcmp(key, "slow_subscriber") == 0) {
		if (strcmp(value, "block") == 0)
			l->slow_block = 1;
		else if (strcmp(value, "drop") == 0)
			l->slow_block = 0;
		else {
			snprintf(err, err_len,
			         "slow_subscriber: want block or drop, got '%s'",
			         value);
			return PMQ_ERR_CONFIG;
		}
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

static void
tcp_destroy(void *st)
{
	free(st);
}

static void *
tcp_conn_open(void *st, pmq_conn *c)
{
	struct tcp_listener *l = st;
	struct tcp_conn *tc = calloc(1, sizeof *tc);
	char id[32];

	if (tc == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: out of memory",
		         __func__, api->conn_peer(c));
		return NULL;
	}
	tc->l = l;
	tc->c = c;
	tc->refs = 1;
	snprintf(id, sizeof id, "tcp-%" PRIu64, api->conn_id(c));
	tc->cl = api->client_new(l->inst, id, tc);
	if (tc->cl == NULL) {
		api->log(l->inst, PMQ_LOG_ERROR, "%s: %s: no client",
		         __func__, api->conn_peer(c));
		free(tc);
		return NULL;
	}
	return tc;
}

static void
tcp_conn_input(void *st, void *cs, pmq_conn *c)
{
	struct tcp_conn *tc = cs;

	(void)st;
	assert(tc->c == c);
	if (tc->closing) {
		/* Bytes after QUIT or an error are ignored, not buffered. */
		api->conn_input_drain(c, api->conn_input_len(c));
		return;
	}
	tcp_parse(tc);
}

static void
tcp_conn_drained(void *st, void *cs, pmq_conn *c)
{
	struct tcp_conn *tc = cs;

	(void)st;
	(void)c;
	if (!tc->closing)
		tcp_parse(tc);
}

static void
tcp_conn_closed(void *st, void *cs, int reason)
{
	struct tcp_conn *tc = cs;

	(void)st;
	(void)reason;
	/* No deliveries after this: the router forgets the client. */
	api->client_free(tc->cl);
	tc->cl = NULL;
	/* Pending completions see c == NULL and drop their answers. */
	tc->c = NULL;
	tcp_conn_unref(tc);
}

static void
tcp_msg_release(void *arg)
{
	api->msg_unref(arg);
}

/* A subscriber's output is over its high-water mark.  With
 * slow_subscriber = block, the publisher whose input is being handled
 * stops reading until this output drains (ABI 1.1), and the message is
 * still queued: nothing is lost and TCP slows the publisher.  The output
 * overshoots the mark by at most what that publisher had already read.
 * Returns 1 to drop the message instead (drop policy, or a publish that
 * did not come from a connection's input, or a 1.0 host). */
static int
tcp_full_drop(struct tcp_conn *tc)
{
	if (!tc->l->slow_block ||
	    !PMQ_HAS(api, struct pmq_host_api, conn_block_input))
		return 1;
	return api->conn_block_input(tc->c) ? 0 : 1;
}

/* MSG <topic> <nbytes>\n<payload>\n; see tcp_full_drop for a subscriber
 * that does not keep up. */
static void
tcp_deliver(void *st, void *udata, pmq_msg *m, const struct pmq_delivery *d)
{
	struct tcp_conn *tc = udata;
	struct pmq_msg_fields f = { .size = sizeof f };
	char hdr[64];
	int n;

	(void)st;
	(void)d;
	assert(tc->c != NULL);
	api->msg_fields(m, &f);
	if (tc->closing || !tcp_line_safe(f.topic, f.topic_len) ||
	    (api->conn_output_full(tc->c) && tcp_full_drop(tc))) {
		api->stats_dropped(1);
		return;
	}
	n = snprintf(hdr, sizeof hdr, " %zu\n", f.payload_len);
	if (api->conn_send(tc->c, "MSG ", 4, PMQ_SEND_NOW) != PMQ_OK ||
	    api->conn_send(tc->c, f.topic, f.topic_len, PMQ_SEND_NOW) !=
	        PMQ_OK ||
	    api->conn_send(tc->c, hdr, (size_t)n, PMQ_SEND_NOW) != PMQ_OK)
		goto broken;
	/* The payload leaves without a copy; our reference keeps it alive
	 * until the host has written it. */
	if (f.payload_len > 0 &&
	    api->conn_send_ref(tc->c, f.payload, f.payload_len,
	                       tcp_msg_release, api->msg_ref(m),
	                       PMQ_SEND_NOW) != PMQ_OK)
		goto broken;
	if (api->conn_send(tc->c, "\n", 1, PMQ_SEND_NOW) != PMQ_OK)
		goto broken;
	return;
broken:
	/* Half a frame went out: the stream cannot be framed any more. */
	tc->closing = 1;
	api->conn_close(tc->c, 0);
}

static const struct pmq_transport_ops tcp_ops = {
	.size = sizeof(struct pmq_transport_ops),
	.create = tcp_create,
	.configure = tcp_configure,
	.start = NULL, /* nothing to check across keys */
	.stop = NULL,
	.destroy = tcp_destroy,
	.conn_open = tcp_conn_open,
	.conn_input = tcp_conn_input,
	.conn_drained = tcp_conn_drained,
	.conn_closed = tcp_conn_closed,
	.deliver = tcp_deliver,
};

static int
tcp_init(const struct pmq_host_api *host)
{
	/* The loader already matched the ABI major and our required minor,
	 * so every 1.0 member is there; a member from a later minor would
	 * need PMQ_HAS(host, struct pmq_host_api, member) first. */
	api = host;
	return PMQ_OK;
}

PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "tcp", "1.0.0",
                  "plain-TCP line protocol, drivable with nc",
                  PMQ_PLUGIN_MULTI_LOOP_SAFE, tcp_init, NULL, &tcp_ops);
