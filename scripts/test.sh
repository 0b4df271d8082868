#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need on a fresh machine.
# The README's test command and CI's .ci/run both run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests drive besides cargo: a C compiler (ring), curl and Python's requests
# (real forward-proxy clients), openssl (certificate checks), chattr (a read-only store),
# taskset (a gateway pinned to one core), ss (a listener's accept queue), etcd and etcdctl (the fleet's policy store);
# dig and Python's dnspython (real DNS clients of the dns listener), unshare and iptables (network namespaces for
# glibc's resolver and for connections redirected to a capture port);
# promtool (the Prometheus rules and config of deploy/), kubectl (kustomize builds of
# deploy/kubernetes) and the Python package kubernetes-validate (their schemas, offline).
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing packages: ${need_apt[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

if ! python3 -c 'import requests' >/dev/null 2>&1; then
  python3 -m pip install --quiet requests 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages requests
fi

if ! python3 -c 'import dns.message' >/dev/null 2>&1; then
  python3 -m pip install --quiet dnspython 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages dnspython
fi

if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate
fi

# kubectl has no Debian package: it comes from the Kubernetes release binaries.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "missing: kubectl (install it from https://kubernetes.io/docs/tasks/tools/; the deploy kit's tests run kubectl kustomize)" >&2
  exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Lints first: a warning fails the run, as does unformatted code.
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Every test: unit and end-to-end (real sockets on loopback); benchmarks are built too,
# so they cannot rot; then the doc tests, which nextest does not run.
cargo build --workspace --benches --quiet
cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
cargo test --workspace --doc --quiet

# Fuzzing, bounded: every target of fuzz/ for 30 s, seeds first (see the README).
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
