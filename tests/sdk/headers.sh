#!/bin/sh
# headers.sh - header hygiene of the installed plugin ABI: each public
# header compiles on its own (it includes what it uses, nothing from core/)
# as strict C99 with -pedantic -Wall -Wextra -Werror, and as C++ under
# g++ -fsyntax-only (extern "C" guards, no C-only constructs).  version.h
# holds only macros, so every test file adds a declaration that uses the
# header (an empty translation unit is not ISO C).
top_srcdir=${top_srcdir:-.}
CC=${PMQ_CC:-cc}
CXX=${CXX:-g++}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-headers.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

have_cxx=1
if ! command -v "$CXX" >/dev/null 2>&1; then
	echo "note: $CXX not found: the C++ half is not run"
	have_cxx=
fi

failures=0
n=0
for h in "$top_srcdir"/include/plexmq/*.h; do
	name=$(basename "$h")
	# Only the directory above plexmq/: exactly what pkg-config gives.
	cat >"$tmp/t.c" <<C
#include <plexmq/$name>
/* Uses the header, so the unit is never empty. */
extern const int pmq_header_check[PMQ_ABI_MAJOR];
C
	n=$((n + 1))
	if ! "$CC" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
	    -I"$top_srcdir/include" "$tmp/t.c" >"$tmp/out" 2>&1; then
		echo "FAIL: $name alone as C99 -pedantic -Werror:"
		cat "$tmp/out"
		failures=$((failures + 1))
	else
		echo "ok: $name (C99)"
	fi
	[ -n "$have_cxx" ] || continue
	cp "$tmp/t.c" "$tmp/t.cc"
	if ! "$CXX" -fsyntax-only -Wall -Wextra -Werror -pedantic \
	    -I"$top_srcdir/include" "$tmp/t.cc" >"$tmp/out" 2>&1; then
		echo "FAIL: $name alone under $CXX -fsyntax-only:"
		cat "$tmp/out"
		failures=$((failures + 1))
	else
		echo "ok: $name (C++)"
	fi
done
[ "$n" -ge 7 ] || { echo "FAIL: only $n headers in include/plexmq"; exit 1; }

# C linkage from C++: a function declared through the headers' types must
# not be mangled into the descriptor's name.
if [ -n "$have_cxx" ]; then
	cat >"$tmp/desc.cc" <<'CC'
#include <plexmq/plexmq.h>
extern "C" { PMQ_EXPORT extern const struct pmq_plugin pmq_plugin_v1; }
const struct pmq_plugin pmq_plugin_v1 = {};
CC
	if "$CXX" -c -fPIC -Wall -Werror -I"$top_srcdir/include" \
	    -o "$tmp/desc.o" "$tmp/desc.cc" >"$tmp/out" 2>&1 &&
	    nm "$tmp/desc.o" | grep -q ' R pmq_plugin_v1$'; then
		echo "ok: a C++ plugin can define the descriptor unmangled"
	else
		echo "FAIL: C++ descriptor:"
		cat "$tmp/out"; nm "$tmp/desc.o" 2>/dev/null
		failures=$((failures + 1))
	fi
fi

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
exit 0
