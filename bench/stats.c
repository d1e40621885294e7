/* bench/stats.c - what plexmq-bench measures: a log-linear latency
 * histogram (about 3% resolution, nothing allocated per sample), per
 * consumer tracking of loss, duplicates and reordering by (producer,
 * sequence), and the broker's CPU time and RSS read from /proc.
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic uint64_t g_sent, g_recv;
_Atomic int g_stop;

uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Values below 64 ns are exact; above, each power of two is split in 32,
 * so a percentile is off by at most 1/32 of its value. */
static unsigned
hist_index(uint64_t v)
{
	int msb;
	unsigned idx;

	if (v < 64)
		return (unsigned)v;
	msb = 63 - __builtin_clzll(v);
	idx = 64u + (unsigned)(msb - 6) * 32u +
	    (unsigned)((v >> (msb - 5)) - 32u);
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The upper bound of a bucket, so percentiles never flatter. */
static uint64_t
hist_value(unsigned idx)
{
	unsigned msb, sub;

	if (idx < 64)
		return idx;
	msb = (idx - 64) / 32 + 6;
	sub = (idx - 64) % 32 + 32;
	return (((uint64_t)sub + 1) << (msb - 5)) - 1;
}

void
hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->n++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

void
hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->n += src->n;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t
hist_pct(const struct hist *h, double pct)
{
	uint64_t want, acc = 0;

	if (h->n == 0)
		return 0;
	want = (uint64_t)((double)h->n * pct / 100.0 + 0.5);
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want) {
			uint64_t v = hist_value(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

static void
put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4); /* host order: the same process reads it */
}

static void
put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

void
payload_fill(uint8_t *buf, size_t size, uint32_t prod, uint64_t seq,
    uint64_t sched)
{
	(void)size; /* the rest was filled once, when the buffer was made */
	put32(buf, BENCH_MAGIC);
	put32(buf + 4, prod);
	put64(buf + 8, seq);
	put64(buf + 16, sched);
}

int
tracker_init(struct tracker *t, int nprod)
{
	memset(t, 0, sizeof(*t));
	t->nprod = nprod;
	t->p = calloc((size_t)nprod, sizeof(*t->p));
	return t->p ? 0 : -1;
}

void
tracker_free(struct tracker *t)
{
	for (int i = 0; t->p && i < t->nprod; i++)
		free(t->p[i].seen);
	free(t->p);
	t->p = NULL;
}

int
tracker_msg(struct tracker *t, const uint8_t *p, size_t n, uint64_t now)
{
	uint32_t magic, prod;
	uint64_t seq, sched;
	struct track_prod *tp;

	t->received++;
	atomic_fetch_add_explicit(&g_recv, 1, memory_order_relaxed);
	if (n < BENCH_HDR) {
		t->bad++;
		return -1;
	}
	memcpy(&magic, p, 4);
	memcpy(&prod, p + 4, 4);
	memcpy(&seq, p + 8, 8);
	memcpy(&sched, p + 16, 8);
	if (magic != BENCH_MAGIC || prod >= (uint32_t)t->nprod) {
		t->bad++;
		return -1;
	}
	tp = &t->p[prod];
	if (seq >= tp->bits) {
		/* Grow the bitmap geometrically; a sequence number far beyond
		 * anything sent (a corrupt payload) is refused, not allocated. */
		uint64_t nb = tp->bits ? tp->bits : 65536;
		uint8_t *ns;

		if (seq > (1ull << 34)) {
			t->bad++;
			return -1;
		}
		while (nb <= seq)
			nb *= 2;
		ns = realloc(tp->seen, (size_t)(nb / 8));
		if (!ns) {
			t->bad++;
			return -1;
		}
		memset(ns + tp->bits / 8, 0, (size_t)((nb - tp->bits) / 8));
		tp->seen = ns;
		tp->bits = nb;
	}
	if (tp->seen[seq / 8] & (1u << (seq % 8))) {
		t->dups++;
		return 0;
	}
	tp->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
	t->unique++;
	if (tp->have_max && seq < tp->max_seq)
		t->reorders++;
	else {
		tp->max_seq = seq;
		tp->have_max = 1;
	}
	if (!t->first_ns)
		t->first_ns = now;
	t->last_ns = now;
	hist_add(&t->lat, now > sched ? now - sched : 0);
	return 0;
}

/* Sum the consumers.  expect: what each consumer should get, or (shared,
 * a group splits the messages) what all of them together should get. */
void
result_from_trackers(struct bench_result *r, struct tracker *t, int n,
    uint64_t expect, int shared)
{
	r->expected = shared ? expect : expect * (uint64_t)n;
	for (int i = 0; i < n; i++) {
		r->received += t[i].received;
		r->unique += t[i].unique;
		r->dups += t[i].dups;
		r->reorders += t[i].reorders;
		r->bad += t[i].bad;
		hist_merge(&r->lat, &t[i].lat);
	}
	r->lost = r->expected > r->unique ? r->expected - r->unique : 0;
}

int
proc_cpu(long pid, double *secs)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and ')': fields follow the last. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    &ut, &st) != 2)
		return -1;
	*secs = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

long
proc_status_kb(long pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0) {
			v = strtol(line + kl, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

struct sampler {
	pthread_t th;
	long pid;
	int progress;
	_Atomic int stop;
	long peak;
};

static void *
sampler_main(void *arg)
{
	struct sampler *s = arg;
	uint64_t t0 = now_ns(), last_recv = 0, last_t = t0;
	int tick = 0;

	while (!atomic_load(&s->stop)) {
		if (s->pid > 0) {
			long rss = proc_status_kb(s->pid, "VmRSS:");
			if (rss > s->peak)
				s->peak = rss;
		}
		if (s->progress && ++tick % 10 == 0) {
			uint64_t now = now_ns();
			uint64_t rc = atomic_load(&g_recv);
			double dt = (double)(now - last_t) / 1e9;

			fprintf(stderr, "\r  %5.1fs  sent %10llu  recv %10llu  %9.0f msg/s   ",
			    (double)(now - t0) / 1e9,
			    (unsigned long long)atomic_load(&g_sent),
			    (unsigned long long)rc,
			    dt > 0 ? (double)(rc - last_recv) / dt : 0.0);
			last_recv = rc;
			last_t = now;
		}
		usleep(50000);
	}
	if (s->progress)
		fprintf(stderr, "\r%75s\r", "");
	return NULL;
}

struct sampler *
sampler_start(long pid, int progress)
{
	struct sampler *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->pid = pid;
	s->progress = progress;
	if (pid > 0)
		s->peak = proc_status_kb(pid, "VmRSS:");
	if (pthread_create(&s->th, NULL, sampler_main, s) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

void
sampler_stop(struct sampler *s, long *rss_peak_kb)
{
	if (!s)
		return;
	atomic_store(&s->stop, 1);
	pthread_join(s->th, NULL);
	if (s->pid > 0) {
		long rss = proc_status_kb(s->pid, "VmRSS:");
		if (rss > s->peak)
			s->peak = rss;
	}
	if (rss_peak_kb)
		*rss_peak_kb = s->peak;
	free(s);
}
