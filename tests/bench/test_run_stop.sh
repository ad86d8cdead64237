#!/usr/bin/env bash
# bench/cuda/run.sh and ab.sh stopped by a signal (as a device call's time limit stops them): each must stop the
# program it runs at once, still write the results of the runs that finished, say so in the results, and exit 124;
# unstopped, they write them all. A stand-in bench_cuda appends one recorded result line per config ("slow"
# configs first sleep a minute), so no GPU is needed.
#   tests/bench/test_run_stop.sh   (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_run_stop: $*" >&2; exit 1; }
mkdir -p "$tmp/bin"
# one line of bench_cuda's output (an H100 run), its config replaced by the one asked for
cat > "$tmp/line.json" <<'LINE'
{"config":"CONFIG","weight_bytes_per_token":1192230912,"create_ms":11.2,"decode_path":"graph","short_keys":512,"decode":[{"ctx":128,"ms_per_token_gpu":0.8256,"ms_per_token_host":0.8267,"kv_bytes_read":14794752,"floor_ms":0.4011,"fraction_of_floor":0.4852}],"prefill":[{"prompt":128,"ttft_ms":1.4319,"compute_floor_ms":0.1436,"ratio_to_floor":9.975}],"engine":"kiln-cuda","device":"NVIDIA H100 80GB HBM3","cuda_driver_api":13000,"copy_gbps":3008.96,"matmul_tflops":785.62}
LINE
cat > "$tmp/bin/bench_cuda" <<STUB
#!/usr/bin/env bash
json= cfg=
while [ \$# -gt 0 ]; do
  case \$1 in --json) json=\$2; shift 2 ;; --ctx|--prompts) shift 2 ;; *) cfg=\$1; shift ;; esac
done
name=\$(basename "\$cfg")
case \$name in slow*) touch "$tmp/slow-started"; sleep 60 ;; esac
sed "s/CONFIG/\$name/" "$tmp/line.json" >> "\$json"
STUB
chmod +x "$tmp/bin/bench_cuda"
for c in quick-a quick-b slow; do echo '{}' > "$tmp/$c.json"; done
# Runs a command in a process group of its own and, once the stand-in has started a slow config, signals the group
# as timeout does at a device call's limit; prints the command's exit status (its output goes to $tmp/last.out).
stop_when_slow() {
  rm -f "$tmp/slow-started"
  setsid "$@" > "$tmp/last.out" 2>&1 & local pid=$! n=0
  while [ ! -e "$tmp/slow-started" ] && [ $n -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
  kill -TERM -- -$pid 2>/dev/null
  wait $pid
  echo $?
}

# stopped while the third config runs: the first two are written, the command line says it stopped
start=$(date +%s)
rc=$(NO_TORCH=1 BIN="$tmp/bin" KILN_COMMIT=test stop_when_slow bench/cuda/run.sh "$tmp/stopped.json" \
  "$tmp/quick-a.json" "$tmp/quick-b.json" "$tmp/slow.json")
took=$(( $(date +%s) - start ))
[ $rc = 124 ] || fail "stopped run: exit status $rc, not 124 ($(tail -n 3 "$tmp/last.out"))"
[ $took -lt 30 ] || fail "stopped run took ${took}s: the running program was not stopped"
[ -s "$tmp/stopped.json" ] || fail "stopped run wrote no results"
python3 - "$tmp/stopped.json" <<'PY' || fail "stopped run's results are wrong"
import json, sys
d = json.load(open(sys.argv[1]))
assert [k["config"] for k in d["kiln"]] == ["quick-a.json", "quick-b.json"], d["kiln"]
assert "stopped early" in d["command"], d["command"]
assert d["commit"] == "test"
PY

# not stopped: every config, no note
NO_TORCH=1 BIN="$tmp/bin" KILN_COMMIT=test timeout 20 bench/cuda/run.sh "$tmp/full.json" \
  "$tmp/quick-a.json" "$tmp/quick-b.json" > "$tmp/full.out" 2>&1 || fail "full run failed: $(tail -n 3 "$tmp/full.out")"
python3 - "$tmp/full.json" <<'PY' || fail "full run's results are wrong"
import json, sys
d = json.load(open(sys.argv[1]))
assert [k["config"] for k in d["kiln"]] == ["quick-a.json", "quick-b.json"], d["kiln"]
assert "stopped" not in d["command"], d["command"]
PY

# stopped before any run finished: no results file, still 124
rc=$(NO_TORCH=1 BIN="$tmp/bin" stop_when_slow bench/cuda/run.sh "$tmp/none.json" "$tmp/slow.json")
[ $rc = 124 ] || fail "run stopped before any result: exit status $rc, not 124"
[ ! -e "$tmp/none.json" ] || fail "run stopped before any result wrote a results file"
# ab.sh stopped in its first round, while the second config runs: the first config's median, marked stopped
start=$(date +%s)
rc=$(BIN="$tmp/bin" ROUNDS=2 CTX=128 RESULTS="$tmp/ab-stopped.json" KILN_COMMIT=test stop_when_slow bench/cuda/ab.sh \
  "$tmp/quick-a.json" "$tmp/slow.json" -- "" "X=1")
took=$(( $(date +%s) - start ))
[ $rc = 124 ] || fail "stopped ab.sh: exit status $rc, not 124 ($(tail -n 3 "$tmp/last.out"))"
[ $took -lt 30 ] || fail "stopped ab.sh took ${took}s: the running bench_cuda was not stopped"
python3 - "$tmp/ab-stopped.json" <<'PY' || fail "stopped ab.sh's results are wrong"
import json, sys
d = json.load(open(sys.argv[1]))
assert [(r["setting"], r["config"]) for r in d["runs"]] == [("", "quick-a.json")], d["runs"]
assert "stopped early" in d["command"], d["command"]
assert {t["config"] for t in d["table"]} == {"quick-a.json"}, d["table"]
PY
# ab.sh unstopped: every setting, config and round
BIN="$tmp/bin" ROUNDS=2 CTX=128 RESULTS="$tmp/ab-full.json" KILN_COMMIT=test timeout 30 bench/cuda/ab.sh \
  "$tmp/quick-a.json" "$tmp/quick-b.json" -- "" "X=1" > "$tmp/ab-full.out" 2>&1 ||
  fail "full ab.sh failed: $(tail -n 3 "$tmp/ab-full.out")"
python3 - "$tmp/ab-full.json" <<'PY' || fail "full ab.sh's results are wrong"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["runs"]) == 8 and "stopped" not in d["command"], (len(d["runs"]), d["command"])
assert sorted((t["setting"], t["config"]) for t in d["table"] if "ctx" in t) == [
    ("(defaults)", "quick-a.json"), ("(defaults)", "quick-b.json"), ("X=1", "quick-a.json"), ("X=1", "quick-b.json")]
PY

# report.py on lines whose last one was cut short while being written: the whole lines only
{ sed "s/CONFIG/whole.json/" "$tmp/line.json"; sed "s/CONFIG/cut.json/" "$tmp/line.json" | head -c 200; } \
  > "$tmp/cut.jsonl"
python3 bench/cuda/report.py --kiln "$tmp/cut.jsonl" --out "$tmp/cut.json" > "$tmp/cut.out" 2>&1 ||
  fail "report.py refused a cut last line: $(tail -n 3 "$tmp/cut.out")"
python3 - "$tmp/cut.json" <<'PY' || fail "report.py kept a cut line"
import json, sys
assert [k["config"] for k in json.load(open(sys.argv[1]))["kiln"]] == ["whole.json"]
PY
echo "test_run_stop: ok"
