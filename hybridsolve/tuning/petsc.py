"""Tuners: a learner choosing a solver parameter for each solve of a sequence, on PETSc.

:class:`SORTuner` sets PCSOR's omega (``sor``, ``ssor-pcg``; assembled matrices and the
matrix-free stencil operators alike, whose MatSOR runs the Numba kernels), solves, and feeds the
cost back. :class:`OptionsTuner` does the same for any PETSc option with a few discrete values.

Under MPI the learner lives on rank 0; its choice is broadcast, so every rank uses the same
value, and the cost it learns from is the same on every rank (iterations; wall time is the
maximum over ranks). Inside a time loop::

    tuner = SORTuner(KrylovSolver(comm, method="ssor-pcg", rtol=1e-8), "chebcb",
                     context_range=(0.0, 10.0))
    for step in range(steps):
        result = tuner.solve(A, b, x0=u, context=kappa(t))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.options import check_omega
from hybridsolve.parallel import collective_call
from hybridsolve.solvers.petsc import KrylovSolver
from hybridsolve.solvers.result import SolveResult
from hybridsolve.stack import MPI, PETSc
from hybridsolve.tuning.learners import (LEARNERS, FixedValue, Learner, default_omegas,
                                         load_learner, make_learner)

__all__ = ["SORTuner", "OptionsTuner", "COSTS"]

#: What a tuner learns from: the solver's iteration count, or its wall time in seconds (the
#: maximum over ranks, set-up included); ``time+learner`` adds the learner's own time.
COSTS = ("iterations", "time")


class _Tuner:
    """The choose -> set -> solve -> observe cycle shared by the tuners (rank 0 learns)."""

    option: str = ""      # the PETSc option tuned (without prefix)
    info_key: str = ""    # its name in ``SolveResult.info``

    def __init__(self, solver: KrylovSolver, learner: Learner | str, *, values=None,
                 cost: str = "iterations", context_range=None, seed: int = 0,
                 checkpoint: str | Path | None = None, run: dict | None = None,
                 **learner_kwargs: Any) -> None:
        if not isinstance(solver, KrylovSolver):
            raise InputError(f"{type(self).__name__} wraps a hybridsolve KrylovSolver, got "
                             f"{type(solver).__name__}")
        if cost not in COSTS:
            raise InputError(f"{type(self).__name__}: unknown cost {cost!r}; known: {', '.join(COSTS)}")
        if PETSc.Options().hasName(solver.prefix + self.option):
            raise InputError(f"{type(self).__name__} chooses -{solver.prefix}{self.option} "
                             "itself: remove it from the options")
        self.solver = solver
        self.cost = cost
        self.comm: MPI.Comm = solver.ksp.getComm().tompi4py()
        self.rank = self.comm.rank
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.run = run
        self.resumed = False
        self.learner_time = 0.0
        self.results: list[SolveResult] = []
        self.values: list[float] = []
        # Every rank builds (and so validates) the learner: bad input fails everywhere alike.
        # Only rank 0's learner ever observes; the others stay as built.
        if self.checkpoint is not None and self.checkpoint.exists():
            learner = collective_call(self.comm, lambda: load_learner(self.checkpoint, self.run))
            self.resumed = True
        elif isinstance(learner, str):
            kwargs = dict(learner_kwargs, seed=seed)
            if values is not None:
                kwargs["arms"] = values
            cls = LEARNERS.get(learner.lower().replace("_", "-"))
            if cls is not None and cls.contextual:
                kwargs["context_range"] = context_range
            if cost == "time":
                kwargs.setdefault("floor", 0.0)
            if cls is FixedValue:
                arms = np.asarray(kwargs.pop("arms", [1.0]), dtype=float).reshape(-1)
                kwargs.setdefault("value", float(arms[0]) if arms.size else float("nan"))
            learner = collective_call(self.comm, lambda: make_learner(learner, **kwargs))
        elif not isinstance(learner, Learner):
            raise InputError(f"{type(self).__name__}: learner must be a Learner or a name, got {learner!r}")
        self.learner = learner
        self._check_values(self.learner.arms)

    # -- helpers -----------------------------------------------------------------------------
    def _check_values(self, values: np.ndarray) -> None:
        pass

    def _format(self, value: float) -> str:
        return repr(float(value))

    def _reread(self, ksp: PETSc.KSP) -> None:
        """Make the solver read the option again (it was just set in the database)."""
        ksp.setFromOptions()

    def _check_solver(self) -> None:
        """Called after the first solve, when the solver is configured."""

    def _set(self, value: float) -> None:
        """Before the first solve the solver is not configured yet: the value is one of its code
        defaults. Afterwards it is put in the options database and re-read."""
        if not self.results:
            self.solver._options[self.option] = self._format(value)
            return
        db = PETSc.Options()
        key = self.solver.prefix + self.option
        db[key] = self._format(value)
        try:
            self._reread(self.solver.ksp)
        finally:
            db.delValue(key)

    # -- the cycle ---------------------------------------------------------------------------
    def choose(self, context: float | None = None) -> float:
        """Rank 0's learner picks a value for ``context``; every rank gets the same value."""
        ctxs = self.comm.allgather(context)
        if any(c != ctxs[0] for c in ctxs):
            raise CollectiveError(f"{type(self).__name__}: the ranks passed different contexts "
                                  f"({ctxs}); the context must be the same on every rank")
        t0 = time.perf_counter()
        msg: tuple[float | None, str | None] = (None, None)
        if self.rank == 0:
            try:
                msg = (self.learner.choose(context), None)
            except InputError as e:
                msg = (None, str(e))
        value, err = self.comm.bcast(msg, root=0)
        self.learner_time += time.perf_counter() - t0
        if err is not None:
            raise InputError(err)
        return float(value)

    def observe(self, cost: float) -> None:
        """Feed back the cost of the last choice (rank 0's value counts)."""
        t0 = time.perf_counter()
        err = None
        if self.rank == 0:
            try:
                self.learner.observe(cost)
                if self.checkpoint is not None:
                    self.learner.save(self.checkpoint, self.run)
            except InputError as e:
                err = str(e)
        err = self.comm.bcast(err, root=0)
        self.learner_time += time.perf_counter() - t0
        if err is not None:
            raise InputError(err)

    def solve(self, A: PETSc.Mat, b: PETSc.Vec, x0: PETSc.Vec | None = None, *,
              context: float | None = None, P: PETSc.Mat | None = None) -> SolveResult:
        """Choose a value, set it on the solver, solve ``A x = b``, learn from the cost.

        The result's ``info`` holds the value used (``result.info["value"]``).
        """
        value = self.choose(context)
        self._set(value)
        first = not self.results
        result = self.solver.solve(A, b, x0, P=P)
        if first:
            self.solver._options.pop(self.option, None)
            self._check_solver()
        cost = result.iterations if self.cost == "iterations" else result.time
        if not result.converged:
            # a value that failed costs the whole budget: the learner must learn to avoid it
            cost = max(cost, self.solver.ksp.getTolerances()[3] if self.cost == "iterations" else cost)
        self.observe(cost)
        result.info[self.info_key] = value
        result.info["value"] = value
        self.results.append(result)
        self.values.append(value)
        return result

    def summary(self) -> str:
        its = sum(r.iterations for r in self.results)
        tsolve = sum(r.time for r in self.results)
        return (f"{len(self.results)} solves, {its} iterations, {tsolve:.3g} s solving, "
                f"{self.learner_time:.3g} s learning; " + (self.learner.summary() if self.rank == 0 else ""))


class SORTuner(_Tuner):
    """Learns SOR's relaxation factor omega across a sequence of solves (Khodak et al., ICLR 2024).

    Args:
        solver: a :class:`KrylovSolver` whose preconditioner is PETSc's SOR (``method="sor"`` or
            ``"ssor-pcg"``, or ``-pc_type sor`` by options); a matrix-free stencil operator's SOR
            runs our Numba kernels with the chosen omega.
        learner: a :class:`~hybridsolve.tuning.learners.Learner`, or a name (``tsallis``,
            ``binned-tsallis``, ``chebcb``, ``fixed``) built with ``values`` (default: 20 omegas
            in [1, 1.95]), ``context_range`` and ``seed``.
        cost: ``iterations`` (default) or ``time``.
        checkpoint: JSON file the learner is saved to after every solve and resumed from when
            it exists (rank 0 writes it).

    Raises:
        InputError: an omega outside (0, 2), an empty grid, a command-line ``-pc_sor_omega``
            (the tuner chooses omega), a preconditioner that is not SOR.
    """

    option = "pc_sor_omega"
    info_key = "omega"

    def __init__(self, solver: KrylovSolver, learner: Learner | str = "tsallis", *,
                 omegas: Sequence[float] | None = None, cost: str = "iterations",
                 context_range=None, seed: int = 0, checkpoint=None, **learner_kwargs) -> None:
        super().__init__(solver, learner, values=default_omegas() if omegas is None else omegas,
                         cost=cost, context_range=context_range, seed=seed,
                         checkpoint=checkpoint, **learner_kwargs)

    def _check_values(self, values):
        for w in values:
            check_omega(w)

    def _check_solver(self) -> None:
        pc = self.solver.ksp.getPC()
        if pc.getType() != "sor":
            raise InputError(f"SORTuner needs PETSc's SOR preconditioner (method sor or "
                             f"ssor-pcg), but the solver uses -pc_type {pc.getType()}")

    def _reread(self, ksp: PETSc.KSP) -> None:
        self._check_solver()
        ksp.getPC().setFromOptions()


class OptionsTuner(_Tuner):
    """Learns the value of any PETSc option among a few candidates, across a sequence of solves.

    Goes beyond the paper: the same bandit learners pick, e.g., GCRO-DR's recycle size
    (``ksp_gcrodr_k``), a restart length or a GAMG threshold, with iterations or wall time as
    the cost. After setting the value the solver's KSP is re-read from the options
    (``KSPSetFromOptions``), and its preconditioner rebuilt when the option is a ``pc_`` one.

    Args:
        solver: the :class:`KrylovSolver` to tune.
        option: the option name without dash and without the solver's prefix.
        values: the candidate values (numbers).
        learner, cost, context_range, seed, checkpoint: as for :class:`SORTuner`; the default
            cost here is wall time, since options change the cost of an iteration.
    """

    def __init__(self, solver: KrylovSolver, option: str, values: Sequence[float],
                 learner: Learner | str = "tsallis", *, cost: str = "time", context_range=None,
                 seed: int = 0, checkpoint=None, integer: bool | None = None,
                 **learner_kwargs) -> None:
        option = option.lstrip("-")
        if not option:
            raise InputError("OptionsTuner: give the option to tune, e.g. 'ksp_gcrodr_k'")
        self.option = self.info_key = option
        vals = np.asarray(values, dtype=float).reshape(-1)
        self.integer = bool(np.all(vals == np.round(vals))) if integer is None else integer
        super().__init__(solver, learner, values=vals, cost=cost, context_range=context_range,
                         seed=seed, checkpoint=checkpoint, **learner_kwargs)

    def _format(self, value: float) -> str:
        return str(int(round(value))) if self.integer else repr(float(value))

    def _reread(self, ksp: PETSc.KSP) -> None:
        if self.option.startswith("pc_"):
            ksp.getPC().setFromOptions()
            ksp.getPC().reset()  # rebuild the preconditioner with the new value
        else:
            ksp.setFromOptions()


def context_of(system, spec: str | None) -> float | None:
    """The scalar context of a system: ``meta:<key>`` (e.g. ``meta:kappa``), ``param:<i>`` (entry
    ``i`` of the flattened parameter array), or ``None``/``"none"`` for no context."""
    if spec is None or spec == "none":
        return None
    kind, _, key = spec.partition(":")
    if kind == "meta" and key in system.meta:
        return float(system.meta[key])
    if kind == "param":
        try:
            return float(np.asarray(system.params).reshape(-1)[int(key)])
        except (ValueError, IndexError):
            pass
    raise InputError(f"context {spec!r} is not available: use meta:<key> with a key of "
                     f"{sorted(k for k, v in system.meta.items() if isinstance(v, (int, float)))}, "
                     f"param:<index> (< {np.asarray(system.params).size}), or none")


def run_tuned_sequence(family, tuner: _Tuner, *, context: str | None = None,
                       progress: bool = False, every: int = 0, start: int = 0) -> list[SolveResult]:
    """Solve the systems ``start, start + 1, ...`` of ``family`` through ``tuner`` (warm starts
    and the previous solution for sequential families, as the family recommends); returns the
    results (``result.info["system"]`` is the system's index). ``start > 0`` resumes a sequence (e.g. at the learner's round count after a
    checkpoint); a sequential family cannot resume (each system needs the previous solution).

    ``progress`` shows a progress bar on rank 0; ``every > 0`` prints one line per ``every``
    solves instead.
    """
    from hybridsolve.parallel import print0

    comm = tuner.comm
    bar = None
    if progress and comm.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=family.count, initial=start, desc=f"tune {family.name}", unit="solve")
    results = []

    def solve_one(system):
        ctx = context_of(system, context)
        res = tuner.solve(system.A, system.b, system.x0, context=ctx)
        res.info["context"] = ctx
        return res

    if start and family.sequential:
        raise InputError(f"{family.name} is sequential (each system needs the previous "
                         f"solution): it cannot resume at system {start}; start it again with "
                         "a new checkpoint")
    for i, system, res in family.solve_each(comm, solve_one, start=start):
        res.info["system"] = i
        results.append(res)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(its=res.iterations, value=f"{res.info['value']:g}")
        if every and (i + 1) % every == 0:
            print0(f"[{i + 1}/{family.count}] {tuner.summary()}", comm=comm)
    if bar is not None:
        bar.close()
    return results
