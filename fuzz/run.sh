#!/usr/bin/env bash
# Runs fuzz targets one after the other, each for SECONDS (default 600), at the lowest CPU
# priority, and prints one Markdown row per run for RUNS.md. Usage:
#   fuzz/run.sh [SECONDS] [TARGET...]      (no targets: all of them)
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on the stable toolchain RUSTC_BOOTSTRAP=1
# unlocks the nightly flags cargo-fuzz passes, and `-s none` builds without a sanitizer
# (safe Rust: panics and failed assertions are what we look for).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
revision=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- .. || echo "+dirty")
mkdir -p logs
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log="logs/$target.log"
    started=$(date -u +%Y-%m-%dT%H:%MZ)
    status=0
    nice -n 19 cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    took=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log" | tail -n 1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    crashes=$(find artifacts/"$target" -type f 2>/dev/null | wc -l)
    echo "| $target | ${took:-?} s | ${execs:-?} | $corpus | $crashes (exit $status) | $started | $revision |"
done
