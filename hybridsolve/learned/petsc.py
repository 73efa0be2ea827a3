"""Torch models inside PETSc solvers: :class:`TorchPC` (a PC of python type) and :class:`DCDM`
(a KSP of python type, Kaneda et al., ICML 2023).

By options, in any petsc4py or DOLFINx code::

    -ksp_type fcg -ksp_fcg_mmax 30        # keep many directions (DCDM keeps 2: measured worse)
    -pc_type python -pc_python_type hybridsolve.learned.petsc.TorchPC
    -pc_torch_model dcdm2d            # a shipped model, or a .safetensors / state-dict file
                                      # (mg2d / mg3d: the learned multigrid network, which builds
                                      # its levels from the operator: needs mode gathered on >1 rank)
    -pc_torch_mode local|gathered     # see below
    -pc_torch_device auto|cpu|cuda    # auto: the node-local rank's GPU when there is one
    -pc_torch_dtype float32|float64   # the model's dtype (the solver stays float64)
    -pc_torch_fallback jacobi         # PC used when the model's output is rejected ("none": error)
    -pc_torch_check descent|finite    # what is rejected: NaN/Inf, and (descent) r.z ~ 0
    -pc_torch_descent_tol 1e-4        # descent: reject |cos(r, z)| below this
    -pc_torch_shape 128,128           # the grid (default: inferred from the size, square/cube)
    -pc_torch_permutation perm.npy    # global PETSc index of each grid point (e.g. DOLFINx dofs:
                                      # hybridsolve.learned.save_grid_layout(V, path) writes it)
    -pc_torch_layout_check true       # refuse an operator whose sparsity is not local on the grid
    -pc_torch_mask auto|none          # zero the output on decoupled rows (solids, Dirichlet rows)
    -pc_torch_smoother none|sor|...   # a classical smoother around the network (a two-level
    -pc_torch_smooth_its 1            #   cycle: the network is the coarse correction, below)

or ``-ksp_type python -ksp_python_type hybridsolve.learned.petsc.DCDM`` with the same PC.

With ``-pc_torch_smoother <PC type>`` (e.g. ``sor``: PETSc's SSOR sweep, its options under
``-pc_torch_smoother_``) one application is a two-level cycle with the network as the coarse
correction (:class:`~hybridsolve.learned.cycle.TwoLevelCycle`: smoothing, the network on the
remaining residual with its A-norm step, smoothing); the safeguards apply to the network's
output against the residual it saw.
An in-memory model is selected by options after ``register_model("mine", module)`` as
``-pc_torch_model memory:mine``, or attached to a configured PC with
``pc.getPythonContext().set_model(module, shape=...)``.

Modes under MPI:

* ``local``: each rank applies the model to its own rows, padded to whole grid planes (like
  block Jacobi): no communication, but the model does not see across rank boundaries, so its
  directions are worse as the rank count grows.
* ``gathered``: the residual is gathered on rank 0 (one ``Gatherv`` of N values), the model runs
  there on the whole field, the result is scattered back (one ``Scatterv``): the same directions
  on any number of ranks, at the price of 2N values moved and the model on one rank per
  application.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.learned.cycle import LearnedPC
from hybridsolve.parallel import collective_call
from hybridsolve.solvers.base import PythonKSP, PythonPC
from hybridsolve.stack import MPI, PETSc

__all__ = ["TorchPC", "DCDM", "node_local_device", "register_model"]

#: in-memory models by name, for ``-pc_torch_model memory:<name>`` (see :func:`register_model`)
_REGISTRY: dict[str, Any] = {}


def register_model(name: str, model) -> str:
    """Make an in-memory ``torch.nn.Module`` selectable by options as
    ``-pc_torch_model memory:<name>`` (each rank registers its own copy). Returns that value."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"register_model: expected a torch.nn.Module, got {type(model).__name__}")
    _REGISTRY[name] = model
    return f"memory:{name}"

_FLEXIBLE = ("fcg", "fgmres", "gcr", "python", "pipefcg", "pipegcr")


def node_local_device(comm: MPI.Comm, request: str = "auto") -> str:
    """``cuda:<k>`` for this rank's node-local index when a GPU is requested/available, else cpu."""
    import torch

    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise InputError(f"TorchPC: device {request!r} requested but torch sees no CUDA device")
    if request.startswith("cuda:"):
        return request
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).rank
    return f"cuda:{local % torch.cuda.device_count()}"


class TorchPC(LearnedPC):
    """A torch model as a PETSc preconditioner: ``y = ||x|| model(x / ||x||)`` on the grid.

    Safeguards (:class:`~hybridsolve.learned.cycle.LearnedPC`'s, shared with NPSolverPC): an
    output with NaN/Inf, or (``check=descent``) one (nearly) orthogonal to the residual, is
    replaced for that application by the fallback preconditioner (Jacobi by default) and
    counted; an ascent direction (``x . y < 0``) is flipped (the scale-invariant training loss
    does not fix the sign) and counted; the counts are in ``-ksp_view`` and :attr:`stats`. The
    decision is collective (the same on every rank). With plain CG (which assumes a fixed SPD
    preconditioner) it warns once and points to the flexible methods. The loaded model and the
    counters survive ``PCSetFromOptions`` (they are kept on the PC, :class:`PythonPC`).
    """

    name = "TorchPC"
    options_key = "torch"
    info_key = "torchpc"

    def __init__(self) -> None:
        super().__init__()
        self.model = None
        self.source: str | None = None
        self.device_request = "auto"
        self.device = "cpu"
        self.dtype_name = "float32"
        self.mode = "local"
        self.shape: tuple[int, ...] | None = None
        self.user_shape: tuple[int, ...] | None = None
        self.permutation: np.ndarray | None = None
        self.permutation_file: str | None = None
        self.threads = 1
        self.mask_mode = "auto"
        self.layout_check = True
        self._mask: np.ndarray | None = None
        self._hier = None                 # a model's levels built from the operator (MGNet)
        self.stats.update({"vectors": 0, "model_time": 0.0})
        self._warned = False

    # -- configuration ------------------------------------------------------------------------
    def set_model(self, model, shape: tuple[int, ...] | None = None, *, device: str | None = None,
                  dtype: str | None = None) -> None:
        """Attach an in-memory ``torch.nn.Module`` (e.g. after a DOLFINx ``LinearProblem`` was
        built): it maps (batch, 1, *shape) to the same shape."""
        import torch

        if not isinstance(model, torch.nn.Module):
            raise InputError(f"TorchPC.set_model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.source = f"in-memory {type(model).__name__}"
        if shape is not None:
            self.user_shape = tuple(int(s) for s in shape)
        if device is not None:
            self.device_request = device
        if dtype is not None:
            self.dtype_name = dtype
        self._place()

    def configure(self) -> None:
        name = f"-{self.prefix}pc_torch_"
        src = self.option("model", self.source or "", str) or None
        if src != self.source:            # another model: load it at the next set-up
            self.source = src
            self.model = None
            self._initialized = False
        self.device_request = self.option("device", self.device_request)
        self.dtype_name = self.option("dtype", self.dtype_name)
        if self.dtype_name not in ("float32", "float64"):
            raise InputError(f"{name}dtype: float32 or float64, got {self.dtype_name!r}")
        self.mode = self.option("mode", self.mode)
        if self.mode not in ("local", "gathered"):
            raise InputError(f"{name}mode: local or gathered, got {self.mode!r}")
        self.configure_safeguards()
        self.threads = self.option("threads", self.threads)
        self.mask_mode = self.option("mask", self.mask_mode)
        self.layout_check = self.option("layout_check", self.layout_check)
        if self.mask_mode not in ("auto", "none"):
            raise InputError(f"{name}mask: auto or none, got {self.mask_mode!r}")
        shape = self.option("shape", "", str)
        if shape:
            try:
                self.user_shape = tuple(int(v) for v in shape.split(","))
            except ValueError:
                raise InputError(f"{name}shape: comma-separated integers, got {shape!r}") from None
        perm = self.option("permutation", "", str)
        if perm and perm != self.permutation_file:
            self.permutation_file = perm
            self.permutation = None

    def _place(self) -> None:
        import torch

        torch.set_num_threads(max(int(self.threads), 1))
        if self.model is not None:
            dtype = torch.float32 if self.dtype_name == "float32" else torch.float64
            self.model.to(device=self.device, dtype=dtype)
            self.model.eval()

    def initialize(self, pc: PETSc.PC) -> None:
        """Load the model (once), read the grid, build the fallback PC and the mask; also run
        when the operator changes (the model stays loaded)."""
        import torch

        A, P = pc.getOperators()
        comm = A.getComm().tompi4py()
        self.device = collective_call(comm, lambda: node_local_device(comm, self.device_request),
                                        "TorchPC")
        if self.model is None:
            if self.source is None:
                raise InputError(f"no model: give -{self.prefix}pc_torch_model <file|dcdm2d> "
                                 "or attach one with pc.getPythonContext().set_model(module)")
            self.model = collective_call(comm, lambda: self._resolve(self.source), "TorchPC")
        self._place()
        n = A.getSize()[0]
        if self.permutation_file is not None and self.permutation is None:
            def read():
                try:
                    p = np.load(self.permutation_file, allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise InputError(f"permutation file {self.permutation_file}: {err}") from None
                if p.shape != (n,) or not np.array_equal(np.sort(p), np.arange(n)):
                    raise InputError(f"permutation file {self.permutation_file} is not a "
                                     f"permutation of 0..{n - 1}")
                return p.astype(np.int64)
            self.permutation = collective_call(comm, read, "TorchPC")
        if self.permutation is not None and self.mode == "local":
            raise InputError("a permutation needs -pc_torch_mode gathered (the grid "
                             "order is global)")
        dim = getattr(self.model, "dim", 2)
        self.shape = self.user_shape or self._infer_shape(n, dim)
        if int(np.prod(self.shape)) != n:
            raise InputError(f"grid shape {self.shape} has {int(np.prod(self.shape))} "
                             f"points but the operator has {n} rows")
        if len(self.shape) != dim:
            raise InputError(f"the model is {dim}-D but the grid shape is {self.shape}")
        if self.layout_check:
            collective_call(comm, lambda: self._check_layout(A), "TorchPC")
        r0, r1 = A.getOwnershipRange()
        self._rows = (r0, r1)
        self._comm = comm
        if self.mode == "gathered":
            counts = comm.allgather(r1 - r0)
            self._counts = np.array(counts)
            self._displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.build_safeguards(A, P)
        self._dtype = torch.float32 if self.dtype_name == "float32" else torch.float64
        self._mask = self._decoupled_mask(A) if self.mask_mode == "auto" else None
        self._mask_grid = None
        self._hier = None
        if getattr(self.model, "uses_operator", False):
            self._hier = collective_call(comm, lambda: self._levels(P), "TorchPC")
        if self._mask is not None and getattr(self.model, "uses_mask", False):
            # the geometry for a model that takes it (VCycleNet): the mask laid out like the
            # residual fields the model sees (this rank's slab, or the whole grid on rank 0)
            self._mask_grid = self._fields(self._mask.reshape(-1, 1), r0, r1)

    def _levels(self, P: PETSc.Mat):
        """For a model that takes the operator (MGNet): the preconditioning matrix in grid
        order, gathered where the model runs (rank 0), turned into the model's levels there
        (None on the other ranks)."""
        import time

        from hybridsolve.la.petsc import gather_csr_canonical

        if self.mode == "local" and self._comm.size > 1:
            raise InputError(f"model {self.source} ({type(self.model).__name__}) builds its "
                             "levels from the whole operator: give "
                             f"-{self.prefix}pc_torch_mode gathered")
        if P.getType() == "shell":
            raise InputError(f"model {self.source} ({type(self.model).__name__}) needs an "
                             "assembled (or python) preconditioning matrix, not a shell")
        r0, r1 = P.getOwnershipRange()
        if self.permutation is None:
            canonical = np.arange(r0, r1, dtype=np.int64)
        else:
            pos = np.empty(self.permutation.size, dtype=np.int64)
            pos[self.permutation] = np.arange(self.permutation.size)
            canonical = pos[r0:r1]
        t0 = time.perf_counter()
        csr = gather_csr_canonical(P, canonical, root=0)   # the levels live on rank 0 only
        hier = None
        if self._comm.rank == 0:
            hier = self.model.prepare(csr, self.shape, dtype=self._dtype, device=self.device)
        self.stats["levels_time"] = time.perf_counter() - t0
        return hier

    def _check_layout(self, A: PETSc.Mat) -> None:
        """The network sees the unknowns as the grid ``self.shape`` (through the permutation, if
        any): refuse an operator that couples unknowns more than one grid step apart along an
        axis, i.e. whose rows are not in that grid order (a DOLFINx dof numbering, a wrong
        shape): the network would run on a scrambled field and propose useless directions."""
        fix = (f"give the layout: -{self.prefix}pc_torch_permutation FILE (for a DOLFINx P1 space "
               "on a rectangle or box, hybridsolve.learned.save_grid_layout(V, FILE) writes it "
               f"and returns the options), or -{self.prefix}pc_torch_layout_check false to run "
               "the network anyway")
        if A.getType() in ("python", "shell"):
            ctx = A.getPythonContext() if A.getType() == "python" else None
            shape = getattr(ctx, "shape", None)
            if shape is not None and self.permutation is None:
                if tuple(shape) != tuple(self.shape):
                    raise InputError(f"the operator's grid is {tuple(shape)} but the network would "
                                     f"see {self.shape}; {fix}")
                return
            if self.user_shape is None and self.permutation is None:
                raise InputError(f"a matrix-free operator without a known grid: {fix}")
            return
        n = A.getSize()[0]
        indptr, indices, _ = A.getValuesCSR()
        r0, r1 = A.getOwnershipRange()
        if self.permutation is None:
            pos = None
        else:
            pos = np.empty(n, dtype=np.int64)
            pos[self.permutation] = np.arange(n)      # grid point of each global index
        grows = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(indptr))
        rows, cols = grows, indices.astype(np.int64)
        if pos is not None:
            rows, cols = pos[rows], pos[cols]
        step = np.zeros(rows.size, dtype=np.int64)
        for a, b in zip(np.unravel_index(rows, self.shape), np.unravel_index(cols, self.shape)):
            step = np.maximum(step, np.abs(a - b))
        if step.size and step.max() > 1:
            k = int(np.argmax(step))
            far = int((step > 1).sum())
            raise InputError(
                f"the operator is not in the grid order of {self.shape}: {far} of its "
                f"{step.size} local nonzeros couple unknowns more than one grid step apart "
                f"(row {int(grows[k])} and column {int(indices[k])}: {int(step[k])} steps); the "
                "network would see a "
                f"scrambled field. {fix[0].upper()}{fix[1:]}")

    @staticmethod
    def _decoupled_mask(A: PETSc.Mat) -> np.ndarray | None:
        """1 on rows that couple to other unknowns, 0 on decoupled rows (a diagonal entry only:
        solid cells, Dirichlet rows). The model's output is zeroed there: those unknowns are
        settled by their own row, and a direction that moves them only pollutes the residual."""
        if A.getType() in ("python", "shell"):
            return None
        try:
            indptr, indices, _ = A.getValuesCSR()
        except PETSc.Error:
            return None
        r0, _ = A.getOwnershipRange()
        rows = np.arange(indptr.size - 1) + r0
        lens = np.diff(indptr)
        only_diag = (lens == 0) | ((lens == 1) & (indices[indptr[:-1].clip(max=max(indices.size - 1, 0))] == rows))
        return (~only_diag).astype(float)

    @staticmethod
    def _resolve(source: str):
        from hybridsolve.learned.models import load_model

        if source.startswith("memory:"):
            name = source[len("memory:"):]
            if name not in _REGISTRY:
                raise InputError(f"no in-memory model registered as {name!r} "
                                 "(hybridsolve.learned.petsc.register_model)")
            return _REGISTRY[name]
        return load_model(source)

    @staticmethod
    def _infer_shape(n: int, dim: int) -> tuple[int, ...]:
        side = int(round(n ** (1.0 / dim)))
        for s in (side - 1, side, side + 1):
            if s > 0 and s ** dim == n:
                return (s,) * dim
        raise InputError(f"{n} rows is not a {dim}-D square/cube grid: give "
                         "-pc_torch_shape n0,n1[,n2]")

    # -- application --------------------------------------------------------------------------
    def _model_apply(self, fields: np.ndarray) -> np.ndarray:
        """fields: (k, *grid) float64 -> model output, same shape, float64."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            inp = torch.from_numpy(fields).to(device=self.device, dtype=self._dtype).unsqueeze(1)
            if self._hier is not None:
                out = self.model(inp, self._hier)[:, 0]
            elif self._mask_grid is not None:
                mask = torch.from_numpy(self._mask_grid).to(device=self.device, dtype=self._dtype)
                out = self.model(inp, mask.unsqueeze(1))[:, 0]
            else:
                out = self.model(inp)[:, 0]
            out = out.to(device="cpu", dtype=torch.float64).numpy()
        self.stats["model_time"] += time.perf_counter() - t0
        return out

    def _fields(self, R: np.ndarray, r0: int, r1: int) -> np.ndarray | None:
        """This rank's columns of R (n_local, k) as the grid fields the model sees: in local
        mode the slab of whole planes holding this rank's rows (zero elsewhere), in gathered
        mode the whole grid on rank 0 (None on the others)."""
        k = R.shape[1]
        if self.mode == "local":
            inner = int(np.prod(self.shape[1:]))
            p0, p1 = r0 // inner, -(-r1 // inner)
            slab = np.zeros((k, (p1 - p0) * inner))
            slab[:, r0 - p0 * inner:r1 - p0 * inner] = R.T
            return slab.reshape(k, p1 - p0, *self.shape[1:])
        comm = self._comm
        n = int(np.prod(self.shape))
        full = np.empty((k, n)) if comm.rank == 0 else None
        for j in range(k):
            comm.Gatherv(np.ascontiguousarray(R[:, j]),
                         (full[j], (self._counts, self._displs)) if comm.rank == 0 else None,
                         root=0)
        if comm.rank != 0:
            return None
        grid = full if self.permutation is None else full[:, self.permutation]
        return np.ascontiguousarray(grid.reshape(k, *self.shape))

    def _directions(self, R: np.ndarray) -> np.ndarray:
        """R: (n_local, k) residuals (this rank's rows) -> model directions, same shape."""
        k = R.shape[1]
        r0, r1 = self._rows
        nrm = np.sqrt(self._comm.allreduce(np.einsum("ij,ij->j", R, R), op=MPI.SUM))
        scale = np.where(nrm > 0, nrm, 1.0)
        fields = self._fields(R / scale, r0, r1)
        if self.mode == "local":
            inner = int(np.prod(self.shape[1:]))
            p0 = r0 // inner
            out = self._model_apply(fields).reshape(k, -1)
            Z = out[:, r0 - p0 * inner:r1 - p0 * inner].T
        else:
            comm = self._comm
            n = int(np.prod(self.shape))
            if comm.rank == 0:
                out = self._model_apply(fields).reshape(k, n)
                if self.permutation is not None:
                    back = np.empty_like(out)
                    back[:, self.permutation] = out
                    out = back
                out = np.ascontiguousarray(out)
            Z = np.empty((r1 - r0, k))
            for j in range(k):
                col = np.empty(r1 - r0)
                comm.Scatterv((out[j], (self._counts, self._displs)) if comm.rank == 0 else None,
                              col, root=0)
                Z[:, j] = col
        Z = Z * scale
        if self._mask is not None:
            Z *= self._mask[:, None]
        return Z

    def network_block(self, R: np.ndarray) -> np.ndarray:
        self.stats["vectors"] += R.shape[1]
        return self._directions(R)

    def matApply(self, pc: PETSc.PC, X: PETSc.Mat, Y: PETSc.Mat) -> None:
        """A block of residuals at once (one model call on a batch; with a smoother, the
        cycle column by column)."""
        self.ready(pc)
        if self._cycle is not None:
            for j in range(X.getSize()[1]):
                xj, yj = X.getColumnVector(j), Y.getColumnVector(j)
                self.apply_pc(pc, xj, yj)
                X.restoreColumnVector(j, xj)
                Y.restoreColumnVector(j, yj)
            return
        with self.event("model apply"):
            R = X.getDenseArray(readonly=True)
            Z, bad = self._guard(lambda: self.checked_block(np.asarray(R)))
        Yd = Y.getDenseArray()
        Yd[:, :] = Z
        for j in np.flatnonzero(bad):
            xj, yj = X.getColumnVector(int(j)), Y.getColumnVector(int(j))
            self.fallback_apply(xj, yj)
            Yd[:, j] = yj.getArray(readonly=True)
            X.restoreColumnVector(int(j), xj)
            Y.restoreColumnVector(int(j), yj)

    def applyTranspose(self, pc: PETSc.PC, x: PETSc.Vec, y: PETSc.Vec) -> None:
        raise InputError(f"{self.label()} has no transpose: the model is a nonlinear map")

    def preSolve(self, pc: PETSc.PC, ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec) -> None:
        super().preSolve(pc, ksp, b, x)
        kind = ksp.getType()
        if not self._warned and kind not in _FLEXIBLE:
            self._warned = True
            msg = (f"TorchPC inside -ksp_type {kind}: a network is not a fixed SPD (or linear) "
                   "preconditioner, so CG/GMRES may break down or stop at a wrong answer; use a "
                   "flexible method: -ksp_type fcg (-ksp_fcg_mmax 30), fgmres, gcr, or "
                   "hybridsolve.learned.petsc.DCDM")
            if ksp.getComm().tompi4py().rank == 0:
                warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def describe(self) -> str:
        s = self.stats
        return (f"TorchPC: model {self.source} "
                f"({type(self.model).__name__ if self.model else 'none'}), device {self.device}, "
                f"{self.dtype_name}, mode {self.mode}, grid {self.shape}\n"
                f"{self._levels_text()}"
                f"  applications {s['applications']} ({s['vectors']} vectors), model time "
                f"{s['model_time']:.3g} s; {self.safeguard_text()}")


    def _levels_text(self) -> str:
        hier = getattr(self, "_hier", None)
        if hier is None:
            return ""
        shapes = " > ".join("x".join(map(str, sh)) for sh in hier.shapes)
        text = (f"  levels from the operator (Galerkin): {shapes}; built in "
                f"{self.stats.get('levels_time', 0.0):.3g} s\n")
        lams = [lv.lam for lv in hier.levels[:-1] if lv.lam]    # 0: the finest, not estimated
        if lams:
            text += ("  smoother lambda_max(S A) on the coarse levels: "
                     + " ".join(f"{v:.2f}" for v in lams)
                     + f"; cap {self.model.cap:g}: {hier.scaled} level(s) scaled down\n")
        return text


class DCDM(PythonKSP):
    """Deep conjugate direction method (Kaneda et al., ICML 2023) as a PETSc KSP of python type.

    Each iteration: ``q = PC(r)`` (the network, through :class:`TorchPC`, or any PC),
    A-orthogonalised against the last ``window`` directions (``-ksp_dcdm_window``, default 2),
    exact line search ``alpha = q.r / q.Aq``, then the true residual ``r = b - A x`` is
    recomputed (``-ksp_dcdm_true_residual 0`` uses the recurrence instead). PETSc's convergence
    test, monitors and history see ``||r||`` (the unpreconditioned norm). If the residual has
    not dropped by 1% below its best for ``-ksp_dcdm_stall`` (50) iterations, the network is
    dropped for the rest of the solve: the directions come from the PC's classical fallback
    (:meth:`PythonPC.classical`, TorchPC's ``-pc_torch_fallback``) or are the residual itself
    (conjugate gradients); the switch and the classical iterations are counted (``-ksp_view``,
    ``SolveResult.info["dcdm"]``).
    """

    name = "DCDM"
    options_key = "dcdm"
    info_key = "dcdm"

    def __init__(self) -> None:
        super().__init__()
        self.window = 2
        self.true_residual = True
        self.stall = 50
        self.stats = {"solves": 0, "classical_switches": 0, "classical_iterations": 0}

    def configure(self) -> None:
        self.window = self.option("window", self.window)
        self.true_residual = self.option("true_residual", self.true_residual)
        self.stall = self.option("stall", self.stall)
        if self.window < 1:
            raise InputError(f"-ksp_dcdm_window must be >= 1, got {self.window}")

    def describe(self) -> str:
        return (f"DCDM: window {self.window}, exact line search, "
                f"{'true' if self.true_residual else 'recurrence'} residual; switch to classical "
                f"directions after {self.stall} iterations without progress: "
                f"{self.stats['classical_switches']} of {self.stats['solves']} solves switched")

    def _classical(self, pc, r, q) -> None:
        ctx = pc.getPythonContext() if pc.getType() == "python" else None
        if not (isinstance(ctx, PythonPC) and ctx.classical(pc, r, q)):
            r.copy(q)

    def run(self, ksp, b, x):
        A, _ = ksp.getOperators()
        pc = ksp.getPC()
        r = self.residual(ksp, b, x)
        q = b.duplicate()
        dirs: list[tuple[PETSc.Vec, PETSc.Vec, float]] = []   # (p, A p, p.Ap)
        its = 0
        rnorm = r.norm()
        reason = self.record(ksp, 0, rnorm)
        best, best_it, classical = rnorm, 0, False
        while not reason:
            if classical:
                # the network stopped making progress: classical directions from here on
                self._classical(pc, r, q)
                self.count("classical_iterations")
            else:
                pc.apply(r, q)
            for p, Ap, pAp in dirs:
                q.axpy(-q.dot(Ap) / pAp, p)
            Aq = b.duplicate()
            A.mult(q, Aq)
            qAq = q.dot(Aq)
            qr = q.dot(r)
            if not (np.isfinite(qAq) and qAq > 0):
                reason = int(PETSc.KSP.ConvergedReason.DIVERGED_INDEFINITE_MAT
                             if np.isfinite(qAq) else PETSc.KSP.ConvergedReason.DIVERGED_NANORINF)
                Aq.destroy()
                break
            alpha = qr / qAq
            x.axpy(alpha, q)
            if self.true_residual:
                A.mult(x, r)
                r.aypx(-1.0, b)
            else:
                r.axpy(-alpha, Aq)
            dirs.append((q.copy(), Aq, qAq))
            if len(dirs) > self.window:
                old = dirs.pop(0)
                old[0].destroy()
                old[1].destroy()
            its += 1
            rnorm = r.norm()
            if rnorm < 0.99 * best:
                best, best_it = rnorm, its
            elif not classical and self.stall > 0 and its - best_it >= self.stall:
                classical = True
                self.count("classical_switches")
                for p, Ap, _ in dirs:   # a fresh start for the classical directions
                    p.destroy()
                    Ap.destroy()
                dirs = []
            reason = self.record(ksp, its, rnorm)
        for p, Ap, _ in dirs:
            p.destroy()
            Ap.destroy()
        r.destroy()
        q.destroy()
        return its, rnorm, reason
