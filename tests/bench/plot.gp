# plot.gp — the throughput chart of docs/BENCHMARKS.md: operations per
# second against the window (requests in flight), one line per target, from
# the CSV that tests/bench/run.sh writes. Run by run.sh as
#   gnuplot -e "csv='results.csv'; out='chart.png'; subtitle='...'" tests/bench/plot.gp
# CSV: summary.csv (medians), columns target,window,reps,ops_per_s,... (header first).
if (!exists("csv")) csv = "results.csv"
if (!exists("out")) out = "bench-throughput.png"
if (!exists("subtitle")) subtitle = ""

set terminal pngcairo size 900,560 font "sans,11"
set output out
set datafile separator ","
set key top left
set grid
set logscale x 2
set xlabel "window (GET requests in flight)"
set ylabel "operations per second (90 % GET, 10 % PUT)"
set format y "%.0s%c"
set yrange [0:*]
set title "UDP request/answer throughput on 127.0.0.1\n{/*0.8 ".subtitle."}"

# One target's rows, through grep: a filtered `using` (1/0 for the other
# targets) would leave gaps that break the lines.
rows(name) = "< grep '^".name.",' '".csv."'"

plot rows("echo") using 2:4 with linespoints lw 2 pt 7 title "raw UDP echo (limit)", \
     rows("sessiond-v1") using 2:4 with linespoints lw 2 pt 5 title "sessiond v1", \
     rows("sessiond-v2-sealed") using 2:4 with linespoints lw 2 pt 11 title "sessiond v2 sealed (AES-256-GCM)", \
     rows("memcached") using 2:4 with linespoints lw 2 pt 9 title "memcached 1.6 UDP, 1 thread"
