"""Solvers: the ``solve()`` front door over PETSc KSP and the result type."""

from hybridsolve.solvers.result import SolveResult

__all__ = ["SolveResult", "solve", "KrylovSolver"]


def __getattr__(name):
    if name in ("solve", "KrylovSolver", "true_residual"):
        from hybridsolve.solvers import petsc

        return getattr(petsc, name)
    raise AttributeError(name)
