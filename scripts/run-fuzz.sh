#!/usr/bin/env bash
# Runs every libFuzzer target built in $1 (build-fuzz/bin/fuzz_*) for $2 seconds each, from its seed corpus in
# tests/fuzz/corpus/<name>/ when there is one. Fails on the first target that finds a crash, a leak or a hang.
set -euo pipefail
dir=$1; secs=$2
cd "$(dirname "$0")/.."
status=0
for f in "$dir"/bin/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  seeds=tests/fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
  echo "fuzz: $name for ${secs}s"
  if ! "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/" "$work" > "$dir/$name.log" 2>&1; then
    echo "fuzz: $name FAILED; tail of $dir/$name.log:"; tail -40 "$dir/$name.log"; status=1
  else
    grep -E 'stat::number_of_executed_units' "$dir/$name.log" || true
  fi
  rm -rf "$work"
done
exit $status
