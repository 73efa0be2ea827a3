"""SOR sweeps on structured grids, CPU twin (Numba): lexicographic and red-black orderings.

Same data layout as :mod:`hybridsolve.kernels.stencil`. One call performs one sweep in place on
the slab ``x`` for ``A x = b``, with the ghost planes ``lo``/``hi`` held fixed (PETSc's
processor-local SOR): ``x_p <- (1 - omega) x_p + omega (b_p + sum_f w_f x_nb) / (d_p + fshift)``.

``direction``: 0 forward, 1 backward (lexicographic: the natural C order; red-black: red then
black, or black then red). A symmetric sweep is a forward sweep followed by a backward one.
``i0`` is the global index of the slab's first plane, so the red-black colouring ``(i + j [+ k])
% 2`` is the same on any number of ranks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["sor_lex_2d", "sor_lex_3d", "sor_rb_2d", "sor_rb_3d", "sweep"]


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
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


@njit(cache=True, boundscheck=False)
def sor_lex_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, direction):
    n0, n1 = x.shape
    if direction == 0:
        for i in range(n0):
            for j in range(n1):
                _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j)
    else:
        for i in range(n0 - 1, -1, -1):
            for j in range(n1 - 1, -1, -1):
                _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j)


@njit(cache=True, boundscheck=False)
def sor_lex_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, direction):
    n0, n1, n2 = x.shape
    if direction == 0:
        for i in range(n0):
            for j in range(n1):
                for k in range(n2):
                    _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k)
    else:
        for i in range(n0 - 1, -1, -1):
            for j in range(n1 - 1, -1, -1):
                for k in range(n2 - 1, -1, -1):
                    _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k)


@njit(parallel=True, cache=True, boundscheck=False)
def _rb_colour_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i0, colour):
    n0, n1 = x.shape
    for i in prange(n0):
        start = (colour + i0 + i) % 2
        for j in range(start, n1, 2):
            _point_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i, j)


@njit(parallel=True, cache=True, boundscheck=False)
def _rb_colour_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i0, colour):
    n0, n1, n2 = x.shape
    for i in prange(n0):
        for j in range(n1):
            start = (colour + i0 + i + j) % 2
            for k in range(start, n2, 2):
                _point_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i, j, k)


def sor_rb_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, direction, i0=0):
    first = 0 if direction == 0 else 1
    _rb_colour_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i0, first)
    _rb_colour_2d(wx, wy, b, x, lo, hi, shift, fshift, omega, i0, 1 - first)


def sor_rb_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, direction, i0=0):
    first = 0 if direction == 0 else 1
    _rb_colour_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i0, first)
    _rb_colour_3d(wx, wy, wz, b, x, lo, hi, shift, fshift, omega, i0, 1 - first)


def sweep(faces, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", lo=None,
          hi=None, shift=0.0, fshift=0.0, i0=0):
    """One SOR sweep (``kind``: forward, backward, symmetric) in place on ``x``."""
    if lo is None:
        lo = np.zeros(x.shape[1:])
    if hi is None:
        hi = np.zeros(x.shape[1:])
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    args = (b, x, lo, hi, float(shift), float(fshift), float(omega))
    for d in dirs:
        if ordering == "lexicographic":
            if x.ndim == 2:
                sor_lex_2d(faces[0], faces[1], *args, d)
            else:
                sor_lex_3d(faces[0], faces[1], faces[2], *args, d)
        elif ordering == "redblack":
            if x.ndim == 2:
                sor_rb_2d(faces[0], faces[1], *args, d, i0)
            else:
                sor_rb_3d(faces[0], faces[1], faces[2], *args, d, i0)
        else:
            raise ValueError(f"unknown SOR ordering {ordering!r} (lexicographic, redblack)")
    return x
