#!/usr/bin/env bash
# Make nginx available for the production-front tests (Debian/Ubuntu).
#
# tests/test_slow_clients.py starts its own nginx (deploy/run-production.sh's generated config,
# a temporary prefix, loopback ports), so this script only installs the binary. The packaged
# service is not started: a policy-rc.d refuses service starts while apt-get runs, and the
# site shipped by Debian is never used. Idempotent: does nothing when nginx is on PATH or in
# /usr/sbin already.
set -euo pipefail
CI_SCRIPT=nginx.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
  echo "nginx.sh: nginx found ($(command -v nginx || echo /usr/sbin/nginx))"
  exit 0
fi

ci_apt_prepare nginx "no nginx and no apt-get; install nginx (>= 1.18) by other means"

# Keep the package's post-install script from starting a system nginx on port 80.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [[ -n "$own_policy" ]]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

# nginx-light (a smaller build) where the distribution still has it, else nginx; both include
# the core modules the shipped configuration needs (proxy, limit_conn, limit_req).
if apt-cache show nginx-light >/dev/null 2>&1; then
  ci_apt_install nginx-light
else
  ci_apt_install nginx
fi

if command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; then
  echo "nginx.sh: nginx installed: $(/usr/sbin/nginx -v 2>&1)"
else
  echo "nginx.sh: apt-get finished but no nginx binary was found" >&2
  exit 1
fi
