#!/usr/bin/env bash
# Runs every fuzz target of hami-e2e-devices for a short while (FUZZ_SECONDS, default 20),
# starting from the checked-in corpus. New inputs go to a temporary folder, so the checked-in
# corpus only changes by hand. Needs a nightly toolchain and cargo-fuzz; installs cargo-fuzz
# (`cargo install cargo-fuzz --locked`) when it is missing. Exits non-zero on the first crash;
# libFuzzer then leaves the crashing input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! cargo +"$toolchain" --version >/dev/null 2>&1; then
  echo "run-briefly: the $toolchain toolchain is missing (rustup toolchain install $toolchain)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Build all targets once, then run each.
cargo +"$toolchain" fuzz build
for target in $(cargo +"$toolchain" fuzz list); do
  mkdir -p "$scratch/$target"
  echo "==> fuzz $target for ${seconds}s"
  log="$scratch/$target.log"
  if ! cargo +"$toolchain" fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "run-briefly: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done
echo "run-briefly: all targets ran ${seconds}s without a crash"
