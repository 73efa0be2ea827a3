"""SOR sweeps on structured grids, GPU twin (numba-cuda). Same layout as ``sor.py``.

Red-black: one launch per colour. Lexicographic: a wavefront (hyperplane) schedule, one launch
per anti-diagonal ``i + j (+ k) = const``; the points of one hyperplane are independent in
lexicographic Gauss–Seidel, so the result is exactly the lexicographic sweep, at the price of
``n0 + n1 (+ n2)`` launches per sweep.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

__all__ = ["sweep"]


@cuda.jit(device=True, inline=True)
def _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j):
    n0, n1 = x.shape
    wa = wx[i, j]
    wb = wx[i + 1, j]
    wc = wy[i, j]
    wd = wy[i, j + 1]
    s = wa + wb + wc + wd
    d = (s + shift if s != 0.0 else 1.0) + fshift
    xm = lo[j] if i == 0 else x[i - 1, j]
    xp = hi[j] if i == n0 - 1 else x[i + 1, j]
    acc = b[i, j] + wa * xm + wb * xp
    if j > 0:
        acc += wc * x[i, j - 1]
    if j < n1 - 1:
        acc += wd * x[i, j + 1]
    x[i, j] = (1.0 - omega) * x[i, j] + omega * acc / d


@cuda.jit(device=True, inline=True)
def _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k):
    n0, n1, n2 = x.shape
    wa = wx[i, j, k]
    wb = wx[i + 1, j, k]
    wc = wy[i, j, k]
    wd = wy[i, j + 1, k]
    we = wz[i, j, k]
    wf = wz[i, j, k + 1]
    s = wa + wb + wc + wd + we + wf
    d = (s + shift if s != 0.0 else 1.0) + fshift
    xm = lo[j, k] if i == 0 else x[i - 1, j, k]
    xp = hi[j, k] if i == n0 - 1 else x[i + 1, j, k]
    acc = b[i, j, k] + wa * xm + wb * xp
    if j > 0:
        acc += wc * x[i, j - 1, k]
    if j < n1 - 1:
        acc += wd * x[i, j + 1, k]
    if k > 0:
        acc += we * x[i, j, k - 1]
    if k < n2 - 1:
        acc += wf * x[i, j, k + 1]
    x[i, j, k] = (1.0 - omega) * x[i, j, k] + omega * acc / d


@cuda.jit
def _rb_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i0, colour):
    i, jh = cuda.grid(2)
    n0, n1 = x.shape
    j = 2 * jh + (colour + i0 + i) % 2
    if i < n0 and j < n1:
        _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j)


@cuda.jit
def _rb_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i0, colour):
    i, j, kh = cuda.grid(3)
    n0, n1, n2 = x.shape
    k = 2 * kh + (colour + i0 + i + j) % 2
    if i < n0 and j < n1 and k < n2:
        _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k)


@cuda.jit
def _wave_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, diag):
    t = cuda.grid(1)
    n0, n1 = x.shape
    i = max(0, diag - (n1 - 1)) + t
    j = diag - i
    if i < n0 and 0 <= j < n1:
        _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j)


@cuda.jit
def _wave_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, plane):
    i, j = cuda.grid(2)
    n0, n1, n2 = x.shape
    k = plane - i - j
    if i < n0 and j < n1 and 0 <= k < n2:
        _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k)


def sweep(faces, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", lo=None,
          hi=None, shift=0.0, fshift=0.0, i0=0):
    """One SOR sweep on the GPU, in place on the device array ``x``."""
    shape = x.shape
    if lo is None:
        lo = cuda.to_device(np.zeros(shape[1:]))
    if hi is None:
        hi = cuda.to_device(np.zeros(shape[1:]))
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    args = (b, x, lo, hi, float(shift), float(fshift), float(omega))
    dim = len(shape)
    for d in dirs:
        if ordering == "redblack":
            for colour in ((0, 1) if d == 0 else (1, 0)):
                if dim == 2:
                    grid = (math.ceil(shape[0] / 8), math.ceil((shape[1] + 1) // 2 / 32) or 1)
                    _rb_2d[grid, (8, 32)](faces[0], faces[1], *args, i0, colour)
                else:
                    grid = (math.ceil(shape[0] / 4), math.ceil(shape[1] / 4),
                            math.ceil((shape[2] + 1) // 2 / 32) or 1)
                    _rb_3d[grid, (4, 4, 32)](faces[0], faces[1], faces[2], *args, i0, colour)
        elif ordering == "lexicographic":
            last = sum(s - 1 for s in shape)
            waves = range(last + 1) if d == 0 else range(last, -1, -1)
            for w in waves:
                if dim == 2:
                    _wave_2d[math.ceil(min(shape) / 128), 128](faces[0], faces[1], *args, w)
                else:
                    grid = (math.ceil(shape[0] / 8), math.ceil(shape[1] / 8))
                    _wave_3d[grid, (8, 8)](faces[0], faces[1], faces[2], *args, w)
        else:
            raise ValueError(f"unknown SOR ordering {ordering!r} (lexicographic, redblack)")
    return x
