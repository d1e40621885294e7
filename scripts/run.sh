#!/bin/sh
# scripts/run.sh [plexmqd args...] - quick start: install what is missing,
# build, and run plexmqd in the foreground with etc/plexmq.ini from the
# build tree.  Stop it with Ctrl-C.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
"$top/scripts/build.sh"
cd "$top/build"
exec ./plexmqd -c "$top/etc/plexmq.ini" --plugin-dir plugins/.libs "$@"
