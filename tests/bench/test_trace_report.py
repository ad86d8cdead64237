#!/usr/bin/env python3
"""trace_report.py on synthetic Nsight Systems kernel traces whose answers are known: the decode steps are found
among other kernels (a prefill, a sample kernel, copies, a note before the header), each role's median duration,
weight bandwidth and gap come out as built, and a trace without a decode step is an error, not an empty table.
With --prefill the same for the parts of a prefill's layers (a GEMM of several kernels is their span)."""
import csv
import json
import os
import subprocess
import sys
import tempfile

REPORT = sys.argv[1]
L, H, I, V, NH, NKV, HD = 2, 64, 128, 1000, 4, 2, 16
CFG = {"hidden_size": H, "intermediate_size": I, "vocab_size": V, "num_hidden_layers": L,
       "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": HD}
# ns per role; each step's kernels are 500 ns apart, and the o GEMV starts 300 ns before the attention ends
DUR = {"qkv": 4000, "attention": 9000, "o": 3000, "gate_up": 5000, "down": 4000, "head": 100000}
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL " + what)


class Trace:
    """A kernel trace being written: k() appends a kernel of d ns, the next one starting gap ns after its end."""

    def __init__(self, header, extra):
        self.rows, self.extra, self.t = header, extra, 0

    def k(self, name, d, gap=500):
        self.rows.append([str(self.t), str(d)] + self.extra + [name])
        self.t += d + gap

    def write(self, path):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(self.rows)


def trace(path, steps):
    """nsys's columns, with a note before the header"""
    tr = Trace([["Generating SQLite file prof.sqlite"], ["Start (ns)", "Duration (ns)", "CorrId", "GrdX", "Name"]],
               ["1", "1"])
    k = tr.k

    k("[CUDA memcpy Host-to-Device]", 100)
    k("embed_kernel(...)", 1000)  # a prefill: embedding then a norm, not a decode step
    k("add_rmsnorm_kernel(...)", 2000)
    for s in range(steps):
        k("embed_kernel(...)", 1000)
        for _ in range(L):
            k("void gemv_kernel<0>(...)", DUR["qkv"] + s)  # medians must ignore the odd step out
            k("void attn_decode_kernel<4, true>(...)", DUR["attention"], gap=-300)
            k("void gemv_kernel<1>(...)", DUR["o"])
            k("void gemv_kernel<2>(...)", DUR["gate_up"])
            k("void gemv_kernel<1>(...)", DUR["down"])
        k("void gemv_kernel<3>(...)", DUR["head"])
        k("sample_kernel(...)", 2000)
    tr.write(path)


# --prefill: the parts of each layer of a prefill, a GEMM of two kernels (its time is their span), between decode
# kernels and launches that break the pattern
PDUR = {"norm1": 2000, "qkv": 8000, "rope": 3000, "attention": 12000, "o": 4000, "norm2": 2000, "gate_up": 10000,
        "swiglu": 3000, "down": 6000}
N = 256


def prefill_trace(path, runs):
    """ktrace's columns (no note), kernels 400 ns apart unless told"""
    tr = Trace([["Start (ns)", "Duration (ns)", "Name"]], [])
    k = lambda name, d, gap=400: tr.k(name, d, gap)

    k("embed_kernel(...)", 1000)  # a decode step: not a prefill
    k("void gemv_kernel<1>(...)", 3000)
    k("embed_kernel(...)", 1000)  # a broken prefill: stops after the first norm
    k("add_rmsnorm_kernel(...)", 2000)
    k("sample_kernel(...)", 1000)
    for r in range(runs):
        k("embed_kernel(...)", 1000)
        for _ in range(L):
            k("add_rmsnorm_kernel(...)", PDUR["norm1"])
            k("nvjet_gemm_a(...)", PDUR["qkv"] // 2, gap=0)  # two kernels back to back: one GEMM
            k("nvjet_reduce(...)", PDUR["qkv"] // 2)
            k("qkv_rope_kernel(...)", PDUR["rope"])
            k("void fa2_kernel<16>(...)", PDUR["attention"] + r)  # medians must ignore the odd run out
            k("nvjet_gemm_b(...)", PDUR["o"])
            k("add_rmsnorm_kernel(...)", PDUR["norm2"], gap=700)
            k("nvjet_gemm_c(...)", PDUR["gate_up"])
            k("swiglu_kernel(...)", PDUR["swiglu"])
            k("nvjet_gemm_b(...)", PDUR["down"])
        k("add_rmsnorm_kernel(...)", 2000)
        k("void gemv_kernel<0>(...)", 5000)
    tr.write(path)


with tempfile.TemporaryDirectory() as d:
    cfg = os.path.join(d, "cfg.json")
    json.dump(CFG, open(cfg, "w"))
    tr, out = os.path.join(d, "t.csv"), os.path.join(d, "r.json")
    trace(tr, 3)
    p = subprocess.run([sys.executable, REPORT, tr, cfg, "--json", out], capture_output=True, text=True)
    check(p.returncode == 0, f"report failed: {p.stderr}")
    r = json.load(open(out))
    check(r["steps"] == 3, f"steps {r['steps']}, expected 3")
    roles = {x["role"]: x for x in r["roles"]}
    for role, ns in DUR.items():
        got = roles[role]["median_us"]
        want = (ns + (1 if role == "qkv" else 0)) / 1e3
        check(abs(got - want) < 1e-9, f"{role}: median {got} us, expected {want}")
    wbytes = {"qkv": (NH + 2 * NKV) * HD * H * 2, "o": NH * HD * H * 2, "gate_up": 2 * I * H * 2,
              "down": I * H * 2, "head": V * H * 2}
    # the increment: from the end of the kernel before to the own end (duration + gap)
    for role in ["attention", "o", "gate_up", "down", "head"]:
        gap = -300 if role == "o" else 500
        want = (DUR[role] + gap) / 1e3
        check(abs(roles[role]["inc_us"] - want) < 1e-9, f"{role}: increment {roles[role]['inc_us']}, expected {want}")
    for role, b in wbytes.items():
        want = b / (roles[role]["inc_us"] * 1e3)
        check(abs(roles[role]["gbps_inc"] - want) < 1e-9, f"{role}: {roles[role]['gbps_inc']} GB/s, expected {want}")
    check(abs(roles["o"]["gap_us"] + 0.3) < 1e-9, f"o gap {roles['o']['gap_us']} us, expected -0.3")
    check(abs(roles["qkv"]["gap_us"] - 0.5) < 1e-9, f"qkv gap {roles['qkv']['gap_us']} us, expected 0.5")
    check(roles["attention"]["count"] == L and roles["head"]["count"] == 1, "role counts")
    step_sum = (1000 + L * sum(v for k, v in DUR.items() if k != "head") + DUR["head"] + L) / 1e3
    check(abs(r["kernel_sum_us"] - step_sum) < 1e-9, f"kernel sum {r['kernel_sum_us']}, expected {step_sum}")
    # --steps keeps the last N
    p = subprocess.run([sys.executable, REPORT, tr, cfg, "--steps", "1", "--json", out], capture_output=True,
                       text=True)
    check(p.returncode == 0 and json.load(open(out))["steps"] == 1, "--steps 1")
    # no decode step: an error with a message
    trace(tr, 0)
    p = subprocess.run([sys.executable, REPORT, tr, cfg], capture_output=True, text=True)
    check(p.returncode != 0 and "no decode step" in p.stderr, f"empty trace: rc {p.returncode}, {p.stderr!r}")
    prefill_trace(tr, 3)
    p = subprocess.run([sys.executable, REPORT, tr, cfg, "--prefill", str(N), "--json", out], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"prefill report failed: {p.stderr}")
    r = json.load(open(out))
    check(r["prefills"] == 3, f"prefills {r['prefills']}, expected 3")
    parts = {x["part"]: x for x in r["parts"]}
    for part, ns in PDUR.items():
        want = (ns + (1 if part == "attention" else 0)) / 1e3
        check(abs(parts[part]["us"] - want) < 1e-9, f"prefill {part}: {parts[part]['us']} us, expected {want}")
    check(abs(parts["gate_up"]["gap_us"] - 0.7) < 1e-9, f"gate_up gap {parts['gate_up']['gap_us']}, expected 0.7")
    check(abs(parts["rope"]["gap_us"] - 0.4) < 1e-9, f"rope gap {parts['rope']['gap_us']}, expected 0.4")
    want_tf = {"qkv": 2 * N * H * (NH + 2 * NKV) * HD, "o": 2 * N * NH * HD * H, "gate_up": 2 * N * H * 2 * I,
               "down": 2 * N * I * H, "attention": 2 * N * N * HD * NH}
    for part, f in want_tf.items():
        want = f / (parts[part]["us"] * 1e-6) / 1e12
        check(abs(parts[part]["tflops"] - want) < 1e-9 * want, f"prefill {part}: {parts[part]['tflops']} TFLOP/s")
    check(parts["rope"]["tflops"] is None, "the elementwise parts have no TFLOP/s")
    # no prefill of that shape: an error with a message
    trace(tr, 2)
    p = subprocess.run([sys.executable, REPORT, tr, cfg, "--prefill", str(N)], capture_output=True, text=True)
    check(p.returncode != 0 and "no prefill" in p.stderr, f"no prefill: rc {p.returncode}, {p.stderr!r}")

print(f"test_trace_report: {'FAIL' if failures else 'ok'} ({failures} failures)")
sys.exit(1 if failures else 0)
