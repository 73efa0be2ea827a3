"""Orderings of a set of related systems so that neighbours in the chain are similar (SKR).

* :func:`greedy_order`: the paper's greedy nearest-neighbour chain (Wang et al., ICLR 2024),
  exact, O(N^2) distance evaluations but O(N) memory.
* :func:`scalable_order`: for large N: a low-dimensional embedding of the parameter arrays
  (random projection, then PCA), a Hilbert-curve order of the two leading components, then
  local improvement of the chain by windowed 2-opt in the embedding. O(N log N) after the
  embedding, no N x N matrix.

Distances are Frobenius (``metric="fro"``) or L1 (``metric="l1"``, the paper's choice for the
thermal family's scalar boundary parameters) on the flattened parameter arrays; the Helmholtz
wavenumber is the last entry of that family's arrays, so it enters the distance with them.
"""

from __future__ import annotations

import numpy as np

from hybridsolve.errors import InputError

__all__ = ["order", "greedy_order", "scalable_order", "embed", "chain_length", "ORDERINGS"]

ORDERINGS = ("greedy", "scalable", "auto", "random", "none")


def _flat(params: np.ndarray) -> np.ndarray:
    X = np.asarray(params, dtype=float).reshape(len(params), -1)
    if not np.all(np.isfinite(X)):
        raise InputError("sorting: parameter arrays hold NaN or Inf")
    return X


def _dist(X: np.ndarray, i: int, idx: np.ndarray, metric: str) -> np.ndarray:
    d = X[idx] - X[i]
    return np.abs(d).sum(axis=1) if metric == "l1" else np.einsum("ij,ij->i", d, d)


def greedy_order(params: np.ndarray, start: int = 0, metric: str = "fro") -> np.ndarray:
    """Greedy chain: from ``start``, repeatedly go to the nearest unvisited array."""
    X = _flat(params)
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    out = np.empty(n, dtype=np.int64)
    cur = int(start)
    for t in range(n):
        out[t] = cur
        left[cur] = False
        if t == n - 1:
            break
        idx = np.flatnonzero(left)
        cur = int(idx[np.argmin(_dist(X, cur, idx, metric))])
    return out


def embed(params: np.ndarray, dim: int = 16, seed: int = 0, chunk: int = 2048) -> np.ndarray:
    """An ``(N, dim)`` embedding: a Gaussian random projection to ``min(D, 4 dim)`` dimensions
    (chunked, so an N x D matrix is never formed twice), then PCA to ``dim``."""
    X = np.asarray(params, dtype=float).reshape(len(params), -1)
    n, D = X.shape
    mid = min(D, 4 * dim)
    if D > mid:
        R = np.random.default_rng(seed).standard_normal((D, mid)) / np.sqrt(mid)
        Y = np.vstack([X[i:i + chunk] @ R for i in range(0, n, chunk)])
    else:
        Y = X.copy()
    if not np.all(np.isfinite(Y)):
        raise InputError("sorting: parameter arrays hold NaN or Inf")
    Y -= Y.mean(axis=0)
    if n > 1:
        _, s, Vt = np.linalg.svd(Y, full_matrices=False)
        Y = Y @ Vt[: min(dim, Vt.shape[0])].T
    return Y


def _hilbert_index(x: np.ndarray, y: np.ndarray, order: int = 16) -> np.ndarray:
    """Index along a 2^order x 2^order Hilbert curve of integer points (vectorised)."""
    x, y = x.astype(np.int64).copy(), y.astype(np.int64).copy()
    d = np.zeros_like(x)
    s = 1 << (order - 1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant
        flip = ~ry
        swap_x = np.where(flip & rx, s - 1 - x, x)
        swap_y = np.where(flip & rx, s - 1 - y, y)
        x = np.where(flip, swap_y, swap_x)
        y = np.where(flip, swap_x, swap_y)
        s >>= 1
    return d


def _two_opt_windows(Y: np.ndarray, perm: np.ndarray, window: int = 48, sweeps: int = 2,
                     metric: str = "fro") -> np.ndarray:
    """Reverse sub-chains inside sliding windows when that shortens the chain (2-opt)."""
    from hybridsolve.kernels.sorting import two_opt_windows

    out = np.ascontiguousarray(perm, dtype=np.int64).copy()
    two_opt_windows(np.ascontiguousarray(Y, dtype=float), out, int(window), int(sweeps),
                    metric == "l1")
    return out


def scalable_order(params: np.ndarray, dim: int = 16, seed: int = 0, window: int = 48,
                   metric: str = "fro") -> np.ndarray:
    """Embedding + Hilbert curve on the two leading components + windowed 2-opt."""
    Y = embed(params, dim, seed)
    n = len(Y)
    if n <= 2:
        return np.arange(n)
    P = Y[:, :2] if Y.shape[1] >= 2 else np.hstack([Y, np.zeros((n, 1))])
    lo, hi = P.min(axis=0), P.max(axis=0)
    q = ((P - lo) / np.where(hi > lo, hi - lo, 1.0) * (2**16 - 1)).astype(np.int64)
    perm = np.argsort(_hilbert_index(q[:, 0], q[:, 1]), kind="stable")
    return _two_opt_windows(Y, perm, window=window, metric=metric)


def chain_length(params: np.ndarray, perm: np.ndarray, metric: str = "fro") -> float:
    """Sum of distances between consecutive arrays of the chain (the quantity sorting shortens)."""
    X = _flat(params)[perm]
    d = np.diff(X, axis=0)
    return float(np.abs(d).sum() if metric == "l1" else np.sqrt(np.einsum("ij,ij->i", d, d)).sum())


def order(params: np.ndarray, method: str = "auto", seed: int = 0, metric: str = "fro",
          greedy_max: int = 2000) -> np.ndarray:
    """The solve order of the arrays: ``greedy`` (the paper's, on the full arrays),
    ``scalable``, ``auto`` (greedy on a 16-dimensional embedding up to ``greedy_max`` systems,
    scalable above), ``random`` or ``none`` (as generated)."""
    n = len(params)
    if method not in ORDERINGS:
        raise InputError(f"unknown ordering {method!r}; known: {', '.join(ORDERINGS)}")
    if metric not in ("fro", "l1"):
        raise InputError(f"unknown distance {metric!r} (fro, l1)")
    if method == "none":
        return np.arange(n)
    if method == "random":
        return np.random.default_rng(seed).permutation(n)
    if method == "greedy":
        return greedy_order(params, metric=metric)
    if method == "auto" and n <= greedy_max:
        # the greedy chain on a 16-dimensional embedding: O(N^2 16) instead of O(N^2 D)
        X = np.asarray(params, dtype=float).reshape(n, -1)
        return greedy_order(embed(X, 16, seed) if X.shape[1] > 64 else X, metric=metric)
    return scalable_order(params, seed=seed, metric=metric)
