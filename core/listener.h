/*
 * listener.h - one [listener NAME] section: a transport instance and the
 * sockets it accepts on (any number of IPv4/IPv6 addresses), with its
 * connection limit.
 *
 * Threads: loop thread only.
 */
#ifndef PMQ_CORE_LISTENER_H
#define PMQ_CORE_LISTENER_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plexmq.h>

#include "host.h"

struct config_listener;
struct evconnlistener;

struct listener {
	struct pmq_instance inst;       /* inst.owner == this */
	const struct pmq_transport_ops *ops;
	struct evconnlistener **evls;
	size_t n_evls;
	uint32_t max_connections;
	uint32_t n_conns;
	uint64_t output_high_water;
	uint64_t input_max;
	struct pmq_conn *conns;         /* open connections */
	int stopping;
};

/* Create the transport instance for a configured listener (create +
 * configure each plugin key; errors say file:line in err).  Does not bind
 * yet.  Returns the listener or NULL. */
struct listener *listener_new(const struct config_listener *cl,
    const struct pmq_plugin *plugin, const struct config *cfg, char *err,
    size_t err_len);
/* Start the transport and bind every address.  PMQ_OK or an error logged
 * with the address and reason. */
int listener_start(struct listener *ln, const struct config_listener *cl);
/* Stop accepting (graceful shutdown, step one). */
void listener_stop_accepting(struct listener *ln);
/* Close every connection now (transports get conn_closed). */
void listener_close_all(struct listener *ln);
/* Close every connection, stop and destroy the transport, free. */
void listener_free(struct listener *ln);

/* Global connection accounting (max_connections of [plexmqd]). */
void listener_set_global_max(uint32_t max);
uint32_t listener_open_connections(void);
uint64_t listener_total_connections(void);
struct sockaddr;
/* "a.b.c.d:port" or "[v6]:port" into buf. */
void listener_format_addr(const struct sockaddr *sa, char *buf, size_t len);
/* conn.c: one of ln's connections was freed. */
void listener_conn_gone(struct listener *ln);

#endif
