#!/usr/bin/env bash
# Make a headless browser available for the sandbox browser test (tests/test_sandbox_browser.py).
#
# The test drives Debian's Chromium through Playwright for Python (a [test] extra). Playwright's own
# browser download comes from a CDN that CI cannot reach, so it is never used: the test launches
# /usr/bin/chromium. Quick and silent when Chromium and the fonts are already installed.
set -euo pipefail

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

if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: missing ${missing[*]} and no apt-get; install Chromium at $CHROMIUM" >&2
  exit 1
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "browser.sh: need root (or sudo) to install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "browser.sh: installing ${missing[*]} with apt-get"
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends "${missing[@]}"

if [[ ! -x "$CHROMIUM" ]]; then
  echo "browser.sh: apt-get installed chromium but $CHROMIUM is missing" >&2
  exit 1
fi
echo "browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
