/*
 * plexmq/transport.h - the ops table of a transport plugin.
 *
 * A transport turns bytes into protocol actions and back.  It never touches
 * a socket: the host accepts connections on the listener's addresses, hands
 * the transport each connection's input through conn_input_* in host.h and
 * takes its output through conn_send / reply slots.  So TLS or WebSocket
 * framing can later be added once, in the host, for every transport.
 *
 * Lifetime of one listener instance:
 *   create -> configure (once per plugin key of its config section, in file
 *   order) -> start -> { conn_open -> conn_input* / conn_drained* / deliver*
 *   -> conn_closed }* -> stop -> destroy.
 *
 * Threads: every op runs on the loop thread; see host.h.
 * Mandatory ops: create, configure, destroy, conn_open, conn_input,
 * conn_closed, deliver.  Optional (may be NULL): start, stop, conn_drained.
 */
#ifndef PLEXMQ_TRANSPORT_H
#define PLEXMQ_TRANSPORT_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Why a connection closed, passed to conn_closed. */
#define PMQ_CLOSE_PEER 0     /* the peer closed (EOF) */
#define PMQ_CLOSE_ERROR 1    /* a socket error */
#define PMQ_CLOSE_PLUGIN 2   /* the transport called conn_close */
#define PMQ_CLOSE_SHUTDOWN 3 /* the daemon is stopping */
#define PMQ_CLOSE_LIMIT 4    /* a host bound (output buffer) was exceeded */

struct pmq_transport_ops {
	uint32_t size; /* sizeof(struct pmq_transport_ops) at build time */
	uint32_t reserved0;

	/* Returns the instance's state, owned by the plugin, or NULL after
	 * logging why. */
	void *(*create)(pmq_instance *inst);
	/* One key of the instance's section that the host does not own
	 * (plugin, listen, max_connections, ... are the host's).  Return
	 * PMQ_OK, PMQ_ERR_NOTFOUND for an unknown key, or PMQ_ERR_CONFIG
	 * with a reason written to err (the host adds file:line). */
	int (*configure)(void *st, const char *key, const char *value,
	                 char *err, size_t err_len);
	/* All keys seen; validate the whole and get ready. */
	int (*start)(void *st);
	/* The listener is closing; every conn_closed has already run. */
	void (*stop)(void *st);
	void (*destroy)(void *st);

	/* A new connection.  Return its state (owned by the plugin, passed
	 * back below), or NULL to refuse it (the host closes it). */
	void *(*conn_open)(void *st, pmq_conn *c);
	/* New input is buffered; consume whole frames with the conn_input_*
	 * calls, leave partial ones.  Called again when more arrives. */
	void (*conn_input)(void *st, void *cs, pmq_conn *c);
	/* Output went from above the high-water mark to below half of it. */
	void (*conn_drained)(void *st, void *cs, pmq_conn *c);
	/* The connection is gone (PMQ_CLOSE_*); free cs.  No more calls for
	 * it follow, and its pmq_conn is invalid after this returns. */
	void (*conn_closed)(void *st, void *cs, int reason);

	/* A message for a client this instance created (udata as given to
	 * client_new).  m is borrowed: take msg_ref to keep it. */
	void (*deliver)(void *st, void *udata, pmq_msg *m,
	                const struct pmq_delivery *d);

	/* 1.1+: append only. */
};

#ifdef __cplusplus
}
#endif

#endif /* PLEXMQ_TRANSPORT_H */
