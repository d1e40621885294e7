/*
 * conn.h - accepted connections: one libevent event on the socket, input
 * and output evbuffers that exist only while they hold bytes, the output
 * high-water mark and backpressure, in-order reply slots, and a close that
 * never frees under a running callback.
 *
 * Sends only queue bytes: they never write to the socket or call back
 * into a transport (conn_drained, conn_input) from inside the call; the
 * output leaves from the shared io event at the end of the loop turn.
 *
 * Threads: loop thread only.
 */
#ifndef PMQ_CORE_CONN_H
#define PMQ_CORE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event_struct.h>

#include <plexmq/plexmq.h>

struct listener;
struct evbuffer;

/* Bytes a slot keeps inline before it needs an evbuffer: an
 * acknowledgement (PUBACK, "+OK") costs no evbuffer of its own. */
#define CONN_SLOT_INLINE 20

struct pmq_slot {
	struct pmq_conn *conn;  /* NULL once the connection is gone */
	struct evbuffer *buf;   /* NULL while the bytes fit in small[] */
	struct pmq_slot *next;
	uint8_t closed;
	uint8_t small_len;
	unsigned char small[CONN_SLOT_INLINE];
};

struct pmq_conn {
	/* The socket's one event, embedded (a bufferevent with its two
	 * events and two evbuffers cost ~940 bytes of every idle
	 * connection).  It is added with ev_want: EV_READ while reading is
	 * allowed, EV_WRITE only after a write came up short. */
	struct event ev;
	struct listener *ln;
	/* NULL while empty, so an idle connection holds no buffers. */
	struct evbuffer *in;
	struct evbuffer *out;
	int fd;
	/* Flags and small fields share the word after fd (a connection of
	 * 232 bytes plus a short peer string fits a 256-byte malloc chunk). */
	unsigned ev_want : 3;   /* EV_READ|EV_WRITE ev is added with; 0: not */
	unsigned close_reason : 3; /* PMQ_CLOSE_*, once dead */
	unsigned above_hwm : 1; /* output passed the mark; drained not yet sent */
	unsigned paused : 1;    /* the plugin called conn_pause */
	unsigned closing : 1;   /* close requested: flushing, then gone */
	unsigned dead : 1;      /* conn_closed delivered or scheduled */
	unsigned in_input : 1;  /* inside the transport's conn_input */
	unsigned want_write : 1; /* out waits for EV_WRITE readiness */
	unsigned on_fin_list : 1;
	unsigned blocked : 1;   /* conn_block_input: waiting for blocked_on */
	unsigned work : 2;      /* CONN_WORK_* queued for the io event */
	unsigned on_work : 1;   /* on the io event's list */
	uint64_t id;
	/* What few connections need (conn_local, conn_block_input), made on
	 * first use; NULL for most (every idle byte here counts, issue 6). */
	struct conn_aux *aux;
	void *cs;                     /* the transport's connection state */
	struct pmq_slot *slots_head;  /* open or waiting slots, in order */
	struct pmq_slot *slots_tail;
	/* output_high_water and input_max are the listener's (ln). */
	struct pmq_conn *prev, *next; /* the listener's list */
	/* Dead connections waiting for the one shared finalizer event (a
	 * per-connection event cost ~150 bytes of every idle connection);
	 * singly linked: connections are taken off at the head. */
	struct pmq_conn *fin_next;
	/* Connections with output to write or input to feed at the end of
	 * the loop turn, on the shared io event's list (no per-connection
	 * timer or deferred callback). */
	struct pmq_conn *work_next;
};

struct conn_aux {
	char *local;                  /* conn_local's answer, or NULL */
	/* Bytes in the slots (made with the first slot): conn_output_len
	 * is asked per packet and a publisher may have hundreds of acks
	 * waiting in slots, so they are counted, not walked. */
	size_t slot_bytes;
	/* conn_block_input: blk_next links blocked_on's list of blockers. */
	struct pmq_conn *blocked_on;
	struct pmq_conn *blk_next;
	struct pmq_conn *blockers;    /* connections waiting for our output */
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
/* Queue len bytes at pos of the open file fd on slot s, written with
 * sendfile(2) when their turn comes; fd must stay open and the range
 * unchanged until release(arg) runs (once, also when this fails). */
int conn_slot_send_file(pmq_slot *s, int fd, int64_t pos, size_t len,
    void (*release)(void *), void *arg);
int conn_block_input(pmq_conn *full);

/* Finalize closed connections still waiting and free the shared
 * finalizer and io events; call before the event base is freed. */
void conn_shutdown(void);

/* Counters for pmq_stats.  Bytes out are counted when they are queued on
 * the connection's output buffer (ordered sends once their slots close),
 * not when the kernel takes them; bytes in when the transport drains them. */
uint64_t conn_bytes_in(void);
uint64_t conn_bytes_out(void);

#endif
