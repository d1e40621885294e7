/*
 * listener.c - a transport instance and its listening sockets (see
 * listener.h).  Accepts on every configured address with evconnlistener,
 * enforces the listener's and the daemon's connection limits (a
 * connection over a limit is closed at once and logged), and hands
 * accepted sockets to conn.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "conn.h"
#include "daemon.h"
#include "listener.h"
#include "logger.h"
#include "util.h"

static uint32_t global_max = 10000;
static uint32_t global_open;
static uint64_t global_total;

void
listener_set_global_max(uint32_t max)
{
	global_max = max;
}

uint32_t
listener_open_connections(void)
{
	return global_open;
}

uint64_t
listener_total_connections(void)
{
	return global_total;
}

void
listener_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port = 0;

	host[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		port = ntohs(in6->sin6_port);
		snprintf(buf, len, "[%s]:%u", host, port);
	} else {
		snprintf(buf, len, "unknown");
	}
}

static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg)
{
	struct listener *ln = arg;
	char peer[64];

	(void)evl;
	(void)socklen;
	listener_format_addr(sa, peer, sizeof peer);
	if (ln->stopping || ln->n_conns >= ln->max_connections ||
	    global_open >= global_max) {
		logger_log(ln->inst.name, PMQ_LOG_WARN,
		    "%s: connection refused: limit reached (%u here, %u in all)",
		    peer, ln->n_conns, global_open);
		close(fd);
		return;
	}
	global_total++;
	global_open++;
	/* On failure conn_new closes fd and counts it down itself. */
	(void)conn_new(ln, fd, peer);
}

void
listener_conn_gone(struct listener *ln)
{
	(void)ln;
	if (global_open > 0)
		global_open--;
}

static void
accept_error_cb(struct evconnlistener *evl, void *arg)
{
	struct listener *ln = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)evl;
	/* EMFILE and friends: keep serving the connections we have. */
	logger_log(ln->inst.name, PMQ_LOG_ERROR, "accept: %s",
	    evutil_socket_error_to_string(err));
}

struct listener *
listener_new(const struct config_listener *cl, const struct pmq_plugin *plugin,
    const struct config *cfg, char *err, size_t err_len)
{
	struct listener *ln;
	char name[256], perr[256];
	size_t i;
	int rc;

	ln = calloc(1, sizeof *ln);
	if (ln == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	snprintf(name, sizeof name, "listener %s", cl->name);
	ln->inst.name = strdup(name);
	ln->inst.plugin = plugin;
	ln->inst.owner = ln;
	ln->ops = plugin->ops;
	ln->max_connections = cl->max_connections;
	ln->output_high_water = cl->output_high_water;
	ln->input_max = cl->input_max;
	if (ln->inst.name == NULL) {
		free(ln);
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	ln->inst.state = ln->ops->create(&ln->inst);
	if (ln->inst.state == NULL) {
		config_error_at(cfg, cl->line, err, err_len,
		    "[%s]: plugin %s could not create an instance",
		    ln->inst.name, plugin->name);
		free(ln->inst.name);
		free(ln);
		return NULL;
	}
	for (i = 0; i < cl->n_keys; i++) {
		const struct config_kv *kv = &cl->keys[i];

		perr[0] = '\0';
		rc = ln->ops->configure(ln->inst.state, kv->key, kv->value, perr,
		    sizeof perr);
		if (rc == PMQ_OK)
			continue;
		if (rc == PMQ_ERR_NOTFOUND)
			config_error_at(cfg, kv->line, err, err_len,
			    "unknown key '%s' for plugin %s", kv->key,
			    plugin->name);
		else
			config_error_at(cfg, kv->line, err, err_len,
			    "%s = %s: %s", kv->key, kv->value,
			    perr[0] ? perr : "invalid value");
		ln->ops->destroy(ln->inst.state);
		free(ln->inst.name);
		free(ln);
		return NULL;
	}
	return ln;
}

static int
bind_one(struct listener *ln, const struct config_addr *a)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct evconnlistener *evl, **grown;
	char where[128];
	int rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, &res);
	if (rc != 0) {
		logger_log(ln->inst.name, PMQ_LOG_ERROR, "listen %s:%s: %s",
		    a->host, a->port, gai_strerror(rc));
		return PMQ_ERR_CONFIG;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		grown = realloc(ln->evls, (ln->n_evls + 1) * sizeof *grown);
		if (grown == NULL) {
			freeaddrinfo(res);
			return PMQ_ERR_NOMEM;
		}
		ln->evls = grown;
		evl = evconnlistener_new_bind(daemon_base(), accept_cb, ln,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
		        LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED,
		    -1, ai->ai_addr, (int)ai->ai_addrlen);
		listener_format_addr(ai->ai_addr, where, sizeof where);
		if (evl == NULL) {
			logger_log(ln->inst.name, PMQ_LOG_ERROR, "listen %s: %s",
			    where, strerror(errno));
			freeaddrinfo(res);
			return PMQ_ERR_IO;
		}
		evconnlistener_set_error_cb(evl, accept_error_cb);
		ln->evls[ln->n_evls++] = evl;
		{
			struct sockaddr_storage ss;
			socklen_t sl = sizeof ss;

			/* Port 0 binds an ephemeral port: say which one, so
			 * tests and operators can find it. */
			if (getsockname(evconnlistener_get_fd(evl),
			        (struct sockaddr *)&ss, &sl) == 0)
				listener_format_addr((struct sockaddr *)&ss, where,
				    sizeof where);
		}
		logger_log(ln->inst.name, PMQ_LOG_INFO, "listening on %s (%s)",
		    where, ln->inst.plugin->name);
	}
	freeaddrinfo(res);
	return PMQ_OK;
}

int
listener_start(struct listener *ln, const struct config_listener *cl)
{
	size_t i;
	int rc;

	if (ln->ops->start != NULL) {
		rc = ln->ops->start(ln->inst.state);
		if (rc != PMQ_OK) {
			logger_log(ln->inst.name, PMQ_LOG_ERROR,
			    "transport %s failed to start: %s",
			    ln->inst.plugin->name, host_api()->strerror(rc));
			return rc;
		}
	}
	for (i = 0; i < cl->n_listen; i++) {
		rc = bind_one(ln, &cl->listen[i]);
		if (rc != PMQ_OK)
			return rc;
	}
	for (i = 0; i < ln->n_evls; i++)
		evconnlistener_enable(ln->evls[i]);
	return PMQ_OK;
}

void
listener_stop_accepting(struct listener *ln)
{
	size_t i;

	ln->stopping = 1;
	for (i = 0; i < ln->n_evls; i++)
		evconnlistener_disable(ln->evls[i]);
}

void
listener_close_all(struct listener *ln)
{
	while (ln->conns != NULL)
		conn_finalize_now(ln->conns);
}

void
listener_free(struct listener *ln)
{
	size_t i;

	if (ln == NULL)
		return;
	listener_stop_accepting(ln);
	while (ln->conns != NULL)
		conn_finalize_now(ln->conns);
	for (i = 0; i < ln->n_evls; i++)
		evconnlistener_free(ln->evls[i]);
	free(ln->evls);
	if (ln->ops->stop != NULL)
		ln->ops->stop(ln->inst.state);
	ln->ops->destroy(ln->inst.state);
	free(ln->inst.name);
	free(ln);
}
