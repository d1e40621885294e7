# plugins/mqtt/local.mk - build of the mqtt plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
plugin_LTLIBRARIES += plugins/mqtt.la
plugins_mqtt_la_SOURCES = plugins/mqtt/mqtt.c plugins/mqtt/mqtt.h \
	plugins/mqtt/codec.c plugins/mqtt/codec.h \
	plugins/mqtt/session.c plugins/mqtt/sys.c
plugins_mqtt_la_LDFLAGS = $(AM_LDFLAGS) $(PLUGIN_LDFLAGS)

if HAVE_CMOCKA
UNIT_TESTS += tests/unit/test_mqtt_codec
tests_unit_test_mqtt_codec_SOURCES = tests/unit/test_mqtt_codec.c \
	plugins/mqtt/codec.c plugins/mqtt/codec.h
tests_unit_test_mqtt_codec_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_mqtt_codec_LDADD = $(CMOCKA_LIBS)
endif

EXTRA_DIST += docs/mqtt.md tests/fuzz/fuzz_mqtt.c $(MQTT_FUZZ_CORPUS)
MQTT_FUZZ_CORPUS = tests/fuzz/corpus/fuzz_mqtt/connect311 \
	tests/fuzz/corpus/fuzz_mqtt/connect31 \
	tests/fuzz/corpus/fuzz_mqtt/connect5_will \
	tests/fuzz/corpus/fuzz_mqtt/publish_props \
	tests/fuzz/corpus/fuzz_mqtt/publish_qos2 \
	tests/fuzz/corpus/fuzz_mqtt/subscribe \
	tests/fuzz/corpus/fuzz_mqtt/subscribe5

FUZZ_TARGETS += fuzz/fuzz_mqtt
fuzz/fuzz_mqtt: $(srcdir)/tests/fuzz/fuzz_mqtt.c $(srcdir)/plugins/mqtt/codec.c
	$(FUZZ_BUILD) $^

# ---- integration tests (mqtt) ----
# Each runs the same clients against plexmqd and a private Mosquitto (when
# installed) and compares deliveries; without mqtt.so they SKIP.
TESTS_SH += tests/integration/mqtt_basic.sh \
	tests/integration/mqtt_session.sh \
	tests/integration/mqtt_v5.sh \
	tests/integration/mqtt_config.sh \
	tests/integration/mqtt_limits.sh \
	tests/integration/mqtt_features.sh \
	tests/integration/mqtt_persist.sh \
	tests/integration/mqtt_flow.sh
EXTRA_DIST += tests/integration/mqtt_lib.sh tests/node/mqtt_v5.js \
	etc/mosquitto.ini docs/mqtt-compat.md
