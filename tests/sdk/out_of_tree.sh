#!/bin/sh
# out_of_tree.sh - the SDK as a third party sees it: `make install
# DESTDIR=stage` installs the headers, plexmq-plugin.pc and the man pages;
# examples/redis-pubsub is copied out of the tree and built with its own
# Makefile from the staged SDK only (pkg-config --cflags plexmq-plugin,
# -Wl,-z,defs); plexmqd from the build tree loads it by path, and the real
# client, redis-cli, drives it: PING, SUBSCRIBE/PUBLISH, PSUBSCRIBE with
# glob patterns.  A python3 client checks the protocol details redis-cli
# hides (counts, UNSUBSCRIBE/PUNSUBSCRIBE, errors, inline commands) and
# that a Redis PUBLISH reaches a tcp subscriber.
#
# The .pc file names the configured prefix, not the DESTDIR: pkg-config is
# pointed at the stage with PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR.
. "$top_srcdir/tests/integration/lib.sh"
pmq_init out-of-tree
pmq_need python3 pkg-config
MAKE=${PMQ_MAKE:-make}
prefix=${PMQ_PREFIX:-/usr/local}
pcdir=${PMQ_PKGCONFIGDIR:-$prefix/lib/pkgconfig}
stage="$PMQ_TMP/stage"

# 1. Install into the stage (a sub-make of this build tree: keep it out of
# the parent's jobserver).
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $MAKE -C "$top_builddir" install \
    DESTDIR="$stage" >"$PMQ_TMP/install.out" 2>&1 || {
	tail -n 30 "$PMQ_TMP/install.out"; pmq_fail "make install DESTDIR failed"; }
for h in plexmq.h version.h types.h host.h plugin.h transport.h storage.h; do
	[ -f "$stage$prefix/include/plexmq/$h" ] || pmq_fail "not installed: include/plexmq/$h"
done
[ -f "$stage$pcdir/plexmq-plugin.pc" ] || pmq_fail "not installed: $pcdir/plexmq-plugin.pc"
for m in man8/plexmqd.8 man5/plexmq.ini.5; do
	f=$(find "$stage" -path "*/man/$m" | head -n 1)
	[ -n "$f" ] || pmq_fail "man page $m not installed"
done
echo "ok: make install DESTDIR staged headers, plexmq-plugin.pc and man pages"

# 2. What the .pc says.
PKG_CONFIG_PATH="$stage$pcdir"
PKG_CONFIG_SYSROOT_DIR="$stage"
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
cflags=$(pkg-config --cflags plexmq-plugin) || pmq_fail "pkg-config cannot find plexmq-plugin"
cflags=$(echo $cflags) # pkgconf ends the line with a blank
[ "$cflags" = "-I$stage$prefix/include" ] ||
    pmq_fail "Cflags are '$cflags', want -I$stage$prefix/include"
[ -z "$(pkg-config --libs plexmq-plugin)" ] || pmq_fail "Libs is not empty"
hmaj=$(sed -n 's/^#define PMQ_ABI_MAJOR \([0-9]*\).*/\1/p' "$top_srcdir/include/plexmq/version.h")
hmin=$(sed -n 's/^#define PMQ_ABI_MINOR \([0-9]*\).*/\1/p' "$top_srcdir/include/plexmq/version.h")
[ "$(pkg-config --variable=abi_major plexmq-plugin)" = "$hmaj" ] || pmq_fail "abi_major"
[ "$(pkg-config --variable=abi_minor plexmq-plugin)" = "$hmin" ] || pmq_fail "abi_minor"
pdir=$(pkg-config --variable=plugindir plexmq-plugin)
[ -d "$pdir" ] || pmq_fail "plugindir $pdir is not the staged plugin directory"
echo "ok: plexmq-plugin.pc: $cflags, ABI $hmaj.$hmin, plugindir $pdir"

# 3. Build the example outside the tree with its own Makefile.
ex="$PMQ_TMP/redis-pubsub"
mkdir "$ex" || exit 1
cp "$top_srcdir/examples/redis-pubsub/Makefile" \
   "$top_srcdir/examples/redis-pubsub/redis_pubsub.c" "$ex/" || exit 1
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $MAKE -C "$ex" \
    CC="${PMQ_CC:-cc}" CFLAGS="-O2 -g -Werror" >"$PMQ_TMP/ex.out" 2>&1 || {
	cat "$PMQ_TMP/ex.out"; pmq_fail "the example does not build from the staged SDK"; }
grep -q -e "-Wl,-z,defs" "$PMQ_TMP/ex.out" || pmq_fail "example not linked with -z defs"
so="$ex/redis_pubsub.so"
[ "$(nm -D --defined-only "$so" | awk '{ print $NF }')" = pmq_plugin_v1 ] ||
    pmq_fail "redis_pubsub.so exports more than pmq_plugin_v1"
echo "ok: examples/redis-pubsub built out of tree with only pkg-config"

# 4. Load it into plexmqd (with a tcp listener for the cross-protocol case).
cat >"$PMQ_TMP/plexmq.ini" <<CONF
[plexmqd]
data_dir = $PMQ_TMP/data

[listener redis]
plugin = $so
listen = 127.0.0.1:0
max_subscriptions = 4

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0
CONF
"$PMQ_DAEMON" --check-config -c "$PMQ_TMP/plexmq.ini" \
    --plugin-dir "$PMQ_PLUGINS" >"$PMQ_TMP/check.out" 2>&1 || {
	cat "$PMQ_TMP/check.out"; pmq_fail "--check-config refused the example"; }
pmq_start "$PMQ_TMP/plexmq.ini"
grep -q "plugin redis_pubsub 1.0.0 (ABI $hmaj.$hmin, requires $hmaj.$hmin) loaded from $so" \
    "$PMQ_TMP/daemon.log" || pmq_fail "no load line for redis_pubsub"
port=$(pmq_port redis)
tport=$(pmq_port tcp)
[ -n "$port" ] && [ -n "$tport" ] || pmq_fail "no ports"

# 5. The protocol details, with a raw RESP client.
python3 - "$port" "$tport" <<'PY' || pmq_fail "protocol checks"
import socket, sys, time
port, tport = int(sys.argv[1]), int(sys.argv[2])

class R:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(4096)
            assert d, "connection closed; have %r" % self.buf
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l
    def reply(self):
        l = self.line()
        t, rest = l[:1], l[1:]
        if t in (b"+", b"-"):
            return l
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(4096)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise AssertionError("bad reply %r" % l)

def eq(got, want, what):
    assert got == want, "%s: got %r, want %r" % (what, got, want)

a, b = R(), R()
b.send("PING"); eq(b.reply(), b"+PONG", "ping")
b.send("PING", "hi"); eq(b.reply(), b"hi", "ping msg")
b.s.sendall(b"PING\r\n"); eq(b.reply(), b"+PONG", "inline ping")
b.s.sendall(b"ping there\n"); eq(b.reply(), b"there", "inline ping msg")
b.send("GET", "k"); assert b.reply().startswith(b"-ERR unknown command 'GET'")
b.send("PUBLISH", "x"); eq(b.reply(), b"-ERR wrong number of arguments for 'publish' command", "arity")
b.send("PUBLISH", "a/+", "v"); assert b.reply().startswith(b"-ERR invalid channel")

# Counts: channels + patterns; two channels in one command, two replies.
a.send("SUBSCRIBE", "ch1", "ch2")
eq(a.reply(), [b"subscribe", b"ch1", 1], "sub ch1")
eq(a.reply(), [b"subscribe", b"ch2", 2], "sub ch2")
a.send("SUBSCRIBE", "ch1"); eq(a.reply(), [b"subscribe", b"ch1", 2], "sub twice")
a.send("PSUBSCRIBE", "ch?"); eq(a.reply(), [b"psubscribe", b"ch?", 3], "psub")
a.send("PUBLISH", "ch1", "v"); assert a.reply().startswith(b"-ERR Can't execute 'PUBLISH'")
a.send("PING"); eq(a.reply(), [b"pong", b""], "ping while subscribed")
a.send("SUBSCRIBE", "x+y"); assert a.reply().startswith(b"-ERR invalid channel")
a.send("SUBSCRIBE", "c3", "c4")
eq(a.reply(), [b"subscribe", b"c3", 4], "sub c3")
assert a.reply().startswith(b"-ERR too many subscriptions"), "max_subscriptions"
a.send("UNSUBSCRIBE", "c3"); eq(a.reply(), [b"unsubscribe", b"c3", 3], "unsub c3")

# Channel and pattern both match ch1: two messages, and PUBLISH counts 2.
b.send("PUBLISH", "ch1", "one"); eq(b.reply(), 2, "receivers of ch1")
got = sorted([a.reply(), a.reply()])
eq(got, [[b"message", b"ch1", b"one"], [b"pmessage", b"ch?", b"ch1", b"one"]], "deliveries")
# The pattern's filter is "#": a topic it does not match counts nothing.
b.send("PUBLISH", "other", "no"); eq(b.reply(), 0, "receivers of other")
b.send("PUBLISH", "ch9", "nine"); eq(b.reply(), 1, "receivers of ch9")
eq(a.reply(), [b"pmessage", b"ch?", b"ch9", b"nine"], "pattern only")

a.send("PUNSUBSCRIBE"); eq(a.reply(), [b"punsubscribe", b"ch?", 2], "punsub all")
a.send("PUNSUBSCRIBE"); eq(a.reply(), [b"punsubscribe", None, 2], "punsub none")
a.send("UNSUBSCRIBE")
r1, r2 = a.reply(), a.reply()
eq(sorted([r1[:2], r2[:2]]), [[b"unsubscribe", b"ch1"], [b"unsubscribe", b"ch2"]], "unsub all")
eq(r2[2], 0, "count after unsubscribe all")
b.send("PUBLISH", "ch1", "gone"); eq(b.reply(), 0, "nobody left")
a.send("PUBLISH", "ch1", "again"); eq(a.reply(), 0, "a may publish again")

# Redis and tcp share topics.
t = socket.create_connection(("127.0.0.1", tport), timeout=5)
t.sendall(b"SUB sensors/#\n")
buf = b""
while b"\n" not in buf:
    buf += t.recv(100)
eq(buf, b"+OK\n", "tcp sub")
b.send("PUBLISH", "sensors/kitchen", "21.5"); eq(b.reply(), 1, "tcp receiver")
buf = b""
while buf.count(b"\n") < 2:
    buf += t.recv(100)
eq(buf, b"MSG sensors/kitchen 4\n21.5\n", "tcp delivery")

b.send("QUIT"); eq(b.reply(), b"+OK", "quit")
eq(b.s.recv(10), b"", "closed after QUIT")
print("ok: RESP protocol details")
PY

# 6. The real client.
if ! command -v redis-cli >/dev/null 2>&1; then
	echo "SKIP: redis-cli not found (Debian package redis-tools); the example"
	echo "      was built and checked with a raw RESP client only"
	pmq_stop
	pmq_skip "redis-cli not found"
fi
rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
[ "$(rcli PING)" = PONG ] || pmq_fail "redis-cli PING did not get PONG"

rcli SUBSCRIBE news >"$PMQ_TMP/sub.out" 2>&1 &
pmq_track $!
rcli PSUBSCRIBE 'news.*' 'sensors/*' >"$PMQ_TMP/psub.out" 2>&1 &
pmq_track $!
has() { # has FILE LINES...: the lines appear in FILE in this order, adjacent
	f=$1; shift
	printf '%s\n' "$@" >"$PMQ_TMP/want"
	python3 -c 'import sys; w=open(sys.argv[2]).read(); sys.exit(0 if w in open(sys.argv[1]).read() else 1)' \
	    "$f" "$PMQ_TMP/want"
}
pmq_wait_for 10 has "$PMQ_TMP/sub.out" subscribe news 1 ||
    pmq_fail "redis-cli SUBSCRIBE not confirmed: $(cat "$PMQ_TMP/sub.out")"
pmq_wait_for 10 has "$PMQ_TMP/psub.out" psubscribe 'sensors/*' 2 ||
    pmq_fail "redis-cli PSUBSCRIBE not confirmed: $(cat "$PMQ_TMP/psub.out")"

[ "$(rcli PUBLISH news hello)" = 1 ] || pmq_fail "PUBLISH news: receivers"
pmq_wait_for 10 has "$PMQ_TMP/sub.out" message news hello ||
    pmq_fail "the subscriber did not get the message: $(cat "$PMQ_TMP/sub.out")"
[ "$(rcli PUBLISH news.tech gadgets)" = 1 ] || pmq_fail "PUBLISH news.tech: receivers"
[ "$(rcli PUBLISH sports goal)" = 0 ] || pmq_fail "PUBLISH sports: receivers"
[ "$(rcli PUBLISH sensors/a/b 7)" = 1 ] || pmq_fail "PUBLISH sensors/a/b: receivers"
pmq_wait_for 10 has "$PMQ_TMP/psub.out" pmessage 'news.*' news.tech gadgets \
    pmessage 'sensors/*' sensors/a/b 7 ||
    pmq_fail "pattern subscriber: $(cat "$PMQ_TMP/psub.out")"
! grep -q goal "$PMQ_TMP/psub.out" "$PMQ_TMP/sub.out" ||
    pmq_fail "a message nobody subscribed to arrived"
echo "ok: redis-cli PING, SUBSCRIBE + PUBLISH, PSUBSCRIBE with globs"

pmq_stop || pmq_fail "plexmqd did not stop cleanly"
pmq_pass
