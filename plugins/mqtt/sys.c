/*
 * sys.c - $SYS/broker/... topics in the manner of Mosquitto: broker
 * version, uptime, clients, messages, bytes, subscriptions and retained
 * counts, published as retained QoS 0 messages every sys_interval seconds
 * (0 disables) by the first mqtt listener that asks for them.  A value is
 * published only when it changed, so an idle broker writes nothing.
 * Published with PMQ_PUB_NO_LOG: $SYS never lands in a log, whatever the
 * topic rules say.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mqtt.h"

#define api mqtt_api

/* The listener whose timer runs $SYS (one per process). */
static struct mqtt_listener *owner;
static pmq_timer *timer;

enum {
	SYS_VERSION, SYS_UPTIME, SYS_CONNECTED, SYS_DISCONNECTED, SYS_TOTAL,
	SYS_CONN_TOTAL, SYS_MSG_RECEIVED, SYS_MSG_SENT, SYS_MSG_DROPPED,
	SYS_PUB_RECEIVED, SYS_PUB_SENT, SYS_BYTES_RECEIVED, SYS_BYTES_SENT,
	SYS_SUBS, SYS_RETAINED, SYS_STORED, SYS_N
};

static const char *const sys_topics[SYS_N] = {
	[SYS_VERSION] = "$SYS/broker/version",
	[SYS_UPTIME] = "$SYS/broker/uptime",
	[SYS_CONNECTED] = "$SYS/broker/clients/connected",
	[SYS_DISCONNECTED] = "$SYS/broker/clients/disconnected",
	[SYS_TOTAL] = "$SYS/broker/clients/total",
	[SYS_CONN_TOTAL] = "$SYS/broker/connections/total",
	[SYS_MSG_RECEIVED] = "$SYS/broker/messages/received",
	[SYS_MSG_SENT] = "$SYS/broker/messages/sent",
	[SYS_MSG_DROPPED] = "$SYS/broker/messages/dropped",
	[SYS_PUB_RECEIVED] = "$SYS/broker/publish/messages/received",
	[SYS_PUB_SENT] = "$SYS/broker/publish/messages/sent",
	[SYS_BYTES_RECEIVED] = "$SYS/broker/bytes/received",
	[SYS_BYTES_SENT] = "$SYS/broker/bytes/sent",
	[SYS_SUBS] = "$SYS/broker/subscriptions/count",
	[SYS_RETAINED] = "$SYS/broker/retained messages/count",
	[SYS_STORED] = "$SYS/broker/store/messages/count",
};

static char last[SYS_N][48];

static void
sys_publish(int i, const char *val)
{
	struct pmq_msg_fields f = { .size = sizeof f };
	pmq_msg *m;
	int err;

	if (strcmp(last[i], val) == 0)
		return;
	snprintf(last[i], sizeof last[i], "%s", val);
	f.topic = sys_topics[i];
	f.topic_len = strlen(f.topic);
	f.payload = val;
	f.payload_len = strlen(val);
	f.retain = 1;
	m = api->msg_new(&f, &err);
	if (m == NULL)
		return;
	api->publish(NULL, m, PMQ_PUB_NO_LOG, NULL, NULL);
	api->msg_unref(m);
}

static void
sys_u64(int i, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof buf, "%" PRIu64, v);
	sys_publish(i, buf);
}

static void
sys_tick(void *arg)
{
	struct pmq_stats st = { .size = sizeof st };
	uint64_t total, offline;
	char buf[48];

	(void)arg;
	api->stats(&st);
	sessions_count(&total, &offline);
	sys_publish(SYS_VERSION, "plexmq mqtt " MQTT_PLUGIN_VERSION);
	snprintf(buf, sizeof buf, "%" PRId64 " seconds", st.uptime_s);
	sys_publish(SYS_UPTIME, buf);
	sys_u64(SYS_CONNECTED, mqtt_stat_connected);
	sys_u64(SYS_DISCONNECTED, offline);
	sys_u64(SYS_TOTAL, total);
	sys_u64(SYS_CONN_TOTAL, st.connections_total);
	sys_u64(SYS_MSG_RECEIVED, st.msgs_in);
	sys_u64(SYS_MSG_SENT, st.msgs_out);
	sys_u64(SYS_MSG_DROPPED, st.dropped);
	sys_u64(SYS_PUB_RECEIVED, mqtt_stat_msgs_received);
	sys_u64(SYS_PUB_SENT, mqtt_stat_msgs_sent);
	sys_u64(SYS_BYTES_RECEIVED, st.bytes_in);
	sys_u64(SYS_BYTES_SENT, st.bytes_out);
	sys_u64(SYS_SUBS, st.subscriptions);
	sys_u64(SYS_RETAINED, st.retained);
	sys_u64(SYS_STORED, st.retained);
}

void
sys_start(struct mqtt_listener *l)
{
	if (owner != NULL || l->sys_interval_s == 0)
		return;
	timer = api->timer_new(sys_tick, NULL);
	if (timer == NULL) {
		api->log(l->inst, PMQ_LOG_WARN, "$SYS: no timer; disabled");
		return;
	}
	owner = l;
	memset(last, 0, sizeof last);
	sys_tick(NULL);
	api->timer_start(timer, (uint64_t)l->sys_interval_s * 1000, 1);
}

void
sys_stop(struct mqtt_listener *l)
{
	if (owner != l)
		return;
	api->timer_free(timer);
	timer = NULL;
	owner = NULL;
}
