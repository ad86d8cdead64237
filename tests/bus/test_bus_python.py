#!/usr/bin/python3
"""The Python binding (bindings/python/kiln): round trips with correlation ids, zero-copy views (the NumPy array's
data pointer is inside the shared segment), errors as exceptions, peer death, and the fan-in poll. The peer runs
in a forked child so both processes use the binding."""
import os
import signal
import sys
import tempfile
import unittest

import numpy as np

from kiln import KilnError, bus


def _path(tag):
    return os.path.join(tempfile.gettempdir(), f"kiln-py-{tag}-{os.getpid()}.sock")


def _child(fn):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        except BaseException as e:  # report and exit the child whatever happens
            print(f"child: {e!r}", file=sys.stderr)
        os._exit(code)
    return pid


def _status(pid):
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st)


class BusTest(unittest.TestCase):
    def test_round_trip(self):
        path = _path("rt")
        with bus.Listener(path, ring_bytes=1 << 16) as lst:
            def client():
                with bus.connect(path) as ch:
                    for i in range(100):
                        corr = ch.next_corr()
                        ch.send(f"hello {i}".encode(), type=3, corr=corr)
                        t, c, data = ch.recv(timeout=5)
                        if (t, c, data) != (4, corr, f"HELLO {i}".encode()):
                            return 2
                return 0
            pid = _child(client)
            ch = lst.accept(timeout=5)
            for _ in range(100):
                rec = ch.peek(timeout=5)
                self.assertEqual(rec.type, 3)
                payload, corr = rec.bytes(), rec.corr
                ch.release()
                ch.send(payload.upper(), type=4, corr=corr)
            self.assertEqual(_status(pid), 0)
            with self.assertRaises(KilnError) as e:
                ch.peek(timeout=5)
            self.assertEqual(e.exception.code, bus.ECLOSED)

    def test_zero_copy_run(self):
        path = _path("run")
        with bus.Listener(path, ring_bytes=1 << 20) as lst:
            def client():
                with bus.connect(path, batch=16) as ch:
                    for i in range(1000):
                        mv = ch.acquire(64 * 4)
                        mv[:] = np.full(64, i, np.float32).tobytes()
                        ch.commit(64 * 4, type=1, corr=i)
                    ch.flush()
                    return 0
            pid = _child(client)
            ch = lst.accept(timeout=5)
            got = 0
            while got < 1000:
                run = ch.peek_run(1000 - got, timeout=5)
                arr = run.array(np.float32, (64,))
                self.assertEqual(arr.shape, (run.n, 64))
                # the array is a view of the shared segment, not a copy
                addr = arr.__array_interface__["data"][0]
                self.assertEqual(addr, ch._base + run.offset)
                self.assertEqual(arr.strides[0], run.stride)
                expect = np.arange(got, got + run.n, dtype=np.float32)[:, None]
                self.assertTrue(np.array_equal(arr, np.broadcast_to(expect, (run.n, 64))))
                views = run.views()
                self.assertEqual(len(views), run.n)
                self.assertEqual(np.frombuffer(views[0], np.float32)[0], got)
                got += run.n
                ch.release()
            self.assertEqual(_status(pid), 0)

    def test_peer_death_and_poll(self):
        path = _path("death")
        with bus.Listener(path, ring_bytes=1 << 14, max_clients=4) as lst:
            def client(tag):
                def run():
                    ch = bus.connect(path)
                    for i in range(50):
                        ch.send(bytes([tag]) * 10, type=tag, corr=i)
                    ch.flush()
                    if tag == 2:
                        os.kill(os.getpid(), signal.SIGKILL)  # dies without a goodbye
                    ch.close()
                    return 0
                return run
            pids = [_child(client(1)), _child(client(2))]
            lst.accept(timeout=5)
            lst.accept(timeout=5)
            counts, gone = {1: 0, 2: 0}, {}
            while len(gone) < 2:
                ch, rec = lst.poll(timeout=5)
                if rec is None:
                    gone[ch.status] = ch
                    ch.close()
                    continue
                self.assertEqual(rec.bytes(), bytes([rec.type]) * 10)
                counts[rec.type] += 1
                ch.release()
            self.assertEqual(counts, {1: 50, 2: 50})
            self.assertEqual(sorted(gone), sorted([bus.ECLOSED, bus.EPEERDEAD]))
            self.assertEqual(sorted(_status(p) for p in pids), [-signal.SIGKILL, 0])

    def test_errors(self):
        with self.assertRaises(KilnError) as e:
            bus.connect(_path("nobody"), timeout=0.05)
        self.assertEqual(e.exception.name, "KILN_ETIMEDOUT")
        with self.assertRaises(KilnError) as e:
            bus.Listener(_path("bad"), ring_bytes=1000)
        self.assertIn("power of two", str(e.exception))
        path = _path("to")
        with bus.Listener(path) as lst:
            pid = _child(lambda: (bus.connect(path).recv(timeout=5), 0)[1])
            ch = lst.accept(timeout=5)
            with self.assertRaises(TimeoutError):
                ch.peek(timeout=0.02)
            with self.assertRaises(KilnError):
                ch.send(b"x" * (1 << 21))  # larger than the ring
            ch.send(b"bye")
            self.assertEqual(_status(pid), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
