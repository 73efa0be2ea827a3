"""The result of a mesh move, with the movers' own reasons (no KSP codes). No DOLFINx import."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MoveReason", "MoveResult"]


class MoveReason(enum.IntEnum):
    """Why a move ended: positive converged, negative not (the mesh is then unchanged unless
    ``raise_on_fail=False`` returned the last untangled iterate)."""

    CONVERGED_RTOL = 1        # the Monge–Ampère residual met rtol
    CONVERGED_MODEL = 2       # a learned mover's output, accepted by the checks
    DIVERGED_MAX_IT = -1      # iteration limit
    DIVERGED_DTOL = -2        # the residual grew past the divergence tolerance
    DIVERGED_TANGLING = -3    # every further step would invert cells
    DIVERGED_MONITOR = -4     # the monitor returned values that are not positive and finite


@dataclass
class MoveResult:
    """What a move did.

    Attributes:
        iterations: the mover's (nonlinear) iterations.
        reason: a :class:`MoveReason`.
        residual_history: the residual at each iteration (index 0 = initial).
        residual: which residual ``residual_history`` holds (e.g. ``"monge-ampere relative L2"``).
        time: wall time in seconds (the slowest rank).
        method: which mover, e.g. ``"monge-ampere/newton"``.
        quality: mesh quality after the move (``hybridsolve.movement.quality.mesh_quality``).
        info: mover-specific facts and counters (inner iterations, line-search steps, fallbacks);
            ``info["quality"]`` is :attr:`quality` too.
    """

    iterations: int
    reason: MoveReason
    residual_history: np.ndarray
    residual: str
    time: float
    method: str
    quality: dict = field(default_factory=dict)
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
        return (f"{self.method}: {self.iterations} its, {self.reason_name}, residual "
                f"{self.final_residual:.3e}, {self.time:.3g} s")

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": int(self.iterations), "reason": int(self.reason),
                "reason_name": self.reason_name,
                "residual_history": [float(v) for v in self.residual_history],
                "residual": self.residual, "time": float(self.time), "method": self.method,
                "quality": dict(self.quality),
                "info": {k: v for k, v in self.info.items() if k != "quality"}}
