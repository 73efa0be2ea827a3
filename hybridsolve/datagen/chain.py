"""Solving a sorted chain with one KSP that carries information along it, and verifying samples."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hybridsolve.errors import SolverError
from hybridsolve.datagen.config import _is_direct, _shares_pattern
from hybridsolve.log import warn_once

log = logging.getLogger(__name__)


def _chunk(perm: np.ndarray, comm, mode: str) -> tuple[np.ndarray, Any]:
    from hybridsolve.stack import MPI

    if mode == "domain" or comm.size == 1:
        return perm, comm
    bounds = np.linspace(0, len(perm), comm.size + 1).round().astype(int)
    return perm[bounds[comm.rank]: bounds[comm.rank + 1]], MPI.COMM_SELF


def _solve_chain(cfg, family, params, perm, parts, name, opts, comm, stats, progress,
                 fresh: set) -> None:
    from hybridsolve.solvers.petsc import KrylovSolver

    chain, sub = _chunk(perm, comm, cfg.mode)
    position = np.empty(len(perm), dtype=np.int64)
    position[perm] = np.arange(len(perm))
    layout: dict = {}
    writer = sub.rank == 0
    todo = np.array([not parts.has(int(i)) for i in chain]) if writer else None
    todo = sub.bcast(todo, root=0)
    stats["skipped"] += int((~todo).sum()) if writer else 0
    if not todo.any():
        return
    bar = progress if comm.rank == 0 else None  # the global count's Progress (run.py) or None
    from hybridsolve.stack import PETSc

    # Candidates: with the automatic choice for a changing SPD matrix, the first samples are
    # solved with each candidate in turn and the chain goes on with the fastest (its per-sample
    # solve time, PC set-up included, measured here): the two-level PC (a coarse space kept
    # along the chain), GAMG with its interpolation kept, and plain ICC (skr_bar.md).
    one_mat = _shares_pattern(cfg, family)
    candidates = [opts]
    user_pc = "pc_type" in cfg.petsc or PETSc.Options().hasName("datagen_pc_type")
    if one_mat and name == "pcg" and cfg.solver == "auto" and not user_pc:
        plain = {k: v for k, v in opts.items() if not k.startswith(("pc_gamg", "pc_twolevel", "pc_python"))}
        candidates = [dict(plain, pc_type="gamg", pc_gamg_reuse_interpolation="true")]
        candidates.append(dict(plain, pc_type="icc") if cfg.mode == "data" or sub.size == 1 else
                          dict(plain, pc_type="bjacobi", sub_pc_type="icc"))
        candidates.insert(0, dict(opts))
    solvers = [KrylovSolver(sub, prefix="datagen_", options=o) for o in candidates]
    trial, trial_times = 3, [[] for _ in candidates]
    active, n_solved = 0, 0
    solver = solvers[0]
    prev_x = None          # the chain neighbour's solution (warm start / heat's previous step)
    fixed_A = None         # fixed-matrix families: one operator, one PC set-up
    try:
        for pos, idx in enumerate(chain):
            idx = int(idx)
            if not todo[pos]:
                if cfg.warm_start or family.sequential:
                    prev_x = _load_previous(parts, idx, family, params, sub, prev_x, writer, layout)
                continue
            if len(candidates) > 1 and n_solved < trial * len(candidates):
                active = n_solved // trial          # still trying the candidates in turn
            solver = solvers[active]
            reuse = family.fixed_matrix and cfg.reuse_matrix and fixed_A is not None
            system = family.system_from_params(params[idx], sub, index=idx,
                                               previous=prev_x if family.sequential else None,
                                               matrix=not reuse,
                                               into=fixed_A if one_mat else None)
            if family.sequential and prev_x is None and idx > 0:
                raise SolverError("datagen: heat chain resumed without its previous step")
            A = fixed_A if reuse else system.A
            if family.fixed_matrix and cfg.reuse_matrix and fixed_A is None:
                fixed_A = A
            elif one_mat and A is not fixed_A:
                # the chain's one Mat object: later systems write only their values into it
                # (values-only assembly), and the PCs refactor numerically (ICC, the two-level
                # PC's coarse operator) or keep their hierarchy (GAMG's interpolation)
                if fixed_A is not None:
                    stats["pattern_changes"] = stats.get("pattern_changes", 0) + 1
                    fixed_A.destroy()
                fixed_A = A
            x0 = system.x0
            if cfg.warm_start and prev_x is not None and prev_x.getSize() == system.size:
                x0 = prev_x
            if _is_direct(candidates[active]):  # a direct solve takes no initial guess
                x0 = None
            system.A = A  # the operator actually solved with (shared for fixed matrices)
            bnorm = system.b.norm()
            solver.ksp.setTolerances(rtol=0.0, atol=cfg.tol * bnorm if bnorm > 0 else cfg.tol)
            res = solver.solve(A, system.b, x0)
            fell_back = not (res.converged and res.true_residual <= cfg.tol * (1 + 1e-9))
            if fell_back:
                warn_once(log, "datagen: the chain solver %s missed tol %g; such samples are "
                          "finished by a direct solve (GMRES + LU) and counted as fallbacks "
                          "(summary, provenance, per-sample 'fallback')", solver.method(), cfg.tol)
                log.info("datagen: sample %d: %s; fallback", idx, res.summary())
                res = _fallback(A, system, res, cfg.tol, sub)
                stats["fallbacks"] += 1
            x = system.gather(res.x)
            if writer:
                parts.write(idx, x, params[idx], fallback=fell_back, iterations=res.iterations, time=res.time,
                            true_residual=res.true_residual, reason=res.reason,
                            chain_position=int(position[idx]), rank=comm.rank)
            stats["solved"] += 1
            fresh.add(idx)
            n_solved += 1
            stats.setdefault("method", solver.method())
            if len(candidates) > 1 and n_solved <= trial * len(candidates):
                trial_times[active].append(res.time)
                if n_solved == trial * len(candidates):  # choose: mean of all but the first
                    cost = [np.mean(t[1:]) if len(t) > 1 else np.inf for t in trial_times]
                    active = int(np.argmin(cost))
                    stats["method"] = solvers[active].method()
                    stats["trial"] = {solvers[i].method(): float(c) for i, c in enumerate(cost)}
            stats["ksp"] = _describe(solvers[active])
            stats["options"] = dict(candidates[active])
            stats["iterations"] += res.iterations
            stats["solve_time"] += res.time
            if prev_x is not None and prev_x is not res.x:
                prev_x.destroy()
            prev_x = res.x
            if system.A is not None and system.A is not fixed_A:
                system.A.destroy()
            system.b.destroy()
            if system.x0 is not None:
                system.x0.destroy()
            if bar is not None:
                bar.update(1)
    finally:
        for sv in solvers:
            sv.destroy()
        if prev_x is not None:
            prev_x.destroy()
        if fixed_A is not None:
            fixed_A.destroy()


def _describe(solver) -> str:
    """What the chain's KSP says it is: our python KSP/PC types describe their own settings
    (``GCRO-DR(m=40, k=20): ...``); PETSc's own types by their type names."""
    from hybridsolve.solvers.base import python_contexts

    ctxs = python_contexts(solver.ksp)
    return "; ".join(c.describe() for c in ctxs) if ctxs else solver.method()


def _load_previous(parts, idx, family, params, sub, prev_x, writer, layout):
    """The stored solution of an already-done sample, as a Vec laid out like the family's
    systems (the layout is the same for every system of a family on a communicator)."""
    data = parts.read(idx) if writer else None
    x = sub.bcast(None if data is None else data["x"], root=0)
    if x is None:
        return prev_x
    if "template" not in layout:
        probe = family.system_from_params(params[idx], sub, index=idx,
                                          previous=prev_x if family.sequential else None)
        layout["template"] = probe.A.createVecRight()
        layout["canonical"] = probe.canonical
        probe.destroy()
    v = layout["template"].duplicate()
    v.getArray()[:] = x[layout["canonical"]]
    if prev_x is not None:
        prev_x.destroy()
    return v


def _fallback(A, system, res, tol, sub):
    """The chain's solver missed the true tolerance: finish the sample with a sparse direct LU
    inside GMRES (the first iteration is the direct solution, later ones refine it; the true
    residual is tested), or for a matrix-free operator with unpreconditioned GMRES(200), from
    where the chain's solver stopped (or from zero, when it stopped worse than zero: a diverged
    solve). The caller counts it (per sample and in the provenance)."""
    from hybridsolve.solvers.petsc import KrylovSolver
    from hybridsolve.stack import PETSc

    if A.getType() in ("python", "shell"):
        opts = {"ksp_type": "gmres", "ksp_gmres_restart": 200, "pc_type": "none",
                "ksp_max_it": 50000}
    else:
        opts = {"ksp_type": "gmres", "ksp_gmres_restart": 30, "pc_type": "lu", "ksp_max_it": 300,
                "ksp_pc_side": "right"}
        if sub.size > 1:
            opts["pc_factor_mat_solver_type"] = "mumps"
    fb = KrylovSolver(sub, prefix="datagen_fallback_",
                      options={**opts, "ksp_norm_type": "unpreconditioned"})
    try:
        bnorm = system.b.norm()
        # no divergence test: the start may be far off, and only the true residual decides
        fb.ksp.setTolerances(rtol=0.0, atol=tol * bnorm, divtol=PETSc.UNLIMITED)
        start = res.x if np.isfinite(res.true_residual) and res.true_residual < 1 else None
        res2 = fb.solve(A, system.b, start)
    finally:
        fb.destroy()
    res.x.destroy()
    if not (res2.converged and res2.true_residual <= tol * (1 + 1e-9)):
        raise SolverError(f"datagen: sample {system.meta.get('index')} did not reach tol {tol:g}: "
                          f"{res2.summary()}")
    res2.iterations += res.iterations
    res2.time += res.time
    return res2


def _verify(cfg, family, params, parts, comm, fresh: set) -> int:
    """Samples not solved in this run (resumed from parts) against the true residual of their own
    freshly assembled system (split over the ranks, each on COMM_SELF; a sequential chain on
    rank 0). The samples solved in this run were checked against the true residual of the very
    system they solved, before they were written. Unreadable or failing parts are removed.
    Returns how many, on every rank."""
    if family.sequential:
        if len(fresh) == cfg.count:
            return 0
        bad = _verify_indices(cfg, family, params, parts, range(cfg.count), True) \
            if comm.rank == 0 else 0
        return comm.bcast(bad, root=0)
    todo = [i for i in range(comm.rank, cfg.count, comm.size) if i not in fresh]
    return comm.allreduce(_verify_indices(cfg, family, params, parts, todo, False))


def _verify_indices(cfg, family, params, parts, indices, sequential) -> int:
    from hybridsolve.stack import MPI

    bad, prev = 0, None
    for idx in indices:
        data = parts.read(idx)
        if data is None or not np.array_equal(data["input"], params[idx]):
            parts.remove(idx)
            bad += 1
            if sequential:
                break
            continue
        system = family.system_from_params(params[idx], MPI.COMM_SELF, index=idx,
                                           previous=prev if sequential else None)
        A, b = system.to_scipy()
        x = data["x"]
        rel = np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), 1e-300)
        if sequential:
            if prev is not None:
                prev.destroy()
            prev = system.A.createVecRight()
            prev.getArray()[:] = x[system.canonical]
        system.destroy()
        if not rel <= cfg.tol * (1 + 1e-6):
            parts.remove(idx)
            bad += 1
            if sequential:
                break
    if prev is not None:
        prev.destroy()
    if sequential and bad:  # later steps were computed from a bad or missing one
        for idx in indices:
            if idx > 0 and parts.has(idx) and not parts.has(idx - 1):
                for j in range(idx, cfg.count):
                    parts.remove(j)
                break
    return bad
