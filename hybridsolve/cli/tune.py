"""``hybridsolve tune``: learn SOR's omega (or a PETSc option) across a sequence."""

from __future__ import annotations

import argparse
import json

from hybridsolve.errors import InputError
from hybridsolve.cli.args import family_opts
from hybridsolve.cli.solve import print_summary


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

    family = get_family(args.family, args.n, args.count, args.seed, **family_opts(args.opt))
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
    print_summary(results, comm)
    print0(tuner.summary(), comm=comm)
    if comm.rank == 0 and args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "family": family.describe(), "n": family.n, "seed": family.seed, "ranks": comm.size,
            "tuned": args.option or "pc_sor_omega", "cost": tuner.cost,
            "first_system": start, "count": family.count,
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
