"""What a mesh move did: :class:`MoveResult`, with the movers' own :class:`MoveReason` codes.

A mesh move is not a linear solve: its reasons say why a *move* ended (the Monge–Ampère residual
met ``rtol``, a learned model's output was accepted, a step would tangle the mesh, ...), not
PETSc's KSP reasons; :class:`~hybridsolve.solvers.result.SolveResult` stays the linear solves'
type. This module imports neither MPI, PETSc nor DOLFINx.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MoveReason", "MoveResult"]


class MoveReason(enum.IntEnum):
    """Why a move ended: positive = the mesh was moved to an accepted result, negative = not.

    Every returned mesh is untangled whatever the reason; on a negative reason the mesh is left
    as it was before the call, except ``DIVERGED_MAX_IT`` under ``move(raise_on_fail=False)``,
    which keeps the last (untangled) iterate.
    """

    #: the mover's residual met its ``rtol``
    CONVERGED_RTOL = 1
    #: a learned mover's output, untangled, used as it came (issue 16)
    CONVERGED_MODEL = 2
    #: a learned mover's output blended toward the input mesh until untangled (issue 16;
    #: the factor in ``info["blend"]``)
    CONVERGED_BLENDED = 3
    #: the mover's residual met ``rtol`` with a map that folds a few cells (next to a
    #: re-entrant corner, say); those cells and a patch around them were untangled locally
    #: (``info["repair"]``: cells, vertices moved, rings)
    CONVERGED_REPAIRED = 4
    #: the iteration limit (``max_it``) was reached
    DIVERGED_MAX_IT = -1
    #: the residual grew past ``dtol`` times the first one
    DIVERGED_DTOL = -2
    #: the next iterate (or the result) would invert cells
    DIVERGED_TANGLING = -3
    #: the monitor returned values that are not finite and positive, or raised
    DIVERGED_MONITOR = -4
    #: no step length gives an untangled mesh: the iteration cannot proceed
    DIVERGED_STALL = -5
    #: an inner linear solve (Laplacian, Hessian or gradient projection) failed
    DIVERGED_LINEAR_SOLVE = -6


@dataclass
class MoveResult:
    """What a move did.

    Attributes:
        iterations: the mover's (nonlinear) iterations; 0 for a mesh that was already right,
            1 for a learned mover's single evaluation.
        reason: a :class:`MoveReason`.
        residual_history: the residual at each iteration (index 0 = initial); empty for a
            mover without one.
        residual: which residual ``residual_history`` holds, e.g. ``"monge-ampere relative
            L2"`` (``||m det(I+H) - theta|| / ||theta||``), or ``"none"``.
        time: wall time of the move in seconds (the slowest rank), without the quality metrics.
        method: which mover, e.g. ``"monge-ampere-newton"``.
        monitor: the monitor's name.
        quality_before: :func:`~hybridsolve.movement.quality.mesh_quality` of the mesh as it
            was before the call, under the same monitor.
        quality: the same after the call (equal to ``quality_before`` when the mesh was left
            unchanged).
        moved: whether this call changed the mesh.
        message: one line saying why a move failed (empty when it converged).
        info: mover-specific facts and counters. Keys in use: ``inner_iterations`` (CG its of
            the Laplacian solves), ``linear_iterations`` (Newton's GMRES), ``backtracks`` and
            ``relaxation_steps`` (Newton's line search and its fallback), ``step_halvings``
            (relaxation), ``rtol``, ``repair`` (the local untangling of a folded map: cells
            inverted before and after, vertices moved, patch cells, rings, time); for learned movers (issue 16) ``blend`` (the factor toward
            the input mesh) and ``fallback`` (``{"to": "monge-ampere", "why": ...}`` when the
            classical mover produced the mesh instead). ``info["quality"]`` is :attr:`quality`
            as well (read by the ``hybridsolve move`` command).
    """

    iterations: int
    reason: MoveReason
    residual_history: np.ndarray
    residual: str
    time: float
    method: str
    monitor: str = ""
    quality_before: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    moved: bool = False
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.reason > 0

    @property
    def reason_name(self) -> str:
        return MoveReason(self.reason).name

    @property
    def final_residual(self) -> float:
        return float(self.residual_history[-1]) if len(self.residual_history) else float("nan")

    # the name SolveResult uses for the number to trust
    true_residual = final_residual

    def summary(self) -> str:
        """One line: method, iterations, reason, final residual, time (and why it failed)."""
        line = (f"{self.method}: {self.iterations} its, {self.reason_name}, residual "
                f"{self.final_residual:.3e}, {self.time:.3g} s")
        return f"{line}: {self.message}" if self.message else line

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, for JSON."""
        return {"iterations": int(self.iterations), "reason": int(self.reason),
                "reason_name": self.reason_name,
                "residual_history": [float(v) for v in self.residual_history],
                "residual": self.residual, "time": float(self.time), "method": self.method,
                "monitor": self.monitor, "moved": bool(self.moved), "message": self.message,
                "quality_before": dict(self.quality_before), "quality": dict(self.quality),
                "info": {k: v for k, v in self.info.items() if k != "quality"}}
