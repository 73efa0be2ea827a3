"""The ``Mover`` interface, the mover registry, and what every mover shares (DOLFINx meshes).

A mover is bound to one mesh: the mesh's coordinates when the mover is made are the
*computational* mesh xi (usually uniform), and every :meth:`Mover.move` maps xi to new physical
coordinates x, in place, so Functions, forms and solvers built on the mesh stay valid::

    mover = create_mover(None, mesh, RingMonitor())   # -mover_type, default monge-ampere
    result = mover.move()            # mesh.geometry.x now holds the moved coordinates
    result = mover.move(HessianMonitor(u), fields=[u])   # in a time loop: u follows the mesh

A move returns a :class:`~hybridsolve.movement.result.MoveResult` (iterations, a
:class:`~hybridsolve.movement.result.MoveReason`, the residual history and which residual, time,
quality before and after, ``info``). No tangled mesh is ever returned: :meth:`Mover.move` checks
the result of every mover. On a failure (tangling, divergence, a bad monitor, the iteration
limit) the mesh is restored to the coordinates it had before the call and, unless
``raise_on_fail=False``, a :class:`~hybridsolve.errors.CollectiveError` is raised on every rank
(``err.result`` holds the result).

A new mover is a :class:`Mover` subclass implementing :meth:`Mover._solve` (return an
:class:`Outcome`: new vertex coordinates and a reason; it inherits the boundary projector, the
tangling guarantee, field transfer, timing and the metrics) plus one :func:`register_mover`
line. Movers are selected by name (:func:`create_mover`, ``-mover_type``, ``hybridsolve move
--mover``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from hybridsolve.errors import InputError, SolverError
from hybridsolve.movement.geometry import Snapshot, VertexSpace, count_inverted, signed_volumes
from hybridsolve.movement.monitors import Monitor, as_monitor, check_monitor_values
from hybridsolve.movement.result import MoveReason, MoveResult
from hybridsolve.options import check_prefix, defaults_under_prefix
from hybridsolve.stack import MPI, PETSc

__all__ = ["Mover", "Outcome", "MoveStop", "MeshTanglingError", "MoveReason", "MoveResult",
           "register_mover", "get_mover", "mover_names", "create_mover", "selected_mover",
           "MOVERS"]

log = logging.getLogger(__name__)


class MeshTanglingError(SolverError):
    """A move would invert cells; the mesh was left as it was."""


class MoveStop(Exception):
    """Raised inside a mover's algorithm to end the move with ``reason`` (caught by
    :meth:`Mover.move`, never seen by the caller)."""

    def __init__(self, reason: MoveReason, message: str) -> None:
        super().__init__(message)
        self.reason = MoveReason(reason)


@dataclass
class Outcome:
    """What :meth:`Mover._solve` hands back; :meth:`Mover.move` adds the tangling guarantee,
    the time and the quality, and decides whether the mesh moves.

    Attributes:
        x: new vertex coordinates, shape (local dofs incl. ghosts, d), in the P1 dof order of
            ``mover.space`` (``None`` where the algorithm has none to offer).
        reason: why the algorithm stopped.
        iterations, residual_history, info, message: as in :class:`MoveResult`.
    """

    x: np.ndarray | None = None
    reason: MoveReason = MoveReason.DIVERGED_MAX_IT
    iterations: int = 0
    residual_history: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    message: str = ""


class Mover:
    """Base class of mesh movers (classical and learned).

    Args:
        mesh: a DOLFINx triangle or tetrahedron mesh (affine); it is moved in place.
        monitor: default monitor (a :class:`Monitor`, number or callable ``f(x)``).
        pinned: facets whose vertices must not move: a marker ``f(x) -> bool`` (all facet
            vertices must satisfy it), an array of local exterior facet indices, or ``True``
            for the whole boundary. Other boundary vertices slide along straight segments.
        curved_tol_deg: boundary pieces meeting at less than this angle are taken for a curved
            boundary and refused (pin them).
        prefix: options prefix (``-{prefix}type`` selects the mover in :func:`create_mover`;
            ``-{prefix}monitor`` logs progress on rank 0; subclasses add their own).
    """

    #: what ``MoveResult.method`` says
    method = "mover"
    #: which residual ``MoveResult.residual_history`` holds
    residual = "none"

    def __init__(self, mesh: Any, monitor: Any = None, *, pinned: Any = None,
                 curved_tol_deg: float = 20.0, prefix: str = "mover_") -> None:
        self.mesh = mesh
        self.comm = mesh.comm if hasattr(mesh, "comm") else MPI.COMM_WORLD
        self.space = VertexSpace(mesh, pinned=pinned, curved_tol_deg=curved_tol_deg)
        self.d = self.space.d
        self.xi = self.space.coords()
        self.ref_sign = np.sign(signed_volumes(mesh))
        if np.any(self.ref_sign == 0):
            raise InputError("the mesh has degenerate (zero-volume) cells")
        self.monitor = None if monitor is None else as_monitor(monitor)
        self.prefix = check_prefix(prefix)
        self.monitor_values: np.ndarray | None = None

    # -- what subclasses implement ----------------------------------------------------------
    def _solve(self, monitor: Monitor) -> Outcome:
        """Compute new coordinates for ``monitor`` (the mesh may be left anywhere; the caller
        restores or sets it). Set :attr:`monitor_values` (P1, dof order) at the result; raise
        :class:`MoveStop` to end the move with a reason."""
        raise NotImplementedError

    def _save_state(self) -> Any:
        """What to restore when a move fails (a warm start, say); nothing by default."""
        return None

    def _restore_state(self, state: Any) -> None:
        pass

    def _reset_state(self) -> None:
        """Forget any warm start (called by :meth:`reset`)."""

    # -- shared machinery ----------------------------------------------------------------------
    def _opt(self, name: str, default: Any, kind: type) -> Any:
        """``-{prefix}name`` from the options database, else ``default`` (code defaults lose
        to the command line, as everywhere)."""
        opts = PETSc.Options(self.prefix)
        if not opts.hasName(name):
            return default
        if kind is bool:
            v = opts.getString(name, "")
            return v.lower() not in ("0", "false", "no", "off")
        if kind is str:
            return opts.getString(name)
        return kind(opts.getReal(name) if kind is float else opts.getInt(name))

    def evaluate_monitor(self, monitor: Monitor, x: np.ndarray) -> np.ndarray:
        """Monitor values at the vertices, with the mesh at coordinates ``x``; checked
        (:class:`~hybridsolve.errors.InputError` on every rank if not finite and positive)."""
        sp = self.space
        sp.set_coords(x)
        try:
            vals = monitor.evaluate(sp.V, x)
        except InputError:
            raise  # already collective (e.g. a field monitor's own checks)
        except Exception as err:  # noqa: BLE001 - reported on every rank just below
            vals = err
        vals = check_monitor_values(vals, sp.n_dofs, self.comm, name=f"monitor {monitor.name}")
        return sp.forward(vals)

    def count_inverted(self, x: np.ndarray) -> int:
        """Number of cells (global) that vertex coordinates ``x`` (dof order) would invert."""
        coords = self.mesh.geometry.x[:, : self.d].copy()
        coords[self.space.node_of_dof] = x
        return count_inverted(self.mesh, self.ref_sign, coords)

    def check_tangling(self, x: np.ndarray, it: int) -> None:
        """End the move (``DIVERGED_TANGLING``) if coordinates ``x`` invert any cell."""
        bad = self.count_inverted(x)
        if bad:
            raise MoveStop(MoveReason.DIVERGED_TANGLING, _tangled(self, it, bad))

    def whole_mesh(self) -> Any:
        """The mesh gathered on rank 0 (:class:`~hybridsolve.movement.untangle.GlobalVertices`:
        global vertex numbers, cells, boundary projectors, computational coordinates), built once."""
        if getattr(self, "_whole", None) is None:
            from hybridsolve.movement.untangle import GlobalVertices

            self._whole = GlobalVertices(self.space, self.xi)
        return self._whole

    def on_rank0(self, fn: Any, what: str) -> Any:
        """``fn()`` on rank 0 only, its result broadcast (:func:`hybridsolve.parallel.rank0_call`:
        a failure there is raised on every rank)."""
        from hybridsolve.parallel import rank0_call

        return rank0_call(self.comm, fn, what)

    def repair(self, monitor: Monitor, out: Outcome, rings: int | None = None) -> None:
        """Untangle ``out.x`` locally (:func:`~hybridsolve.movement.untangle.untangle` on the
        inverted cells and ``rings`` layers around them, ``-{prefix}repair_rings``, default 2),
        in place; ``out.info["repair"]`` says what was done. On success a converged reason
        becomes ``CONVERGED_REPAIRED``; on failure ``out.x`` stays tangled and :meth:`move`
        refuses it."""
        from hybridsolve.movement.untangle import untangle

        rings = int(self._opt("repair_rings", 2 if rings is None else rings, int))
        g = self.whole_mesh()
        X = g.gather(out.x)

        def run():
            Y, rep = untangle(g.cells, X, g.xi, g.projector, rings=rings)
            return Y, rep.to_dict()

        t0 = time.perf_counter()
        Y, rep = self.on_rank0(run, "untangling")
        rep["time"] = time.perf_counter() - t0
        out.info["repair"] = rep
        out.x = np.ascontiguousarray(Y[g.global_of_local])
        if rep["inverted"] == 0:
            if out.reason == MoveReason.CONVERGED_RTOL:
                out.reason = MoveReason.CONVERGED_REPAIRED
            self.monitor_values = self.evaluate_monitor(monitor, out.x)
            log.info("  repaired %d inverted cells: %d vertices moved in a patch of %d cells "
                     "(%d rings)", rep["inverted_before"], rep["vertices"], rep["cells"],
                     rep["rings"])

    def _quality(self, values: np.ndarray | None) -> dict:
        from hybridsolve.movement.quality import mesh_quality

        return mesh_quality(self.mesh, values, space=self.space, reference_sign=self.ref_sign)

    @contextlib.contextmanager
    def _progress_log(self) -> Iterator[None]:
        """``-{prefix}monitor``: this package's progress (``log.info``) shown during the move,
        on rank 0 (through :mod:`hybridsolve.log`'s handler when one is configured, else a
        handler on ``stderr`` for the duration of the move)."""
        if not self._opt("monitor", False, bool):
            yield
            return
        from hybridsolve import log as hlog

        pkg = logging.getLogger(__name__.rpartition(".")[0])
        level, handler = pkg.level, None
        if not logging.getLogger(hlog.ROOT).handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.addFilter(hlog.RankZeroFilter())
            pkg.addHandler(handler)
        pkg.setLevel(logging.INFO)
        try:
            yield
        finally:
            pkg.setLevel(level)
            if handler is not None:
                pkg.removeHandler(handler)

    def move(self, monitor: Any = None, fields: Sequence[Any] = (), *,
             raise_on_fail: bool = True) -> MoveResult:
        """Move the mesh in place from the computational coordinates by ``monitor``.

        Args:
            monitor: overrides the mover's default monitor for this call.
            fields: DOLFINx Functions on the mesh to carry over to the moved mesh (interpolated
                from a frozen copy of the old mesh), e.g. a time loop's state.
            raise_on_fail: when False, a failed move returns its result (``reason < 0``)
                instead of raising; the mesh is then unchanged, except that ``DIVERGED_MAX_IT``
                keeps the last (untangled) iterate.

        Raises:
            MeshTanglingError: ``DIVERGED_TANGLING``.
            InputError: ``DIVERGED_MONITOR`` (the monitor's own error).
            SolverError: any other negative reason.
        """
        mon = self.monitor if monitor is None else as_monitor(monitor)
        if mon is None:
            raise InputError("no monitor given to the mover")
        sp = self.space
        x_before = sp.coords()
        snap = Snapshot(list(fields)) if fields else None
        state = self._save_state()
        monitor_error: InputError | None = None
        with self._progress_log():
            try:
                values_before = self.evaluate_monitor(mon, x_before)
                quality_before = self._quality(values_before)
            except InputError as err:
                sp.set_coords(x_before)
                values_before, quality_before, monitor_error = None, {}, err
            self.comm.Barrier()
            t0 = time.perf_counter()
            if monitor_error is not None:
                out = Outcome(reason=MoveReason.DIVERGED_MONITOR, message=str(monitor_error))
            else:
                try:
                    out = self._solve(mon)
                except MoveStop as stop:
                    out = Outcome(reason=stop.reason, message=str(stop))
                except InputError as err:  # collective: the monitor failed on a moved mesh
                    out = Outcome(reason=MoveReason.DIVERGED_MONITOR, message=str(err))
                    monitor_error = err
                except BaseException:
                    sp.set_coords(x_before)
                    self._restore_state(state)
                    raise
            keep = out.x is not None and (out.reason > 0 or (
                out.reason == MoveReason.DIVERGED_MAX_IT and not raise_on_fail))
            if keep:  # the guarantee, whatever the algorithm says: nothing tangled is returned
                bad = self.count_inverted(out.x)
                if bad:
                    out.reason, keep = MoveReason.DIVERGED_TANGLING, False
                    out.message = _tangled(self, out.iterations, bad)
            if keep:
                sp.set_coords(out.x)
            else:
                sp.set_coords(x_before)
                self._restore_state(state)
                self.monitor_values = values_before
            elapsed = self.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            if keep and snap is not None:
                snap.transfer(list(fields))
            quality = self._quality(self.monitor_values) if keep else dict(quality_before)
            info = dict(out.info)
            info["quality"] = quality
            if out.reason == MoveReason.DIVERGED_MAX_IT and not out.message:
                out.message = f"the iteration limit ({out.iterations}) was reached"
            res = MoveResult(iterations=out.iterations, reason=MoveReason(out.reason),
                             residual_history=np.asarray(out.residual_history, float),
                             residual=self.residual, time=elapsed, method=self.method,
                             monitor=mon.name, quality_before=quality_before, quality=quality,
                             moved=keep, message=out.message if out.reason < 0 else "", info=info)
            if quality:
                log.info("%s; sigma/mu %.3f -> %.3f, inverted %d", res.summary(),
                         quality_before["equidistribution_cv"], quality["equidistribution_cv"],
                         quality["inverted"])
            else:
                log.info("%s", res.summary())
        if res.reason < 0 and raise_on_fail:
            raise _error(self, res, monitor_error)
        return res

    def reset(self) -> None:
        """Put the mesh back on its computational coordinates and forget any warm start."""
        self.space.set_coords(self.xi)
        self._reset_state()


def _tangled(mover: Mover, it: int, bad: int) -> str:
    return (f"{type(mover).__name__}: iteration {it} would invert {bad} cells; the mesh was left "
            "unchanged (try a smoother monitor, a smaller pseudo-time step or pinned boundaries)")


def _error(mover: Mover, res: MoveResult, monitor_error: InputError | None) -> Exception:
    """The exception for a failed move (every rank raises the same one), carrying the result."""
    if res.reason == MoveReason.DIVERGED_MONITOR and monitor_error is not None:
        err: Exception = monitor_error
    elif res.reason == MoveReason.DIVERGED_TANGLING:
        err = MeshTanglingError(res.message)
    else:
        why = f": {res.message}" if res.message and res.reason != MoveReason.DIVERGED_MAX_IT else ""
        err = SolverError(f"{type(mover).__name__} did not converge: {res.reason_name} after "
                          f"{res.iterations} iterations (residual {res.final_residual:.3e}){why}; "
                          "the mesh was left unchanged")
    err.result = res  # type: ignore[attr-defined]
    return err


# --- the mover registry ------------------------------------------------------------------------
#: name -> Mover subclass, or its dotted path (imported when first asked for, so this module
#: imports no mover); a new mover is one class and one register_mover line
MOVERS: dict[str, type | str] = {}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def register_mover(name: str, cls: type | str) -> None:
    """Make ``cls`` (a :class:`Mover` subclass, or ``"pkg.module.Class"``) selectable as
    ``-mover_type name`` (names are case- and ``_``/``-``-insensitive)."""
    key = _key(name)
    if key in MOVERS:
        raise InputError(f"mover {key!r} is already registered")
    if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, Mover)):
        raise InputError(f"register_mover({name!r}): {cls!r} is not a Mover subclass")
    MOVERS[key] = cls


def mover_names() -> list[str]:
    """The registered names, in registration order."""
    return list(MOVERS)


def get_mover(name: str) -> type:
    """The mover class registered as ``name``.

    Raises:
        InputError: unknown name (naming the closest registered one).
    """
    key = _key(name)
    if key not in MOVERS:
        close = difflib.get_close_matches(key, MOVERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown mover {name!r}{hint}; known: {', '.join(MOVERS)}")
    cls = MOVERS[key]
    if isinstance(cls, str):
        module, _, attr = cls.rpartition(".")
        cls = MOVERS[key] = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Mover)):
        raise InputError(f"mover {name!r}: {cls!r} is not a Mover subclass")
    return cls


def selected_mover(name: str | None, prefix: str = "mover_") -> str:
    """``name``, else ``-{prefix}type`` from PETSc's options database, else ``monge-ampere``."""
    if name is not None:
        return name
    opts = PETSc.Options(check_prefix(prefix))
    return opts.getString("type") if opts.hasName("type") else "monge-ampere"


def create_mover(name: str | None, mesh: Any, monitor: Any = None, *, prefix: str = "mover_",
                 options: Mapping[str, Any] | None = None, **kwargs: Any) -> Mover:
    """A mover by name, bound to ``mesh``.

    Args:
        name: a registered name; ``None`` reads ``-{prefix}type`` from PETSc's options
            database (with the default prefix: ``-mover_type``), default ``monge-ampere``.
        mesh, monitor: as for :class:`Mover`.
        prefix: the mover's options prefix.
        options: defaults under ``prefix`` without the dash (``{"type": "monge-ampere",
            "rtol": 1e-6, "ksp_type": "cg"}``): the command line wins; read while the mover
            is built, then removed.
        kwargs: the class's own keyword arguments (e.g. ``variant="newton"``, ``rtol=``).
    """
    prefix = check_prefix(prefix)
    with defaults_under_prefix(prefix, options):
        return get_mover(selected_mover(name, prefix))(mesh, monitor, prefix=prefix, **kwargs)


register_mover("monge-ampere", "hybridsolve.movement.monge_ampere.MongeAmpereMover")
register_mover("dmm", "hybridsolve.movement.learned.DMMMover")
register_mover("um2n", "hybridsolve.movement.learned.UM2NMover")
