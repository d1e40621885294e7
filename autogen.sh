#!/bin/sh
# autogen.sh - generate configure (same as autoreconf -fi).
exec autoreconf -fi "$(dirname "$0")"
