#!/usr/bin/env bash
# Installs what the deployment tests (`cargo test --features deploy-tests
# --test deploy`) need besides Rust: nginx and openssl from Debian's
# packages, and the MDN HTTP Observatory scanner from npm (node and npm
# from Debian's packages if missing). Idempotent and quiet: does nothing
# when everything is present. Exits non-zero if anything is still missing
# afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

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
command -v node >/dev/null || { echo "FATAL: node is not installed" >&2; exit 1; }

# The MDN HTTP Observatory scanner (tests/deploy/observatory.rs), every
# package at the version and checksum pinned in
# tests/deploy/observatory/package-lock.json, into target/observatory
# (git-ignored; KRALIKI_OBSERVATORY_DIR to put it elsewhere).
# --ignore-scripts: its install scripts download the HSTS preload and TLD
# lists. The scanner itself reads only conf/hsts-preload.json, written here
# as an empty list: no test host is preloaded, and none should score as if.
pinned=tests/deploy/observatory
observatory=${KRALIKI_OBSERVATORY_DIR:-target/observatory}
scanner=$observatory/node_modules/@mdn/mdn-http-observatory
if [ ! -f "$scanner/src/scan.js" ] || ! cmp -s "$pinned/package-lock.json" "$observatory/package-lock.json"; then
  echo "install-deploy-test-deps: installing the MDN HTTP Observatory scanner into $observatory"
  mkdir -p "$observatory"
  cp "$pinned/package.json" "$pinned/package-lock.json" "$observatory/"
  (cd "$observatory" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
printf '{}\n' > "$scanner/conf/hsts-preload.json"
[ -f "$scanner/src/scan.js" ] || { echo "FATAL: the Observatory scanner is not installed in $scanner" >&2; exit 1; }
