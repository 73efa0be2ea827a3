"""Compiling one kernel twice: threaded (``parallel=True``) and serial, each with its own cache.

Numba's on-disk cache is keyed by the Python function (module, qualified name, line), not by
the compile flags: two dispatchers of the same function would share cache entries and one of
them could load the other's machine code. The threaded twin therefore gets a copy of the
function under its own qualified name.
"""

from __future__ import annotations

import types

from numba import njit


def serial_and_parallel(py_func, **opts):
    """Return ``(parallel_dispatcher, serial_dispatcher)`` for ``py_func`` (uses ``prange``)."""
    par = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_parallel",
                             py_func.__defaults__, py_func.__closure__)
    par.__qualname__ = py_func.__qualname__ + "_parallel"
    par.__doc__ = py_func.__doc__
    return njit(parallel=True, **opts)(par), njit(**opts)(py_func)
