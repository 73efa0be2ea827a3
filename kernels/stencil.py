"""Structured-grid stencil apply, CPU twin (Numba).

The operator is given by its face coefficients (``hybridsolve.problems.grid.face_coefficients``):
``wx`` of shape ``(n0 + 1, n1)``, ``wy`` of shape ``(n0, n1 + 1)`` (and ``wz`` in 3-D); row
``p`` is ``d_p x_p - sum_f w_f x_nb`` with ``d_p = sum_f w_f + shift`` (1 where the sum is 0,
i.e. a solid cell). ``x`` is a slab of whole planes along axis 0; ``lo`` and ``hi`` are the ghost
planes just below and above it (zeros at the domain boundary, a neighbour rank's planes inside).
Faces along axis 1 (and 2) at the ends are Dirichlet faces: they add to the diagonal only.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from hybridsolve.kernels._jit import serial_and_parallel

__all__ = ["apply_2d", "apply_3d", "apply", "diagonal", "stream_triad", "csr_rows", "PARALLEL_MIN"]

#: Below this many grid points the serial twin runs: waking a thread pool costs more than the
#: work (and far more when the cores are shared with other ranks or processes).
PARALLEL_MIN = 1 << 16


def _apply_2d(wx, wy, x, lo, hi, shift, y):
    """``y = A x`` for the 5-point operator on a 2-D slab."""
    n0, n1 = x.shape
    for i in prange(n0):
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        xi = x[i]
        wa = wx[i]
        wb = wx[i + 1]
        wc = wy[i]
        yi = y[i]
        for j in range(n1):
            s = wa[j] + wb[j] + wc[j] + wc[j + 1]
            d = s + shift if s != 0.0 else 1.0
            acc = d * xi[j] - wa[j] * xm[j] - wb[j] * xp[j]
            if j > 0:
                acc -= wc[j] * xi[j - 1]
            if j < n1 - 1:
                acc -= wc[j + 1] * xi[j + 1]
            yi[j] = acc


def _apply_3d(wx, wy, wz, x, lo, hi, shift, y):
    """``y = A x`` for the 7-point operator on a 3-D slab."""
    n0, n1, n2 = x.shape
    for i in prange(n0):
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        xi = x[i]
        for j in range(n1):
            wa = wx[i, j]
            wb = wx[i + 1, j]
            wym = wy[i, j]
            wyp = wy[i, j + 1]
            wzr = wz[i, j]
            xr = xi[j]
            for k in range(n2):
                s = wa[k] + wb[k] + wym[k] + wyp[k] + wzr[k] + wzr[k + 1]
                d = s + shift if s != 0.0 else 1.0
                acc = d * xr[k] - wa[k] * xm[j, k] - wb[k] * xp[j, k]
                if j > 0:
                    acc -= wym[k] * xi[j - 1, k]
                if j < n1 - 1:
                    acc -= wyp[k] * xi[j + 1, k]
                if k > 0:
                    acc -= wzr[k] * xr[k - 1]
                if k < n2 - 1:
                    acc -= wzr[k + 1] * xr[k + 1]
                y[i, j, k] = acc


apply_2d, apply_2d_serial = serial_and_parallel(_apply_2d, cache=True, boundscheck=False)
apply_3d, apply_3d_serial = serial_and_parallel(_apply_3d, cache=True, boundscheck=False)


def diagonal(faces, shift: float = 0.0) -> np.ndarray:
    """The operator's diagonal on the slab: the sum of a point's faces plus ``shift``, or 1 where
    the sum is 0 (a solid cell)."""
    dim = len(faces)
    s = 0.0
    for ax, f in enumerate(faces):
        lo = tuple(slice(0, -1) if a == ax else slice(None) for a in range(dim))
        hi = tuple(slice(1, None) if a == ax else slice(None) for a in range(dim))
        s = s + f[lo] + f[hi]
    return np.where(s != 0.0, s + shift, 1.0)


def apply(faces, x, lo=None, hi=None, shift=0.0, y=None):
    """Dispatch on dimension; ``lo``/``hi`` default to zero planes (the domain boundary)."""
    if lo is None:
        lo = np.zeros(x.shape[1:])
    if hi is None:
        hi = np.zeros(x.shape[1:])
    if y is None:
        y = np.empty_like(x)
    par = x.size >= PARALLEL_MIN and get_num_threads() > 1
    if x.ndim == 2:
        (apply_2d if par else apply_2d_serial)(faces[0], faces[1], x, lo, hi, float(shift), y)
    elif x.ndim == 3:
        (apply_3d if par else apply_3d_serial)(faces[0], faces[1], faces[2], x, lo, hi,
                                               float(shift), y)
    else:
        raise ValueError(f"stencil apply needs a 2-D or 3-D grid, got {x.ndim}-D")
    return y


@njit(cache=True, boundscheck=False)
def _csr_rows_3d(wx, wy, wz, shift, r0, r1, indptr, indices, data, fill):
    """Rows ``r0:r1`` of the 7-point operator (2-D: a leading axis of length 1), columns in
    increasing order, zero faces left out: counts into ``indptr`` (``fill`` False), then the
    entries (``fill`` True)."""
    n0, n1, n2 = wx.shape[0] - 1, wy.shape[1] - 1, wz.shape[2] - 1
    s1 = n2
    s0 = n1 * n2
    for r in range(r0, r1):
        i = r // s0
        j = (r // s1) % n1
        k = r % n2
        w = (wx[i, j, k], wy[i, j, k], wz[i, j, k], wz[i, j, k + 1], wy[i, j + 1, k], wx[i + 1, j, k])
        off = (-s0, -s1, -1, 1, s1, s0)
        ok = (i > 0, j > 0, k > 0, k < n2 - 1, j < n1 - 1, i < n0 - 1)
        q = r - r0
        if not fill:
            c = 1
            for f in range(6):
                if ok[f] and w[f] != 0.0:
                    c += 1
            indptr[q + 1] = c
            continue
        p = indptr[q]
        tot = 0.0
        for f in range(6):
            tot += w[f]
        for f in range(3):
            if ok[f] and w[f] != 0.0:
                indices[p] = r + off[f]
                data[p] = -w[f]
                p += 1
        indices[p] = r
        data[p] = tot + shift if tot != 0.0 else 1.0
        p += 1
        for f in range(3, 6):
            if ok[f] and w[f] != 0.0:
                indices[p] = r + off[f]
                data[p] = -w[f]
                p += 1


def csr_rows(faces, shift: float, r0: int, r1: int, index_dtype=np.int32):
    """Rows ``r0:r1`` of the stencil operator as CSR ``(indptr, indices, data)`` with global,
    sorted column indices; zero faces are left out (:func:`hybridsolve.problems.grid.stencil_csr`
    wraps it as SciPy CSR)."""
    if len(faces) == 2:
        wx0, wy0 = faces
        faces = (np.zeros((2,) + wy0.shape[:1] + wx0.shape[1:]), wx0[None], wy0[None])
    wx, wy, wz = (np.ascontiguousarray(f, dtype=np.float64) for f in faces)
    m = r1 - r0
    indptr = np.zeros(m + 1, dtype=index_dtype)
    _csr_rows_3d(wx, wy, wz, float(shift), r0, r1, indptr, indptr[:0], np.empty(0), False)
    np.cumsum(indptr, out=indptr)
    indices = np.empty(int(indptr[-1]), dtype=index_dtype)
    data = np.empty(int(indptr[-1]))
    _csr_rows_3d(wx, wy, wz, float(shift), r0, r1, indptr, indices, data, True)
    return indptr, indices, data


@njit(parallel=True, cache=True)
def stream_triad(a, b, c, s):
    """STREAM triad ``a = b + s c``: the memory-bandwidth yardstick of the benchmarks."""
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]
