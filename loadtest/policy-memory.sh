#!/usr/bin/env bash
# The gateway's memory with a large policy: RSS once it serves N rules (half exact hosts,
# half wildcards), and after R reloads that recompile the whole set (a small second
# file changes each time). Loopback only; stops the gateway it starts.
#
#   loadtest/policy-memory.sh [RULES=100000] [RELOADS=50] [GATEWAY=target/release/egress-gateway]
set -euo pipefail
rules=${1:-100000}
reloads=${2:-50}
gateway=$(realpath "${3:-target/release/egress-gateway}")
settle=${SETTLE:-15}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir "$dir/p"
{
  echo "listeners:"
  echo "  - {name: http, port: 18080, protocol: http}"
  echo "rules:"
  awk -v n="$rules" 'BEGIN { for (i = 0; i < n; i++) {
    if (i % 2 == 0) h = "h" i ".filler.invalid"; else h = "\"*.w" i ".filler.invalid\"";
    printf "  - {name: filler-%d, hosts: [%s], listeners: [http], ports: [443]}\n", i, h } }'
} > "$dir/p/policy.yaml"
cd "$dir"
"$gateway" --policies p --admin-address 127.0.0.1:19941 --stats-address 127.0.0.1:19942 \
  --audit-path audit.log --drain-delay 0s >gateway.log 2>&1 &
pid=$!
version() { curl -s 127.0.0.1:19942/metrics | awk '$1 == "egress_policy_version" { print $2 }'; }
rss() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
until [ -n "$(version)" ]; do sleep 0.2; done
sleep "$settle"
start=$(rss)
for g in $(seq "$reloads"); do
  printf 'rules:\n  - {name: marker, hosts: [m%s.filler.invalid]}\n' "$g" >p/.marker.tmp
  mv p/.marker.tmp p/marker.yaml
  until [ "$(version)" -ge $((g + 1)) ]; do sleep 0.1; done
done
sleep "$settle"
end=$(rss)
peak=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")
echo "rules: $rules  RSS after start: $start MiB  after $reloads reloads: $end MiB  peak: $peak MiB"
