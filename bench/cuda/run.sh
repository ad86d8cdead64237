#!/usr/bin/env bash
# The CUDA benchmark: kiln (bench_cuda) and the PyTorch baseline (bench/peers/torch_decode.py) alternate config by
# config in one run on one GPU, then report.py writes the results JSON and prints the table.
#   bench/cuda/run.sh [RESULTS_JSON] [CONFIG.json...]
# Environment: BIN (folder of bench_cuda, default build/bin), KILN_COMMIT (recorded; default: git rev-parse HEAD),
# NO_TORCH=1 to leave the baseline out, CTX and PROMPTS (comma lists, default 128,2048 and 128,1024),
# PERSISTENT=1 to time the persistent decode kernel (KILN_CUDA_DECODE=persistent) too, in the same run;
# LLAMA_CPP=DIR (a folder made by bench/peers/llama_cpp.sh fetch + build) to time llama.cpp on the same shapes too
# (LLAMA_CONFIGS: a space-separated subset of the configs for it, e.g. to fit a device call's time limit).
# Stopped early (SIGTERM or SIGINT, e.g. by `timeout`), it stops the program it is running, still writes the results
# of every run that finished (the command line says it stopped) and exits with status 124.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin}
out=${1:-bench/results/cuda-$(date -u +%Y%m%d).json}
shift || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(bench/configs/qwen3-0.6b.json bench/configs/qwen3-1.7b.json
  bench/configs/qwen3-4b.json bench/configs/qwen3-8b.json)
CTX=${CTX:-128,2048}
PROMPTS=${PROMPTS:-128,1024}
commit=${KILN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
tmp=$(mktemp -d)
child=
# Runs one program in the background and waits for it, so that a signal reaches the trap below at once (a
# foreground program would first have to end). A run cut short leaves no line: each writes its line at its end.
run_() {
  "$@" & child=$!
  wait "$child"
  child=
}
report_() {
  local note=$1 extra_args=()
  [ -s "$tmp/kiln.jsonl" ] || { echo "run.sh: no kiln run finished${note:+ ($note)}" >&2; return 1; }
  [ -s "$tmp/torch.jsonl" ] && extra_args=(--torch "$tmp/torch.jsonl")
  [ -s "$tmp/llama.jsonl" ] && extra_args+=(--llama "$tmp/llama.jsonl")
  [ -s "$tmp/persistent.jsonl" ] && extra_args+=(--persistent "$tmp/persistent.jsonl")
  python3 bench/cuda/report.py --kiln "$tmp/kiln.jsonl" "${extra_args[@]}" --commit "$commit" --driver "$driver" \
    --command "bench/cuda/run.sh $(basename "$out") ${configs[*]}${note:+ ($note)}" --out "$out"
}
stopped_() {
  trap - TERM INT
  [ -z "$child" ] || kill "$child" 2>/dev/null || true
  report_ "stopped early by a signal: only the runs that finished" || true
  rm -rf "$tmp"
  exit 124
}
trap stopped_ TERM INT
for c in "${configs[@]}"; do
  run_ "$BIN/bench_cuda" --ctx "$CTX" --prompts "$PROMPTS" --json "$tmp/kiln.jsonl" "$c" >&2
  if [ -n "${PERSISTENT:-}" ]; then
    run_ env KILN_CUDA_DECODE=persistent "$BIN/bench_cuda" --ctx "$CTX" --prompts 128 --json "$tmp/persistent.jsonl" \
      "$c" >&2
  fi
  if [ -z "${NO_TORCH:-}" ]; then
    run_ python3 bench/peers/torch_decode.py --ctx "$CTX" --prompts "$PROMPTS" --json "$tmp/torch.jsonl" "$c" >&2
  fi
done
if [ -n "${LLAMA_CPP:-}" ]; then
  read -r -a lconfigs <<< "${LLAMA_CONFIGS:-${configs[*]}}"
  run_ env BIN="$BIN" bench/peers/llama_cpp.sh bench "$LLAMA_CPP" "$tmp/llama.jsonl" "${lconfigs[@]}" >&2
fi
trap - TERM INT
report_ ""
rm -rf "$tmp"
