# tests/crash/local.mk - the crash tests (kill -9 and simulated power
# loss), included by the top Makefile.am; paths are relative to the top
# directory.  docs/crash-testing.md explains them.

# The power-cut shim, preloaded into plexmqd by powercut_tcp.sh.  Built
# without the sanitizer flags: it is preloaded ahead of everything.
check_LTLIBRARIES += tests/crash/powercut.la
tests_crash_powercut_la_SOURCES = tests/crash/powercut.c
tests_crash_powercut_la_CFLAGS = $(PMQ_CFLAGS) -pthread
tests_crash_powercut_la_LDFLAGS = -module -avoid-version -shared \
	-rpath /nowhere
tests_crash_powercut_la_LIBADD = -ldl

# The shim's own test: write, fsync some, cut, check what is left.
check_PROGRAMS += tests/crash/test_powercut
tests_crash_test_powercut_SOURCES = tests/crash/test_powercut.c
tests_crash_test_powercut_CFLAGS = $(PMQ_CFLAGS) -pthread \
	-DPC_SHIM='"$(abs_top_builddir)/tests/crash/.libs/powercut.so"'
tests_crash_test_powercut_LDFLAGS = -pthread

CRASH_TESTS_SH = tests/crash/crash_tcp.sh tests/crash/powercut_tcp.sh \
	tests/crash/crash_mqtt.sh tests/crash/crash_kafka.sh
TESTS += tests/crash/test_powercut $(CRASH_TESTS_SH)
EXTRA_DIST += $(CRASH_TESTS_SH) tests/crash/lib.sh tests/crash/client.py \
	tests/crash/kafka_crash.js \
	docs/crash-testing.md

# Storage on a read-only data dir (file and lmdb; a bind mount, skipped
# where mounts are not permitted).
TESTS += tests/integration/storage_readonly.sh tests/crash/crash_mqtt_session.sh
EXTRA_DIST += tests/integration/storage_readonly.sh \
	tests/crash/crash_mqtt_session.sh

# Acks of persistent MQTT sessions (SUBACK, PUBREC) wait for their writes.
TESTS += tests/crash/crash_mqtt_acks.sh
EXTRA_DIST += tests/crash/crash_mqtt_acks.sh
