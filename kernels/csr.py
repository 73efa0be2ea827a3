"""General sparse (CSR) kernels, CPU twin (Numba): SpMV, SOR/SSOR sweeps, greedy colouring.

Matrices are given as ``(indptr, indices, data)`` of a square CSR matrix (column indices sorted
or not). SOR sweeps solve ``A x = b`` in place:
``x_i <- (1 - omega) x_i + omega (b_i - sum_{j != i} a_ij x_j) / (a_ii + fshift)``;
lexicographic in row order (forward) or reverse (backward), or multicolour: the rows of one colour
are independent (no two share an off-diagonal entry), so each colour is updated in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from hybridsolve.kernels._jit import serial_and_parallel
from hybridsolve.kernels.stencil import PARALLEL_MIN

__all__ = ["unsigned", "spmv", "diagonal", "diagonal_positions", "sor_lex", "sor_solve", "greedy_colouring", "colour_groups", "sor_multicolour",
           "sweep", "aggregate"]


def unsigned(a: np.ndarray) -> np.ndarray:
    """A zero-copy unsigned view of an index array.

    Numba wraps negative indices around (``x[-1]``) unless the index type is unsigned; that
    check on every gathered ``x[indices[p]]`` costs about a factor 2 in SpMV.
    """
    if a.dtype == np.int32:
        return a.view(np.uint32)
    if a.dtype == np.int64:
        return a.view(np.uint64)
    return a


def _spmv(indptr, indices, data, x, y):
    n = indptr.size - 1
    for i in prange(n):
        acc = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            acc += data[p] * x[indices[p]]
        y[i] = acc


_spmv_par, _spmv_ser = serial_and_parallel(_spmv, cache=True, boundscheck=False)


def spmv(indptr, indices, data, x, y):
    """``y = A x`` (threads above ``PARALLEL_MIN`` nonzeros)."""
    (_spmv_par if data.size >= PARALLEL_MIN and get_num_threads() > 1 else _spmv_ser)(unsigned(indptr), unsigned(indices),
                                                            data, x, y)


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


@njit(cache=True)
def diagonal_positions(indptr, indices):
    """Position in ``data`` of each row's diagonal entry (-1 where the row has none)."""
    n = indptr.size - 1
    pos = -np.ones(n, dtype=np.int64)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i:
                pos[i] = p
                break
    return pos


@njit(cache=True, inline="always", fastmath={"contract"})
def _row_update(indptr, indices, data, dpos, idiag, b, x, omega, i, backward):
    # The off-diagonal sum in two branch-free runs around the diagonal entry, ordered so that
    # the neighbour updated just before (j = i -/+ 1 in sorted rows) enters last: the chain of
    # dependent updates then waits only for the final multiply-add of each row.
    acc = b[i]
    d = dpos[i]
    if backward:
        for p in range(indptr[i], d):
            acc -= data[p] * x[indices[p]]
        for q in range(indptr[i + 1] - d - 1):
            p = indptr[i + 1] - 1 - q
            acc -= data[p] * x[indices[p]]
    else:
        for p in range(d + 1, indptr[i + 1]):
            acc -= data[p] * x[indices[p]]
        for p in range(indptr[i], d):
            acc -= data[p] * x[indices[p]]
    x[i] = (1.0 - omega) * x[i] + acc * (omega * idiag[i])


@njit(cache=True, boundscheck=False)
def sor_lex(indptr, indices, data, dpos, idiag, b, x, omega, direction):
    """One lexicographic sweep (``direction`` 0 forward, 1 backward).

    ``dpos`` from :func:`diagonal_positions` (unsigned), ``idiag = 1 / (a_ii + fshift)``.
    """
    n = indptr.size - 1
    if direction == 0:
        for i in range(n):
            _row_update(indptr, indices, data, dpos, idiag, b, x, omega, i, False)
    else:
        for ii in range(n):
            _row_update(indptr, indices, data, dpos, idiag, b, x, omega, n - 1 - ii, True)


@njit(cache=True, boundscheck=False)
def sor_solve(indptr, indices, data, dpos, idiag, b, x, omega, rtol, max_it, r):
    """Stationary forward SOR from ``x`` (in place) until ``||b - A x|| <= rtol ||b - A x0||``.

    Returns the number of sweeps (``max_it`` when the tolerance was not met). ``r`` is a work
    vector of the size of ``b``. The residual is recomputed after every sweep.
    """
    n = indptr.size - 1
    norm0 = 0.0
    for i in range(n):
        acc = b[i]
        for p in range(indptr[i], indptr[i + 1]):
            acc -= data[p] * x[indices[p]]
        norm0 += acc * acc
    target = rtol * rtol * norm0
    for k in range(1, max_it + 1):
        for i in range(n):
            _row_update(indptr, indices, data, dpos, idiag, b, x, omega, i, False)
        nrm = 0.0
        for i in range(n):
            acc = b[i]
            for p in range(indptr[i], indptr[i + 1]):
                acc -= data[p] * x[indices[p]]
            r[i] = acc
            nrm += acc * acc
        if nrm < target or not nrm < 1e300:
            return k if nrm < target else -k
    return max_it


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


@njit(cache=True)
def aggregate(indptr, indices, radius, offset):
    """Graph aggregates: balls of ``radius`` (graph distance) grown greedily in row order.

    ``indptr, indices`` are the rows of a (locally) square matrix whose column ``j`` is row
    ``j - offset`` (``offset``: the first global row of this rank; columns outside the local
    block are ignored). Rows with no off-diagonal neighbour in the block (identity rows of
    Dirichlet or solid cells) belong to no aggregate: ``-1``. Returns ``(aggregate of each row,
    number of aggregates)``; the aggregates are numbered in order of their first row.
    """
    n = indptr.size - 1
    agg = -np.ones(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    depth = np.empty(n, dtype=np.int64)
    count = 0
    for s in range(n):
        if agg[s] >= 0:
            continue
        lonely = True
        for p in range(indptr[s], indptr[s + 1]):
            j = indices[p] - offset
            if 0 <= j < n and j != s:
                lonely = False
                break
        if lonely:
            continue
        head, tail = 0, 1
        queue[0] = s
        depth[0] = 0
        agg[s] = count
        while head < tail:
            u = queue[head]
            d = depth[head]
            head += 1
            if d == radius:
                continue
            for p in range(indptr[u], indptr[u + 1]):
                v = indices[p] - offset
                if 0 <= v < n and agg[v] < 0:
                    agg[v] = count
                    queue[tail] = v
                    depth[tail] = d + 1
                    tail += 1
        count += 1
    return agg, count


def colour_groups(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by colour: ``(ptr, rows)`` with colour ``c``'s rows ``rows[ptr[c]:ptr[c+1]]``."""
    order = np.argsort(colour, kind="stable").astype(np.int64)
    counts = np.bincount(colour)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, order


@njit(parallel=True, cache=True, boundscheck=False)
def _sor_colour(indptr, indices, data, dpos, idiag, b, x, omega, rows):
    for q in prange(rows.size):
        _row_update(indptr, indices, data, dpos, idiag, b, x, omega, rows[q], False)


def sor_multicolour(indptr, indices, data, dpos, idiag, b, x, omega, ptr, rows, direction):
    """One multicolour sweep: colours in order (``direction`` 0) or reverse (1)."""
    nc = ptr.size - 1
    order = range(nc) if direction == 0 else range(nc - 1, -1, -1)
    indptr, indices, rows = unsigned(indptr), unsigned(indices), unsigned(rows)
    for c in order:
        _sor_colour(indptr, indices, data, dpos, idiag, b, x, omega, rows[ptr[c]:ptr[c + 1]])


def sweep(A, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", fshift=0.0,
          colours=None, idiag=None, dpos=None):
    """One SOR sweep on a SciPy CSR matrix ``A`` (``kind``: forward, backward, symmetric).

    ``idiag = 1 / (diag(A) + fshift)`` and ``dpos`` (:func:`diagonal_positions`) are computed
    when not given: pass them when sweeping often. Every row needs a diagonal entry.
    """
    indptr, indices, data = unsigned(A.indptr), unsigned(A.indices), A.data
    if dpos is None:
        dpos = diagonal_positions(indptr, indices)
        if dpos.size and dpos.min() < 0:
            raise ValueError(f"SOR needs a diagonal entry in every row; row {int(np.argmin(dpos))} has none")
    dpos = unsigned(dpos)
    if idiag is None:
        idiag = 1.0 / (diagonal(indptr, indices, data) + fshift)
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    if ordering == "multicolour" and colours is None:
        S = (abs(A) + abs(A.T)).tocsr()  # independence needs the symmetrised pattern
        colours = colour_groups(greedy_colouring(S.indptr, S.indices))
    for d in dirs:
        if ordering == "lexicographic":
            sor_lex(indptr, indices, data, dpos, idiag, b, x, float(omega), d)
        elif ordering == "multicolour":
            sor_multicolour(indptr, indices, data, dpos, idiag, b, x, float(omega), colours[0],
                            colours[1], d)
        else:
            raise ValueError(f"unknown SOR ordering {ordering!r} (lexicographic, multicolour)")
    return x
