"""Learned movers (issue 16): the guarantee (blend toward the input mesh, fallback to the classical
mover, never a tangled mesh), DMM by name and by option, model files refused when corrupt or
mismatched, data-free training; serial and on 2 ranks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order first)

import dolfinx  # noqa: E402
import dolfinx.mesh  # noqa: E402

from hybridsolve.errors import InputError  # noqa: E402
from hybridsolve.movement import (MOVERS, CallableMonitor, MoveReason, RingMonitor,  # noqa: E402
                                  create_mover, register_mover)
from hybridsolve.movement.learned import LearnedMover, blend_until_untangled  # noqa: E402
from hybridsolve.movement.untangle import signed_measure  # noqa: E402
from conftest import assert_all, by_input_index, run_cli  # noqa: E402


def square(comm, n=12):
    return dolfinx.mesh.create_unit_square(comm, n, n)


BUMP = CallableMonitor(lambda x: 1 + 8 * np.exp(-((x[0] - 0.4) ** 2 + (x[1] - 0.6) ** 2) / 0.02),
                       "bump")


class _NoiseMover(LearnedMover):
    """A deliberately bad learned mover: its 'model' adds noise of size ``amp`` (times the
    cell size) to every vertex, or returns NaN."""

    method = "noise"
    default_model = "noise"

    def __init__(self, mesh, monitor=None, *, amp=0.0, nan=False, **kw):
        self.amp, self.nan = amp, nan
        super().__init__(mesh, monitor, **kw)

    def load(self, name):
        return np.random.default_rng(7)

    def predict(self, xi, cells, values):
        if self.nan:
            return np.full_like(xi, np.nan)
        h = np.sqrt(np.abs(signed_measure(cells, xi)).mean())
        rng = np.random.default_rng(7)
        return xi + self.amp * h * rng.standard_normal(xi.shape)


@pytest.fixture
def noise_mover():
    register_mover("noise", _NoiseMover)
    yield
    del MOVERS["noise"]


def test_blend_bisection_finds_the_untangled_factor():
    xi = np.array([[0, 0], [1, 0], [0, 1], [1, 1.0]])
    cells = np.array([[0, 1, 2], [1, 3, 2]])
    x = xi.copy()
    x[1] = (1.6, 1.6)                                  # folds cell 1 and cell 0 on the way
    y, t, bad = blend_until_untangled(cells, xi, x)
    assert bad > 0 and 0 < t < 1
    sign = np.sign(signed_measure(cells, xi))
    assert np.all(signed_measure(cells, y) * sign > 0)
    assert np.any(signed_measure(cells, xi + min(1, t + 1e-6) * (x - xi)) * sign <= 1e-12)


@pytest.mark.parametrize("amp, expect", [(0.05, "model"), (0.4, "blend"), (4.0, "fallback")])
def test_guarantee_blends_or_falls_back_never_tangles(comm, noise_mover, amp, expect):
    mesh = square(comm, 12)
    mover = create_mover("noise", mesh, RingMonitor(10.0, 100.0, 0.3), amp=amp)
    res = mover.move()
    assert res.moved and res.converged and res.quality["inverted"] == 0
    assert_all(comm, mover.count_inverted(mover.space.coords()) == 0, "a tangled mesh returned")
    info = res.info
    if expect == "model":
        assert res.reason == MoveReason.CONVERGED_MODEL and info["blend"] == 1.0
        assert info["model_inverted"] == 0 and "fallback" not in info
    elif expect == "blend":
        assert res.reason == MoveReason.CONVERGED_BLENDED and info["model_inverted"] > 0
        assert mover.min_blend <= info["blend"] < 1.0 and "fallback" not in info
    else:
        assert info["fallback"]["to"].startswith("monge-ampere") and info["model_inverted"] > 0
        assert res.reason == MoveReason.CONVERGED_RTOL and res.iterations > 1
        assert "min_blend" in info["fallback"]["why"]
    assert "model_time" in info


def test_garbage_output_falls_back_and_says_so(comm, noise_mover):
    mesh = square(comm, 10)
    res = create_mover("noise", mesh, RingMonitor(10.0, 100.0, 0.3), nan=True).move()
    assert res.converged and "non-finite" in res.info["fallback"]["why"]
    assert res.quality["inverted"] == 0
    # with the fallback off, a blend below min_blend is still returned, and said so
    mesh = square(comm, 10)
    res = create_mover("noise", mesh, RingMonitor(10.0, 100.0, 0.3), amp=4.0,
                       fallback="none").move()
    assert res.reason == MoveReason.CONVERGED_BLENDED and res.info["blend"] < 0.5
    assert res.quality["inverted"] == 0


def test_dmm_by_name_and_option_same_on_every_rank(comm):
    mesh = square(comm, 16)
    mover = create_mover("dmm", mesh, BUMP)
    res = mover.move()
    assert res.converged and res.method == "dmm" and res.iterations == 1
    assert res.quality["inverted"] == 0
    q0, q = res.quality_before, res.quality
    assert q["equidistribution_cv"] < 0.7 * q0["equidistribution_cv"], (q0, q)
    x_dmm = by_input_index(mesh)
    # the same by options, as a driver would select it
    opts = PETSc.Options()
    opts["mover_type"] = "dmm"
    try:
        mesh2 = square(comm, 16)
        m2 = create_mover(None, mesh2, BUMP)
        assert type(m2).__name__ == "DMMMover"
        m2.move()
    finally:
        opts.delValue("mover_type")
    assert_all(comm, np.allclose(by_input_index(mesh2), x_dmm, atol=1e-12), "option path differs")
    # rank-independent: the model runs on rank 0 with the whole mesh
    ref = _serial_dmm(16)
    assert np.allclose(x_dmm, ref, atol=1e-6)


def _serial_dmm(n):
    mesh = square(MPI.COMM_SELF, n)
    create_mover("dmm", mesh, BUMP).move()
    return by_input_index(mesh)


def test_untrained_dmm_does_less_than_the_trained_one(comm, tmp_path_factory):
    """A DMM network with random weights in place of the shipped one: the equidistribution
    gain disappears (or the guarantee steps in); the shipped one must do better."""
    import torch

    from hybridsolve.learned.dmm import DMMNet
    from hybridsolve.learned.models import load_model, save_model

    path = None
    if comm.rank == 0:
        shipped = load_model("dmm2d")
        torch.manual_seed(3)
        net = DMMNet(**{k: v for k, v in shipped.config.items() if k != "kind"})
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.3)
        path = str(tmp_path_factory.mktemp("dmm") / "noise.safetensors")
        save_model(net, path)
    path = comm.bcast(path)
    cvs = {}
    for name in ("dmm2d", path):   # the networks alone: no fallback, any blend accepted
        mesh = square(comm, 16)
        res = create_mover("dmm", mesh, BUMP, model=name, fallback="none", min_blend=0.0).move()
        assert res.quality["inverted"] == 0 and "fallback" not in res.info
        cvs[name] = res.quality["equidistribution_cv"]
    assert cvs["dmm2d"] < 0.8 * cvs[path], cvs


def test_bad_model_files_are_refused(comm, tmp_path_factory):
    d = None
    if comm.rank == 0:
        d = tmp_path_factory.mktemp("badmodels")
        (d / "junk.safetensors").write_bytes(b"not a model at all")
    d = comm.bcast(d)
    mesh = square(comm, 6)
    with pytest.raises(InputError, match="not a readable safetensors"):
        create_mover("dmm", mesh, BUMP, model=str(d / "junk.safetensors"))
    with pytest.raises(InputError, match="not a DMM network"):
        create_mover("dmm", mesh, BUMP, model="dcdm2d")
    with pytest.raises(InputError, match="does not exist"):
        create_mover("dmm", mesh, BUMP, model=str(d / "missing.safetensors"))
    with pytest.raises(InputError, match="min_blend"):
        create_mover("dmm", mesh, BUMP, min_blend=2.0)


def test_dmm_training_lowers_the_monge_ampere_residual(tmp_path):
    """Data-free training for a few steps on one core: the residual loss falls, the file
    carries its configuration and loads as a mover's model."""
    from hybridsolve.learned.dmm import DMMTrainConfig, train_dmm

    if MPI.COMM_WORLD.size > 1:
        pytest.skip("training runs on one rank")
    cfg = DMMTrainConfig(steps=300, batch=4, points=128, boundary_points=32, width=32, basis=16,
                         sensors=8, lr=3e-3, out=str(tmp_path / "dmm.safetensors"))
    lines = []
    s = train_dmm(cfg, log=lines.append, every=50)
    v = s["validation"]       # the Monge-Ampere residual on held-out monitors
    assert v["after"] < 0.85 * v["before"] and s["skipped"] == 0, v
    assert any("step 300/300" in line for line in lines)
    mesh = square(MPI.COMM_SELF, 8)
    res = create_mover("dmm", mesh, BUMP, model=s["out"]).move()
    assert res.quality["inverted"] == 0


@pytest.mark.serial
def test_cli_move_with_a_learned_mover(tmp_path):
    out = run_cli(["move", "--square", "12", "--monitor", "ring", "--mover", "dmm",
                   "--json", str(tmp_path / "r.json")])
    assert out.returncode == 0, out.stderr
    assert "dmm" in out.stdout and "model dmm2d" in out.stdout
    bad = run_cli(["move", "--square", "12", "--mover", "monge-ampere", "--model", "dmm2d"])
    assert bad.returncode != 0 and "--model is for learned movers" in bad.stderr + bad.stdout


# --- UM2N and its data store ---------------------------------------------------------------------
def _slot_front():
    return CallableMonitor(lambda x: 1 + 8 * np.exp(-100 * (x[0] + 0.2 * np.sin(3 * x[1]) - 1.2) ** 2),
                           "slot-front")


def test_um2n_moves_an_unseen_domain(comm):
    """The shipped UM2N on a domain it was not trained on (the slot): returned untangled, the
    same on 1 and 2 ranks, sigma/mu well below the initial mesh's and below an untrained
    network's (whose output is taken as it comes: no fallback)."""
    import torch

    from hybridsolve.learned.models import load_model, save_model
    from hybridsolve.learned.um2n import UM2NNet
    from hybridsolve.problems.fem import gmsh_domain

    def run(c, model, **kw):
        mesh = gmsh_domain(c, "slot", 16)
        res = create_mover("um2n", mesh, _slot_front(), model=model, **kw).move()
        assert res.quality["inverted"] == 0
        return res, by_input_index(mesh)

    res, x = run(comm, "um2n2d")
    assert res.converged and res.method == "um2n" and "model_time" in res.info
    _, x1 = run(MPI.COMM_SELF, "um2n2d")
    assert np.allclose(x, x1, atol=1e-5)            # the model sees the whole mesh on rank 0
    cv0, cv = res.quality_before["equidistribution_cv"], res.quality["equidistribution_cv"]
    assert cv < 0.7 * cv0, (cv0, cv)
    path = None
    if comm.rank == 0:
        torch.manual_seed(5)
        net = UM2NNet(**{k: v for k, v in load_model("um2n2d").config.items() if k != "kind"})
        path = str(Path(tempfile.mkdtemp()) / "untrained.safetensors")
        save_model(net, path)
    path = comm.bcast(path)
    res_u, _ = run(comm, path, fallback="none", min_blend=0.0)
    assert cv < 0.8 * res_u.quality["equidistribution_cv"], (cv, res_u.quality)


def test_um2n_model_files_are_checked(comm):
    mesh = square(comm, 6)
    with pytest.raises(InputError, match="not a UM2N network"):
        create_mover("um2n", mesh, BUMP, model="dmm2d")
    with pytest.raises(InputError, match="not a DMM network"):
        create_mover("dmm", mesh, BUMP, model="um2n2d")


@pytest.mark.serial
def test_mover_data_store_resumes_after_a_kill_and_matches_two_ranks(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import BIN, ROOT
    from hybridsolve.movement.data import load_move_data

    d = tmp_path / "md"
    args = ["train", "um2n", "--data", str(d), "--samples", "6", "--epochs", "0", "--out",
            str(tmp_path / "m.safetensors")]
    cmd = [str(BIN / "python"), "-m", "hybridsolve", *args]
    p = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while len(list(d.glob("sample_*.npz"))) < 2 and time.time() - t0 < 180 and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    n_before = len(list(d.glob("sample_*.npz")))
    assert 2 <= n_before
    out = run_cli(args)
    assert out.returncode == 0, out.stderr
    assert f"{6 - n_before} made, {n_before} kept from an earlier run" in out.stdout
    assert not list(d.glob("*.tmp*"))
    full = load_move_data(d, only_ok=False)
    assert [s["index"] for s in full] == list(range(6))
    # the same samples made on 2 ranks
    d2 = tmp_path / "md2"
    out = run_cli(["train", "um2n", "--data", str(d2), "--samples", "6", "--epochs", "0",
                   "--out", str(tmp_path / "m.safetensors")], np_=2)
    assert out.returncode == 0, out.stderr
    two = load_move_data(d2, only_ok=False)
    for a, b in zip(full, two):
        assert a["spec"] == b["spec"] and np.allclose(a["x"], b["x"], atol=1e-10)
    # another configuration in the same directory is refused
    bad = run_cli(["train", "um2n", "--data", str(d), "--samples", "6", "--seed", "3",
                   "--epochs", "0", "--out", str(tmp_path / "m.safetensors")])
    assert bad.returncode != 0 and "another configuration" in bad.stderr + bad.stdout
    # training refuses several ranks, and trains on one
    bad = run_cli(["train", "um2n", "--data", str(d), "--samples", "6", "--epochs", "1",
                   "--out", str(tmp_path / "m.safetensors")], np_=2)
    assert bad.returncode != 0 and "trains on one rank" in bad.stderr + bad.stdout


def test_mover_data_with_gradient_and_hessian_monitors(tmp_path):
    """Field monitors (the random field's P1 interpolant, gradient or Hessian recovered and
    re-evaluated on the moved mesh) make valid samples that say which monitor they used."""
    from hybridsolve.movement.data import MoveDataConfig, generate_move_data, load_move_data

    cfg = MoveDataConfig(samples=3, n_min=8, n_max=10, monitors=("gradient", "hessian"),
                         out=str(tmp_path / "md"))
    s = generate_move_data(cfg, MPI.COMM_SELF, log=lambda m: None)
    assert s["made"] == 3 and s["kept"] == 0
    data = load_move_data(tmp_path / "md", only_ok=False)
    assert {d["spec"]["monitor_type"] for d in data} <= {"gradient", "hessian"}
    for d in data:
        assert d["x"].shape == d["xi"].shape and np.all(np.isfinite(d["x"]))
        if bool(d["ok"]):
            sign = np.sign(signed_measure(d["cells"], d["xi"]))
            assert np.all(signed_measure(d["cells"], d["x"]) * sign > 0)   # labels untangled
    with pytest.raises(InputError, match="another configuration"):
        generate_move_data(MoveDataConfig(samples=3, out=str(tmp_path / "md")), MPI.COMM_SELF,
                           log=lambda m: None)
