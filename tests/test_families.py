"""Every problem family: sizes, symmetry/definiteness, reproducibility, rank independence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from conftest import assert_all, relative
from hybridsolve import get_family, solve
from hybridsolve.errors import InputError
from hybridsolve.stack import MPI

# (family, options, n, expected size or None when the mesh generator decides)
CASES = [
    ("darcy", {}, 12, 13 * 13),
    ("darcy", {"discretization": "grid"}, 12, 11 * 11),
    ("poisson", {}, 12, 13 * 13),
    ("poisson", {"domain": "lshape_hole"}, 8, None),
    ("thermal", {}, 6, None),
    ("helmholtz", {}, 16, 17 * 17),
    ("grid", {"obstacles": 2}, 12, 12 * 12),
    ("grid", {"dim": 3, "obstacles": 1}, 6, 6**3),
    ("heat", {}, 10, 10 * 10),
]
IDS = [f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items()) or 'default'}" for c in CASES]
LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


@pytest.mark.parametrize("name,opts,n,size", CASES, ids=IDS)
def test_size_symmetry_definiteness(name, opts, n, size, comm):
    fam = get_family(name, n, count=2, seed=5, **opts)
    system = fam.system(0, comm)
    A, b = system.to_scipy()
    if size is not None:
        assert system.size == size == A.shape[0]
    assert b.shape == (system.size,)
    assert system.params.shape == fam.param_shape()
    assert system.coordinates().shape[0] == system.size
    D = A.toarray()
    assert np.abs(D - D.T).max() <= 1e-12 * np.abs(D).max(), "matrix is not symmetric"
    ev = sla.eigvalsh(D)
    if fam.definite:
        assert ev[0] > 0, f"{name}: expected SPD, smallest eigenvalue {ev[0]}"
    else:
        assert ev[0] < 0 < ev[-1], f"{name}: expected indefinite, spectrum [{ev[0]}, {ev[-1]}]"
    system.destroy()


@pytest.mark.parametrize("name,opts,n,size", CASES, ids=IDS)
def test_same_sequence_from_same_seed(name, opts, n, size, comm):
    a = get_family(name, n, count=3, seed=7, **opts)
    b = get_family(name, n, count=5, seed=7, **opts)  # the count does not change system i
    c = get_family(name, n, count=3, seed=8, **opts)
    np.testing.assert_array_equal(a.params(1), b.params(1))
    if name != "heat":  # heat's parameters are the clock; its seed sets the forcing's phase
        assert not np.array_equal(a.params(1), c.params(1))
    else:
        assert a.phase() != c.phase()
        assert not np.array_equal(a.forcing(0.1), c.forcing(0.1))
    sa, sb = a.system(0, comm), b.system(0, comm)
    Aa, ba = sa.to_scipy()
    Ab, bb = sb.to_scipy()
    assert (Aa != Ab).nnz == 0
    np.testing.assert_array_equal(ba, bb)
    sa.destroy()
    sb.destroy()


def _solve_gathered(system):
    res = solve(system.A, system.b, options=LU)
    x = system.gather(res.x)
    return res, x


@pytest.mark.parametrize("name,opts,n,size", CASES, ids=IDS)
def test_same_system_and_solution_on_any_number_of_ranks(name, opts, n, size, comm):
    """Build on COMM_WORLD (2 ranks under mpiexec) and on COMM_SELF; compare in canonical order."""
    fam = get_family(name, n, count=2, seed=11, **opts)
    prev_w = prev_s = None
    for i in range(2 if fam.sequential else 1):
        sw = fam.system(i, comm, previous=prev_w)
        ss = fam.system(i, MPI.COMM_SELF, previous=prev_s)
        Aw, bw = sw.to_scipy()
        As, bs = ss.to_scipy()
        diff = abs(Aw - As).max() / abs(As).max()
        assert_all(comm, diff <= 1e-12, f"{name}: matrices differ by {diff:.2e}")
        assert_all(comm, relative(bw, bs) <= 1e-12, f"{name}: right-hand sides differ")
        np.testing.assert_allclose(sw.coordinates(), ss.coordinates(), atol=1e-14)
        rw, xw = _solve_gathered(sw)
        rs, xs = _solve_gathered(ss)
        assert_all(comm, rw.converged and rs.converged, f"{name}: LU did not converge")
        assert_all(comm, relative(xw, xs) <= 1e-10, f"{name}: solutions differ {relative(xw, xs):.2e}")
        for p in (prev_w, prev_s):
            if p is not None:
                p.destroy()
        prev_w, prev_s = rw.x, rs.x
        sw.destroy()
        ss.destroy()
    prev_w.destroy()
    prev_s.destroy()


def test_nan_and_wrong_shape_parameters_are_clear_errors(comm):
    fam = get_family("darcy", 8, count=2, seed=0)
    p = fam.params(0)
    p[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fam.system_from_params(p, comm)
    with pytest.raises(InputError, match="shape"):
        fam.system_from_params(np.ones((5, 5)), comm)
    with pytest.raises(InputError, match="positive"):
        fam.system_from_params(-np.ones((9, 9)), comm)


@pytest.mark.parametrize("args,match", [
    (("nosuch", 8), "unknown problem family 'nosuch'"),
    (("darcy", 0), "at least"),
    (("darcy", -3), "at least"),
    (("darcy", 8, -1), "count must be non-negative"),
    (("darcy", 8.5), "must be an integer"),
])
def test_bad_family_arguments(args, match):
    with pytest.raises(InputError, match=match):
        get_family(*args)


def test_bad_family_options():
    with pytest.raises(InputError, match="unknown option"):
        get_family("darcy", 8, colour="red")
    with pytest.raises(InputError, match="not one of"):
        get_family("darcy", 8, discretization="fd")
    with pytest.raises(InputError, match="k_min"):
        get_family("helmholtz", 8, k_min=5.0, k_max=1.0)


def test_heat_is_sequential(comm):
    fam = get_family("heat", 8, count=3)
    with pytest.raises(InputError, match="previous"):
        fam.system(1, comm)
    with pytest.raises(InputError, match="sequential"):
        list(fam.systems(comm))


def test_thermal_matrix_fixed_rhs_varies(comm):
    fam = get_family("thermal", 5, count=2, seed=2)
    s0, s1 = fam.system(0, comm), fam.system(1, comm)
    A0, b0 = s0.to_scipy()
    A1, b1 = s1.to_scipy()
    assert abs(A0 - A1).max() == 0.0
    assert relative(b0, b1) > 1e-3
    s0.destroy()
    s1.destroy()


def test_grid_obstacles_decouple_solid_cells(comm):
    fam = get_family("grid", 16, count=1, seed=3, obstacles=3)
    s = fam.system(0, comm)
    A, b = s.to_scipy()
    mask = s.params[1].reshape(-1).astype(bool)
    assert (~mask).sum() > 0
    solid = np.flatnonzero(~mask)
    assert np.all(A[solid][:, solid].diagonal() == 1.0)
    assert A[solid].nnz == len(solid) and A[:, solid].nnz == len(solid)
    assert np.all(b[solid] == 0.0)
    s.destroy()


def test_all_params_drawn_in_shares_are_the_serial_draw(comm):
    """datagen draws the parameter arrays in shares over the ranks and gathers them: the same
    array as one rank's draw."""
    from hybridsolve.problems import get_family

    for name, kw in (("darcy", {}), ("helmholtz", {}), ("grid", {"obstacles": 2})):
        fam = get_family(name, 12, count=7, seed=3, **kw)
        assert np.array_equal(fam.all_params(comm), fam.all_params()), name
