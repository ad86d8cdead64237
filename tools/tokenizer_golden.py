#!/usr/bin/env python3
"""Golden data for the tokenizer tests, from Hugging Face tokenizers (run where it is installed; we ran 0.23).

Writes into OUT:
  qwen3_ids.jsonl         ids of every corpus line with the Qwen3 tokenizer.json (one JSON array per line), as
                          Tokenizer.from_file(...).encode(line, add_special_tokens=False).ids
  qwen3_decode.jsonl      {"ids": [...], "text": decode(ids, skip_special_tokens=False)} for id sequences drawn
                          at random (many split UTF-8 characters, so the U+FFFD repair is covered)
  small_tokenizer.json    a small byte-level BPE trained here the way other kiln tests train theirs (NFC, Split with
                          the Qwen regex, ByteLevel, BPE, special tokens inside the vocabulary)
  small_ids.jsonl         ids of every third corpus line with small_tokenizer.json
  small_ignore_ids.jsonl  the same lines with small_tokenizer.json changed to ignore_merges: true
  versions.json           what produced the files

usage: tokenizer_golden.py QWEN_TOKENIZER_JSON CORPUS_JSONL TRAIN_TEXT OUT
"""
import json
import random
import sys

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def read_corpus(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().split(b"\n") if line]


def write_ids(path, tok, lines):
    with open(path, "w", encoding="utf-8") as f:
        for s in lines:
            f.write(json.dumps(tok.encode(s, add_special_tokens=False).ids) + "\n")


def train_small(qwen_regex, train_text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(qwen_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([train_text], trainer)
    return tok


def main():
    qwen_path, corpus_path, train_text, out = sys.argv[1:5]
    lines = read_corpus(corpus_path)
    qwen = Tokenizer.from_file(qwen_path)
    write_ids(f"{out}/qwen3_ids.jsonl", qwen, lines)

    rng = random.Random(1234)
    n_vocab = qwen.get_vocab_size(with_added_tokens=True)
    with open(f"{out}/qwen3_decode.jsonl", "w", encoding="utf-8") as f:
        for i in range(300):
            if i % 3 == 0:  # pieces of real encodings: whole characters and cut ones
                ids = qwen.encode(rng.choice(lines), add_special_tokens=False).ids
                a = rng.randrange(len(ids) + 1)
                ids = ids[a:a + rng.randint(0, 12)]
            else:
                ids = [rng.randrange(n_vocab) for _ in range(rng.randint(0, 10))]
            f.write(json.dumps({"ids": ids, "text": qwen.decode(ids, skip_special_tokens=False)},
                               ensure_ascii=False) + "\n")

    regex = json.loads(qwen.to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    small = train_small(regex, train_text)
    small.save(f"{out}/small_tokenizer.json")
    small = Tokenizer.from_file(f"{out}/small_tokenizer.json")
    subset = lines[::3]
    write_ids(f"{out}/small_ids.jsonl", small, subset)
    doc = json.loads(small.to_str())
    doc["model"]["ignore_merges"] = True
    write_ids(f"{out}/small_ignore_ids.jsonl", Tokenizer.from_str(json.dumps(doc)), subset)

    with open(f"{out}/versions.json", "w") as f:
        json.dump({"tokenizers": tokenizers.__version__, "python": sys.version.split()[0],
                   "corpus_lines": len(lines), "small_lines": len(subset)}, f)


if __name__ == "__main__":
    main()
