"""PCG, SSOR-PCG and SOR end to end, side by side with SciPy CG and PyAMG-preconditioned CG.

    .venv/bin/python benchmarks/bench_pcg.py                      # results/pcg.md
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_pcg.py   # results/pcg_np2.md (PETSc only)

Every method solves the same systems to ||b - A x|| / ||b|| <= 1e-8 from x0 = 0; times are wall
seconds of the solve including preconditioner set-up (PyAMG's set-up reported separately too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

from common import write_table  # noqa: E402
from hybridsolve import KrylovSolver, get_family  # noqa: E402
from hybridsolve.stack import MPI  # noqa: E402

RTOL = 1e-8
SYSTEMS = [
    ("Darcy 5-point grid", "darcy", {"discretization": "grid"}, 513),
    ("Darcy P1 FEM", "darcy", {}, 511),
    ("3-D Poisson 7-point", "grid", {"dim": 3}, 64),
]
PETSC_METHODS = [
    ("PETSc CG + Jacobi", dict(method="pcg", options={"pc_type": "jacobi"}), "aij"),
    ("PETSc SSOR-PCG (omega 1.5)", dict(method="ssor-pcg", omega=1.5), "aij"),
    ("PETSc SSOR-PCG matrix-free (Numba, omega 1.5)", dict(method="ssor-pcg", omega=1.5), "matfree"),
    ("PETSc SOR (Richardson, omega 1.95)", dict(method="sor", omega=1.95, max_it=30000), "aij"),
    ("PETSc SOR matrix-free (Numba, omega 1.95)", dict(method="sor", omega=1.95, max_it=30000), "matfree"),
    ("PETSc CG + GAMG", dict(method="pcg", options={"pc_type": "gamg"}), "aij"),
]


def petsc_rows(label, name, opts, n, comm):
    rows = []
    for mlabel, kw, operator in PETSC_METHODS:
        if operator == "matfree" and not (name == "grid" or opts.get("discretization") == "grid"):
            continue
        o = dict(opts)
        if operator == "matfree":
            o["operator"] = "matfree"
        s = get_family(name, n, count=1, seed=0, **o).system(0, comm)
        kw = dict(kw)
        solver = KrylovSolver(comm, rtol=RTOL, prefix="b_", options=kw.pop("options", None), **kw)
        if operator == "matfree":  # compile/load the kernels outside the timing
            warm = solver.solve(s.A, s.b)
            warm.x.destroy()
            solver.destroy()
            solver = KrylovSolver(comm, rtol=RTOL, prefix="b_", **kw)
        r = solver.solve(s.A, s.b)
        rows.append([label, s.size, mlabel, r.iterations, f"{r.time:.3f}", f"{r.true_residual:.1e}",
                     "" if r.converged else r.reason_name])
        if comm.rank == 0:
            print(rows[-1], flush=True)
        r.x.destroy()
        solver.destroy()
        s.destroy()
    return rows


def scipy_rows(label, name, opts, n):
    import pyamg

    s = get_family(name, n, count=1, seed=0, **opts).system(0, MPI.COMM_SELF)
    A, b = s.to_scipy()
    s.destroy()
    A = A.tocsr()
    rows = []

    def run(mlabel, M=None, setup=0.0):
        its = [0]

        def cb(_):
            its[0] += 1

        t0 = time.perf_counter()
        x, info = spla.cg(A, b, rtol=RTOL, atol=0.0, maxiter=30000, M=M, callback=cb)
        t = time.perf_counter() - t0 + setup
        res = np.linalg.norm(b - A @ x) / np.linalg.norm(b)
        rows.append([label, A.shape[0], mlabel, its[0], f"{t:.3f}", f"{res:.1e}",
                     "" if info == 0 else f"info={info}"])
        print(rows[-1], flush=True)

    run("SciPy cg")
    dinv = 1.0 / A.diagonal()
    run("SciPy cg + Jacobi", spla.LinearOperator(A.shape, matvec=lambda v: dinv * v))
    t0 = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(A)
    setup = time.perf_counter() - t0
    run(f"SciPy cg + PyAMG SA V-cycle (set-up {setup:.2f} s incl.)", ml.aspreconditioner(), setup)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rows = []
    for label, name, opts, n in SYSTEMS:
        if args.quick:
            n = n // 8 if name == "darcy" else n // 4
        rows += petsc_rows(label, name, opts, n, comm)
        if comm.size == 1:
            rows += scipy_rows(label, name, opts, n)
    if comm.rank == 0:
        write_table("pcg" if comm.size == 1 else f"pcg_np{comm.size}",
                    f"PCG, SSOR-PCG and SOR end to end, {comm.size} rank(s)",
                    ["system", "unknowns", "method", "iterations", "time [s]", "true rel. res", "note"],
                    rows,
                    notes=f"rtol {RTOL:g} on ||b - Ax||/||b|| (PETSc: unpreconditioned norm), x0 = 0. "
                          "PETSc SOR is processor-local: on P ranks it is block Jacobi between "
                          "ranks with SOR inside, so SOR/SSOR iteration counts grow with P.")


if __name__ == "__main__":
    main()
