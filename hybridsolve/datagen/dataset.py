"""The HDF5 dataset: writing it from the parts (atomically) and reading it back (:func:`load`).

Format version 2 (the attribute ``format_version``; files without it are version 1 and still
load): the solutions lie on the grid of the inputs where the family has one (Darcy's grid
discretization stores its boundary nodes too: ``(N, n + 1, n + 1)`` like its coefficient),
``grid_index`` maps the unknowns into that grid, ``grid_coordinates`` gives each grid point,
every array is chunked (``inputs`` and ``solutions``: one sample per chunk, so a loader reading
sample ``i`` decompresses only that sample) and gzip-compressed, and the attribute ``layout`` (JSON) says what each
array is indexed by, family by family. Version 1 stored ``grid_order`` (the flat-to-grid
permutation) and solutions of the unknowns only.""" 

from __future__ import annotations

import json
import os
import platform
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hybridsolve import __version__
from hybridsolve.errors import InputError, SolverError
from hybridsolve.datagen.config import FALLBACK
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



#: The layout this code writes; :class:`Dataset` reads it and version 1.
FORMAT_VERSION = 2
FORMAT = "hybridsolve-dataset"
#: gzip (in every HDF5 build, so any HDF5 tool reads the file) after byte shuffling (floats
#: compress better); level 1: float64 fields shrink to about 75% at any level (Darcy, n=99).
#: Compressing costs about 3 ms per sample of 1e4 unknowns (inputs and solution): each sample is
#: compressed as its own chunk by the rank that solved it, as soon as it is solved
#: (:func:`encode_chunk`, the parts store), and the final write only copies the compressed
#: chunks (``write_direct_chunk``).
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def encode_chunk(a: np.ndarray) -> bytes:
    """One chunk as HDF5 stores it through :data:`COMPRESSION`'s filters: the shuffle filter
    (byte ``j`` of every element, for ``j`` = 0, 1, ...), then deflate (zlib format)."""
    a = np.ascontiguousarray(a)
    shuffled = a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize).T
    return zlib.compress(shuffled.tobytes(), COMPRESSION["compression_opts"])


def decode_chunk(blob: bytes, shape: tuple, dtype) -> np.ndarray:
    """The inverse of :func:`encode_chunk`. Raises ValueError on a corrupt or short chunk."""
    dtype = np.dtype(dtype)
    try:
        raw = zlib.decompress(blob)
    except zlib.error as err:
        raise ValueError(f"corrupt chunk: {err}") from err
    count = int(np.prod(shape))
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"chunk of {len(raw)} bytes, expected {count * dtype.itemsize}")
    b = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, count).T
    return np.ascontiguousarray(b).view(dtype).reshape(shape)


class SampleLayout:
    """How one sample is stored: the solution's grid (``shape``; ``index`` maps the unknowns,
    canonical order, into it; ``None`` when the unknowns form no grid) and the input's shape and
    dtype. Computed once per run (:func:`sample_layout`), the same on every rank."""

    def __init__(self, coords: np.ndarray, grid: dict | None, input_shape: tuple, input_dtype):
        self.coords, self.grid = coords, grid
        self.n = len(coords)
        self.shape = tuple(grid["shape"]) if grid else (self.n,)
        self.input_shape, self.input_dtype = tuple(input_shape), np.dtype(input_dtype)

    def encode(self, x: np.ndarray, inp: np.ndarray) -> tuple[bytes, bytes]:
        """A solved sample's two chunks: the solution on the stored grid (zero where no unknown
        lies: a padded grid's boundary) and the input."""
        if self.grid:
            full = np.zeros(int(np.prod(self.shape)))
            full[self.grid["index"]] = x
        else:
            full = np.asarray(x, dtype=float)
        return encode_chunk(full), encode_chunk(np.asarray(inp, dtype=self.input_dtype))

    def decode_solution(self, blob: bytes) -> np.ndarray:
        """The unknowns (canonical order) from a solution chunk."""
        full = decode_chunk(blob, (int(np.prod(self.shape)),), np.float64)
        return full[self.grid["index"]] if self.grid else full

    def decode_input(self, blob: bytes) -> np.ndarray:
        return decode_chunk(blob, self.input_shape, self.input_dtype)


def sample_layout(family, params: np.ndarray, comm) -> SampleLayout:
    """The run's :class:`SampleLayout`, on every rank from its own probe system (on
    ``COMM_SELF``: a system build may hold collective first-use steps, PETSc's start or the
    thread set-up, which a rank-0-only probe would leave the other ranks waiting for)."""
    from hybridsolve.parallel import collective_call
    from hybridsolve.stack import MPI

    def probe_coords():
        probe = family.system_from_params(params[0], MPI.COMM_SELF, index=0)
        try:
            return probe.coordinates()
        finally:
            probe.destroy()

    coords = collective_call(comm, probe_coords, "datagen: the first system")
    grid = _grid_layout(coords, tuple(family.param_shape()))
    return SampleLayout(coords, grid, params.shape[1:], params.dtype)


def _grid_layout(coords: np.ndarray, param_shape: tuple) -> dict | None:
    """Where the unknowns go in the stored solution grid, when they form a tensor grid.

    Returns ``shape`` (the solution grid), ``index`` (flat C-order index in that grid of each
    unknown, canonical order), ``coordinates`` (``(*shape, dim)``) and ``padded``: the unknowns
    are the interior of a grid one point larger on each side that is the grid of the inputs
    (Darcy's 5-point discretization: the coefficient lives on all ``(n + 1)^2`` nodes, the
    unknowns on the interior ones) and the stored grid is that larger one, boundary included
    (the Dirichlet value 0 there)."""
    from hybridsolve.problems.grid import tensor_grid

    found = tensor_grid(coords)
    if found is None:
        return None
    shape, index, axes = found
    dim = len(axes)
    padded = (len(param_shape) >= dim and all(s > 1 for s in shape)
              and tuple(param_shape[-dim:]) == tuple(s + 2 for s in shape))
    if padded:
        steps = [np.diff(a) for a in axes]
        ext = [np.concatenate([[a[0] - h[0]], a, [a[-1] + h[-1]]]) for a, h in zip(axes, steps)]
        # only the unit box's nodes: the interior points of a grid family's padded box
        padded = all(np.allclose(h, h[0]) for h in steps) and \
            all(abs(e[0]) < 1e-9 and abs(e[-1] - 1) < 1e-9 for e in ext)
    if padded:
        multi = np.unravel_index(index, shape)
        shape = tuple(s + 2 for s in shape)
        index = np.ravel_multi_index(tuple(m + 1 for m in multi), shape).astype(np.int64)
        axes = [np.linspace(0.0, 1.0, s) for s in shape]   # the unit box's nodes, exactly
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    grid.reshape(-1, dim)[index] = coords   # the unknowns' own coordinates, unrounded
    return {"shape": shape, "index": index, "coordinates": grid, "padded": bool(padded)}


def _inputs_text(family) -> str:
    """What ``inputs[s]`` is, family by family (the arrays the systems are assembled from)."""
    n, o, name = family.n, family.opts, family.name
    shape = f"(N, {', '.join(str(s) for s in family.param_shape())})"
    cheb = ("f(x, y) = sum_ij c[i, j] T_i(2x - 1) T_j(2y - 1) on [0, 1]^2 "
            "(hybridsolve.problems.fields.chebyshev_eval)")
    text = {
        "darcy": f"{shape}: the coefficient a = exp(GRF) at the nodes (i/{n}, j/{n}) of the unit "
                 "square, boundary included: inputs[s, i, j] is a at (i/n, j/n), the point "
                 "grid_coordinates[i, j]",
        "poisson": f"{shape}: Chebyshev coefficients c[i, j] of the source (inputs[s, 0], scaled "
                   f"by source_scale) and of the Dirichlet value g (inputs[s, 1]), {cheb}",
        "helmholtz": f"{shape}: the source's Chebyshev coefficients c[i, j] flattened row-major "
                     f"(entry i * degree + j), {cheb}, then the wavenumber k (inputs[s, -1])",
        "thermal": f"{shape}: [T_left, T_right, q_bottom, q_slot]: the Dirichlet temperatures on "
                   "x = 0 and x = 2, the Neumann fluxes into the bottom edge and through the slot "
                   "walls",
        "grid": f"{shape}: channel 0 the source f, channel 1 the fluid mask (1 fluid, 0 solid) at "
                "the unknowns' points ((i + 1)/(n + 1), ...), the solutions' grid: "
                "inputs[s, c, i, j(, k)] goes with solutions[s, i, j(, k)]",
        "heat": f"{shape}: [t, kappa] of step s: the time t_(s+1) it ends at and the diffusion "
                "coefficient at its half step; it starts from solutions[s - 1] (from the family's "
                "initial state for s = 0)",
    }.get(name)
    return (text or f"{shape}: the family's parameter arrays") + \
        " (exactly what each system is assembled from; hybridsolve verify re-assembles them)"


def _layout(family, grid: dict | None, n_dofs: int, dim: int) -> dict:
    """The ``layout`` attribute: what each array is indexed by, for this family."""
    from hybridsolve.problems.fem_family import FEMFamily

    fem = isinstance(family, FEMFamily) and family.opts.get("discretization", "fem") == "fem"
    where = "P1 dofs (the mesh vertices)" if fem else "grid points of the unknowns"
    if grid is None:
        sol = (f"(N, {n_dofs}): u at the {where} in the family's canonical (rank-independent) "
               "order: solutions[s, k] is u at coordinates[k]")
        boundary = "included: the Dirichlet dofs hold the boundary value" if fem else \
            "excluded: the unknowns only"
    else:
        dims = ", ".join(str(s) for s in grid["shape"])
        sol = (f"(N, {dims}): u on a tensor grid, x slowest: solutions[s, i, j(, k)] is u at "
               f"grid_coordinates[i, j(, k)]; the unknowns ({where}) are "
               "solutions[s].reshape(-1)[grid_index], in canonical order")
        if grid["padded"]:
            boundary = ("included: the grid is the inputs' grid, its outermost layer the "
                        "Dirichlet boundary (value 0), the unknowns its interior")
        elif fem:
            boundary = "included: the boundary dofs hold the Dirichlet value"
        else:
            boundary = "excluded: the grid is the unknowns' points; u = 0 outside it"
    pshape = tuple(family.param_shape())
    same = grid is not None and tuple(pshape[-len(grid["shape"]):]) == tuple(grid["shape"])
    return {
        "format_version": FORMAT_VERSION,
        "inputs": _inputs_text(family),
        "solutions": sol,
        "grid": list(grid["shape"]) if grid else None,
        "inputs_on_solution_grid": bool(same),
        "boundary": boundary,
        "boundary_value": 0.0 if grid is not None and grid["padded"] else None,
        "coordinates": f"({n_dofs}, {dim}): the unknowns' coordinates, canonical order",
        "grid_index": ("(n_unknowns,): flat C-order index in solutions[s] of each unknown"
                       if grid else None),
        "grid_coordinates": (f"({', '.join(str(s) for s in grid['shape'])}, {dim}): each grid "
                             "point's coordinates" if grid else None),
        "per_sample": "iterations, solve_time, true_residual, chain_position, rank, fallback: "
                      "(N,), sample s at index s",
    }


def _assemble(cfg, family, params, perm, parts, name, opts, ranks, t_sort, t_total,
              method=None, ksp=None, trial=None) -> dict:
    """Rank 0: one HDF5 file from the verified parts (their chunks, compressed by the ranks that
    solved them, copied as they are), written to a temporary name and renamed (a temporary a
    kill leaves behind is removed by the next run)."""
    h5py = _h5py()

    from hybridsolve.stack import describe

    lay = parts.layout
    coords, grid, n, shape = lay.coords, lay.grid, lay.n, lay.shape
    its = np.zeros(cfg.count, dtype=np.int64)
    times = np.zeros(cfg.count)
    resid = np.zeros(cfg.count)
    chainpos = np.zeros(cfg.count, dtype=np.int64)
    rank = np.zeros(cfg.count, dtype=np.int64)
    fallback = np.zeros(cfg.count, dtype=np.int8)
    out = Path(cfg.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            inp = f.create_dataset("inputs", shape=params.shape, dtype=params.dtype,
                                   chunks=(1, *params.shape[1:]), **COMPRESSION)
            sol = f.create_dataset("solutions", shape=(cfg.count, *shape), dtype="f8",
                                   chunks=(1, *shape), **COMPRESSION)
            zero_in, zero_sol = (0,) * (params.ndim - 1), (0,) * len(shape)
            for i in range(cfg.count):
                d = parts.read(i, decode=False)
                if d is None:
                    raise SolverError(f"datagen: sample {i} vanished before assembly; rerun "
                                      "the command")
                sol.id.write_direct_chunk((i, *zero_sol), d["solution_chunk"])
                inp.id.write_direct_chunk((i, *zero_in), d["input_chunk"])
                its[i], times[i], resid[i] = d["iterations"], d["time"], d["true_residual"]
                chainpos[i], rank[i] = d["chain_position"], d["rank"]
                fallback[i] = d["fallback"]
            f.create_dataset("coordinates", data=coords, **COMPRESSION)
            if grid:
                f.create_dataset("grid_index", data=grid["index"], **COMPRESSION)
                f.create_dataset("grid_coordinates", data=grid["coordinates"], **COMPRESSION)
            for key, val in (("iterations", its), ("solve_time", times), ("true_residual", resid),
                             ("chain_position", chainpos), ("rank", rank), ("fallback", fallback)):
                f.create_dataset(key, data=val, **COMPRESSION)
            layout = _layout(family, grid, n, coords.shape[1])
            prov = {
                "identity": cfg.identity(), "config_digest": cfg.digest(), "config": asdict(cfg),
                "options": cfg.effective_options(),
                "family": family.describe(), "param_shape": list(family.param_shape()),
                "solver": name, "method": method, "ksp": ksp,
                "trial": trial,   # auto's candidates: mean solve time [s] of their trial samples
                "fallbacks": int(fallback.sum()),
                "fallback_solver": FALLBACK + " (samples with fallback = 1)",
                "solver_options": {k: str(v) for k, v in opts.items()},
                "tolerance": f"||b - A x|| / ||b|| <= {cfg.tol:g}, every sample verified",
                "order": cfg.order, "ranks": ranks, "mode": cfg.mode,
                "versions": {"hybridsolve": __version__, "stack": describe(),
                             "numpy": np.__version__, "python": platform.python_version()},
                "sort_time": t_sort, "wall_time": t_total,
                "solutions_layout": layout["solutions"],
            }
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["layout"] = json.dumps(layout)
            f.attrs["provenance"] = json.dumps(prov)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"status": "complete", "out": str(out), "count": cfg.count, "solver": name,
            "mean_iterations": float(its.mean()), "total_solve_time": float(times.sum()),
            "max_true_residual": float(resid.max()), "fallbacks": int(fallback.sum())}


# --- reading -------------------------------------------------------------------------------------
#: the arrays every dataset has (version 1 and 2)
REQUIRED = ("inputs", "solutions", "coordinates", "true_residual")


class Dataset:
    """A datagen dataset opened for reading; samples are read from the file on demand.

    ``len(ds)`` samples; ``ds[i]`` is sample ``i``'s ``(input, solution)`` as numpy arrays
    (``ds[i:j]`` a slice of them), iterating yields them in order; ``ds["solutions"]`` (any
    array name of :meth:`keys`) is the h5py dataset itself, read only where sliced
    (``ds["solutions"][10:20]``); ``ds["provenance"]`` and :attr:`provenance` the provenance
    dict, :attr:`layout` what each array is indexed by (see the ``layout`` attribute),
    :meth:`unknowns` a sample's solution as the flat vector of the family's unknowns in
    canonical order, :meth:`read` everything in memory (a dict, as ``load`` returned before
    version 2). Close it (``with load(path) as ds:``, or :meth:`close`); the file is also closed
    when the object is garbage collected. Version 1 files load too (their ``grid_order`` gives
    :attr:`grid_index`).

    Raises:
        InputError: the file cannot be opened, is not a hybridsolve dataset, is incomplete, or
            was written by a newer hybridsolve.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        h5py = _h5py()

        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, ValueError) as err:
            raise InputError(f"datagen: cannot read {self.path}: {err}") from None
        try:
            self._check()
        except BaseException:
            self._file.close()
            raise
        self._grid_index = None

    def _check(self) -> None:
        f, where = self._file, self.path
        if "provenance" not in f.attrs:
            raise InputError(f"datagen: {where} is not a hybridsolve dataset (no provenance "
                             "attribute)")
        try:
            self.provenance = json.loads(f.attrs["provenance"])
            self.layout = json.loads(f.attrs["layout"]) if "layout" in f.attrs else \
                {"format_version": 1, "solutions": self.provenance.get("solutions_layout")}
        except (TypeError, ValueError) as err:
            raise InputError(f"datagen: {where}: unreadable provenance or layout ({err})") from None
        self.version = int(f.attrs.get("format_version", 1))
        if self.version > FORMAT_VERSION:
            raise InputError(f"datagen: {where} has format version {self.version}; this "
                             f"hybridsolve reads up to {FORMAT_VERSION} (upgrade hybridsolve)")
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise InputError(f"datagen: {where} is incomplete or corrupt: no {', '.join(missing)}")
        count = f["inputs"].shape[0]
        short = [k for k in f.keys() if k not in ("coordinates", "grid_order", "grid_index",
                                                  "grid_coordinates") and f[k].shape[0] != count]
        if short:
            raise InputError(f"datagen: {where} is corrupt: {', '.join(short)} not of length "
                             f"{count} (the inputs')")

    # -- samples -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._file["inputs"].shape[0])

    def __getitem__(self, key):
        if isinstance(key, str):
            if key == "provenance":
                return self.provenance
            if key == "grid_index" and key not in self._file and "grid_order" in self._file:
                return self.grid_index
            try:
                return self._file[key]
            except KeyError:
                raise KeyError(f"{key!r}: not in {self.path} (arrays: "
                               f"{', '.join(self.keys())})") from None
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"sample {key} outside 0..{len(self) - 1}")
            key = i
        return self._file["inputs"][key], self._file["solutions"][key]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def keys(self) -> list[str]:
        names = list(self._file.keys())
        if "grid_order" in names and "grid_index" not in names:
            names.append("grid_index")
        return names

    def __contains__(self, key: str) -> bool:
        return key == "provenance" or key in self.keys()

    @property
    def grid_index(self) -> np.ndarray | None:
        """Flat index in ``solutions[i]`` of each unknown (canonical order), None when flat."""
        if self._grid_index is None:
            f = self._file
            if "grid_index" in f:
                self._grid_index = f["grid_index"][()]
            elif "grid_order" in f:  # version 1: grid point g holds unknown grid_order[g]
                order = f["grid_order"][()]
                self._grid_index = np.empty_like(order)
                self._grid_index[order] = np.arange(len(order))
        return self._grid_index

    def unknowns(self, i: int) -> np.ndarray:
        """Sample ``i``'s solution as the vector of the family's unknowns, canonical order."""
        x = np.asarray(self._file["solutions"][i]).reshape(-1)
        gi = self.grid_index
        return x if gi is None else x[gi]

    def read(self) -> dict:
        """Everything in memory: a dict of numpy arrays plus ``provenance`` (a dict)."""
        out = {k: self._file[k][()] for k in self._file.keys()}
        if "grid_index" not in out and self.grid_index is not None:
            out["grid_index"] = self.grid_index
        out["provenance"] = self.provenance
        return out

    # -- the file -------------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ident = self.provenance.get("identity", {})
        return (f"Dataset({str(self.path)!r}: {len(self)} samples of {ident.get('family')} "
                f"(n={ident.get('n')}), inputs {self._file['inputs'].shape[1:]}, solutions "
                f"{self._file['solutions'].shape[1:]}, format {self.version})")


def load(path: str | os.PathLike) -> Dataset:
    """Open a dataset for reading: a :class:`Dataset`, which reads samples on demand
    (``load(path).read()``: everything in memory, a dict of numpy arrays plus ``provenance``)."""
    return Dataset(path)
