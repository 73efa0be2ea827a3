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


class GCRODR(_RecyclingKSP):
    """GCRO-DR(m, k) (Parks, de Sturler, Mackey, Johnson, Maiti, SIAM J. Sci. Comput. 2006).

    Flexible, right-preconditioned form: each cycle runs ``m - k`` Arnoldi steps on
    ``(I - C C^T) A M^{-1}`` and keeps the preconditioned vectors ``Z = M^{-1} V``, so any PETSc
    PC works, even one that changes between applications. The residual norm monitored and tested
    is the **true (unpreconditioned) residual** ``||b - A x||`` (``-ksp_rtol`` is relative to the
    initial residual, as for PETSc's KSPs). At the end of every cycle the k harmonic Ritz vectors
    of smallest harmonic Ritz value become the recycle space ``U`` (with ``C = A U`` orthonormal);
    it survives into the next ``solve``, where ``C`` is rebuilt for the new operator. On a single
    system this is deflated restarting.

    Options: ``-ksp_gcrodr_m`` (default 40), ``-ksp_gcrodr_k`` (default 20).
    """

    name = "GCRO-DR"
    options_key = "gcrodr"
    info_key = "gcrodr"

    def __init__(self) -> None:
        super().__init__()
        self.m = 40

    # -- configuration -------------------------------------------------------------------
    def configure(self) -> None:
        self.m = self.option("m", self.m)
        self.k = self.option("k", self.k)
        self.check()

    def check(self) -> None:
        if self.m < 2:
            raise InputError(f"restart m={self.m} must be at least 2 (-ksp_gcrodr_m)")
        if not 1 <= self.k < self.m:
            raise InputError(f"recycle size k={self.k} must satisfy 1 <= k < m={self.m} "
                             "(-ksp_gcrodr_k)")

    def setup(self, ksp) -> None:
        self.check()
        ksp.setPCSide(PETSc.PC.Side.RIGHT)
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)

    def describe(self) -> str:
        return (f"GCRO-DR(m={self.m}, k={self.k}): flexible right preconditioning, true residual "
                f"norm; recycle space of {self.size} vectors; {self.stats['recycled_solves']} of "
                f"{self.stats['solves']} solves started from a recycled space")

    # -- the method ------------------------------------------------------------------------
    def _orthonormalise_C(self) -> None:
        """QR of the block A U: C = Q, U <- U R^-1 (so that C = A U stays exact)."""
        Q, R = self._block_qr(self.AU)
        keep = np.abs(np.diag(R)) > 1e-12 * max(np.abs(np.diag(R)).max(), 1e-300)
        Rinv = np.linalg.inv(R[np.ix_(keep, keep)])
        like = self.U.vecs[0]
        newU = combine(like, [(Rinv, self.U.data[keep])], self._spareU)
        newC = combine(like, [(np.eye(int(keep.sum())), Q[keep])], self._spareC)
        self._replace_space(newU, newC)

    @staticmethod
    def _block_qr(blk: MultiVec):
        """Cholesky-QR2 of a block: returns (Q rows, R) with blk = R^T Q (row convention)."""
        data = blk.data
        R = np.eye(len(blk))
        Q = data.copy()
        for _ in range(2):
            Gm = blk.allreduce(Q @ Q.T)
            try:
                L = np.linalg.cholesky(Gm)
            except np.linalg.LinAlgError:
                w, v = np.linalg.eigh(Gm)
                w = np.maximum(w, 1e-30 * w.max())
                L = np.linalg.cholesky(v @ np.diag(w) @ v.T)
            Q = np.linalg.solve(L, Q)
            R = L.T @ R
        return Q, R

    def run(self, ksp, b, x):
        A, _ = ksp.getOperators()
        r = self.residual(ksp, b, x)
        pc = ksp.getPC()
        rtol, atol, dtol, maxit = ksp.getTolerances()
        rnorm = r.norm()
        its = 0
        reason = self.record(ksp, its, rnorm)
        if reason == 0 and self.size:
            with self.event("recycle update"):
                self._orthonormalise_C()
            c = self.AU.dot(slice(None), r)          # x += U C^T r, r -= C C^T r
            x.maxpy(c, self.U.vecs)
            r.maxpy(-c, self.AU.vecs)
            rnorm = r.norm()
            self.count("recycled_solves")
        while reason == 0:
            kc = self.size
            steps = min(self.m - kc, maxit - its)
            if steps <= 0:
                reason = int(PETSc.KSP.ConvergedReason.DIVERGED_MAX_IT)
                break
            its, reason = self._cycle(ksp, A, pc, x, r, rnorm, kc, steps, its, maxit)
            A.mult(x, r)                         # the true residual after every cycle
            r.aypx(-1.0, b)
            rnorm = r.norm()
            reason = int(ksp.callConvergenceTest(its, rnorm)) if np.isfinite(rnorm) else \
                int(PETSc.KSP.ConvergedReason.DIVERGED_NANORINF)
            if reason == 0 and its >= maxit:
                reason = int(PETSc.KSP.ConvergedReason.DIVERGED_MAX_IT)
        r.destroy()
        return its, rnorm, reason

    def _cycle(self, ksp, A, pc, x, r, rnorm, kc, steps, its, maxit):
        """``steps`` Arnoldi steps on (I - C C^T) A M^-1, then the updates of x and of the space.

        The least-squares problem min ||[C^T r; beta e1] - G y||, G = [[D, B], [0, Hbar]], splits:
        y2 solves GMRES's min ||beta e1 - Hbar y2|| (Givens rotations: each step's residual
        estimate is free) and y1 = D^-1 (C^T r - B y2) zeroes the first block.
        """
        Vb = self.work("V", r, self.m + 1)
        Zb = self.work("Z", r, self.m)
        V, Z = Vb.vecs, Zb.vecs
        r.copy(V[0])
        if rnorm > 0:
            V[0].scale(1.0 / rnorm)
        C = self.AU
        ctr = C.dot(slice(None), r) if kc else np.zeros(0)
        H, B = np.zeros((steps + 1, steps)), np.zeros((kc, steps))
        cs, sn, g = np.zeros(steps), np.zeros(steps), np.zeros(steps + 1)
        g[0] = rnorm
        reason, j_done = 0, 0
        for j in range(steps):
            z, w = Z[j], V[j + 1]
            pc.apply(V[j], z)
            A.mult(z, w)
            orth = self.event("orthogonalisation")
            orth.begin()
            # classical Gram-Schmidt against [C, V_j] on the block arrays (BLAS GEMVs, one
            # reduction per pass), repeated only when it cancelled most of w (DGKS criterion)
            wa = Vb.data[j + 1]
            nrm0 = np.sqrt(Vb.allreduce(np.array([wa @ wa])))[0]
            for _ in range(2):
                proj = Vb.data[: j + 1] @ wa
                if kc:
                    bj_h = Vb.allreduce(np.concatenate([C.data @ wa, proj]))
                    bj, h = bj_h[:kc], bj_h[kc:]
                    wa -= C.data.T @ bj
                    B[:, j] += bj
                else:
                    h = Vb.allreduce(proj)
                wa -= Vb.data[: j + 1].T @ h
                H[: j + 1, j] += h
                nrm = np.sqrt(Vb.allreduce(np.array([wa @ wa])))[0]
                if nrm > 0.1 * nrm0:
                    break
                nrm0 = nrm
            H[j + 1, j] = nrm
            if nrm > 0:
                wa *= 1.0 / nrm
            w.stateIncrease()  # the array changed behind PETSc's back: no stale cached norms
            orth.end()
            j_done = j + 1
            col = H[: j + 2, j].copy()
            for i in range(j):
                t = cs[i] * col[i] + sn[i] * col[i + 1]
                col[i + 1] = -sn[i] * col[i] + cs[i] * col[i + 1]
                col[i] = t
            den = np.hypot(col[j], col[j + 1])
            cs[j], sn[j] = (1.0, 0.0) if den == 0 else (col[j] / den, col[j + 1] / den)
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            its += 1
            reason = self.record(ksp, its, abs(g[j + 1]))
            if reason != 0 or its >= maxit or H[j + 1, j] == 0.0:
                break
        Hj = H[: j_done + 1, :j_done]
        e1 = np.zeros(j_done + 1)
        e1[0] = rnorm
        y2, *_ = np.linalg.lstsq(Hj, e1, rcond=None)
        if kc:
            y1 = ctr - B[:, :j_done] @ y2          # coefficients of U (D folded in)
            x.maxpy(y1, self.U.vecs)
        x.maxpy(y2, Z[:j_done])
        if j_done > self.k or (kc and j_done >= 1):
            with self.event("recycle update"):
                self._new_space(B[:, :j_done], Hj, Vb, Zb, j_done, kc)
        return its, reason

    def _new_space(self, B, H, Vb, Zb, j, kc) -> None:
        """Harmonic Ritz vectors of the cycle: G^T G z = theta G^T W^T Vhat z, k smallest |theta|;
        then Y = Vhat P, [Q, R] = qr(G P), C = W Q, U = Y R^-1."""
        D = 1.0 / np.sqrt(np.einsum("ij,ij->i", self.U.data, self.U.data)) if kc else np.zeros(0)
        if kc and self.U.comm.getSize() > 1:
            D = 1.0 / np.sqrt(self.U.allreduce(np.einsum("ij,ij->i", self.U.data, self.U.data)))
        G = np.zeros((kc + j + 1, kc + j))
        if kc:
            G[:kc, :kc] = np.diag(D)
            G[:kc, kc:] = B
        G[kc:, kc:] = H
        # W^T Vhat with W = [C, V_{j+1}], Vhat = [U D, Z_j]
        WtV = np.zeros((kc + j + 1, kc + j))
        rows_v, rows_z = slice(0, j + 1), slice(0, j)
        WtV[kc:, kc:] = Vb.gram(Zb, rows_v, rows_z)
        if kc:
            WtV[:kc, :kc] = self.AU.gram(self.U) * D[None, :]
            WtV[:kc, kc:] = self.AU.gram(Zb, slice(None), rows_z)
            WtV[kc:, :kc] = Vb.gram(self.U, rows_v) * D[None, :]
        try:
            theta, P = sla.eig(G.T @ G, G.T @ WtV)
        except (np.linalg.LinAlgError, ValueError):
            return
        finite = np.isfinite(theta)
        order = [i for i in np.argsort(np.abs(np.where(finite, theta, np.inf))) if finite[i]]
        cols, used = [], set()
        for i in order:
            if len(cols) >= self.k:
                break
            if i in used:
                continue
            used.add(i)
            if abs(theta[i].imag) > 1e-12 * max(abs(theta[i]), 1e-300):
                cols += [P[:, i].real, P[:, i].imag]
                for q in order:  # skip the conjugate partner
                    if q not in used and np.isclose(theta[q], np.conj(theta[i])):
                        used.add(q)
                        break
            else:
                cols.append(P[:, i].real)
        if not cols:
            return
        Pk = np.array(cols[: self.k]).T
        Q, R = np.linalg.qr(G @ Pk)
        keep = np.abs(np.diag(R)) > 1e-12 * np.abs(np.diag(R)).max()
        Q, R, Pk = Q[:, keep], R[np.ix_(keep, keep)], Pk[:, keep]
        coefU = Pk @ np.linalg.inv(R)                    # in terms of Vhat = [U D, Z]
        like = Vb.vecs[0]
        partsU = [(coefU[kc:], Zb.data[:j])]
        partsC = [(Q[kc:], Vb.data[: j + 1])]
        if kc:
            partsU.append((coefU[:kc] * D[:, None], self.U.data))
            partsC.append((Q[:kc], self.AU.data))
        newU = combine(like, partsU, self._spareU)
        newC = combine(like, partsC, self._spareC)
        self._replace_space(newU, newC)


class RecyclingCG(_RecyclingKSP):
    """Deflated (recycling) preconditioned CG for SPD sequences.

    CG with the search directions kept A-orthogonal to a recycle space ``W`` (Saad, Yeung,
    Erhel, Guyomarc'h, SIAM J. Sci. Comput. 2000): the initial guess is corrected by the Galerkin
    projection on ``W``, and each direction has its ``W``-component removed. After every solve
    ``W`` is replaced by the k Ritz vectors of smallest Ritz value over ``[W, P]``, ``P`` the
    first ``store`` search directions of the solve (Rayleigh–Ritz with ``A [W, P]`` already at
    hand). For a new operator ``A W`` and ``W^T A W`` are recomputed (k products). Left
    preconditioning; the norm monitored and tested is that of the updated residual ``r_k``
    (``||b - A x_k||`` in exact arithmetic; ``SolveResult.true_residual`` recomputes it).

    Options: ``-ksp_rcg_k`` (default 20), ``-ksp_rcg_store`` (default 2k).
    """

    name = "RecyclingCG"
    options_key = "rcg"
    info_key = "rcg"

    def __init__(self) -> None:
        super().__init__()
        self.store = 40

    def configure(self) -> None:
        self.k = self.option("k", self.k)
        self.store = self.option("store", max(self.store, 2 * self.k))
        if self.k < 1 or self.store < self.k:
            raise InputError(f"need k >= 1 and store >= k (k={self.k}, store={self.store}; "
                             "-ksp_rcg_k, -ksp_rcg_store)")

    def describe(self) -> str:
        return (f"recycling (deflated) CG: k={self.k} Ritz vectors from the first {self.store} "
                f"directions; recycle space of {self.size} vectors; "
                f"{self.stats['recycled_solves']} of {self.stats['solves']} solves deflated")

    def run(self, ksp, b, x):
        A, _ = ksp.getOperators()
        r = self.residual(ksp, b, x)
        pc = ksp.getPC()
        rtol, atol, dtol, maxit = ksp.getTolerances()
        its = 0
        reason = self.record(ksp, its, r.norm())
        deflate = reason == 0 and self.size > 0
        if deflate:
            W, AW = self.U, self.AU
            E = W.gram(AW)
            E = 0.5 * (E + E.T)
            try:
                Ec = sla.cho_factor(E)
            except np.linalg.LinAlgError:
                raise NotSPDError("W^T A W is not positive definite: the operator is not "
                                  "SPD") from None
            mu = sla.cho_solve(Ec, W.dot(slice(None), r))
            x.maxpy(mu, W.vecs)
            r.maxpy(-mu, AW.vecs)
            self.count("recycled_solves")
        P = self.work("P", r, self.store)
        AP = self.work("AP", r, self.store)
        z = r.duplicate()
        pc.apply(r, z)
        p = z.copy()
        if deflate:
            p.maxpy(-sla.cho_solve(Ec, AW.dot(slice(None), z)), W.vecs)
        q = r.duplicate()
        rz = r.dot(z)
        rnorm = r.norm()
        nstored = 0
        while reason == 0:
            A.mult(p, q)
            pq = p.dot(q)
            if pq <= 0 or rz < 0:
                reason = int(PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_MAT if pq <= 0
                             else PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_PC)
                break
            if nstored < self.store:
                p.copy(P.vecs[nstored])
                q.copy(AP.vecs[nstored])
                nstored += 1
            alpha = rz / pq
            x.axpy(alpha, p)
            r.axpy(-alpha, q)
            rnorm = r.norm()
            its += 1
            reason = self.record(ksp, its, rnorm)
            if reason != 0:
                break
            pc.apply(r, z)
            rz_new = r.dot(z)
            beta = rz_new / rz
            rz = rz_new
            p.aypx(beta, z)
            if deflate:
                p.maxpy(-sla.cho_solve(Ec, AW.dot(slice(None), z)), W.vecs)
        if reason > 0 and nstored:
            with self.event("recycle update"):
                self._update_space(P, AP, nstored)
        for v in (r, z, p, q):
            v.destroy()
        return its, rnorm, reason

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
