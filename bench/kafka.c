/* bench/kafka.c - the Kafka-protocol side of plexmq-bench, with librdkafka:
 * a real client, so no shortcut of ours can flatter the broker.
 *
 * One thread per producer and per consumer, each with its own rd_kafka_t
 * (the tool's core runs them; librdkafka adds its own I/O threads).
 * Producers: acks 0/1/all, linger.ms, batch.num.messages, batch.size;
 * the produce latency is from the scheduled time to the delivery report.
 * Consumers: without a group each assigns every partition from the start;
 * with --group they subscribe in one group and split the partitions.
 * --sequential produces everything first and then consumes the log, which
 * measures reading a log rather than live delivery.  --consume-only
 * skips the producers and reads a log an earlier run filled (--topic,
 * --count, --producers say what is in it): after a broker restart with
 * the page cache dropped, that is a cold-log read.
 */
#include "bench.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kctx;

struct kprod {
	struct kctx *x;
	pthread_t th;
	int id;
	uint64_t quota, sent, acked, errors;
	struct hist ack;
	char err[128];
};

struct kcons {
	struct kctx *x;
	pthread_t th;
	int id;
	_Atomic int ready;
	uint64_t start_ns;
	struct tracker tr;
	char err[128];
};

struct kctx {
	const struct bench_cfg *c;
	char brokers[96];
	char topic[80];
	int partitions;
	uint64_t start_ns, deadline_ns, interval_ns;
	_Atomic uint64_t expect; /* per consumer (or total with a group); 0 = unknown yet */
	_Atomic int cons_stop, go;
};

static int
conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err,
    size_t el)
{
	if (rd_kafka_conf_set(conf, k, v, err, el) != RD_KAFKA_CONF_OK)
		return -1;
	/* A topic-level key set on the global conf succeeds after a failed
	 * global lookup that already wrote its message: forget it. */
	err[0] = '\0';
	return 0;
}

static void
dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kprod *p = opaque;
	uint64_t now = now_ns(), sched = (uint64_t)(uintptr_t)m->_private;

	(void)rk;
	if (m->err) {
		p->errors++;
		return;
	}
	p->acked++;
	hist_add(&p->ack, now > sched ? now - sched : 0);
}

static rd_kafka_t *
make_producer(struct kctx *x, struct kprod *p, char *err, size_t el)
{
	const struct bench_cfg *c = x->c;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char v[32];
	rd_kafka_t *rk;

	if (conf_set(conf, "bootstrap.servers", x->brokers, err, el) < 0)
		goto bad;
	snprintf(v, sizeof(v), "%d", c->acks);
	if (conf_set(conf, "request.required.acks", v, err, el) < 0)
		goto bad;
	snprintf(v, sizeof(v), "%d", c->linger_ms);
	if (conf_set(conf, "linger.ms", v, err, el) < 0)
		goto bad;
	if (c->batch_msgs > 0) {
		snprintf(v, sizeof(v), "%d", c->batch_msgs);
		if (conf_set(conf, "batch.num.messages", v, err, el) < 0)
			goto bad;
	}
	if (c->batch_bytes > 0) {
		snprintf(v, sizeof(v), "%d", c->batch_bytes);
		if (conf_set(conf, "batch.size", v, err, el) < 0)
			goto bad;
	}
	if (conf_set(conf, "queue.buffering.max.messages", "1000000", err, el) < 0 ||
	    conf_set(conf, "queue.buffering.max.kbytes", "1048576", err, el) < 0 ||
	    conf_set(conf, "socket.nagle.disable", "true", err, el) < 0 ||
	    conf_set(conf, "compression.codec", "none", err, el) < 0)
		goto bad;
	if (p) {
		rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
		rd_kafka_conf_set_opaque(conf, p);
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, el);
	if (!rk)
		goto bad;
	return rk;
bad:
	rd_kafka_conf_destroy(conf);
	return NULL;
}

static void *
prod_main(void *arg)
{
	struct kprod *p = arg;
	struct kctx *x = p->x;
	const struct bench_cfg *c = x->c;
	uint8_t *buf = malloc(c->msg_size);
	rd_kafka_t *rk = NULL;
	rd_kafka_topic_t *rkt = NULL;
	uint64_t phase;

	if (!buf) {
		snprintf(p->err, sizeof(p->err), "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < c->msg_size; i++)
		buf[i] = (uint8_t)('a' + i % 26);
	rk = make_producer(x, p, p->err, sizeof(p->err));
	if (!rk)
		goto out;
	rkt = rd_kafka_topic_new(rk, x->topic, NULL);
	if (!rkt) {
		snprintf(p->err, sizeof(p->err), "topic_new failed");
		goto out;
	}
	while (!atomic_load(&x->go))
		rd_kafka_poll(rk, 1);
	phase = x->interval_ns * (uint64_t)p->id / (uint64_t)c->producers;
	while (p->sent < p->quota && !atomic_load(&g_stop)) {
		uint64_t now = now_ns(), sched;

		if (x->deadline_ns && now >= x->deadline_ns)
			break;
		if (x->interval_ns) {
			sched = x->start_ns + phase + p->sent * x->interval_ns;
			if (sched > now) {
				/* Sleep in short steps: nanosleep's slack is
				 * fine, the latency counts from `sched`. */
				struct timespec ts = { 0, (long)(sched - now < 1000000 ?
				    sched - now : 1000000) };
				rd_kafka_poll(rk, 0);
				nanosleep(&ts, NULL);
				continue;
			}
		} else
			sched = now;
		payload_fill(buf, c->msg_size, (uint32_t)p->id, p->sent, sched);
		if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
		    buf, c->msg_size, NULL, 0, (void *)(uintptr_t)sched) != 0) {
			if (rd_kafka_last_error() == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
				rd_kafka_poll(rk, 1);
				continue;
			}
			snprintf(p->err, sizeof(p->err), "produce: %s",
			    rd_kafka_err2str(rd_kafka_last_error()));
			break;
		}
		p->sent++;
		atomic_fetch_add_explicit(&g_sent, 1, memory_order_relaxed);
		if ((p->sent & 1023) == 0)
			rd_kafka_poll(rk, 0);
	}
	if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR && !p->err[0])
		snprintf(p->err, sizeof(p->err), "flush timed out");
out:
	if (rkt)
		rd_kafka_topic_destroy(rkt);
	if (rk)
		rd_kafka_destroy(rk);
	free(buf);
	return NULL;
}

static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct kcons *k = opaque;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		rd_kafka_assign(rk, parts);
		atomic_store(&k->ready, 1);
	} else
		rd_kafka_assign(rk, NULL);
}

/* Most messages one consumer takes from librdkafka per call. */
#define KBATCH 1024

static void *
cons_main(void *arg)
{
	struct kcons *k = arg;
	struct kctx *x = k->x;
	const struct bench_cfg *c = x->c;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *tl = NULL;
	rd_kafka_t *rk = NULL;
	char *e = k->err, gid[64];
	size_t el = sizeof(k->err);
	uint64_t idle_since = 0;
	rd_kafka_queue_t *q = NULL;
	rd_kafka_message_t *ms[KBATCH];

	if (conf_set(conf, "bootstrap.servers", x->brokers, e, el) < 0 ||
	    conf_set(conf, "enable.auto.commit", "false", e, el) < 0 ||
	    conf_set(conf, "auto.offset.reset", "earliest", e, el) < 0 ||
	    conf_set(conf, "fetch.wait.max.ms", "10", e, el) < 0 ||
	    conf_set(conf, "fetch.min.bytes", "1", e, el) < 0 ||
	    conf_set(conf, "queued.min.messages", "1000000", e, el) < 0 ||
	    conf_set(conf, "max.partition.fetch.bytes", "4194304", e, el) < 0 ||
	    conf_set(conf, "socket.nagle.disable", "true", e, el) < 0 ||
	    conf_set(conf, "enable.partition.eof", "false", e, el) < 0)
		goto bad;
	/* librdkafka's assign() wants a group.id even when no group is
	 * joined; a private one keeps the no-group consumers independent. */
	snprintf(gid, sizeof(gid), "pbench-%s%s%d", c->run_id,
	    c->group ? "" : "-solo", c->group ? 0 : k->id);
	if (conf_set(conf, "group.id", gid, e, el) < 0)
		goto bad;
	if (c->group) {
		if (
		    conf_set(conf, "session.timeout.ms", "10000", e, el) < 0)
			goto bad;
		rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
		rd_kafka_conf_set_opaque(conf, k);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, el);
	if (!rk)
		goto bad;
	conf = NULL;
	rd_kafka_poll_set_consumer(rk);
	tl = rd_kafka_topic_partition_list_new(x->partitions);
	if (c->group) {
		rd_kafka_topic_partition_list_add(tl, x->topic, RD_KAFKA_PARTITION_UA);
		if (rd_kafka_subscribe(rk, tl) != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(e, el, "subscribe failed");
			goto out;
		}
	} else {
		for (int i = 0; i < x->partitions; i++)
			rd_kafka_topic_partition_list_add(tl, x->topic, i)->offset =
			    RD_KAFKA_OFFSET_BEGINNING;
		if (rd_kafka_assign(rk, tl) != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(e, el, "assign failed");
			goto out;
		}
		atomic_store(&k->ready, 1);
	}
	k->start_ns = now_ns();
	/* Messages in batches: one queue call per up to KBATCH messages
	 * instead of one consumer_poll each, so the tool's consumer is not
	 * what a fast broker is measured against.  The consumer queue also
	 * serves rebalance events (group mode). */
	q = rd_kafka_queue_get_consumer(rk);
	if (q == NULL) {
		snprintf(e, el, "no consumer queue");
		goto out;
	}
	while (!atomic_load(&x->cons_stop)) {
		ssize_t n = rd_kafka_consume_batch_queue(q, 100, ms, KBATCH);
		uint64_t want = atomic_load(&x->expect), t = now_ns();

		for (ssize_t j = 0; j < n; j++) {
			if (!ms[j]->err)
				tracker_msg(&k->tr, ms[j]->payload, ms[j]->len, t);
			rd_kafka_message_destroy(ms[j]);
		}
		/* Without a group every consumer must see everything; with
		 * one, main decides when the group as a whole is done. */
		if (!c->group && want && k->tr.unique >= want)
			break;
		(void)idle_since;
	}
out:
	if (q)
		rd_kafka_queue_destroy(q);
	if (tl)
		rd_kafka_topic_partition_list_destroy(tl);
	if (rk) {
		rd_kafka_consumer_close(rk);
		rd_kafka_destroy(rk);
	}
	return NULL;
bad:
	if (conf)
		rd_kafka_conf_destroy(conf);
	return NULL;
}

/* Create the topic (auto-create through Metadata) and learn its partitions. */
static int
kafka_prepare(struct kctx *x, char *err, size_t el)
{
	rd_kafka_t *rk = make_producer(x, NULL, err, el);
	rd_kafka_topic_t *rkt;
	const struct rd_kafka_metadata *md = NULL;
	int rc = -1;

	if (!rk)
		return -1;
	rkt = rd_kafka_topic_new(rk, x->topic, NULL);
	for (int tries = 0; rkt && tries < 50; tries++) {
		if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) ==
		    RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
		    md->topics[0].err == 0 && md->topics[0].partition_cnt > 0) {
			x->partitions = md->topics[0].partition_cnt;
			rc = 0;
		}
		if (md)
			rd_kafka_metadata_destroy(md);
		md = NULL;
		if (rc == 0)
			break;
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
	}
	if (rc < 0)
		snprintf(err, el, "topic %s not available", x->topic);
	if (rkt)
		rd_kafka_topic_destroy(rkt);
	rd_kafka_destroy(rk);
	return rc;
}

int
kafka_run(const struct bench_cfg *c, struct bench_result *res)
{
	struct kctx x;
	struct kprod *ps = calloc((size_t)c->producers, sizeof(*ps));
	struct kcons *cs = calloc((size_t)(c->consumers + 1), sizeof(*cs));
	struct tracker *trs = calloc((size_t)(c->consumers + 1), sizeof(*trs));
	int rc = -1, started_c = 0, started_p = 0;
	uint64_t total = 0, cons_start = 0, last = 0, lastrecv = 0, t_prog;

	memset(&x, 0, sizeof(x));
	x.c = c;
	snprintf(x.brokers, sizeof(x.brokers), "%s:%d", c->host, c->port);
	if (c->topic[0])
		snprintf(x.topic, sizeof(x.topic), "%s", c->topic);
	else
		snprintf(x.topic, sizeof(x.topic), "pbench-%s", c->run_id);
	if (!ps || !cs || !trs)
		goto out;
	if (c->topics > 1)
		fprintf(stderr, "note: kafka runs use one topic (its partitions)\n");
	if (kafka_prepare(&x, res->error, sizeof(res->error)) < 0)
		goto out;
	if (c->rate > 0)
		x.interval_ns = (uint64_t)(1e9 * c->producers / c->rate);
	for (int i = 0; i < c->consumers; i++) {
		cs[i].x = &x;
		cs[i].id = i;
		if (tracker_init(&cs[i].tr, c->producers) < 0)
			goto out;
	}
	/* Live delivery: consumers first, and (with a group) assigned,
	 * before the first message leaves. */
	if (!c->sequential && !c->consume_only) {
		for (; started_c < c->consumers; started_c++)
			if (pthread_create(&cs[started_c].th, NULL, cons_main,
			    &cs[started_c]) != 0)
				goto out;
		for (int w = 0; w < 300; w++) {
			int ready = 0;
			for (int i = 0; i < c->consumers; i++)
				ready += atomic_load(&cs[i].ready);
			if (ready == c->consumers)
				break;
			struct timespec ts = { 0, 100000000 };
			nanosleep(&ts, NULL);
		}
	}
	if (c->consume_only) {
		/* What the filling run wrote. */
		total = c->count;
		goto consume;
	}
	for (int i = 0; i < c->producers; i++) {
		ps[i].x = &x;
		ps[i].id = i;
		ps[i].quota = c->count ? c->count / (uint64_t)c->producers +
		    ((uint64_t)i < c->count % (uint64_t)c->producers) : UINT64_MAX;
	}
	for (; started_p < c->producers; started_p++)
		if (pthread_create(&ps[started_p].th, NULL, prod_main, &ps[started_p]) != 0)
			goto out;
	x.start_ns = now_ns() + 200000000ull; /* producers are connected by then */
	if (!c->count)
		x.deadline_ns = x.start_ns + (uint64_t)(c->duration * 1e9);
	{
		struct timespec ts = { 0, 200000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&x.go, 1);
	for (int i = 0; i < started_p; i++)
		pthread_join(ps[i].th, NULL);
	started_p = 0;
	res->send_secs = (double)(now_ns() - x.start_ns) / 1e9;
	for (int i = 0; i < c->producers; i++) {
		total += ps[i].sent;
		res->sent += ps[i].sent;
		res->acked += ps[i].acked;
		res->ack_errors += ps[i].errors;
		hist_merge(&res->ack, &ps[i].ack);
		if (ps[i].err[0] && !res->error[0])
			snprintf(res->error, sizeof(res->error), "producer: %s", ps[i].err);
	}
consume:
	atomic_store(&x.expect, total);
	if (c->sequential || c->consume_only) {
		cons_start = now_ns();
		for (; started_c < c->consumers; started_c++)
			if (pthread_create(&cs[started_c].th, NULL, cons_main,
			    &cs[started_c]) != 0)
				goto out;
	}
	/* Wait for the consumers: all arrived, or no progress for `drain`. */
	t_prog = now_ns();
	for (;;) {
		uint64_t recv = 0, uniq = 0, now = now_ns();
		for (int i = 0; i < c->consumers; i++) {
			recv += cs[i].tr.received; /* racy read: progress only */
			uniq += cs[i].tr.unique;
		}
		if (c->consumers == 0 ||
		    uniq >= (c->group ? total : total * (uint64_t)c->consumers))
			break;
		if (recv != lastrecv) {
			lastrecv = recv;
			t_prog = now;
		} else if (now - t_prog > (uint64_t)(c->drain * 1e9))
			break;
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&x.cons_stop, 1);
	for (int i = 0; i < started_c; i++)
		pthread_join(cs[i].th, NULL);
	started_c = 0;
	for (int i = 0; i < c->consumers; i++) {
		trs[i] = cs[i].tr;
		if (cs[i].tr.last_ns > last)
			last = cs[i].tr.last_ns;
		if (cs[i].err[0] && !res->error[0])
			snprintf(res->error, sizeof(res->error), "consumer: %s", cs[i].err);
	}
	result_from_trackers(res, trs, c->consumers, total, c->group);
	if (c->consume_only) {
		/* A read rate: from the first record delivered, so the
		 * client's start-up (bootstrap, metadata, ListOffsets, about
		 * 0.5 s in librdkafka) does not count as reading time. */
		uint64_t first = 0;

		for (int i = 0; i < c->consumers; i++)
			if (cs[i].tr.first_ns && (!first || cs[i].tr.first_ns < first))
				first = cs[i].tr.first_ns;
		if (first)
			cons_start = first;
	}
	if (!cons_start)
		cons_start = x.start_ns;
	res->recv_secs = last > cons_start ? (double)(last - cons_start) / 1e9 : 0;
	rc = res->error[0] ? -1 : 0;
out:
	atomic_store(&x.cons_stop, 1);
	atomic_store(&x.go, 1);
	atomic_store(&g_stop, started_p ? 1 : atomic_load(&g_stop));
	for (int i = 0; i < started_p; i++)
		pthread_join(ps[i].th, NULL);
	for (int i = 0; i < started_c; i++)
		pthread_join(cs[i].th, NULL);
	for (int i = 0; cs && i < c->consumers; i++)
		tracker_free(&cs[i].tr);
	free(ps);
	free(cs);
	free(trs);
	if (rc < 0 && !res->error[0])
		snprintf(res->error, sizeof(res->error), "kafka setup failed");
	return rc;
}
