/*
 * config.h - plexmqd's INI configuration: the schema, the parsed structs and
 * the loader.  Parsing is done once at startup (and by --check-config); the
 * result is plain data that other modules read and never modify.
 *
 * Schema (the README copies this block):
 *
 *   [plexmqd]                  ; global, optional
 *   plugin_dir = DIR           ; default: compiled-in PMQ_PLUGINDIR
 *                              ;   (--plugin-dir overrides it)
 *   data_dir = DIR             ; default "./data"
 *   log_level = error|warn|info|debug   ; default info
 *   log_file = PATH            ; default: stderr
 *   max_connections = N        ; 1..1000000, default 10000 (whole daemon)
 *   share_strategy = S         ; round_robin (default) | sticky_publisher |
 *                              ;   sticky_topic: which member of a shared
 *                              ;   subscription group gets a message
 *
 *   [storage]                  ; at most one, optional (default plugin memory)
 *   plugin = NAME              ; a bare name -> PLUGIN_DIR/NAME.so;
 *                              ;   a value containing '/' is a path
 *   other keys                 ; passed to the plugin, in file order
 *
 *   [listener NAME]            ; any number, at least one required
 *   plugin = NAME              ; required
 *   listen = ADDR:PORT         ; required; repeatable, and/or several
 *                              ;   space-separated on one line;
 *                              ;   IPv6 as [::1]:1883; port 0 = ephemeral
 *   max_connections = N        ; 1..1000000, default 1000
 *   output_high_water = SIZE   ; default 1M: per-connection output bytes
 *                              ;   queued before backpressure
 *   input_max = SIZE           ; default 2M: input bytes buffered after
 *                              ;   the transport ran before the connection
 *                              ;   is closed; must exceed the largest frame
 *   other keys                 ; passed to the plugin, in file order
 *
 *   [rule NAME]                ; which published topics are also appended
 *                              ;   to a log; any number
 *   match = FILTER             ; required; MQTT filter, e.g. sensors/#
 *   log = TOPIC                ; log topic name, default NAME
 *   partitions = N             ; 1..10000, default 1
 *   retention = DURATION       ; 250ms 10s 5m 1h 7d, or -1 (default): forever
 *   retention_bytes = SIZE|-1  ; per partition, default -1: unbounded
 *
 * Syntax rules (stricter than inih alone, so that mistakes are errors):
 *   - Separate key and value with '='.  inih also accepts ':', which would
 *     silently turn "match: a/b" into a key; a line whose first separator is
 *     ':' is rejected.  Values may contain ':' ("listen = [::1]:1883").
 *   - Comments: a line whose first non-blank character is ';' or '#', and
 *     anything after " ;" (whitespace then ';') on a key line.  So no value
 *     can contain " ;".  " #" inside a value is rejected (it is not a
 *     comment there, and a shell-style comment would otherwise be taken as
 *     part of the value); a value may not begin with ';'.  Quotes are
 *     not special: they are part of the value.
 *   - Indentation is ignored.  Multi-line (continuation) values are not
 *     supported: an indented line is an ordinary line.
 *   - A line may hold at most CONFIG_LINE_MAX characters after indentation
 *     (inih's fixed buffer); longer lines are errors, never split.
 *   - A section header holds at most CONFIG_SECTION_MAX characters between
 *     its brackets (inih cuts longer ones short); nothing but a ';' comment
 *     may follow the ']'.
 *   - Section kinds and keys are lower case.  Listener and rule NAMEs use
 *     letters, digits, '.', '_' and '-' (a rule NAME is the default log
 *     topic); filters and patterns go in values, never in section names.
 *   - Each section appears once; [listener NAME] and [rule NAME] names are
 *     unique.  A key of ours given twice in a section is an error; `listen`
 *     is the only repeatable one.  Plugin keys are passed through as given,
 *     repeats included: the plugin decides what they mean.
 *   - Rules may share a log topic only with equal partitions and retention.
 *   - Every error reads "FILE:LINE: reason" (file-level ones "FILE: reason").
 *
 * Threads: config_load* and config_free run on the loop thread at startup;
 * a loaded struct config is read-only and may be read from any thread.
 */
#ifndef PMQ_CORE_CONFIG_H
#define PMQ_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/types.h>

#ifndef PMQ_PLUGINDIR
#define PMQ_PLUGINDIR "/usr/local/lib/plexmq/plugins"
#endif

/* The longest accepted line (after indentation) and section header text. */
#define CONFIG_LINE_MAX 198
#define CONFIG_SECTION_MAX 48

/* Defaults, for documentation and for callers building a config by hand. */
/* How a shared subscription group picks the member for a message. */
#define CONFIG_SHARE_ROUND_ROBIN 0
#define CONFIG_SHARE_STICKY_PUBLISHER 1
#define CONFIG_SHARE_STICKY_TOPIC 2

#define CONFIG_DEFAULT_DATA_DIR "./data"
#define CONFIG_DEFAULT_STORAGE "memory"
#define CONFIG_DEFAULT_MAX_CONNECTIONS 10000
#define CONFIG_DEFAULT_LISTENER_MAX_CONNECTIONS 1000
#define CONFIG_DEFAULT_OUTPUT_HIGH_WATER (1024u * 1024u)
#define CONFIG_DEFAULT_INPUT_MAX (2ULL * 1024 * 1024)

/* A plugin key, kept with its line so the plugin's error can say where. */
struct config_kv {
	char *key;
	char *value;
	int line;
};

/* One listen address.  host is what was between '[' and ']' for IPv6, else
 * the text before the last ':' (never empty); port is decimal 0..65535,
 * kept as text for getaddrinfo(). */
struct config_addr {
	char *host;
	char *port;
	int line;
};

struct config_listener {
	char *name;               /* NAME of [listener NAME] */
	int line;                 /* the section header's line */
	char *plugin;             /* as written: a name or a path */
	int plugin_line;
	struct config_addr *listen; /* n_listen >= 1, in file order */
	size_t n_listen;
	uint32_t max_connections;
	uint64_t output_high_water;
	uint64_t input_max;
	struct config_kv *keys;   /* plugin keys, in file order */
	size_t n_keys;
};

struct config_rule {
	char *name;               /* NAME of [rule NAME] */
	int line;                 /* the section header's line */
	char *match;              /* a syntactically valid MQTT filter */
	char *log;                /* the log topic (NAME unless given) */
	int32_t partitions;       /* 1..10000 */
	int64_t retention_ms;     /* > 0, or -1 for forever */
	int64_t retention_bytes;  /* > 0 per partition, or -1 for unbounded */
};

struct config {
	char *path;               /* the name errors are reported under */
	char *plugin_dir;         /* never NULL */
	char *data_dir;           /* never NULL */
	int log_level;            /* PMQ_LOG_* */
	char *log_file;           /* NULL: stderr */
	uint32_t max_connections;
	int share_strategy;       /* CONFIG_SHARE_* */

	char *storage_plugin;     /* never NULL ("memory" by default) */
	int storage_line;         /* [storage]'s line, 0 if absent */
	struct config_kv *storage_keys; /* plugin keys, in file order */
	size_t n_storage_keys;

	struct config_listener *listeners; /* n_listeners >= 1, file order */
	size_t n_listeners;
	struct config_rule *rules;         /* file order */
	size_t n_rules;
};

/*
 * Parse the file at path.  On PMQ_OK *out is a new config owned by the
 * caller, freed with config_free().  On error *out is NULL, err holds one
 * line "path:line: reason" (or "path: reason"), and the result is
 * PMQ_ERR_CONFIG (bad content), PMQ_ERR_IO (cannot open or read) or
 * PMQ_ERR_NOMEM.  err may be NULL when err_len is 0.  Nothing is logged:
 * the caller reports err once (before the logger is even configured).
 */
int config_load(const char *path, struct config **out, char *err,
    size_t err_len);

/* Like config_load() but parses text; name stands for the path in messages
 * and in cfg->path (unit tests, embedded defaults). */
int config_load_string(const char *name, const char *text,
    struct config **out, char *err, size_t err_len);

/* Frees cfg and everything it points to; NULL is a no-op. */
void config_free(struct config *cfg);

/* Write "path:line: " and the formatted reason into err (line <= 0 drops
 * the line part): for callers reporting a plugin key's error at its line. */
void config_error_at(const struct config *cfg, int line, char *err,
    size_t err_len, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The shared object to open for a `plugin =` value: the value itself if it
 * contains '/', else plugin_dir/NAME.so.  Returns a new string owned by the
 * caller (free()), or NULL when out of memory. */
char *config_plugin_path(const char *plugin_dir, const char *plugin);

#endif
