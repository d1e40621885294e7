# plugins/lmdb/local.mk - build of the lmdb plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
EXTRA_DIST += docs/storage-lmdb.md

if HAVE_LMDB
plugin_LTLIBRARIES += plugins/lmdb.la
plugins_lmdb_la_SOURCES = plugins/lmdb/lmdb.c \
	plugins/common/storecfg.c plugins/common/storecfg.h
plugins_lmdb_la_CFLAGS = $(AM_CFLAGS) $(LMDB_CFLAGS)
plugins_lmdb_la_LDFLAGS = $(AM_LDFLAGS) $(PLUGIN_LDFLAGS)
plugins_lmdb_la_LIBADD = $(LMDB_LIBS) -lpthread
dist_sysconf_DATA += etc/lmdb.ini

if HAVE_CMOCKA
# The storage conformance suite, plus the lmdb-only cases it compiles in
# with STORAGE_LMDB (group commit, pending-write overlay, full map, fsync
# modes, config).  UNIT_TESTS is already in check_PROGRAMS and TESTS.
UNIT_TESTS += tests/unit/test_storage_lmdb
tests_unit_test_storage_lmdb_SOURCES = tests/unit/test_storage.c
tests_unit_test_storage_lmdb_CFLAGS = $(UNIT_CFLAGS) \
	-DSTORAGE_PLUGIN='"lmdb"' -DSTORAGE_LMDB=1
tests_unit_test_storage_lmdb_LDADD = $(UNIT_LDADD)
endif
endif
