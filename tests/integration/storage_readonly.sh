#!/bin/sh
# storage_readonly.sh - the file and lmdb storage plugins on a read-only
# data dir (a read-only bind mount; root's chmod would prove nothing).
# Per plugin: plexmqd stores 20 messages through the tcp transport and
# stops; the data dir is bind-mounted over itself read-only and plexmqd
# started on it.  It must not damage anything and must say clearly what
# is wrong: either it serves (reads return the 20 messages, a PUB gets
# -ERR, never +OK) or it refuses to start with a log line naming the
# read-only dir.  Then the dir is made writable again, plexmqd restarts:
# exactly the 20 messages, and a PUB is acknowledged again.
#
# A read-only remount while plexmqd runs cannot be tested: the kernel
# refuses it (EBUSY) while files are open for writing.  Skipped (77)
# where bind mounts are not permitted.
. "${top_srcdir:-.}/tests/integration/lib.sh"
pmq_init storage_readonly
pmq_need python3 mount umount

cat >"$PMQ_TMP/ro.py" <<'PY'
import socket, sys

def conn(port):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    return s, s.makefile("rb")

def pub(port, first, n):
    s, f = conn(port)
    for i in range(int(first), int(first) + int(n)):
        p = b"m%d" % i
        s.sendall(b"PUB ro/t %d\n%s\n" % (len(p), p))
        line = f.readline()
        if line != b"+OK\n":
            print(line.decode().strip() or "connection closed")
            sys.exit(1)
    print("ok")

def read(port, n):
    s, f = conn(port)
    s.sendall(b"READ ro 0 0 1048576\n")
    vals = []
    while True:
        line = f.readline()
        if line.startswith(b"REC "):
            vals.append(f.read(int(line.split()[3]) + 1)[:-1])
        elif line.startswith(b"+OK"):
            break
        else:
            sys.exit("READ: %r" % line)
    want = [b"m%d" % i for i in range(int(n))]
    if vals != want:
        sys.exit("READ: %d records %r..., want m0..m%d" % (len(vals), vals[:3], int(n) - 1))
    print("read %d" % len(vals))

{"pub": pub, "read": read}[sys.argv[1]](*sys.argv[2:])
PY

ro_dirs=
ro_cleanup() {
	pmq_stop
	for d in $ro_dirs; do
		umount "$d" 2>/dev/null
	done
	pmq_cleanup
}
trap 'ro_cleanup' EXIT

ran=
for plugin in file lmdb; do
	if [ ! -f "$PMQ_PLUGINS/$plugin.so" ]; then
		echo "note: $plugin.so not built; $plugin not tested"
		continue
	fi
	d="$PMQ_TMP/data-$plugin"
	mkdir -p "$d"
	cat >"$PMQ_TMP/$plugin.ini" <<EOF
[plexmqd]
data_dir = $d

[storage]
plugin = $plugin
fsync = always

[listener tcp]
plugin = tcp
listen = 127.0.0.1:0

[rule ro]
match = ro/#
log = ro
EOF
	pmq_start "$PMQ_TMP/$plugin.ini"
	python3 "$PMQ_TMP/ro.py" pub "$(pmq_port tcp)" 0 20 >/dev/null ||
	    pmq_fail "$plugin: publishing while writable"
	pmq_stop || pmq_fail "$plugin: unclean stop"
	(cd "$d" && find . -type f -exec sha256sum {} + | sort) >"$PMQ_TMP/sums"

	mount --bind "$d" "$d" 2>/dev/null ||
	    pmq_skip "cannot bind-mount here (needs root and mount rights)"
	ro_dirs="$ro_dirs $d"
	mount -o remount,ro,bind "$d" ||
	    pmq_fail "$plugin: read-only remount of the bind mount"
	touch "$d/probe" 2>/dev/null && pmq_fail "$plugin: $d is still writable"
	ran="$ran $plugin"

	: >>"$PMQ_TMP/daemon.log"
	from=$(($(wc -l <"$PMQ_TMP/daemon.log") + 1))
	"$PMQ_DAEMON" -c "$PMQ_TMP/$plugin.ini" --plugin-dir "$PMQ_PLUGINS" \
	    >>"$PMQ_TMP/daemon.log" 2>&1 &
	PMQ_PID=$!
	PMQ_LOG_FROM=$from
	pmq_wait_for 10 sh -c "! kill -0 $PMQ_PID 2>/dev/null ||
	    tail -n +$from '$PMQ_TMP/daemon.log' | grep -q ' running (pid'"
	if pmq_alive; then
		port=$(pmq_port tcp)
		python3 "$PMQ_TMP/ro.py" read "$port" 20 ||
		    pmq_fail "$plugin: reads on a read-only dir"
		err=$(python3 "$PMQ_TMP/ro.py" pub "$port" 20 1) &&
		    pmq_fail "$plugin: a PUB was acknowledged on a read-only dir"
		case $err in
		-ERR*) ;;
		*) pmq_fail "$plugin: PUB on a read-only dir: [$err], want -ERR" ;;
		esac
		echo "$plugin: serves reads on a read-only dir; PUB gets: $err"
		pmq_stop
	else
		wait "$PMQ_PID"
		rc=$?
		PMQ_PID=
		why=$(tail -n +"$from" "$PMQ_TMP/daemon.log" |
		    grep -i -m 1 'read-only\|permission denied')
		[ -n "$why" ] || {
			tail -n +"$from" "$PMQ_TMP/daemon.log"
			pmq_fail "$plugin: exited ($rc) on a read-only dir without" \
			    "saying so"
		}
		echo "$plugin: refuses to start on a read-only dir (exit $rc): $why"
	fi

	umount "$d" || pmq_fail "$plugin: umount"
	ro_dirs=
	(cd "$d" && find . -type f -exec sha256sum {} + | sort) |
	    cmp -s - "$PMQ_TMP/sums" || echo "note: $plugin: files changed" \
	    "(only a lock file may)"
	pmq_start "$PMQ_TMP/$plugin.ini"
	port=$(pmq_port tcp)
	python3 "$PMQ_TMP/ro.py" read "$port" 20 ||
	    pmq_fail "$plugin: data after the read-only start"
	python3 "$PMQ_TMP/ro.py" pub "$port" 20 1 >/dev/null ||
	    pmq_fail "$plugin: PUB once writable again"
	python3 "$PMQ_TMP/ro.py" read "$port" 21 >/dev/null ||
	    pmq_fail "$plugin: the new message"
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
echo "read-only data dir tests passed for:$ran"
pmq_pass
