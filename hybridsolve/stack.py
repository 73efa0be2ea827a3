"""The one module that imports MPI and PETSc, in the order the stack needs.

Order: ``mpi4py.MPI`` first, then ``dolfinx_solver`` when the binary wheel stack is installed (it
loads the MPI library its PETSc and DOLFINx were built against), then ``h5py``, then
``petsc4py``. h5py must be imported before ``dolfinx.fem.petsc``: the other way round h5py fails
to initialise against the HDF5 library DOLFINx's wheel has already loaded ("Not a datatype",
measured here with dolfinx-solver-real 0.11.0.post0 and h5py 3.16). Everything else in
hybridsolve imports PETSc from here::

    from hybridsolve.stack import MPI, PETSc

A user who brings their own petsc4py/mpi4py (HPC modules, conda) needs no ``dolfinx_solver``:
it is used when present and skipped otherwise.

PETSc is initialised lazily, on first access to ``PETSc``. A program that wants PETSc to read its
command line (``-log_view``, ``-help``, ``-ksp_monitor``) calls :func:`init` with those arguments
before anything else touches PETSc; if PETSc was already initialised (a driver imported
``petsc4py.PETSc`` itself), the arguments are inserted into the options database instead.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Sequence

from mpi4py import MPI

try:  # the binary wheel stack: must precede petsc4py and dolfinx
    import dolfinx_solver  # noqa: F401

    HAVE_WHEEL_STACK = True
except ImportError:  # a user-provided PETSc/DOLFINx
    HAVE_WHEEL_STACK = False

try:  # before dolfinx.fem.petsc can load its HDF5 (see the module docstring)
    import h5py  # noqa: F401
except ImportError:  # pragma: no cover - h5py is a dependency, but only datagen needs it
    pass

__all__ = ["MPI", "PETSc", "init", "have_dolfinx", "describe", "HAVE_WHEEL_STACK"]

_petsc: Any = None


def init(argv: Sequence[str] | None = None) -> Any:
    """Initialise petsc4py (once) and return the ``PETSc`` module.

    Args:
        argv: PETSc command-line options without the program name, e.g.
            ``["-ksp_monitor", "-pc_type", "gamg"]``.
    """
    global _petsc
    argv = list(argv or [])
    if _petsc is None and "petsc4py.PETSc" not in sys.modules:
        try:
            import petsc4py
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError(
                "hybridsolve needs petsc4py: install the wheel stack with "
                "'pip install hybridsolve[stack]' or load your site's PETSc module"
            ) from err
        prog = sys.argv[0] if sys.argv and sys.argv[0] and not sys.argv[0].startswith("-") else "hybridsolve"
        petsc4py.init([prog, *argv])
        from petsc4py import PETSc

        _petsc = PETSc
        return _petsc
    from petsc4py import PETSc

    _petsc = PETSc
    if argv:
        from hybridsolve.options import insert_args

        insert_args(argv)
    return _petsc


def have_dolfinx() -> bool:
    """Whether DOLFINx can be imported (the FEM problem families and mesh movement need it)."""
    return importlib.util.find_spec("dolfinx") is not None


def describe() -> str:
    """One line naming the versions of the stack in use."""
    PETSc = init()
    ver = ".".join(str(v) for v in PETSc.Sys.getVersion())
    parts = [f"PETSc {ver}", " ".join(MPI.Get_library_version().split()[:3])]
    if have_dolfinx():
        import dolfinx

        parts.append(f"DOLFINx {dolfinx.__version__}")
    parts.append("wheel stack" if HAVE_WHEEL_STACK else "user-provided PETSc")
    return ", ".join(parts)


def __getattr__(name: str) -> Any:
    if name == "PETSc":
        return init()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
