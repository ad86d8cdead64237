#!/usr/bin/env python3
"""Builds the tiny fidelity checkpoints of tests/data/tiny/ and the Hugging Face reference data for them.

Run where torch, transformers and tokenizers are installed (the GPU machine; everything here runs on its CPU, in
float32, so no TF32 or kernel choice can blur the reference):

    python3 tools/make_tiny_models.py --train TRAIN.txt --eval EVAL.txt --out DIR

It writes DIR/<name>/{config.json, generation_config.json, model.safetensors, tokenizer.json, golden.json} for
  qwen3-f32   Qwen3ForCausalLM, float32 weights, untied head, q/k norm, head_dim 32 != hidden/heads = 16, GQA 4:2
  llama-bf16  LlamaForCausalLM, bfloat16 weights, tied head, attention biases, llama3 rope scaling with a short
              original context so all three frequency bands occur, head_dim 24 != 16, GQA 4:2, EOS list
and DIR/eval.txt. Both share one byte-level BPE tokenizer trained here (NFC, Split with the Qwen3 regex, ByteLevel).
Norm weights are drawn around 1 (not all ones) and the initializer range is large, so greedy choices are not near
ties: the script tries seeds until the smallest top-1/top-2 logit gap of every greedy step is at least
MIN_MARGIN of the logit scale.

golden.json holds, computed with the checkpoint reloaded from disk and upcast to float32 (eager attention):
  inv_freq       the model's RoPE inverse frequencies
  text_ids       tokenizer.encode(eval text, add_special_tokens=False)
  logits         {"n": N, "positions": [...], "values": [[vocab floats] per position]} of one forward of
                 text_ids[:N]
  greedy         [{"prompt_ids", "ids"}]: argmax continuations (lowest id on ties, EOS ignored) of a few prompts
  perplexity     [{"ctx", "windows", "tokens", "bytes", "nll", "ppl", "bpb"}] exactly as the perplexity contract
                 says (consecutive full windows, each from an empty cache, NLL in float64)
"""
import argparse
import inspect
import json
import math
import os
import sys

import torch
import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
import transformers
from transformers import AutoModelForCausalLM

QWEN3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_VOCAB = 640
MODEL_VOCAB = 704
MIN_MARGIN = 2e-3
LOGIT_N = 160
LOGIT_POSITIONS = [0, 1, 2, 5, 17, 63, 64, 100, 159]
GREEDY_NEW = 40
PPL_RUNS = [(64, 0), (50, 3)]
EXTRA_TEXT = [
    "Café naïve — déjà vu, façade, Ångström. Straße, Œuvre.",
    "東京は日本の首都です。北京是中国的首都。",
    "Emoji: 🙂 👍🏽 👨‍👩‍👧 ❤️ and math: x² + y² = z², π ≈ 3.14159.",
    "Привет, мир! Ελληνικά γράμματα. שלום עולם. مرحبا بالعالم. नमस्ते दुनिया।",
    "def f(x):\n    return x * 2  # code\n\tindent\r\nCRLF line 12345 67890",
]


def bytes_to_unicode():
    """GPT-2's byte <-> printable character table, as the ByteLevel pre-tokenizer uses it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}


def token_bytes(tok, tid):
    s = tok.id_to_token(tid)
    if s in SPECIALS:
        return s.encode("utf-8")
    return bytes(BYTE_DECODER[c] for c in s)


def train_tokenizer(train_text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    lines = train_text.splitlines(keepends=True) + EXTRA_TEXT
    tok.train_from_iterator(lines, trainer)
    return tok


def make_config(cls, fields, rope):
    """rope: dict with rope_type, rope_theta and the scaling keys. transformers 5 takes rope_parameters; 4 takes
    rope_theta and rope_scaling."""
    params = set(inspect.signature(cls.__init__).parameters) | set(getattr(cls, "__dataclass_fields__", {}))
    if "rope_parameters" in params:
        return cls(**fields, rope_parameters=dict(rope))
    extra = {"rope_theta": rope["rope_theta"]}
    if rope["rope_type"] != "default":
        extra["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return cls(**fields, **extra)


def build(name, seed, out_dir):
    torch.manual_seed(seed)
    common = dict(vocab_size=MODEL_VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.15, rms_norm_eps=1e-6,
                  bos_token_id=None, eos_token_id=0)
    if name == "qwen3-f32":
        cfg = make_config(transformers.Qwen3Config,
                          dict(common, head_dim=32, intermediate_size=160, tie_word_embeddings=False,
                               attention_bias=False, use_sliding_window=False),
                          {"rope_type": "default", "rope_theta": 1000000.0})
        model = transformers.Qwen3ForCausalLM(cfg)
        dtype, eos = torch.float32, 0
    else:
        cfg = make_config(transformers.LlamaConfig,
                          dict(common, head_dim=24, intermediate_size=176, tie_word_embeddings=True,
                               attention_bias=True, mlp_bias=False),
                          {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
        model = transformers.LlamaForCausalLM(cfg)
        dtype, eos = torch.bfloat16, [0, 2]
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.25 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": None, "eos_token_id": eos, "do_sample": False}, f, indent=2)
    for extra in os.listdir(out_dir):
        if extra not in ("config.json", "generation_config.json", "model.safetensors"):
            os.remove(os.path.join(out_dir, extra))


def load_f32(out_dir):
    kw = dict(attn_implementation="eager")
    try:
        m = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, **kw)
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32, **kw)
    m = m.float().eval()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return m


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0].float()


@torch.no_grad()
def greedy(model, prompt, n_new):
    ids, margins, scale = list(prompt), [], 0.0
    for _ in range(n_new):
        lg = logits_of(model, ids)[-1]
        top = torch.topk(lg, 2)
        margins.append(float(top.values[0] - top.values[1]))
        scale = max(scale, float(lg.abs().max()))
        ids.append(int(torch.argmax(lg)))  # first maximum: the lowest id on ties
    return ids[len(prompt):], min(margins) / scale


@torch.no_grad()
def perplexity(model, tok, ids, ctx, windows):
    n_win = len(ids) // ctx
    win = ctx
    if n_win == 0:
        n_win, win = 1, len(ids)
    if windows > 0:
        n_win = min(n_win, windows)
    nll, tokens, nbytes = 0.0, 0, 0
    for w in range(n_win):
        wi = ids[w * win:(w + 1) * win]
        lp = torch.log_softmax(logits_of(model, wi).double(), dim=-1)
        tgt = torch.tensor(wi[1:], dtype=torch.long)
        nll += float(-lp[torch.arange(len(wi) - 1), tgt].sum())
        tokens += len(wi) - 1
        nbytes += sum(len(token_bytes(tok, t)) for t in wi[1:])
    mean = nll / tokens
    return {"ctx": ctx, "windows": windows, "tokens": tokens, "bytes": nbytes, "nll": mean, "ppl": math.exp(mean),
            "bpb": nll / math.log(2) / nbytes}


def f32_list(t):
    return [float("%.9g" % v) for v in t.tolist()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="qwen3-f32,llama-bf16")
    a = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    torch.backends.cuda.matmul.allow_tf32 = False
    with open(a.train, encoding="utf-8") as f:
        train_text = f.read()
    with open(a.eval, encoding="utf-8") as f:
        eval_text = f.read() + "\n".join(EXTRA_TEXT) + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "eval.txt"), "w", encoding="utf-8") as f:
        f.write(eval_text)

    tok = train_tokenizer(train_text)
    tok_path = os.path.join(a.out, "tokenizer.json")
    tok.save(tok_path, pretty=False)
    text_ids = tok.encode(eval_text, add_special_tokens=False).ids
    print(f"tokenizer: {tok.get_vocab_size()} tokens; eval text {len(eval_text)} chars -> {len(text_ids)} ids",
          flush=True)
    assert len(text_ids) >= 700, "eval text too short"
    prompts = [text_ids[:8], text_ids[100:132], tok.encode("And God said", add_special_tokens=False).ids]
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__}

    for name in a.models.split(","):
        out_dir = os.path.join(a.out, name)
        for seed in range(1, 21):
            build(name, seed, out_dir)
            model = load_f32(out_dir)
            conts = [greedy(model, p, GREEDY_NEW) for p in prompts]
            margin = min(m for _, m in conts)
            print(f"{name}: seed {seed}: smallest greedy margin {margin:.3g} of the logit scale", flush=True)
            if margin >= MIN_MARGIN:
                break
        else:
            sys.exit(f"{name}: no seed gave greedy margins >= {MIN_MARGIN}")
        lg = logits_of(model, text_ids[:LOGIT_N])
        golden = {
            "model": name, "seed": seed, "versions": versions, "min_greedy_margin": margin,
            "inv_freq": f32_list(model.model.rotary_emb.inv_freq.float()),
            "text_ids": text_ids,
            "logits": {"n": LOGIT_N, "positions": LOGIT_POSITIONS,
                       "values": [f32_list(lg[p]) for p in LOGIT_POSITIONS]},
            "greedy": [{"prompt_ids": p, "ids": c} for p, (c, _) in zip(prompts, conts)],
            "perplexity": [perplexity(model, tok, text_ids, c, w) for c, w in PPL_RUNS],
        }
        with open(os.path.join(out_dir, "golden.json"), "w") as f:
            json.dump(golden, f, separators=(",", ":"))
        tok.save(os.path.join(out_dir, "tokenizer.json"), pretty=False)
        print(f"{name}: ppl {[round(r['ppl'], 4) for r in golden['perplexity']]}", flush=True)
    os.remove(tok_path)


if __name__ == "__main__":
    main()
