#!/bin/sh
# bench_smoke.sh — the seconds-long benchmark smoke run of `make check`.
#
# Starts the echo baseline, a sessiond on loopback (v1 and plaintext v2) and
# one with a cluster key (sealed v2; memcached too when it is installed), runs the load generator against each for about a second
# (and the TLS handshake benchmark, with a daemon of its own, as long), and
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

# check_run TARGET PORT [LOADGEN-OPTIONS...]: one short run, and the
# sanity of what it printed.
check_run() {
	target=$1 port=$2
	shift 2
	out=$(timeout 60 "$LOADGEN" --target "$target" --port "$port" -w 4 -c 2 -d 1 --warmup 0.2 \
		--keys 1000 "$@" 2>&1) || {
		fail "$target: loadgen exited non-zero: $out"
		return 0
	}
	line=$(printf '%s\n' "$out" | grep '^result ' || true)
	if [ -z "$line" ]; then
		fail "$target: no result line in: $out"
		return 0
	fi
	echo "$line"
	gets=$(field "$line" gets_per_s)
	hits=$(field "$line" hits)
	ops=$(field "$line" ops)
	p50=$(field "$line" p50_us)
	p99=$(field "$line" p99_us)
	[ "$(field "$line" target)" = "$target" ] || fail "$target: wrong target in the result"
	[ "${ops:-0}" -gt 0 ] || fail "$target: no operations counted"
	[ "${hits:-0}" -gt 0 ] || fail "$target: no GET found a value after the fill"
	[ "$(field "$line" errors)" = 0 ] || fail "$target: socket errors"
	[ "$(field "$line" bad)" = 0 ] || fail "$target: malformed answers"
	awk -v g="$gets" -v a="$p50" -v b="$p99" 'BEGIN { exit !(g > 0 && a > 0 && a <= b) }' ||
		fail "$target: figures out of order (gets/s $gets, p50 $p50, p99 $p99)"
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
sd_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/sessiond.log" | head -n 1)
check_run sessiond-v1 "$sd_port"
check_run sessiond-v2 "$sd_port"

# Sealed v2: a daemon with a fresh cluster key (mode 0600, as the daemon
# demands), the generator with the same key file.
(
	umask 077
	head -c 32 /dev/urandom >"$TMP/cluster.key"
)
"$SESSIOND" -f -l 127.0.0.1 -p 0 --key-file "$TMP/cluster.key" >"$TMP/sealed.log" 2>&1 &
PIDS="$PIDS $!"
wait_for "$TMP/sealed.log" 'listening on 127\.0\.0\.1:[0-9]+'
check_run sessiond-v2-sealed \
	"$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/sealed.log" | head -n 1)" \
	--key-file "$TMP/cluster.key"

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

# The TLS handshake benchmark: two versions x every case, a few dozen
# handshakes each (about a second), against a sessiond of its own. Only that
# it ran and that the figures are sane: the resumption rates each case is
# built to show (none without a cache, all with one server or shared ticket
# keys, by hand or from sessiond's ring, all through sessiond when local
# lookups are off), CPU percentiles in
# order, a target line per version. Never how fast.
HANDSHAKE=$BUILD/bench/handshake
# hs_field LINES CASE TLS NAME: NAME= of the result line of CASE for TLS.
hs_field() {
	printf '%s\n' "$1" | grep "^result case=$2 .* tls=$3 " | head -n 1 |
		sed -n "s/.* $4=\([^ ]*\).*/\1/p"
}
if [ ! -x "$HANDSHAKE" ]; then
	fail "$HANDSHAKE not built"
elif ! hs_out=$(timeout 120 "$HANDSHAKE" -n 30 -w 2 -R 2 -d 2 --sessiond "$SESSIOND" 2>&1); then
	fail "handshake exited non-zero: $hs_out"
else
	printf '%s\n' "$hs_out" | grep -E '^(target|UDP floor)'
	[ "$(printf '%s\n' "$hs_out" | grep -c '^result case=')" -eq 20 ] ||
		fail "handshake: expected 20 result lines (10 cases x 2 versions)"
	for tls in 1.2 1.3; do
		hs_check() { # CASE FIELD OP LIMIT
			v=$(hs_field "$hs_out" "$1" "$tls" "$2")
			awk -v v="$v" -v l="$4" -v op="$3" 'BEGIN {
				if (v == "") exit 1
				exit !(op == ">=" ? v + 0 >= l : v + 0 <= l) }' ||
				fail "handshake TLS $tls $1: $2=$v, expected $3 $4"
		}
		hs_check a-nocache resumed_pct "<=" 0
		hs_check b-local-same resumed_pct ">=" 90
		hs_check c-sessiond-only via_sessiond_pct ">=" 90
		hs_check c-sessiond-nostore via_sessiond_pct ">=" 90
		hs_check d-tickets-shared resumed_pct ">=" 90
		hs_check d-tickets-sessiond resumed_pct ">=" 90
		hs_check a-nocache full_p50_us ">=" 1
		hs_check b-local-same resumed_p50_us ">=" 1
		for pair in a-nocache:full b-local-same:resumed c-sessiond-only:sessiond_resumed; do
			c=${pair%%:*} k=${pair#*:}
			p50=$(hs_field "$hs_out" "$c" "$tls" "${k}_p50_us")
			p99=$(hs_field "$hs_out" "$c" "$tls" "${k}_p99_us")
			awk -v a="$p50" -v b="$p99" 'BEGIN { exit !(a > 0 && a <= b) }' ||
				fail "handshake TLS $tls $c: percentiles out of order ($p50, $p99)"
		done
		printf '%s\n' "$hs_out" | grep -q "^ratio tls=$tls case=c-sessiond-only .*ratio_p50=[0-9]" ||
			fail "handshake TLS $tls: no target ratio line"
	done
fi
if msg=$("$HANDSHAKE" --handshakes 0 2>&1); then
	fail "handshake accepted --handshakes 0"
elif [ "$(printf '%s\n' "$msg" | wc -l)" -ne 1 ] || ! printf '%s' "$msg" | grep -q handshakes; then
	fail "handshake's error for --handshakes 0 is not one line naming the flag: $msg"
fi

[ "$failures" -eq 0 ] && echo "bench smoke: ok"
exit "$failures"
