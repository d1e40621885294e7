/* bench/bench.h - plexmq-bench: the workload description, the per-run
 * result, and the modules that share them.
 *
 *   main.c      command line, one run, tables/CSV/JSON, --compare + SVG
 *   stats.c     latency histogram, per-consumer loss/dup/reorder tracking,
 *               /proc sampling of the broker, the progress line
 *   evclient.c  libevent clients: MQTT 3.1.1/5 (QoS 0/1/2) and tcp protocol,
 *               every producer and consumer on one loop thread
 *   kafka.c     librdkafka producers and consumers (one thread each)
 *   mosq.c      the same MQTT workload through libmosquitto (--client
 *               mosquitto), to cross-check evclient.c
 *
 * Every message carries a 24-byte header at the front of its payload:
 * magic, producer id, sequence number and the SCHEDULED send time
 * (CLOCK_MONOTONIC ns; producers and consumers share this process, so one
 * clock).  Latency is measured from the scheduled time, so a sender that
 * falls behind its rate cannot hide the stall.
 *
 * Threads: the evclient loop is one thread; kafka.c runs one thread per
 * client.  A tracker belongs to one consumer, so it needs no lock; the
 * global counters read by the progress line are atomics.
 */
#ifndef PMQ_BENCH_H
#define PMQ_BENCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum bench_proto { PROTO_MQTT, PROTO_TCP, PROTO_KAFKA };

#define BENCH_MAGIC 0x504d5142u /* "PMQB" */
#define BENCH_HDR 24u

struct bench_cfg {
	/* target */
	enum bench_proto proto;
	char host[64];
	int port;
	int mqtt_version; /* 4 (3.1.1) or 5 */
	int client_mosq;  /* MQTT through libmosquitto (mosq.c), not evclient */
	long broker_pid;  /* 0: no broker CPU/RSS */
	char label[64];
	/* workload */
	int producers, consumers;
	int qos;            /* MQTT QoS 0/1/2; tcp: >0 waits for +OK */
	int window;         /* in-flight publishes per producer (QoS>0) */
	size_t msg_size;    /* bytes of payload, >= BENCH_HDR */
	double rate;        /* total msgs/s over all producers; 0 = flat out */
	uint64_t count;     /* total messages to send (0: use duration) */
	double duration;    /* seconds, when count == 0 */
	int topics;         /* spread messages over this many topics */
	double drain;       /* seconds without progress before giving up */
	int idle_conns;     /* >0: the idle-connections measurement instead */
	/* kafka */
	int acks;           /* 0, 1, -1 (all) */
	int linger_ms;
	int batch_msgs;     /* batch.num.messages */
	int batch_bytes;    /* batch.size */
	int group;          /* consumers in one group (share the partitions) */
	int sequential;     /* produce everything, then consume from the start */
	int consume_only;   /* no producers: read a log filled by an earlier
	                     * run (--topic) from the start, expecting --count
	                     * messages from --producers producers */
	char topic[64];     /* fixed topic name; "" = one per run */
	char run_id[32];    /* makes topic names unique per run */
};

#define HIST_BUCKETS 2048

struct hist {
	uint64_t n, max, sum;
	uint64_t b[HIST_BUCKETS];
};

/* Per consumer, per producer: which sequence numbers arrived. */
struct track_prod {
	uint8_t *seen; /* bitmap */
	uint64_t bits, max_seq, have_max;
};

struct tracker {
	int nprod;
	struct track_prod *p;
	uint64_t received, unique, dups, reorders, bad;
	uint64_t first_ns, last_ns;
	struct hist lat;
};

struct bench_result {
	char label[64];
	uint64_t sent, acked, ack_errors, expected;
	uint64_t received, unique, dups, reorders, lost, bad;
	double send_secs;    /* first send .. last send (or last ack) */
	double recv_secs;    /* consumers: start .. last receive */
	double msgs_s, mb_s; /* delivered, at the consumers */
	double send_msgs_s;  /* offered by the producers */
	struct hist lat, ack;
	double broker_cpu_s, broker_cpu_us_msg;
	long broker_rss_peak_kb, broker_hwm_kb;
	double self_cpu_s;
	double idle_rss_per_conn; /* bytes, idle_conns runs only */
	int idle_connected;
	int failed;
	char error[160];
};

/* Global progress counters (relaxed atomics, read by the progress line). */
extern _Atomic uint64_t g_sent, g_recv;
extern _Atomic int g_stop;

/* stats.c */
uint64_t now_ns(void);
void hist_add(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
uint64_t hist_pct(const struct hist *h, double pct);
int tracker_init(struct tracker *t, int nprod);
void tracker_free(struct tracker *t);
/* Record one delivered payload; returns 0, or -1 for a foreign payload. */
int tracker_msg(struct tracker *t, const uint8_t *p, size_t n, uint64_t now);
void payload_fill(uint8_t *buf, size_t size, uint32_t prod, uint64_t seq,
    uint64_t sched);
/* Broker sampling: RSS peak every 50 ms on a thread of its own. */
struct sampler;
struct sampler *sampler_start(long pid, int progress);
void sampler_stop(struct sampler *s, long *rss_peak_kb);
int proc_cpu(long pid, double *secs);   /* utime+stime of the process */
long proc_status_kb(long pid, const char *key); /* "VmRSS:", "VmHWM:" */
void result_from_trackers(struct bench_result *r, struct tracker *t, int n,
    uint64_t expect_per_consumer_or_total, int shared);

/* evclient.c: MQTT and tcp; kafka.c */
int evclient_run(const struct bench_cfg *c, struct bench_result *r);
int evclient_idle(const struct bench_cfg *c, struct bench_result *r);
int kafka_run(const struct bench_cfg *c, struct bench_result *r);
/* mosq.c, when built with libmosquitto (HAVE_LIBMOSQUITTO) */
int mosq_run(const struct bench_cfg *c, struct bench_result *r);

#endif
