"""A two-level cycle with a learned coarse correction, shared by the learned PCs
(:class:`~hybridsolve.learned.petsc.TorchPC`, :class:`~hybridsolve.learned.npsolver_petsc.NPSolverPC`).

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

from hybridsolve.errors import InputError
from hybridsolve.stack import PETSc

__all__ = ["TwoLevelCycle", "classical_pc"]


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
