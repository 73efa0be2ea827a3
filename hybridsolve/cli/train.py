"""``hybridsolve train``: train a learned component."""

from __future__ import annotations

import argparse

from hybridsolve.errors import InputError


def cmd_train(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.training import TrainConfig, train_dcdm
    from hybridsolve.parallel import print0

    if args.what == "um2n":
        return _train_um2n(args, comm)
    if comm.size > 1:
        raise InputError("train runs on one rank (run it without mpiexec)")
    if args.what == "npsolver":
        return _train_npsolver(args, comm)
    if args.what == "dmm":
        return _train_dmm(args, comm)
    cfg = TrainConfig(n=32 if args.n is None else args.n, dim=args.dim, obstacles=args.obstacles, matrices=args.matrices,
                      lanczos=args.lanczos, samples=args.samples or 2000,
                      epochs=args.epochs if args.epochs is not None else 15,
                      batch=args.batch or 16, lr=args.lr, seed=args.seed, threads=args.threads,
                      out=args.out, arch=args.arch, channels=args.channels, smooth=args.smooth,
                      rhs=args.rhs, init=args.init, layers=args.layers, nu=args.nu)
    summary = train_dcdm(cfg, progress=not args.quiet, log=lambda m: print0(m, comm=comm))
    loss = summary["loss_history"]
    print0(f"train dcdm: {summary['samples']} right-hand sides, {cfg.epochs} epochs, loss "
           f"{loss[0]:.4f} -> {loss[-1]:.4f}, {summary['time']:.1f} s; wrote {summary['out']} "
           f"(use it with -pc_torch_model {summary['out']})", comm=comm)
    return 0


def _train_npsolver(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.npsolver import NPTrainConfig, train_npsolver
    from hybridsolve.parallel import print0

    from hybridsolve.learned.npsolver import FAMILIES

    n = args.n if args.n is not None else (16 if args.dim == 2 else 8)
    cfg = NPTrainConfig(n=n, family=FAMILIES[args.dim], geometries=args.geometries,
                        samples=args.samples or 2000,
                        epochs=args.epochs if args.epochs is not None else 15, batch=args.batch or 16, lr=args.lr, steps=args.steps,
                        loss=args.loss, bc=args.bc, seed=args.seed, width=args.width or 64,
                        blocks=args.blocks, heldout=args.heldout, threads=args.threads,
                        sizes=args.mesh_sizes, init=args.init, out=args.out)
    import sys

    summary = train_npsolver(cfg, progress=not args.quiet and sys.stderr.isatty(),
                             epoch_lines=not args.quiet, log=lambda m: print0(m, comm=comm))
    loss, ev = summary["loss_history"], summary["heldout"]
    print0(f"train npsolver ({cfg.loss} loss, bc {cfg.bc}): {summary['samples']} samples on "
           f"{cfg.geometries} {cfg.family} meshes, {cfg.epochs} epochs, loss {loss[0]:.4g} -> {loss[-1]:.4g}, "
           f"held-out relative L2 error {ev['rel_l2_mean']:.4f} (max {ev['rel_l2_max']:.4f}, "
           f"{ev['samples']} samples on other geometries), {summary['parameters']} parameters, "
           f"{summary['time']:.1f} s; wrote {summary['out']}", comm=comm)
    return 0


def _train_dmm(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.dmm import DMMTrainConfig, train_dmm
    from hybridsolve.parallel import print0

    cfg = DMMTrainConfig(steps=args.iterations, batch=args.batch or 8, lr=args.lr, seed=args.seed,
                         width=args.width or 128, threads=max(1, args.threads), out=args.out)
    summary = train_dmm(cfg, log=lambda m: print0(m, comm=comm),
                        every=max(1, min(100, cfg.steps // 10)))
    v = summary["validation"]
    print0(f"train dmm: {cfg.steps} steps of {cfg.batch} monitors, Monge-Ampere residual on "
           f"held-out monitors {v['before']:.4f} -> {v['after']:.4f}, {summary['skipped']} "
           f"non-finite batches skipped, {summary['parameters']} parameters, "
           f"{summary['time']:.1f} s; wrote {summary['out']} (use it with -mover_type dmm "
           f"-mover_model {summary['out']})", comm=comm)
    return 0


def _train_um2n(args: argparse.Namespace, comm) -> int:
    from hybridsolve.learned.um2n import UM2NTrainConfig, train_um2n
    from hybridsolve.movement.data import MoveDataConfig, generate_move_data
    from hybridsolve.parallel import print0

    if not args.data:
        raise InputError("train um2n needs --data DIR (the moved meshes; made where missing)")
    epochs = 40 if args.epochs is None else args.epochs
    if epochs > 0 and comm.size > 1:
        raise InputError("train um2n trains on one rank: make the data on several with "
                         "--epochs 0, then train without mpiexec")
    kinds = tuple(k.strip() for k in args.monitor_kinds.split(",") if k.strip())
    bad = [k for k in kinds if k not in ("analytic", "gradient", "hessian")]
    if bad or not kinds:
        raise InputError(f"--monitor-kinds: {', '.join(bad) or 'none given'}; use analytic, "
                         "gradient, hessian")
    generate_move_data(MoveDataConfig(samples=args.samples or 240, seed=args.seed, out=args.data,
                                      monitors=kinds),
                       comm, log=lambda m: print0(m, comm=comm))
    if epochs == 0:
        return 0
    cfg = UM2NTrainConfig(data=args.data, epochs=epochs, lr=args.lr, width=args.width or 64,
                          seed=args.seed, threads=max(1, args.threads), out=args.out,
                          coord_weight=args.coord_weight)
    s = train_um2n(cfg, log=lambda m: print0(m, comm=comm))
    h = s["heldout"]
    print0(f"train um2n: {s['samples']} moved meshes, {epochs} epochs, held-out area loss "
           f"{h['before']['area']:.4f} -> {h['after']['area']:.4f}, coordinate error "
           f"{h['before']['coord']:.3f} -> {h['after']['coord']:.3f} h, {s['parameters']} "
           f"parameters, {s['time']:.1f} s; wrote {s['out']} (use it with -mover_type um2n "
           f"-mover_model {s['out']})", comm=comm)
    return 0
