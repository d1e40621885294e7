/*
 * test_config.c - unit tests for core/config.c: the schema, the defaults,
 * inih's traps, and that every error names the right file and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* By path, not "config.h": the build's include path puts autoconf's
 * generated config.h (top_builddir) ahead of core/. */
#include "../../core/config.h"

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif
#define CONF_DIR TOP_SRCDIR "/tests/unit/conf/"

/* Three lines that make any config valid: [listener l] at line 1 of the
 * snippet, so tests that prepend it shift their own lines by 3. */
#define LISTENER "[listener l]\nplugin = tcp\nlisten = 127.0.0.1:0\n"

static struct config *
load_ok(const char *text)
{
	struct config *cfg = NULL;
	char err[512] = "";
	int rc;

	rc = config_load_string("t.ini", text, &cfg, err, sizeof(err));
	if (rc != PMQ_OK)
		fail_msg("unexpected error %d: %s", rc, err);
	assert_non_null(cfg);
	return cfg;
}

/* Loading text fails with PMQ_ERR_CONFIG, and the message is exactly
 * where (e.g. "t.ini:4: ") followed by a text containing what. */
static void
expect_error(const char *text, const char *where, const char *what)
{
	struct config *cfg = (struct config *)&cfg; /* must be reset */
	char err[512] = "";
	int rc;

	rc = config_load_string("t.ini", text, &cfg, err, sizeof(err));
	assert_int_equal(rc, PMQ_ERR_CONFIG);
	assert_null(cfg);
	if (strncmp(err, where, strlen(where)) != 0 ||
	    strstr(err + strlen(where), what) == NULL)
		fail_msg("got \"%s\", want \"%s...%s...\"", err, where, what);
}

static void
test_full(void **state)
{
	struct config *cfg;
	const struct config_listener *l;
	const struct config_rule *r;

	(void)state;
	cfg = load_ok(
	    "[plexmqd]\n"                              /* 1 */
	    "plugin_dir = /p\n"
	    "data_dir = /d\n"
	    "log_level = warn\n"
	    "log_file = /l.log\n"                      /* 5 */
	    "max_connections = 77\n"
	    "[storage]\n"
	    "plugin = memory\n"
	    "limit = 10M\n"
	    "limit = 20M\n"                            /* 10 */
	    "[listener a]\n"
	    "plugin = tcp\n"
	    "listen = 127.0.0.1:1883\n"
	    "listen = [::1]:1884 localhost:0\n"
	    "max_connections = 5\n"                    /* 15 */
	    "output_high_water = 64k\n"
	    "input_max = 1G\n"
	    "greeting = hello world\n"
	    "[listener b]\n"
	    "plugin = ./x/mqtt.so\n"                   /* 20 */
	    "listen = 0.0.0.0:65535\n"
	    "[rule r1]\n"
	    "match = a/+/b/#\n"
	    "log = t1\n"
	    "partitions = 3\n"                         /* 25 */
	    "retention = 2h\n"
	    "retention_bytes = 1M\n"
	    "[rule r2]\n"
	    "match = #\n");

	assert_string_equal(cfg->path, "t.ini");
	assert_string_equal(cfg->plugin_dir, "/p");
	assert_string_equal(cfg->data_dir, "/d");
	assert_int_equal(cfg->log_level, PMQ_LOG_WARN);
	assert_string_equal(cfg->log_file, "/l.log");
	assert_int_equal(cfg->max_connections, 77);

	assert_string_equal(cfg->storage_plugin, "memory");
	assert_int_equal(cfg->storage_line, 7);
	assert_int_equal(cfg->n_storage_keys, 2);
	/* Plugin keys keep order, repeats and lines: the plugin judges. */
	assert_string_equal(cfg->storage_keys[0].key, "limit");
	assert_string_equal(cfg->storage_keys[0].value, "10M");
	assert_int_equal(cfg->storage_keys[0].line, 9);
	assert_string_equal(cfg->storage_keys[1].value, "20M");
	assert_int_equal(cfg->storage_keys[1].line, 10);

	assert_int_equal(cfg->n_listeners, 2);
	l = &cfg->listeners[0];
	assert_string_equal(l->name, "a");
	assert_int_equal(l->line, 11);
	assert_string_equal(l->plugin, "tcp");
	assert_int_equal(l->plugin_line, 12);
	assert_int_equal(l->n_listen, 3);
	assert_string_equal(l->listen[0].host, "127.0.0.1");
	assert_string_equal(l->listen[0].port, "1883");
	assert_int_equal(l->listen[0].line, 13);
	assert_string_equal(l->listen[1].host, "::1");
	assert_string_equal(l->listen[1].port, "1884");
	assert_int_equal(l->listen[1].line, 14);
	assert_string_equal(l->listen[2].host, "localhost");
	assert_string_equal(l->listen[2].port, "0");
	assert_int_equal(l->listen[2].line, 14);
	assert_int_equal(l->max_connections, 5);
	assert_int_equal(l->output_high_water, 64 * 1024);
	assert_int_equal(l->input_max, 1024ULL * 1024 * 1024);
	assert_int_equal(l->n_keys, 1);
	assert_string_equal(l->keys[0].key, "greeting");
	assert_string_equal(l->keys[0].value, "hello world");
	assert_int_equal(l->keys[0].line, 18);

	l = &cfg->listeners[1];
	assert_string_equal(l->name, "b");
	assert_string_equal(l->plugin, "./x/mqtt.so");
	assert_int_equal(l->n_listen, 1);
	assert_string_equal(l->listen[0].port, "65535");
	assert_int_equal(l->n_keys, 0);

	assert_int_equal(cfg->n_rules, 2);
	r = &cfg->rules[0];
	assert_string_equal(r->name, "r1");
	assert_int_equal(r->line, 22);
	assert_string_equal(r->match, "a/+/b/#");
	assert_string_equal(r->log, "t1");
	assert_int_equal(r->partitions, 3);
	assert_int_equal(r->retention_ms, 2 * 3600 * 1000);
	assert_int_equal(r->retention_bytes, 1024 * 1024);
	r = &cfg->rules[1];
	assert_string_equal(r->match, "#");
	assert_string_equal(r->log, "r2"); /* defaults to the rule's name */
	config_free(cfg);
}

static void
test_defaults(void **state)
{
	struct config *cfg;
	const struct config_listener *l;

	(void)state;
	cfg = load_ok(LISTENER "[rule r]\nmatch = x\n");
	assert_string_equal(cfg->plugin_dir, PMQ_PLUGINDIR);
	assert_string_equal(cfg->data_dir, "./data");
	assert_int_equal(cfg->log_level, PMQ_LOG_INFO);
	assert_null(cfg->log_file);
	assert_int_equal(cfg->max_connections, 10000);
	assert_string_equal(cfg->storage_plugin, "memory");
	assert_int_equal(cfg->storage_line, 0);
	assert_int_equal(cfg->n_storage_keys, 0);
	l = &cfg->listeners[0];
	assert_int_equal(l->max_connections, 1000);
	assert_int_equal(l->output_high_water, 1024 * 1024);
	assert_int_equal(l->input_max, 2 * 1024 * 1024);
	assert_string_equal(cfg->rules[0].log, "r");
	assert_int_equal(cfg->rules[0].partitions, 1);
	assert_int_equal(cfg->rules[0].retention_ms, -1);
	assert_int_equal(cfg->rules[0].retention_bytes, -1);
	config_free(cfg);

	/* An empty [storage] still means the default plugin. */
	cfg = load_ok("[storage]\n" LISTENER);
	assert_string_equal(cfg->storage_plugin, "memory");
	assert_int_equal(cfg->storage_line, 1);
	config_free(cfg);
}

static void
test_file_good(void **state)
{
	struct config *cfg = NULL;
	char err[512] = "";
	const struct config_listener *l;

	(void)state;
	assert_int_equal(config_load(CONF_DIR "good.ini", &cfg, err,
	    sizeof(err)), PMQ_OK);
	assert_string_equal(cfg->path, CONF_DIR "good.ini");
	assert_int_equal(cfg->log_level, PMQ_LOG_DEBUG);
	assert_int_equal(cfg->max_connections, 500);
	assert_string_equal(cfg->storage_plugin, "/opt/plexmq/plugins/lmdb.so");
	assert_int_equal(cfg->storage_line, 12);
	assert_int_equal(cfg->n_storage_keys, 2);
	assert_string_equal(cfg->storage_keys[1].key, "fsync");
	assert_int_equal(cfg->storage_keys[1].line, 15);
	l = &cfg->listeners[0];
	assert_string_equal(l->name, "mqtt");
	assert_int_equal(l->line, 17);
	/* Indented keys are keys, not inih continuation lines. */
	assert_int_equal(l->plugin_line, 18);
	assert_int_equal(l->n_listen, 3);
	assert_string_equal(l->listen[1].host, "::1");
	assert_int_equal(l->listen[2].line, 20);
	assert_int_equal(l->output_high_water, 64 * 1024);
	assert_int_equal(l->n_keys, 1);
	assert_string_equal(l->keys[0].key, "keepalive");
	assert_string_equal(l->keys[0].value, "60s");
	assert_int_equal(cfg->n_rules, 2);
	assert_string_equal(cfg->rules[0].match, "sensors/+/temp/#");
	assert_int_equal(cfg->rules[0].retention_ms, 7LL * 86400 * 1000);
	assert_int_equal(cfg->rules[0].retention_bytes, 1024LL * 1024 * 1024);
	assert_string_equal(cfg->rules[1].match, "#");
	assert_int_equal(cfg->rules[1].line, 33);
	config_free(cfg);
}

static void
test_file_crlf_bom(void **state)
{
	struct config *cfg = NULL;
	char err[512] = "";

	(void)state;
	assert_int_equal(config_load(CONF_DIR "crlf_bom.ini", &cfg, err,
	    sizeof(err)), PMQ_OK);
	assert_string_equal(cfg->listeners[0].name, "win");
	assert_int_equal(cfg->listeners[0].line, 2);
	assert_string_equal(cfg->listeners[0].plugin, "tcp");
	assert_string_equal(cfg->listeners[0].listen[0].port, "0");
	config_free(cfg);
}

static void
test_file_errors(void **state)
{
	struct config *cfg = (struct config *)&cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(config_load(CONF_DIR "typo.ini", &cfg, err,
	    sizeof(err)), PMQ_ERR_CONFIG);
	assert_null(cfg);
	assert_string_equal(err, CONF_DIR "typo.ini:4: unknown key "
	    "'log_levl' in [plexmqd] (did you mean 'log_level'?)");

	assert_int_equal(config_load(CONF_DIR "long_line.ini", &cfg, err,
	    sizeof(err)), PMQ_ERR_CONFIG);
	assert_string_equal(err, CONF_DIR "long_line.ini:3: line too long "
	    "(at most 198 characters)");

	assert_int_equal(config_load(CONF_DIR "missing.ini", &cfg, err,
	    sizeof(err)), PMQ_ERR_IO);
	assert_null(cfg);
	assert_string_equal(err, CONF_DIR "missing.ini: cannot open: "
	    "No such file or directory");

	/* A NUL byte would end the line early for inih. */
	{
		char tmp[] = "/tmp/test_config_XXXXXX";
		int fd = mkstemp(tmp);
		FILE *fp;
		char want[128];

		assert_true(fd >= 0);
		fp = fdopen(fd, "w");
		assert_non_null(fp);
		fwrite(LISTENER "[plexmqd]\ndata_dir = a\0b\n", 1,
		    sizeof(LISTENER) - 1 + 25, fp);
		fclose(fp);
		assert_int_equal(config_load(tmp, &cfg, err, sizeof(err)),
		    PMQ_ERR_CONFIG);
		unlink(tmp);
		snprintf(want, sizeof(want), "%s:5: NUL byte in line", tmp);
		assert_string_equal(err, want);
	}

	/* A directory opens but cannot be read. */
	assert_int_equal(config_load(CONF_DIR, &cfg, err, sizeof(err)),
	    PMQ_ERR_IO);
	assert_null(cfg);
	assert_non_null(strstr(err, "read error"));
}

/* inih splits "key: value" like "key = value"; we refuse it. */
static void
test_trap_colon(void **state)
{
	struct config *cfg;

	(void)state;
	expect_error(LISTENER "[rule r]\nmatch: a/b\n", "t.ini:5: ",
	    "use '=' between key and value");
	expect_error(LISTENER "listen:x = 1.2.3.4:5\n", "t.ini:4: ",
	    "use '='");
	/* ':' after the '=' is part of the value. */
	cfg = load_ok(LISTENER "listen = [::]:9 [fe80::1]:10\n"
	    "[storage]\nurl = http://x:1/y\n");
	assert_string_equal(cfg->listeners[0].listen[1].host, "::");
	assert_string_equal(cfg->listeners[0].listen[2].host, "fe80::1");
	assert_string_equal(cfg->storage_keys[0].value, "http://x:1/y");
	config_free(cfg);
}

static void
test_trap_semicolon(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("; comment line\n"
	    "   ; indented comment\n"
	    "[plexmqd] ; after a header\n"
	    "max_connections = 50 ; inline comment\n"
	    "log_file = /tmp/a;b\n" LISTENER);
	assert_int_equal(cfg->max_connections, 50);
	/* Only " ;" starts a comment: a ';' inside a word stays. */
	assert_string_equal(cfg->log_file, "/tmp/a;b");
	assert_int_equal(cfg->listeners[0].line, 6);
	config_free(cfg);

	/* inih keeps ";x" as the value when no space precedes it ... */
	expect_error("[plexmqd]\nlog_file =;none\n" LISTENER, "t.ini:2: ",
	    "value of 'log_file' begins with ';'");
	/* ... and with a space the value is empty, which ours may not be. */
	expect_error("[plexmqd]\nlog_file = ; none\n" LISTENER, "t.ini:2: ",
	    "invalid value '' for 'log_file': a value is required");
	/* A comment hiding the '=' leaves no value at all. */
	expect_error("[plexmqd]\nlog_file ; = x\n", "t.ini:2: ",
	    "expected 'key = value'");
}

static void
test_trap_hash(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("# comment\n  # indented\n" LISTENER
	    "[rule r]\nmatch = sensors/#\n");
	assert_string_equal(cfg->rules[0].match, "sensors/#");
	assert_int_equal(cfg->listeners[0].line, 3);
	config_free(cfg);

	/* '#' after a value is not a comment to inih: refuse it. */
	expect_error("[plexmqd]\nlog_level = info # chatty\n", "t.ini:2: ",
	    "'#' in the value of 'log_level' is not a comment");
	expect_error(LISTENER "tls = on # later\n", "t.ini:4: ",
	    "is not a comment");
}

static void
test_trap_long_line(void **state)
{
	char text[1024];
	char v[400];
	struct config *cfg;

	(void)state;
	/* "data_dir = " is 11 characters: 187 more make exactly 198. */
	memset(v, 'x', 187);
	v[187] = '\0';
	snprintf(text, sizeof(text), LISTENER "[plexmqd]\ndata_dir = %s\n", v);
	cfg = load_ok(text);
	assert_int_equal(strlen(cfg->data_dir), 187);
	config_free(cfg);

	memset(v, 'x', 188);
	v[188] = '\0';
	snprintf(text, sizeof(text), LISTENER "[plexmqd]\ndata_dir = %s\n", v);
	expect_error(text, "t.ini:5: ", "line too long (at most 198");

	/* Indentation does not count ... */
	snprintf(text, sizeof(text), LISTENER "[plexmqd]\n      data_dir "
	    "= %.187s\n", v);
	cfg = load_ok(text);
	config_free(cfg);
	/* ... until the raw line no longer fits our buffer either. */
	memset(v, ' ', 399);
	v[399] = '\0';
	{
		char big[4096];

		snprintf(big, sizeof(big), "[plexmqd]\n%s%s%sdata_dir = x\n",
		    v, v, v);
		expect_error(big, "t.ini:2: ", "line too long");
	}
	/* A long last line without a newline is caught too. */
	memset(v, 'y', 300);
	v[300] = '\0';
	snprintf(text, sizeof(text), LISTENER "[storage]\nk = %s", v);
	expect_error(text, "t.ini:5: ", "line too long");
}

static void
test_trap_long_section(void **state)
{
	char text[256], name[64];
	struct config *cfg;

	(void)state;
	/* "listener " + 39 = 48 characters: the limit. */
	memset(name, 'n', 39);
	name[39] = '\0';
	snprintf(text, sizeof(text), "[listener %s]\nplugin = tcp\n"
	    "listen = 127.0.0.1:0\n", name);
	cfg = load_ok(text);
	assert_string_equal(cfg->listeners[0].name, name);
	config_free(cfg);

	/* inih would cut this one at 49 and we would see another name. */
	memset(name, 'n', 40);
	name[40] = '\0';
	snprintf(text, sizeof(text), "; x\n[listener %s]\nplugin = tcp\n",
	    name);
	expect_error(text, "t.ini:2: ", "section header too long");
}

static void
test_syntax(void **state)
{
	(void)state;
	expect_error("[listener a\n", "t.ini:1: ", "missing ']'");
	expect_error("[listener a ; b]\n", "t.ini:1: ", "missing ']'");
	expect_error("[listener a] x\n", "t.ini:1: ",
	    "unexpected text after ']'");
	expect_error("[]\n", "t.ini:1: ", "empty section header");
	expect_error("\n\n[plexmqd]\njust words\n", "t.ini:4: ",
	    "expected 'key = value' or '[section]'");
	expect_error("[plexmqd]\n= 5\n", "t.ini:2: ", "missing key");
	expect_error("data_dir = x\n", "t.ini:1: ", "outside any section");
	expect_error("", "t.ini: ", "no listener");
	expect_error("; only a comment\n[plexmqd]\n", "t.ini: ",
	    "no listener");
}

static void
test_unknown(void **state)
{
	(void)state;
	expect_error("[plexmqd]\nmax_conn = 5\n", "t.ini:2: ",
	    "unknown key 'max_conn' in [plexmqd]");
	expect_error(LISTENER "[rule r]\nmatch = a\nlogg = x\n", "t.ini:6: ",
	    "unknown key 'logg' in [rule] (did you mean 'log'?)");
	expect_error(LISTENER "[rule r]\nMatch = a\n", "t.ini:5: ",
	    "unknown key 'Match'");
	expect_error(LISTENER "\n[listeners x]\n", "t.ini:5: ",
	    "unknown section kind 'listeners'");
	expect_error("[listener]\n", "t.ini:1: ", "needs a name");
	expect_error("[storage lmdb]\n", "t.ini:1: ", "takes no name");
	expect_error("[listener a b]\n", "t.ini:1: ", "contains a space");
	expect_error("[rule sensors/#]\n", "t.ini:1: ",
	    "invalid rule name 'sensors/#'");
	expect_error("[listener ..]\n", "t.ini:1: ", "invalid listener name");
}

static void
test_share_strategy(void **state)
{
	struct config *cfg;

	cfg = load_ok(LISTENER);
	assert_int_equal(cfg->share_strategy, CONFIG_SHARE_ROUND_ROBIN);
	config_free(cfg);
	cfg = load_ok("[plexmqd]\nshare_strategy = sticky_topic\n" LISTENER);
	assert_int_equal(cfg->share_strategy, CONFIG_SHARE_STICKY_TOPIC);
	config_free(cfg);
	cfg = load_ok("[plexmqd]\nshare_strategy = sticky_publisher\n" LISTENER);
	assert_int_equal(cfg->share_strategy, CONFIG_SHARE_STICKY_PUBLISHER);
	config_free(cfg);
	expect_error("[plexmqd]\nshare_strategy = random\n" LISTENER,
	    "t.ini:2: ", "expected round_robin, sticky_publisher or sticky_topic");
}

static void
test_bad_values(void **state)
{
	static const struct {
		const char *text;
		const char *where;
		const char *what;
	} cases[] = {
		{ "[plexmqd]\nlog_level = verbose\n", "t.ini:2: ",
		  "invalid value 'verbose' for 'log_level'" },
		{ "[plexmqd]\nmax_connections = 0\n", "t.ini:2: ",
		  "from 1 to 1000000" },
		{ "[plexmqd]\nmax_connections = 1000001\n", "t.ini:2: ",
		  "'max_connections'" },
		{ "[plexmqd]\nmax_connections = 12abc\n", "t.ini:2: ",
		  "'12abc'" },
		{ "[plexmqd]\ndata_dir =\n", "t.ini:2: ",
		  "a value is required" },
		{ LISTENER "max_connections = -1\n", "t.ini:4: ",
		  "'max_connections'" },
		{ LISTENER "output_high_water = 1X\n", "t.ini:4: ",
		  "'output_high_water'" },
		{ LISTENER "input_max = 0\n", "t.ini:4: ",
		  "'input_max': expected a size above 0" },
		{ "[listener l]\nplugin = tc p\n", "t.ini:2: ",
		  "expected a plugin name" },
		{ "[listener l]\nplugin = .hidden\n", "t.ini:2: ",
		  "expected a plugin name" },
		{ "[storage]\nplugin =\n", "t.ini:2: ", "a value is required" },
		{ LISTENER "[rule r]\nmatch = a\npartitions = 0\n", "t.ini:6: ",
		  "'partitions': expected an integer from 1 to 10000" },
		{ LISTENER "[rule r]\npartitions = 10001\n", "t.ini:5: ",
		  "'partitions'" },
		{ LISTENER "[rule r]\nretention = 5y\n", "t.ini:5: ",
		  "'retention': expected a duration" },
		{ LISTENER "[rule r]\nretention = 0\n", "t.ini:5: ",
		  "'retention'" },
		{ LISTENER "[rule r]\nretention_bytes = -2\n", "t.ini:5: ",
		  "'retention_bytes'" },
		{ LISTENER "[rule r]\nretention_bytes = lots\n", "t.ini:5: ",
		  "'retention_bytes'" },
		{ LISTENER "[rule r]\nlog = a/b\n", "t.ini:5: ",
		  "invalid value 'a/b' for 'log'" },
		{ LISTENER "[rule r]\nlog = ..\n", "t.ini:5: ", "'log'" },
	};
	struct config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].text, cases[i].where, cases[i].what);

	/* The good edges of the same ranges. */
	cfg = load_ok("[plexmqd]\nmax_connections = 1000000\n"
	    "log_level = ERROR\n" LISTENER "max_connections = 1\n"
	    "[rule r]\nmatch = a\npartitions = 10000\nretention = -1\n"
	    "retention_bytes = -1\n[rule s]\nmatch = b\nretention = 250ms\n"
	    "retention_bytes = 4096\n");
	assert_int_equal(cfg->max_connections, 1000000);
	assert_int_equal(cfg->log_level, PMQ_LOG_ERROR);
	assert_int_equal(cfg->listeners[0].max_connections, 1);
	assert_int_equal(cfg->rules[0].partitions, 10000);
	assert_int_equal(cfg->rules[1].retention_ms, 250);
	assert_int_equal(cfg->rules[1].retention_bytes, 4096);
	config_free(cfg);
}

static void
test_duplicates(void **state)
{
	(void)state;
	expect_error("[plexmqd]\ndata_dir = a\n\ndata_dir = b\n", "t.ini:4: ",
	    "duplicate key 'data_dir' (first at line 2)");
	expect_error("[listener l]\nplugin = tcp\nplugin = tcp\n",
	    "t.ini:3: ", "duplicate key 'plugin' (first at line 2)");
	expect_error(LISTENER "[rule r]\nmatch = a\nmatch = b\n", "t.ini:6: ",
	    "duplicate key 'match' (first at line 5)");
	/* The same key in another section is no duplicate. */
	{
		struct config *cfg = load_ok("[plexmqd]\nmax_connections = 9\n"
		    LISTENER "max_connections = 9\n");

		config_free(cfg);
	}
	expect_error("[plexmqd]\n[plexmqd]\n", "t.ini:2: ",
	    "duplicate section [plexmqd] (first at line 1)");
	expect_error("[storage]\n" LISTENER "[storage]\n", "t.ini:5: ",
	    "duplicate section [storage] (first at line 1)");
	expect_error(LISTENER "[listener l]\n", "t.ini:4: ",
	    "duplicate listener name 'l' (first at line 1)");
	expect_error(LISTENER "[rule r]\nmatch = a\n[rule r]\n", "t.ini:6: ",
	    "duplicate rule name 'r' (first at line 4)");
	expect_error(LISTENER "[listener m]\nplugin = tcp\n"
	    "listen = 1.2.3.4:80\nlisten = 1.2.3.4:0 1.2.3.4:080\n",
	    "t.ini:7: ", "'1.2.3.4:080' is already used at line 6");
	/* Rules may share a log only when they agree on its shape. */
	{
		struct config *cfg = load_ok(LISTENER "[rule a]\nmatch = a/#\n"
		    "log = t\n[rule b]\nmatch = b/#\nlog = t\n");

		config_free(cfg);
	}
	expect_error(LISTENER "[rule a]\nmatch = a/#\nlog = t\n"
	    "[rule b]\nmatch = b/#\nlog = t\npartitions = 2\n", "t.ini:7: ",
	    "rule 'b' logs to 't' like rule 'a' (line 4)");
}

static void
test_missing(void **state)
{
	(void)state;
	expect_error("[listener l]\nlisten = 127.0.0.1:1\n", "t.ini:1: ",
	    "listener 'l' has no 'plugin = NAME'");
	expect_error(LISTENER "\n[listener m]\nplugin = tcp\n", "t.ini:5: ",
	    "listener 'm' has no 'listen = HOST:PORT'");
	expect_error(LISTENER "[rule r]\nlog = x\n", "t.ini:4: ",
	    "rule 'r' has no 'match = FILTER'");
	expect_error("[plexmqd]\n[storage]\n[rule r]\nmatch = a\n", "t.ini: ",
	    "no listener");
}

static void
test_listen_addresses(void **state)
{
	static const struct {
		const char *addr;
		const char *why;
	} bad[] = {
		{ "127.0.0.1", "expected HOST:PORT" },
		{ ":1883", "empty host" },
		{ "[]:1883", "empty host" },
		{ "::1:1883", "write an IPv6 address in brackets" },
		{ "[::1]1883", "expected ':PORT' after ']'" },
		{ "[::1:1883", "missing ']'" },
		{ "host:", "missing port" },
		{ "host:65536", "the port must be a number from 0 to 65535" },
		{ "host:-1", "the port must be a number from 0 to 65535" },
		{ "host:http", "the port must be a number from 0 to 65535" },
		{ "host:100000", "the port must be a number from 0 to 65535" },
	};
	char text[256], what[128];
	struct config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text),
		    "[listener l]\nplugin = tcp\nlisten = 1.2.3.4:1 %s\n",
		    bad[i].addr);
		snprintf(what, sizeof(what), "invalid listen address '%s': %s",
		    bad[i].addr, bad[i].why);
		expect_error(text, "t.ini:3: ", what);
	}
	expect_error("[listener l]\nplugin = tcp\nlisten =\n", "t.ini:3: ",
	    "'listen' needs at least one HOST:PORT");

	cfg = load_ok("[listener l]\nplugin = tcp\n"
	    "listen =   h:0\t[::ffff:1.2.3.4]:00080  *:7\n");
	assert_int_equal(cfg->listeners[0].n_listen, 3);
	assert_string_equal(cfg->listeners[0].listen[0].host, "h");
	assert_string_equal(cfg->listeners[0].listen[1].host,
	    "::ffff:1.2.3.4");
	assert_string_equal(cfg->listeners[0].listen[1].port, "80");
	assert_string_equal(cfg->listeners[0].listen[2].host, "*");
	config_free(cfg);
}

static void
test_match_filters(void **state)
{
	static const char *good[] = {
		"#", "+", "a", "a/b", "a/+", "+/+", "a/#", "+/a/#", "/", "a//b",
		"/#", "$SYS/#", "sp ace/x",
	};
	static const char *bad[] = {
		"a#", "a/#/b", "#/a", "a/b#", "a+", "a/+b/c", "++", "##",
	};
	char text[256];
	struct config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), LISTENER "[rule r]\nmatch = %s\n",
		    good[i]);
		cfg = load_ok(text);
		assert_string_equal(cfg->rules[0].match, good[i]);
		config_free(cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), LISTENER "[rule r]\nmatch = %s\n",
		    bad[i]);
		expect_error(text, "t.ini:5: ", "for 'match'");
	}
	expect_error(LISTENER "[rule r]\nmatch =\n", "t.ini:5: ",
	    "a value is required");
}

static void
test_helpers(void **state)
{
	struct config *cfg;
	char err[64], tiny[8];
	char *path;
	int rc;

	(void)state;
	cfg = load_ok(LISTENER);
	config_error_at(cfg, 12, err, sizeof(err), "bad %s", "thing");
	assert_string_equal(err, "t.ini:12: bad thing");
	config_error_at(cfg, 0, err, sizeof(err), "whole file");
	assert_string_equal(err, "t.ini: whole file");
	config_error_at(cfg, 12, tiny, sizeof(tiny), "long message");
	assert_string_equal(tiny, "t.ini:1");
	config_free(cfg);
	config_free(NULL);

	path = config_plugin_path("/lib/p", "tcp");
	assert_string_equal(path, "/lib/p/tcp.so");
	free(path);
	path = config_plugin_path("/lib/p", "./my/tcp.so");
	assert_string_equal(path, "./my/tcp.so");
	free(path);

	/* Errors never overflow a short buffer, nor need one. */
	rc = config_load_string("t.ini", "[x]\n", &cfg, tiny, sizeof(tiny));
	assert_int_equal(rc, PMQ_ERR_CONFIG);
	assert_string_equal(tiny, "t.ini:1");
	rc = config_load_string("t.ini", "[x]\n", &cfg, NULL, 0);
	assert_int_equal(rc, PMQ_ERR_CONFIG);
	assert_null(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_file_good),
		cmocka_unit_test(test_file_crlf_bom),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_trap_colon),
		cmocka_unit_test(test_trap_semicolon),
		cmocka_unit_test(test_trap_hash),
		cmocka_unit_test(test_trap_long_line),
		cmocka_unit_test(test_trap_long_section),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_share_strategy),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_listen_addresses),
		cmocka_unit_test(test_match_filters),
		cmocka_unit_test(test_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
