"""Reference omegas a learner is judged against (evaluation only: they do extra matrix work).

* the best fixed omega in hindsight: the grid value with the least total cost over a sequence;
* the instance-optimal omega: Young's formula from the Jacobi spectral radius (valid for
  consistently ordered matrices, e.g. 5-point stencils), or a golden-section search on the
  measured cost of each instance.

Also a serial SOR iteration counter (Numba) on SciPy matrices, for sweeping many omegas over
many small systems quickly; it counts exactly what PETSc's Richardson + SOR counts (tested).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.options import check_omega

__all__ = ["sor_iterations", "jacobi_spectral_radius", "young_omega", "golden_section",
           "best_fixed"]


def _csr(A):
    import scipy.sparse as sp

    if not sp.issparse(A):
        raise InputError("expected a SciPy sparse matrix")
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    A.sort_indices()
    if A.shape[0] != A.shape[1]:
        raise InputError(f"matrix is {A.shape[0]}x{A.shape[1]}: SOR needs a square matrix")
    return A


def sor_iterations(A, b: np.ndarray, omega: float, *, rtol: float = 1e-8, max_it: int = 10000,
                   x0: np.ndarray | None = None) -> int:
    """Sweeps of stationary forward SOR until ``||b - A x|| <= rtol ||b - A x0||`` (``x0 = 0``).

    Returns ``max_it`` when not converged (the paper's cap is 10000), also when it diverges.
    """
    from hybridsolve.kernels.csr import diagonal_positions, sor_solve, unsigned

    omega = check_omega(omega)
    A = _csr(A)
    b = np.ascontiguousarray(b, dtype=float)
    if b.shape != (A.shape[0],):
        raise InputError(f"right-hand side has shape {b.shape}, the matrix is {A.shape}")
    indptr, indices = unsigned(A.indptr), unsigned(A.indices)
    dpos = diagonal_positions(indptr, indices)
    if dpos.size and dpos.min() < 0:
        raise InputError("SOR needs a diagonal entry in every row")
    diag = A.diagonal()
    if np.any(diag == 0):
        raise InputError("SOR needs a nonzero diagonal")
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=float)
    k = sor_solve(indptr, indices, A.data, unsigned(dpos), 1.0 / diag, b, x, float(omega),
                  float(rtol), int(max_it), np.empty_like(b))
    return int(k) if k > 0 else int(max_it)


def jacobi_spectral_radius(A) -> float:
    """Spectral radius of the Jacobi iteration matrix ``I - D^-1 A`` of a symmetric matrix
    with positive diagonal (from the extreme eigenvalues of ``D^-1/2 A D^-1/2``)."""
    A = _csr(A)
    d = A.diagonal()
    if np.any(d <= 0):
        raise InputError("the Jacobi spectral radius here needs a positive diagonal")
    s = 1.0 / np.sqrt(d)
    import scipy.sparse as sp

    S = sp.diags(s) @ A @ sp.diags(s)
    n = A.shape[0]
    if n <= 2000:
        lam = np.linalg.eigvalsh(S.toarray())
        lo, hi = lam[0], lam[-1]
    else:
        from scipy.sparse.linalg import eigsh

        hi = eigsh(S, k=1, which="LA", return_eigenvectors=False)[0]
        lo = eigsh(S, k=1, which="SA", return_eigenvectors=False)[0]
    return float(max(abs(1.0 - lo), abs(1.0 - hi)))


def young_omega(beta: float) -> float:
    """Young's optimal SOR omega ``1 + (beta / (1 + sqrt(1 - beta^2)))^2`` for a consistently
    ordered matrix whose Jacobi iteration has spectral radius ``beta < 1``."""
    if not 0 <= beta < 1:
        raise InputError(f"Young's formula needs a Jacobi spectral radius in [0, 1), got {beta:g}")
    return 1.0 + (beta / (1.0 + math.sqrt(1.0 - beta * beta))) ** 2


def golden_section(cost: Callable[[float], float], lo: float = 1.0, hi: float = 1.95, *,
                   evaluations: int = 12, grid: Sequence[float] | None = None
                   ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Minimise a (noisy, integer-valued) cost of omega by golden-section search.

    When ``grid`` is given it is evaluated first and the search starts in the bracket around
    its best value (as the paper's script does). Returns ``(best_omega, best_cost, omegas,
    costs)`` of every evaluation; among tied minima, the midpoint of the tied omegas.
    """
    tau = (math.sqrt(5.0) - 1.0) / 2.0
    om: list[float] = []
    cs: list[float] = []

    def f(w: float) -> float:
        c = float(cost(w))
        om.append(w)
        cs.append(c)
        return c

    if grid is not None and len(grid):
        g = np.sort(np.asarray(grid, dtype=float))
        gc = [f(w) for w in g]
        i = int(np.argmin(gc))
        a, b = g[max(i - 1, 0)], g[min(i + 1, g.size - 1)]
    else:
        a, b = lo, hi
    x1, x2 = b - tau * (b - a), a + tau * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(max(evaluations - len(om), 0)):
        if f1 > f2:
            a, x1, f1 = x1, x2, f2
            x2 = a + tau * (b - a)
            f2 = f(x2)
        else:
            b, x2, f2 = x2, x1, f1
            x1 = b - tau * (b - a)
            f1 = f(x1)
    om_a, cs_a = np.asarray(om), np.asarray(cs)
    best = cs_a.min()
    tied = om_a[cs_a == best]
    return float(0.5 * (tied.min() + tied.max())), float(best), om_a, cs_a


def best_fixed(costs: np.ndarray, arms: Sequence[float]) -> tuple[float, float]:
    """The best fixed value in hindsight from a cost table ``costs[t, arm]``:
    ``(value, total cost)``."""
    costs = np.asarray(costs, dtype=float)
    arms = np.asarray(arms, dtype=float)
    if costs.ndim != 2 or costs.shape[1] != arms.size:
        raise InputError(f"cost table shape {costs.shape} does not match {arms.size} values")
    tot = costs.sum(axis=0)
    i = int(np.argmin(tot))
    return float(arms[i]), float(tot[i])
