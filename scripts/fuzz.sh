#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time, one after the other, and fails if
# any finds a crash. libFuzzer runs the seeds of fuzz/corpus/TARGET first, then mutates;
# the inputs it adds go to a temporary directory, never into the repository. A crashing
# input is kept in fuzz/artifacts/TARGET/ (git ignores it): replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...` in fuzz/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default: 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true

# cargo-fuzz needs nightly flags (-Z sanitizer=address); RUSTC_BOOTSTRAP lets the
# pinned stable toolchain take them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
cargo fuzz build
echo "fuzz: built in $(($(date +%s) - start)) s"

failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  log="$work/$target.log"
  # The first directory takes new inputs; both are read at the start. -jobs=1 runs one
  # fuzzing process (its output goes to fuzz-0.log, printed below).
  if cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -jobs=1 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
  fi
  [ -f fuzz-0.log ] && cat fuzz-0.log >>"$log" && rm -f fuzz-0.log
  summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
  echo "fuzz: $target $status: ${summary:-no final line}"
  if [ "$status" = FAILED ]; then
    grep -E 'panicked at|ERROR: |SUMMARY: |Test unit written to' "$log" | head -n 20 >&2 || true
    tail -n 40 "$log" >&2
  fi
done

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $(($(date +%s) - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
fi
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
