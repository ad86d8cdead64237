#!/usr/bin/python3
"""bus_features consumer: listens on a kiln bus socket, starts the C producer, drains its f32[256] feature frames
into a preallocated NumPy batch of 256 and multiplies each full batch by a weight matrix.

    PYTHONPATH=bindings/python python3 examples/bus_features/consumer.py \\
        --producer build/bin/bus_feature_producer --frames 100000

Frames arrive as zero-copy strided views of the shared ring (Channel.peek_run + Run.array); the only copy is the
one into the batch the matrix product reads. Exits 0 when every frame arrived once, in order, intact.

With Debian's default reference BLAS the 256x256 @ 256x64 product takes about 4 ms and bounds this example to
about 60 k frames/s; with libopenblas0 installed it is over ten times faster. The transport itself is measured by
bench/bus (bus_bench_py.py).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from kiln import bus

DIM, BATCH, OUT = 256, 256, 64


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--producer", required=True, help="path of the bus_feature_producer binary")
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--socket", default=None)
    args = ap.parse_args()
    sock = args.socket or os.path.join(tempfile.gettempdir(), f"kiln-features-{os.getpid()}.sock")

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((DIM, OUT)).astype(np.float32)
    batch = np.empty((BATCH, DIM), np.float32)  # preallocated: frames are copied in here, once
    pattern = (np.arange(1, DIM) % 7).astype(np.float32) * 0.5
    expect = 0
    checksum = 0.0
    with bus.Listener(sock, ring_bytes=4 << 20, max_clients=1) as lst:
        prod = subprocess.Popen([args.producer, sock, str(args.frames)])
        ch = lst.accept(timeout=10)
        t0 = time.perf_counter()
        filled = 0
        while expect < args.frames:
            try:
                run = ch.peek_run(BATCH - filled, timeout=10)
            except bus.KilnError as e:
                print(f"consumer: {e}", file=sys.stderr)
                return 1
            frames = run.array(np.float32, (DIM,))  # (n, 256) view of the ring, no copy
            n = run.n
            batch[filled:filled + n] = frames
            ch.release()
            idx = batch[filled:filled + n, 0]
            if not np.array_equal(idx, np.arange(expect, expect + n, dtype=np.float32)):
                print(f"consumer: frames out of order near {expect}", file=sys.stderr)
                return 1
            expect += n
            filled += n
            if filled == BATCH or expect == args.frames:
                if not np.array_equal(batch[:filled, 1:], np.broadcast_to(pattern, (filled, DIM - 1))):
                    print(f"consumer: corrupt frame before {expect}", file=sys.stderr)
                    return 1
                out = batch[:filled] @ weights  # the model step the frames are for
                checksum += float(out[:, 0].sum())
                filled = 0
        dt = time.perf_counter() - t0
        rc = prod.wait(timeout=10)
        ch.close()
    print(f"consumer: {expect} frames in {dt:.3f} s ({expect / dt / 1e6:.2f} M frames/s, "
          f"{expect * DIM * 4 / dt / 1e9:.2f} GB/s), checksum {checksum:.3f}, producer exit {rc}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
