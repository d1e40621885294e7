/*
 * fuzz_mqtt.c - libFuzzer target for plugins/mqtt/codec.c: frames the
 * input as a stream of MQTT packets and decodes each as every protocol
 * version would see it (CONNECT stage, 3.1.1, 5), walking subscription
 * entries and user properties of what decodes.  The decoder must never
 * read out of bounds, leak or crash, whatever the bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <plexmq/types.h>

#include "../../plugins/mqtt/codec.h"

static void
walk(const struct mqtt_packet *p)
{
	struct mqtt_bin a, b;
	size_t pos = 0;
	uint8_t o;

	if (p->type == MQTT_SUBSCRIBE || p->type == MQTT_UNSUBSCRIBE)
		while (mqtt_sub_next(p, &pos, &a, &o))
			(void)mqtt_filter_valid(a.p, a.len);
	pos = 0;
	while (mqtt_user_next(&p->props, &pos, &a, &b))
		;
	pos = 0;
	while (mqtt_user_next(&p->will_props, &pos, &a, &b))
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t versions[] = { 0, MQTT_V31, MQTT_V311, MQTT_V5 };
	size_t off = 0;

	while (off < size) {
		struct mqtt_packet p;
		size_t total = 0;
		uint8_t reason;
		size_t i;

		if (mqtt_frame(data + off, size - off, 0, &total, &reason) !=
		        PMQ_OK ||
		    total > size - off)
			break;
		for (i = 0; i < sizeof versions; i++)
			if (mqtt_decode(data + off, total, versions[i], &p,
			                &reason) == PMQ_OK)
				walk(&p);
		off += total;
	}
	return 0;
}
