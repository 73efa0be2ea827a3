"""``hybridsolve datagen``: generate a dataset (sorted chain, recycling, restartable HDF5)."""

from __future__ import annotations

import argparse

from hybridsolve.cli.args import family_opts


def cmd_datagen(args: argparse.Namespace, comm) -> int:
    from hybridsolve.datagen import DatagenConfig, run
    from hybridsolve.parallel import print0

    cfg = DatagenConfig(family=args.family, n=args.n, count=args.count, seed=args.seed,
                        options=family_opts(args.opt), tol=args.tol, out=args.out,
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
