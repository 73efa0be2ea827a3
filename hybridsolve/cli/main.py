"""The ``hybridsolve`` command: the parser and the dispatch (one module per command in
:mod:`hybridsolve.cli`, shared flags and checks in :mod:`hybridsolve.cli.args`).

Single-dash arguments are PETSc options (``-ksp_monitor``, ``-<prefix>pc_type gamg``); the
only single-dash arguments that are ours are ``-h``, ``-v``/``-vv`` and ``-q``. An unknown
``--flag`` is an error (exit code 2, one line naming the closest valid flag), and so is any
other usage error; PETSc options nobody read are a warning (``--strict-options``: an error).

Run under MPI as ``mpiexec -n 4 hybridsolve solve --family darcy --n 128 --count 10
-ksp_monitor -pc_type gamg``. Every message is printed once, by rank 0 where the failure allows.
An error on any rank ends the whole job with a one-line message (``--debug`` shows the
traceback and PETSc's trace); Ctrl-C ends every rank with exit code 130. Output paths are
checked before the work starts.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from hybridsolve.cli.args import (Parser, UsageError, add_common, check_outputs,
                                  normalise, report_unused, suggest, unknown_flags, world_rank)

COMMANDS = ("problems", "solve", "datagen", "verify", "tune", "train", "move", "demo")


def _parser() -> argparse.ArgumentParser:
    from hybridsolve.solvers.registry import method_names

    p = Parser(
        prog="hybridsolve", add_help=False, allow_abbrev=False,
        description="Solver-in-the-loop scientific computing on PETSc/DOLFINx. Arguments not "
                    "listed here are passed to PETSc (e.g. -ksp_monitor -pc_type gamg).")
    from hybridsolve import __version__

    p.add_argument("--help", action="help", help="show this help and exit (also -h)")
    p.add_argument("--version", action="version", version=f"hybridsolve {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="command",
                           parser_class=Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, add_help=False,
                            allow_abbrev=False,
                            epilog="Single-dash arguments are PETSc options (-ksp_monitor, "
                                   "-<prefix>pc_type gamg, -log_view).")
        add_common(sp)
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
    g.add_argument("--solver", default="auto", choices=["auto", *method_names()],
                   metavar="SOLVER",
                   help=f"auto, {', '.join(method_names())} (default auto). The solver's own "
                        "settings are PETSc options under the datagen prefix, e.g. "
                        "-datagen_ksp_gcrodr_m 40 -datagen_ksp_gcrodr_k 20 -datagen_pc_type ilu")
    g.add_argument("--no-warm-start", action="store_true",
                   help="start every solve from zero instead of the chain neighbour's solution")
    g.add_argument("--mode", default="data", choices=["data", "domain"],
                   help="under MPI: split the chain over ranks (data) or distribute each system")

    v = add("verify", "check a datagen dataset: re-assemble every sample's system from the "
                      "file and recompute its true residual ||b - Ax|| / ||b|| (exit code 1 "
                      "when any sample is above the stored tolerance)")
    v.add_argument("file", type=Path, help="the dataset (.h5)")
    v.add_argument("--json", type=Path, help="write the report (per-sample residuals) as JSON")

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
    t.add_argument("--checkpoint", type=Path,
                   help="learner checkpoint (.json), written after every solve; a rerun with "
                        "the same configuration resumes the sequence where it stopped (raise "
                        "--count to go on), one from another configuration is refused")
    t.add_argument("--json", type=Path, help="write per-solve results and the learner state")
    t.add_argument("--plot", type=Path, help="write a plot (PNG) of cumulative cost and values")

    tr = add("train", "train a learned component: 'train dcdm' trains DCDM's network label-free "
                      "on Ritz vectors of structured-grid Poisson matrices with obstacles")
    tr.add_argument("what", choices=["dcdm", "npsolver", "dmm", "um2n"],
                    help="dcdm: DCDM's network; npsolver: the neural Poisson solver on cutsquare "
                         "(--dim 3: cutbox) meshes (label-free by PCG steps from its prediction, or a baseline loss); "
                         "dmm: the data-free mesh mover (Monge-Ampere residual on random "
                         "analytic monitors; --iterations, --batch, --lr, --width); um2n: the "
                         "graph mover on meshes moved by Monge-Ampere (--data, --samples)")
    tr.add_argument("--n", type=int, default=None,
                    help="dcdm: grid points per side (default 32); npsolver: mesh size 1/n "
                         "(default 16, --dim 3: 8)")
    tr.add_argument("--dim", type=int, default=2, choices=[2, 3],
                    help="2 or 3 (default 2); npsolver: 3 trains on the cutbox family")
    tr.add_argument("--obstacles", type=int, default=3, help="solid boxes per matrix (default 3)")
    tr.add_argument("--matrices", type=int, default=4, help="training matrices (default 4)")
    tr.add_argument("--lanczos", type=int, default=300, help="Lanczos steps per matrix (default 300)")
    tr.add_argument("--samples", type=int, default=None,
                    help="dcdm: right-hand sides, npsolver: samples (default 2000); um2n: moved "
                         "meshes in --data (default 240)")
    tr.add_argument("--epochs", type=int, default=None,
                    help="epochs (default: dcdm/npsolver 15, um2n 40; um2n --epochs 0: only "
                         "make the missing data, on any number of ranks)")
    tr.add_argument("--data", default=None,
                    help="um2n: the directory of moved meshes (made where missing, restartable)")
    tr.add_argument("--monitor-kinds", default="analytic",
                    help="um2n data: comma list of analytic, gradient, hessian (how the random "
                         "field becomes the monitor; default analytic)")
    tr.add_argument("--batch", type=int, default=None,
                    help="batch size (default: dcdm 16, npsolver 16, dmm 8 monitors)")
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tr.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    tr.add_argument("--arch", default="dcdm", choices=["dcdm", "vcycle", "mg"],
                    help="dcdm: the paper's net (one coarse level); vcycle: a bias-free V-cycle "
                         "U-Net whose levels grow with the grid; mg: a V-cycle over the "
                         "operator's Galerkin levels with a learned convolutional smoother "
                         "shared by every level (default dcdm)")
    tr.add_argument("--layers", type=int, default=1,
                    help="mg: convolutions in the smoother network (default 1)")
    tr.add_argument("--nu", type=int, default=1,
                    help="mg: smoothing steps before and after each coarse correction (default 1)")
    tr.add_argument("--channels", type=int, default=16, help="feature channels (default 16)")
    tr.add_argument("--smooth", type=int, default=2, help="vcycle: conv layers per smoothing "
                                                          "block (default 2)")
    tr.add_argument("--rhs", default="ritz", choices=["ritz", "smooth"],
                    help="ritz: stored Lanczos Ritz-vector data (the paper); smooth: random "
                         "fields after random numbers of Jacobi sweeps, drawn on the fly")
    tr.add_argument("--init", default="", help="start from this model file (same architecture): "
                                                "warm start, curriculum across grid sizes")
    tr.add_argument("--geometries", type=int, default=32,
                    help="npsolver: training meshes (geometries of the family, default 32)")
    tr.add_argument("--mesh-sizes", default="",
                    help="npsolver: more mesh sizes (comma list, e.g. 12,16): the geometries are "
                         "meshed round robin at 1/n and these")
    tr.add_argument("--steps", type=int, default=40,
                    help="npsolver: Jacobi-PCG steps of the physics target (default 40)")
    tr.add_argument("--loss", default="physics", choices=["physics", "supervised", "residual"],
                    help="npsolver: physics (label-free, stop-gradient PCG target), supervised "
                         "(direct solutions of the same samples) or residual (||b - Ap||/||b||)")
    tr.add_argument("--bc", default="random", choices=["fixed", "random"],
                    help="npsolver: all Dirichlet, or Dirichlet/Neumann per boundary patch")
    tr.add_argument("--width", type=int, default=None,
                    help="npsolver: transformer width (64); dmm: trunk width (128)")
    tr.add_argument("--blocks", type=int, default=4, help="npsolver: transformer blocks (4)")
    tr.add_argument("--heldout", type=int, default=32,
                    help="npsolver: held-out samples (other geometries) for the error (32)")
    tr.add_argument("--coord-weight", type=float, default=0.0,
                    help="um2n: weight of a coordinate loss next to the area and chamfer losses "
                         "(default 0, the paper's)")
    tr.add_argument("--iterations", type=int, default=4000,
                    help="dmm: optimisation steps, one batch of monitors each (default 4000)")
    tr.add_argument("--out", required=True, help="model file (.safetensors); a rerun resumes "
                                                 "(dcdm, npsolver; dmm starts again)")

    mv = add("move", "move a mesh by a monitor function (Monge-Ampere r-adaptation) and write it "
                     "with its quality metrics")
    src = mv.add_mutually_exclusive_group(required=True)
    src.add_argument("--mesh", type=Path, help="XDMF mesh file (mesh named 'mesh', or --mesh-name)")
    src.add_argument("--square", type=int, metavar="N", help="an N x N unit-square triangle mesh")
    src.add_argument("--domain", help="a gmsh domain: lshape, square_hole, slot (with --n)")
    mv.add_argument("--mesh-name", default="mesh", help="mesh name in the XDMF file (default mesh)")
    mv.add_argument("--n", type=int, default=20, help="mesh size 1/n of --domain (default 20)")
    mv.add_argument("--monitor", default="ring",
                    help="ring, ball, constant, or expr:<numpy expression in x, y, z> "
                         "(default ring)")
    mv.add_argument("--monitor-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="monitor parameter, repeatable: alpha, beta, radius, center=cx,cy")
    mv.add_argument("--mover", default=None, help="mover by name: monge-ampere, dmm (default: "
                                                  "-mover_type, else monge-ampere)")
    mv.add_argument("--model", default=None,
                    help="a learned mover's weights file or shipped name (default: its own)")
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
    d.add_argument("--n", type=int, default=99,
                   help="grid size parameter (default 99: 9604 Darcy unknowns)")
    d.add_argument("--count", type=int, default=64, help="samples (default 64)")
    d.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hybridsolve`` command; returns the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command runs (imports); afterwards run_collective_main
        if world_rank() == 0:
            print("hybridsolve: interrupted", file=sys.stderr, flush=True)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, bad = normalise(argv, COMMANDS)
    parser = _parser()
    try:
        if bad is not None:
            name = bad.split("=", 1)[0]
            known = [o for a in parser._actions for o in a.option_strings]
            for a in parser._subparsers._group_actions:  # a command's flags, put too early
                known += [o for sp in a.choices.values() for b in sp._actions
                          for o in b.option_strings]
            raise UsageError(f"hybridsolve: unknown option {name}{suggest(name, known)}")
        args, petsc_args = parser.parse_known_args(argv)
        typo = unknown_flags(parser, args.command, petsc_args)
        if typo is not None:
            raise UsageError(typo)
    except UsageError as err:
        if world_rank() == 0:
            print(err, file=sys.stderr, flush=True)
        return 2
    from hybridsolve import log, stack
    from hybridsolve.parallel import run_collective_main

    log.configure(-1 if args.quiet else args.verbose)
    logger = logging.getLogger(__name__)
    # we report options nobody used (once, rank 0); PETSc's own report at exit would repeat it
    given = " ".join(petsc_args) or "none"
    if not any(t.lstrip("-") == "options_left" for t in petsc_args):
        petsc_args = [*petsc_args, "-options_left", "0"]
    comm = stack.MPI.COMM_WORLD

    def body() -> int:
        from hybridsolve.parallel import collective_call

        stack.parse_args(petsc_args)  # fails clearly on stray tokens
        collective_call(comm, lambda: check_outputs(args))
        stack.init(petsc_args)
        logger.info("%s on %d rank(s); PETSc options: %s", args.command, comm.size, given)
        logger.debug("arguments: %s", vars(args))
        from hybridsolve.cli import datagen, demo, move, problems, solve, train, tune, verify

        commands = {"problems": lambda: problems.cmd_problems(args),
                    "solve": lambda: solve.cmd_solve(args, comm),
                    "datagen": lambda: datagen.cmd_datagen(args, comm),
                    "verify": lambda: verify.cmd_verify(args, comm),
                    "train": lambda: train.cmd_train(args, comm),
                    "tune": lambda: tune.cmd_tune(args, comm),
                    "demo": lambda: demo.cmd_demo(args, comm),
                    "move": lambda: move.cmd_move(args, comm)}
        code = commands[args.command]()
        report_unused(comm, args.strict_options)
        return code

    return run_collective_main(body, comm, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
