"""A two-level PC for sequences of SPD systems: ICC (or any PC) plus a sparse coarse space.

``-pc_type python -pc_python_type hybridsolve.solvers.twolevel.TwoLevelPC`` in any KSP (CG
above all), from a driver script or a DOLFINx ``LinearProblem``'s ``petsc_options``.

The coarse space ``W`` (``n x n_c``, sparse) is built once from the first operator: the graph
of the matrix is cut into aggregates (balls of ``-pc_twolevel_radius`` edges, grown greedily,
inside each rank's rows) and the piecewise-constant aggregate vectors are smoothed by
``-pc_twolevel_smooth`` damped-Jacobi steps (smoothed aggregation, Vaněk, Mandel and Brezina
1996). Rows without neighbours (Dirichlet identity rows, solid cells) belong to no aggregate.
Along a sequence of operators with one sparsity pattern (datagen's chains, a time loop) ``W``
is kept and only numbers are refreshed: the coarse operator ``E = W^T A W`` by PETSc's
``MatPtAP`` into the existing matrix, its Cholesky factorisation numerically, and the inner PC
(ICC: numeric factorisation only). A different pattern or size builds everything anew.

Each application is the balancing (BNN) two-level preconditioner, symmetric positive definite
when ``A`` and the inner PC ``S`` are::

    Q = W E^{-1} W^T,    M^{-1} = Q + (I - Q A) S (I - A Q)

(Tang, Nabben, Vuik, Erlangga, J. Sci. Comput. 2009, who compare it with deflation: as
robust, and insensitive to inexact coarse solves). All of it is PETSc's compiled code (MatMult,
MatMultTranspose, the inner PC, a Cholesky solve); Python only sequences the calls.

Options (prefix ``-<prefix>pc_twolevel_``): ``radius`` (3), ``smooth`` (1), ``omega``
(Jacobi damping, 2/3), ``rebuild`` (a new space for every operator, default false), ``type``
(``bnn``, default, or ``additive``: ``S + Q``, one coarse solve and no extra products per
application, more iterations; A-DEF2 was tried and dropped: CG stalled with it); the inner
PC reads ``-<prefix>pc_twolevel_sub_`` options (default ICC on one rank, block Jacobi with
ILU(0) per rank on several), the coarse solver ``-<prefix>pc_twolevel_coarse_`` (default
Cholesky; MUMPS on several ranks). Aggregates do not cross ranks, so iteration counts change
with the number of ranks (as for PETSc's block Jacobi); solutions agree to the tolerance.
"""

from __future__ import annotations

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.solvers.base import PythonPC
from hybridsolve.stack import PETSc

__all__ = ["TwoLevelPC", "coarse_space"]


def coarse_space(P: PETSc.Mat, radius: int = 3, smooth: int = 1, omega: float = 2.0 / 3.0
                 ) -> PETSc.Mat:
    """The smoothed-aggregation coarse space of ``P`` as a distributed AIJ ``n x n_c`` Mat."""
    from hybridsolve.kernels.csr import aggregate

    comm = P.getComm()
    r0, r1 = P.getOwnershipRange()
    ia, ja, _ = P.getValuesCSR()
    agg, count = aggregate(ia.astype(np.int64), ja.astype(np.int64), int(radius), int(r0))
    mpi = comm.tompi4py()
    c0 = mpi.exscan(count) if mpi.size > 1 else 0
    c0 = int(c0 or 0)
    total = int(mpi.allreduce(count)) if mpi.size > 1 else int(count)
    if total == 0:
        raise InputError("the matrix has no couplings to aggregate (a diagonal matrix needs no "
                         "coarse space)")
    member = agg >= 0
    indptr = np.concatenate([[0], np.cumsum(member)]).astype(PETSc.IntType)
    cols = (agg[member] + c0).astype(PETSc.IntType)
    W = PETSc.Mat().createAIJ(size=((r1 - r0, P.getSize()[0]), (int(count), total)),
                              csr=(indptr, cols, np.ones(cols.size, dtype=PETSc.ScalarType)),
                              comm=comm)
    W.assemble()
    if smooth:
        d = P.getDiagonal()
        darr = d.getArray(readonly=True)
        if not np.all(np.isfinite(darr)) or np.any(darr <= 0):
            bad = int(np.argmax(~(darr > 0))) + r0
            d.destroy()
            W.destroy()
            raise InputError(f"the two-level PC needs an SPD matrix: the diagonal is not positive "
                             f"(row {bad})")
        d.reciprocal()
        d.scale(-float(omega))
        for _ in range(int(smooth)):   # W <- (I - omega D^{-1} A) W
            AW = P.matMult(W)
            AW.diagonalScale(L=d)
            AW.axpy(1.0, W, structure=PETSc.Mat.Structure.SUBSET_NONZERO_PATTERN)
            W.destroy()
            W = AW
        d.destroy()
    return W


class TwoLevelPC(PythonPC):
    """Balancing two-level PC with a smoothed-aggregation coarse space kept along a sequence
    (see the module docstring)."""

    name = "two-level"
    options_key = "twolevel"
    info_key = "twolevel"

    def __init__(self) -> None:
        super().__init__()
        self.radius, self.smooth, self.omega, self.rebuild = 3, 1, 2.0 / 3.0, False
        self.kind = "bnn"
        self.W = self.WT = self.E = self.coarse = self.sub = None
        self._pattern = None
        self._work: tuple = ()

    def configure(self) -> None:
        self.radius = self.option("radius", 3)
        self.smooth = self.option("smooth", 1)
        self.omega = self.option("omega", 2.0 / 3.0)
        self.rebuild = self.option("rebuild", False)
        self.kind = self.option("type", "bnn")
        if self.kind not in ("bnn", "additive"):
            raise InputError(f"-pc_twolevel_type must be bnn or additive, got {self.kind!r}")
        if self.radius < 1 or self.smooth < 0 or not 0 < self.omega < 2:
            raise InputError(f"need radius >= 1, smooth >= 0 and 0 < omega < 2; got radius "
                             f"{self.radius}, smooth {self.smooth}, omega {self.omega}")

    # -- set-up ------------------------------------------------------------------------------
    def _signature(self, P) -> tuple:
        """What must agree for the numbers-only refresh: sizes and the nonzero count (all ranks)."""
        nz = int(P.getInfo(PETSc.Mat.InfoType.LOCAL)["nz_allocated"])
        mpi = P.getComm().tompi4py()
        nz = tuple(mpi.allgather(nz)) if mpi.size > 1 else (nz,)
        return P.getSizes(), nz

    def _free(self) -> None:
        for obj in (self.W, self.WT, self.E, self.coarse, self.sub, *self._work):
            if obj is not None:
                obj.destroy()
        self.W = self.WT = self.E = self.coarse = self.sub = None
        self._work = ()
        self._pattern = None

    def initialize(self, pc) -> None:
        self._free()
        _, P = pc.getOperators()
        comm = P.getComm()
        parallel = comm.getSize() > 1
        with self.event("coarse space"):
            self.W = coarse_space(P, self.radius, self.smooth, self.omega)
        self.E = P.ptap(self.W)
        self.E.setOption(PETSc.Mat.Option.SPD, True)
        self.coarse = PETSc.KSP().create(comm)
        self.coarse.setOptionsPrefix(f"{self.prefix}pc_twolevel_coarse_")
        self.coarse.setType("preonly")
        cpc = self.coarse.getPC()
        cpc.setType("cholesky")
        if parallel:
            cpc.setFactorSolverType("mumps")
        else:
            cpc.setFactorOrdering("nd")
        self.coarse.setOperators(self.E)
        self.coarse.setFromOptions()
        self.sub = PETSc.PC().create(comm)
        self.sub.setOptionsPrefix(f"{self.prefix}pc_twolevel_sub_")
        self.sub.setType("bjacobi" if parallel else "icc")
        self.sub.setOperators(P, P)
        self.sub.setFromOptions()
        self.WT = self.W.transpose(PETSc.Mat())   # row-oriented: MatMult, not MultTranspose
        wc, _ = self.W.createVecs()
        self._work = (wc, wc.duplicate(), P.createVecLeft(), P.createVecLeft(), P.createVecLeft())
        self._pattern = self._signature(P)
        self._refresh(P)
        self.count("builds")
        self.note("coarse_size", int(self.W.getSize()[1]))

    def update(self, pc) -> None:
        _, P = pc.getOperators()
        if self.W is None or self.rebuild or self._signature(P) != self._pattern:
            self.initialize(pc)
            return
        with self.event("coarse refresh"):
            P.ptap(self.W, result=self.E)
        self.sub.setOperators(P, P)
        self._refresh(P)
        self.count("refreshes")

    def _refresh(self, P) -> None:
        with self.event("factorisations"):
            self.coarse.setOperators(self.E)
            self.coarse.setUp()
            self.sub.setUp()
        self._A = P

    # -- application -------------------------------------------------------------------------
    def _coarse(self, r, out) -> None:
        """``out = W E^{-1} W^T r``."""
        wr, we = self._work[0], self._work[1]
        self.WT.mult(r, wr)
        self.coarse.solve(wr, we)
        self.W.mult(we, out)

    def apply_pc(self, pc, x, y) -> None:
        _, _, r, u, v = self._work
        A = self._A
        if self.kind == "additive":
            self._coarse(x, v)                 # v = Q x
            self.sub.apply(x, y)               # y = S x
            y.axpy(1.0, v)                     # y = (S + Q) x
            self.count("applications")
            return
        self._coarse(x, y)                 # y = Q x
        A.mult(y, r)
        r.aypx(-1.0, x)                    # r = (I - A Q) x
        self.sub.apply(r, u)               # u = S r
        A.mult(u, v)
        self._coarse(v, r)                 # r = Q A u
        y.axpy(1.0, u)
        y.axpy(-1.0, r)                    # y = Q x + (I - Q A) u
        self.count("applications")

    def describe(self) -> str:
        size = "not built" if self.W is None else f"coarse size {self.W.getSize()[1]}"
        sub = self.sub.getType() if self.sub is not None else "-"
        form = "balancing" if self.kind == "bnn" else "additive"
        return (f"two-level ({form}) PC: smoothed aggregates, radius {self.radius}, "
                f"{self.smooth} Jacobi smoothing step(s), {size}; inner PC {sub}")

    def reset(self, pc) -> None:
        super().reset(pc)
        self._free()
