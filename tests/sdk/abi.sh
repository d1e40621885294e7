#!/bin/sh
# abi.sh - the ABI guard in make check: scripts/abi-check.sh compares the
# current public headers with the stored 1.0 baseline (abidiff, append-only
# rule), with the frozen headers of the current minor and the 1.0 macro
# values.  Skips when abigail-tools is not installed.
top_srcdir=${top_srcdir:-.}
CC=${PMQ_CC:-cc}
export CC
exec sh "$top_srcdir/scripts/abi-check.sh"
