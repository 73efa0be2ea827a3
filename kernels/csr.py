"""General sparse (CSR) kernels, CPU twin (Numba): SpMV, SOR/SSOR sweeps, greedy colouring.

Matrices are given as ``(indptr, indices, data)`` of a square CSR matrix (column indices sorted
or not). SOR sweeps solve ``A x = b`` in place:
``x_i <- (1 - omega) x_i + omega (b_i - sum_{j != i} a_ij x_j) / (a_ii + fshift)``;
lexicographic in row order (forward) or reverse (backward), or multicolour: the rows of one colour
are independent (no two share an off-diagonal entry), so each colour is updated in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["spmv", "diagonal", "sor_lex", "greedy_colouring", "colour_groups", "sor_multicolour",
           "sweep"]


@njit(parallel=True, cache=True, boundscheck=False)
def spmv(indptr, indices, data, x, y):
    """``y = A x``."""
    n = indptr.size - 1
    for i in prange(n):
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        y[i] = acc


@njit(parallel=True, cache=True)
def diagonal(indptr, indices, data):
    """The diagonal of A (zero where the row has no diagonal entry)."""
    n = indptr.size - 1
    d = np.zeros(n)
    for i in prange(n):
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i:
                d[i] += data[p]
    return d


@njit(cache=True, inline="always")
def _row_update(indptr, indices, data, diag, b, x, omega, fshift, i):
    acc = b[i]
    for p in range(indptr[i], indptr[i + 1]):
        j = indices[p]
        if j != i:
            acc -= data[p] * x[j]
    x[i] = (1.0 - omega) * x[i] + omega * acc / (diag[i] + fshift)


@njit(cache=True, boundscheck=False)
def sor_lex(indptr, indices, data, diag, b, x, omega, fshift, direction):
    """One lexicographic sweep: ``direction`` 0 forward, 1 backward."""
    n = indptr.size - 1
    if direction == 0:
        for i in range(n):
            _row_update(indptr, indices, data, diag, b, x, omega, fshift, i)
    else:
        for i in range(n - 1, -1, -1):
            _row_update(indptr, indices, data, diag, b, x, omega, fshift, i)


@njit(cache=True)
def greedy_colouring(indptr, indices):
    """Greedy (first-fit, natural order) colouring of the graph of A + A^T's pattern.

    Uses each row's own entries, so pass a structurally symmetric matrix (or symmetrise first).
    Returns the colour of each row, ``0 .. ncolours - 1``.
    """
    n = indptr.size - 1
    colour = -np.ones(n, dtype=np.int64)
    mark = -np.ones(n + 1, dtype=np.int64)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j != i and colour[j] >= 0:
                mark[colour[j]] = i
        c = 0
        while mark[c] == i:
            c += 1
        colour[i] = c
    return colour


def colour_groups(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by colour: ``(ptr, rows)`` with colour ``c``'s rows ``rows[ptr[c]:ptr[c+1]]``."""
    order = np.argsort(colour, kind="stable").astype(np.int64)
    counts = np.bincount(colour)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, order


@njit(parallel=True, cache=True, boundscheck=False)
def _sor_colour(indptr, indices, data, diag, b, x, omega, fshift, rows):
    for q in prange(rows.size):
        _row_update(indptr, indices, data, diag, b, x, omega, fshift, rows[q])


def sor_multicolour(indptr, indices, data, diag, b, x, omega, fshift, ptr, rows, direction):
    """One multicolour sweep: colours in order (``direction`` 0) or reverse (1)."""
    nc = ptr.size - 1
    order = range(nc) if direction == 0 else range(nc - 1, -1, -1)
    for c in order:
        _sor_colour(indptr, indices, data, diag, b, x, omega, fshift, rows[ptr[c]:ptr[c + 1]])


def sweep(A, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", fshift=0.0,
          colours=None, diag=None):
    """One SOR sweep on a SciPy CSR matrix ``A`` (``kind``: forward, backward, symmetric)."""
    indptr, indices, data = A.indptr, A.indices, A.data
    if diag is None:
        diag = diagonal(indptr, indices, data)
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    if ordering == "multicolour" and colours is None:
        S = (abs(A) + abs(A.T)).tocsr()  # independence needs the symmetrised pattern
        colours = colour_groups(greedy_colouring(S.indptr, S.indices))
    for d in dirs:
        if ordering == "lexicographic":
            sor_lex(indptr, indices, data, diag, b, x, float(omega), float(fshift), d)
        elif ordering == "multicolour":
            sor_multicolour(indptr, indices, data, diag, b, x, float(omega), float(fshift),
                            colours[0], colours[1], d)
        else:
            raise ValueError(f"unknown SOR ordering {ordering!r} (lexicographic, multicolour)")
    return x
