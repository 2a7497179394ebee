#!/bin/sh
# redis_demo.sh — runs contrib/redis-demo.sh non-interactively: Redis master
# + replica, two Sentinels, two sessiond nodes on them, two stock stunnels,
# and openssl s_client resuming on stunnel 2 a session made on stunnel 1.
#
# Passes (exit 0) only if the demo exits 0, printed "Reused, TLSv1.2" for
# stunnel 2, node 2 counted a backend hit (the session came from Redis, not
# from a local copy), and the demo cleaned up after itself: its temporary
# directory is gone and nothing listens on the ports it used. With a
# sanitizer build of sessiond, also that no node reported an error.
#
# Environment (from tests/run.sh): SESSIOND, the daemon under test. The
# demo's own waits are bounded; the whole run is capped at 120 s here.
set -eu

SESSIOND=${SESSIOND:-${BUILD:-build}/sessiond}
export SESSIOND
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/tmp"
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# port_listened PORT: something listens on TCP PORT (from /proc).
port_listened() {
	hex=$(printf ':%04X' "$1")
	awk -v h="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

rc=0
TMPDIR=$T/tmp timeout 120 contrib/redis-demo.sh >"$T/demo.out" 2>&1 || rc=$?
cat "$T/demo.out"

[ "$rc" -eq 0 ] || fail "contrib/redis-demo.sh exited $rc"
grep -q 'Reused, TLSv1.2,' "$T/demo.out" || fail "no 'Reused, TLSv1.2' from stunnel 2"
grep -Eq 'node 2: .* backend_hits=[1-9]' "$T/demo.out" ||
	fail "node 2 counted no backend hit: the session did not come from Redis"
grep -q '^redis-demo: ok$' "$T/demo.out" || fail "the demo did not end with 'redis-demo: ok'"
# The sanitizer pass runs this with an ASan/UBSan sessiond; the demo prints
# a node's log when it holds a sanitizer report.
if grep -q -E 'Sanitizer|runtime error' "$T/demo.out"; then
	fail "a sessiond node reported a sanitizer error (above)"
fi

# Cleanup: the demo's directory is gone, and nothing listens any more on
# the TCP ports it printed (Redis, Sentinels, stunnels; it waits for each
# process it stops, so they are closed by the time it exits), and no
# sessiond of it runs (their command line names the directory).
left=$(find "$T/tmp" -mindepth 1 -maxdepth 1 | head -n 1)
[ -z "$left" ] || fail "the demo left $left behind"
# shellcheck disable=SC2013 # the words are port numbers
for port in $(grep -Eo '127\.0\.0\.1:[0-9]+' "$T/demo.out" | cut -d: -f2 | sort -u); do
	port_listened "$port" && fail "TCP port $port still has a listener after the demo"
done
if pgrep -f "$T/tmp/sessiond-demo" >/dev/null 2>&1; then
	fail "processes of the demo are still running: $(pgrep -af "$T/tmp/sessiond-demo" | head -n 3)"
fi

[ "$failures" -eq 0 ] && echo "redis demo: ok"
exit "$failures"
