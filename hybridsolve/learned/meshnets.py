"""Torch networks on unstructured meshes (no PETSc, no DOLFINx): NPSolver's boundary-aware slice
transformer :class:`NPSolverNet` (issue 15). Its data and training are in
:mod:`~hybridsolve.learned.npsolver`; weights I/O is :mod:`~hybridsolve.learned.models`'s.
"""

from __future__ import annotations

import torch
from torch import nn

from hybridsolve.errors import InputError

__all__ = ["NPSolverNet", "FOURIER", "point_features", "boundary_features", "mesh_features"]

#: Fourier features of the coordinates: sin/cos(k pi x), sin/cos(k pi y), k = 1..FOURIER
FOURIER = 3


def point_features(dim: int) -> int:
    """Features per vertex token in ``dim``-D: coordinates, 2 FOURIER per axis, source, flags."""
    return dim + 2 * dim * FOURIER + 3


def boundary_features(dim: int) -> int:
    """Features per boundary-facet token: midpoint, outward normal, Dirichlet, Neumann."""
    return 2 * dim + 2


def mesh_features(coords, f, dirichlet, neumann, mid, normal, facet_dirichlet):
    """The network's inputs, the one place they are built (training and PETSc alike): vertex
    tokens (coordinates, sin/cos(k pi x), sin/cos(k pi y) (and z) for k = 1..FOURIER, the
    source, the Dirichlet and Neumann-boundary flags) and boundary-facet tokens (midpoint,
    outward normal, Dirichlet, Neumann), as float32 tensors (n, point_features(dim)) and
    (nb, boundary_features(dim)); ``dim`` is ``coords.shape[1]``."""
    import numpy as np

    k = np.arange(1, FOURIER + 1)
    four = np.concatenate([g(np.pi * np.outer(coords[:, j], k)) for j in range(coords.shape[1])
                           for g in (np.sin, np.cos)], axis=1)
    pts = np.concatenate([coords, four, np.asarray(f)[:, None], np.asarray(dirichlet)[:, None],
                          np.asarray(neumann)[:, None]], axis=1)
    d = np.asarray(facet_dirichlet, dtype=float)
    btok = np.concatenate([mid, normal, d[:, None], 1 - d[:, None]], axis=1)
    return torch.from_numpy(pts).float(), torch.from_numpy(btok).float()


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, slices: int, bslices: int) -> None:
        super().__init__()
        self.ln_p = nn.LayerNorm(width)
        self.ln_b = nn.LayerNorm(width)
        self.slice_p = nn.Linear(width, slices)
        self.slice_b = nn.Linear(width, bslices)
        self.value_p = nn.Linear(width, width)
        self.value_b = nn.Linear(width, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_t = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.temperature = nn.Parameter(torch.tensor(0.5))
        self.slices = slices

    def forward(self, hp, hb):
        zp, zb = self.ln_p(hp), self.ln_b(hb)
        tau = self.temperature.abs().clamp_min(0.05)
        wp = torch.softmax(self.slice_p(zp) / tau, dim=-1)          # (n, S)
        wb = torch.softmax(self.slice_b(zb) / tau, dim=-1)          # (nb, Sb)
        tp = wp.T @ self.value_p(zp) / (wp.sum(0)[:, None] + 1e-6)  # slice tokens
        tb = wb.T @ self.value_b(zb) / (wb.sum(0)[:, None] + 1e-6)
        t = torch.cat([tp, tb], dim=0)[None]
        t = t + self.attn(self.ln_t(t), self.ln_t(t), self.ln_t(t), need_weights=False)[0]
        hp = hp + self.out(wp @ t[0, : self.slices])                # interior slices only
        return hp + self.mlp(self.ln2(hp))


class NPSolverNet(nn.Module):
    """The boundary-aware slice transformer: vertex features and boundary-facet features in,
    the solution at the vertices out (zero on Dirichlet vertices); ``dim``: 2 (triangle
    meshes) or 3 (tetrahedra), which fixes the input features."""

    def __init__(self, width: int = 64, blocks: int = 4, heads: int = 4, slices: int = 32,
                 bslices: int = 8, dim: int = 2) -> None:
        super().__init__()
        if width % heads:
            raise InputError(f"NPSolverNet: width {width} is not a multiple of heads {heads}")
        if dim not in (2, 3):
            raise InputError(f"NPSolverNet: dim must be 2 or 3, got {dim}")
        self.config = {"kind": "NPSolverNet", "width": width, "blocks": blocks, "heads": heads,
                       "slices": slices, "bslices": bslices, "dim": dim}
        self.dim = dim
        self.n_point, self.n_boundary = point_features(dim), boundary_features(dim)
        self.embed_p = nn.Sequential(nn.Linear(self.n_point, width), nn.GELU(),
                                     nn.Linear(width, width))
        self.embed_b = nn.Sequential(nn.Linear(self.n_boundary, width), nn.GELU(),
                                     nn.Linear(width, width))
        self.blocks = nn.ModuleList(_Block(width, heads, slices, bslices) for _ in range(blocks))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                  nn.Linear(width, 1))
        #: the solutions of unit-RMS sources are O(1e-2): the head's output is scaled by this
        self.scale = 0.03

    def forward(self, points: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
        if points.shape[-1] != self.n_point or boundary.shape[-1] != self.n_boundary:
            raise InputError(f"NPSolverNet ({self.dim}-D): inputs with {points.shape[-1]} vertex "
                             f"and {boundary.shape[-1]} boundary features, expected "
                             f"{self.n_point} and {self.n_boundary} (a {self.dim}-D mesh)")
        hp, hb = self.embed_p(points), self.embed_b(boundary)
        for blk in self.blocks:
            hp = blk(hp, hb)
        free = 1.0 - points[:, self.n_point - 2]                    # 0 on Dirichlet vertices
        return self.scale * self.head(hp)[:, 0] * free
