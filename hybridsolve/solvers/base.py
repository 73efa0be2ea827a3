"""Base classes for hybridsolve's PETSc types of python type: :class:`PythonKSP`, :class:`PythonPC`.

In the spirit of Firedrake's ``PCBase``: a subclass states its name and options sub-prefix and
writes only its method; the base does what every one of them needs.

* **Options** under a sub-prefix: a KSP with ``options_key = "gcrodr"`` reads
  ``-<prefix>ksp_gcrodr_<name>`` through :meth:`option`; a value not in the database keeps the
  last configured one (so a second ``setFromOptions`` without the options changes nothing).
* **State survives** ``KSPSetFromOptions``/``PCSetFromOptions``. petsc4py builds a *new* context
  object whenever ``-ksp_python_type``/``-pc_python_type`` is read again (a driver calling
  ``ksp.setFromOptions()`` before each solve, DOLFINx's ``LinearProblem``). Every context of
  one PETSc object shares one attribute dictionary, kept in the object's composed dictionary
  (``obj.getDict()``): the recycle space, a loaded model, counters and configuration carry over.
  The dictionary goes with the PETSc object when it is destroyed.
* **Set-up split**: :meth:`initialize` the first time, :meth:`update` when the operator changed
  (for a KSP: another ``Mat`` or new values, detected by :func:`~hybridsolve.la.petsc.operator_key`
  at each solve; for a PC: PETSc's ``PCSetUp``).
* **Bookkeeping written once** (KSP): :meth:`PythonKSP.residual`, :meth:`PythonKSP.record`
  (iteration number, residual norm, history, monitors, convergence test, NaN/Inf as
  ``DIVERGED_NANORINF``, the iteration limit) and the end of a solve.
* **Statistics**: counters in :attr:`stats` (cumulative) via :meth:`count`; per-solve values
  reach :attr:`hybridsolve.SolveResult.info` under :attr:`info_key` (``solve_info``), and
  ``-ksp_view`` prints them.
* **Log events**: :meth:`event` gives one ``PETSc.Log.Event`` per phase (``"GCRODR: recycle
  update"``), shown by ``-log_view``.
* **Errors name the type**: an :class:`~hybridsolve.errors.InputError` raised inside a hook is
  re-raised as ``"GCRO-DR (prefix datagen_): ..."``; a floating-point breakdown on non-finite
  data ends the solve with ``DIVERGED_NANORINF`` instead of a PETSc error 101.

A new KSP or PC is a subclass in its own module plus one ``register_method`` line in
:mod:`hybridsolve.solvers.registry`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from hybridsolve.errors import CollectiveError, InputError, SolverError
from hybridsolve.la.petsc import operator_key
from hybridsolve.stack import PETSc

__all__ = ["PythonKSP", "PythonPC", "context_info", "python_contexts"]


def _reason(name: str) -> int:
    return int(getattr(PETSc.KSP.ConvergedReason, name))


class _PythonContext:
    """What :class:`PythonKSP` and :class:`PythonPC` share (see the module docstring)."""

    #: the name in messages, ``-ksp_view`` and ``-log_view`` (e.g. ``"GCRO-DR"``)
    name = "python context"
    #: the options sub-prefix after ``ksp_``/``pc_`` (e.g. ``"gcrodr"``)
    options_key = ""
    #: the key of this type's statistics in ``SolveResult.info`` (default: the class name, lower)
    info_key = ""
    _kind = ""   # "ksp" or "pc"
    #: whether ``-ksp_view`` adds a line with the counters (off when describe() shows them)
    view_counters = True

    def __init__(self) -> None:
        self._shared = False
        self.prefix = ""
        self.stats: dict[str, float] = {}
        self._snapshot: dict[str, float] = {}
        self._config: dict[str, Any] = {}
        self._events: dict[str, Any] = {}
        self._solve_notes: dict[str, Any] = {}

    # -- state kept on the PETSc object -------------------------------------------------------
    def _attach(self, obj) -> None:
        """Share one attribute dictionary among all contexts of ``obj`` (see the module doc)."""
        if self.__dict__.get("_shared"):
            return
        store = obj.getDict()
        key = f"hybridsolve.{type(self).__module__}.{type(self).__qualname__}"
        shared = store.get(key)
        if shared is None:
            self.__dict__["_shared"] = True
            store[key] = self.__dict__
        else:
            self.__dict__ = shared   # the first context's state: recycle space, model, counters

    def create(self, obj) -> None:  # PETSc hook: the context was attached to obj
        self._attach(obj)

    def destroy(self, obj) -> None:  # PETSc hook
        # Nothing is freed here: petsc4py calls this when a new context replaces this one (and
        # the state lives on in the new one); the state goes with the PETSc object itself.
        pass

    # -- options -------------------------------------------------------------------------------
    def configure(self) -> None:
        """Read options with :meth:`option` and check them (raise InputError)."""

    def setFromOptions(self, obj) -> None:  # PETSc hook (KSP and PC alike)
        self._attach(obj)
        self.prefix = self._prefix_of(obj)
        self._guard(self.configure)

    def _prefix_of(self, obj) -> str:
        return obj.getOptionsPrefix() or ""

    def option(self, name: str, default: Any, kind: type | None = None) -> Any:
        """The value of ``-<prefix><kind>_<options_key>_<name>``, else the value configured last,
        else ``default``. ``kind`` (int, float, bool, str) defaults to the type of ``default``."""
        opts = PETSc.Options(self.prefix)
        key = f"{self._kind}_{self.options_key}_{name}" if self.options_key else f"{self._kind}_{name}"
        current = self._config.get(name, default)
        kind = kind or type(default)
        if not opts.hasName(key):
            self._config[name] = current
            return current
        try:
            if kind is bool:
                val = opts.getBool(key, bool(current))
            elif kind is int:
                val = opts.getInt(key, int(current))
            elif kind is float:
                val = opts.getReal(key, float(current))
            else:
                val = opts.getString(key, "" if current is None else str(current))
        except PETSc.Error:
            raise InputError(f"-{self.prefix}{key}: {opts.getString(key)!r} is not a valid "
                             f"{kind.__name__}") from None
        self._config[name] = val
        return val

    def label(self) -> str:
        """The type's name and prefix, for messages."""
        return f"{self.name} (prefix {self.prefix})" if self.prefix else self.name

    # -- statistics and events -----------------------------------------------------------------
    def count(self, key: str, by: float = 1) -> None:
        """Add ``by`` to the cumulative counter ``key``."""
        self.stats[key] = self.stats.get(key, 0) + by

    def note(self, key: str, value: Any) -> None:
        """Record a per-solve value (not a counter) for ``SolveResult.info``."""
        self._solve_notes[key] = value

    def event(self, phase: str):
        """The ``PETSc.Log.Event`` of a phase (``with self.event("recycle update"): ...``)."""
        ev = self._events.get(phase)
        if ev is None:
            ev = self._events[phase] = PETSc.Log.Event(f"{self.name}: {phase}"[:60])
        return ev

    def _begin_stats(self) -> None:
        self._snapshot = dict(self.stats)
        self._solve_notes = {}

    def solve_info(self) -> dict[str, Any]:
        """This solve's counters (differences since its start), notes, and the running totals."""
        this = {k: v - self._snapshot.get(k, 0) for k, v in self.stats.items()}
        return {**this, **self._solve_notes, "total": dict(self.stats)}

    def describe(self) -> str:
        """One line for ``-ksp_view``/``-pc_view`` (the configuration); counters are added."""
        return self.name

    def view(self, obj, viewer) -> None:  # PETSc hook
        self._attach(obj)
        viewer.printfASCII(f"  {self.describe()}\n")
        if self.stats and self.view_counters:
            body = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) and not float(v).is_integer()
                             else f"{k} {int(v)}" for k, v in self.stats.items())
            viewer.printfASCII(f"  {self.name} counters: {body}\n")

    def _named(self, err: BaseException) -> BaseException:
        """An error of ours re-raised with the type's name in front."""
        msg = str(err)
        if msg.startswith(self.name):
            return err
        new = type(err)(f"{self.label()}: {msg}")
        return new

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except CollectiveError as err:
            raise self._named(err) from None


class PythonKSP(_PythonContext):
    """Base of our KSPs of python type (``-ksp_type python -ksp_python_type pkg.mod.Class``).

    A subclass implements :meth:`run` (the iteration, using :meth:`residual` and :meth:`record`)
    and, where it needs them, :meth:`configure` (read options with :meth:`option`),
    :meth:`initialize`, :meth:`update` (the operator changed), :meth:`setup` (norm type, PC side)
    and :meth:`describe`.
    """

    _kind = "ksp"

    # -- hooks for subclasses ---------------------------------------------------------------
    def setup(self, ksp) -> None:
        """Fix norm type / PC side; called at every ``KSPSetUp`` and before every solve."""
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)

    def initialize(self, ksp, A) -> None:
        """First solve with an operator."""

    def update(self, ksp, A) -> None:
        """The operator changed (another Mat, or new values) since the last solve."""

    def run(self, ksp, b, x) -> tuple[int, float, int]:
        """Solve; return ``(iterations, residual norm, reason)``."""
        raise NotImplementedError

    # -- PETSc hooks -------------------------------------------------------------------------
    def setUp(self, ksp) -> None:
        self._attach(ksp)
        self.prefix = self._prefix_of(ksp)
        self._guard(lambda: self.setup(ksp))

    def reset(self, ksp) -> None:
        """``KSPReset``: forget what was learnt from previous operators."""
        self._attach(ksp)
        self.forget()

    def forget(self) -> None:
        """Drop the state carried between solves (subclasses free their spaces here)."""
        self.__dict__.pop("_key", None)

    def solve(self, ksp, b, x) -> None:
        self._attach(ksp)
        self.prefix = self._prefix_of(ksp)
        self._begin_stats()
        A, _ = ksp.getOperators()
        t0 = time.perf_counter()

        def body():
            key = operator_key(A)
            prev = self.__dict__.get("_key")
            if prev is None:
                self.initialize(ksp, A)
            elif prev != key:
                with self.event("operator update"):
                    self.update(ksp, A)
                self.count("operator_updates")
            self._key = key
            return self.run(ksp, b, x)

        try:
            its, rnorm, reason = self._guard(body)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError, ZeroDivisionError) as err:
            # a breakdown of the dense algebra; on non-finite data that is DIVERGED_NANORINF
            its = ksp.getIterationNumber()
            rnorm = float(ksp.getResidualNorm())
            data = [b.norm(), x.norm()]
            if A.getType() not in ("python", "shell"):
                data.append(A.norm(PETSc.NormType.FROBENIUS))
            if np.isfinite(data).all():
                raise SolverError(f"{self.label()}: breakdown: {err}") from err
            reason = _reason("DIVERGED_NANORINF")
        ksp.setIterationNumber(its)
        if np.isfinite(rnorm):
            ksp.setResidualNorm(rnorm)
        else:
            reason = _reason("DIVERGED_NANORINF")
        ksp.setConvergedReason(reason)
        self.count("solves")
        self.count("iterations", its)
        self.count("time", time.perf_counter() - t0)

    # -- bookkeeping for run() -----------------------------------------------------------------
    def residual(self, ksp, b, x) -> PETSc.Vec:
        """``r = b - A x`` as a new Vec (``x`` is zeroed first unless the guess is nonzero)."""
        A, _ = ksp.getOperators()
        r = b.duplicate()
        if ksp.getInitialGuessNonzero():
            A.mult(x, r)
            r.aypx(-1.0, b)
        else:
            x.set(0.0)
            b.copy(r)
        return r

    def record(self, ksp, its: int, rnorm: float) -> int:
        """Log iteration ``its`` with residual norm ``rnorm`` (history, monitors) and return the
        convergence test's reason: non-finite norms give ``DIVERGED_NANORINF``, reaching
        ``max_it`` unconverged ``DIVERGED_MAX_IT``."""
        rnorm = float(rnorm)
        ksp.setIterationNumber(its)
        if not np.isfinite(rnorm):   # PETSc refuses to store it: stop here
            return _reason("DIVERGED_NANORINF")
        ksp.setResidualNorm(rnorm)
        ksp.logConvergenceHistory(rnorm)
        ksp.monitor(its, rnorm)
        reason = int(ksp.callConvergenceTest(its, rnorm))
        if reason == 0 and its >= ksp.getTolerances()[3]:
            reason = _reason("DIVERGED_MAX_IT")
        return reason


class PythonPC(_PythonContext):
    """Base of our PCs of python type (``-pc_type python -pc_python_type pkg.mod.Class``).

    A subclass implements :meth:`apply_pc` (and optionally :meth:`apply_block` for a block of
    vectors), and where needed :meth:`configure`, :meth:`initialize`, :meth:`update` and
    :meth:`classical` (the PC a caller may switch to when the learned one is not wanted).
    """

    _kind = "pc"

    def initialize(self, pc) -> None:
        """First set-up."""

    def update(self, pc) -> None:
        """The operator changed (PETSc called ``PCSetUp`` again); default: initialize again."""
        self.initialize(pc)

    def apply_pc(self, pc, x, y) -> None:
        raise NotImplementedError

    def classical(self, pc, x, y) -> bool:
        """Apply the classical PC this one falls back to; False when there is none."""
        return False

    # -- PETSc hooks -------------------------------------------------------------------------
    def setUp(self, pc) -> None:
        self._attach(pc)
        self.prefix = self._prefix_of(pc)
        first = not self.__dict__.get("_initialized")
        with self.event("set-up"):
            self._guard(lambda: self.initialize(pc) if first else self.update(pc))
        self._initialized = True

    def ready(self, pc) -> None:
        """Make sure the PC is set up (a context created by a later ``setFromOptions`` on an
        unchanged operator is not set up again by PETSc; the shared state usually is)."""
        self._attach(pc)
        if not self.__dict__.get("_initialized"):
            self.setUp(pc)

    def apply(self, pc, x, y) -> None:
        self.ready(pc)
        self._guard(lambda: self.apply_pc(pc, x, y))

    def preSolve(self, pc, ksp, b, x) -> None:
        self._attach(pc)
        self._begin_stats()

    def reset(self, pc) -> None:
        self._attach(pc)
        self._initialized = False


def python_contexts(ksp) -> list[_PythonContext]:
    """Our python contexts on a KSP: its own (if a :class:`PythonKSP`) and its PC's."""
    out = []
    if ksp.getType() == "python":
        ctx = ksp.getPythonContext()
        if isinstance(ctx, _PythonContext):
            out.append(ctx)
    pc = ksp.getPC()
    if pc.getType() == "python":
        ctx = pc.getPythonContext()
        if isinstance(ctx, _PythonContext):
            out.append(ctx)
    return out


def context_info(ksp) -> dict[str, Any]:
    """The per-solve statistics of our python KSP/PC on ``ksp``, keyed by their ``info_key``."""
    return {(c.info_key or type(c).__name__.lower()): c.solve_info() for c in python_contexts(ksp)}
