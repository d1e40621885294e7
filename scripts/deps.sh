#!/bin/sh
# scripts/deps.sh - install what building and testing plexmq needs on
# Debian 12, as root, non-interactively; does nothing when all is there.
set -u

PKGS="build-essential autoconf automake libtool pkg-config \
libevent-dev libinih-dev libcmocka-dev liblmdb-dev \
zlib1g-dev liblz4-dev libzstd-dev libsnappy-dev clang \
python3 netcat-openbsd mosquitto mosquitto-clients kcat \
abigail-tools redis-tools g++ librdkafka-dev libmosquitto-dev fio"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
top=$(cd "$(dirname "$0")/.." && pwd)
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

# Test-only Node.js clients (MQTT.js, kafkajs), pinned by the lockfile.
node_clients() {
	if [ ! -d "$top/tests/node/node_modules" ] ||
	   [ "$top/tests/node/package-lock.json" -nt "$top/tests/node/node_modules" ]; then
		(cd "$top/tests/node" && npm ci --no-audit --no-fund --loglevel=error) &&
		touch "$top/tests/node/node_modules"
	fi
}

if [ -z "$missing" ]; then
	node_clients
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
	exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Installing mosquitto must not start a system broker on port 1883: tests
# run their own brokers.  policy-rc.d tells maintainer scripts not to.
rcd=/usr/sbin/policy-rc.d
made_rcd=
if [ ! -e "$rcd" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$rcd" && chmod +x "$rcd" && made_rcd=1
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
rc=$?
[ -n "$made_rcd" ] && rm -f "$rcd"
[ $rc -eq 0 ] || exit $rc
node_clients
