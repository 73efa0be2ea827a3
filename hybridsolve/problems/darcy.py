"""Darcy flow with a log-normal random coefficient (the FNO/SKR benchmark family)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hybridsolve.errors import InputError
from hybridsolve.problems.base import (MATFREE_DEFAULTS, OPERATOR_OPTION, FamilyOption,
                                       LinearSystem, register)
from hybridsolve.problems.fem_family import FEMFamily
from hybridsolve.problems.fields import gaussian_random_field


@register
class Darcy(FEMFamily):
    """``-div(a grad u) = f`` on the unit square, ``u = 0`` on the boundary, ``a = exp(GRF)``.

    The coefficient is a sample of ``exp(GRF(alpha, tau))`` on the ``(n + 1)^2`` grid nodes (the
    parameter array). ``discretization=fem``: P1 on an ``n x n`` triangle mesh, ``(n + 1)^2`` dofs
    (boundary dofs carry identity rows). ``discretization=grid``: the symmetric 5-point stencil
    on the ``(n - 1)^2`` interior nodes with face coefficients the mean of the two nodes.
    """

    name = "darcy"
    summary = "-div(a grad u) = f, a = exp(GRF(alpha, tau)), u = 0; P1 FEM or 5-point grid"
    size_doc = "cells per side: (n+1)^2 P1 dofs (fem) or (n-1)^2 grid unknowns (grid)"
    min_n = 2
    options = {
        "discretization": FamilyOption("fem", str, "fem (P1 on DOLFINx) or grid (5-point)", ("fem", "grid")),
        "alpha": FamilyOption(2.5, float, "GRF smoothness exponent"),
        "tau": FamilyOption(7.0, float, "GRF inverse length scale"),
        "source": FamilyOption(1.0, float, "constant source f"),
        "operator": OPERATOR_OPTION,
    }

    def validate_options(self) -> None:
        if self.opts["alpha"] <= 1.0 or self.opts["tau"] <= 0:
            raise InputError("darcy: need alpha > 1 and tau > 0")
        if self.opts["discretization"] == "grid" and self.n < 3:
            raise InputError("darcy: the grid discretization needs n >= 3")
        if self.opts["operator"] == "matfree" and self.opts["discretization"] != "grid":
            raise InputError("darcy: operator=matfree needs discretization=grid")

    def param_shape(self):
        return (self.n + 1, self.n + 1)

    def sample_params(self, rng, index):
        return np.exp(gaussian_random_field(rng, self.n + 1, self.opts["alpha"], self.opts["tau"]))

    def check_params(self, params):
        params = super().check_params(params)
        if np.any(params <= 0):
            raise InputError("darcy: the coefficient a must be positive everywhere")
        return params

    def build(self, params, comm, index, previous=None, into=None) -> LinearSystem:
        if self.opts["discretization"] == "fem":
            model = self.model(comm)
            self.set_coefficients(model, params)
            fast = self._fast(model)
            if fast is None:
                return super().build(params, comm, index, previous, into)
            A = fast.assemble(model.kappa.x.array, into)
            return LinearSystem(A=A, b=model.problem.assemble_rhs(), params=params,
                                meta={"discretization": "P1 FEM"},
                                canonical=model.problem.canonical,
                                local_coordinates=model.problem.local_coordinates,
                                extra={"problem": model.problem})
        from hybridsolve.problems.petsc import grid_system

        shape = (self.n - 1, self.n - 1)
        rhs = np.full(shape, self.opts["source"])
        matfree = self.opts["operator"] == "matfree"
        A, b, canon, coords = grid_system(comm, shape, rhs, coef=params, matfree=matfree,
                                          into=into)
        return LinearSystem(A=A, b=b, params=params, meta={"discretization": "5-point grid",
                                                           "operator": self.opts["operator"]},
                            canonical=canon, local_coordinates=coords,
                            default_options=dict(MATFREE_DEFAULTS) if matfree else {})

    def _fast(self, model):
        """The precomputed P1 assembly (:class:`~hybridsolve.problems.fem.P1DiffusionMatrix`),
        checked once against DOLFINx's own with the current kappa; None where they differ."""
        fast = getattr(model, "fast", None)
        if fast is None:
            from hybridsolve.problems.fem import P1DiffusionMatrix

            fast = P1DiffusionMatrix(model.problem)
            diff = fast.check(model.problem, model.kappa.x.array)
            if not diff <= 1e-12:
                import logging

                logging.getLogger(__name__).warning(
                    "darcy: the precomputed P1 assembly differs from DOLFINx's by %.2e; "
                    "assembling with DOLFINx", diff)
                fast = False
            model.fast = fast
        return fast or None

    def make_model(self, comm):
        from hybridsolve.problems import fem

        import dolfinx

        mesh = fem.unit_square(comm, self.n)
        V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        kappa = dolfinx.fem.Function(V)
        f = dolfinx.fem.Constant(mesh, float(self.opts["source"]))
        problem = fem.P1Problem(mesh, V=V, kappa=kappa, source=f)
        # kappa lives in its own P1 space on the same mesh: same dof layout as problem.V
        return SimpleNamespace(problem=problem, kappa=kappa)

    def set_coefficients(self, model, params):
        # bilinear interpolation of the node grid at the dofs, as one sparse matrix built once
        # per model (the same numbers as scipy's RegularGridInterpolator, without its set-up)
        interp = getattr(model, "interp", None)
        if interp is None:
            interp = model.interp = bilinear_matrix(
                model.kappa.function_space.tabulate_dof_coordinates()[:, :2], self.n)
        model.kappa.x.array[:] = interp @ np.asarray(params, dtype=float).reshape(-1)


def bilinear_matrix(points: np.ndarray, n: int):
    """The sparse matrix that interpolates values on the ``(n + 1)^2`` nodes of the unit square
    (C order, axis 0 along x) bilinearly at ``points`` (clipped to the square)."""
    import scipy.sparse as sp

    p = np.clip(np.asarray(points, dtype=float), 0.0, 1.0) * n
    i = np.minimum(np.floor(p[:, 0]).astype(np.int64), n - 1)
    j = np.minimum(np.floor(p[:, 1]).astype(np.int64), n - 1)
    fx, fy = p[:, 0] - i, p[:, 1] - j
    rows = np.repeat(np.arange(len(p)), 4)
    cols = np.stack([i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j,
                     (i + 1) * (n + 1) + j + 1], axis=1).reshape(-1)
    vals = np.stack([(1 - fx) * (1 - fy), (1 - fx) * fy, fx * (1 - fy), fx * fy], axis=1).reshape(-1)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(p), (n + 1) ** 2))
