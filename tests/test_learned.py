"""Torch models inside PETSc: TorchPC (local/gathered, fallback, weights), DCDM, the shipped model,
a DOLFINx LinearProblem configured purely by options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import assert_all
from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.learned.petsc import register_model
from hybridsolve.learned.models import DCDMNet, load_model, save_model, shipped_model_path
from hybridsolve.problems import get_family
from hybridsolve.solvers.petsc import KrylovSolver
from hybridsolve.stack import MPI, PETSc

TORCHPC = {"pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
           "pc_torch_model": "dcdm2d"}
FCG = {"ksp_type": "fcg", "ksp_fcg_mmax": 2, "ksp_fcg_truncation_type": "standard",
       "ksp_norm_type": "unpreconditioned"}
DCDM = {"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM"}


def _grid(comm, n=48, seed=11, obstacles=2):
    """A grid Poisson system with obstacles the shipped model was not trained on."""
    return get_family("grid", n, count=1, seed=seed, obstacles=obstacles).system(0, comm)


def _solve(comm, system, opts, rtol=1e-6):
    solver = KrylovSolver(comm, options=opts, rtol=rtol, max_it=3000)
    res = solver.solve(system.A, system.b)
    ctx = solver.ksp.getPC().getPythonContext() if opts.get("pc_type") == "python" else None
    return solver, res, ctx


class NaNModel(torch.nn.Module):
    dim = 2

    def forward(self, r):
        return r * float("nan")


class AntiModel(torch.nn.Module):
    """Returns minus the input: an ascent direction every time (flipped by TorchPC)."""
    dim = 2

    def forward(self, r):
        return -r


class NearlyOrthogonalModel(torch.nn.Module):
    """A fixed field made orthogonal to r, plus 1e-7 r: |cos(r, z)| ~ 1e-7, useless but not 0."""
    dim = 2

    def forward(self, r):
        e = torch.sin(torch.arange(r[0].numel(), dtype=r.dtype) * 0.37).reshape(r.shape[1:])
        e = e.expand_as(r)
        dot = (e * r).sum(dim=tuple(range(1, r.dim())), keepdim=True)
        rr = (r * r).sum(dim=tuple(range(1, r.dim())), keepdim=True)
        return e - dot / rr * r + 1e-7 * r * e.norm() / rr.sqrt()


class ZeroModel(torch.nn.Module):
    """Returns zero: no direction at all (fallback)."""
    dim = 2

    def forward(self, r):
        return 0.0 * r


@pytest.mark.parametrize("ksp", ["fcg", "fgmres"])
@pytest.mark.parametrize("mode", ["local", "gathered"])
def test_torchpc_in_flexible_krylov_reaches_the_true_tolerance(comm, ksp, mode):
    s = _grid(comm)
    opts = {**TORCHPC, "pc_torch_mode": mode, "ksp_norm_type": "unpreconditioned",
            **({"ksp_type": "fcg", "ksp_fcg_mmax": 2} if ksp == "fcg" else {"ksp_type": "fgmres"})}
    solver, res, ctx = _solve(comm, s, opts)
    assert_all(comm, res.converged and res.true_residual <= 1.01e-6, res.summary())
    assert ctx.stats["applications"] > 0
    solver.destroy()
    s.destroy()


def test_gathered_mode_gives_the_same_iterations_on_any_rank_count(comm):
    """Gathered: the model sees the whole field, so 1 and 2 ranks take the same iterations."""
    if comm.size == 1:
        pytest.skip("compares a distributed solve with a serial one: the mpiexec -n 2 pass")
    s = _grid(comm)
    solver, res, _ = _solve(comm, s, {**TORCHPC, **FCG, "pc_torch_mode": "gathered"})
    self_sys = _grid(MPI.COMM_SELF)
    solver1, res1, _ = _solve(MPI.COMM_SELF, self_sys, {**TORCHPC, **FCG, "pc_torch_mode": "gathered"})
    assert_all(comm, abs(res.iterations - res1.iterations) <= 1,
               f"{res.iterations} its on {comm.size} ranks vs {res1.iterations} on 1")
    for o in (solver, solver1, s, self_sys):
        o.destroy()


@pytest.mark.parametrize("model,counter,text", [
    (NaNModel(), "fallback_nonfinite", "used {} times for NaN/Inf"),
    (ZeroModel(), "fallback_not_descent", "{} times for a direction (nearly) orthogonal"),
    (NearlyOrthogonalModel(), "fallback_not_descent", "{} times for a direction (nearly) orthogonal"),
    (AntiModel(), "sign_flips", "{} ascent directions flipped")])
def test_fallback_replaces_garbage_and_the_solve_still_converges(comm, model, counter, text,
                                                                  tmp_path):
    s = _grid(comm, n=24)
    name = register_model(type(model).__name__, model)
    solver, res, ctx = _solve(comm, s, {**FCG, **TORCHPC, "pc_torch_model": name}, rtol=1e-8)
    assert_all(comm, res.converged and res.true_residual <= 1.01e-8, res.summary())
    n = ctx.stats[counter]
    assert n == ctx.stats["vectors"] > 0
    assert res.info["torchpc"][counter] == n          # SolveResult.info, this solve
    path = comm.bcast(str(tmp_path / "view.txt"), root=0)
    viewer = PETSc.Viewer().createASCII(path, comm=comm)
    solver.ksp.view(viewer)
    viewer.destroy()
    comm.Barrier()
    view = open(path).read()
    assert text.format(n) in view, view
    solver.destroy()
    s.destroy()


def test_fallback_none_is_a_clear_error(comm):
    s = _grid(comm, n=16)
    name = register_model("nan", NaNModel())
    solver = KrylovSolver(comm, options={**FCG, **TORCHPC, "pc_torch_model": name,
                                         "pc_torch_fallback": "none"}, rtol=1e-8)
    with pytest.raises(CollectiveError, match="fallback is none"):
        solver.solve(s.A, s.b)
    solver.destroy()
    s.destroy()


def test_dcdm_and_fcg_with_the_same_network_give_the_same_iterates(comm):
    s = _grid(comm)
    common = {**TORCHPC, "pc_torch_mode": "gathered", "pc_torch_dtype": "float64"}
    a, ra, _ = _solve(comm, s, {**common, **DCDM, "ksp_dcdm_true_residual": 0})
    b, rb, _ = _solve(comm, s, {**common, **FCG})  # PETSc's FCG(2), standard truncation
    assert_all(comm, ra.converged and rb.converged)
    k = min(ra.iterations, rb.iterations, 15)
    h1, h2 = ra.residual_history[:k], rb.residual_history[:k]
    assert_all(comm, np.allclose(h1, h2, rtol=1e-8), f"{h1[:6]} vs {h2[:6]}")
    assert_all(comm, abs(ra.iterations - rb.iterations) <= 1)
    for o in (a, b, s):
        o.destroy()


def test_shipped_model_beats_cg_on_an_unseen_system(comm):
    """The shipped dcdm2d model (trained at 64^2) on a 64^2 system with obstacles it never saw:
    DCDM needs fewer iterations than plain CG (a measured margin, fixed seed)."""
    s = _grid(comm, n=64, seed=21, obstacles=3)
    a, rd, _ = _solve(comm, s, {**TORCHPC, **DCDM, "pc_torch_mode": "gathered"})
    b, rc, _ = _solve(comm, s, {"ksp_type": "cg", "pc_type": "none",
                                "ksp_norm_type": "unpreconditioned"})
    assert_all(comm, rd.converged and rd.true_residual <= 1.01e-6, rd.summary())
    assert_all(comm, rd.iterations < 0.5 * rc.iterations, f"DCDM {rd.iterations} vs CG {rc.iterations}")
    # every direction was the network's: no stall switch, no fallback, no flip hidden in the count
    assert_all(comm, rd.info["dcdm"]["classical_iterations"] == 0, str(rd.info))
    t = rd.info["torchpc"]
    assert_all(comm, t["fallback_nonfinite"] + t["fallback_not_descent"] == 0, str(t))
    for o in (a, b, s):
        o.destroy()


class NoiseModel(torch.nn.Module):
    """Fresh random noise every call: a network that returns garbage."""
    dim = 2

    def forward(self, r):
        return torch.randn_like(r)


@pytest.mark.parametrize("n", [64, 96])   # the training size, and above it
def test_two_level_cycle_with_the_network_beats_its_smoother_and_the_network_alone(comm, n,
                                                                                  tmp_path):
    """-pc_torch_smoother sor: SSOR sweep, the network on the rest (A-norm step), SSOR sweep.
    In FCG it needs fewer iterations than SSOR-PCG and than FCG with the network alone, on a
    layout it never saw; the view says it is a cycle. With noise in place of the network the
    first claim fails (the cycle is then SSOR with a useless extra direction)."""
    s = _grid(comm, n=n, seed=23, obstacles=3)
    fcg30 = {"ksp_type": "fcg", "ksp_fcg_mmax": 30, "ksp_norm_type": "unpreconditioned"}
    cyc = {**fcg30, **TORCHPC, "pc_torch_mode": "gathered", "pc_torch_smoother": "sor"}
    a, rc, ctx = _solve(comm, s, cyc)
    b, rs, _ = _solve(comm, s, {"ksp_type": "cg", "pc_type": "sor",
                                "ksp_norm_type": "unpreconditioned"})
    c, rn, _ = _solve(comm, s, {**fcg30, **TORCHPC, "pc_torch_mode": "gathered"})
    assert_all(comm, rc.converged and rc.true_residual <= 1.01e-6, rc.summary())
    assert_all(comm, rc.iterations < 0.6 * rs.iterations,
               f"cycle {rc.iterations} vs SSOR-PCG {rs.iterations}")
    assert_all(comm, rc.iterations < rn.iterations,
               f"cycle {rc.iterations} vs network alone {rn.iterations}")
    t = rc.info["torchpc"]
    assert_all(comm, t["fallback_nonfinite"] + t["fallback_not_descent"] == 0, str(t))
    path = comm.bcast(str(tmp_path / "view.txt"), root=0)
    viewer = PETSc.Viewer().createASCII(path, comm=comm)
    a.ksp.view(viewer)
    viewer.destroy()
    comm.Barrier()
    assert "two-level cycle: smoother sor x1" in open(path).read()
    name = register_model("noise_cycle", NoiseModel())
    d, rz, _ = _solve(comm, s, {**cyc, "pc_torch_model": name})
    assert_all(comm, rz.converged and rz.true_residual <= 1.01e-6, rz.summary())
    assert_all(comm, rz.iterations > rc.iterations, f"noise {rz.iterations} vs net {rc.iterations}")
    for o in (a, b, c, d, s):
        o.destroy()


def test_two_level_cycle_refuses_an_unknown_smoother(comm):
    s = _grid(comm, n=16)
    with pytest.raises((InputError, CollectiveError), match="not a PETSc PC type"):
        _solve(comm, s, {**FCG, **TORCHPC, "pc_torch_smoother": "nosuchpc"})
    s.destroy()


def test_torchpc_with_plain_cg_warns(comm):
    s = _grid(comm, n=16)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        solver, res, _ = _solve(comm, s, {**TORCHPC, "ksp_type": "cg"})
    if comm.rank == 0:
        assert any("flexible" in str(x.message) for x in w)
    solver.destroy()
    s.destroy()


@pytest.mark.serial
def test_wrong_or_corrupt_weights_fail_clearly(tmp_path):
    small = DCDMNet(2, channels=8)
    path = save_model(small, tmp_path / "small.safetensors")
    big = DCDMNet(2, channels=16)
    with pytest.raises(InputError, match=r"(?s)small.safetensors does not match DCDMNet.*expected \(16"):
        __import__("hybridsolve.learned.models", fromlist=["x"]).load_weights(big, path)
    torch.save(big.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(InputError, match="does not match"):
        load_model(tmp_path / "sd.pt", channels=8)
    assert isinstance(load_model(tmp_path / "sd.pt", dim=2, channels=16), DCDMNet)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="bad.safetensors is not a readable safetensors"):
        load_model(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    evil = tmp_path / "evil.pt"
    torch.save({"x": object()}, evil)  # needs pickle: weights_only refuses it
    with pytest.raises(InputError, match="weights_only"):
        load_model(evil)


@pytest.mark.parametrize("name", ["dcdm2d", "dcdm3d", "vcycle2d"])
def test_shipped_model_is_small_and_loads(name):
    from hybridsolve.learned.models import model_info

    p = shipped_model_path(name)
    assert p.exists() and p.stat().st_size < 1_000_000
    m = load_model(name)
    shape = (33, 40) if m.dim == 2 else (9, 12, 10)      # any size, odd or even
    with torch.no_grad():
        out = m(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, *shape) and torch.isfinite(out).all()
    assert "train" in model_info(name)                 # how it was trained travels with it


def test_dolfinx_linear_problem_uses_the_learned_preconditioner_by_options(comm, tmp_path):
    import dolfinx
    import dolfinx.fem.petsc
    import ufl

    n = 40
    mesh = dolfinx.mesh.create_unit_square(comm, n, n)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(mesh)
    f = ufl.exp(-60 * ((x[0] - 0.3) ** 2 + (x[1] - 0.65) ** 2)) - 0.5 * ufl.exp(
        -80 * ((x[0] - 0.7) ** 2 + (x[1] - 0.3) ** 2))
    facets = dolfinx.mesh.locate_entities_boundary(mesh, 1, lambda p: np.full(p.shape[1], True))
    bc = dolfinx.fem.dirichletbc(0.0, dolfinx.fem.locate_dofs_topological(V, 1, facets), V)
    from hybridsolve.learned import save_grid_layout

    layout = save_grid_layout(V, tmp_path / "perm.npy")    # public helper, collective
    assert layout["pc_torch_shape"] == f"{n + 1},{n + 1}" and layout["pc_torch_mode"] == "gathered"
    opts = {**FCG, **TORCHPC, **layout, "ksp_rtol": 1e-10, "ksp_max_it": 500}
    problem = dolfinx.fem.petsc.LinearProblem(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
                                              f * v * ufl.dx, bcs=[bc], petsc_options=opts,
                                              petsc_options_prefix="learned_")
    uh = problem.solve()
    ksp = problem.solver
    ctx = ksp.getPC().getPythonContext()
    assert_all(comm, ksp.getConvergedReason() > 0, f"reason {ksp.getConvergedReason()}")
    assert ctx.stats["applications"] > 0 and ctx.shape == (n + 1, n + 1)
    lu = dolfinx.fem.petsc.LinearProblem(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
                                         f * v * ufl.dx, bcs=[bc], petsc_options={
                                             "ksp_type": "preonly", "pc_type": "lu"},
                                         petsc_options_prefix="lu_")
    ref = lu.solve()
    diff = uh.x.petsc_vec.copy()
    diff.axpy(-1.0, ref.x.petsc_vec)
    rel = diff.norm() / ref.x.petsc_vec.norm()
    assert_all(comm, rel < 1e-7, f"relative difference to LU {rel:.2e}")
    its_learned = ksp.getIterationNumber()
    cg = dolfinx.fem.petsc.LinearProblem(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
                                         f * v * ufl.dx, bcs=[bc], petsc_options={
                                             "ksp_type": "cg", "pc_type": "none", "ksp_rtol": 1e-10,
                                             "ksp_norm_type": "unpreconditioned"},
                                         petsc_options_prefix="plain_")
    cg.solve()
    assert_all(comm, its_learned < cg.solver.getIterationNumber(),
               f"learned {its_learned} its vs CG {cg.solver.getIterationNumber()}")


def test_dolfinx_dof_numbering_without_its_layout_is_refused_not_run_scrambled(comm):
    """A DOLFINx P1 matrix has as many rows as a square grid but its dofs are not in grid order:
    TorchPC refuses it on every rank (naming the fix) instead of running the network on a
    scrambled field; the refusal reaches the caller of LinearProblem.solve."""
    import dolfinx
    import dolfinx.fem.petsc
    import ufl

    from hybridsolve.errors import InputError

    mesh = dolfinx.mesh.create_unit_square(comm, 24, 24)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    problem = dolfinx.fem.petsc.LinearProblem(
        ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + u * v * ufl.dx, v * ufl.dx,
        petsc_options={**FCG, **TORCHPC, "pc_torch_mode": "gathered"},
        petsc_options_prefix="scrambled_")
    with pytest.raises(Exception) as err:
        problem.solve()
    msg = str(err.value) + str(getattr(err.value, "__cause__", ""))
    assert isinstance(err.value, InputError) or "grid order" in msg, msg
    assert "not in the grid order of (25, 25)" in msg and "save_grid_layout" in msg, msg


def test_grid_permutation_refuses_a_space_that_is_not_a_grid(comm):
    import dolfinx

    from hybridsolve.errors import InputError
    from hybridsolve.learned import grid_permutation

    mesh = dolfinx.mesh.create_unit_square(comm, 6, 6)
    x = mesh.geometry.x
    x[:, 0] += 0.02 * np.sin(7 * x[:, 1]) * x[:, 0] * (1 - x[:, 0])   # a moved mesh: no grid
    with pytest.raises(InputError, match="do not form a tensor grid"):
        grid_permutation(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)))
    Vv = dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,)))
    with pytest.raises(InputError, match="scalar space"):
        grid_permutation(Vv)


@pytest.mark.serial
def test_train_cli_trains_resumes_and_the_model_plugs_in(tmp_path):
    from conftest import run_cli

    out = tmp_path / "m.safetensors"
    args = ["train", "dcdm", "--n", "16", "--matrices", "2", "--lanczos", "60", "--samples", "64",
            "--epochs", "2", "--batch", "8", "--threads", "1", "--out", str(out), "--quiet"]
    p = run_cli(args)
    assert p.returncode == 0, p.stderr
    from hybridsolve.learned.models import model_info

    info = model_info(out)
    assert len(info["history"]) == 2 and info["train"]["n"] == 16
    other = [a if a != "8" else "4" for a in args]  # another batch size: another configuration
    p = run_cli(other)
    assert p.returncode == 2 and "another training configuration" in p.stderr
    p = run_cli(["solve", "--family", "grid", "--n", "20", "--opt", "obstacles=1", "--rtol", "1e-6",
                 "-ksp_type", "fgmres", "-ksp_max_it", "1000", "-pc_type", "python",
                 "-pc_python_type", "hybridsolve.learned.petsc.TorchPC", "-pc_torch_model", str(out),
                 "-ksp_converged_reason"])
    assert p.returncode == 0 and "CONVERGED_RTOL" in p.stdout, p.stderr
    p = run_cli(["train", "dcdm", "--dim", "4", "--out", str(out)])
    assert p.returncode == 2


@pytest.mark.serial
def test_vcycle_net_is_scale_equivariant_and_sees_the_whole_grid_at_every_size():
    """VCycleNet: f(a r) = a f(r) (no biases), levels grow with the grid with the same weights,
    a point's output depends on the far corner at 128^2 (the one-level DCDMNet's does not), and
    the output is zero where the mask is."""
    from hybridsolve.learned.models import VCycleNet, count_parameters

    torch.manual_seed(0)
    net = VCycleNet(2, 8, 1).double()
    assert [net.levels((n, n)) for n in (16, 64, 128, 256)] == [3, 5, 6, 7]
    assert all(p.dim() != 1 for p in net.parameters())          # no bias vectors anywhere
    n_params = count_parameters(net)
    r = torch.randn(2, 1, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        out = net(r)
        assert torch.allclose(net(3.5 * r), 3.5 * out, rtol=1e-10, atol=1e-12)
        assert torch.allclose(net(-2.0 * r), -2.0 * out, rtol=1e-10, atol=1e-12)   # odd
        bumped = r.clone()
        bumped[:, :, 0, 0] += 1.0
        assert (net(bumped) - out)[:, :, -1, -1].abs().max() > 0      # the far corner
        old = DCDMNet(2, 8, 1, 1, 1).double()
        base = old(r)
        assert (old(bumped) - base)[:, :, -1, -1].abs().max() == 0    # fixed window
        mask = torch.ones(1, 1, 128, 128, dtype=torch.float64)
        mask[..., 40:60, 30:90] = 0
        assert net(r, mask)[..., 40:60, 30:90].abs().max() == 0
        assert net(torch.randn(1, 1, 37, 50, dtype=torch.float64)).shape == (1, 1, 37, 50)
    assert count_parameters(net) == n_params


@pytest.mark.serial
def test_train_vcycle_on_the_fly_warm_start_and_refusals(tmp_path):
    from conftest import run_cli
    from hybridsolve.learned.models import load_model, model_info

    out = tmp_path / "v.safetensors"
    base = ["train", "dcdm", "--arch", "vcycle", "--rhs", "smooth", "--channels", "4",
            "--smooth", "1", "--matrices", "2", "--samples", "32", "--epochs", "1", "--batch", "8",
            "--threads", "1", "--quiet"]
    p = run_cli([*base, "--n", "16", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    info = model_info(out)
    assert info["config"]["kind"] == "VCycleNet" and info["train"]["rhs"] == "smooth"
    big = tmp_path / "v32.safetensors"        # curriculum: the 16^2 model goes on at 32^2
    p = run_cli([*base, "--n", "32", "--init", str(out), "--out", str(big)])
    assert p.returncode == 0, p.stderr
    assert load_model(big).levels((32, 32)) == 4
    p = run_cli(["train", "dcdm", "--n", "16", "--init", str(out), "--out", str(tmp_path / "x.safetensors"),
                 "--quiet"])                  # a DCDMNet cannot start from a VCycleNet's weights
    assert p.returncode == 2 and "does not match" in p.stderr, p.stderr


class CoarseModel(torch.nn.Module):
    """A descent direction that only ever sees the coarsest scales: DCDM stalls on the rest."""
    dim = 2

    def forward(self, r):
        c = torch.nn.functional.avg_pool2d(r, 8, ceil_mode=True)
        return torch.nn.functional.interpolate(c, size=r.shape[2:], mode="nearest")


def test_dcdm_switches_to_classical_directions_when_the_network_stalls(comm):
    s = _grid(comm, n=32)
    name = register_model("coarse", CoarseModel())
    solver, res, _ = _solve(comm, s, {**TORCHPC, **DCDM, "pc_torch_model": name,
                                      "pc_torch_mode": "gathered", "ksp_dcdm_stall": 20},
                            rtol=1e-8)
    stats = solver.ksp.getPythonContext().stats
    assert_all(comm, res.converged and res.true_residual <= 1.01e-8, res.summary())
    assert_all(comm, stats["classical_switches"] == 1 and stats["classical_iterations"] > 0,
               str(stats))
    solver.destroy()
    s.destroy()


@pytest.mark.serial
def test_prepared_gpu_check_runs_its_cpu_part_and_torch_dcdm_matches_petsc(tmp_path):
    """benchmarks/gpu_check.py on a machine without a GPU: the CPU part runs, the torch-only
    DCDM (matrix-free stencil) takes PETSc DCDM's iterations, the device part is null."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--quick",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(out.read_text())
    cpu = rep["cpu_check"]
    assert cpu["stencil_max_rel_error"] < 1e-13
    for tol in ("tol 0.0001", "tol 1e-06", "mg3d tol 0.0001", "mg3d tol 1e-06"):
        row = cpu[tol]
        assert abs(row["torch_dcdm_iterations"] - row["petsc_dcdm_iterations"]) <= 1, row
        assert row["torch_dcdm_residual"] <= float(tol.split()[-1]), row
    if not torch.cuda.is_available():
        assert rep["device"] is None and rep["mgnet_device"] is None


@pytest.mark.serial
def test_dcdm_cycle_method_by_name_from_the_command_line(tmp_path):
    """--method dcdm-cycle on 2 ranks: FCG(30) with the network in an SSOR cycle, the true
    residual met, the view names the cycle, fewer iterations than ssor-pcg on the same systems."""
    import json

    from conftest import run_cli

    its = {}
    for method in ("dcdm-cycle", "ssor-pcg"):
        out = tmp_path / f"{method}.json"
        p = run_cli(["solve", "--family", "grid", "--n", "64", "--count", "2", "--opt", "obstacles=3",
                     "--seed", "31", "--method", method, "--rtol", "1e-6", "--json", str(out)]
                    + (["-ksp_view"] if method == "dcdm-cycle" else []), np_=2)
        assert p.returncode == 0, p.stderr
        res = json.loads(out.read_text())["results"]
        assert all(r["true_residual"] <= 1.01e-6 for r in res), res
        its[method] = sum(r["iterations"] for r in res)
        if method == "dcdm-cycle":
            assert "two-level cycle: smoother sor x1" in p.stdout
    assert its["dcdm-cycle"] < 0.6 * its["ssor-pcg"], its
