"""PyTorch baseline for the CUDA backend's benchmark (bench/cuda/run.sh runs it beside bench_cuda).

Batch-1 decode the way a careful PyTorch user writes it (the gpt-fast recipe): bf16 weights with q/k/v and
gate/up fused, a static KV cache of max_len = ctx + 128 positions with a boolean mask, the whole step compiled
with torch.compile (fullgraph) and then captured in one CUDA graph, the argmax computed on the device and fed
back as the next input. Decode is timed at a fixed context (the graph rewrites position `ctx`), as bench_cuda
does: GPU time of 100 back-to-back replays (CUDA events, median of 5 batches), and the time a caller sees per
token (replay + synchronise + reading the token, median of 200).

Prefill (TTFT): eager PyTorch (cuBLAS matmuls, SDPA causal attention), the prompt's K/V written into the cache,
the first token read back; host wall time, median of 5 after a warm-up.

    python3 bench/peers/torch_decode.py [--ctx 128,2048] [--prompts 128,1024] [--json FILE] CONFIG.json...
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def load_cfg(path):
    with open(path) as f:
        c = json.load(f)
    H, NH = c["hidden_size"], c["num_attention_heads"]
    return dict(
        H=H, I=c["intermediate_size"], L=c["num_hidden_layers"], NH=NH, NKV=c.get("num_key_value_heads", NH),
        HD=c.get("head_dim") or H // NH, V=c["vocab_size"], tied=bool(c.get("tie_word_embeddings", False)),
        eps=float(c.get("rms_norm_eps", 1e-6)), theta=float(c.get("rope_theta", 10000.0)),
        qk_norm=c.get("model_type") == "qwen3")


class Model:
    def __init__(self, c, max_len):
        self.c = c
        g = torch.Generator(device="cuda").manual_seed(0)
        dev, bf = "cuda", torch.bfloat16

        def r(*s):
            return torch.randn(*s, device=dev, dtype=bf, generator=g) * 0.02

        def ones(n):
            return torch.ones(n, device=dev, dtype=bf)

        H, I, NH, NKV, HD = c["H"], c["I"], c["NH"], c["NKV"], c["HD"]
        self.emb = r(c["V"], H)
        self.head = self.emb if c["tied"] else r(c["V"], H)
        self.norm = ones(H)
        self.layers = []
        for _ in range(c["L"]):
            self.layers.append(dict(
                ln1=ones(H), ln2=ones(H), qkv=r((NH + 2 * NKV) * HD, H), o=r(H, NH * HD), qn=ones(HD),
                kn=ones(HD), gu=r(2 * I, H), down=r(H, I),
                k=torch.randn(1, NKV, max_len, HD, device=dev, dtype=bf, generator=g),
                v=torch.randn(1, NKV, max_len, HD, device=dev, dtype=bf, generator=g)))
        inv = 1.0 / c["theta"] ** (torch.arange(0, HD, 2, device=dev).float() / HD)
        ang = torch.outer(torch.arange(max_len, device=dev).float(), inv)
        self.cos = torch.cat([ang.cos(), ang.cos()], -1).to(bf)
        self.sin = torch.cat([ang.sin(), ang.sin()], -1).to(bf)
        self.max_len = max_len
        self.weight_bytes = sum(t.numel() * 2 for t in [self.head, self.norm]) + sum(
            t.numel() * 2 for l in self.layers for k, t in l.items() if k not in ("k", "v"))


def rms(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


def layer_qkv(m, l, x, T, pos_idx):
    c = m.c
    NH, NKV, HD = c["NH"], c["NKV"], c["HD"]
    q, k, v = (rms(x, l["ln1"], c["eps"]) @ l["qkv"].t()).split([NH * HD, NKV * HD, NKV * HD], -1)
    q = q.view(1, T, NH, HD).transpose(1, 2)
    k = k.view(1, T, NKV, HD).transpose(1, 2)
    v = v.view(1, T, NKV, HD).transpose(1, 2)
    if c["qk_norm"]:
        q, k = rms(q, l["qn"], c["eps"]), rms(k, l["kn"], c["eps"])
    cos, sin = m.cos[pos_idx].view(1, 1, T, HD), m.sin[pos_idx].view(1, 1, T, HD)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    l["k"].index_copy_(2, pos_idx, k)
    l["v"].index_copy_(2, pos_idx, v)
    return q


def layer_rest(m, l, x, a):
    c = m.c
    x = x + a.transpose(1, 2).reshape(x.shape[0], -1) @ l["o"].t()
    g, u = (rms(x, l["ln2"], c["eps"]) @ l["gu"].t()).split([c["I"], c["I"]], -1)
    return x + (F.silu(g) * u) @ l["down"].t()


def decode_step(m, tok, pos):
    x = m.emb[tok].view(1, -1)
    mask = (torch.arange(m.max_len, device="cuda") <= pos).view(1, 1, 1, m.max_len)
    for l in m.layers:
        q = layer_qkv(m, l, x, 1, pos)
        a = F.scaled_dot_product_attention(q, l["k"], l["v"], attn_mask=mask, enable_gqa=True)
        x = layer_rest(m, l, x, a)
    return (rms(x, m.norm, m.c["eps"]) @ m.head.t()).argmax(-1)


def prefill(m, ids):
    T = ids.shape[0]
    pos = torch.arange(T, device="cuda")
    x = m.emb[ids]
    for l in m.layers:
        q = layer_qkv(m, l, x, T, pos)
        a = F.scaled_dot_product_attention(q, l["k"][:, :, :T], l["v"][:, :, :T], is_causal=True, enable_gqa=True)
        x = layer_rest(m, l, x, a)
    return (rms(x[-1:], m.norm, m.c["eps"]) @ m.head.t()).argmax(-1)


def bench_decode(m, ctx):
    tok = torch.ones(1, dtype=torch.long, device="cuda")
    pos = torch.full((1,), ctx, dtype=torch.long, device="cuda")
    t0 = time.time()
    fn = torch.compile(decode_step, fullgraph=True)

    def one():
        tok.copy_(fn(m, tok, pos))

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            one()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        one()
    compile_s = time.time() - t0
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    assert 0 <= int(tok.item()) < m.c["V"]
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    gpu = []
    for _ in range(5):
        e0.record()
        for _ in range(100):
            graph.replay()
        e1.record()
        torch.cuda.synchronize()
        gpu.append(e0.elapsed_time(e1) / 100)
    host = []
    for _ in range(200):
        h0 = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        _ = int(tok.item())
        host.append((time.perf_counter() - h0) * 1e3)
    del graph
    return dict(ctx=ctx, ms_per_token_gpu=statistics.median(gpu), ms_per_token_host=statistics.median(host),
                compile_s=compile_s)


@torch.inference_mode()
def bench_prefill(m, P):
    ids = (torch.arange(P, device="cuda") * 7919 + 13) % m.c["V"]
    t = []
    for r in range(6):
        torch.cuda.synchronize()
        h0 = time.perf_counter()
        first = int(prefill(m, ids).item())
        t.append((time.perf_counter() - h0) * 1e3)
        assert 0 <= first < m.c["V"]
    return dict(prompt=P, ttft_ms=statistics.median(t[1:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="128,2048")
    ap.add_argument("--prompts", default="128,1024")
    ap.add_argument("--json")
    ap.add_argument("configs", nargs="+")
    a = ap.parse_args()
    ctxs = [int(x) for x in a.ctx.split(",")]
    prompts = [int(x) for x in a.prompts.split(",")]
    for path in a.configs:
        c = load_cfg(path)
        res = dict(engine="torch-compile-cudagraph", config=path.rsplit("/", 1)[-1], torch=torch.__version__,
                   device=torch.cuda.get_device_name(0), decode=[], prefill=[])
        with torch.no_grad():
            for ctx in ctxs:
                torch._dynamo.reset()
                m = Model(c, ctx + 128)
                res["weight_bytes"] = m.weight_bytes
                res["decode"].append(bench_decode(m, ctx))
                if ctx == ctxs[-1]:
                    res["prefill"] = [bench_prefill(m, P) for P in prompts if P <= m.max_len]
                del m
                torch.cuda.empty_cache()
        line = json.dumps(res)
        print(line, flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
