#!/usr/bin/env bash
# Installs Debian's headless browser stack for the UI test (tests/test_ui_trigger.py):
# chromium + chromium-driver. Idempotent and quiet: does nothing when both are present.
# Playwright's and Selenium's own browser downloads do not work on the closed CI network;
# the distribution packages do (only the Debian mirror is reachable).
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: apt-get failed (see above)" >&2
    exit 1
fi
# Debian's /usr/bin/chromium wrapper prints a harmless shell warning on stderr; hide it.
echo "installed: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
