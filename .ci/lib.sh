# Sourced by the .ci install scripts, never run alone: installing Debian packages with apt-get,
# as root or through sudo, without questions. The sourcing script sets CI_SCRIPT (its name in
# messages) first and does its own "already installed?" check before calling these.

# Stops the script unless apt-get can run as root; sets SUDO ("" as root, else "sudo"), says what
# is about to be installed and refreshes the package lists.
#   $1: what is installed (in messages), $2: what to do instead when there is no apt-get.
ci_apt_prepare() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$CI_SCRIPT: $2" >&2
    exit 1
  fi
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO="sudo"
    else
      echo "$CI_SCRIPT: need root (or sudo) to install $1" >&2
      exit 1
    fi
  fi
  echo "$CI_SCRIPT: installing $1 with apt-get"
  $SUDO apt-get update -q
}

# Installs packages without recommends; a configuration file already on the machine is kept
# rather than asked about.
ci_apt_install() {
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold install --no-install-recommends "$@"
}
