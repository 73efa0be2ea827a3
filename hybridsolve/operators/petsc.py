"""A matrix-free structured-grid operator as a PETSc ``Mat`` of python type.

Its ``mult`` and ``SOR`` call the Numba kernels (``hybridsolve.kernels``), so PETSc's own CG,
Richardson and PCSOR run on it unchanged (``-pc_type sor`` on a matrix-free operator works), as do
``-pc_type jacobi`` (``getDiagonal``) and any KSP that only needs products.

Parallel layout: a row-slab decomposition, whole planes along axis 0 per rank (PETSc's split of
the planes); each ``mult`` exchanges one ghost plane with each neighbour rank. ``SOR`` is
processor-local, like PETSc's for AIJ matrices: each rank sweeps its own slab with the ghost
planes held at their current values (block Jacobi between ranks, SOR inside), so only the local
sweep types (``-pc_sor_local_*``, PCSOR's default) are accepted on more than one rank.
With the lexicographic ordering (default) the sweep is the same as PETSc's ``MatSOR`` on the
assembled matrix with the same row layout; ``-mat_stencil_sor_ordering redblack`` switches to the
red-black ordering (a different, parallel-friendly preconditioner).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.la.petsc import mat_from_local_csr, ownership_range
from hybridsolve.stack import MPI, PETSc

__all__ = ["StencilOperator", "create_stencil_mat", "slab_range"]

_SOR = {"FORWARD": 1, "BACKWARD": 2, "LOCAL_FORWARD": 4, "LOCAL_BACKWARD": 8,
        "ZERO_INITIAL_GUESS": 16, "EISENSTAT": 32, "APPLY_UPPER": 64, "APPLY_LOWER": 128}


def slab_range(comm: MPI.Comm, n0: int) -> tuple[int, int]:
    """The planes ``[p0, p1)`` along axis 0 this rank owns (PETSc's split of ``n0`` planes)."""
    return ownership_range(comm, n0)


class StencilOperator:
    """Python context of the matrix-free 5/7-point operator (see the module docstring).

    Args:
        comm: communicator.
        shape: global grid shape (2 or 3 axes).
        faces: the *global* face coefficients (``problems.grid.face_coefficients``).
        shift: added to the diagonal of non-solid rows.
        ordering: SOR ordering, ``lexicographic`` or ``redblack``.
    """

    def __init__(self, comm: MPI.Comm, shape: Sequence[int], faces: Sequence[np.ndarray],
                 shift: float = 0.0, ordering: str = "lexicographic") -> None:
        from hybridsolve.parallel import configure_threads

        configure_threads()  # Numba threads: this rank's share of the node's cores
        self.comm = comm
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (2, 3):
            raise InputError(f"stencil operator: need a 2-D or 3-D grid, got shape {self.shape}")
        if self.shape[0] < comm.size:
            raise InputError(f"stencil operator: {self.shape[0]} planes along axis 0 cannot be "
                             f"split over {comm.size} ranks")
        self.p0, self.p1 = slab_range(comm, self.shape[0])
        self.local_shape = (self.p1 - self.p0, *self.shape[1:])
        self.plane = int(np.prod(self.shape[1:]))
        # local face coefficients: axis-0 faces p0..p1 (inclusive), the others for the slab
        self.faces = [np.ascontiguousarray(faces[0][self.p0:self.p1 + 1])]
        self.faces += [np.ascontiguousarray(f[self.p0:self.p1]) for f in faces[1:]]
        self.shift = float(shift)
        self.set_ordering(ordering)
        self._idiag: dict[float, np.ndarray] = {}
        self.lo = np.zeros(self.shape[1:])
        self.hi = np.zeros(self.shape[1:])
        self._diag = None
        self.down = comm.rank - 1 if comm.rank > 0 else MPI.PROC_NULL
        self.up = comm.rank + 1 if comm.rank < comm.size - 1 else MPI.PROC_NULL

    def set_ordering(self, ordering: str) -> None:
        if ordering not in ("lexicographic", "redblack"):
            raise InputError(f"stencil operator: SOR ordering {ordering!r} is not lexicographic "
                             "or redblack")
        self.ordering = ordering

    # -- PETSc python Mat protocol --------------------------------------------------------
    def setFromOptions(self, mat: PETSc.Mat) -> None:
        opts = PETSc.Options(mat.getOptionsPrefix())
        self.set_ordering(opts.getString("mat_stencil_sor_ordering", self.ordering))

    def _local(self, vec: PETSc.Vec, readonly: bool = True) -> np.ndarray:
        return vec.getArray(readonly=readonly).reshape(self.local_shape)

    def exchange(self, x: np.ndarray) -> None:
        """Fill the ghost planes ``lo``/``hi`` from the neighbour ranks' edge planes."""
        if self.comm.size == 1:
            return
        self.comm.Sendrecv(np.ascontiguousarray(x[-1]), dest=self.up, sendtag=1,
                           recvbuf=self.lo, source=self.down, recvtag=1)
        self.comm.Sendrecv(np.ascontiguousarray(x[0]), dest=self.down, sendtag=2,
                           recvbuf=self.hi, source=self.up, recvtag=2)

    def mult(self, mat: PETSc.Mat, x: PETSc.Vec, y: PETSc.Vec) -> None:
        from hybridsolve.kernels import stencil

        xa = self._local(x)
        self.exchange(xa)
        stencil.apply(self.faces, xa, self.lo, self.hi, self.shift, self._local(y, False))

    def multTranspose(self, mat: PETSc.Mat, x: PETSc.Vec, y: PETSc.Vec) -> None:
        self.mult(mat, x, y)  # the operator is symmetric

    def diagonal(self) -> np.ndarray:
        if self._diag is None:
            from hybridsolve.kernels.stencil import diagonal

            self._diag = diagonal(self.faces, self.shift)
        return self._diag

    def getDiagonal(self, mat: PETSc.Mat, d: PETSc.Vec) -> None:
        d.getArray()[:] = self.diagonal().reshape(-1)

    def SOR(self, mat: PETSc.Mat, b: PETSc.Vec, omega: float, sortype: int, shift: float,
            its: int, lits: int, x: PETSc.Vec) -> None:
        from hybridsolve.kernels import sor

        flag = int(sortype)
        if flag & (_SOR["EISENSTAT"] | _SOR["APPLY_UPPER"] | _SOR["APPLY_LOWER"]):
            raise PETSc.Error(56)  # PETSC_ERR_SUP: Eisenstat/apply-upper/lower not provided
        if flag & 3 and self.comm.size > 1:
            raise InputError("matrix-free SOR in parallel is processor-local (as for PETSc AIJ): "
                             "use -pc_sor_local_symmetric/forward/backward")
        fw = bool(flag & (_SOR["FORWARD"] | _SOR["LOCAL_FORWARD"]))
        bw = bool(flag & (_SOR["BACKWARD"] | _SOR["LOCAL_BACKWARD"]))
        kind = "symmetric" if fw and bw else "forward" if fw else "backward"
        xa = self._local(x, False)
        ba = self._local(b)
        zero = bool(flag & _SOR["ZERO_INITIAL_GUESS"])
        if zero:
            xa[...] = 0.0
        key = float(shift)
        if key not in self._idiag:
            self._idiag[key] = sor.inverse_diagonal(self.faces, self.shift, key)
        idiag = self._idiag[key]
        for it in range(max(int(its), 1)):
            if it == 0 and zero:
                self.lo[...] = 0.0
                self.hi[...] = 0.0
            else:
                self.exchange(xa)
            for _ in range(max(int(lits), 1)):
                sor.sweep(self.faces, ba, xa, omega=omega, kind=kind, ordering=self.ordering,
                          lo=self.lo, hi=self.hi, i0=self.p0, idiag=idiag)
        if self.comm.size > 1:  # leave the ghosts consistent with x for the next mult
            self.exchange(xa)

    def view(self, mat: PETSc.Mat, viewer: PETSc.Viewer) -> None:
        if viewer.getType() != PETSc.Viewer.Type.ASCII:
            return
        pts = 2 * len(self.shape) + 1
        viewer.printfASCII(f"  hybridsolve matrix-free {pts}-point stencil on a "
                           f"{'x'.join(map(str, self.shape))} grid, diagonal shift {self.shift:g}\n")
        viewer.printfASCII(f"  row slabs along axis 0 over {self.comm.size} rank(s); Numba kernels; "
                           f"SOR ordering {self.ordering} (processor-local)\n")

    # -- hybridsolve --------------------------------------------------------------------
    def assembled(self) -> PETSc.Mat:
        """The same operator as an AIJ matrix with the same row layout (for checks, GAMG)."""
        from hybridsolve.problems.grid import stencil_csr

        n = int(np.prod(self.shape))
        r0, r1 = self.p0 * self.plane, self.p1 * self.plane
        local = stencil_csr(self.shape, r0, r1, faces=self._global_faces(), shift=self.shift)
        return mat_from_local_csr(self.comm, n, local)

    def _global_faces(self) -> list[np.ndarray]:
        """Faces padded to global index space (only this slab's entries are meaningful)."""
        out = []
        for ax, f in enumerate(self.faces):
            shp = list(self.shape)
            shp[ax] += 1
            g = np.zeros(shp)
            if ax == 0:
                g[self.p0:self.p1 + 1] = f
            else:
                g[self.p0:self.p1] = f
            out.append(g)
        return out


def create_stencil_mat(comm: MPI.Comm, shape: Sequence[int], faces: Sequence[np.ndarray],
                       shift: float = 0.0, ordering: str = "lexicographic",
                       prefix: str | None = None) -> PETSc.Mat:
    """A PETSc ``Mat`` of python type for the stencil operator given by its global ``faces``.

    Options (under ``prefix``): ``-mat_stencil_sor_ordering lexicographic|redblack``.
    """
    ctx = StencilOperator(comm, shape, faces, shift, ordering)
    n = int(np.prod(ctx.shape))
    nloc = int(np.prod(ctx.local_shape))
    A = PETSc.Mat().createPython(((nloc, n), (nloc, n)), context=ctx, comm=comm)
    if prefix:
        A.setOptionsPrefix(prefix)
    A.setFromOptions()
    A.setUp()
    A.setOption(PETSc.Mat.Option.SYMMETRIC, True)
    return A
