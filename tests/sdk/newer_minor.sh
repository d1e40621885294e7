#!/bin/sh
# newer_minor.sh - the minor-version rule, both ways:
#   - tests/sdk/newer_minor: built against the next minor (longer
#     descriptor and ops table) but requiring only this host's minor: it
#     loads (--check-config and a running daemon) and serves.
#   - tests/zoo/bad_minor: requires the next minor: refused with one line
#     naming the file, the ABI it requires and the ABI this plexmqd has.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init newer-minor
pmq_need python3
newer="$top_builddir/tests/sdk/.libs/newer_minor.so"
bad="$top_builddir/tests/zoo/.libs/bad_minor.so"
[ -f "$newer" ] || pmq_skip "$newer not built (make check builds it)"
[ -f "$bad" ] || pmq_skip "$bad not built (make check builds it)"

major=$(sed -n 's/^#define PMQ_ABI_MAJOR \([0-9]*\).*/\1/p' "$top_srcdir/include/plexmq/version.h")
minor=$(sed -n 's/^#define PMQ_ABI_MINOR \([0-9]*\).*/\1/p' "$top_srcdir/include/plexmq/version.h")
next=$((minor + 1))

conf() { # conf PLUGIN
	cat >"$PMQ_TMP/plexmq.ini" <<CONF
[plexmqd]
data_dir = $PMQ_TMP/data

[listener x]
plugin = $1
listen = 127.0.0.1:0
CONF
}

# Refused: requires a newer minor.
conf "$bad"
"$PMQ_DAEMON" --check-config -c "$PMQ_TMP/plexmq.ini" \
    --plugin-dir "$PMQ_PLUGINS" >"$PMQ_TMP/bad.out" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -lt 124 ] || {
	cat "$PMQ_TMP/bad.out"; pmq_fail "bad_minor: exit $rc, want a refusal"; }
grep -F "bad_minor.so" "$PMQ_TMP/bad.out" |
    grep -q -F "requires ABI $major.$next, this plexmqd provides $major.$minor" || {
	cat "$PMQ_TMP/bad.out"; pmq_fail "bad_minor: no clear refusal line"; }
echo "ok: a plugin requiring ABI $major.$next is refused: $(grep -F bad_minor.so "$PMQ_TMP/bad.out" | head -n 1)"

# Loaded: built against a newer minor, requires ours.
conf "$newer"
"$PMQ_DAEMON" --check-config -c "$PMQ_TMP/plexmq.ini" \
    --plugin-dir "$PMQ_PLUGINS" >"$PMQ_TMP/newer.out" 2>&1 || {
	cat "$PMQ_TMP/newer.out"; pmq_fail "newer_minor refused by --check-config"; }
pmq_start "$PMQ_TMP/plexmq.ini"
grep -q -F "plugin newer_minor 1.0.0 (ABI $major.$next, requires $major.$minor) loaded" \
    "$PMQ_TMP/daemon.log" || pmq_fail "no load line for newer_minor"
grep -q -F "newer_minor: host ABI $major.$minor" "$PMQ_TMP/daemon.log" ||
    pmq_fail "newer_minor's init did not run"
port=$(pmq_port x)
[ -n "$port" ] || pmq_fail "no port for [listener x]"
python3 - "$port" <<'PY' || pmq_fail "newer_minor does not serve"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"hello\n")
buf = b""
while b"\n" not in buf:
    d = s.recv(100)
    if not d:
        break
    buf += d
assert buf == b"+PONG\n", buf
PY
echo "ok: a plugin built against ABI $major.$next requiring $major.$minor loads and serves"
pmq_stop || pmq_fail "plexmqd did not stop cleanly (exit $?)"
pmq_pass
