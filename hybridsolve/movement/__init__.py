"""Mesh movement (r-adaptation) of DOLFINx meshes: the Mover interface, the Monge–Ampère mover,
monitors, and quality metrics. See :mod:`hybridsolve.movement.mover`."""

from hybridsolve.movement.monitors import (BallMonitor, CallableMonitor, ConstantMonitor,
                                           GradientMonitor, HessianMonitor, Monitor, RingMonitor,
                                           as_monitor, recover_gradient, recover_hessian)
from hybridsolve.movement.mover import MeshTanglingError, MongeAmpereMover, Mover
from hybridsolve.movement.quality import cell_metrics, gather_cells, mesh_quality, write_mesh
from hybridsolve.plotting import plot_meshes

__all__ = ["Mover", "MongeAmpereMover", "MeshTanglingError", "Monitor", "ConstantMonitor",
           "RingMonitor", "BallMonitor", "CallableMonitor", "GradientMonitor", "HessianMonitor",
           "as_monitor", "recover_gradient", "recover_hessian", "cell_metrics", "mesh_quality",
           "plot_meshes", "write_mesh", "gather_cells"]
