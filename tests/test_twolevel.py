"""The two-level PC (hybridsolve.solvers.twolevel) and values-only assembly along a sequence."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_all
from hybridsolve.errors import InputError
from hybridsolve.problems import get_family
from hybridsolve.stack import PETSc

TWO_LEVEL = {"pc_type": "python", "pc_python_type": "hybridsolve.solvers.twolevel.TwoLevelPC"}


def _ksp(comm, prefix, opts):
    db = PETSc.Options()
    for k, v in {"ksp_type": "cg", "ksp_norm_type": "unpreconditioned", "ksp_rtol": 1e-10,
                 "ksp_max_it": 2000, **opts}.items():
        db[prefix + k] = v
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix(prefix)
    ksp.setFromOptions()
    return ksp


def _clear(prefix):
    db = PETSc.Options()
    for k in list(db.getAll()):
        if k.startswith(prefix):
            db.delValue(k)


def _true(A, b, x):
    r = b.duplicate()
    A.mult(x, r)
    r.aypx(-1.0, b)
    return r.norm() / b.norm()


@pytest.mark.parametrize("discretization", ["grid", "fem"])
def test_one_space_along_a_sequence_refreshed_numerically(discretization, comm):
    """One Mat object refilled with each system's values (values-only assembly); the PC builds
    its coarse space once, refreshes E = W^T A W for each operator (checked against a fresh
    PtAP), converges to the true tolerance, and in far fewer iterations than ICC alone."""
    fam = get_family("darcy", 24, count=4, seed=11, discretization=discretization)
    prefix = f"tl_seq_{discretization}_"
    ksp = _ksp(comm, prefix, TWO_LEVEL)
    ref = _ksp(comm, prefix + "ref_", {"pc_type": "icc" if comm.size == 1 else "bjacobi"})
    A = None
    its, ref_its = [], []
    try:
        for i in range(4):
            s = fam.system_from_params(fam.params(i), comm, index=i, into=A)
            assert_all(comm, A is None or s.A is A, "values-only refill expected")
            A = s.A
            ksp.setFromOptions()           # a driver's habit: the space must survive it
            ksp.setOperators(A)
            x = s.b.duplicate()
            ksp.solve(s.b, x)
            assert ksp.getConvergedReason() > 0
            assert _true(A, s.b, x) <= 1.01e-10
            its.append(ksp.getIterationNumber())
            ctx = ksp.getPC().getPythonContext()
            E = A.ptap(ctx.W)
            E.axpy(-1.0, ctx.E)
            assert E.norm() <= 1e-12 * ctx.E.norm()   # the coarse operator is this A's
            ref.setOperators(A)
            y = s.b.duplicate()
            ref.solve(s.b, y)
            ref_its.append(ref.getIterationNumber())
            x.axpy(-1.0, y)
            assert x.norm() <= 1e-7 * y.norm()
        stats = ksp.getPC().getPythonContext().stats
        assert stats["builds"] == 1 and stats["refreshes"] == 3, stats
        assert max(its) < 0.75 * min(ref_its), (its, ref_its)
    finally:
        _clear(prefix)
        ksp.destroy()
        ref.destroy()


def test_a_new_pattern_builds_a_new_space_and_view_shows_it(comm):
    """Obstacles change the pattern from one system to the next (solid cells are identity rows,
    in no aggregate): a new space each time, still converged."""
    prefix = "tl_pattern_"
    ksp = _ksp(comm, prefix, TWO_LEVEL)
    fam = get_family("grid", 20, count=2, seed=2, obstacles=4)
    try:
        for i in range(2):
            s = fam.system(i, comm)
            ksp.setOperators(s.A)
            x = s.b.duplicate()
            ksp.solve(s.b, x)
            assert ksp.getConvergedReason() > 0 and _true(s.A, s.b, x) <= 1.01e-10
        ctx = ksp.getPC().getPythonContext()
        assert ctx.stats["builds"] == 2 and "refreshes" not in ctx.stats
        assert "coarse size" in ctx.describe() and "radius 3" in ctx.describe()
    finally:
        _clear(prefix)
        ksp.destroy()


def test_not_spd_and_bad_options_are_clear_errors(comm):
    from hybridsolve.la.petsc import mat_from_local_csr, ownership_range
    from hybridsolve.solvers.petsc import KrylovSolver
    import scipy.sparse as sp

    n = 30
    M = sp.diags([-1.0, -2.0, -1.0], [-1, 0, 1], shape=(n, n)).tocsr()   # negative diagonal
    r0, r1 = ownership_range(comm, n)
    A = mat_from_local_csr(comm, n, M[r0:r1])
    b = A.createVecLeft()
    b.set(1.0)
    solver = KrylovSolver(comm, prefix="tl_bad_", options={"ksp_type": "cg", **TWO_LEVEL})
    with pytest.raises(InputError, match="two-level.*SPD.*diagonal is not positive"):
        solver.solve(A, b)
    solver = KrylovSolver(comm, prefix="tl_badopt_", options={"ksp_type": "cg", **TWO_LEVEL,
                                                              "pc_twolevel_radius": 0})
    with pytest.raises(InputError, match="radius >= 1"):
        solver.solve(A, b)


@pytest.mark.parametrize("family,opts", [("darcy", {"discretization": "grid"}),
                                         ("darcy", {"discretization": "fem"}),
                                         ("grid", {})])
def test_values_only_assembly_gives_the_same_matrix(family, opts, comm):
    fam = get_family(family, 12, count=3, seed=5, **opts)
    first = fam.system(0, comm)
    A = first.A
    for i in (1, 2):
        fresh = fam.system(i, comm)
        s = fam.system_from_params(fam.params(i), comm, index=i, into=A)
        assert_all(comm, s.A is A, "the matrix was not refilled")
        D = fresh.A.copy()
        D.axpy(-1.0, A)
        assert D.norm() <= 1e-14 * fresh.A.norm()
        fresh.b.axpy(-1.0, s.b)
        assert fresh.b.norm() == 0.0


def test_a_changed_pattern_is_not_refilled(comm):
    fam = get_family("grid", 10, count=2, seed=1, obstacles=3)   # obstacles change the pattern
    a = fam.system(0, comm)
    b = fam.system_from_params(fam.params(1), comm, index=1, into=a.A)
    assert b.A is not a.A
    D = fam.system(1, comm).A
    D.axpy(-1.0, b.A)
    assert D.norm() == 0.0


def test_precomputed_p1_assembly_is_dolfinx_assembly(comm):
    """The Darcy P1 fast path equals DOLFINx's assembly (1 and 2 ranks: off-process cell
    contributions), and the check used before trusting it sees a wrong coefficient."""
    from hybridsolve.problems.fem import P1DiffusionMatrix

    fam = get_family("darcy", 16, count=2, seed=4)
    model = fam.model(comm)
    fam.set_coefficients(model, fam.params(1))
    fast = P1DiffusionMatrix(model.problem)
    kappa = model.kappa.x.array
    assert fast.check(model.problem, kappa) <= 1e-13
    assert fast.check(model.problem, kappa * 1.01) > 1e-3
    s = fam.system(1, comm)
    assert s.A.getDict().get("hybridsolve.p1diffusion") is not None   # the family uses it


def test_additive_form_converges_and_says_so(comm):
    fam = get_family("darcy", 20, count=1, seed=6, discretization="grid")
    s = fam.system(0, comm)
    prefix = "tl_add_"
    ksp = _ksp(comm, prefix, {**TWO_LEVEL, "pc_twolevel_type": "additive"})
    try:
        ksp.setOperators(s.A)
        x = s.b.duplicate()
        ksp.solve(s.b, x)
        assert ksp.getConvergedReason() > 0 and _true(s.A, s.b, x) <= 1.01e-10
        assert "two-level (additive)" in ksp.getPC().getPythonContext().describe()
    finally:
        _clear(prefix)
        ksp.destroy()
