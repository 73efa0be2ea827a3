"""Problem families at benchmark sizes: assembly time, and PETSc's recommended solver side by side
with what a user would otherwise run (SciPy's sparse direct solver, SciPy CG/GMRES unpreconditioned).

    .venv/bin/python benchmarks/bench_families.py            # serial, writes results/families.md
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_families.py --ranks-only

With ``--ranks-only`` only the PETSc columns are measured (on all ranks) and written to
``results/families_np<P>.md``.
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

CASES = [
    ("darcy", {}, 256),
    ("darcy", {"discretization": "grid"}, 256),
    ("poisson", {}, 256),
    ("poisson", {"domain": "lshape_hole"}, 160),
    ("thermal", {}, 96),
    ("helmholtz", {}, 128),
    ("heat", {}, 256),
    ("grid", {"obstacles": 3}, 256),
    ("grid", {"dim": 3, "obstacles": 2}, 40),
]
RTOL = 1e-8


def scipy_iterative(A, b, symmetric: bool):
    its = [0]

    def cb(_):
        its[0] += 1

    t0 = time.perf_counter()
    if symmetric:
        x, info = spla.cg(A, b, rtol=RTOL, maxiter=20000, callback=cb)
    else:
        x, info = spla.gmres(A, b, rtol=RTOL, restart=100, maxiter=200, callback=cb,
                             callback_type="pr_norm")
    t = time.perf_counter() - t0
    return its[0], t, np.linalg.norm(b - A @ x) / np.linalg.norm(b), info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks-only", action="store_true")
    ap.add_argument("--count", type=int, default=3)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rows = []
    for name, opts, n in CASES:
        fam = get_family(name, n, count=args.count, seed=0, **opts)
        label = name + "".join(f" {k}={v}" for k, v in opts.items())
        solver, prev = None, None
        t_asm, its, t_solve, true_res = [], [], [], []
        for i in range(args.count):
            comm.Barrier()
            t0 = time.perf_counter()
            s = fam.system(i, comm, previous=prev)
            t_asm.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
            if solver is None:
                solver = KrylovSolver(comm, options=s.default_options, rtol=RTOL)
            r = solver.solve(s.A, s.b, s.x0)
            its.append(r.iterations)
            t_solve.append(r.time)
            true_res.append(r.true_residual)
            if prev is not None:
                prev.destroy()
            prev = r.x if fam.sequential else None
            last = s
        row = [label, last.size, f"{np.median(t_asm):.3f}", r.method,
               f"{np.mean(its):.1f}", f"{np.median(t_solve):.3f}", f"{max(true_res):.1e}"]
        if not args.ranks_only and comm.size == 1:
            A, b = last.to_scipy()
            t0 = time.perf_counter()
            x = spla.spsolve(A.tocsc(), b)
            t_direct = time.perf_counter() - t0
            sym = fam.symmetric and fam.definite
            k_it, t_it, res_it, info = scipy_iterative(A, b, sym)
            row += [f"{t_direct:.3f}", ("cg" if sym else "gmres(100)") + f" {k_it}",
                    f"{t_it:.3f}" + ("" if info == 0 else " (not conv.)"), f"{res_it:.1e}"]
        rows.append(row)
        last.destroy()
        solver.destroy()
        if comm.rank == 0:
            print(" | ".join(str(c) for c in row), flush=True)
    header = ["family", "unknowns", "assembly [s]", "PETSc method", "its (mean)", "PETSc solve [s]",
              "true rel. res"]
    if not args.ranks_only and comm.size == 1:
        header += ["SciPy spsolve [s]", "SciPy iterative its", "SciPy iterative [s]", "SciPy rel. res"]
    if comm.rank == 0:
        name = "families" if comm.size == 1 and not args.ranks_only else f"families_np{comm.size}"
        write_table(name, f"Problem families: assembly and solve, {comm.size} rank(s)", header, rows,
                    notes=f"rtol {RTOL:g} on ||b - Ax|| / ||b|| for every method (PETSc CG uses the "
                          "unpreconditioned norm for SPD families; GMRES its left-preconditioned "
                          f"norm); medians over {args.count} systems of each family; times are "
                          "wall seconds, the slowest rank. SciPy columns: the last system, serial.")


if __name__ == "__main__":
    main()
