"""Torch models inside PETSc: TorchPC (local/gathered, fallback, weights), DCDM, the shipped model,
a DOLFINx LinearProblem configured purely by options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import assert_all
from hybridsolve.errors import InputError
from hybridsolve.learned.models import DCDMNet, load_model, save_model, shipped_model_path
from hybridsolve.problems import get_family
from hybridsolve.solvers.petsc import KrylovSolver
from hybridsolve.stack import MPI, PETSc

TORCHPC = {"pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
           "pc_torch_model": "dcdm2d"}
FCG = {"ksp_type": "fcg", "ksp_fcg_mmax": 2, "ksp_norm_type": "unpreconditioned"}
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
    """Returns minus the input: never a descent direction."""
    dim = 2

    def forward(self, r):
        return -r


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
    s = _grid(comm)
    solver, res, _ = _solve(comm, s, {**TORCHPC, **FCG, "pc_torch_mode": "gathered"})
    self_sys = _grid(MPI.COMM_SELF)
    solver1, res1, _ = _solve(MPI.COMM_SELF, self_sys, {**TORCHPC, **FCG, "pc_torch_mode": "gathered"})
    assert_all(comm, abs(res.iterations - res1.iterations) <= 1,
               f"{res.iterations} its on {comm.size} ranks vs {res1.iterations} on 1")
    for o in (solver, solver1, s, self_sys):
        o.destroy()


@pytest.mark.parametrize("model,counter", [(NaNModel(), "fallback_nonfinite"),
                                           (AntiModel(), "fallback_not_descent")])
def test_fallback_replaces_garbage_and_the_solve_still_converges(comm, model, counter):
    s = _grid(comm, n=24)
    solver = KrylovSolver(comm, options={**FCG, "pc_type": "python",
                                         "pc_python_type": "hybridsolve.learned.petsc.TorchPC"},
                          rtol=1e-8, max_it=2000)
    solver.ksp.setOperators(s.A)
    solver.ksp.getPC().setType("python")
    solver.ksp.getPC().setPythonContext(__import__("hybridsolve.learned.petsc",
                                                   fromlist=["TorchPC"]).TorchPC())
    ctx = solver.ksp.getPC().getPythonContext()
    ctx.set_model(model)
    res = solver.solve(s.A, s.b)
    assert_all(comm, res.converged and res.true_residual <= 1.01e-8, res.summary())
    assert ctx.stats[counter] == ctx.stats["vectors"] > 0
    solver.destroy()
    s.destroy()


def test_dcdm_and_fcg_with_the_same_network_give_the_same_iterates(comm):
    s = _grid(comm)
    a, ra, _ = _solve(comm, s, {**TORCHPC, **DCDM, "pc_torch_mode": "gathered",
                                "ksp_dcdm_true_residual": 0})
    b, rb, _ = _solve(comm, s, {**TORCHPC, **FCG, "pc_torch_mode": "gathered"})
    assert_all(comm, ra.converged and rb.converged)
    k = min(ra.iterations, rb.iterations, 15)
    h1, h2 = ra.residual_history[:k], rb.residual_history[:k]
    assert_all(comm, np.allclose(h1, h2, rtol=1e-6), f"{h1[:6]} vs {h2[:6]}")
    assert_all(comm, abs(ra.iterations - rb.iterations) <= 1)
    for o in (a, b, s):
        o.destroy()


def test_shipped_model_beats_cg_on_an_unseen_system(comm):
    """The shipped dcdm2d model (trained at 32^2) on a 64^2 system with obstacles it never saw:
    DCDM needs fewer iterations than plain CG (a measured margin, fixed seed)."""
    s = _grid(comm, n=64, seed=21, obstacles=3)
    a, rd, _ = _solve(comm, s, {**TORCHPC, **DCDM, "pc_torch_mode": "gathered"})
    b, rc, _ = _solve(comm, s, {"ksp_type": "cg", "pc_type": "none",
                                "ksp_norm_type": "unpreconditioned"})
    assert_all(comm, rd.converged and rd.true_residual <= 1.01e-6, rd.summary())
    assert_all(comm, rd.iterations < 0.5 * rc.iterations, f"DCDM {rd.iterations} vs CG {rc.iterations}")
    for o in (a, b, s):
        o.destroy()


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
    with pytest.raises(InputError, match=r"small.safetensors does not match DCDMNet.*expected \(16"):
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


def test_shipped_model_is_small_and_loads():
    p = shipped_model_path("dcdm2d")
    assert p.exists() and p.stat().st_size < 1_000_000
    m = load_model("dcdm2d")
    out = m(torch.randn(2, 1, 33, 40))  # any size, odd or even
    assert out.shape == (2, 1, 33, 40) and torch.isfinite(out).all()
