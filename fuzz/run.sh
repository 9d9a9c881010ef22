#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), starting from the seed corpus in
# corpus/TARGET/ (copied to a scratch folder, so the repository's corpus stays small), and
# prints one summary line per target. Needs the nightly toolchain; installs cargo-fuzz.
#
#   fuzz/run.sh [SECONDS]
set -uo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=(signature envelope config plugin_manifest event_pattern)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked || exit 1
fi
mkdir -p target/logs
printf '%-16s %8s %12s %10s %8s %8s\n' target seconds executions exec/s corpus crashes
failed=0
for target in "${targets[@]}"; do
  work=$(mktemp -d)
  cp corpus/"$target"/* "$work"/ 2>/dev/null
  log=target/logs/$target.log
  cargo +nightly fuzz run "$target" "$work" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  crashes=$(find artifacts/"$target" -type f 2>/dev/null | wc -l)
  printf '%-16s %8s %12s %10s %8s %8s\n' "$target" "$seconds" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes"
  [ "$crashes" -gt 0 ] && failed=1
  rm -rf "$work"
done
exit $failed
