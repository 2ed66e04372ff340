#!/usr/bin/env bash
# Make PostgreSQL server binaries available for the tests (Debian/Ubuntu).
#
# The tests' harness (tests/pg_harness.py) starts its own throw-away cluster from the binaries,
# so this script only installs them; it does not create or start a cluster. Skipped when
# CDS_TEST_POSTGRES_URL names an existing server or when binaries are already installed.
set -euo pipefail
CI_SCRIPT=postgres.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n "${CDS_TEST_POSTGRES_URL:-}" ]]; then
  echo "postgres.sh: using CDS_TEST_POSTGRES_URL; nothing to install"
  exit 0
fi

find_bindir() {
  local initdb
  if initdb="$(command -v initdb 2>/dev/null)" && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$initdb")"
    return 0
  fi
  local dir
  # newest version first
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

if bindir="$(find_bindir)"; then
  echo "postgres.sh: PostgreSQL server binaries found in $bindir"
  exit 0
fi

ci_apt_prepare PostgreSQL "no PostgreSQL server binaries and no apt-get; install PostgreSQL or set CDS_TEST_POSTGRES_URL"
# postgresql-common first, so that the packaged "main" cluster is not created (and started):
# the tests run their own cluster on a free port.
ci_apt_install postgresql-common
if [[ -f /etc/postgresql-common/createcluster.conf ]]; then
  $SUDO sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
fi
ci_apt_install postgresql

if bindir="$(find_bindir)"; then
  echo "postgres.sh: PostgreSQL server binaries installed in $bindir"
else
  echo "postgres.sh: apt-get installed postgresql but no initdb/pg_ctl was found" >&2
  exit 1
fi
