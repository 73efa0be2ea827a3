"""GCRO-DR and recycling CG (PETSc python KSPs), and the orderings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import assert_all, relative
from hybridsolve import KrylovSolver, get_family
from hybridsolve.errors import InputError
from hybridsolve.la.petsc import mat_from_local_csr, ownership_range, vec_from_local
from hybridsolve.recycling import sorting
from hybridsolve.stack import MPI, PETSc

GCRODR = {"ksp_type": "python", "ksp_python_type": "hybridsolve.recycling.petsc.GCRODR"}
RCG = {"ksp_type": "python", "ksp_python_type": "hybridsolve.recycling.petsc.RecyclingCG"}


def convection_diffusion(comm, m=24, c=20.0, shift=0.0):
    """-Laplace(u) + c du/dx - shift u on an m x m grid (central differences): nonsymmetric."""
    h = 1.0 / (m + 1)
    I = sp.identity(m)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)) / h**2
    Dx = sp.diags([-1.0, 0.0, 1.0], [-1, 0, 1], shape=(m, m)) / (2 * h)
    A = (sp.kron(T, I) + sp.kron(I, T) + c * sp.kron(Dx, I) - shift * sp.identity(m * m)).tocsr()
    n = A.shape[0]
    r0, r1 = ownership_range(comm, n)
    b = np.sin(np.arange(n) * 0.37) + 1.0
    return mat_from_local_csr(comm, n, A[r0:r1]), vec_from_local(comm, n, b[r0:r1]), A, b


@pytest.mark.parametrize("shift", [0.0, 100.0])  # nonsymmetric; nonsymmetric and indefinite
@pytest.mark.parametrize("pc", ["none", "jacobi", "bjacobi"])
def test_gcrodr_solves_nonsymmetric_and_indefinite_to_true_tolerance(shift, pc, comm):
    A, b, As, bs = convection_diffusion(comm, shift=shift)
    solver = KrylovSolver(comm, options={**GCRODR, "pc_type": pc, "ksp_gcrodr_m": 30,
                                         "ksp_gcrodr_k": 10}, rtol=1e-9, max_it=5000, prefix="g_")
    res = solver.solve(A, b)
    assert_all(comm, res.converged and res.true_residual <= 1.01e-9, res.summary())
    assert res.residual_norm == "unpreconditioned" and res.method.startswith("gcrodr")
    assert len(res.residual_history) == res.iterations + 1
    x = np.concatenate(comm.allgather(res.x.getArray()))
    assert relative(As @ x, bs) <= 1.01e-9
    solver.destroy()


def test_gcrodr_indefinite_helmholtz_family(comm):
    fam = get_family("helmholtz", 24, count=3, seed=1)
    solver = KrylovSolver(comm, method="gcrodr", rtol=1e-8, max_it=5000, prefix="h_")
    for i in range(3):
        s = fam.system(i, comm)
        r = solver.solve(s.A, s.b)
        assert_all(comm, r.converged and r.true_residual <= 1.01e-8, r.summary())
        s.destroy()
    solver.destroy()


def _sequence_iterations(comm, options, family="darcy", n=40, count=5, prefix="s_", **kw):
    fam = get_family(family, n, count=count, seed=3, **kw)
    solver = KrylovSolver(comm, options=options, rtol=1e-8, max_it=20000, prefix=prefix)
    its, xs = [], []
    for i in range(count):
        s = fam.system(i, comm)
        r = solver.solve(s.A, s.b)
        assert_all(comm, r.converged and r.true_residual <= 1.01e-8, r.summary())
        its.append(r.iterations)
        xs.append(s.gather(r.x))
        s.destroy()
    ctx = solver.ksp.getPythonContext() if solver.ksp.getType() == "python" else None
    stats = dict(ctx.stats) if ctx else {}
    solver.destroy()
    return its, xs, stats


def test_gcrodr_recycling_cuts_iterations_on_a_sequence(comm):
    rec, _, stats = _sequence_iterations(comm, {**GCRODR, "pc_type": "none"},
                                         discretization="grid")
    ref, _, _ = _sequence_iterations(comm, {"ksp_type": "gmres", "ksp_gmres_restart": 40,
                                            "pc_type": "none", "ksp_pc_side": "right"},
                                     discretization="grid", prefix="ref_")
    assert stats["recycled_solves"] == len(rec) - 1
    assert sum(rec[1:]) < 0.6 * sum(ref[1:]), (rec, ref)
    assert np.mean(rec[1:]) < rec[0], rec  # the carried space helps the later systems


def test_recycling_cg_cuts_iterations_on_a_sequence(comm):
    rec, _, stats = _sequence_iterations(comm, {**RCG, "pc_type": "jacobi", "ksp_rcg_k": 12},
                                         discretization="grid", prefix="rcg_")
    ref, _, _ = _sequence_iterations(comm, {"ksp_type": "cg", "pc_type": "jacobi",
                                            "ksp_norm_type": "unpreconditioned"},
                                     discretization="grid", prefix="cg_")
    assert rec[0] == pytest.approx(ref[0], abs=1)       # nothing to recycle yet
    assert sum(rec[1:]) < 0.85 * sum(ref[1:]), (rec, ref)


def test_same_solutions_on_one_and_two_ranks(comm):
    opts = {**GCRODR, "pc_type": "jacobi"}
    _, xw, _ = _sequence_iterations(comm, opts, n=24, count=3, prefix="w_")
    _, xs, _ = _sequence_iterations(MPI.COMM_SELF, opts, n=24, count=3, prefix="w1_")
    for a, b in zip(xw, xs):
        assert_all(comm, relative(a, b) < 1e-6, "solutions differ between 1 and P ranks")


@pytest.mark.parametrize("m,k,match", [(10, 10, "k=10"), (1, 1, "m=1"), (10, 0, "k=0")])
def test_bad_gcrodr_parameters(m, k, match, comm):
    A, b, _, _ = convection_diffusion(comm, m=8)
    solver = KrylovSolver(comm, options={**GCRODR, "ksp_gcrodr_m": m, "ksp_gcrodr_k": k}, prefix="bad_")
    with pytest.raises(InputError, match=match):
        solver.solve(A, b)
    solver.destroy()


def test_size_change_inside_a_sequence_is_refused(comm):
    solver = KrylovSolver(comm, options={**GCRODR, "pc_type": "none"}, rtol=1e-8, prefix="sz_")
    A, b, _, _ = convection_diffusion(comm, m=10)
    solver.solve(A, b)
    A2, b2, _, _ = convection_diffusion(comm, m=12)
    with pytest.raises(InputError, match="size changed"):
        solver.solve(A2, b2)
    solver.destroy()


def test_gcrodr_from_options_in_a_dolfinx_linear_problem(comm):
    dolfinx = pytest.importorskip("dolfinx")
    import dolfinx.fem.petsc
    import ufl

    mesh = dolfinx.mesh.create_unit_square(comm, 16, 16)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    a = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + 5.0 * u.dx(0) * v * ufl.dx
    L = ufl.sin(3 * x[0]) * v * ufl.dx
    mesh.topology.create_connectivity(1, 2)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)
    problem = dolfinx.fem.petsc.LinearProblem(
        a, L, bcs=[bc], petsc_options_prefix="lp_gcrodr_",
        petsc_options={"ksp_type": "python",
                       "ksp_python_type": "hybridsolve.recycling.petsc.GCRODR",
                       "ksp_gcrodr_m": 30, "ksp_gcrodr_k": 8, "pc_type": "jacobi",
                       "ksp_rtol": 1e-10})
    problem.solve()
    ksp = problem.solver
    assert ksp.getConvergedReason() > 0
    ctx = ksp.getPythonContext()
    assert (ctx.m, ctx.k) == (30, 8)


def test_orderings(comm):
    P = get_family("darcy", 16, count=60, seed=0).all_params()
    base = sorting.chain_length(P, np.arange(60))
    for method in ("greedy", "scalable", "auto"):
        perm = sorting.order(P, method)
        assert sorted(perm.tolist()) == list(range(60))
        assert sorting.chain_length(P, perm) < base
    assert sorted(sorting.order(P, "random", seed=1).tolist()) == list(range(60))
    with pytest.raises(InputError, match="unknown ordering"):
        sorting.order(P, "sideways")
    bad = P.copy()
    bad[3, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        sorting.order(bad, "greedy")
