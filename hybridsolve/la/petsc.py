"""Distributed linear algebra on PETSc: layouts, Mat/Vec from local rows, canonical gathers,
ghost updates, operator identity and the block multivector.

Imports only :mod:`hybridsolve.stack` (and numpy/scipy), so every other module may use it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hybridsolve.stack import MPI, PETSc

__all__ = ["mat_from_rows", "refill_rows", "ownership_offset", "ownership_range", "mat_from_local_csr", "vec_from_local", "gather_canonical",
           "gather_rows_canonical", "gather_csr_canonical", "operator_key", "assemble_ghosts",
           "scatter_ghosts", "MultiVec", "combine"]


# --- layouts and construction --------------------------------------------------------------------
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


_PATTERN = "hybridsolve.csr_pattern"


def mat_from_rows(comm: MPI.Comm, n: int, indptr: np.ndarray, indices: np.ndarray,
                  data: np.ndarray) -> PETSc.Mat:
    """An AIJ matrix whose owned rows are the CSR arrays (global column indices), set up for
    values-only refills (:func:`refill_rows`): PETSc's COO preallocation, pattern remembered."""
    nloc = len(indptr) - 1
    r0 = ownership_offset(comm, nloc)
    A = PETSc.Mat().createAIJ(size=((nloc, n), (nloc, n)), comm=comm)
    rows = np.repeat(np.arange(r0, r0 + nloc, dtype=PETSc.IntType), np.diff(indptr))
    # PETSc may overwrite the index arrays it is given (MPIAIJ remaps them): give it a copy
    A.setPreallocationCOO(rows, np.array(indices, dtype=PETSc.IntType, copy=True))
    A.setValuesCOO(np.asarray(data, dtype=PETSc.ScalarType))
    A.assemble()
    A.getDict()[_PATTERN] = (np.array(indptr, copy=True), np.array(indices, copy=True))
    return A


def refill_rows(A: PETSc.Mat, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> bool:
    """Write new values into ``A`` (made by :func:`mat_from_rows`) when the rows have its
    sparsity pattern on every rank; returns whether it did (else ``A`` is unchanged)."""
    pattern = A.getDict().get(_PATTERN)
    same = (pattern is not None and np.array_equal(pattern[0], indptr)
            and np.array_equal(pattern[1], indices))
    comm = A.getComm().tompi4py()
    if comm.size > 1:
        same = bool(comm.allreduce(same, op=MPI.LAND))
    if same:
        A.setValuesCOO(np.asarray(data, dtype=PETSc.ScalarType))
        A.assemble()
    return same


def ownership_offset(comm: MPI.Comm, nloc: int) -> int:
    """The first global row of this rank when the ranks own ``nloc`` consecutive rows each."""
    if comm.size == 1:
        return 0
    return int(comm.exscan(nloc) or 0)


def vec_from_local(comm: MPI.Comm, n: int, local: np.ndarray) -> PETSc.Vec:
    """A Vec whose owned entries are ``local`` (copied)."""
    v = PETSc.Vec().createMPI((len(local), n), comm=comm)
    v.setArray(np.asarray(local, dtype=PETSc.ScalarType))
    return v


def operator_key(A: PETSc.Mat) -> tuple[int, int]:
    """Identity and state of an operator: PETSc's unique object id (never reused, unlike an
    address) and its state counter, which PETSc increases on every change of the values."""
    return (A.getId(), A.stateGet())


# --- ghosted vectors (DOLFINx assembly) ----------------------------------------------------------
def assemble_ghosts(vec: PETSc.Vec) -> None:
    """Add the ghost contributions of an assembled ghosted vector to their owners."""
    vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)


def scatter_ghosts(vec: PETSc.Vec) -> None:
    """Copy owned values to the ghost copies on the other ranks."""
    vec.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)


# --- gathers in a canonical numbering --------------------------------------------------------------
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


def gather_csr_canonical(A: PETSc.Mat, canonical: np.ndarray,
                         root: int | None = None) -> sp.csr_matrix | None:
    """The whole matrix as SciPy CSR in canonical numbering, on every rank (small systems), or
    only on rank ``root`` (the others get None: nothing but their own rows is sent there)."""
    comm = A.getComm().tompi4py()
    n = A.getSize()[0]
    if A.getType() == "python":  # a matrix-free operator: gather its assembled twin
        assembled = A.getPythonContext().assembled()
        try:
            return gather_csr_canonical(assembled, canonical, root)
        finally:
            assembled.destroy()
    petsc_to_canon = _canonical_all(comm, canonical)  # PETSc global row -> canonical index
    indptr, indices, data = A.getValuesCSR()
    rows_local = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    r = np.asarray(canonical, dtype=np.int64)[rows_local]
    c = petsc_to_canon[np.asarray(indices, dtype=np.int64)]
    if root is None:
        R = np.concatenate(comm.allgather(r))
        C = np.concatenate(comm.allgather(c))
        V = np.concatenate(comm.allgather(np.asarray(data)))
    else:
        parts = [comm.gather(a, root=root) for a in (r, c, np.asarray(data))]
        if comm.rank != root:
            return None
        R, C, V = (np.concatenate(p) for p in parts)
    M = sp.csr_matrix((V, (R, C)), shape=(n, n))
    M.sum_duplicates()
    M.sort_indices()
    return M


# --- the block multivector -------------------------------------------------------------------------
class MultiVec:
    """``rows`` distributed vectors stored as one C-contiguous ``(rows, n_local)`` array, with a
    PETSc Vec wrapping each row (no copies).

    The dense work of a block method (Gram matrices, new bases as combinations of old ones) is
    then one BLAS call on :attr:`data` plus one reduction, instead of one Vec operation per vector.
    """

    def __init__(self, like: PETSc.Vec, rows: int) -> None:
        r0, r1 = like.getOwnershipRange()
        self.comm = like.getComm()
        self.n = like.getSize()
        self.data = np.zeros((rows, r1 - r0), dtype=PETSc.ScalarType)
        self.vecs = [PETSc.Vec().createWithArray(self.data[i], size=(r1 - r0, self.n),
                                                 comm=self.comm) for i in range(rows)]

    def __len__(self) -> int:
        return len(self.vecs)

    def allreduce(self, local: np.ndarray) -> np.ndarray:
        """Sum a local array over the ranks of the vectors' communicator."""
        if self.comm.getSize() == 1:
            return local
        return self.comm.tompi4py().allreduce(local)

    def dot(self, rows: slice, v: PETSc.Vec) -> np.ndarray:
        """``block[rows] @ v`` (one entry per row), summed over ranks."""
        return self.allreduce(self.data[rows] @ v.getArray(readonly=True))

    def gram(self, other: "MultiVec", rows_self=slice(None), rows_other=slice(None)) -> np.ndarray:
        """``self[rows] other[rows]^T``, summed over ranks."""
        return self.allreduce(self.data[rows_self] @ other.data[rows_other].T)

    def changed(self) -> None:
        """Tell PETSc the arrays changed behind its back (no stale cached norms)."""
        for v in self.vecs:
            v.stateIncrease()

    def destroy(self) -> None:
        for v in self.vecs:
            v.destroy()
        self.vecs = []


def combine(like: PETSc.Vec, parts: list[tuple[np.ndarray, np.ndarray]],
            out: MultiVec | None = None) -> MultiVec:
    """A block whose rows are ``sum_p coeff_p^T data_p`` (``coeff_p``: rows_p x new), written
    into ``out`` when it has the right shape (no new Vec wrappers), else into a new block."""
    new = parts[0][0].shape[1]
    if out is None or len(out) != new or out.n != like.getSize():
        if out is not None:
            out.destroy()
        out = MultiVec(like, new)
    first = True
    for coeff, data in parts:
        if not coeff.size:
            continue
        cT = np.ascontiguousarray(coeff.T)
        if first:
            np.matmul(cT, data, out=out.data)
            first = False
        else:
            out.data += cT @ data
    if first:
        out.data[...] = 0.0
    out.changed()
    return out
