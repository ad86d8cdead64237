#!/usr/bin/env bash
# Per-kernel GPU time inside the decode graph (bench_cuda --ops times each kernel alone): bench_cuda under Nsight
# Systems with the graph's nodes traced, then trace_report.py maps one decode step's kernels to their roles.
#
#   BIN=build-cuda/bin bench/cuda/profile.sh OUT_DIR CONFIG.json [CTX]
#
# Writes OUT_DIR/NAME-roles.json (and with KEEP_TRACE=1 OUT_DIR/NAME-trace.csv.xz, every kernel: start, duration,
# name) and prints the table. Needs nsys (the CUDA toolkit's Nsight Systems) on the PATH or in /usr/local/cuda/bin.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: profile.sh OUT_DIR CONFIG.json [CTX]" >&2; exit 2; }
out=$1 cfg=$2 ctx=${3:-128}
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-build-cuda/bin}
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -n 1 || true)
[ -n "$NSYS" ] || { echo "profile.sh: nsys not found" >&2; exit 1; }
mkdir -p "$out"
name=$(basename "$cfg" .json)-ctx$ctx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$NSYS" profile --trace=cuda --cuda-graph-trace=node --force-overwrite=true -o "$tmp/prof" \
  "$BIN/bench_cuda" --ctx "$ctx" --prompts 128 "$cfg" > "$tmp/bench.json"
"$NSYS" stats --report cuda_gpu_trace --format csv --force-export=true --output "$tmp/prof" "$tmp/prof.nsys-rep" > /dev/null
trace=$(ls "$tmp"/prof*cuda_gpu_trace*.csv | head -n 1)
python3 "$here/trace_report.py" "$trace" "$cfg" --json "$out/$name-roles.json"
if [ -n "${KEEP_TRACE:-}" ]; then xz -c "$trace" > "$out/$name-trace.csv.xz"; fi
