#!/bin/sh
# symbols.sh - symbol hygiene: every plugin built in plugins/.libs exports
# exactly one defined dynamic symbol, the descriptor pmq_plugin_v1; plexmqd
# exports none of ours (no -rdynamic: plugins reach the host only through
# the API table), checked against every global symbol of the core library
# and against our name prefixes.
top_builddir=${top_builddir:-.}
daemon="$top_builddir/plexmqd"
plugins="$top_builddir/plugins/.libs"
core="$top_builddir/.libs/libpmqcore.a"

command -v nm >/dev/null 2>&1 || { echo "SKIP: nm not found"; exit 77; }
[ -x "$daemon" ] || { echo "SKIP: $daemon not built"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-symbols.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
failures=0

n=0
for so in "$plugins"/*.so; do
	[ -f "$so" ] || continue
	n=$((n + 1))
	nm -D --defined-only "$so" | awk '{ print $NF }' | sort >"$tmp/syms"
	if [ "$(cat "$tmp/syms")" = "pmq_plugin_v1" ]; then
		echo "ok: $(basename "$so") exports only pmq_plugin_v1"
	else
		echo "FAIL: $(basename "$so") exports:"
		sed 's/^/  /' "$tmp/syms"
		failures=$((failures + 1))
	fi
done
[ "$n" -ge 2 ] || { echo "FAIL: only $n plugins in $plugins"; exit 1; }

nm -D --defined-only "$daemon" | awk '{ print $NF }' | sort -u >"$tmp/daemon"
# Our prefixes: the ABI's pmq_ and the core's modules (module_verb).
bad=$(grep -E '^(pmq_|router_|conn_|listener_|loader_|config_|logs_|state_|storage_|batch_|topic_|retain_|msg_|host_|daemon_|util_|log_)' "$tmp/daemon")
if [ -n "$bad" ]; then
	echo "FAIL: plexmqd exports our symbols:"
	echo "$bad" | sed 's/^/  /'
	failures=$((failures + 1))
fi
if [ -f "$core" ]; then
	nm -g --defined-only "$core" 2>/dev/null | awk 'NF == 3 { print $3 }' |
	    sort -u >"$tmp/core"
	[ -s "$tmp/core" ] || { echo "FAIL: no symbols read from $core"; exit 1; }
	both=$(comm -12 "$tmp/core" "$tmp/daemon")
	if [ -n "$both" ]; then
		echo "FAIL: plexmqd exports core symbols:"
		echo "$both" | sed 's/^/  /'
		failures=$((failures + 1))
	else
		echo "ok: plexmqd exports none of the $(wc -l <"$tmp/core") core symbols"
	fi
else
	echo "note: $core not found; checked prefixes only"
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
exit 0
