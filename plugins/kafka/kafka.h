/*
 * kafka.h - what the kafka plugin's files share: the listener instance
 * (config, group coordinator, producer ids), connections, and one
 * in-flight request with its reply slot.  Internal to plugins/kafka.
 *
 * Threads: everything runs on the host's loop thread (plexmq/host.h).
 */
#ifndef PMQ_KAFKA_KAFKA_H
#define PMQ_KAFKA_KAFKA_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plexmq.h>

#include "codec.h"

/* The host API table, kept from init() (kafka.c). */
extern const struct pmq_host_api *kafka_api;
/* The host has the 1.1 members this plugin uses when they exist
 * (has_subscribers; slot_send_ref with log_read_ref/unref): set in init(),
 * so the plugin still loads into a 1.0 host and copies there. */
extern int kafka_has_subs_api;
extern int kafka_ref_api;
extern int kafka_stored_api; /* log_read_stored + slot_send_stored (1.2) */

struct kgroups;    /* group.c */
struct kproducers; /* handlers.c: idempotent producer state, rebuilt
                    * from the log after a restart */

/* One [listener] section using this plugin. */
struct kafka_listener {
	pmq_instance *inst;
	char *adv_host;             /* advertised_host */
	int32_t adv_port;           /* advertised_port */
	int auto_create;            /* auto_create_topics */
	int32_t default_partitions; /* default_partitions */
	uint64_t request_max;       /* socket_request_max_bytes */
	uint64_t message_max;       /* message_max_bytes */
	int64_t group_delay_ms;     /* group_initial_rebalance_delay_ms */
	int64_t min_session_ms;     /* group_min_session_timeout_ms */
	int64_t max_session_ms;     /* group_max_session_timeout_ms */
	int mqtt_deliver;           /* deliver_to_mqtt */
	struct kgroups *groups;
	struct kproducers *producers;
};

/*
 * One connection.  Reference counted as in tcp.c: completions may run
 * after conn_closed, so every request holds a reference and c is NULL once
 * the connection is gone.
 */
struct kconn {
	struct kafka_listener *l;
	pmq_conn *c;           /* NULL after conn_closed */
	unsigned refs;
	unsigned pending;      /* requests not yet answered */
	unsigned paused:1;
	unsigned closing:1;
	unsigned parsing:1;
	struct kreq *waiting;  /* requests parked on a log waiter or group */
};

/* Stored bytes spliced into a response at writer offset `at` instead of
 * being copied into it: sent with slot_send_ref, or with
 * slot_send_stored when data is NULL (a log_read_stored answer), released
 * with log_read_unref (kreq_add_ref). */
struct kref {
	size_t at;
	const void *data;  /* NULL: ref holds a log_read_stored answer */
	size_t len;
	void *ref; /* from log_read_ref; NULL once handed to the host */
};

/*
 * One request from decode to answer.  Owns its frame (decoded fields
 * point into it), the arena and the writer; holds a reference on kc.
 */
struct kreq {
	struct kconn *kc;
	struct kafka_listener *l;
	pmq_slot *slot;           /* NULL for acks=0 Produce */
	uint8_t *frame;
	size_t frame_len;
	struct kc_arena arena;
	struct kc_request q;
	struct kc_writer w;       /* the response being built */
	struct kref *refs;        /* spliced into w, in offset order */
	size_t n_refs, cap_refs;
	size_t ref_bytes;         /* sum of refs[].len */
	int outstanding;          /* completions still expected */
	void *state;              /* per-API state, freed with free_state */
	void (*free_state)(struct kreq *r);
	/* Parked on kc->waiting; cancel() is called at conn_closed. */
	struct kreq *wprev, *wnext;
	int parked;
	void (*cancel)(struct kreq *r);
	/* Queued in handlers.c while producer state is loaded (Produce
	 * behind a log scan, InitProducerId behind the id reservation). */
	struct kreq *qnext;
};

/* Answer r with r->w and free r.  The size prefix is filled in and
 * counts the spliced refs; the bytes leave in writer order with each ref
 * at its offset. */
void kreq_reply(struct kreq *r);
/* Splice len stored bytes at the writer's current end: the response
 * carries them by reference (needs kafka_ref_api); data NULL: ref is a
 * log_read_stored answer's (needs kafka_stored_api).  Takes ownership of
 * ref (a log_read_ref reference) in every case, failure included: it is
 * released when the bytes are written, dropped, or r is freed.  Returns
 * 0, or -1 when out of memory (ref already released). */
int kreq_add_ref(struct kreq *r, const void *data, size_t len, void *ref);
/* Free r without an answer (acks=0, or the connection is gone). */
void kreq_drop(struct kreq *r);
/* Park r so that conn_closed calls cancel(r), which must finish r. */
void kreq_park(struct kreq *r, void (*cancel)(struct kreq *r));
void kreq_unpark(struct kreq *r);
/* Write the broker's advertised host and port into r's response. */
void kreq_write_broker(struct kreq *r);
/* True while the connection is open. */
int kreq_alive(const struct kreq *r);

/* Handlers (handlers.c, group.c): each finishes r exactly once, now or
 * from a completion, with kreq_reply or kreq_drop. */
void kh_api_versions(struct kreq *r);
void kh_metadata(struct kreq *r);
void kh_produce(struct kreq *r);
void kh_fetch(struct kreq *r);
void kh_list_offsets(struct kreq *r);
void kh_create_topics(struct kreq *r);
void kh_delete_topics(struct kreq *r);
void kh_init_producer_id(struct kreq *r);

void kg_find_coordinator(struct kreq *r);
void kg_join_group(struct kreq *r);
void kg_sync_group(struct kreq *r);
void kg_heartbeat(struct kreq *r);
void kg_leave_group(struct kreq *r);
void kg_offset_commit(struct kreq *r);
void kg_offset_fetch(struct kreq *r);
void kg_describe_groups(struct kreq *r);
void kg_list_groups(struct kreq *r);

/* Group coordinator and producer-state lifetimes (group.c, handlers.c). */
struct kgroups *kg_new(struct kafka_listener *l);
void kg_free(struct kgroups *g);
struct kproducers *kp_new(struct kafka_listener *l);
void kp_free(struct kproducers *p);

#endif
