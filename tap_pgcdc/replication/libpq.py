"""ctypes bindings to the libpq that psycopg2 is linked against (COPY BOTH reads and writes).

See `tap_pgcdc.replication.transport` for why the tap reads the replication stream through
libpq itself rather than through psycopg2's replication API.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util


def _extension_path() -> str:
    """The file of psycopg2's C extension module.

    Found through the import system rather than `psycopg2._psycopg.__file__`, a private module
    of psycopg2: its spec names the same file without touching the module's internals.
    """
    spec = importlib.util.find_spec("psycopg2._psycopg")
    if spec is None or spec.origin is None:  # pragma: no cover - psycopg2 always has it
        msg = "psycopg2's C extension module (psycopg2._psycopg) was not found"
        raise ImportError(msg)
    return spec.origin


class LibPq:
    """The libpq functions we need, resolved from the copy psycopg2 is linked against.

    dlsym on psycopg2's extension module searches its dependencies too, so this finds the very
    libpq instance that owns psycopg2's PGconn, whatever its file name (psycopg2-binary bundles
    its own).
    """

    def __init__(self) -> None:
        lib = ctypes.CDLL(_extension_path())
        self.get_copy_data = lib.PQgetCopyData
        self.get_copy_data.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
        ]
        self.get_copy_data.restype = ctypes.c_int
        self.put_copy_data = lib.PQputCopyData
        self.put_copy_data.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.put_copy_data.restype = ctypes.c_int
        self.flush = lib.PQflush
        self.flush.argtypes = [ctypes.c_void_p]
        self.flush.restype = ctypes.c_int
        self.consume_input = lib.PQconsumeInput
        self.consume_input.argtypes = [ctypes.c_void_p]
        self.consume_input.restype = ctypes.c_int
        self.freemem = lib.PQfreemem
        self.freemem.argtypes = [ctypes.c_void_p]
        self.freemem.restype = None
        self.error_message = lib.PQerrorMessage
        self.error_message.argtypes = [ctypes.c_void_p]
        self.error_message.restype = ctypes.c_char_p
        self.get_result = lib.PQgetResult
        self.get_result.argtypes = [ctypes.c_void_p]
        self.get_result.restype = ctypes.c_void_p
        self.result_error_message = lib.PQresultErrorMessage
        self.result_error_message.argtypes = [ctypes.c_void_p]
        self.result_error_message.restype = ctypes.c_char_p
        self.clear = lib.PQclear
        self.clear.argtypes = [ctypes.c_void_p]
        self.clear.restype = None


@functools.cache
def libpq() -> LibPq:
    """The bindings, loaded once per process on first use."""
    return LibPq()
