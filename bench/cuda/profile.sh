#!/usr/bin/env bash
# Per-kernel GPU time inside the decode graph (bench_cuda --ops times each kernel alone): bench_cuda under Nsight
# Systems with the graph's nodes traced, then trace_report.py maps one decode step's kernels to their roles.
#
#   BIN=build-cuda/bin bench/cuda/profile.sh OUT_DIR CONFIG.json [CTX]
#
# Writes OUT_DIR/NAME-roles.json (and with KEEP_TRACE=1 OUT_DIR/NAME-trace.csv.xz, every kernel: start, duration,
# name) and prints the table. PREFILL=N: the same for the prefills of an N-token prompt instead (the parts of a
# layer, trace_report.py --prefill; OUT_DIR/NAME-prefillN.json). Uses nsys (Nsight Systems) when installed, else
# the CUPTI tracer libkiln_ktrace.so built beside bench_cuda (KTRACE=path to name another).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: profile.sh OUT_DIR CONFIG.json [CTX]" >&2; exit 2; }
out=$1 cfg=$2 ctx=${3:-128}
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-build-cuda/bin}
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -n 1 || true)
KTRACE=${KTRACE:-$BIN/../lib/libkiln_ktrace.so}
mkdir -p "$out"
name=$(basename "$cfg" .json)-ctx$ctx
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench=("$BIN/bench_cuda" --ctx "$ctx" --prompts "${PREFILL:-128}" "$cfg")
if [ -n "$NSYS" ]; then
  "$NSYS" profile --trace=cuda --cuda-graph-trace=node --force-overwrite=true -o "$tmp/prof" "${bench[@]}" \
    > "$tmp/bench.json"
  "$NSYS" stats --report cuda_gpu_trace --format csv --force-export=true --output "$tmp/prof" "$tmp/prof.nsys-rep" \
    > /dev/null
  trace=$(ls "$tmp"/prof*cuda_gpu_trace*.csv | head -n 1)
elif [ -f "$KTRACE" ]; then
  # no Nsight Systems: the CUPTI injection library of bench/cuda/ktrace.c writes the same columns
  trace=$tmp/trace.csv
  CUDA_INJECTION64_PATH=$(cd "$(dirname "$KTRACE")" && pwd)/$(basename "$KTRACE") KTRACE_OUT=$trace "${bench[@]}" \
    > "$tmp/bench.json"
else
  echo "profile.sh: neither nsys nor $KTRACE (bench/cuda/ktrace.c) found" >&2
  exit 1
fi
if [ -n "${PREFILL:-}" ]; then
  python3 "$here/trace_report.py" "$trace" "$cfg" --prefill "$PREFILL" --json "$out/$name-prefill$PREFILL.json"
else
  python3 "$here/trace_report.py" "$trace" "$cfg" --json "$out/$name-roles.json"
fi
if [ -n "${KEEP_TRACE:-}" ]; then xz -c "$trace" > "$out/$name-trace.csv.xz"; fi
