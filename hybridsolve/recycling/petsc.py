"""Recycling Krylov methods as PETSc KSPs of python type.

Both keep a recycle space across ``KSPSolve`` calls of one KSP, also when the operator changes
between solves (the sequence of related systems of SKR): for each new operator the images
``A U`` are recomputed (k products) before the solve uses them. Select by options::

    -ksp_type python -ksp_python_type hybridsolve.recycling.petsc.GCRODR \\
        -ksp_gcrodr_m 40 -ksp_gcrodr_k 20
    -ksp_type python -ksp_python_type hybridsolve.recycling.petsc.RecyclingCG \\
        -ksp_rcg_k 20 -ksp_rcg_store 40

(or ``KrylovSolver(method="gcrodr")`` / ``method="rcg"``). Monitors (``-ksp_monitor``),
``-ksp_converged_reason``, ``-ksp_view`` and the convergence history work as for PETSc's own KSPs.

Both are :class:`~hybridsolve.solvers.base.PythonKSP` subclasses: the recycle space survives
``KSPSetFromOptions`` (a driver that calls ``ksp.setFromOptions()`` before each solve, DOLFINx's
``LinearProblem``), counters reach ``SolveResult.info`` and ``-ksp_view``, and the phases
(orthogonalisation, recycle update, operator update) are ``-log_view`` events.

Bases are stored as blocks (:class:`~hybridsolve.la.petsc.MultiVec`): one ``(rows, n_local)``
array whose rows PETSc sees as Vecs, so that the dense work of recycling (Gram matrices, new
bases as linear combinations of old ones) is one BLAS call per block instead of one Vec
operation per vector.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg as sla

from hybridsolve.errors import InputError, NotSPDError
from hybridsolve.la.petsc import MultiVec, combine
from hybridsolve.solvers.base import PythonKSP
from hybridsolve.stack import PETSc

__all__ = ["GCRODR", "RecyclingCG"]


class _RecyclingKSP(PythonKSP):
    """What both recycling KSPs share: the recycle space ``U`` with ``AU = A U`` for the current
    operator, its spare blocks, and work blocks allocated once per vector size."""

    def __init__(self) -> None:
        super().__init__()
        self.k = 20
        self.U: MultiVec | None = None     # recycle space (solution space)
        self.AU: MultiVec | None = None    # A U for the current operator
        self._spareU = self._spareC = None
        self._work: dict[str, MultiVec] = {}
        self.stats = {"solves": 0, "recycled_solves": 0, "iterations": 0}

    def forget(self) -> None:
        super().forget()
        for blk in (self.U, self.AU, self._spareU, self._spareC):
            if blk is not None:
                blk.destroy()
        self.U = self.AU = self._spareU = self._spareC = None

    def _replace_space(self, newU: MultiVec, newC: MultiVec) -> None:
        """Install a new (U, A U) pair; the old blocks become the spares the next update
        writes into, so no Vec wrappers are created in the steady state."""
        oldU, oldC = self.U, self.AU
        self.U, self.AU = newU, newC
        self._spareU, self._spareC = oldU, oldC

    def work(self, name: str, like: PETSc.Vec, rows: int) -> MultiVec:
        """A work block allocated once per KSP and vector size."""
        blk = self._work.get(name)
        if blk is None or len(blk) < rows or blk.n != like.getSize():
            if blk is not None:
                blk.destroy()
            blk = self._work[name] = MultiVec(like, rows)
        return blk

    @property
    def size(self) -> int:
        return 0 if self.U is None else len(self.U)

    def initialize(self, ksp, A) -> None:
        self._check_size(A)

    def update(self, ksp, A) -> None:
        """A new operator: ``AU = A U`` (k products)."""
        self._check_size(A)
        if not self.size:
            return
        if self.AU is None or len(self.AU) != len(self.U):
            if self.AU is not None:
                self.AU.destroy()
            self.AU = MultiVec(self.U.vecs[0], len(self.U))
        for u, au in zip(self.U.vecs, self.AU.vecs):
            A.mult(u, au)

    def _check_size(self, A) -> None:
        n = A.getSize()[0]
        if self.U is not None and self.U.n != n:
            raise InputError(f"the operator's size changed from {self.U.n} to {n} inside a "
                             "sequence; call ksp.reset() (or use a new KSP)")

    def solve_info(self) -> dict:
        info = super().solve_info()
        info["space"] = self.size
        return info


def _update_every(value: str) -> int:
    """``-ksp_gcrodr_update``: ``end`` -> 0, ``cycle`` -> 1, ``every_<c>`` -> c."""
    v = str(value).strip().lower()
    if v == "end":
        return 0
    if v == "cycle":
        return 1
    if v.startswith("every_") and v[6:].isdigit() and int(v[6:]) >= 1:
        return int(v[6:])
    raise InputError(f"-ksp_gcrodr_update {value!r}: expected end, cycle or every_<c> with a "
                     "count c >= 1 (e.g. every_2)")


def _independent_qr(M: np.ndarray, tol: float = 1e-12):
    """Rank-revealing QR of a small dense matrix: ``M[:, cols] = Q R`` exactly for the kept
    columns (column-pivoted QR, columns with ``|R_ii| <= tol |R_00|`` dropped), so whatever is
    built from ``M[:, cols]`` and ``R^-1`` stays consistent."""
    if M.shape[1] == 0:
        return M[:, :0], np.zeros((0, 0)), np.zeros(0, dtype=int)
    Q, R, piv = sla.qr(M, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    r = int(np.count_nonzero(d > tol * d[0])) if d[0] > 0 else 0
    return Q[:, :r], R[:r, :r], piv[:r]


class GCRODR(_RecyclingKSP):
    """GCRO-DR(m, k) (Parks, de Sturler, Mackey, Johnson, Maiti, SIAM J. Sci. Comput. 2006).

    Flexible, right-preconditioned form: each cycle runs ``m - k`` Arnoldi steps on
    ``(I - C C^T) A M^{-1}`` and keeps the preconditioned vectors ``Z = M^{-1} V``, so any PETSc
    PC works, even one that changes between applications. The recycle space ``U`` (``C = A U``
    with orthonormal columns) survives into the next ``solve``; for a new operator ``A U`` is
    recomputed and orthonormalised (Cholesky-QR2, both ``U`` and ``C`` transformed alike); for an
    unchanged operator that QR is skipped.

    **Norms.** Within a cycle the norm monitored (``-ksp_monitor``, the history) and tested is
    the Arnoldi least-squares residual estimate ``|g_{j+1}|`` (the Givens rotations make it free
    at each step); with right preconditioning it equals the true residual ``||b - A x||`` in
    exact arithmetic. At the end of every cycle (also when the estimate met the tolerance) the
    true residual ``||b - A x||`` is computed and tested; convergence is reported only when the
    true residual meets the tolerance, otherwise the iteration goes on with a new cycle.
    ``-ksp_rtol`` is relative to the initial residual, as for PETSc's KSPs.

    **Cost per iteration.** One PC application, one product, and the orthogonalisation of the
    new vector against the block ``[C, V_j]`` by classical Gram–Schmidt on the stored block
    (``-ksp_gcrodr_orthogonalization``): ``cgs2`` (default) two passes, one BLAS GEMV and one
    reduction each, the new vector's norm in the second pass's reduction; ``cgs`` one pass and
    a reduction for the norm (what PETSc's GMRES/FGMRES do by default, with the loss of
    orthogonality that goes with it).

    **Recycle-space update** (the k harmonic Ritz vectors of smallest harmonic Ritz value over
    ``[U, Z_j]``, ``-ksp_gcrodr_update``): ``cycle`` after every cycle (the published method:
    deflated restarting within a solve); ``every_<c>`` after every c-th cycle of a solve, at the
    end of a solve, and after every cycle while there is no recycle space yet; ``end`` only at
    the end of a solve (and while there is no space yet). The default ``every_2`` halves the
    update cost of ``cycle`` and keeps its robustness: on an indefinite nonsymmetric system
    without PC, ``end`` (a fixed space between restarts) stagnates where ``every_2`` converges
    in as many iterations as ``cycle``; on sorted sequences ``end`` is the cheapest per
    iteration but needs 15-35% more iterations (``benchmarks/results/gcrodr_speed.md``).
    Columns that the update or the QR finds dependent are dropped so that ``C = A U`` and
    ``C^T C = I`` still hold (``dropped`` counts them).

    Options: ``-ksp_gcrodr_m`` (default 40), ``-ksp_gcrodr_k`` (default 20),
    ``-ksp_gcrodr_update`` (``end``, ``cycle``, ``every_<c>``; default ``every_2``),
    ``-ksp_gcrodr_orthogonalization`` (``cgs2``, ``cgs``). Counters (in
    ``SolveResult.info["gcrodr"]`` and ``-ksp_view``): ``qr`` (QRs of ``A U``),
    ``space_updates``, ``cycles``, ``dropped``.
    """

    name = "GCRO-DR"
    options_key = "gcrodr"
    info_key = "gcrodr"
    #: ``-ksp_gcrodr_orthogonalization`` values
    ORTHOGONALIZATIONS = ("cgs2", "cgs")

    def __init__(self) -> None:
        super().__init__()
        self.m = 40
        self.update_mode = "every_2"
        self.orthogonalization = "cgs2"
        self._every = 2
        self._c_orthonormal = False   # C = A U orthonormal for the current operator
        for key in ("qr", "space_updates", "cycles", "dropped"):
            self.stats[key] = 0

    # -- configuration -------------------------------------------------------------------
    def configure(self) -> None:
        self.m = self.option("m", self.m)
        self.k = self.option("k", self.k)
        self.update_mode = self.option("update", self.update_mode, str)
        self.orthogonalization = self.option("orthogonalization", self.orthogonalization, str)
        self.check()

    def check(self) -> None:
        if self.m < 2:
            raise InputError(f"restart m={self.m} must be at least 2 (-ksp_gcrodr_m)")
        if not 1 <= self.k < self.m:
            raise InputError(f"recycle size k={self.k} must satisfy 1 <= k < m={self.m} "
                             "(-ksp_gcrodr_k)")
        self._every = _update_every(self.update_mode)
        if self.orthogonalization not in self.ORTHOGONALIZATIONS:
            raise InputError(f"-ksp_gcrodr_orthogonalization {self.orthogonalization!r}: "
                             f"expected one of {', '.join(self.ORTHOGONALIZATIONS)}")

    def setup(self, ksp) -> None:
        self.check()
        ksp.setPCSide(PETSc.PC.Side.RIGHT)
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)

    def describe(self) -> str:
        return (f"GCRO-DR(m={self.m}, k={self.k}), recycle-space update: {self.update_mode}; "
                "flexible right preconditioning; monitors the Arnoldi residual estimate, "
                "converges on the true residual ||b - Ax|| checked at cycle ends; recycle space "
                f"of {self.size} vectors; {self.stats['recycled_solves']} of "
                f"{self.stats['solves']} solves started from a recycled space")

    # -- state -----------------------------------------------------------------------------
    def forget(self) -> None:
        super().forget()
        self._c_orthonormal = False

    def update(self, ksp, A) -> None:
        super().update(ksp, A)
        self._c_orthonormal = False

    # -- the method ------------------------------------------------------------------------
    def _orthonormalise_C(self) -> None:
        """Cholesky-QR2 of the block ``A U`` (one Gram matrix and one reduction per pass),
        applied to ``U`` alike: ``C = A U T``, ``U <- U T`` with ``C^T C = I``. The first pass
        diagonalises the column-scaled Gram matrix and drops the directions of relative
        singular value below 1e-6 (a rank-deficient ``A U``), so ``C = A U`` keeps holding."""
        self.count("qr")
        AU, U = self.AU, self.U
        like = U.vecs[0]
        G = AU.allreduce(AU.data @ AU.data.T)
        d = np.sqrt(np.maximum(np.diag(G), 0.0))
        s = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        w, E = np.linalg.eigh(G * np.outer(s, s))
        keep = w > 1e-12 * max(w.max(), 1e-300)
        T = s[:, None] * (E[:, keep] / np.sqrt(w[keep]))          # pass 1: C1 = T^T A U
        self.count("dropped", len(U) - int(keep.sum()))
        if not keep.any():
            self.forget_space()
            return
        C1 = combine(like, [(T, AU.data)], self._work.get("qr"))
        self._work["qr"] = C1
        L = np.linalg.cholesky(C1.allreduce(C1.data @ C1.data.T))  # pass 2
        Linv = sla.solve_triangular(L, np.eye(len(L)), lower=True)
        newC = combine(like, [(Linv.T, C1.data)], self._spareC)
        newU = combine(like, [(T @ Linv.T, U.data)], self._spareU)
        self._replace_space(newU, newC)
        self._c_orthonormal = True

    def forget_space(self) -> None:
        """Drop the recycle space (nothing of it is independent any more)."""
        for blk in (self.U, self.AU):
            if blk is not None:
                blk.destroy()
        self.U = self.AU = None
        self._c_orthonormal = False

    def run(self, ksp, b, x):
        A, _ = ksp.getOperators()
        pc = ksp.getPC()
        maxit = ksp.getTolerances()[3]
        nan = int(PETSc.KSP.ConvergedReason.DIVERGED_NANORINF)
        r = self.residual(ksp, b, x)
        rnorm = r.norm()
        its = 0
        reason = self.record(ksp, its, rnorm)
        if reason == 0 and self.size and not self._c_orthonormal:
            with self.event("QR of A U"):
                self._orthonormalise_C()
        if reason == 0 and self.size:
            c = self.AU.dot(slice(None), r)          # x += U C^T r, r -= C C^T r
            x.maxpy(c, self.U.vecs)
            r.maxpy(-c, self.AU.vecs)
            rnorm = r.norm()
            self.count("recycled_solves")
        # the bases as blocks: W = [C; V_0 .. V_j], Zh = [U; Z_0 .. Z_{j-1}] (kc + steps <= m)
        W = self.work("W", r, self.m + 1)
        Zh = self.work("Z", r, self.m)
        staged, cycle = False, 0
        while reason == 0:
            kc = self.size
            steps = min(self.m - kc, maxit - its)
            if steps <= 0:
                reason = int(PETSc.KSP.ConvergedReason.DIVERGED_MAX_IT)
                break
            if not staged and kc:
                W.data[:kc] = self.AU.data
                Zh.data[:kc] = self.U.data
            staged = True
            its, reason, Hf, j = self._cycle(ksp, A, pc, x, r, rnorm, W, Zh, kc, steps, its)
            cycle += 1
            self.count("cycles")
            A.mult(x, r)                         # the true residual at the end of every cycle
            r.aypx(-1.0, b)
            rnorm = r.norm()
            if not np.isfinite(rnorm):
                reason = nan
            else:
                reason = int(ksp.callConvergenceTest(its, rnorm))
                if reason == 0 and its >= maxit:
                    reason = int(PETSc.KSP.ConvergedReason.DIVERGED_MAX_IT)
            due = reason != 0 or kc == 0 or (self._every and cycle % self._every == 0)
            if due and reason != nan and (j > self.k or (kc and j >= 1)):
                with self.event("recycle update"):
                    self._new_space(W, Zh, kc, Hf, j)
                staged = False
        r.destroy()
        return its, rnorm, reason

    def _cycle(self, ksp, A, pc, x, r, rnorm, W, Zh, kc, steps, its):
        """``steps`` Arnoldi steps on (I - C C^T) A M^-1, then the update of x.

        ``Hf`` holds the Gram–Schmidt coefficients against ``[C; V]``: rows ``:kc`` are ``B =
        C^T A Z``, rows ``kc:`` GMRES's Hessenberg ``Hbar``. The least-squares problem
        min ||[C^T r; beta e1] - [[I, B], [0, Hbar]] y|| (``beta V_0 = (I - C C^T) r``) splits: y2 solves GMRES's
        min ||beta e1 - Hbar y2|| (Givens rotations: each step's residual estimate is free) and
        y1 = C^T r - B y2 zeroes the first block.
        """
        Wd, Zd = W.data, Zh.data
        # V_0 = (I - C C^T) r / beta: r is orthogonal to C only in exact arithmetic (and not
        # after a mid-solve update); its C-component goes to y1 through ctr = C^T r
        r.copy(W.vecs[kc])
        ctr, beta = self._cgs2(W, Wd[:kc], Wd[kc]) if kc else (np.zeros(0), rnorm)
        if beta > 0:
            Wd[kc] *= 1.0 / beta
        W.vecs[kc].stateIncrease()
        Hf = np.zeros((kc + steps + 1, steps))
        cs, sn = [0.0] * steps, [0.0] * steps
        g = [0.0] * (steps + 1)
        g[0] = float(beta)
        reason, j_done = 0, 0
        orth = self.event("orthogonalisation")
        maxit = ksp.getTolerances()[3]
        for j in range(steps):
            nb = kc + j + 1                       # rows of the basis [C; V_0..V_j]
            pc.apply(W.vecs[nb - 1], Zh.vecs[nb - 1])
            A.mult(Zh.vecs[nb - 1], W.vecs[nb])
            orth.begin()
            h, nrm = self._cgs2(W, Wd[:nb], Wd[nb])
            Hf[:nb, j] = h
            Hf[nb, j] = nrm
            if nrm > 0:
                Wd[nb] *= 1.0 / nrm
            W.vecs[nb].stateIncrease()   # the array changed behind PETSc's back
            orth.end()
            j_done = j + 1
            col = Hf[kc: nb + 1, j].tolist()
            for i in range(j):
                t = cs[i] * col[i] + sn[i] * col[i + 1]
                col[i + 1] = -sn[i] * col[i] + cs[i] * col[i + 1]
                col[i] = t
            den = math.hypot(col[j], col[j + 1])
            cs[j], sn[j] = (1.0, 0.0) if den == 0 else (col[j] / den, col[j + 1] / den)
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            its += 1
            reason = self.record(ksp, its, abs(g[j + 1]))
            if reason != 0 or its >= maxit or nrm == 0.0:
                break
        Hj = Hf[kc: kc + j_done + 1, :j_done]
        e1 = np.zeros(j_done + 1)
        e1[0] = beta
        y2, *_ = np.linalg.lstsq(Hj, e1, rcond=None)
        coef = np.empty(kc + j_done)
        coef[kc:] = y2
        if kc:
            coef[:kc] = ctr - Hf[:kc, :j_done] @ y2   # coefficients of U
        with x as xa:                                  # x += [U, Z_j] [y1; y2]: one GEMV
            xa += coef @ Zd[: kc + j_done]
        return its, reason, Hf, j_done

    def _cgs2(self, W: MultiVec, basis: np.ndarray, wa: np.ndarray):
        """Orthogonalise ``wa`` against the rows of ``basis`` in place by classical Gram–Schmidt:
        one GEMV and one reduction per pass. ``cgs2``: two passes, the norm of the result in the
        second pass's reduction; ``cgs``: one pass and a reduction for the norm (PETSc GMRES's
        default). Returns the coefficients and the norm of the result."""
        nb = len(basis)
        h = W.allreduce(basis @ wa)
        _gemv_sub(basis, h, wa)
        if self.orthogonalization == "cgs":
            nrm2 = W.allreduce(np.array([wa @ wa]))[0]
        else:
            loc = np.empty(nb + 1)
            np.matmul(basis, wa, out=loc[:nb])
            loc[nb] = wa @ wa
            red = W.allreduce(loc)
            h2 = red[:nb]
            _gemv_sub(basis, h2, wa)
            h = h + h2
            nrm2 = red[nb] - h2 @ h2     # ||w - B^T h2||^2, h2 ~ eps ||w||: no cancellation
        return h, math.sqrt(max(nrm2, 0.0))

    def _new_space(self, W: MultiVec, Zh: MultiVec, kc: int, Hf: np.ndarray, j: int) -> None:
        """Harmonic Ritz vectors of the cycle: G^T G z = theta G^T W^T Vhat z, k smallest |theta|,
        with ``W = [C, V_{j+1}]``, ``Vhat = [U D, Z_j]`` (``D`` scales U's columns to unit norm)
        and ``A Vhat = W G``. Then ``[Q, R] = qr(G P)`` (rank-revealing: dependent columns of
        ``P`` dropped), ``C = W Q``, ``U = Vhat P R^-1``: ``C = A U`` and ``C^T C = I``."""
        rows, cols = kc + j + 1, kc + j
        Wd, Zd = W.data[:rows], Zh.data[:cols]
        D = np.zeros(0)
        if kc:
            D = 1.0 / np.sqrt(W.allreduce(np.einsum("ij,ij->i", Zd[:kc], Zd[:kc])))
        G = np.zeros((rows, cols))
        G[:kc, :kc] = np.diag(D)
        G[:kc, kc:] = Hf[:kc, :j]
        G[kc:, kc:] = Hf[kc: kc + j + 1, :j]
        WtV = W.allreduce(Wd @ Zd.T)                    # one GEMM for all four blocks
        WtV[:, :kc] *= D[None, :]
        try:
            theta, P = sla.eig(G.T @ G, G.T @ WtV)
        except (np.linalg.LinAlgError, ValueError):
            return
        finite = np.isfinite(theta)
        order = [i for i in np.argsort(np.abs(np.where(finite, theta, np.inf))) if finite[i]]
        picked, used = [], set()
        for i in order:
            if len(picked) >= self.k:
                break
            if i in used:
                continue
            used.add(i)
            if abs(theta[i].imag) > 1e-12 * max(abs(theta[i]), 1e-300):
                picked += [P[:, i].real, P[:, i].imag]
                for q in order:  # skip the conjugate partner
                    if q not in used and np.isclose(theta[q], np.conj(theta[i])):
                        used.add(q)
                        break
            else:
                picked.append(P[:, i].real)
        if not picked:
            return
        Pk = np.array(picked[: self.k]).T
        Q, R, keep = _independent_qr(G @ Pk)
        self.count("dropped", Pk.shape[1] - len(keep))
        if not len(keep):
            return
        coefU = sla.solve_triangular(R, Pk[:, keep].T, trans="T").T   # P R^-1, in Vhat terms
        coefU[:kc] *= D[:, None]
        like = W.vecs[0]
        newU = combine(like, [(coefU, Zd)], self._spareU)
        newC = combine(like, [(Q, Wd)], self._spareC)
        self._replace_space(newU, newC)
        self._c_orthonormal = True
        self.count("space_updates")


def _gemv_sub(basis: np.ndarray, h: np.ndarray, w: np.ndarray) -> None:
    """``w -= basis^T h`` in place (one BLAS GEMV, no temporary)."""
    if len(h):
        _dgemv(-1.0, basis.T, h, beta=1.0, y=w, overwrite_y=True)


_dgemv = sla.get_blas_funcs("gemv", dtype=np.float64)


class RecyclingCG(_RecyclingKSP):
    """Deflated (recycling) preconditioned CG for SPD sequences.

    CG with the search directions kept A-orthogonal to a recycle space ``W`` (Saad, Yeung,
    Erhel, Guyomarc'h, SIAM J. Sci. Comput. 2000): the initial guess is corrected by the Galerkin
    projection on ``W``, and each direction has its ``W``-component removed. The harvest covers
    the whole solve: CG's coefficients give the Lanczos tridiagonal matrix of the (deflated,
    preconditioned) operator, whose 2k smallest Ritz vectors are formed from the kept Lanczos
    vectors (the deflated preconditioned residuals, up to ``store`` of them); then ``W`` is
    replaced by the k Ritz vectors of smallest Ritz value over ``[W, harvest]`` (Rayleigh–Ritz
    with the true ``A``, 2k products). For a new operator ``A W`` and ``W^T A W`` are recomputed
    (k products). Left preconditioning; the norm monitored within the iteration is that of the
    updated residual ``r_k``; at convergence the true residual ``||b - A x||`` is computed and,
    if it misses the tolerance, the iteration goes on from it (the convergence reported is the
    true residual's).

    Options: ``-ksp_rcg_k`` (default 20), ``-ksp_rcg_store`` (Lanczos vectors kept, default
    max(400, 2k)).
    """

    name = "RecyclingCG"
    options_key = "rcg"
    info_key = "rcg"

    def __init__(self) -> None:
        super().__init__()
        self.store = 400

    def configure(self) -> None:
        self.k = self.option("k", self.k)
        self.store = self.option("store", max(self.store, 2 * self.k))
        if self.k < 1 or self.store < self.k:
            raise InputError(f"need k >= 1 and store >= k (k={self.k}, store={self.store}; "
                             "-ksp_rcg_k, -ksp_rcg_store)")

    def describe(self) -> str:
        return (f"recycling (deflated) CG: k={self.k} Ritz vectors harvested from up to "
                f"{self.store} Lanczos vectors per solve; recycle space of {self.size} vectors; "
                f"{self.stats['recycled_solves']} of {self.stats['solves']} solves deflated")

    def run(self, ksp, b, x):
        A, _ = ksp.getOperators()
        r = self.residual(ksp, b, x)
        pc = ksp.getPC()
        its = 0
        reason = self.record(ksp, its, r.norm())
        deflate = reason == 0 and self.size > 0
        Ec = None
        if deflate:
            W, AW = self.U, self.AU
            E = W.gram(AW)
            E = 0.5 * (E + E.T)
            try:
                Ec = sla.cho_factor(E)
            except np.linalg.LinAlgError:
                raise NotSPDError("W^T A W is not positive definite: the operator is not "
                                  "SPD") from None
            self.count("recycled_solves")
        # the Lanczos vectors kept: up to store, within about 32 MB per rank (at least 2k)
        rows = min(self.store, max(2 * self.k, int(4e6 // max(r.getLocalSize(), 1))),
                   int(ksp.getTolerances()[3]) + 1)
        Z = self.work("Z", r, rows)
        z, p, q = r.duplicate(), r.duplicate(), r.duplicate()
        alphas, betas, nstored = [], [], 0
        rnorm = float(r.norm())
        while reason == 0:
            its, rnorm, reason, nstored = self._cg(ksp, A, pc, x, r, z, p, q, its, Ec, Z,
                                                   alphas, betas, nstored)
            if reason <= 0:
                break
            A.mult(x, q)             # converged on the updated residual: test the true one
            q.aypx(-1.0, b)
            true = float(q.norm())
            if int(ksp.callConvergenceTest(its, true)) > 0:
                rnorm = true
                ksp.setResidualNorm(true)
                break
            q.copy(r)                # it drifted: go on from the true residual
            self.count("restarts")
            reason = 0
        if reason > 0 and nstored:
            with self.event("recycle update"):
                self._harvest(A, Z, alphas, betas, nstored)
        for v in (r, z, p, q):
            v.destroy()
        return its, rnorm, reason

    def _cg(self, ksp, A, pc, x, r, z, p, q, its, Ec, Z, alphas, betas, nstored):
        """Deflated PCG from ``x`` with residual ``r`` until ``record`` says stop; keeps the
        Lanczos vectors (deflated ``z / sqrt(r.z)``) and CG's coefficients."""
        if Ec is not None:          # Galerkin correction on W: r orthogonal to W
            mu = sla.cho_solve(Ec, self.U.dot(slice(None), r))
            x.maxpy(mu, self.U.vecs)
            r.maxpy(-mu, self.AU.vecs)

        def precondition():
            pc.apply(r, z)
            if Ec is not None:     # z - W E^{-1} (A W)^T z
                z.maxpy(-sla.cho_solve(Ec, self.AU.dot(slice(None), z)), self.U.vecs)
            return r.dot(z)

        rz = precondition()
        z.copy(p)
        fresh = not alphas          # a restart keeps the first Lanczos run only
        rnorm = float(r.norm())
        reason = 0
        while reason == 0:
            if rz < 0:
                return its, rnorm, int(PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_PC), nstored
            if fresh and nstored < len(Z):
                z.copy(Z.vecs[nstored])
                Z.vecs[nstored].scale(1.0 / np.sqrt(rz))
                nstored += 1
            A.mult(p, q)
            pq = p.dot(q)
            if pq <= 0:
                return its, rnorm, int(PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_MAT), nstored
            alpha = rz / pq
            x.axpy(alpha, p)
            r.axpy(-alpha, q)
            rnorm = float(r.norm())
            its += 1
            if fresh and len(alphas) < nstored:
                alphas.append(alpha)
            reason = self.record(ksp, its, rnorm)
            if reason != 0:
                break
            rz_new = precondition()
            beta = rz_new / rz
            if fresh and len(betas) < len(alphas):
                betas.append(beta)
            rz = rz_new
            p.aypx(beta, z)
        return its, rnorm, reason, nstored

    def _harvest(self, A, Z: MultiVec, alphas, betas, nstored: int) -> None:
        """Ritz vectors of the Lanczos matrix of this solve, then Rayleigh–Ritz over [W, them]."""
        m = min(nstored, len(alphas))
        if m == 0:
            return
        a = np.asarray(alphas[:m])
        bt = np.asarray(betas[:m])
        diag = 1.0 / a
        diag[1:] += bt[: m - 1] / a[: m - 1]
        off = -np.sqrt(bt[: m - 1]) / a[: m - 1]
        theta, Y = sla.eigh_tridiagonal(diag, off)
        h = min(2 * self.k, m)
        coef = np.ascontiguousarray(Y[:, :h])          # (m, h): the smallest Ritz values
        like = Z.vecs[0]
        H = combine(like, [(coef, Z.data[:m])], self._work.get("H"))
        self._work["H"] = H
        AH = self.work("AH", like, h)
        for u, au in zip(H.vecs, AH.vecs):
            A.mult(u, au)
        self.count("harvested", h)
        self._update_space(H, AH, h)

    def _update_space(self, P: MultiVec, AP: MultiVec, s: int) -> None:
        """Rayleigh–Ritz on [W, P_s]: the k smallest Ritz pairs of (Y^T A Y, Y^T Y)."""
        blocks = [(P, AP, slice(0, s))]
        if self.U is not None and len(self.U):
            blocks.insert(0, (self.U, self.AU, slice(None)))
        Ys = [b.data[sl] for b, _, sl in blocks]
        AYs = [ab.data[sl] for _, ab, sl in blocks]
        Y = np.vstack(Ys)
        AY = np.vstack(AYs)
        comm_blk = P
        T = comm_blk.allreduce(Y @ AY.T)
        S = comm_blk.allreduce(Y @ Y.T)
        T = 0.5 * (T + T.T)
        S = 0.5 * (S + S.T)
        # drop the near-dependent directions of Y (S is then safely positive definite)
        w, V = np.linalg.eigh(S)
        keep = w > 1e-10 * w.max()
        Sh = V[:, keep] / np.sqrt(w[keep])
        theta, Xr = np.linalg.eigh(Sh.T @ T @ Sh)
        coef = Sh @ Xr[:, : self.k]                 # Y^T-coefficients of the k smallest Ritz vectors
        like = P.vecs[0]
        newW = combine(like, [(coef, Y)], self._spareU)
        newAW = combine(like, [(coef, AY)], self._spareC)
        self._replace_space(newW, newAW)
