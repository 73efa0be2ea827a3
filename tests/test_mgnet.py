"""The learned multigrid network (MGNet) as DCDM's network: linear, symmetric, levels from the
operator, one set of weights at every size; through TorchPC by options on grids above its
training size and on a DOLFINx LinearProblem, on 1 and 2 ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_all
from hybridsolve.errors import InputError
from hybridsolve.learned.mgnet import MGNet, interpolation_1d
from hybridsolve.learned.models import count_parameters, load_model
from hybridsolve.learned.petsc import register_model
from hybridsolve.learned.training import grid_training_matrices
from hybridsolve.problems import get_family
from hybridsolve.solvers.petsc import KrylovSolver
from hybridsolve.stack import MPI

UNPREC = {"ksp_norm_type": "unpreconditioned"}
TORCH = {"pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
         "pc_torch_mode": "gathered"}
DCDM = {"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM"}


def test_interpolation_is_linear_with_zero_beyond_the_ends():
    P = interpolation_1d(6).toarray()          # coarse points at fine 1, 3, 5
    assert P.shape == (6, 3)
    x = np.arange(1, 7) / 7.0                   # a linear function vanishing at 0 ...
    c = x[1::2]
    assert np.allclose((P @ c)[:5], x[:5])      # ... is reproduced up to the last coarse point
    assert np.allclose(P.sum(axis=1)[1:5], [1, 1, 1, 1]) and P[0, 0] == 0.5


def _dense_lambda_max(net, lv) -> float:
    """lambda_max(w S A) of one level from the dense matrices (the truth the estimate is
    checked against)."""
    n = int(np.prod(lv.shape))
    A = lv.A.to(torch.float64).to_dense()
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *lv.shape)
    with torch.no_grad():
        S = net.smooth(eye, lv.d).reshape(n, n).T
    return float(np.linalg.eigvals((S @ A).numpy()).real.max())


@pytest.mark.serial
def test_spectral_cap_keeps_every_coarse_smoother_a_contraction():
    """The shipped 3-D smoother, unscaled, has lambda_max(S A) > 2 on the coarse Galerkin levels
    (the V-cycle turns indefinite on deep hierarchies); the cap scales those levels to
    lambda <= cap < 2, measured against dense eigenvalues, and leaves the finest level alone."""
    A = grid_training_matrices(24, 3, 3, 1, seed=3)[0]
    for cap in (0.0, 1.9):
        net = load_model("mg3d", cap=cap).double()
        h = net.prepare(A, (24,) * 3, dtype=torch.float64)
        assert h.shapes == [(24,) * 3, (12,) * 3, (6,) * 3]
        lv = h.levels[1]
        true = _dense_lambda_max(net, lv)
        assert abs(lv.lam - true) <= 0.01 * true, (lv.lam, true)   # Lanczos vs dense
        if cap == 0.0:
            assert true > 2.0 and lv.scale == 1.0 and h.scaled == 0
        else:
            assert lv.scale * true <= 1.9 * 1.01 and h.scaled == 1
        assert h.levels[0].scale == 1.0
        # the cycle applies that factor: level 1 by hand (nu = 1, the next level exact)
        lv, lc = h.levels[1], h.levels[2]
        r = torch.randn(1, 1, *lv.shape, dtype=torch.float64) * (lv.d != 0)
        with torch.no_grad():
            z = lv.scale * net.smooth(r, lv.d)
            rc = net._mult(lv.PT, r - net._mult(lv.A, z, lv.shape), lc.shape)
            z = z + net._mult(lv.P, (rc.reshape(1, -1) @ h.coarse_inverse.T).reshape(rc.shape),
                              lv.shape)
            z = z + lv.scale * net.smooth(r - net._mult(lv.A, z, lv.shape), lv.d)
            assert torch.allclose(net._cycle(h, 1, r), z, rtol=1e-10, atol=1e-12)
    with pytest.raises(InputError, match="cap"):
        MGNet(3, cap=2.5)


@pytest.mark.serial
def test_mgnet_is_linear_symmetric_and_one_model_serves_every_size():
    torch.manual_seed(0)
    net = MGNet(2, channels=4, noise=0.3).double()
    n_params = count_parameters(net)
    assert all(p.dim() > 1 for p in net.parameters())          # no bias vectors
    for n, levels in ((24, 3), (48, 4), (96, 5)):
        A = grid_training_matrices(n, 2, 3, 1, seed=5)[0]
        h = net.prepare(A, (n, n), dtype=torch.float64)
        assert len(h.levels) == levels and max(h.shapes[-1]) <= 6
        x, y = torch.randn(2, 1, 1, n, n, dtype=torch.float64)
        with torch.no_grad():
            fx, fy = net(x, h), net(y, h)
            assert torch.allclose(net(-3.7 * x, h), -3.7 * fx, rtol=1e-12, atol=1e-12)
            assert torch.allclose(net(x + y, h), fx + fy, rtol=1e-10, atol=1e-10)
            # a symmetric map (the same smoother before and after the coarse correction)
            assert abs(float((fx * y).sum() - (x * fy).sum())) < 1e-9 * float(fx.norm() * y.norm())
            # zero on decoupled (solid) cells; the far corner reaches the first point
            solid = torch.from_numpy(A.diagonal() == 1.0).reshape(n, n)
            assert fx[0, 0][solid].abs().max() == 0
            bump = torch.zeros_like(x)
            bump[..., -1, -1] = 1.0
            assert net(bump, h)[..., 0, 0].abs().max() > 0
    assert count_parameters(net) == n_params
    with pytest.raises(InputError, match="operator's levels"):
        net(x)
    with pytest.raises(InputError, match="does not fit"):
        net(torch.randn(1, 1, 20, 20, dtype=torch.float64), h)
    with pytest.raises(InputError, match="does not fit the grid"):
        net.prepare(A, (n + 1, n))


def _solve(comm, s, opts, rtol=1e-6):
    solver = KrylovSolver(comm, options=opts, rtol=rtol, max_it=2000)
    r = solver.solve(s.A, s.b)
    return solver, r


@pytest.mark.parametrize("dim,n,name", [(2, 96, "mg2d"), (3, 24, "mg3d")])
def test_shipped_mg_above_its_training_size_beats_icc_and_its_untrained_self(comm, dim, n, name):
    """On a grid larger than the training one, obstacle layout from an unseen seed: DCDM with the
    shipped network needs at most 1/3 of ICC-PCG's iterations, fewer than the untrained network
    of the same configuration (so training matters: the identity or noise in its place fails
    here), every direction is the network's, the true residual is met; the same iterations and
    solution on any number of ranks."""
    s = get_family("grid", n, count=1, seed=303, dim=dim, obstacles=3).system(0, comm)
    a, r = _solve(comm, s, {**TORCH, **DCDM, "pc_torch_model": name})
    cfg = dict(load_model(name).config)
    cfg.pop("kind")
    plain = register_model(f"test-untrained-{name}", MGNet(**cfg))
    b, u = _solve(comm, s, {**TORCH, **DCDM, "pc_torch_model": plain})
    assert_all(comm, r.converged and r.true_residual <= 1.01e-6, r.summary())
    assert_all(comm, r.info["dcdm"]["classical_iterations"] == 0, str(r.info))
    t = r.info["torchpc"]
    assert_all(comm, t["fallback_nonfinite"] + t["fallback_not_descent"] + t["sign_flips"] == 0,
               str(t))
    assert_all(comm, r.iterations < u.iterations, f"trained {r.iterations} vs untrained {u.iterations}")
    if comm.size == 1:
        c, ic = _solve(comm, s, {"ksp_type": "cg", "pc_type": "icc", **UNPREC})
        assert r.iterations <= ic.iterations / 3, f"{r.iterations} vs ICC-PCG {ic.iterations}"
        c.destroy()
    # the same solve on this rank alone: the gathered network gives the same directions
    s1 = get_family("grid", n, count=1, seed=303, dim=dim, obstacles=3).system(0, MPI.COMM_SELF)
    d, r1 = _solve(MPI.COMM_SELF, s1, {**TORCH, **DCDM, "pc_torch_model": name})
    assert_all(comm, r1.iterations == r.iterations, f"{r1.iterations} (1 rank) vs {r.iterations}")
    full, one = s.gather(r.x), s1.gather(r1.x)
    err = np.linalg.norm(full - one) / np.linalg.norm(one)
    assert_all(comm, err < 1e-5, f"1 rank vs {comm.size}: relative difference {err:.1e}")
    for o in (a, b, d, s, s1):
        o.destroy()


def test_mg_text_in_ksp_view_and_local_mode_refused_on_two_ranks(comm):
    s = get_family("grid", 32, count=1, seed=7, obstacles=2).system(0, comm)
    if comm.size > 1:
        solver = KrylovSolver(comm, options={**TORCH, **DCDM, "pc_torch_model": "mg2d",
                                             "pc_torch_mode": "local"}, rtol=1e-6)
        with pytest.raises(Exception, match="pc_torch_mode gathered"):
            solver.solve(s.A, s.b)
        solver.destroy()
    else:
        solver, r = _solve(comm, s, {**TORCH, "ksp_type": "fcg", **UNPREC, "pc_torch_model": "mg2d"})
        text = solver.ksp.getPC().getPythonContext().describe()
        assert "levels from the operator (Galerkin): 32x32 > 16x16 > 8x8 > 4x4" in text, text
        assert "smoother lambda_max(S A) on the coarse levels: " in text, text
        assert "cap 1.9: " in text and "level(s) scaled down" in text, text
        assert r.converged and r.iterations < 10, r.summary()
        solver.destroy()
    s.destroy()


def test_dolfinx_linear_problem_selects_the_mg_network_by_options(comm, tmp_path):
    """A FEniCSx user: DOLFINx first, our types only through petsc_options; the P1 dofs laid
    out as a grid by the public helper; Dirichlet rows are decoupled (the network skips them)."""
    import dolfinx
    import dolfinx.fem.petsc
    import ufl

    from hybridsolve.learned import save_grid_layout

    n = 48
    mesh = dolfinx.mesh.create_unit_square(comm, n, n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    f = ufl.sin(3 * x[0]) * ufl.exp(-20 * (x[1] - 0.4) ** 2)
    facets = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.full(p.shape[1], True))
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)
    layout = save_grid_layout(V, tmp_path / "perm.npy")
    a, L = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx, f * v * ufl.dx
    opts = {**TORCH, **layout, **DCDM, "pc_torch_model": "mg2d", "ksp_rtol": 1e-10,
            "ksp_max_it": 200}
    problem = dolfinx.fem.petsc.LinearProblem(a, L, bcs=[bc], petsc_options=opts,
                                              petsc_options_prefix="mg_")
    uh = problem.solve()
    its = problem.solver.getIterationNumber()
    assert_all(comm, problem.solver.getConvergedReason() > 0,
               f"reason {problem.solver.getConvergedReason()}")
    ref = dolfinx.fem.petsc.LinearProblem(a, L, bcs=[bc], petsc_options={
        "ksp_type": "preonly", "pc_type": "lu"}, petsc_options_prefix="mglu_").solve()
    diff = uh.x.petsc_vec.copy()
    diff.axpy(-1.0, ref.x.petsc_vec)
    rel = diff.norm() / ref.x.petsc_vec.norm()
    assert_all(comm, rel < 1e-8, f"relative difference to LU {rel:.2e}")
    assert_all(comm, its <= 12, f"{its} iterations to 1e-10 on a 49x49 grid")


@pytest.mark.serial
def test_train_mg_lowers_the_loss_and_goes_on_at_another_size(tmp_path):
    from conftest import run_cli
    from hybridsolve.learned.models import model_info

    out = tmp_path / "mg.safetensors"
    base = ["train", "dcdm", "--arch", "mg", "--rhs", "smooth", "--channels", "4", "--matrices",
            "2", "--samples", "64", "--epochs", "3", "--batch", "8", "--lr", "3e-3", "--threads",
            "1", "--quiet"]
    p = run_cli([*base, "--n", "16", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    info = model_info(out)
    assert info["config"]["kind"] == "MGNet" and info["history"][-1] < info["history"][0]
    big = tmp_path / "mg32.safetensors"         # curriculum: the 16^2 weights go on at 32^2
    p = run_cli([*base, "--n", "32", "--init", str(out), "--out", str(big)])
    assert p.returncode == 0, p.stderr
    p = run_cli([*base, "--arch", "vcycle", "--n", "16", "--init", str(out),
                 "--out", str(tmp_path / "x.safetensors")])
    assert p.returncode == 2 and "does not match" in p.stderr, p.stderr
