"""``hybridsolve`` subcommands. Single-dash arguments are PETSc options; an unknown ``--flag``
is an error (exit code 2, naming the closest valid flag).

Run under MPI as ``mpiexec -n 4 hybridsolve solve --family darcy --n 128 --count 10
-ksp_monitor -pc_type gamg``. An error on any rank ends the whole job with a one-line message
(``--debug`` shows the traceback and PETSc's trace); Ctrl-C ends every rank with exit code 130.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hybridsolve.errors import InputError


def _family_opts(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise InputError(f"--opt expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parser() -> argparse.ArgumentParser:
    from hybridsolve.solvers.registry import method_names

    p = argparse.ArgumentParser(
        prog="hybridsolve", add_help=False, allow_abbrev=False,
        description="Solver-in-the-loop scientific computing on PETSc/DOLFINx. Arguments not "
                    "listed here are passed to PETSc (e.g. -ksp_monitor -pc_type gamg).")
    from hybridsolve import __version__

    p.add_argument("--help", action="help", help="show this help and exit (also -h)")
    p.add_argument("--version", action="version", version=f"hybridsolve {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, add_help=False,
                            allow_abbrev=False)
        sp.add_argument("--help", action="help", help="show this help and exit (also -h)")
        sp.add_argument("--debug", action="store_true",
                        help="on an error, show the traceback and PETSc's full trace")
        sp.add_argument("--verbose", action="count", default=0,
                        help="more log messages (repeat for debug output)")
        return sp

    add("problems", "list the problem families and their options")

    s = add("solve", "solve a sequence of systems of a family with PETSc (options from the command line)")
    s.add_argument("--family", required=True, help="family name (see 'hybridsolve problems')")
    s.add_argument("--n", type=int, required=True, help="size parameter of the family")
    s.add_argument("--count", type=int, default=1, help="number of systems (default 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="family option, repeatable (e.g. --opt discretization=grid)")
    s.add_argument("--params", type=Path, help=".npy file of parameter arrays, shape (count, ...)")
    s.add_argument("--prefix", default="", help="PETSc options prefix of the solver")
    s.add_argument("--rtol", type=float, help="relative tolerance (default PETSc's, 1e-5)")
    s.add_argument("--method", help=f"{', '.join(method_names())} (default: the family's "
                                    "recommendation; PETSc -ksp_type/-pc_type options override)")
    s.add_argument("--omega", type=float, help="SOR relaxation factor in (0, 2)")
    s.add_argument("--sor-type", choices=["forward", "backward", "symmetric"],
                   help="SOR sweep (sor: forward by default; ssor-pcg: symmetric)")
    s.add_argument("--json", type=Path, help="write the results as JSON")
    s.add_argument("--plot", type=Path, help="write a convergence plot (PNG)")
    s.add_argument("--strict-options", action="store_true",
                   help="an unused (misspelt) PETSc option is an error, not a warning")

    g = add("datagen", "generate a neural-operator dataset (sorted chain, Krylov recycling, "
                       "restartable HDF5)")
    g.add_argument("--family", required=True, help="family name (see 'hybridsolve problems')")
    g.add_argument("--n", type=int, required=True, help="size parameter of the family")
    g.add_argument("--count", type=int, required=True, help="number of samples")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="family option")
    g.add_argument("--tol", type=float, default=1e-8,
                   help="tolerance on ||b - Ax|| / ||b|| (default 1e-8)")
    g.add_argument("--out", required=True, help="output HDF5 file (.h5)")
    g.add_argument("--order", default="auto", help="greedy, scalable, auto, random or none")
    g.add_argument("--solver", default="auto", help=f"auto, {', '.join(method_names())} "
                   "(-datagen_* PETSc options override its settings, e.g. -datagen_ksp_gcrodr_k)")
    g.add_argument("--no-warm-start", action="store_true",
                   help="start every solve from zero instead of the chain neighbour's solution")
    g.add_argument("--mode", default="data", choices=["data", "domain"],
                   help="under MPI: split the chain over ranks (data) or distribute each system")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    t = add("tune", "learn SOR's omega (or any PETSc option) online across a sequence of "
                    "systems with a bandit learner (Khodak et al., ICLR 2024)")
    t.add_argument("--family", required=True, help="family name (see 'hybridsolve problems')")
    t.add_argument("--n", type=int, required=True, help="size parameter of the family")
    t.add_argument("--count", type=int, required=True, help="number of systems (rounds)")
    t.add_argument("--seed", type=int, default=0, help="random seed of the family (default 0)")
    t.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="family option")
    t.add_argument("--learner", default="tsallis",
                   help="tsallis, igw, binned-tsallis, chebcb or fixed (default tsallis)")
    t.add_argument("--learner-seed", type=int, default=0, help="seed of the learner (default 0)")
    t.add_argument("--method", help="sor or ssor-pcg for omega (default ssor-pcg); any method "
                                    "(pcg, gcrodr, ...) or PETSc options with --option")
    t.add_argument("--values", help="values to choose from: comma list, or start:stop:count "
                                    "(default: 20 omegas in [1, 1.95])")
    t.add_argument("--option", help="tune this PETSc option (without dash and prefix) instead "
                                    "of omega, e.g. ksp_gcrodr_k; needs --values")
    t.add_argument("--context", help="context of a system: meta:<key>, param:<i> or none "
                                     "(default: the family's, e.g. heat's kappa)")
    t.add_argument("--context-range", help="low,high of the context (default: the family's)")
    t.add_argument("--bins", type=int, default=5, help="bins of binned-tsallis (default 5)")
    t.add_argument("--cost", choices=["iterations", "time"], default=None,
                   help="what the learner minimises (default: iterations for omega, time for "
                        "--option)")
    t.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance (default 1e-8)")
    t.add_argument("--prefix", default="", help="PETSc options prefix of the solver")
    t.add_argument("--checkpoint", type=Path, help="learner checkpoint (JSON): resumed if it "
                                                   "exists, written after every solve")
    t.add_argument("--json", type=Path, help="write per-solve results and the learner state")
    t.add_argument("--plot", type=Path, help="write a plot (PNG) of cumulative cost and values")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = add("train", "train a learned component: 'train dcdm' trains DCDM's network label-free "
                      "on Ritz vectors of structured-grid Poisson matrices with obstacles")
    tr.add_argument("what", choices=["dcdm"], help="what to train")
    tr.add_argument("--n", type=int, default=32, help="grid points per side (default 32)")
    tr.add_argument("--dim", type=int, default=2, choices=[2, 3], help="2 or 3 (default 2)")
    tr.add_argument("--obstacles", type=int, default=3, help="solid boxes per matrix (default 3)")
    tr.add_argument("--matrices", type=int, default=4, help="training matrices (default 4)")
    tr.add_argument("--lanczos", type=int, default=300, help="Lanczos steps per matrix (default 300)")
    tr.add_argument("--samples", type=int, default=2000, help="right-hand sides (default 2000)")
    tr.add_argument("--epochs", type=int, default=15, help="epochs (default 15)")
    tr.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tr.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    tr.add_argument("--out", required=True, help="model file (.safetensors); a rerun resumes")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    mv = add("move", "move a mesh by a monitor function (Monge-Ampere r-adaptation) and write it "
                     "with its quality metrics")
    src = mv.add_mutually_exclusive_group(required=True)
    src.add_argument("--mesh", type=Path, help="XDMF mesh file (mesh named 'mesh', or --mesh-name)")
    src.add_argument("--square", type=int, metavar="N", help="an N x N unit-square triangle mesh")
    src.add_argument("--domain", help="a gmsh domain: lshape, square_hole (with --n)")
    mv.add_argument("--mesh-name", default="mesh", help="mesh name in the XDMF file (default mesh)")
    mv.add_argument("--n", type=int, default=20, help="mesh size 1/n of --domain (default 20)")
    mv.add_argument("--monitor", default="ring",
                    help="ring, ball, constant, or expr:<numpy expression in x, y, z> "
                         "(default ring)")
    mv.add_argument("--monitor-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="monitor parameter, repeatable: alpha, beta, radius, center=cx,cy")
    mv.add_argument("--mover", default=None, help="mover by name (default: -mover_type, else "
                                                  "monge-ampere)")
    mv.add_argument("--variant", default="relaxation", choices=["relaxation", "newton"])
    mv.add_argument("--rtol", type=float, default=1e-8, help="relative MA residual (default 1e-8)")
    mv.add_argument("--max-it", type=int, default=1000, help="iteration limit (default 1000)")
    mv.add_argument("--pinned", choices=["none", "all"], default="none",
                    help="pin the whole boundary (default: slip along straight segments)")
    mv.add_argument("--out", type=Path, help="write the moved mesh and metrics: .xdmf (default) "
                                             "or .bp (VTX)")
    mv.add_argument("--plot", type=Path, help="PNG of the mesh before and after")
    mv.add_argument("--json", type=Path, help="write the result (iterations, residuals, quality)")

    d = add("demo", "the main job on an embedded default: Darcy and Helmholtz datasets generated "
                    "with and without SKR, with the speed-up table")
    d.add_argument("--n", type=int, default=65, help="grid size parameter (default 65: 4096 unknowns)")
    d.add_argument("--count", type=int, default=32, help="samples (default 32)")
    d.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    return p


def cmd_problems(args: argparse.Namespace) -> int:
    from hybridsolve.parallel import print0
    from hybridsolve.problems import FAMILIES

    for name, cls in sorted(FAMILIES.items()):
        kind = ("SPD" if cls.symmetric and cls.definite else
                "symmetric indefinite" if cls.symmetric else "nonsymmetric")
        seq = ", sequential" if cls.sequential else ""
        print0(f"{name:10s} {cls.summary}")
        print0(f"{'':10s} n: {cls.size_doc}; {kind}{seq}")
        for k, o in cls.options.items():
            choices = f" {list(o.choices)}" if o.choices else ""
            print0(f"{'':12s}--opt {k}={o.default!s:<8s} {o.doc}{choices}")
    return 0


def run_sequence(family, comm, *, prefix: str = "", rtol: float | None = None,
                 params=None, strict_options: bool = False, verbose: bool = True,
                 method: str | None = None, omega: float | None = None,
                 sor_type: str | None = None) -> list:
    """Solve every system of ``family`` with one reusable KSP; returns the results."""
    from hybridsolve.options import unused_options
    from hybridsolve.parallel import print0
    from hybridsolve.solvers.petsc import KrylovSolver

    solver = None
    results = []
    if verbose:
        print0(f"{'system':>6s} {'size':>9s} {'its':>5s} {'reason':>22s} {'true rel res':>12s} "
               f"{'time [s]':>9s}", comm=comm)

    def solve_one(system):
        nonlocal solver
        if solver is None:
            solver = KrylovSolver(comm, prefix=prefix, options=system.default_options, rtol=rtol,
                                  method=method, omega=omega, sor_type=sor_type)
        return solver.solve(system.A, system.b, system.x0)

    for i, system, res in family.solve_each(comm, solve_one, params=params):
        res.info["params_index"] = i
        if i == 0:
            left = unused_options()
            if left:
                msg = f"PETSc option(s) set but never used: {' '.join(left)} (misspelt? wrong prefix?)"
                if strict_options:
                    raise InputError(msg)
                print0(f"hybridsolve: warning: {msg}", comm=comm, file=sys.stderr)
        if verbose:
            print0(f"{i:6d} {system.size:9d} {res.iterations:5d} {res.reason_name:>22s} "
                   f"{res.true_residual:12.3e} {res.time:9.4f}", comm=comm)
        results.append(res)
    if solver is not None:
        solver.destroy()
    return results


def _summary(results: list, comm) -> None:
    from hybridsolve.parallel import print0

    if not results:
        print0("no systems solved", comm=comm)
        return
    its = [r.iterations for r in results]
    bad = [i for i, r in enumerate(results) if not r.converged]
    print0(f"{len(results)} systems, {results[0].method}, residual norm: {results[0].residual_norm}; "
           f"iterations mean {sum(its) / len(its):.1f} (min {min(its)}, max {max(its)}); "
           f"total solve time {sum(r.time for r in results):.3f} s", comm=comm)
    if bad:
        print0(f"hybridsolve: warning: {len(bad)} system(s) did not converge: {bad[:10]}",
               comm=comm, file=sys.stderr)


def cmd_solve(args: argparse.Namespace, comm) -> int:
    import numpy as np

    from hybridsolve.parallel import print0
    from hybridsolve.problems import get_family

    from hybridsolve.solvers.petsc import method_options

    family = get_family(args.family, args.n, args.count, args.seed, **_family_opts(args.opt))
    method_options(args.method, omega=args.omega, sor_type=args.sor_type)  # validate up front
    params = None
    if args.params is not None:
        try:
            params = np.load(args.params, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read parameter file {args.params}: {err}") from None
        if params.ndim < 1 or params.shape[0] < family.count:
            raise InputError(f"{args.params}: holds {params.shape[0] if params.ndim else 0} "
                             f"parameter arrays, --count asks for {family.count}")
        for i in range(family.count):
            family.check_params(params[i])
    from hybridsolve.stack import describe

    print0(f"hybridsolve solve: {family!r} on {comm.size} rank(s); {describe()}", comm=comm)
    results = run_sequence(family, comm, prefix=args.prefix, rtol=args.rtol, params=params,
                           strict_options=args.strict_options, method=args.method,
                           omega=args.omega, sor_type=args.sor_type)
    _summary(results, comm)
    if comm.rank == 0 and args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"family": family.describe(), "n": family.n,
                                         "seed": family.seed, "ranks": comm.size,
                                         "results": [r.to_dict() for r in results]}, indent=1))
    if comm.rank == 0 and args.plot:
        from hybridsolve.plotting import plot_convergence

        plot_convergence(results, args.plot, title=f"{family.name}, n={family.n}")
        print0(f"wrote {args.plot}", comm=comm)
    return 0


def cmd_datagen(args: argparse.Namespace, comm) -> int:
    from hybridsolve.datagen import DatagenConfig, run
    from hybridsolve.parallel import print0

    cfg = DatagenConfig(family=args.family, n=args.n, count=args.count, seed=args.seed,
                        options=_family_opts(args.opt), tol=args.tol, out=args.out,
                        order=args.order, solver=args.solver, warm_start=not args.no_warm_start,
                        mode=args.mode)
    summary = run(cfg, comm, progress=not args.quiet)
    if summary["status"] == "already complete":
        print0(f"{cfg.out} is already complete for this configuration", comm=comm)
        return 0
    print0(f"datagen: {summary['count']} samples of {cfg.family} (n={cfg.n}) in {cfg.out}: "
           f"solver {summary['solver']}, mean {summary['mean_iterations']:.1f} iterations, "
           f"max true residual {summary['max_true_residual']:.2e} (tol {cfg.tol:g}), "
           f"{summary['wall_time']:.2f} s wall on {summary['ranks']} rank(s), {cfg.mode} mode "
           f"({summary['count'] / summary['wall_time']:.1f} samples/s; sort {summary['sort_time']:.3f} s; "
           f"resumed {summary['resumed']} samples)", comm=comm)
    return 0


def _values(text: str | None):
    import numpy as np

    if text is None:
        return None
    try:
        if ":" in text:
            a, b, k = text.split(":")
            return np.linspace(float(a), float(b), int(k))
        return np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise InputError(f"--values: expected a comma list or start:stop:count, got {text!r}") from None


def cmd_tune(args: argparse.Namespace, comm) -> int:
    import numpy as np

    from hybridsolve.parallel import print0
    from hybridsolve.problems import get_family
    from hybridsolve.solvers.petsc import KrylovSolver
    from hybridsolve.tuning.petsc import OptionsTuner, SORTuner, run_tuned_sequence

    family = get_family(args.family, args.n, args.count, args.seed, **_family_opts(args.opt))
    context = args.context if args.context is not None else family.tuning_context
    crange = family.tuning_context_range
    if args.context_range is not None:
        try:
            crange = tuple(float(v) for v in args.context_range.split(","))
        except ValueError:
            raise InputError(f"--context-range: expected low,high, got {args.context_range!r}") from None
    values = _values(args.values)
    kwargs = {"bins": args.bins} if args.learner.replace("_", "-") == "binned-tsallis" else {}
    # what a checkpoint must agree on to be resumed (--count may grow)
    kwargs["run"] = {"family": args.family, "n": args.n, "seed": args.seed,
                     "opt": sorted(args.opt), "learner": args.learner,
                     "learner_seed": args.learner_seed, "values": args.values,
                     "option": args.option, "method": args.method, "cost": args.cost,
                     "rtol": args.rtol, "context": args.context, "prefix": args.prefix}
    if args.option:
        if values is None:
            raise InputError("--option needs --values, the candidate values")
        solver = KrylovSolver(comm, prefix=args.prefix, rtol=args.rtol, method=args.method)
        tuner = OptionsTuner(solver, args.option, values, args.learner, cost=args.cost or "time",
                             context_range=crange, seed=args.learner_seed,
                             checkpoint=args.checkpoint, **kwargs)
    else:
        solver = KrylovSolver(comm, prefix=args.prefix, rtol=args.rtol,
                              method=args.method or "ssor-pcg")
        tuner = SORTuner(solver, args.learner, omegas=values, cost=args.cost or "iterations",
                         context_range=crange, seed=args.learner_seed,
                         checkpoint=args.checkpoint, **kwargs)
    what = f"-{args.option}" if args.option else "omega"
    print0(f"hybridsolve tune: {family!r} on {comm.size} rank(s); learner {tuner.learner.kind} "
           f"over {tuner.learner.n_arms} values of {what}, cost {tuner.cost}, context "
           f"{context or 'none'}", comm=comm)
    start = tuner.learner.t if tuner.resumed else 0
    if start:
        print0(f"resuming from {args.checkpoint}: systems 0..{start - 1} done, continuing at "
               f"system {start} of {family.count}", comm=comm)
    if start >= family.count:
        print0("nothing left to do (raise --count to continue the sequence)", comm=comm)
        return 0
    results = run_tuned_sequence(family, tuner, context=context, progress=not args.quiet,
                                 start=start)
    _summary(results, comm)
    print0(tuner.summary(), comm=comm)
    if comm.rank == 0 and args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "family": family.describe(), "n": family.n, "seed": family.seed, "ranks": comm.size,
            "tuned": args.option or "pc_sor_omega", "cost": tuner.cost,
            "values": [float(v) for v in tuner.values],
            "contexts": [r.info.get("context") for r in results],
            "results": [r.to_dict() for r in results],
            "learner": tuner.learner.state_dict()}, indent=1))
    if comm.rank == 0 and args.plot:
        from hybridsolve.plotting import plot_tuning

        costs = [r.iterations if tuner.cost == "iterations" else r.time for r in results]
        plot_tuning(np.array(costs, dtype=float), np.array(tuner.values), args.plot,
                    cost_label=tuner.cost, value_label=what,
                    title=f"{family.name}, n={family.n}: {tuner.learner.kind}")
        print0(f"wrote {args.plot}", comm=comm)
    return 0


def cmd_train(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.training import TrainConfig, train_dcdm
    from hybridsolve.parallel import print0

    if comm.size > 1:
        raise InputError("train runs on one rank (run it without mpiexec)")
    cfg = TrainConfig(n=args.n, dim=args.dim, obstacles=args.obstacles, matrices=args.matrices,
                      lanczos=args.lanczos, samples=args.samples, epochs=args.epochs,
                      batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                      out=args.out)
    summary = train_dcdm(cfg, progress=not args.quiet, log=lambda m: print0(m, comm=comm))
    loss = summary["loss_history"]
    print0(f"train dcdm: {summary['samples']} right-hand sides, {cfg.epochs} epochs, loss "
           f"{loss[0]:.4f} -> {loss[-1]:.4f}, {summary['time']:.1f} s; wrote {summary['out']} "
           f"(use it with -pc_torch_model {summary['out']})", comm=comm)
    return 0


def _demo_runs(family: str) -> list:
    """The four ways the demo generates a family's dataset (strongest independent solvers as
    measured in benchmarks/results/skr_bar.md)."""
    strongest = ({"solver": "cg", "petsc": {"pc_type": "icc"}}, "CG + ICC") if family == "darcy" \
        else ({"solver": "gmres", "petsc": {"pc_type": "ilu", "ksp_gmres_restart": 100}},
              "GMRES(100) + ILU")
    # with no PC, GMRES(40) stagnates on the (really indefinite) Helmholtz systems: the paper's
    # rows use ILU there
    pc = "none" if family == "darcy" else "ilu"
    return [
        (f"independent GMRES(40), PC {pc} (the paper's baseline)",
         dict(solver="gmres", order="none", warm_start=False, petsc={"pc_type": pc})),
        (f"SKR: sorted + GCRO-DR(40,20), PC {pc} (the paper's method)",
         dict(solver="gcrodr", order="auto", warm_start=False, petsc={"pc_type": pc})),
        (f"independent {strongest[1]} (strongest independent)",
         dict(order="none", warm_start=False, reuse_matrix=False, reuse_pattern=False,
              **strongest[0])),
        ("datagen default (SKR mode, auto)", dict()),
    ]


def cmd_demo(args: argparse.Namespace, comm) -> int:
    """The main job on an embedded default: Darcy and Helmholtz datasets, each generated four
    ways, with the speed-up table."""
    from hybridsolve.datagen import DatagenConfig, run
    from hybridsolve.parallel import print0
    from hybridsolve.stack import describe

    out = Path(args.out)
    if comm.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    print0(f"hybridsolve demo: datasets of {args.count} systems, tol 1e-8 on ||b - Ax||/||b||, "
           f"{comm.size} rank(s), data-parallel datagen; stack: {describe()}", comm=comm)
    tables = {}
    for family, opts in (("darcy", {"discretization": "grid"}), ("helmholtz", {})):
        n = args.n if family == "darcy" else max(args.n - 1, 32)  # keep k h below 0.7
        rows = []
        for i, (label, kw) in enumerate(_demo_runs(family)):
            path = out / f"demo_{family}_{i}.h5"
            if comm.rank == 0 and path.exists():
                path.unlink()
            comm.Barrier()
            cfg = DatagenConfig(family=family, n=n, count=args.count, out=str(path),
                                options=opts, tol=1e-8, **kw)
            s = run(cfg, comm, progress=False)
            rows.append((label, s["solver"], s["mean_iterations"], s["wall_time"],
                         s["max_true_residual"]))
        tables[family] = rows
        base, strong = rows[0][3], rows[2][3]
        print0("", comm=comm)
        print0(f"{family} ({'5-point grid' if family == 'darcy' else 'P1, k in [10, 20]'}, "
               f"n={n}):", comm=comm)
        print0(f"  {'method':58s} {'its/sample':>10s} {'wall [s]':>9s} {'vs paper base':>13s} "
               f"{'vs strongest':>12s} {'max res':>9s}", comm=comm)
        for label, _, its, wall, res in rows:
            print0(f"  {label:58s} {its:10.1f} {wall:9.2f} {base / wall:12.2f}x "
                   f"{strong / wall:11.2f}x {res:9.1e}", comm=comm)
    if comm.rank == 0:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), dpi=110, sharey=True)
        for ax, (family, rows) in zip(axes, tables.items()):
            ax.barh([r[0].split(" (")[0] for r in rows][::-1], [r[3] for r in rows][::-1],
                    color="tab:blue")
            ax.set_xlabel(f"wall time for {args.count} samples [s]")
            ax.set_title(family)
        fig.suptitle(f"dataset generation on {comm.size} rank(s): independent solves vs SKR")
        fig.tight_layout()
        fig.savefig(out / "demo_speedup.png")
        plt.close(fig)
        print0(f"\nwrote the datasets out/demo_*_3.h5 and {out / 'demo_speedup.png'}", comm=comm)
    if any(r[4] > 1e-8 * (1 + 1e-6) for rows in tables.values() for r in rows):
        raise RuntimeError("demo: a sample missed the tolerance")
    return 0


_EXPR_NAMES = {k: getattr(__import__("numpy"), k) for k in (
    "exp", "sin", "cos", "tan", "tanh", "cosh", "sinh", "sqrt", "abs", "log", "pi", "arctan2",
    "minimum", "maximum", "where")}


def _monitor_from_args(args: argparse.Namespace):
    import numpy as np

    from hybridsolve.movement import BallMonitor, CallableMonitor, ConstantMonitor, RingMonitor

    opts = _family_opts(args.monitor_opt)
    kw: dict[str, Any] = {}
    for k, v in opts.items():
        try:
            kw[k] = tuple(float(t) for t in v.split(",")) if k == "center" else float(v)
        except ValueError:
            raise InputError(f"--monitor-opt {k}={v!r}: not a number") from None
    name = args.monitor
    kinds = {"ring": RingMonitor, "ball": BallMonitor}
    try:
        if name in kinds:
            return kinds[name](**kw)
        if name == "constant":
            return ConstantMonitor(kw.get("value", 1.0))
    except TypeError as err:
        raise InputError(f"--monitor-opt for {name}: {err}") from None
    if name.startswith("expr:"):
        code = name[5:]
        try:
            compiled = compile(code, "<monitor>", "eval")
        except SyntaxError as err:
            raise InputError(f"--monitor expression {code!r}: {err.msg}") from None

        def fn(x):
            env = dict(_EXPR_NAMES, x=x[0], y=x[1], z=x[2] if len(x) > 2 else 0 * x[0])
            try:
                out = eval(compiled, {"__builtins__": {}}, env)  # noqa: S307 - the user's own expression
            except Exception as err:  # noqa: BLE001
                raise InputError(f"--monitor expression {code!r} failed: {err}") from None
            return np.broadcast_to(np.asarray(out, dtype=float), x[0].shape)

        return CallableMonitor(fn, name=code)
    raise InputError(f"unknown monitor {name!r}: ring, ball, constant or expr:<expression>")


def cmd_move(args: argparse.Namespace, comm) -> int:
    """Move one mesh by a monitor and report/write the result."""
    from hybridsolve.movement import create_mover, gather_cells, plot_meshes, write_mesh
    from hybridsolve.movement import cell_metrics, mesh_quality
    from hybridsolve.options import unused_options
    from hybridsolve.parallel import print0

    import dolfinx
    import dolfinx.io

    if args.mesh is not None:
        if not args.mesh.exists():
            raise InputError(f"mesh file {args.mesh} does not exist")
        try:
            with dolfinx.io.XDMFFile(comm, str(args.mesh), "r") as xf:
                mesh = xf.read_mesh(name=args.mesh_name)
        except RuntimeError as err:
            raise InputError(f"cannot read mesh {args.mesh_name!r} from {args.mesh}: {err}") from None
    elif args.square is not None:
        if args.square < 1:
            raise InputError("--square needs N >= 1")
        mesh = dolfinx.mesh.create_unit_square(comm, args.square, args.square)
    else:
        from hybridsolve.problems.fem import gmsh_domain

        if args.domain not in ("lshape", "square_hole"):
            raise InputError(f"unknown --domain {args.domain!r}: lshape or square_hole")
        mesh = gmsh_domain(comm, args.domain, args.n)
    monitor = _monitor_from_args(args)
    before = gather_cells(mesh)[0]
    mover = create_mover(args.mover, mesh, monitor, variant=args.variant, rtol=args.rtol,
                         max_it=args.max_it, pinned=True if args.pinned == "all" else None)
    q0 = mesh_quality(mesh, mover.evaluate_monitor(monitor, mover.xi), space=mover.space,
                      reference_sign=mover.ref_sign)
    mover.reset()
    print0(f"moving {q0['cells']} cells on {comm.size} rank(s) by {monitor.name} "
           f"({mover.method}, rtol {mover.rtol:g})", comm=comm)
    res = mover.move()
    q = res.info["quality"]
    print0(res.summary(), comm=comm)
    print0(f"  {'':22s} {'before':>10s} {'after':>10s}", comm=comm)
    for key in ("equidistribution_cv", "weighted_volume_ratio", "volume_ratio", "aspect_ratio_max",
                "q_eq_max", "q_ali_max", "inverted"):
        print0(f"  {key:22s} {q0[key]:10.4g} {q[key]:10.4g}", comm=comm)
    if args.out:
        path = write_mesh(mesh, args.out, monitor_values=mover.monitor_values, space=mover.space)
        print0(f"wrote {path}", comm=comm)
    if args.plot:
        cm = cell_metrics(mesh, mover.monitor_values, space=mover.space)
        after, vals = gather_cells(mesh, cm["equidistribution"])
        if comm.rank == 0:
            plot_meshes([("before", before, None), (f"after ({res.iterations} its)", after, vals)],
                        args.plot, label="m|K| / mean", title=f"{mover.method}: {monitor.name}")
        print0(f"wrote {args.plot}", comm=comm)
    if args.json and comm.rank == 0:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"result": res.to_dict(), "quality_before": q0}, indent=1))
    left = unused_options()
    if left:
        print0(f"WARNING: PETSc options nobody used: {' '.join(left)}", comm=comm)
    return 0


def _unknown_flags(parser: argparse.ArgumentParser, command: str | None,
                   extra: Sequence[str]) -> str | None:
    """The one-line error for the first unknown ``--flag`` in ``extra`` (else None)."""
    bad = next((t for t in extra if t.startswith("--")), None)
    if bad is None:
        return None
    known: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            known = [o for a in action.choices[command]._actions for o in a.option_strings]
    name = bad.split("=", 1)[0]
    close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"hybridsolve {command}: unknown option {name}{hint}"


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path the command will write is checked before the work starts."""
    for attr in ("json", "plot", "out", "checkpoint"):
        path = getattr(args, attr, None)
        if path is None:
            continue
        path = Path(path)
        if attr == "plot" and path.suffix.lower() != ".png":
            raise InputError(f"--plot {path}: the plot is a PNG file (.png)")
        if attr == "json" and path.suffix.lower() != ".json":
            raise InputError(f"--json {path}: expected a .json file")
        folder = path if (attr == "out" and args.command == "demo") else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok = folder.is_dir() and os.access(folder, os.W_OK)
        except OSError:
            ok = False
        if not ok:
            raise InputError(f"--{attr} {path}: cannot write there ({folder} is not a writable "
                             "folder)")
        if path.is_dir() and not (attr == "out" and args.command == "demo"):
            raise InputError(f"--{attr} {path}: is a folder, expected a file name")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # -h is ours; every other single-dash token is PETSc's (-help, -vec_type, ...)
    argv = ["--help" if a == "-h" else a for a in argv]
    parser = _parser()
    args, petsc_args = parser.parse_known_args(argv)
    from hybridsolve import stack

    from hybridsolve.parallel import run_collective_main

    comm = stack.MPI.COMM_WORLD
    typo = _unknown_flags(parser, args.command, petsc_args)
    if typo is not None:
        if comm.rank == 0:
            print(typo, file=sys.stderr, flush=True)
        return 2
    from hybridsolve import log

    log.configure(getattr(args, "verbose", 0) - int(bool(getattr(args, "quiet", False))))

    def body() -> int:
        from hybridsolve.options import parse_args

        parse_args(petsc_args)  # fails clearly on stray tokens
        _check_outputs(args)
        stack.init(petsc_args)
        if args.command == "problems":
            return cmd_problems(args)
        if args.command == "solve":
            return cmd_solve(args, comm)
        if args.command == "datagen":
            return cmd_datagen(args, comm)
        if args.command == "train":
            return cmd_train(args, comm)
        if args.command == "tune":
            return cmd_tune(args, comm)
        if args.command == "demo":
            return cmd_demo(args, comm)
        if args.command == "move":
            return cmd_move(args, comm)
        raise InputError(f"unknown command {args.command}")  # pragma: no cover

    return run_collective_main(body, comm, debug=getattr(args, "debug", False))


if __name__ == "__main__":
    raise SystemExit(main())
