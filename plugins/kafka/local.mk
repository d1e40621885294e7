# plugins/kafka/local.mk - build of the kafka plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
