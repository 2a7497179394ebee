#!/bin/sh
# library_exports.sh — libsessionc.so exports its API (sc_*) and nothing
# else: the codec it carries (proto_*, keyfile_*) stays private, so no
# program can come to depend on it (client/libsessionc.map).
set -eu
so="${BUILD:-build}/libsessionc.so.1"
[ -f "$so" ] || { echo "library_exports: $so not built" >&2; exit 1; }
syms=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {sub(/@.*/, "", $3); print $3}')
echo "$syms" | grep -qx 'sc_client_new' || { echo "library_exports: sc_client_new not exported" >&2; exit 1; }
echo "$syms" | grep -qx 'sc_attach' || { echo "library_exports: sc_attach not exported" >&2; exit 1; }
others=$(echo "$syms" | grep -v '^sc_' || true)
if [ -n "$others" ]; then
	echo "library_exports: exported beyond sc_*: $(echo $others | head -c 300)" >&2
	exit 1
fi
echo "library_exports: $(echo "$syms" | wc -l) symbols, all sc_*"
