/*
 * bench/mosq.c - the libmosquitto client mode of plexmq-bench
 * (`--client mosquitto`): the same MQTT workload as evclient.c, driven
 * through Eclipse's own client library, to cross-check the fast libevent
 * client (issue 6).  If both clients report the same delivery, loss and
 * order for a broker, the numbers are the broker's, not our client's.
 *
 * libmosquitto costs more CPU per message than the broker does, so this
 * mode measures less throughput; it is for checking, not for targets.
 *
 * Threads: every client runs its network loop on a thread of its own
 * (mosquitto_loop_start).  A producer's own thread schedules and
 * publishes; its loop thread reports acknowledgements (on_publish), so
 * the producer's window state is under a mutex.  A consumer's tracker is
 * touched only by its loop thread until that thread is stopped.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#include "bench.h"

struct mctx {
	const struct bench_cfg *c;
	_Atomic int go;
	uint64_t start_ns, deadline_ns, interval_ns;
	char base[80]; /* topic prefix, unique per run */
};

/* Acknowledgement bookkeeping by packet id: the scheduled time of the
 * publish, or ACKED_EARLY when on_publish ran before mosquitto_publish
 * returned the id to us. */
#define ACKED_EARLY UINT64_MAX

struct mprod {
	struct mctx *x;
	int id;
	pthread_t th;
	struct mosquitto *m;
	pthread_mutex_t mu; /* recursive: on_publish may run inside publish */
	pthread_cond_t cv;
	int connected, failed, inited;
	unsigned inflight;
	uint64_t last_ack_ns; /* for giving up when acks stop */
	uint64_t sent, acked, quota;
	uint64_t *sched; /* [65536], by packet id */
	struct hist ack;
	char err[128];
};

struct mcons {
	struct mctx *x;
	int id;
	struct mosquitto *m;
	_Atomic int ready;
	struct tracker tr;
	char err[128];
};

static void
sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u),
	    (long)(ns % 1000000000u) };

	nanosleep(&ts, NULL);
}

static int
set_version(struct mosquitto *m, const struct bench_cfg *c)
{
	return mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION,
	    c->mqtt_version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
}

/* ---- producers ---- */

static void
prod_on_connect(struct mosquitto *m, void *obj, int rc)
{
	struct mprod *p = obj;

	(void)m;
	pthread_mutex_lock(&p->mu);
	if (rc == 0)
		p->connected = 1;
	else {
		p->failed = 1;
		snprintf(p->err, sizeof(p->err), "CONNACK: %s",
		    mosquitto_connack_string(rc));
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void
prod_on_publish(struct mosquitto *m, void *obj, int mid)
{
	struct mprod *p = obj;
	uint64_t now = now_ns();

	(void)m;
	pthread_mutex_lock(&p->mu);
	if (p->inflight > 0)
		p->inflight--;
	p->acked++;
	p->last_ack_ns = now;
	if (p->x->c->qos > 0) {
		uint64_t s = p->sched[(uint16_t)mid];

		if (s == 0)
			p->sched[(uint16_t)mid] = ACKED_EARLY;
		else if (s != ACKED_EARLY)
			hist_add(&p->ack, now > s ? now - s : 0);
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void
prod_on_disconnect(struct mosquitto *m, void *obj, int rc)
{
	struct mprod *p = obj;

	(void)m;
	if (rc == 0)
		return;
	pthread_mutex_lock(&p->mu);
	if (!p->err[0])
		snprintf(p->err, sizeof(p->err), "disconnected: %s",
		    mosquitto_strerror(rc));
	p->failed = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Wait for room in the window; 0 when there is room, -1 when the client
 * failed or no ack came for `drain` seconds.  Caller holds p->mu. */
static int
prod_wait_window(struct mprod *p, unsigned window)
{
	uint64_t limit = (uint64_t)(p->x->c->drain * 1e9), since = now_ns();

	while (p->inflight >= window && !p->failed && !atomic_load(&g_stop)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (p->inflight >= window && now_ns() -
		    (p->last_ack_ns > since ? p->last_ack_ns : since) > limit) {
			snprintf(p->err, sizeof(p->err),
			    "no acknowledgement for %.0f s", p->x->c->drain);
			return -1;
		}
	}
	return p->failed || atomic_load(&g_stop) ? -1 : 0;
}

static void *
prod_main(void *arg)
{
	struct mprod *p = arg;
	struct mctx *x = p->x;
	const struct bench_cfg *c = x->c;
	uint8_t *buf = malloc(c->msg_size);
	char topic[128];
	uint64_t phase;
	/* QoS 0 has no acks; the window then bounds what libmosquitto holds
	 * unwritten (on_publish runs once a QoS 0 packet is written). */
	unsigned window = c->window > 0 ? (unsigned)c->window : 1;

	if (buf == NULL) {
		snprintf(p->err, sizeof(p->err), "out of memory");
		return NULL;
	}
	while (!atomic_load(&x->go))
		sleep_ns(1000000);
	phase = x->interval_ns * (uint64_t)p->id / (uint64_t)c->producers;
	while (p->sent < p->quota && !atomic_load(&g_stop)) {
		uint64_t now = now_ns(), sched;
		int mid = 0, rc;

		if (x->deadline_ns && now >= x->deadline_ns)
			break;
		if (x->interval_ns) {
			sched = x->start_ns + phase + p->sent * x->interval_ns;
			if (sched > now) {
				sleep_ns(sched - now < 1000000 ? sched - now :
				    1000000);
				continue;
			}
		} else
			sched = now;
		snprintf(topic, sizeof(topic), "%s/%llu", x->base,
		    (unsigned long long)(c->topics > 1 ?
		    p->sent % (uint64_t)c->topics : 0));
		payload_fill(buf, c->msg_size, (uint32_t)p->id, p->sent, sched);
		pthread_mutex_lock(&p->mu);
		if (prod_wait_window(p, window) < 0) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		p->inflight++;
		rc = mosquitto_publish(p->m, &mid, topic, (int)c->msg_size, buf,
		    c->qos, false);
		if (rc != MOSQ_ERR_SUCCESS) {
			p->inflight--;
			snprintf(p->err, sizeof(p->err), "publish: %s",
			    mosquitto_strerror(rc));
			pthread_mutex_unlock(&p->mu);
			break;
		}
		if (c->qos > 0) {
			if (p->sched[(uint16_t)mid] == ACKED_EARLY) {
				uint64_t t = now_ns();

				hist_add(&p->ack, t > sched ? t - sched : 0);
				p->sched[(uint16_t)mid] = 0;
			} else
				p->sched[(uint16_t)mid] = sched ? sched : 1;
		}
		p->sent++;
		pthread_mutex_unlock(&p->mu);
		atomic_fetch_add_explicit(&g_sent, 1, memory_order_relaxed);
	}
	/* Wait (bounded by drain) for the last acknowledgements. */
	pthread_mutex_lock(&p->mu);
	{
		uint64_t until = now_ns() + (uint64_t)(c->drain * 1e9);

		while (p->inflight > 0 && !p->failed && now_ns() < until) {
			pthread_mutex_unlock(&p->mu);
			sleep_ns(1000000);
			pthread_mutex_lock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	free(buf);
	return NULL;
}

static int
prod_setup(struct mprod *p, const struct bench_cfg *c)
{
	pthread_mutexattr_t a;
	char id[64];
	int rc;

	p->sched = calloc(65536, sizeof(*p->sched));
	if (p->sched == NULL)
		return -1;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	rc = pthread_mutex_init(&p->mu, &a);
	pthread_mutexattr_destroy(&a);
	if (rc != 0)
		return -1;
	if (pthread_cond_init(&p->cv, NULL) != 0) {
		pthread_mutex_destroy(&p->mu);
		return -1;
	}
	p->inited = 1;
	snprintf(id, sizeof(id), "pbm-p%d-%s", p->id, c->run_id);
	p->m = mosquitto_new(id, true, p);
	if (p->m == NULL || set_version(p->m, c) != MOSQ_ERR_SUCCESS)
		return -1;
	/* Our window, not the library's queue, bounds what is in flight. */
	mosquitto_int_option(p->m, MOSQ_OPT_SEND_MAXIMUM, 65535);
	mosquitto_connect_callback_set(p->m, prod_on_connect);
	mosquitto_publish_callback_set(p->m, prod_on_publish);
	mosquitto_disconnect_callback_set(p->m, prod_on_disconnect);
	rc = mosquitto_connect(p->m, c->host, c->port, 60);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_loop_start(p->m);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(p->err, sizeof(p->err), "connect: %s",
		    mosquitto_strerror(rc));
		return -1;
	}
	return 0;
}

/* ---- consumers ---- */

static void
cons_on_connect(struct mosquitto *m, void *obj, int rc)
{
	struct mcons *k = obj;
	char filter[96];

	if (rc != 0) {
		snprintf(k->err, sizeof(k->err), "CONNACK: %s",
		    mosquitto_connack_string(rc));
		return;
	}
	snprintf(filter, sizeof(filter), "%s/#", k->x->base);
	rc = mosquitto_subscribe(m, NULL, filter, k->x->c->qos);
	if (rc != MOSQ_ERR_SUCCESS)
		snprintf(k->err, sizeof(k->err), "subscribe: %s",
		    mosquitto_strerror(rc));
}

static void
cons_on_subscribe(struct mosquitto *m, void *obj, int mid, int n,
    const int *granted)
{
	struct mcons *k = obj;

	(void)m;
	(void)mid;
	if (n < 1 || granted[0] > 2)
		snprintf(k->err, sizeof(k->err), "subscription refused");
	else
		atomic_store(&k->ready, 1);
}

static void
cons_on_message(struct mosquitto *m, void *obj,
    const struct mosquitto_message *msg)
{
	struct mcons *k = obj;

	(void)m;
	/* tracker_msg also counts g_recv for the progress line. */
	tracker_msg(&k->tr, msg->payload, (size_t)msg->payloadlen, now_ns());
}

static int
cons_setup(struct mcons *k, const struct bench_cfg *c)
{
	char id[64];
	int rc;

	snprintf(id, sizeof(id), "pbm-c%d-%s", k->id, c->run_id);
	k->m = mosquitto_new(id, true, k);
	if (k->m == NULL || set_version(k->m, c) != MOSQ_ERR_SUCCESS)
		return -1;
	/* Let the broker send as much as it will: the consumer side must
	 * not be what limits the measurement. */
	mosquitto_int_option(k->m, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
	mosquitto_connect_callback_set(k->m, cons_on_connect);
	mosquitto_subscribe_callback_set(k->m, cons_on_subscribe);
	mosquitto_message_callback_set(k->m, cons_on_message);
	rc = mosquitto_connect(k->m, c->host, c->port, 60);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_loop_start(k->m);
	if (rc != MOSQ_ERR_SUCCESS) {
		snprintf(k->err, sizeof(k->err), "connect: %s",
		    mosquitto_strerror(rc));
		return -1;
	}
	return 0;
}

static void
client_stop(struct mosquitto *m)
{
	if (m == NULL)
		return;
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, false);
	mosquitto_destroy(m);
}

/* ---- one run ---- */

int
mosq_run(const struct bench_cfg *c, struct bench_result *res)
{
	struct mctx x;
	struct mprod *ps = calloc((size_t)c->producers, sizeof(*ps));
	struct mcons *cs = calloc((size_t)(c->consumers + 1), sizeof(*cs));
	struct tracker *trs = calloc((size_t)(c->consumers + 1), sizeof(*trs));
	int rc = -1, started = 0, i;
	uint64_t total = 0, last = 0, t_prog, prev = 0;

	memset(&x, 0, sizeof(x));
	x.c = c;
	snprintf(x.base, sizeof(x.base), "pbench/%s", c->run_id);
	mosquitto_lib_init();
	if (ps == NULL || cs == NULL || trs == NULL)
		goto out;
	if (c->rate > 0)
		x.interval_ns = (uint64_t)(1e9 * c->producers / c->rate);
	for (i = 0; i < c->consumers; i++) {
		cs[i].x = &x;
		cs[i].id = i;
		if (tracker_init(&cs[i].tr, c->producers) < 0 ||
		    cons_setup(&cs[i], c) < 0)
			goto out;
	}
	for (i = 0; i < c->producers; i++) {
		ps[i].x = &x;
		ps[i].id = i;
		ps[i].quota = c->count ? c->count / (uint64_t)c->producers +
		    ((uint64_t)i < c->count % (uint64_t)c->producers) :
		    UINT64_MAX;
		if (prod_setup(&ps[i], c) < 0)
			goto out;
	}
	/* Every client connected and every consumer subscribed (10 s). */
	for (int w = 0; w < 1000; w++) {
		int ok = 1;

		for (i = 0; i < c->consumers; i++)
			ok &= atomic_load(&cs[i].ready) && !cs[i].err[0];
		for (i = 0; i < c->producers; i++) {
			pthread_mutex_lock(&ps[i].mu);
			ok &= ps[i].connected;
			pthread_mutex_unlock(&ps[i].mu);
			if (ps[i].failed) {
				snprintf(res->error, sizeof(res->error),
				    "producer: %s", ps[i].err);
				goto out;
			}
		}
		if (ok)
			break;
		if (w == 999) {
			snprintf(res->error, sizeof(res->error),
			    "clients not connected and subscribed within 10 s");
			goto out;
		}
		sleep_ns(10000000);
	}
	for (; started < c->producers; started++)
		if (pthread_create(&ps[started].th, NULL, prod_main,
		    &ps[started]) != 0)
			goto out;
	x.start_ns = now_ns();
	if (!c->count)
		x.deadline_ns = x.start_ns + (uint64_t)(c->duration * 1e9);
	atomic_store(&x.go, 1);
	for (i = 0; i < started; i++)
		pthread_join(ps[i].th, NULL);
	started = 0;
	res->send_secs = (double)(now_ns() - x.start_ns) / 1e9;
	for (i = 0; i < c->producers; i++) {
		total += ps[i].sent;
		res->sent += ps[i].sent;
		res->acked += c->qos > 0 ? ps[i].acked : 0;
		hist_merge(&res->ack, &ps[i].ack);
		if (ps[i].err[0] && !res->error[0])
			snprintf(res->error, sizeof(res->error), "producer: %s",
			    ps[i].err);
	}
	/* Consumers: everything arrived, or no progress for `drain`. */
	t_prog = now_ns();
	for (;;) {
		uint64_t got = atomic_load(&g_recv), now = now_ns();

		if (got >= total * (uint64_t)c->consumers ||
		    atomic_load(&g_stop))
			break;
		if (got != prev) {
			prev = got;
			t_prog = now;
		} else if (now - t_prog > (uint64_t)(c->drain * 1e9))
			break;
		sleep_ns(5000000);
	}
	for (i = 0; i < c->consumers; i++) {
		client_stop(cs[i].m); /* its loop thread is gone after this */
		cs[i].m = NULL;
		trs[i] = cs[i].tr;
		if (cs[i].tr.last_ns > last)
			last = cs[i].tr.last_ns;
		if (cs[i].err[0] && !res->error[0])
			snprintf(res->error, sizeof(res->error), "consumer: %s",
			    cs[i].err);
	}
	result_from_trackers(res, trs, c->consumers, total, 0);
	res->recv_secs = last > x.start_ns ?
	    (double)(last - x.start_ns) / 1e9 : 0;
	rc = 0;
out:
	for (i = 0; i < started; i++)
		pthread_join(ps[i].th, NULL);
	for (i = 0; ps != NULL && i < c->producers; i++) {
		client_stop(ps[i].m);
		if (ps[i].inited) {
			pthread_mutex_destroy(&ps[i].mu);
			pthread_cond_destroy(&ps[i].cv);
		}
		free(ps[i].sched);
	}
	for (i = 0; cs != NULL && i < c->consumers; i++) {
		client_stop(cs[i].m);
		tracker_free(&cs[i].tr);
	}
	if (rc < 0 && !res->error[0])
		snprintf(res->error, sizeof(res->error),
		    "libmosquitto client setup failed");
	free(ps);
	free(cs);
	free(trs);
	mosquitto_lib_cleanup();
	return rc;
}
