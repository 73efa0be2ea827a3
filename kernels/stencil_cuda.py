"""Structured-grid stencil apply, GPU twin (numba-cuda). Same layout as ``stencil.py``.

Arrays may be host (numpy) or device arrays; results are written into ``y`` in place. One thread
per grid point; the last axis is the fastest-varying thread index so loads coalesce.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

__all__ = ["apply_2d", "apply_3d", "apply", "stream_triad"]

TPB2 = (8, 32)
TPB3 = (4, 4, 32)


@cuda.jit
def apply_2d(wx, wy, x, lo, hi, shift, y):
    i, j = cuda.grid(2)
    n0, n1 = x.shape
    if i >= n0 or j >= n1:
        return
    wa = wx[i, j]
    wb = wx[i + 1, j]
    wc = wy[i, j]
    wd = wy[i, j + 1]
    s = wa + wb + wc + wd
    d = s + shift if s != 0.0 else 1.0
    xm = lo[j] if i == 0 else x[i - 1, j]
    xp = hi[j] if i == n0 - 1 else x[i + 1, j]
    acc = d * x[i, j] - wa * xm - wb * xp
    if j > 0:
        acc -= wc * x[i, j - 1]
    if j < n1 - 1:
        acc -= wd * x[i, j + 1]
    y[i, j] = acc


@cuda.jit
def apply_3d(wx, wy, wz, x, lo, hi, shift, y):
    i, j, k = cuda.grid(3)
    n0, n1, n2 = x.shape
    if i >= n0 or j >= n1 or k >= n2:
        return
    wa = wx[i, j, k]
    wb = wx[i + 1, j, k]
    wc = wy[i, j, k]
    wd = wy[i, j + 1, k]
    we = wz[i, j, k]
    wf = wz[i, j, k + 1]
    s = wa + wb + wc + wd + we + wf
    d = s + shift if s != 0.0 else 1.0
    xm = lo[j, k] if i == 0 else x[i - 1, j, k]
    xp = hi[j, k] if i == n0 - 1 else x[i + 1, j, k]
    acc = d * x[i, j, k] - wa * xm - wb * xp
    if j > 0:
        acc -= wc * x[i, j - 1, k]
    if j < n1 - 1:
        acc -= wd * x[i, j + 1, k]
    if k > 0:
        acc -= we * x[i, j, k - 1]
    if k < n2 - 1:
        acc -= wf * x[i, j, k + 1]
    y[i, j, k] = acc


def blocks(shape, tpb):
    return tuple(math.ceil(s / t) for s, t in zip(shape, tpb))


def apply(faces, x, lo=None, hi=None, shift=0.0, y=None):
    """Launch the 2-D or 3-D kernel; zero ghost planes by default."""
    if lo is None:
        lo = cuda.to_device(np.zeros(x.shape[1:]))
    if hi is None:
        hi = cuda.to_device(np.zeros(x.shape[1:]))
    if y is None:
        y = cuda.device_array(x.shape, dtype=np.float64)
    if len(x.shape) == 2:
        apply_2d[blocks(x.shape, TPB2), TPB2](faces[0], faces[1], x, lo, hi, float(shift), y)
    else:
        apply_3d[blocks(x.shape, TPB3), TPB3](faces[0], faces[1], faces[2], x, lo, hi,
                                               float(shift), y)
    return y


@cuda.jit
def stream_triad(a, b, c, s):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = b[i] + s * c[i]
