"""``hybridsolve train``: train a learned component."""

from __future__ import annotations

import argparse

from hybridsolve.errors import InputError


def cmd_train(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.training import TrainConfig, train_dcdm
    from hybridsolve.parallel import print0

    if comm.size > 1:
        raise InputError("train runs on one rank (run it without mpiexec)")
    cfg = TrainConfig(n=args.n, dim=args.dim, obstacles=args.obstacles, matrices=args.matrices,
                      lanczos=args.lanczos, samples=args.samples, epochs=args.epochs,
                      batch=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
                      out=args.out, arch=args.arch, channels=args.channels, smooth=args.smooth,
                      rhs=args.rhs, init=args.init)
    summary = train_dcdm(cfg, progress=not args.quiet, log=lambda m: print0(m, comm=comm))
    loss = summary["loss_history"]
    print0(f"train dcdm: {summary['samples']} right-hand sides, {cfg.epochs} epochs, loss "
           f"{loss[0]:.4f} -> {loss[-1]:.4f}, {summary['time']:.1f} s; wrote {summary['out']} "
           f"(use it with -pc_torch_model {summary['out']})", comm=comm)
    return 0
