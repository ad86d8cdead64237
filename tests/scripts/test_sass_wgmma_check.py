"""scripts/sass_wgmma_check.py on SASS listings with known answers: prefill attention at head_dim 64 as CUDA 13.0's
ptxas compiled it with Q's fragments kept in registers across the key loop (the P packing overwrites them: 4
faults, one per S = Q K^T step) and with them reloaded in the loop (no fault; recorded with cuobjdump on an H100,
reduced to the instructions), then small hand-written listings for each rule.

    python3 tests/scripts/test_sass_wgmma_check.py   (from the repository root)
"""
import os
import re
import subprocess
import sys
import tempfile

CHECK = ["python3", "scripts/sass_wgmma_check.py"]
DATA = "tests/scripts/data"
failures = []
temps = []


def run(*paths):
    p = subprocess.run(CHECK + list(paths), capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def expect(what, cond, out):
    if not cond:
        failures.append("%s\n%s" % (what, out))


def listing(body):
    """A one-function listing from 'addr: instruction' lines."""
    lines = ["Function : probe"]
    for l in body.strip().splitlines():
        addr, insn = l.split(":", 1)
        lines.append("/*%04x*/ %s ;" % (int(addr, 16), insn.strip()))
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write("\n".join(lines) + "\n")
    f.close()
    temps.append(f.name)
    return f.name


rc, out = run(os.path.join(DATA, "sass-fa2-hd64-q-in-registers.txt.xz"))
expect("Q in registers: exit 1", rc == 1, out)
expect("Q in registers: 8 register-sourced HGMMAs, 4 faults", "8 register-sourced HGMMA, 4 faults" in out, out)
stale = re.findall(r"/\*(1c50|1cb0|1d10|1d70)\*/ HGMMA.*previous iteration.*F2FP", out)
expect("Q in registers: each S step reads P's registers", stale == ["1c50", "1cb0", "1d10", "1d70"], out)

rc, out = run(os.path.join(DATA, "sass-fa2-hd64-q-reloaded.txt.xz"))
expect("Q reloaded: exit 0, no fault", rc == 0 and "8 register-sourced HGMMA, no fault" in out, out)

# an A register written between the HGMMA and its wait
early = listing("""
0010: WARPGROUP.ARRIVE
0020: HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR8], RZ, !UPT, gsb0
0030: MOV R90, R1
0040: WARPGROUP.DEPBAR.LE gsb0, 0x0
0050: MOV R88, R2
0060: EXIT
""")
rc, out = run(early)
expect("write before the wait: exit 1", rc == 1 and "R90 written before the HGMMA's wait by /*0030*/ MOV" in out, out)
expect("write after the wait: not a fault", "/*0050*/" not in out, out)

# a loop: A loaded before it and overwritten in it (a fault), or reloaded in it before the HGMMA (none), or
# reloaded under a predicate (not definite: a fault); a shared-memory-sourced HGMMA is not checked
loop = """
0010: LDSM.16.M88.4 R88, [R10]
0020: BAR.SYNC.DEFER_BLOCKING 0x0
0030: {reload}
0040: HGMMA.64x64x16.F32.BF16 R24, R88, gdesc[UR8], RZ, !UPT, gsb0
0050: WARPGROUP.DEPBAR.LE gsb0, 0x0
0060: HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], gdesc[UR8], RZ, gsb0
0070: WARPGROUP.DEPBAR.LE gsb0, 0x0
0080: F2FP.BF16.F32.PACK_AB R89, R24, R25
0090: @P0 BRA 0x20
00a0: EXIT
"""
rc, out = run(listing(loop.format(reload="NOP")))
expect("loop, no reload: exit 1, R89 stale", rc == 1 and "A R89 read from the previous iteration" in out, out)
expect("loop: one register-sourced HGMMA", "1 register-sourced HGMMA" in out, out)
rc, out = run(listing(loop.format(reload="LDSM.16.M88.4 R88, [R12]")))
expect("loop, reloaded: exit 0", rc == 0 and "no fault" in out, out)
rc, out = run(listing(loop.format(reload="@P1 LDSM.16.M88.4 R88, [R12]")))
expect("loop, predicated reload: exit 1", rc == 1 and "R89" in out, out)

with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("/*0010*/ NOP ;\n")  # instructions, but no function header
temps.append(f.name)
rc, out = run(f.name)
expect("no function: exit 2", rc == 2, out)

for t in temps:
    os.unlink(t)
for f in failures:
    print("FAIL " + f)
print("test_sass_wgmma_check: %d failures" % len(failures))
sys.exit(1 if failures else 0)
