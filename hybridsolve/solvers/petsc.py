"""The ``solve()`` front door: a thin layer over PETSc KSP that honours options and prefixes."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping

import numpy as np

from hybridsolve.errors import InputError, SolverError
from hybridsolve.options import check_prefix, defaults_under_prefix
from hybridsolve.solvers.result import SolveResult
from hybridsolve.stack import MPI, PETSc

__all__ = ["KrylovSolver", "solve", "reason_name", "norm_type_name"]


def reason_name(reason: int) -> str:
    """PETSc's name of a KSP converged reason code."""
    for name in dir(PETSc.KSP.ConvergedReason):
        if name.isupper() and getattr(PETSc.KSP.ConvergedReason, name) == reason:
            if name.startswith(("CONVERGED", "DIVERGED", "ITERATING")):
                return name
    return str(reason)


def norm_type_name(ksp: PETSc.KSP) -> str:
    nt = ksp.getNormType()
    names = {
        PETSc.KSP.NormType.NONE: "none",
        PETSc.KSP.NormType.PRECONDITIONED: "preconditioned",
        PETSc.KSP.NormType.UNPRECONDITIONED: "unpreconditioned",
        PETSc.KSP.NormType.NATURAL: "natural",
    }
    return names.get(nt, str(nt))


def _check_sizes(A: PETSc.Mat, b: PETSc.Vec, x: PETSc.Vec | None) -> None:
    m, n = A.getSize()
    if m != n:
        raise InputError(f"matrix is {m}x{n}: a linear solve needs a square matrix")
    if b.getSize() != m:
        raise InputError(f"right-hand side has size {b.getSize()} but the matrix is {m}x{n}")
    if x is not None and x.getSize() != n:
        raise InputError(f"initial guess has size {x.getSize()} but the matrix is {m}x{n}")


class KrylovSolver:
    """A PETSc KSP configured from the options database under a prefix, reusable across solves.

    Args:
        comm: communicator of the operators.
        prefix: options prefix, e.g. ``"darcy_"`` reads ``-darcy_ksp_type``.
        options: default options (without dash) applied under the prefix where the database
            has no value: the command line has the last word, as in any PETSc program.
        rtol, atol, max_it: tolerances; ``None`` keeps PETSc's (or the options').

    The underlying ``KSP`` is available as :attr:`ksp` for anything PETSc offers.
    """

    def __init__(
        self,
        comm: MPI.Comm = MPI.COMM_WORLD,
        *,
        prefix: str | None = None,
        options: Mapping[str, Any] | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        max_it: int | None = None,
    ) -> None:
        self._prefix = check_prefix(prefix)
        self._options = dict(options or {})
        for key, val in (("ksp_rtol", rtol), ("ksp_atol", atol), ("ksp_max_it", max_it)):
            if val is not None:
                if not np.isfinite(val) or val < 0:
                    raise InputError(f"{key} must be a non-negative number, got {val!r}")
                self._options[key] = val
        self._ksp = PETSc.KSP().create(comm)
        self._ksp.setOptionsPrefix(self._prefix)
        self._configured = False

    @property
    def ksp(self) -> PETSc.KSP:
        return self._ksp

    @property
    def prefix(self) -> str:
        return self._prefix

    def method(self) -> str:
        return f"{self._ksp.getType()}+{self._ksp.getPC().getType()}"

    def solve(self, A: PETSc.Mat, b: PETSc.Vec, x0: PETSc.Vec | None = None, *,
              P: PETSc.Mat | None = None, error_if_not_converged: bool = False) -> SolveResult:
        """Solve ``A x = b`` (starting from ``x0`` when given; ``x0`` is not modified).

        Raises:
            InputError: sizes do not match.
            SolverError: not converged and ``error_if_not_converged``.
        """
        _check_sizes(A, b, x0)
        ksp = self._ksp
        ksp.setOperators(A, P if P is not None else A)
        # Code defaults stay in the database through the first solve (sub-solvers read theirs
        # during set-up) and are removed afterwards. Set-up is timed as part of the solve.
        first = not self._configured
        scope = defaults_under_prefix(self._prefix, self._options) if first else contextlib.nullcontext()
        with scope:
            if first:
                ksp.setFromOptions()
                self._configured = True
            x = A.createVecRight()
            if x0 is not None:
                x0.copy(x)
                ksp.setInitialGuessNonzero(True)
            else:
                x.set(0.0)
                ksp.setInitialGuessNonzero(False)
            max_it = ksp.getTolerances()[3]
            ksp.setConvergenceHistory(length=int(max_it) + 1, reset=True)
            comm = A.getComm().tompi4py()
            comm.Barrier()
            t0 = time.perf_counter()
            ksp.solve(b, x)
            elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        reason = int(ksp.getConvergedReason())
        res = SolveResult(
            iterations=int(ksp.getIterationNumber()),
            reason=reason,
            reason_name=reason_name(reason),
            residual_history=np.array(ksp.getConvergenceHistory(), dtype=float),
            residual_norm=norm_type_name(ksp),
            true_residual=true_residual(A, b, x),
            time=elapsed,
            method=self.method(),
            x=x,
        )
        if error_if_not_converged and not res.converged:
            raise SolverError(f"{self._prefix or 'solve'}: {res.summary()}")
        return res

    def destroy(self) -> None:
        self._ksp.destroy()


def true_residual(A: PETSc.Mat, b: PETSc.Vec, x: PETSc.Vec) -> float:
    """``||b - A x|| / ||b||`` (absolute when ``b = 0``)."""
    r = b.duplicate()
    A.mult(x, r)
    r.aypx(-1.0, b)
    rn, bn = r.norm(), b.norm()
    r.destroy()
    return float(rn / bn) if bn > 0 else float(rn)


def solve(A: Any, b: PETSc.Vec | None = None, x0: PETSc.Vec | None = None, *,
          prefix: str | None = None, options: Mapping[str, Any] | None = None,
          rtol: float | None = None, atol: float | None = None, max_it: int | None = None,
          error_if_not_converged: bool = False) -> SolveResult:
    """Solve one linear system with PETSc KSP, configured by options.

    Args:
        A: a PETSc ``Mat``, or a :class:`~hybridsolve.problems.LinearSystem` (then ``b`` and
            ``x0`` come from it, and its family's recommended options are the defaults).
        b: right-hand side.
        x0: initial guess (not modified); zero when ``None``.
        prefix: options prefix; the command line's ``-<prefix>ksp_*`` options win over
            ``options``.
        options: default options without dash, e.g. ``{"ksp_type": "cg", "pc_type": "gamg"}``.
        rtol, atol, max_it: tolerances (``-ksp_rtol`` etc. on the command line still win).

    Returns:
        The :class:`SolveResult`; the solution is ``result.x``.
    """
    defaults: dict[str, Any] = {}
    if b is None:
        system = A
        if not hasattr(system, "A"):
            raise InputError("solve(A, b): give a right-hand side, or pass a LinearSystem")
        A, b = system.A, system.b
        x0 = system.x0 if x0 is None else x0
        defaults.update(system.default_options)
    defaults.update(options or {})
    solver = KrylovSolver(A.getComm().tompi4py(), prefix=prefix, options=defaults,
                          rtol=rtol, atol=atol, max_it=max_it)
    try:
        return solver.solve(A, b, x0, error_if_not_converged=error_if_not_converged)
    finally:
        solver.destroy()
