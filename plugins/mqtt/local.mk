# plugins/mqtt/local.mk - build of the mqtt plugin and its tests, included by
# the top Makefile.am (paths are relative to the top directory).
