"""The one result type every hybridsolve solve returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SolveResult"]


@dataclass
class SolveResult:
    """What a solve did.

    Attributes:
        iterations: Krylov (or stationary) iterations taken.
        reason: PETSc's converged reason code (``> 0`` converged, ``< 0`` diverged).
        reason_name: the code's PETSc name, e.g. ``CONVERGED_RTOL``, ``DIVERGED_INDEFINITE_PC``.
        residual_history: the residual norm at each iteration (index 0 = initial residual).
        residual_norm: which norm ``residual_history`` holds: ``"preconditioned"``,
            ``"unpreconditioned"``, ``"natural"`` (CG's ``sqrt(r^T M r)``) or ``"none"``.
        true_residual: ``||b - A x||_2 / ||b||_2`` recomputed after the solve (absolute when
            ``b = 0``): the number to trust, whatever the solver monitored.
        time: wall time of the solve in seconds (the slowest rank).
        method: what solved it, e.g. ``"cg+gamg"``.
        x: the solution (a PETSc ``Vec``); not part of :meth:`to_dict`.
        info: anything method-specific (fallback counts, recycle sizes, ...).
    """

    iterations: int
    reason: int
    reason_name: str
    residual_history: np.ndarray
    residual_norm: str
    true_residual: float
    time: float
    method: str
    x: Any = field(default=None, repr=False, compare=False)
    info: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.reason > 0

    def summary(self) -> str:
        """One line: method, iterations, reason, true residual, time."""
        return (
            f"{self.method}: {self.iterations} its, {self.reason_name}, "
            f"true rel. residual {self.true_residual:.3e}, {self.time:.3g} s"
        )

    def to_dict(self) -> dict:
        """Plain-Python form, for JSON/HDF5 provenance."""
        return {
            "iterations": int(self.iterations),
            "reason": int(self.reason),
            "reason_name": self.reason_name,
            "residual_history": [float(v) for v in self.residual_history],
            "residual_norm": self.residual_norm,
            "true_residual": float(self.true_residual),
            "time": float(self.time),
            "method": self.method,
            "info": dict(self.info),
        }
