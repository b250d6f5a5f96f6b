#!/usr/bin/env bash
# Debian's chromium for the LLaMA Board browser test (Playwright's own browser download is not used).
# Never fails the session: without chromium, test_webui_browser.py skips and says why.
set -uo pipefail
if [ -x "${NEFT_CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "chromium: ${NEFT_CHROMIUM:-/usr/bin/chromium}"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_chromium.sh: no apt-get here; the browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium.sh: not root and no password-less sudo; the browser test will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do
    if $SUDO apt-get update -q -o Acquire::Retries=3 &&
        $SUDO apt-get install -y -q --no-install-recommends -o Acquire::Retries=3 chromium; then
        chromium --version 2>/dev/null || true
        exit 0
    fi
    echo "install_chromium.sh: attempt $attempt failed" >&2
    sleep 5
done
echo "install_chromium.sh: could not install chromium; the browser test will be skipped" >&2
exit 0
