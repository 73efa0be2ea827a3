"""PETSc side of the structured-grid families: the distributed pieces of a grid system.

The generic distributed helpers (ownership ranges, Mat/Vec from local rows, canonical gathers)
are in :mod:`hybridsolve.la.petsc`.
"""

from __future__ import annotations

import numpy as np

from hybridsolve.la.petsc import mat_from_rows, ownership_range, refill_rows, vec_from_local
from hybridsolve.stack import MPI

__all__ = ["grid_system"]


def grid_system(comm: MPI.Comm, shape: tuple[int, ...], rhs: np.ndarray, *, matfree: bool = False,
                faces: list | None = None, shift: float = 0.0, into=None, **face_kw):
    """The distributed pieces of a structured-grid system: ``(A, b, canonical, coords)``.

    Every rank builds only its own rows, so the system is the same whatever the number of
    ranks. Assembled (AIJ): PETSc's default split of the natural order. Matrix-free
    (``matfree=True``): a PETSc ``Mat`` of python type on whole-plane slabs along axis 0, whose
    ``mult``/``SOR`` are the Numba kernels (:mod:`hybridsolve.operators.petsc`).

    ``into``: an assembled matrix of an earlier call (same sizes): when the new rows have its
    sparsity pattern, only the values are written into it and it is returned as ``A`` (a
    values-only refill, a memory copy); otherwise a new matrix is made.
    """
    from hybridsolve.kernels.stencil import csr_rows
    from hybridsolve.problems.grid import face_coefficients, grid_points
    from hybridsolve.stack import PETSc

    n = int(np.prod(shape))
    if faces is None:
        faces = face_coefficients(shape, **face_kw)
    if matfree:
        from hybridsolve.operators.petsc import create_stencil_mat, slab_range

        p0, p1 = slab_range(comm, shape[0])
        plane = n // shape[0]
        r0, r1 = p0 * plane, p1 * plane
        A = create_stencil_mat(comm, shape, faces, shift=shift)
    else:
        r0, r1 = ownership_range(comm, n)
        rows = csr_rows(faces, shift, r0, r1, PETSc.IntType)
        if into is not None and into.getSize() == (n, n) and refill_rows(into, *rows):
            A = into
        else:
            A = mat_from_rows(comm, n, *rows)
    b = vec_from_local(comm, n, np.asarray(rhs, dtype=float).reshape(-1)[r0:r1])
    rows = np.arange(r0, r1)
    return A, b, rows, grid_points(shape, rows)
