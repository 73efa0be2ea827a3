"""The HDF5 dataset: writing it from the parts (atomically) and reading it back (:func:`load`)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hybridsolve import __version__
from hybridsolve.errors import InputError, SolverError
from hybridsolve.stack import import_h5py


def _h5py():
    """The ``h5py`` module, loaded on first HDF5 read or write (never at import time).

    :func:`hybridsolve.stack.import_h5py` loads h5py so that it works whether DOLFINx came first
    or not. What it cannot repair is a plain ``import h5py`` that already ran after
    ``dolfinx.fem.petsc`` in this process: that import fails ("Not a datatype") and leaves h5py's
    extension modules bound to DOLFINx's HDF5, so every later import fails the same way.

    Raises:
        InputError: h5py cannot be loaded, saying what to do.
    """
    try:
        return import_h5py()
    except (ImportError, ValueError, OSError) as err:
        hint = ("install h5py" if isinstance(err, ModuleNotFoundError) else
                "a plain `import h5py` ran after dolfinx.fem.petsc had loaded DOLFINx's HDF5; "
                "import h5py (or hybridsolve.datagen.load) before dolfinx.fem.petsc, or use "
                "hybridsolve.stack.import_h5py() instead of `import h5py`")
        raise InputError(f"datagen: cannot load h5py ({type(err).__name__}: {err}): {hint}") \
            from err


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
              method=None, ksp=None) -> dict:
    """Rank 0: one HDF5 file from the verified parts, written to a temporary name and renamed."""
    h5py = _h5py()

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
    fallback = np.zeros(cfg.count, dtype=np.int8)
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
                fallback[i] = d["fallback"]
            sol[b0:b1] = buf.reshape((b1 - b0, *shape)) if shape else buf
        f.create_dataset("coordinates", data=coords)
        if shape:
            f.create_dataset("grid_order", data=gperm)
        for key, val in (("iterations", its), ("solve_time", times), ("true_residual", resid),
                         ("chain_position", chainpos), ("rank", rank), ("fallback", fallback)):
            f.create_dataset(key, data=val)
        prov = {
            "identity": cfg.identity(), "config_digest": cfg.digest(), "config": asdict(cfg),
            "family": family.describe(), "param_shape": list(family.param_shape()),
            "solver": name, "method": method, "ksp": ksp,
            "fallbacks": int(fallback.sum()),
            "fallback_solver": "gmres(200)+none, unpreconditioned norm (samples with fallback = 1)",
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
            "max_true_residual": float(resid.max()), "fallbacks": int(fallback.sum())}


def load(path: str | os.PathLike) -> dict:
    """Read a dataset: a dict of numpy arrays plus ``provenance`` (a dict)."""
    h5py = _h5py()

    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["provenance"] = json.loads(f.attrs["provenance"])
    return out
