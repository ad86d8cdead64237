#!/usr/bin/env python3
"""Where one decode step's time goes, kernel by kernel, inside the graph.

Reads the kernel trace of an Nsight Systems run of bench_cuda (`nsys stats --report cuda_gpu_trace --format csv`,
written by bench/cuda/profile.sh) and the model config, finds the decode steps (the embedding kernel followed by a
GEMV), and prints for each role of a layer (qkv GEMV, attention, o GEMV, gate/up GEMV, down GEMV) and for the head
the median duration over the last steps, the weight bandwidth it reached, the median gap from the end of the
kernel before it (negative: the two overlapped, programmatic dependent launch) and the median increment: from the
end of the kernel before it to its own end, the time the role adds to the step. Under programmatic dependent
launch a kernel starts early and waits for its predecessor, so its duration overstates its cost (the durations
of a step add up to more than its span) and the increments are what sums to the span. bench_cuda --ops times each
kernel alone; this shows them in context, where L2 state, overlap and launch gaps differ.

With --prefill N it reports the prefills instead, taking them to be of N tokens (the trace must hold prefills of
that one length, as from bench_cuda --prompts N: their lengths cannot be told apart in it): per layer the add+RMSNorm,
q/k/v GEMM, q/k norm + RoPE, attention, o GEMM, add+RMSNorm, gate/up GEMM, SwiGLU and down GEMM, each GEMM being
whatever cuBLAS launched between its neighbours (one kernel or several: its time is their span), with the median
time, the median gap after the part before it and the TFLOP/s of the GEMMs and of the causal attention.

  trace_report.py TRACE.csv CONFIG.json [--steps N] [--prefill N] [--json OUT.json]
"""
import csv
import json
import re
import statistics
import sys

ROLES = ["qkv", "attention", "o", "gate_up", "down"]


def role_of(j, n):
    """The role of kernel j of a decode step of n kernels: the embedding, 5 a layer, then the head's GEMV."""
    return "embed" if j == 0 else "head" if j == n - 1 else ROLES[(j - 1) % 5]


def num(x):
    """NaN as null (NaN is not JSON)."""
    return None if x != x else x


def load_trace(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # nsys prints notes before the header in some versions: the header is the first row naming a start and a name
    for h, row in enumerate(rows):
        cols = [c.strip() for c in row]
        if any(c.startswith("Start") for c in cols) and "Name" in cols:
            break
    else:
        sys.exit(f"trace_report: {path}: no header with Start and Name columns")
    cols = [c.strip() for c in rows[h]]
    i_start = next(i for i, c in enumerate(cols) if c.startswith("Start"))
    i_dur = next(i for i, c in enumerate(cols) if c.startswith("Duration"))
    i_name = cols.index("Name")
    kernels = []
    for row in rows[h + 1:]:
        if len(row) <= max(i_start, i_dur, i_name):
            continue
        name = row[i_name]
        if name.startswith("[CUDA"):  # memcpy, memset
            continue
        try:
            kernels.append((float(row[i_start]), float(row[i_dur]), name))
        except ValueError:
            continue
    kernels.sort()
    return kernels


def decode_steps(kernels, n_layers):
    """Runs of 1 + 5 * n_layers + 1 kernels that start with the embedding and go on with GEMVs and attention."""
    need = 2 + 5 * n_layers
    steps = []
    i = 0
    while i + need <= len(kernels):
        k = kernels[i: i + need]
        if "embed" in k[0][2] and "gemv" in k[1][2] and "attn" in k[2][2] and "gemv" in k[-1][2]:
            steps.append(k)
            i += need
        else:
            i += 1
    return steps


PREFILL_ROLES = ["norm1", "qkv", "rope", "attention", "o", "norm2", "gate_up", "swiglu", "down"]


def prefills(kernels, n_layers):
    """Each prefill as its parts: a list over layers of {role: (start, end)}, the kernels of a GEMM grouped. A
    prefill starts with the embedding followed by an add+RMSNorm; a run that breaks the pattern is skipped."""
    is_norm = lambda n: "rmsnorm" in n
    is_rope = lambda n: "rope" in n
    is_attn = lambda n: "fa2" in n or "ap_wmma" in n
    is_swiglu = lambda n: "swiglu" in n
    # kiln's own GEMM with an epilogue of kind k of kiln_gemm_out (its last template argument), mangled or not
    def is_tc(n, k):
        return re.search(rf"gemm_tc_kernelI(?:Li\d+E){{3}}Li{k}E|gemm_tc_kernel<\d+, ?\d+, ?\d+, ?{k}>", n) is not None
    out, i = [], 0
    while i + 1 < len(kernels):
        if not ("embed" in kernels[i][2] and is_norm(kernels[i + 1][2])):
            i += 1
            continue
        j, layers = i + 1, []

        def take(stop):
            """The kernels from j up to the next one that stop() accepts: their (start, end), and that index."""
            k = j
            while k < len(kernels) and not stop(kernels[k][2]) and "embed" not in kernels[k][2]:
                k += 1
            if k == j or k >= len(kernels) or not stop(kernels[k][2]):
                return None, k
            return (kernels[j][0], max(s + d for s, d, _ in kernels[j:k])), k

        ok = True
        for _ in range(n_layers):
            parts = {}
            for role, test, nxt in [("norm1", is_norm, None), ("qkv", None, is_rope), ("rope", is_rope, None),
                                    ("attention", is_attn, None), ("o", None, is_norm), ("norm2", is_norm, None),
                                    ("gate_up", None, is_swiglu), ("swiglu", is_swiglu, None), ("down", None, is_norm)]:
                fused = {"qkv": ("rope", 4), "gate_up": ("swiglu", 3)}  # KILN_CUDA_PREFILL_GEMM=own
                if role in fused and j < len(kernels) and is_tc(kernels[j][2], fused[role][1]):
                    # kiln's own GEMM with the next part in its epilogue: that part takes no time of its own
                    parts[role] = (kernels[j][0], kernels[j][0] + kernels[j][1])
                    parts[fused[role][0]] = (parts[role][1], parts[role][1])
                    j += 1
                    continue
                if role in ("rope", "swiglu") and role in parts:
                    continue
                if test:  # one kernel of a known name
                    if j >= len(kernels) or not test(kernels[j][2]):
                        ok = False
                        break
                    parts[role] = (kernels[j][0], kernels[j][0] + kernels[j][1])
                    j += 1
                else:  # a GEMM: every kernel up to the next known one
                    span, j = take(nxt)
                    if span is None:
                        ok = False
                        break
                    parts[role] = span
            if not ok:
                break
            layers.append(parts)
        if ok:
            out.append(layers)
        i = j if ok else i + 1
    return out


def prefill_report(kernels, cfg, cfg_path, n, out_json):
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    L, nh, nkv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    flops = {"qkv": 2 * n * H * (nh + 2 * nkv) * hd, "o": 2 * n * nh * hd * H, "gate_up": 2 * n * H * 2 * I,
             "down": 2 * n * I * H, "attention": 2 * n * n * hd * nh}  # causal: half of 4 n^2 hd per head
    runs = prefills(kernels, L)
    if not runs:
        sys.exit("trace_report: no prefill found in the trace (embedding, add+RMSNorm, GEMM, RoPE, attention, ...)")
    dur = {r: [] for r in PREFILL_ROLES}
    gap = {r: [] for r in PREFILL_ROLES}
    spans = []
    for layers in runs:
        spans.append(layers[-1]["down"][1] - layers[0]["norm1"][0])
        prev = None
        for parts in layers:
            for role in PREFILL_ROLES:
                s, e = parts[role]
                dur[role].append(e - s)
                if prev is not None:
                    gap[role].append(s - prev)
                prev = e
    med = lambda xs: statistics.median(xs) / 1e3 if xs else float("nan")  # ns -> us
    span_ms = med(spans) / 1e3
    print(f"{cfg_path}: {len(runs)} prefills of {n} tokens, median span of the layers {span_ms:.3f} ms")
    print(f"{'part':<10} {'us a layer':>10} {'gap us':>8} {'ms in all':>9} {'TFLOP/s':>8}")
    report = {"config": cfg_path, "tokens": n, "prefills": len(runs), "layers_span_ms": span_ms, "parts": []}
    total = 0.0
    for role in PREFILL_ROLES:
        d, g = med(dur[role]), med(gap[role])
        tf = flops[role] / (d * 1e-6) / 1e12 if role in flops and d > 0 else float("nan")
        total += d + (g if g == g else 0.0)
        print(f"{role:<10} {d:>10.2f} {g:>8.2f} {d * L / 1e3:>9.3f} {tf:>8.0f}")
        report["parts"].append({"part": role, "us": num(d), "gap_us": num(g), "tflops": num(tf)})
    print(f"{'a layer':<10} {total:>10.2f}")
    if out_json:
        json.dump(report, open(out_json, "w"), indent=1)


def pop_option(args, name, default, kind=str):
    """The value after `name` in args (both removed), or default when absent."""
    if name not in args:
        return default
    j = args.index(name)
    if j + 1 >= len(args):
        sys.exit(f"trace_report: {name} needs a value")
    value = kind(args[j + 1])
    del args[j: j + 2]
    return value


def main():
    args = sys.argv[1:]
    n_keep = pop_option(args, "--steps", 50, int)
    n_prefill = pop_option(args, "--prefill", 0, int)
    out_json = pop_option(args, "--json", None)
    if len(args) != 2:
        sys.exit(__doc__)
    trace, cfg_path = args
    cfg = json.load(open(cfg_path))
    if n_prefill > 0:
        return prefill_report(load_trace(trace), cfg, cfg_path, n_prefill, out_json)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    L, nh, nkv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    wbytes = {"qkv": (nh + 2 * nkv) * hd * H * 2, "o": nh * hd * H * 2, "gate_up": 2 * I * H * 2,
              "down": I * H * 2, "head": V * H * 2}
    steps = decode_steps(load_trace(trace), L)
    if not steps:
        sys.exit("trace_report: no decode step found in the trace (embedding, GEMV, attention, ..., GEMV)")
    steps = steps[-n_keep:]
    dur = {r: [] for r in ROLES + ["embed", "head"]}
    gap = {r: [] for r in ROLES + ["head"]}
    inc = {r: [] for r in ROLES + ["head"]}
    spans, sums = [], []
    for k in steps:
        spans.append(k[-1][0] + k[-1][1] - k[0][0])
        sums.append(sum(d for _, d, _ in k))
        for j in range(len(k)):
            role = role_of(j, len(k))
            dur[role].append(k[j][1])
            if j:
                gap[role].append(k[j][0] - (k[j - 1][0] + k[j - 1][1]))
                inc[role].append(k[j][0] + k[j][1] - (k[j - 1][0] + k[j - 1][1]))
    med = lambda xs: statistics.median(xs) / 1e3 if xs else float("nan")  # ns -> us
    span_us, sum_us = med(spans), med(sums)
    print(f"{cfg_path}: {len(steps)} decode steps, median span {span_us:.1f} us, "
          f"sum of kernel durations {sum_us:.1f} us")
    print(f"{'role':<10} {'median us':>10} {'x count':>8} {'inc us':>8} {'inc a step':>10} {'GB/s inc':>8} "
          f"{'gap us':>8}  kernel")
    report = {"config": cfg_path, "steps": len(steps), "span_us": span_us, "kernel_sum_us": sum_us, "roles": []}
    names = {}
    for j, (_, _, name) in enumerate(steps[-1]):
        names.setdefault(role_of(j, len(steps[-1])), name)
    for role in ["embed"] + ROLES + ["head"]:
        count = 1 if role in ("embed", "head") else L
        d = med(dur[role])
        g = med(gap[role]) if role != "embed" else float("nan")
        n = med(inc[role]) if role != "embed" else float("nan")
        bw = wbytes[role] / (n * 1e3) if role in wbytes and n > 0 else float("nan")
        print(f"{role:<10} {d:>10.2f} {count:>8} {n:>8.2f} {n * count:>10.1f} {bw:>8.0f} {g:>8.2f}  "
              f"{names.get(role, '')[:60]}")
        report["roles"].append({"role": role, "median_us": num(d), "count": count, "inc_us": num(n),
                                "gbps_inc": num(bw), "gap_us": num(g), "kernel": names.get(role, "")})
    if out_json:
        json.dump(report, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
