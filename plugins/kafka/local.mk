# plugins/kafka/local.mk - build of the kafka plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).

plugin_LTLIBRARIES += plugins/kafka.la
plugins_kafka_la_SOURCES = plugins/kafka/kafka.c plugins/kafka/kafka.h \
	plugins/kafka/codec.c plugins/kafka/codec.h \
	plugins/kafka/handlers.c plugins/kafka/group.c
plugins_kafka_la_LDFLAGS = $(AM_LDFLAGS) $(PLUGIN_LDFLAGS)

EXTRA_DIST += docs/kafka.md

if HAVE_CMOCKA
# UNIT_TESTS is already in check_PROGRAMS and TESTS (Makefile.am).
UNIT_TESTS += tests/unit/test_kafka_codec
tests_unit_test_kafka_codec_SOURCES = tests/unit/test_kafka_codec.c \
	plugins/kafka/codec.c plugins/kafka/codec.h
tests_unit_test_kafka_codec_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/plugins/kafka
tests_unit_test_kafka_codec_LDADD = $(UNIT_LDADD)
endif

# libFuzzer target for the request decoder (make fuzz-run).
FUZZ_TARGETS += fuzz/fuzz_kafka
KAFKA_FUZZ_CORPUS = tests/fuzz/corpus/fuzz_kafka/api_versions_v0 \
	tests/fuzz/corpus/fuzz_kafka/api_versions_v3 \
	tests/fuzz/corpus/fuzz_kafka/create_topics_v4 \
	tests/fuzz/corpus/fuzz_kafka/fetch_v11 \
	tests/fuzz/corpus/fuzz_kafka/init_pid_v1 \
	tests/fuzz/corpus/fuzz_kafka/join_v5 \
	tests/fuzz/corpus/fuzz_kafka/leave_v3 \
	tests/fuzz/corpus/fuzz_kafka/list_offsets_v5 \
	tests/fuzz/corpus/fuzz_kafka/metadata_v4_all \
	tests/fuzz/corpus/fuzz_kafka/metadata_v8_one \
	tests/fuzz/corpus/fuzz_kafka/offset_commit_v7 \
	tests/fuzz/corpus/fuzz_kafka/offset_fetch_v5_all \
	tests/fuzz/corpus/fuzz_kafka/produce_v7 \
	tests/fuzz/corpus/fuzz_kafka/sync_v3
EXTRA_DIST += tests/fuzz/fuzz_kafka.c $(KAFKA_FUZZ_CORPUS)
fuzz/fuzz_kafka: $(srcdir)/tests/fuzz/fuzz_kafka.c $(srcdir)/plugins/kafka/codec.c
	$(FUZZ_BUILD) -I$(srcdir)/plugins/kafka $^

# ---- integration tests (kafka) ----
# Each skips (77) until plugins/.libs/kafka.so is built; kafka_restart.sh
# also needs file.so, kafka_mqtt.sh mqtt.so.  Owned by the kafka tests.
TESTS_SH += tests/integration/kafka_basic.sh \
	tests/integration/kafka_bad.sh \
	tests/integration/kafka_group.sh \
	tests/integration/kafka_admin.sh \
	tests/integration/kafka_restart.sh \
	tests/integration/kafka_mqtt.sh \
	tests/integration/kafka_config.sh \
	tests/integration/kafka_ephemeral.sh
EXTRA_DIST += tests/integration/kafka_lib.sh \
	tests/node/kafka_group.js tests/node/kafka_admin.js \
	etc/kafka.ini etc/both.ini docs/kafka-tests.md
