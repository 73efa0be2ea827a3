"""hybridsolve datagen: datasets, verification, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, ROOT, assert_all, run_cli
from hybridsolve import get_family
from hybridsolve.datagen import DatagenConfig, load, run
from hybridsolve.errors import InputError
from hybridsolve.stack import MPI


@pytest.fixture
def shared_dir(tmp_path, comm):
    """One folder for all ranks (each pytest process has its own tmp_path)."""
    return Path(comm.bcast(str(tmp_path), root=0))


def _check_dataset(path, family, n, count, tol, fallbacks=0, **opts):
    with load(path) as ds:
        d = ds.read()
    fam = get_family(family, n, count, d["provenance"]["identity"]["seed"], **opts)
    assert d["inputs"].shape == (count, *fam.param_shape())
    # a healthy chain needs no fallback solver; when it does, every sample's flag says so
    assert d["provenance"]["fallbacks"] == int(d["fallback"].sum()) == fallbacks, d["fallback"]
    assert len(d["solutions"]) == count and np.all(d["true_residual"] <= tol * (1 + 1e-6))
    prev = None
    for i in range(count):  # independent check of every sample against its own system
        np.testing.assert_array_equal(d["inputs"][i], fam.params(i))
        s = fam.system(i, MPI.COMM_SELF, previous=prev)
        A, b = s.to_scipy()
        x = d["solutions"][i].reshape(-1)
        if "grid_index" in d:   # a grid sample: the unknowns are these points of it
            x = x[d["grid_index"]]
        assert np.linalg.norm(b - A @ x) <= tol * (1 + 1e-6) * np.linalg.norm(b)
        if fam.sequential:
            if prev is not None:
                prev.destroy()
            prev = s.A.createVecRight()
            prev.getArray()[:] = x[s.canonical]
        s.destroy()
    return d


@pytest.mark.parametrize("family,n,opts", [
    ("darcy", 12, {"discretization": "grid"}), ("darcy", 8, {}), ("poisson", 8, {}),
    ("thermal", 4, {}), ("helmholtz", 24, {}), ("heat", 8, {}), ("grid", 6, {"dim": 3}),
    ("grid", 8, {"operator": "matfree", "obstacles": 1}), ("heat", 8, {"operator": "matfree"}),
])
def test_datagen_every_family(family, n, opts, shared_dir, comm):
    out = shared_dir / f"{family}.h5"
    cfg = DatagenConfig(family=family, n=n, count=6, out=str(out), tol=1e-8, options=opts)
    summary = run(cfg, comm, progress=False)
    assert summary["status"] == "complete"
    if comm.rank == 0:
        d = _check_dataset(out, family, n, 6, 1e-8, **opts)
        assert d["provenance"]["identity"]["family"] == family
        assert not Path(str(out) + ".parts").exists()
    comm.Barrier()
    # rerunning the same command finds the dataset complete
    assert run(cfg, comm, progress=False)["status"] == "already complete"


def test_datagen_domain_mode_and_solvers(shared_dir, comm):
    for solver, mode in (("gcrodr", "domain"), ("rcg", "data"), ("gmres", "domain")):
        out = shared_dir / f"d_{solver}.h5"
        cfg = DatagenConfig(family="darcy", n=12, count=5, out=str(out), mode=mode, solver=solver,
                            options={"discretization": "grid"},
                            petsc={"ksp_gcrodr_m": 20, "ksp_gcrodr_k": 5})
        s = run(cfg, comm, progress=False)
        assert s["solver"] == solver and s["max_true_residual"] <= 1e-8 * (1 + 1e-6)
        if comm.rank == 0:
            _check_dataset(out, "darcy", 12, 5, 1e-8, discretization="grid")
        comm.Barrier()


@pytest.mark.parametrize("kw,match", [
    ({"tol": 0.0}, "tolerance"), ({"tol": -1e-3}, "tolerance"), ({"count": 0}, "count"),
    ({"order": "zigzag"}, "ordering"), ({"solver": "magic"}, "solver"),
    ({"solver": "gcrdr"}, "did you mean 'gcrodr'"), ({"out": "x.txt"}, ".h5"),
    ({"solver": "gcrodr", "family": "helmholtz", "petsc": {"ksp_gcrodr_m": 10,
                                                           "ksp_gcrodr_k": 10}}, "GCRO-DR"),
])
def test_datagen_bad_input(kw, match, shared_dir, comm):
    base = dict(family="darcy", n=8, count=3, out=str(shared_dir / "b.h5"))
    base.update(kw)
    with pytest.raises(InputError, match=match):
        run(DatagenConfig(**base), comm, progress=False)


def test_dataset_from_another_configuration_is_refused(shared_dir, comm):
    out = str(shared_dir / "c.h5")
    run(DatagenConfig(family="darcy", n=8, count=3, out=out), comm, progress=False)
    with pytest.raises(InputError, match="another configuration"):
        run(DatagenConfig(family="darcy", n=8, count=4, out=out), comm, progress=False)
    parts = Path(out.replace("c.h5", "p.h5") + ".parts")
    if comm.rank == 0:
        parts.mkdir()
        (parts / "config.json").write_text('{"digest": "0000", "identity": {"n": 99}}')
    comm.Barrier()
    with pytest.raises(InputError, match="another configuration"):
        run(DatagenConfig(family="darcy", n=8, count=3, out=str(parts)[:-6]), comm, progress=False)


@pytest.mark.parametrize("solver", ["cg", "pcg", "rcg", "ssor-pcg"])
def test_spd_only_solver_on_indefinite_family_is_refused(solver, shared_dir, comm):
    with pytest.raises(InputError, match="SPD"):
        run(DatagenConfig(family="helmholtz", n=8, count=2, out=str(shared_dir / "h.h5"),
                          solver=solver), comm, progress=False)


@pytest.mark.parametrize("solver,family,opts,method", [
    ("pcg", "darcy", {"discretization": "grid"}, "cg+twolevelpc"),   # one pattern: two-level PC kept
    ("pcg", "darcy", {}, "cg+twolevelpc"),
    ("ssor-pcg", "poisson", {}, "cg+sor"),                      # the method fixes its PC
    ("gmres", "helmholtz", {}, "gmres+"),
    ("direct", "darcy", {"discretization": "grid"}, "preonly+cholesky"),   # SPD: Cholesky
    ("direct", "helmholtz", {}, "preonly+lu"),
])
def test_registry_methods_as_datagen_solvers(solver, family, opts, method, shared_dir, comm):
    from hybridsolve.solvers.registry import method_names

    assert solver in method_names()
    out = shared_dir / f"m_{solver}.h5"
    s = run(DatagenConfig(family=family, n=8, count=4, out=str(out), solver=solver, options=opts),
            comm, progress=False)
    assert s["solver"] == solver and s["fallbacks"] == 0
    if comm.rank == 0:
        d = _check_dataset(out, family, 8, 4, 1e-8, **opts)
        assert d["provenance"]["method"].startswith(method), d["provenance"]["method"]
    comm.Barrier()


def test_auto_trial_and_its_choice_reach_summary_and_provenance(shared_dir, comm):
    """auto on a changing SPD matrix tries three PCs on the first samples; the summary and the
    provenance name the one kept, its options and every candidate's trial time."""
    out = shared_dir / "trial.h5"
    s = run(DatagenConfig(family="darcy", n=12, count=24, out=str(out),   # 9 trial samples per rank
                          options={"discretization": "grid"}), comm, progress=False)
    assert set(s["trial"]) == {"cg+twolevelpc", "cg+gamg", "cg+icc"}, s["trial"]
    assert s["method"] == min(s["trial"], key=s["trial"].get) and s["fallbacks"] == 0
    assert s["pattern_changes"] == 0     # every system refilled the chain's one Mat
    if comm.rank == 0:
        prov = load(out).provenance
        assert prov["trial"] == s["trial"] and prov["method"] == s["method"]
        pc = prov["solver_options"]["pc_type"]
        assert s["method"].endswith({"python": "twolevelpc"}.get(pc, pc)), (s["method"], pc)
    comm.Barrier()


def test_solver_names_are_auto_plus_the_registry():
    from hybridsolve.datagen import solver_names
    from hybridsolve.solvers.registry import method_names

    assert solver_names() == ["auto", *method_names()]


@pytest.mark.parametrize("petsc,given,expect", [
    ({}, {}, "GCRO-DR(m=40, k=20)"),                                    # GCRODR's own defaults
    ({"ksp_gcrodr_k": 10}, {}, "GCRO-DR(m=40, k=10)"),                  # DatagenConfig.petsc
    ({"ksp_gcrodr_k": 10}, {"datagen_ksp_gcrodr_m": "30"}, "GCRO-DR(m=30, k=10)"),  # -datagen_...
    ({"ksp_gcrodr_k": 10}, {"datagen_ksp_gcrodr_k": "6"}, "GCRO-DR(m=40, k=6)"),    # command wins
])
def test_gcrodr_settings_reach_the_ksp(petsc, given, expect, shared_dir, comm):
    """What the chain's GCRODR KSP itself read (its description, in the provenance)."""
    from hybridsolve.stack import PETSc

    out = shared_dir / "gk.h5"
    db = PETSc.Options()
    for k, v in given.items():
        db.setValue(k, v)
    try:
        s = run(DatagenConfig(family="helmholtz", n=8, count=3, out=str(out), solver="gcrodr",
                              petsc=petsc), comm, progress=False)
    finally:
        for k in given:
            db.delValue(k)
    assert s["solver"] == "gcrodr" and s["max_true_residual"] <= 1e-8 * (1 + 1e-6)
    if comm.rank == 0:
        prov = load(out)["provenance"]
        assert prov["ksp"].startswith(expect), prov["ksp"]
        assert prov["method"] == "gcrodr+ilu"
    comm.Barrier()


def test_datagen_config_has_no_solver_specific_fields():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DatagenConfig)}
    assert not fields & {"gcrodr_m", "gcrodr_k"}
    with pytest.raises(TypeError):
        DatagenConfig(family="darcy", n=8, count=3, out="x.h5", gcrodr_m=40)


def test_resume_identity_is_unchanged():
    """A parts folder or dataset written before datagen became a package (and before solver
    settings became PETSc options) still resumes: the identity and its digest are the same
    (digests computed with that code)."""
    assert DatagenConfig(family="darcy", n=8, count=3, out="x.h5").digest() == "9b4c91e7023b71af"
    cfg = DatagenConfig(family="helmholtz", n=16, count=8, out="y.h5", options={"alpha": 2.5},
                        tol=1e-7, seed=3, solver="gcrodr", petsc={"ksp_gcrodr_k": 10})
    assert cfg.digest() == "2fe3203c7f6a8d33"


def test_fallback_is_counted_and_flagged(shared_dir, comm, capfd):
    """A chain solver that cannot reach the tolerance (diverging Richardson, 3 iterations): every
    sample is finished by the fallback solver (a direct solve), from zero, and says so: summary,
    per-sample flags, provenance and the progress line."""
    out = shared_dir / "fb.h5"
    s = run(DatagenConfig(family="helmholtz", n=8, count=4, out=str(out), solver="gmres",
                          petsc={"ksp_type": "richardson", "ksp_richardson_scale": 10.0,
                                 "ksp_pc_side": "left", "pc_type": "none", "ksp_max_it": 3}),
            comm, progress=True)
    assert s["fallbacks"] == 4 and s["max_true_residual"] <= 1e-8 * (1 + 1e-6)
    err = capfd.readouterr().err
    if comm.rank == 0:
        assert "4/4 samples (100%), 4 finished by the fallback solver" in err, err
        d = _check_dataset(out, "helmholtz", 8, 4, 1e-8, fallbacks=4)
        assert d["fallback"].tolist() == [1, 1, 1, 1]
        assert "LU" in d["provenance"]["fallback_solver"]
    comm.Barrier()


@pytest.mark.serial
@pytest.mark.parametrize("victim", ["rank", "all"])
def test_kill_minus_9_then_resume(victim, tmp_path):
    """Kill a datagen run mid-way (one rank, or every process) and rerun the same command."""
    out = tmp_path / "k.h5"
    args = ["datagen", "--family", "darcy", "--n", "40", "--count", "120", "--opt",
            "discretization=grid", "--out", str(out), "--quiet", "--solver", "gcrodr"]
    cmd = [str(BIN / "mpiexec"), "-n", "2", sys.executable, "-m", "hybridsolve", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    parts = Path(str(out) + ".parts")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("s*.part"))) < 20:
        time.sleep(0.05)
    done_before = len(list(parts.glob("s*.part")))
    assert 0 < done_before < 120, "the run finished before it could be killed: make it bigger"
    if victim == "rank":
        ranks = [int(p) for p in subprocess.run(["pgrep", "-f", f"hybridsolve datagen.*{out}"],
                                                capture_output=True, text=True).stdout.split()
                 if int(p) != proc.pid]
        pythons = [p for p in ranks if "python" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="ignore")]
        os.kill(pythons[-1], signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    p = run_cli(args, np_=2, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "resumed" in p.stdout
    resumed = int(p.stdout.split("resumed ")[1].split()[0])
    assert resumed >= done_before - 2  # parts written after our count are resumed too
    d = _check_dataset(out, "darcy", 40, 120, 1e-8, discretization="grid")
    assert sorted(d["chain_position"].tolist()) == list(range(120))  # each sample exactly once
    assert not list(tmp_path.glob(".k.h5.tmp*"))


@pytest.mark.serial
def test_datagen_cli_under_mpiexec(tmp_path):
    out = tmp_path / "cli.h5"
    p = run_cli(["datagen", "--family", "helmholtz", "--n", "16", "--count", "8", "--out", str(out),
                 "--tol", "1e-7", "-datagen_pc_type", "jacobi"], np_=2)
    assert p.returncode == 0, p.stderr
    assert "8 samples of helmholtz" in p.stdout and "solver gcrodr" in p.stdout
    prov = load(out)["provenance"]
    assert prov["ranks"] == 2 and prov["solver_options"]["pc_type"] == "jacobi"
    assert prov["method"] == "gcrodr+jacobi"
    p = run_cli(["datagen", "--family", "darcy", "--n", "8", "--count", "3", "--out", str(out)], np_=2)
    assert p.returncode == 2 and "another configuration" in p.stderr


@pytest.mark.serial
@pytest.mark.parametrize("family,n,opts", [("heat", 8, {}), ("poisson", 8, {}),
                                           ("darcy", 12, {"discretization": "grid"})])
def test_interrupted_then_resumed_in_process(family, n, opts, tmp_path, monkeypatch):
    """An exception after a few samples (a stand-in for a kill), then the same call again:
    sequential (heat), fixed-matrix (poisson) and trial-selecting (darcy auto) chains resume."""
    from hybridsolve import datagen

    out = tmp_path / "r.h5"
    cfg = dict(family=family, n=n, count=10, out=str(out), options=opts)
    real_write, calls = datagen.Parts.write, {"n": 0}

    def flaky(self, index, x, inp, **fields):
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        real_write(self, index, x, inp, **fields)

    monkeypatch.setattr(datagen.Parts, "write", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    monkeypatch.setattr(datagen.Parts, "write", real_write)
    s = run(DatagenConfig(**cfg), MPI.COMM_SELF, progress=False)
    assert s["resumed"] == 4 and s["status"] == "complete"
    _check_dataset(out, family, n, 10, 1e-8, **opts)
    if family == "darcy":
        assert load(out)["provenance"]["method"] in ("cg+twolevelpc", "cg+gamg", "cg+icc")


# --- h5py: loaded only by the dataset module, on the first HDF5 read or write --------------------
_MODULES = ["hybridsolve.datagen.config", "hybridsolve.datagen.chain", "hybridsolve.datagen.store",
            "hybridsolve.datagen.dataset", "hybridsolve.datagen.run", "hybridsolve.datagen"]


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=240)


def test_only_the_dataset_module_loads_h5py():
    import re

    pattern = re.compile(r"^\s*(import h5py|from h5py|.*\bimport_h5py\()", re.M)
    src = ROOT / "hybridsolve" / "datagen"
    loaders = [p.name for p in sorted(src.glob("*.py")) if pattern.search(p.read_text())]
    assert loaders == ["dataset.py"]


@pytest.mark.serial   # starts its own python process (under mpiexec it would inherit the PMI)
def test_importing_datagen_loads_no_h5py_and_writing_does(tmp_path):
    code = f"""
import importlib, sys
for name in {_MODULES!r}:
    importlib.import_module(name)
    assert "h5py" not in sys.modules, name
from hybridsolve.datagen import DatagenConfig, load, run
run(DatagenConfig(family="darcy", n=4, count=2, out="t.h5"), progress=False)
assert "h5py" in sys.modules and load("t.h5")["solutions"].shape[0] == 2
print("ok")
"""
    r = _python(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


@pytest.mark.serial
@pytest.mark.skipif(not __import__("hybridsolve.stack").stack.have_dolfinx(), reason="no DOLFINx")
def test_datagen_after_dolfinx_and_a_clear_error_after_a_plain_h5py_import(tmp_path):
    """DOLFINx first (a FEniCSx script): datagen writes and reads its dataset. A plain
    ``import h5py`` after ``dolfinx.fem.petsc`` fails at import ("Not a datatype") and poisons
    later imports; datagen then refuses before any work, in one line that says what to do."""
    head = "from mpi4py import MPI\nimport dolfinx.fem.petsc\n"
    code = head + """
from hybridsolve.datagen import DatagenConfig, load, run
run(DatagenConfig(family="darcy", n=4, count=2, out="t.h5"), progress=False)
print(load("t.h5")["solutions"].shape)
"""
    r = _python(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "(2, 5, 5)", r.stdout + r.stderr
    code = head + """
import warnings
warnings.simplefilter("ignore")
try:
    import h5py
except ValueError as err:
    print("plain import failed:", err)
from hybridsolve.datagen import DatagenConfig, run
from hybridsolve.errors import InputError
try:
    run(DatagenConfig(family="darcy", n=4, count=2, out="t2.h5"), progress=False)
except InputError as err:
    print(err)
"""
    r = _python(code, tmp_path)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 2, r.stdout + r.stderr
    assert "Not a datatype" in lines[0]
    assert lines[1].startswith("datagen: cannot load h5py") and "before dolfinx.fem.petsc" in lines[1]
    assert not (tmp_path / "t2.h5.parts").exists() and not (tmp_path / "t2.h5").exists()
