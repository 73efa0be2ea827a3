"""Shared fixtures. The suite runs serially and again under ``mpiexec -n 2``."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

# The GPU twins run on numba's CUDA simulator unless a real GPU run asks otherwise
# (NUMBA_ENABLE_CUDASIM=0); it must be set before numba is imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hybridsolve.stack import MPI, PETSc  # noqa: F401  (import order first)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pytest_configure(config):
    if MPI.COMM_WORLD.rank > 0:  # one readable report: rank 0's (failures still show)
        config.option.verbose = -2
    if MPI.COMM_WORLD.size > 1 and not config.option.basetemp:
        # each rank its own temporary root: pytest's clean-up of old roots races otherwise
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix=f"hybridsolve-pytest-r{MPI.COMM_WORLD.rank}-")


@pytest.fixture
def comm():
    return MPI.COMM_WORLD


@pytest.fixture(autouse=True)
def _collect_petsc_objects():
    """PETSc/DOLFINx destructors can be collective: collect and synchronise after each test."""
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


def assert_all(comm, cond: bool, msg: str = "") -> None:
    """A collective assertion: every rank fails if any rank's condition is false (no hang)."""
    ok = comm.allreduce(bool(cond), op=MPI.LAND)
    assert ok, f"{msg} (failed on at least one rank)"


def by_input_index(mesh):
    """A 2-D mesh's vertex coordinates ordered by the input (global) node index, gathered on every
    rank: comparable across numbers of ranks."""
    n = mesh.geometry.index_map().size_local
    idx = np.asarray(mesh.geometry.input_global_indices[:n])
    allidx = np.concatenate(mesh.comm.allgather(idx))
    allx = np.concatenate(mesh.comm.allgather(mesh.geometry.x[:n, :2]))
    out = np.empty_like(allx)
    out[allidx] = allx
    return out


def run_cli(args, np_: int = 1, timeout: float = 240, env_extra=None):
    """Run ``hybridsolve`` (under ``mpiexec -n np_`` when np_ > 1) and return the CompletedProcess."""
    cmd = [str(BIN / "python"), "-m", "hybridsolve", *args]
    if np_ > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(np_), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))
