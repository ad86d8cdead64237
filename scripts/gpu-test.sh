#!/usr/bin/env bash
# The CUDA tests on a GPU machine, from binaries built elsewhere (docs/cuda.md, "Testing on a GPU machine"):
# runs every tests/cuda test binary directly (no CTest needed, so the build folder may come from another path),
# then (where cuobjdump is installed) checks the SASS of the register-sourced wgmma kernels, then runs
# compute-sanitizer memcheck and racecheck on one short generation (test_cuda_smoke), and prints a table.
#   scripts/gpu-test.sh [BIN_DIR]        (default build/bin)
# Environment: LIBS (extra shared-library folder, e.g. unpacked .deb runtimes), SANITIZE=0 to skip the sanitizer,
# SANITIZE=only to run nothing but the sanitizer stage, SANITIZE_TOOLS (default "memcheck racecheck") for which
# tools it runs. With the sanitizers the whole script takes longer than one 10-minute device call (racecheck on
# test_cuda_smoke alone runs for minutes), so a call can take the tests (SANITIZE=0) and another the sanitizers.
# Exit status: 0 when every test passed (or was skipped for want of a GPU), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bin}
for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
  case $tool in memcheck | racecheck) ;; *) echo "gpu-test.sh: SANITIZE_TOOLS: unknown tool $tool" >&2; exit 2 ;; esac
done
export KILN_SOURCE_DIR=$PWD
export LD_LIBRARY_PATH="${LIBS:+$LIBS:}/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# NAME or NAME@MODE: NAME@persistent runs with KILN_CUDA_DECODE=persistent (the persistent decode kernel instead of
# the default kernel-per-op graph), NAME@cluster with KILN_CUDA_ATTN_CLUSTER=1 (decode attention combining inside
# thread-block clusters at every position), NAME@global with KILN_CUDA_ATTN_CLUSTER=0 (never; the default does in
# the short-context graphs, up to 512 keys), NAME@l2pf with the L2 prefetch knobs on (KILN_CUDA_ATTN_L2PF=8,
# KILN_CUDA_GEMV_L2NEXT=4; off by default), NAME@l2late with attention's prefetch issued after its prologue
# (KILN_CUDA_ATTN_L2PF_AT=prologue), NAME@side with the side branch's L2 prefetch (KILN_CUDA_L2PF_SIDE=16; by
# default the prefetch is chosen by timing at create), NAME@nopgraph without the prefill graphs
# (KILN_CUDA_PREFILL_GRAPH=0),
# NAME@knobs with the other tuning knobs away from their defaults (KILN_CUDA_CARVEOUT=max, KILN_CUDA_ATTN_RELAXED=0,
# KILN_CUDA_GEMV_GU_BLOCKS=3), NAME@levels1 with the short-context graphs in one cluster size only
# (KILN_CUDA_ATTN_LEVELS=1; the default has three),
# NAME@t128 and NAME@t256 with decode attention in blocks of 128 or 256 threads at every shape
# (KILN_CUDA_ATTN_THREADS; the default picks by shape), NAME@norope with q/k norm + RoPE in their scalar form
# (KILN_CUDA_ROPE_VEC=0), NAME@split, NAME@split4 and NAME@splitall with the GEMV's split k (KILN_CUDA_GEMV_SPLIT=2,
# 4, all), NAME@pfwhole with prefill attention never splitting a tile's keys (KILN_CUDA_ATTN_PF_SPLIT=1),
# NAME@gemmplan with the prefill graphs' GEMMs on algorithms planned by timing (KILN_CUDA_GEMM_PLAN=time),
# NAME@pfsync with prefill attention on mma.sync where it would use wgmma (KILN_CUDA_ATTN_PF_MMA=sync), NAME@pdl with
# the prefill's own kernels launched as programmatic dependents (KILN_CUDA_PREFILL_PDL=1), NAME@owngemm and
# NAME@fused with kiln's own prefill GEMMs (KILN_CUDA_PREFILL_GEMM=own, fused), NAME@group1,
# NAME@group2 and NAME@group4 with decode attention units of at most 1, 2 or 4 query heads (KILN_CUDA_ATTN_GROUP),
# NAME@msample with the multi-block sampler (KILN_CUDA_SAMPLE=multi), so every decode and prefill path meets the
# tests.
tests=(test_cuda_wgmma test_cuda_ops test_cuda_ops@group1 test_cuda_ops@norope test_cuda_ops@split test_cuda_ops@split4
       test_cuda_ops@splitall
       test_cuda_decode test_cuda_decode@global test_cuda_decode@knobs test_cuda_decode@t128 test_cuda_decode@t256
       test_cuda_decode@levels1 test_cuda_decode@group2 test_cuda_decode@group4 test_cuda_decode@norope
       test_cuda_decode@split test_cuda_decode@splitall
       test_cuda_model test_cuda_model@persistent test_cuda_model@cluster test_cuda_model@global
       test_cuda_model@l2pf test_cuda_model@l2late test_cuda_model@side test_cuda_model@nopgraph
       test_cuda_model@knobs
       test_cuda_model@t128 test_cuda_model@t256 test_cuda_model@levels1 test_cuda_model@group2 test_cuda_model@group4
       test_cuda_model@norope
       test_cuda_model@split test_cuda_model@splitall test_cuda_model@pfwhole test_cuda_model@gemmplan
       test_cuda_model@pfsync test_cuda_model@pdl test_cuda_model@owngemm test_cuda_model@fused test_cuda_model@msample
       test_cuda_alloc test_cuda_alloc@persistent test_cuda_alloc@global test_cuda_alloc@msample
       test_cuda_smoke test_cuda_smoke@side test_cuda_smoke@persistent test_cuda_smoke@cluster test_cuda_smoke@global
       test_cuda_smoke@msample)
declare -a rows
fail=0
# SANITIZE=only: no tests, no kiln bench, no SASS check; the sanitizer stage must be able to run
only=0
if [ "${SANITIZE:-1}" = only ]; then
  only=1 tests=()
  command -v compute-sanitizer >/dev/null 2>&1 || { echo "gpu-test.sh: SANITIZE=only: no compute-sanitizer" >&2; exit 1; }
  [ -x "$BIN/test_cuda_smoke" ] || { echo "gpu-test.sh: SANITIZE=only: no $BIN/test_cuda_smoke" >&2; exit 1; }
fi
for spec in "${tests[@]}"; do
  t=${spec%@*}
  mode=
  [ "$spec" != "$t" ] && mode=${spec#*@}
  if [ ! -x "$BIN/$t" ]; then
    rows+=("$spec|missing|-")
    fail=1
    continue
  fi
  s=$(date +%s%N)
  case $mode in
    "") "$BIN/$t" ;;
    cluster) KILN_CUDA_ATTN_CLUSTER=1 "$BIN/$t" ;;
    global) KILN_CUDA_ATTN_CLUSTER=0 "$BIN/$t" ;;
    l2pf) KILN_CUDA_ATTN_L2PF=8 KILN_CUDA_GEMV_L2NEXT=4 "$BIN/$t" ;;
    l2late) KILN_CUDA_ATTN_L2PF=8 KILN_CUDA_ATTN_L2PF_AT=prologue "$BIN/$t" ;;
    side) KILN_CUDA_L2PF_SIDE=16 "$BIN/$t" ;;
    nopgraph) KILN_CUDA_PREFILL_GRAPH=0 "$BIN/$t" ;;
    knobs) KILN_CUDA_CARVEOUT=max KILN_CUDA_ATTN_RELAXED=0 KILN_CUDA_GEMV_GU_BLOCKS=3 "$BIN/$t" ;;
    levels1) KILN_CUDA_ATTN_LEVELS=1 "$BIN/$t" ;;
    t128) KILN_CUDA_ATTN_THREADS=128 "$BIN/$t" ;;
    t256) KILN_CUDA_ATTN_THREADS=256 "$BIN/$t" ;;
    norope) KILN_CUDA_ROPE_VEC=0 "$BIN/$t" ;;
    split) KILN_CUDA_GEMV_SPLIT=2 "$BIN/$t" ;;
    split4) KILN_CUDA_GEMV_SPLIT=4 "$BIN/$t" ;;
    splitall) KILN_CUDA_GEMV_SPLIT=all "$BIN/$t" ;;
    pfwhole) KILN_CUDA_ATTN_PF_SPLIT=1 "$BIN/$t" ;;
    gemmplan) KILN_CUDA_GEMM_PLAN=time "$BIN/$t" ;;
    pfsync) KILN_CUDA_ATTN_PF_MMA=sync "$BIN/$t" ;;
    pdl) KILN_CUDA_PREFILL_PDL=1 "$BIN/$t" ;;
    owngemm) KILN_CUDA_PREFILL_GEMM=own "$BIN/$t" ;;
    fused) KILN_CUDA_PREFILL_GEMM=fused "$BIN/$t" ;;
    group1 | group2 | group4) KILN_CUDA_ATTN_GROUP=${mode#group} "$BIN/$t" ;;
    msample) KILN_CUDA_SAMPLE=multi "$BIN/$t" ;;
    *) KILN_CUDA_DECODE=$mode "$BIN/$t" ;;
  esac
  rc=$?
  d=$(( ($(date +%s%N) - s) / 1000000 ))
  case $rc in
    0) st=pass ;;
    77) st=skip ;;
    *) st="FAIL($rc)"; fail=1 ;;
  esac
  rows+=("$spec|$st|$d")
done
# kiln bench on the GPU: the floor must come from the device's own copy bandwidth
if [ $only = 0 ] && [ -x "$BIN/kiln" ]; then
  s=$(date +%s%N)
  json=$(mktemp)
  if "$BIN/kiln" bench --device cuda -m tests/data/tiny/qwen3-f32 --prompt-tokens 32 --gen-tokens 16 --repeats 1 \
       --json "$json" && python3 -c 'import json, sys; d = json.load(open(sys.argv[1]));
assert d["bandwidth_of"] == "device" and d["copy_gb_s_median"] > 100 and 0 < d["fraction_of_floor"], d' "$json"
  then st=pass; else st=FAIL; fail=1; fi
  rm -f "$json"
  rows+=("kiln bench --device cuda|$st|$(( ($(date +%s%N) - s) / 1000000 ))")
fi
# The machine code of the kernels that run wgmma with A in registers (prefill attention), checked for the register
# fault CUDA 13.0's ptxas showed there (scripts/sass_wgmma_check.py, docs/cuda.md), where cuobjdump is installed.
CUOBJ=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -n 1 || true)
if [ $only = 0 ] && [ -n "$CUOBJ" ] && [ -x "$BIN/test_cuda_ops" ] && command -v python3 >/dev/null 2>&1; then
  s=$(date +%s%N)
  "$CUOBJ" -sass "$BIN/test_cuda_ops" > /tmp/kiln-sass.txt 2>/dev/null &&
    python3 scripts/sass_wgmma_check.py /tmp/kiln-sass.txt > /tmp/kiln-sass-check.log 2>&1
  rc=$?
  cat /tmp/kiln-sass-check.log 2>/dev/null
  [ $rc = 0 ] && st=pass || { st="FAIL($rc)"; fail=1; }
  rows+=("sass wgmma check|$st|$(( ($(date +%s%N) - s) / 1000000 ))")
fi
if [ "${SANITIZE:-1}" != 0 ] && command -v compute-sanitizer >/dev/null 2>&1 && [ -x "$BIN/test_cuda_smoke" ]; then
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
    s=$(date +%s%N)
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_smoke" > "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_CUDA_DECODE=persistent compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_smoke" \
        >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_CUDA_ATTN_CLUSTER=1 compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_smoke" \
        >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_CUDA_ATTN_CLUSTER=0 compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_smoke" \
        >> "/tmp/sanitizer-$tool.log" 2>&1
    rc=$?
    # The GEMM cases only under memcheck: racecheck (shared-memory hazards) reports hazards inside cuBLAS's own
    # Hopper kernels (nvjet_sm90_*, whose shared memory is ordered by mbarriers it does not model), fails with an
    # internal error when they are excluded (compute-sanitizer 2025.3.1), and kiln's kernels there (the planner's
    # random fill and bit comparison) use no shared memory.
    gemm=(env KILN_TEST_OPS=gemm compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_ops")
    [ "$tool" = racecheck ] && gemm=(true)
    # the GEMV cases of the ops test, whose long rows take the split-k path (auto, and 2 warps a pair forced), and
    # its small prefill attention cases, whose tiles split their keys, its sampling cases (both samplers, 2 draws a
    # case, the small vocabulary) and (memcheck) its GEMMs and their plans
    [ $rc = 0 ] && [ -x "$BIN/test_cuda_ops" ] &&
      KILN_TEST_OPS=gemv compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_ops" \
        >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_TEST_OPS=gemv KILN_CUDA_GEMV_SPLIT=2 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$BIN/test_cuda_ops" >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_TEST_OPS=attn_prefill compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda_ops" \
        >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      KILN_TEST_OPS=sample KILN_TEST_DRAWS=2 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$BIN/test_cuda_ops" >> "/tmp/sanitizer-$tool.log" 2>&1 &&
      "${gemm[@]}" >> "/tmp/sanitizer-$tool.log" 2>&1
    rc=$?
    d=$(( ($(date +%s%N) - s) / 1000000 ))
    tail -n 3 "/tmp/sanitizer-$tool.log"
    [ $rc = 0 ] && st=pass || { st="FAIL($rc)"; fail=1; tail -n 40 "/tmp/sanitizer-$tool.log"; }
    rows+=("sanitizer $tool|$st|$d")
  done
fi
printf '\n%-26s %-10s %s\n' test result ms
for r in "${rows[@]}"; do IFS='|' read -r a b c <<<"$r"; printf '%-26s %-10s %s\n' "$a" "$b" "$c"; done
exit $fail
