#!/usr/bin/env bash
# Install and start what the tests talk to, when missing. Idempotent; quick when all is there.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
[ -x /usr/bin/chromium ] || need+=(chromium)
# Chinese text in the browser tests and in `make screenshots` (else it renders as boxes).
[ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto | grep -q CJK || need+=(fonts-noto-cjk)
# The monthly report's PDF: WeasyPrint lays text out with pango (the CJK font above too).
ldconfig -p 2>/dev/null | grep -q libpangoft2-1.0 || need+=(libpango-1.0-0 libpangoft2-1.0-0)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing system packages: ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

# PostgreSQL: the tests create and drop their own database on the running server.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$version" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if ! psql -h 127.0.0.1 -U postgres -c 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster: allow the tests' loopback connections without a password.
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | tail -n 1)
  if [ -n "$hba" ] && ! grep -q "voltwatch-tests" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # voltwatch-tests' "$hba"
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  fi
fi
pg_isready -h 127.0.0.1 -p 5432 && echo "PostgreSQL ready" || echo "PostgreSQL not reachable: its tests will fail"
