"""Bandit-tuned SOR: learners (statistics, seeding, checkpoints, bad input), references, and the
tuners on PETSc (omega really applied, all ranks agree, options tuner, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import assert_all, run_cli
from hybridsolve.errors import CollectiveError, InputError
from hybridsolve.problems import get_family
from hybridsolve.solvers.petsc import KrylovSolver
from hybridsolve.stack import MPI, PETSc
from hybridsolve.tuning import (IGW, BinnedTsallisINF, ChebCB, OptionsTuner, SORTuner,
                                TsallisINF, learner_from_state, load_learner, make_learner)
from hybridsolve.tuning.references import (golden_section, jacobi_spectral_radius,
                                           sor_iterations, young_omega)

ARMS = np.linspace(1.0, 1.9, 10)


def _learners(seed=0):
    return [TsallisINF(ARMS, seed=seed), BinnedTsallisINF(ARMS, (0.0, 1.0), bins=4, seed=seed),
            ChebCB(ARMS, (0.0, 1.0), seed=seed), IGW(ARMS, seed=seed)]


def _play(learner, rounds, cost_fn, rng):
    for _ in range(rounds):
        ctx = float(rng.uniform())
        w = learner.choose(ctx)
        learner.observe(cost_fn(int(np.flatnonzero(ARMS == w)[0]), ctx, rng))


# -- learners on synthetic bandits ----------------------------------------------------------
def _stochastic(i, ctx, rng):
    """Arm 6 is best (mean 30); the others cost 45..120, Poisson noise."""
    means = 45 + 75 * np.abs(np.arange(10) - 6) / 6
    means[6] = 30
    return rng.poisson(means[i])


def _contextual(i, ctx, rng):
    """The best arm moves with the context: 2 for ctx < 0.5, 8 above; Poisson noise."""
    best = 2 if ctx < 0.5 else 8
    return rng.poisson(20 + 15 * abs(i - best))


@pytest.mark.parametrize("cls", [TsallisINF, IGW, BinnedTsallisINF, ChebCB])
def test_learner_finds_the_best_arm_of_a_stochastic_bandit(cls):
    kw = {"context_range": (0.0, 1.0)} if cls.contextual else {}
    learner = cls(ARMS, seed=3, **kw)
    _play(learner, 3000, _stochastic, np.random.default_rng(11))
    last = np.asarray(learner.history["index"][-500:])
    # uniform play would pick arm 6 10% of the time; a learner that found it, most of the time
    assert np.mean(last == 6) > 0.6, f"{cls.__name__}: best arm share {np.mean(last == 6):.2f}"
    means = 45 + 75 * np.abs(np.arange(10) - 6) / 6
    means[6] = 30
    regret = learner.costs().sum() - 30 * 3000
    uniform = (means.mean() - 30) * 3000  # the regret of playing at random
    assert regret < 0.4 * uniform, f"{cls.__name__}: regret {regret:.0f} vs uniform {uniform:.0f}"


@pytest.mark.parametrize("cls", [BinnedTsallisINF, ChebCB])
def test_contextual_learner_follows_the_context(cls):
    learner = cls(ARMS, (0.0, 1.0), seed=5)
    _play(learner, 3000, _contextual, np.random.default_rng(2))
    idx = np.asarray(learner.history["index"][-600:])
    ctx = np.asarray(learner.history["context"][-600:])
    best = np.where(ctx < 0.5, 2, 8)
    right = np.mean(np.abs(idx - best) <= 1)
    assert right > 0.6, f"{cls.__name__}: near-best share {right:.2f}"
    # a non-contextual learner cannot do this: it must settle for one compromise arm
    flat = TsallisINF(ARMS, seed=5)
    _play(flat, 3000, _contextual, np.random.default_rng(2))
    assert learner.costs()[-1000:].mean() < 0.8 * flat.costs()[-1000:].mean()


@pytest.mark.parametrize("k", range(4))
def test_same_seed_same_choices_and_another_seed_differs(k):
    a, b, c = _learners(0)[k], _learners(0)[k], _learners(1)[k]
    for L in (a, b, c):
        _play(L, 200, _stochastic, np.random.default_rng(4))
    assert a.history == b.history
    assert a.history["index"] != c.history["index"]


@pytest.mark.parametrize("k", range(4))
def test_checkpoint_resume_gives_the_same_choices(k, tmp_path):
    full, part = _learners(7)[k], _learners(7)[k]
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    _play(full, 400, _stochastic, rng_a)
    _play(part, 150, _stochastic, rng_b)
    path = part.save(tmp_path / "learner.json")
    del part
    resumed = load_learner(path)
    _play(resumed, 250, _stochastic, rng_b)
    assert resumed.history == full.history
    # a pending choice survives the round trip too
    w = full.choose(0.3)
    again = learner_from_state(json.loads(json.dumps(full.state_dict())))
    again.observe(10)
    full.observe(10)
    assert again.history == full.history and w == again.arms[again.last_index]


def test_learner_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        TsallisINF([])
    with pytest.raises(InputError, match="NaN"):
        TsallisINF([1.0, np.nan])
    with pytest.raises(InputError, match="context_range"):
        ChebCB(ARMS)
    cb = ChebCB(ARMS, (0.0, 1.0))
    with pytest.raises(InputError, match="outside the declared range"):
        cb.choose(1.5)
    with pytest.raises(InputError, match="needs the instance's context"):
        cb.choose()
    t = TsallisINF(ARMS)
    with pytest.raises(InputError, match="without a choose"):
        t.observe(3)
    t.choose()
    with pytest.raises(InputError, match="called twice"):
        t.choose()
    for bad in (-1, np.nan, np.inf, "many"):
        with pytest.raises(InputError, match="cost"):
            t.observe(bad)
    t.observe(3)  # still usable after the rejected costs
    with pytest.raises(InputError, match="unknown learner"):
        make_learner("ucb")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json.*not valid JSON"):
        load_learner(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a hybridsolve learner"):
        load_learner(bad)


# -- references -----------------------------------------------------------------------------
def _laplacian(m, shift=0.0):
    T = sp.diags([-1.0, 4.0 + shift, -1.0], [-1, 0, 1], (m, m))
    return (sp.kron(sp.eye(m), T) + sp.kron(sp.diags([-1.0, -1.0], [-1, 1], (m, m)), sp.eye(m))).tocsr()


def test_sor_counter_counts_what_petsc_counts():
    A = _laplacian(10, -0.1)
    b = np.random.default_rng(0).standard_normal(100)
    M = PETSc.Mat().createAIJ(A.shape, csr=(A.indptr, A.indices, A.data), comm=MPI.COMM_SELF)
    bv = PETSc.Vec().createWithArray(b, comm=MPI.COMM_SELF)
    for w in (1.0, 1.5, 1.8, 1.95):
        s = KrylovSolver(MPI.COMM_SELF, method="sor", omega=w, rtol=1e-8, max_it=10000)
        assert s.solve(M, bv).iterations == sor_iterations(A, b, w)
        s.destroy()
    with pytest.raises(InputError, match="outside"):
        sor_iterations(A, b, 2.0)


def test_young_omega_is_near_the_best_on_a_consistently_ordered_matrix():
    A = _laplacian(12, 0.05)
    b = np.random.default_rng(1).standard_normal(144)
    w = young_omega(jacobi_spectral_radius(A))
    grid = np.linspace(1.0, 1.98, 50)
    best = min(sor_iterations(A, b, g) for g in grid)
    assert sor_iterations(A, b, w) <= 1.05 * best
    # and golden section finds about as good a value by measuring alone
    wg, cg, om, cs = golden_section(lambda x: sor_iterations(A, b, x), 1.0, 1.98, evaluations=14)
    assert cg <= 1.1 * best and len(om) == 14


# -- tuners on PETSc --------------------------------------------------------------------------
@pytest.mark.parametrize("operator", ["aij", "matfree"])
@pytest.mark.parametrize("method", ["ssor-pcg", "sor"])
def test_sor_tuner_applies_its_omega(comm, method, operator):
    """The omega the learner chose is the omega PETSc used: same iterations as a fresh solver."""
    fam = get_family("grid", 20, count=1, seed=0, operator=operator)
    s = fam.system(0, comm)
    opts = {"ksp_max_it": 20000}
    tuner = SORTuner(KrylovSolver(comm, method=method, rtol=1e-8, options=opts), "fixed",
                     omegas=[1.0])
    for w in (1.0, 1.7, 1.3):
        tuner.learner.arms[0] = w
        r = tuner.solve(s.A, s.b)
        fresh = KrylovSolver(comm, method=method, rtol=1e-8, omega=w, options=opts)
        ref = fresh.solve(s.A, s.b)
        assert_all(comm, r.iterations == ref.iterations and r.info["omega"] == w,
                   f"omega {w}: tuner {r.iterations} its, fresh solver {ref.iterations}")
        assert_all(comm, r.true_residual <= 1e-8 * 1.01)
        fresh.destroy()
        r.x.destroy()
        ref.x.destroy()
    s.destroy()


def test_sor_tuner_every_rank_uses_rank0s_omega_and_learns(comm):
    fam = get_family("heat", 12, count=60, seed=0, phase=0.0)
    tuner = SORTuner(KrylovSolver(comm, method="ssor-pcg", rtol=1e-8), "chebcb",
                     context_range=(0.0, 10.0), seed=comm.rank)  # other ranks' seeds are unused
    from hybridsolve.tuning.petsc import run_tuned_sequence

    results = run_tuned_sequence(fam, tuner, context="meta:kappa")
    values = comm.allgather(list(tuner.values))
    assert_all(comm, all(v == values[0] for v in values), "ranks used different omegas")
    assert_all(comm, all(r.converged and r.true_residual <= 1.01e-8 for r in results))
    if comm.rank == 0:
        assert tuner.learner.t == 60 and len(set(tuner.values)) > 1
    else:
        assert tuner.learner.t == 0  # only rank 0 learns


def test_sor_tuner_bad_input(comm):
    with pytest.raises(InputError, match="outside"):
        SORTuner(KrylovSolver(comm, method="sor"), omegas=[1.0, 2.0])
    with pytest.raises(InputError, match="empty"):
        SORTuner(KrylovSolver(comm, method="sor"), omegas=[])
    with pytest.raises(InputError, match="cost"):
        SORTuner(KrylovSolver(comm, method="sor"), cost="energy")
    fam = get_family("grid", 8, count=1)
    s = fam.system(0, comm)
    t = SORTuner(KrylovSolver(comm, method="pcg", options={"pc_type": "jacobi"}), "fixed", omegas=[1.2])
    with pytest.raises(InputError, match="SOR preconditioner"):
        t.solve(s.A, s.b)
    t = SORTuner(KrylovSolver(comm, method="sor"), "chebcb", context_range=(0, 1))
    with pytest.raises(InputError, match="outside the declared range"):
        t.solve(s.A, s.b, context=3.0)
    if comm.size > 1:
        with pytest.raises(CollectiveError, match="different contexts"):
            t.solve(s.A, s.b, context=0.1 * comm.rank)
    db = PETSc.Options()
    db["tt_pc_sor_omega"] = 1.5
    try:
        with pytest.raises(InputError, match="chooses -tt_pc_sor_omega itself"):
            SORTuner(KrylovSolver(comm, prefix="tt_", method="sor"))
    finally:
        db.delValue("tt_pc_sor_omega")
    s.destroy()


def test_options_tuner_sets_gcrodr_recycle_size(comm):
    fam = get_family("darcy", 12, count=12, seed=1, discretization="grid")
    solver = KrylovSolver(comm, method="gcrodr", rtol=1e-8, options={"pc_type": "jacobi"})
    tuner = OptionsTuner(solver, "ksp_gcrodr_k", [4, 8, 16], "tsallis", cost="iterations", seed=2)
    for i in range(fam.count):
        s = fam.system(i, comm)
        r = tuner.solve(s.A, s.b)
        assert_all(comm, r.converged and r.true_residual <= 1.01e-8, r.summary())
        assert_all(comm, solver.ksp.getPythonContext().k == int(r.info["ksp_gcrodr_k"]),
                   "the chosen k is not the k GCRO-DR used")
        r.x.destroy()
        s.destroy()
    assert_all(comm, len(set(tuner.values)) > 1)


@pytest.mark.serial
def test_tune_cli_writes_results_and_resumes_from_checkpoint(tmp_path):
    out, ck, png = tmp_path / "t.json", tmp_path / "ck.json", tmp_path / "t.png"
    args = ["tune", "--family", "heat", "--n", "10", "--count", "30", "--learner", "chebcb",
            "--checkpoint", str(ck), "--json", str(out), "--plot", str(png), "--quiet"]
    p = run_cli(args)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert len(data["values"]) == 30 and data["learner"]["kind"] == "chebcb"
    assert all(r["true_residual"] <= 1.01e-8 for r in data["results"])
    assert png.stat().st_size > 10_000 and load_learner(ck).t == 30
    p = run_cli(args)  # the checkpoint says the sequence is done: nothing is solved again
    assert p.returncode == 0 and "nothing left to do" in p.stdout, p.stderr
    assert load_learner(ck).t == 30
    longer = [a if a != "30" else "40" for a in args]
    p = run_cli(longer)  # heat is sequential: resuming mid-sequence is refused, not faked
    assert p.returncode == 2 and "cannot resume at system 30" in p.stderr, p.stderr
    p = run_cli(["tune", "--family", "heat", "--n", "8", "--count", "2", "--values", "1,2.5"])
    assert p.returncode == 2 and "outside (0, 2)" in p.stderr
    p = run_cli(["tune", "--family", "grid", "--n", "8", "--count", "2", "--learner", "chebcb"])
    assert p.returncode == 2 and "context_range" in p.stderr


@pytest.mark.serial
def test_tune_cli_under_mpiexec_on_a_matrix_free_operator(tmp_path):
    out = tmp_path / "t.json"
    p = run_cli(["tune", "--family", "heat", "--n", "16", "--count", "20", "--opt",
                 "operator=matfree", "--learner", "binned-tsallis", "--json", str(out),
                 "--quiet", "-ksp_converged_reason"], np_=2)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert data["ranks"] == 2 and len(data["values"]) == 20
    assert all(r["true_residual"] <= 1.01e-8 for r in data["results"])


def test_options_tuner_sets_a_preconditioner_option(comm, tmp_path):
    """A pc_ option is applied and the preconditioner rebuilt: -ksp_view shows the chosen value."""
    fam = get_family("darcy", 16, count=6, seed=2, discretization="grid")
    solver = KrylovSolver(comm, method="pcg", rtol=1e-8, options={"pc_type": "gamg"})
    tuner = OptionsTuner(solver, "pc_gamg_threshold", [0.0, 0.02, 0.08], "igw", seed=1)
    path = comm.bcast(str(tmp_path / "view.txt"), root=0)
    for i in range(fam.count):
        s = fam.system(i, comm)
        r = tuner.solve(s.A, s.b)
        viewer = PETSc.Viewer().createASCII(path, comm=comm)
        solver.ksp.view(viewer)
        viewer.destroy()
        comm.Barrier()
        text = open(path).read() if comm.rank == 0 else ""
        want = f"{r.info['pc_gamg_threshold']:g}"
        line = next((ln for ln in text.splitlines() if "Threshold for dropping" in ln), "")
        if comm.rank == 0:
            assert float(line.split("=")[1].split()[0]) == float(want), line
        assert_all(comm, r.converged and r.true_residual <= 1.01e-8)
        r.x.destroy()
        s.destroy()
