"""hybridsolve: solver-in-the-loop scientific computing on PETSc, DOLFINx and torch.

The API a driver script needs::

    from hybridsolve import get_family, solve
    fam = get_family("darcy", n=64, count=10, seed=0)
    for i in range(len(fam)):
        system = fam.system(i)          # distributed over COMM_WORLD
        result = solve(system, prefix="darcy_")
        print(result.summary())

PETSc and MPI are imported through :mod:`hybridsolve.stack` (import order matters with the
binary wheel stack).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "get_family", "solve", "KrylovSolver", "SolveResult", "InputError",
           "FAMILIES"]


def __getattr__(name):
    if name in ("solve", "KrylovSolver"):
        from hybridsolve.solvers import petsc

        return getattr(petsc, name)
    if name == "SolveResult":
        from hybridsolve.solvers.result import SolveResult

        return SolveResult
    if name in ("get_family", "FAMILIES"):
        from hybridsolve import problems

        return getattr(problems, name)
    if name == "InputError":
        from hybridsolve.errors import InputError

        return InputError
    raise AttributeError(f"module 'hybridsolve' has no attribute {name!r}")
