"""The ``cutsquare`` family (NPSolver's data, issue 15): Poisson on unit squares with corners and
holes removed, a new geometry per system, random Fourier sources, Dirichlet or Neumann per
boundary patch.

Geometry: each corner is cut (a square of side 0.1 to 0.2 removed) with probability 1/2, and one
or two disc holes (radius 0.05 to 0.1, centres in [0.35, 0.65]^2, apart) are removed; gmsh,
mesh size 1/n. Boundary patches: the four sides (0-3: x = 0, x = 1, y = 0, y = 1), the four
corner cuts (4-7: (0,0), (1,0), (0,1), (1,1), both edges of a cut), the two holes (8, 9).
``bc=fixed``: every patch Dirichlet; ``bc=random``: each patch Dirichlet or Neumann with
probability 1/2, at least one present patch Dirichlet (side x = 0 is made Dirichlet when the
draw has none: a pure Neumann problem is singular; this family does not make one). Boundary
values are homogeneous (u = 0 on Dirichlet patches, zero flux on Neumann ones).

Source: ``f = sum_{k,l<10} c_kl cos(k pi x) cos(l pi y)``, ``c_kl ~ N(0, 1) / (1 + k + l)``,
scaled to unit RMS over the 10x10 coefficients' grid values (normalised).

Parameter array (120,): ``[cuts (4), holes (2 x (cx, cy, r), r = 0: none), Dirichlet flags of
the 10 patches, the 100 source coefficients]``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import FamilyOption, LinearSystem, ProblemFamily, register

__all__ = ["CutSquare", "MODES", "PATCHES", "source_values", "draw_fourier"]

MODES = 10
PATCHES = 10
_NGEOM = 10


def source_values(coeffs: np.ndarray, *xs: np.ndarray) -> np.ndarray:
    """The Fourier source at points (x, y) or (x, y, z): ``sum c_kl cos(k pi x) cos(l pi y)``
    (``c`` of ``m^d`` coefficients, ``d`` the number of coordinate arrays)."""
    d = len(xs)
    c = np.asarray(coeffs, dtype=float)
    m = int(round(c.size ** (1.0 / d)))
    if m ** d != c.size:
        raise InputError(f"Fourier source: {c.size} coefficients are not m^{d}")
    k = np.arange(m)
    t = np.cos(np.pi * np.outer(xs[0], k)) @ c.reshape(m, -1)          # (n, m^(d-1))
    for x in xs[1:]:
        t = np.einsum("ikr,ik->ir", t.reshape(len(x), m, -1), np.cos(np.pi * np.outer(x, k)))
    return t[:, 0]


def draw_fourier(rng: np.random.Generator, modes: int, dim: int) -> np.ndarray:
    """Fourier coefficients ``c_k ~ N(0, 1) / (1 + |k|_1)`` of ``modes^dim`` cosine modes, scaled
    to unit RMS over a grid of ``2 modes`` points per side."""
    k = np.indices((modes,) * dim).sum(axis=0)
    c = rng.normal(size=(modes,) * dim) / (1.0 + k)
    g = np.linspace(0, 1, 2 * modes)
    X = [x.ravel() for x in np.meshgrid(*([g] * dim), indexing="ij")]
    rms = np.sqrt(np.mean(source_values(c.ravel(), *X) ** 2))
    return (c / rms).ravel()


def _draw_geometry(rng: np.random.Generator) -> np.ndarray:
    cuts = np.where(rng.random(4) < 0.5, rng.uniform(0.1, 0.2, 4), 0.0)
    holes = np.zeros((2, 3))
    count = 1 + int(rng.random() < 0.5)
    for j in range(count):
        for _ in range(100):
            c, r = rng.uniform(0.35, 0.65, 2), rng.uniform(0.05, 0.1)
            if j == 0 or np.linalg.norm(c - holes[0, :2]) > r + holes[0, 2] + 0.05:
                holes[j] = [c[0], c[1], r]
                break
    return np.concatenate([cuts, holes.ravel()])


def _patch_present(geom: np.ndarray) -> np.ndarray:
    cuts, holes = geom[:4], geom[4:].reshape(2, 3)
    present = np.ones(PATCHES, dtype=bool)
    present[4:8] = cuts > 0
    present[8:] = holes[:, 2] > 0
    return present


def _gmsh_geometry(gmsh, geom: np.ndarray) -> None:
    occ = gmsh.model.occ
    sq = occ.addRectangle(0, 0, 0, 1, 1)
    tools = []
    corners = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for (cx, cy), s in zip(corners, geom[:4]):
        if s > 0:
            tools.append((2, occ.addRectangle(cx - s if cx else 0, cy - s if cy else 0, 0, s, s)))
    for cx, cy, r in geom[4:].reshape(2, 3):
        if r > 0:
            tools.append((2, occ.addDisk(cx, cy, 0, r, r)))
    if tools:
        occ.cut([(2, sq)], tools)


def cutsquare_mesh(comm, geom: np.ndarray, n: int):
    """The gmsh triangle mesh of a cut square (built on rank 0, distributed by DOLFINx)."""
    from hybridsolve.problems import fem

    def cutsquare(gmsh, h):
        _gmsh_geometry(gmsh, geom)

    return fem.gmsh_domain(comm, cutsquare, n)


def facet_patches(mesh, geom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boundary facet indices, their patch numbers) on this rank (owned and ghost facets)."""
    import dolfinx

    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim - 1, facets)[:, :2]
    x, y = mid[:, 0], mid[:, 1]
    tol = 1e-6
    patch = np.full(len(facets), -1, dtype=np.int64)
    cuts = geom[:4]
    corners = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for j, ((cx, cy), s) in enumerate(zip(corners, cuts)):
        if s > 0:   # the cut's two edges: inside the removed square's closure, off the sides
            dx, dy = np.abs(x - cx), np.abs(y - cy)
            on = (dx <= s + tol) & (dy <= s + tol) & ((np.abs(dx - s) < tol) | (np.abs(dy - s) < tol))
            patch[on & (patch < 0)] = 4 + j
    for j, (hx, hy, r) in enumerate(geom[4:].reshape(2, 3)):
        if r > 0:
            d = np.hypot(x - hx, y - hy)
            patch[(np.abs(d - r) < 0.3 * r) & (patch < 0)] = 8 + j
    sides = [np.abs(x) < tol, np.abs(x - 1) < tol, np.abs(y) < tol, np.abs(y - 1) < tol]
    for j, on in enumerate(sides):
        patch[on & (patch < 0)] = j
    if (patch < 0).any():
        raise InputError(f"cutsquare: {int((patch < 0).sum())} boundary facets belong to no patch "
                         "(a geometry this family did not draw)")
    return facets, patch


@register
class CutSquare(ProblemFamily):
    """``-Laplace(u) = f`` on a unit square with corners and holes cut out (a new gmsh mesh per
    system), ``u = 0`` on Dirichlet patches, zero flux on Neumann ones; P1 FEM (DOLFINx)."""

    name = "cutsquare"
    summary = ("Poisson on squares with corners and holes cut out, a new mesh per system; random "
               "Fourier source, Dirichlet/Neumann per boundary patch (NPSolver's data)")
    size_doc = "1/mesh size of the gmsh mesh"
    min_n = 8
    fixed_size = False
    #: the geometry's dimension, its parameters, boundary patches and Fourier modes per axis
    dim, ngeom, patches, modes = 2, _NGEOM, PATCHES, MODES
    options = {
        "bc": FamilyOption("random", str, "fixed (all Dirichlet) or random (per patch)",
                           ("fixed", "random")),
    }

    @property
    def fixed_pattern(self) -> bool:
        return False

    def param_shape(self):
        return (self.ngeom + self.patches + self.modes ** self.dim,)

    def sample_params(self, rng, index):
        geom = self.draw_geometry(rng)
        return np.concatenate([geom, self.draw_bc(rng, geom), self.draw_source(rng)])

    def draw_bc(self, rng: np.random.Generator, geom: np.ndarray) -> np.ndarray:
        """Dirichlet flags of the patches for this family's ``bc`` option."""
        present = self.patch_present(geom)
        if self.opts["bc"] == "fixed":
            return present.astype(float)
        flags = (rng.random(self.patches) < 0.5) & present
        if not flags.any():
            flags[0] = True
        return flags.astype(float)

    def draw_source(self, rng: np.random.Generator) -> np.ndarray:
        return draw_fourier(rng, self.modes, self.dim)

    # the geometry: what a family of cut domains defines (cutbox: 3-D)
    @staticmethod
    def draw_geometry(rng: np.random.Generator) -> np.ndarray:
        return _draw_geometry(rng)

    @staticmethod
    def patch_present(geom: np.ndarray) -> np.ndarray:
        return _patch_present(geom)

    def make_mesh(self, comm, geom: np.ndarray):
        return cutsquare_mesh(comm, geom, self.n)

    @staticmethod
    def facet_patches(mesh, geom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return facet_patches(mesh, geom)

    def mesh(self, comm, params: np.ndarray):
        """The (cached) mesh of a parameter array's geometry on ``comm``."""
        key = ("mesh", comm.py2f(), tuple(np.round(np.asarray(params[:self.ngeom], float), 12)))
        if key not in self._cache:
            if len([k for k in self._cache if k[0] == "mesh"]) > 32:   # a bounded cache
                self._cache.clear()
            self._cache[key] = self.make_mesh(comm, np.asarray(params[:self.ngeom]))
        return self._cache[key]

    def model(self, comm, params: np.ndarray):
        """P1 problem for a parameter array: mesh, space, Dirichlet facets, source Function."""
        import dolfinx

        from hybridsolve.problems import fem

        params = self.check_params(params)
        geom = params[:self.ngeom]
        flags = params[self.ngeom:self.ngeom + self.patches] > 0.5
        if not flags.any():
            raise InputError(f"{self.name}: no Dirichlet patch: a pure Neumann problem is singular")
        mesh = self.mesh(comm, params)
        facets, patch = self.facet_patches(mesh, geom)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        f = dolfinx.fem.Function(V)
        x = V.tabulate_dof_coordinates()
        f.x.array[:] = source_values(params[self.ngeom + self.patches:],
                                     *[x[:, j] for j in range(self.dim)])
        dirichlet = facets[flags[patch]]
        problem = fem.P1Problem(mesh, V=V, source=f, dirichlet=dirichlet)
        return SimpleNamespace(problem=problem, f=f, facets=facets, patch=patch, flags=flags)

    def build(self, params, comm, index, previous=None, into=None) -> LinearSystem:
        m = self.model(comm, params)
        A, b = m.problem.assemble()
        return LinearSystem(A=A, b=b, params=params,
                            meta={"discretization": "P1 FEM", "cells":
                                  m.problem.mesh.topology.index_map(self.dim).size_global},
                            canonical=m.problem.canonical,
                            local_coordinates=m.problem.local_coordinates,
                            extra={"problem": m.problem, "model": m})
