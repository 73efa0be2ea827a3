"""Checking a finished dataset: every sample's system re-assembled from the file, its true
residual recomputed (``hybridsolve verify FILE``)."""

from __future__ import annotations

import os

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.datagen.dataset import load

#: slack on the tolerance, as in datagen's own verification (rounding of the residual itself)
SLACK = 1e-6


def verify(path: str | os.PathLike, comm=None) -> dict:
    """Re-assemble every sample's system from the file's inputs and provenance (family, size,
    seed, options) and recompute ``||b - A x|| / ||b||`` of its stored solution; also check
    that the inputs are the family's draw for the stored seed and that a padded grid's boundary
    holds its Dirichlet value. Collective: the samples are split over the ranks of ``comm``,
    each checked on ``COMM_SELF``, so the numbers do not depend on the number of ranks.

    Returns (every rank): ``path``, ``family``, ``n``, ``count``, ``tol``, ``residuals`` (per
    sample, recomputed), ``stored`` (per sample, as datagen recorded them), ``worst`` (index),
    ``failures`` (a list of ``{"index", "residual", "why"}``, sorted by index), ``ranks``.

    Raises:
        InputError: (every rank) the file is unreadable, not a dataset, or inconsistent with
            its own provenance (sizes, shapes, an unknown family).
    """
    from hybridsolve.parallel import collective_call
    from hybridsolve.stack import MPI

    comm = comm or MPI.COMM_WORLD
    ds = collective_call(comm, lambda: load(path))
    try:
        family, tol = collective_call(comm, lambda: _family(ds))
        mine = collective_call(comm, lambda: [_check(ds, family, tol, i)
                                              for i in range(comm.rank, len(ds), comm.size)])
        stored = ds["true_residual"][()]
    finally:
        ds.close()
    rows = sorted((r for part in comm.allgather(mine) for r in part), key=lambda r: r["index"])
    res = np.array([r["residual"] for r in rows])
    worst = int(np.argmax(np.where(np.isfinite(res), res, np.inf))) if len(res) else None
    ident = ds.provenance["identity"]
    return {"path": str(path), "family": family.name, "n": family.n, "count": len(rows),
            "tol": tol, "residuals": res, "stored": stored, "worst": worst,
            "failures": [r for r in rows if r["why"]], "ranks": comm.size,
            "options": ident.get("options", {})}


def _family(ds):
    """The family and tolerance the provenance describes, checked against the file's shapes."""
    from hybridsolve.problems import get_family

    prov = ds.provenance
    try:
        ident = prov["identity"]
        name, n, count, seed, tol = (ident[k] for k in ("family", "n", "count", "seed", "tol"))
        opts = dict(ident.get("options") or {})
    except (KeyError, TypeError):
        raise InputError(f"verify: {ds.path}: the provenance has no complete identity (family, "
                         "n, count, seed, tol)") from None
    try:
        family = get_family(name, int(n), int(count), int(seed), **opts)
    except InputError as err:
        raise InputError(f"verify: {ds.path}: its provenance names no family this hybridsolve "
                         f"can build: {err}") from None
    if len(ds) != family.count:
        raise InputError(f"verify: {ds.path} holds {len(ds)} samples, its provenance says "
                         f"{family.count}")
    shape = tuple(ds["inputs"].shape[1:])
    if shape != tuple(family.param_shape()):
        raise InputError(f"verify: {ds.path}: inputs of shape {shape}, but {name} (n={n}) has "
                         f"parameter arrays of shape {tuple(family.param_shape())}")
    size = ds["coordinates"].shape[0]
    gi = ds.grid_index
    width = int(np.prod(ds["solutions"].shape[1:]))
    if (gi is None and width != size) or (gi is not None and (len(gi) != size or gi.max() >= width)):
        raise InputError(f"verify: {ds.path}: solutions of shape {ds['solutions'].shape[1:]} do "
                         f"not fit the {size} unknowns of its coordinates")
    return family, float(tol)


def _check(ds, family, tol: float, i: int) -> dict:
    """Sample ``i``: its system assembled on ``COMM_SELF`` from its stored input (and, for a
    sequential family, the stored previous step), and the true residual of its solution."""
    from hybridsolve.la.petsc import vec_from_local
    from hybridsolve.stack import MPI

    p, solution = ds[i]
    gi = ds.grid_index
    x = solution.reshape(-1) if gi is None else solution.reshape(-1)[gi]
    why = []
    if not np.array_equal(p, family.params(i)):
        why.append("inputs differ from the family's draw for the provenance's seed")
    boundary = ds.layout.get("boundary_value")
    if boundary is not None and gi is not None:
        mask = np.ones(solution.size, dtype=bool)
        mask[gi] = False
        if not np.all(solution.reshape(-1)[mask] == boundary):
            why.append(f"boundary values are not the Dirichlet value {boundary:g}")
    previous = None
    if family.sequential and i > 0:
        before = ds.unknowns(i - 1)
        previous = vec_from_local(MPI.COMM_SELF, len(before), before)
    try:
        system = family.system_from_params(p, MPI.COMM_SELF, index=i, previous=previous)
    except InputError as err:
        raise InputError(f"verify: {ds.path}: sample {i}: {err}") from None
    finally:
        if previous is not None:
            previous.destroy()
    try:
        if system.size != len(x):
            raise InputError(f"verify: {ds.path}: sample {i} has {len(x)} unknowns, its system "
                             f"{system.size}")
        A, b = system.to_scipy()   # canonical order, like the stored unknowns
        with np.errstate(all="ignore"):
            rel = float(np.linalg.norm(b - A @ x) / max(np.linalg.norm(b), 1e-300))
    finally:
        system.destroy()
    if not np.isfinite(rel):
        why.append("the solution is not finite")
    elif rel > tol * (1 + SLACK):
        why.append(f"true residual {rel:.3e} above tol {tol:g}")
    return {"index": i, "residual": rel, "why": "; ".join(why)}
