"""The ``solve()`` front door: a thin layer over PETSc KSP that honours options and prefixes."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping

import numpy as np

from hybridsolve.errors import CollectiveError, InputError, NotSPDError, SolverError
from hybridsolve.la.petsc import operator_key
from hybridsolve.options import check_omega, check_prefix, defaults_under_prefix
from hybridsolve.solvers.base import context_info
from hybridsolve.solvers.registry import METHODS, get_method
from hybridsolve.solvers.result import SolveResult
from hybridsolve.stack import MPI, PETSc

__all__ = ["KrylovSolver", "solve", "reason_name", "norm_type_name", "METHODS", "method_options"]

_SOR_TYPES = {"forward": "pc_sor_local_forward", "backward": "pc_sor_local_backward",
              "symmetric": "pc_sor_local_symmetric"}
_INDEFINITE = ("DIVERGED_INDEFINITE_MAT", "DIVERGED_INDEFINITE_PC")


def method_options(method: str | None, *, omega: float | None = None,
                   sor_type: str | None = None) -> dict[str, Any]:
    """The PETSc options of a registered method (:mod:`hybridsolve.solvers.registry`), with
    the SOR relaxation factor and sweep for ``sor``/``ssor-pcg``.

    Raises:
        InputError: unknown method, omega outside (0, 2), or a non-symmetric SOR for SSOR-PCG.
    """
    if method is None:
        opts: dict[str, Any] = {}
    else:
        m = get_method(method)
        opts = m.petsc_options()
        method = m.name
    if omega is not None:
        check_omega(omega)
        opts["pc_sor_omega"] = omega
    if sor_type is not None:
        if sor_type not in _SOR_TYPES:
            raise InputError(f"unknown SOR type {sor_type!r}; known: {', '.join(_SOR_TYPES)}")
        if method == "ssor-pcg" and sor_type != "symmetric":
            raise InputError("ssor-pcg needs the symmetric SOR sweep: CG needs an SPD preconditioner")
        opts[_SOR_TYPES[sor_type]] = None
    elif method == "sor":
        opts[_SOR_TYPES["forward"]] = None
    elif method == "ssor-pcg":
        opts[_SOR_TYPES["symmetric"]] = None
    return opts


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
        method: ``pcg``, ``sor`` or ``ssor-pcg`` (see :data:`METHODS`); ``None``: the options'.
        omega, sor_type: SOR relaxation factor in (0, 2) and sweep (forward, backward, symmetric).
        check_symmetric: with CG, check an assembled operator is symmetric before solving.

    CG that meets a non-SPD operator or preconditioner (PETSc's ``DIVERGED_INDEFINITE_*``)
    raises :class:`~hybridsolve.errors.NotSPDError`; a right-hand side with NaN/Inf raises
    :class:`~hybridsolve.errors.InputError`.

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
        method: str | None = None,
        omega: float | None = None,
        sor_type: str | None = None,
        check_symmetric: bool = True,
    ) -> None:
        self._prefix = check_prefix(prefix)
        self._options = dict(options or {})
        self._options.update(method_options(method, omega=omega, sor_type=sor_type))
        self._check_symmetric = check_symmetric
        self._checked: tuple | None = None
        self._n: int | None = None
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
        kind = self._ksp.getType()
        if kind == "python":
            kind = type(self._ksp.getPythonContext()).__name__.lower()
        pc = self._ksp.getPC()
        pkind = pc.getType()
        if pkind == "python":
            pkind = type(pc.getPythonContext()).__name__.lower()
        return f"{kind}+{pkind}"

    def solve(self, A: PETSc.Mat, b: PETSc.Vec, x0: PETSc.Vec | None = None, *,
              P: PETSc.Mat | None = None, error_if_not_converged: bool = False) -> SolveResult:
        """Solve ``A x = b`` (starting from ``x0`` when given; ``x0`` is not modified).

        Raises:
            InputError: sizes do not match.
            SolverError: not converged and ``error_if_not_converged``.
        """
        _check_sizes(A, b, x0)
        n = A.getSize()[0]
        if self._n is not None and self._n != n:
            raise InputError(f"{self._prefix or 'solve'}: the operator's size changed from "
                             f"{self._n} to {n} inside a sequence; use a new KrylovSolver")
        self._n = n
        try:
            return self._solve(A, b, x0, P, error_if_not_converged)
        except PETSc.Error as err:
            # an error raised in a python context (our KSP/PC/Mat) reaches us wrapped in a
            # PETSc error: hand the user the original, clear one
            cause = err.__cause__ or err.__context__
            while cause is not None:
                if isinstance(cause, CollectiveError):
                    raise cause from None
                cause = cause.__cause__ or cause.__context__
            raise

    def _solve(self, A, b, x0, P, error_if_not_converged) -> SolveResult:
        ksp = self._ksp
        ksp.setOperators(A, P if P is not None else A)
        # Code defaults stay in the database through the first solve (sub-solvers read theirs
        # during set-up) and are removed afterwards. Set-up is timed as part of the solve.
        first = not self._configured
        scope = defaults_under_prefix(self._prefix, self._options) if first else contextlib.nullcontext()
        with scope:
            if first:
                db = PETSc.Options()
                if db.hasName(self._prefix + "pc_sor_omega"):
                    check_omega(db.getString(self._prefix + "pc_sor_omega"))
                ksp.setFromOptions()
                self._configured = True
                self._stationary_monitor()
            self._check_operator(A, b, x0)
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
            info=context_info(ksp),
        )
        if res.reason_name in _INDEFINITE:
            what = "matrix" if res.reason_name.endswith("MAT") else "preconditioner"
            raise NotSPDError(
                f"{self._prefix or 'solve'}: {ksp.getType()} found the {what} is not symmetric "
                f"positive definite ({res.reason_name} after {res.iterations} its); CG needs SPD: "
                "use MINRES or GMRES, or an SPD preconditioner (e.g. symmetric SOR, ICC, GAMG)")
        if error_if_not_converged and not res.converged:
            raise SolverError(f"{self._prefix or 'solve'}: {res.summary()}")
        return res

    def destroy(self) -> None:
        self._ksp.destroy()

    def _stationary_monitor(self) -> None:
        """Richardson with PCSOR and no monitor runs all its sweeps inside the PC and skips the
        convergence test (PETSc's PCApplyRichardson shortcut): a no-op monitor keeps PETSc's
        own loop, so rtol, the residual history and the iteration count mean what they say."""
        if self._ksp.getType() == "richardson":
            self._ksp.setMonitor(lambda ksp, its, rnorm: None)

    def _check_operator(self, A: PETSc.Mat, b: PETSc.Vec, x0: PETSc.Vec | None) -> None:
        bn = b.norm()
        if not np.isfinite(bn):
            raise InputError("the right-hand side holds NaN or Inf")
        if x0 is not None and not np.isfinite(x0.norm()):
            raise InputError("the initial guess holds NaN or Inf")
        if not self._check_symmetric or self._ksp.getType() not in ("cg", "pipecg", "fcg"):
            return
        key = operator_key(A)
        if self._checked == key or A.getType() == "python":
            return
        known, sym = A.isSymmetricKnown()
        if not (known and sym):
            tol = 1e-12 * A.norm(PETSc.NormType.INFINITY)
            if not A.isSymmetric(tol):
                raise NotSPDError(f"{self._prefix or 'solve'}: the matrix is not symmetric, so CG "
                                  "does not apply: use GMRES (-ksp_type gmres) or BiCGStab")
        self._checked = key


def true_residual(A: PETSc.Mat, b: PETSc.Vec, x: PETSc.Vec) -> float:
    """``||b - A x|| / ||b||`` (absolute when ``b = 0``)."""
    r = b.duplicate()
    A.mult(x, r)
    r.aypx(-1.0, b)
    rn, bn = r.norm(), b.norm()
    r.destroy()
    return float(rn / bn) if bn > 0 else float(rn)


def solve(A: Any, b: PETSc.Vec | None = None, x0: PETSc.Vec | None = None, *,
          method: str | None = None, omega: float | None = None, sor_type: str | None = None,
          prefix: str | None = None, options: Mapping[str, Any] | None = None,
          rtol: float | None = None, atol: float | None = None, max_it: int | None = None,
          error_if_not_converged: bool = False) -> SolveResult:
    """Solve one linear system with PETSc KSP, configured by options.

    Args:
        A: a PETSc ``Mat``, or a :class:`~hybridsolve.problems.LinearSystem` (then ``b`` and
            ``x0`` come from it, and its family's recommended options are the defaults).
        b: right-hand side.
        x0: initial guess (not modified); zero when ``None``.
        method: ``pcg`` (CG, any PC), ``sor`` (Richardson + SOR) or ``ssor-pcg`` (CG + symmetric
            SOR); ``None`` leaves the choice to ``options`` and the command line.
        omega, sor_type: SOR relaxation factor in (0, 2) and sweep for ``sor``/``ssor-pcg``.
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
                          rtol=rtol, atol=atol, max_it=max_it, method=method, omega=omega,
                          sor_type=sor_type)
    try:
        return solver.solve(A, b, x0, error_if_not_converged=error_if_not_converged)
    finally:
        solver.destroy()
