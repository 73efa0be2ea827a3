"""The ``cutbox`` family (NPSolver's 3-D data, issue 15): Poisson on unit cubes with one or two
cylindrical through-holes, a new geometry per system, random Fourier sources, Dirichlet or
Neumann per boundary patch. The 3-D sibling of :mod:`~hybridsolve.problems.cutsquare` (same
options, same parameter layout: geometry, Dirichlet flags, Fourier coefficients).

Geometry: the holes run parallel to one axis (x, y or z, drawn), through the whole cube; one or
two of them (probability 1/2 each), radius 0.1 to 0.16, centres in [0.3, 0.7]^2 of the cross
section, at least 0.05 apart; gmsh (OpenCASCADE), tetrahedra of size 1/n. Boundary patches: the
six faces (0-5: x = 0, x = 1, y = 0, y = 1, z = 0, z = 1; a face keeps its patch where a hole cuts
it) and the two cylinders (6, 7). ``bc`` as cutsquare's: ``fixed`` every patch Dirichlet,
``random`` each patch with probability 1/2, face x = 0 made Dirichlet when the draw has none.

Source: ``f = sum_{k,l,m<6} c_klm cos(k pi x) cos(l pi y) cos(m pi z)``,
``c_klm ~ N(0, 1) / (1 + k + l + m)``, scaled to unit RMS (6^3 modes: 10^3 would be 1000
coefficients per sample for a mesh of about 1500 vertices at n = 8).

Parameter array (231,): ``[axis (0, 1, 2), holes 2 x (c1, c2, r) (r = 0: none), Dirichlet flags
of the 8 patches, the 216 source coefficients]``.
"""

from __future__ import annotations

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import register
from hybridsolve.problems.cutsquare import CutSquare

__all__ = ["CutBox", "cutbox_mesh"]

_NGEOM, _PATCHES, _MODES = 7, 8, 6


def _draw_geometry(rng: np.random.Generator) -> np.ndarray:
    axis = float(rng.integers(3))
    holes = np.zeros((2, 3))
    count = 1 + int(rng.random() < 0.5)
    for j in range(count):
        for _ in range(100):
            c, r = rng.uniform(0.3, 0.7, 2), rng.uniform(0.1, 0.16)
            if j == 0 or np.linalg.norm(c - holes[0, :2]) > r + holes[0, 2] + 0.05:
                holes[j] = [c[0], c[1], r]
                break
    return np.concatenate([[axis], holes.ravel()])


def _cross(axis: int) -> tuple[int, int]:
    """The two coordinates of the cross section of holes along ``axis``."""
    return tuple(j for j in range(3) if j != axis)


def _check(geom: np.ndarray) -> tuple[int, np.ndarray]:
    geom = np.asarray(geom, dtype=float)
    if geom.shape != (_NGEOM,) or geom[0] not in (0.0, 1.0, 2.0):
        raise InputError(f"cutbox: geometry [axis, 2 x (c1, c2, r)] expected, got {geom}")
    holes = geom[1:].reshape(2, 3)
    if (holes[:, 2] < 0).any() or (holes[:, 2] > 0.3).any() or holes[0, 2] <= 0:
        raise InputError(f"cutbox: hole radii must be in (0, 0.3] (the second may be 0), got "
                         f"{holes[:, 2]}")
    return int(geom[0]), holes


def cutbox_mesh(comm, geom: np.ndarray, n: int):
    """The gmsh tetrahedral mesh of a cube with cylindrical holes (built on rank 0)."""
    from hybridsolve.problems import fem

    axis, holes = _check(geom)
    a, b = _cross(axis)

    def cutbox(gmsh, h):
        occ = gmsh.model.occ
        box = occ.addBox(0, 0, 0, 1, 1, 1)
        tools = []
        for c1, c2, r in holes:
            if r > 0:
                base, direction = np.zeros(3), np.zeros(3)
                base[axis], base[a], base[b] = -0.1, c1, c2
                direction[axis] = 1.2           # through the whole cube, past both faces
                tools.append((3, occ.addCylinder(*base, *direction, r)))
        occ.cut([(3, box)], tools)

    return fem.gmsh_domain(comm, cutbox, n, dim=3)


def facet_patches(mesh, geom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boundary facet indices, their patch numbers) on this rank (owned and ghost facets)."""
    import dolfinx

    axis, holes = _check(geom)
    a, b = _cross(axis)
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim - 1, facets)
    tol = 1e-6
    patch = np.full(len(facets), -1, dtype=np.int64)
    for j in range(3):          # the faces first: a hole's facets never lie in a face's plane
        patch[(np.abs(mid[:, j]) < tol) & (patch < 0)] = 2 * j
        patch[(np.abs(mid[:, j] - 1) < tol) & (patch < 0)] = 2 * j + 1
    # a hole's facet centroid lies inside its circle, at 0.8 r or more for n >= 6: each facet
    # goes to the hole it is relatively closest to (two holes may be only 0.05 apart)
    gap = np.full((len(facets), 2), np.inf)
    for j, (c1, c2, r) in enumerate(holes):
        if r > 0:
            gap[:, j] = np.abs(np.hypot(mid[:, a] - c1, mid[:, b] - c2) - r) / r
    near = np.argmin(gap, axis=1)
    hole = (patch < 0) & (gap[np.arange(len(facets)), near] < 0.5)
    patch[hole] = 6 + near[hole]
    if (patch < 0).any():
        raise InputError(f"cutbox: {int((patch < 0).sum())} boundary facets belong to no patch "
                         "(a geometry this family did not draw)")
    return facets, patch


@register
class CutBox(CutSquare):
    """``-Laplace(u) = f`` on a unit cube with cylindrical through-holes (a new gmsh mesh per
    system), ``u = 0`` on Dirichlet patches, zero flux on Neumann ones; P1 FEM (DOLFINx)."""

    name = "cutbox"
    summary = ("Poisson on cubes with one or two cylindrical holes, a new mesh per system; random "
               "Fourier source, Dirichlet/Neumann per boundary patch (NPSolver's 3-D data)")
    size_doc = "1/mesh size of the gmsh mesh"
    min_n = 6
    dim, ngeom, patches, modes = 3, _NGEOM, _PATCHES, _MODES

    @staticmethod
    def draw_geometry(rng: np.random.Generator) -> np.ndarray:
        return _draw_geometry(rng)

    @staticmethod
    def patch_present(geom: np.ndarray) -> np.ndarray:
        present = np.ones(_PATCHES, dtype=bool)
        present[6:] = np.asarray(geom, dtype=float)[1:].reshape(2, 3)[:, 2] > 0
        return present

    def make_mesh(self, comm, geom: np.ndarray):
        return cutbox_mesh(comm, geom, self.n)

    @staticmethod
    def facet_patches(mesh, geom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return facet_patches(mesh, geom)
