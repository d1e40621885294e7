#!/bin/sh
# scripts/abi-check.sh - fail when the public plugin ABI (include/plexmq/)
# changed in any way other than the one ABI 1.x allows: members appended at
# the end of a struct, with PMQ_ABI_MINOR bumped.  See abi/README.md.
#
#   scripts/abi-check.sh [--include DIR] [--update] [--keep DIR]
#
#   --include DIR  check the headers in DIR/plexmq/ instead of include/
#   --update       rewrite abi/plexmq-plugin-v1.abi from the headers (only
#                  when starting a new major: the 1.x baseline is 1.0's)
#   --keep DIR     leave the probe modules and reports in DIR
#
# Steps (each must pass):
#   1. Build tests/abi/probe.c (-g -Og) against the headers; its exported
#      descriptor reaches every public type.  abidiff it against the stored
#      baseline abi/plexmq-plugin-v1.abi (the 1.0 ABI) with the suppression
#      file abi/append-only.abignore: exit 0 needed.
#   2. The same comparison without suppressions, as a leaf report, checked
#      exactly: every changed type is a struct (not pmq_header) whose size
#      grew and whose only change is members inserted at or past its old
#      end.  (The suppression alone is too lax in libabigail 2.2.)
#   3. Build the probe against tests/abi/vMAJOR.MINOR/ (the frozen headers
#      of the minor the headers claim): no difference at all.  An append
#      without a PMQ_ABI_MINOR bump, or a bump without a frozen copy of the
#      new minor's headers, fails here.
#   4. Every PMQ_* macro of the frozen 1.0 headers still has its value
#      (flags, kinds, limits are ABI too, and DWARF does not carry them).
#
# Environment: CC (default cc), ABIDIFF (abidiff), ABIDW (abidw).  Exit 0
# pass, 1 fail, 77 when abidiff/abidw are missing (so make check skips).
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
inc="$top/include"
update=
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--include) inc=$2; shift 2 ;;
	--update) update=1; shift ;;
	--keep) keep=$2; shift 2 ;;
	-h|--help) sed -n '2,29p' "$0"; exit 0 ;;
	*) echo "abi-check: unknown argument $1" >&2; exit 2 ;;
	esac
done

CC=${CC:-cc}
ABIDIFF=${ABIDIFF:-abidiff}
ABIDW=${ABIDW:-abidw}
for t in "$ABIDIFF" "$ABIDW"; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "abi-check: $t not found (Debian package abigail-tools)"
		exit 77; }
done

baseline="$top/abi/plexmq-plugin-v1.abi"
supp="$top/abi/append-only.abignore"
probe_src="$top/tests/abi/probe.c"
# Structs that may never grow: they travel in arrays (stride = size).
no_append='pmq_header'
# Flags that make abidw's output independent of where it was built.
ABIDW_FLAGS="--no-corpus-path --no-comp-dir-path --short-locs --no-elf-needed --type-id-style hash"

if [ -n "$keep" ]; then
	work=$keep
	mkdir -p "$work" || exit 1
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/plexmq-abi.XXXXXX") || exit 1
	trap 'rm -rf "$work"' EXIT
fi
trap 'exit 1' HUP INT TERM

# version DIR MACRO: the number #defined in DIR/plexmq/version.h.
version() {
	sed -n "s/^#define $2 \\([0-9][0-9]*\\).*/\\1/p" "$1/plexmq/version.h"
}

# probe DIR OUT: build the probe against the headers in DIR only.
probe() {
	"$CC" -std=c11 -g -Og -fPIC -shared -fvisibility=hidden \
	    -I"$1" -o "$2" "$probe_src" 2>"$2.err" || {
		echo "abi-check: cannot build the probe against $1:"
		cat "$2.err"
		exit 1; }
}

major=$(version "$inc" PMQ_ABI_MAJOR)
minor=$(version "$inc" PMQ_ABI_MINOR)
[ -n "$major" ] && [ -n "$minor" ] || {
	echo "abi-check: no PMQ_ABI_MAJOR/MINOR in $inc/plexmq/version.h"; exit 1; }
if [ "$major" != 1 ]; then
	echo "abi-check: headers say ABI $major.$minor; the baseline is for major 1."
	echo "  A new major starts a new baseline: abi/plexmq-plugin-v$major.abi"
	exit 1
fi

probe "$inc" "$work/probe.so"

if [ -n "$update" ]; then
	# shellcheck disable=SC2086
	"$ABIDW" $ABIDW_FLAGS --out-file "$baseline" "$work/probe.so" || exit 1
	echo "abi-check: wrote $baseline (ABI $major.$minor)"
	exit 0
fi

fail=0

# probe_grew_only REPORT: the abidiff report's one change is the probe
# variable's symbol growing (no function, no other variable).
probe_grew_only() {
	awk '
	/^$/ { next }
	/^Functions changes summary: 0 Removed, 0 Changed, 0 Added function/ { next }
	/^Variables changes summary: 0 Removed, 1 Changed, 0 Added variable/ { v = 1; next }
	/^1 Changed variable:$/ { next }
	/^ *\[C\] \x27const pmq_abi_probe pmq_abi_probe\x27 was changed/ { next }
	/^ *size of symbol changed from [0-9]+ to [0-9]+$/ {
		if ($8 + 0 > $6 + 0) { grew = 1; next } }
	{ other = 1 }
	END { exit !(v && grew && !other) }
	' "$1"
}

# 1. The stored baseline, with the append-only suppressions.
"$ABIDIFF" --suppressions "$supp" "$baseline" "$work/probe.so" \
    >"$work/step1.txt" 2>&1
rc=$?
# The probe itself grows by a member per type a minor adds (probe.c's
# rules), which abidiff reports as a change of the probe variable's size
# whatever the suppressions say.  That growth alone is accepted here; step
# 2 still checks the probe struct, like every struct, for a pure append.
if [ $rc -eq 4 ] && probe_grew_only "$work/step1.txt"; then
	rc=0
fi
if [ $rc -ne 0 ]; then
	echo "abi-check: FAIL: abidiff with $supp exits $rc:"
	sed 's/^/  /' "$work/step1.txt"
	fail=1
else
	echo "abi-check: 1. abidiff (append-only suppressions) vs 1.0 baseline: ok"
fi

# 2. The exact append-only rule over the unsuppressed leaf report.
"$ABIDIFF" --leaf-changes-only --no-show-locs "$baseline" "$work/probe.so" \
    >"$work/step2.txt" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 4 ]; then
	echo "abi-check: FAIL: abidiff exits $rc (error or incompatible change):"
	sed 's/^/  /' "$work/step2.txt"
	fail=1
elif ! awk -v deny="$no_append" '
	function bad(why) { print "  " why ": " $0; nbad++ }
	/^$/ { next }
	/^(Leaf changes summary|Changed leaf types summary|Removed\/Changed\/Added (functions|variables) summary)/ { next }
	# The probe variable grows with the probe struct (checked below).
	/^1 Changed variable:$/ { next }
	/^  \[C\] \x27const pmq_abi_probe pmq_abi_probe\x27 was changed:$/ { next }
	/^    type of variable changed:$/ { next }
	/^    size of symbol changed from [0-9]+ to [0-9]+$/ {
		if ($8 + 0 > $6 + 0) next; bad("the probe variable shrank"); next }
	/^\x27struct [A-Za-z_0-9]+\x27 changed:$/ {
		name = $0; sub(/^\x27struct /, "", name); sub(/\x27 changed:$/, "", name)
		inblock = 1; oldsz = -1; grew = 0
		if (index(" " deny " ", " " name " ")) bad("struct " name " may never grow")
		next
	}
	inblock && /^  type size changed from [0-9]+ to [0-9]+ \(in bits\)$/ {
		oldsz = $5 + 0; if ($7 + 0 > oldsz) grew = 1; else bad("struct " name " shrank")
		next
	}
	inblock && /^  [0-9]+ data member insertions?:$/ { next }
	inblock && /^    .*, at offset [0-9]+ \(in bits\)$/ {
		off = $0; sub(/.*, at offset /, "", off); sub(/ .*/, "", off)
		if (oldsz < 0 || off + 0 < oldsz) bad("struct " name ": member inserted before its end")
		next
	}
	{ bad(inblock ? "struct " name ": not an append" : "not a struct append") }
	END { exit nbad > 0 }
    ' "$work/step2.txt" >"$work/step2.bad"; then
	echo "abi-check: FAIL: changes since ABI 1.0 that are not appends at the end of a struct:"
	cat "$work/step2.bad"
	echo "  full leaf report:"
	sed 's/^/    /' "$work/step2.txt"
	fail=1
else
	echo "abi-check: 2. every change since 1.0 is an append at a struct's end: ok"
fi

# 3. Nothing changed since the frozen copy of the minor we claim to be.
frozen="$top/tests/abi/v$major.$minor"
if [ ! -f "$frozen/plexmq/version.h" ]; then
	echo "abi-check: FAIL: the headers say ABI $major.$minor but there is no frozen"
	echo "  copy $frozen/plexmq/ (after bumping PMQ_ABI_MINOR: cp -r include/plexmq $frozen/)"
	fail=1
else
	probe "$frozen" "$work/frozen.so"
	"$ABIDIFF" --leaf-changes-only --no-show-locs "$work/frozen.so" \
	    "$work/probe.so" >"$work/step3.txt" 2>&1
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "abi-check: FAIL: the ABI differs from the frozen $major.$minor headers"
		echo "  ($frozen): an append needs PMQ_ABI_MINOR bumped, a changelog line"
		echo "  in version.h and a new frozen copy tests/abi/v$major.<new minor>/."
		sed 's/^/    /' "$work/step3.txt"
		fail=1
	else
		echo "abi-check: 3. identical to the frozen $major.$minor headers: ok"
	fi
fi

# 4. Macro values of 1.0 (flags, kinds, magic) are still there, unchanged.
macros() {
	echo '#include <plexmq/plexmq.h>' |
	    "$CC" -E -dM -I"$1" -x c - 2>/dev/null |
	    grep -E '^#define PMQ_[A-Z0-9_]+[ (]' |
	    grep -v -E '^#define (PMQ_ABI_MINOR|PMQ_TARGET_ABI_MINOR) ' |
	    sed 's/[[:space:]][[:space:]]*/ /g' | sort
}
macros "$top/tests/abi/v1.0" >"$work/m.old"
macros "$inc" >"$work/m.new"
if [ ! -s "$work/m.old" ]; then
	echo "abi-check: FAIL: no macros read from tests/abi/v1.0"
	fail=1
elif [ -n "$(comm -23 "$work/m.old" "$work/m.new")" ]; then
	echo "abi-check: FAIL: 1.0 macros removed or changed:"
	comm -23 "$work/m.old" "$work/m.new" | sed 's/^/  /'
	fail=1
else
	echo "abi-check: 4. the $(wc -l <"$work/m.old") PMQ_* macros of 1.0 are unchanged: ok"
fi

if [ $fail -ne 0 ]; then
	echo "abi-check: FAILED (ABI $major.$minor, headers $inc)"
	exit 1
fi
echo "abi-check: ABI $major.$minor is append-only compatible with 1.0"
exit 0
