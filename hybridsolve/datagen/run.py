"""The datagen job: draw, sort, solve the chains, verify, write."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from hybridsolve.errors import SolverError
from hybridsolve.datagen.config import DatagenConfig, solver_options
from hybridsolve.datagen.store import Parts, _prepare
from hybridsolve.datagen.chain import _solve_chain, _verify
from hybridsolve.datagen.dataset import _assemble, sample_layout
from hybridsolve.datagen.progress import Progress, count_parts


# --- the job -------------------------------------------------------------------------------------
def run(cfg: DatagenConfig, comm=None, progress: bool = True) -> dict:
    """Generate (or finish) the dataset described by ``cfg``; returns a summary (every rank)."""
    from hybridsolve.problems import get_family
    from hybridsolve.recycling.sorting import order as sort_order
    from hybridsolve.stack import MPI

    comm = comm or MPI.COMM_WORLD
    cfg.validate()
    family = get_family(cfg.family, cfg.n, cfg.count, cfg.seed, **cfg.options)
    if not family.fixed_size:
        from hybridsolve.errors import InputError

        raise InputError(f"datagen: family {family.name!r} makes a new mesh (and size) per system; "
                         "a dataset holds one layout. For NPSolver, 'hybridsolve train npsolver' "
                         "draws and labels its own samples")
    if family.sequential and cfg.mode == "data" and comm.size > 1:
        cfg.mode = "domain"  # a time-stepping chain cannot be split
    name, opts = solver_options(cfg, family)
    t_start = time.perf_counter()
    if _prepare(cfg, comm) == "done":
        return {"status": "already complete", "out": cfg.out}
    params = family.all_params(comm)   # each rank draws a share
    t0 = time.perf_counter()
    if family.sequential:
        perm = np.arange(cfg.count)
    else:
        metric = "l1" if family.name == "thermal" else "fro"
        perm = sort_order(params, cfg.order, seed=cfg.seed, metric=metric) if comm.rank == 0 else None
        perm = comm.bcast(perm, root=0)
    t_sort = time.perf_counter() - t0
    parts = Parts(Path(cfg.out), sample_layout(family, params, comm))
    stats = {"solved": 0, "skipped": 0, "iterations": 0, "solve_time": 0.0, "removed": 0,
             "fallbacks": 0}
    bar = None
    if progress and comm.rank == 0:
        bar = Progress(cfg.count, f"datagen {family.name} ({cfg.mode} mode, {comm.size} "
                       f"rank{'s' if comm.size > 1 else ''})", lambda: count_parts(parts.dir),
                       fallbacks=lambda: count_parts(parts.dir, ".fallback"))
    try:
        for _round in range(3):
            fresh: set[int] = set()
            _solve_chain(cfg, family, params, perm, parts, name, opts, comm, stats, bar, fresh)
            _wait_for_all(comm, bar)
            fresh_all = set().union(*comm.allgather(fresh))
            bad = _verify(cfg, family, params, parts, comm, fresh_all)
            stats["removed"] += bad
            if bad == 0:
                break
        else:
            raise SolverError(f"datagen: {bad} samples failed verification three times")
    except BaseException:
        if bar is not None:
            bar.close(ok=False)
        raise
    if bar is not None:
        bar.close()
    t_solve = time.perf_counter() - t_start - t_sort
    summary = None
    methods = [m for m in comm.allgather(stats.get("method")) if m]
    ksps = [k for k in comm.allgather(stats.get("ksp")) if k]
    chosen = [o for o in comm.allgather(stats.get("options")) if o]
    trials = [t for t in comm.allgather(stats.get("trial")) if t]
    if chosen:   # the options of the candidate the chain went on with (auto's trial)
        opts = chosen[0]
    if comm.rank == 0:
        from hybridsolve.stack import PETSc

        given = {k[len("datagen_"):]: v for k, v in PETSc.Options().getAll().items()
                 if k.startswith("datagen_")}
        effective = {**{k: str(v) for k, v in opts.items()}, **{k: str(v) for k, v in given.items()}}
        try:
            summary = _assemble(cfg, family, params, perm, parts, name, effective, comm.size,
                                t_sort, time.perf_counter() - t_start,
                                methods[0] if methods else None, ksps[0] if ksps else None,
                                trials[0] if trials else None)
        except Exception as err:  # the other ranks must not wait for a summary forever
            comm.bcast((None, f"{type(err).__name__}: {err}"), root=0)
            raise
        shutil.rmtree(parts.dir, ignore_errors=True)
    summary, why = comm.bcast((summary, None), root=0)
    if why is not None:
        raise SolverError(f"datagen: rank 0 failed to write {cfg.out} ({why}); rerun the command")
    summary.update(method=methods[0] if methods else None, ksp=ksps[0] if ksps else None,
                   trial=trials[0] if trials else None,
                   # systems whose pattern differed from the chain's Mat (assembled anew)
                   pattern_changes=comm.allreduce(stats.get("pattern_changes", 0)))
    summary.update(wall_time=time.perf_counter() - t_start, sort_time=t_sort,
                   phase_time=t_solve, ranks=comm.size, mode=cfg.mode,
                   solved_here=comm.allreduce(stats["solved"]),
                   resumed=comm.allreduce(stats["skipped"]), removed=comm.allreduce(stats["removed"]))
    return summary


def _wait_for_all(comm, bar) -> None:
    """A barrier during which rank 0 keeps counting the other ranks' samples (progress)."""
    if comm.size == 1:
        return
    req = comm.Ibarrier()
    if bar is None:
        req.Wait()
        return
    while not req.Test():
        bar.poll()
        time.sleep(0.2)
