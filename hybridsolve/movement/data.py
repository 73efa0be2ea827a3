"""Training data for learned movers, made by our own Monge–Ampère mover, stored restartably.

Sample ``i`` is fully determined by ``(seed, i)``: a domain (``square``, ``rectangle``,
``lshape``, ``square_hole``; gmsh, random mesh size), a random analytic monitor
(:func:`hybridsolve.learned.dmm.random_monitors`: anisotropic Gaussian bumps, wavy fronts, rings,
placed in the domain's bounding box) and the mesh moved by
:class:`~hybridsolve.movement.monge_ampere.MongeAmpereMover` (relaxation, ``rtol``; a folded map
repaired as usual). Each sample is one ``.npz`` file (computational and moved coordinates, cells,
boundary projectors, monitor values at both, the move's reason and repair count), written to a
temporary name and renamed, so a killed run leaves only complete samples: rerun the same command
and it makes only the missing ones. Meshes differ in size, so a sample per file rather than the
datagen store's fixed-layout arrays. Ranks split the samples (sample i on rank i mod size, each
on its own ``COMM_SELF`` mesh), so 1 and 2 ranks write the same files. A move that fails is
stored as a failed sample (counted, never retried, never trained on).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.stack import MPI

__all__ = ["MoveDataConfig", "generate_move_data", "load_move_data"]

_DOMAINS = ("square", "rectangle", "lshape", "square_hole")
_BOX = {"square": (1.0, 1.0), "rectangle": (1.5, 1.0), "lshape": (1.0, 1.0),
        "square_hole": (1.0, 1.0)}


@dataclass
class MoveDataConfig:
    samples: int = 200
    domains: tuple = _DOMAINS
    n_min: int = 12          # mesh size 1/n, n drawn in [n_min, n_max]
    n_max: int = 22
    rtol: float = 1e-3       # UM2N's labels used 1e-3
    #: how the field becomes a monitor: "analytic" (the field itself, 1 + bumps/front/ring),
    #: "gradient" (1 + a |grad u|^2 / max) or "hessian" (1 + a |H(u)| / max, UM2N's kind), u the
    #: field's P1 interpolant, gradient and Hessian recovered in P1 and re-evaluated on the moved
    #: mesh as in a simulation
    monitors: tuple = ("analytic",)
    seed: int = 0
    out: str = "movedata"


def _spec(cfg: MoveDataConfig, i: int) -> dict:
    from hybridsolve.learned.dmm import random_monitors

    rng = np.random.default_rng([cfg.seed, i])
    domain = str(rng.choice(list(cfg.domains)))
    n = int(rng.integers(cfg.n_min, cfg.n_max + 1))
    desc = random_monitors(rng, 1)[0]
    spec = {"domain": domain, "n": n, "monitor": desc}
    if tuple(cfg.monitors) != ("analytic",):   # (drawn last: analytic-only data is unchanged)
        spec["monitor_type"] = str(rng.choice(list(cfg.monitors)))
        spec["amplitude"] = float(rng.uniform(3.0, 10.0))
    return spec


def _monitor(spec: dict, box: tuple, mesh):
    """The sample's monitor on ``mesh``: the analytic field in the domain's box (the family is
    drawn on the unit square), or the gradient/Hessian monitor of its P1 interpolant."""
    import dolfinx.fem

    from hybridsolve.learned.dmm import monitor_numpy
    from hybridsolve.movement.monitors import CallableMonitor, GradientMonitor, HessianMonitor

    desc = spec["monitor"]
    f = monitor_numpy(desc)
    sx, sy = box

    def field(x):
        return f(np.stack([x[0] / sx, x[1] / sy]))

    kind = spec.get("monitor_type", "analytic")
    if kind == "analytic":
        return CallableMonitor(field, desc["kind"])
    u = dolfinx.fem.Function(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    u.interpolate(field)
    if kind == "gradient":
        return GradientMonitor(u, alpha=spec["amplitude"])
    if kind == "hessian":
        return HessianMonitor(u, beta=spec["amplitude"])
    raise InputError(f"unknown monitor type {kind!r}: analytic, gradient or hessian")


def _make_sample(cfg: MoveDataConfig, i: int) -> dict:
    from hybridsolve.movement.monge_ampere import MongeAmpereMover
    from hybridsolve.movement.untangle import GlobalVertices
    from hybridsolve.problems.fem import gmsh_domain

    spec = _spec(cfg, i)
    mesh = gmsh_domain(MPI.COMM_SELF, spec["domain"], spec["n"])
    mon = _monitor(spec, _BOX[spec["domain"]], mesh)
    mover = MongeAmpereMover(mesh, mon, variant="relaxation", rtol=cfg.rtol, max_it=2000,
                             prefix=f"movedata_{i}_")
    g = GlobalVertices(mover.space, mover.xi)
    m0 = mover.evaluate_monitor(mon, mover.xi)
    mover.space.set_coords(mover.xi)
    res = mover.move(raise_on_fail=False)
    x = mover.space.coords()
    return {"xi": g.xi, "x": g.gather(x), "cells": g.cells.astype(np.int64),
            "projector": g.projector, "m_xi": g.gather(m0[:, None])[:, 0],
            "m_x": g.gather(mover.monitor_values[:, None])[:, 0] if res.moved else g.gather(m0[:, None])[:, 0],
            "ok": np.array(res.converged and res.moved), "reason": np.array(int(res.reason)),
            "iterations": np.array(res.iterations),
            "repaired": np.array(res.info.get("repair", {}).get("inverted_before", 0)),
            "spec": np.array(json.dumps(spec))}


def _path(out: Path, i: int) -> Path:
    return out / f"sample_{i:06d}.npz"


def _valid(path: Path) -> bool:
    try:
        with np.load(path) as z:
            return "ok" in z.files and "x" in z.files
    except Exception:  # noqa: BLE001 - a damaged file is made again
        return False


def generate_move_data(cfg: MoveDataConfig, comm: MPI.Comm = MPI.COMM_WORLD, *,
                       log: Callable[[str], None] = print) -> dict:
    """Make the samples that are missing under ``cfg.out``; returns counts (made, kept from a
    previous run, failed moves, repaired maps) summed over the ranks.

    Raises:
        InputError: ``cfg.out`` holds data made with another configuration.
    """
    out = Path(cfg.out)
    manifest = out / "manifest.json"
    conf = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
            if k != "out"}
    err = None
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except json.JSONDecodeError:
                old = None
            if old != conf:
                err = (f"{out} holds mover data made with another configuration ({old}); "
                       "use another --out or remove it")
        else:
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(conf, indent=1))
            os.replace(tmp, manifest)
        for stale in out.glob("*.npz.tmp*"):
            stale.unlink()
    err = comm.bcast(err, root=0)
    if err:
        raise InputError(err)
    comm.Barrier()
    made = kept = failed = repaired = 0
    t0 = time.perf_counter()
    mine = list(range(comm.rank, cfg.samples, comm.size))
    for k, i in enumerate(mine):
        path = _path(out, i)
        if path.exists() and _valid(path):
            kept += 1
            with np.load(path) as z:
                failed += int(not bool(z["ok"]))
                repaired += int(z["repaired"] > 0)
            continue
        s = _make_sample(cfg, i)
        tmp = path.with_name(path.name + f".tmp{comm.rank}")
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **s)
        os.replace(tmp, path)
        made += 1
        failed += int(not s["ok"])
        repaired += int(s["repaired"] > 0)
        if comm.rank == 0 and ((k + 1) % max(1, len(mine) // 10) == 0 or k + 1 == len(mine)):
            log(f"movedata: rank 0 at {k + 1}/{len(mine)} of its samples, "
                f"{time.perf_counter() - t0:.0f} s")
    tot = comm.allreduce(np.array([made, kept, failed, repaired]), op=MPI.SUM)
    summary = {"samples": cfg.samples, "made": int(tot[0]), "kept": int(tot[1]),
               "failed": int(tot[2]), "repaired": int(tot[3]),
               "time": comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)}
    log(f"movedata: {summary['made']} made, {summary['kept']} kept from an earlier run; of all "
        f"{cfg.samples}: {summary['failed']} failed moves (stored, not trained on), "
        f"{summary['repaired']} folded maps repaired; {summary['time']:.1f} s -> {out}")
    return summary


def load_move_data(path: str | os.PathLike, *, only_ok: bool = True) -> list[dict]:
    """The samples under ``path`` (complete files only), in index order."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise InputError(f"{path} is not a mover data directory (no manifest.json)")
    samples = []
    for f in sorted(path.glob("sample_*.npz")):
        with np.load(f) as z:
            s = {k: z[k] for k in z.files}
        if only_ok and not bool(s["ok"]):
            continue
        s["spec"] = json.loads(str(s["spec"]))
        s["index"] = int(f.stem.split("_")[1])
        samples.append(s)
    return samples
