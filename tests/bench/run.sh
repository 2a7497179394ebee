#!/bin/sh
# run.sh — what `make bench` runs: tests/bench/run.sh BUILD
#
# Starts four UDP servers on 127.0.0.1 (the raw echo baseline udp_echo, a
# sessiond without a key for v1 and plaintext v2, a second sessiond with a
# cluster key (a fresh random one in the temp dir) for sealed v2, memcached
# with one worker thread), drives each with the same load generator
# (loadgen) at windows 1..64 (plaintext v2 at the headline windows only, to
# keep the run short), and prints a side-by-side table for W=1 and W=32:
# absolute figures, the ratio to the echo server and sessiond against
# memcached. Then the memory benchmark: sessiond's RSS per
# stored session at 100 k and 1 M sessions. Then GETs on nodes with the
# Redis backend (a near-cache hit, and a miss answered from Redis) next to
# the in-memory default and the echo (skipped without redis-server).
# Figures go to $OUT/results.csv
# (every run), $OUT/summary.csv (medians per target and window),
# $OUT/memory.csv, $OUT/redis.csv and $OUT/report.txt; the chart
# (throughput vs window) to docs/bench-throughput.png when gnuplot is there.
#
# Only ratios taken within one run mean anything: the machine is shared and
# noisy. So the targets run interleaved (for each window and repetition:
# echo, sessiond v1, v2, v2 sealed, memcached), each right after the others.
#
# Settings (environment):
#   BENCH_DURATION  measured seconds per run (2), after BENCH_WARMUP (0.3)
#   BENCH_REPS      runs per target at the headline windows 1 and 32 (3);
#                   the table shows medians, the other windows run once
#   BENCH_WINDOWS   windows to sweep ("1 2 4 8 16 32 64")
#   BENCH_SOCKETS   client sockets per run (4)
#   BENCH_MEMORY    session counts for the memory benchmark ("100000 1000000"; "" skips it)
#   BENCH_REDIS     0 skips the Redis backend part (1); more settings there
#   BENCH_PIN       1: pin each server to CPU 1 and the generator to CPU 0 (0)
#   BENCH_OUT       where results go ($BUILD/bench)
#   BENCH_CHART     the PNG (docs/bench-throughput.png)
# Every wait is bounded and every process started here is killed on exit.
set -eu

BUILD=${1:-build}
BIN=$BUILD/bench
LOADGEN=$BIN/loadgen
SESSIOND_BIN=$BUILD/sessiond
DURATION=${BENCH_DURATION:-2}
WARMUP=${BENCH_WARMUP:-0.3}
REPS=${BENCH_REPS:-3}
HEADLINE="1 32"
WINDOWS=${BENCH_WINDOWS:-1 2 4 8 16 32 64}
SOCKETS=${BENCH_SOCKETS:-4}
MEMORY_COUNTS=${BENCH_MEMORY-100000 1000000}
PIN=${BENCH_PIN:-0}
OUT=${BENCH_OUT:-$BUILD/bench}
CHART=${BENCH_CHART:-docs/bench-throughput.png}
# Sessions for the memory benchmark: DER of 200..300 bytes (mean 250: a TLS
# 1.3 stateful ticket is ~250 B, a TLS 1.2 server session ~140 B, so this
# errs on the large side), with the 32-byte v1 key.
MEM_MIN=200
MEM_MAX=300

for f in "$LOADGEN" "$BIN/udp_echo" "$SESSIOND_BIN"; do
	[ -x "$f" ] || {
		echo "bench: $f is missing; run 'make bench'" >&2
		exit 1
	}
done
mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=""

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

# With BENCH_PIN=1 servers run on CPU 1 and the generator on CPU 0. A
# prefix command (taskset execs its argument), so $! stays the server's pid.
SERVER_CPU=""
CLIENT_CPU=""
if [ "$PIN" = 1 ] && command -v taskset >/dev/null 2>&1; then
	SERVER_CPU="taskset -c 1"
	CLIENT_CPU="taskset -c 0"
fi

# wait_for FILE EXTENDED-REGEX: up to 10 s for a line to appear.
wait_for() {
	i=0
	while ! grep -Eq "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 200 ]; then
			echo "bench: timed out waiting for '$2' in $1" >&2
			cat "$1" >&2 || true
			return 1
		fi
		sleep 0.05
	done
}

# field LINE NAME: the value of NAME= in a "result ..." line.
field() {
	printf '%s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"
}

rss_kib() {
	sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"
}

start_echo() {
	$SERVER_CPU "$BIN/udp_echo" >"$TMP/echo.out" 2>&1 &
	ECHO_PID=$!
	PIDS="$PIDS $ECHO_PID"
	wait_for "$TMP/echo.out" '^[0-9]+$'
	ECHO_PORT=$(head -n 1 "$TMP/echo.out")
}

# start_sessiond LOGNAME [ARGS...]: sets SD_PID, SD_PORT, SD_LOG.
start_sessiond() {
	SD_LOG=$TMP/$1.log
	shift
	$SERVER_CPU "$SESSIOND_BIN" -f -l 127.0.0.1 -p 0 "$@" >"$SD_LOG" 2>&1 &
	SD_PID=$!
	PIDS="$PIDS $SD_PID"
	wait_for "$SD_LOG" 'listening on 127\.0\.0\.1:[0-9]+'
	SD_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$SD_LOG" | head -n 1)
}

stop_pid() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# sessiond_stats: SIGUSR1, then the new "stats:" line.
sessiond_stats() {
	before=$(grep -c 'stats:' "$SD_LOG" || true)
	kill -USR1 "$SD_PID"
	i=0
	while [ "$(grep -c 'stats:' "$SD_LOG" || true)" -le "$before" ]; do
		i=$((i + 1))
		[ "$i" -gt 200 ] && return 1
		sleep 0.05
	done
	grep 'stats:' "$SD_LOG" | tail -n 1
}

# memcached refuses to run as root without -u; the UDP port comes from a
# free-port probe, so retry if someone took it in between. -p 0 turns TCP off.
start_memcached() {
	MC_PID=""
	command -v memcached >/dev/null 2>&1 || return 0
	user_opt=""
	[ "$(id -u)" = 0 ] && user_opt="-u nobody"
	for attempt in 1 2 3; do
		MC_PORT=$("$LOADGEN" --free-port)
		# shellcheck disable=SC2086 # $user_opt is empty or two words
		$SERVER_CPU memcached -p 0 -U "$MC_PORT" -l 127.0.0.1 -t 1 -m 256 $user_opt \
			>"$TMP/memcached.log" 2>&1 &
		MC_PID=$!
		PIDS="$PIDS $MC_PID"
		if "$LOADGEN" --target memcached --port "$MC_PORT" --probe >/dev/null 2>&1; then
			return 0
		fi
		echo "bench: memcached attempt $attempt did not answer" >&2
		stop_pid "$MC_PID"
		MC_PID=""
	done
}

machine() {
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
	echo "machine: $(nproc) CPUs ($cpu), $(uname -sr), $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "memcached: $(memcached -V 2>/dev/null || echo absent)"
	echo "settings: duration ${DURATION}s per run, sockets $SOCKETS, windows $WINDOWS," \
		"90% GET / 10% PUT, values 200..2000 B, 10000 keys, pinning=$PIN"
}

REPORT=$OUT/report.txt
CSV=$OUT/results.csv
SUMMARY=$OUT/summary.csv
: >"$REPORT"
: >"$OUT/results.txt"
say() {
	printf '%s\n' "$*" | tee -a "$REPORT"
}

say "== sessiond benchmarks"
machine | tee -a "$REPORT"

start_echo
# The sealed daemon first: start_sessiond overwrites SD_*.
(
	umask 077
	head -c 32 /dev/urandom >"$TMP/cluster.key"
)
start_sessiond sealed --max-memory 256m --key-file "$TMP/cluster.key"
SEALED_PID=$SD_PID SEALED_PORT=$SD_PORT
start_sessiond throughput --max-memory 256m
start_memcached
TARGETS="echo sessiond-v1 sessiond-v2 sessiond-v2-sealed"
[ -n "$MC_PID" ] && TARGETS="$TARGETS memcached"
[ -z "$MC_PID" ] && say "memcached: not installed or not answering; skipped"

echo "target,window,rep,sockets,duration_s,ops_per_s,gets_per_s,mean_us,p50_us,p99_us,p999_us,max_us,lost,server_cpu_us_per_op,server_cpu_pct,client_cpu_pct" >"$CSV"
say ""
say "== throughput sweep (every run in $CSV)"
for w in $WINDOWS; do
	# The headline windows get BENCH_REPS runs per target, the rest one.
	reps=1
	case " $HEADLINE " in *" $w "*) reps=$REPS ;; esac
	rep=0
	while [ "$rep" -lt "$reps" ]; do
		rep=$((rep + 1))
		for t in $TARGETS; do
			key_opt=""
			case $t in
			echo) port=$ECHO_PORT pid=$ECHO_PID ;;
			sessiond-v1) port=$SD_PORT pid=$SD_PID ;;
			sessiond-v2)
				case " $HEADLINE " in *" $w "*) ;; *) continue ;; esac # headline windows only
				port=$SD_PORT pid=$SD_PID
				;;
			sessiond-v2-sealed)
				port=$SEALED_PORT pid=$SEALED_PID key_opt="--key-file $TMP/cluster.key"
				;;
			memcached) port=$MC_PORT pid=$MC_PID ;;
			esac
			# shellcheck disable=SC2086 # $key_opt is empty or two words
			line=$($CLIENT_CPU timeout 120 "$LOADGEN" --target "$t" --port "$port" -w "$w" \
				-c "$SOCKETS" -d "$DURATION" --warmup "$WARMUP" --server-pid "$pid" $key_opt |
				grep '^result ') || {
				echo "bench: loadgen failed for $t at W=$w" >&2
				exit 1
			}
			printf '%s\n' "$line" >>"$OUT/results.txt"
			row="$t,$w,$rep"
			for f in sockets duration_s ops_per_s gets_per_s mean_us p50_us p99_us p999_us \
				max_us lost server_cpu_us_per_op server_cpu_pct client_cpu_pct; do
				row="$row,$(field "$line" "$f")"
			done
			echo "$row" >>"$CSV"
			printf '  W=%-3s #%s %-18s %9s ops/s  mean %7s us  p99 %8s us  lost %-4s cpu %5s us/op\n' \
				"$w" "$rep" "$t" "$(field "$line" ops_per_s)" "$(field "$line" mean_us)" \
				"$(field "$line" p99_us)" "$(field "$line" lost)" \
				"$(field "$line" server_cpu_us_per_op)"
		done
	done
done
STATS=$(sessiond_stats || echo "stats: unavailable")
say "sessiond after the sweep: ${STATS#*stats: }"

# Medians per target and window (each figure on its own) -> $SUMMARY, which
# the table, the verdicts and the chart read.
awk -F, '
function median(list,   n, a, i, j, x) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) {
		x = a[i] + 0
		for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]
		a[j + 1] = x
	}
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR == 1 { next }
{
	k = $1 "," $2
	if (!(k in reps)) order[++n] = k
	reps[k]++
	for (c = 6; c <= 16; c++) if ($c != "") v[k, c] = v[k, c] " " $c
	lost[k] += $13
}
END {
	print "target,window,reps,ops_per_s,gets_per_s,mean_us,p50_us,p99_us,p999_us,max_us,lost,server_cpu_us_per_op,server_cpu_pct,client_cpu_pct"
	for (i = 1; i <= n; i++) {
		k = order[i]
		printf "%s,%d", k, reps[k]
		for (c = 6; c <= 12; c++) printf ",%.1f", median(v[k, c])
		printf ",%d", lost[k]
		for (c = 14; c <= 16; c++) printf ",%s", v[k, c] == "" ? "" : sprintf("%.2f", median(v[k, c]))
		printf "\n"
	}
}' "$CSV" >"$SUMMARY"

# The side-by-side table for one window, with ratios to echo.
table() {
	awk -F, -v w="$1" '
	NR > 1 && $2 == w { n++; t[n] = $1; reps = $3; ops[$1] = $4; mean[$1] = $6; p50[$1] = $7
	                    p99[$1] = $8; p999[$1] = $9; lost[$1] = $11; cpu[$1] = $12 }
	END {
		if (!n) exit
		printf "W=%-3s %-18s %10s %7s %8s %8s %8s %9s %5s %10s %8s\n", w, "target", "ops/s",
		       "x echo", "mean us", "p50 us", "p99 us", "p99.9 us", "lost", "cpu us/op", "x echo"
		for (i = 1; i <= n; i++) {
			k = t[i]
			printf "      %-18s %10.0f %7.2f %8.1f %8.1f %8.1f %9.1f %5d %10s %8s\n", k, ops[k],
			       ops["echo"] ? ops[k] / ops["echo"] : 0, mean[k], p50[k], p99[k], p999[k],
			       lost[k], cpu[k] == "" ? "-" : cpu[k],
			       cpu[k] == "" || !cpu["echo"] ? "-" : sprintf("%.2f", cpu[k] / cpu["echo"])
		}
		for (i = 1; i <= n; i++) {
			k = t[i]
			if (ops["memcached"] && k ~ /^sessiond/)
				printf "      %s / memcached: %.2f x throughput, %.2f x mean latency, %.2f x server CPU per op\n",
				       k, ops[k] / ops["memcached"], mean[k] / mean["memcached"],
				       cpu["memcached"] ? cpu[k] / cpu["memcached"] : 0
		}
		printf "      (medians of %d run(s) of %s s each)\n", reps, dur
	}' dur="$DURATION" "$SUMMARY"
}

say ""
say "== side by side (medians; only ratios within one run count)"
for w in $HEADLINE; do
	case " $WINDOWS " in *" $w "*) table "$w" | tee -a "$REPORT" ;; esac
done

# The issue's targets. Throughput and latency ratios are taken per repetition
# (each repetition runs the targets back to back) and the median ratio is
# judged; the range shows how much the machine moved under us.
verdict() {
	awk -F, '
	function median(list,   n, a, i, j, x) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++) {
			x = a[i] + 0
			for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]
			a[j + 1] = x
		}
		lo = a[1]; hi = a[n]
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function ratios(num, den, w, col,   r, list) {
		list = ""
		for (r = 1; r <= maxrep; r++)
			if ((num "," w "," r, col) in v && (den "," w "," r, col) in v && v[den "," w "," r, col] > 0)
				list = list " " v[num "," w "," r, col] / v[den "," w "," r, col]
		return list
	}
	function check(name, list, op, limit, unit,   m, ok) {
		if (list == "") return
		m = median(list)
		ok = (op == ">=") ? m >= limit : m <= limit
		printf "  %-44s %7.2f%s [%.2f..%.2f] (target %s %s%s): %s\n", name, m, unit, lo, hi, op,
		       limit, unit, ok ? "met" : "NOT met"
	}
	function info(name, list,   m) {
		if (list == "") return
		m = median(list)
		printf "  %-44s %7.2fx [%.2f..%.2f] (for reference)\n", name, m, lo, hi
	}
	NR > 1 {
		v[$1 "," $2 "," $3, 6] = $6; v[$1 "," $2 "," $3, 8] = $8; v[$1 "," $2 "," $3, 10] = $10
		if ($3 > maxrep) maxrep = $3
		if ($1 == "sessiond-v1") p99[$2] = p99[$2] " " $10
		if ($1 == "sessiond-v2-sealed") sp99[$2] = sp99[$2] " " $10
	}
	END {
		check("sessiond v1 W=32 throughput / echo", ratios("sessiond-v1", "echo", 32, 6), ">=", 0.85, "x")
		check("sessiond v1 W=32 throughput / memcached", ratios("sessiond-v1", "memcached", 32, 6), ">=", 1.6, "x")
		check("sessiond v1 W=1 mean latency / echo", ratios("sessiond-v1", "echo", 1, 8), "<=", 1.15, "x")
		check("sessiond v1 p99 at W=32", p99[32], "<=", 1000, " us")
		check("sessiond v1 p99 at W=64", p99[64], "<=", 1000, " us")
		check("sealed v2 W=32 throughput / echo", ratios("sessiond-v2-sealed", "echo", 32, 6), ">=", 0.7, "x")
		check("sealed v2 W=1 throughput / echo", ratios("sessiond-v2-sealed", "echo", 1, 6), ">=", 0.7, "x")
		check("sealed v2 p99 at W=32", sp99[32], "<=", 1000, " us")
		info("plain v2 W=32 throughput / echo", ratios("sessiond-v2", "echo", 32, 6))
		info("plain v2 W=32 throughput / v1", ratios("sessiond-v2", "sessiond-v1", 32, 6))
		info("sealed v2 W=32 throughput / v1", ratios("sessiond-v2-sealed", "sessiond-v1", 32, 6))
		info("sealed v2 W=1 mean latency / echo", ratios("sessiond-v2-sealed", "echo", 1, 8))
	}' "$CSV"
}
say ""
say "== targets (issue 5; median of per-repetition ratios, [min..max])"
verdict | tee -a "$REPORT"

stop_pid "$SD_PID"
stop_pid "$SEALED_PID"
[ -n "$MC_PID" ] && stop_pid "$MC_PID"

if command -v gnuplot >/dev/null 2>&1; then
	mkdir -p "$(dirname "$CHART")"
	sub="$(nproc) vCPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(date -u +%Y-%m-%d), ${DURATION} s per point, $SOCKETS sockets"
	gnuplot -e "csv='$SUMMARY'; out='$CHART'; subtitle='$sub'" tests/bench/plot.gp &&
		say "chart: $CHART"
else
	say "chart: gnuplot not installed, skipped"
fi

# Memory: a fresh daemon per count, RSS before and after storing N sessions.
if [ -n "$MEMORY_COUNTS" ]; then
	say ""
	say "== memory per stored session (values ${MEM_MIN}..${MEM_MAX} B uniform + 32 B key)"
	echo "sessions,entries,rss_before_kib,rss_after_kib,bytes_per_session,payload_per_session,overhead_per_session,charged_per_session,fill_puts_per_s" >"$OUT/memory.csv"
	say "$(printf '  %9s %9s %12s %12s %11s %11s %12s' sessions entries "RSS delta MiB" "bytes/sess" "payload/s" "overhead/s" "charged/sess")"
	for n in $MEMORY_COUNTS; do
		start_sessiond "memory-$n" --max-memory 4g
		before=$(rss_kib "$SD_PID")
		fill=$(timeout 300 "$LOADGEN" --target sessiond-v1 --port "$SD_PORT" -c 1 --fill-only \
			--keys "$n" --min-size "$MEM_MIN" --max-size "$MEM_MAX" | grep '^fill ') || {
			echo "bench: fill of $n sessions failed" >&2
			exit 1
		}
		stats=$(sessiond_stats) || {
			echo "bench: no stats line from sessiond" >&2
			exit 1
		}
		after=$(rss_kib "$SD_PID")
		entries=$(printf '%s\n' "$stats" | sed -n 's/.* entries=\([0-9]*\).*/\1/p')
		charged=$(printf '%s\n' "$stats" | sed -n 's/.* bytes=\([0-9]*\).*/\1/p')
		payload=$(field "$fill" payload_bytes)
		rate=$(field "$fill" puts_per_s)
		row=$(awk -v n="$n" -v e="$entries" -v b="$before" -v a="$after" -v p="$payload" \
			-v c="$charged" -v r="$rate" 'BEGIN {
			if (e == 0) e = 1
			per = (a - b) * 1024 / e; pay = p / n
			printf "%d,%d,%d,%d,%.1f,%.1f,%.1f,%.1f,%s", n, e, b, a, per, pay, per - pay, c / e, r }')
		echo "$row" >>"$OUT/memory.csv"
		say "$(printf '%s\n' "$row" | awk -F, '{ printf "  %9d %9d %12.1f %11.1f %11.1f %11.1f %12.1f\n",
			$1, $2, ($4 - $3) / 1024, $5, $6, $7, $8 }')"
		[ "$entries" -lt "$n" ] && say "  note: $((n - entries)) of $n NEW datagrams were not stored (dropped or evicted)"
		last_n=$n
		if [ "$n" != "${MEMORY_COUNTS##* }" ]; then
			stop_pid "$SD_PID"
		fi
	done
	awk -F, 'NR > 1 { o = $7 } END { if (NR > 1) printf "  %-46s %8.1f B (target <= 64 B): %s\n",
		"overhead per session beyond key+value (largest N)", o, o <= 64 ? "met" : "NOT met" }' \
		"$OUT/memory.csv" | tee -a "$REPORT"

	# GETs against the largest cache: the hit path then misses the CPU
	# caches (and TLB) at every step, which 10000 keys hide. The echo has
	# no table, so its key count does not matter (10000 keys: a quick fill).
	say ""
	say "== W=32 GETs with $last_n sessions stored (values ${MEM_MIN}..${MEM_MAX} B; $REPS runs each, medians)"
	rep=0
	: >"$TMP/scale"
	while [ "$rep" -lt "$REPS" ]; do
		rep=$((rep + 1))
		for t in echo sessiond-v1; do
			if [ "$t" = echo ]; then
				args="--port $ECHO_PORT --server-pid $ECHO_PID --keys 10000"
			else
				args="--port $SD_PORT --server-pid $SD_PID --keys $last_n --no-fill"
			fi
			# shellcheck disable=SC2086 # $args is a list of options
			line=$($CLIENT_CPU timeout 120 "$LOADGEN" --target "$t" $args -w 32 -c "$SOCKETS" \
				-d "$DURATION" --warmup "$WARMUP" --min-size "$MEM_MIN" --max-size "$MEM_MAX" |
				grep '^result ') || {
				echo "bench: loadgen failed for $t with $last_n keys" >&2
				exit 1
			}
			echo "$t $(field "$line" ops_per_s) $(field "$line" p99_us) $(field "$line" server_cpu_us_per_op) $(field "$line" hits) $(field "$line" misses)" >>"$TMP/scale"
		done
	done
	awk '
	function median(list,   n, a, i, j, x) {
		n = split(list, a, " ")
		for (i = 2; i <= n; i++) {
			x = a[i] + 0
			for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]
			a[j + 1] = x
		}
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ ops[$1] = ops[$1] " " $2; p99[$1] = p99[$1] " " $3; cpu[$1] = cpu[$1] " " $4; hits[$1] += $5; miss[$1] += $6 }
	END {
		e = median(ops["echo"]); ec = median(cpu["echo"])
		for (k = 1; k <= 2; k++) {
			t = k == 1 ? "echo" : "sessiond-v1"
			printf "  %-12s %9.0f ops/s (%.2f x echo)  p99 %7.1f us  server CPU %5.2f us/op (%.2f x echo)  hits %d misses %d\n",
			       t, median(ops[t]), median(ops[t]) / e, median(p99[t]), median(cpu[t]),
			       median(cpu[t]) / ec, hits[t], miss[t]
		}
	}' "$TMP/scale" | tee -a "$REPORT"
	stop_pid "$SD_PID"
fi

# Redis backend (issue 7): GET throughput and latency on sessiond nodes
# with `--backend redis://` next to the in-memory default and the echo, in
# the same run, interleaved per repetition like the sweep. One redis-server
# (no persistence) on loopback; all four targets get GETs only (the sweep
# above has the 90/10 mix), values of ${MEM_MIN}..${MEM_MAX} B (real
# session sizes) and REDIS_KEYS keys:
#   echo           the raw UDP baseline
#   memory         a sessiond without a backend (the default)
#   redis-local    node 1 with --backend, which stored every key: GETs hit
#                  its near cache
#   redis-backend  node 2 (same Redis, same cluster key), keys in
#                  order (loadgen --sequential): node 2 never stored them,
#                  so each GET misses its near cache and waits for Redis.
#                  A fresh node 2 per run, so no key is asked twice.
# The keys are stored once through node 1 (written through to Redis) and
# once into the memory daemon. Node 1's fill is paced (loadgen --fill-rate):
# a node drops write-throughs that Redis cannot take in time (at most 1024
# in flight), and on this shared VM an unpaced fill (~90 k PUTs/s) lost most
# of them. The report says how many keys Redis holds, and which share of
# node 2's GETs Redis answered with a value (a key Redis lacks still costs
# the round trip). Redis's own CPU per backend GET comes from /proc.
# Settings: BENCH_REDIS (1; 0 skips), BENCH_REDIS_KEYS (400000: more than one
# run's backend GETs here, ~90 k/s at W=32 since deferred answers are sent in
# batches; a run that wraps reports wraps>0 and measures near-cache hits),
# BENCH_REDIS_FILL_RATE (50000 PUTs/s), BENCH_REDIS_REPS (runs per target
# at W=32, 2; W=1 runs once): about 50 s in all here.
# Files: $OUT/redis.csv (every run), and the table in the report.
REDIS_KEYS=${BENCH_REDIS_KEYS:-400000}
REDIS_FILL_RATE=${BENCH_REDIS_FILL_RATE:-50000}
REDIS_REPS=${BENCH_REDIS_REPS:-2}

# proc_cpu_ticks PID: user + system clock ticks of PID so far.
proc_cpu_ticks() {
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# start_redis: sets RD_PID and RD_PORT. The port comes from a UDP probe, so
# retry if TCP has it taken.
start_redis() {
	for attempt in 1 2 3; do
		RD_PORT=$("$LOADGEN" --free-port)
		$SERVER_CPU redis-server --port "$RD_PORT" --bind 127.0.0.1 --save "" --appendonly no \
			--dir "$TMP" --logfile "$TMP/redis.log" &
		RD_PID=$!
		PIDS="$PIDS $RD_PID"
		i=0
		while [ "$i" -lt 200 ] && kill -0 "$RD_PID" 2>/dev/null; do
			[ "$(redis-cli -p "$RD_PORT" PING 2>/dev/null)" = PONG ] && return 0
			i=$((i + 1))
			sleep 0.05
		done
		echo "bench: redis-server attempt $attempt did not answer" >&2
		stop_pid "$RD_PID"
	done
	return 1
}

# start_node LOGNAME: a sessiond on the bench Redis (sets SD_*), waited for
# until its stats say backend_up=1.
start_node() {
	start_sessiond "$1" --max-memory 256m --key-file "$TMP/cluster.key" --allow-plaintext \
		--allow 127.0.0.1/32 --backend "redis://127.0.0.1:$RD_PORT"
	i=0
	until sessiond_stats | grep -q ' backend_up=1'; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "bench: sessiond $1 never reached Redis" >&2
			cat "$SD_LOG" >&2
			return 1
		fi
		sleep 0.05
	done
}

# redis_run TARGET W REP: one loadgen run, one line appended to redis.csv.
redis_run() {
	t=$1 w=$2 rep=$3 extra="" share="" rcpu=""
	case $t in
	echo) port=$ECHO_PORT pid=$ECHO_PID extra="--keys 10000" ;;
	memory) port=$MEMD_PORT pid=$MEMD_PID extra="--keys $REDIS_KEYS --no-fill" ;;
	redis-local) port=$NODE1_PORT pid=$NODE1_PID extra="--keys $REDIS_KEYS --no-fill" ;;
	redis-backend)
		start_node "redis-node2-w$w-$rep" || exit 1
		port=$SD_PORT pid=$SD_PID
		extra="--keys $REDIS_KEYS --no-fill --sequential"
		ticks0=$(proc_cpu_ticks "$RD_PID")
		;;
	esac
	target=sessiond-v1
	[ "$t" = echo ] && target="echo"
	# shellcheck disable=SC2086 # $extra is a list of options
	line=$($CLIENT_CPU timeout 120 "$LOADGEN" --target "$target" --port "$port" -w "$w" \
		-c "$SOCKETS" -d "$DURATION" --warmup "$WARMUP" --server-pid "$pid" --get-ratio 1 \
		--min-size "$MEM_MIN" --max-size "$MEM_MAX" $extra | grep '^result ') || {
		echo "bench: loadgen failed for $t at W=$w" >&2
		exit 1
	}
	if [ "$t" = redis-backend ]; then
		ticks1=$(proc_cpu_ticks "$RD_PID")
		stats=$(sessiond_stats) || stats=""
		gets=$(printf '%s\n' "$stats" | sed -n 's/.* gets=\([0-9]*\).*/\1/p')
		bhits=$(printf '%s\n' "$stats" | sed -n 's/.* backend_hits=\([0-9]*\).*/\1/p')
		share=$(awk -v g="${gets:-0}" -v b="${bhits:-0}" 'BEGIN { printf "%.4f", g ? b / g : 0 }')
		# Redis CPU per backend GET, warm-up included on both sides.
		rcpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v b="${bhits:-0}" \
			'BEGIN { printf "%.2f", b ? t * 1e6 / hz / b : 0 }')
		stop_pid "$SD_PID"
	fi
	echo "$t,$w,$rep,$(field "$line" ops_per_s),$(field "$line" gets_per_s),$(field "$line" mean_us),$(field "$line" p50_us),$(field "$line" p99_us),$(field "$line" lost),$(field "$line" server_cpu_us_per_op),$(field "$line" wraps),$share,$rcpu" >>"$OUT/redis.csv"
	printf '  W=%-3s #%s %-14s %9s ops/s  mean %7s us  p99 %8s us  lost %-4s cpu %5s us/op%s\n' \
		"$w" "$rep" "$t" "$(field "$line" ops_per_s)" "$(field "$line" mean_us)" \
		"$(field "$line" p99_us)" "$(field "$line" lost)" "$(field "$line" server_cpu_us_per_op)" \
		"${share:+  via Redis $share, Redis $rcpu us/GET}"
}

if [ "${BENCH_REDIS:-1}" != 0 ]; then
	say ""
	say "== Redis backend: GETs only, on nodes with --backend redis:// (values ${MEM_MIN}..${MEM_MAX} B, $REDIS_KEYS keys)"
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		say "redis: redis-server or redis-cli not installed; skipped"
	elif ! start_redis; then
		say "redis: redis-server did not start; skipped"
	else
		say "redis: $(redis-server --version | sed 's/ sha=.*//')"
		start_sessiond redis-memory --max-memory 256m
		MEMD_PID=$SD_PID MEMD_PORT=$SD_PORT
		start_node redis-node1 || exit 1
		NODE1_PID=$SD_PID NODE1_PORT=$SD_PORT
		for port in $MEMD_PORT $NODE1_PORT; do
			rate=""
			[ "$port" = "$NODE1_PORT" ] && rate="--fill-rate $REDIS_FILL_RATE"
			# shellcheck disable=SC2086 # $rate is empty or two words
			timeout 300 "$LOADGEN" --target sessiond-v1 --port "$port" -c 1 --fill-only \
				--keys "$REDIS_KEYS" --min-size "$MEM_MIN" --max-size "$MEM_MAX" $rate >/dev/null || {
				echo "bench: the fill of $REDIS_KEYS sessions on port $port failed" >&2
				exit 1
			}
		done
		# Node 1 writes through asynchronously: wait (bounded, 10 s) until
		# Redis holds every key, or its count stops moving (writes dropped).
		i=0 last=-1
		while :; do
			now=$(redis-cli -p "$RD_PORT" DBSIZE)
			[ "$now" -ge "$REDIS_KEYS" ] || [ "$now" = "$last" ] || [ "$i" -ge 100 ] && break
			last=$now i=$((i + 1))
			sleep 0.1
		done
		say "redis: $(redis-cli -p "$RD_PORT" DBSIZE) of $REDIS_KEYS keys stored through node 1" \
			"at <= $REDIS_FILL_RATE PUTs/s;" \
			"used_memory $(redis-cli -p "$RD_PORT" INFO memory | sed -n 's/^used_memory_human:\([^[:space:]]*\).*/\1/p')"
		echo "target,window,rep,ops_per_s,gets_per_s,mean_us,p50_us,p99_us,lost,server_cpu_us_per_op,wraps,backend_share,redis_cpu_us_per_get" >"$OUT/redis.csv"
		for w in 32 1; do
			reps=$REDIS_REPS
			[ "$w" = 1 ] && reps=1
			rep=0
			while [ "$rep" -lt "$reps" ]; do
				rep=$((rep + 1))
				for t in echo memory redis-local redis-backend; do
					redis_run "$t" "$w" "$rep"
				done
			done
		done
		stop_pid "$NODE1_PID"
		stop_pid "$MEMD_PID"
		stop_pid "$RD_PID"
		# Medians per target and window, with the ratios to echo and to
		# the in-memory default taken per repetition (median of ratios).
		say ""
		awk -F, '
		function median(list,   n, a, i, j, x) {
			n = split(list, a, " ")
			for (i = 2; i <= n; i++) {
				x = a[i] + 0
				for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]
				a[j + 1] = x
			}
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		NR == 1 { next }
		{
			k = $1 "," $2
			ops[k] = ops[k] " " $4; mean[k] = mean[k] " " $6; p99[k] = p99[k] " " $8
			cpu[k] = cpu[k] " " $10; lost[k] += $9; wraps[k] += $11
			if ($12 != "") share[k] = share[k] " " $12
			if ($13 != "") rcpu[k] = rcpu[k] " " $13
			run[$1, $2, $3, "ops"] = $4; run[$1, $2, $3, "p99"] = $8; run[$1, $2, $3, "mean"] = $6
			if ($3 > maxrep[$2]) maxrep[$2] = $3
		}
		function ratio(num, den, w, f,   r, list) {
			list = ""
			for (r = 1; r <= maxrep[w]; r++)
				if (run[den, w, r, f] > 0) list = list " " run[num, w, r, f] / run[den, w, r, f]
			return list == "" ? 0 : median(list)
		}
		END {
			n = split("echo memory redis-local redis-backend", t, " ")
			for (wi = 1; wi <= 2; wi++) {
				w = wi == 1 ? 32 : 1
				printf "W=%-3s %-14s %10s %7s %7s %8s %8s %8s %5s %9s\n", w, "target", "ops/s", "x echo",
				       "x mem", "mean us", "p99 us", "p99 x mem", "lost", "cpu us/op"
				for (i = 1; i <= n; i++) {
					k = t[i] "," w
					if (!(k in ops)) continue
					printf "      %-14s %10.0f %7.2f %7.2f %8.1f %8.1f %8.2f %5d %9.2f\n", t[i],
					       median(ops[k]), ratio(t[i], "echo", w, "ops"), ratio(t[i], "memory", w, "ops"),
					       median(mean[k]), median(p99[k]), ratio(t[i], "memory", w, "p99"), lost[k],
					       median(cpu[k])
				}
				k = "redis-backend," w
				if (k in share)
					printf "      redis-backend: %.1f %% of GETs answered from Redis, Redis CPU %.2f us per GET, wraps %d\n",
					       100 * median(share[k]), median(rcpu[k]), wraps[k]
				printf "      (medians of %d run(s) of %s s; ratios: median of per-repetition ratios)\n",
				       maxrep[w], dur
			}
		}' dur="$DURATION" "$OUT/redis.csv" | tee -a "$REPORT"
	fi
fi
stop_pid "$ECHO_PID"

# TLS handshakes (tests/bench/handshake.c, issue 5 part 2): two in-process
# TLS servers with one certificate behind a round-robin chooser, one client
# reconnecting with its last session; cases (a) no cache, (b) each server's
# own cache, (c) sessiond shared cache, (d) shared ticket keys set by hand;
# TLS 1.2 and 1.3; handshakes/s, resumption rate and server CPU per full and
# resumed handshake. It starts its own sessiond. Then the issue's target
# (server CPU resumed through sessiond / resumed from the local cache) again
# with the TLS server and sessiond pinned to one CPU and to two: on a VM,
# where sessiond runs decides most of what a lookup costs.
# Settings: BENCH_HANDSHAKES (1; 0 skips this part), BENCH_HS_N (recorded
# handshakes per case, 2000), BENCH_HS_SECONDS (cap per case, 10).
# Files: $OUT/handshake.csv (one line per case), $OUT/handshake.txt, and
# $OUT/handshake-same.* / handshake-split.* for the pinned runs.
if [ "${BENCH_HANDSHAKES:-1}" != 0 ]; then
	HS_N=${BENCH_HS_N:-2000}
	HS_SECONDS=${BENCH_HS_SECONDS:-10}
	say ""
	say "== TLS handshakes ($HS_N per case; every case in $OUT/handshake.csv)"
	if [ ! -x "$BIN/handshake" ]; then
		say "handshake: $BIN/handshake not built, skipped"
	else
		SESSIOND=$SESSIOND_BIN timeout 900 "$BIN/handshake" -n "$HS_N" -d "$HS_SECONDS" \
			--csv "$OUT/handshake.csv" >"$OUT/handshake.txt" 2>&1 || {
			cat "$OUT/handshake.txt" >&2
			echo "bench: the handshake benchmark failed" >&2
			exit 1
		}
		grep -v '^result ' "$OUT/handshake.txt" | tee -a "$REPORT"
		pins="same"
		[ "$(nproc)" -ge 2 ] && pins="same split"
		for pin in $pins; do
			say ""
			SESSIOND=$SESSIOND_BIN timeout 300 "$BIN/handshake" -n "$HS_N" -d "$HS_SECONDS" \
				-c b-local-same,c-sessiond-only,c-sessiond-nostore --pin "$pin" \
				--csv "$OUT/handshake-$pin.csv" >"$OUT/handshake-$pin.txt" 2>&1 || {
				cat "$OUT/handshake-$pin.txt" >&2
				echo "bench: the handshake benchmark failed with --pin $pin" >&2
				exit 1
			}
			grep -E '^(placement|UDP floor|target)' "$OUT/handshake-$pin.txt" | tee -a "$REPORT"
		done
	fi
fi
say ""
say "report: $REPORT"
