# plugins/lmdb/local.mk - build of the lmdb plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
