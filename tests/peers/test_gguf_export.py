"""gguf_export against an independent reading of its output: runs it on a tiny Qwen3 checkpoint, parses the GGUF
file here (header, every key/value, the tensor table, alignment), and checks each key against config.json and
tokenizer.json and each tensor's shape and bytes against the safetensors file. Then the error paths: a missing
checkpoint, a Llama checkpoint (not exported) and a bad tokenizer each give one line on stderr and status 1, and
leave no file behind.

    python3 test_gguf_export.py GGUF_EXPORT SOURCE_DIR"""
import json
import os
import struct
import subprocess
import sys
import tempfile

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.d, self.o)
        self.o += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def str(self):
        n = self.take("Q")
        s = self.d[self.o:self.o + n].decode("utf-8")
        self.o += n
        return s

    def value(self, t):
        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
        if t in scalar:
            return self.take(scalar[t])
        if t == 8:
            return self.str()
        if t == 9:
            et, n = self.take("I"), self.take("Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError("unknown GGUF value type %d" % t)


def read_gguf(path):
    with open(path, "rb") as f:
        r = Reader(f.read())
    check(r.d[:4] == b"GGUF", "magic")
    r.o = 4
    version, n_t, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    check(version == 3, "version 3")
    kv = {}
    for _ in range(n_kv):
        k = r.str()
        kv[k] = r.value(r.take("I"))
    tensors = {}
    for _ in range(n_t):
        name = r.str()
        nd = r.take("I")
        ne = [r.take("Q") for _ in range(nd)]
        tensors[name] = (ne, r.take("I"), r.take("Q"))
    align = kv.get("general.alignment", 32)
    base = (r.o + align - 1) // align * align
    return r.d, kv, tensors, base, align


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<Q", data, 0)[0]
    head = json.loads(data[8:8 + n])
    head.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in head.items()}


def main():
    exe, src = sys.argv[1], sys.argv[2]
    ckpt = os.path.join(src, "tests/data/tiny/qwen3-f32")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tiny.gguf")
        p = subprocess.run([exe, "--out", out, "--model", ckpt], capture_output=True, text=True)
        check(p.returncode == 0, "export exit status %d: %s" % (p.returncode, p.stderr.strip()))
        data, kv, tensors, base, align = read_gguf(out)
        cfg = json.load(open(os.path.join(ckpt, "config.json")))
        tok = json.load(open(os.path.join(ckpt, "tokenizer.json")))
        hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        want = {"general.architecture": "qwen3", "qwen3.block_count": cfg["num_hidden_layers"],
                "qwen3.embedding_length": cfg["hidden_size"], "qwen3.feed_forward_length": cfg["intermediate_size"],
                "qwen3.attention.head_count": cfg["num_attention_heads"],
                "qwen3.attention.head_count_kv": cfg["num_key_value_heads"], "qwen3.attention.key_length": hd,
                "qwen3.attention.value_length": hd, "qwen3.rope.dimension_count": hd,
                "qwen3.context_length": cfg["max_position_embeddings"], "tokenizer.ggml.model": "gpt2"}
        for k, v in want.items():
            check(kv.get(k) == v, "%s = %r, expected %r" % (k, kv.get(k), v))
        theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta"))
        check(abs(kv["qwen3.rope.freq_base"] - theta) <= 1e-6 * theta, "rope.freq_base")
        check(abs(kv["qwen3.attention.layer_norm_rms_epsilon"] - cfg["rms_norm_eps"]) < 1e-12, "rms eps")
        toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
        check(len(toks) == cfg["vocab_size"] and len(types) == len(toks), "one token per vocabulary id")
        check(all(toks[i] == t for t, i in tok["model"]["vocab"].items()), "vocab tokens at their ids")
        for a in tok.get("added_tokens", []):
            check(toks[a["id"]] == a["content"] and types[a["id"]] == (3 if a["special"] else 4),
                  "added token %d" % a["id"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
        check(kv["tokenizer.ggml.merges"] == merges, "merges in order")
        # tensors: every HF weight under its llama.cpp name, shape reversed, bytes identical
        st = read_safetensors(os.path.join(ckpt, "model.safetensors"))
        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        per = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
               "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
        for l in range(cfg["num_hidden_layers"]):
            for h, g in per.items():
                names["model.layers.%d.%s.weight" % (l, h)] = "blk.%d.%s.weight" % (l, g)
        if cfg.get("tie_word_embeddings"):
            names.pop("lm_head.weight")
        check(set(tensors) == set(names[k] for k in st if k in names), "the same set of tensors")
        for hf, (dt, shape, raw) in st.items():
            if hf not in names or names[hf] not in tensors:
                continue
            ne, typ, off = tensors[names[hf]]
            check(ne == shape[::-1], "%s: shape %s, expected %s" % (names[hf], ne, shape[::-1]))
            check(off % align == 0, "%s: offset %d not aligned" % (names[hf], off))
            check(dt == "F32" and typ == 0, "%s: f32 stays f32" % names[hf])
            got = data[base + off:base + off + len(raw)]
            check(got == raw, "%s: bytes differ" % names[hf])
        # error paths: one line, status 1, nothing left behind
        bad = [["--model", os.path.join(tmp, "missing")],
               ["--model", os.path.join(src, "tests/data/tiny/llama-bf16")],
               ["--model", ckpt, "--tokenizer", os.path.join(ckpt, "config.json")],
               ["--config", os.path.join(ckpt, "config.json")]]
        for args in bad:
            dst = os.path.join(tmp, "bad.gguf")
            p = subprocess.run([exe, "--out", dst] + args, capture_output=True, text=True)
            check(p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1,
                  "%s: status %d, stderr %r" % (args, p.returncode, p.stderr))
            check(not os.path.exists(dst) and not os.path.exists(dst + ".tmp"), "%s: left a file" % args)
    print("%d failures" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
