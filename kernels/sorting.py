"""Local improvement of a chain ordering (windowed 2-opt), CPU (Numba).

No GPU twin: the loop is short, sequential and runs once per dataset.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _d(Y, a, b, l1):
    acc = 0.0
    for t in range(Y.shape[1]):
        v = Y[a, t] - Y[b, t]
        acc += abs(v) if l1 else v * v
    return acc if l1 else np.sqrt(acc)


@njit(cache=True)
def two_opt_windows(Y, perm, window, sweeps, l1):
    """In place on ``perm``: for each window of ``window`` consecutive positions, reverse a
    sub-chain ``perm[i+1..j]`` whenever that shortens the chain."""
    n = perm.size
    step = max(window // 2, 1)
    for _ in range(sweeps):
        improved = False
        for s0 in range(0, max(n - 1, 1), step):
            hi = min(n - 1, s0 + window)
            for i in range(s0, hi - 1):
                a = perm[i]
                dab = _d(Y, a, perm[i + 1], l1)
                for j in range(i + 2, hi + 1):
                    c = perm[j]
                    old = dab
                    new = _d(Y, a, c, l1)
                    if j + 1 < n:
                        e = perm[j + 1]
                        old += _d(Y, c, e, l1)
                        new += _d(Y, perm[i + 1], e, l1)
                    if new < old - 1e-12:
                        lo, up = i + 1, j
                        while lo < up:
                            tmp = perm[lo]
                            perm[lo] = perm[up]
                            perm[up] = tmp
                            lo += 1
                            up -= 1
                        dab = _d(Y, a, perm[i + 1], l1)
                        improved = True
        if not improved:
            break
