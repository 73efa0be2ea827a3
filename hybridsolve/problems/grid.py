"""Structured-grid operators (pure numpy/SciPy): variable-coefficient 5/7-point stencils.

Unknowns sit at the interior points ``(i + 1) h``, ``h = 1 / (n + 1)`` of the unit box, in C
order (last axis fastest); points outside the box carry the Dirichlet value zero. A coefficient
field, when given, lives on the padded grid (``n + 2`` points per axis, boundary included) and the
coefficient on the face between two points is their arithmetic mean. A fluid mask marks solid
cells: a solid cell's row is the identity (decoupled, ``x = 0`` there) and faces between fluid and
solid carry no flux (homogeneous Neumann on obstacle walls).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["stencil_rows", "stencil_csr", "grid_points"]


def grid_points(shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
    """Coordinates of the unknowns ``rows`` (flat indices), shape ``(len(rows), dim)``."""
    multi = np.unravel_index(rows, shape)
    return np.stack([(m + 1.0) / (s + 1.0) for m, s in zip(multi, shape)], axis=1)


def stencil_rows(shape: tuple[int, ...], rows: np.ndarray, coef: np.ndarray | None = None,
                 mask: np.ndarray | None = None, scale: float | None = None,
                 shift: float = 0.0):
    """COO triplets (row, col, value) of ``-div(coef grad) - shift`` for the flat ``rows``.

    Args:
        shape: unknowns per axis (2 or 3 axes).
        rows: flat indices of the rows to build.
        coef: coefficient on the padded grid (``n + 2`` per axis) or ``None`` for 1.
        mask: fluid mask of ``shape`` (True = fluid) or ``None`` for no obstacles.
        scale: factor on the stencil, default ``1 / h^2`` with ``h = 1 / (n_0 + 1)``.
        shift: subtracted from the diagonal of fluid rows (a reaction/Helmholtz term).
    """
    dim = len(shape)
    shape = tuple(int(s) for s in shape)
    if scale is None:
        scale = float(shape[0] + 1) ** 2
    rows = np.asarray(rows, dtype=np.int64)
    multi = np.array(np.unravel_index(rows, shape))  # (dim, m)
    fluid = np.ones(len(rows), bool) if mask is None else mask.reshape(-1)[rows]
    padded = None if coef is None else np.asarray(coef, dtype=float)
    if padded is not None and padded.shape != tuple(s + 2 for s in shape):
        raise ValueError(f"coefficient shape {padded.shape} != padded grid {tuple(s + 2 for s in shape)}")
    diag = np.zeros(len(rows))
    out_r, out_c, out_v = [], [], []
    cp = 1.0 if padded is None else padded[tuple(multi + 1)]
    for ax in range(dim):
        for step in (-1, 1):
            nb = multi.copy()
            nb[ax] += step
            cn = 1.0 if padded is None else padded[tuple(nb + 1)]
            face = 0.5 * (cp + cn) * np.ones(len(rows)) * scale
            inside = (nb[ax] >= 0) & (nb[ax] < shape[ax])
            nb_flat = np.zeros(len(rows), dtype=np.int64)
            nb_flat[inside] = np.ravel_multi_index(tuple(nb[:, inside]), shape)
            nb_fluid = inside.copy()
            if mask is not None:
                nb_fluid[inside] = mask.reshape(-1)[nb_flat[inside]]
            couple = fluid & nb_fluid
            dirichlet = fluid & ~inside
            diag += np.where(couple | dirichlet, face, 0.0)
            out_r.append(rows[couple])
            out_c.append(nb_flat[couple])
            out_v.append(-face[couple])
    diag = np.where(fluid, diag - shift, 1.0)
    out_r.append(rows)
    out_c.append(rows)
    out_v.append(diag)
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)


def stencil_csr(shape: tuple[int, ...], r0: int = 0, r1: int | None = None, **kw) -> sp.csr_matrix:
    """Rows ``r0:r1`` of the stencil operator as CSR with global column indices."""
    n = int(np.prod(shape))
    r1 = n if r1 is None else r1
    r, c, v = stencil_rows(shape, np.arange(r0, r1), **kw)
    A = sp.csr_matrix((v, (r - r0, c)), shape=(r1 - r0, n))
    A.sum_duplicates()
    A.sort_indices()
    return A
