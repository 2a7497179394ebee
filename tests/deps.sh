#!/bin/sh
# Installs the Debian packages named in $DEPS that are not installed yet.
# Does nothing when all are present, so `make run` and `make check` stay fast
# on a machine that has them; needs root only when something is missing.
set -eu
command -v dpkg-query >/dev/null 2>&1 || {
	echo "deps: not a Debian system; install by hand: $DEPS" >&2
	exit 0
}
missing=""
for pkg in $DEPS; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
		missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run as root, or install them)" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing >/dev/null
