/*
 * storecfg.c - parsing of the configuration keys shared by the durable
 * storage plugins (file and lmdb): dir, fsync, fsync_interval_ms and
 * read_only, with one set of error messages.  Compiled into each plugin
 * (see storecfg.h); the plugins' own keys stay in the plugins.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storecfg.h"

#define DEFAULT_INTERVAL_MS 1000
#define MAX_INTERVAL_MS 3600000 /* 1h */

void storecfg_init(struct storecfg *c)
{
	c->dir = NULL;
	c->fsync = STORECFG_FSYNC_ALWAYS;
	c->interval_ms = DEFAULT_INTERVAL_MS;
	c->read_only = 0;
}

void storecfg_free(struct storecfg *c)
{
	free(c->dir);
	c->dir = NULL;
}

int storecfg_key(const struct pmq_host_api *api, struct storecfg *c,
                 const char *key, const char *value, char *err,
                 size_t err_len)
{
	if (strcmp(key, "dir") == 0) {
		char *d;

		if (*value == '\0') {
			snprintf(err, err_len, "dir: empty");
			return PMQ_ERR_CONFIG;
		}
		d = strdup(value);
		if (d == NULL) {
			snprintf(err, err_len, "dir: out of memory");
			return PMQ_ERR_CONFIG;
		}
		free(c->dir);
		c->dir = d;
		return PMQ_OK;
	}
	if (strcmp(key, "fsync") == 0) {
		if (strcmp(value, "always") == 0)
			c->fsync = STORECFG_FSYNC_ALWAYS;
		else if (strcmp(value, "interval") == 0)
			c->fsync = STORECFG_FSYNC_INTERVAL;
		else if (strcmp(value, "never") == 0)
			c->fsync = STORECFG_FSYNC_NEVER;
		else {
			snprintf(err, err_len,
			         "fsync: want always, interval or never, got "
			         "'%s'", value);
			return PMQ_ERR_CONFIG;
		}
		return PMQ_OK;
	}
	if (strcmp(key, "fsync_interval_ms") == 0) {
		int64_t v;

		if (api->cfg_duration_ms(value, &v) != PMQ_OK || v < 1 ||
		    v > MAX_INTERVAL_MS) {
			snprintf(err, err_len,
			         "fsync_interval_ms: want 1ms..1h, got '%s'",
			         value);
			return PMQ_ERR_CONFIG;
		}
		c->interval_ms = v;
		return PMQ_OK;
	}
	if (strcmp(key, "read_only") == 0) {
		int b;

		if (api->cfg_bool(value, &b) != PMQ_OK) {
			snprintf(err, err_len, "read_only: want yes or no, got "
			         "'%s'", value);
			return PMQ_ERR_CONFIG;
		}
		c->read_only = b;
		return PMQ_OK;
	}
	return PMQ_ERR_NOTFOUND;
}

const char *storecfg_fsync_name(enum storecfg_fsync f)
{
	return f == STORECFG_FSYNC_ALWAYS ? "always"
	       : f == STORECFG_FSYNC_INTERVAL ? "interval" : "never";
}
