"""DCDM (deep conjugate directions) against the solvers a user would run instead.

Structured-grid Poisson with interior obstacles (the ``grid`` family, fluid-like domains), 2-D
and 3-D, tolerances 1e-4 and 1e-6 (relative, true residual): DCDM with the shipped network (via
TorchPC, gathered) against plain CG, ICC-PCG, CG+GAMG and deflated CG (our recycling CG, whose
deflation space is built from the first solve's Ritz vectors and then reused: the paper's
baseline uses 16 Ritz vectors). Obstacle layouts are drawn from a seed the network never saw;
``--generalise`` adds obstacle counts and sizes unlike the training ones.

    python benchmarks/bench_dcdm.py [--sizes2 128,256,512,1024 --sizes3 32,64 --model dcdm2d]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_table  # noqa: E402

from hybridsolve.problems import get_family  # noqa: E402
from hybridsolve.solvers.petsc import KrylovSolver  # noqa: E402
from hybridsolve.stack import MPI  # noqa: E402

UNPREC = {"ksp_norm_type": "unpreconditioned"}


def methods(model: str) -> dict[str, dict]:
    return {
        "CG": {"ksp_type": "cg", "pc_type": "none", **UNPREC},
        "ICC-PCG": {"ksp_type": "cg", "pc_type": "icc", **UNPREC},
        "CG+GAMG": {"ksp_type": "cg", "pc_type": "gamg", **UNPREC},
        "deflated CG (16 Ritz)": {"ksp_type": "python",
                                  "ksp_python_type": "hybridsolve.recycling.petsc.RecyclingCG",
                                  "ksp_rcg_k": 16, "pc_type": "none"},
        "DCDM": {"ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
                 "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
                 "pc_torch_model": model, "pc_torch_mode": "gathered"},
    }


def run_case(comm, dim, n, tol, model, obstacles, seed, max_it):
    fam = get_family("grid", n, count=2, seed=seed, dim=dim, obstacles=obstacles)
    s0, s1 = fam.system(0, comm), fam.system(1, comm)
    rows = []
    # the first solve's right-hand side: the other system's source, zero on this matrix's
    # solid cells (their rows are decoupled identities: a source there is a component the
    # harvest of deflated CG would waste its Ritz vectors on)
    harvest = s0.b.copy()
    harvest.getArray()[:] *= s1.params[1].reshape(-1)[s1.canonical]
    for name, opts in methods(model).items():
        solver = KrylovSolver(comm, options=opts, rtol=tol, max_it=max_it)
        # a first solve with another right-hand side: loads the model, and builds deflated
        # CG's space from the Ritz vectors of this very matrix
        solver.solve(s1.A, harvest).x.destroy()
        t0 = time.perf_counter()
        r = solver.solve(s1.A, s1.b)
        wall = time.perf_counter() - t0
        rows.append((name, r.iterations, r.time, wall, r.true_residual, r.reason_name))
        solver.destroy()
        r.x.destroy()
        print(f"  {dim}-D n={n} tol={tol:g} {name}: {r.iterations} its, {r.time:.3f} s, "
              f"{r.reason_name}", flush=True)
    harvest.destroy()
    s0.destroy()
    s1.destroy()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes2", default="128,256,512")
    p.add_argument("--sizes3", default="32,64")
    p.add_argument("--tols", default="1e-4,1e-6")
    p.add_argument("--model", default="dcdm2d")
    p.add_argument("--model3", default="dcdm3d")
    p.add_argument("--obstacles", type=int, default=3)
    p.add_argument("--seed", type=int, default=101, help="obstacle layouts (not a training seed)")
    p.add_argument("--max-it", type=int, default=5000)
    p.add_argument("--generalise", action="store_true",
                   help="also 10 obstacles (training: 4) at the 2-D sizes")
    p.add_argument("--name", default="dcdm")
    args = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    print(machine())
    tols = [float(t) for t in args.tols.split(",")]
    cases = [(2, int(n), args.model, args.obstacles) for n in args.sizes2.split(",") if n]
    cases += [(3, int(n), args.model3, args.obstacles) for n in args.sizes3.split(",") if n]
    if args.generalise:
        cases += [(2, int(n), args.model, 10) for n in args.sizes2.split(",") if n]
    table = []
    for dim, n, model, obst in cases:
        for tol in tols:
            res = run_case(comm, dim, n, tol, model, obst, args.seed, args.max_it)
            icc = next(r for r in res if r[0] == "ICC-PCG")
            for name, its, t, wall, tr, reason in res:
                table.append([f"{dim}-D", f"{n}^{dim}", obst, f"{tol:g}", name, its,
                              f"{t:.3f}", f"{its / max(icc[1], 1):.2f}", f"{tr:.1e}", reason])
    write_table(args.name, f"DCDM against CG, ICC-PCG, CG+GAMG and deflated CG ({comm.size} rank(s))",
                ["dim", "grid", "obstacles", "tol", "method", "iterations", "time [s]",
                 "its / ICC-PCG its", "true rel. res", "reason"], table,
                "Grid Poisson (5/7-point, 1/h^2 scaling) with random solid boxes (decoupled "
                "cells), right-hand side a smooth random source; layouts from seed "
                f"{args.seed} (training used seed 0). DCDM = our python KSP with the shipped "
                "network through TorchPC (gathered mode, float32 network, true residual every "
                "iteration). Deflated CG = RecyclingCG with k = 16 Ritz vectors harvested over a "
                "whole first solve with the same matrix (right-hand side: the other layout's "
                "source, zero on this layout's solid cells). Every method solves once before the timed solve "
                "(model loading, PC set-up of a first operator); 'time' = the timed KSP solve, "
                "its own set-up included; CPU only.")


if __name__ == "__main__":
    main()
