#!/bin/sh
# Runs every test program under BUILD/tests and every tests/shell/*.sh script,
# adds up Check's per-binary summaries, and ends with one line
# "check: N passed, N failed" (the exit status says the same).
#
# Test programs find what they drive through the environment: SESSIOND,
# SESSIONCTL and BUILD, so the sanitizer pass tests the sanitizer binaries.
set -u
BUILD=${1:-build}
export BUILD
SESSIOND=$(cd "$BUILD" && pwd)/sessiond
SESSIONCTL=$(cd "$BUILD" && pwd)/sessionctl
export SESSIOND SESSIONCTL
passed=0
failed=0
failed_names=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in $(find "$BUILD/tests" -type f -perm -u+x 2>/dev/null | sort) $(ls tests/shell/*.sh 2>/dev/null); do
	name=${t#"$BUILD"/}
	echo "== $name"
	"$t" >"$log" 2>&1
	rc=$?
	cat "$log"
	# Check prints "NN%: Checks: C, Failures: F, Errors: E" per suite.
	summary=$(sed -n 's/^[0-9]*%: Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$log" |
		awk '{c+=$1; f+=$2+$3} END {if (NR) print c-f, f}')
	if [ -n "$summary" ]; then
		set -- $summary
		passed=$((passed + $1))
		failed=$((failed + $2))
		[ "$rc" -ne 0 ] && [ "$2" -eq 0 ] && failed=$((failed + 1))
	elif [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
	[ "$rc" -ne 0 ] && failed_names="$failed_names $name"
done

[ -n "$failed_names" ] && echo "failing:$failed_names"
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ -z "$failed_names" ]
