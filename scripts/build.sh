#!/bin/sh
# scripts/build.sh [BUILDDIR [configure args...]] - generate, configure
# (once) and build plexmq out of tree in BUILDDIR (default: build/).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
bdir=${1:-$top/build}
[ $# -gt 0 ] && shift
mkdir -p "$bdir"
cd "$bdir"
if [ ! -f Makefile ]; then
	# configure's own "rm: cannot remove 'core'" (our core/ directory) is
	# noise; keep its output in a file and show it only on failure.
	"$top/configure" --enable-werror "$@" >configure.out 2>&1 || {
		tail -n 20 configure.out >&2
		echo "build: configure failed; see $bdir/config.log" >&2; exit 1; }
fi
make -j"$(nproc)" >/dev/null
