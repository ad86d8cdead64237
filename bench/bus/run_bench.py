#!/usr/bin/python3
"""Bus benchmarks on the 2-core build machine, alternating, with the raw cache-line round trip beside every figure.

    PYTHONPATH=bindings/python KILN_LIB=build/lib/libkiln.so \\
        /usr/bin/python3 bench/bus/run_bench.py --bin build/bin/bus_bench --reps 5 --out bench/results/bus-DATE.json

Each repetition runs, in turn: one ping-pong round (raw, bus API, inline core: 32-byte round trips), one C -> C
streaming round (1 KiB frames, 4 MiB ring, "touch" then "full"), and one C -> Python round (the same frames into
NumPy: "view" = zero-copy strided arrays over the ring, the producer writing the frame index; "copy" = the producer
writing whole frames and the consumer copying each run into a preallocated NumPy batch). Every round measures the
raw cache-line round trip itself (in-process for C, a `bus_bench raw` run just before for Python). The consumer's
per-batch work is cheap on purpose: it checks the frame indices (first, last, count) and sums column 0.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from kiln import bus

FRAME = 1024


def run_c(args, *cmd):
    out = subprocess.run([args.bin, *cmd], check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def py_round(args, mode, rep):
    """C producer (CPU 0) -> this process (CPU 1) for args.seconds."""
    raw = run_c(args, "raw", "20000")[0]["raw"]
    os.sched_setaffinity(0, {1})
    sock = os.path.join(tempfile.gettempdir(), f"kiln-bench-py-{os.getpid()}.sock")
    batch = np.empty((4096, FRAME // 8), np.uint64)  # preallocated (copy mode)
    with bus.Listener(sock, ring_bytes=4 << 20, max_clients=1, batch=32) as lst:
        prod = subprocess.Popen([args.bin, "produce", sock, "touch" if mode == "view" else "full"])
        ch = lst.accept(timeout=10)
        expect, frames, ok, acc = 0, 0, True, 0
        t0 = t_end = None
        while True:
            run = ch.peek_run(4096, timeout=10)
            arr = run.array(np.uint64, (FRAME // 8,))  # (n, 128) view of the ring
            n = run.n
            if mode == "copy":
                np.copyto(batch[:n], arr)
                arr = batch[:n]
            col = arr[:, 0]
            if col[0] != expect or col[-1] != expect + n - 1:
                ok = False
            acc += int(col.sum())
            ch.release()
            expect += n
            if t0 is None:
                t0, first = time.perf_counter(), expect
            elif expect - first > 100000 and time.perf_counter() - t0 >= args.seconds:
                t_end = time.perf_counter()
                frames = expect - first
                break
        ch.close()
        rc = prod.wait(timeout=10)
    os.sched_setaffinity(0, set(range(os.cpu_count())))
    dt = t_end - t0
    fps = frames / dt
    return {"bench": "c2py", "round": rep, "mode": mode, "frame_bytes": FRAME, "ring_bytes": 4 << 20,
            "frames": frames, "seconds": round(dt, 3), "mframes_per_s": round(fps / 1e6, 2),
            "payload_gb_per_s": round(fps * FRAME / 1e9, 2), "ok": ok and rc == 0,
            "raw_rtt_p50_ns": raw["p50_ns"]}


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="bus_bench binary")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=50000, help="round trips per ping-pong method per repetition")
    ap.add_argument("--seconds", type=float, default=1.0, help="streaming time per mode per repetition")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for rep in range(args.reps):
        for r in run_c(args, "pingpong", "1", str(args.n)):
            if r["round"] != "all":
                r["round"] = rep
                rows.append(r)
        for r in run_c(args, "c2c", "1", str(args.seconds)):
            r["round"] = rep
            rows.append(r)
        for mode in ("view", "copy"):
            rows.append(py_round(args, mode, rep))
        for r in rows[-6:]:
            print(json.dumps(r), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"suite": "bus", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit, "machine": machine(), "command": " ".join(sys.argv), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 0 if all(r.get("ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
