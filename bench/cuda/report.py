"""Joins bench_cuda's and the PyTorch baseline's JSON lines (bench/cuda/run.sh) into one results file
(bench/results/cuda-*.json: device, driver, date, commit, command, the measured ceilings and every number) and
prints the table: decode ms/token (what a caller sees per token) against the floor and the baseline (and, with
--persistent, the persistent decode kernel's, rows "persist"), and prefill (TTFT) against the compute floor and the
baseline; with --llama, llama.cpp's times on the same shapes (bench/peers/llama_cpp.sh bench) beside them."""
import argparse
import datetime
import json
import sys


def lines(path):
    """The JSON lines of a file; a last line cut short (a run stopped while writing it) is left out."""
    with open(path) as f:
        text = [l for l in f if l.strip()]
    out = []
    for i, l in enumerate(text):
        try:
            out.append(json.loads(l))
        except json.JSONDecodeError:
            if i + 1 < len(text):
                raise
            print("report.py: %s: its last line is cut short, left out" % path, file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--torch")
    ap.add_argument("--persistent", help="bench_cuda lines of the persistent decode kernel (run.sh PERSISTENT=1)")
    ap.add_argument("--llama", help="llama.cpp's lines (bench/peers/llama_cpp.sh bench)")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--command", default="")
    ap.add_argument("--driver", default="")
    ap.add_argument("--out")
    a = ap.parse_args()
    kiln = lines(a.kiln)
    torch = {r["config"]: r for r in lines(a.torch)} if a.torch else {}
    llama = {r["config"].replace(".json", ""): r for r in lines(a.llama)} if a.llama else {}
    k0 = kiln[0]
    doc = dict(device=k0["device"], driver=a.driver, date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
               commit=a.commit, command=a.command, copy_gbps=k0["copy_gbps"], matmul_tflops=k0["matmul_tflops"],
               kiln=kiln, torch=list(torch.values()))
    if llama:
        doc["llama_cpp"] = list(llama.values())
    persistent = lines(a.persistent) if a.persistent else []
    if persistent:
        doc["kiln_persistent"] = persistent
    rows = []
    for k in kiln:
        t = torch.get(k["config"])
        lc = llama.get(k["config"].replace(".json", ""))

        def peer(p, part, key, val, field):
            x = next((x for x in p[part] if x[key] == val), None) if p else None
            return x[field] if x else None

        for d in k["decode"]:
            rows.append(("decode", k["config"], "ctx %d" % d["ctx"], d["ms_per_token_host"], d["ms_per_token_gpu"],
                         peer(t, "decode", "ctx", d["ctx"], "ms_per_token_host"), d["floor_ms"],
                         peer(lc, "decode", "ctx", d["ctx"], "ms_per_token_host")))
        pk = next((x for x in persistent if x["config"] == k["config"]), None)
        for d in pk["decode"] if pk else []:
            rows.append(("persist", k["config"], "ctx %d" % d["ctx"], d["ms_per_token_host"], d["ms_per_token_gpu"],
                         peer(t, "decode", "ctx", d["ctx"], "ms_per_token_host"), d["floor_ms"],
                         peer(lc, "decode", "ctx", d["ctx"], "ms_per_token_host")))
        for p in k["prefill"]:
            rows.append(("prefill", k["config"], "%d tok" % p["prompt"], p["ttft_ms"], None,
                         peer(t, "prefill", "prompt", p["prompt"], "ttft_ms"), p["compute_floor_ms"],
                         peer(lc, "prefill", "prompt", p["prompt"], "ttft_ms")))
    doc["table"] = [dict(kind=r[0], config=r[1], case=r[2], kiln_ms=r[3], kiln_gpu_ms=r[4], torch_ms=r[5],
                         floor_ms=r[6], llama_cpp_ms=r[7]) for r in rows]
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
    print("device %s, driver %s, copy %.0f GB/s, bf16 matmul %.0f TFLOP/s, commit %s" %
          (k0["device"], a.driver, k0["copy_gbps"], k0["matmul_tflops"], a.commit[:12]))
    print("%-8s %-16s %-9s %9s %9s %9s %8s %9s %8s %8s %8s" %
          ("what", "config", "case", "kiln ms", "(gpu ms)", "torch ms", "torch/k", "llama ms", "llama/k", "floor",
           "floor/k"))
    for r in rows:
        def ms(v):
            return "%9.3f" % v if v else "%9s" % "-"

        def ratio(v):
            return "%8.2f" % (v / r[3]) if v else "%8s" % "-"

        print("%-8s %-16s %-9s %9.3f %s %s %s %s %s %8.3f %8.2f" %
              (r[0], r[1].replace(".json", ""), r[2], r[3], ms(r[4]), ms(r[5]), ratio(r[5]), ms(r[7]), ratio(r[7]),
               r[6], r[6] / r[3]))
    for k in kiln:
        bd = k.get("prefill_breakdown")
        if bd:
            print("prefill %d tok, %s: all layers' attention %.2f ms, all layers' GEMMs %.2f ms (each timed alone)" %
                  (bd["prompt"], k["config"].replace(".json", ""), bd["attention_ms"], bd["gemm_ms"]), end="")
            if "graph_gpu_ms" in bd:
                print("; whole prefill on the GPU %.2f ms launched, %.2f ms from a graph" %
                      (bd["eager_gpu_ms"], bd["graph_gpu_ms"]), end="")
            print()


if __name__ == "__main__":
    main()
