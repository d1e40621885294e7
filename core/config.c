/*
 * config.c - loads plexmqd's INI file (schema and syntax rules in config.h)
 * with inih's ini_parse_stream().
 *
 * inih splits "key = value" and strips comments; our reader sees every raw
 * line before inih does, and catches what inih would silently misread:
 * ':' used as the separator, lines longer than inih's buffer (inih splits
 * them), section headers longer than inih's section buffer (inih cuts them),
 * indented lines (inih glues them to the previous value).  The reader also
 * counts lines and tracks sections itself, because inih reports neither a
 * line number to the handler nor an empty or repeated section.  On the first
 * error the reader returns NULL, which ends inih's loop, so the message kept
 * in struct parser is the first problem met; whole-file checks (required
 * keys, at least one listener) run after the last line.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config.h"
#include "logger.h"
#include "util.h"

/* A raw line may carry indentation on top of CONFIG_LINE_MAX; past this we
 * stop reading rather than buffer an unbounded line. */
#define RAW_LINE_MAX 1024
/* Known keys of the largest section kind. */
#define MAX_KEYS 8
/* Kafka's limit, since a rule's log is a Kafka-visible topic name. */
#define TOPIC_NAME_MAX 249
/* Only short keys get a "did you mean" hint. */
#define SUGGEST_MAX 32

enum value_type {
	V_STR,          /* non-empty string */
	V_PLUGIN,       /* plugin name or path */
	V_LOG_LEVEL,    /* int PMQ_LOG_* */
	V_SHARE,        /* int CONFIG_SHARE_* */
	V_U32,          /* uint32_t in min..max */
	V_I32,          /* int32_t in min..max */
	V_SIZE,         /* uint64_t >= 1 */
	V_SIZE_OR_NONE, /* int64_t >= 1, or -1 */
	V_DURATION,     /* int64_t ms >= 1, or -1 */
	V_LISTEN,       /* appends to the listener's addresses */
	V_FILTER,       /* MQTT filter string */
	V_TOPIC         /* log topic name string */
};

struct key_def {
	const char *name;
	enum value_type type;
	size_t offset;   /* of the field in the section's object */
	long line_off;   /* of an int that gets the key's line, or -1 */
	int64_t min, max;
	int repeatable;
};

enum section_id { SEC_GLOBAL, SEC_STORAGE, SEC_LISTENER, SEC_RULE };

struct section_def {
	const char *kind;
	enum section_id id;
	int named;        /* [kind NAME] rather than [kind] */
	int plugin_keys;  /* unknown keys belong to the plugin */
	const struct key_def *keys;
	size_t n_keys;
};

static const struct key_def global_keys[] = {
	{ .name = "plugin_dir", .type = V_STR, .line_off = -1,
	  .offset = offsetof(struct config, plugin_dir) },
	{ .name = "data_dir", .type = V_STR, .line_off = -1,
	  .offset = offsetof(struct config, data_dir) },
	{ .name = "log_level", .type = V_LOG_LEVEL, .line_off = -1,
	  .offset = offsetof(struct config, log_level) },
	{ .name = "log_file", .type = V_STR, .line_off = -1,
	  .offset = offsetof(struct config, log_file) },
	{ .name = "max_connections", .type = V_U32, .line_off = -1,
	  .offset = offsetof(struct config, max_connections),
	  .min = 1, .max = 1000000 },
	{ .name = "share_strategy", .type = V_SHARE, .line_off = -1,
	  .offset = offsetof(struct config, share_strategy) },
};

static const struct key_def storage_keys[] = {
	{ .name = "plugin", .type = V_PLUGIN, .line_off = -1,
	  .offset = offsetof(struct config, storage_plugin) },
};

static const struct key_def listener_keys[] = {
	{ .name = "plugin", .type = V_PLUGIN,
	  .offset = offsetof(struct config_listener, plugin),
	  .line_off = (long)offsetof(struct config_listener, plugin_line) },
	{ .name = "listen", .type = V_LISTEN, .line_off = -1, .repeatable = 1 },
	{ .name = "max_connections", .type = V_U32, .line_off = -1,
	  .offset = offsetof(struct config_listener, max_connections),
	  .min = 1, .max = 1000000 },
	{ .name = "output_high_water", .type = V_SIZE, .line_off = -1,
	  .offset = offsetof(struct config_listener, output_high_water) },
	{ .name = "input_max", .type = V_SIZE, .line_off = -1,
	  .offset = offsetof(struct config_listener, input_max) },
};

static const struct key_def rule_keys[] = {
	{ .name = "match", .type = V_FILTER, .line_off = -1,
	  .offset = offsetof(struct config_rule, match) },
	{ .name = "log", .type = V_TOPIC, .line_off = -1,
	  .offset = offsetof(struct config_rule, log) },
	{ .name = "partitions", .type = V_I32, .line_off = -1,
	  .offset = offsetof(struct config_rule, partitions),
	  .min = 1, .max = 10000 },
	{ .name = "retention", .type = V_DURATION, .line_off = -1,
	  .offset = offsetof(struct config_rule, retention_ms) },
	{ .name = "retention_bytes", .type = V_SIZE_OR_NONE, .line_off = -1,
	  .offset = offsetof(struct config_rule, retention_bytes) },
};

static const struct section_def sections[] = {
	{ .kind = "plexmqd", .id = SEC_GLOBAL, .keys = global_keys,
	  .n_keys = UTIL_ARRAY_LEN(global_keys) },
	{ .kind = "storage", .id = SEC_STORAGE, .plugin_keys = 1,
	  .keys = storage_keys, .n_keys = UTIL_ARRAY_LEN(storage_keys) },
	{ .kind = "listener", .id = SEC_LISTENER, .named = 1, .plugin_keys = 1,
	  .keys = listener_keys, .n_keys = UTIL_ARRAY_LEN(listener_keys) },
	{ .kind = "rule", .id = SEC_RULE, .named = 1, .keys = rule_keys,
	  .n_keys = UTIL_ARRAY_LEN(rule_keys) },
};

struct parser {
	struct config *cfg;
	FILE *fp;                 /* the source is a file ... */
	const char *text;         /* ... or a string */
	size_t pos;
	int line;                 /* of the line inih is working on */
	int rc;                   /* the first error; PMQ_OK while none */
	char *err;
	size_t err_len;
	const struct section_def *sec; /* NULL before the first header */
	int seen[MAX_KEYS];       /* line of each known key in this section */
	int global_line;          /* [plexmqd]'s line, 0 until seen */
	char raw[RAW_LINE_MAX + 1];
};

static void
vformat_at(const char *path, int line, char *err, size_t err_len,
    const char *fmt, va_list ap)
{
	int n;

	if (err == NULL || err_len == 0)
		return;
	if (line > 0)
		n = snprintf(err, err_len, "%s:%d: ", path, line);
	else
		n = snprintf(err, err_len, "%s: ", path);
	if (n < 0 || (size_t)n >= err_len)
		return;
	vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
}

void
config_error_at(const struct config *cfg, int line, char *err,
    size_t err_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat_at(cfg != NULL && cfg->path != NULL ? cfg->path : "config",
	    line, err, err_len, fmt, ap);
	va_end(ap);
}

/* Record the first error only: later ones are usually its echoes. */
static int perr(struct parser *p, int line, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
perr(struct parser *p, int line, int rc, const char *fmt, ...)
{
	va_list ap;

	if (p->rc != PMQ_OK)
		return p->rc;
	p->rc = rc;
	va_start(ap, fmt);
	vformat_at(p->cfg->path, line, p->err, p->err_len, fmt, ap);
	va_end(ap);
	return rc;
}

static int
nomem(struct parser *p)
{
	return perr(p, p->line, PMQ_ERR_NOMEM, "out of memory");
}

/* Returns arr (n elements of sz bytes) grown by one zeroed element at
 * index n, or NULL (arr untouched) when out of memory. */
static void *
grow(void *arr, size_t n, size_t sz)
{
	char *a;

	a = realloc(arr, (n + 1) * sz);
	if (a != NULL)
		memset(a + n * sz, 0, sz);
	return a;
}

static void
free_kvs(struct config_kv *kv, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

void
config_free(struct config *cfg)
{
	size_t i, j;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->n_listeners; i++) {
		struct config_listener *l = &cfg->listeners[i];

		free(l->name);
		free(l->plugin);
		for (j = 0; j < l->n_listen; j++) {
			free(l->listen[j].host);
			free(l->listen[j].port);
		}
		free(l->listen);
		free_kvs(l->keys, l->n_keys);
	}
	free(cfg->listeners);
	for (i = 0; i < cfg->n_rules; i++) {
		free(cfg->rules[i].name);
		free(cfg->rules[i].match);
		free(cfg->rules[i].log);
	}
	free(cfg->rules);
	free_kvs(cfg->storage_keys, cfg->n_storage_keys);
	free(cfg->storage_plugin);
	free(cfg->path);
	free(cfg->plugin_dir);
	free(cfg->data_dir);
	free(cfg->log_file);
	free(cfg);
}

char *
config_plugin_path(const char *plugin_dir, const char *plugin)
{
	char *path;

	if (strchr(plugin, '/') != NULL)
		return strdup(plugin);
	if (asprintf(&path, "%s/%s.so", plugin_dir, plugin) < 0)
		return NULL;
	return path;
}

/* ---- value checks ---- */

static int
is_name_char(int c)
{
	return isalnum(c) || c == '.' || c == '_' || c == '-';
}

/* Names that end up as Kafka topic names or file names: [A-Za-z0-9._-]+,
 * and never "." or ".." (they would be directories). */
static int
valid_name(const char *s, size_t max)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if (!is_name_char((unsigned char)s[n]))
			return 0;
	return n > 0 && n <= max && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* MQTT filter syntax, lightly: non-empty; '#' only as the whole last level;
 * '+' only as a whole level.  Returns NULL if valid, else why not. */
static const char *
filter_problem(const char *f)
{
	const char *lvl = f, *end;
	size_t len;

	if (*f == '\0')
		return "an empty filter matches nothing";
	for (;;) {
		end = strchr(lvl, '/');
		len = end != NULL ? (size_t)(end - lvl) : strlen(lvl);
		if (memchr(lvl, '#', len) != NULL &&
		    (len != 1 || end != NULL))
			return "'#' must be a whole level and the last one";
		if (memchr(lvl, '+', len) != NULL && len != 1)
			return "'+' must be a whole level";
		if (end == NULL)
			return NULL;
		lvl = end + 1;
	}
}

/* Split "HOST:PORT" or "[V6]:PORT" into a->host and a->port (canonical
 * decimal, so "080" and "80" compare equal).  PMQ_ERR_CONFIG sets *why. */
static int
parse_addr(const char *tok, struct config_addr *a, const char **why)
{
	const char *h, *h_end, *pt = NULL;
	char buf[24];
	long n;
	size_t i;

	*why = NULL;
	if (tok[0] == '[') {
		h = tok + 1;
		h_end = strchr(h, ']');
		if (h_end == NULL)
			*why = "missing ']' after an IPv6 address";
		else if (h_end[1] != ':')
			*why = "expected ':PORT' after ']'";
		else
			pt = h_end + 2;
	} else {
		h = tok;
		h_end = strrchr(tok, ':');
		if (h_end == NULL)
			*why = "expected HOST:PORT";
		else if (memchr(h, ':', (size_t)(h_end - h)) != NULL)
			*why = "write an IPv6 address in brackets, as [::1]:1883";
		else
			pt = h_end + 1;
	}
	if (pt == NULL)
		return PMQ_ERR_CONFIG;
	if (h_end == h) {
		*why = "empty host (use 0.0.0.0 or [::] for every address)";
		return PMQ_ERR_CONFIG;
	}
	if (*pt == '\0') {
		*why = "missing port";
		return PMQ_ERR_CONFIG;
	}
	for (i = 0; pt[i] != '\0'; i++) {
		if (!isdigit((unsigned char)pt[i]) || i >= 5) {
			*why = "the port must be a number from 0 to 65535";
			return PMQ_ERR_CONFIG;
		}
	}
	n = strtol(pt, NULL, 10);
	if (n > 65535) {
		*why = "the port must be a number from 0 to 65535";
		return PMQ_ERR_CONFIG;
	}
	snprintf(buf, sizeof(buf), "%ld", n);
	a->host = strndup(h, (size_t)(h_end - h));
	a->port = strdup(buf);
	if (a->host == NULL || a->port == NULL)
		return PMQ_ERR_NOMEM; /* config_free releases the other */
	return PMQ_OK;
}

static int
add_listen(struct parser *p, struct config_listener *l, const char *value)
{
	char *copy, *tok, *save = NULL;
	const char *why;
	struct config_addr *a;
	size_t i, j, added = 0;
	int rc = PMQ_OK;

	copy = strdup(value);
	if (copy == NULL)
		return nomem(p);
	for (tok = strtok_r(copy, " \t", &save); tok != NULL && rc == PMQ_OK;
	    tok = strtok_r(NULL, " \t", &save)) {
		a = grow(l->listen, l->n_listen, sizeof(*a));
		if (a == NULL) {
			rc = nomem(p);
			break;
		}
		l->listen = a;
		a = &l->listen[l->n_listen++];
		added++;
		a->line = p->line;
		rc = parse_addr(tok, a, &why);
		if (rc == PMQ_ERR_NOMEM) {
			rc = nomem(p);
			break;
		}
		if (rc != PMQ_OK) {
			rc = perr(p, p->line, PMQ_ERR_CONFIG,
			    "invalid listen address '%s': %s", tok, why);
			break;
		}
		/* Port 0 binds a fresh ephemeral port each time: no clash. */
		if (strcmp(a->port, "0") == 0)
			continue;
		for (i = 0; i < p->cfg->n_listeners; i++) {
			const struct config_listener *o = &p->cfg->listeners[i];

			for (j = 0; j < o->n_listen; j++) {
				const struct config_addr *b = &o->listen[j];

				if (b == a || strcmp(a->host, b->host) != 0 ||
				    strcmp(a->port, b->port) != 0)
					continue;
				rc = perr(p, p->line, PMQ_ERR_CONFIG,
				    "listen address '%s' is already used at "
				    "line %d", tok, b->line);
				break;
			}
			if (rc != PMQ_OK)
				break;
		}
	}
	free(copy);
	if (rc == PMQ_OK && added == 0)
		rc = perr(p, p->line, PMQ_ERR_CONFIG,
		    "'listen' needs at least one HOST:PORT");
	return rc;
}

/* Store one of our keys' value into obj according to its definition. */
static int
set_value(struct parser *p, const struct key_def *k, void *obj,
    const char *v)
{
	char *field = (char *)obj + k->offset;
	const char *why = NULL;
	int64_t n;
	uint64_t u;
	int lvl;

	switch (k->type) {
	case V_STR:
	case V_PLUGIN:
	case V_FILTER:
	case V_TOPIC:
		if (*v == '\0')
			why = "a value is required";
		else if (k->type == V_PLUGIN && strchr(v, '/') == NULL &&
		    (!valid_name(v, SIZE_MAX) || v[0] == '.'))
			why = "expected a plugin name (letters, digits, '_', "
			      "'-', '.') or a path containing '/'";
		else if (k->type == V_FILTER)
			why = filter_problem(v);
		else if (k->type == V_TOPIC && !valid_name(v, TOPIC_NAME_MAX))
			why = "a log topic name uses letters, digits, '.', "
			      "'_' and '-' (at most 249)";
		if (why == NULL) {
			char *s = strdup(v);

			if (s == NULL)
				return nomem(p);
			free(*(char **)field);
			*(char **)field = s;
		}
		break;
	case V_LOG_LEVEL:
		lvl = logger_level_from_name(v);
		if (lvl < 0)
			why = "expected error, warn, info or debug";
		else
			*(int *)field = lvl;
		break;
	case V_SHARE:
		if (strcmp(v, "round_robin") == 0)
			*(int *)field = CONFIG_SHARE_ROUND_ROBIN;
		else if (strcmp(v, "sticky_publisher") == 0)
			*(int *)field = CONFIG_SHARE_STICKY_PUBLISHER;
		else if (strcmp(v, "sticky_topic") == 0)
			*(int *)field = CONFIG_SHARE_STICKY_TOPIC;
		else
			why = "expected round_robin, sticky_publisher or "
			      "sticky_topic";
		break;
	case V_U32:
	case V_I32:
		if (util_parse_int(v, k->min, k->max, &n) != PMQ_OK)
			return perr(p, p->line, PMQ_ERR_CONFIG,
			    "invalid value '%s' for '%s': expected an integer "
			    "from %lld to %lld", v, k->name,
			    (long long)k->min, (long long)k->max);
		if (k->type == V_U32)
			*(uint32_t *)field = (uint32_t)n;
		else
			*(int32_t *)field = (int32_t)n;
		break;
	case V_SIZE:
		if (util_parse_size(v, &u) != PMQ_OK || u == 0)
			why = "expected a size above 0, as 65536, 64k, 16M, 1G";
		else
			*(uint64_t *)field = u;
		break;
	case V_SIZE_OR_NONE:
		if (strcmp(v, "-1") == 0)
			*(int64_t *)field = -1;
		else if (util_parse_size(v, &u) != PMQ_OK || u == 0 ||
		    u > (uint64_t)INT64_MAX)
			why = "expected a size above 0, as 64k, 16M, 1G, or -1 "
			      "for no limit";
		else
			*(int64_t *)field = (int64_t)u;
		break;
	case V_DURATION:
		if (util_parse_duration_ms(v, &n) != PMQ_OK || n == 0)
			why = "expected a duration above 0, as 250ms, 10s, 5m, "
			      "1h, 7d, or -1 for forever";
		else
			*(int64_t *)field = n;
		break;
	case V_LISTEN:
		return add_listen(p, obj, v);
	}
	if (why != NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG,
		    "invalid value '%s' for '%s': %s", v, k->name, why);
	if (k->line_off >= 0)
		*(int *)((char *)obj + k->line_off) = p->line;
	return PMQ_OK;
}

/* Edit distance, for "did you mean" on a misspelt key. */
static size_t
distance(const char *a, const char *b)
{
	size_t prev[SUGGEST_MAX + 1], cur[SUGGEST_MAX + 1];
	size_t la = strlen(a), lb = strlen(b), i, j, best;

	if (la > SUGGEST_MAX || lb > SUGGEST_MAX)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		prev[j] = j;
	for (i = 1; i <= la; i++) {
		cur[0] = i;
		for (j = 1; j <= lb; j++) {
			best = prev[j - 1] + (a[i - 1] != b[j - 1]);
			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			cur[j] = best;
		}
		memcpy(prev, cur, sizeof(prev));
	}
	return prev[lb];
}

/* The section's object that its keys are stored into. */
static void *
section_object(struct parser *p)
{
	struct config *cfg = p->cfg;

	switch (p->sec->id) {
	case SEC_LISTENER:
		return &cfg->listeners[cfg->n_listeners - 1];
	case SEC_RULE:
		return &cfg->rules[cfg->n_rules - 1];
	case SEC_GLOBAL:
	case SEC_STORAGE:
		break;
	}
	return cfg;
}

static int
add_plugin_key(struct parser *p, const char *key, const char *value)
{
	struct config *cfg = p->cfg;
	struct config_kv *kv;
	struct config_kv **arr = &cfg->storage_keys;
	size_t *n = &cfg->n_storage_keys;

	if (p->sec->id == SEC_LISTENER) {
		struct config_listener *l = section_object(p);

		arr = &l->keys;
		n = &l->n_keys;
	}
	kv = grow(*arr, *n, sizeof(*kv));
	if (kv == NULL)
		return nomem(p);
	*arr = kv;
	kv = &kv[(*n)++];
	kv->line = p->line;
	kv->key = strdup(key);
	kv->value = strdup(value);
	if (kv->key == NULL || kv->value == NULL)
		return nomem(p); /* config_free releases the half-filled kv */
	return PMQ_OK;
}

/* inih's callback for each "key = value": the reader has already checked
 * the line's shape, and p->line is its number. */
static int
handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;
	const struct section_def *sec = p->sec;
	const char *hint = NULL;
	size_t i;

	(void)section; /* ours is p->sec: inih's copy may be cut short */
	if (p->rc != PMQ_OK)
		return 1;
	if (sec == NULL) {
		perr(p, p->line, PMQ_ERR_CONFIG, "key '%s' is outside any "
		    "section (start with [plexmqd], [storage], "
		    "[listener NAME] or [rule NAME])", key);
		return 0;
	}
	/* inih only strips ';' comments that follow whitespace, so
	 * "key = ;x" gives the value ";x". */
	if (value[0] == ';') {
		perr(p, p->line, PMQ_ERR_CONFIG, "value of '%s' begins with "
		    "';' (for an empty value, leave it out)", key);
		return 0;
	}
	for (i = 0; value[i] != '\0'; i++) {
		if (value[i] == '#' && i > 0 &&
		    isspace((unsigned char)value[i - 1])) {
			perr(p, p->line, PMQ_ERR_CONFIG, "'#' in the value of "
			    "'%s' is not a comment; comments after a value "
			    "start with ';'", key);
			return 0;
		}
	}
	for (i = 0; i < sec->n_keys; i++) {
		const struct key_def *k = &sec->keys[i];

		if (strcmp(k->name, key) != 0)
			continue;
		if (p->seen[i] != 0 && !k->repeatable) {
			perr(p, p->line, PMQ_ERR_CONFIG, "duplicate key '%s' "
			    "(first at line %d)", key, p->seen[i]);
			return 0;
		}
		p->seen[i] = p->line;
		return set_value(p, k, section_object(p), value) == PMQ_OK;
	}
	if (sec->plugin_keys)
		return add_plugin_key(p, key, value) == PMQ_OK;
	for (i = 0; i < sec->n_keys; i++)
		if (distance(key, sec->keys[i].name) <= 2)
			hint = sec->keys[i].name;
	if (hint != NULL)
		perr(p, p->line, PMQ_ERR_CONFIG, "unknown key '%s' in [%s] "
		    "(did you mean '%s'?)", key, sec->kind, hint);
	else
		perr(p, p->line, PMQ_ERR_CONFIG, "unknown key '%s' in [%s]",
		    key, sec->kind);
	return 0;
}

/* Start the section named by a header's text "kind [NAME]". */
static int
open_section(struct parser *p, char *text)
{
	struct config *cfg = p->cfg;
	const struct section_def *sec = NULL;
	char *kind, *name, *extra, *save = NULL;
	size_t i;

	kind = strtok_r(text, " \t", &save);
	name = kind != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	extra = name != NULL ? strtok_r(NULL, " \t", &save) : NULL;
	if (kind == NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG, "empty section header");
	for (i = 0; i < UTIL_ARRAY_LEN(sections); i++)
		if (strcmp(sections[i].kind, kind) == 0)
			sec = &sections[i];
	if (sec == NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG, "unknown section kind "
		    "'%s' (expected [plexmqd], [storage], [listener NAME] or "
		    "[rule NAME])", kind);
	if (sec->named && name == NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG, "section [%s] needs "
		    "a name: [%s NAME]", kind, kind);
	if (!sec->named && name != NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG, "section [%s] takes "
		    "no name", kind);
	if (extra != NULL)
		return perr(p, p->line, PMQ_ERR_CONFIG, "section name '%s %s' "
		    "contains a space", name, extra);
	if (name != NULL && !valid_name(name, CONFIG_SECTION_MAX))
		return perr(p, p->line, PMQ_ERR_CONFIG, "invalid %s name '%s': "
		    "use letters, digits, '.', '_' and '-' (topic filters go "
		    "in values, as match = a/#)", kind, name);

	switch (sec->id) {
	case SEC_GLOBAL:
		if (p->global_line != 0)
			return perr(p, p->line, PMQ_ERR_CONFIG, "duplicate "
			    "section [plexmqd] (first at line %d)",
			    p->global_line);
		p->global_line = p->line;
		break;
	case SEC_STORAGE:
		if (cfg->storage_line != 0)
			return perr(p, p->line, PMQ_ERR_CONFIG, "duplicate "
			    "section [storage] (first at line %d)",
			    cfg->storage_line);
		cfg->storage_line = p->line;
		break;
	case SEC_LISTENER: {
		struct config_listener *l;

		for (i = 0; i < cfg->n_listeners; i++)
			if (strcmp(cfg->listeners[i].name, name) == 0)
				return perr(p, p->line, PMQ_ERR_CONFIG,
				    "duplicate listener name '%s' (first at "
				    "line %d)", name, cfg->listeners[i].line);
		l = grow(cfg->listeners, cfg->n_listeners, sizeof(*l));
		if (l == NULL)
			return nomem(p);
		cfg->listeners = l;
		l = &l[cfg->n_listeners++];
		l->line = p->line;
		l->max_connections = CONFIG_DEFAULT_LISTENER_MAX_CONNECTIONS;
		l->output_high_water = CONFIG_DEFAULT_OUTPUT_HIGH_WATER;
		l->input_max = CONFIG_DEFAULT_INPUT_MAX;
		if ((l->name = strdup(name)) == NULL)
			return nomem(p);
		break;
	}
	case SEC_RULE: {
		struct config_rule *r;

		for (i = 0; i < cfg->n_rules; i++)
			if (strcmp(cfg->rules[i].name, name) == 0)
				return perr(p, p->line, PMQ_ERR_CONFIG,
				    "duplicate rule name '%s' (first at line "
				    "%d)", name, cfg->rules[i].line);
		r = grow(cfg->rules, cfg->n_rules, sizeof(*r));
		if (r == NULL)
			return nomem(p);
		cfg->rules = r;
		r = &r[cfg->n_rules++];
		r->line = p->line;
		r->partitions = 1;
		r->retention_ms = -1;
		r->retention_bytes = -1;
		if ((r->name = strdup(name)) == NULL)
			return nomem(p);
		break;
	}
	}
	p->sec = sec;
	memset(p->seen, 0, sizeof(p->seen));
	return PMQ_OK;
}

/* Check a "[...]" line the way inih will read it, then open the section. */
static int
section_line(struct parser *p, const char *s)
{
	char text[CONFIG_SECTION_MAX + 1];
	const char *q;
	int was_space = 0;
	size_t len;

	/* Like inih: stop at ']' or at a ';' that follows whitespace. */
	for (q = s + 1; *q != '\0' && *q != ']'; q++) {
		if (*q == ';' && was_space)
			break;
		was_space = isspace((unsigned char)*q);
	}
	if (*q != ']')
		return perr(p, p->line, PMQ_ERR_CONFIG,
		    "missing ']' in section header");
	len = (size_t)(q - (s + 1));
	if (len > CONFIG_SECTION_MAX)
		return perr(p, p->line, PMQ_ERR_CONFIG, "section header too "
		    "long (at most %d characters between the brackets)",
		    CONFIG_SECTION_MAX);
	for (q++; isspace((unsigned char)*q); q++)
		;
	if (*q != '\0' && *q != ';')
		return perr(p, p->line, PMQ_ERR_CONFIG,
		    "unexpected text after ']'");
	memcpy(text, s + 1, len);
	text[len] = '\0';
	return open_section(p, text);
}

/* Check a key line's separator the way inih will split it. */
static int
key_line(struct parser *p, const char *s)
{
	const char *q;
	int was_space = 0;

	for (q = s; *q != '\0' && *q != '=' && *q != ':'; q++) {
		if (*q == ';' && was_space)
			break;
		was_space = isspace((unsigned char)*q);
	}
	if (*q == ':')
		return perr(p, p->line, PMQ_ERR_CONFIG, "use '=' between key "
		    "and value (':' found first)");
	if (*q != '=')
		return perr(p, p->line, PMQ_ERR_CONFIG,
		    "expected 'key = value' or '[section]'");
	if (q == s)
		return perr(p, p->line, PMQ_ERR_CONFIG,
		    "missing key before '='");
	return PMQ_OK;
}

static int
src_getc(struct parser *p)
{
	if (p->fp != NULL)
		return getc(p->fp);
	if (p->text[p->pos] == '\0')
		return EOF;
	return (unsigned char)p->text[p->pos++];
}

/* inih's fgets-like reader: returns the next line, cleaned, in buf (num
 * bytes), or NULL at the end or at the first error. */
static char *
reader(char *buf, int num, void *user)
{
	struct parser *p = user;
	size_t n = 0, len, limit;
	char *s, *end;
	int c;

	if (p->rc != PMQ_OK || num < 3)
		return NULL;
	limit = (size_t)num - 2; /* room for "\n" and NUL */
	if (limit > CONFIG_LINE_MAX)
		limit = CONFIG_LINE_MAX;
	c = src_getc(p);
	if (c == EOF)
		goto eof;
	p->line++;
	for (; c != EOF && c != '\n'; c = src_getc(p)) {
		if (c == '\0') {
			perr(p, p->line, PMQ_ERR_CONFIG, "NUL byte in line");
			return NULL;
		}
		/* No newline yet and not at EOF: longer than we hold. */
		if (n == RAW_LINE_MAX)
			goto too_long;
		p->raw[n++] = (char)c;
	}
	p->raw[n] = '\0';
	if (c == EOF && p->fp != NULL && ferror(p->fp))
		goto eof;

	s = p->raw;
	if (p->line == 1 && (unsigned char)s[0] == 0xEF &&
	    (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
		s += 3;
	/* Without indentation inih can never see a continuation line. */
	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	len = (size_t)(end - s);
	if (len > limit)
		goto too_long;

	if (*s == '\0' || *s == ';' || *s == '#')
		len = 0; /* comment: inih gets a blank line */
	else if (*s == '[' ? section_line(p, s) != PMQ_OK
	                   : key_line(p, s) != PMQ_OK)
		return NULL;
	memcpy(buf, s, len);
	buf[len] = '\n';
	buf[len + 1] = '\0';
	return buf;

too_long:
	perr(p, p->line, PMQ_ERR_CONFIG, "line too long (at most %zu "
	    "characters)", limit);
	return NULL;
eof:
	if (p->fp != NULL && ferror(p->fp))
		perr(p, p->line, PMQ_ERR_IO, "read error: %s", strerror(errno));
	return NULL;
}

/* Checks that need the whole file, and the defaults that depend on it. */
static int
finish(struct parser *p)
{
	struct config *cfg = p->cfg;
	size_t i, j;

	for (i = 0; i < cfg->n_listeners; i++) {
		const struct config_listener *l = &cfg->listeners[i];

		if (l->plugin == NULL)
			return perr(p, l->line, PMQ_ERR_CONFIG, "listener '%s' "
			    "has no 'plugin = NAME'", l->name);
		if (l->n_listen == 0)
			return perr(p, l->line, PMQ_ERR_CONFIG, "listener '%s' "
			    "has no 'listen = HOST:PORT'", l->name);
	}
	for (i = 0; i < cfg->n_rules; i++) {
		struct config_rule *r = &cfg->rules[i];

		if (r->match == NULL)
			return perr(p, r->line, PMQ_ERR_CONFIG, "rule '%s' has "
			    "no 'match = FILTER'", r->name);
		if (r->log == NULL && (r->log = strdup(r->name)) == NULL)
			return nomem(p);
		for (j = 0; j < i; j++) {
			const struct config_rule *o = &cfg->rules[j];

			if (strcmp(o->log, r->log) != 0)
				continue;
			if (o->partitions != r->partitions ||
			    o->retention_ms != r->retention_ms ||
			    o->retention_bytes != r->retention_bytes)
				return perr(p, r->line, PMQ_ERR_CONFIG, "rule "
				    "'%s' logs to '%s' like rule '%s' (line "
				    "%d) but with other partitions or "
				    "retention", r->name, r->log, o->name,
				    o->line);
		}
	}
	if (cfg->n_listeners == 0)
		return perr(p, 0, PMQ_ERR_CONFIG, "no listener: add a "
		    "[listener NAME] section with plugin and listen");
	if (cfg->storage_plugin == NULL &&
	    (cfg->storage_plugin = strdup(CONFIG_DEFAULT_STORAGE)) == NULL)
		return nomem(p);
	return PMQ_OK;
}

static int
parse(const char *name, FILE *fp, const char *text, struct config **out,
    char *err, size_t err_len)
{
	struct parser *p;
	struct config *cfg;
	int r, rc;

	*out = NULL;
	if (err != NULL && err_len > 0)
		err[0] = '\0';
	p = calloc(1, sizeof(*p));
	cfg = calloc(1, sizeof(*cfg));
	if (p == NULL || cfg == NULL)
		goto nomem;
	cfg->path = strdup(name);
	cfg->plugin_dir = strdup(PMQ_PLUGINDIR);
	cfg->data_dir = strdup(CONFIG_DEFAULT_DATA_DIR);
	cfg->log_level = PMQ_LOG_INFO;
	cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
	if (cfg->path == NULL || cfg->plugin_dir == NULL ||
	    cfg->data_dir == NULL)
		goto nomem;

	p->cfg = cfg;
	p->fp = fp;
	p->text = text;
	p->err = err;
	p->err_len = err_len;
	r = ini_parse_stream(reader, p, handler, p);
	/* Our reader and handler catch every shape inih rejects, so a
	 * failure of inih's own is unexpected: still report it. */
	if (p->rc == PMQ_OK && r == -2)
		nomem(p);
	else if (p->rc == PMQ_OK && r != 0)
		perr(p, r > 0 ? r : p->line, PMQ_ERR_CONFIG, "syntax error");
	if (p->rc == PMQ_OK)
		finish(p);
	rc = p->rc;
	free(p);
	if (rc != PMQ_OK) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return PMQ_OK;

nomem:
	free(p);
	config_free(cfg);
	if (err != NULL && err_len > 0)
		snprintf(err, err_len, "%s: out of memory", name);
	return PMQ_ERR_NOMEM;
}

int
config_load(const char *path, struct config **out, char *err,
    size_t err_len)
{
	FILE *fp;
	int rc;

	*out = NULL;
	fp = fopen(path, "re");
	if (fp == NULL) {
		if (err != NULL && err_len > 0)
			snprintf(err, err_len, "%s: cannot open: %s", path,
			    strerror(errno));
		return PMQ_ERR_IO;
	}
	rc = parse(path, fp, NULL, out, err, err_len);
	fclose(fp);
	return rc;
}

int
config_load_string(const char *name, const char *text, struct config **out,
    char *err, size_t err_len)
{
	return parse(name, NULL, text, out, err, err_len);
}
