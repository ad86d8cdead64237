"""Loads libkiln and maps kiln_status codes to exceptions."""
import ctypes
import ctypes.util
import os

_lib = None


def _candidates():
    env = os.environ.get("KILN_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    for build in ("build", "build-release"):
        yield os.path.join(root, build, "lib", "libkiln.so")
    yield os.path.join(here, "libkiln.so")
    found = ctypes.util.find_library("kiln")
    if found:
        yield found


def lib():
    """The loaded library (loaded once)."""
    global _lib
    if _lib is None:
        errors = []
        for path in _candidates():
            try:
                _lib = ctypes.CDLL(path)
                break
            except OSError as e:
                errors.append(f"{path}: {e}")
        if _lib is None:
            raise OSError("kiln: cannot load libkiln.so (set KILN_LIB): " + "; ".join(errors))
        _lib.kiln_last_error.restype = ctypes.c_char_p
        _lib.kiln_strerror.restype = ctypes.c_char_p
        _lib.kiln_err_name.restype = ctypes.c_char_p
    return _lib


class KilnError(Exception):
    """A kiln_status error: .code (negative), .name ("KILN_EPEERDEAD") and the library's one-line message."""

    def __init__(self, code, message):
        self.code = code
        self.name = lib().kiln_err_name(code).decode()
        super().__init__(f"{self.name}: {message}")


def check(rc):
    """Raises KilnError for a negative status; returns rc otherwise."""
    if rc < 0:
        msg = lib().kiln_last_error().decode(errors="replace") or lib().kiln_strerror(rc).decode()
        raise KilnError(rc, msg)
    return rc


# Status codes the bindings compare against (kiln/status.h).
OK = 0
EAGAIN = -9
ETIMEDOUT = -10
EPEERDEAD = -11
ECLOSED = -16
