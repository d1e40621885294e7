/*
 * daemon.c - plexmqd's lifetime: load the config and the plugins, start
 * storage, the log and state layers and the listeners, run the loop, and
 * stop gracefully on SIGINT/SIGTERM (stop accepting, let pending storage
 * work and its acknowledgements finish, close, tear down in reverse).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "conn.h"
#include "daemon.h"
#include "host.h"
#include "listener.h"
#include "loader.h"
#include "logger.h"
#include "logs.h"
#include "pmq_build.h"
#include "router.h"
#include "state.h"
#include "storage.h"
#include "util.h"

_Static_assert(CONFIG_SHARE_ROUND_ROBIN == ROUTER_SHARE_ROUND_ROBIN &&
    CONFIG_SHARE_STICKY_PUBLISHER == ROUTER_SHARE_STICKY_PUBLISHER &&
    CONFIG_SHARE_STICKY_TOPIC == ROUTER_SHARE_STICKY_TOPIC,
    "config and router share strategies must agree");

/* How long a graceful stop waits for pending storage work. */
#define DRAIN_TIMEOUT_MS 5000

static struct event_base *base;
static int64_t start_ms;
static const struct config *running_cfg;

struct event_base *
daemon_base(void)
{
	return base;
}

void
daemon_set_base(struct event_base *b)
{
	base = b;
}

int64_t
daemon_uptime_s(void)
{
	return (util_monotonic_ms() - start_ms) / 1000;
}

const char *daemon_data_dir(void);
const char *
daemon_data_dir(void)
{
	return running_cfg != NULL ? running_cfg->data_dir : ".";
}

struct run {
	struct config *cfg;
	struct storage storage;
	struct loaded_plugin *storage_mod;
	struct listener **listeners;
	size_t n_listeners;
	struct event *sig_int, *sig_term, *sig_hup, *drain_timer;
	int64_t drain_deadline;
	int storage_started;
};

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;

	(void)fd;
	(void)what;
	if (storage_io_pending() == 0 || util_monotonic_ms() >= r->drain_deadline)
		event_base_loopbreak(base);
}

static void
stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct run *r = arg;
	struct timeval tv = { 0, 20 * 1000 };
	size_t i;

	(void)what;
	if (r->drain_timer != NULL) { /* a second signal: stop now */
		event_base_loopbreak(base);
		return;
	}
	log_info("signal %d: stopping (no new connections; finishing pending "
	    "storage work)", (int)sig);
	for (i = 0; i < r->n_listeners; i++)
		listener_stop_accepting(r->listeners[i]);
	r->drain_deadline = util_monotonic_ms() + DRAIN_TIMEOUT_MS;
	r->drain_timer = event_new(base, -1, EV_PERSIST, drain_cb, r);
	if (r->drain_timer == NULL || event_add(r->drain_timer, &tv) != 0)
		event_base_loopbreak(base);
}

static void
hup_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	logger_reopen();
	log_info("SIGHUP: log file reopened");
}

/* Create the storage instance and give it its keys. */
static int
storage_setup(struct run *r, const char *plugin_dir, char *err, size_t len)
{
	const struct config *cfg = r->cfg;
	char perr[256];
	size_t i;
	int rc;

	rc = loader_load(plugin_dir, cfg->storage_plugin, PMQ_KIND_STORAGE,
	    &r->storage_mod, err, len);
	if (rc != PMQ_OK)
		return rc;
	rc = loader_init(r->storage_mod, host_api(), err, len);
	if (rc != PMQ_OK)
		return rc;
	r->storage.ops = r->storage_mod->desc->ops;
	r->storage.inst = calloc(1, sizeof *r->storage.inst);
	if (r->storage.inst == NULL)
		return PMQ_ERR_NOMEM;
	r->storage.inst->name = strdup("storage");
	r->storage.inst->plugin = r->storage_mod->desc;
	r->storage.inst->owner = &r->storage;
	r->storage.st = r->storage.ops->create(r->storage.inst);
	if (r->storage.st == NULL) {
		config_error_at(cfg, cfg->storage_line, err, len,
		    "storage plugin %s could not create an instance",
		    cfg->storage_plugin);
		return PMQ_ERR_CONFIG;
	}
	r->storage.inst->state = r->storage.st;
	for (i = 0; i < cfg->n_storage_keys; i++) {
		const struct config_kv *kv = &cfg->storage_keys[i];

		perr[0] = '\0';
		rc = r->storage.ops->configure(r->storage.st, kv->key, kv->value,
		    perr, sizeof perr);
		if (rc == PMQ_OK)
			continue;
		if (rc == PMQ_ERR_NOTFOUND)
			config_error_at(cfg, kv->line, err, len,
			    "unknown key '%s' for storage plugin %s", kv->key,
			    cfg->storage_plugin);
		else
			config_error_at(cfg, kv->line, err, len, "%s = %s: %s",
			    kv->key, kv->value, perr[0] ? perr : "invalid value");
		return PMQ_ERR_CONFIG;
	}
	return PMQ_OK;
}

static int
listeners_setup(struct run *r, const char *plugin_dir, char *err, size_t len)
{
	const struct config *cfg = r->cfg;
	struct loaded_plugin *mod;
	size_t i;
	int rc;

	r->listeners = calloc(cfg->n_listeners, sizeof *r->listeners);
	if (r->listeners == NULL)
		return PMQ_ERR_NOMEM;
	for (i = 0; i < cfg->n_listeners; i++) {
		const struct config_listener *cl = &cfg->listeners[i];

		rc = loader_load(plugin_dir, cl->plugin, PMQ_KIND_TRANSPORT, &mod,
		    err, len);
		if (rc != PMQ_OK)
			return rc;
		rc = loader_init(mod, host_api(), err, len);
		if (rc != PMQ_OK)
			return rc;
		r->listeners[i] = listener_new(cl, mod->desc, cfg, err, len);
		if (r->listeners[i] == NULL)
			return PMQ_ERR_CONFIG;
		r->n_listeners++;
	}
	return PMQ_OK;
}

static void
teardown(struct run *r)
{
	size_t i;

	/* Connections first: transports see conn_closed for each. */
	for (i = 0; i < r->n_listeners; i++)
		listener_stop_accepting(r->listeners[i]);
	for (i = 0; i < r->n_listeners; i++)
		listener_close_all(r->listeners[i]);
	/* Then every pending storage operation completes, while the
	 * transports whose callbacks wait for them are still alive. */
	if (r->storage_started)
		r->storage.ops->stop(r->storage.st);
	storage_io_run();
	/* Transports go before the router and state they use: one with
	 * clients outliving connections (MQTT sessions) frees them now. */
	for (i = 0; i < r->n_listeners; i++)
		listener_free(r->listeners[i]);
	free(r->listeners);
	storage_io_run();
	if (r->storage_started) {
		logs_shutdown();
		state_shutdown();
	}
	host_shutdown();
	storage_io_run();
	conn_shutdown();
	if (r->storage.st != NULL)
		r->storage.ops->destroy(r->storage.st);
	storage_set(NULL);
	storage_io_shutdown();
	if (r->storage.inst != NULL) {
		free(r->storage.inst->name);
		free(r->storage.inst);
	}
	loader_unload_all();
	if (r->sig_int != NULL)
		event_free(r->sig_int);
	if (r->sig_term != NULL)
		event_free(r->sig_term);
	if (r->sig_hup != NULL)
		event_free(r->sig_hup);
	if (r->drain_timer != NULL)
		event_free(r->drain_timer);
	running_cfg = NULL;
	config_free(r->cfg);
}

int
daemon_run(const struct daemon_opts *o)
{
	struct run r;
	char err[1024];
	const char *plugin_dir;
	size_t i;
	int rc, code = 1;

	memset(&r, 0, sizeof r);
	start_ms = util_monotonic_ms();
	rc = config_load(o->config_path, &r.cfg, err, sizeof err);
	if (rc != PMQ_OK) {
		fprintf(stderr, "plexmqd: %s\n", err);
		return 1;
	}
	running_cfg = r.cfg;
	logger_set_level(r.cfg->log_level);
	if (r.cfg->log_file != NULL && !o->check_only &&
	    logger_open(r.cfg->log_file) != PMQ_OK) {
		config_free(r.cfg);
		return 1;
	}
	plugin_dir = o->plugin_dir != NULL ? o->plugin_dir : r.cfg->plugin_dir;
	listener_set_global_max(r.cfg->max_connections);

	/* Storage threads post completions with event_active(): libevent
	 * must know about threads before the base exists. */
	if (evthread_use_pthreads() != 0) {
		log_error("libevent: no pthreads support");
		config_free(r.cfg);
		return 1;
	}
	base = event_base_new();
	if (base == NULL || storage_io_init(base) != PMQ_OK) {
		log_error("libevent: cannot create the event loop");
		config_free(r.cfg);
		return 1;
	}
	if (host_init() != PMQ_OK) {
		log_error("out of memory");
		goto out;
	}
	/* CONFIG_SHARE_* and ROUTER_SHARE_* are the same numbers. */
	router_set_share_strategy(host_router(), r.cfg->share_strategy);
	err[0] = '\0';
	if (storage_setup(&r, plugin_dir, err, sizeof err) != PMQ_OK ||
	    listeners_setup(&r, plugin_dir, err, sizeof err) != PMQ_OK) {
		fprintf(stderr, "plexmqd: %s\n", err[0] ? err : "start-up failed");
		goto out;
	}
	if (o->check_only) {
		fprintf(stderr, "plexmqd: %s: configuration OK\n", o->config_path);
		code = 0;
		goto out;
	}
	if (mkdir(r.cfg->data_dir, 0750) != 0 && errno != EEXIST) {
		log_error("data_dir %s: %s", r.cfg->data_dir, strerror(errno));
		goto out;
	}
	rc = r.storage.ops->start(r.storage.st);
	if (rc != PMQ_OK) {
		log_error("storage %s failed to start: %s", r.cfg->storage_plugin,
		    host_api()->strerror(rc));
		goto out;
	}
	r.storage_started = 1;
	storage_set(&r.storage);
	if ((rc = logs_init(r.cfg->rules, r.cfg->n_rules)) != PMQ_OK) {
		log_error("log layer failed to start: %s", host_api()->strerror(rc));
		goto out;
	}
	if ((rc = state_init()) != PMQ_OK) {
		log_error("state layer failed to start: %s", host_api()->strerror(rc));
		goto out;
	}
	for (i = 0; i < r.n_listeners; i++)
		if (listener_start(r.listeners[i], &r.cfg->listeners[i]) != PMQ_OK)
			goto out;

	signal(SIGPIPE, SIG_IGN);
	r.sig_int = evsignal_new(base, SIGINT, stop_cb, &r);
	r.sig_term = evsignal_new(base, SIGTERM, stop_cb, &r);
	r.sig_hup = evsignal_new(base, SIGHUP, hup_cb, &r);
	if (r.sig_int == NULL || r.sig_term == NULL || r.sig_hup == NULL ||
	    evsignal_add(r.sig_int, NULL) != 0 ||
	    evsignal_add(r.sig_term, NULL) != 0 ||
	    evsignal_add(r.sig_hup, NULL) != 0) {
		log_error("cannot install signal handlers");
		goto out;
	}
	log_info("plexmqd %s running (pid %ld, storage %s, %zu listener%s)",
	    PACKAGE_VERSION, (long)getpid(), r.cfg->storage_plugin,
	    r.n_listeners, r.n_listeners == 1 ? "" : "s");
	if (event_base_dispatch(base) < 0)
		log_error("event loop failed");
	else
		code = 0;
	log_info("stopped");
out:
	teardown(&r);
	event_base_free(base);
	base = NULL;
	return code;
}
