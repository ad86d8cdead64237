#!/usr/bin/env bash
# A/B of tuning settings on one GPU: bench_cuda for every (setting, config), the settings interleaved round by
# round so that a drifting GPU clock or a neighbour's load hits all of them alike; prints the median decode
# ms/token of each (setting, config, context) with its median fraction of the memory floor (from the copy bandwidth
# each run measured), the median time to first token of each prompt length (PROMPTS, default 128) over the rounds,
# and with OPS=1 the per-kernel times of one layer.
#   bench/cuda/ab.sh CONFIG.json... -- SETTING...
# A SETTING is a quoted list of environment assignments ("" for the defaults); BIN=DIR in a setting runs that
# folder's bench_cuda instead (two builds side by side), e.g.
#   bench/cuda/ab.sh bench/configs/qwen3-0.6b.json bench/configs/qwen3-4b.json -- "" KILN_CUDA_ATTN_CLUSTER=1 \
#     KILN_CUDA_GEMV_PF=2 "KILN_CUDA_ATTN_CLUSTER=1 KILN_CUDA_GEMV_PF=2"
# Environment: BIN (folder of bench_cuda, default build/bin), ROUNDS (3), CTX (128,2048), PROMPTS (128), OPS=1,
# OUT (a folder for every bench_cuda JSON line, tagged with its setting and round), RESULTS (a bench/results JSON
# file: device, driver, date, commit (KILN_COMMIT or git), command, the medians and every run). A BIN= folder inside
# the repository is recorded relative to it, in the settings and the command line. Stopped early (SIGTERM or
# SIGINT, e.g. by `timeout`), it stops the bench_cuda it is running, reports the medians of the runs that finished
# (the command line says it stopped) and exits with status 124.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-build/bin}
cmdline="bench/cuda/ab.sh $*"
configs=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do configs+=("$1"); shift; done
[ $# -gt 0 ] && shift
settings=("$@")
[ ${#configs[@]} -gt 0 ] && [ ${#settings[@]} -gt 0 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
for s in "${settings[@]}"; do
  for kv in $s; do
    [[ $kv =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] || { echo "ab.sh: '$kv' is not VAR=VALUE" >&2; exit 2; }
  done
done
ROUNDS=${ROUNDS:-3}
CTX=${CTX:-128,2048}
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
# A setting as recorded: a BIN= folder inside the repository relative to it (no machine's paths in the results).
label_() {
  local out=() kv
  for kv in $1; do
    [[ $kv == BIN="$PWD"/* ]] && kv=BIN=${kv#BIN="$PWD"/}
    out+=("$kv")
  done
  echo "${out[*]}"
}
# bench_cuda runs in the background and is waited for, so that a signal reaches the trap at once
stopped= child=
trap 'stopped=1; [ -z "$child" ] || kill "$child" 2>/dev/null || true' TERM INT
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!settings[@]}"; do
    ops=()
    [ "${OPS:-0}" = 1 ] && [ "$r" = 1 ] && ops=(--ops)
    bin=$BIN
    for kv in ${settings[$i]}; do [[ $kv == BIN=* ]] && bin=${kv#BIN=}; done
    for c in "${configs[@]}"; do
      json=$(mktemp)
      # shellcheck disable=SC2086  # a setting is a list of words on purpose
      env ${settings[$i]} "$bin/bench_cuda" --ctx "$CTX" --prompts "${PROMPTS:-128}" "${ops[@]}" --json "$json" \
        "$c" >/dev/null &
      child=$!
      if ! wait "$child"; then
        rm -f "$json"
        [ -n "$stopped" ] && break 3
        echo "ab.sh: bench_cuda failed (${settings[$i]:-defaults}, $c)" >&2
        exit 1
      fi
      child=
      python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]);
r["setting"], r["round"] = sys.argv[2], int(sys.argv[3]); print(json.dumps(r))' "$json" \
        "$(label_ "${settings[$i]}")" "$r" >> "$lines"
      rm -f "$json"
      [ -z "$stopped" ] || break 3
    done
  done
done
trap - TERM INT
[ -s "$lines" ] || { echo "ab.sh: no run finished" >&2; exit 124; }
cmdline=${cmdline//"$PWD"\//}
[ -n "$stopped" ] && cmdline="$cmdline (stopped early by a signal: only the runs that finished)"
[ -n "${OUT:-}" ] && cp "$lines" "$OUT"
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
commit=${KILN_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
python3 - "$lines" "${RESULTS:-}" "$driver" "$commit" "$cmdline" "ROUNDS=$ROUNDS CTX=$CTX" <<'EOF'
import datetime, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
dev = rows[0].get("device", "?")
print("device %s; median over %d rounds; decode ms/token (GPU time of the step's graph)" %
      (dev, max(r["round"] for r in rows)))
base, floor = {}, {}
for r in rows:
    for d in r["decode"]:
        base.setdefault((r["setting"], r["config"], d["ctx"]), []).append(d["ms_per_token_gpu"])
        floor.setdefault((r["setting"], r["config"], d["ctx"]), []).append(d.get("fraction_of_floor", float("nan")))
settings = list(dict.fromkeys(r["setting"] for r in rows))
# floor: the fraction of the memory floor (weight and KV bytes over the copy bandwidth each run measured)
print("%-48s %-18s %6s %9s %8s %6s" % ("setting", "config", "ctx", "ms", "vs first", "floor"))
for (s, c, ctx), v in base.items():
    m = statistics.median(v)
    ref = statistics.median(base.get((settings[0], c, ctx), [float("nan")]))
    f = statistics.median(floor[(s, c, ctx)])
    print("%-48s %-18s %6d %9.4f %7.3fx %5.1f%%" % (s or "(defaults)", c.replace(".json", ""), ctx, m, m / ref,
                                                    100 * f))
ttft = {}
for r in rows:
    for p in r.get("prefill", []):
        ttft.setdefault((r["setting"], r["config"], p["prompt"]), []).append(p["ttft_ms"])
print("%-48s %-18s %6s %9s %8s" % ("setting", "config", "prompt", "TTFT ms", "vs first"))
for (s, c, n), v in ttft.items():
    m = statistics.median(v)
    ref = statistics.median(ttft.get((settings[0], c, n), [float("nan")]))
    print("%-48s %-18s %6d %9.4f %7.3fx" % (s or "(defaults)", c.replace(".json", ""), n, m, m / ref))
if sys.argv[2]:
    table = [dict(setting=s or "(defaults)", config=c, ctx=ctx, ms_per_token_gpu_median=statistics.median(v),
                  fraction_of_floor_median=statistics.median(floor[(s, c, ctx)]), rounds=len(v))
             for (s, c, ctx), v in base.items()]
    table += [dict(setting=s or "(defaults)", config=c, prompt=n, ttft_ms_median=statistics.median(v), rounds=len(v))
              for (s, c, n), v in ttft.items()]
    doc = dict(device=dev, driver=sys.argv[3], date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
               commit=sys.argv[4], command=sys.argv[5] + " (" + sys.argv[6] + ")", table=table, runs=rows)
    with open(sys.argv[2], "w") as f:
        json.dump(doc, f, indent=1)
for r in rows:
    for key in sorted(k for k in r if k.startswith("ops_")):
        cells = ", ".join("%s %.1f us" % (o["op"], o["us"]) for o in r[key])
        print("%s %s %s: %s" % (r["setting"] or "(defaults)", r["config"].replace(".json", ""), key, cells))
EOF
[ -z "$stopped" ] || exit 124
