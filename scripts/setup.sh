#!/usr/bin/env bash
# Install what duet-edge needs on a fresh Debian machine (run as root, from the repo root).
#   bash scripts/setup.sh runtime   # Python package + Mosquitto (for the demo)
#   bash scripts/setup.sh test      # everything the test suite needs
#   bash scripts/setup.sh twin      # the twin side: Python package + PostgreSQL/PostGIS
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-runtime}"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# --- system packages -------------------------------------------------------------------
apt_install python3 python3-venv python3-pip mosquitto ca-certificates
if [ "$what" = "test" ]; then
  apt_install nodejs chromium openssl iproute2
  # npm: Debian's package conflicts with a NodeSource nodejs, which bundles npm already
  command -v npm >/dev/null 2>&1 || apt_install npm
  apt_install dbus-daemon  # tests/ble: a private D-Bus for bleak's real BlueZ backend
  # tests/twin: a real PostgreSQL (+ PostGIS) started by tests/plugins/postgres.py as an
  # unprivileged user on a free port; Debian's package also starts a system cluster on 5432,
  # which the tests never use.
  apt_install postgresql postgresql-contrib postgresql-postgis
fi
if [ "$what" = "twin" ]; then
  # a twin host with its own PostgreSQL: docs/twin.md creates the database and the user
  apt_install postgresql postgresql-contrib postgresql-postgis
fi
# Debian's mosquitto package starts a system broker on port 1883; duet-edge starts its own
# brokers on free ports and never needs that one.

# --- Python ----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip
if [ "$what" = "test" ]; then
  .venv/bin/pip install -q -e ".[dev]"
else
  .venv/bin/pip install -q -e ".[all]"
fi

# --- Node.js packages for the tests (MicroPython WebAssembly, browser driver) ------------
if [ "$what" = "test" ]; then
  # real MicroPython (WebAssembly port, pinned in firmware/package-lock.json) for firmware tests
  npm ci --prefix firmware/ --no-audit --no-fund --loglevel=error
  # playwright-core (driver only, pinned in tests/web/package-lock.json) for the status-page
  # browser test; it drives Debian's chromium installed above, never downloads a browser
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/web/ --no-audit --no-fund --loglevel=error
fi
