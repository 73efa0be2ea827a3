"""``hybridsolve solve``: solve a sequence of systems of a family with PETSc."""

from __future__ import annotations

import argparse
import json
import logging

from hybridsolve.errors import InputError
from hybridsolve.cli.args import family_opts, report_unused

log = logging.getLogger(__name__)


def run_sequence(family, comm, *, prefix: str = "", rtol: float | None = None,
                 params=None, strict_options: bool = False, verbose: bool = True,
                 method: str | None = None, omega: float | None = None,
                 sor_type: str | None = None) -> list:
    """Solve every system of ``family`` with one reusable KSP; returns the results."""
    from hybridsolve.parallel import print0
    from hybridsolve.solvers.petsc import KrylovSolver

    solver = None
    results = []
    if verbose:
        print0(f"{'system':>6s} {'size':>9s} {'its':>5s} {'reason':>22s} {'true rel res':>12s} "
               f"{'time [s]':>9s}", comm=comm)

    def solve_one(system):
        nonlocal solver
        if solver is not None and not family.fixed_size:   # a new mesh: a new KSP
            solver.destroy()
            solver = None
        if solver is None:
            solver = KrylovSolver(comm, prefix=prefix, options=system.default_options, rtol=rtol,
                                  method=method, omega=omega, sor_type=sor_type)
        return solver.solve(system.A, system.b, system.x0)

    for i, system, res in family.solve_each(comm, solve_one, params=params):
        res.info["params_index"] = i
        if i == 0:  # the solver is configured: what it did not read, nobody will
            report_unused(comm, strict_options)
        if verbose:
            print0(f"{i:6d} {system.size:9d} {res.iterations:5d} {res.reason_name:>22s} "
                   f"{res.true_residual:12.3e} {res.time:9.4f}", comm=comm)
        results.append(res)
    if solver is not None:
        solver.destroy()
    return results


def print_summary(results: list, comm) -> None:
    """One line over a sequence's results (rank 0), a warning for systems that did not
    converge."""
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
        log.warning("%d system(s) did not converge: %s", len(bad), bad[:10])


def cmd_solve(args: argparse.Namespace, comm) -> int:
    """Solve ``--count`` systems of a family with one KSP; a table, a summary, JSON and a plot."""
    import numpy as np

    from hybridsolve.parallel import print0
    from hybridsolve.problems import get_family

    from hybridsolve.solvers.petsc import method_options

    family = get_family(args.family, args.n, args.count, args.seed, **family_opts(args.opt))
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
    print_summary(results, comm)
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
