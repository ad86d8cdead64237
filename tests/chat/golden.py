#!/usr/bin/python3
"""Golden test of kiln's C chat templates against Jinja2 rendering the real templates.

Renders every case with python3-jinja2 set up as Hugging Face transformers sets it up for apply_chat_template
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, tojson = json.dumps with
ensure_ascii=False, raise_exception, strftime_now), and with the C renderer (chat_render_tool), and requires the
same text, or an error from both.

Cases: the hand-written conversations of tests/data/chat/conversations.json for every template, then seeded random
conversations (roles, reasoning, tool calls, tool results, Unicode whitespace, JSON escapes, floats in tool
schemas, chat_template_kwargs).

Usage: golden.py CHAT_RENDER_TOOL [DATA_DIR] [--cases N] [--seed S] [--config tokenizer_config.json ...]
(--config adds the template of a checkpoint, such as the embedded default model's.)
"""
import argparse
import datetime
import json
import os
import random
import subprocess
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = ["chatml", "qwen3", "llama3", "llama31", "llama32"]


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_jinja(compiled, cfg, case):
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token") if cfg.get(k) is not None}
    try:
        kwargs = dict(special)
        kwargs.update(case.get("kwargs") or {})
        text = compiled.render(messages=case["messages"], tools=case.get("tools"), documents=None,
                               add_generation_prompt=case["add_generation_prompt"], **kwargs)
        return {"ok": True, "text": text}
    except Exception as e:  # the template raised, or Python refused an operation: the C side must refuse too
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}


# ---- random conversations ----

WORDS = ["hello", "world", "What", "is", "2+2?", "The", "answer", "ok", "fn", "x", "def f(x):", "return", "Bible",
         "λόγος", "日本語", "中文字符", "مرحبا", "नमस्ते", "👩‍👩‍👧", "🎉", "café", "naïve", "tab\there", "a\"quote\"",
         "back\\slash", "ctl\x01x", "<b>", "&amp;", "{\"k\": 1}", "<|im_end|>", "<tool_call>", "line\r\nbreak"]
SPACES = ["", " ", "  ", "\n", "\n\n", "\t", " \n ", "\u3000", "\xa0", "\u2028", "\x1c", "\u200b", "\x85", "\r\n"]


def rtext(rng, allow_empty=True):
    if allow_empty and rng.random() < 0.08:
        return ""
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
    sep = [rng.choice([" ", " ", " ", "\n", "  "]) for _ in words]
    body = "".join(w + s for w, s in zip(words, sep)).rstrip(" ")
    return rng.choice(SPACES) + body + rng.choice(SPACES)


def rjson(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice([0, 1, -7, 42, 10 ** 12, 0.5, 0.1, -2.25, 1e-7, 1.5e300, 3.0, 1e16, 1e15, 123.456, -0.0,
                           True, False, None, "s", "ünï", "q\"b\\\n", "", "\x7f\x1f"])
    if r < 0.65:
        return {rng.choice(["type", "description", "enum", "properties", "required", "ключ", "a b", "x"]) + str(i):
                rjson(rng, depth + 1) for i in range(rng.randint(0, 4))}
    return [rjson(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def rtool(rng):
    return {"type": "function",
            "function": {"name": rng.choice(["get_weather", "search", "calc", "имя"]),
                         "description": rtext(rng),
                         "parameters": {"type": "object", "properties": {"p": rjson(rng)},
                                        "required": ["p"]}}}


def rcall(rng, name=None):
    args = {"city": rng.choice(["Paris", "東京", "a \"b\""]), "n": rng.choice([1, 2.5, True, None])}
    if rng.random() < 0.2:
        args = {}
    arguments = json.dumps(args, separators=(",", ":")) if rng.random() < 0.5 else args
    call = {"name": name or rng.choice(["get_weather", "search", "brave_search"]), "arguments": arguments}
    if rng.random() < 0.9:
        return {"id": "call_%d" % rng.randint(0, 999), "type": "function", "function": call}
    return call


def rassistant(rng, fam):
    m = {"role": "assistant"}
    r = rng.random()
    if r < 0.25 and fam == "qwen3":
        m["content"] = rng.choice(["", "\n"]) + "<think>" + rtext(rng) + "</think>" + rtext(rng)
    elif r < 0.35 and fam == "qwen3":
        m["content"] = rtext(rng) + "</think>" + rtext(rng) + rng.choice(["", "</think>tail"])
    elif r < 0.45 and fam == "qwen3":
        m["content"] = rtext(rng)
        m["reasoning_content"] = rtext(rng)
    else:
        m["content"] = rtext(rng)
    if fam in ("qwen3", "llama31", "llama32") and rng.random() < 0.25:
        k = 1 if fam != "qwen3" else rng.randint(1, 3)
        if fam != "qwen3" and rng.random() < 0.05:
            k = 2  # Llama 3.1 refuses this: both sides must fail
        m["tool_calls"] = [rcall(rng) for _ in range(k)]
        if rng.random() < 0.5:
            m["content"] = None if fam == "qwen3" else m["content"]
    return m


def rcase(rng, fam):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rtext(rng)})
    turns = rng.randint(1, 5)
    for t in range(turns):
        if fam == "qwen3" and rng.random() < 0.15:
            msgs.append({"role": "user", "content": "<tool_response>" + rtext(rng) + "</tool_response>"})
        else:
            msgs.append({"role": "user", "content": rtext(rng)})
        if t < turns - 1 or rng.random() < 0.4:
            msgs.append(rassistant(rng, fam))
            if fam in ("qwen3", "llama31", "llama32") and "tool_calls" in msgs[-1]:
                for _ in range(rng.randint(1, 2)):
                    content = rtext(rng) if rng.random() < 0.7 else {"temp": 21.5, "unit": "°C"}
                    if fam == "qwen3":
                        content = rtext(rng)
                    msgs.append({"role": "tool", "tool_call_id": "call_1", "content": content})
                if rng.random() < 0.5:
                    msgs.append(rassistant(rng, fam))
        if rng.random() < 0.1:
            msgs.append({"role": "system", "content": rtext(rng)})
    case = {"messages": msgs, "add_generation_prompt": rng.random() < 0.7}
    kwargs = {}
    if fam == "qwen3":
        if rng.random() < 0.5:
            kwargs["enable_thinking"] = rng.choice([True, False, False, None, 0])
    if fam in ("qwen3", "llama31", "llama32") and rng.random() < 0.3:
        case["tools"] = [rtool(rng) for _ in range(rng.randint(0, 3))]
    if fam in ("llama31", "llama32"):
        if rng.random() < 0.8:
            kwargs["date_string"] = rng.choice(["26 Jul 2024", "01 Jan 2025", "9 Sep 1999"])
        if rng.random() < 0.3:
            kwargs["tools_in_user_message"] = rng.choice([True, False, 0, 1, ""])
        if rng.random() < 0.1 and "tools" in case:
            kwargs["custom_tools"] = [rtool(rng)]
        if fam == "llama31" and rng.random() < 0.2:
            kwargs["builtin_tools"] = rng.choice([["brave_search", "wolfram_alpha"],
                                                  ["code_interpreter", "brave_search"], []])
            for m in msgs:
                if "tool_calls" in m and rng.random() < 0.5 and len(m["tool_calls"]) == 1:
                    m["tool_calls"] = [{"type": "function",
                                        "function": {"name": "brave_search",
                                                     "arguments": {"query": rtext(rng, False), "n": "3"}}}]
    if kwargs:
        case["kwargs"] = kwargs
    return case


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool")
    ap.add_argument("data", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "data", "chat"))
    ap.add_argument("--cases", type=int, default=500, help="random cases per template")
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--config", action="append", default=[], help="a tokenizer_config.json to test as well")
    a = ap.parse_args()

    env = make_env()
    fixtures = json.load(open(os.path.join(a.data, "conversations.json"), encoding="utf-8"))
    cases, expected = [], []
    for name in TEMPLATES + [os.path.abspath(c) for c in a.config]:
        path = name if "/" in name else os.path.join(a.data, name + ".json")
        cfg = json.load(open(path, encoding="utf-8"))
        compiled = env.from_string(cfg["chat_template"])
        rng = random.Random("%d-%s" % (a.seed, os.path.basename(name)))
        fam = name
        if "/" in name:  # the conversations of the family its markers name
            src = cfg["chat_template"]
            fam = ("qwen3" if "<think>" in src else "chatml") if "<|im_start|>" in src else "llama3"
        todo = [dict(f) for f in fixtures if fam in f.get("templates", TEMPLATES)]
        todo += [rcase(rng, fam) for _ in range(a.cases)]
        for c in todo:
            c = {k: v for k, v in c.items() if k not in ("templates", "note")}
            c["template"] = name
            c.setdefault("add_generation_prompt", True)
            cases.append(c)
            expected.append(render_jinja(compiled, cfg, c))

    feed = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)
    p = subprocess.run([a.tool, a.data], input=feed.encode("utf-8"), capture_output=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode("utf-8", "replace"))
        print("golden: chat_render_tool failed with status %d" % p.returncode)
        return 1
    got = [json.loads(l) for l in p.stdout.decode("utf-8").splitlines()]
    if len(got) != len(cases):
        print("golden: %d results for %d cases" % (len(got), len(cases)))
        return 1
    bad = 0
    n_ok = sum(1 for e in expected if e["ok"])
    for c, e, g in zip(cases, expected, got):
        same = e["ok"] == g["ok"] and (not e["ok"] or e["text"] == g["text"])
        if not same:
            bad += 1
            if bad <= 5:
                print("MISMATCH (%s):\n  case: %s\n  jinja: %r\n  c:     %r" %
                      (c["template"], json.dumps(c, ensure_ascii=False)[:2000], e, g))
    both_refused = sum(1 for e, g in zip(expected, got) if not e["ok"] and not g["ok"])
    print("golden: %d cases (%d rendered by Jinja, %d refused by both sides), %d mismatches" %
          (len(cases), n_ok, both_refused, bad))
    # Guard against a generator that only produces errors: most cases must render.
    if n_ok < len(cases) * 0.8:
        print("golden: too few cases render (%d of %d)" % (n_ok, len(cases)))
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
