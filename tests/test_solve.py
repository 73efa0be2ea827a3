"""The solve() front door: options and prefixes, the result type, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_all, relative
from hybridsolve import KrylovSolver, get_family, solve
from hybridsolve.errors import InputError, SolverError
from hybridsolve.options import parse_args, unused_options
from hybridsolve.solvers.petsc import true_residual
from hybridsolve.stack import MPI, PETSc


@pytest.fixture
def system(comm):
    s = get_family("darcy", 16, count=2, seed=1, discretization="grid").system(0, comm)
    yield s
    s.destroy()


def test_result_fields_and_norms(system):
    res = solve(system.A, system.b, options={"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-9})
    assert res.converged and res.reason > 0 and res.reason_name == "CONVERGED_RTOL"
    assert res.method == "cg+jacobi"
    assert res.residual_norm == "preconditioned"
    h = res.residual_history
    assert len(h) == res.iterations + 1
    assert h[-1] <= 1e-9 * h[0]
    assert res.true_residual == pytest.approx(true_residual(system.A, system.b, res.x), rel=1e-12)
    assert res.true_residual < 1e-6
    assert res.time > 0
    json.dumps(res.to_dict())
    res2 = solve(system.A, system.b, options={"ksp_type": "cg", "ksp_norm_type": "unpreconditioned",
                                              "pc_type": "jacobi", "ksp_rtol": 1e-9})
    assert res2.residual_norm == "unpreconditioned"
    assert res2.true_residual <= 1.001e-9  # unpreconditioned, x0 = 0: the test is on ||b - Ax|| / ||b||


def test_linear_system_defaults_and_solution(system, comm):
    res = solve(system, rtol=1e-10)
    assert res.method == "cg+gamg"  # the family's recommendation for SPD systems
    x = system.gather(res.x)
    A, b = system.to_scipy()
    assert relative(A @ x, b) < 1e-8


def test_command_line_wins_and_code_defaults_do_not_leak(system):
    opts = PETSc.Options()
    opts["cl_ksp_type"] = "gmres"
    try:
        res = solve(system.A, system.b, prefix="cl_", options={"ksp_type": "cg", "pc_type": "jacobi"})
        assert res.method == "gmres+jacobi"
    finally:
        opts.delValue("cl_ksp_type")
    assert not opts.hasName("cl_pc_type")  # a default set by code is removed after use


def test_not_converged_is_reported_or_raised(system):
    res = solve(system.A, system.b, options={"ksp_type": "cg", "pc_type": "none"}, max_it=3)
    assert not res.converged and res.reason_name == "DIVERGED_MAX_IT" and res.iterations == 3
    with pytest.raises(SolverError, match="DIVERGED_MAX_IT"):
        solve(system.A, system.b, options={"ksp_type": "cg", "pc_type": "none"}, max_it=3,
              error_if_not_converged=True)


def test_initial_guess_is_used_and_not_modified(system):
    exact = solve(system.A, system.b, rtol=1e-12, options={"ksp_type": "cg", "pc_type": "jacobi"})
    x0 = exact.x.copy()
    before = x0.getArray().copy()
    res = solve(system.A, system.b, x0, rtol=1e-8, options={"ksp_type": "cg", "pc_type": "jacobi"})
    assert res.iterations <= 1
    np.testing.assert_array_equal(x0.getArray(), before)


def test_size_mismatch_is_a_clear_error(system, comm):
    wrong = PETSc.Vec().createMPI(system.size + 3, comm=comm)
    with pytest.raises(InputError, match="right-hand side has size"):
        solve(system.A, wrong)
    with pytest.raises(InputError, match="initial guess has size"):
        solve(system.A, system.b, wrong)
    wrong.destroy()
    with pytest.raises(InputError, match="prefix"):
        solve(system.A, system.b, prefix="-bad")
    with pytest.raises(InputError, match="non-negative"):
        solve(system.A, system.b, rtol=float("nan"))


def test_reusable_solver_over_a_sequence(comm):
    fam = get_family("poisson", 10, count=3, seed=2)
    solver = KrylovSolver(comm, prefix="seq_", options={"ksp_type": "cg", "pc_type": "gamg"}, rtol=1e-9)
    its = []
    for i in range(3):
        s = fam.system(i, comm)
        r = solver.solve(s.A, s.b)
        assert r.converged and r.true_residual < 1e-6
        its.append(r.iterations)
        r.x.destroy()
        s.destroy()
    assert solver.ksp.getOptionsPrefix() == "seq_"
    solver.destroy()


def test_same_iterates_on_any_number_of_ranks(comm):
    """CG+Jacobi is rank-independent up to round-off: same iterations, same solution."""
    fam = get_family("darcy", 12, count=1, seed=4)
    opts = {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-10}
    sw, ss = fam.system(0, comm), fam.system(0, MPI.COMM_SELF)
    rw, rs = solve(sw, options=opts), solve(ss, options=opts)
    assert_all(comm, abs(rw.iterations - rs.iterations) <= 1, "iteration counts differ")
    assert_all(comm, relative(sw.gather(rw.x), ss.gather(rs.x)) < 1e-8, "solutions differ")
    for o in (rw.x, rs.x):
        o.destroy()
    sw.destroy()
    ss.destroy()


def test_unused_option_is_reported(system):
    opts = PETSc.Options()
    opts["uo_ksp_typo"] = "cg"
    try:
        solve(system.A, system.b, prefix="uo_", options={"ksp_type": "cg"})
        assert "-uo_ksp_typo" in unused_options()
    finally:
        opts.delValue("uo_ksp_typo")


def test_parse_petsc_args():
    assert parse_args(["-ksp_rtol", "1e-8", "-ksp_monitor", "-x", "-1", "-y", "-.5e-3"]) == [
        ("ksp_rtol", "1e-8"), ("ksp_monitor", None), ("x", "-1"), ("y", "-.5e-3")]
    with pytest.raises(InputError, match="unexpected argument"):
        parse_args(["stray"])
