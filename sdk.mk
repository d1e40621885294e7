# sdk.mk - the plugin SDK, included by the top Makefile.am (paths are
# relative to the top directory): what third parties build against
# (installed headers, plexmq-plugin.pc, man pages), the out-of-tree example
# plugin, and the tests that keep the ABI promise (docs/plugin-guide.md,
# abi/README.md).

pkgconfigdir = $(libdir)/pkgconfig
pkgconfig_DATA = plexmq-plugin.pc
dist_man_MANS = man/plexmqd.8 man/plexmq.ini.5

# A plugin that claims a newer minor than ours but requires only ours: it
# must load (tests/sdk/newer_minor.sh).
check_LTLIBRARIES += tests/sdk/newer_minor.la
tests_sdk_newer_minor_la_SOURCES = tests/sdk/newer_minor.c
tests_sdk_newer_minor_la_LDFLAGS = -module -avoid-version -shared \
	-rpath /nowhere -export-symbols-regex '^pmq_plugin_v[0-9]+$$'

SDK_TESTS = tests/sdk/headers.sh tests/sdk/symbols.sh tests/sdk/abi.sh \
	tests/sdk/old_headers.sh tests/sdk/newer_minor.sh \
	tests/sdk/out_of_tree.sh
TESTS += $(SDK_TESTS)

# The SDK tests compile plugins themselves, as a third party would, and
# install into a staging DESTDIR: they need our compiler, make and paths.
AM_TESTS_ENVIRONMENT += \
	PMQ_CC='$(CC)'; PMQ_MAKE='$(MAKE)'; PMQ_PREFIX='$(prefix)'; \
	PMQ_PKGCONFIGDIR='$(pkgconfigdir)'; \
	export PMQ_CC PMQ_MAKE PMQ_PREFIX PMQ_PKGCONFIGDIR;

SDK_FROZEN_1_0 = tests/abi/v1.0/plexmq/plexmq.h \
	tests/abi/v1.0/plexmq/version.h tests/abi/v1.0/plexmq/types.h \
	tests/abi/v1.0/plexmq/host.h tests/abi/v1.0/plexmq/plugin.h \
	tests/abi/v1.0/plexmq/transport.h tests/abi/v1.0/plexmq/storage.h \
	tests/abi/v1.0/minimal.c
SDK_FROZEN_1_1 = tests/abi/v1.1/plexmq/plexmq.h \
	tests/abi/v1.1/plexmq/version.h tests/abi/v1.1/plexmq/types.h \
	tests/abi/v1.1/plexmq/host.h tests/abi/v1.1/plexmq/plugin.h \
	tests/abi/v1.1/plexmq/transport.h tests/abi/v1.1/plexmq/storage.h
SDK_FROZEN_1_2 = tests/abi/v1.2/plexmq/plexmq.h \
	tests/abi/v1.2/plexmq/version.h tests/abi/v1.2/plexmq/types.h \
	tests/abi/v1.2/plexmq/host.h tests/abi/v1.2/plexmq/plugin.h \
	tests/abi/v1.2/plexmq/transport.h tests/abi/v1.2/plexmq/storage.h
EXTRA_DIST += sdk.mk docs/plugin-guide.md \
	examples/redis-pubsub/Makefile examples/redis-pubsub/README.md \
	examples/redis-pubsub/redis_pubsub.c \
	abi/README.md abi/plexmq-plugin-v1.abi abi/append-only.abignore \
	scripts/abi-check.sh tests/abi/probe.c $(SDK_FROZEN_1_0) $(SDK_FROZEN_1_1) \
	$(SDK_FROZEN_1_2) \
	$(SDK_TESTS)

# Rewrite the ABI baseline from the current headers: only when a new major
# starts (abi/README.md); within 1.x the baseline stays 1.0's.
abi-update:
	CC='$(CC)' $(SHELL) $(srcdir)/scripts/abi-check.sh --update
abi-check:
	CC='$(CC)' $(SHELL) $(srcdir)/scripts/abi-check.sh
.PHONY: abi-update abi-check
