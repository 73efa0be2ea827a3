"""Mesh movement (r-adaptation) of DOLFINx meshes: the Mover interface and registry
(:mod:`~hybridsolve.movement.mover`), the move result (:mod:`~hybridsolve.movement.result`), the
Monge–Ampère mover (:mod:`~hybridsolve.movement.monge_ampere`), monitors and quality metrics."""

from hybridsolve.movement.monitors import (BallMonitor, CallableMonitor, ConstantMonitor,
                                           GradientMonitor, HessianMonitor, Monitor, RingMonitor,
                                           as_monitor, recover_gradient, recover_hessian)
from hybridsolve.movement.result import MoveReason, MoveResult
from hybridsolve.movement.mover import (MOVERS, MeshTanglingError, MoveStop, Mover, Outcome,
                                        create_mover, get_mover, mover_names, register_mover)
from hybridsolve.movement.monge_ampere import MongeAmpereMover
from hybridsolve.movement.quality import cell_metrics, gather_cells, mesh_quality, write_mesh
from hybridsolve.plotting import plot_meshes

__all__ = ["Mover", "Outcome", "MoveStop", "MongeAmpereMover", "MeshTanglingError", "MoveResult",
           "MoveReason", "MOVERS", "register_mover", "get_mover", "mover_names", "create_mover",
           "Monitor", "ConstantMonitor", "RingMonitor", "BallMonitor", "CallableMonitor",
           "GradientMonitor", "HessianMonitor", "as_monitor", "recover_gradient",
           "recover_hessian", "cell_metrics", "mesh_quality", "plot_meshes", "write_mesh",
           "gather_cells"]
