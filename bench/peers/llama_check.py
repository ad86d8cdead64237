"""Checks that llama.cpp runs the model gguf_export wrote: greedy continuations and logits of a tiny test
checkpoint against its golden file (made with Hugging Face transformers, tools/make_tiny_models.py).

    python3 bench/peers/llama_check.py LLAMA_GREEDY MODEL.gguf GOLDEN.json [--tol 2e-3]

Greedy ids must match exactly; each golden logits row (the logits after text_ids[:p + 1]) must be within tol of
the largest |logit| of that row (llama.cpp keeps its KV cache in f16 by default: about 1e-3 on the tiny f32
model). Exit status 0 when all agree."""
import argparse
import json
import subprocess
import sys


def run(binary, gguf, n, ids):
    out = subprocess.run([binary, gguf, str(n), ",".join(map(str, ids))], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("gguf")
    ap.add_argument("golden")
    ap.add_argument("--tol", type=float, default=2e-3)
    a = ap.parse_args()
    with open(a.golden) as f:
        g = json.load(f)
    bad = 0
    for case in g["greedy"]:
        got = run(a.binary, a.gguf, len(case["ids"]), case["prompt_ids"])["ids"]
        same = got == case["ids"]
        bad += not same
        print("greedy %d-token prompt: %s" % (len(case["prompt_ids"]),
                                              "same %d ids" % len(got) if same else "DIFFERENT %s" % got))
    lg = g["logits"]
    worst = 0.0
    for p, ref in zip(lg["positions"], lg["values"]):
        got = run(a.binary, a.gguf, 0, g["text_ids"][:p + 1])["logits"]
        scale = max(abs(x) for x in ref)
        err = max(abs(x - y) for x, y in zip(got, ref)) / scale if len(got) == len(ref) else float("inf")
        worst = max(worst, err)
        bad += err > a.tol
    print("logits at %d positions: worst max|diff| / max|logit| = %.3g (tolerance %.3g)" %
          (len(lg["positions"]), worst, a.tol))
    print("llama.cpp agrees with the golden file" if not bad else "llama.cpp DISAGREES with the golden file")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
