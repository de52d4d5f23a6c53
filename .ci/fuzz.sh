#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for FUZZ_SECONDS (default 30) on a
# copy of its seed corpus (fuzz/seeds/<target>); a crash, a leak, a timeout or an
# out-of-memory fails the run and leaves the input in fuzz/artifacts/<target>/.
# Needs only rustup: installs the nightly toolchain and cargo-fuzz when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
# Outside the clone, so a CI run on a machine that built the targets before only rebuilds
# what changed (the first build, every dependency under the sanitizer, takes minutes).
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/ironboot-fuzz-target}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=$(cargo +nightly fuzz list)
echo "=== cargo fuzz build ($(echo $targets | wc -w) targets)"
cargo +nightly fuzz build --target-dir "$FUZZ_TARGET_DIR"
work=$(mktemp -d /tmp/ironboot-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
  mkdir -p "$work/$t"
  echo "=== fuzz $t (${FUZZ_SECONDS}s)"
  # The first directory collects what the run finds; the seeds stay as committed.
  cargo +nightly fuzz run --target-dir "$FUZZ_TARGET_DIR" "$t" "$work/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$work/$t.log" 2>&1 && status=0 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|thread .* panicked|SUMMARY)' \
    "$work/$t.log" || true
  if [ "$status" -ne 0 ] || ls fuzz/artifacts/"$t"/* >/dev/null 2>&1; then
    tail -n 40 "$work/$t.log" >&2
    echo "fuzz target $t failed (exit $status); inputs, if any, in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: $(echo $targets | wc -w) passed, 0 failed"
