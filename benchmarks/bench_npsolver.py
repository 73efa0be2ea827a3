"""NPSolver (issue 15): label-free vs supervised vs residual-loss training at equal sample counts,
and the trained network against the PETSc solvers a user would run instead, on held-out meshes.

    python benchmarks/bench_npsolver.py train [--samples 512 --epochs 20]  # results/npsolver_training.md
    python benchmarks/bench_npsolver.py solve --model M.safetensors        # results/npsolver.md

``train`` fits the three losses in the fixed- and random-boundary settings (same samples, same
held-out geometries: another seed of the cutsquare family) and keeps the models in --workdir.
``solve`` takes a model and, on held-out geometries (seed 777, never trained on), measures:
the network alone (relative L2 error, time); the network followed by k CG+ICC steps; CG+ICC and
CG+GAMG from zero to the network's accuracy (iterations, time: matched accuracy); iterations to
1e-8 from zero and from the network's guess; the network as a preconditioner in FCG (the
two-level cycle with SSOR) against CG+ICC, FCG+SSOR and CG+GAMG. 1 rank, CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_table  # noqa: E402

from hybridsolve.stack import MPI, PETSc  # noqa: E402


def train(args) -> None:
    from hybridsolve.learned.npsolver import NPTrainConfig, train_npsolver

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for bc in args.bcs.split(","):
        for spec in args.losses.split(","):
            loss, _, k = spec.partition(":")
            steps = int(k) if k else 40
            out = work / f"np_{bc}_{loss}_{steps}.safetensors"
            cfg = NPTrainConfig(n=args.n, family=args.family, geometries=args.geometries,
                                samples=args.samples,
                                epochs=args.epochs, loss=loss, bc=bc, heldout=args.heldout,
                                threads=1, out=str(out), seed=args.seed, steps=steps)
            s = train_npsolver(cfg, progress=False, epoch_lines=False)
            ev = s["heldout"]
            rows.append([bc, f"{loss} (K = {steps})" if loss == "physics" else loss, s["samples"], cfg.epochs, f"{s['loss_history'][-1]:.4g}",
                         f"{ev['rel_l2_mean']:.4f}", f"{ev['rel_l2_max']:.4f}", f"{s['time']:.0f}"])
            print(rows[-1], flush=True)
    write_table(args.name, "NPSolver: label-free vs supervised vs residual loss",
                ["boundary conditions", "loss", "samples", "epochs", "final training loss",
                 "held-out rel. L2 (mean)", "held-out rel. L2 (max)", "training time [s]"], rows,
                notes=(f"{args.family} meshes (mesh size 1/{args.n}, {args.geometries} training "
                       f"geometries, seed {args.seed}), the same {args.samples} samples (geometry, "
                       "Dirichlet/Neumann per patch, Fourier source) for every loss; physics = "
                       "RMSE to K Jacobi-PCG steps from the prediction (no gradient, float64); "
                       "supervised = RMSE to the direct solution of the same samples; residual = "
                       "||b - Ap|| / ||b||. Held-out: "
                       f"{args.heldout} samples on geometries of another seed; relative L2 error "
                       "in the mass-matrix norm. NPSolverNet width 64, 4 blocks, 4 heads, 32 + 8 "
                       f"slices ({s['parameters']} parameters), Adam lr 1e-3 cosine, batch 8, 1 CPU thread."))


class _ErrMonitor:
    """Record the relative L2 error (mass norm) of a KSP's iterate at every iteration."""

    def __init__(self, M, exact) -> None:
        self.M, self.exact, self.errs = M, exact, []
        self.norm = np.sqrt(exact @ (M @ exact))

    def __call__(self, ksp, it, rnorm) -> None:
        x = ksp.buildSolution().getArray(readonly=True).copy()
        e = x - self.exact
        self.errs.append(np.sqrt(e @ (self.M @ e)) / self.norm)


def _ksp(A, opts: dict, rtol=1e-8, max_it=5000):
    o = PETSc.Options()
    ksp = PETSc.KSP().create(MPI.COMM_SELF)
    ksp.setOptionsPrefix("bnp_")
    for k, v in opts.items():
        o[f"bnp_{k}"] = v
    ksp.setOperators(A)
    ksp.setTolerances(rtol=rtol, max_it=max_it)
    ksp.setFromOptions()
    for k in opts:
        o.delValue(f"bnp_{k}")
    return ksp


def matched_accuracy(A, b, M, exact, target: float, opts: dict, reps: int = 5):
    """(iterations, seconds) of ``opts`` from zero to a relative L2 error <= ``target``: the
    first iteration that reaches it (found with an error monitor), then that many timed."""
    ksp = _ksp(A, opts, rtol=1e-14, max_it=500)
    mon = _ErrMonitor(M, exact)
    ksp.setMonitor(mon)
    x = b.duplicate()
    ksp.solve(b, x)
    k = next((j for j, ee in enumerate(mon.errs) if ee <= target), len(mon.errs) - 1)
    ksp.destroy()
    ksp = _ksp(A, opts, rtol=1e-300, max_it=max(k, 1))
    ksp.setConvergenceTest(lambda *a: 0)
    t0 = time.perf_counter()
    for _ in range(reps):
        x.set(0.0)
        ksp.solve(b, x)
    t = (time.perf_counter() - t0) / reps
    ksp.destroy()
    x.destroy()
    return k, t


def solve(args) -> None:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    from hybridsolve.learned.models import load_model, model_info
    from hybridsolve.learned.npsolver_petsc import MeshInputs, initial_guess, register_mesh
    from hybridsolve.problems import get_family

    import torch

    torch.set_num_threads(1)
    model = load_model(args.model)
    info = model_info(args.model)
    # the control: the same network untrained (seed 0) in the same cycle
    import tempfile

    from hybridsolve.learned.meshnets import NPSolverNet
    from hybridsolve.learned.models import save_model

    torch.manual_seed(0)
    cfg = {k: v for k, v in model.config.items() if k != "kind"}
    untrained = str(Path(tempfile.mkdtemp(prefix="bnp")) / "untrained.safetensors")
    save_model(NPSolverNet(**cfg), untrained)
    comm = MPI.COMM_SELF
    rows, agg = [], {}
    family = info["train"].get("family", "cutsquare")
    for n in [int(v) for v in args.sizes.split(",")]:
        fam = get_family(family, n, count=args.count, seed=777, bc=info["train"]["bc"])
        for i in range(args.count):
            s = fam.system(i, comm)
            prob = s.extra["problem"]
            dofs = prob.bcs[0].dof_indices()[0]
            ip, ix, v = s.A.getValuesCSR()
            A = sp.csr_matrix((v, ix, ip), shape=s.A.getSize())
            b = s.b.getArray(readonly=True).copy()
            exact = spla.spsolve(A.tocsc(), b)
            from hybridsolve.learned.npsolver import Geometry

            M = Geometry.from_family(fam, prob.mesh, s.params).M
            t0 = time.perf_counter()
            inputs = MeshInputs(prob.V, dofs)
            t_inputs = time.perf_counter() - t0
            x0 = s.b.duplicate()
            initial_guess(model, inputs, s.b, x0)      # warm-up (first call)
            t0 = time.perf_counter()
            reps = 5
            for _ in range(reps):
                initial_guess(model, inputs, s.b, x0)
            t_net = (time.perf_counter() - t0) / reps
            e = x0.getArray(readonly=True) - exact
            nrm = np.sqrt(exact @ (M @ exact))
            err_net = np.sqrt(e @ (M @ e)) / nrm
            rec = {"size": s.size, "err_net": err_net, "t_net": t_net, "t_inputs": t_inputs}
            # classical solvers from zero to the network's accuracy (matched accuracy)
            for name, opts in (("CG+ICC", {"ksp_type": "cg", "pc_type": "icc"}),
                               ("CG+GAMG", {"ksp_type": "cg", "pc_type": "gamg"})):
                k, t = matched_accuracy(s.A, s.b, M, exact, err_net, opts, reps)
                rec[f"{name} matched its"], rec[f"{name} matched t"] = k, t
                x = s.b.duplicate()
                # to 1e-8 from zero and from the network's guess
                for start in ("zero", "guess"):
                    ksp = _ksp(s.A, {**opts, "ksp_norm_type": "unpreconditioned"})
                    if start == "guess":
                        x0.copy(x)
                        ksp.setInitialGuessNonzero(True)
                    else:
                        x.set(0.0)
                    ksp.solve(s.b, x)
                    rec[f"{name} 1e-8 {start}"] = ksp.getIterationNumber()
                    ksp.destroy()
                x.destroy()
            # the network followed by k CG+ICC steps
            for k in (5, 10):
                ksp = _ksp(s.A, {"ksp_type": "cg", "pc_type": "icc"}, rtol=1e-300, max_it=k)
                ksp.setConvergenceTest(lambda *a: 0)
                ksp.setInitialGuessNonzero(True)
                x = x0.copy()
                t0 = time.perf_counter()
                ksp.solve(s.b, x)
                e = x.getArray(readonly=True) - exact
                rec[f"net+{k} err"] = np.sqrt(e @ (M @ e)) / nrm
                rec[f"net+{k} t"] = t_net + time.perf_counter() - t0
                ksp.destroy()
                x.destroy()
            # as a preconditioner
            mesh_opts = register_mesh(f"bench{n}_{i}", prob.V, dofs)
            for name, opts in (
                    ("FCG(30) + NPSolver cycle", {"ksp_type": "fcg", "ksp_fcg_mmax": 30,
                                                   **mesh_opts, "pc_npsolver_model": args.model}),
                    ("FCG(30) + untrained network cycle", {
                        "ksp_type": "fcg", "ksp_fcg_mmax": 30, **mesh_opts,
                        "pc_npsolver_model": untrained}),
                    ("FCG(30) + SSOR", {"ksp_type": "fcg", "ksp_fcg_mmax": 30, "pc_type": "sor"}),
                    ("CG+ICC", {"ksp_type": "cg", "pc_type": "icc"}),
                    ("CG+GAMG", {"ksp_type": "cg", "pc_type": "gamg"})):
                ksp = _ksp(s.A, {**opts, "ksp_norm_type": "unpreconditioned"})
                x = s.b.duplicate()
                t0 = time.perf_counter()
                ksp.solve(s.b, x)
                rec[f"pc {name} its"] = ksp.getIterationNumber()
                rec[f"pc {name} t"] = time.perf_counter() - t0
                r = s.b.duplicate()
                s.A.mult(x, r)
                r.aypx(-1.0, s.b)
                rec[f"pc {name} res"] = r.norm() / s.b.norm()
                rec[f"pc {name} reason"] = ksp.getConvergedReason()
                st = ksp.getPC().getPythonContext().stats if ksp.getPC().getType() == "python" \
                    else {}
                rec[f"pc {name} fallbacks"] = st.get("fallback_nonfinite", 0) + \
                    st.get("fallback_not_descent", 0)
                ksp.destroy()
                x.destroy()
                r.destroy()
            agg.setdefault(n, []).append(rec)
            print(n, i, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()},
                  flush=True)
            x0.destroy()
            s.destroy()
    for n, recs in agg.items():
        mean = lambda k: np.mean([r[k] for r in recs])  # noqa: E731
        size = int(mean("size"))
        rows.append([f"1/{n}", size, "network alone", f"{mean('err_net'):.4f}", "-",
                     f"{1e3 * mean('t_net'):.1f}", "-", "-"])
        for k in (5, 10):
            rows.append([f"1/{n}", size, f"network + {k} CG+ICC steps", f"{mean(f'net+{k} err'):.4f}",
                         "-", f"{1e3 * mean(f'net+{k} t'):.1f}", "-", "-"])
        for name in ("CG+ICC", "CG+GAMG"):
            ratio = mean(f"{name} matched t") / mean("t_net")
            rows.append([f"1/{n}", size, f"{name} from zero to the network's accuracy",
                         f"<= {mean('err_net'):.4f}", f"{mean(f'{name} matched its'):.1f}",
                         f"{1e3 * mean(f'{name} matched t'):.2f}", f"{ratio:.3f}", "-"])
        for name in ("CG+ICC", "CG+GAMG"):
            rows.append([f"1/{n}", size, f"{name} to 1e-8: from zero / from the network's guess",
                         "1e-8 (residual)", f"{mean(f'{name} 1e-8 zero'):.1f} / "
                         f"{mean(f'{name} 1e-8 guess'):.1f}", "-", "-", "-"])
        for name in ("FCG(30) + NPSolver cycle", "FCG(30) + untrained network cycle",
                     "FCG(30) + SSOR", "CG+ICC", "CG+GAMG"):
            worst = max(r[f"pc {name} res"] for r in recs)
            rows.append([f"1/{n}", size, f"as a preconditioner: {name} to 1e-8",
                         f"true rel. res. <= {worst:.1e}", f"{mean(f'pc {name} its'):.1f}",
                         f"{1e3 * mean(f'pc {name} t'):.1f}", "-",
                         int(sum(r[f"pc {name} fallbacks"] for r in recs))])
    write_table(args.name, "NPSolver on held-out meshes against PETSc's solvers (1 rank, CPU)",
                ["mesh size", "dofs (mean)", "what", "accuracy (rel. L2, mass norm)",
                 "iterations", "time [ms]", "classical time / network time",
                 "fallbacks (summed)"], rows,
                notes=(f"Model {Path(args.model).name} (trained with the {info['train']['loss']} "
                       f"loss, bc {info['train']['bc']}, {info['train']['samples']} samples, mesh "
                       f"size 1/{info['train']['n']}"
                       + "".join(f", 1/{m}" for m in info["train"].get("sizes", "").split(",") if m)
                       + (f", warm start from {info['train']['init']}" if info["train"].get("init")
                          else "")
                       + "; held-out error at training "
                       f"{info['heldout']['rel_l2_mean']:.4f}); {args.count} {family} systems per "
                       "size from seed 777 (geometries never trained on). Network time: one "
                       "prediction (features, forward pass in float32 on 1 thread, scatter) after a "
                       "warm-up, mean of 5; the mesh inputs are gathered once per mesh (not timed). "
                       "Matched accuracy: the first CG iteration whose relative L2 error is at most "
                       "the network's, then that many iterations timed (set-up included). "
                       "Preconditioner rows: tolerance 1e-8 on ||b - Ax|| / ||b||, FCG keeping 30 "
                       "directions, NPSolver cycle = SSOR sweep, network on the rest with its A-norm "
                       "step, SSOR sweep; 'untrained network cycle': the same cycle with the same network untrained "
                       "(seed 0), the control for what training adds; 'fallbacks': network outputs NPSolverPC rejected (NaN/Inf or "
                       "|cos(r, z)| <= 1e-4) and replaced by Jacobi, or dropped by the cycle."))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--n", type=int, default=16)
    t.add_argument("--family", default="cutsquare", choices=["cutsquare", "cutbox"])
    t.add_argument("--geometries", type=int, default=32)
    t.add_argument("--samples", type=int, default=512)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--heldout", type=int, default=32)
    t.add_argument("--bcs", default="random,fixed")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workdir", default="npsolver_models")
    t.add_argument("--losses", default="physics,supervised,residual",
                   help="losses, physics:K for K PCG steps in the target (default K = 40)")
    t.add_argument("--name", default="npsolver_training")
    s = sub.add_parser("solve")
    s.add_argument("--model", required=True)
    s.add_argument("--sizes", default="16,24")
    s.add_argument("--count", type=int, default=5)
    s.add_argument("--name", default="npsolver")
    args = p.parse_args(argv)
    print(machine())
    train(args) if args.what == "train" else solve(args)


if __name__ == "__main__":
    main()
