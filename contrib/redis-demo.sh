#!/bin/sh
# redis-demo.sh — two TLS servers on two sessiond nodes sharing sessions
# through Redis with Sentinel, all on loopback, no containers.
#
#   contrib/redis-demo.sh [--keep]
#
# Starts, on free 127.0.0.1 ports, everything under one temporary directory:
#   - a Redis master and one replica (no persistence),
#   - two redis-sentinel watching the master (name "demo", quorum 2),
#   - two sessiond nodes (`--backend sentinel://S1,S2/demo`), one cluster
#     key file (mode 0600) for both: values in Redis are sealed with it,
#   - two stunnel servers (Debian's stunnel4), the same service name and
#     settings, each pointing `sessiond =` at its own node,
# then makes a TLS 1.2 connection (no tickets) to stunnel 1 with
# `openssl s_client -sess_out`, and one to stunnel 2 with `-sess_in`: the
# second reports "Reused", although stunnel 2 and node 2 never saw the
# session: node 1 wrote it through to Redis, node 2 missed locally and
# fetched it from Redis. Last, it shows what Redis holds (sealed values
# under hashed names: not the session ID).
#
# --keep  leave everything running after the demo, print the endpoints,
#         and clean up on Ctrl-C.
#
# Environment: SESSIOND (default build/sessiond). Needs redis-server,
# redis-sentinel, stunnel4 and openssl. Exit status: 0 only if stunnel 2
# resumed stunnel 1's session. Every wait is a condition polled up to a
# deadline; every process started here is stopped on exit (trap), and the
# directory removed. tests/shell/redis_demo.sh runs this script.
#
# stunnel waits one clock tick (~4 ms) for sessiond's answer; a GET that
# needs a Redis round trip on a loaded machine can miss it, so stunnel 2 gets
# up to three tries with the same session (as tests/integration/check_stunnel.c).
set -eu

KEEP=0
case ${1-} in
--keep) KEEP=1 ;;
"") ;;
-h | --help)
	sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "redis-demo: unknown argument '$1' (usage: $0 [--keep])" >&2
	exit 2
	;;
esac

SESSIOND=${SESSIOND:-build/sessiond}
MASTER_NAME=demo
SERVICE=demo-tls
ATTEMPTS=3

for cmd in redis-server redis-sentinel redis-cli stunnel4 openssl; do
	command -v "$cmd" >/dev/null 2>&1 || {
		echo "redis-demo: $cmd is not installed (apt-get install redis-server redis-sentinel stunnel4 openssl)" >&2
		exit 1
	}
done
[ -x "$SESSIOND" ] || {
	echo "redis-demo: $SESSIOND is not an executable sessiond (build it with make, or set SESSIOND)" >&2
	exit 1
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-demo.XXXXXX")
PIDS=""

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	for pid in $PIDS; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $PIDS; do
		wait "$pid" 2>/dev/null || true
	done
	# A sanitizer build of sessiond reports leaks and errors on its way
	# out, into its log, which is about to go: show them.
	for log in "$DIR"/node-*.log; do
		[ -f "$log" ] && grep -q -E 'Sanitizer|runtime error' "$log" &&
			{ echo "redis-demo: $(basename "$log"):" >&2; cat "$log" >&2; }
	done
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() {
	printf '%s\n' "$*"
}

step() {
	printf '\n==> %s\n' "$*"
}

# die MESSAGE [LOG...]: the reason, the last lines of each log, exit 1.
die() {
	msg=$1
	shift
	say "redis-demo: $msg" >&2
	for log in "$@"; do
		[ -f "$log" ] || continue
		say "--- last lines of $log:" >&2
		tail -n 20 "$log" >&2
	done
	exit 1
}

# wait_until PID SECONDS COMMAND...: runs COMMAND every 50 ms until it
# succeeds (0); 1 after SECONDS, 2 as soon as PID has exited.
wait_until() {
	pid=$1 limit=$(($2 * 20)) i=0
	shift 2
	until "$@" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || return 2
		i=$((i + 1))
		[ "$i" -ge "$limit" ] && return 1
		sleep 0.05
	done
	return 0
}

# port_listened PORT: something listens on TCP PORT (any address), from
# /proc, so no ss or netstat is needed.
port_listened() {
	hex=$(printf ':%04X' "$1")
	awk -v h="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# free_port: a TCP port in 20000..31999 (below Linux's ephemeral range)
# that nothing listens on now. Callers retry if it is taken before they bind.
free_port() {
	while :; do
		p=$(($(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12000 + 20000))
		port_listened "$p" || break
	done
	echo "$p"
}

redis_says() { # PORT EXPECTED COMMAND...: the reply contains EXPECTED
	port=$1 want=$2
	shift 2
	redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | grep -q "$want"
}

# start_redis NAME [MASTER_PORT]: sets PORT and PID; up to 3 ports tried.
start_redis() {
	name=$1 master=${2-}
	for attempt in 1 2 3; do
		PORT=$(free_port)
		if [ -n "$master" ]; then
			set -- --replicaof 127.0.0.1 "$master"
		else
			set --
		fi
		redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
			--dir "$DIR" --dbfilename "$name.rdb" --logfile "$DIR/$name.log" \
			--repl-diskless-sync-delay 0 "$@" &
		PID=$!
		PIDS="$PIDS $PID"
		rc=0
		wait_until "$PID" 10 redis_says "$PORT" PONG PING || rc=$?
		[ "$rc" = 0 ] && return 0
		[ "$rc" = 1 ] && die "redis $name did not answer on port $PORT within 10 s" "$DIR/$name.log"
		say "   (port $PORT was taken, attempt $attempt; trying another)"
	done
	die "redis $name did not start" "$DIR/$name.log"
}

# start_sentinel NAME MASTER_PORT: sets PORT and PID.
start_sentinel() {
	name=$1 master=$2
	for attempt in 1 2 3; do
		PORT=$(free_port)
		conf=$DIR/$name.conf
		cat >"$conf" <<EOF
port $PORT
bind 127.0.0.1
daemonize no
dir $DIR
logfile $DIR/$name.log
sentinel resolve-hostnames no
sentinel announce-ip 127.0.0.1
sentinel announce-port $PORT
sentinel monitor $MASTER_NAME 127.0.0.1 $master 2
sentinel down-after-milliseconds $MASTER_NAME 3000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
		redis-sentinel "$conf" &
		PID=$!
		PIDS="$PIDS $PID"
		rc=0
		wait_until "$PID" 10 redis_says "$PORT" "$master" \
			SENTINEL get-master-addr-by-name "$MASTER_NAME" || rc=$?
		[ "$rc" = 0 ] && return 0
		[ "$rc" = 1 ] && die "sentinel $name did not report the master within 10 s" "$DIR/$name.log"
		say "   (port $PORT was taken, attempt $attempt; trying another)"
	done
	die "sentinel $name did not start" "$DIR/$name.log"
}

# last_stats LOG: the newest "stats:" line of a sessiond log.
last_stats() {
	grep 'stats:' "$1" | tail -n 1
}

# node_backend_up PID LOG: asks for a stats line (SIGUSR1) and succeeds once
# one says backend_up=1 (the node has found the master through Sentinel).
node_backend_up() {
	kill -USR1 "$1" 2>/dev/null || return 1
	last_stats "$2" | grep -q ' backend_up=1'
}

stat_of() { # LINE NAME
	printf '%s\n' "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"
}

# start_node NAME: sets PORT and PID (sessiond picks its own UDP port).
start_node() {
	name=$1 log=$DIR/$1.log
	"$SESSIOND" -f -l 127.0.0.1 -p 0 --key-file "$DIR/cluster.key" \
		--allow-plaintext --allow 127.0.0.1/32 --backend "$BACKEND" >"$log" 2>&1 &
	PID=$!
	PIDS="$PIDS $PID"
	wait_until "$PID" 10 grep -q 'listening on 127\.0\.0\.1:[0-9]' "$log" ||
		die "sessiond $name did not start" "$log"
	PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
	rc=0
	wait_until "$PID" 10 node_backend_up "$PID" "$log" || rc=$?
	[ "$rc" = 2 ] && die "sessiond $name exited" "$log"
	[ "$rc" = 1 ] && die "sessiond $name did not reach Redis through the sentinels within 10 s" "$log"
	return 0
}

# start_stunnel NAME SESSIOND_PORT: sets PORT and PID.
start_stunnel() {
	name=$1 node_port=$2 log=$DIR/$1.log
	for attempt in 1 2 3; do
		PORT=$(free_port)
		# The same service name on both (stunnel's session-ID context),
		# sessions shared through sessiond and not tickets, TLS 1.2+.
		# Behind TLS: /bin/cat, one per connection.
		cat >"$DIR/$name.conf" <<EOF
foreground = yes
syslog = no
debug = 5
pid = $DIR/$name.pid
[$SERVICE]
accept = 127.0.0.1:$PORT
exec = /bin/cat
cert = $DIR/server.crt
key = $DIR/server.key
sessiond = 127.0.0.1:$node_port
options = NO_TICKET
sslVersionMin = TLSv1.2
sessionCacheSize = 1000
sessionCacheTimeout = 300
EOF
		stunnel4 "$DIR/$name.conf" >"$log" 2>&1 &
		PID=$!
		PIDS="$PIDS $PID"
		rc=0
		wait_until "$PID" 10 port_listened "$PORT" || rc=$?
		[ "$rc" = 0 ] && return 0
		[ "$rc" = 1 ] && die "stunnel $name did not listen on port $PORT within 10 s" "$log"
		say "   (port $PORT was taken, attempt $attempt; trying another)"
	done
	die "stunnel $name did not start" "$log"
}

# s_client PORT -sess_out|-sess_in: one TLS 1.2 handshake without tickets,
# its output in $DIR/s_client.out.
s_client() {
	timeout 20 openssl s_client -connect "127.0.0.1:$1" -tls1_2 -no_ticket "$2" "$DIR/session.pem" \
		</dev/null >"$DIR/s_client.out" 2>&1 || true
}

say "sessiond Redis demo: everything lives in $DIR"

step "Redis master and one replica"
start_redis redis-master
MASTER_PORT=$PORT
start_redis redis-replica "$MASTER_PORT"
REPLICA_PORT=$PORT
wait_until "$PID" 10 redis_says "$REPLICA_PORT" master_link_status:up INFO replication ||
	die "the replica did not sync with the master within 10 s" "$DIR/redis-replica.log"
say "   master 127.0.0.1:$MASTER_PORT, replica 127.0.0.1:$REPLICA_PORT (in sync)"

step "Two Sentinels watching master '$MASTER_NAME' (quorum 2)"
start_sentinel sentinel-1 "$MASTER_PORT"
S1_PORT=$PORT
start_sentinel sentinel-2 "$MASTER_PORT"
S2_PORT=$PORT
say "   sentinels 127.0.0.1:$S1_PORT and 127.0.0.1:$S2_PORT"

step "A cluster key (32 random bytes, mode 0600) and a test certificate"
(
	umask 077
	head -c 32 /dev/urandom >"$DIR/cluster.key"
)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj /CN=localhost -keyout "$DIR/server.key" -out "$DIR/server.crt" >"$DIR/req.log" 2>&1 ||
	die "openssl could not make a certificate" "$DIR/req.log"
say "   $DIR/cluster.key, $DIR/server.crt"

BACKEND="sentinel://127.0.0.1:$S1_PORT,127.0.0.1:$S2_PORT/$MASTER_NAME"
step "Two sessiond nodes: --backend $BACKEND"
start_node node-1
N1_PORT=$PORT N1_PID=$PID
start_node node-2
N2_PORT=$PORT N2_PID=$PID
say "   node 1 on UDP 127.0.0.1:$N1_PORT, node 2 on UDP 127.0.0.1:$N2_PORT (both found the master)"

step "Two stunnel servers, service [$SERVICE], each on its own node"
start_stunnel stunnel-1 "$N1_PORT"
T1_PORT=$PORT
start_stunnel stunnel-2 "$N2_PORT"
T2_PORT=$PORT
say "   stunnel 1 on TCP 127.0.0.1:$T1_PORT -> node 1; stunnel 2 on TCP 127.0.0.1:$T2_PORT -> node 2"

step "openssl s_client -tls1_2 -no_ticket -sess_out: a full handshake with stunnel 1"
s_client "$T1_PORT" -sess_out
grep -q 'New, TLSv1.2,' "$DIR/s_client.out" ||
	die "the handshake with stunnel 1 failed or was not a new TLS 1.2 session" \
		"$DIR/s_client.out" "$DIR/stunnel-1.log" "$DIR/node-1.log"
SESSION_ID=$(sed -n 's/^ *Session-ID: *\([0-9A-Fa-f]*\).*/\1/p' "$DIR/s_client.out" | head -n 1)
say "   $(grep 'New, TLSv1.2,' "$DIR/s_client.out" | head -n 1 | sed 's/^ *//')"
say "   Session-ID: $SESSION_ID"

step "openssl s_client -sess_in: the same session offered to stunnel 2"
reused=0
attempt=0
while [ "$attempt" -lt "$ATTEMPTS" ]; do
	attempt=$((attempt + 1))
	s_client "$T2_PORT" -sess_in
	if grep -q 'Reused, TLSv1.2,' "$DIR/s_client.out"; then
		reused=$attempt
		break
	fi
	say "   attempt $attempt: not reused ($(grep -m 1 -E '^(New|Reused),' "$DIR/s_client.out" || echo 'no handshake'))"
done
if [ "$reused" -gt 0 ]; then
	say "   $(grep 'Reused, TLSv1.2,' "$DIR/s_client.out" | head -n 1 | sed 's/^ *//') (attempt $reused)"
	say "   RESUMED across the two stunnels: stunnel 2 never saw this session before."
else
	say "   NOT resumed after $ATTEMPTS attempts."
fi

step "What the nodes counted"
for n in 1 2; do
	eval "pid=\$N${n}_PID"
	log=$DIR/node-$n.log
	before=$(grep -c 'stats:' "$log" || true)
	kill -USR1 "$pid"
	wait_until "$pid" 5 sh -c "[ \$(grep -c 'stats:' '$log') -gt $before ]" || true
	line=$(last_stats "$log")
	say "   node $n: puts=$(stat_of "$line" puts) hits=$(stat_of "$line" hits)" \
		"backend_hits=$(stat_of "$line" backend_hits) backend_misses=$(stat_of "$line" backend_misses)" \
		"backend_up=$(stat_of "$line" backend_up)"
done

step "What Redis holds (master, then the replica)"
names=$(redis-cli -h 127.0.0.1 -p "$MASTER_PORT" --scan 2>/dev/null || true)
say "   master: $(redis-cli -h 127.0.0.1 -p "$MASTER_PORT" DBSIZE) key(s): $(printf '%s' "$names" | tr '\n' ' ')"
say "   replica: $(redis-cli -h 127.0.0.1 -p "$REPLICA_PORT" DBSIZE) key(s)"
lower_id=$(printf '%s' "$SESSION_ID" | tr 'A-F' 'a-f')
if [ -n "$lower_id" ] && printf '%s' "$names" | tr 'A-F' 'a-f' | grep -q "$lower_id"; then
	say "   the session ID appears in a Redis key name (it should not)"
	reused=0
else
	say "   names are keyed hashes (sd:...), values sealed with the cluster key: no session ID,"
	say "   no session bytes in Redis."
fi

if [ "$KEEP" = 1 ]; then
	step "Everything keeps running (--keep); Ctrl-C stops it and removes $DIR"
	say "   openssl s_client -connect 127.0.0.1:$T1_PORT -tls1_2 -no_ticket -sess_out $DIR/s.pem"
	say "   openssl s_client -connect 127.0.0.1:$T2_PORT -tls1_2 -no_ticket -sess_in $DIR/s.pem"
	say "   redis-cli -p $MASTER_PORT --scan;  redis-cli -p $S1_PORT SENTINEL masters"
	say "   kill -USR1 $N1_PID $N2_PID; tail $DIR/node-1.log $DIR/node-2.log"
	say "   failover: kill the master (its pid is in 'redis-cli -p $MASTER_PORT INFO server')"
	wait "$N1_PID" || true
fi

[ "$reused" -gt 0 ] || exit 1
say ""
say "redis-demo: ok"
