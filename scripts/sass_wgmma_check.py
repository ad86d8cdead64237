#!/usr/bin/env python3
"""Checks the machine code (cuobjdump -sass) of kernels that run wgmma with A in registers (HGMMA Rd, Ra, gdesc)
for the register fault that CUDA 13.0's ptxas showed in prefill attention (docs/cuda.md, "On Hopper: wgmma"):

  * an A register overwritten while its HGMMA may still read it: written after the HGMMA and before the next
    WARPGROUP.DEPBAR (the wait), in program order;
  * an A register that an HGMMA in a loop reads with the value of an earlier iteration, which another instruction
    of the loop overwrote: no definite (unpredicated) write of it in the loop before the HGMMA, but a write after
    it, which the loop's back edge carries to the HGMMA's next run.

The loops are the ranges [target, branch] of backward BRAs; forward branches inside a loop are not followed (the
check is of the straight line through the body, which is how these kernels are laid out). The second rule flags
every A register carried from one iteration to the next through a write late in the loop, which kiln's kernels
never mean to do (their A operands are loop-invariant, like Q, or computed in the iteration, like P); a kernel
that does would need this rule relaxed.

    scripts/sass_wgmma_check.py SASS.txt[.xz]...  (prints each function's register-sourced HGMMAs; exit 1 on a
                                                  fault, 2 when a file holds no function)
"""
import lzma
import re
import sys

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Za-z0-9_.]*)\s*(.*?)\s*;")
FUNC = re.compile(r"Function\s*:\s*(\S+)")
REG = re.compile(r"^R(\d+)$")


def parse(text):
    """{function: [(address, predicated, opcode, [operands])]} of one or more cuobjdump -sass listings."""
    funcs, cur = {}, None
    for line in text.splitlines():
        m = FUNC.search(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = INSN.search(line)
        if m and cur is not None:
            ops = [o.strip() for o in m.group(4).split(",")] if m.group(4) else []
            cur.append((int(m.group(1), 16), bool(m.group(2)), m.group(3), ops))
    return funcs


def width(opcode):
    """Registers the destination of an instruction spans."""
    parts = opcode.split(".")
    if parts[0] == "HGMMA":
        n = re.match(r"64x(\d+)x", parts[1])
        return int(n.group(1)) // 2 if n else 1
    if parts[0] == "LDSM":
        return int(parts[-1]) if parts[-1].isdigit() else 1
    if "128" in parts:
        return 4
    if "64" in parts or "WIDE" in parts:
        return 2
    return 1


def writes(insn):
    """The registers an instruction writes (its first operand, where that is a register)."""
    _, _, opcode, ops = insn
    if not ops:
        return set()
    m = REG.match(ops[0])
    if not m or opcode.split(".")[0] in ("ST", "STS", "STG", "STL", "RED", "ATOM", "BRA", "EXIT"):
        return set()
    r = int(m.group(1))
    return set(range(r, r + width(opcode)))


def a_regs(insn):
    """The A registers of a register-sourced HGMMA (HGMMA Rd, Ra, gdesc[..]): Ra .. Ra+3; None for other ones."""
    _, _, opcode, ops = insn
    if not opcode.startswith("HGMMA") or len(ops) < 3 or not ops[2].startswith("gdesc"):
        return None
    m = REG.match(ops[1])
    return set(range(int(m.group(1)), int(m.group(1)) + 4)) if m else None


def check(name, code):
    """Faults of one function, as strings; also the number of register-sourced HGMMAs seen."""
    at = {a: i for i, (a, _, _, _) in enumerate(code)}
    loops = []  # (first, last) instruction index of each backward branch's range
    for i, (a, _, opcode, ops) in enumerate(code):
        if opcode.startswith("BRA") and ops:
            m = re.match(r"^(0x[0-9a-f]+)$", ops[-1])
            if m and int(m.group(1), 16) <= a and int(m.group(1), 16) in at:
                loops.append((at[int(m.group(1), 16)], i))
    faults, seen = [], 0
    for i, insn in enumerate(code):
        regs = a_regs(insn)
        if regs is None:
            continue
        seen += 1
        where = "/*%04x*/ %s %s" % (insn[0], insn[2], ", ".join(insn[3][:2]))
        early = {}  # register: the instruction that writes it before the wait
        for j in range(i + 1, len(code)):
            if code[j][2].startswith("WARPGROUP.DEPBAR"):
                break
            if not code[j][2].startswith("HGMMA"):
                for r in writes(code[j]) & regs:
                    early.setdefault(r, code[j])
        stale = {}  # register: the instruction of the loop that overwrites the value the next iteration reads
        inner = [lp for lp in loops if lp[0] <= i <= lp[1]]
        if inner:
            first, last = min(inner, key=lambda lp: lp[1] - lp[0])
            for r in sorted(regs):
                if any(r in writes(code[k]) and not code[k][1] for k in range(first, i)):
                    continue  # defined in this iteration before the HGMMA
                later = [code[k] for k in range(i + 1, last + 1) if r in writes(code[k])]
                if later:
                    stale[r] = later[0]
        for what, hits in (("written before the HGMMA's wait by", early),
                           ("read from the previous iteration, overwritten in the loop by", stale)):
            if hits:
                faults.append("%s: A %s %s %s" % (where, " ".join("R%d" % r for r in sorted(hits)), what,
                                                   ", ".join(sorted({"/*%04x*/ %s" % (x[0], x[2])
                                                                     for x in hits.values()}))))
    return faults, seen


def main(paths):
    if not paths:
        print("usage: scripts/sass_wgmma_check.py SASS.txt[.xz]...", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        with (lzma.open if path.endswith(".xz") else open)(path, "rt", errors="replace") as f:
            funcs = parse(f.read())
        if not funcs:
            print("%s: no function in the listing" % path, file=sys.stderr)
            return 2
        for name, code in funcs.items():
            faults, seen = check(name, code)
            if seen:
                print("%s: %d register-sourced HGMMA, %s" % (name, seen, "%d faults" % len(faults) if faults
                                                                     else "no fault"))
            for f in faults:
                print("  " + f)
            bad += len(faults)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
