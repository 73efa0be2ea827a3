"""Learned movers: a network proposes the moved mesh in one evaluation; the guarantee decides what
is returned.

:class:`LearnedMover` is the base: it evaluates the monitor on the computational mesh, gathers the
mesh on rank 0 (:meth:`~hybridsolve.movement.mover.Mover.whole_mesh`), asks the model for new
vertex coordinates there (:meth:`LearnedMover.predict`), keeps every boundary vertex on its
segment (the same projector the classical mover uses) and then, whatever the model returned:

1. untangled and finite -> used as it came (``CONVERGED_MODEL``);
2. inverted cells -> blended toward the input mesh, x = xi + t (x_model - xi), with the largest t
   (bisection, 30 steps) that inverts nothing (``CONVERGED_BLENDED``, ``info["blend"] = t``);
3. t below ``-{prefix}min_blend`` (default 0.5: most of the adaptation would be lost), or a
   non-finite output -> the classical Monge–Ampère mover moves the mesh instead
   (``info["fallback"] = {"to": "monge-ampere", "why": ...}``; its own reason and iterations).

``info["model_inverted"]`` counts the cells the raw output inverted; ``info["model_time"]`` is the
network's share of the time. :meth:`Mover.move` checks the result again, so no tangled mesh is
returned, ever. The model runs on rank 0 with the whole mesh and the result is broadcast, so 1 and
2 ranks give the same mesh.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.movement.monitors import Monitor
from hybridsolve.movement.mover import Mover, Outcome
from hybridsolve.movement.result import MoveReason
from hybridsolve.movement.untangle import signed_measure

__all__ = ["LearnedMover", "DMMMover", "UM2NMover", "blend_until_untangled"]

log = logging.getLogger(__name__)


def blend_until_untangled(cells: np.ndarray, xi: np.ndarray, x: np.ndarray,
                          steps: int = 30) -> tuple[np.ndarray, float, int]:
    """The largest t in [0, 1] (bisection) with xi + t (x - xi) inverting no cell of ``cells``
    (orientation taken from xi). Returns (coordinates, t, cells the full step inverts)."""
    sign = np.sign(signed_measure(cells, xi))

    def bad(t: float) -> int:
        return int(np.count_nonzero(signed_measure(cells, xi + t * (x - xi)) * sign <= 0))

    full = bad(1.0)
    if full == 0:
        return x, 1.0, 0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if bad(mid):
            hi = mid
        else:
            lo = mid
    return xi + lo * (x - xi), lo, full


class LearnedMover(Mover):
    """Base of the learned movers (see the module text for the guarantee).

    Args:
        mesh, monitor, pinned, curved_tol_deg, prefix: as for :class:`Mover`.
        model: a weights file or a shipped model's name (``-{prefix}model``).
        min_blend: below this blend factor the classical mover is used instead
            (``-{prefix}min_blend``; 0 never falls back, 1 falls back on any inverted cell).
        fallback: ``"monge-ampere"`` or ``"none"`` (``-{prefix}fallback``; with ``"none"`` a
            blend below ``min_blend`` is still returned, and said so).
        fallback_options: keyword arguments of the fallback
            :class:`~hybridsolve.movement.monge_ampere.MongeAmpereMover` (``rtol=``,
            ``variant=``, ...), so a driver's ``create_mover(None, mesh, rtol=1e-3)`` works
            whichever mover ``-mover_type`` names; its options are under
            ``-{prefix}fallback_``.
    """

    default_model = ""

    def __init__(self, mesh: Any, monitor: Any = None, *, model: str | None = None,
                 min_blend: float = 0.5, fallback: str = "monge-ampere", pinned: Any = None,
                 curved_tol_deg: float = 20.0, prefix: str = "mover_",
                 **fallback_options: Any) -> None:
        super().__init__(mesh, monitor, pinned=pinned, curved_tol_deg=curved_tol_deg,
                         prefix=prefix)
        self.model_name = str(self._opt("model", model or self.default_model, str))
        self.min_blend = float(self._opt("min_blend", min_blend, float))
        self.fallback = self._opt("fallback", fallback, str)
        if not 0.0 <= self.min_blend <= 1.0:
            raise InputError(f"min_blend must be in [0, 1], not {self.min_blend}")
        if self.fallback not in ("monge-ampere", "none"):
            raise InputError(f"fallback must be 'monge-ampere' or 'none', not {self.fallback!r}")
        self._classical = None
        self._fallback_kw = fallback_options
        self._pinned, self._curved = pinned, curved_tol_deg
        self.model = self.on_rank0_load()

    # -- what subclasses implement ---------------------------------------------------------------
    #: the network class a model file must hold (its ``kind``), and what to call it
    model_kind, model_label = "", ""

    def load(self, name: str) -> Any:
        """Read the model (rank 0); :class:`InputError` for a bad file or one holding another
        network than ``model_kind`` (the movers are 2-D)."""
        from hybridsolve.learned.models import load_model

        model = load_model(name)
        if type(model).__name__ != self.model_kind:
            raise InputError(f"model {name!r} is a {type(model).__name__}, not a "
                             f"{self.model_label} network")
        if self.d != 2:
            raise InputError(f"model {name!r} moves triangle meshes; the mesh is {self.d}-D")
        return model

    def predict(self, xi: np.ndarray, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
        """New coordinates (nverts, d) for the computational vertices ``xi`` (global order),
        cells ``cells`` and monitor values ``values`` at the vertices (rank 0)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        if self._classical is not None:   # the fallback's warm start goes as well
            self._classical._reset_state()

    def on_rank0_load(self) -> Any:
        """The model on rank 0 (``None`` elsewhere); a bad file is an InputError on every rank."""
        from hybridsolve.parallel import rank0_call

        return rank0_call(self.comm, lambda: self.load(self.model_name),
                          f"loading model {self.model_name!r}", broadcast=False)

    def classical(self) -> Mover:
        """The fallback mover (built on first use, options under ``{prefix}fallback_``)."""
        if self._classical is None:
            from hybridsolve.movement.monge_ampere import MongeAmpereMover

            self.space.set_coords(self.xi)
            self._classical = MongeAmpereMover(self.mesh, self.monitor, pinned=self._pinned,
                                               curved_tol_deg=self._curved,
                                               prefix=self.prefix + "fallback_",
                                               **self._fallback_kw)
        return self._classical

    def _solve(self, monitor: Monitor) -> Outcome:
        g = self.whole_mesh()
        values = self.evaluate_monitor(monitor, self.xi)
        V = g.gather(values[:, None])
        t0 = time.perf_counter()

        def run():
            X = np.asarray(self.predict(g.xi, g.cells, V[:, 0]), dtype=np.float64)
            if X.shape != g.xi.shape or not np.all(np.isfinite(X)):
                return None, 0.0, -1
            X = g.xi + np.einsum("nij,nj->ni", g.projector, X - g.xi)   # stay on the boundary
            Y, t, bad = blend_until_untangled(g.cells, g.xi, X)
            return Y, t, bad

        Y, t, bad = self.on_rank0(run, f"{type(self).__name__} model evaluation")
        model_time = self.comm.bcast(time.perf_counter() - t0, root=0)
        info = {"model_time": model_time, "model_inverted": int(bad), "blend": float(t)}
        why = ""
        if Y is None:
            why = "the model returned non-finite or mis-shaped coordinates"
        elif t < self.min_blend and self.fallback != "none":
            why = (f"the model's mesh inverts {bad} cells and the largest untangled blend toward "
                   f"the input mesh is {t:.3f} < min_blend {self.min_blend:g}")
        if why:
            log.info("  %s: %s; falling back to the Monge-Ampere mover", type(self).__name__, why)
            mover = self.classical()
            out = mover._solve(monitor)
            self.monitor_values = mover.monitor_values
            out.info.update(info)
            out.info["fallback"] = {"to": mover.method, "why": why}
            out.info["blend"] = 0.0
            return out
        x = np.ascontiguousarray(Y[g.global_of_local])
        self.monitor_values = self.evaluate_monitor(monitor, x)
        reason = MoveReason.CONVERGED_MODEL if bad == 0 else MoveReason.CONVERGED_BLENDED
        if bad:
            log.info("  %s: the model's mesh inverts %d cells; blended %.3f of the way",
                     type(self).__name__, bad, t)
        return Outcome(x=x, reason=reason, iterations=1, info=info)


class DMMMover(LearnedMover):
    """The data-free mesh mover (DMM, Hu et al. 2024): a DeepONet-like network gives the potential
    phi(m, xi) and the mesh is x = xi + grad_xi phi (autograd), trained from the Monge–Ampère
    residual alone (:mod:`hybridsolve.learned.dmm`). The branch sees the monitor on a fixed
    sensor grid over the mesh's bounding box (interpolated from the vertex values); trained on
    the unit square (the paper's limit): other domains are its bounding box mapped onto the unit
    square, and the boundary is kept by the projector, not learned."""

    method = "dmm"
    default_model = "dmm2d"
    model_kind, model_label = "DMMNet", "DMM"

    def predict(self, xi: np.ndarray, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
        if getattr(self, "_interp", None) is None:   # the sensor interpolation, once per mesh
            from hybridsolve.learned.dmm import sensor_matrix

            lo, hi = xi.min(axis=0), xi.max(axis=0)
            self._interp = sensor_matrix((xi - lo) / (hi - lo), self.model.sensors, cells)
        return self.model.move_points(xi, values, self._interp)


class UM2NMover(LearnedMover):
    """The UM2N-style mover (:mod:`hybridsolve.learned.um2n`): a graph transformer encoder and
    graph-attention deformer trained on meshes moved by our Monge–Ampère mover (element-area loss
    plus chamfer distance). Works on any triangle mesh; the monitor enters as its vertex values
    on the computational mesh (one evaluation: the model is not iterated)."""

    method = "um2n"
    default_model = "um2n2d"
    model_kind, model_label = "UM2NNet", "UM2N"

    def predict(self, xi: np.ndarray, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
        from hybridsolve.learned.um2n import mesh_graph

        if getattr(self, "_edges", None) is None:
            self._edges = mesh_graph(cells, len(xi))
        return self.model.move_points(xi, cells, self.whole_mesh().projector, values,
                                      self._edges)
