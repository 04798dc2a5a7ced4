#!/usr/bin/env bash
# Installs what the deployment tests (`cargo test --features deploy-tests
# --test deploy`) need besides Rust: nginx and openssl, from Debian's
# packages. Idempotent and quiet: does nothing when both are present.
# Exits non-zero if they are still missing afterwards.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deploy-test-deps: missing ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deploy-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package starts a system nginx on port 80 where it can; the
  # tests run their own, so stop that one again (no-op without systemd).
  if [ -f /run/nginx.pid ]; then
    /usr/sbin/nginx -s quit 2>/dev/null || true
  fi
fi

nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
"$nginx_bin" -v 2>/dev/null || { echo "FATAL: nginx is not installed" >&2; exit 1; }
command -v openssl >/dev/null || { echo "FATAL: openssl is not installed" >&2; exit 1; }
