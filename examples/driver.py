"""An mpirun driver script using the hybridsolve Python API.

    mpiexec -n 4 python examples/driver.py --family darcy --n 128 --count 10 -ksp_monitor

Arguments after the driver's own are PETSc options (read under the prefix ``drv_`` for the
solver, e.g. ``-drv_pc_type gamg``, and globally, e.g. ``-log_view``).
"""

from __future__ import annotations

import argparse
import sys

from hybridsolve import stack

parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--family", default="darcy")
parser.add_argument("--n", type=int, default=64)
parser.add_argument("--count", type=int, default=4)
parser.add_argument("--seed", type=int, default=0)
args, petsc_args = parser.parse_known_args()
if any(a.startswith("--") for a in petsc_args):  # a typo, not a PETSc option (those are -name)
    parser.error(f"unknown option {next(a for a in petsc_args if a.startswith('--'))}")
PETSc = stack.init(petsc_args)  # before anything else touches PETSc: -log_view etc. work

from hybridsolve import KrylovSolver, get_family  # noqa: E402
from hybridsolve.parallel import install_abort_hook, print0  # noqa: E402

install_abort_hook()  # an uncaught exception on any rank ends the whole job
comm = stack.MPI.COMM_WORLD
family = get_family(args.family, args.n, args.count, args.seed)
solver = None
previous = None
for i in range(family.count):
    system = family.system(i, comm, previous=previous)
    if solver is None:  # one KSP for the whole sequence; its options come from -drv_*
        solver = KrylovSolver(comm, prefix="drv_", options=system.default_options, rtol=1e-8)
    result = solver.solve(system.A, system.b, system.x0)
    print0(f"system {i}: {result.summary()} ({result.residual_norm} norm)")
    if not result.converged:
        print0(f"system {i} did not converge", file=sys.stderr)
        comm.Abort(3)
    if previous is not None:
        previous.destroy()
    previous = result.x if family.sequential else None
    if not family.sequential:
        result.x.destroy()
    system.destroy()
solver.destroy()
