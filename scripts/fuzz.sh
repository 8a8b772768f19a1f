#!/usr/bin/env bash
# Fuzzes the sticky cookie decoder (fuzz/fuzz_targets/cookie.rs) or the file provider's
# incremental reload (fuzz/fuzz_targets/reload.rs) for a bounded time and prints how many
# inputs were tried. Not part of CI: a useful run takes minutes.
#
#   scripts/fuzz.sh                      # 60 s
#   FUZZ_SECONDS=300 scripts/fuzz.sh     # 5 min
#
# Settings (environment):
#   FUZZ_SECONDS    fuzzing time, not counting the build (default 60)
#   FUZZ_SANITIZER  address (default) or none; `none` builds faster and runs ~2x faster
#   FUZZ_TARGET     cookie (default) or reload
#
# Stable toolchain: cargo-fuzz passes nightly-only flags to rustc (`-Zsanitizer=address`,
# `-Cpasses=sancov-module`...). RUSTC_BOOTSTRAP=1 makes a stable rustc accept them; stable
# ships the AddressSanitizer runtime (librustc-stable_rt.asan.a), so ASan works as well.
#
# One process, hence one core: the machine is shared with other builds. The corpus grows
# in fuzz/corpus/<target> (kept between runs, git-ignored); fuzz/seeds/<target> holds the
# committed seeds, fuzz/<target>.dict the tokens the decoder looks for. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes this script exit non-zero; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run cookie fuzz/artifacts/cookie/crash-...
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
target=${FUZZ_TARGET:-cookie}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
corpus="$root/fuzz/corpus/$target"
seeds="$root/fuzz/seeds/$target"
mkdir -p "$corpus" "$root/fuzz/artifacts/$target"
log=$(mktemp "${TMPDIR:-/tmp}/limpet-fuzz-$target.XXXXXX")
trap 'rm -f "$log"' EXIT

cargo fuzz build --sanitizer "$sanitizer" "$target"

# New inputs go to the first directory, so the seeds stay as committed.
dirs=("$corpus")
[ -d "$seeds" ] && dirs+=("$seeds")
dict=()
[ -f "$root/fuzz/$target.dict" ] && dict=("-dict=$root/fuzz/$target.dict")

set +e
cargo fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
  -max_total_time="$seconds" -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
execs=$(stat number_of_executed_units)
echo
echo "fuzz.sh: target $target, sanitizer $sanitizer, ${seconds}s"
echo "fuzz.sh: executions: ${execs:-unknown} (${execs:+$((execs / (seconds > 0 ? seconds : 1)))}/s), libFuzzer average $(stat average_exec_per_sec) exec/s"
echo "fuzz.sh: corpus: $(find "$corpus" -type f | wc -l) inputs in fuzz/corpus/$target, peak RSS $(stat peak_rss_mb) MB"
if [ "$status" -ne 0 ]; then
  echo "fuzz.sh: FAILED (exit $status); the input is in fuzz/artifacts/$target/" >&2
  exit "$status"
fi
echo "fuzz.sh: no crash"
