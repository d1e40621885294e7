/*
 * mqtt.h - the mqtt plugin's internal types, shared by mqtt.c (plugin
 * descriptor, connection state machine), session.c (sessions, inflight
 * and queued messages, persistence) and sys.c ($SYS topics).  Not part of
 * the ABI; nothing outside plugins/mqtt includes it.
 *
 * Threads: everything runs on the host's loop thread (host.h).
 */
#ifndef PLEXMQ_MQTT_H
#define PLEXMQ_MQTT_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plexmq.h>

#include "codec.h"

#define MQTT_PLUGIN_VERSION "1.0.0"

/* The host API table, kept from init() (written once, before any
 * instance exists). */
extern const struct pmq_host_api *mqtt_api;

/* One [listener] section using this plugin, with its config. */
struct mqtt_listener {
	pmq_instance *inst;
	uint32_t max_packet_size;   /* 0: the protocol's maximum */
	uint16_t max_inflight;      /* outgoing QoS 1/2 inflight; our Receive
	                             * Maximum for incoming */
	uint32_t max_queued;        /* queued QoS 1/2 per session */
	uint64_t max_queued_bytes;  /* 0: no byte limit */
	uint16_t max_keepalive;     /* seconds */
	uint16_t topic_alias_max;   /* aliases we accept from a client */
	int allow_anonymous;
	int retain_available;
	int64_t persistent_client_expiration_ms; /* -1: never */
	int64_t sys_interval_s;     /* 0: no $SYS */
	/* qos0_full / queue_full = block (1) or drop (0). */
	uint8_t qos0_block;
	uint8_t queue_block;
	/* The smallest output length seen with conn_output_full true: an
	 * estimate (from above) of output_high_water, which only the host
	 * knows, for the hard bound of qos0_full = block (2x it). */
	size_t full_len_min;
};

/* An outgoing QoS 1/2 message of a session: queued, then inflight. */
enum mqtt_out_state {
	OUT_QUEUED = 0,
	OUT_SENT,   /* PUBLISH sent; waiting for PUBACK or PUBREC */
	OUT_REL     /* PUBREL sent; waiting for PUBCOMP */
};

struct mqtt_out {
	struct mqtt_out *next;
	pmq_msg *m;          /* one reference */
	pmq_hold *hold;      /* queue_full = block: the publish waits for the
	                      * queue to fall below half its limit */
	uint32_t *sub_ids;   /* owned copy */
	uint32_t n_sub_ids;
	uint64_t seq;        /* key suffix in "mqtt.queue" */
	size_t bytes;        /* payload + topic, for max_queued_bytes */
	uint16_t pid;
	uint8_t qos;
	uint8_t retain;
	uint8_t state;       /* enum mqtt_out_state */
	uint8_t stored;      /* a copy is in "mqtt.queue" */
	uint8_t state_stored; /* its state is in "mqtt.outstate" */
};

/* A FIFO of outgoing messages. */
struct mqtt_outq {
	struct mqtt_out *head, *tail;
	uint32_t n;
};

/* A subscription the session holds, kept to persist it. */
struct mqtt_sub {
	struct mqtt_sub *next;
	char *filter;       /* owned */
	char *group;        /* owned; NULL unless shared */
	struct pmq_sub_opts opts; /* opts.share_group points at group */
};

struct mqtt_conn;

/*
 * A client session: lives from CONNECT until it ends (clean disconnect of
 * a non-persistent session, or expiry).  It owns the pmq_client, so a
 * persistent session keeps its subscriptions and receives deliveries
 * while offline (queued, bounded).
 */
struct mqtt_session {
	struct mqtt_session *hnext; /* hash chain */
	pmq_client *cl;
	struct mqtt_conn *mc;       /* NULL while offline */
	struct mqtt_listener *l;    /* limits of the last connection */
	int64_t expiry_ms;          /* session expiry interval; -1 never */
	int64_t offline_since_ms;   /* wall clock, for persisted expiry */
	pmq_timer *expiry_timer;
	struct mqtt_outq inflight;
	struct mqtt_outq queue;
	uint64_t queued_bytes;
	uint64_t next_seq;
	/* Incoming QoS 2 packet ids received and not yet released. */
	uint16_t *in_qos2;
	uint32_t n_in_qos2, cap_in_qos2;
	struct mqtt_sub *subs;
	pmq_msg *will;              /* pending will, one reference */
	pmq_timer *will_timer;
	uint64_t dropped;
	uint32_t will_delay_s;
	uint32_t n_held;            /* queued messages with a hold */
	uint16_t next_pid;
	uint16_t id_len;            /* MQTT strings are at most 65535 */
	uint8_t version;            /* of the last connection */
	uint16_t pid_free;          /* ids after next_pid known free (pid_next) */
	unsigned drop_logged:1;
	unsigned block_logged:1;    /* qos0_full = block happened (logged) */
	unsigned stored:1;          /* a record is in "mqtt.sessions" */
	unsigned will_stored:1;     /* the will is in "mqtt.wills" */
	/* The client id, NUL-terminated, in the same block (one allocation
	 * less per session). */
	char id[];
};

/* One network connection speaking MQTT. */
struct mqtt_conn {
	struct mqtt_listener *l;
	pmq_conn *c;                /* NULL after conn_closed */
	struct mqtt_session *s;     /* NULL before CONNECT, after takeover */
	/* The list the plugin-wide keepalive timer scans (mqtt.c); one
	 * timer for all connections instead of one each. */
	struct mqtt_conn *ka_next, **ka_pprev;
	char **out_alias;           /* topics we aliased, index alias - 1 */
	char **in_alias;            /* client aliases, l->topic_alias_max;
	                             * allocated at the first one */
	unsigned refs;              /* the conn + each pending publish */
	/* Monotonic ms of the last packet, low 32 bits: compared by their
	 * unsigned difference, exact for idle times under 49 days (the
	 * longest deadline is 1.5 x 65535 s). */
	uint32_t last_rx_ms;
	uint32_t client_max_packet; /* 0: no limit */
	uint16_t pending;           /* publishes waiting for their done
	                             * (reading pauses at MQTT_MAX_PENDING) */
	uint16_t in_unacked;        /* incoming QoS 1/2 not yet acked */
	uint16_t client_receive_max;
	uint16_t client_alias_max;
	uint16_t n_out_alias;
	uint16_t keepalive_s;
	uint8_t version;            /* 0 until CONNECT */
	uint8_t problem_info;       /* v5 Request Problem Information */
	unsigned paused:1;
	unsigned parsing:1;
	unsigned closing:1;
	unsigned connected:1;       /* CONNACK sent */
	unsigned disconnected:1;    /* normal DISCONNECT received */
	unsigned will_on_disconnect:1;
	unsigned ordered_sends:1;   /* inside retained_send: keep order */
	unsigned connack_wait:1;    /* CONNACK waits in a slot: deliveries
	                             * go after it (PMQ_SEND_ORDERED) */
	unsigned in_input:1;        /* inside the host's conn_input */
	unsigned in_blocked:1;      /* conn_block_input stopped our input:
	                             * parse no further until conn_input */
};

/* ---- session.c ---- */

struct mqtt_session *session_find(const char *id, size_t len);
/* Returns a new session owned by the table, or NULL (logged). */
struct mqtt_session *session_new(struct mqtt_listener *l, const char *id,
                                 size_t len);
/* End a session: publish a pending will, drop subscriptions and queued
 * messages, delete persisted state when persist (not at shutdown). */
void session_end(struct mqtt_session *s, int persist);
/* The connection went away (abnormally unless mc->disconnected). */
void session_detach(struct mqtt_session *s, int shutdown);
/* A connection took the session: cancel will and expiry timers. */
void session_attach(struct mqtt_session *s, struct mqtt_conn *mc);
/*
 * Writes that an acknowledgement can wait for take an optional
 * done(arg, status), run once the write completes (possibly from inside
 * the call).  They return 1 when done will run, 0 when nothing was
 * written (a non-persistent session; done does not run), or a negative
 * error (not submitted; done does not run, the error is logged).
 */
/* Set (or with NULL clear) the pending will, taking will's reference;
 * stored when the session is persistent (set expiry_ms first). */
int session_set_will(struct mqtt_session *s, pmq_msg *will,
                     uint32_t delay_s, pmq_done_fn done, void *arg);
/* Send what may be sent: queued messages up to the inflight limit. */
void session_pump(struct mqtt_session *s);
/* Resend the inflight messages after a reconnect (DUP set). */
void session_resend(struct mqtt_session *s);
/* A delivery from the router. */
void session_deliver(struct mqtt_session *s, pmq_msg *m,
                     const struct pmq_delivery *d);
/* Acks from the client.  Return 0, or -1 for an unknown packet id. */
int session_puback(struct mqtt_session *s, uint16_t pid);
int session_pubrec(struct mqtt_session *s, uint16_t pid, uint8_t reason);
int session_pubcomp(struct mqtt_session *s, uint16_t pid);
/* Incoming QoS 2 ids: has / add (PMQ_ERR_LIMIT at 65535) / remove (-1:
 * unknown).  *wait: the write's result as above (wait NULL for del: no
 * done). */
int session_qos2_has(struct mqtt_session *s, uint16_t pid);
int session_qos2_add(struct mqtt_session *s, uint16_t pid, pmq_done_fn done,
                     void *arg, int *wait);
int session_qos2_del(struct mqtt_session *s, uint16_t pid, pmq_done_fn done,
                     void *arg, int *wait);
/* Record a subscription change (for persistence). */
int session_sub_add(struct mqtt_session *s, const char *filter,
                    const char *group, const struct pmq_sub_opts *o);
void session_sub_del(struct mqtt_session *s, const char *filter,
                     const char *group);
/* Write the session record when the session is persistent. */
void session_save(struct mqtt_session *s);
/* The same, with done as above (1 / 0 / negative error). */
int session_save_wait(struct mqtt_session *s, pmq_done_fn done, void *arg);
/* Restore persisted sessions (once per process). */
void sessions_load(struct mqtt_listener *l);
/* Free every session without touching storage (shutdown). */
void sessions_free_all(void);
/* Sessions in the table, and those without a connection. */
void sessions_count(uint64_t *total, uint64_t *offline);

/* ---- mqtt.c (used by session.c) ---- */

/* Encode and send one PUBLISH; returns PMQ_OK, PMQ_ERR_AGAIN (not sent:
 * output full, keep it), PMQ_ERR_LIMIT (bigger than the client's
 * Maximum Packet Size: dropped), or another error (connection broken). */
int mqtt_send_publish(struct mqtt_conn *mc, pmq_msg *m, uint8_t qos,
                      uint8_t retain, uint16_t pid, int dup,
                      const uint32_t *sub_ids, uint32_t n_sub_ids);
void mqtt_send_pubrel(struct mqtt_conn *mc, uint16_t pid, uint8_t reason);
/* qos0_full = block: a QoS 0 delivery found sub's output full.  Stops
 * reading the publisher (the connection whose input is being parsed)
 * until sub drains; returns 1 when the message may still be queued, 0
 * when it must be dropped (no publisher's input to stop, or sub's output
 * is past twice its high-water mark). */
int mqtt_block_publisher(struct mqtt_conn *sub);
/* Plugin-wide counters, for $SYS. */
extern uint64_t mqtt_stat_connected, mqtt_stat_bad_packets,
    mqtt_stat_msgs_received, mqtt_stat_msgs_sent, mqtt_stat_dropped;

/* ---- sys.c ---- */

void sys_start(struct mqtt_listener *l);
void sys_stop(struct mqtt_listener *l);

#endif /* PLEXMQ_MQTT_H */
