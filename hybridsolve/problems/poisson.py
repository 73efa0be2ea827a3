"""Poisson and Helmholtz families with random smooth (Chebyshev-series) data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import FamilyOption, register
from hybridsolve.problems.fem_family import FEMFamily
from hybridsolve.problems.fields import chebyshev_coefficients, chebyshev_eval


@register
class Poisson(FEMFamily):
    """``-Laplace(u) = f`` with ``u = g`` on the boundary; ``f``, ``g`` random Chebyshev series.

    Parameter array ``(2, degree, degree)``: the coefficients of ``f`` (scaled by ``source_scale``)
    and of ``g``, both series on the box [0, 1]^2. Domains: ``square`` (the unit square, an
    ``n x n`` triangle mesh) or ``lshape_hole`` (an irregular gmsh domain, mesh size ``1 / n``).
    """

    name = "poisson"
    fixed_matrix = True
    summary = "-Laplace(u) = f, u = g; random Chebyshev f and g; unit square or gmsh L-shape with hole"
    size_doc = "cells per side (square) or 1/mesh size (lshape_hole)"
    options = {
        "domain": FamilyOption("square", str, "square or lshape_hole (gmsh)", ("square", "lshape_hole")),
        "degree": FamilyOption(6, int, "Chebyshev degree of f and g (per direction)"),
        "source_scale": FamilyOption(10.0, float, "scale of the source series"),
    }

    def validate_options(self) -> None:
        if self.opts["degree"] < 1:
            raise InputError(f"{self.name}: degree must be >= 1")

    def param_shape(self):
        d = self.opts["degree"]
        return (2, d, d)

    def sample_params(self, rng, index):
        d = self.opts["degree"]
        return np.stack([self.opts["source_scale"] * chebyshev_coefficients(rng, d),
                         chebyshev_coefficients(rng, d)])

    def _mesh(self, comm):
        from hybridsolve.problems import fem

        if self.opts.get("domain", "square") == "square":
            return fem.unit_square(comm, self.n)
        return fem.gmsh_domain(comm, self.opts["domain"], self.n)

    def make_model(self, comm):
        from hybridsolve.problems import fem

        import dolfinx

        mesh = self._mesh(comm)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        f, g = dolfinx.fem.Function(V), dolfinx.fem.Function(V)
        problem = fem.P1Problem(mesh, V=V, source=f, g=g, reaction=self._reaction(mesh))
        return SimpleNamespace(problem=problem, f=f, g=g)

    def _reaction(self, mesh):
        return None

    def set_coefficients(self, model, params):
        x = model.problem.dof_coordinates
        model.f.x.array[:] = chebyshev_eval(params[0], x[:, 0], x[:, 1])
        model.g.x.array[:] = chebyshev_eval(params[1], x[:, 0], x[:, 1])


@register
class Helmholtz(Poisson):
    """``-Laplace(u) - k^2 u = f`` on the unit square, ``u = 0``; ``k ~ U(k_min, k_max)``.

    ``k_min`` defaults above the first Dirichlet eigenvalue's root (pi sqrt 2 = 4.44) so every
    system is symmetric indefinite. Parameter array: the source's Chebyshev coefficients,
    flattened, followed by ``k``.
    """

    name = "helmholtz"
    fixed_matrix = False
    summary = "-Laplace(u) - k^2 u = f, u = 0 on the unit square; k varies; symmetric indefinite"
    size_doc = "cells per side of the unit square (keep k h < 1)"
    definite = False
    options = {
        "degree": FamilyOption(6, int, "Chebyshev degree of f (per direction)"),
        "source_scale": FamilyOption(10.0, float, "scale of the source series"),
        "k_min": FamilyOption(10.0, float, "smallest wavenumber"),
        "k_max": FamilyOption(20.0, float, "largest wavenumber"),
    }

    @property
    def default_options(self) -> dict:
        return {"ksp_type": "gmres", "ksp_gmres_restart": 100}

    def validate_options(self) -> None:
        super().validate_options()
        if not 0 <= self.opts["k_min"] <= self.opts["k_max"]:
            raise InputError("helmholtz: need 0 <= k_min <= k_max")

    def param_shape(self):
        d = self.opts["degree"]
        return (d * d + 1,)

    def sample_params(self, rng, index):
        d = self.opts["degree"]
        c = self.opts["source_scale"] * chebyshev_coefficients(rng, d)
        k = rng.uniform(self.opts["k_min"], self.opts["k_max"])
        return np.concatenate([c.ravel(), [k]])

    def _reaction(self, mesh):
        import dolfinx

        self._k2 = dolfinx.fem.Constant(mesh, 0.0)
        return -self._k2

    def make_model(self, comm):
        model = super().make_model(comm)
        model.k2 = self._k2
        return model

    def set_coefficients(self, model, params):
        d = self.opts["degree"]
        x = model.problem.dof_coordinates
        model.f.x.array[:] = chebyshev_eval(params[:-1].reshape(d, d), x[:, 0], x[:, 1])
        model.g.x.array[:] = 0.0
        model.k2.value = params[-1] ** 2

    def build(self, params, comm, index, previous=None, into=None):
        sys_ = super().build(params, comm, index, previous)
        sys_.meta["k"] = float(params[-1])
        return sys_


@register
class Thermal(FEMFamily):
    """Steady heat ``-Laplace(T) = 0`` in a 2 x 1 rectangle with a slot cut from the top edge.

    Random boundary data, fixed matrix: temperature ``T_left`` on x = 0 and ``T_right`` on x = 2
    (Dirichlet), heat flux ``q_bottom`` into the bottom edge and ``q_slot`` through the slot
    walls (Neumann), the top insulated. Parameter array: ``[T_left, T_right, q_bottom, q_slot]``.
    """

    name = "thermal"
    fixed_matrix = True
    summary = "steady heat in a rectangle with a slot; random boundary temperatures and fluxes (fixed matrix)"
    size_doc = "1/mesh size of the gmsh mesh"
    options = {
        "t_range": FamilyOption(1.0, float, "temperatures ~ U(0, t_range)"),
        "q_range": FamilyOption(1.0, float, "fluxes ~ U(-q_range, q_range)"),
    }

    def param_shape(self):
        return (4,)

    def sample_params(self, rng, index):
        t, q = self.opts["t_range"], self.opts["q_range"]
        return np.array([rng.uniform(0, t), rng.uniform(0, t), rng.uniform(-q, q), rng.uniform(-q, q)])

    def make_model(self, comm):
        from hybridsolve.problems import fem

        import dolfinx

        mesh = fem.gmsh_domain(comm, "slot", self.n)
        tdim = mesh.topology.dim
        eps = 1e-8

        def on(pred):
            return dolfinx.mesh.locate_entities_boundary(mesh, tdim - 1, pred)

        left = on(lambda x: np.isclose(x[0], 0.0))
        right = on(lambda x: np.isclose(x[0], 2.0))
        bottom = on(lambda x: np.isclose(x[1], 0.0))
        slot = on(lambda x: (x[0] > 0.95 - eps) & (x[0] < 1.05 + eps) & (x[1] > 0.4 - eps)
                  & (x[1] < 1.0 - eps))
        facets = np.concatenate([bottom, slot])
        tags = np.concatenate([np.full(len(bottom), 3), np.full(len(slot), 4)]).astype(np.int32)
        order = np.argsort(facets)
        ft = dolfinx.mesh.meshtags(mesh, tdim - 1, facets[order].astype(np.int32), tags[order])
        q_bottom = dolfinx.fem.Constant(mesh, 0.0)
        q_slot = dolfinx.fem.Constant(mesh, 0.0)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        g = dolfinx.fem.Function(V)
        problem = fem.P1Problem(mesh, V=V, dirichlet=np.union1d(left, right), g=g,
                                neumann={3: q_bottom, 4: q_slot}, facet_tags=ft)
        return SimpleNamespace(problem=problem, g=g, q_bottom=q_bottom, q_slot=q_slot)

    def set_coefficients(self, model, params):
        t_left, t_right, q_b, q_s = params
        x = model.problem.dof_coordinates
        model.g.x.array[:] = np.where(x[:, 0] < 1.0, t_left, t_right)
        model.q_bottom.value = q_b
        model.q_slot.value = q_s
