"""Mesh quality after movement: metrics, gathering cells for a picture
(:func:`hybridsolve.plotting.plot_meshes`), and XDMF/VTX output for ParaView.

Per cell K (simplex, affine): signed volume |K|, aspect ratio h_max / (c_d r_K) (1 for the
regular simplex; c_2 = 2 sqrt 3, c_3 = 2 sqrt 6, r_K the inradius), and Huang's measures for the
isotropic metric M = m^(2/d) I of a monitor m (m_K = mean of its vertex values):

* equidistribution Q_eq,K = m_K |K| / (sum_K m_K |K| / N)   (1 is ideal),
* alignment Q_ali,K = tr(F^T F) / (d det(F^T F)^(1/d))     (1 is ideal; F maps the regular
  simplex onto K; m cancels for an isotropic metric),

reported as max and L2 average; sigma/mu is the coefficient of variation of m_K |K|.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order)

import dolfinx  # noqa: E402
import dolfinx.fem  # noqa: E402
import dolfinx.io  # noqa: E402

__all__ = ["cell_metrics", "mesh_quality", "write_mesh", "gather_cells"]

_REGULAR = {
    2: np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]]),
    3: np.array([[1.0, 0.5, 0.5], [0.0, np.sqrt(3) / 2, np.sqrt(3) / 6], [0.0, 0.0, np.sqrt(2 / 3)]]),
}


def _owned_cells(mesh: Any) -> int:
    return mesh.topology.index_map(mesh.topology.dim).size_local


def _cell_points(mesh: Any, coords: np.ndarray | None = None) -> np.ndarray:
    d = mesh.topology.dim
    x = mesh.geometry.x[:, :d] if coords is None else coords
    n = _owned_cells(mesh)
    return x[mesh.geometry.dofmaps[0][:n]]  # (n, d+1, d)


def _vertex_to_cell(mesh: Any, values: np.ndarray | None, space: Any | None) -> np.ndarray:
    n = _owned_cells(mesh)
    if values is None:
        return np.ones(n)
    V = space.V if space is not None else dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    dofs = V.dofmap.list[:n]
    return np.asarray(values)[dofs].mean(axis=1)


def cell_metrics(mesh: Any, monitor_values: np.ndarray | None = None, *,
                 space: Any | None = None, reference_sign: np.ndarray | None = None) -> dict:
    """Per owned cell: ``volume`` (signed, relative to ``reference_sign``), ``aspect_ratio``,
    ``monitor`` (m_K), ``q_eq`` and ``q_ali`` (Huang), ``equidistribution`` (m_K|K| / mean)."""
    d = mesh.topology.dim
    p = _cell_points(mesh)
    E = p[:, 1:, :] - p[:, :1, :]  # rows = edges from vertex 0
    P = np.transpose(E, (0, 2, 1))  # columns = edges
    fact = 2.0 if d == 2 else 6.0
    vol = np.linalg.det(P) / fact
    if reference_sign is not None:
        vol = vol * reference_sign[: len(vol)]
    else:
        vol = np.abs(vol)
    # aspect ratio: longest edge over the regular simplex's value for that inradius
    idx = [(i, j) for i in range(d + 1) for j in range(i + 1, d + 1)]
    edges = np.stack([np.linalg.norm(p[:, i] - p[:, j], axis=1) for i, j in idx], axis=1)
    if d == 2:
        area_b = edges.sum(axis=1) / 2  # semi-perimeter: r = A / s
        inr = np.abs(vol) / np.maximum(area_b, 1e-300)
        c = 2 * np.sqrt(3)
    else:
        faces = [(1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)]
        fa = sum(0.5 * np.linalg.norm(np.cross(p[:, b] - p[:, a], p[:, cc] - p[:, a]), axis=1)
                 for a, b, cc in faces)
        inr = 3 * np.abs(vol) / np.maximum(fa, 1e-300)
        c = 2 * np.sqrt(6)
    aspect = edges.max(axis=1) / np.maximum(c * inr, 1e-300)
    F = P @ np.linalg.inv(_REGULAR[d])
    FtF = np.transpose(F, (0, 2, 1)) @ F
    detF = np.maximum(np.linalg.det(FtF), 1e-300)
    q_ali = np.trace(FtF, axis1=1, axis2=2) / (d * detF ** (1.0 / d))
    m = _vertex_to_cell(mesh, monitor_values, space)
    w = m * np.abs(vol)
    comm = mesh.comm
    n_glob = comm.allreduce(len(w), op=MPI.SUM)
    mean_w = comm.allreduce(float(w.sum()), op=MPI.SUM) / max(n_glob, 1)
    return {"volume": vol, "aspect_ratio": aspect, "monitor": m, "q_ali": q_ali,
            "q_eq": w / mean_w, "equidistribution": w / mean_w}


def mesh_quality(mesh: Any, monitor_values: np.ndarray | None = None, *, space: Any | None = None,
                 reference_sign: np.ndarray | None = None) -> dict:
    """Global quality numbers (same on every rank): ``cells``, ``inverted`` (against
    ``reference_sign``, the cells' orientation on the computational mesh; degenerate cells only
    without it), ``min_jacobian``
    (d! min |K|), ``volume_ratio`` (max |K| / min |K|), ``aspect_ratio_max``/``_mean``,
    ``weighted_volume_ratio`` (max m_K|K| / min m_K|K|: what the ``movement`` library prints as
    "volume ratio"), ``equidistribution_cv`` (sigma/mu of m_K |K|), ``q_eq_max``/``q_eq_l2``,
    ``q_ali_max``/``q_ali_l2``."""
    cm = cell_metrics(mesh, monitor_values, space=space, reference_sign=reference_sign)
    comm = mesh.comm
    vol = cm["volume"]
    # inverted = non-positive volume against the orientation the cells had on the computational
    # mesh; without that reference (DOLFINx cells are not consistently oriented) only degenerate
    # (zero-volume) cells can be counted
    scale = float(np.abs(vol).max(initial=0.0))
    inverted_local = int(np.count_nonzero(vol <= 0)) if reference_sign is not None else \
        int(np.count_nonzero(np.abs(vol) <= 1e-14 * max(scale, 1e-300)))
    def red(a, op):
        return comm.allreduce(float(op(a)) if len(a) else (np.inf if op is np.min else -np.inf if op is np.max else 0.0),
                              op={np.min: MPI.MIN, np.max: MPI.MAX, np.sum: MPI.SUM}[op])

    n = comm.allreduce(len(vol), op=MPI.SUM)
    w = cm["equidistribution"]
    mean_w = 1.0
    var = red((w - mean_w) ** 2, np.sum) / max(n, 1)
    d = mesh.topology.dim
    fact = 2.0 if d == 2 else 6.0
    absvol = np.abs(vol)
    return {
        "cells": int(n),
        "inverted": int(comm.allreduce(inverted_local, op=MPI.SUM)),
        "min_jacobian": fact * red(vol, np.min),
        "volume_ratio": red(absvol, np.max) / max(red(absvol, np.min), 1e-300),
        "weighted_volume_ratio": red(w, np.max) / max(red(w, np.min), 1e-300),
        "aspect_ratio_max": red(cm["aspect_ratio"], np.max),
        "aspect_ratio_mean": red(cm["aspect_ratio"], np.sum) / max(n, 1),
        "equidistribution_cv": float(np.sqrt(var)) / mean_w,
        "q_eq_max": red(cm["q_eq"], np.max),
        "q_eq_l2": float(np.sqrt(red(cm["q_eq"] ** 2, np.sum) / max(n, 1))),
        "q_ali_max": red(cm["q_ali"], np.max),
        "q_ali_l2": float(np.sqrt(red(cm["q_ali"] ** 2, np.sum) / max(n, 1))),
    }


def gather_cells(mesh: Any, cell_values: np.ndarray | None = None, coords: np.ndarray | None = None):
    """Owned cells' vertex coordinates (n, d+1, d) and values, gathered on rank 0 (None elsewhere)."""
    p = _cell_points(mesh, coords)
    parts = mesh.comm.gather((p, None if cell_values is None else np.asarray(cell_values)), root=0)
    if mesh.comm.rank != 0:
        return None, None
    P = np.concatenate([q[0] for q in parts])
    vals = None if cell_values is None else np.concatenate([q[1] for q in parts])
    return P, vals


def write_mesh(mesh: Any, path: str | Path, *, monitor_values: np.ndarray | None = None,
               space: Any | None = None, time: float = 0.0) -> Path:
    """Write the mesh with its per-cell quality metrics (DG0) and the monitor (P1) for ParaView.

    ``.xdmf`` (default; with its .h5): one file. ``.bp`` (VTX/ADIOS2): the metrics in ``path``
    and the monitor in ``<stem>_monitor.bp`` (a VTX file holds functions of one element).
    """
    path = Path(path)
    vtx = path.suffix == ".bp"
    if not vtx:
        path = path.with_suffix(".xdmf")
    if mesh.comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    mesh.comm.Barrier()
    cm = cell_metrics(mesh, monitor_values, space=space)
    Q = dolfinx.fem.functionspace(mesh, ("DG", 0))
    metrics = []
    n = _owned_cells(mesh)
    for name in ("volume", "aspect_ratio", "q_eq", "q_ali"):
        f = dolfinx.fem.Function(Q, name=name)
        f.x.array[:n] = cm[name]
        f.x.scatter_forward()
        metrics.append(f)
    mon = []
    if monitor_values is not None:
        V = space.V if space is not None else dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        m = dolfinx.fem.Function(V, name="monitor")
        m.x.array[:] = monitor_values
        mon.append(m)
    if vtx:
        with dolfinx.io.VTXWriter(mesh.comm, str(path), metrics) as w:
            w.write(time)
        if mon:
            with dolfinx.io.VTXWriter(mesh.comm, str(path.with_name(path.stem + "_monitor.bp")), mon) as w:
                w.write(time)
        return path
    with dolfinx.io.XDMFFile(mesh.comm, str(path), "w") as xf:
        xf.write_mesh(mesh)
        for f in metrics + mon:
            xf.write_function(f, time)
    return path
