"""The command line under mpiexec, bad input, and ending a job cleanly when one rank fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import BIN, ROOT, run_cli

pytestmark = pytest.mark.serial  # each test starts its own (MPI) processes


def test_problems_lists_every_family():
    p = run_cli(["problems"])
    assert p.returncode == 0, p.stderr
    for name in ("darcy", "poisson", "thermal", "helmholtz", "heat", "grid"):
        assert f"\n{name}" in "\n" + p.stdout


def test_solve_under_mpiexec_with_petsc_options(tmp_path):
    out = tmp_path / "r.json"
    png = tmp_path / "conv.png"
    p = run_cli(["solve", "--family", "darcy", "--n", "24", "--count", "3", "--rtol", "1e-9",
                 "--json", str(out), "--plot", str(png), "-ksp_monitor", "-ksp_converged_reason",
                 "-pc_type", "jacobi"], np_=2)
    assert p.returncode == 0, p.stderr
    assert "CONVERGED_RTOL" in p.stdout and "KSP Residual norm" in p.stdout
    data = json.loads(out.read_text())
    assert data["ranks"] == 2 and len(data["results"]) == 3
    for r in data["results"]:
        assert r["method"] == "cg+jacobi" and r["residual_norm"] == "unpreconditioned"
        assert r["true_residual"] < 1e-8 and r["iterations"] == len(r["residual_history"]) - 1
    assert png.stat().st_size > 1000


def test_prefix_and_sequential_family(tmp_path):
    out = tmp_path / "r.json"
    p = run_cli(["solve", "--family", "heat", "--n", "20", "--count", "4", "--prefix", "h_",
                 "--json", str(out), "-h_ksp_type", "gmres", "-h_pc_type", "sor"], np_=2)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())["results"]
    assert all(r["method"] == "gmres+sor" and r["reason"] > 0 for r in res)


def test_same_answer_on_one_and_two_ranks(tmp_path):
    runs = []
    for np_ in (1, 2):
        out = tmp_path / f"r{np_}.json"
        p = run_cli(["solve", "--family", "poisson", "--n", "16", "--count", "2", "--json", str(out),
                     "-ksp_type", "cg", "-pc_type", "jacobi", "-ksp_rtol", "1e-10"], np_=np_)
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(out.read_text())["results"])
    for a, b in zip(*runs):
        assert abs(a["iterations"] - b["iterations"]) <= 1
        assert a["reason_name"] == b["reason_name"] == "CONVERGED_RTOL"


@pytest.mark.parametrize("args,message", [
    (["--family", "nosuch", "--n", "8"], "unknown problem family 'nosuch'"),
    (["--family", "darcy", "--n", "0"], "size n must be at least"),
    (["--family", "darcy", "--n", "-4"], "size n must be at least"),
    (["--family", "darcy", "--n", "8", "--count", "-1"], "count must be non-negative"),
    (["--family", "darcy", "--n", "8", "--opt", "colour=red"], "unknown option"),
    (["--family", "darcy", "--n", "8", "stray"], "unexpected argument 'stray'"),
])
def test_bad_input_is_a_clear_error_on_every_rank_without_hang(args, message):
    p = run_cli(["solve", *args], np_=2, timeout=120)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_nan_in_parameter_file(tmp_path):
    params = np.ones((2, 9, 9))
    params[1, 2, 2] = np.nan
    f = tmp_path / "p.npy"
    np.save(f, params)
    p = run_cli(["solve", "--family", "darcy", "--n", "8", "--count", "2", "--params", str(f)],
                np_=2, timeout=120)
    assert p.returncode != 0 and "NaN" in p.stderr, p.stderr
    np.save(f, np.ones((2, 9, 9)))
    p = run_cli(["solve", "--family", "darcy", "--n", "8", "--count", "2", "--params", str(f)], np_=2)
    assert p.returncode == 0, p.stderr
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    p = run_cli(["solve", "--family", "darcy", "--n", "8", "--params", str(tmp_path / "bad.npy")])
    assert p.returncode != 0 and "cannot read parameter file" in p.stderr


def test_unknown_petsc_option_warns_or_fails_when_strict():
    args = ["solve", "--family", "grid", "--n", "8", "-ksp_tyep", "cg"]
    p = run_cli(args, np_=2)
    assert p.returncode == 0
    assert "never used: -ksp_tyep" in p.stderr
    p = run_cli([*args, "--strict-options"], np_=2, timeout=120)
    assert p.returncode != 0 and "never used: -ksp_tyep" in p.stderr


def test_demo_runs_and_writes_its_plot(tmp_path):
    p = run_cli(["demo", "--n", "17", "--count", "4", "--out", str(tmp_path)], np_=2)
    assert p.returncode == 0, p.stderr
    assert "vs strongest" in p.stdout and "fallbacks" in p.stdout
    assert (tmp_path / "demo_speedup.png").exists()
    assert (tmp_path / "demo_darcy_3.h5").exists() and (tmp_path / "demo_helmholtz_3.h5").exists()


def test_failure_on_one_rank_ends_the_whole_job(tmp_path):
    """Rank 1 raises while rank 0 waits in a collective: the job must end, with the message."""
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        from hybridsolve.stack import MPI
        from hybridsolve.parallel import run_collective_main

        def main():
            comm = MPI.COMM_WORLD
            if comm.rank == 1:
                raise RuntimeError("model file is corrupt on rank 1")
            comm.Barrier()   # rank 0 would wait here forever
            return 0

        raise SystemExit(run_collective_main(main))
    """))
    p = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, str(script)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode != 0
    assert "model file is corrupt on rank 1" in p.stderr and "rank 1 of 2" in p.stderr


def test_driver_abort_hook_ends_the_whole_job(tmp_path):
    script = tmp_path / "drv.py"
    script.write_text(textwrap.dedent("""
        from hybridsolve.stack import MPI
        from hybridsolve.parallel import install_abort_hook
        install_abort_hook()
        if MPI.COMM_WORLD.rank == 0:
            raise ValueError("bad input on rank 0")
        MPI.COMM_WORLD.Barrier()
    """))
    p = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, str(script)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode != 0 and "bad input on rank 0" in p.stderr


@pytest.mark.parametrize("script,args", [
    ("driver.py", ["--family", "heat", "--n", "16", "--count", "3", "-drv_ksp_converged_reason"]),
    ("dolfinx_poisson.py", ["-pois_ksp_converged_reason"]),
    ("dolfinx_heat_tuned.py", ["--nx", "12", "--steps", "40", "-heat_ksp_converged_reason"]),
    ("dolfinx_npsolver.py", ["-np_ksp_converged_reason"]),
    ("dolfinx_npsolver.py", ["--3d", "-np_ksp_converged_reason"]),
])
def test_examples_run_under_mpiexec(script, args):
    p = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, str(ROOT / "examples" / script),
                        *args], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "CONVERGED_RTOL" in p.stdout


def test_methods_by_name_on_matrix_free_operator_under_mpiexec(tmp_path):
    out = tmp_path / "m.json"
    p = run_cli(["solve", "--family", "grid", "--n", "32", "--count", "2", "--opt", "operator=matfree",
                 "--method", "ssor-pcg", "--omega", "1.5", "--rtol", "1e-8", "--json", str(out),
                 "-ksp_view"], np_=2)
    assert p.returncode == 0, p.stderr
    assert "hybridsolve matrix-free 5-point stencil" in p.stdout and "omega = 1.5" in p.stdout
    res = json.loads(out.read_text())["results"]
    assert all(r["method"] == "cg+sor" and r["true_residual"] <= 1.01e-8 for r in res)
    p = run_cli(["solve", "--family", "grid", "--n", "16", "--method", "sor", "--omega", "1.7",
                 "--rtol", "1e-6", "-ksp_max_it", "5000"], np_=2)
    assert p.returncode == 0 and "CONVERGED_RTOL" in p.stdout, p.stderr


@pytest.mark.parametrize("args,message,code", [
    (["--method", "sor", "--omega", "2.5"], "outside (0, 2)", 2),
    (["--method", "ssor-pcg", "-pc_sor_omega", "0"], "outside (0, 2)", 2),
    (["--method", "nosuch"], "unknown method", 2),
])
def test_bad_solver_input_on_every_rank(args, message, code):
    p = run_cli(["solve", "--family", "grid", "--n", "8", *args], np_=2, timeout=120)
    assert p.returncode == code and message in p.stderr, p.stderr


def test_cg_on_indefinite_family_fails_loudly():
    p = run_cli(["solve", "--family", "helmholtz", "--n", "16", "--method", "pcg",
                 "-pc_type", "none"], np_=2, timeout=120)
    assert p.returncode == 3 and "not symmetric positive definite" in p.stderr, p.stderr


# --- the front door ---------------------------------------------------------------------------
def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.mark.parametrize("np_", [1, 2])
@pytest.mark.parametrize("args,line", [
    (["solve", "--family", "grid", "--n", "8", "--rtl", "1e-6"],
     "hybridsolve solve: unknown option --rtl (did you mean --rtol?)"),
    (["solve", "--family", "grid", "--n", "8", "--rtl=1e-6"],
     "hybridsolve solve: unknown option --rtl (did you mean --rtol?)"),
    (["--rtl", "solve", "--family", "grid", "--n", "8"],
     "hybridsolve: unknown option --rtl (did you mean --rtol?)"),
    (["datagen", "--family", "grid", "--n", "8", "--count", "2", "--out", "x.h5", "--gcrodr-m",
      "40"], "hybridsolve datagen: unknown option --gcrodr-m"),
])
def test_a_typo_flag_is_refused_in_one_line_with_the_closest_flag(np_, args, line):
    r = run_cli(args, np_=np_)
    assert r.returncode == 2, r.stderr
    assert _lines(r.stderr) == [line], r.stderr   # once, not once per rank
    assert "system" not in r.stdout               # nothing was solved


@pytest.mark.parametrize("args,message", [
    (["solve", "--family", "grid"], "hybridsolve solve: the following arguments are required: --n"),
    (["solve", "--family", "grid", "--n", "x"], "argument --n: invalid int value: 'x'"),
    (["datagen", "--family", "grid", "--n", "8", "--count", "2", "--out", "x.h5", "--solver",
      "nosuch"], "argument --solver: invalid choice: 'nosuch'"),
    ([], "the following arguments are required: command"),
])
def test_a_usage_error_is_one_line_once_under_mpiexec(args, message):
    r = run_cli(args, np_=2)
    lines = _lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr


def test_help_and_version():
    for args in (["-h"], ["--help"], ["solve", "-h"], ["datagen", "--help"], ["-v", "tune", "-h"]):
        r = run_cli(args)
        assert r.returncode == 0 and "usage: hybridsolve" in r.stdout, (args, r.stderr)
    helps = run_cli(["datagen", "-h"]).stdout
    assert "--solver" in helps and "-datagen_ksp_gcrodr_m" in helps and "--gcrodr" not in helps
    from hybridsolve.solvers.registry import method_names

    assert all(m in " ".join(helps.split()) for m in method_names())
    r = run_cli(["--version"])
    assert r.returncode == 0 and r.stdout.strip().startswith("hybridsolve 0."), r.stdout
    r = run_cli(["solve", "--help"], np_=2)
    assert r.returncode == 0 and r.stdout.count("usage: hybridsolve solve") == 1, r.stdout


@pytest.mark.parametrize("np_", [1, 2])
@pytest.mark.parametrize("option,code,message", [
    (["-ksp_type", "nonsense"], "PETSc error 86", "nonsense"),
    (["-ksp_rtol", "abc"], "PETSc error 63", "abc has no numeric value"),
])
def test_a_petsc_error_is_one_line_and_the_trace_needs_debug(np_, option, code, message):
    r = run_cli(["solve", "--family", "grid", "--n", "8", *option], np_=np_)
    lines = _lines(r.stderr)
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert code in lines[0] and message in lines[0] and "--debug" in lines[0], lines
    if np_ == 1:
        r = run_cli(["solve", "--family", "grid", "--n", "8", *option, "--debug"])
        assert r.returncode != 0 and len(_lines(r.stderr)) > 5, r.stderr
        assert "Traceback" in r.stderr and message in r.stderr


def test_unused_petsc_options_are_reported_once_and_quiet_silences_them():
    args = ["solve", "--family", "grid", "--n", "8", "-ksp_tyep", "cg"]
    r = run_cli(args, np_=2)
    assert r.returncode == 0 and r.stderr.count("never used: -ksp_tyep") == 1, r.stderr
    assert "WARNING! There are options" not in r.stdout + r.stderr   # PETSc's own report
    r = run_cli([*args, "-q"], np_=2)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run_cli([*args, "-v"], np_=2)
    assert r.returncode == 0 and r.stderr.count("INFO: solve on 2 rank(s); PETSc options: "
                                                "-ksp_tyep cg") == 1, r.stderr
    r = run_cli(["move", "--square", "4", "--rtol", "1e-4", "-mover_ksp_tyep", "cg",
                 "--strict-options"])
    assert r.returncode == 2 and "never used: -mover_ksp_tyep" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["solve", "--family", "grid", "--n", "8", "--json", "/proc/no/such/x.json"],
     "--json /proc/no/such/x.json: cannot write there"),
    (["solve", "--family", "grid", "--n", "8", "--plot", "out.pdf"], "expected a .png file"),
    (["solve", "--family", "grid", "--n", "8", "--json", "{tmp}/dir.json"], "is a folder"),
    (["solve", "--family", "grid", "--n", "8", "--json", "{tmp}/ro.json"], "read-only"),
    (["solve", "--family", "grid", "--n", "8", "--json", "{tmp}/ro/x.json"], "cannot write"),
    (["datagen", "--family", "grid", "--n", "8", "--count", "2", "--out", "{tmp}/d.txt"],
     "expected a .h5 or .hdf5 file"),
    (["tune", "--family", "grid", "--n", "8", "--count", "2", "--checkpoint", "{tmp}/c.txt"],
     "expected a .json file"),
    (["train", "dcdm", "--out", "{tmp}/m.pt"], "expected a .safetensors file"),
    (["move", "--square", "4", "--out", "/proc/m.xdmf"], "cannot write there"),
    (["demo", "--out", "/proc/demo"], "cannot write there"),
])
def test_output_paths_are_checked_before_the_work(args, message, tmp_path):
    import os

    if os.geteuid() == 0 and any("{tmp}/ro" in a for a in args):
        pytest.skip("root writes read-only files and folders")
    ro = tmp_path / "ro.json"
    ro.write_text("{}")
    ro.chmod(0o444)
    (tmp_path / "ro").mkdir(mode=0o555)
    (tmp_path / "dir.json").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_cli(args)
    assert r.returncode == 2 and _lines(r.stderr) == [_lines(r.stderr)[0]], r.stderr
    assert message in r.stderr, r.stderr
    assert r.stdout == ""   # refused before anything ran


def _interrupt(np_: int, target: str) -> tuple[int, str]:
    """Start a long SOR sequence, wait for its first output, send SIGINT to ``target``
    (``mpiexec``, ``rank1`` or ``all``); returns the exit code and stderr."""
    import os
    import signal
    import time

    tag = str(1000 + os.getpid() % 100000)   # a unique command line, to find the ranks
    cmd = [str(BIN / "python"), "-m", "hybridsolve", "solve", "--family", "grid", "--n", "300",
           "--count", "100", "--method", "sor", "--omega", "1.0", "--seed", tag]
    if np_ > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(np_), *cmd]
    # a shell that starts a job in the background (``cmd &``, as a CI runner may) leaves SIGINT
    # ignored for it and its children; a user at a terminal has it delivered: reset it
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in p.stdout:              # the table's header: the solves have started
            if line.startswith("system"):
                break
        # and the first row: the kernels are compiled (a SIGINT inside numba's JIT is reported
        # by llvmlite's ctypes callback as an ignored exception before ours: noise under load)
        p.stdout.readline()
        time.sleep(0.5)
        if target == "mpiexec":
            p.send_signal(signal.SIGINT)
        else:
            found = subprocess.run(["pgrep", "-f", f"seed {tag}$"], capture_output=True,
                                   text=True).stdout.split()
            ranks = sorted(int(q) for q in found if int(q) != p.pid)
            assert len(ranks) == np_, ranks
            for pid in ranks if target == "all" else ranks[1:]:
                os.kill(pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


@pytest.mark.parametrize("np_,target", [(1, "mpiexec"), (2, "mpiexec"), (2, "rank1"), (2, "all")])
def test_ctrl_c_ends_every_rank_with_one_line_and_exit_130(np_, target):
    code, err = _interrupt(np_, target)
    assert code == 130 and err.strip() == "hybridsolve: interrupted", (code, err)


def test_tune_resumes_from_its_checkpoint_and_refuses_another_configuration(tmp_path):
    ck = tmp_path / "learner.json"
    base = ["tune", "--family", "grid", "--n", "12", "--learner", "tsallis", "--quiet",
            "--checkpoint", str(ck)]
    r = run_cli([*base, "--count", "3", "--json", str(tmp_path / "a.json")])
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert [x["info"]["system"] for x in a["results"]] == [0, 1, 2] and a["first_system"] == 0
    r = run_cli([*base, "--count", "5", "--json", str(tmp_path / "b.json")], np_=2)
    assert r.returncode == 0 and "continuing at system 3 of 5" in r.stdout, r.stdout + r.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert [x["info"]["system"] for x in b["results"]] == [3, 4] and b["first_system"] == 3
    assert json.loads(ck.read_text())["t"] == 5
    r = run_cli([*base, "--count", "5"])
    assert r.returncode == 0 and "nothing left to do" in r.stdout, r.stdout + r.stderr
    before = ck.read_text()
    r = run_cli([*base[:5], "--learner", "igw", "--quiet", "--checkpoint", str(ck),
                 "--count", "6"])
    assert r.returncode == 2 and "another configuration" in r.stderr and "igw" in r.stderr, r.stderr
    r = run_cli([*base, "--count", "6", "--values", "1.0,1.5"], np_=2)
    assert r.returncode == 2 and _lines(r.stderr)[0].count("values None (now '1.0,1.5')") == 1, \
        r.stderr
    r = run_cli(["tune", "--family", "grid", "--n", "13", "--learner", "tsallis", "--quiet",
                 "--checkpoint", str(ck), "--count", "6"])
    assert r.returncode == 2 and "n 12 (now 13)" in r.stderr, r.stderr
    assert ck.read_text() == before   # a refused run leaves the checkpoint alone
