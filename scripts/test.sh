#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need on a fresh machine.
# The README's test command and CI's .ci/run both run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing packages: ${need_apt[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Every test: unit and end-to-end (real sockets on loopback); benchmarks are built too,
# so they cannot rot; then the doc tests, which nextest does not run.
cargo build --workspace --benches --quiet
cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
cargo test --workspace --doc --quiet
