/*
 * storecfg.h - the configuration keys that the durable storage plugins
 * (plugins/file and plugins/lmdb) share: dir, fsync, fsync_interval_ms and
 * read_only.  Each plugin compiles storecfg.c in (it is no library and no
 * part of the plugin ABI: built with -fvisibility=hidden, its functions
 * stay inside each module), embeds a struct storecfg in its store, passes
 * every key to storecfg_key first and parses its own keys only when that
 * answers PMQ_ERR_NOTFOUND.  Uses only <plexmq/plexmq.h>.
 */
#ifndef PMQ_PLUGINS_STORECFG_H
#define PMQ_PLUGINS_STORECFG_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plexmq.h>

/* fsync = always | interval | never */
enum storecfg_fsync {
	STORECFG_FSYNC_ALWAYS,   /* a write completes once it is synced */
	STORECFG_FSYNC_INTERVAL, /* synced every interval_ms */
	STORECFG_FSYNC_NEVER     /* the OS decides */
};

struct storecfg {
	char *dir;                 /* dir; owned, NULL: the plugin's default */
	enum storecfg_fsync fsync; /* fsync; default always */
	int64_t interval_ms;       /* fsync_interval_ms; default 1000 */
	int read_only;             /* read_only = yes; default no */
};

/* The defaults above (dir NULL). */
void storecfg_init(struct storecfg *c);
/* Frees what c owns (dir); c may be reused after storecfg_init. */
void storecfg_free(struct storecfg *c);
/* Apply key = value if key is one of the shared keys: PMQ_OK;
 * PMQ_ERR_CONFIG with a message in err (c unchanged) when value is bad;
 * PMQ_ERR_NOTFOUND when key is not a shared key (err untouched). */
int storecfg_key(const struct pmq_host_api *api, struct storecfg *c,
                 const char *key, const char *value, char *err,
                 size_t err_len);
/* "always", "interval" or "never", for logs. */
const char *storecfg_fsync_name(enum storecfg_fsync f);

#endif
