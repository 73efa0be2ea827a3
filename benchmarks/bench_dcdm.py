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


def takes_operator(model: str) -> bool:
    """A model that builds its levels from the operator (MGNet): it is a multigrid cycle
    already, so the SSOR-cycle row is not run for it."""
    from hybridsolve.learned.models import model_info
    from hybridsolve.learned.petsc import _REGISTRY

    if model.startswith("memory:"):
        return bool(getattr(_REGISTRY.get(model[len("memory:"):]), "uses_operator", False))
    return model_info(model).get("config", {}).get("kind") == "MGNet"


def untrained_control(dim: int, like: str) -> str:
    """The untrained MGNet of a shipped/trained one's configuration (its smoother damped
    Jacobi, no noise), registered in memory: the row that says what the training adds."""
    from hybridsolve.learned.mgnet import MGNet
    from hybridsolve.learned.models import model_info
    from hybridsolve.learned.petsc import register_model

    cfg = dict(model_info(like)["config"])
    cfg.pop("kind")
    cfg.pop("noise", None)
    return register_model(f"untrained-mgnet{dim}d", MGNet(**cfg))


def methods(models: list[str]) -> dict[str, dict]:
    out = {
        "CG": {"ksp_type": "cg", "pc_type": "none", **UNPREC},
        "ICC-PCG": {"ksp_type": "cg", "pc_type": "icc", **UNPREC},
        "CG+GAMG": {"ksp_type": "cg", "pc_type": "gamg", **UNPREC},
        "deflated CG (16 Ritz)": {"ksp_type": "python",
                                  "ksp_python_type": "hybridsolve.recycling.petsc.RecyclingCG",
                                  "ksp_rcg_k": 16, "pc_type": "none"},
    }
    for model in models:
        out[f"DCDM ({Path(model).stem})"] = {
            "ksp_type": "python", "ksp_python_type": "hybridsolve.learned.petsc.DCDM",
            "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
            "pc_torch_model": model, "pc_torch_mode": "gathered"}
        # the same network in PETSc's flexible CG keeping 30 directions (DCDM keeps 2)
        out[f"FCG(30) + {Path(model).stem}"] = {
            "ksp_type": "fcg", "ksp_fcg_mmax": 30, **UNPREC,
            "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
            "pc_torch_model": model, "pc_torch_mode": "gathered"}
        # the network as the coarse correction of a two-level cycle with one SSOR sweep before
        # and after it, in PETSc's flexible CG (30 directions kept)
        if takes_operator(model):
            continue
        out[f"FCG + {Path(model).stem} + SSOR cycle"] = {
            "ksp_type": "fcg", "ksp_fcg_mmax": 30, **UNPREC,
            "pc_type": "python", "pc_python_type": "hybridsolve.learned.petsc.TorchPC",
            "pc_torch_model": model, "pc_torch_mode": "gathered", "pc_torch_smoother": "sor"}
    out["SSOR-PCG"] = {"ksp_type": "cg", "pc_type": "sor", **UNPREC}
    return out


def _learned_counts(r) -> tuple[int, int, int]:
    """(classical iterations, fallbacks, sign flips) of a solve (0 for classical methods)."""
    d, t = r.info.get("dcdm", {}), r.info.get("torchpc", {})
    return (int(d.get("classical_iterations", 0)),
            int(t.get("fallback_nonfinite", 0) + t.get("fallback_not_descent", 0)),
            int(t.get("sign_flips", 0)))


def run_case(comm, dim, n, tol, models, obstacles, seed, max_it, layouts, only=None):
    """Every method on ``layouts`` obstacle layouts (systems 1..layouts of the seed); per method
    the per-layout results."""
    fam = get_family("grid", n, count=layouts + 1, seed=seed, dim=dim, obstacles=obstacles)
    s0 = fam.system(0, comm)
    out: dict[str, list] = {}
    solvers = {name: KrylovSolver(comm, options=opts, rtol=tol, max_it=max_it)
               for name, opts in methods(models).items()
               if only is None or name == "ICC-PCG" or any(o in name for o in only)}
    for i in range(1, layouts + 1):
        s1 = fam.system(i, comm)
        # deflated CG's first solve: the other system's source, zero on this matrix's solid
        # cells (their rows are decoupled identities: a source there is a component the harvest
        # would waste its Ritz vectors on); the other methods solve it once on the first layout
        # only (model loading, first set-up)
        harvest = s0.b.copy()
        harvest.getArray()[:] *= s1.params[1].reshape(-1)[s1.canonical]
        for name, solver in solvers.items():
            if i == 1 or name.startswith("deflated"):
                solver.solve(s1.A, harvest).x.destroy()
            t0 = time.perf_counter()
            r = solver.solve(s1.A, s1.b)
            wall = time.perf_counter() - t0
            out.setdefault(name, []).append((r.iterations, r.time, wall, r.true_residual,
                                             r.reason_name, *_learned_counts(r)))
            r.x.destroy()
            print(f"  {dim}-D n={n} tol={tol:g} layout {i} {name}: {r.iterations} its, "
                  f"{r.time:.3f} s, {r.reason_name}, classical/fallbacks/flips "
                  f"{_learned_counts(r)}", flush=True)
        harvest.destroy()
        s1.destroy()
    for solver in solvers.values():
        solver.destroy()
    s0.destroy()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes2", default="128,256,512")
    p.add_argument("--sizes3", default="32,64")
    p.add_argument("--tols", default="1e-4,1e-6")
    p.add_argument("--models", default="dcdm2d,vcycle2d", help="2-D models, comma-separated")
    p.add_argument("--models3", default="dcdm3d", help="3-D models, comma-separated")
    p.add_argument("--obstacles", type=int, default=3)
    p.add_argument("--layouts", type=int, default=5, help="obstacle layouts per size")
    p.add_argument("--seed", type=int, default=101, help="obstacle layouts (not a training seed)")
    p.add_argument("--max-it", type=int, default=5000)
    p.add_argument("--generalise", action="store_true",
                   help="also 10 obstacles (training: 3) at the 2-D sizes")
    p.add_argument("--name", default="dcdm")
    p.add_argument("--control", action="store_true",
                   help="add the untrained MGNet of each MGNet model's configuration (its "
                        "smoother damped Jacobi): what the training adds")
    p.add_argument("--methods", default="", help="only the methods whose names contain one of "
                   "these comma-separated strings (ICC-PCG always: the ratio column)")
    args = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    print(machine())
    tols = [float(t) for t in args.tols.split(",")]
    m2, m3 = [m for m in args.models.split(",") if m], [m for m in args.models3.split(",") if m]
    if args.control:
        m2 += [untrained_control(2, m) for m in m2 if takes_operator(m)]
        m3 += [untrained_control(3, m) for m in m3 if takes_operator(m)]
    cases = [(2, int(n), m2, args.obstacles) for n in args.sizes2.split(",") if n]
    cases += [(3, int(n), m3, args.obstacles) for n in args.sizes3.split(",") if n]
    if args.generalise:
        cases += [(2, int(n), m2, 10) for n in args.sizes2.split(",") if n]
    table = []
    for dim, n, models, obst in cases:
        for tol in tols:
            only = [m for m in args.methods.split(",") if m] or None
            res = run_case(comm, dim, n, tol, models, obst, args.seed, args.max_it, args.layouts,
                           only)
            icc = np.mean([r[0] for r in res["ICC-PCG"]])
            for name, rs in res.items():
                its = np.array([r[0] for r in rs], dtype=float)
                # layout 1 is solved right after the warm-up solve with the same matrix: its
                # set-up (factorisation, hierarchy, the network's levels) is reused; the other
                # layouts are new matrices, their set-up inside the time
                t_new = np.mean([r[1] for r in rs[1:]]) if len(rs) > 1 else float("nan")
                t_reused = rs[0][1]
                worst = max(r[3] for r in rs)
                reasons = sorted({r[4] for r in rs})
                classical, fb, flips = (sum(r[k] for r in rs) for k in (5, 6, 7))
                table.append([f"{dim}-D", f"{n}^{dim}", obst, f"{tol:g}", name,
                              f"{its.mean():.1f} ({int(its.min())}-{int(its.max())})",
                              f"{its.mean() / max(icc, 1):.2f}", classical, fb, flips,
                              f"{t_new:.3f}", f"{t_reused:.3f}", f"{worst:.1e}",
                              ", ".join(reasons)])
    write_table(args.name, f"DCDM against CG, ICC-PCG, CG+GAMG and deflated CG ({comm.size} rank(s))",
                ["dim", "grid", "obstacles", "tol", "method", "iterations: mean (min-max)",
                 "its / ICC-PCG its", "classical its", "fallbacks", "sign flips",
                 "time, new matrix [s]", "time, set-up reused [s]",
                 "worst true rel. res", "reasons"], table,
                "Grid Poisson (5/7-point, 1/h^2 scaling) with random solid boxes (decoupled "
                f"cells), right-hand side a smooth random source; {args.layouts} obstacle layouts "
                f"per size from seed {args.seed} (training used seed 0). DCDM = our python KSP "
                "with a network through TorchPC (gathered mode, float32 network, true residual "
                "every iteration): dcdm2d/dcdm3d the paper's network (one coarse level, trained "
                "at 32^2 / 16^3), vcycle2d the V-cycle U-Net (levels grow with the grid, weights "
                "shared across levels, no biases, trained at 64^2), mg2d/mg3d the learned multigrid network "
                "(a V-cycle over the operator's Galerkin levels, one learned convolutional smoother "
                "shared by every level, trained at 64^2 / 16^3; its levels are built from each "
                "matrix in the PC set-up), 'memory:untrained-mgnet' the same "
                "network untrained (damped-Jacobi smoother). 'FCG(30) + model': the same TorchPC in PETSc's FCG with 30 "
                "directions kept (DCDM keeps 2, the paper's window); 'FCG + model + SSOR cycle': PETSc FCG "
                "(mmax 30) with TorchPC's two-level cycle (-pc_torch_smoother sor: one SSOR sweep, "
                "the network on the remaining residual with its step by the A-norm line search, "
                "one SSOR sweep); SSOR-PCG is the smoother alone. 'classical its': DCDM "
                "iterations after its stall switch (directions from the PC's classical fallback, "
                "not the network), summed over the layouts; 'fallbacks': network outputs rejected "
                "(NaN/Inf or |cos(r, z)| <= 1e-4) and replaced by Jacobi; 'sign flips': ascent "
                "directions negated. Deflated CG = RecyclingCG with k = 16 Ritz vectors harvested "
                "over a whole first solve with the same matrix (right-hand side: another layout's "
                "source, zero on this layout's solid cells). Every method solves once before the "
                "timed solves (model loading, first PC set-up) with the first layout's matrix. "
                "'time, new matrix' = the mean KSP solve of layouts 2.., the set-up for the new "
                "matrix included (ICC factorisation, GAMG hierarchy, the network's Galerkin levels "
                "and their spectral estimate); 'time, set-up reused' = the first layout's solve, "
                "its set-up done by the warm-up solve (a sequence of right-hand sides on one "
                "matrix). CPU only, torch on the cores PETSc leaves (OMP_NUM_THREADS).")


if __name__ == "__main__":
    main()
