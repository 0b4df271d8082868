#!/usr/bin/env bash
# Installs the peers `egress-loadtest compare` measures the gateway against: the Debian
# packages nginx, haproxy and squid. Their own services are kept from starting (the tool
# starts each one itself, pinned, on a temporary configuration), and left stopped.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  exec sudo -- "$0" "$@"
fi

# libnginx-mod-stream: TLS passthrough by SNI (ssl_preread) is in nginx's stream module,
# a separate package in Debian.
packages=(nginx libnginx-mod-stream haproxy squid)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "${packages[*]} are installed"
  exit 0
fi

# policy-rc.d answering 101 tells invoke-rc.d not to start services during the install:
# a stock nginx on port 80 or squid on 3128 would run outside the tool's control.
policy=/usr/sbin/policy-rc.d
placed=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  placed=1
fi
cleanup() { if [[ $placed -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Packages whose maintainer scripts start the daemon anyway: stop it by its pid file.
for pidfile in /run/nginx.pid /run/haproxy.pid /run/squid.pid; do
  if [[ -s $pidfile ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
done
# Versions, for the results table (the pipes may close early: ignore SIGPIPE exits).
nginx -v
{ haproxy -v || true; } | sed -n 1p
{ squid -v || true; } | sed -n 1p
