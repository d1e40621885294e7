# plugins/file/local.mk - build of the file plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
