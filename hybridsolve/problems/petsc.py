"""PETSc side of the problem families: distributed Mat/Vec from local rows, canonical gathers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hybridsolve.stack import MPI, PETSc

__all__ = ["ownership_range", "mat_from_local_csr", "vec_from_local", "gather_canonical",
           "gather_rows_canonical", "gather_csr_canonical"]


def ownership_range(comm: MPI.Comm, n: int) -> tuple[int, int]:
    """PETSc's default contiguous split of ``n`` rows (``PetscSplitOwnership``)."""
    size, rank = comm.size, comm.rank
    local = n // size + (1 if rank < n % size else 0)
    start = rank * (n // size) + min(rank, n % size)
    return start, start + local


def mat_from_local_csr(comm: MPI.Comm, n: int, local: sp.csr_matrix) -> PETSc.Mat:
    """An AIJ matrix whose owned rows are ``local`` (CSR, global column indices)."""
    local = local.tocsr()
    nloc = local.shape[0]
    A = PETSc.Mat().createAIJ(
        size=((nloc, n), (nloc, n)),
        csr=(local.indptr.astype(PETSc.IntType), local.indices.astype(PETSc.IntType),
             local.data.astype(PETSc.ScalarType)),
        comm=comm,
    )
    A.assemble()
    return A


def vec_from_local(comm: MPI.Comm, n: int, local: np.ndarray) -> PETSc.Vec:
    """A Vec whose owned entries are ``local`` (copied)."""
    v = PETSc.Vec().createMPI((len(local), n), comm=comm)
    v.setArray(np.asarray(local, dtype=PETSc.ScalarType))
    return v


def _canonical_all(comm: MPI.Comm, canonical: np.ndarray) -> np.ndarray:
    return np.concatenate(comm.allgather(np.asarray(canonical, dtype=np.int64)))


def gather_canonical(vec: PETSc.Vec, canonical: np.ndarray, n: int) -> np.ndarray:
    """The whole vector in canonical order on every rank."""
    comm = vec.getComm().tompi4py()
    r0, r1 = vec.getOwnershipRange()
    local = np.asarray(vec.getArray(readonly=True))[: r1 - r0]
    out = np.empty(n, dtype=local.dtype)
    idx = _canonical_all(comm, canonical)
    out[idx] = np.concatenate(comm.allgather(local))
    return out


def gather_rows_canonical(comm: MPI.Comm, local_rows: np.ndarray, canonical: np.ndarray,
                          n: int) -> np.ndarray:
    """Stack each rank's row block (e.g. coordinates) into canonical order, on every rank."""
    rows = np.concatenate(comm.allgather(np.asarray(local_rows)))
    out = np.empty((n, *rows.shape[1:]), dtype=rows.dtype)
    out[_canonical_all(comm, canonical)] = rows
    return out


def gather_csr_canonical(A: PETSc.Mat, canonical: np.ndarray) -> sp.csr_matrix:
    """The whole matrix as SciPy CSR in canonical numbering, on every rank (small systems)."""
    comm = A.getComm().tompi4py()
    n = A.getSize()[0]
    if A.getType() == "python":  # a matrix-free operator: gather its assembled twin
        assembled = A.getPythonContext().assembled()
        try:
            return gather_csr_canonical(assembled, canonical)
        finally:
            assembled.destroy()
    petsc_to_canon = _canonical_all(comm, canonical)  # PETSc global row -> canonical index
    indptr, indices, data = A.getValuesCSR()
    rows_local = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    r = np.asarray(canonical, dtype=np.int64)[rows_local]
    c = petsc_to_canon[np.asarray(indices, dtype=np.int64)]
    R = np.concatenate(comm.allgather(r))
    C = np.concatenate(comm.allgather(c))
    V = np.concatenate(comm.allgather(np.asarray(data)))
    M = sp.csr_matrix((V, (R, C)), shape=(n, n))
    M.sum_duplicates()
    M.sort_indices()
    return M


def grid_system(comm: MPI.Comm, shape: tuple[int, ...], rhs: np.ndarray, *, matfree: bool = False,
                faces: list | None = None, shift: float = 0.0, **face_kw):
    """The distributed pieces of a structured-grid system: ``(A, b, canonical, coords)``.

    Every rank builds only its own rows, so the system is the same whatever the number of
    ranks. Assembled (AIJ): PETSc's default split of the natural order. Matrix-free
    (``matfree=True``): a PETSc ``Mat`` of python type on whole-plane slabs along axis 0, whose
    ``mult``/``SOR`` are the Numba kernels (:mod:`hybridsolve.operators.petsc`).
    """
    from hybridsolve.problems.grid import face_coefficients, grid_points, stencil_csr

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
        A = mat_from_local_csr(comm, n, stencil_csr(shape, r0, r1, faces=faces, shift=shift))
    b = vec_from_local(comm, n, np.asarray(rhs, dtype=float).reshape(-1)[r0:r1])
    rows = np.arange(r0, r1)
    return A, b, rows, grid_points(shape, rows)
