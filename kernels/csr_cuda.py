"""General sparse (CSR) kernels, GPU twin (numba-cuda): SpMV and SOR sweeps.

SpMV: one thread per row. SOR: rows are updated in groups of mutually independent rows, one
launch per group: the colours of a greedy colouring (multicolour SOR, as on the CPU), or the
levels of a level schedule (:func:`levels`), which reproduces the lexicographic sweep exactly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit

__all__ = ["spmv", "sor_groups", "levels", "sweep"]

TPB = 128


@cuda.jit
def spmv(indptr, indices, data, x, y):
    i = cuda.grid(1)
    if i < indptr.size - 1:
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        y[i] = acc


@cuda.jit
def _sor_rows(indptr, indices, data, diag, b, x, omega, fshift, rows):
    q = cuda.grid(1)
    if q < rows.size:
        i = rows[q]
        acc = b[i]
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j != i:
                acc -= data[p] * x[j]
        x[i] = (1.0 - omega) * x[i] + omega * acc / (diag[i] + fshift)


@njit(cache=True)
def _levels(indptr, indices, forward):
    n = indptr.size - 1
    level = np.zeros(n, dtype=np.int64)
    if forward:
        for i in range(n):
            m = -1
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                if j < i and level[j] > m:
                    m = level[j]
            level[i] = m + 1
    else:
        for i in range(n - 1, -1, -1):
            m = -1
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                if j > i and level[j] > m:
                    m = level[j]
            level[i] = m + 1
    return level


def levels(A, forward: bool = True):
    """Level schedule of a lexicographic sweep on the pattern of ``A + A^T``: ``(ptr, rows)``."""
    from hybridsolve.kernels.csr import colour_groups

    S = (abs(A) + abs(A.T)).tocsr()
    return colour_groups(_levels(S.indptr, S.indices, forward))


def sor_groups(indptr, indices, data, diag, b, x, omega, fshift, ptr, rows_d, reverse=False):
    """Update the row groups ``rows_d[ptr[g]:ptr[g+1]]`` one after another (host ``ptr``)."""
    ng = ptr.size - 1
    for g in (range(ng - 1, -1, -1) if reverse else range(ng)):
        a, e = int(ptr[g]), int(ptr[g + 1])
        if e > a:
            _sor_rows[math.ceil((e - a) / TPB), TPB](indptr, indices, data, diag, b, x, float(omega),
                                                      float(fshift), rows_d[a:e])


def sweep(A, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", fshift=0.0):
    """One SOR sweep on the GPU for a SciPy CSR ``A``; ``b``, ``x`` host or device arrays.

    Returns the updated ``x`` as a device array.
    """
    from hybridsolve.kernels.csr import colour_groups, diagonal, greedy_colouring

    dev = [cuda.to_device(np.ascontiguousarray(a)) for a in (A.indptr, A.indices, A.data)]
    diag = cuda.to_device(diagonal(A.indptr, A.indices, A.data))
    b = cuda.to_device(b) if isinstance(b, np.ndarray) else b
    x = cuda.to_device(x) if isinstance(x, np.ndarray) else x
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    if ordering == "multicolour":
        S = (abs(A) + abs(A.T)).tocsr()
        ptr, rows = colour_groups(greedy_colouring(S.indptr, S.indices))
        groups = {0: (ptr, rows, False), 1: (ptr, rows, True)}
    elif ordering == "lexicographic":
        fp, fr = levels(A, True)
        bp, br = levels(A, False)
        groups = {0: (fp, fr, False), 1: (bp, br, False)}
    else:
        raise ValueError(f"unknown SOR ordering {ordering!r} (lexicographic, multicolour)")
    for d in dirs:
        ptr, rows, rev = groups[d]
        sor_groups(*dev, diag, b, x, omega, fshift, ptr, cuda.to_device(rows), reverse=rev)
    return x
