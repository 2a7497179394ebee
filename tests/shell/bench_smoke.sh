#!/bin/sh
# bench_smoke.sh — the seconds-long benchmark smoke run of `make check`.
#
# Starts the echo baseline and a sessiond on loopback (and memcached when it
# is installed), runs the load generator against each for about a second, and
# asserts only that it ran and printed sane figures: operations counted,
# GETs answered and found after the fill, percentiles in order, no socket
# errors and no malformed answers. Nothing about speed: the sanitizer pass
# runs it too, on a shared machine. Also checks that a bad flag is refused
# with a one-line message.
#
# Waits are on the servers' own output (their port line), bounded; every
# process started here is killed on exit.
set -eu

BUILD=${BUILD:-build}
LOADGEN=$BUILD/bench/loadgen
ECHO=$BUILD/bench/udp_echo
SESSIOND=${SESSIOND:-$BUILD/sessiond}
TMP=$(mktemp -d)
PIDS=""
failures=0

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	for pid in $PIDS; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $PIDS; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

wait_for() {
	i=0
	while ! grep -Eq "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 200 ]; then
			echo "timed out waiting for '$2' in $1:"
			cat "$1"
			return 1
		fi
		sleep 0.05
	done
}

field() {
	printf '%s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"
}

# check_run TARGET PORT: one short run, and the sanity of what it printed.
check_run() {
	out=$(timeout 60 "$LOADGEN" --target "$1" --port "$2" -w 4 -c 2 -d 1 --warmup 0.2 \
		--keys 1000 2>&1) || {
		fail "$1: loadgen exited non-zero: $out"
		return 0
	}
	line=$(printf '%s\n' "$out" | grep '^result ' || true)
	if [ -z "$line" ]; then
		fail "$1: no result line in: $out"
		return 0
	fi
	echo "$line"
	gets=$(field "$line" gets_per_s)
	hits=$(field "$line" hits)
	ops=$(field "$line" ops)
	p50=$(field "$line" p50_us)
	p99=$(field "$line" p99_us)
	[ "$(field "$line" target)" = "$1" ] || fail "$1: wrong target in the result"
	[ "${ops:-0}" -gt 0 ] || fail "$1: no operations counted"
	[ "${hits:-0}" -gt 0 ] || fail "$1: no GET found a value after the fill"
	[ "$(field "$line" errors)" = 0 ] || fail "$1: socket errors"
	[ "$(field "$line" bad)" = 0 ] || fail "$1: malformed answers"
	awk -v g="$gets" -v a="$p50" -v b="$p99" 'BEGIN { exit !(g > 0 && a > 0 && a <= b) }' ||
		fail "$1: figures out of order (gets/s $gets, p50 $p50, p99 $p99)"
}

for f in "$LOADGEN" "$ECHO" "$SESSIOND"; do
	[ -x "$f" ] || {
		echo "FAIL: $f not built"
		exit 1
	}
done

"$ECHO" >"$TMP/echo.out" 2>&1 &
PIDS="$PIDS $!"
wait_for "$TMP/echo.out" '^[0-9]+$'
check_run echo "$(head -n 1 "$TMP/echo.out")"

"$SESSIOND" -f -l 127.0.0.1 -p 0 >"$TMP/sessiond.log" 2>&1 &
PIDS="$PIDS $!"
wait_for "$TMP/sessiond.log" 'listening on 127\.0\.0\.1:[0-9]+'
check_run sessiond-v1 "$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/sessiond.log" | head -n 1)"

if command -v memcached >/dev/null 2>&1; then
	port=$("$LOADGEN" --free-port)
	user_opt=""
	[ "$(id -u)" = 0 ] && user_opt="-u nobody"
	# shellcheck disable=SC2086 # $user_opt is empty or two words
	memcached -p 0 -U "$port" -l 127.0.0.1 -t 1 -m 64 $user_opt >"$TMP/mc.log" 2>&1 &
	PIDS="$PIDS $!"
	if "$LOADGEN" --target memcached --port "$port" --probe >/dev/null 2>&1; then
		check_run memcached "$port"
	else
		fail "memcached did not answer on UDP port $port"
	fi
else
	echo "memcached not installed: its smoke run skipped"
fi

# A bad flag: non-zero exit and one line naming the problem.
if msg=$("$LOADGEN" --target echo --port 1 --window 0 2>&1); then
	fail "loadgen accepted --window 0"
elif [ "$(printf '%s\n' "$msg" | wc -l)" -ne 1 ] || ! printf '%s' "$msg" | grep -q window; then
	fail "loadgen's error for --window 0 is not one line naming the flag: $msg"
fi

[ "$failures" -eq 0 ] && echo "bench smoke: ok"
exit "$failures"
