# plugins/file/local.mk - build of the file plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
plugin_LTLIBRARIES += plugins/file.la
plugins_file_la_SOURCES = plugins/file/file.c plugins/file/file.h \
	plugins/file/segment.c plugins/file/journal.c plugins/file/util.c \
	plugins/common/storecfg.c plugins/common/storecfg.h
plugins_file_la_LDFLAGS = $(AM_LDFLAGS) $(PLUGIN_LDFLAGS)
plugins_file_la_LIBADD = -lpthread

dist_sysconf_DATA += etc/file.ini
EXTRA_DIST += docs/storage-file.md

if HAVE_CMOCKA
UNIT_TESTS += tests/unit/test_storage_file
check_PROGRAMS += tests/unit/test_storage_file
TESTS += tests/unit/test_storage_file
tests_unit_test_storage_file_SOURCES = tests/unit/test_storage.c
tests_unit_test_storage_file_CFLAGS = $(UNIT_CFLAGS) -DSTORAGE_PLUGIN='"file"' -DSTORAGE_FILE
tests_unit_test_storage_file_LDADD = $(UNIT_LDADD)
endif

# Disk full on a small tmpfs (skipped where mounting is not permitted).
TESTS += tests/integration/file_diskfull.sh
EXTRA_DIST += tests/integration/file_diskfull.sh

# Disk full through the MQTT v5 and Kafka transports (same skips).
TESTS += tests/integration/diskfull_protocols.sh
EXTRA_DIST += tests/integration/diskfull_protocols.sh
