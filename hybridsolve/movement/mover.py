"""The ``Mover`` interface, the mover registry, and what every mover shares (DOLFINx meshes).

A mover is bound to one mesh: the mesh's coordinates when the mover is made are the
*computational* mesh xi (usually uniform), and every :meth:`Mover.move` maps xi to new physical
coordinates x, in place, so Functions, forms and solvers built on the mesh stay valid::

    mover = create_mover("monge-ampere", mesh, RingMonitor())   # or MongeAmpereMover(...)
    result = mover.move()            # mesh.geometry.x now holds the moved coordinates
    result = mover.move(HessianMonitor(u), fields=[u])   # in a time loop: u follows the mesh

On any failure (tangling, divergence, a bad monitor) the mesh is restored to the coordinates it
had before the call and a :class:`~hybridsolve.errors.CollectiveError` is raised on every rank.
A result is a :class:`~hybridsolve.movement.result.MoveResult`: iterations, a
:class:`~hybridsolve.movement.result.MoveReason`, the relative Monge–Ampère residual history,
time, quality metrics and mover-specific ``info``.

Movers are selected by name from the registry (:func:`create_mover`, ``-mover_type``,
``hybridsolve move --mover``). A new mover is a :class:`Mover` subclass implementing
:meth:`Mover._solve` (return new vertex coordinates; it inherits the boundary projector, the
tangling check, field transfer, timing and the metrics) plus one :func:`register_mover` line.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from hybridsolve.errors import InputError, SolverError
from hybridsolve.movement.geometry import Snapshot, VertexSpace, count_inverted, signed_volumes
from hybridsolve.movement.monitors import Monitor, as_monitor, check_monitor_values
from hybridsolve.options import check_prefix
from hybridsolve.parallel import print0
from hybridsolve.movement.result import MoveReason, MoveResult
from hybridsolve.stack import MPI, PETSc

import dolfinx  # noqa: E402

__all__ = ["Mover", "MeshTanglingError", "register_mover", "get_mover",
           "mover_names", "create_mover", "MOVERS"]


class MeshTanglingError(SolverError):
    """A move would invert cells; the mesh was left as it was."""


_REASONS = {2: MoveReason.CONVERGED_RTOL, -3: MoveReason.DIVERGED_MAX_IT,
            -4: MoveReason.DIVERGED_DTOL}   # the algorithms' internal codes


class Mover:
    """Base class of mesh movers (classical now, learned later).

    Args:
        mesh: a DOLFINx triangle or tetrahedron mesh (affine); it is moved in place.
        monitor: default monitor (a :class:`Monitor`, number or callable ``f(x)``).
        pinned: facets whose vertices must not move: a marker ``f(x) -> bool`` (all facet
            vertices must satisfy it), an array of local exterior facet indices, or ``True``
            for the whole boundary. Other boundary vertices slide along straight segments.
        curved_tol_deg: boundary pieces meeting at less than this angle are taken for a curved
            boundary and refused (pin them).
        prefix: options prefix (``-{prefix}rtol``, ``-{prefix}max_it``, ``-{prefix}monitor``,
            and the inner KSP's ``-{prefix}ksp_*``/``-{prefix}pc_*``).
    """

    method = "mover"

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
    def _solve(self, monitor: Monitor, log: bool) -> tuple[np.ndarray, int, int, list, dict]:
        """Return (new coords (ndofs, d), iterations, reason code, residual history, info)."""
        raise NotImplementedError

    def _save_state(self) -> Any:
        """What to restore when a move fails (a warm start, say); nothing by default."""
        return None

    def _restore_state(self, state: Any) -> None:
        pass

    # -- shared machinery ----------------------------------------------------------------------
    def _opt(self, name: str, default: Any, kind: type) -> Any:
        opts = PETSc.Options(self.prefix)
        if not opts.hasName(name):
            return default
        if kind is bool:
            v = opts.getString(name, "")
            return v.lower() not in ("0", "false", "no", "off")
        return kind(opts.getReal(name) if kind is float else opts.getInt(name))

    def evaluate_monitor(self, monitor: Monitor, x: np.ndarray) -> np.ndarray:
        """Monitor values at the vertices, with the mesh at coordinates ``x``; checked."""
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
        """Raise :class:`MeshTanglingError` if coordinates ``x`` invert any cell."""
        bad = self.count_inverted(x)
        if bad:
            raise MeshTanglingError(f"{type(self).__name__}: iteration {it} would invert {bad} "
                                    "cells; the mesh was left unchanged (try a smoother monitor, "
                                    "a smaller pseudo-time step or pinned boundaries)")

    def move(self, monitor: Any = None, fields: Sequence[Any] = (), *,
             raise_on_fail: bool = True) -> MoveResult:
        """Move the mesh in place from the computational coordinates by ``monitor``.

        Args:
            monitor: overrides the mover's default monitor for this call.
            fields: DOLFINx Functions on the mesh to carry over to the moved mesh (interpolated
                from a frozen copy of the old mesh), e.g. a time loop's state.
            raise_on_fail: when False, hitting the iteration limit returns the (untangled)
                mesh with ``reason < 0`` instead of raising.
        """
        mon = self.monitor if monitor is None else as_monitor(monitor)
        if mon is None:
            raise InputError("no monitor given to the mover")
        sp = self.space
        x_before = sp.coords()
        snap = Snapshot(list(fields)) if fields else None
        log = self._opt("monitor", False, bool)
        state = self._save_state()
        self.comm.Barrier()
        t0 = time.perf_counter()
        try:
            x_new, its, reason, hist, info = self._solve(mon, log)
            if reason < 0 and raise_on_fail:
                raise SolverError(f"{type(self).__name__} did not converge: {_REASONS[reason].name} "
                                  f"after {its} iterations (residual {hist[-1]:.3e}); "
                                  "the mesh was left unchanged")
            self.check_tangling(x_new, its)
        except BaseException:
            sp.set_coords(x_before)
            self._restore_state(state)
            raise
        sp.set_coords(x_new)
        elapsed = self.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        if snap is not None:
            snap.transfer(list(fields))
        from hybridsolve.movement.quality import mesh_quality

        info = dict(info)
        info["quality"] = mesh_quality(self.mesh, self.monitor_values, space=sp,
                                       reference_sign=self.ref_sign)
        info["monitor"] = mon.name
        res = MoveResult(iterations=its, reason=_REASONS[reason],
                         residual_history=np.asarray(hist, float),
                         residual="monge-ampere relative L2", time=elapsed, method=self.method,
                         quality=info["quality"], info=info)
        if log:
            q = info["quality"]
            print0(f"{self.method}: {its} its, {res.reason_name}, residual {hist[-1]:.2e}, "
                   f"{elapsed:.3g} s; sigma/mu {q['equidistribution_cv']:.3f}, volume ratio "
                   f"{q['volume_ratio']:.2f}, inverted {q['inverted']}", comm=self.comm)
        return res

    def reset(self) -> None:
        """Put the mesh back on its computational coordinates and forget any warm start."""
        self.space.set_coords(self.xi)


# --- the mover registry ------------------------------------------------------------------------
#: name -> Mover subclass, or its dotted path (imported when first asked for, so this module
#: needs no import of the movers); a new mover is one class and one register_mover line
MOVERS: dict[str, type | str] = {}


def register_mover(name: str, cls: type | str) -> None:
    """Make ``cls`` (a :class:`Mover` subclass, or ``"pkg.module.Class"``) selectable as
    ``-mover_type name``."""
    if name in MOVERS:
        raise InputError(f"mover {name!r} is already registered")
    if not isinstance(cls, str) and not (isinstance(cls, type) and issubclass(cls, Mover)):
        raise InputError(f"register_mover({name!r}): {cls!r} is not a Mover subclass")
    MOVERS[name] = cls


def mover_names() -> list[str]:
    return list(MOVERS)


def get_mover(name: str) -> type:
    """The mover class registered as ``name`` (an unknown name names the closest)."""
    import difflib

    if name not in MOVERS:
        close = difflib.get_close_matches(name, MOVERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown mover {name!r}{hint}; known: {', '.join(MOVERS)}")
    cls = MOVERS[name]
    if isinstance(cls, str):
        import importlib

        module, _, attr = cls.rpartition(".")
        cls = MOVERS[name] = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Mover)):
        raise InputError(f"mover {name!r}: {cls!r} is not a Mover subclass")
    return cls


def create_mover(name: str | None, mesh: Any, monitor: Any = None, *, prefix: str = "mover_",
                 **kwargs: Any) -> Mover:
    """A mover by name, on ``mesh``; ``name=None`` reads ``-<prefix>type`` (with the default
    prefix: ``-mover_type``), default ``monge-ampere``. Other arguments go to the class."""
    prefix = check_prefix(prefix)
    if name is None:
        opts = PETSc.Options(prefix)
        name = opts.getString("type", "monge-ampere") if opts.hasName("type") else "monge-ampere"
    return get_mover(name)(mesh, monitor, prefix=prefix, **kwargs)


register_mover("monge-ampere", "hybridsolve.movement.monge_ampere.MongeAmpereMover")
