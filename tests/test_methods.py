"""PCG, SOR and SSOR-PCG on assembled and matrix-free operators, serial and on 2 ranks."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_all, relative
from hybridsolve import KrylovSolver, get_family, solve
from hybridsolve.errors import InputError, NotSPDError
from hybridsolve.operators.petsc import create_stencil_mat
from hybridsolve.problems.grid import face_coefficients
from hybridsolve.stack import MPI, PETSc

ST = PETSc.Mat.SORType


def _grid_pair(comm, shape, seed=0, masked=True, shift=0.0):
    rng = np.random.default_rng(seed)
    coef = np.exp(rng.standard_normal(tuple(s + 2 for s in shape)))
    mask = rng.random(shape) > 0.15 if masked else None
    faces = face_coefficients(shape, coef=coef, mask=mask)
    A = create_stencil_mat(comm, shape, faces, shift=shift)
    return A, A.getPythonContext().assembled()


def _random_vec(A, seed):
    v = A.createVecRight()
    r0, r1 = v.getOwnershipRange()
    v.getArray()[:] = np.random.default_rng(seed).standard_normal(v.getSize())[r0:r1]
    return v


@pytest.mark.parametrize("shape", [(9, 7), (6, 5, 4), (11, 13)])
def test_matrix_free_mult_equals_assembled(shape, comm):
    A, B = _grid_pair(comm, shape, seed=sum(shape), shift=0.3)
    x = _random_vec(A, 1)
    y1, y2 = A.createVecLeft(), B.createVecLeft()
    A.mult(x, y1)
    B.mult(x, y2)
    y1.axpy(-1.0, y2)
    assert_all(comm, y1.norm() <= 1e-12 * y2.norm(), "mult differs")
    d1, d2 = A.getDiagonal(), B.getDiagonal()
    d1.axpy(-1.0, d2)
    assert_all(comm, d1.norm() <= 1e-13 * d2.norm(), "diagonal differs")
    for o in (A, B, x, y1, y2, d1, d2):
        o.destroy()


@pytest.mark.parametrize("shape", [(9, 7), (6, 5, 4)])
@pytest.mark.parametrize("sortype,its", [
    (ST.LOCAL_SYMMETRIC_SWEEP | ST.ZERO_INITIAL_GUESS, 1),
    (ST.LOCAL_FORWARD_SWEEP, 1),
    (ST.LOCAL_BACKWARD_SWEEP, 2),
    (ST.LOCAL_SYMMETRIC_SWEEP | ST.ZERO_INITIAL_GUESS, 3),
])
def test_matrix_free_sor_equals_petsc_matsor(shape, sortype, its, comm):
    """Our kernels' SOR is PETSc's MatSOR on the assembled matrix (same layout), 1 and 2 ranks."""
    A, B = _grid_pair(comm, shape, seed=3)
    b = _random_vec(A, 2)
    x1, x2 = _random_vec(A, 3), _random_vec(A, 3)
    A.SOR(b, x1, omega=1.3, sortype=sortype, shift=0.1, its=its, lits=1)
    B.SOR(b, x2, omega=1.3, sortype=sortype, shift=0.1, its=its, lits=1)
    err = relative(x1.getArray(), x2.getArray())
    assert_all(comm, err <= 1e-12, f"SOR differs by {err:.2e}")
    for o in (A, B, b, x1, x2):
        o.destroy()


def test_global_sor_in_parallel_is_refused(comm):
    A, B = _grid_pair(comm, (8, 8))
    b, x = _random_vec(A, 0), A.createVecRight()
    if comm.size > 1:
        with pytest.raises(Exception):
            A.SOR(b, x, sortype=ST.SYMMETRY_SWEEP)
    else:
        A.SOR(b, x, sortype=ST.SYMMETRY_SWEEP)  # serial: global == local
    for o in (A, B, b, x):
        o.destroy()


CASES = [("darcy", {"discretization": "grid"}, 24), ("grid", {"dim": 3, "obstacles": 1}, 10),
         ("grid", {"obstacles": 2}, 24)]


@pytest.mark.parametrize("name,opts,n", CASES)
@pytest.mark.parametrize("operator", ["aij", "matfree"])
@pytest.mark.parametrize("method,kw", [
    ("pcg", {"options": {"pc_type": "jacobi"}}),
    ("ssor-pcg", {"omega": 1.5}),
    ("sor", {"omega": 1.7, "sor_type": "symmetric"}),
    ("sor", {"omega": 1.5}),
])
def test_methods_converge_to_true_residual(name, opts, n, operator, method, kw, comm):
    fam = get_family(name, n, count=1, seed=2, operator=operator, **opts)
    s = fam.system(0, comm)
    res = solve(s, method=method, rtol=1e-8, max_it=20000, **kw)
    assert_all(comm, res.converged and res.true_residual <= 1.01e-8,
               f"{method} on {name}/{operator}: {res.summary()}")
    assert res.residual_norm == "unpreconditioned"
    assert len(res.residual_history) == res.iterations + 1
    A, b = s.to_scipy()
    x = s.gather(res.x)
    assert relative(A @ x, b) <= 1.01e-8
    res.x.destroy()
    s.destroy()


@pytest.mark.parametrize("method", ["ssor-pcg", "sor"])
def test_same_iterations_assembled_and_matrix_free(method, comm):
    its = {}
    for operator in ("aij", "matfree"):
        s = get_family("grid", 20, count=1, seed=1, obstacles=2, operator=operator).system(0, comm)
        r = solve(s, method=method, omega=1.6, rtol=1e-8, max_it=5000)
        its[operator] = r.iterations
        r.x.destroy()
        s.destroy()
    if comm.size == 1:  # in parallel the AIJ rows split differently from the matrix-free slabs
        assert abs(its["aij"] - its["matfree"]) <= 1, its


def test_red_black_ordering_by_option(comm):
    s = get_family("grid", 24, count=1, seed=1, operator="matfree").system(0, comm)
    opts = PETSc.Options()
    opts["mat_stencil_sor_ordering"] = "redblack"
    try:
        s.A.setFromOptions()
        assert s.A.getPythonContext().ordering == "redblack"
        r = solve(s, method="sor", omega=1.7, rtol=1e-8, max_it=5000)
        assert r.converged and r.true_residual <= 1.01e-8
        r.x.destroy()
    finally:
        opts.delValue("mat_stencil_sor_ordering")
    s.destroy()


@pytest.mark.parametrize("omega", [0.0, 2.0, 2.5, -1.0])
def test_omega_outside_0_2_is_a_clear_error(omega, comm):
    s = get_family("grid", 8, count=1).system(0, comm)
    with pytest.raises(InputError, match="outside"):
        solve(s, method="sor", omega=omega)
    opts = PETSc.Options()
    opts["om_pc_sor_omega"] = str(omega)
    try:
        with pytest.raises(InputError, match="outside"):
            solve(s, method="ssor-pcg", prefix="om_")
    finally:
        opts.delValue("om_pc_sor_omega")
    s.destroy()


def test_bad_method_names():
    with pytest.raises(InputError, match="unknown method"):
        KrylovSolver(MPI.COMM_WORLD, method="sorr")
    with pytest.raises(InputError, match="symmetric"):
        KrylovSolver(MPI.COMM_WORLD, method="ssor-pcg", sor_type="forward")


def test_pcg_refuses_nonsymmetric_and_indefinite_matrices(comm):
    s = get_family("grid", 10, count=1).system(0, comm)
    N = s.A.duplicate(copy=True)
    r0, r1 = N.getOwnershipRange()
    N.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, False)
    if r0 <= 5 < r1:
        N.setValue(5, 6, 123.0, addv=PETSc.InsertMode.ADD_VALUES)  # break the symmetry
    N.assemble()
    with pytest.raises(NotSPDError, match="not symmetric"):
        solve(N, s.b, method="pcg", options={"pc_type": "jacobi"})
    H = get_family("helmholtz", 16, count=1).system(0, comm)
    with pytest.raises(NotSPDError, match="not symmetric positive definite"):
        solve(H, method="pcg", options={"pc_type": "none"})
    N.destroy()
    H.destroy()
    s.destroy()


def test_nan_rhs_and_mismatched_sizes(comm):
    s = get_family("grid", 8, count=1, operator="matfree").system(0, comm)
    bad = s.b.copy()
    r0, r1 = bad.getOwnershipRange()
    if r0 <= 3 < r1:
        bad.setValue(3, np.nan)
    bad.assemble()
    with pytest.raises(InputError, match="NaN"):
        solve(s.A, bad, method="ssor-pcg")
    wrong = PETSc.Vec().createMPI(s.size + 1, comm=comm)
    with pytest.raises(InputError, match="size"):
        solve(s.A, wrong, method="sor")
    bad.destroy()
    wrong.destroy()
    s.destroy()


def test_parallel_sor_is_block_jacobi(comm):
    """On P ranks PETSc's SOR is local: SSOR-PCG iterations do not drop, and usually grow."""
    fam = get_family("grid", 32, count=1, seed=0)
    sw, ss = fam.system(0, comm), fam.system(0, MPI.COMM_SELF)
    rw = solve(sw, method="ssor-pcg", omega=1.5, rtol=1e-8)
    rs = solve(ss, method="ssor-pcg", omega=1.5, rtol=1e-8)
    if comm.size > 1:
        assert rw.iterations > rs.iterations
    else:
        assert rw.iterations == rs.iterations
    assert relative(sw.gather(rw.x), ss.gather(rs.x)) < 1e-6
    for o in (rw.x, rs.x):
        o.destroy()
    sw.destroy()
    ss.destroy()
