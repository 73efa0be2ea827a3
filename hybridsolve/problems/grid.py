"""Structured-grid operators (pure numpy/SciPy): variable-coefficient 5/7-point stencils.

Unknowns sit at the interior points ``(i + 1) h``, ``h = 1 / (n + 1)`` of the unit box, in C
order (last axis fastest); points outside the box carry the Dirichlet value zero. A coefficient
field, when given, lives on the padded grid (``n + 2`` points per axis, boundary included) and the
coefficient on the face between two points is their arithmetic mean. A fluid mask marks solid
cells: a solid cell's row is the identity (decoupled, ``x = 0`` there) and faces between fluid and
solid carry no flux (homogeneous Neumann on obstacle walls).

The operator is defined once, by its *face coefficients* (:func:`face_coefficients`); the
assembled CSR rows (:func:`stencil_csr`, a Numba kernel) and the matrix-free kernels
(``hybridsolve.kernels``) both read them, so the two are the same operator by construction:

    (A x)_p = d_p x_p - sum_faces w_f x_neighbour,   d_p = sum_faces w_f + shift  (1 if the sum is 0)

A point whose face coefficients are all zero (a solid cell) gets the identity row.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["face_coefficients", "stencil_rows", "stencil_csr", "grid_points"]


def tensor_grid(coords: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, list[np.ndarray]] | None:
    """When the points (rows of ``coords``, ``(n, dim)``) form a full tensor grid: its
    ``shape``, the flat C-order grid index of each point (axis 0 slowest) and the per-axis
    coordinates; else None. Coordinates are compared after rounding to 12 digits."""
    coords = np.asarray(coords, dtype=float)
    axes = [np.unique(np.round(coords[:, a], 12)) for a in range(coords.shape[1])]
    if int(np.prod([len(a) for a in axes])) != len(coords):
        return None
    keys = tuple(np.round(coords[:, a], 12) for a in reversed(range(coords.shape[1])))
    order = np.lexsort(keys)              # grid point g (axis 0 slowest) holds point order[g]
    index = np.empty(len(order), dtype=np.int64)
    index[order] = np.arange(len(order))
    return tuple(len(a) for a in axes), index, axes


def grid_points(shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
    """Coordinates of the unknowns ``rows`` (flat indices), shape ``(len(rows), dim)``."""
    multi = np.unravel_index(rows, shape)
    return np.stack([(m + 1.0) / (s + 1.0) for m, s in zip(multi, shape)], axis=1)


def face_coefficients(shape: tuple[int, ...], coef: np.ndarray | None = None,
                      mask: np.ndarray | None = None, scale: float | None = None) -> list[np.ndarray]:
    """Face coefficients ``w[ax]`` of the stencil, one array per axis.

    ``w[ax]`` has ``shape[ax] + 1`` entries along ``ax``: entry ``p`` is the face between points
    ``p - 1`` and ``p`` (``p = 0`` and ``p = n`` are the Dirichlet boundary faces). Faces touching
    a solid cell are zero.

    Args:
        shape: unknowns per axis (2 or 3 axes).
        coef: coefficient on the padded grid (``n + 2`` per axis) or ``None`` for 1.
        mask: fluid mask of ``shape`` (True = fluid) or ``None``.
        scale: factor on every face, default ``1 / h^2`` with ``h = 1 / (n_0 + 1)``.
    """
    shape = tuple(int(s) for s in shape)
    dim = len(shape)
    if scale is None:
        scale = float(shape[0] + 1) ** 2
    if coef is None:
        padded = np.ones(tuple(s + 2 for s in shape))
    else:
        padded = np.asarray(coef, dtype=float)
        if padded.shape != tuple(s + 2 for s in shape):
            raise ValueError(f"coefficient shape {padded.shape} != padded grid "
                             f"{tuple(s + 2 for s in shape)}")
    fluid_p = None
    if mask is not None:
        fluid_p = np.ones(tuple(s + 2 for s in shape), dtype=bool)  # outside counts as fluid
        fluid_p[tuple(slice(1, -1) for _ in shape)] = mask
    faces = []
    for ax in range(dim):
        # faces along ax: between padded indices p and p+1, p = 0..n; other axes interior
        lo = [slice(1, -1)] * dim
        hi = [slice(1, -1)] * dim
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        w = scale * 0.5 * (padded[tuple(lo)] + padded[tuple(hi)])
        if fluid_p is not None:
            w = w * (fluid_p[tuple(lo)] & fluid_p[tuple(hi)])
        faces.append(np.ascontiguousarray(w))
    return faces


def stencil_rows(shape: tuple[int, ...], rows: np.ndarray, faces: list[np.ndarray] | None = None,
                 shift: float = 0.0, **face_kw):
    """COO triplets (row, col, value) of the stencil operator for the contiguous flat ``rows``.

    ``faces`` from :func:`face_coefficients` (built from ``face_kw`` when ``None``); ``shift`` is
    added to the diagonal of non-solid rows. The rows come from :func:`stencil_csr`.
    """
    rows = np.asarray(rows, dtype=np.int64)
    r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
    if not np.array_equal(rows, np.arange(r0, r1)):
        raise ValueError("stencil_rows needs contiguous rows r0..r1-1")
    A = stencil_csr(shape, r0, r1, faces=faces, shift=shift, **face_kw)
    return np.repeat(np.arange(r0, r1), np.diff(A.indptr)), A.indices.astype(np.int64), A.data


def stencil_csr(shape: tuple[int, ...], r0: int = 0, r1: int | None = None,
                faces: list[np.ndarray] | None = None, shift: float = 0.0,
                **face_kw) -> sp.csr_matrix:
    """Rows ``r0:r1`` of the stencil operator as CSR with global, sorted column indices (the
    Numba kernel :func:`hybridsolve.kernels.stencil.csr_rows`, which the assembled families use;
    zero faces are left out)."""
    from hybridsolve.kernels.stencil import csr_rows

    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    r1 = n if r1 is None else r1
    if faces is None:
        faces = face_coefficients(shape, **face_kw)
    indptr, indices, data = csr_rows(faces, shift, r0, r1)
    return sp.csr_matrix((data, indices, indptr), shape=(r1 - r0, n))
