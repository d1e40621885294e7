#!/bin/sh
# scripts/run.sh [plexmqd args...] - quick start: install what is missing,
# build, and run plexmqd in the foreground from the build tree, with
# etc/plexmq.ini unless the arguments name another config (-c FILE).
# Stop it with Ctrl-C.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
cfg="$top/etc/plexmq.ini"
for a in "$@"; do
	case $a in -c|--config|--config=*) cfg= ;; esac
done
exec "$top/build/plexmqd" ${cfg:+-c "$cfg"} --plugin-dir "$top/build/plugins/.libs" "$@"
