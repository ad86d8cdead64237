#!/usr/bin/env python3
"""Trains kiln's embedded default model (models/default) on the King James Bible, on one GPU.

Steps (all seeded; see models/default/README.md for the recipe and the results):
  1. A byte-level BPE tokenizer, trained with HF tokenizers on all books but Revelation (train.txt + valid.txt from
     tools/prepare_kjv.py): NFC, the Qwen3 Split regex (Isolated), ByteLevel without prefix space or regex, the
     256-byte initial alphabet (any UTF-8 text stays encodable), then the special tokens <|endoftext|>,
     <|im_start|>, <|im_end|> appended after the BPE vocabulary, as in Qwen3.
  2. A Qwen3ForCausalLM (per-head q/k RMSNorm, GQA, SwiGLU, tied embeddings) trained on train.txt with AdamW,
     bf16 autocast, dropout (attention probabilities, embedding output, attention and MLP outputs), warmup + cosine
     decay, random windows of --seq tokens; the validation text (never Revelation) picks the best checkpoint (early
     stopping). Eager attention and PyTorch's deterministic mode: the same GPU and software give the same bits.
  3. save_pretrained (config.json, model.safetensors in bf16, generation_config.json), tokenizer.json and a
     tokenizer_config.json with a ChatML chat template; the files are reloaded and checked with transformers.
  4. Reference values for the engine's tests, from the saved bf16 weights upcast to float32 on the CPU (TF32 off;
     a float32 GPU pass is printed beside them): perplexity of the first --passage tokens of Revelation and of all
     of Revelation (windows of --ctx tokens, exactly as contracts.md defines kiln perplexity), and greedy ids for
     fixed prompts (EOS ignored). Written to OUT/reference.json.

Usage: tools/train_default.py --data .carry/train --out OUT [--smoke] [hyper-parameters, see --help]
"""
import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; must precede CUDA init
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

QWEN3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
PROMPTS = ["In the beginning", "And I saw"]


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts, vocab):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(SPECIALS), min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # One verse per item: the Split regex never joins text across a newline, so this is the same word count as
    # pre-tokenising the whole file.
    lines = [l + "\n" for t in texts for l in t.split("\n") if l]
    tok.train_from_iterator(lines, trainer=trainer)
    if tok.get_vocab_size() != vocab - len(SPECIALS):
        sys.exit(f"tokenizer: trained {tok.get_vocab_size()} tokens, wanted {vocab - len(SPECIALS)}")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    for i, s in enumerate(SPECIALS):
        if tok.token_to_id(s) != vocab - len(SPECIALS) + i:
            sys.exit(f"tokenizer: {s} has id {tok.token_to_id(s)}")
    return tok


def byte_decoder():
    """GPT-2's bytes_to_unicode, inverted: ByteLevel character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tok):
    """Raw bytes of every id (special tokens: their content), as kiln_tokenizer_token_bytes gives them."""
    bd = byte_decoder()
    out = [None] * tok.get_vocab_size(with_added_tokens=True)
    for s, i in tok.get_vocab(with_added_tokens=True).items():
        out[i] = s.encode("utf-8") if s in SPECIALS else bytes(bd[c] for c in s)
    if any(b is None for b in out):
        sys.exit("tokenizer: ids are not contiguous")
    return out


def write_tokenizer_files(tok, out, seq):
    tok.save(os.path.join(out, "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    added = {str(vocab - len(SPECIALS) + i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                             "single_word": False, "special": True}
             for i, s in enumerate(SPECIALS)}
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": seq,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return cfg


def check_hf_tokenizer(out, tok, text):
    """transformers must load the files and encode/decode/apply the chat template as the tokenizers library does."""
    from transformers import AutoTokenizer
    for cls in ("Qwen2Tokenizer", "PreTrainedTokenizerFast"):
        path = os.path.join(out, "tokenizer_config.json")
        cfg = json.load(open(path))
        cfg["tokenizer_class"] = cls
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False)
            f.write("\n")
        try:
            hf = AutoTokenizer.from_pretrained(out)
            probes = [text[:20000], "Hello, world!  It's 2024: naïve café — ünïcödé ✓\n\n  x",
                      "<|im_start|>user\nHi<|im_end|>\n"]
            ok = all(hf.encode(p, add_special_tokens=False) == tok.encode(p, add_special_tokens=False).ids
                     for p in probes)
            chat = hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                          add_generation_prompt=True)
            ok = ok and chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            ok = ok and hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"
            if ok:
                log(f"tokenizer: transformers loads it as {cls} ({type(hf).__name__}) and agrees")
                return cls
            log(f"tokenizer: {cls} disagrees with tokenizers")
        except Exception as e:  # noqa: BLE001 - any failure means: try the next class
            log(f"tokenizer: {cls} fails to load: {e}")
    sys.exit("tokenizer: transformers cannot load the tokenizer files consistently")


# ----------------------------------------------------------------------------------------------------- model

def make_config(a, vocab, eot, im_end):
    from transformers import Qwen3Config
    common = dict(vocab_size=vocab, hidden_size=a.dim, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                  hidden_act="silu", max_position_embeddings=a.seq, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  attention_bias=False, attention_dropout=a.attn_dropout, use_sliding_window=False,
                  bos_token_id=None, eos_token_id=im_end, pad_token_id=eot, initializer_range=0.02)
    try:
        cfg = Qwen3Config(**common, rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta})
    except TypeError:
        cfg = Qwen3Config(**common, rope_theta=a.rope_theta)
    return cfg


def check_rope(model, a):
    inv = model.model.rotary_emb.inv_freq.float().cpu()
    want = 1.0 / (a.rope_theta ** (2.0 / a.head_dim))
    if abs(float(inv[1]) - want) > 1e-6 * want + 1e-12:
        sys.exit(f"model: rope inv_freq[1] = {float(inv[1])}, want {want} (rope_theta not applied)")


def add_dropout(model, p):
    """Residual-stream dropout, which Qwen3's modules lack: on the embedding output and on the outputs of the
    attention and MLP blocks (before they join the residual). Hooks live on the training model only."""
    import torch.nn.functional as F

    def hook(mod, inp, out):
        return F.dropout(out, p, mod.training)
    model.model.embed_tokens.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_hook(hook)
        layer.mlp.down_proj.register_forward_hook(hook)


def windows_of(ids, ctx, max_windows=0):
    """contracts.md: consecutive non-overlapping full windows (one window of all ids when fewer than ctx)."""
    if len(ids) < ctx:
        w = [ids]
    else:
        w = [ids[i * ctx:(i + 1) * ctx] for i in range(len(ids) // ctx)]
    return w[:max_windows] if max_windows > 0 else w


def perplexity(model, ids, ctx, tbytes, device, max_windows=0, batch=8, autocast=False):
    """The contract's perplexity: nll summed in double over positions 1..len-1 of each window."""
    import torch
    wins = windows_of(ids, ctx, max_windows)
    nll = 0.0
    ntok = 0
    nbytes = 0
    with torch.no_grad():
        for i in range(0, len(wins), batch):
            group = wins[i:i + batch]
            lens = {len(w) for w in group}
            if len(lens) != 1:  # only the single short window can differ, and it is alone
                raise RuntimeError("windows of unequal length")
            x = torch.tensor(group, dtype=torch.long, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=x, use_cache=False).logits
            lp = torch.log_softmax(logits.double(), dim=-1)[:, :-1]
            tgt = x[:, 1:]
            nll += float(-lp.gather(-1, tgt.unsqueeze(-1)).sum())
            for w in group:
                ntok += len(w) - 1
                nbytes += sum(len(tbytes[t]) for t in w[1:])
    mean = nll / ntok
    return {"windows": len(wins), "tokens": ntok, "bytes": nbytes, "nll": mean, "ppl": math.exp(mean),
            "bpb": nll / math.log(2) / nbytes}


def greedy(model, ids, n, device):
    """n greedy tokens (EOS ignored), recomputing the whole prefix each step; also the smallest top-1/top-2 logit
    gap, which says how safely another implementation will reproduce them."""
    import torch
    ids = list(ids)
    out, margin = [], float("inf")
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
            top = torch.topk(logits, 2)
            t = int(top.indices[0])
            margin = min(margin, float(top.values[0] - top.values[1]))
            out.append(t)
            ids.append(t)
    return out, margin


# ----------------------------------------------------------------------------------------------------- main

def parse_args():
    ap = argparse.ArgumentParser(description="Train kiln's default model (see the module docstring).")
    ap.add_argument("--data", default=".carry/train", help="folder with train.txt, valid.txt, revelation.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", help="use this tokenizer.json instead of training one (must match --vocab)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, few steps: checks the whole path quickly")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seq", type=int, default=1024, help="training window = max_position_embeddings")
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=0.5)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--dropout", type=float, default=0.2, help="residual-stream dropout")
    ap.add_argument("--attn-dropout", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--patience", type=int, default=12, help="evals without a better validation loss before stop")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="safety stop for the training loop")
    ap.add_argument("--ctx", type=int, default=0, help="reference perplexity window (0: --seq)")
    ap.add_argument("--passage", type=int, default=256, help="tokens of the fixed Revelation passage")
    ap.add_argument("--gen", type=int, default=32, help="greedy tokens per prompt")
    a = ap.parse_args()
    if a.smoke:
        a.vocab, a.dim, a.layers, a.heads, a.kv_heads, a.head_dim, a.ffn = 1024, 64, 2, 4, 2, 16, 128
        a.seq, a.batch, a.steps, a.warmup, a.eval_every = 128, 8, 30, 5, 10
    a.ctx = a.ctx or a.seq
    return a


def main():
    a = parse_args()
    t_start = time.time()
    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from tokenizers import Tokenizer
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"torch {torch.__version__} transformers {transformers.__version__} device {dev}"
        f" {torch.cuda.get_device_name() if dev == 'cuda' else ''}")
    os.makedirs(a.out, exist_ok=True)

    texts = {k: open(os.path.join(a.data, k + ".txt"), encoding="utf-8").read()
             for k in ("train", "valid", "revelation")}
    t0 = time.time()
    if a.tokenizer:
        tok = Tokenizer.from_file(a.tokenizer)
        if tok.get_vocab_size(with_added_tokens=True) != a.vocab:
            sys.exit(f"{a.tokenizer}: vocabulary {tok.get_vocab_size(with_added_tokens=True)} != --vocab {a.vocab}")
    else:
        tok = train_tokenizer([texts["train"], texts["valid"]], a.vocab)
    tok_json = tok.to_str()
    log(f"tokenizer: {a.vocab} ids, sha256 {hashlib.sha256(tok_json.encode()).hexdigest()[:16]},"
        f" {time.time() - t0:.1f} s")
    tbytes = token_bytes(tok)
    ids = {k: tok.encode(v, add_special_tokens=False).ids for k, v in texts.items()}
    for k, v in ids.items():
        log(f"  {k}: {len(v)} tokens, {len(texts[k].encode()) / len(v):.3f} bytes/token")
    eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")

    # -- model
    cfg = make_config(a, a.vocab, eot, im_end)
    # Eager attention: every op of its backward is deterministic (cuDNN's and the fused SDPA kernels' are not), so
    # a rerun on the same GPU and software reproduces the weights bit for bit.
    try:
        model = Qwen3ForCausalLM._from_config(cfg, attn_implementation="eager")
    except (TypeError, ValueError) as e:
        log(f"model: _from_config(attn_implementation=) failed ({e}); setting it on the config")
        cfg._attn_implementation = "eager"
        model = Qwen3ForCausalLM(cfg)
    if model.config._attn_implementation != "eager":
        sys.exit(f"model: attention is {model.config._attn_implementation}, not eager")
    check_rope(model, a)
    n_params = sum(p.numel() for p in model.parameters())  # tied: the embedding counts once
    log(f"model: {n_params / 1e6:.3f} M parameters ({2 * n_params / 1e6:.2f} MB in bf16)")
    if not a.smoke and 2 * n_params > 32_000_000:
        sys.exit("model: more than 32 MB in bf16")
    add_dropout(model, a.dropout)
    model.to(dev)
    model.config.use_cache = False

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, a.beta2), eps=1e-8, fused=(dev == "cuda"))

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
        return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    train = torch.tensor(ids["train"], dtype=torch.int32, device=dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(a.seed)
    ar = torch.arange(a.seq + 1, device=dev)
    use_amp = dev == "cuda"

    def val_bpb():
        model.eval()
        r = perplexity(model, ids["valid"], a.seq, tbytes, dev, batch=32, autocast=use_amp)
        model.train()
        return r["bpb"]

    best = (float("inf"), -1, None)
    history = []
    bad_evals = 0
    stopped = "steps"
    model.train()
    t_train = time.time()
    loss_acc, n_acc = 0.0, 0
    step = 0
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        start = torch.randint(0, train.numel() - a.seq - 1, (a.batch,), device=dev, generator=gen)
        chunk = train[start[:, None] + ar].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        loss_acc += float(loss.detach()) if (step + 1) % 10 == 0 else 0.0
        n_acc += 1 if (step + 1) % 10 == 0 else 0
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            vb = val_bpb()
            el = time.time() - t_train
            tl = loss_acc / max(1, n_acc)
            history.append({"step": step + 1, "train_loss": round(tl, 4), "val_bpb": round(vb, 4),
                            "s": round(el, 1)})
            mark = ""
            if vb < best[0]:
                best = (vb, step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
                bad_evals = 0
                mark = " *"
            else:
                bad_evals += 1
            log(f"step {step + 1:5d} lr {lr_at(step):.2e} train {tl:.4f} nats  val {vb:.4f} bpb"
                f"  {el:6.1f} s{mark}")
            loss_acc, n_acc = 0.0, 0
            if bad_evals >= a.patience:
                stopped = "early stop"
                break
            if el > a.max_minutes * 60:
                stopped = "time limit"
                break
    train_s = time.time() - t_train
    log(f"training: {step + 1} steps in {train_s:.1f} s ({stopped}); best val {best[0]:.4f} bpb at step {best[1]}")

    # -- save: bf16 weights of the best checkpoint, HF format
    model.load_state_dict(best[2])
    model.config.attention_dropout = 0.0
    model.config.use_cache = True
    model.to("cpu", dtype=torch.bfloat16)
    model.save_pretrained(a.out)
    gen_cfg = {"eos_token_id": [im_end, eot], "pad_token_id": eot, "transformers_version": transformers.__version__}
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump(gen_cfg, f, indent=2)
        f.write("\n")
    write_tokenizer_files(tok, a.out, a.seq)
    tok_class = check_hf_tokenizer(a.out, tok, texts["revelation"])
    from safetensors import safe_open
    with safe_open(os.path.join(a.out, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        dtypes = {str(f.get_slice(k).get_dtype()) for k in keys}
    log(f"saved: {len(keys)} tensors, dtypes {dtypes}, lm_head stored: {'lm_head.weight' in keys}")
    log("config.json: " + open(os.path.join(a.out, "config.json")).read().replace("\n", " "))

    # -- reference values from the saved files, upcast to f32
    ref_model = Qwen3ForCausalLM.from_pretrained(a.out, dtype=torch.float32, attn_implementation="eager").eval()
    if next(ref_model.parameters()).dtype != torch.float32:
        sys.exit("reference model is not float32")
    from transformers import GenerationConfig
    gc = GenerationConfig.from_pretrained(a.out)
    log(f"generation_config eos {gc.eos_token_id}")
    t0 = time.time()
    passage = ids["revelation"][:a.passage]
    ref = {
        "model": "models/default",
        "text": "tests/data/default/revelation.txt",
        "dtype": "float32 (bf16 weights upcast), CPU, eager attention",
        "ctx": a.ctx,
        "passage": dict(n_tokens=len(passage), ids=passage,
                        **perplexity(ref_model, passage, a.ctx, tbytes, "cpu")),
        "revelation": perplexity(ref_model, ids["revelation"], a.ctx, tbytes, "cpu"),
        "greedy": [],
    }
    for p in PROMPTS:
        pids = tok.encode(p, add_special_tokens=False).ids
        out, margin = greedy(ref_model, pids, a.gen, "cpu")
        ref["greedy"].append({"prompt": p, "prompt_ids": pids, "ids": out, "min_top2_gap": round(margin, 4),
                              "text": tok.decode(out, skip_special_tokens=False)})
    cpu_s = time.time() - t0
    # The same on the GPU in float32 (TF32 off): shows how far two correct float32 implementations drift apart.
    gpu = {}
    if dev == "cuda":
        g_model = ref_model.to(dev)
        gpu["passage"] = perplexity(g_model, passage, a.ctx, tbytes, dev)
        gpu["revelation"] = perplexity(g_model, ids["revelation"], a.ctx, tbytes, dev)
        gpu["greedy_equal"] = all(
            greedy(g_model, g["prompt_ids"], a.gen, dev)[0] == g["ids"] for g in ref["greedy"])
        for k in ("passage", "revelation"):
            log(f"f32 GPU vs CPU {k}: nll rel diff {abs(gpu[k]['nll'] / ref[k]['nll'] - 1):.2e}")
        log(f"f32 GPU greedy ids equal CPU: {gpu['greedy_equal']}")
    ref["training"] = {
        "script": "tools/train_default.py", "args": {k: v for k, v in vars(a).items() if k not in ("data", "out")},
        "parameters": n_params, "steps_run": step + 1, "best_step": best[1], "best_val_bpb": best[0],
        "stopped": stopped, "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
        "tokens": {k: len(v) for k, v in ids.items()}, "tokenizer_class": tok_class,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "history": history,
        "gpu_f32": gpu,
    }
    ref["sha256"] = {f: hashlib.sha256(open(os.path.join(a.out, f), "rb").read()).hexdigest()
                     for f in ("model.safetensors", "tokenizer.json")}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    for g in ref["greedy"]:
        log(f"greedy {g['prompt']!r} -> {g['text']!r} (min top-2 gap {g['min_top2_gap']})")
    log(f"reference on CPU: {cpu_s:.1f} s")
    log("SUMMARY " + json.dumps({
        "out": a.out, "params": n_params, "vocab": a.vocab, "dropout": a.dropout, "steps": step + 1,
        "best_step": best[1], "val_bpb": round(best[0], 4), "passage_bpb": round(ref["passage"]["bpb"], 5),
        "revelation_bpb": round(ref["revelation"]["bpb"], 5), "train_s": round(train_s, 1),
        "total_s": round(time.time() - t_start, 1)}))


if __name__ == "__main__":
    main()
