#!/usr/bin/env bash
# Make a headless browser available for the sandbox browser test (tests/test_sandbox_browser.py).
#
# The test drives Debian's Chromium through Playwright for Python (a [test] extra). Playwright's own
# browser download comes from a CDN that CI cannot reach, so it is never used: the test launches
# /usr/bin/chromium. Quick and silent when Chromium and the fonts are already installed.
set -euo pipefail
CI_SCRIPT=browser.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=/usr/bin/chromium
# DejaVu covers the sandbox's rating symbols (check mark, warning sign); Liberation gives the
# page's sans-serif text metrics close to the fonts the sandbox was designed with.
PACKAGES=(chromium fonts-dejavu-core fonts-liberation)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 && -x "$CHROMIUM" ]]; then
  echo "browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo chromium) and fonts already installed"
  exit 0
fi

ci_apt_prepare "${missing[*]}" "missing ${missing[*]} and no apt-get; install Chromium at $CHROMIUM"
ci_apt_install "${missing[@]}"

if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser.sh: apt-get installed chromium but $CHROMIUM is missing" >&2
  exit 1
fi
echo "browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
