#!/usr/bin/env bash
# axe-core (accessibility rules, npm) for the console browser test (tests/test_console_browser.py).
# Installed into a local folder, never fetched at test time: the test injects the local file.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.ci/node
AXE="$DEST/node_modules/axe-core/axe.min.js"
if [[ -f "$AXE" ]]; then
  echo "axe.sh: $(node -p "require('./$DEST/node_modules/axe-core/package.json').version" 2>/dev/null || echo axe-core) already installed"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "axe.sh: npm is needed to install axe-core (apt-get install npm)" >&2
  exit 1
fi
mkdir -p "$DEST"
npm install --silent --no-audit --no-fund --prefix "$DEST" axe-core@4
echo "axe.sh: installed $AXE"
