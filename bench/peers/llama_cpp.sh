#!/usr/bin/env bash
# llama.cpp as a benchmark peer on the same GPU and the same model shapes as kiln (docs/benchmarks.md).
#
#   bench/peers/llama_cpp.sh fetch DIR          llama.cpp's source of a pinned release into DIR/src, from npm
#                                               (node-llama-cpp ships the release as a git bundle; npm is the one
#                                               registry the build machines reach), plus its prebuilt CPU libraries
#                                               in DIR/cpu for checks on a machine without a GPU
#   bench/peers/llama_cpp.sh build DIR          llama-bench and llama_greedy for sm_90 (CUDA, static) into DIR/bin,
#                                               each also xz-compressed (~21 MB: a device call carries at most
#                                               64 MiB; carry DIR/bin/*.xz and DIR/llama.cpp.info.json)
#   bench/peers/llama_cpp.sh check DIR [cpu]    exports the tiny Qwen3 test checkpoint with gguf_export and checks
#                                               llama.cpp's greedy ids and logits against its golden file (cpu: with
#                                               the prebuilt CPU libraries, no GPU needed)
#   bench/peers/llama_cpp.sh bench DIR OUT.jsonl CONFIG.json...
#                                               random bf16 weights of each config (gguf_export) timed by
#                                               llama-bench: prefill of 128 and 1,024 tokens, decode of 64 tokens
#                                               at context 128 and 2,048; all layers on the GPU, flash attention
#                                               on, llama.cpp's other defaults. One JSON line a config, in the
#                                               PyTorch baseline's format (bench/cuda/report.py --llama)
# Environment: BIN (kiln's build/bin, for gguf_export), TMPDIR (where the GGUF files go; /dev/shm is fastest),
# TOL (check: logits tolerance relative to the largest logit, 2e-3),
# CTX, PROMPTS (comma lists as run.sh), GEN (decode tokens timed, 64), REPS (llama-bench -r, 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
NLC_VERSION=3.22.1 # node-llama-cpp release; its llama.cpp release is in DIR/src/../llama.cpp.info.json
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,20p' "$0" >&2; exit 2; }
BIN=${BIN:-build/bin}

# Sets TOOL to the path of DIR/bin/NAME, decompressed from NAME.xz into a temporary folder when only that was
# carried; on a machine whose loader cannot find a library it needs (libnccl.so.2 of a build with NCCL), the folder
# of another copy on the machine (PyTorch's packages carry one) is added to LD_LIBRARY_PATH.
tool() {
  local exe=$dir/bin/$1
  if [ ! -x "$exe" ] && [ -f "$exe.xz" ]; then
    mkdir -p "${TMPDIR:-/tmp}/kiln-llama-bin"
    xz -dc "$exe.xz" > "${TMPDIR:-/tmp}/kiln-llama-bin/$1"
    chmod +x "${TMPDIR:-/tmp}/kiln-llama-bin/$1"
    exe=${TMPDIR:-/tmp}/kiln-llama-bin/$1
  fi
  [ -x "$exe" ] || { echo "llama_cpp.sh: $dir/bin/$1 missing: run build first" >&2; exit 1; }
  if ldd "$exe" | grep -q 'libnccl.so.2 => not found'; then
    local nccl
    nccl=$(find / -name 'libnccl.so.2' -not -path '/proc/*' 2>/dev/null | head -n 1)
    [ -n "$nccl" ] && export LD_LIBRARY_PATH="$(dirname "$nccl")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  TOOL=$exe
}

case $cmd in
fetch)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >/dev/null)
  mkdir -p "$tmp/main" "$tmp/cpu"
  tar xzf "$tmp/node-llama-cpp-$NLC_VERSION.tgz" -C "$tmp/main"
  tar xzf "$tmp/node-llama-cpp-linux-x64-$NLC_VERSION.tgz" -C "$tmp/cpu"
  rm -rf "$dir/src" "$dir/cpu"
  git -c advice.detachedHead=false clone -q "$tmp/main/package/llama/gitRelease.bundle" "$dir/src"
  cp "$tmp/main/package/llama/llama.cpp.info.json" "$dir/"
  mv "$tmp/cpu/package/bins/linux-x64" "$dir/cpu"
  rm -rf "$tmp"
  echo "llama.cpp $(cat "$dir/llama.cpp.info.json" | tr -d '\n ') in $dir/src"
  ;;
build)
  src=$dir/src
  [ -d "$src" ] || { echo "llama_cpp.sh: $src missing: run fetch first" >&2; exit 1; }
  cmake -S "$src" -B "$dir/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_NATIVE=OFF \
    -DGGML_CUDA_NCCL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$dir/build" -j "$(nproc)" --target llama-bench llama
  mkdir -p "$dir/bin"
  cp "$dir/build/bin/llama-bench" "$dir/bin/"
  libs=$(find "$dir/build" -name 'libllama.a' -o -name 'libggml*.a' | sort -r | tr '\n' ' ')
  g++ -O2 -x c bench/peers/llama_greedy.c -x none -o "$dir/bin/llama_greedy" -I"$src/include" \
    -I"$src/ggml/include" -Wl,--start-group $libs -Wl,--end-group -L/usr/local/cuda/lib64 \
    -L/usr/local/cuda/lib64/stubs -lcudart -lcublas -lcublasLt -lcuda -lgomp -lpthread -ldl -lm
  strip "$dir/bin/llama-bench" "$dir/bin/llama_greedy"
  (cd "$dir/bin" && xz -T0 -6 -f -k llama-bench && xz -T0 -6 -f -k llama_greedy)
  ls -la "$dir/bin"
  ;;
check)
  gguf=$(mktemp --suffix=.gguf)
  trap 'rm -f "$gguf"' EXIT
  "$BIN/gguf_export" --out "$gguf" --model tests/data/tiny/qwen3-f32
  if [ "${3:-}" = cpu ]; then
    exe=$(mktemp)
    gcc -O2 -o "$exe" bench/peers/llama_greedy.c -I"$dir/src/include" -I"$dir/src/ggml/include" -L"$dir/cpu" \
      -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so -Wl,-rpath,"$dir/cpu"
    rc=0
    LLAMA_BACKENDS=$dir/cpu python3 bench/peers/llama_check.py "$exe" "$gguf" tests/data/tiny/qwen3-f32/golden.json \
      --tol "${TOL:-2e-3}" || rc=$?
    rm -f "$exe"
    exit $rc
  fi
  tool llama_greedy
  python3 bench/peers/llama_check.py "$TOOL" "$gguf" tests/data/tiny/qwen3-f32/golden.json --tol "${TOL:-2e-3}"
  ;;
bench)
  out=${3:?OUT.jsonl}
  shift 3
  [ $# -gt 0 ] || set -- bench/configs/qwen3-0.6b.json bench/configs/qwen3-1.7b.json bench/configs/qwen3-4b.json \
    bench/configs/qwen3-8b.json
  CTX=${CTX:-128,2048}
  PROMPTS=${PROMPTS:-128,1024}
  GEN=${GEN:-64}
  REPS=${REPS:-5}
  tool llama-bench
  lb=$TOOL
  gguf= raw=
  trap 'rm -f "$gguf" "$raw"' EXIT # a 16 GB model file is not left behind by a failed run
  for c in "$@"; do
    name=$(basename "$c" .json)
    gguf=${TMPDIR:-/tmp}/kiln-peer-$name.gguf
    s=$(date +%s)
    "$BIN/gguf_export" --config "$c" --tokenizer third_party/qwen3/tokenizer.json --out "$gguf"
    echo "llama_cpp.sh: $name exported in $(( $(date +%s) - s )) s" >&2
    raw=$(mktemp)
    "$lb" -m "$gguf" -ngl 99 -fa 1 -r "$REPS" -p "$PROMPTS" -n 0 -o jsonl > "$raw"
    "$lb" -m "$gguf" -ngl 99 -fa 1 -r "$REPS" -p 0 -n "$GEN" -d "$CTX" -o jsonl >> "$raw"
    rm -f "$gguf"
    python3 - "$raw" "$name" "$(cat "$dir/llama.cpp.info.json")" >> "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
res = dict(config=sys.argv[2], peer="llama.cpp", release=json.loads(sys.argv[3]).get("tag"),
           device=rows[0].get("gpu_info"), build=rows[0].get("build_commit"), decode=[], prefill=[])
for r in rows:
    if r["n_gen"] > 0:  # the time of n_gen single-token decodes after n_depth tokens of context
        res["decode"].append(dict(ctx=r["n_depth"], ms_per_token_host=r["avg_ns"] / r["n_gen"] / 1e6,
                                  stddev_ms=r["stddev_ns"] / r["n_gen"] / 1e6))
    else:
        res["prefill"].append(dict(prompt=r["n_prompt"], ttft_ms=r["avg_ns"] / 1e6, stddev_ms=r["stddev_ns"] / 1e6))
print(json.dumps(res))
EOF
    rm -f "$raw"
    tail -n 1 "$out" >&2
  done
  ;;
*)
  sed -n '2,20p' "$0" >&2
  exit 2
  ;;
esac
