#!/bin/sh
# scripts/deps.sh - install what building and testing plexmq needs on
# Debian 12, as root, non-interactively; does nothing when all is there.
set -eu

PKGS="build-essential autoconf automake libtool pkg-config \
libevent-dev libinih-dev libcmocka-dev liblmdb-dev \
python3 netcat-openbsd"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
	exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
