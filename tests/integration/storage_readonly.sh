#!/bin/sh
# storage_readonly.sh - the file and lmdb storage plugins on a read-only
# data dir (a read-only bind mount; root's chmod would prove nothing).
# Per plugin: plexmqd stores 20 messages through the tcp transport and
# stops; the data dir is bind-mounted over itself read-only and plexmqd
# started on it.  It must start, say in its log that it is read-only and
# that writes will fail, and serve: READ returns the 20 messages; a PUB to
# the stored log and a PUB that would create a new log both get
# "-ERR read-only", never +OK; it keeps serving reads after them and stops
# cleanly; not one file under the dir changed.  Then the dir is made
# writable again and plexmqd restarted: exactly the 20 messages, and PUBs
# are acknowledged again (also to the new log).
#
# A read-only remount while plexmqd runs cannot be tested: the kernel
# refuses it (EBUSY) while files are open for writing.  Skipped (77)
# where bind mounts are not permitted.  Every mount made here is under
# $PMQ_TMP and is undone by the EXIT trap.
. "${top_srcdir:-.}/tests/integration/lib.sh"
pmq_init storage_readonly
pmq_need python3 mount umount

cat >"$PMQ_TMP/ro.py" <<'PY'
import socket, sys

def conn(port):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    return s, s.makefile("rb")

def pub(port, first, n, topic="ro/t"):
    s, f = conn(port)
    for i in range(int(first), int(first) + int(n)):
        p = b"m%d" % i
        s.sendall(b"PUB %s %d\n%s\n" % (topic.encode(), len(p), p))
        line = f.readline()
        if line != b"+OK\n":
            print(line.decode().strip() or "connection closed")
            sys.exit(1)
    print("ok")

def read(port, n, log="ro", first=0):
    s, f = conn(port)
    s.sendall(b"READ %s 0 0 1048576\n" % log.encode())
    vals = []
    while True:
        line = f.readline()
        if line.startswith(b"REC "):
            vals.append(f.read(int(line.split()[3]) + 1)[:-1])
        elif line.startswith(b"+OK"):
            break
        else:
            sys.exit("READ: %r" % line)
    want = [b"m%d" % i for i in range(int(first), int(first) + int(n))]
    if vals != want:
        sys.exit("READ %s: %d records %r..., want %d" %
                 (log, len(vals), vals[:3], int(n)))
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

# ro_pub_refused PORT TOPIC WHAT: one PUB must get "-ERR read-only".
ro_pub_refused() {
	err=$(python3 "$PMQ_TMP/ro.py" pub "$1" 20 1 "$2") &&
	    pmq_fail "$plugin: $3 was acknowledged on a read-only dir"
	case $err in
	"-ERR read-only") ;;
	*) pmq_fail "$plugin: $3 on a read-only dir: [$err], want" \
	       "[-ERR read-only]" ;;
	esac
}

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

[rule fresh]
match = fresh/#
log = fresh
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

	# It must start and serve.
	pmq_start "$PMQ_TMP/$plugin.ini"
	why=$(tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -m 1 'read-only.*writes will fail')
	[ -n "$why" ] ||
	    pmq_fail "$plugin: no log line saying it is read-only"
	port=$(pmq_port tcp)
	python3 "$PMQ_TMP/ro.py" read "$port" 20 >/dev/null ||
	    pmq_fail "$plugin: reads on a read-only dir"
	ro_pub_refused "$port" ro/t "a PUB to a stored log"
	# Refused again after the core resynchronised with the storage, not
	# turned into something else.
	ro_pub_refused "$port" ro/t "a second PUB to a stored log"
	ro_pub_refused "$port" fresh/x "a PUB creating a new log"
	pmq_alive || pmq_fail "$plugin: plexmqd died after refused writes"
	python3 "$PMQ_TMP/ro.py" read "$port" 20 >/dev/null ||
	    pmq_fail "$plugin: reads after refused writes"
	tail -n +"$PMQ_LOG_FROM" "$PMQ_TMP/daemon.log" |
	    grep -q 'read-only: a write was refused' ||
	    pmq_fail "$plugin: refused writes not logged"
	echo "$plugin: serves reads on a read-only dir ($why);" \
	    "PUB gets: $err"
	pmq_stop || pmq_fail "$plugin: unclean stop on a read-only dir"

	umount "$d" || pmq_fail "$plugin: umount"
	ro_dirs=
	(cd "$d" && find . -type f -exec sha256sum {} + | sort) |
	    cmp -s - "$PMQ_TMP/sums" ||
	    pmq_fail "$plugin: files changed under the read-only dir"
	pmq_start "$PMQ_TMP/$plugin.ini"
	port=$(pmq_port tcp)
	python3 "$PMQ_TMP/ro.py" read "$port" 20 >/dev/null ||
	    pmq_fail "$plugin: data after the read-only start"
	python3 "$PMQ_TMP/ro.py" pub "$port" 20 1 >/dev/null ||
	    pmq_fail "$plugin: PUB once writable again"
	python3 "$PMQ_TMP/ro.py" read "$port" 21 >/dev/null ||
	    pmq_fail "$plugin: the new message"
	python3 "$PMQ_TMP/ro.py" pub "$port" 0 2 fresh/x >/dev/null ||
	    pmq_fail "$plugin: PUB creating the new log once writable"
	python3 "$PMQ_TMP/ro.py" read "$port" 2 fresh >/dev/null ||
	    pmq_fail "$plugin: the new log"
	pmq_stop || pmq_fail "$plugin: unclean stop"
done
[ -n "$ran" ] || pmq_skip "neither file.so nor lmdb.so is built"
echo "read-only data dir tests passed for:$ran"
pmq_pass
