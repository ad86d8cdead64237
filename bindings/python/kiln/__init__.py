"""kiln: Python bindings (ctypes, standard library only; NumPy optional).

    from kiln import bus
    lst = bus.Listener("/tmp/features.sock")
    ch = lst.accept(timeout=5)
    run = ch.peek_run(256)            # a batch view of equal-size records, no copy
    frames = run.array("f4", (64,))   # np.ndarray (n, 64) over the shared memory
    ...
    ch.release()

The shared library is found through $KILN_LIB, then next to this package (an installed or built tree), then the
system search path.
"""
from kiln._lib import KilnError  # noqa: F401

__all__ = ["KilnError", "bus"]
