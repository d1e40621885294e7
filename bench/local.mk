# bench/local.mk - plexmq-bench (the load tool, installed) and `make bench`
# (the standard suite, bench/run-suite.sh), included by the top Makefile.am;
# paths are relative to the top directory.  The tool needs librdkafka and
# is built only when configure found it (HAVE_BENCH).
if HAVE_BENCH
bin_PROGRAMS = bench/plexmq-bench
bench_plexmq_bench_SOURCES = bench/main.c bench/stats.c bench/evclient.c \
	bench/kafka.c bench/bench.h
bench_plexmq_bench_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(RDKAFKA_CFLAGS)
bench_plexmq_bench_LDADD = $(LIBEVENT_LIBS) $(RDKAFKA_LIBS) -lpthread
if HAVE_LIBMOSQUITTO
bench_plexmq_bench_SOURCES += bench/mosq.c
bench_plexmq_bench_CFLAGS += $(MOSQUITTO_CFLAGS)
bench_plexmq_bench_LDADD += $(MOSQUITTO_LIBS)
endif

# A short functional smoke test of the tool (zero loss at a low rate),
# never a timed benchmark.
TESTS_SH += tests/integration/bench_smoke.sh
endif
EXTRA_DIST += bench/mosq.c bench/run-suite.sh bench/report.py bench/profile.md docs/benchmarks.md \
	tests/integration/bench_smoke.sh

# The standard suite: starts its own plexmqd and mosquitto on free loopback
# ports and rewrites docs/benchmarks.md (takes about 10 minutes).
# `make bench ONLY="coldread durable"` re-runs some workloads and writes a
# partial report to /tmp instead (see bench/run-suite.sh).
bench: all
	BUILDDIR='$(abs_top_builddir)' sh $(srcdir)/bench/run-suite.sh
.PHONY: bench
