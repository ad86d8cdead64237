#!/usr/bin/env python3
"""Builds the training text of kiln's default model from Debian's bible-kjv package.

The King James Bible is read with `bible -f "Gen1:1-Rev22:21"` (one verse per line, each prefixed by its
reference, e.g. "Ge1:1 In the beginning ..."). The reference is stripped, runs of whitespace inside a verse are
collapsed to one space (the source has a few double spaces and one trailing space), and each verse is written on its
own line, so a file is plain verse text, "\\n"-terminated, with no verse numbers, book names or chapter headings.

Outputs, in --out (default .carry/train):
  revelation.txt  the book of Revelation (404 verses): held out entirely; the default model never trains on it.
  train.txt       every other book, minus the validation chapters: the model's training text.
  valid.txt       the validation chapters: every chapter whose running number (0-based, over the 1,167 chapters
                  of Genesis..Jude in canonical order) is congruent to 17 modulo 40; about 2.5 % of the text,
                  spread over the whole Bible, used for early stopping and model selection (never Revelation).
The tokenizer is trained on train.txt + valid.txt, i.e. on all books but Revelation.

Deterministic: the same package gives byte-identical files (their SHA-256 are printed).
Usage: tools/prepare_kjv.py [--out DIR] [--bible PATH-TO-bible-PROGRAM]
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys

VALID_MOD = 40
VALID_REM = 17
REF = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def read_verses(bible):
    """Returns [(book, chapter, verse, text)] in canonical order."""
    try:
        out = subprocess.run([bible, "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"prepare_kjv: cannot run '{bible}' (install Debian's bible-kjv): {e}")
    verses = []
    for n, line in enumerate(out.decode("ascii").split("\n"), 1):
        if not line.strip():
            continue
        m = REF.match(line)
        if not m:
            sys.exit(f"prepare_kjv: line {n} has no verse reference: {line[:60]!r}")
        text = " ".join(m.group(4).split())
        if not text:
            sys.exit(f"prepare_kjv: line {n} has an empty verse")
        verses.append((m.group(1), int(m.group(2)), int(m.group(3)), text))
    return verses


def split(verses):
    train, valid, rev = [], [], []
    chapter = -1
    prev = None
    for book, ch, _, text in verses:
        if book == "Rev":
            rev.append(text)
            continue
        if (book, ch) != prev:
            chapter += 1
            prev = (book, ch)
        (valid if chapter % VALID_MOD == VALID_REM else train).append(text)
    return train, valid, rev, chapter + 1


def write(path, lines):
    data = ("\n".join(lines) + "\n").encode("ascii")
    with open(path, "wb") as f:
        f.write(data)
    return len(data), hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".carry/train")
    ap.add_argument("--bible", default=shutil.which("bible") or "/usr/bin/bible")
    args = ap.parse_args()
    verses = read_verses(args.bible)
    if len(verses) != 31102:
        sys.exit(f"prepare_kjv: expected 31102 verses, got {len(verses)}")
    train, valid, rev, n_chapters = split(verses)
    if len(rev) != 404:
        sys.exit(f"prepare_kjv: expected 404 verses of Revelation, got {len(rev)}")
    os.makedirs(args.out, exist_ok=True)
    for name, lines in (("train.txt", train), ("valid.txt", valid), ("revelation.txt", rev)):
        size, digest = write(os.path.join(args.out, name), lines)
        print(f"{name:15s} {len(lines):6d} verses {size:8d} bytes sha256 {digest}")
    print(f"chapters outside Revelation: {n_chapters}")


if __name__ == "__main__":
    main()
