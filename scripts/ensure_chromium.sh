#!/usr/bin/env bash
# Make sure the system Chromium the browser tests drive is installed.
# Playwright's own browser download does not work everywhere, so the tests
# launch Debian's chromium package (/usr/bin/chromium, or $CHROMIUM_PATH).
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<MSG
error: the browser tests need Chromium at $CHROMIUM, and it is not installed.
Install it as root ('apt-get install -y chromium' on Debian/Ubuntu), or point
CHROMIUM_PATH at a Chromium/Chrome executable, then run the tests again.
MSG
    exit 1
fi

say "Installing chromium for the browser tests (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first (fast, offline-friendly).
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q chromium >/dev/null || {
        echo "error: 'apt-get install -y chromium' failed; install Chromium and rerun" >&2
        exit 1
    }
fi
[ -x "$CHROMIUM" ] || { echo "error: chromium installed but $CHROMIUM is missing; set CHROMIUM_PATH" >&2; exit 1; }
say "Chromium: $("$CHROMIUM" --version 2>/dev/null || echo installed)"
