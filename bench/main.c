/* bench/main.c - plexmq-bench: drive a broker over MQTT, the Kafka protocol
 * or the plexmq tcp protocol and report what the consumers saw.
 *
 *   plexmq-bench --url mqtt://127.0.0.1:1883 -p 4 -c 1 -s 100 -d 5
 *   plexmq-bench --compare --target plexmqd=mqtt://127.0.0.1:1883@PID \
 *       --target mosquitto=mqtt://127.0.0.1:1884@PID2 --rounds 3 --out DIR ...
 *
 * One run: producers and consumers connect, consumers subscribe, then
 * sending starts; the run ends when every consumer has every message or
 * nothing arrived for --drain seconds.  Results: a table on stdout, and
 * appended to --csv / --json files.  --compare runs the workload against
 * each target in turn (A B A B ...) and writes report.md, report.csv and
 * chart.svg with the medians into --out.
 */
#include "bench.h"
#include "pmq_build.h" /* HAVE_LIBMOSQUITTO */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 8
#define MAX_ROUNDS 20

struct target {
	char name[32];
	char url[128];
	long pid;
};

static int opt_quiet;

static void
usage(FILE *f)
{
	fputs(
"usage: plexmq-bench [options] --url URL\n"
"       plexmq-bench --compare --target NAME=URL[@PID] ... [options]\n"
"\n"
"URL: mqtt://HOST:PORT (3.1.1), mqtt5://HOST:PORT, tcp://HOST:PORT,\n"
"     kafka://HOST:PORT (librdkafka).  HOST is an IPv4 address.\n"
"\n"
"workload:\n"
"  -p, --producers N     producers (1)          -c, --consumers N  consumers (1)\n"
"  -s, --size BYTES      payload size, >= 24 (100)\n"
"  -r, --rate MSGS       total msgs/s over all producers (0: flat out)\n"
"  -n, --count N         total messages          -d, --duration SECS (5)\n"
"  -q, --qos 0|1|2       MQTT QoS (tcp: >0 keeps a window of +OK)\n"
"  -w, --window N        unacknowledged publishes per producer (20)\n"
"      --topics N        spread over N topics (1)\n"
"      --drain SECS      give up after SECS without a delivery (3)\n"
"      --idle-conns N    instead: connect N idle MQTT clients, report\n"
"                        the broker's RSS per connection\n"
"      --client ev|mosquitto  MQTT client: our libevent one (ev, default)\n"
"                        or libmosquitto, to cross-check it (slower)\n"
"      --mem-fill MIB    instead: time the first touch of MIB MiB of new\n"
"                        memory (what filling the page cache costs this\n"
"                        machine) and print MB/s\n"
"kafka:\n"
"      --acks 0|1|all (1)  --linger-ms N (5)  --batch-msgs N  --batch-bytes N\n"
"      --group           consumers share one group\n"
"      --sequential      produce everything, then consume from the start\n"
"      --topic NAME      use this topic instead of a fresh one per run\n"
"      --consume-only    produce nothing: read --topic from the start and\n"
"                        expect --count messages written by an earlier run\n"
"                        with as many --producers (a cold-log read);\n"
"                        msgs/s counts from the first record delivered\n"
"measuring and output:\n"
"      --broker-pid PID  broker CPU time and peak RSS from /proc/PID\n"
"      --label TEXT      row name            --csv FILE / --json FILE (appended)\n"
"      --quiet           no progress line\n"
"compare:\n"
"      --compare --target NAME=URL[@PID] (2..8) --rounds N (3) --out DIR\n",
	    f);
}

static int
parse_url(const char *url, struct bench_cfg *c)
{
	const char *hp;
	char host[64];
	int port;

	if (strncmp(url, "mqtt://", 7) == 0) {
		c->proto = PROTO_MQTT;
		c->mqtt_version = 4;
		hp = url + 7;
	} else if (strncmp(url, "mqtt5://", 8) == 0) {
		c->proto = PROTO_MQTT;
		c->mqtt_version = 5;
		hp = url + 8;
	} else if (strncmp(url, "tcp://", 6) == 0) {
		c->proto = PROTO_TCP;
		hp = url + 6;
	} else if (strncmp(url, "kafka://", 8) == 0) {
		c->proto = PROTO_KAFKA;
		hp = url + 8;
	} else
		return -1;
	if (sscanf(hp, "%63[^:]:%d", host, &port) != 2 || port <= 0 || port > 65535)
		return -1;
	snprintf(c->host, sizeof(c->host), "%s", host);
	c->port = port;
	return 0;
}

static double
ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static int
run_one(struct bench_cfg *c, struct bench_result *r)
{
	static unsigned counter;
	struct rusage ru0, ru1;
	double b0 = 0, b1 = 0;
	struct sampler *s;
	int rc;

	memset(r, 0, sizeof(*r));
	snprintf(r->label, sizeof(r->label), "%s", c->label);
	snprintf(c->run_id, sizeof(c->run_id), "%ld-%u-%ld", (long)getpid(),
	    counter++, (long)(now_ns() / 1000000 % 100000));
	atomic_store(&g_sent, 0);
	atomic_store(&g_recv, 0);
	atomic_store(&g_stop, 0);
	if (c->broker_pid > 0 && proc_cpu(c->broker_pid, &b0) < 0) {
		snprintf(r->error, sizeof(r->error), "no process %ld", c->broker_pid);
		r->failed = 1;
		return -1;
	}
	/* Checked per run: --compare may mix kafka and other targets. */
	if ((c->consume_only || c->topic[0]) && c->proto != PROTO_KAFKA) {
		snprintf(r->error, sizeof(r->error),
		    "--topic and --consume-only need a kafka URL");
		r->failed = 1;
		return -1;
	}
	getrusage(RUSAGE_SELF, &ru0);
	s = sampler_start(c->broker_pid, !opt_quiet && isatty(2));
	if (c->idle_conns > 0)
		rc = evclient_idle(c, r);
	else if (c->proto == PROTO_KAFKA)
		rc = kafka_run(c, r);
	else if (c->proto == PROTO_MQTT && c->client_mosq)
		rc = mosq_run(c, r);
	else
		rc = evclient_run(c, r);
	sampler_stop(s, c->idle_conns > 0 ? NULL : &r->broker_rss_peak_kb);
	getrusage(RUSAGE_SELF, &ru1);
	r->self_cpu_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	    (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
	    (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	if (c->broker_pid > 0 && proc_cpu(c->broker_pid, &b1) == 0)
		r->broker_cpu_s = b1 - b0;
	if (c->broker_pid > 0)
		r->broker_hwm_kb = proc_status_kb(c->broker_pid, "VmHWM:");
	if (c->consumers > 0 && r->recv_secs > 0)
		r->msgs_s = (double)r->unique / r->recv_secs;
	else if (r->send_secs > 0)
		r->msgs_s = (double)r->acked / r->send_secs;
	r->mb_s = r->msgs_s * (double)c->msg_size / 1e6;
	r->send_msgs_s = r->send_secs > 0 ? (double)r->sent / r->send_secs : 0;
	{
		uint64_t per = c->consumers > 0 ? r->unique : r->acked;
		r->broker_cpu_us_msg = per ? r->broker_cpu_s * 1e6 / (double)per : 0;
	}
	r->failed = rc < 0;
	return rc;
}

static const char *
proto_name(const struct bench_cfg *c)
{
	switch (c->proto) {
	case PROTO_MQTT:
		return c->mqtt_version == 5 ? "mqtt5" : "mqtt";
	case PROTO_TCP:
		return "tcp";
	default:
		return "kafka";
	}
}

static void
print_header(void)
{
	printf("%-22s %9s %9s %7s %5s %6s %10s %7s %8s %8s %8s %8s %8s %7s %7s %7s %6s\n",
	    "run", "sent", "recv", "lost", "dup", "reord", "msgs/s", "MB/s",
	    "p50ms", "p99ms", "p999ms", "maxms", "ackp99", "brkCPU", "us/msg",
	    "rssMB", "ownCPU");
}

static void
print_row(const struct bench_result *r)
{
	printf("%-22.22s %9llu %9llu %7llu %5llu %6llu %10.0f %7.1f %8.3f %8.3f %8.3f %8.2f %8.3f %7.2f %7.3f %7.1f %6.2f\n",
	    r->label, (unsigned long long)r->sent,
	    (unsigned long long)r->unique, (unsigned long long)r->lost,
	    (unsigned long long)r->dups, (unsigned long long)r->reorders,
	    r->msgs_s, r->mb_s, ms(hist_pct(&r->lat, 50)),
	    ms(hist_pct(&r->lat, 99)), ms(hist_pct(&r->lat, 99.9)),
	    ms(r->lat.max), ms(hist_pct(&r->ack, 99)), r->broker_cpu_s,
	    r->broker_cpu_us_msg, (double)r->broker_rss_peak_kb / 1024.0,
	    r->self_cpu_s);
	if (r->idle_connected)
		printf("  idle connections: %d, broker RSS %.1f MB, %.0f bytes per connection\n",
		    r->idle_connected, (double)r->broker_rss_peak_kb / 1024.0,
		    r->idle_rss_per_conn);
	if (r->failed || r->error[0])
		printf("  error: %s\n", r->error);
}

static const char CSV_HEAD[] =
    "label,proto,producers,consumers,qos,size,rate,sent,acked,ack_errors,"
    "expected,received,unique,lost,dups,reorders,send_s,recv_s,msgs_s,mb_s,"
    "send_msgs_s,p50_ms,p99_ms,p999_ms,max_ms,ack_p50_ms,ack_p99_ms,"
    "broker_cpu_s,broker_cpu_us_msg,broker_rss_peak_kb,broker_hwm_kb,"
    "self_cpu_s,idle_conns,idle_bytes_per_conn,error\n";

static void
csv_row(FILE *f, const struct bench_cfg *c, const struct bench_result *r)
{
	char err[160];

	snprintf(err, sizeof(err), "%s", r->error);
	for (char *p = err; *p; p++)
		if (*p == ',' || *p == '"' || *p == '\n')
			*p = ' ';
	fprintf(f, "%s,%s,%d,%d,%d,%zu,%.0f,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,"
	    "%.3f,%.3f,%.0f,%.2f,%.0f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.3f,%.4f,%ld,%ld,"
	    "%.3f,%d,%.0f,%s\n",
	    r->label, proto_name(c), c->producers, c->consumers, c->qos,
	    c->msg_size, c->rate, (unsigned long long)r->sent,
	    (unsigned long long)r->acked, (unsigned long long)r->ack_errors,
	    (unsigned long long)r->expected, (unsigned long long)r->received,
	    (unsigned long long)r->unique, (unsigned long long)r->lost,
	    (unsigned long long)r->dups, (unsigned long long)r->reorders,
	    r->send_secs, r->recv_secs, r->msgs_s, r->mb_s, r->send_msgs_s,
	    ms(hist_pct(&r->lat, 50)), ms(hist_pct(&r->lat, 99)),
	    ms(hist_pct(&r->lat, 99.9)), ms(r->lat.max),
	    ms(hist_pct(&r->ack, 50)), ms(hist_pct(&r->ack, 99)),
	    r->broker_cpu_s, r->broker_cpu_us_msg, r->broker_rss_peak_kb,
	    r->broker_hwm_kb, r->self_cpu_s, r->idle_connected,
	    r->idle_rss_per_conn, err);
}

static void
append_csv(const char *path, const struct bench_cfg *c,
    const struct bench_result *r)
{
	struct stat st;
	int fresh = stat(path, &st) != 0 || st.st_size == 0;
	FILE *f = fopen(path, "a");

	if (!f) {
		fprintf(stderr, "plexmq-bench: %s: %s\n", path, strerror(errno));
		return;
	}
	if (fresh)
		fputs(CSV_HEAD, f);
	csv_row(f, c, r);
	fclose(f);
}

static void
append_json(const char *path, const struct bench_cfg *c,
    const struct bench_result *r)
{
	FILE *f = fopen(path, "a");
	char err[160];

	if (!f) {
		fprintf(stderr, "plexmq-bench: %s: %s\n", path, strerror(errno));
		return;
	}
	snprintf(err, sizeof(err), "%s", r->error);
	for (char *p = err; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
			*p = ' ';
	/* One JSON object per line (JSON Lines): appendable, greppable. */
	fprintf(f, "{\"label\":\"%s\",\"proto\":\"%s\",\"producers\":%d,"
	    "\"consumers\":%d,\"qos\":%d,\"size\":%zu,\"rate\":%.0f,"
	    "\"sent\":%llu,\"acked\":%llu,\"received\":%llu,\"unique\":%llu,"
	    "\"lost\":%llu,\"dups\":%llu,\"reorders\":%llu,\"msgs_s\":%.0f,"
	    "\"mb_s\":%.2f,\"latency_ms\":{\"p50\":%.4f,\"p99\":%.4f,"
	    "\"p999\":%.4f,\"max\":%.4f},\"ack_ms\":{\"p50\":%.4f,\"p99\":%.4f},"
	    "\"broker_cpu_s\":%.3f,\"broker_cpu_us_msg\":%.4f,"
	    "\"broker_rss_peak_kb\":%ld,\"self_cpu_s\":%.3f,"
	    "\"idle_conns\":%d,\"idle_bytes_per_conn\":%.0f,\"error\":\"%s\"}\n",
	    r->label, proto_name(c), c->producers, c->consumers, c->qos,
	    c->msg_size, c->rate, (unsigned long long)r->sent,
	    (unsigned long long)r->acked, (unsigned long long)r->received,
	    (unsigned long long)r->unique, (unsigned long long)r->lost,
	    (unsigned long long)r->dups, (unsigned long long)r->reorders,
	    r->msgs_s, r->mb_s, ms(hist_pct(&r->lat, 50)),
	    ms(hist_pct(&r->lat, 99)), ms(hist_pct(&r->lat, 99.9)),
	    ms(r->lat.max), ms(hist_pct(&r->ack, 50)), ms(hist_pct(&r->ack, 99)),
	    r->broker_cpu_s, r->broker_cpu_us_msg, r->broker_rss_peak_kb,
	    r->self_cpu_s, r->idle_connected, r->idle_rss_per_conn, err);
	fclose(f);
}

/* ---- --compare ---- */

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { M_MSGS, M_P50, M_P99, M_P999, M_CPU_MSG, M_RSS, M_LOST, M_ACKP99, M_N };
static const char *const metric_name[M_N] = {
	"msgs/s", "p50 ms", "p99 ms", "p99.9 ms", "broker CPU us/msg",
	"broker peak RSS MB", "lost", "ack p99 ms",
};

static double
metric(const struct bench_result *r, int m)
{
	switch (m) {
	case M_MSGS: return r->idle_connected ? r->idle_rss_per_conn : r->msgs_s;
	case M_P50: return ms(hist_pct(&r->lat, 50));
	case M_P99: return ms(hist_pct(&r->lat, 99));
	case M_P999: return ms(hist_pct(&r->lat, 99.9));
	case M_CPU_MSG: return r->broker_cpu_us_msg;
	case M_RSS: return (double)r->broker_rss_peak_kb / 1024.0;
	case M_LOST: return (double)r->lost;
	default: return ms(hist_pct(&r->ack, 99));
	}
}

static void
svg_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '&')
			fputs("&amp;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else
			fputc(*s, f);
	}
}

/* Two panels of horizontal bars (median msgs/s, median p99), one dot per
 * round, so the spread is visible next to the median. */
static void
write_svg(const char *path, const char *title, struct target *t, int nt,
    struct bench_result (*res)[MAX_ROUNDS], int rounds, double med[][M_N])
{
	static const int panels[2] = { M_MSGS, M_P99 };
	static const char *const colors[MAX_TARGETS] = { "#4e79a7", "#f28e2b",
		"#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f" };
	const int w = 720, row = 28, left = 150, barw = 480;
	int h = 60 + 2 * (nt * row + 50);
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "plexmq-bench: %s: %s\n", path, strerror(errno));
		return;
	}
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	    "font-family=\"sans-serif\" font-size=\"12\">\n"
	    "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
	    "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", w, h);
	svg_escape(f, title);
	fputs("</text>\n", f);
	for (int pi = 0; pi < 2; pi++) {
		int m = panels[pi], y0 = 50 + pi * (nt * row + 50);
		double vmax = 0;

		for (int i = 0; i < nt; i++)
			for (int k = 0; k < rounds; k++)
				if (metric(&res[i][k], m) > vmax)
					vmax = metric(&res[i][k], m);
		if (vmax <= 0)
			vmax = 1;
		fprintf(f, "<text x=\"10\" y=\"%d\" font-weight=\"bold\">median %s%s</text>\n",
		    y0, m == M_MSGS && res[0][0].idle_connected ?
		    "bytes per idle connection" : metric_name[m],
		    m == M_MSGS ? " (higher is better)" : " (lower is better)");
		for (int i = 0; i < nt; i++) {
			int y = y0 + 10 + i * row;
			double bw = med[i][m] / vmax * barw;

			fprintf(f, "<text x=\"10\" y=\"%d\">", y + 16);
			svg_escape(f, t[i].name);
			fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"20\" fill=\"%s\"/>\n",
			    left, y + 2, bw, colors[i % MAX_TARGETS]);
			for (int k = 0; k < rounds; k++)
				fprintf(f, "<circle cx=\"%.1f\" cy=\"%d\" r=\"3\" fill=\"black\"/>\n",
				    left + metric(&res[i][k], m) / vmax * barw, y + 12);
			fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.4g</text>\n",
			    left + bw + 6, y + 16, med[i][m]);
		}
	}
	fputs("</svg>\n", f);
	fclose(f);
}

static int
compare(struct bench_cfg *base, struct target *t, int nt, int rounds,
    const char *out, const char *csv, const char *json)
{
	static struct bench_result res[MAX_TARGETS][MAX_ROUNDS];
	double med[MAX_TARGETS][M_N];
	char path[512];
	FILE *f;
	int failures = 0;

	if (mkdir(out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "plexmq-bench: %s: %s\n", out, strerror(errno));
		return 1;
	}
	if (!opt_quiet)
		print_header();
	for (int k = 0; k < rounds; k++)
		for (int i = 0; i < nt; i++) {
			struct bench_cfg c = *base;

			if (parse_url(t[i].url, &c) < 0) {
				fprintf(stderr, "plexmq-bench: bad URL %s\n", t[i].url);
				return 1;
			}
			c.broker_pid = t[i].pid;
			snprintf(c.label, sizeof(c.label), "%.31s#%d", t[i].name, k + 1);
			if (run_one(&c, &res[i][k]) < 0)
				failures++;
			if (!opt_quiet)
				print_row(&res[i][k]);
			fflush(stdout);
			if (csv)
				append_csv(csv, &c, &res[i][k]);
			if (json)
				append_json(json, &c, &res[i][k]);
		}
	for (int i = 0; i < nt; i++)
		for (int m = 0; m < M_N; m++) {
			double v[MAX_ROUNDS];
			for (int k = 0; k < rounds; k++)
				v[k] = metric(&res[i][k], m);
			med[i][m] = median(v, rounds);
		}
	snprintf(path, sizeof(path), "%s/report.md", out);
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "plexmq-bench: %s: %s\n", path, strerror(errno));
		return 1;
	}
	fprintf(f, "| target | %s | ratio | p50 ms | p99 ms | ratio | p99.9 ms | "
	    "ack p99 ms | broker CPU us/msg | ratio | broker peak RSS MB | lost (median) |\n"
	    "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
	    base->idle_conns > 0 ? "bytes/conn" : "msgs/s");
	for (int i = 0; i < nt; i++) {
		double b0 = med[0][M_MSGS], b2 = med[0][M_P99], b4 = med[0][M_CPU_MSG];

		fprintf(f, "| %s | %.0f | %.2fx | %.3f | %.3f | %.2fx | %.3f | %.3f | "
		    "%.3f | %.2fx | %.1f | %.0f |\n", t[i].name, med[i][M_MSGS],
		    b0 > 0 ? med[i][M_MSGS] / b0 : 0, med[i][M_P50], med[i][M_P99],
		    b2 > 0 ? med[i][M_P99] / b2 : 0, med[i][M_P999], med[i][M_ACKP99],
		    med[i][M_CPU_MSG], b4 > 0 ? med[i][M_CPU_MSG] / b4 : 0,
		    med[i][M_RSS], med[i][M_LOST]);
	}
	fprintf(f, "\nMedians of %d rounds run A B A B; ratios are against %s.%s\n",
	    rounds, t[0].name, failures ? " Some runs failed: see the CSV." : "");
	fclose(f);
	snprintf(path, sizeof(path), "%s/report.csv", out);
	f = fopen(path, "w");
	if (f) {
		fputs(CSV_HEAD, f);
		for (int k = 0; k < rounds; k++)
			for (int i = 0; i < nt; i++) {
				struct bench_cfg c = *base;
				parse_url(t[i].url, &c);
				csv_row(f, &c, &res[i][k]);
			}
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/chart.svg", out);
	write_svg(path, base->label[0] ? base->label : "plexmq-bench --compare",
	    t, nt, res, rounds, med);
	if (!opt_quiet) {
		printf("\nmedians:\n");
		for (int i = 0; i < nt; i++)
			printf("  %-14s %12.0f %s  p99 %.3f ms  %.3f us/msg  (%.2fx)\n",
			    t[i].name, med[i][M_MSGS],
			    base->idle_conns > 0 ? "B/conn" : "msgs/s", med[i][M_P99],
			    med[i][M_CPU_MSG],
			    med[0][M_MSGS] > 0 ? med[i][M_MSGS] / med[0][M_MSGS] : 0);
		printf("report: %s/report.md, %s/chart.svg\n", out, out);
	}
	return failures ? 1 : 0;
}

static int
parse_target(const char *s, struct target *t)
{
	const char *eq = strchr(s, '='), *at;
	size_t nl;

	if (!eq || eq == s || (nl = (size_t)(eq - s)) >= sizeof(t->name))
		return -1;
	memcpy(t->name, s, nl);
	t->name[nl] = '\0';
	at = strrchr(eq + 1, '@');
	t->pid = 0;
	if (at) {
		char *end;
		t->pid = strtol(at + 1, &end, 10);
		if (*end || t->pid <= 0)
			return -1;
	} else
		at = eq + 1 + strlen(eq + 1);
	if ((size_t)(at - eq - 1) >= sizeof(t->url))
		return -1;
	memcpy(t->url, eq + 1, (size_t)(at - eq - 1));
	t->url[at - eq - 1] = '\0';
	return 0;
}

/*
 * --mem-fill: how fast this machine hands out memory not touched before.
 * A cold read through the page cache fills that many fresh pages, and on
 * a VM whose host takes back freed memory (virtio-balloon free page
 * reporting) the first touch costs a host fault per page: the ceiling of
 * any page-cache reader there, whatever the disk can do.
 */
static int
mem_fill(unsigned long mib)
{
	size_t n = (size_t)mib << 20;
	struct timespec t0, t1;
	double secs;
	void *p;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	p = mmap(NULL, n, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (p == MAP_FAILED) {
		fprintf(stderr, "plexmq-bench: --mem-fill: mmap %lu MiB: %s\n",
		    mib, strerror(errno));
		return 1;
	}
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("mem-fill %lu MiB: %.1f MB/s\n", mib,
	    secs > 0 ? (double)n / 1e6 / secs : 0.0);
	munmap(p, n);
	return 0;
}

int
main(int argc, char **argv)
{
	enum { O_TOPICS = 256, O_DRAIN, O_IDLE, O_ACKS, O_LINGER, O_BMSGS,
		O_BBYTES, O_GROUP, O_SEQ, O_PID, O_LABEL, O_CSV, O_JSON, O_QUIET,
		O_COMPARE, O_TARGET, O_ROUNDS, O_OUT, O_URL, O_TOPIC, O_CONLY,
		O_CLIENT, O_MEMFILL };
	static const struct option opts[] = {
		{ "url", required_argument, NULL, O_URL },
		{ "producers", required_argument, NULL, 'p' },
		{ "consumers", required_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 's' },
		{ "rate", required_argument, NULL, 'r' },
		{ "count", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "qos", required_argument, NULL, 'q' },
		{ "window", required_argument, NULL, 'w' },
		{ "topics", required_argument, NULL, O_TOPICS },
		{ "drain", required_argument, NULL, O_DRAIN },
		{ "idle-conns", required_argument, NULL, O_IDLE },
		{ "acks", required_argument, NULL, O_ACKS },
		{ "linger-ms", required_argument, NULL, O_LINGER },
		{ "batch-msgs", required_argument, NULL, O_BMSGS },
		{ "batch-bytes", required_argument, NULL, O_BBYTES },
		{ "group", no_argument, NULL, O_GROUP },
		{ "sequential", no_argument, NULL, O_SEQ },
		{ "topic", required_argument, NULL, O_TOPIC },
		{ "consume-only", no_argument, NULL, O_CONLY },
		{ "client", required_argument, NULL, O_CLIENT },
		{ "mem-fill", required_argument, NULL, O_MEMFILL },
		{ "broker-pid", required_argument, NULL, O_PID },
		{ "label", required_argument, NULL, O_LABEL },
		{ "csv", required_argument, NULL, O_CSV },
		{ "json", required_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "compare", no_argument, NULL, O_COMPARE },
		{ "target", required_argument, NULL, O_TARGET },
		{ "rounds", required_argument, NULL, O_ROUNDS },
		{ "out", required_argument, NULL, O_OUT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_cfg c = {
		.producers = 1, .consumers = 1, .window = 20, .msg_size = 100,
		.duration = 5, .topics = 1, .drain = 3, .acks = 1, .linger_ms = 5,
		.mqtt_version = 4,
	};
	struct target targets[MAX_TARGETS];
	const char *csv = NULL, *json = NULL, *out = "bench-compare", *url = NULL;
	int nt = 0, rounds = 3, do_compare = 0, ch;
	struct bench_result r;

	while ((ch = getopt_long(argc, argv, "p:c:s:r:n:d:q:w:h", opts, NULL)) != -1) {
		char *end = NULL;

		switch (ch) {
		case 'p': c.producers = (int)strtol(optarg, &end, 10); break;
		case 'c': c.consumers = (int)strtol(optarg, &end, 10); break;
		case 's': c.msg_size = strtoul(optarg, &end, 10); break;
		case 'r': c.rate = strtod(optarg, &end); break;
		case 'n': c.count = strtoull(optarg, &end, 10); break;
		case 'd': c.duration = strtod(optarg, &end); break;
		case 'q': c.qos = (int)strtol(optarg, &end, 10); break;
		case 'w': c.window = (int)strtol(optarg, &end, 10); break;
		case O_TOPICS: c.topics = (int)strtol(optarg, &end, 10); break;
		case O_DRAIN: c.drain = strtod(optarg, &end); break;
		case O_IDLE: c.idle_conns = (int)strtol(optarg, &end, 10); break;
		case O_ACKS:
			c.acks = strcmp(optarg, "all") == 0 ? -1 :
			    (int)strtol(optarg, &end, 10);
			break;
		case O_LINGER: c.linger_ms = (int)strtol(optarg, &end, 10); break;
		case O_BMSGS: c.batch_msgs = (int)strtol(optarg, &end, 10); break;
		case O_BBYTES: c.batch_bytes = (int)strtol(optarg, &end, 10); break;
		case O_GROUP: c.group = 1; break;
		case O_SEQ: c.sequential = 1; break;
		case O_TOPIC:
			if (!optarg[0] || strlen(optarg) >= sizeof(c.topic)) {
				fprintf(stderr, "plexmq-bench: --topic: 1..%zu bytes\n",
				    sizeof(c.topic) - 1);
				return 2;
			}
			snprintf(c.topic, sizeof(c.topic), "%s", optarg);
			break;
		case O_CONLY: c.consume_only = 1; break;
		case O_MEMFILL: {
			unsigned long mib = strtoul(optarg, &end, 10);

			if (*end || mib < 1 || mib > 65536) {
				fprintf(stderr, "plexmq-bench: --mem-fill: "
				    "1..65536 MiB\n");
				return 2;
			}
			return mem_fill(mib);
		}
		case O_CLIENT:
			if (strcmp(optarg, "mosquitto") == 0) {
#ifdef HAVE_LIBMOSQUITTO
				c.client_mosq = 1;
#else
				fprintf(stderr, "plexmq-bench: built without "
				    "libmosquitto (apt-get install "
				    "libmosquitto-dev, then configure again)\n");
				return 2;
#endif
			} else if (strcmp(optarg, "ev") != 0) {
				fprintf(stderr, "plexmq-bench: --client ev or "
				    "mosquitto\n");
				return 2;
			}
			break;
		case O_PID: c.broker_pid = strtol(optarg, &end, 10); break;
		case O_LABEL: snprintf(c.label, sizeof(c.label), "%s", optarg); break;
		case O_CSV: csv = optarg; break;
		case O_JSON: json = optarg; break;
		case O_QUIET: opt_quiet = 1; break;
		case O_COMPARE: do_compare = 1; break;
		case O_TARGET:
			if (nt == MAX_TARGETS || parse_target(optarg, &targets[nt]) < 0) {
				fprintf(stderr, "plexmq-bench: bad or too many --target %s\n", optarg);
				return 2;
			}
			nt++;
			break;
		case O_ROUNDS: rounds = (int)strtol(optarg, &end, 10); break;
		case O_OUT: out = optarg; break;
		case O_URL: url = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (end && *end) {
			fprintf(stderr, "plexmq-bench: bad number '%s'\n", optarg);
			return 2;
		}
	}
	if (c.producers < 1 || c.producers > 10000 || c.consumers < 0 ||
	    c.consumers > 10000 || c.msg_size < BENCH_HDR ||
	    c.msg_size > 64u * 1024 * 1024 || c.qos < 0 || c.qos > 2 ||
	    c.window < 1 || c.window > 65000 || c.topics < 1 || c.rate < 0 ||
	    c.duration <= 0 || c.drain <= 0 || rounds < 1 ||
	    rounds > MAX_ROUNDS || c.idle_conns < 0 || c.acks < -1 || c.acks > 1) {
		fprintf(stderr, "plexmq-bench: a value is out of range (see --help)\n");
		return 2;
	}
	/* Reading an earlier run's log needs to know what is in it. */
	if (c.consume_only && (!c.topic[0] || !c.count || c.consumers < 1)) {
		fprintf(stderr, "plexmq-bench: --consume-only needs --topic, "
		    "--count and at least one consumer\n");
		return 2;
	}
	if (do_compare) {
		if (nt < 1) {
			fprintf(stderr, "plexmq-bench: --compare needs --target\n");
			return 2;
		}
		return compare(&c, targets, nt, rounds, out, csv, json);
	}
	if (!url || parse_url(url, &c) < 0) {
		fprintf(stderr, "plexmq-bench: --url mqtt://|mqtt5://|tcp://|kafka://HOST:PORT needed\n");
		return 2;
	}
	if (c.idle_conns > 0 && c.proto != PROTO_MQTT) {
		fprintf(stderr, "plexmq-bench: --idle-conns needs an MQTT URL\n");
		return 2;
	}
	if (!c.label[0])
		snprintf(c.label, sizeof(c.label), "%s %dx%d %s%d", proto_name(&c),
		    c.producers, c.consumers,
		    c.proto == PROTO_KAFKA ? "acks" : "q",
		    c.proto == PROTO_KAFKA ? c.acks : c.qos);
	run_one(&c, &r);
	if (!opt_quiet)
		print_header();
	print_row(&r);
	if (csv)
		append_csv(csv, &c, &r);
	if (json)
		append_json(json, &c, &r);
	return r.failed || r.lost || r.dups ? 1 : 0;
}
