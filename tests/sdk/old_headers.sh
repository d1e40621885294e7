#!/bin/sh
# old_headers.sh - a plugin compiled only against the frozen ABI 1.0
# headers (tests/abi/v1.0/) keeps loading and working in the current
# plexmqd: it is built here with -I tests/abi/v1.0 and nothing else from
# the tree, accepted by --check-config, then serves pub/sub in a running
# daemon (driven by python3).
. "$top_srcdir/tests/integration/lib.sh"
pmq_init old-headers
pmq_need python3
CC=${PMQ_CC:-cc}
src="$top_srcdir/tests/abi/v1.0"
so="$PMQ_TMP/minimal.so"

"$CC" -std=c11 -Wall -Wextra -Werror -fPIC -fvisibility=hidden -shared \
    -Wl,-z,defs -I"$src" -o "$so" "$src/minimal.c" >"$PMQ_TMP/cc.out" 2>&1 || {
	cat "$PMQ_TMP/cc.out"; pmq_fail "minimal.c does not build against the 1.0 headers"; }
[ "$(nm -D --defined-only "$so" | awk '{ print $NF }')" = pmq_plugin_v1 ] ||
    pmq_fail "minimal.so exports more than pmq_plugin_v1"

cat >"$PMQ_TMP/plexmq.ini" <<CONF
[plexmqd]
data_dir = $PMQ_TMP/data

[listener mini]
plugin = $so
listen = 127.0.0.1:0
CONF

"$PMQ_DAEMON" --check-config -c "$PMQ_TMP/plexmq.ini" \
    --plugin-dir "$PMQ_PLUGINS" >"$PMQ_TMP/check.out" 2>&1 || {
	cat "$PMQ_TMP/check.out"; pmq_fail "--check-config refused the 1.0 plugin"; }

pmq_start "$PMQ_TMP/plexmq.ini"
grep -q 'plugin minimal-1.0 1.0.0 (ABI 1.0, requires 1.0) loaded' \
    "$PMQ_TMP/daemon.log" || pmq_fail "no load line for the 1.0 plugin"
port=$(pmq_port mini)
[ -n "$port" ] || pmq_fail "no port for [listener mini]"

python3 - "$port" <<'PY' || pmq_fail "the 1.0 plugin does not work"
import socket, sys, time
port = int(sys.argv[1])

def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s

def lines(s, n):
    buf = b""
    deadline = time.monotonic() + 5
    while buf.count(b"\n") < n and time.monotonic() < deadline:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.split(b"\n")[:n]

a, b = conn(), conn()
a.sendall(b"SUB news/#\nPING\n")
got = lines(a, 2)
assert got == [b"+OK", b"+PONG"], got
b.sendall(b"PUB news/today hello old plugin\n")
got = lines(b, 1)
assert got == [b"+OK 1"], got
got = lines(a, 1)
assert got == [b"MSG news/today hello old plugin"], got
print("ok: the 1.0 plugin serves pub/sub")
PY
pmq_stop || pmq_fail "plexmqd did not stop cleanly"
pmq_pass
