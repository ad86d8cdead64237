"""kiln.bus: shared-memory rings between processes (see include/kiln/bus.h).

Timeouts are in seconds: None waits forever, 0 never waits. Errors raise kiln.KilnError (with .code and .name);
a wait that times out raises TimeoutError; a peer that died or closed raises KilnError with code EPEERDEAD or
ECLOSED (records it published before are still delivered first).

Zero copy: Record.data and Run views are memoryviews (or NumPy arrays) over the shared segment. They are valid
until release(); copy what must outlive it.
"""
import ctypes

from kiln._lib import EAGAIN, ECLOSED, EPEERDEAD, ETIMEDOUT, KilnError, check, lib

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover - exercised on machines without NumPy
    _np = None

__all__ = ["Listener", "Channel", "Record", "Run", "connect", "KilnError", "EPEERDEAD", "ECLOSED"]


class _Opts(ctypes.Structure):
    _fields_ = [("ring_bytes", ctypes.c_uint64), ("max_clients", ctypes.c_uint32), ("batch", ctypes.c_uint32),
                ("spin", ctypes.c_int64), ("allow_uids", ctypes.POINTER(ctypes.c_uint32)),
                ("n_allow_uids", ctypes.c_uint32)]


class _Rec(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("type", ctypes.c_uint32), ("corr", ctypes.c_uint64),
                ("stamp", ctypes.c_uint64), ("pos", ctypes.c_uint64)]


_REC_BYTES = ctypes.sizeof(_Rec)
_P = ctypes.c_void_p
_I64, _U64, _U32 = ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32
_PP = ctypes.POINTER(ctypes.c_void_p)
_bound = False


def _bind():
    global _bound
    if _bound:
        return lib()
    L = lib()
    sigs = {
        "kiln_bus_listen": (ctypes.c_int, [_PP, ctypes.c_char_p, ctypes.POINTER(_Opts)]),
        "kiln_bus_accept": (ctypes.c_int, [_P, _I64, _PP]),
        "kiln_bus_poll": (ctypes.c_int, [_P, _I64, _PP, _PP]),
        "kiln_bus_close": (None, [_P]),
        "kiln_bus_connect": (ctypes.c_int, [_PP, ctypes.c_char_p, ctypes.POINTER(_Opts), _I64]),
        "kiln_bus_chan_close": (None, [_P]),
        "kiln_bus_acquire": (ctypes.c_int, [_P, _U64, _PP, _I64]),
        "kiln_bus_commit": (ctypes.c_int, [_P, _P, _U64, _U32, _U64]),
        "kiln_bus_send": (ctypes.c_int, [_P, _P, _U64, _U32, _U64, _I64]),
        "kiln_bus_flush": (ctypes.c_int, [_P]),
        "kiln_bus_peek": (ctypes.c_int, [_P, _PP, _I64]),
        "kiln_bus_peek_run": (ctypes.c_int, [_P, _I64, _I64, ctypes.POINTER(_U64), ctypes.POINTER(_I64),
                                             ctypes.POINTER(_U64), ctypes.POINTER(_U64)]),
        "kiln_bus_release": (ctypes.c_int, [_P]),
        "kiln_bus_alive": (ctypes.c_int, [_P]),
        "kiln_bus_next_corr": (_U64, [_P]),
        "kiln_bus_segment": (None, [_P, _PP, ctypes.POINTER(_U64)]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args
    _bound = True
    return L


def _ns(timeout):
    if timeout is None:
        return -1
    return max(0, int(timeout * 1e9))


def _opts(ring_bytes=0, max_clients=0, batch=1, spin=-1, allow_uids=()):
    o = _Opts(ring_bytes, max_clients, batch, spin, None, 0)
    if allow_uids:
        arr = (ctypes.c_uint32 * len(allow_uids))(*allow_uids)
        o.allow_uids = ctypes.cast(arr, ctypes.POINTER(ctypes.c_uint32))
        o.n_allow_uids = len(allow_uids)
        o._keep = arr
    return o


def _check_wait(rc):
    if rc == ETIMEDOUT or rc == EAGAIN:
        raise TimeoutError(lib().kiln_last_error().decode(errors="replace") or "timed out")
    return check(rc)


def _release_view(mv):
    try:
        mv.release()
    except BufferError:  # slices still exported: they must not be used after close (the memory is unmapped)
        pass


class Record:
    """One record handed out by peek: type, corr, size and a zero-copy memoryview of its payload."""
    __slots__ = ("type", "corr", "size", "data")

    def __init__(self, type_, corr, size, data):
        self.type, self.corr, self.size, self.data = type_, corr, size, data

    def bytes(self):
        return bytes(self.data)


class Run:
    """n records of equal payload size, `stride` bytes apart in the segment: one strided view, no copy."""
    __slots__ = ("n", "size", "stride", "offset", "_chan")

    def __init__(self, chan, offset, n, stride, size):
        self._chan, self.offset, self.n, self.stride, self.size = chan, offset, n, stride, size

    def views(self):
        """A memoryview per record."""
        mv = self._chan._mv
        return [mv[self.offset + i * self.stride:self.offset + i * self.stride + self.size] for i in range(self.n)]

    def array(self, dtype="u1", shape=None):
        """An np.ndarray of shape (n, *shape) over the records' payloads (NumPy needed). shape defaults to the
        whole payload as a vector of dtype."""
        if _np is None:
            raise RuntimeError("kiln.bus: NumPy is not installed; use Run.views()")
        dt = _np.dtype(dtype)
        if shape is None:
            shape = (self.size // dt.itemsize,)
        count = int(_np.prod(shape)) if shape else 1
        if count * dt.itemsize > self.size:
            raise ValueError(f"kiln.bus: {shape} of {dt} is larger than the {self.size}-byte payload")
        inner = _np.ndarray(shape, dt).strides
        return _np.ndarray((self.n,) + tuple(shape), dt, buffer=self._chan._buf, offset=self.offset,
                           strides=(self.stride,) + inner)


class Channel:
    """One side of a bus connection: send on the outgoing ring, peek/release on the incoming one."""

    def __init__(self, handle, owner=None):
        L = _bind()
        self._h = ctypes.c_void_p(handle)
        self._owner = owner
        base, n = ctypes.c_void_p(), _U64()
        L.kiln_bus_segment(self._h, ctypes.byref(base), ctypes.byref(n))
        self._buf = (ctypes.c_char * n.value).from_address(base.value)
        self._mv = memoryview(self._buf).cast("B")
        self._base = base.value
        self._rec = ctypes.c_void_p()
        self._off, self._n, self._stride, self._size = _U64(), _I64(), _U64(), _U64()
        self.status = 0  # set when a Listener.poll reported this channel's peer gone

    # -- producing
    def send(self, data, type=0, corr=0, timeout=None):
        """Copies `data` (bytes or any buffer) into a new record."""
        L = _bind()
        mv = memoryview(data).cast("B")
        n = mv.nbytes
        rec = ctypes.c_void_p()
        _check_wait(L.kiln_bus_acquire(self._h, n, ctypes.byref(rec), _ns(timeout)))
        if n:
            off = rec.value + _REC_BYTES - self._base
            self._mv[off:off + n] = mv
        check(L.kiln_bus_commit(self._h, rec, n, type, corr))

    def acquire(self, size, timeout=None):
        """A writable memoryview of `size` bytes in the ring; fill it, then commit()."""
        L = _bind()
        _check_wait(L.kiln_bus_acquire(self._h, size, ctypes.byref(self._rec), _ns(timeout)))
        off = self._rec.value + _REC_BYTES - self._base
        return self._mv[off:off + size]

    def commit(self, size, type=0, corr=0):
        check(_bind().kiln_bus_commit(self._h, self._rec, size, type, corr))

    def flush(self):
        check(_bind().kiln_bus_flush(self._h))

    def next_corr(self):
        return _bind().kiln_bus_next_corr(self._h)

    # -- consuming
    def peek(self, timeout=None):
        """The next record (zero copy; valid until release())."""
        _check_wait(_bind().kiln_bus_peek(self._h, ctypes.byref(self._rec), _ns(timeout)))
        r = _Rec.from_address(self._rec.value)
        size, type_, corr = r.size, r.type, r.corr
        off = self._rec.value + _REC_BYTES - self._base
        if off + size > len(self._mv):  # the core checked it; a hostile peer may have changed the header since
            raise KilnError(-12, "kiln.bus: record header changed after validation")
        return Record(type_, corr, size, self._mv[off:off + size])

    def peek_run(self, max_records, timeout=None):
        """Up to max_records equal-size records that lie next to each other: a Run (one strided view)."""
        _check_wait(_bind().kiln_bus_peek_run(self._h, max_records, _ns(timeout), ctypes.byref(self._off),
                                              ctypes.byref(self._n), ctypes.byref(self._stride),
                                              ctypes.byref(self._size)))
        return Run(self, self._off.value, self._n.value, self._stride.value, self._size.value)

    def release(self):
        """Releases every record handed out so far (their views must not be used afterwards)."""
        check(_bind().kiln_bus_release(self._h))

    def recv(self, timeout=None):
        """peek + copy + release: (type, corr, bytes)."""
        r = self.peek(timeout)
        out = (r.type, r.corr, r.bytes())
        self.release()
        return out

    def alive(self):
        return _bind().kiln_bus_alive(self._h) == 0

    def close(self):
        if self._h:
            _release_view(self._mv)
            if self._owner is not None:
                self._owner._chans.pop(self._h.value, None)
            _bind().kiln_bus_chan_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(path, timeout=5.0, batch=1, spin=-1, allow_uids=()):
    """Connects to a listener; returns a Channel."""
    L = _bind()
    h = ctypes.c_void_p()
    o = _opts(batch=batch, spin=spin, allow_uids=allow_uids)
    check(L.kiln_bus_connect(ctypes.byref(h), path.encode(), ctypes.byref(o), _ns(timeout)))
    return Channel(h.value)


class Listener:
    """Accepts clients; each gets its own segment and pair of rings."""

    def __init__(self, path, ring_bytes=1 << 20, max_clients=16, batch=1, spin=-1, allow_uids=()):
        L = _bind()
        h = ctypes.c_void_p()
        self._o = _opts(ring_bytes, max_clients, batch, spin, allow_uids)
        check(L.kiln_bus_listen(ctypes.byref(h), path.encode(), ctypes.byref(self._o)))
        self._h = h
        self._chans = {}

    def accept(self, timeout=None):
        h = ctypes.c_void_p()
        _check_wait(_bind().kiln_bus_accept(self._h, _ns(timeout), ctypes.byref(h)))
        ch = Channel(h.value, owner=self)
        self._chans[h.value] = ch
        return ch

    def poll(self, timeout=None):
        """Fair fan-in: (channel, Record) for the next record from any client, or (channel, None) when that
        client died or closed (channel.status says which; close it). Raises TimeoutError when nothing came."""
        h, rec = ctypes.c_void_p(), ctypes.c_void_p()
        rc = _bind().kiln_bus_poll(self._h, _ns(timeout), ctypes.byref(h), ctypes.byref(rec))
        ch = self._chans.get(h.value) if h.value else None
        if rc in (EPEERDEAD, ECLOSED) and ch is not None:
            ch.status = rc
            return ch, None
        _check_wait(rc)
        r = _Rec.from_address(rec.value)
        off = rec.value + _REC_BYTES - ch._base
        return ch, Record(r.type, r.corr, r.size, ch._mv[off:off + r.size])

    def close(self):
        if self._h:
            for ch in list(self._chans.values()):
                _release_view(ch._mv)
                ch._h = None
            self._chans.clear()
            _bind().kiln_bus_close(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
