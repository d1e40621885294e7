/*
 * daemon.h - the daemon's lifetime: build everything from a config, run
 * the loop, stop gracefully.  Also owns the one event base the core
 * modules share.
 */
#ifndef PMQ_CORE_DAEMON_H
#define PMQ_CORE_DAEMON_H

#include <stdint.h>

struct event_base;
struct config;

/* The loop every core module schedules on (set before modules init). */
struct event_base *daemon_base(void);
void daemon_set_base(struct event_base *base);

struct daemon_opts {
	const char *config_path;
	const char *plugin_dir;   /* --plugin-dir, overrides the config */
	int check_only;           /* --check-config: load, configure, exit */
};

/* Run the daemon until SIGINT/SIGTERM.  Returns a process exit code. */
int daemon_run(const struct daemon_opts *opts);

/* Seconds since daemon start (for $SYS uptime). */
int64_t daemon_uptime_s(void);

#endif
