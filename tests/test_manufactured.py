"""P1 Poisson and Darcy assembly converge at second order in L2 (manufactured solutions)."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsolve import solve
from hybridsolve.stack import MPI

fem = pytest.importorskip("hybridsolve.problems.fem")
import dolfinx  # noqa: E402
import ufl  # noqa: E402


def _error(n: int, kind: str, comm) -> float:
    mesh = fem.unit_square(comm, n)
    x = ufl.SpatialCoordinate(mesh)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u_ex = ufl.exp(x[0]) * ufl.sin(np.pi * x[1]) + x[0] * x[1]  # nonzero boundary data
    kappa = 1.0 if kind == "poisson" else ufl.exp(0.5 * ufl.sin(2 * np.pi * x[0]) * ufl.cos(np.pi * x[1]))
    f = -ufl.div(kappa * ufl.grad(u_ex))
    g = dolfinx.fem.Function(V)
    g.interpolate(lambda p: np.exp(p[0]) * np.sin(np.pi * p[1]) + p[0] * p[1])
    prob = fem.P1Problem(mesh, V=V, kappa=None if kind == "poisson" else kappa, source=f, g=g)
    A, b = prob.assemble()
    res = solve(A, b, options={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12})
    assert res.converged
    err = prob.error_L2(res.x, u_ex)
    for o in (A, b, res.x):
        o.destroy()
    return err


@pytest.mark.parametrize("kind", ["poisson", "darcy"])
def test_p1_second_order_in_L2(kind, comm):
    errs = [_error(n, kind, comm) for n in (8, 16, 32)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(rates > 1.85), f"L2 errors {errs}, rates {rates}"
    assert errs[-1] < 5e-3
