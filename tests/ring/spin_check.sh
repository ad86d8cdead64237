#!/usr/bin/env bash
# Checks tests/ring/ring_protocol.pml with spin: the protocol must verify with no errors for several sizes, and the
# two deliberately broken variants (-DNOFENCE, -DNOFLUSH) must be caught, so the model is known to be able to fail.
set -euo pipefail
model=$(cd "$(dirname "$0")" && pwd)/ring_protocol.pml
command -v spin >/dev/null || { echo "spin_check: spin is not installed (scripts/deps.sh installs it)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { # defines... -> prints the number of errors pan found
  spin -a "$@" "$model" >/dev/null
  cc -O2 -w -DSAFETY -o pan pan.c
  ./pan -m100000 > pan.out 2>&1 || true
  grep -o 'errors: [0-9]*' pan.out | awk '{print $2}'
}
status=0
for cfg in "-DN=5 -DCAP=2 -DBATCH=3" "-DN=6 -DCAP=3 -DBATCH=1" "-DN=6 -DCAP=2 -DBATCH=2" "-DN=7 -DCAP=4 -DBATCH=2"; do
  # shellcheck disable=SC2086
  e=$(run $cfg)
  states=$(grep -o '[0-9]* states, stored' pan.out | head -1)
  echo "spin_check: $cfg: errors $e ($states)"
  [ "$e" = 0 ] || { status=1; cat pan.out; }
done
for bad in "-DNOFENCE -DN=4 -DCAP=2 -DBATCH=1" "-DNOFLUSH -DN=4 -DCAP=2 -DBATCH=3"; do
  # shellcheck disable=SC2086
  e=$(run $bad)
  echo "spin_check: broken variant $bad: errors $e (must be > 0)"
  [ "${e:-0}" -gt 0 ] || status=1
done
exit $status
