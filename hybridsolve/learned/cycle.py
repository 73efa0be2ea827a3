"""What the learned PCs (:class:`~hybridsolve.learned.petsc.TorchPC`,
:class:`~hybridsolve.learned.npsolver_petsc.NPSolverPC`) share: :class:`LearnedPC`, their base
(the classical fallback, the safeguard on the network's output, the two-level cycle, their
counts and options), and :class:`TwoLevelCycle`, the cycle with a learned coarse correction.

One application for a residual ``r``: ``z = S r`` and ``its - 1`` more ``z += S (r - A z)``
(the classical smoother ``S``, any PETSc PC type, e.g. ``sor``), then ``t = r - A z``,
``u = net(t)``, ``z += (u.t / u.A u) u`` (the network's scale is arbitrary: its step is the
A-norm line search), then ``its`` post-smoothing steps ``z += S (r - A z)``. The smoother takes
the rough part of the residual a network handles worst. Cost besides the network:
``2 its + 1`` products with A and ``2 its`` smoother applications.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.solvers.base import PythonPC
from hybridsolve.stack import MPI, PETSc

__all__ = ["LearnedPC", "TwoLevelCycle", "classical_pc", "CHECKS"]

#: what the safeguard rejects: NaN/Inf and (descent) directions nearly orthogonal to r; NaN/Inf
#: only; nothing
CHECKS = ("descent", "finite", "none")


def classical_pc(A: PETSc.Mat, P: PETSc.Mat, kind: str, prefix: str) -> PETSc.PC:
    """A set-up PETSc PC of type ``kind`` on (A, P), its options under ``prefix``: the
    learned PCs' fallbacks and smoothers. An unknown type is an :class:`InputError` naming the
    option (``-<prefix without its trailing _>``)."""
    pc = PETSc.PC().create(A.getComm())
    pc.setOptionsPrefix(prefix)
    try:
        pc.setType(kind)
    except PETSc.Error:
        pc.destroy()
        raise InputError(f"-{prefix[:-1]}: {kind!r} is not a PETSc PC type (e.g. sor, jacobi, "
                         "icc)") from None
    pc.setOperators(A, P)
    pc.setFromOptions()
    pc.setUp()
    return pc


class TwoLevelCycle:
    """The cycle on operator ``A`` (smoother built on ``P``) with smoother ``kind``, ``its``
    sweeps before and after the network; the smoother's options under ``prefix``."""

    def __init__(self, A: PETSc.Mat, P: PETSc.Mat, kind: str, its: int, prefix: str) -> None:
        if its < 1:
            raise InputError(f"-{prefix[:-1]}_its: >= 1, got {its}")
        sm = classical_pc(A, P, kind, prefix)
        self.kind, self.its, self.A, self.smoother = kind, its, A, sm
        self.t, self.u, self.v = A.createVecLeft(), A.createVecLeft(), A.createVecLeft()

    def _smooth(self, r: PETSc.Vec, z: PETSc.Vec, its: int) -> None:
        for _ in range(its):
            self.A.mult(z, self.t)
            self.t.aypx(-1.0, r)
            self.smoother.apply(self.t, self.u)
            z.axpy(1.0, self.u)

    def apply(self, r: PETSc.Vec, z: PETSc.Vec,
              network: Callable[[PETSc.Vec, PETSc.Vec], None]) -> bool:
        """z = the cycle applied to r; False when the network's direction was not used (A
        does not see it as positive, or it is not finite)."""
        A, t, u, v = self.A, self.t, self.u, self.v
        z.set(0.0)
        self.smoother.apply(r, z)
        self._smooth(r, z, self.its - 1)
        A.mult(z, t)
        t.aypx(-1.0, r)
        network(t, u)
        A.mult(u, v)
        ut, uAu = u.dot(t), u.dot(v)
        used = bool(np.isfinite(ut) and np.isfinite(uAu) and uAu > 0)
        if used:
            z.axpy(ut / uAu, u)
        self._smooth(r, z, self.its)
        return used

    def describe(self) -> str:
        return (f"two-level cycle: smoother {self.kind} x{self.its} before and after the network "
                "(its step by the A-norm line search)")

    def destroy(self) -> None:
        for o in (self.smoother, self.t, self.u, self.v):
            o.destroy()


class LearnedPC(PythonPC):
    """Base of the PCs whose application is a network: a subclass implements
    :meth:`network_block` (the network's directions for a block of residuals, no checks) and
    :meth:`initialize` (calling :meth:`build_safeguards`), and reads its own options in
    :meth:`configure` after :meth:`configure_safeguards`.

    The safeguards, the same for every learned PC, under ``-pc_<options_key>_``:
    ``fallback <PC type>`` (default jacobi; ``none``: a rejected output is an error),
    ``check descent|finite|none``, ``descent_tol`` (default 1e-4), ``smoother <PC type>|none``
    and ``smooth_its`` (the :class:`TwoLevelCycle` around the network). An output with NaN/Inf,
    or (``check descent``) one with ``|cos(r, z)| <= descent_tol``, is replaced for that
    application by the fallback PC and counted; an ascent direction (``r.z < 0``) is flipped and
    counted (a scale-invariant training loss does not fix the sign); in the cycle, a direction
    that A does not see as positive is dropped and counted. The decision is collective (one
    reduction: the same on every rank). The counts are in :attr:`stats`, ``SolveResult.info``
    and ``-ksp_view`` (:meth:`safeguard_text`).
    """

    view_counters = False   # describe() states them in words
    default_smoother = "none"

    def __init__(self) -> None:
        super().__init__()
        self.fallback_type = "jacobi"
        self.check = "descent"
        self.descent_tol = 1e-4
        self.smoother_type = self.default_smoother
        self.smooth_its = 1
        self._fallback: PETSc.PC | None = None
        self._cycle: TwoLevelCycle | None = None
        self.stats = {"applications": 0, "fallback_nonfinite": 0, "fallback_not_descent": 0,
                      "sign_flips": 0}

    # -- options and set-up ----------------------------------------------------------------
    def configure_safeguards(self) -> None:
        name = f"-{self.prefix}pc_{self.options_key}_"
        self.fallback_type = self.option("fallback", self.fallback_type)
        self.check = self.option("check", self.check)
        if self.check not in CHECKS:
            raise InputError(f"{name}check: one of {', '.join(CHECKS)}, got {self.check!r}")
        self.descent_tol = self.option("descent_tol", self.descent_tol)
        if not 0 <= self.descent_tol < 1:
            raise InputError(f"{name}descent_tol: in [0, 1), got {self.descent_tol}")
        smoother = self.option("smoother", self.smoother_type)
        its = self.option("smooth_its", self.smooth_its)
        if its < 1:
            raise InputError(f"{name}smooth_its: >= 1, got {its}")
        if (smoother, its) != (self.smoother_type, self.smooth_its):
            self.smoother_type, self.smooth_its = smoother, its
            self._initialized = False      # build the cycle at the next set-up

    def build_safeguards(self, A: PETSc.Mat, P: PETSc.Mat) -> None:
        """(Re)build the fallback PC and the cycle on (A, P); the communicator for the checks."""
        self._comm = A.getComm().tompi4py()
        self._destroy_safeguards()
        key = f"{self.prefix}pc_{self.options_key}_"
        if self.fallback_type != "none":
            self._fallback = classical_pc(A, P, self.fallback_type, key + "fallback_")
        if self.smoother_type != "none":
            self._cycle = TwoLevelCycle(A, P, self.smoother_type, self.smooth_its,
                                        key + "smoother_")

    def _destroy_safeguards(self) -> None:
        if self._fallback is not None:
            self._fallback.destroy()
            self._fallback = None
        if self._cycle is not None:
            self._cycle.destroy()
            self._cycle = None

    # -- the network and its checks ----------------------------------------------------------
    def network_block(self, R: np.ndarray) -> np.ndarray:
        """The network's (unchecked) directions for the columns of ``R`` (owned rows)."""
        raise NotImplementedError

    def screen(self, R: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Check the directions ``Z`` for the residuals ``R`` (columns, owned rows; collective):
        ascent directions flipped, and which columns need the fallback; counted."""
        k = R.shape[1]
        finite = np.isfinite(Z).all(axis=0)
        Zf = np.where(np.isfinite(Z), Z, 0.0)
        local = np.concatenate([~finite, np.einsum("ij,ij->j", R, Zf),
                                np.einsum("ij,ij->j", Zf, Zf), np.einsum("ij,ij->j", R, R)])
        tot = self._comm.allreduce(local.astype(float), op=MPI.SUM)   # one reduction for all
        nonfinite = tot[:k] > 0
        dots, znorm, rnorm = tot[k:2 * k], np.sqrt(tot[2 * k:3 * k]), np.sqrt(tot[3 * k:])
        descent_fail = np.zeros(k, dtype=bool)
        if self.check == "descent":
            # The scale-invariant training loss cannot tell q from -q: a model may propose
            # ascent directions consistently. -q is then a descent direction: flip it.
            flip = ~nonfinite & (dots < 0)
            Z[:, flip] *= -1.0
            self.stats["sign_flips"] += int(flip.sum())
            # |cos(r, z)| below descent_tol (1e-4): even the exact inverse of an SPD A gives
            # cos(r, A^-1 r) >= 2 sqrt(kappa) / (1 + kappa), above 1e-4 up to kappa = 4e8 (a
            # 2-D Poisson grid of about 30000^2), so a useful direction is never rejected, while
            # a direction this close to orthogonal reduces the error by a negligible amount
            descent_fail = ~nonfinite & (np.abs(dots) <= self.descent_tol * znorm * rnorm)
        elif self.check == "none":
            nonfinite[:] = False
        self.stats["fallback_nonfinite"] += int(nonfinite.sum())
        self.stats["fallback_not_descent"] += int(descent_fail.sum())
        return Z, nonfinite | descent_fail

    def checked_block(self, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's directions for the columns of ``R``, screened (one application)."""
        self.stats["applications"] += 1
        return self.screen(R, self.network_block(R))

    def fallback_apply(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        if self._fallback is None:
            raise CollectiveError(f"{self.label()}: the network's output was rejected (NaN/Inf "
                                  f"or not a descent direction) and -{self.prefix}pc_"
                                  f"{self.options_key}_fallback is none")
        self._fallback.apply(x, y)

    def classical(self, pc: PETSc.PC, x: PETSc.Vec, y: PETSc.Vec) -> bool:
        """Apply the fallback PC (the classical path a caller such as DCDM switches to)."""
        self.ready(pc)
        if self._fallback is None:
            return False
        self._fallback.apply(x, y)
        return True

    def network_apply(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        """y = the network's checked direction for x (or the fallback's, counted)."""
        with self.event("model apply"):
            Z, bad = self.checked_block(x.getArray(readonly=True).reshape(-1, 1))
        if bad[0]:
            self.fallback_apply(x, y)
        else:
            y.getArray()[:] = Z[:, 0]

    def apply_pc(self, pc: PETSc.PC, x: PETSc.Vec, y: PETSc.Vec) -> None:
        if self._cycle is None:
            self.network_apply(x, y)
        elif not self._cycle.apply(x, y, self.network_apply):
            # a direction A does not see as positive: the cycle went on without it
            self.stats["fallback_not_descent"] += 1

    def safeguard_text(self) -> str:
        s = self.stats
        return (f"fallback ({self.fallback_type}) used {s['fallback_nonfinite']} times for "
                f"NaN/Inf, {s['fallback_not_descent']} times for a direction (nearly) orthogonal "
                f"to the residual (check: {self.check}, |cos| <= {self.descent_tol:g}); "
                f"{s['sign_flips']} ascent directions flipped"
                + (f"\n  {self._cycle.describe()}" if self._cycle is not None else ""))

    def reset(self, pc: PETSc.PC) -> None:
        super().reset(pc)
        self._destroy_safeguards()
