/*
 * conn.h - accepted connections: input and output buffers (libevent
 * bufferevents), the output high-water mark and backpressure, in-order
 * reply slots, and a close that never frees under a running callback.
 *
 * Threads: loop thread only.
 */
#ifndef PMQ_CORE_CONN_H
#define PMQ_CORE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plexmq.h>

struct listener;
struct bufferevent;
struct evbuffer;

struct pmq_slot {
	struct pmq_conn *conn;  /* NULL once the connection is gone */
	struct evbuffer *buf;
	int closed;
	struct pmq_slot *next;
};

struct pmq_conn {
	struct listener *ln;
	struct bufferevent *bev;
	uint64_t id;
	char *peer;                   /* stored after struct conn_priv */
	char *local;                  /* on demand (conn_local), else NULL */
	void *cs;                     /* the transport's connection state */
	struct pmq_slot *slots_head;  /* open or waiting slots, in order */
	struct pmq_slot *slots_tail;
	uint64_t output_high_water;
	uint64_t input_max;
	unsigned above_hwm : 1; /* output passed the mark; drained not yet sent */
	unsigned paused : 1;    /* the plugin called conn_pause */
	unsigned closing : 1;   /* close requested: flushing, then gone */
	unsigned dead : 1;      /* conn_closed delivered or scheduled */
	unsigned in_input : 1;  /* inside the transport's conn_input */
	int close_reason;
	struct pmq_conn *prev, *next; /* the listener's list */
	/* Dead connections waiting for the one shared finalizer event (a
	 * per-connection event cost ~150 bytes of every idle connection). */
	struct pmq_conn *fin_prev, *fin_next;
	unsigned on_fin_list : 1;
	/* conn_block_input: this connection stopped reading until
	 * blocked_on's output drains (blk_next links blocked_on's list). */
	unsigned blocked : 1;
	struct pmq_conn *blocked_on;
	struct pmq_conn *blk_next;
	struct pmq_conn *blockers; /* connections waiting for our output */
};

/* Wrap an accepted socket (takes ownership of fd) and tell the transport.
 * Returns the connection or NULL (fd closed, reason logged). */
struct pmq_conn *conn_new(struct listener *ln, int fd, const char *peer);
/* Close at once with reason, as if the peer went away (shutdown). */
void conn_abort(struct pmq_conn *c, int reason);
/* Abort and finalize at once; only outside libevent callbacks (shutdown). */
void conn_finalize_now(struct pmq_conn *c);

/* The host API entries (see plexmq/host.h). */
size_t conn_input_len(pmq_conn *c);
const void *conn_input_peek(pmq_conn *c, size_t n);
ssize_t conn_input_find(pmq_conn *c, const void *needle, size_t len,
    size_t max_scan);
void conn_input_drain(pmq_conn *c, size_t n);
int conn_send(pmq_conn *c, const void *data, size_t len, unsigned flags);
int conn_send_ref(pmq_conn *c, const void *data, size_t len,
    void (*release)(void *), void *arg, unsigned flags);
size_t conn_output_len(pmq_conn *c);
int conn_output_full(pmq_conn *c);
void conn_pause(pmq_conn *c);
void conn_resume(pmq_conn *c);
void conn_close(pmq_conn *c, int flush);
const char *conn_peer(pmq_conn *c);
const char *conn_local(pmq_conn *c);
uint64_t conn_id(pmq_conn *c);
pmq_slot *conn_slot_open(pmq_conn *c);
int conn_slot_send(pmq_slot *s, const void *data, size_t len);
void conn_slot_close(pmq_slot *s);
int conn_slot_send_ref(pmq_slot *s, const void *data, size_t len,
    void (*release)(void *), void *arg);
int conn_block_input(pmq_conn *full);

/* Finalize closed connections still waiting and free the shared
 * finalizer event; call before the event base is freed. */
void conn_shutdown(void);

/* Counters for pmq_stats.  Bytes out are counted when they are queued on
 * the socket's output buffer (ordered sends once their slots close), not
 * when the kernel takes them: no per-connection evbuffer callback. */
uint64_t conn_bytes_in(void);
uint64_t conn_bytes_out(void);

#endif
