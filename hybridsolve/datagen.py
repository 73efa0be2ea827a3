"""``hybridsolve datagen``: generate a neural-operator dataset from a family, fast and restartably.

Pipeline (SKR, Wang et al., ICLR 2024, with the choices measured here):

1. draw the ``count`` parameter arrays of a family from the seed (identical on every rank);
2. sort them into a chain where neighbours are similar (:mod:`hybridsolve.recycling.sorting`);
3. solve the chain with one KSP that carries information from system to system: a recycled
   Krylov space (GCRO-DR for nonsymmetric/indefinite families, recycling CG on request), the
   neighbour's solution as the initial guess, and for fixed-matrix families the matrix and its
   preconditioner set up once;
4. write each sample as soon as it is verified, atomically, to ``<out>.parts/``; at the end
   verify every sample against the true residual of its own freshly assembled system and
   assemble one HDF5 file (written to a temporary name and renamed: atomic).

Killing the job at any moment (``kill -9`` of any rank included) loses at most the samples being
solved: rerunning the same command resumes from the parts and ends with exactly ``count``
verified samples. A parts folder or dataset made with another configuration is refused.

MPI modes: ``data`` (default) splits the sorted chain into P contiguous chains, one per rank,
each solved on ``COMM_SELF``; ``domain`` solves every system on all ranks (for large systems).
Sequential families (``heat``) are solved in time order, in ``domain`` mode.

The tolerance is on the true residual relative to the right-hand side,
``||b - A x|| / ||b|| <= tol``, whatever the initial guess (so warm starts count).

HDF5 layout (``load`` reads it back): ``inputs`` (count, *param_shape), ``solutions``
(count, n_dofs) in the family's canonical numbering, or (count, *grid) when the unknowns form a
tensor grid (then indexed like the inputs: ``[ix, iy(, iz)]``), ``coordinates`` (n_dofs, dim)
in the same order as the flat solutions, ``grid_order`` (the permutation from flat to grid
order, when a grid exists), per-sample ``iterations``, ``solve_time``, ``true_residual``,
``chain_position``, ``rank``, and the provenance as JSON in the attribute ``provenance``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridsolve import __version__
from hybridsolve.errors import InputError, SolverError
from hybridsolve.stack import import_h5py

__all__ = ["DatagenConfig", "run", "load", "solver_names"]

#: Solver names datagen accepts besides the registry's (hybridsolve.solvers.registry)
_ALIASES = {"cg": "pcg"}


def solver_names() -> list[str]:
    """``auto`` and every registered method (``hybridsolve.solvers.registry``)."""
    from hybridsolve.solvers.registry import method_names

    return ["auto", *method_names()]


@dataclass
class DatagenConfig:
    """What determines a dataset (and so what a resumed run must agree on)."""

    family: str
    n: int
    count: int
    out: str
    seed: int = 0
    tol: float = 1e-8
    options: dict = field(default_factory=dict)      # family options (--opt)
    order: str = "auto"                              # hybridsolve.recycling.sorting.ORDERINGS
    solver: str = "auto"
    warm_start: bool = True
    mode: str = "data"                               # data | domain
    petsc: dict = field(default_factory=dict)        # PETSc options for the solver (no prefix),
    #                                                  e.g. {"ksp_gcrodr_m": 40, "ksp_gcrodr_k": 20}
    reuse_matrix: bool = True                        # fixed-matrix families: one operator + PC
    reuse_pattern: bool = True                       # same pattern: one Mat object, values copied

    def identity(self) -> dict:
        """The fields that define the dataset's content; a resumed run must match them."""
        return {"family": self.family, "n": self.n, "count": self.count, "seed": self.seed,
                "tol": self.tol, "options": {k: str(v) for k, v in sorted(self.options.items())},
                "hybridsolve_dataset": 1}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        from hybridsolve.recycling.sorting import ORDERINGS

        if not (isinstance(self.tol, float) and np.isfinite(self.tol)) or not 0 < self.tol < 1:
            raise InputError(f"datagen: tolerance must be in (0, 1), got {self.tol!r}")
        if self.count < 1:
            raise InputError(f"datagen: count must be at least 1, got {self.count}")
        if self.order not in ORDERINGS:
            raise InputError(f"datagen: unknown ordering {self.order!r}; known: {', '.join(ORDERINGS)}")
        if self.solver != "auto":
            from hybridsolve.solvers.registry import get_method

            try:
                get_method(_ALIASES.get(self.solver, self.solver))
            except InputError as err:
                raise InputError(f"datagen: --solver: {err}") from None
        if self.mode not in ("data", "domain"):
            raise InputError(f"datagen: mode must be data or domain, got {self.mode!r}")
        if not str(self.out).endswith((".h5", ".hdf5")):
            raise InputError(f"datagen: the output file must end in .h5 or .hdf5, got {self.out!r}")


# --- choosing the solver -------------------------------------------------------------------------
def solver_options(cfg: DatagenConfig, family) -> tuple[str, dict]:
    """The solver's name and default PETSc options for this family (command line still wins)."""
    spd = family.symmetric and family.definite
    name = cfg.solver
    if name == "auto":  # the choices benchmarks/results/skr_bar.md measured fastest
        if family.fixed_matrix and cfg.reuse_matrix:
            name = "direct"        # one factorisation, then two triangular solves per sample
        else:
            name = "pcg" if spd else "gcrodr"
    from hybridsolve.solvers.registry import get_method

    method = get_method(_ALIASES.get(name, name))
    name = method.name
    if method.spd and not spd:
        raise InputError(f"datagen: solver {name} needs an SPD family; {family.name} is not "
                         "(use gcrodr or gmres)")
    local_ilu = "icc" if spd else "ilu"
    if family.opts.get("operator") == "matfree":  # no factorisation of a python Mat: SOR
        local = {"pc_type": "sor"}
    elif cfg.mode == "domain":  # no parallel ICC/ILU in PETSc: block Jacobi with them inside
        local = {"pc_type": "bjacobi", "sub_pc_type": local_ilu}
    else:
        local = {"pc_type": local_ilu}
    opts: dict[str, Any] = method.petsc_options()
    if name == "pcg" and _shares_pattern(cfg, family):
        # one Mat object along the chain: GAMG keeps its interpolation from the first
        # system and only recomputes the coarse operators (the multigrid hierarchy is
        # recycled), measured 2x cheaper per solve than a fresh set-up on Darcy
        opts.update({"pc_type": "gamg", "pc_gamg_reuse_interpolation": "true"})
    elif name == "direct":
        opts["pc_type"] = "cholesky" if spd else "lu"
        if cfg.mode == "domain":
            opts["pc_factor_mat_solver_type"] = "mumps"
    elif method.pc and name != "gmres":   # the method takes datagen's PC choice
        opts.update(local)
    if name != "direct":
        opts["ksp_norm_type"] = "unpreconditioned"
    opts.update(cfg.petsc)
    return name, opts


def _is_direct(opts: dict) -> bool:
    """Whether the chain's KSP is ``preonly`` (the command line's -datagen_ksp_type wins)."""
    from hybridsolve.stack import PETSc

    db = PETSc.Options()
    kind = db.getString("datagen_ksp_type") if db.hasName("datagen_ksp_type") else opts.get("ksp_type")
    return kind == "preonly"


def _shares_pattern(cfg: DatagenConfig, family) -> bool:
    """Systems can be copied into one assembled Mat object (same sparsity pattern, AIJ)."""
    return (cfg.reuse_pattern and family.fixed_pattern and not family.fixed_matrix
            and family.opts.get("operator", "aij") == "aij")


# --- parts: one atomic file per verified sample --------------------------------------------------
class Parts:
    """The ``<out>.parts/`` folder: ``config.json`` and one ``s<index>.npy`` per sample.

    A part is one float64 array: the fields of :data:`PART_FIELDS` followed by the solution
    (a plain .npy reads several times faster than an .npz archive, which matters when the final
    assembly reads tens of thousands of them).
    """

    PART_FIELDS = ("iterations", "time", "true_residual", "reason", "chain_position", "rank")

    def __init__(self, out: Path) -> None:
        self.dir = Path(str(out) + ".parts")

    def path(self, index: int) -> Path:
        return self.dir / f"s{index:07d}.npy"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, x: np.ndarray, **fields) -> None:
        head = np.array([float(fields[k]) for k in self.PART_FIELDS])
        tmp = self.dir / f".tmp-{os.getpid()}-{index}.npy"
        # written whole under a temporary name, then renamed: a reader (or a resumed run) sees
        # the complete file or none. No fsync: a killed process loses nothing the kernel has;
        # only a machine crash could, and the final verification catches what it would.
        with open(tmp, "wb") as fh:
            np.save(fh, np.concatenate([head, np.asarray(x, dtype=float)]))
        os.replace(tmp, self.path(index))

    def read(self, index: int) -> dict | None:
        try:
            arr = np.load(self.path(index), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        k = len(self.PART_FIELDS)
        if arr.ndim != 1 or arr.size <= k or not np.all(np.isfinite(arr)):
            return None
        out = {name: arr[i] for i, name in enumerate(self.PART_FIELDS)}
        out["x"] = arr[k:]
        return out

    def remove(self, index: int) -> None:
        try:
            self.path(index).unlink()
        except FileNotFoundError:
            pass


def _prepare(cfg: DatagenConfig, comm) -> str | None:
    """Rank 0 checks/creates the parts folder and any existing dataset; returns 'done' when the
    dataset already exists for this configuration. Raises the same InputError on every rank."""
    out, parts = Path(cfg.out), Parts(Path(cfg.out))
    msg, state = None, None
    if comm.rank == 0:
        try:
            if out.exists():
                prov = _read_provenance(out)
                if prov is None or prov.get("config_digest") != cfg.digest():
                    msg = (f"datagen: {out} exists and was made with another configuration "
                           f"({(prov or {}).get('identity', 'unreadable')}); choose another --out "
                           "or delete it")
                else:
                    state = "done"
            if msg is None and state is None:
                parts.dir.mkdir(parents=True, exist_ok=True)
                cfg_file = parts.dir / "config.json"
                if cfg_file.exists():
                    old = json.loads(cfg_file.read_text())
                    if old.get("digest") != cfg.digest():
                        msg = (f"datagen: {parts.dir} holds samples of another configuration "
                               f"({old.get('identity')}); delete it or choose another --out")
                else:
                    tmp = parts.dir / ".config.json.tmp"
                    tmp.write_text(json.dumps({"digest": cfg.digest(), "identity": cfg.identity()}))
                    os.replace(tmp, cfg_file)
        except OSError as err:
            msg = f"datagen: cannot prepare {out}: {err}"
    msg, state = comm.bcast((msg, state), root=0)
    if msg:
        raise InputError(msg)
    return state


def _read_provenance(path: Path) -> dict | None:
    h5py = import_h5py()

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["provenance"])
    except (OSError, KeyError, ValueError):
        return None


# --- the job -------------------------------------------------------------------------------------
def run(cfg: DatagenConfig, comm=None, progress: bool = True) -> dict:
    """Generate (or finish) the dataset described by ``cfg``; returns a summary (every rank)."""
    from hybridsolve.problems import get_family
    from hybridsolve.recycling.sorting import order as sort_order
    from hybridsolve.stack import MPI

    comm = comm or MPI.COMM_WORLD
    cfg.validate()
    family = get_family(cfg.family, cfg.n, cfg.count, cfg.seed, **cfg.options)
    if family.sequential and cfg.mode == "data" and comm.size > 1:
        cfg.mode = "domain"  # a time-stepping chain cannot be split
    name, opts = solver_options(cfg, family)
    t_start = time.perf_counter()
    if _prepare(cfg, comm) == "done":
        return {"status": "already complete", "out": cfg.out}
    params = family.all_params()
    t0 = time.perf_counter()
    if family.sequential:
        perm = np.arange(cfg.count)
    else:
        metric = "l1" if family.name == "thermal" else "fro"
        perm = sort_order(params, cfg.order, seed=cfg.seed, metric=metric) if comm.rank == 0 else None
        perm = comm.bcast(perm, root=0)
    t_sort = time.perf_counter() - t0
    parts = Parts(Path(cfg.out))
    stats = {"solved": 0, "skipped": 0, "iterations": 0, "solve_time": 0.0, "removed": 0}
    for _round in range(3):
        fresh: set[int] = set()
        _solve_chain(cfg, family, params, perm, parts, name, opts, comm, stats, progress, fresh)
        comm.Barrier()
        fresh_all = set().union(*comm.allgather(fresh))
        bad = _verify(cfg, family, params, parts, comm, fresh_all)
        stats["removed"] += bad
        if bad == 0:
            break
    else:
        raise SolverError(f"datagen: {bad} samples failed verification three times")
    t_solve = time.perf_counter() - t_start - t_sort
    summary = None
    methods = [m for m in comm.allgather(stats.get("method")) if m]
    if comm.rank == 0:
        from hybridsolve.stack import PETSc

        given = {k[len("datagen_"):]: v for k, v in PETSc.Options().getAll().items()
                 if k.startswith("datagen_")}
        effective = {**{k: str(v) for k, v in opts.items()}, **{k: str(v) for k, v in given.items()}}
        summary = _assemble(cfg, family, params, perm, parts, name, effective, comm.size, t_sort,
                            time.perf_counter() - t_start, methods[0] if methods else None)
        shutil.rmtree(parts.dir, ignore_errors=True)
    summary = comm.bcast(summary, root=0)
    summary.update(wall_time=time.perf_counter() - t_start, sort_time=t_sort,
                   phase_time=t_solve, ranks=comm.size, mode=cfg.mode,
                   solved_here=comm.allreduce(stats["solved"]),
                   resumed=comm.allreduce(stats["skipped"]), removed=comm.allreduce(stats["removed"]))
    return summary


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
    bar = None
    if progress and comm.rank == 0:
        from tqdm import tqdm

        total = len(chain)
        bar = tqdm(total=total, initial=total - int(todo.sum()), unit="sample", dynamic_ncols=True,
                   desc=f"datagen {family.name} ({cfg.mode} mode, rank 0 of {comm.size})")
    from hybridsolve.stack import PETSc

    # Candidates: (options, copy into one Mat object). With the automatic choice for a changing
    # SPD matrix, the first samples are solved with each candidate in turn and the chain goes on
    # with the faster one (its per-sample solve time, PC set-up included, measured here): GAMG
    # recycled along the chain wins on the 5-point Darcy grid, ICC on P1 Darcy (skr_bar.md).
    pattern = _shares_pattern(cfg, family) and name == "pcg"
    candidates = [(opts, pattern)]
    user_pc = "pc_type" in cfg.petsc or PETSc.Options().hasName("datagen_pc_type")
    if pattern and cfg.solver == "auto" and not user_pc:
        alt = {k: v for k, v in opts.items() if not k.startswith("pc_gamg")}
        alt.update({"pc_type": "icc"} if cfg.mode == "data" or sub.size == 1 else
                   {"pc_type": "bjacobi", "sub_pc_type": "icc"})
        candidates.append((alt, False))
    solvers = [KrylovSolver(sub, prefix="datagen_", options=o) for o, _ in candidates]
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
            solver, pattern = solvers[active], candidates[active][1]
            reuse = family.fixed_matrix and cfg.reuse_matrix and fixed_A is not None
            system = family.system_from_params(params[idx], sub, index=idx,
                                               previous=prev_x if family.sequential else None,
                                               matrix=not reuse)
            if family.sequential and prev_x is None and idx > 0:
                raise SolverError("datagen: heat chain resumed without its previous step")
            A = fixed_A if reuse else system.A
            if family.fixed_matrix and cfg.reuse_matrix and fixed_A is None:
                fixed_A = A
            elif pattern:
                # the chain's one Mat object: new values, same pattern, same PC hierarchy
                if fixed_A is None:
                    fixed_A = system.A.duplicate(copy=True)
                else:
                    system.A.copy(fixed_A, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
                system.A.destroy()
                A = fixed_A
            x0 = system.x0
            if cfg.warm_start and prev_x is not None and prev_x.getSize() == system.size:
                x0 = prev_x
            if _is_direct(candidates[active][0]):  # a direct solve takes no initial guess
                x0 = None
            system.A = A  # the operator actually solved with (shared for fixed matrices)
            bnorm = system.b.norm()
            solver.ksp.setTolerances(rtol=0.0, atol=cfg.tol * bnorm if bnorm > 0 else cfg.tol)
            res = solver.solve(A, system.b, x0)
            if not (res.converged and res.true_residual <= cfg.tol * (1 + 1e-9)):
                res = _fallback(A, system, res, cfg.tol, sub)
            x = system.gather(res.x)
            if writer:
                parts.write(idx, x, iterations=res.iterations, time=res.time,
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
        if bar is not None:
            bar.close()
        for sv in solvers:
            sv.destroy()
        if prev_x is not None:
            prev_x.destroy()
        if fixed_A is not None:
            fixed_A.destroy()


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
    """The chain's solver missed the true tolerance: finish with unpreconditioned GMRES(200),
    which tests the true residual and cannot be broken by a failing preconditioner, from where
    it stopped."""
    from hybridsolve.solvers.petsc import KrylovSolver

    fb = KrylovSolver(sub, prefix="datagen_fallback_",
                      options={"ksp_type": "gmres", "ksp_gmres_restart": 200, "pc_type": "none",
                               "ksp_norm_type": "unpreconditioned", "ksp_max_it": 50000})
    try:
        bnorm = system.b.norm()
        fb.ksp.setTolerances(rtol=0.0, atol=tol * bnorm)
        res2 = fb.solve(A, system.b, res.x)
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
        if data is None or "x" not in data:
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


def _grid_order(coords: np.ndarray):
    """When the points form a tensor grid: (grid shape, permutation flat -> grid C order)."""
    dim = coords.shape[1]
    axes = [np.unique(np.round(coords[:, a], 12)) for a in range(dim)]
    shape = tuple(len(a) for a in axes)
    if int(np.prod(shape)) != len(coords):
        return None, None
    keys = tuple(np.round(coords[:, a], 12) for a in reversed(range(dim)))
    perm = np.lexsort(keys)  # x slowest ... last axis fastest
    return shape, perm


def _assemble(cfg, family, params, perm, parts, name, opts, ranks, t_sort, t_total,
              method=None) -> dict:
    """Rank 0: one HDF5 file from the verified parts, written to a temporary name and renamed."""
    h5py = import_h5py()

    from hybridsolve.stack import MPI, describe

    probe = family.system_from_params(params[0], MPI.COMM_SELF, index=0)
    coords = probe.coordinates()
    probe.destroy()
    shape, gperm = _grid_order(coords)
    n = len(coords)
    its = np.zeros(cfg.count, dtype=np.int64)
    times = np.zeros(cfg.count)
    resid = np.zeros(cfg.count)
    chainpos = np.zeros(cfg.count, dtype=np.int64)
    rank = np.zeros(cfg.count, dtype=np.int64)
    out = Path(cfg.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    sol_shape = (cfg.count, *shape) if shape else (cfg.count, n)
    with h5py.File(tmp, "w") as f:
        f.create_dataset("inputs", data=params)
        sol = f.create_dataset("solutions", shape=sol_shape, dtype="f8")
        block = max(1, min(cfg.count, (64 << 20) // (8 * n)))  # write about 64 MB at a time
        for b0 in range(0, cfg.count, block):
            b1 = min(cfg.count, b0 + block)
            buf = np.empty((b1 - b0, n))
            for i in range(b0, b1):
                d = parts.read(i)
                if d is None:
                    raise SolverError(f"datagen: sample {i} vanished before assembly; rerun "
                                      "the command")
                buf[i - b0] = d["x"][gperm] if shape else d["x"]
                its[i], times[i], resid[i] = d["iterations"], d["time"], d["true_residual"]
                chainpos[i], rank[i] = d["chain_position"], d["rank"]
            sol[b0:b1] = buf.reshape((b1 - b0, *shape)) if shape else buf
        f.create_dataset("coordinates", data=coords)
        if shape:
            f.create_dataset("grid_order", data=gperm)
        for key, val in (("iterations", its), ("solve_time", times), ("true_residual", resid),
                         ("chain_position", chainpos), ("rank", rank)):
            f.create_dataset(key, data=val)
        prov = {
            "identity": cfg.identity(), "config_digest": cfg.digest(), "config": asdict(cfg),
            "family": family.describe(), "param_shape": list(family.param_shape()),
            "solver": name, "method": method,
            "solver_options": {k: str(v) for k, v in opts.items()},
            "tolerance": f"||b - A x|| / ||b|| <= {cfg.tol:g}, every sample verified",
            "order": cfg.order, "ranks": ranks, "mode": cfg.mode,
            "versions": {"hybridsolve": __version__, "stack": describe(), "numpy": np.__version__,
                         "python": platform.python_version()},
            "sort_time": t_sort, "wall_time": t_total,
            "solutions_layout": (f"grid {list(shape)} indexed like the inputs" if shape
                                 else "flat, canonical dof order; see coordinates"),
        }
        f.attrs["provenance"] = json.dumps(prov)
    os.replace(tmp, out)
    return {"status": "complete", "out": str(out), "count": cfg.count, "solver": name,
            "mean_iterations": float(its.mean()), "total_solve_time": float(times.sum()),
            "max_true_residual": float(resid.max())}


def load(path: str | os.PathLike) -> dict:
    """Read a dataset: a dict of numpy arrays plus ``provenance`` (a dict)."""
    h5py = import_h5py()

    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["provenance"] = json.loads(f.attrs["provenance"])
    return out
