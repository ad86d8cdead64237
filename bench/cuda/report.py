"""Joins bench_cuda's and the PyTorch baseline's JSON lines (bench/cuda/run.sh) into one results file
(bench/results/cuda-*.json: device, driver, date, commit, command, the measured ceilings and every number) and
prints the table: decode ms/token (what a caller sees per token) against the floor and the baseline (and, with
--persistent, the persistent decode kernel's, rows "persist"), and prefill (TTFT) against the compute floor and the
baseline."""
import argparse
import datetime
import json


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--torch")
    ap.add_argument("--persistent", help="bench_cuda lines of the persistent decode kernel (run.sh PERSISTENT=1)")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--command", default="")
    ap.add_argument("--driver", default="")
    ap.add_argument("--out")
    a = ap.parse_args()
    kiln = lines(a.kiln)
    torch = {r["config"]: r for r in lines(a.torch)} if a.torch else {}
    k0 = kiln[0]
    doc = dict(device=k0["device"], driver=a.driver, date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
               commit=a.commit, command=a.command, copy_gbps=k0["copy_gbps"], matmul_tflops=k0["matmul_tflops"],
               kiln=kiln, torch=list(torch.values()))
    persistent = lines(a.persistent) if a.persistent else []
    if persistent:
        doc["kiln_persistent"] = persistent
    rows = []
    for k in kiln:
        t = torch.get(k["config"])
        for d in k["decode"]:
            td = next((x for x in t["decode"] if x["ctx"] == d["ctx"]), None) if t else None
            rows.append(("decode", k["config"], "ctx %d" % d["ctx"], d["ms_per_token_host"], d["ms_per_token_gpu"],
                         td["ms_per_token_host"] if td else None, d["floor_ms"]))
        pk = next((x for x in persistent if x["config"] == k["config"]), None)
        for d in pk["decode"] if pk else []:
            td = next((x for x in t["decode"] if x["ctx"] == d["ctx"]), None) if t else None
            rows.append(("persist", k["config"], "ctx %d" % d["ctx"], d["ms_per_token_host"], d["ms_per_token_gpu"],
                         td["ms_per_token_host"] if td else None, d["floor_ms"]))
        for p in k["prefill"]:
            tp = next((x for x in t["prefill"] if x["prompt"] == p["prompt"]), None) if t else None
            rows.append(("prefill", k["config"], "%d tok" % p["prompt"], p["ttft_ms"], None,
                         tp["ttft_ms"] if tp else None, p["compute_floor_ms"]))
    doc["table"] = [dict(kind=r[0], config=r[1], case=r[2], kiln_ms=r[3], kiln_gpu_ms=r[4], torch_ms=r[5],
                         floor_ms=r[6]) for r in rows]
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
    print("device %s, driver %s, copy %.0f GB/s, bf16 matmul %.0f TFLOP/s, commit %s" %
          (k0["device"], a.driver, k0["copy_gbps"], k0["matmul_tflops"], a.commit[:12]))
    print("%-8s %-16s %-9s %9s %9s %9s %8s %8s %8s" %
          ("what", "config", "case", "kiln ms", "(gpu ms)", "torch ms", "torch/k", "floor", "floor/k"))
    for r in rows:
        ratio = "%8.2f" % (r[5] / r[3]) if r[5] else "%8s" % "-"
        print("%-8s %-16s %-9s %9.3f %9s %9s %s %8.3f %8.2f" %
              (r[0], r[1].replace(".json", ""), r[2], r[3], "%9.3f" % r[4] if r[4] else "-",
               "%9.3f" % r[5] if r[5] else "-", ratio, r[6], r[6] / r[3]))
    for k in kiln:
        bd = k.get("prefill_breakdown")
        if bd:
            print("prefill %d tok, %s: all layers' attention %.2f ms, all layers' GEMMs %.2f ms (each timed alone)" %
                  (bd["prompt"], k["config"].replace(".json", ""), bd["attention_ms"], bd["gemm_ms"]))


if __name__ == "__main__":
    main()
