"""SOR sweeps on structured grids, CPU twin (Numba): lexicographic and red-black orderings.

Same data layout as :mod:`hybridsolve.kernels.stencil`. One call performs one sweep in place on
the slab ``x`` for ``A x = b``, with the ghost planes ``lo``/``hi`` held fixed (PETSc's
processor-local SOR): ``x_p <- (1 - omega) x_p + omega (b_p + sum_f w_f x_nb) / (d_p + fshift)``.
Like PETSc's ``MatSOR`` the kernels take the inverse diagonal ``idiag = 1 / (d + fshift)``
precomputed (:func:`inverse_diagonal`): a lexicographic sweep is a chain of dependent updates, and
a multiply instead of a divide shortens every link of it.

``direction``: 0 forward, 1 backward (lexicographic: the natural C order; red-black: red then
black, or black then red). A symmetric sweep is a forward sweep followed by a backward one.
``i0`` is the global index of the slab's first plane, so the red-black colouring ``(i + j [+ k])
% 2`` is the same on any number of ranks.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from hybridsolve.kernels._jit import serial_and_parallel
from hybridsolve.kernels.stencil import PARALLEL_MIN

__all__ = ["inverse_diagonal", "sor_lex_2d", "sor_lex_3d", "sor_rb_2d", "sor_rb_3d", "sweep"]


def inverse_diagonal(faces, shift: float = 0.0, fshift: float = 0.0) -> np.ndarray:
    """``1 / (d + fshift)`` on the slab, ``d`` the operator's diagonal (:func:`stencil.diagonal`)."""
    from hybridsolve.kernels.stencil import diagonal

    return 1.0 / (diagonal(faces, shift) + fshift)


# Lexicographic sweeps: the update of x_p waits for its predecessor along the last axis, so the
# loop is a chain of dependent updates. The neighbour sum that does not depend on the
# predecessor is formed first and the predecessor enters last, through one fused multiply-add
# ('contract' allows FMA, nothing else: results are deterministic).
@njit(cache=True, boundscheck=False, fastmath={"contract"})
def sor_lex_2d(wx, wy, b, x, lo, hi, idiag, omega, direction):
    n0, n1 = x.shape
    c1 = 1.0 - omega
    for ii in range(n0):
        i = ii if direction == 0 else n0 - 1 - ii
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        xi, wa, wb, wc, bi, di = x[i], wx[i], wx[i + 1], wy[i], b[i], idiag[i]
        if direction == 0:
            left = 0.0
            for j in range(n1):
                acc = bi[j] + wa[j] * xm[j] + wb[j] * xp[j]
                if j < n1 - 1:
                    acc += wc[j + 1] * xi[j + 1]
                left = c1 * xi[j] + (acc + wc[j] * left) * (omega * di[j])
                xi[j] = left
        else:
            right = 0.0
            for jj in range(n1):
                j = n1 - 1 - jj
                acc = bi[j] + wa[j] * xm[j] + wb[j] * xp[j]
                if j > 0:
                    acc += wc[j] * xi[j - 1]
                right = c1 * xi[j] + (acc + wc[j + 1] * right) * (omega * di[j])
                xi[j] = right


@njit(cache=True, boundscheck=False, fastmath={"contract"})
def sor_lex_3d(wx, wy, wz, b, x, lo, hi, idiag, omega, direction):
    n0, n1, n2 = x.shape
    c1 = 1.0 - omega
    for ii in range(n0):
        i = ii if direction == 0 else n0 - 1 - ii
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        for jj in range(n1):
            j = jj if direction == 0 else n1 - 1 - jj
            xr, bi, di = x[i, j], b[i, j], idiag[i, j]
            wa, wb, wym, wyp, wzr = wx[i, j], wx[i + 1, j], wy[i, j], wy[i, j + 1], wz[i, j]
            xmr, xpr = xm[j], xp[j]
            # rows j -/+ 1 (a zero coefficient stands in for a missing neighbour row)
            xd = x[i, j - 1] if j > 0 else xr
            xu = x[i, j + 1] if j < n1 - 1 else xr
            sd = 1.0 if j > 0 else 0.0
            su = 1.0 if j < n1 - 1 else 0.0
            if direction == 0:
                left = 0.0
                for k in range(n2):
                    acc = (bi[k] + wa[k] * xmr[k] + wb[k] * xpr[k] + sd * wym[k] * xd[k]
                           + su * wyp[k] * xu[k])
                    if k < n2 - 1:
                        acc += wzr[k + 1] * xr[k + 1]
                    left = c1 * xr[k] + (acc + wzr[k] * left) * (omega * di[k])
                    xr[k] = left
            else:
                right = 0.0
                for kk in range(n2):
                    k = n2 - 1 - kk
                    acc = (bi[k] + wa[k] * xmr[k] + wb[k] * xpr[k] + sd * wym[k] * xd[k]
                           + su * wyp[k] * xu[k])
                    if k > 0:
                        acc += wzr[k] * xr[k - 1]
                    right = c1 * xr[k] + (acc + wzr[k + 1] * right) * (omega * di[k])
                    xr[k] = right


def _rb_colour_2d_py(wx, wy, b, x, lo, hi, idiag, omega, i0, colour):
    n0, n1 = x.shape
    for i in prange(n0):
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        xi, wa, wb, wc, bi, di = x[i], wx[i], wx[i + 1], wy[i], b[i], idiag[i]
        for j in range((colour + i0 + i) % 2, n1, 2):
            acc = bi[j] + wa[j] * xm[j] + wb[j] * xp[j]
            if j > 0:
                acc += wc[j] * xi[j - 1]
            if j < n1 - 1:
                acc += wc[j + 1] * xi[j + 1]
            xi[j] = (1.0 - omega) * xi[j] + omega * acc * di[j]


def _rb_colour_3d_py(wx, wy, wz, b, x, lo, hi, idiag, omega, i0, colour):
    n0, n1, n2 = x.shape
    for i in prange(n0):
        xm = lo if i == 0 else x[i - 1]
        xp = hi if i == n0 - 1 else x[i + 1]
        for j in range(n1):
            xr, bi, di = x[i, j], b[i, j], idiag[i, j]
            wa, wb, wym, wyp, wzr = wx[i, j], wx[i + 1, j], wy[i, j], wy[i, j + 1], wz[i, j]
            xmr, xpr = xm[j], xp[j]
            for k in range((colour + i0 + i + j) % 2, n2, 2):
                acc = bi[k] + wa[k] * xmr[k] + wb[k] * xpr[k]
                if j > 0:
                    acc += wym[k] * x[i, j - 1, k]
                if j < n1 - 1:
                    acc += wyp[k] * x[i, j + 1, k]
                if k > 0:
                    acc += wzr[k] * xr[k - 1]
                if k < n2 - 1:
                    acc += wzr[k + 1] * xr[k + 1]
                xr[k] = (1.0 - omega) * xr[k] + omega * acc * di[k]


_rb_2d = dict(zip((True, False), serial_and_parallel(_rb_colour_2d_py, cache=True, boundscheck=False)))
_rb_3d = dict(zip((True, False), serial_and_parallel(_rb_colour_3d_py, cache=True, boundscheck=False)))


def sor_rb_2d(wx, wy, b, x, lo, hi, idiag, omega, direction, i0=0):
    first = 0 if direction == 0 else 1
    k = _rb_2d[x.size >= PARALLEL_MIN and get_num_threads() > 1]
    k(wx, wy, b, x, lo, hi, idiag, omega, i0, first)
    k(wx, wy, b, x, lo, hi, idiag, omega, i0, 1 - first)


def sor_rb_3d(wx, wy, wz, b, x, lo, hi, idiag, omega, direction, i0=0):
    first = 0 if direction == 0 else 1
    k = _rb_3d[x.size >= PARALLEL_MIN and get_num_threads() > 1]
    k(wx, wy, wz, b, x, lo, hi, idiag, omega, i0, first)
    k(wx, wy, wz, b, x, lo, hi, idiag, omega, i0, 1 - first)


def sweep(faces, b, x, *, omega=1.0, kind="symmetric", ordering="lexicographic", lo=None,
          hi=None, shift=0.0, fshift=0.0, i0=0, idiag=None):
    """One SOR sweep (``kind``: forward, backward, symmetric) in place on ``x``.

    ``idiag`` (from :func:`inverse_diagonal` with the same ``shift``/``fshift``) is computed
    when not given; callers that sweep repeatedly pass it.
    """
    if lo is None:
        lo = np.zeros(x.shape[1:])
    if hi is None:
        hi = np.zeros(x.shape[1:])
    if idiag is None:
        idiag = inverse_diagonal(faces, shift, fshift)
    dirs = {"forward": (0,), "backward": (1,), "symmetric": (0, 1)}[kind]
    args = (b, x, lo, hi, idiag, float(omega))
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
