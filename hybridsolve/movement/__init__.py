"""Mesh movement (r-adaptation) of DOLFINx meshes: the Mover interface, the Monge–Ampère mover,
monitors, and quality metrics. See :mod:`hybridsolve.movement.mover`."""

from hybridsolve.movement.monitors import (BallMonitor, CallableMonitor, ConstantMonitor,
                                           GradientMonitor, HessianMonitor, Monitor, RingMonitor,
                                           as_monitor, recover_gradient, recover_hessian)
from hybridsolve.movement.mover import (MOVERS, MeshTanglingError, Mover, create_mover,
                                        get_mover, mover_names, register_mover)
from hybridsolve.movement.monge_ampere import MongeAmpereMover
from hybridsolve.movement.result import MoveReason, MoveResult
from hybridsolve.movement.quality import cell_metrics, gather_cells, mesh_quality, write_mesh
from hybridsolve.plotting import plot_meshes

__all__ = ["Mover", "MongeAmpereMover", "MeshTanglingError", "MoveResult", "MoveReason",
           "MOVERS", "register_mover", "get_mover", "mover_names", "create_mover", "Monitor", "ConstantMonitor",
           "RingMonitor", "BallMonitor", "CallableMonitor", "GradientMonitor", "HessianMonitor",
           "as_monitor", "recover_gradient", "recover_hessian", "cell_metrics", "mesh_quality",
           "plot_meshes", "write_mesh", "gather_cells"]
